"""An answer's text as the reference server decodes it (`AnswerText`): whole characters only, cut before the first
stop string, and which tokens' logprobs have gone out with it (`Logprob`).

    text = AnswerText(tokenizer, stop=["\\n\\n"], eos={2})
    delta = text.add(new_ids, new_token_logprobs)   # the text that is safe to send now
    given = text.logprobs()                          # the Logprobs of the tokens whose text went out
    last = text.finish()                             # the answer ended: what is left to send
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .runtime import TokenLogprob


@dataclass
class Logprob:
    """One answer token for the API: its text, where it starts in the answer, and its TokenLogprob."""
    token: int
    offset: int
    value: TokenLogprob | None  # None: an echoed prompt's first token (nothing precedes it)
    start: bool = False         # the answer's first token: its text is what the tokenizer writes at a text's start


class AnswerText:
    """One answer's text as its tokens come: decoded whole each time (multi-token characters come out right), cut
    before the first stop string (the tokens past the one that completed it dropped). `add` returns the text that is
    safe to send: an end that may begin a stop string and the replacement characters of a half-decoded character
    are held back until the next tokens or `rest()`.
    eos: the tokens left out of `logprobs` (a chat answer's stop tokens; none for a completion or an ignore_eos
    answer, which list every token)."""

    def __init__(self, tokenizer, stop: list[str], eos: set[int] = frozenset()):
        self.tokenizer, self.stop, self.eos = tokenizer, stop, eos
        self.longest = max(map(len, stop), default=0)
        self.ids: list[int] = []
        self.ends: list[int] = []     # the answer's length in whole characters after each token (logprobs only)
        self.values: list = []        # the TokenLogprob of each token, when decoding computes them
        self.text, self.sent, self.stopped, self.given, self.ended = "", 0, False, 0, False

    def add(self, new: list[int], values: list = ()) -> str:
        """values: the new tokens' TokenLogprobs, or none (then no per-token lengths are decoded)."""
        before = len(self.ids)
        if values:  # the lengths after all but the last new token; the last one is the whole text's
            self.ends += [self._length(self.ids + new[:k]) for k in range(1, len(new))]
        self.ids += new
        self.values += values
        text = self._after_sent(self._decode(self.ids))
        if values:
            self.ends.append(len(text.rstrip("\ufffd")))
        if self._stop_at(text) is not None:
            text = self._keep_through(before, text)
            self.text, self.stopped = text[:self._stop_at(text)], True
            return self.rest()
        self.text = text
        clean = text.rstrip("\ufffd")  # byte-fallback tokenizers write one per byte of an unfinished character
        held = max((_begins(s, clean) for s in self.stop), default=0)
        delta = text[self.sent: max(len(clean) - held, self.sent)]
        self.sent += len(delta)
        return delta

    def _decode(self, ids: list[int]) -> str:
        """The text of `ids`, spaces as the tokens have them: a tokenizer that cleans up tokenization spaces (Llama
        3's tokenizer_config asks for it) would turn a sent "Hello " into "Hello," when "," comes, and the text after
        what was sent would lose a character (as vLLM's incremental decoding, which never cleans them up)."""
        return self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def _after_sent(self, text: str) -> str:
        """`text` kept behind what was sent: a byte-fallback tokenizer turns a sent character back into replacement
        characters (one per byte) when bytes that cannot follow it come next, and the answer would then differ from
        what its stream said; the sent text stands and the new text goes on after as many characters (as vLLM's
        incremental decoding has it)."""
        sent = self.text[:self.sent]
        return text if text.startswith(sent) else sent + text[len(sent):]

    def _length(self, ids: list[int]) -> int:
        """The answer's length in whole characters after `ids` (an unfinished character's bytes not counted: its
        tokens' text starts where the character does)."""
        return len(self._decode(ids).rstrip("\ufffd"))

    def _stop_at(self, text: str) -> int | None:
        """Where the first stop string in `text` starts, or None. `self.text` (the text decoded so far) holds none,
        else the answer had ended: one in `text` reaches past the start they share, so only that start's last
        (longest stop string - 1) characters and what follows are searched. The whole text was, for every stop
        string on every step: quadratic in the answer's length, in the scheduler thread every request waits on."""
        shared = len(self.text) if text.startswith(self.text) else self.sent + len(
            os.path.commonprefix([self.text[self.sent:], text[self.sent:]]))  # text keeps what was sent (_after_sent)
        start = max(shared - max(self.longest - 1, 0), 0)
        return min((i for s in self.stop if (i := text.find(s, start)) >= 0), default=None)

    def _keep_through(self, before: int, text: str) -> str:
        """Drop the tokens decoded past the first one that completed a stop string (a step may accept several):
        they are not part of the answer, nor of its usage. Returns the text through that token (`text`: through the
        last). The answer ends as if the tokens had come one at a time, as vLLM checks them: with stop ["abcd", "c"],
        a step accepting "a", "b", "c", "d" ends at "c" ("ab"), not at "abcd" ("")."""
        for k in range(before + 1, len(self.ids)):
            shorter = self._after_sent(self._decode(self.ids[:k]))
            if self._stop_at(shorter) is not None:
                del self.ids[k:], self.values[k:], self.ends[k:]
                return shorter
        return text

    def rest(self) -> str:
        delta, self.sent = self.text[self.sent:], len(self.text)
        return delta

    def finish(self) -> str:
        """The rest of the text once the answer has ended: the replacement characters of a character that
        max_tokens cut in half are dropped (never sent), and every token's logprob goes out (the last ones at the
        end of the text)."""
        if not self.stopped:
            self.text = self.text.rstrip("\ufffd")
        self.ended = True
        return self.rest()

    def logprobs(self, everything: bool = False) -> list[Logprob]:
        """The logprobs of the tokens whose text went out since the last call (everything: since the start), the
        `eos` tokens left out. A token's text went out when the answer up to it did (whatever a byte-fallback
        tokenizer's half characters did to the lengths on the way); once a stop string ended the answer, the token
        that ran into it counts too when part of its text is in the answer (as vLLM has it); once `finish` ran,
        every token counts."""
        if self.ended and not self.stopped:
            covered = len(self.values)
        elif self.stopped and self.sent == len(self.text):
            covered = max((k + 1 for k in range(len(self.ends)) if (self.ends[k - 1] if k else 0) < self.sent),
                          default=0)
        else:
            covered = max((k + 1 for k, end in enumerate(self.ends) if end <= self.sent), default=0)
        covered = min(covered, len(self.values))
        out = [Logprob(self.ids[k], min(self.ends[k - 1] if k else 0, len(self.text)), self.values[k], k == 0)
               for k in range(0 if everything else self.given, covered) if self.ids[k] not in self.eos]
        self.given = max(self.given, covered)
        return out


def _begins(stop: str, text: str) -> int:
    """The length of the longest end of `text` that begins `stop` and is shorter than it (0: none): what to hold
    back. Only the ends starting with stop's first character are compared, longest first (each of stop's lengths
    was sliced and compared on every token: quadratic in a long stop string's length)."""
    tail = text[max(len(text) - len(stop) + 1, 0):] if len(stop) > 1 else ""
    at = tail.find(stop[0]) if tail else -1
    while at >= 0:
        if stop.startswith(tail[at:]):
            return len(tail) - at
        at = tail.find(stop[0], at + 1)
    return 0
