"""Sampling acceptance is exact: emitted tokens follow the base softmax at the temperature (chi-square tests),
on a hand-made tree (first and second emitted token) and end to end on a tiny Llama. A deliberately biased
scheme fails the same test, so the test can fail."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from redrafter_trt import runtime as rt
from redrafter_trt.runtime.accept import accept_sample
from redrafter_trt.runtime.tree import build_tree
from tinymodels import make_hf
from test_runtime_support import LookupDrafter, checkpoint, chi_square_pvalue, hf_model, one_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")
ALPHA = 1e-3


def test_tree_acceptance_is_exact():
    V, B, temp = 6, 20000, 0.7
    beams = torch.tensor([[5, 0, 1], [5, 1, 2], [5, 0, 3]]).expand(B, 3, 3)
    tree = build_tree(beams)  # nodes: 0 root, 1 "0", 2 "0,1", 3 "1", 4 "1,2", 5 "0,3"
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, V, generator=g) * 1.5
    logits[0] = torch.tensor([2.0, 1.8, 1.5, 0.5, 0.2, -1.0])
    acc = accept_sample(beams, tree, logits.expand(B, 6, V), temp, torch.Generator().manual_seed(1))
    p = torch.softmax(logits.double() / temp, -1)
    first = acc.emitted[:, 0]
    after0 = acc.emitted[first == 0, 1]  # child "0" accepted: the next token follows p at node 1
    assert len(after0) > 1000
    pvalues = [chi_square_pvalue(torch.bincount(first, minlength=V), p[0]),
               chi_square_pvalue(torch.bincount(after0, minlength=V), p[1])]
    print(f"tree chi-square p-values (first token, second after child 0): {pvalues}")
    assert min(pvalues) > ALPHA
    assert (acc.count[(first != 0) & (first != 1)] == 1).all()  # a non-drafted token ends the step
    assert (acc.count <= 3).all() and set(acc.last.tolist()) <= set(range(6))
    assert (acc.count == 3).any()  # the last draft depth is accepted too
    _assert_accepted_a_tree_path(acc, tree)
    # power: "accept the first child whenever p(child) > 0.1" is biased and must fail
    biased = torch.where(torch.rand(B, generator=g) < 0.9, torch.zeros_like(first), first)
    assert chi_square_pvalue(torch.bincount(biased, minlength=V), p[0]) < ALPHA


def _assert_accepted_a_tree_path(acc, tree):
    """Every row: accepted node i (i >= 1) is at depth i, holds the token emitted before it and descends from
    accepted node i-1 (so is its child); the row's last emitted token is no child of its last accepted node."""
    B, L = acc.path.shape
    rows = torch.arange(B)
    for i in range(1, L):
        on = acc.count > i
        node, prev = acc.path[on, i], acc.path[on, i - 1]
        assert (tree.depth[rows[on], node] == i).all()
        assert (tree.tokens[rows[on], node] == acc.emitted[on, i - 1]).all()
        assert tree.mask[rows[on], node, prev].all()
    last_tok = acc.emitted[rows, acc.count - 1]  # [B]
    child = tree.mask[rows, :, acc.last] & (tree.depth == tree.depth[rows, acc.last][:, None] + 1)  # [B, N]
    assert not (child & (tree.tokens == last_tok[:, None])).any()


@pytest.mark.parametrize("rule", ["exact", "trtllm"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_sampling_refuses_non_finite_logits(bad, rule):
    """A NaN or +Inf logit (a float16 lm_head overflowing) makes p NaN: refused, as multinomial refused it, rather
    than the inverse transform silently emitting the vocabulary's last token; under TensorRT-LLM's rule it was
    multinomial's RuntimeError (a traceback in `run`)."""
    from redrafter_trt.runtime.accept import accept_sample_trtllm

    V = 8
    beams = torch.tensor([[[3, 1], [3, 2]]])
    logits = torch.randn(1, 3, V)
    logits[0, 0, 2] = bad
    g = torch.Generator().manual_seed(0)
    with pytest.raises(rt.ConfigError, match="logits hold NaN or Inf"):
        if rule == "exact":
            accept_sample(beams, build_tree(beams), logits, 1.0, g)
        else:
            accept_sample_trtllm(beams, build_tree(beams), logits, 1.0, torch.randn(1, 2, 1, V).log_softmax(-1), g)


def _two_beams_one_broken(broken: str | None):
    """One row, beams 3-1-4 and 3-2-5 (nodes: 0 root, 1 "3,1", 2 "3,1,4", 3 "3,2", 4 "3,2,5"): both first drafts
    accepted for sure (q of each tiny), beam 0's second rejected for sure (p of 4 at node 1 about 0), beam 1's
    second accepted for sure (q of 5 tiny), unless its node 3 (broken="p") or its q there (broken="q") is NaN."""
    V = 8
    beams = torch.tensor([[[3, 1, 4], [3, 2, 5]]])
    logits = torch.zeros(1, 5, V)
    logits[0, 1, 4] = -1e4
    draft_logp = torch.full((1, 2, 2, V), 10.0)
    draft_logp[0, :, 0, 1:3] = draft_logp[0, 1, 1, 5] = -1e4  # q of beam 1's drafts tiny, of beam 0's 4 not
    draft_logp = draft_logp.log_softmax(-1)
    if broken == "p":
        logits[0, 3, 0] = torch.nan
    elif broken == "q":
        draft_logp[0, 1, 1] = torch.nan
    return beams, logits, draft_logp


@pytest.mark.parametrize("broken, whose", [("p", "the base's logits"), ("q", "the drafter's logits")])
def test_trtllm_rule_refuses_nan_at_every_node_it_reads(broken, whose):
    """Under TensorRT-LLM's rule each beam's drafts are tested at their own nodes, not only where the next token is
    drawn: a NaN p (or q) there made u < p/q False, rejecting that beam in silence (another beam kept, the count
    biased). Both are refused; with them defined beam 1 is kept, all its drafts accepted."""
    from redrafter_trt.runtime.accept import accept_sample_trtllm

    def accept(broken):
        beams, logits, draft_logp = _two_beams_one_broken(broken)
        return accept_sample_trtllm(beams, build_tree(beams), logits, 1.0, draft_logp, torch.Generator().manual_seed(0))

    fine = accept(None)
    assert fine.count.tolist() == [3] and fine.path.tolist() == [[0, 3, 4]]
    with pytest.raises(rt.ConfigError, match=f"{whose} hold NaN or Inf"):
        accept(broken)


@pytest.mark.parametrize("first_rejected", [False, True])
def test_trtllm_rule_reads_no_node_past_a_beams_rejection(first_rejected):
    """A NaN where no rule reads it changes nothing and is no refusal (a review: checking every node, or the nodes
    one depth too deep, refused this step): beam 0's node 2 ("3,1,4", past its rejection at depth 1), or its node 1
    ("3,1") where its first draft is rejected at the root."""
    from redrafter_trt.runtime.accept import accept_sample_trtllm

    beams, logits, draft_logp = _two_beams_one_broken(None)
    if first_rejected:  # p of beam 0's first draft about 0, its q 1/8
        logits[0, 0, 1], draft_logp[0, 0, 0] = -1e4, torch.zeros(draft_logp.shape[-1]).log_softmax(-1)
    logits[0, 1 if first_rejected else 2, 0] = torch.nan
    acc = accept_sample_trtllm(beams, build_tree(beams), logits, 1.0, draft_logp, torch.Generator().manual_seed(0))
    assert acc.count.tolist() == [3] and acc.path.tolist() == [[0, 3, 4]]


@pytest.mark.parametrize("rule, use_draft", [("exact", True), ("exact", False), ("trtllm", True)])
def test_a_prompts_first_sampled_token_refuses_non_finite_logits(tiny_llama, tiny_drafter, monkeypatch, rule,
                                                                 use_draft):
    """The first token, sampled from the prefill's logits before any drafting, was multinomial's RuntimeError on a
    NaN or +Inf logit: the one-line refusal of the steps after it. Greedy decoding took the argmax, emitting the
    +Inf token in silence (an lm_head that overflowed float16): refused there too, once, at the prompt."""
    model = rt.load(checkpoint(tiny_llama, tiny_drafter, 1, num_beams=3, draft_len=3))
    logits, seven = model.base.logits, torch.tensor([7])
    monkeypatch.setattr(model.base, "logits", lambda hidden: logits(hidden).index_fill(-1, seven, torch.inf))
    with pytest.raises(rt.ConfigError, match="logits hold NaN or Inf"):
        rt.generate(model, [[1, 17, 33, 5]], 4, temperature=0.8, use_draft=use_draft, sampling_rule=rule)
    with pytest.raises(rt.ConfigError, match="logits hold NaN or Inf"):
        rt.generate(model, [[1, 17, 33, 5]], 4, use_draft=use_draft)
    monkeypatch.setattr(model.base, "logits", logits)
    assert len(rt.generate(model, [[1, 17, 33, 5]], 4, use_draft=use_draft).output_ids[0]) == 4


def test_logprobs_of_nan_logits_are_refused_not_written(tiny_llama, tiny_drafter, monkeypatch):
    """logprobs read from NaN logits were NaN, which json.dumps writes as `NaN`, no JSON number (serve's answer):
    refused in one line. (The prompt's own logits are fine here: the NaN comes at a later step.)"""
    from redrafter_trt.runtime.decode import token_logprobs

    model = rt.load(checkpoint(tiny_llama, tiny_drafter, 1, num_beams=3, draft_len=3))
    hidden, tokens = torch.zeros(1, 2, model.base.cfg.hidden_size), torch.tensor([[3, 4]])
    assert len(token_logprobs(model.base, hidden, tokens, 2)[0]) == 2
    logits = model.base.logits
    monkeypatch.setattr(model.base, "logits", lambda h: logits(h).index_fill(-1, torch.tensor([7]), torch.nan))
    with pytest.raises(rt.ConfigError, match="logits hold NaN or Inf"):
        token_logprobs(model.base, hidden, tokens, 2)


@pytest.fixture(scope="module")
def sharp_llama(tmp_path_factory):
    """A tiny Llama with large weights: peaked next-token distributions, so drafts get accepted often."""
    return make_hf(tmp_path_factory.mktemp("sharp"), "llama", initializer_range=0.5)


def test_end_to_end_second_token_distribution(sharp_llama, tiny_drafter):
    tiny_llama, temp, B = sharp_llama, 0.8, 1500
    model = rt.load(checkpoint(tiny_llama, tiny_drafter, 1, num_beams=3, draft_len=3))
    prompt = [1, 17, 33, 5, 250, 99]
    # a seed per copy: one seed for all would draw the same sample for each
    plain = rt.generate(model, [prompt] * 64, 8, temperature=temp, seed=list(range(64)), use_draft=False)
    model = dataclasses.replace(model, drafter=LookupDrafter([prompt + o for o in plain.output_ids], 256, seed=4))
    res = rt.generate(model, [prompt] * B, 3, temperature=temp, seed=list(range(5, 5 + B)))
    assert sum(a[0] for a in res.accepted) > B * 1.3  # drafts were accepted in the first decoding step
    with torch.no_grad():
        hf = hf_model(tiny_llama)
        p1 = torch.softmax(hf(torch.tensor([prompt])).logits[0, -1].double() / temp, -1)
        seqs = torch.cat([torch.tensor([prompt]).expand(256, -1), torch.arange(256)[:, None]], 1)
        p2_given = torch.softmax(hf(seqs).logits[:, -1].double() / temp, -1)
    p2 = p1 @ p2_given
    out = torch.tensor(res.output_ids)
    pvalues = [chi_square_pvalue(torch.bincount(out[:, i], minlength=256), p) for i, p in enumerate([p1, p2])]
    print(f"end-to-end chi-square p-values (token 1, token 2): {pvalues}")
    assert min(pvalues) > ALPHA


def _trtllm_reference(beams, node_of, logits, temperature, draft_logp, generator):
    """TensorRT-LLM's `_validate_draft_tokens` and `_prepare_drafter_input` (redrafter_helper.py, the version with
    warp_logits), transcribed op by op: (num_accepted [B], beam [B], next token [B])."""
    B, W, L = beams.shape
    V = logits.shape[-1]
    flat_log_probs = torch.log_softmax(logits.double() / temperature, dim=-1)
    all_base = flat_log_probs.gather(1, node_of.reshape(B, W * L, 1).expand(B, W * L, V)).reshape(B, W, L, V)
    base_log_probs, last_base_log_probs = all_base[:, :, : L - 1], all_base[:, :, L - 1]
    proposed = beams[:, :, 1:, None]
    token_base = base_log_probs.gather(-1, proposed)[..., 0]
    token_draft = draft_logp.double().gather(-1, proposed)[..., 0]
    rand_data = torch.rand(B, W, L - 1, generator=generator, dtype=torch.float64)
    cmp = (rand_data < (token_base - token_draft).exp()).long()
    equality = (cmp.cumsum(-1) == torch.arange(1, L)).long()
    num_accepted = equality.sum(-1)
    max_accepted, beam = num_accepted.max(-1)  # topk(k=1): the first of the largest
    nexts = []
    for b in range(B):
        n, w = int(max_accepted[b]), int(beam[b])
        if n == L - 1:
            probs = last_base_log_probs[b, w].exp()
        else:
            probs = torch.relu(base_log_probs[b, w, n].exp() - draft_logp[b, w, n].double().exp())
            if float(probs.sum()) <= 0:
                probs = base_log_probs[b, w, n].exp()
        nexts.append(int(torch.multinomial(probs, 1, generator=generator)))
    return max_accepted, beam, torch.tensor(nexts)


@pytest.mark.parametrize("W, L", [(3, 4), (2, 4), (4, 3)])
def test_trtllm_rule_is_tensorrt_llms(W, L):
    """accept_sample_trtllm against the transcription above, on the same draws: counts, the beam kept, the path
    and every emitted token. And with q = p every draft is accepted (u < 1 always). W != L - 1 too (a review: the
    uniforms drawn as (L - 1, W) passed at W = 3, L = 4 alone)."""
    from redrafter_trt.runtime.accept import accept_sample_trtllm

    B, V, temp = 64, 12, 0.9
    g = torch.Generator().manual_seed(0)
    beams = torch.randint(0, 4, (B, W, L), generator=g)  # few token ids: shared prefixes, merged tree nodes
    tree = build_tree(beams)
    logits = torch.randn(B, tree.tokens.shape[1], V, generator=g) * 2
    draft_logp = torch.log_softmax(torch.randn(B, W, L - 1, V, generator=g) * 2, -1)
    acc = accept_sample_trtllm(beams, tree, logits, temp, draft_logp, torch.Generator().manual_seed(7))
    n, beam, nexts = _trtllm_reference(beams, tree.node_of, logits, temp, draft_logp, torch.Generator().manual_seed(7))
    rows = torch.arange(B)
    assert torch.equal(acc.count, n + 1) and n.float().mean() > 0.3  # some drafts accepted, not all
    assert torch.equal(acc.path, tree.node_of[rows, beam]) and torch.equal(acc.last, tree.node_of[rows, beam, n])
    for b in range(B):
        k = int(n[b])
        assert acc.emitted[b, :k].tolist() == beams[b, beam[b], 1: k + 1].tolist() and acc.emitted[b, k] == nexts[b]
    p_at = torch.log_softmax(logits.double() / temp, -1).gather(
        1, tree.node_of.reshape(B, W * L, 1).expand(B, W * L, V)).reshape(B, W, L, V)[:, :, : L - 1]
    same = accept_sample_trtllm(beams, tree, logits, temp, p_at, torch.Generator().manual_seed(1))
    assert (same.count == L).all()


def test_beam_search_logp_is_what_each_token_was_chosen_from(tiny_llama, tiny_drafter):
    """with_logp changes no beam; logp[b, w, d] is the masked step distribution along beam w's own tokens."""
    from redrafter_trt.runtime.drafter import LOG_0

    model = rt.load(checkpoint(tiny_llama, tiny_drafter, 1, num_beams=3, draft_len=3), drafter_int8=True)  # either head
    dr = model.drafter
    g = torch.Generator().manual_seed(0)
    context, token = torch.randn(4, 64, generator=g), torch.randint(0, 256, (4,), generator=g)
    beams, logp = dr.beam_search(context, token, 3, 3, with_logp=True)
    assert torch.equal(beams, dr.beam_search(context, token, 3, 3)) and logp.shape == (4, 3, 3, 256)
    state = torch.zeros(4, 3, 64)
    for d in range(3):
        state = dr.next_state(state, beams[:, :, d])
        logits = dr.logits(context[:, None].expand(4, 3, 64), state)
        logits = logits - logits.max(-1, keepdim=True).values
        kth = logits.topk(50, -1).values[..., -1:]
        want = logits.masked_fill(logits < kth, LOG_0).log_softmax(-1)
        mine, kept = logp[:, :, d] > -100, want > -100  # the 50 kept
        assert (mine == kept).float().mean() > 0.98  # a float near-tie at the 50th may differ (other batch shapes)
        assert torch.allclose(logp[:, :, d][mine & kept], want[mine & kept], atol=1e-4)
        chosen = beams[:, :, d + 1, None]
        assert torch.allclose(logp[:, :, d].gather(-1, chosen), want.gather(-1, chosen), atol=1e-4)
        assert (logp[:, :, d].gather(-1, chosen) > -100).all()  # every drafted token was among the 50 kept


def test_generate_with_tensorrt_llms_sampling_rule(tiny_llama, tiny_drafter):
    """The engine's rule end to end: seeded, and greedy decoding unchanged by it."""
    model = rt.load(checkpoint(tiny_llama, tiny_drafter, 1, num_beams=3, draft_len=3))
    prompts = [[1, 17, 33, 5], [250, 99, 4]]
    runs = [rt.generate(model, prompts, 12, temperature=0.8, seed=2, sampling_rule="trtllm") for _ in range(2)]
    assert runs[0].output_ids == runs[1].output_ids and all(len(o) == 12 for o in runs[0].output_ids)
    greedy = rt.generate(model, prompts, 12, sampling_rule="trtllm").output_ids
    assert greedy == rt.generate(model, prompts, 12).output_ids
    with pytest.raises(rt.ConfigError, match="^sampling_rule='medusa' is unknown"):
        rt.generate(model, prompts, 4, temperature=0.8, sampling_rule="medusa")
    # 1e-300 made NaN probabilities (a traceback in `run`); NaN sampled one token over and over, silently
    for t in (-1.0, 1e-300, float("nan"), float("inf")):
        with pytest.raises(rt.ConfigError, match="negative, below 1e-05 or not finite"):
            rt.generate(model, prompts, 4, temperature=t)


@pytest.mark.parametrize("rule", ["exact", "trtllm"])
def test_seeds_per_prompt_make_each_rows_sample_its_own(tiny_llama, tiny_drafter, rule):
    """seed as a list: each prompt's row draws from its own generator, so its sample is the one it gets alone, first,
    last or admitted later as a Joining of that seed (a server's prompt list: one shared generator made a prompt's
    answer depend on the prompts beside it). One integer seed is that seed for every prompt, as `run --seed` passes
    it (a review: it shared one generator per batch, seeded seed + batch index, so Python's samples changed with
    batch_size and the prompts beside them, and differed from run's)."""
    from redrafter_trt.runtime.decode import Joining

    model = rt.load(checkpoint(tiny_llama, tiny_drafter, 1, num_beams=3, draft_len=3))
    prompts = [[1, 17, 33, 5], [250, 99, 4], [7, 8, 9, 10, 11]]
    kw = dict(temperature=1.0, sampling_rule=rule)
    alone = [rt.generate(model, [p], 10, seed=[40 + i], **kw).output_ids[0] for i, p in enumerate(prompts)]
    assert alone[0] == rt.generate(model, prompts[:1], 10, seed=40, **kw).output_ids[0]  # one row: as an int seed
    together = rt.generate(model, prompts, 10, seed=[40, 41, 42], **kw).output_ids
    assert together == alone
    reverse = rt.generate(model, prompts[::-1], 10, seed=[42, 41, 40], **kw).output_ids
    assert reverse == alone[::-1]
    left = [[Joining(prompts[1], 10, seed=41), Joining(prompts[2], 10, seed=42)]]
    joined = rt.generate(model, prompts[:1], 10, seed=[40], admit=lambda running: left.pop() if left else [], **kw)
    assert joined.output_ids == alone
    same = [rt.generate(model, [p], 10, seed=[40], **kw).output_ids[0] for p in prompts]
    assert same != alone  # the seed decides
    for batch_size in (None, 1, 2):
        assert rt.generate(model, prompts, 10, seed=40, batch_size=batch_size, **kw).output_ids == same
    left = [[Joining(prompts[1], 10), Joining(prompts[2], 10)]]  # no seed of their own: the batch's
    joined = rt.generate(model, prompts[:1], 10, seed=40, admit=lambda running: left.pop() if left else [], **kw)
    assert joined.output_ids == same
    if rule == "exact":  # one uniform per token: drafts change none of the tokens, only how many a step emits
        assert alone == [rt.generate(model, [p], 10, seed=[40 + i], use_draft=False, **kw).output_ids[0]
                         for i, p in enumerate(prompts)]
    with pytest.raises(rt.ConfigError, match=r"^seed: 2 seeds for 3 prompts: give one seed per prompt"):
        rt.generate(model, prompts, 4, seed=[1, 2], **kw)
    with pytest.raises(rt.ConfigError, match=r"^seed: 1 seed for 3 prompts: "):  # counted in words: '1 seeds' was
        rt.generate(model, prompts, 4, seed=[1], **kw)
