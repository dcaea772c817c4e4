"""Tool calls in the reference server's chat answers (`serve --tool-parser NAME`, the name trtllm-serve's
--tool_parser gives the format): the answer's text split into its content and OpenAI `tool_calls`.

    calls = TOOL_PARSERS["qwen3"]()
    content, deltas = calls.add(text_delta)  # the content safe to send now, the tool call deltas this text made
    content, deltas = calls.finish()         # the answer ended: what was held back
    content, found = parse_answer("qwen3", whole_text)   # a whole answer: content (None when empty beside calls)

qwen3 is the Hermes format Qwen2.5's and Qwen3's chat templates ask for: each call a JSON object {"name": ...,
"arguments": {...}} between <tool_call> and </tool_call> (trtllm-serve's Qwen3ToolParser, vLLM's hermes; "parameters"
is read where "arguments" is missing, as trtllm-serve's; a last block the answer ended in before its </tool_call>, a
stop string "</tool_call>" or EOS, is read to the answer's end, as vLLM's). A call is streamed as OpenAI, vLLM and
trtllm-serve stream one: a delta with its index, id and name as soon as it is a call, then deltas with pieces of its
arguments as they are read, which add up to its arguments (JSON text as json.dumps writes it, as trtllm-serve's, whose
pieces escape non-ASCII; vLLM's pieces are the model's own text).
A stream cannot take back what it sent, so a block is a call once its name and the start of its arguments are read
(CallBlock), whatever follows: JSON that goes bad or is cut short after that leaves the call with the arguments read
until there (as OpenAI's call cut by the token limit; both servers' streams do the same, their whole answers keep
the text as content, vLLM, or drop the block, trtllm-serve); text in the block after a call's object is content.
A block that is no call by then (no such object, an empty name) stays in the content, the other blocks still calls:
there vLLM keeps the whole text as content and no call, and trtllm-serve keeps the good calls and drops the bad
block (README's Serve section lists where else trtllm-serve's parser reads otherwise). The text outside the calls is
the content, without the whitespace next to a call (the newlines the template puts between calls) but the one joining
its parts (see HermesCalls), the text after a call included (both servers' whole answers keep only the text before
the first call).
Tool names are not checked against the request's tools (neither server refuses one either). A whole answer is parsed
by the same steps as a stream, so a streamed answer's content and calls add up to the whole one's.
"""

from __future__ import annotations

import os
import uuid

from .serve_json import BadJson, JsonTokens
from .serve_text import begins


# transformers reads a folder's chat_template.jinja before its tokenizer_config.json's chat_template
TEMPLATE_FIX = ("serve a base whose chat template writes tools (Qwen2.5's, Qwen3's), or a --tokenizer-dir whose chat "
                "template does (its chat_template.jinja, else its tokenizer_config.json's chat_template)")


def template_drops(tokenizer) -> tuple[str, ...]:
    """What of tool calling the tokenizer's chat template drops: "tools" where it renders no tool definitions
    (`tokens.shows_tools`), "tool_calls" where it writes no assistant's tool calls (`tokens.writes_tool_calls`):
    SmolLM2's drops both, Qwen2.5's and Qwen3's neither."""
    from .tokens import shows_tools, writes_tool_calls

    return tuple(name for name, kept in (("tools", shows_tools(tokenizer)), ("tool_calls", writes_tool_calls(tokenizer)))
                 if not kept)


# the reference server's fate of a request carrying what the template dropped at start (`tool_template_warning`)
REFUSED_PER_REQUEST = "refused (400) where their own prompt drops them too (checked per request)"
DROPPED = {  # template_drops -> (what the template dropped from the sample conversation, the request fields)
    ("tools",): ("the tools", '"tools"'),
    ("tool_calls",): ("an assistant's tool calls", 'an assistant\'s "tool_calls"'),
    ("tools", "tool_calls"): ("the tools and an assistant's tool calls", '"tools" or an assistant\'s "tool_calls"'),
}


def tool_template_warning(tokenizer, tool_parser: str, fate: str) -> str | None:
    """serve --tool-parser's one line at start when the chat template drops tools or tool calls from a sample
    conversation (`template_drops`; None when it drops neither). It says no more than that: a request's own prompt
    may still show them (beside a system message, under a template variable). fate: what becomes of the chat
    requests carrying them."""
    if not (drops := template_drops(tokenizer)):
        return None
    dropped, fields = DROPPED[drops]
    return (f"warning: --tool-parser {tool_parser}: this tokenizer's chat template dropped {dropped} from a sample "
            f"conversation: chat requests with {fields} are {fate}; {TEMPLATE_FIX}")


CALLS_AS_TEXT = 'come back as text in the content, finish_reason "stop"'  # the reference server's fate of them


def tool_format_warning(tokenizer, tool_parser: str, fate: str) -> str | None:
    """serve --tool-parser's one line at start when the chat template writes a sample assistant's tool call
    (`tokens.sample_tool_call`) in a format the parser reads no call from (Llama 3.1's bare {"name", "parameters"}
    JSON without <tool_call>, Qwen3-Coder's <function=...> inside it): a model taught that format writes its calls
    so. It shows the assistant's turn as the template writes it (after its generation prompt; the call's name written
    NAME, whitespace runs as one space). None where the parser reads the call, or the template writes none
    (`tool_template_warning` says that). fate: what becomes of such calls."""
    from .tokens import PROBE_CALL, render_chat, sample_tool_call, template_errors

    text = sample_tool_call(tokenizer)
    if text is None or PROBE_CALL not in text:
        return None
    try:
        asked = render_chat(tokenizer, [{"role": "user", "content": "Hi"}], True)
    except template_errors():
        asked = ""
    turn = text[len(os.path.commonprefix([text, asked])):]
    if any(call["function"]["name"] == PROBE_CALL for call in parse_answer(tool_parser, turn)[1]):
        return None
    turn = " ".join(turn.split()).replace(PROBE_CALL, "NAME")
    line = turn if len(turn) <= 80 else turn[:77] + "..."
    return (f"warning: --tool-parser {tool_parser}: this tokenizer's chat template writes an assistant's tool call "
            f"in a format the parser reads no call from ({line}): calls the model writes that way {fate}; "
            f"--tool-parser {tool_parser} reads {TOOL_PARSERS[tool_parser].FORMAT}")


class CallBlock:
    """One <tool_call> block's JSON, read as it comes (`serve_json`). It is a call once its "name" is read (a
    non-empty string; the last one read until then) and its arguments have begun (the first "arguments" or
    "parameters" value, an object; {} when the object ends without them); from then on nothing takes the call back:
    `args`, the arguments' text as json.dumps(..., ensure_ascii=False) writes it, only grows as it is read, and what
    follows them in the object is checked as JSON but not used; `end` is where the object ended in the text (None:
    it did not, its JSON bad or cut short), the block's text after it being content. A block that is no call by its
    end (its text no such object, an empty name, arguments that are no object, its JSON bad or cut short before the
    call was made) stays text."""

    ARGUMENTS = ("arguments", "parameters")

    def __init__(self):
        self.tokens = JsonTokens()
        self.name = self.key = None   # the name read, the top-level key whose value comes
        self.args: str | None = None  # the arguments' text so far (None: not begun)
        self.in_args = False          # their object is open
        self.called = False           # a call: streamed as one, whatever follows
        self.done = False             # nothing more is read
        self.end: int | None = None   # where the block's object ended in the text read

    def read(self, text: str, start: int, stop: int, final: bool) -> None:
        """The block's text text[start:stop] read (what it read before again given; final: the block ends at stop).
        Bad JSON ends the reading: a call keeps the arguments read until there (as a call cut short does)."""
        self.tokens.pos = max(self.tokens.pos, start)
        try:
            for depth, role, text_of, value in self.tokens.read(text, stop, final):
                self._token(depth, role, text_of, value)
                if self.done:
                    return
        except BadJson:
            self.done = True
        self.done = self.done or final

    def _token(self, depth: int, role: str, text_of: str, value) -> None:
        if self.in_args:
            self.args += text_of
            self.in_args = not (depth == 1 and role == "close")
        elif depth == 0:  # the block's object opens, ends, or is no object
            if role == "close" and self.args is None:
                self.args = "{}"
            self.done = text_of != "{"
            self.end = self.tokens.pos + 1 if role == "close" else None
        elif self.called:  # the object's rest after the arguments: only its end matters
            return
        elif depth == 1 and role == "key":
            self.key = value
        elif depth == 1 and self.key == "name" and role in ("open", "value"):
            self.name = value if role == "value" else None
        elif depth == 1 and self.key in self.ARGUMENTS and self.args is None and role != ":":
            self.in_args, self.done = role == "open" and text_of == "{", role != "open" or text_of != "{"
            self.args = "{" if self.in_args else None
        self.called = self.called or (self.args is not None and isinstance(self.name, str) and self.name != "")


class HermesCalls:
    """One answer's tool calls in the Hermes format, read as its text comes. Text that may be the start of
    `<tool_call>` is held back (as serve_text holds back the start of a stop string), a block's text until it is a
    call (its call's deltas then go out as it is read) or, when it is none, its `</tool_call>` (as a call's block's
    text after its object), and whitespace at the end of the content until text other than a call follows it. Content
    that resumes after calls is joined to the content before them by the whitespace after the last call (else the one
    before the first), so "Let me check.\n<call>\nThen..." reads "Let me check.\nThen...", not "...check.Then"."""

    START, END = "<tool_call>", "</tool_call>"
    FORMAT = "the <tool_call> blocks of Qwen2.5's, Qwen3's and Hermes' chat templates"  # tool_format_warning's words

    def __init__(self):
        self.pending = ""      # text not decided yet: a possible start of START, or a block without its END
        self.searched = 0      # how much of an open block's `pending` was searched for END
        self.space = ""        # whitespace at the content's end: dropped when a call follows
        self.after_call = False  # the last thing read was a call: the whitespace after it is held
        self.before = self.after = ""  # the whitespace before the calls since the last content, and after the last
        self.sent = False      # content went out (or was echoed before): content after calls is joined to it
        self.block: CallBlock | None = None  # the open block's reading
        self.calls: list[dict] = []  # the calls made, each as message.tool_calls lists it (its arguments so far)

    def add(self, text: str) -> tuple[str, list[dict]]:
        """(content to send, tool call deltas) for the answer's next text (see `_read`)."""
        self.pending += text
        content, deltas = "", []
        while True:
            if self.pending.startswith(self.START):
                end = self.pending.find(self.END, max(len(self.START), self.searched - len(self.END) + 1))
                if end < 0:  # an END may begin in the last len(END) - 1 characters: the next search starts there
                    self.searched = len(self.pending)
                    deltas += self._read(len(self.pending) - begins(self.END, self.pending), final=False)
                    return content, deltas
                self.searched = 0
                deltas += self._read(end, final=True)
                block, self.pending = self.pending[:end + len(self.END)], self.pending[end + len(self.END):]
                content += self._content(self._rest(block))
                self.block = None
                continue
            at = self.pending.find(self.START)
            cut = at if at >= 0 else len(self.pending) - begins(self.START, self.pending)
            content += self._content(self.pending[:cut])
            self.pending = self.pending[cut:]
            if at < 0:
                return content, deltas

    def finish(self) -> tuple[str, list[dict]]:
        """The rest once the answer has ended: a last block without its END is read to the answer's end (the answer
        stopped at a stop string "</tool_call>", or at EOS, as vLLM's hermes parser takes it; or max_tokens cut it)."""
        deltas = self._read(len(self.pending), final=True) if self.pending.startswith(self.START) else []
        rest = self._rest(self.pending) if self.pending.startswith(self.START) else self.pending
        self.pending, self.searched, self.block = "", 0, None
        content = self._content(rest) + self.space
        self.space = ""
        return content, deltas

    def _read(self, stop: int, final: bool) -> list[dict]:
        """The open block read through pending[:stop]: the deltas of its call, as OpenAI streams one: a first
        {"index", "id", "type", "function": {"name", "arguments": ""}} once it is a call, then {"index",
        "function": {"arguments": piece}} as its arguments' text grows (the pieces add up to the call's arguments)."""
        if self.block is None:
            self.block = CallBlock()
        block, deltas = self.block, []
        was = block.called
        if not block.done:
            block.read(self.pending, len(self.START), stop, final)
        if not block.called:
            return deltas
        if not was:
            call = {"id": f"chatcmpl-tool-{uuid.uuid4().hex}", "type": "function",
                    "function": {"name": block.name, "arguments": ""}}
            self._took(call)
            deltas.append({"index": len(self.calls) - 1, **call, "function": dict(call["function"])})
        call = self.calls[-1]["function"]
        piece = block.args[len(call["arguments"]):]
        if piece:
            call["arguments"] += piece
            deltas.append({"index": len(self.calls) - 1, "function": {"arguments": piece}})
        return deltas

    def _rest(self, block: str) -> str:
        """What of the open block's text is content: all of it unless it is a call, else what follows its object
        (up to its </tool_call> or the start of one the answer ended in, less the whitespace next to that, as next to
        a block), none where the object did not end."""
        if not self.block.called:
            return block
        if self.block.end is None:
            return ""
        rest = block[self.block.end:]
        if rest.endswith(self.END):  # a start of one before its END is text
            return rest.removesuffix(self.END).rstrip()
        return rest[:len(rest) - begins(self.END, rest)].rstrip()

    def _took(self, call: dict) -> None:
        """`call` read: the whitespace held before it leaves the content (kept as a joint, see the class)."""
        if not self.after_call:
            self.before, self.space, self.after_call = self.space, "", True
        self.after = ""
        self.calls.append(call)

    def _content(self, text: str) -> str:
        """What of `text`, content after what was read, goes out now: after calls, their joint and no other
        whitespace; its own trailing whitespace not yet."""
        if self.after_call:
            body = text.lstrip()
            self.after += text[:len(text) - len(body)]
            if not body:
                return ""
            self.after_call = False
            text = (self.after or self.before) + body if self.sent else body
        text = self.space + text
        body = text.rstrip()
        self.space = text[len(body):]
        self.sent = self.sent or bool(body)
        return body


TOOL_PARSERS = {"qwen3": HermesCalls}  # serve --tool-parser NAME -> its parser, named as trtllm-serve's --tool_parser


def finish_reason(ended: str, calls: list) -> str:
    """An answer's finish_reason once its tool calls are parsed: "tool_calls" for one that ended by itself ("stop": EOS
    or a stop string), as trtllm-serve's; "length" (OpenAI's reason when the token limit was reached) and "abort"
    stay, whatever calls came before the cut (vLLM's says "tool_calls" there too)."""
    return "tool_calls" if calls and ended == "stop" else ended


def kept_calls(calls: list[dict], parallel: bool) -> list[dict]:
    """What of an answer's tool calls goes out: a whole answer's calls, or a stream's call deltas (each with the
    "index" of its call). All of them, or with the request's "parallel_tool_calls": false the first call's alone
    (index 0), as vLLM's `maybe_filter_parallel_tool_calls` (trtllm-serve takes the field and keeps every call). The
    calls dropped leave no text in the content, and their tokens stay in the usage: they were generated."""
    return calls if parallel else [call for i, call in enumerate(calls) if call.get("index", i) == 0]


def parse_answer(parser: str, text: str, sent: bool = False) -> tuple[str | None, list[dict]]:
    """A whole answer's (content, tool calls): content None when it is empty beside calls. sent: content went out
    before the answer (a chat's echoed assistant turn), to which content after calls is joined (`HermesCalls.sent`)."""
    calls = TOOL_PARSERS[parser]()
    calls.sent = sent
    content, _ = calls.add(text)
    content += calls.finish()[0]
    return (content or None) if calls.calls else content, calls.calls
