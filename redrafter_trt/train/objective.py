"""The drafter's training objective (Apple's): for an anchor t with base hidden state h_t, drafter step i
(i = 0..k-1) predicts token t+i+2 from h_t and the state after the embeddings of tokens t+1..t+i+1; the loss is
the sum over steps of each step's mean cross-entropy. The target of a step is the distilled token, or (soft
targets, `Teacher`) a mix of it with the base's own top-K distribution for that position, computed from the
cached hidden states through the base lm_head: more signal per answer token (measured on SmolLM2: +0.6 to 0.8
points of top-1 per draft step on held-out and MT-Bench answers at 0.5 or 1.0, same steps).

The final projection [V, E] is nearly all of the cost (V = 49152 for SmolLM2). Two levers:
- `FusedCrossEntropy` computes logits chunk by chunk and forms the gradients in the same pass (softmax minus
  one-hot), so the [rows, V] logits never exist whole and are never recomputed; with the head frozen it does
  two matmuls per chunk instead of three.
- `Head` may keep only the rows of the tokens seen in the training data (C); the saved drafter gets zero rows
  for every other token. The loss is still the exact full-vocabulary cross-entropy of that saved drafter: the
  V - |C| zero rows all have logit 0 and enter the softmax as one term log(V - |C|). A drafter never proposes
  a token it never saw, and training costs |C| / V of the full head (about 1/6 for SmolLM2 on chat data).
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from ..drafter import Drafter
from ..errors import TensorError
from ..io import all_finite, read_safetensors
from .chunks import (chunk_name, computed_on, read_chunk, remove_broken, warn_computed_elsewhere, write_chunk,
                     writing_pass)
from .features import Features, cache_key

log = logging.getLogger(__name__)

class FusedCrossEntropy(torch.autograd.Function):
    """loss = sum_r w_r * CE(logits_r, target distribution_r), logits_r = [feats_r @ weight.T, n_zero zeros];
    also returns correct_r = (argmax == target_r). The target distribution is one-hot on target_r (a target of
    -1 is one of the zero-logit tokens, never counted correct), or with `soft` = (ids [R, K] in [0, Vc),
    probs [R, K]) the mix (1 - sum_j probs_rj) * one-hot + sum_j probs_rj * one-hot(ids_rj). With `mm_dtype`
    (bfloat16) the three products run in it (2.6x faster on a CPU with AVX512-BF16); logits, softmax, loss and
    gradients stay float32, as in mixed-precision training.

    feats [R, E], weight [Vc, E], targets [R] in [-1, Vc), row_w [R] -> (loss [], correct [R] bool)
    """

    @staticmethod
    def forward(ctx, feats, weight, targets, row_w, n_zero: int, chunk: int, soft=None, mm_dtype=None):
        need_f, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        mm = mm_dtype or feats.dtype
        weight_mm = weight.to(mm)
        loss = feats.new_zeros(())
        correct = torch.empty(len(feats), dtype=torch.bool, device=feats.device)
        grad_f = torch.empty_like(feats) if need_f else None
        grad_w = torch.zeros_like(weight) if need_w else None
        for s in range(0, len(feats), chunk):
            f, y, w = feats[s: s + chunk].to(mm), targets[s: s + chunk], row_w[s: s + chunk]
            logits = (f @ weight_mm.T).float()  # [C, Vc]
            best, arg = logits.max(-1)
            correct[s: s + chunk] = (arg == y) & ((best > 0) if n_zero else True)
            lse = torch.logsumexp(logits, -1)
            if n_zero:
                lse = torch.logaddexp(lse, torch.tensor(math.log(n_zero), dtype=lse.dtype, device=lse.device))
            seen = y >= 0
            hard_p = torch.ones_like(lse)
            target_logit = torch.zeros_like(lse)
            if soft is not None:
                ids, probs = soft[0][s: s + chunk], soft[1][s: s + chunk]
                hard_p = hard_p - probs.sum(1)
                target_logit = (logits.gather(1, ids) * probs).sum(1)
            target_logit = target_logit + torch.where(seen, hard_p * logits.gather(1, y.clamp(min=0)[:, None]).squeeze(1), 0.0)
            loss += (w * (lse - target_logit)).sum()
            if need_f or need_w:
                g = logits.sub_(lse[:, None]).exp_()  # softmax over the kept rows, in place
                rows = seen.nonzero().squeeze(1)
                g[rows, y[rows]] -= hard_p[rows]
                if soft is not None:
                    g.scatter_add_(1, ids, -probs)
                g = g.mul_(w[:, None]).to(mm)
                if need_f:
                    grad_f[s: s + chunk] = g @ weight_mm
                if need_w:
                    if mm == grad_w.dtype:
                        grad_w.addmm_(g.T, f)
                    else:
                        grad_w += (g.T @ f).float()
        ctx.save_for_backward(grad_f, grad_w)
        ctx.mark_non_differentiable(correct)
        return loss, correct

    @staticmethod
    def backward(ctx, grad_loss, _grad_correct):
        grad_f, grad_w = ctx.saved_tensors
        return (grad_f * grad_loss if grad_f is not None else None,
                grad_w * grad_loss if grad_w is not None else None, None, None, None, None, None, None)


# anchors a cached chunk of soft targets covers (a multiple of top_k's 4096, so that a chunk computes the same row
# blocks as a whole pass): an interruption loses at most this chunk, 4.5 MB, minutes of an 8B base's full head in
# float32 on a GPU
CHUNK_ROWS = 1 << 15
TEACHER_TOP_K = 16  # tokens of the base's distribution kept per position for soft targets


@torch.no_grad()
def top_k(hidden: torch.Tensor, rows: torch.Tensor, k: int, device: torch.device | str,
          chunk: int = 4096) -> tuple[torch.Tensor, torch.Tensor]:
    """The top-k token rows [N, k] and their probabilities [N, k] of softmax(hidden @ rows.T), for hidden [N, H] (any
    device) and rows [Vc, H] on `device`, computed there `chunk` rows of hidden at a time."""
    k = min(k, len(rows))
    ids = torch.empty((len(hidden), k), dtype=torch.long, device=device)
    probs = torch.empty((len(hidden), k), dtype=torch.float32, device=device)
    for s in range(0, len(hidden), chunk):
        p = torch.softmax(hidden[s: s + chunk].to(device).float() @ rows.T, -1)
        probs[s: s + chunk], ids[s: s + chunk] = p.topk(k, dim=-1)
    return ids, probs


@dataclass
class Teacher:
    """The base's own next-token distribution at every anchor, cut to its top K kept tokens: the soft target.

    ids [Na, K] rows of the pruned head, probs [Na, K] (softmax over the kept rows; the rest of the mass is
    dropped), weight: the share of the target given to it (the rest stays on the distilled token).
    The anchor t's row is the base's distribution for token t+1, which drafter step i of anchor t - i - 1
    predicts."""
    ids: torch.Tensor
    probs: torch.Tensor
    weight: float

    @classmethod
    def from_features(cls, feats: Features, base_head_rows: torch.Tensor, k: int, weight: float,
                      device: torch.device | str = "cpu") -> "Teacher":
        """base_head_rows [Vc, H]: the base lm_head's rows of the kept tokens (the pruned head's order). Computed on
        `device` (features stay where they are), and kept there. Fewer than k kept tokens (tiny data): all of them."""
        return cls(*top_k(feats.hidden, base_head_rows.to(device), k, device), weight)

    @classmethod
    def cached(cls, folder: Path, feats: Features, base_head_rows: torch.Tensor, k: int, weight: float,
               device: torch.device | str = "cpu", metadata: dict[str, str] | None = None,
               earlier: Sequence[tuple[str, Path]] = ()) -> "Teacher":
        """from_features, kept in `folder` for the next run on the same anchors and head rows (a --resume, another
        recipe on the same data): the one-hour recipe's took 1 to 3.5 minutes on 2 CPU cores, an 8B base's hours.
        Written chunk by chunk (chunks.py, CHUNK_ROWS anchors each) as it goes, each recording the device that computed
        it (chunks.computed_on): an interrupted pass goes on after its last whole chunk, to what an uninterrupted one
        gives. Chunks another device computed are reused, saying so (they differ in rounding only). `earlier`: the kind of
        device and the one file a version before session 45 kept them in (its key named the device), read when
        nothing is cached in `folder` and one of them holds them all."""
        n, rows, here = len(feats.anchors), base_head_rows.to(device), computed_on(device)
        shape = (n, min(k, len(rows)))
        ids = torch.empty(shape, dtype=torch.long, device=device)
        probs = torch.empty(shape, dtype=torch.float32, device=device)
        spans = [(s, min(s + CHUNK_ROWS, n)) for s in range(0, n, CHUNK_ROWS)]
        todo, reused = [], []
        for c, (s, e) in enumerate(spans):
            path = folder / chunk_name(c, len(spans))
            chunk = read_chunk(path, torch.arange(s, e), {}) if path.exists() else None
            if chunk is None:
                todo.append((path, s, e))
            else:
                saved, recorded = chunk
                ids[s:e], probs[s:e] = saved["ids"].long().to(device), saved["probs"].to(device)
                reused.append((folder, recorded))
        single = _first_single(earlier, shape) if len(todo) == len(spans) else None
        if single is not None:
            kind, path, (ids, probs) = single
            ids, probs, todo = ids.to(device), probs.to(device), []
            reused.append((path, {"device": kind}))
        warn_computed_elsewhere("soft targets", reused, here)
        if todo:
            with writing_pass(folder):
                for path, s, e in todo:
                    ids[s:e], probs[s:e] = top_k(feats.hidden[s:e], rows, k, device)
                    write_chunk(path, {"rows": torch.arange(s, e), "ids": ids[s:e].int().cpu(),
                                       "probs": probs[s:e].cpu()}, {**(metadata or {}), **here})
        return cls(ids, probs, weight)

    def for_steps(self, feats: Features, idx: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Soft targets of drafter steps 0..k-1 of anchors idx [B]: ids [B, k, K], probs [B, k, K] already scaled
        by the weight; zero where position t+i+1 is not an anchor (the target stays one-hot there)."""
        t = feats.anchors[idx]
        j = (idx[:, None] + torch.arange(1, k + 1, device=idx.device)).clamp(max=len(feats.anchors) - 1)
        ok = feats.anchors[j] == t[:, None] + torch.arange(1, k + 1, device=idx.device)
        return self.ids[j], self.probs[j] * (ok[..., None] * self.weight)


def _first_single(earlier: Sequence[tuple[str, Path]],
                  shape: tuple[int, int]) -> tuple[str, Path, tuple[torch.Tensor, torch.Tensor]] | None:
    """The first of the `earlier` (kind of device, single file) whose file holds soft targets of `shape`: those."""
    for kind, path in earlier:
        saved = _read_single(path, shape)
        if saved is not None:
            return kind, path, saved
    return None


def _read_single(path: Path, shape: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The soft-target ids and probabilities of `shape` [anchors, K] that a version before session 45 kept in one
    file (`teacher-KEY.safetensors`, its key the folder's and the kind of device's), or None when it is missing or holds others."""
    if not path.exists():
        return None
    try:
        saved = read_safetensors(path, fix="computing the soft targets again")
    except TensorError as e:
        log.warning("%s", e)
        remove_broken(path, e)
        return None
    ids, probs = saved.get("ids"), saved.get("probs")
    if ids is None or probs is None or {tuple(ids.shape), tuple(probs.shape)} != {shape} or not all_finite(probs):
        return None
    log.info("reusing cached soft targets %s", path)
    return ids.long(), probs


def soft_target_cache(cache_dir: Path, bid: str, examples: list, keep: torch.Tensor | None,
                      device: torch.device) -> tuple[Path, list[tuple[str, Path]]]:
    """The soft targets' chunk folder for the anchors of `examples` under the base `bid`, TEACHER_TOP_K and the kept
    head rows `keep` (None: all), whatever kind of device computes them (named by the base id, as hidden-* folders are,
    for cache.prune_superseded); and the single files versions before session 45 kept them in, their key naming the
    kind of device too: this device's kind first, then the others'."""
    data = f"{cache_key(bid, examples)} {TEACHER_TOP_K}"
    rows = b"all" if keep is None else keep.cpu().numpy().tobytes()

    def name(key: str) -> str:
        return hashlib.sha1(key.encode() + rows).hexdigest()[:16]

    kinds = [device.type, *(kind for kind in ("cuda", "cpu") if kind != device.type)]
    return (cache_dir / f"teacher-{bid}-{name(data)}",
            [(kind, cache_dir / f"teacher-{name(f'{data} {kind}')}.safetensors") for kind in kinds])


@dataclass
class Head:
    """The final projection as trained: rows of the kept tokens only.

    weight [Vc, E] (a view of, or a parameter standing in for, the drafter's [V, E]); keep [Vc] vocab ids of the
    rows, or None for the whole vocabulary; remap [V] vocab id -> row, -1 for dropped tokens; matmul_dtype: the
    dtype of its products in training (None: the weight's own).
    """
    weight: torch.Tensor
    keep: torch.Tensor | None
    remap: torch.Tensor | None
    vocab_size: int
    matmul_dtype: torch.dtype | None = None

    @classmethod
    def full(cls, weight: torch.Tensor) -> "Head":
        return cls(weight, None, None, weight.shape[0])

    @classmethod
    def pruned(cls, weight: torch.Tensor, keep: torch.Tensor, trainable: bool) -> "Head":
        """keep: sorted unique vocab ids [Vc]; the kept rows become their own (optionally trainable) tensor."""
        remap = torch.full((weight.shape[0],), -1, dtype=torch.long, device=weight.device)
        remap[keep] = torch.arange(len(keep), device=weight.device)
        rows = nn.Parameter(weight.detach()[keep].clone(), requires_grad=trainable)
        return cls(rows, keep, remap, weight.shape[0])

    @property
    def n_zero(self) -> int:
        return 0 if self.keep is None else self.vocab_size - len(self.keep)

    def targets(self, ids: torch.Tensor) -> torch.Tensor:
        return ids if self.remap is None else self.remap[ids]

    def full_weight(self) -> torch.Tensor:
        """[V, E]: the kept rows in place, zeros elsewhere."""
        if self.keep is None:
            return self.weight.detach()
        out = self.weight.new_zeros((self.vocab_size, self.weight.shape[1]))
        out[self.keep] = self.weight.detach()
        return out


@dataclass
class StepResult:
    loss: torch.Tensor     # [] (differentiable)
    correct: torch.Tensor  # [B, k] bool, False where invalid
    valid: torch.Tensor    # [B, k] bool

    def top1(self) -> list[float]:
        """Per-step top-1 accuracy over valid rows."""
        n = self.valid.sum(0).clamp(min=1)
        return (self.correct.sum(0) / n).tolist()

    def chained(self) -> list[float]:
        """Per-step chained accuracy: steps 0..i all right, over anchors where step i is valid."""
        chain = self.correct.cumprod(dim=1).bool() & self.valid
        return (chain.sum(0) / self.valid.sum(0).clamp(min=1)).tolist()


def drafter_step(drafter: Drafter, head: Head, embed: torch.Tensor, feats: Features, idx: torch.Tensor, k: int,
                 chunk: int = 1024, teacher: Teacher | None = None, later_sharpness: float = 1.0,
                 step_decay: float = 1.0, counts: torch.Tensor | None = None) -> StepResult:
    """Loss and accuracy of `drafter` (with `head` as its final projection) on anchors `idx` [B] for k draft
    steps; embed: base token embedding [V, H]; teacher: soft targets (else the distilled tokens only).

    later_sharpness S: steps 1..k-1 are scored on their logits divided by S, so the drafter learns raw logits
    S times sharper than calibrated there (step 0 stays calibrated). A beam search ranking beams by summed
    log-probs (TensorRT-LLM's) then keeps more distinct first tokens instead of several continuations of one.

    step_decay d: step i's mean cross-entropy weighs d**i, scaled so the k weights sum to k (d = 1: Apple's sum).

    counts [k]: the valid rows of each step the means are over (torchrun: every rank's batch, so that the ranks'
    summed losses and gradients are those of one process on the global batch); None: this batch's."""
    win, valid = feats.windows(idx, k)                       # [B, k+1], [B, k]
    h = feats.hidden_at(idx)                                 # [B, H]
    emb = nn.functional.embedding(win[:, :k], embed)          # [B, k, H]: tokens t+1..t+k
    state = torch.zeros_like(h)
    per_step = []
    for i in range(k):
        state = drafter.next_state(state, emb[:, i])
        x_i = drafter.features(h, state)                     # [B, E]
        per_step.append(x_i / later_sharpness if i and later_sharpness != 1.0 else x_i)
    x = torch.stack(per_step, dim=1)                         # [B, k, E]
    rows = valid.nonzero(as_tuple=True)
    counts = (valid.sum(0) if counts is None else counts).clamp(min=1).to(x.dtype)  # [k]
    decay = step_decay ** torch.arange(k, dtype=x.dtype, device=x.device)
    row_w = (decay * (k / decay.sum()) / counts)[rows[1]]
    targets = head.targets(win[:, 1:][rows])
    soft = None
    if teacher is not None:
        ids, probs = teacher.for_steps(feats, idx, k)
        soft = (ids[rows], probs[rows])
    loss, correct_rows = FusedCrossEntropy.apply(x[rows], head.weight, targets, row_w, head.n_zero, chunk, soft,
                                                 head.matmul_dtype)
    correct = torch.zeros_like(valid)
    correct[rows] = correct_rows
    return StepResult(loss, correct, valid)
