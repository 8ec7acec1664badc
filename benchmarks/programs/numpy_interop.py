"""Tensors made from numpy arrays and byte buffers (`torch.from_numpy`,
`torch.as_tensor`, `torch.frombuffer`) next to GPU tensors, written for
CUDA: every line is legal on an NVIDIA machine, where host-side tensors stay
on the host and GPU work is moved explicitly."""
import numpy as np
import torch

torch.manual_seed(0)
rng = np.random.RandomState(0)
w = torch.randn(4, 3, device="cuda")

# numpy features to the GPU
x_np = rng.randn(8, 4).astype(np.float32)
x = torch.from_numpy(x_np).cuda()
y = x @ w
print(f"RESULT gpu_matmul {y.sum().item():.6g}")

# host-side preprocessing: numpy data with tensors made on the host
mean = torch.as_tensor(x_np.mean(0))
std = torch.from_numpy(x_np.std(0))
normed = (torch.tensor(x_np) - mean) / std
print(f"RESULT normed {normed.abs().sum().item():.6g}")

# a byte buffer (a file header, a network message) decoded on the host
raw = torch.frombuffer(bytearray(range(32)), dtype=torch.uint8)
weights = torch.arange(32) % 5
print(f"RESULT checksum {int((raw.long() * weights).sum())}")

# GPU results back on the host, mixed with numpy-made tensors
labels = torch.from_numpy(rng.randint(0, 3, size=8))
pred = y.argmax(1).cpu()
print(f"RESULT agreement {(pred == labels).float().mean().item():.6g}")
scores = y.cpu() * torch.from_numpy(np.linspace(0, 1, 3, dtype=np.float32))
print(f"RESULT weighted {scores.sum().item():.6g}")

# and a host tensor moved up to meet a GPU one
bias = torch.as_tensor([0.5, -0.5, 0.25]).cuda()
print(f"RESULT biased {(y + bias).sum().item():.6g}")
