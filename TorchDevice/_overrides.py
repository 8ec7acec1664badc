"""`__torch_function__` overrides meet the function the program called.

A type that overrides torch functions (tensordict's TensorDict, a
tensorclass, a Tensor subclass with its own `__torch_function__`) is asked
by torch with the function object as `func`, and commonly looks it up in a
table keyed by the torch functions it read when it was imported
(`TD_HANDLED_FUNCTIONS[torch.ones_like]`).  Imported after TorchDevice,
that key is TorchDevice's replacement, while torch, called by the
replacement, would hand over its own original: nothing matches, and the
call fails with "Multiple dispatch failed ... all __torch_function__
handlers returned NotImplemented" where it works without TorchDevice.

So the replacements of the functions whose tensor argument torch dispatches
on (torch.*_like) offer the call to the override first with themselves as
`func`, as torch does for its own Python-level functions
(`handle_torch_function(public_api, ...)`); where every override declines,
the call goes on as usual, torch then offering it with its original (which
a type imported before TorchDevice was enabled keys on).
"""
from __future__ import annotations

from typing import Any, Callable

from torch.overrides import has_torch_function

from . import _torch_compat


def make_dispatch() -> Callable[..., Any]:
    """dispatch(public, relevant, *args, **kwargs): the override's result,
    or NotImplemented where none takes the call (and while a
    TorchFunctionMode is active: torch gives modes the first word, with
    its original)."""
    stack_len = _torch_compat.get("len_torch_function_stack")

    def dispatch(public: Any, relevant: Any, *args: Any,
                 **kwargs: Any) -> Any:
        if (stack_len is None or stack_len() > 0
                or not has_torch_function((relevant,))):
            return NotImplemented
        method = relevant.__torch_function__
        return method(public, (type(relevant),), args, kwargs)
    return dispatch
