"""`redrafter-trt serve --checkpoint-dir`: an OpenAI-style HTTP API over the reference runtime, with the routes and
request fields of TensorRT-LLM's `trtllm-serve` (which serves the built engine, see `serve_engine.py`), so a client
written against one talks to the other unchanged.

    GET  /health                 200 once the model is loaded
    GET  /v1/models              the one model
    POST /v1/completions         {"prompt": str | [str] | [int] | [[int]], "max_tokens", "temperature", "seed", "stop",
                                  "logprobs": k}
    POST /v1/chat/completions    {"messages": [{"role", "content"}], "max_tokens", "temperature", "seed", "stop",
                                  "logprobs": true, "top_logprobs": k}

Every answer carries `usage` and a `redrafter` block (decoding steps, tokens per step): the acceptance to watch.
A greedy checkpoint (redrafter_greedy_search) answers greedily whatever the temperature, as its engine does; a
sampling one samples at the request's temperature (1.0 when unset) and refuses 0, as `run --engine-dir` does.
`"stream": true` sends server-sent events as tokens are accepted (OpenAI's chunk objects, then `data: [DONE]`).
A stop string ends the answer as soon as it is decoded (the text stops before it). Requests are batched in flight,
up to --max-batch-size prompts (`serve_backend`). A tp=N checkpoint runs on N local processes (this one is rank 0;
`runtime.ranks`), N GPUs with --device cuda. logprobs: each token of the text under the base's raw logits, with the
k most likely (`runtime.decode`). Refused with 400: "n" > 1, "echo", "best_of", "suffix", another "model",
max_tokens above the server's --max-output-len, malformed fields.
"""

from __future__ import annotations

import json
import logging
import math
import secrets
import threading
import time
import uuid
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

from . import __version__
from .errors import ConfigError
from .serve_backend import ClientGone, ReferenceBackend, RequestError
from .serve_logprobs import logprobs_json

log = logging.getLogger(__name__)


# ---- requests ------------------------------------------------------------------------------------------------------

def _field(body: dict, name: str, kind, default, check=lambda v: True, need: str = "", allow_bool: bool = False):
    value = body.get(name)
    if value is None:
        return default
    if (isinstance(value, bool) and not allow_bool) or not isinstance(value, kind) or not check(value):
        raise RequestError(f'"{name}" must be {need}')
    return value


def _prompts(prompt) -> list:
    """str | [str] | [int] | [[int]] -> a list of str or [int] prompts."""
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list) and prompt:
        if all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
            return [prompt]
        if all(isinstance(p, str) for p in prompt) or all(
                isinstance(p, list) and all(isinstance(t, int) and not isinstance(t, bool) for t in p) for p in prompt):
            return prompt
    raise RequestError('"prompt" must be a string, a list of strings, a list of token ids or a list of those')


def _content(content):
    """A message's text: a string, or OpenAI's list of parts of which only text parts are allowed."""
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text"
                                         and isinstance(p.get("text"), str) for p in content):
        return "".join(p["text"] for p in content)
    return content


ROLES = ("system", "user", "assistant")


def _messages(messages) -> list[dict]:
    ok = isinstance(messages, list) and messages and all(
        isinstance(m, dict) and m.get("role") in ROLES and isinstance(_content(m.get("content")), str)
        for m in messages)
    if not ok:
        raise RequestError('"messages" must be a non-empty list of {"role": "system", "user" or "assistant", '
                           '"content": str or text parts}')
    return [{"role": m["role"], "content": _content(m["content"])} for m in messages]


def _logprobs_asked(body: dict, chat: bool) -> int | None:
    """How many most likely tokens to list per token (0: the token's own only), or None when no logprobs are asked:
    chat `"logprobs": true` with `"top_logprobs": k`, completions `"logprobs": k`."""
    from .runtime.decode import MAX_TOP_LOGPROBS  # torch is loaded by then: the backend holds the model

    limit = f"an integer in 0..{MAX_TOP_LOGPROBS}"
    if not chat:
        _field(body, "top_logprobs", int, None, lambda v: False, 'left out: completions take "logprobs": k')
        return _field(body, "logprobs", int, None, lambda v: 0 <= v <= MAX_TOP_LOGPROBS, limit)
    wanted = _field(body, "logprobs", bool, False, need="true or false", allow_bool=True)
    top = _field(body, "top_logprobs", int, None, lambda v: 0 <= v <= MAX_TOP_LOGPROBS, limit)
    if top is not None and not wanted:
        raise RequestError('"top_logprobs" needs "logprobs": true')
    return (top or 0) if wanted else None


class App:
    """Routes -> (HTTP status, JSON payload). Pure apart from the backend, so it is tested without sockets."""

    def __init__(self, backend: ReferenceBackend, model_name: str, max_output_len: int):
        if max_output_len >= backend.config.max_positions:
            raise ConfigError(f"--max-output-len {max_output_len} leaves no room for a prompt in the model's "
                              f"{backend.config.max_positions} positions: pass a smaller one")
        self.backend, self.model_name, self.max_output_len = backend, model_name, max_output_len
        self.created = int(time.time())

    def get(self, path: str) -> tuple[int, dict]:
        if path == "/health":
            return HTTPStatus.OK, {"status": "ok"}
        if path == "/v1/models":
            return HTTPStatus.OK, {"object": "list", "data": [{"id": self.model_name, "object": "model",
                                                               "created": self.created, "owned_by": "redrafter-trt"}]}
        return HTTPStatus.NOT_FOUND, error(f"no route GET {path}: try /health, /v1/models", "not_found")

    def post(self, path: str, body, events: Callable[[dict], None] | None = None) -> tuple[int, dict] | None:
        """The answer, or None when it went out as server-sent events through `events` (a streaming request)."""
        if path not in ("/v1/completions", "/v1/chat/completions"):
            return HTTPStatus.NOT_FOUND, error(f"no route POST {path}: try /v1/completions, /v1/chat/completions",
                                               "not_found")
        try:
            return self._complete(path == "/v1/chat/completions", body, events)
        except (RequestError, ConfigError) as e:
            return HTTPStatus.BAD_REQUEST, error(str(e), "invalid_request_error")

    def _complete(self, chat: bool, body, events) -> tuple[int, dict] | None:
        if not isinstance(body, dict):
            raise RequestError("the request body must be a JSON object")
        stream = _field(body, "stream", bool, False, need="true or false", allow_bool=True)
        if stream and events is None:
            raise RequestError('"stream": true needs an HTTP connection to stream on')
        _field(body, "n", int, 1, lambda v: v == 1, "1 (one answer per prompt)")
        _field(body, "model", str, None, lambda v: v == self.model_name, f'"{self.model_name}" (GET /v1/models)')
        _field(body, "best_of", int, 1, lambda v: v == 1, "1 (one answer per prompt)")
        _field(body, "echo", bool, False, lambda v: not v, "false: the prompt is not sent back", allow_bool=True)
        _field(body, "suffix", str, None, lambda v: False, "left out: no insertion here")
        logprobs = _logprobs_asked(body, chat)
        limit = f"an integer in 1..{self.max_output_len} (the server's --max-output-len)"
        max_tokens, newer = (_field(body, key, int, None, lambda v: 1 <= v <= self.max_output_len, limit)
                             for key in ("max_tokens", "max_completion_tokens"))  # the second: OpenAI's chat name
        max_tokens = max_tokens or newer or self.max_output_len
        temperature = _field(body, "temperature", (int, float), None, lambda v: 0 <= v < math.inf, "a number >= 0")
        seed = _field(body, "seed", int, None, lambda v: 0 <= v < 2 ** 63, "an integer in 0..2**63-1")
        seed = secrets.randbits(63) if seed is None else seed  # as OpenAI: a fresh sample unless a seed is sent
        stop = _field(body, "stop", (str, list), [], lambda v: isinstance(v, str) or all(isinstance(s, str) for s in v),
                      "a string or a list of strings")
        stop = [s for s in ([stop] if isinstance(stop, str) else stop) if s]
        if chat:
            prompts = [self.backend.encode_chat(_messages(body.get("messages")))]
        else:
            prompts = [self.backend.encode(p) if isinstance(p, str) else p for p in _prompts(body.get("prompt"))]
        head = {"id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}", "created": int(time.time()),
                "model": self.model_name}
        kind = "chat.completion" if chat else "text_completion"

        def lps(values) -> dict | None:
            return None if logprobs is None else logprobs_json(self.backend.tokenizer, values, chat)

        def on_text(i: int, delta: str, values=None, role: bool = False) -> None:
            part = ({"delta": {"role": "assistant", "content": delta} if role else {"content": delta}} if chat else
                    {"text": delta})
            events(head | {"object": kind + (".chunk" if chat else ""),
                           "choices": [{"index": i, **part, "logprobs": lps(values or []), "finish_reason": None}]})
        if stream and chat:  # as OpenAI: the first chunk names the role
            on_text(0, "", role=True)
        choices = self.backend.complete(prompts, max_tokens, temperature, seed, stop, on_text if stream else None,
                                        logprobs)
        made = sum(len(c.ids) for c in choices)
        steps = sum(c.steps for c in choices)
        tail = {"usage": {"prompt_tokens": sum(map(len, prompts)), "completion_tokens": made,
                          "total_tokens": sum(map(len, prompts)) + made},
                "redrafter": {"steps": steps, "tokens_per_step": round(made / max(steps, 1), 4)}}
        if stream:
            empty = {"delta": {}} if chat else {"text": ""}
            events(head | {"object": kind + (".chunk" if chat else ""),
                           "choices": [{"index": i, **empty, "logprobs": None, "finish_reason": c.finish_reason}
                                       for i, c in enumerate(choices)]} | tail)
            return None
        return HTTPStatus.OK, head | {"object": kind, "choices": [
            ({"index": i, "message": {"role": "assistant", "content": c.text}} if chat else {"index": i, "text": c.text})
            | {"logprobs": lps(c.logprobs), "finish_reason": c.finish_reason} for i, c in enumerate(choices)]} | tail


def error(message: str, kind: str) -> dict:
    return {"error": {"message": message, "type": kind}}


# ---- HTTP ----------------------------------------------------------------------------------------------------------

MAX_BODY = 8 << 20  # bytes in one request
UNREADABLE = object()  # _body's answer when the body could not be read (the client was already told why)


class Handler(BaseHTTPRequestHandler):
    server_version = f"redrafter-trt/{__version__}"
    protocol_version = "HTTP/1.1"
    timeout = 300  # seconds a connection may sit idle or half-sent

    def do_GET(self):
        self._reply(*self.server.app.get(self.path))

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
        self._reply(HTTPStatus.METHOD_NOT_ALLOWED,
                    error(f"{self.command} is not served: use GET /v1/models or POST a completion", "invalid_request_error"))

    do_DELETE = do_PATCH = do_PUT

    def _post(self):
        body = self._body()
        if body is UNREADABLE:
            return
        self.streaming = False
        try:
            answer = self.server.app.post(self.path, body, self._event)
        except ClientGone:
            log.info("%s closed the stream of %s; generation stopped", self.address_string(), self.path)
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
        length = self.headers.get("Content-Length")
        problem = None
        if self.headers.get("Transfer-Encoding"):
            problem = HTTPStatus.LENGTH_REQUIRED, "chunked request bodies are not accepted: send a Content-Length"
        elif length is None or not length.isdigit():
            problem = HTTPStatus.LENGTH_REQUIRED, f"Content-Length {length!r} is not a byte count: send a JSON body"
        elif int(length) > MAX_BODY:
            problem = HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"the body is over {MAX_BODY} bytes: send a shorter prompt"
        if problem is None:
            try:
                return json.loads(self.rfile.read(int(length)) or b"null")
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                problem = HTTPStatus.BAD_REQUEST, f"the request body is not JSON ({e}): send a JSON object"
        self.close_connection = True  # whatever is left of the body must not be read as the next request
        self._reply(problem[0], error(problem[1], "invalid_request_error"))
        return UNREADABLE

    def _event(self, payload: dict) -> None:
        """One server-sent event; the first one opens the stream (the connection closes after it)."""
        if not self.streaming:
            self.close_connection = self.streaming = True
            try:
                self.send_response(HTTPStatus.OK)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("Connection", "close")
                self.end_headers()
            except (BrokenPipeError, ConnectionResetError):
                raise ClientGone from None
        if not self._write(f"data: {json.dumps(payload)}\n\n"):
            raise ClientGone

    def _write(self, text: str) -> bool:
        """False when the client has gone."""
        try:
            self.wfile.write(text.encode())
            self.wfile.flush()
            return True
        except (BrokenPipeError, ConnectionResetError):
            return False

    def _reply(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def log_message(self, fmt, *args):
        log.info("%s %s", self.address_string(), fmt % args)


def make_server(app: App, host: str, port: int) -> ThreadingHTTPServer:
    """Bound and ready; `serve_forever()` runs it (port 0 picks a free port: see `server_address`)."""
    try:
        server = ThreadingHTTPServer((host, port), Handler)
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
