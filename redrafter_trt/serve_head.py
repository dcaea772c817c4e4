"""A request head (the request line and header lines, to the empty line) read as h11 reads it (its _abnf.py,
_readers.py and _headers.py), uvicorn's parser where httptools is not installed, as trtllm-serve installs it (vLLM
installs uvicorn[standard], whose httptools refuses more: see README's serve section): lines end in LF, a CR
before it dropped; `METHOD SP target SP HTTP/d.d`, the target visible ASCII; each header `token ":" OWS value OWS`,
the value any bytes but NUL, CR, LF, VT and FF (h11 keeps other controls: cookies hold them), a line starting with
SP or HTAB (obs-fold) joined to the one before by one space; one Host (HTTP/1.1), Content-Lengths one run of at most
20 digits, Transfer-Encoding one `chunked` (501 otherwise). Where it differs: an HTTP version other than 1.x is a
505, chunked beside a Content-Length a 400 (h11 reads the chunked body), and the limits are http.client's
(64 KiB a line, 99 header lines; h11's is 16 KiB a head).

    rfile = io.BytesIO(b"GET /health HTTP/1.1\\r\\nHost: x\\r\\nX-A: a\\r\\n b\\r\\n\\r\\n")
    read_head(rfile.readline(), rfile)
    # Head(method='GET', target='/health', version='HTTP/1.1', fields=(('Host', 'x'), ('X-A', 'a b')),
    #      length=None, chunked=False)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from http import HTTPStatus

TOKEN = rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+"  # RFC 9110 5.6.2
REQUEST_LINE = re.compile(rb"(%s) ([\x21-\x7e]+) HTTP/([0-9]\.[0-9])" % TOKEN)  # RFC 9112 3
NAME = re.compile(TOKEN)  # a field name (RFC 9112 5)
OWS = b" \t"  # around a value, and between its other bytes (RFC 9110 5.6.3)
NOT_IN_VALUE = re.compile(rb"[\x00\r\n\x0b\x0c]")  # h11's field-vchar is any other byte but OWS (only between)
FOLD = re.compile(rb"[ \t]+")  # an obs-fold line's start (RFC 9112 5.2)
MAX_LINE = 65536  # bytes in a header line, its line end too, as http.client (http.server's) reads them: 431 past it
MAX_LINES = 99  # header lines, as http.client (its limit of 100 counts the empty line)
MAX_LENGTH_DIGITS = 20  # in a Content-Length, as h11
SHOWN = 40  # characters of a refused line named in the answer


Fields = tuple[tuple[str, str], ...]  # (name as sent, value unfolded, without its OWS), as sent; Latin-1


class Unreadable(Exception):
    """A request that cannot be read: (HTTP status, why and the fix)."""


@dataclass(frozen=True)
class Head:
    """A request head as h11 reads it, with the body's framing its Content-Length and Transfer-Encoding say."""

    method: str
    target: str
    version: str  # "HTTP/1.1"
    fields: Fields
    length: int | None  # the Content-Length (None: none sent)
    chunked: bool  # Transfer-Encoding: chunked (no Content-Length beside it)


def read_head(request_line: bytes, rfile) -> Head:
    """The head whose request line (its LF too) was read, its header lines read from `rfile` through the empty line;
    Unreadable where h11 refuses it (400; 501 for a transfer coding), or past http.client's limits (431)."""
    method, target, version = _request_line(_line(request_line))
    fields = tuple(_field(line) for line in _unfolded(_header_lines(rfile)))
    length, chunked = _length(fields), _chunked(fields)
    _one_host(fields, version)
    return Head(method, target, version, fields, length, chunked)


def _values(fields: Fields, name: str) -> list[str]:
    """Every value of the header `name` (any case) in `fields`, in order."""
    return [value for sent, value in fields if sent.lower() == name.lower()]


def tokens(fields: Fields, name: str) -> set[str]:
    """The header `name` read as a comma list over all its lines (Connection, Expect), each item lowercased without
    its OWS: `Connection: keep-alive, Close` is {"keep-alive", "close"}."""
    return {item.strip(" \t").lower() for value in _values(fields, name) for item in value.split(",")} - {""}


def _line(raw: bytes) -> bytes:
    """A line without its LF and a CR before it (h11's); Unreadable where the head ended before its empty line."""
    if not raw.endswith(b"\n"):
        raise Unreadable(HTTPStatus.BAD_REQUEST, "the request head ended before the empty line that ends it: send "
                                                 "the headers, then an empty line")
    return raw[:-1].removesuffix(b"\r")


def _shown(sent: bytes | str) -> str:
    """Refused bytes (a line, a name, a value; a str as Latin-1 decoded them) as Python writes them (past ASCII as
    \\x escapes), cut at SHOWN characters: a refusal never echoes a request's bytes whole."""
    text = sent.decode("latin-1") if isinstance(sent, bytes) else sent
    return f"{ascii(text[:SHOWN])}{'...' if len(text) > SHOWN else ''}"


def _request_line(line: bytes) -> tuple[str, str, str]:
    """(method, target, "HTTP/1.x"); Unreadable: 400 where it is not `METHOD SP target SP HTTP/d.d`, 505 for a
    version other than 1.x (h11 reads 0.9 and 2.0 heads)."""
    if not line:
        raise Unreadable(HTTPStatus.BAD_REQUEST, "the request line is empty: send 'POST /v1/completions HTTP/1.1' "
                                                 "first, no empty line before it")
    if not (match := REQUEST_LINE.fullmatch(line)):
        raise Unreadable(HTTPStatus.BAD_REQUEST, f"the request line {_shown(line)} is not 'METHOD /path HTTP/1.1': "
                                                 "send one space between each, as 'POST /v1/completions HTTP/1.1'")
    method, target, version = (part.decode("ascii") for part in match.groups())
    if not version.startswith("1."):
        raise Unreadable(HTTPStatus.HTTP_VERSION_NOT_SUPPORTED, f"HTTP/{version} is not read here: send HTTP/1.1 "
                                                                "or HTTP/1.0")
    return method, target, f"HTTP/{version}"


def _header_lines(rfile) -> list[bytes]:
    """The header lines through the empty line (not kept), each without its line end."""
    lines = []
    while True:
        if len(raw := rfile.readline(MAX_LINE + 1)) > MAX_LINE:  # before _line: readline stops there, no LF read
            raise Unreadable(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, f"a header line is over {MAX_LINE} bytes: "
                                                                         "send shorter headers")
        if not (line := _line(raw)):
            return lines
        if len(lines) == MAX_LINES:
            raise Unreadable(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, f"the head has over {MAX_LINES} header "
                                                                         "lines: send fewer headers")
        lines.append(line)


def _unfolded(lines: list[bytes]) -> list[bytes]:
    """The header lines with each obs-fold line joined to the one before: its leading SP and HTAB as one SP."""
    out = []
    for line in lines:
        if not (fold := FOLD.match(line)):
            out.append(line)
        elif not out:
            raise Unreadable(HTTPStatus.BAD_REQUEST, f"the header line {_shown(line)} is folded (starts with "
                                                     "whitespace) onto no header: send it unfolded (RFC 9112 5.2)")
        else:
            out[-1] += b" " + line[fold.end():]
    return out


def _field(line: bytes) -> tuple[str, str]:
    """(name, value) of one unfolded header line, `token ":" OWS value OWS` split at its first colon (in linear
    time: a regex over the whole line backtracked over each split of a run of OWS); Unreadable (400, the line or
    name named) where h11 refuses it."""
    name, colon, value = line.partition(b":")
    bare = name.rstrip(OWS)
    if b"\r" in line:
        why = f"the header line {_shown(line)} holds a CR not before LF: end each line with CRLF (RFC 9112 2.2)"
    elif colon and not name:
        why = f"the header line {_shown(line)} has no name before its colon: send 'Name: value' (RFC 9112 5.1)"
    elif not (colon and NAME.fullmatch(bare)):
        why = (f"the header line {_shown(line)} is not 'Name: value': send each header so, its name a token "
               "(RFC 9112 5.1)")
    elif bare != name:
        why = f"the header {_shown(bare)} has whitespace before its colon: send none there (RFC 9112 5.1)"
    elif bad := NOT_IN_VALUE.search(value := value.strip(OWS)):
        why = (f"the header line {_shown(line)} holds {_shown(bad.group())} in its value: send no NUL, CR, LF, VT or "
               "FF there (RFC 9110 5.5)")
    else:
        return name.decode("ascii"), value.decode("latin-1")
    raise Unreadable(HTTPStatus.BAD_REQUEST, why)


def _length(fields: Fields) -> int | None:
    """The Content-Length (None: none sent). A length repeated (two lines, or a list "59, 59" a proxy joined) is
    one, as h11 reads it (RFC 9110 8.6); lengths that differ are a 400 (RFC 9112 6.3: the body's end is unknown,
    what follows must not be read as the next request: a request smuggling's shape)."""
    if not (lines := _values(fields, "Content-Length")):
        return None
    sent = ", ".join(lines)
    lengths = {length.strip(" \t") for line in lines for length in line.split(",")}
    if len(lengths) > 1:
        raise Unreadable(HTTPStatus.BAD_REQUEST, f"Content-Length {_shown(sent)} holds lengths that differ: send one")
    length = lengths.pop()  # str.isdigit also takes "²", a Latin-1 header byte
    if not (length.isascii() and length.isdigit() and len(length) <= MAX_LENGTH_DIGITS):
        raise Unreadable(HTTPStatus.BAD_REQUEST, f"Content-Length {_shown(sent)} is not a byte count: send the "
                                                 f"body's length in at most {MAX_LENGTH_DIGITS} decimal digits")
    return int(length)


def _chunked(fields: Fields) -> bool:
    """Whether the body is chunked: Transfer-Encoding exactly one `chunked` over all its lines (501 otherwise, as
    h11: a proxy may read another line); beside a Content-Length a 400, a request smuggling's shape (RFC 9112 6.1
    lets a server refuse it; h11 reads the chunked body)."""
    if not (codings := _values(fields, "Transfer-Encoding")):
        return False
    if [coding.lower() for coding in codings] != ["chunked"]:
        raise Unreadable(HTTPStatus.NOT_IMPLEMENTED, f"Transfer-Encoding {_shown(', '.join(codings))} is not read "
                                                     "here: send the body chunked, or with a Content-Length")
    if _values(fields, "Content-Length"):
        raise Unreadable(HTTPStatus.BAD_REQUEST, "Transfer-Encoding chunked and a Content-Length: send one of them")
    return True


def _one_host(fields: Fields, version: str) -> None:
    """A request with several Host headers, or an HTTP/1.1 one with none, is a 400, as h11 refuses them; HTTP/1.0
    may leave it out."""
    hosts = len(_values(fields, "Host"))
    if hosts > 1 or (hosts == 0 and version == "HTTP/1.1"):
        raise Unreadable(HTTPStatus.BAD_REQUEST, f"{hosts or 'no'} Host header{'s' if hosts > 1 else ''}: send one, "
                                                 "naming the server (RFC 9112 3.2)")
