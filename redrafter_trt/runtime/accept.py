"""Acceptance: which drafted tokens the base model keeps, and the token it adds after them.

Greedy: for each beam, n = length of the leading run where drafted token d+1 equals the base argmax after the
prefix of length d+1; the beam with the largest n wins (the first on ties). The base argmax after the accepted
prefix is emitted too, so a step emits n + 1 tokens and the output is exactly the base model's greedy output.

Sampling (temperature T > 0), exact: the drafts are treated as proposals of a deterministic drafter (q is a point
mass on each drafted token). Each emitted token is drawn by inverse transform from the base distribution
p = softmax(logits_u / T) at its tree node u, one uniform per token: the token whose interval of p's cumulative sum
(in vocabulary order) holds it. When that token is a drafted child of u the child is accepted and becomes the new
node; else (or at a leaf) the token ends the step. P(accept child x) = p(x), as recursive rejection of the children
in turn gives, and every token follows p exactly; the drafter's own probabilities are not used. A row with a
generator of its own takes its k-th uniform for its k-th token whatever was drafted, so its answer is the one plain
decoding draws from the same generator: drafts, their order and the rows batched beside it (whose drafts may break a
near-tie otherwise) change none of it, only how many tokens a step emits. Rows sharing one generator take its
uniforms in row order, as many per step as each emits: there the drafts do change the samples.

Sampling as TensorRT-LLM's engine does (`accept_sample_trtllm`, to predict a sampling engine's tokens per step; its
output is biased: the drafts come from a beam search, q is the drafter's untempered top-50 distribution, and the
best of W independent tests is kept): each beam's drafted token d+1 is accepted when u < p(x) / q(x), one uniform
u per beam and depth, p = softmax(logits / T) at its node; a beam's count is its leading run of acceptances; the
first beam with the largest count wins; the next token is drawn from p after a fully accepted beam, else from
max(p - q, 0) at the first rejection (`redrafter_helper._validate_draft_tokens`, `_prepare_drafter_input`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..errors import ConfigError
from .tree import Tree


@dataclass
class Acceptance:
    path: torch.Tensor     # [B, L] packed nodes kept in the KV cache (first `count` valid; node 0 = the root)
    count: torch.Tensor    # [B] accepted drafted tokens + 1 (= tokens emitted this step = nodes kept)
    emitted: torch.Tensor  # [B, L] tokens emitted this step (first `count` valid; the last is the next root)
    last: torch.Tensor     # [B] packed node whose hidden state is the next drafter context


def accept_greedy(beams: torch.Tensor, tree: Tree, pred: torch.Tensor) -> Acceptance:
    """beams [B, W, L], pred [B, N] the base argmax at the packed nodes -> Acceptance."""
    B, W, L = beams.shape
    rows = torch.arange(B, device=beams.device)
    pred_after = pred.gather(1, tree.node_of.reshape(B, W * L)).reshape(B, W, L)
    matched = (beams[:, :, 1:] == pred_after[:, :, :-1]).long().cumprod(-1).sum(-1)  # [B, W]
    best = matched.argmax(-1)
    n = matched[rows, best]
    path = tree.node_of[rows, best]  # [B, L]
    last = path.gather(1, n[:, None])[:, 0]
    emitted = torch.cat([beams[rows, best, 1:], beams[:, 0, :1]], dim=-1).clone()
    emitted[rows, n] = pred[rows, last]
    return Acceptance(path=path, count=n + 1, emitted=emitted, last=last)


def _per_row(generator: torch.Generator | list[torch.Generator], B: int) -> list[torch.Generator]:
    """One CPU generator per row: a list as given (each row its own stream), else that one for every row."""
    return list(generator) if isinstance(generator, (list, tuple)) else [generator] * B


def undefined(whose: str = "the base's") -> ConfigError:
    """The refusal of a distribution a NaN or +Inf logit left undefined (the base's, or the drafter's)."""
    return ConfigError(f"{whose} logits hold NaN or Inf, so its next-token distribution is undefined: a float16 "
                       "lm_head overflowed (convert with --dtype bfloat16) or its weights are broken (`redrafter-trt "
                       "inspect --values` names the tensors)")


def check_defined(*totals: float) -> None:
    """Refuse next-token distributions whose totals (p's sums) are not all positive and finite: a NaN or +Inf logit
    makes p NaN, which multinomial refuses with a RuntimeError and an inverse transform maps to the vocabulary's last
    token every time. Every sampled token (the prefill's first too) is drawn after this check."""
    if not all(0 < t < math.inf for t in totals):  # Python floats: a tensor's comparisons cost 40x per token
        raise undefined()


def check_finite(logits: torch.Tensor) -> None:
    """Refuse logits [..., V] (or log-probabilities) of a row whose largest is NaN or +Inf (amax keeps a NaN): the
    greedy prefill's, whose argmax would emit a wrong token in silence, and those logprobs are read from."""
    if not bool(logits.amax(-1).isfinite().all()):
        raise undefined()


def _check_read(base_top: torch.Tensor, q_top: torch.Tensor, counts: torch.Tensor) -> None:
    """TensorRT-LLM's rule reads p and q at each beam's depths up to its first rejection (its count), not only where
    the next token is drawn: a NaN there made u < p/q False, rejecting the beam in silence. base_top, q_top
    [B, W, L-1]: the largest logit (log-probability) of each row, finite unless the row is undefined (amax keeps a
    NaN; a +Inf logit is +Inf; a row of -Inf is -Inf)."""
    read = torch.arange(base_top.shape[-1]) <= counts[..., None]
    if not bool(base_top[read].isfinite().all()):
        raise undefined()
    if not bool(q_top[read].isfinite().all()):
        raise undefined("the drafter's")


def _inverse_cdf(p: torch.Tensor, u: float) -> int:
    """p [V] (non-negative, not normalised), u in [0, 1) -> the token whose interval of p's cumulative sum holds
    u * p.sum() (never one of probability 0). A NaN in p is refused (check_defined)."""
    c = p.cumsum(0)
    check_defined(float(c[-1]))
    tok = int(torch.searchsorted(c, u * c[-1], right=True))
    return tok if tok < len(p) else int(p.nonzero()[-1])  # u * sum rounded up to the sum itself


def accept_sample(beams: torch.Tensor, tree: Tree, logits: torch.Tensor, temperature: float,
                  generator: torch.Generator | list[torch.Generator]) -> Acceptance:
    """Exact sampling over the tree, one uniform per emitted token (see module docstring). generator: a CPU
    generator, or one per row (row b draws from generator[b] only, so its tokens do not depend on the other rows)."""
    B, W, L = beams.shape
    gens = _per_row(generator, B)
    probs = torch.softmax(logits.double() / temperature, dim=-1).cpu()
    node_of, toks = tree.node_of.tolist(), beams.tolist()
    path = torch.zeros(B, L, dtype=torch.long)
    emitted = torch.zeros(B, L, dtype=torch.long)
    count = torch.zeros(B, dtype=torch.long)
    last = torch.zeros(B, dtype=torch.long)
    for b in range(B):
        node, depth, nodes, out = 0, 0, [0], []
        while True:
            tok = _inverse_cdf(probs[b, node], torch.rand((), generator=gens[b], dtype=torch.float64).item())
            out.append(tok)
            children = ({toks[b][w][depth + 1]: node_of[b][w][depth + 1] for w in range(W)
                         if node_of[b][w][depth] == node} if depth + 1 < L else {})
            if tok not in children:
                break
            node, depth = children[tok], depth + 1
            nodes.append(node)
        k = len(out)
        path[b, :k] = torch.tensor(nodes)
        emitted[b, :k] = torch.tensor(out)
        count[b], last[b] = k, nodes[-1]
    dev = beams.device
    return Acceptance(path=path.to(dev), count=count.to(dev), emitted=emitted.to(dev), last=last.to(dev))


def accept_sample_trtllm(beams: torch.Tensor, tree: Tree, logits: torch.Tensor, temperature: float,
                         draft_logp: torch.Tensor, generator: torch.Generator | list[torch.Generator]) -> Acceptance:
    """TensorRT-LLM's sampling acceptance (module docstring). draft_logp [B, W, L-1, V]: `beam_search`'s logp.
    The uniforms [B, W, L-1] are drawn first, row by row, then one token per row, in row order (generator: a CPU
    generator, or one per row: row b draws from generator[b] only)."""
    B, W, L = beams.shape
    gens = _per_row(generator, B)
    V = logits.shape[-1]
    rows = torch.arange(B)
    logp = torch.log_softmax(logits.double() / temperature, dim=-1).cpu()  # [B, N, V]
    node_of, beams_c = tree.node_of.cpu(), beams.cpu()
    base = logp.gather(1, node_of.reshape(B, W * L, 1).expand(B, W * L, V)).reshape(B, W, L, V)
    q = draft_logp.double().cpu()
    drafted = beams_c[:, :, 1:, None]
    ratio = (base[:, :, :-1].gather(-1, drafted) - q.gather(-1, drafted))[..., 0].exp()  # p(x) / q(x) [B, W, L-1]
    u = torch.stack([torch.rand(W, L - 1, generator=g, dtype=torch.float64) for g in gens])  # one generator:
    # the same draws as torch.rand(B, W, L - 1)
    counts = (u < ratio).long().cumprod(-1).sum(-1)  # [B, W]
    _check_read(logits.amax(-1).cpu().gather(1, node_of[:, :, :-1].reshape(B, -1)).reshape(B, W, L - 1),
                draft_logp.amax(-1).cpu(), counts)
    best = counts.argmax(-1)  # the first of the longest
    n = counts[rows, best]
    emitted = torch.cat([beams_c[rows, best, 1:], beams_c[:, 0, :1]], dim=-1).clone()
    for b in range(B):
        k, p = int(n[b]), base[b, best[b], int(n[b])].exp()
        check_defined(float(p.sum()))
        residual = p if k == L - 1 else (p - q[b, best[b], k].exp()).clamp(min=0)
        if float(residual.sum()) <= 0.0:  # p = q on q's support: nothing left to correct, draw from p
            residual = p
        emitted[b, k] = int(torch.multinomial(residual, 1, generator=gens[b]))
    path = node_of[rows, best]
    last = path.gather(1, n[:, None])[:, 0]
    dev = beams.device
    return Acceptance(path=path.to(dev), count=(n + 1).to(dev), emitted=emitted.to(dev), last=last.to(dev))
