"""serve_json.JsonTokens, the JSON reader a streamed tool call's arguments go out through: on random JSON values,
written compact or indented, escaped or not, and given in random pieces, what it writes is at every step the start of
json.dumps(json.loads(text), ensure_ascii=False) and all of it at the end (surrogate pairs split between pieces, a
number or literal cut between them, escapes cut in half); text that is no JSON is refused however it is cut."""

from __future__ import annotations

import json
import random

import pytest

from redrafter_trt.serve_json import BadJson, JsonTokens

CHARS = ["a", "é", '"', "\\", "\n", "\t", "\u2028", "🌧", "\x01", "/", "\ud800", " ", "東"]


def value(rng: random.Random, depth: int = 0):
    pick = rng.randrange(8 if depth < 3 else 5)
    if pick == 0:
        return rng.choice([True, False, None])
    if pick == 1:
        return rng.choice([0, -3, 12345, 1.5, -0.25, 1e30, 2.5e-7, 10 ** 20])
    if pick < 5:
        return "".join(rng.choice(CHARS) for _ in range(rng.randrange(6)))
    if pick < 7:
        return {rng.choice(["a", "ç", "🌧", ""]) + str(k): value(rng, depth + 1) for k in range(rng.randrange(4))}
    return [value(rng, depth + 1) for _ in range(rng.randrange(4))]


def written(tokens: JsonTokens, text: str, stop: int, final: bool) -> str:
    return "".join(canonical for _, _, canonical, _ in tokens.read(text, stop, final))


def in_pieces(rng: random.Random, text: str, want: str, most: int) -> None:
    """text given in random pieces of 1 to `most` characters: what went out starts `want` at every step, is it at
    the end."""
    tokens, out, at = JsonTokens(), "", 0
    while at < len(text):
        at = min(len(text), at + rng.randint(1, most))
        out += written(tokens, text, at, False)
        assert want.startswith(out), (text, out)
    assert out + written(tokens, text, len(text), True) == want, text


def test_random_json_in_random_pieces_comes_out_as_json_dumps_writes_it():
    rng = random.Random(20261205)
    for case in range(2000):
        text = json.dumps(value(rng), ensure_ascii=rng.random() < 0.5, indent=rng.choice([None, None, 1]))
        if rng.random() < 0.3:  # numbers as other writers put them: json.loads reads them the same
            text = text.replace("1e+30", "1E30").replace("0.25", "25e-2").replace("1.5", "1.50")
        want = json.dumps(json.loads(text), ensure_ascii=False)
        in_pieces(rng, text, want, 4)
        cut = rng.randrange(len(text) + 1)  # the text cut short: what went out still starts the whole
        tokens = JsonTokens()
        assert want.startswith(written(tokens, text, cut, False)), (case, text, cut)


@pytest.mark.parametrize("text", ['{"a": 1,}', '{"a" 1}', "[1 2]", '{"a": tru}', '"\\x"', "01", '{"a": NaN}',
                                  '"a\nb"', "{]", "[}", "1.", '{"a": 1', '"abc', "-",
                                  # json.loads reads these, but not as JSON: an int past Python's digit limit (a
                                  # ValueError, not BadJson) and a float past its range (written Infinity)
                                  pytest.param("[" + "9" * 4301 + "]", id="4301 digits"), "[1e400]", "[-1E+999]"])
def test_text_that_is_no_json_is_refused_given_whole_or_a_character_at_a_time(text):
    with pytest.raises(BadJson):
        written(JsonTokens(), text, len(text), True)
    tokens = JsonTokens()
    with pytest.raises(BadJson):
        for at in range(1, len(text) + 1):
            written(tokens, text, at, at == len(text))


@pytest.mark.parametrize("text", ['"x\\\\ud83d"', '"\\\\\\ud83d\\udf27"', '["\\\\ud83d", 1]'])
def test_an_escaped_backslash_before_a_surrogates_letters_is_no_surrogate_at_a_pieces_end(text):
    """A piece ending in `\\\\ud83d` (an escaped backslash, then the letters ud83d) holds no surrogate to keep back
    for its other half, `\\\\\\ud83d` (then a surrogate) does: the text cut anywhere, then read a character at a
    time, comes out as json.dumps writes it (counting the backslashes wrong read the piece's end as an escape cut in
    half, and json.loads raised on it)."""
    want = json.dumps(json.loads(text), ensure_ascii=False)
    for cut in range(len(text) + 1):
        tokens = JsonTokens()
        out = written(tokens, text, cut, False)
        for at in range(cut + 1, len(text) + 1):
            assert want.startswith(out), (text, cut, out)
            out += written(tokens, text, at, at == len(text))
        assert out == want, (text, cut)


def number_text(rng: random.Random, number) -> str:
    """number written as other writers may (json.loads reads each the same): -0, a fraction's trailing zeros, an
    exponent in either case, with a sign or not."""
    if isinstance(number, int):
        return rng.choice([str(number), "-0" if number == 0 else str(number)])
    mantissa, _, exponent = repr(number).partition("e")
    mantissa += "0" * rng.randrange(3) if "." in mantissa else ""
    exponent = int(exponent or 0)
    return mantissa + (rng.choice(["e", "E"]) + rng.choice(["", "+"] if exponent >= 0 else [""]) + str(exponent)
                       if exponent or rng.random() < 0.3 else "")


SHORT = {'"': '\\"', "\\": "\\\\", "/": "\\/", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def string_text(rng: random.Random, chars: str) -> str:
    """chars as a JSON string written with random escapes: \\", \\\\, \\/, \\n and the other short ones, \\uXXXX of any
    character (a pair for one past U+FFFF, lone surrogates kept lone), either hex case."""
    out = []
    for ch in chars:
        code = ord(ch)
        if ch in '"\\' or code < 0x20 or rng.random() < 0.3:
            if ch in SHORT and rng.random() < 0.5:
                out.append(SHORT[ch])
                continue
            units = [code] if code <= 0xFFFF else [0xD800 + ((code - 0x10000) >> 10), 0xDC00 + (code & 0x3FF)]
            out += ["\\u" + (f"{u:04x}" if rng.random() < 0.5 else f"{u:04X}") for u in units]
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def written_otherwise(rng: random.Random, depth: int = 0) -> tuple[str, str]:
    """(a random JSON value's text as a model may write it: random spaces, escapes and number forms, keys written
    twice; the text JsonTokens should write of it: json.dumps's of each token, its separators, keys as written)."""
    space = lambda: rng.choice(["", "", " ", "\n  ", "\t", "\r\n"])  # noqa: E731
    pick = rng.randrange(8 if depth < 3 else 5)
    if pick == 0:
        word = rng.choice(["true", "false", "null"])
        return word, word
    if pick == 1:
        number = rng.choice([0, -3, 12345, 10 ** 25, 1.5, -0.25, 1e30, 2.5e-7, 0.1, -0.0, 123.0])
        text = number_text(rng, number)
        return text, json.dumps(json.loads(text))
    if pick < 5:
        chars = "".join(rng.choice(CHARS + ["\ud83c", "\udf27", "\x7f", "\u00e9"]) for _ in range(rng.randrange(6)))
        text = string_text(rng, chars)  # escaped surrogates side by side are one character
        return text, json.dumps(json.loads(text), ensure_ascii=False)
    items = []
    for _ in range(rng.randrange(4)):
        value_text, value_want = written_otherwise(rng, depth + 1)
        if pick < 7:
            key = rng.choice(["a", "b", "🌧", "/"])  # often twice in one object
            items.append((space() + string_text(rng, key) + space() + ":" + space() + value_text + space(),
                          json.dumps(key, ensure_ascii=False) + ": " + value_want))
        else:
            items.append((space() + value_text + space(), value_want))
    open_, close = "{}" if pick < 7 else "[]"
    return (open_ + ",".join(t for t, _ in items) + (space() if not items else "") + close,
            open_ + ", ".join(w for _, w in items) + close)


def test_json_as_models_write_it_comes_out_in_any_pieces_as_json_dumps_writes_each_token():
    """Random spaces, escapes (\\/, \\u of any character, surrogate pairs and lone surrogates), number forms (-0,
    1.50, 1E+30) and keys written twice, given in random pieces: what went out is at every step the start of the
    whole, which is json.dumps(json.loads(text), ensure_ascii=False) where no key is written twice (the keys written
    twice are written twice: what went out stays)."""
    rng = random.Random(5)
    for case in range(3000):
        text, want = written_otherwise(rng)
        text = rng.choice(["", " ", "\n"]) + text + rng.choice(["", " ", "\n"])
        in_pieces(rng, text, want, 5)
        twice = []
        json.loads(text, object_pairs_hook=lambda pairs: twice.append(len(pairs) > len(dict(pairs))) or dict(pairs))
        if not any(twice):
            assert want == json.dumps(json.loads(text), ensure_ascii=False), (case, text)
