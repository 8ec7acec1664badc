"""CUDA-only calls that have no meaning elsewhere, in a typical CUDA script.

Under TorchDevice they become no-ops, honest eager fallbacks, or a clear
error naming the call (docs/masquerade.md).  AMP runs on the device really
used with a dtype it supports.  On an NVIDIA GPU TorchDevice leaves them to
torch, and the lines printed say so.
"""
import TorchDevice

import torch

# Profile "cuda": a real NVIDIA GPU, where every call below is torch's own.
NATIVE = TorchDevice.hardware_profile() == "cuda"

torch.backends.cudnn.benchmark = True
torch.backends.cudnn.deterministic = False
torch.backends.cuda.matmul.allow_tf32 = True
print("cudnn / tf32 flags set ("
      + ("torch's own" if NATIVE else "no effect off NVIDIA") + ")")

model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(),
                            torch.nn.Linear(32, 1)).cuda()
opt = torch.optim.SGD(model.parameters(), lr=0.05)
scaler = torch.amp.GradScaler("cuda")
x = torch.randn(128, 16, device="cuda")
y = x[:, :1] * 2 + 1

for step in range(40):
    torch.cuda.nvtx.range_push(f"step {step}")
    opt.zero_grad()
    with torch.autocast("cuda"):
        out = model(x)
        loss = torch.nn.functional.mse_loss(out.float(), y)
    scaler.scale(loss).backward()
    scaler.step(opt)
    scaler.update()
    torch.cuda.nvtx.range_pop()
    if step in (0, 39):
        print(f"step {step:2}: loss {loss.item():.4f} (autocast output "
              f"{out.dtype} on {out.device}, grad scale {scaler.get_scale()})")

with torch.cuda.nvtx.range("eval"):
    torch.cuda.nvtx.mark("evaluating")
print("nvtx range_push/range_pop/mark/range: "
      + ("torch's own" if NATIVE else "no-ops"))

# Graphed before its first backward, as torch's documentation does it:
# graphing the trained model failed on an NVIDIA GPU (CUDA invalidated the
# capture; its gradient accumulators were made on the default stream).
head = torch.nn.Linear(16, 1).cuda()
graphed = torch.cuda.make_graphed_callables(head, (x,))
# torch returns the module itself on CUDA too, its forward replaced.
print("make_graphed_callables: "
      + ("the module, its forward CUDA-graphed" if NATIVE
         else "the module itself (runs eagerly)"))
print(f"graphed head output {tuple(graphed(x).shape)}")
print(f"is_current_stream_capturing(): "
      f"{torch.cuda.is_current_stream_capturing()}")
static_x = torch.zeros(4, device="cuda")
g = torch.cuda.CUDAGraph()
with torch.cuda.graph(g):
    static_y = static_x * 2 + 1
static_x.copy_(torch.arange(4.0))
g.replay()
print("CUDAGraph captured, then replayed on new input "
      + ("(torch's own)" if NATIVE else "(operator by operator)")
      + f": {static_y.tolist()}")

torch.cuda.ipc_collect()
torch.cuda.set_sync_debug_mode(0)
print("ipc_collect(), set_sync_debug_mode(0): "
      + ("torch's own" if NATIVE else "no-ops"))

try:
    raise torch.cuda.OutOfMemoryError("simulated out of memory")
except torch.cuda.OutOfMemoryError as exc:
    print(f"caught torch.cuda.OutOfMemoryError: {exc}")

with torch.random.fork_rng(device_type="cuda"):
    torch.randn(3, device="cuda")
print("torch.random.fork_rng(device_type='cuda'): state restored")
