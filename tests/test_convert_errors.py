"""Bad input to `convert`: exit 2, one line on stderr naming the problem and the fix, no traceback, and no
output folder left behind. A SIGKILLed conversion leaves nothing `inspect` accepts."""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file, save_file

from redrafter_trt.cli import main
from tinymodels import TRANSFORMERS_5, make_drafter, make_hf


def run_cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_one_line_error(result, *needles):
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output
    for n in needles:
        assert n in lines[0], (n, lines[0])


@pytest.fixture()
def parts(tmp_path, tiny_llama):
    base = tmp_path / "base"
    shutil.copytree(tiny_llama, base)
    drafter = make_drafter(tmp_path / "drafter", base)
    return base, drafter, tmp_path / "out"


def convert_err(parts, *extra, base=None, drafter=None):
    b, d, out = parts
    result = run_cli("convert", "--base", base or b, "--drafter", drafter or d, "--output", out, *extra)
    assert not out.exists(), "a failed conversion left an output folder"
    assert not list(out.parent.glob(f".{out.name}.partial-*")), "a failed conversion left a partial folder"
    return result


def test_missing_folder(parts, tmp_path):
    assert_one_line_error(convert_err(parts, base=tmp_path / "nope"), "does not exist")


def test_missing_base_says_how_to_get_one(parts, tmp_path, monkeypatch):
    """The examples' `models/Llama-3.1-8B-Instruct` missing said only `does not exist: pass a Hugging Face model
    folder`: neither where a relative path was looked for nor how to fetch one."""
    monkeypatch.chdir(tmp_path)
    result = convert_err(parts, base="models/Some-Model")
    assert_one_line_error(result, f"base folder models/Some-Model does not exist (paths are read from {tmp_path})",
                          "hf download ORG/NAME --local-dir models/Some-Model")


@pytest.mark.parametrize("which", ["base", "drafter"])
def test_a_file_for_a_folder(parts, which):
    """`--base BASE/model.safetensors` said `base folder .../model.safetensors does not exist`."""
    given = (parts[0] if which == "base" else parts[1]) / "model.safetensors"
    assert_one_line_error(convert_err(parts, **{which: given}), f"{which} folder {given} is a file, not a folder")


def test_a_checkpoint_as_drafter(parts, tmp_path):
    """The last run's checkpoint passed as --drafter was said to lack model.safetensors, as if a drafter's weights were
    missing."""
    ckpt = tmp_path / "ckpt"
    assert run_cli("convert", "--base", parts[0], "--drafter", parts[1], "--output", ckpt).exit_code == 0
    assert_one_line_error(convert_err(parts, drafter=ckpt), "holds a ReDrafter checkpoint",
                          "not an Apple ReDrafter drafter", "pass the drafter folder it was converted from")


def test_the_base_as_drafter(parts):
    """--drafter given the base (the two swapped, or the base passed twice) was said to lack exit_dim,
    num_draft_layers and rnn, as if a drafter's config were incomplete."""
    assert_one_line_error(convert_err(parts, drafter=parts[0]), "holds a Hugging Face model (LlamaForCausalLM)",
                          "not an Apple ReDrafter drafter", "--base", "redrafter-trt train")


def test_an_engine_as_drafter(parts, tmp_path):
    engine = tmp_path / "engine"
    engine.mkdir()
    (engine / "config.json").write_text(json.dumps({"version": "1.2.0", "pretrained_config": {}, "build_config": {}}))
    (engine / "rank0.engine").write_bytes(b"")
    assert_one_line_error(convert_err(parts, drafter=engine), "holds a TensorRT-LLM engine",
                          "not an Apple ReDrafter drafter")


def test_missing_config(parts):
    (parts[0] / "config.json").unlink()
    assert_one_line_error(convert_err(parts), "config.json")


def test_unsupported_architecture(parts):
    cfg = json.loads((parts[0] / "config.json").read_text())
    cfg["architectures"] = ["GPT2LMHeadModel"]
    (parts[0] / "config.json").write_text(json.dumps(cfg))
    assert_one_line_error(convert_err(parts), "GPT2LMHeadModel", "LlamaForCausalLM", "Qwen2ForCausalLM")


def test_drafter_hidden_mismatch(parts, tmp_path):
    other = make_hf(tmp_path / "other", "llama", hidden_size=32, intermediate_size=64)
    assert_one_line_error(convert_err(parts, drafter=make_drafter(tmp_path / "d2", other)), "hidden_size 32")


def test_drafter_vocab_mismatch(parts, tmp_path):
    other = make_hf(tmp_path / "other", "llama", vocab_size=128)
    assert_one_line_error(convert_err(parts, drafter=make_drafter(tmp_path / "d2", other)), "vocab 128")


@pytest.mark.parametrize("base_fields, drafter_fields, extra, needle", [
    ({"hidden_act": "swish"}, {}, (), "hidden_act is 'swish'"),                      # the base's own config
    ({}, {"hidden_size": 32, "exit_dim": 64}, (), "drafter hidden_size 32"),         # the fit, from the configs
    ({}, {"vocab_size": 128}, (), "drafter vocab 128"),
    ({}, {"predict_n": 3}, ("--draft-len", 4), "trained to predict"),
    ({}, {"exit_dim": 30}, ("--tp-size", 4), "exit_dim E = 30"),
    ({}, {}, ("--num-beams", 300), "exceeds the vocabulary"),                        # the checkpoint's config
])
def test_base_and_fit_checked_before_the_drafter_tensors_load(parts, monkeypatch, base_fields, drafter_fields, extra,
                                                              needle):
    """Every drafter tensor was read (8.4 GB in float32 for a 70B base's drafter) before the base's config and the
    drafter's fit, which need configs alone, were checked."""
    import redrafter_trt.convert

    for path, fields in ((parts[0] / "config.json", base_fields), (parts[1] / "config.json", drafter_fields)):
        path.write_text(json.dumps(json.loads(path.read_text()) | fields))
    monkeypatch.setattr(redrafter_trt.convert, "load_drafter", lambda *a: pytest.fail("the drafter's tensors were read"))
    assert_one_line_error(convert_err(parts, *extra), needle)


def test_trtllm_base_checked_before_the_drafter_tensors_load(parts, tmp_path, monkeypatch):
    import redrafter_trt.convert

    base_ckpt, cfg = trtllm_base_checkpoint(parts, tmp_path)
    (base_ckpt / "config.json").write_text(json.dumps(cfg | {"dtype": "int8"}))
    monkeypatch.setattr(redrafter_trt.convert, "load_drafter", lambda *a: pytest.fail("the drafter's tensors were read"))
    assert_one_line_error(convert_err(parts, base=base_ckpt), "dtype 'int8' is not one of")


@pytest.mark.parametrize("tp,needle", [(3, "attention heads"), (8, "attention heads")])
def test_tp_heads(parts, tp, needle):
    assert_one_line_error(convert_err(parts, "--tp-size", tp), needle)


def test_tp_kv_heads(tmp_path):
    base = make_hf(tmp_path / "b", "llama", num_attention_heads=6, num_key_value_heads=3, hidden_size=96,
                   intermediate_size=192)
    parts = (base, make_drafter(tmp_path / "d", base), tmp_path / "out")
    assert_one_line_error(convert_err(parts, "--tp-size", 2), "kv heads")


def test_tp_refusal_names_the_sizes_that_split_the_model(tmp_path):
    """SmolLM2 (9 heads, 3 kv heads, intermediate 1536) at --tp-size 2 was told 'use a divisor of 9'; 9 was then
    refused for the intermediate size. The refusal names the sizes that pass every check instead."""
    base = make_hf(tmp_path / "b", "llama", num_attention_heads=9, num_key_value_heads=3, hidden_size=72,
                   intermediate_size=96, vocab_size=255)
    parts = (base, make_drafter(tmp_path / "d", base, exit_dim=72), tmp_path / "out")
    for tp in (2, 9):
        assert_one_line_error(convert_err(parts, "--tp-size", tp), "--tp-size 1 or 3 splits this model")
    assert run_cli("convert", "--base", base, "--drafter", parts[1], "--output", parts[2], "--tp-size", 3,
                   "--dry-run").exit_code == 0


def test_tp_sizes_named_fit_the_drafter_too(tmp_path):
    """SmolLM2-360M (15 heads, 5 kv heads, intermediate 2560, vocabulary 49152) at --tp-size 2 was told '--tp-size 1
    or 5 splits this model'; 5 was then refused for the drafter's vocabulary, which TensorRT-LLM splits without
    padding, with 'use a tp that divides 49152', of which the base takes none but 1. Both refusals name the sizes
    that split the base and the drafter (its H and V are the base's; its exit_dim E its own)."""
    base = make_hf(tmp_path / "b", "llama", num_attention_heads=15, num_key_value_heads=5, hidden_size=120,
                   intermediate_size=40, vocab_size=256)
    parts = (base, make_drafter(tmp_path / "d", base), tmp_path / "out")
    for tp in (2, 5):
        assert_one_line_error(convert_err(parts, "--tp-size", tp), "use --tp-size 1")
    base = make_hf(tmp_path / "b2", "llama", num_attention_heads=9, num_key_value_heads=3, hidden_size=72,
                   intermediate_size=96, vocab_size=255)
    parts = (base, make_drafter(tmp_path / "d2", base, exit_dim=64), tmp_path / "out")
    for tp in (2, 3):
        assert_one_line_error(convert_err(parts, "--tp-size", tp), "use --tp-size 1")


def test_tp_sizes_named_for_a_qwen3_with_as_many_kv_heads_as_heads_convert(tmp_path):
    """A Qwen3 with as many kv heads as heads converts only at one head a rank (its refusal at more: TensorRT-LLM
    1.2 norms q and k reading the rank's qkv as interleaved), yet a refused --tp-size named 1 and 2 beside 4 for 4
    heads, both then refused; where one head a rank does not split the rest (a vocabulary of 255), it named 1."""
    base = make_hf(tmp_path / "b", "qwen3", num_key_value_heads=4, head_dim=32)
    parts = (base, make_drafter(tmp_path / "d", base), tmp_path / "out")
    result = convert_err(parts, "--tp-size", 3)
    assert_one_line_error(result, "does not divide the 4 attention heads")
    named = [int(t) for t in re.findall(r"\b\d+\b", result.stderr.split(":")[-1])]
    assert named == [4], result.stderr
    assert run_cli("convert", "--base", base, "--drafter", parts[1], "--output", parts[2], "--tp-size", 4).exit_code == 0
    base = make_hf(tmp_path / "b2", "qwen3", num_key_value_heads=4, head_dim=32, vocab_size=255)
    parts = (base, make_drafter(tmp_path / "d2", base), tmp_path / "out2")
    assert_one_line_error(convert_err(parts, "--tp-size", 3), "no --tp-size splits this model")
    assert_one_line_error(convert_err(parts, "--tp-size", 4), "no --tp-size splits this model")


def test_a_qwen3_tp_its_attention_misreads_is_refused_before_any_work(tmp_path):
    """A review: --tp-size 2 of a Qwen3 with 4 heads and 4 kv heads passed check_tp, every shard was written, and only
    the written checkpoint's check refused it, naming tp_size 4 as the one read right where 4 does not divide the
    intermediate size of 130 (no size converts that model). check_tp refuses it first, with tp_fits' advice."""
    from redrafter_trt.errors import ConfigError
    from redrafter_trt.shard import check_tp

    with pytest.raises(ConfigError, match="no --tp-size splits this model"):
        check_tp(4, 4, 130, 2, qk_norm=True)
    with pytest.raises(ConfigError, match=r"--tp-size 2 is refused: a Qwen3 with 4 heads and 4 kv heads has 2 of each a rank.*: use --tp-size 4$"):
        check_tp(4, 4, 128, 2, qk_norm=True)
    check_tp(4, 4, 128, 2)  # not a Qwen3: the rule is its attention's
    check_tp(4, 2, 128, 2, qk_norm=True)  # fewer kv heads than heads: its q, k and v blocks are read as written
    base = make_hf(tmp_path / "b", "qwen3", num_key_value_heads=4, head_dim=32, intermediate_size=130)
    parts = (base, make_drafter(tmp_path / "d", base), tmp_path / "out")
    assert_one_line_error(convert_err(parts, "--tp-size", 2), "no --tp-size splits this model")


def test_tp_sizes_of_a_mistyped_head_count_are_named_at_once():
    """A config.json whose num_attention_heads was mistyped (10**9 where 32 was meant) took 35 s to be refused at
    --tp-size 3, trying every count up to it for the sizes to name (one of 10**12 would take hours); the sizes are
    the divisors of what every count shares, found up to its square root."""
    code = ("from redrafter_trt.shard import tp_sizes; "
            "print(tp_sizes(10**12, 10**12, 10**12, (2**40,))); print(tp_sizes(9, 3, 1536, (576, 64, 255)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.splitlines() == [str([2 ** i for i in range(13)]), "[1]"]


def test_an_odd_head_size_is_refused(tmp_path):
    """A Qwen2 with head size 9 converted without a word; TensorRT-LLM cannot build its rotary embedding and
    transformers' own Qwen2 fails on it."""
    base = make_hf(tmp_path / "b", "qwen2", hidden_size=36, num_attention_heads=4, num_key_value_heads=2)
    parts = (base, make_drafter(tmp_path / "d", base), tmp_path / "out")
    assert_one_line_error(convert_err(parts), "head size 9 is odd")


def test_a_qwen3_with_attention_biases_is_refused_as_trtllm_builds_none(tmp_path):
    """TensorRT-LLM's QWenConfig sets attn_bias false for every Qwen3, so a Qwen3 with attention_bias (q/k/v and
    o_proj biases, which transformers' Qwen3 adds) would build without them: it was refused as a broken download
    ('unexpected tensors ... re-download the model'), which it is not."""
    base = make_hf(tmp_path / "b", "qwen3", attention_bias=True, head_dim=32)
    parts = (base, make_drafter(tmp_path / "d", base), tmp_path / "out")
    assert_one_line_error(convert_err(parts), "attention_bias is true", "TensorRT-LLM builds a Qwen3 without")


def test_tp_intermediate(tmp_path):
    base = make_hf(tmp_path / "b", "llama", intermediate_size=130)
    parts = (base, make_drafter(tmp_path / "d", base), tmp_path / "out")
    assert_one_line_error(convert_err(parts, "--tp-size", 4), "intermediate size 130")


def test_tp_drafter_dims(tmp_path):
    base = make_hf(tmp_path / "b", "llama", vocab_size=254)
    parts = (base, make_drafter(tmp_path / "d", base), tmp_path / "out")
    assert_one_line_error(convert_err(parts, "--tp-size", 4), "vocab V = 254")
    parts = (base, make_drafter(tmp_path / "d2", base, exit_dim=30), tmp_path / "out")
    assert_one_line_error(convert_err(parts, "--tp-size", 4), "exit_dim E = 30")


@pytest.mark.parametrize("field, tensor", [("attention_bias", "self_attn.o_proj.bias"),
                                           ("mlp_bias", "mlp.down_proj.bias")])
def test_llama_bias_flags_without_their_tensors(parts, field, tensor):
    """Llama's attention_bias (q/k/v and o_proj) and mlp_bias (gate/up/down_proj) are converted; a config that sets
    one over weights without those biases names the missing tensors."""
    cfg = json.loads((parts[0] / "config.json").read_text())
    cfg[field] = True
    (parts[0] / "config.json").write_text(json.dumps(cfg))
    assert_one_line_error(convert_err(parts), "missing tensors", f"model.layers.0.{tensor}")


@pytest.mark.parametrize("flags, hint", [
    ({"bias": True}, '"attention_bias": true and "mlp_bias": true to config.json (transformers\' Llama does not read '
                     '`bias`)'),
    ({"attention_bias": True}, '"mlp_bias": true to config.json'),
    ({}, '"attention_bias": true and "mlp_bias": true to config.json'),
])
def test_llama_biases_without_their_flags_name_them(tmp_path, flags, hint):
    """A review: a Llama whose weights hold biases its config.json does not flag (`bias: true`, which TensorRT-LLM's
    from_hugging_face reads as attention_bias and transformers' Llama does not read, or no flag) was refused as
    'unexpected tensors ...: re-download the model', where a flag is the fix."""
    base = make_hf(tmp_path / "b", "llama", attention_bias=True, mlp_bias=True)
    raw = json.loads((base / "config.json").read_text())
    for k in ("attention_bias", "mlp_bias"):
        raw.pop(k)
    (base / "config.json").write_text(json.dumps(raw | flags))
    result = convert_err((base, make_drafter(tmp_path / "d", base), tmp_path / "out"))
    assert_one_line_error(result, "unexpected tensors", f"if the model has these biases, add {hint}")
    assert "re-download" not in result.stderr


@pytest.mark.parametrize("method", ["fp8", "awq", "bitsandbytes"])
def test_quantized_hf_base(parts, method):
    """An FP8 / AWQ / bitsandbytes Hugging Face base was refused as `unexpected tensors: ...weight_scale` (or
    `missing ...weight; unexpected ...qweight`): `the weights do not match its config.json`, no word of the fix."""
    path = parts[0] / "config.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | {"quantization_config": {"quant_method": method}}))
    assert_one_line_error(convert_err(parts), f"quantized model (quantization_config: {method})",
                          "pass the unquantized model")


def test_fp8_checks_the_drafter_before_calibrating(parts, tmp_path, monkeypatch):
    """A drafter that cannot fit the base is refused from the configs, before modelopt calibrates for hours."""
    import redrafter_trt.quantize as quantize

    def calibrate(*args, **kwargs):
        raise AssertionError("calibration started")

    monkeypatch.setattr(quantize, "export_fp8_base", calibrate)
    other = make_hf(tmp_path / "other", "llama", hidden_size=32, intermediate_size=64)
    result = convert_err(parts, "--quantize", "fp8", drafter=make_drafter(tmp_path / "d2", other))
    assert_one_line_error(result, "hidden_size 32")
    cfg = json.loads((parts[1] / "config.json").read_text())
    (parts[1] / "config.json").write_text(json.dumps({**cfg, "predict_n": 3}))
    assert_one_line_error(convert_err(parts, "--quantize", "fp8", "--draft-len", 4), "trained to predict")


@pytest.mark.parametrize("extra, needle", [
    (("--num-beams", "300", "--draft-len", "1"), "redrafter_num_beams 300 exceeds the vocabulary (256 tokens)"),
    (("--num-beams", "200", "--draft-len", "3"), "601 tokens verified per step exceed max_position_embeddings 512"),
    (("--num-beams", "300", "--draft-len", "1", "--quantize", "fp8"), "exceeds the vocabulary"),
])
def test_a_checkpoint_inspect_refuses_is_not_written(parts, monkeypatch, extra, needle):
    """A review: convert wrote such a checkpoint, printed `wrote ... 0 rank file(s)` and exited 1, leaving it in place
    (FP8: after calibrating); it is refused in one line before any tensor is read or calibrated."""
    import redrafter_trt.quantize as quantize

    monkeypatch.setattr(quantize, "export_fp8_base", lambda *a, **k: pytest.fail("calibration started"))
    assert_one_line_error(convert_err(parts, *extra), needle)


def test_the_tree_may_fill_max_position_embeddings(parts):
    """num_beams x draft_len + 1 tokens verified per step (the beams share their first token, as TensorRT-LLM's
    max_gen_token_len counts them; counted as num_beams x (draft_len + 1), 73 x 8 = 584 was refused) may reach
    max_position_embeddings (512), not pass it."""
    assert_one_line_error(convert_err(parts, "--num-beams", "128", "--draft-len", "4"),
                          "513 tokens verified per step exceed max_position_embeddings 512")
    result = run_cli("convert", "--base", parts[0], "--drafter", parts[1], "--output", parts[2], "--num-beams", "73",
                     "--draft-len", "7")
    assert result.exit_code == 0, result.output


def test_partials_of_live_runs_survive_the_stale_sweep(tmp_path):
    """The sweep before each write removes what killed runs left, never the FP8 scratch of the run itself (it is
    read while the output is written) or a concurrent run's partial output."""
    from redrafter_trt.output import partial_dir, remove_stale_partials

    dest = tmp_path / "ckpt"
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    own = partial_dir(dest, "fp8-")  # as convert makes its FP8 scratch
    parent = tmp_path / f".ckpt.partial-{os.getppid()}-xyz"
    killed = tmp_path / f".ckpt.partial-{gone.pid}-xyz"
    older = tmp_path / ".ckpt.partial-xyz"  # named before the pid was in the name
    other = tmp_path / f".other.partial-{gone.pid}-xyz"
    for folder in (parent, killed, older, other):
        folder.mkdir()
    remove_stale_partials(dest)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in (own, parent, other))


def trtllm_base_checkpoint(parts, tmp_path, tp=2):
    """A TensorRT-LLM base checkpoint at tp 2 (our output less the drafter) and its config."""
    base_ckpt = tmp_path / "tb"
    from redrafter_trt.convert import convert

    convert(parts[0], parts[1], tmp_path / "full", tp_size=tp)
    shutil.copytree(tmp_path / "full", base_ckpt)
    cfg = json.loads((base_ckpt / "config.json").read_text())
    for k in [k for k in cfg if k.startswith("redrafter_")] + ["base_model_architecture", "producer"]:
        cfg.pop(k)
    cfg["architecture"] = "LlamaForCausalLM"
    (base_ckpt / "config.json").write_text(json.dumps(cfg))
    for r in range(tp):
        t = load_file(base_ckpt / f"rank{r}.safetensors")
        save_file({k: v for k, v in t.items() if not k.startswith("drafter.")}, base_ckpt / f"rank{r}.safetensors")
    return base_ckpt, cfg


REEXPORT = "fix its config.json or re-export the base"


@pytest.mark.parametrize("fields, needle, fix", [
    ({"dtype": "int8"}, "dtype 'int8' is not one of", REEXPORT),                                 # was KeyError
    ({"mapping": {"tp_size": "2"}}, "mapping is {'tp_size': '2'}", REEXPORT),                    # was TypeError
    # these two were written, then refused by inspect
    ({"rotary_scaling": {"type": "foo"}}, "rotary_scaling is {'type': 'foo'}", REEXPORT),
    ({"mapping": {"world_size": 4, "tp_size": 2, "pp_size": 1}}, "world_size 4", REEXPORT),
    # written as it was: inspect passed it, trtllm-build's Mapping refused it (world_size 1 != pp x cp x tp = 2)
    ({"mapping": {"tp_size": 2, "pp_size": 1}}, "mapping lacks world_size, which TensorRT-LLM reads as 1",
     'add "world_size": 2 to mapping'),
    # a valid TensorRT-LLM mapping (world_size = tp x pp x cp) was called a world_size mismatch
    ({"mapping": {"world_size": 4, "tp_size": 2, "pp_size": 1, "cp_size": 2}}, "cp_size is 2 (context parallel)",
     "convert or export the base without context parallelism"),
    ({"num_key_value_heads": 3}, "tp_size 2 does not fit 4 heads / 3 kv heads", REEXPORT),
    ({"hidden_act": "swish"}, "hidden_act is 'swish', must be one of silu", REEXPORT),      # trtllm-build's ValueError
    ({"mlp_bias": "false"}, "mlp_bias is 'false', must be null or true or false", REEXPORT),  # read as true
    ({"position_embedding_type": "rope_gptj"}, "position_embedding_type is 'rope_gptj', must be rope_gpt_neox",
     REEXPORT),                                                                      # built, with the pairs rotated apart
])
def test_trtllm_base_config_checked_as_inspect_checks_it(parts, tmp_path, fields, needle, fix):
    """A problem carrying its own fix (add world_size to mapping) ends in it, as `run` and `build` end in it: it was
    followed by a second, ': fix its config.json or re-export the base', though the edit alone would do."""
    base_ckpt, cfg = trtllm_base_checkpoint(parts, tmp_path)
    (base_ckpt / "config.json").write_text(json.dumps(cfg | fields))
    result = convert_err(parts, base=base_ckpt)
    assert_one_line_error(result, f"base checkpoint {base_ckpt}: ", needle)
    assert result.stderr.strip().endswith(fix) and (fix == REEXPORT or REEXPORT not in result.stderr), result.stderr


YARN_4 = {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 128}


@pytest.mark.parametrize("scaling, needle", [
    (YARN_4 | {"attention_factor": 2.0}, "transformers scales its cos/sin by 2, TensorRT-LLM by 1.13863"),
    (YARN_4 | {"mscale_all_dim": 1.0}, "transformers scales its cos/sin by 1.13863, TensorRT-LLM by 1"),
    (YARN_4 | {"truncate": False}, "truncate false is not computed by TensorRT-LLM"),
    ({"type": "llama3", "factor": 8.0, "low_freq_factor": 4.0, "high_freq_factor": 1.0,
      "original_max_position_embeddings": 64}, "high_freq_factor 1 is below low_freq_factor 4"),
    # a review: these converted (inspect OK, build proceeded): TensorRT-LLM reads no attention_factor at all
    (YARN_4 | {"attention_factor": "2"}, "attention_factor must be a finite number"),
    (YARN_4 | {"attention_factor": True, "mscale": 1.0}, "attention_factor must be a finite number"),
])
def test_trtllm_base_with_a_rope_trtllm_computes_otherwise_is_refused(parts, tmp_path, scaling, needle):
    """A review: a TensorRT-LLM base checkpoint (modelopt's export) whose yarn TensorRT-LLM computes otherwise than
    transformers (attention_factor 2: the runtime scaled cos/sin by 2, TensorRT-LLM by 1.13863) converted and
    inspected OK, where the Hugging Face folder is refused: refused the same way, and inspect names it."""
    from redrafter_trt.checkpoint import inspect_checkpoint
    from redrafter_trt.errors import ConfigError
    from redrafter_trt.runtime.config import RuntimeConfig

    base_ckpt, cfg = trtllm_base_checkpoint(parts, tmp_path, tp=1)
    (base_ckpt / "config.json").write_text(json.dumps(cfg | {"rotary_scaling": scaling}))
    assert_one_line_error(convert_err(parts, base=base_ckpt), f"base checkpoint {base_ckpt}: rotary_scaling",
                          needle, ": TensorRT-LLM would build another RoPE than the model's")
    full = tmp_path / "full"
    (full / "config.json").write_text(json.dumps(json.loads((full / "config.json").read_text())
                                                 | {"rotary_scaling": scaling}))
    rep = inspect_checkpoint(full)
    assert not rep.ok and any(needle in p for p in rep.problems), rep.problems
    # named once, not "build one" (a non-number attention_factor was also the runtime's, sent to build an engine)
    assert not any(needle in p or "attention_factor" in p for p in rep.runtime_problems), rep.runtime_problems
    with pytest.raises(ConfigError, match=re.escape(needle)):
        RuntimeConfig.from_dict(json.loads((full / "config.json").read_text()))
    result = run_cli("build", "--checkpoint-dir", full, "--output-dir", tmp_path / "e", "--dry-run")
    assert_one_line_error(result, needle)
    # a review: it ended in TensorRT-LLM's RoPE differing, no fix (that of a WithFix problem is its own)
    assert any(fix in result.stderr for fix in ("written as TensorRT-LLM reads it", "which TensorRT-LLM computes",
                                                "TensorRT-LLM 1.2 cannot build this model's RoPE",
                                                "write the model's published")), result.stderr


def test_trtllm_base_without_position_embedding_type_is_refused(parts, tmp_path):
    """A review: a TensorRT-LLM base checkpoint whose config.json lacks position_embedding_type (TensorRT-LLM reads
    learned_absolute: no RoPE) converted with exit 0, the key still absent in the output."""
    base_ckpt, cfg = trtllm_base_checkpoint(parts, tmp_path)
    (base_ckpt / "config.json").write_text(json.dumps({k: v for k, v in cfg.items() if k != "position_embedding_type"}))
    result = convert_err(parts, base=base_ckpt)
    assert_one_line_error(result, f"base checkpoint {base_ckpt}: position_embedding_type is absent")
    assert result.stderr.strip().endswith('add "position_embedding_type": "rope_gpt_neox" to config.json'), result.stderr
    assert not parts[2].exists()


def test_trtllm_base_mapping_without_tp_size(parts, tmp_path):
    """TensorRT-LLM's Mapping reads a missing tp_size as 1; convert's plan indexed it: KeyError traceback."""
    base_ckpt, cfg = trtllm_base_checkpoint(parts, tmp_path, tp=1)
    (base_ckpt / "config.json").write_text(json.dumps(cfg | {"mapping": {"world_size": 1, "pp_size": 1}}))
    assert run_cli("convert", "--base", base_ckpt, "--drafter", parts[1], "--output", parts[2]).exit_code == 0
    assert json.loads((parts[2] / "config.json").read_text())["mapping"]["tp_size"] == 1


def test_trtllm_base_without_mapping_is_tp_1(parts, tmp_path):
    """TensorRT-LLM's PretrainedConfig reads a missing mapping as Mapping() (tp 1); convert took such a base for a
    Hugging Face folder and refused it for lacking Hugging Face files."""
    base_ckpt, cfg = trtllm_base_checkpoint(parts, tmp_path, tp=1)
    (base_ckpt / "config.json").write_text(json.dumps({k: v for k, v in cfg.items() if k != "mapping"}))
    assert run_cli("convert", "--base", base_ckpt, "--drafter", parts[1], "--output", parts[2]).exit_code == 0
    assert json.loads((parts[2] / "config.json").read_text())["mapping"]["tp_size"] == 1


def test_another_tp_size_than_a_trtllm_bases_names_only_tp_sizes_that_split_it(parts, tmp_path):
    """--tp-size 3 over a tp-1 TensorRT-LLM base checkpoint said to re-export the base at tp 3, which does not divide
    its 4 heads: the tp sizes named are those that split the model."""
    base_ckpt, _ = trtllm_base_checkpoint(parts, tmp_path, tp=1)
    assert_one_line_error(convert_err(parts, "--tp-size", 3, base=base_ckpt),
                          "--tp-size 3 differs from the base checkpoint's tp_size 1: pass --tp-size 1, or re-export "
                          "the base at tp 2 or 4 (tp 3 does not split this model)")
    assert_one_line_error(convert_err(parts, "--tp-size", 2, base=base_ckpt),
                          "pass --tp-size 1, or re-export the base at tp 2")


def test_another_dtype_than_a_trtllm_bases_is_refused(parts, tmp_path):
    """A TensorRT-LLM base checkpoint's tensors are kept as written: a --dtype other than its own is refused in one
    line (a review: no test passed one), its own dtype converts."""
    base_ckpt, cfg = trtllm_base_checkpoint(parts, tmp_path, tp=1)
    assert cfg["dtype"] == "float32"
    for dtype in ("float16", "bfloat16"):
        assert_one_line_error(convert_err(parts, "--dtype", dtype, base=base_ckpt),
                              f"--dtype {dtype} differs from the base checkpoint's float32: pass --dtype auto")
    ok = run_cli("convert", "--base", base_ckpt, "--drafter", parts[1], "--output", parts[2], "--dtype", "float32")
    assert ok.exit_code == 0, ok.output


def test_a_misshapen_tensor_in_a_trtllm_base_is_refused_with_its_config_shape(parts, tmp_path):
    """A rank file tensor of another shape than the base checkpoint's config.json lays out (a review: no test had
    one) is refused in one line naming the tensor, its shape and the config's, and the fix, before anything is
    written."""
    base_ckpt, _ = trtllm_base_checkpoint(parts, tmp_path, tp=2)
    rank1 = base_ckpt / "rank1.safetensors"
    t = load_file(rank1)
    name = "transformer.layers.0.mlp.fc.weight"
    rows, cols = t[name].shape
    t[name] = t[name][:-1].contiguous()
    save_file(t, rank1)
    assert_one_line_error(convert_err(parts, base=base_ckpt),
                          f"base checkpoint {base_ckpt} rank 1: {name} is ({rows - 1}, {cols}), "
                          f"config says ({rows}, {cols}): the rank files do not match its config.json: fix its "
                          f"config.json or re-export the base")


def test_drafter_refused_at_a_trtllm_base_tp_names_a_re_export(parts, tmp_path):
    """A drafter of exit_dim 62 over a TensorRT-LLM base checkpoint at tp 4, converted without --tp-size, was told
    '--tp-size 4 does not divide ... : --tp-size 1 or 2 splits this model', and --tp-size 2 was then refused as
    other than the checkpoint's 4: its tp is the checkpoint's own. The refusal names it and the sizes to re-export
    the base at (or to convert the Hugging Face model at)."""
    base_ckpt, _ = trtllm_base_checkpoint(parts, tmp_path, tp=4)
    drafter = make_drafter(tmp_path / "d62", parts[0], exit_dim=62)
    for extra in ((), ("--tp-size", 4)):
        result = convert_err(parts, *extra, base=base_ckpt, drafter=drafter)
        assert_one_line_error(result, "the base checkpoint's tp_size 4 does not divide the drafter's exit_dim E = 62",
                              "re-export the base at tp 1 or 2, or convert its Hugging Face model at --tp-size 1 or 2")
        assert "splits this model" not in result.stderr
    fits = run_cli("convert", "--base", parts[0], "--drafter", drafter, "--output", parts[2], "--tp-size", 2)
    assert fits.exit_code == 0, fits.output


def test_a_drafter_vocabulary_tp_does_not_divide_is_refused_for_the_true_reason(tmp_path):
    """A review: the refusal said TensorRT-LLM splits the drafter's layers "without padding", untrue of V: 1.2.x's
    ReDrafterMixin pads the drafter's lm_head to pad_vocab_size(V, tp), but declares its draft_probs input at V."""
    base = make_hf(tmp_path / "base", "llama", vocab_size=250)
    drafter = make_drafter(tmp_path / "drafter", base)
    result = run_cli("convert", "--base", base, "--drafter", drafter, "--output", tmp_path / "out", "--tp-size", 4)
    assert_one_line_error(result, "--tp-size 4 does not divide the drafter's vocab V = 250 (TensorRT-LLM pads the "
                          "drafter's lm_head to a multiple of tp_size, but declares its draft_probs input with the "
                          "unpadded vocab_size): ")
    assert not (tmp_path / "out").exists()


def test_tp_differs_from_trtllm_base(parts, tmp_path):
    base_ckpt, cfg = trtllm_base_checkpoint(parts, tmp_path)
    assert_one_line_error(convert_err(parts, "--tp-size", 1, base=base_ckpt), "differs from the base checkpoint's tp_size 2")
    cfg["mapping"]["pp_size"] = 2
    (base_ckpt / "config.json").write_text(json.dumps(cfg))
    assert_one_line_error(convert_err(parts, base=base_ckpt), "pipeline parallel")
    cfg["mapping"]["pp_size"] = 1
    # Quantizations other than FP8 were blamed on the tensors ("unexpected tensors: ...per_channel_scale").
    for key, algo in (("quant_algo", "W8A16"), ("kv_cache_quant_algo", "INT8")):
        bad = {**cfg, "quantization": {**cfg["quantization"], key: algo}}
        (base_ckpt / "config.json").write_text(json.dumps(bad))
        assert_one_line_error(convert_err(parts, base=base_ckpt), f"quantization.{key} '{algo}' is not supported")
    # A Qwen checkpoint that TensorRT-LLM reads as the first Qwen (its MLP half as wide) was refused as misshapen.
    for arch in ("QWenForCausalLM", "Qwen2ForCausalLM"):
        (base_ckpt / "config.json").write_text(json.dumps({**cfg, "architecture": arch, "qwen_type": "qwen"}))
        assert_one_line_error(convert_err(parts, base=base_ckpt), "qwen_type 'qwen'", "only Qwen2")


def test_drafter_tensor_problems(parts):
    d = parts[1]
    t = load_file(d / "model.safetensors")
    t["extra.weight"] = torch.zeros(2)
    del t["rnn_w.weight"]
    save_file(t, d / "model.safetensors")
    assert_one_line_error(convert_err(parts), "missing tensors: rnn_w.weight", "unexpected tensors: extra.weight")
    t = load_file(d / "model.safetensors")
    del t["extra.weight"]
    t["rnn_w.weight"] = torch.zeros(64, 32)
    save_file(t, d / "model.safetensors")
    assert_one_line_error(convert_err(parts), "misshapen", "rnn_w.weight")


@pytest.mark.parametrize("which, name", [(0, "model.layers.0.self_attn.q_proj.weight"), (1, "rnn_w.weight")],
                         ids=["base", "drafter"])
def test_integer_weights_are_refused(parts, which, name):
    """A weight stored as integers (a header that lies about its dtype, I32 for F32: the same bytes) was cast to
    floats and converted, exit 0: its values are bit patterns read as numbers."""
    f = parts[which] / "model.safetensors"
    t = load_file(f)
    save_file(t | {name: t[name].view(torch.int32)}, f)
    assert_one_line_error(convert_err(parts), f"{name} is I32", "re-download or re-export")


@pytest.mark.parametrize("which, name, file", [(0, "model.layers.0.self_attn.q_proj.weight", "pytorch_model.bin"),
                                               (1, "rnn_w.weight", "model.pt")], ids=["base", "drafter"])
def test_int16_weights_in_torch_files_are_refused(parts, which, name, file):
    """A review: a weight stored as int16 in a pytorch_model.bin base ended in a KeyError traceback, exit 1 (int16
    had no safetensors name), and in a drafter's model.pt it was cast to floats and converted, exit 0."""
    folder = parts[which]
    t = load_file(folder / "model.safetensors")
    torch.save(t | {name: t[name].to(torch.int16)}, folder / file)
    (folder / "model.safetensors").unlink()
    assert_one_line_error(convert_err(parts), f"{name} is I16", "re-download or re-export")


@pytest.mark.parametrize("dtype, said", [(torch.float8_e5m2, "float8_e5m2"), (torch.complex64, "complex64")])
@pytest.mark.parametrize("which, name, file", [(0, "model.layers.0.self_attn.q_proj.weight", "pytorch_model.bin"),
                                               (1, "rnn_w.weight", "model.pt")], ids=["base", "drafter"])
def test_non_float_dtypes_in_torch_files_are_refused(parts, which, name, file, dtype, said):
    """A review: a pytorch_model.bin base holding a float8_e5m2 or complex tensor ended in a KeyError traceback from
    the dtype table (which names the dtypes this converter reads); a drafter's model.pt was cast and converted."""
    folder = parts[which]
    t = load_file(folder / "model.safetensors")
    torch.save(t | {name: t[name].to(dtype)}, folder / file)
    (folder / "model.safetensors").unlink()
    assert_one_line_error(convert_err(parts), f"{name} is {said}", "re-download or re-export")


@pytest.mark.parametrize("file", ["model.safetensors", "pytorch_model.bin"])
def test_a_base_in_a_dtype_no_reader_takes_is_refused_in_one_line_beside_a_drafters_record(parts, tmp_path, file,
                                                                                         monkeypatch):
    """A review: a drafter recording its base's weights (init-drafter's, train's) had them compared with --base's
    before the base's dtypes were checked: a complex tensor was cast to float there, torch's 'Casting complex values to
    real discards the imaginary part' warning printed above the one-line refusal (a pytorch_model.bin's was refused
    alone while its reader checked dtypes). The comparison leaves such a tensor to that refusal."""
    from redrafter_trt import base_rows
    from redrafter_trt.drafter import init_drafter_for_base

    def read_rows(src, name, rows, _read=base_rows.read_rows):  # torch warns once a process: seen here each time
        assert not src.get(name, 0, rows[0], rows[0] + 1).is_complex(), f"{name}: complex values cast to float"
        return _read(src, name, rows)

    monkeypatch.setattr(base_rows, "read_rows", read_rows)
    base = parts[0]
    drafter = tmp_path / "init"
    init_drafter_for_base(base, drafter)
    name = "model.embed_tokens.weight"  # one of the rows the drafter records
    t = load_file(base / "model.safetensors")
    (base / "model.safetensors").unlink()
    (save_file if file.endswith("safetensors") else torch.save)(t | {name: t[name].to(torch.complex64)}, base / file)
    assert_one_line_error(convert_err(parts, drafter=drafter), f"base {base}: {name} is ", "re-download or re-export")


@pytest.mark.parametrize("dtype, said", [(torch.float8_e5m2, "float8_e5m2"), (torch.complex64, "complex64")])
def test_non_float_dtypes_in_a_safetensors_drafter_are_refused(parts, dtype, said):
    """A review: a drafter's model.safetensors holding a float8_e5m2 or complex tensor failed in aminmax (a traceback)
    or was converted where its model.pt was refused (the base's safetensors: test_cli_bad_input). Its tensors are read
    whole, so torch names their dtype, as for a model.pt."""
    f = parts[1] / "model.safetensors"
    t = load_file(f)
    save_file(t | {"rnn_w.weight": t["rnn_w.weight"].to(dtype)}, f)
    assert_one_line_error(convert_err(parts), f"rnn_w.weight is {said}", "re-download or re-export")


def test_the_drafter_check_allocates_no_copy_of_its_tensors(parts):
    """A review: the drafter's NaN check (`isfinite(t).all()`, then the head's again and its amin and amax) made a
    mask of every tensor: ~9 s of convert on one core for an 8B base's [128256, 8192] head; aminmax reads each in
    place (~0.2 s)."""
    from torch.profiler import ProfilerActivity, profile

    from redrafter_trt.drafter import check_tensors, load_drafter

    cfg, tensors = load_drafter(parts[1])
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as p:
        check_tensors(cfg, tensors, str(parts[1]))
    assert max((e.cpu_memory_usage for e in p.events()), default=0) < max(t.nbytes for t in tensors.values()) // 8


def test_a_tensor_under_two_aliases_is_refused(parts):
    """A review: `lm_heads.0.linear.weight` beside `lm_head.0.linear.weight` (both Apple names of ResBlock 0's
    weight) collapsed into one name, and whichever the file listed last was converted, silently (TensorRT-LLM's
    converter takes the first name it tries)."""
    d = parts[1]
    t = load_file(d / "model.safetensors")
    t["lm_heads.0.linear.weight"] = torch.randn(t["lm_head.0.linear.weight"].shape)
    save_file(t, d / "model.safetensors")
    assert_one_line_error(convert_err(parts), "holds both lm_head.0.linear.weight and lm_heads.0.linear.weight")


def shard(base, pattern, save):
    """Split the tiny base's model.safetensors into two shards named by `pattern`, written by `save(part, path)`:
    the shard names and the weight map of their index."""
    weights = load_file(base / "model.safetensors")
    (base / "model.safetensors").unlink()
    names = sorted(weights)
    shards = {pattern.format(i + 1): names[i::2] for i in range(2)}
    for fname, part in shards.items():
        save({k: weights[k] for k in part}, base / fname)
    return shards, {k: fname for fname, part in shards.items() for k in part}


@pytest.mark.parametrize("edit, needle", [
    ("moved", "puts model.norm.weight in shards that do not hold them"),  # was SafetensorError
    ({"weight_map": []}, "is not a valid index"),                         # was AttributeError
    ([1], "is not a valid index"),                                        # was TypeError
    # a fuzzing review: RecursionError, ValueError (int()'s 4300 digits) and UnicodeDecodeError tracebacks
    pytest.param(b'{"weight_map": ' + b"[" * 3000 + b"]" * 3000 + b"}", "nested too deeply to read", id="deep"),
    pytest.param(b'{"weight_map": 1' + b"0" * 5000 + b"}", "a number too long to read: 5001 digits", id="big"),
    pytest.param(b'{"weight_map": "\xff"}', "is not UTF-8 text", id="not-utf8"),
])
def test_sharded_base_with_a_wrong_index(parts, edit, needle):
    base = parts[0]
    shards, weight_map = shard(base, "model-0000{}-of-00002.safetensors", save_file)
    assert run_cli("convert", "--base", base, "--drafter", parts[1], "--output", parts[2]).exit_code == 0
    shutil.rmtree(parts[2])
    if edit == "moved":
        other = [f for f in shards if f != weight_map["model.norm.weight"]][0]
        edit = {"metadata": {}, "weight_map": weight_map | {"model.norm.weight": other}}
    index = base / "model.safetensors.index.json"
    index.write_bytes(edit) if isinstance(edit, bytes) else index.write_text(json.dumps(edit))
    assert_one_line_error(convert_err(parts), "model.safetensors.index.json", needle, "re-download the model")


def test_sharded_bin_base_with_a_shard_missing(parts):
    """A partial download of a .bin base (Vicuna's layout) was blamed on the tensors: `missing tensors: ...: the
    weights do not match its config.json`."""
    base = parts[0]
    _, weight_map = shard(base, "pytorch_model-0000{}-of-00002.bin", lambda part, path: torch.save(part, path))
    (base / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    assert run_cli("convert", "--base", base, "--drafter", parts[1], "--output", parts[2]).exit_code == 0
    shutil.rmtree(parts[2])
    (base / "pytorch_model-00002-of-00002.bin").unlink()
    assert_one_line_error(convert_err(parts), "pytorch_model-00002-of-00002.bin is named in pytorch_model.bin.index.json "
                          "but missing", "re-download the model")


@pytest.mark.parametrize("zip_format", [True, False])
def test_bin_weights_are_read_lazily(tmp_path, zip_format):
    """A pytorch_model.bin (Vicuna's format) was read whole into memory (13.5 GB for a 7B model) although a rank
    needs only its rows; files of torch's old, pre-zip format still load (they cannot be memory-mapped)."""
    from redrafter_trt.io import read_torch_state_dict

    path = tmp_path / "pytorch_model.bin"
    torch.save({"w": torch.arange(1000.0)}, path, _use_new_zipfile_serialization=zip_format)
    state = read_torch_state_dict(path)
    assert torch.equal(state["w"], torch.arange(1000.0))
    # mapped (its pages read only when touched) rather than read into memory; measuring the resident set instead
    # passed or failed with what the allocator had kept from earlier tests
    mapped = str(path.resolve()) in open("/proc/self/maps").read()
    assert mapped == zip_format


def test_other_safetensors_beside_model_safetensors(parts):
    """A merged model saved where its LoRA adapter lies (adapter_model.safetensors) was refused: `unexpected tensors:
    base_model.model...lora_A.weight: the weights do not match its config.json`; transformers reads model.safetensors
    alone."""
    save_file({"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight": torch.zeros(8, 64)},
              parts[0] / "adapter_model.safetensors")
    result = run_cli("convert", "--base", parts[0], "--drafter", parts[1], "--output", parts[2])
    assert result.exit_code == 0, result.output


def test_misshapen_lm_head_beside_tied_embeddings(parts):
    """A tied base that also stores lm_head.weight (transformers 5 then uses it) in the wrong shape ended in
    `error: internal: wrote lm_head.weight (128, 64) ... planned (256, 64)`."""
    path = parts[0] / "config.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | {"tie_word_embeddings": True}))
    weights = load_file(parts[0] / "model.safetensors")
    save_file(weights | {"lm_head.weight": torch.zeros(128, 64)}, parts[0] / "model.safetensors")
    assert_one_line_error(convert_err(parts), "misshapen tensors: lm_head.weight (128, 64) != (256, 64)")


TIE_FIXES = ('set "tie_word_embeddings": false in config.json to keep the stored head, or delete lm_head.weight from '
             'the weights to tie them')


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_a_tied_base_storing_another_lm_head_is_refused(tmp_path, arch):
    """A review: a base whose config.json ties the head to the embedding but whose weights also hold an lm_head that
    differs converted without a word, with the stored head: transformers 5 uses it (and warns), transformers 4.x
    (TensorRT-LLM 1.2's) ties it to the embedding, so the two disagree on what the model is. convert and init-drafter
    refuse it, naming the conflict and both fixes; each fix converts."""
    base = make_hf(tmp_path / "base", arch)  # untied: its lm_head is another random matrix
    config = base / "config.json"
    untied = json.loads(config.read_text())
    config.write_text(json.dumps(untied | {"tie_word_embeddings": True}))
    drafter = make_drafter(tmp_path / "drafter", base)
    out = tmp_path / "out"
    conflict = (f"base {base}: config.json sets tie_word_embeddings, but its weights also hold an lm_head.weight that "
                f"differs from model.embed_tokens.weight")
    assert_one_line_error(convert_err((base, drafter, out)), conflict, TIE_FIXES)
    assert_one_line_error(run_cli("init-drafter", "--base", base, "--output", tmp_path / "init"), conflict, TIE_FIXES)
    config.write_text(json.dumps(untied | {"tie_word_embeddings": False}))  # the first fix
    assert run_cli("convert", "--base", base, "--drafter", drafter, "--output", out).exit_code == 0
    config.write_text(json.dumps(untied | {"tie_word_embeddings": True}))  # the second
    weights = load_file(base / "model.safetensors")
    del weights["lm_head.weight"]
    save_file(weights, base / "model.safetensors", metadata={"format": "pt"})
    assert run_cli("convert", "--base", base, "--drafter", drafter, "--output", out, "--force").exit_code == 0
    assert torch.equal(load_file(out / "rank0.safetensors")["lm_head.weight"], weights["model.embed_tokens.weight"])


@pytest.mark.parametrize("tie, said", [
    ((), "absent, Qwen2ForCausalLM's default is false"), ((False,), "false")], ids=["absent", "false"])
def test_a_tied_base_whose_config_does_not_tie_says_how_to_tie_it(tmp_path, tie, said):
    """A review: a tied Qwen2 (its weights hold no lm_head.weight) whose config.json lacks tie_word_embeddings, which
    transformers reads as Qwen2's default, false (then lm_head is initialised at random), was told to re-download
    the model alone: the fix that keeps the download is named first."""
    base = make_hf(tmp_path / "base", "qwen2", tie=True)
    config = json.loads((base / "config.json").read_text())
    config.pop("tie_word_embeddings")
    (base / "config.json").write_text(json.dumps(config | {"tie_word_embeddings": value for value in tie}))
    result = run_cli("convert", "--base", base, "--drafter", make_drafter(tmp_path / "drafter", base), "--output",
                     tmp_path / "out")
    assert_one_line_error(result, "missing tensors: lm_head.weight: the weights do not match its config.json; if the "
                                  f'model ties its head to the embedding, set "tie_word_embeddings": true in config.json '
                                  f"(it is {said}), else re-download the model")


@pytest.mark.parametrize("tie", [True, False], ids=["tied", "untied"])
def test_a_null_tie_word_embeddings_is_refused_naming_both_values(tmp_path, tie):
    """A review: `"tie_word_embeddings": null` converted (read as false, as transformers 4.57 reads it), though
    transformers 5 (5.25) refuses to load that config (its LlamaConfig / Qwen2Config field expects a bool), whatever
    the weights: convert, init-drafter and train read it as no framework loads it. It is refused before any tensor is
    read, naming the field and both values; either converts where it matches the weights."""
    base = make_hf(tmp_path / "base", "qwen2", tie=tie)
    config = base / "config.json"
    raw = json.loads(config.read_text())
    config.write_text(json.dumps(raw | {"tie_word_embeddings": None}))
    drafter = make_drafter(tmp_path / "drafter", base)
    null = (f"{config}: tie_word_embeddings is null, which transformers 5 refuses to load (it expects true or false) "
            f"and transformers 4.x reads as false: set it to true if the weights hold no lm_head.weight (the head is "
            f"the embedding), else to false")
    assert_one_line_error(convert_err((base, drafter, tmp_path / "out")), null)
    assert_one_line_error(run_cli("init-drafter", "--base", base, "--output", tmp_path / "init"), null)
    config.write_text(json.dumps(raw))  # the fix: the value the weights hold
    assert run_cli("convert", "--base", base, "--drafter", drafter, "--output", tmp_path / "out").exit_code == 0


@pytest.mark.parametrize("arch", ["llama", "mistral", "qwen2", "qwen3"])
@pytest.mark.parametrize("key", ["attention_bias", "mlp_bias"])
def test_a_null_bias_field_is_refused_where_transformers_refuses_to_load_it(tmp_path, arch, key):
    """As tie_word_embeddings: transformers 5 (5.25) types LlamaConfig's attention_bias and mlp_bias and Qwen3Config's
    attention_bias bool and refuses null, which convert read as false; Mistral's and Qwen2's classes do not read
    them and load null. Whether convert refuses follows transformers' own load of the same config.json (the
    oracle where transformers 5 is installed); the fix, false, converts."""
    from transformers import AutoConfig
    base = make_hf(tmp_path / "base", arch)
    config = base / "config.json"
    raw = json.loads(config.read_text())
    config.write_text(json.dumps(raw | {key: None}))
    drafter = make_drafter(tmp_path / "drafter", base)
    refused = arch == "llama" or (arch == "qwen3" and key == "attention_bias")
    if TRANSFORMERS_5:
        try:
            AutoConfig.from_pretrained(base)
            loads = True
        except Exception:
            loads = False
        assert loads != refused
    if refused:
        assert_one_line_error(convert_err((base, drafter, tmp_path / "out")),
                              f"{config}: {key} is null, which transformers 5 refuses to load (it expects true or "
                              f"false) and transformers 4.x reads as false: set it to true if the weights hold the")
        config.write_text(json.dumps(raw | {key: False}))
    result = run_cli("convert", "--base", base, "--drafter", drafter, "--output", tmp_path / "out")
    assert result.exit_code == 0, result.output


def test_a_tied_base_storing_its_embedding_as_lm_head_converts(tmp_path, tiny_llama_tied):
    """A tied base that stores its embedding again as lm_head.weight (some exports do) is one model to both
    transformers versions: it converts as before."""
    base = Path(shutil.copytree(tiny_llama_tied, tmp_path / "base"))
    weights = load_file(base / "model.safetensors")
    save_file(weights | {"lm_head.weight": weights["model.embed_tokens.weight"].clone()}, base / "model.safetensors",
              metadata={"format": "pt"})
    drafter = make_drafter(tmp_path / "drafter", base)
    result = run_cli("convert", "--base", base, "--drafter", drafter, "--output", tmp_path / "out")
    assert result.exit_code == 0, result.output


def test_a_tied_base_storing_a_head_that_differs_in_one_row_names_the_row(tmp_path, tiny_llama_tied, monkeypatch):
    """The tie conflict's refusal names the first row where the stored head differs from the embedding (found chunk
    by chunk: three rows a chunk here, so row 200 is in the 67th), which tells a stray edit from another matrix."""
    from redrafter_trt import base_plan

    base = Path(shutil.copytree(tiny_llama_tied, tmp_path / "base"))
    weights = load_file(base / "model.safetensors")
    head = weights["model.embed_tokens.weight"].clone()
    head[200, 5] += 1.0
    head[230] = float("nan")  # a later row differing too, NaN in one only
    save_file(weights | {"lm_head.weight": head}, base / "model.safetensors", metadata={"format": "pt"})
    monkeypatch.setattr(base_plan, "TIED_CHUNK_BYTES", 3 * head.shape[1] * 4)
    drafter = make_drafter(tmp_path / "drafter", tiny_llama_tied)
    result = run_cli("convert", "--base", base, "--drafter", drafter, "--output", tmp_path / "out")
    assert_one_line_error(result, "an lm_head.weight that differs from model.embed_tokens.weight (first at row 200): ",
                          TIE_FIXES)


def test_a_tied_base_storing_its_embedding_as_lm_head_with_a_nan_is_refused_for_the_nan(tmp_path, tiny_llama_tied):
    """A review: a NaN at one place in both (a broken embedding stored twice) made them differ to torch.equal, and
    the refusal was the tie conflict, whose fixes leave the NaN. Equal but for NaN at the same places, they are one
    head: the refusal is the NaN's, naming the tensor and its file."""
    base = Path(shutil.copytree(tiny_llama_tied, tmp_path / "base"))
    weights = load_file(base / "model.safetensors")
    weights["model.embed_tokens.weight"][1, 2] = float("nan")
    save_file(weights | {"lm_head.weight": weights["model.embed_tokens.weight"].clone()}, base / "model.safetensors",
              metadata={"format": "pt"})
    drafter = make_drafter(tmp_path / "drafter", tiny_llama_tied)
    result = run_cli("convert", "--base", base, "--drafter", drafter, "--output", tmp_path / "out")
    assert_one_line_error(result, f"base {base / 'model.safetensors'}: ", " holds NaN or Inf: the base's weights are "
                                  "broken; re-download it")


@pytest.mark.parametrize("which", [0, 1], ids=["base", "drafter"])
def test_truncated_safetensors(parts, which):
    """A base or drafter cut short is one line naming it and a download's fix (io's readers take the fix to name:
    the training cache's name another)."""
    f = parts[which] / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    assert_one_line_error(convert_err(parts), f"{f} is truncated", "re-download or re-export it")


def test_corrupt_header(parts):
    f = parts[1] / "model.safetensors"
    f.write_bytes(b"\xff" * 64)
    assert_one_line_error(convert_err(parts), "model.safetensors")


@pytest.mark.parametrize("which, file", [(0, "pytorch_model.bin"), (1, "model.pt")])
def test_malicious_pickle_does_not_run(parts, tmp_path, which, file):
    """A review: the refusal quoted torch's message cut at 120 characters, mid-word ('... in `torch.load` fr)'; it
    names the global torch refused and how to re-save the tensors from a source one trusts."""
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    folder = parts[which]
    (folder / "model.safetensors").unlink()
    torch.save({"model.norm.weight" if which == 0 else "rnn_u.weight": Evil()}, folder / file)
    result = convert_err(parts)
    assert_one_line_error(result, f"{folder / file} is a pickle that would run code or load non-tensor objects "
                                  f"(torch.load(weights_only=True) refuses its global {os.system.__module__}.system)",
                          "if you trust its source, load it with torch.load(weights_only=False)")
    assert "In PyTorch 2.6" not in result.stderr
    assert not marker.exists()


@pytest.mark.parametrize("message, said", [
    ("Weights only load failed. In PyTorch 2.6, we changed ...\n\nUnsupported global: GLOBAL __main__.Evil was not an "
     "allowed global by default.", "its global __main__.Evil"),
    ("Weights only load failed. In PyTorch 2.6, we changed ...\n\nTrying to load unsupported GLOBAL posix.system whose "
     "module posix is blocked.", "its global posix.system"),
    ("Weights only load failed. In PyTorch 2.6, we changed the default value of the `weights_only` argument in "
     "`torch.load` from `False` to `True`. ...\nPlease file an issue ...\n\nUnsupported operand 103",
     "refuses it: Weights only load failed.")])
def test_an_unsafe_pickle_is_named_in_whole_words(message, said):
    """The global torch names in either of its wordings; where it names none, its first sentence, not 120 characters."""
    from redrafter_trt.io import unsafe_pickle_reason

    assert unsafe_pickle_reason(pickle.UnpicklingError(message)).endswith(said)


@pytest.mark.parametrize("field, value, needle", [
    ("num_draft_layers", None, "num_draft_layers is None, must be an integer within 0..1024"),
    ("rnn", "yes", "rnn is 'yes', must be true or false"),
    ("predict_n", 0, "predict_n is 0, must be null or a positive integer"),
    ("hidden_size", "576x", "hidden_size is '576x', must be a positive integer"),
])
def test_drafter_config_field_types(parts, field, value, needle):
    path = parts[1] / "config.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | {field: value}))
    assert_one_line_error(convert_err(parts), needle, "re-export")


def test_drafter_config_with_absurd_layer_count(parts):
    """num_draft_layers 10**9 hung convert (every missing ResBlock name listed); 10**6 here, which took seconds."""
    path = parts[1] / "config.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | {"num_draft_layers": 10**6}))
    assert_one_line_error(convert_err(parts), "num_draft_layers is 1000000, must be an integer within 0..1024",
                          "config.json", "re-export the drafter")


@pytest.mark.parametrize("flow", ["hf", "trtllm"])
def test_base_config_with_absurd_layer_count(parts, tmp_path, flow):
    """num_hidden_layers 10**9 hung convert (every missing tensor's name built); 10**5 here, which took a second."""
    base = parts[0] if flow == "hf" else trtllm_base_checkpoint(parts, tmp_path)[0]
    path = base / "config.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | {"num_hidden_layers": 10**5}))
    assert_one_line_error(convert_err(parts, base=base), "tensors cannot hold num_hidden_layers=100000 layers")


@pytest.mark.parametrize("field, value", [("num_attention_heads", "nine"), ("hidden_size", -4), ("vocab_size", True)])
def test_base_config_field_types(parts, field, value):
    path = parts[0] / "config.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | {field: value}))
    assert_one_line_error(convert_err(parts), f"{field} is {value!r}, not a positive integer")
    res = run_cli("init-drafter", "--base", parts[0], "--output", parts[2])
    assert_one_line_error(res, f"{field} is {value!r}")


@pytest.mark.parametrize("field, value", [("rms_norm_eps", "1e-5"), ("rope_theta", -1), ("max_position_embeddings", 0.5),
                                          ("rope_parameters", {"rope_type": "default", "rope_theta": "abc"})])
def test_base_config_numbers(parts, field, value):
    """Were tracebacks (TypeError / ValueError) from the field conversions, after a review."""
    path = parts[0] / "config.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | {field: value}))
    shown = value["rope_theta"] if isinstance(value, dict) else value
    assert_one_line_error(convert_err(parts), f"is {shown!r}, not a positive", "fix or re-download")


def test_base_config_nulls_mean_defaults_and_rope_scaling_is_an_object(parts):
    path = parts[0] / "config.json"
    raw = json.loads(path.read_text())
    nulls = {"rms_norm_eps": None, "max_position_embeddings": None, "rope_theta": None, "rope_parameters": None}
    path.write_text(json.dumps(raw | nulls))
    assert run_cli("convert", "--base", parts[0], "--drafter", parts[1], "--output", parts[2]).exit_code == 0
    cfg = json.loads((parts[2] / "config.json").read_text())
    assert (cfg["norm_epsilon"], cfg["max_position_embeddings"], cfg["rotary_base"]) == (1e-6, 2048, 10000.0)
    shutil.rmtree(parts[2])
    path.write_text(json.dumps(raw | {"rope_parameters": None, "rope_scaling": "linear"}))  # TensorRT-LLM .get()s it
    assert_one_line_error(convert_err(parts), "rope_scaling is 'linear', not an object")


@pytest.mark.parametrize("layout", ["rope_scaling", "rope_parameters"])
@pytest.mark.parametrize("scaling", [{"rope_type": "foo", "factor": 2.0}, {"type": "linear", "factor": -1},
                                     {"rope_type": "yarn", "factor": "2"}])
def test_rope_scaling_trtllm_cannot_build(parts, layout, scaling):
    """Was written anyway: `wrote ... 0 rank file(s)` and inspect's problem, the checkpoint left behind."""
    path = parts[0] / "config.json"
    raw = json.loads(path.read_text())
    rope = {"rope_scaling": scaling, "rope_theta": 1e4} if layout == "rope_scaling" else \
        {"rope_parameters": {**scaling, "rope_theta": 1e4}}
    path.write_text(json.dumps({k: v for k, v in raw.items() if k not in ("rope_parameters", "rope_scaling")} | rope))
    assert_one_line_error(convert_err(parts), "not one TensorRT-LLM builds", "fix or re-download")


@pytest.mark.parametrize("extra, transformers_reads, needle", [
    ({}, None, None),
    ({"mscale": 0.707, "mscale_all_dim": 0.707}, True, None),   # DeepSeek's pair: a scale of 1 in both
    ({"attention_factor": 1.0}, True, "transformers scales its cos/sin by 1, TensorRT-LLM by 1.13863"),
    ({"truncate": False}, True, "truncate false"),
    ({"mscale": 0.707}, False, "transformers scales its cos/sin by 1.13863, TensorRT-LLM by 1.09801"),
    ({"attention_factor": "2"}, None, "attention_factor must be a finite number"),  # a review: converted
    ({"attention_factor": float("inf")}, None, "attention_factor must be a finite number"),
])
def test_yarn_keys_trtllm_reads_otherwise_are_refused(parts, extra, transformers_reads, needle):
    """A review: yarn's attention_factor (transformers' cos/sin scale) and truncate false change transformers' RoPE,
    and a lone mscale changes TensorRT-LLM 1.2's (layers/attention.py: mscale(factor, mscale or 1) /
    mscale(factor, mscale_all_dim or 0), no attention_factor, the correction range always truncated), which
    transformers ignores without mscale_all_dim: each was converted as if TensorRT-LLM built the model's RoPE."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    path = parts[0] / "config.json"
    raw = {k: v for k, v in json.loads(path.read_text()).items()
           if k not in ("rope_parameters", "rope_scaling", "rope_theta")}

    def logits(scaling):  # in the key the installed transformers reads (4.x, TensorRT-LLM 1.2's pin: rope_scaling)
        v5 = int(transformers.__version__.split(".")[0]) >= 5
        rope = {"rope_parameters": {**scaling, "rope_theta": 1e4}} if v5 else \
            {"rope_scaling": scaling, "rope_theta": 1e4}
        path.write_text(json.dumps(raw | rope))
        with torch.no_grad():
            return AutoModelForCausalLM.from_pretrained(parts[0])(torch.tensor([list(range(1, 200))])).logits

    if transformers_reads is not None:
        assert torch.equal(logits(YARN), logits(YARN | extra)) is not transformers_reads
    path.write_text(json.dumps(raw | {"rope_parameters": {**YARN, **extra, "rope_theta": 1e4}}))
    if needle:
        assert_one_line_error(convert_err(parts), "TensorRT-LLM would build another RoPE", needle)
    else:
        assert run_cli("convert", "--base", parts[0], "--drafter", parts[1], "--output", parts[2]).exit_code == 0


@pytest.mark.parametrize("scaling, needle", [
    ({"rope_type": "dynamic", "factor": 2.0}, "KeyError 'alpha'"),
    ({"rope_type": "longrope", "factor": 2.0, "short_factor": [1.0] * 8, "long_factor": [2.0] * 8,
      "original_max_position_embeddings": 256}, "without short_factor / long_factor"),
    ({"rope_type": "mrope", "mrope_section": [2, 3, 3]}, "do not compute"),
])
def test_rope_types_trtllm_llama_and_qwen_do_not_build_as_transformers_computes_them(parts, tmp_path, scaling, needle):
    """A review: a Llama with transformers' dynamic NTK scaling was converted, then trtllm-build failed (TensorRT-LLM
    1.2 builds `dynamic` as Hunyuan's fixed NTK alpha: create_sinusoidal_positions_for_attention_plugin reads
    rotary_scaling['alpha']); longrope was converted to plain RoPE with inv_freq x factor (only Phi-3's long_rope
    position embedding reads the short / long factors); mrope (Qwen2-VL's), which transformers' Llama cannot load, was
    converted too. Each is refused; inspect names a checkpoint holding one."""
    from redrafter_trt.checkpoint import inspect_checkpoint

    path = parts[0] / "config.json"
    raw = {k: v for k, v in json.loads(path.read_text()).items() if k not in ("rope_parameters", "rope_scaling")}
    path.write_text(json.dumps(raw | {"rope_parameters": {**scaling, "rope_theta": 1e4}}))
    assert_one_line_error(convert_err(parts), "not one TensorRT-LLM builds", needle)
    path.write_text(json.dumps(raw))
    assert run_cli("convert", "--base", parts[0], "--drafter", parts[1], "--output", parts[2]).exit_code == 0
    cfg = json.loads((parts[2] / "config.json").read_text())
    (parts[2] / "config.json").write_text(json.dumps(cfg | {"rotary_scaling": scaling}))
    rep = inspect_checkpoint(parts[2])
    assert any("rotary_scaling is" in p for p in rep.problems), rep.problems


@pytest.mark.parametrize("fields, needle", [
    ({"hidden_act": None}, "hidden_act is None, not an activation TensorRT-LLM's Llama and Qwen2 build"),
    ({"hidden_act": "swish"}, "transformers' swish is silu"),
    ({"hidden_act": "swiglu"}, "hidden_act is 'swiglu'"),
    ({"rope_parameters": [1]}, "rope_parameters is [1], not an object"),
    ({"rope_parameters": {"rope_type": "llama3", "factor": 8.0, "rope_theta": 5e5}},
     "rope scaling llama3 needs low_freq_factor, high_freq_factor to be a positive"),
    ({"rope_parameters": None, "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0}},
     "rope scaling llama3 needs high_freq_factor"),
    ({"rope_parameters": {"rope_type": "linear", "rope_theta": 1e4}}, "rope scaling linear needs factor"),
])
def test_garbage_base_configs_are_one_line_before_any_tensor(parts, monkeypatch, fields, needle):
    """Were written as they are: `hidden_act: null` (trtllm-build: 'unsupported activation function'), a llama3
    scaling without the numbers transformers refuses it without (the engine took TensorRT-LLM's defaults), and a
    `rope_parameters` that is no object (ignored: rotary_base 10000)."""
    from redrafter_trt.io import TensorSource

    monkeypatch.setattr(TensorSource, "from_hf_folder", lambda *a: pytest.fail("a tensor source was opened"))
    path = parts[0] / "config.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | fields))
    assert_one_line_error(convert_err(parts), f"{path}: ", needle, "config")



# TensorRT-LLM 1.2's functional.ACT2FN less the gated ones and softplus: what its Llama and QWen GatedMLP build
TRTLLM_1_2_GATED_MLP_ACTS = ("silu", "gelu", "gelu_new", "gelu_fast", "gelu_pytorch_tanh", "openai-gelu", "quick_gelu",
                             "relu", "relu2", "squared-relu", "tanh", "sigmoid", "identity")


@pytest.mark.parametrize("act", TRTLLM_1_2_GATED_MLP_ACTS)
def test_every_activation_trtllm_builds_converts_and_the_runtime_computes_only_silu(tiny_llama, tmp_path, act):
    """convert takes every hidden_act TensorRT-LLM 1.2's GatedMLP builds (spelled out here from its ACT2FN); the
    reference runtime computes silu(fc) * gate alone (runtime/layer.py), so it refuses every other, gelu included,
    rather than run a gelu model as silu."""
    from redrafter_trt.base_plan import hf_config
    from redrafter_trt.convert import ConvertOptions
    from redrafter_trt.errors import ConfigError
    from redrafter_trt.runtime.config import RuntimeConfig

    (tmp_path / "config.json").write_text(json.dumps(json.loads((tiny_llama / "config.json").read_text())
                                                     | {"hidden_act": act}))
    hf_config(tmp_path, ConvertOptions())  # the config check convert makes before reading any tensor
    raw = {"hidden_size": 64, "num_attention_heads": 2, "num_hidden_layers": 1, "vocab_size": 10, "hidden_act": act}
    if act == "silu":
        RuntimeConfig.from_dict(raw)
        return
    with pytest.raises(ConfigError, match=f"hidden_act '{act}' is not computed by the reference runtime"):
        RuntimeConfig.from_dict(raw)

LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0}


@pytest.mark.parametrize("layout", ["rope_scaling", "rope_parameters"])
def test_llama3_scaling_without_original_length_is_what_transformers_computes(parts, layout):
    """transformers 5 takes a missing original_max_position_embeddings from max_position_embeddings; TensorRT-LLM's
    llama3 took 8192: the engine's RoPE silently differed from the model's."""
    from transformers import AutoConfig

    path = parts[0] / "config.json"
    raw = {k: v for k, v in json.loads(path.read_text()).items() if k not in ("rope_parameters", "rope_scaling")}
    rope = {"rope_scaling": LLAMA3, "rope_theta": 5e5} if layout == "rope_scaling" else \
        {"rope_parameters": {**LLAMA3, "rope_theta": 5e5}}
    path.write_text(json.dumps(raw | rope))
    assert run_cli("convert", "--base", parts[0], "--drafter", parts[1], "--output", parts[2]).exit_code == 0
    written = json.loads((parts[2] / "config.json").read_text())["rotary_scaling"]
    assert written["original_max_position_embeddings"] == 512
    if TRANSFORMERS_5:  # transformers 4 refuses this config (its llama3 validation requires the key)
        assert AutoConfig.from_pretrained(parts[0]).rope_parameters["original_max_position_embeddings"] == 512


@pytest.mark.parametrize("layout, scaling, loads_in_4", [
    ("rope_parameters", {"rope_type": "yarn", "factor": 4.0}, False),  # transformers 4 reads no rope_parameters
    ("rope_parameters", LLAMA3 | {"original_max_position_embeddings": 256}, False),
    ("rope_scaling", LLAMA3, False),  # transformers 4's llama3 requires the scaling's own
    ("rope_scaling", {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 128}, True),
    ("rope_scaling", LLAMA3 | {"original_max_position_embeddings": 128}, True)])
def test_top_level_original_positions_is_what_transformers_computes(parts, layout, scaling, loads_in_4):
    """A review: a top-level original_max_position_embeddings (Phi-3's layout) is what transformers 5's
    standardize_rope_params computes a llama3 or yarn RoPE with, in place of the scaling's or max_position_embeddings
    (512 here): convert wrote those, so the engine's RoPE differed from the model's."""
    from transformers import AutoConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    from redrafter_trt.runtime.config import RuntimeConfig, rope_inv_freq

    path = parts[0] / "config.json"
    raw = {k: v for k, v in json.loads(path.read_text()).items() if k not in ("rope_parameters", "rope_scaling")}
    rope = {layout: scaling | ({"rope_theta": 5e5} if layout == "rope_parameters" else {}), "rope_theta": 5e5}
    path.write_text(json.dumps(raw | rope | {"original_max_position_embeddings": 128}))
    assert run_cli("convert", "--base", parts[0], "--drafter", parts[1], "--output", parts[2]).exit_code == 0
    assert json.loads((parts[2] / "config.json").read_text())["rotary_scaling"]["original_max_position_embeddings"] \
        == 128
    if TRANSFORMERS_5 or loads_in_4:
        hf = AutoConfig.from_pretrained(parts[0])
        inv, scale = ROPE_INIT_FUNCTIONS[scaling["rope_type"]](hf, "cpu")
        ours, our_scale = rope_inv_freq(RuntimeConfig.from_dir(parts[2]))
        assert torch.allclose(ours, inv.float(), rtol=1e-6, atol=0) and our_scale == pytest.approx(scale)


@pytest.mark.parametrize("scaling, fourth", [({"rope_type": "yarn", "factor": 4.0}, "512 (max_position_embeddings)"),
                                             ({"rope_type": "yarn", "factor": 4.0,
                                               "original_max_position_embeddings": 256}, "256 (rope_scaling's)"),
                                             (LLAMA3 | {"original_max_position_embeddings": 256}, "256")])
def test_top_level_original_positions_transformers_4_and_5_read_apart_is_refused(parts, scaling, fourth):
    """transformers 5 computes with the top-level original_max_position_embeddings, 4.57 (and TensorRT-LLM) with the
    rope_scaling's, its yarn else with max_position_embeddings: where those differ which RoPE the model was trained
    with is not in the config, and convert refuses it rather than guess."""
    path = parts[0] / "config.json"
    raw = {k: v for k, v in json.loads(path.read_text()).items() if k not in ("rope_parameters", "rope_scaling")}
    path.write_text(json.dumps(raw | {"rope_scaling": scaling, "original_max_position_embeddings": 128}))
    assert_one_line_error(convert_err(parts), f"{path}: top-level original_max_position_embeddings 128",
                          "transformers 5 computes RoPE with 128", f"transformers 4 with {fourth}",
                          "inside rope_scaling")


def test_rope_parameters_with_the_older_type_key_is_read(parts):
    """`rope_parameters: {"type": "linear", "factor": 4}` (rope_theta at the top) was skipped as no rope_parameters:
    no scaling was written, while transformers 5 computes the linear scaling."""
    from transformers import AutoConfig

    path = parts[0] / "config.json"
    raw = {k: v for k, v in json.loads(path.read_text()).items() if k not in ("rope_parameters", "rope_scaling")}
    path.write_text(json.dumps(raw | {"rope_parameters": {"type": "linear", "factor": 4.0}, "rope_theta": 5e4}))
    assert run_cli("convert", "--base", parts[0], "--drafter", parts[1], "--output", parts[2]).exit_code == 0
    cfg = json.loads((parts[2] / "config.json").read_text())
    assert (cfg["rotary_base"], cfg["rotary_scaling"]) == (5e4, {"type": "linear", "factor": 4.0})
    if TRANSFORMERS_5:  # transformers 4 reads no rope_parameters
        truth = AutoConfig.from_pretrained(parts[0]).rope_parameters
        assert (truth["rope_theta"], truth["rope_type"], truth["factor"]) == (5e4, "linear", 4.0)


YARN = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 512}


@pytest.mark.parametrize("rope, written", [
    ({"rope_parameters": {"rope_theta": 1e6, "rope_type": "default"}, "rope_scaling": YARN}, None),
    ({"rope_parameters": {"rope_theta": 1e6, **YARN}, "rope_scaling": YARN}, None),
    ({"rope_parameters": {"rope_theta": 1e6, **YARN}, "rope_scaling": YARN, "rope_theta": 1e6}, (1e6, YARN)),
    ({"rope_parameters": {"rope_theta": 1e4, **YARN}, "rope_scaling": {**YARN, "type": "yarn"}}, (1e4, YARN)),
    ({"rope_parameters": {"rope_theta": 1e6, **YARN}}, (1e6, YARN)),
    ({"rope_parameters": {"rope_theta": 1e6, "rope_type": "default"}, "rope_scaling": {}}, (1e6, None)),
])
def test_rope_scaling_beside_rope_parameters_is_read_as_transformers_reads_it_or_refused(parts, rope, written):
    """Qwen2.5's model card says to add a YaRN `rope_scaling` to config.json; on a config saved by transformers 5
    (`rope_parameters`) the converter kept rope_parameters' scaling and dropped the YaRN silently, while transformers
    5 reads rope_scaling alone (and forgets rope_parameters' rope_theta). Agreeing keys convert; others are one
    line."""
    from transformers import AutoConfig

    path = parts[0] / "config.json"
    raw = json.loads(path.read_text())
    raw.pop("rope_theta", None)
    path.write_text(json.dumps({k: v for k, v in raw.items() if k != "rope_scaling"} | rope))
    if written is None:
        assert_one_line_error(convert_err(parts), "rope_scaling", "move the scaling into rope_parameters")
        return
    assert run_cli("convert", "--base", parts[0], "--drafter", parts[1], "--output", parts[2]).exit_code == 0
    cfg = json.loads((parts[2] / "config.json").read_text())
    scaling = {k: v for k, v in cfg["rotary_scaling"].items() if k != "type"} if cfg["rotary_scaling"] else None
    assert (cfg["rotary_base"], scaling) == written
    if not TRANSFORMERS_5:
        return  # transformers 4 reads no rope_parameters: these layouts are transformers 5's
    truth = AutoConfig.from_pretrained(parts[0]).rope_parameters  # what transformers computes with
    assert truth["rope_theta"] == written[0] and truth["rope_type"] == (written[1] or {"rope_type": "default"})["rope_type"]


LINEAR_2 = {"rope_type": "linear", "factor": 2.0}


@pytest.mark.parametrize("rope, written", [
    ({"rope_scaling": LINEAR_2 | {"rope_theta": 5e5}}, "rope_scaling holds rope_theta 500000: transformers 5 computes "
                                                       "RoPE with 500000, transformers 4 with 10000 (the top level's, "
                                                       "absent: the default): put the model's rope_theta at the top "
                                                       "level"),
    ({"rope_scaling": LINEAR_2 | {"rope_theta": 5e5}, "rope_theta": 1e4},
     "transformers 5 computes RoPE with 500000, transformers 4 with 10000 (the top level's)"),
    ({"rope_scaling": {"rope_type": "default", "rope_theta": 5e5}}, "transformers 5 computes RoPE with 500000"),
    ({"rope_scaling": LINEAR_2 | {"rope_theta": 5e5}, "rope_theta": 1e6,
      "rope_parameters": LINEAR_2 | {"rope_theta": 1e6}}, "transformers 5 computes RoPE with 500000"),
    ({"rope_scaling": LINEAR_2 | {"rope_theta": 5e5}, "rope_theta": 5e5}, (5e5, LINEAR_2)),
    ({"rope_scaling": LINEAR_2 | {"rope_theta": 1e4}}, (1e4, LINEAR_2)),
    # transformers 5 keeps a null one (and fails: TypeError)
    ({"rope_scaling": LINEAR_2 | {"rope_theta": None}, "rope_theta": 5e5}, "rope_theta is null in rope_scaling"),
    ({"rope_parameters": {"rope_type": "default", "rope_theta": None}, "rope_theta": 5e5},
     "rope_theta is null in rope_parameters"),
])
def test_rope_theta_inside_rope_scaling_is_read_as_transformers_reads_it_or_refused(parts, rope, written):
    """A review: a Llama config with no top-level rope_theta and rope_scaling {linear, factor 2, rope_theta 500000}
    converted with rotary_base 10000, where transformers 5 (convert_rope_params_to_dict) takes rope_scaling as its
    rope_parameters and computes with 500000; transformers 4.57 (TensorRT-LLM 1.2's pin) reads the top level only.
    Where the two agree it converts; else one line with a fix both read."""
    from transformers import AutoConfig

    path = parts[0] / "config.json"
    raw = {k: v for k, v in json.loads(path.read_text()).items()
           if k not in ("rope_theta", "rope_scaling", "rope_parameters")}
    path.write_text(json.dumps(raw | rope))
    if isinstance(written, str):
        assert_one_line_error(convert_err(parts), written, "delete it from rope_")
        return
    assert run_cli("convert", "--base", parts[0], "--drafter", parts[1], "--output", parts[2]).exit_code == 0
    cfg = json.loads((parts[2] / "config.json").read_text())
    assert (cfg["rotary_base"], cfg["rotary_scaling"]) == written
    truth = AutoConfig.from_pretrained(parts[0])
    assert (truth.rope_parameters["rope_theta"] if TRANSFORMERS_5 else truth.rope_theta) == written[0]


def window_parts(tmp_path: Path, arch: str, drop=(), **fields):
    """A tiny base of `arch` (a HF class name) and its drafter, its config.json without the keys `drop` and with
    `fields`."""
    kind = arch[:-len("ForCausalLM")].lower()
    base = make_hf(tmp_path / "base", kind, **({"head_dim": 16} if kind == "qwen3" else {}))
    path = base / "config.json"
    raw = {k: v for k, v in json.loads(path.read_text()).items() if k not in drop}
    path.write_text(json.dumps(raw | fields))
    return base, make_drafter(tmp_path / "drafter", base), tmp_path / "out"


@pytest.mark.parametrize("arch, fields, refused", [
    ("MistralForCausalLM", {"sliding_window": 128}, True),
    ("MistralForCausalLM", {"sliding_window": None}, False),
    *[(arch, fields, refused) for arch in ("Qwen2ForCausalLM", "Qwen3ForCausalLM") for fields, refused in [
        ({"use_sliding_window": True, "sliding_window": 128, "max_window_layers": 1}, True),
        ({"use_sliding_window": True, "sliding_window": 128, "layer_types": ["full_attention", "sliding_attention"]},
         True),
        ({"use_sliding_window": False, "sliding_window": 128, "max_window_layers": 1}, False),
        ({"use_sliding_window": True, "sliding_window": 128, "max_window_layers": 2}, False)]],
    # transformers' Llama has no window, whatever its config.json says (a Mistral's or Qwen's keys left in it)
    ("LlamaForCausalLM", {"sliding_window": 128}, False),
    ("LlamaForCausalLM", {"use_sliding_window": True, "sliding_window": 128, "max_window_layers": 0}, False),
    # a window at or past max_position_embeddings still slides below the positions a stretching scaling reaches
    ("MistralForCausalLM", {"sliding_window": 128, "max_position_embeddings": 64, "rope_parameters": {
        "rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64, "rope_theta": 10000.0}}, True),
    ("Qwen2ForCausalLM", {"use_sliding_window": True, "sliding_window": 128, "max_window_layers": 1,
                          "max_position_embeddings": 128, "rope_parameters": {
                              "rope_type": "linear", "factor": 2.0, "rope_theta": 10000.0}}, True),
    ("MistralForCausalLM", {"sliding_window": 128, "max_position_embeddings": 64, "rope_parameters": {
        "rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": 64, "rope_theta": 10000.0}}, False),
    ("MistralForCausalLM", {"sliding_window": 128, "max_position_embeddings": 64, "rope_parameters": {  # unstretched
        "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
        "original_max_position_embeddings": 64, "rope_theta": 10000.0}}, False),
])
def test_sliding_window_attention_is_refused(tmp_path, arch, fields, refused):
    """TensorRT-LLM's Llama and QWen models attend over the whole context: a windowed base would silently differ. A
    review: a Mistral with max_position_embeddings 64, sliding_window 128 and yarn factor 4 converted without a word,
    and the runtime attended over up to 256 positions where transformers slides the window of 128. A base that does
    not slide converts."""
    parts = window_parts(tmp_path, arch, ("rope_scaling", "rope_theta", "layer_types"),  # (transformers 5 writes them)
                         **{"max_position_embeddings": 4096, **fields})
    result = convert_err(parts) if refused else run_cli("convert", "--base", parts[0], "--drafter", parts[1],
                                                         "--output", parts[2])
    if refused and fields.get("max_position_embeddings", 4096) <= 128:
        # a review: sent to a version of the model without a sliding window (Mistral v0.2), which does not fit: the
        # window covers every position the model has, only the rope scaling's stretch reaches past it
        assert_one_line_error(result, "sliding_window=128 is not supported", "covers only 128 of the ",
                              f"remove the rope scaling if it was added to stretch the context (the model then serves "
                              f"its {fields['max_position_embeddings']} positions, all inside the window)")
        assert "Mistral v0.2" not in result.output, result.output
    elif refused:
        assert_one_line_error(result, "sliding_window=128 is not supported", "Mistral v0.2 or newer")
    else:
        assert result.exit_code == 0, result.output


@pytest.mark.parametrize("arch, fields, layers, refused", [
    ("MistralForCausalLM", {}, 2, True),
    *[(arch, {"use_sliding_window": True}, layers, refused) for arch in ("Qwen2ForCausalLM", "Qwen3ForCausalLM")
      for layers, refused in [(30, True),   # layers 28 and 29 slide
                              (2, False)]],
])
def test_a_config_without_its_window_keys_gets_transformers_defaults(tmp_path, arch, fields, layers, refused):
    """A review: a Mistral config.json without `sliding_window` (transformers' MistralConfig then takes 4096) was
    converted for a 32768-token context, and the checkpoint attended over all of it where transformers slides a window
    of 4096 (logits apart from position 4096 on). Qwen2's and Qwen3's missing `sliding_window` / `max_window_layers`
    are 4096 and 28 there too: windowed from layer 28 on, so one of fewer layers converts."""
    from transformers import AutoConfig

    parts = window_parts(tmp_path, arch, ("sliding_window", "max_window_layers", "layer_types"),
                         max_position_embeddings=32768, **fields)
    if layers != 2:  # the base's tensors have 2 layers: refused before they are read
        path = parts[0] / "config.json"
        path.write_text(json.dumps(json.loads(path.read_text()) | {"num_hidden_layers": layers}))
    hf = AutoConfig.from_pretrained(parts[0])
    assert hf.sliding_window == 4096 and refused is (arch == "MistralForCausalLM"
                                                     or "sliding_attention" in hf.layer_types)
    result = convert_err(parts) if refused else run_cli("convert", "--base", parts[0], "--drafter", parts[1],
                                                         "--output", parts[2])
    if refused:
        assert_one_line_error(result, "sliding_window=4096 is not supported")
    else:
        assert result.exit_code == 0, result.output


@pytest.mark.parametrize("arch", ["LlamaForCausalLM", "Qwen3ForCausalLM"])
def test_a_config_without_model_type_is_read_as_its_architecture(tiny_llama, arch):
    """model_type is checked only where given (transformers may guess it from the folder's name): a config.json
    without one is read as the class its `architectures` names, not a KeyError traceback."""
    from redrafter_trt.config import BaseModelConfig
    from redrafter_trt.registry import model_type_problem

    hf = {k: v for k, v in json.loads((tiny_llama / "config.json").read_text()).items() if k != "model_type"}
    hf["architectures"] = [arch]
    assert model_type_problem(hf, "config.json") is None
    assert BaseModelConfig.from_hf(hf, "config.json").spec.hf_architecture == arch

@pytest.mark.parametrize("cmd", ["convert", "init-drafter"])
@pytest.mark.parametrize("arch, model_type", [("qwen2", "qwen3"), ("qwen3", "qwen2"), ("llama", "mistral")])
def test_a_model_type_other_than_the_architectures_is_refused(tmp_path, arch, model_type, cmd):
    """A review: convert took qwen_type from model_type whatever the architecture: a Qwen2ForCausalLM saying qwen3 was
    a KeyError traceback (q_norm looked for), a Qwen3ForCausalLM saying qwen2 a checkpoint without its q/k norms that
    inspect passed, logits 0.32 off transformers'. The architecture decides the model; a model_type disagreeing is
    refused before any work, by every reader of a HF base (train and bench --hf-dir: test_cli_bad_input)."""
    import transformers

    from redrafter_trt.registry import REGISTRY

    base = make_hf(tmp_path / "base", arch, head_dim=16)
    drafter = make_drafter(tmp_path / "drafter", base)
    path = base / "config.json"
    raw = json.loads(path.read_text())
    path.write_text(json.dumps(raw | {"model_type": model_type}))
    out = tmp_path / "out"
    if cmd == "convert":
        result = convert_err((base, drafter, out))
    else:
        result = run_cli("init-drafter", "--base", base, "--output", out)
        assert not out.exists()
    assert_one_line_error(result, f"config.json: model_type '{model_type}' disagrees with architectures "
                          f"{raw['architectures'][0]} (whose model_type is '{raw['model_type']}'",
                          "correct one of them")
    from redrafter_trt.hf_model import transformers_config_refusal  # train's, bench --hf-dir's: the same check

    assert "disagrees with architectures" in transformers_config_refusal(base)
    # each registered class's model_type is its transformers config class's
    assert {a: s.model_type for a, s in REGISTRY.items()} == {
        a: getattr(transformers, a).config_class.model_type for a in REGISTRY}


def test_base_config_not_json(parts):
    (parts[0] / "config.json").write_text("{not json")
    assert_one_line_error(convert_err(parts), "not valid JSON")


LFS_POINTER = (b"version https://git-lfs.github.com/spec/v1\noid sha256:4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1"
               b"258daaa5e2ca24d17e2393\nsize 1048576\n")
NOT_A_TORCH_FILE = "re-download it, or re-save its state dict with torch.save"


@pytest.mark.parametrize("which, file", [(1, "model.pt"), (0, "pytorch_model.bin")])
@pytest.mark.parametrize("content, said", [
    (b"", "is not a PyTorch file (it is empty)"),
    (b"\x80\x04garbage\xff\xfe\x00", "is truncated or not a PyTorch file (byte 103 is no opcode of a binary pickle)"),
    (b"\x80\x02\xff\xfe", "is truncated or not a PyTorch file (byte 255 is no opcode of a binary pickle)"),
    (b"hello", "is not a PyTorch file (it starts with b'hello')"),
    (b"abc", "is not a PyTorch file (it starts with b'abc')"),
    (b"e", "is not a PyTorch file (it starts with b'e')"),
    (b"q", "is not a PyTorch file (it starts with b'q')"),
    (b"<!DOCTYPE html>\n<html><head><title>Sign in</title>", "is not a PyTorch file (it is an HTML page)"),
    (LFS_POINTER, "is a Git LFS pointer, not the weights: run `git lfs pull` in its repository (or download the file "
                  "itself)")], ids=["empty", "garbage", "bad-opcode", "hello", "abc", "e", "q", "html", "lfs"])
def test_broken_pickled_drafter(parts, which, file, content, said):
    """A review: a drafter's model.pt or a base's pytorch_model.bin that is no pickle at all ended in a traceback (`hello`:
    KeyError: 101 from torch's unpickler; `abc`, `q`: IndexError), and a Git LFS pointer or an HTML page was called a
    pickle that would run code, to be loaded with torch.load(weights_only=False). Its first bytes name what it is,
    and the fix."""
    folder = parts[which]
    (folder / "model.safetensors").unlink()
    (folder / file).write_bytes(content)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing printed beside the one line (torch warned of the pickle protocol)
        result = convert_err(parts)
    assert_one_line_error(result, f"{folder / file} {said}",
                          *([] if content == LFS_POINTER else [NOT_A_TORCH_FILE]))
    assert "would run code" not in result.stderr and "weights_only=False" not in result.stderr


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy"])
def test_a_protocol_1_torch_save_is_a_pickle_to_load_by_trust_not_garbage(parts, zip_format):
    """A review: torch.save(pickle_protocol=1) writes text opcodes (its legacy format opens with the magic number as
    text, `L1195...`), which the first-bytes check called "not a PyTorch file" and garbage; torch.load(weights_only=
    False) reads it, as the message before said."""
    folder = parts[1]
    state = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    torch.save(state, folder / "model.pt", pickle_protocol=1, _use_new_zipfile_serialization=zip_format)
    result = convert_err(parts)
    assert_one_line_error(result, f"{folder / 'model.pt'} is a pickle that would run code",
                          "torch.load(weights_only=False)")
    assert "not a PyTorch file" not in result.stderr


@pytest.mark.parametrize("which", [0, 1], ids=["base", "drafter"])
def test_a_safetensors_file_that_is_a_git_lfs_pointer(parts, which):
    """A model.safetensors left as a Git LFS pointer (a clone made without git-lfs) was "truncated or not a
    safetensors file": it names the pointer and `git lfs pull`, as a model.pt does."""
    path = parts[which] / "model.safetensors"
    path.write_bytes(LFS_POINTER)
    assert_one_line_error(convert_err(parts), f"{path} is a Git LFS pointer, not the weights: run `git lfs pull`")


@pytest.mark.parametrize("which, file", [(1, "model.pt"), (0, "pytorch_model.bin")])
def test_a_pickled_weights_path_that_cannot_be_opened(parts, which, file):
    """A model.pt or pytorch_model.bin that cannot be opened (here a folder) is named as such, not as a file
    'truncated or not a PyTorch file'."""
    folder = parts[which]
    (folder / "model.safetensors").unlink()
    (folder / file).mkdir()
    assert_one_line_error(convert_err(parts), f"{folder / file} cannot be read (Is a directory)")


def test_a_model_pt_holding_a_training_checkpoint(parts, tmp_path):
    """A model.pt saved as a training checkpoint, {"state_dict": ..., "epoch": 3}, converts as its state dict; a
    state dict with a non-tensor beside its tensors ({**sd, "epoch": 3}) is refused, not converted without it."""
    base, drafter, out = parts
    want = run_cli("convert", "--base", base, "--drafter", drafter, "--output", tmp_path / "want")
    assert want.exit_code == 0, want.output
    sd = load_file(drafter / "model.safetensors")
    (drafter / "model.safetensors").unlink()
    torch.save({"state_dict": sd, "epoch": 3}, drafter / "model.pt")
    assert run_cli("convert", "--base", base, "--drafter", drafter, "--output", out).exit_code == 0
    for r in (f.name for f in (tmp_path / "want").glob("rank*.safetensors")):
        got, ref = load_file(out / r), load_file(tmp_path / "want" / r)
        assert set(got) == set(ref) and all(torch.equal(got[k], ref[k]) for k in got), r
    shutil.rmtree(out)
    torch.save({**sd, "epoch": 3}, drafter / "model.pt")
    assert_one_line_error(convert_err(parts), f"{drafter / 'model.pt'} does not hold a state dict of tensors",
                          "save `model.state_dict()` instead")


def test_checkpoint_config_field_types(parts, tmp_path):
    """A converted checkpoint whose config.json was edited by hand: inspect names the field, build and run refuse."""
    assert run_cli("convert", "--base", parts[0], "--drafter", parts[1], "--output", parts[2]).exit_code == 0
    path = parts[2] / "config.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | {"redrafter_num_beams": "five", "hidden_size": 6.5}))
    res = run_cli("inspect", parts[2])
    assert res.exit_code == 1 and "redrafter_num_beams is 'five'" in res.output and "hidden_size is 6.5" in res.output
    assert "Traceback" not in res.output
    assert_one_line_error(run_cli("build", "--checkpoint-dir", parts[2], "--output-dir", tmp_path / "e", "--dry-run"),
                          "hidden_size is 6.5")
    assert_one_line_error(run_cli("run", "--checkpoint-dir", parts[2], "--tokenizer-dir", parts[0], "--input-text",
                                  "hi"), "hidden_size is 6.5")


def test_inspect_of_a_missing_folder(tmp_path):
    assert_one_line_error(run_cli("inspect", tmp_path / "nope"), "is not a folder", "--output of convert")


def test_existing_output_needs_force(parts):
    parts[2].mkdir()
    result = run_cli("convert", "--base", parts[0], "--drafter", parts[1], "--output", parts[2])
    assert_one_line_error(result, "already exists", "--force")
    assert run_cli("convert", "--base", parts[0], "--drafter", parts[1], "--output", parts[2], "--force").exit_code == 0


@pytest.mark.parametrize("flag", ["--num-beams", "--draft-len"])
def test_beams_and_draft_len_at_least_one(parts, flag):
    assert_one_line_error(convert_err(parts, flag, 0), flag)


def test_draft_len_above_trained(parts):
    cfg = json.loads((parts[1] / "config.json").read_text())
    cfg["predict_n"] = 3
    (parts[1] / "config.json").write_text(json.dumps(cfg))
    assert_one_line_error(convert_err(parts, "--draft-len", 4), "trained to predict")


@pytest.mark.parametrize("where", ["base", "drafter"])
def test_nan_weights(parts, where):
    f = (parts[0] if where == "base" else parts[1]) / "model.safetensors"
    t = load_file(f)
    name = next(k for k in t if k.endswith("weight") and t[k].dim() == 2)
    t[name][0, 0] = float("nan")
    save_file(t, f)
    assert_one_line_error(convert_err(parts), "NaN")


@pytest.mark.parametrize("name", ["model.layers.1.mlp.down_proj.weight", "model.layers.0.self_attn.k_proj.weight"])
@pytest.mark.parametrize("file", ["model.safetensors", "pytorch_model.bin"])
def test_nan_in_a_hugging_face_base_names_its_tensor_and_file(parts, name, file):
    """A review: a NaN in a Hugging Face base was refused as `transformer.layers.1.mlp.proj.weight holds NaN or Inf:
    ... re-export them`, the checkpoint's name, which the user's folder does not hold, and a TensorRT-LLM base's fix.
    It names the Hugging Face tensor (k_proj, not the fused qkv it goes into) and its file, and to re-download."""
    base = parts[0]
    t = load_file(base / "model.safetensors")
    t[name][1, 2] = float("nan")
    (base / "model.safetensors").unlink()
    if file == "pytorch_model.bin":
        torch.save(t, base / file)
    else:
        save_file(t, base / file)
    assert_one_line_error(convert_err(parts), f"base {base / file}: {name} holds NaN or Inf: the base's weights are "
                                              f"broken; re-download it")


@pytest.mark.parametrize("tie", [False, True], ids=["lm_head", "tied embedding"])
def test_init_drafter_from_a_base_head_holding_nan(parts, tie):
    """init-drafter copies the base's lm_head into the drafter's: a NaN there was written into the drafter, exit 0,
    and convert then told the user to retrain or re-export the drafter. The base is named, nothing written."""
    t = load_file(parts[0] / "model.safetensors")
    if tie:
        del t["lm_head.weight"]
        config = parts[0] / "config.json"
        config.write_text(json.dumps(json.loads(config.read_text()) | {"tie_word_embeddings": True}))
    head = "model.embed_tokens.weight" if tie else "lm_head.weight"
    t[head][3, 1] = float("nan")
    save_file(t, parts[0] / "model.safetensors")
    out = parts[2]
    assert_one_line_error(run_cli("init-drafter", "--base", parts[0], "--output", out),
                          f"base {parts[0]}: {head} holds NaN or Inf", "re-download")
    assert not out.exists()


@pytest.mark.parametrize("where", ["base", "drafter"])
def test_weights_beyond_float16_range(parts, where):
    """A finite weight float16 cannot hold: the cast made it Inf, and the error says so (not 'broken source')."""
    f = (parts[0] if where == "base" else parts[1]) / "model.safetensors"
    t = load_file(f)
    name = next(k for k in t if k.endswith("weight") and t[k].dim() == 2)
    t[name][0, 0] = 1e5
    save_file(t, f)
    assert_one_line_error(convert_err(parts, "--dtype", "float16"), "exceed float16's range")
    b, d, out = parts
    assert run_cli("convert", "--base", b, "--drafter", d, "--output", out.parent / "ok", "--dtype", "bfloat16"
                   ).exit_code == 0


@pytest.mark.parametrize("stored, dtype, value, fix", [
    (torch.bfloat16, "float16", 1e6, "convert with --dtype bfloat16 or float32"),
    (torch.float32, "bfloat16", 3.4e38, "convert with --dtype float32"),
    # a review: bfloat16 was offered for a float32 3.4e38 as float16, and refused it in turn: offered as cast
    (torch.float32, "float16", 3.4e38, "convert with --dtype float32")],
    ids=["bfloat16 as float16", "float32 as bfloat16", "float32 beyond bfloat16 as float16"])
@pytest.mark.parametrize("where", ["base", "drafter"])
def test_a_finite_weight_beyond_the_dtypes_range_names_the_cast(tmp_path, stored, dtype, value, fix, where):
    """A review: a weight finite as stored that the cast to --dtype makes Inf was refused as "exceed float16's range
    or the source is broken" (float16), or "the source weights are broken, re-export them" (bfloat16: a float32
    value beyond its 3.39e38), though the weights are sound. The refusal names the cast, the stored dtype and the
    dtypes that hold them; the first of those converts."""
    base = make_hf(tmp_path / "base", dtype=stored)
    drafter = make_drafter(tmp_path / "drafter", base, dtype=stored)
    f = (base if where == "base" else drafter) / "model.safetensors"
    t = load_file(f)
    name = next(k for k in t if k.endswith("weight") and t[k].dim() == 2)
    t[name][1, 2] = value
    save_file(t, f, metadata={"format": "pt"})
    limit = torch.finfo(getattr(torch, dtype)).max
    st = {torch.bfloat16: "BF16", torch.float32: "F32"}[stored]
    assert_one_line_error(convert_err((base, drafter, tmp_path / "out"), "--dtype", dtype),
                          f" holds Inf in {dtype}: finite as stored ({st}), its values exceed {dtype}'s range "
                          f"(largest {limit:g}): {fix}")
    wider = fix.split()[-3 if " or " in fix else -1]
    assert run_cli("convert", "--base", base, "--drafter", drafter, "--output", tmp_path / "out", "--dtype", wider
                   ).exit_code == 0


def test_a_weight_not_finite_as_stored_is_refused_whatever_the_dtype(tmp_path):
    """A bfloat16 base holding an Inf as stored, converted to float16: the stored tensor is named, with its file,
    as broken (not a cast beyond float16's range: --dtype bfloat16 would not help)."""
    base = make_hf(tmp_path / "base", dtype=torch.bfloat16)
    drafter = make_drafter(tmp_path / "drafter", base)
    t = load_file(base / "model.safetensors")
    name = "model.layers.1.mlp.down_proj.weight"
    t[name][1, 2] = float("inf")
    save_file(t, base / "model.safetensors", metadata={"format": "pt"})
    assert_one_line_error(convert_err((base, drafter, tmp_path / "out"), "--dtype", "float16"),
                          f"base {base / 'model.safetensors'}: {name} holds NaN or Inf: the base's weights are broken; "
                          f"re-download it")


@pytest.mark.long  # processes or signals: setup.cfg's `long` job (.ci/run)
def test_sigkill_leaves_nothing_inspect_accepts(tmp_path, smollm2):
    """Kill a SmolLM2 conversion mid-write: no folder named --output appears, `inspect` rejects what is left,
    and running again succeeds."""
    from redrafter_trt.drafter import init_drafter_for_base

    d = tmp_path / "d"
    init_drafter_for_base(smollm2, d, exit_dim=576)
    out = tmp_path / "ckpt"
    cmd = [sys.executable, "-c", "from redrafter_trt.cli import main; main()", "convert", "--base", str(smollm2),
           "--drafter", str(d), "--output", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until the rank file is being written
        partial = list(tmp_path.glob(".ckpt.partial-*/rank0.safetensors"))
        if partial and partial[0].stat().st_size > 50_000_000:
            break
        time.sleep(0.05)
    else:
        pytest.fail("conversion never started writing")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    leftovers = list(tmp_path.glob(".ckpt.partial-*"))
    assert leftovers
    assert run_cli("inspect", leftovers[0]).exit_code == 1
    assert subprocess.run(cmd, capture_output=True).returncode == 0
    assert run_cli("inspect", out).exit_code == 0
    assert not list(tmp_path.glob(".ckpt.partial-*"))


@pytest.mark.parametrize("option, value, needle", [("num_beams", "5", "--num-beams '5' is invalid"),
                                                   ("draft_len", 0, "--draft-len 0 is invalid"),
                                                   ("tp_size", 2.0, "--tp-size 2.0 is invalid"),
                                                   ("device", "gpu", "device='gpu': it must be null or cpu, cuda"),
                                                   ("calib_size", 16.0, "calib_size=16.0: it must be null or a pos")])
def test_convert_options_from_a_script_are_checked(parts, option, value, needle):
    """convert(..., num_beams="5") from a script was a TypeError from comparing a str with 1; the library's options
    are checked as the CLI's are, one line naming the option."""
    from redrafter_trt.convert import convert
    from redrafter_trt.errors import ConfigError

    base, drafter, out = parts
    fp8 = {"quantize": "fp8"} if option in ("device", "calib_size") else {}  # a script's "gpu" reached torch
    with pytest.raises(ConfigError, match=needle):
        convert(base, drafter, out, **{option: value}, **fp8)
    assert not out.exists()


def test_an_fp8_drafter_is_refused(parts):
    """A drafter whose safetensors hold float8_e4m3fn weights (no scale anywhere: a drafter is never quantized) was
    cast to float and converted: refused naming the tensor."""
    f = parts[1] / "model.safetensors"
    t = load_file(f)
    save_file(t | {"rnn_w.weight": t["rnn_w.weight"].to(torch.float8_e4m3fn)}, f)
    assert_one_line_error(convert_err(parts), f"drafter {parts[1]}", "rnn_w.weight is F8_E4M3", "has no scales",
                          "re-download or re-export")


@pytest.mark.parametrize("extra, fix", [
    ({"attention_factor": 2.0}, "in config.json, replace attention_factor 2.0 with \"mscale\": "),
    ({"attention_factor": 1.0, "mscale": 0.707}, "in config.json, replace attention_factor 1.0 and mscale 0.707 with"),
    ({"mscale": 0.707}, "remove mscale 0.707 from config.json's rope scaling: transformers' cos/sin scale is 1.13863 "
                        "without it too, which TensorRT-LLM computes"),
    ({"truncate": False}, "TensorRT-LLM 1.2 cannot build this model's RoPE"),
])
def test_a_rope_trtllm_computes_otherwise_is_refused_with_a_fix_that_works(parts, extra, fix):
    """A review: the refusal of a yarn TensorRT-LLM 1.2 computes otherwise ended in 'TensorRT-LLM would build another
    RoPE than the model's', no fix. It names one: the cos/sin scale written in the keys both read alike, which
    transformers computes the same model with (same logits) and convert then takes; or that none can."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    from redrafter_trt.rope import yarn_scale_fix

    path = parts[0] / "config.json"
    raw = {k: v for k, v in json.loads(path.read_text()).items()
           if k not in ("rope_parameters", "rope_scaling", "rope_theta")}
    key = "rope_parameters" if int(transformers.__version__.split(".")[0]) >= 5 else "rope_scaling"

    def write(scaling):
        path.write_text(json.dumps(raw | {key: {**scaling, "rope_theta": 1e4}} if key == "rope_parameters" else
                                   raw | {key: scaling, "rope_theta": 1e4}))

    def logits():
        with torch.no_grad():
            return AutoModelForCausalLM.from_pretrained(parts[0])(torch.tensor([list(range(1, 200))])).logits

    write(YARN | extra)
    result = convert_err(parts)
    assert_one_line_error(result, "TensorRT-LLM would build another RoPE", fix)
    fixed = yarn_scale_fix(YARN | extra)
    assert (fixed is None) == ("cannot" in fix)
    if fixed is not None:
        before = logits()
        write(fixed)
        torch.testing.assert_close(logits(), before, rtol=1e-5, atol=1e-5)
        assert run_cli("convert", "--base", parts[0], "--drafter", parts[1], "--output", parts[2]).exit_code == 0
