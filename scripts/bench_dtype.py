"""bfloat16 against float32 for `train --base-dtype` and `--train-dtype` on this CPU, in turns, the best of each
(a timing: run it on a quiet machine).

Timed:
- distillation: the base's batched greedy answers to packaged self-written prompts (`train.distill.greedy_batch` on
  `load_causal_lm` with `pack_linears`, as `train --distill` runs it), tokens/s in each dtype;
- the training product: `train.objective.FusedCrossEntropy` (the drafter's output projection, forward and gradients,
  most of a training step) with its products in bfloat16 against float32, on random rows.

Prints each time and bfloat16's speed as a multiple of float32's (above 1: bfloat16 is faster). `train`'s `auto`
takes bfloat16 only on a CPU with AVX512-BF16 or AMX (printed); elsewhere oneDNN emulates it and it is slower.

    python scripts/bench_dtype.py                            # SmolLM2-135M-Instruct, 1 thread, batch 32
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the checkout's redrafter_trt, installed or not

from redrafter_trt.cli import Script  # noqa: E402

SELF_PROMPTS = ROOT / "redrafter_trt" / "data" / "self_prompts.jsonl"


def best_of(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


@click.command(cls=Script, help=__doc__.split("\n\n")[0])
@click.option("--base", type=click.Path(path_type=Path), help="Hugging Face base folder (default: SmolLM2-135M-Instruct)")
@click.option("--num-prompts", type=click.IntRange(min=1), default=32, show_default=True,
              help="self-written prompts distilled (one batch)")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--rows", type=click.IntRange(min=1), default=4096, show_default=True,
              help="training product: rows per call")
@click.option("--head-rows", type=click.IntRange(min=1), default=12310, show_default=True,
              help="training product: the pruned head's rows (the one-hour SmolLM2 drafter's)")
@click.option("--exit-dim", type=click.IntRange(min=1), default=1152, show_default=True,
              help="training product: the drafter's exit dim (2 x SmolLM2's hidden size)")
@click.option("--repeats", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--skip-distill", is_flag=True, help="time the training product only")
@click.option("--json", "as_json", is_flag=True, help="print the figures as JSON")
def main(base, num_prompts, max_new_tokens, rows, head_rows, exit_dim, repeats, threads, skip_distill,
         as_json) -> None:
    import torch

    from redrafter_trt.plural import counted
    from redrafter_trt.train.config import cpu_has_native_bf16
    from redrafter_trt.train.objective import FusedCrossEntropy

    torch.set_num_threads(threads)
    figures = {"threads": threads, "native_bf16": cpu_has_native_bf16(), "repeats": repeats}

    gen = torch.Generator().manual_seed(0)
    feats = torch.randn(rows, exit_dim, generator=gen)
    weight = (torch.randn(head_rows, exit_dim, generator=gen) / exit_dim ** 0.5).requires_grad_()
    targets = torch.randint(0, head_rows, (rows,), generator=gen)
    row_w = torch.full((rows,), 1.0 / rows)
    feats.requires_grad_()

    def product(mm_dtype):
        loss, _ = FusedCrossEntropy.apply(feats, weight, targets, row_w, 0, 4096, None, mm_dtype)
        loss.backward()

    product(None)
    product(torch.bfloat16)  # warm-up
    t = {}
    for _ in range(repeats):
        for name, mm in (("float32", None), ("bfloat16", torch.bfloat16)):
            t[name] = min(t.get(name, float("inf")), best_of(lambda: product(mm), 1))
    figures["product_seconds"] = {k: round(v, 4) for k, v in t.items()}
    figures["product_bf16_speed"] = round(t["float32"] / t["bfloat16"], 3)

    if not skip_distill:
        from redrafter_trt.hf_model import load_causal_lm
        from redrafter_trt.prompts import load_prompts, take_spread
        from redrafter_trt.runtime.linear import pack_linears
        from redrafter_trt.smollm2 import ensure_smollm2
        from redrafter_trt.tokens import encode_prompts, load_tokenizer, stop_ids
        from redrafter_trt.train.distill import greedy_batch

        base = base or ensure_smollm2()
        tok = load_tokenizer(base, None)
        prompts = encode_prompts(tok, take_spread(load_prompts(SELF_PROMPTS), num_prompts), chat=None)
        stop = set(stop_ids(tok, base))
        pad = tok.pad_token_id if tok.pad_token_id is not None else min(stop)
        models = {}
        for name, dtype in (("float32", torch.float32), ("bfloat16", torch.bfloat16)):
            models[name] = load_causal_lm(base, dtype).eval()
            pack_linears(models[name], dtypes=(torch.float32, torch.bfloat16))
        d, tokens = {}, {}
        with torch.no_grad():
            for name in models:  # warm-up
                greedy_batch(models[name], prompts[:2], 2, stop, pad)
            for _ in range(repeats):
                for name, model in models.items():
                    t0 = time.perf_counter()
                    answers = greedy_batch(model, prompts, max_new_tokens, stop, pad)[0]
                    d[name] = min(d.get(name, float("inf")), time.perf_counter() - t0)
                    tokens[name] = sum(map(len, answers))
        figures["distill_seconds"] = {k: round(v, 2) for k, v in d.items()}
        figures["distill_tokens"] = tokens
        figures["distill_bf16_speed"] = round((tokens["bfloat16"] / d["bfloat16"]) / (tokens["float32"] / d["float32"]), 3)

    if as_json:
        print(json.dumps(figures, indent=2))
        return
    print(f"{counted(threads, 'thread')}; native bfloat16 (AVX512-BF16 or AMX): {figures['native_bf16']}; "
          f"best of {repeats}")
    p = figures["product_seconds"]
    print(f"  training product ({rows} x {exit_dim} @ {exit_dim} x {head_rows}, forward and gradients): "
          f"float32 {p['float32']:.3f} s, bfloat16 {p['bfloat16']:.3f} s: bfloat16 {figures['product_bf16_speed']:.2f}x "
          f"float32's speed")
    if not skip_distill:
        print(f"  distillation ({counted(num_prompts, 'prompt')} x up to {max_new_tokens} tokens, one batch): "
              f"float32 {d['float32']:.1f} s ({tokens['float32']} tokens), bfloat16 {d['bfloat16']:.1f} s "
              f"({tokens['bfloat16']} tokens): bfloat16 {figures['distill_bf16_speed']:.2f}x float32's tokens/s")


if __name__ == "__main__":
    main()
