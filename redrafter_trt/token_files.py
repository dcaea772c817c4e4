"""Prompt files of token ids, as TensorRT-LLM's `examples/run.py --input_file` reads them (and its --output_csv /
--output_npy write them): a `.csv`, one prompt a row of comma-separated ids; a `.npy`, an integer array whose rows
(one row: a 1-D array) are the prompts, the tokenizer's pad id dropped from each (`np.load(allow_pickle=False)`: a
pickled array is refused, never unpickled). The ids go to the runtime as they are: no chat template, no special
tokens added. `TokenRows.ids` checks them against the tokenizer once it is loaded."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError, long_number, number_too_long, read_text

TOKEN_ID_SUFFIXES = (".csv", ".npy")
NPY_MAGIC = b"\x93NUMPY"  # how every file np.save writes starts
SAVE_NPY = "save the ids as an integer array: np.save(path, np.array(rows, dtype='int32'))"


def is_token_file(path) -> bool:
    """Whether run reads `path` as token ids (its suffix is run.py's)."""
    return Path(path).suffix.lower() in TOKEN_ID_SUFFIXES


@dataclass(frozen=True)
class TokenRows:
    """A token-id file's prompts: `rows` [prompts][ids] as read; `padded`: a .npy's rows hold pad ids to drop."""

    path: Path
    rows: list[list[int]]
    padded: bool

    def ids(self, pad_id: int | None, vocab_size: int) -> list[list[int]]:
        """Each prompt's ids (a .npy's pad ids dropped, as run.py drops them); a ConfigError naming the row of an
        empty one or one outside the tokenizer's `vocab_size` ids."""
        out = []
        for n, row in enumerate(self.rows, start=1):
            ids = [i for i in row if not (self.padded and i == pad_id)]
            if not ids:
                raise ConfigError(f"{self.path} {self._where(n)} holds no token ids: write each prompt's ids, or "
                                  f"remove it")
            if (bad := next((i for i in ids if not 0 <= i < vocab_size), None)) is not None:
                raise ConfigError(f"{self.path} {self._where(n)}: token id {bad} is outside the tokenizer's "
                                  f"{vocab_size} ids (0-{vocab_size - 1}): write ids of this tokenizer")
            out.append(ids)
        return out

    def names(self) -> list[str]:
        """Each row's file and line (a .csv's) or row (a .npy's), for messages."""
        return [f"{self.path} {self._where(n)}" for n in range(1, len(self.rows) + 1)]

    def _where(self, n: int) -> str:
        return f"row {n}" if self.padded else f"line {n}"


def read_token_rows(path) -> TokenRows:
    """A .csv's or .npy's rows of token ids (`TokenRows`); a ConfigError naming what is not one."""
    path = Path(path)
    if path.suffix.lower() == ".npy":
        return TokenRows(path, _npy_rows(path), padded=True)
    rows = []
    for n, line in enumerate(csv.reader(read_text(path, "save it as UTF-8 text").split("\n")), start=1):
        cells = [c.strip() for c in line]
        if (bad := next((c for c in cells if not (c.isascii() and c.isdigit())), None)) is not None:  # '²' is a
            # digit to str.isdigit that int() cannot read
            raise ConfigError(f"{path} line {n}: {bad!r} is not a token id: write each prompt as its ids, "
                              f"comma-separated (run.py's .csv), or pass its text as .txt or jsonl")
        if (long := next((c for c in cells if long_number(c)), None)) is not None:  # int() would refuse it
            raise ConfigError(f"{path} line {n}: {number_too_long(len(long))}, no token id: write each prompt as its "
                              f"ids, comma-separated (run.py's .csv)")
        rows.append([int(c) for c in cells])
    while rows and not rows[-1]:  # the file's last newline
        rows.pop()
    if not rows:
        raise ConfigError(f"input file {path} holds no token ids: write each prompt's ids on a line, comma-separated")
    return TokenRows(path, rows, padded=False)


def _npy_rows(path: Path) -> list[list[int]]:
    import numpy as np

    try:
        with open(path, "rb") as f:
            head = f.read(512)
        if not head.startswith(NPY_MAGIC):  # numpy calls any such file a pickle (its allow_pickle error)
            raise ConfigError(f"{path} {_not_npy(head)}: {SAVE_NPY}")
        _check_npy_size(path)
        array = np.load(path, allow_pickle=False)
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise ConfigError(f"{path} holds objects (a pickled array, not read), not integer token ids: "
                              f"{SAVE_NPY}") from None
        raise ConfigError(f"{path} is not a .npy array ({e}): {SAVE_NPY}") from None
    except OSError as e:
        raise ConfigError(f"cannot read {path} ({e.strerror or type(e).__name__}): {SAVE_NPY}") from None
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "iu" or array.ndim not in (1, 2):
        what = f"a {array.ndim}-D array" if isinstance(array, np.ndarray) and array.dtype.kind in "iu" else \
            getattr(array, "dtype", type(array).__name__)
        raise ConfigError(f"{path} holds {what}, not integer token ids (one prompt a row): {SAVE_NPY}")
    if not array.size:  # no rows (np.zeros((0, 5))) was check_positions' `max() arg is an empty sequence`
        raise ConfigError(f"input file {path} holds no token ids: write each prompt's ids as a row; {SAVE_NPY}")
    return [list(map(int, row)) for row in np.atleast_2d(array)]


def _check_npy_size(path: Path) -> None:
    """Refuse a .npy file whose header's shape needs more bytes than follow it (cut short, or a header edited or
    forged): np.load allocates the whole shape first, a MemoryError traceback for (10**9, 10**9) (a fuzzing review). A
    header numpy cannot read is left to np.load's ValueError."""
    import math

    from numpy.lib import format as npy

    with open(path, "rb") as f:
        read_header = {(1, 0): npy.read_array_header_1_0, (2, 0): npy.read_array_header_2_0}.get(npy.read_magic(f))
        if read_header is None:  # version 3.0 (utf-8 field names), which numpy's reader alone reads
            return
        shape, _, dtype = read_header(f)
        if dtype.hasobject:  # a pickle, not read (np.load's allow_pickle refusal)
            return
        held = Path(path).stat().st_size - f.tell()
    needed = math.prod(shape) * dtype.itemsize  # Python's ints: no overflow
    if needed > held:
        raise ConfigError(f"{path}'s header says shape {tuple(shape)} of {dtype} ({needed} bytes) but it holds {held} "
                          f"bytes (cut short, or not np.save's): {SAVE_NPY}")


def _not_npy(head: bytes) -> str:
    """What a file whose first bytes (`head`) lack the .npy magic is, for its refusal."""
    if not head:
        return "is not a .npy array (it is empty)"
    try:
        head.decode("utf-8")
        text = b"\0" not in head
    except UnicodeDecodeError as e:
        text = e.reason == "unexpected end of data" and b"\0" not in head  # a character cut at the 512th byte
    if text:
        return "holds text, not a .npy array (np.savetxt writes text; np.save writes .npy)"
    return f"is not a .npy array (it does not start with the .npy magic bytes {NPY_MAGIC!r})"
