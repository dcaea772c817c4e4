"""A few of a base model's weights, read without loading the model, to tell two models of the same shapes apart (a
fine-tune, the base's instruct model, another checkpoint): `bench --hf-dir` compares rows of them with a checkpoint's.
The same model in another dtype passes: rounding to bfloat16 moves them by less than SAME_WEIGHTS_TOLERANCE.
"""

from __future__ import annotations

import torch

from .base_plan import hf_lm_head

# (the checkpoint's tensor, the Hugging Face tensor whose rows are its first rows at tp 1; {last}: the last layer).
# lm_head moves in any full fine-tune (softmax gives every row a gradient, where most embedding rows get none);
# q_proj (the first rows of qkv) and down_proj are what LoRA fine-tunes change. An FP8 checkpoint's quantised linears
# are left out: its lm_head is kept in the model dtype.
SAMPLED_TENSORS = (("lm_head.weight", "lm_head.weight"),
                   ("transformer.layers.{last}.attention.qkv.weight", "model.layers.{last}.self_attn.q_proj.weight"),
                   ("transformer.layers.{last}.mlp.proj.weight", "model.layers.{last}.mlp.down_proj.weight"))
SAMPLED_ROWS = 8
UNQUANTISED = ("F32", "F16", "BF16")
# bfloat16's epsilon: the base in another dtype differs from the checkpoint's tensors by rounding (a relative
# difference near 1e-3 at most), another model by percents (a fine-tune) or about 1.4 (another random model)
SAME_WEIGHTS_TOLERANCE = 2 ** -7


def sampled_names(num_layers: int) -> list[tuple[str, str]]:
    """SAMPLED_TENSORS of a model of `num_layers` layers: (the checkpoint's name, the Hugging Face name)."""
    return [(ours.format(last=num_layers - 1), theirs.format(last=num_layers - 1)) for ours, theirs in SAMPLED_TENSORS]


def hf_tensor(src, name: str) -> str:
    """The tensor of `src` (a Hugging Face folder's) holding `name`: a tied model's embedding for lm_head."""
    return hf_lm_head(src) if name == "lm_head.weight" else name


def spread(n: int, count: int) -> list[int]:
    """`count` positions spread evenly from the first (0) to the last (n - 1) of n, repeated where n < count."""
    return [i * (n - 1) // (count - 1) for i in range(count)]


def read_rows(src, name: str, rows: list[int]) -> torch.Tensor:
    """Rows `rows` of `name` ([rows, cols]) in float32, read one at a time (a few KiB of a GB head)."""
    return torch.cat([src.get(name, 0, r, r + 1) for r in rows]).float()


def relative_difference(theirs: torch.Tensor, ours: torch.Tensor) -> float:
    """|theirs - ours| / |ours|; 0 where both are zero, inf where ours alone are."""
    difference, scale = float((theirs - ours).norm()), float(ours.norm())
    return difference / scale if scale else float("inf") if difference else 0.0
