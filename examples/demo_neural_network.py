"""A small MLP trained on synthetic data, written the way CUDA users write
it: model.cuda(), device="cuda", .to(device).  The loss must fall."""
import TorchDevice
TorchDevice.configure(log_level="INFO")   # show each redirected call site

import torch
import torch.nn as nn
import torch.nn.functional as F

device = torch.device("cuda" if torch.cuda.is_available() else "cuda")
torch.manual_seed(0)

# Synthetic regression task: y = sin(x0) + 0.5 * x1^2 - x2
x = torch.randn(2048, 3, device="cuda")
y = (torch.sin(x[:, 0]) + 0.5 * x[:, 1] ** 2 - x[:, 2]).unsqueeze(1)


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(3, 64)
        self.fc2 = nn.Linear(64, 64)
        self.fc3 = nn.Linear(64, 1)

    def forward(self, inp):
        return self.fc3(F.relu(self.fc2(F.relu(self.fc1(inp)))))


model = MLP().cuda()
optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
losses = []
for step in range(200):
    idx = torch.randint(0, x.shape[0], (128,), device="cuda")
    xb, yb = x[idx].to(device), y[idx].to(device)
    loss = F.mse_loss(model(xb), yb)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    losses.append(loss.item())
    if step % 50 == 0:
        print(f"step {step:3d}  loss {loss.item():.4f}")

first, last = sum(losses[:10]) / 10, sum(losses[-10:]) / 10
print(f"mean loss first 10 steps {first:.4f}, last 10 steps {last:.4f}")
print(f"parameters on {next(model.parameters()).device}")
assert last < first * 0.5, "the loss did not fall"
print("loss fell: training works")

print("\nredirected call sites:")
for row in TorchDevice.report():
    print(f"  line {row['line']:>3}  {row['api']:<20} {row['from']:>7} -> "
          f"{row['to']:<6} x{row['count']}")
