"""A Qwen3 base through every command that reads one (train, init-drafter, convert with the drafter's base sample,
inspect, bench against transformers, acceptance), on a tiny random Qwen3 with a ChatML tokenizer: q/k norms and a
head_dim (32) other than hidden_size / num_attention_heads."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from redrafter_trt.cli import main
from redrafter_trt.convert import convert
from test_convert import _trtllm_base_only
from test_train_data import make_tokenizer
from tinymodels import make_hf


@pytest.fixture(scope="module")
def qwen3_chat(tmp_path_factory):
    """vocab 100: the ChatML tokenizer's 99 tokens, padded as models pad theirs (run and bench check the two fit);
    untied, as a tied tiny random model answers one token repeated, which any runtime would match."""
    folder = make_hf(tmp_path_factory.mktemp("qwen3_chat"), "qwen3", vocab_size=100, head_dim=32,
                     rope_theta=1000000.0)
    make_tokenizer(folder)
    return folder


def _cli(*args):
    r = CliRunner().invoke(main, [*map(str, args)])
    assert r.exit_code == 0, r.output
    return r


def test_train_convert_bench_and_acceptance_on_qwen3(qwen3_chat, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("\n".join(json.dumps({"prompt": q}) for q in ["Say hi.", "Count to 3.", "Name a fruit."]))
    _cli("train", "--base", qwen3_chat, "--data", prompts, "--output", tmp_path / "drafter", "--cache-dir",
         tmp_path / "cache", "--distill", "--distill-max-new-tokens", "12", "--max-steps", "3", "--predict-n", "2",
         "--no-rnn", "--exit-dim", "32", "--base-dtype", "float32")
    sampled = json.loads((tmp_path / "drafter" / "config.json").read_text())["producer"]["base_sample"]
    assert len(sampled) == 2 + 7 * 2  # lm_head, the embedding and the 7 linears of each of the 2 layers (no q/k norm)
    _cli("convert", "--base", qwen3_chat, "--drafter", tmp_path / "drafter", "--output", tmp_path / "ckpt",
         "--num-beams", "2", "--draft-len", "2")
    cfg = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    assert (cfg["architecture"], cfg["qwen_type"], cfg["producer"]["drafter_base_matches"]) == \
        ("ReDrafterForQWenLM", "qwen3", True)
    _cli("inspect", tmp_path / "ckpt")
    # and from a TensorRT-LLM base checkpoint split at tp 2, each sampled row read from the rank file holding it
    two_step = convert(_trtllm_base_only(tmp_path, qwen3_chat, 2), tmp_path / "drafter", tmp_path / "two", num_beams=2,
                       draft_len=2)
    assert json.loads((two_step / "config.json").read_text())["producer"]["drafter_base_matches"] is True
    # bench times transformers on the same base (its weights compared with the checkpoint's first): greedy outputs
    # of the runtime, with and without drafting, equal transformers'
    _cli("bench", "--checkpoint-dir", tmp_path / "ckpt", "--tokenizer-dir", qwen3_chat, "--prompts", prompts,
                 "--max-new-tokens", "16", "--beams", "2", "--draft-lens", "2", "--hf-dir", qwen3_chat,
                 "--output-json", tmp_path / "bench.json")
    report = json.loads((tmp_path / "bench.json").read_text())
    assert report["baselines"]["hf_matches_no_draft"] == 3 and report["all_match_no_draft"]
    _cli("acceptance", "--checkpoint-dir", tmp_path / "ckpt", "--tokenizer-dir", qwen3_chat, "--prompts", prompts,
         "--max-new-tokens", "8", "--beams", "2", "--draft-lens", "2")
    # an untrained drafter made for the base records its sample too, and converts as made for it
    _cli("init-drafter", "--base", qwen3_chat, "--output", tmp_path / "init")
    _cli("convert", "--base", qwen3_chat, "--drafter", tmp_path / "init", "--output", tmp_path / "ckpt_init",
         "--num-beams", "2", "--draft-len", "2")
    assert json.loads((tmp_path / "ckpt_init" / "config.json").read_text())["producer"]["drafter_base_matches"]
