"""Time the base's forward eager and compiled by TorchInductor (`load(compile=True)`, runtime/compiled.py) on a real
checkpoint: one forward of 1, 3, 5, 7, 9 and 13 new tokens (verify trees' sizes) after a prompt of CONTEXT tokens,
both models in turns in one process, the best of --reps each. Prints milliseconds, the ratio eager / compiled
measured in this run, the largest difference of the hidden states, and how long loading with compiling took.

    python scripts/bench_compiled.py --checkpoint-dir CKPT [--threads 2] [--context 100]
"""

from __future__ import annotations

import time

import click
import torch

from redrafter_trt import runtime as rt
from redrafter_trt.cli import Script
from redrafter_trt.cli.bench_cmd import echo_merge_note
from redrafter_trt.errors import ConfigError
from redrafter_trt.runtime.compiled import check_cxx_compiler

ROWS = (1, 3, 5, 7, 9, 13)
# this script always compiles: without a C++ compiler, its fix is the eager profile, not compile=False
SPELLING = rt.Spelling(compiling="bench_compiled.py times the base compiled, which",
                       no_compile="time the eager runtime with scripts/profile_decode.py instead")


def forward_once(model, context: torch.Tensor, rows: int) -> tuple[torch.Tensor, float]:
    """A fresh cache holding `context`, then one tree-free forward of `rows` new tokens: (hidden, seconds)."""
    base, n = model.base, context.shape[1]
    cache = base.new_cache(1, n + rows + 1)
    base.forward(context, torch.arange(n)[None], torch.ones(1, n, n, dtype=torch.bool).tril(), cache)
    cache.lens += n
    tokens = torch.arange(1000, 1000 + 37 * rows, 37)[None] % model.config.vocab_size
    start = time.perf_counter()
    hidden = base.forward(tokens, n + torch.arange(rows)[None], torch.ones(1, rows, rows, dtype=torch.bool).tril(),
                          cache)
    return hidden, time.perf_counter() - start


@click.command(cls=Script)
@click.option("--checkpoint-dir", required=True, type=click.Path(file_okay=False))
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="torch intra-op threads [default: torch's choice].")
@click.option("--context", default=100, show_default=True, type=click.IntRange(min=1),
              help="Cached tokens before the timed forward.")
@click.option("--reps", default=10, show_default=True, type=click.IntRange(min=1))
@torch.no_grad()
def main(checkpoint_dir, threads, context, reps):
    if threads:
        torch.set_num_threads(threads)
    checkpoint_dir = rt.merge_ranks(checkpoint_dir)  # inspected once, for both loads; a tp>1 one's ranks merged
    cfg = checkpoint_dir.config
    if cfg.dtype != "float32":  # before the eager load; the compiled load's refusal named a --compile this has not
        raise ConfigError(f"{checkpoint_dir} is {cfg.dtype}: bench_compiled.py times the base compiled, which runs "
                          f"float32 checkpoints (runtime/compiled.py); convert with --dtype float32 (and without "
                          f"--quantize fp8) for it")
    check_cxx_compiler(SPELLING)  # before both loads
    echo_merge_note(checkpoint_dir)  # a tp>1 one's rank files merged, as bench says
    rt.check_positions(cfg, [[0] * context], max(ROWS), flag="--context", names=[f"--context {context}"])
    eager = rt.load(checkpoint_dir)
    start = time.perf_counter()
    compiled = rt.load(checkpoint_dir, compile=True)
    print(f"threads {torch.get_num_threads()}; loading with compiling took {time.perf_counter() - start:.0f} s")
    ctx = torch.arange(500, 500 + 13 * context, 13)[None] % eager.config.vocab_size
    print("rows   eager ms  compiled ms  eager/compiled  max |diff|")
    for rows in ROWS:
        best = {"eager": float("inf"), "compiled": float("inf")}
        out = {}
        for _ in range(reps):
            for name, model in (("eager", eager), ("compiled", compiled)):
                out[name], seconds = forward_once(model, ctx, rows)
                best[name] = min(best[name], seconds)
        diff = (out["eager"] - out["compiled"]).abs().max().item()
        print(f"{rows:4d}  {best['eager'] * 1e3:9.2f}  {best['compiled'] * 1e3:11.2f}  "
              f"{best['eager'] / best['compiled']:14.2f}  {diff:.1e}")


if __name__ == "__main__":
    main()
