"""How the reference server refuses a request: the exceptions its answer is (RequestError: 400, Unavailable: 503,
ClientGone: nothing more is sent) and OpenAI's error body they go out in.

    raise RequestError("a prompt is empty: send some text")    # anywhere on a request's way: a 400 and the fix
    raise RequestError('"n" must be ...', param="n")            # naming the field refused, as OpenAI's `param`
    raise RequestError("This model's maximum ...", param="prompt", code="context_length_exceeded")  # OpenAI's code
    error(message, "invalid_request_error")                     # {"error": {"message", "type", "param", "code"}}
"""

from __future__ import annotations

SHUTTING_DOWN = "the server is shutting down: send the request again once it is back"


class RequestError(Exception):
    """A bad request: answered with 400 and this message; param: the request field refused (OpenAI's error `param`,
    which the openai client gives as `e.param`), None when no one field is; code: OpenAI's error `code` where it has
    one for the refusal ("context_length_exceeded", which clients read to shorten the prompt), else None."""

    def __init__(self, message: str, param: str | None = None, code: str | None = None):
        super().__init__(message)
        self.param, self.code = param, code


class Unavailable(RequestError):
    """The server is shutting down: answered with 503 and Retry-After, which clients retry (a 400 they do not)."""


class ClientGone(Exception):
    """The client closed a streaming connection: generation stops, nothing more is sent."""


def error(message: str, kind: str, code: str | None = None, param: str | None = None) -> dict:
    """OpenAI's error body (`param` and `code` always present, null when there is nothing to say)."""
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}
