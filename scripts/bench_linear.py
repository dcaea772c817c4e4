"""Time the runtime's `Linear` (oneDNN, weight packed once) against `F.linear` (MKL, what transformers uses) on
one forward's worth of SmolLM2-135M-shaped float32 weights (30 layers of qkv, dense, fused gate/up and down
projections, then the [49152, 576] head; far larger than the CPU caches, as in a real model) for 1..24 rows:
a verify tree's nodes. Prints milliseconds and the ratio measured in the same run.

    python scripts/bench_linear.py [--threads N]
"""

from __future__ import annotations


import click
import torch
import torch.nn.functional as F

from redrafter_trt.runtime.linear import Linear, best_of_each

HIDDEN, INTER, QKV, LAYERS, VOCAB = 576, 1536, 960, 30, 49152


@click.command()
@click.option("--threads", type=int, default=None, help="torch intra-op threads [default: torch's choice].")
@click.option("--reps", default=8, show_default=True)
def main(threads, reps):
    if threads:
        torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    shapes = [(QKV, HIDDEN), (HIDDEN, HIDDEN), (2 * INTER, HIDDEN), (HIDDEN, INTER)] * LAYERS + [(VOCAB, HIDDEN)]
    weights = [torch.randn(shape, generator=g) * 0.02 for shape in shapes]
    packed = [Linear(w) for w in weights]
    if packed[0].packed is None:
        raise SystemExit("this torch has no oneDNN packed linear: Linear falls back to F.linear here")
    print(f"threads {torch.get_num_threads()}, {len(shapes)} float32 weights, {sum(w.numel() for w in weights) / 1e6:.0f}M params")
    print("rows  F.linear ms  Linear ms  ratio")
    for rows in (1, 2, 4, 6, 8, 12, 16, 24):
        xs = {k: torch.randn(rows, k, generator=g) for k in (HIDDEN, INTER)}
        torch.testing.assert_close(packed[3](xs[INTER]), F.linear(xs[INTER], weights[3]), rtol=1e-4, atol=1e-4)
        a, b = best_of_each(reps, lambda: [F.linear(xs[w.shape[1]], w) for w in weights],
                            lambda: [lin(xs[lin.in_features]) for lin in packed])  # what `tune` times, in turns
        print(f"{rows:4d}  {a * 1e3:11.1f}  {b * 1e3:9.1f}  {a / b:5.2f}")


if __name__ == "__main__":
    main()
