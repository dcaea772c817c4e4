"""Let a chat base write user prompts for its own drafter's training data (Magpie-style): sample the user turn
after the chat template's system prompt, keep the ones that end properly, deduplicate.

    python scripts/self_prompts.py --base DIR --num 128 --output prompts.jsonl [--starters]

Why: the packaged prompts (GSM8K, FastChat identity questions) are narrow; a drafter trained on the base's
answers to them predicts MT-Bench-style answers much worse than answers like its training data. Prompts the
base itself finds typical cover what chat users ask without any external data.

Left alone, a small base writes one kind of request over and over ("I'm planning ... Can you help me ...").
`--starters` opens each batch's user turn with one of the generic instruction openers below (Self-Instruct's
trick of seeding verb diversity; none is taken from an evaluation set) and lets the base finish the request.

Each record is {"prompt", "source"}: source "self", or "self-starter" with --starters (as the packaged
self_prompts.jsonl and starter_prompts.jsonl say, redrafter_trt/data/README.md).
"""

from __future__ import annotations

import json
from pathlib import Path

import click
import torch

from redrafter_trt.cli import Script
from redrafter_trt.cli.params import OutputFile, check_output_file

STARTERS = [
    "Write", "Compose", "Draft", "Create", "Design", "Generate", "Rewrite", "Edit", "Summarize", "Translate",
    "Explain", "Describe", "Discuss", "Compare", "Analyze", "Evaluate", "Classify", "Identify", "Extract",
    "List", "Suggest", "Recommend", "Provide", "Outline", "Imagine", "Pretend", "Act as", "You are",
    "Solve", "Calculate", "Given", "Suppose", "If", "Find", "Prove", "Implement", "Write a Python function",
    "Write a program", "Debug", "What", "Why", "How", "Which", "Who", "When", "Is it true that", "Tell me",
    "Please",
]


MIN_CHARS = 15  # a shorter user turn is no request ("Hi!", "Thanks")


def batch_sizes(num: int, batch_size: int) -> list[int]:
    """Batches drawing exactly `num` samples: full ones, then the rest."""
    return [min(batch_size, num - start) for start in range(0, num, batch_size)]


@click.command(cls=Script)
@click.option("--base", required=True, type=click.Path(path_type=Path, file_okay=False))
@click.option("--num", default=128, show_default=True, type=click.IntRange(min=1),
              help="Samples drawn (fewer survive the filters).")
@click.option("--batch-size", default=32, show_default=True, type=click.IntRange(min=1))
@click.option("--max-new-tokens", default=64, show_default=True, type=click.IntRange(min=1))
@click.option("--temperature", default=1.0, show_default=True, type=click.FloatRange(min=0, min_open=True),
              help="Sampling temperature (above 0: the prompts are sampled).")
@click.option("--seed", default=0, show_default=True)
@click.option("--starters", is_flag=True, help="Open each batch's request with the next of STARTERS.")
@click.option("--output", required=True, type=OutputFile(),
              help="jsonl written here when done (OUTPUT.partial meanwhile, batch by batch).")
def main(base, num, batch_size, max_new_tokens, temperature, seed, starters, output):
    from redrafter_trt.config import read_json
    from redrafter_trt.errors import ConfigError
    from redrafter_trt.hf_model import load_causal_lm
    from redrafter_trt.tokens import load_tokenizer, render_chat
    from redrafter_trt.train.distill import turn_end_ids

    check_output_file(output, [base], "--output")  # BASE/config.json was replaced by the prompts, after generating
    read_json(base / "config.json", "base")  # a missing or wrong folder as one line, before transformers reads it
    tok = load_tokenizer(str(base), None)  # a folder without one: one line, as run and bench
    if not tok.chat_template:
        raise ConfigError(f"the tokenizer in {base} has no chat template, which the prompts are sampled after: "
                          f"pass a chat (instruct) model")
    model = load_causal_lm(base, torch.float32).eval()
    text = render_chat(tok, [{"role": "user", "content": "X"}], add_generation_prompt=False)  # dated as run's
    prefix = text[: text.index("X")]  # the template up to the user's text
    # the user turn ends at the template's end-of-turn token (ChatML's <|im_end|>) as well as at EOS: a ChatML base
    # whose EOS is <|endoftext|> (Qwen2's) went on past <|im_end|>, and every sample "ran past --max-new-tokens"
    ends = sorted(turn_end_ids(tok) | ({tok.eos_token_id} - {None}))
    torch.manual_seed(seed)
    seen, kept, cut, short = set(), [], 0, 0
    partial = output.with_name(output.name + ".partial")
    partial.write_text("")  # written batch by batch: an interrupted run keeps what it had, and OUTPUT stays as it was
    for batch, size in enumerate(batch_sizes(num, batch_size)):
        opener = STARTERS[batch % len(STARTERS)] if starters else ""
        ids = torch.tensor([tok(prefix + opener, add_special_tokens=False)["input_ids"]])
        with torch.no_grad():
            out = model.generate(input_ids=ids.repeat(size, 1), attention_mask=torch.ones_like(ids).repeat(size, 1),
                                 do_sample=True, temperature=temperature, top_p=0.95, max_new_tokens=max_new_tokens,
                                 eos_token_id=ends, pad_token_id=tok.eos_token_id)
        for row in out[:, ids.shape[1]:].tolist():
            end = next((i for i, t in enumerate(row) if t in ends), None)
            if end is None:
                cut += 1  # ran out of tokens mid-prompt
                continue
            prompt = (opener + tok.decode(row[:end])).strip()
            short += len(prompt) < MIN_CHARS
            if len(prompt) >= MIN_CHARS and prompt not in seen:
                seen.add(prompt)
                kept.append(prompt)
                with partial.open("a") as f:
                    f.write(json.dumps({"prompt": prompt, "source": "self-starter" if starters else "self"}) + "\n")
        print(f"{len(kept)} prompts", flush=True)
    if not kept:
        partial.unlink()
        raise ConfigError(nothing_kept(num, cut, short, max_new_tokens, output, starters))
    partial.replace(output)


def nothing_kept(num: int, cut: int, short: int, max_new_tokens: int, output: Path, starters: bool) -> str:
    """Why no sample made a prompt, and what to change (--starters only where not given): an empty --output had
    replaced the file."""
    why = [f"{cut} ran past --max-new-tokens {max_new_tokens} before ending the user turn"] if cut else []
    why += [f"{short} ended under {MIN_CHARS} characters"] if short else []
    fix = "raise --max-new-tokens" if cut >= short else \
        "draw more with --num" + ("" if starters else ", or open the requests with --starters")
    return f"no prompt kept of {num} samples ({', '.join(why)}): {output} not written; {fix}"


if __name__ == "__main__":
    main()
