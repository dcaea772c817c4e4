"""scripts/gpu_check.sh (the one script run on a lent GPU) up to its CUDA check, with a stand-in python3 that finds no
GPU: where its outputs go and what it refuses before any GPU time is spent."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.sh"


def gpu_check(cwd: Path, *args: str, stand_in: bool = True) -> subprocess.CompletedProcess:
    """The script started from `cwd`; its python3 a stand-in that passes the CUDA check and stops at the next step
    (exit 1), or with stand_in=False this machine's own."""
    env = dict(os.environ)
    if stand_in:
        bin_dir = cwd / "bin"
        bin_dir.mkdir(exist_ok=True)
        (bin_dir / "python3").write_text('#!/bin/sh\ncase "$*" in *cuda.is_available*) exit 0;; esac\n'
                                         "echo 'stand-in: stop here' >&2\nexit 1\n")
        (bin_dir / "python3").chmod(0o755)
        env["PATH"] = f"{bin_dir}{os.pathsep}{os.environ['PATH']}"
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


def test_a_relative_out_dir_is_taken_from_where_the_script_starts(tmp_path):
    """The script changed to the checkout before reading OUT_DIR: `bash ~/redrafter-trt/scripts/gpu_check.sh out`
    wrote the logs, drafter and JSON into the checkout's out/, not the caller's."""
    name = f"gpu-check-out-{os.getpid()}"
    try:
        r = gpu_check(tmp_path, name)
        assert r.returncode == 1 and "stand-in: stop here" in r.stderr, r.stderr
        assert (tmp_path / name).is_dir()
        assert not (SCRIPT.parents[1] / name).exists()
    finally:
        if (SCRIPT.parents[1] / name).is_dir():
            (SCRIPT.parents[1] / name).rmdir()


def test_a_bad_bench_prompt_count_is_refused_before_any_work(tmp_path):
    """BENCH_PROMPTS 0 (or a word) reached bench, the last stage, after the GPU tests, training and acceptance."""
    for count in ("0", "ten"):
        r = gpu_check(tmp_path, "out", count)
        assert r.returncode == 2 and f"BENCH_PROMPTS '{count}' is not a number of prompts" in r.stderr, r.stderr
        assert "stand-in" not in r.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU machine the script would run every stage")
def test_no_gpu_is_one_line_exit_2_and_nothing_on_disk(tmp_path):
    """A review on a CPU machine: `bash scripts/gpu_check.sh OUT` ended with exit code 1 after making OUT (the CUDA
    check came after mkdir), and without OUT_DIR bash's own `${1:?...}` exit 1."""
    r = gpu_check(tmp_path, "out", stand_in=False)
    assert r.returncode == 2 and r.stderr.strip().splitlines() == [
        "no CUDA GPU visible to torch: run this on a machine with an NVIDIA GPU and a CUDA build of torch"], r.stderr
    assert not (tmp_path / "out").exists()
    r = gpu_check(tmp_path, stand_in=False)
    assert r.returncode == 2 and r.stderr.strip() == "usage: bash scripts/gpu_check.sh OUT_DIR [BENCH_PROMPTS]"


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_help_prints_the_usage_and_runs_nothing(tmp_path, flag):
    """A newcomer's pass: `bash scripts/gpu_check.sh --help` took `--help` for OUT_DIR, so on a GPU machine it made a
    folder named --help and started five minutes of GPU stages."""
    r = gpu_check(tmp_path, flag)
    assert r.returncode == 0 and r.stdout.startswith("usage: bash scripts/gpu_check.sh OUT_DIR [BENCH_PROMPTS]"), r
    assert "stand-in" not in r.stderr and not (tmp_path / flag).exists()
