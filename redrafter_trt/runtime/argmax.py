"""`ScreenedArgmax`: the greedy token argmax_v (x @ W.T)[v] of a float32 lm_head, reading W in float16.

Why: on a CPU in float32 the lm_head is a fifth of the bytes a decoding step reads (SmolLM2: 49152 x 576), and a
greedy step needs only its argmax, not the logits. fbgemm's float16-weight / float32-activation product reads half
the bytes: SmolLM2's screened argmax costs 2.3 / 2.5 / 3.4 ms for 1 / 2 / 4 rows against the float32 logits'
5.6 / 6.2 / 4.7 ms on 2 threads of this project's CPU, but fbgemm's product runs on one thread, so from 8 rows on
oneDNN's float32 product on all threads wins (8 rows: 0.85x, 24 rows: 0.5x; `python scripts/bench_verify.py`, which
also times the whole verify step both ways). `BaseModel.greedy_tokens` therefore screens up to MAX_ROWS rows:
plain steps and small trees.

Exact, not approximate: every approximate logit comes with a proven error bound, and the argmax is decided by the
float32 logits of the few tokens the bound cannot rule out. For row i of W (w, norm |w|) and an input x:
    |w . x - approx| <= 2^-11 |w| |x|          rounding W to float16 (relative 2^-11 per weight, Cauchy-Schwarz)
                      + 2^-25 sqrt(K) |x|      weights in float16's subnormal range (absolute 2^-25 each)
                      + 3 gamma_K |w| |x|      float32 accumulation of K products, here and in the exact path,
                                               gamma_K = K u / (1 - K u), u = 2^-24
and the bound used is twice that. Candidates: tokens whose approximate logit is within twice the largest row's
bound of the row's approximate maximum (a superset of those whose upper bound reaches the largest lower bound);
their logits are recomputed in float32 from the float32 rows and the first maximum wins, as `argmax` picks it. On
SmolLM2's hidden states the observed error is under a tenth of the bound and about 10 tokens per row survive.

Used only where it applies (CPU, float32, fbgemm in this torch, |W| within float16's range, finite x and approximate
logits); elsewhere `BaseModel.greedy_tokens` takes the argmax of the full logits.
"""

from __future__ import annotations

import logging
import math
import warnings

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

FP16_MAX = 65504.0
SAFETY = 2.0
MAX_ROWS = 4  # rows (tree nodes x batch) up to which the screen beats the float32 logits on 2 threads


class ScreenedArgmax:
    """weight [V, K] float32 (kept for the exact re-score); __call__: x [..., K] -> token ids [...] (int64)."""

    def __init__(self, weight: torch.Tensor, packed):
        self.weight, self.packed = weight, packed
        K = weight.shape[1]
        gamma = K * 2.0**-24 / (1 - K * 2.0**-24)
        self.rel = SAFETY * (2.0**-11 + 3 * gamma)
        self.abs = SAFETY * 2.0**-25 * math.sqrt(K)
        self.max_row_norm = float(weight.double().norm(dim=1).max())

    @classmethod
    def create(cls, weight: torch.Tensor) -> ScreenedArgmax | None:
        """None where it does not apply: not a CPU float32 weight, no fbgemm, or weights beyond float16's range."""
        if weight.device.type != "cpu" or weight.dtype != torch.float32 or weight.dim() != 2:
            return None
        if not hasattr(torch, "fbgemm_pack_gemm_matrix_fp16"):
            return None
        if not torch.isfinite(weight).all() or float(weight.abs().max()) >= FP16_MAX:
            return None
        weight = weight.contiguous()
        try:
            with warnings.catch_warnings():  # marked deprecated, still shipped and used by torch's dynamic quant
                warnings.simplefilter("ignore")
                packed = torch.fbgemm_pack_gemm_matrix_fp16(weight)
        except (RuntimeError, AttributeError) as e:  # a torch built without fbgemm
            log.info("float16 lm_head screen unavailable (%s); greedy steps use the full logits", e)
            return None
        return cls(weight, packed)

    def approx(self, flat: torch.Tensor) -> torch.Tensor:
        """flat [R, K] -> float32 logits [R, V] from the float16 weights."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.fbgemm_linear_fp16_weight_fp32_activation(flat, self.packed, None)

    def candidates(self, flat: torch.Tensor) -> torch.Tensor | None:
        """flat [R, K] -> sorted token ids [C] that may hold some row's maximum (the union over rows), or None
        where a row's approximate logits or bound overflow float32 (finite inputs of size near float32's range):
        no bound holds there.

        With b_r = the bound for the largest-norm row of W, every token whose logit can reach the maximum has
        approx >= max(approx) - 2 b_r; one comparison over the approximate logits finds them."""
        approx = self.approx(flat)
        reach = 2 * flat.norm(dim=1) * (self.rel * self.max_row_norm + self.abs)  # [R]
        floor = approx.amax(dim=1) - reach
        if not torch.isfinite(floor).all():  # an inf or NaN logit, or an infinite bound: no token is ruled out
            return None
        return (approx >= floor[:, None]).any(dim=0).nonzero()[:, 0]

    def pays(self, full) -> bool:
        """Whether screening clearly beats `full(x).argmax(-1)` (the float32 lm_head) on this machine at 1 and at
        MAX_ROWS rows, what it is used for; timed once, best of 5 in turns (on an Intel Xeon with AMX it did not:
        fbgemm's float16 product runs on one thread). A pinned plan (REDRAFTER_TRT_LINEAR_PLAN) skips the timing:
        the screen is used."""
        from .linear import MARGIN, best_of_each, pinned_plan, timing_input

        if pinned_plan() is not None:
            return True
        times = {}
        with torch.inference_mode():
            for rows in (1, MAX_ROWS):
                x = timing_input(rows, self.weight.shape[1])
                times[rows] = best_of_each(5, lambda: self(x), lambda: full(x).argmax(-1))
        pays = all(screened < MARGIN * plain for screened, plain in times.values())
        log.info("float16 lm_head screen: %s ms against the full logits' at 1 and %d rows: %s", " ".join(
            f"{a * 1e3:.2f}/{b * 1e3:.2f}" for a, b in times.values()), MAX_ROWS, "used" if pays else "not used")
        return pays

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, x.shape[-1]).contiguous()
        if not torch.isfinite(flat).all():  # no bound holds: decide on the full float32 logits
            return F.linear(flat, self.weight).argmax(-1).view(x.shape[:-1])
        cand = self.candidates(flat)
        if cand is None:
            return F.linear(flat, self.weight).argmax(-1).view(x.shape[:-1])
        exact = F.linear(flat, self.weight[cand])  # [R, C]
        return cand[exact.argmax(-1)].view(x.shape[:-1])
