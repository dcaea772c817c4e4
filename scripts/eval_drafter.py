"""How well a saved drafter predicts the base's own greedy answers to the MT-Bench first turns (never trained on),
per MT-Bench category and over all of them: teacher-forced top-1 of each draft step, and the expected tokens per
step at beam width 1 (1 + the sum of chained accuracies), weighted by answer positions. A cheap proxy for `bench`
(minutes instead of most of an hour), for comparing training recipes.

    python scripts/eval_drafter.py --drafter DRAFTER [--base SMOLLM2] [--cache-dir CACHE]

The base's answers (192 new tokens per question) are distilled once and cached in --cache-dir (default: the cache
root's eval/, ~/.cache/redrafter-trt/eval or $REDRAFTER_TRT_CACHE/eval); each category's start and end are a line
on stderr (minutes in all the first time, seconds once cached). The questions are rendered with the chat template
variables the drafter was trained with (train --chat-template-kwargs, recorded in its producer block: Qwen3's
thinking off).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import click

from redrafter_trt.cli import Script


@click.command(cls=Script)
@click.option("--drafter", required=True, type=click.Path(path_type=Path, exists=True))
@click.option("--base", type=click.Path(path_type=Path, exists=True), default=None,
              help="Hugging Face folder of the base [default: SmolLM2-135M-Instruct from the cache].")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=None,
              help="The base's cached answers [default: cache root/eval].")
def main(drafter, base, cache_dir):
    from redrafter_trt.quickstart import mt_bench_path
    from redrafter_trt.smollm2 import cache_root, ensure_smollm2
    from redrafter_trt.train.heldout import evaluate_on_prompts

    base = base or ensure_smollm2()
    by_category: dict[str, list[str]] = {}
    for line in mt_bench_path().read_text().splitlines():
        by_category.setdefault(json.loads(line)["category"], []).append(line)
    cache_dir = cache_dir or cache_root() / "eval"
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (category, lines) in enumerate(sorted(by_category.items())):
            path = Path(tmp) / f"{category}.jsonl"
            path.write_text("\n".join(lines) + "\n")

            def say(line, where=f"{category} ({i + 1}/{len(by_category)})"):
                click.echo(f"{where}: {line}", err=True)

            r = results[category] = evaluate_on_prompts(drafter, base, path, cache_dir, num_prompts=len(lines),
                                                         progress=say)
            say(f"{r['tokens_per_step_beam1']:.3f} tokens/step at W=1")
    print(f"{'category':<12} {'positions':>9}  top-1 per draft step             tokens/step (W=1)")
    for category, r in results.items():
        print(f"{category:<12} {r['anchors']:>9}  {_steps(r['top1']):<32} {r['tokens_per_step_beam1']:.3f}")
    n = sum(r["anchors"] for r in results.values())
    steps = len(next(iter(results.values()))["top1"])
    top1 = [_weighted([(r["top1"][i], r["anchors"]) for r in results.values()]) for i in range(steps)]
    expected = sum(r["tokens_per_step_beam1"] * r["anchors"] for r in results.values()) / n
    print(f"{'all':<12} {n:>9}  {_steps(top1):<32} {expected:.3f}")


def _weighted(pairs: list[tuple[float | None, int]]) -> float | None:
    """The mean of (value, weight) pairs scored (a draft step no answer reaches: None, left out); None if none is."""
    scored = [(x, w) for x, w in pairs if x is not None]
    return sum(x * w for x, w in scored) / sum(w for _, w in scored) if scored else None


def _steps(values: list[float | None]) -> str:
    """Per draft step, a step with nothing scored (None: no answer reaches it) as '-'."""
    return " ".join("-" if x is None else f"{x:.3f}" for x in values)


if __name__ == "__main__":
    main()
