"""`redrafter-trt serve --checkpoint-dir`: a real server on SmolLM2 over HTTP. Answers equal transformers' greedy
output (completions, token prompts, batches, chat through the template), stop strings cut, a greedy checkpoint
ignores the temperature, and bad requests get 400 with a message while the server keeps serving."""

from __future__ import annotations

import dataclasses
import json
import re
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request

import pytest
from click.testing import CliRunner

import redrafter_trt
from redrafter_trt.cli import main
from redrafter_trt.serve_app import App
from redrafter_trt.serve_backend import ReferenceBackend
from redrafter_trt.serve_errors import ClientGone
from redrafter_trt.serve_http import make_server
from test_runtime_support import checkpoint, fresh_drafter, hf_greedy, one_thread, smollm2_checkpoint  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def smol_ckpt(smollm2):
    return smollm2_checkpoint(smollm2)


@pytest.fixture(scope="module")
def backend(smollm2, smol_ckpt):
    return ReferenceBackend(smol_ckpt, smollm2)


@pytest.fixture(scope="module")
def url(backend):
    server = make_server(App(backend, "smol", max_output_len=12), "127.0.0.1", 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def call(url: str, path: str, body=None, raw: bytes | None = None) -> tuple[int, dict]:
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    req = urllib.request.Request(url + path, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_completion_is_the_base_models_greedy_answer(url, backend, smollm2):
    status, out = call(url, "/v1/completions", {"model": "smol", "prompt": "The capital of France is",
                                                "max_tokens": 10})
    assert status == 200, out
    ids = backend.encode("The capital of France is")
    want = hf_greedy(smollm2, ids, 10)
    assert out["choices"][0]["text"] == backend.tokenizer.decode(want, skip_special_tokens=True)
    assert out["usage"] == {"prompt_tokens": len(ids), "completion_tokens": len(want),
                            "total_tokens": len(ids) + len(want)}
    assert out["object"] == "text_completion" and out["model"] == "smol"
    assert out["choices"][0]["finish_reason"] == ("stop" if want[-1] in backend.eos else "length")
    r = out["redrafter"]
    assert 1 <= r["steps"] <= len(want) and r["tokens_per_step"] == pytest.approx(len(want) / r["steps"], abs=1e-4)


def test_token_prompts_in_one_request_each_get_their_greedy_answer(url, smollm2):
    prompts = [[504, 3458, 282], [1780, 314, 253, 1789]]
    status, out = call(url, "/v1/completions", {"prompt": prompts, "max_tokens": 6})
    assert status == 200, out
    assert [c["index"] for c in out["choices"]] == [0, 1]
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2)
    for choice, p in zip(out["choices"], prompts):
        assert choice["text"] == tok.decode(hf_greedy(smollm2, p, 6), skip_special_tokens=True)


def test_chat_goes_through_the_chat_template(url, backend, smollm2):
    messages = [{"role": "user", "content": "Name a primary color."}]
    status, out = call(url, "/v1/chat/completions", {"messages": messages, "max_tokens": 8, "temperature": 0.7})
    assert status == 200, out
    ids = backend.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
    want = hf_greedy(smollm2, list(ids), 8)  # greedy checkpoint: the temperature is ignored, as by its engine
    assert out["object"] == "chat.completion"
    assert out["choices"][0]["message"] == {"role": "assistant",
                                            "content": backend.tokenizer.decode(want, skip_special_tokens=True)}


def test_stop_string_ends_the_answer_early(url):
    body = {"prompt": "List three fruits:", "max_tokens": 12}
    full = call(url, "/v1/completions", body)[1]
    text = full["choices"][0]["text"]
    stop = text[len(text) // 3:][:3]
    assert stop.strip(), text
    out = call(url, "/v1/completions", body | {"stop": ["never said", stop]})[1]
    assert out["choices"][0]["text"] == text[: text.index(stop)] and out["choices"][0]["finish_reason"] == "stop"
    assert out["usage"]["completion_tokens"] < full["usage"]["completion_tokens"]  # decoding ended there


def stream(url: str, path: str, body: dict) -> list:
    req = urllib.request.Request(url + path, data=json.dumps(body | {"stream": True}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=120) as r:
        assert r.headers["Content-Type"] == "text/event-stream"
        lines = [line.decode().rstrip("\n") for line in r]
    data = [line.removeprefix("data: ") for line in lines if line.startswith("data: ")]
    assert data[-1] == "[DONE]" and all(not line or line.startswith("data: ") for line in lines)
    return [json.loads(d) for d in data[:-1]]


@pytest.mark.parametrize("stop", [None, "e"])
def test_streamed_completion_adds_up_to_the_answer(url, stop):
    body = {"prompt": ["Write a haiku about rain.", "Count to five:"], "max_tokens": 12, "stop": stop}
    whole = call(url, "/v1/completions", body)[1]
    events = stream(url, "/v1/completions", body)
    assert len(events) > 3 and all(e["id"] == events[0]["id"] for e in events)
    for i, choice in enumerate(whole["choices"]):
        parts = [c for e in events for c in e["choices"] if c["index"] == i]
        assert "".join(c["text"] for c in parts) == choice["text"]
        assert [c["finish_reason"] for c in parts][-1] == choice["finish_reason"]
        assert all(c["finish_reason"] is None for c in parts[:-1])
    assert events[-1]["redrafter"] == whole["redrafter"]
    assert not [e for e in events if "usage" in e]  # as OpenAI, vLLM and trtllm-serve: only with include_usage


def test_streamed_chat_sends_deltas(url):
    body = {"messages": [{"role": "user", "content": "Say hello in French."}], "max_tokens": 10}
    whole = call(url, "/v1/chat/completions", body)[1]
    events = stream(url, "/v1/chat/completions", body)
    assert {e["object"] for e in events} == {"chat.completion.chunk"}
    assert events[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all("role" not in e["choices"][0]["delta"] for e in events[1:])
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events)
    assert text == whole["choices"][0]["message"]["content"]
    assert events[-1]["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"]


def hf_answer_logprobs(smollm2, prompt: list[int], answer: list[int]):
    """transformers' log-softmax at each answer position, teacher-forced [len(answer), V]."""
    import torch

    from test_runtime_support import hf_model

    with torch.no_grad():
        logits = hf_model(smollm2)(torch.tensor([prompt + answer])).logits[0].double()
    return torch.log_softmax(logits, -1)[len(prompt) - 1: len(prompt) + len(answer) - 1]


def test_completion_logprobs_are_the_base_models(url, backend, smollm2):
    """Each token of the text with its log-probability and the 2 most likely, as transformers has them; the token
    strings add up to the text, offsets point into it; streamed chunks carry the same entries."""
    body = {"prompt": "The three primary colors are", "max_tokens": 12, "logprobs": 2}
    out = call(url, "/v1/completions", body)[1]
    choice = out["choices"][0]
    lp = choice["logprobs"]
    ids = backend.encode(body["prompt"])
    answer = hf_greedy(smollm2, ids, 12)
    want = hf_answer_logprobs(smollm2, ids, answer)
    n = len(lp["tokens"])
    assert n == len(answer) and "".join(lp["tokens"][: len([t for t in answer if t not in backend.eos])]) == choice["text"]
    assert lp["token_logprobs"] == pytest.approx([float(want[t, answer[t]]) for t in range(n)], abs=1e-3)
    for t, top in enumerate(lp["top_logprobs"]):
        values, best = want[t].topk(2)
        assert list(top) == [backend.tokenizer.decode([i]) for i in best.tolist()]
        assert list(top.values()) == pytest.approx(values.tolist(), abs=1e-3)
    assert [choice["text"][o:].startswith(tok) for o, tok in zip(lp["text_offset"], lp["tokens"])] == [True] * n
    events = stream(url, "/v1/completions", body)
    chunks = [c["logprobs"] for e in events for c in e["choices"] if c["logprobs"]]
    assert sum((c["tokens"] for c in chunks), []) == lp["tokens"]
    assert sum((c["token_logprobs"] for c in chunks), []) == lp["token_logprobs"]
    assert call(url, "/v1/completions", body | {"logprobs": None})[1]["choices"][0]["logprobs"] is None
    special = {"prompt": "<|im_start|>user\nHi<|im_end|>\n", "max_tokens": 1, "logprobs": 0}  # a token without text
    whole = call(url, "/v1/completions", special)[1]["choices"][0]["logprobs"]
    streamed = [c["logprobs"] for e in stream(url, "/v1/completions", special) for c in e["choices"] if c["logprobs"]]
    assert sum((c["tokens"] for c in streamed), []) == whole["tokens"] == ["<|im_start|>"]
    assert whole["top_logprobs"] == [{"<|im_start|>": whole["token_logprobs"][0]}]  # k = 0: the chosen token only


def test_completion_logprobs_name_the_eos_that_ended_the_answer(url, backend, smollm2):
    """lm-evaluation-harness scores a continuation with "max_tokens": 1, "echo": true, "logprobs": 1 and takes
    token_logprobs[ctxlen:-1], reading the last entry as the token generated: when that token is EOS it must be
    listed (OpenAI's completions named <|endoftext|>), else the continuation's last token is dropped. Chat leaves it
    out, as OpenAI's chat does."""
    question = backend.encode_chat([{"role": "user", "content": "Reply with one word: what color is the sky?"}])
    whole = hf_greedy(smollm2, question, 32)
    assert whole[-1] in backend.eos  # the premise: the model ends its turn after a short answer
    prompt, answer = question + whole[:-1], whole[-1:]  # context + continuation, whose next token is EOS
    body = {"prompt": [prompt], "max_tokens": 1, "logprobs": 1, "echo": True, "temperature": 0}
    lp = call(url, "/v1/completions", body)[1]["choices"][0]["logprobs"]
    assert len(lp["token_logprobs"]) == len(prompt) + 1 and lp["tokens"][-1] == backend.tokenizer.decode(answer)
    want = hf_answer_logprobs(smollm2, prompt, answer)
    assert lp["token_logprobs"][-1] == pytest.approx(float(want[0, answer[0]]), abs=1e-3)
    streamed = [c["logprobs"] for e in stream(url, "/v1/completions", body | {"stream": True})
                for c in e["choices"] if c["logprobs"]]
    assert sum((c["tokens"] for c in streamed), []) == lp["tokens"]


def test_batched_requests_get_their_own_number_of_top_logprobs(backend):
    from redrafter_trt.serve_jobs import Job

    jobs = [Job([backend.encode(p)], 5, 0.0, 0, [], k) for p, k in [("Hi", 3), ("Once upon", 1), ("The sky", None)]]
    assert backend.wait_idle(120)
    with backend.scheduler.wake:  # waiting together: the scheduler starts them as one batch computing 3
        backend.scheduler.waiting.extend(jobs)
        backend.scheduler.wake.notify_all()
    for job in jobs:
        while job.events.get(timeout=120) is not None:
            pass
    assert [len(v.value.top) for v in jobs[0].choices[0].logprobs] == [3] * len(jobs[0].choices[0].logprobs)
    assert {len(v.value.top) for v in jobs[1].choices[0].logprobs} == {1}
    assert jobs[2].choices[0].logprobs is None


def test_a_request_starting_behind_a_shorter_one_gets_its_own_max_tokens(backend):
    """Two greedy requests queued together start as one batch: the batch decodes to the larger max_tokens, so the
    second, asking for more than the first, still gets all its tokens and the answer it gets alone."""
    from redrafter_trt.serve_jobs import Job

    def answer(*jobs):
        assert backend.wait_idle(120)
        with backend.scheduler.wake:  # waiting together: the scheduler starts them as one batch
            backend.scheduler.waiting.extend(jobs)
            backend.scheduler.wake.notify_all()
        for job in jobs:
            while job.events.get(timeout=120) is not None:
                pass
        return [job.choices[0] for job in jobs]

    def job(prompt, max_tokens):
        return Job([backend.encode(prompt)], max_tokens, 0.0, 0, [], ignore_eos=True)

    alone, = answer(job("Once upon a time", 10))
    short, long = answer(job("The capital of France is", 2), job("Once upon a time", 10))
    assert len(short.ids) == 2 and short.finish_reason == "length"
    assert len(long.ids) == 10 and long.finish_reason == "length"
    assert (long.ids, long.text) == (alone.ids, alone.text)


def test_token_bytes_rebuild_multibyte_characters(backend):
    from redrafter_trt.runtime import TokenLogprob
    from redrafter_trt.serve_text import Logprob
    from redrafter_trt.serve_logprobs import logprobs_json

    text = "\U0001f600\u65e5\u672c rain"
    ids = backend.tokenizer(text, add_special_tokens=False)["input_ids"]
    values = [Logprob(t, 0, TokenLogprob(-1.0, [(t, -1.0)])) for t in ids]
    chat = logprobs_json(backend.tokenizer, values, chat=True)["content"]
    assert bytes(b for e in chat for b in e["bytes"]) == text.encode()
    partial = [e["token"] for e in chat if e["token"].startswith("bytes:")]
    assert partial and len(set(partial)) == len(partial)  # emoji and CJK split across tokens, each named apart
    completion = logprobs_json(backend.tokenizer, values, chat=False)
    assert [list(d) for d in completion["top_logprobs"]] == [[t] for t in completion["tokens"]]


def byte_level_tokenizer(decoder):
    """GPT-2's byte-level alphabet a token each, and "\u0120\u0120" (two spaces), decoded by `decoder`."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    vocab = {c: i for i, c in enumerate([*bytes_to_unicode().values(), "\u0120\u0120"])}
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoder
    return PreTrainedTokenizerFast(tokenizer_object=tk)


@pytest.mark.parametrize("style", ["sentencepiece", "byte-level in a sequence"])
def test_token_bytes_keep_the_spaces_and_bytes_the_decoder_writes(style):
    """A review: Llama 2's and Mistral's decoder ends by stripping the text's first space, so each "\u2581word"
    token decoded alone lost its space and the tokens' bytes ran the words together ("Helloworld"); a byte-level
    decoder inside a decoder sequence gave replacement characters for a token holding part of a character."""
    from tokenizers import decoders

    from redrafter_trt.serve_logprobs import token_bytes

    text = "Hello world \U0001f600"
    if style == "sentencepiece":
        tok = sentencepiece_tokenizer()
        expected = b" " + text.encode()
    else:
        tok = byte_level_tokenizer(decoders.Sequence([decoders.ByteLevel(), decoders.Strip(" ", 0, 1)]))
        expected = text.encode()
    ids = tok(text, add_special_tokens=False)["input_ids"]
    assert tok.decode(ids) == text and len(ids) > 4
    assert b"".join(token_bytes(tok, t) for t in ids) == expected


def sentencepiece_tokenizer(metaspace: bool = False, bos: bool = False):
    """Llama 2's tokenizer.json, with a small vocabulary (its "\u2581\u2581" too, two spaces as one token): its
    decoder strips the text's first space (metaspace: tokenizers' Metaspace decoder instead, as Mistral's newer
    ones have, which drops every "\u2581" of the first token). bos: it opens every text it encodes with <s>, as
    Llama 2's does."""
    from tokenizers import Tokenizer, decoders, models, normalizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1} | {f"<0x{i:02X}>": 2 + i for i in range(256)}
    vocab |= {w: len(vocab) + k for k, w in enumerate(["\u2581Hello", "\u2581world", "\u2581", "\u2581\u2581"])}
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[], byte_fallback=True, unk_token="<unk>"))
    tk.normalizer = normalizers.Sequence([normalizers.Prepend("\u2581"), normalizers.Replace(" ", "\u2581")])
    tk.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
                                    decoders.Strip(" ", 1, 0)])
    if metaspace:
        tk.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Metaspace(prepend_scheme="first")])
    if bos:
        tk.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="<unk>", **({"bos_token": "<s>"} if bos else {}))


@pytest.mark.parametrize("metaspace", [False, True])
def test_an_answers_first_token_is_named_as_the_text_starts(metaspace):
    """A review: Llama 2's and Mistral's decoders strip a text's first space, so an answer decoded alone reads
    "Hello world" while its first token's logprobs said " Hello": the tokens (and chat's bytes) no longer added up
    to the text, as OpenAI's do, and a client rebuilding the text from them got a space the answer does not have."""
    from redrafter_trt.runtime import TokenLogprob
    from redrafter_trt.serve_logprobs import logprobs_json
    from redrafter_trt.serve_text import AnswerText

    tok = sentencepiece_tokenizer(metaspace)
    ids = tok.convert_tokens_to_ids(["\u2581Hello", "\u2581world"])
    answer = AnswerText(tok, [])
    text = answer.add(ids, [TokenLogprob(-1.0, [(t, -1.0) for t in ids]) for _ in ids]) + answer.finish()
    assert text == "Hello world"
    values = answer.logprobs(everything=True)
    chat = logprobs_json(tok, values, chat=True)["content"]
    assert "".join(e["token"] for e in chat) == text and bytes(b for e in chat for b in e["bytes"]) == text.encode()
    assert [[t["token"] for t in e["top_logprobs"]] for e in chat] == [["Hello", "world"], [" Hello", " world"]]
    completion = logprobs_json(tok, values, chat=False)
    assert "".join(completion["tokens"]) == text and list(completion["top_logprobs"][0]) == ["Hello", "world"]
    assert [text[o:].startswith(t) for o, t in zip(completion["text_offset"], completion["tokens"])] == [True] * 2


@pytest.mark.parametrize("decoder", ["strip", "metaspace", "byte-level, strip"])
def test_an_answer_opening_with_spaces_is_named_as_the_decoder_writes_it(decoder):
    """A review: an answer's first token lost one space, whatever its decoder strips. Llama 2's decoder strips the
    text's first space alone ("\u2581\u2581", two spaces, opening it is " "); tokenizers' Metaspace drops every
    "\u2581" of the first token ("") and no byte token's space (<0x20> is " "), where the token was named " " and
    "" and the tokens no longer added up to the text. A first token is named as the decoder writes it alone; a
    byte-level one loses the spaces a Strip step says (one, not all)."""
    from tokenizers import decoders

    from redrafter_trt.runtime import TokenLogprob
    from redrafter_trt.serve_logprobs import logprobs_json
    from redrafter_trt.serve_text import AnswerText

    if decoder == "byte-level, strip":
        tok = byte_level_tokenizer(decoders.Sequence([decoders.ByteLevel(), decoders.Strip(" ", 1, 0)]))
        openings = [["\u0120\u0120", "w"], ["\u0120", "w"], ["\u00c3", "\u00a9", "\u0120", "w"]]  # the last "é w"
        first = [" ", "", "bytes:\\xc3"]
    else:
        tok = sentencepiece_tokenizer(metaspace=decoder == "metaspace")
        openings = [["\u2581\u2581", "\u2581world"], ["<0x20>", "\u2581world"], ["\u2581Hello", "\u2581world"],
                    ["<0xC3>", "<0xA9>", "\u2581world"]]  # "é world": a first token holding part of a character
        first = [" ", "", "Hello"] if decoder == "strip" else ["", " ", "Hello"]
        first.append("bytes:\\xc3")
    for names, name in zip(openings, first, strict=True):
        ids = tok.convert_tokens_to_ids(names)
        answer = AnswerText(tok, [])
        text = answer.add(ids, [TokenLogprob(-1.0, []) for _ in ids]) + answer.finish()
        assert text == tok.decode(ids)
        chat = logprobs_json(tok, answer.logprobs(everything=True), chat=True)["content"]
        assert chat[0]["token"] == name, (names, text, chat[0])
        assert bytes(b for e in chat for b in e["bytes"]) == text.encode(), (names, text, chat)
        if not name.startswith("bytes:"):
            assert "".join(e["token"] for e in chat) == text, (names, text)


@pytest.mark.parametrize("metaspace", [False, True])
def test_an_answer_opening_with_a_special_token_names_its_first_text_token_as_the_text_starts(metaspace):
    """A review: a special token the text skips (an answer's <s>) took the answer's start, so its next token, which
    opens the text, kept the space the decoder drops there ("▁Hello" named " Hello" over the text's "Hello")."""
    from redrafter_trt.runtime import TokenLogprob
    from redrafter_trt.serve_logprobs import logprobs_json
    from redrafter_trt.serve_text import AnswerText

    tok = sentencepiece_tokenizer(metaspace=metaspace, bos=True)
    ids = tok.convert_tokens_to_ids(["<s>", "\u2581Hello", "\u2581world"])
    answer = AnswerText(tok, [])
    text = answer.add(ids, [TokenLogprob(-1.0, []) for _ in ids]) + answer.finish()
    assert text == "Hello world"
    chat = logprobs_json(tok, answer.logprobs(everything=True), chat=True)["content"]
    assert [e["token"] for e in chat] == ["<s>", "Hello", " world"], chat


def test_chat_logprobs_stop_at_the_stop_string(url, backend, smollm2):
    messages = [{"role": "user", "content": "Name a primary color."}]
    body = {"messages": messages, "max_tokens": 12, "logprobs": True, "top_logprobs": 1}
    out = call(url, "/v1/chat/completions", body)[1]["choices"][0]
    content = out["logprobs"]["content"]
    assert "".join(e["token"] for e in content) == out["message"]["content"]
    assert all(e["bytes"] == list(e["token"].encode()) and len(e["top_logprobs"]) == 1 for e in content)
    assert all(e["top_logprobs"][0]["logprob"] >= e["logprob"] - 1e-9 for e in content)  # greedy: the best one
    text, tokens = out["message"]["content"], [e["token"] for e in content]
    starts = [len("".join(tokens[:k])) for k in range(len(tokens))]
    whole = next(t for k, t in enumerate(tokens) if k and t.strip() and text.index(t) == starts[k])  # a token's text
    for stop in (text[len(text) // 2:][:2], whole):
        answer = call(url, "/v1/chat/completions", body | {"stop": stop})[1]
        cut = answer["choices"][0]
        kept = "".join(e["token"] for e in cut["logprobs"]["content"])  # through the token that completed the stop
        assert cut["message"]["content"] == text[: text.index(stop)] and kept.startswith(
            cut["message"]["content"] + stop)
        # one per token usage counts, as vLLM and trtllm-serve list them (the token that completed a stop string
        # that is its whole text was counted and left out)
        assert len(cut["logprobs"]["content"]) == answer["usage"]["completion_tokens"], (stop, cut, answer["usage"])
    no = call(url, "/v1/chat/completions", body | {"logprobs": False, "top_logprobs": None})[1]["choices"][0]
    assert no["logprobs"] is None and no["message"] == out["message"]



@pytest.mark.parametrize("path, body", [
    ("/v1/completions", {"prompt": "The capital of France is", "stop": "answer is", "logprobs": 1}),
    ("/v1/completions", {"prompt": "Emoji list: \U0001f600 \U0001f603 \U0001f604 \U0001f601 \U0001f606", "max_tokens": 10,
                         "logprobs": 1}),
    ("/v1/completions", {"prompt": "<|im_start|>user\nHi<|im_end|>\n", "max_tokens": 1, "logprobs": 0}),
    ("/v1/chat/completions", {"messages": [{"role": "user", "content": "What is the capital of France?"}],
                              "stop": "is P", "logprobs": True}),
], ids=["stop", "cut-character", "no-text", "chat-stop"])
def test_a_streamed_chunk_carries_text_or_its_answers_end(url, path, body):
    """A review: a stream sent chunks of no text before its last one (texts [' ', '', '']), holding the logprobs of
    tokens whose text never went out (the stop string's, a character max_tokens cut, a token without text). They
    ride the last chunk, with its finish_reason, as vLLM sends a last step's tokens; every logprobs entry still goes
    out, as the whole answer lists them."""
    chat = "messages" in body
    whole = call(url, path, body)[1]["choices"][0]
    parts = [c for e in stream(url, path, body) for c in e["choices"]][1 if chat else 0:]  # chat: the role first
    assert all((c["delta"].get("content") if chat else c["text"]) or c["finish_reason"] for c in parts), parts
    key = "content" if chat else "tokens"
    assert sum((c["logprobs"][key] for c in parts if c["logprobs"]), []) == whole["logprobs"][key]
    assert parts[-1]["finish_reason"] == whole["finish_reason"]

def test_chat_content_may_be_text_parts(url):
    """Text parts are one line each, as trtllm-serve and vLLM join them (they were run together); a list holding
    another part beside them (an image) is refused as a list of other parts is, not read as its text parts."""
    plain = {"messages": [{"role": "user", "content": "Name a primary color.\nOne word."}], "max_tokens": 6}
    parts = {"messages": [{"role": "user", "content": [{"type": "text", "text": "Name a primary color."},
                                                       {"type": "text", "text": "One word."}]}], "max_tokens": 6}
    assert call(url, "/v1/chat/completions", parts)[1]["choices"] == call(url, "/v1/chat/completions", plain)[1]["choices"]
    image = {"type": "image_url", "image_url": {"url": "x"}}
    for content in ([image], [parts["messages"][0]["content"][0], image]):
        status, body = call(url, "/v1/chat/completions", {"messages": [{"role": "user", "content": content}]})
        assert status == 400 and 'content" must be a string or a list of text parts' in body["error"]["message"]


def test_client_leaving_a_stream_stops_it_and_the_server_goes_on(url, caplog):
    import socket

    host, port = url.removeprefix("http://").split(":")
    body = json.dumps({"prompt": "Tell me a long story about a dragon.", "max_tokens": 12, "stream": True}).encode()
    with caplog.at_level("INFO", logger="redrafter_trt.serve_http"):
        with socket.create_connection((host, int(port)), timeout=60) as sock:
            sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
            got = b""
            while b"data: " not in got:  # the stream has started; then hang up
                chunk = sock.recv(4096)
                assert chunk, got
                got += chunk
        assert call(url, "/health") == (200, {"status": "ok"})
        assert call(url, "/v1/completions", {"prompt": "Hi", "max_tokens": 3})[0] == 200
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


def test_empty_stop_string_is_no_stop_and_max_completion_tokens_counts(url):
    body = {"prompt": "The capital of France is", "max_tokens": 6}
    full = call(url, "/v1/completions", body)[1]["choices"][0]
    assert call(url, "/v1/completions", body | {"stop": ""})[1]["choices"][0] == full
    chat = {"messages": [{"role": "user", "content": "Hi"}], "max_completion_tokens": 3}
    assert call(url, "/v1/chat/completions", chat)[1]["usage"]["completion_tokens"] <= 3


def raw_request(url: str, head: bytes, body: bytes = b"") -> bytes:
    """Send bytes as they are; everything the server answers before it closes the connection."""
    import socket

    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=60) as sock:
        sock.sendall(head + b"\r\n" + body)
        sock.shutdown(socket.SHUT_WR)
        got = b""
        while chunk := sock.recv(4096):
            got += chunk
    return got


@pytest.mark.parametrize("head, body, status", [
    (b"Transfer-Encoding: chunked\r\n", b"zz\r\nhello\r\n0\r\n\r\n", b"400"),
    (b"Content-Length: abc\r\n", b"{}", b"400"),
    (b"Content-Length: -1\r\n", b"{}", b"400"),
    (b"", b"{}", b"411"),
    (b"Content-Length: 999999999\r\n", b"{}", b"413"),
    (b"Content-Length: 8\r\n", b"Infinity", b"400"),
])
def test_unreadable_bodies_get_one_answer_and_a_closed_connection(url, head, body, status):
    got = raw_request(url, b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n" + head, body)
    assert got.startswith(b"HTTP/1.1 " + status) and got.count(b"HTTP/1.1 ") == 1, got
    assert call(url, "/health")[0] == 200


def test_answer_text_with_a_byte_fallback_tokenizer():
    """SentencePiece-style byte fallback writes one replacement character per byte of an unfinished character:
    none of them is ever sent, and what was sent is never taken back."""
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    from redrafter_trt.serve_text import AnswerText

    vocab = {f"<0x{i:02X}>": i for i in range(256)} | {"X": 256, "a": 257, "b": 258, "c": 259}
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[], byte_fallback=True))
    tk.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Fuse()])
    tok = PreTrainedTokenizerFast(tokenizer_object=tk)
    ids = [256, *"\U0001f600".encode(), 257, 258, 259]
    for stop in ([], ["zz"]):
        answer, sent = AnswerText(tok, stop), ""
        for t in ids:
            sent += answer.add([t])
            assert "\ufffd" not in sent
        assert sent + answer.rest() == answer.text == "X\U0001f600abc"


def test_a_long_stop_string_costs_no_more_than_the_answer_so_far(tmp_path):
    """The end that may begin a stop string was looked for at every length of the stop string, sliced each time,
    on every token: one request with a 300000-character stop string held the scheduler thread (every request's
    decoding) about 2 s a token. What is held back is the same (the work is counted in test_serve_text.py)."""
    from test_train_data import make_tokenizer

    from redrafter_trt.serve_text import AnswerText

    tok = make_tokenizer(tmp_path)
    answer, sent = AnswerText(tok, ["ab" + "x" * 300_000]), ""
    for ch in "zzzab":
        sent += answer.add(tok.convert_tokens_to_ids([ch]))
    assert sent == "zzz" and answer.rest() == "ab"  # "a", then "ab": held back as the start of the stop string


def test_a_stop_string_ends_the_answer_where_one_token_at_a_time_would(tmp_path):
    """A step accepting several tokens was searched for stop strings all at once, the earliest one in the text
    winning: with stop ["abcd", "c"] a step accepting "a", "b", "c", "d" answered "" where decoding one token at a
    time (plain decoding, vLLM, which checks after each token) answers "ab". How many tokens a step accepts changes
    nothing now, nor the tokens counted."""
    from test_train_data import make_tokenizer

    from redrafter_trt.serve_text import AnswerText

    tok = make_tokenizer(tmp_path)
    ids = tok("xabcde", add_special_tokens=False)["input_ids"]
    # (stop strings, the answer, its tokens: through the one that completed the first stop string)
    for stop, want, made in ((["abcd", "c"], "xab", 4), (["c", "abcd"], "xab", 4), (["abcde", "bcd"], "xa", 5)):
        one_by_one = AnswerText(tok, stop)
        sent = ""
        for t in ids:
            sent += one_by_one.add([t])
            if one_by_one.stopped:
                break
        for split in range(len(ids)):
            steps = AnswerText(tok, stop)
            out = steps.add(ids[:split]) if split else ""
            out += "" if steps.stopped else steps.add(ids[split:])
            assert (out, steps.ids) == (sent, one_by_one.ids) == (want, ids[:made]), (stop, split)


def test_a_sent_character_is_not_taken_back_by_invalid_bytes_after_it():
    """Byte fallback decodes a run of byte tokens that is not valid UTF-8 to one replacement character per byte,
    the valid character at its start included: "é" went out in the stream, then the answer said "\ufffd\ufffd"
    there (89 of 3000 random invalid-byte cases in a review). The sent text stands, streamed or not, with or
    without a stop string."""
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    from redrafter_trt.serve_text import AnswerText

    vocab = {f"<0x{i:02X}>": i for i in range(256)} | {"X": 256, "a": 257}
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[], byte_fallback=True))
    tk.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Fuse()])
    tok = PreTrainedTokenizerFast(tokenizer_object=tk)
    ids = [256, 0xC3, 0xA9, 0x80, 257, 256]
    assert tok.decode(ids) == "X\ufffd\ufffd\ufffdaX"
    for stop in ([], ["aX"]):
        answer, sent = AnswerText(tok, stop), ""
        for t in ids:
            sent += answer.add([t])
        sent += answer.finish()
        assert sent == answer.text and sent.startswith("X\u00e9") and sent.endswith("\ufffd" if stop else "aX")


def test_a_tokenizer_that_cleans_up_spaces_loses_no_character():
    """A review: with clean_up_tokenization_spaces (Llama 3's tokenizer_config sets it) "Hello " went out, then
    "," made the decoded text "Hello, World": the sent text stood and the comma was lost, in the stream and (since
    the sent text stands) in the answer too: "Hello  World". Spaces are kept as the tokens have them."""
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    from redrafter_trt.serve_text import AnswerText

    tk = Tokenizer(models.WordLevel(vocab={"Hello": 0, " ": 1, ",": 2, " World": 3, "?": 4}, unk_token="?"))
    tk.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, clean_up_tokenization_spaces=True)
    for stop in ([], ["World"]):
        answer, sent = AnswerText(tok, stop), ""
        for t in (0, 1, 2, 3):
            sent += answer.add([t])
        sent += answer.finish()
        assert sent == answer.text == ("Hello , " if stop else "Hello , World")


def test_answer_cut_inside_a_character_ends_before_it_with_every_logprob():
    """max_tokens can end an answer between the bytes of one character: its replacement characters are never
    sent, and the tokens that wrote them still get their logprobs (at the end of the text)."""
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    from redrafter_trt.serve_text import AnswerText

    vocab = {f"<0x{i:02X}>": i for i in range(256)} | {"X": 256}
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[], byte_fallback=True))
    tk.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Fuse()])
    tok = PreTrainedTokenizerFast(tokenizer_object=tk)
    ids = [256, *"\U0001f600".encode()[:2]]  # "X" and half of an emoji
    answer = AnswerText(tok, [])
    sent = "".join(answer.add([t], [f"lp{t}"]) for t in ids) + answer.finish()
    assert sent == answer.text == "X"
    given = answer.logprobs(everything=True)
    assert [v.token for v in given] == ids and [v.offset for v in given] == [0, 1, 1]


def test_stop_strings_and_offsets_across_the_bytes_of_a_character():
    """A stop string whose later character spans tokens: streaming leaked the character before it (the replacement
    characters took the hold-back's place), token offsets counted them, and usage counted the tokens a step decoded
    past the stop (a review)."""
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    from redrafter_trt.serve_text import AnswerText

    vocab = {f"<0x{i:02X}>": i for i in range(256)} | {"X": 256, "a": 257, "b": 258}
    tk = Tokenizer(models.BPE(vocab=vocab, merges=[], byte_fallback=True))
    tk.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Fuse()])
    tok = PreTrainedTokenizerFast(tokenizer_object=tk)
    emoji = list("\U0001f600".encode())
    ids = [256, 257, *emoji, 258, 258]
    streamed, sent = AnswerText(tok, ["a\U0001f600"]), ""
    for t in ids:
        sent += streamed.add([t])
        if streamed.stopped:
            break
    assert sent + streamed.rest() == streamed.text == "X"
    at_once = AnswerText(tok, ["a\U0001f600"])  # one decoding step accepted all of them
    assert at_once.add(ids) == "X" and at_once.ids == ids[:6]  # through the token that completed the stop
    offsets = AnswerText(tok, [])
    offsets.add(ids[:1], ["lp"])
    offsets.add(ids[1:], ["lp"] * 7)
    offsets.finish()
    assert [v.offset for v in offsets.logprobs(everything=True)] == [0, 1, 2, 2, 2, 2, 3, 4]


def test_answer_text_holds_back_what_may_still_change(backend):
    """A stop string split over tokens is never sent, nor half of a multi-token character."""
    from redrafter_trt.serve_text import AnswerText

    tok = backend.tokenizer
    ids = tok("Hello world, rain \u96e8 \U0001f642 time. END here", add_special_tokens=False)["input_ids"]
    answer, sent = AnswerText(tok, ["END"]), ""
    for t in ids:
        sent += answer.add([t])
        assert "END" not in sent and "\ufffd" not in sent
        if answer.stopped:
            break
    sent += answer.rest()
    assert answer.stopped and sent == answer.text == "Hello world, rain \u96e8 \U0001f642 time. "
    plain, sent = AnswerText(tok, []), ""
    for t in ids:
        sent += plain.add([t])
        assert "\ufffd" not in sent
    assert sent + plain.rest() == "Hello world, rain \u96e8 \U0001f642 time. END here"


@pytest.mark.parametrize("body, needle", [
    ({"prompt": "hi", "stream": "yes please"}, "stream"),  # "yes": true, as pydantic reads it
    ({"prompt": "hi", "n": 0}, '"n"'),
    ({"prompt": ["a", "b"], "n": 33}, "1..32 (64 answers"),
    ({"prompt": "hi", "max_tokens": 13}, "1..12"),
    ({"prompt": "hi", "max_tokens": 0}, '0 only with "echo"'),
    ({"prompt": "hi", "echo": True, "max_tokens": 13}, "0..12"),
    ({"prompt": "hi", "echo": 2}, "echo"),
    ({"prompt": "hi", "stream_options": {"include_usage": True}}, '"stream": true'),
    ({"prompt": "hi", "stream": True, "stream_options": {"include_usage": " true"}}, "stream_options"),
    ({"prompt": "hi", "presence_penalty": 0.5}, '"presence_penalty" is not implemented'),
    ({"prompt": "hi", "logit_bias": {"5": 100}}, '"logit_bias"'),
    ({"prompt": "hi", "min_tokens": 3}, '"min_tokens"'),
    ({"prompt": "hi", "ignore_eos": 0.5}, '"ignore_eos" must be true or false'),
    ({"prompt": "hi", "repetition_penalty": 1.2}, "send 1"),
    ({"prompt": "hi", "temperature": -1}, "temperature"),
    # an integer past float's range: a greedy checkpoint's 200 (moot), a sampling one's 500 (OverflowError)
    ({"prompt": "hi", "temperature": 10 ** 400}, '"temperature" must be a finite number >= 0'),
    ({"prompt": "hi", "seed": "x"}, "seed"),
    ({"prompt": "hi", "seed": 10 ** 24}, "seed"),
    ({"prompt": "hi", "n": 1.5}, '"n"'),
    ({"prompt": "hi", "logprobs": 21}, "0..20"),
    ({"prompt": "hi", "logprobs": 0.5}, "logprobs"),
    ({"prompt": "hi", "top_logprobs": 2}, "top_logprobs"),
    ({"prompt": "hi", "suffix": "x"}, "suffix"),
    ({"prompt": "hi", "best_of": 2}, '"n" for more answers'),
    ({"prompt": "hi", "model": 5}, '"smol"'),
    ({"prompt": "hi", "max_tokens": 3, "max_completion_tokens": "x"}, "max_completion_tokens"),
    ({"prompt": "hi", "max_completion_tokens": 99}, "1..12"),
    ({"prompt": "hi", "stop": [1]}, "stop"),
    ({"prompt": "hi", "stop": [str(k) for k in range(33)]}, '"stop" holds 33 strings'),
    ({"prompt": "hi", "stop": ["x" * 257]}, "each at most 256 characters"),
    ({"prompt": ""}, "empty"),
    ({"prompt": [[1, 2], "x"]}, "prompt"),
    ({"prompt": [10 ** 9]}, "vocabulary"),
    ({"prompt": [[1]] * 65}, "at most 64"),
    ({"prompt": [1] * 8190, "max_tokens": 12}, "maximum context length is 8192 tokens"),
    ({}, "prompt"),
    ([1, 2], "JSON object"),
    (None, "JSON object"),
])
def test_bad_completion_requests_get_400_with_the_fix(url, body, needle):
    status, out = call(url, "/v1/completions", raw=json.dumps(body).encode())
    assert status == 400 and needle in out["error"]["message"], out


def test_bad_chat_requests_and_routes(url):
    status, out = call(url, "/v1/chat/completions", {"messages": [{"role": "user"}]})
    assert status == 400 and "messages" in out["error"]["message"]
    status, out = call(url, "/v1/chat/completions", {"messages": [{"role": "wizard", "content": "hi"}]})
    assert status == 400 and "assistant" in out["error"]["message"]
    status, out = call(url, "/v1/chat/completions", {"messages": [{"role": "user", "content": "hi"}],
                                                     "top_logprobs": 2})
    assert status == 400 and '"logprobs": true' in out["error"]["message"]
    assert call(url, "/v1/completions", raw=b"")[0] == 400  # an empty body is no JSON object
    req = urllib.request.Request(url + "/v1/models", method="DELETE")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=60)
    assert e.value.code == 405 and "DELETE" in json.loads(e.value.read())["error"]["message"]
    status, out = call(url, "/v1/completions", raw=b"{not json")
    assert status == 400 and "not JSON" in out["error"]["message"]
    assert call(url, "/v1/embeddings", {"input": "x"})[0] == 404
    assert call(url, "/nothing")[0] == 404
    assert call(url, "/health") == (200, {"status": "ok"})
    assert call(url, "/version") == (200, {"version": redrafter_trt.__version__})
    assert call(url, "/v1/models")[1]["data"][0]["id"] == "smol"


def test_sampling_checkpoint_answers_temperature_zero_greedily(backend):
    """lm-evaluation-harness sends temperature 0 with every scoring request: it was refused on a --no-greedy
    checkpoint, and a temperature of 5e-324 was a 500 (NaN probabilities)."""
    app = App(backend, "smol", 4)
    original = backend.config
    greedy = app.post("/v1/completions", {"prompt": "The capital of France is", "max_tokens": 4})[1]
    backend.config = dataclasses.replace(original, greedy_search=False)
    try:
        for t in (0, 5e-324):
            status, out = app.post("/v1/completions", {"prompt": "The capital of France is", "max_tokens": 4,
                                                       "temperature": t, "seed": 3})
            assert status == 200 and out["choices"][0]["text"] == greedy["choices"][0]["text"]
        assert backend.temperature(None) == 1.0 and backend.temperature(0.5) == 0.5
        # a review: an integer temperature past float's range was float()'s OverflowError, a 500
        status, out = app.post("/v1/completions", {"prompt": "Hi", "max_tokens": 2, "temperature": 10 ** 400})
        assert status == 400 and out["error"]["param"] == "temperature", out
    finally:
        backend.config = original


def test_cli_refuses_both_or_neither_folder(tmp_path, smollm2):
    for args in ([], ["--checkpoint-dir", tmp_path, "--engine-dir", tmp_path]):
        res = CliRunner().invoke(main, ["serve", "--tokenizer-dir", str(smollm2), *map(str, args)])
        assert res.exit_code == 2 and "exactly one of" in res.output and "Traceback" not in res.output


def test_the_scheduler_thread_loads_the_model_it_runs(tmp_path, monkeypatch):
    """Loading and decoding happen in one thread (a second thread computing makes OpenMP's workers sleep between
    parallel regions: serve_scheduler.Scheduler); a load that fails is raised by the constructor."""
    from test_train_data import make_tokenizer
    from tinymodels import make_drafter, make_hf

    from redrafter_trt.errors import ConfigError
    from redrafter_trt.runtime import ranks

    base = make_hf(tmp_path / "base", "llama", vocab_size=100)
    make_tokenizer(base)
    drafter = make_drafter(tmp_path / "drafter", base)
    ckpt = checkpoint(base, drafter, 1, num_beams=2, draft_len=2)
    loaders, real = [], ranks.LocalRanks.__init__

    def init(self, *args, **kwargs):
        loaders.append(threading.current_thread())
        real(self, *args, **kwargs)
    monkeypatch.setattr(ranks.LocalRanks, "__init__", init)
    backend = ReferenceBackend(ckpt, base, max_batch=2)
    try:
        assert loaders == [backend.scheduler.thread] and loaders[0] is not threading.current_thread()
        assert backend.complete([[5, 6, 7]], 4, None, 0, [])[0].ids
    finally:
        backend.stop()
    with pytest.raises(ConfigError, match="^compile=True .*float32.*bfloat16.*pass compile=False, or load it with "
                                          "dtype='float32'$"):  # refused in the loading thread
        ReferenceBackend(checkpoint(base, drafter, 1, dtype="bfloat16"), base, compile=True)
    assert len(loaders) == 2 and loaders[1] is not threading.current_thread()


def test_cli_compile_refuses_what_it_cannot_run(tmp_path):
    """--compile: one CPU rank in float32; a tp=2 checkpoint is refused before any rank starts, a GPU at load."""
    from test_train_data import make_tokenizer
    from tinymodels import make_drafter, make_hf

    base = make_hf(tmp_path / "base", "llama", vocab_size=100)
    make_tokenizer(base)
    drafter = make_drafter(tmp_path / "drafter", base)
    for args, needles in ((["--checkpoint-dir", checkpoint(base, drafter, 2)], ("tp=2", "drop --compile")),
                          (["--checkpoint-dir", checkpoint(base, drafter, 1), "--device", "cuda"], ("cuda",)),
                          (["--checkpoint-dir", checkpoint(base, drafter, 1, dtype="bfloat16")], ("bfloat16",))):
        res = CliRunner().invoke(main, ["serve", "--tokenizer-dir", str(base), "--compile", *map(str, args)])
        assert res.exit_code == 2 and "Traceback" not in res.output, res.output
        assert res.output.strip().splitlines() == [res.output.strip()] and res.output.startswith("error:"), res.output
        assert all(n in res.output for n in needles), res.output  # refused before "compiling (minutes)", not after


def test_cli_a_cuda_device_that_is_not_there_is_refused_in_serves_words(tmp_path, monkeypatch):
    """serve --device cuda without a GPU was refused by the runtime's load, in the loading thread; the runtime's
    load names the Python API's keyword (device='cuda'), so serve checks its option first, with its flag."""
    import torch

    from test_train_data import make_tokenizer
    from tinymodels import make_drafter, make_hf

    base = make_hf(tmp_path / "base", "llama", vocab_size=100)
    make_tokenizer(base)
    drafter = make_drafter(tmp_path / "drafter", base)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    res = CliRunner().invoke(main, ["serve", "--tokenizer-dir", str(base), "--checkpoint-dir",
                                    str(checkpoint(base, drafter, 1)), "--device", "cuda"])
    assert res.exit_code == 2 and res.output == ("error: --device cuda requested but no CUDA device is available: use "
                                                 "--device cpu\n"), res.output


def test_cli_a_taken_port_is_refused_before_loading(tmp_path, monkeypatch):
    import socket

    from test_train_data import make_tokenizer
    from tinymodels import make_drafter, make_hf

    base = make_hf(tmp_path / "base", "llama", vocab_size=100)
    make_tokenizer(base)
    ckpt = checkpoint(base, make_drafter(tmp_path / "drafter", base), 1)

    def load(*args, **kwargs):
        raise AssertionError("loaded before the port was checked")
    monkeypatch.setattr(ReferenceBackend, "__init__", load)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        res = CliRunner().invoke(main, ["serve", "--checkpoint-dir", str(ckpt), "--tokenizer-dir", str(base),
                                        "--port", str(taken.getsockname()[1]), "--compile", "--max-output-len", "64"])
    assert res.exit_code == 2 and "pick another --port" in res.output and "compiling" not in res.output, res.output
    # so is a --max-output-len the model has no room for (at tp>1 it left the other ranks waiting: a hang)
    res = CliRunner().invoke(main, ["serve", "--checkpoint-dir", str(ckpt), "--tokenizer-dir", str(base), "--port", "0",
                                    "--max-output-len", "100000"])
    assert res.exit_code == 2 and "leaves no room for a prompt" in res.output, res.output


def test_cli_loads_the_tokenizer_once_and_refuses_another_models_before_the_port(tmp_path, smollm2, monkeypatch):
    """serve loaded --tokenizer-dir before the port (to check --chat-template-kwargs) and again in the backend: a
    0.2-0.4 s at start. Once now, checked against the checkpoint's vocab_size there, before the port is taken."""
    from redrafter_trt import serve_app, serve_http, tokens
    from redrafter_trt.errors import ConfigError
    from test_train_data import make_tokenizer
    from tinymodels import make_drafter, make_hf

    base = make_hf(tmp_path / "base", "llama", vocab_size=100)
    make_tokenizer(base)
    ckpt = checkpoint(base, make_drafter(tmp_path / "drafter", base), 1)
    loads, real = [], tokens.auto_tokenizer

    def counted(*args, **kwargs):
        loads.append(args[0])
        return real(*args, **kwargs)

    def app(*args, **kwargs):
        raise ConfigError("reached the app")
    monkeypatch.setattr(tokens, "auto_tokenizer", counted)
    monkeypatch.setattr(serve_app, "App", app)
    res = CliRunner().invoke(main, ["serve", "--checkpoint-dir", str(ckpt), "--tokenizer-dir", str(base), "--port",
                                    "0", "--chat-template-kwargs", "{}"])
    assert res.exit_code == 2 and "reached the app" in res.output, res.output
    assert loads == [str(base)]

    def bound(*args, **kwargs):
        raise ConfigError("reached the port")
    monkeypatch.setattr(serve_http, "make_server", bound)
    res = CliRunner().invoke(main, ["serve", "--checkpoint-dir", str(ckpt), "--tokenizer-dir", str(smollm2)])
    assert res.exit_code == 2 and "has 49152 tokens but the model's vocab_size is 100" in res.output, res.output


@pytest.mark.parametrize("busy", [False, True], ids=["idle", "mid-generation"])
@pytest.mark.long
def test_cli_serves_until_sigterm(smollm2, smol_ckpt, busy):
    """The real command in its own process: prints its address, answers, stops cleanly on SIGTERM (`kill`), also
    while a long answer is streaming (torch must not be torn down mid-step)."""
    proc = subprocess.Popen([sys.executable, "-m", "redrafter_trt", "serve", "--checkpoint-dir", str(smol_ckpt),
                             "--tokenizer-dir", str(smollm2), "--port", "0", "--max-output-len", "400",
                             "--shutdown-grace", "300"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        address = re.search(r"(http://[\d.:]+)/v1", line)
        assert address, (line, proc.stderr.read() if proc.poll() is not None else "")
        status, out = call(address.group(1), "/v1/completions", {"prompt": "Hello", "max_tokens": 4})
        assert status == 200 and out["usage"]["completion_tokens"] <= 4
        if busy:
            host, port = address.group(1).removeprefix("http://").split(":")
            import socket

            body = json.dumps({"prompt": "Write a long story.", "max_tokens": 160, "stream": True,
                               "ignore_eos": True, "stream_options": {"include_usage": True}}).encode()
            sock = socket.create_connection((host, int(port)), timeout=60)
            sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: "
                         + str(len(body)).encode() + b"\r\n\r\n" + body)
            got = b""
            while got.count(b"data: ") < 2:  # recv gives b"" at once, forever, once the server has closed
                got += (chunk := sock.recv(4096))
                assert chunk, got
    finally:
        proc.send_signal(signal.SIGTERM)
        if busy:  # while the answer in flight finishes, a new connection is answered at once: 503, retry later
            # once the server has taken the SIGTERM (it says so): a fixed 1 s sleep raced it on a loaded machine
            assert proc.stdout.readline().startswith("stopping"), proc.stderr.read()
            status, late = call(address.group(1), "/v1/completions", {"prompt": "Hello", "max_tokens": 4})
        rest, err = proc.communicate(timeout=300)
    assert proc.returncode == 0 and "stopped" in rest, (proc.returncode, err[-2000:])
    if busy:  # the answer in flight finished within the grace
        assert status == 503 and "shutting down" in late["error"]["message"]
        while chunk := sock.recv(4096):
            got += chunk
        sock.close()
        assert got.rstrip().endswith(b"data: [DONE]") and b'"finish_reason": "length"' in got
        assert b'"completion_tokens": 160' in got


@pytest.fixture(scope="module")
def tp3_backend(smollm2):
    """SmolLM2 split for tp 3 (3 kv heads), served by this process (rank 0) and two follower processes."""
    backend = ReferenceBackend(checkpoint(smollm2, fresh_drafter(smollm2), 3, num_beams=3, draft_len=3), smollm2)
    yield backend
    backend.stop()
    assert [p.exitcode for p in backend.scheduler.ranks.procs] == [0, 0]  # followers left when told to


@pytest.mark.long
def test_tp3_server_answers_as_tp1_and_survives_a_client_leaving(tp3_backend, backend):
    tp1, tp3 = App(backend, "smol", 12), App(tp3_backend, "smol", 12)
    body = {"prompt": ["The capital of France is", "List three colors:"], "stop": ["\n\n", " is"]}
    status, want = tp1.post("/v1/completions", body)
    assert status == 200 and {c["finish_reason"] for c in want["choices"]} == {"stop"}  # both stop strings cut
    status, got = tp3.post("/v1/completions", body)
    assert status == 200 and got["choices"] == want["choices"]
    assert got["usage"] == want["usage"] and got["redrafter"] == want["redrafter"]

    sent = []

    def leave_after_two(event):  # a streaming client that hangs up mid-answer
        sent.append(event)
        if len(sent) == 2:
            raise ClientGone

    with pytest.raises(ClientGone):
        tp3.post("/v1/chat/completions", {"messages": [{"role": "user", "content": "Tell me a story."}],
                                          "stream": True}, leave_after_two)
    assert len(sent) == 2
    status, again = tp3.post("/v1/completions", body)  # every rank left that request at the same step
    assert status == 200 and again["choices"] == want["choices"]
    scored = body | {"echo": True, "logprobs": 3, "max_tokens": 2}  # the prompts scored on every rank, then decoded
    got, want = (app.post("/v1/completions", scored)[1]["choices"] for app in (tp3, tp1))
    assert [c["text"] for c in got] == [c["text"] for c in want]
    assert sum((c["logprobs"]["token_logprobs"][1:] for c in got), []) == pytest.approx(
        sum((c["logprobs"]["token_logprobs"][1:] for c in want), []), abs=1e-4)


@pytest.mark.long
@pytest.mark.parametrize("event", ["ctrl-c", "sigterm-group", "follower-killed"])
def test_cli_tp3_stops_on_ctrl_c_and_exits_when_a_rank_dies(smollm2, event):
    """Ctrl-C (and systemd's SIGTERM) reach every process of the group: the followers ignore them, rank 0 ends the
    answer in flight and lets them go (exit 0). A follower killed mid-answer ends the server (exit 1, says which
    rank) instead of a hang."""
    import os
    import time

    ckpt = checkpoint(smollm2, fresh_drafter(smollm2), 3, num_beams=3, draft_len=3)
    proc = subprocess.Popen([sys.executable, "-m", "redrafter_trt", "serve", "--checkpoint-dir", str(ckpt),
                             "--tokenizer-dir", str(smollm2), "--port", "0", "--max-output-len", "400",
                             "--shutdown-grace", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        line = proc.stdout.readline()
        address = re.search(r"http://([\d.]+):(\d+)/v1", line)
        assert address and "tp 3" in line, (line, proc.stderr.read() if proc.poll() is not None else "")
        import socket

        body = json.dumps({"prompt": "Write a long story.", "max_tokens": 400, "stream": True}).encode()
        sock = socket.create_connection((address.group(1), int(address.group(2))), timeout=60)
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: "
                     + str(len(body)).encode() + b"\r\n\r\n" + body)
        got = b""
        while got.count(b"data: ") < 2:  # recv gives b"" at once, forever, once the server has closed
            got += (chunk := sock.recv(4096))
            assert chunk, got
        followers = [int(p) for p in subprocess.run(["pgrep", "-f", "-P", str(proc.pid), "multiprocessing.spawn"],
                                                    capture_output=True, text=True).stdout.split()]
        assert len(followers) == 2
        if event != "follower-killed":
            os.killpg(proc.pid, signal.SIGINT if event == "ctrl-c" else signal.SIGTERM)
        else:
            os.kill(followers[-1], signal.SIGKILL)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    while chunk := sock.recv(4096):
        got += chunk
    sock.close()
    if event != "follower-killed":
        assert proc.returncode == 0 and "stopped" in out, err[-2000:]
        assert got.rstrip().endswith(b"data: [DONE]") and b'"finish_reason": "abort"' in got  # no grace: cut
    else:
        assert proc.returncode == 1 and "exited (code -9) while serving" in err, err[-2000:]
    def running(pid: int) -> bool:  # a zombie waiting for init to reap it counts as gone
        state = subprocess.run(["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True).stdout.strip()
        return bool(state) and not state.startswith("Z")

    deadline = time.time() + 30
    while any(map(running, followers)) and time.time() < deadline:
        time.sleep(0.5)
    assert not any(map(running, followers))


@pytest.mark.long  # processes or signals: setup.cfg's `long` job (.ci/run)
def test_cli_tp3_on_a_taken_port_is_a_one_line_error(smollm2):
    import socket

    ckpt = checkpoint(smollm2, fresh_drafter(smollm2), 3, num_beams=3, draft_len=3)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        res = subprocess.run([sys.executable, "-m", "redrafter_trt", "serve", "--checkpoint-dir", str(ckpt),
                              "--tokenizer-dir", str(smollm2), "--port", str(taken.getsockname()[1])],
                             capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and "pick another --port" in res.stderr + res.stdout
    assert "while serving" not in res.stderr and "Traceback" not in res.stderr, res.stderr[-2000:]


def test_requests_join_the_running_batch_and_answer_as_alone(backend):
    """Three requests arrive while another is decoding: they join its batch between two steps (in-flight batching)
    and each still gets exactly its answer alone: its own max_tokens, stop strings and steps. A client leaving ends
    only its rows; a request asking for more tokens than the running batch waits for the next batch."""
    app = App(backend, "smol", 12)
    bodies = [{"prompt": "The capital of France is", "max_tokens": 10},
              {"prompt": ["List three colors:", "Name a planet."], "max_tokens": 5},
              {"prompt": "Count to ten: one, two,", "max_tokens": 10, "stop": [" five"]},
              {"prompt": "Once upon a time", "max_tokens": 10, "stream": True},
              {"prompt": "Tell me a joke.", "max_tokens": 12}]
    solo = [0, 1, 2, 4]
    alone = {}
    for i in solo:  # one at a time
        assert backend.wait_idle(60)
        alone[i] = app.post("/v1/completions", bodies[i], lambda e: None)
    assert backend.wait_idle(60)
    sizes, joined, paused, go, real = [], [], threading.Event(), threading.Event(), backend.scheduler.ranks.generate

    def generate(prompt_ids, *args, admit, **kwargs):
        sizes.append(len(prompt_ids))

        calls = []

        def slow_admit(running):
            calls.append(running)
            if len(sizes) == 1 and len(calls) == 2:  # two steps in, the first request still runs
                assert running == 1
                paused.set()
                go.wait(60)  # while the others queue up
            new = admit(running)
            joined.extend(new)
            return new
        return real(prompt_ids, *args, admit=slow_admit, **kwargs)

    answers, sent = {}, []

    def leave(event):  # the streaming client hangs up after its first text
        if event is None:  # the stream opens
            return
        sent.append(event)
        if len(sent) == 2:
            raise ClientGone

    def post(i):
        try:
            answers[i] = app.post("/v1/completions", bodies[i], leave)
        except ClientGone:
            answers[i] = "gone"

    backend.scheduler.ranks.generate = generate
    try:
        threads = [threading.Thread(target=post, args=(i,)) for i in range(5)]
        threads[0].start()
        assert paused.wait(60)
        for n, t in enumerate(threads[1:], 1):  # queued in this order
            t.start()
            while len(backend.scheduler.waiting) < n:
                threading.Event().wait(0.01)
        go.set()
        for t in threads:
            t.join(120)
    finally:
        backend.scheduler.ranks.generate = real
    assert sizes == [1, 1] and len(joined) == 2 + 1 + 1  # the 12-token request waited for a batch of its own
    for i in solo:
        assert answers[i][0] == 200 and answers[i][1]["choices"] == alone[i][1]["choices"]
        assert answers[i][1]["usage"] == alone[i][1]["usage"] and answers[i][1]["redrafter"] == alone[i][1]["redrafter"]
    assert answers[2][1]["choices"][0]["finish_reason"] == "stop"
    assert answers[3] == "gone" and len(sent) == 2, sent


def test_scheduler_batches_greedy_requests_only_and_within_max_batch():
    from collections import deque
    from types import SimpleNamespace

    from redrafter_trt.serve_jobs import Job
    from redrafter_trt.serve_scheduler import Scheduler

    jobs = [Job([[1]] * n, 4, t, 0, []) for n, t in [(2, 0.0), (1, 0.7), (3, 0.0), (4, 0.0), (1, 0.0), (1, 0.7)]]
    fake = SimpleNamespace(waiting=deque(jobs), max_batch=6, config=SimpleNamespace(max_positions=512))
    fake._take = lambda room, batch, running=False: Scheduler._take(fake, room, batch, running)
    taken = []
    while fake.waiting:
        taken.append([jobs.index(j) for j in Scheduler._next_batch(fake)])
    # first come, first served: sampled requests alone (their seed decides), at most 6 prompts, none overtaken
    assert taken == [[0], [1], [2], [3, 4], [5]]
    running = Job([], 4, 0.0, 0, [])
    fake.waiting = deque([Job([[1]], 4, 0.0, 0, []), Job([[1]], 8, 0.0, 0, []), Job([[1]], 4, 0.0, 0, [])])
    assert [j.max_tokens for j in Scheduler._take(fake, 2, running, True)] == [4]  # the 8-token one is not overtaken
    assert [j.max_tokens for j in fake.waiting] == [8, 4]
    # each request taken uses up its prompts' room: five 1-prompt requests, max_batch 3 -> 3 of them
    fake.waiting = deque([Job([[1]], 4, 0.0, 0, []) for _ in range(5)])
    fake.max_batch = 3
    assert sum(len(j.prompts) for j in Scheduler._next_batch(fake)) == 3
    fake.max_batch = 6
    # logprobs: a request joins only a batch computing at least as many
    fake.waiting = deque([Job([[1]], 4, 0.0, 0, [], None), Job([[1]], 4, 0.0, 0, [], 0), Job([[1]], 4, 0.0, 0, [], 2)])
    assert [j.logprobs for j in Scheduler._take(fake, 3, running, True)] == [None]
    assert [j.logprobs for j in Scheduler._take(fake, 3, Job([], 4, 0.0, 0, [], 1), True)] == [0]
    assert [j.logprobs for j in Scheduler._take(fake, 3, Job([], 4, 0.0, 0, [], 2), True)] == [2]
    # ignore_eos: requests batch only with their own kind (the batch's EOS rule is one), first come, first served
    kinds = [False, True, True, False, True]
    jobs = [Job([[1]], 4, 0.0, 0, [], ignore_eos=k) for k in kinds]
    fake.waiting = deque(jobs)
    taken = []
    while fake.waiting:
        taken.append([jobs.index(j) for j in Scheduler._next_batch(fake)])
    assert taken == [[0], [1, 2], [3], [4]]
    fake.waiting = deque([Job([[1]], 4, 0.0, 0, [], ignore_eos=True)])
    assert Scheduler._take(fake, 3, running, True) == [] and len(fake.waiting) == 1
    # positions: a new batch runs to its longest prompt + its largest max_tokens (each fits alone)
    fake.waiting = deque([Job([[1] * 500], 10, 0.0, 0, []), Job([[1]], 64, 0.0, 0, []), Job([[1]], 12, 0.0, 0, [])])
    assert [len(j.prompts[0]) for j in Scheduler._next_batch(fake)] == [500]
    assert [j.max_tokens for j in Scheduler._next_batch(fake)] == [64, 12]


def test_an_answer_ending_on_eos_under_ignore_eos_finishes_for_its_length():
    """Under ignore_eos, EOS ends nothing: an answer whose last token happens to be EOS ran to its max_tokens."""
    from types import SimpleNamespace

    from redrafter_trt.serve_jobs import Job, Row
    from redrafter_trt.serve_scheduler import Scheduler

    EOS = 2
    for ignore_eos, reason in [(False, "stop"), (True, "length")]:
        job = Job([[1]], 3, 0.0, 0, [], ignore_eos=ignore_eos)
        text = SimpleNamespace(ids=[5, 6, EOS], text="ab", stopped=False, finish=lambda: "",
                               logprobs=lambda everything=False: [])
        job.rows = [Row(job, 0, text, steps=2)]
        fake = SimpleNamespace(eos={EOS}, unanswered=[job])
        fake._stops = lambda job: Scheduler._stops(fake, job)
        Scheduler._answer(fake, job)
        assert [c.finish_reason for c in job.choices] == [reason] and fake.unanswered == []


def test_max_output_len_must_leave_room_for_a_prompt(backend):
    from redrafter_trt.errors import ConfigError

    with pytest.raises(ConfigError, match="8192 positions"):
        App(backend, "smol", 8192)


def test_shutdown_refuses_the_prompts_a_request_never_started(tmp_path):
    """Max batch 1, three prompts: the server stops while the first decodes; it ends at its next step and the
    request, whose other two prompts never started, gets the shutting-down error, not two answers of three."""
    from test_train_data import make_tokenizer
    from tinymodels import make_drafter, make_hf

    from redrafter_trt.serve_errors import SHUTTING_DOWN, RequestError

    base = make_hf(tmp_path / "base", "llama", vocab_size=100)  # the character tokenizer's 99 tokens, padded
    make_tokenizer(base)
    backend = ReferenceBackend(checkpoint(base, make_drafter(tmp_path / "drafter", base), 1, num_beams=2,
                                          draft_len=2), base, max_batch=1)
    stopper = threading.Thread(target=backend.stop)

    def stop_at_first_text(i, text, values, made):
        if not stopper.is_alive() and stopper.ident is None:
            stopper.start()

    with pytest.raises(RequestError, match=SHUTTING_DOWN):
        backend.complete([[5, 6, 7]] * 3, 500, None, 0, [], stop_at_first_text)
    stopper.join()


@pytest.mark.long
def test_compiled_server_answers_as_the_eager_one_without_compiling_again(tmp_path):
    """`serve --compile`: the base's layers compiled at start for one prompt and for several; requests then decode in
    batches of 1 to 4 prompts, joining and leaving, and answer exactly as the eager server, with nothing compiled
    after the start (a kind compiled on a request's arrival would stall it for minutes on a real model)."""
    from concurrent.futures import ThreadPoolExecutor

    import torch._dynamo.utils
    from test_train_data import make_tokenizer
    from tinymodels import make_drafter, make_hf

    base = make_hf(tmp_path / "base", "llama", vocab_size=100)
    make_tokenizer(base)
    ckpt = checkpoint(base, make_drafter(tmp_path / "drafter", base), 1, num_beams=2, draft_len=2)
    eager = ReferenceBackend(ckpt, base, max_batch=4)
    compiled = ReferenceBackend(ckpt, base, max_batch=4, compile=True)
    assert compiled.scheduler.ranks.model.base.compiled is not None
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    bodies = [{"prompt": "abc", "max_tokens": 9}, {"prompt": ["hello", "xy z", "q"], "max_tokens": 7},
              {"prompt": "Once upon", "max_tokens": 12}, {"prompt": "0123456789", "max_tokens": 5}]
    answers = []
    try:
        for backend in (eager, compiled):
            app = App(backend, "tiny", 12)
            for body in bodies:  # one at a time, then all at once (a batch, the later ones joining it)
                answers.append(app.post("/v1/completions", body))
            with ThreadPoolExecutor(len(bodies)) as pool:
                answers.extend(pool.map(lambda b: app.post("/v1/completions", b), bodies))
            assert backend.wait_idle(60)
    finally:
        eager.stop()
        compiled.stop()
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == graphs
    texts = [[c["text"] for c in out["choices"]] for status, out in answers]
    assert all(status == 200 for status, _ in answers)
    assert texts[8:] == texts[:8] and texts[:4] == texts[4:8] and len({t for ts in texts for t in ts}) > 3


LEFT_RUNNING = """
import atexit, sys
from redrafter_trt.serve_backend import ReferenceBackend
# registered first, so run last (atexit is last in, first out): after the backend's own exit handler
atexit.register(lambda: print("scheduler alive at exit:", backend.scheduler.thread.is_alive(), flush=True))
backend = ReferenceBackend(sys.argv[1], sys.argv[2])
print(backend.complete([backend.encode("Hello")], 4, 0.0, 0, [])[0].text, flush=True)
"""


@pytest.mark.long
def test_a_backend_left_running_is_stopped_before_the_interpreter_exits(smollm2, smol_ckpt):
    """A script ending right after its last answer was aborted at exit about one run in six ("terminate called
    without an active exception", exit 134): the scheduler thread was still computing as the interpreter finalised.
    The backend now stops itself at exit, before finalisation."""
    proc = subprocess.run([sys.executable, "-c", LEFT_RUNNING, str(smol_ckpt), str(smollm2)], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "scheduler alive at exit: False" in proc.stdout, proc.stdout


def test_a_stream_whose_client_stopped_reading_is_given_up_as_a_client_gone():
    """A review: a write timing out (a client that read nothing for Handler.timeout seconds, its socket buffers
    full) raised TimeoutError out of the stream: the request was logged as failed with a traceback and its error
    event written for another timeout; like a broken pipe, the client is gone now (its rows stop, the connection
    closes)."""
    from types import SimpleNamespace

    from redrafter_trt.serve_http import Handler

    class Stalled:
        def write(self, data):
            raise TimeoutError("timed out")

        flush = write

    handler = SimpleNamespace(wfile=Stalled(), streaming=True, close_connection=False)
    handler._write = lambda text: Handler._write(handler, text)
    assert Handler._write(handler, "data: [DONE]\n\n") is False and handler.close_connection
    with pytest.raises(ClientGone):
        Handler._event(handler, {"choices": []})


def test_a_batch_that_requests_keep_joining_keeps_nothing_of_those_answered(tmp_path):
    """A review: a running batch kept every row that ever joined it (the server's text and logprobs of each answer,
    the decoding loop's tokens and logprobs) until the batch ended, which under steady load it never does: memory
    grew by every request answered. Five short requests join a long one and are answered; while the long one still
    decodes, nothing of theirs is held."""
    import gc
    import weakref

    from test_train_data import make_tokenizer
    from tinymodels import make_drafter, make_hf

    base = make_hf(tmp_path / "base", "llama", vocab_size=100)  # the character tokenizer's 99 tokens, padded
    make_tokenizer(base)
    backend = ReferenceBackend(checkpoint(base, make_drafter(tmp_path / "drafter", base), 1, num_beams=2,
                                          draft_len=2), base, max_batch=2)
    real, decoded, served, ask, seen = backend.scheduler.ranks.generate, [], [], threading.Event(), []

    def generate(prompts, *args, on_tokens, admit, **kwargs):
        def hear(r, new, values):
            if r > 0:  # a short request's row: the decoding loop's own logprobs
                decoded.extend(map(weakref.ref, values))
            return on_tokens(r, new, values)

        def admit_slowly(running):
            if len(seen) < 2:  # until seen twice (the long request's other steps go at full speed: no gc each)
                if ask.is_set():  # the short ones answered, the long one decoding: what is still held a step later?
                    gc.collect()  # (a step's own logprobs are held until the next one)
                    seen.append((running, sum(w() is not None for w in decoded), sum(w() is not None for w in served)))
                threading.Event().wait(0.02)  # the long request's steps, slowed down: it outlives the short ones
            return admit(running)
        return real(prompts, *args, on_tokens=hear, admit=admit_slowly, **kwargs)

    backend.scheduler.ranks.generate = generate
    try:
        long = threading.Thread(target=backend.complete, args=([[5, 6, 7]], 150, None, 0, []),
                                kwargs={"logprobs": 1, "ignore_eos": True})
        long.start()
        while not backend.scheduler.busy:
            threading.Event().wait(0.01)
        for i in range(5):
            (choice,) = backend.complete([[8 + i, 9]], 3, None, 0, [], logprobs=1, ignore_eos=True)
            served.extend(map(weakref.ref, choice.logprobs))
            del choice
        ask.set()
        long.join(120)
    finally:
        backend.scheduler.ranks.generate = real
        backend.stop()
    (running, in_decode, in_server) = seen[1]
    assert running == 1 and decoded and served  # asked while the long request alone decoded
    # the decoding loop holds the last prefill's lists until the next prompt joins: the last request's 3 at most
    assert in_decode <= 3 and in_server == 0


def test_a_prompt_near_the_context_joining_a_longer_batch_is_no_warning(tmp_path, caplog):
    """A prompt 2 positions short of the model's 512 asking for 2 tokens, joining a running request of 150: the
    log warned 'an admitted 510-token prompt + 150 new tokens exceed the model's 512 positions: it emits at most 2
    new tokens', the batch's max_tokens taken for the row's own, though the request got all it asked (found by hand
    on SmolLM2). The row joins with its own max_tokens: no warning, its 2 tokens (a genuine cut still warns:
    test_runtime_decode)."""
    from test_train_data import make_tokenizer
    from tinymodels import make_drafter, make_hf

    base = make_hf(tmp_path / "base", "llama", vocab_size=100)
    make_tokenizer(base)
    backend = ReferenceBackend(checkpoint(base, make_drafter(tmp_path / "drafter", base), 1, num_beams=2,
                                          draft_len=2), base, max_batch=2)
    real, sizes = backend.scheduler.ranks.generate, []

    def generate(prompts, *args, admit, **kwargs):
        def admit_slowly(running):
            threading.Event().wait(0.02)  # the long request's steps, slowed down: the near-limit one joins it
            new = admit(running)
            sizes.extend(len(j.ids) for j in new)
            return new
        return real(prompts, *args, admit=admit_slowly, **kwargs)

    backend.scheduler.ranks.generate = generate
    try:
        long = threading.Thread(target=backend.complete, args=([[5, 6, 7]], 150, None, 0, []),
                                kwargs={"ignore_eos": True})
        long.start()
        while not backend.scheduler.busy:
            threading.Event().wait(0.01)
        with caplog.at_level("WARNING"):
            (choice,) = backend.complete([[5] * 510], 2, None, 0, [], ignore_eos=True)
        long.join(120)
    finally:
        backend.scheduler.ranks.generate = real
        backend.stop()
    assert 510 in sizes and len(choice.ids) == 2  # it joined the running batch, and got its 2 tokens
    assert "emits at most" not in caplog.text, caplog.text


def test_cli_the_default_max_output_len_fits_a_model_of_few_positions(tmp_path, monkeypatch):
    """A walkthrough on a tiny model of 512 positions: `serve --checkpoint-dir CKPT --tokenizer-dir BASE` refused to
    start (`--max-output-len 512 leaves no room for a prompt`) though no --max-output-len was given. The default is
    512 or, where fewer, what the positions leave after a one-token prompt; a value given is still checked."""
    from redrafter_trt import serve_http
    from redrafter_trt.errors import ConfigError
    from redrafter_trt.runtime import open_checkpoint
    from redrafter_trt.serve_app import serve_max_output_len
    from test_train_data import make_tokenizer
    from tinymodels import make_drafter, make_hf

    base = make_hf(tmp_path / "base", "llama", vocab_size=100)  # max_position_embeddings 512
    make_tokenizer(base)
    ckpt = checkpoint(base, make_drafter(tmp_path / "drafter", base), 1)
    cfg = open_checkpoint(ckpt).config
    assert cfg.max_positions == 512 and serve_max_output_len(cfg, 512, given=False) == 511
    assert serve_max_output_len(cfg, 64, given=False) == serve_max_output_len(cfg, 64, given=True) == 64
    with pytest.raises(ConfigError, match="leaves no room for a prompt"):
        serve_max_output_len(cfg, 512, given=True)

    def bound(*args, **kwargs):
        raise ConfigError("reached the port")
    monkeypatch.setattr(serve_http, "make_server", bound)
    res = CliRunner().invoke(main, ["serve", "--checkpoint-dir", str(ckpt), "--tokenizer-dir", str(base)])
    assert res.exit_code == 2 and "reached the port" in res.output, res.output
