"""The reference server's HTTP side: http.server's threading server answering each request with the `serve_app.App`
it holds, bodies read by their Content-Length or chunked (`read_chunked`, much as uvicorn reads them for
vLLM and trtllm-serve), OpenAI's JSON error body for what cannot be read (a body too long, not JSON, badly chunked),
server-sent events for a streamed answer, and the count of POSTs in flight that a shutdown waits for.

    server = make_server(None, "127.0.0.1", 8000)   # the port is taken first: a taken one is one line at once
    server.app = App(backend, "smol", 256)          # after the long load
    server.serve_forever()
    drain(server, timeout=30)                       # the answers in flight, once stopping
"""

from __future__ import annotations

import json
import logging
import re
import select
import socket
import sys
import threading
from email.errors import (FirstHeaderLineIsContinuationDefect, InvalidHeaderDefect,
                          MisplacedEnvelopeHeaderDefect, MissingHeaderBodySeparatorDefect)
from email.message import Message
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

from . import __version__
from .errors import ConfigError
from .serve_app import POST_ROUTES, App, is_route, no_route
from .serve_errors import ClientGone, error

log = logging.getLogger(__name__)

MAX_BODY = 8 << 20  # bytes in one request
UNREADABLE = object()  # _body's answer when the body could not be read (the client was already told why)


MAX_CHUNK_LINE = 4096  # bytes in a chunk's size line (its extensions too) or a trailer line, as h11's limit on lines
MAX_TRAILERS = 100  # trailer lines, as http.client's limit on header lines
MAX_CHUNK_FRAMING = 1 << 20  # bytes of size lines (extensions too) and trailers in one body, beside MAX_BODY's data
CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})[ \t]*(?:;[^\r\n]*)?\r\n")  # RFC 9112 7.1: hex, BWS, extensions
SPACED_COLON = re.compile(r"([!#$%&'*+.^_`|~0-9A-Za-z-]+)[ \t]+:")  # RFC 9112 5.1: a field name, whitespace, colon
SHOWN = 40  # characters of a refused header line named in the answer


def unread_header(headers: Message) -> str | None:
    """Why email's parser (http.server's) did not read a request's header block whole, naming the first line it took
    as no header (None: it read them all), as a 400's message. It ends the headers at a line that is not
    `Name: value` (whitespace before the colon, none, a space in the name), leaving that line and every later one
    unread (a MissingHeaderBodySeparatorDefect, the lines as the payload); drops a line starting with a colon, a
    first line folded (obs-fold), a "From " line (an mbox envelope); ends them at a bare CR (an empty line to it)."""
    if envelope := headers.get_unixfrom():
        return _not_a_header(envelope)
    for defect in headers.defects:  # the header lines' defects, in order, after any MissingHeaderBodySeparatorDefect
        if isinstance(defect, (FirstHeaderLineIsContinuationDefect, MisplacedEnvelopeHeaderDefect)):
            return _not_a_header(defect.line.rstrip("\r\n"))
        if isinstance(defect, InvalidHeaderDefect):  # the line itself is not kept
            return "a header line has no name before its colon: send 'Name: value' (RFC 9112 5.1)"
    payload = headers.get_payload()  # a list of parts for a multipart/* or message/* Content-Type
    unread = payload if isinstance(payload, str) else "".join(map(str, payload)).lstrip("\n")
    if not unread:
        return None
    if not any(isinstance(defect, MissingHeaderBodySeparatorDefect) for defect in headers.defects):
        return "a header line holds a CR not before LF: end each line with CRLF (RFC 9112 2.2)"
    return _not_a_header(unread.partition("\n")[0].rstrip("\r") if isinstance(payload, str) else None)


def _not_a_header(line: str | None) -> str:
    """A 400's message for a header line read as no header (None: a line of a multipart or message/* payload)."""
    if line is not None and (match := SPACED_COLON.match(line)):
        return f"the header {match.group(1)!r} has whitespace before its colon: send '{match.group(1)}:' (RFC 9112 5.1)"
    shown = "a header line" if line is None else f"the header line {line[:SHOWN]!r}{'...' if len(line) > SHOWN else ''}"
    return f"{shown} is not 'Name: value': send each header so, its name a token (RFC 9112 5.1)"


class Unreadable(Exception):
    """A request body that cannot be read: (HTTP status, why and the fix)."""


def too_large(limit: int) -> Unreadable:
    return Unreadable(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"the body is over {limit} bytes: send a shorter prompt")


def read_chunked(rfile, limit: int) -> bytes:
    """A chunked body (RFC 9112 7.1): chunks of a hex size line (extensions after ";" skipped), that many bytes and
    CRLF, to a last chunk of size 0, then trailer lines (skipped) and an empty line; every line ends in CRLF.
    Unreadable: 400 where it is not chunked so (or ends first, or its size lines and trailers pass
    MAX_CHUNK_FRAMING bytes), 413 as soon as the chunks announced pass `limit` bytes (none of them read)."""
    framing = 0

    def line(what: str) -> bytes:
        nonlocal framing
        text = rfile.readline(MAX_CHUNK_LINE + 1)
        if not text.endswith(b"\n"):
            why = "ended" if len(text) <= MAX_CHUNK_LINE else f"has a {what} line over {MAX_CHUNK_LINE} bytes"
            raise Unreadable(HTTPStatus.BAD_REQUEST, f"the chunked body {why}: send whole chunks and a last chunk "
                                                     "of size 0")
        if not text.endswith(b"\r\n"):
            raise Unreadable(HTTPStatus.BAD_REQUEST, f"the chunked body has a {what} line ending in a bare LF: end "
                                                     "each line in CRLF")
        if (framing := framing + len(text)) > MAX_CHUNK_FRAMING:
            raise Unreadable(HTTPStatus.BAD_REQUEST, f"the chunked body's size lines, extensions and trailers pass "
                                                     f"{MAX_CHUNK_FRAMING} bytes: send larger chunks, without "
                                                     "extensions")
        return text

    body = bytearray()
    while True:
        text = line("chunk size")
        if not (match := CHUNK_SIZE.fullmatch(text)):
            raise Unreadable(HTTPStatus.BAD_REQUEST, f"the chunked body has no chunk size in hex where one starts "
                                                     f"({text[:20]!r}): send hex sizes")
        if not (size := int(match.group(1), 16)):
            break
        if len(body) + size > limit:
            raise too_large(limit)
        data = rfile.read(size)
        if len(data) < size:
            raise Unreadable(HTTPStatus.BAD_REQUEST, "the chunked body ended inside a chunk: send whole chunks")
        body += data
        if rfile.read(2) != b"\r\n":
            raise Unreadable(HTTPStatus.BAD_REQUEST, "a chunk's data does not end in CRLF where its size says: send "
                                                     "each chunk's size in hex, its bytes, then CRLF")
    for _ in range(MAX_TRAILERS + 1):
        if line("trailer") == b"\r\n":
            return bytes(body)
    raise Unreadable(HTTPStatus.BAD_REQUEST, f"the chunked body has over {MAX_TRAILERS} trailer lines: send fewer")


PROTOCOL_FIXES = {  # http.server's refusal -> what the client should send instead
    HTTPStatus.BAD_REQUEST: "send a request line of the form 'POST /v1/completions HTTP/1.1'",
    HTTPStatus.REQUEST_URI_TOO_LONG: "send a shorter path (the prompt goes in the JSON body)",
    HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE: "send fewer or shorter headers",
    HTTPStatus.NOT_IMPLEMENTED: "use GET /v1/models or POST a completion",
    HTTPStatus.HTTP_VERSION_NOT_SUPPORTED: "send HTTP/1.1 or HTTP/1.0",
}


def _byte_count(header: str) -> bool:
    """A Content-Length int() reads: ASCII digits (str.isdigit also takes "²", a Latin-1 header byte)."""
    return header.isascii() and header.isdigit()


def _readable(sock: socket.socket) -> bool:
    """Whether `sock` has bytes to read, or its peer's end closed, now. poll where there is one: any descriptor number
    (select stops at 1024 open files); select on Windows, which has no poll (its select takes any socket)."""
    if not hasattr(select, "poll"):
        return bool(select.select([sock], [], [], 0)[0])
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))


class Handler(BaseHTTPRequestHandler):
    server_version = f"redrafter-trt/{__version__}"
    protocol_version = "HTTP/1.1"
    timeout = 300  # seconds a connection may sit idle or half-sent

    @property
    def route(self) -> str:
        """The request's path without its query string (`?api-version=...` from Azure-style clients) or a
        trailing slash."""
        return unquote(urlsplit(self.path).path).rstrip("/") or "/"

    def do_GET(self):
        self._skip_body()
        self._reply(*self.server.app.get(self.route))

    def do_HEAD(self):  # health checks (`wget --spider`): GET's status and headers (/metrics keeps its steps)
        self._skip_body()
        self._reply(*self.server.app.get(self.route, head=True), body=False)

    def do_OPTIONS(self):
        self._skip_body()
        self._reply(HTTPStatus.NO_CONTENT, None, allow=True)

    def do_POST(self):
        with self.server.busy:
            self.server.in_flight += 1
        try:
            self._post()
        finally:
            with self.server.busy:
                self.server.in_flight -= 1
                self.server.busy.notify_all()

    def do_PUT(self):
        self._skip_body()
        if not is_route(self.route):  # as GET's and POST's: a 405 would name the methods of a route that is not here
            self._reply(*no_route(self.command, self.route))
        else:
            self._reply(HTTPStatus.METHOD_NOT_ALLOWED, error(f"{self.command} is not served: use GET /v1/models or "
                                                             "POST a completion", "invalid_request_error"))

    do_DELETE = do_PATCH = do_PUT

    def _post(self):
        if self.route not in POST_ROUTES:  # a 405 or 404 whatever the body: a bodyless POST is no 411 'send a body'
            self._skip_body()
            self._reply(*self.server.app.post(self.route, None))
            return
        body = self._body()
        if body is UNREADABLE:
            return
        self.streaming = False
        try:
            answer = self.server.app.post(self.route, body, self._event, self._client_alive)
        except ClientGone:
            log.info("%s left before its answer to %s; generation stopped", self.address_string(), self.path)
            self.close_connection = True
            return
        except Exception as e:  # answer the client, keep serving; the traceback goes to the log
            log.exception("request to %s failed", self.path)
            answer = HTTPStatus.INTERNAL_SERVER_ERROR, error(f"{type(e).__name__}: {e}", "internal_error")
        if self.streaming:  # an error after the stream opened goes out as its last event
            self._write((f"data: {json.dumps(answer[1])}\n\n" if answer else "") + "data: [DONE]\n\n")
        else:
            self._reply(*answer)

    def _body(self):
        """The JSON request body (None when empty), or UNREADABLE after answering why it cannot be read (and
        closing the connection)."""
        try:
            data = self._body_bytes()
            body = json.loads(data or b"null")
            json.dumps(body, ensure_ascii=False).encode()  # a lone surrogate ("\ud800") is no text to tokenize
            return body
        except Unreadable as e:
            problem = e.args
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            problem = HTTPStatus.BAD_REQUEST, f"the request body is not JSON ({e}): send a JSON object"
        except RecursionError:  # json reads nested arrays and objects recursively
            problem = HTTPStatus.BAD_REQUEST, "the request body nests too deeply to read: send a request object"
        except UnicodeEncodeError as e:
            problem = HTTPStatus.BAD_REQUEST, (f"the request body holds {e.object[e.start:e.end]!r}, half of a "
                                               "UTF-16 surrogate pair: send whole characters")
        except ValueError:  # json's int() of a number over sys.get_int_max_str_digits() digits (4300)
            problem = HTTPStatus.BAD_REQUEST, "the request body holds a number too long to read: send a shorter one"
        self._refuse(*problem)  # closing: whatever is left of the body must not be read as the next request
        return UNREADABLE

    def _body_bytes(self) -> bytes:
        """The body as sent, by its Content-Length or chunked (`read_chunked`), at most MAX_BODY bytes; Unreadable
        (status, why and the fix) where it cannot be read."""
        length = self._framing()
        if length is not None:
            return self.rfile.read(length)
        if self.request_version == "HTTP/1.0":  # no chunked in HTTP/1.0: framing a proxy may read otherwise
            self.close_connection = True  # RFC 9112 6.1: close after reading it
        return read_chunked(self.rfile, MAX_BODY)

    def _framing(self) -> int | None:
        """The body's length by the headers alone (None: chunked, read as it comes); Unreadable where they refuse
        it (`handle_expect_100` refuses so before the body is sent)."""
        codings = self.headers.get_all("Transfer-Encoding")
        if codings is None:
            if (length := self._length()) is None:
                raise Unreadable(HTTPStatus.LENGTH_REQUIRED, "no Content-Length: send a JSON body")
            if length > MAX_BODY:
                raise too_large(MAX_BODY)
            return length
        # every Transfer-Encoding line: a proxy may read the last one
        if [c.strip(" \t").lower() for c in codings] != ["chunked"]:
            raise Unreadable(HTTPStatus.NOT_IMPLEMENTED, f"Transfer-Encoding {', '.join(codings)!r} is not read "
                                                         "here: send the body chunked, or with a Content-Length")
        if "Content-Length" in self.headers:  # a request smuggling's shape (RFC 9112 6.3), refused as h11 does
            raise Unreadable(HTTPStatus.BAD_REQUEST, "Transfer-Encoding chunked and a Content-Length: send one of "
                                                     "them")
        return None

    def _length(self) -> int | None:
        """The Content-Length (None: none sent). A length repeated (two lines, or a list "59, 59"
        a proxy joined) is one, as h11 reads it (RFC 9110 8.6); lengths that differ are a 400 (RFC 9112 6.3: the
        body's end is unknown, what follows must not be read as the next request: a request smuggling's shape)."""
        lines = self.headers.get_all("Content-Length")
        if lines is None:
            return None
        sent = ", ".join(lines)
        values = {value.strip(" \t") for line in lines for value in line.split(",")}
        if len(values) > 1:
            raise Unreadable(HTTPStatus.BAD_REQUEST, f"Content-Length {sent!r} holds lengths that differ: send one")
        if not _byte_count(length := values.pop()):
            raise Unreadable(HTTPStatus.BAD_REQUEST, f"Content-Length {sent!r} is not a byte count: send the body's "
                                                     "length in decimal digits")
        return int(length)

    def _skip_body(self) -> None:
        """Drop the body of a request that takes none (a PUT, a GET with a JSON body): left unread, a kept-alive
        connection would read it as its next request. One chunked or over MAX_BODY closes the connection (a
        Content-Length that is no byte count was refused with the head: `_length_read`)."""
        length = None if self.headers.get_all("Transfer-Encoding") else self._length() or 0
        if length is None or length > MAX_BODY:
            self.close_connection = True
        elif length:
            self.rfile.read(length)

    def parse_request(self) -> bool:
        """http.server's, then the rules of RFC 9112 it does not check (`_head_read`)."""
        return super().parse_request() and self._head_read()

    def _head_read(self) -> bool:
        """False after a 400 to a request head h11 (uvicorn's parser) refuses and http.server reads: a header line
        it took as no header (`_headers_whole`), not one Host (`_one_host`), a bad Content-Length (`_length_read`)."""
        return self._headers_whole() and self._one_host() and self._length_read()

    def _headers_whole(self) -> bool:
        """False after a 400 to a header block email's parser did not read whole (`unread_header`): a Content-Length
        after a line it took as no header went unread (a 411, or a GET's body read as the next request)."""
        if (why := unread_header(self.headers)) is None:
            return True
        self._refuse(HTTPStatus.BAD_REQUEST, why)
        return False

    def _length_read(self) -> bool:
        """False after a 400 to a Content-Length that is no byte count, or lengths that differ (`_length`), whatever
        the method: h11 refuses the head, where a GET's body, skipped by it, closed the connection after its answer."""
        try:
            self._length()
        except Unreadable as e:
            self._refuse(*e.args)
            return False
        return True

    def _one_host(self) -> bool:
        """False after a 400 to a request with several Host headers, or an HTTP/1.1 one with none, as h11 (uvicorn's
        parser) refuses them; HTTP/1.0 may leave it out."""
        hosts = len(self.headers.get_all("Host") or ())
        if hosts == 1 or (hosts == 0 and self.request_version in ("HTTP/0.9", "HTTP/1.0")):
            return True
        self._refuse(HTTPStatus.BAD_REQUEST, f"{hosts or 'no'} Host header{'s' if hosts > 1 else ''}: send one, "
                                             "naming the server (RFC 9112 3.2)")
        return False

    def handle_expect_100(self) -> bool:
        """`Expect: 100-continue`: a request refused by its headers alone (`_head_read`; a body over MAX_BODY, or
        framed as it cannot be read) is answered at once, without asking for its body (RFC 9110 10.1.1)."""
        if not self._head_read():
            return False
        if self.command == "POST" and self.route in POST_ROUTES:  # the bodies read (`_body`)
            try:
                self._framing()
            except Unreadable as e:
                self._refuse(*e.args)
                return False
        return super().handle_expect_100()

    def _refuse(self, status: int, why: str) -> None:
        """Answer a request that cannot be read (why: the problem and the fix), and close the connection."""
        self.close_connection = True
        self._reply(status, error(why, "invalid_request_error"), body=self.command != "HEAD")

    def _client_alive(self) -> bool:
        """False once the client has closed its end of the connection (it gave up waiting for its answer)."""
        try:
            return not _readable(self.connection) or self.connection.recv(1, socket.MSG_PEEK) != b""
        except OSError:
            return False

    def _event(self, payload: dict | None) -> None:
        """One server-sent event (None: none, the stream only opens); the first call opens the stream (the
        connection closes after it)."""
        if not self.streaming:
            self.close_connection = self.streaming = True
            try:
                self.send_response(HTTPStatus.OK)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("Connection", "close")
                self.end_headers()
            except OSError:  # gone (a broken pipe, a reset) or not reading for `timeout` seconds (TimeoutError)
                raise ClientGone from None
        if payload is not None and not self._write(f"data: {json.dumps(payload)}\n\n"):
            raise ClientGone

    def _write(self, text: str) -> bool:
        """False when the client has gone, or has read nothing for `timeout` seconds (its stream is given up)."""
        try:
            self.wfile.write(text.encode())
            self.wfile.flush()
            return True
        except OSError:  # BrokenPipeError, ConnectionResetError, TimeoutError
            self.close_connection = True
            return False

    def _reply(self, status: int, payload: dict | None, body: bool = True, allow: bool = False,
               close: bool = False) -> None:
        data = b"" if payload is None else json.dumps(payload).encode()
        try:
            self.send_response(status)
            if close or self.close_connection:
                self.send_header("Connection", "close")
            if payload is not None:
                self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if allow or status == HTTPStatus.METHOD_NOT_ALLOWED:  # RFC 9110: a 405 names the route's methods
                self.send_header("Allow", "POST, OPTIONS" if self.route in POST_ROUTES else "GET, HEAD, OPTIONS")
            if status == HTTPStatus.SERVICE_UNAVAILABLE:
                self.send_header("Retry-After", "10")
            self.end_headers()
            if body:
                self.wfile.write(data)
        except OSError:  # BrokenPipeError, ConnectionResetError, TimeoutError (a client not reading)
            self.close_connection = True

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """http.server's own refusals (an unknown method such as FOO, a malformed request line, an HTTP version it
        does not speak, a path or headers too long) as OpenAI's JSON error body, as every other answer, not its HTML
        page; with a status line even when the request line was too broken to name an HTTP version."""
        self.log_error("code %d, message %s", code, message)
        self.close_connection = True
        if self.request_version == "HTTP/0.9":  # the default until a request line was read: no headers would go out
            self.request_version = self.protocol_version
        text = message or HTTPStatus(code).phrase
        if code == HTTPStatus.NOT_IMPLEMENTED:
            text = f"{self.command} is not served"
        self._reply(code, error(f"{text}: {PROTOCOL_FIXES.get(code, 'send an HTTP/1.1 request')}",
                                "invalid_request_error"), body=self.command != "HEAD", close=True)

    def log_message(self, fmt, *args):
        log.info("%s %s", self.address_string(), fmt % args)


class Server(ThreadingHTTPServer):
    request_queue_size = 1024  # the listen backlog: socketserver's 5 reset bursts of connections (load generators)

    def handle_error(self, request, client_address):
        """A client that reset or dropped its connection (a kept-alive one closed with unread bytes: pooled clients,
        load balancers) is no server error: one log line, not socketserver's traceback on stderr."""
        e = sys.exc_info()[1]
        if isinstance(e, ConnectionError):
            log.info("%s closed its connection: %s", client_address[0], e)
            return
        super().handle_error(request, client_address)


class Server6(Server):
    address_family = socket.AF_INET6  # an IPv6 --host ("::" takes IPv4 connections too, Linux's default)


def make_server(app: App | None, host: str, port: int) -> ThreadingHTTPServer:
    """Bound and ready; `serve_forever()` runs it (port 0 picks a free port: see `server_address`). `app` may be
    set later (`server.app`), before `serve_forever()`: the port is taken before a long load."""
    try:
        server = (Server6 if ":" in host else Server)((host, port), Handler)
    except OSError as e:
        raise ConfigError(f"cannot listen on {host}:{port} ({e.strerror}): pick another --port or --host") from None
    server.daemon_threads = True
    server.app = app
    server.in_flight, server.busy = 0, threading.Condition()
    return server


def drain(server: ThreadingHTTPServer, timeout: float) -> bool:
    """Wait until no POST is being answered (at most `timeout` seconds); True when none is."""
    with server.busy:
        return server.busy.wait_for(lambda: server.in_flight == 0, timeout)
