"""`serve --reasoning-parser NAME`: a chat answer's thinking (<think>...</think>) split into `reasoning_content`, the
rest its content (tool calls parsed out of that rest). The parser on fixed texts, whole and streamed a character at
a time; then through the HTTP app and the official `openai` client with the backend's `complete` replaced by a
double that streams a fixed answer (the format layer only, as tests/test_serve_tools.py does)."""

from __future__ import annotations

import json
import threading

import pytest

from redrafter_trt.serve_app import App
from redrafter_trt.serve_http import make_server
from redrafter_trt.serve_reasoning import REASONING_PARSERS, Thinking, opened_by, parse_reasoning
from test_runtime_support import one_thread  # noqa: F401
from test_serve_tools import ASK, CALL, WEATHER, answering, backend, events_of, gathered, shown, tiny_qwen  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")

ANSWERS = {  # answer text -> {parser: (reasoning, content)}
    "thinking then answer": ("<think>\nLet me see: 2+2.\n</think>\n\nIt is 4.", {
        "qwen3": ("\nLet me see: 2+2.\n", "\n\nIt is 4."),
        "deepseek-r1": ("\nLet me see: 2+2.\n", "\n\nIt is 4.")}),  # a <think> written anyway is dropped
    "no closing tag": ("<think>\nHmm, 2+2 is", {
        "qwen3": ("\nHmm, 2+2 is", ""), "deepseek-r1": ("\nHmm, 2+2 is", "")}),
    "empty thinking": ("<think>\n\n</think>\n\nIt is 4.", {
        "qwen3": ("\n\n", "\n\nIt is 4."), "deepseek-r1": ("\n\n", "\n\nIt is 4.")}),
    "no think tags": ("It is 4 < 5.", {"qwen3": (None, "It is 4 < 5."), "deepseek-r1": ("It is 4 < 5.", "")}),
    "inside from the start": ("2+2 is 4.</think>It is 4.", {
        "qwen3": (None, "2+2 is 4.</think>It is 4."), "deepseek-r1": ("2+2 is 4.", "It is 4.")}),
    "text before thinking": ("Ok. <think>why</think> 4", {"qwen3": ("why", "Ok.  4"),
                                                           "deepseek-r1": ("Ok. <think>why", " 4")}),
    "a second block is content": ("<think>a</think>b<think>c</think>", {
        "qwen3": ("a", "b<think>c</think>"), "deepseek-r1": ("a", "b<think>c</think>")}),
    "a tag's start that is none": ("<thin</thi>", {"qwen3": (None, "<thin</thi>"), "deepseek-r1": ("<thin</thi>", "")}),
    "cut inside a tag": ("<thi", {"qwen3": (None, "<thi"), "deepseek-r1": ("<thi", "")}),
}


@pytest.mark.parametrize("parser", sorted(REASONING_PARSERS))
@pytest.mark.parametrize("case", ANSWERS)
def test_the_parser_splits_reasoning_and_content_whole_and_streamed(case, parser):
    """qwen3: content until <think>, reasoning to </think>, content after; without <think> all content (reasoning
    null); deepseek-r1: reasoning until </think> (all of it when it never comes). Streamed a character at a time,
    the deltas add up to the whole answer's parts, and no delta carries a part of a tag."""
    text, expected = ANSWERS[case]
    start = REASONING_PARSERS[parser]
    assert parse_reasoning(start, text) == expected[parser]
    thinking, reasoning, content = Thinking(start), [], []
    for ch in text:
        r, c = thinking.add(ch)
        reasoning.append(r)
        content.append(c)
    r, c = thinking.finish()
    reasoning.append(r)
    content.append(c)
    assert ("".join(reasoning) if thinking.thought else None, "".join(content)) == expected[parser]
    if case in ("thinking then answer", "empty thinking"):
        assert not any("<" in d or ">" in d for d in reasoning + content)


def test_the_prompts_end_decides_where_the_answer_starts():
    """Qwen3's template with enable_thinking false ends the prompt in an empty think block: the answer is content
    whatever the parser (deepseek-r1's would otherwise be all reasoning); one ending in <think> starts inside."""
    assert opened_by("<|im_start|>assistant\n<think>\n\n</think>\n\n") == "after"
    assert opened_by("<|im_start|>assistant\n<think>\n") == "opening"
    assert opened_by("<|im_start|>assistant\n") is None
    assert parse_reasoning("after", "<think>x</think>It is 4.") == (None, "<think>x</think>It is 4.")


THINK = "<think>\nThe user wants the weather.\n</think>\n\n"


def app(backend, reasoning_parser="qwen3", tool_parser=None):
    return App(backend, "tiny", max_output_len=16, tool_parser=tool_parser, reasoning_parser=reasoning_parser)


def streamed(app_: App, body: dict, i: int = 0) -> tuple[str, str, list[dict]]:
    """(reasoning, content, chunks) of answer i's stream."""
    mine = [c for e in events_of(app_, body | {"stream": True}) for c in e["choices"] if c["index"] == i]
    return ("".join(c["delta"].get("reasoning_content", "") for c in mine),
            "".join(c["delta"].get("content", "") for c in mine), mine)


@pytest.mark.parametrize("n", [1, 2])
def test_a_thinking_answer_comes_out_as_reasoning_content_whole_and_streamed(backend, monkeypatch, n):
    """The HTTP app: message.reasoning_content and content, the stream's deltas adding up to them, usage as
    without the parser (the thinking's tokens are completion tokens)."""
    monkeypatch.setattr(backend, "complete", answering(THINK + "It is sunny."))
    body = {"messages": ASK, "n": n, "stream_options": {"include_usage": True}}
    server = app(backend)
    status, answer = server.post("/v1/chat/completions", {k: v for k, v in body.items() if k != "stream_options"})
    assert status == 200
    for choice in answer["choices"]:
        assert choice["message"] == {"role": "assistant", "content": "\n\nIt is sunny.",
                                     "reasoning_content": "\nThe user wants the weather.\n"}
        assert choice["finish_reason"] == "stop"
    _, plain = app(backend, reasoning_parser=None).post("/v1/chat/completions", body | {"stream_options": None})
    assert answer["usage"] == plain["usage"] and plain["choices"][0]["message"]["content"] == THINK + "It is sunny."
    for i in range(n):
        reasoning, content, chunks = streamed(server, body, i)
        assert (reasoning, content) == ("\nThe user wants the weather.\n", "\n\nIt is sunny.")
        assert chunks[0]["delta"]["role"] == "assistant" and chunks[-1]["finish_reason"] == "stop"
    events = events_of(server, body | {"stream": True})
    assert events[-1]["usage"] == plain["usage"]


@pytest.mark.parametrize("parser, text, reasoning, content", [
    ("qwen3", "<think>\nWait </thi", "\nWait </thi", ""),  # cut by max_tokens in the thinking, in a tag's start
    ("qwen3", "It is 4 <thi", None, "It is 4 <thi"),
    ("deepseek-r1", "<thi", "<thi", ""),
])
def test_what_was_held_back_goes_out_when_the_answer_ends(backend, monkeypatch, parser, text, reasoning, content):
    monkeypatch.setattr(backend, "complete", answering(text, pieces=1))
    server = app(backend, parser)
    _, answer = server.post("/v1/chat/completions", {"messages": ASK})
    assert answer["choices"][0]["message"] == {"role": "assistant", "content": content, "reasoning_content": reasoning}
    assert streamed(server, {"messages": ASK})[:2] == (reasoning or "", content)


def test_thinking_off_in_the_prompt_is_content_and_completions_are_untouched(backend, monkeypatch):
    """chat_template_kwargs enable_thinking false (Qwen3's template renders an empty think block in the prompt):
    the answer is content, reasoning_content null, even with deepseek-r1; /v1/completions keeps its text."""
    monkeypatch.setattr(backend.tokenizer, "chat_template", QWEN3_THINKING_SWITCH)
    monkeypatch.setattr(backend, "complete", answering("It is sunny."))
    server = app(backend, "deepseek-r1")
    _, on = server.post("/v1/chat/completions", {"messages": ASK})
    assert on["choices"][0]["message"]["reasoning_content"] == "It is sunny."
    _, off = server.post("/v1/chat/completions", {"messages": ASK, "chat_template_kwargs": {"enable_thinking": False}})
    assert off["choices"][0]["message"] == {"role": "assistant", "content": "It is sunny.", "reasoning_content": None}
    monkeypatch.setattr(backend, "complete", answering(THINK + "x"))
    _, completion = server.post("/v1/completions", {"prompt": "Hi", "max_tokens": 4})
    assert completion["choices"][0]["text"] == THINK + "x" and "reasoning_content" not in completion["choices"][0]


# Qwen3's switch (its chat template's generation prompt, the rest ChatML)
QWEN3_THINKING_SWITCH = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n"
    "{% if enable_thinking is defined and enable_thinking is false %}<think>\n\n</think>\n\n{% endif %}{% endif %}")


def test_tool_calls_are_parsed_from_the_content_after_the_reasoning(backend, monkeypatch):
    """A call written inside the thinking is reasoning, not a call; the one after it is (as trtllm-serve and vLLM
    order the two parsers)."""
    monkeypatch.setattr(backend, "complete", answering("<think>\nMaybe " + CALL + "\n</think>\n\n" + CALL))
    server = app(backend, tool_parser="qwen3")
    body = {"messages": ASK, "tools": [WEATHER]}
    _, answer = server.post("/v1/chat/completions", body)
    (choice,) = answer["choices"]
    assert choice["message"]["reasoning_content"] == "\nMaybe " + CALL + "\n"
    assert choice["message"]["content"] is None and choice["finish_reason"] == "tool_calls"
    assert shown(choice["message"]["tool_calls"]) == [("get_weather", {"city": "Paris"})]
    reasoning, content, chunks = streamed(server, body)
    assert (reasoning, content) == ("\nMaybe " + CALL + "\n", "")
    calls = [t for c in chunks for t in c["delta"].get("tool_calls", [])]
    assert shown(gathered(calls)) == [("get_weather", {"city": "Paris"})]
    assert chunks[-1]["finish_reason"] == "tool_calls"


@pytest.fixture
def server(backend):
    server = make_server(app(backend), "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def test_the_openai_client_reads_reasoning_content_whole_and_streamed(server, backend, monkeypatch):
    """The official client keeps the extra field: message.reasoning_content, and each chunk's
    delta.reasoning_content."""
    openai = pytest.importorskip("openai")
    monkeypatch.setattr(backend, "complete", answering(THINK + "It is sunny."))
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{server.server_address[1]}/v1", api_key="x", max_retries=0)
    whole = client.chat.completions.create(model="tiny", messages=ASK)
    message = whole.choices[0].message
    assert message.content == "\n\nIt is sunny." and message.reasoning_content == "\nThe user wants the weather.\n"
    reasoning = content = ""
    for chunk in client.chat.completions.create(model="tiny", messages=ASK, stream=True):
        for choice in chunk.choices:
            reasoning += getattr(choice.delta, "reasoning_content", None) or ""
            content += choice.delta.content or ""
    assert (reasoning, content) == ("\nThe user wants the weather.\n", "\n\nIt is sunny.")
    kept = json.loads(whole.model_dump_json())["choices"][0]["message"]
    assert kept["reasoning_content"] == message.reasoning_content


def test_serve_gives_its_reasoning_parser_to_the_app(tiny_qwen, monkeypatch):
    """`serve --checkpoint-dir --reasoning-parser NAME` reaches the app (the model is not loaded: the app's
    construction is where this stops); an unknown name is refused by the option, naming the choices."""
    from click.testing import CliRunner

    from redrafter_trt.cli import main
    from redrafter_trt.errors import ConfigError
    from redrafter_trt.serve_backend import ReferenceBackend

    given = []

    def stop_here(self, *args, **kwargs):
        given.append(kwargs.get("reasoning_parser", args[5] if len(args) > 5 else None))
        raise ConfigError("stopped here")
    monkeypatch.setattr(ReferenceBackend, "__init__", lambda self, *a, **k: None)
    monkeypatch.setattr(ReferenceBackend, "stop", lambda self, *a, **k: None)
    monkeypatch.setattr(App, "__init__", stop_here)
    ckpt, base = tiny_qwen
    args = ["serve", "--checkpoint-dir", str(ckpt), "--tokenizer-dir", str(base), "--port", "0"]
    res = CliRunner().invoke(main, args + ["--reasoning-parser", "deepseek-r1"])
    assert res.exit_code == 2 and "stopped here" in res.output and given == ["deepseek-r1"], res.output
    res = CliRunner().invoke(main, args + ["--reasoning-parser", "deepseek_r1"])
    assert res.exit_code == 2 and "'deepseek-r1'" in res.output and "'qwen3'" in res.output, res.output


@pytest.mark.parametrize("key", ["reasoning_content", "reasoning"])
def test_an_earlier_answers_reasoning_content_reaches_the_chat_template(backend, monkeypatch, key):
    """A client sends an answer's reasoning_content back in its next request's messages (vLLM's newer name:
    reasoning); Qwen3's template renders it for the turns since the last user message (a tool-calling loop) from
    message.reasoning_content. It was dropped before the template, as vLLM hands it on; not a string is a 400."""
    reading = ("{% for m in messages %}{% if m.reasoning_content is string %}"
               "{{ raise_exception('thought ' + m.reasoning_content) }}{% endif %}{{ m.content }}{% endfor %}")
    monkeypatch.setattr(backend.tokenizer, "chat_template", reading)
    monkeypatch.setattr(backend, "complete", answering("x"))
    history = [*ASK, {"role": "assistant", "content": "It is sunny.", key: "Paris, June."}, *ASK]
    status, answer = app(backend).post("/v1/chat/completions", {"messages": history})
    assert status == 400 and "thought Paris, June." in answer["error"]["message"], answer
    history[1][key] = None  # null: a client's unset field
    assert app(backend).post("/v1/chat/completions", {"messages": history})[0] == 200
    history[1] |= {"content": None, key: "Hmm"}  # an answer cut inside its thinking, content null (as vLLM's)
    status, answer = app(backend).post("/v1/chat/completions", {"messages": history})
    assert status == 400 and "thought Hmm" in answer["error"]["message"], answer
    history[1][key] = ["Paris"]
    status, answer = app(backend).post("/v1/chat/completions", {"messages": history})
    assert status == 400 and f'"messages"[1]: "{key}" must be a string' in answer["error"]["message"], answer
    assert answer["error"]["param"] == f"messages.[1].{key}"  # the field sent ("reasoning_content" was named)
