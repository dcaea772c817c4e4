"""A few of a base model's weights, read without loading the model, to tell two models of the same shapes apart (a
fine-tune, the base's instruct model, another checkpoint): `bench --hf-dir` compares rows of them with a checkpoint's;
`train` and `init-drafter` record values of them in the drafter's producer block (`base_sample`), which `convert`
compares with --base's. The same model in another dtype passes: rounding to bfloat16 moves them by less than
SAME_WEIGHTS_TOLERANCE.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from .base_plan import is_trtllm_checkpoint
from .base_rows import LAYER, HfRows, TrtllmRows, read_rows
from .config import read_json
from .errors import RedrafterError
from .io import TensorSource, all_finite

# Every linear of the first, middle and last layers, and the embedding and lm_head: a fine-tune moves lm_head
# (softmax gives every row a gradient, where most embedding rows get none), a LoRA whichever linears it adapts
# (q_proj and v_proj by default, every one of them in many recipes), and a fine-tune of a few layers those alone.
LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj",
           "mlp.up_proj", "mlp.down_proj")
SAMPLED_ROWS = 8  # bench: full rows of each sampled tensor
RECORDED_ROWS, RECORDED_COLUMNS = 4, 4  # a drafter's record: 16 values of each, at most 368 (23 tensors), 17 KB of
# its config.json (indented within the producer block; a 152k vocabulary's row numbers, values such as -1.23457e-05)
# bfloat16's epsilon: the base in another dtype differs from a checkpoint's tensors or a drafter's record by rounding
# (1.5e-3 for SmolLM2 saved in bfloat16; 2 ** -8 at most), another model by about 1.4 (another random model), a
# fine-tune by its steps (SmolLM2 at lr 2e-5: 0.4% after 100 steps, 0.66% after 200, passing this)
SAME_WEIGHTS_TOLERANCE = 2 ** -7
# a drafter's record against a base of the dtype it was read in: the same model reads back exactly, to the 6
# significant digits recorded (a relative 5e-6 at most), so a fine-tune moving one of them by a step of that dtype shows
SAME_DTYPE_TOLERANCE = 2 ** -16


def sampled_names(num_layers: int) -> list[str]:
    """The Hugging Face tensors sampled of a model of `num_layers` layers: lm_head (a tied model's embedding where it
    stores none), the embedding, then the LINEARS of the first, middle and last layers."""
    layers = sorted({0, num_layers // 2, num_layers - 1})
    return ["lm_head.weight", "model.embed_tokens.weight"] + \
        [f"model.layers.{layer}.{linear}.weight" for layer in layers for linear in LINEARS]


def spread(n: int, count: int) -> list[int]:
    """`count` positions spread evenly from the first (0) to the last (n - 1) of n, repeated where n < count."""
    return [i * (n - 1) // (count - 1) for i in range(count)]


def relative_difference(theirs: torch.Tensor, ours: torch.Tensor) -> float:
    """|theirs - ours| / |ours|; 0 where both are zero, inf where ours alone are."""
    difference, scale = float((theirs - ours).norm()), float(ours.norm())
    return difference / scale if scale else float("inf") if difference else 0.0


# ---------------------------------------------------------------- a drafter's record of its base

def record_base_sample(base: Path) -> dict:
    """What `train` and `init-drafter` record of their Hugging Face base: for each of sampled_names it stores (its
    Hugging Face name), the shape, the rows and columns read, the values there (6 significant digits: float32
    rounding is far below the tolerance) and its dtype (safetensors', for SAME_DTYPE_TOLERANCE). A tensor the base
    names otherwise is left out (train reads bases convert refuses), and so is a tied model's lm_head (its
    embedding, recorded)."""
    num_layers = int(read_json(Path(base) / "config.json", "base")["num_hidden_layers"])
    src, sample = TensorSource.from_hf_folder(Path(base)), {}
    try:
        for name in sampled_names(num_layers):
            if name in src.names() and len(src.shape(name)) == 2:
                sample[name] = _sample(src, name)
    finally:
        src.close()
    return sample


def _sample(src, name: str) -> dict:
    n, columns = src.shape(name)
    rows, cols = spread(n, RECORDED_ROWS), spread(columns, RECORDED_COLUMNS)
    values = read_rows(src, name, rows)[:, cols].flatten()
    return {"shape": [n, columns], "rows": rows, "columns": cols,
            "values": [float(f"{v:.6g}") for v in values.tolist()], "dtype": src.dtype(name)}


def recorded_sample(producer) -> dict | None:
    """A drafter's `base_sample` from its producer block; None where absent (Apple's drafters, those made before it
    was recorded) or hand-edited into something record_base_sample does not write."""
    sample = producer.get("base_sample") if isinstance(producer, dict) else None
    if not isinstance(sample, dict) or not sample:
        return None
    for entry in sample.values():
        if not isinstance(entry, dict):
            return None
        shape, rows, cols, values = (entry.get(k) for k in ("shape", "rows", "columns", "values"))
        if not (_counts(shape) and len(shape) == 2 and _counts(rows) and _counts(cols)
                and max(rows) < shape[0] and max(cols) < shape[1] and isinstance(values, list)
                and len(values) == len(rows) * len(cols)
                and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values)):
            return None
    return sample


def _counts(value) -> bool:
    """A non-empty list of integers of 0 or more."""
    return (isinstance(value, list) and bool(value)
            and all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value))


def sample_difference(sample: dict, weights, num_layers: int) -> tuple[str, float, float] | None:
    """The relative_difference between a drafter's record (recorded_sample: the tensors it names, sampled_names' or
    the earlier lm_head, last q_proj and down_proj) and `weights` (base_rows' HfRows or TrtllmRows of a base of
    `num_layers` layers) at the recorded positions furthest past its tolerance, with the Hugging Face name of the
    tensor holding it and that tolerance (SAME_DTYPE_TOLERANCE where the base holds it in the dtype recorded, else
    SAME_WEIGHTS_TOLERANCE); None when nothing was compared.
    A record whose last layer is not the base's (another depth) differs (inf) there, and so does a tensor of another
    width; one the base does not hold comparably (an FP8 checkpoint's quantised linears), or holds NaN or Inf at the
    recorded positions, is left to the checks that refuse such a base."""
    layers = {name: int(m[1]) for name in sample if (m := LAYER.match(name))}
    deepest = max(layers, key=layers.get, default=None)  # the record's first tensor of its last layer
    if deepest is not None and layers[deepest] != num_layers - 1:
        return deepest, float("inf"), SAME_WEIGHTS_TOLERANCE
    worst = None
    for name, entry in sample.items():
        if (dtype := weights.dtype(name)) is None or (relative := _recorded_difference(weights, name, entry)) is None:
            continue
        tolerance = SAME_DTYPE_TOLERANCE if entry.get("dtype") == dtype else SAME_WEIGHTS_TOLERANCE
        if worst is None or relative / tolerance > worst[1] / worst[2]:
            worst = (name, relative, tolerance)
    return worst


def _recorded_difference(weights, name: str, entry: dict) -> float | None:
    """relative_difference at `entry`'s positions of `name`; None where the base holds NaN or Inf there (broken
    weights, which convert refuses, not another model's)."""
    shape = weights.shape(name)
    if len(shape) != 2 or shape[1] != entry["shape"][1] or shape[0] <= max(entry["rows"]):
        return float("inf")
    theirs = weights.rows(name, entry["rows"])[:, entry["columns"]].flatten()
    return relative_difference(theirs, torch.tensor(entry["values"])) if all_finite(theirs) else None


def base_sample_difference(sample: dict, base: Path, cfg: dict) -> tuple[str, float, float] | None:
    """sample_difference against convert's --base with TensorRT-LLM config `cfg` (base_fields): a Hugging Face folder,
    or a TensorRT-LLM base checkpoint at any tp (its unquantised tensors, each row read from the rank holding it).
    None as well where the base's files cannot be read: convert refuses it next."""
    try:
        weights = TrtllmRows(base, cfg) if is_trtllm_checkpoint(base) else HfRows(TensorSource.from_hf_folder(base))
    except RedrafterError:
        return None
    try:
        return sample_difference(sample, weights, int(cfg["num_hidden_layers"]))
    except RedrafterError:
        return None
    finally:
        weights.close()
