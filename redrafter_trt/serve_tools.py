"""Tool calls in the reference server's chat answers (`serve --tool-parser NAME`, the name trtllm-serve's
--tool_parser gives the format): the answer's text split into its content and OpenAI `tool_calls`.

    calls = TOOL_PARSERS["qwen3"]()
    content, new = calls.add(text_delta)    # the content safe to send now, the calls completed by this text
    content, new = calls.finish()           # the answer ended: what was held back
    content, found = parse_answer("qwen3", whole_text)   # a whole answer: content (None when empty beside calls)

qwen3 is the Hermes format Qwen2.5's and Qwen3's chat templates ask for: each call a JSON object {"name": ...,
"arguments": {...}} between <tool_call> and </tool_call> (trtllm-serve's Qwen3ToolParser, vLLM's hermes; "parameters"
is read where "arguments" is missing, as trtllm-serve's; a last block the answer ended in before its </tool_call>, a
stop string "</tool_call>" or EOS, is a call when its JSON is whole, as vLLM's). A block whose text is no such object
stays in the content, the other blocks still calls: there vLLM keeps the whole text as content and no call, and
trtllm-serve keeps the good calls and drops the bad block (README's Serve section lists where else trtllm-serve's
parser reads otherwise). The text outside the calls is the content, without the whitespace next to a call (the
newlines the template puts between calls) but the one joining its parts (see HermesCalls), the text after a call
included (both servers' whole answers keep only the text before the first call).
Tool names are not checked against the request's tools (neither server refuses one either). A whole answer is parsed
by the same steps as a stream, so a streamed answer's content and calls add up to the whole one's.
"""

from __future__ import annotations

import json
import uuid

from .serve_text import begins


def tool_call_json(name: str, arguments: dict) -> dict:
    """One call as OpenAI's message.tool_calls lists it: arguments as a JSON string."""
    return {"id": f"chatcmpl-tool-{uuid.uuid4().hex}", "type": "function",
            "function": {"name": name, "arguments": json.dumps(arguments, ensure_ascii=False)}}


class HermesCalls:
    """One answer's tool calls in the Hermes format, read as its text comes. Text that may be the start of
    `<tool_call>` is held back (as serve_text holds back the start of a stop string), a block until its
    `</tool_call>`, and whitespace at the end of the content until text other than a call follows it. Content that
    resumes after calls is joined to the content before them by the whitespace after the last call (else the one
    before the first), so "Let me check.\n<call>\nThen..." reads "Let me check.\nThen...", not "...check.Then"."""

    START, END = "<tool_call>", "</tool_call>"

    def __init__(self):
        self.pending = ""      # text not decided yet: a possible start of START, or a block without its END
        self.searched = 0      # how much of an open block's `pending` was searched for END
        self.space = ""        # whitespace at the content's end: dropped when a call follows
        self.after_call = False  # the last thing read was a call: the whitespace after it is held
        self.before = self.after = ""  # the whitespace before the calls since the last content, and after the last
        self.sent = False      # some content went out: content after calls is joined to it
        self.calls: list[dict] = []

    def add(self, text: str) -> tuple[str, list[dict]]:
        """(content to send, calls completed) for the answer's next text."""
        self.pending += text
        content, calls = "", []
        while True:
            if self.pending.startswith(self.START):
                end = self.pending.find(self.END, max(len(self.START), self.searched - len(self.END) + 1))
                if end < 0:  # an END may begin in the last len(END) - 1 characters: the next search starts there
                    self.searched = len(self.pending)
                    return content, calls
                self.searched = 0
                block, self.pending = self.pending[:end + len(self.END)], self.pending[end + len(self.END):]
                call = self._call(block[len(self.START):-len(self.END)])
                if call is None:  # not a call: the block is content
                    content += self._content(block)
                else:
                    calls.append(self._took(call))
                continue
            at = self.pending.find(self.START)
            cut = at if at >= 0 else len(self.pending) - begins(self.START, self.pending)
            content += self._content(self.pending[:cut])
            self.pending = self.pending[cut:]
            if at < 0:
                return content, calls

    def finish(self) -> tuple[str, list[dict]]:
        """The rest once the answer has ended: a last block without its END is a call when its text is one whole
        (the answer stopped at a stop string "</tool_call>", or at EOS, as vLLM's hermes parser takes it), else
        content (cut by max_tokens)."""
        call = self._call(self.pending[len(self.START):]) if self.pending.startswith(self.START) else None
        self.pending, pending, self.searched = "", self.pending, 0
        if call is not None:
            return "", [self._took(call)]
        content = self._content(pending) + self.space
        self.space = ""
        return content, []

    def _took(self, call: dict) -> dict:
        """`call` read: the whitespace held before it leaves the content (kept as a joint, see the class)."""
        if not self.after_call:
            self.before, self.space, self.after_call = self.space, "", True
        self.after = ""
        self.calls.append(call)
        return call

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

    @staticmethod
    def _call(inside: str) -> dict | None:
        """A block's call, or None when its text is no {"name": str, "arguments": object} (arguments may be left
        out: {}; "parameters" stands for them where "arguments" is missing, as trtllm-serve's parser reads it; an
        empty name calls nothing, as trtllm-serve's parser makes no call of it)."""
        try:
            obj = json.loads(inside)
        except ValueError:
            return None
        arguments = obj.get("arguments", obj.get("parameters", {})) if isinstance(obj, dict) else None
        if not isinstance(arguments, dict) or not isinstance(obj.get("name"), str) or not obj["name"]:
            return None
        return tool_call_json(obj["name"], arguments)


TOOL_PARSERS = {"qwen3": HermesCalls}  # serve --tool-parser NAME -> its parser, named as trtllm-serve's --tool_parser


def finish_reason(ended: str, calls: list) -> str:
    """An answer's finish_reason once its tool calls are parsed: "tool_calls" for one that ended by itself ("stop": EOS
    or a stop string), as trtllm-serve's; "length" (OpenAI's reason when the token limit was reached) and "abort"
    stay, whatever calls came before the cut (vLLM's says "tool_calls" there too)."""
    return "tool_calls" if calls and ended == "stop" else ended


def parse_answer(parser: str, text: str) -> tuple[str | None, list[dict]]:
    """A whole answer's (content, tool calls): content None when it is empty beside calls."""
    calls = TOOL_PARSERS[parser]()
    content, found = calls.add(text)
    rest, last = calls.finish()
    content, found = content + rest, found + last
    return (content or None) if found else content, found
