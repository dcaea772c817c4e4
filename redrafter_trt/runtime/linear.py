"""`Linear`: y = x @ W.T (+ b) through oneDNN with the weight packed once, on a CPU in float32.

Why: a verify step multiplies every weight by a handful of rows (the tree's tokens). MKL's sgemm, which
`F.linear` uses, is tuned for one row or for many; for 2-16 rows it costs nearly as much per row as separate
products. oneDNN with a weight reordered once into its blocked layout reads the weight once for all rows: on
this project's 2-core AVX2 machine SmolLM2-135M's linears are 1.4x faster for one row and 1.5-2.5x for 2-24 rows
(`python scripts/bench_linear.py`). Elsewhere (a GPU, 16-bit weights, a torch without oneDNN) it is `F.linear`.

The two paths round differently: against float64, oneDNN's float32 error is about 2.5x MKL's. The tests bound the
logits' error by transformers' own and compare greedy outputs with transformers' token for token.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)


def _onednn_ready(weight: torch.Tensor, dtypes: tuple[torch.dtype, ...] = (torch.float32,)) -> bool:
    return (weight.device.type == "cpu" and weight.dtype in dtypes and torch.backends.mkldnn.is_available()
            and hasattr(torch.ops.mkldnn, "_linear_pointwise"))


class Linear:
    """weight [N, K], bias [N] or None; __call__: x [..., K] -> [..., N] in x's dtype. Once packed, only
    oneDNN's copy of the weight is kept."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None,
                 dtypes: tuple[torch.dtype, ...] = (torch.float32,)):
        self.weight, self.bias, self.packed = weight, bias, None
        self.out_features, self.in_features = weight.shape
        if _onednn_ready(weight, dtypes):
            try:
                self.packed = torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), None)
                self.weight = None
            except RuntimeError as e:  # a build whose oneDNN cannot pack this shape
                log.info("oneDNN packing unavailable (%s); using F.linear", e)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.packed is None:
            return F.linear(x, self.weight, self.bias)
        flat = x.reshape(-1, x.shape[-1])
        out = torch.ops.mkldnn._linear_pointwise(flat.contiguous(), self.packed, self.bias, "none", [], "")
        return out.view(*x.shape[:-1], out.shape[-1])


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
