"""The packaged training prompts and the quickstart's training recipe.

`redrafter_trt/data/self_prompts.jsonl`: chat prompts SmolLM2-135M-Instruct wrote itself (Magpie-style, sampled
after the chat template's user header by `scripts/self_prompts.py`): the kind of request chat users send, with no
external data. `redrafter_trt/data/starter_prompts.jsonl`: the same, each opened with a generic instruction word
(`--starters`: "Write", "Explain", "Solve", "Implement", ...), which widens them from the one kind of request the
base writes unprompted. `redrafter_trt/data/train_prompts.jsonl`: the 54 distinct user prompts of FastChat's dummy
conversations (Apache-2.0, `LICENSE.fastchat-apache-2.0`) and every 4th GSM8K train question from line 3 (MIT,
`LICENSE.gsm8k-mit`), as {"prompt", "source"} records. MT-Bench is in neither: it is the evaluation set.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from .config import TrainConfig

CHAT_PROMPTS = ("self_prompts.jsonl", "starter_prompts.jsonl")
TASK_PROMPTS = "train_prompts.jsonl"


def packaged(name: str) -> Path:
    return Path(str(resources.files("redrafter_trt") / "data" / name))


def default_data() -> list[Path]:
    """The packaged prompt files (prompts only: train on them with distill=True)."""
    return [*map(packaged, CHAT_PROMPTS), packaged(TASK_PROMPTS)]


def quickstart_config(base: Path, output: Path, **overrides) -> TrainConfig:
    """The quickstart's recipe: self-distilled answers to 480 of the packaged chat prompts, about half of them
    opened with a starter (generation is most of the time), 3 epochs with the pruned head. `overrides` replace
    any field."""
    recipe = dict(data=[*map(packaged, CHAT_PROMPTS)], distill=True, max_examples=480, distill_max_new_tokens=192,
                  epochs=3, batch_size=256, predict_n=5, num_draft_layers=1)
    return TrainConfig(base=Path(base), output=Path(output), **{**recipe, **overrides})
