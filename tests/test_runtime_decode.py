"""Greedy exactness: speculative greedy output equals transformers' greedy `generate` token for token, with a
lookup drafter that gets many drafts accepted (tiny models: batches whose rows accept different counts), and with
fresh (`init-drafter`-style) drafters on SmolLM2 over MT-Bench first turns with the chat template."""

from __future__ import annotations

import dataclasses
import sys

import pytest
import torch

from redrafter_trt import runtime as rt
from redrafter_trt.errors import ConfigError
from test_runtime_support import (one_thread, LookupDrafter, chat_prompts, checkpoint, eos_of, fresh_drafter,  # noqa: F401
                                  hf_greedy, hf_model, release_folders)

PROMPTS = [[1, 17, 33, 5], [1, 250, 99, 3, 3, 42, 7, 128, 64], [1, 200], [1, 11, 12, 13, 14, 15, 16]]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_qwen2", "tiny_qwen3", "tiny_llama_bias"])
def test_tiny_greedy_exact_with_accepted_drafts(request, fixture, tiny_drafter):
    base = request.getfixturevalue(fixture)
    model = rt.load(checkpoint(base, tiny_drafter, 1, num_beams=3, draft_len=4))
    refs = [hf_greedy(base, p, 40) for p in PROMPTS]
    model = dataclasses.replace(model, drafter=LookupDrafter([p + r for p, r in zip(PROMPTS, refs)], 256, seed=1))
    eos = eos_of(base)
    res = rt.generate(model, PROMPTS, 40, eos_token_id=eos)
    assert res.output_ids == refs
    assert res.mean_tokens_per_step > 1.5  # drafts were accepted, so the compaction path really ran
    assert len({tuple(a) for a in res.accepted}) > 1  # rows accepted different counts
    for i in range(len(PROMPTS)):  # batch 1 gives the same
        assert rt.generate(model, [PROMPTS[i]], 40, eos_token_id=eos, num_beams=2, draft_len=2).output_ids[0] == refs[i]
    plain = rt.generate(model, PROMPTS, 40, eos_token_id=eos, use_draft=False)
    assert plain.output_ids == refs and plain.steps == [len(r) for r in refs]


def test_eos_and_length_stops(tiny_llama, tiny_drafter):
    model = rt.load(checkpoint(tiny_llama, tiny_drafter, 1, num_beams=3, draft_len=4))
    refs = [hf_greedy(tiny_llama, p, 30) for p in PROMPTS]
    model = dataclasses.replace(model, drafter=LookupDrafter([p + r for p, r in zip(PROMPTS, refs)], 256, seed=2))
    eos = refs[1][7]
    never = next(t for t in range(256) if all(t not in r for r in refs))  # an EOS no row reaches
    res = rt.generate(model, PROMPTS, 30, eos_token_id=[eos, never])
    for out, ref in zip(res.output_ids, refs):
        want = ref[: ref.index(eos) + 1] if eos in ref else ref
        assert out == want
        assert res.steps[res.output_ids.index(out)] >= 1
    for out, acc, steps in zip(res.output_ids, res.accepted, res.steps):
        assert sum(acc) + 1 == len(out) and len(acc) + 1 == steps
    short = rt.generate(model, PROMPTS, 3)
    assert [len(o) for o in short.output_ids] == [3] * 4


def lookup_model(base, drafter, max_new_tokens, seed, **options):
    """The tiny checkpoint with a LookupDrafter that proposes transformers' own continuations (many accepted)."""
    model = rt.load(checkpoint(base, drafter, 1, num_beams=3, draft_len=4, **options))
    refs = [hf_greedy(base, p, max_new_tokens) for p in PROMPTS]
    return dataclasses.replace(model, drafter=LookupDrafter([p + r for p, r in zip(PROMPTS, refs)], 256, seed=seed)), refs


def test_max_new_tokens_inside_a_step_emits_exactly_that_many(tiny_llama, tiny_drafter):
    """Every max_new_tokens from 1 up, most of them falling inside a step's accepted drafts: exactly that many tokens,
    transformers' first ones, with steps and accepted counts that add up."""
    model, refs = lookup_model(tiny_llama, tiny_drafter, 12, seed=5)
    assert max(max(a) for a in rt.generate(model, PROMPTS, 12).accepted) >= 3  # so some n below cut a step short
    for n in range(1, 12):
        res = rt.generate(model, PROMPTS, n)
        assert res.output_ids == [r[:n] for r in refs], n
        assert all(sum(a) + 1 == n and len(a) + 1 == s for a, s in zip(res.accepted, res.steps))


def test_on_steps_tokens_per_step_is_the_mean_over_the_rows_so_far(tiny_llama, tiny_drafter):
    """Iteration.tokens_per_step (the server's avgNumDecodedTokensPerIter) of a decoding step: the mean over its rows
    of each row's tokens per step before it, the prefill's token and step counted."""
    model, _ = lookup_model(tiny_llama, tiny_drafter, 12, seed=5)
    heard = []
    res = rt.generate(model, PROMPTS, 12, on_step=heard.append)
    decoding = [it for it in heard if it.generation_rows]
    assert decoding[0].generation_rows == len(PROMPTS) > 1
    for j, it in enumerate(decoding):
        rows = [a for a in res.accepted if len(a) > j]
        assert it.generation_rows == len(rows)
        assert it.tokens_per_step == pytest.approx(sum((1 + sum(a[:j])) / (j + 1) for a in rows) / len(rows))


def test_on_steps_counts_rows_ending_at_different_steps(tiny_llama, tiny_drafter):
    """Each Iteration of a batch whose rows end at different steps (an EOS as a row's first token, one inside a
    step's accepted drafts, the others at max_new_tokens): the prefill counts the row it ended, each decoding step's
    tokens are those kept after the EOS cut its step (the tokens past it were drafted and accepted, not emitted),
    and its tokens_per_step is the mean over the rows still running, not over all rows (a review's mutants, each
    let through: `/ len(outputs)`, `tokens=sum(added)` before the cut, a prefill's `ended=0`)."""
    model, refs = lookup_model(tiny_llama, tiny_drafter, 30, seed=6)
    eos = [refs[2][0], refs[1][9]]
    heard = []
    res = rt.generate(model, PROMPTS, 30, eos_token_id=eos, on_step=heard.append)
    prefill, decoding = heard[0], heard[1:]
    assert [len(o) for o in res.output_ids[1:3]] == [10, 1] and res.steps[1] < max(res.steps)  # rows end apart
    assert (prefill.context_rows, prefill.generation_rows, prefill.ended) == (len(PROMPTS), 0, 1)
    assert all(it.generation_rows and not it.context_rows for it in decoding)
    for j, it in enumerate(decoding):
        rows = [a for a in res.accepted if len(a) > j]
        assert it.generation_rows == len(rows) and it.tokens == sum(a[j] for a in rows)
        assert it.ended == sum(len(a) == j + 1 for a in rows)
        assert it.tokens_per_step == pytest.approx(sum((1 + sum(a[:j])) / (j + 1) for a in rows) / len(rows))
    assert sum(it.tokens for it in heard) + len(PROMPTS) == res.total_new_tokens
    # the premise: the EOS cut row 1's last step, whose drafts (the same without that EOS) accepted more
    free, _ = lookup_model(tiny_llama, tiny_drafter, 30, seed=6)
    uncut = rt.generate(free, PROMPTS, 30, eos_token_id=eos[:1]).accepted[1]
    last = len(res.accepted[1]) - 1
    assert uncut[:last] == res.accepted[1][:last] and uncut[last] > res.accepted[1][last]


def test_a_prefill_counts_the_rows_it_ends(tiny_llama, tiny_drafter):
    """max_new_tokens=1: every row ends at the prefill (its Iteration's `ended`), and nothing decodes after it."""
    model, _ = lookup_model(tiny_llama, tiny_drafter, 1, seed=6)
    heard = []
    rt.generate(model, PROMPTS, 1, on_step=heard.append)
    assert [(it.context_rows, it.ended) for it in heard] == [(len(PROMPTS), len(PROMPTS))]


def test_eos_ids_stop_as_transformers_generate_does(tiny_llama, tiny_drafter):
    """Several EOS ids (a generation config's list), one of them a row's first token (it ends at the prefill while the
    batch goes on) and one inside accepted drafts: the outputs are transformers' greedy generate with that list (no
    pad_token_id given, as a config without one), nothing after the EOS is emitted, and the cut step counts only
    the tokens up to it."""
    model, refs = lookup_model(tiny_llama, tiny_drafter, 30, seed=6)
    eos = [refs[2][0], refs[1][9]]
    hf = hf_model(tiny_llama)
    want = [hf.generate(torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long), max_new_tokens=30,
                        do_sample=False, eos_token_id=eos)[0, len(p):].tolist() for p in PROMPTS]
    assert len(want[2]) == 1 and len(want[1]) <= 10  # the cases meant: an EOS first, an EOS mid-answer
    res = rt.generate(model, PROMPTS, 30, eos_token_id=eos)
    assert res.output_ids == want and res.mean_tokens_per_step > 1.5  # drafts (past the EOS too) were accepted
    assert res.steps[2] == 1 and res.accepted[2] == []
    assert all(sum(a) + 1 == len(o) for a, o in zip(res.accepted, res.output_ids))


@pytest.mark.parametrize("num_beams, draft_len", [(1, 1), (1, 4), (3, 1)])
def test_one_beam_or_one_draft_token_on_a_one_token_prompt(tiny_llama, tiny_drafter, num_beams, draft_len):
    """The smallest shapes (one beam, one drafted token, a prompt of one token) reproduce transformers' greedy output
    with drafts accepted."""
    model, _ = lookup_model(tiny_llama, tiny_drafter, 30, seed=7)
    prompts = [[7], PROMPTS[1]]
    refs = [hf_greedy(tiny_llama, p, 20) for p in prompts]
    model = dataclasses.replace(model, drafter=LookupDrafter([p + r for p, r in zip(prompts, refs)], 256, seed=7))
    res = rt.generate(model, prompts, 20, num_beams=num_beams, draft_len=draft_len)
    assert res.output_ids == refs and res.mean_tokens_per_step > 1.3


def test_as_many_beams_as_the_vocabulary(tiny_llama, tiny_drafter):
    """num_beams = vocab_size (256, draft length 1: 512 tree tokens, the model's positions): the drafter's first step
    keeps every token of the vocabulary, most of them below its top 50; greedy output stays exact."""
    model = rt.load(checkpoint(tiny_llama, tiny_drafter, 1, num_beams=256, draft_len=1))
    res = rt.generate(model, PROMPTS[:2], 6)
    assert res.output_ids == [hf_greedy(tiny_llama, p, 6) for p in PROMPTS[:2]]


def test_a_numpy_integer_eos_stops_as_an_int_does(tiny_llama, tiny_drafter):
    """eos_token_id=np.int64(id), which generate's checks take as an id (numpy's ints are Integral), stops where the
    same int does: it was turned into set(np.int64(id)), a TypeError ('not iterable') after the prefill."""
    np = pytest.importorskip("numpy")
    model = rt.load(checkpoint(tiny_llama, tiny_drafter, 1, num_beams=3, draft_len=4))
    ref = hf_greedy(tiny_llama, PROMPTS[1], 30)
    eos = ref[7]
    want = ref[: ref.index(eos) + 1]
    assert rt.generate(model, [PROMPTS[1]], 30, eos_token_id=eos).output_ids[0] == want
    assert rt.generate(model, [PROMPTS[1]], 30, eos_token_id=np.int64(eos)).output_ids[0] == want


def test_numpy_integer_seed_and_batch_size_run_as_ints(tiny_llama, tiny_drafter):
    """seed=np.int64 and batch_size=np.int64, which generate's checks take (numpy's ints are Integral), sample as the
    same ints do: each batch's seed (seed + batch index) went to torch.Generator.manual_seed as a numpy integer,
    'TypeError: an integer is required'."""
    np = pytest.importorskip("numpy")
    model = rt.load(checkpoint(tiny_llama, tiny_drafter, 1, num_beams=3, draft_len=4))
    want = rt.generate(model, PROMPTS[:2], 6, temperature=0.8, seed=3, batch_size=1).output_ids
    assert rt.generate(model, PROMPTS[:2], 6, temperature=0.8, seed=np.int64(3), batch_size=1).output_ids == want
    assert rt.generate(model, PROMPTS[:2], 6, temperature=0.8, seed=3, batch_size=np.int64(1)).output_ids == want


@pytest.mark.parametrize("joining, needle", [([[1, 300]], "token id 300 is outside the vocabulary"),  # IndexError
                                              ([[1, 2.5]], "token id 2.5 is not an integer"),  # decoded as 2
                                              ([[1, None]], "token id None is not an integer"),  # TypeError
                                              ([[]], "an admitted prompt is empty"),
                                              # a Joining's own max new tokens, as generate's: 0 emitted a token,
                                              # 2.5 and None were TypeErrors mid-step, 7 was cut at 6 unsaid
                                              *[((n,), f"max_new_tokens={n!r}: it must be an integer >= 1, at "
                                                       f"most the batch's 6") for n in (0, -1, True, 2.5, None, 7)]])
def test_admitted_prompts_are_checked_as_the_first_ones(tiny_llama, tiny_drafter, joining, needle):
    """A prompt that admit hands to a running batch is refused as generate refuses its own prompts, one line:
    an id outside the vocabulary was an IndexError in the embedding, a float id was truncated and decoded. A
    Joining's max new tokens (a 1-tuple here) is refused as generate's, and above the batch's (its cache's size)."""
    from redrafter_trt.runtime.decode import Joining

    if isinstance(joining, tuple):
        joining = [Joining(PROMPTS[1], joining[0])]
    model = rt.load(checkpoint(tiny_llama, tiny_drafter, 1, num_beams=3, draft_len=4))
    left = [joining]
    with pytest.raises(ConfigError, match=needle):
        rt.generate(model, PROMPTS[:1], 6, admit=lambda running: left.pop() if left else [])


def test_an_admitted_prompt_ends_at_the_models_last_position(tiny_llama, tiny_drafter, caplog):
    """A prompt admitted mid-run whose length + max_new_tokens exceed max_position_embeddings (512) stops at the last
    position, with base's greedy tokens there and a warning (it decoded on, RoPE past the model's positions, to
    max_new_tokens); one that leaves no position for a new token is refused in one line (it was decoded as well)."""
    model = rt.load(checkpoint(tiny_llama, tiny_drafter, 1, num_beams=3, draft_len=4))
    eos = eos_of(tiny_llama)
    long = [1] + [5 + i % 200 for i in range(505)]  # 506 tokens: 6 positions left
    left = [[long]]
    res = rt.generate(model, PROMPTS[:1], 20, eos_token_id=eos, admit=lambda running: left.pop() if left else [])
    assert len(res.output_ids[1]) == 6 and res.output_ids[1] == hf_greedy(tiny_llama, long, 6)
    assert "emits at most 6 new tokens" in caplog.text
    assert res.output_ids[0] == hf_greedy(tiny_llama, PROMPTS[0], 20)  # the running row keeps its max_new_tokens
    left = [[[1] * 512]]
    with pytest.raises(ConfigError, match="admitted 512-token prompt leaves no room for a new token"):
        rt.generate(model, PROMPTS[:1], 6, admit=lambda running: left.pop() if left else [])


def test_an_admitted_joining_ends_at_its_own_max_new_tokens_and_is_warned_of_only_when_cut(tiny_llama, tiny_drafter,
                                                                                             caplog):
    """A server's request joining a batch of larger max_tokens comes as a Joining of its own: its row ends there, and
    the positions' warning names it only when they leave it fewer (a 510-token prompt asking for 2 new tokens of
    512 positions, joining a request of 11, was warned of as 'an admitted 510-token prompt + 11 new tokens ...: it
    emits at most 2', though it got the 2 it asked)."""
    from redrafter_trt.runtime.decode import Joining

    model = rt.load(checkpoint(tiny_llama, tiny_drafter, 1, num_beams=3, draft_len=4))
    eos = eos_of(tiny_llama)
    long = [1] + [5 + i % 200 for i in range(505)]  # 506 tokens: 6 positions left
    left = [[Joining(long, 6), Joining(long, 8), Joining(PROMPTS[1], 3)]]
    res = rt.generate(model, PROMPTS[:1], 20, eos_token_id=eos, admit=lambda running: left.pop() if left else [])
    assert res.output_ids[1:] == [hf_greedy(tiny_llama, long, 6)] * 2 + [hf_greedy(tiny_llama, PROMPTS[1], 3)]
    assert res.output_ids[0] == hf_greedy(tiny_llama, PROMPTS[0], 20)
    warned = [r.getMessage() for r in caplog.records if "emits at most" in r.getMessage()]
    assert warned == ["an admitted 506-token prompt + 8 new tokens exceed the model's 512 positions: it emits at "
                      "most 6 new tokens"], warned


def test_a_joining_emits_exactly_its_max_new_tokens_inside_a_drafted_step(tiny_llama, tiny_drafter):
    """Rows joining with every max new tokens from 1 to the batch's, most of them falling inside a step's accepted
    drafts: exactly that many, transformers' first ones, with steps and accepted counts that add up (greedy); a
    sampling batch's joining rows emit exactly theirs too."""
    from redrafter_trt.runtime.decode import Joining

    model, refs = lookup_model(tiny_llama, tiny_drafter, 12, seed=5)
    most = 0  # the most tokens a greedy joining row's step emitted
    for n, temperature in [*((n, 0.0) for n in range(1, 13)), (1, 0.9), (5, 0.9)]:
        left = [[Joining(PROMPTS[1], n), Joining(PROMPTS[2], n)]]
        res = rt.generate(model, PROMPTS[:1] + PROMPTS[3:], 12, temperature=temperature, seed=n,
                          admit=lambda running: left.pop() if left and running else [])
        assert [len(o) for o in res.output_ids] == [12, 12, n, n], (n, temperature)
        if not temperature:
            assert res.output_ids == [refs[0], refs[3], refs[1][:n], refs[2][:n]], n
            most = max(most, *res.accepted[2], *res.accepted[3], 0)
        assert all(sum(a) + 1 == len(o) and len(a) + 1 == s
                   for a, s, o in zip(res.accepted, res.steps, res.output_ids)), (n, res.accepted, res.steps)
    assert most >= 3  # drafts accepted: some of the limits above fell inside a step


def test_forget_ended_keeps_nothing_of_ended_rows_and_on_tokens_sees_it_all(tiny_llama, tiny_drafter):
    """A server's batch that requests keep joining never ends: forget_ended drops each ended row's tokens, accepted
    counts and logprobs (on_tokens had them), while the tokens on_tokens hears, the steps and the running rows'
    answers stay those of a normal run; without on_tokens it is refused (the tokens would be lost)."""
    model = rt.load(checkpoint(tiny_llama, tiny_drafter, 1, num_beams=3, draft_len=4))
    kw = dict(eos_token_id=eos_of(tiny_llama), logprobs=1)
    runs = []
    for forget in (False, True):
        heard, left, held = {}, [PROMPTS[1:3]], []

        def on_tokens(b, new, lps):
            heard.setdefault(b, []).extend(new)

        def admit(running, left=left, held=held):
            held.append(running)
            return left.pop() if left and len(held) == 2 else []

        res = rt.generate(model, PROMPTS[:1], 12, on_tokens=on_tokens, admit=admit,
                          forget_ended=forget, **kw)
        runs.append((res, heard))
    (full, heard_full), (kept, heard_kept) = runs
    assert heard_kept == heard_full and [heard_full[b] for b in range(3)] == full.output_ids
    assert kept.output_ids == [[]] * 3 and kept.accepted == [[]] * 3 and kept.logprobs == [[]] * 3
    assert kept.steps == full.steps
    with pytest.raises(ConfigError, match="forget_ended .* pass on_tokens"):
        rt.generate(model, PROMPTS[:1], 4, forget_ended=True)


def test_each_token_is_searched_for_eos_once(tiny_llama, tiny_drafter, monkeypatch):
    """A review: every step searched each running row's whole output for EOS, quadratic in its length (8192 tokens
    one at a time: 6 s of Python per row). Now only the tokens a step adds are searched, and EOS still ends rows."""
    decode_mod = sys.modules["redrafter_trt.runtime.decode"]  # the package's `decode` is the function
    scanned = []
    search = decode_mod._stop_index

    def spy(tokens, eos, start=0):
        scanned.append(len(tokens) - start)
        return search(tokens, eos, start) if start else search(tokens, eos)

    monkeypatch.setattr(decode_mod, "_stop_index", spy)
    model = rt.load(checkpoint(tiny_llama, tiny_drafter, 1, num_beams=3, draft_len=4))
    refs = [hf_greedy(tiny_llama, p, 100) for p in PROMPTS]
    unused = next(t for t in range(256) if all(t not in r for r in refs))
    res = rt.generate(model, PROMPTS, 100, eos_token_id=unused, use_draft=False)
    assert res.output_ids == refs and sum(scanned) == 4 * 100  # was 4 x (1 + 2 + ... + 100)
    eos = refs[1][40]
    want = [r[: r.index(eos) + 1] if eos in r else r for r in refs]
    assert rt.generate(model, PROMPTS, 100, eos_token_id=eos, use_draft=False).output_ids == want


def test_on_tokens_sees_every_token_once_and_can_end_a_row(tiny_llama, tiny_drafter):
    """The deltas handed to on_tokens add up to each row's output (EOS cut included); a row whose callback returns
    True ends there with a prefix of its full answer and fewer steps, the others are untouched."""
    model = rt.load(checkpoint(tiny_llama, tiny_drafter, 1, num_beams=3, draft_len=4))
    refs = [hf_greedy(tiny_llama, p, 30) for p in PROMPTS]
    model = dataclasses.replace(model, drafter=LookupDrafter([p + r for p, r in zip(PROMPTS, refs)], 256, seed=3))
    eos = refs[1][7]
    seen = {i: [] for i in range(len(PROMPTS))}
    full = rt.generate(model, PROMPTS, 30, eos_token_id=eos, batch_size=3,
                       on_tokens=lambda i, new, lps: seen[i].extend(new))
    assert [seen[i] for i in range(len(PROMPTS))] == full.output_ids

    def end_row_2(i, new, lps):
        seen2[i].extend(new)
        return i == 2 and len(seen2[i]) >= 5
    seen2 = {i: [] for i in range(len(PROMPTS))}
    cut = rt.generate(model, PROMPTS, 30, eos_token_id=eos, batch_size=3, on_tokens=end_row_2)
    assert 5 <= len(cut.output_ids[2]) < len(full.output_ids[2])
    assert cut.output_ids[2] == full.output_ids[2][: len(cut.output_ids[2])] and cut.steps[2] < full.steps[2]
    assert [cut.output_ids[i] for i in (0, 1, 3)] == [full.output_ids[i] for i in (0, 1, 3)]
    assert sum(cut.accepted[2]) + 1 == len(cut.output_ids[2])


def test_draft_shape_limits(tiny_llama, tiny_drafter):
    model = rt.load(checkpoint(tiny_llama, tiny_drafter, 1, num_beams=3, draft_len=4))
    with pytest.raises(ConfigError, match="^num_beams=4 is outside 1..3"):
        rt.generate(model, PROMPTS, 4, num_beams=4)
    with pytest.raises(ConfigError, match="^draft_len=5 is outside 0..4"):
        rt.generate(model, PROMPTS, 4, draft_len=5)
    # a real (random) drafter at its full shape still reproduces greedy
    res = rt.generate(model, PROMPTS[:2], 12, eos_token_id=eos_of(tiny_llama))
    assert res.output_ids == [hf_greedy(tiny_llama, p, 12) for p in PROMPTS[:2]]


def test_token_ids_outside_the_vocabulary_are_one_clear_error(tiny_llama, tiny_drafter):
    """An id from another tokenizer (or a negative one) was an IndexError from the embedding, a traceback from
    every tp rank."""
    for tp in (1, 2):
        ckpt = checkpoint(tiny_llama, tiny_drafter, tp)
        for bad in (256, -1):
            with pytest.raises(ConfigError, match=f"token id {bad} is outside the vocabulary \\(0..255\\)"):
                rt.generate_tp(ckpt, [[1, 2], [3, bad]], 4)
    model = rt.load(checkpoint(tiny_llama, tiny_drafter, 1))
    with pytest.raises(ConfigError, match="token id 300 is outside"):
        rt.prompt_logprobs(model, [[1, 300]], 2)
    assert len(rt.generate(model, [[0, 255]], 2).output_ids[0]) == 2  # both ends of the vocabulary are fine


BAD_ARGUMENTS = [  # generate's keyword -> the one line it gives (each was a traceback or silently wrong)
    ({"batch_size": -1}, "batch_size=-1: it must be None or an integer >= 1"),  # was an empty result
    ({"batch_size": 0}, "batch_size=0"),  # was every prompt in one batch
    ({"eos_token_id": "</s>"}, "eos_token_id='</s>'.*not its eos_token"),  # was ignored: no EOS ever stopped
    ({"max_new_tokens": 2.5}, "max_new_tokens=2.5: it must be an integer >= 1"),  # torch.zeros' TypeError
    ({"seed": None}, "seed=None: it must be an integer"),  # None + 0: TypeError
    ({"temperature": "0.7"}, "temperature='0.7': it must be a number"),
    ({"num_beams": "2"}, "num_beams='2': it must be None or an integer"),
    # a review: an EOS id no token can have was taken, and the generation never stopped at it
    ({"eos_token_id": 10 ** 9}, r"eos_token_id 1000000000 is outside the vocabulary \(0..255\)"),
    ({"eos_token_id": [2, -1]}, r"eos_token_id -1 is outside the vocabulary \(0..255\)"),
    ({"use_draft": "no"}, "use_draft='no': it must be True or False"),  # was drafting (a non-empty string)
    ({"forget_ended": "no", "on_tokens": print}, "forget_ended='no': it must be True or False"),
    ({"on_tokens": 5}, "on_tokens=5: it must be None or a function"),  # 'int' object is not callable, mid-decoding
    ({"admit": 5}, "admit=5: it must be None or a function"),
    ({"on_step": 5}, "on_step=5: it must be None or a function"),
    ({"prompt_ids": [1, 2, 3]}, "prompt_ids is a batch: one list of token ids per prompt"),  # len(int): TypeError
    ({"prompt_ids": [[1, 2.5]]}, "token id 2.5 is not an integer"),  # was decoded as token 2
    ({"prompt_ids": [[1, None]]}, "token id None is not an integer"),  # a TypeError in the prefill (passed the check)
    ({"prompt_ids": [[1, torch.tensor(17)]]}, r"token id tensor\(17\) is not an integer"),  # "17 is outside 0..255"
    # transformers 5's apply_chat_template returns a BatchEncoding (a dict) unless told return_dict=False: the
    # message said "one list of token ids per prompt", which a dict of input_ids seemed to be
    ({"prompt_ids": [{"input_ids": [1, 2], "attention_mask": [1, 1]}]}, r"\['input_ids'\].*return_dict=False"),
    ({"prompt_ids": {"input_ids": [[1, 2]], "attention_mask": [[1, 1]]}}, r"\['input_ids'\].*return_dict=False"),
]


@pytest.mark.parametrize("change, needle", BAD_ARGUMENTS, ids=lambda v: str(v)[:20] if isinstance(v, dict) else "")
def test_bad_arguments_are_one_clear_error(tiny_llama, tiny_drafter, monkeypatch, change, needle):
    """generate's arguments from a user's script are checked as the CLI's options are; generate_tp checks them
    before any rank starts and loads its weights (a tp rank's TypeError was a traceback after the load)."""
    args = {"prompt_ids": PROMPTS, "max_new_tokens": 4, **change}
    model = rt.load(checkpoint(tiny_llama, tiny_drafter, 1))
    with pytest.raises(ConfigError, match=needle):
        rt.generate(model, **args)
    monkeypatch.setattr(rt, "launch", lambda *a, **k: pytest.fail("a rank started"))
    with pytest.raises(ConfigError, match=needle):
        rt.generate_tp(checkpoint(tiny_llama, tiny_drafter, 2), **args)
    with pytest.raises(ConfigError, match="^temperature=-1 is negative"):  # the checks generate_tp lacked before
        rt.generate_tp(checkpoint(tiny_llama, tiny_drafter, 2), PROMPTS, 4, temperature=-1)


API_WORDS = [  # generate's keyword -> its refusal, naming the keyword as the caller wrote it (each named run's flag)
    ({"draft_len": 99}, "draft_len=99 is outside 0..3 (the checkpoint's redrafter_draft_len_per_beam): pass at most 3, or "
                        "reconvert with --draft-len 99 if"),
    ({"num_beams": 99}, "num_beams=99 is outside 1..3 (the checkpoint's redrafter_num_beams): pass at most 3, or "
                        "reconvert with --num-beams 99"),
    ({"num_beams": 0}, "num_beams=0 is outside 1..3 (the checkpoint's redrafter_num_beams)"),
    ({"temperature": -1.0}, "temperature=-1.0 is negative, below 1e-05 or not finite: use 0 for greedy"),
    ({"max_new_tokens": 600}, "prompt_ids[1]: a 9-token prompt + 600 new tokens exceed the model's 512 positions: ask "
                              "for fewer new tokens (max_new_tokens=503 at most)"),
    ({"logprobs": 99}, "logprobs=99 is outside 0..20"),
    ({"sampling_rule": "fast"}, "sampling_rule='fast' is unknown: use one of exact, trtllm"),
]


@pytest.mark.parametrize("change, says", API_WORDS, ids=lambda v: str(v)[:20] if isinstance(v, dict) else "")
def test_the_python_api_names_the_keywords_it_was_given(tiny_llama, tiny_drafter, monkeypatch, change, says):
    """A review: generate(model, ..., draft_len=99) said `--draft-len 99 is outside 0..3`, `run`'s flag, where the
    caller wrote draft_len=99 (and batch_size=0 said `batch_size=0: ...`). Every entry point of the API names its
    keywords; the commands, which check their options before calling it, keep their flags (test_bench, test_run_cli)."""
    from redrafter_trt.runtime.ranks import LocalRanks

    ckpt = checkpoint(tiny_llama, tiny_drafter, 1, num_beams=3, draft_len=3)
    args = {"prompt_ids": PROMPTS, "max_new_tokens": 4, **change}
    monkeypatch.setattr(rt, "launch", lambda *a, **k: pytest.fail("a rank started"))
    ranks = LocalRanks(ckpt)
    for call in (lambda: rt.generate(rt.load(ckpt), **args), lambda: rt.generate_tp(ckpt, **args),
                 lambda: rt.generate_tp(checkpoint(tiny_llama, tiny_drafter, 2, num_beams=3, draft_len=3), **args),
                 lambda: ranks.generate(**args)):
        with pytest.raises(ConfigError) as e:
            call()
        assert str(e.value).startswith(says) and "--" not in str(e.value).partition("reconvert")[0], e.value


def test_the_python_api_names_its_keywords_for_the_drafter_device_and_top_k(tiny_llama, tiny_drafter, monkeypatch):
    """The same for a checkpoint without a drafter (`pass --no-draft`), load's device (`--device cuda:7 ...: use
    --device cpu`) and prompt_logprobs' k (`logprobs 99 is outside 0..20`)."""
    from redrafter_trt.runtime.ranks import LocalRanks

    ckpt = checkpoint(tiny_llama, tiny_drafter, 1)
    model = rt.load(ckpt)
    plain = dataclasses.replace(model, config=dataclasses.replace(model.config, num_beams=0, draft_len=0), drafter=None)
    with pytest.raises(ConfigError, match=r"^the checkpoint has no drafter \(no redrafter_\* keys\): pass "
                                          r"use_draft=False, or convert with a drafter$"):
        rt.generate(plain, PROMPTS, 4)
    assert len(rt.generate(plain, PROMPTS, 4, use_draft=False).output_ids) == len(PROMPTS)
    with pytest.raises(ConfigError, match=r"^k=99 is outside 0..20$"):
        rt.prompt_logprobs(model, PROMPTS, 99)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    none = r"^device='cuda:7' requested but no CUDA device is available: pass device='cpu'$"
    for call in (lambda: rt.load(ckpt, device="cuda:7"), lambda: rt.generate_tp(ckpt, PROMPTS, 4, device="cuda:7"),
                 lambda: LocalRanks(ckpt, device="cuda:7")):
        with pytest.raises(ConfigError, match=none):
            call()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.raises(ConfigError, match=r"^device='cuda:7' but only 2 CUDA devices are visible: pass cuda:0 to "
                                          r"cuda:1$"):
        rt.load(ckpt, device="cuda:7")
    # the commands' own words stay their flags: they check their options first, with run's (rt.RUN)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ConfigError, match=r"^--device cuda:7 but only 1 CUDA device is visible: pass cuda:0$"):
        rt.check_device("cuda:7", spelling=rt.RUN)
    with pytest.raises(ConfigError, match=r"^the checkpoint has no drafter \(no redrafter_\* keys\): pass --no-draft, "
                                          r"or convert with a drafter$"):
        rt.check_draft_shape(plain.config, None, None, True, spelling=rt.RUN)
    with pytest.raises(ConfigError, match=r"^--temperature -1.0 is negative, below 1e-05 or not finite: use 0 for "
                                          r"greedy or a finite value from 1e-05$"):
        rt.check_temperature(-1.0, spelling=rt.RUN)
    with pytest.raises(ConfigError, match=r"^--draft-len 99 is outside 0..5 \(the checkpoint's "
                                          r"redrafter_draft_len_per_beam\): pass at most 5, or reconvert"):
        rt.check_draft_shape(model.config, None, 99, True, spelling=rt.RUN)


def test_a_folder_or_checkpoint_for_the_model_is_one_clear_error(tiny_llama, tiny_drafter):
    """generate_tp takes a checkpoint folder, generate and prompt_logprobs the model load returns: a folder (or
    open_checkpoint's Checkpoint) passed to them was an AttributeError ('str' object has no attribute 'config')."""
    ckpt = checkpoint(tiny_llama, tiny_drafter, 1)
    for wrong in (str(ckpt), rt.open_checkpoint(ckpt)):
        with pytest.raises(ConfigError, match=r"takes the model runtime.load\(checkpoint\) returns"):
            rt.generate(wrong, PROMPTS, 4)
        with pytest.raises(ConfigError, match=r"takes the model runtime.load\(checkpoint\) returns"):
            rt.prompt_logprobs(wrong, PROMPTS, 2)
        with pytest.raises(ConfigError, match=r"forward_logits takes the model runtime.load\(checkpoint\) returns"):
            rt.forward_logits(wrong, PROMPTS[0])  # a review: an AttributeError


def test_forward_logits_refuses_ids_outside_the_vocabulary(tiny_llama, tiny_drafter):
    model = rt.load(checkpoint(tiny_llama, tiny_drafter, 1))
    for ids in ([1, 256], []):  # an IndexError from the embedding; torch's max() on an empty tensor
        with pytest.raises(ConfigError):
            rt.forward_logits(model, ids)


def test_forward_logits_refuses_a_sequence_past_the_models_positions(tiny_llama, tiny_drafter):
    """A review: 698 tokens on a 512-position model gave logits silently (prompt_logprobs refused them)."""
    model = rt.load(checkpoint(tiny_llama, tiny_drafter, 1))
    with pytest.raises(ConfigError, match="a 698-token prompt .* exceed the model's 512 positions"):
        rt.forward_logits(model, [1] * 698)
    assert rt.forward_logits(model, [1] * 512).shape == (512, 256)


def test_an_unknown_keyword_names_the_function_called(tiny_llama, tiny_drafter, monkeypatch):
    """A review: generate_tp(..., top_p=1) said 'check_generate() got an unexpected keyword argument', naming a
    function the caller never called."""
    import inspect

    monkeypatch.setattr(rt, "launch", lambda *a, **k: pytest.fail("a rank started"))
    for tp in (1, 2):
        with pytest.raises(TypeError, match="^generate_tp\\(\\) got an unexpected keyword argument 'top_p'$"):
            rt.generate_tp(checkpoint(tiny_llama, tiny_drafter, tp), PROMPTS, 4, top_p=1)
    # check_call binds a call's arguments as generate would take them through check_generate's signature
    parameters = [inspect.signature(f).parameters for f in (rt.generate, rt.check_generate)]
    assert [(p.name, p.default) for p in list(parameters[0].values())[1:]] == \
        [(p.name, p.default) for p in list(parameters[1].values())[1:]]


def smollm2_exactness(smollm2, n_prompts, max_new, batch_size, seeds, num_beams=None, draft_len=None,
                      randomize=False):
    prompts = chat_prompts(smollm2, n_prompts)
    refs = [hf_greedy(smollm2, p, max_new) for p in prompts]
    eos = eos_of(smollm2)
    mismatches = []
    for seed in seeds:
        model = rt.load(checkpoint(smollm2, fresh_drafter(smollm2, seed=seed, randomize=randomize), 1))
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start: start + batch_size]
            res = rt.generate(model, chunk, max_new, num_beams=num_beams, draft_len=draft_len, eos_token_id=eos)
            for i, out in enumerate(res.output_ids):
                if out != refs[start + i]:
                    mismatches.append((seed, start + i))
        del model
        release_folders()  # one float32 SmolLM2 checkpoint on disk at a time
    return mismatches


def test_smollm2_greedy_exact_fast(smollm2):
    assert smollm2_exactness(smollm2, 3, 24, 1, [0], num_beams=3, draft_len=3) == []
    assert smollm2_exactness(smollm2, 4, 24, 4, [1], num_beams=2, draft_len=4, randomize=True) == []


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2], ids=lambda s: f"seed{s}")
@pytest.mark.parametrize("batch_size", [1, 4], ids=lambda b: f"batch{b}")
@pytest.mark.parametrize("randomize", [False, True], ids=["init-drafter", "random-drafter"])
def test_smollm2_greedy_exact_mt_bench(smollm2, batch_size, randomize, seed):
    """All 80 MT-Bench first turns, 128 new tokens, float32 (each id is one seed: select with -k, e.g.
    `-k "batch4 and seed0"`; the HF references are computed once per process)."""
    assert smollm2_exactness(smollm2, 80, 128, batch_size, [seed], randomize=randomize) == []


@pytest.mark.parametrize("option, needle", [({"dtype": torch.int8}, "dtype torch.int8 is not one of"),
                                            ({"device": "gpu"}, "device 'gpu' is not cpu, cuda or cuda:N")])
def test_load_refuses_a_dtype_or_device_it_cannot_run(tiny_llama, tiny_drafter, monkeypatch, option, needle):
    """load(dtype=torch.int8) loaded and then failed in the first generate ('value cannot be converted to type
    int8_t'), load(device='gpu') was torch's RuntimeError; generate_tp refuses both before any rank starts."""
    with pytest.raises(ConfigError, match=needle):
        rt.load(checkpoint(tiny_llama, tiny_drafter, 1), **option)
    monkeypatch.setattr(rt, "launch", lambda *a, **k: pytest.fail("a rank started"))
    with pytest.raises(ConfigError, match=needle):
        rt.generate_tp(checkpoint(tiny_llama, tiny_drafter, 2), PROMPTS, 4, **option)


def test_the_drafters_clock_records_its_events_on_the_models_gpu(monkeypatch):
    """A review: on_step's drafter timing recorded its two CUDA events on the current device's stream (cuda:0, as
    nothing sets the device for one rank), so a model served on --device cuda:1 timed an empty stream (about 0 ms)
    and opened a CUDA context on GPU 0; they go on the stream of the device the model runs on. (Fakes: no GPU here.)"""
    from redrafter_trt.runtime.decode import _Clock

    recorded = []

    class Event:  # torch.cuda.Event's interface: elapsed_time in milliseconds
        def __init__(self, enable_timing: bool = False):
            assert enable_timing

        def record(self, stream=None):
            recorded.append(stream)

        def elapsed_time(self, end) -> float:
            return 2.5

    monkeypatch.setattr(torch.cuda, "Event", Event)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: ("stream of", device))
    clock = _Clock(torch.device("cuda:1"))
    clock.mark()
    clock.mark()
    assert recorded == [("stream of", torch.device("cuda:1"))] * 2
    assert clock.seconds() == 0.0025 and clock.marks == []
