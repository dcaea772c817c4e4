"""The packaged training prompts and the quickstart's training recipe.

`redrafter_trt/data/train_prompts.jsonl`: the 54 distinct user prompts of FastChat's dummy conversations
(Apache-2.0, `LICENSE.fastchat-apache-2.0`) and every 4th GSM8K train question from line 3 (MIT,
`LICENSE.gsm8k-mit`), as {"prompt", "source"} records. MT-Bench is not in it: it is the evaluation set.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from .config import TrainConfig

PROMPTS = "train_prompts.jsonl"


def default_data() -> list[Path]:
    """The packaged prompt files (prompts only: train on them with distill=True)."""
    return [Path(str(resources.files("redrafter_trt") / "data" / PROMPTS))]


def quickstart_config(base: Path, output: Path, **overrides) -> TrainConfig:
    """The quickstart's recipe: self-distilled answers to 120 of the packaged prompts (about 20k answer tokens:
    generation is nearly all of the time), 3 epochs with the pruned head. On 2 shared CPU cores 56 such
    prompts already gave 2.0 expected tokens per step at beam width 1 on held-out answers. `overrides`
    replace any field."""
    recipe = dict(data=default_data(), distill=True, max_examples=120, distill_max_new_tokens=192,
                  epochs=3, batch_size=256, predict_n=5, num_draft_layers=1)
    return TrainConfig(base=Path(base), output=Path(output), **{**recipe, **overrides})
