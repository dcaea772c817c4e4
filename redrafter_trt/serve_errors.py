"""How the reference server refuses a request: the exceptions its answer is (RequestError: 400, Unavailable: 503,
ClientGone: nothing more is sent)."""

from __future__ import annotations

SHUTTING_DOWN = "the server is shutting down: send the request again once it is back"


class RequestError(Exception):
    """A bad request: answered with 400 and this message."""


class Unavailable(RequestError):
    """The server is shutting down: answered with 503 and Retry-After, which clients retry (a 400 they do not)."""


class ClientGone(Exception):
    """The client closed a streaming connection: generation stops, nothing more is sent."""

