"""A DataLoader with two worker processes and pinned memory feeding a model
on the GPU, written for CUDA: numpy samples made in the workers, batches
moved with `.to(device, non_blocking=True)`, and accuracy counted on the host
against the loader's labels (`pred.cpu() == labels`), as training scripts
do."""
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset


class Blobs(Dataset):
    """Two Gaussian blobs in 8 dimensions; sample i is the same in every
    process (seeded by its index)."""

    def __init__(self, n, offset):
        self.n, self.offset = n, offset

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        rng = np.random.RandomState(self.offset + i)
        label = i % 2
        x = rng.randn(8).astype(np.float32) + (1.5 if label else -1.5)
        return x, label


def main():
    device = torch.device("cuda")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2)).cuda()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    train = DataLoader(Blobs(128, 0), batch_size=16, shuffle=True,
                       num_workers=2, pin_memory=True,
                       generator=torch.Generator().manual_seed(0))
    for epoch in range(2):
        for x, y in train:
            x = x.to(device, non_blocking=True)
            y = y.to(device, non_blocking=True)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        print(f"RESULT epoch{epoch}.loss {loss.item():.6g}")

    test = DataLoader(Blobs(64, 10_000), batch_size=32, num_workers=2,
                      pin_memory=True)
    correct = total = 0
    with torch.no_grad():
        for x, y in test:
            pred = model(x.cuda()).argmax(1).cpu()
            correct += (pred == y).sum().item()
            total += y.numel()
    print(f"RESULT accuracy {correct / total:.6g}")


if __name__ == "__main__":
    main()
