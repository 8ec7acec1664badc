"""Differential fuzzing: TorchDevice enabled against the pure policy applied
to native torch (docs/reliability.md, guarantee 1).

Every example draws a device request (strings valid and malformed, unicode,
whitespace, huge indexes, "cpu:-1", ints, bools, floats, bytes, None,
torch.device objects, str subclasses, arbitrary objects) and a state
(profile, mode, CPU override, float64 policy, report on or off), then:

* the oracle removes the torch.device hook, asks native torch how it reads
  the request (`torch.device(request)`), asks the pure C policy
  (`_tdcore.resolve`, `_tdcore.float64_action`: no state, no torch) where it
  goes, and calls torch's *original* function with that device;
* with the hook back, the same call is made through TorchDevice.

Both must give the same device and dtype, or the same exception type, and
the CPU override must flip exactly when the policy says so.

Profiles: "cpu" is this machine.  "mps" is SimulatedMPS (torch's `meta`
device stands in for the MPS target, as in conftest.simulated_mps) and
"cuda" is SimulatedCUDA (the policy's cuda profile on a CPU-only torch: the
targets are real `torch.device("cuda")` objects; allocating on them raises
torch's own error on both sides).

Settings profiles (TORCHDEVICE_FUZZ): "ci" (default: fresh random examples,
and every example in tests/hypothesis-db replayed read-only), "dev" (the
same, but new failures are saved into tests/hypothesis-db, append-only, so
that CI replays them once fixed), "long" (dev with 20x the examples),
"seed" (dev without the @example cases: how tests/hypothesis-db was filled,
against a build without the fixes listed in docs/reliability.md).  A
failure prints the blob that reproduces it.  Hypothesis keys the database
by each test's source: after editing a test, its old entries are no longer
replayed; the regressions below are also pinned as @example, which
survives edits.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Optional, Tuple

import pytest
import torch
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from hypothesis.database import (DirectoryBasedExampleDatabase,
                                 ExampleDatabase, ReadOnlyDatabase)

import TorchDevice
from TorchDevice import _patches, _tdcore


class KeepSeeds(ExampleDatabase):
    """The repository's example database, append-only: Hypothesis drops an
    example from its database once it passes, but these are the
    regressions CI replays for good."""

    def __init__(self, db: ExampleDatabase) -> None:
        super().__init__()
        self._db = db

    def save(self, key: bytes, value: bytes) -> None:
        self._db.save(key, value)

    def fetch(self, key: bytes) -> Iterable[bytes]:
        return self._db.fetch(key)

    def delete(self, key: bytes, value: bytes) -> None:
        pass

    def move(self, src: bytes, dest: bytes, value: bytes) -> None:
        self._db.save(dest, value)


DB = DirectoryBasedExampleDatabase(Path(__file__).parent / "hypothesis-db")
_COMMON = dict(deadline=None, print_blob=True,
               suppress_health_check=[HealthCheck.too_slow,
                                      HealthCheck.data_too_large])
settings.register_profile("td-ci", database=ReadOnlyDatabase(DB),
                          **_COMMON)
settings.register_profile("td-dev", database=KeepSeeds(DB), **_COMMON)
settings.register_profile("td-long", database=KeepSeeds(DB), **_COMMON)
# Generated examples only (no @example): to record what a build finds.
settings.register_profile("td-seed", database=KeepSeeds(DB),
                          phases=[Phase.reuse, Phase.generate, Phase.shrink],
                          **_COMMON)
PROFILE = "td-" + os.environ.get("TORCHDEVICE_FUZZ", "ci")
SCALE = 20 if PROFILE == "td-long" else 1


def fuzz(n: int) -> settings:
    """n examples in CI; the five tests here add up to 5,600."""
    return settings(settings.get_profile(PROFILE), max_examples=n * SCALE)


STAND_IN = torch.device("meta")      # SimulatedMPS's MPS target
PROFILES = ("cpu", "mps", "cuda")
MODES = ("accelerate", "cpu-stays-cpu")


# ---- requests -----------------------------------------------------------

class UserStr(str):
    """A str subclass, as user code (and TorchDevice's own device object)
    may pass."""


@dataclass(frozen=True)
class DeviceSpec:
    """A torch.device built by native torch when the example runs (under
    TorchDevice its construction would itself be redirected)."""
    type: str
    index: Optional[int]

    def build(self) -> torch.device:
        if self.index is None:
            return torch.device(self.type)
        return torch.device(self.type, self.index)


class Opaque:
    def __repr__(self) -> str:
        return "Opaque()"


TYPE_NAMES = ["cpu", "cuda", "mps", "meta", "xpu", "hip", "lazy", "ipu",
              "CUDA", "Cpu", "MPS", "cuda ", " cpu", "cu da", "", "mps0",
              "cpu\x00", "cud\u0430", "privateuseone", "gpu", "cuda\n"]
INDEX_TEXT = st.one_of(
    st.integers(-3, 130).map(str),
    st.integers(min_value=0).map(str),
    st.sampled_from(["", "-1", "-0", "+1", "01", "00", " 1", "1 ", "\u0663",
                     "\uff13", "1.0", "0x1", "1e2", "2147483647",
                     "2147483648", "4294967296", "9999999999",
                     "99999999999", "-2147483649", "1_0", "-01"]),
)
STRUCTURED = st.builds(
    lambda pre, name, sep, idx, post: f"{pre}{name}{sep}{idx}{post}",
    st.sampled_from(["", "", "", " ", "\t", "\u00a0"]),
    st.sampled_from(TYPE_NAMES),
    st.sampled_from([":", ":", ":", "", "::", " :", ": ", ";"]),
    INDEX_TEXT,
    st.sampled_from(["", "", "", " ", "\n", ":0", "\ud800"]),
)
DEVICE_STRINGS = st.one_of(
    st.sampled_from(["cpu", "cuda", "mps", "meta", "cpu:-1", "cuda:0",
                     "cuda:1", "mps:0", "cpu:0", "cuda:-1", "cpu:-2",
                     "cpu:-1 ", "cpu:-01", "\ud800", "cuda\udfff:0"]),
    st.sampled_from(TYPE_NAMES),
    STRUCTURED,
    st.text(max_size=12),
)
DEVICE_SPECS = st.builds(
    DeviceSpec,
    st.sampled_from(["cpu", "cuda", "mps", "meta", "xpu", "hip"]),
    st.sampled_from([None, 0, 1, 5, 127]),
)
OTHERS = st.sampled_from([
    Opaque(), [], {}, (0,), ["cuda"], torch.float32, 1j, b"",
    bytearray(b"cpu"),
])
REQUESTS = st.one_of(
    st.none(),
    DEVICE_STRINGS,
    DEVICE_STRINGS.map(UserStr),
    st.integers(-5, 200),
    st.integers(),
    st.booleans(),
    st.floats(allow_nan=True),
    DEVICE_STRINGS.filter(lambda s: "\ud800" not in s and "\udfff" not in s)
    .map(lambda s: s.encode()),
    DEVICE_SPECS,
    OTHERS,
)


@dataclass(frozen=True)
class State:
    profile: str
    mode: str
    override: bool
    float64: str
    report: bool


STATES = st.builds(State, st.sampled_from(PROFILES), st.sampled_from(MODES),
                   st.booleans(), st.sampled_from(["downcast", "error"]),
                   st.booleans())


def materialize(r: Any) -> Any:
    return r.build() if isinstance(r, DeviceSpec) else r


# ---- the two sides ------------------------------------------------------

@pytest.fixture(scope="module")
def fuzz_env():
    """TorchDevice applied with the SimulatedMPS stand-in for the whole
    module; restored to the configuration in force afterwards."""
    saved = TorchDevice.config()
    override = _tdcore.get_cpu_override()
    report = _tdcore.get_report()
    TorchDevice.disable()
    reapply()
    originals = {name: getattr(torch, name).__wrapped__
                 for name in FACTORIES}
    with native():
        TARGETS.update(cpu=torch.device("cpu"), cuda=torch.device("cuda"),
                       mps=STAND_IN)
    try:
        yield originals
    finally:
        _tdcore.set_cpu_override(override)
        _tdcore.set_report(report)
        TorchDevice.disable()
        TorchDevice.enable()
        TorchDevice.configure(target=saved.target, mode=saved.mode,
                              float64=saved.float64)
        _tdcore.set_report(report)


@contextlib.contextmanager
def native():
    """Native torch.device construction: the tp_new hooks removed (the
    torch objects _tdcore holds are dropped and handed over again on exit).
    Native factories and Tensor.to are called as torch's originals."""
    _tdcore.uninstall()
    try:
        yield
    finally:
        _patches._install_core(mps_device=STAND_IN)


def reapply() -> None:
    # Applied for the real (cpu) profile, as enable() does; the simulated
    # profiles are set per example (set_state).
    _tdcore.configure("cpu", "accelerate", "downcast")
    _patches.apply(mps_device=STAND_IN)


def set_state(s: State) -> None:
    _tdcore.configure(s.profile, s.mode, s.float64)
    _tdcore.set_cpu_override(s.override)
    _tdcore.set_report(s.report)


def outcome(call: Callable[[], Any]) -> Any:
    """("ok", device, dtype) or ("raise", exception type)."""
    try:
        value = call()
    except Exception as exc:   # noqa: BLE001 - the type is the result
        return ("raise", type(exc))
    if isinstance(value, torch.device):
        return ("ok", value, None)
    return ("ok", value.device, value.dtype)


TARGETS: Dict[str, torch.device] = {}     # filled natively by fuzz_env


def target_device(target: str) -> torch.device:
    return TARGETS[target]


def as_request(r: Any) -> Any:
    """Torch reads bytes as a device string; so does TorchDevice."""
    return r.decode("latin-1") if type(r) is bytes else r


def policy_kind(r: Any) -> str:
    """How the pure policy classifies a request ("other": not a request it
    knows, left to torch)."""
    r = as_request(r)
    if r is None or type(r) is int or isinstance(r, str):
        return _tdcore.parse(r)[0]
    return "other"      # torch.device objects are read by torch first


def is_policy_syntax(r: Any) -> bool:
    """Requests the policy resolves before torch reads them: "cpu:-1" and
    a bare int ordinal (torch's CPU build cannot read one)."""
    kind = policy_kind(r)
    return (isinstance(as_request(r), str) and kind == "cpu-toggle") or (
        type(r) is int and kind == "cuda")


# Devices native torch built from what an example passed (a string, bytes,
# a type and an index): the program's request, which TorchDevice reads as
# such.  A torch.device the example passed itself was built natively too:
# to TorchDevice one it did not hand out, so a host one names a place, never
# redirected (docs/policy.md, the table).
_REQUESTED: Dict[int, Tuple[torch.device, Any]] = {}


def requested(dev: torch.device, text: Any = "cpu") -> torch.device:
    _REQUESTED[id(dev)] = (dev, as_request(text))
    return dev


def policy_request(value: Any) -> Any:
    """What the pure policy reads for a canonical request: a host device
    built for a request reads as the request's text (as a device object it
    would be a place)."""
    entry = _REQUESTED.get(id(value))
    if (isinstance(value, torch.device) and value.type == "cpu"
            and entry is not None and entry[0] is value):
        return entry[1]
    return value


def canonical(r: Any, *, anything: bool = False) -> Tuple[str, Any]:
    """In native mode: how torch reads a request.  ("request", r) for the
    policy's own syntax and None, ("device", torch.device) for what torch
    accepts, ("raise", type) for what it rejects, ("other", r) for objects
    that are no device request (torch decides what they mean), unless
    `anything` asks torch.device to read those too."""
    if r is None or is_policy_syntax(r):
        return ("request", as_request(r))
    if anything or isinstance(r, (str, bytes, torch.device)):
        try:
            dev = torch.device(r)
        except Exception as exc:   # noqa: BLE001
            return ("raise", type(exc))
        return ("device", dev if isinstance(r, torch.device)
                else requested(dev, r if isinstance(r, (str, bytes))
                               else "cpu"))
    return ("other", r)


@dataclass
class Plan:
    """The oracle's decision: the exception native torch raises for the
    request itself, or the device to call native torch with (keep: the
    request unchanged), the float64 action and whether the override flips."""
    error: Optional[type] = None
    device: Optional[torch.device] = None
    keep: bool = True
    dtype_action: str = "keep"
    toggle: bool = False


def plan(c: Tuple[str, Any], s: State, *, follows_none: bool) -> Plan:
    """The pure policy applied to a canonical request (TorchDevice
    installed: the policy needs torch.device's type)."""
    how, value = c
    if how == "raise":
        return Plan(error=value)
    if how == "other" or (value is None and not follows_none):
        return Plan()
    common = dict(profile=s.profile, mode=s.mode, cpu_override=s.override)
    res = _tdcore.resolve(policy_request(value), **common)
    p = Plan(toggle=res["toggle"])
    if res["target"] != "keep":
        p.device, p.keep = target_device(res["target"]), False
    p.dtype_action = _tdcore.float64_action(policy_request(value),
                                            float64=s.float64, **common)
    return p


def check_override(s: State, p: Plan, got: Any = ("ok",)) -> None:
    """The override flipped where the plan toggles it, unless the call
    raised: a call that raises leaves it as it was (docs/policy.md)."""
    flipped = p.toggle and got[0] == "ok"
    assert _tdcore.get_cpu_override() == (s.override != flipped)


# ---- the pure policy against torch's own parser --------------------------

@fuzz(1500)
@given(text=DEVICE_STRINGS)
@example(text="cuda:200")
@example(text="cuda:254")     # torch wraps it to index -2: not int -1's
@example(text="cpu:-1")
@example(text="cuda:2147483648")
def test_policy_parser_agrees_with_torch(fuzz_env, text):
    """Every string torch accepts is classified like the device torch
    builds from it, for every profile, mode and override; every string
    torch rejects is left to torch (except TorchDevice's own "cpu:-1")."""
    kind = _tdcore.parse(text)[0]
    with native():
        how, dev = canonical(text)
    if how != "device":
        assert kind in ("other", "cpu-toggle"), (text, kind)
        assert kind != "cpu-toggle" or text == "cpu:-1"
        return
    assert kind != "cpu-toggle"
    for profile in PROFILES:
        for mode in MODES:
            for override in (False, True):
                a = _tdcore.resolve(text, profile, mode, override)
                b = _tdcore.resolve(policy_request(dev), profile, mode,
                                    override)
                assert a == b, (text, dev, profile, mode, override)


# ---- torch.device -------------------------------------------------------

@fuzz(1200)
@given(request=REQUESTS, state=STATES)
@example(request="cpu:-1", state=State("mps", "accelerate", True,
                                       "downcast", True))
@example(request=3, state=State("mps", "accelerate", False, "error", False))
# Found by this test: torch reads bytes as a device string, TorchDevice did
# not (devarg.c).
@example(request=b"cpu:-1", state=State("cpu", "accelerate", False,
                                        "downcast", False))
@example(request=b"cpu", state=State("mps", "accelerate", False, "downcast",
                                     False))
def test_torch_device(fuzz_env, request, state):
    with native():
        r = materialize(request)
        c = canonical(r, anything=r is not None)
        if c[0] == "request":
            native_result = outcome(lambda: torch.device(r))
    p = plan(c, state, follows_none=False)
    if p.error is not None:
        want = ("raise", p.error)
    elif not p.keep:
        want = ("ok", p.device, None)
    elif c[0] == "device":
        want = ("ok", c[1], None)
    else:
        want = native_result
    set_state(state)
    got = outcome(lambda: torch.device(r))
    assert got == want, (r, state)
    check_override(state, p)


@fuzz(500)
@given(type_=st.one_of(st.sampled_from(TYPE_NAMES), st.text(max_size=6)),
       index=st.one_of(st.integers(-3, 300), st.integers(), st.none(),
                       st.booleans(), st.floats(), st.just("0")),
       keywords=st.booleans(), state=STATES)
@example(type_="cpu", index=-1, keywords=False,
         state=State("cpu", "accelerate", False, "downcast", False))
def test_torch_device_type_and_index(fuzz_env, type_, index, keywords,
                                     state):
    def make() -> torch.device:
        if keywords:
            return torch.device(type=type_, index=index)
        return torch.device(type_, index)

    # torch.device("cpu", -1) is the toggle's two-argument spelling.
    toggle_form = (not keywords and type_ == "cpu" and type(index) is int
                   and index == -1)
    with native():
        native_result = outcome(make)
    if toggle_form:
        c: Tuple[str, Any] = ("request", "cpu:-1")
    elif native_result[0] == "raise":
        c = ("raise", native_result[1])
    else:
        c = ("device", requested(native_result[1]))
    p = plan(c, state, follows_none=False)
    if p.error is not None:
        want = ("raise", p.error)
    elif not p.keep:
        want = ("ok", p.device, None)
    else:
        want = native_result
    set_state(state)
    got = outcome(make)
    assert got == want, (type_, index, keywords, state)
    check_override(state, p)


# ---- factories ----------------------------------------------------------

_ABSENT = "<no device argument>"

FACTORIES: Dict[str, Callable[..., Any]] = {
    # name: call(fn, **kw); the first four follow the policy without
    # device= (torch "device constructors"), the last two only with one.
    "zeros": lambda f, **kw: f(2, **kw),
    "empty": lambda f, **kw: f((2, 1), **kw),
    "arange": lambda f, **kw: f(3, **kw),
    "tensor": lambda f, **kw: f([1.0, 2.0], **kw),
    "zeros_like": lambda f, **kw: f(_SOURCE, **kw),
    "full_like": lambda f, **kw: f(_SOURCE, 7, **kw),
}
FOLLOWS_NONE = {"zeros", "empty", "arange", "tensor"}
_SOURCE = torch.ones(2)          # created before any example: a CPU tensor
DTYPES = st.sampled_from([None, torch.float32, torch.float64, torch.int64,
                          torch.complex128])
# What a float64 request becomes where it is lowered; complex128 is a pair
# of float64 (docs/policy.md).
NARROW = {torch.float64: torch.float32, torch.complex128: torch.complex64}


def final_dtype(p: Plan, dtype: Optional[torch.dtype]) -> Any:
    if dtype in NARROW and p.dtype_action == "float32":
        return NARROW[dtype]
    return dtype


@fuzz(1400)
@given(name=st.sampled_from(sorted(FACTORIES)),
       request=st.one_of(st.just(_ABSENT), REQUESTS),
       dtype=DTYPES, state=STATES)
@example(name="zeros", request="cuda:2147483648",
         state=State("cpu", "accelerate", False, "downcast", False),
         dtype=None)
@example(name="tensor", request=_ABSENT,
         state=State("mps", "accelerate", False, "error", False),
         dtype=torch.float64)
@example(name="arange", request=b"cpu", dtype=None,       # found: bytes
         state=State("mps", "accelerate", False, "downcast", False))
@example(name="arange", request="cpu:-1", dtype=torch.complex128,
         state=State("cpu", "accelerate", False, "downcast", False))
def test_factories(fuzz_env, name, request, dtype, state):
    call = FACTORIES[name]
    original = fuzz_env[name]
    with native():
        r = None if request == _ABSENT else materialize(request)
        c = canonical(r)
    p = plan(c, state, follows_none=name in FOLLOWS_NONE)
    if p.error is not None:
        want = ("raise", p.error)
    elif p.dtype_action == "error" and dtype in NARROW:
        want = ("raise", TypeError)
    else:
        kw: Dict[str, Any] = {}
        if not p.keep:
            kw["device"] = p.device
        elif request != _ABSENT:
            kw["device"] = r
        if dtype is not None:
            kw["dtype"] = final_dtype(p, dtype)
        with native():
            want = outcome(lambda: call(original, **kw))
    kw = {} if request == _ABSENT else {"device": r}
    if dtype is not None:
        kw["dtype"] = dtype
    set_state(state)
    got = outcome(lambda: call(getattr(torch, name), **kw))
    assert got == want, (name, r, dtype, state)
    check_override(state, p, got)


# ---- Tensor.to ----------------------------------------------------------

TO_FORMS = ("to(r)", "to(device=r)", "to(r, dtype)", "to(device=r, dtype=)",
            "to(r, non_blocking=True)")


def to_call(form: str, to: Callable[..., Any], t: torch.Tensor, r: Any,
            dtype: torch.dtype) -> Any:
    if form == "to(r)":
        return to(t, r)
    if form == "to(device=r)":
        return to(t, device=r)
    if form == "to(r, dtype)":
        return to(t, r, dtype)
    if form == "to(device=r, dtype=)":
        return to(t, device=r, dtype=dtype)
    return to(t, r, non_blocking=True)


@fuzz(1000)
@given(form=st.sampled_from(TO_FORMS), request=REQUESTS,
       dtype=st.sampled_from([torch.float32, torch.float64, torch.int64,
                              torch.complex128]),
       state=STATES)
@example(form="to(r, dtype)", request="cuda", dtype=torch.float64,
         state=State("mps", "accelerate", False, "downcast", False))
@example(form="to(r)", request=b"cpu", dtype=torch.float32,  # found: bytes
         state=State("mps", "accelerate", False, "downcast", False))
def test_tensor_to(fuzz_env, form, request, dtype, state):
    """.to(None) means "no device" (the tensor stays), so the None row of
    the policy does not apply; everything else is as for factories."""
    native_to = torch._C.TensorBase.to
    with native():
        r = materialize(request)
        c = canonical(r)
    p = plan(c, state, follows_none=False)
    if p.error is not None:
        want = ("raise", p.error)
    elif (p.dtype_action == "error" and "dtype" in form
          and dtype in NARROW):
        want = ("raise", TypeError)
    else:
        d = r if p.keep else p.device
        with native():
            want = outcome(lambda: to_call(form, native_to, _SOURCE, d,
                                           final_dtype(p, dtype)))
    set_state(state)
    got = outcome(lambda: to_call(form, torch.Tensor.to, _SOURCE, r, dtype))
    assert got == want, (form, r, dtype, state)
    check_override(state, p, got)
