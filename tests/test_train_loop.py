"""The training loop on a tiny random Llama: loss goes down, the saved drafter loads, seeds and --resume
reproduce an uninterrupted run bit for bit, and the pruned head's loss is the full-vocabulary loss."""

from __future__ import annotations

import contextlib
import json
import math
import random
import re
from pathlib import Path

import pytest
import torch

from redrafter_trt import __version__
from redrafter_trt.base_sample import record_base_sample
from redrafter_trt.drafter import load_drafter
from redrafter_trt.train import TrainConfig, features, objective, train_drafter
from redrafter_trt.train.objective import FusedCrossEntropy, Head, Teacher
from test_train_data import make_chat_base


@pytest.fixture(scope="module")
def chat_base(tmp_path_factory):
    return make_chat_base(tmp_path_factory.mktemp("chat_base"))


@pytest.fixture(scope="module")
def qa_file(tmp_path_factory):
    r = random.Random(0)
    path = tmp_path_factory.mktemp("data") / "qa.jsonl"
    with path.open("w") as f:
        for _ in range(80):
            a, b = r.randint(1, 60), r.randint(1, 60)
            f.write(json.dumps({"question": f"What is {a} plus {b}?",
                                "answer": f"{a} plus {b} is {a + b}. The answer is {a + b}."}) + "\n")
    return path


def _cfg(chat_base, qa_file, tmp_path, **kw):
    """force: these tests run again over the drafter a run before wrote (resumes, reruns)."""
    base = dict(base=chat_base, data=[qa_file], output=tmp_path / "drafter", cache_dir=tmp_path / "cache",
                batch_size=64, max_steps=8, checkpoint_every=4, lr=3e-3, predict_n=3, seed=1, force=True)
    return TrainConfig(**{**base, **kw})


def _tensors(folder):
    return load_drafter(folder)[1]


def test_learning_rate_warms_up_linearly_over_5_percent_then_falls_as_a_cosine_to_zero():
    from redrafter_trt.train.steps import learning_rate

    # 40 steps: warm-up over 2 (40 // 20), then a cosine over the 38 after it
    assert [learning_rate(s, 40, 2.0) for s in (0, 1, 2)] == [1.0, 2.0, 2.0]
    assert learning_rate(21, 40, 2.0) == pytest.approx(1.0)  # halfway down the cosine
    assert learning_rate(40, 40, 2.0) == pytest.approx(0.0, abs=1e-12)
    assert learning_rate(3, 40, 2.0) == pytest.approx(1.0 + math.cos(math.pi / 38))
    assert learning_rate(0, 10, 2.0) == 2.0  # fewer than 20 steps: one step of warm-up


def test_loss_decreases_and_drafter_loads(chat_base, qa_file, tmp_path):
    losses = []
    cfg = _cfg(chat_base, qa_file, tmp_path, max_steps=60)
    out = train_drafter(cfg, on_progress=lambda p: p.stats and losses.append(p.stats.loss))
    assert len(losses) == 60
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5
    dcfg, tensors = load_drafter(out)
    assert dcfg.predict_n == 3 and dcfg.exit_dim == 64 and dcfg.rnn
    meta = json.loads((out / "config.json").read_text())["producer"]
    assert meta["heldout"]["anchors"] > 0 and len(meta["heldout"]["top1"]) == 3
    assert (meta["version"], meta["command"]) == (__version__, "train")  # init-drafter's and convert's have them
    assert meta["sources"]["data"] == [str(Path(qa_file).resolve())]
    assert meta["base_sample"] == record_base_sample(chat_base)  # what convert compares with --base
    # the head keeps only the rows of tokens in the data: the others are exactly zero
    head = tensors["lm_head.1.weight"]
    zero_rows = (head == 0).all(1)
    assert 0 < int(zero_rows.sum()) < head.shape[0]
    assert zero_rows.sum() == head.shape[0] - meta["head_rows_kept"]


def test_same_seed_same_drafter_other_seed_differs(chat_base, qa_file, tmp_path, monkeypatch):
    torch.manual_seed(123)  # the caller's random state: train seeds its own, and once reset the caller's
    expected = torch.rand(3, generator=torch.Generator().manual_seed(123))
    a = _tensors(train_drafter(_cfg(chat_base, qa_file, tmp_path / "a")))
    assert torch.equal(torch.rand(3), expected)
    b = _tensors(train_drafter(_cfg(chat_base, qa_file, tmp_path / "b")))
    c = _tensors(train_drafter(_cfg(chat_base, qa_file, tmp_path / "c", seed=2)))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    # a second run on a's cache reads the hidden states and soft targets it computed (hours for a real recipe, as long
    # as they record this run's device and dtype): the same drafter
    assert len(list((tmp_path / "a" / "cache").glob("teacher-*/*.safetensors"))) == 1
    monkeypatch.setattr(objective, "top_k", lambda *a, **k: pytest.fail("the soft targets were recomputed"))
    monkeypatch.setattr(features, "compute_hidden", lambda *a, **k: pytest.fail("the hidden states were recomputed"))
    again = _tensors(train_drafter(_cfg(chat_base, qa_file, tmp_path / "a", output=tmp_path / "again")))
    assert all(torch.equal(a[k], again[k]) for k in a)



def test_soft_targets_cached_under_an_earlier_versions_key_are_read(chat_base, qa_file, tmp_path, monkeypatch,
                                                                   caplog):
    """Versions before session 45 kept the soft targets in one `teacher-KEY.safetensors`, the key naming the kind of
    device too; the key dropped the device (one cache whatever computed it), and such a file is read (not computed
    again: hours for an 8B base's head): one of this kind of device quietly, one of another with the warning naming
    it."""
    import hashlib
    import logging
    import shutil

    from redrafter_trt.io import read_safetensors, write_safetensors

    keyed, real_key = [], objective.cache_key
    monkeypatch.setattr(objective, "cache_key", lambda *a: keyed.append(a) or real_key(*a))
    first = _tensors(train_drafter(_cfg(chat_base, qa_file, tmp_path, max_steps=4, full_vocab=True)))
    cache = tmp_path / "cache"
    (folder,) = cache.glob("teacher-*")
    bid, examples = keyed[-1]
    assert objective.soft_target_cache(cache, bid, examples, None, torch.device("cuda"))[0] == folder  # whatever computes
    (chunk,) = folder.glob("*.safetensors")
    saved = read_safetensors(chunk)
    shutil.rmtree(folder)  # as a version before session 45 left the cache

    def earlier_key(device: str) -> str:  # as train keyed them before (the whole vocabulary kept)
        key = hashlib.sha1(f"{real_key(bid, examples)} 16 {device}".encode())
        key.update(b"all")
        return key.hexdigest()[:16]

    monkeypatch.setattr(objective, "top_k", lambda *a, **k: pytest.fail("the soft targets were computed again"))
    for device, warned in (("cuda", True), ("cpu", False)):
        single = cache / f"teacher-{earlier_key(device)}.safetensors"
        write_safetensors(single, {"ids": saved["ids"], "probs": saved["probs"]}, {"base_id": bid.split("-")[0]})
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            again = _tensors(train_drafter(_cfg(chat_base, qa_file, tmp_path, max_steps=4, full_vocab=True,
                                                output=tmp_path / device)))
        assert all(torch.equal(first[k], again[k]) for k in first)
        assert ("soft targets computed on cuda, not cpu" in caplog.text) == warned
        assert (str(single) in caplog.text) == warned and not folder.exists()
        single.unlink()


class Stop(Exception):
    pass


@pytest.mark.parametrize("exc, saved_at", [(KeyboardInterrupt, 6), (Stop, 4)])
def test_resume_matches_uninterrupted_run(chat_base, qa_file, tmp_path, exc, saved_at):
    whole = _tensors(train_drafter(_cfg(chat_base, qa_file, tmp_path / "whole")))

    def interrupt(p):
        if p.stage == "train" and p.done == 6:
            raise exc()

    cfg = _cfg(chat_base, qa_file, tmp_path / "cut")
    with pytest.raises(exc):
        train_drafter(cfg, on_progress=interrupt)
    assert not cfg.output.exists()
    assert torch.load(cfg.state_path, weights_only=True)["step"] == saved_at  # Ctrl-C saves; a crash keeps the last checkpoint
    steps = []
    cfg.resume = True
    resumed = _tensors(train_drafter(cfg, on_progress=lambda p: p.stats and steps.append(p.done)))
    assert steps == list(range(saved_at + 1, 9))
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)


@pytest.fixture
def python_ctrl_c():
    """Python's own Ctrl-C handler, even where pytest runs as a shell's background job (SIGINT ignored there)."""
    import signal

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_inside_the_optimizer_update_still_resumes_bit_identically(chat_base, qa_file, tmp_path, monkeypatch,
                                                                          python_ctrl_c):
    """A Ctrl-C that landed inside AdamW's update (a few Python-level foreach ops) was raised there: the state was
    saved as the step before but held that step's update, so the resumed drafter differed from an uninterrupted
    run's (1 in 10 random Ctrl-Cs on the tiny model)."""
    import signal

    whole = _tensors(train_drafter(_cfg(chat_base, qa_file, tmp_path / "whole")))
    real, calls = torch.optim.AdamW.step, []

    def step_then_ctrl_c(self, *a, **k):
        out = real(self, *a, **k)
        calls.append(1)
        if len(calls) == 3:  # after the update's last op, before the loop counts it
            signal.raise_signal(signal.SIGINT)
        return out

    monkeypatch.setattr(torch.optim.AdamW, "step", step_then_ctrl_c)
    cfg = _cfg(chat_base, qa_file, tmp_path / "cut", checkpoint_every=100)
    with pytest.raises(KeyboardInterrupt):
        train_drafter(cfg)
    assert torch.load(cfg.state_path, weights_only=True)["step"] == 3
    monkeypatch.setattr(torch.optim.AdamW, "step", real)
    cfg.resume = True
    resumed = _tensors(train_drafter(cfg))
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)


def _raise_ctrl_c(real):
    def interrupt(*a, **k):
        raise KeyboardInterrupt
    return interrupt


def _signal_ctrl_c_then_run(real):
    import signal

    def ctrl_c_inside(*a, **k):  # the signal lands while the call runs
        signal.raise_signal(signal.SIGINT)
        return real(*a, **k)
    return ctrl_c_inside


@pytest.mark.parametrize("where, interrupting", [("evaluate", _raise_ctrl_c), ("save_state", _signal_ctrl_c_then_run)])
def test_ctrl_c_at_the_end_of_the_last_step_keeps_every_step(chat_base, qa_file, tmp_path, monkeypatch, python_ctrl_c,
                                                             caplog, where, interrupting):
    """evaluate: the state of the last step was saved only after the held-out evaluation and the drafter, so a Ctrl-C
    (or a full disk) there lost every step since the last checkpoint (up to 199); a review: the CLI then said only
    "interrupted", with no word of the saved state or --resume; it says both now.
    save_state: the last step's state was saved with Ctrl-C and SIGTERM free to land inside the save (seconds for a
    large drafter and its optimizer), losing every step since the last checkpoint, and --resume then said to run once
    without it."""
    from redrafter_trt.train import loop

    whole = _tensors(train_drafter(_cfg(chat_base, qa_file, tmp_path / "whole")))
    real = getattr(loop, where)
    monkeypatch.setattr(loop, where, interrupting(real))
    cfg = _cfg(chat_base, qa_file, tmp_path / "cut", checkpoint_every=100)
    with pytest.raises(KeyboardInterrupt), caplog.at_level("WARNING"):
        train_drafter(cfg)
    assert not cfg.output.exists() and torch.load(cfg.state_path, weights_only=True)["step"] == 8
    assert f"state saved after step 8 in {cfg.state_path}; pass --resume" in caplog.text
    monkeypatch.setattr(loop, where, real)
    steps = []
    cfg.resume = True
    resumed = _tensors(train_drafter(cfg, on_progress=lambda p: p.stats and steps.append(p.done)))
    assert steps == [] and all(torch.equal(whole[k], resumed[k]) for k in whole)


def test_prompts_without_answers_are_left_out_with_a_warning(chat_base, qa_file, tmp_path, caplog):
    """Without --distill, records with no assistant turn (a third of this file) were dropped without a word."""
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text(qa_file.read_text() + "".join(json.dumps({"prompt": f"Say {i}."}) + "\n" for i in range(40)))
    with caplog.at_level("WARNING"):
        train_drafter(_cfg(chat_base, mixed, tmp_path, max_steps=1))
    assert ("left out 40 of 118 conversations with no answer (no assistant turn, or blank ones or ones of weight 0; "
            "first: ") in caplog.text  # 2 duplicates
    assert "pass --distill" in caplog.text


def test_resume_refuses_other_objective_options(chat_base, qa_file, tmp_path):
    from redrafter_trt.errors import ConfigError

    train_drafter(_cfg(chat_base, qa_file, tmp_path, max_steps=4))
    other = tmp_path / "other.jsonl"
    other.write_text(qa_file.read_text().replace("The answer is", "So it is"))
    from redrafter_trt.train.config import cpu_has_native_bf16

    auto_dtype, other_dtype = ("bfloat16", "float32") if cpu_has_native_bf16() else ("float32", "bfloat16")
    # the same shapes and tokenizer, other weights: nothing but the base's id tells them apart (a review's mutant)
    other_base = make_chat_base(tmp_path / "other_base", seed=1)
    # each named as the option the user changed, with both values (it once said "different total", "arch")
    for change, named in [({"later_sharpness": 1.0}, "--later-sharpness (4.0 then, 1.0 now)"),
                          ({"base": other_base}, "--base (its config, tokenizer or weight files"),
                          ({"soft_target": 0.0}, "--soft-target (0.5 then, 0.0 now)"),
                          ({"step_decay": 1.0}, "--step-decay (0.8 then, 1.0 now)"),
                          ({"batch_size": 32}, "--batch-size (64 then, 32 now)"), ({"lr": 1.0}, "--lr (0.003 then, 1.0 now)"),
                          ({"seed": 2}, "--seed (1 then, 2 now)"),
                          ({"train_dtype": other_dtype}, f"--train-dtype ({auto_dtype} then, {other_dtype} now)"),
                          ({"train_head": False}, "--freeze-head:"), ({"max_examples": 50}, "--max-examples (all then, 50 now):"),
                          ({"data": [other]}, "--data (the files' contents)"),
                          ({"max_steps": 5}, "number of steps (--max-steps, --epochs) (4 then, 5 now)"),
                          # the drafter's shape named as the option changed (once all four, without values)
                          ({"predict_n": 2}, "--predict-n (3 then, 2 now):"),
                          ({"num_draft_layers": 2, "rnn": False}, "--num-draft-layers (1 then, 2 now), --rnn (on then, "
                                                                  "off now):"),
                          # once named only through what follows from them: the kept vocabulary, the examples
                          ({"full_vocab": True}, "--full-vocab (off then, on now):"),
                          ({"distill": True}, "--distill (off then, on now):"),
                          ({"eval_examples": 4}, "held-out examples (the default then, 4 now):")]:
        with pytest.raises(ConfigError, match=re.escape(f"saved with different {named}")):
            train_drafter(_cfg(chat_base, qa_file, tmp_path, resume=True, **{"max_steps": 4, **change}))


def test_a_resume_is_refused_before_any_work(chat_base, qa_file, tmp_path, monkeypatch):
    """A --resume with a changed option (or no state at all) was refused only after the examples were built: with
    --distill and a changed --distill-max-new-tokens, after the base had answered every prompt anew (an hour)."""
    from redrafter_trt.errors import ConfigError
    from redrafter_trt.train import loop

    train_drafter(_cfg(chat_base, qa_file, tmp_path, max_steps=4))
    monkeypatch.setattr(loop, "build_examples", lambda *a, **k: pytest.fail("examples built before the refusal"))
    for change, match in [({"distill_max_new_tokens": 16}, "saved with different --distill-max-new-tokens"),
                          ({"max_seq_len": 64}, re.escape("saved with different --max-seq-len (")),
                          ({"lr": 1.0}, "saved with different --lr"),
                          # only once every cached hidden state was read (minutes for a large distillation)
                          ({"predict_n": 2}, re.escape("saved with different --predict-n (3 then, 2 now)")),
                          ({"num_draft_layers": 2}, re.escape("different --num-draft-layers (1 then, 2 now)")),
                          ({"max_steps": 5}, re.escape("different number of steps (--max-steps, --epochs) (4 then, 5 "
                                                       "now)")),
                          # --distill: only after the base answered every prompt; --full-vocab: once the hidden
                          # states were cached; --eval-examples: once the examples were built
                          ({"distill": True}, re.escape("saved with different --distill (off then, on now)")),
                          ({"full_vocab": True}, re.escape("saved with different --full-vocab (off then, on now)")),
                          ({"eval_examples": 4}, re.escape("saved with different held-out examples (the default then, "
                                                           "4 now)")),
                          ({"output": tmp_path / "other"}, "no training state")]:
        with pytest.raises(ConfigError, match=match):
            train_drafter(_cfg(chat_base, qa_file, tmp_path, resume=True, **{"max_steps": 4, **change}))


def _distilled(chat_base, qa_file, tmp_path, **kw):
    return _cfg(chat_base, qa_file, tmp_path, **{"distill": True, "distill_max_new_tokens": 8,
                                                  "distill_batch_size": 16, "max_steps": 2, **kw})


def _answers(cfg) -> Path:
    """The folder of the base's answers in cfg's cache."""
    from redrafter_trt.train.dataset import distill_folder

    return distill_folder(cfg.cache_dir, cfg.base, cfg.torch_dtype(cfg.base_dtype, torch.device("cpu")))


def test_another_distill_batch_size_is_refused_only_while_answers_are_left(chat_base, qa_file, tmp_path):
    """In bfloat16 an answer depends on the prompts batched beside it, so a --resume with another
    --distill-batch-size was refused, even with every answer cached, where it can change nothing. It is taken then
    (and recorded); while the base has answers left to write it is refused, before the base writes any."""
    from redrafter_trt.errors import ConfigError

    cfg = _distilled(chat_base, qa_file, tmp_path)
    train_drafter(cfg)
    answered = sorted(_answers(cfg).glob("hidden-*"))
    train_drafter(_distilled(chat_base, qa_file, tmp_path, resume=True, distill_batch_size=8))
    assert torch.load(cfg.state_path, weights_only=True)["distill_batch_size"] == 8
    assert json.loads((cfg.output / "config.json").read_text())["producer"]["options"]["distill_batch_size"] == 8
    answered[0].unlink()  # its answers are left to write again
    lost = sum(f'"file": "{answered[0].name}"' in line for line in (_answers(cfg) / "answers.jsonl").open())
    with pytest.raises(ConfigError, match=re.escape(
            f"--resume: {cfg.state_path} was saved with different --distill-batch-size (8 then, 16 now), and the base "
            f"has {lost} answers to write (not in --cache-dir {cfg.cache_dir}), which other batches can change: "
            f"resume with --distill-batch-size 8, or start over without --resume")):
        train_drafter(_distilled(chat_base, qa_file, tmp_path, resume=True))
    assert sorted(_answers(cfg).glob("hidden-*")) == answered[1:]  # none written


def test_a_resume_on_a_new_cache_dir_is_refused_before_answering_anew(chat_base, qa_file, tmp_path):
    """A --resume given a new --cache-dir alone had the base answer every prompt anew (hours for a large base) before
    it found the answers the same (a resume as if nothing happened) or not (refused): it is refused at once, naming
    the interrupted run's --cache-dir, which holds them. Answers gone from there too are written anew, as before."""
    import shutil

    from redrafter_trt.errors import ConfigError

    cfg = _distilled(chat_base, qa_file, tmp_path)
    train_drafter(cfg)
    moved = _distilled(chat_base, qa_file, tmp_path, resume=True, cache_dir=tmp_path / "new")
    with pytest.raises(ConfigError, match=re.escape(
            f"--resume: 78 answers of the base that the interrupted run trained or scored on are not in --cache-dir "
            f"{tmp_path / 'new'} but in its {cfg.cache_dir}: pass --cache-dir {cfg.cache_dir} (or copy its distill-* "
            f"folders into {tmp_path / 'new'}), or start over without --resume")):
        train_drafter(moved)
    assert not _answers(moved).exists()  # none written
    shutil.copytree(_answers(cfg), _answers(moved))
    train_drafter(moved)  # copied: taken
    shutil.rmtree(tmp_path / "new")
    shutil.rmtree(cfg.cache_dir)
    train_drafter(moved)  # in no cache: answered anew, in the interrupted run's batches (the same answers here)
    assert list(_answers(moved).glob("hidden-*"))


def test_a_resume_without_distill_on_a_new_cache_dir_is_taken(chat_base, qa_file, tmp_path):
    """Without --distill the base answers only a few held-out prompts (seconds to write again), and the hidden states
    are recomputed in the new folder anyway: a --resume on a new --cache-dir was refused for those answers, naming the
    old folder. It is taken, the answers written anew there."""
    cfg = _cfg(chat_base, qa_file, tmp_path, max_steps=2)
    train_drafter(cfg)
    assert _answers(cfg).exists()  # the held-out prompts' answers
    moved = _cfg(chat_base, qa_file, tmp_path, max_steps=2, resume=True, cache_dir=tmp_path / "new")
    train_drafter(moved)
    assert list(_answers(moved).glob("hidden-*"))


def test_a_resume_on_other_training_examples_is_refused_naming_them(chat_base, qa_file, tmp_path, monkeypatch):
    """The state recorded no digest of the examples trained on: a resume whose examples differed (the base's answers
    distilled anew, in other batches or on another device) with the same steps per epoch and kept vocabulary went on
    silently on other data, and one where those differed was refused as a state of "an earlier version". A state
    saved before the digest (and --distill-batch-size) was recorded resumes as before."""
    import dataclasses

    from redrafter_trt.errors import ConfigError
    from redrafter_trt.train import loop

    cfg = _cfg(chat_base, qa_file, tmp_path, max_steps=4)
    train_drafter(cfg)
    build = loop.build_examples

    def answered_otherwise(*args, **kw):  # two answer tokens swapped: the same tokens, lengths and steps per epoch
        train, held = build(*args, **kw)
        ex = train[0]
        answer = [i for i, m in enumerate(ex.mask) if m]
        i, j = next((i, j) for i in answer for j in answer if ex.ids[i] != ex.ids[j])
        ids = list(ex.ids)
        ids[i], ids[j] = ids[j], ids[i]
        return [dataclasses.replace(ex, ids=tuple(ids)), *train[1:]], held

    monkeypatch.setattr(loop, "build_examples", answered_otherwise)
    features = loop.build_features  # refused before their hidden states are cached (minutes for a large distillation)
    monkeypatch.setattr(loop, "build_features", lambda *a, **k: pytest.fail("hidden states cached before the refusal"))
    cfg.resume = True
    with pytest.raises(ConfigError, match=re.escape("saved with different training examples (the data encodes to "
                                                    "other tokens")) as refused:
        train_drafter(cfg)
    assert "earlier version" not in str(refused.value)

    def trained_otherwise(*args, **kw):  # the same token ids, one answer token not trained on
        train, held = build(*args, **kw)
        ex = train[0]
        mask = list(ex.mask)
        mask[mask.index(True)] = False
        return [dataclasses.replace(ex, mask=tuple(mask)), *train[1:]], held

    monkeypatch.setattr(loop, "build_examples", trained_otherwise)
    with pytest.raises(ConfigError, match=re.escape("saved with different training examples (the data encodes to "
                                                    "other tokens")):
        train_drafter(cfg)
    monkeypatch.setattr(loop, "build_features", features)
    state = torch.load(cfg.state_path, weights_only=True)
    torch.save({k: v for k, v in state.items() if k != "examples"}, cfg.state_path)  # as saved before the digest
    monkeypatch.setattr(loop, "build_examples", lambda *a, **k: (lambda t, h: (t[: len(t) // 2], h))(*build(*a, **k)))
    with pytest.raises(ConfigError, match=r"different steps per epoch \(\d+ then, \d+ now: the training examples "
                                          r"differ\)") as refused:
        train_drafter(cfg)
    assert "earlier version" not in str(refused.value)
    monkeypatch.setattr(loop, "build_examples", build)
    torch.save({k: v for k, v in state.items() if k not in ("examples", "distill_batch_size")}, cfg.state_path)
    assert train_drafter(cfg).is_dir()


def test_a_corrupt_state_is_one_error_and_the_quickstart_starts_over(chat_base, qa_file, tmp_path, monkeypatch):
    """A state cut short (a full disk, a copy broken off) or not a state at all ended --resume in torch.load's
    traceback (RuntimeError, UnpicklingError), exit 1; the quickstart, which resumes its own recipe's state, too."""
    from redrafter_trt.errors import CorruptFileError
    from redrafter_trt.train import loop, resumable

    monkeypatch.setattr(loop, "build_examples", lambda *a, **k: pytest.fail("examples built before the refusal"))
    cfg = _cfg(chat_base, qa_file, tmp_path, resume=True)
    cfg.state_path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"step": 1}, cfg.state_path)
    whole = cfg.state_path.read_bytes()
    torch.save({"x": 1}, cfg.state_path)  # a whole PyTorch file, no state: read as one saved with other options
    other = cfg.state_path.read_bytes()
    for content in (whole[: len(whole) // 2], b"garbage" * 10, b"", other):
        cfg.state_path.write_bytes(content)
        with pytest.raises(CorruptFileError, match=f"{re.escape(str(cfg.state_path))} is truncated or not a "
                                                   f"training state .*: start over without --resume") as refused:
            train_drafter(cfg)
        assert "\n" not in str(refused.value)
        assert not resumable(cfg)
    assert "(no step saved)" in str(refused.value)


def test_a_state_that_does_not_fit_on_the_disk_is_one_error(chat_base, qa_file, tmp_path, monkeypatch):
    """torch.save says a failed write (a full disk) as a RuntimeError ("unexpected pos ..."), not an OSError: the
    first checkpoint on a full disk ended train in a traceback, exit 1. Its partial is removed, an earlier state kept."""
    import resource

    from redrafter_trt.errors import RedrafterError
    from redrafter_trt.train import loop

    def on_a_full_disk(*args):  # files past 4 KiB fail to grow while the state is saved (Python ignores SIGXFSZ)
        limits = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (4096, limits[1]))
        try:
            save_state(*args)
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, limits)

    save_state = loop.save_state
    monkeypatch.setattr(loop, "save_state", on_a_full_disk)
    cfg = _cfg(chat_base, qa_file, tmp_path, max_steps=4)
    with pytest.raises(RedrafterError, match=f"cannot save the training state {re.escape(str(cfg.state_path))} "
                                             f"\\(File too large\\): free disk space") as raised:
        train_drafter(cfg)
    assert "enforce fail" not in str(raised.value)  # torch's own text ("[enforce fail at inline_container.cc:672]")
    assert not cfg.state_path.exists() and not cfg.state_path.with_suffix(".partial").exists()


def test_a_state_that_cannot_be_written_says_why_not_free_disk_space(chat_base, qa_file, tmp_path):
    """A review: every failed torch.save was reported as a full disk (`free disk space in ...`), also a partial file
    that cannot be created (here a folder in its place; a folder unwritable for this user, likewise). The OS error is
    said, and the folder in the way kept."""
    from redrafter_trt.errors import RedrafterError

    cfg = _cfg(chat_base, qa_file, tmp_path, max_steps=4)
    in_the_way = cfg.state_path.with_suffix(".partial")
    in_the_way.mkdir(parents=True)
    with pytest.raises(RedrafterError, match=f"cannot save the training state {re.escape(str(cfg.state_path))} "
                                             f"\\({re.escape(str(in_the_way))}: Is a directory\\): check") as raised:
        train_drafter(cfg)
    assert "free disk space" not in str(raised.value) and in_the_way.is_dir()


def test_a_failed_save_without_an_os_error_drops_torchs_internal_text(chat_base, qa_file, tmp_path, monkeypatch):
    """A torch writer's failure that carries no OSError is said without its "[enforce fail at ...] . " prefix."""
    from redrafter_trt.errors import RedrafterError

    def failing_save(obj, f):
        raise RuntimeError(f"[enforce fail at inline_container.cc:{random.randint(1, 999)}] . unexpected pos 7 vs 3")

    monkeypatch.setattr(torch, "save", failing_save)
    cfg = _cfg(chat_base, qa_file, tmp_path, max_steps=4)
    with pytest.raises(RedrafterError, match=r"\(unexpected pos 7 vs 3\): check that .* is writable") as raised:
        train_drafter(cfg)
    assert "enforce fail" not in str(raised.value)


def test_a_base_head_holding_nan_is_named_not_the_learning_rate(chat_base, qa_file, tmp_path):
    """The base's lm_head (or tied embedding) is the drafter's start and the teacher's head: a NaN in it made the
    first loss NaN, and the error said to lower --lr. The base is named, and no drafter written."""
    import shutil

    from safetensors.torch import load_file, save_file

    from redrafter_trt.errors import TensorError

    base = tmp_path / "base"
    shutil.copytree(chat_base, base)
    t = load_file(base / "model.safetensors")
    head = "lm_head.weight" if "lm_head.weight" in t else "model.embed_tokens.weight"
    t[head][-1, 1] = float("nan")  # the last token's row: no text encodes it, so the hidden states stay finite
    save_file(t, base / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(TensorError, match=f"base {re.escape(str(base))}: {head} holds NaN or Inf"):
        train_drafter(_cfg(base, qa_file, tmp_path))
    assert not (tmp_path / "drafter").exists()


def test_a_resume_where_auto_dtypes_resolve_otherwise_is_refused(chat_base, qa_file, tmp_path, monkeypatch):
    """`auto` was compared as typed: a run resumed on a CPU without native bfloat16 (or another device) went on in
    float32 from bfloat16 state and caches, silently no longer the uninterrupted run."""
    from redrafter_trt.errors import ConfigError
    from redrafter_trt.train import config

    monkeypatch.setattr(config, "cpu_has_native_bf16", lambda: True)
    train_drafter(_cfg(chat_base, qa_file, tmp_path, max_steps=2))
    monkeypatch.setattr(config, "cpu_has_native_bf16", lambda: False)
    with pytest.raises(ConfigError, match=re.escape("--train-dtype (bfloat16 then, float32 now), --base-dtype "
                                                    "(bfloat16 then, float32 now)")):
        train_drafter(_cfg(chat_base, qa_file, tmp_path, max_steps=2, resume=True))
    resumed = train_drafter(_cfg(chat_base, qa_file, tmp_path, max_steps=2, resume=True, train_dtype="bfloat16",
                                 base_dtype="bfloat16"))  # the dtypes it ran in: accepted
    assert resumed.is_dir()


def test_a_new_run_never_resumes_an_older_runs_state(chat_base, qa_file, tmp_path):
    """A run without --resume that fails before its first checkpoint must not leave the older state to resume."""
    from redrafter_trt.errors import ConfigError

    cfg = _cfg(chat_base, qa_file, tmp_path, max_steps=4)
    train_drafter(cfg)
    assert cfg.state_path.exists()

    def crash(p):
        if p.stage == "train":
            raise Stop()

    with pytest.raises(Stop):
        train_drafter(_cfg(chat_base, qa_file, tmp_path, max_steps=4), on_progress=crash)
    with pytest.raises(ConfigError, match="no training state"):
        train_drafter(_cfg(chat_base, qa_file, tmp_path, max_steps=4, resume=True))


def test_a_rerun_without_resume_says_it_drops_an_interrupted_runs_steps(chat_base, qa_file, tmp_path, caplog):
    """A rerun that left out --resume (asked for by the interruption's own line) deleted the interrupted run's state
    and started over without a word at the default log level; an earlier finished run's state goes quietly."""
    import logging

    cfg = _cfg(chat_base, qa_file, tmp_path)
    _interrupted(cfg, 6)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="redrafter_trt.train.state"):
        train_drafter(_cfg(chat_base, qa_file, tmp_path))
    said = [r.getMessage() for r in caplog.records if r.name == "redrafter_trt.train.state"]
    assert said == [f"starting over: removed {cfg.state_path}, the state of an interrupted run after step 6 of 8 "
                    f"(--resume continues such a run)"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="redrafter_trt.train.state"):
        train_drafter(_cfg(chat_base, qa_file, tmp_path, output=tmp_path / "again"))  # the finished run's state is apart
        cfg.output.rename(tmp_path / "gone")
        train_drafter(_cfg(chat_base, qa_file, tmp_path))
    assert not [r for r in caplog.records if r.name == "redrafter_trt.train.state"]


def test_a_rerun_refused_for_its_data_keeps_the_interrupted_runs_state(chat_base, qa_file, tmp_path):
    """A rerun without --resume removed the interrupted run's state before it read its data: one refused for a bad
    --data file (exit 2) cost every step saved. Refused input now changes nothing; the state goes when training
    starts."""
    from redrafter_trt.errors import ConfigError

    cfg = _cfg(chat_base, qa_file, tmp_path)
    _interrupted(cfg, 6)
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(ConfigError, match="bad.json"):
        train_drafter(_cfg(chat_base, bad, tmp_path))
    assert torch.load(cfg.state_path, weights_only=True)["step"] == 6
    resumed = train_drafter(_cfg(chat_base, qa_file, tmp_path, resume=True))
    assert resumed.is_dir()


@pytest.mark.parametrize("resume", [False, True])
def test_a_second_run_on_the_same_output_is_refused_while_the_first_trains(chat_base, qa_file, tmp_path, resume):
    """A second run with the same --output removed the first's live state as an interrupted run's ('starting over:
    removed ...'), and each wrote its drafter over the other's, neither with --force; two --resume runs trained from
    one state. The second is now refused at once, naming the first's process, and the first goes on untouched."""
    import os

    from redrafter_trt.errors import ConfigError

    if resume:  # an interrupted run's state, which both resume
        _interrupted(_cfg(chat_base, qa_file, tmp_path, force=False), 5)
    refused = []

    def second(p):
        if p.stage == "train" and p.done == 6 and not refused:
            with pytest.raises(ConfigError) as e:
                train_drafter(_cfg(chat_base, qa_file, tmp_path, force=False, resume=resume))
            refused.append(str(e.value))

    cfg = _cfg(chat_base, qa_file, tmp_path, force=False, resume=resume)
    train_drafter(cfg, on_progress=second)
    assert refused == [f"another train (process {os.getpid()}) is writing --output {cfg.output} and its training "
                       f"state {cfg.state_path}: wait for it to end, or choose another --output"]
    assert json.loads((cfg.output / "config.json").read_text())["producer"]["steps"] == 8
    assert not cfg.output.with_name("drafter.train.lock").exists()  # only while a run holds it


def test_a_second_run_reaching_the_output_through_a_link_is_refused_too(chat_base, qa_file, tmp_path):
    """A review: the lock and the state were named after --output as typed, so a run writing `o5` through the link
    `L5` and one writing `o5` took two locks: both trained, the later refused at its end (or, with --force, replacing
    the other's drafter). They are named after the folder the output is written as."""
    from redrafter_trt.errors import ConfigError

    (tmp_path / "link").symlink_to(tmp_path / "drafter")
    refused = []

    def second(p):
        if p.stage == "train" and p.done == 6 and not refused:
            with pytest.raises(ConfigError) as e:
                train_drafter(_cfg(chat_base, qa_file, tmp_path, force=False))
            refused.append(str(e.value))

    cfg = _cfg(chat_base, qa_file, tmp_path, force=False, output=tmp_path / "link")
    train_drafter(cfg, on_progress=second)
    assert len(refused) == 1 and refused[0].startswith("another train (process "), refused
    assert cfg.state_path == tmp_path / "drafter.train-state.pt" and (tmp_path / "link").is_symlink()


def _interrupted(cfg, step: int) -> None:
    """Train `cfg`, interrupted (Ctrl-C) after `step`: its state saved there."""
    def interrupt(p):
        if p.stage == "train" and p.done == step:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_drafter(cfg, on_progress=interrupt)


def test_a_drafter_written_there_during_the_run_is_not_replaced_without_force(chat_base, qa_file, tmp_path):
    """save_drafter replaced the output whatever --force said: one another tool wrote there while the run trained
    (--output checked free when it started) went without a word. Refused now, the training kept for --resume."""
    from redrafter_trt.drafter import init_drafter_for_base
    from redrafter_trt.errors import ConfigError

    cfg = _cfg(chat_base, qa_file, tmp_path, force=False)

    def meanwhile(p):
        if p.stage == "train" and p.done == 8:
            init_drafter_for_base(chat_base, cfg.output, num_draft_layers=0)

    with pytest.raises(ConfigError, match=rf"--output {cfg.output} was written while this run trained: the training "
                                          rf"is saved in {cfg.state_path}; rerun with --resume --force"):
        train_drafter(cfg, on_progress=meanwhile)
    assert json.loads((cfg.output / "config.json").read_text())["producer"]["command"] == "init-drafter"
    train_drafter(_cfg(chat_base, qa_file, tmp_path, force=True, resume=True))
    assert json.loads((cfg.output / "config.json").read_text())["producer"]["command"] == "train"


def test_files_put_in_the_output_during_a_force_run_keep_the_training_for_resume(chat_base, qa_file, tmp_path):
    """--force over an earlier drafter, the user's notes put in it while the run trained: the refusal said to choose
    another --output, which cannot resume the training (its state file is named after --output). It says where the
    training is kept and to rerun with --resume --force, the same --output, once the folder is cleared."""
    from redrafter_trt.drafter import init_drafter_for_base
    from redrafter_trt.errors import ConfigError

    cfg = _cfg(chat_base, qa_file, tmp_path)
    init_drafter_for_base(chat_base, cfg.output, num_draft_layers=0)
    notes = cfg.output / "notes.md"

    def meanwhile(p):
        if p.stage == "train" and p.done == 8:
            notes.write_text("mine")

    with pytest.raises(ConfigError) as e:
        train_drafter(cfg, on_progress=meanwhile)
    assert str(e.value) == (f"--output {cfg.output} holds notes.md, put there while this run trained, which replacing "
                            f"the folder would delete: the training is saved in {cfg.state_path}; move it out and "
                            f"rerun with --resume --force and the same --output")
    assert notes.read_text() == "mine"
    notes.unlink()
    train_drafter(_cfg(chat_base, qa_file, tmp_path, resume=True))
    assert json.loads((cfg.output / "config.json").read_text())["producer"]["command"] == "train"


def test_a_diverging_run_stops_and_writes_no_drafter(chat_base, qa_file, tmp_path):
    """--lr 1e6 once trained on through NaN losses and wrote an all-NaN drafter with exit code 0."""
    from redrafter_trt.errors import ConfigError

    cfg = _cfg(chat_base, qa_file, tmp_path, lr=1e6, checkpoint_every=1)
    with pytest.raises(ConfigError, match=r"training diverged at step \d+ of 8 .*lower --lr \(now 1e\+06\)"):
        train_drafter(cfg)
    assert not cfg.output.exists()
    state = torch.load(cfg.state_path, weights_only=True)  # the last step before it diverged: finite
    assert all(torch.isfinite(t).all() for t in state["drafter"].values()) and torch.isfinite(state["head"]).all()


def test_a_state_save_failing_on_a_full_disk_leaves_no_partial_file(chat_base, qa_file, tmp_path, monkeypatch):
    """A state save that failed part way (a full disk) left its partial file, as large as the state (GBs for an 8B
    base's drafter and optimizer), holding the space the error asked the user to free."""
    real = torch.save

    from redrafter_trt.errors import RedrafterError

    def full_disk(obj, f, *a, **k):  # save_state opens the file and torch writes into it
        f.write(b"x" * 1000)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    cfg = _cfg(chat_base, qa_file, tmp_path, checkpoint_every=2)
    with pytest.raises(RedrafterError, match=r"\(No space left on device\): free disk space"):
        train_drafter(cfg)
    monkeypatch.setattr(torch, "save", real)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]


def test_soft_targets_with_fewer_kept_tokens_than_k():
    """Tiny data keeps fewer head rows than the teacher's top 16: topk once failed with 'index k out of range'."""
    from redrafter_trt.train.features import Features
    from redrafter_trt.train.objective import Teacher

    feats = Features(torch.zeros(8, dtype=torch.long), torch.ones(8, dtype=torch.bool), torch.arange(4),
                     torch.randn(4, 6))
    teacher = Teacher.from_features(feats, torch.randn(3, 6), k=16, weight=0.5)
    assert teacher.ids.shape == teacher.probs.shape == (4, 3)


def test_batches_cover_every_anchor_of_a_larger_shard_and_take_any_seed():
    """Under torchrun every rank takes the steps the smallest shard gives; a rank with more anchors draws them
    from all of its own, a fresh permutation each epoch. Any --seed up to 2**63 - 1 works."""
    from redrafter_trt.train.steps import batch_anchors, steps_per_epoch

    n, per_epoch, batch = 888, steps_per_epoch(612, 64), 64
    seen = torch.cat([batch_anchors(step, n, per_epoch, batch, seed=1, rank=0) for step in range(per_epoch * 12)])
    assert seen.max() < n and len(set(seen.tolist())) == n  # 12 epochs: all 888 anchors, not only the first 612
    assert not torch.equal(batch_anchors(0, n, per_epoch, batch, 1, rank=0),
                           batch_anchors(0, n, per_epoch, batch, 1, rank=1))
    assert len(batch_anchors(5, n, per_epoch, batch, seed=2 ** 63 - 1)) == batch
    # the order follows --seed: the same seed, the same batches; another, others
    assert torch.equal(batch_anchors(3, n, per_epoch, batch, 1), batch_anchors(3, n, per_epoch, batch, 1))
    for other in (0, 2):
        assert not torch.equal(batch_anchors(3, n, per_epoch, batch, 1), batch_anchors(3, n, per_epoch, batch, other))


def test_pruned_head_loss_is_the_full_vocabulary_loss():
    torch.manual_seed(0)
    V, E, R = 50, 8, 12
    weight = torch.randn(V, E)
    keep = torch.tensor([1, 3, 4, 10, 20, 33, 49])
    full = torch.zeros(V, E)
    full[keep] = weight[keep]
    targets = keep[torch.randint(0, len(keep), (R,))]
    targets[0] = 7  # a dropped token: logit 0 in the saved drafter
    feats = torch.randn(R, E, requires_grad=True)
    w = torch.rand(R)
    head = Head.pruned(weight, keep, trainable=True)
    loss, correct = FusedCrossEntropy.apply(feats, head.weight, head.targets(targets), w, head.n_zero, 5)
    loss.backward()
    ref_feats = feats.detach().clone().requires_grad_(True)
    ref_w = full.clone().requires_grad_(True)
    logits = ref_feats @ ref_w.T
    ref = (w * torch.nn.functional.cross_entropy(logits, targets, reduction="none")).sum()
    ref.backward()
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(feats.grad, ref_feats.grad)
    torch.testing.assert_close(head.weight.grad, ref_w.grad[keep])
    assert torch.equal(correct, logits.argmax(-1) == targets)
    assert torch.equal(head.full_weight(), full)


def test_a_pruned_heads_best_kept_row_is_correct_only_above_the_dropped_rows_zero_logit():
    """The dropped rows' logits are 0 in the saved drafter: a kept row whose logit is the highest of the kept rows
    but below 0 is not what the drafter proposes."""
    weight = torch.tensor([[-1.0], [-2.0], [-3.0]])  # three kept rows; four dropped ones
    feats = torch.tensor([[1.0], [-1.0]])  # logits [-1, -2, -3] (all below 0), then [1, 2, 3]
    _, correct = FusedCrossEntropy.apply(feats, weight, torch.tensor([0, 2]), torch.ones(2), 4, 5)
    assert correct.tolist() == [False, True]
    _, correct = FusedCrossEntropy.apply(feats, weight, torch.tensor([0, 2]), torch.ones(2), 0, 5)
    assert correct.tolist() == [True, True]  # nothing dropped: the best row is the argmax whatever its sign


def test_step_accuracies_count_only_each_steps_valid_rows():
    from redrafter_trt.train.objective import StepResult

    # three anchors, two draft steps; the last two anchors have no step 1 (their answer ended)
    res = StepResult(torch.zeros(()), correct=torch.tensor([[True, True], [True, False], [False, False]]),
                     valid=torch.tensor([[True, True], [True, False], [True, False]]))
    assert res.top1() == pytest.approx([2 / 3, 1.0])
    assert res.chained() == pytest.approx([2 / 3, 1.0])
    # chained: a step right after a wrong one counts for top-1, not for the chain (a draft stops at its first miss)
    res = StepResult(torch.zeros(()), correct=torch.tensor([[False, True], [True, True]]),
                     valid=torch.tensor([[True, True], [True, True]]))
    assert res.top1() == pytest.approx([0.5, 1.0])
    assert res.chained() == pytest.approx([0.5, 0.5])


def _one_peer_rank(monkeypatch, peer: torch.Tensor) -> None:
    """loop's all_reduce as if one other torchrun rank held `peer` (sum, min or max of the two, in place)."""
    from redrafter_trt.train import loop

    ops = {torch.distributed.ReduceOp.SUM: torch.add, torch.distributed.ReduceOp.MIN: torch.minimum,
           torch.distributed.ReduceOp.MAX: torch.maximum}

    def all_reduce(t, op=None):
        t.copy_(ops[torch.distributed.ReduceOp.SUM if op is None else op](t, peer.to(t.dtype)))

    monkeypatch.setattr(loop, "all_reduce", all_reduce)


def test_every_rank_takes_the_steps_of_the_fewest_anchors_any_rank_holds(monkeypatch):
    from redrafter_trt.train.loop import _fewest_anchors

    assert _fewest_anchors(9, 1, torch.device("cpu")) == 9
    _one_peer_rank(monkeypatch, torch.tensor([5]))
    assert _fewest_anchors(9, 2, torch.device("cpu")) == 5
    _one_peer_rank(monkeypatch, torch.tensor([12]))
    assert _fewest_anchors(9, 2, torch.device("cpu")) == 9


def test_rank_0_alone_saves_the_state_every_checkpoint_every_steps():
    from redrafter_trt.train.loop import _checkpoint_due

    assert [d for d in range(1, 10) if _checkpoint_due(0, d, 4)] == [4, 8]
    assert not any(_checkpoint_due(1, d, 4) for d in range(1, 10))


@pytest.mark.parametrize("peer_tokens", [None, [11, 12]])
def test_the_kept_head_rows_are_every_ranks_tokens_prompts_too_and_eos(monkeypatch, peer_tokens):
    """The pruned head keeps the rows of every token of the training examples (their prompts too: the runtime drafts
    after them) and EOS, the union over torchrun's ranks (a token one rank saw is kept on every rank)."""
    from types import SimpleNamespace

    from redrafter_trt.train.data import Example
    from redrafter_trt.train.features import Features, flatten
    from redrafter_trt.train.loop import _seen_tokens

    tokens, mask, anchors, _ = flatten([Example((3, 4, 7, 8, 9), (False, False, True, True, True))], tail=3)
    feats = Features(tokens, mask, anchors, torch.zeros(len(anchors), 4))
    world, expected = 1, {0, 2, 3, 4, 7, 8, 9}  # 0: the sentinel after each example; 2: EOS; 3, 4: the prompt
    if peer_tokens:
        peer = torch.zeros(20, dtype=torch.uint8)
        peer[peer_tokens] = 1
        _one_peer_rank(monkeypatch, peer)
        world, expected = 2, expected | set(peer_tokens)
    assert _seen_tokens(feats, SimpleNamespace(eos_token_id=2), 20, world).tolist() == sorted(expected)


def test_soft_targets_are_cached_apart_for_other_kept_head_rows(tmp_path):
    """The soft targets are a softmax over the kept head rows: a --full-vocab run (all rows) or one keeping other
    tokens must not read a pruned run's."""
    from redrafter_trt.train.data import Example

    examples = [Example((1, 2, 3, 4), (False, True, True, True))]

    def folder(keep):
        return objective.soft_target_cache(tmp_path, "base", examples, keep, torch.device("cpu"))[0]

    folders = {folder(None), folder(torch.tensor([1, 2, 3, 4])), folder(torch.tensor([1, 2, 3, 5]))}
    assert len(folders) == 3
    assert folder(torch.tensor([1, 2, 3, 4])) == folder(torch.tensor([1, 2, 3, 4]))


def test_bfloat16_products_keep_loss_and_gradients_float32_and_close():
    """mm_dtype=bfloat16: only the three products run in bfloat16; loss and gradients come back float32 and
    within bfloat16's rounding of the float32 result (a wrong gradient would be off by far more)."""
    torch.manual_seed(2)
    Vc, E, R, K = 300, 64, 40, 4
    weight = torch.randn(Vc, E, requires_grad=True)
    feats = torch.randn(R, E, requires_grad=True)
    targets = torch.randint(0, Vc, (R,))
    soft = (torch.stack([torch.randperm(Vc)[:K] for _ in range(R)]), torch.softmax(torch.randn(R, K), -1) * 0.5)
    w = torch.rand(R)
    grads = []
    for mm in (None, torch.bfloat16):
        f, wt = feats.detach().clone().requires_grad_(True), weight.detach().clone().requires_grad_(True)
        loss, _ = FusedCrossEntropy.apply(f, wt, targets, w, 7, 16, soft, mm)
        loss.backward()
        assert loss.dtype == f.grad.dtype == wt.grad.dtype == torch.float32
        grads.append((loss, f.grad, wt.grad))
    for ref, got in zip(*grads):
        assert ((got - ref).norm() / ref.norm()).item() < 0.05  # measured: 1e-6 (loss), 0.011 (gradients)


def test_soft_targets_are_the_mixed_distribution_cross_entropy():
    """(1 - sum p) one-hot(target) + sum_j p_j one-hot(id_j): loss and both gradients equal autograd's."""
    torch.manual_seed(1)
    Vc, E, R, K = 30, 8, 10, 4
    weight = torch.randn(Vc, E, requires_grad=True)
    feats = torch.randn(R, E, requires_grad=True)
    targets = torch.randint(0, Vc, (R,))
    ids = torch.stack([torch.randperm(Vc)[:K] for _ in range(R)])
    probs = torch.softmax(torch.randn(R, K), -1) * torch.rand(R, 1)  # each row's soft share in [0, 1)
    probs[0] = 0  # a row without soft targets stays one-hot
    w = torch.rand(R)
    loss, _ = FusedCrossEntropy.apply(feats, weight, targets, w, 0, 3, (ids, probs))
    loss.backward()
    ref_feats, ref_weight = feats.detach().clone().requires_grad_(True), weight.detach().clone().requires_grad_(True)
    dist = torch.zeros(R, Vc)
    dist[torch.arange(R), targets] = 1 - probs.sum(1)
    dist.scatter_add_(1, ids, probs)
    ref = (w * -(dist * torch.log_softmax(ref_feats @ ref_weight.T, -1)).sum(1)).sum()
    ref.backward()
    torch.testing.assert_close(loss, ref)
    torch.testing.assert_close(feats.grad, ref_feats.grad)
    torch.testing.assert_close(weight.grad, ref_weight.grad)


def test_teacher_rows_line_up_with_draft_steps():
    """Drafter step i of anchor t predicts token t+i+2: its soft target is the base's distribution at position
    t+i+1, the anchor row t+i+1; a position that is not an anchor (the answer ended) gets no soft target."""
    from redrafter_trt.train.features import Features
    from redrafter_trt.train.objective import Teacher

    anchors = torch.tensor([3, 4, 5, 6, 10, 11])
    hidden = torch.eye(6)  # anchor a's base distribution peaks on kept row a
    feats = Features(torch.zeros(20, dtype=torch.long), torch.ones(20, dtype=torch.bool), anchors, hidden)
    teacher = Teacher.from_features(feats, 20 * torch.eye(6), k=2, weight=0.5)
    ids, probs = teacher.for_steps(feats, torch.tensor([0, 4]), k=3)
    assert ids[0, :, 0].tolist() == [1, 2, 3]  # anchor 3: positions 4, 5, 6
    assert ids[1, 0, 0].item() == 5  # anchor 10: position 11
    torch.testing.assert_close(probs[0].sum(-1), torch.full((3,), 0.5))
    assert probs[1, 1:].abs().sum() == 0  # positions 12, 13 are not anchors


def test_later_sharpness_and_step_decay_against_plain_torch():
    """later_sharpness S: step 0's loss is plain cross-entropy on the drafter's logits, steps 1.. are scored on
    logits / S (so training drives their raw logits S times sharper); the accuracies do not change (argmax).
    step_decay d: step i's mean cross-entropy weighs d**i, the weights scaled to sum to k."""
    from redrafter_trt.drafter import init_drafter
    from redrafter_trt.train.features import Features
    from redrafter_trt.train.objective import drafter_step

    torch.manual_seed(3)
    H, V, k, S = 8, 40, 3, 4.0
    _, drafter = init_drafter({"hidden_size": H, "vocab_size": V}, None, num_draft_layers=1)
    with torch.no_grad():
        for p in drafter.parameters():
            p.copy_(torch.randn(p.shape))  # far from the identity init, so every step has its own logits
    tokens = torch.randint(0, V, (30,))
    mask = torch.ones(30, dtype=torch.bool)
    mask[[12, 25, 26, 27, 28, 29]] = False  # one example boundary: some anchors have fewer valid steps
    anchors = (mask[1:-1] & mask[2:]).nonzero().squeeze(1)
    anchors = anchors[anchors + k + 1 < 30]
    feats = Features(tokens, mask, anchors, torch.randn(len(anchors), H))
    embed = torch.randn(V, H)
    idx = torch.arange(len(anchors))
    head = Head.full(drafter.lm_head[-1].weight)
    plain = drafter_step(drafter, head, embed, feats, idx, k)
    sharp = drafter_step(drafter, head, embed, feats, idx, k, later_sharpness=S)

    decayed = drafter_step(drafter, head, embed, feats, idx, k, later_sharpness=S, step_decay=0.5)

    win, valid = feats.windows(idx, k)
    state, ref, ref_decayed = torch.zeros(len(idx), H), torch.zeros(()), torch.zeros(())
    weights = [1 * 3 / 1.75, 0.5 * 3 / 1.75, 0.25 * 3 / 1.75]  # 0.5**i, scaled to sum to k = 3
    for i in range(k):
        state = drafter.next_state(state, embed[win[:, i]])
        logits = drafter.logits(feats.hidden, state) / (S if i else 1.0)
        ce = torch.nn.functional.cross_entropy(logits, win[:, i + 1], reduction="none")
        ref = ref + (ce * valid[:, i]).sum() / valid[:, i].sum()
        ref_decayed = ref_decayed + weights[i] * (ce * valid[:, i]).sum() / valid[:, i].sum()
    torch.testing.assert_close(sharp.loss, ref)
    torch.testing.assert_close(decayed.loss, ref_decayed)
    assert not torch.allclose(plain.loss, ref) and not torch.allclose(decayed.loss, ref)
    assert torch.equal(plain.correct, sharp.correct) and torch.equal(plain.valid, sharp.valid)
    assert 0 < int(valid[:, 2].sum()) < int(valid[:, 0].sum())  # the boundary cut some later steps


def test_training_step_keeps_every_tensor_on_the_drafter_device():
    """The step (pruned head, soft targets, sharpness, decay) run forward and backward on the meta device, which
    refuses any tensor made on the CPU, as a GPU does (`train --device cuda` once crashed in `Features.windows`;
    the GPU run itself is in test_runtime_cuda.py). meta's nonzero needs a stand-in shape: all rows valid."""
    import torch.fx.experimental._config as fx_config

    from redrafter_trt.drafter import init_drafter
    from redrafter_trt.train.features import Features
    from redrafter_trt.train.objective import Teacher, drafter_step

    with fx_config.patch(meta_nonzero_assume_all_nonzero=True):  # torch's own: monkeypatch >= 9.2 deletes it after
        H, V, k = 8, 40, 3
        _, drafter = init_drafter({"hidden_size": H, "vocab_size": V}, None, num_draft_layers=1)
        anchors = torch.arange(1, 20)
        feats = Features(torch.randint(0, V, (30,)), torch.ones(30, dtype=torch.bool), anchors, torch.randn(19, H))
        keep = torch.arange(0, V, 2)
        teacher = Teacher.from_features(feats, torch.randn(len(keep), H), 4, 0.5, device="meta")
        drafter.to("meta")
        head = Head.pruned(drafter.lm_head[-1].weight, keep.to("meta"), True)
        feats = Features(*(x.to("meta") for x in (feats.tokens, feats.mask, feats.anchors, feats.hidden)))
        res = drafter_step(drafter, head, torch.randn(V, H, device="meta"), feats, torch.arange(5, device="meta"), k,
                           teacher=teacher, later_sharpness=4.0, step_decay=0.8)
        res.loss.backward()
        assert res.loss.device.type == "meta" and res.correct.device.type == "meta"


def test_a_resume_under_another_number_of_ranks_is_refused(chat_base, qa_file, tmp_path, monkeypatch):
    """A run resumed under torchrun with another number of ranks went on silently with other shards and batches
    (with --max-steps the step count matched, so nothing was compared that told): no longer the interrupted run."""
    from redrafter_trt.errors import ConfigError
    from redrafter_trt.train import loop, torchrun

    train_drafter(_cfg(chat_base, qa_file, tmp_path, max_steps=4))
    monkeypatch.setattr(torchrun, "_dist", lambda device: (0, 2))
    monkeypatch.setattr(loop, "same_state_on_every_rank", lambda *a: None)  # collectives: no peer rank here
    monkeypatch.setattr(loop, "writing_output", lambda *a: contextlib.nullcontext())
    monkeypatch.setattr(loop, "build_examples", lambda *a, **k: pytest.fail("examples built before the refusal"))
    with pytest.raises(ConfigError, match=re.escape("saved with different number of torchrun ranks (WORLD_SIZE) "
                                                    "(1 then, 2 now)")):
        train_drafter(_cfg(chat_base, qa_file, tmp_path, max_steps=4, resume=True))
    state = torch.load(tmp_path / "drafter.train-state.pt", weights_only=True)  # as saved before ranks were compared
    del state["ranks"]
    torch.save(state, tmp_path / "drafter.train-state.pt")
    monkeypatch.undo()
    train_drafter(_cfg(chat_base, qa_file, tmp_path, max_steps=4, resume=True))



def test_a_state_saved_when_max_examples_counted_conversations_read_is_not_resumed(chat_base, qa_file, tmp_path):
    """--max-examples N once counted the conversations read, before those with no answer or beginning a longer one
    were left out; it counts those kept now: a state saved then trained another selection, and resumed it silently.
    Without --max-examples (or with --distill, whose prompts are cut as before) the selection is the same."""
    from redrafter_trt.errors import ConfigError

    def saved_before_kept_counted(**kw):
        train_drafter(_cfg(chat_base, qa_file, tmp_path, max_steps=4, **kw))
        state = torch.load(tmp_path / "drafter.train-state.pt", weights_only=True)
        del state["max_examples_kept"]
        torch.save(state, tmp_path / "drafter.train-state.pt")

    saved_before_kept_counted(max_examples=6)
    with pytest.raises(ConfigError, match=re.escape("saved with different conversations picked by --max-examples")):
        train_drafter(_cfg(chat_base, qa_file, tmp_path, max_steps=4, resume=True, max_examples=6))
    saved_before_kept_counted()
    train_drafter(_cfg(chat_base, qa_file, tmp_path, max_steps=4, resume=True))

def _teacher_features(n: int):
    from redrafter_trt.train.features import Features

    hidden = torch.randn(n, 6, generator=torch.Generator().manual_seed(0))
    return Features(torch.zeros(n + 4, dtype=torch.long), torch.ones(n + 4, dtype=torch.bool), torch.arange(n), hidden)


def test_a_killed_runs_partial_teacher_file_under_another_key_is_removed_by_the_next_write(tmp_path):
    """As the hidden states': a killed run's partial soft targets were swept only by a run writing that same key, and
    a rerun after a kill usually has another (fewer examples). So is the single file of a version before session 45."""
    import subprocess
    import sys

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    killed = tmp_path / "teacher-base-float32-0123456789abcdef" / f".00003-of-00004.safetensors.partial-{gone.pid}"
    killed.parent.mkdir()
    killed.write_bytes(b"x" * 1000)
    single = tmp_path / f".teacher-0123456789abcdef.safetensors.partial-{gone.pid}"
    single.write_bytes(b"x" * 1000)
    Teacher.cached(tmp_path / "teacher-base-float32-fedcba9876543210", _teacher_features(3), torch.eye(6), k=2,
                   weight=0.5)
    assert not killed.exists() and not single.exists()
    assert [p.name for p in (tmp_path / "teacher-base-float32-fedcba9876543210").iterdir() if p.name != ".writing.lock"] \
        == ["00000-of-00001.safetensors"]


def test_an_interrupted_soft_target_pass_goes_on_after_its_last_whole_chunk(tmp_path, monkeypatch):
    """The soft targets (hours for an 8B base's head) were written only once all were computed: an interruption lost
    them all. They are written chunk by chunk; a rerun computes the chunks left and ends with the soft targets and the
    cache of an uninterrupted pass, byte for byte."""
    monkeypatch.setattr(objective, "CHUNK_ROWS", 8)
    feats, rows = _teacher_features(30), torch.randn(40, 6, generator=torch.Generator().manual_seed(1))
    whole = Teacher.cached(tmp_path / "whole" / "teacher-k", feats, rows, k=4, weight=0.5)
    real, computed = objective.top_k, []

    def interrupted_in_the_third(*a, **k):
        computed.append(1)
        if len(computed) == 3:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(objective, "top_k", interrupted_in_the_third)
    with pytest.raises(KeyboardInterrupt):
        Teacher.cached(tmp_path / "cut" / "teacher-k", feats, rows, k=4, weight=0.5)
    folder, done = tmp_path / "cut" / "teacher-k", tmp_path / "whole" / "teacher-k"
    assert sorted(p.name for p in folder.glob("*.safetensors")) == ["00000-of-00004.safetensors",
                                                                    "00001-of-00004.safetensors"]
    computed.clear()
    resumed = Teacher.cached(folder, feats, rows, k=4, weight=0.5)
    assert len(computed) == 2  # the chunks left only
    assert torch.equal(resumed.ids, whole.ids) and torch.equal(resumed.probs, whole.probs)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == {p.name: p.read_bytes() for p in done.iterdir()}


def test_soft_targets_another_kind_of_device_computed_are_reused_saying_so(tmp_path, monkeypatch, caplog):
    """Soft targets were cached per kind of device: a pass made on a GPU was computed again in full on a CPU rerun
    (hours for an 8B base's head over a 128k vocabulary). Each chunk records the kind of device that computed it, as
    a chunk of hidden states does, and those another kind computed are reused with one warning naming the devices
    and the folder (they differ in rounding only); those of this kind quietly. A reused chunk is opened once (its
    tensors and the metadata naming its device were three openings)."""
    import logging

    import safetensors

    from redrafter_trt import io
    from redrafter_trt.io import read_safetensors, read_safetensors_and_metadata, write_safetensors
    from redrafter_trt.train.chunks import computed_on

    monkeypatch.setattr(objective, "CHUNK_ROWS", 8)
    feats, rows = _teacher_features(30), torch.randn(40, 6, generator=torch.Generator().manual_seed(1))
    folder = tmp_path / "teacher-base-float32-k"
    whole = Teacher.cached(folder, feats, rows, k=4, weight=0.5, metadata={"base_id": "base"})
    chunks = sorted(folder.glob("*.safetensors"))
    assert [read_safetensors_and_metadata(p)[1] for p in chunks] == \
        [{"base_id": "base", **computed_on("cpu"), "version": __version__}] * 4
    monkeypatch.setattr(objective, "top_k", lambda *a, **k: pytest.fail("the soft targets were computed again"))
    opened, real_open = [], safetensors.safe_open
    for module in (io, safetensors):
        monkeypatch.setattr(module, "safe_open", lambda path, *a, **k: opened.append(path) or real_open(path, *a, **k))
    with caplog.at_level(logging.WARNING):
        Teacher.cached(folder, feats, rows, k=4, weight=0.5)
    assert "computed on" not in caplog.text
    assert sorted(opened) == [str(p) for p in chunks]
    for path in chunks[:2]:  # as a GPU computed them
        write_safetensors(path, read_safetensors(path), {"base_id": "base", "device": "cuda"})
    with caplog.at_level(logging.WARNING):
        again = Teacher.cached(folder, feats, rows, k=4, weight=0.5)
    assert torch.equal(again.ids, whole.ids) and torch.equal(again.probs, whole.probs)
    assert caplog.text.count("computed on") == 1 and "soft targets computed on cuda, not cpu" in caplog.text
    assert str(folder) in caplog.text


def test_a_soft_target_pass_leaves_the_chunk_another_host_is_writing(tmp_path, monkeypatch):
    """Partials were swept by process id, which names a process of this host only: a torchrun rank on another node
    sharing the cache, computing its soft targets, deleted the file another rank was writing (its id is none here), and
    that rank failed in its rename. A folder a run writes into is locked; the others' sweeps leave it."""
    from redrafter_trt import output
    from redrafter_trt.train import chunks

    monkeypatch.setattr(output, "_alive", lambda pid: False)  # every writer on another host: its id is none here
    real, partials = chunks.write_safetensors_stable, []

    def another_rank_starts_meanwhile(path, tensors, metadata):
        real(path, tensors, metadata)
        if not partials:
            partials.append(path)
            Teacher.cached(tmp_path / "teacher-base-float32-rank1", _teacher_features(5), torch.eye(6), k=2,
                           weight=0.5)
            assert path.exists()

    monkeypatch.setattr(chunks, "write_safetensors_stable", another_rank_starts_meanwhile)
    Teacher.cached(tmp_path / "teacher-base-float32-rank0", _teacher_features(3), torch.eye(6), k=2, weight=0.5)
    assert (tmp_path / "teacher-base-float32-rank0" / "00000-of-00001.safetensors").is_file()
    assert (tmp_path / "teacher-base-float32-rank1" / "00000-of-00001.safetensors").is_file()


def test_a_rerun_without_resume_says_it_drops_a_run_interrupted_after_its_last_step(chat_base, qa_file, tmp_path,
                                                                                     monkeypatch, caplog):
    """A run interrupted in its final evaluation (or the drafter's save) leaves a state at the last step, which read
    as a finished run's: a rerun without --resume removed it at info level, though --resume writes the drafter
    without training again. It says so now; a finished run's state still goes quietly (the test above)."""
    import logging

    from redrafter_trt.train import loop

    cfg = _cfg(chat_base, qa_file, tmp_path, max_steps=4)
    real = loop.evaluate
    monkeypatch.setattr(loop, "evaluate", _raise_ctrl_c(real))
    with pytest.raises(KeyboardInterrupt):
        train_drafter(cfg)
    monkeypatch.setattr(loop, "evaluate", real)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="redrafter_trt.train.state"):
        train_drafter(_cfg(chat_base, qa_file, tmp_path, max_steps=4))
    said = [r.getMessage() for r in caplog.records if r.name == "redrafter_trt.train.state"]
    assert said == [f"starting over: removed {cfg.state_path}, the state of a run interrupted after its last step (4) "
                    f"before its drafter was written (--resume writes it without training again)"]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="redrafter_trt.train.state"):  # that rerun finished: quiet again
        train_drafter(_cfg(chat_base, qa_file, tmp_path, max_steps=4))
    assert not [r for r in caplog.records if r.name == "redrafter_trt.train.state"]


def test_each_epoch_trains_its_last_partial_batch_and_resumes_after_it(chat_base, qa_file, tmp_path, monkeypatch):
    """An epoch's last partial batch was dropped (steps per epoch = anchors // batch): a small dataset lost up to a
    batch less one of its anchors every epoch. Each epoch now trains every anchor once, the bar's total counts the
    partial steps, and a run interrupted after one resumes bit for bit."""
    from redrafter_trt.train import steps

    real, batches = steps.drafter_step, []

    def spy(drafter, head, embed, feats, idx, k, **kw):
        if "later_sharpness" in kw:  # a training step (the evaluation passes none)
            batches.append((len(feats.anchors), idx.tolist()))
        return real(drafter, head, embed, feats, idx, k, **kw)

    monkeypatch.setattr(steps, "drafter_step", spy)
    kw = dict(max_steps=None, epochs=2, batch_size=1500, checkpoint_every=100)
    totals = []
    whole = _tensors(train_drafter(_cfg(chat_base, qa_file, tmp_path / "whole", **kw),
                                   on_progress=lambda p: p.stats and totals.append((p.done, p.total))))
    n = batches[0][0]
    assert 1500 < n < 3000, n  # two steps an epoch, the second partial
    assert totals == [(1, 4), (2, 4), (3, 4), (4, 4)]
    for epoch in (batches[:2], batches[2:]):
        assert sorted(i for _, idx in epoch for i in idx) == list(range(n))
    assert [len(idx) for _, idx in batches] == [1500, n - 1500] * 2

    def interrupt(p):
        if p.stage == "train" and p.done == 2:
            raise KeyboardInterrupt

    cfg = _cfg(chat_base, qa_file, tmp_path / "cut", **kw)
    with pytest.raises(KeyboardInterrupt):
        train_drafter(cfg, on_progress=interrupt)
    cfg.resume = True
    state = torch.load(cfg.state_path, weights_only=True)
    older = {k: v for k, v in state.items() if k != "per_epoch"}  # as saved before partial batches were trained
    torch.save(older, cfg.state_path)
    from redrafter_trt.errors import ConfigError

    with pytest.raises(ConfigError, match="different steps per epoch"):  # not replayed on other batches
        train_drafter(cfg)
    torch.save(state, cfg.state_path)
    steps = []
    resumed = _tensors(train_drafter(cfg, on_progress=lambda p: p.stats and steps.append(p.done)))
    assert steps == [3, 4]
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)


@pytest.mark.parametrize("stage", ["hidden", "first step"])
def test_an_interruption_before_the_first_saved_step_says_to_rerun_without_resume(chat_base, qa_file, tmp_path, caplog,
                                                                                   monkeypatch, stage):
    """Ctrl-C while the base's hidden states were cached (or while distilling, or in the first step) said only
    'interrupted', and the --resume that an interruption in training asks for was then refused as 'no training
    state ...: run once without --resume'; the interruption now says to rerun without it."""
    from redrafter_trt.train import steps

    def ctrl_c(*a, **k):
        raise KeyboardInterrupt

    if stage == "first step":
        monkeypatch.setattr(steps, "drafter_step", ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        train_drafter(_cfg(chat_base, qa_file, tmp_path), on_progress=lambda p: p.stage == stage and ctrl_c())
    assert "interrupted before the first training step was saved: rerun without --resume" in caplog.text
    assert not _cfg(chat_base, qa_file, tmp_path).state_path.exists()


@pytest.mark.parametrize("stage", ["hidden", "first step"])
def test_a_resumed_run_interrupted_before_its_first_step_says_to_resume_again(chat_base, qa_file, tmp_path, caplog,
                                                                              monkeypatch, stage):
    """A resumed run that had to cache the base's hidden states again (its cache deleted, or on another machine:
    hours for an 8B base), interrupted there or in its first step, said only 'interrupted': not that its state was
    kept, nor to --resume again. It now says both, in one line."""
    import shutil

    from redrafter_trt.train import steps

    def ctrl_c(*a, **k):
        raise KeyboardInterrupt

    cfg = _cfg(chat_base, qa_file, tmp_path)
    with pytest.raises(KeyboardInterrupt):
        train_drafter(cfg, on_progress=lambda p: p.stage == "train" and p.done == 6 and ctrl_c())
    shutil.rmtree(cfg.cache_dir)
    cfg.resume = True
    if stage == "first step":
        monkeypatch.setattr(steps, "drafter_step", ctrl_c)
    caplog.clear()
    with pytest.raises(KeyboardInterrupt), caplog.at_level("WARNING"):
        train_drafter(cfg, on_progress=lambda p: p.stage == stage and ctrl_c())
    said = [r.getMessage() for r in caplog.records if r.name == "redrafter_trt.train.loop"]
    assert said == [f"interrupted before training went on from {cfg.state_path}: rerun with --resume (that state is "
                    f"kept, and the answers and hidden states cached so far in {cfg.cache_dir} are reused)"]
    assert torch.load(cfg.state_path, weights_only=True)["step"] == 6


def test_soft_targets_another_model_of_the_same_kind_of_device_computed_are_reused_naming_both(tmp_path, monkeypatch,
                                                                                              caplog):
    """Chunks recorded the kind of device alone: an A100's soft targets reused on an H100 (or a CPU with native
    bfloat16's on one emulating it) were taken for this device's, though their bfloat16 rounds otherwise. A chunk
    records the device's description too, compared when both have one (the warning naming both), and the kind alone
    against a chunk recording no description (before session 46)."""
    import logging

    from redrafter_trt.io import read_metadata, read_safetensors, write_safetensors
    from redrafter_trt.train import chunks

    monkeypatch.setattr(objective, "CHUNK_ROWS", 8)
    feats, rows = _teacher_features(30), torch.randn(40, 6, generator=torch.Generator().manual_seed(1))
    folder = tmp_path / "teacher-base-float32-k"
    monkeypatch.setattr(chunks, "describe_device", lambda device: "cpu x86_64 with native bfloat16")
    whole = Teacher.cached(folder, feats, rows, k=4, weight=0.5, metadata={"base_id": "base"})
    chunk_files = sorted(folder.glob("*.safetensors"))
    assert read_metadata(chunk_files[0]) == \
        {"base_id": "base", "device": "cpu", "device_name": "cpu x86_64 with native bfloat16", "version": __version__}
    monkeypatch.setattr(objective, "top_k", lambda *a, **k: pytest.fail("the soft targets were computed again"))
    monkeypatch.setattr(chunks, "describe_device", lambda device: "cpu x86_64 without native bfloat16")
    with caplog.at_level(logging.WARNING):
        again = Teacher.cached(folder, feats, rows, k=4, weight=0.5)
    assert torch.equal(again.ids, whole.ids) and torch.equal(again.probs, whole.probs)
    assert caplog.text.count("computed on") == 1
    assert "soft targets computed on cpu x86_64 with native bfloat16, not cpu x86_64 without native bfloat16" \
        in caplog.text
    caplog.clear()
    for path, device in zip(chunk_files, ("cpu", "cpu", "cuda", "cpu")):  # as a version before session 46 wrote them
        write_safetensors(path, read_safetensors(path), {"base_id": "base", "device": device})
    with caplog.at_level(logging.WARNING):
        Teacher.cached(folder, feats, rows, k=4, weight=0.5)
    assert caplog.text.count("computed on") == 1
    assert "soft targets computed on cuda, not cpu x86_64 without native bfloat16" in caplog.text


def test_a_device_is_described_by_its_model_or_its_bfloat16(monkeypatch):
    """What a cache records of the device computing it: a GPU's name and compute capability (an H100 and an A100 round
    bfloat16 otherwise), a CPU's architecture and whether it multiplies bfloat16 natively (oneDNN emulates it
    otherwise, rounding otherwise)."""
    import platform

    from redrafter_trt.train import chunks

    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i: f"NVIDIA H100 80GB HBM3 #{i}")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda i: (9, 0))
    assert chunks.describe_device(torch.device("cuda")) == "cuda NVIDIA H100 80GB HBM3 #1 (compute capability 9.0)"
    assert chunks.describe_device(torch.device("cuda:3")) == "cuda NVIDIA H100 80GB HBM3 #3 (compute capability 9.0)"
    for native, said in ((True, "with"), (False, "without")):
        monkeypatch.setattr(chunks, "cpu_has_native_bf16", lambda: native)
        assert chunks.describe_device(torch.device("cpu")) == f"cpu {platform.machine()} {said} native bfloat16"
    assert chunks.describe_device(torch.device("meta")) == "meta"


def test_an_unreadable_file_of_soft_targets_an_earlier_version_cached_is_one_warning_of_what_happens(tmp_path, caplog):
    """The single `teacher-KEY.safetensors` of a version before session 45, cut short: its warning gave a broken
    download's advice, then the action ('...: re-download or re-export it: computing the soft targets again'), as an
    unreadable chunk's did; it ends in what happens now, and the file is removed (no run can read it)."""
    import logging

    from redrafter_trt.io import write_safetensors

    path = tmp_path / "teacher-0123456789abcdef.safetensors"
    write_safetensors(path, {"ids": torch.zeros(4, 2, dtype=torch.int32), "probs": torch.full((4, 2), 0.5)})
    assert objective._read_single(path, (4, 2)) is not None
    path.write_bytes(path.read_bytes()[:-5])
    with caplog.at_level(logging.WARNING):
        assert objective._read_single(path, (4, 2)) is None
    assert caplog.text.count(str(path)) == 1 and "is truncated" in caplog.text, caplog.text
    assert caplog.text.rstrip().endswith(": computing the soft targets again") and "re-download" not in caplog.text
    assert not path.exists()  # no run can read it


@pytest.mark.parametrize("where", ["removal", "prune", "release"])
def test_a_ctrl_c_after_the_drafter_is_written_says_so_and_leaves_a_finished_state(chat_base, qa_file, tmp_path,
                                                                                    monkeypatch, caplog, where):
    """`train --force` interrupted while it removed the drafter it replaced (or pruned the cache after): output.py said
    the new one was written whole, then the loop said to pass --resume to evaluate and write the drafter, and the
    state's pending marker was left, so the next run without --resume warned it dropped a run interrupted before its
    drafter was written. The drafter is in place: nothing says to resume, and its state is a finished run's (removed
    quietly by the next run). One as the run let its cache entries go said it came before the first training step
    was saved. Each goes on as WrittenThenInterrupted: the command ends as a finished run."""
    import contextlib
    import logging

    from redrafter_trt import output
    from redrafter_trt.train import dataset, loop

    cfg = _cfg(chat_base, qa_file, tmp_path, max_steps=4)
    train_drafter(cfg)
    real, calls = output.shutil.rmtree, []

    def ctrl_c_once(path, *args, **kw):
        calls.append(path)
        if len(calls) == 1 and Path(path).name.endswith("-gone"):
            raise KeyboardInterrupt
        return real(path, *args, **kw)

    def ctrl_c(*args):
        raise KeyboardInterrupt

    @contextlib.contextmanager
    def ctrl_c_at_release(*args):
        yield
        raise KeyboardInterrupt

    if where == "removal":
        monkeypatch.setattr(output.shutil, "rmtree", ctrl_c_once)
    elif where == "prune":
        monkeypatch.setattr(loop, "prune_superseded", ctrl_c)
    else:
        monkeypatch.setattr(dataset, "using", ctrl_c_at_release)
    with caplog.at_level(logging.WARNING), pytest.raises(output.WrittenThenInterrupted):
        train_drafter(_cfg(chat_base, qa_file, tmp_path, max_steps=4, seed=2))
    monkeypatch.undo()
    assert json.loads((cfg.output / "config.json").read_text())["producer"]["options"]["seed"] == 2
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and r.name != dataset.log.name]
    assert warned == [f"{cfg.output} is written whole: the Ctrl-C came after, while the folder it replaced was removed"
                      if where == "removal" else f"interrupted after {cfg.output} was written"], warned
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "drafter", "drafter.train-state.pt"]
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="redrafter_trt.train.state"):
        train_drafter(cfg)
    said = [r.getMessage() for r in caplog.records if r.name == "redrafter_trt.train.state"]
    assert said == [f"removing {cfg.state_path}, the state of an earlier run"], said


def test_a_ctrl_c_as_a_new_run_removes_an_earlier_state_removes_it_whole_before_it_stops(tmp_path, monkeypatch):
    """A new run said "starting over: removed" the earlier run's state before removing it: a Ctrl-C there left the
    state (and its pending marker) that the line said was gone. The removal and its line are done whole, then the
    interrupt goes on."""
    import signal

    from redrafter_trt.train import state

    cfg = TrainConfig(base=tmp_path, data=[tmp_path / "d.jsonl"], output=tmp_path / "drafter")
    torch.save({"step": 4, "total": 4}, cfg.state_path)
    state.pending_marker(cfg).touch()
    said = []

    class CtrlCAsItSpeaks:
        def warning(self, *args):
            said.append(args[0] % args[1:])
            signal.raise_signal(signal.SIGINT)

    monkeypatch.setattr(state, "log", CtrlCAsItSpeaks())
    with pytest.raises(KeyboardInterrupt):
        state.remove_earlier_state(cfg)
    assert said and said[0].startswith(f"starting over: removed {cfg.state_path}")
    assert list(tmp_path.iterdir()) == []


def test_an_unreadable_earlier_state_beside_a_pending_marker_is_removed_quietly(tmp_path, caplog):
    """An unreadable state (or one of an older layout) holds no step to continue from, even beside the pending marker
    of a run interrupted after its last step: removed at info level, not said to be such a run's (at "step 0")."""
    import logging

    from redrafter_trt.train import state

    cfg = TrainConfig(base=tmp_path, data=[tmp_path / "d.jsonl"], output=tmp_path / "drafter")
    cfg.state_path.write_bytes(b"garbage" * 10)
    state.pending_marker(cfg).touch()
    with caplog.at_level(logging.INFO, logger="redrafter_trt.train.state"):
        state.remove_earlier_state(cfg)
    said = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "redrafter_trt.train.state"]
    assert said == [(logging.INFO, f"removing {cfg.state_path}, the state of an earlier run")], said
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_inside_a_checkpoints_write_is_held_until_it_is_saved(chat_base, qa_file, tmp_path, monkeypatch,
                                                                     python_ctrl_c):
    """A Ctrl-C (or the CLI's SIGTERM) landing inside torch.save's writes of a periodic checkpoint came out of torch's
    zip writer as a RuntimeError ('unexpected pos 30 vs 0'): 'cannot save the training state', exit 2, and every
    step since the checkpoint before was lost (a flaky SIGTERM test, session 59). Every save runs whole now."""
    import signal

    real, writes = torch.save, []

    class CtrlCOnThirdWrite:
        def __init__(self, f):
            self.f = f

        def write(self, data):
            writes.append(1)
            if len(writes) == 3:
                signal.raise_signal(signal.SIGINT)
            return self.f.write(data)

        def __getattr__(self, name):
            return getattr(self.f, name)

    monkeypatch.setattr(torch, "save", lambda obj, f, *a, **k: real(obj, CtrlCOnThirdWrite(f), *a, **k))
    cfg = _cfg(chat_base, qa_file, tmp_path / "cut")  # a checkpoint every 4 steps of 8
    with pytest.raises(KeyboardInterrupt):
        train_drafter(cfg)
    monkeypatch.setattr(torch, "save", real)
    assert torch.load(cfg.state_path, weights_only=True)["step"] == 4
