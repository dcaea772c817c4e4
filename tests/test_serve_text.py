"""`serve_text.AnswerText`'s stop strings: the work per decoding step is the new text's (plus the longest stop
string's length), not the whole answer's, and the answers are the same as a whole-text search's, byte-fallback
characters (decoded text that changes behind its end) included. No model: a tokenizer of one character per id."""

from __future__ import annotations

import random

import pytest

from redrafter_trt.serve_text import AnswerText, _begins

LEAD, TRAIL = 0x110000, 0x110001  # together "é"; alone each "\ufffd", as a byte-fallback tokenizer's two bytes


class Counted(str):
    """Decoded text that adds up the characters its find() searches."""
    searched = 0

    def find(self, sub, start=0, *end):
        Counted.searched += len(self) - start
        return super().find(sub, start, *end)


class Chars:
    """id -> chr(id); LEAD TRAIL -> "é"; text comes back as `kind`."""

    def __init__(self, kind=str):
        self.kind = kind

    def decode(self, ids, skip_special_tokens=True, clean_up_tokenization_spaces=False):
        if LEAD not in ids and TRAIL not in ids:
            return self.kind("".join(map(chr, ids)))
        out, k = [], 0
        while k < len(ids):
            pair = ids[k] == LEAD and k + 1 < len(ids) and ids[k + 1] == TRAIL
            out.append("\u00e9" if pair else "\ufffd" if ids[k] in (LEAD, TRAIL) else chr(ids[k]))
            k += 2 if pair else 1
        return self.kind("".join(out))


class WholeText(AnswerText):
    """The whole-text search this module replaced: the reference for what an answer is."""

    def _stop_at(self, text):
        return min((i for s in self.stop if (i := text.find(s)) >= 0), default=None)


def test_stop_strings_search_only_the_new_text_per_step():
    """Each step searched the whole answer for every stop string: 2000 one-character steps with 20 ten-character
    stop strings searched about 40 million characters (the scheduler thread, which every request waits on); now
    each step searches its new character and the 9 before it."""
    stop = [f"{k:02d}" + "q" * 8 for k in range(20)]
    steps = 2000
    searched = {}
    for kind in (WholeText, AnswerText):
        Counted.searched = 0
        answer, sent = kind(Chars(Counted), stop), ""
        for _ in range(steps):
            sent += answer.add([ord("z")])
        assert sent + answer.finish() == "z" * steps
        searched[kind] = Counted.searched
    assert searched[WholeText] == steps * (steps + 1) // 2 * len(stop)  # the count itself is right
    assert searched[AnswerText] <= steps * len(stop) * 10


class Sliced(str):
    """A stop string that counts the times it is sliced, indexed or compared."""
    uses = 0

    def __getitem__(self, key):
        Sliced.uses += 1
        return super().__getitem__(key)

    def startswith(self, *args):
        Sliced.uses += 1
        return super().startswith(*args)


def test_a_long_stop_string_is_not_sliced_at_each_of_its_lengths_every_step():
    """The end that may begin a stop string was looked for by slicing the stop string at each of its lengths on
    every step once the answer was that long (a 2000-character stop string and a 2000-character answer: 4 million
    slices and as many comparisons); now only the ends that start with its first character are compared."""
    Sliced.uses = 0
    answer, sent = AnswerText(Chars(), [Sliced("q" * 300 + "!")]), ""
    for _ in range(1000):
        sent += answer.add([ord("z")])
    sent += answer.add([ord("q")] * 3)
    assert sent == "z" * 1000 and answer.rest() == "qqq"  # held back: they may begin the stop string
    assert Sliced.uses <= 1003 * 2


def naive_begins(stop: str, text: str) -> int:
    return max((k for k in range(1, min(len(stop), len(text) + 1)) if text.endswith(stop[:k])), default=0)


def test_what_is_held_back_is_the_longest_end_that_begins_a_stop_string():
    rng = random.Random(0)
    for _ in range(20000):
        stop = "".join(rng.choices("ab", k=rng.randint(1, 7)))
        text = "".join(rng.choices("ab", k=rng.randint(0, 9)))
        assert _begins(stop, text) == naive_begins(stop, text), (stop, text)
    assert _begins("", "abc") == 0


def test_answers_are_those_of_a_whole_text_search():
    """Random answers over a few characters and a byte-fallback pair, random stop strings (first one in the text
    wins, tokens past the one that completed it dropped), decoded in random steps, with and without logprobs: what
    is sent, the answer, its tokens and their logprobs match the whole-text search token for token."""
    rng = random.Random(1)
    alphabet = [ord(c) for c in "abc"] + [LEAD, TRAIL]
    for case in range(3000):
        ids = rng.choices(alphabet, k=rng.randint(1, 24))
        stop = ["".join(rng.choices("abc\u00e9", k=rng.randint(1, 4))) for _ in range(rng.randint(0, 3))]
        cuts = sorted(rng.sample(range(1, len(ids)), min(rng.randint(0, 6), len(ids) - 1)))
        steps = [ids[a:b] for a, b in zip([0, *cuts], [*cuts, len(ids)])]
        values = rng.random() < 0.5
        got = []
        for kind in (AnswerText, WholeText):
            answer, sent = kind(Chars(), stop), []
            for step in steps:
                sent.append(answer.add(step, [f"lp{t}" for t in step] if values else ()))
                if answer.stopped:
                    break
            sent.append(answer.finish())
            lps = [(v.token, v.offset) for v in answer.logprobs(everything=True)]
            got.append((sent, answer.text, answer.ids, answer.stopped, lps))
        assert got[0] == got[1], (case, ids, stop, steps)


def test_a_request_with_too_many_or_too_long_stop_strings_is_refused():
    from redrafter_trt.serve_backend import RequestError
    from redrafter_trt.serve_request import MAX_STOP, MAX_STOP_CHARS, parse

    def stop_of(stop):
        return parse({"prompt": "hi", "stop": stop}, False, "smol", 16).stop

    assert stop_of(["x" * MAX_STOP_CHARS] * MAX_STOP + [""]) == ["x" * MAX_STOP_CHARS] * MAX_STOP  # "": no stop
    assert stop_of("ab") == ["ab"]
    with pytest.raises(RequestError, match=f'"stop" holds {MAX_STOP + 1} strings .* send at most {MAX_STOP},'):
        stop_of(["x"] * (MAX_STOP + 1))
    with pytest.raises(RequestError, match=f"each at most {MAX_STOP_CHARS} characters long"):
        stop_of("x" * (MAX_STOP_CHARS + 1))
