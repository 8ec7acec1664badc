"""Device queries written for CUDA, answered for the device really present.

The code below is what CUDA programs do at start-up: check for a GPU, pick
one, print what it is.  Under TorchDevice on a Mac or a CPU-only machine the
answers describe the Apple GPU or the CPU (docs/masquerade.md).
"""
import TorchDevice  # noqa: F401  (the only TorchDevice line)

import torch

print(f"torch.cuda.is_available(): {torch.cuda.is_available()}")
print(f"torch.cuda.device_count(): {torch.cuda.device_count()}")

local_rank = 0
torch.cuda.set_device(local_rank)
torch.cuda.set_device(f"cuda:{local_rank}")
torch.cuda.set_device(torch.device("cuda", local_rank))
print(f"set_device(int / str / device) -> current_device() = "
      f"{torch.cuda.current_device()}")

print(f"get_device_name(): {torch.cuda.get_device_name()}")
print(f"get_device_capability(): {torch.cuda.get_device_capability()}")
props = torch.cuda.get_device_properties(0)
print(f"get_device_properties(0): {props}")
print(f"  total_memory = {props.total_memory / 2**30:.1f} GiB, "
      f"multi_processor_count = {props.multi_processor_count}, "
      f"is_integrated = {props.is_integrated}")
print(f"is_bf16_supported(): {torch.cuda.is_bf16_supported()}")
print(f"can_device_access_peer(0, 0): "
      f"{torch.cuda.can_device_access_peer(0, 0)}")
print(f"get_arch_list(): {torch.cuda.get_arch_list()} "
      f"(truthful: torch.version.cuda = {torch.version.cuda})")

with torch.cuda.device(0):
    x = torch.randn(3, device="cuda")
print(f"inside torch.cuda.device(0): tensor on {x.device}")

print(f"torch.get_device_module('cuda') is torch.cuda: "
      f"{torch.get_device_module('cuda') is torch.cuda}")
print(f"torch.accelerator.is_available(): {torch.accelerator.is_available()}, "
      f"current_accelerator(): {torch.accelerator.current_accelerator()}")

torch.cuda.manual_seed(0)
a = torch.randn(3, device="cuda")
torch.cuda.manual_seed(0)
b = torch.randn(3, device="cuda")
print(f"manual_seed(0) twice gives the same numbers: {torch.equal(a, b)} "
      f"(initial_seed() = {torch.cuda.initial_seed()})")

# torch's own modules are told the truth (DataLoader pinning, autocast ...):
probe = {"__name__": "torch.utils.data.dataloader", "torch": torch}
print(f"is_available() as torch's own code sees it: "
      f"{eval('torch.cuda.is_available()', probe)}")
