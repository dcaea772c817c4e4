"""Tensor files in and out: a lazy reader over Hugging Face folders (single or sharded safetensors, or
`pytorch_model*.bin` loaded with `weights_only=True`), TensorRT-LLM rank files, and an atomic output folder
(written into a hidden sibling, renamed into place only when complete).
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import pickle
import shutil
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Iterable, Iterator

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .errors import ConfigError, TensorError, first_line, name_list

log = logging.getLogger(__name__)

PARTIAL_MARK = ".partial-"
# the partials this process made: one named with its id but not among them is a killed run's whose id came back (a
# container's entry point is process 1 on every run); names, not times, as a network file system's clock may differ
_MADE: set[str] = set()

TORCH_TO_ST = {torch.float16: "F16", torch.bfloat16: "BF16", torch.float32: "F32", torch.float64: "F64",
               torch.float8_e4m3fn: "F8_E4M3", torch.int8: "I8", torch.uint8: "U8", torch.int32: "I32",
               torch.int64: "I64", torch.bool: "BOOL"}
ST_TO_TORCH = {v: k for k, v in TORCH_TO_ST.items()}


def all_finite(t: torch.Tensor) -> bool:
    """No NaN or Inf: max |t| propagates both, and costs a fraction of `isfinite(t).all()` on half types. FP8
    (e4m3fn) has no Inf and one NaN pattern, S.1111.111, looked for in its bits."""
    if t.dtype == torch.float8_e4m3fn:
        return not bool(((t.view(torch.uint8) & 0x7F) == 0x7F).any())
    return not t.is_floating_point() or t.numel() == 0 or bool(torch.isfinite(t.abs().amax()))


def _open(path: Path):
    try:
        return safe_open(str(path), framework="pt")
    except (SafetensorError, OSError, ValueError) as e:
        raise TensorError(f"{path} is truncated or not a safetensors file ({e}): re-download or re-export it") from None


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    with _open(path) as f:
        try:
            return {k: f.get_tensor(k) for k in f.keys()}
        except (SafetensorError, OSError, ValueError) as e:
            raise TensorError(f"{path} is truncated or corrupted ({e}): re-download or re-export it") from None


def read_torch_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Load a pickled state dict without running code (`weights_only=True`)."""
    try:
        with warnings.catch_warnings():  # a garbage file's "Detected pickle protocol N" would precede our one line
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            # memory-mapped (only the rows a rank reads are paged in) unless the file predates torch's zip format
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as e:
        raise TensorError(f"{path} is a pickle that would run code or load non-tensor objects "
                          f"({first_line(e, 'unsafe pickle')}): re-save it as safetensors, or as a plain state dict "
                          f"of tensors") from None
    except (RuntimeError, EOFError, OSError, UnicodeDecodeError, ValueError) as e:
        raise TensorError(f"{path} is truncated or not a PyTorch file ({first_line(e, type(e).__name__)}): "
                          f"re-export it") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise TensorError(f"{path} does not hold a state dict of tensors: save `model.state_dict()` instead")
    return dict(obj)


@contextlib.contextmanager
def atomic_file(path: Path) -> Iterator[Path]:
    """Yield a hidden sibling to write; on success it is renamed to `path`, on any failure removed: an interrupted
    run never leaves half a file. What a killed run (kill -9, the OOM killer) left for `path` is removed first."""
    path = Path(path)
    sweep_partials(path.parent, glob.escape(path.name))
    tmp = path.with_name(f".{path.name}{PARTIAL_MARK}{os.getpid()}")
    _MADE.add(tmp.name)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: Path, text: str) -> None:
    with atomic_file(path) as tmp:
        tmp.write_text(text)


def write_safetensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """safetensors' save_file (0.8) creates owner-only files: they get the umask's usual mode, as every other file we
    write, so a drafter can be read by another user or container (a TensorRT-LLM image running as non-root)."""
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)
    os.chmod(path, 0o666 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class StreamingWriter:
    """Write a safetensors file tensor by tensor, holding one tensor in memory at a time.

    safetensors' own `save_file` needs every tensor at once; the converter knows every name, shape and dtype
    from its plan before reading data, so the header is written first and tensors follow in plan order.
    """

    def __init__(self, path: Path, specs: list[tuple[str, tuple[int, ...], torch.dtype]], metadata: dict[str, str]):
        header: dict = {"__metadata__": metadata}
        offset = 0
        self._expected = []
        for name, shape, dtype in specs:
            nbytes = torch.Size(shape).numel() * torch.empty((), dtype=dtype).element_size()
            header[name] = {"dtype": TORCH_TO_ST[dtype], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
            self._expected.append((name, tuple(shape), dtype))
            offset += nbytes
        raw = json.dumps(header, separators=(",", ":")).encode()
        raw += b" " * (-len(raw) % 8)
        self._file = open(path, "wb")
        self._file.write(len(raw).to_bytes(8, "little") + raw)
        self._next = 0

    def write(self, name: str, tensor: torch.Tensor) -> None:
        want = self._expected[self._next]
        if (name, tuple(tensor.shape), tensor.dtype) != want:
            raise TensorError(f"internal: wrote {name} {tuple(tensor.shape)} {tensor.dtype}, planned {want}")
        self._file.write(memoryview(tensor.contiguous().view(torch.uint8).numpy()))
        self._next += 1

    def __enter__(self) -> "StreamingWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self._file.close()
        if exc_type is None and self._next != len(self._expected):
            raise TensorError(f"internal: wrote {self._next} of {len(self._expected)} planned tensors")


class TensorSource:
    """Lazy, name-addressed view of a folder's tensors. `shape(name)` reads headers only; `get(name, dim, part,
    parts)` reads one shard's range from disk (safetensors `get_slice`)."""

    def __init__(self, files: dict[str, Path], eager: dict[str, torch.Tensor] | None = None):
        self._files = files  # name -> safetensors file
        self._eager = eager or {}
        self._handles: dict[Path, object] = {}

    @classmethod
    def from_hf_folder(cls, folder: Path) -> "TensorSource":
        index = folder / "model.safetensors.index.json"
        if index.exists():
            files = _index_files(index)
            held = {}
            for f in set(files.values()):
                with _open(f) as h:
                    held[f] = set(h.keys())
            astray = [name for name, f in files.items() if name not in held[f]]
            if astray:
                raise TensorError(f"{index.name} puts {name_list(astray)} in shards that do not hold them (the index "
                                  f"and its shards are from different downloads): re-download the model")
            return cls(files)
        # model.safetensors alone when present, as transformers reads it (beside it: a LoRA adapter_model.safetensors,
        # Mistral's consolidated.safetensors)
        single = folder / "model.safetensors"
        singles = [single] if single.exists() else sorted(folder.glob("*.safetensors"))
        if singles:
            return cls.from_files(singles)
        bin_index = folder / "pytorch_model.bin.index.json"
        bins = sorted(set(_index_files(bin_index).values())) if bin_index.exists() else \
            sorted(folder.glob("pytorch_model*.bin"))
        if bins:
            eager = {}
            for f in bins:
                eager.update(read_torch_state_dict(f))
            return cls({}, eager)
        raise ConfigError(f"{folder} holds no model.safetensors, sharded safetensors or pytorch_model*.bin: "
                          f"point --base at a Hugging Face model folder")

    @classmethod
    def from_files(cls, files: list[Path]) -> "TensorSource":
        out = {}
        for f in files:
            with _open(f) as h:
                out.update({k: f for k in h.keys()})
        return cls(out)

    def names(self) -> set[str]:
        return set(self._files) | set(self._eager)

    def _handle(self, path: Path):
        if path not in self._handles:
            self._handles[path] = _open(path).__enter__()
        return self._handles[path]

    def shape(self, name: str) -> tuple[int, ...]:
        if name in self._eager:
            return tuple(self._eager[name].shape)
        return tuple(self._handle(self._files[name]).get_slice(name).get_shape())

    def metadata(self, path: Path) -> dict[str, str]:
        """The `__metadata__` of one of the source's files ({} when it has none)."""
        return self._handle(path).metadata() or {}

    def dtype(self, name: str) -> str:
        """safetensors dtype string (F16, BF16, F32, F8_E4M3, ...)."""
        if name in self._eager:
            return TORCH_TO_ST[self._eager[name].dtype]
        return self._handle(self._files[name]).get_slice(name).get_dtype()

    def get(self, name: str, dim: int | None = None, start: int = 0, stop: int | None = None) -> torch.Tensor:
        """The whole tensor, or the range [start, stop) along `dim`, read from disk without the rest."""
        try:
            if name in self._eager:
                t = self._eager[name]
                return t if dim is None else t.narrow(dim, start, (stop if stop is not None else t.shape[dim]) - start)
            path = self._files[name]
            if dim is None:
                return self._handle(path).get_tensor(name)
            sl = self._handle(path).get_slice(name)
            index = [slice(None)] * len(sl.get_shape())
            index[dim] = slice(start, stop)
            return sl[tuple(index)]
        except (SafetensorError, OSError, ValueError) as e:
            raise TensorError(f"reading {name} failed ({e}): the file is truncated or corrupted, re-download it") from None

    def close(self) -> None:
        for h in self._handles.values():
            h.__exit__(None, None, None)
        self._handles.clear()


def _index_files(index: Path) -> dict[str, Path]:
    """A sharded checkpoint's index (`model.safetensors.index.json`, `pytorch_model.bin.index.json`): tensor name ->
    shard, every shard present."""
    try:
        weight_map = json.loads(index.read_text())["weight_map"]
    except (json.JSONDecodeError, KeyError, TypeError):
        weight_map = None
    if not isinstance(weight_map, dict) or not all(isinstance(f, str) for f in weight_map.values()):
        raise ConfigError(f"{index} is not a valid index of a sharded checkpoint: re-download the model")
    files = {name: index.parent / fname for name, fname in weight_map.items()}
    for f in sorted(set(files.values())):
        if not f.exists():
            raise TensorError(f"{f} is named in {index.name} but missing: re-download the model")
    return files


def writable_folder(folder: Path) -> str | None:
    """Why files cannot be created in `folder`, or None when they can: probed, not guessed (read-only mounts, /proc,
    permissions). A missing folder is probed at its nearest existing ancestor, and nothing is left behind: a
    refused run must not leave empty folders."""
    probe = Path(folder).absolute()  # `..` left to the OS, as it will read it
    while not probe.exists() and probe != probe.parent:
        if probe.is_symlink():
            return f"{probe} is a dangling symbolic link"
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is not a folder"
    try:  # resolved: Python 3.12's mkdtemp returns its folder with `link/..` removed by name, not as the OS went
        os.rmdir(tempfile.mkdtemp(prefix=".redrafter-probe-", dir=probe.resolve()))
    except OSError as e:
        return e.strerror or type(e).__name__
    return None


def named_path(path: Path | str) -> Path:
    """`path` with its parent resolved (symbolic links followed, as the OS will) and its own name kept (`.` and
    `..` resolved too): the folder an output will really be written as, named before it exists."""
    path = Path(path)
    return path.resolve() if path.name in ("", ".", "..") else path.parent.resolve() / path.name


def check_output_folder(dest: Path, force: bool, inputs: Iterable[Path | str] = (), option: str = "--output") -> None:
    """Refuse, before any work, an output folder that cannot be (re)written: an existing one without --force, a
    file, one that is or holds an input (replacing it would delete the input), or one in an unwritable place."""
    given, dest = Path(dest), named_path(dest)
    restore_replaced(dest)
    if dest.exists() and not dest.is_dir():
        raise ConfigError(f"{option} {dest} exists and is a file: pass a folder path")
    target = dest.resolve()
    for item in inputs:
        source = Path(item).resolve()
        if source == target or target in source.parents:
            raise ConfigError(f"{option} {dest} is (or holds) the input {item}: replacing it would delete the input, "
                              f"choose another {option}")
    if dest.exists() and not force:
        raise ConfigError(f"output folder {dest} already exists: pass --force to replace it, or choose another {option}")
    here = Path.cwd().resolve()
    if dest.exists() and (here == target or target in here.parents):
        raise ConfigError(f"{option} {dest} is (or holds) the current folder: replacing it would leave this shell in a "
                          f"deleted folder; run from elsewhere, or choose another {option}")
    foreign = dest.exists() and foreign_entry(dest)
    if foreign:
        raise ConfigError(f"{option} {dest} holds {foreign}, and it is not an earlier ReDrafter output: --force "
                          f"replaces only those and empty folders; choose another {option} or empty it yourself")
    why = writable_folder(given.parent)  # as typed: a dangling link on the way is refused, not followed
    if why:
        raise ConfigError(f"cannot write in {dest.parent} ({why}): choose another {option}")


def restore_replaced(dest: Path) -> None:
    """Put back the earlier output that a replace (`--force`) killed between its two renames had moved aside
    (`.{name}.partial-{pid}-*-old`, `dest` missing): that run never finished, so the earlier output is still the
    output, and the sweep would have deleted it."""
    if dest.exists() or dest.is_symlink() or not dest.parent.is_dir():
        return
    for old in sorted(dest.parent.glob(f".{glob.escape(dest.name)}{PARTIAL_MARK}*-old")):
        pid = old.name.rsplit(PARTIAL_MARK, 1)[1].split("-", 1)[0]
        if pid.isdigit() and _writing(old, int(pid)):
            continue  # a live run between its two renames
        with contextlib.suppress(OSError):
            old.rename(dest)
            log.warning("put back %s, which an interrupted run (process %s) was replacing", dest, pid)
            return


def foreign_entry(folder: Path) -> str | None:
    """None when `folder` is empty or an earlier output of this toolkit or of TensorRT-LLM's ReDrafter tools (its
    config.json has a redrafter-trt `producer`, or is a ReDrafter checkpoint, engine or Apple drafter config); else
    the name of one entry it holds, for the refusal (a mistyped --output must not delete a project)."""
    entries = sorted(p.name for p in folder.iterdir())
    if not entries:
        return None
    try:
        raw = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        raw = None
    if isinstance(raw, dict):
        from .drafter import MODEL_TYPE

        producer = raw.get("producer") if isinstance(raw.get("producer"), dict) else {}
        pretrained = raw.get("pretrained_config") if isinstance(raw.get("pretrained_config"), dict) else {}
        arch = str(raw.get("architecture") or pretrained.get("architecture") or "")
        if str(producer.get("name", "")).startswith("redrafter-trt") or arch.startswith("ReDrafterFor") \
                or raw.get("model_type") == MODEL_TYPE:
            return None
    return next((e for e in entries if e != "config.json"), entries[0])


def partial_prefix(dest: Path) -> str:
    """The hidden sibling name this process writes `dest` under: `.{name}.partial-{pid}-`."""
    return f".{Path(dest).name}{PARTIAL_MARK}{os.getpid()}-"


def partial_dir(dest: Path, tag: str = "") -> Path:
    """A new hidden folder `.{name}.partial-{pid}-{tag}*` beside `dest`, which the sweep leaves while this process
    runs."""
    tmp = Path(tempfile.mkdtemp(prefix=partial_prefix(dest) + tag, dir=Path(dest).parent.resolve()))
    _MADE.add(tmp.name)
    return tmp


@contextlib.contextmanager
def scratch_dir(dest: Path, tag: str) -> Iterator[Path]:
    """partial_dir for a run's intermediate files (convert's FP8 base), removed when done."""
    tmp = partial_dir(dest, tag)
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def remove_stale_partials(dest: Path) -> None:
    """Remove the `.{name}.partial-{pid}-*` folders of runs that are gone (killed); those of a live process,
    this one's FP8 scratch or a concurrent run's output, stay."""
    dest = Path(dest)
    sweep_partials(dest.parent, glob.escape(dest.name))


def sweep_partials(folder: Path, name_glob: str) -> None:
    """Remove the hidden partials `.{name}.partial-{pid}[-*]` (files or folders) in `folder`, for names matching
    `name_glob`, whose writer `pid` is no longer running on this host: a killed run's (kill -9, the OOM killer), which
    nothing else removes (an 8B base's cached hidden states: ~100 GB), or one named with this process's id that it did
    not make. A live process's (another torchrun rank, a concurrent run, this one) stays. Each removal is logged with
    the space it freed."""
    for stale in sorted(Path(folder).glob(f".{name_glob}{PARTIAL_MARK}*")):
        pid = stale.name.rsplit(PARTIAL_MARK, 1)[1].split("-", 1)[0]
        if pid.isdigit() and _writing(stale, int(pid)):
            continue
        size = _disk_size(stale)
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                stale.unlink()
        if not stale.exists():
            log.warning("removed %s, left by an interrupted run (process %s is gone): %.2f GiB freed", stale,
                        pid if pid.isdigit() else "unknown", size / 2 ** 30)


def _writing(partial: Path, pid: int) -> bool:
    """Whether process `pid`, named in `partial`, may still be writing it: it runs, and when it is this process,
    `partial` is one it made."""
    return _alive(pid) and (pid != os.getpid() or partial.name in _MADE)


def _disk_size(path: Path) -> int:
    try:
        if path.is_dir() and not path.is_symlink():
            return sum(f.lstat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())
        return path.lstat().st_size
    except OSError:
        return 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        pass
    return True


@contextlib.contextmanager
def atomic_output(dest: Path, force: bool, inputs: Iterable[Path | str] = ()) -> Iterator[Path]:
    """Yield a hidden sibling folder to write into; on success it replaces `dest`, on any failure it is removed.
    `check_output_folder` first (inputs: the folders and files read to make it).

    An interrupted run (even SIGKILL) leaves only `.{name}.partial-{pid}-*`, never a folder named `dest`;
    the next run removes it.
    """
    dest = named_path(dest)
    check_output_folder(dest, force, inputs)
    made = [p for p in dest.parents if not p.exists()]  # nearest first: removed again if the write fails
    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_partials(dest)
    tmp = partial_dir(dest)
    done = False
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it owner-only; a folder made by mkdir, as the files in it
        if dest.exists():
            # a partial's name, unique to this write: a run killed while removing it (an 8B checkpoint's) leaves it
            # for the next run's sweep, and a killed run's leftover of the same process id (a container's) is no
            # obstacle (the fixed `.NAME.old-PID` was kept forever, and made a later run with that id fail at its end)
            old = dest.with_name(f"{tmp.name}-old")
            dest.rename(old)
            try:
                tmp.rename(dest)
            except BaseException:
                old.rename(dest)
                raise
            gone = old.with_name(f"{tmp.name}-gone")  # no longer one restore_replaced puts back, even half deleted
            old.rename(gone)
            shutil.rmtree(gone, ignore_errors=True)
        else:
            tmp.rename(dest)
        done = True
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        for folder in made if not done else ():  # a failed write leaves no empty folders either
            try:
                folder.rmdir()
            except OSError:  # another run's output appeared in it
                break
