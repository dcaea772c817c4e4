"""A checkpoint folder checked once before the runtime loads it: `open_checkpoint` refuses one that `redrafter-trt
inspect` finds problems in (checkpoint.require_valid: its config, each rank file's header, rows spread over its
drafter head; no weights read), in the one line `run` gives. Every loading entry point (runtime.load, generate_tp,
forward_logits_tp, ranks.LocalRanks) opens what it is given, and takes a `Checkpoint` as already checked: a command
that opened it first, and the tp ranks an entry point starts, do not inspect it again. A folder written again since
it was opened (a convert into it) is opened again: its config is not run with the weights that replaced it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..layout import tp_size
from .config import RuntimeConfig


def _stamp(folder: Path) -> tuple | None:
    """config.json's and the rank files' names, sizes and modification times (None: config.json is gone): another
    stamp means the folder was written since."""
    try:
        return tuple((f.name, st.st_size, st.st_mtime_ns)
                     for f in [folder / "config.json", *sorted(folder.glob("rank*.safetensors"))] for st in [f.stat()])
    except OSError:
        return None


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint folder inspect passed: its path, its runtime config and its config.json as read. It stands for
    its folder wherever a path is taken (str, os.fspath, Path)."""
    path: Path
    config: RuntimeConfig
    raw: dict
    stamp: tuple | None = field(default=None, repr=False)  # _stamp(path) when it was opened

    @property
    def merged(self) -> bool:
        """Whether its config runs at tp 1 a folder of more rank files (`merge.merge_ranks`): `load` merges them."""
        return self.config.tp_size != tp_size(self.raw)

    def __str__(self) -> str:
        return str(self.path)

    def __fspath__(self) -> str:
        return str(self.path)


def open_checkpoint(folder: Checkpoint | Path | str) -> Checkpoint:
    """`folder` checked (a Checkpoint whose folder is as it was is returned as it is), or the one-line ConfigError
    `run` gives."""
    if isinstance(folder, Checkpoint):
        if folder.stamp is not None and _stamp(folder.path) == folder.stamp:
            return folder
        folder = folder.path
    from ..checkpoint import require_valid

    stamp = _stamp(Path(folder))  # before it is read: a folder written meanwhile is opened again next time
    raw = require_valid(folder)
    return Checkpoint(Path(folder), RuntimeConfig.from_dict(raw, f"{folder}/config.json"), raw, stamp)
