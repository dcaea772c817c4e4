"""Train a ReDrafter drafter for SmolLM2-135M-Instruct on its own answers to the packaged prompts, then
report its accuracy on the base's answers to MT-Bench first turns (never trained on). Its folders default to
<cache>/...: $REDRAFTER_TRT_CACHE, else ~/.cache/redrafter-trt, whatever folder it runs from.

    python scripts/train_smollm2.py [--output DRAFTER] [--data FILE ...] [--max-examples 300] [--epochs 3]

The distilled answers and hidden states are cached (`--cache-dir`, `train`'s cache), so a second run only trains;
the base's answers to MT-Bench too (`--eval-cache-dir`, scripts/eval_drafter.py's).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import click

from redrafter_trt.cli import Script
from redrafter_trt.output import check_output_folder
from redrafter_trt.quickstart import mt_bench_path
from redrafter_trt.smollm2 import cache_root, ensure_smollm2
from redrafter_trt.train import TrainConfig, default_data, train_drafter
from redrafter_trt.train.data import read_conversations
from redrafter_trt.train.heldout import evaluate_on_prompts


def under_cache(name: str, what: str) -> dict:
    """An option's default, the cache root's folder `name` (read as the option is), and its help saying so."""
    return {"default": lambda: cache_root() / name, "help": f"{what} [default: <cache>/{name}]."}


@click.command(cls=Script)
@click.option("--output", type=click.Path(path_type=Path), **under_cache("smollm2-drafter", "The drafter (replaced)"))
@click.option("--cache-dir", type=click.Path(path_type=Path),
              **under_cache("train", "The base's distilled answers and hidden states (`redrafter-trt train`'s cache)"))
@click.option("--eval-cache-dir", type=click.Path(path_type=Path),
              **under_cache("eval", "The base's answers to MT-Bench (scripts/eval_drafter.py's cache)"))
@click.option("--data", "data", multiple=True, type=click.Path(path_type=Path),
              help="Prompt files [default: the packaged chat and task prompts].")
@click.option("--max-examples", type=click.IntRange(min=1), default=300, show_default=True)
@click.option("--epochs", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--lr", type=float, default=1e-3, show_default=True)
@click.option("--num-draft-layers", type=int, default=1, show_default=True)
@click.option("--mt-bench", type=click.Path(path_type=Path, exists=True, dir_okay=False), default=mt_bench_path,
              help="Held-out prompts the drafter is evaluated on [default: the packaged MT-Bench first turns].")
@click.option("--mt-bench-prompts", type=click.IntRange(min=0), default=40, show_default=True,
              help="MT-Bench questions the drafter is evaluated on (0: none).")
def main(output, cache_dir, eval_cache_dir, data, max_examples, epochs, lr, num_draft_layers, mt_bench, mt_bench_prompts):
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    base = ensure_smollm2()
    cfg = TrainConfig(base=base, data=list(data) or default_data(), output=output, distill=True, max_examples=max_examples,
                      epochs=epochs, lr=lr, num_draft_layers=num_draft_layers, cache_dir=cache_dir,
                      distill_max_new_tokens=256, predict_n=5, force=True)
    # before the hour of distilling and training, not at the save: --output replaces an earlier drafter of it
    check_output_folder(output, True, cfg.inputs)
    if mt_bench_prompts:  # and the held-out prompts (a file with none usable was refused after the hour of training)
        read_conversations(mt_bench)
    start = time.perf_counter()
    train_drafter(cfg)
    print(f"train_drafter: {time.perf_counter() - start:.0f} s")
    print(json.dumps(json.loads((output / "config.json").read_text())["producer"], indent=1))
    if mt_bench_prompts:
        res = evaluate_on_prompts(output, base, mt_bench, eval_cache_dir, num_prompts=mt_bench_prompts)
        print("MT-Bench first turns (base's greedy answers):", json.dumps(res))


if __name__ == "__main__":
    main()
