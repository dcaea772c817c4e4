"""The reference server's HTTP side: http.server's threading server answering each request with the `serve_app.App`
it holds, request heads read as h11 reads them (`serve_head.read_head`), bodies by their Content-Length or chunked
(`read_chunked`, much as uvicorn reads them for vLLM and trtllm-serve), OpenAI's JSON error body for what cannot be
read (a head h11 refuses, a body too long, not JSON, badly chunked), server-sent events for a streamed answer, and
the count of POSTs in flight that a shutdown waits for.

    server = make_server(None, "127.0.0.1", 8000)   # the port is taken first: a taken one is one line at once
    server.app = App(backend, "smol", 256)          # after the long load
    server.serve_forever()
    stop_serving(server, backend, grace=30)         # SIGTERM: the answers in flight get 30 s, then it returns
"""

from __future__ import annotations

import json
import logging
import re
import select
import socket
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

from . import __version__
from .errors import ConfigError, json_loads
from .serve_app import POST_ROUTES, App, is_route, no_route
from .serve_errors import ClientGone, error
from .serve_head import Unreadable, read_head, tokens

log = logging.getLogger(__name__)

MAX_BODY = 8 << 20  # bytes in one request
UNREADABLE = object()  # _body's answer when the body could not be read (the client was already told why)


MAX_CHUNK_LINE = 4096  # bytes in a chunk's size line (its extensions too) or a trailer line, as h11's limit on lines
MAX_TRAILERS = 100  # trailer lines, as http.client's limit on header lines
MAX_CHUNK_FRAMING = 1 << 20  # bytes of size lines (extensions too) and trailers in one body, beside MAX_BODY's data
CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,16})[ \t]*(?:;[^\r\n]*)?\r\n")  # RFC 9112 7.1: hex, BWS, extensions


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
    HTTPStatus.REQUEST_URI_TOO_LONG: "send a shorter path (the prompt goes in the JSON body)",
    HTTPStatus.NOT_IMPLEMENTED: "use GET /v1/models or POST a completion",
}


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
        if not is_route(self.route):  # as PUT's: no route's methods to name (its 204 named GET's, a review)
            self._reply(*no_route(self.command, self.route))
        else:
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
            body = json_loads(data or b"null")
            json.dumps(body, ensure_ascii=False).encode()  # a lone surrogate ("\ud800") is no text to tokenize
            return body
        except Unreadable as e:
            problem = e.args
        except (json.JSONDecodeError, UnicodeDecodeError) as e:  # json_loads': nested too deeply, a number too long too
            problem = HTTPStatus.BAD_REQUEST, f"the request body is not JSON ({e}): send a JSON object"
        except UnicodeEncodeError as e:
            problem = HTTPStatus.BAD_REQUEST, (f"the request body holds {e.object[e.start:e.end]!r}, half of a "
                                               "UTF-16 surrogate pair: send whole characters")
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
        """The body's length by the head (None: chunked, read as it comes); Unreadable where none is sent (411) or
        it is over MAX_BODY (413): `handle_expect_100` refuses so before the body is sent."""
        if self.head.chunked:
            return None
        if self.head.length is None:
            raise Unreadable(HTTPStatus.LENGTH_REQUIRED, "no Content-Length: send a JSON body")
        if self.head.length > MAX_BODY:
            raise too_large(MAX_BODY)
        return self.head.length

    def _skip_body(self) -> None:
        """Drop the body of a request that takes none (a PUT, a GET with a JSON body): left unread, a kept-alive
        connection would read it as its next request. One chunked, over MAX_BODY or not asked for (`Expect`, answered
        without 100 Continue) closes the connection instead."""
        length = None if self.head.chunked else self.head.length or 0
        if length is None or length > MAX_BODY or (length and self.body_unasked):
            self.close_connection = True
        elif length:
            self.rfile.read(length)

    def parse_request(self) -> bool:
        """The head read as h11 reads it (`_head_read`), then Connection and Expect, each a comma list over all its
        lines (a close anywhere closes, RFC 9112 9.6, as h11); an HTTP/1.0 keep-alive is kept, as http.server
        keeps it (h11 closes). False after answering a head that cannot be read."""
        self.command, self.request_version = None, self.protocol_version  # a refusal's status line before a version
        self.close_connection, self.body_unasked = True, False
        self.requestline = self.raw_requestline.rstrip(b"\r\n").decode("latin-1")  # the log's
        if not self._head_read():
            return False
        connection = tokens(self.head.fields, "Connection")
        self.close_connection = "close" in connection or (self.request_version < "HTTP/1.1"
                                                          and "keep-alive" not in connection)
        if "100-continue" in tokens(self.head.fields, "Expect") and self.request_version >= "HTTP/1.1":
            return self.handle_expect_100()
        return True

    def _head_read(self) -> bool:
        """False after answering a head h11 (uvicorn's parser without httptools) refuses (`read_head`: 400, 501 for
        a transfer coding), or one over http.client's limits (431), whatever the method: one answer, then the
        connection closes. Sets `head`, and what http.server's handlers read: command, path, request_version."""
        try:
            self.head = read_head(self.raw_requestline, self.rfile)
        except Unreadable as e:
            self._refuse(*e.args)
            return False
        self.command, self.path, self.request_version = self.head.method, self.head.target, self.head.version
        if self.path.startswith("//"):  # http.server's (gh-87389): "//host/path" would read as a host
            self.path = "/" + self.path.lstrip("/")
        return True

    def handle_expect_100(self) -> bool:
        """`Expect: 100-continue`: 100 Continue only where the body will be read (`_body`: a POST to a completion
        route, within MAX_BODY). Elsewhere the final answer goes out at once, without asking for the body (RFC 9110
        10.1.1), and the connection closes (`body_unasked`: the body may follow or not): POST /health with a length
        over MAX_BODY got 100 Continue, then its 405 and a closed connection, the body asked for never read."""
        if not (self.command == "POST" and self.route in POST_ROUTES):
            self.body_unasked = True
            return True
        try:
            self._framing()
        except Unreadable as e:
            self._refuse(*e.args)
            return False
        return super().handle_expect_100()

    def _refuse(self, status: int, why: str) -> None:
        """Answer a request that cannot be read (why: the problem and the fix), and close the connection."""
        self.close_connection = True
        self._reply(status, error(why, "invalid_request_error"), body=not self._asked_head())

    def _asked_head(self) -> bool:
        """Whether the request is a HEAD, whose answer has no body, a refusal's too (RFC 9110 9.3.2): read from the
        request line, as `command` is set only once the head is read."""
        return self.raw_requestline.startswith(b"HEAD ")

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
            if status != HTTPStatus.NO_CONTENT:  # RFC 9110 8.6: MUST NOT (OPTIONS's 204 sent `Content-Length: 0`)
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
        """http.server's own refusals (an unknown method such as FOO, a request line too long) as OpenAI's JSON
        error body, as every other answer, not its HTML page."""
        self.log_error("code %d, message %s", code, message)
        self.close_connection = True
        text = message or HTTPStatus(code).phrase
        if code == HTTPStatus.NOT_IMPLEMENTED:
            text = f"{self.command} is not served"
        self._reply(code, error(f"{text}: {PROTOCOL_FIXES.get(code, 'send an HTTP/1.1 request')}",
                                "invalid_request_error"), body=not self._asked_head(), close=True)

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


# after the grace: how long the answers the shutdown ended get to send their last events ("abort", [DONE]) to clients
# that read them; milliseconds are enough, a client that reads nothing waits it out
LAST_EVENTS_SECONDS = 1.0


def stop_serving(server: ThreadingHTTPServer, backend, grace: float) -> bool:
    """SIGTERM's (Ctrl-C's) shutdown of a server whose serve_forever() has returned, within `grace` seconds and at
    most LAST_EVENTS_SECONDS more: it keeps accepting (what arrives gets its 503 at once instead of waiting in the
    backlog), lets the generation in flight run up to `grace` seconds (`ReferenceBackend.stop`; a second Ctrl-C
    ends it at its next step), then waits for the answers to go out for what is left of the grace, at least
    LAST_EVENTS_SECONDS. An answer whose client reads nothing (its handler blocked writing to a full socket) is
    left unsent: the process exits over it. True when every answer went out. backend: the ReferenceBackend."""
    began = time.monotonic()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        backend.stop(grace=grace)
    except KeyboardInterrupt:
        backend.stop()
    drained = drain(server, timeout=max(grace - (time.monotonic() - began), LAST_EVENTS_SECONDS))
    server.shutdown()
    return drained


def drain(server: ThreadingHTTPServer, timeout: float) -> bool:
    """Wait until no POST is being answered (at most `timeout` seconds); True when none is."""
    with server.busy:
        return server.busy.wait_for(lambda: server.in_flight == 0, timeout)
