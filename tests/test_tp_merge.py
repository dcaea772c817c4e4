"""A tp>1 checkpoint's ranks merged back into one process's tp=1 tensors (runtime/merge.py), as `bench` and
`acceptance` load it: the same tiny inputs converted at tp 1 and at tp 2 or 4, the tp ranks merged, every tensor
compared with the tp=1 conversion's bit for bit (GQA with kv heads repeated over ranks, Qwen2's qkv biases, Qwen3's
q/k norms, Llama's row-parallel biases, a drafter with input_proj, a vocabulary padded to a multiple of tp; FP8 ranks
dequantised each with its own scale against the tp=1 export's dequantised weights); and `acceptance` through the
CLI giving the tp=1 checkpoint's numbers on its tp=2 twin, bench saying the ranks were merged."""

from __future__ import annotations

import json
import re

import pytest
import torch

from redrafter_trt.base_plan import plan_hf_rank
from redrafter_trt.config import BaseModelConfig, trtllm_model_fields
from redrafter_trt.convert import convert
from redrafter_trt.io import TensorSource
from redrafter_trt.runtime import load, open_checkpoint
from redrafter_trt.runtime.merge import merge_ranks, merge_tensors, merged_tensors
from redrafter_trt.runtime.model import read_rank_file
from test_bench import run_cli, setup  # noqa: F401 (a fixture)
from tinymodels import make_drafter, make_hf

CASES = [  # (arch, tp, base overrides, drafter options)
    ("llama", 2, {}, {}),
    ("llama", 4, dict(num_key_value_heads=1), dict(exit_dim=96)),      # one kv head on 4 ranks; drafter input_proj
    ("qwen2", 4, dict(tie=True), {}),                                  # qkv biases, 2 kv heads each on 2 ranks
    ("qwen3", 2, dict(head_dim=32), dict(rnn=False)),                  # q/k norms, head_dim other than hidden / heads
    ("llama", 2, dict(attention_bias=True, mlp_bias=True, bias_std=0.02), {}),  # replicated dense/proj biases
]


def assert_same_tensors(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert sorted(got) == sorted(want)
    for name, t in want.items():
        assert got[name].dtype == t.dtype and torch.equal(got[name], t), name


@pytest.mark.parametrize("arch, tp, overrides, drafter", CASES)
def test_merged_ranks_are_the_tp1_conversion(tmp_path, arch, tp, overrides, drafter):
    hf = make_hf(tmp_path / "hf", arch, **overrides)
    d = make_drafter(tmp_path / "drafter", hf, **drafter)
    one = open_checkpoint(convert(hf, d, tmp_path / "tp1", tp_size=1, dtype="float32"))
    many = open_checkpoint(convert(hf, d, tmp_path / f"tp{tp}", tp_size=tp, dtype="float32"))
    assert_same_tensors(merged_tensors(many.path, many.raw), read_rank_file(one.path, 0))
    merged = merge_ranks(many)
    assert merged.config == one.config and merged.merged and not one.merged
    assert merged.raw == many.raw  # the folder's own config: its rank files are read by it (bench's base rows)
    model = load(merged)  # one process, every rank read
    assert model.group.tp_size == 1 and model.base.local_heads == model.config.num_heads


def test_merge_ranks_opens_a_folder(tmp_path):
    """merge_ranks took only open_checkpoint's Checkpoint: a folder, as every loading entry point takes, was an
    AttributeError ('str' object has no attribute 'config'). It opens it, with inspect's checks, as load does."""
    hf = make_hf(tmp_path / "hf", "llama")
    folder = convert(hf, make_drafter(tmp_path / "drafter", hf), tmp_path / "tp2", tp_size=2, dtype="float32")
    for given in (str(folder), folder):
        merged = merge_ranks(given)
        assert merged.merged and merged.config.tp_size == 1 and merged.path == folder
    assert load(merge_ranks(str(folder))).group.tp_size == 1


@pytest.mark.parametrize("tp", [2, 4])
def test_a_padded_vocabulary_is_trimmed(tmp_path, tp):
    """A base whose vocabulary tp does not divide (251): lm_head's ranks end in zero rows (a drafter's vocabulary must
    divide, so only a base plans them): merged, they are the tp=1 tensors again."""
    hf = make_hf(tmp_path / "hf", "llama", vocab_size=251, num_key_value_heads=1)
    b = BaseModelConfig.from_hf(json.loads((hf / "config.json").read_text()), "config.json")
    src = TensorSource.from_hf_folder(hf)

    def ranks(tp_size: int) -> tuple[list[dict[str, torch.Tensor]], dict]:
        cfg = trtllm_model_fields(b, "float32", tp_size)
        return [{p.name: p.read() for p in plan_hf_rank(src, b, cfg, r)} for r in range(tp_size)], cfg

    (want,), _ = ranks(1)
    split, cfg = ranks(tp)
    assert split[0]["lm_head.weight"].shape[0] * tp > 251  # padded
    assert_same_tensors(merge_tensors(split, cfg), want)
    src.close()


@pytest.mark.parametrize("with_drafter, tp", [(False, 4), (True, 2)])
def test_fp8_ranks_merge_to_the_tp1_export(tmp_path, with_drafter, tp):
    """modelopt's FP8 export at tp 4 (a base alone: a vocabulary-split, padded embedding and lm_head, one kv head
    repeated over the ranks, an FP8 KV cache's scales) or convert's FP8 checkpoint at tp 2 (with its drafter),
    against the same at tp 1 from the same calibration: each rank's FP8 linears dequantised with that rank's own
    weights_scaling_factor (read_rank_file) and joined are the tp=1 export's dequantised linears bit for bit
    (modelopt gives every rank the whole tensor's scale), every other tensor too."""
    pytest.importorskip("modelopt.torch.quantization", reason="FP8 needs nvidia-modelopt")
    from redrafter_trt.quantize import export_fp8_base
    from test_fp8 import CALIB, byte_tokenizer

    hf = byte_tokenizer(make_hf(tmp_path / "hf", "qwen2", vocab_size=258, num_key_value_heads=1))
    d = make_drafter(tmp_path / "drafter", hf) if with_drafter else None
    for size in (1, tp):
        if with_drafter:
            convert(hf, d, tmp_path / f"tp{size}", tp_size=size, dtype="bfloat16", quantize="fp8",
                    kv_cache_dtype="fp8", **CALIB)
        else:
            export_fp8_base(hf, tmp_path / f"tp{size}", tp_size=size, dtype="bfloat16", kv_cache_dtype="fp8",
                            calib_prompts=["The quick brown fox", "1, 2, 3, 4", "Once upon a time", "a b c"],
                            **CALIB, device="cpu")
    raw = json.loads((tmp_path / f"tp{tp}" / "config.json").read_text())
    assert raw.get("use_parallel_embedding")  # modelopt splits the embedding: the merge joins it back
    want = read_rank_file(tmp_path / "tp1", 0)
    assert any(t.dtype == torch.float32 and name.endswith("qkv.weight") for name, t in want.items())  # dequantised
    assert_same_tensors(merged_tensors(tmp_path / f"tp{tp}", raw), want)


@pytest.fixture(scope="module")
def twins(setup):
    """test_bench's tiny Llama, byte tokenizer, init-drafter's drafter (drafts get accepted) and tp=1 checkpoint, and
    that checkpoint converted again at tp 2 with the same options."""
    base, ckpt, prompts = setup
    tp2 = convert(base, base.parent / "drafter", base.parent / "tp2", tp_size=2, dtype="float32", num_beams=2,
                  draft_len=3)
    return base, [ckpt, tp2], prompts


def test_acceptance_of_a_tp2_checkpoint_is_its_tp1_twins(twins, tmp_path):
    base, ckpts, prompts = twins
    reports, outputs = [], []
    for i, ckpt in enumerate(ckpts):
        out = tmp_path / f"{i}.json"
        result = run_cli("acceptance", "--checkpoint-dir", ckpt, "--tokenizer-dir", base, "--prompts", prompts,
                         "--max-new-tokens", 12, "--draft-lens", "1,3", "--output-json", out)
        assert result.exit_code == 0, result.output
        reports.append(json.loads(out.read_text()))
        outputs.append(result.stdout)
    assert reports[0]["configs"] == reports[1]["configs"] and reports[0]["best"] == reports[1]["best"]
    assert [(r["meta"]["checkpoint_tp_size"], r["meta"]["ranks_merged"]) for r in reports] == [(1, False), (2, True)]
    assert any(c["mean_tokens_per_step"] > 1 for c in reports[0]["configs"])  # drafts accepted: a replay that counts
    note = [line for line in outputs[1].splitlines() if "merged" in line]
    assert len(note) == 1 and re.search(r"2 rank files merged", note[0]), outputs[1]
    assert "merged" not in outputs[0]
    tables = [[line for line in out.splitlines() if line not in note and not line.startswith("wrote ")]
              for out in outputs]
    assert tables[0] == tables[1]


def test_bench_of_a_tp2_checkpoint_says_its_ranks_were_merged(twins, tmp_path):
    base, ckpts, prompts = twins
    out = tmp_path / "bench.json"
    result = run_cli("bench", "--checkpoint-dir", ckpts[1], "--tokenizer-dir", base, "--prompts", prompts,
                     "--num-prompts", 1, "--max-new-tokens", 4, "--beams", 2, "--draft-lens", 3, "--output-json", out)
    assert result.exit_code == 0, result.output
    assert len([line for line in result.stdout.splitlines() if "2 rank files merged" in line]) == 1
    assert "agree on 1/1 prompt" in result.stdout
    meta = json.loads(out.read_text())["meta"]  # the JSON says which model was timed: tp=2's ranks, merged
    assert (meta["checkpoint_tp_size"], meta["ranks_merged"]) == (2, True)


def test_a_merged_checkpoint_written_again_is_merged_again(twins):
    """A folder written since bench or acceptance opened it (a convert into it meanwhile) is opened again by `load`:
    its ranks are still merged, not refused with run's 'pass --tp 2', an option neither command has."""
    import os

    _, ckpts, _ = twins
    merged = merge_ranks(open_checkpoint(ckpts[1]))
    config = ckpts[1] / "config.json"
    os.utime(config, ns=(config.stat().st_atime_ns, config.stat().st_mtime_ns + 10**9))  # its stamp changes
    model = load(merged)
    assert model.group.tp_size == 1 and model.base.local_heads == model.config.num_heads
