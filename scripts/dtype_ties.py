"""What the 16-bit dtypes do to a base's greedy token: ties at the top of its logits, and bfloat16's argmax against
float32's, teacher-forced on the base's own float32 greedy answers to MT-Bench first turns (chat template).

Printed (the README's figures under "Sampling" and `--base-dtype`):
- ties: the answer positions where the float32 logits, rounded to bfloat16 (and to float16), have two or more tokens
  at the maximum (TensorRT-LLM's engine casts its logits to the model dtype, and its greedy check accepts whichever
  tied token was drafted);
- agreement: the share of answer positions where the base run in bfloat16 (weights and arithmetic) picks the float32
  base's greedy token.

    python scripts/dtype_ties.py --limit 6 --max-new-tokens 96      # the ties figure (6 questions x 96 tokens)
    python scripts/dtype_ties.py                                    # all 80 questions
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
from redrafter_trt.plural import counted  # noqa: E402

DEFAULT_QUESTIONS = ROOT / "redrafter_trt" / "data" / "mt_bench_questions.jsonl"


def tied_top(logits, dtype) -> int:
    """Rows of `logits` [n, V] whose maximum, after rounding to `dtype`, is held by two or more tokens."""
    rounded = logits.to(dtype)
    return int(((rounded == rounded.max(-1, keepdim=True).values).sum(-1) > 1).sum())


def answer_logits(model, prompt: list[int], answer: list[int]):
    """The float32 logits [n, V] at the n positions that predict `answer`'s tokens (teacher-forced)."""
    import torch

    with torch.no_grad():
        logits = model(torch.tensor([prompt + answer])).logits[0]
    return logits[len(prompt) - 1: len(prompt) - 1 + len(answer)].float()


@click.command(cls=Script, help=__doc__.split("\n\n")[0])
@click.option("--base", type=click.Path(path_type=Path), help="Hugging Face base folder (default: SmolLM2-135M-Instruct)")
@click.option("--questions", type=click.Path(path_type=Path), default=DEFAULT_QUESTIONS,
              help="prompts (jsonl; MT-Bench first turns)")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="N questions spread evenly over the file, as bench takes them")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=96, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True,
              help="prompts answered together")
@click.option("--threads", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="print the figures as JSON")
def main(base, questions, limit, max_new_tokens, batch_size, threads, as_json) -> None:
    import torch

    from redrafter_trt.hf_model import load_causal_lm
    from redrafter_trt.prompts import load_prompts, take_spread
    from redrafter_trt.smollm2 import ensure_smollm2
    from redrafter_trt.tokens import encode_prompts, load_tokenizer, stop_ids
    from redrafter_trt.train.distill import greedy_batch

    torch.set_num_threads(threads)
    t0 = time.time()
    base = base or ensure_smollm2()
    tok = load_tokenizer(base, None)
    prompt_ids = encode_prompts(tok, take_spread(load_prompts(questions), limit), chat=None)
    stop = set(stop_ids(tok, base))
    pad = tok.pad_token_id if tok.pad_token_id is not None else min(stop)

    f32 = load_causal_lm(base, torch.float32).eval()
    answers = []
    with torch.no_grad():
        for i in range(0, len(prompt_ids), batch_size):
            answers += greedy_batch(f32, prompt_ids[i:i + batch_size], max_new_tokens, stop, pad)[0]
    pairs = [(p, a) for p, a in zip(prompt_ids, answers) if a]
    ref = [answer_logits(f32, p, a) for p, a in pairs]
    del f32
    bf16 = load_causal_lm(base, torch.bfloat16).eval()
    same = sum(int((answer_logits(bf16, p, a).argmax(-1) == r.argmax(-1)).sum()) for (p, a), r in zip(pairs, ref))
    positions = sum(len(a) for _, a in pairs)

    figures = {"base": str(base), "questions": len(prompt_ids), "max_new_tokens": max_new_tokens,
               "positions": positions,
               "ties_bfloat16": sum(tied_top(r, torch.bfloat16) for r in ref),
               "ties_float16": sum(tied_top(r, torch.float16) for r in ref),
               "bf16_same_greedy_token": same, "seconds": round(time.time() - t0, 1)}
    if as_json:
        print(json.dumps(figures, indent=2))
        return
    n = positions
    print(f"{counted(figures['questions'], 'question')} x up to {max_new_tokens} tokens: {n} answer positions "
          f"(float32 greedy answers, teacher-forced)")
    print(f"  float32 logits tied at the top rounded to bfloat16: {figures['ties_bfloat16']} ({figures['ties_bfloat16'] / n:.2%})")
    print(f"  float32 logits tied at the top rounded to float16:  {figures['ties_float16']} ({figures['ties_float16'] / n:.2%})")
    print(f"  bfloat16 base's greedy token = float32's:           {same} ({same / n:.1%})")
    print(f"  {figures['seconds']} s")


if __name__ == "__main__":
    main()
