"""The `producer` block every output of this toolkit carries: checkpoints' and drafters' config.json, and the JSON
that `run`, `bench` and `acceptance` write (which version, command, options and inputs made it)."""

from __future__ import annotations

import json
import operator
from pathlib import Path
from typing import Callable

from . import __version__


def producer_block(command: str, options: dict, sources: dict) -> dict:
    """Sources that are None (an input not given) are left out; the others are recorded as absolute paths (a list
    of paths, such as train's data files, as a list of them)."""
    return {"name": "redrafter-trt", "version": __version__, "command": command, "options": options,
            "sources": {k: [absolute(p) for p in v] if isinstance(v, (list, tuple)) else absolute(v)
                        for k, v in sources.items() if v is not None}}


def absolute(path) -> str:
    """`path` (a str, Path or anything os.fspath takes) as the absolute path recorded in JSON outputs."""
    return str(Path(path).resolve())


def recorded_source(cfg: dict, key: str) -> str | None:
    """The `base` or `drafter` folder a command recorded in producer.sources; None when absent or hand-edited into
    something else."""
    producer = cfg.get("producer")
    sources = producer.get("sources") if isinstance(producer, dict) else None
    value = sources.get(key) if isinstance(sources, dict) else None
    return value if isinstance(value, str) and value else None


def recorded_predict_n(cfg: dict) -> int | None:
    """The drafter's predict_n `convert` recorded in a checkpoint config's producer block; None where absent or
    hand-edited into something that is no positive integer."""
    producer = cfg.get("producer")
    n = producer.get("drafter_predict_n") if isinstance(producer, dict) else None
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else None


def recorded_template_kwargs(cfg: dict) -> dict:
    """The chat template's variables `train` recorded in a drafter config's producer block (--chat-template-kwargs:
    the prompts it was trained on); {} where absent or hand-edited into something that is no object of names."""
    producer = cfg.get("producer")
    options = producer.get("options") if isinstance(producer, dict) else None
    kwargs = options.get("chat_template_kwargs") if isinstance(options, dict) else None
    return kwargs if isinstance(kwargs, dict) and all(isinstance(k, str) for k in kwargs) else {}


def drafter_template_kwargs(drafter_cfg: dict) -> dict | None:
    """The chat template's variables a drafter was trained with, as convert records them in the checkpoint: train's
    (`recorded_template_kwargs`, {} for none), None where another tool made it (not known)."""
    producer = drafter_cfg.get("producer")
    made_by_train = isinstance(producer, dict) and producer.get("command") == "train"
    return recorded_template_kwargs(drafter_cfg) if made_by_train else None


def drafter_command(drafter_cfg: dict) -> str | None:
    """What made a drafter (`init-drafter`, `train`), as its config's producer block says; None where another tool
    made it or the block says nothing readable. convert records it as producer.drafter_command."""
    producer = drafter_cfg.get("producer")
    command = producer.get("command") if isinstance(producer, dict) else None
    return command if isinstance(command, str) and command else None


def template_kwargs_warning(cfg: dict, kwargs: dict, alike: Callable[[dict, dict], bool] = operator.eq) -> str | None:
    """Why prompts rendered with `kwargs` (--chat-template-kwargs) suit a checkpoint's drafter less, or None: it was
    trained on prompts rendered with others (convert's `drafter_chat_template_kwargs`: Qwen3's thinking off where
    these think, or the reverse), which drafts the other mode's answers less well. alike(trained, kwargs): whether
    the two render the same prompts (`tokens.renders_alike`: Qwen3's {} and its default made explicit do)."""
    producer = cfg.get("producer")
    trained = producer.get("drafter_chat_template_kwargs") if isinstance(producer, dict) else None
    if not isinstance(trained, dict) or trained == kwargs or alike(trained, kwargs):
        return None
    return (f"the checkpoint's drafter was trained on prompts rendered with chat_template_kwargs "
            f"{json.dumps(trained)}, these with {json.dumps(kwargs)}: it will likely accept fewer draft tokens; pass "
            f"--chat-template-kwargs '{json.dumps(trained)}' to measure and serve the answers it was trained on")


def producer_summary(cfg: dict) -> dict | None:
    """What `inspect` shows of a config's producer block (None: it has none): the tool, its version and command
    (None: absent or not text), the drafter's recorded predict_n, whether convert found the drafter trained on this
    base (None: not known, or not a boolean) and what made the drafter (drafter_command: None where not recorded)."""
    producer = cfg.get("producer")
    if not isinstance(producer, dict):
        return None
    text = {k: v if isinstance(v := producer.get(k), str) else None for k in ("name", "version", "command")}
    matches = producer.get("drafter_base_matches")
    return {**text, "drafter_predict_n": recorded_predict_n(cfg),
            "drafter_base_matches": matches if isinstance(matches, bool) else None,
            "drafter_command": command if isinstance(command := producer.get("drafter_command"), str) and command
            else None}
