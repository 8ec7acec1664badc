"""Train a small ResNet-style classifier on synthetic images, the way CUDA
research repositories do it.

Everything is CUDA-specific and nothing knows about TorchDevice: argparse,
`torch.cuda.set_device`, `cudnn.benchmark`, `torch.cuda.amp` autocast and
GradScaler, `DataLoader(pin_memory=True, num_workers=2)`,
`.cuda(non_blocking=True)`, CUDA events for timing, CUDA memory statistics,
a checkpoint every N steps and `--resume` from one.  A resumed run continues
exactly where the interrupted one was: the checkpoint holds the model,
optimizer, scheduler and scaler states, the RNG states, and the position in
the epoch (the data order of an epoch depends only on the seed and the
epoch).

    python -m TorchDevice run examples/train_cuda_research.py \\
        --epochs 3 --save-every 5 --out-dir runs/a
    python -m TorchDevice run examples/train_cuda_research.py \\
        --epochs 3 --resume runs/a/checkpoint_000010.pt --out-dir runs/b
"""
import argparse
import json
import math
import os
import time

import torch
import torch.backends.cudnn as cudnn
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset


def get_args(argv=None):
    p = argparse.ArgumentParser(description="CUDA training, research style")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--wd", type=float, default=5e-4)
    p.add_argument("--train-size", type=int, default=256)
    p.add_argument("--val-size", type=int, default=128)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--gpu", type=int, default=0)
    p.add_argument("--seed", type=int, default=1234)
    p.add_argument("--amp", action=argparse.BooleanOptionalAction,
                   default=True, help="mixed precision (torch.cuda.amp)")
    p.add_argument("--save-every", type=int, default=5, metavar="N",
                   help="checkpoint every N optimizer steps")
    p.add_argument("--resume", default="", help="checkpoint to resume from")
    p.add_argument("--out-dir", default="runs/train_cuda_research")
    p.add_argument("--print-freq", type=int, default=4)
    return p.parse_args(argv)


class SyntheticImages(Dataset):
    """Four classes of 3x16x16 images: a class-specific pattern plus noise.
    Sample i is the same in every process (its own seeded generator); the
    random flip is drawn from the worker's global RNG, as augmentations are."""

    def __init__(self, size: int, seed: int, split: int, num_classes: int = 4):
        self.size, self.num_classes = size, num_classes
        self.seed = seed * 16 + split
        g = torch.Generator().manual_seed(seed)
        self.patterns = torch.randn(num_classes, 3, 16, 16, generator=g)

    def __len__(self):
        return self.size

    def __getitem__(self, i):
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + i)
        label = int(torch.randint(self.num_classes, (1,), generator=g))
        image = self.patterns[label] + 0.8 * torch.randn(3, 16, 16,
                                                         generator=g)
        if torch.rand(()) < 0.5:
            image = image.flip(-1)
        return image, label


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = (nn.Sequential() if stride == 1 and cin == cout else
                      nn.Sequential(nn.Conv2d(cin, cout, 1, stride,
                                              bias=False),
                                    nn.BatchNorm2d(cout)))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.short(x))


class SmallResNet(nn.Module):
    def __init__(self, num_classes=4):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(16), nn.ReLU())
        self.layers = nn.Sequential(Block(16, 16, 1), Block(16, 32, 2))
        self.drop = nn.Dropout(0.2)
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x):
        x = self.layers(self.stem(x))
        return self.fc(self.drop(F.adaptive_avg_pool2d(x, 1).flatten(1)))


def loader_for_epoch(dataset, args, epoch):
    """The data order of an epoch depends only on (seed, epoch), so a
    resumed run sees the same batches as an uninterrupted one."""
    g = torch.Generator()
    g.manual_seed(args.seed + epoch)
    return DataLoader(dataset, batch_size=args.batch_size, shuffle=True,
                      num_workers=args.workers, pin_memory=True,
                      drop_last=True, generator=g,
                      persistent_workers=False)


def save_checkpoint(state, out_dir, step):
    path = os.path.join(out_dir, f"checkpoint_{step:06d}.pt")
    torch.save(state, path)
    torch.save(state, os.path.join(out_dir, "last.pt"))
    return path


@torch.no_grad()
def validate(model, loader, args):
    model.eval()
    correct = total = 0
    loss_sum = 0.0
    for images, target in loader:
        images = images.cuda(args.gpu, non_blocking=True)
        target = target.cuda(args.gpu, non_blocking=True)
        with torch.cuda.amp.autocast(enabled=args.amp):
            output = model(images)
        loss_sum += F.cross_entropy(output.float(), target,
                                    reduction="sum").item()
        correct += (output.argmax(1) == target).sum().item()
        total += target.numel()
    model.train()
    return loss_sum / total, correct / total


def main(argv=None):
    args = get_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("CUDA is required: no GPU found")
    torch.cuda.set_device(args.gpu)
    cudnn.benchmark = True
    torch.manual_seed(args.seed)
    torch.cuda.manual_seed(args.seed)
    os.makedirs(args.out_dir, exist_ok=True)
    props = torch.cuda.get_device_properties(args.gpu)
    print(f"=> GPU {args.gpu}: {props.name}, "
          f"{props.total_memory / 2**30:.1f} GiB, "
          f"{torch.cuda.device_count()} device(s)")

    train_set = SyntheticImages(args.train_size, args.seed, split=0)
    val_set = SyntheticImages(args.val_size, args.seed, split=1)
    steps_per_epoch = len(train_set) // args.batch_size
    total_steps = steps_per_epoch * args.epochs

    model = SmallResNet().cuda(args.gpu)
    criterion = nn.CrossEntropyLoss().cuda(args.gpu)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr,
                                momentum=args.momentum, weight_decay=args.wd)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=total_steps)
    scaler = torch.cuda.amp.GradScaler(enabled=args.amp)

    step, history = 0, []
    if args.resume:
        print(f"=> loading checkpoint '{args.resume}'")
        loc = f"cuda:{args.gpu}"
        checkpoint = torch.load(args.resume, map_location=loc)
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        scaler.load_state_dict(checkpoint["scaler"])
        torch.set_rng_state(checkpoint["rng_cpu"].cpu())
        torch.cuda.set_rng_state_all([s.cpu() for s in
                                      checkpoint["rng_cuda"]])
        step, history = checkpoint["step"], checkpoint["history"]
        print(f"=> resumed at step {step} (epoch {step // steps_per_epoch})")

    val_loader = DataLoader(val_set, batch_size=64, shuffle=False,
                            num_workers=args.workers, pin_memory=True)
    start_evt = torch.cuda.Event(enable_timing=True)
    end_evt = torch.cuda.Event(enable_timing=True)
    torch.cuda.reset_peak_memory_stats(args.gpu)
    model.train()
    images_seen, wall = 0, time.time()
    start_evt.record()
    for epoch in range(step // steps_per_epoch, args.epochs):
        skip = step - epoch * steps_per_epoch      # > 0 only when resuming
        for i, (images, target) in enumerate(
                loader_for_epoch(train_set, args, epoch)):
            if i < skip:
                continue
            images = images.cuda(args.gpu, non_blocking=True)
            target = target.cuda(args.gpu, non_blocking=True)
            with torch.cuda.amp.autocast(enabled=args.amp):
                output = model(images)
                loss = criterion(output, target)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            step += 1
            images_seen += images.size(0)
            history.append([step, loss.item()])
            if not math.isfinite(history[-1][1]):
                raise SystemExit(f"loss is {history[-1][1]} at step {step}")
            if step % args.print_freq == 0:
                print(f"epoch {epoch} step {step:4d}/{total_steps} "
                      f"loss {loss.item():.4f} "
                      f"lr {scheduler.get_last_lr()[0]:.4f} "
                      f"scale {scaler.get_scale():.0f}")
            if step % args.save_every == 0 or step == total_steps:
                path = save_checkpoint({
                    "step": step, "epoch": epoch, "arch": "SmallResNet",
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict(),
                    "rng_cpu": torch.get_rng_state(),
                    "rng_cuda": torch.cuda.get_rng_state_all(),
                    "history": history,
                    "args": vars(args),
                }, args.out_dir, step)
                print(f"=> saved {path}")
    end_evt.record()
    torch.cuda.synchronize()
    gpu_ms = start_evt.elapsed_time(end_evt)
    val_loss, val_acc = validate(model, val_loader, args)
    peak = torch.cuda.max_memory_allocated(args.gpu) / 2**20
    print(f"=> trained to step {step} in {gpu_ms:.0f} ms (CUDA events), "
          f"{images_seen / max(time.time() - wall, 1e-9):.0f} images/s")
    print(f"=> memory: {torch.cuda.memory_allocated(args.gpu) / 2**20:.1f} "
          f"MiB allocated, {peak:.1f} MiB peak, "
          f"{torch.cuda.memory_reserved(args.gpu) / 2**20:.1f} MiB reserved")
    print(f"=> validation loss {val_loss:.4f}, accuracy {val_acc:.3f}")
    with open(os.path.join(args.out_dir, "summary.json"), "w") as fh:
        json.dump({"step": step, "val_loss": val_loss, "val_acc": val_acc,
                   "history": history, "gpu_ms": gpu_ms,
                   "peak_mib": peak}, fh)


if __name__ == "__main__":
    main()
