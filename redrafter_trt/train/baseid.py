"""What identifies a base for train's caches, --resume and the quickstart's reuse: the contents of its config.json,
of its weight files and of its tokenizer and generation config, so that a base copied or moved to another disk (new
file times) is the same base, and one edited in place (even to the same size and time) another.

Each weight file is read whole once (sha256): a memo in the cache folder (`bases/digests.json`) keeps each file's
digest under its path and stat (size, modification and change times, inode, device), so that a later run reads again
only a file that changed. Runs identifying bases in one cache folder take turns (`bases/digests.lock`): torchrun's
ranks read a base once, not once each. Versions up to 0.1.0 identified a base by its weight files' sizes and times
(`stat_id`): a cache folder's answers under that id of a base still as it was are adopted under its new id."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..locks import lock_exclusive
from ..output import write_text_atomic
from .cache import REGISTRY, adopt

log = logging.getLogger(__name__)

# chat_template.jinja: where transformers 5 (and 4.43 on) saves the chat template, no longer in tokenizer_config.json
TOKENIZER_FILES = ("generation_config.json", "tokenizer_config.json", "tokenizer.json", "special_tokens_map.json",
                   "chat_template.jinja", "chat_template.json")
# what transformers builds the tokenizer from where a folder has no tokenizer.json (SentencePiece, byte-level BPE,
# Mistral's formats); with one, they are not read, and left out of the key (caches keyed before stay valid)
VOCAB_FILES = ("tokenizer.model", "vocab.json", "merges.txt", "added_tokens.json", "tekken.json", "tokenizer.model.v*")
MEMO, LOCK = "digests.json", "digests.lock"  # in the cache folder's `bases/` (cache.REGISTRY)
BLOCK = 16 << 20
BAR_FROM = 1 << 30  # bytes to read from which a progress bar shows
READERS = 8  # weight files read at once, at most one a core
# this process's digests, as the memo keeps them: a file is read once a process where no memo can be kept (no cache
# folder yet: the first run makes it after the base is identified; one that cannot be written)
_SEEN: dict[str, list] = {}


def base_id(base: Path, cache_dir: Path | None = None) -> str:
    """The base's id (16 hex digits): a digest of its config, its weight files' contents (`weight_digests`) and its
    tokenizer files' (the stop tokens that end a distilled answer, the chat template; without a tokenizer.json, the
    vocabulary files the tokenizer is built from). With `cache_dir`, an existing folder (none is made here: a refused
    run leaves none), the weights' digests are memoized there, and the cache's entries under the base's `stat_id`
    are adopted (cache.adopt)."""
    base = Path(base)
    fd = None if cache_dir is None else _lock(Path(cache_dir))
    if fd is None:
        return _digest(base, weight_digests(_weights(base)))
    try:
        with contextlib.suppress(OSError):  # a file system without locks: each run reads for itself
            lock_exclusive(fd)
        ident = _digest(base, weight_digests(_weights(base), Path(cache_dir) / REGISTRY / MEMO))
        adopt(Path(cache_dir), base, stat_id(base), ident)
    finally:
        os.close(fd)
    return ident


def _lock(cache_dir: Path) -> int | None:
    """The memo's lock file in the cache folder's REGISTRY, opened (the REGISTRY made); None where the cache folder
    does not exist yet or cannot be written."""
    if not cache_dir.is_dir():
        return None
    folder = cache_dir / REGISTRY
    try:
        folder.mkdir(exist_ok=True)
        return os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
        _unremembered(folder, e)
        return None


def _unremembered(where: Path, e: OSError) -> None:
    log.info("cannot remember the base's weight digests in %s (%s): they are read again next run", where, e)


def stat_id(base: Path) -> str:
    """The id versions up to 0.1.0 gave the base: its weight files' sizes and times (to the nanosecond) in place of
    their contents."""
    weights = [f"{f.name}:{st.st_size}:{st.st_mtime_ns}" for f in _weights(base) for st in [f.stat()]]
    return _digest(base, weights)


def _weights(base: Path) -> list[Path]:
    return sorted(base.glob("*.safetensors")) + sorted(base.glob("*.bin"))


def _digest(base: Path, weights: list[str]) -> str:
    parts = [(base / "config.json").read_text(), *weights]
    parts += [f"{name}:{hashlib.sha1((base / name).read_bytes()).hexdigest()}" for name in TOKENIZER_FILES
              if (base / name).is_file()]
    if not (base / "tokenizer.json").is_file():
        parts += [f"{f.name}:{hashlib.sha1(f.read_bytes()).hexdigest()}" for pattern in VOCAB_FILES
                  for f in sorted(base.glob(pattern)) if f.is_file()]
    return hashlib.sha1(json.dumps(parts).encode()).hexdigest()[:16]


def weight_digests(files: list[Path], memo: Path | None = None) -> list[str]:
    """"NAME:SHA256" of each file, those whose stat this process (`_SEEN`) or `memo` records read from there, the
    others read whole (with a progress bar past BAR_FROM bytes), READERS at once (hashlib lets go of the GIL; one core
    hashes under 1 GB/s, minutes for a 70B base's 140 GB) and recorded in both."""
    remembered = _read_memo(memo) if memo else {}
    known = {**_SEEN, **remembered}
    paths = {f: str(f.resolve()) for f in files}
    stats = {f: _stat(f) for f in files}
    todo = [f for f in files if known.get(paths[f], [None])[:-1] != stats[f]]
    if todo:
        total = sum(stats[f][0] for f in todo)
        log.info("reading %d weight file%s of %s (%.2f GiB) to identify it%s", len(todo), "s"[:len(todo) > 1],
                 todo[0].parent, total / 2 ** 30, f" (once: remembered in {memo})" if memo else "")
        with _bar(total) as bar, ThreadPoolExecutor(min(len(todo), os.cpu_count() or 1, READERS)) as pool:
            for f, digest in zip(todo, pool.map(lambda f: _sha256(f, bar.update), todo)):
                known[paths[f]] = [*stats[f], digest]
    entries = {paths[f]: known[paths[f]] for f in files}
    _SEEN.update(entries)
    if memo and any(remembered.get(path) != entry for path, entry in entries.items()):
        _write_memo(memo, {**remembered, **entries})
    return [f"{f.name}:{known[paths[f]][-1]}" for f in files]


def _stat(f: Path) -> list[int]:
    """What says a file is as it was when its digest was taken: a write or os.utime changes its change time too."""
    st = f.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev]


def _sha256(f: Path, advance) -> str:
    h = hashlib.sha256()
    with open(f, "rb") as stream:
        while block := stream.read(BLOCK):
            h.update(block)
            advance(len(block))
    return h.hexdigest()


def _bar(total: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc="identifying the base", unit="B", unit_scale=True, disable=total < BAR_FROM or None)


def _read_memo(memo: Path) -> dict[str, list]:
    """The memo's entries, {path: [*_stat, digest]}; {} when it is missing or unreadable (all read again)."""
    try:
        entries = json.loads(memo.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(entries, dict):
        return {}
    return {k: v for k, v in entries.items() if isinstance(v, list) and len(v) == 6 and isinstance(v[-1], str)}


def _write_memo(memo: Path, entries: dict[str, list]) -> None:
    """Written whole under another name, then renamed; a memo that cannot be written is not remembered, no error."""
    try:
        write_text_atomic(memo, json.dumps(entries, indent=0))
    except OSError as e:
        _unremembered(memo, e)
