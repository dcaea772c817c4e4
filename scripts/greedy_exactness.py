"""Greedy exactness on a real model: the reference runtime's greedy output (drafted, and with --plain also without
drafting) against transformers' greedy `generate` (batch 1) on MT-Bench first turns in the chat template, with
fresh `init-drafter` drafters of the given seeds, converted in the given dtype. Prints how many outputs are identical
and, for each that is not, the first differing position with the two highest of the logits transformers' own token
came from (in bfloat16 and float16 a divergence at a tie or a near tie, a unit or two of the dtype apart, is the tree
forward's other batch shape rounding differently, not a bug).

    python scripts/greedy_exactness.py                      # README: 12 questions x 64 tokens, batch 1 and 4,
                                                            # seeds 0, 1, 2, float32 (72 outputs)
    python scripts/greedy_exactness.py --dtype bfloat16 --num-prompts 5 --max-new-tokens 40 --seeds 0 \\
        --batch-sizes 1 --plain                             # README: bfloat16's tied logits
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the checkout's redrafter_trt, installed or not

from redrafter_trt.cli import Script  # noqa: E402
from redrafter_trt.plural import counted  # noqa: E402

DEFAULT_QUESTIONS = ROOT / "redrafter_trt" / "data" / "mt_bench_questions.jsonl"


def ints(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",")]
    except ValueError:
        raise click.BadParameter(f"{text!r}: write comma-separated integers") from None


def first_difference(ref: list[int], out: list[int]) -> int:
    return next((i for i, (a, b) in enumerate(zip(ref, out)) if a != b), min(len(ref), len(out)))


def differences(refs: list[list[int]], outputs: list[list[int]], ref_logits: list, numbers: list[int]) -> list[str]:
    """One line per output that differs from transformers': the prompt (`numbers[i]`, its number from 1 in the
    prompts file's order, as bench numbers them), the first differing token and the two highest logits
    transformers' token came from. `ref_logits[i]` holds one [1, vocab] tensor per token transformers generated for
    prompt i."""
    lines = []
    for i, (r, o) in enumerate(zip(refs, outputs)):
        if o != r:
            at = first_difference(r, o)
            line = f"  prompt {numbers[i]}: differs at token {at}: transformers {r[at:at + 1]}, runtime {o[at:at + 1]}"
            if at < len(ref_logits[i]):  # else one output ended where the other went on
                top = ref_logits[i][at][0].float().topk(2)
                line += f"; transformers' top two logits {top.values.tolist()} (tokens {top.indices.tolist()})"
            lines.append(line)
    return lines


@click.command(cls=Script, help=__doc__.split("\n\n")[0])
@click.option("--base", type=click.Path(path_type=Path), help="Hugging Face base folder (default: SmolLM2-135M-Instruct)")
@click.option("--questions", type=click.Path(path_type=Path), default=DEFAULT_QUESTIONS, help="prompts (jsonl)")
@click.option("--num-prompts", type=click.IntRange(min=1), default=12, show_default=True,
              help="Prompts of --questions checked, spread over the file (prompts.take_spread).")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--seeds", default="0,1,2", show_default=True, help="init-drafter seeds, comma-separated")
@click.option("--batch-sizes", default="1,4", show_default=True, help="runtime batch sizes, comma-separated")
@click.option("--dtype", type=click.Choice(["float32", "bfloat16", "float16"]), default="float32", show_default=True,
              help="checkpoint and transformers dtype")
@click.option("--plain", is_flag=True, help="also decode without drafting")
@click.option("--threads", type=click.IntRange(min=1), default=2, show_default=True)
def main(base, questions, num_prompts, max_new_tokens, seeds, batch_sizes, dtype, plain, threads) -> None:
    import torch

    from redrafter_trt import runtime as rt
    from redrafter_trt.bench import greedy_config, load_hf_baseline
    from redrafter_trt.convert import convert
    from redrafter_trt.drafter import init_drafter_for_base
    from redrafter_trt.prompts import load_prompts, spread_indices
    from redrafter_trt.smollm2 import ensure_smollm2
    from redrafter_trt.tokens import encode_prompts, load_tokenizer, stop_ids

    seeds, batch_sizes = ints(seeds), ints(batch_sizes)
    torch.set_num_threads(threads)
    base = base or ensure_smollm2()
    texts = load_prompts(questions)
    taken = spread_indices(len(texts), num_prompts)  # as bench takes --num-prompts, numbered as bench numbers them
    tokenizer = load_tokenizer(base, None)
    prompts = encode_prompts(tokenizer, [texts[i] for i in taken], chat=None)
    eos = stop_ids(tokenizer, base)  # as run and bench: both sides stop on the same ids
    hf = load_hf_baseline(base, getattr(torch, dtype))  # as bench's: the base's generation_config.json dropped
    refs, ref_logits = [], []
    with torch.no_grad():
        for p in prompts:
            out = hf.generate(torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
                              generation_config=greedy_config(max_new_tokens, eos), output_logits=True,
                              return_dict_in_generate=True)
            refs.append(out.sequences[0, len(p):].tolist())
            ref_logits.append(out.logits)  # per step [1, V]: the logits transformers' own token came from

    def report(label: str, outputs: list[list[int]]) -> int:
        same = sum(o == r for o, r in zip(outputs, refs))
        print(f"{label}: {same} of {len(refs)} identical")
        for line in differences(refs, outputs, ref_logits, [i + 1 for i in taken]):
            print(line)
        return same

    same = total = 0
    with tempfile.TemporaryDirectory(prefix="greedy-exactness-") as scratch:
        for seed in seeds:
            init_drafter_for_base(base, Path(scratch) / f"drafter{seed}", seed=seed)
            ckpt = convert(base, Path(scratch) / f"drafter{seed}", Path(scratch) / f"ckpt{seed}", dtype=dtype)
            model = rt.load(ckpt, dtype=dtype)
            for bs in batch_sizes:
                for use_draft in ([True, False] if plain else [True]):
                    res = rt.generate(model, prompts, max_new_tokens, eos_token_id=eos, batch_size=bs,
                                      use_draft=use_draft)
                    n = report(f"seed {seed}, batch {bs}, {'drafted' if use_draft else 'plain'}", res.output_ids)
                    same, total = same + n, total + len(refs)
            del model
    print(f"{same} of {total} identical ({dtype}, {counted(len(prompts), 'question')} x {max_new_tokens} tokens)")


if __name__ == "__main__":
    main()
