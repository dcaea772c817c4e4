"""Every Hugging Face base model this package computes with (distillation, bench's baseline, FP8 calibration) is
loaded here, so that transformers 5 and the transformers 4.x that TensorRT-LLM's environment pins (4.57.3 in 1.2.x)
build the same model: the one `convert` writes.

transformers 5 writes RoPE as `rope_parameters`; 4.x reads only the top-level `rope_theta` / `rope_scaling` and keeps
an unknown `rope_parameters` as an attribute it never computes with, so under 4.x a config saved by transformers 5
would run with rope_theta 10000 (SmolLM2's is 100000). Under 4.x the RoPE `config.rope_fields` reads (either layout,
as convert reads it) is set on the config before the model is built.
"""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import torch

from .config import read_json, rope_fields
from .hf_state import TRANSFORMERS_LOCK, quiet_load

TRANSFORMERS_MAJOR = int(version("transformers").split(".")[0])


def load_causal_lm(folder: Path | str, dtype: torch.dtype):
    """`AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)` computing the RoPE the converter writes, one load at
    a time and without transformers' progress bar (`hf_state.quiet_load`)."""
    with quiet_load():
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, **_rope_override(Path(folder)))


def _rope_override(folder: Path) -> dict:
    """{} where transformers reads the folder's RoPE as convert does; else {"config": the config with it set}."""
    where = folder / "config.json"
    if TRANSFORMERS_MAJOR >= 5 or not where.is_file():
        return {}
    raw = read_json(where, "base")
    if "rope_parameters" not in raw:
        return {}
    with TRANSFORMERS_LOCK:
        from transformers import AutoConfig

    theta, scaling = rope_fields(raw, str(where))
    return {"config": AutoConfig.from_pretrained(folder, rope_theta=theta, rope_scaling=scaling)}
