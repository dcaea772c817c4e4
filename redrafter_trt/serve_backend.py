"""The reference server's model side (`ReferenceBackend`): a checkpoint loaded once with its tokenizer, the requests'
prompts encoded and checked against it, then decoded by its scheduler (`serve_scheduler`: one thread owns the model on
all its tp ranks and batches the requests waiting for it in flight).

    backend = ReferenceBackend(ckpt, tokenizer_dir, device="cpu", max_batch=8)   # compile=True: runtime/compiled.py
    choices = backend.complete(prompts, max_tokens, temperature, seed, stop, on_text, logprobs)   # any thread
    scores = backend.score(prompts, k)     # the prompts' own logprobs (an echo), between two batches
    backend.take_iterations()              # the prefills and decoding steps since the last call (GET /metrics)
    backend.stop()
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable

from .errors import first_line
from .plural import counted
from .serve_errors import RequestError
from .serve_jobs import Choice, Job
from .serve_scheduler import Scheduler
from .serve_text import Logprob

if TYPE_CHECKING:
    from .runtime import TokenLogprob

MAX_PROMPTS = 64  # prompts in one /v1/completions request


def chat_prompt(tokenizer, messages: list[dict], template_kwargs: dict | None = None, tools: tuple[dict, ...] = ()
                ) -> str:
    """The messages' text in the tokenizer's chat template, ready for the answer, rendered with the request's
    chat_template_kwargs (checked: `tokens.template_kwargs_refusal`) and its tools (OpenAI's function tools, as
    `tokens.render_chat` gives a record's). The template's own refusal is a RequestError (a 400)."""
    if not getattr(tokenizer, "chat_template", None):
        raise RequestError("this model's tokenizer has no chat template: use /v1/completions")
    from jinja2 import TemplateError

    from .tokens import apply_template

    try:
        return apply_template(tokenizer, messages, tools=list(tools) or None, add_generation_prompt=True,
                              **(template_kwargs or {}))
    except TemplateError as e:  # the template's own refusal is a 400; any other error is the server's, a 500
        why = first_line(e, type(e).__name__)  # raise_exception(...): Mistral's roles must alternate, 'a' + 1, ...
        raise RequestError(f"this model's chat template refuses these messages ({why}): send messages it "
                           "takes", param="messages") from None


class ReferenceBackend:
    """A checkpoint loaded once with its tokenizer, on all its tp ranks (this process is rank 0); `complete` may be
    called from many threads at once, the scheduler batches what waits."""

    def __init__(self, checkpoint_dir: Path, tokenizer_dir: Path, device: str = "cpu", max_batch: int = 8,
                 compile: bool = False, tokenizer=None):
        """tokenizer: the base's, loaded from tokenizer_dir by `tokens.load_tokenizer` with the checkpoint's
        vocab_size (serve loads it before the port: loading it again here cost 0.2-0.4 s at start); None: loaded
        here."""
        from .runtime import open_checkpoint
        from .tokens import load_tokenizer, stop_ids

        checkpoint_dir = open_checkpoint(checkpoint_dir)
        cfg = checkpoint_dir.config
        self.config = cfg
        self.tokenizer = tokenizer if tokenizer is not None else load_tokenizer(str(tokenizer_dir), cfg.vocab_size)
        self.eos = stop_ids(self.tokenizer, tokenizer_dir)
        self.scheduler = Scheduler(checkpoint_dir, device, compile, cfg, self.tokenizer, self.eos, max_batch)

    @property
    def closing(self) -> bool:
        """Refusing requests: the server is shutting down (`stop`)."""
        return self.scheduler.closing

    def stop(self, grace: float = 0.0) -> None:
        """Refuse what waits and what comes (Unavailable), let the batch in flight run up to `grace` seconds more,
        then end it at its next step (answers cut short finish with "abort"), release the other tp ranks (returns
        once no generation runs)."""
        self.scheduler.stop(grace)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until nothing decodes and nothing waits (a request is answered before its batch has ended, and
        a later one may still join it); True when so."""
        return self.scheduler.wait_idle(timeout)

    def take_iterations(self, keep: bool = False) -> list[dict]:
        """The prefills and decoding steps since the last call, oldest first (at most serve_metrics.MAX_ITERATIONS),
        as TensorRT-LLM's iteration statistics (trtllm-serve's GET /metrics); each is given once (keep: given again
        next time)."""
        return self.scheduler.take_iterations(keep)

    def encode_chat(self, messages: list[dict], template_kwargs: dict | None = None, tools: tuple[dict, ...] = ()
                    ) -> list[int]:
        """The messages' token ids in the chat template, ready for the answer (`chat_prompt`)."""
        text = chat_prompt(self.tokenizer, messages, template_kwargs, tools)
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def encode(self, prompt: str) -> list[int]:
        return list(self.tokenizer(prompt)["input_ids"])

    @property
    def greedy(self) -> bool:
        """A greedy checkpoint (redrafter_greedy_search): every answer greedy, whatever the temperature."""
        return self.config.has_drafter and self.config.greedy_search

    def temperature(self, requested: float | None) -> float:
        """Greedy checkpoint: 0 whatever was asked; otherwise the request's, 1.0 (OpenAI's default) when unset, and 0
        (greedy) below MIN_TEMPERATURE, as vLLM: lm-evaluation-harness sends 0 with every scoring request."""
        from .runtime import MIN_TEMPERATURE

        if self.greedy:
            return 0.0
        if requested is None:
            return 1.0
        return 0.0 if requested < MIN_TEMPERATURE else float(requested)

    def complete(self, prompts: list[list[int]], max_tokens: int, temperature: float | None, seed: int | list[int],
                 stop: list[str], on_text: Callable[[int, str, list[Logprob], int], None] | None = None,
                 logprobs: int | None = None, ignore_eos: bool = False, list_eos: bool = False,
                 alive: Callable[[], bool] | None = None) -> list[Choice]:
        """Answer every prompt; on_text(prompt index, new text, its tokens' logprobs, the prompt's tokens generated so
        far) streams it as tokens are accepted (called in this thread; raising ClientGone from it ends this
        request's decoding). seed: each prompt samples from a generator of its own, seeded so (a list: one seed per
        prompt, `serve_request.answer_seeds`), so an answer never depends on the prompts beside it.
        logprobs=k: each token's log-probability and the k most likely (None: none).
        ignore_eos: EOS ends nothing, every answer runs to max_tokens (or a stop string), as TensorRT-LLM's.
        list_eos: the logprobs name the EOS that ended an answer (a completion's: lm-evaluation-harness reads the
        last entry of a one-token answer as the token generated); else they leave it out (chat, as OpenAI).
        alive: False once the client has left (asked every serve_scheduler.POLL_SECONDS while no text comes): a
        request still queued leaves the queue at once (ClientGone), one decoding drops its rows and its prompts not
        started yet."""
        if not (isinstance(max_tokens, int) and max_tokens >= 1):  # else the scheduler's traceback, then the error
            raise RequestError(f"max_tokens {max_tokens!r} must be an integer of at least 1")
        if isinstance(stop, str) or not all(isinstance(s, str) for s in stop):  # "ab" stopped at "a" and at "b"
            raise RequestError(f"stop {stop!r} must be a list of strings ([s] for one)")
        if isinstance(seed, list) and len(seed) != len(prompts):  # else an IndexError in the scheduler thread
            raise RequestError(f"{counted(len(seed), 'seed')} for {counted(len(prompts), 'prompt')}: send one seed per "
                               "prompt (or one for all)")
        job = Job(prompts, max_tokens, self.temperature(temperature), seed, stop, logprobs, ignore_eos=ignore_eos,
                  list_eos=list_eos)
        return self._submit(job, on_text, alive).choices

    def score(self, prompts: list[list[int]], k: int) -> list[list[TokenLogprob]]:
        """Each prompt's tokens after the first under the base, teacher-forced, with the k most likely
        (`runtime.prompt_logprobs`): an echoed prompt's logprobs. Runs alone, between two batches."""
        return self._submit(Job(prompts, 0, 0.0, 0, [], k, score=True), None).scores

    def check(self, prompts: list[list[int]], max_tokens: int) -> None:
        """Refuse (RequestError, ConfigError: a 400) prompts this model cannot take with max_tokens new tokens."""
        from .runtime import check_positions

        if not isinstance(prompts, (list, tuple)) or not all(isinstance(p, (list, tuple)) for p in prompts):
            raise RequestError("prompts is a batch: one list of token ids per prompt ([ids] for one prompt)")
        if not prompts:  # max() of no prompts' lengths: a ValueError
            raise RequestError("no prompts: send at least one")
        if any(not p for p in prompts):
            raise RequestError("a prompt is empty: send some text", param="prompt")
        if len(prompts) > MAX_PROMPTS:
            raise RequestError(f"{len(prompts)} prompts in one request: send at most {MAX_PROMPTS}")
        bad = [t for p in prompts for t in p if not 0 <= t < self.config.vocab_size]
        if bad:
            raise RequestError(f"token id {bad[0]} is outside the vocabulary (0..{self.config.vocab_size - 1})",
                               param="prompt")
        check_positions(self.config, prompts, max_tokens, flag="max_tokens")  # an HTTP client sends max_tokens

    def _submit(self, job: Job, on_text, alive: Callable[[], bool] | None = None) -> Job:
        """Check the job's prompts, then queue it and wait for its answer (`Scheduler.submit`)."""
        self.check(job.prompts, job.max_tokens)
        return self.scheduler.submit(job, on_text, alive)
