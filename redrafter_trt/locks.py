"""Whole-file locks (flock) on descriptors, for the folders runs share (the training cache's): `lock_shared` while a
run uses something, `try_lock_exclusive` before removing what no run may be using.

Where there are none they raise OSError, as on a file system without locks (some FUSE mounts), which the callers read
as "whether a run is using it is unknown": the run goes on, nothing is removed. So on Windows (no fcntl) training runs
and its cache is never pruned or swept of a killed run's chunks (delete them by hand: train recomputes what it needs).
"""

from __future__ import annotations

import errno

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None


def _flock(fd: int, exclusive: bool) -> None:
    if fcntl is None:
        raise OSError(errno.ENOTSUP, "no file locks on this platform (no fcntl)")
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB if exclusive else fcntl.LOCK_SH)


def lock_shared(fd: int) -> None:
    """Hold `fd`'s file shared (waits while a run holds it exclusively); OSError where there are no locks."""
    _flock(fd, exclusive=False)


def try_lock_exclusive(fd: int) -> None:
    """Hold `fd`'s file exclusively, now or never: BlockingIOError while a run holds it, OSError where there are no
    locks."""
    _flock(fd, exclusive=True)
