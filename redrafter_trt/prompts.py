"""Prompt files: one prompt per record, read from jsonl (one JSON object per line) or a JSON list (ShareGPT).

A record gives its prompt through the first key present, in this order:
    prompt          a string
    turns           a list of strings; the first turn is the prompt (MT-Bench)
    question        a string (GSM8K)
    instruction     a string (Alpaca; a non-empty `input`, or Dolly's `context`, is appended after a blank line)
    conversations   ShareGPT: a list of {"from": "human"|"user"|..., "value": str} (or {"role", "content"}; a
                    content may be OpenAI's list of text parts); the first human/user message is the prompt
    messages        OpenAI style: the same, as `train --data` and `serve` take it
    system          beside any of these (LLaMA-Factory's column): the system prompt
A prompt is a `Prompt`: its text, with the system messages the chat template puts before it, as `train --data` renders
the record: a conversation's own system/developer messages before its first human turn, else the record's `system`
column (dropped once, so run, bench and acceptance rendered the template's default system prompt where train had the
record's). Without the chat template a prompt is its text alone, as TensorRT-LLM's run.py takes plain text (a system
prompt is the template's part: calibration and --no-chat send the user's text as written).
A bare JSON string on a line is a prompt too. Blank lines are skipped. Anything else is a `ConfigError`
naming the file and the line (jsonl) or the record index (JSON list). A `.txt` file is plain text, one prompt per
non-blank line, as TensorRT-LLM's `run.py --input_file prompts.txt` reads it.
"""

from __future__ import annotations

import json
from pathlib import Path

from .errors import ConfigError, read_text

PLAIN_TEXT = (".txt",)  # file suffixes read as one prompt per line, not JSON
KEYS = ("prompt", "turns", "question", "instruction", "conversations", "messages")
HUMAN = {"human", "user"}
INPUTS = ("input", "context")  # what an instruction works on: Alpaca's `input`, Dolly's `context`


SYSTEM = {"system", "developer"}  # newer OpenAI clients send the system prompt as "developer" (train and serve too)


class Prompt(str):
    """A prompt's text, as a str (plain-text users, calibration and --no-chat, read it as it is), with `system`: the
    system messages a chat template puts before it (`messages`)."""

    def __new__(cls, text: str, system: tuple[str, ...] = ()):
        self = super().__new__(cls, text)
        self.system = tuple(system)
        return self

    def messages(self) -> list[dict]:
        """The chat template's messages: the system messages, then the prompt as the user turn."""
        return [*({"role": "system", "content": s} for s in self.system), {"role": "user", "content": str(self)}]


def prompt_of(record) -> Prompt:
    """The prompt a record carries, with its system messages; raises ValueError (with the reason) when it carries
    none."""
    if isinstance(record, str):
        if not record.strip():
            raise ValueError("empty prompt")
        return Prompt(check_text(record, "the prompt"))
    if not isinstance(record, dict):
        wrap = ": wrap a list of messages as {\"conversations\": [...]}" if isinstance(record, list) else ""
        raise ValueError(f"expected a JSON object like {{\"prompt\": \"...\"}}, got {type(record).__name__}{wrap}")
    for key in KEYS:
        if key not in record:
            continue
        value, system = record[key], ()
        if key == "turns":
            if not isinstance(value, list) or not value or not isinstance(value[0], str):
                raise ValueError("`turns` must be a non-empty list of strings")
            value = value[0]
        elif key in ("conversations", "messages"):
            value, system = _first_human(value, key)
        elif key == "instruction" and isinstance(value, str):
            value = "\n\n".join([value, *(record[k] for k in INPUTS if isinstance(record.get(k), str)
                                          and record[k].strip())])
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"`{key}` must be a non-empty string")
        column = system_of(record)
        return Prompt(check_text(value, f"`{key}`"), system or ((column,) if column else ()))
    raise ValueError(f"no prompt: expected one of the keys {', '.join(KEYS)}{message_hint(record)}")


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


def message_hint(record: dict) -> str:
    """For a record that is one chat message (a JSON list of messages read as records, one per message), how to
    write it; else ""."""
    if {"role", "from"} & record.keys() and {"content", "value"} & record.keys():
        return " (this is one message: put a conversation's messages in {\"conversations\": [...]})"
    return ""


def text_of(content):
    """A message's text: a string, or OpenAI's list of parts when all are text parts, joined one a line (as
    trtllm-serve's and vLLM's chat_utils join them; `serve` reads messages through it); anything else as it is."""
    if isinstance(content, list) and all(
            isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in content):
        return "\n".join(p["text"] for p in content)
    return content


def system_of(record: dict) -> str | None:
    """A record's `system` column (LLaMA-Factory's), checked: a string or None."""
    system = record.get("system")
    if system is not None and not isinstance(system, str):
        raise ValueError(f"`system` is {system!r}: write the system prompt as a string")
    return system


def _first_human(conversations, key: str) -> tuple[str, tuple[str, ...]]:
    """The first human/user message's text and the system messages before it (those train's conversation opens
    with, which win over a `system` column there too)."""
    if not isinstance(conversations, list):
        raise ValueError(f"`{key}` must be a list of messages")
    system = []
    for n, msg in enumerate(conversations, start=1):
        if not isinstance(msg, dict):
            raise ValueError(f"`{key}` must hold objects with `from`/`value` (or `role`/`content`)")
        who = str(msg.get("from", msg.get("role"))).lower()  # "Human", as train reads it too
        text = text_of(msg.get("value", msg.get("content")))
        if who in SYSTEM:
            if not isinstance(text, str):
                raise ValueError(f"`{key}` has a {who!r} message whose `value`/`content` is {text!r}, not a string")
            system.append(check_text(text, f"`{key}`'s system message"))
        elif who in HUMAN and isinstance(text, str):
            if not text.strip():  # was "`conversations` must be a non-empty string", of a list
                raise ValueError(f"`{key}` message {n}, its first human/user message, is empty: write its prompt, "
                                 f"or remove that record")
            return text, tuple(system)
    raise ValueError(f"`{key}` has no human/user message")


def load_prompts(path: Path | str) -> list[Prompt]:
    """Every prompt in a jsonl file (or a JSON list file), in file order, with its system messages. Raises
    `ConfigError` for a missing or empty file and for a malformed record (naming its line)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"input file {path} {'is a folder' if path.is_dir() else 'does not exist'}: pass a jsonl "
                          "file with one prompt per line")
    prompts = []
    for where, record in records(path, read_text(path, "save it as UTF-8 jsonl")):
        try:
            prompts.append(prompt_of(record))
        except ValueError as e:
            raise ConfigError(f"{path} {where}: {e}") from None
    if not prompts:
        raise ConfigError(f"input file {path} holds no prompts: add lines like "
                          + ("'What is ReDrafter?'" if path.suffix.lower() in PLAIN_TEXT else '{"prompt": "..."}'))
    return prompts


def records(path: Path, text: str) -> list[tuple[str, object]]:
    """(where, record) for each record of a JSON list or jsonl text, where = "line N" or "record N of its JSON
    list" (1-based); blank lines are skipped. A file that is one JSON object over several lines is one record (once
    refused as jsonl whose line 1 is not valid JSON). A ConfigError when the text is neither. A `.txt` path's records
    are its lines, each a prompt (a bare string). Lines end at "\n" alone (read_text made "\r\n" and "\r" one), as
    TensorRT-LLM's run.py (readlines) reads them: str.splitlines also cut at U+2028, U+2029 and U+0085, which
    json.dumps(ensure_ascii=False) writes unescaped inside strings, so a valid jsonl line was refused as not JSON."""
    if path.suffix.lower() in PLAIN_TEXT:
        return [(f"line {n}", line) for n, line in enumerate(text.split("\n"), start=1) if line.strip()]
    if text.lstrip().startswith("["):
        try:
            return [(f"record {i} of its JSON list", r) for i, r in enumerate(json.loads(text), start=1)]
        except json.JSONDecodeError as e:
            if e.msg == "Extra data" and (n := _list_line(text)):  # jsonl with a bare list of messages on a line
                raise ConfigError(f"{path} line {n} is a JSON list, not an object: jsonl takes one "
                                  f"object per line: wrap each line's messages as {{\"conversations\": [...]}}, "
                                  f"or make the whole file one JSON list") from None
            raise ConfigError(f"{path} is not valid JSON ({e.msg} at line {e.lineno}): fix it, or write "
                              f"jsonl") from None
    located = []
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            located.append((f"line {lineno}", json.loads(line)))
        except json.JSONDecodeError as e:
            if not located and isinstance(whole := _json_or_none(text), dict):  # one record, pretty-printed
                return [("(its one JSON object)", whole)]
            raise ConfigError(f"{path} line {lineno} is not valid JSON ({e.msg}): write one JSON object per "
                              f"line") from None
    return located


def _json_or_none(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return None


def _list_line(text: str) -> int | None:
    """The number of the first non-blank line when it is a whole JSON list by itself, else None."""
    lineno, line = next((n, line) for n, line in enumerate(text.split("\n"), start=1) if line.strip())
    try:
        return lineno if isinstance(json.loads(line), list) else None
    except json.JSONDecodeError:
        return None
