"""The training cache (--cache-dir; default <cache root>/train): `distill-BASE-DTYPE/` folders of the base's answers
and their hidden states, `hidden-KEY.safetensors` (teacher-forced hidden states of reference answers) and
`teacher-KEY.safetensors` (soft targets). Everything in it is recomputed when missing, so deleting any of it is safe
between runs.

A distill folder lists the base folders it was made for (`bases.txt`). When every one of them has changed since (its
config, weights or tokenizer: another base id, so the folder can never be read again for them), a run on one of those
bases removes it once its own drafter is written, unless a run is using it (it holds `.lock` shared meanwhile).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Iterator

from ..output import disk_size

log = logging.getLogger(__name__)

BASES = "bases.txt"
LOCK = ".lock"
DISTILL_NAME = re.compile(r"distill-([0-9a-f]{16})-[a-z0-9]+")


@contextlib.contextmanager
def using(folder: Path, base: Path) -> Iterator[None]:
    """Mark distill `folder` as used by a run on `base` for the block: the base is listed in it, and a shared lock
    keeps `prune_superseded` from removing it meanwhile."""
    folder.mkdir(parents=True, exist_ok=True)
    fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        path = str(base.resolve())
        if path not in _bases(folder):  # one write() on O_APPEND: concurrent runs' lines never interleave
            bases = os.open(folder / BASES, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
            try:
                os.write(bases, (path + "\n").encode())
            finally:
                os.close(bases)
        yield
    finally:
        os.close(fd)  # releases the lock


def _bases(folder: Path) -> list[str]:
    try:
        return [line for line in (folder / BASES).read_text().splitlines() if line]
    except (OSError, UnicodeDecodeError):
        return []


def _superseded(folder: Path, base: str) -> bool:
    """Whether distill `folder` was made for `base` and every base it lists now has another id."""
    from .dataset import base_id

    m = DISTILL_NAME.fullmatch(folder.name)
    listed = _bases(folder)
    if not m or base not in listed:
        return False
    for path in map(Path, listed):
        try:
            if base_id(path) == m.group(1):
                return False
        except OSError:  # gone or unreadable (an unmounted disk): it may come back as it was
            return False
    return True


def prune_superseded(cache_dir: Path, base: Path, keep: Path) -> None:
    """Remove the distill folders of earlier versions of `base` (but `keep`) that no listed base can read any more and
    no run is using, each with a warning saying what it freed."""
    resolved = str(base.resolve())
    for folder in sorted(Path(cache_dir).glob("distill-*")):
        if folder == keep or not folder.is_dir() or not _superseded(folder, resolved):
            continue
        fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.info("kept %s, answers of an earlier version of %s: a run is using it", folder, base)
                continue
            size = disk_size(folder)
            shutil.rmtree(folder, ignore_errors=True)
        finally:
            os.close(fd)
        log.warning("removed %s, the answers of an earlier version of %s (its config, weights or tokenizer have "
                    "changed since): %.2f GiB freed", folder, base, size / 2 ** 30)


def summary(cache_dir: Path) -> str:
    """Where the cache is, how big, and how to free it: one line."""
    cache_dir = Path(cache_dir)
    entries = [p for pattern in ("distill-*", "hidden-*.safetensors", "teacher-*.safetensors")
               for p in cache_dir.glob(pattern)]
    size = sum(disk_size(p) for p in entries)
    return (f"training cache {cache_dir}: {size / 2 ** 30:.2f} GiB in {len(entries)} entries (answers, hidden states "
            f"and soft targets, reused by later runs on the same base and data; delete the folder, or entries in it, "
            f"to free the space: train recomputes what it needs)")
