"""FP8 base through nvidia-modelopt (`convert(..., quantize="fp8")` and `redrafter_trt.quantize`): structure of
the checkpoint, RoPE fields, drafter kept in the config dtype and excluded from FP8, `inspect` clean, FP8 KV cache,
and the bad-input errors. Calibration is tiny (a few prompts, short sequences) so the file stays quick on CPU.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tinymodels import make_drafter, make_hf

pytest.importorskip("modelopt.torch.quantization", reason="FP8 needs nvidia-modelopt (pip install -e '.[test]')")

from redrafter_trt.checkpoint import inspect_checkpoint  # noqa: E402
from redrafter_trt.convert import convert  # noqa: E402
from redrafter_trt.errors import ConfigError, DependencyError, TensorError  # noqa: E402
from redrafter_trt.quantize import (  # noqa: E402
    calibration_prompts, check_exported_quantization, check_quantize_options, export_fp8_base, fp8_quant_config,
    patch_exported_config)

LINEARS = ("attention.qkv", "attention.dense", "mlp.fc", "mlp.gate", "mlp.proj")
TORCH = {"float16": torch.float16, "bfloat16": torch.bfloat16}
CALIB = dict(calib_size=4, calib_seq_len=32, calib_batch_size=2)
LLAMA3_SCALING = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                  "original_max_position_embeddings": 128}


def byte_tokenizer(folder: Path) -> Path:
    """A 256-token byte-level tokenizer saved beside a tiny model (vocab 256), so calibration has real text."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE(vocab={c: i for i, c in enumerate(alphabet)}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=alphabet[0], pad_token=alphabet[0]).save_pretrained(folder)
    return Path(folder)


def hf_rope(hf: dict) -> tuple[float, dict | None]:
    if "rope_parameters" in hf:
        params = dict(hf["rope_parameters"])
        theta = params.pop("rope_theta")
        return theta, (None if params.get("rope_type", "default") == "default" else params)
    return hf.get("rope_theta", 10000.0), hf.get("rope_scaling")


def drafter_exclusions(num_layers: int, rnn: bool, input_proj: bool) -> set[str]:
    """The format page's list, written out independently of redrafter_trt.rules."""
    mods = {"drafter", "drafter.layers", "drafter.lm_head"}
    mods |= {f"drafter.layers.{i}" for i in range(num_layers)} | {f"drafter.layers.{i}.linear" for i in range(num_layers)}
    if rnn:
        mods |= {"drafter.rnn_u", "drafter.rnn_w"}
    if input_proj:
        mods.add("drafter.input_proj")
    return mods


def hf_weight(hf_dir: Path, name: str) -> torch.Tensor:
    return load_file(hf_dir / "model.safetensors")[name].float()


def assert_fp8_checkpoint(out: Path, hf_dir: Path, drafter_dir: Path, *, dtype: str, kv_fp8: bool) -> None:
    cfg = json.loads((out / "config.json").read_text())
    hf = json.loads((hf_dir / "config.json").read_text())
    dcfg = json.loads((drafter_dir / "config.json").read_text())
    tp = cfg["mapping"]["tp_size"]
    want = TORCH[dtype]

    report = inspect_checkpoint(out)
    assert report.ok, report.problems
    assert cfg["dtype"] == dtype
    quant = cfg["quantization"]
    assert quant["quant_algo"] == "FP8"
    assert quant["kv_cache_quant_algo"] == ("FP8" if kv_fp8 else None)
    theta, scaling = hf_rope(hf)
    assert (cfg["rotary_base"], cfg["rotary_scaling"]) == (theta, scaling)
    qwen = hf["architectures"][0] == "Qwen2ForCausalLM"
    qwen3 = hf["architectures"][0] == "Qwen3ForCausalLM"
    assert cfg.get("qwen_type") == ("qwen2" if qwen else "qwen3" if qwen3 else None)
    assert cfg["attn_bias"] == qwen
    input_proj = dcfg["exit_dim"] != 2 * dcfg["hidden_size"]
    assert drafter_exclusions(dcfg["num_draft_layers"], dcfg["rnn"], input_proj) <= set(quant["exclude_modules"])
    assert "lm_head" in quant["exclude_modules"]

    for r in range(tp):
        w = load_file(out / f"rank{r}.safetensors")
        for layer in range(cfg["num_hidden_layers"]):
            p = f"transformer.layers.{layer}."
            for mod in LINEARS:
                assert w[p + mod + ".weight"].dtype == torch.float8_e4m3fn, p + mod
                for scale in ("weights_scaling_factor", "activation_scaling_factor"):
                    s = w[f"{p}{mod}.{scale}"]
                    assert (s.dtype, tuple(s.shape)) == (torch.float32, (1,)) and s.item() > 0, f"{p}{mod}.{scale}"
            # q, k, v share one scale inside qkv; TensorRT-LLM fuses fc and gate, which needs them equal too.
            assert torch.equal(w[p + "mlp.fc.weights_scaling_factor"], w[p + "mlp.gate.weights_scaling_factor"])
            for norm in ("input_layernorm", "post_layernorm") + (("attention.q_layernorm", "attention.k_layernorm")
                                                                  if qwen3 else ()):  # never quantised
                assert w[f"{p}{norm}.weight"].dtype == want
                assert f"{p}{norm}.weights_scaling_factor" not in w
            kv = p + "attention.kv_cache_scaling_factor"
            if kv_fp8:
                assert (w[kv].dtype, tuple(w[kv].shape)) == (torch.float32, (1,)) and w[kv].item() > 0
            else:
                assert kv not in w
        for name in ("lm_head.weight", "transformer.vocab_embedding.weight", "transformer.ln_f.weight"):
            assert w[name].dtype == want, name
        drafter = {k: v for k, v in w.items() if k.startswith("drafter.")}
        assert drafter and all(v.dtype == want for v in drafter.values())
        assert ("drafter.input_proj.weight" in drafter) == input_proj

        # Dequantised weights are the source weights within FP8 e4m3's rounding (3 mantissa bits).
        fc = w["transformer.layers.0.mlp.fc.weight"].float() * w["transformer.layers.0.mlp.fc.weights_scaling_factor"]
        src = hf_weight(hf_dir, "model.layers.0.mlp.gate_proj.weight").chunk(tp, 0)[r]  # fc = gate_proj
        assert (fc - src).norm() / src.norm() < 0.05


@pytest.fixture(scope="module")
def fp8_models(tmp_path_factory, tiny_llama, tiny_qwen2, tiny_qwen3):
    """Copies of the session's tiny models with a tokenizer, and one Llama-3-style model in the top-level layout."""
    import shutil

    root = tmp_path_factory.mktemp("fp8_models")
    models = {}
    for name, src in (("llama", tiny_llama), ("qwen2", tiny_qwen2), ("qwen3", tiny_qwen3)):
        models[name] = byte_tokenizer(Path(shutil.copytree(src, root / name)))
    models["mistral"] = byte_tokenizer(make_hf(root / "mistral", "mistral"))
    models["llama3_top"] = byte_tokenizer(make_hf(root / "llama3_top", "llama", rope_layout="top", rope_theta=500000.0,
                                                  rope_scaling=LLAMA3_SCALING, num_key_value_heads=1))
    return models


@pytest.mark.parametrize("model, tp_size, dtype, exit_dim, kv", [
    ("llama", 1, "bfloat16", None, None),
    ("llama", 2, "float16", 96, None),          # exit_dim != 2H: drafter.input_proj must be excluded too
    ("llama3_top", 2, "bfloat16", None, None),  # one kv head duplicated, rope_theta 5e5 + llama3 scaling restored
    ("qwen2", 1, "bfloat16", None, None),
    ("mistral", 1, "bfloat16", None, None),    # modelopt names it MistralForCausalLM: was refused after calibrating
    ("qwen2", 2, "bfloat16", None, "fp8"),      # needs the converter to accept modelopt's k_/v_cache_scaling_factor
    ("qwen3", 2, "bfloat16", None, "fp8"),      # q/k layernorms whole on both ranks, in bfloat16
])
def test_fp8_convert_structure(fp8_models, tmp_path, model, tp_size, dtype, exit_dim, kv):
    hf_dir = fp8_models[model]
    drafter = make_drafter(tmp_path / "drafter", hf_dir, exit_dim=exit_dim)
    out = convert(hf_dir, drafter, tmp_path / "out", tp_size=tp_size, dtype=dtype, quantize="fp8",
                  kv_cache_dtype=kv, **CALIB)
    assert_fp8_checkpoint(Path(out), hf_dir, drafter, dtype=dtype, kv_fp8=kv == "fp8")


@pytest.mark.parametrize("arch, tp_size, overrides", [
    ("qwen2", 4, dict(tie=True, num_key_value_heads=1)),       # qkv bias, one kv head on 4 ranks, tied lm_head
    ("llama", 2, dict(attention_bias=True, mlp_bias=True)),    # row-parallel biases whole on every rank
    ("qwen3", 2, dict(tie=True, head_dim=32)),                  # q/k layernorms, head_dim other than hidden / heads
])
def test_fp8_ranks_dequantise_to_the_unquantised_ranks(tmp_path, arch, tp_size, overrides):
    """Each rank of an FP8 conversion is the same rank of the unquantised one (rules.py's split, checked against
    modelopt in test_modelopt_oracle.py): every FP8 linear dequantised (weight x that rank's weights_scaling_factor)
    within e4m3's rounding, every other tensor bit for bit, the padded vocab-split embedding joined back. The FP8
    split is modelopt's own: without this, nothing independent checked its qkv, dense and proj shards per rank."""
    hf_dir = byte_tokenizer(make_hf(tmp_path / "hf", arch, **overrides))
    drafter = make_drafter(tmp_path / "drafter", hf_dir)
    plain = Path(convert(hf_dir, drafter, tmp_path / "plain", tp_size=tp_size, dtype="bfloat16"))
    fp8 = Path(convert(hf_dir, drafter, tmp_path / "fp8", tp_size=tp_size, dtype="bfloat16", quantize="fp8", **CALIB))
    vocab = json.loads((fp8 / "config.json").read_text())["vocab_size"]
    embedding = "transformer.vocab_embedding.weight"
    ranks = [(load_file(plain / f"rank{r}.safetensors"), load_file(fp8 / f"rank{r}.safetensors")) for r in range(tp_size)]
    joined = torch.cat([w[embedding] for _, w in ranks]) if ranks[0][1][embedding].shape[0] < vocab else ranks[0][1][embedding]
    assert torch.equal(joined[:vocab], ranks[0][0][embedding]) and not joined[vocab:].any()
    for r, (want, got) in enumerate(ranks):
        scales = {k for k in got if k.endswith("_scaling_factor")}
        fp8_weights = {k for k, t in got.items() if t.dtype == torch.float8_e4m3fn}
        assert len(fp8_weights) == 5 * 2 and set(want) == set(got) - scales, f"rank {r}"
        for name in sorted(set(want) - {embedding}):
            if name in fp8_weights:
                dequantised = got[name].float() * got[name.removesuffix("weight") + "weights_scaling_factor"]
                source = want[name].float()
                assert (dequantised - source).norm() / source.norm() < 0.05, f"rank {r} {name}"
            else:
                assert got[name].dtype == want[name].dtype and torch.equal(got[name], want[name]), f"rank {r} {name}"


def test_export_fp8_base_kv_cache(fp8_models, tmp_path):
    """modelopt's FP8 KV cache output as export_fp8_base leaves it: kv scale per layer, FP8 kv algo, RoPE restored."""
    hf_dir = fp8_models["llama"]
    export_fp8_base(hf_dir, tmp_path / "base", tp_size=2, dtype="bfloat16", kv_cache_dtype="fp8",
                    calib_prompts=calibration_prompts(None, 4), device="cpu", **CALIB)
    cfg = json.loads((tmp_path / "base" / "config.json").read_text())
    assert cfg["quantization"]["kv_cache_quant_algo"] == "FP8"
    assert cfg["rotary_base"] == 10000.0 and cfg["rotary_scaling"] is None
    for r in range(2):
        w = load_file(tmp_path / "base" / f"rank{r}.safetensors")
        for layer in range(2):
            s = w[f"transformer.layers.{layer}.attention.kv_cache_scaling_factor"]
            assert (s.dtype, tuple(s.shape)) == (torch.float32, (1,))


@pytest.mark.parametrize("listed", [None, [], ["*lm_head", "*vocab_embedding", "transformer.layers.1.*"]])
def test_attach_to_fp8_base_keeps_what_trtllm_excludes(fp8_models, tmp_path, listed):
    """An FP8 TensorRT-LLM base made elsewhere whose exclude_modules is null: TensorRT-LLM 1.2 then keeps its
    default list (lm_head, embeddings, ...) unquantised, so the drafter's names must be added to that list, not
    replace it. An empty list excludes nothing in 1.2 (`is None`, not `or`): lm_head must be added to it. A pattern
    list is matched as TensorRT-LLM does (fnmatch): layer 1 left unquantised is valid."""
    import shutil

    from redrafter_trt.layout import TRTLLM_DEFAULT_EXCLUSIONS

    hf_dir = fp8_models["llama"]
    base = tmp_path / "base"
    export_fp8_base(hf_dir, base, tp_size=1, dtype="bfloat16", kv_cache_dtype=None,
                    calib_prompts=calibration_prompts(None, 4), device="cpu", **CALIB)
    cfg = json.loads((base / "config.json").read_text())
    cfg["quantization"]["exclude_modules"] = listed
    (base / "config.json").write_text(json.dumps(cfg))
    if listed and "transformer.layers.1.*" in listed:  # what a build from this list reads: layer 1 in bfloat16
        w = load_file(base / "rank0.safetensors")
        for mod in LINEARS:
            p = f"transformer.layers.1.{mod}."
            w[p + "weight"] = (w[p + "weight"].float() * w.pop(p + "weights_scaling_factor")).bfloat16()
            w.pop(p + "activation_scaling_factor")
        from safetensors.torch import save_file
        save_file(w, base / "rank0.safetensors")
    drafter = make_drafter(tmp_path / "drafter", hf_dir)
    out = Path(convert(base, drafter, tmp_path / "out", dtype="bfloat16"))
    quant = json.loads((out / "config.json").read_text())["quantization"]
    dcfg = json.loads((drafter / "config.json").read_text())
    assert set(TRTLLM_DEFAULT_EXCLUSIONS if listed is None else listed) <= set(quant["exclude_modules"])
    assert "lm_head" in quant["exclude_modules"] or "*lm_head" in quant["exclude_modules"]
    if listed == []:  # 1.2 read [] as no default list: what is written is lm_head and the drafter, nothing more
        assert not set(TRTLLM_DEFAULT_EXCLUSIONS) & set(quant["exclude_modules"])
    assert drafter_exclusions(dcfg["num_draft_layers"], dcfg["rnn"], False) <= set(quant["exclude_modules"])
    report = inspect_checkpoint(out)
    assert report.ok, report.problems
    shutil.rmtree(base)


def test_bench_takes_an_fp8_checkpoints_own_base_as_its_baseline(fp8_models, tmp_path):
    """bench compares a few rows of the transformers baseline's weights with the checkpoint's: an FP8 checkpoint's
    quantised linears are left out, its lm_head (kept in the model dtype, float32 rounded to bfloat16 here) compared,
    so its own base is accepted and another model of its shapes (a tied Qwen2: lm_head is the embedding) refused."""
    from redrafter_trt.bench_inputs import resolve_hf_dir

    hf_dir = fp8_models["qwen2"]
    out = Path(convert(hf_dir, make_drafter(tmp_path / "drafter", hf_dir), tmp_path / "out", tp_size=1,
                       dtype="bfloat16", quantize="fp8", **CALIB))
    raw = json.loads((out / "config.json").read_text())
    assert resolve_hf_dir(None, raw, out) == hf_dir.resolve()
    other = make_hf(tmp_path / "other", "qwen2", rope_theta=1000000.0, tie=True, seed=1)
    with pytest.raises(ConfigError, match=f"its lm_head.weight is not {out}'s "):  # tied: the embedding's rows
        resolve_hf_dir(other, raw, out)


def test_acceptance_json_says_an_fp8_tp_checkpoint_was_measured(fp8_models, tmp_path):
    """acceptance's JSON `meta` said `dtype` and the tp of an FP8 tp=2 checkpoint, not that it was FP8 (bench's says
    `quant_algo`): tokens/step of an FP8 base are not its bf16 base's. It says quant_algo as bench does."""
    from test_bench import run_cli

    hf_dir = fp8_models["llama"]
    out = convert(hf_dir, make_drafter(tmp_path / "drafter", hf_dir), tmp_path / "out", tp_size=2, dtype="bfloat16",
                  quantize="fp8", num_beams=2, draft_len=2, **CALIB)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "The quick brown fox"}) + "\n")
    report = tmp_path / "acceptance.json"
    result = run_cli("acceptance", "--checkpoint-dir", out, "--tokenizer-dir", hf_dir, "--prompts", prompts,
                     "--max-new-tokens", 4, "--output-json", report)
    assert result.exit_code == 0, result.output
    meta = json.loads(report.read_text())["meta"]
    assert (meta["quant_algo"], meta["checkpoint_tp_size"], meta["ranks_merged"]) == ("FP8", 2, True), meta
    # a walk-through: the header said "greedy, bfloat16 on cpu", as for a bfloat16 checkpoint
    assert "greedy, FP8 weights dequantised to bfloat16 on cpu" in result.output, result.output


def test_bench_header_says_an_fp8_checkpoint_runs_dequantised(fp8_models, tmp_path):
    """A walk-through: bench's header said "greedy, batch 1, bfloat16 on cpu" for an FP8 checkpoint, whose tokens/s
    here are those of its weights dequantised (no FP8 product on a CPU), not an FP8 engine's."""
    from test_bench import run_cli

    hf_dir = fp8_models["llama"]
    out = convert(hf_dir, make_drafter(tmp_path / "drafter", hf_dir), tmp_path / "out", tp_size=1, dtype="bfloat16",
                  quantize="fp8", num_beams=1, draft_len=1, **CALIB)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "The quick brown fox"}) + "\n")
    result = run_cli("bench", "--checkpoint-dir", out, "--tokenizer-dir", hf_dir, "--prompts", prompts,
                     "--max-new-tokens", 2)
    assert result.exit_code == 0, result.output
    assert "greedy, batch 1, FP8 weights dequantised to bfloat16 on cpu" in result.output, result.output


def test_converts_last_line_says_the_checkpoint_is_fp8(fp8_models, tmp_path):
    """A walk-through: `convert --quantize fp8 --kv-cache-dtype fp8` ended "wrote OUT: ReDrafterForQWenLM, bfloat16,
    tp 2, ...", the same line as an unquantised conversion's; it names the quantization as inspect does."""
    from test_bench import run_cli

    hf_dir = fp8_models["qwen2"]
    drafter = make_drafter(tmp_path / "drafter", hf_dir)
    result = run_cli("convert", "--base", hf_dir, "--drafter", drafter, "--output", tmp_path / "out", "--tp-size", 2,
                     "--dtype", "bfloat16", "--quantize", "fp8", "--kv-cache-dtype", "fp8",
                     *[x for k, v in CALIB.items() for x in (f"--{k.replace('_', '-')}", v)])
    assert result.exit_code == 0, result.output
    assert ": ReDrafterForQWenLM, bfloat16, FP8 (kv cache FP8), tp 2, 2 rank files, " in result.output, result.output


@pytest.fixture(scope="module")
def fp8_base(fp8_models, tmp_path_factory):
    """modelopt's FP8 base of the tiny Llama (tp 1, bfloat16) as export_fp8_base writes it; copy it to edit it."""
    base = tmp_path_factory.mktemp("fp8_base") / "base"
    export_fp8_base(fp8_models["llama"], base, tp_size=1, dtype="bfloat16", kv_cache_dtype=None,
                    calib_prompts=calibration_prompts(None, 4), device="cpu", **CALIB)
    return base


@pytest.mark.parametrize("base, same", [("hf", False), ("fp8_base", True), ("fp8_base", False)])
def test_a_drafter_trained_on_another_base_is_said_on_the_fp8_paths(fp8_models, request, tmp_path, caplog, base, same):
    """--quantize fp8 compares the drafter's record with the Hugging Face --base before calibrating; modelopt's FP8
    base checkpoint, by its lm_head (kept in the model dtype; its quantised linears are left out)."""
    from test_drafter_base import trained_on

    trained = fp8_models["llama"] if same else make_hf(tmp_path / "other", "llama", seed=1)
    drafter = trained_on(tmp_path / "drafter", trained)
    if base == "hf":
        out = convert(fp8_models["llama"], drafter, tmp_path / "out", dtype="bfloat16", quantize="fp8", **CALIB)
    else:
        out = convert(request.getfixturevalue("fp8_base"), drafter, tmp_path / "out")
    assert json.loads((Path(out) / "config.json").read_text())["producer"]["drafter_base_matches"] is same
    said = [r.getMessage() for r in caplog.records if r.name == "redrafter_trt.convert" and r.levelname == "WARNING"]
    assert len(said) == (not same) and all(f"trained on {trained.resolve()}" in m for m in said), said


def test_attach_to_fp8_base_stored_as_int8_keeps_its_fp8_bits(fp8_models, fp8_base, tmp_path):
    """A review: an FP8 base whose FP8 weights are stored as int8 (older exporters' layout, which TensorRT-LLM's
    preprocess_perlayer_weights views as FP8) was converted by value, int8 56 becoming FP8 56.0: every base linear
    garbage, and inspect of the output clean. They are now viewed as FP8, as TensorRT-LLM loads them; a cast into or
    out of FP8 (an FP8 lm_head the config keeps in bfloat16) is refused."""
    from safetensors.torch import save_file

    import shutil

    hf_dir = fp8_models["llama"]
    base = Path(shutil.copytree(fp8_base, tmp_path / "base"))
    fp8 = load_file(base / "rank0.safetensors")
    save_file({k: v.view(torch.int8) if v.dtype == torch.float8_e4m3fn else v for k, v in fp8.items()},
              base / "rank0.safetensors")
    drafter = make_drafter(tmp_path / "drafter", hf_dir)
    out = Path(convert(base, drafter, tmp_path / "out"))
    got = load_file(out / "rank0.safetensors")
    for name, t in fp8.items():
        assert got[name].dtype == t.dtype and torch.equal(got[name].view(torch.uint8), t.view(torch.uint8)), name
    save_file(fp8 | {"lm_head.weight": fp8["lm_head.weight"].to(torch.float8_e4m3fn)}, base / "rank0.safetensors")
    with pytest.raises(TensorError, match="lm_head.weight is F8_E4M3, but its config.json makes it bfloat16"):
        convert(base, drafter, tmp_path / "out2")
    assert not (tmp_path / "out2").exists()


@pytest.mark.parametrize("stored", ["F8_E4M3", "I8"])
def test_attach_to_a_base_with_an_fp8_lm_head_says_so(fp8_models, fp8_base, tmp_path, stored):
    """A review: a base whose lm_head is FP8 (its scales beside it, exclude_modules without lm_head) was refused as
    "unexpected tensors: lm_head.activation_scaling_factor, ...: it does not match its config.json", though config
    and weights agree; the refusal now says that lm_head is quantized and what to do. A later review: `inspect` named
    three problems that were not (the scales unexpected, lm_head.weight's dtype, exclude_modules lacking lm_head,
    "though this checkpoint holds it in bfloat16"); it names the one convert refuses. FP8 bits stored as int8 are FP8
    too (TensorRT-LLM views them so before it looks at lm_head's dtype)."""
    import shutil

    from safetensors.torch import save_file

    base = Path(shutil.copytree(fp8_base, tmp_path / "base"))
    w = load_file(base / "rank0.safetensors")
    scale = w["lm_head.weight"].float().abs().max() / 448
    head = (w["lm_head.weight"].float() / scale).to(torch.float8_e4m3fn)
    w |= {"lm_head.weight": head.view(torch.int8) if stored == "I8" else head,
          "lm_head.weights_scaling_factor": scale.reshape(1), "lm_head.activation_scaling_factor": torch.ones(1)}
    save_file(w, base / "rank0.safetensors")
    cfg = json.loads((base / "config.json").read_text())
    cfg["quantization"]["exclude_modules"] = [m for m in cfg["quantization"]["exclude_modules"] if "lm_head" not in m]
    (base / "config.json").write_text(json.dumps(cfg))
    assert inspect_checkpoint(base, values=True).problems == [
        f"rank0: lm_head is FP8 (lm_head.weight {stored}, lm_head.activation_scaling_factor, "
        f"lm_head.weights_scaling_factor), which a ReDrafter checkpoint keeps in bfloat16, as modelopt and TensorRT-LLM "
        f"do by default: re-export the base with lm_head unquantized, or convert from the Hugging Face model with "
        f"--quantize fp8"]
    drafter = make_drafter(tmp_path / "drafter", fp8_models["llama"])
    with pytest.raises(TensorError, match=r"rank 0 quantizes lm_head \(lm_head.activation_scaling_factor, "
                                          r"lm_head.weights_scaling_factor\), which a ReDrafter checkpoint keeps in "
                                          r"bfloat16.*re-export the base with lm_head unquantized"):
        convert(base, drafter, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_stale_lm_head_scales_beside_an_unquantized_lm_head_are_dropped(fp8_models, fp8_base, tmp_path, caplog):
    """A review: lm_head scales left beside a bfloat16 lm_head.weight (lm_head still excluded) were refused by convert
    as "quantizes lm_head" and called unexpected by inspect, though TensorRT-LLM 1.2's preprocess_perlayer_weights
    drops them when lm_head.weight is not FP8. Decided by the weight's dtype: inspect finds no problem, convert drops
    them and says so."""
    import shutil

    from safetensors.torch import save_file

    base = Path(shutil.copytree(fp8_base, tmp_path / "base"))
    w = load_file(base / "rank0.safetensors")
    assert w["lm_head.weight"].dtype == torch.bfloat16
    save_file(w | {"lm_head.weights_scaling_factor": torch.ones(1), "lm_head.activation_scaling_factor": torch.ones(1)},
              base / "rank0.safetensors")
    assert inspect_checkpoint(base).problems == []
    with caplog.at_level("INFO", logger="redrafter_trt.base_plan"):
        out = Path(convert(base, make_drafter(tmp_path / "drafter", fp8_models["llama"]), tmp_path / "out"))
    assert "dropping lm_head.activation_scaling_factor, lm_head.weights_scaling_factor beside its BF16 " \
           "lm_head.weight" in caplog.text, caplog.text
    got = load_file(out / "rank0.safetensors")
    assert not [n for n in got if n.startswith("lm_head.") and n != "lm_head.weight"]
    assert inspect_checkpoint(out).problems == []


def test_a_k_cache_scale_without_its_v_cache_scale_is_missing_it(fp8_models, fp8_base, tmp_path):
    """A review: a base holding a layer's k_cache_scaling_factor without its v_cache_scaling_factor passed inspect and
    convert, each optional on its own, though TensorRT-LLM 1.2 folds the pair into kv_cache_scaling_factor and
    asserts the other is there when it loads the checkpoint. Either one makes the other required."""
    import shutil

    from safetensors.torch import save_file

    base = Path(shutil.copytree(fp8_base, tmp_path / "base"))
    cfg = json.loads((base / "config.json").read_text())
    cfg["quantization"]["kv_cache_quant_algo"] = "FP8"
    (base / "config.json").write_text(json.dumps(cfg))
    w = load_file(base / "rank0.safetensors")
    attn = "transformer.layers.{}.attention."
    w |= {attn.format(n) + "kv_cache_scaling_factor": torch.ones(1) for n in range(cfg["num_hidden_layers"])}
    save_file(w | {attn.format(0) + "k_cache_scaling_factor": torch.ones(1),
                   attn.format(1) + "v_cache_scaling_factor": torch.ones(1)}, base / "rank0.safetensors")
    missing = f"{attn.format(0)}v_cache_scaling_factor, {attn.format(1)}k_cache_scaling_factor"
    assert inspect_checkpoint(base).problems == [f"rank0: missing tensors {missing}"]
    drafter = make_drafter(tmp_path / "drafter", fp8_models["llama"])
    with pytest.raises(TensorError, match=f"rank 0: missing tensors: {missing}: "):
        convert(base, drafter, tmp_path / "out")
    save_file(w | {attn.format(0) + k: torch.ones(1) for k in ("k_cache_scaling_factor", "v_cache_scaling_factor")},
              base / "rank0.safetensors")
    assert inspect_checkpoint(base).problems == []
    convert(base, drafter, tmp_path / "out")


def test_inspect_accepts_fp8_weights_stored_as_int8_as_convert_and_tensorrt_llm_do(fp8_base, tmp_path):
    """A review: inspect refused an FP8 base whose FP8 weights are stored as int8 ("is I8, config implies float8"),
    though convert attaches to it and TensorRT-LLM's preprocess_perlayer_weights views int8 `*weight` tensors as FP8.
    It now agrees, and --values looks for FP8's NaN in their bits; int8 anywhere else is still named."""
    import shutil

    from safetensors.torch import save_file

    base = Path(shutil.copytree(fp8_base, tmp_path / "base"))
    fp8 = load_file(base / "rank0.safetensors")
    as_int8 = {k: v.view(torch.int8) if v.dtype == torch.float8_e4m3fn else v for k, v in fp8.items()}
    save_file(as_int8, base / "rank0.safetensors")
    assert inspect_checkpoint(base, values=True).problems == []
    name = "transformer.layers.1.mlp.proj.weight"
    bits = as_int8[name].clone()
    bits[3, 5] = 0x7F  # +NaN as FP8
    save_file(as_int8 | {name: bits}, base / "rank0.safetensors")
    assert any(name in p and "NaN" in p for p in inspect_checkpoint(base, values=True).problems)
    scale = next(k for k, v in fp8.items() if k.endswith("scaling_factor"))
    save_file(as_int8 | {scale: torch.zeros_like(fp8[scale], dtype=torch.int8)}, base / "rank0.safetensors")
    assert any(f"{scale} is I8" in p for p in inspect_checkpoint(base).problems)


def test_attach_to_fp8_base_with_an_fp8_nan_is_refused(fp8_models, fp8_base, tmp_path):
    """A review: convert's NaN check skipped FP8 tensors (all_finite called e4m3fn always finite), so an FP8 base
    weight holding NaN (bits S.1111.111) was copied into a checkpoint that `inspect --values` then flagged, though
    the README says convert refuses NaN anywhere. It is refused now, naming the tensor, and nothing is written."""
    import shutil

    from safetensors.torch import save_file

    base = Path(shutil.copytree(fp8_base, tmp_path / "base"))
    weights = load_file(base / "rank0.safetensors")
    name = "transformer.layers.1.mlp.proj.weight"
    bits = weights[name].view(torch.uint8).clone()
    bits[3, 5] = 0xFF  # -NaN
    save_file(weights | {name: bits.view(torch.float8_e4m3fn)}, base / "rank0.safetensors")
    with pytest.raises(TensorError, match=f"{name} holds NaN or Inf"):
        convert(base, make_drafter(tmp_path / "drafter", fp8_models["llama"]), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_inspect_of_an_fp8_checkpoint_checks_exclusions_and_ends_on_absurd_drafter_layers(fp8_models, tmp_path):
    """Drafter modules left out of exclude_modules are named. A review: with a hand-edited redrafter_num_layers of
    10**9, inspect of an FP8 checkpoint never ended (it listed two module names per drafter layer before looking at
    the rank file, which cannot hold such layers); it is run here in a process allowed 3 GB of address space more
    than it holds once imported (a limit set before the import failed there for torch's CUDA build, whose libraries
    alone map more: `libcurand.so.10: failed to map segment`)."""
    import subprocess

    hf_dir = fp8_models["llama"]
    out = Path(convert(hf_dir, make_drafter(tmp_path / "drafter", hf_dir), tmp_path / "out", dtype="bfloat16",
                       quantize="fp8", **CALIB))
    cfg = json.loads((out / "config.json").read_text())
    edited = cfg | {"quantization": cfg["quantization"] | {"exclude_modules": ["lm_head"]}}
    (out / "config.json").write_text(json.dumps(edited))
    assert any("exclude_modules lacks drafter" in p for p in inspect_checkpoint(out).problems)
    (out / "config.json").write_text(json.dumps(cfg | {"redrafter_num_layers": 10 ** 9}))
    code = ("import re, resource, sys; from redrafter_trt.checkpoint import inspect_checkpoint; "
            "held = int(re.search(r'VmSize:\\s+(\\d+) kB', open('/proc/self/status').read()).group(1)) << 10; "
            "resource.setrlimit(resource.RLIMIT_AS, (held + (3 << 30),) * 2); "
            "print(inspect_checkpoint(sys.argv[1]).problems)")
    done = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "redrafter_num_layers is 1000000000" in done.stdout, done.stderr[-2000:]


def test_smollm2_fp8(smollm2, tmp_path):
    drafter = make_drafter(tmp_path / "drafter", smollm2)
    out = convert(smollm2, drafter, tmp_path / "out", tp_size=1, dtype="bfloat16", quantize="fp8", **CALIB)
    assert_fp8_checkpoint(Path(out), smollm2, drafter, dtype="bfloat16", kv_fp8=False)
    assert json.loads((Path(out) / "config.json").read_text())["rotary_base"] == 100000.0


@pytest.mark.parametrize("hf, want", [
    ({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "rms_norm_eps": 1e-5, "intermediate_size": 8,
      "rope_parameters": {"rope_theta": 500000.0, **LLAMA3_SCALING}},
     {"rotary_base": 500000.0, "rotary_scaling": LLAMA3_SCALING}),
    ({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "rms_norm_eps": 1e-5, "intermediate_size": 8,
      "rope_theta": 100000.0},
     {"rotary_base": 100000.0, "rotary_scaling": None}),
    ({"architectures": ["Qwen2ForCausalLM"], "model_type": "qwen2", "rms_norm_eps": 1e-6, "intermediate_size": 8,
      "rope_theta": 1000000.0, "rope_scaling": None},
     {"rotary_base": 1000000.0, "rotary_scaling": None, "qwen_type": "qwen2", "norm_epsilon": 1e-6,
      "attn_bias": True, "mlp_bias": False, "seq_length": 8192}),
    ({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "intermediate_size": 8, "attention_bias": True,
      "mlp_bias": True},  # modelopt writes `bias: true`, which TensorRT-LLM's LLaMAConfig does not read
     {"attn_bias": True, "mlp_bias": True}),
    ({"architectures": ["MistralForCausalLM"], "model_type": "mistral", "intermediate_size": 8, "mlp_bias": True},
     {"attn_bias": False, "mlp_bias": False}),  # MistralForCausalLM reads neither flag: no biases
])
def test_patch_exported_config(hf, want):
    """Also: intermediate_size is the HF config's whatever modelopt exported, and architecture TensorRT-LLM's name
    (LlamaForCausalLM for a Mistral, as the unquantised path writes), both pinned as literals."""
    exported = {"rotary_base": None, "rotary_scaling": None, "norm_epsilon": 1e-5, "intermediate_size": 6,
                "architecture": hf["architectures"][0],
                "quantization": {"quant_algo": "FP8", "kv_cache_quant_algo": "FP8", "exclude_modules": ["lm_head"]}}
    got = patch_exported_config(exported, hf, kv_cache_dtype=None)
    assert {k: got[k] for k in want} == want
    trtllm = {"LlamaForCausalLM": "LlamaForCausalLM", "MistralForCausalLM": "LlamaForCausalLM",
              "Qwen2ForCausalLM": "Qwen2ForCausalLM"}
    assert (got["intermediate_size"], got["architecture"]) == (8, trtllm[hf["architectures"][0]])
    assert exported["intermediate_size"] == 6  # pure
    assert got["quantization"]["kv_cache_quant_algo"] is None
    assert exported["rotary_base"] is None  # pure


def test_fp8_quant_config_adds_the_kv_cache_in_either_modelopt_layout():
    """modelopt before 0.4x keeps `quant_cfg` as a dict, 0.47 as an ordered list whose later entries win: the FP8 KV
    cache's quantizers are added to FP8_DEFAULT_CFG's in either (in the list after its leading "*": disabled), and
    modelopt's own configs, module globals, are left as they were (else the next conversion in the process would get an
    FP8 KV cache it did not ask for). The installed modelopt has one layout: stand-ins give both (a mutant replacing
    the dict's defaults with the KV cache's survived)."""
    import copy
    from types import SimpleNamespace

    import modelopt.torch.quantization as mtq

    fp8, kv = {"num_bits": (4, 3), "axis": None}, {"num_bits": (4, 3), "axis": None, "enable": True}
    old = SimpleNamespace(FP8_DEFAULT_CFG={"quant_cfg": {"*weight_quantizer": fp8, "*input_quantizer": fp8,
                                                         "*lm_head*": {"enable": False}, "default": {"enable": False}},
                                           "algorithm": "max"},
                          FP8_KV_CFG={"quant_cfg": {"*[kv]_bmm_quantizer": kv}, "algorithm": "max"})
    new = SimpleNamespace(FP8_DEFAULT_CFG={"quant_cfg": [{"quantizer_name": "*", "enable": False},
                                                         {"quantizer_name": "*weight_quantizer", "cfg": fp8},
                                                         {"quantizer_name": "*lm_head*", "enable": False}],
                                           "algorithm": "max"},
                          FP8_KV_CFG={"quant_cfg": [{"quantizer_name": "*[kv]_bmm_quantizer", "cfg": fp8}]})
    for modelopt in (old, new, mtq):
        default, kv_cfg = copy.deepcopy(modelopt.FP8_DEFAULT_CFG), copy.deepcopy(modelopt.FP8_KV_CFG)
        assert fp8_quant_config(modelopt, None) == default
        got = fp8_quant_config(modelopt, "fp8")
        if isinstance(default["quant_cfg"], dict):
            assert got == default | {"quant_cfg": default["quant_cfg"] | kv_cfg["quant_cfg"]}
        else:
            assert got == default | {"quant_cfg": default["quant_cfg"] + kv_cfg["quant_cfg"]}
        assert (modelopt.FP8_DEFAULT_CFG, modelopt.FP8_KV_CFG) == (default, kv_cfg)  # untouched


def test_calibration_prompts(tmp_path, caplog):
    default = calibration_prompts(None, 1000)
    assert len(default) == 64 and all(isinstance(p, str) and p.strip() for p in default)
    assert calibration_prompts(None, 16) == default[:16]
    custom = tmp_path / "calib.jsonl"
    custom.write_text('{"prompt": "one"}\n{"turns": ["two", "x"]}\n')
    assert calibration_prompts(custom, 8) == ["one", "two"]
    caplog.clear()  # a set holding exactly --calib-size prompts is no shortfall (a mutant warning then survived)
    with caplog.at_level("WARNING", logger="redrafter_trt.quantize"):
        assert calibration_prompts(custom, 2) == ["one", "two"] and calibration_prompts(None, 64) == default
    assert not caplog.records, caplog.text
    with pytest.raises(ConfigError, match="calib-size"):
        calibration_prompts(None, 0)


def test_fp8_bad_input(tiny_llama, tiny_drafter, tmp_path, monkeypatch):
    out = tmp_path / "out"
    with pytest.raises(ConfigError, match="int4"):
        convert(tiny_llama, tiny_drafter, out, quantize="int4")
    # an FP8 drafter: the drafter is always in the config dtype (matched in full: convert's later "--dtype fp8 is
    # invalid" says fp8 too, and a mutant dropping this refusal survived)
    with pytest.raises(ConfigError, match="^--dtype fp8 would make the drafter FP8"):
        convert(tiny_llama, tiny_drafter, out, quantize="fp8", dtype="fp8")
    with pytest.raises(ConfigError, match="^unknown --kv-cache-dtype 'int8'"):  # else written with no FP8 KV cache
        convert(tiny_llama, tiny_drafter, out, quantize="fp8", kv_cache_dtype="int8", dtype="bfloat16")
    with pytest.raises(ConfigError, match="quantize fp8"):
        convert(tiny_llama, tiny_drafter, out, kv_cache_dtype="fp8")
    with pytest.raises(ConfigError, match="float32 cannot carry an FP8 checkpoint"):
        convert(tiny_llama, tiny_drafter, out, quantize="fp8", dtype="float32")
    monkeypatch.setitem(sys.modules, "modelopt.torch.quantization", None)  # as if nvidia-modelopt were absent
    for dtype in ("bfloat16", "auto"):  # auto on this float32 base: float16, as TensorRT-LLM's infer_dtype
        with pytest.raises(DependencyError, match=r"redrafter-trt\[fp8\]"):
            convert(tiny_llama, tiny_drafter, out, quantize="fp8", dtype=dtype)
    assert not out.exists()


@pytest.mark.parametrize("quantize, kv, dtype, said", [
    ("fp8", None, "FP8", "--dtype FP8 would make the drafter FP8"),  # in any case
    ("fp8", None, "float8_e4m3fn", "--dtype float8_e4m3fn would make the drafter FP8"),
    (None, None, "e4m3", "--dtype e4m3 would make the drafter FP8"),  # without --quantize too
    ("fp8", "int8", "bfloat16", "unknown --kv-cache-dtype 'int8': supported is fp8"),
    (None, "fp8", None, "--kv-cache-dtype fp8 needs FP8 weights: add --quantize fp8"),
])
def test_check_quantize_options_refuses_each_option_the_fp8_path_cannot_do(quantize, kv, dtype, said):
    """Each of check_quantize_options' refusals, in its own words: every FP8 alias of --dtype (a drafter is never
    FP8), an unknown KV cache dtype (convert wrote a checkpoint whose KV cache stayed in the model dtype), an FP8 KV
    cache without FP8 weights. convert refuses some of these again later in vaguer words ("--dtype FP8 is invalid"),
    so mutants dropping these checks survived the convert tests."""
    with pytest.raises(ConfigError, match=f"^{re.escape(said)}"):
        check_quantize_options(quantize, kv, dtype)
    check_quantize_options("fp8", "fp8", "bfloat16")
    check_quantize_options(None, None, "auto")


def test_dtype_auto_makes_an_fp8_checkpoint_of_a_float32_base_float16(fp8_models, tmp_path):
    """--dtype auto on a float32 base, for FP8: float16, as TensorRT-LLM's infer_dtype maps float32 (a mutant
    answering bfloat16 survived every test: the others pass a dtype)."""
    hf_dir = fp8_models["llama"]
    assert json.loads((hf_dir / "config.json").read_text())["dtype"] == "float32"
    out = Path(convert(hf_dir, make_drafter(tmp_path / "drafter", hf_dir), tmp_path / "out", quantize="fp8", **CALIB))
    assert json.loads((out / "config.json").read_text())["dtype"] == "float16"
    w = load_file(out / "rank0.safetensors")
    assert w["lm_head.weight"].dtype == w["drafter.lm_head.weight"].dtype == torch.float16


def test_fp8_of_a_qwen3_tp_its_attention_misreads_is_refused_before_calibrating(tmp_path, monkeypatch):
    """A review: export_fp8_base passed a Qwen3 with as many kv heads as heads at tp 2 to check_tp, which let it through
    (its qk_norm flag only trimmed the sizes named): the base was loaded and calibrated before the written checkpoint
    was refused. check_tp refuses it first, naming the tp that converts."""
    import transformers

    def never(*args, **kwargs):
        raise AssertionError("the model was loaded before its tp was checked")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", never)
    base = make_hf(tmp_path / "b", "qwen3", num_key_value_heads=4, head_dim=32)
    with pytest.raises(ConfigError, match=r"--tp-size 2 is refused: a Qwen3 with 4 heads and 4 kv heads.*--tp-size 4$"):
        export_fp8_base(base, tmp_path / "out", tp_size=2, dtype="bfloat16", kv_cache_dtype=None, calib_prompts=["a"],
                        calib_size=1, calib_seq_len=8, calib_batch_size=1, device="cpu")


@pytest.mark.parametrize("given, said", [
    (dict(calib_batch_size=0), "--calib-size, --calib-seq-len and --calib-batch-size must be 1 or more"),
    (dict(calib_seq_len=0), "--calib-size, --calib-seq-len and --calib-batch-size must be 1 or more"),
    (dict(calib_prompts=[]), "FP8 calibration needs at least one prompt"),
    (dict(device="cuda:1"), "--device cuda:1 but no CUDA device is visible: use --device cpu"),
])
def test_export_fp8_base_refuses_a_calibration_it_cannot_run_before_loading_the_model(tiny_llama, tmp_path, monkeypatch,
                                                                                      given, said):
    """export_fp8_base's own checks, for a caller other than convert (whose options are checked before): batches of
    0 prompts (`range`'s ValueError), no prompt at all, a CUDA device named with its index where none is visible. Each
    is a ConfigError in its own words before the model loads; mutants dropping them survived (their callers then
    failed on the missing tokenizer, or inside torch)."""
    import transformers

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained",
                        lambda *a, **k: pytest.fail("the model was loaded"))
    args = dict(tp_size=1, dtype="bfloat16", kv_cache_dtype=None, calib_prompts=["a"], calib_size=1, calib_seq_len=8,
                calib_batch_size=1, device="cpu") | given
    with pytest.raises(ConfigError, match=f"^{re.escape(said)}"):
        export_fp8_base(tiny_llama, tmp_path / "out", **args)
    assert not (tmp_path / "out").exists()


def test_export_fp8_base_calibrates_on_the_first_calib_size_prompts(fp8_models, tmp_path, monkeypatch):
    """calib_size cuts the prompts export_fp8_base is given (convert's are cut already; a library caller's may not
    be): a mutant calibrating on all of them survived."""
    from redrafter_trt import quantize

    real, seen = quantize.forward_loop, []

    def spy(tokenizer, prompts, *args):
        seen.append(list(prompts))
        return real(tokenizer, prompts, *args)

    monkeypatch.setattr(quantize, "forward_loop", spy)
    export_fp8_base(fp8_models["llama"], tmp_path / "out", tp_size=1, dtype="bfloat16", kv_cache_dtype=None,
                    calib_prompts=["one two", "three four", "five six"], calib_size=2, calib_seq_len=8,
                    calib_batch_size=2, device="cpu")
    assert seen == [["one two", "three four"]]


@pytest.mark.parametrize("model", ["qwen2", "qwen3"])
def test_a_qwen_base_is_exported_as_modelopts_llama_decoder(fp8_models, tmp_path, monkeypatch, model):
    """modelopt before 0.44 exports decoder type "qwen" only through an installed TensorRT-LLM, raising
    NotImplementedError after calibrating without one; "llama" gives the same tensors (test_modelopt_oracle.py). The
    installed modelopt exports "qwen" too, so a mutant asking for it survived: an export that only knows "llama",
    as those releases' without TensorRT-LLM, stands in here."""
    from redrafter_trt import quantize

    mtq, export = quantize.require_modelopt()

    def old_export(model, decoder, **kwargs):
        if decoder != "llama":
            raise NotImplementedError(f"Cannot export tensorrt_llm checkpoint for model {decoder}")
        export(model, decoder, **kwargs)

    monkeypatch.setattr(quantize, "require_modelopt", lambda: (mtq, old_export))
    export_fp8_base(fp8_models[model], tmp_path / "out", tp_size=1, dtype="bfloat16", kv_cache_dtype=None,
                    calib_prompts=["hello world"], calib_size=1, calib_seq_len=8, calib_batch_size=1, device="cpu")
    assert json.loads((tmp_path / "out" / "config.json").read_text())["qwen_type"] == model


def test_an_old_modelopt_is_refused_in_one_line_before_loading_the_model(fp8_models, tiny_drafter, tmp_path,
                                                                         monkeypatch):
    """modelopt 0.33 (TensorRT-LLM 1.0's, still a container's own after pip installs this package) under
    transformers >= 4.56 quantised no KV cache: `--kv-cache-dtype fp8` wrote `kv_cache_quant_algo: null`, silently.
    setup.cfg said nvidia-modelopt>=0.27; one older than quantize.MODELOPT_MIN is now refused (exit 2)."""
    import modelopt
    import transformers
    from test_convert_errors import assert_one_line_error, run_cli

    def never(*args, **kwargs):
        raise AssertionError("the model was loaded before modelopt's version was checked")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", never)
    monkeypatch.setattr(modelopt, "__version__", "0.33.1")
    out = tmp_path / "out"
    result = run_cli("convert", "--base", fp8_models["llama"], "--drafter", tiny_drafter, "--output", out,
                     "--quantize", "fp8", "--kv-cache-dtype", "fp8", "--dtype", "bfloat16")
    assert_one_line_error(result, "nvidia-modelopt 0.35 or newer", "installed 0.33.1",
                          "pip install 'nvidia-modelopt>=0.35'")
    assert not out.exists()


def test_the_oldest_supported_modelopt_is_accepted(monkeypatch):
    """MODELOPT_MIN is the oldest modelopt the FP8 path runs with (setup.cfg's floor): that release itself, as its
    package reports it (0.35.0), is accepted and the one before it refused (a `<=` refusing the floor survived)."""
    import modelopt

    from redrafter_trt import quantize

    major, minor = map(int, quantize.MODELOPT_MIN.split("."))
    monkeypatch.setattr(modelopt, "__version__", f"{major}.{minor}.0")
    mtq, export = quantize.require_modelopt()
    assert callable(mtq.quantize) and callable(export)
    monkeypatch.setattr(modelopt, "__version__", f"{major}.{minor - 1}.1")
    with pytest.raises(DependencyError, match=f"installed {major}.{minor - 1}.1"):
        quantize.require_modelopt()


@pytest.mark.parametrize("base", ["tiny_llama", "tiny_qwen2"])
def test_fp8_without_tokenizer_fails_before_loading_the_model(request, base, tiny_drafter, tmp_path, monkeypatch):
    """A base folder without a tokenizer is refused before the model loads (minutes to hours for a large one). For
    Qwen2, transformers 5 loads an empty tokenizer instead of failing: calibration fed modelopt zero tokens, a
    RuntimeError traceback ("cannot reshape tensor of 0 elements")."""
    import transformers

    base = request.getfixturevalue(base)

    def never(*args, **kwargs):
        raise AssertionError("the model was loaded before the tokenizer was checked")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", never)
    with pytest.raises(ConfigError, match="no usable tokenizer"):
        convert(base, tiny_drafter, tmp_path / "out", quantize="fp8", dtype="bfloat16")
    assert not (tmp_path / "out").exists()


def test_fp8_with_a_tokenizer_that_makes_no_tokens_fails_before_loading_the_model(tiny_llama, tiny_drafter, tmp_path,
                                                                                 monkeypatch):
    """A tokenizer that loads but turns text into no tokens (here a BPE with no byte in its vocabulary; transformers 5
    made one for a Qwen2 folder without a tokenizer) is refused before the model loads: calibration fed modelopt zero
    tokens ("cannot reshape tensor of 0 elements"). The test above no longer reaches this check (a folder without
    tokenizer files is refused earlier), so a mutant dropping it survived."""
    import shutil

    import transformers
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    base = Path(shutil.copytree(tiny_llama, tmp_path / "base"))
    tok = Tokenizer(models.BPE(vocab={"<eos>": 0}, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>").save_pretrained(base)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained",
                        lambda *a, **k: pytest.fail("the model was loaded before the tokenizer was checked"))
    with pytest.raises(ConfigError, match=r"no usable tokenizer for FP8 calibration \(it turns text into no tokens\)"):
        convert(base, tiny_drafter, tmp_path / "out", quantize="fp8", dtype="bfloat16")
    assert not (tmp_path / "out").exists()


def test_fp8_checks_the_base_tensors_before_loading_the_model(tiny_llama, tiny_drafter, tmp_path, monkeypatch):
    """A base lacking a tensor was calibrated anyway (transformers initialises a missing weight at random, with a
    warning): a garbage FP8 checkpoint. Its tensors are now checked against its config first, as without --quantize."""
    import shutil

    import transformers
    from safetensors.torch import save_file

    base = byte_tokenizer(Path(shutil.copytree(tiny_llama, tmp_path / "base")))
    weights = load_file(base / "model.safetensors")
    del weights["model.layers.1.mlp.down_proj.weight"]
    save_file(weights, base / "model.safetensors", metadata={"format": "pt"})
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained",
                        lambda *a, **k: pytest.fail("the model was loaded with a tensor missing"))
    with pytest.raises(TensorError, match="missing tensors: model.layers.1.mlp.down_proj.weight"):
        convert(base, tiny_drafter, tmp_path / "out", quantize="fp8", dtype="bfloat16")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("dtype, value, said", [
    ("bfloat16", float("nan"), "holds NaN or Inf: the base's weights are broken; re-download it"),
    ("float16", 1e6, "holds Inf in float16: finite as stored (F32), its values exceed float16's range (largest "
                     "65504): convert with --dtype bfloat16")])  # float32 is no dtype FP8 keeps
def test_fp8_of_a_base_holding_nan_names_its_tensor_before_calibrating(tiny_llama, tiny_drafter, tmp_path,
                                                                       monkeypatch, dtype, value, said):
    """A review: a NaN in a Hugging Face base was calibrated, then refused under the exported TensorRT-LLM name
    (transformer.layers.1.mlp.proj.weight) with a TensorRT-LLM base's fix, 're-export them'. The loaded model's weights
    are checked before calibrating: the Hugging Face tensor and its file are named, as without --quantize; a value
    beyond float16's range (finite in the file) is named as one."""
    import shutil

    from safetensors.torch import save_file

    import modelopt.torch.quantization as mtq

    base = byte_tokenizer(Path(shutil.copytree(tiny_llama, tmp_path / "base")))
    weights = load_file(base / "model.safetensors")
    name = "model.layers.1.mlp.down_proj.weight"
    weights[name][1, 2] = value
    save_file(weights, base / "model.safetensors", metadata={"format": "pt"})
    monkeypatch.setattr(mtq, "quantize", lambda *a, **k: pytest.fail("a base holding NaN was calibrated"))
    where = f"base {base / 'model.safetensors'}: " if dtype == "bfloat16" else ""
    with pytest.raises(TensorError) as e:
        convert(base, tiny_drafter, tmp_path / "out", quantize="fp8", dtype=dtype)
    assert str(e.value) == f"{where}{name} {said}"
    assert not (tmp_path / "out").exists()


def test_a_weight_not_finite_only_once_loaded_in_bfloat16_is_not_said_beyond_float16(tiny_llama):
    """The check before calibrating said any weight finite in its file "exceeds float16's range" whatever dtype the
    base was loaded in, then (a review) that "the source weights are broken, re-export them", though finite in the
    file: a float32 value beyond bfloat16's range (3.39e38), which no dtype FP8 keeps holds."""
    from redrafter_trt import quantize
    from redrafter_trt.hf_model import load_causal_lm

    model = load_causal_lm(tiny_llama, torch.bfloat16)
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight[1, 2] = float("inf")  # finite in the file
    with pytest.raises(TensorError) as e:
        quantize._check_finite(model, tiny_llama, torch.bfloat16)
    assert str(e.value) == ("model.layers.1.mlp.down_proj.weight holds Inf in bfloat16: finite as stored (F32), its "
                            "values exceed bfloat16's range (largest 3.38953e+38): no dtype it converts to holds them: "
                            "fix the model")


def test_modelopt_prints_stay_off_stdout(fp8_models, tmp_path, capfd, caplog):
    """A review: `convert --quantize fp8` printed modelopt's `Inserted 24 quantizers` and `current rank: 0, ...` on
    stdout, the CLI's output, around its own `wrote` line; they are debug log lines now."""
    caplog.set_level("DEBUG", logger="redrafter_trt.quantize")
    export_fp8_base(fp8_models["llama"], tmp_path / "fp8", tp_size=1, dtype="bfloat16", kv_cache_dtype=None,
                    calib_prompts=["hello world"] * 2, calib_size=2, calib_seq_len=8, calib_batch_size=2, device="cpu")
    assert capfd.readouterr().out == ""
    assert "modelopt: Inserted" in caplog.text


def test_misleading_modelopt_warnings_stay_off_screen(fp8_models, tmp_path, recwarn):
    """modelopt says "Enable lm_head quantization" on every export; the exported lm_head is not FP8 (checked above),
    so a convert must not tell the user it is."""
    export_fp8_base(fp8_models["llama"], tmp_path / "fp8", tp_size=1, dtype="bfloat16", kv_cache_dtype=None,
                    calib_prompts=["hello world"] * 2, calib_size=2, calib_seq_len=8, calib_batch_size=2, device="cpu")
    said = [str(w.message) for w in recwarn.list]
    assert not [m for m in said if "lm_head quantization" in m or "Cannot export tensorrt_llm" in m], said


@pytest.mark.parametrize("kv, dropped", [(None, "quant_algo"), ("fp8", "kv_cache_quant_algo")])
def test_an_export_that_is_not_fp8_is_refused(fp8_models, tiny_drafter, tmp_path, monkeypatch, kv, dropped):
    """A modelopt that does not quantise what was asked writes it null in config.json (0.33 under transformers >=
    4.56 did so for the KV cache) and its tensors follow: convert wrote that checkpoint, silently not FP8 (or without
    the FP8 KV cache asked for). The export is now checked: a one-line DependencyError, nothing written."""
    import redrafter_trt.quantize as quantize

    mtq, export = quantize.require_modelopt()

    def export_without(model, decoder, **kwargs):  # a modelopt that did not apply `dropped`
        export(model, decoder, **kwargs)
        path = Path(kwargs["export_dir"]) / "config.json"
        cfg = json.loads(path.read_text())
        cfg["quantization"][dropped] = None
        path.write_text(json.dumps(cfg))

    monkeypatch.setattr(quantize, "require_modelopt", lambda: (mtq, export_without))
    out = tmp_path / "out"
    with pytest.raises(DependencyError, match=rf"exported quantization.{dropped} null, not \"FP8\""):
        convert(fp8_models["llama"], tiny_drafter, out, quantize="fp8", kv_cache_dtype=kv, dtype="bfloat16", **CALIB)
    assert not out.exists()


@pytest.mark.parametrize("quantization, kv, said", [
    ({"quant_algo": "FP8_PER_CHANNEL_PER_TOKEN", "kv_cache_quant_algo": None}, None,
     'quantization.quant_algo "FP8_PER_CHANNEL_PER_TOKEN"'),
    ({"quant_algo": "FP8", "kv_cache_quant_algo": "INT8"}, "fp8", 'quantization.kv_cache_quant_algo "INT8"'),
    (None, None, "quantization.quant_algo null"),
    ("absent", "fp8", "quantization.quant_algo null and quantization.kv_cache_quant_algo null"),
])
def test_an_export_is_fp8_only_when_it_says_fp8(quantization, kv, said):
    """check_exported_quantization wants "FP8" itself, not any algorithm modelopt names (a per-channel FP8 or an INT8
    KV cache is not what was asked, nor the per-tensor layout the converter and inspect expect), and refuses a
    config.json without a quantization block in the same one line, not with a TypeError or KeyError. Mutants
    accepting any non-null value, or reading the block unguarded, survived the null-only test above."""
    cfg = {} if quantization == "absent" else {"quantization": quantization}
    with pytest.raises(DependencyError, match=f"exported {re.escape(said)}, not \"FP8\""):
        check_exported_quantization(cfg, kv)
    check_exported_quantization({"quantization": {"quant_algo": "FP8", "kv_cache_quant_algo": None}}, None)
    check_exported_quantization({"quantization": {"quant_algo": "FP8", "kv_cache_quant_algo": "FP8"}}, "fp8")


def test_the_producer_block_records_the_calibration_prompts_used(fp8_models, tmp_path, caplog):
    """A review: `convert --calib-size 65` over the 64 shipped prompts warned "using all 64" and recorded calib_size 65
    in producer.options; it records the 64 calibrated on (options hold the values used: tp_size, FP8's defaults)."""
    custom = tmp_path / "calib.jsonl"
    custom.write_text('{"prompt": "one two three"}\n')
    hf_dir = fp8_models["qwen2"]
    drafter = make_drafter(tmp_path / "drafter", hf_dir)
    with caplog.at_level("WARNING", logger="redrafter_trt.quantize"):
        out = convert(hf_dir, drafter, tmp_path / "out", dtype="bfloat16", quantize="fp8", calib_data=str(custom),
                      calib_size=2, calib_seq_len=8, calib_batch_size=1, device="cpu")
    assert "using all 1" in caplog.text, caplog.text
    options = json.loads((Path(out) / "config.json").read_text())["producer"]["options"]
    assert (options["calib_size"], options["calib_seq_len"], options["calib_batch_size"]) == (1, 8, 1)


def test_a_short_calibration_file_is_named_not_calib_data(tmp_path, caplog):
    """A --calib-data file holding fewer prompts than --calib-size was answered 'pass --calib-data FILE for more', the
    flag the user had passed; the hint now names their file (the shipped set's still names --calib-data)."""
    custom = tmp_path / "calib.jsonl"
    custom.write_text('{"prompt": "one"}\n')
    with caplog.at_level("WARNING", logger="redrafter_trt.quantize"):
        assert calibration_prompts(custom, 8) == ["one"]
    assert f"holds 1 prompts, not the 8 asked for: using all 1 (add prompts to {custom} for more, or lower " \
           "--calib-size)" in caplog.text, caplog.text
    assert "--calib-data" not in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="redrafter_trt.quantize"):
        calibration_prompts(None, 1000)
    assert "(pass --calib-data FILE for more, or lower --calib-size)" in caplog.text, caplog.text


def calibrated_scales(out: Path) -> dict[str, float]:
    """The scales calibration sets (activations, KV cache) in a tp-1 checkpoint, by tensor name."""
    return {k: v.item() for k, v in load_file(out / "rank0.safetensors").items()
            if k.endswith(("activation_scaling_factor", "kv_cache_scaling_factor"))}


def export_scales(hf_dir: Path, out: Path, *, batch_size: int, kv_cache_dtype: str | None = None,
                  prompts: list[str] | None = None) -> dict:
    """Calibrated over `prompts` (4 shipped ones by default), 400 tokens long at most: of different lengths, so a batch
    of more than one is padded."""
    prompts = prompts or calibration_prompts(None, 4)
    export_fp8_base(hf_dir, out, tp_size=1, dtype="bfloat16", kv_cache_dtype=kv_cache_dtype, calib_prompts=prompts,
                    calib_size=len(prompts), calib_seq_len=400, calib_batch_size=batch_size, device="cpu")
    return calibrated_scales(out)


def test_a_pad_token_outside_the_vocabulary_calibrates_as_one_inside(fp8_models, tmp_path):
    """A review: a tokenizer given a pad token of its own (`add_special_tokens({'pad_token': '<pad>'})`: id 256 on a
    256-token model) crashed `convert --quantize fp8` with an IndexError in the embedding once a batch needed padding.
    Padded positions are masked, so any id in the vocabulary pads them: the scales are those of an in-range pad."""
    import shutil

    from transformers import AutoTokenizer

    hf_dir = Path(shutil.copytree(fp8_models["llama"], tmp_path / "hf"))
    tok = AutoTokenizer.from_pretrained(hf_dir)
    tok.add_special_tokens({"pad_token": "<pad>"})
    tok.save_pretrained(hf_dir)
    assert AutoTokenizer.from_pretrained(hf_dir).pad_token_id == 256
    assert export_scales(hf_dir, tmp_path / "out", batch_size=4) == \
        pytest.approx(export_scales(fp8_models["llama"], tmp_path / "in_range", batch_size=4))


def padding_heavy_llama(folder: Path) -> Path:
    """A tiny Llama whose padded positions, left alone, set layer 0's largest activation, key and value: every token
    embeds 0.1 on channel 0 (about 4.3 once normed) but the padding's (id 0, `!`) embeds there alone (8 once normed),
    and layer 0's k_proj and v_proj read channel 0 times 200, so real tokens' keys and values reach about 850 and a
    padded row's about 1600: both past 448, FP8's largest, where modelopt's KV cache scale (amax / 448) leaves its
    floor of 1."""
    from safetensors.torch import save_file

    from redrafter_trt.fp8_calibration import PAD_ID

    hf_dir = byte_tokenizer(make_hf(folder, "llama"))
    weights = load_file(hf_dir / "model.safetensors")
    embed = weights["model.embed_tokens.weight"]
    embed[:, 0] = 0.1
    embed[PAD_ID] = 0
    embed[PAD_ID, 0] = 1
    weights["model.layers.0.input_layernorm.weight"][0] = 1
    for proj in ("k_proj", "v_proj"):
        weights[f"model.layers.0.self_attn.{proj}.weight"][:, 0] = 200
    save_file(weights, hf_dir / "model.safetensors", metadata={"format": "pt"})
    return hf_dir


@pytest.mark.filterwarnings("ignore:.*Large KV activation detected")  # modelopt's, for the keys built large
def test_padding_does_not_move_the_calibrated_scales(tmp_path):
    """A review: calibration took its maxima over every position, padding included, which the engine never computes:
    on SmolLM2, layers.3.mlp.proj's activation scale came out 1.73x larger at --calib-batch-size 8 than at 1. Padded
    rows are now left out, and positions count from each prompt's first token: activation and KV cache scales at a
    batch size that pads are those at batch size 1, to float rounding. Five prompts at batch size 4: a padded batch,
    then one that is not (a mutant looking for padding in every batch, not any, kept it in)."""
    hf_dir = padding_heavy_llama(tmp_path / "hf")
    prompts = [p.replace("!", ".") for p in calibration_prompts(None, 5)]  # `!` is id 0: the padding's alone
    alone = export_scales(hf_dir, tmp_path / "b1", batch_size=1, kv_cache_dtype="fp8", prompts=prompts)
    padded = export_scales(hf_dir, tmp_path / "b4", batch_size=4, kv_cache_dtype="fp8", prompts=prompts)
    assert alone["transformer.layers.0.attention.kv_cache_scaling_factor"] > 1  # not modelopt's floor
    assert padded == pytest.approx(alone, rel=1e-6)


def test_calibration_positions_count_from_each_prompts_first_token():
    """A padded batch's position ids, pinned (a review: starting at 1, as the engine's never do, passed the padding
    test above, whose batches at size 1 and 4 were shifted alike): left-padded with PAD_ID, each row counts 0, 1, ...
    from its first real token, its padding at 0."""
    from redrafter_trt.fp8_calibration import PAD_ID, token_batches

    def tokenizer(prompt, truncation, max_length):  # one id a word
        return {"input_ids": [len(w) + 10 for w in prompt.split()][:max_length]}

    (ids, mask, positions), (ids2, mask2, positions2) = token_batches(
        tokenizer, ["a bb ccc", "dddd", "x y z w v u"], seq_len=5, batch_size=2)
    assert ids.tolist() == [[11, 12, 13], [PAD_ID, PAD_ID, 14]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert positions.tolist() == [[0, 1, 2], [0, 0, 0]]
    assert ids2.tolist() == [[11] * 5] and mask2.tolist() == [[1] * 5] and positions2.tolist() == [[0, 1, 2, 3, 4]]


def test_calibration_draws_no_progress_bar_where_stderr_is_not_a_terminal(tiny_llama, capsys):
    """FP8 calibration's bar drew '\\r' frames into a log file (`convert --quantize fp8 ... 2> log`), as convert's own
    bar does not (tqdm's disable=None: no bar off a terminal)."""
    from transformers import AutoModelForCausalLM

    from redrafter_trt.fp8_calibration import forward_loop

    def tokenizer(prompt, truncation, max_length):  # one id a word
        return {"input_ids": [len(w) + 10 for w in prompt.split()][:max_length]}

    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    capsys.readouterr()
    forward_loop(tokenizer, ["a bb ccc", "dd e ff", "x y z"], seq_len=8, batch_size=1, device="cpu")(model)
    err = capsys.readouterr().err
    assert "\r" not in err and "FP8 calibration" not in err, err


def test_calibration_leaves_no_hook_on_the_model(fp8_models):
    """The padding hooks go once calibration ends: one left on a quantizer kept the last batch's mask, and any later
    forward through the quantized model (another shape here) was refused or had rows zeroed (a mutant keeping them
    survived: export_fp8_base runs no forward after calibrating)."""
    import modelopt.torch.quantization as mtq
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from redrafter_trt.fp8_calibration import forward_loop

    hf_dir = fp8_models["llama"]
    model = AutoModelForCausalLM.from_pretrained(hf_dir).eval()
    loop = forward_loop(AutoTokenizer.from_pretrained(hf_dir), ["a bb ccc", "dd"], 16, 2, "cpu")  # one padded batch
    mtq.quantize(model, fp8_quant_config(mtq, "fp8"), forward_loop=loop)
    assert not [name for name, module in model.named_modules() if module._forward_pre_hooks]
    with torch.no_grad():
        assert model(input_ids=torch.tensor([[5, 6, 7, 8, 9]])).logits.shape == (1, 5, 256)


@pytest.mark.parametrize("token_axis, said", [
    ({"input_quantizer": 1, "k_bmm_quantizer": 2}, r"calibrates model\.layers\.0\.self_attn\.v_bmm_quantizer, which"),
    ({"input_quantizer": 1, "k_bmm_quantizer": 1, "v_bmm_quantizer": 2},
     r"gives model\.layers\.0\.self_attn\.k_bmm_quantizer a tensor of shape \(4, 2, \d+, 16\) for 4 prompts of \d+ "
     r"tokens, which"),
    ({"input_quantizer": 3, "k_bmm_quantizer": 2, "v_bmm_quantizer": 2},  # an axis the tensor lacks: not an IndexError
     r"gives model\.layers\.0\.self_attn\.q_proj\.input_quantizer a tensor of shape \(4, \d+, 64\) for 4 prompts of "
     r"\d+ tokens, which"),
])
def test_padding_fp8_calibration_cannot_find_is_refused(fp8_models, tmp_path, monkeypatch, token_axis, said):
    """A modelopt that calibrates a quantizer the padding hooks do not know, or gives one a tensor laid out otherwise,
    would count the padding again, silently: refused in one line, with batch size 1 (no padding) as the way out."""
    import redrafter_trt.fp8_calibration as fp8_calibration

    monkeypatch.setattr(fp8_calibration, "TOKEN_AXIS", token_axis)
    with pytest.raises(DependencyError, match=f"^nvidia-modelopt [^ ]+ {said} FP8 calibration cannot keep padding "
                                              r"out of: use --calib-batch-size 1 \(no padding\), or install another"):
        export_scales(fp8_models["llama"], tmp_path / "out", batch_size=4, kv_cache_dtype="fp8")
    assert export_scales(fp8_models["llama"], tmp_path / "alone", batch_size=1, kv_cache_dtype="fp8")
