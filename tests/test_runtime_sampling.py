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
    # power: "accept the first child whenever p(child) > 0.1" is biased and must fail
    biased = torch.where(torch.rand(B, generator=g) < 0.9, torch.zeros_like(first), first)
    assert chi_square_pvalue(torch.bincount(biased, minlength=V), p[0]) < ALPHA


@pytest.fixture(scope="module")
def sharp_llama(tmp_path_factory):
    """A tiny Llama with large weights: peaked next-token distributions, so drafts get accepted often."""
    return make_hf(tmp_path_factory.mktemp("sharp"), "llama", initializer_range=0.5)


def test_end_to_end_second_token_distribution(sharp_llama, tiny_drafter):
    tiny_llama, temp, B = sharp_llama, 0.8, 1500
    model = rt.load(checkpoint(tiny_llama, tiny_drafter, 1, num_beams=3, draft_len=3))
    prompt = [1, 17, 33, 5, 250, 99]
    plain = rt.generate(model, [prompt] * 64, 8, temperature=temp, seed=3, use_draft=False)
    model = dataclasses.replace(model, drafter=LookupDrafter([prompt + o for o in plain.output_ids], 256, seed=4))
    res = rt.generate(model, [prompt] * B, 3, temperature=temp, seed=5)
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
