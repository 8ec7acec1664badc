"""A small training loop written for CUDA, unchanged.  Run it with

    python -m TorchDevice run --report examples/migration_demo.py
    TORCHDEVICE=1 TORCHDEVICE_REPORT=report.json python examples/migration_demo.py

to see which lines TorchDevice had to help (docs/report.md).
"""
import torch
import torch.nn as nn

device = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def make_batch(n):
    x = torch.randn(n, 8, device="cuda")
    y = (x.sum(dim=1, keepdim=True) > 0).float().cuda()
    return x, y


def main():
    torch.cuda.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1)).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loss_fn = nn.BCEWithLogitsLoss()
    for step in range(200):
        x, y = make_batch(32)
        loss = loss_fn(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.cuda.synchronize()
    print(f"final loss {loss.item():.3f} on {x.device}, "
          f"peak memory {torch.cuda.max_memory_allocated() / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
