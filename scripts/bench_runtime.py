#!/usr/bin/env python3
"""The runtime benchmark on the built-in default, in one process: SmolLM2-135M-Instruct, a drafter (a fresh
`init-drafter` one unless --drafter is given), MT-Bench first turns through transformers' `generate` and through
the reference runtime with and without drafting; prints what `bench` prints after its header: the table of
tokens/step, tokens/s and the ratios, the `best:` line with its speed-ups' intervals, and whether drafting pays on
this machine, and why.

    python scripts/bench_runtime.py                                   # fresh drafter: shows the cost of drafting
    python scripts/bench_runtime.py --drafter DRAFTER -n 20 --max-new-tokens 128 --beams 1,2,4 --draft-lens 2,4

A thin wrapper over `redrafter_trt.bench` (the `redrafter-trt bench` command), which does the measuring.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import click

from redrafter_trt.cli import Script
from redrafter_trt.cli.bench_cmd import int_list


@click.command(cls=Script, help=__doc__.split("\n\n")[0])
@click.option("--drafter", type=click.Path(path_type=Path),
              help="Apple-layout drafter [default: a fresh init-drafter one]")
@click.option("-n", "--num-prompts", type=click.IntRange(min=1), default=8, show_default=True,
              help="MT-Bench questions measured, spread over the file (prompts.take_spread).")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--beams", default="1,2,4", show_default=True, callback=int_list)
@click.option("--draft-lens", default="2,4", show_default=True, callback=int_list)
def main(drafter, num_prompts, max_new_tokens, beams, draft_lens) -> None:
    from redrafter_trt.bench import BenchOptions, run_bench
    from redrafter_trt.bench_report import result_lines
    from redrafter_trt.convert import convert
    from redrafter_trt.drafter import init_drafter_for_base
    from redrafter_trt.quickstart import mt_bench_path
    from redrafter_trt.smollm2 import ensure_smollm2

    base = ensure_smollm2()
    prompts = mt_bench_path()
    with tempfile.TemporaryDirectory() as tmp:
        if drafter is None:
            drafter = Path(tmp) / "drafter"
            init_drafter_for_base(base, drafter, exit_dim=576)
        ckpt = convert(base, drafter, Path(tmp) / "ckpt", num_beams=max(beams), draft_len=max(draft_lens))
        report = run_bench(BenchOptions(checkpoint_dir=ckpt, tokenizer_dir=base, prompts=prompts,
                                        hf_dir=base, num_prompts=num_prompts, max_new_tokens=max_new_tokens,
                                        beams=beams, draft_lens=draft_lens),
                           progress=print)
        for line in result_lines(report):
            print(line)


if __name__ == "__main__":
    main()
