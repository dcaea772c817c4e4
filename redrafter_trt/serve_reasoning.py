"""Reasoning in the reference server's chat answers (`serve --reasoning-parser NAME`, the name trtllm-serve's
--reasoning_parser gives the format): the thinking between <think> and </think> split from the answer's content, as
OpenAI-style `message.reasoning_content` (streamed as `delta.reasoning_content`).

    thinking = Thinking(REASONING_PARSERS["qwen3"])   # or Thinking(opened_by(prompt_text) or ...): see App
    reasoning, content = thinking.add(text_delta)    # what is safe to send now of each
    reasoning, content = thinking.finish()           # the answer ended: what was held back
    reasoning, content = parse_reasoning("qwen3", whole_text)   # reasoning None: the answer did not think

Where an answer starts (REASONING_PARSERS): qwen3's answer opens its thinking itself (Qwen3's template leaves
`<think>` to the model): the text is content until a `<think>`, reasoning from there to `</think>`, content after; an
answer without `<think>` is all content (Qwen3 with enable_thinking false). deepseek-r1's template puts `<think>` in
the prompt, so the answer starts inside its thinking: reasoning until `</think>`, content after; an answer that never
closes it is all reasoning (both as trtllm-serve's DeepSeekR1Parser, registered under those two names, and vLLM's);
a `<think>` it writes first anyway (a template that left it out) is dropped, as vLLM's (trtllm-serve's keeps it in the
reasoning).
A prompt that itself ends in `</think>` (Qwen3's template with enable_thinking false renders an empty think block)
or `<think>` (a template that always opens the thinking) decides instead, whatever the parser (as trtllm-serve reads
the rendered prompt's end for the parsers that opt in: `opened_by`). One think block is read: the text after its
`</think>` is content whatever it holds. The text is split as written (the newlines around the tags stay, as both
servers keep them). Streamed, the end of the text that may begin the tag looked for is held back (as serve_text holds
back the start of a stop string), and a whole answer is parsed by the same steps, so the deltas add up to it.
"""

from __future__ import annotations

from .serve_text import begins

START, END = "<think>", "</think>"
# serve --reasoning-parser NAME -> where its answers start: before their thinking (which they open with <think>) or
# inside it (the prompt opened it), named as trtllm-serve's --reasoning_parser
REASONING_PARSERS = {"qwen3": "before", "deepseek-r1": "opening"}
AFTER = "after"  # past the thinking: content to the end


def opened_by(prompt_tail: str) -> str | None:
    """Where an answer to a prompt ending in `prompt_tail` starts when the prompt decides it: inside its thinking
    after a `<think>`, past it after a `</think>` (an empty think block: thinking off); None: the parser says."""
    tail = prompt_tail.rstrip()
    return AFTER if tail.endswith(END) else "opening" if tail.endswith(START) else None


class Thinking:
    """One chat answer's reasoning and content, read as its text comes. start: where the answer starts, "before"
    (content until <think>), "opening" (reasoning until </think>, a first <think> dropped) or AFTER (all content)."""

    def __init__(self, start: str):
        self.state = start
        self.thought = start == "opening"  # a think block was entered: reasoning_content is a string, not null
        self.pending = ""  # text not decided yet: a possible start of the tag looked for

    def add(self, text: str) -> tuple[str, str]:
        """(reasoning, content) to send for the answer's next text."""
        self.pending += text
        reasoning = content = ""
        while self.state != AFTER:
            if self.state == "opening":  # a <think> the answer starts with anyway is the tag, not its thinking
                if len(self.pending) < len(START) and START.startswith(self.pending):
                    return reasoning, content
                self.pending, self.state = self.pending.removeprefix(START), "thinking"
            tag = START if self.state == "before" else END
            at = self.pending.find(tag)
            cut = at if at >= 0 else len(self.pending) - begins(tag, self.pending)
            if self.state == "before":
                content += self.pending[:cut]
            else:
                reasoning += self.pending[:cut]
            if at < 0:
                self.pending = self.pending[cut:]
                return reasoning, content
            self.pending = self.pending[at + len(tag):]
            self.state, self.thought = ("thinking", True) if self.state == "before" else (AFTER, self.thought)
        content, self.pending = content + self.pending, ""
        return reasoning, content

    def finish(self) -> tuple[str, str]:
        """What was held back, once the answer has ended: the start of a tag that never came is text."""
        pending, self.pending = self.pending, ""
        return (pending, "") if self.state in ("opening", "thinking") else ("", pending)


def parse_reasoning(start: str, text: str) -> tuple[str | None, str]:
    """A whole answer's (reasoning, content), for an answer starting at `start` (see Thinking): reasoning None when
    the answer did not think."""
    thinking = Thinking(start)
    reasoning, content = thinking.add(text)
    more, rest = thinking.finish()
    return (reasoning + more if thinking.thought else None), content + rest
