"""Tensor files: a lazy reader over Hugging Face folders (single or sharded safetensors, or `pytorch_model*.bin`
loaded with `weights_only=True`) and TensorRT-LLM rank files, and safetensors writers (a whole dict, or a rank file
streamed tensor by tensor). Writing them atomically, into a folder renamed into place when complete, is output.py's.
"""

from __future__ import annotations

import json
import os
import pickle
import pickletools
import re
import struct
import warnings
import zipfile
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .errors import (ConfigError, CorruptFileError, TensorError, dangling_link, first_line, json_loads, name_list,
                     read_text)
from .output import current_umask

TORCH_TO_ST = {torch.float16: "F16", torch.bfloat16: "BF16", torch.float32: "F32", torch.float64: "F64",
               torch.float8_e4m3fn: "F8_E4M3", torch.int8: "I8", torch.uint8: "U8", torch.int16: "I16",
               torch.uint16: "U16", torch.int32: "I32", torch.uint32: "U32", torch.int64: "I64", torch.uint64: "U64",
               torch.bool: "BOOL"}
ST_TO_TORCH = {v: k for k, v in TORCH_TO_ST.items()}


# The dtypes (safetensors' names) a Hugging Face model's or a drafter's weights may be read in, wherever they are read
# from (a safetensors header, a pytorch_model.bin, a drafter's model.pt): the floats this converter casts. Any other is
# refused by name: integers or booleans (a header that lies about a dtype: I32 for F32 takes the same bytes) would be
# cast from bit patterns, float8_e8m0 or complex values are another format's (or cannot be cast at all), and FP8
# (F8_E4M3, F8_E5M2) holds no scale there (a quantization_config, which would give them, is refused before): cast, its
# values would be off by the scale. FP8 is read only from a TensorRT-LLM checkpoint, with its scaling factors.
WEIGHT_DTYPES = ("F16", "BF16", "F32", "F64")


def dtype_name(dtype: torch.dtype) -> str:
    """safetensors' name of `dtype` (F16, I32), or torch's own (float8_e5m2, complex64) where TORCH_TO_ST has none."""
    return TORCH_TO_ST.get(dtype) or str(dtype).removeprefix("torch.")


def unread_weights(dtypes: dict[str, str]) -> str | None:
    """`NAME is F8_E5M2; NAME is I32, not a weight dtype this converter reads (...)` for the first weights (name ->
    dtype_name) outside WEIGHT_DTYPES, or None when it reads them all; the caller adds whose weights and the fix."""
    unread = [f"{k} is {d}" for k, d in sorted(dtypes.items()) if d not in WEIGHT_DTYPES]
    if not unread:
        return None
    fp8 = any(d.startswith(("F8_", "float8_")) for d in dtypes.values() if d not in WEIGHT_DTYPES)
    return (f"{'; '.join(unread[:3])}, not a weight dtype this converter reads ({', '.join(WEIGHT_DTYPES)}"
            f"{'; FP8 here has no scales, so its values would be off by them' if fp8 else ''})")


UNREAD_FIX = "re-download or re-export it as float16, bfloat16 or float32"  # the fix of unread_weights' refusal
# ... of a base's: an FP8 release (scaled or not) is no base; convert makes FP8 itself
UNREAD_BASE_FIX = f"{UNREAD_FIX} (an FP8 model: pass its unquantized release; convert --quantize fp8 makes FP8 itself)"


def all_finite(t: torch.Tensor) -> bool:
    """No NaN or Inf: the minimum and maximum, read in one pass without a copy of `t` (`t.abs()` made one: 2 GB for
    an 8B base's float32 embedding), propagate NaN and hold any Inf; a fraction of `isfinite(t).all()`'s cost. FP8
    (e4m3fn) has no Inf and one NaN pattern, S.1111.111, looked for in its bits."""
    if t.dtype == torch.float8_e4m3fn:
        return not bool(((t.view(torch.uint8) & 0x7F) == 0x7F).any())
    return not t.is_floating_point() or t.numel() == 0 or bool(torch.stack(torch.aminmax(t)).isfinite().all())


def finite_base_tensor(t: torch.Tensor, name: str, base: Path) -> torch.Tensor:
    """`t`, the base's tensor `name` read whole (the lm_head or embedding a drafter starts from), or a TensorError
    naming the base when it holds NaN or Inf: copied into a drafter, convert blamed the drafter; in training, the
    first loss was NaN and the error said to lower --lr."""
    if not all_finite(t):
        raise broken_base_tensor(name, base)
    return t


def broken_base_tensor(name: str, where: Path) -> TensorError:
    """The refusal of a Hugging Face base's tensor `name` holding NaN or Inf; `where`: the base, or its file."""
    return TensorError(f"base {where}: {name} holds NaN or Inf: the base's weights are broken; re-download it")


REEXPORT = "re-download or re-export it"  # the fix of a file that cannot be read, unless the caller knows another


def _open(path: Path, fix: str = REEXPORT):
    """safe_open(path); a file that cannot be read is a TensorError ending in `fix`, a CorruptFileError when its bytes
    are at fault (rather than this process's opening it)."""
    try:
        return safe_open(str(path), framework="pt")
    except OSError as e:
        raise TensorError(dangling_link(path) or f"{path} cannot be read ({_os_reason(path, e)}): {fix}") from None
    except (SafetensorError, ValueError) as e:
        raise CorruptFileError(lfs_pointer(path) or f"{path} is truncated or not a safetensors file ({e}): {fix}"
                               ) from None


def _os_reason(path: Path, error: OSError) -> str:
    """Why `path` cannot be opened, as the operating system says it ('Permission denied', 'Not a directory'):
    safetensors names every failed open 'No such file or directory: PATH', a folder 'No such device (os error 19)'.
    Python opens it again, only once safetensors has failed; `error` stands when Python can open it. A path holding a
    NUL byte is Python's ValueError, 'embedded null byte'."""
    try:
        with open(path, "rb"):
            return str(error)
    except OSError as e:
        return e.strerror or type(e).__name__
    except ValueError as e:
        return str(e)


def read_metadata(path: Path, fix: str = REEXPORT) -> dict[str, str]:
    """The metadata of a safetensors file's header ({} when it has none), its tensors left unread (what a cache file
    records of the run that wrote it)."""
    with _open(path, fix) as f:
        return f.metadata() or {}


def read_tensor(path: Path, name: str, fix: str = REEXPORT) -> torch.Tensor:
    """One tensor of a safetensors file, the others left unread."""
    with _open(path, fix) as f:
        try:
            return f.get_tensor(name)
        except (SafetensorError, OSError, ValueError) as e:
            raise TensorError(f"{path} is truncated or corrupted ({e}): {fix}") from None


def read_safetensors(path: Path, fix: str = REEXPORT) -> dict[str, torch.Tensor]:
    return read_safetensors_and_metadata(path, fix)[0]


def read_safetensors_and_metadata(path: Path, fix: str = REEXPORT) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """A safetensors file's tensors and the metadata of its header, read in one opening."""
    with _open(path, fix) as f:
        try:
            return {k: f.get_tensor(k) for k in f.keys()}, f.metadata() or {}
        except (SafetensorError, OSError, ValueError) as e:
            raise TensorError(f"{path} is truncated or corrupted ({e}): {fix}") from None


def read_torch_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Load a pickled state dict without running code (`weights_only=True`); its dtypes are checked where its
    weights are, as a safetensors file's (unread_weights). A file that is neither torch's zip nor a pickle (a Git LFS
    pointer, an HTML page, text) is refused by its first bytes: torch's unpickler called them a pickle that would run
    code, or failed in a KeyError or IndexError traceback."""
    try:
        with open(path, "rb") as f:
            head = f.read(64)
    except OSError as e:
        raise TensorError(dangling_link(path) or f"{path} cannot be read ({e.strerror or type(e).__name__}): "
                          f"{REEXPORT}") from None
    if refusal := not_a_torch_file(path, head):
        raise TensorError(refusal) from None
    try:
        with warnings.catch_warnings():  # a garbage file's "Detected pickle protocol N" would precede our one line
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            # memory-mapped (only the rows a rank reads are paged in) unless the file predates torch's zip format
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
    except pickle.UnpicklingError as e:
        if garbage := garbage_opcode(e, head):
            raise TensorError(f"{path} is truncated or not a PyTorch file ({garbage}): {TORCH_FILE_FIX}") from None
        raise TensorError(f"{unsafe_pickle(path, e)}: if you trust its source, load it with "
                          f"torch.load(weights_only=False) and save its tensors as safetensors") from None
    except (RuntimeError, EOFError, OSError, UnicodeDecodeError, ValueError, KeyError, IndexError, TypeError,
            AssertionError, struct.error, zipfile.BadZipFile) as e:  # garbage fails in all of these
        raise TensorError(f"{path} is truncated or not a PyTorch file ({first_line(e, type(e).__name__)}): "
                          f"{TORCH_FILE_FIX}") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise TensorError(f"{path} does not hold a state dict of tensors: save `model.state_dict()` instead")
    return dict(obj)


TORCH_FILE_FIX = "re-download it, or re-save its state dict with torch.save"  # a file torch.load cannot read
# torch.save's legacy (non-zip) format opens with a pickled magic number: protocol 2+ writes it after 0x80, protocol
# 1 as text (LONG)
LEGACY_MAGIC = b"L119547037146038801333356L"  # torch.serialization.MAGIC_NUMBER, 0x1950a86a20f9469cfc6c
LFS_POINTER = b"version https://git-lfs"  # how a Git LFS pointer file starts (a clone made without `git lfs`)


def lfs_pointer(path: Path) -> str | None:
    """The refusal of a weights file that is a Git LFS pointer, not the weights (`lfs_refusal`), or None (also when it
    cannot be read: the caller's own error stands)."""
    try:
        with open(path, "rb") as f:
            if f.read(len(LFS_POINTER)) != LFS_POINTER:
                return None
    except (OSError, ValueError):
        return None
    return lfs_refusal(path)


def lfs_refusal(path: Path) -> str:
    return (f"{path} is a Git LFS pointer, not the weights: run `git lfs pull` in its repository (or download the "
            f"file itself)")


def not_a_torch_file(path: Path, head: bytes) -> str | None:
    """The refusal of a file whose first bytes `head` are neither torch's zip format (`PK`) nor a pickle (protocol 2+
    starts with 0x80; torch.save's legacy format of protocol 1 with LEGACY_MAGIC), or None: a Git LFS pointer (a
    clone without `git lfs`), an HTML page (a download of a web page, not the file), text."""
    if head.startswith((b"PK", b"\x80", LEGACY_MAGIC)):
        return None
    if head.startswith(LFS_POINTER):
        return lfs_refusal(path)
    if not head:
        what = "it is empty"
    elif head.lstrip()[:1] == b"<" and b"html" in head.lower():
        what = "it is an HTML page"
    else:
        what = f"it starts with {head[:16]!r}"
    return f"{path} is not a PyTorch file ({what}): {TORCH_FILE_FIX}"


# protocol 0's opcodes that only its text mode writes: a pickle of protocol 2 or later (torch.save's) holds none
TEXT_OPCODES = {"INT", "LONG", "STRING", "UNICODE", "FLOAT", "GET", "PUT", "INST", "PERSID", "DICT", "LIST", "DUP"}


def garbage_opcode(error: pickle.UnpicklingError, head: bytes) -> str | None:
    """`byte N is no opcode of a binary pickle` when torch's unpickler refused, as an unsupported operand, a byte that
    no pickle holds, or a text opcode (`g`, GET) in a file that opens as a pickle of protocol 2 or later (`head`, its
    first bytes: 0x80 then the protocol): bytes after a pickle's first byte that are garbage, not a pickle that would
    run code. A zip's pickle may be of protocol 1 (`torch.save(pickle_protocol=1)`), whose text opcodes are its own.
    Else None."""
    found = re.search(r"Unsupported operand (\d+)", str(error))
    if not found:
        return None
    op = pickletools.code2op.get(chr(int(found[1])))
    binary = head[:1] == b"\x80" and len(head) > 1 and head[1] >= 2
    if op is not None and (op.name not in TEXT_OPCODES or not binary):
        return None
    return f"byte {found[1]} is no opcode of a binary pickle"


def unsafe_pickle(path: Path, error: pickle.UnpicklingError) -> str:
    """A refusal of a pickle torch.load(weights_only=True) refuses, less its fix (each caller's own)."""
    return f"{path} is a pickle that would run code or load non-tensor objects ({unsafe_pickle_reason(error)})"


def unsafe_pickle_reason(error: pickle.UnpicklingError) -> str:
    """What torch.load(weights_only=True) refused, in whole words: the global it names (torch 2.6+ says `Unsupported
    global: GLOBAL __main__.Evil ...` or `... unsupported GLOBAL posix.system whose module ...`), else its message's
    first line's first sentence (first_line). Its message runs to several paragraphs."""
    if found := re.search(r"\bGLOBAL ([\w.]+)", str(error)):
        return f"torch.load(weights_only=True) refuses its global {found[1]}"
    return f"torch.load(weights_only=True) refuses it: {first_line(error, 'unsafe pickle')}"


def write_safetensors(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> None:
    """safetensors' save_file (0.8) creates owner-only files: they get the umask's usual mode, as every other file we
    write, so a drafter can be read by another user or container (a TensorRT-LLM image running as non-root)."""
    try:
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)
    except SafetensorError as e:  # its failed write (a full disk) is no OSError, which the CLI says in one line
        if errno := re.search(r"\(os error (\d+)\)", str(e)):
            raise OSError(int(errno[1]), os.strerror(int(errno[1]))) from None
        raise
    os.chmod(path, 0o666 & ~current_umask())


def write_safetensors_stable(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """write_safetensors, the same bytes every time for the same tensors and metadata: save_file writes metadata of
    several keys in an order that differs from call to call, so a cache chunk computed twice differed."""
    with StreamingWriter(path, [(name, tuple(t.shape), t.dtype) for name, t in tensors.items()], metadata) as out:
        for name, t in tensors.items():
            out.write(name, t)


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
    parts)` reads one shard's range from disk (safetensors `get_slice`). fix: what a file that cannot be read asks
    of the user (None: a download's fix)."""

    def __init__(self, files: dict[str, Path], eager: dict[str, torch.Tensor] | None = None, fix: str | None = None,
                 held: dict[str, Path] | None = None):
        self._files = files  # name -> safetensors file
        self._eager = eager or {}
        self._held = held or {}  # a .bin's tensors (in `eager`) -> the .bin they were read from
        self._handles: dict[Path, object] = {}
        self._fix = fix

    @classmethod
    def from_hf_folder(cls, folder: Path) -> "TensorSource":
        """The weights transformers' from_pretrained loads: model.safetensors first, beside it a stale index is
        ignored (save_pretrained over a sharded download deletes the shards, not their index), then the sharded
        safetensors, then pytorch_model.bin, then its shards."""
        single = folder / "model.safetensors"
        index = folder / "model.safetensors.index.json"
        if index.exists() and not single.exists():
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
        # model.safetensors alone when present (beside it: a LoRA adapter_model.safetensors, Mistral's
        # consolidated.safetensors)
        singles = [single] if single.exists() else sorted(folder.glob("*.safetensors"))
        if singles:
            return cls.from_files(singles)
        single_bin, bin_index = folder / "pytorch_model.bin", folder / "pytorch_model.bin.index.json"
        if single_bin.exists():
            bins = [single_bin]
        elif bin_index.exists():
            bins = sorted(set(_index_files(bin_index).values()))
        else:
            bins = sorted(folder.glob("pytorch_model*.bin"))
        if bins:
            eager, held = {}, {}
            for f in bins:
                tensors = read_torch_state_dict(f)
                eager.update(tensors)
                held.update(dict.fromkeys(tensors, f))
            return cls({}, eager, held=held)
        raise ConfigError(f"{folder} holds no model.safetensors, sharded safetensors or pytorch_model*.bin: "
                          f"point --base at a Hugging Face model folder")

    @classmethod
    def from_files(cls, files: list[Path], fix: str | None = None) -> "TensorSource":
        out = {}
        for f in files:
            with _open(f, fix or REEXPORT) as h:
                out.update({k: f for k in h.keys()})
        return cls(out, fix=fix)

    def names(self) -> set[str]:
        return set(self._files) | set(self._eager)

    def _handle(self, path: Path):
        if path not in self._handles:
            self._handles[path] = _open(path, self._fix or REEXPORT).__enter__()
        return self._handles[path]

    def shape(self, name: str) -> tuple[int, ...]:
        if name in self._eager:
            return tuple(self._eager[name].shape)
        return tuple(self._handle(self._files[name]).get_slice(name).get_shape())

    def file(self, name: str) -> Path | None:
        """The file holding `name` (None: a tensor given in memory)."""
        return self._files.get(name) or self._held.get(name)

    def metadata(self, path: Path) -> dict[str, str]:
        """The `__metadata__` of one of the source's files ({} when it has none)."""
        return self._handle(path).metadata() or {}

    def dtype(self, name: str) -> str:
        """safetensors dtype string (F16, BF16, F32, F8_E4M3, ...); torch's name for a .bin's dtype that has none."""
        if name in self._eager:
            return dtype_name(self._eager[name].dtype)
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
            raise TensorError(f"reading {name} failed ({e}): the file is truncated or corrupted, "
                              f"{self._fix or 're-download it'}") from None

    def close(self) -> None:
        for h in self._handles.values():
            h.__exit__(None, None, None)
        self._handles.clear()


def _index_files(index: Path) -> dict[str, Path]:
    """A sharded checkpoint's index (`model.safetensors.index.json`, `pytorch_model.bin.index.json`): tensor name ->
    shard, every shard present."""
    fix = "re-download the model"
    try:
        weight_map = json_loads(read_text(index, fix))["weight_map"]
    except json.JSONDecodeError as e:
        raise ConfigError(f"{index} is not valid JSON ({e.msg}, line {e.lineno}): {fix}") from None
    except (KeyError, TypeError):
        weight_map = None
    if not isinstance(weight_map, dict) or not all(isinstance(f, str) for f in weight_map.values()):
        raise ConfigError(f"{index} is not a valid index of a sharded checkpoint: {fix}")
    files = {name: index.parent / fname for name, fname in weight_map.items()}
    for f in sorted(set(files.values())):
        if not f.exists():
            raise TensorError(f"{f} is named in {index.name} but missing: re-download the model")
    return files
