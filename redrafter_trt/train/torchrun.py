"""torchrun's ranks for training: joining their process group (and leaving it after the run), and collectives whose
gone peer rank is one line (a PeerError) instead of a gloo traceback on every other rank."""

from __future__ import annotations

import contextlib
import datetime
import os

import torch

from ..errors import PeerError
from ..runtime.tp import quiet_stdout

DIST_TIMEOUT = datetime.timedelta(hours=12)


def _dist(device: str) -> tuple[int, int]:
    """(rank, world) under torchrun, joining its process group: gloo for CPU ranks; for GPU ranks each on its
    LOCAL_RANK's GPU, NCCL for GPU tensors and gloo for the few CPU ones (the kept-vocabulary vote)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        cuda = device.startswith("cuda")
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        # ranks distil shards of different lengths for hours before their first collective: torch's 30-minute
        # default would end a run whose shards differ by more than that
        with quiet_stdout():
            torch.distributed.init_process_group("cpu:gloo,cuda:nccl" if cuda else "gloo", timeout=DIST_TIMEOUT)
    return (torch.distributed.get_rank() if world > 1 else 0), world


@contextlib.contextmanager
def process_group(device: str):
    """`_dist`'s (rank, world) for the block; a group joined here is destroyed after it. A rank that left gloo's
    group to the interpreter's exit was sometimes aborted there ("terminate called without an active exception",
    SIGABRT) after it had written everything. A failed GPU rank leaves its NCCL group as it is: destroying it can
    wait on peers that are themselves stuck in a collective (the failure is what ends the process)."""
    joined_here = not torch.distributed.is_initialized()
    failed = False
    try:
        yield _dist(device)
    except BaseException:
        failed = True
        raise
    finally:
        if joined_here and torch.distributed.is_initialized() and not (failed and device.startswith("cuda")):
            torch.distributed.destroy_process_group()


@contextlib.contextmanager
def collective():
    """A collective whose peer rank is gone (it failed on data only it saw, printing its one-line error, or was killed)
    raised gloo's 'Connection closed by peer' on every other rank, a 40-line traceback each: one line now. That rank
    may also have been interrupted alone (`kill`, a scheduler's SIGTERM), saying where it saved the state."""
    try:
        yield
    except RuntimeError as e:  # torch.distributed's DistError is one too
        raise PeerError(f"another torchrun rank stopped ({type(e).__name__} in a collective), so this one cannot go "
                        f"on: see that rank's message above (or torchrun's report of it): fix its error and rerun, or, "
                        f"if it was interrupted and saved the training state, rerun with --resume") from None


def all_reduce(t: torch.Tensor, op=None) -> None:
    """torch.distributed.all_reduce (sum unless `op`), in place, with a gone peer one line (`collective`)."""
    with collective():
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM if op is None else op)
