"""Host tensors that share memory with numpy arrays, written for a CUDA
machine: on the host `t.numpy()` and `torch.as_tensor(array)` share memory
(writes through one show in the other), while a GPU tensor's `.cpu().numpy()`
is a copy.  Programs rely on both: filling a host buffer through numpy, and
editing a host copy without touching the GPU original."""
import numpy as np
import torch

buf = torch.zeros(4)                      # a host buffer
view = buf.numpy()
view[:] = np.arange(4)                    # filled through numpy
print(f"RESULT buffer {buf.tolist()}")

arr = np.ones(3, dtype=np.float32)
shared = torch.as_tensor(arr)             # shares arr's memory on the host
arr *= 3
print(f"RESULT as_tensor {shared.tolist()}")

ring = torch.from_numpy(np.zeros(3, dtype=np.float32))
ring.add_(2)                              # visible through the array
print(f"RESULT from_numpy {ring.numpy().tolist()}")

g = torch.arange(3.0, device="cuda")
host = g.cpu()
copy = host.numpy()
copy += 10                                # edits the host copy ...
print(f"RESULT host_copy {host.tolist()}")
print(f"RESULT device_original {g.tolist()}")  # ... not the GPU tensor
