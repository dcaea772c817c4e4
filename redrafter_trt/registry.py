"""One registry: Hugging Face architecture -> how TensorRT-LLM names it and which ReDrafter model wraps it.
Each entry has a tiny-model test (tests/test_convert.py)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import ConfigError


@dataclass(frozen=True)
class ArchSpec:
    hf_architecture: str
    trtllm_architecture: str   # `base_model_architecture` in the ReDrafter config
    redrafter_architecture: str
    model_type: str = ""       # config.json's model_type for the class (its transformers config class's): checked
    attn_bias: bool = False    # q/k/v always biased, o_proj never (Qwen2; TensorRT-LLM's QWen: dense_bias False)
    bias_flags: bool = False   # the HF class reads `attention_bias` (q/k/v and o_proj) and `mlp_bias` (Llama)
    max_positions: int = 2048  # transformers' default max_position_embeddings, for a config.json without one
    kv_heads: int | None = None  # transformers' default num_key_value_heads (None: num_attention_heads), likewise
    kv_heads_nullable: bool = True  # transformers 5 loads a null num_key_value_heads (as num_attention_heads)
    sliding_window: int | None = None  # transformers' default sliding_window, for a config.json without the key (None:
    # the class has no window, whatever config.json says: Llama)
    max_window_layers: int = 0  # Qwen2: transformers' default first layer of the window, for a config.json without one
    head_dim: int | None = None  # transformers' default head_dim (None: hidden_size / num_attention_heads), likewise
    qk_norm: bool = False      # per-head RMSNorm of q and k before RoPE (Qwen3's q_norm / k_norm)
    extra_config: dict = field(default_factory=dict)  # fields TensorRT-LLM's from_hugging_face adds

    @property
    def typed_flags(self) -> tuple[str, ...]:
        """The bias fields the HF class reads, which transformers 5 types bool (a null one fails its load)."""
        return ("attention_bias", "mlp_bias") if self.bias_flags else ("attention_bias",) if self.qk_norm else ()


REGISTRY: dict[str, ArchSpec] = {}


def register(spec: ArchSpec) -> ArchSpec:
    REGISTRY[spec.hf_architecture] = spec
    return spec


register(ArchSpec("LlamaForCausalLM", "LlamaForCausalLM", "ReDrafterForLLaMALM", model_type="llama", bias_flags=True))
# TensorRT-LLM runs Mistral (without a sliding window) as Llama.
register(ArchSpec("MistralForCausalLM", "LlamaForCausalLM", "ReDrafterForLLaMALM", model_type="mistral",
                  max_positions=131072,
                  kv_heads=8, kv_heads_nullable=False, sliding_window=4096))
# TensorRT-LLM's QWenDecoderLayer reads config.seq_length (logn scaling's length) and QWenConfig sets none, so a Qwen
# config without it fails trtllm-build; QWenConfig.from_hugging_face writes the HF value, else this.
QWEN_SEQ_LENGTH = 8192
register(ArchSpec("Qwen2ForCausalLM", "Qwen2ForCausalLM", "ReDrafterForQWenLM", model_type="qwen2", attn_bias=True,
                  max_positions=32768, kv_heads=32, sliding_window=4096, max_window_layers=28,
                  extra_config={"qwen_type": "qwen2", "seq_length": QWEN_SEQ_LENGTH}))
# Qwen3 dense: TensorRT-LLM's QWenConfig (qwen_type "qwen3", since PR #5650) sets attn_bias false whatever the HF
# config says, and its QWenDecoderLayer gives Attention qk_layernorm with RmsNorm: q_layernorm / k_layernorm [head_size]
# on every rank, from HF's self_attn.q_norm / k_norm. transformers' Qwen3Config defaults head_dim to 128.
register(ArchSpec("Qwen3ForCausalLM", "Qwen3ForCausalLM", "ReDrafterForQWenLM", model_type="qwen3",
                  max_positions=32768, kv_heads=32, sliding_window=4096, max_window_layers=28, head_dim=128, qk_norm=True,
                  extra_config={"qwen_type": "qwen3", "seq_length": QWEN_SEQ_LENGTH}))

# extra_config field -> the HF config key that overrides its default (QWenConfig.from_hugging_face). Not qwen_type:
# QWenConfig copies model_type, which `model_type_problem` holds to the architecture's, so the architecture's it is.
EXTRA_FROM_HF = {"seq_length": "seq_length"}


def extra_fields(spec: ArchSpec, hf: dict) -> dict:
    """The architecture's extra TensorRT-LLM config fields, each taken from the HF config when it says."""
    return {k: hf.get(EXTRA_FROM_HF[k], v) if k in EXTRA_FROM_HF else v for k, v in spec.extra_config.items()}


def model_type_problem(hf: dict, where: str) -> str | None:
    """Why a HF config.json's `model_type` disagrees with the registered class its `architectures` name (None when it
    agrees, is absent, or the class is none of the registry's): transformers builds the model_type's class, convert the
    architecture's, and TensorRT-LLM's Qwen reads qwen_type (q_norm / k_norm) from model_type. A review: a
    Qwen3ForCausalLM saying qwen2 converted without its q/k norms, logits 0.32 off transformers'; a Qwen2ForCausalLM
    saying qwen3 was a KeyError traceback."""
    archs = hf.get("architectures")
    spec = REGISTRY.get(archs[0]) if isinstance(archs, list) and archs and isinstance(archs[0], str) else None
    if spec is None or "model_type" not in hf or hf["model_type"] == spec.model_type:
        return None
    return (f"{where}: model_type {hf['model_type']!r} disagrees with architectures {spec.hf_architecture} (whose "
            f"model_type is {spec.model_type!r}; transformers builds the model_type's class, convert the "
            f"architecture's): correct one of them to the model the weights are, or re-download the config.json")


def bias_fields(spec: ArchSpec, hf: dict) -> dict:
    """TensorRT-LLM's `attn_bias` and `mlp_bias` for a HF config, as its Llama and QWen layers read them: attn_bias
    biases attention.qkv, and for Llama attention.dense too (Attention's dense_bias defaults to its bias); mlp_bias
    biases mlp.fc, mlp.gate and mlp.proj. A flag the HF class does not read (Mistral's, Qwen2's) biases nothing, as in
    transformers."""
    return {"attn_bias": bool(spec.attn_bias or (spec.bias_flags and hf.get("attention_bias"))),
            "mlp_bias": bool(spec.bias_flags and hf.get("mlp_bias"))}


# TensorRT-LLM base checkpoints (the two-step flow) name these architectures. Its llama converter and modelopt name a
# Mistral base MistralForCausalLM, which TensorRT-LLM's MODEL_MAP builds as LLaMAForCausalLM, as ReDrafterForLLaMALM is.
TRTLLM_BASES = {"LlamaForCausalLM": "ReDrafterForLLaMALM", "MistralForCausalLM": "ReDrafterForLLaMALM",
                "QWenForCausalLM": "ReDrafterForQWenLM", "Qwen2ForCausalLM": "ReDrafterForQWenLM",
                "Qwen3ForCausalLM": "ReDrafterForQWenLM"}

# the `hidden_act`s TensorRT-LLM 1.2.x's Llama and QWen models build (their GatedMLP): functional.ACT2FN less the
# gated ones (swiglu, fast-swiglu, geglu, gegelu halve fc's output) and softplus (it needs arguments GatedMLP omits)
TRTLLM_ACTIVATIONS = ("silu", "gelu", "gelu_new", "gelu_fast", "gelu_pytorch_tanh", "openai-gelu", "quick_gelu", "relu",
                      "relu2", "squared-relu", "tanh", "sigmoid", "identity")

# the hidden_act the reference runtime computes (runtime/layer.py: silu(fc) * gate)
RUNTIME_ACTIVATIONS = ("silu",)


def activation_problem(act) -> str | None:
    """Why the reference runtime cannot compute a checkpoint's `hidden_act` (None when it can): `run` refuses it and
    `inspect` reports it."""
    if act in RUNTIME_ACTIVATIONS:
        return None
    return f"hidden_act {act!r} is not computed by the reference runtime (only {', '.join(RUNTIME_ACTIVATIONS)})"


def lookup(architecture: str) -> ArchSpec:
    try:
        return REGISTRY[architecture]
    except KeyError:
        raise ConfigError(f"unsupported architecture {architecture!r}: supported are {', '.join(sorted(REGISTRY))}") from None


def redrafter_for_trtllm_base(architecture: str) -> str:
    try:
        return TRTLLM_BASES[architecture]
    except KeyError:
        raise ConfigError(f"unsupported TensorRT-LLM base architecture {architecture!r}: "
                          f"supported are {', '.join(sorted(TRTLLM_BASES))}") from None
