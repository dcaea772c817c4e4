"""What identifies a base for train's caches and --resume (train/baseid.py): the contents of its files, not their
times, so that a base copied or moved to another disk keeps its cached answers and its interrupted run; each weight
file read once (a memo in the cache folder); the answers cached under the times-based id of versions up to 0.1.0
adopted."""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
import time

import pytest
import torch

from redrafter_trt.errors import ConfigError
from redrafter_trt.train import baseid, train_drafter
from redrafter_trt.train.baseid import base_id, stat_id
from redrafter_trt.train.cache import prune_superseded, using
from test_train_data import make_chat_base
from test_train_loop import _answers, _distilled, _interrupted
from tinymodels import lora_merged, resaved


@pytest.fixture(scope="module")
def chat(tmp_path_factory):
    """(a chat base, questions and answers to train a drafter for it on)."""
    folder = tmp_path_factory.mktemp("chat")
    data = folder / "qa.jsonl"
    data.write_text("\n".join(json.dumps({"question": f"What is {a} plus 2?", "answer": f"{a + 2}."})
                              for a in range(40)))
    return make_chat_base(folder / "base"), data


def _touched(folder, seconds=100):
    """Every file of `folder` with other times, as cp or rsync without -t leave a copy."""
    for f in folder.iterdir():
        st = f.stat()
        os.utime(f, ns=(st.st_atime_ns + seconds * 10 ** 9, st.st_mtime_ns + seconds * 10 ** 9))


def _reads(monkeypatch) -> list:
    """The weight files base_id reads, as it reads them."""
    read, real = [], baseid._sha256
    monkeypatch.setattr(baseid, "_sha256", lambda f, advance: read.append(f.name) or real(f, advance))
    monkeypatch.setattr(baseid, "_SEEN", {})  # what this process read before, forgotten
    return read


def test_a_copied_base_keeps_its_cached_answers_and_its_interrupted_run(chat, tmp_path):
    """A base copied to another disk (new times) counted as another base: its answers distilled anew for hours, and
    --resume refused the copy as another --base."""
    chat_base, qa_file = chat
    base, copy = tmp_path / "base", tmp_path / "copy"
    shutil.copytree(chat_base, base)
    cfg = _distilled(base, qa_file, tmp_path, max_steps=4, checkpoint_every=2)
    _interrupted(cfg, 2)
    answers = _answers(cfg)
    written = (answers / "answers.jsonl").read_text()
    shutil.copytree(base, copy)
    _touched(copy)
    moved = _distilled(copy, qa_file, tmp_path, max_steps=4, checkpoint_every=2, resume=True)
    assert _answers(moved) == answers
    train_drafter(moved)  # resumed, not refused
    assert (answers / "answers.jsonl").read_text() == written  # nothing answered anew
    assert [p.name for p in cfg.cache_dir.glob("distill-*")] == [answers.name]


def test_a_run_interrupted_under_version_0_1_0_resumes(chat, tmp_path):
    """Its state records the base under 0.1.0's id (stat_id): upgrading refused its --resume as another --base."""
    chat_base, qa_file = chat
    base = tmp_path / "base"
    shutil.copytree(chat_base, base)
    cfg = _distilled(base, qa_file, tmp_path, max_steps=4, checkpoint_every=2)
    _interrupted(cfg, 2)
    state = torch.load(cfg.state_path, weights_only=False)
    torch.save({**state, "base": stat_id(base)}, cfg.state_path)
    train_drafter(_distilled(base, qa_file, tmp_path, max_steps=4, checkpoint_every=2, resume=True))
    _interrupted(cfg, 2)  # one of another base: refused
    state = torch.load(cfg.state_path, weights_only=False)
    torch.save({**state, "base": "0123456789abcdef"}, cfg.state_path)
    with pytest.raises(ConfigError, match=re.escape("saved with different --base (its config, tokenizer or weight "
                                                    "files' contents)")):
        train_drafter(_distilled(base, qa_file, tmp_path, max_steps=4, checkpoint_every=2, resume=True))


def test_an_edited_weight_of_the_same_size_and_time_is_another_base(chat, tmp_path):
    chat_base = chat[0]
    base, cache = tmp_path / "base", tmp_path / "cache"
    shutil.copytree(chat_base, base)
    before = base_id(base, cache)
    weights = base / "model.safetensors"
    st = weights.stat()
    resaved(weights)
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert weights.stat().st_size == st.st_size and weights.stat().st_mtime_ns == st.st_mtime_ns
    assert base_id(base) != before
    assert base_id(base, cache) == base_id(base) != before  # the memo does not say it is as it was


def test_bases_of_the_same_shapes_written_at_once_or_lora_merged_are_other_bases(chat, tmp_path):
    chat_base = chat[0]
    copy = tmp_path / "copy"
    shutil.copytree(chat_base, copy)
    tuned = lora_merged(tmp_path, copy, "model.layers.0.self_attn.q_proj.weight")
    other = tmp_path / "other"
    shutil.copytree(copy, other)
    resaved(other / "model.safetensors")
    for f in other.iterdir():  # the very same times: written within one second, or by one cp -p
        st = (copy / f.name).stat()
        os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert len({base_id(copy), base_id(tuned), base_id(other)}) == 3


def test_each_weight_file_is_read_once_for_a_cache_folder(chat, tmp_path, monkeypatch):
    chat_base = chat[0]
    base, cache = tmp_path / "base", tmp_path / "cache"
    shutil.copytree(chat_base, base)
    cache.mkdir()
    (base / "pytorch_model.bin").write_bytes(b"y" * 100)  # two files: read at once
    reads = _reads(monkeypatch)
    ident = base_id(base, cache)
    assert sorted(reads) == ["model.safetensors", "pytorch_model.bin"]
    monkeypatch.setattr(baseid, "_SEEN", {})  # another process: the cache folder's memo
    assert base_id(base, cache) == ident and len(reads) == 2  # their stat unchanged: not read again
    os.utime(base / "pytorch_model.bin")
    assert base_id(base, cache) == ident and reads[2:] == ["pytorch_model.bin"]  # touched: read again, the same base
    assert base_id(base, tmp_path / "no cache") == ident and len(reads) == 3  # read once a process, memo or not
    monkeypatch.setattr(baseid, "_SEEN", {})
    assert base_id(base, tmp_path / "no cache") == ident and len(reads) == 5 and not (tmp_path / "no cache").exists()


def test_a_run_where_no_memo_can_be_kept_reads_the_base_once(chat, tmp_path, monkeypatch):
    """A run identifies its base five or six times (state, caches, held-out set, prune): where the memo could not be
    kept (its lock file unopenable: another user's, a read-only cache), each read every weight file again."""
    chat_base, qa_file = chat
    cfg = _distilled(chat_base, qa_file, tmp_path, max_steps=2)
    (cfg.cache_dir / "bases" / baseid.LOCK).mkdir(parents=True)
    reads = _reads(monkeypatch)
    train_drafter(cfg)
    assert reads == ["model.safetensors"]


def test_a_refused_run_leaves_no_cache_folder(chat, tmp_path):
    """Identifying the base for --resume's record (before the data was checked) made the cache folder and its memo
    for a run then refused."""
    from test_convert_errors import assert_one_line_error, run_cli

    chat_base = chat[0]
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "Hi"}) + "\n")
    result = run_cli("train", "--base", chat_base, "--data", prompts, "--output", tmp_path / "out", "--cache-dir",
                     tmp_path / "cache")
    assert_one_line_error(result, "prompts but no answers")
    assert not (tmp_path / "cache").exists()


def test_a_cache_without_file_locks_identifies_and_remembers(chat, tmp_path, monkeypatch):
    """Some FUSE mounts have no locks: each run then reads for itself, and the memo is kept all the same."""
    from redrafter_trt import locks

    monkeypatch.setattr(locks, "fcntl", None)
    chat_base = chat[0]
    cache = tmp_path / "cache"
    cache.mkdir()
    assert base_id(chat_base, cache) == base_id(chat_base)
    assert list(json.loads((cache / "bases" / baseid.MEMO).read_text())) == [
        str((chat_base / "model.safetensors").resolve())]


@pytest.mark.parametrize("memo", ["{not json", '["a list"]', '{"/x": "not a list", "/y": [1, 2]}', None])
def test_a_corrupt_or_unreadable_memo_is_computed_again(chat, tmp_path, monkeypatch, memo):
    chat_base = chat[0]
    base, cache = tmp_path / "base", tmp_path / "cache"
    shutil.copytree(chat_base, base)
    ident = base_id(base)
    path = cache / "bases" / baseid.MEMO
    path.parent.mkdir(parents=True)
    if memo is None:
        path.mkdir()  # neither readable nor replaceable: computed, not remembered
    else:
        path.write_text(memo)
    reads = _reads(monkeypatch)
    assert base_id(base, cache) == ident and reads == ["model.safetensors"]
    if memo is not None:
        assert list(json.loads(path.read_text())) == [str((base / "model.safetensors").resolve())]


def test_a_cache_folder_that_cannot_be_written_identifies_the_base_all_the_same(chat, tmp_path):
    chat_base = chat[0]
    taken = tmp_path / "a file"
    taken.write_text("")
    assert base_id(chat_base, taken) == base_id(chat_base)


def test_a_resume_does_not_make_the_interrupted_runs_deleted_cache_folder_again(chat, tmp_path):
    """The resume looks for the base's answers in the interrupted run's --cache-dir too, identifying the base there."""
    chat_base, qa_file = chat
    cfg = _distilled(chat_base, qa_file, tmp_path, max_steps=4, checkpoint_every=2)
    _interrupted(cfg, 2)
    shutil.rmtree(cfg.cache_dir)
    train_drafter(_distilled(chat_base, qa_file, tmp_path, max_steps=4, checkpoint_every=2, resume=True,
                             cache_dir=tmp_path / "new"))
    assert not cfg.cache_dir.exists()


def test_runs_identifying_a_base_in_one_cache_take_turns(chat, tmp_path, monkeypatch):
    """torchrun's ranks each read the whole base at once (140 GB for a 70B one): one reads while the others wait,
    then find its digests in the memo."""
    chat_base = chat[0]
    import fcntl

    base, cache = tmp_path / "base", tmp_path / "cache"
    shutil.copytree(chat_base, base)
    (cache / "bases").mkdir(parents=True)
    reads = _reads(monkeypatch)
    with open(cache / "bases" / baseid.LOCK, "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # one rank identifying it
        ids = []
        ranks = [threading.Thread(target=lambda: ids.append(base_id(base, cache))) for _ in range(3)]
        for rank in ranks:
            rank.start()
        time.sleep(0.3)
        assert not ids and not reads  # waiting
    for rank in ranks:
        rank.join()
    assert len(set(ids)) == 1 and len(ids) == 3 and reads == ["model.safetensors"]


def test_stat_id_is_what_version_0_1_0_named_the_base(tmp_path):
    (tmp_path / "config.json").write_text('{"hidden_size": 8}')
    (tmp_path / "model.safetensors").write_bytes(b"x" * 10)
    (tmp_path / "tokenizer.json").write_text("{}")
    os.utime(tmp_path / "model.safetensors", ns=(1_700_000_000_123_456_789, 1_700_000_000_123_456_789))
    assert stat_id(tmp_path) == "3b3b282c0d3aaa4d"  # 0.1.0's dataset.base_id of this folder


def _old_cache(cache, base):
    """A cache written by 0.1.0 on `base`: its answers and hidden states under stat_id, the base listed for it."""
    old = stat_id(base)
    with using(cache, base, old):
        (cache / f"distill-{old}-float32").mkdir()
        (cache / f"distill-{old}-float32" / "answers.jsonl").write_text("{}\n")
        (cache / f"hidden-{old}-float32-key").mkdir()
    return old


def test_answers_cached_under_the_old_id_are_adopted_and_the_rest_pruned(chat, tmp_path):
    """Upgrading from 0.1.0 once removed every cached answer of an unchanged base as an earlier version's (its id
    had changed): hours of distilling lost. They are renamed to its new id; the hidden states keyed by the old id
    (never read again) go as before."""
    chat_base = chat[0]
    base, cache = tmp_path / "base", tmp_path / "cache"
    shutil.copytree(chat_base, base)
    old = _old_cache(cache, base)
    ident = base_id(base, cache)
    assert ident != old
    assert (cache / f"distill-{ident}-float32" / "answers.jsonl").read_text() == "{}\n"
    assert not (cache / f"distill-{old}-float32").exists()
    with using(cache, base, ident):
        pass
    prune_superseded(cache, base)
    assert sorted(p.name for p in cache.iterdir()) == ["bases", f"distill-{ident}-float32"]


def test_another_base_of_the_same_old_id_does_not_take_its_answers(chat, tmp_path):
    """Two bases of one config, tokenizer, sizes and times (a tar extract, normalised build times) had one 0.1.0 id:
    the answers cached for the one listed under it are not the other's."""
    chat_base = chat[0]
    base, other, cache = tmp_path / "base", tmp_path / "other", tmp_path / "cache"
    shutil.copytree(chat_base, base)
    shutil.copytree(chat_base, other)
    resaved(other / "model.safetensors")
    for f in other.iterdir():
        st = (base / f.name).stat()
        os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    old = _old_cache(cache, base)
    assert stat_id(other) == old and base_id(other, cache) != base_id(base)
    assert (cache / f"distill-{old}-float32").is_dir()  # not the other's
    assert (cache / f"distill-{base_id(base, cache)}-float32").is_dir()  # the listed base's


def test_answers_under_the_old_id_that_a_run_uses_are_left(chat, tmp_path):
    chat_base = chat[0]
    base, cache = tmp_path / "base", tmp_path / "cache"
    shutil.copytree(chat_base, base)
    old = _old_cache(cache, base)
    with using(cache, base, old):  # a run of 0.1.0 on it
        ident = base_id(base, cache)
        prune_superseded(cache, base)
    assert (cache / f"distill-{old}-float32").is_dir() and not (cache / f"distill-{ident}-float32").exists()
    assert base_id(base, cache) == ident and (cache / f"distill-{ident}-float32").is_dir()  # adopted once it is done
