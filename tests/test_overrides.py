"""Types that override torch functions (`__torch_function__`) and key their
overrides on the function objects they read at import: tensordict's
TensorDict and tensorclasses do (`TD_HANDLED_FUNCTIONS[torch.ones_like]`).
Read after TorchDevice is enabled, those are its replacements; read before,
torch's originals.  Either way `torch.ones_like(td, device="cuda")` reaches
the override, as it does without TorchDevice (docs/policy.md, "Types that
override torch functions")."""
from __future__ import annotations

import sys

import pytest
import torch
from torch.overrides import TorchFunctionMode

import TorchDevice
from TorchDevice import _tdcore
from conftest import TARGET

LIKE = ("empty_like", "zeros_like", "ones_like", "full_like", "rand_like",
        "randn_like", "randint_like")


def _args(name: str) -> tuple:
    return {"full_like": (2.0,), "randint_like": (5,)}.get(name, ())


def keyed_table(table: dict):
    """An instance of a type that overrides the functions of a table read
    at some moment and declines the rest, as tensordict does."""
    class KeyedTable:
        seen: list = []

        @classmethod
        def __torch_function__(cls, func, types, args=(), kwargs=None):
            cls.seen.append(func)
            if func not in table:
                return NotImplemented
            return table[func](*args, **(kwargs or {}))
    KeyedTable.seen = []
    return KeyedTable()


def _answer(name: str):
    return lambda *a, **kw: (name, kw.get("device"))


@pytest.mark.parametrize("name", LIKE)
def test_an_override_keyed_on_the_replacement_gets_the_call(name):
    """The table read while TorchDevice is enabled (the usual order: a
    library imported after `import TorchDevice`)."""
    fn = getattr(torch, name)
    assert isinstance(fn, _tdcore.Wrapper)
    duck = keyed_table({fn: _answer(name)})
    assert fn(duck, *_args(name), device="cuda") == (name, "cuda")
    assert duck.seen == [fn]


@pytest.mark.parametrize("name", LIKE)
def test_an_override_keyed_on_torchs_original_still_gets_the_call(name):
    """The table read before TorchDevice was enabled: torch's own dispatch,
    with its original, finds it."""
    fn = getattr(torch, name)
    original = fn.__wrapped__
    duck = keyed_table({original: _answer(name)})
    result = fn(duck, *_args(name), device="cuda")
    assert result[0] == name
    assert torch.device(result[1]) == TARGET   # redirected before torch
    assert duck.seen == [fn, original]


def test_every_override_declining_is_torchs_error():
    duck = keyed_table({})
    with pytest.raises(TypeError, match="Multiple dispatch failed"):
        torch.ones_like(duck, device="cuda")


def test_input_by_keyword_is_offered_too():
    duck = keyed_table({torch.zeros_like: _answer("zeros_like")})
    assert torch.zeros_like(input=duck, device="cuda") == ("zeros_like",
                                                           "cuda")


class Sub(torch.Tensor):
    """A subclass with torch.Tensor's own __torch_function__."""


def test_a_tensor_subclass_keeps_its_type_and_is_redirected():
    s = torch.zeros(3).as_subclass(Sub)
    out = torch.ones_like(s, device="cuda")
    assert type(out) is Sub
    assert out.device == TARGET
    assert torch.equal(out.cpu(), torch.ones(3))


def test_a_tensor_subclass_call_is_reported_once():
    saved = TorchDevice.config()
    TorchDevice.clear_report()
    TorchDevice.configure(report=True)
    try:
        s = torch.zeros(3).as_subclass(Sub)
        line = sys._getframe().f_lineno + 1
        torch.ones_like(s, device="cuda")
        rows = [r for r in TorchDevice.report()
                if r["api"] == "torch.ones_like"]
    finally:
        TorchDevice.configure(report=saved.report, log_level=saved.log_level)
        TorchDevice.clear_report()
    assert [(r["line"], r["count"]) for r in rows] == [(line, 1)]
    assert rows[0]["file"] == __file__


def test_parameters_and_plain_tensors_take_the_usual_path():
    p = torch.nn.Parameter(torch.zeros(2))
    assert type(torch.zeros_like(p, device="cuda")) is torch.Tensor
    assert torch.zeros_like(torch.zeros(2), device="cuda").device == TARGET


class Counting(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.funcs: list = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.funcs.append(func)
        return func(*args, **(kwargs or {}))


def test_a_function_mode_has_the_first_word():
    """Modes come before subclasses in torch's order; TorchDevice does not
    offer the call to the override ahead of them."""
    duck = keyed_table({torch.ones_like.__wrapped__: _answer("ones_like")})
    with Counting() as mode:
        result = torch.ones_like(duck, device="cuda")
    assert result[0] == "ones_like"
    assert mode.funcs == [torch.ones_like.__wrapped__]
    assert duck.seen == [torch.ones_like.__wrapped__]


@pytest.mark.parametrize("order", ["replacement", "original"])
def test_under_the_default_device_context(order):
    """`torch.set_default_device(...)` is a function mode on the stack the
    whole time; it passes `*_like` calls on untouched, so the override
    still meets the function it keys on."""
    key = (torch.ones_like if order == "replacement"
           else torch.ones_like.__wrapped__)
    duck = keyed_table({key: _answer("ones_like")})
    with torch.device("cuda"):
        result = torch.ones_like(duck)
        nested = torch.zeros(2)
    assert result == ("ones_like", None)
    assert nested.device == TARGET
    assert key in duck.seen
