"""A drafter and the base it was trained on: `train` records a sample of its base's weights in the drafter's producer
block, `convert` compares it with --base's and warns in one line where they differ (a drafter trained on another model
of the same shapes, such as the base's instruct model, converted without a word and then accepted little), records
the outcome in the checkpoint, and `inspect` shows it."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from click.testing import CliRunner

from redrafter_trt.base_sample import record_base_sample
from redrafter_trt.cli import main
from redrafter_trt.convert import convert
from redrafter_trt.producer import producer_block
from tinymodels import lora_merged, make_drafter, make_hf


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    """The same random Llama in float32 and bfloat16, and another of the same shapes."""
    root = tmp_path_factory.mktemp("bases")
    return {"f32": make_hf(root / "f32"), "bf16": make_hf(root / "bf16", dtype=torch.bfloat16),
            "other": make_hf(root / "other", seed=1)}


def trained_on(folder, base, record=None):
    """A drafter for `base`'s shapes with train's producer block: `base` as its source and `record` as its sample
    (default: the one train records of `base`)."""
    make_drafter(folder, base)
    raw = json.loads((folder / "config.json").read_text())
    sample = record_base_sample(base) if record is None else record
    raw["producer"] = {**producer_block("train", {}, {"base": base}), "base_sample": sample}
    (folder / "config.json").write_text(json.dumps(raw, indent=2))
    return folder


def matches(checkpoint):
    return json.loads((checkpoint / "config.json").read_text())["producer"]["drafter_base_matches"]


def warnings(caplog):
    """What convert warned of, but that --dtype auto keeps a float32 base float32 (test_convert.py's concern)."""
    return [said for r in caplog.records
            if r.levelno >= logging.WARNING and "--dtype auto keeps it" not in (said := r.getMessage())]


@pytest.mark.parametrize("trained, given", [("f32", "f32"), ("f32", "bf16"), ("bf16", "f32")])
def test_the_same_base_in_any_dtype_converts_without_a_word(bases, tmp_path, caplog, trained, given):
    drafter = trained_on(tmp_path / "d", bases[trained])
    out = convert(bases[given], drafter, tmp_path / "c")
    assert warnings(caplog) == [] and matches(out) is True


def test_a_drafter_trained_on_another_base_is_one_warning_and_inspect_says_so(bases, tmp_path, caplog):
    drafter = trained_on(tmp_path / "d", bases["other"])
    result = CliRunner().invoke(main, ["convert", "--base", str(bases["f32"]), "--drafter", str(drafter),
                                       "--output", str(tmp_path / "c")])
    assert result.exit_code == 0, result.output
    lines = warnings(caplog)
    assert len(lines) == 1 and "\n" not in lines[0], lines
    line = lines[0]
    for needle in (str(drafter), str(bases["other"].resolve()), str(bases["f32"]), "differ", "accept",
                   "redrafter-trt acceptance", "train"):
        assert needle in line, (needle, line)
    assert matches(tmp_path / "c") is False
    shown = CliRunner().invoke(main, ["inspect", str(tmp_path / "c")])
    assert shown.exit_code == 0 and "drafter trained on another base" in shown.output, shown.output
    report = json.loads(CliRunner().invoke(main, ["inspect", str(tmp_path / "c"), "--json"]).output)
    assert report["producer"]["drafter_base_matches"] is False


def test_a_base_of_another_depth_differs(bases, tmp_path, caplog):
    """convert checks hidden size and vocabulary: a deeper model of the family passed, and its last layer is another."""
    drafter = trained_on(tmp_path / "d", bases["f32"])
    out = convert(make_hf(tmp_path / "deeper", num_hidden_layers=3), drafter, tmp_path / "c")
    said = warnings(caplog)
    assert matches(out) is False and len(said) == 1 and "model.layers.1.self_attn.q_proj.weight: another depth" in said[0], said


@pytest.mark.parametrize("record", ["absent", "by hand", "values cut"])
def test_a_drafter_without_a_record_is_not_checked(bases, tmp_path, caplog, record):
    """Apple's drafters, init-drafter's and those trained before the record have none; a hand-edited one is none."""
    if record == "absent":
        drafter = make_drafter(tmp_path / "d", bases["other"])
    else:
        sample = record_base_sample(bases["other"])
        for entry in sample.values():
            entry["values"] = entry["values"][:-1]
        drafter = trained_on(tmp_path / "d", bases["other"], "by hand" if record == "by hand" else sample)
    out = convert(bases["f32"], drafter, tmp_path / "c")
    assert warnings(caplog) == [] and matches(out) is None
    shown = CliRunner().invoke(main, ["inspect", str(out)])
    assert shown.exit_code == 0 and "trained on" not in shown.output, shown.output


@pytest.mark.parametrize("tp, same, expected", [(1, True, True), (1, False, False), (2, True, True),
                                                (2, False, False), (4, True, True), (4, False, False)])
def test_a_tensorrt_llm_base_checkpoint_is_compared_at_any_tp(bases, tmp_path, caplog, tp, same, expected):
    """TensorRT-LLM's two-step flow: the rank files hold the rows compared. A review: at tp > 1 nothing was compared
    (rank0 holds a slice of each tensor), drafter_base_matches null without a word; each row is now read from the
    rank holding it (at tp 4, each of the 2 kv heads is repeated on two ranks)."""
    from test_convert import _trtllm_base_only

    base = _trtllm_base_only(tmp_path, bases["f32"], tp)
    drafter = trained_on(tmp_path / "d", bases["f32" if same else "other"])
    out = convert(base, drafter, tmp_path / "c")
    assert matches(out) is expected
    assert len(warnings(caplog)) == (expected is False)


@pytest.mark.parametrize("kv_heads, tp, embedding", [(1, 1, None), (4, 2, None), (1, 3, None), (2, 4, None),
                                                     (4, 2, 0), (1, 3, 1), (4, 2, "absent")])
def test_a_checkpoints_rows_by_hugging_face_name_are_the_models(tmp_path, kv_heads, tp, embedding):
    """Every sampled tensor read back whole from a TensorRT-LLM checkpoint's rank files is the Hugging Face model's:
    several kv heads a rank or one repeated over ranks, lm_head's vocabulary padded (250 rows at tp 3 and 4), the
    row-parallel o_proj and down_proj joined across ranks, and a parallel embedding split by rows or columns
    (embedding_sharding_dim absent: TensorRT-LLM's default, 0, vocabulary rows)."""
    from safetensors.torch import load_file, save_file
    from test_convert import _trtllm_base_only

    from redrafter_trt.base_rows import TrtllmRows
    from redrafter_trt.base_sample import sampled_names
    from redrafter_trt.shard import padded_rows

    hf = make_hf(tmp_path / "hf", vocab_size=250, num_attention_heads=12, num_key_value_heads=kv_heads,
                 hidden_size=96, intermediate_size=192, num_hidden_layers=3)
    ckpt = _trtllm_base_only(tmp_path, hf, tp)
    cfg = json.loads((ckpt / "config.json").read_text())
    want = load_file(hf / "model.safetensors")
    if embedding is not None:  # as TensorRT-LLM's use_parallel_embedding writes it
        cfg |= {"use_parallel_embedding": True}
        if embedding == "absent":
            del cfg["embedding_sharding_dim"]
            embedding = 0
        else:
            cfg["embedding_sharding_dim"] = embedding
        whole = want["model.embed_tokens.weight"]
        if embedding == 0:
            whole = torch.cat([whole, whole.new_zeros(padded_rows(250, tp) - 250, 96)])
        for r in range(tp):
            rank = load_file(ckpt / f"rank{r}.safetensors")
            rank["transformer.vocab_embedding.weight"] = torch.chunk(whole, tp, embedding)[r].contiguous()
            save_file(rank, ckpt / f"rank{r}.safetensors")
    rows = TrtllmRows(ckpt, cfg)
    try:
        for name in sampled_names(3):
            assert rows.shape(name) == tuple(want[name].shape), name
            assert torch.equal(rows.rows(name, list(range(want[name].shape[0]))), want[name]), name
    finally:
        rows.close()



def test_quantised_tensors_and_another_depths_layers_are_not_compared(tmp_path):
    """Rows are read only where they are the model's numbers: an FP8 weight (F8_E4M3, its scale kept apart as
    modelopt exports it) is not, in a Hugging Face folder or a TensorRT-LLM checkpoint; a layer past the checkpoint's
    num_hidden_layers is none TensorRT-LLM builds, whatever tensor a rank file holds under its name."""
    from safetensors.torch import save_file

    from redrafter_trt.base_rows import HfRows, TrtllmRows
    from redrafter_trt.io import TensorSource

    fp8, f32 = torch.ones(4, 4).to(torch.float8_e4m3fn), torch.ones(4)
    save_file({"model.layers.0.self_attn.q_proj.weight": fp8, "model.norm.weight": f32}, tmp_path / "hf.safetensors")
    hf = HfRows(TensorSource.from_files([tmp_path / "hf.safetensors"]))
    try:
        assert hf.dtype("model.layers.0.self_attn.q_proj.weight") is None and hf.dtype("model.norm.weight") == "F32"
    finally:
        hf.close()
    save_file({"transformer.layers.0.attention.qkv.weight": fp8.repeat(3, 1),
               "transformer.layers.0.input_layernorm.weight": f32,
               "transformer.layers.1.input_layernorm.weight": f32.clone()}, tmp_path / "rank0.safetensors")
    rows = TrtllmRows(tmp_path, {"num_hidden_layers": 1, "num_attention_heads": 1, "hidden_size": 4})
    try:
        assert rows.dtype("model.layers.0.input_layernorm.weight") == "F32"
        assert rows.dtype("model.layers.0.self_attn.q_proj.weight") is None
        assert rows.dtype("model.layers.1.input_layernorm.weight") is None
    finally:
        rows.close()


def test_a_row_a_rank_file_lacks_is_a_tensor_error_naming_it(tmp_path):
    """A rank file whose lm_head holds fewer rows than the config's vocab_size (a checkpoint convert then refuses):
    reading the missing row says which file lacks which row, not an IndexError from an empty read."""
    from safetensors.torch import save_file

    from redrafter_trt.base_rows import TrtllmRows
    from redrafter_trt.errors import TensorError

    head = torch.arange(12.0).reshape(3, 4)
    save_file({"lm_head.weight": head}, tmp_path / "rank0.safetensors")
    rows = TrtllmRows(tmp_path, {"num_hidden_layers": 1, "vocab_size": 4})
    try:
        assert torch.equal(rows.rows("lm_head.weight", [0, 1, 2]), head)
        with pytest.raises(TensorError, match=r"rank0.safetensors has no row 3 of lm_head.weight"):
            rows.rows("lm_head.weight", [3])
    finally:
        rows.close()

@pytest.mark.parametrize("layers, tie", [(2, False), (5, False), (5, True)])
def test_train_records_every_linear_of_three_layers_in_a_few_hundred_values(tmp_path, layers, tie):
    """lm_head (not a tied model's: its embedding), the embedding and the 7 linears of the first, middle and last
    layers, 16 values of each: at most 368 values however deep the base (13 KB of indented JSON with this tiny
    model's short row numbers; 17 KB of a drafter's config.json at most)."""
    from redrafter_trt.base_sample import LINEARS

    sample = record_base_sample(make_hf(tmp_path / "b", num_hidden_layers=layers, tie=tie))
    kept = sorted({0, layers // 2, layers - 1})
    assert list(sample) == ["lm_head.weight"] * (not tie) + ["model.embed_tokens.weight"] + \
        [f"model.layers.{layer}.{linear}.weight" for layer in kept for linear in LINEARS]
    assert all(len(e["values"]) == 16 for e in sample.values())
    assert sum(len(e["values"]) for e in sample.values()) <= 368 and len(json.dumps(sample, indent=2)) < 13000


@pytest.mark.parametrize("recorded, shown", [(True, "; drafter trained on this base"),
                                             (False, "; drafter trained on another base"), (None, None),
                                             ("yes", None)])
def test_inspect_shows_what_convert_recorded(recorded, shown):
    """A hand-edited value is not known: nothing is said of it."""
    from redrafter_trt.cli.inspect_cmd import producer_line
    from redrafter_trt.producer import producer_summary

    summary = producer_summary({"producer": {"name": "redrafter-trt", "version": "1", "command": "convert",
                                             "drafter_predict_n": 3, "drafter_base_matches": recorded}})
    assert summary["drafter_base_matches"] is (recorded if isinstance(recorded, bool) else None)
    line = producer_line(summary, True)
    assert line.startswith("redrafter-trt 1 (convert); drafter predict_n 3")
    assert (shown in line) if shown else "trained on" not in line
    assert "trained on" not in producer_line(summary, False)  # a base checkpoint


@pytest.mark.parametrize("recorded, shown", [
    (True, "; drafter made for this base by init-drafter (untrained: expect about 1 token per step)"),
    (False, "; drafter made for another base by init-drafter (untrained: expect about 1 token per step)"),
    (None, "; drafter made by init-drafter (untrained: expect about 1 token per step)")])
def test_inspect_says_a_drafter_fresh_from_init_drafter_is_untrained(recorded, shown):
    """A review: a drafter fresh from init-drafter was shown as `drafter trained on this base`, though its own
    producer said init-drafter (about 1 token per step until trained)."""
    from redrafter_trt.cli.inspect_cmd import producer_line
    from redrafter_trt.producer import producer_summary

    summary = producer_summary({"producer": {"name": "redrafter-trt", "version": "1", "command": "convert",
                                             "drafter_predict_n": 3, "drafter_base_matches": recorded,
                                             "drafter_command": "init-drafter"}})
    assert (summary["drafter_base_matches"], summary["drafter_command"]) == (recorded, "init-drafter")
    assert producer_line(summary, True) == f"redrafter-trt 1 (convert); drafter predict_n 3{shown}"


@pytest.mark.parametrize("command", ["init-drafter", "train", None])
def test_convert_records_what_made_the_drafter(tiny_llama, tiny_drafter, tmp_path, command):
    import shutil

    from redrafter_trt.convert import convert

    drafter = tmp_path / "d"
    shutil.copytree(tiny_drafter, drafter)
    cfg = json.loads((drafter / "config.json").read_text())
    cfg.pop("producer", None)
    if command:
        cfg["producer"] = {"name": "redrafter-trt", "version": "1", "command": command}
    (drafter / "config.json").write_text(json.dumps(cfg))
    ck = convert(tiny_llama, drafter, tmp_path / "ck", num_beams=2, draft_len=2)
    assert json.loads((ck / "config.json").read_text())["producer"]["drafter_command"] == command


@pytest.mark.parametrize("dry_run", [False, True])
def test_nan_in_the_base_is_no_other_base(bases, tmp_path, caplog, dry_run):
    """A review: --base holding NaN where the drafter's record was read (the base it was trained on, broken since)
    was said to be another base ('lm_head.weight differs by nan': measure the drafter or train one on it), before
    convert refused its NaN; the broken tensor is left to that refusal, the others compared."""
    import shutil

    from safetensors.torch import load_file, save_file

    drafter = trained_on(tmp_path / "d", bases["f32"])
    broken = tmp_path / "broken"
    shutil.copytree(bases["f32"], broken)
    tensors = load_file(broken / "model.safetensors")
    tensors["lm_head.weight"][0, 0] = float("nan")  # the first recorded value
    save_file(tensors, broken / "model.safetensors", metadata={"format": "pt"})
    if dry_run:
        from redrafter_trt.convert import plan_conversion

        assert plan_conversion(broken, drafter, tmp_path / "c").cfg["producer"]["drafter_base_matches"] is True
    else:
        from redrafter_trt.errors import TensorError

        with pytest.raises(TensorError, match="NaN"):
            convert(broken, drafter, tmp_path / "c")
    assert warnings(caplog) == []


def said_command(line: str, command: str) -> list[str]:
    """The arguments of the `redrafter-trt COMMAND ...` a warning gives."""
    import shlex

    return shlex.split(line.split(f"`redrafter-trt {command} ")[1].split("`")[0])


@pytest.mark.parametrize("base, tp", [("hf", 1), ("hf", 2), ("trtllm", 1), ("trtllm", 2)])
def test_the_warning_gives_commands_that_run(bases, tmp_path, caplog, base, tp):
    """A review: the warning's `redrafter-trt acceptance --checkpoint-dir OUT` lacked the options acceptance requires
    (--tokenizer-dir, --prompts: 'Missing option'), and with a TensorRT-LLM base checkpoint sent it and `train
    --base` to that checkpoint, which neither reads. They are now whole commands, on the Hugging Face model; at tp 2
    on the checkpoint itself, whose ranks acceptance merges (it named a tp-1 conversion to make while acceptance
    refused a tp>1 checkpoint)."""
    from test_convert import _trtllm_base_only

    from redrafter_trt.cli.bench_cmd import acceptance

    given = bases["f32"] if base == "hf" else _trtllm_base_only(tmp_path, bases["f32"], tp)
    drafter = trained_on(tmp_path / "d", bases["other"])
    out = tmp_path / "c"
    convert(given, drafter, out, tp_size=tp) if base == "hf" else convert(given, drafter, out)
    [line] = warnings(caplog)
    ctx = acceptance.make_context("acceptance", said_command(line, "acceptance"))  # click refuses a missing option
    assert ctx.params["prompts"].is_file()
    assert ctx.params["checkpoint_dir"] == out and "--tp-size 1" not in line, line
    retrain = said_command(line, "train")
    if base == "hf":
        assert ctx.params["tokenizer_dir"] == given and retrain == ["--base", str(given)]
    else:  # the Hugging Face model the checkpoint was exported from
        assert str(given) not in (str(ctx.params["tokenizer_dir"]), retrain[-1]) and "exported from" in line, line


def test_a_light_fine_tune_in_the_bases_own_dtype_is_told(bases, tmp_path, caplog):
    """A review: a light fine-tune (SmolLM2 at lr 2e-5: 0.4% of its sampled weights' norm after 100 steps, 0.66%
    after 200) passed the tolerance of another dtype's rounding (2 ** -7) unseen, though saved in the base's own
    dtype, where the same model reads back exactly. A record of the same dtype is now compared to its printed digits;
    the same model in another dtype still passes (above)."""
    import shutil

    from safetensors.torch import load_file, save_file

    from redrafter_trt.base_sample import SAME_WEIGHTS_TOLERANCE, relative_difference

    tuned = tmp_path / "tuned"
    shutil.copytree(bases["bf16"], tuned)
    tensors = load_file(tuned / "model.safetensors")
    gen = torch.Generator().manual_seed(0)
    for name, t in tensors.items():
        tensors[name] = (t.float() * (1 + 0.003 * torch.randn(t.shape, generator=gen))).to(t.dtype)
    save_file(tensors, tuned / "model.safetensors", metadata={"format": "pt"})
    moved = max(relative_difference(torch.tensor(t["values"]), torch.tensor(o["values"]))
                for t, o in zip(record_base_sample(tuned).values(), record_base_sample(bases["bf16"]).values()))
    assert 0 < moved < SAME_WEIGHTS_TOLERANCE  # within another dtype's rounding
    out = convert(tuned, trained_on(tmp_path / "d", bases["bf16"]), tmp_path / "c")
    assert matches(out) is False and len(warnings(caplog)) == 1


@pytest.mark.parametrize("tensor", ["model.layers.0.self_attn.k_proj.weight", "model.layers.0.self_attn.v_proj.weight",
                                    "model.layers.0.self_attn.o_proj.weight", "model.layers.0.mlp.gate_proj.weight",
                                    "model.layers.0.mlp.up_proj.weight", "model.layers.1.self_attn.v_proj.weight",
                                    "model.embed_tokens.weight"])
def test_a_fine_tune_of_any_linear_or_the_first_layer_is_told(bases, tmp_path, caplog, tensor):
    """A review: the record held lm_head and the last layer's q_proj and down_proj alone, so a LoRA merged into
    v_proj, k_proj, o_proj, gate_proj or up_proj, a fine-tune of the early layers or of the (untied) embedding passed
    as the drafter's own base. Every linear of the first, middle and last layers and the embedding are recorded."""
    tuned = lora_merged(tmp_path, bases["f32"], tensor)
    out = convert(tuned, trained_on(tmp_path / "d", bases["f32"]), tmp_path / "c")
    said = warnings(caplog)
    assert matches(out) is False and len(said) == 1 and tensor in said[0], said


def old_record(base, names):
    """A record as train wrote it before every linear was sampled: 8 rows x 4 columns of `names` (the base's
    tensors; lm_head.weight read from the embedding of a tied model)."""
    from safetensors.torch import load_file

    from redrafter_trt.base_sample import spread

    tensors = load_file(base / "model.safetensors")
    record = {}
    for name in names:
        t = tensors.get(name, tensors["model.embed_tokens.weight"]).float()
        rows, cols = spread(t.shape[0], 8), spread(t.shape[1], 4)
        record[name] = {"shape": list(t.shape), "rows": rows, "columns": cols,
                        "values": [float(f"{v:.6g}") for v in t[rows][:, cols].flatten().tolist()], "dtype": "F32"}
    return record


OLD_NAMES = ("lm_head.weight", "model.layers.1.self_attn.q_proj.weight", "model.layers.1.mlp.down_proj.weight")


@pytest.mark.parametrize("given, expected", [("f32", True), ("bf16", True), ("other", False)])
def test_a_record_of_the_earlier_three_tensors_is_still_compared(bases, tmp_path, caplog, given, expected):
    """Drafters trained before every linear was sampled record lm_head and the last layer's q_proj and down_proj
    (8 rows x 4 columns): the tensors they name are compared as before."""
    drafter = trained_on(tmp_path / "d", bases["f32"], old_record(bases["f32"], OLD_NAMES))
    out = convert(bases[given], drafter, tmp_path / "c")
    assert matches(out) is expected and len(warnings(caplog)) == (not expected)


def test_init_drafter_records_its_base_and_convert_tells_another(bases, tmp_path, caplog):
    """A review: init-drafter made a drafter from its base's lm_head but recorded no sample of the base, so convert
    compared nothing (drafter_base_matches null) where --base was another model. It records train's sample now."""
    from redrafter_trt.drafter import init_drafter_for_base

    result = CliRunner().invoke(main, ["init-drafter", "--base", str(bases["f32"]), "--output", str(tmp_path / "d")])
    assert result.exit_code == 0, result.output
    producer = json.loads((tmp_path / "d" / "config.json").read_text())["producer"]
    assert producer["command"] == "init-drafter" and producer["base_sample"] == record_base_sample(bases["f32"])
    assert matches(convert(bases["bf16"], tmp_path / "d", tmp_path / "same")) is True and warnings(caplog) == []
    assert matches(convert(bases["other"], tmp_path / "d", tmp_path / "other")) is False
    [line] = warnings(caplog)
    assert f"drafter {tmp_path / 'd'} was made for {bases['f32'].resolve()}" in line, line
    init_drafter_for_base(bases["f32"], tmp_path / "d2")  # the function the quickstart calls records it too
    assert "base_sample" in json.loads((tmp_path / "d2" / "config.json").read_text())["producer"]


@pytest.mark.parametrize("given", ["hf", "tp2"])
def test_a_tied_models_records_of_either_format_are_compared(tmp_path, caplog, given):
    """A tied model stores no lm_head: an earlier record names its embedding lm_head.weight, a record now names it
    model.embed_tokens.weight alone; both compare with the model and with its TensorRT-LLM checkpoint's lm_head. An
    earlier record whose lm_head alone differs is told (a review: with lm_head.weight looked up in a tied Hugging
    Face model by its own name, it was left out and the drafter said to match)."""
    from test_convert import _trtllm_base_only

    tied = make_hf(tmp_path / "tied", tie=True)
    base = tied if given == "hf" else _trtllm_base_only(tmp_path, tied, 2)
    old = old_record(tied, OLD_NAMES)
    for record in (old, record_base_sample(tied)):
        other = {name: {**entry, "values": [v * 1.01 for v in entry["values"]]} for name, entry in record.items()}
        assert matches(convert(base, trained_on(tmp_path / "d", tied, record), tmp_path / "c", force=True)) is True
        assert matches(convert(base, trained_on(tmp_path / "e", tied, other), tmp_path / "c", force=True)) is False
    head = old["lm_head.weight"]
    other_head = {**old, "lm_head.weight": {**head, "values": [v * 1.01 for v in head["values"]]}}
    assert matches(convert(base, trained_on(tmp_path / "f", tied, other_head), tmp_path / "c", force=True)) is False
    said = warnings(caplog)
    assert len(said) == 3 and "lm_head.weight" in said[2], said


# (heads, kv heads, head size, hidden size, intermediate size, vocabulary): one kv head and several, fewer kv heads
# than some tp (repeated over ranks), a head size that is not hidden / heads, a vocabulary no tp above 1 divides
SHAPES = [(4, 4, 16, 64, 96, 97), (12, 1, 8, 96, 192, 250), (12, 3, 8, 96, 192, 251), (8, 2, 32, 64, 96, 101),
          (6, 2, 16, 96, 96, 100)]


@pytest.mark.parametrize("heads, kv_heads, head_size, hidden, intermediate, vocab", SHAPES)
def test_every_row_read_from_the_rank_files_is_the_hugging_face_tensors_at_every_tp(
        tmp_path, heads, kv_heads, head_size, hidden, intermediate, vocab):
    """shard.row_home and qkv_home against the converter's own splits (plan_hf_rank), for every tp from 1 to 4 that
    check_tp lets through: each row of each sampled tensor read by Hugging Face name from the rank files is that
    tensor's row (a parallel embedding: test_a_checkpoints_rows_by_hugging_face_name_are_the_models)."""
    from safetensors.torch import save_file

    from redrafter_trt.base_plan import hf_source_shapes, plan_hf_rank
    from redrafter_trt.base_rows import TrtllmRows
    from redrafter_trt.base_sample import sampled_names
    from redrafter_trt.config import BaseModelConfig, trtllm_model_fields
    from redrafter_trt.errors import ConfigError
    from redrafter_trt.io import TensorSource
    from redrafter_trt.shard import check_tp

    hf = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "num_attention_heads": heads,
          "num_key_value_heads": kv_heads, "head_dim": head_size, "hidden_size": hidden,
          "intermediate_size": intermediate, "vocab_size": vocab, "num_hidden_layers": 3, "rms_norm_eps": 1e-5,
          "max_position_embeddings": 64, "torch_dtype": "float32"}
    b = BaseModelConfig.from_hf(hf, "config.json")
    gen = torch.Generator().manual_seed(0)
    want = {name: torch.randn(shape, generator=gen) for name, shape in hf_source_shapes(b).items()}
    src, tried = TensorSource({}, want), []
    for tp in range(1, 5):
        try:
            check_tp(heads, kv_heads, intermediate, tp)
        except ConfigError:
            continue
        cfg = trtllm_model_fields(b, "float32", tp)
        (tmp_path / f"tp{tp}").mkdir()
        for r in range(tp):
            save_file({p.name: p.read().contiguous() for p in plan_hf_rank(src, b, cfg, r)},
                      tmp_path / f"tp{tp}" / f"rank{r}.safetensors")
        rows = TrtllmRows(tmp_path / f"tp{tp}", cfg)
        try:
            for name in sampled_names(3):
                held = want.get(name, want["model.embed_tokens.weight"])  # a tied model's lm_head
                assert rows.shape(name) == tuple(held.shape), (tp, name)
                assert torch.equal(rows.rows(name, list(range(held.shape[0]))), held), (tp, name)
        finally:
            rows.close()
        tried.append(tp)
    assert tried[0] == 1 and len(tried) > 1, tried


def test_the_tensor_furthest_past_its_own_tolerance_is_the_one_told():
    """Tolerances differ by dtype: lm_head recorded in bfloat16 of a float32 base, moved 0.5% (within another dtype's
    rounding, 2 ** -7), and the float32 embedding of a float32 base moved 0.1% (past its own dtype's 2 ** -16): the
    embedding is told, though lm_head moved more."""
    from redrafter_trt.base_sample import SAME_DTYPE_TOLERANCE, sample_difference

    def entry(dtype):
        return {"shape": [4, 4], "rows": [0, 1, 2, 3], "columns": [0, 1, 2, 3], "values": [1.0] * 16, "dtype": dtype}

    class Weights:  # base_rows' HfRows of a float32 base
        held = {"lm_head.weight": torch.full((4, 4), 1.005), "model.embed_tokens.weight": torch.full((4, 4), 1.001)}

        def dtype(self, name):
            return "F32"

        def shape(self, name):
            return (4, 4)

        def rows(self, name, rows):
            return self.held[name][rows]

    sample = {"lm_head.weight": entry("BF16"), "model.embed_tokens.weight": entry("F32")}
    name, relative, tolerance = sample_difference(sample, Weights(), 1)
    assert name == "model.embed_tokens.weight" and tolerance == SAME_DTYPE_TOLERANCE
    assert relative == pytest.approx(0.001, rel=1e-3)


def test_a_two_percent_fine_tune_in_another_dtype_is_told(bases, tmp_path, caplog):
    """A float32 record against a bfloat16 base whose weights moved 2% (scaled by 1.02): more than another dtype's
    rounding (at most 2 ** -8) moves them, so another base."""
    import shutil

    from safetensors.torch import load_file, save_file

    tuned = tmp_path / "tuned"
    shutil.copytree(bases["bf16"], tuned)
    tensors = {name: (t.float() * 1.02).to(t.dtype) for name, t in load_file(tuned / "model.safetensors").items()}
    save_file(tensors, tuned / "model.safetensors", metadata={"format": "pt"})
    out = convert(tuned, trained_on(tmp_path / "d", bases["f32"]), tmp_path / "c")
    assert matches(out) is False and len(warnings(caplog)) == 1
