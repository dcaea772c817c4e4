"""RoPE scalings as TensorRT-LLM 1.2 builds them. yarn: it reads beta_fast, beta_slow, mscale and mscale_all_dim
with `.get(key, default)` (layers/attention.py), so a null reaches its arithmetic as None."""

import dataclasses

import pytest
import torch

from redrafter_trt.config import rope_fields
from redrafter_trt.errors import ConfigError

HF = {"architectures": ["Qwen2ForCausalLM"], "max_position_embeddings": 2048, "rope_theta": 1e6}
YARN = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 512}


@pytest.mark.parametrize("nulls", [{"beta_fast": None, "beta_slow": None}, {"mscale": None, "mscale_all_dim": None},
                                   {"attention_factor": None}])
def test_yarn_null_keys_transformers_reads_as_absent_are_left_out(nulls):
    """A review: a null beta_fast / mscale (transformers: absent, 32 / no mscale) was written into rotary_scaling, and
    trtllm-build failed on it with a TypeError (`.get("mscale", 1.0)` is None); now it is left out, TensorRT-LLM
    taking the same defaults transformers does."""
    for layout in ({"rope_scaling": YARN | nulls}, {"rope_parameters": YARN | nulls | {"rope_theta": 1e6}}):
        assert rope_fields(HF | layout) == (1e6, YARN)


@pytest.mark.parametrize("beta", [{"beta_fast": 0}, {"beta_slow": 0.0}, {"beta_fast": "32"}])
def test_yarn_zero_or_non_number_beta_is_refused(beta):
    """A review: beta_fast 0 is transformers' 32 (`get("beta_fast") or 32`) but TensorRT-LLM's 0, a division by zero
    in trtllm-build; a string fails its arithmetic: both were converted."""
    with pytest.raises(ConfigError, match="must be a positive finite number"):
        rope_fields(HF | {"rope_scaling": YARN | beta})


def test_yarn_null_truncate_is_still_refused():
    """transformers reads a null truncate as false (no truncation), which TensorRT-LLM does not compute."""
    with pytest.raises(ConfigError, match="truncate false"):
        rope_fields(HF | {"rope_scaling": YARN | {"truncate": None}})


def test_runtime_computes_rotary_scaling_type_none_as_plain_rope():
    """A review: {"type": "none"}, which TensorRT-LLM 1.2 builds as RotaryScalingType.none (plain RoPE) and inspect
    passes, was refused by the reference runtime as an unsupported scaling."""
    from redrafter_trt.runtime.config import RuntimeConfig, rope_inv_freq

    raw = {"hidden_size": 64, "num_attention_heads": 2, "num_hidden_layers": 1, "vocab_size": 10, "rotary_base": 1e4}
    plain = rope_inv_freq(RuntimeConfig.from_dict(raw | {"rotary_scaling": None}))
    none = rope_inv_freq(RuntimeConfig.from_dict(raw | {"rotary_scaling": {"type": "none"}}))
    assert none[1] == plain[1] == 1.0 and none[0].equal(plain[0])


@pytest.mark.parametrize("scaling", [
    {"rope_type": "linear", "factor": 4.0},
    {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
     "original_max_position_embeddings": 64},
    {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 2.0, "high_freq_factor": 3.0,
     "original_max_position_embeddings": 100},
    # equal factors: a step with no smoothed band (transformers' 0/0 is masked out; TensorRT-LLM's apply_llama3_scaling
    # never reaches its division), the same in both
    {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 2.0, "high_freq_factor": 2.0,
     "original_max_position_embeddings": 64},
    # yarn (original_max_position_embeddings: max_position_embeddings / factor, or transformers warns); the last three
    # convert, inspect and run refuse (TensorRT-LLM computes another RoPE): the runtime's arithmetic is checked alone
    {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64},
    {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64, "beta_fast": 16, "beta_slow": 0.5},
    {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64, "mscale": 1.5, "mscale_all_dim": 0.5},
    {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64, "mscale": 1.5},
    {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64, "attention_factor": 0.8},
    {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64, "truncate": False},
])
def test_runtime_inv_freq_is_transformers(scaling):
    """The reference runtime's inverse frequencies and cos/sin scale, against transformers' ROPE_INIT_FUNCTIONS (4.57
    and 5: a LlamaConfig given rope_scaling), for each scaling the runtime computes."""
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    from redrafter_trt.runtime.config import RuntimeConfig, rope_inv_freq

    hf = LlamaConfig(hidden_size=64, num_attention_heads=2, num_hidden_layers=1, vocab_size=10,
                     max_position_embeddings=256, rope_theta=5e5, rope_scaling=dict(scaling))
    inv, scale = ROPE_INIT_FUNCTIONS[scaling["rope_type"]](hf, "cpu")
    raw = {"hidden_size": 64, "num_attention_heads": 2, "num_hidden_layers": 1, "vocab_size": 10,
           "rotary_base": 5e5, "rotary_scaling": None, "max_position_embeddings": 256}
    ours, our_scale = rope_inv_freq(dataclasses.replace(RuntimeConfig.from_dict(raw), rotary_scaling=scaling))
    assert torch.allclose(ours, inv.float(), rtol=1e-6, atol=0) and our_scale == scale


@pytest.mark.parametrize("scaling, positions", [
    ({"rope_type": "linear", "factor": 4.0}, 1024),
    ({"type": "linear", "factor": 2.5}, 640),
    ({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
      "original_max_position_embeddings": 64}, 256),
    (None, 256),
])
def test_runtime_positions_are_trtllm_builds_under_linear_scaling(scaling, positions):
    """A review: the reference runtime refused prompts past max_position_embeddings under a linear scaling (Vicuna
    v1.5 16k: 4096 positions, factor 4), though trtllm-build's default max_seq_len is max_position_embeddings x factor
    (builder.py _init_max_seq_len; not for llama3) and transformers computes those positions: run, bench and serve
    refused a 5000-token prompt the engine takes."""
    from redrafter_trt.runtime import check_positions
    from redrafter_trt.runtime.config import RuntimeConfig

    raw = {"hidden_size": 64, "num_attention_heads": 2, "num_hidden_layers": 1, "vocab_size": 10,
           "rotary_base": 5e5, "rotary_scaling": scaling, "max_position_embeddings": 256}
    cfg = RuntimeConfig.from_dict(raw)
    assert cfg.max_positions == positions
    check_positions(cfg, [[1] * (positions - 8)], 8)
    with pytest.raises(ConfigError, match=f"exceed the model's {positions} positions"):
        check_positions(cfg, [[1] * (positions - 8)], 9)


LLAMA3_INVERTED = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 4.0, "high_freq_factor": 1.0,
                   "original_max_position_embeddings": 64}


def test_llama3_high_freq_factor_below_low_is_refused():
    """A review: with high_freq_factor below low_freq_factor (transformers only warns) transformers divides the
    frequencies whose wavelength lies between original / low and original / high by factor and TensorRT-LLM's
    apply_llama3_scaling keeps them (wavelen < high_freq_wavelen is tested first), so convert wrote a checkpoint whose
    engine computes another RoPE than the model and the reference runtime (transformers') ran it."""
    from redrafter_trt.runtime.config import RuntimeConfig

    hf = {"architectures": ["LlamaForCausalLM"], "max_position_embeddings": 256, "rope_theta": 5e5}
    for layout in ({"rope_scaling": LLAMA3_INVERTED}, {"rope_parameters": LLAMA3_INVERTED | {"rope_theta": 5e5}}):
        with pytest.raises(ConfigError, match="high_freq_factor 1 is below low_freq_factor 4"):
            rope_fields(hf | layout)
    raw = {"hidden_size": 64, "num_attention_heads": 2, "num_hidden_layers": 1, "vocab_size": 10,
           "rotary_base": 5e5, "rotary_scaling": LLAMA3_INVERTED, "max_position_embeddings": 256}
    with pytest.raises(ConfigError, match="high_freq_factor 1 is below low_freq_factor 4"):
        RuntimeConfig.from_dict(raw)


def test_rope_parameters_nested_by_layer_type_is_refused():
    """A review: transformers 5's per-layer form ({"full_attention": {...}, "sliding_attention": {...}}, Gemma 3's) was
    read as no rope_parameters at all, so convert wrote rope_theta 10000 unscaled in silence; Llama, Mistral and
    Qwen2 compute one RoPE (transformers 5 warns and ignores the nesting for Llama and Mistral, and fails to build
    Qwen2 from it)."""
    nested = {"full_attention": {"rope_type": "linear", "factor": 2.0, "rope_theta": 5e5},
              "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}}
    with pytest.raises(ConfigError, match=r"rope_parameters is nested by layer type \(full_attention, "
                                          r"sliding_attention\).*transformers 5 warns and takes rope_theta 1e\+06"):
        rope_fields(HF | {"rope_parameters": nested})


def test_a_yarn_scale_mscale_alone_cannot_give_is_fixed_with_mscale_all_dim_2():
    """attention_factor 1 / mscale(4): the pair's mscale would be 0 with mscale_all_dim 1 (no pair to transformers),
    so the fix takes mscale_all_dim 2; transformers computes the same cos/sin scale from it, which TensorRT-LLM
    computes too."""
    import math

    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    from redrafter_trt.rope import yarn_attention_factor, yarn_problem, yarn_scale_fix

    scaling = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64,
               "attention_factor": 1 / (0.1 * math.log(4) + 1)}
    fix = yarn_scale_fix(scaling)
    assert fix is not None and fix["mscale_all_dim"] == 2.0 and "attention_factor" not in fix
    assert yarn_attention_factor(fix) == pytest.approx(yarn_attention_factor(scaling), rel=1e-9)
    assert yarn_problem(scaling) is not None and yarn_problem(fix) is None

    def transformers_scale(s):
        hf = LlamaConfig(hidden_size=64, num_attention_heads=2, num_hidden_layers=1, vocab_size=10,
                         max_position_embeddings=256, rope_theta=5e5, rope_scaling=dict(s))
        return ROPE_INIT_FUNCTIONS["yarn"](hf, "cpu")[1]

    assert transformers_scale(fix) == pytest.approx(transformers_scale(scaling), rel=1e-6)


def test_position_limit_rounds_up_as_trtllm_build():
    """trtllm-build's max_seq_len (builder.py _init_max_seq_len) is ceil(max_position_embeddings x factor)."""
    from redrafter_trt.rope import position_limit

    assert position_limit({"max_position_embeddings": 4095, "rotary_scaling": {"type": "linear", "factor": 1.5}}) == 6143


def test_llama3_equal_freq_factors_are_not_refused():
    """Equal low and high frequency factors are the same step in transformers and TensorRT-LLM."""
    from redrafter_trt.rope import llama3_problem

    assert llama3_problem({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 2.0, "high_freq_factor": 2.0,
                           "original_max_position_embeddings": 64}) is None
    assert llama3_problem(LLAMA3_INVERTED) is not None


@pytest.mark.parametrize("extra, needle", [({"beta_fast": 0}, "beta_fast must be a positive finite number"),
                                           ({"mscale": "1.5"}, "mscale must be numbers")])
def test_runtime_refuses_a_yarn_trtllm_build_cannot_read_as_unreadable(extra, needle):
    """A yarn whose beta_fast is 0 (TensorRT-LLM divides by it; transformers reads 32) or whose mscale is no number
    (TensorRT-LLM multiplies by it: TypeError) is refused by the reference runtime for those keys, not computed, and
    not as a RoPE TensorRT-LLM "would build otherwise": trtllm-build builds none from it (rope_scaling_problem's
    yarn branch; trtllm_rope_problem leaves it to yarn_read_problem)."""
    from redrafter_trt.rope import TRTLLM_ROPE_DIFFERS, trtllm_rope_problem
    from redrafter_trt.runtime.config import RuntimeConfig

    scaling = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64} | extra
    raw = {"hidden_size": 64, "num_attention_heads": 2, "num_hidden_layers": 1, "vocab_size": 10,
           "rotary_base": 5e5, "rotary_scaling": scaling, "max_position_embeddings": 256}
    with pytest.raises(ConfigError, match=needle) as err:
        RuntimeConfig.from_dict(raw)
    assert TRTLLM_ROPE_DIFFERS not in str(err.value) and trtllm_rope_problem(scaling) is None
    assert str(err.value).endswith(": trtllm-build fails on it too: fix rotary_scaling in config.json, or reconvert "
                                   "from the base once its config.json is fixed"), err.value  # not "build an engine"


def _transformers_yarn_scale(scaling):
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    hf = LlamaConfig(hidden_size=64, num_attention_heads=2, num_hidden_layers=1, vocab_size=10,
                     max_position_embeddings=2048, rope_theta=1e6, rope_scaling=dict(scaling))
    return ROPE_INIT_FUNCTIONS["yarn"](hf, "cpu")[1]


def test_a_yarn_attention_factor_at_factor_1_gets_no_mscale_fix():
    """At factor 1 transformers' (and TensorRT-LLM's) yarn mscale is 1 whatever mscale / mscale_all_dim say
    (get_mscale: `if scale <= 1: return 1.0`), so an attention_factor 0.8 cannot be written in keys TensorRT-LLM
    reads: convert says TensorRT-LLM cannot build it (no pair offered; log(1) = 0 is no divisor)."""
    from redrafter_trt.rope import TRTLLM_CANNOT

    scaling = YARN | {"factor": 1.0, "attention_factor": 0.8}
    assert _transformers_yarn_scale(scaling) == pytest.approx(0.8)
    assert _transformers_yarn_scale(YARN | {"factor": 1.0, "mscale": 3.0, "mscale_all_dim": 0.5}) == 1.0
    with pytest.raises(ConfigError, match=TRTLLM_CANNOT):
        rope_fields(HF | {"rope_scaling": scaling})


def test_a_yarn_attention_factor_of_zero_gets_no_mscale_fix():
    """transformers' own check wants attention_factor greater than 0 (a 0 zeroes every cos/sin): convert refuses it
    without offering an mscale pair that would write the same zero scale in other keys."""
    from redrafter_trt.rope import TRTLLM_CANNOT, yarn_scale_fix

    scaling = YARN | {"attention_factor": 0.0}
    assert yarn_scale_fix(scaling) is None
    with pytest.raises(ConfigError, match=TRTLLM_CANNOT):
        rope_fields(HF | {"rope_scaling": scaling})
