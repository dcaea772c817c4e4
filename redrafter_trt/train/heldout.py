"""Accuracy of a drafter over a set of anchors (`evaluate`: train's held-out examples, or its training set when it
has none), and of a saved drafter on the base's own greedy answers to prompts it was not trained on (for
example MT-Bench first turns): per-step top-1, chained accuracy and the expected tokens per step at beam
width 1 (1 + sum of chained accuracies). On the base's own answers it is a cheap proxy for what `bench` will measure;
on text the base would not write (a data set's answers, written by another model) it overstates it, as teacher forcing
there scores positions greedy decoding never reaches: train then scores the base's own answers to a few held-out
prompts too (`base_answered`). Its cached answers are the training cache's (cache.py): registered under the base's id,
and those of an earlier version of the base removed."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import torch

from ..config import BaseModelConfig, max_positions, read_json
from ..drafter import Drafter, load_drafter
from ..errors import ConfigError
from ..prompts import take_spread
from .base import base_tensors, load_tokenizer
from .data import Example, prompt_ids, read_conversations
from .cache import prune_superseded, using
from .baseid import base_id
from .dataset import base_key, distill_folder, distilled_example, learnable
from .distill import distill
from .features import Features, build_features
from .objective import Head, drafter_step


@torch.no_grad()
def evaluate(drafter: Drafter, head: Head, embed: torch.Tensor, feats: Features, k: int, batch: int = 512) -> dict:
    """Per-step top-1 and chained accuracy over every anchor, and the expected tokens per step at beam width 1
    (1 + sum of chained accuracies). A draft step no answer reaches (step i needs the anchor and i + 2 tokens after
    it) has nothing to score: None (it read 0.0, recorded as the drafter's accuracy there), left out of the sum."""
    correct, valid = [], []
    for s in range(0, len(feats.anchors), batch):
        idx = torch.arange(s, min(s + batch, len(feats.anchors)), device=feats.anchors.device)
        r = drafter_step(drafter, head, embed, feats, idx, k)
        correct.append(r.correct)
        valid.append(r.valid)
    c, v = torch.cat(correct), torch.cat(valid)  # [anchors, k]
    scored = v.sum(0).tolist()  # [k] positions scored at each draft step

    def share(hits: torch.Tensor) -> list[float | None]:
        return [round(h / n, 4) if n else None for h, n in zip(hits.tolist(), scored)]

    top1, chained = share(c.sum(0)), share((c.cumprod(1).bool() & v).sum(0))
    return {"anchors": len(feats.anchors), "top1": top1, "chained": chained,
            "tokens_per_step_beam1": round(1 + sum(x for x in chained if x is not None), 3)}


def per_step(values: list[float | None]) -> str:
    """`evaluate`'s per-draft-step list as `[0.25, 0.1, -]`: a step with nothing scored (None) as '-'."""
    return "[" + ", ".join("-" if x is None else str(x) for x in values) + "]"


def evaluate_on_prompts(drafter_dir: Path, base: Path, prompts_file: Path, cache_dir: Path, *, num_prompts: int = 40,
                        max_new_tokens: int = 192, k: int | None = None,
                        chat_template_kwargs: dict | None = None,
                        progress: Callable[[str], None] = lambda line: None) -> dict:
    """Distill (cached) the base's answers to `num_prompts` prompts spread over the file (prompts.take_spread:
    MT-Bench is sorted by category), then evaluate the
    drafter on them for k draft steps (default: its predict_n, else 5). The prompts are rendered with
    `chat_template_kwargs` (default: those the drafter was trained with, its producer block's: a drafter of Qwen3's
    thinking off is scored on such prompts). `progress` gets a line once the inputs are checked, before the
    distilling (minutes where nothing is cached)."""
    from ..hf_model import load_causal_lm
    from ..plural import counted
    from ..producer import recorded_template_kwargs

    cfg, tensors = load_drafter(drafter_dir)
    where = Path(base) / "config.json"
    hf = read_json(where, "base")
    b = BaseModelConfig.from_hf(hf, str(where))
    if (cfg.hidden_size, cfg.vocab_size) != (b.hidden_size, b.vocab_size):  # before minutes of distilling
        raise ConfigError(f"the drafter {drafter_dir} (hidden size {cfg.hidden_size}, vocabulary {cfg.vocab_size}) was "
                          f"not made for the base {base} (hidden size {b.hidden_size}, vocabulary {b.vocab_size}): "
                          f"pass the base it was trained for")
    drafter = Drafter(cfg)
    drafter.load_state_dict(tensors)
    k = k or cfg.predict_n or 5
    if chat_template_kwargs is None:
        chat_template_kwargs = recorded_template_kwargs(read_json(Path(drafter_dir) / "config.json", "drafter"))
    tokenizer = load_tokenizer(base, None, chat_template_kwargs)
    convs = take_spread(read_conversations(prompts_file, prompts_only=True), num_prompts)  # their prompts alone
    # prompt and answer within the base's positions (generated past them, a base's answer was garbage or an error)
    max_len = min(4096, max_positions(hf, str(where)))
    prompts = [prompt_ids(tokenizer, c, min(2048, max_len - 2)) for c in convs]
    # listed for the base's id, as train's (pruned with it), and held until its cached hidden states are read: a
    # concurrent run's prune once deleted them between the two
    folder = distill_folder(cache_dir, Path(base), torch.float32)
    progress(f"the base's answers to {counted(len(prompts), 'prompt')}, up to {max_new_tokens} tokens each "
             f"(cached in {folder}), then the drafter's top-1 on them")
    with using(cache_dir, Path(base), base_id(Path(base), cache_dir)):
        examples, answer_tokens = base_answered(lambda: load_causal_lm(base, torch.float32).eval(), tokenizer,
                                                prompts, folder, max_new_tokens=max_new_tokens, batch_size=16,
                                                max_len=max_len)
        if not examples:
            raise ConfigError(f"the base answered every prompt of {prompts_file} with at most one token (a stop token "
                              f"at once): nothing to evaluate the drafter on; check the base's chat template and stop "
                              f"tokens")
        feats = build_features(examples, k, Path(cache_dir), base_key(Path(base), torch.float32, cache_dir),
                               lambda: None)
    prune_superseded(cache_dir, Path(base))  # an earlier version's answers, which no base folder can read any more
    embed, _ = base_tensors(Path(base))
    weight = drafter.lm_head[-1].weight.detach()
    nonzero = (weight != 0).any(1).nonzero().squeeze(1)
    # zero rows have logit 0 either way: evaluating only the others is exact and much cheaper
    head = Head.pruned(weight, nonzero, trainable=False) if len(nonzero) < len(weight) else Head.full(weight)
    result = evaluate(drafter, head, embed, feats, k)
    result["answer_tokens"] = answer_tokens
    return result


BASE_ANSWERED_PROMPTS = 8  # held-out prompts train has the base answer without --distill (SmolLM2-135M, 2 cores,
# bfloat16: 90 s for 8 answers of 256 tokens); spelled in train --help (--distill's) and the README, no option sets it


def base_answered(load_model: Callable, tokenizer, prompts: list[list[int]], folder: Path, *, max_new_tokens: int,
                  batch_size: int, max_len: int, device: torch.device | str = "cpu",
                  on_batch: Callable[[int, int], None] | None = None) -> tuple[list[Example], int]:
    """The base's greedy answers to `prompts` (token ids ending with the assistant header; `distill`, cached in
    `folder`) as examples to score a drafter on, one a prompt: those with 2 answer tokens in a row, an anchor to draft
    from (an answer of a stop token alone has none). Returns them and the answer tokens in all."""
    answers = distill(load_model, tokenizer, prompts, folder, max_new_tokens=max_new_tokens, batch_size=batch_size,
                      max_len=max_len, device=device, on_batch=on_batch)
    examples = [distilled_example(p, a, h, max_len) for p, (a, h) in zip(prompts, answers)]
    return [ex for ex in examples if learnable(ex)], sum(len(a) for a, _ in answers)
