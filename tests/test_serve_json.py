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


def test_random_json_in_random_pieces_comes_out_as_json_dumps_writes_it():
    rng = random.Random(20261205)
    for case in range(2000):
        text = json.dumps(value(rng), ensure_ascii=rng.random() < 0.5, indent=rng.choice([None, None, 1]))
        if rng.random() < 0.3:  # numbers as other writers put them: json.loads reads them the same
            text = text.replace("1e+30", "1E30").replace("0.25", "25e-2").replace("1.5", "1.50")
        want = json.dumps(json.loads(text), ensure_ascii=False)
        tokens, out, at = JsonTokens(), "", 0
        while at < len(text):
            at = min(len(text), at + rng.randint(1, 4))
            out += written(tokens, text, at, False)
            assert want.startswith(out), (case, text, out)
        assert out + written(tokens, text, len(text), True) == want, (case, text)
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
