"""Every private torch name TorchDevice uses, found here and nowhere else.

torch renames and removes private names between releases.  Each one is
listed below with the feature that needs it; ``get(key)`` returns the
object, or None when this torch has no such name.  Then only that feature
is switched off, with one warning that names the feature and the torch
version: ``import TorchDevice`` never fails because of a private name
(docs/reliability.md).

The names are looked up when first asked for, not at import: some live in
modules that are costly to import (``torch._dynamo``) and are only asked
for once those are loaded.
"""
from __future__ import annotations

import importlib
import threading
import warnings
from dataclasses import dataclass
from typing import Any, Dict, Optional, Tuple

import torch


@dataclass(frozen=True)
class Private:
    key: str          # what callers ask for
    module: str       # where it lives
    attr: str         # dotted path inside the module ("" for the module)
    feature: str      # what stops working without it


DEFAULT_DEVICE = "torch's default device (with torch.device(...), " \
                 "torch.set_default_device) deciding for factories"
CONSTRUCTORS = "finding torch's device constructors by identity"
DATALOADER = "DataLoader workers kept on the host"
BATCHES = "DataLoader batches placed where host requests go"
JIT = "TorchScript redirection (torch.jit.script)"
COMPILE = "torch.compile support (polyfills for the redirected calls)"
MPS_RNG = "seeding the MPS generator through torch.cuda"
LAZY = "lazy modules (nn.LazyLinear) with redirected tensor methods"
SDPA = "the device's attention kernels added to a choice of CUDA's " \
       "(sdpa_kernel)"
CAPTURABLE = "optimizers with capturable=True where \"cuda\" lands on " \
             "the host or MPS"
GRAPHS = "CUDA graph capture and replay where \"cuda\" is not CUDA"
OPTIM_CAPTURE = "optimizer steps in an emulated CUDA graph capture " \
                "(CUDA's capturable check; compiled steps made capturable)"
LIBRARIES = "CUDA's preferred linear algebra and BLAS library switches " \
            "where \"cuda\" is not CUDA"
AMP_CAST = "custom_fwd(cast_inputs=...) casting the tensors of a " \
           "redirected device type"
LOAD_PLACE = "moves of tensors loaded with map_location=torch.device(" \
             "\"cuda\") copying as on CUDA"
DTENSOR = "DTensor sharding of the CPU's attention (tensor parallelism " \
          "where \"cuda\" lands on the host)"
LOAD_FLOAT64 = "float64 checkpoints loaded onto a device without float64 " \
               "(made float32)"
DTENSOR_RNG = "DTensor random operators (sharded nn.init, dropout) " \
              "where \"cuda\" lands on the host or MPS"
PARSE_TO = "devices read by torch._C._nn._parse_to (tensordict's .to) " \
           "keeping what the program asked for"
SYNC_BN = "SyncBatchNorm training where \"cuda\" lands on the host or MPS"
RECOMPUTE_RNG = "dropout replayed in checkpointed blocks (torch.utils." \
                "checkpoint) on MPS and other devices without torch.cuda's " \
                "_initialized"
BF16_HOOK = "DistributedDataParallel's bfloat16 compression hook where " \
            "\"nccl\" runs on gloo"
FSDP_SYNC = "FullyShardedDataParallel(sync_module_states=True) where " \
            "\"cuda\" lands on the host"

PRIVATE: Tuple[Private, ...] = (
    Private("checkpoint_device_module", "torch.utils.checkpoint",
            "_get_device_module", RECOMPUTE_RNG),
    Private("ddp_check_comm_hook", "torch.nn.parallel.distributed",
            "DistributedDataParallel._check_comm_hook", BF16_HOOK),
    Private("fsdp_init_utils", "torch.distributed.fsdp._init_utils", "",
            FSDP_SYNC),
    Private("fsdp_states_check", "torch.distributed.fsdp._init_utils",
            "_check_module_states_for_sync_module_states", FSDP_SYNC),
    Private("privateuse1_backend_name", "torch._C",
            "_get_privateuse1_backend_name", SYNC_BN),
    Private("ddp_sync_bn_check", "torch.nn.parallel.distributed",
            "DistributedDataParallel._passing_sync_batchnorm_handle", SYNC_BN),
    Private("nn_bindings", "torch._C._nn", "", PARSE_TO),
    Private("parse_to", "torch._C._nn", "_parse_to", PARSE_TO),
    Private("len_torch_function_stack", "torch._C",
            "_len_torch_function_stack", DEFAULT_DEVICE),
    Private("get_function_stack_at", "torch._C", "_get_function_stack_at",
            DEFAULT_DEVICE),
    Private("DeviceContext", "torch.utils._device", "DeviceContext",
            DEFAULT_DEVICE),
    Private("device_constructors", "torch.utils._device",
            "_device_constructors", CONSTRUCTORS),
    Private("worker_loop_module", "torch.utils.data._utils.worker", "",
            DATALOADER),
    Private("worker_loop", "torch.utils.data._utils.worker", "_worker_loop",
            DATALOADER),
    Private("BaseDataLoaderIter", "torch.utils.data.dataloader",
            "_BaseDataLoaderIter", BATCHES),
    Private("pytree_tree_map", "torch.utils._pytree", "tree_map", BATCHES),
    Private("jit_builtin_table", "torch.jit._builtins", "_get_builtin_table",
            JIT),
    Private("jit_register_builtin", "torch.jit._builtins",
            "_register_builtin", JIT),
    Private("jit_pass_inline", "torch._C", "_jit_pass_inline", JIT),
    Private("DeviceObjType", "torch._C", "DeviceObjType", JIT),
    Private("IntType", "torch._C", "IntType", JIT),
    Private("BoolType", "torch._C", "BoolType", JIT),
    Private("parse_schema", "torch._C", "parse_schema", JIT),
    Private("amp_cast", "torch.amp.autocast_mode", "_cast", AMP_CAST),
    Private("torch_utils", "torch._utils", "", LOAD_FLOAT64),
    Private("rebuild_tensor", "torch._utils", "_rebuild_tensor",
            LOAD_FLOAT64),
    Private("get_restore_location", "torch.serialization",
            "_get_restore_location", LOAD_PLACE),
    Private("default_mps_generator", "torch.mps",
            "_get_default_mps_generator", MPS_RNG),
    Private("lazy_allowed_methods", "torch.nn.parameter",
            "UninitializedTensorMixin._allowed_methods", LAZY),
    Private("dynamo_TensorVariable", "torch._dynamo.variables.tensor",
            "TensorVariable", COMPILE),
    Private("dynamo_VariableTracker", "torch._dynamo.variables.base",
            "VariableTracker", COMPILE),
    Private("dynamo_InstructionTranslator", "torch._dynamo.symbolic_convert",
            "InstructionTranslator", COMPILE),
    Private("dynamo_InstructionTranslatorBase",
            "torch._dynamo.symbolic_convert", "InstructionTranslatorBase",
            COMPILE),
    Private("dynamo_SourcelessBuilder", "torch._dynamo.variables.builder",
            "SourcelessBuilder", COMPILE),
    Private("dynamo_VariableBuilder", "torch._dynamo.variables.builder",
            "VariableBuilder", COMPILE),
    Private("dynamo_GuardBuilder", "torch._dynamo.guards", "GuardBuilder",
            COMPILE),
    Private("dynamo_trace_rules", "torch._dynamo.trace_rules", "", COMPILE),
    Private("dynamo_PolyfilledFunctionVariable",
            "torch._dynamo.variables.functions",
            "PolyfilledFunctionVariable", COMPILE),
    Private("dynamo_TorchInGraphFunctionVariable",
            "torch._dynamo.variables.torch",
            "TorchInGraphFunctionVariable", COMPILE),
    Private("capturable_devices", "torch.optim.optimizer",
            "_get_capturable_supported_devices", CAPTURABLE),
    Private("TorchDispatchMode", "torch.utils._python_dispatch",
            "TorchDispatchMode", GRAPHS),
    Private("optim_capture_check", "torch.optim.optimizer",
            "Optimizer._accelerator_graph_capture_health_check",
            OPTIM_CAPTURE),
    Private("sdpa_kernel_flags", "torch.nn.attention", "_sdpa_kernel", SDPA),
    Private("linalg_backends", "torch.backends.cuda", "_LinalgBackends",
            LIBRARIES),
    Private("blas_backends", "torch.backends.cuda", "_BlasBackends",
            LIBRARIES),
    Private("dtensor_register_op_strategy",
            "torch.distributed.tensor._ops.utils", "register_op_strategy",
            DTENSOR),
    Private("dtensor_expand_to_full_mesh",
            "torch.distributed.tensor._ops.utils",
            "expand_to_full_mesh_op_strategy", DTENSOR),
    Private("dtensor_OpStrategy", "torch.distributed.tensor._op_schema",
            "OpStrategy", DTENSOR),
    Private("dtensor_RuntimeSchemaInfo", "torch.distributed.tensor._op_schema",
            "RuntimeSchemaInfo", DTENSOR),
    Private("dtensor_random", "torch.distributed.tensor._random", "",
            DTENSOR_RNG),
    Private("dtensor_dispatch_mode", "torch.utils._python_dispatch",
            "TorchDispatchMode", DTENSOR_RNG),
)

_BY_KEY: Dict[str, Private] = {p.key: p for p in PRIVATE}
_lock = threading.Lock()
_found: Dict[str, Any] = {}
_warned: set = set()
_MISSING = object()


def _lookup(p: Private) -> Any:
    try:
        obj: Any = importlib.import_module(p.module)
    except Exception:  # noqa: BLE001 - any failure means "not there"
        return _MISSING
    for part in p.attr.split(".") if p.attr else ():
        obj = getattr(obj, part, _MISSING)
        if obj is _MISSING:
            return _MISSING
    return obj


def _warn(p: Private) -> None:
    if p.feature in _warned:
        return
    _warned.add(p.feature)
    where = f"{p.module}.{p.attr}" if p.attr else p.module
    warnings.warn(
        f"TorchDevice: torch {torch.__version__} has no {where}; "
        f"{p.feature} is switched off, everything else works",
        RuntimeWarning, stacklevel=3)


def get(key: str) -> Optional[Any]:
    """The private object named `key` (see PRIVATE), or None when this
    torch lacks it (one warning per feature)."""
    p = _BY_KEY[key]
    with _lock:
        value = _found.get(key, _MISSING)
        if value is _MISSING:
            value = _lookup(p)
            if value is not _MISSING:
                _found[key] = value
    if value is _MISSING:
        _warn(p)
        return None
    return value


def has(*keys: str) -> bool:
    """Whether every one of `keys` is there (warning for those missing)."""
    return all([get(k) is not None for k in keys])


def untyped_storage_of(typed: Any) -> Any:
    """The UntypedStorage a TypedStorage wraps, read as torch's own code
    reads it (its private `_untyped_storage`): the public `untyped()` warns
    that TypedStorage is deprecated, which turns a program's torch.load
    into a warning, or an error where warnings are errors.  Where a torch
    release has no such attribute, the public call with that warning
    silenced."""
    untyped = getattr(typed, "_untyped_storage", None)
    if untyped is not None:
        return untyped
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return typed.untyped()


def forget() -> None:
    """Forgets what was looked up and warned (tests)."""
    with _lock:
        _found.clear()
        _warned.clear()


def op_schema(op: Any) -> Optional[Any]:
    """The FunctionSchema of a torch.ops operator (its private ``_schema``),
    or None where this torch keeps it elsewhere (CUDA graph capture then
    treats the operator as one that writes nothing)."""
    return getattr(op, "_schema", None)
