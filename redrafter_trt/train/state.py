"""The training state (`TrainConfig.state_path`, next to the output) that --resume continues from: saving it, reading
it, refusing one saved with other options (named as the options the user changed), and the earlier run's state a
new run removes (saying so when that run was interrupted).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import pickle
import re
import zipfile
from array import array
from pathlib import Path

import torch

from ..drafter import Drafter, DrafterConfig
from ..errors import ConfigError, CorruptFileError, RedrafterError, first_line
from ..interrupts import uninterrupted
from ..io import unsafe_pickle
from ..locks import LockHeld, holder_name, holding
from ..plural import are, counted
from .config import TrainConfig
from .data import Example
from .baseid import base_id, stat_id
from .dataset import dtype_name
from .objective import Head
from .torchrun import all_reduce, collective

log = logging.getLogger(__name__)


@contextlib.contextmanager
def writing_output(cfg: TrainConfig, rank: int, world: int):
    """Hold `cfg.lock_path` for the block (torchrun's rank 0, which writes the state and the drafter): a second run on
    the same --output removed the first's live state as an interrupted run's, and each wrote its drafter over the
    other's, neither with --force; two --resume runs trained from one state. Refused on every rank, in one line naming
    the process holding it."""
    holder = None
    with contextlib.ExitStack() as held:
        if rank == 0:
            try:
                held.enter_context(holding(cfg.lock_path))
            except LockHeld as e:
                holder = e.holder
        if world > 1:  # the other ranks refused with rank 0
            said = [holder]
            with collective():
                torch.distributed.broadcast_object_list(said, src=0)
            holder = said[0]
        if holder is not None:
            who = holder_name(holder)
            raise ConfigError(f"another train{f' ({who})' if who else ''} is writing --output {cfg.output} and its "
                              f"training state {cfg.state_path}: wait for it to end, or choose another --output")
        yield


def drafter_arch(cfg: TrainConfig, base_config: dict) -> dict:
    """The drafter shape new_drafter makes, as its config's JSON, known before any work."""
    H = int(base_config["hidden_size"])
    return DrafterConfig(hidden_size=H, exit_dim=cfg.exit_dim or H, num_draft_layers=cfg.num_draft_layers,
                         rnn=cfg.rnn, vocab_size=int(base_config["vocab_size"]), predict_n=cfg.predict_n).to_json()


def resume_options(cfg: TrainConfig, device: torch.device, world: int = 1) -> dict:
    """What a resumed run must share with the interrupted one, besides the drafter's shape and the number of steps:
    every option that changes a step, the base and the data (computed once per run: it reads every data file). The
    dtypes as resolved on `device`: an `auto` resumed on another machine or device may resolve to another one. The
    number of torchrun ranks: each rank's shard of the data and its batches follow from it. --distill-batch-size:
    in bfloat16 an answer depends on the prompts batched beside it, compared only while answers are left to write
    (`refuse_answering`)."""
    data = hashlib.sha1()
    for path in cfg.data:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                data.update(block)
    return {"base": base_id(cfg.base, cfg.cache_dir), "batch_size": cfg.batch_size, "seed": cfg.seed,
            "soft_target": cfg.soft_target, "later_sharpness": cfg.later_sharpness, "step_decay": cfg.step_decay,
            "lr": cfg.lr, "train_dtype": dtype_name(cfg.torch_dtype(cfg.train_dtype, device)),
            "train_head": cfg.train_head, "full_vocab": cfg.full_vocab, "max_seq_len": cfg.max_seq_len,
            "distill": cfg.distill, "distill_max_new_tokens": cfg.distill_max_new_tokens,
            "distill_batch_size": cfg.distill_batch_size,
            "base_dtype": dtype_name(cfg.torch_dtype(cfg.base_dtype, device)),
            "max_examples": cfg.max_examples, "max_examples_kept": bool(cfg.max_examples and not cfg.distill),
            "eval_examples": cfg.eval_examples, "data": data.hexdigest(),
            "ranks": world, "extra": cfg.extra, "chat_template_kwargs": cfg.chat_template_kwargs}


FULL_DISK = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}  # a write that did not fit: the disk, the quota, ulimit -f


def save_state(cfg: TrainConfig, drafter: Drafter, head: Head, opt, step: int, same: dict) -> None:
    """same: what a resume must share with this run (`resume_options`, the drafter's shape, the steps), saved for it to
    compare. Whole: a Ctrl-C or SIGTERM inside torch.save's writes came out of its zip writer as a RuntimeError
    ('unexpected pos 30 vs 0'), a failed save that lost every step since the one before; held until it is done."""
    tmp = cfg.state_path.with_suffix(".partial")
    cfg.state_path.parent.mkdir(parents=True, exist_ok=True)
    with uninterrupted():
        _save(cfg, tmp, {"step": step, "drafter": drafter.state_dict(), "optimizer": opt.state_dict(),
                         "head": head.weight.detach(), "head_keep": head.keep, **same})


def _save(cfg: TrainConfig, tmp: Path, state: dict) -> None:
    try:  # one name, not atomic_file's per process: a killed run's partial (the state's size) is replaced, not kept
        try:  # opened here, not by torch: a failed open or write is an OSError, which torch says as its own text
            with open(tmp, "wb") as f:
                torch.save(state, f)
        except (OSError, RuntimeError) as e:
            raise RedrafterError(f"cannot save the training state {cfg.state_path} {_save_failure(e, cfg)}") from None
        os.replace(tmp, cfg.state_path)
    finally:  # a failed save (a full disk) left its partial file, holding the space the error asked to free
        if not tmp.is_dir():  # a folder in its place is what the error names
            tmp.unlink(missing_ok=True)


def _save_failure(e: BaseException, cfg: TrainConfig) -> str:
    """`(why): fix` of a failed save: free disk space for a write that did not fit, else the OS error (torch's writer
    raises a RuntimeError, "[enforce fail at inline_container.cc:672] . unexpected pos ...", over the file's)."""
    cause = e if isinstance(e, OSError) else e.__context__
    if not isinstance(cause, OSError):
        said = re.sub(r"^\[enforce fail at [^]]*\] \. ", "", first_line(e, "write failed"))
        return f"({said}): check that {cfg.state_path.parent} is writable and has free disk space"
    if cause.errno in FULL_DISK:
        return (f"({cause.strerror}): free disk space in {cfg.state_path.parent} (an earlier state there is kept for "
                f"--resume)")
    where = f"{cause.filename}: " if cause.filename else ""
    return f"({where}{cause.strerror or cause}): check the path and its permissions"


def pending_marker(cfg: TrainConfig) -> Path:
    """Marks a state saved after the last step whose drafter is not written yet (the evaluation and the save come
    after it): without it that state read as a finished run's."""
    return cfg.state_path.with_suffix(".pending")


def remove_earlier_state(cfg: TrainConfig) -> None:
    """Delete an earlier run's state, with a warning when that run was interrupted: a rerun that left out --resume
    (which the interruption's own line asked for) once threw its steps away without a word, and one interrupted after
    its last step (in the evaluation or the drafter's save) was removed as a finished run's."""
    try:
        state = read_state(cfg, mmap=True)
        step, total = int(state["step"]), int(state["total"])
    except Exception:  # unreadable or of an older layout: nothing to continue from, nothing to say
        step = total = 0
    with uninterrupted():  # the line and the removal whole: a Ctrl-C between them left what the line said was removed
        if step < total:
            log.warning("starting over: removed %s, the state of an interrupted run after step %d of %d (--resume "
                        "continues such a run)", cfg.state_path, step, total)
        elif total and pending_marker(cfg).exists():
            log.warning("starting over: removed %s, the state of a run interrupted after its last step (%d) before "
                        "its drafter was written (--resume writes it without training again)", cfg.state_path, step)
        else:
            log.info("removing %s, the state of an earlier run", cfg.state_path)
        cfg.state_path.unlink()
        pending_marker(cfg).unlink(missing_ok=True)


def same_state_on_every_rank(cfg: TrainConfig, rank: int, world: int) -> None:
    """Every torchrun rank loads the state from `cfg.state_path` on its own node, and only rank 0 writes it: a rank on
    a node that does not share rank 0's disk found none there and said to run without --resume (which deletes rank 0's
    state), or could find another run's and take other steps than rank 0. Refused on every rank, in one line, unless
    each holds rank 0's step. Rank 0 without a state: the usual error, `read_state`'s, on every rank (a rank finding
    another run's state on its node once went on alone, for as long as its shard's distillation took)."""
    steps = torch.zeros(world, dtype=torch.long)
    steps[rank] = int(read_state(cfg, mmap=True)["step"]) if cfg.state_path.exists() else -1
    all_reduce(steps)
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


def read_state(cfg: TrainConfig, mmap: bool = False) -> dict:
    """The saved state; a file cut short (a full disk, a copy broken off) or not a state: CorruptFileError."""
    if not cfg.state_path.exists():
        raise _no_state(cfg)
    fix = "start over without --resume (the answers and hidden states cached so far are reused)"
    state = "not a whole PyTorch file"  # save_state's torch.save writes a zip archive, whose end a cut file lacks
    if zipfile.is_zipfile(cfg.state_path):
        try:
            state = torch.load(cfg.state_path, map_location="cpu", weights_only=True, mmap=mmap)
        except pickle.UnpicklingError as e:  # torch's refusal of a global: no state save_state writes
            raise CorruptFileError(f"{unsafe_pickle(cfg.state_path, e)}: {fix}") from None
        except (RuntimeError, EOFError, UnicodeDecodeError, ValueError) as e:
            state = first_line(e, type(e).__name__)
    if not isinstance(state, dict) or "step" not in state:
        why = state if isinstance(state, str) else "no step saved"
        raise CorruptFileError(f"{cfg.state_path} is truncated or not a training state ({why}): {fix}")
    return state


# a resume's compared values -> what the user changed; the others are the option of the key's name, with both values
CHANGED = {"base": "--base (its config, tokenizer or weight files' contents)",
           "data": "--data (the files' contents)",
           "train_head": "--freeze-head", "eval_examples": "held-out examples",
           "total": "number of steps (--max-steps, --epochs)", "ranks": "number of torchrun ranks (WORLD_SIZE)",
           "extra": "recipe (the quickstart's)",
           "max_examples_kept": "conversations picked by --max-examples (an earlier version counted those read, "
                                "before the ones with no answer, tool calls the template cannot train, or beginning "
                                "a longer one were left out)",
           "per_epoch": "steps per epoch (an earlier version's: it left out each epoch's last partial batch)"}
UNSAID = ("base", "data", "train_head", "per_epoch", "max_examples_kept")  # named without their values
NONE_SAID = {"max_examples": "all", "eval_examples": "the default"}  # what an option's None means, as said
# the drafter's shape (its config's JSON, `drafter_arch`): the option of each field; its width and vocabulary are the
# base's, named as --base
ARCH_OPTIONS = {"num_draft_layers": "--num-draft-layers", "rnn": "--rnn", "exit_dim": "--exit-dim",
                "predict_n": "--predict-n"}
SAVED_BEFORE = {"ranks": 1, "extra": {}, "chat_template_kwargs": {}, "max_examples_kept": False}  # what a state
# saved before a value was compared holds (ranks: most runs have one; extra: only the quickstart sets it;
# chat_template_kwargs: none then; max_examples_kept: --max-examples counted conversations read)
UNRECORDED = ("distill_batch_size", "examples")  # not compared with a state saved before they were: unknown there
# what the answers the base has yet to write depend on (in bfloat16 an answer depends on the prompts batched beside it)
# and where those it wrote are: compared by `refuse_answering` alone, while answers are left to write; once every one is
# cached, another --distill-batch-size changes nothing (and is recorded)
ANSWERING = ("distill_batch_size", "cache_dir")


def examples_digest(examples: list[Example], world: int = 1) -> str:
    """What the steps train on, as a hash of every training example's token ids and answer mask, the same on every
    torchrun rank (each hashes its shard): the base's distilled answers, answered anew (a new --cache-dir, cached ones
    deleted) on another device or software, can differ with every option the same."""
    digest = hashlib.sha1()
    for ex in examples:
        digest.update(array("q", ex.ids).tobytes() + bytes(ex.mask) + b"\n")
    if world == 1:
        return digest.hexdigest()
    shards: list = [None] * world
    with collective():
        torch.distributed.all_gather_object(shards, digest.hexdigest())
    return hashlib.sha1(" ".join(shards).encode()).hexdigest()


def _values(key: str, then, now, suffix: str = "") -> str:
    """ (X then, Y now`suffix`), each as the user gave it: a flag on or off, None as what it means."""
    said = [("on" if v else "off") if isinstance(v, bool) else NONE_SAID.get(key, v) if v is None else v
            for v in (then, now)]
    return f" ({said[0]} then, {said[1]} now{suffix})"


def _arch_changes(then: dict | None, now: dict) -> list[str]:
    """The drafter-shape options that differ, each with both values (only the base's width or vocabulary, which
    --base names: none)."""
    if not isinstance(then, dict):
        return ["drafter shape (--num-draft-layers, --rnn, --exit-dim, --predict-n)"]
    options = [option + _values(key, then.get(key), now.get(key)) for key, option in ARCH_OPTIONS.items()
               if then.get(key) != now.get(key)]
    return options or ([] if then == now else ["drafter shape (the base's width or vocabulary)"])


def _examples_changed(distill: bool) -> str:
    if distill:
        return ("training examples (the base's distilled answers differ from the interrupted run's: answered anew, "
                "not read from its --cache-dir, on another device or software version)")
    return "training examples (the data encodes to other tokens: another tokenizer or transformers version)"


def resumable(cfg: TrainConfig) -> bool:
    """Whether `cfg.state_path` holds a state saved with `cfg.extra` (the quickstart's recipe id): a run resumes
    only such a one. The other options are compared when the run starts."""
    if not cfg.state_path.exists():
        return False
    try:
        return read_state(cfg, mmap=True).get("extra", SAVED_BEFORE["extra"]) == cfg.extra
    except CorruptFileError:  # nothing to continue from: the run starts over, removing it
        return False


def refuse_other(cfg: TrainConfig, state: dict, same: dict, kept_vocabulary_differs: bool = False) -> None:
    """Refuse a state saved with other values than `same`'s, naming each as the option the user changed. One saved
    with other training examples: those alone (the steps per epoch and kept vocabulary follow from them); one saved
    before the examples were recorded: the steps per epoch and the kept vocabulary. The wording of an earlier version
    (`CHANGED`'s per_epoch and max_examples_kept) only for a state that records no such value."""
    saved = {key: state.get(key, SAVED_BEFORE.get(key)) for key in same
             if (key in state or key not in UNRECORDED) and key not in ANSWERING}
    changed = [key for key in saved if saved[key] != same[key] and not _same_base(cfg, key, saved[key])]
    if "examples" in changed:
        changed, kept_vocabulary_differs = [key for key in changed if key != "per_epoch"], False
    diff = []
    for key in changed:
        if key == "arch":
            diff += _arch_changes(saved[key], same[key])
        elif key == "examples":
            diff.append(_examples_changed(cfg.distill))
        elif key == "max_examples_kept" and key in state:  # follows from --max-examples or --distill, named
            continue
        elif key == "per_epoch" and key in state:
            diff.append("steps per epoch" + _values(key, saved[key], same[key], ": the training examples differ"))
        else:
            diff.append(CHANGED.get(key, f"--{key.replace('_', '-')}") +
                        ("" if key in UNSAID else _values(key, saved[key], same[key])))
    if kept_vocabulary_differs:
        diff.append("data (the kept vocabulary differs)")
    if diff:
        raise ConfigError(f"--resume: {cfg.state_path} was saved with different {', '.join(diff)}: "
                          f"resume with the options of the interrupted run, or start over without --resume")


def _same_base(cfg: TrainConfig, key: str, saved) -> bool:
    """Whether a saved base id is the one versions up to 0.1.0 gave this base (baseid.stat_id): a run they
    interrupted resumes on the base as it was."""
    return key == "base" and saved == stat_id(cfg.base)


def refuse_answering(cfg: TrainConfig, state: dict, same: dict, left: int, there: int) -> None:
    """Refuse a resume whose base has `left` answers to write (none cached in --cache-dir; `there`: of those, how
    many the interrupted run's --cache-dir lacks too; `left` without --distill) when that --cache-dir holds them (a new
    --cache-dir: every prompt was answered anew, hours for a large base, before the answers were found to differ, or
    not) or when they would be
    batched otherwise (another --distill-batch-size). Answers the base wrote into no cache left (deleted) are
    written again, in the interrupted run's batches."""
    if not left:
        return
    then = state.get("cache_dir")
    if there < left:
        raise ConfigError(f"--resume: {counted(left - there, 'answer')} of the base that the interrupted run trained or "
                          f"scored on {are(left - there)} not in --cache-dir {cfg.cache_dir} but in its {then}: pass "
                          f"--cache-dir {then} (or copy its distill-* folders into {cfg.cache_dir}), or start over "
                          f"without --resume")
    key = "distill_batch_size"
    if key in state and state[key] != same[key]:
        raise ConfigError(f"--resume: {cfg.state_path} was saved with different --distill-batch-size"
                          f"{_values(key, state[key], same[key])}, and the base has {counted(left, 'answer')} to "
                          f"write (not in --cache-dir {cfg.cache_dir}), which other batches can change: resume with "
                          f"--distill-batch-size {state[key]}, or start over without --resume")


def load_state(cfg: TrainConfig, drafter: Drafter, head: Head, opt, total: int, same: dict) -> int:
    state = read_state(cfg)
    refuse_other(cfg, state, same, not _same_keep(state["head_keep"], head.keep))
    drafter.load_state_dict(state["drafter"])
    with torch.no_grad():
        head.weight.copy_(state["head"])
    opt.load_state_dict(state["optimizer"])
    log.info("resuming at step %d of %d from %s", state["step"], total, cfg.state_path)
    return int(state["step"])


def _same_keep(a: torch.Tensor | None, b: torch.Tensor | None) -> bool:
    """Saved (CPU) and current (training device) kept rows: equal wherever each lives."""
    return (a is None and b is None) or (a is not None and b is not None and torch.equal(a.cpu(), b.cpu()))
