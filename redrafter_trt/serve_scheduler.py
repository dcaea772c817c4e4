"""The reference server's scheduler (`Scheduler`): one thread owns the checkpoint (on all its tp ranks, see
`runtime.ranks`) and decodes the requests waiting for it as one batch, which the greedy requests arriving later join
between two steps (in-flight batching, as TensorRT-LLM's executor does), up to `max_batch` prompts running at once.

    scheduler = Scheduler(ckpt, "cpu", compile=False, config=cfg, tokenizer=tok, eos={2}, max_batch=8)
    job = scheduler.submit(Job(prompts, max_tokens, 0.0, seed, stop), on_text)   # any thread; job.choices
    scheduler.take_iterations()            # the prefills and decoding steps since the last call (GET /metrics)
    scheduler.stop()

Batching changes nothing in an answer: each prompt keeps its own max_tokens (its tokens are cut there and its row
leaves the batch at the step it is reached, as it would alone), stop strings and EOS; a greedy answer is the base's
greedy answer whatever it is batched with (up to a floating-point near-tie, as in any batched inference). A request
is answered as soon as its own prompts end. A request joins a running batch only if its max_tokens is within the
batch's (the cache was sized for it) and every older request has joined: first come, first served, so a request
that cannot join stops the others from joining, the batch drains and the next one starts with it. A sampling
checkpoint decodes each request alone, so that its `seed` alone decides its answer, each prompt sampling from a
generator of its own (`serve_request.answer_seeds`): a prompt's answer is the one it gets alone. Streamed text goes
through a queue per request, so a slow client never holds up the others; a client that leaves ends only its own rows.
A request asking for logprobs (top k) joins only a batch computing at least k of them (`runtime.decode`).
Scoring prompts (a Job with score=True: `ReferenceBackend.score`) is a job of its own too: it runs between two
batches and nothing joins it.
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
import time
import weakref
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from .errors import ConfigError
from .serve_errors import SHUTTING_DOWN, ClientGone, RequestError, Unavailable
from .serve_jobs import Choice, Job, Row
from .serve_metrics import IterationLog
from .serve_text import AnswerText

if TYPE_CHECKING:
    from .runtime import RuntimeConfig
    from .runtime.decode import Iteration

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0  # how often a request with no news (queued) asks whether its client is still there, and the
# main thread waiting for the load whether a stop came


@dataclass
class Unreported:
    """What a running batch's callbacks saw since its last iteration statistic, for the next one (`_iteration`)."""
    waited: list[float] = field(default_factory=list)  # per row started since: the seconds its request had waited
    dropped: int = 0  # tokens decoded past what their rows' requests take (their own max_tokens, a stop string)


def _more(asked: int | None, running: int | None) -> bool:
    """A request asking for `asked` logprobs needs more than a batch computing `running` (None: none)."""
    return asked is not None and (running is None or asked > running)


class Scheduler:
    """The thread that loads a checkpoint on all its tp ranks (this process is rank 0) and decodes what waits;
    `submit` may be called from many threads at once, the scheduler batches what waits.

    The scheduler thread loads the model and runs every torch computation of the server: OpenMP (GNU libgomp, which
    torch's CPU builds use) keeps a pool of worker threads per thread that has run a parallel region, and once the
    pools hold more threads than there are cores it stops spinning between regions, so every region waits for its
    workers to wake. Measured on 2 cores, 2 torch threads: a decoding step 1.2-1.35x slower eager and 1.3-2x compiled
    in a second thread than in the one that loaded the model; loading in the scheduler thread avoids that whenever
    it is the only thread computing (`serve`: the main thread only answers HTTP)."""

    def __init__(self, checkpoint_dir: Path, device: str, compile: bool, config: RuntimeConfig, tokenizer,
                 eos: set[int], max_batch: int):
        """config: the checkpoint's; tokenizer: its answers' (`serve_text.AnswerText`); eos: the ids ending them."""
        self.config, self.tokenizer, self.eos, self.max_batch = config, tokenizer, eos, max_batch
        self.waiting: deque[Job] = deque()
        self.unanswered: list[Job] = []  # taken into the running batch, not answered yet (scheduler thread only)
        self.wake = threading.Condition()
        self.closing = self.stopping = self.busy = False  # closing: refusing requests; stopping: ending the batch
        loaded: list[BaseException | None] = []
        self.thread = threading.Thread(target=self._load_and_schedule, daemon=True, name="redrafter-serve-scheduler",
                                       args=(checkpoint_dir, device, compile, loaded))
        self.thread.start()
        with self.wake:  # in slices: Python runs a signal's handler (serve's Ctrl-C, SIGTERM) in the main thread, once
            # it runs Python again; a stop the loading thread took, or that came just before the wait began, left an
            # untimed wait asleep until the load ended (CI: SIGTERM unanswered for 120 s while the model loaded)
            while not self.wake.wait_for(lambda: loaded, timeout=POLL_SECONDS):
                pass
        if loaded[0] is not None:
            raise loaded[0]
        atexit.register(_stop_at_exit, weakref.ref(self))

    def stop(self, grace: float = 0.0) -> None:
        """Refuse what waits and what comes (Unavailable), let the batch in flight run up to `grace` seconds more,
        then end it at its next step (answers cut short finish with "abort"), release the other tp ranks (returns
        once no generation runs)."""
        with self.wake:
            self.closing = True
            for job in self.waiting:
                job.error = Unavailable(SHUTTING_DOWN)
                job.events.put(None)
            self.waiting.clear()
            self.wake.wait_for(lambda: not self.busy, timeout=grace)
            self.stopping = True
            self.wake.notify_all()
        self.thread.join()  # which released the other ranks

    def submit(self, job: Job, on_text, alive: Callable[[], bool] | None = None) -> Job:
        """Queue the job (its prompts checked: ReferenceBackend.check), pass its events to on_text until it is
        answered (or, once `alive` says its client left, until its rows are dropped; at once when it was still
        queued)."""
        with self.wake:
            if self.closing:
                raise Unavailable(SHUTTING_DOWN)
            job.queued_at = time.perf_counter()
            self.waiting.append(job)
            self.wake.notify_all()
        while True:
            try:
                event = job.events.get(timeout=POLL_SECONDS if alive is not None else None)
            except queue.Empty:  # queued (or no text for a while): a client that left waited for nothing
                if not job.gone.is_set() and not alive():
                    job.gone.set()
                    if self._withdraw(job):
                        raise ClientGone from None
                continue
            if event is None:
                break
            if on_text and not job.gone.is_set():
                try:
                    on_text(*event)
                except ClientGone:
                    job.gone.set()  # the scheduler drops its rows at their next step
                except BaseException:
                    job.gone.set()
                    raise
        if job.gone.is_set():
            raise ClientGone
        if job.error is not None:
            raise job.error
        return job

    def _withdraw(self, job: Job) -> bool:
        """Take the job out of the queue; False when the scheduler has taken it already."""
        with self.wake:
            for i, waiting in enumerate(self.waiting):
                if waiting is job:
                    del self.waiting[i]
                    return True
        return False

    # ---- the scheduler thread ----------------------------------------------------------------------------------

    def _load_and_schedule(self, checkpoint_dir: Path, device: str, compile: bool, loaded: list) -> None:
        """The scheduler thread: load the model on every rank (`loaded` gets None, or what went wrong), decode what
        waits until stopped, release the other ranks."""
        from .runtime.ranks import LocalRanks

        try:
            self.ranks = LocalRanks(checkpoint_dir, device=device, compile=compile)
            self.iterations = IterationLog(self.ranks.model.base.device)  # not yet read by take_iterations
            if compile and self.max_batch > 1:  # the kinds a batch of several prompts runs, before a request waits,
                # their GEMMs autotuned for a full batch (on SmolLM2, W=1 L=2, 2 threads: tuned for a batch of 8, not 2,
                # a batch of 8 served 1.07x the eager runtime's tokens/s instead of 0.82x; scripts/bench_serve.py)
                self.ranks.model.base.compile_now(batch=self.max_batch)
        except BaseException as e:
            outcome = e
        else:
            outcome = None
        with self.wake:
            loaded.append(outcome)
            self.wake.notify_all()
        if outcome is None:
            self._schedule()
            self.ranks.close()  # from this thread: the followers' parent-death signal is its end (runtime.ranks)

    def _schedule(self) -> None:
        while True:
            with self.wake:
                self.wake.wait_for(lambda: self.waiting or self.stopping)
                if self.stopping:  # stop() refused what waited, and closing lets nothing in since
                    return
                batch = self._next_batch()
                self.busy = True
            try:
                self._run(batch)
            except Exception as e:  # answered as a 400 (RequestError, ConfigError) or a 500 by the HTTP side
                if isinstance(e, (RequestError, ConfigError)):  # its answer names it (a model whose logits overflow)
                    log.error("decoding failed: %s", e)
                else:
                    log.exception("decoding failed")
                for job in self.unanswered:
                    job.error = e
                    job.events.put(None)
                self.unanswered.clear()
            with self.wake:
                self.busy = False
                self.wake.notify_all()

    def take_iterations(self, keep: bool = False) -> list[dict]:
        """The prefills and decoding steps since the last call, oldest first (at most serve_metrics.MAX_ITERATIONS),
        as TensorRT-LLM's iteration statistics (trtllm-serve's GET /metrics); each is given once (keep: given again
        next time)."""
        return self.iterations.take(keep)

    def _iteration(self, it: Iteration, pending: int, seen: Unreported) -> None:
        """runtime.decode's on_step: one forward pass of the running batch, as an iteration statistic (serve_metrics).
        pending: the prompts of requests taken into the batch not started yet, which wait as the queue does;
        seen.waited: the seconds each row started since the last prefill waited (given to that prefill, then cleared);
        seen.dropped: the tokens it decoded that no answer took (a row of a request with a lower max_tokens than the
        batch's, or ended by a stop string, decodes past its end), left out of its tokens, as usage leaves them out."""
        with self.wake:
            queued = sum(len(job.prompts) for job in self.waiting) + pending
        self.iterations.record(replace(it, tokens=it.tokens - seen.dropped), queued=queued,
                               queue_seconds=sum(seen.waited) if it.context_rows else 0.0, max_batch=self.max_batch,
                               draft_len=self.config.draft_len if self.config.has_drafter else None)
        seen.dropped = 0
        if it.context_rows:
            seen.waited.clear()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until nothing decodes and nothing waits (a request is answered before its batch has ended, and
        a later one may still join it); True when so."""
        with self.wake:
            return self.wake.wait_for(lambda: not self.busy and not self.waiting, timeout)

    def _next_batch(self) -> list[Job]:
        """The oldest waiting request and, after it, the waiting ones that may share its batch (greedy, at most
        max_batch prompts in all; a sampled request or a scoring job goes alone)."""
        first = self.waiting.popleft()
        together = first.temperature == 0 and not first.score
        return [first] + (self._take(self.max_batch - len(first.prompts), first) if together else [])

    def _take(self, room: int, batch: Job, running: bool = False) -> list[Job]:
        """Waiting greedy requests, oldest first, that fit in `room` prompts and treat EOS as `batch` does (and, to
        join a `running` batch, ask for at most its max_tokens and logprobs), up to the first that does not: first
        come, first served. That one stops requests from joining the running batch, which then drains, and starts
        the next batch."""
        jobs = []
        longest, most = max(map(len, batch.prompts), default=0), batch.max_tokens
        while self.waiting:
            job = self.waiting[0]
            beyond = running and (job.max_tokens > batch.max_tokens or _more(job.logprobs, batch.logprobs))
            # A new batch runs to its longest prompt + its largest max_tokens: that must fit the positions (rows
            # joining a running batch are cut at their own max_tokens, which each request was checked against).
            longest, most = max(longest, *map(len, job.prompts)), max(most, job.max_tokens)
            if (job.temperature != 0 or job.score or len(job.prompts) > room or beyond
                    or job.ignore_eos != batch.ignore_eos or (not running and longest + most > self.config.max_positions)):
                break
            jobs.append(self.waiting.popleft())
            room -= len(job.prompts)
        return jobs

    def _run(self, batch: list[Job]) -> None:
        """Decode `batch`, at most max_batch prompts at a time: its prompts beyond that, then greedy requests that
        arrive meanwhile (max_tokens within the batch's), join between steps as rows end. A request is answered as
        soon as its last prompt ends."""
        if batch[0].score:
            job = batch[0]
            self.unanswered.append(job)
            job.scores = self.ranks.prompt_logprobs(job.prompts, job.logprobs)
            self.unanswered.remove(job)
            job.events.put(None)
            return
        from .runtime.decode import Joining  # torch is loaded by then: the ranks hold the model

        rows: dict[int, Row] = {}  # decode's running row r -> its request, prompt index, text so far (a row that
        # ended is dropped, its request's answered with it: a batch that new requests keep joining runs for days)
        counts = [0, 0]  # requests taken, prompts started (the log line's)
        pending: deque[tuple[Job, int]] = deque()  # taken prompts not decoding yet, first come first served
        seen = Unreported()  # for the next iteration statistic
        tops = [job.logprobs for job in batch if job.logprobs is not None]
        limits = Job([], max(job.max_tokens for job in batch), 0.0, 0, [], max(tops) if tops else None,
                     ignore_eos=batch[0].ignore_eos)
        eos = self._stops(limits)

        def take(jobs: list[Job]) -> None:
            counts[0] += len(jobs)
            for job in jobs:
                self.unanswered.append(job)
                job.running = len(job.prompts)
                pending.extend((job, i) for i in range(len(job.prompts)))

        def start(room: int) -> list[Joining]:
            """Up to `room` pending prompts become rows of the running batch, each ending at its own max_tokens."""
            new = []
            while pending and len(new) < room:
                job, i = pending.popleft()
                seen.waited.append(time.perf_counter() - job.queued_at)
                unlisted = set() if job.list_eos else self._stops(job)
                rows[counts[1]] = row = Row(job, i, AnswerText(self.tokenizer, job.stop, unlisted))
                job.rows.append(row)
                counts[1] += 1
                new.append(Joining(job.prompts[i], job.max_tokens, job.seed_of(i)))
            return new

        def on_tokens(r: int, new: list[int], values: list) -> bool:
            """Never raises: under tp the other ranks must leave the decoding loop at the same step as this one."""
            row = rows[r]
            job, text = row.job, row.text
            row.steps += 1
            had = len(text.ids)
            room = job.max_tokens - had
            mine = [] if job.logprobs is None else [replace(v, top=v.top[: job.logprobs]) for v in values[:room]]
            delta = text.add(new[:room], mine)
            seen.dropped += len(new) - (len(text.ids) - had)  # past max_tokens or the stop string: not the answer's
            given = text.logprobs()
            if delta or given:
                job.events.put((row.index, delta, given, len(text.ids)))
            ended = text.stopped or len(text.ids) >= job.max_tokens or (text.ids and text.ids[-1] in eos)
            if (ended or job.gone.is_set() or self.stopping) and not row.done:
                row.done, row.cut = True, not ended
                del rows[r]
                job.running -= 1
                if not job.running:
                    self._answer(job)
            return row.done

        def admit(running: int) -> list[Joining]:
            left = [job for job, _ in pending if job.gone.is_set()]  # their clients left: never started
            if left:
                kept = [(job, i) for job, i in pending if not job.gone.is_set()]
                pending.clear()
                pending.extend(kept)
            for job in left:
                job.running -= 1
                if not job.running:
                    self._answer(job)
            with self.wake:
                if self.stopping:
                    return []
                if greedy and not pending:  # a sampled request decodes alone: only its own prompts join
                    take(self._take(self.max_batch - running, limits, running=True))
                return start(self.max_batch - running)

        take(batch)
        greedy = batch[0].temperature == 0
        first = start(self.max_batch)
        self.ranks.generate([j.ids for j in first], limits.max_tokens, temperature=batch[0].temperature,
                            eos_token_id=sorted(eos), seed=[j.seed for j in first], use_draft=self.config.has_drafter,
                            on_tokens=on_tokens, admit=admit, logprobs=limits.logprobs,
                            on_step=lambda it: self._iteration(it, len(pending), seen),
                            forget_ended=True)
        for job in list(self.unanswered):  # started rows end through on_tokens; prompts never started: stopped
            if any(waiting is job for waiting, _ in pending):
                job.error = Unavailable(SHUTTING_DOWN)
                self.unanswered.remove(job)
                job.events.put(None)
            else:
                self._answer(job)
        if counts[0] > 1:
            log.info("decoded %d requests (%d prompts) in one batch", *counts)

    def _stops(self, job: Job) -> set[int]:
        """The tokens that end job's answers: the model's EOS, none under ignore_eos."""
        return set() if job.ignore_eos else self.eos

    def _answer(self, job: Job) -> None:
        choices = []
        for row in job.rows:
            delta = row.text.finish()
            given = row.text.logprobs()
            if delta or given:
                job.events.put((row.index, delta, given, len(row.text.ids)))
            ids = row.text.ids
            reason = ("abort" if row.cut else "stop" if row.text.stopped or (ids and ids[-1] in self._stops(job))
                      else "length")
            lps = row.text.logprobs(everything=True) if job.logprobs is not None else None
            choices.append(Choice(ids, row.text.text, row.steps, reason, lps))
        job.choices, job.rows = choices, []
        self.unanswered.remove(job)
        job.events.put(None)


def _stop_at_exit(ref: weakref.ref) -> None:
    """A program that ended with a backend still running (a script exiting after its last answer) was aborted at
    exit about one run in six ("terminate called without an active exception", exit 134): the scheduler thread was
    still computing as the interpreter finalised. It is stopped first (`serve` leaves through os._exit instead)."""
    scheduler = ref()
    if scheduler is not None and scheduler.thread.is_alive():
        scheduler.stop()
