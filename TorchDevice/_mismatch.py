"""One clear message when a host tensor meets an accelerator tensor because
TorchDevice sent host requests to the accelerator (docs/policy.md, "When a
host tensor meets an accelerator tensor").

In mode "accelerate", device-less and "cpu" requests land on the
accelerator, while some tensors are host tensors whatever the mode: those
that share memory with host objects (`torch.from_numpy`, `torch.frombuffer`)
and those torch's own code makes (DataLoader batches,
`torch.load(map_location="cpu")`).  When the two meet, torch raises
its bare "Expected all tensors to be on the same device".  This module adds
a note to that exception saying what happened, where, which of the
variables at the failing line are on which device, the lines where
TorchDevice sent host requests to the accelerator (when the report records
them), and what avoids it.

The same note, in its own words, goes on torch's "value cannot be converted
to type float without overflow" where the device has no float64 and
TorchDevice gave the program's float64 tensors float32: a number only
float64 holds (`torch.finfo(torch.float64).min` as a mask value) does not
fit in them (docs/policy.md, "float64 on MPS"); and on MPS's refusal of
an operation whose result would be float64 -- a float64 host tensor with no
dimensions meeting a device tensor -- which an operator reports as
"unsupported operand type(s)"; and on torch's GradcheckError where the
inputs checked are float32 there (gradcheck needs float64).

Nothing here runs on the hot path: the note is built only for an exception
that is already propagating -- by `sys.excepthook` and
`threading.excepthook` for uncaught ones (installed while TorchDevice is
enabled, chained to the hooks in place), and by `TorchDevice.explain(exc)`
for a program that catches the error itself.
"""
from __future__ import annotations

import os
import re
import sys
import threading
import types
from typing import Any, Callable, Dict, List, Optional, Tuple

from . import _tdcore

# torch's messages for operands on different devices (CPU kernels, CUDA
# and MPS kernels, convolution's type check, indexing, generators).
_PATTERN = re.compile(
    r"Expected all tensors to be on the same device"
    r"|device type for generator but found"
    r"|should be either on cpu or on the same device"
    r"|is on (?:CPU|cpu), but expected (?:it|them) to be on"
    r"|Expected object of device type"
    r"|Input type \(.*\) and weight type \(.*\) should be the same")

# torch's message for a Python number a float32 (or complex64) tensor
# cannot hold (fill_, masked_fill, index_put_, full, ...).
_OVERFLOW = re.compile(r"value cannot be converted to type "
                       r"(float|c10::complex<float>) without overflow")

# MPS's refusal of a float64 (complex128) result, which a device with MPS's
# record repeats; and Python's words for it where the operation was an
# operator: torch turns a TypeError inside `a * b` into NotImplemented.
_REFUSED = re.compile(r"Cannot convert a MPS Tensor to float64 dtype"
                      r"|Trying to convert ComplexDouble to the MPS backend")
_OPERATOR = re.compile(r"unsupported operand type\(s\) for \S+: "
                       r"'(?:\w*Tensor|Parameter)' and "
                       r"'(?:\w*Tensor|Parameter)'")

_MARK = "TorchDevice: "
_MAX_SITES = 6

_previous_sys: Optional[Callable[..., Any]] = None
_previous_thread: Optional[Callable[..., Any]] = None


def is_device_mismatch(exc: BaseException) -> bool:
    """Whether `exc` is torch's error for tensors on two devices."""
    # The whole message: an error in a DataLoader worker comes back as
    # "Caught RuntimeError in DataLoader worker process 0." + its traceback.
    return isinstance(exc, (RuntimeError, TypeError, ValueError)) and bool(
        _PATTERN.search(str(exc)))


# ---- what the traceback says ---------------------------------------------


def _internal_prefixes() -> Tuple[str, ...]:
    import torch
    dirs = [os.path.dirname(os.path.abspath(torch.__file__)),
            os.path.dirname(os.path.abspath(__file__))]
    return tuple(d.rstrip(os.sep) + os.sep for d in dirs)


def _frames(tb: Optional[types.TracebackType]
            ) -> List[types.TracebackType]:
    out = []
    while tb is not None:
        out.append(tb)
        tb = tb.tb_next
    return out


def _is_user(filename: str, internal: Tuple[str, ...]) -> bool:
    path = os.path.abspath(filename)
    return not (path.startswith(internal) or "site-packages" in path
                or "dist-packages" in path or filename.startswith("<frozen"))


def _site(tb: types.TracebackType) -> str:
    code = tb.tb_frame.f_code
    return f"{_short(code.co_filename)}:{tb.tb_lineno} (in {code.co_name})"


def _short(filename: str) -> str:
    try:
        rel = os.path.relpath(filename)
    except ValueError:
        return filename
    return filename if rel.startswith(os.pardir) else rel


def _devices_in(frame: types.FrameType) -> List[Tuple[str, str]]:
    """(name, device) of the tensors among the frame's variables, and of a
    module's own parameters and buffers when `self` is one."""
    import torch
    found: List[Tuple[str, str]] = []

    def add(name: str, value: Any) -> None:
        if isinstance(value, torch.Tensor) and len(found) < 8:
            found.append((name, str(value.device)))

    for name, value in list(frame.f_locals.items()):
        if isinstance(value, (list, tuple)) and len(value) <= 4:
            for i, item in enumerate(value):
                add(f"{name}[{i}]", item)
        elif isinstance(value, torch.nn.Module) and name == "self":
            for kind in ("_parameters", "_buffers"):
                for key, item in getattr(value, kind, {}).items():
                    add(f"self.{key}", item)
        else:
            add(name, value)
    return found


def _mixed_devices_line(exc: BaseException) -> List[str]:
    """The note's line naming the devices of the tensors at the failing
    frame, where host and device tensors are among them."""
    frames = _frames(exc.__traceback__)
    if not frames:
        return []
    devices = _devices_in(frames[-1].tb_frame)
    if not (any(d == "cpu" for _, d in devices)
            and any(d != "cpu" for _, d in devices)):
        return []
    shown = ", ".join(f"{n} on {d}" for n, d in devices)
    return [f"  At {_site(frames[-1])}: {shown}."]


def _headline(exc: BaseException, what: str) -> str:
    """The note's first line: what happened, at the innermost line of the
    user's code in the traceback."""
    internal = _internal_prefixes()
    user = [tb for tb in _frames(exc.__traceback__)
            if _is_user(tb.tb_frame.f_code.co_filename, internal)]
    return f"{_MARK}{what}" + (f" at {_site(user[-1])}" if user else "") + "."


def _report_rows() -> List[Dict[str, Any]]:
    try:
        from . import _report
        return _report.rows()
    except Exception:           # the report is an aid, never an error
        return []


def _redirected_sites() -> List[str]:
    """The lines where TorchDevice sent a host request (no device, "cpu")
    to the accelerator, as the report recorded them."""
    return [f"{_short(row['file'])}:{row['line']} {row['api']} "
            f"({row['from']} -> {row['to']}, x{row['count']})"
            for row in _report_rows()
            if row["what"] == "redirected"
            and row["from"] in ("default", "cpu")]


def _downcast_lines(wide: str, narrow: str) -> List[str]:
    """The note's line listing where TorchDevice gave a `wide` ("float64",
    "complex128") request the `narrow` type, as the report recorded them."""
    sites = [f"{_short(row['file'])}:{row['line']} {row['api']} "
             f"(x{row['count']})" for row in _report_rows()
             if row["what"] == "downcast" and row["from"] == wide]
    return _sites_lines(sites, f"{wide} requests TorchDevice made {narrow}",
                        f"made {narrow}")


def _sites_lines(sites: List[str], heading: str, done: str) -> List[str]:
    """The note's line listing `sites`; without them, how to get them
    (none where the report is on and recorded none)."""
    if sites:
        more = len(sites) - _MAX_SITES
        return [f"  {heading}: " + "; ".join(sites[:_MAX_SITES])
                + (f"; and {more} more" if more > 0 else "") + "."]
    if not _tdcore.get_report():
        return ["  Run with --report (TORCHDEVICE_REPORT=1) to list the "
                f"lines TorchDevice {done}."]
    return []


# ---- the notes ------------------------------------------------------------


def _lowers_float64() -> bool:
    """Whether TorchDevice gives float64 requests float32 here: the device
    has no float64 and TORCHDEVICE_FLOAT64 is "downcast"."""
    settings = _tdcore.settings()
    return not settings["device_float64"] and settings["float64"] == "downcast"


def _float64_note(exc: BaseException) -> Optional[str]:
    """The note for a float64-only number stored into a tensor TorchDevice
    made float32, or None."""
    found = (_OVERFLOW.search(str(exc)) if isinstance(exc, RuntimeError)
             else None)
    if found is None:
        return None
    if not _lowers_float64():
        return None
    # torch names the C++ type it could not convert to: float32's, or
    # complex64's for a complex number.
    wide, narrow = (("float64", "float32") if found.group(1) == "float"
                    else ("complex128", "complex64"))
    lines = [
        _headline(exc, f"a number only {wide} holds does not fit in "
                       f"{narrow}"),
        f"  This device has no float64, so TorchDevice gives {wide} "
        f"requests {narrow} (TORCHDEVICE_FLOAT64=downcast), and a value "
        "such as torch.finfo(torch.float64).min or 1e300 cannot be stored "
        "in those tensors."]
    lines += _downcast_lines(wide, narrow)
    lines.append(
        "  Take the limits from the tensor's own dtype "
        "(torch.finfo(t.dtype)), or run with TORCHDEVICE_FLOAT64=error to "
        "stop where float64 is requested (docs/policy.md).")
    return "\n".join(lines)


def _dtype_name(tensor: Any) -> str:
    """"float64" for torch.float64."""
    return str(tensor.dtype).replace("torch.", "")


def _wide_tensors(frame: types.FrameType) -> List[str]:
    """The float64 and complex128 tensors among the frame's variables and
    the globals its code names, as "name (device, dtype, N dimensions)"."""
    import torch
    wide = (torch.float64, torch.complex128)
    names = dict(frame.f_locals)
    for name in frame.f_code.co_names:
        if name not in names and name in frame.f_globals:
            names[name] = frame.f_globals[name]
    found = []
    for name, value in names.items():
        if isinstance(value, torch.Tensor) and value.dtype in wide:
            dims = value.dim()
            found.append(f"{name} ({value.device}, "
                         f"{_dtype_name(value)}, "
                         f"{dims} dimension{'' if dims == 1 else 's'})")
    return found[:_MAX_SITES]


def _float64_result_note(exc: BaseException) -> Optional[str]:
    """The note for an operation whose result would be float64 (complex128)
    on a device without it -- a float64 tensor TorchDevice never saw (a
    host one: torch.from_numpy of a float64 array, a device-less factory in
    mode "cpu-stays-cpu") with no dimensions, combined with a device tensor
    -- or None."""
    if not isinstance(exc, TypeError):
        return None
    text = str(exc)
    refused, operator = _REFUSED.search(text), _OPERATOR.search(text)
    if refused is None and operator is None:
        return None
    if not _lowers_float64():
        return None
    frames = _frames(exc.__traceback__)
    wide = _wide_tensors(frames[-1].tb_frame) if frames else []
    if refused is None and not wide:
        return None     # an operator's TypeError with nothing float64 near
    lines = [_headline(exc, "an operation would make float64 on a device "
                            "without it")]
    if operator is not None:
        lines.append(
            "  Python reports this as an unsupported operand: torch refused "
            "the operation because its result would be float64 (or "
            "complex128) on the device, and an operator such as `a * b` "
            "turns torch's TypeError into that message.")
    lines.append(
        "  TorchDevice makes the float64 tensors a program asks the device "
        "for float32 (TORCHDEVICE_FLOAT64=downcast), but not a float64 "
        "tensor already on the host (torch.from_numpy of a float64 array, a "
        "device-less factory in mode \"cpu-stays-cpu\"). One with no "
        "dimensions may meet a tensor on the device, and the result then "
        "takes its float64, which this device cannot hold.")
    if wide:
        lines.append(f"  float64 tensors at {_site(frames[-1])}: "
                     + ", ".join(wide) + ".")
    lines.append(
        "  Make that tensor float32 (.float()) or a Python number (.item()) "
        "before it meets the device's tensors; on CUDA the result would be "
        "float64 (docs/policy.md).")
    return "\n".join(lines)


def _narrow_gradcheck_inputs(exc: BaseException) -> List[str]:
    """The float32 (complex64) inputs requiring grad that the failing
    gradcheck was checking, read off torch's gradcheck frames, as
    "input #i (device, dtype)".  torch's gradcheck keeps them in its local
    `tupled_inputs` (torch 2.x); under another name there is no note."""
    import torch
    narrow = (torch.float32, torch.complex64)
    for tb in reversed(_frames(exc.__traceback__)):
        inputs = tb.tb_frame.f_locals.get("tupled_inputs")
        if not isinstance(inputs, tuple):
            continue
        return [f"input #{i} ({value.device}, {_dtype_name(value)})"
                for i, value in enumerate(inputs)
                if isinstance(value, torch.Tensor) and value.requires_grad
                and value.dtype in narrow][:_MAX_SITES]
    return []


def _gradcheck_note(exc: BaseException) -> Optional[str]:
    """The note for torch's gradcheck failing on inputs TorchDevice may have
    made float32 from a float64 request, or None."""
    gradcheck = sys.modules.get("torch.autograd.gradcheck")
    error = getattr(gradcheck, "GradcheckError", None)
    if error is None or not isinstance(exc, error) or not _lowers_float64():
        return None
    narrow = _narrow_gradcheck_inputs(exc)
    if not narrow:
        return None     # float64 inputs: the check failed on its own terms
    lines = [
        _headline(exc, "gradcheck ran in float32 on a device without "
                       "float64"),
        "  gradcheck compares gradients with finite differences, which "
        "need float64. This device has no float64, so TorchDevice gives "
        "float64 requests float32 (TORCHDEVICE_FLOAT64=downcast), and "
        "inputs made as float64 for the device are float32 here: "
        + ", ".join(narrow) + "."]
    lines += _downcast_lines("float64", "float32")
    lines.append(
        "  Check gradients on the host, where float64 is computed: inputs "
        "made with device=\"cpu\" (inside `with "
        "TorchDevice.cpu_override():` in mode \"accelerate\"), or run with "
        "TORCHDEVICE_FLOAT64=error to stop where float64 is requested "
        "(docs/policy.md).")
    return "\n".join(lines)


def _tensor_tests(tb: Optional[types.TracebackType],
                  landed: str) -> List[str]:
    """The lines, in the traceback's files outside torch and TorchDevice,
    that test a tensor's own device for a kind it is not on here
    (`x.is_cuda` where tensors are on MPS): False, whatever the program
    asked for."""
    from . import _doctor
    internal = _internal_prefixes()
    files = dict.fromkeys(
        t.tb_frame.f_code.co_filename for t in _frames(tb)
        if not os.path.abspath(t.tb_frame.f_code.co_filename).startswith(
            internal) and not t.tb_frame.f_code.co_filename.startswith("<"))
    sites = []
    for filename in files:
        try:
            with open(filename, encoding="utf-8") as f:
                tests = _doctor.tensor_device_tests(f.read(), filename)
        except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
            continue
        sites += [f"{_short(filename)}:{line} {what}"
                  for line, kind, what in tests if kind != landed]
    return sites


def _tensor_test_note(exc: BaseException, accel: str) -> Optional[str]:
    """A mismatch in mode "cpu-stays-cpu", where tensors made without a
    device stay on the host as on CUDA: the program's own, unless its code
    moves them only when a tensor's own device reads "cuda", which it never
    does here (docs/policy.md, "What a device reads as")."""
    sites = _tensor_tests(exc.__traceback__, accel)
    if not sites:
        return None
    lines = [_headline(exc, "a host tensor met an accelerator tensor")]
    more = len(sites) - _MAX_SITES
    lines.append(
        "  The code on this path tests a tensor's own device: "
        + "; ".join(sites[:_MAX_SITES])
        + (f"; and {more} more" if more > 0 else "")
        + f". A tensor names the device really used ({accel}), so such a "
        "test is False here where it is True on the hardware the program "
        "was written for, and a branch that moves tensors only when it is "
        "True leaves them on the host (docs/policy.md, \"What a device "
        "reads as\").")
    lines += _mixed_devices_line(exc)
    lines.append(
        f"  TORCHDEVICE_MODE=accelerate sends tensors made without a device "
        f"to {accel} too, where they meet the program's; or move the host "
        "tensor with .to(device) (docs/policy.md).")
    return "\n".join(lines)


def note_for(exc: BaseException) -> Optional[str]:
    """The note TorchDevice adds to `exc`, or None when `exc` is neither a
    device mismatch TorchDevice's redirection can have caused (TorchDevice
    disabled, mode "cpu-stays-cpu", no accelerator) nor a float64 number
    that the float32 TorchDevice gave a float64 request cannot hold, nor
    an operation refused for its float64 result on a device without it,
    nor a gradcheck of inputs that may be such float32."""
    from . import _patches
    if not _patches.is_applied():
        return None
    if not is_device_mismatch(exc):
        return (_float64_note(exc) or _float64_result_note(exc)
                or _gradcheck_note(exc))
    settings = _tdcore.settings()
    if settings["profile"] == "cpu":
        return None
    accel = _patches.device_type_of(settings["profile"])
    if settings["mode"] != "accelerate":
        return _tensor_test_note(exc, accel)
    lines = [_headline(exc, "a host tensor met an accelerator tensor")]
    lines.append(
        f"  In mode \"accelerate\" TorchDevice sends device-less and \"cpu\" "
        f"requests to {accel}, but these stay on the host: "
        "torch.from_numpy and torch.frombuffer results (they share memory "
        "with their source), DataLoader batches, "
        "torch.load(map_location=\"cpu\") results, and tensors torch's own "
        "code makes.")
    lines += _mixed_devices_line(exc)
    lines += _sites_lines(_redirected_sites(),
                          "Host requests TorchDevice sent to the accelerator",
                          "sent to the accelerator")
    lines.append(
        "  To keep a tensor on the host, create it with device=\"cpu:-1\" "
        "or inside `with TorchDevice.cpu_override():`; to move the host "
        "tensor, call .to(device) on it as on CUDA; to keep every host "
        "request on the host, set TORCHDEVICE_MODE=cpu-stays-cpu "
        "(docs/policy.md).")
    return "\n".join(lines)


def explain(exc: BaseException) -> Optional[str]:
    """Adds TorchDevice's note to a device-mismatch exception (once) and
    returns it; None when there is nothing to add."""
    notes = getattr(exc, "__notes__", None) or []
    for note in notes:
        if isinstance(note, str) and note.startswith(_MARK):
            return note
    try:
        note = note_for(exc)
    except Exception:           # never replace the user's error with ours
        return None
    if note is not None and hasattr(exc, "add_note"):
        exc.add_note(note)
    return note


# ---- the hooks ------------------------------------------------------------


def _sys_hook(kind: Any, value: Any, tb: Any) -> None:
    if isinstance(value, BaseException):
        explain(value)
    hook = _previous_sys or sys.__excepthook__
    hook(kind, value, tb)


def _thread_hook(args: Any) -> None:
    if isinstance(args.exc_value, BaseException):
        explain(args.exc_value)
    hook = _previous_thread or threading.__excepthook__
    hook(args)


def on_apply() -> None:
    """Chains the hooks in, once: where a hook installed after ours still
    calls ours (the launcher's), ours stays in its chain (_previous_* set)
    and is not wrapped again."""
    global _previous_sys, _previous_thread
    if sys.excepthook is not _sys_hook and _previous_sys is None:
        _previous_sys = sys.excepthook
        sys.excepthook = _sys_hook
    if threading.excepthook is not _thread_hook and _previous_thread is None:
        _previous_thread = threading.excepthook
        threading.excepthook = _thread_hook


def on_restore() -> None:
    """Takes the hooks out where they are still the ones in place; one
    that a later hook calls stays in that chain and only forwards while
    TorchDevice is disabled."""
    global _previous_sys, _previous_thread
    if sys.excepthook is _sys_hook:
        sys.excepthook = _previous_sys or sys.__excepthook__
        _previous_sys = None
    if threading.excepthook is _thread_hook:
        threading.excepthook = _previous_thread or threading.__excepthook__
        _previous_thread = None
