"""Time the two ways of computing a verify tree's logits on this CPU: F.linear(x, W) and (W @ x.T).T, for
SmolLM2-135M's lm_head shape [49152, 576] and 1..24 rows (the tree's nodes). Prints milliseconds and the
ratio measured in the same run; `BaseModel.logits` uses the second form up to `SMALL_ROWS` rows.

    python scripts/bench_lm_head.py [--threads N] [--vocab 49152] [--hidden 576]
"""

from __future__ import annotations

import time

import click
import torch
import torch.nn.functional as F


def best_of(fn, reps: int) -> float:
    for _ in range(3):
        fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times) * 1000


@click.command()
@click.option("--threads", type=int, default=None, help="torch intra-op threads [default: torch's choice].")
@click.option("--vocab", default=49152, show_default=True)
@click.option("--hidden", default=576, show_default=True)
@click.option("--reps", default=20, show_default=True)
def main(threads, vocab, hidden, reps):
    if threads:
        torch.set_num_threads(threads)
    weight = torch.randn(vocab, hidden)
    print(f"threads {torch.get_num_threads()}, head [{vocab}, {hidden}] float32")
    print("rows  F.linear ms  (W @ x.T).T ms  ratio")
    for rows in (1, 2, 4, 8, 12, 16, 24):
        x = torch.randn(rows, hidden)
        assert torch.allclose(F.linear(x, weight), (weight @ x.T).T, rtol=1e-4, atol=1e-4)
        a = best_of(lambda: F.linear(x, weight), reps)
        b = best_of(lambda: (weight @ x.T).T, reps)
        print(f"{rows:4d}  {a:11.2f}  {b:13.2f}  {a / b:5.2f}")


if __name__ == "__main__":
    main()
