"""The drafter from a checkpoint's `drafter.*` tensors, and its beam search.

Every drafter tensor is cut in tp row blocks (`torch.chunk(t, tp, 0)[r]`): each layer is column-parallel with a
gathered output (all-gather along the last dim), so every rank ends up with the same full activations.
Math (Apple's `Drafter`, see `redrafter_trt.drafter`): state s0 = 0,
    s = silu(rnn_w(emb(tok)) + rnn_u(s))  if rnn  else  emb(tok) + s
    x = input_proj(cat([context, s])) if present; x = x + silu(linear_i(x)) for each layer; logits = lm_head(x)
Beam search (W beams, L = draft_len + 1 columns including the guaranteed token): log_softmax of
(logits - max) with all but the top 50 set to -50000; the first step grows only beam 0; each step keeps the top
W of W x V by running log-probability.

A head from our trainer has exact-zero rows (tokens never seen in training: logit exactly 0). When every beam's
50th-largest logit is above 0 those tokens are masked anyway, so a step works on the V' computed tokens alone
(`head_rows`): the same masked log-probabilities but for the last bit of log_softmax's sum, the same beams but at
exact ties; else (and under tp) it takes the full V. On SmolLM2 V' is about a quarter of V: the top-k, softmax and
beam selection over V were a third of a W=4 draft step on a CPU.
"""

from __future__ import annotations

import logging
import warnings

import torch
import torch.nn.functional as F

from ..errors import TensorError
from .config import RuntimeConfig
from .linear import Linear, Plan
from .tp import SINGLE, TPGroup

log = logging.getLogger(__name__)

TOP_K = 50
LOG_0 = -50000.0


def _int8_head(weight: torch.Tensor):
    """A CPU int8 (per-row scales, fbgemm) copy of a [V, E] float32 projection as a function x -> x @ W.T, or
    None where the quantized ops are unavailable. The final projection is read once per draft step and
    dominates drafting on a CPU; int8 reads a quarter of the bytes. Drafts only propose tokens (the base model
    verifies them, and the sampling acceptance does not use the drafter's probabilities), so outputs stay exact.

    fbgemm quantizes its input with one range for the whole call, so a prompt's drafts would depend on the prompts
    batched beside it (and `acceptance`, which batches prompts, would miss `bench`, which does not). Each input row
    is scaled to max |x| = 1 and two pinned rows holding +1 and -1 are appended, so the range is always [-1, 1]: every
    row is quantized alone, whatever the batch, with its own full int8 range.

    Without VNNI (AVX2 alone: AMD's Zen 2/3, Intel before Cascade Lake), fbgemm multiplies u8 by s8 in pairs summed
    into int16 (vpmaddubsw), which saturates at full 8-bit inputs: on an AMD EPYC without VNNI a row's largest error
    was 0.80 of its largest logit (E=8; 0.48 at E=64). There the inputs take 7 bits (`reduce_range`, which torch's
    fbgemm and x86 qconfigs take everywhere; its oneDNN one warns of this loss without VNNI; `_saturates`): 0.019
    and 0.026."""
    if weight.device.type != "cpu" or weight.dtype != torch.float32:
        return None
    try:
        scales = (weight.abs().amax(dim=1) / 127.0).clamp(min=1e-12).double()
        with warnings.catch_warnings():  # the quantized tensor API is marked deprecated but still ships
            warnings.simplefilter("ignore")
            q = torch.quantize_per_channel(weight, scales, torch.zeros_like(scales, dtype=torch.long), 0, torch.qint8)
        packed = torch.ops.quantized.linear_prepack(q, None)
    except (RuntimeError, AttributeError, NotImplementedError) as e:
        log.info("int8 drafter head unavailable (%s); using the float weights", e)
        return None
    E = weight.shape[1]
    pin = torch.zeros(2, E, dtype=weight.dtype)
    pin[0, 0], pin[1, 0] = 1.0, -1.0
    tiny = torch.finfo(torch.float32).tiny
    reduce_range = _saturates()

    def head(x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(-1, E)
        size = rows.abs().amax(dim=1, keepdim=True).clamp(min=tiny)  # [n, 1]
        out = torch.ops.quantized.linear_dynamic(torch.cat([rows / size, pin]), packed, reduce_range)[:-2] * size
        return out.reshape(*x.shape[:-1], weight.shape[0])
    return head


def _saturates() -> bool:
    """Whether this CPU's int8 products saturate at full 8-bit inputs (`_int8_head`): an x86 engine (fbgemm, x86,
    oneDNN) without VNNI (unknown: the safe answer). qnnpack (ARM: Apple silicon, aarch64 Linux) has no such sums,
    and ignores reduce_range with a warning on every call."""
    if torch.backends.quantized.engine not in ("fbgemm", "x86", "onednn"):
        return False
    return not getattr(torch.cpu, "_is_vnni_supported", lambda: False)()


class CheckpointDrafter:
    def __init__(self, cfg: RuntimeConfig, tensors: dict[str, torch.Tensor], embed_fn, group: TPGroup = SINGLE,
                 dtype: torch.dtype | None = None, device: str = "cpu", int8_head: bool = False,
                 linear_plan: Plan | None = None):
        """linear_plan: the base's tuned plan (`BaseModel.linear_plan`), followed by these linears too (the same
        machine, the same row counts); None: oneDNN's product (linear.py)."""
        self.group, self.embed_fn, self.rnn = group, embed_fn, cfg.drafter_rnn
        dtype = dtype or cfg.torch_dtype

        def take(name: str, required: bool = True):
            t = tensors.get("drafter." + name)
            if t is None and required:
                raise TensorError(f"checkpoint rank {group.tp_rank} lacks drafter.{name}: re-run convert")
            return None if t is None else t.to(device=device, dtype=dtype)

        def linear(weight: torch.Tensor, bias: torch.Tensor | None = None) -> Linear:
            if linear_plan is None:
                return Linear(weight, bias)
            out = Linear(weight, bias, products=tuple(dict.fromkeys(name for _, name in linear_plan)))
            if all(name in out.products for _, name in linear_plan):  # else its one product, as built
                out.plan = linear_plan
            return out

        proj = take("input_proj.weight", False)
        self.input_proj = None if proj is None else linear(proj, take("input_proj.bias", False))
        self.layers = [linear(take(f"layers.{i}.linear.weight"), take(f"layers.{i}.linear.bias"))
                       for i in range(cfg.drafter_layers)]
        self.lm_head = take("lm_head.weight")
        # Our trainer saves the rows of tokens never seen in training as exact zeros (their logit is exactly 0):
        # multiply only the other rows and scatter, which gives the same logits for a fraction of the reads.
        nonzero = self.lm_head.abs().amax(dim=1) > 0
        self.head_rows = None if bool(nonzero.all()) else nonzero.nonzero()[:, 0]
        head = self.lm_head if self.head_rows is None else self.lm_head[self.head_rows].contiguous()
        if self.head_rows is not None:
            log.info("drafter head: %d of %d rows are non-zero; computing only those", len(self.head_rows), len(nonzero))
        self.head_fn = (_int8_head(head) if int8_head else None) or linear(head)
        rows = self.head_rows  # a beam-search step may work on these tokens alone (module docstring)
        self.compact_rows = (rows if rows is not None and group.tp_size == 1 and len(rows) >= TOP_K
                             and int(rows[-1]) < cfg.vocab_size else None)
        if self.rnn:
            self.rnn_u = linear(take("rnn_u.weight"), take("rnn_u.bias"))
            self.rnn_w = linear(take("rnn_w.weight"))
        self.vocab_size = cfg.vocab_size

    def _linear(self, x: torch.Tensor, linear: Linear) -> torch.Tensor:
        return self.group.all_gather(linear(x))

    def next_state(self, state: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """state [..., H], tokens [...] -> new state [..., H]."""
        emb = self.embed_fn(tokens)
        if self.rnn:
            return F.silu(self._linear(emb, self.rnn_w) + self._linear(state, self.rnn_u))
        return emb + state

    def features(self, context: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """context, state [..., H] -> the final projection's input [..., E]."""
        x = torch.cat([context, state], dim=-1)
        if self.input_proj is not None:
            x = self._linear(x, self.input_proj)
        for layer in self.layers:
            x = x + F.silu(self._linear(x, layer))
        return x

    def logits(self, context: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        """context, state [..., H] -> logits [..., V] (float32)."""
        return self._full_logits(self.head_fn(self.features(context, state)))

    def _full_logits(self, local: torch.Tensor) -> torch.Tensor:
        """the head's output [..., V' or V/tp] -> logits [..., V] (float32), zero rows scattered back."""
        if self.head_rows is not None:
            part, local = local, local.new_zeros(*local.shape[:-1], self.lm_head.shape[0])
            local[..., self.head_rows] = part
        return self.group.all_gather(local)[..., : self.vocab_size].float()

    def step_logp(self, context: torch.Tensor, state: torch.Tensor, num_beams: int
                  ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """context, state [B, w, H] -> (masked log-probabilities [B, w, V'] of one beam-search step, token ids
        [V'] of its columns), or over the full vocabulary (V' = V) with None for the ids (module docstring)."""
        head = self.head_fn(self.features(context, state))
        if self.compact_rows is not None and num_beams <= TOP_K:
            part = head.float()
            best = part.topk(TOP_K, dim=-1).values  # [..., TOP_K], descending: the max and the kth in one pass
            kth, top = best[..., -1:], best[..., :1]
            if bool((kth > 0).all()):  # every zero-row token is masked: leave them out
                logits = part - top
                return logits.masked_fill(logits < kth - top, LOG_0).log_softmax(-1), self.compact_rows
        logits = self._full_logits(head)
        logits = logits - logits.max(-1, keepdim=True).values
        kth = logits.topk(min(TOP_K, logits.shape[-1]), dim=-1).values[..., -1:]
        return logits.masked_fill(logits < kth, LOG_0).log_softmax(-1), None

    @torch.no_grad()
    def beam_search(self, context: torch.Tensor, token: torch.Tensor, num_beams: int, draft_len: int,
                    with_logp: bool = False):
        """context [B, H] (base hidden after ln_f at the last accepted position), token [B] (the guaranteed
        token) -> beams [B, W, L] with L = draft_len + 1 and beams[:, :, 0] = token. with_logp: (beams, logp) with
        logp [B, W, draft_len, V] the masked log-probabilities each beam's token d+1 was chosen from (TensorRT-LLM's
        draft_probs; -inf for the tokens a compact step left out, whose probability is 0 after the mask)."""
        B, H = context.shape
        beams = token[:, None, None]  # the first step grows beam 0 only: start from one beam
        if draft_len == 0:
            beams = beams.expand(B, num_beams, 1).contiguous()
            return (beams, context.new_zeros(B, num_beams, 0, self.vocab_size)) if with_logp else beams
        ctx = context[:, None, :]
        state = torch.zeros_like(ctx)
        score = torch.zeros(B, 1, dtype=torch.float32, device=context.device)
        rows = torch.arange(B, device=context.device)[:, None]
        steps: list[tuple[torch.Tensor, torch.Tensor]] = []  # with_logp: (each step's log-probs, parents)
        for _ in range(draft_len):
            w = beams.shape[1]
            state = self.next_state(state, beams[..., -1])
            logp, ids = self.step_logp(ctx.expand(B, w, H), state, num_beams)
            V = logp.shape[-1]
            score, idx = (logp + score[..., None]).reshape(B, w * V).topk(num_beams, dim=-1)
            parent, tok = idx // V, idx % V
            if ids is not None:
                tok = ids[tok]
            beams = torch.cat([beams[rows, parent], tok[..., None]], dim=-1)
            state = state[rows, parent]
            if with_logp:
                full = logp
                if ids is not None:
                    full = logp.new_full((B, w, self.vocab_size), float("-inf"))
                    full[..., ids] = logp
                steps.append((full, parent))
        if not with_logp:
            return beams
        along, beam = [], torch.arange(num_beams, device=context.device).expand(B, num_beams)
        for full, parent in reversed(steps):  # back along each final beam's ancestry
            beam = parent.gather(1, beam)
            along.append(full[rows, beam])
        return beams, torch.stack(along[::-1], dim=2)
