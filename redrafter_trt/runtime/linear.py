"""`Linear`: y = x @ W.T (+ b) on a CPU in float32 through whichever product is fastest on this machine for
the number of rows at hand.

Why: a verify step multiplies every weight by a handful of rows (the tree's tokens). MKL's sgemm, which `F.linear`
uses, is tuned for one row or for many; for 2-16 rows it can cost nearly as much per row as separate products.
Products that lay the weight out once at load read it once for all rows:
- "onednn": oneDNN's inner product with the weight reordered into its blocked layout. On the AMD EPYCs of sessions
  2-16 it beat `F.linear` at every size (1.4x for one row, 1.5-2.5x for 2-24 rows: `python scripts/bench_linear.py`).
- "mkl_packed": MKL's packed sgemm (cblas_sgemm_pack through torch's `mkl::_mkl_linear`), laid out for 16 rows
  (a layout for 1 row is 2-3x slower at 2+ rows; one for 4 rows was no faster at 4-8 rows and slower above). On the
  Intel Xeon with AMX of sessions 17-18 it ties `F.linear` ("plain") at 1-3 rows and beats oneDNN by 1.1-1.4x at
  4-16 rows, where oneDNN in turn beats `F.linear`.
So which product wins depends on the CPU. A `Linear` holds the products it is given (`candidate_products()` for a
small float32 model on one CPU rank; by default oneDNN's alone, F.linear where oneDNN cannot pack: a GPU, 16-bit
weights, a torch without oneDNN) until `tune` has timed them over the model's linears, at load, for 1-16 rows, and
keeps only those its `plan` uses: [(up to rows, product), ..., (None, product for any more)].
The products round differently, so a timed plan could change a near-tie's greedy token from one start to the next:
`REDRAFTER_TRT_LINEAR_PLAN` pins it ("plain:3,mkl_packed": F.linear up to 3 rows, MKL's packed sgemm above;
"onednn": oneDNN everywhere with the float16 lm_head screen, the runtime before session 17); only the products it
names are built.

Against float64 the products' float32 errors differ by about 2.5x. The tests bound the logits' error by
transformers' own and compare greedy outputs with transformers' token for token.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Callable

import torch
import torch.nn.functional as F

from ..errors import ConfigError

log = logging.getLogger(__name__)

PROBE_ROWS = (1, 2, 3, 4, 8, 16)  # row counts `tune` times: plain steps and verify trees up to W=5 L=2 and beyond
PRODUCTS = ("plain", "onednn", "mkl_packed")  # every product a CPU float32 Linear can be given
MKL_PACKED_ROWS = 16  # the row count MKL's packed layout is made for
TUNE_MAX_BYTES = 1 << 30  # float32 weights up to this size hold every product (3 copies) until `tune`
PIN_ENV = "REDRAFTER_TRT_LINEAR_PLAN"  # pins tune's plan instead of timing it
MARGIN = 0.95  # a product within this fraction of the fastest at a row count fits it (see plan_from)
SOLE_MARGIN = 0.8  # a product within this fraction of the fastest at every row count is kept alone (see plan_from)
MAX_KEPT = 2  # products a tuned linear keeps: memory for two copies of its weights at most

Plan = list  # [(max rows or None, product name)], ascending; the last entry (None) covers every larger count
_TIMED: dict[tuple, Plan] = {}  # tune's plans in this process, by what they were timed on (see tune)


def parse_plan(text: str) -> Plan:
    """"plain:3,mkl_packed" -> [(3, "plain"), (None, "mkl_packed")]."""
    plan, last = [], 0
    items = [item.strip() for item in text.split(",")]
    for i, item in enumerate(items):
        name, _, rows = item.partition(":")
        final = i == len(items) - 1
        if final != (rows == "") or (rows and not (rows.isdigit() and int(rows) > last)) or not name:
            raise ConfigError(f"{PIN_ENV}={text!r}: give PRODUCT:ROWS pairs with growing row counts, then the "
                              f"product for every larger count (e.g. 'plain:3,mkl_packed' or 'onednn'), or unset it")
        if name not in PRODUCTS:
            raise ConfigError(f"{PIN_ENV}={text!r}: {name} is not a product: use {', '.join(PRODUCTS)}")
        plan.append((None if final else int(rows), name))
        last = int(rows) if rows else last
    return plan


def pinned_plan() -> Plan | None:
    """REDRAFTER_TRT_LINEAR_PLAN as a plan, None when unset."""
    value = os.environ.get(PIN_ENV)
    return None if value is None else parse_plan(value)


def candidate_products() -> tuple[str, ...]:
    """The products a tuned model's linears are built with: the pinned plan's, or all of them for `tune` to time."""
    pinned = pinned_plan()
    return PRODUCTS if pinned is None else tuple(dict.fromkeys(name for _, name in pinned))


def _onednn_ready(weight: torch.Tensor, dtypes: tuple[torch.dtype, ...] = (torch.float32,)) -> bool:
    return (weight.device.type == "cpu" and weight.dtype in dtypes and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_linear_pointwise"))


def _onednn(weight: torch.Tensor, bias: torch.Tensor | None) -> Callable | None:
    try:
        packed = torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), None)
    except RuntimeError as e:  # a build whose oneDNN cannot pack this shape
        log.info("oneDNN packing unavailable (%s); using F.linear", e)
        return None
    return lambda flat: torch.ops.mkldnn._linear_pointwise(flat.contiguous(), packed, bias, "none", [], "")


def _mkl_packed(weight: torch.Tensor, bias: torch.Tensor | None, rows: int) -> Callable | None:
    """MKL's packed sgemm; the plain weight is not kept (an expanded stand-in gives the op its shape)."""
    if not (torch.backends.mkl.is_available() and hasattr(torch.ops.mkl, "_mkl_linear")):
        return None
    try:
        packed = torch.ops.mkl._mkl_reorder_linear_weight(weight.contiguous(), rows)
    except RuntimeError as e:
        log.info("MKL packing unavailable (%s)", e)
        return None
    shape = weight.new_empty(1).expand(*weight.shape)
    return lambda flat: torch.ops.mkl._mkl_linear(flat.contiguous(), packed, shape, bias, flat.shape[0])


class Linear:
    """weight [N, K], bias [N] or None; __call__: x [..., K] -> [..., N] in x's dtype, through the product `plan`
    gives its row count (counted over every leading dimension). `products`: name -> fn(flat [R, K]) -> [R, N], built
    from the names given where this machine has them (F.linear when none is)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None,
                 dtypes: tuple[torch.dtype, ...] = (torch.float32,), products: tuple[str, ...] = ("onednn",)):
        self.out_features, self.in_features = weight.shape
        self.products: dict[str, Callable] = {}
        if "onednn" in products and _onednn_ready(weight, dtypes):
            fn = _onednn(weight, bias)
            if fn is not None:
                self.products["onednn"] = fn
        if "mkl_packed" in products and weight.device.type == "cpu" and weight.dtype == torch.float32:
            fn = _mkl_packed(weight, bias, MKL_PACKED_ROWS)
            if fn is not None:
                self.products["mkl_packed"] = fn
        if "plain" in products or not self.products:
            self.products["plain"] = lambda flat: F.linear(flat, weight, bias)
        self.plan: Plan = [(None, next(iter(self.products)))]

    def product(self, rows: int) -> str:
        return next(name for limit, name in self.plan if limit is None or rows <= limit)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1])
        if flat.shape[0] == 0:
            return x.new_empty(*x.shape[:-1], self.out_features)
        out = self.products[self.product(flat.shape[0])](flat)
        return out.view(*x.shape[:-1], out.shape[-1])


def plan_from(seconds: dict[int, dict[str, float]]) -> Plan:
    """seconds: rows -> {product: time}. A product within SOLE_MARGIN of the fastest at every count is kept alone
    (the fastest over all of those): one copy of the weights, and in decoding a second copy costs more than timings
    in isolation show (on the Intel Xeon of session 19, MKL's packed product alone decoded W=4 L=2 at 21.7 tokens/s
    where the plan from its 6-11% slower isolated timings at 1-3 rows, F.linear there, made 19.4-19.8). Else at each
    timed count every product within MARGIN of the fastest fits (so a near-tie or one disturbed timing on a shared
    machine does not decide). At most MAX_KEPT products are kept (each is a copy of the weights), the fewest that
    fit every count if that many do: the one fitting the most counts first (then the fastest over all), and so on;
    each count takes the first kept product that fits it, or the fastest kept one. Counts between two timed ones
    take the larger one's product."""
    counts = sorted(seconds)
    total = {n: sum(seconds[r][n] for r in counts) for n in seconds[counts[0]]}
    sole = [n for n in total if all(SOLE_MARGIN * seconds[r][n] <= min(seconds[r].values()) for r in counts)]
    if sole:
        return [(None, min(sole, key=total.get))]
    fits = {r: {n for n, t in seconds[r].items() if MARGIN * t <= min(seconds[r].values())} for r in counts}
    kept, left = [], set(counts)
    while left and len(kept) < MAX_KEPT:
        best = max(total, key=lambda n: (sum(n in fits[r] for r in left), -total[n]))
        kept.append(best)
        left = {r for r in left if best not in fits[r]}
    plan: Plan = []
    for r in counts:
        name = next((n for n in kept if n in fits[r]), min(kept, key=seconds[r].get))
        if plan and plan[-1][1] == name:
            plan[-1] = (r, name)  # the same product as the count before: one entry up to this count
        else:
            plan.append((r, name))
    plan[-1] = (None, plan[-1][1])
    return plan


def tune(linears: list[Linear], rows: tuple[int, ...] = PROBE_ROWS) -> Plan | None:
    """Time every product the linears share over all of them (a whole model's: far beyond the CPU caches, as in
    decoding) at each row count, best of 2, the products taking turns so that a disturbance hits them all; every
    linear then follows the plan and drops the products it does not use. Returns the plan (None: nothing to time).
    Timed once per process for the same products, weight shapes, row counts and thread count: loading the same model
    again follows the first load's plan, so the two decode alike (the products round differently) and the second
    load skips the timing (4 of SmolLM2's 6 s on one thread)."""
    pinned = pinned_plan()
    tunable = [lin for lin in linears if len(lin.products) > 1 or pinned is not None]
    if not tunable:
        return None
    names = [name for name in tunable[0].products if all(name in lin.products for lin in tunable)]
    if pinned is not None:
        missing = sorted({name for _, name in pinned} - set(names))
        if missing:
            raise ConfigError(f"{PIN_ENV}: {', '.join(missing)} is not available on this machine: use "
                              f"{', '.join(names)}")
        return _apply(tunable, pinned, f"pinned by {PIN_ENV}")
    key = (tuple(names), tuple((lin.out_features, lin.in_features) for lin in tunable), rows, torch.get_num_threads())
    if key in _TIMED:
        return _apply(tunable, _TIMED[key], "timed at an earlier load in this process")
    with torch.inference_mode():
        seconds = {r: time_products(tunable, names, r, 2) for r in rows}
    _TIMED[key] = plan_from(seconds)
    return _apply(tunable, _TIMED[key], "ms per pass of %s at %s rows: %s" % (
        "/".join(names), ",".join(map(str, rows)),
        " ".join("/".join(f"{t * 1e3:.1f}" for t in times.values()) for times in seconds.values())))


def time_products(linears: list[Linear], names: list[str], rows: int, n: int) -> dict[str, float]:
    """Seconds for one pass of each named product over all `linears` at `rows` random rows, best of n, the
    products taking turns (`best_of_each`)."""
    xs = {k: timing_input(rows, k) for k in {lin.in_features for lin in linears}}
    timed = [lambda name=name: [lin.products[name](xs[lin.in_features]) for lin in linears] for name in names]
    return dict(zip(names, best_of_each(n, *timed)))


def timing_input(rows: int, k: int) -> torch.Tensor:
    """Random float32 inputs [rows, k] to time products on, from a generator of their own: drawn from torch's global
    one, loading a model advanced a caller's torch.manual_seed."""
    return torch.randn(rows, k, dtype=torch.float32, generator=torch.Generator().manual_seed(0))


def describe(plan: Plan) -> str:
    """[(3, "plain"), (None, "mkl_packed")] -> "plain up to 3 rows, mkl_packed above"; [(None, "onednn")] ->
    "onednn for every row count"."""
    if len(plan) == 1:
        return f"{plan[0][1]} for every row count"
    return ", ".join(f"{name} up to {limit} rows" if limit else f"{name} above" for limit, name in plan)


def _apply(linears: list[Linear], plan: Plan, why: str) -> Plan:
    used = {name for _, name in plan}
    for lin in linears:
        lin.plan = plan
        lin.products = {name: fn for name, fn in lin.products.items() if name in used}
    log.info("CPU linears: %s (%s)", describe(plan), why)
    return plan


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
            if "onednn" in packed.products:
                sub.forward = packed
                count += 1
    return count
