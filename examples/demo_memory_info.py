"""Memory statistics written for CUDA, answered for the device really used.

On MPS the numbers come from torch.mps; on the CPU from the process's own
resident memory, with peaks kept by TorchDevice (docs/masquerade.md).
"""
import TorchDevice  # noqa: F401

import torch

MB = 2 ** 20


def show(label: str) -> None:
    print(f"{label:28} allocated {torch.cuda.memory_allocated() / MB:8.1f} MB"
          f"  peak {torch.cuda.max_memory_allocated() / MB:8.1f} MB"
          f"  reserved {torch.cuda.memory_reserved() / MB:8.1f} MB")


torch.cuda.reset_peak_memory_stats()
show("start")
x = torch.ones(64 * MB // 4, device="cuda")          # 64 MB of float32
show("after a 64 MB tensor")
del x
torch.cuda.empty_cache()
show("after del + empty_cache()")
torch.cuda.reset_peak_memory_stats()
show("after reset_peak_memory_stats")

free, total = torch.cuda.mem_get_info()
print(f"mem_get_info(): free {free / 2**30:.1f} GiB "
      f"of {total / 2**30:.1f} GiB")
stats = torch.cuda.memory_stats()
print(f"memory_stats(): {len(stats)} keys, e.g. allocated_bytes.all.peak = "
      f"{stats['allocated_bytes.all.peak'] / MB:.1f} MB")
torch.cuda.set_per_process_memory_fraction(0.8)
print(f"per-process memory fraction: "
      f"{torch.cuda.get_per_process_memory_fraction()}")
print(torch.cuda.list_gpu_processes())
print(torch.cuda.memory_summary(abbreviated=True))
