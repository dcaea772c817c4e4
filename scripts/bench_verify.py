"""What one verify step costs on this machine as the tree grows: a SmolLM2-135M-Instruct float32 checkpoint's base
forward plus the greedy tokens over T new tokens (a 150-token context in the cache), relative to T = 1 (plain decoding).
On a CPU the ratio is the number of tokens per step drafting must accept just to break even.

    python scripts/bench_verify.py [--threads 1] [--sizes 1,2,4,8,16,24]
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import click
import torch


def time_verify(base, T: int, context: int, reps: int) -> float:
    """Best-of-reps milliseconds of base.forward + base.greedy_tokens over T chained new tokens."""
    cache = base.new_cache(1, context + T + 1)
    ids = torch.randint(0, 1000, (1, context), generator=torch.Generator().manual_seed(0))
    base.forward(ids, torch.arange(context)[None], torch.ones(context, context, dtype=torch.bool).tril()[None], cache)
    cache.lens[:] = context
    tokens = torch.randint(0, 1000, (1, T), generator=torch.Generator().manual_seed(1))
    positions, mask = context + torch.arange(T)[None], torch.ones(T, T, dtype=torch.bool).tril()[None]
    best = float("inf")
    for i in range(reps + 2):
        start = time.perf_counter()
        base.greedy_tokens(base.forward(tokens, positions, mask, cache))
        if i >= 2:  # two warm-up rounds
            best = min(best, time.perf_counter() - start)
    return best * 1000


@click.command()
@click.option("--threads", type=int, default=None, help="torch intra-op threads [default: torch's choice].")
@click.option("--sizes", default="1,2,4,8,16,24", show_default=True, help="Tree sizes T (new tokens per forward).")
@click.option("--context", default=150, show_default=True)
@click.option("--reps", default=8, show_default=True)
def main(threads, sizes, context, reps):
    import redrafter_trt.runtime as rt
    from redrafter_trt.convert import convert
    from redrafter_trt.drafter import init_drafter_for_base
    from redrafter_trt.smollm2 import ensure_smollm2

    if threads:
        torch.set_num_threads(threads)
    base_dir = ensure_smollm2()
    with tempfile.TemporaryDirectory(prefix="bench-verify-") as tmp:
        init_drafter_for_base(base_dir, Path(tmp) / "drafter")
        model = rt.load(convert(base_dir, Path(tmp) / "drafter", Path(tmp) / "ckpt", dtype="float32"))
    print(f"SmolLM2-135M float32, {torch.get_num_threads()} thread(s), context {context}")
    print("T   ms/verify  vs T=1")
    one = None
    for T in (int(s) for s in sizes.split(",")):
        ms = time_verify(model.base, T, context, reps)
        one = one or ms
        print(f"{T:<3d} {ms:9.1f}  {ms / one:6.2f}")


if __name__ == "__main__":
    main()
