"""The ReDrafter drafter in Apple's layout: config, module, loading (with the aliases seen in the wild)
and a fresh initialisation for a given base.

Shapes (H = base hidden size, E = exit_dim, V = vocab, N = num_draft_layers):
    input_proj   Linear(2H -> E), only when E != 2H
    lm_head.i    ResBlock(E): x + silu(linear(x)), i = 0..N-1
    lm_head.N    Linear(E -> V), no bias
    rnn_u        Linear(H -> H) with bias;  rnn_w  Linear(H -> H), no bias   (only when rnn)

Recurrence over draft steps, state s0 = 0:
    s = silu(rnn_w(emb(tok)) + rnn_u(s))   if rnn   else   s = emb(tok) + s
    logits = lm_head(input_proj(cat([context, s])))
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from .errors import (FLAG, LAYER_COUNT, POSITIVE_INT, ConfigError, TensorError, dangling_link, name_list,
                     optional)

if TYPE_CHECKING:
    from .io import TensorSource

log = logging.getLogger(__name__)

MODEL_TYPE = "recurrent_drafting_drafter"
MAX_DRAFT_LAYERS = 64  # ResBlocks; Apple's drafters have 2

# Prefix aliases seen in published and home-made drafters -> Apple's canonical prefix.
ALIASES = (
    (re.compile(r"^input_projs\."), "input_proj."),
    (re.compile(r"^lm_heads\."), "lm_head."),
    (re.compile(r"^0\.(\d+)\."), r"lm_head.\1."),
)


@dataclass(frozen=True)
class DrafterConfig:
    hidden_size: int
    exit_dim: int
    num_draft_layers: int
    rnn: bool
    vocab_size: int
    predict_n: int | None = None  # future tokens it was trained for; None = unknown (no limit enforced)

    @property
    def has_input_proj(self) -> bool:
        return self.exit_dim != 2 * self.hidden_size

    def to_json(self) -> dict:
        out = {"model_type": MODEL_TYPE, **asdict(self)}
        if self.predict_n is None:
            del out["predict_n"]
        return out

    @classmethod
    def from_json(cls, raw: dict, where: str = "drafter config.json") -> "DrafterConfig":
        if not isinstance(raw, dict):
            raise ConfigError(f"{where} holds a JSON {type(raw).__name__}, not an object: fix or re-export it")
        missing = [k for k in ("hidden_size", "exit_dim", "num_draft_layers", "rnn", "vocab_size") if k not in raw]
        if missing:
            raise ConfigError(f"{where} lacks {', '.join(missing)}: it is not an Apple ReDrafter drafter config "
                              "(vocab_size may be left out only when the weights hold the final projection)")
        values = {f.name: raw[f.name] for f in fields(cls) if f.name in raw}
        for key, value in values.items():
            need, ok = FIELD_RULES[key]
            if not ok(value):
                raise ConfigError(f"{where}: {key} is {value!r}, must be {need}: fix it or re-export the drafter")
        return cls(**values)


# drafter config field -> (what it must be, check)
FIELD_RULES = {"hidden_size": POSITIVE_INT, "exit_dim": POSITIVE_INT, "vocab_size": POSITIVE_INT,
               "num_draft_layers": LAYER_COUNT, "rnn": FLAG, "predict_n": optional(POSITIVE_INT)}


def expected_shapes(cfg: DrafterConfig) -> dict[str, tuple[int, ...]]:
    """Apple name -> shape for every tensor a drafter with this config must have."""
    H, E, V, N = cfg.hidden_size, cfg.exit_dim, cfg.vocab_size, cfg.num_draft_layers
    shapes: dict[str, tuple[int, ...]] = {}
    if cfg.has_input_proj:
        shapes |= {"input_proj.weight": (E, 2 * H), "input_proj.bias": (E,)}
    for i in range(N):
        shapes |= {f"lm_head.{i}.linear.weight": (E, E), f"lm_head.{i}.linear.bias": (E,)}
    shapes[f"lm_head.{N}.weight"] = (V, E)
    if cfg.rnn:
        shapes |= {"rnn_u.weight": (H, H), "rnn_u.bias": (H,), "rnn_w.weight": (H, H)}
    return shapes


class ResBlock(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.linear = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + nn.functional.silu(self.linear(x))


class Drafter(nn.Module):
    """Apple's drafter; parameter names are Apple's, so `state_dict()` is the on-disk layout."""

    def __init__(self, cfg: DrafterConfig):
        super().__init__()
        self.cfg = cfg
        H, E = cfg.hidden_size, cfg.exit_dim
        self.input_proj = nn.Linear(2 * H, E) if cfg.has_input_proj else None
        self.lm_head = nn.Sequential(
            *[ResBlock(E) for _ in range(cfg.num_draft_layers)], nn.Linear(E, cfg.vocab_size, bias=False)
        )
        if cfg.rnn:
            self.rnn_u = nn.Linear(H, H, bias=True)
            self.rnn_w = nn.Linear(H, H, bias=False)

    def next_state(self, state: torch.Tensor, token_emb: torch.Tensor) -> torch.Tensor:
        """state, token_emb: [..., H] -> new state [..., H]."""
        if self.cfg.rnn:
            return nn.functional.silu(self.rnn_w(token_emb) + self.rnn_u(state))
        return token_emb + state

    def features(self, context: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """context, state: [..., H] -> the input of the final projection [..., E]."""
        x = torch.cat([context, state], dim=-1)
        if self.input_proj is not None:
            x = self.input_proj(x)
        return self.lm_head[:-1](x)

    def logits(self, context: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """context, state: [..., H] -> logits [..., V]."""
        return self.lm_head[-1](self.features(context, state))


def canonical_name(name: str) -> str:
    for pattern, repl in ALIASES:
        if pattern.match(name):
            return pattern.sub(repl, name, count=1)
    return name


def canonical_tensors(weights: dict[str, torch.Tensor], where: str) -> dict[str, torch.Tensor]:
    """The tensors under Apple's canonical names; two names of one tensor (`lm_head.0.linear.weight` beside
    `lm_heads.0.linear.weight`) are refused, not one of them silently kept."""
    tensors: dict[str, torch.Tensor] = {}
    seen: dict[str, str] = {}
    for name, t in weights.items():
        canon = canonical_name(name)
        if canon in seen:
            raise TensorError(f"drafter {where} holds both {seen[canon]} and {name}, two names of {canon}: keep "
                              f"one of them and re-save the drafter")
        seen[canon], tensors[canon] = name, t
    return tensors


def _read_weights(folder: Path) -> dict[str, torch.Tensor]:
    """The first weights file present, in this order: model.safetensors (first, as transformers' from_pretrained
    takes it), model.pt, then shards or pytorch_model*.bin; the others beside it are named in a warning: they may hold
    other weights (a re-save in another format beside the old file)."""
    st, pt, index = folder / "model.safetensors", folder / "model.pt", folder / "model.safetensors.index.json"
    others = [p for p in (st, pt, index) if p.exists()] + sorted(folder.glob("pytorch_model*.bin"))
    if len(others) > 1 and others[0] in (st, pt):
        ignored = name_list(p.name for p in others[1:])
        log.warning("drafter %s holds %s beside %s: reading %s%s and ignoring %s; remove the file you do not mean",
                    folder, others[0].name, ignored, others[0].name,
                    " (as transformers' from_pretrained does)" if others[0] == st else "", ignored)
    if st.exists():
        from .io import read_safetensors

        return read_safetensors(st)
    if pt.exists():
        from .io import read_torch_state_dict

        return read_torch_state_dict(pt)
    if index.exists() or any(folder.glob("pytorch_model*.bin")):
        # what `save_pretrained` writes for a large drafter (sharded, e.g. a 70B base's) or without safetensors
        from .io import TensorSource

        src = TensorSource.from_hf_folder(folder)
        try:
            return {name: src.get(name) for name in sorted(src.names())}
        finally:
            src.close()
    raise ConfigError(dangling_link(st) or f"{folder} has neither model.safetensors (or its shards with "
                      f"model.safetensors.index.json, or pytorch_model*.bin) nor model.pt: point --drafter at a "
                      f"trained drafter folder")


def _read_config(folder: Path) -> dict:
    if not folder.is_dir():
        state = "is a file, not a folder" if folder.exists() else "does not exist"
        raise ConfigError(f"drafter folder {folder} {state}: pass the folder holding config.json and "
                          "model.safetensors (none yet? `redrafter-trt train` makes one for your base)")
    if not (folder / "config.json").exists():
        raise ConfigError(dangling_link(folder / "config.json") or f"{folder / 'config.json'} is missing: a drafter "
                          f"folder needs Apple's config.json next to its weights")
    from .config import read_json

    raw = read_json(folder / "config.json", "drafter")
    if isinstance(raw, dict) and "exit_dim" not in raw and (what := _other_folder(raw)):
        raise ConfigError(f"{folder} holds {what[0]}, not an Apple ReDrafter drafter: {what[1]}")
    return raw


def _other_folder(raw: dict) -> tuple[str, str] | None:
    """What a folder passed as --drafter holds instead of a drafter (the base, convert's output, an engine), and the
    fix: named, where a drafter config's missing fields were listed."""
    if "pretrained_config" in raw:
        return "a TensorRT-LLM engine", "pass the drafter folder its checkpoint was converted from"
    if "redrafter_num_beams" in raw:
        return "a ReDrafter checkpoint", "pass the drafter folder it was converted from"
    model = raw.get("architectures") or raw.get("architecture")
    if isinstance(model, list) and model:
        model = model[0]
    if not isinstance(model, str) or "Drafter" in model:  # a drafter's config that lacks a field: listed as such
        return None
    return (f"a {'Hugging Face model' if 'architectures' in raw else 'TensorRT-LLM checkpoint'} ({model})",
            "pass it to --base, and to --drafter the drafter folder (none yet? `redrafter-trt train` makes one for "
            "your base)")


def drafter_config(folder: Path | str) -> DrafterConfig | None:
    """The drafter's config from its config.json alone, checked, before its tensors are read (a 70B base's drafter
    holds GBs); None when it leaves vocab_size to the weights (load_drafter takes it from the final projection)."""
    raw = _read_config(Path(folder))
    return DrafterConfig.from_json(raw, str(Path(folder) / "config.json")) if "vocab_size" in raw else None


def load_drafter(folder: Path | str, dtype: torch.dtype | None = None) -> tuple[DrafterConfig, dict[str, torch.Tensor]]:
    """Read an Apple-layout drafter folder; returns its config and tensors under canonical Apple names,
    checked for completeness, shapes and finiteness."""
    folder = Path(folder)
    cfg_path = folder / "config.json"
    raw = _read_config(folder)
    try:
        weights = _read_weights(folder)
    except ConfigError:  # no weights: a folder that is no drafter at all (a checkpoint, an engine) is named by its config
        DrafterConfig.from_json({"vocab_size": 1, **raw}, str(cfg_path))
        raise
    tensors = canonical_tensors(weights, str(folder))
    if "vocab_size" not in raw:
        heads = [t for k, t in tensors.items() if re.fullmatch(r"lm_head\.\d+\.weight", k)]
        if heads:
            raw = {**raw, "vocab_size": heads[0].shape[0]}
    cfg = DrafterConfig.from_json(raw, str(cfg_path))
    check_tensors(cfg, tensors, str(folder))
    if dtype is not None:
        tensors = {k: v.to(dtype) for k, v in tensors.items()}
    return cfg, tensors


def check_tensors(cfg: DrafterConfig, tensors: dict[str, torch.Tensor], where: str) -> None:
    if 2 * cfg.num_draft_layers > len(tensors):  # listing a billion missing names would hang
        raise TensorError(f"drafter {where}: its {len(tensors)} tensors cannot hold num_draft_layers="
                          f"{cfg.num_draft_layers} ResBlocks (2 tensors each): fix its config.json or re-export it")
    want = expected_shapes(cfg)
    missing, unexpected = set(want) - set(tensors), set(tensors) - set(want)
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing tensors: {name_list(missing)}")
        if unexpected:
            parts.append(f"unexpected tensors: {name_list(unexpected)}")
        raise TensorError(f"drafter {where}: {'; '.join(parts)}: the weights do not match its config.json "
                          f"(hidden_size={cfg.hidden_size}, exit_dim={cfg.exit_dim}, num_draft_layers={cfg.num_draft_layers}, rnn={cfg.rnn})")
    bad = [f"{k} {tuple(tensors[k].shape)} != {s}" for k, s in want.items() if tuple(tensors[k].shape) != s]
    if bad:
        raise TensorError(f"drafter {where}: misshapen tensors: {'; '.join(bad[:4])}: the weights do not match its config.json")
    from .io import UNREAD_FIX, all_finite, dtype_name, unread_weights

    if unread := unread_weights({k: dtype_name(t.dtype) for k, t in tensors.items()}):
        raise TensorError(f"drafter {where}: {unread}: {UNREAD_FIX}")
    for k, t in tensors.items():
        if not all_finite(t):
            raise TensorError(f"drafter {where}: tensor {k} holds NaN or Inf: retrain or re-export the drafter")
    head = f"lm_head.{cfg.num_draft_layers}.weight"
    if problem := head_problem(tensors[head]):
        raise TensorError(f"drafter {where}: {head} {problem}: train it (`redrafter-trt train`) or pass a trained one")


def head_problem(rows: torch.Tensor) -> str | None:
    """Why a drafter head (its final projection [V, E], or some of its rows) drafts nothing the base accepts: NaN or
    Inf, or one value everywhere (a head never loaded or trained scores every token alike, so every beam drafts the
    same tokens, all rejected: TensorRT-LLM issue #2155's 1 token per step). One pass, no copy of the rows (an 8B
    base's drafter head is [128256, 8192])."""
    if not rows.numel():
        return None
    low, high = torch.aminmax(rows)
    if not (low.isfinite() and high.isfinite()):  # NaN in both, an Inf in one
        return "holds NaN or Inf"
    return uniform_head(low.item(), rows.shape[0]) if low == high else None


def uniform_head(value: float, rows: int) -> str:
    """What a head of one value throughout does (said of its `rows` rows)."""
    return f"is {value:g} in all {rows} rows: the drafter scores every token alike and the base accepts no draft (1 token per step)"


def save_drafter(folder: Path | str, cfg: DrafterConfig, state: dict[str, torch.Tensor], producer: dict | None = None,
                 inputs: tuple = (), *, force: bool) -> Path:
    """Write Apple's layout (config.json + model.safetensors) atomically, replacing `folder` where `force` allows
    (`atomic_output`) unless it is or holds one of `inputs`."""
    from .io import write_safetensors
    from .output import atomic_output

    with atomic_output(Path(folder), force=force, inputs=inputs) as tmp:
        # the metadata save_pretrained writes: transformers before 4.46 (Apple's Drafter.from_pretrained) fails on a
        # safetensors file without it ('NoneType' object has no attribute 'get')
        write_safetensors(tmp / "model.safetensors", {k: v.contiguous() for k, v in state.items()}, {"format": "pt"})
        meta = cfg.to_json()
        if producer:
            meta["producer"] = producer
        (tmp / "config.json").write_text(json.dumps(meta, indent=2) + "\n")
    return Path(folder)


def init_drafter(base_config: dict, base_tensors_lm_head: torch.Tensor | None, *, num_draft_layers: int = 2,
                 rnn: bool = True, exit_dim: int | None = None, seed: int = 0) -> tuple[DrafterConfig, Drafter]:
    """A fresh drafter for a base with this HF config.

    ResBlocks start as identity (zero linear weights, as in Apple's trainer); the final projection starts from
    the base's lm_head [V, H] on the context half (so the untrained drafter predicts what the base would say
    after the context) when E = 2H, and is random otherwise. `base_tensors_lm_head` may be None.
    """
    H, V = int(base_config["hidden_size"]), int(base_config["vocab_size"])
    E = int(exit_dim or 2 * H)
    cfg = DrafterConfig(hidden_size=H, exit_dim=E, num_draft_layers=num_draft_layers, rnn=rnn, vocab_size=V)
    gen = torch.Generator().manual_seed(seed)
    model = Drafter(cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.02)
        for i in range(num_draft_layers):
            model.lm_head[i].linear.weight.zero_()
            model.lm_head[i].linear.bias.zero_()
        if base_tensors_lm_head is not None and not cfg.has_input_proj:
            model.lm_head[-1].weight[:, :H] = base_tensors_lm_head.float()
            model.lm_head[-1].weight[:, H:] = 0
    return cfg, model


def check_size(planned: DrafterConfig, base: TensorSource, default_exit_dim: int, frozen_head: bool = False,
               typed: bool = True) -> None:
    """Refuse a drafter with more parameters than its base (counted from the base's tensor headers), before any
    allocation: --exit-dim 10**8 was a traceback (50 GB for input_proj), and such a drafter cannot speed a base up.
    frozen_head: train's --freeze-head, which takes a width up to the hidden size H (or 2H) alone. typed: whether the
    width was typed (--exit-dim) or is the default, which the refusal then names as such."""
    base_size = sum(math.prod(base.shape(name)) for name in base.names())
    size = drafter_size(planned)
    if size > base_size:
        E, H = planned.exit_dim, planned.hidden_size
        width = (f"--exit-dim {E}" if typed else
                 f"the default exit_dim {E} ({'2 x ' if E == 2 * H else ''}the hidden size {H})")
        fits = exit_dims_that_fit(planned, base_size, frozen_head)
        raise ConfigError(f"{width} makes a drafter of {size:,} parameters, more than its base's {base_size:,}: a "
                          f"drafter speeds a base up only when far cheaper; "
                          + (f"use {fits} (default {default_exit_dim})" if typed else f"pass {fits}"))


def drafter_size(cfg: DrafterConfig) -> int:
    """Parameters of a drafter with this config."""
    return sum(math.prod(s) for s in expected_shapes(cfg).values())


def exit_dims_that_fit(planned: DrafterConfig, limit: int, frozen_head: bool = False) -> str:
    """The widths below `planned.exit_dim` whose drafter has at most `limit` parameters, as a refusal names them:
    "--exit-dim W or less" (every one up to W fits), with ", or 2H" where E = 2H, which needs no input_proj [E, 2H],
    fits beyond them ("--exit-dim 128 or less" was said where 126 and 127 did not fit); "a smaller --exit-dim" when
    none does. W: a binary search over the size counting an input_proj at 2H too (a size that grows with E), at most
    H for a frozen head (`check_size`)."""
    H = planned.hidden_size

    def grown(E: int) -> int:
        return drafter_size(replace(planned, exit_dim=E)) + (2 * H * E + E if E == 2 * H else 0)

    lo, hi = 0, planned.exit_dim - 1  # grown(E) <= limit for every E <= lo (none for 0), > limit past hi
    while lo < hi:
        mid = (lo + hi + 1) // 2
        lo, hi = (mid, hi) if grown(mid) <= limit else (lo, mid - 1)
    lo = min(lo, H) if frozen_head else lo
    apart = lo < 2 * H < planned.exit_dim and drafter_size(replace(planned, exit_dim=2 * H)) <= limit
    if apart and lo == 2 * H - 1:  # every width up to 2H
        lo, apart = 2 * H, False
    below = f"--exit-dim {lo} or less" if lo else ""
    if not apart:
        return below or "a smaller --exit-dim"
    return f"{below}, or {2 * H}" if below else f"--exit-dim {2 * H}"


def init_drafter_for_base(base: Path | str, output: Path | str, *, num_draft_layers: int = 2, rnn: bool = True,
                          exit_dim: int | None = None, seed: int = 0, force: bool = False) -> DrafterConfig:
    """init_drafter for a Hugging Face base folder, written in Apple's layout with a producer block (replacing an
    earlier `output` only with `force`, as init-drafter's --force)."""
    from . import __version__
    from .base_plan import check_hf_tensors
    from .base_sample import record_base_sample
    from .config import BaseModelConfig, read_json
    from .io import TensorSource, finite_base_tensor

    base = Path(base)
    hf = read_json(base / "config.json", "base")
    b = BaseModelConfig.from_hf(hf, str(base / "config.json"))  # architecture and fields checked
    if not 0 <= num_draft_layers <= MAX_DRAFT_LAYERS:
        raise ConfigError(f"--num-draft-layers {num_draft_layers} is outside 0..{MAX_DRAFT_LAYERS}: Apple's drafters use 2")
    if exit_dim is not None and exit_dim < 1:
        raise ConfigError(f"--exit-dim {exit_dim} is invalid: use a positive width")
    src = TensorSource.from_hf_folder(base)
    H = int(hf["hidden_size"])
    try:
        # every tensor named and shaped as config.json says, as convert checks: the head copied below must be [V, H]
        # (a vocab_size or lm_head that disagreed was a RuntimeError traceback), and a folder convert will refuse
        # is refused before a drafter is made for it
        check_hf_tensors(src, b, base)
        check_size(DrafterConfig(hidden_size=H, exit_dim=exit_dim or 2 * H, num_draft_layers=num_draft_layers,
                                 rnn=rnn, vocab_size=int(hf["vocab_size"])), src, default_exit_dim=2 * H,
                   typed=exit_dim is not None)
    except (ConfigError, TensorError):
        src.close()
        raise
    head_name = "lm_head.weight" if "lm_head.weight" in src.names() else "model.embed_tokens.weight"
    try:
        head = src.get(head_name) if exit_dim in (None, 2 * H) else None  # [V, H]: checked above
    finally:
        src.close()
    if head is not None:
        finite_base_tensor(head, head_name, base)
    cfg, model = init_drafter(hf, head, num_draft_layers=num_draft_layers, rnn=rnn, exit_dim=exit_dim, seed=seed)
    # base_sample: train's record of the base, which convert compares with its --base
    producer = {"name": "redrafter-trt", "version": __version__, "command": "init-drafter",
                "options": {"num_draft_layers": num_draft_layers, "rnn": rnn, "exit_dim": cfg.exit_dim, "seed": seed},
                "sources": {"base": str(base.resolve())}, "base_sample": record_base_sample(base)}
    save_drafter(output, cfg, model.state_dict(), producer, inputs=(base,), force=force)
    return cfg
