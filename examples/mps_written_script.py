"""A small regression network trained on an Apple GPU, written the way Mac
users write PyTorch: `torch.backends.mps.is_available()`,
`torch.device("mps")`, `torch.mps.synchronize()` before reading the clock,
`torch.mps` memory counters.

Nothing here knows about TorchDevice; run it unmodified on a CPU-only or an
NVIDIA machine with

    python -m TorchDevice run examples/mps_written_script.py [--out r.pt]

(on a machine with neither GPU, with TORCHDEVICE_ANNOUNCE=mps: MPS, not CUDA,
is then the accelerator announced to the program).

`--out` saves the losses and final parameters (tests/test_mps_script.py
compares them with the same program written for the CPU by hand).
"""
import argparse
import time

import torch
import torch.nn as nn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--out", help="torch.save the results here")
    args = parser.parse_args()

    if not torch.backends.mps.is_available():
        raise SystemExit("MPS not available: this script needs an Apple GPU")
    device = torch.device("mps")
    torch.manual_seed(0)
    torch.mps.manual_seed(0)

    # y = sin(3 x0) * x1 + noise, learned by a small MLP.
    x = torch.rand(4096, 2, device=device) * 2 - 1
    y = (torch.sin(3 * x[:, :1]) * x[:, 1:]
         + 0.01 * torch.randn(4096, 1, device=device))
    model = nn.Sequential(nn.Linear(2, 64), nn.Tanh(), nn.Linear(64, 64),
                          nn.Tanh(), nn.Linear(64, 1)).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)

    losses = []
    torch.mps.synchronize()
    t0 = time.perf_counter()
    for step in range(args.steps):
        idx = torch.randint(0, x.shape[0], (256,), device="mps")
        loss = nn.functional.mse_loss(model(x[idx]), y[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
    torch.mps.synchronize()
    elapsed = time.perf_counter() - t0

    losses = torch.stack(losses).to("cpu")
    first, last = losses[:10].mean().item(), losses[-10:].mean().item()
    print(f"{args.steps} steps in {elapsed * 1e3:.0f} ms on "
          f"{next(model.parameters()).device}; loss {first:.4f} -> {last:.4f}")
    print(f"MPS memory: {torch.mps.current_allocated_memory() / 2**20:.1f} MiB"
          f" allocated, {torch.mps.driver_allocated_memory() / 2**20:.1f} MiB"
          f" held by the driver")
    torch.mps.empty_cache()
    if not last < first / 2:
        raise SystemExit("the loss did not fall")
    if args.out:
        torch.save({"losses": losses,
                    "params": [p.detach().to("cpu")
                               for p in model.parameters()],
                    "device": str(next(model.parameters()).device)},
                   args.out)


if __name__ == "__main__":
    main()
