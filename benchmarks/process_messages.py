"""What a message between processes costs while both hold a device tensor.

Where torch cannot share a device's memory with another process (MPS, the
simulated accelerator), TorchDevice keeps a device tensor sent to another
process linked to a host copy in shared memory, and each process compares
the bytes of what it holds with that copy whenever it sends a message, so
that writes travel as they do through CUDA's shared memory
(docs/compile-checkpoints-distributed.md, "Tensors sent to other
processes").  This measures that cost: a parent and a spawned child that both
hold a float32 tensor of S MiB exchange small messages through a pair of
torch.multiprocessing queues, and the time per round trip is compared with
the same program run natively with the tensor on the host, which torch
shares itself (nothing to do per message).  Each variant runs in a fresh
process, the repetitions interleaved; the medians are printed and nothing is
asserted.  Run it where "cuda" lands on an accelerator (on profile cpu the
tensor is a host tensor under TorchDevice too, and no link is made):

    SIMACCEL_AUTOLOAD=1 SIMACCEL_MPS_RULES=1 TORCHDEVICE_CAPABILITIES=mps \\
        python benchmarks/process_messages.py [--sizes 1,16,64] [--reps 5]
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Dict, List

VARIANTS = ("native", "torchdevice")


def _child(variant: str, inbox, outbox) -> None:
    if variant == "torchdevice":
        import TorchDevice  # noqa: F401  (a spawned child starts bare)
    held = inbox.get()
    outbox.put(held.numel())
    while True:
        message = inbox.get()
        if message is None:
            break
        outbox.put(message)


def worker(variant: str, mib: int, messages: int) -> Dict[str, object]:
    """One timed exchange; returns seconds per round trip."""
    import torch
    import torch.multiprocessing as mp
    if variant == "torchdevice":
        import TorchDevice
        device = "cuda"
        where = str(TorchDevice.policy()["device"])
    else:
        device, where = "cpu", "cpu"
    ctx = mp.get_context("spawn")
    inbox, outbox = ctx.Queue(), ctx.Queue()
    proc = ctx.Process(target=_child, args=(variant, inbox, outbox))
    proc.start()
    held = torch.zeros(mib * 2**18, device=device)
    inbox.put(held)
    assert outbox.get(timeout=120) == held.numel()
    for i in range(5):          # warm-up
        inbox.put(i)
        outbox.get(timeout=120)
    start = time.perf_counter()
    for i in range(messages):
        inbox.put(i)
        outbox.get(timeout=120)
    elapsed = time.perf_counter() - start
    inbox.put(None)
    proc.join(timeout=120)
    return {"variant": variant, "mib": mib, "device": where,
            "seconds_per_round_trip": elapsed / messages}


def run_worker(variant: str, mib: int, messages: int) -> Dict[str, object]:
    env = dict(os.environ)
    if variant == "native":
        env.pop("TORCHDEVICE", None)
    proc = subprocess.run([sys.executable, __file__, "--worker", variant,
                           str(mib), str(messages)], capture_output=True,
                          text=True, env=env, timeout=600)
    if proc.returncode != 0:
        raise SystemExit(f"{variant} {mib} MiB failed:\n{proc.stderr}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: List[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,16,64",
                        help="tensor sizes in MiB, comma-separated")
    parser.add_argument("--messages", type=int, default=200)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--json", help="also write the results here")
    parser.add_argument("--worker", nargs=3, metavar=("VARIANT", "MIB", "N"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        variant, mib, n = args.worker
        print(json.dumps(worker(variant, int(mib), int(n))))
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    times: Dict[tuple, List[float]] = {}
    device = "?"
    for _ in range(args.reps):
        for mib in sizes:
            for variant in VARIANTS:
                r = run_worker(variant, mib, args.messages)
                times.setdefault((variant, mib), []).append(
                    float(r["seconds_per_round_trip"]))
                if variant == "torchdevice":
                    device = str(r["device"])
    print(f"round trip of a small message while parent and child hold a "
          f"float32 tensor; TorchDevice's \"cuda\" lands on {device}; "
          f"median of {args.reps}, {args.messages} round trips each")
    print(f"{'MiB':>5} {'native (host, us)':>18} {'TorchDevice (us)':>17} "
          f"{'ratio':>8}")
    rows = []
    for mib in sizes:
        native = statistics.median(times[("native", mib)])
        ours = statistics.median(times[("torchdevice", mib)])
        rows.append({"mib": mib, "native_us": native * 1e6,
                     "torchdevice_us": ours * 1e6, "ratio": ours / native})
        print(f"{mib:>5} {native * 1e6:>18.1f} {ours * 1e6:>17.1f} "
              f"{ours / native:>8.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": device, "reps": args.reps,
                       "messages": args.messages, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main(sys.argv[1:])
