"""A checkpoint's `rotary_scaling`: the types TensorRT-LLM builds and those the reference runtime computes. No torch
here, so that `inspect`, `convert` and `build` read it without importing the runtime (TorchInductor: seconds)."""

from __future__ import annotations

import math

from .errors import POSITIVE_NUMBER

# the rotary_scaling types TensorRT-LLM 1.2.x's Llama and QWen attention builds as transformers computes them
# (layers/attention.py create_attention_const_params; "none" is no scaling). Its RotaryScalingType names three more,
# which a rope_gpt_neox model does not build as transformers means them, and has no "default" before 1.3:
TRTLLM_ROPE_SCALINGS = ("none", "linear", "llama3", "yarn")
TRTLLM_ROPE_REFUSED = {
    # functional.py RotaryScalingType.from_string is RotaryScalingType[s] up to 1.2.x; main mapped "default" in 2026
    "default": "TensorRT-LLM 1.2's RotaryScalingType has no `default` (trtllm-build fails: 'Unsupported rotary scaling "
               "type: default'): write null, the same RoPE",
    # functional.py create_sinusoidal_positions_for_attention_plugin (since Hunyuan's support, August 2025)
    "dynamic": "TensorRT-LLM reads `dynamic` as Hunyuan's fixed NTK alpha (trtllm-build fails with KeyError 'alpha'), "
               "not transformers' dynamic NTK, which is plain RoPE up to max_position_embeddings: to serve that "
               "context, remove the scaling from config.json",
    # only a long_rope position_embedding_type (Phi-3) reads short_factor / long_factor
    "longrope": "TensorRT-LLM's Llama and QWen build `longrope` as plain RoPE with the frequencies times factor, "
                "without short_factor / long_factor",
    "mrope": "`mrope` is Qwen2-VL's multimodal RoPE, which transformers' Llama and Qwen2 do not compute",
}
# the numbers transformers 5 refuses a scaling without (RotaryEmbeddingConfigMixin's _validate_*_rope_parameters;
# TensorRT-LLM would build it with its own defaults, e.g. llama3's low_freq_factor 1 and high_freq_factor 4)
HF_ROPE_NEEDS = {"linear": ("factor",), "yarn": ("factor",), "llama3": ("factor", "low_freq_factor", "high_freq_factor")}
# types whose missing original_max_position_embeddings transformers 5 takes from max_position_embeddings
# (standardize_rope_params; TensorRT-LLM would take TRTLLM_ORIGINAL's)
HF_ROPE_ORIGINAL = ("llama3", "yarn")
# the original_max_position_embeddings TensorRT-LLM 1.2 builds a scaling without one with (layers/attention.py
# create_attention_const_params for yarn, functional.py RopeEmbeddingUtils.apply_llama3_scaling for llama3)
TRTLLM_ORIGINAL = {"llama3": 8192, "yarn": 4096}
# yarn keys TensorRT-LLM 1.2 reads with `.get(key, default)` (layers/attention.py), so a null one reaches its
# arithmetic as None (trtllm-build: TypeError), and that transformers reads as absent (`get(key) or default`; mscale
# and attention_factor only when truthy): the checkpoint leaves a null one out
YARN_NULLABLE = ("beta_fast", "beta_slow", "mscale", "mscale_all_dim", "attention_factor")
# rotary_scaling types the runtime computes (runtime.config.rope_inv_freq) -> the numbers each needs
# (convert writes original_max_position_embeddings, the max_position_embeddings transformers assumes when absent,
# where TensorRT-LLM would assume TRTLLM_ORIGINAL's)
ROPE_SCALINGS = {"default": (), "none": (), "linear": ("factor",),
                 "llama3": ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings"),
                 "yarn": ("factor", "original_max_position_embeddings")}
# rotary_scaling types whose `factor` does not stretch max_position_embeddings (tensorrt_llm/builder.py
# _init_max_seq_len: an engine's default max_seq_len is max_position_embeddings x factor for the others, linear's)
UNSTRETCHED_ROPE = ("su", "longrope", "llama3")


def rope_kind(scaling: dict):
    """The scaling's type: `rope_type`, or the older `type`; "default" (none) without either."""
    return scaling.get("rope_type", scaling.get("type", "default"))


def trtllm_kind(scaling: dict):
    """The type TensorRT-LLM builds: layers/attention.py reads `type` first, then `rope_type` (None without either)."""
    return scaling.get("type", scaling.get("rope_type"))


def trtllm_builds(scaling) -> bool:
    """Whether TensorRT-LLM builds `rotary_scaling` as transformers computes it: null, or a type it knows (read the
    same by both, which prefer different keys) whose `factor` (when given) is a positive finite number
    (trtllm-build multiplies the positions by it)."""
    return scaling is None or (isinstance(scaling, dict) and trtllm_kind(scaling) in TRTLLM_ROPE_SCALINGS
                               and trtllm_kind(scaling) == rope_kind(scaling)
                               and ("factor" not in scaling or POSITIVE_NUMBER[1](scaling["factor"]))
                               and (trtllm_kind(scaling) != "yarn" or yarn_read_problem(scaling) is None))


def yarn_read_problem(scaling: dict) -> str | None:
    """Why trtllm-build fails on a yarn scaling's keys it reads with `.get(key, default)` (None when it does not):
    a null or non-number mscale / mscale_all_dim, or a beta_fast / beta_slow that is not a positive number (0 is
    transformers' default 32 / 1, TensorRT-LLM's division by zero)."""
    betas = [k for k in ("beta_fast", "beta_slow") if k in scaling]
    if any(not POSITIVE_NUMBER[1](scaling[k]) for k in betas):
        return f"{', '.join(betas)} must be {POSITIVE_NUMBER[0]} (TensorRT-LLM divides by them)"
    scales = [k for k in ("mscale", "mscale_all_dim") if k in scaling]
    if any(not _finite(scaling[k]) for k in scales):
        return f"{', '.join(scales)} must be numbers (TensorRT-LLM multiplies by them)"
    return None


def position_limit(config: dict) -> int | None:
    """The positions a checkpoint covers as trtllm-build counts them: max_position_embeddings times the RoPE
    scaling factor, except for the types whose factor does not stretch it (None without max_position_embeddings).
    `build` warns past it; the reference runtime refuses prompts and answers past it."""
    positions = config.get("max_position_embeddings")
    if not isinstance(positions, int) or isinstance(positions, bool):
        return None
    scaling = config.get("rotary_scaling")
    scaling = scaling if isinstance(scaling, dict) else {}
    factor = scaling.get("factor", 1.0)
    if trtllm_kind(scaling) in UNSTRETCHED_ROPE or isinstance(factor, bool) or not isinstance(factor, (int, float)):
        factor = 1
    return math.ceil(positions * factor)


def rope_scaling_problem(scaling) -> str | None:
    """Why the runtime cannot compute a checkpoint's `rotary_scaling` (None when it can): `run` refuses it and
    `inspect` reports it."""
    if scaling is None:
        return None
    if not isinstance(scaling, dict):
        return f"rotary_scaling is {scaling!r}, not null or an object"
    kind = rope_kind(scaling)
    if not isinstance(kind, str) or kind not in ROPE_SCALINGS:
        return (f"rotary_scaling type {kind!r} is not supported by the reference runtime "
                f"(supported: {', '.join(ROPE_SCALINGS)})")
    need, ok = POSITIVE_NUMBER
    bad = [k for k in ROPE_SCALINGS[kind] if not ok(scaling.get(k))]
    if bad:
        return f"rotary_scaling {kind} needs {', '.join(bad)} to be {need} (has {scaling})"
    if kind == "yarn" and (problem := yarn_read_problem(scaling)):
        return f"rotary_scaling yarn: {problem}"
    return None


def engine_original_differs(scaling, max_position_embeddings) -> bool:
    """Whether an engine would compute another RoPE than transformers for a llama3 or yarn `rotary_scaling` with no
    positive original_max_position_embeddings (an older redrafter-trt's, a TensorRT-LLM base checkpoint's): without
    one (or null), TensorRT-LLM takes TRTLLM_ORIGINAL's where transformers takes max_position_embeddings, the same
    where they are equal; any other it computes with."""
    kind = rope_kind(scaling) if isinstance(scaling, dict) else None
    if kind not in TRTLLM_ORIGINAL or POSITIVE_NUMBER[1](original := scaling.get("original_max_position_embeddings")):
        return False
    return original is not None or max_position_embeddings != TRTLLM_ORIGINAL[kind]


def runtime_fix(scaling, max_position_embeddings) -> str:
    """How to run a checkpoint whose `rotary_scaling` rope_scaling_problem names: an engine, except where it would
    compute another RoPE than the model (`engine_original_differs`), or where trtllm-build fails on it too
    (`yarn_read_problem`)."""
    if isinstance(scaling, dict) and rope_kind(scaling) == "yarn" and yarn_read_problem(scaling):
        return ("trtllm-build fails on it too: fix rotary_scaling in config.json, or reconvert from the base once its "
                "config.json is fixed")
    if engine_original_differs(scaling, max_position_embeddings):
        kind = rope_kind(scaling)
        return (f"an engine would assume {TRTLLM_ORIGINAL[kind]} original positions where transformers takes "
                f"max_position_embeddings: reconvert with this redrafter-trt, which writes "
                f"original_max_position_embeddings (a TensorRT-LLM base checkpoint: add to rotary_scaling the Hugging "
                f"Face config's original_max_position_embeddings, else its max_position_embeddings)")
    return ENGINE_FIX


ENGINE_FIX = "build a TensorRT-LLM engine to run it (`redrafter-trt build`)"


TRTLLM_ROPE_DIFFERS = "TensorRT-LLM would build another RoPE than the model's"


def trtllm_rope_problem(scaling) -> str | None:
    """Why TensorRT-LLM 1.2.x builds another RoPE than transformers computes for this scaling (None when the same, or
    where a yarn factor, beta, mscale or mscale_all_dim is missing or not a number, refused on their own:
    HF_ROPE_NEEDS, yarn_read_problem): convert refuses it from a Hugging Face folder and from a TensorRT-LLM base;
    `inspect`, `build` and `run` refuse a checkpoint holding it."""
    kind = rope_kind(scaling) if isinstance(scaling, dict) else None
    if kind == "yarn" and POSITIVE_NUMBER[1](scaling.get("factor")) and yarn_read_problem(scaling) is None:
        return yarn_problem(scaling)
    return llama3_problem(scaling) if kind == "llama3" else None


def trtllm_rope_refusal(scaling) -> str | None:
    """trtllm_rope_problem's refusal, ending in what the user can do (trtllm_rope_fix): convert's for a Hugging Face
    config and a TensorRT-LLM base, inspect/build/run's for a checkpoint."""
    if problem := trtllm_rope_problem(scaling):
        return f"{problem}: {TRTLLM_ROPE_DIFFERS}; {trtllm_rope_fix(scaling)}"
    return None


TRTLLM_CANNOT = "TensorRT-LLM 1.2 cannot build this model's RoPE, so redrafter-trt cannot serve it"


def trtllm_rope_fix(scaling: dict) -> str:
    """What makes TensorRT-LLM build the model's RoPE from a scaling trtllm_rope_problem refuses: a yarn cos/sin scale
    written in the keys both read alike (yarn_scale_fix), or a plain TRTLLM_CANNOT."""
    if rope_kind(scaling) == "yarn" and (bad := [k for k in YARN_SCALES if scaling.get(k) is not None
                                                 and not _finite(scaling[k])]):
        return f"write the model's published {', '.join(bad)} (a number) in config.json"
    fixed = yarn_scale_fix(scaling) if rope_kind(scaling) == "yarn" else None
    if fixed is None:
        return TRTLLM_CANNOT
    scale = yarn_attention_factor(scaling)
    given = " and ".join(f"{k} {scaling[k]!r}" for k in YARN_SCALES if scaling.get(k) is not None)
    pair = ", ".join(f'"{k}": {fixed[k]!r}' for k in ("mscale", "mscale_all_dim") if k in fixed)
    return (f"in config.json, replace {given} with {pair}: transformers' cos/sin scale {scale:.6g}, written as "
            f"TensorRT-LLM reads it" if pair else
            f"remove {given} from config.json's rope scaling: transformers' cos/sin scale is {scale:.6g} without "
            f"{'them' if ' and ' in given else 'it'} too, which TensorRT-LLM computes")


def yarn_scale_fix(scaling: dict) -> dict | None:
    """The yarn scaling with transformers' cos/sin scale (yarn_attention_factor) written as TensorRT-LLM 1.2 reads it:
    no attention_factor, mscale or mscale_all_dim where transformers' is mscale(factor), TensorRT-LLM's without them;
    else mscale and mscale_all_dim whose ratio is the scale (both non-zero: transformers takes the pair only then).
    None where no keys can (truncate false; a factor of 1 or less, where TensorRT-LLM's scale is always 1)."""
    factor, scale = float(scaling["factor"]), yarn_attention_factor(scaling)
    if scaling.get("truncate", True) is not True or scale <= 0:
        return None
    rest = {k: v for k, v in scaling.items() if k not in YARN_SCALES}
    if math.isclose(scale, _yarn_mscale(factor), rel_tol=1e-9):
        return rest
    if factor <= 1:
        return None
    for m_all in (1.0, 2.0):  # mscale 0 would be no pair to transformers: the second then
        m = round((scale * _yarn_mscale(factor, m_all) - 1) / (0.1 * math.log(factor)), 10)
        if m:
            return rest | {"mscale": m, "mscale_all_dim": m_all}
    return None


def llama3_problem(scaling: dict) -> str | None:
    """Why TensorRT-LLM 1.2.x's llama3 computes another RoPE than transformers' (None when the same): with
    high_freq_factor below low_freq_factor, transformers divides every frequency whose wavelength passes
    original / low_freq_factor by factor, and TensorRT-LLM (functional.py apply_llama3_scaling) keeps those under
    original / high_freq_factor. Equal factors are the same step in both (no smoothing, no division by zero)."""
    low, high = scaling.get("low_freq_factor"), scaling.get("high_freq_factor")
    if POSITIVE_NUMBER[1](low) and POSITIVE_NUMBER[1](high) and high < low:
        return (f"llama3 high_freq_factor {high:g} is below low_freq_factor {low:g}: transformers and TensorRT-LLM "
                f"then scale the frequencies between those wavelengths differently")
    return None


def _yarn_mscale(factor: float, mscale: float = 1.0) -> float:
    return 1.0 if factor <= 1 else 0.1 * mscale * math.log(factor) + 1.0


def yarn_attention_factor(scaling: dict) -> float:
    """transformers' cos/sin scale for a yarn scaling (modeling_rope_utils _compute_yarn_parameters, 4.57 and 5):
    attention_factor when not null, else mscale(factor, mscale) / mscale(factor, mscale_all_dim) when both are
    non-zero, else mscale(factor)."""
    factor, m, m_all = float(scaling["factor"]), scaling.get("mscale"), scaling.get("mscale_all_dim")
    if scaling.get("attention_factor") is not None:
        return float(scaling["attention_factor"])
    return float(_yarn_mscale(factor, m) / _yarn_mscale(factor, m_all)) if m and m_all else _yarn_mscale(factor)


YARN_SCALES = ("attention_factor", "mscale", "mscale_all_dim")  # transformers' yarn cos/sin scale


def _finite(v) -> bool:
    return not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)


def yarn_problem(scaling: dict) -> str | None:
    """Why TensorRT-LLM 1.2.x's yarn would compute another RoPE than transformers' on this scaling (None when the
    same): layers/attention.py scales cos/sin by mscale(factor, mscale or 1) / mscale(factor, mscale_all_dim or 0),
    reads no attention_factor (transformers' override) and always truncates the correction range."""
    extra = {k: scaling[k] for k in YARN_SCALES if scaling.get(k) is not None}
    if bad := [k for k, v in extra.items() if not _finite(v)]:
        return f"{', '.join(bad)} must be a finite number (has {', '.join(repr(extra[k]) for k in bad)})"
    factor, m, m_all = float(scaling["factor"]), extra.get("mscale"), extra.get("mscale_all_dim")
    trtllm = _yarn_mscale(factor, 1.0 if m is None else m) / _yarn_mscale(factor, 0.0 if m_all is None else m_all)
    ours = yarn_attention_factor(scaling)
    if not math.isclose(ours, trtllm, rel_tol=1e-6):
        return f"transformers scales its cos/sin by {ours:.6g}, TensorRT-LLM by {trtllm:.6g}"
    if scaling.get("truncate", True) is not True:
        return "truncate false is not computed by TensorRT-LLM, which always truncates the correction range"
    return None
