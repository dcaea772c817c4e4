"""What passes between a request's thread and the reference server's scheduler (`serve_scheduler`): the request as
a `Job` (its prompts, limits and a queue of events), each of its prompts as a `Row` of the running batch, and each
prompt's answer as a `Choice`.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .serve_text import AnswerText, Logprob

if TYPE_CHECKING:
    from .runtime import TokenLogprob


@dataclass
class Choice:
    ids: list[int]      # generated ids, EOS kept
    text: str           # decoded, cut before the first stop string
    steps: int          # decoding steps (the prefill counts as one)
    finish_reason: str  # "stop" (EOS or a stop string), "length" or "abort" (cut by the shutdown)
    logprobs: list[Logprob] | None = None  # the tokens that made `text` (and a completion's EOS), when asked


@dataclass
class Job:
    """One request on its way through the scheduler. events: (prompt index, text, logprobs, tokens so far) as it is
    decoded, then None."""
    prompts: list[list[int]]
    max_tokens: int
    temperature: float
    seed: int | list[int]  # a list: one per prompt (each prompt samples from its own generator either way)
    stop: list[str]
    logprobs: int | None = None  # None: none; k: each token's and the k most likely
    events: queue.SimpleQueue = field(default_factory=queue.SimpleQueue)
    gone: threading.Event = field(default_factory=threading.Event)
    score: bool = False  # scoring its prompts (ReferenceBackend.score), nothing generated
    ignore_eos: bool = False  # decode past EOS up to max_tokens (a benchmark's fixed lengths); batched only alike
    list_eos: bool = False  # logprobs list the EOS that ended an answer (completions; chat leaves it out, as OpenAI)
    choices: list[Choice] | None = None
    scores: list[list[TokenLogprob]] | None = None  # a score job's answer
    error: Exception | None = None
    queued_at: float = 0.0  # time.perf_counter() when it was queued
    running: int = 0  # its prompts still decoding
    rows: list[Row] = field(default_factory=list)  # its prompts started in the running batch (until answered)

    def seed_of(self, i: int) -> int:
        """Prompt i's seed: its generator's, apart from the other prompts' (`serve_request.answer_seeds`)."""
        return self.seed[i] if isinstance(self.seed, list) else self.seed


@dataclass
class Row:
    """One prompt of a request, as a row of the running batch."""
    job: Job
    index: int          # the prompt's index in its request
    text: AnswerText
    steps: int = 0      # decoding steps so far (the prefill counts as one)
    done: bool = False  # ended (EOS, max_tokens, a stop string) or dropped (client gone, shutdown)
    cut: bool = False   # ended by the shutdown before its own end: finish_reason "abort"
