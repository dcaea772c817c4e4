"""`inspect --base --drafter` (compare.py): every tensor of a checkpoint compared with what convert writes from its
models. Each mistake here keeps every name, shape and dtype right, so inspect's other checks pass it; the comparison
names it, and its cause."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from redrafter_trt import layout
from redrafter_trt.checkpoint import inspect_checkpoint
from redrafter_trt.convert import convert
from test_convert_errors import assert_one_line_error, run_cli
from tinymodels import make_drafter, make_hf


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("compare")
    hf = make_hf(root / "hf", "llama")
    drafter = make_drafter(root / "drafter", hf)
    ck = {tp: convert(hf, drafter, root / f"ck{tp}", num_beams=2, draft_len=2, tp_size=tp) for tp in (1, 2)}
    return hf, drafter, ck


def edited(ck: Path, tmp_path: Path, rank: int, edit) -> Path:
    """A copy of `ck` whose rank file `rank` has `edit(tensors)` applied (its metadata kept)."""
    copy = tmp_path / "edited"
    shutil.copytree(ck, copy)
    f = copy / f"rank{rank}.safetensors"
    from safetensors import safe_open

    with safe_open(f, "pt") as h:
        meta = h.metadata()
    held = load_file(f)
    edit(held)
    save_file(held, f, metadata=meta)
    return copy


def compared(ck: Path, hf: Path, drafter: Path):
    rep = inspect_checkpoint(ck, base=hf, drafter=drafter)
    return rep, rep.problems


@pytest.mark.parametrize("tp", [1, 2])
def test_a_faithful_conversion_compares_equal(models, tp):
    hf, drafter, ck = models
    rep, problems = compared(ck[tp], hf, drafter)
    cfg = json.loads((ck[tp] / "config.json").read_text())
    assert problems == [] and rep.compared == {"base": str(hf), "drafter": str(drafter),
                                               "tensors": tp * len(layout.expected_tensors(cfg, 0))}


def test_crossed_fc_and_gate_are_named(models, tmp_path):
    """TensorRT-LLM's mlp.fc is Hugging Face's gate_proj and its mlp.gate is up_proj: the classic crossing."""
    hf, drafter, ck = models
    fc, gate = "transformer.layers.1.mlp.fc.weight", "transformer.layers.1.mlp.gate.weight"

    def cross(t):
        t[fc], t[gate] = t[gate], t[fc]
    assert inspect_checkpoint(edited(ck[1], tmp_path, 0, cross)).ok  # names, shapes and dtypes are right
    _, problems = compared(edited(ck[1], tmp_path / "b", 0, cross), hf, drafter)
    assert problems == [f"rank0: {fc} holds what {gate} should (model.layers.1.mlp.up_proj.weight): crossed: "
                        f"re-convert",
                        f"rank0: {gate} holds what {fc} should (model.layers.1.mlp.gate_proj.weight): crossed: "
                        f"re-convert"]


def test_qkv_split_as_one_tensor_is_named(models, tmp_path, tiny_llama):
    """At tp 2 each rank holds its q heads and its kv heads, fused: the fused tensor split by rows keeps the shape
    (4 + 2 + 2 heads of 16 into 2 x 64 rows) and puts rank 0's k heads where its v should be."""
    hf, drafter, ck = models
    src = load_file(hf / "model.safetensors")
    name = "transformer.layers.0.attention.qkv.weight"
    fused = torch.cat([src[f"model.layers.0.self_attn.{p}_proj.weight"] for p in "qkv"])

    def naive(t):
        t[name] = fused[:64].clone()
    _, problems = compared(edited(ck[2], tmp_path, 0, naive), hf, drafter)
    assert problems == [f"rank0: {name} is split as one tensor by rows, where TensorRT-LLM splits q, k and v each by "
                        f"heads and fuses each rank's q, k, v: re-convert with redrafter-trt convert"]


def test_qkv_in_another_order_is_named(models, tmp_path):
    hf, drafter, ck = models
    name = "transformer.layers.1.attention.qkv.weight"

    def kqv(t):
        q, k, v = torch.split(t[name], [64, 32, 32])
        t[name] = torch.cat([k, q, v])
    _, problems = compared(edited(ck[1], tmp_path, 0, kqv), hf, drafter)
    assert problems == [f"rank0: {name} holds q, k and v in the order k, q, v, where TensorRT-LLM fuses them q, k, v: "
                        f"re-convert with redrafter-trt convert"]


def test_a_transposed_square_weight_is_named(models, tmp_path):
    hf, drafter, ck = models
    name = "transformer.layers.0.attention.dense.weight"

    def transpose(t):
        t[name] = t[name].T.contiguous()
    _, problems = compared(edited(ck[1], tmp_path, 0, transpose), hf, drafter)
    assert problems == [f"rank0: {name} is transposed ([out, in] is TensorRT-LLM's order, as Hugging Face's): re-convert"]


def test_swapped_rank_files_are_named(models, tmp_path):
    """TensorRT-LLM's own converter writes no rank metadata, so renamed rank files are told by their values."""
    hf, drafter, ck = models
    copy = tmp_path / "ck"
    shutil.copytree(ck[2], copy)
    for r in range(2):  # without our metadata, as TensorRT-LLM's convert_checkpoint writes them
        save_file(load_file(ck[2] / f"rank{1 - r}.safetensors"), copy / f"rank{r}.safetensors")
    _, problems = compared(copy, hf, drafter)
    assert len(problems) == 2
    for r in range(2):
        assert problems[r].startswith(f"rank{r}: ") and problems[r].endswith(
            f" equal rank {1 - r}'s: the rank files are swapped or renamed: re-convert")
    # the replicated tensors (norms) equal on both ranks are not listed
    assert "layernorm" not in problems[0] and "drafter.lm_head.weight" in problems[0]


def test_another_base_and_drafter_differ(models, tmp_path):
    hf, drafter, ck = models
    other = make_hf(tmp_path / "other", "llama", seed=1)
    other_drafter = make_drafter(tmp_path / "other_drafter", hf, seed=5)
    _, problems = compared(ck[1], other, other_drafter)
    cfg = json.loads((ck[1] / "config.json").read_text())
    names = sorted(layout.expected_tensors(cfg, 0))  # the norms too: make_hf draws them at random
    assert problems == [f"rank0: {len(names)} tensors differ from the models' ({', '.join(names[:8])} "
                        f"(+{len(names) - 8} more)): another model's weights, or edited: compare with the models it "
                        f"was converted from, or re-convert"]


def test_one_edited_value_is_found(models, tmp_path):
    hf, drafter, ck = models
    name = "drafter.rnn_u.bias"

    def nudge(t):
        t[name][3] += 1e-3
    _, problems = compared(edited(ck[1], tmp_path, 0, nudge), hf, drafter)
    assert problems == [f"rank0: {name} differs from rnn_u.bias (1 of 64 values, by up to 0.001): another model's "
                        f"weights, or edited: compare with the models it was converted from, or re-convert"]


def test_a_base_of_another_shape_is_one_problem(models, tmp_path):
    hf, drafter, ck = models
    other = make_hf(tmp_path / "other", "llama", intermediate_size=96)
    rep = inspect_checkpoint(ck[1], base=other)
    assert rep.problems == [f"{other} is not the model this checkpoint was converted from: its intermediate_size 96 "
                            f"(the checkpoint's 128); nothing of it was compared"]
    assert rep.compared["tensors"] == 0


def test_cli_compares_and_refuses_a_missing_folder(models, tmp_path):
    hf, drafter, ck = models
    r = run_cli("inspect", ck[2], "--base", hf, "--drafter", drafter)
    assert r.exit_code == 0, r.output
    cfg = json.loads((ck[2] / "config.json").read_text())
    assert f"compared with {hf} and {drafter}: {2 * len(layout.expected_tensors(cfg, 0))} tensors" in r.output
    r = run_cli("inspect", ck[2], "--base", tmp_path / "nowhere")
    assert_one_line_error(r, f"--base {tmp_path / 'nowhere'} is not a folder")
    r = run_cli("inspect", ck[2], "--base", ck[1])
    assert_one_line_error(r, f"--base {ck[1]} is a ReDrafter checkpoint: pass the base it was converted from")


@pytest.fixture(scope="module")
def fp8(tmp_path_factory):
    """A tiny Llama, its drafter and their FP8 conversion at tp 2 (modelopt's quantisation, its vocab-split
    embedding)."""
    pytest.importorskip("modelopt.torch.quantization")
    from test_fp8 import CALIB, byte_tokenizer

    root = tmp_path_factory.mktemp("fp8")
    hf = byte_tokenizer(make_hf(root / "hf", "llama"))
    drafter = make_drafter(root / "drafter", hf)
    return hf, drafter, convert(hf, drafter, root / "fp8", tp_size=2, dtype="bfloat16", quantize="fp8", **CALIB)


def test_fp8_weights_dequantise_within_e4m3(fp8, tmp_path):
    """An FP8 conversion compares equal; a scale off by a factor of 2, or one FP8 value moved by 15-22%, is named."""
    hf, drafter, ck = fp8
    rep = inspect_checkpoint(ck, base=hf, drafter=drafter)
    assert rep.problems == [] and rep.compared["tensors"] > 0
    weight = "transformer.layers.0.mlp.proj.weight"
    scale = "transformer.layers.0.mlp.proj.weights_scaling_factor"

    def double(t):
        t[scale] = t[scale] * 2

    def nudge(t):  # one value of 72-104 (e4m3 steps of 8 there) moved 2 steps: 15-22%, past twice e4m3's rounding
        w = t[weight].float().view(-1)
        i = int(((w.abs() >= 72) & (w.abs() <= 104)).nonzero()[0])
        w[i] += 16 * w[i].sign()
        t[weight] = w.view(t[weight].shape).to(torch.float8_e4m3fn)
    for k, edit in enumerate((double, nudge)):
        rep = inspect_checkpoint(edited(ck, tmp_path / str(k), 1, edit), base=hf, drafter=drafter)
        assert rep.problems == [f"rank1: {weight} differs from model.layers.0.mlp.down_proj.weight (FP8 values outside "
                                f"e4m3's rounding of the base's): another model's weights, or edited: compare with the "
                                f"models it was converted from, or re-convert"]


def test_fp8_causes_are_named(fp8, tmp_path):
    """A review: FP8 linears compared only bit for bit against the plans' model-dtype tensors, so swapped ranks and a
    crossed fc / gate read as another model's weights."""
    hf, drafter, ck = fp8
    copy = tmp_path / "swapped"
    shutil.copytree(ck, copy)
    for r in range(2):  # without our rank header, as TensorRT-LLM's convert_checkpoint writes them
        save_file(load_file(ck / f"rank{1 - r}.safetensors"), copy / f"rank{r}.safetensors")
    problems = inspect_checkpoint(copy, base=hf, drafter=drafter).problems
    # each rank's 20 tensors that differ between ranks: 8 drafter, 10 FP8 linears, the vocab-split embedding, lm_head
    assert len(problems) == 2 and all(" (+12 more) " in p for p in problems)
    assert all(p.endswith(f" equal rank {1 - r}'s: the rank files are swapped or renamed: re-convert")
               for r, p in enumerate(problems))
    fc, gate = "transformer.layers.1.mlp.fc.", "transformer.layers.1.mlp.gate."

    def cross(t):
        for part in ("weight", "weights_scaling_factor", "activation_scaling_factor"):
            t[fc + part], t[gate + part] = t[gate + part], t[fc + part]
    problems = inspect_checkpoint(edited(ck, tmp_path, 0, cross), base=hf, drafter=drafter).problems
    assert problems == [f"rank0: {fc}weight holds what {gate}weight should (model.layers.1.mlp.up_proj.weight): "
                        f"crossed: re-convert",
                        f"rank0: {gate}weight holds what {fc}weight should (model.layers.1.mlp.gate_proj.weight): "
                        f"crossed: re-convert"]


def test_fp8_held_as_int8_is_compared(fp8, tmp_path):
    """Older exporters store FP8 weights as their int8 bits (TensorRT-LLM views them as FP8): compared the same."""
    hf, drafter, ck = fp8
    weight = "transformer.layers.1.attention.dense.weight"

    def as_int8(t, nudge=False):
        for name in [n for n, v in t.items() if v.dtype == torch.float8_e4m3fn]:
            t[name] = t[name].view(torch.int8)
        if nudge:
            t[weight] = (t[weight].view(torch.float8_e4m3fn).float() * 1.5).to(torch.float8_e4m3fn).view(torch.int8)
    count = inspect_checkpoint(ck, base=hf, drafter=drafter).compared["tensors"]
    rep = inspect_checkpoint(edited(ck, tmp_path / "a", 0, as_int8), base=hf, drafter=drafter)
    assert rep.problems == [] and rep.compared["tensors"] == count
    rep = inspect_checkpoint(edited(ck, tmp_path / "b", 0, lambda t: as_int8(t, True)), base=hf, drafter=drafter)
    assert [p.split(" differs from ")[0] for p in rep.problems] == [f"rank0: {weight}"]


def test_a_misshapen_scale_is_inspects_problem_alone(fp8, tmp_path):
    """A review: a weights_scaling_factor of 3 values was a RuntimeError traceback with --base."""
    hf, drafter, ck = fp8
    scale = "transformer.layers.0.mlp.proj.weights_scaling_factor"

    def widen(t):
        t[scale] = t[scale].repeat(3)
    rep = inspect_checkpoint(edited(ck, tmp_path, 0, widen), base=hf, drafter=drafter)
    assert rep.problems == [f"rank0: {scale} has shape (3,), config implies (1,)"]


def test_a_trtllm_base_checkpoint_compares_bit_for_bit(tmp_path):
    """convert from a TensorRT-LLM base checkpoint (modelopt's FP8 export) copies its tensors: compared bit for bit
    with it, FP8 weights and their scales included; --drafter on the base checkpoint itself is one problem."""
    pytest.importorskip("modelopt.torch.quantization")
    from redrafter_trt.quantize import calibration_prompts, export_fp8_base
    from test_fp8 import CALIB, byte_tokenizer

    hf = byte_tokenizer(make_hf(tmp_path / "hf", "llama"))
    drafter = make_drafter(tmp_path / "drafter", hf)
    base = tmp_path / "base"
    export_fp8_base(hf, base, tp_size=1, dtype="bfloat16", kv_cache_dtype=None,
                    calib_prompts=calibration_prompts(None, 4), device="cpu", **CALIB)
    ck = convert(base, drafter, tmp_path / "ck", num_beams=2, draft_len=2)
    rep = inspect_checkpoint(ck, base=base, drafter=drafter)
    cfg = json.loads((ck / "config.json").read_text())
    assert rep.problems == [] and rep.compared["tensors"] == len(layout.expected_tensors(cfg, 0))
    scale = "transformer.layers.1.attention.qkv.weights_scaling_factor"

    def rescale(t):
        t[scale] = t[scale] * 1.5
    rep = inspect_checkpoint(edited(ck, tmp_path, 0, rescale), base=base)
    assert rep.problems == [f"rank0: {scale} differs from the base checkpoint (1 of 1 values, by up to "
                            f"{rep.problems[0].split('by up to ')[1].split(')')[0]}): another model's weights, or "
                            f"edited: compare with the models it was converted from, or re-convert"]
    assert inspect_checkpoint(base, drafter=drafter).problems == [
        f"--drafter {drafter} given, but the checkpoint holds no drafter (a base checkpoint): leave out --drafter"]


@pytest.mark.parametrize("family, tp", [("tiny_qwen2", 2), ("tiny_qwen3", 2), ("tiny_llama_bias", 2),
                                        ("tiny_llama_tied", 4)])
def test_every_family_compares_equal_and_names_a_crossing(request, family, tp, tmp_path):
    """Each registered family's layout (Qwen2's qkv bias, Qwen3's q/k norms and head_dim 32, Llama's biases, a tied
    lm_head with 2 kv heads repeated over 4 ranks) compares equal; its last rank's input and post norms crossed are
    named."""
    hf = request.getfixturevalue(family)
    drafter = make_drafter(tmp_path / "drafter", hf)
    ck = convert(hf, drafter, tmp_path / "ck", num_beams=2, draft_len=2, tp_size=tp)
    rep = inspect_checkpoint(ck, base=hf, drafter=drafter)
    assert rep.problems == [] and rep.compared["tensors"] == sum(
        len(layout.expected_tensors(json.loads((ck / "config.json").read_text()), r)) for r in range(tp))
    a, b = "transformer.layers.1.input_layernorm.weight", "transformer.layers.1.post_layernorm.weight"

    def cross(t):
        t[a], t[b] = t[b], t[a]
    assert [p.split(" holds what ")[0] for p in inspect_checkpoint(edited(ck, tmp_path, tp - 1, cross), base=hf,
                                                                  drafter=drafter).problems] == [
        f"rank{tp - 1}: {a}", f"rank{tp - 1}: {b}"]


def test_a_wrong_dtype_is_inspects_problem_alone(models, tmp_path):
    """A tensor in another dtype than the config's is named once, by inspect's own check, not again as values."""
    hf, drafter, ck = models
    name = "transformer.layers.0.mlp.proj.weight"

    def widen(t):
        t[name] = t[name].double()
    rep = inspect_checkpoint(edited(ck[1], tmp_path, 0, widen), base=hf, drafter=drafter)
    assert rep.problems == [f"rank0: {name} is F64, config implies F32"]


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
def test_modelopts_export_compares_equal(tmp_path, arch):
    """An independent writer: nvidia-modelopt's tp 2 bfloat16 export (its embedding split by vocabulary rows, which
    convert never writes), its config completed as the format page says, equals what convert plans from the base;
    its rank files swapped are named (modelopt writes no rank header)."""
    pytest.importorskip("modelopt.torch.export")
    from redrafter_trt.quantize import patch_exported_config
    from test_modelopt_oracle import modelopt_export

    hf = make_hf(tmp_path / "hf", arch)
    ex = modelopt_export(hf, tmp_path / "export", tp_size=2, dtype="bfloat16")
    cfg = json.loads((ex / "config.json").read_text())
    cfg = patch_exported_config(cfg, json.loads((hf / "config.json").read_text()), None)
    (ex / "config.json").write_text(json.dumps(cfg))
    assert cfg["use_parallel_embedding"]
    rep = inspect_checkpoint(ex, base=hf)
    assert rep.problems == [] and rep.compared["tensors"] == sum(len(layout.base_tensors(cfg, r)) for r in range(2))
    for r in range(2):
        (ex / f"rank{r}.safetensors").rename(ex / f"was{r}")
    for r in range(2):
        (ex / f"was{r}").rename(ex / f"rank{1 - r}.safetensors")
    assert [p.split(" equal rank ")[1] for p in inspect_checkpoint(ex, base=hf).problems] == [
        f"{1 - r}'s: the rank files are swapped or renamed: re-convert" for r in range(2)]


def test_embedding_and_lm_head_crossed_are_named(models, tmp_path):
    """A review: both (V, H) in an untied model, they were 'another model's weights' (not in one layer)."""
    hf, drafter, ck = models
    a, b = "transformer.vocab_embedding.weight", "lm_head.weight"

    def cross(t):
        t[a], t[b] = t[b], t[a]
    problems = inspect_checkpoint(edited(ck[1], tmp_path, 0, cross), base=hf, drafter=drafter).problems
    assert [p.split(" should ")[0] for p in problems] == [f"rank0: {a} holds what {b}", f"rank0: {b} holds what {a}"]


def test_bfloat16_qkv_split_as_one_tensor_is_named(models, tmp_path):
    """The fused source is float32 here: cast to the checkpoint's bfloat16 before it is compared."""
    hf, drafter, _ = models
    ck = convert(hf, drafter, tmp_path / "bf16", num_beams=2, draft_len=2, tp_size=2, dtype="bfloat16")
    src = load_file(hf / "model.safetensors")
    name = "transformer.layers.0.attention.qkv.weight"
    fused = torch.cat([src[f"model.layers.0.self_attn.{p}_proj.weight"] for p in "qkv"]).bfloat16()

    def naive(t):
        t[name] = fused[64:].clone()
    problems = inspect_checkpoint(edited(ck, tmp_path, 1, naive), base=hf, drafter=drafter).problems
    assert [p.split(" where ")[0] for p in problems] == [f"rank1: {name} is split as one tensor by rows,"]


def test_qkv_order_with_kv_heads_repeated_over_ranks(tmp_path, tiny_llama_tied):
    """tp 4 over 2 kv heads: each rank holds one q head and a copy of one kv head (16 rows each)."""
    drafter = make_drafter(tmp_path / "drafter", tiny_llama_tied)
    ck = convert(tiny_llama_tied, drafter, tmp_path / "ck", num_beams=2, draft_len=2, tp_size=4)
    name = "transformer.layers.1.attention.qkv.weight"

    def vkq(t):
        q, k, v = torch.split(t[name], 16)
        t[name] = torch.cat([v, k, q])
    problems = inspect_checkpoint(edited(ck, tmp_path, 3, vkq), base=tiny_llama_tied, drafter=drafter).problems
    assert [p.split(", where ")[0] for p in problems] == [f"rank3: {name} holds q, k and v in the order v, k, q"]


@pytest.mark.parametrize("broken", ["missing rank", "truncated rank", "missing tensor"])
def test_what_inspect_names_is_not_compared_again(models, tmp_path, broken):
    """A review: a truncated rank file lost the whole report to a one-line error with --base (without it, inspect
    lists it and exits 1); a rank file or tensor missing is named once, by inspect, and the rest compared."""
    hf, drafter, ck = models
    copy = tmp_path / "ck"
    shutil.copytree(ck[2], copy)
    f = copy / "rank1.safetensors"
    if broken == "missing rank":
        f.unlink()
    elif broken == "truncated rank":
        f.write_bytes(f.read_bytes()[:1000])
    else:
        held = load_file(f)
        del held["drafter.rnn_w.weight"]
        save_file(held, f, metadata={"rank": "1", "tp_size": "2"})
    alone = inspect_checkpoint(copy).problems
    rep = inspect_checkpoint(copy, base=hf, drafter=drafter)
    cfg = json.loads((copy / "config.json").read_text())
    n = len(layout.expected_tensors(cfg, 0))
    assert alone and rep.problems == alone
    assert rep.compared["tensors"] == {"missing rank": n, "truncated rank": n, "missing tensor": 2 * n - 1}[broken]
    r = run_cli("inspect", copy, "--base", hf)
    assert r.exit_code == 1 and "Traceback" not in r.output


def test_a_drafter_of_another_layout_is_one_problem(models, tmp_path):
    hf, drafter, ck = models
    other = make_drafter(tmp_path / "other", hf, rnn=False)
    rep = inspect_checkpoint(ck[1], base=hf, drafter=other)
    cfg = json.loads((ck[1] / "config.json").read_text())
    assert rep.problems == [f"{other} is not the model this checkpoint was converted from: its redrafter_is_rnn False "
                            f"(the checkpoint's True); nothing of it was compared"]
    assert rep.compared["tensors"] == len(layout.base_tensors(cfg, 0))


def test_a_base_missing_a_tensor_is_one_line(models, tmp_path):
    hf, drafter, ck = models
    base = tmp_path / "base"
    shutil.copytree(hf, base)
    held = load_file(base / "model.safetensors")
    del held["model.layers.1.mlp.up_proj.weight"]
    save_file(held, base / "model.safetensors", metadata={"format": "pt"})
    assert_one_line_error(run_cli("inspect", ck[1], "--base", base), "model.layers.1.mlp.up_proj.weight")


@pytest.mark.parametrize("tp, dtype, differ", [(1, "bfloat16", "tp_size 1 (the checkpoint's 2)"),
                                                (2, "float16", "dtype 'float16' (the checkpoint's 'bfloat16')")])
def test_a_base_checkpoint_of_another_tp_or_dtype_is_one_problem(tmp_path, tp, dtype, differ):
    pytest.importorskip("modelopt.torch.export")
    from redrafter_trt.quantize import patch_exported_config
    from test_modelopt_oracle import modelopt_export

    hf = make_hf(tmp_path / "hf", "llama")
    drafter = make_drafter(tmp_path / "drafter", hf)
    bases = {}
    for key, (t, d) in {"same": (2, "bfloat16"), "other": (tp, dtype)}.items():
        ex = modelopt_export(hf, tmp_path / key, tp_size=t, dtype=d)
        cfg = patch_exported_config(json.loads((ex / "config.json").read_text()),
                                    json.loads((hf / "config.json").read_text()), None)
        (ex / "config.json").write_text(json.dumps(cfg))
        bases[key] = ex
    ck = convert(bases["same"], drafter, tmp_path / "ck", num_beams=2, draft_len=2)
    assert inspect_checkpoint(ck, base=bases["same"], drafter=drafter).problems == []
    rep = inspect_checkpoint(ck, base=bases["other"])
    assert rep.problems == [f"{bases['other']} is not the model this checkpoint was converted from: its {differ}; "
                            f"nothing of it was compared"]


def test_fp8_qkv_edited_with_kv_heads_repeated_over_ranks(tmp_path):
    """FP8 at tp 4 over 2 kv heads: the fused q, k, v split as one tensor (32 rows) is not the rank's shape (48): an
    edited value is named, no broadcast error."""
    pytest.importorskip("modelopt.torch.quantization")
    from test_fp8 import CALIB, byte_tokenizer

    hf = byte_tokenizer(make_hf(tmp_path / "hf", "llama", tie=True))
    drafter = make_drafter(tmp_path / "drafter", hf)
    ck = convert(hf, drafter, tmp_path / "fp8", tp_size=4, dtype="bfloat16", quantize="fp8", **CALIB)
    name = "transformer.layers.0.attention.qkv.weight"

    def negate(t):
        w = t[name].float()
        w[5] = -w[5]
        t[name] = w.to(torch.float8_e4m3fn)
    problems = inspect_checkpoint(edited(ck, tmp_path, 2, negate), base=hf, drafter=drafter).problems
    assert [p.split(" differs from ")[0] for p in problems] == [f"rank2: {name}"]


def test_layers_shifted_by_one_are_named(models, tmp_path):
    """A converter's layer index off by one: layer 1's weight written as layer 0's."""
    hf, drafter, ck = models
    a, b = "transformer.layers.0.mlp.proj.weight", "transformer.layers.1.mlp.proj.weight"

    def shift(t):
        t[a] = t[b].clone()
    problems = inspect_checkpoint(edited(ck[2], tmp_path, 1, shift), base=hf, drafter=drafter).problems
    assert problems == [f"rank1: {a} holds what {b} should (model.layers.1.mlp.down_proj.weight): crossed: re-convert"]


def test_another_model_is_diagnosed_no_further_than_needed(models, tmp_path, monkeypatch):
    """Past DIAGNOSED unexplained differences on a rank no cause is looked for (each diagnosis reads tensors again):
    another model's tensors are each read about once, not once per candidate cause."""
    from redrafter_trt import compare

    hf, drafter, ck = models
    other = make_hf(tmp_path / "other", "llama", seed=1)
    calls = []
    real = compare._cause
    monkeypatch.setattr(compare, "_cause", lambda *a: calls.append(a[0]) or real(*a))
    problems = inspect_checkpoint(ck[1], base=other).problems
    assert len(calls) == compare.DIAGNOSED and len(problems) == 1 and "another model's weights" in problems[0]


@pytest.mark.parametrize("tp", [1, 2])
def test_q_and_k_in_metas_rotary_layout_are_named(models, tmp_path, tp):
    """A checkpoint made from Meta's original weights without transformers' rotary permutation: each q and k head's
    rows interleaved (Meta row 2j is Hugging Face row j, row 2j + 1 is row hd/2 + j)."""
    hf, drafter, ck = models
    name, hd = "transformer.layers.1.attention.qkv.weight", 16
    heads_q, heads_kv = 4 // tp, max(2 // tp, 1)
    meta = [h * hd + half * hd // 2 + j for h in range(heads_q + heads_kv) for j in range(hd // 2) for half in (0, 1)]
    order = meta + list(range((heads_q + heads_kv) * hd, (heads_q + 2 * heads_kv) * hd))  # v as it is

    def unpermute(t):
        t[name] = t[name][order].clone()
    problems = inspect_checkpoint(edited(ck[tp], tmp_path, tp - 1, unpermute), base=hf, drafter=drafter).problems
    assert problems == [f"rank{tp - 1}: {name} holds q and k in Meta's interleaved rotary layout, where TensorRT-LLM's "
                        f"rope_gpt_neox takes Hugging Face's (transformers' convert_llama_weights_to_hf permutes "
                        f"them): convert from the Hugging Face model"]
