"""The reference server's HTTP/1.1 layer (serve_http) as a client sees it: raw bytes to a server whose app is a stub
(its routes as App's, no model), for what the protocol tests with the tiny model left unpinned (a review mutated
serve_http and these changes went unseen)."""

from __future__ import annotations

import json
import socket
import threading
from http import HTTPStatus

import pytest

from redrafter_trt.serve_app import POST_ROUTES, is_route, no_route
from redrafter_trt.serve_http import Handler, make_server
from test_serve_head import answers
from test_serve_protocol import exchange

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
    server = make_server(Routes(), "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


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


@pytest.mark.parametrize("method, path, status", [("POST", "/health", 405), ("GET", "/health", 200),
                                                  ("PUT", "/v1/completions", 405), ("OPTIONS", "/nope", 404)])
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
        sock.sendall(head + (b"" if length else CLOSE) + b"\r\n")  # no body: none to wait for, the connection kept
        got = b""
        while chunk := sock.recv(65536):  # closed by the server: no body sent
            got += chunk
    assert [a[0] for a in answers(got)] == [status] and b"\r\nConnection: close\r\n" in got, got


def test_a_completion_route_asks_for_its_body_with_100_continue(server):
    """Where the body will be read (within MAX_BODY), 100 Continue, then the answer, the connection kept."""
    raw = POST + b"Expect: 100-continue\r\nContent-Length: 2\r\n\r\n{}" + GET + CLOSE + b"\r\n"
    assert statuses(server, raw) == [100, 200, 200]


def test_an_http_1_0_expect_gets_no_100_continue(server):
    """RFC 9110 10.1.1: a server MUST ignore 100-continue in an HTTP/1.0 request (its client knows no 1xx)."""
    raw = b"POST /v1/completions HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\n{}"
    assert statuses(server, raw) == [200]
