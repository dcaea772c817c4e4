"""The optimisation, step by step: the learning-rate schedule, each step's seeded anchors (so the batch of step s
depends only on s, and a resumed run replays what an uninterrupted one would have done), one step's gradients summed
over torchrun's ranks, and the check that stops a diverged run."""

from __future__ import annotations

import math

import torch

from ..drafter import Drafter
from ..errors import ConfigError
from .config import TrainConfig
from .features import Features
from .objective import Head, Teacher, drafter_step
from .torchrun import all_reduce


def learning_rate(step: int, total: int, lr: float) -> float:
    """Linear warm-up over the first 5% of steps, then cosine to zero."""
    warm = max(1, total // 20)
    if step < warm:
        return lr * (step + 1) / warm
    return lr * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))


def steps_per_epoch(fewest: int, batch: int) -> int:
    """Steps an epoch over `fewest` anchors (the smallest rank's under torchrun), its last batch partial where batch
    does not divide it: dropped, it once left a small dataset's last anchors untrained (63 of 127 at batch 64)."""
    return max(1, -(-fewest // batch))


def batch_anchors(step: int, n: int, per_epoch: int, batch: int, seed: int, rank: int = 0) -> torch.Tensor:
    """Step `step`'s anchor indices among this rank's n: a fresh permutation of all n each epoch, seeded by (seed,
    epoch, rank). Under torchrun every rank takes per_epoch steps an epoch (`steps_per_epoch` of the fewest any
    rank's anchors), so a rank with more anchors trains a different subset of them each epoch: every anchor counts.
    An epoch's last batch is partial where its anchors run out (its step's means are over the rows there are)."""
    epoch, i = divmod(step, per_epoch)
    mixed = (seed * 1000003 + epoch + rank * 7919) % 2 ** 63  # any --seed up to 2**63 - 1
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(mixed))
    return perm[i * batch: (i + 1) * batch]


def step_gradients(drafter: Drafter, head: Head, embed: torch.Tensor, feats: Features, idx: torch.Tensor, k: int,
                   teacher: Teacher | None, cfg: TrainConfig, opt, params: list, world: int
                   ) -> tuple[torch.Tensor, list[float], int]:
    """The gradients of the step on the anchors idx [B] in `params` (summed over torchrun's `world` ranks), and the
    step's loss [] (over every rank's rows), top-1 per draft step (every rank's) and rows (anchors, every rank's)."""
    counts, rows = None, len(idx) * world
    if world > 1:  # each step's mean over every rank's rows: the summed gradients are one process's on the
        # global batch (averaging the ranks' means weighed a rank with fewer valid rows as much as a fuller
        # one), an epoch's last, partial batches too (their sizes can differ between ranks); and its anchors
        both = torch.cat([feats.windows(idx, k)[1].sum(0), idx.new_tensor([len(idx)])])
        all_reduce(both)
        counts, rows = both[:k], int(both[k])
    res = drafter_step(drafter, head, embed, feats, idx, k, teacher=teacher,
                       later_sharpness=cfg.later_sharpness, step_decay=cfg.step_decay, counts=counts)
    opt.zero_grad(set_to_none=True)
    res.loss.backward()
    loss = res.loss.detach().clone()
    top1 = res.top1()
    if world > 1:
        for p in params:
            all_reduce(p.grad)
        all_reduce(loss)  # the global batch's loss: every rank stops together when it diverges
        correct = res.correct.sum(0)  # and its accuracy, over the rows `counts` holds (rank 0's alone once)
        all_reduce(correct)
        top1 = (correct / counts.clamp(min=1)).tolist()
    return loss, top1, rows


def check_finite(loss: torch.Tensor, grad_norm: torch.Tensor, step: int, total: int, lr: float) -> None:
    """Stop a diverged run before its update: no drafter of NaNs is written, and the last saved state stays good."""
    loss, grad_norm = loss.item(), grad_norm.item()
    if not (math.isfinite(loss) and math.isfinite(grad_norm)):
        raise ConfigError(f"training diverged at step {step} of {total} (loss {loss:.3g}, gradient norm "
                          f"{grad_norm:.3g}), so no drafter was written: lower --lr (now {lr:g})")

