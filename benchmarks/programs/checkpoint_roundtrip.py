"""Checkpoints written for CUDA: a model trained on the GPU, saved as a
state_dict and as a whole model, loaded back with the map_location forms
people use, exported to numpy and re-imported, and evaluated on the host for
deployment (`map_location="cpu"` into a model built on the host)."""
import os
import tempfile

import numpy as np
import torch
import torch.nn as nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(6, 12)
        self.bn = nn.BatchNorm1d(12)
        self.fc2 = nn.Linear(12, 3)

    def forward(self, x):
        return self.fc2(torch.relu(self.bn(self.fc1(x))))


torch.manual_seed(0)
model = Net().cuda()
opt = torch.optim.Adam(model.parameters(), lr=1e-2)
data = torch.randn(32, 6, device="cuda")
target = torch.randint(0, 3, (32,), device="cuda")
for _ in range(3):
    loss = nn.functional.cross_entropy(model(data), target)
    opt.zero_grad()
    loss.backward()
    opt.step()
model.eval()
with torch.no_grad():
    ref = model(data)
print(f"RESULT trained {ref.sum().item():.6g}")

tmp = tempfile.mkdtemp()
sd_path = os.path.join(tmp, "weights.pt")
full_path = os.path.join(tmp, "model.pt")
torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, sd_path)
torch.save(model, full_path)

forms = {"none": None, "str": "cuda", "str:0": "cuda:0",
         "device": torch.device("cuda"), "dict": {"cuda:0": "cuda"},
         "lambda": lambda storage, loc: storage.cuda()}
for name, loc in forms.items():
    ck = torch.load(sd_path, map_location=loc)
    fresh = Net().cuda().eval()
    fresh.load_state_dict(ck["model"])
    o = torch.optim.Adam(fresh.parameters(), lr=1e-2)
    o.load_state_dict(ck["opt"])
    with torch.no_grad():
        same = torch.equal(fresh(data), ref)
    print(f"RESULT load[{name}] {same}")

whole = torch.load(full_path, weights_only=False)
with torch.no_grad():
    print(f"RESULT whole_model {torch.equal(whole(data), ref)}")

# deployment on the host: weights mapped to the CPU, a host model, host data
host_sd = torch.load(sd_path, map_location="cpu")["model"]
host_model = Net()
host_model.load_state_dict(host_sd)
host_model.eval()
x_host = data.cpu()
with torch.no_grad():
    host_out = host_model(x_host)
print(f"RESULT host_eval {host_out.sum().item():.6g}")
print(f"RESULT host_matches_gpu "
      f"{torch.allclose(host_out, ref.cpu(), atol=1e-6)}")

mapped = torch.load(sd_path, map_location=lambda storage, loc: storage)
print(f"RESULT lambda_cpu_bias {mapped['model']['fc2.bias'].sum().item():.6g}")

# numpy export and re-import
arrays = {k: v.cpu().numpy() for k, v in model.state_dict().items()}
np.savez(os.path.join(tmp, "weights.npz"), **arrays)
loaded = np.load(os.path.join(tmp, "weights.npz"))
again = Net().cuda().eval()
again.load_state_dict({k: torch.from_numpy(loaded[k]) for k in loaded.files})
with torch.no_grad():
    print(f"RESULT numpy_roundtrip {torch.equal(again(data), ref)}")
