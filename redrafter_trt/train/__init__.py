"""Drafter training: `train_drafter(TrainConfig(...)) -> Path` writes an Apple-layout drafter.

    data.py        conversation files -> chat-template token ids with an assistant-token mask
    distill.py     the base's own greedy answers (batched, KV cache, resumable jsonl cache)
    features.py    teacher-forced base hidden states, computed once and cached
    cache.py       the cache's size line, its entries' base ids, and the prune of a re-saved base's entries
    init.py        a fresh drafter started from the base's lm_head
    objective.py   Apple's k-step loss with a fused, chunked cross-entropy
    loop.py        the seeded, resumable training loop (torchrun-aware) and the held-out evaluation
    quickstart.py  the packaged default data
"""

from .config import TrainConfig
from .loop import Progress, StepStats, evaluate, resumable, train_drafter
from .quickstart import default_data, quickstart_config

__all__ = ["TrainConfig", "Progress", "StepStats", "evaluate", "resumable", "train_drafter", "default_data",
           "quickstart_config"]
