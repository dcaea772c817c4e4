"""`serve_text.AnswerText`: the work per decoding step (stop-string search, decoding, logprobs) is the new tokens'
(plus the longest stop string's length), not the whole answer's, and the answers are the same as the whole-text
search's and the whole decode's (`WholeDecode`, the code before), byte-fallback characters (decoded text that changes
behind its end) included: on a tokenizer of one character per id, SmolLM2's byte-level BPE and Llama 2-style
SentencePiece byte fallback."""

from __future__ import annotations

import os
import random

import pytest

from redrafter_trt.serve_text import AnswerText, Logprob, begins

LEAD, TRAIL = 0x110000, 0x110001  # together "é"; alone each "\ufffd", as a byte-fallback tokenizer's two bytes


class Counted(str):
    """Decoded text that adds up the characters its find() searches."""
    searched = 0

    def find(self, sub, start=0, *end):
        Counted.searched += len(self) - start
        return super().find(sub, start, *end)


class Chars:
    """id -> chr(id); LEAD TRAIL -> "é"; text comes back as `kind`. No special tokens."""

    all_special_ids: list[int] = []

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


class WholeDecode:
    """AnswerText as it was before its decoding was made incremental (the code verbatim, but for logprobs' rule for
    a token whose text has not started going out): the oracle for what an answer is, fed one token at a time. It
    decodes the whole answer on every step, and once per new token for logprobs, and its logprobs() walks every
    token."""

    def __init__(self, tokenizer, stop: list[str], eos: set[int] = frozenset()):
        self.tokenizer, self.stop, self.eos = tokenizer, stop, eos
        self.longest = max(map(len, stop), default=0)
        self.ids: list[int] = []
        self.ends: list[int] = []     # the answer's length in whole characters after each token (logprobs only)
        self.texts: list[str] = []    # the text after each token (logprobs only)
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
            self.texts.append(text)
        if self._stop_at(text) is not None:
            text = self._keep_through(before, text)
            self.text, self.stopped = text[:max(self._stop_at(text), self.sent)], True
            return self.rest()
        self.text = text
        clean = text.rstrip("\ufffd")  # byte-fallback tokenizers write one per byte of an unfinished character
        held = max((begins(s, clean) for s in self.stop), default=0)
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

    def _settled(self) -> list[int]:
        """Each token's end: where its text's replacement characters start, or after those of them a later
        token's text keeps before a character (invalid bytes): the first later text that changes them or goes on
        past them decides."""
        ends = list(self.ends)
        for j, text in enumerate(self.texts):
            n = len(text) - ends[j]
            for later in self.texts[j + 1:] if n else ():
                same = 0
                while same < n and later[ends[j] + same:ends[j] + same + 1] == "\ufffd":
                    same += 1
                if same < n or len(later.rstrip("\ufffd")) >= ends[j] + n:
                    ends[j] += same
                    break
        return ends

    def logprobs(self, everything: bool = False) -> list[Logprob]:
        """The logprobs of the tokens whose text went out since the last call (everything: since the start), the
        `eos` tokens left out. A token's text went out when the answer up to it did (whatever a byte-fallback
        tokenizer's half characters did to the lengths on the way); once a stop string ended the answer, every
        token through the one that completed it counts; once `finish` ran, every token counts."""
        ends = self._settled()
        if self.ended and not self.stopped:
            covered = len(self.values)
        elif self.stopped and self.sent == len(self.text):
            covered = len(self.ids)
        else:  # a token whose text has not started going out waits (was: went out, then a stop cut before it)
            covered = max((k + 1 for k, end in enumerate(ends)
                           if end <= self.sent and (ends[k - 1] if k else 0) < self.sent), default=0)
        covered = min(covered, len(self.values))
        special = set(self.tokenizer.all_special_ids)  # the text skips them: the first token past them opens it
        out = [Logprob(self.ids[k], min(ends[k - 1] if k else 0, len(self.text)), self.values[k],
                       all(t in special for t in self.ids[:k]))
               for k in range(0 if everything else self.given, covered) if self.ids[k] not in self.eos]
        self.given = max(self.given, covered)
        return out


class WholeText(WholeDecode):
    """The whole-text stop-string search this module replaced before that: the reference for what an answer is."""

    def _stop_at(self, text):
        return min((i for s in self.stop if (i := text.find(s)) >= 0), default=None)


def test_stop_strings_search_only_the_new_text_per_step(monkeypatch):
    """Each step searched the whole answer for every stop string: 2000 one-character steps with 20 ten-character
    stop strings searched about 40 million characters (the scheduler thread, which every request waits on); now
    each step searches its new character and the 9 before it."""
    stop = [f"{k:02d}" + "q" * 8 for k in range(20)]
    steps = 2000
    searched = {}
    stop_at = AnswerText._stop_at  # AnswerText slices and joins its text (plain str): count what its search sees
    monkeypatch.setattr(AnswerText, "_stop_at", lambda self, text, shared: stop_at(self, Counted(text), shared))
    for kind in (WholeText, AnswerText):
        Counted.searched = 0
        answer, sent = kind(Chars(Counted), stop), ""
        for _ in range(steps):
            sent += answer.add([ord("z")])
        assert sent + answer.finish() == "z" * steps
        searched[kind] = Counted.searched
    assert searched[WholeText] == steps * (steps + 1) // 2 * len(stop)  # the count itself is right
    assert 0 < searched[AnswerText] <= steps * len(stop) * 10


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
        assert begins(stop, text) == naive_begins(stop, text), (stop, text)
    assert begins("", "abc") == 0


def test_answers_are_those_of_a_whole_text_search():
    """Random answers over a few characters and a byte-fallback pair, random stop strings (first one in the text
    wins, tokens past the one that completed it dropped), decoded in random steps, with and without logprobs: what
    is sent, the answer, its tokens and their logprobs match the whole-text search's, one token at a time."""
    rng = random.Random(1)
    alphabet = [ord(c) for c in "abc"] + [LEAD, TRAIL]
    for case in range(3000):
        ids = rng.choices(alphabet, k=rng.randint(1, 24))
        stop = ["".join(rng.choices("abc\u00e9", k=rng.randint(1, 4))) for _ in range(rng.randint(0, 3))]
        cuts = sorted(rng.sample(range(1, len(ids)), min(rng.randint(0, 6), len(ids) - 1)))
        steps = [ids[a:b] for a, b in zip([0, *cuts], [*cuts, len(ids)])]
        values = rng.random() < 0.5
        got = []
        for kind, by in ((AnswerText, steps), (WholeText, [[t] for t in ids])):
            answer, sent = kind(Chars(), stop), []
            for step in by:
                sent.append(answer.add(step, [f"lp{t}" for t in step] if values else ()))
                if answer.stopped:
                    break
            sent.append(answer.finish())
            lps = [(v.token, v.offset) for v in answer.logprobs(everything=True)]
            got.append(("".join(sent), answer.text, answer.ids, answer.stopped, lps))
        assert got[0] == got[1], (case, ids, stop, steps)


@pytest.mark.parametrize("ids, stop, text", [("abc", "bc", "a"), ("abc", "c", "ab"), ("xab", "ab", "x"),
                                             ("ab", "ab", ""), ("aé", "\u00e9", "a")])
def test_a_stopped_answer_lists_a_logprob_for_every_token_usage_counts(ids, stop, text):
    """The tokens through the one that completed a stop string are the answer's usage; its logprobs left out those
    whose text was all in the stop string (stop "bc" after "a", "b", "c": usage 3, logprobs "a" alone), the one that
    completed it included. vLLM (serving_chat: one entry per output token id, usage their count) and trtllm-serve
    (create_logprobs asserts one logprob per token id, usage their count) list every counted token."""
    ids = [t for c in ids for t in ([LEAD, TRAIL] if c == "\u00e9" else [ord(c)])]
    for steps in ([[t] for t in ids], [ids]):  # token by token, and one speculative step
        answer = AnswerText(Chars(), [stop])
        sent, listed = "", []
        for step in steps:
            sent += answer.add(step, [f"lp{t}" for t in step])
            listed += answer.logprobs()
        sent += answer.finish()
        listed += answer.logprobs()
        assert (sent, answer.text, answer.stopped) == (text, text, True)
        assert [v.token for v in listed] == answer.ids == ids, (steps, listed)
        assert [v.token for v in answer.logprobs(everything=True)] == ids


class Table:
    """id -> its text in `pieces`: tokens of several characters. No special tokens."""

    all_special_ids: list[int] = []

    def __init__(self, pieces: list[str]):
        self.pieces = pieces

    def decode(self, ids, skip_special_tokens=True, clean_up_tokenization_spaces=False):
        return "".join(self.pieces[t] for t in ids)


@pytest.mark.parametrize("tokens, stop, text", [(["a", "bc", "d"], "b", "a"),  # completed, its text going on past it
                                                (["x", "ab", "cd", "e"], "bc", "xa"),  # over two tokens, both going on
                                                (["xa", "b", "cab", "c"], "bc", "xa")])  # held back, then completed
def test_a_token_that_completes_a_stop_string_and_goes_on_past_it_is_listed_once(tokens, stop, text):
    """A review of 3217655 (every token usage counts is listed): the token that completed the stop string and whose
    text goes on past it is listed, at the answer's end, whatever the steps; the tokens after it are not."""
    pieces = sorted(set(tokens))
    ids = [pieces.index(t) for t in tokens]
    for steps in ([[t] for t in ids], [ids]):
        sent, given, kept, ids_kept, everything = joined(transcript(AnswerText, Table(pieces), steps, [stop], True))
        through = ids[:next(k + 1 for k in range(len(ids)) if stop in "".join(tokens[:k + 1]))]
        assert (sent, kept, ids_kept) == (text, text, through), steps
        assert [v[:2] for v in given] == [v[:2] for v in everything], steps
        assert [v[0] for v in given] == through and all(v[1] <= len(text) for v in given), (steps, given)


def test_a_request_with_too_many_or_too_long_stop_strings_is_refused():
    from redrafter_trt.serve_errors import RequestError
    from redrafter_trt.serve_request import MAX_STOP, MAX_STOP_CHARS, parse

    def stop_of(stop):
        return parse({"prompt": "hi", "stop": stop}, False, "smol", 16).stop

    assert stop_of(["x" * MAX_STOP_CHARS] * MAX_STOP + [""]) == ["x" * MAX_STOP_CHARS] * MAX_STOP  # "": no stop
    assert stop_of("ab") == ["ab"]
    with pytest.raises(RequestError, match=f'"stop" holds {MAX_STOP + 1} strings .* send at most {MAX_STOP},'):
        stop_of(["x"] * (MAX_STOP + 1))
    with pytest.raises(RequestError, match=f"each at most {MAX_STOP_CHARS} characters long"):
        stop_of("x" * (MAX_STOP_CHARS + 1))


def transcript(kind, tok, steps, stop, values, eos=frozenset()):
    """Everything a client sees of one answer decoded in `steps`: each step's text and logprobs, then the end."""
    answer, seen = kind(tok, stop, set(eos)), []
    for step in steps:
        delta = answer.add(step, [f"lp{t}" for t in step] if values else ())
        seen.append((delta, [(v.token, v.offset, v.start) for v in answer.logprobs()], answer.stopped))
        if answer.stopped:
            break
    seen.append((answer.finish(), [(v.token, v.offset, v.start) for v in answer.logprobs()]))
    everything = [(v.token, v.offset, v.value, v.start) for v in answer.logprobs(everything=True)]
    return seen, answer.text, answer.ids, everything


def joined(seen_text_ids_everything):
    """A transcript as a client reads it whatever the chunks: the text and the logprobs sent, the answer, its
    tokens and all their logprobs."""
    seen, text, ids, everything = seen_text_ids_everything
    return "".join(s[0] for s in seen), [v for s in seen for v in s[1]], text, ids, everything


def same_as_whole_decode(tok, rng, ids, stop):
    """AnswerText and the whole-decode oracle over `ids` one token at a time, step for step; and AnswerText in
    random steps (a speculative step accepts several tokens) sends what the oracle sends token by token."""
    cuts = sorted(rng.sample(range(1, len(ids)), min(rng.randint(0, 8), len(ids) - 1))) if len(ids) > 1 else []
    steps = [ids[a:b] for a, b in zip([0, *cuts], [*cuts, len(ids)])]
    values, eos = rng.random() < 0.6, set(rng.sample(ids, 1)) if rng.random() < 0.2 else set()
    single = [[t] for t in ids]
    got, want = (transcript(kind, tok, single, stop, values, eos) for kind in (AnswerText, WholeDecode))
    assert got == want, (ids, stop, values, tok.decode(ids))
    assert joined(transcript(AnswerText, tok, steps, stop, values, eos)) == joined(want), (
        ids, stop, steps, values, tok.decode(ids))
    return want


def test_an_answer_is_the_same_however_many_tokens_a_step_accepts():
    """A review: a step accepting several tokens was decoded at once, so what went out depended on the drafts
    accepted: Llama 2-style byte fallback writes a run of bytes that is not UTF-8 as one U+FFFD per byte, so
    "\u00e9" streamed token by token stood (the sent text stands) where the same tokens in one step never showed
    it; and a token holding half a character had its logprob streamed at once, though a stop string then ended the
    answer before it (a stream listed a token the answer and its non-streamed logprobs leave out, one token a step
    only). Tokens are now taken one at a time, and a token's logprob goes out with the first of its text."""
    from test_serve import sentencepiece_tokenizer

    tok = sentencepiece_tokenizer()
    ids = tok.convert_tokens_to_ids(["\u2581Hello", "<0xC3>", "<0xA9>", "<0xA9>", "\u2581world"])
    answers = [joined(transcript(AnswerText, tok, steps, [], True)) for steps in ([[t] for t in ids], [ids])]
    assert answers[0][0] == answers[0][2] == "Hello\u00e9\ufffd\ufffd world" and answers[1] == answers[0]
    ids = [ord("a"), LEAD, TRAIL]  # "a\u00e9" with stop "\u00e9": the answer is "a"
    for steps in ([[t] for t in ids], [ids]):
        sent, given, text, kept, everything = joined(transcript(AnswerText, Chars(), steps, ["\u00e9"], True))
        assert (sent, text, kept) == ("a", "a", ids)
        # the tokens of the stop string's "\u00e9" are listed once it ended the answer, as usage counts them
        listed = [(ord("a"), 0, True), (LEAD, 1, False), (TRAIL, 1, False)]
        assert given == listed and [v[:2] for v in everything] == [v[:2] for v in listed], steps
    # a stop string holding U+FFFD that starts in the text sent (" " went out, then 0x80 turned 0x20 into U+FFFD):
    # the answer was cut before what its stream had said, and a step's tokens decided whether its logprob went out
    ids = tok.convert_tokens_to_ids(["\u2581Hello", "\u2581", "<0x20>", "<0x80>", "\u2581world"])
    answers = [joined(transcript(AnswerText, tok, steps, [" \ufffd\ufffd w"], True))
               for steps in ([[t] for t in ids], [ids])]
    listed = [(ids[0], 0, True), (ids[1], 5, False)] + [(t, 6, False) for t in ids[2:]]  # every token usage counts
    assert answers[0][:3] == ("Hello ", listed, "Hello ") and answers[1] == answers[0]


def random_stop(rng, text, extra):
    """0-3 stop strings: pieces of the answer's own text (so they hit), or random ones."""
    stop = []
    for _ in range(rng.randint(0, 3)):
        if text and rng.random() < 0.7:
            at = rng.randrange(len(text))
            stop.append(text[at:at + rng.randint(1, 4)])
        else:
            stop.append("".join(rng.choices(extra, k=rng.randint(1, 3))))
    return stop


def test_incremental_decoding_is_the_whole_decode_on_the_test_tokenizer():
    """The test tokenizer (one character per id, a byte-fallback pair): sent text, logprobs at each step, stop cuts,
    held-back ends and the answer are the whole-decode oracle's, token for token."""
    rng = random.Random(2)
    alphabet = [ord(c) for c in "ab c"] + [LEAD, TRAIL, 0xFFFD]
    for _ in range(3000):
        ids = rng.choices(alphabet, k=rng.randint(1, 30))
        same_as_whole_decode(Chars(), rng, ids, random_stop(rng, Chars().decode(ids), "abc \u00e9"))


def pieces(tok, rng, texts, specials):
    """Random token runs: tokenized snippets (multi-byte characters, emoji, spaces), single bytes of UTF-8
    sequences (characters split over tokens, invalid and unfinished ones) and special tokens."""
    byte_ids = [i for i in tok.convert_tokens_to_ids([f"<0x{b:02X}>" for b in range(256)]) if i != tok.unk_token_id]
    emoji = [b for ch in "\u00e9\u96e8\U0001f600\U0001f642\u2581" for b in ch.encode()]
    ids = []
    while len(ids) < rng.randint(1, 40):
        pick = rng.random()
        if pick < 0.5:
            ids += tok(rng.choice(texts), add_special_tokens=False)["input_ids"]
        elif pick < 0.8 and byte_ids:
            ids += [byte_ids[b] for b in rng.choices(emoji + [0x80, 0xC3, 0x20, 0x41], k=rng.randint(1, 4))]
        elif pick < 0.9:
            ids.append(rng.choice(specials))
        else:
            ids += tok(rng.choice(texts) + rng.choice(texts), add_special_tokens=False)["input_ids"][::-1]
    return ids


TEXTS = ["Hello", " world", " ", "  ", "\n", "\u00e9t\u00e9", " \u96e8", "\U0001f600", " \U0001f642!", "a\u2581b",
         "\u00fc\u00df", "END", "\ufffd", "na\u00efve caf\u00e9"]


@pytest.fixture(scope="module")
def smollm2_tokenizer(smollm2):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2)


def test_incremental_decoding_is_the_whole_decode_on_smollm2(smollm2_tokenizer):
    """SmolLM2's byte-level BPE: characters split over tokens (single-byte tokens), invalid bytes, emoji, spaces,
    special tokens skipped as the server decodes them."""
    tok, rng = smollm2_tokenizer, random.Random(3)
    byte_level = {b: tok.convert_tokens_to_ids(ch) for b, ch in enumerate(_bytes_to_unicode())}
    assert tok.decode([byte_level[b] for b in "\U0001f600".encode()]) == "\U0001f600"
    for _ in range(600):
        ids = _smollm2_ids(tok, rng)
        same_as_whole_decode(tok, rng, ids, random_stop(rng, tok.decode(ids, skip_special_tokens=True), "ab \u00e9"))


def _bytes_to_unicode() -> list[str]:
    """GPT-2's byte -> character table (byte b is the character at index b)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("\u00a1"), ord("\u00ac") + 1),
            *range(ord("\u00ae"), ord("\u00ff") + 1)]
    extra = iter(range(256, 512))
    return [chr(b) if b in keep else chr(next(extra)) for b in range(256)]


@pytest.mark.parametrize("decoder", ["strip", "metaspace", "fuse"])
def test_incremental_decoding_is_the_whole_decode_with_sentencepiece_byte_fallback(decoder):
    """Llama 2's and Mistral's decoders strip the text's first space (a window decoded alone would lose a space
    the whole text has: the prefix before the new tokens keeps it) and write one replacement character per byte of
    a run of byte tokens that is not valid UTF-8 (a committed character turns back into them: the window steps
    back); byte fallback with no first-space rule too."""
    from test_serve import sentencepiece_tokenizer
    from tokenizers import decoders

    tok = sentencepiece_tokenizer(metaspace=decoder == "metaspace")
    if decoder == "fuse":
        tok.backend_tokenizer.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Fuse()])
    rng = random.Random(4)
    words = tok.convert_tokens_to_ids(["\u2581Hello", "\u2581world", "\u2581"])
    assert tok.decode([words[1], words[0]]) == ("\u2581world\u2581Hello" if decoder == "fuse" else "world Hello")
    for _ in range(1500):
        ids = pieces(tok, rng, ["Hello", " world", " ", "\u00e9", " \U0001f600"], [1])
        ids = [rng.choice(words) if t == tok.unk_token_id else t for t in ids]
        same_as_whole_decode(tok, rng, ids, random_stop(rng, tok.decode(ids, skip_special_tokens=True), "Ho \u00e9"))


def offsets_point_at_their_text(tok, rng, ids, skip) -> int:
    """`ids` in random steps with logprobs: each token's offset is within the answer, and each that is whole
    characters (and not `skip`) and is inside the answer has an offset where the answer holds its text, as OpenAI's
    text_offset. Returns how many tokens' text it found there (offsets all at the answer's end would check none)."""
    from redrafter_trt.serve_logprobs import token_bytes

    cuts = sorted(rng.sample(range(1, len(ids)), min(rng.randint(0, 8), len(ids) - 1))) if len(ids) > 1 else []
    answer = AnswerText(tok, [])
    for a, b in zip([0, *cuts], [*cuts, len(ids)]):
        answer.add(ids[a:b], ["lp"] * (b - a))
    answer.finish()
    checked = 0
    for v in answer.logprobs(everything=True):
        assert 0 <= v.offset <= len(answer.text), (ids, answer.text, v.token, v.offset)
        try:
            piece = token_bytes(tok, v.token, v.start).decode()
        except UnicodeDecodeError:
            continue
        if not skip(v.token) and v.offset < len(answer.text):  # at its end: a U+FFFD at the end, dropped by finish
            assert answer.text[v.offset:].startswith(piece), (ids, answer.text, v.token, v.offset)
            checked += 1
    return checked


def test_token_offsets_after_invalid_bytes_point_at_their_text():
    """A review: a token's offset is the answer's length in whole characters after the token before it, and a
    U+FFFD at its end did not count (it may be a character's start, which the next bytes finish); an invalid byte's
    stays, so " world" after one pointed at that U+FFFD ("Hello\ufffd world"[5:]). The replacement characters that
    later text keeps count now; a character's bytes still start where it does."""
    from test_serve import sentencepiece_tokenizer

    tok, rng = sentencepiece_tokenizer(), random.Random(5)
    for names, text, offsets in ((["\u2581Hello", "<0x80>", "\u2581world"], "Hello\ufffd world", [0, 5, 6]),
                                 (["\u2581Hello", "<0xC3>", "<0xA9>", "\u2581world"], "Hello\u00e9 world",
                                  [0, 5, 5, 6]),
                                 (["<0x80>", "\u2581", "<0xC3>", "<0xA9>"], "\ufffd \u00e9", [0, 1, 2, 2])):
        answer = AnswerText(tok, [])
        ids = tok.convert_tokens_to_ids(names)
        assert answer.add(ids, ["lp"] * len(ids)) + answer.finish() == text
        assert [v.offset for v in answer.logprobs(everything=True)] == offsets
    words = tok.convert_tokens_to_ids(["\u2581Hello", "\u2581world", "\u2581"])
    checked = tokens = 0
    for _ in range(800):
        ids = [rng.choice(words) if t == tok.unk_token_id else t
               for t in pieces(tok, rng, ["Hello", " world", " ", "\u00e9", " \U0001f600"], [1])]
        checked += offsets_point_at_their_text(tok, rng, ids, lambda t: t not in words)  # a byte token may turn U+FFFD
        tokens += len(ids)
    assert checked >= tokens // 5, (checked, tokens)  # most tokens' offsets point inside the answer


def test_token_offsets_after_invalid_bytes_point_at_their_text_on_smollm2(smollm2_tokenizer):
    tok, rng = smollm2_tokenizer, random.Random(6)
    specials = tok.convert_tokens_to_ids(SMOLLM2_SPECIALS)
    checked = tokens = 0
    for _ in range(400):
        ids = _smollm2_ids(tok, rng)
        checked += offsets_point_at_their_text(tok, rng, ids, lambda t: t in specials)
        tokens += len(ids)
    assert checked >= tokens // 5, (checked, tokens)  # most tokens' offsets point inside the answer


SMOLLM2_SPECIALS = ["<|im_start|>", "<|im_end|>", "<|endoftext|>"]


def _smollm2_ids(tok, rng: random.Random) -> list[int]:
    """Random SmolLM2 ids: words, single-byte tokens (characters split over tokens, invalid bytes, emoji, spaces)
    and special tokens."""
    specials = tok.convert_tokens_to_ids(SMOLLM2_SPECIALS)
    byte_level = {b: tok.convert_tokens_to_ids(ch) for b, ch in enumerate(_bytes_to_unicode())}
    emoji = [b for ch in "\u00e9\u96e8\U0001f600\U0001f642" for b in ch.encode()]
    ids = []
    while len(ids) < rng.randint(1, 40):
        pick = rng.random()
        if pick < 0.5:
            ids += tok(rng.choice(TEXTS), add_special_tokens=False)["input_ids"]
        elif pick < 0.85:
            ids += [byte_level[b] for b in rng.choices(emoji + [0x80, 0xC3, 0x20, 0x41], k=rng.randint(1, 4))]
        else:
            ids.append(rng.choice(specials))
    return ids


class Counting:
    """A tokenizer that adds up how many tokens it was asked to decode."""

    def __init__(self, tok):
        self.tok, self.tokens, self.all_special_ids = tok, 0, tok.all_special_ids

    def decode(self, ids, **kw):
        self.tokens += len(ids)
        return self.tok.decode(ids, **kw)


@pytest.mark.parametrize("step, values", [(1, False), (1, True), (4, True)])
def test_decoding_work_per_step_is_the_new_tokens_not_the_answer(step, values):
    """The whole answer was decoded again on every step, and once per new token when logprobs were asked: a
    2000-token answer decoded about 2 million tokens (4 million with 4-token steps and logprobs), in the scheduler
    thread every request waits on. Now each step decodes a window of the last two steps' tokens: linear (3 tokens a
    token one at a time)."""
    n = 2000
    ids = [ord("a") + k % 26 for k in range(n)]
    ids[500:503] = [LEAD, TRAIL, LEAD]  # a character split over tokens, and half of one
    work = {}
    for kind in (WholeDecode, AnswerText):
        tok = Counting(Chars())
        answer, sent = kind(tok, ["zz"]), ""
        for at in range(0, n, step):
            sent += answer.add(ids[at:at + step], ["lp"] * len(ids[at:at + step]) if values else ())
            answer.logprobs()
        sent += answer.finish()
        assert sent == answer.text == Chars().decode(ids)
        work[kind] = tok.tokens
    assert work[WholeDecode] >= n * n // 2 // step * (step if values else 1)
    assert work[AnswerText] <= 4 * n * step  # a window of the last two steps' tokens, per new token with logprobs


def test_decoding_work_with_byte_fallback_characters_is_linear():
    """Llama 2-style byte fallback: characters of 2 to 4 byte tokens between words, some of them after others (a
    committed character turns into replacement characters while the next one is half there: the window steps
    back). The whole decode per token was about 2 million tokens over a 2000-token answer."""
    from test_serve import sentencepiece_tokenizer

    tok, rng, ids = sentencepiece_tokenizer(), random.Random(0), []
    words = tok.convert_tokens_to_ids(["\u2581Hello", "\u2581world"])
    while len(ids) < 2000:
        chars = rng.choices("\u96e8\u00e9\U0001f600", k=rng.randint(1, 3))
        ids += [tok.convert_tokens_to_ids(f"<0x{b:02X}>") for ch in chars for b in ch.encode()] + [rng.choice(words)]
    work = {}
    for kind in (WholeDecode, AnswerText):
        counting = Counting(tok)
        answer, sent = kind(counting, []), ""
        for t in ids:
            sent += answer.add([t], ["lp"])
            answer.logprobs()
        assert sent + answer.finish() == tok.decode(ids)
        work[kind] = counting.tokens
    assert work[WholeDecode] >= len(ids) ** 2 // 2 and work[AnswerText] <= 10 * len(ids)


class Walked(list):
    """Token lengths that count the entries read."""
    reads = 0

    def __getitem__(self, key):
        Walked.reads += 1
        return super().__getitem__(key)

    def __iter__(self):
        for k in range(len(self)):
            yield self[k]


def test_logprobs_read_only_the_tokens_not_yet_given():
    """`logprobs()` walked every token's length on every step (quadratic over a long answer); now only those past
    the ones already given."""
    n = 2000
    for kind in (WholeDecode, AnswerText):
        answer = kind(Chars(), [])
        answer.ends = Walked()
        Walked.reads = 0
        for k in range(n):
            answer.add([ord("a")], ["lp"])
            assert [v.token for v in answer.logprobs()] == [ord("a")]
        if kind is WholeDecode:
            assert Walked.reads >= n * n // 2
    assert Walked.reads <= 4 * n


def test_echoed_token_ids_after_invalid_bytes_point_at_their_text():
    """A review: an echoed prompt sent as token ids put each token where the text stood in whole characters
    before it, so a token after a byte that began no finished character (0xC3, then " Hello") pointed at that
    byte's U+FFFD; it starts after it now, and a character's bytes still start where the character does."""
    from test_serve import sentencepiece_tokenizer

    from redrafter_trt.serve_logprobs import echo_of, token_bytes

    tok = sentencepiece_tokenizer()
    for names, text, offsets in ((["<0xC3>", "\u2581Hello"], "\ufffd Hello", [0, 1]),
                                 (["\u2581Hello", "<0xC3>", "<0xA9>", "<0xC3>", "<0xC3>", "<0xA9>"],
                                  " Hello\u00e9\ufffd\u00e9", [0, 6, 6, 7, 8, 8]),
                                 (["<0xF0>", "<0x9F>", "<0x41>"], "\ufffdA", [0, 0, 1])):
        ids = tok.convert_tokens_to_ids(names)
        echo = echo_of(tok, ids, None, ["lp"] * (len(ids) - 1))
        assert echo.text == text and [v.offset for v in echo.values] == offsets, names
        for v in echo.values:
            piece = token_bytes(tok, v.token)
            assert piece[:1] >= b"\x80" or echo.text[v.offset:].startswith(piece.decode())


def test_an_echoed_text_prompt_is_the_text_sent_its_offsets_the_tokenizers():
    """An echoed prompt sent as text is that text, and its tokens' offsets are the fast tokenizer's offset mapping:
    Llama 2's tokens, BOS and "\u2581" pieces, written out would read "<s> Hi you" for "Hi you", every offset 3
    characters on (SmolLM2's, no BOS and its bytes the text, cannot tell them apart). A special token starts at 0."""
    from test_serve import sentencepiece_tokenizer

    from redrafter_trt.serve_logprobs import echo_of

    tok = sentencepiece_tokenizer(bos=True)
    ids = tok("Hi you")["input_ids"]
    assert tok.convert_ids_to_tokens(ids) == ["<s>", "\u2581", "<0x48>", "<0x69>", "\u2581", "<0x79>", "<0x6F>",
                                               "<0x75>"]
    assert echo_of(tok, ids, "Hi you", None).text == "Hi you"
    echo = echo_of(tok, ids, "Hi you", ["lp"] * (len(ids) - 1))
    assert echo.text == "Hi you" and [v.offset for v in echo.values] == [0, 0, 0, 1, 2, 3, 4, 5]
    assert [v.token for v in echo.values] == ids and [v.value for v in echo.values] == [None] + ["lp"] * 7
