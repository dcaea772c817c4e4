"""What logprobs cost: the reference runtime's greedy drafted decoding of MT-Bench first turns (chat template) with
`logprobs=k` (each token's log-probability and the k most likely there, as `serve` computes them) against without,
in turns, the same outputs either way. Prints seconds per token of both and their ratio (the README's "about 8% more
time per token" under `serve`'s logprobs). A timing: run it on a quiet machine.

    python scripts/bench_logprobs.py                        # SmolLM2-135M-Instruct with a fresh init-drafter drafter
    python scripts/bench_logprobs.py --checkpoint-dir CKPT --top 5 --repeats 3
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the checkout's redrafter_trt, installed or not

from redrafter_trt.cli import Script  # noqa: E402
from redrafter_trt.plural import counted  # noqa: E402

DEFAULT_QUESTIONS = ROOT / "redrafter_trt" / "data" / "mt_bench_questions.jsonl"


@click.command(cls=Script, help=__doc__.split("\n\n")[0])
@click.option("--checkpoint-dir", type=click.Path(path_type=Path),
              help="float32 ReDrafter checkpoint (default: SmolLM2-135M-Instruct and a fresh init-drafter drafter, "
                   "converted into a temporary folder)")
@click.option("--tokenizer-dir", type=click.Path(path_type=Path), help="tokenizer (default: SmolLM2-135M-Instruct)")
@click.option("--questions", type=click.Path(path_type=Path), default=DEFAULT_QUESTIONS, help="prompts (jsonl)")
@click.option("--num-prompts", type=click.IntRange(min=1), default=4, show_default=True,
              help="questions spread evenly over the file, as bench takes them")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=48, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=4, show_default=True)
@click.option("--top", type=click.IntRange(0, 20), default=5, show_default=True, help="k most likely tokens per token")
@click.option("--repeats", type=click.IntRange(min=1), default=2, show_default=True,
              help="runs of each, in turns (the best of each is compared)")
@click.option("--threads", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="print the figures as JSON")
def main(checkpoint_dir, tokenizer_dir, questions, num_prompts, max_new_tokens, batch_size, top, repeats, threads,
         as_json) -> None:
    import torch

    from redrafter_trt.cli.bench_cmd import echo_merge_note
    from redrafter_trt.convert import convert
    from redrafter_trt.drafter import init_drafter_for_base
    from redrafter_trt.prompts import load_prompts, take_spread
    from redrafter_trt.runtime import generate, load, merge_ranks
    from redrafter_trt.smollm2 import ensure_smollm2
    from redrafter_trt.tokens import encode_prompts, load_tokenizer, stop_ids

    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory(prefix="bench-logprobs-") as scratch:
        if checkpoint_dir is None:
            base = ensure_smollm2()
            tokenizer_dir = tokenizer_dir or base
            init_drafter_for_base(base, Path(scratch) / "drafter")
            checkpoint_dir = convert(base, Path(scratch) / "drafter", Path(scratch) / "ckpt", dtype="float32")
        elif tokenizer_dir is None:
            raise click.UsageError("--checkpoint-dir needs --tokenizer-dir")
        tok = load_tokenizer(tokenizer_dir, None)
        prompts = encode_prompts(tok, take_spread(load_prompts(questions), num_prompts), chat=None)
        eos = stop_ids(tok, tokenizer_dir)
        checkpoint_dir = merge_ranks(checkpoint_dir)  # a tp>1 one's rank files merged, as bench runs it
        echo_merge_note(checkpoint_dir)  # a tp>1 one's rank files merged, as bench says
        model = load(checkpoint_dir)
        generate(model, prompts[:1], 4, eos_token_id=eos)  # warm-up: the linear plan's timing, first-call costs
        best = {"off": float("inf"), "on": float("inf")}
        outputs = {}
        for _ in range(repeats):
            for name, k in (("off", None), ("on", top)):
                t0 = time.perf_counter()
                res = generate(model, prompts, max_new_tokens, eos_token_id=eos, batch_size=batch_size, logprobs=k)
                best[name] = min(best[name], time.perf_counter() - t0)
                outputs[name] = res.output_ids
    if outputs["on"] != outputs["off"]:
        raise click.ClickException("the outputs differ with logprobs on: a bug, not a timing")
    tokens = sum(map(len, outputs["off"]))
    figures = {"prompts": len(prompts), "tokens": tokens, "top": top, "repeats": repeats, "threads": threads,
               "seconds_off": round(best["off"], 3), "seconds_on": round(best["on"], 3),
               "ratio": round(best["on"] / best["off"], 3)}
    if as_json:
        print(json.dumps(figures, indent=2))
        return
    print(f"{counted(len(prompts), 'prompt')}, {counted(tokens, 'token')}, batch {batch_size}, {counted(threads, 'thread')}, "
          f"best of {repeats}:")
    print(f"  without logprobs {1000 * best['off'] / tokens:.1f} ms/token, with logprobs={top} "
          f"{1000 * best['on'] / tokens:.1f} ms/token: {figures['ratio']:.3f}x the time")


if __name__ == "__main__":
    main()
