"""The training cache (--cache-dir; default <cache root>/train): `distill-BASE-DTYPE/` folders of the base's answers
and their hidden states, `hidden-BASE-DTYPE-KEY/` folders of teacher-forced hidden states of reference answers and
`teacher-BASE-DTYPE-KEY/` folders of soft targets, one file per chunk of the pass (chunks.py; single files before
sessions 44 and 45, still read: `hidden-KEY.safetensors`, `teacher-KEY.safetensors`).
Everything in it is recomputed when missing, so deleting any of it is safe between runs.

Each entry belongs to one base id (baseid.base_id: the contents of the base's config, weight files and tokenizer): a
folder names it, the files carry it in their safetensors metadata (`base_id`). `bases/ID.txt` lists the base folders
that used an id; a run holds `bases/ID.lock` shared while it reads and writes the id's entries. When every folder listed
for an id now has another id (re-saved, fixed: its entries can never be read again for them), a run on one of those
folders removes the id's entries once its own drafter is written, unless a run holds the lock. The answers cached
under the id versions up to 0.1.0 gave a base (baseid.stat_id) are adopted under its id when it is identified, before
any of this: the old id's other entries (hidden states, soft targets, keyed by it) are then pruned as superseded.
`bases/digests.json` is baseid's memo of weight files' digests.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from pathlib import Path
from typing import Iterator

from ..locks import lock_shared, try_lock_exclusive
from ..output import disk_size

log = logging.getLogger(__name__)

REGISTRY = "bases"
FILES = ("hidden-*.safetensors", "teacher-*.safetensors")
FOLDERS = ("distill-{}-*", "hidden-{}-*", "teacher-{}-*")  # an id's folders: answers, teacher-forced and soft chunks


def _lock(cache_dir: Path, ident: str) -> int:
    folder = Path(cache_dir) / REGISTRY
    folder.mkdir(parents=True, exist_ok=True)
    return os.open(folder / f"{ident}.lock", os.O_RDWR | os.O_CREAT, 0o666)


@contextlib.contextmanager
def using(cache_dir: Path, base: Path, ident: str) -> Iterator[None]:
    """Mark base id `ident`'s entries as in use by a run on `base` for the block: the base is listed for it, and a
    shared lock keeps `prune_superseded` from removing them meanwhile."""
    fd = _lock(cache_dir, ident)
    try:
        with contextlib.suppress(OSError):  # a file system without locks (some FUSE mounts): no prune can take it
            lock_shared(fd)
        path = str(base.resolve())
        listing = Path(cache_dir) / REGISTRY / f"{ident}.txt"
        if path not in _listed(listing):  # one write() on O_APPEND: concurrent runs' lines never interleave
            out = os.open(listing, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
            try:
                os.write(out, (path + "\n").encode())
            finally:
                os.close(out)
        yield
    finally:
        os.close(fd)  # releases the lock


def adopt(cache_dir: Path, base: Path, old: str, ident: str) -> None:
    """The answers cached under a base's id of versions up to 0.1.0 (`old`, baseid.stat_id: the base as it was when
    they were written), renamed to its id `ident`: hours of distilling, not done again for a new way of naming the
    same base. Only where `bases/OLD.txt` lists this base's folder: two bases of one config, tokenizer, sizes and
    times (a tar extract, normalised build times) had one old id, and the other's answers are not this one's. Left
    where a run holds the old id (one of an earlier version, using them) or `ident` has its own."""
    cache_dir = Path(cache_dir)
    folders = [p for p in cache_dir.glob(f"distill-{old}-*") if p.is_dir()] if old != ident else []
    if not folders or str(Path(base).resolve()) not in _listed(cache_dir / REGISTRY / f"{old}.txt"):
        return
    fd = _lock(cache_dir, old)
    try:
        try_lock_exclusive(fd)
        for folder in folders:
            to = cache_dir / folder.name.replace(old, ident, 1)
            if not to.exists():
                os.rename(folder, to)
                log.info("cached answers %s (named as versions up to 0.1.0 named the base) are now %s", folder, to)
    except OSError:  # in use, or a file system without locks; renamed meanwhile by another run: left as they are
        pass
    finally:
        os.close(fd)


def _listed(listing: Path) -> list[str]:
    try:
        return [line for line in listing.read_text().splitlines() if line]
    except (OSError, UnicodeDecodeError):
        return []


def _superseded(cache_dir: Path, listed: list[str], ident: str) -> bool:
    """Whether every base folder listed for `ident` now has another id (one gone or unreadable, an unmounted disk,
    may come back as it was: kept). Each identified in `cache_dir` (base_id): its answers under an old id adopted."""
    from .baseid import base_id

    try:
        return bool(listed) and all(base_id(Path(path), cache_dir) != ident for path in listed)
    except OSError:
        return False


def file_base_id(path: Path) -> str | None:
    """The base id a hidden-* / teacher-* file was written for (None: written before ids were recorded)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return (f.metadata() or {}).get("base_id")
    except Exception:  # a file being written, or torn: not ours to judge
        return None


def prune_superseded(cache_dir: Path, base: Path) -> None:
    """Remove the entries of earlier versions of `base` that no base folder listed for them can read any more and no
    run is using, each with a warning saying what it freed."""
    cache_dir, resolved = Path(cache_dir), str(base.resolve())
    for listing in sorted((cache_dir / REGISTRY).glob("*.txt")):
        ident, listed = listing.stem, _listed(listing)
        if resolved not in listed or not _superseded(cache_dir, listed, ident):
            continue
        fd = _lock(cache_dir, ident)
        try:
            try:
                try_lock_exclusive(fd)
            except OSError:  # held (BlockingIOError), or a file system without locks: whether in use is unknown
                log.info("kept the cached answers and hidden states of an earlier version of %s: a run may be using "
                         "them", base)
                continue
            entries = [p for pattern in FOLDERS for p in cache_dir.glob(pattern.format(ident)) if p.is_dir()]
            entries += [p for pattern in FILES for p in cache_dir.glob(pattern) if file_base_id(p) == ident]
            size = sum(disk_size(p) for p in entries)
            for p in entries:
                if p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)
            listing.unlink(missing_ok=True)  # the lock stays: a run waiting on it holds that file
        finally:
            os.close(fd)
        log.warning("removed %d cache entries of an earlier version of %s (its config, weights or tokenizer have "
                    "changed since) from %s: %.2f GiB freed", len(entries), base, cache_dir, size / 2 ** 30)


def summary(cache_dir: Path) -> str:
    """Where the cache is, how big, and how to free it: one line."""
    cache_dir = Path(cache_dir)
    entries = [p for pattern in (*(f.format("*") for f in FOLDERS), *FILES) for p in cache_dir.glob(pattern)]
    size = sum(disk_size(p) for p in entries)
    return (f"training cache {cache_dir}: {size / 2 ** 30:.2f} GiB in {len(entries)} entries (answers, hidden states "
            f"and soft targets, reused by later runs on the same base and data; delete the folder, or entries in it, "
            f"to free the space: train recomputes what it needs)")
