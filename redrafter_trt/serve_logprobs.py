"""OpenAI's logprobs objects for the reference server: chat's `content` list and the completions' parallel lists,
with each token's own bytes (a token holding part of a UTF-8 character is named `bytes:\\xf0\\x9f`, as OpenAI does,
so two such tokens never share a name).

    logprobs_json(tokenizer, values, chat=True)   # values: serve_text.Logprob, one per token of the answer
    echo_of(tokenizer, prompt_ids, sent, scores)   # an echoed prompt: its text and its tokens' Logprobs
"""

from __future__ import annotations

import codecs
import json
import re
from dataclasses import dataclass
from functools import lru_cache

from .serve_text import Logprob

BYTE_TOKEN = re.compile(r"<0x([0-9A-Fa-f]{2})>")  # SentencePiece byte fallback


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet, reversed: the character a byte-level BPE vocabulary writes -> that byte."""
    from .hf_state import TRANSFORMERS_LOCK

    with TRANSFORMERS_LOCK:
        from transformers.convert_slow_tokenizer import bytes_to_unicode

    return {c: b for b, c in bytes_to_unicode().items()}


def token_bytes(tokenizer, token: int, start: bool = False) -> bytes:
    """The bytes a token adds to the text inside an answer: from its vocabulary entry for byte-level BPE (Llama 3,
    Qwen2, SmolLM2; also inside a decoder sequence) and byte-fallback pieces, else what the tokenizer's decoder
    writes for it after another piece (SentencePiece's "\u2581world" is b" world": decoded alone, Llama 2's and
    Mistral's decoders strip that space, and the tokens' bytes would run the words together). start: the token
    opens the text (an answer's first), as the answer's text has it: a piece of whole characters as the decoder
    writes it alone ("\u2581Hello" is b"Hello"; "\u2581\u2581" b" " after Llama 2's Strip of one space, b"" after
    tokenizers' Metaspace, which drops every "\u2581" of the first token), a byte token or byte-level entry less
    the spaces a Strip step takes (Metaspace takes none of <0x20>'s)."""
    data = _token_bytes(tokenizer, token)
    if not start or token in tokenizer.all_special_ids:
        return data
    decoder = getattr(getattr(tokenizer, "backend_tokenizer", None), "decoder", None)
    piece = tokenizer.convert_ids_to_tokens(token)
    if decoder is not None and piece is not None and not _byte_level(decoder) and not BYTE_TOKEN.fullmatch(piece):
        return decoder.decode([piece]).encode()
    for _ in range(_stripped_spaces(decoder)):
        data = data.removeprefix(b" ")
    return data


def _token_bytes(tokenizer, token: int) -> bytes:
    piece = tokenizer.convert_ids_to_tokens(token)
    decoder = getattr(getattr(tokenizer, "backend_tokenizer", None), "decoder", None)
    special = token in tokenizer.all_special_ids
    if decoder is not None and not special and _byte_level(decoder):
        table = _byte_decoder()
        if all(c in table for c in piece):
            return bytes(table[c] for c in piece)
    match = BYTE_TOKEN.fullmatch(piece or "")
    if match:
        return bytes([int(match.group(1), 16)])
    if decoder is not None and not special and piece is not None:
        text = decoder.decode([ANCHOR, piece])
        if text.startswith(ANCHOR):
            return text[len(ANCHOR):].encode()
    return tokenizer.decode([token]).encode()


ANCHOR = "x"  # a piece every decoder writes as itself; what a piece after it writes is that piece's text mid-answer


def _decoders(decoder):
    """The decoder's steps (a sequence's, in order) as their JSON objects."""
    def steps(spec: dict):
        yield spec
        for inner in spec.get("decoders", ()):
            yield from steps(inner)
    return steps(json.loads(decoder.__getstate__()))


def _byte_level(decoder) -> bool:
    """Whether the decoder (or a decoder in its sequence) maps GPT-2's byte-level alphabet back to bytes."""
    return any(step.get("type") == "ByteLevel" for step in _decoders(decoder))


def _stripped_spaces(decoder) -> int:
    """How many spaces the decoder's Strip steps take from the start of a text (Llama 2's and Mistral's: one). A
    Metaspace step takes a first piece's "\u2581", never a byte token's space: `token_bytes` asks it for the piece."""
    if decoder is None:
        return 0
    return sum(step.get("start", 0) for step in _decoders(decoder)
               if step.get("type") == "Strip" and step.get("content") == " ")


def token_name(data: bytes) -> str:
    """The token's text, or `bytes:\\xNN...` when it is not whole UTF-8 characters."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return "bytes:" + "".join(f"\\x{b:02x}" for b in data)


def logprobs_json(tokenizer, values: list, chat: bool) -> dict:
    """OpenAI's logprobs object for these tokens (serve_text.Logprob each). Completions' `top_logprobs` hold the
    chosen token too (up to k + 1 entries, as OpenAI's); an echoed prompt's first token has null for both."""
    @lru_cache(maxsize=None)
    def entry(token: int, start: bool) -> tuple[str, list[int]]:
        data = token_bytes(tokenizer, token, start)
        return token_name(data), list(data)

    if chat:
        def item(token: int, logprob: float, start: bool) -> dict:
            name, data = entry(token, start)
            return {"token": name, "logprob": logprob, "bytes": data}
        return {"content": [item(v.token, v.value.logprob, v.start)
                            | {"top_logprobs": [item(*t, v.start) for t in v.value.top]} for v in values]}
    return {"tokens": [entry(v.token, v.start)[0] for v in values],
            "token_logprobs": [None if v.value is None else v.value.logprob for v in values],
            "top_logprobs": [None if v.value is None else {entry(t, v.start)[0]: lp for t, lp in
                                                           [*v.value.top, (v.token, v.value.logprob)]} for v in values],
            "text_offset": [v.offset for v in values]}


@dataclass
class Echo:
    """What a request's answers start with ("echo"): the text, and its tokens' Logprobs when they are asked."""
    text: str
    values: list[Logprob]


def echo_of(tokenizer, ids: list[int], sent: str | None, scores: list | None) -> Echo:
    """A completion prompt echoed: the prompt as sent (a token-id prompt: its tokens' bytes as text) and, with
    scores (runtime.prompt_logprobs: one per token after the first), each token at its character offset, the first
    one without a value (nothing precedes it). A token holding part of a character starts where that character
    does, a token after bytes it does not finish after their U+FFFD; a special token the tokenizer added (BOS)
    starts at 0."""
    data = [token_bytes(tokenizer, t) for t in ids]
    text = sent if sent is not None else b"".join(data).decode("utf-8", errors="replace")
    if scores is None:
        return Echo(text, [])
    offsets = _sent_offsets(tokenizer, ids, sent) if sent is not None else None
    if offsets is None:
        decoder, offsets, chars = _utf8(), [], 0
        for piece in data:
            pending = decoder.getstate()[0]
            out = decoder.decode(piece)
            # bytes before it that this token does not finish: their U+FFFD come first ("A" after byte 0xC3 starts
            # after its U+FFFD), else a token continuing a character starts where it does
            broken = pending.decode("utf-8", errors="replace") if pending else ""
            offsets.append(chars + (len(broken) if broken and out == broken + _utf8().decode(piece) else 0))
            chars += len(out)
    return Echo(text, [Logprob(t, offset, value) for t, offset, value in zip(ids, offsets, [None, *scores])])


def _utf8():
    return codecs.getincrementaldecoder("utf-8")(errors="replace")


def _sent_offsets(tokenizer, ids: list[int], sent: str) -> list[int] | None:
    """Where each token of a prompt sent as text starts in it (the fast tokenizer's offset mapping), or None when
    the tokenizer cannot say or reads the text into other tokens."""
    if not getattr(tokenizer, "is_fast", False):
        return None
    enc = tokenizer(sent, return_offsets_mapping=True)
    if list(enc["input_ids"]) != list(ids):
        return None
    return [start for start, _ in enc["offset_mapping"]]
