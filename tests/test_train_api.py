"""The Python training API as a service embedding it calls it: `train_drafter(TrainConfig(...))` refuses what the CLI
refuses (an existing output without force) before any work, as a RedrafterError."""

from __future__ import annotations

import json

import pytest

from redrafter_trt.errors import ConfigError
from redrafter_trt.train import TrainConfig, loop, train_drafter
from test_train_data import make_chat_base

@pytest.fixture(scope="module")
def chat_base(tmp_path_factory):
    return make_chat_base(tmp_path_factory.mktemp("chat_base"))


@pytest.fixture
def prompts(tmp_path):
    p = tmp_path / "prompts.jsonl"
    p.write_text("\n".join(json.dumps({"prompt": q}) for q in ["Say hi.", "Count to 3.", "Name a fruit.", "Why?"]))
    return p


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
