#!/usr/bin/env python3
"""The runtime benchmark on the built-in default, in one process: SmolLM2-135M-Instruct, a drafter (a fresh
`init-drafter` one unless --drafter is given), MT-Bench first turns through transformers' `generate` and through
the reference runtime with and without drafting; prints the table of tokens/step, tokens/s and the ratios.

    python scripts/bench_runtime.py                                   # fresh drafter: shows the cost of drafting
    python scripts/bench_runtime.py --drafter DRAFTER -n 20 --max-new-tokens 128 --beams 1,2,4 --draft-lens 2,4

A thin wrapper over `redrafter_trt.bench` (the `redrafter-trt bench` command), which does the measuring.
"""

from __future__ import annotations

import argparse
import importlib.resources
import tempfile
from pathlib import Path


def main() -> None:
    from redrafter_trt.bench import BenchOptions, format_table, run_bench
    from redrafter_trt.convert import convert
    from redrafter_trt.drafter import init_drafter_for_base
    from redrafter_trt.smollm2 import ensure_smollm2

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--drafter", type=Path, help="Apple-layout drafter [default: a fresh init-drafter one]")
    ap.add_argument("-n", "--num-prompts", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--beams", default="1,2,4")
    ap.add_argument("--draft-lens", default="2,4")
    args = ap.parse_args()
    base = ensure_smollm2()
    prompts = importlib.resources.files("redrafter_trt") / "data" / "mt_bench_questions.jsonl"
    with tempfile.TemporaryDirectory() as tmp:
        drafter = args.drafter
        if drafter is None:
            drafter = Path(tmp) / "drafter"
            init_drafter_for_base(base, drafter, exit_dim=576)
        ckpt = convert(base, drafter, Path(tmp) / "ckpt", num_beams=max(map(int, args.beams.split(","))),
                       draft_len=max(map(int, args.draft_lens.split(","))))
        report = run_bench(BenchOptions(checkpoint_dir=ckpt, tokenizer_dir=base, prompts=Path(str(prompts)),
                                        hf_dir=base, num_prompts=args.num_prompts, max_new_tokens=args.max_new_tokens,
                                        beams=tuple(map(int, args.beams.split(","))),
                                        draft_lens=tuple(map(int, args.draft_lens.split(",")))),
                           progress=print)
        print(format_table(report))


if __name__ == "__main__":
    main()
