"""Weight-name tables: Hugging Face (input) and Apple (drafter) names -> TensorRT-LLM names, with the
tensor-parallel rule of each row. `{L}` is the layer index, `{i}` the drafter ResBlock index.

Split kinds (see shard.py):
    replicate   every rank holds the whole tensor (a row-parallel bias too: TensorRT-LLM's RowLinear adds it whole
                after the all-reduce)
    rows        torch.chunk(t, tp, 0)[rank]       column-parallel linear (output features)
    cols        torch.chunk(t, tp, 1)[rank]       row-parallel linear (input features)
    qkv         per rank cat(q_r, k_r, v_r); kv heads repeated tp/nkv times first when nkv < tp
    vocab       rows zero-padded to a multiple of tp, then `rows`

Their inverse (shard.MERGES): a tp checkpoint's ranks of one tensor joined back into the tp=1 tensor, for `bench`
and `acceptance` in one process (runtime/merge.py):
    replicate   rank 0's
    rows        torch.cat(ranks, 0)
    cols        torch.cat(ranks, 1)
    qkv         cat(every q_r, the k_r of each kv head's first rank, its v_r): a repeated kv head taken once
    vocab       torch.cat(ranks, 0)[:vocab_size]: the padding rows dropped
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Rule:
    dest: str                 # TensorRT-LLM name
    sources: tuple[str, ...]  # Hugging Face names, in the order they are fused
    split: str
    optional: bool = False    # present only in some families or configs (the biases: layout.py says which)


def _qkv(kind: str, optional: bool = False) -> Rule:
    return Rule(f"transformer.layers.{{L}}.attention.qkv.{kind}",
                tuple(f"model.layers.{{L}}.self_attn.{p}_proj.{kind}" for p in "qkv"), "qkv", optional)


# Llama, Mistral, Qwen2, Qwen3 (decoder layers are identical but for Qwen3's per-head q/k norms). Biases: Qwen2's qkv;
# Llama's attention_bias (qkv and dense) and mlp_bias (fc, gate, proj).
LAYER_RULES = (
    Rule("transformer.layers.{L}.input_layernorm.weight", ("model.layers.{L}.input_layernorm.weight",), "replicate"),
    _qkv("weight"),
    _qkv("bias", optional=True),
    Rule("transformer.layers.{L}.attention.q_layernorm.weight", ("model.layers.{L}.self_attn.q_norm.weight",), "replicate",
         True),
    Rule("transformer.layers.{L}.attention.k_layernorm.weight", ("model.layers.{L}.self_attn.k_norm.weight",), "replicate",
         True),
    Rule("transformer.layers.{L}.attention.dense.weight", ("model.layers.{L}.self_attn.o_proj.weight",), "cols"),
    Rule("transformer.layers.{L}.attention.dense.bias", ("model.layers.{L}.self_attn.o_proj.bias",), "replicate", True),
    Rule("transformer.layers.{L}.post_layernorm.weight", ("model.layers.{L}.post_attention_layernorm.weight",), "replicate"),
    # TensorRT-LLM's crossing: its `fc` is HF's gate_proj and its `gate` is HF's up_proj.
    Rule("transformer.layers.{L}.mlp.fc.weight", ("model.layers.{L}.mlp.gate_proj.weight",), "rows"),
    Rule("transformer.layers.{L}.mlp.fc.bias", ("model.layers.{L}.mlp.gate_proj.bias",), "rows", True),
    Rule("transformer.layers.{L}.mlp.gate.weight", ("model.layers.{L}.mlp.up_proj.weight",), "rows"),
    Rule("transformer.layers.{L}.mlp.gate.bias", ("model.layers.{L}.mlp.up_proj.bias",), "rows", True),
    Rule("transformer.layers.{L}.mlp.proj.weight", ("model.layers.{L}.mlp.down_proj.weight",), "cols"),
    Rule("transformer.layers.{L}.mlp.proj.bias", ("model.layers.{L}.mlp.down_proj.bias",), "replicate", True),
)

EMBEDDING = "transformer.vocab_embedding.weight"


def embedding_split(cfg: dict) -> str:
    """How a checkpoint's embedding is split: whole on every rank, or as `use_parallel_embedding` splits it (a
    TensorRT-LLM base's, modelopt's at tp > 1): by vocabulary rows, or by hidden columns (embedding_sharding_dim 1)."""
    if not cfg.get("use_parallel_embedding"):
        return "replicate"
    return "vocab" if cfg.get("embedding_sharding_dim", 0) == 0 else "cols"


MODEL_RULES = (
    Rule(EMBEDDING, ("model.embed_tokens.weight",), "replicate"),  # or as embedding_split says
    Rule("transformer.ln_f.weight", ("model.norm.weight",), "replicate"),
    Rule("lm_head.weight", ("lm_head.weight",), "vocab"),  # tied models: from embed_tokens (see convert.py)
)

# Source tensors dropped on purpose (recomputed by TensorRT-LLM from the config).
DROPPED = ("model.layers.{L}.self_attn.rotary_emb.inv_freq",)

# Apple drafter name -> TensorRT-LLM name; every drafter tensor is split `rows` (column-parallel, gathered output).
DRAFTER_RULES = (
    ("input_proj.weight", "drafter.input_proj.weight"),
    ("input_proj.bias", "drafter.input_proj.bias"),
    ("lm_head.{i}.linear.weight", "drafter.layers.{i}.linear.weight"),
    ("lm_head.{i}.linear.bias", "drafter.layers.{i}.linear.bias"),
    ("lm_head.{N}.weight", "drafter.lm_head.weight"),
    ("rnn_u.weight", "drafter.rnn_u.weight"),
    ("rnn_u.bias", "drafter.rnn_u.bias"),
    ("rnn_w.weight", "drafter.rnn_w.weight"),
)


def drafter_to_trtllm(name: str, num_draft_layers: int) -> str:
    """Apple name (canonical) -> TensorRT-LLM name."""
    for apple, trtllm in DRAFTER_RULES:
        if "{i}" in apple:
            prefix, suffix = apple.split("{i}")
            idx = name[len(prefix): len(name) - len(suffix)]
            if name.startswith(prefix) and name.endswith(suffix) and idx.isdigit() and int(idx) < num_draft_layers:
                return trtllm.replace("{i}", idx)
        elif apple.replace("{N}", str(num_draft_layers)) == name:
            return trtllm
    raise KeyError(name)


def drafter_modules(num_draft_layers: int, rnn: bool, input_proj: bool) -> list[str]:
    """Every drafter module name a quantised build must exclude from FP8 (`quantization.exclude_modules`)."""
    mods = ["drafter", "drafter.layers", "drafter.lm_head"]
    for i in range(num_draft_layers):
        mods += [f"drafter.layers.{i}", f"drafter.layers.{i}.linear"]
    if rnn:
        mods += ["drafter.rnn_u", "drafter.rnn_w"]
    if input_proj:
        mods.append("drafter.input_proj")
    return mods


SPLITS = {rule.dest: rule.split for rule in LAYER_RULES + MODEL_RULES}  # TensorRT-LLM name ({L}) -> split kind
TRTLLM_LAYER = re.compile(r"transformer\.layers\.\d+\.")


def split_of(name: str, cfg: dict) -> str:
    """The split kind of a checkpoint tensor by its TensorRT-LLM name (`cfg`: the checkpoint's config.json): its
    rule's (the embedding's, embedding_split's), `rows` for every drafter tensor, `replicate` for the per-tensor
    scales an FP8 KV cache adds (layout.optional_tensors: one float each, whole on every rank)."""
    if name.startswith("drafter."):
        return "rows"
    if name == EMBEDDING:
        return embedding_split(cfg)
    generic = TRTLLM_LAYER.sub("transformer.layers.{L}.", name, count=1)
    if generic in SPLITS:
        return SPLITS[generic]
    if name.endswith("_scaling_factor"):
        return "replicate"
    raise KeyError(name)
