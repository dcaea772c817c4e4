"""`acceptance` (redrafter_trt.replay): replaying drafting over one greedy pass gives exactly the steps and
per-step histograms that drafted decoding measures, with a deterministic context-dependent test drafter whose
drafts are often accepted (tiny Llama, float32, EOS and length stops), and with the checkpoint's real drafter."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from redrafter_trt import runtime as rt
from redrafter_trt.replay import greedy_pass, replay
from test_runtime_support import checkpoint, hf_greedy, one_thread  # noqa: F401

PROMPTS = [[1, 17, 33, 5], [1, 250, 99, 3, 3, 42, 7, 128, 64], [1, 200], [1, 11, 12, 13, 14, 15, 16]]

pytestmark = pytest.mark.usefixtures("one_thread")


class CopyDrafter:
    """Test double: drafts the continuation of a known sequence after the guaranteed token, corrupted at a depth
    that depends on the beam and on the context vector (so a wrong context row changes the counts). Deterministic:
    the same (context, token) always gives the same beams, whichever batch it comes in."""

    def __init__(self, sequences: list[list[int]], vocab_size: int):
        self.sequences, self.vocab_size = sequences, vocab_size

    def beam_search(self, context, token, num_beams, draft_len):
        beams = torch.zeros(token.shape[0], num_beams, draft_len + 1, dtype=torch.long)
        for b, t in enumerate(token.tolist()):
            follow = next((s[i + 1: i + 1 + draft_len] for s in self.sequences for i, x in enumerate(s) if x == t), [])
            salt = int(context[b, 0].abs() * 10)
            for w in range(num_beams):
                filler = [(t * 31 + w * 7 + i) % self.vocab_size for i in range(draft_len)]
                cut = (salt + 3 * w) % (draft_len + 2)
                beams[b, w] = torch.tensor([t] + (follow[:cut] + filler)[:draft_len])
        return beams


def measured(model, prompts, max_new, eos, w, n):
    """Steps and histogram summed over prompts, each decoded alone with drafting, as bench does."""
    steps, hist, outs = 0, {}, []
    for p in prompts:
        res = rt.generate(model, [p], max_new, num_beams=w, draft_len=n, eos_token_id=eos)
        steps += res.steps[0]
        outs.append(res.output_ids[0])
        for k, v in res.histogram().items():
            hist[k] = hist.get(k, 0) + v
    return steps, hist, outs


@pytest.mark.parametrize("eos_at", [None, (1, 7), (2, 0)])
def test_replay_equals_decoding(tiny_llama, tiny_drafter, eos_at):
    """eos_at (row, index): the EOS is that row's token there; (2, 0) ends a row at its first token, an output of one
    token that has no step after the prefill (replay gave it a phantom step emitting 0, a review's mutant)."""
    model = rt.load(checkpoint(tiny_llama, tiny_drafter, 1, num_beams=3, draft_len=4))
    refs = [hf_greedy(tiny_llama, p, 30) for p in PROMPTS]
    eos = [refs[eos_at[0]][eos_at[1]]] if eos_at is not None else []
    model = dataclasses.replace(model, drafter=CopyDrafter([p + r for p, r in zip(PROMPTS, refs)], 256))
    outputs, contexts = greedy_pass(model, PROMPTS, 30, eos)
    assert [len(c) for c in contexts] == [len(o) for o in outputs]
    assert (eos_at == (2, 0)) == (len(outputs[2]) == 1)  # the premise
    accepted_some = False
    for w, n in [(1, 1), (1, 4), (3, 2), (3, 4)]:
        r = replay(model.drafter, outputs, contexts, w, n)
        steps, hist, outs = measured(model, PROMPTS, 30, eos, w, n)
        assert outs == outputs
        assert (r.steps, r.histogram, r.new_tokens) == (steps, hist, sum(len(o) for o in outs)), (w, n)
        accepted_some |= max(hist) > 2
    assert accepted_some  # long runs were accepted: the walk's jumps were exercised


def test_replay_of_one_token_outputs(tiny_llama, tiny_drafter):
    """max_new_tokens=1: every output is the prefill's token, one step each and no histogram, as decoding counts
    (replay stepped the one-token outputs too: 2 steps each and {0: 4})."""
    model = rt.load(checkpoint(tiny_llama, tiny_drafter, 1, num_beams=3, draft_len=4))
    outputs, contexts = greedy_pass(model, PROMPTS, 1, [])
    r = replay(model.drafter, outputs, contexts, 3, 4)
    steps, hist, outs = measured(model, PROMPTS, 1, [], 3, 4)
    assert outs == outputs and (r.steps, r.histogram, r.new_tokens) == (steps, hist, 4) == (4, {}, 4)


@pytest.mark.parametrize("dtype", [None, "bfloat16", "float16"])
def test_replay_with_the_checkpoint_drafter(tiny_llama, tiny_drafter, dtype):
    """Also in 16 bits (the drafter once got float32 contexts there: a dtype error)."""
    model = rt.load(checkpoint(tiny_llama, tiny_drafter, 1, num_beams=3, draft_len=4), dtype=dtype)
    outputs, contexts = greedy_pass(model, PROMPTS, 20, [])
    for w, n in [(1, 2), (3, 4)]:
        r = replay(model.drafter, outputs, contexts, w, n)
        steps, hist, _ = measured(model, PROMPTS, 20, [], w, n)
        assert (r.steps, r.histogram) == (steps, hist)


def test_replay_in_small_groups_is_the_same(tiny_llama, tiny_drafter, monkeypatch):
    """A logits budget of one prompt per beam search (what a large W x V gets) changes nothing."""
    from redrafter_trt import replay as rp

    model = rt.load(checkpoint(tiny_llama, tiny_drafter, 1, num_beams=3, draft_len=4))
    outputs, contexts = greedy_pass(model, PROMPTS, 20, [])
    whole = replay(model.drafter, outputs, contexts, 3, 4)
    monkeypatch.setattr(rp, "LOGITS_BUDGET", 3 * model.drafter.vocab_size)
    assert replay(model.drafter, outputs, contexts, 3, 4) == whole


def test_greedy_pass_decodes_16_bit_prompts_alone(tiny_llama, tiny_drafter, monkeypatch):
    """bench decodes one prompt at a time; in 16 bits a batch rounds differently and flips ties (seen on SmolLM2 in
    bfloat16: acceptance predicted 1.52 where bench measured 2.13), so the replay's greedy pass decodes alone there."""
    import importlib

    dec = importlib.import_module("redrafter_trt.runtime.decode")  # the module (the package exports a function)
    sizes, real = [], dec.decode
    monkeypatch.setattr(dec, "decode", lambda base, drafter, chunk, *a, **k: sizes.append(len(chunk))
                        or real(base, drafter, chunk, *a, **k))
    ckpt = checkpoint(tiny_llama, tiny_drafter, 1, num_beams=3, draft_len=4)
    for dtype, want in ((None, [len(PROMPTS)]), ("bfloat16", [1] * len(PROMPTS))):
        sizes.clear()
        greedy_pass(rt.load(ckpt, dtype=dtype), PROMPTS, 4, [])
        assert sizes == want, dtype
