"""A tp=N checkpoint run in one process, as `bench` and `acceptance` measure it: every rank file read
(`model.read_rank_file`) and each tensor's N ranks joined back into its tp=1 tensor by its split kind
(`rules.split_of`, then `shard.MERGES`: the exact inverse of the converter's split, rules.py's table). A tp=2
conversion merged is its tp=1 conversion bit for bit (tests/test_tp_merge.py).

What the merged model computes: each column-parallel product (qkv, fc, gate, lm_head, every drafter linear) row for
row what its rank computes, each row-parallel one (dense, proj) the same sum in one product where the ranks add tp
partial sums (the all-reduce). Its tokens are those of the runtime's tp=N run (`run --tp N`) up to the order of
those sums: a greedy near-tie, rarely.

FP8: read_rank_file dequantises each rank's FP8 linears with that rank's own `weights_scaling_factor` before they
are joined, so the merged weights are the ones each rank multiplies by (the runtime computes with dequantised
weights at any tp), whether or not the ranks' scales agree, but for a kv head repeated over ranks (nkv < tp),
whose k and v rows are taken from its first rank. modelopt's export gives every rank of a split weight the scale of
the whole tensor, taken before the split: merged, an FP8 tp export is its tp=1 export's dequantised weights bit for
bit.

Memory: the whole model is held once (each rank's tensors are dropped as they are joined), and the largest tensor
twice while it is joined; the runtime then casts it to its dtype as `load` does any rank file.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from ..layout import tp_size
from ..rules import split_of
from ..shard import MERGES
from .config import RuntimeConfig
from .folder import Checkpoint, open_checkpoint
from .model import read_rank_file


def merge_tensors(ranks: list[dict[str, torch.Tensor]], raw: dict) -> dict[str, torch.Tensor]:
    """Every tensor of a tp checkpoint's ranks (`ranks[r]`: rank r's, emptied as they are joined; `raw`: its
    config.json) as its tp=1 tensor."""
    cfg = RuntimeConfig.from_dict(raw)
    return {name: MERGES[split_of(name, raw)]([rank.pop(name) for rank in ranks], cfg) for name in list(ranks[0])}


def merged_tensors(folder: Path | str, raw: dict) -> dict[str, torch.Tensor]:
    """Every rank file of the checkpoint in `folder` (`raw`: its config.json) read and merged into tp=1 tensors."""
    return merge_tensors([read_rank_file(Path(folder), r) for r in range(tp_size(raw))], raw)


def merge_ranks(ckpt: Checkpoint | Path | str) -> Checkpoint:
    """A checkpoint (opened first, `open_checkpoint`, when a folder is given) as one process runs it: its config at
    tp 1, which `load` takes as its rank files merged (`Checkpoint.merged`). Its `raw` stays the folder's
    config.json, by which its rank files are read (bench's base rows, base_rows.TrtllmRows), its producer block
    saying how they were made. A tp=1 one as it is."""
    ckpt = open_checkpoint(ckpt)
    return replace(ckpt, config=replace(ckpt.config, tp_size=1)) if ckpt.config.tp_size > 1 else ckpt
