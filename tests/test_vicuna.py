"""Vicuna, the ReDrafter paper's base, from its own kind of folder: SentencePiece's tokenizer.model alone (read with
sentencepiece and protobuf) and no chat template, made whole by the repository's configs/chat_templates/vicuna_v1.1.jinja.
The template's tokens are Apple's `vicuna_prompt` (ml-recurrent-drafter, recurrent_drafting/chat.py) as FastChat
tokenized it; train learns each answer and its </s> as Apple's `vicuna_labels` do; a drafter trained from it is converted, and run
and serve answer as transformers' greedy generate does."""

from __future__ import annotations

import json
import threading

import pytest

from redrafter_trt.serve_app import App
from redrafter_trt.serve_backend import ReferenceBackend
from redrafter_trt.serve_http import make_server
from test_convert_errors import assert_one_line_error, run_cli
from test_runtime_support import hf_greedy, one_thread  # noqa: F401
from test_serve import call, stream
from tinymodels import make_vicuna

pytest.importorskip("sentencepiece")
pytest.importorskip("google.protobuf")
pytestmark = pytest.mark.usefixtures("one_thread")

# Apple's recurrent_drafting/chat.py: VICUNA_SYSTEM_PROMPT, and vicuna_prompt's turns (user, then assistant, ...)
APPLE_SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. "
                "The assistant gives helpful, detailed, and polite answers to the user's questions. ")


def apple_vicuna_prompt(turns: list[str], add_generation_prompt: bool = False) -> str:
    """Apple's vicuna_prompt, written out: "USER: q " and "ASSISTANT: a</s>" after the system prompt; with the
    generation prompt, the first turn and "ASSISTANT:"."""
    encap = [("USER: " + t + " ") if i % 2 == 0 else ("ASSISTANT: " + t + "</s>") for i, t in enumerate(turns)]
    return APPLE_SYSTEM + (encap[0] + "ASSISTANT:" if add_generation_prompt else "".join(encap))


@pytest.fixture(scope="module")
def vicuna(tmp_path_factory):
    return make_vicuna(tmp_path_factory.mktemp("vicuna") / "vicuna")


@pytest.fixture(scope="module")
def tokenizer(vicuna):
    """The tokenizer every command loads (`tokens.auto_tokenizer`)."""
    from redrafter_trt.tokens import auto_tokenizer

    assert not (vicuna / "tokenizer.json").exists()
    return auto_tokenizer(vicuna)


def sentencepiece_model(vicuna):
    import sentencepiece

    return sentencepiece.SentencePieceProcessor(model_file=str(vicuna / "tokenizer.model"))


def fastchat_ids(vicuna, text: str) -> list[int]:
    """How FastChat trained Vicuna on `text` (transformers 4.28's LlamaTokenizer, legacy): <s>, then the text cut at
    each </s>, every piece encoded by SentencePiece itself (its dummy prefix "▁" before each), </s> between."""
    sp = sentencepiece_model(vicuna)
    pieces = text.split("</s>")
    ids = [sp.bos_id()]
    for i, piece in enumerate(pieces):
        ids += (sp.encode(piece) if piece else []) + ([sp.eos_id()] if i < len(pieces) - 1 else [])
    return ids


def conversation(turns: list[str]):
    from redrafter_trt.train.data import conversation_of

    return conversation_of({"conversations": [{"from": "human" if i % 2 == 0 else "gpt", "value": t}
                                              for i, t in enumerate(turns)]})


@pytest.mark.parametrize("turns", [["Hello"], ["What is 12 times 7?"], ["Hi there", "Hello! How can I help?", "Oops"],
                                   [" Hi\n", "\tHello ", " x"]])
def test_the_template_writes_apples_vicuna_prompt_token_for_token(vicuna, tokenizer, turns):
    """The prompt train distills from and bench, run and serve send (the template's text tokenized without added
    specials: the template writes <s>), a later turn's prompt and a whole conversation are Apple's text as FastChat
    tokenized it to train Vicuna (legacy), read as TensorRT-LLM reads the tokenizer (not legacy): the template's text
    is FastChat's with a space after <s> and after </s>, where legacy SentencePiece put its "▁"."""
    from redrafter_trt.train.data import prompt_ids

    def messages(turns):
        return [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(turns)]

    def ids(text):
        return tokenizer(text, add_special_tokens=False)["input_ids"]

    apple = fastchat_ids(vicuna, apple_vicuna_prompt(turns[:1], add_generation_prompt=True))
    assert prompt_ids(tokenizer, conversation(turns[:1])) == apple
    asked = tokenizer.apply_chat_template(messages(turns), tokenize=False, add_generation_prompt=True)
    assert ids(asked) == fastchat_ids(vicuna, apple_vicuna_prompt(turns) + "ASSISTANT:")
    whole = turns if len(turns) % 2 == 0 else [*turns, "Fine."]
    rendered = tokenizer.apply_chat_template(messages(whole), tokenize=False)
    assert rendered == "<s> " + apple_vicuna_prompt(whole).replace("</s>USER", "</s> USER")
    assert ids(rendered) == fastchat_ids(vicuna, apple_vicuna_prompt(whole))


def test_a_system_message_replaces_vicunas_and_other_roles_are_refused(vicuna, tokenizer):
    """As FastChat's conversation: the system message in place of Vicuna's own, a space after it."""
    from jinja2 import TemplateError

    text = tokenizer.apply_chat_template([{"role": "system", "content": "Be brief."},
                                          {"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True)
    assert text == "<s> Be brief. USER: Hi ASSISTANT:"
    assert tokenizer(text, add_special_tokens=False)["input_ids"] == fastchat_ids(vicuna, "Be brief. USER: Hi ASSISTANT:")
    text = tokenizer.apply_chat_template([{"role": "system", "content": " Be brief. "},
                                          {"role": "user", "content": "Hi"}], tokenize=False, add_generation_prompt=True)
    assert tokenizer(text, add_special_tokens=False)["input_ids"] == fastchat_ids(vicuna, " Be brief.  USER: Hi ASSISTANT:")
    for roles in (["assistant"], ["user", "tool"], ["user", "system"], ["user", "user"]):
        with pytest.raises(TemplateError, match="Vicuna takes turns user, assistant"):
            tokenizer.apply_chat_template([{"role": role, "content": "Hi"} for role in roles], tokenize=False)


def test_train_learns_each_answer_and_its_end_as_apples_vicuna_labels(vicuna, tokenizer):
    """Apple's vicuna_labels keep the tokens after each "ASSISTANT:" through its </s>, and nothing else."""
    from redrafter_trt.train.data import encode

    ex = encode(tokenizer, conversation(["Hello", "World", "Oops", "Bingo 42"]), 512)
    assert list(ex.ids) == fastchat_ids(vicuna, apple_vicuna_prompt(["Hello", "World", "Oops", "Bingo 42"]))
    pieces = tokenizer.convert_ids_to_tokens(list(ex.ids))
    runs, run = [], []
    for piece, learned in zip(pieces, ex.mask):
        if learned:
            run.append(piece)
        elif run:
            runs, run = [*runs, run], []
    runs += [run] if run else []
    assert ["".join(r).replace("▁", " ") for r in runs] == [" World</s>", " Bingo 42</s>"]


PROMPTS = ["What is 12 times 7?", "Name three colors.", "Write a haiku about rain.", "How do I boil an egg?",
           "Tell me a joke.", "What is the capital of France?", "Explain gravity to a child.", "Count to ten."]


@pytest.fixture(scope="module")
def checkpoint(vicuna, tmp_path_factory):
    """A drafter trained by `train --distill` on the Vicuna base's own answers, converted at 2 beams x 3 tokens."""
    work = tmp_path_factory.mktemp("vicuna_work")
    prompts = work / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    trained = run_cli("train", "--base", vicuna, "--data", prompts, "--distill", "--output", work / "drafter",
                      "--cache-dir", work / "cache", "--max-steps", 6, "--batch-size", 4, "--max-seq-len", 160,
                      "--distill-max-new-tokens", 24, "--predict-n", 3, "--num-draft-layers", 1)
    assert trained.exit_code == 0, trained.output
    converted = run_cli("convert", "--base", vicuna, "--drafter", work / "drafter", "--output", work / "ckpt",
                        "--num-beams", 2, "--draft-len", 3)
    assert converted.exit_code == 0, converted.output
    return work / "ckpt"


def test_run_chats_as_transformers_greedy_generate(vicuna, tokenizer, checkpoint, tmp_path):
    out = tmp_path / "out.json"
    args = [a for p in PROMPTS[:3] for a in ("--input-text", p)]
    result = run_cli("run", "--checkpoint-dir", checkpoint, "--tokenizer-dir", vicuna, *args, "--chat", "--max-output-len", 20,
                     "--output-json", out)
    assert result.exit_code == 0, result.output
    for prompt, got in zip(PROMPTS, json.loads(out.read_text())["results"]):
        assert got["prompt_ids"] == fastchat_ids(vicuna, apple_vicuna_prompt([prompt], add_generation_prompt=True))
        assert got["output_ids"] == hf_greedy(vicuna, got["prompt_ids"], 20)[:len(got["output_ids"])]
        assert len(got["output_ids"]) == 20 or got["output_ids"][-1] == tokenizer.eos_token_id


def test_serve_chats_as_run_does_whole_and_streamed(vicuna, checkpoint):
    server = make_server(App(ReferenceBackend(checkpoint, vicuna), "vicuna", max_output_len=16), "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        body = {"messages": [{"role": "user", "content": PROMPTS[1]}], "max_tokens": 16}
        status, whole = call(url, "/v1/chat/completions", body)
        prompt = fastchat_ids(vicuna, apple_vicuna_prompt([PROMPTS[1]], add_generation_prompt=True))
        answer = hf_greedy(vicuna, prompt, 16)
        assert status == 200 and whole["usage"]["prompt_tokens"] == len(prompt)
        assert whole["usage"]["completion_tokens"] == len(answer)
        # SentencePiece's own decode: transformers' byte-fallback decoder makes "\r" before a lone byte a U+FFFD too
        # ("M\r\ufffdJ" against "M\ufffd\ufffdJ" here), which serve, having sent "\r", does not take back
        assert whole["choices"][0]["message"]["content"] == sentencepiece_model(vicuna).decode(answer)
        events = stream(url, "/v1/chat/completions", body)
        assert "".join(e["choices"][0]["delta"].get("content", "") for e in events) == \
            whole["choices"][0]["message"]["content"]
    finally:
        server.shutdown()
        server.server_close()


def test_training_a_base_without_a_chat_template_names_vicunas(tmp_path):
    """Vicuna's Hugging Face folder as downloaded: train's one line says where its template is."""
    base = make_vicuna(tmp_path / "bare", template=False)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "Hi"}) + "\n")
    result = run_cli("train", "--base", base, "--data", prompts, "--distill", "--output", tmp_path / "drafter",
                     "--cache-dir", tmp_path / "cache")
    assert_one_line_error(result, "the base tokenizer has no chat template",
                          f"cp configs/chat_templates/vicuna_v1.1.jinja {base}/chat_template.jinja")


def test_a_special_token_the_sentencepiece_model_lacks_is_named(vicuna, checkpoint, tmp_path):
    """Without a tokenizer.json, a special token transformers adds at load (a pad_token "<pad>" that the
    SentencePiece model lacks) is told by its id: the next one, the model's vocab_size, a row it has not."""
    import shutil

    folder = shutil.copytree(vicuna, tmp_path / "padded", ignore=shutil.ignore_patterns("*.safetensors"))
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "pad_token": "<pad>"}))
    result = run_cli("run", "--checkpoint-dir", checkpoint, "--tokenizer-dir", folder, "--input-text", "Hi")
    assert_one_line_error(result, f"the tokenizer in {folder} has pad_token '<pad>', which is not in its vocabulary "
                          "(transformers added it as token 512, past the model's vocab_size 512)")
