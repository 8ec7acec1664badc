"""CUDA streams and events, as CUDA code uses them, on whatever is present.

1. Time a loop with a pair of events (the usual CUDA benchmarking idiom).
2. Overlap two pieces of work on two streams, with the waits CUDA needs,
   and check the result against the same work on one stream.
"""
import time

import TorchDevice
TorchDevice.configure(log_level="INFO")   # show each call site that needed help

import torch

print(f"profile: {TorchDevice.hardware_profile()}")
probe = torch.cuda.Event()
print(f"torch.cuda.Event -> {type(probe).__module__}.{type(probe).__name__}, "
      f"backend: {getattr(probe, '_td_backend', 'native cuda')}")

torch.manual_seed(0)
n, steps = 256, 10
a = torch.randn(n, n, device="cuda")
b = torch.randn(n, n, device="cuda")

# ---- 1. timing a loop with events ------------------------------------------
start = torch.cuda.Event(enable_timing=True)
end = torch.cuda.Event(enable_timing=True)
c = a @ b                                  # warm-up
t0 = time.perf_counter()
start.record()
for _ in range(steps):
    c = a @ b
end.record()
end.synchronize()
host_ms = (time.perf_counter() - t0) * 1e3
event_ms = start.elapsed_time(end)
print(f"{steps} matmuls {n}x{n}: {event_ms:.2f} ms by events, "
      f"{host_ms:.2f} ms by the host clock "
      f"({event_ms / steps:.3f} ms per matmul)")

# ---- 2. overlapping work on two streams ------------------------------------
main = torch.cuda.current_stream()
side = torch.cuda.Stream()
x = torch.randn(n, n, device="cuda")

side.wait_stream(main)                     # x is ready before side reads it
with torch.cuda.stream(side):
    left = torch.relu(x @ a)               # runs on the side stream
main_part = torch.tanh(x @ b)              # meanwhile, on the main stream
main.wait_stream(side)                     # main needs `left` below
left.record_stream(main)                   # allocator: main uses it too
combined = left + main_part
done = main.record_event()
done.synchronize()

reference = torch.relu(x @ a) + torch.tanh(x @ b)
# float32 products may round differently from one call to the next (the
# BLAS can split them across threads differently), so compare with a
# tolerance, as one compares any two float32 results.
agree = torch.allclose(combined, reference, rtol=1e-4, atol=1e-3)
print(f"two streams agree with one: {agree}")
print(f"current stream restored: {torch.cuda.current_stream() == main}")
assert agree

torch.cuda.synchronize()
print("\ncall sites that needed help:")
for row in TorchDevice.report():
    if row["what"] == "emulated":
        print(f"  line {row['line']:>3}  {row['api']:<18} emulated "
              f"({row['from']} -> {row['to']}) x{row['count']}")
