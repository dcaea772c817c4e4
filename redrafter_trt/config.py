"""Configs: read a Hugging Face config.json (either RoPE layout) and derive the TensorRT-LLM model fields as
TensorRT-LLM 1.2.x's `LLaMAConfig/QWenConfig.from_hugging_face` do; add the ReDrafter keys.

Where we differ, on purpose, the model transformers computes wins: a Llama's `mlp_bias` is read from its config
(from_hugging_face leaves it False, dropping the biases), and a config without `rope_theta` gets transformers'
10000 (QWenConfig assumes 100000).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .errors import FLAG, POSITIVE_INT, POSITIVE_NUMBER, ConfigError, dangling_link, json_loads, read_text
from .registry import REGISTRY, ArchSpec, bias_fields, extra_fields, lookup, model_type_problem
from .rope import (HF_ROPE_NEEDS, HF_ROPE_ORIGINAL, TRTLLM_ROPE_REFUSED, TRTLLM_ROPE_SCALINGS,
                   YARN_NULLABLE, position_limit, rope_kind, trtllm_builds, trtllm_rope_refusal, yarn_read_problem)

DTYPES = ("float16", "bfloat16", "float32")


def read_json(path: Path, what: str) -> dict:
    path = Path(path)
    if not path.parent.is_dir():
        state = "is a file, not a folder" if path.parent.exists() else "does not exist"
        raise ConfigError(f"{what} folder {path.parent} {state}: pass the model's folder")
    if not path.exists():
        raise ConfigError(dangling_link(path) or f"{path} is missing: {what} folder must contain config.json")
    try:
        raw = json_loads(read_text(path, "fix or re-download it"))
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path} is not valid JSON ({e.msg}, line {e.lineno}): fix or re-download it") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} holds a JSON {type(raw).__name__}, not an object: fix or re-download it")
    return raw


def _typed(value, key: str, where: str, kind):
    """value if it is of `kind` (a (description, check) pair from errors), else a ConfigError naming the field."""
    need, ok = kind
    if not ok(value):
        raise ConfigError(f"{where}: {key} is {value!r}, not {need}: fix or re-download the config")
    return value


def positive_int(raw: dict, key: str, where: str, default=None) -> int:
    """raw[key] (or default when absent or null) as a positive int, else a ConfigError naming the field."""
    value = raw.get(key)
    value = default if value is None else value
    if value is None:
        raise ConfigError(f"{where} lacks {key}: the config is incomplete, re-download it")
    return _typed(value, key, where, POSITIVE_INT)


def positive_float(raw: dict, key: str, where: str, default: float) -> float:
    """raw[key] (or default when absent or null) as a positive finite float, else a ConfigError naming the field."""
    value = raw.get(key)
    return default if value is None else float(_typed(value, key, where, POSITIVE_NUMBER))


def flag(raw: dict, key: str, where: str) -> bool:
    """raw[key] as a bool (False when absent or null), else a ConfigError naming the field: a string "false" is
    truthy, so `bool()` of it silently meant true."""
    value = raw.get(key)
    return False if value is None else _typed(value, key, where, FLAG)


# What the weights hold where each bool field transformers 5 types is true, for typed_flag's refusal of a null one.
WHEN_TRUE = {
    "tie_word_embeddings": "the weights hold no lm_head.weight (the head is the embedding)",
    "attention_bias": "the weights hold the attention's biases (self_attn.q_proj.bias and the others)",
    "mlp_bias": "the weights hold the MLP's biases (mlp.gate_proj.bias and the others)",
}


def typed_flag(hf: dict, key: str, where: str) -> bool:
    """A field the architecture's transformers 5 config class types bool, as flag() reads it (false when absent),
    but a null one is refused: transformers 5 refuses to load it and transformers 4.x reads it as false, so convert
    would make a model the base's own framework does not load."""
    if key in hf and hf[key] is None:
        raise ConfigError(f"{where}: {key} is null, which transformers 5 refuses to load (it expects true or false) "
                          f"and transformers 4.x reads as false: set it to true if {WHEN_TRUE[key]}, else to false")
    return flag(hf, key, where)


def _written(raw: dict | None) -> dict | None:
    """The scaling as the checkpoint carries it (the source's own keys, less rope_theta and a null yarn key that
    transformers reads as absent), None for none."""
    if not raw or rope_kind(raw) == "default":
        return None
    return {k: v for k, v in raw.items() if k != "rope_theta" and (v is not None or k not in YARN_NULLABLE)}


def _scaling_of(raw: dict) -> dict | None:
    """`_written`, as compared: its type spelled `rope_type` whichever key the source used."""
    written = _written(raw)
    return written and {"rope_type": rope_kind(written),
                        **{k: v for k, v in written.items() if k not in ("type", "rope_type")}}


def rope_fields(hf: dict, where: str = "config.json") -> tuple[float, dict | None]:
    """(rope_theta, rope_scaling) from either layout: published top-level keys, or transformers 5's
    `rope_parameters` (where `rope_type: default` means no scaling). A config holding both, with scalings that
    differ, is refused: transformers 5 takes `rope_scaling` and drops `rope_parameters`' rope_theta. So is one nested
    by layer type (Gemma 3's layout), which these architectures' single RoPE does not read."""
    scaling = hf.get("rope_scaling")
    if scaling is not None and not isinstance(scaling, dict):
        raise ConfigError(f"{where}: rope_scaling is {scaling!r}, not an object such as {{\"rope_type\": \"llama3\", "
                          f"...}}: fix or re-download the config")
    params = hf.get("rope_parameters")
    if params is not None and not isinstance(params, dict):
        raise ConfigError(f"{where}: rope_parameters is {params!r}, not an object such as {{\"rope_type\": \"default\", "
                          f"\"rope_theta\": 10000.0}}: fix or re-download the config")
    if isinstance(params, dict) and (nested := [k for k, v in params.items() if isinstance(v, dict)]):
        raise ConfigError(f"{where}: rope_parameters is nested by layer type ({', '.join(map(str, nested))}), which "
                          f"Llama, Mistral and Qwen2 do not compute (one RoPE for every layer: transformers 5 warns and "
                          f"takes rope_theta {positive_float(hf, 'rope_theta', where, 10000.0):g} unscaled for Llama and "
                          f"Mistral, and cannot build Qwen2): write the model's RoPE as one flat rope_parameters such "
                          f"as {{\"rope_type\": \"default\", \"rope_theta\": 10000.0}}")
    outer = positive_float(hf, "rope_theta", where, 10000.0)
    if scaling and (inner := _inner_theta(scaling, "rope_scaling", where, outer)) != outer:
        top = "the top level's" if hf.get("rope_theta") is not None else "the top level's, absent: the default"
        raise ConfigError(f"{where}: rope_scaling holds rope_theta {inner:g}: transformers 5 computes RoPE with "
                          f"{inner:g}, transformers 4 with {outer:g} ({top}): put the model's rope_theta at the top "
                          f"level and delete it from rope_scaling")
    if isinstance(params, dict) and any(k in params for k in ("rope_theta", "rope_type", "type")):
        theta = _inner_theta(params, "rope_parameters", where, outer)
        if scaling and (_scaling_of(scaling) != _scaling_of(params) or theta != outer):
            raise ConfigError(f"{where} holds rope_scaling {scaling} and rope_parameters {params}: transformers 5 "
                              f"reads rope_scaling alone (and rope_theta {outer:g}), not what rope_parameters says: "
                              f"move the scaling into rope_parameters and delete rope_scaling")
        return theta, _as_transformers_reads(_buildable(_written(params), where), hf, where)
    return outer, _as_transformers_reads(_buildable(_written(scaling), where), hf, where)


def _inner_theta(rope: dict, name: str, where: str, outer: float) -> float:
    """The rope_theta in `rope_scaling` or `rope_parameters` (`name`), which transformers 5 computes with in place of
    the top-level one (convert_rope_params_to_dict sets the top level's only where the key is absent): `outer` when
    absent; a null one, which transformers 5 then computes with (TypeError), is refused."""
    if "rope_theta" in rope and rope["rope_theta"] is None:
        raise ConfigError(f"{where}: rope_theta is null in {name}, which transformers 5 computes with in place of the "
                          f"top-level one (and fails): delete it from {name}")
    return positive_float(rope, "rope_theta", f"{where} {name}", outer)


def _buildable(scaling: dict | None, where: str) -> dict | None:
    """The scaling, or a ConfigError when TensorRT-LLM cannot build it (`inspect` would refuse the checkpoint)."""
    if not trtllm_builds(scaling):
        if rope_kind(scaling) == "yarn" and (problem := yarn_read_problem(scaling)):
            raise ConfigError(f"{where}: rope scaling {scaling}: {problem}: fix or re-download the config")
        if why := TRTLLM_ROPE_REFUSED.get(str(rope_kind(scaling))):
            raise ConfigError(f"{where}: rope scaling {scaling} is not one TensorRT-LLM builds: {why}")
        raise ConfigError(f"{where}: rope scaling {scaling} is not one TensorRT-LLM builds (rope_type one of "
                          f"{', '.join(TRTLLM_ROPE_SCALINGS)}, type the same if given; factor, if any, a positive "
                          f"number): fix or "
                          f"re-download the config")
    return scaling


def _as_transformers_reads(scaling: dict | None, hf: dict, where: str) -> dict | None:
    """The scaling as transformers 5 computes with it: refused without a number it needs (as transformers refuses
    it; TensorRT-LLM would build its own defaults), and given the original_max_position_embeddings transformers
    assumes when absent (max_position_embeddings; TensorRT-LLM's llama3 would assume 8192)."""
    if scaling is None:
        return None
    kind = rope_kind(scaling)
    need, ok = POSITIVE_NUMBER
    if bad := [k for k in HF_ROPE_NEEDS.get(kind, ()) if not ok(scaling.get(k))]:
        raise ConfigError(f"{where}: rope scaling {kind} needs {', '.join(bad)} to be {need} (has {scaling}), as "
                          f"transformers does: copy them from the model's published config.json")
    if refusal := trtllm_rope_refusal(scaling):
        raise ConfigError(f"{where}: rope scaling {scaling}: {refusal}")
    if kind in HF_ROPE_ORIGINAL:
        scaling = {**scaling, "original_max_position_embeddings": _original_positions(scaling, hf, where)}
    return scaling


def _original_positions(scaling: dict, hf: dict, where: str) -> int:
    """The original_max_position_embeddings a llama3 or yarn scaling computes with: the scaling's, else
    max_position_embeddings; transformers 5 (standardize_rope_params) puts a top-level one (Phi-3's layout) in place of
    either, transformers 4.57 reads only the scaling's (yarn: else max_position_embeddings; llama3: refuses to load
    without it). A `rope_scaling` both read is refused where they differ; `rope_parameters` only 5 reads."""
    key = "original_max_position_embeddings"
    inner = positive_int(scaling, key, f"{where} rope scaling", max_positions(hf, where))
    if hf.get(key) is None:
        return inner
    top = positive_int(hf, key, where)
    v4 = inner if scaling.get(key) is not None or rope_kind(scaling) == "yarn" else None
    if hf.get("rope_scaling") and v4 is not None and v4 != top:
        source = "rope_scaling's" if scaling.get(key) is not None else "max_position_embeddings"
        raise ConfigError(f"{where}: top-level {key} {top} beside rope_scaling {rope_kind(scaling)}: transformers 5 "
                          f"computes RoPE with {top}, transformers 4 with {v4} ({source}): put the model's {key} "
                          f"inside rope_scaling and delete the top-level one")
    return top


@dataclass(frozen=True)
class BaseModelConfig:
    """The few HF fields the converter needs, checked."""
    spec: ArchSpec
    hf: dict
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_size: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool
    source_dtype: str

    @classmethod
    def from_hf(cls, hf: dict, where: str) -> "BaseModelConfig":
        archs = hf.get("architectures") or []
        if not isinstance(archs, list) or not all(isinstance(a, str) for a in archs):
            raise ConfigError(f"{where}: `architectures` is {archs!r}, not a list of names: write it as [\"...\"]")
        what = None
        if "exit_dim" in hf:  # Apple's trainer saves its drafter with save_pretrained: architectures ["Drafter"]
            what = "is an Apple ReDrafter drafter's config"
        elif not archs:
            kind = "a TensorRT-LLM checkpoint's" if "architecture" in hf else "not a Hugging Face causal LM's"
            what = f"names no `architectures` ({kind} config)"
        if what:
            raise ConfigError(f"{where} {what}: pass the Hugging Face base model's folder (its config.json names "
                              f"architectures such as LlamaForCausalLM)")
        spec = lookup(archs[0])
        if why := model_type_problem(hf, where):
            raise ConfigError(why)
        _, scaling = rope_fields(hf, where)  # checked here, before any work
        limit = position_limit({"max_position_embeddings": max_positions(hf, where), "rotary_scaling": scaling})
        if window := sliding_window(hf, limit):
            raise ConfigError(f"{where}: sliding_window={window} is not supported by ReDrafter engines "
                              f"(TensorRT-LLM would attend over the whole context of {limit} positions): "
                              f"{_window_fix(window, max_positions(hf, where), limit)}")
        nh = positive_int(hf, "num_attention_heads", where)
        H = positive_int(hf, "hidden_size", where)
        positive_float(hf, "rms_norm_eps", where, 1e-6)
        for key in ("attention_bias", "mlp_bias"):  # read as truth values further on; null refused where typed
            (typed_flag if key in spec.typed_flags else flag)(hf, key, where)
        return cls(spec=spec, hf=hf, hidden_size=H, num_layers=positive_int(hf, "num_hidden_layers", where),
                   num_heads=nh, num_kv_heads=kv_heads(hf, spec, nh, where),
                   head_size=positive_int(hf, "head_dim", where, spec.head_dim or H // nh),
                   intermediate_size=positive_int(hf, "intermediate_size", where),
                   vocab_size=positive_int(hf, "vocab_size", where),
                   tie_word_embeddings=typed_flag(hf, "tie_word_embeddings", where),
                   source_dtype=source_dtype(hf))


def kv_heads(hf: dict, spec: ArchSpec, num_heads: int, where: str) -> int:
    """num_key_value_heads as transformers' config classes read it (4.57 and 5): a missing one is the class default
    (Mistral's 8, Qwen2's and Qwen3's 32, Llama's num_attention_heads), a null one num_attention_heads (their
    `if num_key_value_heads is None`), except where transformers 5 types it `int` and refuses to load it (Mistral)."""
    if "num_key_value_heads" in hf and hf["num_key_value_heads"] is None and not spec.kv_heads_nullable:
        raise ConfigError(f"{where}: num_key_value_heads is null, which transformers 5 refuses to load for "
                          f"{spec.hf_architecture} (it expects a number) and transformers 4.x reads as "
                          f"num_attention_heads ({num_heads}): set it to the model's number of kv heads "
                          f"({num_heads} if its attention is multi-head)")
    return positive_int(hf, "num_key_value_heads", where,
                        num_heads if "num_key_value_heads" in hf else spec.kv_heads or num_heads)


def source_dtype(hf: dict) -> str:
    """The base's dtype as TensorRT-LLM 1.2's `from_hugging_face` reads it for `--dtype auto`: transformers' `dtype`
    (which wins over a `torch_dtype` beside it), else `torch_dtype`; float16 when config.json names neither, as
    TensorRT-LLM's `infer_dtype` makes a missing one (transformers would load such a model in float32)."""
    dtype = hf.get("dtype") or hf.get("torch_dtype") or "float16"
    return str(dtype).replace("torch.", "")


def _spec(hf: dict) -> ArchSpec | None:
    archs = hf.get("architectures")
    return REGISTRY.get(archs[0]) if isinstance(archs, list) and archs and isinstance(archs[0], str) else None


def max_positions(hf: dict, where: str = "config.json") -> int:
    """max_position_embeddings, or transformers' default for the architecture when config.json has none."""
    spec = _spec(hf)
    return positive_int(hf, "max_position_embeddings", where, spec.max_positions if spec else 2048)


def _window_fix(window: int, positions: int, limit: int) -> str:
    """What serves a base whose sliding window ends before the `limit` positions it serves: a version of the model
    without one; where the window covers its own max_position_embeddings (Ministral-8B: 32768 both) and only a rope
    scaling's stretch reaches past it, the context unstretched, or the window dropped if it was never trained."""
    if window < positions:
        return "use a version of the model without a sliding window (Mistral v0.2 or newer; Qwen2 with " \
               "use_sliding_window false)"
    return (f"the window covers only {window} of the {limit} positions the rope scaling stretches it to: remove the "
            f"rope scaling if it was added to stretch the context (the model then serves its {positions} positions, "
            f"all inside the window), or, if the model was trained without one, set sliding_window to null (Qwen2: "
            f"use_sliding_window false)")


def sliding_window(hf: dict, positions: int) -> int | None:
    """The window when some layer attends over one shorter than the `positions` the model serves (else None; those
    are rope.position_limit's, max_position_embeddings times a stretching scaling's factor): Mistral v0.1's
    `sliding_window`, or Qwen2's `use_sliding_window` on the layers from `max_window_layers` (transformers 5:
    `layer_types`). A key config.json lacks takes transformers' default (a window of 4096, Qwen2's from layer 28); a
    null window is none. A class without a window (Llama) ignores these keys, as transformers' does."""
    spec = _spec(hf)
    if spec is None or spec.sliding_window is None:
        return None
    window = hf.get("sliding_window", spec.sliding_window)
    if not isinstance(window, int) or isinstance(window, bool) or not 0 < window < positions:
        return None
    if spec.hf_architecture == "MistralForCausalLM":
        return window
    if not hf.get("use_sliding_window"):
        return None
    types = hf.get("layer_types")
    if isinstance(types, list):
        return window if "sliding_attention" in types else None
    first = hf.get("max_window_layers", spec.max_window_layers)
    return window if (first or 0) < (hf.get("num_hidden_layers") or 0) else None


def trtllm_model_fields(base: BaseModelConfig, dtype: str, tp_size: int) -> dict:
    """The base checkpoint's config.json, as TensorRT-LLM's from_hugging_face derives it."""
    hf = base.hf
    theta, scaling = rope_fields(hf)
    cfg = {
        "architecture": base.spec.trtllm_architecture,
        "dtype": dtype,
        "logits_dtype": "float32",
        "num_hidden_layers": base.num_layers,
        "num_attention_heads": base.num_heads,
        "num_key_value_heads": base.num_kv_heads,
        "hidden_size": base.hidden_size,
        "intermediate_size": base.intermediate_size,
        "head_size": base.head_size,
        "vocab_size": base.vocab_size,
        "position_embedding_type": "rope_gpt_neox",
        "max_position_embeddings": max_positions(hf),
        "hidden_act": hf.get("hidden_act", "silu"),
        "norm_epsilon": positive_float(hf, "rms_norm_eps", "config.json", 1e-6),
        "rotary_base": theta,
        "rotary_scaling": scaling,
        **bias_fields(base.spec, hf),
        "tie_word_embeddings": base.tie_word_embeddings,
        "use_parallel_embedding": False,
        "embedding_sharding_dim": 0,
        "mapping": {"world_size": tp_size, "tp_size": tp_size, "pp_size": 1},
        "quantization": {"quant_algo": None, "kv_cache_quant_algo": None, "exclude_modules": None},
        **extra_fields(base.spec, hf),
    }
    return cfg


def redrafter_fields(architecture: str, base_architecture: str, drafter, num_beams: int, draft_len: int,
                     greedy: bool) -> dict:
    return {
        "architecture": architecture,
        "base_model_architecture": base_architecture,
        "redrafter_num_layers": drafter.num_draft_layers,
        "redrafter_hidden_size": drafter.hidden_size,
        "redrafter_exit_dim": drafter.exit_dim,
        "redrafter_is_rnn": drafter.rnn,
        "redrafter_num_beams": num_beams,
        "redrafter_draft_len_per_beam": draft_len,
        "redrafter_greedy_search": greedy,
    }
