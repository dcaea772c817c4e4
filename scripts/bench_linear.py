"""Time every product the runtime's `Linear` can choose on this machine ("plain": `F.linear`, MKL's sgemm as in
transformers; "onednn": oneDNN with the weight packed once; "mkl_packed": MKL's packed sgemm laid out for 16 rows)
on one forward's worth of SmolLM2-135M-shaped float32 weights (30 layers of qkv, dense, fused gate/up and down
projections, then the [49152, 576] head; far larger than the CPU caches, as in a real model) for 1..24 rows: a
verify tree's nodes. Prints milliseconds, each product's speed relative to F.linear measured in the same
run, and the plan `tune` would make of it.

    python scripts/bench_linear.py [--threads N]
"""

from __future__ import annotations

import click
import torch

from redrafter_trt.cli import Script
from redrafter_trt.runtime.linear import PRODUCTS, Linear, describe, plan_from, time_products

HIDDEN, INTER, QKV, LAYERS, VOCAB = 576, 1536, 960, 30, 49152


@click.command(cls=Script)
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="torch intra-op threads [default: torch's choice].")
@click.option("--reps", default=8, show_default=True, type=click.IntRange(min=1))
def main(threads, reps):
    if threads:
        torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    shapes = [(QKV, HIDDEN), (HIDDEN, HIDDEN), (2 * INTER, HIDDEN), (HIDDEN, INTER)] * LAYERS + [(VOCAB, HIDDEN)]
    linears = [Linear(torch.randn(shape, generator=g) * 0.02, products=PRODUCTS) for shape in shapes]
    names = list(linears[0].products)
    if names == ["plain"]:
        raise SystemExit("this torch has no packed products on this machine: Linear is F.linear here")
    print(f"threads {torch.get_num_threads()}, {len(shapes)} float32 weights, "
          f"{sum(h * w for h, w in shapes) / 1e6:.0f}M params")
    print("rows  " + "  ".join(f"{name:>9s} ms" for name in names) + "  (x F.linear's speed)")
    seconds = {}
    check = linears[3].products
    x = torch.randn(5, INTER, generator=g)
    for name in names:
        torch.testing.assert_close(check[name](x), check["plain"](x), rtol=1e-4, atol=1e-4)
    for rows in (1, 2, 3, 4, 6, 8, 12, 16, 24):
        seconds[rows] = time_products(linears, names, rows, reps)  # what `tune` times, in turns
        plain = seconds[rows]["plain"]
        print(f"{rows:4d}  " + "  ".join(f"{t * 1e3:9.1f} {plain / t:4.2f}" for t in seconds[rows].values()))
    print("plan:", describe(plan_from(seconds)))


if __name__ == "__main__":
    main()
