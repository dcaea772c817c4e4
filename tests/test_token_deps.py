"""A SentencePiece-only tokenizer folder (tokenizer.model and tokenizer_config.json, as Vicuna v1.3 ships) where
sentencepiece or protobuf is missing: one line naming them, not transformers' paragraph and its tiktoken advice."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from redrafter_trt import token_deps
from redrafter_trt.convert import convert
from test_convert_errors import assert_one_line_error, run_cli


def _varint(n: int) -> bytes:
    out = b""
    while True:
        low, n = n & 0x7F, n >> 7
        if not n:
            return out + bytes([low])
        out += bytes([low | 0x80])


def _field(number: int, wire_type: int, payload: bytes) -> bytes:
    return _varint(number << 3 | wire_type) + payload


def _bytes_field(number: int, data: bytes) -> bytes:
    return _field(number, 2, _varint(len(data)) + data)


def save_sentencepiece_folder(folder: Path) -> Path:
    """A tokenizer folder as Vicuna v1.3's: a SentencePiece tokenizer.model (its protobuf written by hand, so no
    sentencepiece is needed to make it: <unk>, <s>, </s>, then a-z and ▁ as pieces, a unigram model) and a
    tokenizer_config.json naming LlamaTokenizer; no tokenizer.json."""
    def piece(text: str, score: float, kind: int) -> bytes:  # ModelProto.SentencePiece: piece, score, type
        return _bytes_field(1, text.encode()) + _field(2, 5, struct.pack("<f", score)) + _field(3, 0, _varint(kind))

    pieces = [piece("<unk>", 0, 2), piece("<s>", 0, 3), piece("</s>", 0, 3)]
    pieces += [piece(c, -i, 1) for i, c in enumerate("abcdefghijklmnopqrstuvwxyz▁")]
    trainer = _field(3, 0, _varint(1))  # TrainerSpec.model_type UNIGRAM
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer.model").write_bytes(b"".join(_bytes_field(1, p) for p in pieces) + _bytes_field(2, trainer))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}))
    return folder


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, tiny_llama, tiny_drafter):
    return convert(tiny_llama, tiny_drafter, tmp_path_factory.mktemp("ck") / "ck", num_beams=2, draft_len=2)


@pytest.mark.parametrize("missing", [("sentencepiece", "google.protobuf"), ("google.protobuf",)])
def test_a_sentencepiece_tokenizer_without_its_packages_names_them(ckpt, tmp_path, monkeypatch, missing):
    """A review: `run --tokenizer-dir VICUNA_V1_3` printed transformers' paragraph ('Could not extract SentencePiece
    model ... Falling back to TikToken extractor.') then `cannot load a tokenizer ... (`tiktoken` is required ...):
    pass the base model's Hugging Face folder`, though it was that folder and tiktoken would not read it."""
    monkeypatch.setattr(token_deps, "installed", lambda module: module not in missing)
    folder = save_sentencepiece_folder(tmp_path / "spm")
    result = run_cli("run", "--checkpoint-dir", ckpt, "--tokenizer-dir", folder, "--input-text", "hi")
    names = " and ".join(token_deps.SENTENCEPIECE_PACKAGES[m] for m in missing)
    assert_one_line_error(result, f"the tokenizer in {folder} is a SentencePiece tokenizer.model without a "
                          f"tokenizer.json", f"({names} not installed)", "pip install sentencepiece protobuf")


def test_only_a_sentencepiece_model_alone_needs_sentencepiece(tmp_path):
    """A tokenizer.json beside the model is what transformers reads; Llama 3's tokenizer.model is tiktoken's text."""
    folder = save_sentencepiece_folder(tmp_path / "spm")
    assert token_deps.is_sentencepiece_only(folder)
    (folder / "tokenizer.json").write_text("{}")
    assert not token_deps.is_sentencepiece_only(folder)
    tiktoken = tmp_path / "tiktoken"
    tiktoken.mkdir()
    (tiktoken / "tokenizer.model").write_text("IQ== 0\nIg== 1\n")
    assert not token_deps.is_sentencepiece_only(tiktoken)


def test_a_module_whose_parent_package_is_missing_is_not_installed():
    """`google.protobuf` without `google` installed: find_spec's ModuleNotFoundError is "not installed", not "installed"
    (which skipped the refusal, and transformers' paragraph came back)."""
    assert not token_deps.installed("redrafter_no_such_package_zz.sub")
    assert not token_deps.installed("redrafter_no_such_package_zz")
    assert token_deps.installed("json.decoder")
