"""evaluate_on_prompts (scripts/eval_drafter.py, scripts/train_smollm2.py) on a tiny chat base."""

from __future__ import annotations

import json

import pytest

from test_train_data import make_tokenizer
from tinymodels import make_drafter, make_hf, resaved


@pytest.fixture(scope="module")
def short_base(tmp_path_factory):
    """A chat base of 48 positions, and a drafter for it."""
    base = make_hf(tmp_path_factory.mktemp("short_base"), "llama", tie=True, vocab_size=128,
                   max_position_embeddings=48)
    make_tokenizer(base)
    return base, make_drafter(tmp_path_factory.mktemp("drafter") / "d", base)


def _prompts(tmp_path, *texts):
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": t}) + "\n" for t in texts))
    return path


def test_prompt_and_answer_stay_within_the_bases_positions(short_base, tmp_path, monkeypatch):
    """Prompts were cut to 2048 tokens and answered 192 more whatever the base's max_position_embeddings: a base of
    fewer positions answered (and was evaluated) past them."""
    from redrafter_trt.train import heldout

    base, drafter = short_base
    lengths, real = [], heldout.build_features
    monkeypatch.setattr(heldout, "build_features", lambda examples, *a, **k: lengths.extend(
        len(ex.ids) for ex in examples) or real(examples, *a, **k))
    result = heldout.evaluate_on_prompts(drafter, base, _prompts(tmp_path, "Hi.", "Tell me a story " * 8),
                                         tmp_path / "cache", max_new_tokens=30, k=2)
    assert len(lengths) == 2 and max(lengths) <= 48 and result["anchors"] > 0


def test_it_says_what_it_distills_before_the_minutes_of_it(short_base, tmp_path, monkeypatch):
    """scripts/eval_drafter.py printed nothing in its minutes of distilling: a line now says what is answered and
    where it is cached, after the inputs are checked (a bad one stays a one-line error, alone)."""
    import torch

    from redrafter_trt.train import heldout
    from redrafter_trt.train.dataset import distill_folder

    class Distilling(Exception):
        pass

    def distill(*args, **kwargs):
        lines.append("distilling")
        raise Distilling

    base, drafter = short_base
    lines = []
    monkeypatch.setattr(heldout, "distill", distill)
    with pytest.raises(Distilling):
        heldout.evaluate_on_prompts(drafter, base, _prompts(tmp_path, "Hi.", "Bye."), tmp_path / "cache",
                                    max_new_tokens=7, k=2, progress=lines.append)
    assert len(lines) == 2 and lines[1] == "distilling", lines
    folder = distill_folder(tmp_path / "cache", base, torch.float32)
    assert lines[0].startswith("the base's answers to 2 prompts, up to 7 tokens each") and str(folder) in lines[0]


def test_its_prompts_are_spread_over_the_file(short_base, tmp_path, monkeypatch):
    """num_prompts of a file sorted by category (MT-Bench) are taken spread over it (prompts.take_spread), not its
    first num_prompts: 2 of 8 are the 1st and the 5th."""
    from redrafter_trt.train import heldout

    class Distilling(Exception):
        pass

    def distill(*args, **kwargs):
        raise Distilling

    base, drafter = short_base
    taken, real = [], heldout.prompt_ids
    monkeypatch.setattr(heldout, "prompt_ids", lambda tok, conv, *a, **k: taken.append(
        conv.messages[0]["content"]) or real(tok, conv, *a, **k))
    monkeypatch.setattr(heldout, "distill", distill)
    with pytest.raises(Distilling):
        heldout.evaluate_on_prompts(drafter, base, _prompts(tmp_path, *(f"Prompt {i}." for i in range(8))),
                                    tmp_path / "cache", num_prompts=2, max_new_tokens=7, k=2)
    assert taken == ["Prompt 0.", "Prompt 4."]


def test_answers_of_one_token_are_a_one_line_error(short_base, tmp_path, monkeypatch):
    """A base that answered every prompt with a stop token at once (no 2 answer tokens in a row to draft from) was a
    traceback from inside the evaluation."""
    from redrafter_trt.errors import ConfigError
    from redrafter_trt.train import heldout

    base, drafter = short_base
    monkeypatch.setattr(heldout, "distill", lambda load, tok, prompts, *a, **k: [([2], None) for _ in prompts])
    with pytest.raises(ConfigError, match="answered every prompt of .* with at most one token"):
        heldout.evaluate_on_prompts(drafter, base, _prompts(tmp_path, "Hi.", "Bye."), tmp_path / "cache", k=2)


def test_its_cached_answers_are_pruned_when_the_base_changes(short_base, tmp_path):
    """Its distill folder was in no base id's listing (cache.py's bases/ID.txt): a re-saved base left the earlier
    version's answers behind for good, in its own cache folder or train's."""
    import shutil

    from redrafter_trt.train import heldout
    from redrafter_trt.train.baseid import base_id

    base, cache = tmp_path / "base", tmp_path / "cache"
    shutil.copytree(short_base[0], base)
    prompts = _prompts(tmp_path, "Hi.", "Bye.")
    heldout.evaluate_on_prompts(short_base[1], base, prompts, cache, max_new_tokens=8, k=2)
    old = base_id(base)
    assert (cache / "bases" / f"{old}.txt").read_text().splitlines() == [str(base.resolve())]
    assert (cache / f"distill-{old}-float32").is_dir()
    resaved(base / "model.safetensors")  # re-saved with other weights: another id
    heldout.evaluate_on_prompts(short_base[1], base, prompts, cache, max_new_tokens=8, k=2)
    assert base_id(base) != old and (cache / f"distill-{base_id(base)}-float32").is_dir()
    assert not (cache / f"distill-{old}-float32").exists() and not (cache / "bases" / f"{old}.txt").exists()


def test_a_prune_while_it_reads_its_cached_answers_keeps_them(short_base, tmp_path, monkeypatch):
    """It read its cached answers' hidden states after giving back the cache lock (cache.using): a run on a re-saved
    version of the base, pruning meanwhile, found them unused and deleted them under it."""
    import shutil

    from redrafter_trt.train import heldout
    from redrafter_trt.train.cache import prune_superseded

    base, cache = tmp_path / "base", tmp_path / "cache"
    shutil.copytree(short_base[0], base)
    real = heldout.build_features

    def resaved_and_pruned_meanwhile(*a, **k):
        resaved(base / "model.safetensors")
        prune_superseded(cache, base)  # a run on the new version, finishing as this one reads
        return real(*a, **k)

    monkeypatch.setattr(heldout, "build_features", resaved_and_pruned_meanwhile)
    result = heldout.evaluate_on_prompts(short_base[1], base, _prompts(tmp_path, "Hi.", "Bye."), cache,
                                         max_new_tokens=8, k=2)
    assert result["anchors"] > 0


def test_agent_records_give_their_prompts(short_base, tmp_path, monkeypatch):
    """It read its prompt file as training data, where a record answered by a tool call is skipped: an agent-data
    file's prompts were dropped from the evaluation (or the whole file refused), though distilling answers the
    prompt alone, as train --distill and run/bench read it."""
    from redrafter_trt.train import heldout

    call = {"role": "assistant", "content": None,
            "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": "{}"}}]}
    path = tmp_path / "agent.jsonl"
    path.write_text(json.dumps({"messages": [{"role": "user", "content": "Weather in Paris?"}, call]}) + "\n"
                    + json.dumps({"prompt": "Hi."}) + "\n")
    seen = []
    real = heldout.distill
    monkeypatch.setattr(heldout, "distill", lambda load, tok, prompts, *a, **k: seen.extend(prompts) or real(
        load, tok, prompts, *a, **k))
    heldout.evaluate_on_prompts(short_base[1], short_base[0], path, tmp_path / "cache", max_new_tokens=8, k=2)
    assert len(seen) == 2


def test_chained_accuracy_counts_a_step_only_after_every_earlier_one_is_right(monkeypatch):
    """Anchor 0 misses step 0 and hits step 1; anchor 1 hits both: top-1 [0.5, 1.0], but chained [0.5, 0.5] (anchor
    0's step 1 follows a wrong draft token, which the base rejects)."""
    import torch
    from types import SimpleNamespace

    from redrafter_trt.train import heldout

    step = SimpleNamespace(correct=torch.tensor([[False, True], [True, True]]), valid=torch.ones(2, 2, dtype=torch.bool))
    monkeypatch.setattr(heldout, "drafter_step", lambda *args: step)
    result = heldout.evaluate(None, None, None, SimpleNamespace(anchors=torch.arange(2)), 2)
    assert (result["top1"], result["chained"], result["tokens_per_step_beam1"]) == ([0.5, 1.0], [0.5, 0.5], 2.0)
