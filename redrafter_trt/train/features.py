"""Teacher-forced hidden states of the frozen base, computed once and cached: training epochs never run the
base again (the naive loop that re-ran it every batch managed 60 to 80 positions per second on 2 cores).

Layout (`Features`): every example's tokens are concatenated, each followed by one sentinel (id 0, mask
False) so that no draft window crosses into the next example; `anchors` are the flat positions t whose next
two tokens are assistant tokens (the only positions a drafter step can learn from, and the positions the
runtime drafts from: t = the last accepted token, t+1 = the guaranteed token); `hidden` holds the base's last
hidden state (after the final norm) at each anchor, in float16 unless that overflows.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ..errors import TensorError
from ..io import read_safetensors, write_safetensors
from ..output import atomic_file, sweep_partials
from .data import Example

log = logging.getLogger(__name__)


@dataclass
class Features:
    tokens: torch.Tensor   # [Ntok] int64, examples concatenated with a sentinel after each, plus a tail pad
    mask: torch.Tensor     # [Ntok] bool, True = assistant token
    anchors: torch.Tensor  # [Na] int64 flat index t of each anchor
    hidden: torch.Tensor   # [Na, H] float16/float32, base hidden state at t

    def to(self, device) -> "Features":
        """tokens, mask and anchors on `device`; the hidden states stay in host memory (a large distillation's are
        bigger than a GPU: 50k answers x 256 tokens of an 8B base are 105 GB) and each batch's rows travel."""
        return Features(self.tokens.to(device), self.mask.to(device), self.anchors.to(device), self.hidden)

    def hidden_at(self, idx: torch.Tensor) -> torch.Tensor:
        """The hidden states of anchors `idx` [B] as float32 [B, H], on idx's device."""
        return self.hidden[idx.to(self.hidden.device)].to(idx.device).float()

    def windows(self, idx: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """For anchors `idx` [B]: tokens t+1..t+k+1 [B, k+1] and the validity of drafter step i [B, k]
        (tokens t+1..t+i+2 all assistant tokens)."""
        t = self.anchors[idx]
        offs = torch.arange(1, k + 2, device=t.device)
        pos = t[:, None] + offs[None, :]
        win, m = self.tokens[pos], self.mask[pos]
        valid = m.cumprod(dim=1)[:, 1:].bool()
        return win, valid


def flatten(examples: list[Example], tail: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[int]]:
    """Concatenated tokens [Ntok], mask [Ntok], anchors [Na] and each example's start offset."""
    tokens, mask, starts = [], [], []
    for ex in examples:
        starts.append(len(tokens))
        tokens.extend(ex.ids)
        tokens.append(0)
        mask.extend(ex.mask)
        mask.append(False)
    tokens.extend([0] * tail)
    mask.extend([False] * tail)
    tok, m = torch.tensor(tokens, dtype=torch.long), torch.tensor(mask, dtype=torch.bool)
    anchors = (m[1:-1] & m[2:]).nonzero().squeeze(1)
    return tok, m, anchors, starts


def cache_key(base_id: str, examples: list[Example]) -> str:
    h = hashlib.sha1(base_id.encode())
    for ex in examples:
        h.update(torch.tensor(ex.ids, dtype=torch.int32).numpy().tobytes())
        h.update(bytes(ex.mask))
    return h.hexdigest()[:16]


def file_metadata(base_key: str) -> dict[str, str]:
    """A cache file's safetensors metadata: the id of the base it was computed with (cache.prune_superseded)."""
    return {"base_id": base_key.partition("-")[0]}


def _assemble(examples: list[Example], starts: list[int], anchors: torch.Tensor) -> torch.Tensor:
    """The anchors' rows of the examples' own hidden states [Na, H], read one example at a time."""
    out = None
    for i, ex in enumerate(examples):
        rows = ex.hidden.load()
        if not torch.isfinite(rows).all():  # else the first step's loss is NaN, and the error blames --lr
            raise TensorError(f"{ex.hidden.path} holds inf or NaN hidden states of the base (cached before float16 "
                              f"overflow was kept in float32, or a base overflowing in its --base-dtype): delete "
                              f"{ex.hidden.path.parent} and rerun, with --base-dtype float32 if it recurs")
        if out is None:
            out = torch.zeros((len(anchors), rows.shape[1]), dtype=rows.dtype)
        elif out.dtype != rows.dtype:  # an answer kept in float32 (float16 overflows): all of them, not inf
            out = out.to(torch.promote_types(out.dtype, rows.dtype))
        lo, hi = torch.searchsorted(anchors, torch.tensor([starts[i], starts[i] + len(ex.ids)])).tolist()
        out[lo:hi] = rows[anchors[lo:hi] - starts[i] - ex.hidden_from]
    return out


@torch.inference_mode()
def compute_hidden(model, examples: list[Example], starts: list[int], anchors: torch.Tensor, *,
                   token_budget: int = 4096, on_batch: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Base last hidden states at the anchors [Na, H] (float32), in batches of about `token_budget` tokens.

    Right padding needs no attention mask: attention is causal, so real positions never see the padding.
    """
    device, dtype = next(model.parameters()).device, next(model.parameters()).dtype
    H = model.config.hidden_size
    out = torch.zeros((len(anchors), H), dtype=torch.float32)
    order = sorted(range(len(examples)), key=lambda i: -len(examples[i].ids))
    b = 0
    if on_batch:  # the bar from the start, as distill's
        on_batch(0, len(order))
    while b < len(order):
        longest = len(examples[order[b]].ids)
        n = max(1, token_budget // max(longest, 1))
        batch = order[b: b + n]
        ids = torch.zeros((len(batch), longest), dtype=torch.long)
        for r, i in enumerate(batch):
            ids[r, : len(examples[i].ids)] = torch.tensor(examples[i].ids)
        h = model.model(input_ids=ids.to(device), use_cache=False).last_hidden_state.float().cpu()
        for r, i in enumerate(batch):  # anchors are sorted: example i owns rows lo:hi
            lo, hi = torch.searchsorted(anchors, torch.tensor([starts[i], starts[i] + len(examples[i].ids)])).tolist()
            out[lo:hi] = h[r, anchors[lo:hi] - starts[i]]
        b += n
        if on_batch:
            on_batch(min(b, len(order)), len(order))
    if not torch.isfinite(out).all():  # else the first step's loss is NaN, and the error blames --lr
        raise TensorError(f"the base's hidden states hold inf or NaN (computed in "
                          f"{str(dtype).removeprefix('torch.')}): its weights are broken or overflow there: check the "
                          f"base, or pass --base-dtype float32")
    return out


def build_features(examples: list[Example], predict_n: int, cache_dir: Path, base_id: str, load_model: Callable,
                   on_batch: Callable[[int, int], None] | None = None) -> Features:
    """Features for `examples`: from the hidden states they carry (distilled data), else read from `cache_dir`
    when computed before for the same base and tokens, else computed with the base and cached."""
    tokens, mask, anchors, starts = flatten(examples, tail=predict_n + 2)
    if all(ex.hidden is not None for ex in examples):
        return Features(tokens, mask, anchors, _assemble(examples, starts, anchors))
    path = Path(cache_dir) / f"hidden-{cache_key(base_id, examples)}.safetensors"
    if path.exists():
        hidden = read_safetensors(path)["hidden"]
        if hidden.shape[0] == len(anchors) and torch.isfinite(hidden).all():
            log.info("reusing cached hidden states %s", path)
            return Features(tokens, mask, anchors, hidden)
        if hidden.shape[0] == len(anchors):  # cached before a base computing them was refused: reused, the first
            # step's loss was NaN and the error blamed --lr; computed again, a broken base is named with its fix
            log.warning("cached hidden states %s hold inf or NaN: computing them again", path)
    start = time.perf_counter()
    hidden = compute_hidden(load_model(), examples, starts, anchors, on_batch=on_batch)
    ntok = sum(len(ex.ids) for ex in examples)
    log.info("teacher-forced %d tokens in %.0f s (%.0f tokens/s)", ntok, time.perf_counter() - start,
             ntok / max(time.perf_counter() - start, 1e-9))
    half = hidden.half()
    if torch.isfinite(half).all():
        hidden = half
    path.parent.mkdir(parents=True, exist_ok=True)
    # every key's, not only this one's (atomic_file's): the run after an out-of-memory kill mid-write usually has fewer
    # examples, another key, and the killed run's partial (~100 GB for an 8B base) was never removed
    sweep_partials(path.parent, "hidden-*.safetensors")
    with atomic_file(path) as tmp:  # a name of this run's own: runs sharing the cache once wrote one `.partial`
        write_safetensors(tmp, {"hidden": hidden}, file_metadata(base_id))
    return Features(tokens, mask, anchors, hidden)
