"""The `producer` block every output of this toolkit carries: checkpoints' and drafters' config.json, and the JSON
that `run`, `bench` and `acceptance` write (which version, command, options and inputs made it)."""

from __future__ import annotations

from pathlib import Path

from . import __version__


def producer_block(command: str, options: dict, sources: dict) -> dict:
    """Sources that are None (an input not given) are left out; the others are recorded as absolute paths (a list
    of paths, such as train's data files, as a list of them)."""
    return {"name": "redrafter-trt", "version": __version__, "command": command, "options": options,
            "sources": {k: [_absolute(p) for p in v] if isinstance(v, (list, tuple)) else _absolute(v)
                        for k, v in sources.items() if v is not None}}


def _absolute(path) -> str:
    return str(Path(path).resolve())
