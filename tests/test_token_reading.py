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


# the Split regexes of Qwen2/2.5/3's and Llama 3's tokenizer.json (Llama 3's groups digits by three)
QWEN_SPLIT = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"""
              r"""|\s+(?!\S)|\s+""")
LLAMA3_SPLIT = QWEN_SPLIT.replace(r"|\p{N}|", r"|\p{N}{1,3}|")
CORPUS = ["Hello world, how are you? I'm fine: 12345 apples.", "def f(x):\n    return x * 2\n\n", "  two  spaces  ",
          "café naïve 日本語 🙂🚀", "Question: what is 2+2? Answer: 4."] * 10
TEXTS = ["Hello world", " Hello world ", "  two  spaces  ", "line1\nline2\n\n", "12345 + 67.8", "café 日本語 🙂🚀"]


def bytelevel_folder(folder, split, specials, post_processor, config, nfc=False):
    """A tokenizer folder as a byte-level BPE base ships it (Qwen2.5/3, Llama 3, DeepSeek-R1-Distill): a tiny BPE
    trained here with the family's Split and ByteLevel pre-tokenizer, decoder and `post_processor` (given the
    tokenizer), its special tokens, and `config` as tokenizer_config.json (a transformers 4.57 save_pretrained writes
    these two files and the vocab.json / merges.txt a fast tokenizer does not read)."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC() if nfc else None
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(split), behavior="isolated"),
                                                 pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=400, show_progress=False,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok.add_special_tokens(specials)
    tok.post_processor = post_processor(tok)
    folder.mkdir(parents=True)
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder, Tokenizer.from_file(str(folder / "tokenizer.json"))


def bytelevel_post(tok):
    from tokenizers import processors

    return processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)


def bos_template(bos):
    from tokenizers import processors

    return lambda tok: processors.Sequence([
        processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True),
        processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A {bos}:1 $B:1",
                                      special_tokens=[(bos, tok.token_to_id(bos))])])


R1_BOS, R1_EOS = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"
R1_CONFIG = {"add_eos_token": False, "bos_token": R1_BOS, "eos_token": R1_EOS, "pad_token": R1_EOS, "legacy": True,
             "clean_up_tokenization_spaces": False, "model_max_length": 16384, "unk_token": None,
             "tokenizer_class": "LlamaTokenizerFast"}


@pytest.mark.parametrize("split, post, add_bos", [(QWEN_SPLIT, bytelevel_post, True),
                                                  (LLAMA3_SPLIT, bos_template(R1_BOS), False)],
                         ids=["r1-distill-qwen", "llama3-file-add-bos-false"])
def test_a_llama_tokenizer_class_adds_bos_as_its_config_says(tmp_path, split, post, add_bos):
    """DeepSeek-R1-Distill-Qwen's tokenizer_config.json names LlamaTokenizerFast and add_bos_token over a Qwen
    tokenizer.json whose post-processor adds no BOS. transformers 4.57's LlamaTokenizerFast (TensorRT-LLM's) rebuilds
    the post-processor from add_bos_token / add_eos_token; transformers 5 loads it as TokenizersBackend, which kept
    the file's: every prompt lost the BOS the engine is sent (and a Llama 3 file under add_bos_token false gained
    one). Measured with 4.57 over folders it saved; the real Distill-Qwen-7B file adds no BOS and transformers 4
    gives [151646, ...] for "Who are you?" (huggingface/swift-transformers#161)."""
    folder, written = bytelevel_folder(tmp_path / "r1", split, [R1_BOS, R1_EOS, "<｜User｜>", "<｜Assistant｜>"], post,
                                       {**R1_CONFIG, "add_bos_token": add_bos}, nfc=split == QWEN_SPLIT)
    tok = auto_tokenizer(folder)
    bos = [written.token_to_id(R1_BOS)] * add_bos
    for text in TEXTS + [f"{R1_BOS}<｜User｜> Hi 12<｜Assistant｜><think>\nok</think>"]:
        ids = written.encode(text, add_special_tokens=False).ids
        assert tok(text, add_special_tokens=False)["input_ids"] == ids
        assert tok(text)["input_ids"] == bos + ids, text
        assert tok.decode(ids) == written.decode(ids, skip_special_tokens=False)


QWEN_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
FAMILIES = {  # name: Split, specials, post-processor, tokenizer_config.json, NFC, a chat turn
    "qwen2.5-qwen3": (QWEN_SPLIT, QWEN_SPECIALS, bytelevel_post,
                      {"tokenizer_class": "Qwen2Tokenizer", "add_prefix_space": False, "bos_token": None,
                       "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "unk_token": None, "errors": "replace",
                       "split_special_tokens": False, "clean_up_tokenization_spaces": False}, True,
                      "<|im_start|>user\n Hi 12<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"),
    "llama3": (LLAMA3_SPLIT, LLAMA3_SPECIALS, bos_template("<|begin_of_text|>"),
               {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": "<|begin_of_text|>",
                "eos_token": "<|eot_id|>", "clean_up_tokenization_spaces": False,
                "model_input_names": ["input_ids", "attention_mask"]}, False,
               "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n Hi 12<|eot_id|>"),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_a_byte_level_base_reads_as_its_file(tmp_path, family):
    """Qwen2/2.5/3 (Qwen2Tokenizer: NFC, Split, ByteLevel) and Llama 3 (PreTrainedTokenizerFast, BOS by the file's
    post-processor) read alike under transformers 4.57 and 5, file_pipeline or not (measured with 4.57 over folders it
    saved): pinned, auto_tokenizer's ids are the file's, the BOS as the file adds it."""
    split, specials, post, config, nfc, chat = FAMILIES[family]
    folder, written = bytelevel_folder(tmp_path / family, split, specials, post, config, nfc)
    tok = auto_tokenizer(folder)
    for text in TEXTS + [chat]:
        for special in (False, True):
            ids = written.encode(text, add_special_tokens=special).ids
            assert tok(text, add_special_tokens=special)["input_ids"] == ids, text
        ids = written.encode(text, add_special_tokens=False).ids
        assert tok.decode(ids) == written.decode(ids, skip_special_tokens=False)


def test_a_mistral_v03_tokenizer_json_reads_as_its_file(tmp_path):
    """Mistral v0.3's tokenizer.json (a Metaspace pre-tokenizer prepending "▁" first, [INST] / [/INST] special,
    `"legacy": false`, LlamaTokenizer) reads alike under transformers 4.57 and 5 (measured): pinned. (v0.1's, which
    prepends "▁" in its normalizer, is Llama 2's: test_a_llama2_tokenizer_json_is_read_as_written.)"""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    pieces = [f"<0x{byte:02X}>" for byte in range(256)]  # byte fallback's, in the vocabulary only
    tok.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=600, show_progress=False,
                                                        special_tokens=["<unk>", "<s>", "</s>", *pieces]))
    tok.add_special_tokens(["[INST]", "[/INST]"])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s>:1 $B:1",
                                                       special_tokens=[("<s>", 1)])
    file = json.loads(tok.to_str())
    file["added_tokens"] = [token for token in file["added_tokens"] if token["content"] not in pieces]
    folder = tmp_path / "mistral"
    folder.mkdir()
    (folder / "tokenizer.json").write_text(json.dumps(file))
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "LlamaTokenizer", "add_bos_token": True, "add_eos_token": False, "legacy": False,
         "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "clean_up_tokenization_spaces": False}))
    written = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tok = auto_tokenizer(folder)
    for text in TEXTS + ["<s>[INST] Hi there [/INST] Hello 12</s><s>[INST] x [/INST]", "[INST]Hi[/INST]"]:
        for special in (False, True):
            ids = written.encode(text, add_special_tokens=special).ids
            assert tok(text, add_special_tokens=special)["input_ids"] == ids, text
