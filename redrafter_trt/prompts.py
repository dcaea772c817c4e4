"""Prompt files: one prompt per record, read from jsonl (one JSON object per line) or a JSON list (ShareGPT).

A record is a conversation (`messages_of`, which `train --data` reads too), through the first key present of:
    conversations   ShareGPT: a list of {"from": "human"|"gpt"|"system"|..., "value": str} (or {"role", "content"};
                    a content may be OpenAI's list of text parts)
    messages        OpenAI style: the same, as `train --data` and `serve` take it
    conversation    LMSYS-Chat-1M's and WildChat's: the same (a message's other keys, WildChat's `language`,
                    `toxic`, `turn_identifier`..., are left alone); LDJnr/Capybara's: exchanges, {"input": a user
                    turn, "output": its answer} (`EXCHANGE`: in any of these lists)
    prompt          a string
    turns           a list of strings; the first turn is the prompt (MT-Bench)
    question        a string (GSM8K)
    instruction     a string (Alpaca; a non-empty `input`, Dolly's `context` or LLaMA-Factory's `query`, is appended
                    after a blank line)
    query           a string (MetaMathQA; its `original_question` is not read)
    system          beside any of these (LLaMA-Factory's column; OpenOrca's `system_prompt`): the system prompt
                    (of the two, the first neither null nor blank)
    history         beside a prompt (LLaMA-Factory's Alpaca column): the turns before it, [[instruction, answer], ...]
    tools           beside any of these (OpenAI's; its legacy `functions`; LLaMA-Factory's and xLAM's, a JSON
                    string): the tool definitions the chat template is given with the prompt (`tools_of`)
A conversation key holding no list of messages (a transcript string, null: another source's column in a mixed
table) is passed over for a later one or a prompt key (`chat_key`); read alone, it is refused.
A record's prompt (`prompt_of`) is its conversation up to its first answer, what `train --distill` answers: the
system messages and every user turn before it (two human turns in a row are one prompt; run, bench and acceptance
once took the first alone, train both). A `Prompt` is those messages, which the chat template renders as train does,
and as a str the user turns' text, joined by a blank line: without the chat template a prompt is that text alone, as
TensorRT-LLM's run.py takes plain text (a system prompt is the template's part: calibration and --no-chat send the
user's text as written).
A bare JSON string on a line is a prompt too. Blank lines are skipped. Anything else is a `ConfigError`
naming the file and the line (jsonl) or the record index (JSON list). A `.txt` file is plain text, one prompt per
line, as TensorRT-LLM's `run.py --input_file prompts.txt` reads it (`records`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Iterable, Iterator, TypeVar

from .errors import ConfigError, UnreadableJSON, check_input_file, json_loads, read_text
from .message_fields import (CALLS, assistant_thinking, check_text, json_or_none, role_of, speaker_of, text_of,
                             tool_turn, untrained)
from .plural import counted
from .token_files import is_token_file

T = TypeVar("T")

log = logging.getLogger(__name__)

PLAIN_TEXT = (".txt",)  # file suffixes read as one prompt per line, not JSON
AS_TXT = ", or name the file .txt to read it one prompt per line"  # after a JSON error on a file's first line
CHATS = ("conversations", "messages", "conversation")  # read before a prompt key, as train reads them: they hold the
# answers; the first holding messages is read (`chat_key`; `conversation`: LMSYS-Chat-1M's and WildChat's)
TEXTS = ("prompt", "turns", "question", "instruction", "query")  # `query`: MetaMathQA's (after `instruction`, whose
# input it is in LLaMA-Factory's columns)
KEYS = (*TEXTS, *CHATS)
INPUTS = ("input", "context", "query")  # what an instruction works on: Alpaca's `input`, Dolly's `context`,
# LLaMA-Factory's `query` (its name for `input`)
ANSWER_KEYS = ("answer", "response", "output", "completion")
SYSTEMS = ("system", "system_prompt")  # a record's system prompt, the first neither null nor blank: LLaMA-Factory's,
# OpenOrca's
EXCHANGE = (("input", "user"), ("output", "assistant"))  # a message with neither `from` nor `role` holding `input`:
# one exchange, its keys' turns in this order (LDJnr/Capybara's and Pure-Dove's {"input", "output"}, in `conversation`)
TOOLS = ("tools", "functions")  # a record's tool definitions, given to the chat template (the first neither null nor
# blank): OpenAI's chat-completions `tools`, [{"type": "function", "function": {...}}], or its legacy `functions`, the
# {...} alone; LLaMA-Factory's and xLAM's `tools` is such a list of bare definitions as a JSON string. A bare one is
# given as OpenAI's `tools` lists it (as clients send it to an inference server, which gives it to the template)


class Prompt(str):
    """A prompt's text, as a str (plain-text users, calibration and --no-chat, read it as it is), with `turns`: the
    messages the chat template renders (`messages`), its user turn alone unless given; `tools`: the tool
    definitions the template is given with them (`tools_of`); and `where`: its file and line (`load_prompts`), or
    None."""

    def __new__(cls, text: str, turns: Iterable[dict] | None = None, tools: Iterable[dict] = (),
                where: str | None = None):
        self = super().__new__(cls, text)
        self.turns = tuple(turns) if turns is not None else ({"role": "user", "content": text},)
        self.tools = tuple(tools)
        self.where = where
        return self

    def messages(self) -> list[dict]:
        """The chat template's messages: the system messages and user turns before the record's first answer."""
        return [dict(m) for m in self.turns]


def names_of(prompts: list[str]) -> list[str | None]:
    """Each prompt's file and line (`Prompt.where`), None for one that has none (a str, --input-text's)."""
    return [getattr(p, "where", None) for p in prompts]


def spread_indices(n: int, k: int | None) -> list[int]:
    """Which k of a file's n prompts are taken wherever a count of them is asked for (bench's and acceptance's
    --num-prompts, the quickstart's questions, the scripts'; not convert's --calib-size, whose set is shipped
    interleaved for its first N): indices from 0, in the file's
    order, spread evenly over it, i * n // k for i < k; all n without k or where k >= n. A file sorted by category, as
    MT-Bench is, gives each category its share: the first 20 of MT-Bench's 80 were writing and roleplay alone."""
    if not k or k >= n:
        return list(range(n))
    return [i * n // k for i in range(k)]


def take_spread(items: list[T], k: int | None) -> list[T]:
    """k of `items` spread evenly over them, in their order (spread_indices); all of them without k."""
    return [items[i] for i in spread_indices(len(items), k)]


def prompt_of(record) -> Prompt:
    """The prompt a record carries: its conversation up to the first answer (`before_answer`); raises ValueError
    (with the reason) when it carries none. Nothing after that answer is read."""
    turns = before_answer(messages_of(record, prompt_only=True))
    text = "\n\n".join(m["content"] for m in turns if m["role"] == "user")
    if not text.strip():  # a string or a prompt key is refused empty before: a conversation's, or `history`'s
        key = chat_key(record)
        where = "`history`'s first instruction" if key is None else f"`{key}` message " \
            f"{next(n for n, m in _numbered(record[key]) if role_of(m, key) == 'user')}, its first human/user message,"
        raise ValueError(f"{where} is empty: write its prompt, or remove that record")  # was "`conversations` must be
        # a non-empty string", of a list
    return Prompt(text, turns, tools_of(record))


def before_answer(messages: Iterable[dict]) -> list[dict]:
    """The messages before the first assistant turn (a conversation's prompt: what `train --distill` answers, and
    run, bench and acceptance send)."""
    out = []
    for m in messages:
        if m["role"] == "assistant":
            break
        out.append(m)
    return out


def messages_of(record, prompt_only: bool = False, tool_turns: bool = False) -> Iterator[dict]:
    """A record's conversation, in order, as chat templates take it: {"role": "system"|"user"|"assistant", "content"}.
    Its system prompt column (`system_of`) opens it unless its own messages open with a system one; then a CHATS
    list's messages (less assistant turns before the first user turn: some ShareGPT dumps open with the bot's
    greeting, which no chat template expects), or an Alpaca `history`'s turns, the prompt and its answer (the first
    of ANSWER_KEYS neither null nor blank, `first_filled`, as it is: train checks it). A ValueError names what it
    cannot read, read lazily: a prompt reads nothing after its first answer. prompt_only: a CHATS list ends before its first answer, a tool call
    too (a CALLS turn, an assistant one of null content beside `tool_calls`), nothing after it read. tool_turns (train
    without --distill): a tool call is an assistant turn with `tool_calls` (`tool_turn`), a RESULTS turn a "tool" one,
    its `tool_call_id` kept; else both are refused. A message's `name` (who speaks) is kept on every turn, as serve
    keeps it (`speaker_of`)."""
    key, column = system_of(record) if isinstance(record, dict) else (None, None)
    turns = _turns(record, prompt_only, tool_turns)
    first = next(turns)  # every record's turns hold a user turn, or raised
    if column and first["role"] != "system":  # its text checked only here: a column the messages' own system
        yield {"role": "system", "content": check_text(column, f"`{key}`")}  # message replaces is not read
    yield first
    yield from turns


def chat_key(record) -> str | None:
    """The CHATS key a record's conversation is read from: the first holding a non-empty list; else, for a record
    with no prompt key, the first present (refused by `_chat`); else None (a string or null `conversation` beside
    question + response, as OpenOrca-derived and mixed tables have, once refused the record)."""
    if not isinstance(record, dict):
        return None
    key = next((k for k in CHATS if isinstance(record.get(k), list) and record[k]), None)
    if key is None and not any(k in record for k in TEXTS):
        key = next((k for k in CHATS if k in record), None)
    return key


def _turns(record, prompt_only: bool, tool_turns: bool) -> Iterator[dict]:
    key = chat_key(record)
    if key:
        yield from _chat(record[key], key, prompt_only, tool_turns)
        return
    yield from _history(record)
    yield {"role": "user", "content": _prompt_text(record)}
    key = first_filled(record, ANSWER_KEYS) if isinstance(record, dict) else None
    if key:  # "" is none, as null is: a file written for generation ("output": "") holds prompts
        yield {"role": "assistant", "content": record[key]}


def first_filled(record: dict, keys: Iterable[str]) -> str | None:
    """The first of `keys` holding a value: neither null nor a blank string (a mixed table's row holds the other
    datasets' columns as null, or as "": once refused as the prompt, or read as no answer)."""
    return next((k for k in keys if record.get(k) is not None
                 and not (isinstance(record[k], str) and not record[k].strip())), None)


def _chat(messages, key: str, prompt_only: bool, tool_turns: bool) -> Iterator[dict]:
    if not isinstance(messages, list) or not messages:
        raise ValueError(f"`{key}` must be a non-empty list of messages")
    seen_user = False
    for n, msg in _numbered(messages):
        role, who, where = role_of(msg, key), msg.get("from", msg.get("role")), f"`{key}` message {n}"
        if prompt_only and seen_user and (role == "assistant" or str(who).lower() in CALLS):
            return  # the prompt's answer, a tool call's null content too: not read
        if tool_turns and seen_user and (tool := tool_turn(msg, str(who).lower(), where)):
            yield tool | untrained(msg, tool["role"], where)
            continue
        text = text_of(msg.get("value", msg.get("content")))
        if role is None and not {"from", "role"} & msg.keys():  # once 'with role None'
            raise ValueError(f"`{key}` message {n} has no `from` or `role` (it holds {', '.join(msg) or 'nothing'}): "
                             f"write each message as {{\"role\": \"user\"|\"assistant\", \"content\": ...}}")
        if role is None:
            raise ValueError(f"`{key}` has a message with role {who!r}: expected human/user, gpt/assistant or system")
        if not isinstance(text, str):
            raise ValueError(f"`{key}` has a {who!r} message whose `value`/`content` is {text!r}, not a string")
        if role == "assistant" and not seen_user:
            continue
        seen_user = seen_user or role == "user"
        yield ({"role": role, "content": check_text(text, where)} | speaker_of(msg) | untrained(msg, role, where)
               | assistant_thinking(msg, role, where))
    if not seen_user:
        raise ValueError(f"`{key}` has no human/user message")


def _numbered(messages: list) -> Iterator[tuple[int, object]]:
    """(n, message) for each of a conversation's messages, 1-based; an EXCHANGE message gives its turns, each
    numbered n, as {"role", "content"}."""
    for n, msg in enumerate(messages, start=1):
        if isinstance(msg, dict) and EXCHANGE[0][0] in msg and not {"from", "role"} & msg.keys():
            yield from ((n, {"role": role, "content": msg[part]}) for part, role in EXCHANGE if part in msg)
        else:
            yield n, msg


def _history(record) -> list[dict]:
    """The turns before a record's prompt in LLaMA-Factory's Alpaca column `history`: [[instruction, answer], ...]
    (dropped once without a word, so a later turn's answer trained after a prompt without the turns it follows)."""
    history = record.get("history") if isinstance(record, dict) else None
    if history is None:
        return []
    pairs = isinstance(history, list) and all(isinstance(turn, list) and len(turn) == 2
                                              and all(isinstance(text, str) for text in turn) for turn in history)
    if not pairs:
        raise ValueError("`history` must list the earlier turns as [[instruction, answer], ...] (strings)")
    return [{"role": role, "content": check_text(text, "`history`")} for turn in history
            for role, text in zip(("user", "assistant"), turn)]


def _prompt_text(record) -> str:
    """The prompt of a record that is no conversation: a string, or the text of its first prompt key holding one."""
    if isinstance(record, str):
        if not record.strip():
            raise ValueError("empty prompt")
        return check_text(record, "the prompt")
    if not isinstance(record, dict):
        wrap = ": wrap a list of messages as {\"conversations\": [...]}" if isinstance(record, list) else ""
        raise ValueError(f"expected a JSON object like {{\"prompt\": \"...\"}}, got {type(record).__name__}{wrap}")
    # the first holding a value (a mixed table's rows hold every column, null or "" where another dataset's), as
    # answers are read; else the first present, refused below
    key = first_filled(record, TEXTS) or next((k for k in TEXTS if k in record), None)
    if key is None:
        raise ValueError(f"no prompt: expected one of the keys {', '.join(KEYS)}{message_hint(record)}")
    value = record[key]
    if key == "turns":
        if not isinstance(value, list) or not value or not isinstance(value[0], str):
            raise ValueError("`turns` must be a non-empty list of strings")
        value = value[0]
    elif key == "instruction" and isinstance(value, str):
        value = "\n\n".join([value, *(record[k] for k in INPUTS if isinstance(record.get(k), str)
                                      and record[k].strip())])
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"`{key}` must be a non-empty string")
    return check_text(value, f"`{key}`")


def message_hint(record: dict) -> str:
    """For a record that is one chat message (a JSON list of messages read as records, one per message), how to
    write it; else ""."""
    if {"role", "from"} & record.keys() and {"content", "value"} & record.keys():
        return " (this is one message: put a conversation's messages in {\"conversations\": [...]})"
    return ""


def system_of(record: dict) -> tuple[str | None, str | None]:
    """(key, text) of a record's system prompt, the first of SYSTEMS neither null nor blank (`first_filled`:
    LLaMA-Factory's `system` column, OpenOrca's `system_prompt`; a mixed table's {"system": "", "system_prompt": ...}
    once dropped it), or (None, None); a ValueError for one that is no string."""
    key = first_filled(record, SYSTEMS)
    if key is not None and not isinstance(record[key], str):
        raise ValueError(f"`{key}` is {record[key]!r}: write the system prompt as a string")
    return (key, record[key]) if key else (None, None)


def tools_of(record) -> tuple[dict, ...]:
    """The tool definitions a record gives its chat template (the first of TOOLS neither null nor blank), each as
    OpenAI's `tools` lists one; () for none. A list, one tool alone, and each (or all) as a JSON string (parquet
    exports of tool-calling sets store them so) are read. A ValueError for anything else."""
    key = first_filled(record, TOOLS) if isinstance(record, dict) else None
    if key is None:
        return ()
    tools = json_or_none(record[key]) if isinstance(record[key], str) else record[key]
    tools = [tools] if isinstance(tools, dict) else tools
    if isinstance(tools, list):
        tools = [json_or_none(tool) if isinstance(tool, str) else tool for tool in tools]
    if not isinstance(tools, list) or not all(isinstance(tool, dict) for tool in tools):
        raise ValueError(f"`{key}` must list the tool definitions, [{{\"type\": \"function\", \"function\": "
                         f"{{\"name\": ..., \"parameters\": ...}}}}, ...] (or that list as a JSON string), not "
                         f"{record[key]!r:.80}")
    return tuple(tool if {"type", "function"} & tool.keys() else {"type": "function", "function": tool}
                 for tool in tools)


def load_prompts(path: Path | str) -> list[Prompt]:
    """Every prompt in a jsonl file (or a JSON list file), in file order, with its system messages. Raises
    `ConfigError` for a missing or empty file and for a malformed record (naming its line)."""
    path = Path(path)
    check_input_file(path, "input file", "pass a jsonl file (one record a line), a ShareGPT .json or a .txt of "
                                         "prompts, one a line")
    if is_token_file(path):  # once read as JSON and told to be named .txt, which read its ids as text
        raise ConfigError(f"{path} holds token ids (TensorRT-LLM run.py's .csv or .npy), read by `redrafter-trt run` "
                          f"alone: pass the prompts as text, a .txt (one a line) or jsonl")
    plain = path.suffix.lower() in PLAIN_TEXT
    prompts, later = [], 0
    for where, record in records(path, read_text(path, "save it as UTF-8" if plain else "save it as UTF-8 jsonl")):
        try:  # a .txt's line is its prompt as it is, blank too (run.py's)
            prompts.append(Prompt(check_text(record, "the line")) if plain else prompt_of(record))
        except ValueError as e:
            raise ConfigError(f"{path} {where}: {e}") from None
        prompts[-1].where = f"{path} {where}"
        later += asks_after_answer(record, prompts[-1])
    if later:  # once left out without a word, where train --distill says it: a multi-turn chat lost its later turns
        log.warning("%s of %d %s user turns after an answer: each is sent up to its first answer, and those turns "
                    "are left out", counted(later, "conversation"), len(prompts), "holds" if later == 1 else "hold")
    if not any(p.strip() for p in prompts):
        raise ConfigError(f"input file {path} holds no prompts: add lines like "
                          + ("'What is ReDrafter?'" if plain else '{"prompt": "..."}'))
    return prompts


def asks_after_answer(record, prompt: Prompt) -> bool:
    """Whether a record's conversation holds a user turn after the answer its prompt (`prompt_of`) ends before, as
    train --distill counts them; a turn there that cannot be read (never read for the prompt) ends the count: the
    turns before it are read (read all first, one such turn once hid them)."""
    try:
        return any(m["role"] == "user" for n, m in enumerate(messages_of(record, tool_turns=True))
                   if n >= len(prompt.turns))
    except ValueError:
        return False


def records(path: Path, text: str) -> list[tuple[str, object]]:
    """(where, record) for each record of a JSON list or jsonl text, where = "line N" or "record N of its JSON
    list" (1-based); blank lines are skipped. A file that is one JSON object over several lines is one record (once
    refused as jsonl whose line 1 is not valid JSON). A ConfigError when the text is neither. A `.txt` path's records
    are its lines as TensorRT-LLM's run.py reads them (readlines), each a prompt (a bare string): its newline and
    spaces kept, a blank line too (stripped and skipped once, so run.py's engine and `run` saw other token ids); a
    leading UTF-8 byte-order mark alone differs: read_text dropped it, where run.py keeps U+FEFF on its first line. Lines
    end at "\n" alone (read_text made "\r\n" and "\r" one, as run.py's text mode): str.splitlines also cut at U+2028,
    U+2029 and U+0085, which json.dumps(ensure_ascii=False) writes unescaped inside strings, so a valid jsonl line was
    refused as not JSON."""
    if path.suffix.lower() in PLAIN_TEXT:
        *ended, last = text.split("\n")
        return [(f"line {n}", line) for n, line in enumerate([line + "\n" for line in ended] + [last] * bool(last),
                                                               start=1)]
    if text.lstrip().startswith("["):
        try:
            return [(f"record {i} of its JSON list", r) for i, r in enumerate(json_loads(text), start=1)]
        except json.JSONDecodeError as e:
            if e.msg == "Extra data" and (n := _list_line(text)):  # jsonl with a bare list of messages on a line
                raise ConfigError(f"{path} line {n} is a JSON list, not an object: jsonl takes one "
                                  f"object per line: wrap each line's messages as {{\"conversations\": [...]}}, "
                                  f"or make the whole file one JSON list") from None
            first = text[:len(text) - len(text.lstrip())].count("\n") + 1  # the "["'s line
            # "[INST] ...": plain prompts? (not for JSON nested too deeply or holding a number too long)
            plain = AS_TXT if e.lineno == first and not isinstance(e, UnreadableJSON) else ""
            raise ConfigError(f"{path} is not valid JSON ({e.msg}: line {e.lineno}): fix it, or write "
                              f"jsonl{plain}") from None
    located = []
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            located.append((f"line {lineno}", json_loads(line)))
        except json.JSONDecodeError as e:
            if not located and isinstance(whole := json_or_none(text), dict):  # one record, pretty-printed
                return [("(its one JSON object)", whole)]
            plain = "" if located or isinstance(e, UnreadableJSON) else AS_TXT  # plain text?
            raise ConfigError(f"{path} line {lineno} is not valid JSON ({e.msg}): write one JSON object per "
                              f"line{plain}") from None
    return located


def _list_line(text: str) -> int | None:
    """The number of the first non-blank line when it is a whole JSON list by itself, else None."""
    lineno, line = next((n, line) for n, line in enumerate(text.split("\n"), start=1) if line.strip())
    try:
        return lineno if isinstance(json_loads(line), list) else None
    except json.JSONDecodeError:
        return None
