"""A Ctrl-C or SIGTERM as a command's process exits (its exit handlers: torch's teardown), once the command has
decided its exit code, keeps that code: it was the signal's death (143, 130) after a finished convert or run, or a
one-line error's exit 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = str(Path(__file__).resolve().parents[1])


def _stopped_at_exit(argv: list[str], stop: str) -> subprocess.CompletedProcess:
    """`redrafter-trt ARGV` as its own process, sent `stop` from an exit handler registered by its imports."""
    script = f"""
import atexit, os, runpy, signal, sys, time
from redrafter_trt import interrupts

def own_process(real=interrupts.own_process):
    real()
    atexit.register(lambda: (os.kill(os.getpid(), signal.{stop}), time.sleep(5)))

interrupts.own_process = own_process
sys.argv = {["redrafter-trt", *argv]!r}
runpy.run_module("redrafter_trt", run_name="__main__")
"""
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [REPO, os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=240)


@pytest.mark.long  # processes or signals: setup.cfg's `long` job (.ci/run)
@pytest.mark.parametrize("stop", ["SIGINT", "SIGTERM"])
def test_a_stop_as_a_finished_command_exits_keeps_exit_0(tmp_path, stop):
    done = _stopped_at_exit(["doctor"], stop)
    assert done.returncode == 0 and "Traceback" not in done.stderr, (done.returncode, done.stderr[-2000:])
    assert "sentencepiece" in done.stdout  # its whole answer was written
    assert "interrupted as the process exited: its exit code 0 stands" in done.stderr


def test_a_stop_as_a_refused_command_exits_keeps_exit_2(tmp_path):
    done = _stopped_at_exit(["convert", "--base", str(tmp_path / "nope"), "--drafter", str(tmp_path / "nope"),
                             "--output", str(tmp_path / "out")], "SIGTERM")
    assert done.returncode == 2 and done.stderr.startswith("error: "), (done.returncode, done.stderr[-2000:])
    assert "interrupted as the process exited: its exit code 2 stands" in done.stderr


@pytest.mark.parametrize("stop", ["SIGINT", "SIGTERM"])
def test_a_stop_while_torch_loads_waits_for_it(tmp_path, stop):
    """A stop while torch's extensions load (numpy's, torch.distributed's) was an abort ('terminate called after
    throwing an instance of pybind11::error_already_set', SIGABRT) or an ImportError traceback ('cannot load module
    more than once per process'): held until torch has loaded, then 'interrupted' and exit 130. A stand-in torch
    stops its own import halfway and notes whether the import ran to its end."""
    fake = tmp_path / "fake" / "torch"
    fake.mkdir(parents=True)
    mark = tmp_path / "loaded"
    (fake / "__init__.py").write_text(
        f"import os, signal, time\nos.kill(os.getpid(), signal.{stop})\ntime.sleep(0.2)\n"
        f"open({str(mark)!r}, 'w').write('whole')\n")
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(fake.parent), REPO, os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-m", "redrafter_trt", "doctor"], capture_output=True, text=True, env=env,
                          timeout=240)
    assert (done.returncode, done.stderr) == (130, "interrupted\n"), (done.returncode, done.stderr[-2000:])
    assert mark.read_text() == "whole"
