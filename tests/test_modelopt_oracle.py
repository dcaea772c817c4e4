"""nvidia-modelopt as an independent oracle for the base part of our checkpoints.

modelopt's `export_tensorrt_llm_checkpoint` runs on CPU without TensorRT-LLM and writes the same TensorRT-LLM base
format from an in-memory Hugging Face model. For each case the base tensors of `convert`'s output (everything but
`drafter.*`) must equal modelopt's tensor for tensor: names, shapes, dtypes and values (bit-exact), and the model
fields of config.json must agree where modelopt is right.

Deliberate differences, each handled explicitly below:
- Embedding: modelopt writes `use_parallel_embedding: true` (vocab_embedding rows zero-padded to a multiple of tp
  and cut on dim 0); TensorRT-LLM's own `convert_checkpoint.py` defaults to a replicated embedding. Both are valid
  TensorRT-LLM layouts. When ours is replicated we compare it with modelopt's shards joined and unpadded.
- `rotary_base` / `rotary_scaling`: modelopt 0.47 under transformers 5 leaves both out (the format page says null);
  ours must equal the HF config's instead.
- `logits_dtype`: modelopt writes float16 whatever the dtype; TensorRT-LLM's converter writes float32.
- float32: modelopt 0.47 exports float16 when asked for float32; ours stays float32 and is compared cast to float16.
- Mistral: modelopt names the HF class (MistralForCausalLM); ours names the TensorRT-LLM Llama it builds as.
- Qwen2 and Qwen3 are exported with modelopt's decoder type "llama", as redrafter_trt/quantize.py does: modelopt
  before 0.44 writes a "qwen" config only through an installed TensorRT-LLM. Its tensors are those of "qwen"
  (test_modelopt_qwen_decoder_is_its_llama_decoder).
- Keys only modelopt writes (`rank`, `decoder`, `rmsnorm`, `producer`, ...) or only we write (`redrafter_*`,
  `attn_bias`, `mlp_bias`, `qwen_type`, ...) are not compared; those three are checked against the HF config.
- modelopt is wrong for nkv=3 at tp=2: it cuts a kv head in two. That case checks modelopt's bad split (so the
  test notices if modelopt changes) and that our converter refuses it with a ConfigError.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tinymodels import make_drafter, make_hf

pytest.importorskip("modelopt.torch.export", reason="the oracle needs nvidia-modelopt (pip install -e '.[test]')")

DECODER = {"LlamaForCausalLM": "llama", "MistralForCausalLM": "llama", "Qwen2ForCausalLM": "llama",
           "Qwen3ForCausalLM": "llama"}
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}
BASE_ARCH = {"MistralForCausalLM": "LlamaForCausalLM"}  # modelopt's name -> ours (module docstring)
# Model fields TensorRT-LLM reads, on which modelopt 0.47 is right.
MODEL_FIELDS = ("dtype", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "hidden_size",
                "head_size", "intermediate_size", "vocab_size", "max_position_embeddings", "hidden_act",
                "norm_epsilon", "position_embedding_type")
LLAMA3_SCALING = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                  "original_max_position_embeddings": 128}


def modelopt_exports_qwen() -> bool:
    """Whether modelopt exports decoder type "qwen" here: its own config writer has it since 0.44, older ones hand
    it to an installed TensorRT-LLM's QWenConfig and raise NotImplementedError without one."""
    import importlib.util

    import modelopt
    from packaging.version import Version

    return Version(modelopt.__version__).release >= (0, 44) or importlib.util.find_spec("tensorrt_llm") is not None


def modelopt_export(hf_dir: Path, out_dir: Path, *, tp_size: int, dtype: str, decoder: str | None = None) -> Path:
    """modelopt's TensorRT-LLM base checkpoint of the HF model in `hf_dir`, unquantised, at `tp_size`, exported as
    `decoder` (DECODER's by default)."""
    from modelopt.torch.export import export_tensorrt_llm_checkpoint
    from transformers import AutoModelForCausalLM

    hf = json.loads((Path(hf_dir) / "config.json").read_text())
    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=DTYPES[dtype]).eval()
    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")  # "No module named 'tensorrt_llm'": modelopt falls back to its own config
        export_tensorrt_llm_checkpoint(model, decoder or DECODER[hf["architectures"][0]], dtype=DTYPES[dtype],
                                       export_dir=out_dir, inference_tensor_parallel=tp_size)
    return Path(out_dir)


def modelopt_rope(hf_dir: Path) -> dict:
    """The rotary fields modelopt writes: it copies `rope_theta` and `rope_scaling` from the installed transformers'
    reading of config.json (its hf_config_map), and leaves out a missing or empty one. transformers 5 keeps both in
    `rope_parameters` (modelopt writes neither); 4.57 reads no `rope_parameters` (modelopt writes its default 10000)."""
    from transformers import AutoConfig

    seen = AutoConfig.from_pretrained(hf_dir).to_dict()
    return {key: seen[hf_key] for key, hf_key in (("rotary_base", "rope_theta"), ("rotary_scaling", "rope_scaling"))
            if seen.get(hf_key)}


def hf_rope(hf: dict) -> tuple[float, dict | None]:
    """(rope_theta, rope_scaling) as TensorRT-LLM's from_hugging_face reads them, from either HF layout.
    Written independently of redrafter_trt.config on purpose."""
    if "rope_parameters" in hf:
        params = dict(hf["rope_parameters"])
        theta = params.pop("rope_theta")
        return theta, (None if params.get("rope_type", "default") == "default" else params)
    return hf.get("rope_theta", 10000.0), hf.get("rope_scaling")


def base_tensors(folder: Path, tp_rank: int) -> dict[str, torch.Tensor]:
    weights = load_file(Path(folder) / f"rank{tp_rank}.safetensors")
    return {k: v for k, v in weights.items() if not k.startswith("drafter.")}


def assert_same_base(ours: Path, oracle: Path, tp_size: int) -> None:
    our_cfg = json.loads((ours / "config.json").read_text())
    vocab = our_cfg["vocab_size"]
    oracle_ranks = [base_tensors(oracle, r) for r in range(tp_size)]
    if not our_cfg.get("use_parallel_embedding"):
        # Deliberate difference (module docstring): join modelopt's padded dim-0 shards into the replicated table.
        full = torch.cat([w["transformer.vocab_embedding.weight"] for w in oracle_ranks])
        assert not full[vocab:].any(), "modelopt's vocab padding rows are not zero"
        for w in oracle_ranks:
            w["transformer.vocab_embedding.weight"] = full[:vocab]
    for r in range(tp_size):
        mine, theirs = base_tensors(ours, r), oracle_ranks[r]
        assert sorted(mine) == sorted(theirs), (f"rank {r}: only ours {sorted(set(mine) - set(theirs))}, "
                                                f"only modelopt {sorted(set(theirs) - set(mine))}")
        for name in sorted(mine):
            a, b = mine[name], theirs[name]
            if a.dtype == torch.float32 and b.dtype == torch.float16:  # modelopt's float32 (module docstring)
                a = a.half()
            assert (a.dtype, tuple(a.shape)) == (b.dtype, tuple(b.shape)), \
                f"rank {r} {name}: ours {a.dtype} {tuple(a.shape)}, modelopt {b.dtype} {tuple(b.shape)}"
            assert torch.equal(a, b), f"rank {r} {name}: values differ (max abs {(a.float() - b.float()).abs().max()})"


def assert_same_config(ours: Path, oracle: Path, hf_dir: Path) -> None:
    mine = json.loads((ours / "config.json").read_text())
    theirs = json.loads((oracle / "config.json").read_text())
    hf = json.loads((hf_dir / "config.json").read_text())
    for key in MODEL_FIELDS:
        if (key, mine[key], theirs[key]) != ("dtype", "float32", "float16"):  # modelopt's float32 (module docstring)
            assert mine[key] == theirs[key], f"{key}: ours {mine[key]!r}, modelopt {theirs[key]!r}"
    assert mine["base_model_architecture"] == BASE_ARCH.get(theirs["architecture"], theirs["architecture"])
    for key in ("world_size", "tp_size", "pp_size"):
        assert mine["mapping"][key] == theirs["mapping"][key], f"mapping.{key}"
    assert mine.get("share_embedding_table", False) == theirs["share_embedding_table"]
    assert (mine["quantization"] or {}).get("quant_algo") is None
    # modelopt writes what the installed transformers reads, or nothing (the bug the format page warns about); ours
    # must follow the HF config.
    theta, scaling = hf_rope(hf)
    assert mine["rotary_base"] == theta
    assert mine["rotary_scaling"] == scaling
    assert {k: theirs[k] for k in ("rotary_base", "rotary_scaling") if theirs.get(k) is not None} == \
        modelopt_rope(hf_dir), "modelopt's rotary fields changed: compare them"
    qwen = hf["architectures"][0] == "Qwen2ForCausalLM"
    qwen3 = hf["architectures"][0] == "Qwen3ForCausalLM"  # no attention bias in TensorRT-LLM's Qwen3, whatever HF says
    llama = hf["architectures"][0] == "LlamaForCausalLM"
    # modelopt omits attn_bias, mlp_bias and qwen_type (it writes a `bias` TensorRT-LLM does not read);
    # TensorRT-LLM's QWenConfig defaults attn_bias to true but qwen_type to the first Qwen, so our explicit values
    # are required. Llama's attention_bias and mlp_bias are TensorRT-LLM's attn_bias and mlp_bias.
    assert mine.get("attn_bias", False) == (qwen or llama and hf.get("attention_bias", False))
    assert mine.get("mlp_bias", False) == (llama and hf.get("mlp_bias", False))
    assert mine.get("qwen_type") == ("qwen2" if qwen else "qwen3" if qwen3 else None)


def convert_and_export(hf_dir: Path, tmp_path: Path, tp_size: int, dtype: str) -> tuple[Path, Path]:
    from redrafter_trt.convert import convert

    drafter = make_drafter(tmp_path / "drafter", hf_dir)
    ours = convert(hf_dir, drafter, tmp_path / "ours", tp_size=tp_size, dtype=dtype)
    oracle = modelopt_export(hf_dir, tmp_path / "modelopt", tp_size=tp_size, dtype=dtype)
    return Path(ours), oracle


@pytest.fixture(scope="module")
def tiny_variants(tmp_path_factory, tiny_llama, tiny_llama_tied, tiny_qwen2):
    root = tmp_path_factory.mktemp("oracle_models")
    return {
        "llama_gqa": tiny_llama,            # 4 heads, 2 kv heads, untied
        "llama_gqa_tied": tiny_llama_tied,
        "qwen2": tiny_qwen2,                # qkv bias, rope_theta 1e6
        "llama_mha": make_hf(root / "llama_mha", "llama", num_key_value_heads=4),  # nkv = nh: no GQA
        "llama_head_dim": make_hf(root / "llama_head_dim", "llama", head_dim=32),  # nh x head_dim != hidden_size
        "qwen2_tied_kv1": make_hf(root / "qwen2_tied_kv1", "qwen2", tie=True, num_key_value_heads=1),
        # untied Qwen2 with nkv = nh and nh x head_dim != hidden_size; vocab 252, 63 rows a rank at tp 4
        "qwen2_head_dim": make_hf(root / "qwen2_head_dim", "qwen2", num_key_value_heads=4, head_dim=32, vocab_size=252),
        "mistral": make_hf(root / "mistral", "mistral"),
        # Qwen3: per-head q/k norms (modelopt's attention config names them q_layernorm / k_layernorm), head_dim 32
        # other than hidden / heads, tied
        "qwen3": make_hf(root / "qwen3", "qwen3", head_dim=32, rope_theta=1000000.0, tie=True),
        # Llama biases: q/k/v and o_proj (attention_bias), gate/up/down_proj (mlp_bias); o_proj's and down_proj's are
        # row-parallel: whole on every rank
        "llama_bias": make_hf(root / "llama_bias", "llama", attention_bias=True, mlp_bias=True),
        # Llama-3 style: one kv head (duplicated at tp > 1), rope_theta 5e5 with llama3 scaling, both HF layouts
        "llama3_top": make_hf(root / "llama3_top", "llama", rope_layout="top", rope_theta=500000.0,
                              rope_scaling=LLAMA3_SCALING, num_key_value_heads=1),
        "llama3_params": make_hf(root / "llama3_params", "llama", rope_layout="params", rope_theta=500000.0,
                                 rope_scaling=LLAMA3_SCALING, num_key_value_heads=1),
    }


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
@pytest.mark.parametrize("tp_size", [1, 2, 4])
@pytest.mark.parametrize("variant", ["llama_gqa", "llama_gqa_tied", "qwen2", "llama_mha", "llama_head_dim",
                                     "qwen2_tied_kv1", "qwen2_head_dim", "mistral", "llama_bias", "qwen3"])
def test_tiny_base_equals_modelopt(tiny_variants, tmp_path, variant, tp_size, dtype):
    hf_dir = tiny_variants[variant]
    ours, oracle = convert_and_export(hf_dir, tmp_path, tp_size, dtype)
    assert_same_base(ours, oracle, tp_size)
    assert_same_config(ours, oracle, hf_dir)


@pytest.mark.parametrize("tp_size", [1, 2, 4])
@pytest.mark.parametrize("variant", ["llama3_top", "llama3_params"])
def test_llama3_style_equals_modelopt(tiny_variants, tmp_path, variant, tp_size):
    hf_dir = tiny_variants[variant]
    ours, oracle = convert_and_export(hf_dir, tmp_path, tp_size, "bfloat16")
    assert_same_base(ours, oracle, tp_size)
    assert_same_config(ours, oracle, hf_dir)


@pytest.mark.parametrize("tp_size", [1, 2])
def test_sharded_bf16_tied_base_equals_modelopt(tmp_path, tp_size):
    """What Qwen2.5-0.5B-style folders hold: bfloat16 weights in shards named by model.safetensors.index.json, tied
    embeddings (no lm_head.weight stored), 14 heads over 2 kv heads. Ours reads the shards as modelopt's in-memory
    model does; lm_head comes from embed_tokens as TensorRT-LLM's from_hugging_face maps it when tied."""
    from transformers import AutoModelForCausalLM

    src = make_hf(tmp_path / "src", "qwen2", tie=True, dtype=torch.bfloat16, hidden_size=112, num_attention_heads=14,
                  num_key_value_heads=2, intermediate_size=224, rope_theta=1000000.0)
    hf_dir = tmp_path / "sharded"
    AutoModelForCausalLM.from_pretrained(src, dtype=torch.bfloat16).save_pretrained(hf_dir, max_shard_size="40KB")
    assert (hf_dir / "model.safetensors.index.json").exists() and not (hf_dir / "model.safetensors").exists()
    weight_map = json.loads((hf_dir / "model.safetensors.index.json").read_text())["weight_map"]
    assert "lm_head.weight" not in weight_map and len(set(weight_map.values())) > 1
    ours, oracle = convert_and_export(hf_dir, tmp_path, tp_size, "bfloat16")
    assert json.loads((ours / "config.json").read_text())["dtype"] == "bfloat16"
    assert_same_base(ours, oracle, tp_size)
    assert_same_config(ours, oracle, hf_dir)


def test_modelopt_splits_a_kv_head_where_we_refuse(tmp_path):
    """nkv=3, tp=2: modelopt silently writes 1.5 kv heads per rank (TensorRT-LLM cannot run it); we must refuse."""
    from redrafter_trt.convert import convert
    from redrafter_trt.errors import ConfigError

    hf_dir = make_hf(tmp_path / "nkv3", "llama", hidden_size=96, num_attention_heads=6, num_key_value_heads=3)
    oracle = modelopt_export(hf_dir, tmp_path / "modelopt", tp_size=2, dtype="float16")
    head_size, q_rows = 16, 6 * 16 // 2
    kv_rows = (base_tensors(oracle, 0)["transformer.layers.0.attention.qkv.weight"].shape[0] - q_rows) // 2
    assert kv_rows == 3 * head_size // 2 and kv_rows % head_size, "modelopt no longer splits a kv head: revisit"
    drafter = make_drafter(tmp_path / "drafter", hf_dir)
    with pytest.raises(ConfigError, match="kv heads"):
        convert(hf_dir, drafter, tmp_path / "ours", tp_size=2, dtype="float16")
    assert not (tmp_path / "ours").exists()


@pytest.mark.parametrize("tp_size", [1, pytest.param(3, marks=pytest.mark.slow)])
def test_smollm2_equals_modelopt(smollm2, tmp_path, tp_size):
    ours, oracle = convert_and_export(smollm2, tmp_path, tp_size, "bfloat16")
    assert_same_base(ours, oracle, tp_size)
    assert_same_config(ours, oracle, smollm2)


def test_oracle_comparison_catches_mistakes(tiny_llama, tmp_path):
    """The comparison itself can fail: swapping TensorRT-LLM's crossed fc/gate or dropping rotary_base is caught."""
    from safetensors.torch import save_file

    ours, oracle = convert_and_export(tiny_llama, tmp_path, 2, "float16")
    path = ours / "rank1.safetensors"
    weights = load_file(path)
    fc, gate = "transformer.layers.1.mlp.fc.weight", "transformer.layers.1.mlp.gate.weight"
    weights[fc], weights[gate] = weights[gate], weights[fc]
    save_file(weights, path)
    with pytest.raises(AssertionError, match="rank 1 transformer.layers.1.mlp"):
        assert_same_base(ours, oracle, 2)
    cfg = json.loads((ours / "config.json").read_text())
    cfg["rotary_base"] = None
    (ours / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(AssertionError):
        assert_same_config(ours, oracle, tiny_llama)


def modelopt_fp8_export(hf_dir: Path, out_dir: Path, *, tp_size: int, dtype: str, prompts: list[str],
                        decoder: str | None = None) -> Path:
    """modelopt's FP8 base the way TensorRT-LLM's quantize.py makes it: the model loaded in `dtype`, calibrated with
    FP8_DEFAULT_CFG over `prompts` (4 prompts, 2 a batch, 32 tokens, as tests/test_fp8.py's CALIB), exported as
    `decoder` (DECODER's by default)."""
    import modelopt.torch.quantization as mtq
    from modelopt.torch.export import export_tensorrt_llm_checkpoint
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf = json.loads((Path(hf_dir) / "config.json").read_text())
    tok = AutoTokenizer.from_pretrained(hf_dir, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=DTYPES[dtype]).eval()

    def loop(m):
        for i in range(0, len(prompts), 2):
            enc = tok(prompts[i:i + 2], return_tensors="pt", padding=True, truncation=True, max_length=32)
            m(**enc)

    with warnings.catch_warnings(), torch.inference_mode():
        warnings.simplefilter("ignore")
        mtq.quantize(model, mtq.FP8_DEFAULT_CFG, forward_loop=loop)
        export_tensorrt_llm_checkpoint(model, decoder or DECODER[hf["architectures"][0]], dtype=DTYPES[dtype],
                                       export_dir=out_dir, inference_tensor_parallel=tp_size)
    return Path(out_dir)


@pytest.mark.parametrize("variant, tp_size, dtype", [
    ("llama_gqa", 2, "bfloat16"),        # a float32 source: its FP8 weights come from its bfloat16 values
    ("qwen2_tied_kv1", 2, "float16"),    # qkv bias, tied lm_head, one kv head duplicated
    ("llama_bias", 2, "bfloat16"),       # Llama's attention and MLP biases stay in bfloat16 beside FP8 weights
])
def test_fp8_base_equals_modelopt(tiny_variants, tmp_path, variant, tp_size, dtype):
    """`convert --quantize fp8` against modelopt run as TensorRT-LLM's quantize.py runs it (model in `dtype`): the
    same tensors, FP8 weights and weight scales bit for bit. Activation scales come from calibration, which ours
    computes in float32 on CPU: within 2%. lm_head and the drafter stay in `dtype` and out of FP8."""
    import shutil

    from redrafter_trt.convert import convert
    from redrafter_trt.quantize import calibration_prompts
    from test_fp8 import byte_tokenizer

    hf_dir = byte_tokenizer(Path(shutil.copytree(tiny_variants[variant], tmp_path / "hf")))
    drafter = make_drafter(tmp_path / "drafter", hf_dir)
    ours = Path(convert(hf_dir, drafter, tmp_path / "ours", tp_size=tp_size, dtype=dtype, quantize="fp8",
                        calib_size=4, calib_seq_len=32, calib_batch_size=2))
    oracle = modelopt_fp8_export(hf_dir, tmp_path / "modelopt", tp_size=tp_size, dtype=dtype,
                                 prompts=calibration_prompts(None, 4))
    for r in range(tp_size):
        mine, theirs = base_tensors(ours, r), base_tensors(oracle, r)
        assert sorted(mine) == sorted(theirs), f"rank {r}: {sorted(set(mine) ^ set(theirs))}"
        for name in sorted(mine):
            a, b = mine[name], theirs[name]
            assert (a.dtype, a.shape) == (b.dtype, b.shape), f"rank {r} {name}: {a.dtype} {a.shape}, {b.dtype} {b.shape}"
            if name.endswith("activation_scaling_factor"):
                assert torch.allclose(a, b, rtol=0.02), f"rank {r} {name}: {a.item()} vs {b.item()}"
            else:
                assert torch.equal(a.view(torch.uint8), b.view(torch.uint8)), f"rank {r} {name}: values differ"
        assert mine["lm_head.weight"].dtype == DTYPES[dtype]
        assert mine["transformer.layers.0.mlp.fc.weight"].dtype == torch.float8_e4m3fn
        drafter_dtypes = {t.dtype for k, t in load_file(ours / f"rank{r}.safetensors").items() if k.startswith("drafter.")}
        assert drafter_dtypes == {DTYPES[dtype]}
    mine = json.loads((ours / "config.json").read_text())
    theirs = json.loads((oracle / "config.json").read_text())
    for key in MODEL_FIELDS:
        assert mine[key] == theirs[key], f"{key}: ours {mine[key]!r}, modelopt {theirs[key]!r}"
    assert {k: mine["quantization"][k] for k in ("quant_algo", "kv_cache_quant_algo")} == \
           {k: theirs["quantization"][k] for k in ("quant_algo", "kv_cache_quant_algo")} == \
           {"quant_algo": "FP8", "kv_cache_quant_algo": None}
    assert set(theirs["quantization"]["exclude_modules"]) <= set(mine["quantization"]["exclude_modules"])
    assert {"lm_head", "drafter", "drafter.lm_head"} <= set(mine["quantization"]["exclude_modules"])


@pytest.mark.parametrize("variant", ["qwen2_tied_kv1", "qwen3"])
@pytest.mark.parametrize("fp8", [False, True])
def test_modelopt_qwen_decoder_is_its_llama_decoder(tiny_variants, tmp_path, fp8, variant):
    """modelopt exports a Qwen2 or Qwen3 as decoder type "llama" with the tensors of "qwen", FP8 weights and scales
    included, Qwen3's q/k layernorms unquantised (the configs differ in modelopt's own `decoder` field only): why
    quantize.py and this oracle use "llama". Where
    modelopt cannot export "qwen" (before 0.44, without TensorRT-LLM) it must raise, as `convert --quantize fp8` of a
    Qwen2 did after calibrating."""
    import shutil

    from redrafter_trt.quantize import calibration_prompts
    from test_fp8 import byte_tokenizer

    hf_dir = byte_tokenizer(Path(shutil.copytree(tiny_variants[variant], tmp_path / "hf")))

    def export(decoder: str) -> Path:
        if fp8:
            return modelopt_fp8_export(hf_dir, tmp_path / decoder, tp_size=2, dtype="float16",
                                       prompts=calibration_prompts(None, 4), decoder=decoder)
        return modelopt_export(hf_dir, tmp_path / decoder, tp_size=2, dtype="float16", decoder=decoder)

    llama = export("llama")
    if not modelopt_exports_qwen():
        with pytest.raises(NotImplementedError, match="Cannot export tensorrt_llm checkpoint for model qwen"):
            export("qwen")
        return
    qwen = export("qwen")
    for r in range(2):
        a, b = base_tensors(llama, r), base_tensors(qwen, r)
        assert sorted(a) == sorted(b), f"rank {r}: {sorted(set(a) ^ set(b))}"
        for name in sorted(a):
            assert a[name].dtype == b[name].dtype, f"rank {r} {name}: {a[name].dtype}, {b[name].dtype}"
            assert torch.equal(a[name].view(torch.uint8), b[name].view(torch.uint8)), f"rank {r} {name}"
    cfg_llama, cfg_qwen = (json.loads((d / "config.json").read_text()) for d in (llama, qwen))
    assert {k for k in cfg_llama.keys() | cfg_qwen.keys() if cfg_llama.get(k) != cfg_qwen.get(k)} == {"decoder"}


def test_a_modelopt_base_as_exported_is_refused(tiny_qwen2, tmp_path):
    """modelopt's own base checkpoint (the two-step flow) under transformers 5 leaves out rotary_base and
    rotary_scaling: TensorRT-LLM and the reference runtime then take 10000 (this Qwen2's is 1e6). convert refuses it
    in one line and inspect reports it; a null one too (TensorRT-LLM cannot build it). Restored, it converts to
    modelopt's tensors unchanged."""
    from redrafter_trt.checkpoint import inspect_checkpoint
    from redrafter_trt.convert import convert
    from redrafter_trt.errors import ConfigError

    oracle = modelopt_export(tiny_qwen2, tmp_path / "modelopt", tp_size=2, dtype="bfloat16")
    cfg = json.loads((oracle / "config.json").read_text()) | {"qwen_type": "qwen2"}
    assert {k: cfg[k] for k in ("rotary_base", "rotary_scaling") if cfg.get(k) is not None} == \
        modelopt_rope(tiny_qwen2), "modelopt's rotary fields changed: revisit"
    # as modelopt writes it under transformers 5 (4.57 reads no rope_parameters: modelopt writes its default 10000)
    cfg = {k: v for k, v in cfg.items() if k not in ("rotary_base", "rotary_scaling")}
    drafter = make_drafter(tmp_path / "drafter", tiny_qwen2, dtype=torch.bfloat16)
    for edit, problem in (({}, "rotary_base is absent.*rope_theta"), ({"rotary_base": None}, "rotary_base is None")):
        (oracle / "config.json").write_text(json.dumps(cfg | edit))
        with pytest.raises(ConfigError, match=problem):
            convert(oracle, drafter, tmp_path / "ours")
        assert not (tmp_path / "ours").exists()
        assert any(re.search(problem, p) for p in inspect_checkpoint(oracle).problems)
    theta, scaling = hf_rope(json.loads((tiny_qwen2 / "config.json").read_text()))
    (oracle / "config.json").write_text(json.dumps(cfg | {"rotary_base": theta, "rotary_scaling": scaling}))
    ours = Path(convert(oracle, drafter, tmp_path / "ours"))
    assert json.loads((ours / "config.json").read_text())["rotary_base"] == 1e6
    for r in range(2):
        mine, theirs = base_tensors(ours, r), base_tensors(oracle, r)
        assert sorted(mine) == sorted(theirs) and all(torch.equal(mine[k], theirs[k]) for k in mine)


def test_a_biased_llama_modelopt_base_names_the_bias_fields(tiny_variants, tmp_path):
    """modelopt writes a biased Llama's config with `bias: true`, which TensorRT-LLM does not read (it warns
    'Provided but not required tensors' and builds without the biases), and no attn_bias / mlp_bias: convert refuses
    it naming both fields; with them it converts to modelopt's tensors unchanged."""
    from redrafter_trt.convert import convert
    from redrafter_trt.errors import TensorError

    hf_dir = tiny_variants["llama_bias"]
    oracle = modelopt_export(hf_dir, tmp_path / "modelopt", tp_size=2, dtype="float16")
    theta, scaling = hf_rope(json.loads((hf_dir / "config.json").read_text()))
    cfg = json.loads((oracle / "config.json").read_text()) | {"rotary_base": theta, "rotary_scaling": scaling}
    assert cfg.get("bias") is True and "attn_bias" not in cfg and "mlp_bias" not in cfg, "modelopt changed: revisit"
    (oracle / "config.json").write_text(json.dumps(cfg))
    drafter = make_drafter(tmp_path / "drafter", hf_dir, dtype=torch.float16)
    with pytest.raises(TensorError, match='unexpected tensors.*add "attn_bias": true and "mlp_bias": true'):
        convert(oracle, drafter, tmp_path / "ours")
    (oracle / "config.json").write_text(json.dumps(cfg | {"attn_bias": True, "mlp_bias": True}))
    ours = Path(convert(oracle, drafter, tmp_path / "ours"))
    for r in range(2):
        mine, theirs = base_tensors(ours, r), base_tensors(oracle, r)
        assert sorted(mine) == sorted(theirs) and all(torch.equal(mine[k], theirs[k]) for k in mine)
