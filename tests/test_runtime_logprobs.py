"""logprobs: each emitted token's log-probability and the k most likely tokens equal the log-softmax of transformers'
logits for the same sequence (teacher-forced), whatever the drafter got accepted, in batches, under sampling, on
tp=2, and through on_tokens as tokens come."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from redrafter_trt import runtime as rt
from redrafter_trt.errors import ConfigError
from test_runtime_support import one_thread, LookupDrafter, checkpoint, eos_of, hf_greedy, hf_model  # noqa: F401

PROMPTS = [[1, 17, 33, 5], [1, 250, 99, 3, 3, 42, 7, 128, 64], [1, 200], [1, 11, 12, 13, 14, 15, 16]]
K = 3

pytestmark = pytest.mark.usefixtures("one_thread")


def hf_logprobs(base, prompt: list[int], output: list[int]) -> torch.Tensor:
    """transformers' log-softmax over the vocabulary at each output position [len(output), V] (teacher-forced)."""
    with torch.no_grad():
        logits = hf_model(base)(torch.tensor([prompt + output])).logits[0].double()
    return torch.log_softmax(logits, -1)[len(prompt) - 1: len(prompt) + len(output) - 1]


def assert_match(base, prompts, result):
    assert len(result.logprobs) == len(prompts)
    for prompt, out, lps in zip(prompts, result.output_ids, result.logprobs):
        want = hf_logprobs(base, prompt, out)
        assert len(lps) == len(out)
        for t, (tok, lp) in enumerate(zip(out, lps)):
            assert lp.logprob == pytest.approx(float(want[t, tok]), abs=1e-4)
            top_lp, top_id = want[t].topk(K)
            assert [i for i, _ in lp.top] == top_id.tolist()
            assert [v for _, v in lp.top] == pytest.approx(top_lp.tolist(), abs=1e-4)


def lookup_model(base, drafter, seed=1):
    model = rt.load(checkpoint(base, drafter, 1, num_beams=3, draft_len=4))
    refs = [hf_greedy(base, p, 30) for p in PROMPTS]
    return dataclasses.replace(model, drafter=LookupDrafter([p + r for p, r in zip(PROMPTS, refs)], 256, seed=seed))


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_qwen2", "tiny_qwen3"])
def test_greedy_logprobs_equal_transformers_with_accepted_drafts(request, fixture, tiny_drafter):
    base = request.getfixturevalue(fixture)
    model = lookup_model(base, tiny_drafter)
    eos = hf_greedy(base, PROMPTS[1], 30)[7]  # one row ends on EOS inside a step: its logprobs are cut with it
    res = rt.generate(model, PROMPTS, 30, eos_token_id=eos, batch_size=3, logprobs=K)
    assert res.mean_tokens_per_step > 1.5  # drafts were accepted: logprobs came from nodes along accepted paths
    assert_match(base, PROMPTS, res)
    plain = rt.generate(model, PROMPTS, 30, eos_token_id=eos, use_draft=False, logprobs=K)
    assert plain.output_ids == res.output_ids
    assert [x.logprob for r in plain.logprobs for x in r] == pytest.approx(
        [x.logprob for r in res.logprobs for x in r], abs=1e-5)


def test_sampled_logprobs_are_the_raw_distribution(tiny_llama, tiny_drafter):
    """Sampled tokens get their log-probability under the base's raw logits (temperature not applied)."""
    model = lookup_model(tiny_llama, tiny_drafter)
    res = rt.generate(model, PROMPTS[:2], 20, temperature=0.7, seed=5, logprobs=K)
    assert_match(tiny_llama, PROMPTS[:2], res)


def test_logprobs_off_zero_and_streamed(tiny_llama, tiny_drafter):
    model = lookup_model(tiny_llama, tiny_drafter)
    assert rt.generate(model, PROMPTS, 10).logprobs == []
    zero = rt.generate(model, PROMPTS, 10, logprobs=0)
    assert all(len(r) == len(o) and all(x.top == [] for x in r) for r, o in zip(zero.logprobs, zero.output_ids))
    seen = {i: [] for i in range(len(PROMPTS))}
    full = rt.generate(model, PROMPTS, 20, logprobs=K, on_tokens=lambda i, new, lps: seen[i].extend(zip(new, lps)))
    assert [[t for t, _ in seen[i]] for i in seen] == full.output_ids
    assert [[lp for _, lp in seen[i]] for i in seen] == full.logprobs
    with pytest.raises(ConfigError, match="^logprobs=21 is outside 0..20$"):
        rt.generate(model, PROMPTS, 10, logprobs=21)
    with pytest.raises(ConfigError, match="^logprobs='2'"):  # from a script: was a TypeError
        rt.generate(model, PROMPTS, 10, logprobs="2")


def test_tp2_logprobs_equal_tp1(tiny_llama, tiny_drafter):
    kw = dict(num_beams=3, draft_len=3, eos_token_id=eos_of(tiny_llama), logprobs=K)
    one = rt.generate(rt.load(checkpoint(tiny_llama, tiny_drafter, 1, num_beams=3, draft_len=3)), PROMPTS, 16, **kw)
    two = rt.generate_tp(checkpoint(tiny_llama, tiny_drafter, 2, num_beams=3, draft_len=3), PROMPTS, 16, **kw)
    assert two.output_ids == one.output_ids
    assert_match(tiny_llama, PROMPTS, two)


def assert_prompt_match(base, prompts, scores, k=K):
    """scores[i][t - 1]: prompt token t under transformers' log-softmax at position t - 1."""
    assert len(scores) == len(prompts)
    for prompt, lps in zip(prompts, scores):
        with torch.no_grad():
            want = torch.log_softmax(hf_model(base)(torch.tensor([prompt])).logits[0].double(), -1)
        assert len(lps) == len(prompt) - 1
        for t, lp in enumerate(lps, start=1):
            assert lp.logprob == pytest.approx(float(want[t - 1, prompt[t]]), abs=1e-4)
            top_lp, top_id = want[t - 1].topk(k)
            assert [i for i, _ in lp.top] == top_id.tolist()
            assert [v for _, v in lp.top] == pytest.approx(top_lp.tolist(), abs=1e-4)


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_qwen2", "tiny_qwen3"])
def test_prompt_logprobs_equal_transformers(request, fixture, tiny_drafter, monkeypatch):
    base = request.getfixturevalue(fixture)
    model = rt.load(checkpoint(base, tiny_drafter, 1, num_beams=3, draft_len=3))
    monkeypatch.setattr(rt, "SCORE_CHUNK", 3)  # a prompt longer than a chunk is scored in pieces
    prompts = PROMPTS + [[9]]
    scores = rt.prompt_logprobs(model, prompts, K)
    assert scores[-1] == []  # a one-token prompt has nothing to score
    assert_prompt_match(base, prompts, scores)
    with pytest.raises(ConfigError, match="^k=21 is outside 0..20$"):  # its argument's name
        rt.prompt_logprobs(model, PROMPTS, 21)
    with pytest.raises(ConfigError, match="^k='2'"):
        rt.prompt_logprobs(model, PROMPTS, "2")
    with pytest.raises(ConfigError, match="positions"):
        rt.prompt_logprobs(model, [[1] * (model.config.max_positions + 1)], 0)


def test_prompt_logprobs_on_loaded_tp2_ranks(tiny_llama, tiny_drafter):
    """The server's path: LocalRanks sends the call to its follower, both ranks score, rank 0 answers; a generate
    after it still runs in step."""
    from redrafter_trt.runtime.ranks import LocalRanks

    ranks = LocalRanks(checkpoint(tiny_llama, tiny_drafter, 2, num_beams=3, draft_len=3))
    try:
        scores = ranks.prompt_logprobs(PROMPTS, K)
        after = ranks.generate(PROMPTS[:2], 8, eos_token_id=eos_of(tiny_llama))
    finally:
        ranks.close()
    assert_prompt_match(tiny_llama, PROMPTS, scores)
    assert after.output_ids == [hf_greedy(tiny_llama, p, 8) for p in PROMPTS[:2]]
