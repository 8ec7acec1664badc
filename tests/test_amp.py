"""Autocast keeps the program's dtype, runs fast where it runs, and compiles
(docs/policy.md, "Mixed precision"; docs/masquerade.md, "AMP")."""
from __future__ import annotations

import inspect
import logging
import math
import pickle
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch.amp import autocast_mode, grad_scaler

import TorchDevice
from TorchDevice import _amp, _capabilities
from conftest import HAS_CUDA, HAS_MPS, TARGET, host, run_python

# CUDA autocast redirected: to the CPU (profile cpu) or to the accelerator
# (profile accelerator, e.g. the simulated one with MPS's record).
cpu_only = pytest.mark.skipif(HAS_CUDA or HAS_MPS,
                              reason="CUDA autocast redirected: profiles cpu "
                                     "and accelerator only")

# What CUDA's float16 autocast becomes on the device "cuda" lands on: the
# capability record in force says (docs/policy.md, "Mixed precision").
FLOAT16_BECOMES = _amp.float16_choice(TARGET.type, False,
                                      _amp.cpu_has_bfloat16(),
                                      record=_capabilities.current())


# ---- a nanoGPT-style model and training step --------------------------------


class Block(torch.nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.ln1 = torch.nn.LayerNorm(width)
        self.qkv = torch.nn.Linear(width, 3 * width)
        self.proj = torch.nn.Linear(width, width)
        self.ln2 = torch.nn.LayerNorm(width)
        self.fc = torch.nn.Linear(width, 4 * width)
        self.out = torch.nn.Linear(4 * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(c, dim=2)
        q, k, v = (z.view(b, t, self.heads, c // self.heads).transpose(1, 2)
                   for z in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.proj(y.transpose(1, 2).contiguous().view(b, t, c))
        return x + self.out(F.gelu(self.fc(self.ln2(x))))


class TinyGPT(torch.nn.Module):
    def __init__(self, vocab: int = 64, width: int = 32, heads: int = 4,
                 layers: int = 2, block: int = 16) -> None:
        super().__init__()
        self.wte = torch.nn.Embedding(vocab, width)
        self.wpe = torch.nn.Embedding(block, width)
        self.blocks = torch.nn.ModuleList(Block(width, heads)
                                          for _ in range(layers))
        self.ln = torch.nn.LayerNorm(width)
        self.head = torch.nn.Linear(width, vocab, bias=False)
        self.wte.weight = self.head.weight          # weight tying

    def forward(self, idx: torch.Tensor, targets: torch.Tensor
                ) -> torch.Tensor:
        pos = torch.arange(0, idx.shape[1], dtype=torch.long,
                           device=idx.device)
        x = self.wte(idx) + self.wpe(pos)
        for blk in self.blocks:
            x = blk(x)
        logits = self.head(self.ln(x))
        return F.cross_entropy(logits.reshape(-1, logits.size(-1)),
                               targets.reshape(-1))


def train_gpt(device: str, dtype: torch.dtype, steps: int = 6):
    """nanoGPT's train.py loop in small: its context manager, GradScaler,
    clipping and AdamW, on `device` (the CPU run uses no autocast, as
    nanoGPT does for device "cpu")."""
    torch.manual_seed(1337)
    model = TinyGPT().to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    device_type = "cuda" if "cuda" in device else "cpu"
    ctx = (torch.amp.autocast(device_type=device_type, dtype=dtype)
           if device_type != "cpu" else _null())
    scaler = torch.amp.GradScaler(device_type,
                                  enabled=(dtype == torch.float16))
    # Sequences that count up, modulo 8, from a random start: learnable in
    # a few steps.
    start = torch.randint(0, 8, (steps, 4, 1),
                          generator=torch.Generator().manual_seed(7))
    data = (start + torch.arange(17)) % 8
    losses = []
    for step in range(steps):
        x = data[step, :, :16].to(device)
        y = data[step, :, 1:].to(device)
        with ctx:
            loss = model(x, y)
        scaler.scale(loss).backward()
        scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses, {k: v.detach().cpu().clone()
                    for k, v in model.state_dict().items()}


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@cpu_only
def test_float32_autocast_trains_bit_for_bit_like_native_cpu():
    """nanoGPT --dtype=float32: autocast("cuda", float32) computes in
    float32, so the numbers are those of a native float32 run without
    autocast on the device really used, bit for bit.  On an accelerator
    torch's optimizer and clipping take their multi-tensor (foreach) paths,
    which round differently from the CPU's loops: there the losses also
    equal a native CPU run's within 1e-5.  (Not the weights: the key bias
    of attention has no true gradient, and AdamW turns its rounding noise
    into steps of the learning rate.)"""
    TorchDevice.disable()
    try:
        want_losses, want_state = train_gpt(str(TARGET), torch.float32)
        cpu_losses, _ = train_gpt("cpu", torch.float32)
    finally:
        TorchDevice.enable()
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)   # no "Disabling"
        got_losses, got_state = train_gpt("cuda", torch.float32)
    assert got_losses == want_losses
    for name, value in want_state.items():
        assert torch.equal(host(got_state[name]), host(value)), name
    assert got_losses == pytest.approx(cpu_losses, rel=0, abs=1e-5)


@cpu_only
def test_explicit_float32_stays_float32_and_enabled():
    a = torch.randn(4, 4, device="cuda")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        with torch.autocast("cuda", dtype=torch.float32):
            assert (a @ a).dtype == torch.float32
            assert torch.is_autocast_enabled("cuda")
            assert torch.get_autocast_dtype("cuda") == torch.float32
    assert not torch.is_autocast_enabled("cuda")


@cpu_only
def test_explicit_bfloat16_is_kept():
    a = torch.randn(4, 4, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        assert (a @ a).dtype == torch.bfloat16
        assert torch.get_autocast_dtype("cuda") == torch.bfloat16


@cpu_only
@pytest.mark.parametrize("dtype", [None, torch.float16])
def test_float16_becomes_what_the_cpu_computes_well(dtype, restore_config):
    TorchDevice.configure(report=True)
    TorchDevice.clear_report()
    a = torch.randn(4, 4, device="cuda")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        with torch.autocast("cuda", dtype=dtype):
            assert (a @ a).dtype == FLOAT16_BECOMES
            assert torch.get_autocast_dtype("cuda") == FLOAT16_BECOMES
            assert torch.is_autocast_enabled()
    rows = [r for r in TorchDevice.report()
            if r["api"] == "torch.autocast" and r["what"] == "dtype"]
    if FLOAT16_BECOMES is torch.float16:
        assert rows == []
    else:
        assert [(r["from"], r["to"]) for r in rows] == [
            ("torch.float16", str(FLOAT16_BECOMES))]
        assert rows[0]["file"] == __file__
    TorchDevice.configure(report=False)


@cpu_only
def test_the_dtype_answered_for_cuda_is_a_dtype_row(restore_config):
    """`torch.autocast("cuda", dtype=torch.get_autocast_gpu_dtype())`
    (mmengine's AMP) asks for the dtype the getter answered, so the
    region's row showed no change; the change is the getter's answer, at
    the program's line (it was not in the report)."""
    TorchDevice.configure(report=True)
    TorchDevice.clear_report()
    a = torch.randn(4, 4, device="cuda")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        with torch.autocast("cuda", dtype=torch.get_autocast_gpu_dtype()):
            assert (a @ a).dtype == FLOAT16_BECOMES
            assert torch.get_autocast_gpu_dtype() is FLOAT16_BECOMES
    assert torch.get_autocast_dtype("cuda") is FLOAT16_BECOMES
    rows = sorted((r["api"], r["from"], r["to"], r["file"])
                  for r in TorchDevice.report() if r["what"] == "dtype")
    TorchDevice.configure(report=False)
    if FLOAT16_BECOMES is torch.float16:
        assert rows == []
    else:
        assert rows == [
            (api, "torch.float16", str(FLOAT16_BECOMES), __file__)
            for api in ("torch.get_autocast_dtype",
                        "torch.get_autocast_gpu_dtype")]


def _assert_keep_float16_switches() -> None:
    """keep_float16 on: CUDA's float16 autocast stays float16; off again:
    float16 becomes what the CPU computes well."""
    TorchDevice.configure(keep_float16=True)
    try:
        a = torch.randn(4, 4, device="cuda")
        with torch.autocast("cuda"):
            assert (a @ a).dtype == torch.float16
    finally:
        TorchDevice.configure(keep_float16=False)
    with torch.autocast("cuda"):
        assert (a @ a).dtype == FLOAT16_BECOMES
        assert torch.get_autocast_dtype("cuda") == FLOAT16_BECOMES


@cpu_only
def test_compile_keeps_the_programs_autocast_dtype():
    """torch.compile saves and sets back the autocast dtype around every
    graph, through get/set_autocast_dtype; that round trip stored the
    translated dtype as the program's own, so CUDA's float16 default stayed
    bfloat16 for good (keep_float16 ignored, the rewrite no longer
    reported)."""
    torch.compile(lambda x: x + 1, backend="eager")(torch.ones(2))
    _assert_keep_float16_switches()


@cpu_only
def test_keep_float16_switch(restore_config):
    _assert_keep_float16_switches()


def test_keep_float16_from_the_environment():
    proc = run_python("""
        import torch, TorchDevice
        with torch.autocast("cuda"):
            print((torch.ones(2, 2, device="cuda")
                   @ torch.ones(2, 2, device="cuda")).dtype)
    """, env={"TORCHDEVICE_KEEP_FLOAT16": "1"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "torch.float16"


def test_float16_choice_table():
    assert _amp.cpu_has_bfloat16("fpu avx512_bf16 sse") is True
    assert _amp.cpu_has_bfloat16("fpu amx_bf16") is True
    assert _amp.cpu_has_bfloat16("fp asimd bf16") is True
    assert _amp.cpu_has_bfloat16("fpu avx2 f16c") is False
    assert _amp.float16_choice("cpu", False, True) is torch.bfloat16
    assert _amp.float16_choice("cpu", False, False) is torch.float32
    assert _amp.float16_choice("cpu", True, True) is torch.float16
    assert _amp.float16_choice("mps", False, True) is torch.float16
    assert _amp.float16_choice("cuda", False, False) is torch.float16
    table = _amp.dtype_table("mps", False, True, bf16_ok=False)
    assert table[torch.bfloat16] is torch.float32
    assert table[torch.float64] is torch.float32


@cpu_only
def test_set_autocast_dtype_for_cuda_is_what_autocast_then_uses():
    a = torch.randn(2, 2, device="cuda")
    torch.set_autocast_dtype("cuda", torch.float32)
    try:
        assert torch.get_autocast_dtype("cuda") == torch.float32
        with torch.autocast("cuda"):
            assert (a @ a).dtype == torch.float32
    finally:
        torch.set_autocast_dtype("cuda", torch.float16)
    assert torch.get_autocast_dtype("cuda") == FLOAT16_BECOMES


@cpu_only
def test_hard_coded_mps_autocast_is_redirected_too():
    a = torch.randn(2, 2, device="cuda")
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        with torch.autocast("mps"):
            assert (a @ a).dtype == FLOAT16_BECOMES


@cpu_only
def test_grad_scaler_is_enabled_as_on_cuda_and_trains():
    for scaler in (torch.amp.GradScaler(), torch.amp.GradScaler("cuda"),
                   torch.cuda.amp.GradScaler()):
        assert scaler.is_enabled()
        assert scaler._device == TARGET.type
    losses, _ = train_gpt("cuda", torch.float16, steps=30)
    assert all(math.isfinite(v) for v in losses)
    assert max(losses[-3:]) < losses[0] * 0.8


@cpu_only
def test_custom_fwd_follows_the_redirected_autocast():
    @torch.amp.custom_fwd(device_type="cuda", cast_inputs=torch.float32)
    def f(x):
        return x @ x

    a = torch.randn(2, 2, device="cuda")
    with torch.autocast("cuda"):
        assert f(a).dtype == torch.float32


@cpu_only
def test_custom_fwd_casts_its_inputs_as_on_cuda():
    # On CUDA, custom_fwd(cast_inputs=torch.float16) inside an autocast
    # region casts the op's "cuda" inputs and runs it with autocast off.
    # torch's cast picks tensors by device type; here they are on the
    # device "cuda" landed on, and float16 becomes autocast's dtype there.
    seen = {}

    class Product(torch.autograd.Function):
        @staticmethod
        @torch.cuda.amp.custom_fwd(cast_inputs=torch.float16)
        def forward(ctx, a, b):
            seen["dtypes"] = (a.dtype, b.dtype)
            seen["autocast"] = torch.is_autocast_enabled()
            ctx.save_for_backward(a, b)
            return a @ b

        @staticmethod
        @torch.cuda.amp.custom_bwd
        def backward(ctx, grad):
            a, b = ctx.saved_tensors
            return grad @ b.t(), a.t() @ grad

    a = torch.randn(3, 3, device="cuda", requires_grad=True)
    b = torch.randn(3, 3, device="cuda")
    with torch.autocast("cuda"):
        out = Product.apply(a, b)
    assert seen == {"dtypes": (FLOAT16_BECOMES,) * 2, "autocast": False}
    assert out.dtype == FLOAT16_BECOMES
    out.float().sum().backward()
    assert a.grad.dtype == torch.float32 and a.grad.shape == (3, 3)
    # Outside a region nothing is cast, as on CUDA.
    seen.clear()
    assert Product.apply(a, b).dtype == torch.float32
    assert seen["dtypes"] == (torch.float32,) * 2
    # torch.cuda.amp's own _cast (transformers' Nemotron layer norm).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        cast = torch.cuda.amp.autocast_mode._cast((a, 2, "x"), torch.float16)
    assert cast[0].dtype == FLOAT16_BECOMES and cast[1:] == (2, "x")


@cpu_only
def test_cudas_older_autocast_names_follow_the_redirected_autocast():
    # torch.get_autocast_gpu_dtype() (many transformers models read it),
    # set_autocast_gpu_dtype(dtype) and set_autocast_enabled(enabled) name
    # CUDA's autocast; they answer and act as get_autocast_dtype("cuda") and
    # friends do, and warn as torch does, at the caller's line.
    a = torch.randn(2, 2, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert torch.get_autocast_gpu_dtype() is torch.bfloat16
        assert [w.filename for w in caught] == [__file__]
        assert "get_autocast_dtype('cuda')" in str(caught[0].message)
        assert caught[0].category is DeprecationWarning
    assert torch.get_autocast_gpu_dtype() is FLOAT16_BECOMES
    assert not torch.is_autocast_enabled()
    torch.set_autocast_enabled(True)
    try:
        assert torch.is_autocast_enabled() and torch.is_autocast_enabled("cuda")
        assert (a @ a).dtype == FLOAT16_BECOMES
    finally:
        torch.set_autocast_enabled(False)
    assert not torch.is_autocast_enabled()
    assert (a @ a).dtype == torch.float32
    torch.set_autocast_gpu_dtype(torch.float32)
    try:
        assert torch.get_autocast_dtype("cuda") is torch.float32
        with torch.autocast("cuda"):
            assert (a @ a).dtype == torch.float32
            assert torch.get_autocast_gpu_dtype() is torch.float32
    finally:
        torch.set_autocast_gpu_dtype(torch.float16)
    assert torch.get_autocast_dtype("cuda") is FLOAT16_BECOMES


def test_autocast_switched_on_without_a_region_computes_as_cuda_would():
    # set_autocast_enabled("cuda", True) with no region: CUDA computes in
    # its default dtype, which becomes FLOAT16_BECOMES; the real type's own
    # default (the CPU's bfloat16) was used, and only where a test before
    # had set that type's dtype did this pass.  Switched off, the real
    # type's dtype is what it was.
    real = TARGET.type
    before = torch.get_autocast_dtype(real)
    a = torch.randn(2, 2, device="cuda")
    torch.set_autocast_enabled("cuda", True)
    try:
        assert (a @ a).dtype == FLOAT16_BECOMES
        assert torch.get_autocast_dtype("cuda") is FLOAT16_BECOMES
    finally:
        torch.set_autocast_enabled("cuda", False)
    assert (a @ a).dtype == torch.float32
    assert torch.get_autocast_dtype(real) is before


def test_a_torch_without_cudas_older_names_still_enables(monkeypatch):
    # get_autocast_gpu_dtype and set_autocast_gpu_dtype are deprecated; a
    # torch release that drops them must not stop TorchDevice.
    TorchDevice.disable()
    try:
        for name in _amp.GPU_NAMES:
            monkeypatch.delattr(torch, name)
            # As _capture() finds such a torch (the other replacements stay
            # the objects torch.compile already knows).
            monkeypatch.delitem(_amp._originals, name)
            monkeypatch.delitem(_amp._built, name, raising=False)
        TorchDevice.enable()
        names = {r.__name__ for r in _amp.replacements()}
        assert not names & set(_amp.GPU_NAMES)
        assert "get_autocast_dtype" in names
        with torch.autocast("cuda"):
            assert torch.is_autocast_enabled()
    finally:
        TorchDevice.disable()
        monkeypatch.undo()
        TorchDevice.enable()


@cpu_only
def test_get_autocast_gpu_dtype_compiles_into_one_graph():
    @torch.compile(fullgraph=True, backend="eager")
    def f(x):
        if torch.is_autocast_enabled():
            return x.to(torch.get_autocast_gpu_dtype())
        return x

    a = torch.randn(3, device="cuda")
    assert f(a).dtype == torch.float32
    with torch.autocast("cuda", dtype=torch.bfloat16):
        assert f(a).dtype == torch.bfloat16


# A dtype a region can name that is not what CUDA's float16 becomes here.
OTHER_DTYPE = (torch.float32 if FLOAT16_BECOMES is torch.bfloat16
               else torch.bfloat16)


def test_a_compiled_call_in_a_region_leaves_the_default_dtype_alone():
    # torch.compile saves and restores get_autocast_dtype("cuda") around
    # every graph; inside a region that is the region's dtype, and setting
    # it back made it the default of every later autocast("cuda").
    @torch.compile(fullgraph=True, backend="eager")
    def f(x):
        return x * 2

    a = torch.randn(2, 2, device="cuda")
    with torch.autocast("cuda", dtype=OTHER_DTYPE):
        f(a)
        assert (a @ a).dtype == OTHER_DTYPE
    assert torch.get_autocast_dtype("cuda") is FLOAT16_BECOMES
    with torch.autocast("cuda"):
        assert (a @ a).dtype == FLOAT16_BECOMES


def test_a_dtype_set_inside_a_region_lasts_until_it_exits():
    # As on CUDA: the region's __exit__ sets back the dtype it found.
    a = torch.randn(2, 2, device="cuda")
    with torch.autocast("cuda"):
        torch.set_autocast_dtype("cuda", OTHER_DTYPE)
        assert torch.get_autocast_dtype("cuda") is OTHER_DTYPE
        assert (a @ a).dtype == OTHER_DTYPE
    assert torch.get_autocast_dtype("cuda") is FLOAT16_BECOMES
    with torch.autocast("cuda"):
        assert (a @ a).dtype == FLOAT16_BECOMES


# ---- what the replacements look like -------------------------------------

NAMES = [
    ("autocast.__init__", lambda: autocast_mode.autocast.__init__),
    ("GradScaler.__init__", lambda: grad_scaler.GradScaler.__init__),
    ("is_autocast_enabled", lambda: torch.is_autocast_enabled),
    ("get_autocast_dtype", lambda: torch.get_autocast_dtype),
    ("set_autocast_dtype", lambda: torch.set_autocast_dtype),
    ("set_autocast_enabled", lambda: torch.set_autocast_enabled),
    ("get_autocast_gpu_dtype", lambda: torch.get_autocast_gpu_dtype),
    ("set_autocast_gpu_dtype", lambda: torch.set_autocast_gpu_dtype),
    ("_cast", lambda: autocast_mode._cast),
]


def _signature(fn):
    try:
        return str(inspect.signature(fn))
    except ValueError as exc:       # torch's builtins have none
        return type(exc)


@cpu_only
@pytest.mark.parametrize("name,get", NAMES, ids=[n for n, _ in NAMES])
def test_replacement_looks_like_torch_s_and_pickles_to_itself(name, get):
    replacement = get()
    TorchDevice.disable()
    try:
        original = get()
    finally:
        TorchDevice.enable()
    assert replacement is not original
    for attr in ("__name__", "__qualname__", "__module__", "__doc__"):
        assert getattr(replacement, attr) == getattr(original, attr), attr
    assert _signature(replacement) == _signature(original)
    assert pickle.loads(pickle.dumps(replacement)) is replacement


def test_autocast_class_signature_is_torch_s():
    ours = str(inspect.signature(torch.autocast))
    TorchDevice.disable()
    try:
        torchs = str(inspect.signature(torch.autocast))
    finally:
        TorchDevice.enable()
    assert ours == torchs
    assert ours.startswith("(device_type: str, dtype: ")


# ---- torch.compile --------------------------------------------------------

COMPILE_CASES = """
import torch{dynamo_first}
import TorchDevice
for fullgraph in (False, True):
    torch._dynamo.reset() if hasattr(torch, "_dynamo") else None
    f = torch.compile(lambda x: x + 1 if torch.is_autocast_enabled("cpu")
                      else x - 1, fullgraph=fullgraph, backend="eager")
    assert f(torch.ones(2)).tolist() == [0.0, 0.0]
    def g(x):
        with torch.autocast("cuda", dtype=torch.bfloat16):
            y = x @ x
            if torch.is_autocast_enabled("cuda") and \\
                    torch.get_autocast_dtype("cuda") == torch.bfloat16:
                y = y + 1
            return y
    out = torch.compile(g, backend="eager", fullgraph=fullgraph)(
        torch.ones(2, 2, device="cuda"))
    assert out.dtype == torch.bfloat16 and out.tolist() == [[3, 3], [3, 3]]
    def h(x):
        with torch.autocast("cuda", enabled=False):
            return torch.is_autocast_enabled(), x * 2
    assert torch.compile(h, backend="eager", fullgraph=fullgraph)(
        torch.ones(1))[0] is False
print("ok")
"""


@cpu_only
@pytest.mark.parametrize("dynamo_first", [False, True],
                         ids=["torchdevice-first", "dynamo-first"])
def test_autocast_inside_compiled_code(dynamo_first):
    code = COMPILE_CASES.format(
        dynamo_first="\nimport torch._dynamo" if dynamo_first else "")
    proc = run_python(code, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == "ok"


@cpu_only
def test_float16_change_is_logged(restore_config, caplog):
    TorchDevice.configure(log_level="INFO")
    with caplog.at_level(logging.INFO, logger="TorchDevice"):
        for _ in range(3):   # a region entered at every step: one line
            with torch.autocast("cuda"):
                pass
    # Logged where it changes, naming the site; where the device keeps
    # float16 (a CPU without bfloat16 arithmetic keeps float32 instead)
    # nothing is said.
    changed = [r for r in caplog.records if "torch.float16" in r.getMessage()]
    if FLOAT16_BECOMES is torch.float16:
        assert changed == []
    else:
        assert len(changed) == 1, [r.getMessage() for r in changed]
        assert changed[0].pathname == __file__
        assert (f"dtype (torch.float16 -> {FLOAT16_BECOMES})"
                in changed[0].getMessage())


def test_a_disabled_autocast_reports_no_dtype_change(restore_config, caplog):
    """`autocast("cuda", enabled=False)` (float32 training with the AMP
    code path kept) changes no dtype, so the report names none."""
    TorchDevice.configure(log_level="INFO")
    with caplog.at_level(logging.INFO, logger="TorchDevice"):
        with torch.autocast("cuda", enabled=False):
            pass
    assert [r.getMessage() for r in caplog.records
            if "torch.float16" in r.getMessage()] == []


@cpu_only
def test_a_captured_replacement_is_torch_s_own_after_disable():
    captured = torch.is_autocast_enabled
    TorchDevice.disable()
    try:
        torch.set_autocast_enabled("cpu", True)
        try:
            assert captured("cpu") is True
            assert captured("cuda") is False    # CUDA's own state again
        finally:
            torch.set_autocast_enabled("cpu", False)
    finally:
        TorchDevice.enable()
    with torch.autocast("cuda"):
        assert captured("cuda") is True
