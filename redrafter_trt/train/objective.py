"""The drafter's training objective (Apple's): for an anchor t with base hidden state h_t, drafter step i
(i = 0..k-1) predicts token t+i+2 from h_t and the state after the embeddings of tokens t+1..t+i+1; the loss is
the sum over steps of each step's mean cross-entropy.

The final projection [V, E] is nearly all of the cost (V = 49152 for SmolLM2). `FusedCrossEntropy` computes
logits chunk by chunk and forms the gradients in the same pass (softmax minus one-hot), so the [rows, V]
logits never exist whole and are never recomputed; with the head frozen it does two matmuls per chunk
instead of three.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..drafter import Drafter
from .features import Features


class FusedCrossEntropy(torch.autograd.Function):
    """loss = sum_r w_r * CE(feats_r @ weight.T, target_r); also returns correct_r = (argmax == target_r).

    feats [R, E], weight [V, E], targets [R], row_w [R] -> (loss [], correct [R] bool)
    """

    @staticmethod
    def forward(ctx, feats, weight, targets, row_w, chunk: int):
        need_f, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        loss = feats.new_zeros(())
        correct = torch.empty(len(feats), dtype=torch.bool, device=feats.device)
        grad_f = torch.empty_like(feats) if need_f else None
        grad_w = torch.zeros_like(weight) if need_w else None
        for s in range(0, len(feats), chunk):
            f, y, w = feats[s: s + chunk], targets[s: s + chunk], row_w[s: s + chunk]
            logits = f @ weight.T  # [C, V]
            correct[s: s + chunk] = logits.argmax(-1) == y
            lse = torch.logsumexp(logits, -1)
            loss += (w * (lse - logits.gather(1, y[:, None]).squeeze(1))).sum()
            if need_f or need_w:
                g = logits.sub_(lse[:, None]).exp_()  # softmax, in place
                g[torch.arange(len(y), device=y.device), y] -= 1
                g.mul_(w[:, None])
                if need_f:
                    grad_f[s: s + chunk] = g @ weight
                if need_w:
                    grad_w.addmm_(g.T, f)
        ctx.save_for_backward(grad_f, grad_w)
        ctx.mark_non_differentiable(correct)
        return loss, correct

    @staticmethod
    def backward(ctx, grad_loss, _grad_correct):
        grad_f, grad_w = ctx.saved_tensors
        return (grad_f * grad_loss if grad_f is not None else None,
                grad_w * grad_loss if grad_w is not None else None, None, None, None)


@dataclass
class StepResult:
    loss: torch.Tensor     # [] (differentiable)
    correct: torch.Tensor  # [B, k] bool, False where invalid
    valid: torch.Tensor    # [B, k] bool

    def top1(self) -> list[float]:
        """Per-step top-1 accuracy over valid rows."""
        n = self.valid.sum(0).clamp(min=1)
        return (self.correct.sum(0) / n).tolist()

    def chained(self) -> list[float]:
        """Per-step chained accuracy: steps 0..i all right, over anchors where step i is valid."""
        chain = self.correct.cumprod(dim=1).bool() & self.valid
        return (chain.sum(0) / self.valid.sum(0).clamp(min=1)).tolist()


def drafter_step(drafter: Drafter, embed: torch.Tensor, feats: Features, idx: torch.Tensor, k: int,
                 chunk: int = 1024) -> StepResult:
    """Loss and accuracy of `drafter` on anchors `idx` [B] for k draft steps; embed: base token embedding [V, H]."""
    win, valid = feats.windows(idx, k)                       # [B, k+1], [B, k]
    h = feats.hidden[idx].float()                            # [B, H]
    emb = nn.functional.embedding(win[:, :k], embed)          # [B, k, H]: tokens t+1..t+k
    state = torch.zeros_like(h)
    per_step = []
    for i in range(k):
        state = drafter.next_state(state, emb[:, i])
        per_step.append(drafter.features(h, state))            # [B, E]
    x = torch.stack(per_step, dim=1)                         # [B, k, E]
    rows = valid.nonzero(as_tuple=True)
    counts = valid.sum(0).clamp(min=1).to(x.dtype)           # [k]
    row_w = (1.0 / counts)[rows[1]]
    head = drafter.lm_head[-1].weight
    loss, correct_rows = FusedCrossEntropy.apply(x[rows], head, win[:, 1:][rows], row_w, chunk)
    correct = torch.zeros_like(valid)
    correct[rows] = correct_rows
    return StepResult(loss, correct, valid)
