"""SyncBatchNorm where "cuda" lands on a device torch has no kernels for.

torch's SyncBatchNorm computes with five operators that only CUDA (and a few
other backends) implement (`batch_norm_stats`, `batch_norm_gather_stats_with
_counts`, `batch_norm_elemt`, `batch_norm_backward_reduce`,
`batch_norm_backward_elemt`), and refuses other inputs before it starts:
DistributedDataParallel stops on a module whose parameters are on the CPU
("SyncBatchNorm layers only work with GPU modules"), SyncBatchNorm's forward on
an input that is not on a GPU.  A CUDA program's model put on "cuda" lands on
the host or on MPS here, so both refusals are replaced, for such a model only,
by the same computation written with ordinary operators and the process
group's collectives (docs/compile-checkpoints-distributed.md, "SyncBatchNorm"):

- forward: each rank's count, mean and sum of squared deviations per channel,
  gathered from every rank and combined (Chan's parallel formula, as CUDA
  combines each rank's mean and variance); running statistics updated with
  the unbiased variance of the whole batch; the input normalised with the
  whole batch's mean and variance;
- backward: the sums of the gradient and of the gradient times the centred
  input, summed over the ranks, give the input's gradient; weight and bias get
  this rank's share, which DistributedDataParallel then averages, as on CUDA.

A model the program put on the host itself keeps torch's refusals.
"""
from __future__ import annotations

import functools
from typing import Any, List, Optional, Tuple

import torch

from . import _patches, _tdcore, _torch_compat

# The device types torch's own SyncBatchNorm computes on (its forward's list;
# the PrivateUse1 backend's name is read when asked).
_TORCH_SYNC_TYPES = ("cuda", "hpu", "xpu")


def _torch_computes_on(device_type: str) -> bool:
    if device_type in _TORCH_SYNC_TYPES:
        return True
    name = _torch_compat.get("privateuse1_backend_name")
    return name is not None and device_type == name()


def _emulated(module: Any, input: torch.Tensor) -> bool:
    """Whether this SyncBatchNorm call is ours: training with a process group
    of more than one rank, on a device torch's kernels do not cover, for a
    module the program put on the accelerator."""
    if not (module.training and torch.distributed.is_available()
            and torch.distributed.is_initialized()):
        return False
    if _torch_computes_on(input.device.type):
        return False
    group = module.process_group or torch.distributed.group.WORLD
    return (torch.distributed.get_world_size(group) > 1
            and _patches.module_on_accelerator(module, input))


def _channel_shape(input: torch.Tensor) -> List[int]:
    return [1, -1] + [1] * (input.dim() - 2)


def _reduced_dims(input: torch.Tensor) -> List[int]:
    return [0] + list(range(2, input.dim()))


class _SyncBatchNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, input: torch.Tensor, weight: Optional[torch.Tensor],
                bias: Optional[torch.Tensor],
                running_mean: Optional[torch.Tensor],
                running_var: Optional[torch.Tensor], eps: float,
                momentum: float, group: Any) -> torch.Tensor:
        channels = input.size(1)
        # float16/bfloat16 inputs are reduced in float32, as CUDA's kernels do
        acc_dtype = torch.promote_types(input.dtype, torch.float32)
        x = input.to(acc_dtype)
        dims = _reduced_dims(input)
        count = input.numel() // channels if channels else 0
        if count > 0:
            mean = x.mean(dims)
            m2 = (x - mean.view(_channel_shape(input))).square().sum(dims)
        else:
            mean = x.new_zeros(channels)
            m2 = x.new_zeros(channels)
        mine = torch.cat([x.new_full((1,), float(count)), mean, m2])
        world = torch.distributed.get_world_size(group)
        gathered = [torch.empty_like(mine) for _ in range(world)]
        torch.distributed.all_gather(gathered, mine, group=group)
        stats = torch.stack(gathered)                     # ranks x (1+2C)
        counts = stats[:, :1]
        total = counts.sum()
        if total.item() <= 0:
            raise ValueError("SyncBatchNorm: the batch is empty on every rank")
        means = stats[:, 1:1 + channels]
        m2s = stats[:, 1 + channels:]
        mean = (counts * means).sum(0) / total
        m2 = (m2s + counts * (means - mean).square()).sum(0)
        var = m2 / total
        invstd = torch.rsqrt(var + eps)
        if running_mean is not None or running_var is not None:
            with torch.no_grad():
                if running_mean is not None:
                    running_mean.mul_(1 - momentum).add_(
                        mean.to(running_mean.dtype), alpha=momentum)
                if running_var is not None:
                    unbiased = m2 / (total - 1).clamp(min=1)
                    running_var.mul_(1 - momentum).add_(
                        unbiased.to(running_var.dtype), alpha=momentum)
        shape = _channel_shape(input)
        out = (x - mean.view(shape)) * invstd.view(shape)
        if weight is not None:
            out = out * weight.to(acc_dtype).view(shape)
        if bias is not None:
            out = out + bias.to(acc_dtype).view(shape)
        ctx.save_for_backward(input, weight, mean, invstd)
        ctx.total = total
        ctx.group = group
        return out.to(input.dtype)

    @staticmethod
    def backward(ctx: Any, grad_output: torch.Tensor) -> Tuple[Any, ...]:
        input, weight, mean, invstd = ctx.saved_tensors
        acc_dtype = mean.dtype
        shape = _channel_shape(input)
        dims = _reduced_dims(input)
        dy = grad_output.to(acc_dtype)
        xmu = input.to(acc_dtype) - mean.view(shape)
        sum_dy = dy.sum(dims)
        sum_dy_xmu = (dy * xmu).sum(dims)
        grad_weight = grad_bias = None
        if weight is not None and ctx.needs_input_grad[1]:
            grad_weight = (sum_dy_xmu * invstd).to(weight.dtype)
        if ctx.needs_input_grad[2]:
            grad_bias = sum_dy.to(grad_output.dtype)
        # Every rank joins the sum, needed or not, as torch's does: a rank
        # that skipped it would leave the others waiting.
        both = torch.cat([sum_dy, sum_dy_xmu])
        torch.distributed.all_reduce(both, group=ctx.group)
        grad_input = None
        if ctx.needs_input_grad[0]:
            channels = sum_dy.numel()
            mean_dy = (both[:channels] / ctx.total).view(shape)
            mean_dy_xmu = (both[channels:] / ctx.total).view(shape)
            inv = invstd.view(shape)
            grad_input = (dy - mean_dy - xmu * inv.square() * mean_dy_xmu) * inv
            if weight is not None:
                grad_input = grad_input * weight.to(acc_dtype).view(shape)
            grad_input = grad_input.to(input.dtype)
        return (grad_input, grad_weight, grad_bias, None, None, None, None,
                None)


def _forward_builder(original: Any) -> Any:
    @functools.wraps(original)
    def forward(self: Any, input: torch.Tensor) -> torch.Tensor:
        if not _emulated(self, input):
            return original(self, input)
        self._check_input_dim(input)
        self._check_non_zero_input_channels(input)
        factor = 0.0 if self.momentum is None else self.momentum
        if self.track_running_stats:
            if self.num_batches_tracked is None:
                raise AssertionError("num_batches_tracked must not be None")
            self.num_batches_tracked.add_(1)
            if self.momentum is None:   # cumulative moving average
                factor = 1.0 / self.num_batches_tracked.item()
        running_mean = self.running_mean if self.track_running_stats else None
        running_var = self.running_var if self.track_running_stats else None
        group = self.process_group or torch.distributed.group.WORLD
        _patches.record_emulated("torch.nn.SyncBatchNorm")
        return _SyncBatchNorm.apply(input, self.weight, self.bias,
                                    running_mean, running_var, self.eps,
                                    factor, group)
    return forward


def _ddp_check_builder(original: Any) -> Any:
    @functools.wraps(original)
    def _passing_sync_batchnorm_handle(self: Any, module: Any) -> None:
        if (self.device_type == "cpu"
                and _patches.module_on_accelerator(module)):
            return None
        return original(self, module)
    return _passing_sync_batchnorm_handle


def patches() -> List[Any]:
    Patch = _patches.Patch
    # Without the name torch's own list would be unknown: the feature is
    # off (one warning), and torch's SyncBatchNorm is left as it is.
    if _torch_compat.get("privateuse1_backend_name") is None:
        return []
    table: List[Any] = [Patch(torch.nn.SyncBatchNorm, "forward",
                              _forward_builder)]
    if (torch.distributed.is_available()
            and _torch_compat.get("ddp_sync_bn_check") is not None):
        from torch.nn.parallel import DistributedDataParallel
        table.append(Patch(DistributedDataParallel,
                           "_passing_sync_batchnorm_handle",
                           _ddp_check_builder))
    return table
