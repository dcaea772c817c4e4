"""`redrafter-trt build`: the trtllm-build command for bf16 and FP8 checkpoints at tp 1 and 4 (checked against
TensorRT-LLM 1.2.x's own argument parser, transcribed below), the one-line errors, and, with a fake trtllm-build on
PATH, the streaming and the checks of the engine folder. The fake proves our plumbing only, not an engine build."""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import stat
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from redrafter_trt import build as build_mod, installed_trtllm
from redrafter_trt.build import BuildOptions, plan_build, run_streaming
from redrafter_trt.cli import main
from redrafter_trt.errors import ConfigError, DependencyError, RedrafterError
from tinymodels import make_drafter, make_hf


# ---- TensorRT-LLM 1.2.x's parser, for the flags we emit ----------------------------------------------------------
# tensorrt_llm/commands/build.py parse_arguments() and plugin/plugin.py add_plugin_argument(): names, types, choices.
def trtllm_12_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(exit_on_error=False)
    for flag in ("--checkpoint_dir", "--output_dir", "--input_timing_cache", "--output_timing_cache"):
        p.add_argument(flag, type=str)
    for flag in ("--max_batch_size", "--max_input_len", "--max_seq_len", "--max_beam_width", "--max_num_tokens",
                 "--opt_num_tokens", "--workers", "--max_draft_len", "--tokens_per_block"):
        p.add_argument(flag, type=int)
    p.add_argument("--speculative_decoding_mode", choices=["draft_tokens_external", "lookahead_decoding", "medusa",
                                                            "explicit_draft_tokens", "eagle"])
    p.add_argument("--kv_cache_type", choices=["continuous", "paged", "disabled"])  # KVCacheType.from_string
    p.add_argument("--gemm_plugin", choices=["auto", "float16", "float32", "bfloat16", "int32", "fp8", "nvfp4",
                                             "disable"])
    for flag in ("--context_fmha", "--remove_input_padding", "--use_paged_context_fmha", "--use_fp8_context_fmha",
                 "--multiple_profiles", "--use_fused_mlp"):
        p.add_argument(flag, choices=["enable", "disable"])
    return p


# ---- checkpoints --------------------------------------------------------------------------------------------------

def save_byte_tokenizer(folder: Path) -> None:
    """A 256-token byte-level tokenizer for the tiny models (vocab 256), so FP8 calibration can tokenise prompts."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE({ch: i for i, ch in enumerate(alphabet)}, []))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=alphabet[0]).save_pretrained(folder)


def _converted(tmp: Path, tp: int, fp8: bool) -> Path:
    """A real converted tiny checkpoint; FP8 through the real modelopt quantiser when it is there."""
    from redrafter_trt.convert import convert

    base = make_hf(tmp / "base", "llama")
    save_byte_tokenizer(base)
    drafter = make_drafter(tmp / "drafter", base)
    out = tmp / f"ckpt-{'fp8' if fp8 else 'bf16'}-tp{tp}"
    fp8_options = dict(quantize="fp8", calib_size=4, calib_seq_len=16, calib_batch_size=4) if fp8 else {}
    convert(base, drafter, out, tp_size=tp, dtype="bfloat16", **fp8_options)
    return out


def _mark_fp8(folder: Path) -> None:
    path = folder / "config.json"
    cfg = json.loads(path.read_text())
    try:
        from redrafter_trt.layout import required_exclusions
        exclude = ["lm_head", *required_exclusions(cfg)]
    except ImportError:
        exclude = ["lm_head", "drafter"]
    cfg["quantization"] = {"quant_algo": "FP8", "kv_cache_quant_algo": None, "exclude_modules": exclude}
    path.write_text(json.dumps(cfg))


def _handmade(tmp: Path, tp: int, fp8: bool) -> Path:
    """Until the converter lands: a ReDrafter config.json and empty rank files."""
    out = tmp / f"ckpt-{'fp8' if fp8 else 'bf16'}-tp{tp}"
    out.mkdir(parents=True)
    cfg = {"architecture": "ReDrafterForLLaMALM", "base_model_architecture": "LlamaForCausalLM", "dtype": "bfloat16",
           "mapping": {"world_size": tp, "tp_size": tp, "pp_size": 1},
           "quantization": {"quant_algo": None, "kv_cache_quant_algo": None, "exclude_modules": None},
           "redrafter_num_layers": 2, "redrafter_hidden_size": 64, "redrafter_exit_dim": 128,
           "redrafter_is_rnn": True, "redrafter_num_beams": 5, "redrafter_draft_len_per_beam": 5,
           "redrafter_greedy_search": True}
    (out / "config.json").write_text(json.dumps(cfg))
    for r in range(tp):
        (out / f"rank{r}.safetensors").write_bytes(b"")
    if fp8:
        _mark_fp8(out)
    return out


def _have(module: str, name: str) -> bool:
    try:
        return hasattr(__import__(module, fromlist=[name]), name)
    except ImportError:
        return False


HAVE_CONVERT = _have("redrafter_trt.convert", "convert")
HAVE_CHECKPOINT = _have("redrafter_trt.checkpoint", "require_valid")


@pytest.fixture(autouse=True)
def _validator(monkeypatch):
    """Until `checkpoint.require_valid` lands, build validates by reading config.json (the real check replaces this)."""
    if not HAVE_CHECKPOINT:
        monkeypatch.setattr(build_mod, "validate_checkpoint",
                            lambda d: json.loads((Path(d) / "config.json").read_text()))


@pytest.fixture(scope="session")
def checkpoints(tmp_path_factory):
    made = {}
    for fp8 in (False, True):
        for tp in (1, 4):
            tmp = tmp_path_factory.mktemp(f"build-{fp8}-{tp}")
            made[fp8, tp] = (_converted if HAVE_CONVERT else _handmade)(tmp, tp, fp8)
    return made


def invoke(*args: str, env: dict | None = None):
    return CliRunner().invoke(main, ["build", *args], env=env)


def one_line_error(result, *needles: str):
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


# ---- dry run ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("fp8", [False, True], ids=["bf16", "fp8"])
@pytest.mark.parametrize("tp", [1, 4])
def test_dry_run_command_fits_trtllm_12(checkpoints, tmp_path, fp8, tp):
    ckpt = checkpoints[fp8, tp]
    result = invoke("--checkpoint-dir", str(ckpt), "--output-dir", str(tmp_path / "engine"), "--max-batch-size", "4",
                    "--max-seq-len", "2048", "--max-num-tokens", "1000", "--workers", str(tp), "--dry-run")
    assert result.exit_code == 0, result.output
    argv = shlex.split(result.output)
    assert argv[0] == "trtllm-build"
    args = trtllm_12_parser().parse_args(argv[1:])  # raises on any flag or value 1.2.x would reject
    assert args.checkpoint_dir == str(ckpt)
    assert args.output_timing_cache == str(tmp_path / "engine" / "model.cache")  # not ./model.cache
    assert args.speculative_decoding_mode == "explicit_draft_tokens"
    assert args.max_beam_width == 1
    assert args.max_draft_len is None, "the builder derives max_draft_len from the redrafter_* keys"
    assert args.gemm_plugin == ("fp8" if fp8 else "bfloat16")
    assert (args.kv_cache_type, args.remove_input_padding, args.context_fmha) == ("paged", "enable", "enable")
    assert args.use_fp8_context_fmha == ("disable" if fp8 else None)  # no FP8 KV cache in these checkpoints
    assert (args.max_batch_size, args.max_seq_len, args.max_num_tokens) == (4, 2048, 1000)  # each option's own
    assert args.workers == (None if tp == 1 else tp)


def test_dry_run_sets_a_small_batch_by_default(checkpoints, tmp_path):
    """trtllm-build's default max_batch_size (2048) would make the builder reserve 2048 x (5 x 5 + 1) tokens."""
    result = invoke("--checkpoint-dir", str(checkpoints[False, 1]), "--output-dir", str(tmp_path / "engine"), "--dry-run")
    assert result.exit_code == 0, result.output
    assert trtllm_12_parser().parse_args(shlex.split(result.output)[1:]).max_batch_size == 8


def test_dry_run_fp8_kv_cache_enables_fp8_context_fmha(tmp_path):
    cfg = {"dtype": "bfloat16", "mapping": {"tp_size": 1},
           "quantization": {"quant_algo": "FP8", "kv_cache_quant_algo": "FP8"}}
    argv = plan_build(BuildOptions(tmp_path, tmp_path / "e"), cfg).argv
    assert trtllm_12_parser().parse_args(argv[1:]).use_fp8_context_fmha == "enable"


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_workers_other_than_1_reach_trtllm_build(tmp_path, workers):
    cfg = {"dtype": "bfloat16", "mapping": {"tp_size": 2}}
    plan = plan_build(BuildOptions(tmp_path, tmp_path / "e", workers=workers), cfg)
    assert trtllm_12_parser().parse_args(plan.argv[1:]).workers == (None if workers == 1 else workers)


def test_a_mapping_without_world_size_has_tp_times_pp_ranks():
    assert build_mod.world_size({"mapping": {"tp_size": 2, "pp_size": 2}}) == 4
    assert build_mod.world_size({"mapping": {"world_size": 2, "tp_size": 2}}) == 2


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
def test_gemm_plugin_follows_dtype(tmp_path, dtype):
    argv = plan_build(BuildOptions(tmp_path, tmp_path / "e"), {"dtype": dtype, "mapping": {"tp_size": 1}}).argv
    assert argv[argv.index("--gemm_plugin") + 1] == dtype


def test_max_seq_len_beyond_the_model_positions_warns(tmp_path, caplog):
    cfg = {"dtype": "bfloat16", "mapping": {"tp_size": 1}, "max_position_embeddings": 8192}
    with caplog.at_level("WARNING", logger="redrafter_trt.build"):
        plan_build(BuildOptions(tmp_path, tmp_path / "e", max_seq_len=8192), cfg)
        assert "max_position_embeddings" not in caplog.text
        plan_build(BuildOptions(tmp_path, tmp_path / "e", max_seq_len=100000), cfg)
    assert "exceeds the model's 8192 positions" in caplog.text


@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "build"])
def test_a_max_seq_len_without_room_for_an_answer_is_refused_before_tensorrt_llm(checkpoints, tmp_path, monkeypatch,
                                                                                  dry_run):
    """--max-seq-len 1 printed a command (or asked to install TensorRT-LLM for it) whose engine answers nothing: the
    executor takes prompts of up to max_seq_len - 1 tokens, and each needs one new token. trtllm-build refuses
    nothing here (it clips max_input_len to max_seq_len) and gives the draft tokens room of its own (builder.py adds
    max_draft_len to max_seq_len), so 2 is the least it holds: one prompt token and one new one."""
    monkeypatch.setattr(installed_trtllm, "trtllm_version", lambda: None)
    args = ["--checkpoint-dir", str(checkpoints[False, 1]), "--output-dir", str(tmp_path / "e")]
    args += ["--dry-run"] if dry_run else []
    one_line_error(invoke(*args, "--max-seq-len", "1", env={"PATH": str(tmp_path)}),
                   "'--max-seq-len': 1 leaves no room for an answer", "the longest prompt the engine would take is 0 "
                   "tokens", "use 2 or more")
    assert not (tmp_path / "e").exists()
    with pytest.raises(ConfigError, match="--max-seq-len 0 leaves no room for an answer"):
        plan_build(BuildOptions(tmp_path, tmp_path / "e", max_seq_len=0), {"dtype": "bfloat16"})
    preset = tmp_path / "p.yaml"
    preset.write_text("build: {max-seq-len: 1}\n")
    one_line_error(invoke("--config", str(preset), *args), f"preset {preset}: field 'build.max-seq-len' is 1: 1 leaves")
    if dry_run:
        result = invoke(*args, "--max-seq-len", "2")
        assert result.exit_code == 0, result.output
        assert trtllm_12_parser().parse_args(shlex.split(result.output)[1:]).max_seq_len == 2


@pytest.mark.parametrize("scaling, positions", [
    ({"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 8192}, 32768),  # Qwen2.5 long context
    ({"rope_type": "linear", "factor": 2.0}, 16384),
    ({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
      "original_max_position_embeddings": 8192}, 8192),  # llama3's factor does not stretch the positions
])
def test_max_seq_len_warning_counts_rope_scaling_as_trtllm_build_does(tmp_path, caplog, scaling, positions):
    """tensorrt_llm/builder.py _init_max_seq_len: max_position_embeddings x factor, except su/longrope/llama3."""
    cfg = {"dtype": "bfloat16", "mapping": {"tp_size": 1}, "max_position_embeddings": 8192, "rotary_scaling": scaling}
    with caplog.at_level("WARNING", logger="redrafter_trt.build"):
        plan_build(BuildOptions(tmp_path, tmp_path / "e", max_seq_len=positions), cfg)
        assert "exceeds the model's" not in caplog.text
        plan_build(BuildOptions(tmp_path, tmp_path / "e", max_seq_len=positions + 1), cfg)
    assert f"exceeds the model's {positions} positions" in caplog.text


@pytest.mark.parametrize("scaling, warns", [
    ({"rope_type": "linear", "factor": 4.0}, True),  # Vicuna v1.5 16k: 4096 positions, factor 4
    ({"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 4096}, True),
    ({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
      "original_max_position_embeddings": 4096}, False),  # trtllm-build's default stays max_position_embeddings
    (None, False),
])
def test_engine_positions_past_the_rope_table_warn(tmp_path, caplog, scaling, warns):
    """A review: TensorRT-LLM 1.2 builds its RoPE as a cos/sin table of max_position_embeddings rows
    (layers/attention.py create_attention_const_params: RopeEmbeddingUtils'
    create_sinusoidal_positions_for_attention_plugin and create_sinusoidal_positions_yarn get num_pos =
    config.max_position_embeddings) and its attention kernels read row `position` unchecked
    (unfusedAttentionKernels rotary_coef_cache_buffer + rotary_position), while trtllm-build's default max_seq_len is
    max_position_embeddings x factor under a linear or yarn scaling: build said nothing, and the engine's tokens past
    4096 got cos/sin read past the table. It warns now, for the default and for a --max-seq-len past the table."""
    cfg = {"dtype": "bfloat16", "mapping": {"tp_size": 1}, "max_position_embeddings": 4096, "rotary_scaling": scaling}
    with caplog.at_level("WARNING", logger="redrafter_trt.build"):
        plan_build(BuildOptions(tmp_path, tmp_path / "e", max_seq_len=4096), cfg)
        assert caplog.text == ""
        plan_build(BuildOptions(tmp_path, tmp_path / "e"), cfg)
        assert ("trtllm-build's default max_seq_len 16384 passes max_position_embeddings 4096" in caplog.text) is warns
        caplog.clear()
        plan_build(BuildOptions(tmp_path, tmp_path / "e", max_seq_len=4097), cfg)
    assert ("--max-seq-len 4097 passes max_position_embeddings 4096" in caplog.text) is warns
    assert ("pass --max-seq-len 4096" in caplog.text) is warns


def test_extra_args_pass_through_after_double_dash(checkpoints, tmp_path):
    extra = ["--tokens_per_block", "64", "--use_fused_mlp=enable", "--input_timing_cache", "old/model.cache"]
    result = invoke("--checkpoint-dir", str(checkpoints[False, 1]), "--output-dir", str(tmp_path / "engine"), "--dry-run", "--",
                    *extra)
    assert result.exit_code == 0, result.output
    argv = shlex.split(result.output)
    assert argv[-len(extra):] == extra
    trtllm_12_parser().parse_args(argv[1:])


def test_dry_run_needs_no_tensorrt_llm(checkpoints, tmp_path):
    result = invoke("--checkpoint-dir", str(checkpoints[False, 1]), "--output-dir", str(tmp_path / "engine"), "--dry-run",
                    env={"PATH": str(tmp_path)})
    assert result.exit_code == 0 and result.output.startswith("trtllm-build "), result.output


# ---- errors -------------------------------------------------------------------------------------------------------

def test_without_tensorrt_llm_says_how_to_install(checkpoints, tmp_path, monkeypatch):
    monkeypatch.setattr(installed_trtllm, "trtllm_version", lambda: None)
    result = invoke("--checkpoint-dir", str(checkpoints[False, 1]), "--output-dir", str(tmp_path / "e"),
                    env={"PATH": str(tmp_path)})
    one_line_error(result, "pip install", "tensorrt_llm==1.2.*", "1.0 to 1.2.x")


def test_without_tensorrt_llm_the_dependency_error_comes_alone(tmp_path, monkeypatch, caplog):
    """A README walk-through: build of a float32 checkpoint on a machine without TensorRT-LLM printed the float32
    warning (unfused attention in the engine it could not build) before the one-line "not installed" error; the error
    now comes first, alone. --dry-run, which needs no TensorRT-LLM, still warns."""
    from redrafter_trt.convert import convert

    base = make_hf(tmp_path / "base", "llama")
    save_byte_tokenizer(base)
    ckpt = tmp_path / "ckpt"
    convert(base, make_drafter(tmp_path / "drafter", base), ckpt, tp_size=1, dtype="float32")
    monkeypatch.setattr(installed_trtllm, "trtllm_version", lambda: None)
    args = ("--checkpoint-dir", str(ckpt), "--output-dir", str(tmp_path / "e"))
    with caplog.at_level("WARNING", logger="redrafter_trt.build"):
        one_line_error(invoke(*args, env={"PATH": str(tmp_path)}), "TensorRT-LLM is not installed", "--dry-run")
        assert caplog.text == ""
        result = invoke(*args, "--dry-run", env={"PATH": str(tmp_path)})
    assert result.exit_code == 0 and result.output.startswith("trtllm-build "), result.output
    assert "float32 checkpoint" in caplog.text and "documents float16, bfloat16 and FP8 only" in caplog.text


def test_tensorrt_llm_without_redrafter_is_refused(checkpoints, tmp_path, monkeypatch):
    fake_trtllm_build(tmp_path / "bin", "")
    monkeypatch.setattr(installed_trtllm, "trtllm_version", lambda: "1.3.0")
    result = invoke("--checkpoint-dir", str(checkpoints[False, 1]), "--output-dir", str(tmp_path / "e"),
                    env={"PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}"})
    one_line_error(result, "TensorRT-LLM 1.3.0", "1.0 to 1.2.x")


@pytest.mark.parametrize("version, says", [
    ("1.3.0rc5", ("past the 1.2.x line", "1.3.0rc22", "no trtllm-build")),
    ("1.4.0rc1", ("past the 1.2.x line", "1.3.0rc22", "no trtllm-build")),
    ("0.21.0", ("older ReDrafter format", "ReDrafterForCausalLM")),
])
def test_refused_tensorrt_llm_is_named_for_what_it_is(tmp_path, monkeypatch, version, says):
    """TensorRT-LLM's 1.3.0rc0-rc15 still had trtllm-build and ReDrafterForLLaMALM/QWenLM (the TensorRT backend went in
    July 2026, PRs #15918 and #16369; 1.3.0rc22 came after): the refusal does not claim they cannot run the format, it
    says they are past the supported line; a 0.x says its ReDrafter is the older format."""
    fake_trtllm_build(tmp_path / "bin", "")
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(installed_trtllm, "trtllm_version", lambda: version)
    with pytest.raises(DependencyError) as raised:
        installed_trtllm.require_trtllm_tool(build_mod.TRTLLM_BUILD)
    message = str(raised.value)
    assert f"TensorRT-LLM {version} " in message and "tensorrt_llm==1.2.*" in message
    assert "cannot run" not in message and all(s in message for s in says)


@pytest.mark.parametrize("extra, needle", [
    (["--max_draft_len", "25"], "--max_draft_len"),
    (["--remove_input_padding=disable"], "--remove_input_padding"),
    (["--kv_cache_type", "continuous"], "paged KV cache"),
    (["--paged_kv_cache", "disable"], "paged KV cache"),  # trtllm-build's deprecated form of the same
    (["--max_beam_width", "4"], "--max_beam_width"),
    (["--gemm_plugin", "float16"], "--gemm-plugin"),
    (["--max_beam_w", "4"], "it is --max_beam_width"),
    (["--kv_cache", "continuous"], "paged KV cache"),
    (["--build_config", "b.json"], "build config file"),
    # TrtGptModelInflightBatching (the executor behind run --engine-dir and trtllm-serve) throws for an engine built
    # without the GPT attention plugin ("requires GPT attention/Mamba Conv 1d plugin with packed input and paged KV
    # cache")
    (["--gpt_attention_plugin", "disable"], "GPT attention plugin"),
    # ReDrafterMixin.prepare_inputs (models/redrafter/model.py) gives its own inputs one optimization profile while
    # the base's get several: Builder._add_optimization_profile's IndexError, minutes into the build
    (["--multiple_profiles", "enable"], "single optimization profile"),
    (["--multiple_p=enable"], "single optimization profile"),
    # trtllm-build's own dry run writes config.json and no rank0.engine: check_engine then said "rerun the build"
    (["--dry_run"], "use redrafter-trt build --dry-run"),
    # build writes it to ENGINE/model.cache itself; an earlier build's cache is read with --input_timing_cache
    (["--output_timing_cache", "t.cache"], "--input_timing_cache"),
])
def test_extra_args_may_not_undo_redrafter_settings(checkpoints, tmp_path, extra, needle):
    result = invoke("--checkpoint-dir", str(checkpoints[False, 1]), "--output-dir", str(tmp_path / "engine"), "--dry-run", "--",
                    *extra)
    one_line_error(result, needle)
    # a review: a flag given in full was glossed with itself, "--max_draft_len ... (it is --max_draft_len)"
    assert ("(it is " in result.stderr) == (extra[0].split("=")[0] in ("--max_beam_w", "--kv_cache", "--multiple_p")), \
        result.stderr


@pytest.mark.parametrize("flag, fp8, needle", [
    ("fp8", False, "needs an FP8 checkpoint"),
    ("float16", False, "does not match the checkpoint dtype bfloat16"),
])
def test_gemm_plugin_must_fit_checkpoint(checkpoints, tmp_path, flag, fp8, needle):
    result = invoke("--checkpoint-dir", str(checkpoints[fp8, 1]), "--output-dir", str(tmp_path / "engine"), "--gemm-plugin", flag,
                    "--dry-run")
    one_line_error(result, needle)


def test_explicit_gemm_dtype_allowed_on_fp8_base(tmp_path):
    cfg = {"dtype": "bfloat16", "mapping": {"tp_size": 1}, "quantization": {"quant_algo": "FP8"}}
    argv = plan_build(BuildOptions(tmp_path, tmp_path / "e", gemm_plugin="bfloat16"), cfg).argv
    assert argv[argv.index("--gemm_plugin") + 1] == "bfloat16"


def test_gemm_plugin_fp8_is_taken_on_an_fp8_base(tmp_path):
    """--gemm-plugin fp8 needs no match with the checkpoint dtype: an FP8 base keeps its dtype (bfloat16) in config."""
    cfg = {"dtype": "bfloat16", "mapping": {"tp_size": 1}, "quantization": {"quant_algo": "FP8"}}
    argv = plan_build(BuildOptions(tmp_path, tmp_path / "e", gemm_plugin="fp8"), cfg).argv
    assert argv[argv.index("--gemm_plugin") + 1] == "fp8"


# every flag build sets or refuses itself, spelled out: a parametrization over RESERVED would lose a deleted entry
RESERVED_FLAGS = ("--checkpoint_dir", "--model_config", "--output_dir", "--max_batch_size", "--max_input_len",
                  "--max_seq_len", "--max_decoder_seq_len", "--max_num_tokens", "--gemm_plugin", "--workers",
                  "--max_draft_len", "--speculative_decoding_mode", "--max_beam_width", "--kv_cache_type",
                  "--paged_kv_cache", "--remove_input_padding", "--context_fmha", "--gpt_attention_plugin",
                  "--use_fp8_context_fmha", "--multiple_profiles", "--build_config", "--output_timing_cache",
                  "--dry_run")


@pytest.mark.parametrize("flag", RESERVED_FLAGS)
def test_each_reserved_flag_is_refused_in_full_and_abbreviated(flag):
    """argparse takes an unambiguous prefix of a flag, so the refusal covers the abbreviation too."""
    for given, says in (((flag, "1"), f"do not pass {flag} to trtllm-build after '--': "),
                        ((f"{flag}=1",), f"do not pass {flag} to trtllm-build after '--': "),
                        ((flag[:-2], "1"), f"do not pass {flag[:-2]} to trtllm-build after '--' (it is {flag}): ")):
        with pytest.raises(ConfigError, match=re.escape(says)):
            build_mod.check_extra_args(given)


def test_the_shortest_prefix_argparse_takes_is_refused():
    """'--k' is trtllm-build's --kv_cache_type to argparse (no other flag starts so); only '--' alone is no flag."""
    assert build_mod.reserved_flag("--k")[:2] == ("--k", "--kv_cache_type")
    assert build_mod.reserved_flag("--") is None


def test_max_input_len_is_refused_with_what_limits_a_prompt(checkpoints, tmp_path):
    """trtllm-build ignores --max_input_len with packed input and context FMHA: the flag would promise nothing."""
    result = invoke("--checkpoint-dir", str(checkpoints[False, 1]), "--output-dir", str(tmp_path / "engine"),
                    "--dry-run", "--", "--max_input_len", "4096")
    one_line_error(result, "--max_input_len", "min(--max-seq-len - 1, --max-num-tokens)")


@pytest.mark.skipif(not HAVE_CHECKPOINT, reason="checkpoint.require_valid not written yet")
def test_checkpoint_that_inspect_rejects_is_refused(checkpoints, tmp_path):
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(checkpoints[False, 4], bad)
    (bad / "rank3.safetensors").unlink()
    one_line_error(invoke("--checkpoint-dir", str(bad), "--output-dir", str(tmp_path / "e"), "--dry-run"), "rank3")


@pytest.mark.skipif(not HAVE_CHECKPOINT, reason="checkpoint.require_valid not written yet")
def test_missing_checkpoint_folder_is_one_line(tmp_path):
    one_line_error(invoke("--checkpoint-dir", str(tmp_path / "nope"), "--output-dir", str(tmp_path / "e"), "--dry-run"))


# ---- presets ------------------------------------------------------------------------------------------------------

def test_preset_fills_options_and_flags_win(checkpoints, tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_text(f"checkpoint-dir: {checkpoints[False, 1]}\nbuild:\n  output-dir: {tmp_path / 'e'}\n"
                      "  max-batch-size: 8\n  max_seq_len: 1024\n  trtllm-args: [--tokens_per_block, 64]\n")
    result = invoke("--config", str(preset), "--max-batch-size", "2", "--dry-run")
    assert result.exit_code == 0, result.output
    args = trtllm_12_parser().parse_args(shlex.split(result.output)[1:])
    assert (args.max_batch_size, args.max_seq_len, args.tokens_per_block) == (2, 1024, 64)
    assert args.output_dir == str(tmp_path / "e")


def test_arguments_after_dashes_follow_the_presets_trtllm_args(checkpoints, tmp_path):
    """A review: `build --config P -- --opt_num_tokens 4` dropped the preset's `trtllm-args: [--tokens_per_block, 64]`
    in silence. The preset's come first, the command line's after them: trtllm-build's argparse takes the last of a
    flag given twice, so a flag typed again wins and the preset's others stay."""
    preset = tmp_path / "p.yaml"
    preset.write_text(f"checkpoint-dir: {checkpoints[False, 1]}\nbuild:\n  output-dir: {tmp_path / 'e'}\n"
                      "  trtllm-args: [--tokens_per_block, 64, --opt_num_tokens, 8]\n")
    result = invoke("--config", str(preset), "--dry-run", "--", "--opt_num_tokens", "4")
    assert result.exit_code == 0, result.output
    argv = shlex.split(result.output)
    assert argv[-6:] == ["--tokens_per_block", "64", "--opt_num_tokens", "8", "--opt_num_tokens", "4"]
    args = trtllm_12_parser().parse_args(argv[1:])
    assert (args.tokens_per_block, args.opt_num_tokens) == (64, 4)
    # a flag build sets itself is refused after '--' as without a preset
    one_line_error(invoke("--config", str(preset), "--dry-run", "--", "--max_beam_width", "2"),
                   "do not pass --max_beam_width to trtllm-build after '--'")


# ---- running a (fake) trtllm-build ------------------------------------------------------------------------------

FAKE = """#!PYTHON
import json, os, sys, time
from pathlib import Path
argv = sys.argv[1:]
ckpt, out = Path(argv[argv.index("--checkpoint_dir") + 1]), Path(argv[argv.index("--output_dir") + 1])
print("[TRT-LLM] building", flush=True)
BODY
"""

WRITE_ENGINE = """
cfg = json.loads((ckpt / "config.json").read_text())
out.mkdir(parents=True, exist_ok=True)
(out / "config.json").write_text(json.dumps({"version": "1.2.0", "pretrained_config": cfg, "build_config": {}}))
for r in range(cfg["mapping"]["tp_size"]):
    (out / f"rank{r}.engine").write_bytes(b"x" * 1024)
print("[TRT-LLM] Total time of building all engines: 00:00:01", flush=True)
"""


def fake_trtllm_build(bindir: Path, body: str) -> Path:
    bindir.mkdir(parents=True, exist_ok=True)
    path = bindir / "trtllm-build"
    path.write_text(FAKE.replace("PYTHON", sys.executable).replace("BODY", body))
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return bindir


def run_fake(checkpoints, tmp_path, body: str, tp: int = 4, *args: str):
    bindir = fake_trtllm_build(tmp_path / "bin", body)
    env = {"PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}"}
    return invoke("--checkpoint-dir", str(checkpoints[False, tp]), "--output-dir", str(tmp_path / "engine"), *args,
                  env=env)


def test_fake_build_streams_output_and_checks_engine(checkpoints, tmp_path, monkeypatch):
    monkeypatch.setattr(installed_trtllm, "trtllm_version", lambda: None)
    result = run_fake(checkpoints, tmp_path, WRITE_ENGINE)
    assert result.exit_code == 0, result.output
    assert "[TRT-LLM] building" in result.output and "Total time of building" in result.output
    assert "engine: " in result.output and "(4 ranks, " in result.output and "5 beams x 5 draft tokens" in result.output
    producer = json.loads((tmp_path / "engine" / build_mod.PRODUCER_FILE).read_text())["producer"]
    assert producer["name"] == "redrafter-trt" and producer["command"] == "build"
    assert producer["sources"] == {"checkpoint": str(checkpoints[False, 4].resolve())}
    argv = producer["options"]["trtllm_build"]
    assert argv[0] == "trtllm-build" and argv[argv.index("--output_dir") + 1] == str(tmp_path / "engine")


def test_the_timing_cache_is_written_in_the_engine_folder_not_the_working_directory(checkpoints, tmp_path,
                                                                                  monkeypatch):
    """trtllm-build saves its timing cache to --output_timing_cache, `model.cache` in the working directory unless
    told (1.2.x: BuildConfig.output_timing_cache): a build overwrote a ./model.cache of the user's, or failed after
    building from a read-only directory; the cache now lands in the engine folder."""
    monkeypatch.setattr(installed_trtllm, "trtllm_version", lambda: None)
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    (cwd / "model.cache").write_text("the user's own file")
    monkeypatch.chdir(cwd)
    saves = ("\nflag = '--output_timing_cache'"
             "\ncache = argv[argv.index(flag) + 1] if flag in argv else 'model.cache'"
             "\nPath(cache).write_bytes(b'timing cache')\n")
    result = run_fake(checkpoints, tmp_path, WRITE_ENGINE + saves)
    assert result.exit_code == 0, result.output
    assert (cwd / "model.cache").read_text() == "the user's own file"
    assert (tmp_path / "engine" / "model.cache").read_bytes() == b"timing cache"


@pytest.mark.parametrize("body, needle", [
    (WRITE_ENGINE + "\ncfg.pop('redrafter_num_beams')\n(out / 'config.json').write_text(json.dumps("
                    "{'pretrained_config': cfg}))\n", "redrafter_num_beams"),
    (WRITE_ENGINE + "\n(out / 'rank2.engine').unlink()\n", "rank2.engine"),
    ("print('[TRT-LLM] [E] out of memory', flush=True)\nsys.exit(1)\n",
     "trtllm-build failed with exit code 1 (last line: [TRT-LLM] [E] out of memory): see its output above"),
    ("pass\n", "config.json is missing"),
], ids=["lost-redrafter-key", "missing-rank", "build-fails", "no-engine"])
def test_fake_build_failures_are_one_line(checkpoints, tmp_path, monkeypatch, body, needle):
    monkeypatch.setattr(installed_trtllm, "trtllm_version", lambda: None)
    result = run_fake(checkpoints, tmp_path, body)
    assert result.exit_code == 2, result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("error: ") and needle in last, result.output


def test_output_streams_before_the_process_ends(tmp_path):
    """The fake waits for a file that only our line callback creates: a buffered reader would time it out."""
    marker = tmp_path / "seen"
    script = tmp_path / "slow.py"
    script.write_text("import sys, time, pathlib\nprint('first', flush=True)\n"
                      f"p = pathlib.Path({str(marker)!r})\n"
                      "for _ in range(100):\n    time.sleep(0.05)\n    if p.exists(): sys.exit(0)\n"
                      "print('never streamed', flush=True)\nsys.exit(3)\n")
    seen = []

    def on_line(line):
        seen.append(line)
        marker.touch()

    run_streaming((sys.executable, str(script)), on_line)
    assert seen == ["first"]


@pytest.mark.parametrize("ignores_sigterm", [False, True])
def test_an_interrupted_build_ends_trtllm_build(tmp_path, monkeypatch, ignores_sigterm):
    """A SIGTERM (KeyboardInterrupt) to build alone while trtllm-build ran left it running: `kill PID` and `docker
    stop` signal this process only, and Popen's exit gives the child a quarter of a second after a
    KeyboardInterrupt; it went on building (its GPU held) into the folder being removed."""
    script = tmp_path / "stubborn.py"
    script.write_text("import os, signal, time\n" + ignores_sigterm * "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
                      + "print(os.getpid(), flush=True)\ntime.sleep(300)\n")
    monkeypatch.setattr(build_mod, "END_GRACE_SECONDS", 1.0)  # then SIGKILL
    pids = []

    def interrupted(line):
        pids.append(int(line))
        raise KeyboardInterrupt

    start = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        run_streaming((sys.executable, str(script)), interrupted)
    with pytest.raises(ProcessLookupError):  # ended and reaped
        os.kill(pids[0], 0)
    assert time.monotonic() - start < 30


def test_check_engine_rejects_changed_redrafter_key(tmp_path):
    cfg = {"mapping": {"tp_size": 1}, "redrafter_num_beams": 5}
    (tmp_path / "config.json").write_text(json.dumps({"pretrained_config": {"redrafter_num_beams": 4}}))
    (tmp_path / "rank0.engine").write_bytes(b"x")
    with pytest.raises(RedrafterError, match="changed: redrafter_num_beams"):
        build_mod.check_engine(tmp_path, cfg)


def test_a_one_rank_engine_is_one_rank(checkpoints, tmp_path, monkeypatch):
    """The engine line said '1 rank(s)'."""
    monkeypatch.setattr(installed_trtllm, "trtllm_version", lambda: None)
    result = run_fake(checkpoints, tmp_path, WRITE_ENGINE, tp=1)
    assert result.exit_code == 0 and "(1 rank, " in result.output, result.output


@pytest.mark.parametrize("tp, ranks", [(1, "1 rank"), (2, "2 ranks")])
def test_an_engine_without_its_rank_files_names_how_many_it_needs(tmp_path, tp, ranks):
    cfg = {"mapping": {"tp_size": tp, "world_size": tp}}
    (tmp_path / "config.json").write_text(json.dumps({"pretrained_config": {}}))
    with pytest.raises(RedrafterError, match=f"lacks rank0.engine.* for {ranks}: rerun the build"):
        build_mod.check_engine(tmp_path, cfg)


def test_has_redrafter_version_range():
    versions = ("0.21.0", "1.0.0rc4", "1.2.0", "1.2.1.post1", "1.3.0", "2.0")
    assert [installed_trtllm.has_redrafter(v) for v in versions] == [False, True, True, True, False, False]


def test_output_dir_is_checked_before_building(checkpoints, tmp_path, monkeypatch):
    """Never over the checkpoint, never over an engine without --force; a failed build leaves no engine folder."""
    ckpt = str(checkpoints[False, 1])
    result = invoke("--checkpoint-dir", ckpt, "--output-dir", ckpt, "--dry-run")
    assert result.exit_code == 2 and "would delete the input" in result.output
    monkeypatch.setattr(installed_trtllm, "trtllm_version", lambda: None)
    failing = WRITE_ENGINE + "\nsys.exit(3)\n"  # writes rank files, then fails
    assert run_fake(checkpoints, tmp_path, failing).exit_code == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bin"]  # neither engine/ nor .engine.partial-*
    assert run_fake(checkpoints, tmp_path, WRITE_ENGINE).exit_code == 0
    again = run_fake(checkpoints, tmp_path, WRITE_ENGINE)
    assert again.exit_code == 2 and "--force" in again.output


def test_force_replaces_an_earlier_engine(checkpoints, tmp_path, monkeypatch):
    monkeypatch.setattr(installed_trtllm, "trtllm_version", lambda: None)
    assert run_fake(checkpoints, tmp_path, WRITE_ENGINE).exit_code == 0
    engine = tmp_path / "engine"
    (engine / "rank0.engine").write_bytes(b"earlier")
    result = run_fake(checkpoints, tmp_path, WRITE_ENGINE, 4, "--force")
    assert result.exit_code == 0, result.output
    assert (engine / "rank0.engine").read_bytes() == b"x" * 1024


def test_a_build_that_writes_no_engine_keeps_the_earlier_one(checkpoints, tmp_path, monkeypatch):
    """trtllm-build exiting 0 after writing config.json alone: the engine it should have written is checked before
    it replaces the user's good engine, which --force replaces only with a good one."""
    monkeypatch.setattr(installed_trtllm, "trtllm_version", lambda: None)
    assert run_fake(checkpoints, tmp_path, WRITE_ENGINE).exit_code == 0
    config_only = WRITE_ENGINE + "\nfor r in range(4):\n    (out / f'rank{r}.engine').unlink()\n"
    result = run_fake(checkpoints, tmp_path, config_only, 4, "--force")
    assert result.exit_code == 2, result.output
    assert "lacks rank0.engine" in result.output.strip().splitlines()[-1], result.output
    assert (tmp_path / "engine" / "rank0.engine").read_bytes() == b"x" * 1024
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bin", "engine"]  # no .engine.partial-* left


def test_a_trtllm_build_killed_by_a_signal_fails_the_build(checkpoints, tmp_path, monkeypatch):
    """The OOM killer's SIGKILL is a negative return code: an engine written before it is not taken."""
    monkeypatch.setattr(installed_trtllm, "trtllm_version", lambda: None)
    result = run_fake(checkpoints, tmp_path, WRITE_ENGINE + "\nos.kill(os.getpid(), 9)\n")
    assert result.exit_code == 2, result.output
    assert "trtllm-build was killed by SIGKILL (the out-of-memory killer? it holds the whole model in host memory: " \
           "free memory and build again)" in result.output.strip().splitlines()[-1], result.output
    assert not (tmp_path / "engine").exists()


def test_a_dry_run_onto_an_earlier_engine_needs_force(checkpoints, tmp_path, monkeypatch):
    """--dry-run checks the output folder as the build would: the command it prints would be refused."""
    monkeypatch.setattr(installed_trtllm, "trtllm_version", lambda: None)
    assert run_fake(checkpoints, tmp_path, WRITE_ENGINE).exit_code == 0
    one_line_error(run_fake(checkpoints, tmp_path, WRITE_ENGINE, 4, "--dry-run"), "already exists", "--force")
    result = run_fake(checkpoints, tmp_path, WRITE_ENGINE, 4, "--dry-run", "--force")
    assert result.exit_code == 0 and result.output.startswith("trtllm-build "), result.output


# tensorrt_llm/models/__init__.py as 1.2.x and as the 1.0.0 release candidates before PR #4875 write it
MODEL_MAP = {"1.2": "__all__ = [\n    'ReDrafterForLLaMALM',\n    'ReDrafterForQWenLM',\n]\nMODEL_MAP = {\n"
                    "    'LlamaForCausalLM': LLaMAForCausalLM,\n    'ReDrafterForLLaMALM': ReDrafterForLLaMALM,\n"
                    "    'ReDrafterForQWenLM': ReDrafterForQWenLM,\n}\n",
             "1.0.0rc": "MODEL_MAP = {\n    'LlamaForCausalLM': LLaMAForCausalLM,\n"
                        "    'ReDrafterForCausalLM': ReDrafterForCausalLM,\n}\n"}


def fake_trtllm_package(site: Path, monkeypatch, files: dict[str, str]) -> None:
    """A tensorrt_llm package folder on sys.path holding `files` (relative path -> text), read as its source, never
    imported."""
    for relative, text in {"__init__.py": "", **files}.items():
        (site / "tensorrt_llm" / relative).parent.mkdir(parents=True, exist_ok=True)
        (site / "tensorrt_llm" / relative).write_text(text)
    monkeypatch.syspath_prepend(str(site))


@pytest.mark.parametrize("knows, says", [(True, None), (False, "builds no Qwen3"), (None, None)])
def test_a_qwen3_checkpoint_needs_a_tensorrt_llm_that_builds_qwen3(tmp_path, monkeypatch, knows, says):
    """TensorRT-LLM's TensorRT backend builds Qwen3 since PR #5650 (July 2025): an older one failed inside
    trtllm-build, after its imports, on an assertion ('Unsupported Qwen type: qwen3'). Its QWenConfig's source is read
    (not imported) first; a Qwen2 checkpoint, and a TensorRT-LLM not visible from this Python, are not held up."""
    if knows is not None:
        fake_trtllm_package(tmp_path / "site", monkeypatch, {
            "models/qwen/config.py": "valid_types = ('qwen', 'qwen2'" + (", 'qwen3')" if knows else ")")})
    else:
        monkeypatch.setattr(installed_trtllm.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(installed_trtllm, "trtllm_version", lambda: "1.0.0")
    qwen3 = {"architecture": "ReDrafterForQWenLM", "base_model_architecture": "Qwen3ForCausalLM", "qwen_type": "qwen3"}
    if says:
        with pytest.raises(DependencyError, match=f"TensorRT-LLM 1.0.0 {says}.*tensorrt_llm==1.2"):
            installed_trtllm.check_trtllm_builds(qwen3)
        monkeypatch.setattr(installed_trtllm, "trtllm_version", lambda: None)  # a source checkout: no version to name
        with pytest.raises(DependencyError, match=f"^TensorRT-LLM {says}"):
            installed_trtllm.check_trtllm_builds(qwen3)
    else:
        installed_trtllm.check_trtllm_builds(qwen3)
    installed_trtllm.check_trtllm_builds(qwen3 | {"base_model_architecture": "Qwen2ForCausalLM", "qwen_type": "qwen2"})


@pytest.mark.parametrize("version", ["1.0.0rc4", None])
def test_build_refuses_a_tensorrt_llm_without_the_checkpoints_architecture(checkpoints, tmp_path, monkeypatch,
                                                                            version):
    """TensorRT-LLM's 1.0.0 release candidates before PR #4875 have tensorrt_llm/models/redrafter, but their MODEL_MAP
    names ReDrafterForCausalLM alone: trtllm-build stopped on `assert architecture in MODEL_MAP` after its imports.
    build reads the installed MODEL_MAP first (the check doctor makes) and names the architecture missing; None: a
    source checkout, no version to name."""
    fake_trtllm_package(tmp_path / "site", monkeypatch, {"models/__init__.py": MODEL_MAP["1.0.0rc"],
                                                         "models/redrafter/__init__.py": ""})
    monkeypatch.setattr(installed_trtllm, "trtllm_version", lambda: version)
    result = run_fake(checkpoints, tmp_path, "raise SystemExit('trtllm-build ran')")
    installed = " ".join(filter(None, ("TensorRT-LLM", version)))
    one_line_error(result, f"{installed} has no ReDrafterForLLaMALM in its MODEL_MAP", "PR #4875",
                   "tensorrt_llm==1.2.*")
    (tmp_path / "site" / "tensorrt_llm" / "models" / "__init__.py").write_text(MODEL_MAP["1.2"])
    assert run_fake(checkpoints, tmp_path, WRITE_ENGINE).exit_code == 0


@pytest.mark.parametrize("scaling, positions, refused", [
    ({"type": "yarn", "factor": 4.0}, 32768, True),  # trtllm-build would take 4096, transformers 32768
    ({"type": "yarn", "factor": 4.0}, 4096, False),  # the same number either way
    ({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0}, 131072, True),
    ({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0}, 8192, False),
    ({"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 8192}, 32768, False),
    # one TensorRT-LLM would compute with, as inspect and run read it (not the 4096 assumed without it)
    ({"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 0}, 4096, True),
])
def test_a_rope_scaling_without_its_original_positions_is_refused_where_the_engine_would_differ(
        tmp_path, scaling, positions, refused):
    """A review: build took a llama3 or yarn rotary_scaling without original_max_position_embeddings, for which
    TensorRT-LLM 1.2 assumes 8192 / 4096 where transformers takes max_position_embeddings: an engine with another
    RoPE than the model, built without a word (inspect and run named the fix)."""
    cfg = {"dtype": "bfloat16", "mapping": {"tp_size": 1}, "max_position_embeddings": positions,
           "rotary_scaling": scaling}
    options = BuildOptions(tmp_path, tmp_path / "e", max_seq_len=4096)
    if not refused:
        plan_build(options, cfg)
        return
    with pytest.raises(ConfigError, match=r"has no positive original_max_position_embeddings and "
                                          r"max_position_embeddings is "
                                          rf"{positions}: an engine would assume \d+ original positions.*reconvert"):
        plan_build(options, cfg)
