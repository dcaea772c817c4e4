"""Cache folders that runs sharing the training cache write into: the passes that take hours for a large base
(features' teacher-forced hidden states, objective's soft targets), written chunk by chunk, and distill's answers.

A chunked pass keeps one safetensors file per chunk (`chunk_name`), written whole as soon as it is done, so an
interrupted pass goes on after its last whole chunk when rerun; each chunk holds the indices of its rows (`rows`), which
`read_chunk` checks against those expected, with what computed it in its metadata (`computed_on`).

A partial file is named by the id of the process writing it and a random part (output.atomic_file); the id says nothing
on another host (a torchrun rank on another node sharing the cache): a run writing into a folder holds the folder's `WRITING` lock shared
(`writing_into`), and the partials killed runs left are swept only from folders whose lock can be taken exclusively,
where no run on any host writes.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
from pathlib import Path
from typing import Callable, Iterable, Iterator

import torch

from ..errors import CorruptFileError, TensorError
from ..io import all_finite, read_safetensors_and_metadata, write_safetensors_stable
from ..locks import lock_shared, try_lock_exclusive
from ..output import atomic_file, sweep_partials
from .config import cpu_has_native_bf16

log = logging.getLogger(__name__)

WRITING = ".writing.lock"  # in a folder runs write into: held shared while a run writes there


def chunk_name(i: int, n: int) -> str:
    return f"{i:05d}-of-{n:05d}.safetensors"


def read_chunk(path: Path, rows: torch.Tensor,
               computed_as: dict[str, str]) -> tuple[dict[str, torch.Tensor], dict[str, str]] | None:
    """A cached chunk's tensors (`rows` and one row of each other tensor per row) and what its metadata records of the
    run that wrote it (its `device` among them), read in one opening; or None (said) when it is not the chunk expected
    (another plan's), unreadable, holds inf or NaN (cached before a base computing them was refused: reused, the first
    step's loss was NaN and the error blamed --lr; computed again, a broken base is named with its fix), or records in
    its metadata that it was computed otherwise than `computed_as` says (hidden states of another dtype). A chunk
    recording nothing of a key (written before it was recorded) is reused."""
    try:
        saved, recorded = read_safetensors_and_metadata(path, fix="computing it again")
    except TensorError as e:
        log.warning("%s", e)
        return None
    if not torch.equal(saved.get("rows", torch.empty(0)), rows) or len(saved) < 2 or \
            any(t.shape[:1] != (len(rows),) for t in saved.values()):
        log.warning("cached chunk %s is not that of these rows: computing it again", path)
        return None
    if not all(all_finite(t) for t in saved.values()):
        log.warning("cached chunk %s holds inf or NaN: computing it again", path)
        return None
    other = {key: recorded[key] for key, value in computed_as.items() if recorded.get(key, value) != value}
    if other:
        log.warning("cached chunk %s was computed with %s, this run computes with %s: computing it again", path,
                    _said(other), _said({key: computed_as[key] for key in other}))
        return None
    return saved, recorded


def remove_broken(path: Path, error: TensorError) -> None:
    """Remove the cache file `path` when `error`, reading it, says its bytes are broken (CorruptFileError: cut short by
    a copy broken off or a disk filled up on another host, bit rot): no run can read it, and a run finding it too finds
    it gone or removes it too. One this process could not open (another user's, an I/O error of this host) is left:
    another run may be reading it."""
    if isinstance(error, CorruptFileError):
        with contextlib.suppress(OSError):  # another user's in a sticky folder, only theirs to remove: left
            path.unlink()


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def computed_on(device: torch.device | str, dtype: torch.dtype | None = None) -> dict[str, str]:
    """What a cache entry records of how it was computed, beside its key: the kind of device (all a version before
    session 46 recorded, and read), the device's description (describe_device) and the dtype, when given."""
    device = torch.device(device)
    said = {"device": device.type, "device_name": describe_device(device)}
    return said if dtype is None else {**said, "dtype": dtype_name(dtype)}


def describe_device(device: torch.device) -> str:
    """The device as far as its rounding goes: a GPU's name and compute capability (an H100's bfloat16 results are
    not an A100's), a CPU's architecture and whether it multiplies bfloat16 natively (oneDNN emulates it otherwise,
    rounding otherwise); another kind of device, its kind."""
    if device.type == "cuda":
        index = torch.cuda.current_device() if device.index is None else device.index
        major, minor = torch.cuda.get_device_capability(index)
        return f"cuda {torch.cuda.get_device_name(index)} (compute capability {major}.{minor})"
    if device.type == "cpu":
        return f"cpu {platform.machine()} {'with' if cpu_has_native_bf16() else 'without'} native bfloat16"
    return device.type


def _other_device(recorded: dict[str, str], here: dict[str, str]) -> str | None:
    """The device `recorded` (a cache entry's metadata) names, when it is not `here` (computed_on's): its description,
    or its kind alone for an entry recording no description (before session 46) of another kind; None when it is the
    same, or unknown."""
    if "device_name" in recorded:
        return recorded["device_name"] if recorded["device_name"] != here["device_name"] else None
    kind = recorded.get("device", here["device"])
    return kind if kind != here["device"] else None


def warn_computed_elsewhere(what: str, reused: Iterable[tuple[Path, dict[str, str]]], here: dict[str, str]) -> None:
    """One warning when cached `what` reused from `reused` (each a folder or file and what it records of the device
    that computed it) were computed on another device than `here` (computed_on's): reused all the same (a pass made on
    a GPU would take hours or days again on a CPU, and the devices differ in rounding only), naming both devices and
    what to delete to compute them all here."""
    elsewhere = {(place, device) for place, recorded in reused if (device := _other_device(recorded, here))}
    if elsewhere:
        name = here["device_name"]
        log.warning("reusing cached %s computed on %s, not %s: devices round differently, so they are not exactly "
                    "those of one pass on %s (delete %s to compute them all here)", what,
                    " and ".join(sorted({device for _, device in elsewhere})), name, name,
                    " and ".join(sorted({str(place) for place, _ in elsewhere})))


def _said(values: dict[str, str]) -> str:
    return ", ".join(f"{key} {value}" for key, value in values.items())


def stamped(metadata: dict[str, str]) -> dict[str, str]:
    """A cache file's metadata with the version of this package that wrote it (entries written before say none; none
    is compared: a later version reads them as its own)."""
    from .. import __version__

    return {**metadata, "version": __version__}


def write_chunk(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """A chunk written whole under a name of this run's own (runs sharing the cache once wrote one `.partial`),
    renamed to `path` once done, its metadata `stamped`. Partials of `path` are left: another host's run may be writing
    one (`writing_into` swept the folder's dead ones)."""
    with atomic_file(path, sweep=False) as tmp:
        write_safetensors_stable(tmp, tensors, stamped(metadata))


def _lock(folder: Path) -> int:
    return os.open(folder / WRITING, os.O_RDWR | os.O_CREAT, 0o666)  # read-write: NFS locks flock() as fcntl()


@contextlib.contextmanager
def writing_into(folder: Path) -> Iterator[None]:
    """Hold `folder`'s lock shared while this run writes into it, after sweeping the partials killed runs left there if
    no run (on any host) writes there (`sweep_idle`)."""
    folder.mkdir(parents=True, exist_ok=True)
    sweep_idle(folder)
    fd = None
    try:  # the descriptor closed on an interrupt while waiting for the lock too
        with contextlib.suppress(OSError):  # another user's lock file, read-only to us: nothing held
            fd = _lock(folder)
            lock_shared(fd)  # a file system without locks: no sweep can take it (`sweep_idle`)
        yield
    finally:
        if fd is not None:
            os.close(fd)


def sweep_idle(folder: Path, also: Callable[[Path], None] | None = None) -> None:
    """The partials killed runs left in `folder`, and what `also(folder)` removes (what only an idle folder can tell
    apart from a live run's), unless a run (on any host) is writing into it."""
    try:
        fd = _lock(folder)
    except OSError:
        return
    try:
        try_lock_exclusive(fd)
    except OSError:  # held (BlockingIOError), or a file system without locks: whether in use is unknown
        return
    else:
        sweep_partials(folder, "*")
        if also:
            also(folder)
    finally:
        os.close(fd)


@contextlib.contextmanager
def writing_pass(folder: Path) -> Iterator[None]:
    """writing_into `folder`, a chunked pass's `KIND-...` folder in the cache, sweeping the partials killed runs left
    in every other `KIND-*` folder no run writes into (the run after an out-of-memory kill usually has fewer examples,
    another key) and in the cache itself (the single `KIND-*.safetensors` files of earlier versions)."""
    kind = folder.name.split("-", 1)[0]
    with writing_into(folder):
        sweep_partials(folder.parent, f"{kind}-*.safetensors")
        for other in folder.parent.glob(f"{kind}-*"):
            if other.is_dir() and other != folder:
                sweep_idle(other)
        yield
