"""One program, one report (docs/report.md, "Several processes" and
"Signals"): what children started by multiprocessing, mp.spawn, DataLoader
workers and torchrun do is merged into the report of the process that
launched them, counted per site with the number of processes that hit it;
a run ended by SIGTERM still writes its report and dies of the signal."""
from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Optional

import pytest

import TorchDevice
from conftest import cuda_redirected

cpu_profile = pytest.mark.skipif(
    TorchDevice.hardware_profile() != "cpu",
    reason="expected targets are written for the cpu profile")
needs_fork = pytest.mark.skipif(
    "fork" not in multiprocessing.get_all_start_methods(),
    reason="no fork on this platform")

PROGRAM = '''\
import sys
import time

import torch
import torch.multiprocessing as mp


def child(n):
    torch.zeros(n, device="cuda")                          # site:child
    return n


def ranked(rank):
    torch.ones(1, device="cuda")                           # site:ranked


class Data(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        return torch.full((2,), float(i), device="cuda")   # site:item


if __name__ == "__main__":
    how = sys.argv[1]
    if how in ("fork", "spawn", "forkserver"):
        for n in (1, 2):
            p = mp.get_context(how).Process(target=child, args=(n,))
            p.start()
            p.join()
    elif how in ("fork-pool", "spawn-pool"):
        ctx = mp.get_context(how.split("-")[0])
        with ctx.Pool(2) as pool:
            assert pool.map(child, [1, 2, 3, 4]) == [1, 2, 3, 4]
    elif how == "mp.spawn":
        mp.spawn(ranked, nprocs=2)
    elif how == "dataloader":
        loader = torch.utils.data.DataLoader(Data(), batch_size=2,
                                             num_workers=2)
        assert sum(len(b) for b in loader) == 4
    elif how == "sleep":
        ctx = mp.get_context("fork")
        p = ctx.Process(target=child, args=(3,))
        p.start()
        p.join()
        time.sleep(float(sys.argv[2]) if len(sys.argv) > 2 else 0)
    torch.zeros(1, device="cuda")                          # site:main
    print("ready", flush=True)
    if how in ("sleep", "wait"):
        time.sleep(60)                 # until the test's signal
'''


def markers(text: str) -> dict:
    return {line.split("# site:")[1].strip(): n
            for n, line in enumerate(text.splitlines(), 1)
            if "# site:" in line}


LINES = markers(PROGRAM)


def environment() -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("TORCHDEVICE")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def launch(tmp_path: Path, *args: str, program: str = PROGRAM,
           env: Optional[dict] = None, **popen) -> subprocess.Popen:
    script = tmp_path / "prog.py"
    script.write_text(program)
    cmd = [sys.executable, "-m", "TorchDevice", "run",
           f"--report={tmp_path / 'report.json'}", str(script), *args]
    return subprocess.Popen(cmd, cwd=str(tmp_path),
                            env=environment() if env is None else env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, **popen)


def sites(doc: dict) -> dict:
    """{(marker line, api): (count, processes)}"""
    return {(r["line"], r["api"]): (r["count"], r["processes"])
            for r in doc["records"]}


CASES = {
    # how: (expected {(line, api): (count, processes)}, processes in all)
    "spawn": ({(LINES["child"], "torch.zeros"): (2, 2)}, 3),
    "forkserver": ({(LINES["child"], "torch.zeros"): (2, 2)}, 3),
    "fork": ({(LINES["child"], "torch.zeros"): (2, 2)}, 3),
    "mp.spawn": ({(LINES["ranked"], "torch.ones"): (2, 2)}, 3),
    "dataloader": ({(LINES["item"], "torch.full"): (4, 2)}, 3),
}


@cpu_profile
@pytest.mark.parametrize("how", sorted(CASES))
def test_children_are_merged_into_the_parents_report(tmp_path, how):
    if how in ("fork", "forkserver") and \
            how not in multiprocessing.get_all_start_methods():
        pytest.skip(f"no {how} here")
    proc = launch(tmp_path, how)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert err.count("TorchDevice report") == 2, err   # table + "written to"
    doc = json.loads((tmp_path / "report.json").read_text())
    expected, processes = CASES[how]
    expected = {**expected, (LINES["main"], "torch.zeros"): (1, 1)}
    assert sites(doc) == expected
    assert doc["processes"] == processes
    assert f"in {processes} processes" in err
    assert err.splitlines()[1].split()[-1] == "processes"


@cpu_profile
@pytest.mark.parametrize("how", ["fork-pool", "spawn-pool"])
def test_pool_workers_stopped_by_terminate_are_counted(tmp_path, how):
    """`with Pool() as p:` ends with terminate(): SIGTERM to each worker,
    possibly while it is already leaving; every call is still counted."""
    if how == "fork-pool" and "fork" not in \
            multiprocessing.get_all_start_methods():
        pytest.skip("no fork here")
    proc = launch(tmp_path, how)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    doc = json.loads((tmp_path / "report.json").read_text())
    got = sites(doc)
    assert (LINES["child"], "torch.zeros") in got, (got, err)
    count, workers = got[(LINES["child"], "torch.zeros")]
    assert count == 4 and 1 <= workers <= 2
    assert got[(LINES["main"], "torch.zeros")] == (1, 1)


INSTALLED = '''\
import torch


def child(n):
    torch.zeros(n, device="cuda")                          # site:installed
'''

PROGRAM_OF_AN_INSTALLED_PACKAGE = '''\
import sys

import torch.multiprocessing as mp

import installed

if __name__ == "__main__":
    p = mp.get_context(sys.argv[1]).Process(target=installed.child, args=(2,))
    p.start()
    p.join()
    assert p.exitcode == 0
'''


@cpu_profile
@pytest.mark.parametrize("how", ["spawn", "forkserver"])
def test_a_child_of_an_installed_program_is_reported_at_its_line(tmp_path,
                                                                 how):
    """A child started by spawn or forkserver runs from multiprocessing's
    `python -c` bootstrap: its "<string>" frame is machinery, so code of an
    installed package is reported at its own line in the child, as in the
    parent (it was "<string>:1")."""
    if how not in multiprocessing.get_all_start_methods():
        pytest.skip(f"no {how} here")
    library = tmp_path / "site-packages"
    library.mkdir()
    (library / "installed.py").write_text(INSTALLED)
    env = environment()
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(library), env.get("PYTHONPATH")) if p)
    proc = launch(tmp_path, how, program=PROGRAM_OF_AN_INSTALLED_PACKAGE,
                  env=env)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    doc = json.loads((tmp_path / "report.json").read_text())
    rows = [(Path(r["file"]).name, r["line"], r["api"], r["processes"])
            for r in doc["records"]]
    assert rows == [("installed.py", markers(INSTALLED)["installed"],
                     "torch.zeros", 1)], rows


def wait_ready(proc: subprocess.Popen) -> None:
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == "ready", (line, proc.stderr.read()
                                     if proc.poll() is not None else "")


@cpu_profile
def test_sigterm_writes_the_report_and_exits_by_the_signal(tmp_path):
    proc = launch(tmp_path, "wait")
    wait_ready(proc)
    subprocess.run(["kill", "-TERM", str(proc.pid)], check=True)
    out, err = proc.communicate(timeout=120)
    # Died of SIGTERM, as without TorchDevice: a shell shows status 143.
    assert proc.returncode == -signal.SIGTERM, err
    assert "1 call site, 1 call" in err
    doc = json.loads((tmp_path / "report.json").read_text())
    assert sites(doc) == {(LINES["main"], "torch.zeros"): (1, 1)}


@cpu_profile
def test_sigterm_status_as_a_shell_sees_it(tmp_path):
    script = tmp_path / "prog.py"
    script.write_text(PROGRAM)
    shell = (f"{sys.executable} -m TorchDevice run --report {script} wait "
             f"> out.txt 2> err.txt & pid=$!; "
             f"until grep -q ready out.txt; do sleep 0.1; done; "
             f"kill $pid; wait $pid; echo status=$?")
    proc = subprocess.run(["sh", "-c", shell], cwd=str(tmp_path),
                          env=environment(), capture_output=True, text=True,
                          timeout=120)
    assert "status=143" in proc.stdout, (proc.stdout, proc.stderr)
    assert "1 call site, 1 call" in (tmp_path / "err.txt").read_text()


@cpu_profile
@needs_fork
def test_sigterm_to_the_process_group_merges_the_children(tmp_path):
    """`timeout` and schedulers signal the whole group: the child that was
    already done and the parent both end up in the one report."""
    proc = launch(tmp_path, "sleep", start_new_session=True)
    wait_ready(proc)
    os.killpg(proc.pid, signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGTERM, err
    doc = json.loads((tmp_path / "report.json").read_text())
    assert sites(doc) == {(LINES["child"], "torch.zeros"): (1, 1),
                          (LINES["main"], "torch.zeros"): (1, 1)}


EARLY_SIGNAL = '''\
import os
import signal

import multiprocessing as mp

KILL_EARLY = []


def early():
    # Registered before TorchDevice's own at-fork hook, so it runs first:
    # the child has SIGTERM before the hook has made it a child.
    if KILL_EARLY:
        os.kill(os.getpid(), signal.SIGTERM)


os.register_at_fork(after_in_child=early)

import torch                                               # noqa: E402
import TorchDevice                                         # noqa: E402,F401


def work():
    torch.zeros(2, device="cuda")                          # site:work


if __name__ == "__main__":
    torch.ones(1, device="cuda")                           # site:before
    ctx = mp.get_context("fork")
    KILL_EARLY.append(1)
    first = ctx.Process(target=work)
    first.start()
    first.join()
    assert first.exitcode == -signal.SIGTERM, first.exitcode
    KILL_EARLY.clear()
    second = ctx.Process(target=work)
    second.start()
    second.join()
    assert second.exitcode == 0, second.exitcode
'''


@cpu_profile
@needs_fork
def test_a_child_signalled_before_its_fork_hook_hands_nothing(tmp_path):
    """A pool worker that SIGTERM reaches as it starts (`with Pool()` ends
    with terminate()) still holds its parent's role and records: it must
    neither write the report in the root's place nor remove the directory
    the other processes hand their parts to."""
    script = tmp_path / "prog.py"
    script.write_text(EARLY_SIGNAL)
    lines = markers(EARLY_SIGNAL)
    env = {**environment(),
           "TORCHDEVICE_REPORT": str(tmp_path / "report.json")}
    proc = subprocess.run([sys.executable, str(script)], cwd=str(tmp_path),
                          env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "ended after the report was written" not in proc.stderr
    assert proc.stderr.count("TorchDevice report written") == 1, proc.stderr
    doc = json.loads((tmp_path / "report.json").read_text())
    assert sites(doc) == {(lines["before"], "torch.ones"): (1, 1),
                          (lines["work"], "torch.zeros"): (1, 1)}
    assert doc["processes"] == 2


@cpu_profile
def test_torchrun_ranks_make_one_report(tmp_path):
    """`run --report -m torch.distributed.run`: the ranks' calls in the
    launcher's one table, and no extra empty table of the launcher's."""
    (tmp_path / "rank.py").write_text(textwrap.dedent("""\
        import torch
        torch.zeros(2, device="cuda")
    """))
    proc = subprocess.run(
        [sys.executable, "-m", "TorchDevice", "run", "--report",
         "-m", "torch.distributed.run", "--nproc_per_node", "2",
         "--standalone", "rank.py"],
        cwd=str(tmp_path), env=environment(), capture_output=True, text=True,
        timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("TorchDevice report") == 1, proc.stderr
    assert "no call site needed a change" not in proc.stderr
    assert "1 call site, 2 calls in 2 processes" in proc.stderr


def test_merge_counts_processes():
    from TorchDevice import _report
    row = {"file": "a.py", "line": 3, "function": "f", "api": "torch.zeros",
           "what": "redirected", "from": "cuda", "to": "cpu", "count": 2}
    other = {**row, "line": 4, "count": 1}
    merged = _report.merge([[row], [row, other], [{**row, "count": 5}]])
    assert [(r["line"], r["count"], r["processes"]) for r in merged] == [
        (3, 9, 3), (4, 1, 1)]


BLOCKED = '''\
import os
import signal
import threading
import time

import torch

torch.zeros(1, device="cuda")                          # site:zeros


def signal_myself():
    time.sleep(0.5)
    signal.pthread_kill(threading.get_ident(), signal.SIGTERM)


threading.Thread(target=signal_myself).start()
read, write = os.pipe()
os.read(read, 1)           # blocks: nobody writes
'''


@cuda_redirected
def test_sigterm_ends_a_main_thread_blocked_before_its_handler_ran(tmp_path):
    """Python runs a signal handler in the main thread when it next checks;
    a main thread that blocked before it checked (a pool worker waiting for
    a task when `Pool.terminate()` signals it) never does.  Without a
    handler SIGTERM ends the process; with the report's it waited forever
    (and `with Pool() as pool:` hung in terminate()).  Here the signal is
    delivered to another thread while the main thread is blocked."""
    script = tmp_path / "blocked.py"
    script.write_text(BLOCKED)
    proc = subprocess.Popen(
        [sys.executable, "-m", "TorchDevice", "run",
         f"--report={tmp_path / 'report.json'}", str(script)],
        cwd=str(tmp_path), env=environment(), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail("still waiting a minute after SIGTERM: " + err[-2000:])
    assert proc.returncode == -signal.SIGTERM, err
    doc = json.loads((tmp_path / "report.json").read_text())
    assert [(r["line"], r["api"]) for r in doc["records"]] == \
        [(markers(BLOCKED)["zeros"], "torch.zeros")]
