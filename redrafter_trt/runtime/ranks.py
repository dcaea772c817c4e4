"""A checkpoint kept loaded on all its tensor-parallel ranks, for a process that takes requests one after another
(`redrafter-trt serve`): this process is rank 0, ranks 1..N-1 are local follower processes that wait for the next
call and run it with rank 0 (gloo on CPU, nccl on CUDA, rank r on cuda:r).

    ranks = LocalRanks("ckpt_tp2/", device="cpu")      # spawns 1 follower, loads rank0 here (tp=1: compile=True
                                                        # runs the base's layers compiled, runtime/compiled.py)
    result = ranks.generate(prompt_ids, 64, eos_token_id=2, on_tokens=cb)   # runtime.generate on every rank
    scores = ranks.prompt_logprobs(prompt_ids, k=5)                        # runtime.prompt_logprobs on every rank
    ranks.close()                                       # followers exit

`generate_tp` (one call, fresh processes) suits a batch job; this suits a server. A tp=1 checkpoint has no
followers. Followers ignore SIGINT and SIGTERM, which reach the whole process group (the server drains first, then
`close`), and leave when this process dies (their pipe ends). An exception raised by a callback (on_tokens, admit,
on_step: they run here) ends the generation on every rank at the same step and is raised here. A follower that dies
while open, or another error on rank 0 in the middle of a generation, ends this process and the other followers
(exit 1, logged): the ranks would be out of step, and the next collective would hang. A KeyboardInterrupt on rank 0
in the middle of a call (Ctrl-C in a script or notebook) kills the followers instead and is raised: the caller
decides; a later call raises a PeerError. Followers get SIGKILL when the thread that started them ends (this
process then exits 1, naming that thread): open, use and close LocalRanks in one long-lived thread.

Calls from several threads take turns (a lock): each call's collectives run on every rank in one order, and two
calls interleaved would pair one's with the other's. Arguments are bound and checked (`check_generate`) here before
any rank is sent them: a wrong keyword is a TypeError, a wrong value a ConfigError, and the ranks go on. While open,
this process runs torch on rank 0's share of the CPUs (`tp.rank_threads`); close() gives its thread count back.
"""

from __future__ import annotations

import atexit
import logging
import multiprocessing as mp
import os
import pickle
import shutil
import signal
import threading
import weakref
from multiprocessing.connection import wait
from pathlib import Path

import torch
import torch.distributed as dist

from ..errors import PeerError, RedrafterError, first_line
from ..sigint_free import run_ignoring_sigint
from .decode import GenerationResult
from .folder import Checkpoint, open_checkpoint
from .tp import apply_logging, check_rerunnable_main, die_with_parent, first_error, join, keep_result, meeting_store, \
    parent_logging, rank_device, require_gpus, results_dir

log = logging.getLogger(__name__)


def _agree(row: int, new: list[int], logprobs: list) -> bool:
    """A follower's on_tokens: never ends a row itself, takes rank 0's answers (see runtime.decode)."""
    return False


def _none(running: int) -> list[list[int]]:
    """A follower's admit: takes rank 0's prompts (see runtime.decode)."""
    return []


def _runtime(name: str):
    """The runtime function a call names (what rank 0 sends its followers)."""
    from . import generate, prompt_logprobs

    return {"generate": generate, "prompt_logprobs": prompt_logprobs}[name]


def _follow(rank: int, size: int, port: int, checkpoint_dir: Checkpoint, device: str, dtype, logs: tuple | None, conn,
            result_path: str, parent: int) -> None:
    from . import load

    apply_logging(logs)  # the parent's root level and format: the CLI's -v, its "LEVEL name: message" lines
    die_with_parent(parent)  # the thread that built LocalRanks ending ends it, so that thread closes it too
    for sig in (signal.SIGINT, signal.SIGTERM):  # Ctrl-C, `kill -TERM -PGID`, systemd reach the whole process
        signal.signal(sig, signal.SIG_IGN)        # group: rank 0 decides, then lets the followers go
    group = join(rank, size, port, device)
    try:
        model = load(checkpoint_dir, device=rank_device(device, rank), dtype=dtype, group=group)
    except RedrafterError as e:  # its own rank file: rank 0 names it (first_error), as generate_tp's launch does
        keep_result(result_path, rank, ("error", e))
        os._exit(1)
    conn.send("ready")
    while True:
        try:
            job = conn.recv()
        except EOFError:  # rank 0's process is gone
            break
        if job is None:
            break
        name, args, kwargs = job
        try:
            _runtime(name)(model, *args, **kwargs)
        except RedrafterError:  # rank 0 raised the same, before any collective
            pass
        except Exception as e:  # a collective failed: another rank is gone
            log.error("tp rank %d: %s; leaving", rank, first_line(e, type(e).__name__))
            os._exit(1)
    dist.destroy_process_group()


class _Guard:
    """Rank 0's callbacks under tp. Raising out of one would leave the followers in the collective that broadcasts
    its answer, out of step with rank 0 from then on; the first exception (the user's code) is kept instead, every
    row is asked to end at its next report (the followers take rank 0's answers: every rank ends the generation at
    the same step) and admit has nothing more; LocalRanks.generate raises it then."""

    def __init__(self, on_tokens, admit, on_step):
        self.user, self.error = (on_tokens, admit, on_step), None

    def _run(self, i: int, args, default):
        if self.error is None and self.user[i] is not None:
            try:
                return self.user[i](*args)
            except BaseException as e:  # KeyboardInterrupt too: raised once every rank has stopped
                self.error = e
        return default

    def on_tokens(self, *args) -> bool:
        return self._run(0, args, False) or self.error is not None

    def admit(self, running: int) -> list[list[int]]:
        return self._run(1, (running,), [])

    def on_step(self, *args) -> None:
        self._run(2, args, None)


class LocalRanks:
    """Every rank of a checkpoint, loaded once; see the module docstring."""

    def __init__(self, checkpoint_dir: Checkpoint | Path | str, device: str = "cpu", dtype=None, compile: bool = False):
        from . import check_compile, load

        checkpoint_dir = open_checkpoint(checkpoint_dir)  # refused as `run` refuses it; the ranks take it checked
        cfg = checkpoint_dir.config
        check_compile(cfg, compile, device, dtype)
        size = cfg.tp_size
        self.conns, self.procs, self.closing, self.giving_up = [], [], threading.Event(), threading.Lock()
        self.serving = False  # every rank loaded
        self.broken = None  # why the followers were ended while open (an interrupt mid-generation): no more calls
        self.calls = threading.Lock()  # one call at a time: see the module docstring
        self.threads = torch.get_num_threads()  # the caller's: join sets rank 0's share, close() gives it back
        self.owner = threading.current_thread()  # its end ends the followers (die_with_parent): _give_up says so
        if size == 1:
            self.model = load(checkpoint_dir, device=device, dtype=dtype, compile=compile)
            return
        require_gpus(device, checkpoint_dir)
        check_rerunnable_main(size)
        store, ctx = meeting_store(), mp.get_context("spawn")
        port = store.port
        self.results = results_dir()  # where a follower that cannot load says why
        result_path = os.path.join(self.results, "result")
        # a program ending without close(): multiprocessing's exit handler would SIGTERM the followers, which ignore
        # it, and join them forever (they wait on the pipe this process holds open): they are let go first
        atexit.register(_close_at_exit, weakref.ref(self))  # weak: a closed instance's model can be freed
        try:
            for rank in range(1, size):
                mine, theirs = ctx.Pipe()
                # started from the scheduler thread, where no SIGINT handler can be set for it to inherit: it
                # ignores SIGINT from its first line, before unpickling its work imports torch
                work = pickle.dumps((_follow, (rank, size, port, checkpoint_dir, device, dtype, parent_logging())))
                proc = ctx.Process(target=run_ignoring_sigint, args=(work,),
                                   kwargs={"conn": theirs, "result_path": result_path, "parent": os.getpid()},
                                   daemon=True, name=f"redrafter-tp-rank{rank}")
                proc.start()
                theirs.close()
                self.conns.append(mine)
                self.procs.append(proc)
            threading.Thread(target=self._watch, daemon=True, name="redrafter-tp-watch").start()
            group = join(0, size, port, device, store)
            self.model = load(checkpoint_dir, device=rank_device(device, 0), dtype=dtype, group=group)
            for conn in self.conns:
                conn.recv()  # "ready": every rank has loaded its shard
        except BaseException as e:  # rank 0 could not start (Ctrl-C, a bad shard): the followers go too
            self.closing.set()
            for proc in self.procs:
                proc.kill()
                proc.join(timeout=10)
            if dist.is_initialized():
                dist.destroy_process_group()
            torch.set_num_threads(self.threads)
            error = first_error(result_path, size)
            shutil.rmtree(self.results, ignore_errors=True)
            if error is not None and isinstance(e, Exception) and not isinstance(e, RedrafterError):  # rank 0 saw
                # only a follower's end (EOF, a failed collective): its error, as generate_tp's launch raises
                raise error from None
            raise
        shutil.rmtree(self.results, ignore_errors=True)
        self.serving = True
        log.info("%s loaded on %d ranks", checkpoint_dir, size)

    def generate(self, prompt_ids: list[list[int]], max_new_tokens: int, on_tokens=None, admit=None, on_step=None,
                 **kwargs) -> GenerationResult:
        """`runtime.generate` on every rank (the same arguments); rank 0's result. on_tokens, admit and on_step run
        here only (their answers are broadcast). An exception one of them raises ends the generation on every rank
        (`_Guard`) and is raised here."""
        from . import check_call

        args, mine = (prompt_ids, max_new_tokens), kwargs | {"on_tokens": on_tokens, "admit": admit, "on_step": on_step}
        # before any follower is sent them: one that could not take them would leave (and end this process)
        check_call("LocalRanks.generate", self.model.config, *args, **mine)
        if not self.procs or (on_tokens, admit, on_step) == (None, None, None):
            return self._call("generate", args, mine, mine)
        guard = _Guard(on_tokens, admit, on_step)
        followers = kwargs | {"on_tokens": _agree, "admit": _none if admit else None, "on_step": None}
        result = self._call("generate", args, kwargs | {"on_tokens": guard.on_tokens,
                                                        "admit": guard.admit if admit else None,
                                                        "on_step": guard.on_step if on_step else None}, followers)
        if guard.error is not None:
            raise guard.error
        return result

    def prompt_logprobs(self, prompt_ids: list[list[int]], k: int) -> list:
        """`runtime.prompt_logprobs` on every rank; rank 0's result."""
        return self._call("prompt_logprobs", (prompt_ids, k), {}, {})

    def _call(self, name: str, args: tuple, kwargs: dict, followers: dict):
        """runtime.NAME(model, *args) here with kwargs, on the followers with their own (picklable) kwargs; one
        call at a time (`calls`)."""
        with self.calls:
            if self.broken is not None:
                raise PeerError(f"the other tp ranks were ended: {self.broken}; load the checkpoint again (a new "
                                "LocalRanks) to go on")
            try:
                for conn in self.conns:
                    conn.send((name, args, followers))
                return _runtime(name)(self.model, *args, **kwargs)
            except RedrafterError:  # bad arguments: every rank refused them before any collective
                raise
            except Exception as e:
                if self.procs:  # the followers are stuck in a collective this rank will never join
                    self._give_up(f"tp rank 0 failed mid-generation ({first_line(e, type(e).__name__)}); the ranks "
                                  "are out of step")
                raise
            except BaseException as e:  # Ctrl-C here (KeyboardInterrupt): the caller decides whether to go on
                if self.procs:
                    self._end_followers(f"{type(e).__name__} in the middle of {name} on rank 0")
                raise

    def _end_followers(self, why: str) -> None:
        """Kill the followers, which wait in a collective this rank left and would wait for ever (a later call would
        hang, or pair its collectives with theirs), and leave the process group; later calls raise a PeerError."""
        log.warning("%s: ending the other tp ranks", why)
        self.broken = why
        self.closing.set()  # the watchdog: their end is not a failure
        for proc in self.procs:
            proc.kill()
        for proc in self.procs:
            proc.join(timeout=10)
        dist.destroy_process_group()
        torch.set_num_threads(self.threads)

    def close(self) -> None:
        """Followers leave (call once no generate runs); a tp=1 checkpoint has nothing to close."""
        if self.closing.is_set() or not self.procs:
            return
        self.closing.set()
        for conn in self.conns:
            try:
                conn.send(None)
            except (BrokenPipeError, ConnectionResetError):
                pass
        for proc in self.procs:
            proc.join(timeout=60)
            if proc.is_alive():
                proc.kill()
        dist.destroy_process_group()
        torch.set_num_threads(self.threads)

    def _watch(self) -> None:
        wait([p.sentinel for p in self.procs])
        if not self.closing.is_set():
            self._give_up("")

    def _give_up(self, why: str) -> None:
        """Log why (a dead follower if there is one: its death is then the cause), end the other followers (a
        follower stuck in an nccl collective would wait for minutes, holding its GPU) and exit 1."""
        with self.giving_up:  # the watchdog and a failing generation may both get here: one message
            ended = wait([p.sentinel for p in self.procs], timeout=2)
            dead = next((p for p in self.procs if p.sentinel in ended), None)
            if dead is not None:
                dead.join(timeout=5)
                when = "while serving" if self.serving else "while loading"
                why = f"{dead.name} exited (code {dead.exitcode}) {when}: rank 0 cannot go on without it"
                if dead.exitcode == -signal.SIGKILL and not self.owner.is_alive():  # PR_SET_PDEATHSIG's signal
                    why = (f"the thread that opened LocalRanks ({self.owner.name}) ended, and its followers ended "
                           "with it: open, use and close LocalRanks in one long-lived thread")
                if not self.serving and (error := first_error(os.path.join(self.results, "result"),
                                                              len(self.procs) + 1)) is not None:
                    why = f"{dead.name} could not load: {error}"
            log.critical("%s; exiting", why)
            for proc in self.procs:
                proc.kill()
            os._exit(1)


def _close_at_exit(ref: weakref.ref) -> None:
    ranks = ref()
    if ranks is not None:
        ranks.close()
