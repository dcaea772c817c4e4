"""A checkpoint folder checked once before the runtime loads it: `open_checkpoint` refuses one that `redrafter-trt
inspect` finds problems in (checkpoint.require_valid: its config, each rank file's header, rows spread over its
drafter head; no weights read), in the one line `run` gives. Every loading entry point (runtime.load, generate_tp,
forward_logits_tp, ranks.LocalRanks) opens what it is given, and takes a `Checkpoint` as already checked: a command
that opened it first, and the tp ranks an entry point starts, do not inspect it again."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .config import RuntimeConfig


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint folder inspect passed: its path, its runtime config and its config.json as read. It stands for
    its folder wherever a path is taken (str, os.fspath, Path)."""
    path: Path
    config: RuntimeConfig
    raw: dict

    def __str__(self) -> str:
        return str(self.path)

    def __fspath__(self) -> str:
        return str(self.path)


def open_checkpoint(folder: Checkpoint | Path | str) -> Checkpoint:
    """`folder` checked (a Checkpoint is returned as it is), or the one-line ConfigError `run` gives."""
    if isinstance(folder, Checkpoint):
        return folder
    from ..checkpoint import require_valid

    raw = require_valid(folder)
    return Checkpoint(Path(folder), RuntimeConfig.from_dict(raw, f"{folder}/config.json"), raw)
