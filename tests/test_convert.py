"""Converter: every registry entry on tiny models, tp 1/2/4, float16/bfloat16/float32; the rank shards join
back to the source tensors; config fields as TensorRT-LLM's from_hugging_face derives them."""

from __future__ import annotations

import json
import logging
import re

import pytest
import torch
from safetensors.torch import load_file, save_file

from redrafter_trt.checkpoint import inspect_checkpoint
from redrafter_trt.convert import convert
from redrafter_trt.drafter import load_drafter
from redrafter_trt.errors import ConfigError, TensorError
from redrafter_trt.registry import REGISTRY
from redrafter_trt.rules import drafter_to_trtllm
from tinymodels import TRANSFORMERS_5, make_drafter, make_hf

DT = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def join_base(ckpt, cfg) -> dict[str, torch.Tensor]:
    """Undo the tp split of a converted checkpoint: HF-named tensors (q, k, v separated, kv copies dropped)."""
    tp = cfg["mapping"]["tp_size"]
    ranks = [load_file(ckpt / f"rank{r}.safetensors") for r in range(tp)]
    nh, nkv, hd, V = cfg["num_attention_heads"], cfg["num_key_value_heads"], cfg["head_size"], cfg["vocab_size"]
    out = {"model.embed_tokens.weight": ranks[0]["transformer.vocab_embedding.weight"],
           "model.norm.weight": ranks[0]["transformer.ln_f.weight"],
           "lm_head.weight": torch.cat([r["lm_head.weight"] for r in ranks])[:V]}
    kv_ranks = range(0, tp, max(tp // nkv, 1))  # one rank per distinct kv block
    for layer in range(cfg["num_hidden_layers"]):
        p, q = f"transformer.layers.{layer}.", f"model.layers.{layer}."
        for kind in ("weight", "bias"):
            if p + f"attention.qkv.{kind}" not in ranks[0]:
                continue
            parts = [r[p + f"attention.qkv.{kind}"].split([nh // tp * hd, max(nkv // tp, 1) * hd, max(nkv // tp, 1) * hd])
                     for r in ranks]
            out[q + f"self_attn.q_proj.{kind}"] = torch.cat([x[0] for x in parts])
            out[q + f"self_attn.k_proj.{kind}"] = torch.cat([parts[r][1] for r in kv_ranks])
            out[q + f"self_attn.v_proj.{kind}"] = torch.cat([parts[r][2] for r in kv_ranks])
            # duplicated kv heads are exact copies
            for r in range(tp):
                assert torch.equal(parts[r][1], parts[kv_ranks[r * len(kv_ranks) // tp]][1])
        out[q + "self_attn.o_proj.weight"] = torch.cat([r[p + "attention.dense.weight"] for r in ranks], 1)
        out[q + "mlp.gate_proj.weight"] = torch.cat([r[p + "mlp.fc.weight"] for r in ranks])
        out[q + "mlp.up_proj.weight"] = torch.cat([r[p + "mlp.gate.weight"] for r in ranks])
        out[q + "mlp.down_proj.weight"] = torch.cat([r[p + "mlp.proj.weight"] for r in ranks], 1)
        for cut, whole in (("mlp.fc", "mlp.gate_proj"), ("mlp.gate", "mlp.up_proj")):  # column-parallel biases
            if p + cut + ".bias" in ranks[0]:
                out[q + whole + ".bias"] = torch.cat([r[p + cut + ".bias"] for r in ranks])
        for row, whole in (("attention.dense", "self_attn.o_proj"), ("mlp.proj", "mlp.down_proj")):
            if p + row + ".bias" in ranks[0]:  # row-parallel biases: whole on every rank, added after the all-reduce
                out[q + whole + ".bias"] = ranks[0][p + row + ".bias"]
                assert all(torch.equal(r[p + row + ".bias"], ranks[0][p + row + ".bias"]) for r in ranks)
        for norm, whole in (("attention.q_layernorm", "self_attn.q_norm"), ("attention.k_layernorm", "self_attn.k_norm")):
            if p + norm + ".weight" in ranks[0]:  # Qwen3's per-head norms: whole on every rank
                out[q + whole + ".weight"] = ranks[0][p + norm + ".weight"]
                assert all(torch.equal(r[p + norm + ".weight"], ranks[0][p + norm + ".weight"]) for r in ranks)
        out[q + "input_layernorm.weight"] = ranks[0][p + "input_layernorm.weight"]
        out[q + "post_attention_layernorm.weight"] = ranks[0][p + "post_layernorm.weight"]
        for r in ranks[1:]:
            assert torch.equal(r[p + "input_layernorm.weight"], ranks[0][p + "input_layernorm.weight"])
    return out


@pytest.mark.parametrize("arch", sorted(REGISTRY))
@pytest.mark.parametrize("tp", [1, 2, 4])
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_shards_join_back(tmp_path, arch, tp, dtype):
    family = {"LlamaForCausalLM": "llama", "MistralForCausalLM": "mistral", "Qwen2ForCausalLM": "qwen2",
              "Qwen3ForCausalLM": "qwen3"}[arch]
    tie = tp == 2  # tied and untied both covered
    # 4 heads, 2 kv heads: tp 4 repeats each kv head twice; Qwen3 with its head_dim other than hidden / heads
    base = make_hf(tmp_path / "base", family, tie=tie, **({"head_dim": 32} if family == "qwen3" else {}))
    drafter = make_drafter(tmp_path / "drafter", base)
    out = convert(base, drafter, tmp_path / "ckpt", tp_size=tp, dtype=dtype)
    rep = inspect_checkpoint(out)
    assert rep.ok, rep.problems
    cfg = json.loads((out / "config.json").read_text())
    src = load_file(base / "model.safetensors")
    if tie:
        src["lm_head.weight"] = src["model.embed_tokens.weight"]
    joined = join_base(out, cfg)
    assert set(joined) == set(src)
    for name, t in src.items():
        assert torch.equal(joined[name], t.to(DT[dtype])), name
    # literal names, as TensorRT-LLM's MODEL_MAP reads them (a Mistral runs as Llama), not the registry's own
    assert (cfg["architecture"], cfg["base_model_architecture"]) == {
        "LlamaForCausalLM": ("ReDrafterForLLaMALM", "LlamaForCausalLM"),
        "MistralForCausalLM": ("ReDrafterForLLaMALM", "LlamaForCausalLM"),
        "Qwen2ForCausalLM": ("ReDrafterForQWenLM", "Qwen2ForCausalLM"),
        "Qwen3ForCausalLM": ("ReDrafterForQWenLM", "Qwen3ForCausalLM")}[arch]
    assert cfg["attn_bias"] is (family == "qwen2")
    if family == "qwen3":  # as TensorRT-LLM's QWenConfig.from_hugging_face writes a Qwen3
        assert (cfg["qwen_type"], cfg["head_size"], cfg["seq_length"]) == ("qwen3", 32, 8192)
        assert sum(k.endswith(("q_norm.weight", "k_norm.weight")) for k in src) == 2 * cfg["num_hidden_layers"]


@pytest.mark.parametrize("tp", [1, 2, 4])
@pytest.mark.parametrize("flags", [dict(attention_bias=True, mlp_bias=True), dict(attention_bias=True),
                                   dict(mlp_bias=True)])
def test_llama_biases_join_back(tmp_path, tp, flags):
    """Llama's attention_bias (q/k/v, o_proj) and mlp_bias (gate/up/down_proj): attn_bias / mlp_bias in config.json,
    as TensorRT-LLM's Llama reads them, and every bias in the checkpoint, split as TensorRT-LLM splits it."""
    base = make_hf(tmp_path / "base", "llama", **flags)
    out = convert(base, make_drafter(tmp_path / "drafter", base), tmp_path / "ckpt", tp_size=tp, dtype="float32")
    assert inspect_checkpoint(out).ok
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["attn_bias"], cfg["mlp_bias"]) == (flags.get("attention_bias", False), flags.get("mlp_bias", False))
    src = load_file(base / "model.safetensors")
    joined = join_base(out, cfg)
    assert set(joined) == set(src) and all(torch.equal(joined[k], src[k]) for k in src)
    assert sum(k.endswith(".bias") for k in src) == 2 * (4 * flags.get("attention_bias", 0) + 3 * flags.get("mlp_bias", 0))
    # TensorRT-LLM's two-step flow: a base checkpoint with these biases converts to the same tensors
    again = convert(_trtllm_base_only(tmp_path, base, tp), tmp_path / "drafter", tmp_path / "again")
    assert json.loads((again / "config.json").read_text())["mlp_bias"] == cfg["mlp_bias"]
    for r in range(tp):
        want, got = load_file(out / f"rank{r}.safetensors"), load_file(again / f"rank{r}.safetensors")
        assert sorted(got) == sorted(want) and all(torch.equal(got[k], want[k]) for k in want)


@pytest.mark.parametrize("family", ["mistral", "qwen2"])
def test_bias_flags_a_class_does_not_read_bias_nothing(tmp_path, family):
    """Mistral's and Qwen2's classes read neither attention_bias nor mlp_bias (Qwen2's q/k/v are biased whatever
    it says): a config.json saying both true holds no such biases, and converts with TensorRT-LLM's mlp_bias false
    (and attn_bias as the architecture has it), as transformers builds it."""
    base = make_hf(tmp_path / "base", family, attention_bias=True, mlp_bias=True)
    hf = json.loads((base / "config.json").read_text())
    assert hf["attention_bias"] is True and hf["mlp_bias"] is True
    src = load_file(base / "model.safetensors")
    assert not any(k.endswith(("mlp.gate_proj.bias", "o_proj.bias")) for k in src)
    out = convert(base, make_drafter(tmp_path / "drafter", base), tmp_path / "ckpt", tp_size=2, dtype="float32")
    assert inspect_checkpoint(out).ok
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["attn_bias"], cfg["mlp_bias"]) == (family == "qwen2", False)
    joined = join_base(out, cfg)
    assert set(joined) == set(src) and all(torch.equal(joined[k], src[k]) for k in src)


@pytest.mark.parametrize("tp", [3, 4])
def test_vocab_padding_and_kv_duplication(tmp_path, tp):
    """lm_head rows are zero-padded to a multiple of tp; one kv head is repeated on every rank."""
    base = make_hf(tmp_path / "base", "llama", vocab_size=250, num_attention_heads=12, num_key_value_heads=1,
                   hidden_size=96, intermediate_size=192)
    ckpt_base = _trtllm_base_only(tmp_path, base, tp)
    cfg = json.loads((ckpt_base / "config.json").read_text())
    joined = join_base(ckpt_base, cfg)
    src = load_file(base / "model.safetensors")
    assert torch.equal(joined["lm_head.weight"], src["lm_head.weight"])
    rows = -(-250 // tp)
    last = load_file(ckpt_base / f"rank{tp - 1}.safetensors")["lm_head.weight"]
    assert last.shape[0] == rows and not last[250 - rows * (tp - 1):].any()


def test_a_rank_past_the_vocabularys_end_holds_only_padding():
    """5 rows on 4 ranks pad to 8, 2 a rank: rank 2 holds the last real row and one zero row, rank 3 zero rows only."""
    from redrafter_trt.shard import vocab_range

    assert [vocab_range(5, r, 4) for r in range(4)] == [(0, 2, 0), (2, 4, 0), (4, 5, 1), (5, 5, 2)]
    assert [vocab_range(8, r, 4) for r in range(4)] == [(0, 2, 0), (2, 4, 0), (4, 6, 0), (6, 8, 0)]


def _trtllm_base_only(tmp_path, base, tp):
    """A base-only checkpoint through the converter's HF path (drafter vocab must divide tp, so use the plan directly)."""
    from redrafter_trt.config import BaseModelConfig, read_json, trtllm_model_fields
    from redrafter_trt.base_plan import plan_hf_rank
    from redrafter_trt.convert import _check_plan, _write
    from redrafter_trt.io import TensorSource

    hf = read_json(base / "config.json", "base")
    b = BaseModelConfig.from_hf(hf, "cfg")
    cfg = trtllm_model_fields(b, "float32", tp)
    src = TensorSource.from_hf_folder(base)
    plans = [plan_hf_rank(src, b, cfg, r) for r in range(tp)]
    for r, p in enumerate(plans):
        _check_plan(p, cfg, r)
    out = tmp_path / f"base_tp{tp}"
    _write(out, cfg, plans, force=False)
    return out


@pytest.mark.parametrize("rnn", [True, False])
@pytest.mark.parametrize("exit_dim", [None, 64])
@pytest.mark.parametrize("fmt", ["safetensors", "pt", "alias", "alias0", "sharded", "bin"])
def test_drafter_tensors(tmp_path, tiny_llama, rnn, exit_dim, fmt):
    """sharded and bin: what `save_pretrained` writes (Apple's trainer saves the drafter with it) for a drafter over
    its shard size (a 70B base's) or without safetensors; both were "has neither model.safetensors nor model.pt".
    alias0: the `0.{i}.*` alias of `lm_head.{i}.*` (an nn.Sequential saved at the top), untested before."""
    drafter = make_drafter(tmp_path / "d", tiny_llama, rnn=rnn, exit_dim=exit_dim)
    cfg_d, source = load_drafter(drafter)
    if fmt != "safetensors":
        state = load_file(drafter / "model.safetensors")
        (drafter / "model.safetensors").unlink()
        if fmt == "alias":
            state = {k.replace("lm_head.", "lm_heads.").replace("input_proj.", "input_projs."): v for k, v in state.items()}
        if fmt == "alias0":
            state = {re.sub(r"^lm_head\.", "0.", k): v for k, v in state.items()}
            assert "0.0.linear.weight" in state and f"0.{cfg_d.num_draft_layers}.weight" in state
        if fmt == "sharded":
            shards = {f"model-0000{i + 1}-of-00002.safetensors": dict(list(state.items())[i::2]) for i in range(2)}
            for fname, part in shards.items():
                save_file(part, drafter / fname)
            weight_map = {k: fname for fname, part in shards.items() for k in part}
            (drafter / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
        else:
            torch.save(state, drafter / ("pytorch_model.bin" if fmt == "bin" else "model.pt"))
    out = convert(tiny_llama, drafter, tmp_path / "ckpt", tp_size=2, dtype="bfloat16")
    assert inspect_checkpoint(out).ok
    ranks = [load_file(out / f"rank{r}.safetensors") for r in range(2)]
    for name, t in source.items():
        dest = drafter_to_trtllm(name, cfg_d.num_draft_layers)
        assert torch.equal(torch.cat([r[dest] for r in ranks]), t.to(torch.bfloat16)), name
    assert ("drafter.input_proj.weight" in ranks[0]) is (exit_dim is not None)
    assert ("drafter.rnn_u.weight" in ranks[0]) is rnn


def test_a_drafter_config_without_vocab_size_takes_it_from_the_head(tmp_path, tiny_llama):
    """A review: a drafter's config.json without vocab_size (its final projection's rows give it) was never tested;
    it converts to what the same drafter with vocab_size converts to."""
    drafter = make_drafter(tmp_path / "d", tiny_llama)
    V = json.loads((tiny_llama / "config.json").read_text())["vocab_size"]
    want = convert(tiny_llama, drafter, tmp_path / "want", tp_size=2, dtype="float32")
    path = drafter / "config.json"
    raw = json.loads(path.read_text())
    assert raw.pop("vocab_size") == V
    path.write_text(json.dumps(raw))
    cfg, _ = load_drafter(drafter)
    assert cfg.vocab_size == V
    got = convert(tiny_llama, drafter, tmp_path / "got", tp_size=2, dtype="float32")
    assert json.loads((got / "config.json").read_text()) == json.loads((want / "config.json").read_text())
    for r in range(2):
        a, b = load_file(got / f"rank{r}.safetensors"), load_file(want / f"rank{r}.safetensors")
        assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a), r


def test_a_drafter_config_vocab_size_the_head_does_not_hold_is_refused(tmp_path, tiny_llama):
    """vocab_size in config.json is the drafter's, checked against its final projection's rows, not replaced by them."""
    drafter = make_drafter(tmp_path / "d", tiny_llama)
    path = drafter / "config.json"
    raw = json.loads(path.read_text())
    rows = raw["vocab_size"]
    path.write_text(json.dumps(raw | {"vocab_size": rows + 44}))
    with pytest.raises(TensorError, match=rf"misshapen tensors: lm_head\.2\.weight \({rows}, \d+\) != "
                                          rf"\({rows + 44}, \d+\)"):
        load_drafter(drafter)


@pytest.mark.parametrize("read, ignored, remark", [
    ("model.safetensors", "model.pt", " (as transformers' from_pretrained does)"),
    ("model.pt", "pytorch_model.bin", "")])  # transformers reads no model.pt: no remark
def test_the_first_weights_file_wins_with_a_warning(tmp_path, tiny_llama, caplog, read, ignored, remark):
    """A review: with model.safetensors and model.pt both in a drafter folder (a re-save beside the old file), which
    one was read went unsaid and untested. model.safetensors is, as transformers' from_pretrained takes it first;
    model.pt before shards or a pytorch_model.bin; a warning names both."""
    drafter = make_drafter(tmp_path / "d", tiny_llama)
    want = convert(tiny_llama, drafter, tmp_path / "want", tp_size=1, dtype="float32")
    state = load_file(drafter / "model.safetensors")
    if read == "model.pt":
        (drafter / "model.safetensors").unlink()
        torch.save(state, drafter / read)
    torch.save({k: v + 1 for k, v in state.items()}, drafter / ignored)
    with caplog.at_level("WARNING", logger="redrafter_trt.drafter"):
        got = convert(tiny_llama, drafter, tmp_path / "got", tp_size=1, dtype="float32")
    a, b = load_file(got / "rank0.safetensors"), load_file(want / "rank0.safetensors")
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    said = [r.getMessage() for r in caplog.records if r.name == "redrafter_trt.drafter" and r.levelno == logging.WARNING]
    assert said == [f"drafter {drafter} holds {read} beside {ignored}: reading {read}{remark} and ignoring {ignored}; "
                    f"remove the file you do not mean"]


TRTLLM_DRAFTER_NAMES = {"input_proj.weight": "drafter.input_proj.weight", "input_proj.bias": "drafter.input_proj.bias",
                        "rnn_u.weight": "drafter.rnn_u.weight", "rnn_u.bias": "drafter.rnn_u.bias",
                        "rnn_w.weight": "drafter.rnn_w.weight"}


@pytest.mark.parametrize("rnn, exit_dim, layers, tp, dtype", [
    (True, None, 1, 1, "float32"), (False, 96, 3, 2, "float16"), (True, 32, 3, 2, "bfloat16"),
    (False, None, 1, 2, "float32"), (True, 96, 1, 2, "float16")])
def test_drafter_rank_tensors_are_trtllm_converters(tmp_path, tiny_llama, rnn, exit_dim, layers, tp, dtype):
    """Rank r holds what TensorRT-LLM 1.2's examples/redrafter/convert_checkpoint.py (hf_drafter) writes for the same
    Apple drafter: each tensor cast to the dtype, then torch.chunk(t, tp, 0)[r] (every drafter layer is a
    ColumnLinear with gathered output: weights and biases cut by rows), under its `drafter.` name; names spelled
    out here, not taken from rules.py."""
    drafter = make_drafter(tmp_path / "d", tiny_llama, rnn=rnn, exit_dim=exit_dim, num_draft_layers=layers)
    apple = load_file(drafter / "model.safetensors")
    names = TRTLLM_DRAFTER_NAMES | {f"lm_head.{i}.linear.{k}": f"drafter.layers.{i}.linear.{k}"
                                    for i in range(layers) for k in ("weight", "bias")}
    names[f"lm_head.{layers}.weight"] = "drafter.lm_head.weight"
    out = convert(tiny_llama, drafter, tmp_path / "ckpt", tp_size=tp, dtype=dtype)
    for r in range(tp):
        got = {k: v for k, v in load_file(out / f"rank{r}.safetensors").items() if k.startswith("drafter.")}
        want = {names[k]: torch.chunk(t.to(DT[dtype]), tp, 0)[r] for k, t in apple.items()}
        assert set(got) == set(want)
        for k, t in want.items():
            assert got[k].dtype == t.dtype and torch.equal(got[k], t), (r, k)



@pytest.mark.parametrize("name", ["lm_head.2.linear.weight", "lm_head.2.linear.bias", "lm_head.1.weight",
                                  "lm_head.x.linear.weight"])
def test_a_drafter_name_past_its_layers_has_no_trtllm_name(name):
    """TensorRT-LLM 1.2's examples/redrafter/convert_checkpoint.py (hf_drafter) writes drafter.layers.{i} for i below
    num_draft_layers only, and drafter.lm_head from lm_head.{num_draft_layers}: a layer past them, or a head at another
    index, is no TensorRT-LLM tensor (KeyError), not a drafter.layers.2 that no engine reads."""
    assert drafter_to_trtllm("lm_head.1.linear.weight", 2) == "drafter.layers.1.linear.weight"
    assert drafter_to_trtllm("lm_head.2.weight", 2) == "drafter.lm_head.weight"
    with pytest.raises(KeyError):
        drafter_to_trtllm(name, 2)

def test_config_fields(tmp_path, tiny_drafter):
    base = make_hf(tmp_path / "b", "llama")
    out = convert(base, tiny_drafter, tmp_path / "c", num_beams=3, draft_len=4, greedy=False)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["redrafter_num_beams"] == 3 and cfg["redrafter_draft_len_per_beam"] == 4
    assert cfg["redrafter_greedy_search"] is False and cfg["redrafter_is_rnn"] is True
    assert cfg["redrafter_exit_dim"] == 128 and cfg["redrafter_hidden_size"] == 64
    assert cfg["dtype"] == "float32" and cfg["mapping"] == {"world_size": 1, "tp_size": 1, "pp_size": 1}
    assert cfg["producer"]["name"] == "redrafter-trt" and cfg["producer"]["options"]["num_beams"] == 3


@pytest.mark.parametrize("predict_n", [2, None])
def test_the_drafters_predict_n_is_recorded(tmp_path, tiny_drafter, predict_n):
    """A walkthrough: the checkpoint kept no trace of the drafter's predict_n, so `acceptance --draft-lens 3` on one
    whose drafter predicts 2 advised a reconversion convert refuses. It is recorded in the producer block (ours:
    TensorRT-LLM's PretrainedConfig only keeps unknown keys as attributes), null for a drafter that does not say."""
    import shutil

    from redrafter_trt.runtime.config import RuntimeConfig

    drafter = tmp_path / "d"
    shutil.copytree(tiny_drafter, drafter)
    cfg = json.loads((drafter / "config.json").read_text())
    (drafter / "config.json").write_text(json.dumps({**cfg, "predict_n": predict_n}))
    out = convert(make_hf(tmp_path / "b", "llama"), drafter, tmp_path / "c", draft_len=2)
    assert json.loads((out / "config.json").read_text())["producer"]["drafter_predict_n"] == predict_n
    assert RuntimeConfig.from_dir(out).drafter_predict_n == predict_n


def test_sharpened_drafter_warns_only_for_sampling(tmp_path, tiny_drafter, caplog):
    """A drafter trained with --later-sharpness 4 (recorded in its producer block) is for greedy acceptance."""
    import shutil

    base = make_hf(tmp_path / "b", "llama")
    sharp = tmp_path / "sharp"
    shutil.copytree(tiny_drafter, sharp)
    cfg = json.loads((sharp / "config.json").read_text())
    (sharp / "config.json").write_text(json.dumps({**cfg, "producer": {"later_sharpness": 4.0}}))
    calibrated = tmp_path / "calibrated"  # train's default, recorded in its options
    shutil.copytree(tiny_drafter, calibrated)
    (calibrated / "config.json").write_text(json.dumps({**cfg, "producer": {"options": {"later_sharpness": 1.0}}}))
    for drafter, greedy, warned in [(sharp, True, False), (sharp, False, True), (tiny_drafter, False, False),
                                    (calibrated, False, False)]:
        caplog.clear()
        convert(base, drafter, tmp_path / f"c-{drafter.name}-{greedy}", greedy=greedy, dtype="float32")
        said = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
        if warned:
            assert len(said) == 1 and "--later-sharpness 4" in said[0], said
        else:
            assert said == [], said


@pytest.mark.parametrize("saved, dtype, warned", [
    (torch.float32, "auto", True), (torch.float32, "float32", False), (torch.bfloat16, "auto", False)])
def test_auto_keeping_a_float32_base_is_named(tmp_path, tiny_drafter, caplog, saved, dtype, warned):
    """A review: `--dtype auto` keeps a float32 base's dtype, where TensorRT-LLM's converters (`infer_dtype`) make
    float16, so its engine came out twice the size without a word; said now, and not for a float32 asked for."""
    base = make_hf(tmp_path / "b", "llama", dtype=saved)
    with caplog.at_level("WARNING", logger="redrafter_trt.base_plan"):
        out = convert(base, tiny_drafter, tmp_path / "c", dtype=dtype)
    assert json.loads((out / "config.json").read_text())["dtype"] == str(saved).removeprefix("torch.")
    assert ("is float32 and --dtype auto keeps it" in caplog.text) is warned


LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 64}


@pytest.mark.parametrize("layout", ["top", "params"])
@pytest.mark.parametrize("case", ["llama3", "qwen2"])
def test_rope_fields(tmp_path, layout, case):
    if case == "llama3":
        base = make_hf(tmp_path / "b", "llama", rope_layout=layout, rope_theta=500000.0, rope_scaling=LLAMA3,
                       num_key_value_heads=1)
    else:
        base = make_hf(tmp_path / "b", "qwen2", rope_layout=layout, rope_theta=1000000.0)
    drafter = make_drafter(tmp_path / "d", base)
    out = convert(base, drafter, tmp_path / "c", tp_size=2)
    cfg = json.loads((out / "config.json").read_text())
    if case == "llama3":
        assert cfg["rotary_base"] == 500000.0
        assert cfg["rotary_scaling"] == LLAMA3
        assert cfg["num_key_value_heads"] == 1 and inspect_checkpoint(out).ok
    else:
        assert cfg["rotary_base"] == 1000000.0 and cfg["rotary_scaling"] is None
        assert cfg["qwen_type"] == "qwen2" and cfg["architecture"] == "ReDrafterForQWenLM"


def test_smollm2_config(tmp_path, smollm2):
    """SmolLM2 ships rope_theta 100000 in transformers 5's rope_parameters layout."""
    from redrafter_trt.drafter import init_drafter_for_base

    d = tmp_path / "d"
    init_drafter_for_base(smollm2, d, exit_dim=576)
    out = convert(smollm2, d, tmp_path / "c", tp_size=3, dtype="bfloat16")
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["rotary_base"] == 100000.0 and cfg["rotary_scaling"] is None
    assert cfg["num_key_value_heads"] == 3 and cfg["head_size"] == 64 and cfg["tie_word_embeddings"] is True
    assert cfg["norm_epsilon"] == pytest.approx(1e-5)
    assert inspect_checkpoint(out).ok


def test_trtllm_two_step_flow(tmp_path, tiny_llama, tiny_drafter):
    """A TensorRT-LLM base checkpoint (here written by us, base only) takes the drafter unchanged."""
    base_ckpt = _trtllm_base_only(tmp_path, tiny_llama, 2)
    direct = convert(tiny_llama, tiny_drafter, tmp_path / "direct", tp_size=2)
    two_step = convert(base_ckpt, tiny_drafter, tmp_path / "two")
    for r in range(2):
        a, b = load_file(direct / f"rank{r}.safetensors"), load_file(two_step / f"rank{r}.safetensors")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_trtllm_two_step_flow_with_a_mistral_base(tmp_path, tiny_llama, tiny_drafter):
    """TensorRT-LLM's llama converter and modelopt name a Mistral base checkpoint MistralForCausalLM (MODEL_MAP builds
    it as LLaMAForCausalLM, as ReDrafterForLLaMALM is): it was refused as an unsupported architecture."""
    base_ckpt = _trtllm_base_only(tmp_path, tiny_llama, 1)
    cfg = json.loads((base_ckpt / "config.json").read_text())
    (base_ckpt / "config.json").write_text(json.dumps(cfg | {"architecture": "MistralForCausalLM"}))
    out = convert(base_ckpt, tiny_drafter, tmp_path / "two")
    written = json.loads((out / "config.json").read_text())
    assert (written["architecture"], written["base_model_architecture"]) == ("ReDrafterForLLaMALM", "MistralForCausalLM")
    assert inspect_checkpoint(out).ok
    direct = load_file(convert(tiny_llama, tiny_drafter, tmp_path / "direct") / "rank0.safetensors")
    two = load_file(out / "rank0.safetensors")
    assert direct.keys() == two.keys() and all(torch.equal(direct[k], two[k]) for k in direct)


def test_a_trtllm_llama_base_with_a_stray_qwen_type_has_no_qk_norm(tmp_path, tiny_llama, tiny_drafter):
    """TensorRT-LLM's Llama reads no qwen_type (only its QWen builds q/k layernorms for qwen3): a Llama base
    checkpoint carrying `"qwen_type": "qwen3"` converts and inspects as the Llama it is, without q/k layernorms."""
    base_ckpt = _trtllm_base_only(tmp_path, tiny_llama, 1)
    cfg = json.loads((base_ckpt / "config.json").read_text())
    (base_ckpt / "config.json").write_text(json.dumps(cfg | {"qwen_type": "qwen3"}))
    out = convert(base_ckpt, tiny_drafter, tmp_path / "two")
    assert inspect_checkpoint(out).ok
    assert not [k for k in load_file(out / "rank0.safetensors") if "layernorm" in k and "attention" in k]


@pytest.mark.parametrize("arch, family, want", [
    ("LlamaForCausalLM", "llama", "ReDrafterForLLaMALM"), ("MistralForCausalLM", "llama", "ReDrafterForLLaMALM"),
    ("QWenForCausalLM", "qwen2", "ReDrafterForQWenLM"), ("Qwen2ForCausalLM", "qwen2", "ReDrafterForQWenLM")])
def test_a_trtllm_base_checkpoints_architecture_names_its_redrafter(tmp_path, arch, family, want):
    """The two-step flow: the ReDrafter architecture wrapping each base architecture a TensorRT-LLM checkpoint names
    (modelopt and TensorRT-LLM's converters name a Qwen2 QWenForCausalLM, a Mistral MistralForCausalLM), literal."""
    base = make_hf(tmp_path / "b", family)
    base_ckpt = _trtllm_base_only(tmp_path, base, 1)
    cfg = json.loads((base_ckpt / "config.json").read_text())
    (base_ckpt / "config.json").write_text(json.dumps(cfg | {"architecture": arch}))
    out = convert(base_ckpt, make_drafter(tmp_path / "d", base), tmp_path / "c")
    got = json.loads((out / "config.json").read_text())
    assert (got["architecture"], got["base_model_architecture"]) == (want, arch)
    assert inspect_checkpoint(out).ok


@pytest.mark.parametrize("fields, warned", [
    ({"rotary_base": 10000.0, "max_position_embeddings": 32768}, True),   # Mistral 7B v0.1's (window 4096)
    ({"rotary_base": 1e6, "max_position_embeddings": 32768}, False),      # v0.2 and later: no window
    ({"rotary_base": 10000.0, "max_position_embeddings": 4096}, False),   # no position past the window
    ({"rotary_base": 10000.0, "max_position_embeddings": 4097}, True),    # one position past it
])
def test_two_step_mistral_v01_window_is_named(tmp_path, tiny_llama, tiny_drafter, caplog, fields, warned):
    """A review: Mistral v0.1's sliding window (refused from the Hugging Face folder: TensorRT-LLM attends over the
    whole context) is in no TensorRT-LLM checkpoint, so the two-step flow converted such a base without a word; a
    Mistral base with v0.1's rotary_base is now named (the checkpoint cannot say more)."""
    base_ckpt = _trtllm_base_only(tmp_path, tiny_llama, 1)
    cfg = json.loads((base_ckpt / "config.json").read_text())
    (base_ckpt / "config.json").write_text(json.dumps(cfg | {"architecture": "MistralForCausalLM"} | fields))
    with caplog.at_level("WARNING", logger="redrafter_trt.base_plan"):
        convert(base_ckpt, tiny_drafter, tmp_path / "two")
    assert ("sliding window of 4096 positions that a TensorRT-LLM checkpoint does not record" in caplog.text) is warned


def test_qwen2_configs_carry_the_seq_length_trtllm_reads(tmp_path, tiny_qwen2):
    """TensorRT-LLM 1.2.x's QWenDecoderLayer reads `config.seq_length` (models/qwen/model.py) and QWenConfig sets
    none, so a Qwen2 checkpoint without it failed trtllm-build ('QWenConfig' object has no attribute 'seq_length',
    TensorRT-LLM issue #3105): it is written as QWenConfig.from_hugging_face does (the HF value, else 8192), also
    into a TensorRT-LLM base checkpoint that lacks it (modelopt without TensorRT-LLM writes none)."""
    drafter = make_drafter(tmp_path / "d", tiny_qwen2)
    assert json.loads((convert(tiny_qwen2, drafter, tmp_path / "c") / "config.json").read_text())["seq_length"] == 8192
    own = make_hf(tmp_path / "b", "qwen2", seq_length=4096)
    out = convert(own, make_drafter(tmp_path / "d2", own), tmp_path / "c2")
    assert json.loads((out / "config.json").read_text())["seq_length"] == 4096
    base_ckpt = _trtllm_base_only(tmp_path, tiny_qwen2, 1)
    cfg = json.loads((base_ckpt / "config.json").read_text())
    del cfg["seq_length"]
    (base_ckpt / "config.json").write_text(json.dumps(cfg))
    two = convert(base_ckpt, drafter, tmp_path / "two")
    assert json.loads((two / "config.json").read_text())["seq_length"] == 8192 and inspect_checkpoint(two).ok


@pytest.mark.parametrize("tp", [1, 2])
def test_a_trtllm_qwen3_base_converts_to_the_hf_conversion(tmp_path, tiny_qwen3, tp):
    """TensorRT-LLM's two-step flow on a Qwen3 (qwen_type qwen3, q/k layernorms on every rank) was refused as a qwen_type
    other than qwen2; it converts to the tensors the Hugging Face folder converts to, under either name TensorRT-LLM's
    MODEL_MAP builds as QWenForCausalLM."""
    drafter = make_drafter(tmp_path / "d", tiny_qwen3)
    direct = convert(tiny_qwen3, drafter, tmp_path / "direct", tp_size=tp, dtype="float32")
    base_ckpt = _trtllm_base_only(tmp_path, tiny_qwen3, tp)
    for arch in ("Qwen3ForCausalLM", "QWenForCausalLM"):
        cfg = json.loads((base_ckpt / "config.json").read_text())
        (base_ckpt / "config.json").write_text(json.dumps(cfg | {"architecture": arch}))
        two = convert(base_ckpt, drafter, tmp_path / arch)
        assert inspect_checkpoint(two).ok and json.loads((two / "config.json").read_text())["qwen_type"] == "qwen3"
        for r in range(tp):
            want, got = load_file(direct / f"rank{r}.safetensors"), load_file(two / f"rank{r}.safetensors")
            assert sorted(got) == sorted(want) and all(torch.equal(got[k], want[k]) for k in want)


@pytest.mark.parametrize("tp, refused", [(1, True), (2, True), (4, False)])
def test_a_qwen3_with_as_many_kv_heads_as_heads_a_rank_is_refused(tmp_path, tp, refused):
    """TensorRT-LLM 1.2's Attention norms q and k (qk_layernorm) by viewing a rank's qkv as [heads, 3, head_size]
    when the rank holds as many kv heads as heads (Persimmon's interleaved layout; its Qwen converter writes q, k
    and v one after another, as this one does), so with more than one head a rank the engine would norm and attend
    over rows mixed from q, k and v. Such a Qwen3 was converted (and the reference runtime answered as transformers
    does); it is refused from the config, naming why; one head a rank reads the same either way and converts."""
    base = make_hf(tmp_path / "base", "qwen3", num_key_value_heads=4, head_dim=32)
    drafter = make_drafter(tmp_path / "d", base)
    if refused:
        with pytest.raises(ConfigError, match=f"4 heads and 4 kv heads.*{4 // tp} of each a rank at tp_size {tp}"
                                              ".*interleaved per head"):
            convert(base, drafter, tmp_path / "out", tp_size=tp, num_beams=2, draft_len=2)
        assert not (tmp_path / "out").exists()
    else:
        assert inspect_checkpoint(convert(base, drafter, tmp_path / "out", tp_size=tp, num_beams=2, draft_len=2)).ok


def test_inspect_of_a_qwen3_tp_its_attention_misreads_names_the_sizes_that_convert(tmp_path):
    """A review: inspect refused a Qwen3 with 4 heads and 4 kv heads at tp_size 2 saying one head a rank (tp_size 4) is
    read right, where 4 does not divide its intermediate size of 130 (no size converts it): its advice is tp_fits',
    as convert's is, naming the sizes that split base and drafter alike."""
    base = make_hf(tmp_path / "base", "qwen3", num_key_value_heads=4, head_dim=32)
    out = convert(base, make_drafter(tmp_path / "d", base), tmp_path / "out", tp_size=4, num_beams=2, draft_len=2)
    cfg = json.loads((out / "config.json").read_text())
    mapping = cfg["mapping"] | {"tp_size": 2, "world_size": 2}
    for inter, advice in ((128, "re-export the base at tp 4, or convert its Hugging Face model at --tp-size 4"),
                          (130, "no --tp-size splits this model")):
        (out / "config.json").write_text(json.dumps(cfg | {"mapping": mapping, "intermediate_size": inter}))
        named = [p for p in inspect_checkpoint(out).problems if "interleaved per head" in p]
        assert len(named) == 1 and advice in named[0], named


def test_written_files_follow_the_umask(tmp_path, tiny_llama):
    """Drafter and checkpoint files get the umask's mode (safetensors 0.8 alone writes 0600: another user, or a
    TensorRT-LLM container running as non-root, could not read the drafter)."""
    import os

    from redrafter_trt.drafter import init_drafter_for_base

    old = os.umask(0o022)
    try:
        init_drafter_for_base(tiny_llama, tmp_path / "drafter")
        convert(tiny_llama, tmp_path / "drafter", tmp_path / "ckpt", tp_size=1, dtype="float32")
    finally:
        os.umask(old)
    files = [f for d in ("drafter", "ckpt") for f in (tmp_path / d).iterdir()]
    assert any(f.suffix == ".safetensors" for f in files)
    assert {f.name: oct(f.stat().st_mode & 0o777) for f in files} == {f.name: "0o644" for f in files}


def test_dry_run_prints_what_convert_writes_and_writes_nothing(tiny_qwen2, tmp_path):
    """`convert --dry-run` lists each rank file's tensors (name, shape, dtype, in order) and the config; a real
    conversion with the same options writes exactly those."""
    import re

    from click.testing import CliRunner

    from redrafter_trt.cli import main

    drafter = make_drafter(tmp_path / "d", tiny_qwen2)
    args = ["convert", "--base", str(tiny_qwen2), "--drafter", str(drafter), "--output", str(tmp_path / "out"),
            "--tp-size", "2", "--dtype", "bfloat16"]
    dry = CliRunner().invoke(main, [*args, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.partial-*"))
    planned = {int(r): [] for r in re.findall(r"rank(\d+)\.safetensors: \d+ tensors", dry.output)}
    rank = None
    for line in dry.output.splitlines():
        if m := re.match(r".*rank(\d+)\.safetensors:", line):
            rank = int(m.group(1))
        elif rank is not None and line.startswith("  "):
            name, shape, dtype = line.split("  ")[1:]
            planned[rank].append((name, json.loads(shape), dtype))
    assert sorted(planned) == [0, 1]
    assert CliRunner().invoke(main, args).exit_code == 0
    for r, tensors in planned.items():
        written = load_file(tmp_path / "out" / f"rank{r}.safetensors")
        assert sorted(tensors) == sorted((n, list(t.shape), str(t.dtype).removeprefix("torch."))
                                         for n, t in written.items())
    cfg = json.loads((tmp_path / "out" / "config.json").read_text())
    shown = json.loads(dry.output[dry.output.index("{"):dry.output.index("\n}\n") + 2])
    assert {k: v for k, v in shown.items() if k != "producer"} == {k: v for k, v in cfg.items() if k != "producer"}
    refused = CliRunner().invoke(main, [*args, "--force", "--dry-run", "--quantize", "fp8"])
    assert refused.exit_code == 2 and "leave out --quantize" in refused.output
    assert "or leave out --dry-run to convert" in refused.output  # it said "or --dry-run to convert"


@pytest.mark.parametrize("arch, want", [("llama", 2048), ("qwen2", 32768), ("qwen3", 32768), ("mistral", 131072)])
def test_a_config_without_max_position_embeddings_gets_transformers_default(tmp_path, arch, want):
    """A review: every architecture got 2048, so a Qwen2 or Mistral config without the field was converted (and
    `run` / the engine's max_seq_len limited) at a sixteenth of the context transformers gives it."""
    import transformers

    base = make_hf(tmp_path / "base", arch)
    cfg = json.loads((base / "config.json").read_text())
    del cfg["max_position_embeddings"]
    cfg["sliding_window"] = None  # Mistral's default window (4096) is shorter than its default context
    (base / "config.json").write_text(json.dumps(cfg))
    assert transformers.AutoConfig.from_pretrained(base).max_position_embeddings == want
    out = convert(base, make_drafter(tmp_path / "d", base), tmp_path / "out", num_beams=2, draft_len=2)
    assert json.loads((out / "config.json").read_text())["max_position_embeddings"] == want


def test_a_qwen3_config_without_head_dim_gets_transformers_128(tmp_path):
    """transformers' Qwen3Config defaults head_dim to 128, not hidden_size / num_attention_heads (TensorRT-LLM's
    QWenConfig.from_hugging_face reads it from that config): a Qwen3 config.json without the key is read so."""
    import transformers

    base = make_hf(tmp_path / "base", "qwen3", hidden_size=64, num_attention_heads=2, num_key_value_heads=1,
                   head_dim=128)
    cfg = json.loads((base / "config.json").read_text())
    del cfg["head_dim"]
    (base / "config.json").write_text(json.dumps(cfg))
    assert transformers.AutoConfig.from_pretrained(base).head_dim == 128
    out = convert(base, make_drafter(tmp_path / "d", base), tmp_path / "out", num_beams=2, draft_len=2)
    assert json.loads((out / "config.json").read_text())["head_size"] == 128
    assert inspect_checkpoint(out).ok


def test_trtllm_base_with_a_default_rotary_scaling_is_written_without_one(tmp_path, tiny_llama, tiny_drafter):
    """A TensorRT-LLM base checkpoint whose config has rotary_scaling {"type": "default", ...} (no scaling, as
    transformers 5 spells it) was copied as is; TensorRT-LLM's RotaryScalingType.from_string has no "default" in
    1.0 / 1.1 (ValueError at trtllm-build, layers/attention.py). It is written as null, the same RoPE."""
    base_ckpt = _trtllm_base_only(tmp_path, tiny_llama, 1)
    cfg = json.loads((base_ckpt / "config.json").read_text())
    (base_ckpt / "config.json").write_text(json.dumps(cfg | {"rotary_scaling": {"type": "default", "factor": 1.0}}))
    out = convert(base_ckpt, tiny_drafter, tmp_path / "two")
    assert json.loads((out / "config.json").read_text())["rotary_scaling"] is None
    assert inspect_checkpoint(out).ok


@pytest.mark.parametrize("arch, nh, want, null", [
    ("llama", 4, 4, False), ("mistral", 16, 8, False), ("qwen2", 64, 32, False), ("qwen3", 64, 32, False),
    # null is num_attention_heads (their config classes' `if num_key_value_heads is None`, 4.57 and 5), but
    # transformers 5 types Mistral's `int` and refuses to load a null one: refused
    ("llama", 4, 4, True), ("mistral", 4, 4, True), ("qwen2", 4, 4, True), ("qwen3", 2, 2, True)])
def test_a_config_without_num_key_value_heads_gets_transformers_default(tmp_path, arch, nh, want, null):
    """A review: a missing num_key_value_heads was read as num_attention_heads for every architecture, but
    transformers' MistralConfig defaults it to 8 and Qwen2Config to 32 (TensorRT-LLM's from_hugging_face reads the
    same through AutoConfig), so a GQA Mistral whose config.json leaves it out was refused as misshapen k_proj.
    Another: a null one was read as missing, where transformers reads num_attention_heads: a Qwen2 with 4 heads was
    refused as misshapen (the class default 32 kv heads), with `re-download the model`."""
    import transformers

    from redrafter_trt import runtime as rt

    base = make_hf(tmp_path / "base", arch, hidden_size=nh * 4, num_attention_heads=nh, num_key_value_heads=want,
                   intermediate_size=32, sliding_window=None)
    cfg = json.loads((base / "config.json").read_text())
    if null:
        cfg["num_key_value_heads"] = None
    else:
        del cfg["num_key_value_heads"]
    (base / "config.json").write_text(json.dumps(cfg))
    if null and arch == "mistral":
        if TRANSFORMERS_5:
            with pytest.raises(Exception, match="num_key_value_heads"):
                transformers.AutoConfig.from_pretrained(base)
        with pytest.raises(ConfigError, match=r"num_key_value_heads is null, which transformers 5 refuses .* set it"):
            convert(base, make_drafter(tmp_path / "d", base), tmp_path / "out")
        return
    hf = transformers.AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
    assert hf.config.num_key_value_heads == want
    out = convert(base, make_drafter(tmp_path / "d", base), tmp_path / "out", tp_size=2, num_beams=2, draft_len=2)
    assert json.loads((out / "config.json").read_text())["num_key_value_heads"] == want
    ids = [1, 17, 33, 5, 250, 99, 3]
    with torch.no_grad():
        ref = hf(torch.tensor([ids])).logits[0]
    torch.testing.assert_close(rt.forward_logits_tp(out, ids), ref, atol=2e-5, rtol=1e-5)


@pytest.mark.parametrize("keys, want", [({}, "float16"), ({"torch_dtype": "bfloat16"}, "bfloat16"),
                                        ({"torch_dtype": "float16", "dtype": "bfloat16"}, "bfloat16")])
def test_auto_dtype_reads_the_base_as_trtllm_does(tmp_path, tiny_llama, tiny_drafter, keys, want):
    """A review: a base config.json naming no dtype converted as float32 under --dtype auto (and FP8's auto as
    float16: the two disagreed), where TensorRT-LLM 1.2's from_hugging_face writes float16 (infer_dtype of a missing
    torch_dtype); and a config naming both took torch_dtype, where transformers keeps `dtype`."""
    from redrafter_trt.config import BaseModelConfig
    from redrafter_trt.quantize import resolve_fp8_dtype

    hf = json.loads((tiny_llama / "config.json").read_text())
    hf = {k: v for k, v in hf.items() if k not in ("torch_dtype", "dtype")} | keys
    base = tmp_path / "base"
    base.mkdir()
    for f in tiny_llama.iterdir():
        (base / f.name).symlink_to(f)
    (base / "config.json").unlink()
    (base / "config.json").write_text(json.dumps(hf))
    out = convert(base, tiny_drafter, tmp_path / "out", num_beams=2, draft_len=2)
    written = json.loads((out / "config.json").read_text())
    # the logits in float32 whatever the dtype, as TensorRT-LLM's converter writes them (modelopt's float16 aside)
    assert (written["dtype"], written["logits_dtype"]) == (want, "float32")
    assert BaseModelConfig.from_hf(hf, "config.json").source_dtype == want == resolve_fp8_dtype("auto", hf)


@pytest.mark.parametrize("tp, files", [(1, "1 rank file"), (2, "2 rank files")])
def test_the_rank_files_written_are_counted(tiny_llama, tiny_drafter, tmp_path, tp, files):
    """convert's last line said 'tp 1, 1 rank file(s)'."""
    from click.testing import CliRunner

    from redrafter_trt.cli import main

    result = CliRunner().invoke(main, ["convert", "--base", str(tiny_llama), "--drafter", str(tiny_drafter),
                                       "--output", str(tmp_path / "out"), "--tp-size", str(tp)])
    assert result.exit_code == 0 and f", tp {tp}, {files}, " in result.output, result.output


@pytest.mark.parametrize("first, then", [("100KB", "50GB"), ("50GB", "100KB")])
def test_a_base_saved_over_another_layout_converts_what_transformers_loads(tmp_path, tiny_llama, tiny_drafter, first,
                                                                           then):
    """A review: a fine-tune saved with `save_pretrained` over its sharded download (transformers 5 writes up to 50GB
    as one model.safetensors) keeps the download's model.safetensors.index.json while its shards are deleted:
    transformers loads model.safetensors, convert read the stale index and refused the folder ('named in
    model.safetensors.index.json but missing: re-download the model'). The other way round (sharded over a single
    file) the single file stays, which transformers loads and convert did not. convert reads what transformers does."""
    import transformers

    base = tmp_path / "base"
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_llama, dtype=torch.float32)
    model.save_pretrained(base, max_shard_size=first)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(1.5)  # the fine-tune
    model.save_pretrained(base, max_shard_size=then)
    assert (base / "model.safetensors").exists() and (base / "model.safetensors.index.json").exists()
    loaded = transformers.AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    out = convert(base, tiny_drafter, tmp_path / "ckpt", dtype="float32")
    got = load_file(out / "rank0.safetensors")
    assert torch.equal(got["lm_head.weight"], loaded.lm_head.weight)
    assert torch.equal(got["transformer.layers.0.mlp.fc.weight"], loaded.model.layers[0].mlp.gate_proj.weight)


def test_a_pytorch_model_bin_beside_a_stale_bin_index_converts_what_transformers_loads(tmp_path, tiny_llama,
                                                                                       tiny_drafter):
    """The same for a .bin base (Vicuna's layout): transformers loads pytorch_model.bin before
    pytorch_model.bin.index.json, whose shards a re-save deleted; convert refused it as a partial download."""
    import shutil

    import transformers

    base = tmp_path / "base"
    shutil.copytree(tiny_llama, base)
    weights = load_file(base / "model.safetensors")
    (base / "model.safetensors").unlink()
    torch.save({k: v * 1.5 for k, v in weights.items()}, base / "pytorch_model.bin")
    stale = {k: "pytorch_model-00001-of-00002.bin" for k in weights}
    (base / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": stale}))
    loaded = transformers.AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    got = load_file(convert(base, tiny_drafter, tmp_path / "ckpt", dtype="float32") / "rank0.safetensors")
    assert torch.equal(got["lm_head.weight"], loaded.lm_head.weight)


def test_convert_and_init_drafter_hand_their_options_on(tiny_qwen2, tmp_path, monkeypatch):
    """Each option reaches what the command calls, not its default (an audit's mutants replacing a value by its
    default passed every test): `convert --no-greedy --dry-run` plans a sampling checkpoint (config.json's
    redrafter_greedy_search false, and the beams and draft length given); --calib-size and --calib-seq-len reach the
    FP8 conversion; init-drafter's --no-rnn, --exit-dim, --num-draft-layers and --seed reach the drafter's writer."""
    from click.testing import CliRunner

    import redrafter_trt.convert
    import redrafter_trt.drafter
    from redrafter_trt.cli import main

    drafter = make_drafter(tmp_path / "d", tiny_qwen2)
    args = ["convert", "--base", str(tiny_qwen2), "--drafter", str(drafter), "--output", str(tmp_path / "out")]
    for flags, greedy in [([], True), (["--no-greedy"], False)]:
        dry = CliRunner().invoke(main, [*args, "--dry-run", "--num-beams", "3", "--draft-len", "4", *flags])
        assert dry.exit_code == 0, dry.output
        cfg = json.loads(dry.output[dry.output.index("{"):dry.output.index("\n}\n") + 2])
        assert (cfg["redrafter_greedy_search"], cfg["redrafter_num_beams"], cfg["redrafter_draft_len_per_beam"]) \
            == (greedy, 3, 4)

    given = {}

    def stop_here(*args, **kwargs):
        given.update(kwargs)
        raise ConfigError("stopped here")
    monkeypatch.setattr(redrafter_trt.convert, "convert", stop_here)
    res = CliRunner().invoke(main, [*args, "--quantize", "fp8", "--calib-size", "3", "--calib-seq-len", "17",
                                    "--calib-batch-size", "2"])
    assert res.exit_code == 2 and "stopped here" in res.output, res.output
    assert {k: given[k] for k in ("quantize", "calib_size", "calib_seq_len", "calib_batch_size")} \
        == {"quantize": "fp8", "calib_size": 3, "calib_seq_len": 17, "calib_batch_size": 2}

    given.clear()
    monkeypatch.setattr(redrafter_trt.drafter, "init_drafter_for_base", stop_here)
    res = CliRunner().invoke(main, ["init-drafter", "--base", str(tiny_qwen2), "--output", str(tmp_path / "i"),
                                    "--no-rnn", "--exit-dim", "48", "--num-draft-layers", "3", "--seed", "7"])
    assert res.exit_code == 2 and "stopped here" in res.output, res.output
    assert given == {"num_draft_layers": 3, "rnn": False, "exit_dim": 48, "seed": 7, "force": False}
