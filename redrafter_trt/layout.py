"""What a rank file must contain, derived from a checkpoint's config.json alone: every tensor name, its
per-rank shape and dtype. `inspect` checks checkpoints against it; the converter checks its own plan
against it (two independent derivations of one layout).
"""

from __future__ import annotations

from fnmatch import fnmatchcase

import torch

from .rules import drafter_modules
from .shard import padded_rows, tp_sizes

FP8_LINEARS = ("attention.qkv", "attention.dense", "mlp.fc", "mlp.gate", "mlp.proj")
TORCH_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}

Spec = tuple[tuple[int, ...], torch.dtype]

# What TensorRT-LLM 1.2.x's `quantize_layers` keeps unquantised when `quantization.exclude_modules` is null
# (tensorrt_llm/quantization/quantize.py, `if exclude_modules is None`, since PR #3567). Any list replaces these, an
# empty one too (it excludes nothing): one naming only the drafter would make lm_head FP8.
TRTLLM_DEFAULT_EXCLUSIONS = ("*lm_head", "*router", "*vocab_embedding", "*position_embedding", "*block_embedding",
                             "*shared_expert_gate")


def exclusions(quant: dict) -> list[str]:
    """The module patterns a build keeps unquantised, as TensorRT-LLM reads `exclude_modules`."""
    listed = quant.get("exclude_modules")
    return list(TRTLLM_DEFAULT_EXCLUSIONS if listed is None else listed)


def is_excluded(module: str, patterns: list[str]) -> bool:
    """TensorRT-LLM matches the full module name against each pattern with fnmatchcase."""
    return any(fnmatchcase(module, p) for p in patterns)


def tree_tokens(num_beams: int, draft_len: int) -> int:
    """The most tokens one ReDrafter step verifies: num_beams x draft_len + 1, the beams sharing their first token
    (TensorRT-LLM's max_gen_token_len; the reference runtime's widest packed tree)."""
    return num_beams * draft_len + 1


def tp_size(cfg: dict) -> int:
    """The checkpoint's tensor-parallel size as TensorRT-LLM reads it: a missing (or null) mapping is Mapping(),
    a missing tp_size 1."""
    return int((cfg.get("mapping") or {}).get("tp_size", 1))


def is_redrafter(cfg: dict) -> bool:
    return "redrafter_num_layers" in cfg


QWEN_BASES = ("QWenForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM")
# the qwen_types whose QWenDecoderLayer normalises q and k per head (TensorRT-LLM: `qk_layernorm = config.qwen_type in
# ('qwen3', 'qwen3_moe')`); a MoE base is not converted here
QWEN_TYPES = ("qwen2", "qwen3")  # the Qwen layouts this project writes, checks and runs
QK_NORM_QWEN_TYPES = ("qwen3", "qwen3_moe")


def attn_bias(cfg: dict) -> bool:
    """TensorRT-LLM's QWenConfig defaults attn_bias to true, whatever the qwen_type (only from_hugging_face writes a
    Qwen3's false; `inspect` names a Qwen3 config without it); modelopt's and quantize.py's configs omit the key."""
    base_arch = cfg.get("base_model_architecture", cfg["architecture"])
    return bool(cfg.get("attn_bias", base_arch in QWEN_BASES))


def qk_norm(cfg: dict) -> bool:
    """Whether each layer holds attention.q_layernorm / k_layernorm ([head_size], whole on every rank): TensorRT-LLM's
    QWen builds them by qwen_type alone, whatever the architecture is named (modelopt may name a Qwen3 QWenForCausalLM)."""
    base_arch = cfg.get("base_model_architecture", cfg.get("architecture"))
    return base_arch in QWEN_BASES and cfg.get("qwen_type") in QK_NORM_QWEN_TYPES


def convert_tp_sizes(cfg: dict) -> list[int]:
    """The tp sizes convert splits this checkpoint's model at (shard.tp_sizes: its heads, kv heads and intermediate
    size, and the hidden size, vocabulary and drafter exit_dim, which the drafter's must divide: shard.DRAFTER_ROWS,
    shard.DRAFTER_VOCAB)."""
    nh = cfg["num_attention_heads"]
    dims = (cfg["hidden_size"], cfg["vocab_size"], *[cfg[k] for k in ("redrafter_exit_dim",) if cfg.get(k)])
    return tp_sizes(nh, cfg.get("num_key_value_heads") or nh, cfg["intermediate_size"], dims, qk_norm(cfg))


def dense_bias(cfg: dict) -> bool:
    """Whether attention.dense has a bias: TensorRT-LLM's Attention biases it with the qkv (dense_bias defaults to
    bias), as Llama's attention_bias biases o_proj; its QWen passes dense_bias=False (Qwen2's o_proj has none)."""
    return attn_bias(cfg) and cfg.get("base_model_architecture", cfg["architecture"]) not in QWEN_BASES


def optional_tensors(cfg: dict) -> dict[str, Spec]:
    """Tensors a rank file may hold beyond `expected_tensors`: with an FP8 KV cache, nvidia-modelopt 0.47 and
    TensorRT-LLM's quantize.py also write `k_/v_cache_scaling_factor` (and may write `kv_cache_rcp_scaling_factor`);
    TensorRT-LLM 1.2.x folds them into `kv_cache_scaling_factor` when it loads the checkpoint."""
    if (cfg.get("quantization") or {}).get("kv_cache_quant_algo") != "FP8":
        return {}
    kinds = ("k_cache_scaling_factor", "v_cache_scaling_factor", "kv_cache_rcp_scaling_factor")
    return {f"transformer.layers.{layer}.attention.{k}": ((1,), torch.float32)
            for layer in range(cfg["num_hidden_layers"]) for k in kinds}


# TensorRT-LLM 1.2's process_kv_scaling_factor folds each k_cache_scaling_factor with its v_ into
# kv_cache_scaling_factor and asserts the other is there: a rank file holding one holds both
_KV_PAIRS = {".k_cache_scaling_factor": ".v_cache_scaling_factor", ".v_cache_scaling_factor": ".k_cache_scaling_factor"}


def held_optional_tensors(cfg: dict, have) -> dict[str, Spec]:
    """The `optional_tensors` a rank file holding the names `have` must hold: those it holds, and the partner of a
    k_ or v_cache_scaling_factor it holds alone."""
    def partner(name: str) -> str | None:
        return next((name.removesuffix(a) + b for a, b in _KV_PAIRS.items() if name.endswith(a)), None)

    return {n: s for n, s in optional_tensors(cfg).items() if n in have or partner(n) in have}


def lm_head_scales(cfg: dict, stored: dict[str, str]) -> tuple[list[str], list[str]]:
    """lm_head's scales in a rank file (`stored`: name -> safetensors dtype), as (those of an FP8 lm_head, those
    TensorRT-LLM drops): TensorRT-LLM's quantize.py --quantize_lm_head writes them beside an FP8 lm_head.weight, which
    a ReDrafter checkpoint keeps in the model dtype (fp8_lm_head); beside one that is not FP8, TensorRT-LLM 1.2's
    preprocess_perlayer_weights (an FP8 checkpoint's) drops them, after viewing an int8 weight as FP8 bits."""
    scales = sorted(n for n in stored if n.startswith("lm_head.") and n.endswith("_scaling_factor"))
    fp8 = (cfg.get("quantization") or {}).get("quant_algo") == "FP8"
    weight = stored.get("lm_head.weight")
    if weight == "F8_E4M3" or fp8 and weight == "I8":
        return scales, []
    return [], scales if fp8 and weight else []  # without lm_head.weight: missing, and they are unexpected


def fp8_lm_head(dtype: str) -> str:
    """Why a base whose lm_head is FP8 makes no ReDrafter checkpoint, and what to do (convert refuses it, inspect
    names it)."""
    return (f"which a ReDrafter checkpoint keeps in {dtype}, as modelopt and TensorRT-LLM do by default: re-export "
            f"the base with lm_head unquantized, or convert from the Hugging Face model with --quantize fp8")


def base_tensors(cfg: dict, tp_rank: int) -> dict[str, Spec]:
    tp = tp_size(cfg)
    dtype = TORCH_DTYPES[cfg["dtype"]]
    H, L, V, I = cfg["hidden_size"], cfg["num_hidden_layers"], cfg["vocab_size"], cfg["intermediate_size"]
    nh, nkv = cfg["num_attention_heads"], cfg.get("num_key_value_heads") or cfg["num_attention_heads"]
    hd = cfg.get("head_size") or H // nh
    qkv_rows = (nh // tp + 2 * max(nkv // tp, 1)) * hd
    quant = cfg.get("quantization") or {}
    fp8 = quant.get("quant_algo") == "FP8"
    kv_fp8 = quant.get("kv_cache_quant_algo") == "FP8"
    excluded = exclusions(quant)

    if cfg.get("use_parallel_embedding"):
        emb = (padded_rows(V, tp) // tp, H) if cfg.get("embedding_sharding_dim", 0) == 0 else (V, H // tp)
    else:
        emb = (V, H)
    out: dict[str, Spec] = {"transformer.vocab_embedding.weight": (emb, dtype)}
    for layer in range(L):
        p = f"transformer.layers.{layer}."
        linears = {
            "attention.qkv": (qkv_rows, H),
            "attention.dense": (H, nh * hd // tp),
            "mlp.fc": (I // tp, H),
            "mlp.gate": (I // tp, H),
            "mlp.proj": (H, I // tp),
        }
        out[p + "input_layernorm.weight"] = ((H,), dtype)
        out[p + "post_layernorm.weight"] = ((H,), dtype)
        for mod, shape in linears.items():
            quantised = fp8 and not is_excluded(p + mod, excluded)
            out[p + mod + ".weight"] = (shape, torch.float8_e4m3fn if quantised else dtype)
            if quantised:
                out[p + mod + ".weights_scaling_factor"] = ((1,), torch.float32)
                out[p + mod + ".activation_scaling_factor"] = ((1,), torch.float32)
        if qk_norm(cfg):  # per head, so whole on every rank; never quantised
            out[p + "attention.q_layernorm.weight"] = ((hd,), dtype)
            out[p + "attention.k_layernorm.weight"] = ((hd,), dtype)
        if attn_bias(cfg):
            out[p + "attention.qkv.bias"] = ((qkv_rows,), dtype)
        if dense_bias(cfg):  # row-parallel: whole on every rank (RowLinear adds it after the all-reduce)
            out[p + "attention.dense.bias"] = ((H,), dtype)
        if cfg.get("mlp_bias"):
            out |= {p + "mlp.fc.bias": ((I // tp,), dtype), p + "mlp.gate.bias": ((I // tp,), dtype),
                    p + "mlp.proj.bias": ((H,), dtype)}
        if kv_fp8:
            out[p + "attention.kv_cache_scaling_factor"] = ((1,), torch.float32)
    out["transformer.ln_f.weight"] = ((H,), dtype)
    out["lm_head.weight"] = ((padded_rows(V, tp) // tp, H), dtype)
    return out


def drafter_tensors(cfg: dict) -> dict[str, Spec]:
    tp = tp_size(cfg)
    dtype = TORCH_DTYPES[cfg["dtype"]]
    H, E, V = cfg["redrafter_hidden_size"], cfg["redrafter_exit_dim"], cfg["vocab_size"]
    out: dict[str, Spec] = {}
    if E != 2 * H:
        out["drafter.input_proj.weight"] = ((E // tp, 2 * H), dtype)
        out["drafter.input_proj.bias"] = ((E // tp,), dtype)
    for i in range(cfg["redrafter_num_layers"]):
        out[f"drafter.layers.{i}.linear.weight"] = ((E // tp, E), dtype)
        out[f"drafter.layers.{i}.linear.bias"] = ((E // tp,), dtype)
    out["drafter.lm_head.weight"] = ((V // tp, E), dtype)
    if cfg["redrafter_is_rnn"]:
        out |= {"drafter.rnn_u.weight": ((H // tp, H), dtype), "drafter.rnn_u.bias": ((H // tp,), dtype),
                "drafter.rnn_w.weight": ((H // tp, H), dtype)}
    return out


def expected_tensors(cfg: dict, tp_rank: int) -> dict[str, Spec]:
    """Every tensor rank file `tp_rank` must hold: name -> (shape, dtype)."""
    out = base_tensors(cfg, tp_rank)
    if is_redrafter(cfg):
        out |= drafter_tensors(cfg)
    return out


def required_exclusions(cfg: dict) -> list[str]:
    """Modules a quantised config must list in `quantization.exclude_modules`: `lm_head`, which `base_tensors` keeps
    in the model dtype (a list without it, unlike TensorRT-LLM's default, makes the build quantise it), and every
    drafter module."""
    if not is_redrafter(cfg):
        return ["lm_head"]
    return ["lm_head", *drafter_modules(cfg["redrafter_num_layers"], cfg["redrafter_is_rnn"],
                                        cfg["redrafter_exit_dim"] != 2 * cfg["redrafter_hidden_size"])]
