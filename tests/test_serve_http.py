"""The reference server's HTTP/1.1 layer (serve_http) as a client sees it: raw bytes to a server whose app is a stub
(its routes as App's, no model), for what the protocol tests with the tiny model left unpinned (a review mutated
serve_http and these changes went unseen)."""

from __future__ import annotations

import json
import socket
import threading
import time
from http import HTTPStatus

import pytest

from redrafter_trt import serve_http
from redrafter_trt.serve_app import POST_ROUTES, is_route, no_route
from redrafter_trt.serve_http import Handler, drain, stop_serving
from test_serve_head import answers, serving
from test_serve_protocol import chunked, exchange

HOST = b"Host: x\r\n"
CLOSE = b"Connection: close\r\n"
POST = b"POST /v1/completions HTTP/1.1\r\n" + HOST
GET = b"GET /health HTTP/1.1\r\n" + HOST


class Routes:
    """App's routes without a model: GET answers the path it was asked, POST to a completion route the path and
    body, elsewhere App's 405 or 404. `hold`: POSTs wait for it (set by default)."""

    def __init__(self):
        self.hold = threading.Event()
        self.hold.set()

    def get(self, path: str, head: bool = False) -> tuple[int, dict]:
        return (HTTPStatus.OK, {"path": path}) if is_route(path) else no_route("GET", path)

    def post(self, path: str, body, events=None, alive=None) -> tuple[int, dict]:
        if path not in POST_ROUTES:
            return ((HTTPStatus.METHOD_NOT_ALLOWED, {"error": f"{path} takes GET"}) if is_route(path)
                    else no_route("POST", path))
        assert self.hold.wait(60)
        return HTTPStatus.OK, {"path": path, "body": body}


@pytest.fixture()
def server():
    with serving(Routes()) as server:
        yield server


def statuses(server, raw: bytes) -> list[int]:
    return [answer[0] for answer in answers(exchange(server, raw, half_close=False))]


def test_options_is_a_204_without_content_length_and_a_404_where_no_route_is(server):
    """RFC 9110 8.6: a server MUST NOT send Content-Length in a 204; OPTIONS's had `Content-Length: 0`. OPTIONS /nope
    got 204 with `Allow: GET, HEAD, OPTIONS` where PUT /nope got 404 (a review)."""
    answer = exchange(server, b"OPTIONS /v1/completions HTTP/1.1\r\n" + HOST + b"\r\n" + GET + CLOSE + b"\r\n",
                      half_close=False)
    head, _, rest = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 204 ") and b"\r\nAllow: POST, OPTIONS" in head, answer
    assert b"Content-Length" not in head and rest.startswith(b"HTTP/1.1 200 "), answer  # the 204 has no body
    got = answers(exchange(server, b"OPTIONS /nope HTTP/1.1\r\n" + HOST + CLOSE + b"\r\n"))
    assert [a[0] for a in got] == [404] and b"Allow" not in got[0][1], got
    assert json.loads(got[0][2])["error"]["message"].startswith("Invalid URL (OPTIONS /nope)"), got


NO_BODY_READ = [("POST", "/health", 405), ("GET", "/health", 200), ("PUT", "/v1/completions", 405),
                ("OPTIONS", "/nope", 404)]  # requests whose body no route reads: (method, path, status)


@pytest.mark.parametrize("method, path, status", NO_BODY_READ)
@pytest.mark.parametrize("length", [b"Content-Length: 2\r\n", b"Content-Length: %d\r\n" % (9 << 20),
                                    b"Transfer-Encoding: chunked\r\n", b""], ids=["small", "large", "chunked", "none"])
def test_expect_100_continue_is_answered_only_where_the_body_is_read(server, monkeypatch, method, path, status,
                                                                     length):
    """RFC 9110 10.1.1: `POST /health` with `Expect: 100-continue` and a length over MAX_BODY got `100 Continue`, then
    the 405 and a closed connection without the body read (a review). A body only a completion route reads gets no
    100: the final answer at once, then the connection closes (the body may or may not follow). A PUT with no length
    was a 411 'send a JSON body' where its method is refused whatever the body (a mutant)."""
    monkeypatch.setattr(Handler, "timeout", 5)  # a server waiting for the body that is not sent gives up
    head = f"{method} {path} HTTP/1.1\r\n".encode() + HOST + b"Expect: 100-continue\r\n" + length
    with socket.create_connection(server.server_address, timeout=30) as sock:
        sock.sendall(head + (b"" if length else CLOSE) + b"\r\n")  # no body: closed by the client (kept: below)
        got = b""
        while chunk := sock.recv(65536):  # closed by the server: no body sent
            got += chunk
    assert [a[0] for a in answers(got)] == [status] and b"\r\nConnection: close\r\n" in got, got


@pytest.mark.parametrize("method, path, status", NO_BODY_READ)
def test_an_expect_without_a_body_keeps_the_connection(server, method, path, status):
    """With no body (no length) there is none to skip: the next request on the connection is answered (a review: a
    mutant closing every connection that sent Expect passed the test above, whose bodiless case closes its own)."""
    raw = f"{method} {path} HTTP/1.1\r\n".encode() + HOST + b"Expect: 100-continue\r\n\r\n" + GET + CLOSE + b"\r\n"
    assert statuses(server, raw) == [status, 200]


def test_a_completion_route_asks_for_its_body_with_100_continue(server):
    """Where the body will be read (within MAX_BODY), 100 Continue, then the answer, the connection kept."""
    raw = POST + b"Expect: 100-continue\r\nContent-Length: 2\r\n\r\n{}" + GET + CLOSE + b"\r\n"
    assert statuses(server, raw) == [100, 200, 200]


def test_an_http_1_0_expect_gets_no_100_continue(server):
    """RFC 9110 10.1.1: a server MUST ignore 100-continue in an HTTP/1.0 request (its client knows no 1xx)."""
    raw = b"POST /v1/completions HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n{}"
    assert statuses(server, raw) == [200]


def test_a_head_answer_has_no_body_on_a_kept_connection(server):
    """RFC 9110 9.3.2: HEAD's answer names GET's Content-Length and sends no body; a body sent would be read as the
    start of the next answer on the connection."""
    answer = exchange(server, b"HEAD /health HTTP/1.1\r\n" + HOST + b"\r\n" + GET + CLOSE + b"\r\n", half_close=False)
    head, _, rest = answer.partition(b"\r\n\r\n")
    body = b'{"path": "/health"}'
    assert head.startswith(b"HTTP/1.1 200 ") and b"\r\nContent-Length: %d" % len(body) in head, answer
    assert rest.startswith(b"HTTP/1.1 200 ") and rest.endswith(b"\r\n\r\n" + body), answer


@pytest.mark.parametrize("method, path, status", [("GET", "/health", 200), ("PUT", "/health", 405),
                                                  ("POST", "/health", 405)])
def test_a_body_not_taken_is_not_read_as_the_next_request(server, method, path, status):
    """A body sent to a route that takes none, by its length: dropped, the next request answered on the connection
    (a POST to /health's was left unread, a mutant). A chunked one: the connection closes after the answer, its
    chunks never read as a request (with it read as no body, its size line got a 400)."""
    start = f"{method} {path} HTTP/1.1\r\n".encode() + HOST
    assert statuses(server, start + b"Content-Length: 2\r\n\r\n{}" + GET + CLOSE + b"\r\n") == [status, 200]
    got = answers(exchange(server, start + b"Transfer-Encoding: chunked\r\n\r\n" + chunked(b"{}", [2]) + GET,
                           half_close=False))
    assert [a[0] for a in got] == [status] and b"\r\nConnection: close" in got[0][1], got


def test_a_chunk_not_ended_by_crlf_is_a_400(server):
    """The two bytes after a chunk's data must be CRLF (RFC 9112 7.1); other bytes there were read as the CRLF."""
    got = answers(exchange(server, POST + b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}XY0\r\n\r\n"))
    assert [a[0] for a in got] == [400] and "does not end in CRLF" in json.loads(got[0][2])["error"]["message"], got


def test_the_trailer_lines_are_limited(server, monkeypatch):
    """MAX_TRAILERS trailer lines are read, one more is a 400."""
    monkeypatch.setattr(serve_http, "MAX_TRAILERS", 2)
    raw = POST + b"Transfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n"
    assert statuses(server, raw + b"A: 1\r\nB: 2\r\n\r\n" + GET + CLOSE + b"\r\n") == [200, 200]
    got = answers(exchange(server, raw + b"A: 1\r\nB: 2\r\nC: 3\r\n\r\n"))
    assert [a[0] for a in got] == [400] and "trailer lines" in json.loads(got[0][2])["error"]["message"], got


def test_a_body_of_max_body_bytes_is_read_and_one_more_is_a_413(server, monkeypatch):
    monkeypatch.setattr(serve_http, "MAX_BODY", 64)
    body = json.dumps({"prompt": "x" * 50}).encode().ljust(64)
    assert statuses(server, POST + CLOSE + b"Content-Length: 64\r\n\r\n" + body) == [200]
    assert statuses(server, POST + CLOSE + b"Content-Length: 65\r\n\r\n" + body + b" ") == [413]


@pytest.mark.parametrize("keep, closes", [(b"", True), (b"Connection: keep-alive\r\n", False)],
                         ids=["plain", "keep-alive"])
def test_an_http_1_0_connection_closes_unless_kept_alive(server, keep, closes):
    """RFC 9112 9.3: an HTTP/1.0 connection closes after its answer, unless it asked for keep-alive (kept, as
    http.server keeps it: `ab -k`)."""
    raw = b"GET /health HTTP/1.0\r\n" + keep + b"\r\n" + GET + CLOSE + b"\r\n"
    assert statuses(server, raw) == ([200] if closes else [200, 200])


@pytest.mark.parametrize("target, path", [("//v1/completions", "/v1/completions"),
                                          ("/v1/%63ompletions", "/v1/completions")])
def test_a_path_is_routed_as_http_server_and_starlette_read_it(server, target, path):
    """A doubled first slash is one (http.server's gh-87389: `//v1/...` read as a host had no path: 404); a
    percent-encoded path is routed decoded, as Starlette routes it for vLLM (`scope["path"]`)."""
    raw = f"POST {target} HTTP/1.1\r\n".encode() + HOST + CLOSE + b"Content-Length: 2\r\n\r\n{}"
    got = answers(exchange(server, raw))
    assert [a[0] for a in got] == [200] and json.loads(got[0][2])["path"] == path, got
    got = answers(exchange(server, b"GET /v1/models/my%20model HTTP/1.1\r\n" + HOST + CLOSE + b"\r\n"))
    assert json.loads(got[0][2])["path"] == "/v1/models/my model", got


def test_an_idle_connection_is_closed_after_the_handlers_timeout(server, monkeypatch):
    """A client that connects and sends nothing holds a thread until Handler.timeout (300 s) closes its connection;
    with no timeout it held it for ever."""
    assert 0 < Handler.timeout < float("inf")
    monkeypatch.setattr(Handler, "timeout", 0.2)
    with socket.create_connection(server.server_address, timeout=30) as sock:
        assert sock.recv(1) == b""


def post_held(server) -> socket.socket:
    """A POST whose answer waits for `server.app.hold`, once it is in flight."""
    server.app.hold.clear()
    sock = socket.create_connection(server.server_address, timeout=60)
    sock.sendall(POST + CLOSE + b"Content-Length: 2\r\n\r\n{}")
    while server.in_flight == 0:
        time.sleep(0.01)
    return sock


def test_drain_returns_once_the_answers_in_flight_went_out(server):
    """drain waits on a condition each answer notifies as it ends: without the notice it waited out its whole
    timeout (30 s here) for an answer that went out at once."""
    with post_held(server):
        threading.Timer(0.1, server.app.hold.set).start()
        began = time.monotonic()
        assert drain(server, timeout=30)
        assert time.monotonic() - began < 15


class Stopped:
    """A backend double whose generation ends at once."""

    def stop(self, grace: float = 0.0):
        pass


def test_the_answers_in_flight_get_what_is_left_of_the_grace(server):
    """stop_serving's drain gets what the generation left of the grace, not only LAST_EVENTS_SECONDS (1 s): an
    answer going out 2.5 s into a 20 s grace was left unsent."""
    with post_held(server):
        server.shutdown()  # as Ctrl-C's KeyboardInterrupt ends serve_forever
        threading.Timer(2.5, server.app.hold.set).start()
        assert stop_serving(server, Stopped(), grace=20)
    threading.Thread(target=server.serve_forever, daemon=True).start()  # for the fixture's shutdown
