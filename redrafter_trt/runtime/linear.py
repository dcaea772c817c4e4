"""`Linear`: y = x @ W.T (+ b) through oneDNN with the weight packed once, on a CPU in float32.

Why: a verify step multiplies every weight by a handful of rows (the tree's tokens). MKL's sgemm, which
`F.linear` uses, is tuned for one row or for many; for 2-16 rows it costs nearly as much per row as separate
products. oneDNN with a weight reordered once into its blocked layout reads the weight once for all rows: on
this project's 2-core AVX2 machine SmolLM2-135M's linears are 1.4x faster for one row and 1.5-2.5x for 2-24 rows
(`python scripts/bench_linear.py`). Elsewhere (a GPU, 16-bit weights, a torch without oneDNN) it is `F.linear`.

Not everywhere: on an Intel Xeon with AMX (session 17) MKL reads a weight faster for 1-3 rows (1 row: 26.5 against
33.9 ms for SmolLM2's linears) and oneDNN only wins from 4 rows (1.3-1.8x). So a small model's linears keep both
copies and `tune` times both products over them once, at load, for 1-4 rows: products of up to `plain_rows` rows
take `F.linear`, larger ones oneDNN (on the AMD EPYCs of sessions 6-16 oneDNN wins at every size: plain_rows 0 and
the plain copies are dropped). Ranks above PLAIN_KEEP_BYTES, and tensor-parallel ranks, keep oneDNN's copy alone.
The two round differently, so a timed choice could change a near-tie's greedy token from one start to the next:
`REDRAFTER_TRT_PLAIN_ROWS=N` pins it (0: oneDNN everywhere and the float16 screen wherever it applies, as before).

The two paths round differently: against float64, oneDNN's float32 error is about 2.5x MKL's. The tests bound the
logits' error by transformers' own and compare greedy outputs with transformers' token for token.
"""

from __future__ import annotations

import logging
import os
import time

import torch
import torch.nn.functional as F

from ..errors import ConfigError

log = logging.getLogger(__name__)

PROBE_ROWS = (1, 2, 3, 4)  # row counts `tune` times: where the two products crossed over on the CPUs measured
PLAIN_KEEP_BYTES = 2 << 30  # weights up to this size keep a plain copy beside oneDNN's for `tune` to choose
PIN_ENV = "REDRAFTER_TRT_PLAIN_ROWS"  # a whole number pins tune's crossover instead of timing it


def pinned_plain_rows() -> int | None:
    """REDRAFTER_TRT_PLAIN_ROWS as a crossover, None when unset."""
    value = os.environ.get(PIN_ENV)
    if value is None:
        return None
    if not value.strip().isdigit():
        raise ConfigError(f"{PIN_ENV}={value!r}: give a whole number of rows (0: oneDNN everywhere), or unset it")
    return int(value)


def _onednn_ready(weight: torch.Tensor, dtypes: tuple[torch.dtype, ...] = (torch.float32,)) -> bool:
    return (weight.device.type == "cpu" and weight.dtype in dtypes and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_linear_pointwise"))


class Linear:
    """weight [N, K], bias [N] or None; __call__: x [..., K] -> [..., N] in x's dtype. Once packed, only
    oneDNN's copy of the weight is kept, unless `keep_plain` (then `tune` decides which products use which)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None,
                 dtypes: tuple[torch.dtype, ...] = (torch.float32,), keep_plain: bool = False):
        self.weight, self.bias, self.packed = weight, bias, None
        self.out_features, self.in_features = weight.shape
        self.plain_rows = 0  # products of up to this many rows take F.linear (needs the plain weight)
        if _onednn_ready(weight, dtypes):
            try:
                self.packed = torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), None)
                self.weight = weight if keep_plain else None
            except RuntimeError as e:  # a build whose oneDNN cannot pack this shape
                log.info("oneDNN packing unavailable (%s); using F.linear", e)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.packed is None or (self.weight is not None and x.numel() <= self.plain_rows * self.in_features):
            return F.linear(x, self.weight, self.bias)
        return self.onednn(x)

    def onednn(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        out = torch.ops.mkldnn._linear_pointwise(flat.contiguous(), self.packed, self.bias, "none", [], "")
        return out.view(*x.shape[:-1], out.shape[-1])


MARGIN = 0.95  # F.linear is taken where it ran in under this fraction of oneDNN's time: a clear win, not noise


def plain_rows_from(seconds: dict[int, tuple[float, float]]) -> int:
    """seconds: rows -> (F.linear's time, oneDNN's time). The largest row count at which F.linear clearly won
    (0: none); products up to it take F.linear. Taking the largest win, not the first loss, lets one disturbed
    timing at a small count (a shared machine) not undo the choice."""
    return max((rows for rows, (plain, packed) in seconds.items() if plain < MARGIN * packed), default=0)


def tune(linears: list[Linear], rows: tuple[int, ...] = PROBE_ROWS) -> int:
    """Time both products over `linears` (a whole model's: far beyond the CPU caches, as in decoding) at each row
    count, best of 3, the two taking turns so that a disturbance hits both; every linear then takes F.linear up to
    the crossover and drops the copy it no longer needs. Returns that crossover (plain_rows)."""
    both = [lin for lin in linears if lin.packed is not None and lin.weight is not None]
    if not both:
        return 0
    pinned = pinned_plain_rows()
    if pinned is not None:
        return _apply(both, pinned, f"pinned by {PIN_ENV}")
    seconds = {}
    with torch.inference_mode():
        for r in rows:
            xs = {k: torch.randn(r, k) for k in {lin.in_features for lin in both}}
            seconds[r] = best_of_each(3, lambda: [F.linear(xs[lin.in_features], lin.weight, lin.bias) for lin in both],
                                      lambda: [lin.onednn(xs[lin.in_features]) for lin in both])
    return _apply(both, plain_rows_from(seconds), "ms per pass at %s rows, plain/oneDNN: %s" % (
        ",".join(map(str, rows)), " ".join(f"{a * 1e3:.1f}/{b * 1e3:.1f}" for a, b in seconds.values())))


def _apply(linears: list[Linear], crossover: int, why: str) -> int:
    for lin in linears:
        lin.plain_rows = crossover
        if not crossover:
            lin.weight = None
    log.info("CPU linears: F.linear up to %d rows, oneDNN above (%s)", crossover, why)
    return crossover


def best_of_each(n: int, *fns) -> tuple[float, ...]:
    """The shortest of n timed calls of each fn, in seconds, after one warm-up call each; the fns take turns."""
    for fn in fns:
        fn()
    best = [float("inf")] * len(fns)
    for _ in range(n):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - start)
    return tuple(best)


def pack_linears(module: torch.nn.Module, dtypes: tuple[torch.dtype, ...] = (torch.float32,)) -> int:
    """Route every CPU `nn.Linear` of a (transformers) model whose weight is in `dtypes` through a packed
    `Linear`, in place, for inference only (the packed copy does not follow later changes of the weights).
    Returns how many. Training data prepared in bfloat16 packs those too (1.3x faster distillation)."""
    count = 0
    for sub in module.modules():
        if isinstance(sub, torch.nn.Linear) and _onednn_ready(sub.weight, dtypes):
            packed = Linear(sub.weight.detach(), None if sub.bias is None else sub.bias.detach(), dtypes)
            if packed.packed is not None:
                sub.forward = packed
                count += 1
    return count
