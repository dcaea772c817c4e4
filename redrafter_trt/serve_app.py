"""`redrafter-trt serve --checkpoint-dir`: an OpenAI-style HTTP API over the reference runtime, with the routes and
request fields of TensorRT-LLM's `trtllm-serve` (which serves the built engine, see `serve_engine.py`), so a client
written against one talks to the other unchanged.

    GET  /health                 200 once the model is loaded; 503 (Retry-After) once shutting down
    GET  /version                {"version": our version}
    GET  /metrics                the prefills and decoding steps since the last GET, as trtllm-serve's iteration
                                 statistics (iterLatencyMS, inflightBatchingStats, specDecodingStats, ...; serve_metrics)
    GET  /v1/models              the one model
    POST /v1/completions         {"prompt": str | [str] | [int] | [[int]], "max_tokens", "temperature", "seed", "stop",
                                  "n", "echo", "logprobs": k, "ignore_eos", "stream", "stream_options"}
    POST /v1/chat/completions    {"messages": [{"role", "content"}], "max_tokens", "temperature", "seed", "stop",
                                  "n", "echo", "logprobs": true, "top_logprobs": k, "ignore_eos", "stream",
                                  "stream_options"; with --tool-parser: "tools", "tool_choice", tool messages}

Every answer carries a `redrafter` block (the decoding steps run, the tokens they made per step; a greedy n > 1's
copies are decoded once and counted once): the acceptance to watch, beside `usage` (a streamed answer's only with
include_usage).
A greedy checkpoint (redrafter_greedy_search) answers greedily whatever the temperature, as its engine does; a
sampling one samples at the request's temperature (1.0 when unset) and answers 0 (or below 1e-5) greedily, as vLLM.
`"stream": true` sends server-sent events as tokens are accepted (OpenAI's chunk objects, then `data: [DONE]`; no
usage, the last chunk has the `redrafter` block); `"stream_options": {"include_usage": true}` adds a last chunk with
the usage and no choices (the others carry `"usage": null`, as OpenAI's), and `"continuous_usage_stats": true` with
it puts each answer's usage so far in every chunk (as trtllm-serve and vLLM; benchmark clients ask for it).
A stop string ends the answer as soon as it is decoded (the text stops before it). Requests are batched in flight,
up to --max-batch-size prompts (`serve_scheduler`). A tp=N checkpoint runs on N local processes (this one is rank 0;
`runtime.ranks`), N GPUs with --device cuda. logprobs: each token of the text under the base's raw logits, with the
k most likely (`runtime.decode`). "n": answers per prompt, choice index = prompt index x n + answer (greedy: one decode
per prompt, its answer n times; sampling: n samples; at most --max-batch-size rows decode at once, the rest join as
rows end). "echo" (as trtllm-serve): a completion's text starts with its prompt as sent (with logprobs: the prompt's
tokens too, teacher-forced, the first one null, as OpenAI's; "max_tokens": 0 scores the prompt alone), a chat answer
with the last message when that is the assistant's (the answer is a new turn after it, as vLLM's default; its
continue_final_message is refused). Refused with 400: fields that would change the
answer and are not implemented here (`serve_request.UNSUPPORTED`), fields it does not know, "best_of" > 1, "suffix",
max_tokens above the server's --max-output-len (left out: what the prompt leaves, up to it), more than
`serve_request.MAX_STOP` stop strings or one longer than MAX_STOP_CHARS, malformed fields;
another "model": 404. With --tool-parser, a chat answer's tool calls are parsed out of its text (`serve_tools`):
`message.tool_calls`, finish_reason "tool_calls" (where it was "stop"), streamed as OpenAI streams them (a delta with
a call's id and name, then deltas with pieces of its arguments); "parallel_tool_calls": false keeps the first call
alone (`serve_tools.kept_calls`). With
--reasoning-parser, its thinking is split out first (`serve_reasoning`): `message.reasoning_content`, streamed as
`delta.reasoning_content`.
While the server shuts down, what waits or arrives gets 503 (`ReferenceBackend.stop`), but a stream accepted while
it waits, whose 200 went out then: its last event is that error. The HTTP server around it:
`serve_http`.
"""

from __future__ import annotations

import dataclasses
import time
import uuid
from http import HTTPStatus
from typing import Callable

from . import __version__
from .errors import ConfigError
from .serve_backend import ReferenceBackend, chat_prompt
from .serve_errors import SHUTTING_DOWN, ClientGone, RequestError, Unavailable, error
from .serve_jobs import Choice
from .serve_logprobs import Echo, echo_of, logprobs_json
from .serve_request import (PROMPT, ModelNotFound, Request, answer_seeds, parse, refuse_dropped_tools,
                            refuse_unsupported)
from .serve_reasoning import REASONING_PARSERS, Thinking, opened_by, parse_reasoning
from .serve_tools import TOOL_PARSERS, finish_reason, kept_calls, parse_answer, template_drops


def serve_max_output_len(cfg, max_output_len: int, given: bool) -> int:
    """serve --max-output-len: a value given (typed, or a preset's) is checked; the default (512) is cut to what the
    model's positions leave after a one-token prompt where they are fewer (a 512-position model refused to start
    without the flag). cfg: the checkpoint's RuntimeConfig."""
    if not given:
        return min(max_output_len, cfg.max_positions - 1)
    check_max_output_len(cfg, max_output_len)
    return max_output_len


def check_max_output_len(cfg, max_output_len: int) -> None:
    """cfg: the checkpoint's RuntimeConfig."""
    if max_output_len >= cfg.max_positions:
        raise ConfigError(f"--max-output-len {max_output_len} leaves no room for a prompt in the model's "
                          f"{cfg.max_positions} positions: pass a smaller one")


def check_context(cfg, prompts: list[list[int]], max_tokens: int | None, chat: bool) -> None:
    """Refuse (400) a prompt that with max_tokens (None: left out, at least one) runs past the model's positions, in
    vLLM's words: what the client sent and what to change. cfg: the checkpoint's RuntimeConfig."""
    longest, limit = max(map(len, prompts)), cfg.max_positions
    what = "messages" if chat else "prompt" if len(prompts) == 1 else "longest prompt"
    head = f"This model's maximum context length is {limit} tokens. However, "
    refused = {"param": PROMPT[chat], "code": "context_length_exceeded"}  # OpenAI's, as clients read it
    if max_tokens is None and longest >= limit:
        raise RequestError(f"{head}your {what} is {longest} tokens, which leaves no room for the completion. "
                           f"Please reduce the length of the {what}.", **refused)
    if max_tokens is not None and longest + max_tokens > limit:
        raise RequestError(f"{head}you requested {longest + max_tokens} tokens ({longest} in the {what}, "
                           f"{max_tokens} in the completion). Please reduce the length of the {what} or max_tokens.",
                           **refused)


class App:
    """Routes -> (HTTP status, JSON payload). Pure apart from the backend, so it is tested without sockets."""

    def __init__(self, backend: ReferenceBackend, model_name: str, max_output_len: int,
                 template_kwargs: dict | None = None, tool_parser: str | None = None,
                 reasoning_parser: str | None = None):
        """template_kwargs: the chat template's variables of every chat request (serve --chat-template-kwargs),
        a request's chat_template_kwargs overriding them key by key (vLLM's --default-chat-template-kwargs).
        tool_parser: serve --tool-parser, a name of serve_tools.TOOL_PARSERS (None: `tools` are refused).
        reasoning_parser: serve --reasoning-parser, a name of serve_reasoning.REASONING_PARSERS (None: a chat
        answer's thinking stays in its content)."""
        check_max_output_len(backend.config, max_output_len)
        self.backend, self.model_name, self.max_output_len = backend, model_name, max_output_len
        self.tool_parser, self.reasoning_parser = tool_parser, reasoning_parser
        # what of tool calling the chat template drops from a sample (SmolLM2's: tools and calls): each request
        # carrying them is rendered once more, and refused where its prompt drops them too (refuse_dropped_tools)
        self.dropped = template_drops(backend.tokenizer) if tool_parser else ()
        self.template_kwargs = dict(template_kwargs or {})
        self.created = int(time.time())

    def get(self, path: str, head: bool = False) -> tuple[int, dict | list]:
        """head: HEAD's answer, GET's (its headers go out) with nothing taken (/metrics keeps its steps)."""
        if path == "/health":  # 503 once shutting down, as completions: a load balancer stops sending requests here
            if self.backend.closing:
                return HTTPStatus.SERVICE_UNAVAILABLE, error(SHUTTING_DOWN, "service_unavailable")
            return HTTPStatus.OK, {"status": "ok"}
        if path == "/version":
            return HTTPStatus.OK, {"version": __version__}
        if path == "/metrics":
            return HTTPStatus.OK, self.backend.take_iterations(keep=head)
        model = {"id": self.model_name, "object": "model", "created": self.created, "owned_by": "redrafter-trt"}
        if path == "/v1/models":
            return HTTPStatus.OK, {"object": "list", "data": [model]}
        asked = path.removeprefix("/v1/models/")
        if asked != path:  # the openai client's models.retrieve
            if asked == self.model_name:
                return HTTPStatus.OK, model
            return HTTPStatus.NOT_FOUND, error(f"no model {asked!r} here: this server serves {self.model_name!r}",
                                               "invalid_request_error", "model_not_found")
        if path in POST_ROUTES:
            return HTTPStatus.METHOD_NOT_ALLOWED, error(f"{path} takes POST", "invalid_request_error")
        return no_route("GET", path)

    def post(self, path: str, body, events: Callable[[dict | None], None] | None = None,
             alive: Callable[[], bool] | None = None) -> tuple[int, dict] | None:
        """The answer, or None when it went out as server-sent events through `events` (a streaming request; None
        opens the stream once the request is accepted). alive: False once a non-streaming client has left (its
        rows are then dropped at their next step)."""
        if path not in POST_ROUTES:
            if is_route(path):
                return HTTPStatus.METHOD_NOT_ALLOWED, error(f"{path} takes GET", "invalid_request_error")
            return no_route("POST", path)
        try:
            return self._complete(path == "/v1/chat/completions", body, events, alive)
        except Unavailable as e:  # shutting down: clients retry a 503, not a 400
            return HTTPStatus.SERVICE_UNAVAILABLE, error(str(e), "service_unavailable")
        except ModelNotFound as e:
            return HTTPStatus.NOT_FOUND, error(str(e), "invalid_request_error", "model_not_found")
        except (RequestError, ConfigError) as e:
            return HTTPStatus.BAD_REQUEST, error(str(e), "invalid_request_error", getattr(e, "code", None),
                                                 getattr(e, "param", None))

    def _complete(self, chat: bool, body, events, alive) -> tuple[int, dict] | None:
        req = parse(body, chat, self.model_name, self.max_output_len, self.tool_parser)
        kwargs = self.template_kwargs | req.template_kwargs
        refuse_dropped_tools(req, self.dropped, lambda messages, tools: chat_prompt(self.backend.tokenizer, messages,
                                                                                    kwargs, tools))
        if req.stream and events is None:
            raise RequestError('"stream": true needs an HTTP connection to stream on')
        backend, n = self.backend, req.n
        temperature = backend.temperature(req.temperature)  # the checkpoint's rule: a greedy one answers at 0
        refuse_unsupported(body, chat, sampling=temperature > 0, stops=frozenset(() if req.ignore_eos else backend.eos),
                           tools=self.tool_parser is not None)
        prompts = ([backend.encode_chat(req.prompts[0], kwargs, req.tools)]
                   if chat else [backend.encode(p) if isinstance(p, str) else p for p in req.prompts])
        copies = n if temperature == 0 else 1  # greedy: n equal answers, decoded once
        rows = [p for p in prompts for _ in range(n // copies)]  # answer i is prompt i // n's, decoded row i // copies
        check_context(backend.config, prompts, req.max_tokens, chat)
        if req.max_tokens is None:  # as many as fit, up to --max-output-len
            room = backend.config.max_positions - max(map(len, prompts))
            req = dataclasses.replace(req, max_tokens=min(self.max_output_len, room))
        backend.check(rows, req.max_tokens)  # before anything is echoed
        echoes = self._echoes(req, prompts)
        head = {"id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}", "created": int(time.time()),
                "model": self.model_name}
        kind = "chat.completion" if chat else "text_completion"
        chunk_kind = kind + (".chunk" if chat else "")

        def lps(values: list) -> dict | None:
            return None if req.logprobs is None else logprobs_json(backend.tokenizer, values, chat)

        def after_echo(i: int, values: list) -> list:
            """Answer i's token logprobs with their offsets counted from the start of its echoed text."""
            return [dataclasses.replace(v, offset=v.offset + len(echoes[i // n].text)) for v in values]

        def usage_of(prompt_tokens: int, made: int) -> dict:
            return {"prompt_tokens": prompt_tokens, "completion_tokens": made, "total_tokens": prompt_tokens + made}

        held = [[] for _ in range(len(prompts) * n)]  # per answer: logprobs of tokens whose text never went out

        def chunk(i: int, delta: str, values: list, role: bool = False, made: int = 0, reasoning: str = "",
                  call: dict | None = None) -> None:
            """reasoning: the answer's thinking (`delta.reasoning_content`, without a content when delta is empty).
            call: a tool call delta (serve_tools: its index among the answer's calls, with its id and name or with a
            piece of its arguments): the chunk holds it alone (delta and reasoning are not sent). Logprobs alone
            (the tokens of a stop string, of a character max_tokens cut, without text) are held for the answer's
            next chunk or its last, as vLLM sends a last step's tokens with its finish_reason: no chunk of no text."""
            if not (delta or reasoning or role or call):
                held[i] += values
                return
            values, held[i] = held[i] + values, []
            if call is not None:
                part = {"delta": {"tool_calls": [call]}}
            elif not chat:
                part = {"text": delta}
            elif reasoning:
                part = {"delta": ({"role": "assistant"} if role else {}) | {"reasoning_content": reasoning} | (
                    {"content": delta} if delta else {})}
            else:
                part = {"delta": {"role": "assistant", "content": delta} if role else {"content": delta}}
            # as OpenAI: with include_usage every chunk has a usage, null but the last (continuous: so far)
            usage = ({"usage": usage_of(len(prompts[i // n]), made)} if req.continuous_usage else
                     {"usage": None} if req.include_usage else {})
            events(head | {"object": chunk_kind,
                           "choices": [{"index": i, **part, "logprobs": lps(values) if values else None,
                                        "finish_reason": None}]} | usage)
        if req.stream:
            if backend.closing:  # before the stream opens: a 503 the client can retry
                raise Unavailable(SHUTTING_DOWN)
            events(None)  # the headers go out now: a queued request's client sees it accepted
            for i in range(len(prompts) * n):
                if chat:  # as OpenAI: the first chunk names the role
                    chunk(i, "", [], role=True)
                if echoes[i // n].text or echoes[i // n].values:
                    chunk(i, echoes[i // n].text, echoes[i // n].values)
        parsers = [TOOL_PARSERS[req.tool_parser]() for _ in range(len(prompts) * n)] if req.tool_parser else None
        for i, p in enumerate(parsers or ()):  # the echo went out: content after calls is joined to it
            p.sent = bool(echoes[i // n].text)
        start = self._thinking_start(prompts[0]) if chat else None
        thinkers = [Thinking(start) for _ in range(len(prompts) * n)] if start else None  # read before the tools

        def tool_chunks(i: int, content: str, calls: list[dict], made: int) -> None:
            """Answer i's content and its tool call deltas (those the request takes), each in a chunk of its own."""
            if content:
                chunk(i, content, [], made=made)
            for call in kept_calls(calls, req.parallel_tool_calls):
                chunk(i, "", [], made=made, call=call)

        def split(i: int, reasoning: str, text: str, values: list, made: int) -> None:
            """Answer i's next reasoning and text: its tool calls parsed out of the text, after the reasoning."""
            if parsers:
                if reasoning:
                    chunk(i, "", [], made=made, reasoning=reasoning)
                tool_chunks(i, *parsers[i].add(text), made)
            elif reasoning or text or values:
                chunk(i, text, values, made=made, reasoning=reasoning)

        def parsed(r: int, delta: str, values: list, made: int) -> None:
            for i in range(r * copies, (r + 1) * copies):
                split(i, *(thinkers[i].add(delta) if thinkers else ("", delta)), after_echo(i, values), made)

        def plain(r: int, delta: str, values: list, made: int) -> None:  # no parser: each delta goes out as it is
            for i in range(r * copies, (r + 1) * copies):
                chunk(i, delta, after_echo(i, values), made=made)

        on_delta = parsed if parsers or thinkers else plain

        def still_there(*_) -> None:  # a non-streaming client that left frees its rows too
            if alive is not None and not alive():
                raise ClientGone

        decoded = backend.complete(rows, req.max_tokens, req.temperature,
                                   answer_seeds(req.seed, len(prompts), n // copies), req.stop,
                                   on_delta if req.stream else still_there, req.logprobs, req.ignore_eos,
                                   list_eos=not chat, alive=alive) if req.max_tokens else (
            [Choice([], "", 0, "length", []) for _ in rows])  # echo only: the prompt scored
        choices = [c for c in decoded for _ in range(copies)]
        made = sum(len(c.ids) for c in choices)
        # the steps run, and the tokens they made per step: a greedy answer copied n times was decoded once
        steps = sum(c.steps for c in decoded)
        prompt_tokens = sum(map(len, prompts))
        usage = usage_of(prompt_tokens, made)
        per_step = (round(sum(len(c.ids) for c in decoded) / steps, 4) if steps else
                    None)  # None: nothing decoded (an echo scored alone)
        tail = {"usage": usage, "redrafter": {"steps": steps, "tokens_per_step": per_step}}
        if req.stream:
            for i, c in enumerate(choices if thinkers else ()):  # what the parsers held back, reasoning first
                split(i, *thinkers[i].finish(), [], len(c.ids))
            for i, c in enumerate(choices if parsers else ()):
                tool_chunks(i, *parsers[i].finish(), len(c.ids))
            if parsers:
                choices = [dataclasses.replace(c, finish_reason=finish_reason(c.finish_reason, p.calls))
                           for c, p in zip(choices, parsers)]
            empty = {"delta": {}} if chat else {"text": ""}
            ends = [{"index": i, **empty, "logprobs": lps(held[i]) if held[i] else None,
                     "finish_reason": c.finish_reason} for i, c in enumerate(choices)]
            if req.continuous_usage:  # as trtllm-serve: each answer's finish in a chunk of its own, with its usage
                for end, c in zip(ends, choices):
                    events(head | {"object": chunk_kind, "choices": [end],
                                   "usage": usage_of(len(prompts[end["index"] // n]), len(c.ids))})
                ends = []
            elif req.include_usage:  # as OpenAI: the usage only in a last chunk without choices (null before it)
                events(head | {"object": chunk_kind, "choices": ends, "usage": None})
                ends = []
            # usage only when asked for, as OpenAI, vLLM and trtllm-serve: without include_usage no chunk has one
            events(head | {"object": chunk_kind, "choices": ends} | (tail if req.include_usage else
                                                                      {"redrafter": tail["redrafter"]}))
            return None
        return HTTPStatus.OK, head | {"object": kind, "choices": [
            ({"index": i, **self._message(echoes[i // n].text, c, req, start)} if chat else
             {"index": i, "text": echoes[i // n].text + c.text, "finish_reason": c.finish_reason})
            | {"logprobs": lps(echoes[i // n].values + after_echo(i, c.logprobs or []))}
            for i, c in enumerate(choices)]} | tail

    def _thinking_start(self, prompt: list[int]) -> str | None:
        """Where a chat answer to `prompt` starts with --reasoning-parser (serve_reasoning.Thinking): as the
        prompt's end decides (`opened_by`), else as the parser's format; None without one."""
        if self.reasoning_parser is None:
            return None
        tail = self.backend.tokenizer.decode(prompt[-PROMPT_TAIL:], skip_special_tokens=False)
        return opened_by(tail) or REASONING_PARSERS[self.reasoning_parser]

    @staticmethod
    def _message(echo: str, choice: Choice, req: Request, start: str | None) -> dict:
        """A chat answer's message and finish_reason: its thinking split out when the server has a reasoning
        parser starting there (`serve_reasoning`: reasoning_content, null when the answer did not think), then its
        tool calls parsed out of the rest when asked (`serve_tools`; those the request takes, `kept_calls`), the
        finish_reason then "tool_calls" where it was "stop" (`finish_reason`)."""
        reasoning, text = parse_reasoning(start, choice.text) if start else (None, choice.text)
        thought = {"reasoning_content": reasoning} if start else {}
        if req.tool_parser is None:
            return {"message": {"role": "assistant", "content": echo + text} | thought,
                    "finish_reason": choice.finish_reason}
        content, calls = parse_answer(req.tool_parser, text, sent=bool(echo))
        calls = kept_calls(calls, req.parallel_tool_calls)
        content = None if content is None and not echo else echo + (content or "")
        return {"message": {"role": "assistant", "content": content} | thought | ({"tool_calls": calls} if calls
                                                                                   else {}),
                "finish_reason": finish_reason(choice.finish_reason, calls)}

    def _echoes(self, req: Request, prompts: list[list[int]]) -> list[Echo]:
        """What each prompt's answers start with: nothing; with echo a completion's prompt as sent (scored when
        logprobs are asked) or, as trtllm-serve and vLLM, a chat's last message when it is the assistant's."""
        if not req.echo:
            return [Echo("", [])] * len(prompts)
        if req.chat:  # as trtllm-serve and vLLM: a last message of the answering role comes back, a new turn after it
            last = req.prompts[0][-1]
            return [Echo(last["content"] if last["role"] == "assistant" else "", [])]
        scores = self.backend.score(prompts, req.logprobs) if req.logprobs is not None else None
        return [echo_of(self.backend.tokenizer, ids, sent if isinstance(sent, str) else None,
                        None if scores is None else scores[i]) for i, (ids, sent) in enumerate(zip(prompts, req.prompts))]


POST_ROUTES = ("/v1/completions", "/v1/chat/completions")
GET_ROUTES = ("/health", "/version", "/metrics", "/v1/models")  # and /v1/models/NAME


def no_route(method: str, path: str) -> tuple[int, dict]:
    """The 404 of a path no route is at, whatever the method, in OpenAI's words (its "Invalid URL (POST /v1/foo)",
    type invalid_request_error), with the routes there are."""
    return HTTPStatus.NOT_FOUND, error(f"Invalid URL ({method} {path}): the routes are GET {', '.join(GET_ROUTES)} "
                                       f"and POST {', '.join(POST_ROUTES)}", "invalid_request_error")


def is_route(path: str) -> bool:
    """A path this server answers at (a method it does not take there is a 405; elsewhere: 404)."""
    return path in POST_ROUTES or path in GET_ROUTES or path.startswith("/v1/models/")


PROMPT_TAIL = 16  # the prompt tokens whose text may hold the <think> or </think> a chat template ends it with
