"""JSON text read as it comes, for the tool calls a chat answer streams (`serve_tools`): its tokens checked against
JSON's grammar and written as `json.dumps(json.loads(text), ensure_ascii=False)` writes them, a string in parts as its
characters come, so what was written of a call's arguments is already the start of their final text.

    tokens = JsonTokens()
    for depth, role, canonical, value in tokens.read(text, len(text), final=False):   # the next whole tokens
        ...                       # raises BadJson where the text cannot be JSON (final: where it ended short)

`read` is given the whole text so far each time (it starts where it stopped): a token that more text may still
change (a number, a literal, an escape) waits for it unless `final`. Stricter than json.loads: NaN and Infinity are
not JSON, and are refused, as is a number json.loads reads as one (past a float's range) or not at all (an int past
Python's digit limit). Keys written twice are written twice (json.loads keeps the last).
"""

from __future__ import annotations

import json
import re
from typing import Iterator

from .errors import json_loads

WS = re.compile(r"[ \t\n\r]*")
BODY = re.compile(r'(?:[^"\\\x00-\x1f]|\\["\\/bfnrt]|\\u[0-9a-fA-F]{4})*')  # a string's characters
ESCAPE = re.compile(r"\\(?:u[0-9a-fA-F]{0,3})?")  # an escape more text may finish
HIGH = re.compile(r"\\u[dD][89abAB][0-9a-fA-F]{2}")  # a surrogate pair's first half: held until its second
NUMBER, NUMBER_CHARS = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?"), re.compile(r"[-+.0-9eE]*")
LITERALS, LETTERS = {"true": True, "false": False, "null": None}, re.compile(r"[a-z]*")
# what may come next -> the tokens taken there ("s": a string, "v": a number or literal)
EXPECT = {"value": "{[sv", "value]": "{[sv]", "key": "s", "key}": "s}", ",": ",}]", ":": ":", "end": ""}
CANONICAL = {":": ": ", ",": ", "}  # json.dumps's separators


class BadJson(ValueError):
    """The text read is no JSON, however it goes on."""


class JsonTokens:
    """One JSON value's text, read as it comes (see the module). Each token is yielded as (depth, role, canonical
    text, value): depth the containers it is in (a container's own brackets: the depth outside it), role one of
    "open", "close", ":", ",", "key", "value" (a whole string, number or literal, its Python value) and "part"
    (a string's next characters, before its key or value: the parts and the last one's text add up to its text)."""

    def __init__(self):
        self.pos = 0
        self.stack: list[str] = []   # the open containers' closing brackets
        self.expect = "value"
        self.string: list[str] | None = None  # an unfinished string's characters so far
        self.quote = ""  # its opening quote, until a part carries it

    def read(self, text: str, stop: int, final: bool) -> Iterator[tuple[int, str, str, object]]:
        """The tokens of text[pos:stop] (text[:pos] was read before; final: the text ends at stop)."""
        while True:
            if self.string is not None:
                yield from self._string(text, stop, final)
                if self.string is not None:
                    return
                continue
            self.pos = WS.match(text, self.pos, stop).end()
            if self.pos == stop or self.expect == "end":
                if final and self.expect != "end":
                    raise BadJson("the text ended inside a value")
                return
            char = text[self.pos]
            kind = "s" if char == '"' else "v" if char in "-0123456789tfn" else char
            if kind not in EXPECT[self.expect]:
                raise BadJson(f"{char!r} where {self.expect} was expected")
            if kind == "s":
                self.string, self.quote, self.pos = [], '"', self.pos + 1
                continue
            if kind == "v":
                token = self._scalar(text, stop, final)
                if token is None:
                    return
                yield len(self.stack), "value", *token
                self._after_value()
            elif char in "{[":
                yield len(self.stack), "open", char, None
                self.stack.append("}" if char == "{" else "]")
                self.expect = "key}" if char == "{" else "value]"
            elif char in "}]":
                if self.stack[-1] != char:
                    raise BadJson(f"{char!r} closes a {'[' if char == ']' else '{'}")
                self.stack.pop()
                yield len(self.stack), "close", char, None
                self._after_value()
            else:
                yield len(self.stack), char, CANONICAL[char], None
                self.expect = "value" if char == ":" else "key" if self.stack[-1] == "}" else "value"
            self.pos += kind != "v"

    def _after_value(self) -> None:
        self.expect = "," if self.stack else "end"

    def _scalar(self, text: str, stop: int, final: bool) -> tuple[str, object] | None:
        """A number or literal at pos: (canonical text, value), None while more text may change it."""
        run = (NUMBER_CHARS if text[self.pos] in "-0123456789" else LETTERS).match(text, self.pos, stop).group()
        if self.pos + len(run) == stop and not final:
            return None
        self.pos += len(run)
        if run in LITERALS:
            return run, LITERALS[run]
        if not NUMBER.fullmatch(run):
            raise BadJson(f"{run!r} is no JSON value")
        try:
            value = json_loads(run)
        except json.JSONDecodeError as e:  # an int past Python's digit limit (sys.get_int_max_str_digits)
            raise BadJson(e.msg) from None
        if value in (float("inf"), float("-inf")):  # json.dumps would write Infinity, no JSON
            raise BadJson("a number past a float's range")
        return json.dumps(value), value

    def _string(self, text: str, stop: int, final: bool) -> Iterator[tuple[int, str, str, object]]:
        """An open string's next characters (its opening quote read): the ones whole go out as a part (the first
        with the quote), or, once its closing quote comes, with it as the key or value."""
        end = BODY.match(text, self.pos, stop).end()
        closed = end < stop and text[end] == '"'
        bad = None  # its characters read go out first: they are the string's whatever follows
        if not closed:
            if end < stop and not (ESCAPE.fullmatch(text, end, stop) and not final):
                bad = "a string holds a control character or a bad escape, or ended inside one"
            elif end == stop and final:
                bad = "the text ended inside a string"
            if end - self.pos >= 6 and HIGH.fullmatch(text, end - 6, end) and _escapes(text, end - 6, self.pos):
                end -= 6
        chars = json.loads('"' + text[self.pos:end] + '"')
        canonical = self.quote + json.dumps(chars, ensure_ascii=False)[1:-1]
        self.string.append(chars)
        self.pos = end + closed
        if not closed:
            if canonical:
                self.quote = ""
                yield len(self.stack), "part", canonical, None
            if bad:
                raise BadJson(bad)
            return
        whole, self.string = "".join(self.string), None
        role = "key" if self.expect in ("key", "key}") else "value"
        yield len(self.stack), role, canonical + '"', whole
        if role == "key":
            self.expect = ":"
        else:
            self._after_value()


def _escapes(text: str, at: int, start: int) -> bool:
    """Whether the backslash at text[at] starts an escape (an even number of backslashes before it, from start)."""
    k = at
    while k > start and text[k - 1] == "\\":
        k -= 1
    return (at - k) % 2 == 0
