"""How much does FP8 change what the model says? Greedy decoding with the reference runtime on the MT-Bench first
turns, once from a bfloat16 ReDrafter checkpoint and once from an FP8 one (same base, same drafter).

Printed:
- token agreement: the share of the bf16 output's token positions where the FP8 output has the same token
  (positions the FP8 output does not reach count as disagreement);
- prefix agreement: the mean share of each bf16 output covered before the first differing token;
- identical outputs: the share of prompts whose outputs are equal;
- mean tokens per step (accepted drafts + 1) of both checkpoints;
- teacher-forced on the bf16 answers (what each token costs, free of the cascade that makes free-running outputs
  part ways after one early difference, as llama.cpp's `perplexity --kl-divergence` measures quantisation): the mean
  KL divergence of FP8's next-token distribution from bf16's, how often their top-1 token is the same, and each
  checkpoint's mean negative log-likelihood of those answers.

The runtime dequantises FP8 weights with their scales; it does not quantise activations, so these figures show the
weight quantisation's effect (the engine's FP8 activations add a little more). It keeps its KV cache in the
compute dtype and reads no KV-cache scales, so an FP8 KV cache (`convert --kv-cache-dtype fp8`) is not measured here:
it would not change a figure.

    python scripts/fp8_agreement.py                       # SmolLM2-135M-Instruct, fresh drafter, all 80 questions
    python scripts/fp8_agreement.py --limit 16 --max-new-tokens 48 --drafter my_drafter/
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the checkout's redrafter_trt, installed or not

from redrafter_trt.cli import Script  # noqa: E402
from redrafter_trt.cli.params import Device  # noqa: E402

DEFAULT_QUESTIONS = ROOT / "redrafter_trt" / "data" / "mt_bench_questions.jsonl"


def agreement(reference: list[list[int]], other: list[list[int]]) -> dict:
    """Token, prefix and whole-output agreement of `other` with `reference` (per prompt lists of token ids)."""
    same = total = 0
    prefix_shares, identical = [], 0
    for ref, out in zip(reference, other):
        matches = [a == b for a, b in zip(ref, out)]
        same += sum(matches)
        total += len(ref)
        first_diff = next((i for i, m in enumerate(matches) if not m), min(len(ref), len(out)))
        prefix_shares.append(first_diff / len(ref) if ref else 1.0)
        identical += ref == out
    return {"token_agreement": same / total if total else 1.0,
            "prefix_agreement": sum(prefix_shares) / len(prefix_shares),
            "identical_outputs": identical / len(reference)}


def teacher_forced(logits_ref, logits_other, answer: list[int]) -> dict:
    """Two checkpoints' logits [n, V] at the n positions that predict an answer's n tokens -> sums over them:
    KL(ref || other), same top-1, and both NLLs of the answer's tokens."""
    import torch

    ref, other = (torch.log_softmax(x.double(), -1) for x in (logits_ref, logits_other))
    target = torch.tensor(answer)[:, None]
    return {"positions": len(answer),
            "kl": float((ref.exp() * (ref - other)).sum(-1).sum()),
            "same_top1": int((ref.argmax(-1) == other.argmax(-1)).sum()),
            "nll_ref": float(-ref.gather(1, target).sum()), "nll_other": float(-other.gather(1, target).sum())}


@click.command(cls=Script, help=__doc__.split("\n\n")[0])
@click.option("--base", type=click.Path(path_type=Path),
              help="Hugging Face base folder (default: SmolLM2-135M-Instruct)")
@click.option("--drafter", type=click.Path(path_type=Path),
              help="Apple-layout drafter (default: a fresh one from init-drafter)")
@click.option("--questions", type=click.Path(path_type=Path), default=DEFAULT_QUESTIONS,
              help="prompts (jsonl; MT-Bench first turns)")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="N questions spread evenly over the file, as bench takes them")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True,
              help="prompts decoded together")
@click.option("--calib-size", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--calib-seq-len", type=click.IntRange(min=1), default=128, show_default=True)
@click.option("--device", default="cpu", show_default=True, type=Device())
@click.option("--compute-dtype", type=click.Choice(["float32", "bfloat16"]), default=None,
              help="dtype the runtime computes in [default: float32 on CPU (no bf16 instructions on most CPUs: "
                   "the weights keep their bf16/FP8 values, only the arithmetic is wider), bfloat16 on CUDA]")
@click.option("--work-dir", type=click.Path(path_type=Path),
              help="keep the two checkpoints here (default: a temporary folder)")
@click.option("--json", "as_json", is_flag=True, help="print the figures as JSON")
def main(**options) -> None:
    args = argparse.Namespace(**options)
    logging.basicConfig(level=logging.WARNING)

    from redrafter_trt.convert import convert
    from redrafter_trt.drafter import init_drafter_for_base
    from redrafter_trt.prompts import load_prompts, take_spread
    from redrafter_trt.runtime import forward_logits, generate, load
    from redrafter_trt.smollm2 import ensure_smollm2
    from redrafter_trt.tokens import encode_prompts, load_tokenizer, stop_ids

    base = args.base or ensure_smollm2()
    prompts = take_spread(load_prompts(args.questions), args.limit)
    tok = load_tokenizer(base, None)  # a folder without one: one line
    prompt_ids = encode_prompts(tok, prompts, chat=None)  # in the chat template when the base has one
    eos = stop_ids(tok, base)  # as run and bench: the generation config's stop tokens too

    with tempfile.TemporaryDirectory(prefix="fp8-agreement-") as scratch:
        work = args.work_dir or Path(scratch)
        drafter = args.drafter
        if drafter is None:
            drafter = work / "drafter"
            init_drafter_for_base(base, drafter, force=True)  # --work-dir's from an earlier run: replaced
        t0 = time.time()
        bf16 = convert(base, drafter, work / "bf16", dtype="bfloat16", force=True)
        fp8 = convert(base, drafter, work / "fp8", dtype="bfloat16", quantize="fp8",
                      calib_size=args.calib_size, calib_seq_len=args.calib_seq_len, device=args.device, force=True)
        # the prompts calibrated on: all of a set holding fewer than --calib-size (the shipped one holds 64)
        calib_size = json.loads((Path(fp8) / "config.json").read_text())["producer"]["options"]["calib_size"]
        convert_s = time.time() - t0

        compute_dtype = args.compute_dtype or ("float32" if args.device == "cpu" else "bfloat16")
        runs = {}
        for name, ckpt in (("bf16", bf16), ("fp8", fp8)):
            model = load(ckpt, device=args.device, dtype=compute_dtype)
            outputs, steps, t0 = [], [], time.time()
            for i in range(0, len(prompt_ids), args.batch_size):
                res = generate(model, prompt_ids[i:i + args.batch_size], args.max_new_tokens, temperature=0.0,
                               eos_token_id=eos)
                outputs += res.output_ids
                steps += res.steps
            runs[name] = {"outputs": outputs, "tokens": sum(map(len, outputs)), "steps": sum(steps),
                          "seconds": time.time() - t0}
            answers = [(p, a) for p, a in zip(prompt_ids, runs["bf16"]["outputs"]) if a]  # both read bf16's answers
            runs[name]["logits"] = [forward_logits(model, p + a)[len(p) - 1: len(p) - 1 + len(a)] for p, a in answers]
            del model
        sums = [teacher_forced(ref, other, a) for ref, other, (_, a) in
                zip(runs["bf16"]["logits"], runs["fp8"]["logits"], answers)]
        positions = sum(x["positions"] for x in sums)

    figures = {
        "base": str(base), "prompts": len(prompts), "max_new_tokens": args.max_new_tokens,
        "calib_size": calib_size,
        "compute_dtype": compute_dtype, "drafter": str(args.drafter or "fresh init-drafter"),
        **agreement(runs["bf16"]["outputs"], runs["fp8"]["outputs"]),
        "teacher_forced_positions": positions,
        "mean_kl_divergence": sum(x["kl"] for x in sums) / positions,
        "same_top1_teacher_forced": sum(x["same_top1"] for x in sums) / positions,
        "nll_per_token_bf16": sum(x["nll_ref"] for x in sums) / positions,
        "nll_per_token_fp8": sum(x["nll_other"] for x in sums) / positions,
        "tokens_per_step_bf16": runs["bf16"]["tokens"] / runs["bf16"]["steps"],
        "tokens_per_step_fp8": runs["fp8"]["tokens"] / runs["fp8"]["steps"],
        "new_tokens_bf16": runs["bf16"]["tokens"], "new_tokens_fp8": runs["fp8"]["tokens"],
        "convert_seconds": round(convert_s, 1),
        "decode_seconds_bf16": round(runs["bf16"]["seconds"], 1), "decode_seconds_fp8": round(runs["fp8"]["seconds"], 1),
    }
    if args.as_json:
        print(json.dumps(figures, indent=2))
    else:
        print(f"{figures['prompts']} MT-Bench first turns, greedy, up to {args.max_new_tokens} new tokens, {base.name}")
        print(f"  token agreement FP8 vs bf16:  {figures['token_agreement']:.1%}")
        print(f"  prefix agreement:             {figures['prefix_agreement']:.1%}")
        print(f"  identical outputs:            {figures['identical_outputs']:.1%}")
        print(f"  mean tokens per step:         bf16 {figures['tokens_per_step_bf16']:.3f}, "
              f"FP8 {figures['tokens_per_step_fp8']:.3f}")
        print(f"teacher-forced on the bf16 answers ({positions} tokens):")
        print(f"  mean KL(bf16 || FP8):         {figures['mean_kl_divergence']:.4f} nats")
        print(f"  same top-1 token:             {figures['same_top1_teacher_forced']:.1%}")
        print(f"  NLL per answer token:         bf16 {figures['nll_per_token_bf16']:.3f}, "
              f"FP8 {figures['nll_per_token_fp8']:.3f}")


if __name__ == "__main__":
    main()
