"""Self-distillation: the base writes its own greedy answers to the training prompts, and the drafter learns
those (Apple's paper credits this with about 10% more speed-up than learning reference text).

Generation is batched with a KV cache: prompts are sorted by length and left-padded; a row leaves the batch
(and the cache) as soon as it emits EOS, so long answers do not keep finished rows busy. The base's last hidden
states at the answer positions come out of generation for free and are kept, so distilled data never needs a
teacher-forced pass. Each batch's answers go to `answers.jsonl` (torchrun's rank N: `answers.rankN.jsonl`) and
its hidden states to one safetensors file as soon as it finishes (recording the device and dtype that wrote it, as a
chunk does: chunks.computed_on), keyed by a hash of the prompt's token ids: an interrupted run resumes where it stopped
and a second run with the same prompts generates nothing (but the prompts of a batch file it cannot read:
drop_unreadable).
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import torch

from ..errors import TensorError, json_loads
from ..io import read_metadata, read_tensor
from ..plural import counted
from ..tokens import eos_ids, template_errors
from .chunks import computed_on, remove_broken, stamped, sweep_idle, warn_computed_elsewhere, writing_into

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CachedHidden:
    """One answer's hidden states in a cache file, read only when needed: a large distillation (50k answers x 256
    tokens of an 8B base: 105 GB in float16) is then never in memory twice while its anchors' rows are gathered."""
    path: Path
    key: str

    def load(self) -> torch.Tensor:
        """[n, H] float16 (float32 past its range): the base's last hidden state at each position that predicted
        an answer token. distill read the file's header: one that cannot be read now was removed or broken since."""
        return read_tensor(self.path, self.key, fix="delete it and rerun (its prompts are distilled again)")


def turn_end_ids(tokenizer) -> set[int]:
    """The special token the chat template closes an assistant turn with (ChatML's <|im_end|>, Llama-3's <|eot_id|>,
    Gemma's <end_of_turn>), found by rendering one; none when the template renders no special token there."""
    from ..tokens import render_chat
    from .data import special_ids

    mark = "Distilled answer."
    if not getattr(tokenizer, "chat_template", None):
        return set()
    turn = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": mark}]
    try:
        text = render_chat(tokenizer, turn, add_generation_prompt=False)
    except template_errors():  # a template refusing this turn: the base's EOS alone, as before
        return set()
    if not isinstance(text, str) or mark not in text:
        return set()
    after = tokenizer(text[text.rindex(mark) + len(mark):].lstrip(), add_special_tokens=False)["input_ids"]
    return {after[0]} if after and after[0] in special_ids(tokenizer) else set()


def through_turn_end(answer: list[int], turn_end: set[int]) -> list[int]:
    """answer up to and with its first end-of-turn token: an answer cached before distillation stopped there (a
    ChatML base whose EOS is <|endoftext|> answered on into turns of its own) is what distillation answers now."""
    return next((answer[: i + 1] for i, tok in enumerate(answer) if tok in turn_end), answer)


def prompt_key(ids: list[int], max_new_tokens: int) -> str:
    return hashlib.sha1(json.dumps([max_new_tokens, ids]).encode()).hexdigest()[:16]


def answer_caps(prompts: list[list[int]], max_new_tokens: int, max_len: int | None) -> list[int]:
    """New tokens each prompt's answer may take: max_new_tokens, or fewer where prompt and answer would pass max_len."""
    return [max_new_tokens if max_len is None else max(1, min(max_new_tokens, max_len - len(p))) for p in prompts]


def unanswered(prompts: list[list[int]], folder: Path, *, max_new_tokens: int,
               max_len: int | None = None) -> list[list[int]]:
    """The distinct prompts of `prompts` that `distill` would answer: those with no answer cached in `folder`."""
    keyed = {prompt_key(p, cap): p for p, cap in zip(prompts, answer_caps(prompts, max_new_tokens, max_len))}
    done = read_cache(folder, set(keyed)) if folder.is_dir() else {}
    return [p for key, p in keyed.items() if key not in done]


def index_name(rank: int) -> str:
    """The answers index a rank appends to: one writer each (torchrun's ranks once shared one, and their buffered
    appends tore each other's lines, every torn answer generated anew on the next run)."""
    return "answers.jsonl" if rank == 0 else f"answers.rank{rank}.jsonl"


def read_cache(folder: Path, keys: set[str] | None = None) -> dict[str, tuple[list[int], str]]:
    """key -> (answer ids, hidden-state file name) from every rank's index, for `keys` only when given (a cache shared
    by runs on other data holds their answers too, which were all held in memory); a torn line (killed mid-write) is
    ignored."""
    return {rec["key"]: (rec["answer_ids"], rec["file"]) for rec in _index_lines(folder)
            if (keys is None or rec["key"] in keys) and (folder / rec["file"]).exists()}


def _index_lines(folder: Path) -> Iterator[dict]:
    """Every rank's index lines, in order, less those that are not a whole answer record (torn by a kill)."""
    for index in sorted(folder.glob("answers*.jsonl")):
        with index.open() as lines:
            for line in lines:
                try:
                    rec = json_loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(rec, dict) and isinstance(rec.get("key"), str) and isinstance(rec.get("file"), str) \
                        and isinstance(rec.get("answer_ids"), list):
                    yield rec


def drop_unreadable(folder: Path, done: dict[str, tuple[list[int], str]]) -> list[dict[str, str]]:
    """What each batch file `done` (read_cache's) names records of the run that wrote it, read before the base is
    loaded (or not). A file that cannot be read is named in one warning and its answers dropped from `done`, to be
    distilled again, as an unreadable chunk of hidden states is computed again; one whose bytes are broken is removed
    (chunks.remove_broken)."""
    by_file: dict[str, list[str]] = {}
    for key, (_, name) in done.items():
        by_file.setdefault(name, []).append(key)
    recorded = []
    for name, keys in sorted(by_file.items()):
        try:
            recorded.append(read_metadata(folder / name, fix=f"distilling its {counted(len(keys), 'prompt')} again"))
        except TensorError as e:
            log.warning("%s", e)
            for key in keys:
                del done[key]
            remove_broken(folder / name, e)
    return recorded


def sweep_unindexed(folder: Path) -> None:
    """Remove the batch files that no index line names: the code before session 41 named a batch's file before it
    indexed it, and a run killed between the two left a file (the batch's hidden states, GBs for a large base) that no
    run read nor removed. Called only while no run writes into `folder` (chunks.sweep_idle): a run on another host
    renames its batch file at once, but its index lines reach a network file system's server only when its client
    flushes them, so its file, named no line here yet, was removed under it."""
    listed = sorted(folder.glob("hidden-*.safetensors"))
    named = {rec["file"] for rec in _index_lines(folder)}
    for f in listed:
        if f.name in named:
            continue
        try:  # another rank's sweep may remove it first
            size = f.stat().st_size
            f.unlink()
        except FileNotFoundError:
            continue
        log.warning("removed %s, which no answer in %s names (left by a distillation killed before indexing it): "
                    "%.2f GiB freed", f, folder, size / 2 ** 30)


@torch.inference_mode()
def greedy_batch(model, prompts: list[list[int]], max_new_tokens: int | list[int], stop: set[int], pad_id: int
                 ) -> tuple[list[list[int]], list[torch.Tensor]]:
    """Greedy answers for a batch of prompts (token id lists); each answer ends with its EOS when one came
    within max_new_tokens (one for all, or one per prompt). Left padding; position ids count real tokens only.

    Also returns, per answer of n tokens, the base's last hidden states [n, H] (float16, or float32 for an answer
    where float16 would overflow) at the positions
    that predicted them: the last prompt token, then answer tokens 0..n-2. These are the teacher-forced
    hidden states of prompt + answer, captured for free, so distilled data needs no second base pass.
    """
    from ..hf_state import TRANSFORMERS_LOCK

    with TRANSFORMERS_LOCK:
        from transformers import DynamicCache

    device = next(model.parameters()).device
    B, L = len(prompts), max(len(p) for p in prompts)
    ids = torch.full((B, L), pad_id, dtype=torch.long)
    attn = torch.zeros((B, L), dtype=torch.long)
    for r, p in enumerate(prompts):
        ids[r, L - len(p):] = torch.tensor(p)
        attn[r, L - len(p):] = 1
    ids, attn = ids.to(device), attn.to(device)
    pos = (attn.cumsum(-1) - 1).clamp(min=0)
    cache = DynamicCache(config=model.config)
    with_cache = {_cache_keyword(model.model): cache, "use_cache": True}
    stop_t = torch.tensor(sorted(stop), device=device)
    alive = torch.arange(B, device=device)
    caps = torch.tensor(max_new_tokens if isinstance(max_new_tokens, list) else [max_new_tokens] * B, device=device)
    answers: list[list[int]] = [[] for _ in range(B)]
    hidden: list[list[torch.Tensor]] = [[] for _ in range(B)]
    out = model.model(input_ids=ids, attention_mask=attn, position_ids=pos, **with_cache)
    last_pos = pos[:, -1]
    for step in range(int(caps.max())):
        h = out.last_hidden_state[:, -1]  # [alive, H]
        nxt = model.lm_head(h).argmax(-1)  # [alive]
        h32 = h.float().cpu()
        h16 = h32.half()
        wide = (h16.isinf() & ~h32.isinf()).any(-1).tolist()  # past float16's 65504: kept in float32
        for j, (r, tok) in enumerate(zip(alive.tolist(), nxt.tolist())):
            answers[r].append(tok)
            hidden[r].append(h32[j] if wide[j] else h16[j])
        keep = ~torch.isin(nxt, stop_t) & (caps > step + 1)
        if not keep.any():
            break
        if not keep.all():
            cache.batch_select_indices(keep.nonzero().squeeze(1))
            alive, attn, nxt, last_pos, caps = alive[keep], attn[keep], nxt[keep], last_pos[keep], caps[keep]
        attn = torch.cat([attn, attn.new_ones((len(alive), 1))], dim=1)
        last_pos = last_pos + 1
        out = model.model(input_ids=nxt[:, None], attention_mask=attn, position_ids=last_pos[:, None], **with_cache)
    return answers, [torch.stack(h if all(x.dtype == torch.float16 for x in h) else [x.float() for x in h])
                     for h in hidden]


def _ends_with_newline(path: Path) -> bool:
    with path.open("rb") as f:
        f.seek(-1, 2)
        return f.read(1) == b"\n"


def _cache_keyword(model) -> str:
    """The KV cache's argument name: transformers 5.24 renamed `past_key_values` to `cache` (the old name warns, and
    goes in 5.40); earlier versions know only the old one."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def distill(load_model: Callable, tokenizer, prompts: list[list[int]], folder: Path, *, max_new_tokens: int,
            batch_size: int, max_len: int | None = None, rank: int = 0, device: torch.device | str = "cpu",
            on_batch: Callable[[int, int], None] | None = None) -> list[tuple[list[int], CachedHidden]]:
    """Greedy answers and their hidden states for every prompt; only prompts not yet in `folder` are generated
    (the base is loaded only then, by `load_model()`). An answer stops after a stop token (the base's EOS, or the
    chat template's end of turn), at max_new_tokens, or sooner where prompt and answer would pass max_len tokens (what
    training keeps: generating more was wasted). Answers another device than `device` (the base's) wrote are reused
    with one warning (a greedy tie may fall otherwise there, but answering again takes as long as the first time;
    batch files written before session 46 record nothing: reused quietly).

    prompts: token id lists ending with the assistant header. Returns (answer ids, its hidden states [n, H] float16,
    read on demand) in prompt order. Prompts are generated in the given order, sorted by length only within windows of 8
    batches, so a run stopped early has answered a random subset. on_batch(done, total) precedes the first batch and
    follows each.
    """
    from ..io import write_safetensors
    from ..output import atomic_file

    folder.mkdir(parents=True, exist_ok=True)
    caps = answer_caps(prompts, max_new_tokens, max_len)
    keys = [prompt_key(p, cap) for p, cap in zip(prompts, caps)]
    sweep_idle(folder, sweep_unindexed)
    done = read_cache(folder, set(keys))
    warn_computed_elsewhere("distilled answers", [(folder, recorded) for recorded in drop_unreadable(folder, done)],
                            computed_on(device))
    # an answer ends at its turn's end as at an EOS: a ChatML base whose EOS is <|endoftext|> (Qwen2's base models)
    # once answered on past <|im_end|> into turns of its own making, up to --distill-max-new-tokens, and the drafter
    # learnt them (a reference answer's mask ends there too)
    turn_end = turn_end_ids(tokenizer)
    distinct = list({k: i for i, k in enumerate(keys)}.values())  # one prompt of each key
    todo = [i for i in distinct if keys[i] not in done]
    if todo:
        model = load_model()
        # any id: padding is masked out (a tokenizer with neither, its stop tokens only in generation_config.json,
        # once gave None and a TypeError)
        pad_id = next((i for i in (tokenizer.pad_token_id, tokenizer.eos_token_id) if i is not None), 0)
        stop = set(eos_ids(tokenizer, getattr(model.generation_config, "eos_token_id", None))) | turn_end
        weight = next(model.parameters())
        written_by = computed_on(weight.device, weight.dtype)
        log.info("distilling %d of %d prompts (%d cached) into %s", len(todo), len(prompts), len(prompts) - len(todo),
                 folder)
        start, new_tokens, window = time.perf_counter(), 0, 8 * batch_size
        # the batches of a run with nothing cached that have nothing cached: a rerun after an interruption (batches
        # are cached whole) answers each prompt in the batch an uninterrupted run would have; batches formed from the
        # prompts left once shifted them, and in bfloat16 an answer depends on the prompts beside it (2 of 40
        # SmolLM2 answers differed). The prompts left in batches partly cached (another run's answers: more data)
        # are batched together, as many as fit.
        order = [i for w in range(0, len(distinct), window)
                 for i in sorted(distinct[w: w + window], key=lambda i: -len(prompts[i]))]
        batches, rest = [], []
        for b in range(0, len(order), batch_size):
            left = [i for i in order[b: b + batch_size] if keys[i] not in done]
            if len(left) == len(order[b: b + batch_size]):
                batches.append(left)
            else:
                rest += left
        batches += [rest[b: b + batch_size] for b in range(0, len(rest), batch_size)]
        index = folder / index_name(rank)
        # one write() per batch on an O_APPEND descriptor: runs sharing the cache append whole batches of lines, never
        # interleaved inside one (a buffered file once flushed every 8 KB, mid-line)
        # batch files are named afresh each run: what a killed run left half-written is never replaced, only removed,
        # and only while no run writes here (torchrun's ranks share the folder, those on other nodes too)
        with writing_into(folder):
            fd = os.open(index, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
            try:
                if os.fstat(fd).st_size and not _ends_with_newline(index):  # a line torn by a kill: end it
                    os.write(fd, b"\n")
                if on_batch:  # the bar from the start: drawn only after the first batch (minutes), its rate and ETA
                    on_batch(0, len(todo))  # left out that batch's time
                answered = 0
                for batch in batches:
                    answers, hidden = greedy_batch(model, [prompts[i] for i in batch], [caps[i] for i in batch], stop,
                                                  pad_id)
                    # a name of this run's own, written whole: runs sharing the cache never replace each other's files
                    name = f"hidden-{keys[batch[0]]}-{uuid.uuid4().hex[:8]}.safetensors"
                    lines = "".join(json.dumps({"key": keys[i], "answer_ids": ans, "file": name}) + "\n"
                                    for i, ans in zip(batch, answers))
                    with atomic_file(folder / name) as tmp:
                        write_safetensors(tmp, {keys[i]: h for i, h in zip(batch, hidden)}, stamped(written_by))
                        # indexed before the file takes its name: a run killed between the two once left a file no line
                        # names (the batch's disk space, never read nor removed); now it leaves lines naming no file,
                        # which read_cache passes over, and a partial file, which the next distill removes
                        os.write(fd, lines.encode())
                    for i, ans in zip(batch, answers):
                        done[keys[i]] = (ans, name)
                        new_tokens += len(ans)
                    answered += len(batch)
                    if on_batch:
                        on_batch(answered, len(todo))
            finally:
                os.close(fd)
        secs = time.perf_counter() - start
        log.info("distilled %d answer tokens in %.0f s (%.0f tokens/s)", new_tokens, secs, new_tokens / max(secs, 1e-9))
    return [(through_turn_end(done[k][0], turn_end), CachedHidden(folder / done[k][1], k)) for k in keys]
