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
    start: bool = False         # opens the answer's text (or a special token before): named as a text's start is


class AnswerText:
    """One answer's text as its tokens come: the text the whole answer decodes to (multi-token characters come out
    right), cut before the first stop string (the tokens past the one that completed it dropped). `add` returns the
    text that is safe to send: an end that may begin a stop string and the replacement characters of a half-decoded
    character are held back until the next tokens or `rest()`.
    eos: the tokens left out of `logprobs` (a chat answer's stop tokens; none for a completion or an ignore_eos
    answer, which list every token).

    The answer is decoded incrementally, as vLLM's and TGI's servers do (detokenize_incrementally): the text through
    the last committed token stands, and each token decodes only a window from the commit before it (its text, the
    prefix, gives the new tokens the context a tokenizer's first-token rules, such as SentencePiece's first space,
    need) and takes what follows the prefix. A commit is made when the window adds text that does not end in a
    replacement character. Decoding the whole answer on every step (and once per new token for logprobs) was work in
    the answer's length per step, in the scheduler thread every request waits on. A window whose text no longer
    starts with its prefix (byte fallback turning a committed character into replacement characters when invalid
    bytes follow it) steps back to earlier commits until it does. The text is the whole decode's, checked on random
    answers of byte-level BPE and SentencePiece byte-fallback decoders (tests/test_serve_text.py). A window grows
    while its text ends in U+FFFD (a run of invalid bytes) and spans a run of byte-fallback bytes that keeps turning
    invalid: the work is then in that run's length, as the whole decode's was in the answer's."""

    def __init__(self, tokenizer, stop: list[str], eos: set[int] = frozenset()):
        self.tokenizer, self.stop, self.eos = tokenizer, stop, eos
        self.special = frozenset(tokenizer.all_special_ids)  # skipped by the text: the first token past them opens it
        self.longest = max(map(len, stop), default=0)
        self.ids: list[int] = []
        self.ends: list[int] = []     # the answer's length in whole characters after each token (logprobs only)
        self.unsettled: list[tuple[int, int]] = []  # (k, n): token k's text ended in n U+FFFD not yet told apart
        self.values: list = []        # the TokenLogprob of each token, when decoding computes them
        self.text, self.sent, self.stopped, self.given, self.ended = "", 0, False, 0, False
        # each commit: how many tokens, the decoded text's length then, and the decode of its tokens since the commit
        # before (the whole decode after a first commit): the prefix of the windows that start at that commit before
        self.commits: list[tuple[int, int, str]] = [(0, 0, "")]
        self.decoded = ""      # the whole decode of the tokens through the last commit: never ends in U+FFFD
        self.low = 0           # how much of `decoded` this token's decodes share with the last token's
        self.covered = 0       # how many tokens' text went out (see logprobs)

    def add(self, new: list[int], values: list = ()) -> str:
        """values: the new tokens' TokenLogprobs, or none (then no per-token lengths are decoded). The tokens are
        taken one at a time, as plain decoding gives them (and vLLM's detokenizer reads a step's): a speculative
        step accepts several, and what goes out (the text, where a stop string cuts it, its held-back end, each
        token's offset, the tokens past a stop string dropped) is the same however many a step accepted: with stop
        ["abcd", "c"], a step accepting "a", "b", "c", "d" ends at "c" ("ab"), not at "abcd" (""); the tokens past
        the one that completed a stop string are not part of the answer, nor of its usage."""
        delta = ""
        for k, token in enumerate(new):
            delta += self._add_one(token, values[k:k + 1], k == len(new) - 1)
            if self.stopped:
                break
        return delta

    def _add_one(self, token: int, value: list, last: bool) -> str:
        """last: the step's last token, after which the text is committed (each commit decodes its tokens again:
        the windows of a step's other tokens start at the step's commit before, as they did when only the whole
        step was decoded, and the text is the same wherever the commits are)."""
        self.low = len(self.decoded)
        self.ids.append(token)
        self.values += value
        tail = self._tail(len(self.ids))
        text, shared = self._after_sent(tail)
        if value:
            self._settle(text)
            self.ends.append(_clean(text))
            if len(text) > self.ends[-1]:
                self.unsettled.append((len(self.ends) - 1, len(text) - self.ends[-1]))
        stop = self._stop_at(text, shared)
        if stop is not None:  # one holding U+FFFD may start in the text sent (bytes after it turned what followed
            self.text, self.stopped = text[:max(stop, self.sent)], True  # into U+FFFD): the sent text stands
            return self.rest()
        if last and tail and tail[-1] != "\ufffd":
            self._commit(tail)
        self.text = text
        clean = _clean(text)  # byte-fallback tokenizers write one per byte of an unfinished character
        end = text[max(clean - self.longest, 0):clean]
        held = max((begins(s, end) for s in self.stop), default=0)
        delta = text[self.sent: max(clean - held, self.sent)]
        self.sent += len(delta)
        return delta

    def _settle(self, text: str) -> None:
        """A token's text that ended in replacement characters ends at the first of them (an unfinished character
        starts there, and the token after it, which finishes it, does too) until later text tells them apart: those
        still there when a character follows them, or the text goes on past them, are invalid bytes' and stand in
        the answer, so the token ends after them; the others turned into a character, which starts there (the next
        token's offset was the first's: " world" after an invalid byte pointed at the U+FFFD before it)."""
        clean, kept = _clean(text), []
        for k, n in self.unsettled:
            end = self.ends[k]
            seg = text[end:end + n]
            same = len(seg) - len(seg.lstrip("\ufffd"))  # how many of them are still there, from the first
            if same < n or clean >= end + n:  # the others turned into a character, or text follows them all
                self.ends[k] = end + same
            else:
                kept.append((k, n))
        self.unsettled = kept

    def _decode(self, ids: list[int]) -> str:
        """The text of `ids`, spaces as the tokens have them: a tokenizer that cleans up tokenization spaces (Llama
        3's tokenizer_config asks for it) would turn a sent "Hello " into "Hello," when "," comes, and the text after
        what was sent would lose a character (as vLLM's incremental decoding, which never cleans them up)."""
        return self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def _tail(self, k: int) -> str:
        """What the whole decode of ids[:k] holds after `decoded` (k >= the last commit): the window from the commit
        before the last, less its prefix. A window that no longer starts with its prefix steps back a commit."""
        while True:
            start = self.commits[-2][0] if len(self.commits) > 1 else 0
            window, prefix = self._decode(self.ids[start:k]), self.commits[-1][2]
            if window.startswith(prefix):
                return window[len(prefix):]
            self.commits.pop()
            self.decoded = self.decoded[:self.commits[-1][1]]
            self.low = min(self.low, len(self.decoded))

    def _commit(self, tail: str) -> None:
        """The text through the last token stands: the next windows start at the last commit, unless its tokens
        decode to nothing alone (a space that a first-space rule strips): a prefix with no text cannot show a
        committed character turning into replacement characters, so the window keeps its start then."""
        self.decoded += tail
        last = self.commits[-1][0]
        prefix = self._decode(self.ids[last:]) if last else self.decoded
        if not prefix:
            self.commits.pop()
            last = self.commits[-1][0]
            prefix = self._decode(self.ids[last:]) if last else self.decoded
        self.commits.append((len(self.ids), len(self.decoded), prefix))

    def _after_sent(self, tail: str) -> tuple[str, int]:
        """The answer's text given the whole decode (`decoded` + `tail`), kept behind what was sent: a byte-fallback
        tokenizer turns a sent character back into replacement characters (one per byte) when bytes that cannot
        follow it come next, and the answer would then differ from what its stream said; the sent text stands and
        the new text goes on after as many characters (as vLLM's incremental decoding has it). Also returns how
        long a start the text shares with `self.text`."""
        at = max(self.sent, self.low)  # self.text past what was sent is the last token's decode, which shares `low`
        new = self.decoded[at:] + tail if at <= len(self.decoded) else tail[at - len(self.decoded):]
        old = self.text[at:]
        return self.text[:at] + new, at + len(os.path.commonprefix([old, new]))

    def _stop_at(self, text: str, shared: int) -> int | None:
        """Where the first stop string in `text` starts, or None. `self.text` (the text decoded so far) holds none,
        else the answer had ended: one in `text` reaches past the `shared` start, so only that start's last
        (longest stop string - 1) characters and what follows are searched. The whole text was, for every stop
        string on every step: quadratic in the answer's length, in the scheduler thread every request waits on."""
        start = max(shared - max(self.longest - 1, 0), 0)
        return min((i for s in self.stop if (i := text.find(s, start)) >= 0), default=None)

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
        `eos` tokens left out. A token's text went out when the answer through it did and part of it is there (a
        token holding half a character, or no text yet, waits: a stop string may yet end the answer before it, and
        the stream would list a token the answer leaves out); once a stop string ended the answer, every token
        through the one that completed it counts, its text in the stop string or not: one per token `usage` counts,
        as vLLM and trtllm-serve list them; once `finish` ran, every token counts. While the answer goes on, only the tokens past those already counted are looked at
        (sent only grows, and earlier tokens' lengths stay)."""
        if self.ended and not self.stopped:
            covered = len(self.values)
        elif self.stopped and self.sent == len(self.text):
            covered = len(self.ids)  # cut after the token that completed the stop string
        else:
            self.covered = next((k + 1 for k in range(len(self.ends) - 1, self.covered - 1, -1)
                                 if self.ends[k] <= self.sent and (self.ends[k - 1] if k else 0) < self.sent),
                                self.covered)
            covered = self.covered
        covered = min(covered, len(self.values))
        opening = next((k for k, t in enumerate(self.ids) if t not in self.special), len(self.ids))
        out = [Logprob(self.ids[k], min(self.ends[k - 1] if k else 0, len(self.text)), self.values[k], k <= opening)
               for k in range(0 if everything else self.given, covered) if self.ids[k] not in self.eos]
        self.given = max(self.given, covered)
        return out


def _clean(text: str) -> int:
    """The length of `text` without its trailing replacement characters (an unfinished character's bytes)."""
    k = len(text)
    while k and text[k - 1] == "\ufffd":
        k -= 1
    return k


def begins(stop: str, text: str) -> int:
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
