"""Drafter training: `train_drafter(TrainConfig(...)) -> Path` writes an Apple-layout drafter.

    data.py        conversation files -> chat-template token ids with an assistant-token mask
    distill.py     the base's own greedy answers (batched, KV cache, resumable jsonl cache)
    features.py    teacher-forced base hidden states, computed once and cached
    cache.py       the cache's size line, its entries' base ids, and the prune of a re-saved base's entries
    base.py        the base's tokenizer, input embedding and lm_head
    init.py        a fresh drafter started from the base's lm_head
    objective.py   Apple's k-step loss with a fused, chunked cross-entropy, and the cached soft targets
    steps.py       the learning-rate schedule, each step's seeded anchors and gradients, the divergence check
    state.py       the training state --resume continues from: saved, read, refused when the options differ
    torchrun.py    torchrun's process group, and collectives whose gone peer rank is one line
    loop.py        train_drafter: the run from data to drafter (torchrun-aware), interruptions saying how to go on
    heldout.py     the held-out evaluation, and a saved drafter's accuracy on the base's answers to prompts
    progress.py    what a run reports to a progress bar
    quickstart.py  the packaged default data
"""

from .config import TrainConfig
from .heldout import evaluate
from .loop import train_drafter
from .progress import Progress, StepStats
from .state import resumable
from .quickstart import default_data, quickstart_config

__all__ = ["TrainConfig", "Progress", "StepStats", "evaluate", "resumable", "train_drafter", "default_data",
           "quickstart_config"]
