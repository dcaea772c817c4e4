"""Benchmark: the same prompts through transformers' `generate` (greedy, batch 1) and through `redrafter-trt run`
(reference runtime, with and without drafting), in one process. Prints tokens/s, tokens/step, the ratios and
whether the greedy outputs agree.

    python scripts/bench_runtime.py                      # SmolLM2-135M-Instruct, fresh drafter, 8 MT-Bench prompts
    python scripts/bench_runtime.py --checkpoint-dir ckpt --tokenizer-dir base -n 20 --max-new-tokens 128

Generation time only (no loading) is compared. An untrained drafter accepts almost nothing, so the draft run
shows the cost of drafting (ratio <= 1).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import click
import torch

MT_BENCH = "/work/shared/data/mt_bench_questions.jsonl"


def hf_generate(base: Path, prompt_ids: list[list[int]], max_new: int, eos) -> tuple[list[list[int]], float]:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
    outs, seconds = [], 0.0
    with torch.no_grad():
        for ids in prompt_ids:
            x = torch.tensor([ids])
            start = time.perf_counter()
            y = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=max_new, do_sample=False,
                               eos_token_id=eos)
            seconds += time.perf_counter() - start
            outs.append(y[0, len(ids):].tolist())
    return outs, seconds


def run_cli(args: list[str]) -> dict:
    from click.testing import CliRunner

    from redrafter_trt.cli import main

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "out.json"
        res = CliRunner().invoke(main, ["run", *args, "--output-json", str(out)])
        if res.exit_code != 0:
            raise SystemExit(f"redrafter-trt run failed: {res.output.strip()}")
        return json.loads(out.read_text())


@click.command()
@click.option("--checkpoint-dir", type=click.Path(file_okay=False), help="Default: convert SmolLM2 + a fresh drafter.")
@click.option("--tokenizer-dir", type=click.Path(file_okay=False), help="The base HF folder (default: SmolLM2).")
@click.option("--input-file", default=MT_BENCH, show_default=True)
@click.option("-n", "num_prompts", default=8, show_default=True, help="First n prompts of the file.")
@click.option("--max-new-tokens", default=64, show_default=True)
@click.option("--num-beams", type=int, help="Default: the checkpoint's.")
@click.option("--draft-len", type=int, help="Default: the checkpoint's.")
@click.option("--threads", default=0, help="torch intra-op threads (0: leave as is).")
def bench(checkpoint_dir, tokenizer_dir, input_file, num_prompts, max_new_tokens, num_beams, draft_len, threads):
    from transformers import AutoTokenizer

    from redrafter_trt.cli.run_cmd import encode, eos_ids
    from redrafter_trt.prompts import load_prompts

    if threads:
        torch.set_num_threads(threads)
    if not tokenizer_dir or not checkpoint_dir:
        from redrafter_trt.convert import convert
        from redrafter_trt.drafter import init_drafter, save_drafter
        from redrafter_trt.io import TensorSource
        from redrafter_trt.smollm2 import ensure_smollm2

        tokenizer_dir = tokenizer_dir or str(ensure_smollm2())
    tmp = tempfile.TemporaryDirectory(prefix="bench-runtime-")
    if not checkpoint_dir:
        cfg = json.loads((Path(tokenizer_dir) / "config.json").read_text())
        src = TensorSource.from_hf_folder(Path(tokenizer_dir))
        head = "lm_head.weight" if "lm_head.weight" in src.names() else "model.embed_tokens.weight"
        dcfg, drafter = init_drafter(cfg, src.get(head), seed=0)
        save_drafter(Path(tmp.name) / "drafter", dcfg, drafter.state_dict())
        checkpoint_dir = str(convert(tokenizer_dir, Path(tmp.name) / "drafter", Path(tmp.name) / "ckpt"))
    prompts = load_prompts(input_file)[:num_prompts]
    prompts_file = Path(tmp.name) / "prompts.jsonl"
    prompts_file.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    ids = encode(tok, prompts, chat=True)
    eos = eos_ids(tok, tokenizer_dir)

    hf_out, hf_s = hf_generate(Path(tokenizer_dir), ids, max_new_tokens, eos)
    hf_tokens = sum(len(o) for o in hf_out)
    common = ["--checkpoint-dir", checkpoint_dir, "--tokenizer-dir", tokenizer_dir, "--input-file", str(prompts_file),
              "--chat", "--max-output-len", str(max_new_tokens)]
    plain = run_cli(common + ["--no-draft"])
    extra = (["--num-beams", str(num_beams)] if num_beams else []) + (["--draft-len", str(draft_len)] if draft_len else [])
    draft = run_cli(common + extra)

    hf_tps = hf_tokens / hf_s
    rows = [("transformers generate", hf_tps, 1.0, hf_out)]
    for name, res in (("runtime --no-draft", plain), ("runtime drafting", draft)):
        rows.append((name, res["stats"]["tokens_per_second"], res["stats"]["mean_tokens_per_step"],
                     [r["output_ids"] for r in res["results"]]))
    click.echo(f"{len(prompts)} prompts, {max_new_tokens} new tokens max, chat template, greedy, "
               f"{torch.get_num_threads()} threads")
    for name, tps, tpstep, outs in rows:
        same = sum(o == h for o, h in zip(outs, hf_out))
        click.echo(f"{name:24s} {tps:7.2f} tokens/s  {tpstep:5.2f} tokens/step  ratio vs HF {tps / hf_tps:5.2f}  "
                   f"same output as HF {same}/{len(prompts)}")
    click.echo(f"drafting / no-draft ratio: {rows[2][1] / rows[1][1]:.2f}; histogram {draft['stats']['histogram']}")
    tmp.cleanup()


if __name__ == "__main__":
    sys.exit(bench())
