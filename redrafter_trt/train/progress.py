"""What a training run reports as it goes (`train_drafter`'s on_progress; the train command draws its bars from it)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class StepStats:
    step: int             # 1-based, steps done so far
    total: int
    loss: float
    top1: list[float]     # per draft step, this batch (under torchrun: every rank's)
    positions_per_s: float  # under torchrun: every rank's (each takes a batch of its own in the same time)


@dataclass
class Progress:
    """What the loop reports to a progress bar: a stage name with (done, total), or a finished step."""
    stage: str
    done: int
    total: int
    stats: StepStats | None = None
