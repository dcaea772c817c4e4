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
import os
import pickle
import sys
import tempfile
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import ConfigError, PeerError, RedrafterError

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
    buffer then wrote into the answers `run` prints, or into `--output-json -`."""
    libc = ctypes.CDLL(None)
    sys.stdout.flush()
    libc.fflush(None)
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        yield
    finally:
        libc.fflush(None)
        os.dup2(saved, 1)
        os.close(saved)


def usable_cpus() -> int:
    """The CPUs this process may run on: its affinity mask where the OS has one (taskset, a container's cpuset, a
    batch scheduler's cores), as torch's default thread count (OpenMP's) follows it; os.cpu_count() counts the
    whole host's."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # macOS, Windows: no affinity mask
        return os.cpu_count() or 1


def rank_threads(tp_size: int) -> int:
    """The intra-op threads each of tp_size local ranks takes as it joins: a fair share of the CPUs it may use."""
    return max(1, usable_cpus() // tp_size)


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


def require_gpus(device: str, tp_size: int, checkpoint_dir) -> None:
    """A tp=N checkpoint on CUDA takes GPUs 0..N-1 (rank r on cuda:r): refuse before any process starts."""
    if device.startswith("cuda") and torch.cuda.device_count() < tp_size:
        raise ConfigError(f"{checkpoint_dir} is a tp={tp_size} checkpoint but {torch.cuda.device_count()} CUDA "
                          f"device(s) are visible: run on {tp_size} GPUs, or convert with a smaller --tp-size")


def rank_device(device: str, tp_rank: int) -> str:
    """Where a rank's shard lives: GPU r for rank r on CUDA."""
    return f"cuda:{tp_rank}" if device.startswith("cuda") else device


def _worker(tp_rank: int, tp_size: int, port: int, device: str, fn, args, result_path: str) -> None:
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
    if result[0] == "error":  # a failed exit: mp.spawn ends the other ranks, which an NCCL collective would hold
        sys.exit(1)             # for its whole timeout (gloo's fails as this process's sockets close)


def keep_result(result_path: str, tp_rank: int, result: tuple) -> None:
    """Write a rank's ("ok", value) or ("error", RedrafterError) where first_error (in the parent) reads it."""
    with open(f"{result_path}{tp_rank}", "wb") as f:
        pickle.dump(result, f)


def first_error(result_path: str, tp_size: int) -> RedrafterError | None:
    """The RedrafterError of the lowest rank that wrote one (keep_result)."""
    for r in range(tp_size):
        with contextlib.suppress(OSError, EOFError, pickle.UnpicklingError):  # none, or cut short by a kill
            with open(f"{result_path}{r}", "rb") as f:
                status, value = pickle.load(f)
            if status == "error":
                return value
    return None


def launch(fn, tp_size: int, *args, device: str = "cpu"):
    """Run `fn(group, *args)` in tp_size spawned processes; return rank 0's result, or re-raise the RedrafterError of
    the lowest rank that raised one (a rank killed by a signal: PeerError). `fn` must be a module-level function;
    its result is pickled through a temporary file."""
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory(prefix="redrafter-tp-") as tmp:
        path = os.path.join(tmp, "result")
        store = meeting_store()  # held here until every rank has ended
        try:
            mp.spawn(_worker, args=(tp_size, store.port, device, fn, args, path), nprocs=tp_size, join=True)
        except Exception as e:  # a rank that refused (a broken rank file of its own) ended the group: the others crashed
            if (error := first_error(path, tp_size)) is not None:
                raise error from None
            if isinstance(e, mp.ProcessExitedException) and e.signal_name:  # the kernel's OOM killer, a kill -9
                raise PeerError(f"tp rank {e.error_index} was killed by {e.signal_name} (the out-of-memory killer?): "
                                f"free memory, or decode fewer prompts at once") from None
            raise
        with open(path + "0", "rb") as f:
            status, value = pickle.load(f)
    if status == "error":
        raise value
    return value
