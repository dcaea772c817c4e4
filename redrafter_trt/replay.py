"""Tokens per step at many (beam width W, draft length L) from one greedy pass: `redrafter-trt acceptance`.

Greedy verification accepts drafted token i+1 exactly when it equals the base's argmax after the tokens before it,
and along the base's own greedy output that argmax is simply the output's next token. So one greedy decode per
prompt plus one causal forward over prompt + output give everything a drafted decode would see: the context
hidden state at every position and the verdict on every draft. Each configuration then costs only its drafter beam
searches, replayed step by step exactly as `runtime.decode` walks (prefill = one step; a step emits the accepted
drafts plus the base's next token; the last step is cut at EOS or the token limit).

`bench` measures the same tokens per step by decoding (and the speed); this predicts it in a fraction of the time,
for beam widths above the checkpoint's too. The context comes from one full forward instead of decode's tree
forwards, so in float32 a rounding difference can rarely flip a near-tie in the beam search. Prompts share each
beam search here while bench drafts one prompt at a time: the same drafts up to a float product's rounding. Both
draft in the checkpoint's dtype, as the engine does (`load`'s drafter_int8, once on by default on CPU, proposed other
drafts in half of SmolLM2's W=4 L=2 beam searches).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from .bench_inputs import (check_checkpoint, check_grid, default_grid, model_meta, paths_meta, pick_prompts,
                           prompts_meta)
from .errors import ConfigError
from .layout import tree_tokens
from .plural import counted
from .producer import recorded_source
from .tokens import drafter_mode_warning, encode_prompts, load_tokenizer, stop_ids, uses_chat

log = logging.getLogger(__name__)

DECODE_BATCH = 8           # prompts per greedy decode call
LOGITS_BUDGET = 1 << 26    # drafter logits per beam search (W x V per prompt; 256 MB in float32)


@dataclass
class Replayed:
    """One (W, L) replayed over every prompt."""
    num_beams: int
    draft_len: int
    steps: int                 # summed over prompts, each prefill counted as one step (as decode counts)
    new_tokens: int
    histogram: dict[int, int]  # tokens emitted per step after the prefill -> number of steps

    @property
    def mean_tokens_per_step(self) -> float:
        return self.new_tokens / self.steps if self.steps else 0.0

    def to_json(self) -> dict:
        return {"num_beams": self.num_beams, "draft_len": self.draft_len,
                "mean_tokens_per_step": self.mean_tokens_per_step, "steps": self.steps,
                "new_tokens": self.new_tokens, "histogram": {str(k): v for k, v in sorted(self.histogram.items())}}


@torch.inference_mode()
def greedy_pass(model, prompt_ids: list[list[int]], max_new_tokens: int, eos: list[int],
                progress: Callable[[str], None] = lambda line: None) -> tuple[list[list[int]], list[torch.Tensor]]:
    """The base's greedy outputs [n_i] (prompt excluded, cut at EOS) and contexts [n_i, H]: row j is the final-normed
    hidden state at the position whose argmax is output token j (the drafter's context when j is the guaranteed
    token)."""
    from .runtime.decode import decode

    base, outputs, contexts = model.base, [], []
    # 16-bit logits tie often and a batch rounds differently from one prompt: decode alone there, as bench does
    batch = DECODE_BATCH if base.dtype == torch.float32 else 1
    for lo in range(0, len(prompt_ids), batch):
        chunk = prompt_ids[lo: lo + batch]
        outputs += decode(base, None, chunk, max_new_tokens, 0, 0, eos_token_id=eos, group=model.group).output_ids
        progress(f"greedy pass: {len(outputs)}/{counted(len(prompt_ids), 'prompt')}")
    for prompt, out in zip(prompt_ids, outputs):
        ids = torch.tensor([prompt + out], device=base.device)
        T = ids.shape[1]
        causal = torch.ones(T, T, dtype=torch.bool, device=base.device).tril()[None]
        hidden = base.forward(ids, torch.arange(T, device=base.device)[None], causal, base.new_cache(1, T))[0]
        contexts.append(hidden[len(prompt) - 1: len(prompt) - 1 + len(out)])  # the dtype decode hands the drafter
    return outputs, contexts


@torch.inference_mode()
def replay(drafter, outputs: list[list[int]], contexts: list[torch.Tensor], num_beams: int, draft_len: int) -> Replayed:
    """Walk every output as greedy drafted decoding at (num_beams, draft_len) would, all prompts batched per step."""
    pos = [0] * len(outputs)  # index of each output's guaranteed token (emitted, not yet verified past)
    steps, hist = len(outputs), {}
    active = [i for i, out in enumerate(outputs) if len(out) > 1]
    group = max(1, LOGITS_BUDGET // (num_beams * drafter.vocab_size))  # prompts per beam search
    while active:
        beams = torch.cat([_beams(drafter, outputs, contexts, pos, active[lo: lo + group], num_beams, draft_len)
                           for lo in range(0, len(active), group)])  # [A, W, L + 1]
        for row, i in enumerate(active):
            truth = torch.tensor(outputs[i][pos[i] + 1: pos[i] + 1 + draft_len])
            accepted = int((beams[row, :, 1: 1 + len(truth)] == truth).long().cumprod(-1).sum(-1).max())
            emitted = min(accepted + 1, len(outputs[i]) - 1 - pos[i])
            pos[i] += emitted
            steps += 1
            hist[emitted] = hist.get(emitted, 0) + 1
        active = [i for i in active if pos[i] < len(outputs[i]) - 1]
    return Replayed(num_beams, draft_len, steps, sum(len(o) for o in outputs), hist)


def _beams(drafter, outputs, contexts, pos, rows: list[int], num_beams: int, draft_len: int) -> torch.Tensor:
    """The drafts of `rows` from their current guaranteed tokens: [len(rows), W, L + 1] on the CPU."""
    ctx = torch.stack([contexts[i][pos[i]] for i in rows])
    g0 = torch.tensor([outputs[i][pos[i]] for i in rows], device=ctx.device)
    return drafter.beam_search(ctx, g0, num_beams, draft_len).cpu()


@dataclass(frozen=True)
class AcceptanceOptions:
    checkpoint_dir: Path
    tokenizer_dir: Path
    prompts: Path
    num_prompts: int | None = None
    max_new_tokens: int = 64
    beams: tuple[int, ...] = ()       # empty: 1, 2, 4, ... up to the checkpoint's num_beams (any width is allowed)
    draft_lens: tuple[int, ...] = ()  # empty: likewise up to the checkpoint's draft_len (the most it allows)
    chat: bool | None = None
    device: str = "cpu"
    chat_template_kwargs: dict = field(default_factory=dict)  # the chat template's variables (--chat-template-kwargs)
    grid_flags: tuple[str, str] = ("--beams", "--draft-lens")  # how refusals name the grids (a preset's: its fields)


def check_widths(cfg, beams: tuple[int, ...], lens: tuple[int, ...],
                 flags: tuple[str, str] = ("--beams", "--draft-lens")) -> None:
    """Beam widths above the checkpoint's are replayed, but only those a checkpoint can have (inspect's limits): no
    more beams than tokens (the drafter's first top-k fails) and a tree within the model's positions. `flags` name
    the grids (AcceptanceOptions.grid_flags)."""
    beams_flag, lens_flag = flags
    if min(beams) < 1:
        raise ConfigError(f"{beams_flag} {min(beams)} is invalid: beam widths are 1 or more")
    if max(beams) > cfg.vocab_size:
        raise ConfigError(f"{beams_flag} {max(beams)} exceeds the vocabulary ({cfg.vocab_size} tokens), beyond which "
                          f"no beams differ: pass widths up to {cfg.vocab_size}")
    tree = tree_tokens(max(beams), max(lens))
    if tree > cfg.max_positions:
        raise ConfigError(f"{beams_flag} {max(beams)} with {lens_flag} {max(lens)} verify {tree} tokens per step, past "
                          f"the model's {cfg.max_positions} positions (no checkpoint can have them): pass fewer beams")


def run_acceptance(opts: AcceptanceOptions, progress: Callable[[str], None] = lambda line: None) -> dict:
    """The JSON report: `meta`, `configs` (each with num_beams, draft_len, mean_tokens_per_step, steps,
    new_tokens, histogram) and `best` (the highest mean_tokens_per_step)."""
    from .prompts import load_prompts, names_of
    from .runtime import RUN, check_device, check_positions, load

    ckpt = check_checkpoint(opts)
    cfg, raw = ckpt.config, ckpt.raw
    check_device(opts.device, spelling=RUN)  # acceptance's --device is run's
    beams = tuple(sorted(set(opts.beams))) or default_grid(cfg.num_beams)
    lens = check_grid(opts.draft_lens, cfg.draft_len, opts.grid_flags[1], "redrafter_draft_len_per_beam",
                      cfg.draft_len_fix)
    check_widths(cfg, beams, lens, opts.grid_flags)
    file_texts = load_prompts(opts.prompts)  # an empty file is an error there
    indices, texts = pick_prompts(file_texts, opts.num_prompts)
    tokenizer = load_tokenizer(opts.tokenizer_dir, cfg.vocab_size, opts.chat_template_kwargs)
    prompt_ids = encode_prompts(tokenizer, texts, opts.chat)
    if why := drafter_mode_warning(raw, tokenizer, opts.chat):
        log.warning("%s", why)
    check_positions(cfg, prompt_ids, opts.max_new_tokens, flag="--max-new-tokens", names=names_of(texts))
    eos = stop_ids(tokenizer, opts.tokenizer_dir)
    model = load(ckpt, device=opts.device)
    start = time.perf_counter()
    outputs, contexts = greedy_pass(model, prompt_ids, opts.max_new_tokens, eos, progress)
    log.info("greedy pass over %d prompts in %.1f s", len(prompt_ids), time.perf_counter() - start)
    configs = []
    for n in lens:
        for w in beams:
            configs.append(replay(model.drafter, outputs, contexts, w, n))
            progress(f"W={w} L={n}: {configs[-1].mean_tokens_per_step:.3f} tokens/step")
    meta = {**paths_meta(opts), "num_prompts_asked": opts.num_prompts, **prompts_meta(indices, len(file_texts)),
            "max_new_tokens": opts.max_new_tokens,
            "chat": uses_chat(tokenizer, opts.chat), "dtype": cfg.dtype, "device": opts.device, "method": "replay of one greedy pass",
            "checkpoint_num_beams": cfg.num_beams, "checkpoint_draft_len": cfg.draft_len, **model_meta(ckpt),
            "drafter": recorded_source(raw, "drafter")}
    best = max(configs, key=lambda c: c.mean_tokens_per_step)
    return {"meta": meta, "configs": [c.to_json() for c in configs], "best": best.to_json()}
