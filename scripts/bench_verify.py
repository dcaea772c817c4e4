"""What one verify step costs on this machine as the tree grows: a SmolLM2-135M-Instruct float32 checkpoint's base
forward plus the greedy tokens over T new tokens (a 150-token context in the cache), relative to T = 1 (plain decoding).
On a CPU the ratio is the number of tokens per step drafting must accept just to break even. Each size is timed
twice in the same run: greedy tokens from the full float32 logits, and the runtime's own (the float16-screened argmax,
`redrafter_trt/runtime/argmax.py`, where `ScreenedArgmax.pays` on this machine); the last column is their ratio. A second table times the lm_head
part alone on the context's own hidden states: full logits + argmax vs the screen called directly at every size
(the runtime screens only up to `MAX_ROWS` rows).

    python scripts/bench_verify.py [--threads 1] [--sizes 1,2,4,8,16,24]
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import click
import torch

from redrafter_trt.cli import Script
from redrafter_trt.cli.bench_cmd import int_list


def best_ms(fn, reps: int) -> float:
    """Best of `reps` timed calls in milliseconds, after two warm-up calls."""
    fn()
    fn()
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best * 1000


def time_verify(base, T: int, context: int, reps: int, greedy) -> float:
    """Best-of-reps milliseconds of base.forward + greedy(hidden) over T chained new tokens."""
    cache = base.new_cache(1, context + T + 1)
    ids = torch.randint(0, 1000, (1, context), generator=torch.Generator().manual_seed(0))
    base.forward(ids, torch.arange(context)[None], torch.ones(context, context, dtype=torch.bool).tril()[None], cache)
    cache.lens[:] = context
    tokens = torch.randint(0, 1000, (1, T), generator=torch.Generator().manual_seed(1))
    positions, mask = context + torch.arange(T)[None], torch.ones(T, T, dtype=torch.bool).tril()[None]
    return best_ms(lambda: greedy(base.forward(tokens, positions, mask, cache)), reps)


@click.command(cls=Script)
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="torch intra-op threads [default: torch's choice].")
@click.option("--sizes", default="1,2,4,8,16,24", show_default=True, callback=int_list,
              help="Tree sizes T (new tokens per forward); T=1 is timed too, the ratios' reference.")
@click.option("--context", default=150, show_default=True, type=click.IntRange(min=1))
@click.option("--reps", default=8, show_default=True, type=click.IntRange(min=1))
def main(threads, sizes, context, reps):
    import redrafter_trt.runtime as rt
    from redrafter_trt.convert import convert
    from redrafter_trt.runtime.argmax import ScreenedArgmax
    from redrafter_trt.runtime.model import read_rank_file
    from redrafter_trt.drafter import init_drafter_for_base
    from redrafter_trt.plural import counted
    from redrafter_trt.smollm2 import ensure_smollm2

    if threads:
        torch.set_num_threads(threads)
    sizes = sorted({1, *sizes})  # "vs T=1" divides by the T=1 row
    base_dir = ensure_smollm2()
    with tempfile.TemporaryDirectory(prefix="bench-verify-") as tmp:
        init_drafter_for_base(base_dir, Path(tmp) / "drafter")
        ckpt = convert(base_dir, Path(tmp) / "drafter", Path(tmp) / "ckpt", dtype="float32")
        rt.check_positions(rt.RuntimeConfig.from_dir(ckpt), [[0] * context], max(sizes), flag="--sizes",
                           names=[f"--context {context}"])
        model = rt.load(ckpt)
        head = read_rank_file(ckpt, 0)["lm_head.weight"]
    base = model.base
    screen = base.screened_argmax or ScreenedArgmax.create(head[: base.cfg.vocab_size])
    print(f"SmolLM2-135M float32, {counted(torch.get_num_threads(), 'thread')}, context {context}; the runtime "
          f"screens greedy steps here: {'yes' if base.screened_argmax else 'no (ScreenedArgmax.pays: slower on this machine)'}")
    full = lambda hidden: base.logits(hidden).argmax(-1)  # noqa: E731
    print("T   ms (full logits)  ms (runtime)  vs T=1 (runtime)  full / runtime")
    one = None
    for T in sizes:
        slow, fast = time_verify(base, T, context, reps, full), time_verify(base, T, context, reps, base.greedy_tokens)
        one = one or fast
        print(f"{T:<3d} {slow:16.1f}  {fast:12.1f}  {fast / one:16.2f}  {slow / fast:14.2f}")
    cache = base.new_cache(1, context)
    ids = torch.randint(0, 20000, (1, context), generator=torch.Generator().manual_seed(2))
    hidden = base.forward(ids, torch.arange(context)[None], torch.ones(1, context, context, dtype=torch.bool).tril(),
                          cache)[0]
    print("lm_head only: rows  ms (full logits)  ms (screened)  full / screened  tokens re-scored")
    for T in sizes:
        x = hidden[-T:].contiguous()
        slow, fast = best_ms(lambda: full(x), reps), best_ms(lambda: screen(x), reps)
        kept = screen.candidates(x).numel()
        print(f"{T:18d}  {slow:16.2f}  {fast:13.2f}  {slow / fast:15.2f}  {kept:16d}")


if __name__ == "__main__":
    main()
