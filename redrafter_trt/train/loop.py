"""`train_drafter(cfg)`: data -> (distilled answers) -> cached base hidden states -> drafter steps -> Apple layout.

Batches are random anchor positions drawn from a per-epoch permutation seeded by (seed, epoch), so the batch
of step s depends only on s: a run resumed from its checkpoint replays exactly what an uninterrupted run would
have done. Under torchrun (WORLD_SIZE > 1) each rank distills and caches its own shard of the examples and the
drafter's gradients are summed across ranks, each step's means being over every rank's rows (one process on the
global batch); rank 0 writes the checkpoints and the drafter.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import fields, replace
from pathlib import Path
from typing import Callable

import torch

from ..base_sample import record_base_sample
from ..drafter import save_drafter
from ..errors import ConfigError, PeerError, json_loads, name_list
from ..interrupts import uninterrupted
from ..output import WrittenThenInterrupted, earlier_output_kind, users_entries
from ..plural import agreeing, counted
from ..producer import producer_block
from ..runtime.linear import pack_linears
from .base import base_tensors, load_tokenizer
from .cache import prune_superseded
from .config import TrainConfig
from .dataset import STOPS_AT_ONCE_FIX, base_key, build_examples, distill_folder, dtype_name, say_little_room
from .distill import unanswered
from .features import Features, build_features, file_metadata
from .heldout import BASE_ANSWERED_PROMPTS, base_answered, evaluate, per_step
from .init import new_drafter
from .objective import TEACHER_TOP_K, Head, Teacher, soft_target_cache
from .progress import Progress, StepStats
from .state import (drafter_arch, examples_digest, load_state, pending_marker, read_state, refuse_answering,
                    refuse_other, remove_earlier_state, resume_options, same_state_on_every_rank, save_state,
                    writing_output)
from .steps import batch_anchors, check_finite, learning_rate, step_gradients, steps_per_epoch
from .torchrun import all_reduce, collective, process_group

log = logging.getLogger(__name__)


def train_drafter(cfg: TrainConfig, on_progress: Callable[[Progress], None] | None = None,
                  rerun: str | None = None) -> Path:
    """Train a drafter for `cfg.base` and write it to `cfg.output` (Apple layout, predict_n recorded).
    Returns the output folder; its config.json `producer` block holds the held-out accuracy. rerun: what an
    interruption's warning says to do in place of train's `--resume` / `without --resume` (the quickstart's
    "rerun the quickstart": it has no such flag, and goes on by itself). `cfg` is left as it is: the run validates
    (and fits max_seq_len to the base) on a copy."""
    cfg = replace(cfg)
    cfg.validate()
    said: list[str] = []  # what _train said on an interruption (the state it saved)
    with process_group(cfg.device) as (rank, world):
        device = torch.device(f"cuda:{os.environ.get('LOCAL_RANK', 0)}" if world > 1 and cfg.device.startswith("cuda")
                              else cfg.device)
        gpu = [torch.cuda.current_device() if device.index is None else device.index] if device.type == "cuda" else []
        try:
            # writing_output: no other run writes the output or its state meanwhile; fork_rng: train seeds torch's
            # random state, the caller's comes back after; in_use: the cache entries this run reads are held
            # (cache.using) until it ends
            with writing_output(cfg, rank, world), torch.random.fork_rng(devices=gpu), \
                    contextlib.ExitStack() as in_use:
                return _train(cfg, rank, world, device, on_progress, in_use, said, rerun)
        except KeyboardInterrupt as e:
            if "written" in said and not isinstance(e, WrittenThenInterrupted):  # after the drafter was written, as
                # the cache entries and the process group were let go: once 'interrupted before the first training
                # step was saved'
                log.warning("interrupted after %s was written", cfg.output)
                raise WrittenThenInterrupted from None
            # before this run saved a state (distilling, caching hidden states, the first step): once only
            # 'interrupted', and the --resume that a later interruption asks for was then refused; a resumed run said
            # nothing either
            if rank == 0 and not said:
                if cfg.resume:
                    log.warning("interrupted before training went on from %s: %s (that state is kept, and the "
                                "answers and hidden states cached so far in %s are reused)", cfg.state_path,
                                rerun or "rerun with --resume", cfg.cache_dir)
                else:
                    log.warning("interrupted before the first training step was saved: %s (the answers and hidden "
                                "states cached so far in %s are reused)", rerun or "rerun without --resume",
                                cfg.cache_dir)
            raise


def _train(cfg: TrainConfig, rank: int, world: int, device: torch.device,
           on_progress: Callable[[Progress], None] | None, in_use: contextlib.ExitStack, said: list[str],
           rerun: str | None) -> Path:
    """`train_drafter` as torchrun's rank `rank` of `world` (0 of 1 without torchrun); on an interruption, what it said
    (the state saved, and to resume) is added to `said`."""
    from ..hf_model import load_causal_lm

    base_config = json_loads((cfg.base / "config.json").read_text())
    tokenizer = load_tokenizer(cfg.base, int(base_config["vocab_size"]), cfg.chat_template_kwargs)
    report = on_progress or (lambda p: None)
    torch.manual_seed(cfg.seed)
    options = resume_options(cfg, device, world)
    if cfg.resume:  # refused now, not after distilling anew for the changed options (or reading every cached
        # hidden state for a changed drafter shape or --max-steps)
        if world > 1:
            same_state_on_every_rank(cfg, rank, world)
        known = {"arch": drafter_arch(cfg, base_config), **({"total": cfg.max_steps} if cfg.max_steps else {})}
        refuse_other(cfg, read_state(cfg, mmap=True), {**options, **known})
    cache_dir = cfg.cache_dir
    model_box: list = []
    base_dtype = cfg.torch_dtype(cfg.base_dtype, device)

    def load_model():
        if not model_box:
            model = load_causal_lm(cfg.base, base_dtype).to(device).eval()
            # CPU: oneDNN with packed weights, about 1.25x faster distillation on 2 cores (float32 and bfloat16)
            pack_linears(model, dtypes=(torch.float32, torch.bfloat16))
            model_box.append(model)
        return model_box[0]

    def refuse_answers_left(prompts: list[list[int]]) -> None:
        """--resume: refused before the base answers `prompts` (this rank's), for what it has left to write
        (`refuse_answering`)."""
        if not cfg.resume:
            return
        state = read_state(cfg, mmap=True)
        left = there = unanswered(prompts, distill_folder(cache_dir, cfg.base, base_dtype),
                                  max_new_tokens=cfg.distill_max_new_tokens, max_len=cfg.max_seq_len)
        then = state.get("cache_dir")  # the interrupted run's --cache-dir (None: saved before it was recorded)
        # without --distill, the few held-out answers (seconds) are written anew in a new --cache-dir, as the hidden
        # states are: only their batches are compared; one deleted since holds none (not made again identifying the base)
        if left and cfg.distill and then not in (None, str(Path(cache_dir).resolve())) and Path(then).is_dir():
            there = unanswered(left, distill_folder(Path(then), cfg.base, base_dtype),
                               max_new_tokens=cfg.distill_max_new_tokens, max_len=cfg.max_seq_len)
        counts = torch.tensor([len(left), len(there)])
        if world > 1:
            all_reduce(counts)
        refuse_answering(cfg, state, options, int(counts[0]), int(counts[1]))

    held_prompts: list[list[int]] = []  # without --distill: the base's own answers to them are scored too
    train_ex, held_ex = build_examples(cfg, tokenizer, load_model, cache_dir, base_dtype, rank=rank, world=world,
                                       device=device, on_batch=lambda d, t: report(Progress("distill", d, t)),
                                       in_use=in_use, held_prompts=held_prompts, before_answering=refuse_answers_left)
    digest = examples_digest(train_ex, world)
    if cfg.resume:  # refused now, not after caching their hidden states and the base's answers to held-out prompts
        refuse_other(cfg, read_state(cfg, mmap=True), {"examples": digest})
        if not cfg.distill:
            refuse_answers_left(held_prompts[:BASE_ANSWERED_PROMPTS])
    bid = base_key(cfg.base, base_dtype, cache_dir)
    k = cfg.predict_n
    feats = build_features(train_ex, k, cache_dir, bid, load_model, lambda d, t: report(Progress("hidden", d, t)),
                           device=device, dtype=base_dtype)
    held = build_features(held_ex, k, cache_dir, bid, load_model, device=device, dtype=base_dtype) if held_ex else None
    own = own_ex = None
    if held_prompts:
        base_tensors(cfg.base, dtype=None)  # checked finite first: a NaN head made the answers NaN, named as the cache's
        own_prompts = held_prompts[:BASE_ANSWERED_PROMPTS]
        log.info("the base's own answers to %s, scored after training as the data's are",
                 counted(len(own_prompts), "held-out prompt"))
        say_little_room(log.warning, own_prompts, cfg, "held-out prompts")
        own_ex, _ = base_answered(load_model, tokenizer, own_prompts, distill_folder(cache_dir, cfg.base, base_dtype),
                                  max_new_tokens=cfg.distill_max_new_tokens, batch_size=cfg.distill_batch_size,
                                  max_len=cfg.max_seq_len, device=device,
                                  on_batch=lambda d, t: report(Progress("heldout_base", d, t)))
        if own_ex:  # one example a prompt, those with a position to score (base_answered)
            own = build_features(own_ex, k, cache_dir, bid, load_model, device=device, dtype=base_dtype)
        else:  # the prompts are cut to leave 2 answer tokens within --max-seq-len (unique_prompts): it stopped at once
            log.warning("the base answered %s %s with a stop token at once: none scored on its own answers; %s",
                        agreeing(len(own_prompts), "the", "all"), counted(len(own_prompts), "held-out prompt"),
                        STOPS_AT_ONCE_FIX)
    model_box.clear()  # the base is not needed any more

    embed, head = base_tensors(cfg.base)  # float32 copies: read once the base is gone, not beside it
    base_sample = record_base_sample(cfg.base)  # for the drafter's producer block: read now, not after training
    dcfg, drafter = new_drafter(base_config, head, num_draft_layers=cfg.num_draft_layers, rnn=cfg.rnn,
                                exit_dim=cfg.exit_dim or int(base_config["hidden_size"]), predict_n=k, seed=cfg.seed)
    base_head = head
    drafter.to(device)
    embed = embed.to(device)
    out_w = drafter.lm_head[-1].weight
    if cfg.full_vocab:
        out_w.requires_grad_(cfg.train_head)
        head = Head.full(out_w)
    else:
        head = Head.pruned(out_w, _seen_tokens(feats, tokenizer, len(out_w), world).to(device), cfg.train_head)
        out_w.requires_grad_(False)
        log.info("training the head rows of the %d tokens in the data (of %d)", len(head.keep), len(out_w))
    head.matmul_dtype = train_dtype = cfg.torch_dtype(cfg.train_dtype, device)
    teacher = None
    if cfg.soft_target > 0:
        rows = base_head if head.keep is None else base_head[head.keep.cpu()]
        folder, earlier = soft_target_cache(cache_dir, bid, train_ex, head.keep, device)
        teacher = Teacher.cached(folder, feats, rows, TEACHER_TOP_K, cfg.soft_target, device=device,
                                 metadata=file_metadata(bid), earlier=earlier)
        log.info("soft targets: %.2f of each target is the base's top-%d distribution", cfg.soft_target, TEACHER_TOP_K)
    del base_head
    params = [p for p in drafter.parameters() if p.requires_grad]
    if head.keep is not None and head.weight.requires_grad:
        params.append(head.weight)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)

    n = len(feats.anchors)
    per_epoch = steps_per_epoch(_fewest_anchors(n, world, device), cfg.batch_size)
    total = cfg.max_steps or cfg.epochs * per_epoch
    start = 0
    same = {"arch": drafter.cfg.to_json(), "total": total, "per_epoch": per_epoch,
            "examples": digest, "cache_dir": str(Path(cache_dir).resolve()), **options}
    if cfg.resume:
        start = load_state(cfg, drafter, head, opt, total, same)
    elif rank == 0 and cfg.state_path.exists():  # a new run: never resume an older one's state. Removed only now,
        # its inputs read: a run refused for them (a bad --data file) once cost an interrupted run's saved steps
        remove_earlier_state(cfg)
    feats = feats.to(device)
    log.info("training %d steps of %d anchors (%d anchors, %d steps per epoch) on %s", total, cfg.batch_size, n,
             per_epoch, device)

    done = start  # steps whose optimizer update has happened
    try:
        for step in range(start, total):
            t0 = time.perf_counter()
            for g in opt.param_groups:
                g["lr"] = learning_rate(step, total, cfg.lr)
            idx = batch_anchors(step, n, per_epoch, cfg.batch_size, cfg.seed, rank).to(device)
            loss, top1, rows = step_gradients(drafter, head, embed, feats, idx, k, teacher, cfg, opt, params, world)
            check_finite(loss, torch.nn.utils.clip_grad_norm_(params, 1.0), step + 1, total, cfg.lr)
            with uninterrupted():  # a Ctrl-C inside AdamW's update left it half applied, saved as the step before
                opt.step()
                done = step + 1
            stats = StepStats(step + 1, total, loss.item(), top1, rows / (time.perf_counter() - t0))
            if _checkpoint_due(rank, done, cfg.checkpoint_every):
                save_state(cfg, drafter, head, opt, done, same)
            report(Progress("train", step + 1, total, stats))
    except (KeyboardInterrupt, PeerError):  # a peer gone (killed: out of memory, a node lost) fails the next
        # collective before the update: the state is that of `done` whole steps on every rank, as on Ctrl-C
        if rank == 0 and done > start:
            # torchrun's SIGTERM to the ranks left follows at once (0.1 s): held until the save is done and said,
            # else it ended the rank right after the save, before the line telling the user to --resume
            with uninterrupted():
                save_state(cfg, drafter, head, opt, done, same)
                log.warning("interrupted: state saved after step %d in %s; %s to continue", done, cfg.state_path,
                            rerun or "pass --resume")
                said.append("saved")
        raise
    saved = written = False
    try:
        if rank == 0:
            # saved before the evaluation (minutes on a large held-out set): a Ctrl-C there keeps every step; one
            # during the save itself (seconds for a large drafter) is held until it is done, else every step since the
            # last checkpoint was lost
            with uninterrupted():
                save_state(cfg, drafter, head, opt, total, same)
                pending_marker(cfg).touch()  # until the drafter is written: a rerun without --resume says what it drops
                saved = True
            # evaluated on the training device, in float32 products (the head's matmul_dtype left unset)
            eval_feats = held.to(device) if held else feats
            scored = Head(head.weight.detach(), head.keep, head.remap, head.vocab_size)
            # the producer block's, each recording whose answers it scored: the data's score more than the base accepts
            scores = {"heldout" if held else "train_set": {**evaluate(drafter, scored, embed, eval_feats, k),
                                                           "answers": "base" if cfg.distill else "data"}}
            if own:
                scores["heldout_base"] = {**evaluate(drafter, scored, embed, own.to(device), k), "answers": "base",
                                          "prompts": len(own_ex)}
        drafter.cpu()
        head = Head(head.weight.cpu(), *(None if x is None else x.cpu() for x in (head.keep, head.remap)),
                    head.vocab_size)
        if rank == 0:
            for key, r in scores.items():
                log.info("%s, on the %s answers: top-1 %s, chained %s, %.2f tokens/step at beam width 1", key,
                         "base's own" if r["answers"] == "base" else "data's", per_step(r["top1"]),
                         per_step(r["chained"]), r["tokens_per_step_beam1"])
            # the block every output carries (producer.py), then what the run came to (the dtypes "auto" chose), a
            # sample of the base's weights (convert warns where --base's differ: its path tells nothing on another
            # machine), and cfg.extra: the quickstart's recipe, which it looks for at the top
            producer = {**producer_block("train", train_options(cfg), {"base": cfg.base, "data": cfg.data}),
                        "base_sample": base_sample,
                        # ranks: each trains --batch-size anchors a step (the global batch is ranks x batch_size)
                        "steps": total, "ranks": world, "base_dtype": dtype_name(base_dtype),
                        "train_dtype": dtype_name(train_dtype),
                        "head_rows_kept": len(head.keep) if head.keep is not None else dcfg.vocab_size,
                        **scores, **cfg.extra}
            state = {name: v.detach().float() for name, v in drafter.state_dict().items()}
            state[f"lm_head.{dcfg.num_draft_layers}.weight"] = head.full_weight().float()
            _save_drafter(cfg, dcfg, state, producer)
            written = True
            said.append("written")  # an interrupt from here on stops a finished run: WrittenThenInterrupted
            pending_marker(cfg).unlink(missing_ok=True)
            prune_superseded(cache_dir, cfg.base)  # once the drafter is written: a failed run keeps them
    except KeyboardInterrupt as e:  # in the evaluation or the drafter's save: the training is kept, and so said
        if written or isinstance(e, WrittenThenInterrupted):  # after the drafter was written (removing the one it
            # replaced, pruning the cache): its state is a finished run's, and nothing is to be resumed; the caller
            # knows the drafter is in place (train's command ends as a finished run)
            pending_marker(cfg).unlink(missing_ok=True)
            if not isinstance(e, WrittenThenInterrupted):  # (that one said so)
                log.warning("interrupted after %s was written", cfg.output)
            said.append("written")
            raise WrittenThenInterrupted from None
        if saved:
            log.warning("interrupted after training: state saved after step %d in %s; %s to evaluate and write the "
                        "drafter without training again", total, cfg.state_path, rerun or "pass --resume")
            said.append("saved")
        raise
    if world > 1:
        with collective():
            torch.distributed.barrier()
    return cfg.output


def _save_drafter(cfg: TrainConfig, dcfg, state: dict, producer: dict) -> None:
    """save_drafter with the run's --force: a folder written at --output while the run trained (checked free when
    it started; no other train writes there meanwhile, `writing_output`) is not replaced without it, nor with it one
    holding the user's files put there meanwhile. Either refusal says how to resume: the training's state is named
    after --output, so only a rerun with the same one writes this drafter."""
    try:
        save_drafter(cfg.output, dcfg, state, producer, inputs=tuple(cfg.inputs), force=cfg.force)
    except ConfigError:
        if not cfg.output.is_dir():
            raise
        if not cfg.force:
            raise ConfigError(f"--output {cfg.output} was written while this run trained: the training is saved in "
                              f"{cfg.state_path}; rerun with --resume --force to replace that folder with this "
                              f"drafter, or move it away and rerun with --resume") from None
        held = users_entries(cfg.output) if earlier_output_kind(cfg.output) else sorted(
            p.name for p in cfg.output.iterdir())
        if not held:
            raise
        raise ConfigError(f"--output {cfg.output} holds {name_list(held, 3)}, put there while this run trained, which "
                          f"replacing the folder would delete: the training is saved in {cfg.state_path}; move "
                          f"{'it' if len(held) == 1 else 'them'} out and rerun with --resume --force and the same "
                          f"--output") from None


TRAIN_SOURCES = ("base", "data", "output", "cache_dir", "extra")  # TrainConfig's fields that are no options


def train_options(cfg: TrainConfig) -> dict:
    """The producer block's options: every TrainConfig field but the folders and files (its sources, the output,
    the cache) and extra."""
    return {f.name: getattr(cfg, f.name) for f in fields(cfg) if f.name not in TRAIN_SOURCES}


def _fewest_anchors(n: int, world: int, device: torch.device) -> int:
    """The fewest anchors any of torchrun's `world` ranks holds (`n`: this rank's): every rank takes the steps an epoch
    of them gives, the same number (a rank with more draws them from all of its own, `batch_anchors`)."""
    if world == 1:
        return n
    t = torch.tensor([n], device=device)
    all_reduce(t, torch.distributed.ReduceOp.MIN)
    return int(t)


def _checkpoint_due(rank: int, done: int, every: int) -> bool:
    """Whether the training state is saved after `done` steps: every `every` steps, by rank 0 alone (the ranks hold the
    same state, and rank 0 writes the checkpoints and the drafter)."""
    return rank == 0 and done % every == 0


def _seen_tokens(feats: Features, tokenizer, vocab_size: int, world: int) -> torch.Tensor:
    """Sorted vocab ids of every token in the training examples (prompts too) and EOS, united across ranks."""
    seen = torch.zeros(vocab_size, dtype=torch.bool)
    seen[feats.tokens[feats.tokens < vocab_size]] = True
    if tokenizer.eos_token_id is not None:
        seen[tokenizer.eos_token_id] = True
    if world > 1:
        flags = seen.to(torch.uint8)
        all_reduce(flags, torch.distributed.ReduceOp.MAX)
        seen = flags.bool()
    return seen.nonzero().squeeze(1)
