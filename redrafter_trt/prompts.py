"""Prompt files: one prompt per record, read from jsonl (one JSON object per line) or a JSON list (ShareGPT).

A record gives its prompt through the first key present, in this order:
    prompt          a string
    turns           a list of strings; the first turn is the prompt (MT-Bench)
    question        a string (GSM8K)
    instruction     a string (Alpaca; a non-empty `input` is appended after a blank line)
    conversations   ShareGPT: a list of {"from": "human"|"user"|..., "value": str} (or {"role", "content"});
                    the first human/user message is the prompt
A bare JSON string on a line is a prompt too. Blank lines are skipped. Anything else is a `ConfigError`
naming the file and the line (jsonl) or the record index (JSON list).
"""

from __future__ import annotations

import json
from pathlib import Path

from .errors import ConfigError, read_text

KEYS = ("prompt", "turns", "question", "instruction", "conversations")
HUMAN = {"human", "user"}


def prompt_of(record) -> str:
    """The prompt a record carries; raises ValueError (with the reason) when it carries none."""
    if isinstance(record, str):
        if not record.strip():
            raise ValueError("empty prompt")
        return record
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object like {{\"prompt\": \"...\"}}, got {type(record).__name__}")
    for key in KEYS:
        if key not in record:
            continue
        value = record[key]
        if key == "turns":
            if not isinstance(value, list) or not value or not isinstance(value[0], str):
                raise ValueError("`turns` must be a non-empty list of strings")
            value = value[0]
        elif key == "conversations":
            value = _first_human(value)
        elif key == "instruction" and isinstance(value, str) and isinstance(record.get("input"), str) \
                and record["input"].strip():
            value = f"{value}\n\n{record['input']}"
        if not isinstance(value, str) or not value.strip():
            raise ValueError(f"`{key}` must be a non-empty string")
        return value
    raise ValueError(f"no prompt: expected one of the keys {', '.join(KEYS)}")


def _first_human(conversations) -> str:
    if not isinstance(conversations, list):
        raise ValueError("`conversations` must be a list of messages")
    for msg in conversations:
        if not isinstance(msg, dict):
            raise ValueError("`conversations` must hold objects with `from`/`value` (or `role`/`content`)")
        who = msg.get("from", msg.get("role"))
        text = msg.get("value", msg.get("content"))
        if who in HUMAN and isinstance(text, str):
            return text
    raise ValueError("`conversations` has no human/user message")


def load_prompts(path: Path | str) -> list[str]:
    """Every prompt in a jsonl file (or a JSON list file), in file order. Raises `ConfigError` for a missing
    or empty file and for a malformed record (naming its line)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"input file {path} {'is a folder' if path.is_dir() else 'does not exist'}: pass a jsonl "
                          "file with one prompt per line")
    text = read_text(path, "save it as UTF-8 jsonl")
    stripped = text.lstrip()
    if stripped.startswith("["):
        prompts = _load_json_list(path, text)
    else:
        prompts = _load_jsonl(path, text)
    if not prompts:
        raise ConfigError(f"input file {path} holds no prompts: add lines like {{\"prompt\": \"...\"}}")
    return prompts


def _load_jsonl(path: Path, text: str) -> list[str]:
    prompts = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path} line {lineno} is not valid JSON ({e.msg}): "
                              f"write one JSON object per line") from None
        try:
            prompts.append(prompt_of(record))
        except ValueError as e:
            raise ConfigError(f"{path} line {lineno}: {e}") from None
    return prompts


def _load_json_list(path: Path, text: str) -> list[str]:
    try:
        records = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path} is not valid JSON ({e.msg} at line {e.lineno}): fix it, or write jsonl") from None
    if not isinstance(records, list):
        raise ConfigError(f"{path} must be a JSON list of records or jsonl")
    prompts = []
    for i, record in enumerate(records):
        try:
            prompts.append(prompt_of(record))
        except ValueError as e:
            raise ConfigError(f"{path} record {i + 1} of its JSON list: {e}") from None
    return prompts
