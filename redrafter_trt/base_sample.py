"""A few of a base model's weights, read without loading the model, to tell two models of the same shapes apart (a
fine-tune, the base's instruct model, another checkpoint): `bench --hf-dir` compares rows of them with a checkpoint's;
`train` records values of them in its drafter's producer block (`base_sample`), which `convert` compares with --base's.
The same model in another dtype passes: rounding to bfloat16 moves them by less than SAME_WEIGHTS_TOLERANCE.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch

from . import layout
from .base_plan import hf_lm_head, is_trtllm_checkpoint
from .config import read_json
from .errors import RedrafterError
from .io import TensorSource, all_finite

# (the checkpoint's tensor, the Hugging Face tensor whose rows are its first rows at tp 1; {last}: the last layer).
# lm_head moves in any full fine-tune (softmax gives every row a gradient, where most embedding rows get none);
# q_proj (the first rows of qkv) and down_proj are what LoRA fine-tunes change. An FP8 checkpoint's quantised linears
# are left out: its lm_head is kept in the model dtype.
SAMPLED_TENSORS = (("lm_head.weight", "lm_head.weight"),
                   ("transformer.layers.{last}.attention.qkv.weight", "model.layers.{last}.self_attn.q_proj.weight"),
                   ("transformer.layers.{last}.mlp.proj.weight", "model.layers.{last}.mlp.down_proj.weight"))
SAMPLED_ROWS = 8
RECORDED_COLUMNS = 4  # of each sampled row, the values a drafter records: 96 numbers, 2 KB of JSON
UNQUANTISED = ("F32", "F16", "BF16")
# bfloat16's epsilon: the base in another dtype differs from a checkpoint's tensors or a drafter's record by rounding
# (1.5e-3 for SmolLM2 saved in bfloat16; 2 ** -8 at most), another model by about 1.4 (another random model), a
# fine-tune by its steps (SmolLM2 at lr 2e-5: 0.4% after 100 steps, 0.66% after 200, passing this)
SAME_WEIGHTS_TOLERANCE = 2 ** -7
# a drafter's record against a base of the dtype it was read in: the same model reads back exactly, to the 6
# significant digits recorded (a relative 5e-6 at most), so a fine-tune moving one of them by a step of that dtype shows
SAME_DTYPE_TOLERANCE = 2 ** -16


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


# ---------------------------------------------------------------- a drafter's record of its base

def record_base_sample(base: Path) -> dict:
    """What `train` records of its Hugging Face base: for each of SAMPLED_TENSORS (its Hugging Face name), the shape,
    the rows and columns read, the values there (6 significant digits: float32 rounding is far below the
    tolerance) and its dtype (safetensors', for SAME_DTYPE_TOLERANCE). A tensor the base names otherwise is left out (train reads bases convert refuses)."""
    num_layers = int(read_json(Path(base) / "config.json", "base")["num_hidden_layers"])
    src, sample = TensorSource.from_hf_folder(Path(base)), {}
    try:
        for _, name in sampled_names(num_layers):
            held = hf_tensor(src, name)
            if held in src.names() and len(src.shape(held)) == 2:
                sample[name] = _sample(src, held)
    finally:
        src.close()
    return sample


def _sample(src, name: str) -> dict:
    n, columns = src.shape(name)
    rows, cols = spread(n, SAMPLED_ROWS), spread(columns, RECORDED_COLUMNS)
    values = read_rows(src, name, rows)[:, cols].flatten()
    return {"shape": [n, columns], "rows": rows, "columns": cols,
            "values": [float(f"{v:.6g}") for v in values.tolist()], "dtype": src.dtype(name)}


def recorded_sample(producer) -> dict | None:
    """A drafter's `base_sample` from its producer block; None where absent (Apple's drafters, init-drafter's, those
    trained before it was recorded) or hand-edited into something record_base_sample does not write."""
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


def sample_difference(sample: dict, src, names: dict[str, str | None]) -> tuple[str, float, float] | None:
    """The relative_difference between a drafter's record (recorded_sample) and `src`'s weights at the recorded
    positions furthest past its tolerance, with the Hugging Face name of the tensor holding it and that tolerance
    (SAME_DTYPE_TOLERANCE where `src` holds it in the dtype recorded, else SAME_WEIGHTS_TOLERANCE); None when nothing
    was compared.
    `names`: each sampled Hugging Face name of `src`'s model -> its tensor in `src` (None: not comparable, such as an
    FP8 checkpoint's quantised linears). A recorded tensor outside `names` (another layer count) or of another width
    differs (inf); one `src` lacks, or holds NaN or Inf at the recorded positions, is left to the checks that refuse
    such a base."""
    worst = None
    for name, entry in sample.items():
        if name not in names:
            relative, tolerance = float("inf"), SAME_WEIGHTS_TOLERANCE
        elif names[name] is None or names[name] not in src.names():
            continue
        elif (relative := _recorded_difference(src, names[name], entry)) is None:
            continue
        else:
            same_dtype = entry.get("dtype") == src.dtype(names[name])
            tolerance = SAME_DTYPE_TOLERANCE if same_dtype else SAME_WEIGHTS_TOLERANCE
        if worst is None or relative / tolerance > worst[1] / worst[2]:
            worst = (name, relative, tolerance)
    return worst


def _recorded_difference(src, name: str, entry: dict) -> float | None:
    """relative_difference at `entry`'s positions of `name`; None where the base holds NaN or Inf there (broken
    weights, which convert refuses, not another model's)."""
    shape = src.shape(name)
    if len(shape) != 2 or shape[1] != entry["shape"][1] or shape[0] <= max(entry["rows"]):
        return float("inf")
    theirs = read_rows(src, name, entry["rows"])[:, entry["columns"]].flatten()
    return relative_difference(theirs, torch.tensor(entry["values"])) if all_finite(theirs) else None


def base_sample_difference(sample: dict, base: Path, cfg: dict) -> tuple[str, float, float] | None:
    """sample_difference against convert's --base with TensorRT-LLM config `cfg` (base_fields): a Hugging Face folder,
    or rank0 of a TensorRT-LLM base checkpoint at tp 1 (its unquantised tensors; at tp > 1 rank0 holds a slice of
    each, and nothing is compared). None as well where the base's files cannot be read: convert refuses it next."""
    trtllm = is_trtllm_checkpoint(base)
    if trtllm and layout.tp_size(cfg) != 1:
        return None
    try:
        src = TensorSource.from_files([base / "rank0.safetensors"]) if trtllm else TensorSource.from_hf_folder(base)
    except RedrafterError:
        return None
    try:
        pairs = sampled_names(int(cfg["num_hidden_layers"]))
        if trtllm:
            names = {hf: ours if ours in src.names() and src.dtype(ours) in UNQUANTISED else None for ours, hf in pairs}
        else:
            names = {hf: hf_tensor(src, hf) for _, hf in pairs}
        return sample_difference(sample, src, names)
    except RedrafterError:
        return None
    finally:
        src.close()
