"""The training cache: train says where it is and how big, and removes the entries of an earlier version of a base
(another base id for the same folder) once no base folder they were made for can read them, unless a run is using
them."""

from __future__ import annotations

import json
import logging
import os
import shutil

import pytest
import torch
from click.testing import CliRunner

from redrafter_trt.cli import main
from redrafter_trt.io import write_safetensors
from redrafter_trt.train.cache import prune_superseded, summary, using
from redrafter_trt.train.baseid import base_id
from test_train_data import make_chat_base
from tinymodels import resaved


def _base(folder):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"hidden_size": 8}')
    (folder / "model.safetensors").write_bytes(b"x" * 10)
    return folder


def _entries(cache, base, tag):
    """Cache entries of `base` as it is now, written by a run on it (which lists it): its answers in two dtypes, the
    chunks of a teacher-forced pass and of a soft-target pass, a hidden-state file and a soft-target file (as versions
    before sessions 44 and 45 cached those passes)."""
    ident = base_id(base)
    before = set(cache.iterdir()) if cache.exists() else set()
    with using(cache, base, ident):
        for dtype in ("float32", "bfloat16"):
            (cache / f"distill-{ident}-{dtype}").mkdir()
            (cache / f"distill-{ident}-{dtype}" / "hidden-x.safetensors").write_bytes(b"h" * 1000)
        for kind in ("hidden", "teacher"):  # features.hidden_folder, objective.soft_target_cache
            chunks = cache / f"{kind}-{ident}-bfloat16-{tag}"
            chunks.mkdir()
            write_safetensors(chunks / "00000-of-00002.safetensors", {"x": torch.zeros(4)}, {"base_id": ident})
        for kind in ("hidden", "teacher"):
            write_safetensors(cache / f"{kind}-{tag}.safetensors", {"x": torch.zeros(4)}, {"base_id": ident})
    return sorted(set(cache.iterdir()) - before - {cache / "bases"})


def _change(base):
    (base / "config.json").write_text('{"hidden_size": 8, "rope_theta": 500000.0}')


def test_entries_of_an_earlier_version_of_the_base_are_removed(tmp_path, caplog):
    base, cache = _base(tmp_path / "base"), tmp_path / "cache"
    old = _entries(cache, base, "old")
    unrecorded = cache / "hidden-0123456789abcdef.safetensors"  # written before ids were recorded: nothing says whose
    write_safetensors(unrecorded, {"x": torch.zeros(1)})
    _change(base)
    new = _entries(cache, base, "new")
    with caplog.at_level(logging.WARNING):
        prune_superseded(cache, base)
    assert len(old) == 6 and not any(p.exists() for p in old)
    assert all(p.exists() for p in new) and unrecorded.exists()
    assert "removed 6 cache entries of an earlier version of" in caplog.text and "GiB freed" in caplog.text


def test_entries_another_base_folder_can_still_read_or_a_run_is_using_are_kept(tmp_path):
    base, cache = _base(tmp_path / "base"), tmp_path / "cache"
    copy = tmp_path / "copy"
    shutil.copytree(base, copy)  # copy2 keeps the times: the same base id
    ident = base_id(base)
    assert base_id(copy) == ident
    shared = _entries(cache, base, "old")
    with using(cache, copy, ident):  # a run on the copy listed it too
        pass
    _change(base)
    _entries(cache, base, "new")
    prune_superseded(cache, base)
    assert all(p.exists() for p in shared)  # the copy, unchanged, still reads them

    _change(copy)
    with using(cache, copy, ident):  # a run on the copy (its earlier version) still reading them
        prune_superseded(cache, base)
        assert all(p.exists() for p in shared)
    prune_superseded(cache, base)
    assert not any(p.exists() for p in shared)


def test_entries_of_other_bases_are_left_to_their_own_runs(tmp_path):
    base, other, cache = _base(tmp_path / "base"), _base(tmp_path / "other"), tmp_path / "cache"
    theirs = _entries(cache, other, "other")
    _change(other)
    _change(base)
    prune_superseded(cache, base)
    assert all(p.exists() for p in theirs)
    prune_superseded(cache, other)
    assert not any(p.exists() for p in theirs)


def test_summary_names_the_folder_and_its_size(tmp_path):
    cache = tmp_path / "cache"
    (cache / "distill-0123456789abcdef-float32").mkdir(parents=True)
    (cache / "teacher-0123456789abcdef.safetensors").write_bytes(b"t" * (2 ** 30 // 100))
    (cache / "hidden-0123456789abcdef-float32-89abcdef01234567").mkdir()  # a teacher-forced pass's chunks
    (cache / "hidden-0123456789abcdef-float32-89abcdef01234567" / "00000-of-00001.safetensors").write_bytes(
        b"h" * (2 ** 30 // 100))
    line = summary(cache)
    assert line.startswith(f"training cache {cache}: 0.02 GiB in 3 entries") and "delete the folder" in line


def test_train_says_where_the_cache_is_and_removes_an_earlier_bases_entries(tmp_path):
    base = make_chat_base(tmp_path / "base")
    data = tmp_path / "qa.jsonl"
    data.write_text("\n".join(json.dumps({"question": f"{i}+1?", "answer": f"{i}+1 is {i + 1}."}) for i in range(6)))
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join(json.dumps({"prompt": q}) for q in ["Say hi.", "Count to 3.", "Why?"]))
    cache = tmp_path / "c"
    common = ["train", "--base", base, "--output", tmp_path / "out", "--cache-dir", cache, "--max-steps", "1",
              "--predict-n", "2", "--exit-dim", "16", "--base-dtype", "float32", "--force"]
    runs = [["--data", data], ["--data", prompts, "--distill", "--distill-max-new-tokens", "6"]]
    for run in runs:
        r = CliRunner().invoke(main, list(map(str, common + run)))
        assert r.exit_code == 0, r.output
        assert f"training cache {cache}: " in r.output
    first = sorted(p.name for p in cache.iterdir() if p.name != "bases")
    assert len(first) == 4  # hidden states and soft targets of the reference answers; answers, soft targets
    resaved(base / "model.safetensors")  # the base re-saved with other weights: another id
    for run in runs:
        r = CliRunner().invoke(main, list(map(str, common + run)))
        assert r.exit_code == 0, r.output
    second = sorted(p.name for p in cache.iterdir() if p.name != "bases")
    assert len(second) == 4 and not set(first) & set(second)


def test_a_file_system_without_locks_trains_and_prunes_nothing(tmp_path, monkeypatch):
    """flock fails with an OSError on some file systems (FUSE mounts): the run must not fail for the lock, and as
    nothing then says whether a run is using an id's entries, they are kept."""
    from redrafter_trt import locks

    def no_locks(fd, op):
        raise OSError(95, "Operation not supported")

    base, store = _base(tmp_path / "base"), tmp_path / "cache"
    monkeypatch.setattr(locks.fcntl, "flock", no_locks)
    old = _entries(store, base, "old")
    _change(base)
    prune_superseded(store, base)
    assert all(p.exists() for p in old)


def test_a_python_without_fcntl_trains_and_prunes_nothing(tmp_path):
    """Windows has no fcntl: `import redrafter_trt.train` failed there, so `train` was a traceback and the quickstart
    silently used an untrained drafter ("drafter training is unavailable"). Every lock then fails as on a file system
    without locks: runs go on, and nothing is pruned or swept while whether a run is using it is unknown."""
    import subprocess
    import sys

    base, store = _base(tmp_path / "base"), tmp_path / "cache"
    old = _entries(store, base, "old")
    _change(base)
    script = f"""
import sys
sys.modules["fcntl"] = None  # as on Windows: `import fcntl` raises ImportError
from pathlib import Path
from redrafter_trt.quickstart import training_api
from redrafter_trt.train import chunks
from redrafter_trt.train.cache import prune_superseded, using
from redrafter_trt.train.baseid import base_id
training_api()  # the training package imports
base, store = Path({str(base)!r}), Path({str(store)!r})
with using(store, base, base_id(base)):
    prune_superseded(store, base)
folder = store / "hidden-x"
with chunks.writing_into(folder):
    (folder / ".a.partial-999999999-0").write_text("a killed run's")
chunks.sweep_idle(folder)
assert (folder / ".a.partial-999999999-0").exists()
"""
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert all(p.exists() for p in old)


def test_a_lock_file_is_held_by_one_holder_at_a_time_and_names_it(tmp_path):
    """locks.holding (train's --output lock): a second holder is refused, told who holds it; the file and the folders
    made for it go when it is let go, and the next holder takes it."""
    from redrafter_trt.locks import LockHeld, holder_name, holding

    path = tmp_path / "new" / "out.train.lock"
    for _ in range(2):
        with holding(path):
            with pytest.raises(LockHeld) as e:
                with holding(path):
                    pass
            assert holder_name(e.value.holder) == f"process {os.getpid()}"
        assert not (tmp_path / "new").exists()


def test_a_lock_file_removed_before_it_is_locked_is_not_held(tmp_path, monkeypatch):
    """The holder letting go (removing the file) between our open and our flock: the removed file is not held, but
    the one made at `path` after, so a second holder is refused."""
    from redrafter_trt import locks

    path, real, once = tmp_path / "out.train.lock", locks.try_lock_exclusive, []

    def let_go_first(fd):
        if not once:
            once.append(1)
            os.unlink(path)  # what the earlier holder does as it lets go
        real(fd)

    monkeypatch.setattr(locks, "try_lock_exclusive", let_go_first)
    with locks.holding(path):
        monkeypatch.setattr(locks, "try_lock_exclusive", real)
        assert path.exists()
        with pytest.raises(locks.LockHeld):
            with locks.holding(path):
                pass


def test_a_killed_holders_longer_words_are_overwritten(tmp_path):
    """A killed holder's lock file (longer words than ours): held, it says this process and host alone."""
    import socket

    from redrafter_trt.locks import holding

    path = tmp_path / "out.train.lock"
    path.write_text("4000000 a-very-long-hostname-of-a-killed-run")
    with holding(path):
        assert path.read_text() == f"{os.getpid()} {socket.gethostname()}"
