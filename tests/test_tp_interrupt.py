"""Interrupting and losing tensor-parallel ranks, on real processes (tiny tp=2 checkpoints on CPU): Ctrl-C to the
whole process group of `run --tp 2`, a signal to one rank alone, the process that started the ranks killed, and
Ctrl-C in the middle of a LocalRanks call. Linux (/proc, PR_SET_PDEATHSIG); every test kills what it left."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_bench import save_byte_tokenizer
from test_runtime_support import checkpoint

pytestmark = [pytest.mark.long, pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")]
ROOT = str(Path(__file__).resolve().parents[1])
ENV = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1"}


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
    except OSError:
        return ""


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _ranks(pid: int) -> list[int]:
    """The rank processes a process started (multiprocessing's resource tracker left out)."""
    return sorted(c for c in _children(pid) if "spawn_main" in _cmdline(c))


def _sigint_ignored(pid: int) -> bool | None:
    """Whether the process ignores SIGINT; None where its status cannot be read."""
    try:
        line = next(x for x in Path(f"/proc/{pid}/status").read_text().splitlines() if x.startswith("SigIgn"))
    except (OSError, StopIteration):
        return None
    return bool(int(line.split()[1], 16) & (1 << (signal.SIGINT - 1)))


def _takes_sigint(pid: int) -> bool:
    """Whether the process no longer ignores SIGINT: a rank that has started (tp._worker)."""
    return _sigint_ignored(pid) is False


def _torch_loaded(pid: int) -> bool:
    """Whether the process has mapped torch's library (its `import torch` is under way or done)."""
    try:
        return "libtorch" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


def _decoding(ranks: list[int]) -> bool:
    """Whether the ranks have started (SIGINT taken) and imported torch: a tiny checkpoint then loads at once."""
    return all(_takes_sigint(r) and _torch_loaded(r) for r in ranks)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _wait_for(condition, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if value := condition():
            return value
        time.sleep(0.05)
    pytest.fail(f"timed out waiting for {what}")


def _kill_all(pids) -> None:
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


@pytest.fixture(scope="module")
def run_args(tiny_llama, tiny_drafter, tmp_path_factory):
    """`redrafter-trt run` of a tiny tp=2 checkpoint that decodes long enough to be interrupted (seconds)."""
    tokenizer = tmp_path_factory.mktemp("byte_tokenizer")
    save_byte_tokenizer(tokenizer)
    ckpt = checkpoint(tiny_llama, tiny_drafter, 2)
    return [sys.executable, "-m", "redrafter_trt", "run", "--checkpoint-dir", str(ckpt), "--tokenizer-dir",
            str(tokenizer), "--tp", "2", "--input-text", "The quick brown fox", "--input-text", "Once upon a time",
            "--max-output-len", "480"]


def _start(argv, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env or ENV,
                            start_new_session=True)  # a process group of its own, as a terminal's foreground job


def _finish(proc: subprocess.Popen, ranks: list[int], timeout: float = 30):
    """(exit code, stderr) of the command, failing if it or a rank outlives `timeout`; kills whatever is left."""
    try:
        _, err = proc.communicate(timeout=timeout)
        _wait_for(lambda: not any(_alive(r) for r in ranks), 10, "the ranks to end")
        return proc.returncode, err
    except subprocess.TimeoutExpired:
        pytest.fail("the command hung")
    finally:
        _kill_all([proc.pid, *ranks])
        proc.communicate()


@pytest.mark.parametrize("when", ["starting", "decoding"])
def test_ctrl_c_stops_every_rank_at_once_without_a_traceback(run_args, when):
    """Ctrl-C (SIGINT to the whole process group) while the ranks import torch printed each rank's
    KeyboardInterrupt traceback (they take SIGINT now only once started, and the parent kills them); while they
    decode, every rank stops at once: `interrupted`, exit code 130, no rank left."""
    proc = _start(run_args)
    ranks = _wait_for(lambda: len(r := _ranks(proc.pid)) == 2 and r, 60, "two ranks")
    # launch ignores SIGINT while it starts the ranks (so that they are born ignoring it); a Ctrl-C in those
    # milliseconds is lost, as its other threads (the TCPStore's) take it and drop it: a known window, not this test's
    _wait_for(lambda: _takes_sigint(proc.pid), 60, "launch to have started the ranks")
    if when == "decoding":
        _wait_for(lambda: _decoding(ranks), 60, "the ranks to start")
        time.sleep(2)  # loaded (a tiny checkpoint) and decoding
    start = time.monotonic()
    os.killpg(proc.pid, signal.SIGINT)
    code, err = _finish(proc, ranks)
    assert (code, err.strip()) == (130, "interrupted"), err[-3000:]
    assert time.monotonic() - start < 15  # not after the generation (~20 s of decoding)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_a_signal_to_one_rank_alone_is_a_one_line_peer_error(run_args, sig):
    """SIGINT sent to rank 1 alone (not the group) ended it with a KeyboardInterrupt and rank 0 with gloo's
    'Connection closed by peer' traceback, exit code 1; SIGKILL's PeerError came after torch's 'Terminating process'
    warning. Either is now one line naming the rank and the signal, exit code 2, no rank left."""
    proc = _start(run_args)
    ranks = _wait_for(lambda: len(r := _ranks(proc.pid)) == 2 and r, 60, "two ranks")
    _wait_for(lambda: _decoding(ranks), 60, "the ranks to start")
    time.sleep(2)
    os.kill(ranks[1], sig)
    code, err = _finish(proc, ranks)
    assert code == 2, err[-3000:]
    assert err.count("\n") == 1 and err.startswith(f"error: tp rank 1 was killed by {sig.name}"), err[-3000:]


SLEEPER = """
import sys, time
from redrafter_trt.runtime.tp import launch

def sleep_in_a_collective(group):
    import torch
    if group.tp_rank == 0:
        time.sleep(120)
    group.all_reduce(torch.ones(1))  # rank 1 waits here, in gloo, for rank 0

if __name__ == "__main__":
    launch(sleep_in_a_collective, 2)
"""


def test_ranks_end_with_the_process_that_started_them(tmp_path, monkeypatch):
    """generate_tp's ranks (torch.multiprocessing's, with a SIGINT parent-death signal that a rank inside a
    collective does not act on) outlived a killed `run --tp`; they now get SIGKILL when their parent dies. The
    temporary folder of their results, which a killed run cannot remove, was left in the temporary directory for
    good: the next start of ranks removes it (its process is gone)."""
    import tempfile

    from redrafter_trt.runtime.tp import launch
    from test_runtime_tp import _killed_on_rank_1

    script, tmp = tmp_path / "sleeper.py", tmp_path / "tmp"
    script.write_text(SLEEPER)
    tmp.mkdir()
    proc = _start([sys.executable, str(script)], {**ENV, "TMPDIR": str(tmp)})
    ranks = _wait_for(lambda: len(r := _ranks(proc.pid)) == 2 and r, 60, "two ranks")
    try:
        _wait_for(lambda: _decoding(ranks), 60, "the ranks to start")
        time.sleep(1)
        proc.kill()  # SIGKILL: no handler of the parent runs
        proc.wait()  # (its pipes stay open while a rank lives)
        _wait_for(lambda: not any(_alive(r) for r in ranks), 10, "the ranks to end with their parent")
    finally:
        _kill_all([proc.pid, *ranks])
        proc.communicate()
    left = list(tmp.iterdir())
    assert len(left) == 1 and left[0].is_dir(), left
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    with pytest.raises(Exception, match="killed by SIGKILL"):  # the next start, with a rank of its own killed
        launch(_killed_on_rank_1, 2)
    assert list(tmp.iterdir()) == [], "the killed run's folder was left"  # (and the next start's own removed)


TAKEN_BY_ANOTHER_THREAD = """
import multiprocessing, signal, sys, threading, time
from redrafter_trt.runtime.tp import launch

def nap(group):
    time.sleep(300)

def ctrl_c_to_this_thread():
    while len(multiprocessing.active_children()) < 2:
        time.sleep(0.1)
    time.sleep(1)  # launch waits for its ranks
    signal.pthread_kill(threading.get_ident(), signal.SIGINT)

if __name__ == "__main__":
    threading.Thread(target=ctrl_c_to_this_thread, daemon=True).start()
    try:
        launch(nap, 2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
"""


def test_a_ctrl_c_another_thread_took_stops_the_ranks(tmp_path):
    """The kernel hands a process's signal to any of its threads (the TCPStore's, torch's); Python runs the handler
    in the main thread only once it runs Python again: launch, asleep in an untimed wait for its ranks, ended only
    with them (here after 5 minutes)."""
    script = tmp_path / "taken.py"
    script.write_text(TAKEN_BY_ANOTHER_THREAD)
    proc = _start([sys.executable, str(script)])
    ranks = _wait_for(lambda: len(r := _ranks(proc.pid)) == 2 and r, 60, "two ranks")
    code, err = _finish(proc, ranks, timeout=60)
    assert (code, err.strip()) == (0, "interrupted"), err[-3000:]


LOCAL_RANKS = """
import os, signal, sys, threading, time
import torch
from redrafter_trt.runtime.ranks import LocalRanks
from redrafter_trt.runtime.tp import rank_threads

if __name__ == "__main__":
    torch.set_num_threads(rank_threads(2) + 1)  # the caller's: not rank 0's share
    ranks = LocalRanks(sys.argv[1])
    print(*(p.pid for p in ranks.procs), flush=True)
    threading.Timer(2, os.kill, (os.getpid(), signal.SIGINT)).start()  # Ctrl-C mid-generation
    try:
        ranks.generate([[1, 2, 3]], 480)
        print("returned", flush=True)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
    print("threads given back:", torch.get_num_threads() == rank_threads(2) + 1, flush=True)
    try:
        ranks.generate([[1, 2, 3]], 4)
        print("answered", flush=True)
    except Exception as e:
        print(type(e).__name__, e, flush=True)
    ranks.close()
    again = LocalRanks(sys.argv[1])  # as the PeerError advises
    print(*(p.pid for p in again.procs), flush=True)
    print("again:", len(again.generate([[1, 2, 3]], 4).output_ids), flush=True)
    again.close()
"""


def test_ctrl_c_in_a_local_ranks_call_ends_the_followers(tiny_llama, tiny_drafter, tmp_path):
    """A KeyboardInterrupt on rank 0 in the middle of LocalRanks.generate left the followers in a collective for
    ever, and the next call hung (its collectives paired with the old ones). The followers are killed, and a later
    call is a one-line PeerError. The caller gets its torch threads back, and a new LocalRanks, as that error
    advises, loads and answers (a mutation review: it raised that the default process group was initialized
    twice)."""
    script = tmp_path / "local_ranks.py"
    script.write_text(LOCAL_RANKS)
    proc = _start([sys.executable, str(script), str(checkpoint(tiny_llama, tiny_drafter, 2))])
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        _kill_all([proc.pid, *_ranks(proc.pid)])
        out, err = proc.communicate()
        pytest.fail(f"hung: {out} {err[-2000:]}")
    lines = out.splitlines()
    assert lines[1:4] == ["interrupted", "threads given back: True", "PeerError the other tp ranks were ended: "
                          "KeyboardInterrupt in the middle of generate on rank 0; load the checkpoint again (a new "
                          "LocalRanks) to go on"], out + err
    assert lines[5:] == ["again: 1"], out + err
    pids = [int(pid) for line in (lines[0], lines[4]) for pid in line.split()]
    assert proc.returncode == 0 and not any(_alive(pid) for pid in pids), out + err


def test_ctrl_c_while_serve_starts_its_followers_prints_no_traceback(run_args):
    """A walkthrough: Ctrl-C while `serve` on a tp=2 checkpoint started its follower printed the follower's
    KeyboardInterrupt traceback (from its `import torch`, as the ranks of `run` once did): serve starts its ranks in
    the scheduler thread, where no SIGINT handler can be set for them to inherit, so they ignore it from their first
    line instead. The server says `interrupted`, exit code 130, and no rank is left."""
    ckpt, tokenizer = run_args[run_args.index("--checkpoint-dir") + 1], run_args[run_args.index("--tokenizer-dir") + 1]
    proc = _start([sys.executable, "-m", "redrafter_trt", "serve", "--checkpoint-dir", ckpt, "--tokenizer-dir",
                   tokenizer, "--port", "0"])
    ranks = _wait_for(lambda: len(r := _ranks(proc.pid)) == 1 and r, 60, "the follower")
    # past Python's own start (a Ctrl-C there is no test of ours) and into its `import torch` (seconds): it ignores
    # SIGINT from its first line, or (before that fix) has mapped torch's library
    _wait_for(lambda: _sigint_ignored(ranks[0]) or _torch_loaded(ranks[0]), 60, "the follower to start")
    os.killpg(proc.pid, signal.SIGINT)
    code, err = _finish(proc, ranks)
    assert (code, err.strip()) == (130, "interrupted"), err[-3000:]


def _own_pid_namespace() -> list[str] | None:
    """The command prefix that runs a program in a pid namespace of its own (as a container's), /tmp shared; None
    where this machine cannot make one."""
    import shutil

    argv = ["unshare", "--user", "--map-root-user", "--pid", "--fork", "--mount-proc"]
    if shutil.which("unshare") is None or subprocess.run([*argv, "true"], capture_output=True).returncode:
        return None
    return argv


def test_a_start_in_another_pid_namespace_leaves_a_live_runs_results_folder(tmp_path, monkeypatch):
    """Containers sharing the temporary directory (`docker run -v /tmp:/tmp`, a pod's shared volume) each have pid
    namespaces of their own: a start of ranks in one asked whether the other's live `run --tp` still ran by its pid,
    which names no process there, and removed that run's results folder, so its ranks could not report."""
    import tempfile

    from redrafter_trt.runtime.tp import results_dir

    prefix = _own_pid_namespace()
    if prefix is None:
        pytest.skip("no pid namespace can be made here (unshare)")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    live = Path(results_dir())  # this process's, as a run's that goes on
    other = subprocess.run([*prefix, sys.executable, "-c", "from redrafter_trt.runtime.tp import results_dir; "
                            "print(results_dir())"], capture_output=True, text=True, env={**ENV, "TMPDIR": str(tmp_path)})
    assert other.returncode == 0, other.stderr[-2000:]
    assert Path(other.stdout.strip()).is_dir()  # the other start made its own (which it would remove when done)
    assert live.is_dir(), "a start in another pid namespace removed a live run's results folder"
