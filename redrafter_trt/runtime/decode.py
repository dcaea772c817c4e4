"""The decoding loop: prefill, then draft -> tree -> verify -> accept -> commit until every row stops.

Batches: prompts are right-padded for the prefill; from then on each row has its own committed KV length
(`KVCache.lens`), so rows that accept different numbers of tokens need no padding or realignment. A row leaves
the batch (its cache rows dropped) when it emits EOS or reaches max_new_tokens; its output is cut right after
EOS / at max_new_tokens.

`on_tokens(row, new_ids, new_logprobs)` (optional) sees each row's tokens as they are committed, EOS cut included
(new_logprobs: their `TokenLogprob`s, empty unless `logprobs` is asked), and ends that row early by returning True
(a server's stop strings, streaming). Under tensor parallelism every rank passes one
(or none) and rank 0's answers count: they are broadcast, so all ranks drop the same rows.

`admit(running rows)` (optional) is asked after every step for more prompts to join the batch (in-flight batching:
a server's newly arrived requests); they are prefilled, emit their first token and decode along from the next step,
as rows numbered after those already there. Decoding ends when no row runs and admit has none. Under
tensor parallelism rank 0's answer is broadcast (every rank passes an admit, or none). A prompt may come as a
`Joining`, with its own max new tokens (a server's request's max_tokens, up to the batch's): its row ends there. An
admitted row whose prompt + max new tokens runs past the model's positions ends at the last one (a warning says so;
TensorRT-LLM lowers such a request's max new tokens alike); a prompt that leaves no position for a new token is
refused.
`forget_ended=True` (with on_tokens, which had their tokens) keeps nothing of a row that ended: the result's
outputs, accepted and logprobs are empty for it (a server's batch, which new requests may keep joining for days,
else holds every answer it ever gave).

`on_step(Iteration)` (optional) hears of each forward pass of the batch: a prefill of new rows and each decoding step
(a server's iteration statistics, as TensorRT-LLM's executor reports an iteration; on_tokens has seen its tokens by
then). Informational: under tensor parallelism rank 0 alone passes one.

`logprobs=k` (None: off) adds each emitted token's log-probability under the base model and the k most likely
tokens there: log-softmax of the base's raw logits at the node that emitted it (temperature not applied, as vLLM's
default), so drafting changes none of them; it costs one lm_head over the accepted path per step.

Step accounting: the prefill is step 1 and emits the first token; each later step emits accepted drafts + 1.
Plain decoding (`use_draft=False`) is the same loop with one-token trees, so it emits exactly 1 token per step.
"""

from __future__ import annotations

import logging
import numbers
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from ..errors import ConfigError
from .accept import (Acceptance, accept_greedy, accept_sample, accept_sample_trtllm, check_defined,
                     check_finite)
from .drafter import CheckpointDrafter
from .model import BaseModel
from .tp import SINGLE, TPGroup
from .tree import build_tree

log = logging.getLogger(__name__)

MAX_TOP_LOGPROBS = 20  # OpenAI's limit for top_logprobs


@dataclass
class TokenLogprob:
    """One emitted token under the base model: its log-probability and the k most likely (token, log-probability)
    at that position, most likely first."""
    logprob: float
    top: list[tuple[int, float]]


@dataclass(frozen=True)
class Joining:
    """A prompt admit hands to the running batch with its own max new tokens (an integer from 1 to the batch's
    max_new_tokens, which its cache was sized for, else refused; a plain list of ids takes the batch's): its row ends
    there, and is warned of as cut only where the model's positions leave it fewer (a server's request joining a
    batch of larger max_tokens got what it asked)."""
    ids: list[int]
    max_new_tokens: int
    seed: int | None = None  # its row's own generator's seed (in 0..2**63-1); None: the batch's integer seed


@dataclass
class Iteration:
    """One forward pass of the running batch, for on_step: either a prefill of the rows joining (context rows) while
    the running ones wait, or a decoding step of the running rows (generation rows)."""
    context_rows: int = 0        # rows prefilled: their prompts went through the base, their first tokens emitted
    context_tokens: int = 0      # those prompts' tokens
    waiting_rows: int = 0        # running rows that waited while the new ones were prefilled
    generation_rows: int = 0     # rows that decoded a step
    tokens: int = 0              # tokens they emitted: 1 + accepted drafts each, after the EOS and max_new_tokens cuts
    tokens_per_step: float = 0.0  # the mean over the generation rows of their tokens per step before this one
    drafted: bool = False        # the drafter proposed a draft for each generation row
    ended: int = 0               # rows that ended at it
    seconds: float = 0.0         # its wall time
    draft_seconds: float = 0.0   # the drafter's part of it (on CUDA: between two events around it on the stream)


class _Clock:
    """Times a part of a step: host time on CPU; on CUDA the span between two events on the model's stream (its
    device's, not the current device's: a model on cuda:1), read once the step has synchronised anyway (reading the
    accepted counts), so timing adds no synchronisation."""

    def __init__(self, device: torch.device):
        self.device, self.cuda = device, device.type == "cuda"
        self.marks: list = []

    def mark(self) -> None:
        if self.cuda:
            self.marks.append(torch.cuda.Event(enable_timing=True))
            self.marks[-1].record(torch.cuda.current_stream(self.device))
        else:
            self.marks.append(time.perf_counter())

    def seconds(self) -> float:
        """Between the last two marks (then forgotten)."""
        a, b = self.marks[-2:]
        self.marks.clear()
        return a.elapsed_time(b) / 1000 if self.cuda else b - a


@dataclass
class GenerationResult:
    """Per prompt, in input order: generated ids (prompt excluded), steps (prefill included) and the tokens
    emitted at each decoding step after the prefill (1 + accepted drafts; a histogram of these is the
    acceptance histogram)."""

    output_ids: list[list[int]]
    steps: list[int]
    accepted: list[list[int]] = field(default_factory=list)
    logprobs: list[list[TokenLogprob]] = field(default_factory=list)  # per prompt, one per output id (if asked)
    wall_seconds: float = 0.0

    @property
    def tokens_per_step(self) -> list[float]:
        return [len(o) / s if s else 0.0 for o, s in zip(self.output_ids, self.steps)]

    @property
    def total_new_tokens(self) -> int:
        return sum(len(o) for o in self.output_ids)

    @property
    def mean_tokens_per_step(self) -> float:
        steps = sum(self.steps)
        return self.total_new_tokens / steps if steps else 0.0

    def histogram(self) -> dict[int, int]:
        """tokens emitted per decoding step -> how many steps emitted that many."""
        out: dict[int, int] = {}
        for row in self.accepted:
            for k in row:
                out[k] = out.get(k, 0) + 1
        return dict(sorted(out.items()))


def _stop_index(tokens: list[int], eos: set[int], start: int = 0) -> int | None:
    """The first EOS in tokens[start:] (its index in tokens), or None."""
    for i in range(start, len(tokens)):
        if tokens[i] in eos:
            return i
    return None


def _sync(group: TPGroup, *tensors: torch.Tensor) -> list[torch.Tensor]:
    """Rank 0's values of these integer tensors on every rank (one broadcast)."""
    if group.tp_size == 1:
        return list(tensors)
    flat = torch.cat([t.reshape(-1).long() for t in tensors])
    group.broadcast(flat)
    out, i = [], 0
    for t in tensors:
        out.append(flat[i: i + t.numel()].view(t.shape).to(t.dtype))
        i += t.numel()
    return out


def _prefill(base: BaseModel, prompt_ids: list[list[int]], capacity: int, temperature: float,
             gens: list[torch.Generator], group: TPGroup):
    """Right-padded causal prefill of new rows: their cache (`capacity` slots), last hidden states [n, H] and first
    tokens [n] (rank 0's). gens: each row's generator, drawn from in row order."""
    dev = base.device
    n = len(prompt_ids)
    lengths = torch.tensor([len(p) for p in prompt_ids], device=dev)
    T = int(lengths.max())
    tokens = torch.zeros(n, T, dtype=torch.long, device=dev)
    for b, p in enumerate(prompt_ids):
        tokens[b, : len(p)] = torch.tensor(p, dtype=torch.long)
    cache = base.new_cache(n, capacity)
    causal = torch.ones(T, T, dtype=torch.bool, device=dev).tril().expand(n, T, T)
    hidden = base.forward(tokens, torch.arange(T, device=dev).expand(n, T), causal, cache)
    cache.lens = lengths.clone()
    h = hidden[torch.arange(n, device=dev), lengths - 1]  # [n, H]
    if temperature > 0:
        probs = torch.softmax(base.logits(h).double() / temperature, -1).cpu()
        check_defined(*probs.sum(-1).tolist())
        g0 = torch.cat([torch.multinomial(p, 1, generator=g) for p, g in zip(probs, gens)]).to(dev)
    else:  # checked once, at the prompt: an argmax of NaN or +Inf logits emits a wrong token in silence
        logits = base.logits(h)  # their argmax is greedy_tokens' (exact): not computed twice
        check_finite(logits)
        g0 = logits.argmax(-1)
    (g0,) = _sync(group, g0)
    return cache, h, g0


def token_logprobs(base: BaseModel, hidden: torch.Tensor, tokens: torch.Tensor, k: int) -> list[list[TokenLogprob]]:
    """hidden [n, T, H] at the nodes that emitted tokens [n, T] -> their TokenLogprobs with the top k, [n][T]."""
    logp = torch.log_softmax(base.logits(hidden).double(), -1)
    check_finite(logp)  # a NaN logprob is no JSON number
    chosen = logp.gather(-1, tokens[..., None].to(logp.device))[..., 0].tolist()
    top_lp, top_id = logp.topk(k, -1) if k else (logp[..., :0], logp[..., :0].long())
    top_lp, top_id = top_lp.tolist(), top_id.tolist()
    return [[TokenLogprob(chosen[i][t], list(zip(top_id[i][t], top_lp[i][t]))) for t in range(tokens.shape[1])]
            for i in range(tokens.shape[0])]


@torch.no_grad()
def decode(base: BaseModel, drafter: CheckpointDrafter | None, prompt_ids: list[list[int]], max_new_tokens: int,
           num_beams: int, draft_len: int, temperature: float = 0.0, eos_token_id: int | list[int] | None = None,
           seed: int | list[int] = 0, group: TPGroup = SINGLE,
           on_tokens: Callable[[int, list[int], list[TokenLogprob]], bool | None] | None = None,
           admit: Callable[[int], list[list[int]]] | None = None, logprobs: int | None = None,
           on_step: Callable[[Iteration], None] | None = None,
           sampling_rule: str = "exact", forget_ended: bool = False) -> GenerationResult:
    """Generate for every prompt; drafter None (or num_beams/draft_len 0) means plain decoding. on_tokens, admit,
    logprobs, on_step, forget_ended: see the module docstring. seed: every row draws from a generator of its own,
    seeded so (one integer: that seed for every prompt, and every admitted `Joining` without a seed of its own; or one
    seed per prompt), so a row's sample never depends on the rows beside it. sampling_rule
    (temperature > 0 with drafts): "exact" or "trtllm" (`runtime.accept`)."""
    start = time.perf_counter()
    dev = base.device
    # a numpy integer (generate's checks take Python's and numpy's ints) is one id, not an iterable of them
    eos = set([eos_token_id] if isinstance(eos_token_id, numbers.Integral) else (eos_token_id or []))
    per_prompt = isinstance(seed, (list, tuple))

    def generators(seeds: list) -> list[torch.Generator]:
        """The joining rows' generators, one each: seeded its own seed where it has one, else the batch's."""
        if per_prompt and None in seeds:
            raise ConfigError("an admitted prompt has no seed in a batch seeded per prompt: admit a Joining with "
                              "its seed")
        # int(): a numpy integer (generate takes them) is a TypeError there
        return [torch.Generator().manual_seed(int(seed if s is None else s)) for s in seeds]

    use_draft = drafter is not None and num_beams > 0 and draft_len > 0
    W, L = (num_beams, draft_len + 1) if use_draft else (1, 1)
    outputs: list[list[int]] = []
    accepted: list[list[int]] = []
    steps: list[int] = []
    sent: list[int] = []
    lps: list[list[TokenLogprob]] = []
    limit: list[int] = []  # per row: max_new_tokens, or fewer where an admitted prompt leaves fewer positions
    gens: list[torch.Generator | None] = []  # per row: the generator it samples from (None once forgotten)
    forgotten = [0]  # tokens of ended rows let go (forget_ended)

    def forget(rows: list[int], still: list[int]) -> None:
        """Under forget_ended, drop what the rows that just ended hold (on_tokens had their tokens)."""
        if forget_ended:
            for b in set(rows) - set(still):
                forgotten[0] += len(outputs[b])
                outputs[b], accepted[b], lps[b], gens[b] = [], [], [], None

    def report(b: int) -> bool:
        """Hand row b's new tokens to on_tokens; True when it asks the row to end."""
        new, start, sent[b] = outputs[b][sent[b]:], sent[b], len(outputs[b])
        return bool(on_tokens(b, new, lps[b][start: sent[b]]))

    reporter = report if on_tokens is not None else None
    clock = _Clock(torch.device(dev)) if on_step is not None else None
    cache = base.new_cache(0, 0)
    h = g0 = None  # [rows, H] last hidden states, [rows] last tokens of the running rows
    active: list[int] = []
    joining, wants = prompt_ids, [max_new_tokens] * len(prompt_ids)  # wants: each joining row's max new tokens
    seeds = list(seed) if per_prompt else [None] * len(prompt_ids)  # each joining row's own seed, or None
    while True:
        if joining:  # prefill the new rows, emit their first tokens, append the running ones to the batch
            prefill_start = time.perf_counter()
            first = len(outputs)
            capacity = max(len(p) for p in joining) + max_new_tokens + L + W * L + 1
            gens += generators(seeds)
            new_cache, new_h, new_g0 = _prefill(base, joining, capacity, temperature, gens[first:], group)
            firsts = token_logprobs(base, new_h[:, None], new_g0[:, None], logprobs) if logprobs is not None else None
            for i, t in enumerate(new_g0.tolist()):
                outputs.append([t]); accepted.append([]); steps.append(1); sent.append(0)
                lps.append(firsts[i] if firsts else [])
                limit.append(_row_limit(base.cfg, len(joining[i]), wants[i]))
            still, keep = _finish(list(range(first, len(outputs))), [1] * len(joining), outputs, eos, limit, reporter,
                                  group, dev)
            forget(list(range(first, len(outputs))), still)
            new_cache.select_rows(keep.to(dev))
            cache.extend(new_cache)
            h = new_h[keep] if h is None else torch.cat([h, new_h[keep]])
            g0 = new_g0[keep] if g0 is None else torch.cat([g0, new_g0[keep]])
            if on_step is not None:
                on_step(Iteration(context_rows=len(joining), context_tokens=sum(map(len, joining)),
                                  waiting_rows=len(active), ended=len(joining) - len(still),
                                  seconds=time.perf_counter() - prefill_start))
            active += still
        if not active:  # nothing runs: take whatever admit has, else stop
            joining, wants, seeds = _admitted(admit, 0, group, base.cfg, max_new_tokens)
            if joining:
                continue
            break
        step_start = time.perf_counter()
        engine_rule = use_draft and temperature > 0 and sampling_rule == "trtllm"
        if use_draft and clock:
            clock.mark()
        if engine_rule:
            beams, draft_logp = drafter.beam_search(h, g0, W, draft_len, with_logp=True)
            (beams,) = _sync(group, beams)
        elif use_draft:
            beams = drafter.beam_search(h, g0, W, draft_len)
            (beams,) = _sync(group, beams)
        else:
            beams = g0[:, None, None]
        if use_draft and clock:
            clock.mark()
        tree = build_tree(beams)
        hidden = base.forward(tree.tokens, cache.lens[:, None] + tree.depth, tree.mask, cache)
        if engine_rule:
            acc = accept_sample_trtllm(beams, tree, base.logits(hidden), temperature, draft_logp,
                                       [gens[b] for b in active])
        elif temperature > 0:
            acc = accept_sample(beams, tree, base.logits(hidden), temperature, [gens[b] for b in active])
        else:
            acc = accept_greedy(beams, tree, base.greedy_tokens(hidden))
        acc = Acceptance(*_sync(group, acc.path, acc.count, acc.emitted, acc.last))
        cache.commit(acc.path, acc.count)
        n = len(active)
        rows = torch.arange(n, device=dev)
        h = hidden[rows, acc.last]
        g0 = acc.emitted[rows, acc.count - 1]
        counts, emitted = acc.count.tolist(), acc.emitted.tolist()
        step_lps = (token_logprobs(base, hidden[rows[:, None], acc.path], acc.emitted, logprobs)
                    if logprobs is not None else None)
        decoded, before = active, (sum(len(outputs[b]) for b in active) if on_step is not None else 0)
        so_far = sum(len(outputs[b]) / steps[b] for b in active) / n if on_step is not None else 0.0
        added = []
        for i, b in enumerate(active):
            room = limit[b] - len(outputs[b])
            new = emitted[i][: min(counts[i], room)]
            outputs[b].extend(new)
            added.append(len(new))
            if step_lps:
                lps[b].extend(step_lps[i][: len(new)])
            accepted[b].append(len(new))
            steps[b] += 1
        active, keep = _finish(active, added, outputs, eos, limit, reporter, group, dev)
        if on_step is not None:
            kept = sum(len(outputs[b]) for b in decoded) - before  # after the EOS and max_new_tokens cuts
            on_step(Iteration(generation_rows=n, tokens=kept, tokens_per_step=so_far, drafted=use_draft,
                              ended=n - len(active), seconds=time.perf_counter() - step_start,
                              draft_seconds=clock.seconds() if use_draft else 0.0))
        forget(decoded, active)
        if len(active) < n:
            cache.select_rows(keep.to(dev)); h, g0 = h[keep], g0[keep]
        # one round per step: running rows go on
        joining, wants, seeds = (_admitted(admit, len(active), group, base.cfg, max_new_tokens) if active else
                                 ([], [], []))
    for b in range(len(outputs)):  # an EOS inside a step's tokens cut that step short
        excess = 1 + sum(accepted[b]) - len(outputs[b])
        if excess and accepted[b]:
            accepted[b][-1] -= excess
        del lps[b][len(outputs[b]):]
    result = GenerationResult(output_ids=outputs, steps=steps, accepted=accepted,
                              logprobs=lps if logprobs is not None else [], wall_seconds=time.perf_counter() - start)
    made = result.total_new_tokens + forgotten[0]
    log.info("generated %d tokens in %.2fs, %.2f tokens/step", made, result.wall_seconds,
             made / sum(steps) if steps else 0.0)
    return result


def _row_limit(cfg, prompt_len: int, max_new_tokens: int) -> int:
    """The new tokens a row may emit: its max_new_tokens, or what the model's positions leave after its prompt
    (generate refuses first prompts that need more; an admitted one is cut there, as TensorRT-LLM cuts a request's max
    new tokens at max_seq_len: a server's joining row comes as a `Joining` of its own max_tokens, which it checked)."""
    room = cfg.max_positions - prompt_len
    if room < max_new_tokens:
        log.warning("an admitted %d-token prompt + %d new tokens exceed the model's %d positions: it emits at most %d "
                    "new tokens", prompt_len, max_new_tokens, cfg.max_positions, room)
    return min(max_new_tokens, room)


def _admitted(admit, running: int, group: TPGroup, cfg,
              max_new_tokens: int) -> tuple[list[list[int]], list[int], list[int | None]]:
    """admit's new prompts (rank 0's, on every rank), checked as generate checks its prompts (token ids in the
    vocabulary) and with room for one new token in the model's positions (more than that: `_row_limit`), and each
    one's max new tokens (a `Joining`'s own, checked as generate's and at most max_new_tokens) and seed (a Joining's
    own, checked as generate's; None: generate's integer seed, or an error in a batch seeded per prompt)."""
    if admit is None:
        return [], [], []
    prompts, wants, seeds = group.broadcast_object(admit(running)) or [], [], []
    if isinstance(prompts, (list, tuple)):  # else check_prompts refuses it
        wants = [p.max_new_tokens if isinstance(p, Joining) else max_new_tokens for p in prompts]
        seeds = [p.seed if isinstance(p, Joining) else None for p in prompts]
        prompts = [p.ids if isinstance(p, Joining) else p for p in prompts]
    if prompts:  # the same on every rank: they all raise
        from . import ARGUMENTS, check_prompts  # the package imports this module

        need, ok = ARGUMENTS["max_new_tokens"]
        # [w], not w: a None is the first bad one too (0 emitted a token, 2.5 or None was a TypeError mid-step)
        bad = next(([w] for w in wants if not (ok(w) and w <= max_new_tokens)), None)
        if bad:
            raise ConfigError(f"an admitted Joining's max_new_tokens={bad[0]!r}: it must be {need}, at most the "
                              f"batch's {max_new_tokens} (its cache was sized for that)")
        need, ok = ARGUMENTS["seed"]
        bad = next(([s] for s in seeds if not (s is None or ok(s))), None)
        if bad:
            raise ConfigError(f"an admitted Joining's seed={bad[0]!r}: it must be None or {need}")

        if all(isinstance(p, (list, tuple)) for p in prompts) and any(len(p) == 0 for p in prompts):
            raise ConfigError("an admitted prompt is empty: every prompt needs at least one token")
        check_prompts(cfg, prompts)
        longest = max(map(len, prompts))
        if longest >= cfg.max_positions:
            raise ConfigError(f"an admitted {longest}-token prompt leaves no room for a new token in the model's "
                              f"{cfg.max_positions} positions: shorten it")
    return prompts, wants, seeds


def _finish(active: list[int], added: list[int], outputs: list[list[int]], eos: set[int], limit: list[int],
            report: Callable[[int], bool] | None, group: TPGroup, dev) -> tuple[list[int], torch.Tensor]:
    """Cut outputs after EOS, report each row's new tokens; return the rows still running (under their new-token
    `limit`) and their positions in the current batch. added[i]: the tokens row active[i] just got, the only ones
    searched for EOS (a running row holds none before them; searching the whole output every step was quadratic in
    its length). report None: nothing is reported (no on_tokens), so the ranks need not agree on anything."""
    ended = []
    for b, new in zip(active, added):
        stop = _stop_index(outputs[b], eos, len(outputs[b]) - new)
        if stop is not None:
            del outputs[b][stop + 1:]
        ended.append(stop is not None or len(outputs[b]) >= limit[b])
    halt = [report(b) for b in active] if report is not None else [False] * len(active)
    if report is not None and group.tp_size > 1:  # on the model's device: nccl broadcasts CUDA tensors only
        (flags,) = _sync(group, torch.tensor(halt, dtype=torch.bool, device=dev))
        halt = flags.tolist()
    still, keep = [], []
    for i, b in enumerate(active):
        if not (ended[i] or halt[i]):
            still.append(b)
            keep.append(i)
    return still, torch.tensor(keep, dtype=torch.long)
