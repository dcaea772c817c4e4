"""Tokenizer folders read as TensorRT-LLM reads them, under transformers 5 (here) and 4.57 (its pin; .ci/run's pins
job runs this file too): a SentencePiece model alone with legacy=False, and a Llama 2 tokenizer.json as written."""

from __future__ import annotations

import json

import pytest

from redrafter_trt import token_reading
from redrafter_trt.tokens import auto_tokenizer
from test_token_deps import save_sentencepiece_folder
from tinymodels import make_vicuna

pytest.importorskip("sentencepiece")
pytest.importorskip("google.protobuf")

LLAMA2_CHAT = "<s>[INST] Hi there [/INST] Hello 12</s><s>[INST] x [/INST]"


@pytest.mark.parametrize("config", [{"tokenizer_class": "LlamaTokenizer"}, {"legacy": True}, {"legacy": False}])
def test_a_sentencepiece_model_alone_is_converted_with_legacy_false(tmp_path, config):
    """TensorRT-LLM passes legacy=False for every tokenizer, whatever its tokenizer_config.json says (tests/
    test_vicuna.py: Vicuna's tokens, under transformers 4 and 5)."""
    folder = save_sentencepiece_folder(tmp_path / "spm")
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    assert token_reading.sentencepiece_reading(folder) == {"legacy": False}
    (folder / "tokenizer.json").write_text("{}")  # read as written: `file_pipeline`
    assert token_reading.sentencepiece_reading(folder) == {}


def llama2_folder(folder, keep_model: bool):
    """A tokenizer folder as Llama 2's (Llama-2-7b-chat-hf, TinyLlama): a tokenizer.json whose normalizer prepends
    "▁" and turns spaces into it, no pre-tokenizer, and `"legacy": false` in tokenizer_config.json; the
    SentencePiece tokenizer.model beside it or not."""
    from tokenizers import normalizers

    folder = make_vicuna(folder, template=False)
    backend = auto_tokenizer(folder).backend_tokenizer
    backend.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    backend.pre_tokenizer = None
    backend.save(str(folder / "tokenizer.json"))
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "legacy": False}))
    if not keep_model:
        (folder / "tokenizer.model").unlink()
    return folder


@pytest.mark.parametrize("keep_model", [True, False])
def test_a_llama2_tokenizer_json_is_read_as_written(tmp_path, keep_model):
    """transformers 5's LlamaTokenizer built a Metaspace pre-tokenizer of its own for Llama 2's tokenizer.json:
    "<s>[INST]" lost its "▁" (prepended by the file's normalizer, which transformers 4, and so TensorRT-LLM,
    applies), and a drafter trained here learnt prompts the engine never gets."""
    from tokenizers import Tokenizer

    folder = llama2_folder(tmp_path / "llama2", keep_model)
    written = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tok = auto_tokenizer(folder)
    for text in (LLAMA2_CHAT, "Hello world", " two  spaces"):
        assert tok(text, add_special_tokens=False)["input_ids"] == written.encode(text, add_special_tokens=False).ids
    assert tok("Hi")["input_ids"][0] == tok.bos_token_id
    assert tok.decode(tok("Hello world", add_special_tokens=False)["input_ids"]) == "Hello world"


def test_a_tokenizer_whose_pipeline_is_its_files_is_left_alone(smollm2, caplog):
    """SmolLM2's byte-level BPE loads as its tokenizer.json says: nothing is put back, nothing said."""
    import logging

    with caplog.at_level(logging.INFO, logger=token_reading.__name__):
        tok = auto_tokenizer(smollm2)
    assert not caplog.records and tok("Hello world")["input_ids"]


def test_the_files_decoder_decodes(tmp_path):
    """A tokenizer.json whose decoder keeps the "▁" opening the text (no Strip) decodes as written, as transformers 4
    decodes it (transformers 5's LlamaTokenizer builds a decoder that strips it)."""
    from tokenizers import Tokenizer, decoders

    folder = llama2_folder(tmp_path / "llama2", keep_model=False)
    written = Tokenizer.from_file(str(folder / "tokenizer.json"))
    written.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    written.save(str(folder / "tokenizer.json"))
    tok = auto_tokenizer(folder)
    ids = tok("Hello world", add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == written.decode(ids) == " Hello world"
