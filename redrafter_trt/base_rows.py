"""Rows of a base model's tensors by their Hugging Face names, read without loading the model (a few KiB of a GB
tensor): from a Hugging Face folder, or from a TensorRT-LLM checkpoint's rank files with each rule's tp split undone
(rules.py, shard.py). What base_sample compares a drafter's record with, and bench a checkpoint with its Hugging Face
base. Both have dtype(name) (None: not held, or held quantised), shape(name) (the Hugging Face tensor's), rows(name,
rows) (float32, [len(rows), columns]) and close().
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from . import layout
from .base_plan import hf_lm_head
from .errors import TensorError
from .io import WEIGHT_DTYPES, TensorSource
from .rules import EMBEDDING, LAYER_RULES, MODEL_RULES, embedding_split
from .shard import qkv_home, row_home

UNQUANTISED = ("F32", "F16", "BF16")
LAYER = re.compile(r"model\.layers\.(\d+)\.(.+)")


def read_rows(src, name: str, rows: list[int]) -> torch.Tensor:
    """Rows `rows` of `name` ([rows, cols]) in float32, read one at a time."""
    return torch.cat([src.get(name, 0, r, r + 1) for r in rows]).float()


class HfRows:
    """A Hugging Face folder's tensors; lm_head.weight is the embedding of a tied model that stores no lm_head."""

    def __init__(self, src: TensorSource):
        self.src = src

    def _held(self, name: str) -> str | None:
        held = hf_lm_head(self.src) if name == "lm_head.weight" else name
        return held if held in self.src.names() else None

    def dtype(self, name: str) -> str | None:
        """None also for a dtype no reader takes (complex, FP8 without its scales: cast to float): not
        comparable, and refused by name where the base's tensors are checked (check_hf_tensors)."""
        held = self._held(name)
        dtype = None if held is None else self.src.dtype(held)
        return dtype if dtype in WEIGHT_DTYPES else None

    def shape(self, name: str) -> tuple[int, ...]:
        return self.src.shape(self._held(name))

    def rows(self, name: str, rows: list[int]) -> torch.Tensor:
        return read_rows(self.src, self._held(name), rows)

    def close(self) -> None:
        self.src.close()


class TrtllmRows:
    """A TensorRT-LLM checkpoint's base tensors (`cfg`: its config.json), by the Hugging Face names they were
    converted from, each row read from the rank file holding it (a row-parallel linear's from every rank). A fused
    qkv's k and v rows are read after its q rows; a kv head repeated over ranks, on the first. An FP8 checkpoint's
    quantised linears are not comparable. `fix`: what an unreadable rank file asks of the user."""

    def __init__(self, folder: Path, cfg: dict, fix: str | None = None):
        self.folder, self.cfg, self.fix = Path(folder), cfg, fix
        self.tp = layout.tp_size(cfg)
        self._ranks: dict[int, TensorSource] = {}

    def _rank(self, rank: int) -> TensorSource:
        if rank not in self._ranks:
            self._ranks[rank] = TensorSource.from_files([self.folder / f"rank{rank}.safetensors"], fix=self.fix)
        return self._ranks[rank]

    def _rule(self, name: str) -> tuple[str, str, int] | None:
        """(the checkpoint's tensor, its split, the part of a fused one) holding `name`; None for another layer
        count's layer or a tensor no rule converts."""
        layer = LAYER.fullmatch(name)
        if layer and int(layer[1]) >= self.cfg["num_hidden_layers"]:
            return None
        rules, source = (LAYER_RULES, f"model.layers.{{L}}.{layer[2]}") if layer else (MODEL_RULES, name)
        for rule in rules:
            if source in rule.sources:
                split = embedding_split(self.cfg) if rule.dest == EMBEDDING else rule.split
                return rule.dest.format(L=layer and layer[1]), split, rule.sources.index(source)
        return None

    def dtype(self, name: str) -> str | None:
        found = self._rule(name)
        if found is None or found[0] not in self._rank(0).names():
            return None
        dtype = self._rank(0).dtype(found[0])
        return dtype if dtype in UNQUANTISED else None

    def shape(self, name: str) -> tuple[int, ...]:
        dest, split, part = self._rule(name)
        rows, *cols = self._rank(0).shape(dest)
        if split == "qkv":
            heads = self.cfg["num_attention_heads"] if part == 0 else self._kv_heads()
            rows = heads * self._head_size()
        elif split == "vocab":
            rows = self.cfg["vocab_size"]
        elif split == "rows":
            rows *= self.tp
        elif split == "cols" and cols:
            cols = [cols[0] * self.tp]
        return (rows, *cols)

    def _kv_heads(self) -> int:
        return self.cfg.get("num_key_value_heads") or self.cfg["num_attention_heads"]

    def _head_size(self) -> int:
        return self.cfg.get("head_size") or self.cfg["hidden_size"] // self.cfg["num_attention_heads"]

    def rows(self, name: str, rows: list[int]) -> torch.Tensor:
        dest, split, part = self._rule(name)
        n = self.shape(name)[0]
        out = []
        for r in rows:
            if split == "cols":
                out.append(torch.cat([self._row(k, r, dest) for k in range(self.tp)]))
            elif split == "qkv":
                out.append(self._row(*qkv_home(part, r, self.cfg["num_attention_heads"], self._kv_heads(),
                                               self._head_size(), self.tp), dest))
            else:
                out.append(self._row(*(row_home(n, r, self.tp) if split != "replicate" else (0, r)), dest))
        return torch.stack(out)

    def _row(self, rank: int, row: int, dest: str) -> torch.Tensor:
        src = self._rank(rank)
        if dest not in src.names() or row >= src.shape(dest)[0]:  # a checkpoint convert refuses next
            raise TensorError(f"{self.folder}/rank{rank}.safetensors has no row {row} of {dest}")
        return src.get(dest, 0, row, row + 1)[0].float()

    def close(self) -> None:
        for src in self._ranks.values():
            src.close()
