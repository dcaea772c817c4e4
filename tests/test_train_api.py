"""The Python training API as a service embedding it calls it: `train_drafter(TrainConfig(...))` refuses what the CLI
refuses (an existing output without force, values of the wrong type) before any work, as a RedrafterError, leaves
the caller's config as it was, and prints nothing of its own; tokenizers load in several threads at once."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from redrafter_trt.errors import ConfigError
from redrafter_trt.train import TrainConfig, loop, train_drafter
from test_train_cli import chat_base, prompts  # noqa: F401 (fixtures)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def trained(monkeypatch):
    """train_drafter's work after its checks, replaced by a record of the config it was given."""
    given = []

    def record(cfg, *args):
        given.append(cfg)
        return cfg.output

    monkeypatch.setattr(loop, "_train", record)
    return given


def _cfg(chat_base, prompts, tmp_path, **kw):
    return TrainConfig(**{"base": chat_base, "data": [prompts], "output": tmp_path / "out", "cache_dir": tmp_path / "c",
                          **kw})


def test_an_existing_output_is_replaced_only_with_force(chat_base, prompts, tmp_path, trained):
    """train_drafter replaced an existing folder (a converted checkpoint: its rank0.safetensors gone, a drafter in its
    place) without a word, where `convert` and the CLI's train refuse it without force."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "config.json").write_text(json.dumps({"architecture": "ReDrafterForLlamaLM"}))
    (out / "rank0.safetensors").write_bytes(b"weights")
    with pytest.raises(ConfigError, match="already exists: pass --force"):
        train_drafter(_cfg(chat_base, prompts, tmp_path))
    assert not trained and (out / "rank0.safetensors").read_bytes() == b"weights"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert train_drafter(_cfg(chat_base, prompts, tmp_path, output=empty, force=True)) == empty


@pytest.mark.parametrize("field, value, need", [
    ("batch_size", 8.0, "an integer"),  # torch.manual_seed's RuntimeError after the teacher-forced pass
    ("max_steps", 2.0, "null or an integer"),
    ("predict_n", 3.0, "an integer"),
    ("predict_n", "3", "an integer"),
    ("predict_n", True, "an integer"),
    ("exit_dim", "64", "null or an integer"),
    ("lr", "1e-3", "a number"),
    ("soft_target", None, "a number"),
    ("seed", None, "an integer in 0..2**63-1"),  # a TypeError inside random.py
    ("seed", -1, "an integer in 0..2**63-1"),
    ("device", "gpu", "cpu, cuda or cuda:N"),  # torch's RuntimeError
    ("device", None, "cpu, cuda or cuda:N"),
    ("rnn", "no", "true or false"),
    ("force", 1, "true or false"),
    ("max_examples", 0, "null or a positive integer"),
    ("eval_examples", -1, "null or an integer >= 0"),
    ("chat_template_kwargs", '{"a": 1}', "a dict"),  # 'the template never reads variable "{"'
    ("chat_template_kwargs", {1: True}, "a dict"),
])
def test_a_value_of_the_wrong_type_is_one_config_error_before_any_work(chat_base, prompts, tmp_path, trained, field,
                                                                      value, need):
    with pytest.raises(ConfigError) as e:
        train_drafter(_cfg(chat_base, prompts, tmp_path, **{field: value}))
    assert str(e.value).startswith(f"TrainConfig {field}={value!r}: it must be {need}"), e.value
    assert not trained and not (tmp_path / "c").exists()


@pytest.mark.parametrize("field", ["base", "output", "data", "cache_dir"])
def test_a_path_of_the_wrong_type_is_one_config_error(chat_base, prompts, tmp_path, field):
    """TrainConfig(base=None) was Path's TypeError."""
    value = [3] if field == "data" else 3
    with pytest.raises(ConfigError, match=f"TrainConfig {field}=.*: it must be"):
        _cfg(chat_base, prompts, tmp_path, **{field: value})


def test_train_drafter_leaves_the_callers_config_as_it_was(chat_base, prompts, tmp_path, trained):
    """validate's fitted max_seq_len (None -> the base's 512) was left on the caller's config: the same config with
    another base then trained with the first one's cut."""
    cfg = _cfg(chat_base, prompts, tmp_path)
    before = dataclasses.asdict(cfg)
    train_drafter(cfg)
    assert trained[0].max_seq_len == 512 and trained[0] is not cfg
    assert dataclasses.asdict(cfg) == before


def test_loading_the_base_prints_no_progress_bar_and_restores_transformers_setting(chat_base, capfd):
    """transformers 5 drew its 'Loading weights: 100%|...|' bar on stderr as train loaded the base."""
    from transformers.utils import logging as hf_logging

    from redrafter_trt.hf_model import load_causal_lm

    for enabled in (True, False):
        (hf_logging.enable_progress_bar if enabled else hf_logging.disable_progress_bar)()
        load_causal_lm(chat_base, torch.float32)
        assert hf_logging.is_progress_bar_enabled() == enabled
    hf_logging.enable_progress_bar()
    err = capfd.readouterr().err
    assert "Loading weights" not in err and "%|" not in err, err


def test_two_threads_load_tokenizers_at_once(chat_base):
    """transformers' lazy module is not thread-safe: the second thread asking for AutoTokenizer while the first
    imported it got "module 'transformers' has no attribute 'AutoTokenizer'" (5 runs of 5). A fresh interpreter, as
    the first import is the one that races."""
    script = ("import sys, threading\n"
              "from redrafter_trt.tokens import auto_tokenizer\n"
              "errors = []\n"
              "def load():\n"
              "    try:\n"
              "        auto_tokenizer(sys.argv[1])\n"
              "    except Exception as e:\n"
              "        errors.append(repr(e))\n"
              "threads = [threading.Thread(target=load) for _ in range(4)]\n"
              "[t.start() for t in threads]\n"
              "[t.join() for t in threads]\n"
              "print(errors)\n")
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    r = subprocess.run([sys.executable, "-c", script, str(chat_base)], capture_output=True, text=True, env=env,
                       timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "[]", (r.stdout, r.stderr)
