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
a type imported before TorchDevice was enabled keys on).  torch's
default-device context (`torch.set_default_device`) passes these calls on
untouched, as torch does; other function modes keep the original.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

from torch.overrides import handle_torch_function, has_torch_function


def make_dispatch(stack_len: Optional[Callable[[], int]],
                  stack_at: Optional[Callable[[int], Any]],
                  context: Optional[type]) -> Callable[..., Any]:
    """dispatch(public, relevant, *args, **kwargs): the override's result,
    or NotImplemented where none takes the call.  torch gives modes the
    first word: under torch's default-device context alone (`with
    torch.device(...)`, `set_default_device`), which passes a `*_like` call
    on untouched, torch's own dispatch runs with `public` as `func`; under
    any other mode the call goes on as usual, torch offering it with its
    original.  The arguments: torch's function-mode stack (length, item)
    and its DeviceContext type, each None where this torch lacks it."""

    def only_device_contexts(depth: int) -> bool:
        return (stack_at is not None and context is not None
                and all(isinstance(stack_at(i), context)
                        for i in range(depth)))

    def dispatch(public: Any, relevant: Any, *args: Any,
                 **kwargs: Any) -> Any:
        depth = stack_len() if stack_len is not None else -1
        if depth > 0:
            if not only_device_contexts(depth):
                return NotImplemented
            # The context calls `public` again, itself off the stack.
            return handle_torch_function(public, (relevant,), *args,
                                         **kwargs)
        if depth < 0 or not has_torch_function((relevant,)):
            return NotImplemented
        method = relevant.__torch_function__
        return method(public, (type(relevant),), args, kwargs)
    return dispatch
