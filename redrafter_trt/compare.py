"""`inspect --base BASE --drafter DRAFTER`: a checkpoint's tensors compared, value for value, with what convert writes
from those models (its own plans: base_plan.plan_hf_rank / plan_trtllm_rank, convert.plan_drafter).

inspect's other checks read the config, the headers and a few rows. Rank files swapped, two tensors crossed, q, k and
v split or fused the wrong way, or another base's (or another drafter's) weights keep every name, shape and dtype
right: only the values tell. Every tensor must equal the plan's bit for bit, but an FP8 linear made from a Hugging
Face base (modelopt quantised it), which must dequantise (weight x weights_scaling_factor) to the base's weight
within e4m3's rounding.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch
from tqdm import tqdm

from . import layout
from .base_plan import Planned, check_hf_tensors, is_trtllm_checkpoint, plan_hf_rank, plan_trtllm_rank
from .config import BaseModelConfig, read_json, trtllm_model_fields
from .errors import ConfigError, TensorError, name_list
from .io import ST_TO_TORCH, TensorSource
from .plural import agreeing, counted
from .rules import split_of
from .shard import even_range

# e4m3 keeps 3 mantissa bits: rounding moves a normal value by at most 2^-4 of itself, a subnormal one (under 2^-6
# in units of the scale) by at most 2^-10 of the scale; twice each, for the model-dtype rounding of w / scale first
FP8_RTOL, FP8_ATOL = 2.0 ** -3, 2.0 ** -9
BASE_SHAPE_KEYS = ("num_hidden_layers", "hidden_size", "num_attention_heads", "num_key_value_heads", "head_size",
                   "intermediate_size", "vocab_size", "attn_bias", "mlp_bias")
# the drafter's DrafterConfig field -> the checkpoint's config.json field
DRAFTER_SHAPE_KEYS = {"hidden_size": "redrafter_hidden_size", "exit_dim": "redrafter_exit_dim",
                      "num_draft_layers": "redrafter_num_layers", "rnn": "redrafter_is_rnn", "vocab_size": "vocab_size"}
RECONVERT = "re-convert with redrafter-trt convert"
DIAGNOSED = 16  # the unexplained differences per rank a cause is looked for (then: another model's weights)
TRTLLM_LAYER_INDEX = re.compile(r"transformer\.layers\.(\d+)\.(.+)")
OTHER_WEIGHTS = "another model's weights, or edited: compare with the models it was converted from, or re-convert"


@dataclass
class Comparison:
    compared: int = 0  # tensors compared value for value
    problems: list[str] = field(default_factory=list)


def compare_checkpoint(folder: Path, cfg: dict, base: Path | None, drafter: Path | None) -> Comparison:
    """`folder`'s tensors (its config.json `cfg`, checked) against what convert plans from `base` (a Hugging Face
    model or a TensorRT-LLM base checkpoint) and `drafter` (Apple's layout): each difference named with its cause
    where one is recognised."""
    out = Comparison()
    tp = layout.tp_size(cfg)
    plans: list[dict[str, Planned]] = [{} for _ in range(tp)]
    sources: list[TensorSource] = []
    try:
        if base is not None:
            _plan_base(base, cfg, plans, sources, out)
        if drafter is not None:
            _plan_drafter(drafter, cfg, plans, out)
        for r in range(tp):
            if plans[r] and (ck := _open_rank(folder / f"rank{r}.safetensors")) is not None:
                try:
                    _compare_rank(r, ck, cfg, plans, out)
                finally:
                    ck.close()
    finally:
        for s in sources:
            s.close()
    return out


def _plan_base(base: Path, cfg: dict, plans: list[dict[str, Planned]], sources: list[TensorSource],
               out: Comparison) -> None:
    tp = layout.tp_size(cfg)
    if is_trtllm_checkpoint(base):
        bcfg = read_json(base / "config.json", "base checkpoint")
        if layout.is_redrafter(bcfg):
            raise ConfigError(f"--base {base} is a ReDrafter checkpoint: pass the base it was converted from (a "
                              f"Hugging Face model or a TensorRT-LLM base checkpoint)")
        theirs = {k: bcfg.get(k) for k in BASE_SHAPE_KEYS + ("dtype",)} | {"tp_size": layout.tp_size(bcfg)}
        if differ := _differences(theirs, cfg | {"tp_size": tp}, base):
            out.problems.append(differ)
            return
        for r in range(tp):
            sources.append(src := TensorSource.from_files([base / f"rank{r}.safetensors"]))
            plans[r] |= {p.name: p for p in plan_trtllm_rank(src, bcfg, r, base)}
        return
    b = BaseModelConfig.from_hf(read_json(base / "config.json", "base"), str(base / "config.json"))
    if differ := _differences(trtllm_model_fields(b, cfg["dtype"], tp), cfg, base, BASE_SHAPE_KEYS):
        out.problems.append(differ)
        return
    sources.append(src := TensorSource.from_hf_folder(base))
    check_hf_tensors(src, b, base)
    for r in range(tp):
        plans[r] |= {p.name: p for p in plan_hf_rank(src, b, cfg, r)}


def _plan_drafter(drafter: Path, cfg: dict, plans: list[dict[str, Planned]], out: Comparison) -> None:
    from .convert import plan_drafter
    from .drafter import load_drafter

    if not layout.is_redrafter(cfg):
        out.problems.append(f"--drafter {drafter} given, but the checkpoint holds no drafter (a base checkpoint): "
                            f"leave out --drafter")
        return
    d, tensors = load_drafter(drafter)
    theirs = {cfg_key: getattr(d, key) for key, cfg_key in DRAFTER_SHAPE_KEYS.items()}
    if differ := _differences(theirs, cfg, drafter):
        out.problems.append(differ)
        return
    for r in range(layout.tp_size(cfg)):
        plans[r] |= {p.name: p for p in plan_drafter(d, tensors, cfg, r)}


def _differences(theirs: dict, cfg: dict, where: Path, keys=None) -> str | None:
    """The problem of a model whose config makes other tensors than the checkpoint's, or None."""
    differ = [f"{k} {theirs[k]!r} (the checkpoint's {cfg.get(k)!r})" for k in keys or theirs
              if theirs[k] != cfg.get(k)]
    if not differ:
        return None
    return (f"{where} is not the model this checkpoint was converted from: its {', '.join(differ)}; nothing of it "
            f"was compared")


def _open_rank(f: Path) -> TensorSource | None:
    """The rank file's tensors; None where it is missing or cannot be opened (inspect's own problems)."""
    try:
        return TensorSource.from_files([f], fix="re-convert it")
    except TensorError:
        return None


def _compare_rank(r: int, ck: TensorSource, cfg: dict, plans: list[dict[str, Planned]], out: Comparison) -> None:
    held = ck.names()
    causes: dict[tuple[str, str, str], list[str]] = {}  # (verb for one, for many, the rest) -> its tensors, in order
    unexplained: list[str] = []
    names = [n for n, p in plans[r].items() if n in held and _as_planned(ck, n, p)]  # else inspect's problem
    for name in tqdm(names, desc=f"rank{r} compared", unit="tensor", disable=None, leave=False):
        got, want = ck.get(name), plans[r][name].read()
        scale = name.removesuffix("weight") + "weights_scaling_factor"
        if got.element_size() == 1 and want.element_size() > 1:  # FP8 quantised from the model dtype
            if scale not in held or ck.shape(scale) != (1,):
                continue  # inspect names the missing or misshapen scale
            same = partial(_dequantises_to, got, ck.get(scale))
        else:
            same = partial(_same_bits, got)
        out.compared += 1
        if same(want):
            continue
        # past DIAGNOSED unexplained tensors it is another model: each diagnosis reads several tensors again
        if len(unexplained) < DIAGNOSED and (cause := _cause(name, same, r, cfg, plans)):
            causes.setdefault(cause, []).append(name)
        else:
            unexplained.append(name)
    for (one, many, rest), names in causes.items():
        out.problems.append(f"rank{r}: {name_list(names)} {agreeing(len(names), one, many)} {rest}")
    if len(unexplained) == 1:
        p = plans[r][unexplained[0]]
        out.problems.append(f"rank{r}: {p.name} differs from {', '.join(p.sources) or 'the base checkpoint'} "
                            f"({_differing(ck.get(p.name), p.read())}): {OTHER_WEIGHTS}")
    elif unexplained:
        out.problems.append(f"rank{r}: {counted(len(unexplained), 'tensor')} differ from the models' "
                            f"({name_list(unexplained)}): {OTHER_WEIGHTS}")


def _as_planned(ck: TensorSource, name: str, p: Planned) -> bool:
    """Whether the checkpoint holds `name` in the plan's shape and dtype (FP8 as its int8 bits too, as older exporters
    wrote it): a tensor that does not is inspect's own problem, not one of values."""
    held = ST_TO_TORCH.get(ck.dtype(name))
    return ck.shape(name) == p.shape and (held == p.dtype or (held, p.dtype) == (torch.int8, torch.float8_e4m3fn))


def _same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal bit for bit (FP8 held as int8 equals its FP8 bits)."""
    return a.element_size() == b.element_size() and torch.equal(
        a.contiguous().view(torch.uint8), b.contiguous().view(torch.uint8))


def _dequantises_to(weight: torch.Tensor, scale: torch.Tensor, want: torch.Tensor) -> bool:
    """An FP8 weight [rows, cols] (as FP8 or its int8 bits) x its scale [1] within e4m3's rounding of `want`."""
    if weight.shape != want.shape:
        return False
    deq = weight.view(torch.float8_e4m3fn).float() * scale.float()
    ref = want.float()
    return bool(((deq - ref).abs() <= FP8_RTOL * ref.abs() + FP8_ATOL * scale.float()).all())


def _cause(name: str, same: Callable[[torch.Tensor], bool], r: int, cfg: dict,
           plans: list[dict[str, Planned]]) -> tuple[str, str, str] | None:
    """Why the rank's tensor `name` differs from its plan, where a known mistake that keeps a tensor's shape explains
    it exactly: rank files swapped, two tensors crossed (in a layer: TensorRT-LLM's mlp.fc is Hugging Face's
    gate_proj, its mlp.gate up_proj; the embedding and lm_head; the layer before's or after's), a square weight
    transposed, the fused q, k, v split as one tensor or fused in another order, q and k in Meta's rotary layout.
    `same(t)`: whether the held tensor is `t` (a plan's read, in the model dtype), as an FP8 one within e4m3's
    rounding. Returns the verb for one tensor, for several, and the rest of the line; None where nothing explains it."""
    for q, plan in enumerate(plans):
        if q != r and name in plan and same(plan[name].read()):
            return "equals", "equal", f"rank {q}'s: the rank files are swapped or renamed: re-convert"
    p, tp = plans[r][name], layout.tp_size(cfg)
    for other, o in plans[r].items():
        if other != name and _crossable(other, name) and o.shape == p.shape and same(o.read()):
            return "holds", "hold", f"what {other} should ({', '.join(o.sources) or other}): crossed: re-convert"
    want = p.read()
    if want.dim() == 2 and want.shape[0] == want.shape[1] and same(want.T.contiguous()):
        return "is", "are", "transposed ([out, in] is TensorRT-LLM's order, as Hugging Face's): re-convert"
    if split_of(name, cfg) == "qkv" and p.src is not None:
        fused = torch.cat([p.src.get(s) for s in p.sources])
        if tp > 1 and same(fused.narrow(0, *_span(fused.shape[0], r, tp)).to(want.dtype)):
            return "is", "are", (f"split as one tensor by rows, where TensorRT-LLM splits q, k and v each by heads "
                                 f"and fuses each rank's q, k, v: {RECONVERT}")
        parts = torch.split(want, _qkv_rows(cfg, want.shape[0]))
        for order in list(itertools.permutations(range(3)))[1:]:
            if same(torch.cat([parts[i] for i in order])):
                return "holds", "hold", (f"q, k and v in the order {', '.join('qkv'[i] for i in order)}, where "
                                         f"TensorRT-LLM fuses them q, k, v: {RECONVERT}")
        hd = cfg.get("head_size") or cfg["hidden_size"] // cfg["num_attention_heads"]
        if same(torch.cat([_interleaved(parts[0], hd), _interleaved(parts[1], hd), parts[2]])):
            return "holds", "hold", ("q and k in Meta's interleaved rotary layout, where TensorRT-LLM's rope_gpt_neox "
                                     "takes Hugging Face's (transformers' convert_llama_weights_to_hf permutes them): "
                                     "convert from the Hugging Face model")
    return None


def _interleaved(rows: torch.Tensor, hd: int) -> torch.Tensor:
    """q or k rows [heads x hd, ...] in Hugging Face's rotary layout (each head's first half, then its second) put
    back in Meta's original one (the halves' rows interleaved: 0, hd/2, 1, hd/2 + 1, ...)."""
    return rows.reshape(-1, 2, hd // 2, *rows.shape[1:]).transpose(1, 2).reshape(rows.shape)


def _crossable(other: str, name: str) -> bool:
    """Whether `other` is a tensor `name` may have been crossed with: one of its layer's (or group's), or the same
    tensor of the layer before or after (a converter's layer index off by one)."""
    if _layer(other) == _layer(name):
        return True
    a, b = TRTLLM_LAYER_INDEX.match(other), TRTLLM_LAYER_INDEX.match(name)
    return bool(a and b and a.group(2) == b.group(2) and abs(int(a.group(1)) - int(b.group(1))) == 1)


def _layer(name: str) -> str:
    """The group a tensor may be crossed with another in: its layer's (`transformer.layers.3`), the drafter's, or the
    rest of the base's (the embedding, ln_f and lm_head)."""
    parts = name.split(".")
    if parts[:2] == ["transformer", "layers"]:
        return ".".join(parts[:3])
    return "drafter" if parts[0] == "drafter" else "base"


def _span(n: int, r: int, tp: int) -> tuple[int, int]:
    start, stop = even_range(n, r, tp)
    return start, stop - start


def _qkv_rows(cfg: dict, rows: int) -> list[int]:
    tp = layout.tp_size(cfg)
    nh, nkv = cfg["num_attention_heads"], cfg.get("num_key_value_heads") or cfg["num_attention_heads"]
    hd = rows // (nh // tp + 2 * max(nkv // tp, 1))
    return [nh // tp * hd, max(nkv // tp, 1) * hd, max(nkv // tp, 1) * hd]


def _differing(got: torch.Tensor, want: torch.Tensor) -> str:
    if got.element_size() == 1 and want.element_size() > 1:
        return "FP8 values outside e4m3's rounding of the base's"
    a, b = got.float(), want.float()
    return f"{int((a != b).sum())} of {a.numel()} values, by up to {float((a - b).abs().max()):.3g}"
