"""The CPU override: time the same work on the CPU and on the accelerator.

"cpu:-1" toggles the override (the seed's spelling); TorchDevice.cpu_override()
is the scoped form.  While it is on, None and "cpu" stay on the CPU and
explicit accelerator requests are still honoured.
"""
import time

import TorchDevice
TorchDevice.configure(log_level="INFO")   # show each redirected call site

import torch


def bench(device, n=256, reps=20):
    a = torch.randn(n, n, device=device)
    start = time.perf_counter()
    for _ in range(reps):
        a = torch.tanh(a @ a / n)
    return a.device, (time.perf_counter() - start) / reps * 1e3


print(f"profile: {TorchDevice.hardware_profile()}")
print(f"default device now: {torch.zeros(1).device}")

dev = torch.device("cpu:-1")            # toggle: CPU override on
print(f"cpu:-1 -> {dev}; override on: {TorchDevice.policy()['cpu_override']}")
where, ms = bench(None)
print(f"no device given with the override on: {where}, {ms:.3f} ms/iter")
where, ms = bench("cuda")
print(f"'cuda' with the override on (honoured): {where}, {ms:.3f} ms/iter")
torch.device("cpu:-1")                  # toggle back
print(f"override on: {TorchDevice.policy()['cpu_override']}")

with TorchDevice.cpu_override():
    inside = torch.ones(1, device="cpu").device
    print(f"inside cpu_override(): 'cpu' -> {inside}")
print(f"after the block the override is "
      f"{'on' if TorchDevice.policy()['cpu_override'] else 'off'}")

print("\nredirected call sites:")
for row in TorchDevice.report():
    print(f"  line {row['line']:>3}  {row['api']:<20} {row['from']:>7} -> "
          f"{row['to']:<6} x{row['count']}")
