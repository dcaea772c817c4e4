"""Training data for the drafter: conversation files in, token sequences with a loss mask out.

Records (jsonl, one object per line, a JSON list such as ShareGPT, or a .txt file's lines, each a prompt):
    conversations   ShareGPT: [{"from": "human"|"gpt"|"system", "value"}] or [{"role", "content"}]
    messages        OpenAI style: [{"role", "content"}], a content a string or a list of text parts, as `serve` takes
    conversation    the same (LMSYS-Chat-1M, WildChat: a message's other keys left alone), or LDJnr/Capybara's
                    exchanges, [{"input": a user turn, "output": its answer}]
    question+answer GSM8K
    query+response  MetaMathQA
    prompt+response / prompt+answer / instruction+output (Alpaca)
    anything `redrafter_trt.prompts.prompt_of` accepts: a prompt without an answer, or with an empty one (only useful
                    with --distill)
    system          beside any of these (LLaMA-Factory's column; OpenOrca's `system_prompt`): the system prompt,
                    opening the conversation
    history         beside a prompt (LLaMA-Factory's Alpaca column): the turns before it, [[instruction, answer], ...]
    tools           beside any of these (OpenAI's, or `functions`): the tool definitions the chat template is given
Agent data's turns are read into a conversation: a tool call (OpenAI's assistant turn with `tool_calls`, its content
null, or its legacy `function_call`; glaive's `function_call` ShareGPT turn, as LLaMA-Factory writes it) is an answer,
its calls written by the chat template (Qwen2.5's `<tool_call>` blocks); a tool's result (OpenAI's `tool` turn, its
legacy `function`; `observation`) is masked out of the loss as a prompt is. With --distill, which answers a
conversation's first prompt only, a record is read up to its first call. A record with nothing to train on is skipped
with a warning (with --distill, one whose prompt reads gives it). Consecutive turns of one role are kept as they are,
and joined only for a chat template that refuses them (Llama-2 and Mistral require alternating roles).

An `Example` is one rendered conversation: `ids` [T] token ids from the base tokenizer's chat template and `mask`
[T] True where the token belongs to an assistant turn (its content and end-of-turn token). Where the template does not
render a conversation prefix by prefix (Qwen3's gives the last answer alone a <think> block), each answer is an
Example of its own: the conversation through it, the answers before it context (`encode_answers`). System and user
tokens, the template's role headers, and an assistant turn of `"weight": 0` (OpenAI's fine-tuning files' mark of a
turn not to learn from) are masked out of the loss.
"""

from __future__ import annotations

import bisect
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import ConfigError, check_input_file, first_line, read_text
from ..message_fields import check_text
from ..prompts import (ANSWER_KEYS, KEYS as PROMPT_KEYS, before_answer, chat_key, first_filled, message_hint,
                       messages_of, records, tools_of)
from ..tokens import chat_text, render_chat, template_errors, template_text
from .config import DATA_FIX
from .reasons import by_reason

if TYPE_CHECKING:
    from .distill import CachedHidden

log = logging.getLogger(__name__)


def _droppable(conv: "Conversation") -> str:
    """What encode's refusal says to drop of `conv`: its system message and tools where it has them, its later turns."""
    parts = [what for what, held in (("system message", conv.messages[0]["role"] == "system"),
                                     ("tools", bool(conv.tools))) if held]
    return f"drop its {', its '.join(parts)} or later turns" if parts else "drop its later turns"


@dataclass(frozen=True)
class Conversation:
    """messages: [{"role": "system"|"user"|"assistant"|"tool", "content": str}], any with its `name` (who speaks, as
    serve keeps it), an assistant turn with `tool_calls` too (OpenAI's), a tool one its `tool_call_id`; the last one
    may be a user turn (a prompt still waiting for its answer). tools: the tool definitions the chat template is given
    with them (`tools_of`)."""
    messages: tuple[dict, ...]
    source: str = field(default="", compare=False)  # "FILE line N", named in errors
    tools: tuple[dict, ...] = ()

    @property
    def has_answer(self) -> bool:
        """Whether an assistant turn has text: a blank one is no answer, as Alpaca's `"output": ""` (a generation
        file's last `messages` or ShareGPT turn once trained as one, or was refused as too short to train on), nor is
        one of weight 0 (`trained`)."""
        return any(trained(m) and (m["content"].strip() or m.get("tool_calls")) for m in self.messages)

    @property
    def calls_tools(self) -> bool:
        """Whether an assistant turn calls tools (`tool_calls`): a chat template must write them."""
        return any(m.get("tool_calls") for m in self.messages)

    def prompt_messages(self) -> list[dict]:
        """The messages before the first assistant turn (what distillation answers; run, bench and acceptance send a
        prompt file's record as `prompt_of` reads it: the same messages)."""
        return before_answer(self.messages)


def trained(message: dict) -> bool:
    """Whether a message is an answer to train on: an assistant turn, but one of `"weight": 0` (OpenAI's fine-tuning
    files' mark of a turn not to learn from: masked out as a prompt is)."""
    return message["role"] == "assistant" and message.get("weight") != 0


@dataclass(frozen=True, eq=False)
class Example:
    ids: tuple[int, ...]   # [T]
    mask: tuple[bool, ...]  # [T], True = assistant token (a training target)
    hidden: "CachedHidden | None" = None  # [n, H] base hidden states at positions hidden_from.. (distilled data)
    hidden_from: int = 0
    cut: int = 0  # answer tokens past --max-seq-len, left out (reference conversations only)


def conversation_of(record, source: str = "", prompt_only: bool = False, tool_turns: bool = True) -> Conversation:
    """One record -> a Conversation (`messages_of`: the conversation `prompt_of` takes a prompt file's prompt from);
    raises ValueError (with the reason) for a record it cannot read. source: where the record is ("FILE line N"), for
    later errors. prompt_only: its messages before the first answer alone, nothing after them read. tool_turns: tool
    calls and results read (`messages_of`), else refused."""
    if prompt_only:
        return Conversation(tuple(before_answer(messages_of(record, prompt_only=True))), source, tools_of(record))
    if isinstance(record, dict) and not any(key in record for key in PROMPT_KEYS):
        raise ValueError(f"no prompt: expected one of the keys {', '.join(PROMPT_KEYS)} (an answer under "
                         f"{', '.join(ANSWER_KEYS)}){message_hint(record)}")
    if isinstance(record, dict) and chat_key(record) is None:  # prompt_of never reads the answer
        key = first_filled(record, ANSWER_KEYS)  # a blank one is none (messages_of): a prompt for --distill
        if key and not isinstance(record[key], str):
            raise ValueError(f"`{key}` is {record[key]!r}: write the answer as a string")
    messages = list(messages_of(record, tool_turns=tool_turns))
    for m in messages:
        check_text(m["content"], f"its {m['role']} message")
    return Conversation(tuple(messages), source, tools_of(record))


def read_conversations(path: Path | str, prompts_only: bool = False) -> list[Conversation]:
    """Every usable record of a jsonl or JSON-list file, in file order. A record with nothing to train on (no user
    message, an unknown role, a message that is not a string: public ShareGPT dumps have some) is skipped with a
    warning; prompts_only (--distill, which answers a conversation's first prompt only): its prompt is read where
    that reads (agent data's tool turns after it, which it does not read), saying so. Raises ConfigError for a missing file, one that is not
    JSON or jsonl, or one without a usable record (naming the first refused record's line or number, 1-based)."""
    path = Path(path)
    check_input_file(path, "data file", DATA_FIX)
    located = records(path, read_text(path, "save it as UTF-8 jsonl or json"))
    if not located:
        raise ConfigError(f"data file {path} holds no records: add lines like {{\"question\": ..., \"answer\": ...}}")
    out, skipped, prompts = [], [], []
    for where, record in located:
        try:
            out.append(conversation_of(record, f"{path} {where}", tool_turns=not prompts_only))
        except ValueError as e:
            conv = _prompt_or_none(record, f"{path} {where}") if prompts_only else None
            if conv is None:
                skipped.append((where, str(e)))
            else:
                out.append(conv)
                prompts.append(f"{where}: {_past_prompt(record, e)}")
    if not out:
        raise ConfigError(f"data file {path} holds no usable record: {by_reason(skipped)}: fix the records, or pass "
                          f"another file")
    if skipped:
        log.warning("%s: skipped %d of %d records with nothing to train on: %s", path, len(skipped), len(located),
                    by_reason(skipped))
    if prompts:  # agent data: a tool call answers the prompt
        log.warning("%s: %d of %d records cannot be read past their prompt (first: %s): their prompts alone are "
                    "answered", path, len(prompts), len(located), prompts[0])
    return out


def _past_prompt(record, refusal: ValueError) -> str:
    """Why --distill reads no more of a record than its prompt: that it calls tools, where its tool turns read (valid
    agent data: the refusal without them, a call's null content or a `function_call` role, read as a broken file),
    else the refusal."""
    try:
        conversation_of(record, tool_turns=True)
    except ValueError:
        return str(refusal)
    return "it calls tools, and --distill reads no tool turns"


def _prompt_or_none(record, source: str) -> Conversation | None:
    """The record's prompt (`conversation_of`'s prompt_only), or None where it has none."""
    try:
        return conversation_of(record, source, prompt_only=True)
    except ValueError:
        return None


def _render(tokenizer, conv: Conversation, messages: list[dict], add_generation_prompt: bool) -> str:
    """The chat template's text of `messages` (conv's): `_named`'s `render_chat`."""
    return _named(tokenizer, conv, render_chat, messages, add_generation_prompt)


def _as_template_takes(tokenizer, conv: Conversation, messages: list[dict], add_generation_prompt: bool
                       ) -> tuple[list[dict], str]:
    """(messages, the chat template's text of them): `_named`'s `template_text` (consecutive turns of one role joined
    only for a template refusing them)."""
    return _named(tokenizer, conv, template_text, messages, add_generation_prompt)


def _named(tokenizer, conv: Conversation, render, messages: list[dict], add_generation_prompt: bool):
    """render(tokenizer, messages, add_generation_prompt, conv's tools), or a ConfigError: naming the record the
    template refuses, or the template when it renders no prompt at all (not text, broken Jinja: once a TypeError
    traceback, or every record in turn blamed for it)."""
    try:
        return render(tokenizer, messages, add_generation_prompt, conv.tools)
    except template_errors() as e:  # jinja's errors; a template that is not text
        why = first_line(e, type(e).__name__)
        try:
            chat_text(tokenizer, "Hi")  # run's one user turn
        except ConfigError:
            raise ConfigError(f"the base's chat template does not render ({why}): fix or re-download the base's "
                              f"chat template (tokenizer_config.json's chat_template, or chat_template.jinja)") from None
        raise ConfigError(f"{conv.source or 'a conversation'}: the base's chat template refuses it ({why}): fix or "
                          f"remove that record") from None


def encode(tokenizer, conv: Conversation, max_len: int) -> Example:
    """Render with the chat template and mark assistant tokens.

    Assistant spans are found on the text: the template of messages[:j] with the generation prompt must be a prefix of
    the template of messages[:j+1]; the characters in between are turn j's content and end-of-turn marker. Tokens that
    start inside a span are targets, up to the end of turn the base emits: anything after the tokenizer's EOS in a span
    is not, nor the whitespace after its last special token (ChatML's newline after <|im_end|>, Gemma's after
    <end_of_turn>: template filler between turns, which the base never generates before it stops, whatever its EOS; a
    base whose EOS is <|endoftext|> once trained it). Where a token of the whole text runs across a span's start (an
    answer opening with whitespace merged into the generation prompt's newline), or the whole text's tokens before a
    span's start are not those of the text up to it alone (a prompt ending in whitespace the tokenizer splits before a
    letter), the text is tokenized in pieces cut at the spans' starts: the tokens before a turn are then its prompt's
    (`prompt_ids`), those after what the base emits after them. Truncated to `max_len` tokens (the answer tokens cut
    counted in `cut`).
    """
    _check_template(tokenizer)
    text, spans = _spans(tokenizer, conv)
    if spans is None:
        raise _unlocated(conv)
    return _example(tokenizer, text, spans, max_len)


def encode_answers(tokenizer, conv: Conversation, max_len: int, rendered: Rendering | None = None
                   ) -> tuple[list[Example], int]:
    """(conv's training examples, how many of them were left out for their answer lying wholly past max_len): `encode`'s
    one where the chat template renders conv prefix by prefix, else one per trained answer (`_by_answer`: Qwen3's
    gives the last answer alone a <think> block), each the conversation through its answer rendered whole (what
    serve sends the base for that turn, and the answer it writes), that answer alone trained, each cut to max_len
    (`encode`). k answers render and tokenize k prefixes: a long chat costs tokens quadratic in its turns. rendered:
    conv's `rendering` (or its `light` one), where it was rendered before (to check that it trains:
    `dataset.to_train`), not rendered again (a light one's answers only)."""
    _check_template(tokenizer)
    if rendered is None or not rendered.parts:
        rendered = rendering(tokenizer, conv, by_answer=rendered is not None)
    if rendered is None:
        raise _unlocated(conv)
    examples = [_example(tokenizer, text, spans, max_len) for text, spans in rendered.parts]
    if not rendered.by_answer:
        return examples, 0
    kept = [ex for ex in examples if any(ex.mask) or not ex.cut]
    return kept, len(examples) - len(kept)


def _check_template(tokenizer) -> None:
    """A ConfigError where the tokenizer has no chat template, saying where one goes: the folder's
    chat_template.jinja, and Vicuna's (whose Hugging Face folders ship none) in the repository's configs."""
    if not getattr(tokenizer, "chat_template", None):
        folder = tokenizer.name_or_path
        raise ConfigError(f"the base tokenizer has no chat template: train a drafter for a chat/instruct model, or "
                          f"write its chat template to {folder}/chat_template.jinja (for Vicuna, from redrafter-trt's "
                          f"repository: cp configs/chat_templates/vicuna_v1.1.jinja {folder}/chat_template.jinja)")


def _unlocated(conv: Conversation) -> ConfigError:
    """encode's refusal of a conversation whose assistant turns the chat template renders out of place."""
    return ConfigError(f"{conv.source or 'a conversation'}: the base's chat template does not render it prefix by "
                       f"prefix (Mistral's moves a system message{' and the tools' if conv.tools else ''} into the "
                       f"last user turn; DeepSeek-R1's opens its generation prompt with <think>), nor each answer "
                       f"with the turns before it, so its assistant turns cannot be located: {_droppable(conv)}, "
                       f"remove that record, or train on the base's own answers with --distill (it renders only the "
                       f"prompt)")


def _example(tokenizer, text: str, spans: list[tuple[int, int]], max_len: int) -> Example:
    """The Example of the chat template's `text`, its assistant `spans` trained (`encode`)."""
    ids, starts = _tokenize(tokenizer, text, [a for a, _ in spans])
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
    # masked whole, then cut: the kept tokens' mask is the same (the filler test reads the text to each span's end)
    return Example(tuple(ids[:max_len]), tuple(mask[:max_len]), cut=sum(mask[max_len:]))


@dataclass(frozen=True)
class Rendering:
    """The chat template's text of a conversation with its trained answers' (start, end) character spans: one text,
    every answer's span in it, where the template renders the conversation prefix by prefix (`_spans`); else one
    text per trained answer, the conversation through it, its span alone (by_answer: `_by_answer`), or none (a
    `light` one: rendered again, answer by answer)."""
    parts: tuple[tuple[str, list[tuple[int, int]]], ...]
    by_answer: bool

    def light(self) -> Rendering:
        """What is worth keeping of it until `encode_answers`: the one text of a conversation rendered prefix by
        prefix (as long as the conversation); of one rendered answer by answer only that it is, not its texts (each
        the conversation through an answer: their length grows with the square of its turns)."""
        return Rendering((), by_answer=True) if self.by_answer else self


def rendering(tokenizer, conv: Conversation, by_answer: bool = False) -> Rendering | None:
    """conv's `Rendering`, what `encode_answers` trains: prefix by prefix where the template renders it so (Qwen3's
    does not where an answer follows another after the last user turn, as in a tool-calling loop), else answer by
    answer (at once where `by_answer`: known so); None where it renders it neither way (its assistant turns cannot
    be located)."""
    if not by_answer:
        text, spans = _spans(tokenizer, conv)
        if spans is not None:
            return Rendering(((text, spans),), by_answer=False)
    parts = _by_answer(tokenizer, conv)
    return None if parts is None else Rendering(tuple(parts), by_answer=True)


def _by_answer(tokenizer, conv: Conversation) -> list[tuple[str, list[tuple[int, int]]]] | None:
    """(the chat template's text of conv through a trained answer, [that answer's span in it]) for each such answer:
    the answers before it kept as context, as one of `"weight": 0` is (`_spans`); None where the template renders
    one of them with its answer out of place. Split from the messages as the template takes them (`_taken`):
    consecutive answers that one refusing them took unjoined, the first made context, were a turn of weight 0 and 1."""
    msgs = _taken(tokenizer, conv)[0]
    out = []
    for j, m in enumerate(msgs):
        if trained(m):
            before = tuple({**a, "weight": 0} if trained(a) else a for a in msgs[:j])
            text, spans = _spans(tokenizer, replace(conv, messages=(*before, m)))
            if spans is None:
                return None
            out.append((text, spans))
    return out


def _spans(tokenizer, conv: Conversation) -> tuple[str, list[tuple[int, int]] | None]:
    """(the chat template's text of conv, each assistant turn's (start, end) character span in it, but those of weight
    0: `trained`), the spans None where the template does not render conv prefix by prefix (`encode`)."""
    msgs, text = _taken(tokenizer, conv)
    spans = []
    for j, m in enumerate(msgs):
        if not trained(m):
            continue
        before = _render(tokenizer, conv, msgs[:j], add_generation_prompt=True)
        through = _render(tokenizer, conv, msgs[: j + 1], add_generation_prompt=False)
        if not (text.startswith(before) and text.startswith(through) and through.startswith(before)):
            return text, None
        spans.append((len(before), len(through)))
    return text, spans


def _taken(tokenizer, conv: Conversation) -> tuple[list[dict], str]:
    """(conv's messages as the chat template takes them, its text of them): `_as_template_takes`, the generation
    prompt after a last turn that is no answer."""
    return _as_template_takes(tokenizer, conv, list(conv.messages),
                              add_generation_prompt=not conv.messages[-1]["role"] == "assistant")


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
    cut, or its tokens before a cut are not those of the text up to it alone (`_as_alone`), the pieces' between the
    cuts (a byte-level BPE merges the "\n" closing ChatML's "<|im_start|>assistant\n" with an answer's leading "\n"
    or " ", and splits the "\n\n" closing a Llama-3-style header before an answer's first letter: the base never
    sees those tokens after its prompt, nor the answer's first token at its place)."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, starts = enc["input_ids"], [a for a, _ in enc["offset_mapping"]]
    special = special_ids(tokenizer)
    if not any(a < c < b for c in cuts for a, b in enc["offset_mapping"]) and \
            all(_as_alone(tokenizer, text, c, ids, starts, special) for c in cuts):
        return ids, starts
    ids, starts = [], []
    bounds = [0, *cuts, len(text)]
    for lo, hi in zip(bounds, bounds[1:]):
        if hi > lo:
            piece = tokenizer(text[lo:hi], add_special_tokens=False, return_offsets_mapping=True)
            ids += piece["input_ids"]
            starts += [lo + a for a, _ in piece["offset_mapping"]]
    return ids, starts


def _as_alone(tokenizer, text: str, cut: int, ids: list[int], starts: list[int], special: set[int]) -> bool:
    """Whether the tokens `ids` (starting at `starts`) of `text` before `cut` are those of text[:cut] alone, as run and
    serve tokenize a prompt: compared from the last `special` token before the cut (a tokenizer splits its special
    tokens out first, so the text before one tokenizes alone as in the whole). From the start, each answer's check
    tokenized the text up to it: 20 times the text for 40 answers, 8 times slower to encode."""
    end = bisect.bisect_left(starts, cut)
    last = next((k for k in range(end - 1, -1, -1) if ids[k] in special), 0)
    return ids[last:end] == tokenizer(text[starts[last]:cut], add_special_tokens=False)["input_ids"] if end else True


def prompt_ids(tokenizer, conv: Conversation, max_len: int | None = None) -> list[int]:
    """Token ids of the conversation's prompt with the assistant header, ready for generation; cut to max_len by
    `cut_middle`."""
    _check_template(tokenizer)
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
