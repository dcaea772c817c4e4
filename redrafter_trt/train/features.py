"""Teacher-forced hidden states of the frozen base, computed once and cached: training epochs never run the
base again (the naive loop that re-ran it every batch managed 60 to 80 positions per second on 2 cores).

Layout (`Features`): every example's tokens are concatenated, each followed by one sentinel (id 0, mask
False) so that no draft window crosses into the next example; `anchors` are the flat positions t whose next
two tokens are assistant tokens (the only positions a drafter step can learn from, and the positions the
runtime drafts from: t = the last accepted token, t+1 = the guaranteed token); `hidden` holds the base's last
hidden state (after the final norm) at each anchor, in float16 unless that overflows (float32 then).

The teacher-forced pass (reference answers; distilled ones carry theirs) is cached chunk by chunk (chunks.py), each
chunk written whole as soon as it is done with the device and the dtype that computed it: an interrupted pass (hours
for an 8B base) goes on after its last chunk when rerun, and computes again the chunks of another dtype. Chunks another
device computed (another kind, or another GPU model or CPU bfloat16) are reused, saying so (a pass made on a GPU would
take days again on a CPU; its hidden states differ from a CPU's in rounding only, so the features are then not exactly
those of one pass here).
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
from ..io import read_safetensors
from .chunks import (chunk_name, computed_on, read_chunk, remove_broken, warn_computed_elsewhere, write_chunk,
                     writing_pass)
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


TOKEN_BUDGET = 4096  # tokens a teacher-forced batch holds (longest example x rows)
# examples' tokens a cached chunk of hidden states covers: a pass interrupted (Ctrl-C, SIGTERM, a lost node) loses the
# chunk under way only: at most 1 GB of an 8B base's float16 rows (a 100 GB pass is ~100 files), about 6 minutes of
# SmolLM2-135M in float32 on one CPU thread (390 tokens/s, session 44)
CHUNK_TOKENS = 1 << 17


def plan(examples: list[Example]) -> list[list[list[int]]]:
    """The teacher-forced pass as chunks of batches of example indices: longest examples first, batches of about
    TOKEN_BUDGET tokens, chunks of about CHUNK_TOKENS. A function of the examples alone: a rerun after an
    interruption computes the chunks left in the batches an uninterrupted run would have (in bfloat16 a row's hidden
    states depend on the rows batched with it)."""
    order = sorted(range(len(examples)), key=lambda i: -len(examples[i].ids))
    chunks, chunk, tokens, b = [], [], 0, 0
    while b < len(order):
        n = max(1, TOKEN_BUDGET // max(len(examples[order[b]].ids), 1))
        chunk.append(order[b: b + n])
        tokens += sum(len(examples[i].ids) for i in chunk[-1])
        b += n
        if tokens >= CHUNK_TOKENS or b >= len(order):
            chunks.append(chunk)
            chunk, tokens = [], 0
    return chunks


def _rows(examples: list[Example], starts: list[int], anchors: torch.Tensor, i: int) -> torch.Tensor:
    """The anchor indices (rows of Features.hidden) in example i (anchors are sorted: a contiguous range)."""
    lo, hi = torch.searchsorted(anchors, torch.tensor([starts[i], starts[i] + len(examples[i].ids)])).tolist()
    return torch.arange(lo, hi)


@torch.inference_mode()
def compute_hidden(model, examples: list[Example], starts: list[int], anchors: torch.Tensor, batches: list[list[int]],
                   on_batch: Callable[[int], None] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The rows [n] of the anchors in `batches`' examples, in batch order, and the base's last hidden states there
    [n, H] (float32). on_batch(examples) follows each batch.

    Right padding needs no attention mask: attention is causal, so real positions never see the padding.
    """
    device, dtype = next(model.parameters()).device, next(model.parameters()).dtype
    rows, hidden = [], []
    for batch in batches:
        longest = max(len(examples[i].ids) for i in batch)
        ids = torch.zeros((len(batch), longest), dtype=torch.long)
        for r, i in enumerate(batch):
            ids[r, : len(examples[i].ids)] = torch.tensor(examples[i].ids)
        h = model.model(input_ids=ids.to(device), use_cache=False).last_hidden_state.float().cpu()
        for r, i in enumerate(batch):
            rows.append(_rows(examples, starts, anchors, i))
            hidden.append(h[r, anchors[rows[-1]] - starts[i]])
        if on_batch:
            on_batch(len(batch))
    out = torch.cat(hidden)
    if not torch.isfinite(out).all():  # else the first step's loss is NaN, and the error blames --lr
        raise TensorError(f"the base's hidden states hold inf or NaN (computed in "
                          f"{str(dtype).removeprefix('torch.')}): its weights are broken or overflow there: check the "
                          f"base, or pass --base-dtype float32")
    return torch.cat(rows), out


def hidden_folder(cache_dir: Path, base_id: str, examples: list[Example]) -> Path:
    """Where the teacher-forced hidden states of `examples` are cached, one file per chunk of `plan`: named by the base
    id (`base_id` is base_key's "ID-DTYPE"), as distill folders are, for cache.prune_superseded."""
    return Path(cache_dir) / f"hidden-{base_id}-{cache_key(base_id, examples)}"


class _Rows:
    """Features.hidden as its chunks arrive: float16, float32 from the first chunk kept in it (float16 overflows)."""

    def __init__(self, n: int):
        self.n, self.out = n, None

    def put(self, rows: torch.Tensor, hidden: torch.Tensor) -> None:
        if self.out is None:
            self.out = torch.zeros((self.n, hidden.shape[1]), dtype=hidden.dtype)
        elif self.out.dtype != hidden.dtype:
            self.out = self.out.to(torch.promote_types(self.out.dtype, hidden.dtype))
        self.out[rows] = hidden.to(self.out.dtype)


def _legacy(cache_dir: Path, base_id: str, examples: list[Example], n: int) -> torch.Tensor | None:
    """The hidden states a version before session 44 cached in one file, `hidden-KEY.safetensors`, written only at the
    end of the pass (hours for an 8B base): still read."""
    path = Path(cache_dir) / f"hidden-{cache_key(base_id, examples)}.safetensors"
    if not path.exists():
        return None
    try:
        hidden = read_safetensors(path, fix="computing the hidden states again")["hidden"]
    except TensorError as e:  # cut short (a disk filled up, a partial copy): a cache file, not a download
        log.warning("%s", e)
        remove_broken(path, e)  # read before the chunks: named again at every run
        return None
    if hidden.shape[0] == n and torch.isfinite(hidden).all():
        log.info("reusing cached hidden states %s", path)
        return hidden
    if hidden.shape[0] == n:
        log.warning("cached hidden states %s hold inf or NaN: computing them again", path)
    return None


def build_features(examples: list[Example], predict_n: int, cache_dir: Path, base_id: str, load_model: Callable,
                   on_batch: Callable[[int, int], None] | None = None, *, device: torch.device | str = "cpu",
                   dtype: torch.dtype = torch.float32) -> Features:
    """Features for `examples`: from the hidden states they carry (distilled data), else computed with the base, chunk
    by chunk (`plan`), each chunk cached in `hidden_folder` as soon as it is done; a chunk cached before (a run
    interrupted, or another run on the same base and tokens) is read, not computed, unless computed in another dtype
    than `dtype`, that of load_model()'s base; those another device than `device` computed are read, with a
    warning (chunks written before session 46 record the kind of device alone, compared alone; before session 45,
    neither: reused). on_batch(examples done, total) precedes the
    first batch computed, counting those read, and follows each."""
    tokens, mask, anchors, starts = flatten(examples, tail=predict_n + 2)
    if all(ex.hidden is not None for ex in examples):
        return Features(tokens, mask, anchors, _assemble(examples, starts, anchors))
    legacy = _legacy(cache_dir, base_id, examples, len(anchors))
    if legacy is not None:
        return Features(tokens, mask, anchors, legacy)
    folder, chunks = hidden_folder(cache_dir, base_id, examples), plan(examples)
    out, todo, reused, devices = _Rows(len(anchors)), [], 0, []
    here = computed_on(device, dtype)
    for c, batches in enumerate(chunks):
        rows = torch.cat([_rows(examples, starts, anchors, i) for batch in batches for i in batch])
        path = folder / chunk_name(c, len(chunks))
        chunk = read_chunk(path, rows, {"dtype": here["dtype"]}) if path.exists() else None
        if chunk is None:
            todo.append((path, batches))
        else:
            saved, recorded = chunk
            out.put(rows, saved["hidden"])
            reused += sum(map(len, batches))
            devices.append((folder, recorded))
    warn_computed_elsewhere("hidden states", devices, here)
    if not todo:
        log.info("reusing cached hidden states %s", folder)
        return Features(tokens, mask, anchors, out.out)
    with writing_pass(folder):
        hidden = _teacher_force(examples, starts, anchors, folder, base_id, todo, reused, out, load_model, on_batch)
    return Features(tokens, mask, anchors, hidden)


def _teacher_force(examples: list[Example], starts: list[int], anchors: torch.Tensor, folder: Path, base_id: str,
                   todo: list, reused: int, out: _Rows, load_model: Callable,
                   on_batch: Callable[[int, int], None] | None) -> torch.Tensor:
    """build_features' chunks left to compute, each written to its file in `folder` as it is done: Features.hidden."""
    model = load_model()
    weight = next(model.parameters())
    metadata = {**file_metadata(base_id), **computed_on(weight.device, weight.dtype)}
    log.info("teacher-forcing %d of %d examples (%d cached) into %s", len(examples) - reused, len(examples), reused,
             folder)
    start, done = time.perf_counter(), reused
    if on_batch:  # the bar from the start, as distill's, with what was read
        on_batch(done, len(examples))

    def batch_done(n: int) -> None:
        nonlocal done
        done += n
        if on_batch:
            on_batch(done, len(examples))

    for path, batches in todo:
        rows, hidden = compute_hidden(model, examples, starts, anchors, batches, batch_done)
        half = hidden.half()
        if torch.isfinite(half).all():
            hidden = half
        write_chunk(path, {"rows": rows, "hidden": hidden}, metadata)
        out.put(rows, hidden)
    ntok = sum(len(examples[i].ids) for _, batches in todo for batch in batches for i in batch)
    secs = time.perf_counter() - start
    log.info("teacher-forced %d tokens in %.0f s (%.0f tokens/s)", ntok, secs, ntok / max(secs, 1e-9))
    return out.out
