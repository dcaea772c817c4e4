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
from .errors import ConfigError, first_line
from .hf_state import TRANSFORMERS_LOCK, quiet_load

TRANSFORMERS_MAJOR = int(version("transformers").split(".")[0])


def load_causal_lm(folder: Path | str, dtype: torch.dtype):
    """`AutoModelForCausalLM.from_pretrained(folder, dtype=dtype)` computing the RoPE the converter writes, one load at
    a time and without transformers' progress bar (`hf_state.quiet_load`); a config.json transformers would refuse or
    misread is a ConfigError first (`check_transformers_config`)."""
    check_transformers_config(folder)
    with quiet_load():
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(folder, dtype=dtype, **_rope_override(Path(folder)))


def check_transformers_config(folder: Path | str) -> None:
    """ConfigError (`transformers_config_refusal`) for a base whose config.json transformers would refuse or misread."""
    if why := transformers_config_refusal(folder):
        raise ConfigError(why)


def transformers_config_refusal(folder: Path | str, raised: BaseException | None = None) -> str | None:
    """Why transformers cannot build the model of `folder`'s config.json, with the fix, or None (no config.json, or
    one it takes): a field its config class refuses (transformers 5 type-checks them: `"initializer_range": "x"`), an
    activation it does not compute (`hidden_act` 'x': a KeyError as the model was built), or a model_type other
    than the architecture's (`registry.model_type_problem`, as convert checks it: `"model_type": "llama4_text"` over
    LlamaForCausalLM weights loads Llama4ForCausalLM, its layers initialised at random, a ValueError in its first
    forward pass). Each was a traceback in train and bench --hf-dir (a review). `raised`: what another load of the folder
    raised (AutoTokenizer reads config.json too): the config's refusal only where it raised that error."""
    where = Path(folder) / "config.json"
    if not where.is_file():
        return None
    fix = "fix that field or re-download the model's config.json"
    with TRANSFORMERS_LOCK:
        from transformers import AutoConfig
        from transformers.activations import ACT2FN

        try:
            config = AutoConfig.from_pretrained(folder)
        except Exception as e:  # noqa: BLE001 - whatever transformers raises reading the user's config.json
            if raised is not None and str(raised) != str(e):
                return None
            return f"{where}: transformers refuses it ({_config_reason(e)}): {fix}"
    if raised is not None:
        return None
    act = getattr(config, "hidden_act", None)
    if isinstance(act, str) and act not in ACT2FN:
        return f"{where}: hidden_act is {act!r}, not an activation transformers computes (silu, gelu, ...): {fix}"
    from .registry import model_type_problem

    # the model_type transformers read (AutoConfig's class's: the file's, or guessed from the folder's name)
    return model_type_problem({"architectures": getattr(config, "architectures", None),
                               "model_type": config.model_type}, str(where))


def _config_reason(e: BaseException) -> str:
    """A config refusal's reason in one line: transformers 5's field validation says which field on its first line and
    why on its second ("Validation error for field 'initializer_range': TypeError: Field ... expected float")."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()]
    text = " ".join(lines[:2]) if len(lines) > 1 and lines[0].endswith(":") else str(e)
    return first_line(text, type(e).__name__, limit=160)


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
