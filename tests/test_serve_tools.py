"""`serve --tool-parser qwen3`: OpenAI tool calling on the reference server. Requests' `tools` are refused without
it (naming it) and checked with it; tools, assistant tool calls and tool results reach the chat template
(Qwen2.5-Instruct's real one, tests/fixtures/qwen2_5_instruct_chat_template.jinja, Apache-2.0 as its model); the
Hermes parser splits an answer into content and tool calls, whole or streamed. A tiny random model does not write
tool calls, so the answers' format is checked on fixed answer texts: the parser alone, and through the HTTP app
and the official `openai` client with the backend's `complete` replaced by a double that answers a fixed text
(only the format layer is under test there; one request runs the real model, for the prompt and the shape)."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from redrafter_trt.serve_app import App
from redrafter_trt.serve_errors import RequestError
from redrafter_trt.serve_http import make_server
from redrafter_trt.serve_jobs import Choice
from redrafter_trt.serve_request import parse, refuse_unsupported
from redrafter_trt.serve_tools import TOOL_PARSERS, parse_answer
from test_runtime_support import one_thread  # noqa: F401
from test_serve_protocol import new_backend, request

pytestmark = pytest.mark.usefixtures("one_thread")

QWEN25 = (Path(__file__).parent / "fixtures" / "qwen2_5_instruct_chat_template.jinja").read_text()
WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "The weather in a city.",
                                            "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                                                           "required": ["city"]}}}
ASK = [{"role": "user", "content": "Weather in Paris?"}]
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'


ANSWERS = {  # answer text -> (content, [(name, arguments)])
    "plain": ("It is sunny.", ("It is sunny.", [])),
    "one call": (CALL, (None, [("get_weather", {"city": "Paris"})])),
    "two calls": (CALL + "\n" + CALL.replace("Paris", "Lyon"),
                  (None, [("get_weather", {"city": "Paris"}), ("get_weather", {"city": "Lyon"})])),
    "text first": ("Let me check.\n" + CALL, ("Let me check.", [("get_weather", {"city": "Paris"})])),
    # bad JSON after the call was made (its name and the start of its arguments): the call stays, with the
    # arguments read until there, as a call cut short by max_tokens (a stream cannot take back what it sent)
    "malformed": ('<tool_call>\n{"name": "get_weather", "arguments": {"city": \n</tool_call>',
                  (None, [("get_weather", '{"city": ')])),
    "cut in the arguments": ('Sure.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Pa',
                             ("Sure.", [("get_weather", '{"city": "Pa')])),
    # cut right after a number or literal: the answer's end ends it, it is read (more text could have changed it)
    "cut after a number": ('<tool_call>{"name": "f", "arguments": {"n": 5', (None, [("f", '{"n": 5')])),
    "cut after a literal": ('<tool_call>{"name": "f", "arguments": {"n": true', (None, [("f", '{"n": true')])),
    "cut inside a number": ('<tool_call>{"name": "f", "arguments": {"n": 1e', (None, [("f", '{"n": ')])),
    # a number json.loads cannot give back as JSON (an int past Python's 4300 digits, a float past its range) is bad
    # JSON as any other, not a traceback
    "number too long": ('<tool_call>{"name": "f", "arguments": {"a": 1, "n": ' + "9" * 4301 + '}}</tool_call>',
                        (None, [("f", '{"a": 1, "n": ')])),
    "number too large": ('<tool_call>{"name": "f", "arguments": {"x": 1e400}}</tool_call>', (None, [("f", '{"x": ')])),
    # text in a call's block after its JSON object is content, as text after the block is (it was dropped unseen)
    "text after the object": ('<tool_call>\n{"name": "f", "arguments": {"a": 1}} Let me explain.\n</tool_call>',
                              ("Let me explain.", [("f", {"a": 1})])),
    # a start of </tool_call> in that text is text: only where the answer ended in it is it dropped
    "a tag's start after the object": ('<tool_call>\n{"name": "f", "arguments": {"a": 1}} x </tool_</tool_call>',
                                       ("x </tool_", [("f", {"a": 1})])),
    "the answer ended in a tag's start": ('<tool_call>\n{"name": "f", "arguments": {"a": 1}} x </tool_',
                                          ("x", [("f", {"a": 1})])),
    "a tag's start, other text after": ('<tool_call>\n{"name": "f", "arguments": {"a": 1}} x </tool_s',
                                        ("x </tool_s", [("f", {"a": 1})])),
    "two objects in a block": ('<tool_call>\n{"name": "f", "arguments": {}}\n{"name": "g", "arguments": {}}\n'
                               '</tool_call>', ('{"name": "g", "arguments": {}}', [("f", {})])),
    "unclosed, text after": ('Sure.\n<tool_call>\n{"name": "f"} and more', ("Sure. and more", [("f", {})])),
    # bad before that: no call was made, the block is content
    "malformed name": ('<tool_call>\n{"name": get_weather}\n</tool_call>',
                       ('<tool_call>\n{"name": get_weather}\n</tool_call>', [])),
    "string arguments": ('<tool_call>\n{"name": "f", "arguments": "x"}\n</tool_call>',
                         ('<tool_call>\n{"name": "f", "arguments": "x"}\n</tool_call>', [])),
    "array arguments": ('<tool_call>\n{"name": "f", "arguments": [1]}\n</tool_call>',
                        ('<tool_call>\n{"name": "f", "arguments": [1]}\n</tool_call>', [])),
    "array": ('<tool_call>\n[{"name": "f", "arguments": {}}]\n</tool_call>',
              ('<tool_call>\n[{"name": "f", "arguments": {}}]\n</tool_call>', [])),
    # the arguments as json.dumps(..., ensure_ascii=False) writes them, whatever the escapes, numbers and spaces
    "written otherwise": ('<tool_call>{"arguments":{"city":"\\u6771\\u4eac \\ud83c\\udf27\\/","n":1.50E1,"ok":'
                          'true,"l":[ ]},"name":"get_weather"}</tool_call>',
                          (None, [("get_weather", {"city": "東京 🌧/", "n": 15.0, "ok": True, "l": []})])),
    # an escaped backslash, then the letters ud83d (no surrogate) or a surrogate pair; the answer cut right after
    # them (the whole answer's block read to there before its end): the letters go out, the pair's first half waits
    "a backslash before ud83d": ('<tool_call>{"name": "f", "arguments": {"s": "x\\\\ud83d"}}</tool_call>',
                                 (None, [("f", {"s": "x\\ud83d"})])),
    "a backslash before a pair": ('<tool_call>{"name": "f", "arguments": {"s": "\\\\\\ud83d\\udf27"}}</tool_call>',
                                  (None, [("f", {"s": "\\\U0001f727"})])),
    "cut after a backslash and ud83d": ('<tool_call>{"name": "f", "arguments": {"s": "x\\\\ud83d',
                                        (None, [("f", '{"s": "x\\\\ud83d')])),
    "cut after a backslash and a half pair": ('<tool_call>{"name": "f", "arguments": {"s": "\\\\\\ud83d',
                                              (None, [("f", '{"s": "\\\\')])),
    "no arguments": ('<tool_call>\n{"name": "f"}\n</tool_call>', (None, [("f", {})])),
    "unicode": ('<tool_call>\n{"name": "get_weather", "arguments": {"city": "東京 🌧"}}\n</tool_call>',
                (None, [("get_weather", {"city": "東京 🌧"})])),
    "cut": ("Sure.\n<tool_call>\n{\"name\": \"get_we", ("Sure.\n<tool_call>\n{\"name\": \"get_we", [])),
    # text between calls: its parts keep the whitespace after the call between them, not glued together
    "text between": ("Let me check.\n" + CALL + "\nThen Lyon.\n" + CALL.replace("Paris", "Lyon") + "\n\nDone.",
                     ("Let me check.\nThen Lyon.\n\nDone.", [("get_weather", {"city": "Paris"}),
                                                         ("get_weather", {"city": "Lyon"})])),
    "spaces between": ("A " + CALL + " B", ("A B", [("get_weather", {"city": "Paris"})])),
    # "parameters" for "arguments" (trtllm-serve's parser takes either): the arguments are not lost
    "parameters": (CALL.replace('"arguments"', '"parameters"'), (None, [("get_weather", {"city": "Paris"})])),
    # an empty name calls nothing (trtllm-serve's parser makes no call of it either): the block stays content
    "empty name": ('<tool_call>\n{"name": "", "arguments": {}}\n</tool_call>',
                   ('<tool_call>\n{"name": "", "arguments": {}}\n</tool_call>', [])),
    # ended before </tool_call> (a stop string "</tool_call>", or EOS) with the call whole: a call, as vLLM's
    "unclosed": ("Sure.\n" + CALL.removesuffix("</tool_call>"), ("Sure.", [("get_weather", {"city": "Paris"})])),
}


def shown(calls: list[dict]) -> list[tuple[str, dict | str]]:
    """(name, arguments) of each call: arguments as their JSON reads, or their text where it was cut short (then the
    start of a JSON object), and the text json.dumps(..., ensure_ascii=False) writes of what it reads."""
    out = []
    for c in calls:
        assert c["type"] == "function" and c["id"].startswith("chatcmpl-tool-")
        text = c["function"]["arguments"]
        try:
            arguments = json.loads(text)
        except ValueError:
            assert text.startswith("{")
            arguments = text
        else:
            assert text == json.dumps(arguments, ensure_ascii=False)
        out.append((c["function"]["name"], arguments))
    return out


def gathered(deltas: list[dict]) -> list[dict]:
    """A stream's tool call deltas added up as OpenAI's clients do (by index), each checked to be as OpenAI, vLLM and
    trtllm-serve send them: a call's first delta its index, id, type and name with arguments "", before any other of
    it and after the earlier calls' first deltas; the others its index and a piece of its arguments alone."""
    calls: list[dict] = []
    for d in deltas:
        if d["index"] == len(calls):
            assert set(d) == {"index", "id", "type", "function"} and set(d["function"]) == {"name", "arguments"}
            assert d["function"]["arguments"] == "" and d["function"]["name"]
            calls.append({"id": d["id"], "type": d["type"], "function": dict(d["function"])})
        else:
            assert set(d) == {"index", "function"} and set(d["function"]) == {"arguments"} and d["index"] < len(calls)
            assert isinstance(d["function"]["arguments"], str) and d["function"]["arguments"]
            calls[d["index"]]["function"]["arguments"] += d["function"]["arguments"]
    return calls


@pytest.mark.parametrize("case", ANSWERS)
def test_the_qwen3_parser_splits_content_and_calls_whole_and_streamed(case):
    """Each <tool_call> block holding {"name", "arguments"} is a call (arguments as a JSON string, unicode kept);
    the text outside is the content, null beside calls when empty; a block that is no JSON object, or whose JSON
    goes bad or is cut by max_tokens before its name and the start of its arguments are read, stays content (after
    them: the call keeps the arguments read); a last block whole but for its </tool_call> is a call. Streamed a
    character at a time, the deltas add up to the same content and calls, and no delta carries a part of
    <tool_call> that turned out to be a call."""
    text, (content, calls) = ANSWERS[case]
    got, found = parse_answer("qwen3", text)
    assert (got, shown(found)) == (content, calls)
    assert len({c["id"] for c in found}) == len(found)
    if case == "unicode":
        assert "東京 🌧" in found[0]["function"]["arguments"]
    parser, deltas, streamed = TOOL_PARSERS["qwen3"](), [], []
    for ch in text:
        delta, new = parser.add(ch)
        deltas.append(delta)
        streamed += new
    delta, new = parser.finish()
    deltas.append(delta)
    streamed += new
    assert ("".join(deltas) or None if calls else "".join(deltas)) == content and shown(gathered(streamed)) == calls
    if calls and "<" not in (content or ""):
        assert not any("<" in d for d in deltas)


def test_a_call_goes_out_as_its_name_then_its_arguments_as_they_are_written():
    """A review: a streamed call went out as one delta once its </tool_call> came, where OpenAI, vLLM and
    trtllm-serve send its id and name as soon as they are known, then its arguments in pieces (clients show a call
    as it comes). Now its first delta goes out once its name and the "{" of its arguments are read, and each piece
    as soon as it is sure: what went out of the arguments is at every step the start of their final text (a number
    waits for its end, which may change it)."""
    call = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris", "days": 10}}\n</tool_call>'
    text = "Let me check.\n" + call
    parser, deltas, sent = TOOL_PARSERS["qwen3"](), [], {}
    for at in range(1, len(text) + 1):
        deltas += parser.add(text[at - 1])[1]
        sent[text[:at]] = [c["function"]["arguments"] for c in gathered(deltas)]
    deltas += parser.finish()[1]
    (whole,) = gathered(deltas)
    assert whole["function"] == {"name": "get_weather", "arguments": '{"city": "Paris", "days": 10}'}
    first = next(t for t, args in sent.items() if args)
    assert first.endswith('"arguments": {') and sent[first] == ["{"]
    assert all(whole["function"]["arguments"].startswith(args[0]) for args in sent.values() if args)
    upto = {part: sent[text[:text.index(part) + len(part)]] for part in ('"Par', '"days": 1', "10}}")}
    assert upto == {'"Par': ['{"city": "Par'], '"days": 1': ['{"city": "Paris", "days": '],
                    "10}}": ['{"city": "Paris", "days": 10}']}
    assert len(deltas) > 10 and [d["index"] for d in deltas] == [0] * len(deltas)


class Searched(str):
    """A parser's pending text that counts the characters its `find` searches."""
    chars = 0

    def find(self, sub, start=0, *args):
        Searched.chars += len(self) - start
        return super().find(sub, start, *args)


class CountingCalls(TOOL_PARSERS["qwen3"]):
    pending = property(lambda self: Searched(self.__dict__["pending"]),
                       lambda self, text: self.__dict__.__setitem__("pending", text))


@pytest.mark.parametrize("step", [1, 7])
def test_an_open_call_is_searched_for_its_end_once_not_on_every_delta(step):
    """A review: while a <tool_call> block was open, each delta searched the whole block from its start for
    </tool_call>: quadratic over a long call (a 20000-character one streamed a character at a time searched about
    200 million characters). Now each search starts where the last one left off, less a </tool_call> split over
    deltas."""
    text = "Sure.\n" + CALL.replace("Paris", "P" * 20000) + "\n" + CALL
    parser, content, found = CountingCalls(), "", []
    Searched.chars = 0
    for at in range(0, len(text), step):
        delta, new = parser.add(text[at:at + step])
        content, found = content + delta, found + new
    delta, new = parser.finish()
    assert (content + delta, shown(gathered(found + new))) == ("Sure.", [("get_weather", {"city": "P" * 20000}),
                                                                         ("get_weather", {"city": "Paris"})])
    assert Searched.chars <= 2 * len(CountingCalls.END) * len(text)  # the last END-length searched again per delta


def chat(body: dict, tool_parser: str | None = "qwen3"):
    """parse and refuse_unsupported as the app calls them, for a greedy checkpoint."""
    req = parse(body, True, "tiny", 16, tool_parser)
    refuse_unsupported(body, True, sampling=False, tools=tool_parser is not None)
    return req


HISTORY = [*ASK, {"role": "assistant", "content": None, "tool_calls": [
    {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "18C"}]


@pytest.mark.parametrize("body", [{"tools": [WEATHER]}, {"messages": HISTORY}])
def test_tools_without_the_parser_are_refused_naming_it(body):
    with pytest.raises(RequestError, match="--tool-parser qwen3") as e:
        chat({"messages": ASK} | body, tool_parser=None)
    assert "\n" not in str(e.value)


def test_completions_refuse_tools_as_any_field_the_parser_being_chats():
    """/v1/completions has no tool calls: its "tools" is refused as an unimplemented field, with or without
    --tool-parser, and not told to start the server with one."""
    for tools in (False, True):
        with pytest.raises(RequestError, match=r'"tools" is not implemented .*: leave it out \(or send \[\]\)$') as e:
            refuse_unsupported({"prompt": "hi", "tools": [WEATHER]}, False, sampling=False, tools=tools)
        assert e.value.param == "tools"


@pytest.mark.parametrize("tools, says", [
    ({"type": "function"}, r'"tools" must be a list of'),
    ([WEATHER, {"type": "function"}], r'"tools"\[1\] must be \{"type": "function"'),
    ([{"type": "code_interpreter", "function": WEATHER["function"]}], r'"tools"\[0\] must be'),
    ([{"type": "function", "function": {"name": 3}}], r'"tools"\[0\]: "function"."name" must be a string'),
    ([{"type": "function", "function": {"description": "x"}}], r'"tools"\[0\]: "function"."name" must be'),
    ([{"type": "function", "function": {"name": "f", "parameters": "{}"}}], r'"function"."parameters" must be a JSON'),
])
def test_bad_tool_shapes_are_named_by_param(tools, says):
    with pytest.raises(RequestError, match=says) as e:
        chat({"messages": ASK, "tools": tools})
    assert e.value.param == "tools"


def test_tool_choice_none_and_auto_are_taken_others_refused_and_logprobs_with_parsed_tools():
    assert chat({"messages": ASK, "tools": [WEATHER]}).tool_parser == "qwen3"
    assert chat({"messages": ASK, "tools": [WEATHER], "tool_choice": "auto"}).tool_parser == "qwen3"
    none = chat({"messages": ASK, "tools": [WEATHER], "tool_choice": "none"})
    assert none.tools == (WEATHER,) and none.tool_parser is None  # the template sees them; nothing is parsed
    for choice in ("required", {"type": "function", "function": {"name": "get_weather"}}):
        with pytest.raises(RequestError, match='"tool_choice" is not implemented'):
            chat({"messages": ASK, "tools": [WEATHER], "tool_choice": choice})
    with pytest.raises(RequestError, match='"logprobs" with "tools"') as e:
        chat({"messages": ASK, "tools": [WEATHER], "logprobs": True})
    assert e.value.param == "logprobs"
    assert chat({"messages": ASK, "tools": [WEATHER], "tool_choice": "none", "logprobs": True}).logprobs == 0


def test_tool_history_is_given_as_chat_templates_read_it():
    """An assistant's call (content null) and the tool's result: arguments sent as JSON text are given as the
    object (Qwen2.5's template quotes a string again with tojson); a tool message needs its tool_call_id. A call
    may leave out "type" (train reads such data too) and its id may be null: given without one."""
    messages = chat({"messages": HISTORY, "tools": [WEATHER]}).prompts[0]
    assert messages[1] == {"role": "assistant", "content": "", "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]}
    assert messages[2] == {"role": "tool", "content": "18C", "tool_call_id": "call_1"}
    with pytest.raises(RequestError, match=r'"messages"\[2\]: a "tool" message needs "tool_call_id"'):
        chat({"messages": HISTORY[:2] + [{"role": "tool", "content": "18C"}]})
    with pytest.raises(RequestError, match=r'"messages"\[1\]: "tool_calls" must be a list of'):
        chat({"messages": [ASK[0], {"role": "assistant", "tool_calls": [{"function": {"name": 1}}]}]})
    # a call without "type" is a function's (OpenAI's only kind); a null id is none, not given to the template
    bare = {"function": HISTORY[1]["tool_calls"][0]["function"], "id": None}
    messages = chat({"messages": [*ASK, {**HISTORY[1], "tool_calls": [bare]}]}).prompts[0]
    assert messages[1]["tool_calls"] == [{"type": "function", "function": {"name": "get_weather",
                                                                             "arguments": {"city": "Paris"}}}]


@pytest.mark.parametrize("sent, given", [("[1, 2]", "[1, 2]"), ("5", "5"), ("{bad", "{bad"), ("", {}),
                                         ({"a": 1}, {"a": 1})])
def test_tool_history_arguments_other_than_an_objects_text_reach_the_template_as_sent(sent, given):
    """Only a JSON object's text is given as the object (templates read arguments as a mapping, or quote a string
    with tojson): JSON text of another value, or no JSON, stays the text sent; "" (a call without arguments) is {},
    as vLLM's _postprocess_messages gives it."""
    history = [*ASK, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": sent}}]}]
    assert chat({"messages": history}).prompts[0][1]["tool_calls"][0]["function"]["arguments"] == given


@pytest.fixture(scope="module")
def tiny_qwen(tmp_path_factory):
    """(checkpoint, tokenizer folder) of a tiny Qwen2 with the ChatML character tokenizer and 2048 positions: room
    for Qwen2.5's tool prompt, a character a token."""
    from test_runtime_support import checkpoint
    from test_train_data import make_tokenizer
    from tinymodels import make_drafter, make_hf

    folder = tmp_path_factory.mktemp("tiny_qwen")
    base = make_hf(folder / "base", "qwen2", vocab_size=100, max_position_embeddings=2048)
    make_tokenizer(base)
    return checkpoint(base, make_drafter(folder / "drafter", base), 1, num_beams=2, draft_len=2), base


@pytest.fixture(scope="module")
def backend(tiny_qwen):
    backend = new_backend(tiny_qwen)
    backend.tokenizer.chat_template = QWEN25  # tools shown and calls written: a template dropping them is refused
    yield backend
    backend.stop()


@pytest.fixture(scope="module")
def server(backend):
    server = make_server(App(backend, "tiny", max_output_len=16, tool_parser="qwen3"), "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def test_tools_and_tool_history_reach_the_real_qwen25_template_and_the_answer_has_chats_shape(server, backend,
                                                                                            monkeypatch):
    """One request through the HTTP app on the real model: the prompt it decodes is Qwen2.5's, with the tool's
    definition in its system turn, the earlier call's arguments as an object and the tool's result."""
    monkeypatch.setattr(backend.tokenizer, "chat_template", QWEN25)
    real, prompts = backend.complete, []
    monkeypatch.setattr(backend, "complete", lambda rows, *a, **k: prompts.append(rows) or real(rows, *a, **k))
    status, _, data = request(server, "POST", "/v1/chat/completions",
                              {"messages": HISTORY, "tools": [WEATHER], "max_tokens": 4})
    answer = json.loads(data)
    assert status == 200, answer
    text = "".join("".join(backend.tokenizer.convert_ids_to_tokens(prompts[0][0])).split())  # a character a token

    def has(part: str) -> bool:
        return "".join(part.split()) in text

    assert has("<|im_start|>system\nYou are Qwen") and has("# Tools") and has(json.dumps(WEATHER))
    assert has('<|im_start|>assistant\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}')
    assert text.endswith("".join("<tool_response>18C</tool_response><|im_end|><|im_start|>assistant".split()))
    (choice,) = answer["choices"]
    assert choice["message"]["role"] == "assistant" and isinstance(choice["message"]["content"], str)
    assert "tool_calls" not in choice["message"] and choice["finish_reason"] in ("stop", "length")


def answering(text: str, pieces: int = 3, finish: str = "stop"):
    """A backend double's `complete`: every row answers `text`, streamed `pieces` characters at a time, ended by
    `finish`."""
    def complete(rows, max_tokens, temperature, seed, stop, on_text=None, *_, **__):
        for r in range(len(rows)):
            for k in range(0, len(text), pieces):
                if on_text is not None:
                    on_text(r, text[k:k + pieces], [], k + 1)
        return [Choice([1] * len(text), text, 1, finish) for _ in rows]
    return complete


def events_of(app: App, body: dict) -> list[dict]:
    events: list = []
    assert app.post("/v1/chat/completions", body, events.append) is None
    return events[1:]


@pytest.mark.parametrize("case", ["plain", "one call", "two calls", "text first", "malformed", "unclosed",
                                  "malformed name"])
def test_fixed_answers_come_out_as_openai_tool_calls_whole_and_streamed(backend, monkeypatch, case):
    text, (content, calls) = ANSWERS[case]
    monkeypatch.setattr(backend, "complete", answering(text))
    app = App(backend, "tiny", max_output_len=16, tool_parser="qwen3")
    body = {"messages": ASK, "tools": [WEATHER], "n": 2}
    status, answer = app.post("/v1/chat/completions", body)
    assert status == 200
    for choice in answer["choices"]:
        assert choice["message"]["content"] == content
        assert shown(choice["message"].get("tool_calls", [])) == calls
        assert choice["finish_reason"] == ("tool_calls" if calls else "stop")
    chunks = [c for e in events_of(app, body | {"stream": True}) for c in e["choices"]]
    for i in range(2):
        mine = [c for c in chunks if c["index"] == i]
        streamed = "".join(c["delta"].get("content", "") for c in mine)
        deltas = [t for c in mine for t in c["delta"].get("tool_calls", [])]
        assert (streamed or None if calls else streamed) == content
        assert shown(gathered(deltas)) == calls
        assert mine[-1]["finish_reason"] == ("tool_calls" if calls else "stop")
    monkeypatch.setattr(backend, "complete", answering(CALL))  # tool_choice none: the text as it is
    status, answer = app.post("/v1/chat/completions", {"messages": ASK, "tools": [WEATHER], "tool_choice": "none"})
    assert answer["choices"][0]["message"] == {"role": "assistant", "content": CALL}
    status, answer = app.post("/v1/chat/completions", {"messages": ASK})  # no tools: as without --tool-parser (vLLM)
    assert answer["choices"][0]["message"] == {"role": "assistant", "content": CALL}
    assert answer["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize("finish", ["length", "abort"])
def test_an_answer_cut_after_its_calls_keeps_its_finish_reason(backend, monkeypatch, finish):
    """finish_reason "tool_calls" replaces "stop" alone, as trtllm-serve's: an answer cut by max_tokens (or the
    shutdown) after a whole call says so, as OpenAI's "length" when the token limit was reached; the calls stay."""
    monkeypatch.setattr(backend, "complete", answering(CALL + "\nAnd", finish=finish))
    app = App(backend, "tiny", max_output_len=16, tool_parser="qwen3")
    body = {"messages": ASK, "tools": [WEATHER]}
    status, answer = app.post("/v1/chat/completions", body)
    (choice,) = answer["choices"]
    assert shown(choice["message"]["tool_calls"]) == [("get_weather", {"city": "Paris"})]
    assert choice["finish_reason"] == finish
    chunks = [c for e in events_of(app, body | {"stream": True}) for c in e["choices"]]
    assert shown(gathered([t for c in chunks for t in c["delta"].get("tool_calls", [])])) == [
        ("get_weather", {"city": "Paris"})]
    assert chunks[-1]["finish_reason"] == finish


def test_an_echoed_assistant_turn_keeps_its_joint_with_the_content_after_a_call_whole_and_streamed(backend,
                                                                                                   monkeypatch):
    """A review: with "echo": true the chat's last assistant message comes back before the answer, but the parser
    never saw it, so the content after a call lost its joint to it ("Let me check.more"): joined as the parser joins
    content it sent itself ("text between"), whole and streamed alike."""
    monkeypatch.setattr(backend, "complete", answering("\n" + CALL + "\nmore"))
    app = App(backend, "tiny", max_output_len=16, tool_parser="qwen3")
    body = {"messages": ASK + [{"role": "assistant", "content": "Let me check."}], "tools": [WEATHER], "echo": True}
    status, answer = app.post("/v1/chat/completions", body)
    assert status == 200, answer
    (choice,) = answer["choices"]
    assert choice["message"]["content"] == "Let me check.\nmore"
    assert shown(choice["message"]["tool_calls"]) == [("get_weather", {"city": "Paris"})]
    chunks = [c for e in events_of(app, body | {"stream": True}) for c in e["choices"]]
    assert "".join(c["delta"].get("content", "") for c in chunks) == "Let me check.\nmore"
    monkeypatch.setattr(backend, "complete", answering("\n" + CALL))  # nothing after the call: the echo alone
    assert app.post("/v1/chat/completions", body)[1]["choices"][0]["message"]["content"] == "Let me check."


@pytest.mark.parametrize("case", ["two calls", "text between"])
def test_parallel_tool_calls_false_keeps_each_answers_first_call_whole_and_streamed(backend, monkeypatch, case):
    """A review: "parallel_tool_calls": false (a client taking one call a turn) was ignored and an answer writing two
    calls gave both. As vLLM's maybe_filter_parallel_tool_calls: the whole answer keeps its first call, the stream
    sends the deltas of index 0 alone; the content, the finish_reason "tool_calls" and the usage (every token
    generated) are those of the answer with all its calls."""
    text, (content, calls) = ANSWERS[case]
    monkeypatch.setattr(backend, "complete", answering(text))
    app = App(backend, "tiny", max_output_len=16, tool_parser="qwen3")
    body = {"messages": ASK, "tools": [WEATHER], "n": 2}
    _, every = app.post("/v1/chat/completions", body)
    status, answer = app.post("/v1/chat/completions", body | {"parallel_tool_calls": False})
    assert status == 200 and answer["usage"] == every["usage"]
    for choice in answer["choices"]:
        assert shown(choice["message"]["tool_calls"]) == calls[:1] and choice["message"]["content"] == content
        assert choice["finish_reason"] == "tool_calls"
    chunks = [c for e in events_of(app, body | {"stream": True, "parallel_tool_calls": False}) for c in e["choices"]]
    for i in range(2):
        mine = [c for c in chunks if c["index"] == i]
        deltas = [t for c in mine for t in c["delta"].get("tool_calls", [])]
        assert {d["index"] for d in deltas} == {0} and shown(gathered(deltas)) == calls[:1]
        assert ("".join(c["delta"].get("content", "") for c in mine) or None) == content
        assert mine[-1]["finish_reason"] == "tool_calls"
    for parallel in (True, None, "true"):  # true or left out (null): every call, as OpenAI's default
        _, answer = app.post("/v1/chat/completions", body | {"parallel_tool_calls": parallel})
        assert shown(answer["choices"][0]["message"]["tool_calls"]) == calls
    with pytest.raises(RequestError, match='"parallel_tool_calls" must be true or false') as e:
        chat({"messages": ASK, "tools": [WEATHER], "parallel_tool_calls": "maybe"})
    assert e.value.param == "parallel_tool_calls"


def test_the_openai_client_parses_a_tool_call_answer_whole_and_streamed(server, backend, monkeypatch):
    """The official client's typed answer, and its stream helper's accumulated one and events: the call's name
    known from its first arguments event on, the arguments in several pieces adding up to the whole answer's
    (backend double: the format layer only)."""
    openai = pytest.importorskip("openai")
    monkeypatch.setattr(backend, "complete", answering("Let me check.\n" + CALL))
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{server.server_address[1]}/v1", api_key="x", max_retries=0)
    body = {"model": "tiny", "messages": ASK, "tools": [WEATHER], "tool_choice": "auto"}
    whole = client.chat.completions.create(**body)
    with client.chat.completions.stream(**body) as stream:
        events = list(stream)
        final = stream.get_final_completion()
    pieces = [e for e in events if e.type == "tool_calls.function.arguments.delta"]
    (done,) = [e for e in events if e.type == "tool_calls.function.arguments.done"]
    assert len(pieces) > 3 and {(e.name, e.index) for e in pieces} == {("get_weather", 0)}
    assert "".join(e.arguments_delta for e in pieces) == done.arguments == whole.choices[0].message.tool_calls[
        0].function.arguments
    for answer in (whole, final):
        (choice,) = answer.choices
        assert choice.finish_reason == "tool_calls" and choice.message.content == "Let me check."
        (tool_call,) = choice.message.tool_calls
        assert tool_call.type == "function" and tool_call.function.name == "get_weather"
        assert json.loads(tool_call.function.arguments) == {"city": "Paris"}


def merged(chunks: list[dict]) -> dict:
    """A stream's deltas as a plain client adds them up: each key's string pieces joined, its lists merged by
    "index", anything else (an index, a type) taken from the first delta that has it."""
    def merge(into: dict, delta: dict) -> None:
        for key, value in delta.items():
            if isinstance(value, str):
                into[key] = into.get(key, "") + value
            elif isinstance(value, dict):
                merge(into.setdefault(key, {}), value)
            elif isinstance(value, list):
                for item in value:
                    merge(into.setdefault(key, {}).setdefault(item["index"], {}), item)
            elif value is not None:
                into.setdefault(key, value)
    out: dict = {}
    for c in chunks:
        merge(out, c["delta"])
    return out


@pytest.mark.parametrize("case", ["two calls", "malformed", "cut in the arguments", "text between", "written otherwise",
                                  "two objects in a block"])
def test_the_openai_client_and_a_plain_merging_client_add_a_stream_up_to_the_whole_answer(server, backend, monkeypatch,
                                                                                         case):
    """The official client's stream accumulation and a client that merges the deltas' dicts itself both rebuild the
    whole answer's calls (ids, names, arguments, cut ones too) and content, streamed in pieces of 1 to 4 characters."""
    openai = pytest.importorskip("openai")
    text = ANSWERS[case][0]
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{server.server_address[1]}/v1", api_key="x", max_retries=0)
    body = {"model": "tiny", "messages": ASK, "tools": [WEATHER]}
    for pieces in (1, 4):
        monkeypatch.setattr(backend, "complete", answering(text, pieces=pieces))
        whole = client.chat.completions.create(**body).choices[0].message
        want = [(c.function.name, c.function.arguments) for c in whole.tool_calls]
        with client.chat.completions.stream(**body) as stream:
            final = stream.get_final_completion().choices[0].message
        assert [(c.function.name, c.function.arguments) for c in final.tool_calls] == want and want
        assert (final.content or None) == whole.content  # the first chunk carries content "" beside the role
        events = events_of(App(backend, "tiny", max_output_len=16, tool_parser="qwen3"), body | {"stream": True})
        plain = merged([c for e in events for c in e["choices"]])
        assert [(c["function"]["name"], c["function"]["arguments"]) for c in plain["tool_calls"].values()] == want
        assert plain.get("content", "") == (whole.content or "")


def test_tools_a_chat_template_drops_are_refused_not_sent_unseen(backend, monkeypatch):
    """With SmolLM2's kind of template (no tools, an assistant's tool_calls written as an empty turn) a request's
    tools reached the model not at all (the same prompt tokens with or without them) and a call in the history
    vanished (a review): refused with 400 naming the field and the fix, tool_choice "none" too (the template would
    not show them either); a template showing tools but writing no calls refuses the calls alone."""
    from test_train_data import CHATML, TOOLED

    monkeypatch.setattr(backend, "complete", answering("It is sunny."))
    for template, refused in ((CHATML, {"tools", "tool_calls"}), (TOOLED, {"tool_calls"}), (QWEN25, set())):
        monkeypatch.setattr(backend.tokenizer, "chat_template", template)
        app = App(backend, "tiny", max_output_len=16, tool_parser="qwen3")
        for body, param in (({"tools": [WEATHER]}, "tools"), ({"tools": [WEATHER], "tool_choice": "none"}, "tools"),
                            ({"messages": HISTORY}, "messages.[1].tool_calls")):
            status, answer = app.post("/v1/chat/completions", {"messages": ASK} | body)
            if param.rsplit(".", 1)[-1] not in refused:
                assert status == 200, answer
                continue
            error = answer["error"]
            assert (status, error["param"]) == (400, param), answer
            assert "chat template" in error["message"] and "Qwen2.5's, Qwen3's" in error["message"], error
        assert app.post("/v1/chat/completions", {"messages": ASK})[0] == 200  # no tools: answered as ever


# tools shown only beside a system message or under the variable show_tools, calls written only under show_tools:
# a user turn alone (serve's sample at start, `template_drops`) shows neither
SYSTEM_TOOLS = (
    "{%- if tools and (messages[0].role == 'system' or show_tools) %}<tools>{% for t in tools %}"
    "{{ t.function.name }} {% endfor %}</tools>\n{% endif %}"
    "{%- for m in messages %}<|{{ m.role }}|>{{ m.content }}"
    "{%- if show_tools %}{% for c in m.tool_calls or [] %}<call>{{ c.function.name }}</call>{% endfor %}{% endif %}\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}")
SYSTEM = [{"role": "system", "content": "Be brief."}]
SHOWN = {"chat_template_kwargs": {"show_tools": True}}


def test_tools_are_refused_only_where_the_requests_own_rendering_drops_them(backend, monkeypatch):
    """The refusal was decided once per server, on a sample user turn: a template showing tools beside a system
    message, or under a chat_template_kwargs variable, had every request with tools refused, the ones it renders
    them for too. Each request's own rendering (its messages, its template variables, the server's) decides now."""
    monkeypatch.setattr(backend, "complete", answering("It is sunny."))
    monkeypatch.setattr(backend.tokenizer, "chat_template", SYSTEM_TOOLS)
    app = App(backend, "tiny", max_output_len=16, tool_parser="qwen3")
    for body, param in (({"tools": [WEATHER]}, "tools"), ({"messages": HISTORY}, "messages.[1].tool_calls"),
                        ({"messages": SYSTEM + HISTORY, "tools": [WEATHER]}, "messages.[2].tool_calls")):
        status, answer = app.post("/v1/chat/completions", {"messages": ASK} | body)
        assert (status, answer["error"]["param"]) == (400, param), answer
        assert "chat template" in answer["error"]["message"], answer
    for body in ({"messages": SYSTEM + ASK, "tools": [WEATHER]}, {"tools": [WEATHER]} | SHOWN, {"messages": HISTORY} |
                 SHOWN, {"messages": SYSTEM + HISTORY, "tools": [WEATHER]} | SHOWN):
        status, answer = app.post("/v1/chat/completions", {"messages": ASK} | body)
        assert status == 200, (body, answer)
    shown = App(backend, "tiny", max_output_len=16, template_kwargs=SHOWN["chat_template_kwargs"], tool_parser="qwen3")
    assert shown.post("/v1/chat/completions", {"messages": HISTORY, "tools": [WEATHER]})[0] == 200  # serve's own


def calls_history(*calls_per_turn: int) -> list[dict]:
    """ASK, then an assistant turn of that many get_weather calls (content null) and their results, for each count."""
    out, k = list(ASK), 0
    for count in calls_per_turn:
        ids = [f"call_{k + j}" for j in range(count)]
        k += count
        out.append({"role": "assistant", "content": None, "tool_calls": [
            {"id": i, "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
            for i in ids]})
        out += [{"role": "tool", "tool_call_id": i, "content": "18C"} for i in ids]
    return out


# writes no calls, and refuses an assistant turn with neither content nor calls, as many templates guard one
GUARDED = ("{% for m in messages %}{% if m.role == 'assistant' and not m.content and not m.tool_calls %}"
           "{{ raise_exception('an assistant turn needs content or tool_calls') }}{% endif %}"
           "<|{{ m.role }}|>{{ m.content or '' }}\n{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}")
# SYSTEM_TOOLS writing only the first call of an assistant turn
FIRST_CALL = SYSTEM_TOOLS.replace("{% for c in m.tool_calls or [] %}<call>{{ c.function.name }}</call>{% endfor %}",
                                  "{% if m.tool_calls %}<call>{{ m.tool_calls[0].function.name }}</call>{% endif %}")


def test_a_call_the_requests_prompt_drops_is_refused_where_its_template_guards_an_empty_turn(backend, monkeypatch):
    """A call was looked for by rendering the request without it: a template refusing an assistant turn with
    neither content nor calls (a guard many have) refused that render, which then differed from the prompt, and the
    request was answered with an empty assistant turn in its prompt (a review). Each call is looked for by a name of
    its own in one render of the request, as at start (`tokens.writes_tool_calls`), and a turn's call the template
    drops is refused even where it writes the turn's other call."""
    assert FIRST_CALL != SYSTEM_TOOLS
    monkeypatch.setattr(backend, "complete", answering("It is sunny."))
    for template, body, param in ((GUARDED, {"messages": HISTORY}, "messages.[1].tool_calls"),
                                  (FIRST_CALL, {"messages": calls_history(1, 2)} | SHOWN, "messages.[3].tool_calls"),
                                  (FIRST_CALL, {"messages": calls_history(1, 1)} | SHOWN, None)):
        monkeypatch.setattr(backend.tokenizer, "chat_template", template)
        status, answer = App(backend, "tiny", max_output_len=16, tool_parser="qwen3").post(
            "/v1/chat/completions", {"messages": ASK} | body)
        if param is None:
            assert status == 200, answer
            continue
        assert (status, answer["error"]["param"]) == (400, param), answer
        assert "writes no tool calls here" in answer["error"]["message"], answer


def test_a_tool_the_requests_prompt_drops_is_refused_by_name_beside_tools_it_shows(backend, monkeypatch):
    """A template showing only the tools with a description (beside a system message): a request's tools were
    refused only where the prompt showed none of them; each is looked for now, and one it drops is named."""
    bare = {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}
    monkeypatch.setattr(backend, "complete", answering("It is sunny."))
    monkeypatch.setattr(backend.tokenizer, "chat_template", SYSTEM_TOOLS.replace(
        "{% for t in tools %}", "{% for t in tools if t.function.description %}"))
    app = App(backend, "tiny", max_output_len=16, tool_parser="qwen3")
    status, answer = app.post("/v1/chat/completions", {"messages": SYSTEM + ASK, "tools": [WEATHER, bare]})
    assert (status, answer["error"]["param"]) == (400, "tools"), answer
    assert 'renders the tool "get_time" not here' in answer["error"]["message"], answer
    assert app.post("/v1/chat/completions", {"messages": SYSTEM + ASK, "tools": [WEATHER]})[0] == 200


def test_a_request_is_rendered_again_only_where_the_template_dropped_tools_at_start(backend, monkeypatch):
    """The per-request check renders a request once more, its tools' and calls' names replaced by names of their own,
    only when it carries them and the template dropped them from the sample at start: any other request is rendered
    once, for its prompt. It rendered the request again without its tools and without each call (3 + k renders for k
    calls: 6.1 s for 300 calls, a review)."""
    monkeypatch.setattr(backend, "complete", answering("It is sunny."))
    real, renders = backend.tokenizer.apply_chat_template, []
    monkeypatch.setattr(backend.tokenizer, "apply_chat_template", lambda *a, **k: renders.append(1) or real(*a, **k))
    for template, body, count in ((QWEN25, {"messages": HISTORY, "tools": [WEATHER]}, 1), (SYSTEM_TOOLS, {}, 1),
                                  (SYSTEM_TOOLS, {"messages": SYSTEM + ASK, "tools": [WEATHER]}, 2),
                                  (SYSTEM_TOOLS, {"messages": HISTORY} | SHOWN, 2),
                                  (SYSTEM_TOOLS, {"messages": calls_history(*[1] * 8), "tools": [WEATHER]} | SHOWN, 2)):
        monkeypatch.setattr(backend.tokenizer, "chat_template", template)
        app = App(backend, "tiny", max_output_len=16, tool_parser="qwen3")
        renders.clear()
        assert app.post("/v1/chat/completions", {"messages": ASK} | body)[0] == 200
        assert len(renders) == count, (template[:20], body)


def test_serve_warns_at_start_of_a_chat_template_that_drops_tools(smollm2, tmp_path):
    """`serve --tool-parser` on SmolLM2's tokenizer started silently; one warning line now names what its template
    drops and the fix (as train says of such a base)."""
    from transformers import AutoTokenizer

    from redrafter_trt.serve_tools import REFUSED_PER_REQUEST, tool_template_warning

    line = tool_template_warning(AutoTokenizer.from_pretrained(smollm2), "qwen3", REFUSED_PER_REQUEST)
    assert line.startswith("warning: --tool-parser qwen3: ") and "\n" not in line, line
    # what the template did to a sample conversation, not "the model never sees them": a request's own prompt may
    # show them (beside a system message, under a template variable), and is refused only where it drops them too
    assert "dropped the tools and an assistant's tool calls from a sample conversation" in line, line
    assert "never sees" not in line and "refused (400) where" in line, line
    assert "checked per request" in line, line  # a request's own prompt decides (refuse_dropped_tools)
    assert "Qwen2.5's, Qwen3's" in line, line
    # where the fix goes: SmolLM2's folder holds a chat_template.jinja, which transformers reads before
    # tokenizer_config.json's chat_template (the line named that one alone, where an edit changed nothing)
    assert "chat_template.jinja, else its tokenizer_config.json's chat_template" in line, line
    from test_train_data import make_tokenizer

    tok = make_tokenizer(tmp_path / "tok")
    tok.chat_template = "config"
    tok.save_pretrained(tmp_path / "tok")
    (tmp_path / "tok" / "chat_template.jinja").write_text("jinja")
    config = json.loads((tmp_path / "tok" / "tokenizer_config.json").read_text())
    (tmp_path / "tok" / "tokenizer_config.json").write_text(json.dumps(config | {"chat_template": "config"}))
    assert AutoTokenizer.from_pretrained(tmp_path / "tok").chat_template == "jinja"
    tok.chat_template = QWEN25
    assert tool_template_warning(tok, "qwen3", "refused (400)") is None


# Llama 3.1's way: an assistant's call written as bare {"name", "parameters"} JSON, no <tool_call> block
BARE_JSON = ("{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% for c in m.tool_calls or [] %}"
             "{\"name\": \"{{ c.function.name }}\", \"parameters\": {{ c.function.arguments | tojson }}}{% endfor %}\n"
             "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}")

# Qwen3-Coder's way: <function=NAME> XML inside the <tool_call> tags, no JSON
XML_IN_TAGS = BARE_JSON.replace(
    "{\"name\": \"{{ c.function.name }}\", \"parameters\": {{ c.function.arguments | tojson }}}",
    "<tool_call>\n<function={{ c.function.name }}>\n</function>\n</tool_call>")



def test_serve_warns_at_start_of_a_chat_template_writing_calls_in_another_format(tmp_path):
    """Only <tool_call> blocks of JSON are parsed: a base whose template writes an assistant's call otherwise (Llama
    3.1's bare JSON, Qwen3-Coder's XML in the tags) got its calls back as content, finish_reason "stop", and no word
    why. One line at start now shows what the template writes and what the parser reads; none for Qwen2.5's, nor for
    a template writing no calls (`tool_template_warning` says that)."""
    from test_train_data import CHATML, make_tokenizer

    from redrafter_trt.serve_tools import tool_format_warning

    tok = make_tokenizer(tmp_path / "tok")
    tok.chat_template = BARE_JSON
    line = tool_format_warning(tok, "qwen3", 'come back as text in the content, finish_reason "stop"')
    assert line.startswith("warning: --tool-parser qwen3: ") and "\n" not in line, line
    assert ('writes an assistant\'s tool call in a format the parser reads no call from ({"name": "NAME", '
            '"parameters": {}})') in line, line
    assert 'calls the model writes that way come back as text in the content, finish_reason "stop"' in line, line
    assert "reads the <tool_call> blocks of Qwen2.5's, Qwen3's and Hermes' chat templates" in line, line
    tok.chat_template = XML_IN_TAGS
    assert XML_IN_TAGS != BARE_JSON
    assert "(<tool_call> <function=NAME> </function> </tool_call>)" in tool_format_warning(tok, "qwen3", "")
    for template in (QWEN25, CHATML, "{{ raise_exception('no') }}"):
        tok.chat_template = template
        assert tool_format_warning(tok, "qwen3", "") is None, template[:20]


def test_serve_prints_the_format_warning_before_taking_the_port(tiny_qwen, tmp_path, monkeypatch):
    """The reference server's start: the line goes out (stderr) before the port is bound and the model loaded."""
    from click.testing import CliRunner
    from test_train_data import make_tokenizer

    from redrafter_trt import serve_http
    from redrafter_trt.cli import main
    from redrafter_trt.errors import ConfigError

    tok = make_tokenizer(tmp_path / "tok")
    tok.chat_template = BARE_JSON
    tok.save_pretrained(tmp_path / "tok")

    def bound(*args, **kwargs):
        raise ConfigError("reached the port")
    monkeypatch.setattr(serve_http, "make_server", bound)
    res = CliRunner().invoke(main, ["serve", "--checkpoint-dir", str(tiny_qwen[0]), "--tokenizer-dir",
                                    str(tmp_path / "tok"), "--tool-parser", "qwen3"])
    assert res.exit_code == 2 and "reached the port" in res.output, res.output
    (line,) = [line for line in res.output.splitlines() if "reads no call from" in line]
    assert 'come back as text in the content, finish_reason "stop"' in line, res.output


def test_serves_options_reach_the_backend_and_the_app(tiny_qwen, monkeypatch):
    """`serve --checkpoint-dir` hands --tool-parser, --model-name and --max-output-len to the app and --max-batch-size
    to the backend, not their defaults (an audit's mutants replacing each by its default passed every
    test); the model is not loaded: the app's construction is where this stops."""
    from click.testing import CliRunner

    from redrafter_trt.cli import main
    from redrafter_trt.errors import ConfigError
    from redrafter_trt.serve_backend import ReferenceBackend

    backend, app = [], []

    def stop_here(self, *args, **kwargs):
        app.append((args, kwargs))
        raise ConfigError("stopped here")
    monkeypatch.setattr(ReferenceBackend, "__init__", lambda self, *a, **k: backend.append((a, k)))
    monkeypatch.setattr(ReferenceBackend, "stop", lambda self, *a, **k: None)
    monkeypatch.setattr(App, "__init__", stop_here)
    ckpt, base = tiny_qwen
    res = CliRunner().invoke(main, ["serve", "--checkpoint-dir", str(ckpt), "--tokenizer-dir", str(base), "--port", "0",
                                    "--tool-parser", "qwen3", "--model-name", "mine", "--max-batch-size", "3",
                                    "--max-output-len", "50"])
    assert res.exit_code == 2 and "stopped here" in res.output, res.output
    ((args, kwargs),) = backend
    assert args[2:4] == ("cpu", 3) and kwargs["compile"] is False, backend
    ((args, kwargs),) = app
    assert args[1:3] == ("mine", 50) and args[4] == "qwen3" and len(args) == 6 and not kwargs, app
