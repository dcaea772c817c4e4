"""Acceptance: which drafted tokens the base model keeps, and the token it adds after them.

Greedy: for each beam, n = length of the leading run where drafted token d+1 equals the base argmax after the
prefix of length d+1; the beam with the largest n wins (the first on ties). The base argmax after the accepted
prefix is emitted too, so a step emits n + 1 tokens and the output is exactly the base model's greedy output.

Sampling (temperature T > 0), exact: the drafts are treated as proposals of a deterministic drafter (q is a point
mass on each drafted token). At tree node u with base distribution p = softmax(logits_u / T), the node's distinct
children x1, x2, ... are tried in beam order: accept x_i with probability p_i(x_i), where p_1 = p and
p_{i+1} = p_i with x_i zeroed, renormalised. An accepted child becomes the new node; if every child is rejected
(or u is a leaf), one token is drawn from the last p_i and the step ends. P(emit x) = p(x) for every x (for a child
x_i: prod_{j<i}(1 - p_j(x_j)) * p_i(x_i) = p(x_i); for any other token the same telescoping product), so the output
has exactly the base model's sampling distribution at temperature T. The drafter's own probabilities are not used.

Sampling as TensorRT-LLM's engine does (`accept_sample_trtllm`, to predict a sampling engine's tokens per step; its
output is biased: the drafts come from a beam search, q is the drafter's untempered top-50 distribution, and the
best of W independent tests is kept): each beam's drafted token d+1 is accepted when u < p(x) / q(x), one uniform
u per beam and depth, p = softmax(logits / T) at its node; a beam's count is its leading run of acceptances; the
first beam with the largest count wins; the next token is drawn from p after a fully accepted beam, else from
max(p - q, 0) at the first rejection (`redrafter_helper._validate_draft_tokens`, `_prepare_drafter_input`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

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


def accept_sample(beams: torch.Tensor, tree: Tree, logits: torch.Tensor, temperature: float,
                  generator: torch.Generator) -> Acceptance:
    """Exact recursive rejection sampling over the tree (see module docstring). generator: CPU generator."""
    B, W, L = beams.shape
    probs = torch.softmax(logits.double() / temperature, dim=-1).cpu()
    node_of, toks = tree.node_of.tolist(), beams.tolist()
    path = torch.zeros(B, L, dtype=torch.long)
    emitted = torch.zeros(B, L, dtype=torch.long)
    count = torch.zeros(B, dtype=torch.long)
    last = torch.zeros(B, dtype=torch.long)
    for b in range(B):
        node, depth, nodes, out = 0, 0, [0], []
        while True:
            p = probs[b, node].clone()
            children = {}
            if depth + 1 < L:
                for w in range(W):
                    if node_of[b][w][depth] == node:
                        children.setdefault(node_of[b][w][depth + 1], toks[b][w][depth + 1])
            accepted = None
            for child, tok in children.items():
                mass = float(p.sum())
                if mass <= 0.0:
                    break
                if torch.rand((), generator=generator, dtype=torch.float64).item() * mass < float(p[tok]):
                    accepted = (child, tok)
                    break
                p[tok] = 0.0
            if accepted is None:
                if float(p.sum()) <= 0.0:  # only after rounding: every remaining token had probability ~0
                    p = probs[b, node]
                out.append(int(torch.multinomial(p, 1, generator=generator)))
                break
            child, tok = accepted
            nodes.append(child)
            out.append(tok)
            node, depth = child, depth + 1
        k = len(out)
        path[b, :k] = torch.tensor(nodes)
        emitted[b, :k] = torch.tensor(out)
        count[b], last[b] = k, nodes[-1]
    dev = beams.device
    return Acceptance(path=path.to(dev), count=count.to(dev), emitted=emitted.to(dev), last=last.to(dev))


def accept_sample_trtllm(beams: torch.Tensor, tree: Tree, logits: torch.Tensor, temperature: float,
                         draft_logp: torch.Tensor, generator: torch.Generator) -> Acceptance:
    """TensorRT-LLM's sampling acceptance (module docstring). draft_logp [B, W, L-1, V]: `beam_search`'s logp.
    The uniforms [B, W, L-1] are drawn first, then one token per row, in row order (generator: CPU)."""
    B, W, L = beams.shape
    V = logits.shape[-1]
    rows = torch.arange(B)
    logp = torch.log_softmax(logits.double() / temperature, dim=-1).cpu()  # [B, N, V]
    node_of, beams_c = tree.node_of.cpu(), beams.cpu()
    base = logp.gather(1, node_of.reshape(B, W * L, 1).expand(B, W * L, V)).reshape(B, W, L, V)
    q = draft_logp.double().cpu()
    drafted = beams_c[:, :, 1:, None]
    ratio = (base[:, :, :-1].gather(-1, drafted) - q.gather(-1, drafted))[..., 0].exp()  # p(x) / q(x) [B, W, L-1]
    u = torch.rand(B, W, L - 1, generator=generator, dtype=torch.float64)
    counts = (u < ratio).long().cumprod(-1).sum(-1)  # [B, W]
    best = counts.argmax(-1)  # the first of the longest
    n = counts[rows, best]
    emitted = torch.cat([beams_c[rows, best, 1:], beams_c[:, 0, :1]], dim=-1).clone()
    for b in range(B):
        k, p = int(n[b]), base[b, best[b], int(n[b])].exp()
        residual = p if k == L - 1 else (p - q[b, best[b], k].exp()).clamp(min=0)
        if float(residual.sum()) <= 0.0:  # p = q on q's support: nothing left to correct, draw from p
            residual = p
        emitted[b, k] = int(torch.multinomial(residual, 1, generator=generator))
    path = node_of[rows, best]
    last = path.gather(1, n[:, None])[:, 0]
    dev = beams.device
    return Acceptance(path=path.to(dev), count=(n + 1).to(dev), emitted=emitted.to(dev), last=last.to(dev))
