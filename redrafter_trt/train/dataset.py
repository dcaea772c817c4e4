"""From data files to training examples: read, shuffle under the seed, split off a held-out set, and either
encode the reference answers or (distill) have the base answer the prompts itself."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import random
from pathlib import Path
from typing import Callable

import torch

from ..errors import ConfigError
from ..plural import counted
from ..tokens import shows_tools, writes_tool_calls
from .baseid import base_id
from .cache import using
from .chunks import dtype_name
from .config import TrainConfig
from .data import (Conversation, Example, Rendering, cut_middle, encode_answers, prompt_ids, read_conversations,
                   rendering)
from .distill import distill

log = logging.getLogger(__name__)
# tool-calling conversations' `light` renderings, by id, with the conversation (an id is another's once it is gone)
Rendered = dict[int, tuple[Conversation, Rendering]]


# why an example has no 2 answer tokens in a row (the fewest a draft step learns from), with and without --distill
SHORT = {False: "their prompt (after the chat template) fills --max-seq-len {n}, or their answer is empty: raise "
                "--max-seq-len to keep them",
         True: "the base answered their prompt with a stop token at once"}
# where the base answers with a stop token at once (prompts are cut to leave room for 2 answer tokens, so only that)
STOPS_AT_ONCE_FIX = "check its chat template and the eos_token_id of its generation_config.json and tokenizer"

def base_key(base: Path, dtype: torch.dtype, cache_dir: Path) -> str:
    """Cache key of what the base computes in `dtype` (answers and hidden states differ between dtypes), the base
    identified in the cache folder `cache_dir` (base_id)."""
    return f"{base_id(base, cache_dir)}-{dtype_name(dtype)}"


def distill_folder(cache_dir: Path, base: Path, dtype: torch.dtype) -> Path:
    """Where the base's answers in `dtype` are cached."""
    return Path(cache_dir) / f"distill-{base_key(base, dtype, cache_dir)}"


def read_all(cfg: TrainConfig, tokenizer=None, rendered: Rendered | None = None) -> list[Conversation]:
    """Every distinct conversation of every data file, shuffled under the seed: with distill, each a prompt, cut to
    max_examples; else those to train (`to_train`), read in that order until max_examples are kept. Their tools are
    dropped where the tokenizer's chat template shows none (`shows_tools`): they render nothing, and a conversation
    with them and its copy without were two, trained twice or each on one side of the held-out split. rendered: filled
    as `to_train` fills it."""
    convs = [c for path in cfg.data for c in read_conversations(path, cfg.distill)]
    if tokenizer is not None and not shows_tools(tokenizer):
        convs = [dataclasses.replace(c, tools=()) for c in convs]
    convs = unique(convs)
    in_files = list(convs)
    random.Random(cfg.seed).shuffle(convs)
    if cfg.distill:
        return convs[: cfg.max_examples] if cfg.max_examples else convs
    return to_train(convs, tokenizer, cfg.max_examples, in_files, rendered)


@contextlib.contextmanager
def _said_by_rank_0(rank: int):
    """The block's warnings from reading the data files (skipped records, duplicates), said on rank 0 alone: every
    torchrun rank reads every file, and each said them once more."""
    loggers = [log, logging.getLogger(read_conversations.__module__)] if rank else []
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def to_train(convs: list[Conversation], tokenizer=None, most: int | None = None,
             in_files: list[Conversation] | None = None,
             rendered: Rendered | None = None) -> list[Conversation]:
    """The conversations of convs to train, in convs' order, read until `most` are kept (all without it): those with
    an answer (`has_answer`), calling no tools the chat template cannot train (with a tokenizer), and beginning no
    longer one kept (`Longest`), so that `most` counts what trains. Each is checked as it comes, nothing past the
    last kept: a beginning of one kept is dropped unchecked, and tool calls are checked on the others (`rendering`:
    about two renders a turn, more answer by answer), those kept filling `rendered` with their `light` renderings, so
    that `encode_answers` renders none again but the answers of one rendered answer by answer. Says how many of those read were left out, and why,
    naming the first in `in_files` (convs in the files' order; without it, in convs'); a ConfigError when none is
    kept."""
    longest, writes, renderings = Longest(), None, {}
    read, unanswered, uncalled, calling = 0, [], [], 0
    for c in convs:
        if most and len(longest.kept) == most:
            break
        read += 1
        if not c.has_answer:
            unanswered.append(c)
            continue
        chain = longest.chain(c)
        if longest.begins_one(chain):
            longest.dropped += 1
            continue
        if tokenizer is not None and c.calls_tools:
            calling += 1
            writes = writes_tool_calls(tokenizer) if writes is None else writes
            if (checked := rendering(tokenizer, c) if writes else None) is None:
                uncalled.append(c)
                continue
            renderings[id(c)] = c, checked.light()
        longest.keep(c, chain)
    of = f" read to fill --max-examples {most}" if read < len(convs) else ""
    if unanswered and longest.kept:  # once left out without a word; with none kept, the error below says it
        log.warning("left out %d of %d conversations%s with no answer (no assistant turn, or blank ones or ones of "
                    "weight 0; first: %s): pass --distill to have the base answer them", len(unanswered), read, of,
                    _first(unanswered, in_files or convs))
    if uncalled:
        _left_out(uncalled, calling, read, of, writes, _first(uncalled, in_files or convs), bool(longest.kept))
    if not longest.kept:
        raise ConfigError("the data has prompts but no answers: pass --distill to let the base write them, or give "
                          "conversations with assistant turns")
    if longest.dropped:
        log.warning("dropped %s (of %d with an answer%s) whose turns all begin a longer one, which trains the same "
                    "answers after the same turns", counted(longest.dropped, "conversation"),
                    read - len(unanswered) - len(uncalled), of)
    kept = list(longest.kept.values())
    if rendered is not None:
        rendered.update((id(c), renderings[id(c)]) for c in kept if id(c) in renderings)
    return kept


def _first(left_out: list[Conversation], in_files: list[Conversation]) -> str:
    """The source of the first of left_out in in_files' order (every `first:` names the files' first)."""
    ids = {id(c) for c in left_out}
    return next(c.source for c in in_files if id(c) in ids)


def _left_out(uncalled: list[Conversation], calling: int, read: int, of: str, writes: bool, first: str,
              others: bool) -> None:
    """Says why the conversations calling tools `uncalled` (of `calling` checked, `read` read) cannot be trained: the
    template writes no tool calls, or renders them neither turn by turn nor each answer with the turns before it; a
    ConfigError naming --distill when no `others` are left to train."""
    if writes:
        why = (f"the base's chat template renders {len(uncalled)} of {calling} conversations calling tools{of} "
               f"neither turn by turn nor each answer with the turns before it, so they cannot be trained (first: "
               f"{first})")
        other = "or drop their turns after the first answer"
    else:
        why = (f"the base's chat template writes no tool calls, so the conversations calling tools ({len(uncalled)} "
               f"of {read}{of}) cannot be trained (first: {first})")
        other = "or use a base whose chat template writes tool calls (Qwen2.5's, Qwen3's)"
    if not others:
        raise ConfigError(f"{why}: pass --distill to train on the base's own answers to their prompts, {other}")
    log.warning("%s: left out; pass --distill to train on the base's own answers to their prompts", why)


def unique(convs: list[Conversation]) -> list[Conversation]:
    """The first of each set of identical conversations (a file passed twice, a copied record): a copy on each
    side of the held-out split would score training data as held out."""
    seen, out = set(), []
    for c in convs:
        key = _key(c, c.messages)
        if key not in seen:
            seen.add(key)
            out.append(c)
    if len(out) < len(convs):
        log.warning("dropped %d duplicate conversations of %d", len(convs) - len(out), len(convs))
    return out


class Longest:
    """Conversations kept as they come, but those whose turns all begin a longer one kept (serve's logs, where each
    request repeats the turns before it; a tree's paths): each of their examples is one of the longer one's, an answer
    after the same turns, so their answers were trained once per conversation they begin. Only among conversations
    kept (a longer one left out, calling tools the template cannot write, or past --max-examples, keeps its
    beginnings); not for prompts to distill, each of them a prompt of its own. A beginning the longer one goes on
    from in the same role is none: a template refusing two turns of one role in a row has them joined
    (`join_roles`), and the end of turn after the first was trained in the shorter one alone. A conversation kept
    drops the kept ones it goes on from (one at most: of two beginning it, the shorter begins the longer), so the
    number kept never falls as they come."""

    def __init__(self):
        self.numbered: dict[tuple, int] = {}  # a trie of the conversations: (the beginning before, turn) -> its number
        self.beginnings: set[int] = set()  # the numbers of the kept conversations' beginnings
        self.kept: dict[int, Conversation] = {}  # a kept conversation's number -> it, in the order kept
        self.dropped = 0  # conversations read that begin one kept

    def chain(self, conv: Conversation) -> list[int]:
        """The numbers of conv's beginnings (its first n turns at n - 1), alike in every conversation they begin: a
        number for each (the beginning before, its last turn) met, so a chat of n turns is n lookups, not n * n / 2
        turns compared."""
        tools, turns = _key(conv, conv.messages)
        at = self.numbered.setdefault((tools,), len(self.numbered))
        chain = []
        for turn in turns:
            at = self.numbered.setdefault((at, turn), len(self.numbered))
            chain.append(at)
        return chain

    def begins_one(self, chain: list[int]) -> bool:
        """Whether the conversation numbered `chain` begins one kept."""
        return chain[-1] in self.beginnings

    def keep(self, conv: Conversation, chain: list[int]) -> None:
        """Keeps conv (numbered `chain`), dropping the one kept that it goes on from."""
        own = {chain[n - 1] for n in range(1, len(chain)) if conv.messages[n]["role"] != conv.messages[n - 1]["role"]}
        self.dropped += sum(self.kept.pop(b, None) is not None for b in own)
        self.beginnings |= own
        self.kept[chain[-1]] = conv


HELD_OUT_MOST = 200  # conversations scored after training (their hidden states computed as the training data's)


def split(items: list, eval_examples: int | None) -> tuple[list, list]:
    """(train, held out): the held-out set is the first n items (5%, at most 200, when not given)."""
    n = eval_examples if eval_examples is not None else min(len(items) // 20, HELD_OUT_MOST)
    return items[n:], items[:n]


def split_by_prompt(convs: list[Conversation], eval_examples: int | None) -> tuple[list, list]:
    """`split`, a prompt's conversations all on one side: whole prompts, in order, are held out until they hold
    `split`'s number of conversations, passing over a prompt of more answers than that (the smallest prompt alone when
    every one has, if it holds at most a quarter of the conversations and HELD_OUT_MOST), never every prompt. Several answers to one
    prompt (a dataset of sampled completions) once put the prompt on both sides, scoring training data as held out;
    then every conversation sharing a held-out one's prompt went with it, which held out most of a data set of few
    prompts, or all of it; then one prompt of 1000 answers, first in the order, was held out for a target of 50."""
    n = len(split(convs, eval_examples)[1])
    groups: dict[tuple, list[Conversation]] = {}
    for c in convs:
        groups.setdefault(_prompt_key(c), []).append(c)
    fitting = [prompt for prompt, group in groups.items() if len(group) <= n]
    held_prompts, count = [], 0
    for prompt in fitting:
        if count >= n:
            break
        held_prompts.append(prompt)
        count += len(groups[prompt])
    smallest = min(groups, key=lambda prompt: len(groups[prompt]), default=None)
    if not held_prompts and n and len(groups) > 1 and len(groups[smallest]) <= min(len(convs) // 4, HELD_OUT_MOST):
        held_prompts = [smallest]  # two prompts of 100 and 110 answers hold out none, nor 5 of 2000
    if len(held_prompts) == len(groups):
        held_prompts.pop()
    held = set(held_prompts)
    return [c for c in convs if _prompt_key(c) not in held], [c for p in held_prompts for c in groups[p]]


def _prompt_key(conv: Conversation) -> tuple:
    return _key(conv, conv.prompt_messages())


def _key(conv: Conversation, messages: list[dict]) -> tuple:
    """What tells conversations (or their prompts) apart: the messages' roles, speakers (`name`: a template writing it
    renders another prompt), texts, tool calls, answers' thinking (`reasoning_content`: Qwen3's template trains it
    in the <think> block) and weights (an answer of weight 0 is not trained), and conv's tools (a template showing
    them renders another prompt)."""
    return json.dumps(conv.tools, sort_keys=True), tuple((m["role"], m.get("name"), m["content"],
                                                          json.dumps(m.get("tool_calls")), m.get("reasoning_content"),
                                                          m.get("weight"))
                                                         for m in messages)


def build_examples(cfg: TrainConfig, tokenizer, load_model: Callable, cache_dir: Path, base_dtype: torch.dtype, *,
                   rank: int = 0, world: int = 1, device: torch.device | str = "cpu",
                   on_batch: Callable[[int, int], None] | None = None,
                   in_use: contextlib.ExitStack | None = None,
                   held_prompts: list[list[int]] | None = None,
                   before_answering: Callable[[list[list[int]]], None] | None = None
                   ) -> tuple[list[Example], list[Example]]:
    """(train, held-out) examples for this rank. With distill, prompts are deduplicated and answered by the
    base, loaded in base_dtype on `device` (cached in cache_dir); otherwise conversations without an assistant turn
    are an error, and `held_prompts` (rank 0's) gets the held-out conversations' first prompts, distinct, as distill
    would answer them: held-out answers the base did not write score more than it will accept.
    before_answering(prompts): called with the prompts this rank's base answers, before it answers them (--distill).
    The base's cache entries are marked in use (`cache.using`) until `in_use` closes. What is said of the data as a
    whole (the same on every rank) is rank 0's to say; what a rank counts on its shard names the rank."""
    with _said_by_rank_0(rank):
        rendered: Rendered = {}
        convs = read_all(cfg, tokenizer, rendered)
    whole = log.warning if rank == 0 else log.debug  # of the data as a whole
    shard = f"torchrun rank {rank}: " if world > 1 else ""  # of this rank's shard
    if cfg.distill:
        later = sum(any(m["role"] == "user" for m in c.messages[len(c.prompt_messages()):]) for c in convs)
        if later:  # once left out without a word: a multi-turn ShareGPT file lost every turn after the first
            whole("%d of %d conversations have user turns after an answer: --distill answers each "
                  "conversation's first prompt only, and leaves those turns out", later, len(convs))
        prompts, cut = unique_prompts(tokenizer, convs, cfg.max_seq_len)
        if len(prompts) < len(convs):  # once without a word: several answers per prompt shrank to the prompts
            whole("%d of %d conversations share their prompt (after the chat template and any cut) with an "
                  "earlier one: --distill answers each prompt once", len(convs) - len(prompts), len(convs))
        if cut:
            whole("%d of %d prompts are longer than --max-seq-len %d less 2 answer tokens: their middles were "
                  "cut; raise --max-seq-len to keep them whole", cut, len(convs), cfg.max_seq_len)
        say_little_room(whole, prompts, cfg, "prompts")
        train_p, eval_p = split(prompts, cfg.eval_examples)
        check_shards(len(train_p), world)
        own_p, held_p = rank_share(train_p, eval_p, rank, world)
        mine = held_p + own_p
        _hold(in_use, cache_dir, cfg.base)
        if before_answering:
            before_answering(mine)
        answers = distill(load_model, tokenizer, mine, distill_folder(cache_dir, cfg.base, base_dtype),
                          max_new_tokens=cfg.distill_max_new_tokens, batch_size=cfg.distill_batch_size,
                          max_len=cfg.max_seq_len, rank=rank, device=device, on_batch=on_batch)
        examples = [distilled_example(p, a, h, cfg.max_seq_len) for p, (a, h) in zip(mine, answers)]
        held, train = examples[:len(held_p)], examples[len(held_p):]
    else:
        train_c, eval_c = split_by_prompt(convs, cfg.eval_examples)
        check_shards(len(train_c), world)
        _hold(in_use, cache_dir, cfg.base)
        mine, held_c = rank_share(train_c, eval_c, rank, world)
        if held_prompts is not None:
            held_prompts += unique_prompts(tokenizer, held_c, cfg.max_seq_len)[0]
        rendered = {id(c): rendered[id(c)] for c in mine + held_c if id(c) in rendered}  # this rank's alone
        train, past = _encoded(tokenizer, mine, cfg.max_seq_len, rendered)
        held, held_past = _encoded(tokenizer, held_c, cfg.max_seq_len, rendered)
        if past + held_past:
            log.warning(shard + "left out %s whose answer starts past --max-seq-len %d (a conversation the chat "
                        "template renders answer by answer gives an example per answer, each after the turns before "
                        "it): raise --max-seq-len to train on them", counted(past + held_past, "example"),
                        cfg.max_seq_len)
    n = len(train) + len(held)
    if cut := [ex.cut for ex in train + held if ex.cut]:  # once cut without a word: a long chat lost its last turns
        log.warning(shard + "%d of %d examples run past --max-seq-len %d: their last %d answer tokens were left "
                    "out; raise --max-seq-len to train on them", len(cut), n, cfg.max_seq_len, sum(cut))
    train = [ex for ex in train if learnable(ex)]
    held = [ex for ex in held if learnable(ex)]
    if not train and cfg.distill:  # prompts are cut to leave 2 answer tokens: the base stopped at once
        raise ConfigError(f"the base answered every training prompt with a stop token at once (no answer of 2 or more "
                          f"tokens to learn from): {STOPS_AT_ONCE_FIX}")
    if not train:
        raise ConfigError(f"no training example has an answer of 2 or more tokens in a row within --max-seq-len "
                          f"{cfg.max_seq_len} (the chat template and prompt come first): raise --max-seq-len, or give "
                          f"longer conversations or more data")
    if n > len(train) + len(held):  # once left out without a word: half the data, with long prompts
        log.warning(shard + "left out %d of %d examples with fewer than 2 answer tokens in a row: %s",
                    n - len(train) - len(held), n, SHORT[cfg.distill].format(n=cfg.max_seq_len))
    log.info("%d training and %d held-out examples (%d and %d answer tokens)", len(train), len(held),
             sum(sum(ex.mask) for ex in train), sum(sum(ex.mask) for ex in held))
    return train, held


def say_little_room(say: Callable[..., None], prompts: list[list[int]], cfg: TrainConfig, what: str) -> None:
    """Name the prompts the base answers (`distill`) that leave less than --distill-max-new-tokens answer tokens
    within --max-seq-len, where their answers stop: a prompt cut to fit (unique_prompts) leaves 2."""
    short = sum(len(p) + cfg.distill_max_new_tokens > cfg.max_seq_len for p in prompts)
    if short:
        say("%d of %d %s leave less than --distill-max-new-tokens %d answer tokens within --max-seq-len %d: their "
            "answers stop there", short, len(prompts), what, cfg.distill_max_new_tokens, cfg.max_seq_len)


def unique_prompts(tokenizer, convs: list[Conversation], max_seq_len: int) -> tuple[list[list[int]], int]:
    """Each conversation's first prompt as distill answers it (`prompt_ids`, its middle cut to leave 2 answer tokens,
    the fewest a target needs, within max_seq_len), each prompt once; and how many were cut."""
    seen, prompts, cut = set(), [], 0
    for c in convs:
        full = prompt_ids(tokenizer, c)
        ids = cut_middle(full, max_seq_len - 2)
        cut += len(ids) < len(full)
        if tuple(ids) not in seen:
            seen.add(tuple(ids))
            prompts.append(ids)
    return prompts, cut


def _encoded(tokenizer, convs: list[Conversation], max_len: int, rendered: Rendered) -> tuple[list[Example], int]:
    """(convs' examples, in order: `encode_answers`, how many it left out for their answer lying past max_len), each
    from its rendering in `rendered` (taken out) where read_all made one."""
    out, past = [], 0
    for c in convs:
        made = rendered.pop(id(c), None)
        examples, left_out = encode_answers(tokenizer, c, max_len, made[1] if made and made[0] is c else None)
        out += examples
        past += left_out
    return out, past


def _hold(in_use: contextlib.ExitStack | None, cache_dir: Path, base: Path) -> None:
    """The base's cache entries in use until `in_use` closes, once the data is known good (a refused run leaves no
    cache folder)."""
    if in_use is not None:
        in_use.enter_context(using(cache_dir, base, base_id(base, cache_dir)))


def learnable(ex: Example) -> bool:
    """Whether an example has 2 answer tokens in a row, the anchor a draft step learns from: a conversation of empty
    answers has one per turn (its end of turn) and none in a row, and once passed for an example, its steps' batches
    empty."""
    return any(a and b for a, b in zip(ex.mask, ex.mask[1:]))


def check_shards(n: int, world: int) -> None:
    """Every torchrun rank needs a training conversation of its own: a rank left without one once failed alone,
    saying to raise --max-seq-len, while the others distilled on."""
    if n < world:
        raise ConfigError(f"{n} training conversations (after the held-out ones) for {world} torchrun ranks: each "
                          f"rank trains on its own share; give more data, or run {max(n, 1)} ranks or fewer")


def rank_share(train: list, held: list, rank: int, world: int) -> tuple[list, list]:
    """torchrun rank `rank` of `world`'s (training items, held-out items): every world-th training item from the rank's
    own index on (the ranks' shares disjoint, together all of them), and the held-out items on rank 0 alone (it
    evaluates)."""
    return train[rank::world], (held if rank == 0 else [])


def distilled_example(prompt: list[int], answer: list[int], hidden, max_len: int) -> Example:
    """prompt + answer with the hidden states generation captured (from the last prompt token on)."""
    ids = (prompt + answer)[:max_len]
    mask = ([False] * len(prompt) + [True] * len(answer))[:max_len]
    return Example(tuple(ids), tuple(mask), hidden, len(prompt) - 1)
