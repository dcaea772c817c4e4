"""`serve --tool-parser qwen3` and `--reasoning-parser qwen3|deepseek-r1` on random answers, as the server runs them:
answer texts mixing plain text (multi-byte characters, `<`, braces), `<think>` / `</think>`, `<tool_call>` blocks with
valid, invalid and partial JSON (tags inside their strings, no newlines, "parameters", an array, ...) and tags' starts
go through the HTTP app and the real scheduler, whose model double (`ranks.generate`) answers each text's UTF-8 bytes,
a token per byte, in random steps of 1 to 4 tokens (so tags and characters split at every boundary), with random stop
strings near the tags and max_tokens cutting inside a tag, its JSON or a character. Each answer is asked whole and
streamed, with a prompt whose end opens, closes or leaves the thinking, and without parsers (its text). Checked: the
stream's content, reasoning_content and tool_calls add up to the whole message exactly (nothing lost, doubled or held
back at the end) with the same finish_reason, and the whole message is what a whole-text reading of README's rules
gives: TensorRT-LLM's DeepSeekR1Parser.parse and Qwen3ToolParser.detect_and_parse where those are defined
(well-formed blocks with its newlines), with the differences README's Serve section documents."""

from __future__ import annotations

import json
import random
import re

import pytest

from redrafter_trt.serve_app import App
from test_runtime_support import one_thread  # noqa: F401
from test_serve_tools import ASK, WEATHER, backend, events_of, gathered, tiny_qwen  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")

# a chat template whose generation prompt ends in chat_template_kwargs' `tail`: where the prompt leaves the thinking
# (showing the tools and writing tool calls: serve refuses tools to a template that drops them)
TAILED = ("{% if tools %}<|im_start|>system\nTools:{% for t in tools %} {{ t.function.name }}{% endfor %}<|im_end|>\n"
          "{% endif %}{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}"
          "{% for c in m.tool_calls or [] %}<tool_call>{{ c.function.name }}</tool_call>{% endfor %}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{{ tail }}{% endif %}")
TAILS = {"": None, "<think>\n": "opening", "<think>\n\n</think>\n\n": "after"}  # the prompt's end -> where it starts
STARTS = {"qwen3": "before", "deepseek-r1": "opening"}  # README: where each parser's answers start otherwise


EOS = 256  # the byte tokenizer's end of answer


class Bytes:
    """A byte-level tokenizer double: a token per UTF-8 byte (EOS writes nothing); a character cut short decodes to
    U+FFFD."""

    all_special_ids = [EOS]

    @staticmethod
    def decode(ids: list[int], **_) -> str:
        return bytes(i for i in ids if i != EOS).decode("utf-8", errors="replace")


def scripted(answers: dict, rng: random.Random):
    """A double of the scheduler's `ranks.generate`: each row answers `answers["text"]` (as it is when the row starts)
    in bytes then EOS, in steps of 1-4 tokens (as speculative decoding accepts them), through the scheduler's own
    on_tokens (max_tokens, stop strings, AnswerText) and admit. The text is read as each row starts, not once per
    call: the scheduler may admit the next case's request into a call still ending (its last admit), as it batches
    a real model's, and that request is the next case's (a CI run under load saw case 975's text answer 976)."""
    def generate(prompts, max_new_tokens, *, on_tokens, admit, **_):
        rows = [list(answers["text"].encode()) + [EOS] for _ in prompts]  # each row's tokens to come (None: ended)
        while any(row is not None for row in rows):
            for r, row in enumerate(rows):
                if row is not None:
                    k = rng.randint(1, 4)
                    rows[r] = None if on_tokens(r, row[:k], []) else row[k:]
            rows += [list(answers["text"].encode()) + [EOS] for _ in admit(sum(row is not None for row in rows))]
    return generate


WORDS = ["Sure.", " ", "\n", "\n\n", "  ", "It is 4 < 5", "a>b", "{}", '"x"', "é", "東京", "🌧", "Ω≈", "\t"]
TAGS = ["<think>", "</think>", "<tool_call>", "</tool_call>", "<thi", "</th", "<tool_", "</tool_call", "<", "</"]


ARGUMENTS = [{}, {"city": "Paris"}, {"city": "東京 🌧", "n": 2}, {"q": "</tool_call>"}, {"q": "<think>"},
             {"q": "<tool_call>"}, {"deep": {"a": [1, 2.5, None, True]}}, {"s": "a\nb\"c"}]


def arguments(rng: random.Random) -> dict:
    return rng.choice(ARGUMENTS)


def block_json(rng: random.Random, plain: bool) -> str:
    """A <tool_call> block's inside: a call (with text after its object or not), or text that is none (bad or
    partial JSON, other shapes; plain: only a call, one with an empty name or no JSON: where trtllm-serve's reading
    is this server's, README)."""
    name = rng.choice(["get_weather", "f", "名前"])
    pick = rng.choice([0, 9, 12]) if plain else rng.randrange(14)
    if pick < 5:
        return json.dumps({"name": name, "arguments": arguments(rng)}, ensure_ascii=rng.random() < 0.5)
    return [json.dumps({"name": name, "parameters": arguments(rng)}),
            json.dumps({"name": name}),
            json.dumps({"name": name, "arguments": arguments(rng)})[:-rng.randint(1, 5)],  # partial
            json.dumps([{"name": name, "arguments": {}}]),
            json.dumps({"name": "", "arguments": {}}),
            json.dumps({"name": 5, "arguments": {}}),
            json.dumps({"name": name, "arguments": "x"}),
            "not json",
            json.dumps({"name": name, "arguments": arguments(rng)}) + rng.choice(  # text after a call's object
                [" ", "\n"]) + rng.choice(WORDS[:3] + ['{"name": "g", "arguments": {}}', "</tool_"])][pick - 5]


def answer(rng: random.Random) -> str:
    """A random answer: words, tags, tags' starts and tool-call blocks (with or without their newlines or end; a
    plain answer's as Qwen3ToolParser reads them)."""
    parts, plain = [], rng.random() < 0.3
    for _ in range(rng.randint(1, 10)):
        pick = rng.random()
        if pick < 0.4:
            parts.append(rng.choice(WORDS))
        elif pick < 0.55:
            parts.append(rng.choice(TAGS[:2] + TAGS[4:] if plain else TAGS))
        else:
            nl = "\n" if plain else rng.choice(["\n", "\n", "", " "])
            space = rng.choices(["", "\n", " ", "\n\n"], k=2)  # what the joint between texts around calls is made of
            parts.append(space[0] + "<tool_call>" + nl + block_json(rng, plain) + (
                nl + "</tool_call>" if plain or rng.random() < 0.85 else "") + space[1])
    return "".join(parts)


def stops(rng: random.Random, text: str) -> list[str]:
    """0-2 stop strings: near the tags, or a random piece of the answer (which may split a tag or a character)."""
    out = []
    for _ in range(rng.choice([0, 0, 0, 1, 2])):
        if rng.random() < 0.3 and text:
            at = rng.randrange(len(text))
            out.append(text[at:at + rng.randint(1, 4)])
        else:
            out.append(rng.choice(["</tool_call>", "\n</tool_call>", "</think>", "call>", "\n\n", "}}", "é", "🌧"]))
    return out


# whole-text readings of README's Serve rules, written from TensorRT-LLM's parsers (tensorrt_llm/llmapi/
# reasoning_parser.py DeepSeekR1Parser.parse, serve/tool_parser/qwen3_tool_parser.py detect_and_parse) and the
# differences README documents


def spec_reasoning(start: str, text: str) -> tuple[str | None, str]:
    """(reasoning, content). trtllm-serve's parse: qwen3 (reasoning_at_start False) reads from the first <think> to
    the first </think> after it, all content without one; deepseek-r1 (reasoning_at_start True) reads to the first
    </think>. README's differences: qwen3 keeps the text before <think> as content (trtllm-serve drops it),
    deepseek-r1 drops a <think> the answer starts with (trtllm-serve keeps it), reasoning null without thinking (""),
    and a prompt ending in a tag decides where the answer starts."""
    if start == "after":
        return None, text
    if start == "before":
        before, tag, text = text.partition("<think>")
        if not tag:
            return None, before
        reasoning, _, content = text.partition("</think>")
        return reasoning, before + content
    reasoning, _, content = text.removeprefix("<think>").partition("</think>")
    return reasoning, content


class Cut:
    """The arguments of a call whose JSON went bad or was cut short after the call was made, `written` the text of
    them in the block (what was cut, or went bad, included): what went out must be the start of the final text
    (json.dumps, ensure_ascii=False) of arguments that the longest start of `written` which some text can end as
    JSON begins (ended by closing its open string, a value or key where one is due, and its brackets), keys written
    twice written twice."""

    def __init__(self, written: str):
        self.written = written

    def __eq__(self, sent) -> bool:
        for k in range(len(self.written), 0, -1):
            finals = []
            for filler in ("", "0", ":0", '"":0'):
                try:
                    finals.append(json.dumps(json.loads(closing(self.written[:k], filler), object_pairs_hook=Pairs),
                                             ensure_ascii=False))
                except ValueError:
                    pass
            if finals:
                return sent.startswith("{") and any(final.startswith(sent) for final in finals)
        return False

    def __repr__(self) -> str:
        return f"Cut({self.written!r})"


class Pairs(dict):
    """A JSON object as read, keys written twice kept twice (json.dumps writes a dict by its items())."""

    def __init__(self, pairs: list[tuple[str, object]]):
        super().__init__(pairs)
        self.pairs = pairs

    def items(self):
        return self.pairs


def closing(text: str, filler: str) -> str:
    """`text`, the string it leaves open closed, then `filler`, then its open brackets closed (JSON's grammar not
    checked)."""
    stack, string, escaped = [], False, False
    for char in text:
        if string:
            string, escaped = (escaped or char != '"'), (not escaped and char == "\\")
        elif char == '"':
            string = True
        elif char in "{[":
            stack.append("}" if char == "{" else "]")
        elif char in "}]" and stack:
            stack.pop()
    return text + ('"' if string else "") + filler + "".join(reversed(stack))


# a block's start once its call is made (README): the name, then the "{" of its arguments (as the answers write it)
MADE = re.compile(r'[ \t\n\r]*\{"name": ("(?:[^"\\]|\\.)+"), "(?:arguments|parameters)": (\{.*)', re.S)


def spec_call(inside: str) -> tuple[str, str | Cut, str] | None:
    """A block's (name, arguments text, content), README's rule: a JSON object with a non-empty string "name" and an
    object "arguments" ("parameters" where it is missing, {} without either), its arguments as json.dumps writes them,
    the text after its object in the block content (less the whitespace at its end, and a </tool_call> cut short
    there); or, where it holds no whole object, one whose name and the "{" of its arguments were read (arguments
    `Cut`, no content)."""
    inside = inside.lstrip(" \t\n\r")
    try:
        obj, end = json.JSONDecoder().raw_decode(inside)
    except ValueError:
        made = MADE.match(inside)
        return (json.loads(made.group(1)), Cut(made.group(2)), "") if made else None
    if not isinstance(obj, dict):
        return None
    args = obj.get("arguments", obj.get("parameters", {}))
    name = obj.get("name")
    return (name, json.dumps(args, ensure_ascii=False), after_object(inside[end:])) \
        if isinstance(name, str) and name and isinstance(args, dict) else None


def after_object(text: str) -> str:
    """The content of a block's `text` after its call's object: less its </tool_call> (or the start of one the answer
    ended in) and the whitespace at its end."""
    return next(text.removesuffix("</tool_call>"[:k]) for k in range(12, -1, -1)
                if text.endswith("</tool_call>"[:k])).rstrip()


BLOCK = re.compile(r"<tool_call>(.*?)</tool_call>", re.S)


def spec_tools(text: str, ended: str, read=spec_call,
               echoed: bool = False) -> tuple[str | None, list[tuple[str, dict]], str]:
    """(content, calls, finish_reason): each block a call when it holds one (a last one without its </tool_call> too;
    `read` tells, from the block's text after <tool_call>: spec_call's reading), the others text; the text around the
    calls the content, less the whitespace next to them but the joint (the whitespace after the last call of a run,
    else the one before it) between content before and after them (echoed: content before the text, an echoed
    assistant message, is content before them)."""
    texts, calls, at, last, rest = [], [], 0, 0, ""
    for m in BLOCK.finditer(text):
        last = m.end()
        call = read(m.group(1) + "</tool_call>")
        if call is not None:
            texts.append(rest + text[at:m.start()])
            calls.append(call[:2])
            at, rest = m.end(), call[2]
    opened = text.find("<tool_call>", last)
    if opened >= 0 and (call := read(text[opened + len("<tool_call>"):])) is not None:
        texts.append(rest + text[at:opened])
        calls.append(call[:2])
        at, rest = len(text), call[2]
    texts.append(rest + text[at:])
    content = texts[0]
    for k, t in enumerate(texts[1:], 1):
        body = content.rstrip()
        if not t.strip():
            if k == len(texts) - 1:
                content = body
            continue
        lead = t[:len(t) - len(t.lstrip())]
        content = body + ((lead or content[len(body):]) if body or echoed else "") + t.lstrip()
    return (content or None) if calls else content, calls, "tool_calls" if calls and ended == "stop" else ended


def trtllm_calls(text: str) -> list[tuple[str, dict]] | None:
    """Qwen3ToolParser.detect_and_parse's calls, where this server's must be the same: every block written as its
    format has them ("<tool_call>\\n" and "\\n</tool_call>", an object with a string "name" and an object "arguments",
    or invalid JSON: both parsers call nothing of that or of an empty name) and none left open; None elsewhere."""
    blocks = BLOCK.findall(text)
    if text.count("<tool_call>") != len(blocks) or not blocks:
        return None
    calls = []
    for inside in blocks:
        if not (inside.startswith("\n") and inside.endswith("\n")):
            return None
        try:
            obj = json.loads(inside.strip())
        except ValueError:
            if spec_call(inside) is not None:  # a call made before its JSON went bad: trtllm-serve drops the block
                return None
            continue
        if not (isinstance(obj, dict) and set(obj) == {"name", "arguments"} and isinstance(obj["name"], str)
                and isinstance(obj["arguments"], dict)):
            return None
        if obj["name"]:  # parse_base_json: `if name:`, arguments json.dumps(..., ensure_ascii=False)
            calls.append((obj["name"], json.dumps(obj["arguments"], ensure_ascii=False)))
    return calls


def message(events: list[dict]) -> tuple[str, str, list[dict], str]:
    """A stream's (reasoning, content, tool_calls, finish_reason), its chunks added up (the tool call deltas as
    OpenAI's clients add them up, each checked to have OpenAI's shape: `gathered`)."""
    chunks = [c for e in events for c in e["choices"]]
    deltas = [c["delta"] for c in chunks if "delta" in c]
    assert all(c["finish_reason"] is None for c in chunks[:-1])
    return ("".join(d.get("reasoning_content", "") for d in deltas), "".join(d.get("content", "") for d in deltas),
            gathered([t for d in deltas for t in d.get("tool_calls", [])]), chunks[-1]["finish_reason"])


def calls_of(message: dict) -> list[tuple[str, str]]:
    return [(c["function"]["name"], c["function"]["arguments"]) for c in message.get("tool_calls", [])]


def test_random_answers_stream_as_they_answer_whole_and_as_readmes_rules_read_them(backend, monkeypatch):
    """1500 random answers, each asked whole and streamed (n 1 or 2, an echoed assistant message or none), under
    each pair of parsers (or none) and prompt end: see the module's docstring."""
    monkeypatch.setattr(backend.tokenizer, "chat_template", TAILED)
    monkeypatch.setattr(backend.scheduler, "tokenizer", Bytes())  # the answers' (the prompts': the chat tokenizer)
    monkeypatch.setattr(backend.scheduler, "eos", {EOS})
    rng, answers = random.Random(20261205), {}
    monkeypatch.setattr(backend.scheduler.ranks, "generate", scripted(answers, rng))
    apps = {(t, r): App(backend, "tiny", max_output_len=1024, tool_parser=t, reasoning_parser=r)
            for t in (None, "qwen3") for r in (None, "qwen3", "deepseek-r1")}
    compared = pieces = made_cut = 0  # whole-text readings compared with trtllm-serve's; arguments pieces; calls cut
    for case in range(1500):
        text = answer(rng)
        (tools, reasoner), tail = rng.choice(sorted(apps, key=str)), rng.choice(sorted(TAILS))
        size, echo = len(text.encode()), rng.choice(["", "", "Pre <tool_call>"])
        body = {"messages": ASK + ([{"role": "assistant", "content": echo}] if echo else []), "echo": bool(echo),
                "chat_template_kwargs": {"tail": tail}, "stop": stops(rng, text), "n": rng.choice([1, 1, 2]),
                "max_tokens": rng.randint(1, size + 1) if rng.random() < 0.3 else size + 1} | (
            {"tools": [WEATHER]} if tools else {})
        answers["text"] = text
        where = f"case {case}: {text!r} {body['stop']} max_tokens {body['max_tokens']} {tools} {reasoner} {tail!r}"
        status, whole = apps[tools, reasoner].post("/v1/chat/completions", body)
        assert status == 200, where
        _, raw = apps[None, None].post("/v1/chat/completions", {k: body[k] for k in ("messages", "stop", "max_tokens")})
        said, ended = raw["choices"][0]["message"]["content"], raw["choices"][0]["finish_reason"]  # the answer's text
        reasoning, content = spec_reasoning(TAILS[tail] or STARTS[reasoner], said) if reasoner else (None, said)
        calls, trt = [], trtllm_calls(content) if tools else None  # the content the reasoning parser left
        if tools:
            content, calls, ended = spec_tools(content, ended, echoed=bool(echo))
        if trt is not None:
            assert calls == trt, where
            compared += 1
        events = events_of(apps[tools, reasoner], body | {"stream": True})
        for i, choice in enumerate(whole["choices"]):
            got = choice["message"]
            assert got.get("reasoning_content", "absent") == (reasoning if reasoner else "absent"), where
            assert (calls_of(got), "tool_calls" in got) == (calls, bool(calls)), where
            assert (got["content"], choice["finish_reason"]) == (
                echo + (content or "") if echo or content is not None else None, ended), where
            stream_reasoning, stream_content, stream_calls, finish = message(
                [e | {"choices": [c for c in e["choices"] if c["index"] == i]} for e in events])
            assert stream_reasoning == (got.get("reasoning_content") or ""), where
            assert stream_content == (got["content"] or ""), where
            assert [c | {"id": None} for c in stream_calls] == [  # names and arguments: the same text
                c | {"id": None} for c in got.get("tool_calls", [])], where
            assert finish == choice["finish_reason"], where
        pieces += sum("id" not in t for e in events for c in e["choices"] for t in c["delta"].get("tool_calls", []))
        made_cut += sum(isinstance(args, Cut) for _, args in calls)
    assert compared > 40 and pieces > 2000 and made_cut > 20, (compared, pieces, made_cut)
