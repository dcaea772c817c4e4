"""scripts/gpu_check.sh (the one script run on a lent GPU) up to its CUDA check, with a stand-in python3 that finds no
GPU: where its outputs go and what it refuses before any GPU time is spent."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "gpu_check.sh"


def gpu_check(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """The script started from `cwd`, its python3 a stand-in that says no GPU is visible and exits 1."""
    bin_dir = cwd / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "python3").write_text("#!/bin/sh\necho 'no CUDA GPU visible to torch' >&2\nexit 1\n")
    (bin_dir / "python3").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=60)


def test_a_relative_out_dir_is_taken_from_where_the_script_starts(tmp_path):
    """The script changed to the checkout before reading OUT_DIR: `bash ~/redrafter-trt/scripts/gpu_check.sh out`
    wrote the logs, drafter and JSON into the checkout's out/, not the caller's."""
    name = f"gpu-check-out-{os.getpid()}"
    try:
        r = gpu_check(tmp_path, name)
        assert r.returncode == 1 and "no CUDA GPU visible" in r.stderr, r.stderr
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
        assert "no CUDA GPU visible" not in r.stderr
