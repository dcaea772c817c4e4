"""The official `openai` Python client (the oracle of OpenAI compatibility) against the reference server on a tiny
Llama with a character tokenizer: every answer parses into the client's typed models, greedy answers are
transformers' (streamed and not), the usage counts the tokenizer's tokens, and refusals raise the client's own
exceptions with the server's message, type and code."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time

import openai
import pytest
import torch
from openai.types import Completion
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from redrafter_trt.serve_app import App
from redrafter_trt.serve_http import make_server
from test_runtime_support import hf_greedy, hf_model, one_thread  # noqa: F401
from test_serve_protocol import new_backend, tiny  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")

MAX_OUTPUT = 16
ASK = [{"role": "user", "content": "Say hi."}]


@pytest.fixture(scope="module")
def served(tiny):  # noqa: F811
    backend = new_backend(tiny)
    server = make_server(App(backend, "tiny", max_output_len=MAX_OUTPUT), "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield backend, f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()
    backend.stop()


@pytest.fixture(scope="module")
def backend(served):
    return served[0]


@pytest.fixture(scope="module")
def client(served):
    return openai.OpenAI(base_url=served[1], api_key="x", max_retries=0, timeout=60)


def greedy(tiny, ids: list[int], max_tokens: int) -> tuple[str, list[int]]:  # noqa: F811
    """transformers' greedy answer (text without special tokens, token ids with the EOS that ended it)."""
    from transformers import AutoTokenizer

    want = hf_greedy(tiny[1], ids, max_tokens)
    return AutoTokenizer.from_pretrained(tiny[1]).decode(want, skip_special_tokens=True), want


def valid(answer):
    """The answer as its model validates it: the client only constructs its models from the JSON, checking nothing,
    so a field of the wrong type or a finish_reason OpenAI does not name would go unseen."""
    return type(answer).model_validate(answer.to_dict())


def valid_text_chunk(chunk: Completion) -> Completion:
    """A streamed completion's chunk, validated: before its end a choice's finish_reason is null, as in OpenAI's
    legacy stream, which the type the client parses those chunks into (Completion) does not allow: it is checked
    apart."""
    body = chunk.to_dict()
    for choice in body["choices"]:
        assert choice["finish_reason"] in ("stop", "length", None)
        choice["finish_reason"] = choice["finish_reason"] or "stop"
    Completion.model_validate(body)
    return chunk


def check_usage(usage, prompt_tokens: int, completion_tokens: int) -> None:
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (
        prompt_tokens, completion_tokens, prompt_tokens + completion_tokens)


def finish_of(want: list[int], backend, max_tokens: int) -> str:
    return "stop" if want[-1] in backend.eos or len(want) < max_tokens else "length"


def test_chat_parses_into_the_typed_answer_and_is_transformers_greedy(client, backend, tiny):  # noqa: F811
    ids = backend.encode_chat(ASK)
    text, want = greedy(tiny, ids, 12)
    before = int(time.time())
    for limit in ({"max_tokens": 12}, {"max_completion_tokens": 12}, {"max_tokens": 12, "max_completion_tokens": 12}):
        out = valid(client.chat.completions.create(model="tiny", messages=ASK, **limit))
        assert isinstance(out, ChatCompletion) and out.id.startswith("chatcmpl-")
        assert out.object == "chat.completion" and out.model == "tiny" and before - 1 <= out.created <= time.time()
        (choice,) = out.choices
        assert choice.index == 0 and choice.message.role == "assistant" and choice.message.content == text
        assert choice.finish_reason == finish_of(want, backend, 12) and choice.logprobs is None
        check_usage(out.usage, len(ids), len(want))
        assert out.to_dict()["redrafter"]["steps"] >= 1  # our block beside usage stays readable


def test_chat_n_answers_greedy_and_stop(client, backend, tiny):  # noqa: F811
    ids = backend.encode_chat(ASK)
    text, want = greedy(tiny, ids, MAX_OUTPUT)
    out = valid(client.chat.completions.create(model="tiny", messages=ASK, n=2, max_tokens=MAX_OUTPUT))
    assert [c.index for c in out.choices] == [0, 1] and {c.message.content for c in out.choices} == {text}
    check_usage(out.usage, len(ids), 2 * len(want))
    stop = text[len(text) // 2:][:2]
    assert stop.strip(), text
    out = valid(client.chat.completions.create(model="tiny", messages=ASK, stop=stop, max_tokens=MAX_OUTPUT))
    assert out.choices[0].message.content == text[: text.index(stop)] and out.choices[0].finish_reason == "stop"
    assert out.usage.completion_tokens < len(want)


def test_seed_decides_a_sampled_answer_and_temperature_zero_is_greedy(client, backend, tiny):  # noqa: F811
    text = greedy(tiny, backend.encode_chat(ASK), 8)[0]
    original = backend.config
    backend.config = dataclasses.replace(original, greedy_search=False)
    try:
        def ask(**kw) -> str:
            out = client.chat.completions.create(model="tiny", messages=ASK, max_tokens=8, **kw)
            return out.choices[0].message.content

        assert ask(temperature=0) == text
        sampled = [ask(temperature=1.5, seed=s) for s in (1, 2, 3)]
        assert ask(temperature=1.5, seed=1) == sampled[0] and len(set(sampled)) > 1
    finally:
        backend.config = original


def test_chat_logprobs_parse_and_are_the_base_models(client, backend, tiny):  # noqa: F811
    ids = backend.encode_chat(ASK)
    out = valid(client.chat.completions.create(model="tiny", messages=ASK, max_tokens=10, logprobs=True,
                                               top_logprobs=2))
    content = out.choices[0].logprobs.content
    text, want = greedy(tiny, ids, 10)
    assert "".join(t.token for t in content) == out.choices[0].message.content == text
    with torch.no_grad():
        logits = hf_model(tiny[1])(torch.tensor([ids + want])).logits[0].double()
    lsm = torch.log_softmax(logits, -1)[len(ids) - 1:]
    for t, entry in enumerate(content):
        assert entry.bytes == list(entry.token.encode()) and len(entry.top_logprobs) == 2
        assert entry.logprob == pytest.approx(float(lsm[t, want[t]]), abs=1e-3)
        assert [e.logprob for e in entry.top_logprobs] == pytest.approx(lsm[t].topk(2).values.tolist(), abs=1e-3)
        assert entry.top_logprobs[0].token == entry.token  # greedy: the chosen token is the most likely


def test_streamed_chat_adds_up_to_the_answer_with_usage_last(client):
    body = {"model": "tiny", "messages": ASK, "max_tokens": MAX_OUTPUT, "logprobs": True, "top_logprobs": 1}
    whole = valid(client.chat.completions.create(**body))
    chunks = [valid(c) for c in client.chat.completions.create(**body, stream=True,
                                                               stream_options={"include_usage": True})]
    assert all(isinstance(c, ChatCompletionChunk) and c.object == "chat.completion.chunk" for c in chunks)
    assert {c.id for c in chunks} == {chunks[0].id} and {c.model for c in chunks} == {"tiny"}
    *parts, last = chunks
    assert last.choices == [] and last.usage == whole.usage and all(c.usage is None for c in parts)
    assert parts[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in parts) == whole.choices[0].message.content
    assert [c.choices[0].finish_reason for c in parts] == [None] * (len(parts) - 1) + [whole.choices[0].finish_reason]
    streamed = [t for c in parts if c.choices[0].logprobs for t in c.choices[0].logprobs.content]
    assert streamed == whole.choices[0].logprobs.content
    # as OpenAI and vLLM: a chunk without tokens (the role's) has null logprobs, not an empty content list
    assert parts[0].choices[0].logprobs is None
    assert all(c.choices[0].logprobs is None or c.choices[0].logprobs.content for c in parts)


def test_the_clients_stream_helper_accumulates_the_answer(client, backend, tiny):  # noqa: F811
    """chat.completions.stream() rebuilds the whole completion from the chunks (its get_final_completion refuses
    a "length" finish, so the answer is ended by a stop string)."""
    text = greedy(tiny, backend.encode_chat(ASK), MAX_OUTPUT)[0]
    body = {"model": "tiny", "messages": ASK, "max_tokens": MAX_OUTPUT, "stop": text[len(text) // 2:][:2], "n": 2}
    whole = valid(client.chat.completions.create(**body))
    with client.chat.completions.stream(**body, stream_options={"include_usage": True}) as stream:
        final = valid(stream.get_final_completion())
    assert [(c.index, c.message.content, c.finish_reason) for c in final.choices] == [
        (c.index, c.message.content, c.finish_reason) for c in whole.choices]
    assert final.usage == whole.usage and final.id.startswith("chatcmpl-")


def test_an_error_after_the_stream_opened_raises_the_clients_api_error(client, backend, monkeypatch):
    from redrafter_trt.serve_errors import SHUTTING_DOWN, Unavailable

    def shutting_down(*_, **__):
        raise Unavailable(SHUTTING_DOWN)

    monkeypatch.setattr(backend, "complete", shutting_down)
    stream = client.chat.completions.create(model="tiny", messages=ASK, max_tokens=4, stream=True)
    with pytest.raises(openai.APIError) as e:
        list(stream)
    assert e.value.message == SHUTTING_DOWN and e.value.body["type"] == "service_unavailable"


def test_completions_prompts_echo_logprobs_and_stream(client, backend, tiny):  # noqa: F811
    prompts = ["abc", "Hello"]
    out = valid(client.completions.create(model="tiny", prompt=prompts, max_tokens=8))
    assert isinstance(out, Completion) and out.object == "text_completion" and out.id.startswith("cmpl-")
    answers = [greedy(tiny, backend.encode(p), 8) for p in prompts]
    assert [(c.index, c.text) for c in out.choices] == [(i, a[0]) for i, a in enumerate(answers)]
    check_usage(out.usage, sum(len(backend.encode(p)) for p in prompts), sum(len(a[1]) for a in answers))
    one = client.completions.create(model="tiny", prompt="abc", max_tokens=8, echo=True, logprobs=2)
    lp = one.choices[0].logprobs
    # the first prompt token's logprob is null, as OpenAI's API sent it (and lm-evaluation-harness reads it), which
    # the client's types (lists of float and of dict) do not allow: the rest is validated
    rest = one.to_dict()
    rest["choices"][0]["logprobs"] |= {k: v[1:] for k, v in rest["choices"][0]["logprobs"].items()}
    Completion.model_validate(rest)
    assert one.choices[0].text == "abc" + answers[0][0] and lp.token_logprobs[0] is None
    zero = client.completions.create(model="tiny", prompt="abc", max_tokens=0, echo=True, logprobs=1)  # lm-eval's
    assert zero.choices[0].text == "abc" and len(zero.choices[0].logprobs.tokens) == len(backend.encode("abc"))
    assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.text_offset) == len(backend.encode("abc")) + len(
        answers[0][1])  # as OpenAI's: the k most likely and the token itself (k + 1 when it is not among them)
    assert all(t in top and len(top) == 2 + (t not in list(top)[:2])
               for t, top in zip(lp.tokens[1:], lp.top_logprobs[1:]))
    assert all(one.choices[0].text[o:].startswith(t) for o, t in zip(lp.text_offset, lp.tokens) if t != "<|im_end|>")
    chunks = [valid_text_chunk(c) for c in client.completions.create(
        model="tiny", prompt=prompts, max_tokens=8, stream=True, stream_options={"include_usage": True})]
    assert all(isinstance(c, Completion) for c in chunks) and chunks[-1].usage == out.usage
    for choice in out.choices:
        mine = [c for chunk in chunks for c in chunk.choices if c.index == choice.index]
        assert "".join(c.text for c in mine) == choice.text and mine[-1].finish_reason == choice.finish_reason


def test_concurrent_async_clients_each_get_their_own_greedy_answer(served, backend, tiny):  # noqa: F811
    """AsyncOpenAI's requests sent at once over its pooled connections (joining one batch as they arrive): each
    answer is the one transformers gives its prompt alone."""
    asks = [[{"role": "user", "content": f"Count to {i}."}] for i in range(4)]

    async def all_at_once():
        async with openai.AsyncOpenAI(base_url=served[1], api_key="x", max_retries=0, timeout=60) as aclient:
            return await asyncio.gather(*(aclient.chat.completions.create(model="tiny", messages=m, max_tokens=8)
                                          for m in asks))

    answers = [valid(a) for a in asyncio.run(all_at_once())]
    assert [a.choices[0].message.content for a in answers] == [greedy(tiny, backend.encode_chat(m), 8)[0]
                                                               for m in asks]


def test_models_and_raw_responses(client):
    assert [valid(m).id for m in client.models.list()] == ["tiny"]
    assert valid(client.models.retrieve("tiny")).owned_by == "redrafter-trt"
    raw = client.chat.completions.with_raw_response.create(model="tiny", messages=ASK, max_tokens=2)
    assert raw.status_code == 200 and raw.headers["content-type"] == "application/json"
    valid(raw.parse())
    with client.chat.completions.with_streaming_response.create(model="tiny", messages=ASK, max_tokens=2,
                                                                stream=True) as r:
        assert r.headers["content-type"] == "text/event-stream"
        assert all(isinstance(valid(c), ChatCompletionChunk) for c in r.parse())


@pytest.mark.parametrize("extra, error, says, param", [
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]},
     openai.BadRequestError, '"tools" is not implemented by this server and would change the answer: start the '
                             'server with --tool-parser qwen3', "tools"),
    ({"presence_penalty": 0.5}, openai.BadRequestError, '"presence_penalty" is not implemented', "presence_penalty"),
    ({"model": "gpt-4o"}, openai.NotFoundError, "'gpt-4o' is not served here", None),
    ({"max_tokens": 10 ** 6}, openai.BadRequestError, "--max-output-len", "max_tokens"),
    ({"n": 0}, openai.BadRequestError, '"n" must be', "n"),
    ({"extra_body": {"temprature": 0.5}}, openai.BadRequestError, '"temprature" is not a field', None),
])
@pytest.mark.parametrize("stream", [False, True])
def test_refusals_raise_the_clients_errors_with_the_servers_message(client, extra, error, says, param, stream):
    """As OpenAI's: the message, the type, the code, and the field refused as `param` (null for an unknown field
    and another model, as OpenAI's)."""
    with pytest.raises(error) as e:
        client.chat.completions.create(**{"model": "tiny", "messages": ASK, "max_tokens": 2, "stream": stream} | extra)
    body = e.value.body
    assert e.value.status_code == (404 if error is openai.NotFoundError else 400)
    assert says in body["message"] and body["message"] in e.value.message
    assert "\n" not in body["message"] and e.value.type == "invalid_request_error"
    assert e.value.code == ("model_not_found" if error is openai.NotFoundError else None) and e.value.param == param
