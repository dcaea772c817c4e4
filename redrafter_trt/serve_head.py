"""A request head (the request line and header lines, to the empty line) read as h11 reads it, the parser under
uvicorn, which vLLM and trtllm-serve run on (its _abnf.py, _readers.py and _headers.py): lines end in LF, a CR
before it dropped; `METHOD SP target SP HTTP/d.d`, the target visible ASCII; each header `token ":" OWS value OWS`,
the value any bytes but NUL, CR, LF, VT and FF (h11 keeps other controls: cookies hold them), a line starting with
SP or HTAB (obs-fold) joined to the one before by one space; one Host (HTTP/1.1), Content-Lengths one run of at most
20 digits, Transfer-Encoding one `chunked` (501 otherwise). Where it differs: an HTTP version other than 1.x is a
505, chunked beside a Content-Length a 400 (h11 reads the chunked body), and the limits are http.client's.

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
FIELD_CHAR = rb"[^\x00\s]"  # h11's field-vchar: \s of bytes is SP, HTAB, CR, LF, VT and FF
FIELD_LINE = re.compile(rb"(%s):[ \t]*(%s+(?:[ \t]+%s+)*)?[ \t]*" % (TOKEN, FIELD_CHAR, FIELD_CHAR))  # RFC 9112 5
NOT_IN_VALUE = re.compile(rb"[\x00\x0b\x0c]")  # what FIELD_LINE refuses in a value, CR apart (a line holding one)
NAMED = re.compile(rb"%s:" % TOKEN)  # a line starting with a field name and its colon
SPACED_COLON = re.compile(rb"(%s)[ \t]+:" % TOKEN)  # a field name, whitespace, colon: RFC 9112 5.1 refuses it
FOLD = re.compile(rb"[ \t]+")  # an obs-fold line's start (RFC 9112 5.2)
MAX_LINE = 65536  # bytes in a header line, as http.client (http.server's) reads them: 431 past it
MAX_LINES = 100  # header lines, as http.client
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


def _line(raw: bytes) -> bytes:
    """A line without its LF and a CR before it (h11's); Unreadable where the head ended before its empty line."""
    if not raw.endswith(b"\n"):
        raise Unreadable(HTTPStatus.BAD_REQUEST, "the request head ended before the empty line that ends it: send "
                                                 "the headers, then an empty line")
    return raw[:-1].removesuffix(b"\r")


def _shown(line: bytes) -> str:
    """A refused line as Python writes it (its bytes past ASCII as \\x escapes), cut at SHOWN characters."""
    text = line.decode("latin-1")
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
    while line := _line(raw := rfile.readline(MAX_LINE + 1)):
        if len(raw) > MAX_LINE or len(lines) == MAX_LINES:
            raise Unreadable(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, f"a header line over {MAX_LINE} bytes, or "
                                                                         f"over {MAX_LINES} header lines: send fewer "
                                                                         "or shorter headers")
        lines.append(line)
    return lines


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
    """(name, value) of one unfolded header line; Unreadable (400, the line named) where h11 refuses it."""
    if match := FIELD_LINE.fullmatch(line):
        return match.group(1).decode("ascii"), (match.group(2) or b"").decode("latin-1")
    shown = _shown(line)
    if b"\r" in line:
        why = f"the header line {shown} holds a CR not before LF: end each line with CRLF (RFC 9112 2.2)"
    elif spaced := SPACED_COLON.match(line):
        name = spaced.group(1).decode("ascii")
        why = f"the header {name!r} has whitespace before its colon: send '{name}:' (RFC 9112 5.1)"
    elif line.startswith(b":"):
        why = f"the header line {shown} has no name before its colon: send 'Name: value' (RFC 9112 5.1)"
    elif NAMED.match(line) and (bad := NOT_IN_VALUE.search(line)):
        why = (f"the header line {shown} holds {bad.group().decode()!r} in its value: send no NUL, CR, LF, VT or FF "
               "there (RFC 9110 5.5)")
    else:
        why = f"the header line {shown} is not 'Name: value': send each header so, its name a token (RFC 9112 5.1)"
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
        raise Unreadable(HTTPStatus.BAD_REQUEST, f"Content-Length {sent!r} holds lengths that differ: send one")
    length = lengths.pop()  # str.isdigit also takes "²", a Latin-1 header byte
    if not (length.isascii() and length.isdigit() and len(length) <= MAX_LENGTH_DIGITS):
        raise Unreadable(HTTPStatus.BAD_REQUEST, f"Content-Length {sent!r} is not a byte count: send the body's "
                                                 f"length in at most {MAX_LENGTH_DIGITS} decimal digits")
    return int(length)


def _chunked(fields: Fields) -> bool:
    """Whether the body is chunked: Transfer-Encoding exactly one `chunked` over all its lines (501 otherwise, as
    h11: a proxy may read another line); beside a Content-Length a 400, a request smuggling's shape (RFC 9112 6.1
    lets a server refuse it; h11 reads the chunked body)."""
    if not (codings := _values(fields, "Transfer-Encoding")):
        return False
    if [coding.lower() for coding in codings] != ["chunked"]:
        raise Unreadable(HTTPStatus.NOT_IMPLEMENTED, f"Transfer-Encoding {', '.join(codings)!r} is not read here: "
                                                     "send the body chunked, or with a Content-Length")
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
