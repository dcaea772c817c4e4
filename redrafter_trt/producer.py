"""The `producer` block every output of this toolkit carries: checkpoints' and drafters' config.json, and the JSON
that `run`, `bench` and `acceptance` write (which version, command, options and inputs made it)."""

from __future__ import annotations

from pathlib import Path

from . import __version__


def producer_block(command: str, options: dict, sources: dict) -> dict:
    """Sources that are None (an input not given) are left out; the others are recorded as absolute paths."""
    return {"name": "redrafter-trt", "version": __version__, "command": command, "options": options,
            "sources": {k: str(Path(v).resolve()) for k, v in sources.items() if v is not None}}
