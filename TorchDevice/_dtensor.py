"""DTensor programs (tensor parallelism, FSDP2) where "cuda" is the host.

torch's DTensor knows how to shard the attention kernels a GPU runs (flash,
memory-efficient, cuDNN), not the one the CPU runs for the same
``F.scaled_dot_product_attention`` call
(``_scaled_dot_product_flash_attention_for_cpu`` and its backward): a
tensor-parallel program written for CUDA stops there with "... does not
have a sharding strategy registered" once its tensors are on the host.

So on every profile but cuda TorchDevice gives DTensor the placements torch
gives CUDA's flash attention, as soon as ``torch.distributed.tensor`` is
imported: all replicated; sharded on the heads (dim 1: each head's
attention is computed from that head alone); sharded on the batch (dim 0).
An attention mask is sharded with q where it has that dimension and
replicated where it broadcasts over it.  The registration is kept after
``disable()``: it turns torch's error into the computation and changes
nothing else (docs/compile-checkpoints-distributed.md).
"""
from __future__ import annotations

import threading
from typing import Any, List, Optional

import torch

from . import _imports, _tdcore, _torch_compat

_DTENSOR = "torch.distributed.tensor"
# aten operator names (looked up on torch.ops.aten; absent in a torch that
# has no CPU flash attention, and then there is nothing to add).
_FORWARD = "_scaled_dot_product_flash_attention_for_cpu"
_BACKWARD = "_scaled_dot_product_flash_attention_for_cpu_backward"
_NAMES = ("dtensor_register_op_strategy", "dtensor_expand_to_full_mesh",
          "dtensor_OpStrategy", "dtensor_RuntimeSchemaInfo")

_lock = threading.Lock()
_registered = False


def _op(name: str) -> Optional[Any]:
    packet = getattr(torch.ops.aten, name, None)
    return getattr(packet, "default", None)


def _mask_placements(op_schema: Any) -> List[List[Any]]:
    """[[replicated], [heads], [batch]] placements of the attention mask, or
    [[], [], []] without one (broadcast to batch x heads x L x S)."""
    from torch.distributed.tensor import Replicate, Shard
    if not hasattr(type(op_schema), "kwargs_strategy"):
        # torch 2.9 and earlier: a strategy covers the positional
        # arguments only (the mask is keyword-only), and the mask keeps
        # the placement the program gave it.
        return [[], [], []]
    mask = op_schema.kwargs_schema.get("attn_mask")
    if not isinstance(mask, _torch_compat.get("dtensor_OpStrategy")):
        return [[], [], []]
    shape = tuple(mask.shape)
    ndim = len(shape)
    heads = (Shard(ndim - 3) if ndim >= 3 and shape[ndim - 3] > 1
             else Replicate())
    batch = Shard(0) if ndim == 4 and shape[0] > 1 else Replicate()
    return [[Replicate()], [heads], [batch]]


def _strategies(op_schema: Any, tensors: int) -> List[List[Any]]:
    """One placement list per way to run the op on one mesh dimension:
    outputs and tensor arguments in order, then the mask."""
    from torch.distributed.tensor import Replicate, Shard
    ways = [Replicate(), Shard(1), Shard(0)]
    masks = _mask_placements(op_schema)
    return [[way] * tensors + mask for way, mask in zip(ways, masks)]


def _forward_strategy(op_schema: Any) -> Any:
    expand = _torch_compat.get("dtensor_expand_to_full_mesh")
    mesh = op_schema.get_mesh_from_args()
    # (output, logsumexp) from (query, key, value)
    return expand(mesh, op_schema, _strategies(op_schema, 5), input_index=2)


def _backward_strategy(op_schema: Any) -> Any:
    expand = _torch_compat.get("dtensor_expand_to_full_mesh")
    mesh = op_schema.get_mesh_from_args(validate=False)
    # (grad_query, grad_key, grad_value) from (grad_out, query, key, value,
    # out, logsumexp)
    return expand(mesh, op_schema, _strategies(op_schema, 9), input_index=3)


def register() -> bool:
    """Registers the placements (once); whether they are registered."""
    global _registered
    if not _torch_compat.has(*_NAMES):
        return False
    forward, backward = _op(_FORWARD), _op(_BACKWARD)
    if forward is None or backward is None:
        return False
    with _lock:
        if _registered:
            return True
        register_op_strategy = _torch_compat.get(
            "dtensor_register_op_strategy")
        schema_info = _torch_compat.get("dtensor_RuntimeSchemaInfo")
        # dropout_p and is_causal (from position 3) and the scale decide
        # the result as much as the placements do.
        register_op_strategy(forward, schema_info=schema_info(
            3, static_kwargkey=["scale"]))(_forward_strategy)
        register_op_strategy(backward, schema_info=schema_info(
            6, static_kwargkey=["scale"]))(_backward_strategy)
        _registered = True
    return True


_FAILED = ("could not teach DTensor to shard the CPU's attention; "
           "tensor-parallel attention on the host stops where torch's does")


def on_apply() -> None:
    """Called at the end of _patches.apply()."""
    if _tdcore.settings()["profile"] != "cuda":
        _imports.after(_DTENSOR, register, _FAILED)


def on_restore() -> None:
    """Called by _patches.restore(): an import still to come no longer
    registers; what is registered stays (see the module's docstring)."""
    _imports.cancel(_DTENSOR, register)
