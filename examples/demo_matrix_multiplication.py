"""Matrix multiplication written for CUDA, checked against a host result."""
import time

import TorchDevice
TorchDevice.configure(log_level="INFO")   # show each redirected call site

import torch

torch.manual_seed(0)
n = 512
a = torch.randn(n, n, device="cuda")
b = torch.randn(n, n, device="cuda")

c = a @ b                      # warm-up
start = time.perf_counter()
for _ in range(10):
    c = torch.matmul(a, b)
elapsed = (time.perf_counter() - start) / 10
print(f"{n}x{n} matmul on {c.device}: {elapsed * 1e3:.2f} ms per call, "
      f"{2 * n ** 3 / elapsed / 1e9:.1f} GFLOP/s")

# Check against float64 on the host (a real CUDA user's sanity check).
expected = (a.cpu().double() @ b.cpu().double()).float()
max_err = (c.cpu() - expected).abs().max().item()
print(f"max abs error vs float64 host result: {max_err:.2e}")
assert max_err < 1e-2, "matmul result is wrong"

batch = torch.bmm(torch.randn(4, 8, 16, device="cuda"),
                  torch.randn(4, 16, 2, device="cuda"))
print(f"bmm result {tuple(batch.shape)} on {batch.device}")

print("\nredirected call sites:")
for row in TorchDevice.report():
    print(f"  line {row['line']:>3}  {row['api']:<20} {row['from']:>7} -> "
          f"{row['to']:<6} x{row['count']}")
