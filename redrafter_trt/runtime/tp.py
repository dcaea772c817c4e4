"""Tensor parallelism for the reference runtime: a tiny communicator over torch.distributed (gloo on CPU,
nccl on CUDA) and a launcher that runs one function in `tp_size` local processes.

Each process loads only `rank{tp_rank}.safetensors`; the layers combine their shards with the collectives the
TensorRT-LLM layout implies: row-parallel `attention.dense` and `mlp.proj` -> all-reduce (sum), column-parallel
`lm_head` and drafter layers -> all-gather along the last dim. Random decisions (sampling acceptance) are taken
on rank 0 and broadcast, so every rank keeps the same tokens.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import os
import pickle
import shutil
import signal
import sys
import tempfile
import threading
import traceback
from dataclasses import dataclass
from multiprocessing.connection import wait
from pathlib import Path
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist

from ..errors import ConfigError, PeerError, RedrafterError
from ..plural import are, counted

if TYPE_CHECKING:
    from .folder import Checkpoint

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TPGroup:
    """tp_rank / tp_size of this process; size 1 means no communication at all."""

    tp_rank: int = 0
    tp_size: int = 1

    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        """Sum of x over ranks (in place when distributed)."""
        if self.tp_size > 1:
            dist.all_reduce(x)
        return x

    def all_gather(self, x: torch.Tensor) -> torch.Tensor:
        """[..., n] per rank -> [..., tp_size * n], rank-ordered along the last dim."""
        if self.tp_size == 1:
            return x
        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(self.tp_size)]
        dist.all_gather(parts, x)
        return torch.cat(parts, dim=-1)

    def broadcast(self, x: torch.Tensor) -> torch.Tensor:
        """Rank 0's x on every rank (in place)."""
        if self.tp_size > 1:
            dist.broadcast(x, src=0)
        return x

    def broadcast_object(self, obj):
        """Rank 0's picklable obj on every rank."""
        if self.tp_size == 1:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]


SINGLE = TPGroup()


def meeting_store() -> dist.TCPStore:
    """The store the ranks meet through, held by the process that starts them, on the port the OS gives it as it
    binds: a port found free and bound by rank 0 only once it had started (seconds later) could be taken meanwhile
    (EADDRINUSE). The ranks reach it at `.port`."""
    return dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)


@contextlib.contextmanager
def quiet_stdout():
    """The process's stdout (file descriptor 1) goes to stderr meanwhile. The gloo of torch 2.8 and 2.9 (TensorRT-LLM
    1.2 pins 2.9) prints "[Gloo] Rank r is connected to n peer ranks..." to stdout as a group connects, which C's
    buffer then wrote into the answers `run` prints, or into `--output-json -`. C's buffers are flushed where ctypes
    can open the process itself (not on Windows)."""
    flush_c = getattr(_own_process(), "fflush", lambda _: None)
    sys.stdout.flush()
    flush_c(None)
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        flush_c(None)
        os.dup2(saved, 1)
        os.close(saved)


def _own_process() -> ctypes.CDLL | None:
    """This process's C symbols (libc's among them), or None where ctypes cannot open the process itself (Windows:
    TypeError)."""
    try:
        return ctypes.CDLL(None, use_errno=True)
    except (OSError, TypeError):
        return None


def usable_cpus() -> int:
    """The CPUs this process may run on: its affinity mask where the OS has one (taskset, a container's cpuset, a
    batch scheduler's cores), as torch's default thread count (OpenMP's) follows it; os.cpu_count() counts the
    whole host's."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # macOS, Windows: no affinity mask
        return os.cpu_count() or 1


def rank_threads(tp_size: int) -> int:
    """The intra-op threads each of tp_size local ranks takes as it joins: a fair share of the CPUs it may use, or
    fewer where OMP_NUM_THREADS asks for fewer (torch's own default keeps to it; set_num_threads would not)."""
    share = max(1, usable_cpus() // tp_size)
    asked = os.environ.get("OMP_NUM_THREADS", "")
    return min(share, int(asked)) if asked.isdigit() and int(asked) > 0 else share


def join(tp_rank: int, tp_size: int, port: int, device: str, store: dist.Store | None = None) -> TPGroup:
    """Join the local process group (gloo on CPU; nccl on CUDA, rank r on cuda:r) through the meeting store at
    `port` (or `store`, the process's own) with a fair share of the CPUs it may use (`rank_threads`)."""
    torch.set_num_threads(rank_threads(tp_size))
    nccl = device.startswith("cuda")
    store = store if store is not None else dist.TCPStore("127.0.0.1", port, is_master=False)
    with quiet_stdout():
        dist.init_process_group("nccl" if nccl else "gloo", store=store, rank=tp_rank, world_size=tp_size)
    if nccl:
        torch.cuda.set_device(tp_rank)
    return TPGroup(tp_rank, tp_size)


def require_gpus(device: str, checkpoint: Checkpoint) -> None:
    """A tp=N checkpoint on CUDA takes GPUs 0..N-1 (rank r on cuda:r): refuse before any process starts, naming the
    tp sizes convert takes that the GPUs fit (it said 'a smaller --tp-size': SmolLM2's 2, which convert refuses)."""
    from ..layout import convert_tp_sizes
    from ..shard import resplit

    tp_size = checkpoint.config.tp_size
    if device.startswith("cuda") and torch.cuda.device_count() < tp_size:
        count = torch.cuda.device_count()
        fits = [t for t in convert_tp_sizes(checkpoint.raw) if t <= count]
        raise ConfigError(f"{checkpoint} is a tp={tp_size} checkpoint but {counted(count, 'CUDA device')} "
                          f"{are(count)} visible: run on {tp_size} GPUs"
                          f"{resplit(fits, tp_size, 'convert again with --tp-size')}")


def check_rerunnable_main(tp_size: int) -> None:
    """Refuse, before any rank starts, a calling program the spawned ranks cannot run again: one read from standard
    input (`python -`, a heredoc), whose __main__.__file__ '<stdin>' names no file. Each rank failed to open it, and
    the ranks' failure then read as a script without a main guard. A notebook and `python -c` have no file, and their
    ranks run nothing again."""
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if getattr(main, "__spec__", None) is not None or path is None:  # python -m: run again by its module name
        return
    if not os.path.isfile(os.path.join(multiprocessing.process.ORIGINAL_DIR or "", path)):
        raise ConfigError(f"a tp={tp_size} checkpoint runs in {tp_size} spawned processes, which run the calling "
                          f"program again from its file, and {path!r} is none (a program read from standard input): "
                          f"save it to a file and run that, or pass it with python -c")


def rank_device(device: str, tp_rank: int) -> str:
    """Where a rank's shard lives: GPU r for rank r on CUDA."""
    return f"cuda:{tp_rank}" if device.startswith("cuda") else device


def die_with_parent(parent: int) -> None:
    """Linux: this process gets SIGKILL when the thread of `parent` (its pid) that started it ends, however it ends
    (a kill -9 too), rather than run on, holding its memory or GPU, for a parent that will never read its answer;
    elsewhere it ends when its pipe or collective does. A parent already gone: exits now."""
    try:
        _own_process().prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux
        return
    if os.getppid() != parent:  # it died before the prctl: no signal will come
        os._exit(1)


@contextlib.contextmanager
def children_ignore_sigint():
    """Processes started meanwhile begin with SIGINT ignored (an ignored signal is inherited through exec, and Python
    then installs no KeyboardInterrupt handler): a Ctrl-C that reaches the whole process group while a rank imports
    torch printed that rank's KeyboardInterrupt traceback. The rank takes SIGINT back once started (`_worker`). This
    thread blocks SIGINT meanwhile, so that a Ctrl-C it takes is held for it; one the process's other threads take
    (the TCPStore's, torch's) is dropped, being ignored: a Ctrl-C in the milliseconds of starting the ranks is lost
    (press it again). Main thread only (the only one that may set a handler) with a handler set from Python; elsewhere
    nothing changes. Where signals cannot be blocked (Windows: no pthread_sigmask) a Ctrl-C meanwhile is lost too."""
    previous = signal.getsignal(signal.SIGINT)
    if threading.current_thread() is not threading.main_thread() or previous is None:
        yield
        return
    # each call below may raise a KeyboardInterrupt that came meanwhile (Python checks for signals as it returns):
    # whatever was changed by then is restored
    blockable = hasattr(signal, "pthread_sigmask")
    was_blocked = not blockable or signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, [])
    try:
        if blockable:
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        yield
    finally:
        try:
            signal.signal(signal.SIGINT, previous)
        finally:
            if not was_blocked:  # a Ctrl-C that came meanwhile: KeyboardInterrupt now
                signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


_STYLES = {logging.PercentStyle: "%", logging.StrFormatStyle: "{", logging.StringTemplateStyle: "$"}


def parent_logging() -> tuple | None:
    """What a spawned rank needs to log as this process does (it starts with logging unconfigured, so the CLI's
    `-v` and line format never reached it): the root logger's level and the format of its handler writing to stderr
    or stdout (logging.basicConfig's, the CLI's), as (level, fmt, datefmt, style, stream name). None where there is
    none: a library caller who configured no logging gets nothing more from the ranks either."""
    root = logging.getLogger()
    for handler in root.handlers:
        stream = getattr(handler, "stream", None)
        if isinstance(handler, logging.StreamHandler) and stream is not None and stream in (sys.stderr, sys.stdout):
            f = handler.formatter or logging.Formatter()
            return (root.level, f._fmt, f.datefmt, _STYLES.get(type(f._style), "%"),
                    "stdout" if stream is sys.stdout else "stderr")
    return None


def apply_logging(setup: tuple | None) -> None:
    """In a spawned rank: log as the parent did (parent_logging's setup); nothing for None."""
    if setup is not None:
        level, fmt, datefmt, style, stream = setup
        logging.basicConfig(level=level, format=fmt, datefmt=datefmt, style=style, stream=getattr(sys, stream))


def _worker(tp_rank: int, tp_size: int, port: int, device: str, fn, args, result_path: str, parent: int,
            logs: tuple | None = None) -> None:
    Path(started_mark(result_path, tp_rank)).touch()  # first: a rank that fails from here on ran its script's guard
    apply_logging(logs)  # the CLI's -v and line format
    die_with_parent(parent)
    # SIGINT's default action from now on: a Ctrl-C to the process group ends this rank at once, even inside a
    # collective (launch stops the others, and says interrupted); one sent to this rank alone is a PeerError there
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    try:
        group = join(tp_rank, tp_size, port, device)
        try:
            try:
                result = ("ok", fn(group, *args))
            except RedrafterError as e:  # the user's mistake (or this rank's own file): hand it to the parent as is
                result = ("error", e)
            if tp_rank == 0 or result[0] == "error":  # before the group ends: the peers fail on its end
                keep_result(result_path, tp_rank, result)
        finally:
            dist.destroy_process_group()
    except Exception:  # a bug here, or a collective failing as another rank ended: launch tells which
        keep_result(result_path, tp_rank, ("crash", traceback.format_exc()))
        os._exit(1)
    if result[0] == "error":  # a failed exit: launch ends the other ranks, which an NCCL collective would hold
        os._exit(1)           # for its whole timeout (gloo's fails as this process's sockets close)


def results_dir() -> str:
    """A new folder in the temporary directory for the ranks' results (keep_result),
    `.redrafter-tp-ns{pid namespace}.partial-{pid}-*`, which the caller removes. A run killed by SIGKILL (or the OOM
    killer) cannot remove its own, so the folders of processes that are gone are removed first, as output's sweep
    removes a killed run's partial outputs (by process id: another live run's stay; on Windows none is removed).
    Only those of this pid namespace: containers sharing the temporary directory have namespaces of their own, where
    another's live run has a pid that names no process, or another one."""
    from ..output import partial_dir, remove_stale_partials

    # no such path is made: the folders are named after it
    mark = Path(tempfile.gettempdir()) / f"redrafter-tp{_pid_namespace()}"
    remove_stale_partials(mark)
    return str(partial_dir(mark))


def _pid_namespace() -> str:
    """`-ns{id}` for this process's pid namespace (Linux: the inode of /proc/self/ns/pid); '' where none is told."""
    try:
        return f"-ns{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return ""


def keep_result(result_path: str, tp_rank: int, result: tuple) -> None:
    """Write a rank's ("ok", value) or ("error", RedrafterError) where first_error (in the parent) reads it."""
    with open(f"{result_path}{tp_rank}", "wb") as f:
        pickle.dump(result, f)


def started_mark(result_path: str, tp_rank: int) -> str:
    """The empty file a rank makes as `_worker` begins: one that exited 1 without it failed in multiprocessing's
    bootstrap (a script without a main guard), one with it after it started (SystemExit in fn, a full disk)."""
    return f"{result_path}{tp_rank}.started"


def read_result(result_path: str, tp_rank: int) -> tuple | None:
    """What a rank wrote (keep_result), or None: nothing, or cut short by a kill."""
    with contextlib.suppress(OSError, EOFError, pickle.UnpicklingError):
        with open(f"{result_path}{tp_rank}", "rb") as f:
            return pickle.load(f)
    return None


def first_error(result_path: str, tp_size: int, status: str = "error"):
    """The RedrafterError of the lowest rank that wrote one (keep_result); status="crash": the traceback text of the
    lowest rank that failed otherwise."""
    for r in range(tp_size):
        result = read_result(result_path, r)
        if result is not None and result[0] == status:
            return result[1]
    return None


INTERRUPTS = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT")
# why a rank that a signal ended was sent it, and what to do, by signal (others: a crash in native code)
SIGNAL_HINTS = {"SIGKILL": "(the out-of-memory killer?): free memory, or decode fewer prompts at once"} | {
    name: "sent to that process alone: the other ranks cannot go on without it; stop a run with Ctrl-C, or a signal "
          "to the process that started the ranks" for name in INTERRUPTS}
CRASH_HINT = "(a crash in native code?): run again, and report it with the command if it happens again"


def rank_ended(tp_rank: int, exitcode: int) -> PeerError:
    """The one-line error of a rank that a signal ended (exit code -signal)."""
    try:
        name = signal.Signals(-exitcode).name
    except ValueError:
        name = f"signal {-exitcode}"
    return PeerError(f"tp rank {tp_rank} was killed by {name} {SIGNAL_HINTS.get(name, CRASH_HINT)}")


def _wait_for_failure(procs: list) -> dict[int, int]:
    """Wait until every rank has ended: {} when all exited 0, or as soon as one failed, {rank: exit code} of those
    ended by then (the first to fail is the cause; the others may be failing on its end)."""
    running = {p.sentinel: p for p in procs}
    while running:  # in 1 s slices: Python runs a Ctrl-C's handler in the main thread once it runs Python again; one
        # another thread took (the TCPStore's, torch's) left an untimed wait asleep until the ranks ended
        for sentinel in wait(list(running), timeout=1.0):
            running.pop(sentinel).join()
        failed = {r: p.exitcode for r, p in enumerate(procs) if p.exitcode not in (None, 0)}
        if failed:
            return failed
    return {}


def _end(procs: list) -> None:
    """Kill the ranks still running (they would wait in a collective for their peers) and reap them all."""
    for p in procs:
        if p.pid is not None and p.exitcode is None:
            p.kill()
    for p in procs:
        if p.pid is not None:
            p.join(timeout=30)


def _failure(result_path: str, tp_size: int, failed: dict[int, int]) -> Exception:
    """What to raise for ranks that failed: a rank's RedrafterError, a rank a signal ended (PeerError), a rank that
    failed before it started (PeerError: a script without a main guard, run again by each spawned rank; no
    started_mark), or a rank's own failure with its traceback (a bug), or its exit code alone."""
    if (error := first_error(result_path, tp_size)) is not None:
        return error
    for r, code in sorted(failed.items()):
        if code < 0:
            return rank_ended(r, code)
    if (trace := first_error(result_path, tp_size, "crash")) is not None:
        return RuntimeError(f"a tp rank failed:\n{trace}")
    r, code = min(failed.items())
    # no record and no started_mark: it failed before _worker ran, in multiprocessing's bootstrap
    if code == 1 and not os.path.exists(started_mark(result_path, r)):
        return PeerError(f"tp rank {r} exited with code 1 before it started (its error above): a spawned rank runs "
                         f"the script that started it again, so a script needs its generate_tp call under "
                         f'`if __name__ == "__main__":`')
    return RuntimeError(f"tp rank {r} exited with code {code}")


def launch(fn, tp_size: int, *args, device: str = "cpu"):
    """Run `fn(group, *args)` in tp_size spawned processes; return rank 0's result, or re-raise the RedrafterError of
    the lowest rank that raised one (a rank killed by a signal: PeerError). `fn` must be a module-level function;
    its result is pickled through a temporary file. KeyboardInterrupt (Ctrl-C, SIGTERM through the CLI) kills every
    rank at once and is raised; so does any other exception here."""
    check_rerunnable_main(tp_size)
    ctx = multiprocessing.get_context("spawn")
    tmp = results_dir()
    try:
        path = os.path.join(tmp, "result")
        store = meeting_store()  # held here until every rank has ended
        logs = parent_logging()
        procs = [ctx.Process(target=_worker, args=(r, tp_size, store.port, device, fn, args, path, os.getpid(), logs),
                             daemon=True, name=f"redrafter-tp-rank{r}") for r in range(tp_size)]
        try:
            with children_ignore_sigint():
                for p in procs:
                    p.start()
            failed = _wait_for_failure(procs)
        finally:
            _end(procs)
        if failed:
            raise _failure(path, tp_size, failed)
        status, value = read_result(path, 0)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if status == "error":
        raise value
    return value
