"""`train_drafter(cfg)`: data -> (distilled answers) -> cached base hidden states -> drafter steps -> Apple layout.

Batches are random anchor positions drawn from a per-epoch permutation seeded by (seed, epoch), so the batch
of step s depends only on s: a run resumed from its checkpoint replays exactly what an uninterrupted run would
have done. Under torchrun (WORLD_SIZE > 1) each rank distills and caches its own shard of the examples and the
drafter's gradients are summed across ranks, each step's means being over every rank's rows (one process on the
global batch); rank 0 writes the checkpoints and the drafter.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import logging
import math
import os
import signal
import threading
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable

import torch

from ..drafter import Drafter, DrafterConfig, save_drafter
from ..errors import ConfigError, PeerError, TokenizerError
from ..io import TensorSource
from ..producer import producer_block
from ..runtime.linear import pack_linears
from ..runtime.tp import quiet_stdout
from .config import TrainConfig
from .cache import prune_superseded
from .dataset import base_id, base_key, build_examples, dtype_name
from .features import Features, build_features, cache_key, file_metadata
from .init import new_drafter
from .objective import Head, Teacher, drafter_step

log = logging.getLogger(__name__)

TEACHER_TOP_K = 16  # tokens of the base's distribution kept per position for soft targets


@dataclass
class StepStats:
    step: int             # 1-based, steps done so far
    total: int
    loss: float
    top1: list[float]     # per draft step, this batch (under torchrun: every rank's)
    positions_per_s: float  # under torchrun: every rank's (each takes a batch of its own in the same time)


@dataclass
class Progress:
    """What the loop reports to a progress bar: a stage name with (done, total), or a finished step."""
    stage: str
    done: int
    total: int
    stats: StepStats | None = None


DIST_TIMEOUT = datetime.timedelta(hours=12)


def _dist(device: str) -> tuple[int, int]:
    """(rank, world) under torchrun, joining its process group: gloo for CPU ranks; for GPU ranks each on its
    LOCAL_RANK's GPU, NCCL for GPU tensors and gloo for the few CPU ones (the kept-vocabulary vote)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not torch.distributed.is_initialized():
        cuda = device.startswith("cuda")
        if cuda:
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        # ranks distil shards of different lengths for hours before their first collective: torch's 30-minute
        # default would end a run whose shards differ by more than that
        with quiet_stdout():
            torch.distributed.init_process_group("cpu:gloo,cuda:nccl" if cuda else "gloo", timeout=DIST_TIMEOUT)
    return (torch.distributed.get_rank() if world > 1 else 0), world


@contextlib.contextmanager
def _process_group(device: str):
    """`_dist`'s (rank, world) for the block; a group joined here is destroyed after it. A rank that left gloo's
    group to the interpreter's exit was sometimes aborted there ("terminate called without an active exception",
    SIGABRT) after it had written everything. A failed GPU rank leaves its NCCL group as it is: destroying it can
    wait on peers that are themselves stuck in a collective (the failure is what ends the process)."""
    joined_here = not torch.distributed.is_initialized()
    failed = False
    try:
        yield _dist(device)
    except BaseException:
        failed = True
        raise
    finally:
        if joined_here and torch.distributed.is_initialized() and not (failed and device.startswith("cuda")):
            torch.distributed.destroy_process_group()


@contextlib.contextmanager
def _peers():
    """A collective whose peer rank is gone (it failed on data only it saw, printing its one-line error, or was killed)
    raised gloo's 'Connection closed by peer' on every other rank, a 40-line traceback each: one line now. That rank
    may also have been interrupted alone (`kill`, a scheduler's SIGTERM), saying where it saved the state."""
    try:
        yield
    except RuntimeError as e:  # torch.distributed's DistError is one too
        raise PeerError(f"another torchrun rank stopped ({type(e).__name__} in a collective), so this one cannot go "
                        f"on: see that rank's message above (or torchrun's report of it): fix its error and rerun, or, "
                        f"if it was interrupted and saved the training state, rerun with --resume") from None


def _all_reduce(t: torch.Tensor, op=None) -> None:
    """torch.distributed.all_reduce (sum unless `op`), in place, with a gone peer one line (`_peers`)."""
    with _peers():
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM if op is None else op)


def base_tensors(base: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """(embed_tokens [V, H], lm_head [V, H]) read lazily from the base folder."""
    src = TensorSource.from_hf_folder(base)
    names = src.names()
    emb_name = next((n for n in ("model.embed_tokens.weight", "embed_tokens.weight") if n in names), None)
    if emb_name is None:
        raise ConfigError(f"{base} has no model.embed_tokens.weight: only Llama/Qwen2-style bases are supported")
    embed = src.get(emb_name).float()
    head = src.get("lm_head.weight").float() if "lm_head.weight" in names else embed
    src.close()
    return embed, head


def load_tokenizer(base: Path, vocab_size: int | None = None):
    """The base's tokenizer, or a ConfigError when its folder has none that loads, or one with more tokens than the
    model's vocab_size (its ids past the embedding crashed the base's first forward pass)."""
    from ..tokens import auto_tokenizer

    fix = "copy the base's tokenizer files (tokenizer.json, tokenizer_config.json) into it"
    try:
        tokenizer = auto_tokenizer(base)
    except TokenizerError as e:
        raise ConfigError(f"{base} has no usable tokenizer ({e}): "
                          f"{fix}") from None
    if vocab_size is not None and len(tokenizer) > vocab_size:  # as run refuses it
        raise ConfigError(f"the tokenizer in {base} has {len(tokenizer)} tokens but the model's vocab_size is "
                          f"{vocab_size}: it is another model's; {fix}")
    return tokenizer


def _lr(step: int, total: int, lr: float) -> float:
    """Linear warm-up over the first 5% of steps, then cosine to zero."""
    warm = max(1, total // 20)
    if step < warm:
        return lr * (step + 1) / warm
    return lr * 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))


def steps_per_epoch(fewest: int, batch: int) -> int:
    """Steps an epoch over `fewest` anchors (the smallest rank's under torchrun), its last batch partial where batch
    does not divide it: dropped, it once left a small dataset's last anchors untrained (63 of 127 at batch 64)."""
    return max(1, -(-fewest // batch))


def _batch(step: int, n: int, per_epoch: int, batch: int, seed: int, rank: int = 0) -> torch.Tensor:
    """Step `step`'s anchor indices among this rank's n: a fresh permutation of all n each epoch, seeded by (seed,
    epoch, rank). Under torchrun every rank takes per_epoch steps an epoch (`steps_per_epoch` of the fewest any
    rank's anchors), so a rank with more anchors trains a different subset of them each epoch: every anchor counts.
    An epoch's last batch is partial where its anchors run out (its step's means are over the rows there are)."""
    epoch, i = divmod(step, per_epoch)
    mixed = (seed * 1000003 + epoch + rank * 7919) % 2 ** 63  # any --seed up to 2**63 - 1
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(mixed))
    return perm[i * batch: (i + 1) * batch]


@torch.no_grad()
def evaluate(drafter: Drafter, head: Head, embed: torch.Tensor, feats: Features, k: int, batch: int = 512) -> dict:
    """Per-step top-1 and chained accuracy over every anchor, and the expected tokens per step at beam width 1
    (1 + sum of chained accuracies)."""
    correct, valid = [], []
    for s in range(0, len(feats.anchors), batch):
        idx = torch.arange(s, min(s + batch, len(feats.anchors)), device=feats.anchors.device)
        r = drafter_step(drafter, head, embed, feats, idx, k)
        correct.append(r.correct)
        valid.append(r.valid)
    c, v = torch.cat(correct), torch.cat(valid)
    n = v.sum(0).clamp(min=1)
    top1 = (c.sum(0) / n).tolist()
    chained = ((c.cumprod(1).bool() & v).sum(0) / n).tolist()
    return {"anchors": len(feats.anchors), "top1": [round(x, 4) for x in top1],
            "chained": [round(x, 4) for x in chained], "tokens_per_step_beam1": round(1 + sum(chained), 3)}


def train_drafter(cfg: TrainConfig, on_progress: Callable[[Progress], None] | None = None) -> Path:
    """Train a drafter for `cfg.base` and write it to `cfg.output` (Apple layout, predict_n recorded).
    Returns the output folder; its config.json `producer` block holds the held-out accuracy."""
    cfg.validate()
    said: list[str] = []  # what _train said on an interruption (the state it saved)
    with _process_group(cfg.device) as (rank, world):
        device = torch.device(f"cuda:{os.environ.get('LOCAL_RANK', 0)}" if world > 1 and cfg.device.startswith("cuda")
                              else cfg.device)
        gpu = [torch.cuda.current_device() if device.index is None else device.index] if device.type == "cuda" else []
        try:
            # fork_rng: train seeds torch's random state, the caller's comes back after; in_use: the cache entries
            # this run reads are held (cache.using) until it ends
            with torch.random.fork_rng(devices=gpu), contextlib.ExitStack() as in_use:
                return _train(cfg, rank, world, device, on_progress, in_use, said)
        except KeyboardInterrupt:  # before this run saved a state (distilling, caching hidden states, the first step):
            # once only 'interrupted', and the --resume that a later interruption asks for was then refused; a resumed
            # run said nothing either
            if rank == 0 and not said:
                if cfg.resume:
                    log.warning("interrupted before training went on from %s: rerun with --resume (that state is "
                                "kept, and the answers and hidden states cached so far in %s are reused)",
                                cfg.state_path, cfg.cache_dir)
                else:
                    log.warning("interrupted before the first training step was saved: rerun without --resume (the "
                                "answers and hidden states cached so far in %s are reused)", cfg.cache_dir)
            raise


def _train(cfg: TrainConfig, rank: int, world: int, device: torch.device,
           on_progress: Callable[[Progress], None] | None, in_use: contextlib.ExitStack, said: list[str]) -> Path:
    """`train_drafter` as torchrun's rank `rank` of `world` (0 of 1 without torchrun); on an interruption, what it said
    (the state saved, and to resume) is added to `said`."""
    from ..hf_model import load_causal_lm

    base_config = json.loads((cfg.base / "config.json").read_text())
    tokenizer = load_tokenizer(cfg.base, int(base_config["vocab_size"]))
    report = on_progress or (lambda p: None)
    torch.manual_seed(cfg.seed)
    options = _options(cfg, device, world)
    if cfg.resume:  # refused now, not after distilling anew for the changed options (or reading every cached
        # hidden state for a changed drafter shape or --max-steps)
        if world > 1:
            _same_state_on_every_rank(cfg, rank, world)
        known = {"arch": _arch(cfg, base_config), **({"total": cfg.max_steps} if cfg.max_steps else {})}
        _refuse_other(cfg, _read_state(cfg, mmap=True), {**options, **known})
    cache_dir = cfg.cache_dir
    if not cfg.resume and rank == 0 and cfg.state_path.exists():  # a new run: never resume an older one's state
        _remove_earlier_state(cfg)
    model_box: list = []
    base_dtype = cfg.torch_dtype(cfg.base_dtype, device)

    def load_model():
        if not model_box:
            model = load_causal_lm(cfg.base, base_dtype).to(device).eval()
            # CPU: oneDNN with packed weights, about 1.25x faster distillation on 2 cores (float32 and bfloat16)
            pack_linears(model, dtypes=(torch.float32, torch.bfloat16))
            model_box.append(model)
        return model_box[0]

    train_ex, held_ex = build_examples(cfg, tokenizer, load_model, cache_dir, base_dtype, rank=rank, world=world,
                                       device=device, on_batch=lambda d, t: report(Progress("distill", d, t)),
                                       in_use=in_use)
    bid = base_key(cfg.base, base_dtype)
    k = cfg.predict_n
    feats = build_features(train_ex, k, cache_dir, bid, load_model, lambda d, t: report(Progress("hidden", d, t)),
                           device=device, dtype=base_dtype)
    held = build_features(held_ex, k, cache_dir, bid, load_model, device=device, dtype=base_dtype) if held_ex else None
    model_box.clear()  # the base is not needed any more

    embed, head = base_tensors(cfg.base)
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

    n = fewest = len(feats.anchors)
    if world > 1:  # the same number of steps on every rank
        t = torch.tensor([n], device=device)
        _all_reduce(t, torch.distributed.ReduceOp.MIN)
        fewest = int(t)
    per_epoch = steps_per_epoch(fewest, cfg.batch_size)
    total = cfg.max_steps or cfg.epochs * per_epoch
    start = 0
    same = {"arch": drafter.cfg.to_json(), "total": total, "per_epoch": per_epoch, **options}
    if cfg.resume:
        start = _load_state(cfg, drafter, head, opt, total, same)
    feats = feats.to(device)
    log.info("training %d steps of %d anchors (%d anchors, %d steps per epoch) on %s", total, cfg.batch_size, n,
             per_epoch, device)

    done = start  # steps whose optimizer update has happened
    try:
        for step in range(start, total):
            t0 = time.perf_counter()
            for g in opt.param_groups:
                g["lr"] = _lr(step, total, cfg.lr)
            idx = _batch(step, n, per_epoch, cfg.batch_size, cfg.seed, rank).to(device)
            counts, rows = None, len(idx) * world
            if world > 1:  # each step's mean over every rank's rows: the summed gradients are one process's on the
                # global batch (averaging the ranks' means weighed a rank with fewer valid rows as much as a fuller
                # one), an epoch's last, partial batches too (their sizes can differ between ranks); and its anchors
                both = torch.cat([feats.windows(idx, k)[1].sum(0), idx.new_tensor([len(idx)])])
                _all_reduce(both)
                counts, rows = both[:k], int(both[k])
            res = drafter_step(drafter, head, embed, feats, idx, k, teacher=teacher,
                               later_sharpness=cfg.later_sharpness, step_decay=cfg.step_decay, counts=counts)
            opt.zero_grad(set_to_none=True)
            res.loss.backward()
            loss = res.loss.detach().clone()
            top1 = res.top1()
            if world > 1:
                for p in params:
                    _all_reduce(p.grad)
                _all_reduce(loss)  # the global batch's loss: every rank stops together when it diverges
                correct = res.correct.sum(0)  # and its accuracy, over the rows `counts` holds (rank 0's alone once)
                _all_reduce(correct)
                top1 = (correct / counts.clamp(min=1)).tolist()
            _check_finite(loss, torch.nn.utils.clip_grad_norm_(params, 1.0), step + 1, total, cfg.lr)
            with _whole():  # a Ctrl-C inside AdamW's update left it half applied, saved as the step before
                opt.step()
                done = step + 1
            stats = StepStats(step + 1, total, loss.item(), top1, rows / (time.perf_counter() - t0))
            if rank == 0 and done % cfg.checkpoint_every == 0:
                _save_state(cfg, drafter, head, opt, done, same)
            report(Progress("train", step + 1, total, stats))
    except (KeyboardInterrupt, PeerError):  # a peer gone (killed: out of memory, a node lost) fails the next
        # collective before the update: the state is that of `done` whole steps on every rank, as on Ctrl-C
        if rank == 0 and done > start:
            # torchrun's SIGTERM to the ranks left follows at once (0.1 s): held until the save is done and said,
            # else it ended the rank right after the save, before the line telling the user to --resume
            with _whole():
                _save_state(cfg, drafter, head, opt, done, same)
                log.warning("interrupted: state saved after step %d in %s; pass --resume to continue", done,
                            cfg.state_path)
                said.append("saved")
        raise
    saved = False
    try:
        if rank == 0:
            # saved before the evaluation (minutes on a large held-out set): a Ctrl-C there keeps every step; one
            # during the save itself (seconds for a large drafter) is held until it is done, else every step since the
            # last checkpoint was lost
            with _whole():
                _save_state(cfg, drafter, head, opt, total, same)
                _pending(cfg).touch()  # until the drafter is written: a rerun without --resume says what it drops
                saved = True
            # evaluated on the training device, in float32 products (the head's matmul_dtype left unset)
            eval_feats = held.to(device) if held else feats
            result = evaluate(drafter, Head(head.weight.detach(), head.keep, head.remap, head.vocab_size), embed,
                              eval_feats, k)
        drafter.cpu()
        head = Head(head.weight.cpu(), *(None if x is None else x.cpu() for x in (head.keep, head.remap)),
                    head.vocab_size)
        if rank == 0:
            log.info("%s: top-1 %s, chained %s, %.2f tokens/step at beam width 1",
                     "held-out" if held else "training set (no held-out examples)", result.get("top1"),
                     result.get("chained"), result.get("tokens_per_step_beam1", 0))
            # the block every output carries (producer.py), then what the run came to (the dtypes "auto" chose), and
            # cfg.extra: the quickstart's recipe, which it looks for at the top
            producer = {**producer_block("train", train_options(cfg), {"base": cfg.base, "data": cfg.data}),
                        # ranks: each trains --batch-size anchors a step (the global batch is ranks x batch_size)
                        "steps": total, "ranks": world, "base_dtype": dtype_name(base_dtype),
                        "train_dtype": dtype_name(train_dtype),
                        "head_rows_kept": len(head.keep) if head.keep is not None else dcfg.vocab_size,
                        "heldout" if held else "train_set": result, **cfg.extra}
            state = {name: v.detach().float() for name, v in drafter.state_dict().items()}
            state[f"lm_head.{dcfg.num_draft_layers}.weight"] = head.full_weight().float()
            save_drafter(cfg.output, dcfg, state, producer, inputs=tuple(cfg.inputs))
            _pending(cfg).unlink(missing_ok=True)
            prune_superseded(cache_dir, cfg.base)  # once the drafter is written: a failed run keeps them
    except KeyboardInterrupt:  # in the evaluation or the drafter's save: the training is kept, and so said
        if saved:
            log.warning("interrupted after training: state saved after step %d in %s; pass --resume to evaluate and "
                        "write the drafter without training again", total, cfg.state_path)
            said.append("saved")
        raise
    if world > 1:
        with _peers():
            torch.distributed.barrier()
    return cfg.output


TRAIN_SOURCES = ("base", "data", "output", "cache_dir", "extra")  # TrainConfig's fields that are no options


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


def train_options(cfg: TrainConfig) -> dict:
    """The producer block's options: every TrainConfig field but the folders and files (its sources, the output,
    the cache) and extra."""
    return {f.name: getattr(cfg, f.name) for f in fields(cfg) if f.name not in TRAIN_SOURCES}


STOPS = (signal.SIGINT, signal.SIGTERM)  # Ctrl-C; `kill` (the train command raises KeyboardInterrupt on it too)


@contextlib.contextmanager
def _whole():
    """Hold Ctrl-C and SIGTERM back until the block has run (in the main thread, the only one signals reach): the
    state saved on them is then that of whole optimizer updates, the one a resume replays from."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = []
    previous = {sig: signal.getsignal(sig) for sig in STOPS}
    held = [sig for sig, handler in previous.items() if handler is not None]  # None: not set from Python
    for sig in held:
        signal.signal(sig, lambda signum, _: caught.append(signum))
    try:
        yield
    finally:
        for sig in held:
            signal.signal(sig, previous[sig])
        for sig in dict.fromkeys(caught):
            signal.raise_signal(sig)  # delivered now, to the usual handler (KeyboardInterrupt)


def _check_finite(loss: torch.Tensor, grad_norm: torch.Tensor, step: int, total: int, lr: float) -> None:
    """Stop a diverged run before its update: no drafter of NaNs is written, and the last saved state stays good."""
    loss, grad_norm = loss.item(), grad_norm.item()
    if not (math.isfinite(loss) and math.isfinite(grad_norm)):
        raise ConfigError(f"training diverged at step {step} of {total} (loss {loss:.3g}, gradient norm "
                          f"{grad_norm:.3g}), so no drafter was written: lower --lr (now {lr:g})")


def _seen_tokens(feats: Features, tokenizer, vocab_size: int, world: int) -> torch.Tensor:
    """Sorted vocab ids of every token in the training examples (prompts too) and EOS, united across ranks."""
    seen = torch.zeros(vocab_size, dtype=torch.bool)
    seen[feats.tokens[feats.tokens < vocab_size]] = True
    if tokenizer.eos_token_id is not None:
        seen[tokenizer.eos_token_id] = True
    if world > 1:
        flags = seen.to(torch.uint8)
        _all_reduce(flags, torch.distributed.ReduceOp.MAX)
        seen = flags.bool()
    return seen.nonzero().squeeze(1)


def _arch(cfg: TrainConfig, base_config: dict) -> dict:
    """The drafter shape new_drafter makes, as its config's JSON, known before any work."""
    H = int(base_config["hidden_size"])
    return DrafterConfig(hidden_size=H, exit_dim=cfg.exit_dim or H, num_draft_layers=cfg.num_draft_layers,
                         rnn=cfg.rnn, vocab_size=int(base_config["vocab_size"]), predict_n=cfg.predict_n).to_json()


def _options(cfg: TrainConfig, device: torch.device, world: int = 1) -> dict:
    """What a resumed run must share with the interrupted one, besides the drafter's shape and the number of steps:
    every option that changes a step, the base and the data (computed once per run: it reads every data file). The
    dtypes as resolved on `device`: an `auto` resumed on another machine or device may resolve to another one. The
    number of torchrun ranks: each rank's shard of the data and its batches follow from it."""
    data = hashlib.sha1()
    for path in cfg.data:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                data.update(block)
    return {"base": base_id(cfg.base), "batch_size": cfg.batch_size, "seed": cfg.seed,
            "soft_target": cfg.soft_target, "later_sharpness": cfg.later_sharpness, "step_decay": cfg.step_decay,
            "lr": cfg.lr, "train_dtype": dtype_name(cfg.torch_dtype(cfg.train_dtype, device)),
            "train_head": cfg.train_head, "full_vocab": cfg.full_vocab, "max_seq_len": cfg.max_seq_len,
            "distill": cfg.distill, "distill_max_new_tokens": cfg.distill_max_new_tokens,
            "base_dtype": dtype_name(cfg.torch_dtype(cfg.base_dtype, device)),
            "max_examples": cfg.max_examples, "eval_examples": cfg.eval_examples, "data": data.hexdigest(),
            "ranks": world, "extra": cfg.extra}


def _save_state(cfg: TrainConfig, drafter: Drafter, head: Head, opt, step: int, same: dict) -> None:
    """same: what a resume must share with this run (`_options`, the drafter's shape, the steps), saved for it to
    compare."""
    tmp = cfg.state_path.with_suffix(".partial")
    cfg.state_path.parent.mkdir(parents=True, exist_ok=True)
    try:  # one name, not atomic_file's per process: a killed run's partial (the state's size) is replaced, not kept
        torch.save({"step": step, "drafter": drafter.state_dict(), "optimizer": opt.state_dict(),
                    "head": head.weight.detach(), "head_keep": head.keep, **same}, tmp)
        os.replace(tmp, cfg.state_path)
    finally:  # a failed save (a full disk) left its partial file, holding the space the error asked to free
        tmp.unlink(missing_ok=True)


def _pending(cfg: TrainConfig) -> Path:
    """Marks a state saved after the last step whose drafter is not written yet (the evaluation and the save come
    after it): without it that state read as a finished run's."""
    return cfg.state_path.with_suffix(".pending")


def _remove_earlier_state(cfg: TrainConfig) -> None:
    """Delete an earlier run's state, with a warning when that run was interrupted: a rerun that left out --resume
    (which the interruption's own line asked for) once threw its steps away without a word, and one interrupted after
    its last step (in the evaluation or the drafter's save) was removed as a finished run's."""
    try:
        state = _read_state(cfg, mmap=True)
        step, total = int(state["step"]), int(state["total"])
    except Exception:  # unreadable or of an older layout: nothing to continue from, nothing to say
        step = total = 0
    if step < total:
        log.warning("starting over: removed %s, the state of an interrupted run after step %d of %d (--resume "
                    "continues such a run)", cfg.state_path, step, total)
    elif total and _pending(cfg).exists():
        log.warning("starting over: removed %s, the state of a run interrupted after its last step (%d) before its "
                    "drafter was written (--resume writes it without training again)", cfg.state_path, step)
    else:
        log.info("removing %s, the state of an earlier run", cfg.state_path)
    cfg.state_path.unlink()
    _pending(cfg).unlink(missing_ok=True)


def _same_state_on_every_rank(cfg: TrainConfig, rank: int, world: int) -> None:
    """Every torchrun rank loads the state from `cfg.state_path` on its own node, and only rank 0 writes it: a rank on
    a node that does not share rank 0's disk found none there and said to run without --resume (which deletes rank 0's
    state), or could find another run's and take other steps than rank 0. Refused on every rank, in one line, unless
    each holds rank 0's step. Rank 0 without a state: the usual error, `_read_state`'s, on every rank (a rank finding
    another run's state on its node once went on alone, for as long as its shard's distillation took)."""
    steps = torch.zeros(world, dtype=torch.long)
    steps[rank] = int(_read_state(cfg, mmap=True)["step"]) if cfg.state_path.exists() else -1
    _all_reduce(steps)
    first, steps = int(steps[0]), steps.tolist()
    odd = [f"rank {r} has " + ("none" if step < 0 else f"one after step {step}") for r, step in enumerate(steps)
           if step != first]
    if first < 0:
        raise _no_state(cfg)
    if odd:
        raise ConfigError(f"--resume: torchrun's rank 0 has the training state after step {first} at "
                          f"{cfg.state_path}, but at that path {', '.join(odd)}: every rank reads it there on its own "
                          f"node and only rank 0 writes it, so put --output on a file system every node shares (or "
                          f"copy the file to that path on each node), then rerun with --resume")


def _no_state(cfg: TrainConfig) -> ConfigError:
    return ConfigError(f"--resume: no training state at {cfg.state_path} (a run interrupted before its first step "
                       f"saves none): run without --resume (the answers and hidden states cached so far are reused)")


def _read_state(cfg: TrainConfig, mmap: bool = False) -> dict:
    if not cfg.state_path.exists():
        raise _no_state(cfg)
    return torch.load(cfg.state_path, map_location="cpu", weights_only=True, mmap=mmap)


# a resume's compared values -> what the user changed; the others are the option of the key's name, with both values
CHANGED = {"arch": "drafter shape (--num-draft-layers, --rnn, --exit-dim, --predict-n)",
           "base": "--base (its config, weights or tokenizer)", "data": "--data (the files' contents)",
           "train_head": "--freeze-head", "eval_examples": "held-out examples",
           "total": "number of steps (--max-steps, --epochs)", "ranks": "number of torchrun ranks (WORLD_SIZE)",
           "extra": "recipe (the quickstart's)",
           "per_epoch": "steps per epoch (an earlier version's: it left out each epoch's last partial batch)"}
SAVED_BEFORE = {"ranks": 1, "extra": {}}  # what a state saved before a value was compared holds (ranks: most runs
                                          # have one; extra: only the quickstart sets it)


def resumable(cfg: TrainConfig) -> bool:
    """Whether `cfg.state_path` holds a state saved with `cfg.extra` (the quickstart's recipe id): a run resumes
    only such a one. The other options are compared when the run starts."""
    if not cfg.state_path.exists():
        return False
    return _read_state(cfg, mmap=True).get("extra", SAVED_BEFORE["extra"]) == cfg.extra


def _refuse_other(cfg: TrainConfig, state: dict, same: dict, more: tuple[str, ...] = ()) -> None:
    saved = {key: state.get(key, SAVED_BEFORE.get(key)) for key in same}
    diff = [CHANGED.get(key, f"--{key.replace('_', '-')}") +
            ("" if key in ("arch", "base", "data", "train_head", "per_epoch") else f" ({saved[key]} then, {v} now)")
            for key, v in same.items() if saved[key] != v] + list(more)
    if diff:
        raise ConfigError(f"--resume: {cfg.state_path} was saved with different {', '.join(diff)}: "
                          f"resume with the options of the interrupted run, or start over without --resume")


def _load_state(cfg: TrainConfig, drafter: Drafter, head: Head, opt, total: int, same: dict) -> int:
    state = _read_state(cfg)
    _refuse_other(cfg, state, same, () if _same_keep(state["head_keep"], head.keep) else
                  ("data (the kept vocabulary differs)",))
    drafter.load_state_dict(state["drafter"])
    with torch.no_grad():
        head.weight.copy_(state["head"])
    opt.load_state_dict(state["optimizer"])
    log.info("resuming at step %d of %d from %s", state["step"], total, cfg.state_path)
    return int(state["step"])


def _same_keep(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    """Saved (CPU) and current (training device) kept rows: equal wherever each lives."""
    return (a is None and b is None) or (a is not None and b is not None and torch.equal(a.cpu(), b.cpu()))
