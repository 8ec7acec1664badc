"""Processes (docs/reliability.md, guarantee 5).

`fork` after enable (os.fork and multiprocessing's fork context): children
work, with the parent's settings.  `spawn` children: TorchDevice is enabled
again by the import in the main module and, with no import at all, by
TORCHDEVICE=1 (the torch.backends entry point); without either it is not.
multiprocessing.Pool returns tensors made in the children to the parent;
DataLoader workers (fork and spawn) hand batches back.  tests/
test_dataloader.py covers the worker CPU override and pinning in depth.

Each case runs a script in a fresh interpreter (spawn re-imports the main
module from its file).
"""
from __future__ import annotations

import json
import multiprocessing

import pytest

from conftest import CUDA_BUILD, DEFAULT_MODE, HAS_CUDA, TARGET, run_python

pytestmark = pytest.mark.skipif(HAS_CUDA, reason="CUDA redirected: profiles "
                                "cpu and accelerator only")

SCRIPT = r'''
import json, os, sys
import multiprocessing as mp
import torch
IMPORT_LINE


def td():
    return sys.modules.get("TorchDevice")


def probe(i):
    """What a child sees; a tensor made on "cuda" goes back to the parent."""
    t = td()
    info = {"pid": os.getpid(),
            "enabled": bool(t is not None and t.is_enabled())}
    try:
        x = torch.full((3,), float(i), device="cuda")
        info["device"] = str(torch.zeros(0, device=torch.device("cuda"))
                             .device)
        info["asked"] = torch.device("cuda").type
        info["tensor"] = str(x.device)
        info["policy"] = t.policy() if info["enabled"] else None
        if info["enabled"] and hasattr(torch.cuda, "Event"):
            a = torch.cuda.Event(enable_timing=True)
            b = torch.cuda.Event(enable_timing=True)
            a.record(); torch.ones(8).sum(); b.record(); b.synchronize()
            info["elapsed_ok"] = a.elapsed_time(b) >= 0
            info["cuda_available"] = torch.cuda.is_available()
    except Exception as exc:
        info["error"] = type(exc).__name__
        x = None
    return info, x


class Data(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        return torch.full((2,), float(i), device="cuda")


def main(ctx_name, raw_fork):
    out = {"parent": probe(-1)[0]}
    ctx = mp.get_context(ctx_name)
    # One spawned child costs a torch import (seconds); fork is cheap.
    workers = 2 if ctx_name == "fork" else 1
    with ctx.Pool(workers) as pool:
        results = pool.map(probe, range(4))
    out["children"] = [info for info, _ in results]
    out["values"] = [x.tolist() if x is not None else None
                     for _, x in results]
    out["returned_devices"] = [str(x.device) for _, x in results
                               if x is not None]
    out["sum_after"] = (torch.stack([x for _, x in results if x is not None])
                        .cuda().sum().item()
                        if all(x is not None for _, x in results) else None)
    loader = torch.utils.data.DataLoader(Data(), batch_size=2,
                                         num_workers=workers,
                                         multiprocessing_context=ctx_name)
    try:
        out["loader"] = [b.cuda().tolist() for b in loader]
    except Exception as exc:
        out["loader"] = type(exc).__name__
    if raw_fork:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(r)
            try:
                data = json.dumps(probe(7)[0]).encode()
            except BaseException as exc:
                data = json.dumps({"error": repr(exc)}).encode()
            os.write(w, data)
            os._exit(0)
        os.close(w)
        chunks = []
        while True:
            chunk = os.read(r, 65536)
            if not chunk:
                break
            chunks.append(chunk)
        os.waitpid(pid, 0)
        out["raw_fork"] = json.loads(b"".join(chunks))
    out["parent_after"] = probe(-2)[0]
    print("RESULT" + json.dumps(out))


if __name__ == "__main__":
    SETUP_LINE
    main(sys.argv[1], sys.argv[2] == "1")
'''


def run(tmp_path, ctx: str, *, import_line: str = "import TorchDevice",
        setup_line: str = "pass", env=None, raw_fork: bool = False) -> dict:
    script = tmp_path / f"procs_{ctx}.py"
    script.write_text(SCRIPT.replace("IMPORT_LINE", import_line)
                      .replace("SETUP_LINE", setup_line))
    proc = run_python(None, ctx, "1" if raw_fork else "0", script=script,
                      env=env, timeout=240, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")]
    assert line, proc.stdout[-2000:] + proc.stderr[-2000:]
    return json.loads(line[0][len("RESULT"):])


def assert_all_worked(out: dict, *, mode: str = DEFAULT_MODE) -> None:
    infos = [out["parent"], out["parent_after"], *out["children"]]
    if "raw_fork" in out:
        infos.append(out["raw_fork"])
    for info in infos:
        assert info["enabled"] is True, info
        assert "error" not in info, info
        assert info["device"] == str(TARGET), info
        assert info["asked"] == "cuda", info
        assert info["tensor"] == str(TARGET), info
        assert info["policy"]["mode"] == mode, info
        if "elapsed_ok" in info:
            assert info["elapsed_ok"] and info["cuda_available"], info
    pids = {c["pid"] for c in out["children"]}
    assert out["parent"]["pid"] not in pids
    assert out["values"] == [[float(i)] * 3 for i in range(4)]
    assert out["returned_devices"] == [str(TARGET)] * 4
    assert out["sum_after"] == 18.0
    assert out["loader"] == [[[0.0, 0.0], [1.0, 1.0]],
                             [[2.0, 2.0], [3.0, 3.0]]]


needs_fork = pytest.mark.skipif(
    "fork" not in multiprocessing.get_all_start_methods(),
    reason="no fork on this platform")


@needs_fork
def test_fork_after_enable(tmp_path):
    """Children forked from an enabled parent keep its settings (here a
    non-default mode) and work: os.fork, Pool, DataLoader workers."""
    out = run(tmp_path, "fork", raw_fork=True,
              setup_line='TorchDevice.configure(mode="accelerate")')
    assert_all_worked(out, mode="accelerate")
    assert out["raw_fork"]["pid"] != out["parent"]["pid"]


def test_spawn_reenabled_by_import(tmp_path):
    out = run(tmp_path, "spawn")
    assert_all_worked(out)


def test_spawn_reenabled_by_environment(tmp_path):
    """No import of TorchDevice anywhere: TORCHDEVICE=1 enables it in the
    parent and, inherited, in every spawned child."""
    out = run(tmp_path, "spawn", import_line="",
              env={"TORCHDEVICE": "1"})
    assert_all_worked(out)


def test_spawn_without_import_or_environment_is_native(tmp_path):
    """The control: neither an import nor TORCHDEVICE=1, so the parent and
    its children are plain torch and "cuda" fails on this machine."""
    out = run(tmp_path, "spawn", import_line="")
    # "Torch not compiled with CUDA enabled" on a CPU build, "Found no
    # NVIDIA driver" on a CUDA build without a GPU.
    native = "RuntimeError" if CUDA_BUILD else "AssertionError"
    for info in [out["parent"], *out["children"]]:
        assert info["enabled"] is False
        assert info["error"] == native
    assert out["loader"] == native
