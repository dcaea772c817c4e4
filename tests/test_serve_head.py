"""Request heads read as h11 reads them (uvicorn's parser without httptools, as trtllm-serve installs it): a table of
valid and malformed heads fed as raw bytes to the server and, where h11 is installed, to h11 as the oracle. The
table's h11 column is what h11 0.16 answers (from its _abnf.py, _readers.py and _headers.py), so the server's
column is checked without h11 too. The server needs no model to read a head: a stub answers what gets through."""

from __future__ import annotations

import io
import json
import re
import threading
import time
from contextlib import contextmanager
from http import HTTPStatus

import pytest

from redrafter_trt import serve_head, serve_http
from redrafter_trt.serve_head import Unreadable, read_head
from redrafter_trt.serve_http import Handler, make_server
from test_serve_protocol import exchange, h11_status

HOST = b"Host: x\r\n"
GET = b"GET /health HTTP/1.1\r\n"
POST = b"POST /v1/completions HTTP/1.1\r\n"
NEXT = GET + HOST + b"\r\n"  # a second request on the connection: answered only where the first head was read


def with_lines(lines: bytes) -> bytes:
    """A GET /health head holding `lines` (each with its line end) before its Host line."""
    return GET + lines + HOST + b"\r\n"


HEADS = [  # id, the bytes sent (a head, an empty line, any body), h11's status (None: it reads the head),
    # the server's status, what its refusal's message says (the line it refuses, as Python writes it)
    ("two-spaces", b"GET  /health HTTP/1.1\r\n" + HOST + b"\r\n", 400, 400, "'GET  /health HTTP/1.1'"),
    ("tab-between", b"GET\t/health HTTP/1.1\r\n" + HOST + b"\r\n", 400, 400, "'GET\\t/health HTTP/1.1'"),
    ("space-after", b"GET /health HTTP/1.1 \r\n" + HOST + b"\r\n", 400, 400, "'GET /health HTTP/1.1 '"),
    ("space-first", b" GET /health HTTP/1.1\r\n" + HOST + b"\r\n", 400, 400, "' GET /health HTTP/1.1'"),
    ("empty-line-first", b"\r\n" + GET + HOST + b"\r\n", 400, 400, "request line is empty"),
    ("no-version", b"GET /health\r\n" + HOST + b"\r\n", 400, 400, "'GET /health'"),
    ("version-leading-zero", b"GET /health HTTP/01.1\r\n" + HOST + b"\r\n", 400, 400, "HTTP/01.1"),
    ("version-lowercase", b"GET /health http/1.1\r\n" + HOST + b"\r\n", 400, 400, "http/1.1"),
    ("version-1.12", b"GET /health HTTP/1.12\r\n" + HOST + b"\r\n", 400, 400, "HTTP/1.12"),
    ("target-latin-1", b"GET /h\xe9alth HTTP/1.1\r\n" + HOST + b"\r\n", 400, 400, "'GET /h\\xe9alth HTTP/1.1'"),
    ("lowercase-method", b"get /health HTTP/1.1\r\n" + HOST + b"\r\n", None, 501, "get is not served"),
    ("absolute-form", b"GET http://x/health?a=1 HTTP/1.1\r\n" + HOST + b"\r\n", None, 200, ""),
    ("http-1.0-no-host", b"GET /health HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", None, 200, ""),
    ("version-0.9", b"GET /health HTTP/0.9\r\n" + HOST + b"\r\n", None, 505, "0.9"),
    ("version-2.0", b"GET /health HTTP/2.0\r\n" + HOST + b"\r\n", None, 505, "2.0"),
    ("bare-lf-lines", b"GET /health HTTP/1.1\nHost: x\nX-A: 1\n\n", None, 200, ""),
    ("head-cut", GET + HOST, 400, 400, "ended"),
    ("no-host", GET + b"\r\n", 400, 400, "no Host"),
    ("two-hosts", GET + HOST + b"Host: y\r\n\r\n", 400, 400, "2 Host"),
    ("bare-cr-inside", with_lines(b"X-A: 1\rX-B: 2\r\n"), 400, 400, "'X-A: 1\\rX-B: 2' holds a CR"),
    ("bare-cr-end", with_lines(b"X-A: 1\r\r\n"), 400, 400, "'X-A: 1\\r' holds a CR"),
    ("nul-in-value", with_lines(b"X-A: a\x00b\r\n"), 400, 400, "'\\x00'"),
    ("vt-in-value", with_lines(b"X-A: a\x0bb\r\n"), 400, 400, "'\\x0b'"),
    ("ff-in-value", with_lines(b"X-A: \x0cb\r\n"), 400, 400, "'\\x0c'"),
    ("controls-in-value", with_lines(b"X-A: a\x01b\x1f\x7f\xe9\r\n"), None, 200, ""),
    ("empty-value", with_lines(b"X-A:\r\nX-B: \t\r\n"), None, 200, ""),
    ("bracket-in-name", with_lines(b"X[a]: 1\r\n"), 400, 400, "'X[a]: 1'"),
    ("space-before-colon", with_lines(b"X-A : 1\r\n"), 400, 400, "'X-A' has whitespace before its colon"),
    ("space-in-name", with_lines(b"X A: 1\r\n"), 400, 400, "'X A: 1'"),
    ("no-colon", with_lines(b"nocolon\r\n"), 400, 400, "'nocolon'"),
    ("no-name", with_lines(b": x\r\n"), 400, 400, "': x' has no name"),
    ("from-line", with_lines(b"From x\r\n"), 400, 400, "'From x'"),
    ("fold-first", with_lines(b" x\r\n"), 400, 400, "' x' is folded"),
    ("fold", with_lines(b"X-A: a\r\n b\r\n\t c\r\n"), None, 200, ""),
    ("fold-content-length", with_lines(b"Content-Length:\r\n 0\r\n"), None, 200, ""),
    ("fold-only-space", with_lines(b"X-A: a\r\n \r\n"), None, 200, ""),
    ("length-zeros", with_lines(b"Content-Length: 000\r\n"), None, 200, ""),
    ("length-spaces", with_lines(b"Content-Length: \t0 \r\n"), None, 200, ""),
    ("length-list-same", with_lines(b"Content-Length: 0 , 0\r\nContent-Length: 0\r\n"), None, 200, ""),
    ("length-plus", with_lines(b"Content-Length: +0\r\n"), 400, 400, "'+0'"),
    ("length-list-differ", with_lines(b"Content-Length: 0, 1\r\n"), 400, 400, "'0, 1'"),
    ("length-list-empty", with_lines(b"Content-Length: 0,\r\n"), 400, 400, "'0,'"),
    ("length-lines-differ", with_lines(b"Content-Length: 0\r\nContent-Length: 00\r\n"), 400, 400,
     "'0, 00'"),
    ("length-21-digits", GET + b"Content-Length: " + b"1" * 21 + b"\r\n" + HOST + b"\r\n", 400, 400, "1" * 21),
    ("length-vt", with_lines(b"Content-Length: \x0b0\r\n"), 400, 400, "'\\x0b'"),
    ("chunked-capitals", POST + b"Transfer-Encoding: Chunked\r\n" + HOST + b"\r\n2\r\n{}\r\n0\r\n\r\n", None, 200,
     ""),
    ("chunked-1.0", b"POST /v1/completions HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n", None,
     200, ""),
    ("coding-gzip-get", with_lines(b"Transfer-Encoding: gzip\r\n"), 501, 501, "'gzip'"),
    ("coding-list", POST + b"Transfer-Encoding: gzip, chunked\r\n" + HOST + b"\r\n", 501, 501, "'gzip, chunked'"),
    ("coding-two-lines", POST + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n" + HOST + b"\r\n",
     501, 501, "'chunked, chunked'"),
    ("chunked-and-length", POST + b"Transfer-Encoding: chunked\r\nContent-Length: 9\r\n" + HOST + b"\r\n", None,
     400, "Content-Length"),
    ("line-longest", with_lines(b"X-A: " + b"a" * 65529 + b"\r\n"), None, 200, ""),
    ("line-one-over", with_lines(b"X-A: " + b"a" * 65530 + b"\r\n"), None, 431, "over 65536 bytes"),
    ("line-too-long", with_lines(b"X-A: " + b"a" * 70000 + b"\r\n"), None, 431, "over 65536 bytes"),
    ("lines-most", with_lines(b"X-A: 1\r\n" * 98), None, 200, ""),
    ("lines-too-many", with_lines(b"X-A: 1\r\n" * 99), None, 431, "over 99 header lines"),
    ("length-long", with_lines(b"Content-Length: " + b"9" * 1000 + b"\r\n"), 400, 400, "'" + "9" * 40 + "'..."),
    ("coding-long", with_lines(b"Transfer-Encoding: " + b"x" * 1000 + b"\r\n"), 501, 501, "'" + "x" * 40 + "'..."),
    ("space-before-colon-long", with_lines(b"X" * 1000 + b" : 1\r\n"), 400, 400, "'" + "X" * 40 + "'..."),
]
# where the server refuses what h11 reads, each named in README's serve section
DIFFERENCES = {"lowercase-method", "version-0.9", "version-2.0", "chunked-and-length", "line-one-over", "line-too-long",
               "lines-too-many"}


class Stub:
    """An App's routes without a model: the head tests need only an answer to what gets past the head."""

    def get(self, path: str, head: bool = False) -> tuple[int, dict]:
        return HTTPStatus.OK, {"status": "ok"}

    def post(self, path: str, body, events=None, alive=None) -> tuple[int, dict]:
        return HTTPStatus.OK, {"body": body}


@contextmanager
def serving(app):
    """A server answering with `app` on a free port, shut down after."""
    server = make_server(app, "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="module")
def server():
    with serving(Stub()) as server:
        yield server


def answers(data: bytes) -> list[tuple[int, bytes, bytes]]:
    """(status, head, body) of each answer in `data`, bodies framed by their Content-Length (none: 100 Continue)."""
    out = []
    while data:
        head, _, data = data.partition(b"\r\n\r\n")
        length = int(head.partition(b"\r\nContent-Length: ")[2].partition(b"\r\n")[0] or 0)
        out.append((int(head.split(b" ")[1]), head, data[:length]))
        data = data[length:]
    return out


def test_the_table_says_what_h11_answers():
    """The fixed column, checked against h11 itself where it is installed (uvicorn and httpx bring it)."""
    assert {name: h11_status(raw) for name, raw, *_ in HEADS} == {name: h11 for name, _, h11, *_ in HEADS}


def test_the_differences_from_h11_are_the_ones_readme_names():
    assert {name for name, _, h11, status, _ in HEADS if (h11 is None) != (status < 400)} == DIFFERENCES


@pytest.mark.parametrize("raw, status, says", [row[1:2] + row[3:] for row in HEADS], ids=[row[0] for row in HEADS])
def test_a_head_is_read_or_refused_as_h11_reads_it(server, raw, status, says):
    """A head refused is one answer naming its bad line in one line, and a closed connection (what follows it is
    never read as a next request); a head read is answered, then the next request on the connection too (HTTP/1.1).
    A head cut short (no empty line) is sent alone: a next request would be its header lines."""
    whole = raw.endswith((b"\r\n\r\n", b"\n\n"))
    got = answers(exchange(server, raw + NEXT if whole else raw))
    assert got[0][0] == status, got
    if status >= 400:
        message = json.loads(got[0][2])["error"]["message"]
        assert len(got) == 1 and b"\r\nConnection: close" in got[0][1], got
        assert says in message and "\n" not in message and len(message) < 200, message
    elif b"HTTP/1.0" not in raw:
        assert [answer[0] for answer in got] == [status, 200], got


def test_expect_100_continue_reads_the_head_once(server, monkeypatch):
    """With `Expect: 100-continue` the head's checks ran twice: once before asking for the body, once after."""
    calls = []
    read = Handler._head_read
    monkeypatch.setattr(Handler, "_head_read", lambda self: calls.append(1) or read(self))
    raw = POST + HOST + b"Expect: 100-continue\r\nContent-Length: 2\r\n\r\n{}"
    assert [answer[0] for answer in answers(exchange(server, raw))] == [100, 200]
    assert len(calls) == 1


def read(raw: bytes):
    rfile = io.BytesIO(raw)
    return read_head(rfile.readline(65537), rfile)


@pytest.mark.parametrize("raw", [row[1] for row in HEADS if row[2] is None and row[0] not in DIFFERENCES],
                         ids=[row[0] for row in HEADS if row[2] is None and row[0] not in DIFFERENCES])
def test_a_head_h11_reads_is_read_into_the_fields_it_reads(raw):
    """Method, target, version, the body's framing and each other header's name and value as h11 reads them: an
    obs-fold line joined to the one before by a space, OWS around a value dropped, controls other than NUL, CR, LF,
    VT and FF kept."""
    h11 = pytest.importorskip("h11")
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(raw)
    want = conn.next_event()
    head = read(raw)
    assert (head.method, head.target, head.version) == (want.method.decode(), want.target.decode(),
                                                        "HTTP/" + want.http_version.decode())
    sent = dict(want.headers)  # h11 keeps one Content-Length, its value "0" for "0, 0", and "chunked" lowercased
    length = sent.get(b"content-length")
    assert (head.length, head.chunked) == (length and int(length), b"transfer-encoding" in sent)
    framing = (b"content-length", b"transfer-encoding")
    fields = [(name.encode("latin-1"), value.encode("latin-1")) for name, value in head.fields]
    assert [f for f in fields if f[0].lower() not in framing] == [f for f in want.headers.raw_items()
                                                                   if f[0].lower() not in framing]


def test_an_obs_fold_line_is_joined_to_the_header_before_by_a_space():
    """h11 unfolds (its _obsolete_line_fold), where email's parser kept the CRLF and the indent inside the value."""
    head = read(with_lines(b"X-A: a \r\n  b\r\n\tc\r\nContent-Length:\r\n 0\r\n"))
    assert head.fields == (("X-A", "a  b c"), ("Content-Length", "0"), ("Host", "x")) and head.length == 0


@pytest.mark.parametrize("raw", [
    b"HEAD /health HTTP/1.1\r\n\r\n",
    b"HEAD /health HTTP/1.1\r\n" + HOST + b"Content-Length: 1\r\nContent-Length: 2\r\n\r\n",
    b"HEAD /health HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: gzip\r\n\r\n",
    b"HEAD /" + b"a" * 70000 + b" HTTP/1.1\r\n" + HOST + b"\r\n",
], ids=["no-host", "lengths-differ", "coding-gzip", "line-too-long"])
def test_a_head_refused_has_no_body(server, raw):
    """RFC 9110 9.3.2: the answer to a HEAD has no body, a refusal's too (the method is read from the request line
    before the head is refused)."""
    head, _, body = exchange(server, raw).partition(b"\r\n\r\n")
    assert int(head.split(b" ")[1]) >= 400 and b"\r\nConnection: close" in head and body == b"", head + body


@pytest.mark.parametrize("lines", [
    b"Connection: keep-alive, close\r\n", b"Connection: keep-alive\r\nConnection: Close\r\n",
    b"Connection: foo,\tclose \r\n",
], ids=["list", "two-lines", "tab"])
def test_a_close_anywhere_in_connection_closes(server, lines):
    """RFC 9112 9.6: Connection is a comma list over all its lines, and a close in it closes, as h11 reads it."""
    got = answers(exchange(server, with_lines(lines) + NEXT))
    assert [answer[0] for answer in got] == [200] and b"\r\nConnection: close" in got[0][1], got


def test_expect_is_a_comma_list_as_h11_reads_it(server):
    """`Expect: x, 100-Continue` asks for a 100 Continue as h11 reads it (the first line's whole value was compared)."""
    raw = POST + HOST + b"Expect: x, 100-Continue\r\nContent-Length: 2\r\n\r\n{}"
    assert [answer[0] for answer in answers(exchange(server, raw))] == [100, 200]


def timed(run) -> float:
    start = time.perf_counter()
    run()
    return time.perf_counter() - start


def refused(raw: bytes) -> None:
    with pytest.raises(Unreadable):
        read(raw)


N = 10**5  # bytes of an adversarial input: past MAX_LINE, where a quadratic regex takes seconds
LINES = {  # header lines (64 KiB) that make a backtracking header regex quadratic
    "spaces-vt": b"X:" + b" " * 65500 + b"\x0b", "blanks-nul": b"X:" + b" \t" * 32700 + b"\x00",
    "value-spaces-ff": b"X: a" + b" " * 65500 + b"\x0c", "spaces-cr": b"X:" + b" " * 65500 + b"\r",
    "spaced-colon": b"X" * 65500 + b" :", "bad-name": b"X" * 65500 + b"\x00:",
}
ADVERSARIAL = {  # (module, name) of each regex that reads request bytes -> how it is called, inputs that make a
    # backtracking one slow
    (serve_head, "REQUEST_LINE"): ("fullmatch", [b"GET " + b"/" * N + b" HTTP/1.1 ", b"G" * N + b" / HTTP/1.1",
                                                 b"GET / " + b"H" * N]),
    (serve_head, "NAME"): ("fullmatch", [b"a" * N + b" ", b"a" * N + b"\x00"]),
    (serve_head, "NOT_IN_VALUE"): ("search", [b"a" * N, b" \t" * (N // 2)]),
    (serve_head, "FOLD"): ("match", [b" " * N + b"x", b" \t" * (N // 2)]),
    (serve_http, "CHUNK_SIZE"): ("fullmatch", [b"0" + b" " * N + b"x\r\n", b"0;" + b"a" * N,
                                               b"0 ;" + b";" * N + b"\r"]),
}


def test_each_regex_on_request_bytes_is_timed():
    assert set(ADVERSARIAL) == {(module, name) for module in (serve_head, serve_http)
                                for name, value in vars(module).items() if isinstance(value, re.Pattern)}


def test_request_bytes_are_read_in_linear_time():
    """A 64 KiB header line of blanks and a byte not allowed after them took 28 s to refuse (a regex backtracking
    over every split of the blanks, the GIL held: every other request waited); each regex that reads request bytes
    takes well under a second on 10^5 bytes made to backtrack."""
    for name, line in LINES.items():
        assert timed(lambda: refused(with_lines(line + b"\r\n"))) < 0.5, name
    for (module, name), (call, inputs) in ADVERSARIAL.items():
        regex = getattr(getattr(module, name), call)
        for text in inputs:
            assert timed(lambda: regex(text)) < 0.5, name
