"""Training data for the drafter: conversation files in, token sequences with a loss mask out.

Records (jsonl, one object per line, a JSON list such as ShareGPT, or a .txt file's lines, each a prompt):
    conversations   ShareGPT: [{"from": "human"|"gpt"|"system", "value"}] or [{"role", "content"}]
    messages        OpenAI style: [{"role", "content"}], a content a string or a list of text parts, as `serve` takes
    question+answer GSM8K
    prompt+response / prompt+answer / instruction+output (Alpaca)
    anything `redrafter_trt.prompts.prompt_of` accepts: a prompt without an answer (only useful with --distill)
    system          beside any of these (LLaMA-Factory's column): the system prompt, opening the conversation
    history         beside a prompt (LLaMA-Factory's Alpaca column): the turns before it, [[instruction, answer], ...]
A record with nothing to train on is skipped with a warning. Consecutive turns of one role are kept as they are,
and joined only for a chat template that refuses them (Llama-2 and Mistral require alternating roles).

An `Example` is one rendered conversation: `ids` [T] token ids from the base tokenizer's chat template and `mask`
[T] True where the token belongs to an assistant turn (its content and end-of-turn token). System and user tokens,
and the template's role headers, are masked out of the loss.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigError, first_line, read_text
from ..prompts import KEYS as PROMPT_KEYS, check_text, message_hint, prompt_of, records, system_of, text_of
from ..tokens import chat_text, render_chat

if TYPE_CHECKING:
    from .distill import CachedHidden

ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "chatgpt": "assistant",
         "bard": "assistant", "bing": "assistant", "model": "assistant", "system": "system",
         "developer": "system"}  # newer OpenAI clients send the system prompt as "developer" (serve reads it so)
ANSWER_KEYS = ("answer", "response", "output", "completion")

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Conversation:
    """messages: [{"role": "system"|"user"|"assistant", "content": str}]; the last one may be a user turn
    (a prompt still waiting for its answer)."""
    messages: tuple[dict, ...]
    source: str = field(default="", compare=False)  # "FILE line N", named in errors

    @property
    def has_answer(self) -> bool:
        return any(m["role"] == "assistant" for m in self.messages)

    def prompt_messages(self) -> list[dict]:
        """The messages before the first assistant turn (what distillation answers)."""
        out = []
        for m in self.messages:
            if m["role"] == "assistant":
                break
            out.append(m)
        return out


@dataclass(frozen=True, eq=False)
class Example:
    ids: tuple[int, ...]   # [T]
    mask: tuple[bool, ...]  # [T], True = assistant token (a training target)
    hidden: "CachedHidden | None" = None  # [n, H] base hidden states at positions hidden_from.. (distilled data)
    hidden_from: int = 0


def _message(msg, key: str) -> tuple[str, str]:
    """(role, text) of one message."""
    if not isinstance(msg, dict):
        raise ValueError(f"`{key}` must hold objects with `from`/`value` (or `role`/`content`)")
    who, text = msg.get("from", msg.get("role")), text_of(msg.get("value", msg.get("content")))
    role = ROLES.get(str(who).lower())
    if role is None:
        raise ValueError(f"`{key}` has a message with role {who!r}: expected human/user, gpt/assistant or system")
    if not isinstance(text, str):
        raise ValueError(f"`{key}` has a {who!r} message whose `value`/`content` is {text!r}, not a string")
    return role, text


def _messages(raw, key: str) -> list[dict]:
    """The messages, less assistant turns before the first user turn (some ShareGPT dumps open with the bot's
    greeting, which no chat template expects)."""
    if not isinstance(raw, list) or not raw:
        raise ValueError(f"`{key}` must be a non-empty list of messages")
    out: list[dict] = []
    for role, text in (_message(msg, key) for msg in raw):
        if role == "assistant" and not any(m["role"] == "user" for m in out):
            continue
        out.append({"role": role, "content": text})
    if not any(m["role"] == "user" for m in out):
        raise ValueError(f"`{key}` has no user message")
    return out


def join_roles(messages: list[dict]) -> list[dict]:
    """Consecutive turns of one role joined into one, separated by a blank line."""
    out: list[dict] = []
    for m in messages:
        if out and out[-1]["role"] == m["role"]:
            out[-1] = {"role": m["role"], "content": out[-1]["content"] + "\n\n" + m["content"]}
        else:
            out.append(dict(m))
    return out


def conversation_of(record, source: str = "") -> Conversation:
    """One record -> a Conversation; raises ValueError (with the reason) for a record it cannot read.
    source: where the record is ("FILE line N"), for later errors. A record's own `system` string (LLaMA-Factory's
    ShareGPT and Alpaca columns) opens the conversation: it was dropped, and the template's default put in its place."""
    messages = _record_messages(record)
    system = system_of(record) if isinstance(record, dict) else None
    if system and messages[0]["role"] != "system":
        messages = [{"role": "system", "content": system}, *messages]
    for m in messages:
        check_text(m["content"], f"its {m['role']} message")
    return Conversation(tuple(messages), source)


def _record_messages(record) -> list[dict]:
    if isinstance(record, dict):
        for key in ("conversations", "messages"):
            if key in record:
                return _messages(record[key], key)
        for answer_key in ANSWER_KEYS:
            answer = record.get(answer_key)
            if answer is not None and not (isinstance(answer, str) and answer.strip()):
                raise ValueError(f"`{answer_key}` is {answer!r}: write the answer as a non-empty string")
            if answer is not None:
                prompt = _prompt({k: v for k, v in record.items() if k not in ANSWER_KEYS})
                return [*_history(record), {"role": "user", "content": prompt}, {"role": "assistant", "content": answer}]
    return [*_history(record), {"role": "user", "content": _prompt(record)}]


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
    return [{"role": role, "content": text} for turn in history for role, text in zip(("user", "assistant"), turn)]


def _prompt(record) -> str:
    """`prompt_of`, with every key train reads in its refusal of a record that has none."""
    if isinstance(record, dict) and not any(key in record for key in PROMPT_KEYS):
        raise ValueError(f"no prompt: expected one of the keys {', '.join(PROMPT_KEYS)} (an answer under "
                         f"{', '.join(ANSWER_KEYS)}){message_hint(record)}")
    return prompt_of(record)


def read_conversations(path: Path | str) -> list[Conversation]:
    """Every usable record of a jsonl or JSON-list file, in file order. A record with nothing to train on (no user
    message, an unknown role, a message that is not a string: public ShareGPT dumps have some) is skipped with a
    warning. Raises ConfigError for a missing file, one that is not JSON or jsonl, or one without a usable record
    (naming the first refused record's line or number, 1-based)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"data file {path} does not exist: pass jsonl, ShareGPT json or .txt prompt files to --data")
    located = records(path, read_text(path, "save it as UTF-8 jsonl or json"))
    if not located:
        raise ConfigError(f"data file {path} holds no records: add lines like {{\"question\": ..., \"answer\": ...}}")
    out, skipped = [], []
    for where, record in located:
        try:
            out.append(conversation_of(record, f"{path} {where}"))
        except ValueError as e:
            skipped.append(f"{where}: {e}")
    if not out:
        raise ConfigError(f"data file {path} holds no usable record ({skipped[0]}): fix the records, or pass "
                          f"another file")
    if skipped:
        log.warning("%s: skipped %d of %d records with nothing to train on (first: %s)", path, len(skipped),
                    len(located), skipped[0])
    return out


def _render(tokenizer, conv: Conversation, messages: list[dict], add_generation_prompt: bool) -> str:
    """The chat template's text of `messages` (conv's), or a ConfigError: naming the record the template refuses, or
    the template when it renders no prompt at all (not text, broken Jinja: once a TypeError traceback, or every record
    in turn blamed for it)."""
    from jinja2 import TemplateError

    try:
        return render_chat(tokenizer, messages, add_generation_prompt)
    except (TemplateError, TypeError, ValueError) as e:  # jinja's errors; a template that is not text
        why = first_line(e, type(e).__name__)
        try:
            chat_text(tokenizer, "Hi")  # run's one user turn
        except ConfigError:
            raise ConfigError(f"the base's chat template does not render ({why}): fix or re-download the base's "
                              f"chat template (tokenizer_config.json's chat_template, or chat_template.jinja)") from None
        raise ConfigError(f"{conv.source or 'a conversation'}: the base's chat template refuses it ({why}): fix or "
                          f"remove that record") from None


def _as_template_takes(tokenizer, conv: Conversation, messages: list[dict], add_generation_prompt: bool
                       ) -> tuple[list[dict], str]:
    """(messages, the chat template's text of them): `messages` (conv's) as they are, or with consecutive turns of
    one role joined when the template refuses them as they are; a ConfigError when it refuses both."""
    joined = join_roles(messages)
    if joined != messages:
        try:
            return messages, _render(tokenizer, conv, messages, add_generation_prompt)
        except ConfigError:
            pass
    return joined, _render(tokenizer, conv, joined, add_generation_prompt)


def encode(tokenizer, conv: Conversation, max_len: int) -> Example:
    """Render with the chat template and mark assistant tokens.

    Assistant spans are found on the text: the template of messages[:j] with the generation prompt must be a prefix of
    the template of messages[:j+1]; the characters in between are turn j's content and end-of-turn marker. Tokens that
    start inside a span are targets, up to the end of turn the base emits: anything after the tokenizer's EOS in a span
    is not, nor the whitespace after its last special token (ChatML's newline after <|im_end|>, Gemma's after
    <end_of_turn>: template filler between turns, which the base never generates before it stops, whatever its EOS; a
    base whose EOS is <|endoftext|> once trained it). Where a token of the whole text runs across a span's start (an
    answer opening with whitespace merged into the generation prompt's newline), the text is tokenized in pieces cut at
    the spans' starts: the tokens before a turn are then its prompt's (`prompt_ids`), those after what the base emits
    after them. Truncated to `max_len` tokens.
    """
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError("the base tokenizer has no chat template: train a drafter for a chat/instruct model, "
                          "or add a chat_template to its tokenizer_config.json")
    msgs, text = _as_template_takes(tokenizer, conv, list(conv.messages),
                                    add_generation_prompt=not conv.messages[-1]["role"] == "assistant")
    spans = []
    for j, m in enumerate(msgs):
        if m["role"] != "assistant":
            continue
        before = _render(tokenizer, conv, msgs[:j], add_generation_prompt=True)
        through = _render(tokenizer, conv, msgs[: j + 1], add_generation_prompt=False)
        if not (text.startswith(before) and text.startswith(through) and through.startswith(before)):
            raise ConfigError(f"{conv.source or 'a conversation'}: the base's chat template does not render it "
                              f"prefix by prefix (Mistral's moves a system message into the last user turn; "
                              f"DeepSeek-R1's opens its generation prompt with <think>), so its assistant turns cannot "
                              f"be located: drop its system message or later turns, remove that record, or train on "
                              f"the base's own answers with --distill (it renders only the prompt)")
        spans.append((len(before), len(through)))
    ids, starts = _tokenize(tokenizer, text, [a for a, _ in spans])
    ids, starts = ids[:max_len], starts[:max_len]
    eos = tokenizer.eos_token_id
    mask, span_of, after_eos = [], [], False
    span_i = 0
    for tok, start in zip(ids, starts):
        while span_i < len(spans) and start >= spans[span_i][1]:
            span_i, after_eos = span_i + 1, False
        inside = span_i < len(spans) and spans[span_i][0] <= start < spans[span_i][1]
        mask.append(inside and not after_eos)
        span_of.append(span_i if inside else -1)
        if inside and tok == eos:
            after_eos = True
    _untrain_filler(mask, span_of, ids, starts, spans, text, special_ids(tokenizer))
    return Example(tuple(ids), tuple(mask))


def special_ids(tokenizer) -> set[int]:
    """The ids of the tokenizer's special tokens: its named ones and every added token marked special (ChatML's
    <|im_start|> and <|im_end|>, Llama-3's <|eot_id|>)."""
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    return set(tokenizer.all_special_ids) | {i for i, t in added.items() if getattr(t, "special", False)}


def _untrain_filler(mask: list[bool], span_of: list[int], ids: list[int], starts: list[int],
                    spans: list[tuple[int, int]], text: str, special: set[int]) -> None:
    """Unmark, in each assistant span, the tokens after its last special token when only whitespace follows it there
    (the template's separator after the end-of-turn token)."""
    last: dict[int, int] = {}
    for t, (span_i, tok) in enumerate(zip(span_of, ids)):
        if span_i >= 0 and tok in special:
            last[span_i] = t
    for span_i, t in last.items():
        end = t + 1  # a span's tokens are consecutive
        while end < len(ids) and span_of[end] == span_i:
            end += 1
        if end > t + 1 and not text[starts[t + 1]: spans[span_i][1]].strip():
            mask[t + 1: end] = [False] * (end - t - 1)


def _tokenize(tokenizer, text: str, cuts: list[int]) -> tuple[list[int], list[int]]:
    """text's token ids and the character each starts at: the whole text's, or where one of its tokens runs across a
    cut, the pieces' between the cuts (a byte-level BPE merges the "\n" closing ChatML's "<|im_start|>assistant\n"
    with an answer's leading "\n" or " ": the base never sees that token after its prompt, nor the answer's first
    token at its place)."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, starts = enc["input_ids"], [a for a, _ in enc["offset_mapping"]]
    if not any(a < c < b for c in cuts for a, b in enc["offset_mapping"]):
        return ids, starts
    ids, starts = [], []
    bounds = [0, *cuts, len(text)]
    for lo, hi in zip(bounds, bounds[1:]):
        if hi > lo:
            piece = tokenizer(text[lo:hi], add_special_tokens=False, return_offsets_mapping=True)
            ids += piece["input_ids"]
            starts += [lo + a for a, _ in piece["offset_mapping"]]
    return ids, starts


def prompt_ids(tokenizer, conv: Conversation, max_len: int | None = None) -> list[int]:
    """Token ids of the conversation's prompt with the assistant header, ready for generation; cut to max_len by
    `cut_middle`."""
    if not getattr(tokenizer, "chat_template", None):
        raise ConfigError("the base tokenizer has no chat template: train a drafter for a chat/instruct model")
    _, text = _as_template_takes(tokenizer, conv, conv.prompt_messages(), add_generation_prompt=True)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids if max_len is None else cut_middle(ids, max_len)


def cut_middle(ids: list[int], max_len: int) -> list[int]:
    """ids, or for more than max_len its first and last max_len / 2: the template's head (BOS, system turn, user
    header: far less than half of any useful max_len) and the prompt's end with the assistant header both stay. A
    cut from the left (as once) dropped the head, and the base answered a sequence it never sees in use."""
    if len(ids) <= max_len:
        return ids
    head = max_len // 2
    return ids[:head] + ids[len(ids) - (max_len - head):]
