"""What each autocast dtype costs on the device really used: the measurement
behind the choice of what CUDA's float16 autocast becomes
(docs/policy.md, "Mixed precision").

Natively, TorchDevice disabled, on the CPU (or MPS where present):

- matmul:     a square matmul with both operands in the dtype;
- train step: a nanoGPT-style model (4 layers, 256 wide, batch 8 x 128)
              forward + backward + AdamW, plain float32 or under
              torch.autocast(<device>, dtype);
- error:      the mean absolute difference of that model's logits from
              float32 (how much of the numbers the dtype costs).

Interleaved repetitions (the order rotates), medians; thread CPU time with
one torch thread by default, so that other processes on a shared machine
count less (--threads, --clock wall).  Not a test: timings are printed.

    python benchmarks/amp_dtypes.py [--reps 7] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from contextlib import nullcontext
from typing import Any, Callable, Dict, List, Optional

import torch
import torch.nn.functional as F

DTYPES = {"float32": None, "bfloat16": torch.bfloat16,
          "float16": torch.float16}
CLOCKS = {"thread": time.thread_time, "wall": time.perf_counter}


class Block(torch.nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln1 = torch.nn.LayerNorm(width)
        self.qkv = torch.nn.Linear(width, 3 * width)
        self.proj = torch.nn.Linear(width, width)
        self.ln2 = torch.nn.LayerNorm(width)
        self.fc = torch.nn.Linear(width, 4 * width)
        self.out = torch.nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2)
                   for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).reshape(b, t, c))
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class GPT(torch.nn.Module):
    def __init__(self, vocab: int = 512, width: int = 256, heads: int = 4,
                 layers: int = 4, block: int = 128) -> None:
        super().__init__()
        self.wte = torch.nn.Embedding(vocab, width)
        self.wpe = torch.nn.Embedding(block, width)
        self.blocks = torch.nn.ModuleList(Block(width, heads)
                                          for _ in range(layers))
        self.ln = torch.nn.LayerNorm(width)
        self.head = torch.nn.Linear(width, vocab, bias=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(idx.shape[1], device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.ln(x))


def context(device: str, dtype: Optional[torch.dtype]) -> Any:
    return nullcontext() if dtype is None else torch.autocast(device, dtype)


def sync(device: str) -> None:
    if device == "mps":
        torch.mps.synchronize()


def matmul_case(device: str, dtype: Optional[torch.dtype], n: int
                ) -> Callable[[], None]:
    a = torch.randn(n, n, device=device, dtype=dtype or torch.float32)
    b = torch.randn(n, n, device=device, dtype=dtype or torch.float32)

    def run() -> None:
        a @ b
        sync(device)
    return run


def train_case(device: str, dtype: Optional[torch.dtype]
               ) -> Callable[[], None]:
    torch.manual_seed(0)
    model = GPT().to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    idx = torch.randint(0, 512, (8, 128), device=device)

    def run() -> None:
        with context(device, dtype):
            logits = model(idx)
            loss = F.cross_entropy(logits.float().reshape(-1, 512),
                                   idx.reshape(-1))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync(device)
    return run


def logits_error(device: str, dtype: Optional[torch.dtype]) -> float:
    torch.manual_seed(0)
    model = GPT().to(device).eval()
    idx = torch.randint(0, 512, (8, 128), device=device)
    with torch.no_grad():
        want = model(idx).float()
        with context(device, dtype):
            got = model(idx).float()
    return float((got - want).abs().mean())


def measure(cases: Dict[str, Callable[[], None]], reps: int,
            clock: Callable[[], float]) -> Dict[str, float]:
    names = list(cases)
    for name in names:                  # warm-up
        cases[name]()
    times: Dict[str, List[float]] = {n: [] for n in names}
    for rep in range(reps):
        k = rep % len(names)
        for name in names[k:] + names[:k]:
            t0 = clock()
            cases[name]()
            times[name].append(clock() - t0)
    return {n: statistics.median(v) * 1e3 for n, v in times.items()}


def cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("flags"):
                    words = line.split(":", 1)[1].split()
                    keep = [w for w in words if "bf16" in w or "fp16" in w
                            or w.startswith("amx")]
                    return " ".join(keep) or "(no bf16/fp16 flags)"
    except OSError:
        pass
    return platform.processor()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="thread")
    parser.add_argument("--json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = "mps" if torch.backends.mps.is_available() else "cpu"
    clock = CLOCKS[args.clock]
    print(f"device {device}; torch {torch.__version__}; "
          f"{args.threads} thread(s); CPU flags: {cpu_flags()}")
    mm = measure({n: matmul_case(device, d, args.size)
                  for n, d in DTYPES.items()}, args.reps, clock)
    step = measure({n: train_case(device, d) for n, d in DTYPES.items()},
                   args.reps, clock)
    error = {n: logits_error(device, d) for n, d in DTYPES.items()}
    print(f"{'dtype':<10}{'matmul ms':>11}{'x fp32':>8}{'step ms':>10}"
          f"{'x fp32':>8}{'logit error':>13}")
    for n in DTYPES:
        print(f"{n:<10}{mm[n]:>11.2f}{mm[n] / mm['float32']:>8.2f}"
              f"{step[n]:>10.1f}{step[n] / step['float32']:>8.2f}"
              f"{error[n]:>13.2e}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"device": device, "flags": cpu_flags(),
                       "threads": args.threads, "reps": args.reps,
                       "matmul_ms": mm, "step_ms": step,
                       "logit_error": error}, fh, indent=2)


if __name__ == "__main__":
    sys.exit(main())
