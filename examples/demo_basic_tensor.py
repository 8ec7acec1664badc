"""Basic tensor code written for CUDA, run through TorchDevice.

Everything below the two TorchDevice lines is ordinary CUDA code: hard-coded
"cuda" devices and .cuda() calls.  On a machine without CUDA, TorchDevice
sends it to MPS (Apple) or the CPU and logs each call site it redirected.
"""
import TorchDevice
TorchDevice.configure(log_level="INFO")   # show each redirected call site

import torch

device = torch.device("cuda")
print(f"torch.device('cuda') reads {device}, "
      f"runs on {torch.empty(0, device=device).device}")

a = torch.tensor([1.0, 2.0, 3.0], device="cuda")
b = torch.ones(3).cuda()
c = a + b
print(f"a + b = {c.tolist()} on {c.device}")

d = torch.zeros(2, 3, device=device)
e = torch.randn(2, 3, device="cuda:0")
print(f"zeros on {d.device}, randn on {e.device}")

host = c.cpu().numpy()
print(f"back on the host as numpy: {host}")

f = torch.arange(6, device="cuda").reshape(2, 3).to("cuda", torch.float32)
print(f"arange().to('cuda', float32) -> {f.dtype} on {f.device}")

print("\nredirected call sites:")
for row in TorchDevice.report():
    print(f"  line {row['line']:>3}  {row['api']:<20} {row['from']:>7} -> "
          f"{row['to']:<6} x{row['count']}")
print(f"\nhardware profile: {TorchDevice.hardware_profile()}")
