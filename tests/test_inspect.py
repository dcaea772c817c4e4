"""`inspect` on checkpoints broken by hand (a review): each mistake is named in one problem line, in the same order
every run, and `run` / `build` refuse the checkpoint through the same checks."""

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
from redrafter_trt.errors import ConfigError
from test_convert_errors import assert_one_line_error, run_cli


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, tiny_llama, tiny_drafter):
    return convert(tiny_llama, tiny_drafter, tmp_path_factory.mktemp("ck") / "ck", num_beams=2, draft_len=2)


def broken(ckpt: Path, tmp_path: Path, tensors=None, **fields) -> Path:
    """A copy of `ckpt` with config fields replaced and `tensors(dict)` applied to rank0's tensors."""
    copy = tmp_path / "ck"
    shutil.copytree(ckpt, copy)
    cfg = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps(cfg | fields))
    if tensors:
        rank0 = copy / "rank0.safetensors"
        held = load_file(rank0)
        tensors(held)
        save_file(held, rank0, metadata={"format": "pt"})
    return copy


def drop_field(folder: Path, key: str) -> Path:
    """`folder` with `key` taken out of its config.json."""
    cfg = json.loads((folder / "config.json").read_text())
    del cfg[key]
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder


def test_problems_come_in_layout_order(ckpt, tmp_path):
    """A review: shape and dtype problems were listed in set order, which Python's string hashing changes from run to
    run: `inspect --json` differed between two runs of one checkpoint, and `run` / `build` named a different tensor
    each time. A later review: the line named the two dtypes in two vocabularies (`is F32, config implies
    torch.float16`); both are safetensors' names now, as the tensor's own is."""
    copy = broken(ckpt, tmp_path, dtype="float16")
    cfg = json.loads((copy / "config.json").read_text())
    names = list(layout.expected_tensors(cfg, 0))
    problems = inspect_checkpoint(copy).problems
    assert problems == [f"rank0: {n} is F32, config implies F16" for n in names]


def test_an_architecture_not_of_its_base_is_a_problem(ckpt, tmp_path):
    """A hand-edited config naming ReDrafter's Qwen model over a Llama base would build the wrong network."""
    copy = broken(ckpt, tmp_path, architecture="ReDrafterForQWenLM")
    assert json.loads((copy / "config.json").read_text())["base_model_architecture"] == "LlamaForCausalLM"
    result = run_cli("inspect", copy)
    assert result.exit_code == 1 and ("problem: architecture ReDrafterForQWenLM does not match base_model_architecture "
                                      "LlamaForCausalLM (expected ReDrafterForLLaMALM)") in result.output, result.output


def test_a_qwen_checkpoint_without_seq_length_is_a_problem(tiny_qwen2, tmp_path):
    """TensorRT-LLM 1.2.x's QWenDecoderLayer reads `config.seq_length` (models/qwen/model.py; QWenConfig sets none):
    a Qwen checkpoint without it passed inspect and then failed trtllm-build with an AttributeError."""
    from tinymodels import make_drafter

    ck = drop_field(convert(tiny_qwen2, make_drafter(tmp_path / "d", tiny_qwen2), tmp_path / "c"), "seq_length")
    assert [p for p in inspect_checkpoint(ck).problems if "seq_length" in p] == [
        "seq_length is absent: TensorRT-LLM's Qwen model reads it and trtllm-build fails without it ('QWenConfig' "
        "object has no attribute 'seq_length'): add \"seq_length\": 8192 (TensorRT-LLM's default) to config.json"]


def test_qwen3_checkpoints_hold_their_qk_norms(tiny_qwen3, tmp_path):
    """TensorRT-LLM builds attention.q_layernorm / k_layernorm ([head_size], every rank) for qwen_type qwen3 alone:
    a Qwen3 checkpoint without one would fail to load its weights, and one whose config says qwen2 would build
    without them (q and k not normed), so both are named."""
    from tinymodels import make_drafter

    ck = convert(tiny_qwen3, make_drafter(tmp_path / "d", tiny_qwen3), tmp_path / "c", tp_size=2, num_beams=2,
                 draft_len=2)
    assert inspect_checkpoint(ck).ok
    assert load_file(ck / "rank1.safetensors")["transformer.layers.1.attention.k_layernorm.weight"].shape == (32,)
    lost = broken(ck, tmp_path / "lost", lambda held: held.pop("transformer.layers.1.attention.k_layernorm.weight"))
    assert inspect_checkpoint(lost).problems == [
        "rank0: missing tensors transformer.layers.1.attention.k_layernorm.weight"]
    as_qwen2 = inspect_checkpoint(broken(ck, tmp_path / "qwen2", qwen_type="qwen2")).problems
    assert len(as_qwen2) == 2 and all(p.startswith(f"rank{r}: unexpected tensors ") and "q_layernorm" in p
                                      for r, p in enumerate(as_qwen2))


def test_a_qwen3_checkpoint_without_attn_bias_is_a_problem(tiny_qwen3, tmp_path):
    """TensorRT-LLM's QWenConfig defaults attn_bias to true whatever the qwen_type (only from_hugging_face sets it
    false for a Qwen3): a Qwen3 checkpoint without the key passed inspect (and a base checkpoint so converted), then
    its engine would be built with q/k/v biases no rank file holds (trtllm-build: 'Required but not provided
    tensors'). It is named, with the fix; a TensorRT-LLM base checkpoint so written is refused before conversion."""
    from tinymodels import make_drafter
    from test_convert import _trtllm_base_only

    drafter = make_drafter(tmp_path / "d", tiny_qwen3)
    ck = drop_field(convert(tiny_qwen3, drafter, tmp_path / "c", num_beams=2, draft_len=2), "attn_bias")
    assert [p for p in inspect_checkpoint(ck).problems if "attn_bias" in p] == [
        "attn_bias is absent: TensorRT-LLM's QWenConfig reads it as true (biased q/k/v) for every qwen_type, and a "
        "Qwen3 has no attention biases: add \"attn_bias\": false to config.json"]
    base = drop_field(_trtllm_base_only(tmp_path, tiny_qwen3, 1), "attn_bias")
    with pytest.raises(ConfigError, match='attn_bias is absent.*add "attn_bias": false to config.json$'):
        convert(base, drafter, tmp_path / "two", num_beams=2, draft_len=2)


def test_a_qwen2_checkpoint_without_attn_bias_has_biased_qkv(tiny_qwen2, tmp_path):
    """TensorRT-LLM's QWenConfig reads a missing attn_bias as true: a Qwen2 checkpoint (modelopt's and quantize.py's
    omit the key) holds its q/k/v biases and passes inspect, and a TensorRT-LLM base checkpoint so written converts
    with them (a review: no test had a Qwen2 config without the key)."""
    from tinymodels import make_drafter
    from test_convert import _trtllm_base_only

    assert layout.attn_bias({"architecture": "Qwen2ForCausalLM"}) is True
    assert layout.attn_bias({"architecture": "LlamaForCausalLM"}) is False
    drafter = make_drafter(tmp_path / "d", tiny_qwen2)
    ck = drop_field(convert(tiny_qwen2, drafter, tmp_path / "c", num_beams=2, draft_len=2), "attn_bias")
    assert inspect_checkpoint(ck).problems == []
    base = drop_field(_trtllm_base_only(tmp_path, tiny_qwen2, 1), "attn_bias")
    out = convert(base, drafter, tmp_path / "two", num_beams=2, draft_len=2)
    assert "transformer.layers.0.attention.qkv.bias" in load_file(out / "rank0.safetensors")
    assert inspect_checkpoint(out).problems == []


@pytest.mark.parametrize("qwen_type", [None, "qwen", "qwen2_moe"])
def test_a_qwen_checkpoint_of_another_qwen_type_is_a_problem(tiny_qwen2, tmp_path, qwen_type):
    """inspect (and so build's validation) passed a Qwen checkpoint without qwen_type (TensorRT-LLM then builds the
    first Qwen: another MLP width, another layout) or of a qwen_type nothing here checks (qwen, qwen2_moe); only
    convert's TensorRT-LLM base path refused them. It is named, with the fix, by the check they now share."""
    from tinymodels import make_drafter

    ck = convert(tiny_qwen2, make_drafter(tmp_path / "d", tiny_qwen2), tmp_path / "c", num_beams=2, draft_len=2)
    cfg = json.loads((ck / "config.json").read_text())
    cfg.pop("qwen_type") if qwen_type is None else cfg.update(qwen_type=qwen_type)
    (ck / "config.json").write_text(json.dumps(cfg))
    assert [p for p in inspect_checkpoint(ck).problems if "qwen_type" in p] == [
        f"qwen_type {qwen_type!r} (TensorRT-LLM reads a missing one as the first Qwen) is not supported, only Qwen2 and "
        f"Qwen3 (dense): for a Qwen2 or Qwen3 checkpoint add \"qwen_type\": \"qwen2\" or \"qwen3\" (its Hugging Face "
        f"model_type) to its config.json"]


def fp8_tensors(cfg: dict):
    """Turn rank0's base linears into FP8 with unit scales, as an FP8 export holds them (lm_head and drafter kept)."""
    def edit(held: dict) -> None:
        for layer in range(cfg["num_hidden_layers"]):
            for mod in layout.FP8_LINEARS:
                name = f"transformer.layers.{layer}.{mod}"
                held[name + ".weight"] = held[name + ".weight"].to(torch.float8_e4m3fn)
                held[name + ".weights_scaling_factor"] = torch.ones(1)
                held[name + ".activation_scaling_factor"] = torch.ones(1)
    return edit


DRAFTER_MODULES = ["drafter", "drafter.layers", "drafter.lm_head", "drafter.layers.0", "drafter.layers.0.linear",
                   "drafter.layers.1", "drafter.layers.1.linear", "drafter.rnn_u", "drafter.rnn_w"]


@pytest.mark.parametrize("exclude, lacking", [(["drafter*"], "lm_head"), (["lm_head", "*drafter"], "drafter.layers"),
                                              (None, "drafter.rnn_u"), (["*lm_head", "drafter*"], None),
                                              ([], "drafter.lm_head"),
                                              # every module named, as an exporter may list them (no input_proj:
                                              # the drafter's exit_dim is 2 x hidden_size); a mutant requiring one
                                              # survived
                                              (["lm_head", *DRAFTER_MODULES], None)])
def test_fp8_exclusions_must_keep_lm_head(ckpt, tmp_path, exclude, lacking):
    """A review: an FP8 checkpoint whose exclude_modules named the drafter but not lm_head (`["drafter*"]`, as one
    writes by hand after TensorRT-LLM issue #2607) was OK, though a list replaces TensorRT-LLM's default exclusions:
    the build would make lm_head an FP8 layer from a float weight with no scales. An empty list is such a list in
    TensorRT-LLM 1.2 (`quantize_layers` applies its defaults only when the list `is None`): drafter.lm_head and
    lm_head are lacking too."""
    cfg = json.loads((Path(ckpt) / "config.json").read_text())
    quant = {"quant_algo": "FP8", "kv_cache_quant_algo": None, "exclude_modules": exclude}
    copy = broken(ckpt, tmp_path, fp8_tensors(cfg), quantization=quant)
    result = run_cli("inspect", copy)
    if lacking is None:
        assert result.exit_code == 0, result.output
        return
    problem = [ln for ln in result.output.splitlines() if "exclude_modules lacks" in ln]
    assert result.exit_code == 1 and len(problem) == 1 and lacking in problem[0], result.output
    one = lacking == "lm_head"  # one module lacking is 'it', not 'them'
    assert problem[0].endswith(": add it to the list" if one else ": add them to the list"), problem[0]
    assert ("quantize it to FP8, though this checkpoint holds it" if one else "quantize them to FP8, though this "
            "checkpoint holds them") in problem[0], problem[0]
    assert_one_line_error(run_cli("build", "--checkpoint-dir", copy, "--output-dir", tmp_path / "e", "--dry-run"),
                          "exclude_modules lacks", lacking)


def test_fp8_exclusions_are_checked_beside_tensor_problems(ckpt, tmp_path):
    """A review: the exclude_modules check ran only when the rank files had no problem, though inspect lists every
    problem: a checkpoint missing a tensor and lm_head's exclusion named the tensor alone, and the fix of that was
    met by a second refusal."""
    cfg = json.loads((Path(ckpt) / "config.json").read_text())
    quant = {"quant_algo": "FP8", "kv_cache_quant_algo": None, "exclude_modules": ["drafter*"]}

    def edit(held):
        fp8_tensors(cfg)(held)
        del held["drafter.rnn_u.weight"]
    result = run_cli("inspect", broken(ckpt, tmp_path, edit, quantization=quant))
    assert result.exit_code == 1 and "missing tensors drafter.rnn_u.weight" in result.output, result.output
    assert "exclude_modules lacks lm_head" in result.output, result.output


@pytest.mark.parametrize("exclude", [["lm_head", None], ["lm_head", 1], [["drafter"]]])
def test_fp8_exclusions_that_are_not_names_are_a_problem(ckpt, tmp_path, exclude):
    """A review: an exclude_modules entry that is not a string (a null left by a hand edit) was a TypeError traceback
    from fnmatch in inspect, run, build and convert (of such a base); it is now one problem line."""
    cfg = json.loads((Path(ckpt) / "config.json").read_text())
    quant = {"quant_algo": "FP8", "kv_cache_quant_algo": None, "exclude_modules": exclude}
    copy = broken(ckpt, tmp_path, fp8_tensors(cfg), quantization=quant)
    result = run_cli("inspect", copy)
    assert result.exit_code == 1 and "quantization is" in result.output and "a list of names" in result.output, \
        result.output
    assert_one_line_error(run_cli("build", "--checkpoint-dir", copy, "--output-dir", tmp_path / "e", "--dry-run"),
                          "quantization is", "a list of names")


@pytest.mark.parametrize("key, algo", [("quant_algo", "W4A16_AWQ"), ("quant_algo", "W8A16"), ("quant_algo", "fp8"),
                                       ("quant_algo", ""), ("kv_cache_quant_algo", "INT8")])
def test_quantizations_other_than_fp8_are_problems(ckpt, tmp_path, key, algo):
    """A review: a quantization block naming AWQ, INT8 weights or an INT8 KV cache over float tensors was OK (layout
    reads any algorithm but FP8 as none): `run` ignored it and the build would have made AWQ / INT8 layers with no
    scales. convert refused such a base; inspect now says what convert says."""
    quant = {"quant_algo": None, "kv_cache_quant_algo": None, "exclude_modules": None, key: algo}
    copy = broken(ckpt, tmp_path, quantization=quant)
    result = run_cli("inspect", copy)
    assert result.exit_code == 1 and f"quantization.{key} {algo!r} is not supported" in result.output, result.output
    assert_one_line_error(run_cli("run", "--checkpoint-dir", copy, "--tokenizer-dir", tmp_path, "--input-text", "hi"),
                          f"quantization.{key} {algo!r} is not supported")


@pytest.mark.parametrize("head, named", [(lambda w: torch.zeros_like(w), "is 0 in all"),
                                         (lambda w: torch.full_like(w, 0.5), "is 0.5 in all"),
                                         (lambda w: w.index_fill(0, torch.tensor([3]), float("nan")), "NaN or Inf"),
                                         (lambda w: w.index_fill(1, torch.tensor([0]), float("inf")), "NaN or Inf")])
def test_a_drafter_head_that_drafts_nothing_is_a_problem(ckpt, tmp_path, head, named):
    """A review: a checkpoint whose drafter head was all zeros, one constant or NaN (a drafter never loaded or trained,
    a corrupted export) was OK: headers alone cannot tell, yet such a drafter has every draft rejected (1 token per
    step, a build slower than the base alone: TensorRT-LLM issue #2155). inspect reads the head's first rows."""
    def edit(held):
        held["drafter.lm_head.weight"] = head(held["drafter.lm_head.weight"])
    copy = broken(ckpt, tmp_path, edit)
    result = run_cli("inspect", copy)
    problems = [ln for ln in result.output.splitlines() if "problem:" in ln]
    assert result.exit_code == 1 and len(problems) == 1, result.output
    assert "drafter.lm_head.weight" in problems[0] and named in problems[0]
    assert_one_line_error(run_cli("build", "--checkpoint-dir", copy, "--output-dir", tmp_path / "e", "--dry-run"),
                          "drafter.lm_head.weight", named)


def test_a_trained_drafter_head_is_no_problem(ckpt, tmp_path):
    """Only a head with one value everywhere is refused: rows that are zero (a padded vocabulary's) are not."""
    def edit(held):
        held["drafter.lm_head.weight"][:200] = 0
    assert run_cli("inspect", broken(ckpt, tmp_path, edit)).exit_code == 0


def test_a_trained_head_whose_first_rows_are_zero_is_no_problem(ckpt, tmp_path, monkeypatch):
    """Our trainer zeroes the rows of tokens it never saw: SmolLM2's quickstart drafter held 315 zero rows in a row.
    inspect read the first rows alone, so such a head, wherever a rank's rows began in a zero run, was refused as
    drafting nothing (and run and build with it); it reads rows spread over the head."""
    from redrafter_trt import checkpoint

    monkeypatch.setattr(checkpoint, "HEAD_ROWS", 16)

    def edit(held):
        held["drafter.lm_head.weight"][:100] = 0
    assert run_cli("inspect", broken(ckpt, tmp_path, edit)).exit_code == 0


def sparse_drafter(folder: Path, base: Path, kept_rows: list[int]) -> Path:
    """A drafter as `train` saves one that saw few tokens: its head's other rows exact zeros."""
    from tinymodels import make_drafter

    drafter = make_drafter(folder, base)
    held = load_file(drafter / "model.safetensors")
    head = max((k for k in held if k.startswith("lm_head.")), key=lambda k: int(k.split(".")[1]))
    kept = torch.zeros(held[head].shape[0], dtype=torch.bool).index_fill(0, torch.tensor(kept_rows), True)
    held[head] = held[head] * kept[:, None]
    save_file(held, drafter / "model.safetensors", metadata={"format": "pt"})
    return drafter


@pytest.mark.parametrize("tp, kept_rows", [(2, list(range(40))), (1, [5, 77, 140])])
def test_a_trained_head_with_few_rows_kept_is_no_problem(tiny_qwen2, tmp_path, monkeypatch, tp, kept_rows):
    """Walking the README with a Qwen2 base: a drafter `train` wrote (4% of its head's rows kept), converted at tp 4,
    was refused by inspect, run and serve as `rank3: drafter.lm_head.weight is 0 in all 256 rows read`: the last
    rank's quarter of the vocabulary held 63 trained rows, none among the 256 read, and a rank may hold none at all.
    Here: rank 1's half of the head is all zeros (tp 2), and at tp 1 the rows read miss the 3 kept (16 read of 256)."""
    from redrafter_trt import checkpoint

    monkeypatch.setattr(checkpoint, "HEAD_ROWS", 16)
    drafter = sparse_drafter(tmp_path / "d", tiny_qwen2, kept_rows)
    ck = convert(tiny_qwen2, drafter, tmp_path / "c", tp_size=tp, num_beams=2, draft_len=2)
    assert inspect_checkpoint(ck).problems == []


def test_a_head_of_one_value_in_its_rows_read_is_read_whole_in_slices(tiny_qwen2, tmp_path, monkeypatch):
    """A review: the whole-head read that follows a sample of one value (a GB on an 8B base's vocabulary at tp 1) was
    untested in slices: a checkpoint's heads fit one. Here 8 rows a slice, and the one row kept is the last, in no
    row sampled and in the last slice."""
    from redrafter_trt import checkpoint
    from redrafter_trt.io import TensorSource

    ck = convert(tiny_qwen2, sparse_drafter(tmp_path / "d", tiny_qwen2, [255]), tmp_path / "c", num_beams=2,
                 draft_len=2)
    exit_dim = load_file(ck / "rank0.safetensors")["drafter.lm_head.weight"].shape[1]
    monkeypatch.setattr(checkpoint, "HEAD_ROWS", 16)
    monkeypatch.setattr(checkpoint, "VALUES_CHUNK", 8 * exit_dim)
    spans, get = [], TensorSource.get

    def spy(self, name, dim=None, start=0, stop=None):
        if name == "drafter.lm_head.weight":
            spans.append(stop - start)
        return get(self, name, dim, start, stop)

    monkeypatch.setattr(TensorSource, "get", spy)
    assert inspect_checkpoint(ck).problems == []
    assert max(spans) == 8 and sum(s for s in spans if s > 1) == 256, spans


def test_a_head_of_zeros_on_every_rank_is_a_problem(tiny_qwen2, tmp_path):
    """The other half of the test above: zeros on every rank are an untrained head, named once per rank."""
    from tinymodels import make_drafter

    ck = convert(tiny_qwen2, make_drafter(tmp_path / "d", tiny_qwen2), tmp_path / "c", tp_size=2, num_beams=2,
                 draft_len=2)
    for r in range(2):
        rank = ck / f"rank{r}.safetensors"
        held = load_file(rank)
        held["drafter.lm_head.weight"] = torch.zeros_like(held["drafter.lm_head.weight"])
        save_file(held, rank, metadata={"format": "pt"})
    problems = inspect_checkpoint(ck).problems
    assert len(problems) == 2 and all("drafter.lm_head.weight is 0 in all" in p for p in problems), problems


def test_convert_refuses_a_drafter_whose_head_drafts_nothing(tiny_llama, tiny_drafter, tmp_path):
    """Was written, then `problem: ...` and exit 1 (the checkpoint left behind): the head is checked as the drafter
    is read, before anything is written."""
    drafter = tmp_path / "drafter"
    shutil.copytree(tiny_drafter, drafter)
    held = load_file(drafter / "model.safetensors")
    head = max((k for k in held if k.startswith("lm_head.")), key=lambda k: int(k.split(".")[1]))
    save_file(held | {head: torch.zeros_like(held[head])}, drafter / "model.safetensors", metadata={"format": "pt"})
    out = tmp_path / "out"
    assert_one_line_error(run_cli("convert", "--base", tiny_llama, "--drafter", drafter, "--output", out),
                          f"{head} is 0 in all", "train it")
    assert not out.exists()


def test_a_tp_size_the_rank_files_do_not_have_is_named_first(ckpt, tmp_path):
    """A review: a tp 1 checkpoint whose mapping said tp 2 was refused by `build` and `run` as `rank0: transformer.
    layers.0.attention.qkv.weight has shape (128, 64), config implies (64, 64) (+19 more)`; the missing rank file,
    the cause, came last."""
    copy = broken(ckpt, tmp_path, mapping={"world_size": 2, "tp_size": 2, "pp_size": 1})
    assert inspect_checkpoint(copy).problems[0] == "rank1.safetensors is missing"
    assert_one_line_error(run_cli("build", "--checkpoint-dir", copy, "--output-dir", tmp_path / "e", "--dry-run"),
                          "is not valid: rank1.safetensors is missing (+")


@pytest.mark.parametrize("mapping, problems", [
    # valid to TensorRT-LLM 1.2's Mapping (world_size = tp x pp x cp): was 'mapping.world_size 2 != tp_size x pp_size
    # = 1', a mismatch that was not there, and nothing on context parallelism
    ({"world_size": 2, "tp_size": 1, "pp_size": 1, "cp_size": 2}, ["cp_size is 2"]),
    ({"world_size": 1, "tp_size": 1, "pp_size": 1, "cp_size": 2},
     ["cp_size is 2", "mapping.world_size 1 != tp_size x pp_size x cp_size = 2"]),
    ({"tp_size": 1, "cp_size": 2}, ["cp_size is 2", "mapping lacks world_size, which TensorRT-LLM reads as 1, not "
                                                     "tp_size x pp_size x cp_size = 2"]),
    ({"world_size": 1, "tp_size": 1, "pp_size": 1, "cp_size": 1}, []),
    ({"tp_size": 1, "cp_size": "2"}, ["mapping is {'tp_size': 1, 'cp_size': '2'}, must be null or an object of "
                                      "positive integer tp_size / pp_size / cp_size / world_size"]),
])
def test_context_parallel_mapping_is_named(ckpt, tmp_path, mapping, problems):
    """A review: a mapping with cp_size 2 was checked as if world_size were tp x pp, so a mapping TensorRT-LLM reads
    was called a world_size mismatch and the context parallelism (which no ReDrafter checkpoint here lays out) went
    unnamed."""
    found = inspect_checkpoint(broken(ckpt, tmp_path, mapping=mapping)).problems
    assert [p[:len(want)] for p, want in zip(found, problems)] == problems and len(found) == len(problems)


def test_fields_left_out_are_read_as_trtllm_reads_them(ckpt, tmp_path):
    """A review: a checkpoint config without hidden_act passed inspect and ran as silu, but TensorRT-LLM 1.2's
    PretrainedConfig reads it as gelu (the engine's MLP differs); without norm_epsilon the reference runtime took
    1e-6, TensorRT-LLM 1e-5."""
    from redrafter_trt.runtime.config import RuntimeConfig

    cfg = json.loads((ckpt / "config.json").read_text())
    copy = broken(ckpt, tmp_path)
    (copy / "config.json").write_text(json.dumps({k: v for k, v in cfg.items() if k != "hidden_act"}))
    assert inspect_checkpoint(copy).problems == ["hidden_act is absent: TensorRT-LLM reads gelu, which no Llama, "
                                                 "Mistral or Qwen2 uses: add the model's (\"hidden_act\": \"silu\") "
                                                 "to config.json"]
    assert RuntimeConfig.from_dict({k: v for k, v in cfg.items() if k != "norm_epsilon"}).norm_epsilon == 1e-5


@pytest.mark.parametrize("value, problem", [
    (None, "position_embedding_type is absent: TensorRT-LLM reads learned_absolute (no RoPE at all), which no Llama, "
           "Mistral or Qwen uses: add \"position_embedding_type\": \"rope_gpt_neox\" to config.json"),
    ("learned_absolute", "position_embedding_type is 'learned_absolute', must be rope_gpt_neox"),
    ("rope_gptj", "position_embedding_type is 'rope_gptj', must be rope_gpt_neox"),
    ("alibi", "position_embedding_type is 'alibi', must be rope_gpt_neox")])
def test_a_position_embedding_other_than_neox_rope_is_named(ckpt, tmp_path, value, problem):
    """A review: a checkpoint config without position_embedding_type, or with one TensorRT-LLM's Llama and Qwen
    attention builds otherwise (PretrainedConfig's default learned_absolute: no RoPE; rope_gptj: pairs rotated
    interleaved), passed inspect, convert and build, and ran in the reference runtime, which always computes
    rope_gpt_neox: the engine's answers would differ with nothing said."""
    cfg = json.loads((ckpt / "config.json").read_text())
    assert cfg["position_embedding_type"] == "rope_gpt_neox"
    copy = broken(ckpt, tmp_path)
    cfg = {k: v for k, v in cfg.items() if k != "position_embedding_type"}
    (copy / "config.json").write_text(json.dumps(cfg if value is None else cfg | {"position_embedding_type": value}))
    assert [p[:len(problem)] for p in inspect_checkpoint(copy).problems] == [problem]


def test_swapped_rank_files_are_named(tiny_llama, tiny_drafter, tmp_path):
    """Rank files of one shape swapped by hand (or copied from another tp=2 checkpoint's other rank) passed inspect:
    every rank's shapes were right. Each file now says which rank of which tp_size it was written as."""
    ckpt = convert(tiny_llama, tiny_drafter, tmp_path / "ck", num_beams=2, draft_len=2, tp_size=2)
    assert inspect_checkpoint(ckpt).problems == []
    (ckpt / "rank0.safetensors").rename(ckpt / "r0")
    (ckpt / "rank1.safetensors").rename(ckpt / "rank0.safetensors")
    (ckpt / "r0").rename(ckpt / "rank1.safetensors")
    assert inspect_checkpoint(ckpt).problems == [
        f"rank{r}.safetensors was written as rank {1 - r} of tp_size 2: rank files were renamed or mixed from another "
        f"checkpoint; re-convert" for r in (0, 1)]


@pytest.mark.parametrize("fp8", [False, True])
def test_values_finds_nan_and_inf_anywhere(ckpt, tmp_path, monkeypatch, fp8):
    """inspect reads headers and rows of the drafter head: a NaN in a base layer (a checkpoint another tool wrote
    from an overflowing float16 export) passed it, and every answer of the engine would be garbage. `--values`
    reads every tensor, in slices (here a few rows at a time), FP8's NaN pattern included."""
    from redrafter_trt import checkpoint

    monkeypatch.setattr(checkpoint, "VALUES_CHUNK", 64)
    cfg = json.loads((Path(ckpt) / "config.json").read_text())
    fc, qkv = "transformer.layers.1.mlp.fc.weight", "transformer.layers.0.attention.qkv.weight"

    def edit(held):
        if fp8:
            fp8_tensors(cfg)(held)
            held[fc].view(torch.uint8)[-1, -1] = 0xFF  # e4m3fn's NaN, in the last slice
            held[qkv].view(torch.uint8)[0, 0] = 0x7F  # its positive NaN
        else:
            held[fc][-1, -1] = float("nan")
            held[qkv][0, 0] = float("inf")
    quant = {"quant_algo": "FP8", "kv_cache_quant_algo": None, "exclude_modules": ["*lm_head", "drafter*"]}
    copy = broken(ckpt, tmp_path, edit, **({"quantization": quant} if fp8 else {}))
    assert run_cli("inspect", copy).exit_code == 0  # headers alone cannot tell
    result = run_cli("inspect", copy, "--values")
    problems = [ln for ln in result.output.splitlines() if "problem:" in ln]
    assert result.exit_code == 1 and len(problems) == 1, result.output
    assert f"rank0: {qkv}, {fc} hold NaN or Inf" in problems[0], problems
    assert run_cli("inspect", ckpt, "--values").exit_code == 0


@pytest.mark.parametrize("fp8", [False, True])
def test_an_int8_weight_where_no_fp8_is_expected_is_named(ckpt, tmp_path, fp8):
    """int8 `*weight` tensors pass as FP8 bits only where the layout expects FP8 (an FP8 checkpoint's quantized base
    linears): a drafter weight stored as int8 (kept out of FP8) is named, in an FP8 checkpoint or not (a mutation
    review: accepting any int8 weight survived)."""
    cfg = json.loads((Path(ckpt) / "config.json").read_text())
    name = "drafter.layers.0.linear.weight"

    def edit(held):
        if fp8:
            fp8_tensors(cfg)(held)
        held[name] = held[name].to(torch.int8)
    quant = {"quant_algo": "FP8", "kv_cache_quant_algo": None, "exclude_modules": ["*lm_head", "drafter*"]}
    copy = broken(ckpt, tmp_path, edit, **({"quantization": quant} if fp8 else {}))
    assert inspect_checkpoint(copy).problems == [f"rank0: {name} is I8, config implies F32"]


def test_an_fp8_kv_cache_may_hold_its_reciprocal_scales(ckpt, tmp_path):
    """nvidia-modelopt 0.47 may write kv_cache_rcp_scaling_factor beside k_ / v_cache_scaling_factor, which
    TensorRT-LLM 1.2 folds away: no problem (a mutation review: refusing it as unexpected survived)."""
    cfg = json.loads((Path(ckpt) / "config.json").read_text())
    attn = "transformer.layers.{}.attention."

    def edit(held):
        for n in range(cfg["num_hidden_layers"]):
            held |= {attn.format(n) + k: torch.ones(1) for k in ("kv_cache_scaling_factor", "k_cache_scaling_factor",
                                                                  "v_cache_scaling_factor", "kv_cache_rcp_scaling_factor")}
    quant = {"quant_algo": None, "kv_cache_quant_algo": "FP8", "exclude_modules": None}
    assert inspect_checkpoint(broken(ckpt, tmp_path, edit, quantization=quant)).problems == []


@pytest.mark.parametrize("scaling, builds", [({"rope_type": "default"}, False), ({"type": "default", "factor": 1.0}, False),
                                             ({"factor": 2.0}, False), ({"rope_type": "llama3", "type": "default",
                                                                         "factor": 8.0, "low_freq_factor": 1.0,
                                                                         "high_freq_factor": 4.0}, False),
                                             ({"type": "linear", "rope_type": "linear", "factor": 2.0}, True),
                                             ({"type": "none"}, True), (None, True),
                                             ({"rope_type": "yarn", "factor": 4.0, "mscale": None}, False),
                                             ({"rope_type": "yarn", "factor": 4.0, "beta_fast": 0}, False),
                                             ({"rope_type": "yarn", "factor": 4.0, "beta_slow": 1.0,
                                               "mscale_all_dim": 0.0}, True)])
def test_rotary_scaling_is_read_as_trtllm_1_2_builds_it(ckpt, tmp_path, scaling, builds):
    """A review: inspect passed rotary_scaling {"rope_type": "default"}, which TensorRT-LLM 1.2's
    RotaryScalingType.from_string (RotaryScalingType[s]) refuses: trtllm-build failed with 'Unsupported rotary scaling
    type: default' (convert writes null for it). layers/attention.py reads `type` before `rope_type` while
    transformers reads `rope_type`: a scaling whose two keys differ is built as another RoPE, and one with neither
    fails the build. A yarn mscale null or beta_fast 0 passed too, where its `.get(key, default)` reads None (a
    TypeError) or divides by zero."""
    copy = broken(ckpt, tmp_path, rotary_scaling=scaling)
    result = run_cli("inspect", copy)
    if builds:
        assert "rotary_scaling is" not in result.output, result.output
        return
    assert result.exit_code == 1 and "rotary_scaling is" in result.output and "null (no scaling)" in result.output, \
        result.output


@pytest.mark.parametrize("mapping", [None, {}, {"pp_size": 1}], ids=["absent", "empty", "no-tp-size"])
def test_a_mapping_left_out_is_tp_1_as_trtllm_reads_it(ckpt, tmp_path, mapping):
    """A review: TensorRT-LLM 1.2's PretrainedConfig reads a missing mapping as Mapping() (tp 1, world_size 1) and a
    missing tp_size as 1, but inspect called an absent mapping a missing field and indexed a tp_size-less one (KeyError
    traceback), and convert took a TensorRT-LLM base without mapping for a Hugging Face folder."""
    from redrafter_trt.base_plan import is_trtllm_checkpoint

    cfg = json.loads((ckpt / "config.json").read_text())
    copy = broken(ckpt, tmp_path)
    (copy / "config.json").write_text(json.dumps({k: v for k, v in cfg.items() if k != "mapping"}
                                                 | ({} if mapping is None else {"mapping": mapping})))
    report = inspect_checkpoint(copy)
    assert (report.problems, report.tp_size) == ([], 1)
    assert is_trtllm_checkpoint(copy)


@pytest.mark.parametrize("predict_n, shown", [(3, "drafter predict_n 3"), (None, "drafter predict_n unknown"),
                                              ("absent", "drafter predict_n unknown"), ("no producer", None)])
def test_the_producer_and_the_drafters_predict_n_are_shown(ckpt, tmp_path, predict_n, shown):
    """README walk: inspect showed nothing of the producer block, so the drafter's predict_n convert records (the most
    draft tokens it was trained to predict; null when the drafter does not say, absent before it was recorded) was
    seen only by opening config.json."""
    producer = json.loads((ckpt / "config.json").read_text())["producer"]
    producer = {k: v for k, v in producer.items() if k != "drafter_predict_n"}
    if predict_n != "absent":
        producer["drafter_predict_n"] = predict_n
    copy = broken(ckpt, tmp_path, producer=None if predict_n == "no producer" else producer)
    human = run_cli("inspect", copy)
    lines = [ln.strip() for ln in human.output.splitlines() if ln.strip().startswith("producer:")]
    version = producer["version"]
    assert human.exit_code == 0 and lines == ([f"producer: redrafter-trt {version} (convert); {shown}"] if shown else [])
    report = json.loads(run_cli("inspect", copy, "--json").output)
    assert report["producer"] == (None if shown is None else {
        "name": "redrafter-trt", "version": version, "command": "convert",
        "drafter_predict_n": predict_n if isinstance(predict_n, int) else None, "drafter_base_matches": None,
        "drafter_command": None})


def test_a_base_checkpoints_producer_is_shown_without_a_drafter():
    """A base another tool exported (nvidia-modelopt writes name and version only): no drafter, so no predict_n."""
    from redrafter_trt.cli.inspect_cmd import producer_line
    from redrafter_trt.producer import producer_summary

    assert producer_line(producer_summary({"producer": {"name": "modelopt", "version": "0.47.0"}}), False) == \
        "modelopt 0.47.0"


@pytest.mark.parametrize("fields, invalid", [({"hidden_act": 7}, "1 problem"),
                                             ({"hidden_act": 7, "norm_epsilon": -1.0}, "2 problems")])
def test_the_problems_are_counted(ckpt, tmp_path, fields, invalid):
    """The last line said 'INVALID (1 problem(s))'."""
    result = run_cli("inspect", broken(ckpt, tmp_path, **fields))
    assert result.exit_code == 1 and result.output.splitlines()[-1] == f"  INVALID ({invalid})", result.output


def test_a_rank_file_cut_short_is_re_converted_not_re_downloaded(ckpt, tmp_path):
    """A checkpoint's rank file cut short (a copy interrupted) was told 're-download or re-export it', then
    're-convert it': a checkpoint is neither downloaded nor exported, convert writes it again. A base cut short keeps
    its download's fix (test_convert_errors' test_truncated_safetensors)."""
    copy = tmp_path / "ck"
    shutil.copytree(ckpt, copy)
    rank0 = copy / "rank0.safetensors"
    rank0.write_bytes(rank0.read_bytes()[: rank0.stat().st_size // 2])
    [problem] = inspect_checkpoint(copy).problems
    assert problem.startswith(f"rank0.safetensors: {rank0} is truncated") and problem.endswith("): re-convert it")
    result = run_cli("run", "--checkpoint-dir", copy, "--tokenizer-dir", tmp_path, "--input-text", "hi")
    assert_one_line_error(result, f"{rank0} is truncated", "re-convert it")
    assert "re-download" not in result.stderr and "re-export" not in result.stderr
    assert result.stderr.count("re-convert it") == 1  # require_valid's own fix is not said twice
    # one sentence: the fix, then where the other problems are listed (it said 're-convert it: run ... for all problems')
    assert result.stderr.strip().endswith(f"): re-convert it (`redrafter-trt inspect {copy}` lists every problem)")



@pytest.mark.parametrize("head, named", [(torch.zeros_like, "is 0 in all"),
                                         (lambda w: torch.full_like(w, float("nan")), "holds NaN or Inf")])
def test_a_problem_whose_fix_re_converts_is_not_told_it_again(ckpt, tmp_path, head, named):
    """7d62da6 left out require_valid's closing 'then re-convert it' only after a problem ending in 're-convert it'
    (a rank file cut short): a drafter head of zeros still told build '... train the drafter (`redrafter-trt train`)
    and re-convert: run `redrafter-trt inspect CKPT` for all problems, then re-convert it', the fix said twice (as
    rank files renamed, '...; re-convert')."""
    def edit(held):
        held["drafter.lm_head.weight"] = head(held["drafter.lm_head.weight"])
    copy = broken(ckpt, tmp_path, edit)
    result = run_cli("build", "--checkpoint-dir", copy, "--output-dir", tmp_path / "e", "--dry-run")
    assert_one_line_error(result, named, "train the drafter (`redrafter-trt train`) and re-convert")
    assert result.stderr.count("re-convert") == 1, result.stderr


def _api_refusals(folder: Path) -> set[str]:
    """The one-line errors of the runtime's loading entry points (its Python API) on `folder`."""
    from redrafter_trt import runtime as rt
    from redrafter_trt.runtime.ranks import LocalRanks

    said = set()
    for enter in (rt.load, lambda f: rt.generate_tp(f, [[1, 2]], 2), lambda f: rt.forward_logits_tp(f, [1, 2]),
                  LocalRanks):
        with pytest.raises(ConfigError) as e:
            enter(folder)
        said.add(f"error: {e.value}")
    return said


@pytest.mark.parametrize("fields", [{"qwen_type": "qwen2_moe"}, {"mapping": {"world_size": 2, "tp_size": 1}},
                                    {"mapping": {"world_size": 2, "tp_size": 2, "pp_size": 1}}])
def test_the_python_api_refuses_what_run_refuses(tiny_qwen2, tmp_path, fields):
    """A review: `run`, `bench`, `acceptance` and `serve` refuse a checkpoint inspect finds problems in, but the Python
    API (runtime.load, generate_tp, forward_logits_tp, LocalRanks) read only the fields it computes with: a qwen2_moe
    checkpoint ran as a Qwen2 (another model's answers), a world_size the rank files are not loaded. Each refuses it
    in `run`'s own line."""
    from tinymodels import make_drafter

    ck = convert(tiny_qwen2, make_drafter(tmp_path / "d", tiny_qwen2), tmp_path / "c", num_beams=2, draft_len=2)
    copy = broken(ck, tmp_path, **fields)
    result = run_cli("run", "--checkpoint-dir", copy, "--tokenizer-dir", tiny_qwen2, "--input-text", "hi")
    assert_one_line_error(result, "is not valid: ")
    assert _api_refusals(copy) == {result.stderr.strip()}


def test_inspect_shows_the_rope_and_positions_an_engine_builds(ckpt, tmp_path):
    """inspect showed no RoPE: whether a Llama 3.1's theta 500000 and llama3 scaling reached the checkpoint took
    reading config.json by hand. It shows theta, the scaling's values and the positions, in text and JSON (a
    malformed field is left out, as the header leaves out the others)."""
    scaling = {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 128, "rope_type": "llama3"}
    copy = broken(ckpt, tmp_path, rotary_base=500000.0, rotary_scaling=scaling, max_position_embeddings=1024)
    result = run_cli("inspect", copy)
    assert result.exit_code == 0, result.output
    assert "  rope: theta 500000, llama3 (factor 8, low_freq_factor 1, high_freq_factor 4, " \
           "original_max_position_embeddings 128); 1024 positions\n" in result.output
    data = json.loads(run_cli("inspect", "--json", copy).output)
    assert data["rope"] == {"rotary_base": 500000.0, "rotary_scaling": scaling, "max_position_embeddings": 1024}
    plain = run_cli("inspect", broken(ckpt, tmp_path / "plain", rotary_scaling=None, rotary_base=-1.0)).output
    assert "  rope: theta ?, no scaling; " in plain, plain


@pytest.mark.parametrize("scaling", [
    {"rope_type": "dynamic", "factor": 2.0},  # TensorRT-LLM's dynamic is Hunyuan's NTK alpha, not transformers'
    {"type": "longrope", "factor": 2.0, "short_factor": [1.0, 1.5], "long_factor": [2.0, 3.5]},
    {"rope_type": "mrope", "mrope_section": [16, 24, 24]},
    {"type": "linear", "rope_type": "yarn", "factor": 2.0},  # TensorRT-LLM reads type, transformers rope_type
    "linear",  # not an object
])
def test_inspect_does_not_show_a_malformed_rope_scaling_as_none(ckpt, tmp_path, scaling):
    """A review: a rotary_scaling inspect names as a problem (a type TensorRT-LLM does not build as transformers does,
    or no object) was shown as `no scaling`, the RoPE of a null one, beside the problem saying otherwise. It is `?`,
    as the rope line's other malformed values are."""
    out = run_cli("inspect", broken(ckpt, tmp_path, rotary_base=10000.0, rotary_scaling=scaling)).output
    assert "  problem: rotary_scaling is " in out, out
    assert "  rope: theta 10000, scaling ?; " in out, out


def test_inspect_shows_a_scalings_true_false_and_null_as_config_json_writes_them(ckpt, tmp_path):
    """A review: yarn's `truncate: true` (transformers 4.56's, gpt-oss's) showed as `truncate 1`, and a null value as
    `?`, the mark of a malformed field: they show as config.json writes them."""
    scaling = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 256, "truncate": True,
               "attention_factor": None, "beta_fast": 32}
    out = run_cli("inspect", broken(ckpt, tmp_path, rotary_base=1e6, rotary_scaling=scaling)).output
    assert "  rope: theta 1000000, yarn (factor 4, original_max_position_embeddings 256, truncate true, " \
           "attention_factor null, beta_fast 32); " in out, out


@pytest.mark.parametrize("key, value, want", [
    ("redrafter_num_beams", 0, "redrafter_num_beams is 0, must be a positive integer"),
    ("redrafter_draft_len_per_beam", 0, "redrafter_draft_len_per_beam is 0, must be a positive integer"),
    ("redrafter_num_layers", -1, "redrafter_num_layers is -1, must be an integer within 0..1024")])
def test_a_drafter_size_out_of_range_is_the_one_problem(ckpt, tmp_path, key, value, want):
    """No beams or no draft tokens per beam (a drafter of no layers is a drafter head alone, allowed): refused by
    the field check, the one problem named."""
    assert inspect_checkpoint(broken(ckpt, tmp_path, **{key: value})).problems == [want]


@pytest.mark.parametrize("key, value, want", [
    ("num_key_value_heads", "2", "num_key_value_heads is '2', must be null or a positive integer"),
    ("max_position_embeddings", 0, "max_position_embeddings is 0, must be null or a positive integer"),
    ("mapping", {"world_size": "1", "tp_size": 1},
     "mapping is {'world_size': '1', 'tp_size': 1}, must be null or an object of positive integer tp_size / pp_size "
     "/ cp_size / world_size")])
def test_a_malformed_size_field_is_the_one_problem(ckpt, tmp_path, key, value, want):
    """A mutation review: without their field checks a string kv head count was a TypeError traceback, a
    max_position_embeddings of 0 passed (the tree's bound then skipped), and a string world_size passed (read with
    int()), though TensorRT-LLM's Mapping takes it as written."""
    assert inspect_checkpoint(broken(ckpt, tmp_path, **{key: value})).problems == [want]


@pytest.mark.parametrize("edit, fix", [
    (lambda cfg: cfg.pop("hidden_act"), "add the model's (\"hidden_act\": \"silu\") to config.json ("),
    (lambda cfg: cfg.update(redrafter_num_beams=10 ** 6), "reconvert with smaller --num-beams / --draft-len (+1 more; ")])
def test_a_problem_with_its_own_fix_is_not_chained_to_re_convert(ckpt, tmp_path, edit, fix):
    """A review: a problem whose own fix edits config.json (hidden_act absent: add it) was chained to another,
    '...: add ... to config.json: run `redrafter-trt inspect CKPT` for all problems, then re-convert it', though the
    edit alone would do; one whose fix said 'reconvert' (unhyphenated) got ', then re-convert it' after it. A problem
    carrying its own fix ends in it, the others named in brackets."""
    copy = Path(shutil.copytree(ckpt, tmp_path / "ck"))
    cfg = json.loads((copy / "config.json").read_text())
    edit(cfg)
    (copy / "config.json").write_text(json.dumps(cfg))
    result = run_cli("build", "--checkpoint-dir", copy, "--output-dir", tmp_path / "e", "--dry-run")
    assert_one_line_error(result, f"checkpoint {copy} is not valid: ")
    assert result.stderr.strip().endswith(f": {fix}`redrafter-trt inspect {copy}` lists every problem)"), result.stderr


def test_require_valid_of_a_model_or_engine_folder_says_what_it_is_alone(tiny_llama, tmp_path):
    """A Hugging Face model or an engine passed as a checkpoint is refused with the line saying what it holds and
    where it goes, not as an invalid checkpoint to re-convert (a mutation review: dropping require_valid's own check
    survived, the line then reading 'checkpoint ... is not valid: ... then re-convert it')."""
    from redrafter_trt.checkpoint import require_valid

    engine = tmp_path / "engine"
    engine.mkdir()
    (engine / "config.json").write_text(json.dumps({"version": "1.2.0", "pretrained_config": {}, "build_config": {}}))
    for folder, kind in ((tiny_llama, "a Hugging Face model"), (engine, "a TensorRT-LLM engine")):
        with pytest.raises(ConfigError) as e:
            require_valid(folder)
        assert str(e.value).startswith(f"{folder} holds {kind}, not a ReDrafter checkpoint: "), e.value
        assert "not valid" not in str(e.value) and "re-convert it" not in str(e.value), e.value


@pytest.fixture(scope="module")
def ckpt_tp2(tmp_path_factory, tiny_llama, tiny_drafter):
    return convert(tiny_llama, tiny_drafter, tmp_path_factory.mktemp("ck2") / "ck", num_beams=2, draft_len=2,
                   tp_size=2)


def test_rank_files_beyond_tp_size_are_named(ckpt_tp2, tmp_path):
    """A rank file no rank reads (a tp_size lowered by hand, or a folder reused) is named, not ignored."""
    copy = broken(ckpt_tp2, tmp_path)
    shutil.copy(copy / "rank1.safetensors", copy / "rank2.safetensors")
    assert "rank files [2] exceed tp_size 2" in inspect_checkpoint(copy).problems


def test_a_tp_size_lowered_by_hand_names_the_rank_files_own(ckpt_tp2, tmp_path):
    """A mutation review: a check of the rank alone, not the tp_size a rank file was written at, passed the tests.
    A tp 2 checkpoint whose mapping was edited to tp 1: rank0 was written as rank 0 of tp_size 2."""
    copy = broken(ckpt_tp2, tmp_path, mapping={"world_size": 1, "tp_size": 1, "pp_size": 1})
    problems = inspect_checkpoint(copy).problems
    assert problems[:2] == ["rank files [1] exceed tp_size 1", "rank0.safetensors was written as rank 0 of tp_size 2: "
                            "rank files were renamed or mixed from another checkpoint; re-convert"], problems


def test_rank_files_whose_lm_head_rows_sampled_are_zero_are_not_copies(ckpt_tp2, tmp_path):
    """Rows of tokens never trained are as zero on one rank as on another: two ranks whose first lm_head rows are all
    zero are not a copied rank file (a mutation review: comparing such rows too survived)."""
    from safetensors import safe_open

    copy = broken(ckpt_tp2, tmp_path)
    for r in range(2):
        rank = copy / f"rank{r}.safetensors"
        with safe_open(rank, "pt") as f:
            metadata = f.metadata()  # as written: rank r of tp_size 2
        held = load_file(rank)
        held["lm_head.weight"][:8] = 0
        save_file(held, rank, metadata=metadata)
    assert inspect_checkpoint(copy).problems == []


@pytest.mark.parametrize("field, why", [
    ("redrafter_exit_dim", "TensorRT-LLM splits the drafter's layers by rows without padding"),
    ("vocab_size", "TensorRT-LLM pads the drafter's lm_head to a multiple of tp_size, but declares its draft_probs "
                   "input with the unpadded vocab_size"),
])
def test_drafter_dims_tensor_parallelism_cannot_split_are_named(ckpt_tp2, tmp_path, field, why):
    """A checkpoint from another tool whose drafter exit dim or vocabulary is odd at tp_size 2. A review: the reason
    given, "TensorRT-LLM does not pad the drafter", is untrue of V: 1.2.x's ReDrafterMixin builds the drafter's lm_head
    at pad_vocab_size(V, tp), but declares the engine's draft_probs input (fed the drafter's probabilities of the step
    before) at V itself."""
    odd = json.loads((ckpt_tp2 / "config.json").read_text())[field] + 1
    problems = inspect_checkpoint(broken(ckpt_tp2, tmp_path, **{field: odd})).problems
    assert f"{field} {odd} is not divisible by tp_size 2 ({why})" in problems, problems


def test_a_drafter_hidden_size_tensor_parallelism_cannot_split_is_named(ckpt_tp2, tmp_path):
    """A mutation review: no test had an odd redrafter_hidden_size at tp_size 2 (the drafter's RNN splits it by rows;
    the base's layers do not split the hidden size, and the head_size given keeps the head even), and a check
    without it passed."""
    problems = inspect_checkpoint(broken(ckpt_tp2, tmp_path, hidden_size=65, redrafter_hidden_size=65)).problems
    assert problems == ["redrafter_hidden_size 65 is not divisible by tp_size 2 (TensorRT-LLM splits the drafter's "
                        "layers by rows without padding)"], problems


def test_a_drafter_hidden_size_other_than_the_bases_is_named(ckpt, tmp_path):
    problems = inspect_checkpoint(broken(ckpt, tmp_path, redrafter_hidden_size=32)).problems
    assert "redrafter_hidden_size 32 != base hidden_size 64" in problems


@pytest.mark.parametrize("metadata", [{"format": "pt"}, None], ids=["no-rank-metadata", "ours"])
def test_a_rank_file_copied_over_another_rank_is_named(ckpt_tp2, tmp_path, metadata):
    """A review: rank0's file saved as rank1 too, without our rank metadata (TensorRT-LLM's convert_checkpoint writes
    none), passed inspect, and `run` generated garbage. Two ranks holding one same shard of lm_head are named."""
    copy = broken(ckpt_tp2, tmp_path)
    if metadata:
        save_file(load_file(copy / "rank0.safetensors"), copy / "rank1.safetensors", metadata=metadata)
    else:
        shutil.copy(copy / "rank0.safetensors", copy / "rank1.safetensors")
    problems = inspect_checkpoint(copy).problems
    dup = ("rank1.safetensors holds the same lm_head.weight shard as rank0.safetensors: a copied rank file; "
           "reconvert with --tp-size 2")
    assert (dup in problems) == bool(metadata), problems  # ours: named by the rank it was written as, not twice
    assert problems, problems


def test_tp2_rank_files_of_a_random_model_are_not_copies(ckpt_tp2, tiny_qwen2, tmp_path):
    from tinymodels import make_drafter

    assert inspect_checkpoint(ckpt_tp2).problems == []
    ck = convert(tiny_qwen2, make_drafter(tmp_path / "d", tiny_qwen2), tmp_path / "c", tp_size=4, num_beams=2,
                 draft_len=2)
    assert inspect_checkpoint(ck).problems == []


def test_a_draft_length_beyond_the_drafters_predict_n_is_a_problem(ckpt, tmp_path):
    """A review: redrafter_draft_len_per_beam raised by hand past the drafter's recorded predict_n (which convert
    refuses as --draft-len) passed inspect, and `run` and `build` took it."""
    producer = json.loads((ckpt / "config.json").read_text())["producer"] | {"drafter_predict_n": 1}
    problems = inspect_checkpoint(broken(ckpt, tmp_path, producer=producer)).problems
    assert problems == ["redrafter_draft_len_per_beam 2 exceeds the 1 tokens the drafter was trained to predict "
                        "(producer.drafter_predict_n): reconvert with --draft-len <= 1, or retrain the drafter with "
                        "--predict-n >= 2"], problems
    copy = broken(ckpt, tmp_path / "equal", producer=producer | {"drafter_predict_n": 2})
    assert inspect_checkpoint(copy).problems == []


def test_as_many_beams_as_tokens_is_no_problem(ckpt, tmp_path):
    """A mutation review (`>=` for `>` survived): beams beyond the vocabulary are named, as many as its tokens are
    not (each beam may still start with another token)."""
    fits = broken(ckpt, tmp_path / "fits", redrafter_num_beams=256, redrafter_draft_len_per_beam=1)
    assert inspect_checkpoint(fits).problems == []
    beyond = broken(ckpt, tmp_path / "beyond", redrafter_num_beams=257, redrafter_draft_len_per_beam=1)
    assert inspect_checkpoint(beyond).problems == [
        "redrafter_num_beams 257 exceeds the vocabulary (256 tokens), beyond which no beams differ: reconvert with a "
        "smaller --num-beams"]


def test_lm_head_scales_in_a_checkpoint_that_is_not_fp8_are_unexpected(ckpt, tmp_path):
    """A review (a mutant that survived): TensorRT-LLM drops stale lm_head scales only from an FP8 checkpoint
    (preprocess_perlayer_weights); in one that is not FP8 they are tensors no layer reads."""
    scales = {"lm_head.weights_scaling_factor": torch.ones(1), "lm_head.activation_scaling_factor": torch.ones(1)}
    problems = inspect_checkpoint(broken(ckpt, tmp_path, tensors=lambda t: t.update(scales))).problems
    assert problems == ["rank0: unexpected tensors lm_head.activation_scaling_factor, "
                        "lm_head.weights_scaling_factor"], problems
