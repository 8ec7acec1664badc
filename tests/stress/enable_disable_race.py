"""Stress: enable()/disable() in one thread while others are inside hooks.

Two worker threads call into everything TorchDevice intercepts
(torch.device, a factory, Tensor.to, a torch.cuda masquerade query, a
torch.cuda.Event, torch.Generator, torch.Stream) from call sites that are
always new, so every call records a report entry and logs it (INFO): the
hook calls out to Python in the middle of its work, where the GIL may pass
to the third thread, which loops disable(); enable() and now and then
configure() of another mode.  With a switch interval of a microsecond, any
hook that reads state the uninstall frees crashes the process.

Run as a script: exits 0 when nothing crashed and every worker call either
succeeded or failed with an ordinary Python exception that disabling
explains.  Seconds: argv[1] (default 30).
"""
from __future__ import annotations

import logging
import sys
import threading
import time

import torch

import TorchDevice

SECONDS = float(sys.argv[1]) if len(sys.argv) > 1 else 30.0

CODE = """
d = torch.device("cuda")
z = torch.zeros(1, device="cuda")
m = z.to("cuda")
n = torch.cuda.memory_allocated()
e = torch.cuda.Event(enable_timing=False)
g = torch.Generator(device="cuda")
s = torch.Stream("cuda")
"""


# What torch (or TorchDevice) says when the call ran while disabled.
EXPLAINED = ("CUDA", "cuda", "NVIDIA", "TorchDevice", "dummy base class")


class _Quiet(logging.Handler):
    """Formats every record (the work a real handler does) and drops it."""

    def emit(self, record: logging.LogRecord) -> None:
        self.format(record)


def main() -> int:
    handler = _Quiet()
    logger = logging.getLogger("TorchDevice")
    logger.addHandler(handler)
    logger.propagate = False
    TorchDevice.configure(log_level=logging.INFO)
    sys.setswitchinterval(1e-6)
    deadline = time.monotonic() + SECONDS
    stop = threading.Event()
    counts = {"calls": 0, "toggles": 0}
    unexpected: list[str] = []

    def worker(tag: int) -> None:
        i = 0
        while not stop.is_set():
            i += 1
            code = compile(CODE, f"<site {tag}.{i}>", "exec")
            try:
                exec(code, {"torch": torch})
            except Exception as exc:  # noqa: BLE001 - classified below
                # Disabled in the middle: torch's own answer on a CPU-only
                # build ("Torch not compiled with CUDA enabled", ...), or on
                # a CUDA build without a GPU ("Found no NVIDIA driver").
                text = str(exc)
                if not any(word in text for word in EXPLAINED):
                    unexpected.append(f"{type(exc).__name__}: {text}")
                    stop.set()
            counts["calls"] += 1

    def toggler() -> None:
        modes = ("cpu-stays-cpu", "accelerate")
        while not stop.is_set():
            TorchDevice.disable()
            TorchDevice.enable()
            counts["toggles"] += 1
            if counts["toggles"] % 5 == 0:
                # configure() swaps the masquerade's snapshot too.
                TorchDevice.configure(mode=modes[counts["toggles"] % 2])

    threads = [threading.Thread(target=worker, args=(k,)) for k in (1, 2)]
    threads.append(threading.Thread(target=toggler))
    for t in threads:
        t.start()
    while time.monotonic() < deadline and not stop.is_set():
        time.sleep(0.05)
    stop.set()
    for t in threads:
        t.join()
    TorchDevice.enable()
    TorchDevice.configure(mode="accelerate")
    print(f"calls={counts['calls']} toggles={counts['toggles']}")
    if unexpected:
        print("\n".join(unexpected[:5]), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
