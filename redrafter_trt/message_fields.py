"""One chat message's fields, as chat templates take them: its role (ROLES), its text (`text_of`, `check_text`), who
speaks (`speaker_of`), OpenAI fine-tuning's `weight` (`untrained`), its thinking (THOUGHTS: `thinking_of`) and a tool
call or a tool's result (CALLS, RESULTS, LEGACY_CALL: `tool_turn`, `template_tool_calls`). `prompts` reads a record's
conversation (a file's, `train --data`'s) through them, message by message, and `serve` a request's messages; a
ValueError names what cannot be read.
"""

from __future__ import annotations

import ast
import json

from .errors import json_loads

ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "chatgpt": "assistant",
         "bard": "assistant", "bing": "assistant", "model": "assistant", "system": "system",
         "developer": "system"}  # newer OpenAI clients send the system prompt as "developer" (serve reads it so)
THOUGHTS = ("reasoning_content", "reasoning", "thinking")  # an assistant turn's thinking, given to chat templates
# under each name: Qwen3 data sets' and serve's (Qwen3's template reads `reasoning_content`), vLLM's newer, gpt-oss's
# (its template reads `thinking`, where the message has the key)
CALLS = ("function_call", "function-call")  # a tool call answering a prompt: ShareGPT's (glaive as LLaMA-Factory and
# its ChatML conversion write it), its value the call's JSON, {"name", "arguments"} (or a list of them); OpenAI's is an
# assistant turn, its content null beside `tool_calls`. train reads either as an assistant turn with `tool_calls`
RESULTS = ("tool", "function", "observation", "function_response", "function-response")  # a tool's result, read by
# train as a "tool" turn (OpenAI's role, `function` in its legacy format; LLaMA-Factory's `observation`; glaive's ChatML
# conversion's `function-response`)
LEGACY_CALL = "function_call"  # OpenAI's legacy assistant turn's one call, {"name", "arguments"}, beside `functions`
# (an object only: "none" or "auto", a request's own field, logged beside an answer, is no call)


def text_of(content):
    """A message's text: a string, or OpenAI's list of parts when all are text parts, joined one a line (as
    trtllm-serve's and vLLM's chat_utils join them; `serve` reads messages through it); anything else as it is."""
    if isinstance(content, list) and all(
            isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in content):
        return "\n".join(p["text"] for p in content)
    return content


def check_text(text: str, what: str) -> str:
    """text, or a ValueError for one holding half a surrogate pair (a JSON escape such as "\\ud83d" alone: an emoji cut
    in two by a scraper; some ShareGPT dumps have them), which json reads but no tokenizer takes (tokenizers' TypeError
    traceback from run, bench and train once)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"{what} holds half a surrogate pair ({text[e.start]!r} at character {e.start}), not "
                         f"text") from None
    return text


def role_of(msg, key: str) -> str | None:
    """A message's role as chat templates name it ("Human" too, lowercased), None for an unknown one; a ValueError
    for a message that is no object."""
    if not isinstance(msg, dict):
        raise ValueError(f"`{key}` must hold objects with `from`/`value` (or `role`/`content`)")
    return ROLES.get(str(msg.get("from", msg.get("role"))).lower())


def speaker_of(msg: dict) -> dict:
    """A message's OpenAI `name` (who speaks) as serve gives it to the chat template: {"name": str}, else {} (null, or
    not a string, which serve refuses). Kept on every turn: a template writing it (a speaker's name before the text)
    once rendered it in serving and not in training."""
    return {"name": msg["name"]} if isinstance(msg.get("name"), str) else {}


def untrained(msg: dict, role: str, where: str) -> dict:
    """{"weight": 0} for an assistant turn that OpenAI's fine-tuning files mark not to learn from (`"weight": 0`:
    train masks it out of the loss as a prompt), else {}; a ValueError for an assistant turn's weight other than 0 or
    1 (a user turn's is not read)."""
    weight = msg.get("weight")
    if role != "assistant":
        return {}
    # once read as no weight: "0" and 2 trained; JSON's true and false, no integers, were read as 1 and 0 (True == 1)
    if isinstance(weight, (str, bool)) or weight not in (None, 0, 1):
        raise ValueError(f"{where} has weight {weight!r}: OpenAI's fine-tuning files allow 0 (not trained) or 1")
    return {"weight": 0} if weight == 0 else {}


def thinking_of(msg: dict) -> dict:
    """An assistant message's thinking (under any of THOUGHTS: `reasoning_content`, vLLM's newer `reasoning`,
    gpt-oss's `thinking`) as chat templates read it: under every name (Qwen3's template writes the thinking of the
    answers since the last user turn from `reasoning_content`, gpt-oss's the last answer's and a tool call's from
    `thinking`); {} where it has none. A ValueError naming the key for one that is no string, or the two keys holding
    two different thoughts (`two_thoughts`: which to train is the data's to say)."""
    if key := unwritten_thought(msg):
        raise ValueError(f"has {key} {msg[key]!r}: write the answer's thinking as a string, or leave it out")
    if keys := two_thoughts(msg):
        first, other = keys
        raise ValueError(f"has two thoughts, {first} {msg[first]!r:.40} and {other} {msg[other]!r:.40}: keep the "
                         f"answer's thinking under one of them")
    given = [msg[key] for key in THOUGHTS if msg.get(key) is not None]
    return dict.fromkeys(THOUGHTS, max(given, key=bool)) if given else {}  # the thought, else a blank one


def unwritten_thought(msg: dict) -> str | None:
    """The first key of THOUGHTS whose value in msg is neither null nor a string (None: none is)."""
    return next((key for key in THOUGHTS if msg.get(key) is not None and not isinstance(msg[key], str)), None)


def two_thoughts(msg: dict) -> tuple[str, str] | None:
    """(the first key of THOUGHTS given a thought in msg, the first holding another thought), or None where all
    those given are alike (vLLM answers one under two names) or blank (a client's empty field beside the thought)."""
    given = [key for key in THOUGHTS if msg.get(key)]
    other = next((key for key in given if msg[key] != msg[given[0]]), None)
    return (given[0], other) if other else None


def assistant_thinking(msg: dict, role: str, where: str) -> dict:
    """An assistant turn's `thinking_of` (dropped once: the answer trained after an empty <think> block), {} for
    another turn; the ValueError names `where`."""
    try:
        return thinking_of(msg) if role == "assistant" else {}
    except ValueError as e:
        raise ValueError(f"{where} {e}") from None


def tool_turn(msg: dict, who: str, where: str) -> dict | None:
    """A tool call (OpenAI's assistant turn with `tool_calls`, or its legacy LEGACY_CALL; a CALLS turn) as an
    assistant turn with `tool_calls` (`template_tool_calls`: arguments given as JSON text passed as the object, which
    Qwen2.5's template writes `| tojson`), its content "" when null (a CALLS turn's always: its value is the call);
    a RESULTS turn as {"role": "tool", "content"}, its `tool_call_id` and `name` kept (as serve gives them to the
    template); None for any other turn. A ValueError names a call it cannot read."""
    if ROLES.get(who) == "assistant":
        legacy = msg.get(LEGACY_CALL)
        calls = msg.get("tool_calls") or ([{"type": "function", "function": legacy}] if isinstance(legacy, dict)
                                          and legacy else None)
    else:
        calls = _call_json(msg, who, where)
    if who in RESULTS:
        text = check_text(_text_or_refuse(msg, who, where), where)
        return {"role": "tool", "content": text} | {key: msg[key] for key in ("tool_call_id", "name")
                                                    if isinstance(msg.get(key), str)}
    if not calls:
        return None
    try:
        calls = template_tool_calls(calls)
    except ValueError:
        raise ValueError(f"{where} has a tool call that is not {{\"type\": \"function\", \"function\": {{\"name\": "
                         f"str, \"arguments\": JSON object}}}}: fix or remove that record") from None
    # a CALLS turn's `content` ({"role": "function_call", "content": ...}) is its call's JSON, no text: written
    # as the answer's text too, the call was trained twice
    content = "" if who in CALLS or msg.get("content") is None else _text_or_refuse(msg, who, where)
    return ({"role": "assistant", "content": check_text(content, where)} | speaker_of(msg)
            | assistant_thinking(msg, "assistant", where) | {"tool_calls": calls})


def template_tool_calls(calls) -> list[dict]:
    """OpenAI's `tool_calls` (an assistant turn's, a serve request's) as chat templates read them: arguments sent as a
    JSON object's text are given as the object (Qwen2.5's template writes `arguments | tojson`, which would quote the
    text again; Qwen3's writes a string as it is), and "" as {}, as vLLM gives them; other text (no JSON, JSON of no
    object) as it is. A ValueError for calls of another shape."""
    if calls is None or calls == []:
        return []
    if not isinstance(calls, list):
        raise ValueError("tool_calls is not a list")
    out = []
    for call in calls:
        function = call.get("function") if isinstance(call, dict) else None
        if (not isinstance(function, dict) or call.get("type", "function") != "function"
                or not isinstance(function.get("name"), str)
                or not isinstance(function.get("arguments"), (str, dict))):
            raise ValueError("a tool call of another shape")
        arguments = function["arguments"] or {}  # "": a call without arguments, as vLLM reads it
        if isinstance(arguments, str):
            parsed = json_or_none(arguments)
            arguments = parsed if isinstance(parsed, dict) else arguments
        out.append({**({"id": call["id"]} if isinstance(call.get("id"), str) else {}), "type": "function",
                    "function": {"name": function["name"], "arguments": arguments}})
    return out


def _call_json(msg: dict, who: str, where: str) -> list | None:
    """A CALLS turn's value, {"name", "arguments"} or a list of them, as OpenAI's `tool_calls`; None for another
    turn. glaive's own files write the arguments as single-quoted JSON text (a Python literal, not JSON): read too."""
    if who not in CALLS:
        return None
    value = msg.get("value", msg.get("content"))
    call = json_or_none(value) if isinstance(value, str) else None
    if call is None and isinstance(value, str):
        try:
            call = ast.literal_eval(value.strip())
            json.dumps(call)  # a literal JSON has not (a set, bytes) is no call a template writes
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            call = None
    calls = call if isinstance(call, list) else [call]
    if not calls or not all(isinstance(c, dict) and isinstance(c.get("name"), str) for c in calls):
        raise ValueError(f"{where} ({who}) is not a tool call's JSON, {{\"name\": ..., \"arguments\": {{...}}}}: fix "
                         f"or remove that record")
    return [{"type": "function", "function": {"name": c["name"], "arguments": c.get("arguments", {})}} for c in calls]


def _text_or_refuse(msg: dict, who: str, where: str) -> str:
    text = text_of(msg.get("value", msg.get("content")))
    if not isinstance(text, str):
        raise ValueError(f"{where} ({who!r}) has a `value`/`content` of {text!r}, not a string")
    return text


def json_or_none(text: str):
    """text's JSON value, or None where json cannot read it (`json_loads`: not JSON, or JSON nested too deeply or
    holding a number too long to read)."""
    try:
        return json_loads(text)
    except ValueError:  # a JSONDecodeError
        return None
