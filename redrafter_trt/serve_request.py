"""The reference server's request bodies: OpenAI's (and trtllm-serve's) fields, checked, into a `Request`.

    request = parse(body, chat=False, model_name="smol", max_output_len=256)    # RequestError: a 400 and the fix
    refuse_unsupported(body, chat=False, sampling=True)             # the same for fields it would ignore

A field this server does not implement is refused when it would change the answer (`UNSUPPORTED`), never ignored:
a client asking for top_p 0.9 or a presence penalty gets a 400 naming it, not an answer made without it. Fields
that change nothing here (`IGNORED`: `user`, `metadata`, ...) are accepted and ignored; any other field is refused
as unknown, as trtllm-serve's request models (extra="forbid") refuse it: a misspelt "temprature" or an OpenAI field
this server has never heard of is not silently dropped.
"""

from __future__ import annotations

import json
import secrets
import sys
from dataclasses import dataclass
from typing import Callable

from .message_fields import template_tool_calls, text_of, thinking_of, two_thoughts, unwritten_thought
from .serve_backend import MAX_PROMPTS
from .serve_errors import RequestError
from .serve_lax import LAX
from .serve_tools import TEMPLATE_FIX
from .tokens import template_kwargs_refusal


class ModelNotFound(RequestError):
    """A "model" other than the one served: 404 model_not_found, as OpenAI."""


def _field(body: dict, name: str, kind, default, check=lambda v: True, need: str = ""):
    """body[name] checked (None or absent: default); kind int, float or bool reads what pydantic's lax mode reads as
    one (`serve_lax`), as vLLM's and trtllm-serve's request models do."""
    value = body.get(name)
    if value is None:
        return default
    if kind in LAX:
        value = LAX[kind](value)
    if not isinstance(value, kind) or not check(value):
        raise RequestError(f'"{name}" must be {need}', param=name)
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
    raise RequestError('"prompt" must be a string, a list of strings, a list of token ids or a list of those',
                       param="prompt")


def _at(i: int, key: str | None = None) -> str:
    """The param of message i's fault (its field `key`), as OpenAI's errors name it: 'messages.[2].role'."""
    return f"messages.[{i}]" + (f".{key}" if key else "")


ROLES = ("system", "user", "assistant")
TOOL_ROLES = ("tool",)  # with serve --tool-parser: a tool's result, after the assistant's call
AS_ROLE = {"developer": "system"}  # newer OpenAI clients send the system prompt as "developer"
TOOLS_NEED = "start the server with --tool-parser qwen3 (Qwen2.5's and Qwen3's tool calls)"


def _messages(messages, tools: bool = False) -> list[dict]:
    """The chat messages, each checked on its own: a long history's one bad message is named by its index. tools:
    the server parses tool calls (--tool-parser): a "tool" message and an assistant's `tool_calls` are taken.
    OpenAI's `name` (who speaks; null: none) is kept for the chat template, as vLLM keeps it (trtllm-serve's parser
    drops it): most templates never read it, and those that do render it rather than lose it. An assistant's
    earlier thinking is kept too (`_reasoning`)."""
    if not isinstance(messages, list) or not messages:
        raise RequestError('"messages" must be a non-empty list of {"role": "system", "user" or "assistant", '
                           '"content": str or text parts}', param="messages")
    roles = ROLES + TOOL_ROLES if tools else ROLES
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise RequestError(f'"messages"[{i}] must be an object {{"role": ..., "content": ...}}', param=_at(i))
        role = AS_ROLE.get(m.get("role"), m.get("role")) if isinstance(m.get("role"), str) else None
        if not tools and (role in TOOL_ROLES or m.get("tool_calls")):
            raise RequestError(f'"messages"[{i}]: tool calls and results need tool calling: {TOOLS_NEED}',
                               param=_at(i, "role" if role in TOOL_ROLES else "tool_calls"))
        if role not in roles:
            raise RequestError(f'"messages"[{i}]: role {json.dumps(m.get("role"))} is not one of {", ".join(roles)} '
                               f'({", ".join(AS_ROLE)})', param=_at(i, "role"))
        calls = _tool_calls(m.get("tool_calls"), i) if role == "assistant" else []
        thought = _reasoning(m, i) if role == "assistant" else {}
        # null beside calls or thinking: an answer that wrote none (vLLM's answer cut inside its thinking)
        content = "" if (calls or thought) and m.get("content") is None else text_of(m.get("content"))
        if not isinstance(content, str):
            raise RequestError(f'"messages"[{i}]: "content" must be a string or a list of text parts '
                               '({"type": "text", "text": str})', param=_at(i, "content"))
        if not isinstance(m.get("name"), (str, type(None))):
            raise RequestError(f'"messages"[{i}]: "name" must be a string (who speaks), or left out',
                               param=_at(i, "name"))
        message = {"role": role, "content": content} | ({"name": m["name"]} if m.get("name") is not None else {})
        message |= thought
        if role == "tool":
            if not isinstance(m.get("tool_call_id"), str):
                raise RequestError(f'"messages"[{i}]: a "tool" message needs "tool_call_id", the id of the call it '
                                   'answers', param=_at(i, "tool_call_id"))
            message["tool_call_id"] = m["tool_call_id"]
        out.append(message | ({"tool_calls": calls} if calls else {}))
    return out


def _reasoning(m: dict, i: int) -> dict:
    """An assistant message's earlier thinking, as --reasoning-parser answered it (`reasoning_content`, or vLLM's
    newer `reasoning`, or gpt-oss's `thinking`): given to the chat template under every name (`thinking_of`). Qwen3's
    template renders the thinking of the turns since the last user message (a tool-calling loop) from
    `message.reasoning_content`; dropped, they were rendered without it. Two different thoughts under two names are
    refused, naming the second, as train refuses such a record."""
    if key := unwritten_thought(m):
        raise RequestError(f'"messages"[{i}]: "{key}" must be a string (the answer\'s thinking), or left out',
                           param=_at(i, key))
    if keys := two_thoughts(m):
        raise RequestError(f'"messages"[{i}]: "{keys[0]}" and "{keys[1]}" hold two different thoughts: send the '
                           f'answer\'s thinking under one of them', param=_at(i, keys[1]))
    return thinking_of(m)  # train reads a data set's so


def _tool_calls(calls, i: int) -> list[dict]:
    """An assistant message's `tool_calls` as chat templates read them (`message_fields.template_tool_calls`)."""
    try:
        return template_tool_calls(calls)
    except ValueError:
        raise RequestError(f'"messages"[{i}]: "tool_calls" must be a list of {{"id": str, "type": "function", '
                           '"function": {"name": str, "arguments": JSON object text}}',
                           param=_at(i, "tool_calls")) from None


TOOL_SHAPE = '{"type": "function", "function": {"name": str, "description": str, "parameters": JSON schema}}'
TOOL_FIELDS = (("name", str, "a string"), ("description", str, "a string"), ("parameters", dict, "a JSON schema "
               "object"))  # OpenAI's FunctionDefinition: the name required, the others optional


def _tools(tools) -> tuple[dict, ...]:
    """A request's `tools`: OpenAI's function tools, given to the chat template as sent."""
    if tools is None:
        return ()
    if not isinstance(tools, list):
        raise RequestError(f'"tools" must be a list of {TOOL_SHAPE}', param="tools")
    for k, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or tool.get("type") != "function":
            raise RequestError(f'"tools"[{k}] must be {TOOL_SHAPE}', param="tools")
        for key, kind, what in TOOL_FIELDS:
            value = function.get(key)
            if (key == "name" or value is not None) and not isinstance(value, kind):
                raise RequestError(f'"tools"[{k}]: "function"."{key}" must be {what}', param="tools")
    return tuple(tools)


def _logprobs_asked(body: dict, chat: bool) -> int | None:
    """How many most likely tokens to list per token (0: the token's own only), or None when no logprobs are asked:
    chat `"logprobs": true` with `"top_logprobs": k`, completions `"logprobs": k`."""
    from .runtime.decode import MAX_TOP_LOGPROBS  # torch is loaded by then: the backend holds the model

    limit = f"an integer in 0..{MAX_TOP_LOGPROBS}"
    if not chat:
        _field(body, "top_logprobs", int, None, lambda v: False, 'left out: completions take "logprobs": k')
        return _field(body, "logprobs", int, None, lambda v: 0 <= v <= MAX_TOP_LOGPROBS, limit)
    wanted = _field(body, "logprobs", bool, False, need="true or false")
    top = _field(body, "top_logprobs", int, None, lambda v: 0 <= v <= MAX_TOP_LOGPROBS, limit)
    if top is not None and not wanted:
        raise RequestError('"top_logprobs" needs "logprobs": true', param="top_logprobs")
    return (top or 0) if wanted else None


# Stop strings in one request, and characters in each (OpenAI takes 4 strings; vLLM and trtllm-serve any number):
# every decoding step compares the end of each answer with the start of each stop string (`serve_text`), in the
# scheduler thread that every request waits on, so what one request may ask is bounded. Code-generation and
# lm-evaluation-harness tasks send up to about 10 short ones.
MAX_STOP, MAX_STOP_CHARS = 32, 256

STREAM_OPTIONS = {"include_usage", "continuous_usage_stats", "include_obfuscation"}  # the last pads chunks: moot here


@dataclass
class Request:
    chat: bool
    prompts: list            # completions: str or [int] each; chat: one list of {"role", "content"} messages
    n: int                   # answers per prompt (choice index = prompt index * n + answer)
    echo: bool               # the prompt (chat: the last message) comes back before the answer
    logprobs: int | None     # None: none; k: each token's and the k most likely (completions with echo: the prompt's too)
    max_tokens: int | None   # 0 only with echo: the prompt is scored, nothing generated; None: as many as fit,
                             # up to the server's --max-output-len
    temperature: float | None
    seed: int
    stop: list[str]
    stream: bool
    include_usage: bool      # stream_options.include_usage: a last chunk with the usage and no choices
    ignore_eos: bool         # EOS ends nothing: the answer runs to max_tokens (or a stop string), as TensorRT-LLM's
    continuous_usage: bool   # and continuous_usage_stats (ignored without include_usage, as trtllm-serve and vLLM
                             # do): every chunk carries its answer's usage so far
    template_kwargs: dict    # chat: chat_template_kwargs, the chat template's variables for this request (Qwen3's
                             # enable_thinking), as vLLM and trtllm-serve give them to apply_chat_template
    tools: tuple[dict, ...] = ()   # chat with --tool-parser: the function tools, given to the chat template
    tool_parser: str | None = None  # the answers' tool calls are parsed (serve_tools): tools given, tool_choice
                                    # not "none" (then the template still gets them, as vLLM's)
    parallel_tool_calls: bool = True  # with tool_parser: false keeps each answer's first call alone
                                      # (`serve_tools.kept_calls`)


def parse(body, chat: bool, model_name: str, max_output_len: int, tool_parser: str | None = None) -> Request:
    """tool_parser: the server's --tool-parser (None: `tools` are refused, by refuse_unsupported)."""
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    stream = _field(body, "stream", bool, False, need="true or false")
    # {} (as null) passes without stream: trtllm-serve's and vLLM's validators refuse only truthy stream_options there
    options = _field(body, "stream_options", dict, {}, lambda v: (stream or not v) and set(v) <= STREAM_OPTIONS and all(
                     x is None or LAX[bool](x) is not None for x in v.values()),
                     '{"include_usage": true or false, "continuous_usage_stats": true or false}, with "stream": true')
    # "true", 1: true (pydantic's lax mode); null: unset, as vLLM's and trtllm-serve's StreamOptions (bool | None)
    options = {key: LAX[bool](value) for key, value in options.items() if value is not None}
    if _field(body, "model", str, model_name, need=f'"{model_name}" (GET /v1/models)') != model_name:
        raise ModelNotFound(f'"model" {body["model"]!r} is not served here: send "{model_name}" (GET /v1/models)')
    _field(body, "best_of", int, 1, lambda v: v == 1, '1: send "n" for more answers')
    _field(body, "suffix", str, None, lambda v: False, "left out: no insertion here")
    echo = _field(body, "echo", bool, False, need="true or false")
    if body.get(PROMPT[chat]) is None and body.get(PROMPT[not chat]) is not None:  # a client at the wrong route
        raise RequestError(f'"{PROMPT[not chat]}" is read by POST /v1/{"" if chat else "chat/"}completions: send this '
                           f'body there, or "{PROMPT[chat]}" here', param=PROMPT[chat])  # OpenAI's: the one missing
    tooled = chat and tool_parser is not None
    prompts = [_messages(body.get("messages"), tooled)] if chat else _prompts(body.get("prompt"))
    if len(prompts) > MAX_PROMPTS:
        raise RequestError(f"{len(prompts)} prompts in one request: send at most {MAX_PROMPTS}", param="prompt")
    n = _field(body, "n", int, 1, lambda v: 1 <= v <= MAX_PROMPTS // len(prompts),
               f"an integer in 1..{MAX_PROMPTS // len(prompts)} ({MAX_PROMPTS} answers in one request)")
    low = 0 if echo and not chat else 1
    zero = "" if low == 0 or chat else '; 0 only with "echo": true'  # chat's echo scores nothing
    limit = f"an integer in {low}..{max_output_len} (the server's --max-output-len{zero})"
    max_tokens, newer = (_field(body, key, int, None, lambda v: low <= v <= max_output_len, limit)
                         for key in ("max_tokens", "max_completion_tokens"))  # the second: OpenAI's chat name
    if None not in (max_tokens, newer) and max_tokens != newer:  # vLLM takes the second; trtllm-serve refuses the pair
        raise RequestError(f'"max_tokens" {max_tokens} and "max_completion_tokens" {newer} disagree: send one of them',
                           param="max_completion_tokens")
    stop = _field(body, "stop", (str, list), [], lambda v: isinstance(v, str) or all(isinstance(s, str) for s in v),
                  "a string or a list of strings")
    stop = [s for s in ([stop] if isinstance(stop, str) else stop) if s]
    if len(stop) > MAX_STOP or max(map(len, stop), default=0) > MAX_STOP_CHARS:
        raise RequestError(f'"stop" holds {len(stop)} strings of up to {max(map(len, stop))} characters: send at '
                           f'most {MAX_STOP}, each at most {MAX_STOP_CHARS} characters long', param="stop")
    seed = _field(body, "seed", int, None, lambda v: -2 ** 63 <= v < 2 ** 63, "a 64-bit integer")
    for name, (kind, check, need) in FILTER_VALUES.items():  # moot on a greedy answer, but not malformed
        _field(body, name, kind, None, check, need)
    template_kwargs = _field(body, "chat_template_kwargs", dict, {}, need='an object of the chat template\'s '
                             'variables, e.g. {"enable_thinking": false}') if chat else {}  # completions: unknown
    if why := template_kwargs_refusal(template_kwargs):
        raise RequestError(f'"chat_template_kwargs": {why}', param="chat_template_kwargs")
    tools = _tools(body.get("tools")) if tooled else ()
    parsed = tools and body.get("tool_choice") != "none"  # another tool_choice: refuse_unsupported's
    parallel = _field(body, "parallel_tool_calls", bool, True, need="true or false") if tooled else True
    logprobs = _logprobs_asked(body, chat)
    if parsed and logprobs is not None:
        raise RequestError('"logprobs" with "tools": the tokens of a parsed tool call have no place in the '
                           'answer\'s logprobs here: leave out one of them, or send "tool_choice": "none"',
                           param="logprobs")
    return Request(
        chat=chat, prompts=prompts, n=n, echo=echo, logprobs=logprobs,
        max_tokens=next((v for v in (max_tokens, newer) if v is not None), None),
        # finite: NaN and the infinities ("nan", 1e400) are read as floats, and refused here
        temperature=_field(body, "temperature", float, None, lambda v: 0 <= v <= sys.float_info.max,
                           "a finite number >= 0"),
        seed=secrets.randbits(63) if seed is None else seed % 2 ** 63,  # as OpenAI: a fresh sample unless sent
        stop=stop,
        stream=stream, include_usage=options.get("include_usage", False),
        ignore_eos=_field(body, "ignore_eos", bool, False, need="true or false"),
        continuous_usage=options.get("include_usage", False) and options.get("continuous_usage_stats", False),
        template_kwargs=template_kwargs, tools=tools, tool_parser=tool_parser if parsed else None,
        parallel_tool_calls=parallel)


def refuse_dropped_tools(req: Request, drops: tuple[str, ...], render: Callable[[list[dict], tuple[dict, ...]], str]
                         ) -> None:
    """A chat request's tools, or an earlier tool call in its history, that the chat template drops from this
    request's prompt: refused, not sent to a model that never sees them (vLLM and trtllm-serve render them with the
    template as it is, silently; Ollama refuses tools to a model whose template has none). drops: what the template
    dropped from a sample conversation at start (`serve_tools.template_drops`); only those are looked for, in one
    render of the request with its own messages and template variables (a template may show tools only beside a
    system message or under a variable the request sets), each tool's name (and description) and each call's name
    replaced by a mark of its own (`_marked`): one whose mark is not in the text is dropped, as at start
    `tokens.writes_tool_calls` looks for its call's name (2 renders for the request, whatever its calls: it was
    rendered again without each). render(messages, tools): the request's prompt text, with its template variables; a
    RequestError where the template refuses it, raised here (the template's reason: a render that failed was a
    difference, and the request accepted)."""
    messages = req.prompts[0] if req.chat else []
    tools = req.tools if "tools" in drops else ()
    calls = [i for i, m in enumerate(messages) if m.get("tool_calls")] if "tool_calls" in drops else []
    if not (tools or calls):
        return
    mark = f"redrafter{secrets.token_hex(4)}_"  # drawn per request: no text sent foresees it
    marked = {i: {**messages[i], "tool_calls": [_marked(c, f"{mark}call_{i}_{j}_")
                                               for j, c in enumerate(messages[i]["tool_calls"])]} for i in calls}
    text = render([marked.get(i, m) for i, m in enumerate(messages)],
                  tuple(_marked(t, f"{mark}tool_{k}_") for k, t in enumerate(tools)) or req.tools)
    if dropped := [k for k in range(len(tools)) if f"{mark}tool_{k}_" not in text]:
        name = json.dumps(tools[dropped[0]]["function"]["name"])
        what = ("no tools here, so the model would never see them: leave them out" if len(dropped) == len(tools) else
                f"the tool {name} not here, so the model would never see it: leave it out")
        raise RequestError(f'"tools": this model\'s chat template renders {what}, or {TEMPLATE_FIX}', param="tools")
    for i in calls:
        if any(f"{mark}call_{i}_{j}_" not in text for j in range(len(messages[i]["tool_calls"]))):
            raise RequestError(f'"messages"[{i}]: this model\'s chat template writes no tool calls here, so the call '
                               f'would render as an empty turn: send it as the message\'s text, or {TEMPLATE_FIX}',
                               param=_at(i, "tool_calls"))


def _marked(tool: dict, mark: str) -> dict:
    """A tool or a tool call (`{"function": {"name", ...}}`) with its function's name, and its description where it
    has one, replaced by `mark`."""
    function = tool["function"]
    return {**tool, "function": {**function, "name": mark} | ({"description": mark} if function.get("description")
                                                                 else {})}


def answer_seeds(seed: int, prompts: int, answers: int) -> list[int]:
    """Each decoded row's seed, prompt by prompt (`answers` rows each): answer k of every prompt samples from its own
    generator seeded seed + k (mod 2**63), as vLLM seeds an n > 1 request's k-th child (`ParentRequest`) and
    TensorRT-LLM's executor a request's k-th sequence, both sending each prompt of a list as a request of its own:
    a prompt's answer is the one it gets alone, whatever the prompts beside it."""
    return [(seed + k) % 2 ** 63 for _ in range(prompts) for k in range(answers)]


# Fields that change the answer and that this server does not implement -> the values that change nothing (none:
# any value is refused). OpenAI's, and vLLM's / trtllm-serve's extensions that clients send.
UNSUPPORTED = {
    "presence_penalty": (0,), "frequency_penalty": (0,), "repetition_penalty": (1,), "length_penalty": (1,),
    "logit_bias": ({},), "min_tokens": (0,), "use_beam_search": (False,), "tools": ([],),
    "response_format": ({"type": "text"},), "stop_token_ids": ([],), "bad_words": ([],),
    "skip_special_tokens": (True,), "include_stop_str_in_output": (False,), "truncate_prompt_tokens": (),
    "prompt_logprobs": (), "guided_json": (), "guided_regex": (), "guided_choice": (), "guided_grammar": (),
    "logits_processors": (), "functions": ([],), "function_call": ("none", "auto"), "tool_choice": ("none", "auto"),
    "modalities": (["text"],), "audio": (), "structured_outputs": (), "allowed_token_ids": (), "documents": ([],),
    "spaces_between_special_tokens": (True,),
}
READ = {  # the fields `parse` reads of both endpoints (READ_BY: of one)
    "model", "stream", "stream_options", "best_of", "suffix", "echo", "n", "max_tokens", "max_completion_tokens",
    "stop", "seed", "temperature", "logprobs", "top_logprobs", "ignore_eos",
}
# OpenAI's and the engines' fields that change no answer here: accepted and ignored (parallel_tool_calls: but in
# chat with --tool-parser, where `parse` reads it; reasoning_effort: read only by reasoning models' chat templates,
# none of the Llama, Mistral, Qwen2 or Qwen3 ones served here; verbosity: a hint OpenAI's GPT-5 models alone follow;
# prediction: a hint for speed, never the output; priority: the order requests are served in)
IGNORED = {"user", "metadata", "store", "service_tier", "parallel_tool_calls", "prediction", "reasoning_effort",
           "verbosity", "request_id", "cache_salt", "priority", "prompt_cache_key", "safety_identifier"}
FIXES = {False: {  # endpoint (chat: True) -> what to do instead of leaving an UNSUPPORTED field out
    "prompt_logprobs": 'send "echo": true with "logprobs": k for the prompt\'s logprobs',
}}
FIXES[True] = FIXES[False] | {"tools": TOOLS_NEED + ", or leave it out"}  # completions leave tools out
PROMPT = {False: "prompt", True: "messages"}
READ_BY = {False: {PROMPT[False]}, True: {PROMPT[True], "chat_template_kwargs"}}
ENDPOINT = {  # how this server builds each endpoint's prompt (a chat answer is a new assistant turn, as vLLM's
    # default: continue_final_message, which vLLM asks with add_generation_prompt false, is named first)
    False: {"add_special_tokens": (True,)},
    True: {"add_special_tokens": (False,), "continue_final_message": (False,), "add_generation_prompt": (True,),
           "chat_template": ()},
}
# Sampling filters: nothing to change on a greedy answer, refused when the checkpoint samples (it samples the
# whole softmax(logits / T), as its ReDrafter engine does).
SAMPLING_FILTERS = {"top_p": (1,), "top_k": (0, -1), "min_p": (0,)}
FILTER_VALUES = {  # what a sampling filter may be (vLLM's SamplingParams checks)
    "top_p": (float, lambda v: 0 < v <= 1, "a number in (0, 1]"),
    "top_k": (int, lambda v: v >= -1, "an integer >= -1 (-1 or 0: every token)"),
    "min_p": (float, lambda v: 0 <= v <= 1, "a number in [0, 1]"),
}
KINDS = {  # the numeric and bool fields above (vLLM's and trtllm-serve's kinds): compared as `parse` reads them
    # ("0", false: 0; "true", 1: true)
    "min_tokens": int, **{name: kind for name, (kind, _, _) in FILTER_VALUES.items()}, "presence_penalty": float,
    "frequency_penalty": float, "repetition_penalty": float, "length_penalty": float, "use_beam_search": bool,
    "skip_special_tokens": bool, "include_stop_str_in_output": bool, "spaces_between_special_tokens": bool,
    "add_special_tokens": bool, "continue_final_message": bool, "add_generation_prompt": bool,
}
KIND_NEEDS = {int: "an integer", float: "a number", bool: "true or false"}  # what a KINDS field that is none says


def _stops_already(value, stops: frozenset[int]) -> bool:
    """`stop_token_ids` naming only tokens every answer ends at anyway (the model's EOS ids, which `serve
    --engine-dir` tells clients to send, as trtllm-serve stops at the tokenizer's EOS alone): nothing changes."""
    return isinstance(value, list) and all(isinstance(t, int) and not isinstance(t, bool) and t in stops
                                           for t in value)


def refuse_unsupported(body: dict, chat: bool, sampling: bool, stops: frozenset[int] = frozenset(),
                       tools: bool = False) -> None:
    """stops: the tokens this request's answers end at (the model's EOS ids; none under ignore_eos). tools: the
    server parses tool calls (--tool-parser): chat's `tools` are `parse`'s."""
    known = READ | IGNORED | READ_BY[chat] | set(UNSUPPORTED) | set(ENDPOINT[chat]) | set(SAMPLING_FILTERS)
    unknown = [name for name, value in body.items() if name not in known and value is not None]
    if unknown:
        raise RequestError(f'"{unknown[0]}" is not a field of {"chat " if chat else ""}completions here: leave it out '
                           f'(fields this server reads: {", ".join(sorted(READ | READ_BY[chat]))})')
    table = UNSUPPORTED | ENDPOINT[chat] | (SAMPLING_FILTERS if sampling else {})
    if chat and tools:  # parse reads them
        del table["tools"]
    for name, neutral in table.items():
        value = body.get(name)
        if value is None or (name == "stop_token_ids" and _stops_already(value, stops)):
            continue
        sent = " or ".join(map(json.dumps, neutral))  # "none" or "auto"
        fix = FIXES[chat].get(name) or (f"leave it out (or send {sent})" if neutral else "leave it out")
        if name in KINDS and (value := LAX[KINDS[name]](value)) is None:  # "abc": malformed, as parse says
            raise RequestError(f'"{name}" must be {KIND_NEEDS[KINDS[name]]}, and any but {sent} is not implemented '
                               f'by this server: {fix}', param=name)
        if value not in neutral:  # KINDS read: bools in bool fields alone
            raise RequestError(f'"{name}" is not implemented by this server and would change the answer: {fix}',
                               param=name)
