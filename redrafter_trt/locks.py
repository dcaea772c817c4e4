"""Whole-file locks (flock) on descriptors, for the folders runs share (the training cache's): `lock_shared` while a
run uses something, `try_lock_exclusive` before removing what no run may be using, `lock_exclusive` to take turns
at a task done once for all (identifying a base); and `holding`, a lock file one run
holds while it writes something no other run may write at once (train's output and its state).

Where there are none they raise OSError, as on a file system without locks (some FUSE mounts), which the callers read
as "whether a run is using it is unknown": the run goes on, nothing is removed. So on Windows (no fcntl) training runs
and its cache is never pruned or swept of a killed run's chunks (delete them by hand: train recomputes what it needs).
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
from pathlib import Path
from typing import Iterator

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None


def _flock(fd: int, operation: str) -> None:
    if fcntl is None:
        raise OSError(errno.ENOTSUP, "no file locks on this platform (no fcntl)")
    fcntl.flock(fd, {"shared": fcntl.LOCK_SH, "exclusive": fcntl.LOCK_EX,
                     "exclusive now": fcntl.LOCK_EX | fcntl.LOCK_NB}[operation])


def lock_shared(fd: int) -> None:
    """Hold `fd`'s file shared (waits while a run holds it exclusively); OSError where there are no locks."""
    _flock(fd, "shared")


def lock_exclusive(fd: int) -> None:
    """Hold `fd`'s file exclusively (waits while another holds it); OSError where there are no locks."""
    _flock(fd, "exclusive")


def try_lock_exclusive(fd: int) -> None:
    """Hold `fd`'s file exclusively, now or never: BlockingIOError while a run holds it, OSError where there are no
    locks."""
    _flock(fd, "exclusive now")


class LockHeld(Exception):
    """Another process holds a `holding` lock file. holder: what it wrote there ("PID HOST"; "" if not yet)."""

    def __init__(self, path: Path, holder: str):
        super().__init__(f"{path} is held by {holder or 'another process'}")
        self.holder = holder


def holder_name(holder: str) -> str:
    """ "process PID" (on HOST, where another host wrote it) of a LockHeld's holder; "" if unknown."""
    pid, _, host = holder.partition(" ")
    if not pid.isdigit():
        return ""
    return f"process {pid}" + (f" on {host}" if host and host != socket.gethostname() else "")


@contextlib.contextmanager
def holding(path: Path) -> Iterator[None]:
    """Hold the lock file `path` exclusively for the block, now or never (LockHeld), with this process's id and host
    in it; removed after, with the folders made for it if they are empty. It is removed while still held: a run that
    opened it before, and locks it once it is let go, finds another file (or none) at `path` and opens that one.
    Where there are no locks (OSError), the block runs unlocked. A killed holder's lock goes with its process."""
    path = Path(path)
    made = [p for p in path.parents if not p.exists()]  # nearest first
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)  # read-write: NFS locks flock() as fcntl()
        try:
            try_lock_exclusive(fd)
        except BlockingIOError:
            os.close(fd)
            raise LockHeld(path, _read(path)) from None
        except OSError:
            os.close(fd)
            fd = None
            break
        if _same_file(fd, path):
            break
        os.close(fd)  # the file a run that let go of it removed: take the one now at `path`
    try:
        if fd is not None:
            os.ftruncate(fd, 0)  # a killed holder's words
            os.write(fd, f"{os.getpid()} {socket.gethostname()}".encode())
        yield
    finally:
        with contextlib.suppress(OSError):
            path.unlink()
        if fd is not None:
            os.close(fd)
        for folder in made:
            try:
                folder.rmdir()
            except OSError:  # something went in it
                break


def _same_file(fd: int, path: Path) -> bool:
    try:
        here, there = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (here.st_dev, here.st_ino) == (there.st_dev, there.st_ino)


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return ""
