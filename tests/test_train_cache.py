"""The training cache: train says where it is and how big, and removes the answers of an earlier version of a base
(another base id under the same folder) once no base it was made for can read them, unless a run is using them."""

from __future__ import annotations

import json
import logging
import os
import shutil

from click.testing import CliRunner

from redrafter_trt.cli import main
from redrafter_trt.train.cache import prune_superseded, summary, using
from redrafter_trt.train.dataset import base_id
from test_train_data import make_chat_base


def _base(folder):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"hidden_size": 8}')
    (folder / "model.safetensors").write_bytes(b"x" * 10)
    return folder


def _answers(cache, base, dtype="float32"):
    """A distill folder of `base` as it is now, used by a run on it (so listing it), with 1000 bytes of answers."""
    folder = cache / f"distill-{base_id(base)}-{dtype}"
    with using(folder, base):
        (folder / "hidden-x.safetensors").write_bytes(b"h" * 1000)
    return folder


def _change(base):
    (base / "config.json").write_text('{"hidden_size": 8, "rope_theta": 500000.0}')


def test_answers_of_an_earlier_version_of_the_base_are_removed(tmp_path, caplog):
    base, cache = _base(tmp_path / "base"), tmp_path / "cache"
    old = [_answers(cache, base, dtype) for dtype in ("float32", "bfloat16")]
    _change(base)
    new = _answers(cache, base)
    with caplog.at_level(logging.WARNING):
        prune_superseded(cache, base, new)
    assert not any(f.exists() for f in old) and new.exists()
    assert "the answers of an earlier version of" in caplog.text and "GiB freed" in caplog.text


def test_answers_another_base_can_still_read_or_a_run_is_using_are_kept(tmp_path):
    base, cache = _base(tmp_path / "base"), tmp_path / "cache"
    copy = tmp_path / "copy"
    shutil.copytree(base, copy)  # copy2 keeps the times: the same base id
    assert base_id(copy) == base_id(base)
    shared = _answers(cache, base)
    with using(shared, copy):  # listed by a run on the copy too
        pass
    _change(base)
    prune_superseded(cache, base, _answers(cache, base))
    assert shared.exists()  # the copy, unchanged, still reads it

    _change(copy)
    with using(shared, copy):  # a run on the copy (its earlier version) still reading them
        prune_superseded(cache, base, cache / "none")
        assert shared.exists()
    prune_superseded(cache, base, cache / "none")
    assert not shared.exists()


def test_answers_of_other_bases_and_unlisted_folders_are_kept(tmp_path):
    base, other, cache = _base(tmp_path / "base"), _base(tmp_path / "other"), tmp_path / "cache"
    theirs = _answers(cache, other)
    _change(other)
    unlisted = cache / "distill-0123456789abcdef-float32"  # an older version's folder: nothing says whose
    unlisted.mkdir()
    _change(base)
    prune_superseded(cache, base, _answers(cache, base))
    assert theirs.exists() and unlisted.exists()  # `other`'s own run removes theirs


def test_summary_names_the_folder_and_its_size(tmp_path):
    base, cache = _base(tmp_path / "base"), tmp_path / "cache"
    _answers(cache, base)
    (cache / "teacher-0123456789abcdef.safetensors").write_bytes(b"t" * (2 ** 30 // 100))
    line = summary(cache)
    assert line.startswith(f"training cache {cache}: 0.01 GiB in 2 entries") and "delete the folder" in line


def test_train_says_where_the_cache_is_and_removes_an_earlier_bases_answers(tmp_path):
    base = make_chat_base(tmp_path / "base")
    data = tmp_path / "prompts.jsonl"
    data.write_text("\n".join(json.dumps({"prompt": q}) for q in ["Say hi.", "Count to 3.", "Why?"]))
    args = ["train", "--base", base, "--data", data, "--output", tmp_path / "out", "--cache-dir", tmp_path / "c",
            "--distill", "--distill-max-new-tokens", "6", "--max-steps", "1", "--predict-n", "2", "--exit-dim", "16",
            "--base-dtype", "float32", "--force"]
    r = CliRunner().invoke(main, list(map(str, args)))
    assert r.exit_code == 0, r.output
    assert f"training cache {tmp_path / 'c'}: " in r.output
    (first,) = (tmp_path / "c").glob("distill-*")
    weights = base / "model.safetensors"
    os.utime(weights, (weights.stat().st_atime, weights.stat().st_mtime + 10))  # the base re-saved: another id
    r = CliRunner().invoke(main, list(map(str, args)))
    assert r.exit_code == 0, r.output
    (second,) = (tmp_path / "c").glob("distill-*")
    assert second != first
