"""Moves copy, as on CUDA (docs/policy.md, "Moves copy").

On a machine where "cuda" and "cpu" land on the same device, a move the
program makes between host and accelerator still returns a new tensor, and
a move that is a no-op on CUDA still returns the tensor itself."""
from __future__ import annotations

import pytest
import torch

import TorchDevice
from TorchDevice import _tdcore
from conftest import HAS_CUDA, HAS_MPS, run_python

pytestmark = pytest.mark.skipif(
    HAS_CUDA or HAS_MPS,
    reason="profiles cpu and accelerator; the mps profile is simulated "
    "below")


def _same_storage(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


TO_CUDA = [
    ("cuda()", lambda t: t.cuda()),
    ("cuda(0)", lambda t: t.cuda(0)),
    ("cuda(non_blocking)", lambda t: t.cuda(non_blocking=True)),
    ("to('cuda')", lambda t: t.to("cuda")),
    ("to('cuda:0')", lambda t: t.to("cuda:0")),
    ("to(0)", lambda t: t.to(0)),
    ("to(device='cuda')", lambda t: t.to(device="cuda")),
    ("to(torch.device('cuda'))", lambda t: t.to(torch.device("cuda"))),
    ("to(torch.device('cuda', 0))", lambda t: t.to(torch.device("cuda", 0))),
    ("to('cuda', non_blocking)", lambda t: t.to("cuda", non_blocking=True)),
    ("mps()", lambda t: t.mps()),
    ("to('mps')", lambda t: t.to("mps")),
]

TO_HOST = [
    ("cpu()", lambda t: t.cpu()),
    ("to('cpu')", lambda t: t.to("cpu")),
    ("to(torch.device('cpu'))", lambda t: t.to(torch.device("cpu"))),
    ("to(device='cpu')", lambda t: t.to(device="cpu")),
]


@pytest.mark.parametrize("name,move", TO_CUDA, ids=[n for n, _ in TO_CUDA])
def test_host_tensor_moved_to_the_accelerator_is_a_copy(name, move):
    x = torch.zeros(3)
    y = move(x)
    y.add_(1)
    assert x.tolist() == [0.0, 0.0, 0.0], name
    assert not _same_storage(x, y)
    assert _tdcore.on_accelerator(y)
    # ...and moving it there again is CUDA's no-op.
    assert move(y) is y


@pytest.mark.parametrize("name,move", TO_CUDA, ids=[n for n, _ in TO_CUDA])
def test_accelerator_tensor_moved_there_again_is_itself(name, move):
    w = torch.ones(2, device="cuda")
    assert move(w) is w, name
    p = torch.nn.Linear(2, 2).cuda().weight
    assert move(p) is p


@pytest.mark.parametrize("name,move", TO_HOST, ids=[n for n, _ in TO_HOST])
def test_accelerator_tensor_moved_to_host_is_a_copy(name, move):
    z = torch.ones(3, device="cuda")
    h = move(z)
    h[0] = 7
    assert z.tolist() == [1.0, 1.0, 1.0], name
    assert not _tdcore.on_accelerator(h)


@pytest.mark.parametrize("name,move", TO_HOST, ids=[n for n, _ in TO_HOST])
def test_a_host_request_copies_unless_a_host_request_made_it(name, move):
    """Results of operations carry no mark, so a host request cannot tell
    one made on the accelerator from one made on the host: it copies, as
    CUDA does for the former (docs/policy.md, "Moves copy").  A host
    tensor's copy is one CUDA does not make; only writing through an alias
    could tell."""
    x = torch.arange(3.0)
    y = move(x)
    assert y is not x and torch.equal(y, x), name
    y[0] = 7
    assert x[0] == 0
    # What a host request made is on the host: CUDA's no-op again.
    assert move(y) is y
    assert y.cuda() is not y


def test_results_moved_to_host_each_step_are_copied_once():
    """torchmetrics' `compute_on_cpu` re-moves its growing list of states
    after every update: on CUDA only the newest is copied."""
    x = torch.ones(4, device="cuda")
    states = []
    for step in range(5):
        states.append(x * step)
        moved = [v.to("cpu") for v in states]
        assert all(a is b for a, b in zip(moved[:-1], states[:-1]))
        assert moved[-1] is not states[-1]
        states = moved


def test_results_of_operations_moved_to_host_are_snapshots():
    """A forward hook's `.cpu()` snapshot followed by an in-place ReLU, and
    an optimizer state snapshot followed by a step: on CUDA the snapshot
    keeps its values."""
    lin = torch.nn.Linear(4, 4).cuda()
    x = torch.randn(8, 4, device="cuda")
    with torch.no_grad():
        h = lin(x)
    snap = h.cpu().numpy()
    negative = (snap < 0).any()
    torch.relu_(h)
    assert negative and (snap < 0).any()

    p = torch.nn.Parameter(torch.randn(3, device="cuda"))
    opt = torch.optim.Adam([p])
    p.grad = torch.ones(3, device="cuda")
    opt.step()
    s = opt.state[p]["exp_avg"].cpu()
    before = s.clone()
    opt.step()
    assert torch.equal(s, before)
    assert not torch.equal(opt.state[p]["exp_avg"].cpu(), before)


def test_numpy_of_a_copy_does_not_write_back():
    z = torch.ones(3, device="cuda")
    arr = z.cpu().numpy()
    arr[0] = 7
    assert z.tolist() == [1.0, 1.0, 1.0]
    # numpy() of a host tensor shares its memory, as in torch; a tensor
    # made without a device is on the accelerator on profile accelerator
    # (default mode), and numpy() is of a host copy, as for "cuda" above.
    x = torch.zeros(2)
    x.numpy()[0] = 5
    assert x[0] == (5 if x.device.type == "cpu" else 0)


def test_a_device_read_from_a_tensor_means_that_tensor_s_place():
    a = torch.ones(2, device="cuda")
    b = torch.zeros(2, device="cuda")
    assert a.to(b.device) is a
    h = torch.zeros(2)
    assert h.to(a.device) is h      # cpu == cpu here: torch's own answer
    assert _tdcore.device_intent(a.device) == "none"
    assert _tdcore.device_intent(torch.device("cuda")) == "accelerator"
    assert _tdcore.device_intent(torch.device("cpu")) == "host"
    assert _tdcore.device_intent(torch.device(torch.device("cuda"))) \
        == "accelerator"
    assert _tdcore.device_intent("mps:0") == "accelerator"
    # A cuda device built where TorchDevice was not enabled yet is still a
    # request for the accelerator: no tensor here is on "cuda".
    TorchDevice.disable()
    try:
        native = torch.device("cuda", 0)
    finally:
        TorchDevice.enable()
    assert native.type == "cuda"
    assert _tdcore.device_intent(native) == "accelerator"
    h = torch.zeros(2)
    assert h.to(native) is not h and h.to(native).to(native) is not h


def test_a_device_through_pickle_or_str_moves_as_the_original():
    """docs/policy.md, "Moves copy": pickling hands back the object the
    program built, and torch.device(str(d)) asks again for what d asked
    for.  A device from before the last disable()/enable() is the device
    it really is, and torch moves to it as it would."""
    import pickle
    host, acc = torch.zeros(2), torch.ones(2, device="cuda")
    for asked in ("cuda", "cpu"):
        d = torch.device(asked)
        if str(d) != asked:
            continue    # "cpu" in mode accelerate reads as the accelerator
        for again in (pickle.loads(pickle.dumps(d)), torch.device(str(d))):
            assert _tdcore.device_intent(again) == _tdcore.device_intent(d)
            assert (host.to(again) is host) == (host.to(d) is host)
            assert (acc.to(again) is acc) == (acc.to(d) is acc), asked
    assert acc.to(torch.device("cuda")) is acc
    assert acc.to(torch.device("cpu")) is not acc
    stale = torch.device("cuda")
    TorchDevice.disable()
    TorchDevice.enable()
    acc = torch.ones(2, device="cuda")
    assert stale.type == TorchDevice.policy()["device"]
    # torch's own moves: none forced (on the CPU an alias where CUDA would
    # copy the host tensor).
    assert acc.to(stale) is acc
    assert (host.to(stale) is host) == (host.device == stale)


def test_a_wrapper_subclass_is_where_its_inner_tensors_are():
    """A wrapper subclass (torch's __tensor_flatten__ protocol; PyG's
    EdgeIndex and HashTensor are such) keeps its data in inner tensors and
    its own storage is a placeholder: one made of "cuda" tensors was taken
    for host data, and its .to("cuda") copied where CUDA returns it."""
    two_tensor = pytest.importorskip("torch.testing._internal.two_tensor")
    TwoTensor = two_tensor.TwoTensor
    on_cuda = TwoTensor(torch.ones(2, device="cuda"),
                        torch.ones(2, device="cuda"))
    assert on_cuda.to("cuda") is on_cuda
    assert on_cuda.cuda() is on_cuda
    moved = on_cuda.cpu()
    assert moved is not on_cuda
    moved.a.add_(1)
    assert on_cuda.a.tolist() == [1.0, 1.0]
    host = TwoTensor(torch.ones(2), torch.ones(2))
    copy = host.cuda()
    assert copy is not host
    copy.a.add_(1)
    assert host.a.tolist() == [1.0, 1.0]


def test_moving_to_another_tensor_goes_where_the_program_sees_it():
    """x.to(other) moves x to other's device: on CUDA a copy between host
    and GPU.  Where other's place is known (made on "cuda", or by a host
    request's move), the move copies as that request would; where it is
    not (results of operations), torch's answer stands."""
    y = torch.ones(2, device="cuda")
    x = torch.zeros(2)
    for z in (x.to(y), x.to(tensor=y), x.to(y, non_blocking=True)):
        z.add_(1)
        assert x.tolist() == [0.0, 0.0]
        assert _tdcore.on_accelerator(z) and z.to(y) is z
    h = y.cpu()
    back = y.to(h)
    back.add_(1)
    assert y.tolist() == [1.0, 1.0] and back.to(h) is back
    assert x.to(y.half()).dtype == torch.float16
    result = y * 2                  # place not known
    assert y.to(result) is y and x.to(result) is x
    m = torch.nn.Linear(2, 2)
    before = m.weight.detach().clone()
    old = m.weight.data
    m.to(y)
    assert not _same_storage(old, m.weight) and _tdcore.on_accelerator(m.weight)
    with torch.no_grad():
        m.weight.add_(1)
    assert torch.equal(old, before)


def test_results_computed_from_parameters_are_where_the_parameters_are():
    """A result of operations carries no mark, but autograd records the
    parameters it came from.  One computed from a module moved to "cuda"
    is on the accelerator: moving it there again is CUDA's no-op, so the
    autograd graph is CUDA's too (keras converts every operand with
    `as_tensor(x, device="cuda")`; a copy there added a node per operand
    and summed gradients in another order, training to other numbers)."""
    lin = torch.nn.Linear(4, 4).cuda()
    x = torch.randn(8, 4, device="cuda")
    h = torch.relu(lin(x)) * 2
    for move in (lambda t: t.cuda(), lambda t: t.to("cuda"),
                 lambda t: t.to(torch.device("cuda")),
                 lambda t: torch.as_tensor(t, device="cuda"),
                 lambda t: t.to(lin.weight)):
        assert move(h) is h
    assert h.to("cuda").grad_fn is h.grad_fn
    snap = h.cpu()
    assert not _same_storage(snap, h) and snap.grad_fn is not h.grad_fn
    z = torch.zeros(2).to(h)
    assert _tdcore.on_accelerator(z) and z.to(h) is z

    # From a module that stayed on the host: a host tensor, copied there.
    host = torch.nn.Linear(4, 4)
    r = host(torch.randn(2, 4))
    c = r.cuda()
    assert c is not r and _tdcore.on_accelerator(c)
    c.detach().add_(1)
    assert not torch.equal(c, r)

    # From a module a host request moved back: moving it there again is
    # CUDA's no-op.
    back = lin.cpu()
    out = back(torch.randn(2, 4))
    assert out.cpu() is out and out.to("cpu") is out

    # Without history (no_grad, no parameter) nothing is known: as before.
    with torch.no_grad():
        g = lin.cuda()(x)
    assert g.cuda() is not g


HOST_SNAPSHOTS = [
    ("as_tensor(device='cpu')", lambda t: torch.as_tensor(t, device="cpu")),
    ("as_tensor(data=, device='cpu')",
     lambda t: torch.as_tensor(data=t, device="cpu")),
    ("asarray(device='cpu')", lambda t: torch.asarray(t, device="cpu")),
    ("numpy(force=True)", lambda t: t.numpy(force=True)),
    ("untyped_storage().cpu()", lambda t: t.untyped_storage().cpu()),
]


@pytest.mark.parametrize("name,snap", HOST_SNAPSHOTS,
                         ids=[n for n, _ in HOST_SNAPSHOTS])
def test_other_host_requests_copy_what_is_on_the_accelerator(name, snap):
    """On CUDA these take a tensor on the GPU to the host, so each is a
    copy: a snapshot of an output buffer reused for the next batch keeps
    its values.  Host data keeps their aliasing (as_tensor and numpy share
    host memory on CUDA too)."""
    buffer = torch.ones(3, device="cuda")
    copy = snap(buffer)
    values = copy.tolist()
    buffer.fill_(7)
    assert copy.tolist() == values
    if name.startswith(("as_tensor", "asarray")):
        host = torch.zeros(3)
        snap(host).fill_(2)
        assert host.tolist() == [2.0, 2.0, 2.0]


def test_storages_move_as_on_cuda():
    """A storage made for "cuda", or one a "cuda" tensor holds, is on the
    accelerator: its .cuda() is itself (a TypedStorage's wraps the same
    memory) and its .cpu() a copy; a host storage's .cuda() is a copy.
    torch read every storage as on the host and copied it for .cuda(), so
    writes through the "moved" storage were lost."""
    import warnings
    made = torch.UntypedStorage(8, device="cuda")
    held = torch.zeros(2, device="cuda").untyped_storage()
    for storage in (made, held):
        assert storage.cuda() is storage
        snapshot = storage.cpu()
        assert snapshot is not storage
        assert snapshot.data_ptr() != storage.data_ptr()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")     # TypedStorage is deprecated
        typed = torch.TypedStorage(4, dtype=torch.float32, device="cuda")
        assert typed.cuda().data_ptr() == typed.data_ptr()
    host = torch.UntypedStorage(8)
    moved = host.cuda()
    assert moved is not host and moved.data_ptr() != host.data_ptr()
    assert moved.cuda() is moved


MODULE_MOVES = [
    ("cuda()", lambda m: m.cuda()),
    ("to('cuda')", lambda m: m.to("cuda")),
    ("to(device)", lambda m: m.to(torch.device("cuda"))),
    ("to(0)", lambda m: m.to(0)),
    ("to(device, dtype)", lambda m: m.to(torch.device("cuda"), torch.float64)),
    ("cuda().half()", lambda m: m.cuda().half()),
    ("cuda().to(bfloat16)", lambda m: m.cuda().to(torch.bfloat16)),
]


@pytest.mark.parametrize("name,move", MODULE_MOVES,
                         ids=[n for n, _ in MODULE_MOVES])
def test_best_weights_snapshot_stays_put(name, move):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(3, 4),
                                torch.nn.BatchNorm1d(4))
    host = {k: v.clone() for k, v in model.state_dict().items()}
    weight = model[0].weight
    assert move(model) is model
    assert model[0].weight is weight          # the Parameter object stays
    snap = {k: v.cpu() for k, v in model.state_dict().items()}
    for k, v in model.state_dict().items():
        assert _tdcore.on_accelerator(v), (name, k)
        assert not _same_storage(v, snap[k]), (name, k)
    with torch.no_grad():
        model[0].weight.add_(100)
    assert not torch.equal(snap["0.weight"], model[0].weight)
    # The host tensors the model had before the move were left alone.
    torch.testing.assert_close(host["0.weight"].to(snap["0.weight"].dtype),
                               snap["0.weight"])
    # Moving it there again copies nothing.
    ptr = model[0].weight.data_ptr()
    model.cuda()
    model.to("cuda")
    assert model[0].weight.data_ptr() == ptr


def test_module_built_on_cuda_and_moved_to_host():
    model = torch.nn.Linear(2, 2, device="cuda")
    assert _tdcore.on_accelerator(model.weight)
    ptr = model.weight.data_ptr()
    model.cpu()
    assert model.weight.data_ptr() != ptr
    assert not _tdcore.on_accelerator(model.weight)
    host = model.weight.data_ptr()
    model.cpu()
    assert model.weight.data_ptr() == host


def test_training_after_module_cuda_updates_the_optimizer_s_parameters():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model.cuda()
    x = torch.randn(16, 4).cuda()
    y = x.sum(1, keepdim=True)
    first = None
    for _ in range(20):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        first = first if first is not None else loss.item()
    assert loss.item() < first / 2


def test_gradients_flow_through_a_copying_move():
    x = torch.ones(2, requires_grad=True)
    y = x.cuda()
    (y * 3).sum().backward()
    assert x.grad.tolist() == [3.0, 3.0]


def test_moves_alias_is_the_opt_out(restore_config):
    TorchDevice.configure(moves="alias")
    assert TorchDevice.policy()["moves"] == "alias"
    x = torch.zeros(3)
    assert x.cuda() is x
    z = torch.ones(2, device="cuda")
    assert z.cpu() is z
    TorchDevice.configure(moves="copy")
    assert x.cuda() is not x


def test_moves_alias_from_the_environment():
    proc = run_python("""
        import torch, TorchDevice
        x = torch.zeros(3)
        print(TorchDevice.policy()["moves"], x.cuda() is x)
    """, env={"TORCHDEVICE_MOVES": "alias"})
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["alias", "True"]


def test_three_leaks_of_an_aliasing_move_in_a_fresh_process():
    """The three leaks that a move which is not a copy lets through."""
    proc = run_python("""
        import torch, TorchDevice
        x = torch.zeros(3); y = x.cuda(); y.add_(1)
        model = torch.nn.Linear(2, 2).cuda()
        snap = {k: v.cpu() for k, v in model.state_dict().items()}
        with torch.no_grad():
            model.weight.add_(100)
        z = torch.ones(3, device="cuda")
        arr = z.cpu().numpy(); arr[0] = 7
        print(x.tolist() == [0, 0, 0],
              not torch.equal(snap["weight"], model.weight),
              z.tolist() == [1, 1, 1])
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True", "True", "True"]


def test_a_program_that_never_asks_for_the_accelerator_keeps_identities():
    """Until something is put on the accelerator nothing is there, so a host
    request is CUDA's no-op whatever the tensor: a program that never asks
    for "cuda" runs as natively (BoTorch's PairwiseGP checks its buffer by
    identity after `mll.to("cpu")`).  From the first tensor on the
    accelerator on, a tensor whose place is unknown moved to the host is a
    snapshot, as before."""
    proc = run_python("""
        import torch, TorchDevice
        t = torch.zeros(2)
        p = torch.nn.Parameter(torch.ones(2))
        m = torch.nn.Module(); m.register_buffer("b", t); m.p = p
        ptr = p.data_ptr()
        m.to("cpu"); m.cpu(); m.to(device=torch.device("cpu"))
        print(m.b is t, m.p is p and m.p.data_ptr() == ptr,
              t.to("cpu") is t, t.cpu() is t, (t + 1).cpu() is not t)
        x = torch.ones(2, device="cuda")
        r = x * 2
        r.cpu().add_(1)
        print(t.cpu() is t, r.tolist() == [2.0, 2.0], x.cpu() is x)
    """)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["True"] * 5 + ["False", "True", "False"]


def test_parse_to_keeps_the_device_the_program_asked_for():
    """torch._C._nn._parse_to reads `.to(...)` arguments for code that moves
    tensors itself (tensordict's TensorDict.to, Module.to): the device it
    hands back is the program's, so the move it makes copies as CUDA's, and
    an ordinal is a device as in `t.to(0)` (it raised "Cannot access
    accelerator device when none is available")."""
    parse = torch._C._nn._parse_to
    cuda = torch.device("cuda")
    assert parse(cuda)[0] is cuda
    assert parse(device=cuda, dtype=torch.half) == (cuda, torch.half,
                                                    False, None)
    assert parse(0)[0] is torch.device(0) and str(parse(0)[0]) == "cuda:0"
    assert parse(device=1)[0] is torch.device("cuda:1")
    host = torch.device("cpu")
    assert parse(host)[0] is host
    assert parse(torch.float16) == (None, torch.float16, False, None)
    x = torch.zeros(3)
    for device in (parse(cuda)[0], parse(0)[0]):
        y = x.to(device)
        assert y is not x and not _same_storage(x, y)
        assert y.to(parse(cuda)[0]) is y
        assert y.to(parse(host)[0]) is not y
    # a device read off a tensor stays what torch makes of it
    assert parse(x.device)[0] == x.device


def test_simulated_mps_profile_copies_in_accelerate_mode(simulated_mps):
    """SimulatedMPS (meta stands for the MPS device): in accelerate mode a
    host tensor already lands on the accelerator, so its .cuda() copies."""
    x = torch.zeros(3)
    assert x.device == simulated_mps
    y = x.cuda()
    assert y is not x and y.device == simulated_mps
    assert y.cuda() is y
    assert y.cpu() is not y


class _Delegating(torch.Tensor):
    """A tensor subclass whose __torch_function__ hands every call back to
    torch's public function, as PyG's EdgeIndex and torch's lazy
    parameters do: a move reaches TorchDevice's wrapper twice."""
    seen: list = []

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.Tensor.to:
            dev = kwargs.get("device", args[1] if len(args) > 1 else None)
            cls.seen.append(_tdcore.device_intent(dev))
        return super().__torch_function__(func, types, args, kwargs)


@pytest.mark.parametrize("name,move", TO_CUDA, ids=[n for n, _ in TO_CUDA])
def test_a_delegating_subclass_is_moved_once_as_asked(name, move):
    _Delegating.seen.clear()
    x = torch.zeros(3).as_subclass(_Delegating)
    y = move(x)
    y.add_(1)
    assert x.tolist() == [0.0, 0.0, 0.0], name
    assert not _same_storage(x, y)
    assert move(y) is y
    # Its handler sees the move the program asked for (docs/policy.md).
    assert set(_Delegating.seen) <= {"accelerator"}, _Delegating.seen
    _Delegating.seen.clear()
    h = y.cpu()
    assert h is not y and not _same_storage(h, y)
    assert set(_Delegating.seen) <= {"host"}, _Delegating.seen


def test_lazy_modules_move_to_cuda_more_than_once():
    """Lazy parameters refuse untyped_storage() and clone(); torch's
    Tensor.to and .cuda() on them are allowed, as on CUDA."""
    from torch.nn.parameter import UninitializedParameter
    for move in (lambda m: m.cuda(), lambda m: m.to("cuda"),
                 lambda m: m.to(torch.device("cuda", 0))):
        lin = move(move(torch.nn.LazyLinear(4)))
        assert isinstance(lin.weight, UninitializedParameter)
        torch.manual_seed(0)
        out = lin(torch.ones(2, 3, device="cuda"))
        assert out.shape == (2, 4) and lin.weight.shape == (4, 3)
        assert _tdcore.on_accelerator(lin.weight)
        assert lin.cpu().weight.shape == (4, 3)
    p = UninitializedParameter()
    moved = p.to("cuda")           # a new tensor there, as CUDA's move
    assert moved is not p and moved.to("cuda") is moved


@pytest.mark.parametrize("enter", ["with torch.device", "set_default_device"])
def test_tensors_made_under_a_cuda_default_device_are_on_the_accelerator(
        enter):
    """torch's default-device context fills the device of factories called
    without one, past the wrappers: with "cuda" there, what they make is
    on the accelerator, and its `.cpu()` is a copy as on CUDA."""
    def made(make):
        if enter == "with torch.device":
            with torch.device("cuda"):
                return make()
        torch.set_default_device("cuda")
        try:
            return make()
        finally:
            torch.set_default_device(None)

    x = made(lambda: torch.zeros(3))
    model = made(lambda: torch.nn.Linear(2, 2))
    assert _tdcore.on_accelerator(x) and _tdcore.on_accelerator(model.weight)
    y = x.cpu()
    y.add_(1)
    assert torch.equal(x, torch.zeros(3))
    assert x.cuda() is x
    snapshot = {k: v.cpu() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.weight.add_(1)
    assert not torch.equal(snapshot["weight"], model.weight.detach().cpu())
    # A device given to the call, and a host context, decide as before.
    assert not _tdcore.on_accelerator(made(lambda: torch.zeros(3,
                                                               device="cpu")))
    with torch.device("cpu"):
        assert not _tdcore.on_accelerator(torch.zeros(3))


CONSTRUCT = [
    ("as_tensor", lambda d: torch.as_tensor(d, device="cuda")),
    ("as_tensor(torch.device)",
     lambda d: torch.as_tensor(d, device=torch.device("cuda"))),
    ("asarray", lambda d: torch.asarray(d, device="cuda")),
    ("tensor", lambda d: torch.tensor(d, device="cuda")),
    # The data by keyword: each constructor names it its own way.
    ("as_tensor(data=)", lambda d: torch.as_tensor(data=d, device="cuda")),
    ("asarray(obj=)", lambda d: torch.asarray(obj=d, device="cuda")),
    ("tensor(data=)", lambda d: torch.tensor(data=d, device="cuda")),
]


@pytest.mark.parametrize("name,make", CONSTRUCT,
                         ids=[n for n, _ in CONSTRUCT])
def test_constructing_on_cuda_from_host_data_is_a_copy(name, make):
    """torch.as_tensor / asarray of host data (a tensor, a numpy array)
    with device="cuda" copy it there on CUDA: editing the result leaves the
    data alone, and the data stays a host tensor."""
    import numpy as np
    x = torch.zeros(3)
    z = make(x)
    z.add_(1)
    assert torch.equal(x, torch.zeros(3))
    assert not _tdcore.on_accelerator(x) and _tdcore.on_accelerator(z)
    assert x.cuda() is not x and z.cuda() is z and z.cpu() is not z
    a = np.zeros(3, dtype=np.float32)
    make(a).add_(1)
    assert a.tolist() == [0.0, 0.0, 0.0]
    assert make([1.0, 2.0]).tolist() == [1.0, 2.0]


def test_constructing_on_cuda_from_cuda_data_is_the_data():
    """As on CUDA, as_tensor of a tensor already there is the tensor."""
    y = torch.ones(3, device="cuda")
    assert torch.as_tensor(y, device="cuda") is y
    assert torch.asarray(y, device="cuda").data_ptr() == y.data_ptr()


def test_constructing_on_cuda_from_a_host_subclass_gives_a_plain_tensor():
    """CUDA's as_tensor copies a tensor subclass inside torch, past its
    __torch_function__, and gives a torch.Tensor (Pyro's ProvenanceTensor
    tests read the type)."""
    class Tracked(torch.Tensor):
        calls = []

        @classmethod
        def __torch_function__(cls, func, types, args=(), kwargs=None):
            cls.calls.append(getattr(func, "__name__", str(func)))
            return super().__torch_function__(func, types, args,
                                              kwargs or {})

    x = torch.zeros(3)
    y = x.as_subclass(Tracked)
    for make in (lambda d: torch.as_tensor(d, device="cuda"),
                 lambda d: torch.asarray(d, device="cuda")):
        Tracked.calls.clear()
        z = make(y)
        assert type(z) is torch.Tensor and "clone" not in Tracked.calls
        z.add_(1)
        assert torch.equal(x, torch.zeros(3))
        assert _tdcore.on_accelerator(z) and not _tdcore.on_accelerator(y)
