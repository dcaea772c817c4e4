"""Acceptance and speed-up benchmark: the same prompts, greedy, batch 1, through transformers' `generate`, the
reference runtime without drafting, and the runtime with drafting at each (beam width W, draft length L).

Per configuration: mean tokens per step (the runtime's count: new tokens / decoding steps, the prefill being one
step), the histogram of tokens emitted per step after the prefill, tokens per second (new tokens / wall seconds, both
summed over prompts) and the speed-up over both baselines (the ratio of tokens per second). Prompts run one at a
time, every method on a prompt before the next prompt, so that a change in machine load hits all methods alike.
Beside each timed call's wall time, the seconds its threads ran and waited for a core (Linux's scheduler figures):
other processes competing for the cores show as waiting, and make the wall times, not the token counts, noise.

Greedy drafting must reproduce plain decoding token for token: every configuration reports the prompts where it
did not (in float32 that is a bug; in float16/bfloat16 logits tie often, and a tie can flip a token), and such a
configuration is left out of `best` and the verdict. Before timing, every method and every (W, L) runs once untimed.

The checks before any model loads are in bench_inputs.py; the table, verdict and plot in bench_report.py.
"""

from __future__ import annotations

import glob
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, TypeVar

import torch
import transformers

from .bench_inputs import (check_checkpoint, check_grid, file_number, model_meta, paths_meta, pick_prompts,
                           prompts_meta, reconvert_beams, resolve_hf_dir)
from .bench_stats import RatioInterval, json_number, ratio_interval, require_scipy
from .errors import ConfigError, first_line
from .plural import counted
from .producer import absolute, recorded_source
from .runtime.folder import Checkpoint
from .tokens import drafter_mode_warning, encode_prompts, load_tokenizer, stop_ids, uses_chat

log = logging.getLogger(__name__)

WARMUP_TOKENS = 8
T = TypeVar("T")


def sched_seconds() -> tuple[float, float] | None:
    """(seconds running on a core, seconds runnable but waiting for one) of this process, summed over its threads
    (torch's intra-op pool included), from Linux's /proc/self/task/*/schedstat; None where it cannot be read (not
    Linux, a kernel without CONFIG_SCHED_INFO). Sleeping (I/O, a GPU sync that yields) counts as neither."""
    run = wait = 0
    for path in glob.glob("/proc/self/task/*/schedstat"):
        try:
            with open(path) as f:
                ran, waited = f.read().split()[:2]
        except (OSError, ValueError):
            continue  # a thread that ended between the listing and the read
        run, wait = run + int(ran), wait + int(waited)
    return (run / 1e9, wait / 1e9) if run else None


@dataclass(frozen=True)
class Timing:
    """One timed call: wall seconds, and the seconds its threads ran and waited for a core (0 and 0: unknown)."""
    wall: float
    cpu: float = 0.0
    wait: float = 0.0


def timed(call: Callable[[], T]) -> tuple[T, Timing]:
    """call() and its Timing; the scheduler is read outside the wall clock's span."""
    before = sched_seconds()
    start = time.perf_counter()
    out = call()
    wall = time.perf_counter() - start
    after = sched_seconds()
    if before is None or after is None:
        return out, Timing(wall)
    return out, Timing(wall, after[0] - before[0], after[1] - before[1])


@dataclass(frozen=True)
class BenchOptions:
    checkpoint_dir: Path
    tokenizer_dir: Path
    prompts: Path
    hf_dir: Path | None = None        # None: the base recorded in the checkpoint (producer.sources.base)
    num_prompts: int | None = None    # None: every prompt in the file
    max_new_tokens: int = 64
    beams: tuple[int, ...] = ()       # empty: powers of two below the checkpoint's num_beams, and num_beams
    draft_lens: tuple[int, ...] = ()  # empty: likewise up to the checkpoint's draft_len
    chat: bool | None = None          # None: apply the chat template when the tokenizer has one
    device: str = "cpu"
    compile: bool = False             # the runtime's base layers compiled by TorchInductor (runtime/compiled.py)
    chat_template_kwargs: dict = field(default_factory=dict)  # the chat template's variables (--chat-template-kwargs)
    grid_flags: tuple[str, str] = ("--beams", "--draft-lens")  # how refusals name the grids (a preset's: its fields)


@dataclass
class Run:
    """One method over all prompts, batch 1 each: outputs (prompt excluded), summed wall time and steps, and the
    seconds its threads ran on a core and waited for one (summed over threads, so up to threads x wall)."""
    outputs: list[list[int]] = field(default_factory=list)
    wall_seconds: float = 0.0
    cpu_seconds: float = 0.0
    cpu_wait_seconds: float = 0.0
    steps: int = 0
    histogram: dict[int, int] = field(default_factory=dict)
    prompt_steps: list[int] = field(default_factory=list)  # decoding steps of each prompt
    prompt_seconds: list[float] = field(default_factory=list)  # wall seconds of each prompt

    @property
    def new_tokens(self) -> int:
        return sum(len(o) for o in self.outputs)

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens / self.wall_seconds if self.wall_seconds else 0.0

    @property
    def mean_tokens_per_step(self) -> float:
        return self.new_tokens / self.steps if self.steps else 0.0

    @property
    def prompt_tokens(self) -> list[int]:
        """New tokens of each prompt, [prompts]."""
        return [len(o) for o in self.outputs]

    def speedup(self, baseline: Run, configurations: int = 1) -> RatioInterval:
        """Its speed-up over `baseline`, total tokens over total time prompt by prompt, with its interval
        (bench_stats.ratio_interval; `configurations`: how many compete for `best`)."""
        return ratio_interval(self.prompt_seconds, self.prompt_tokens, baseline.prompt_seconds, baseline.prompt_tokens,
                              configurations)

    @property
    def cpu_wait_share(self) -> float | None:
        """The share of its threads' runnable time spent waiting for a core: near 0 on a quiet machine, high when
        other processes compete for the cores (None: the scheduler's figures could not be read)."""
        ready = self.cpu_seconds + self.cpu_wait_seconds
        return self.cpu_wait_seconds / ready if ready else None

    def add(self, output: list[int], timing: Timing, steps: int, histogram: dict[int, int]) -> None:
        self.outputs.append(list(output))
        self.wall_seconds += timing.wall
        self.cpu_seconds += timing.cpu
        self.cpu_wait_seconds += timing.wait
        self.steps += steps
        self.prompt_steps.append(steps)
        self.prompt_seconds.append(timing.wall)
        for k, n in histogram.items():
            self.histogram[k] = self.histogram.get(k, 0) + n

    def to_json(self) -> dict:
        return {"new_tokens": self.new_tokens, "wall_seconds": self.wall_seconds, "steps": self.steps,
                "tokens_per_second": self.tokens_per_second, "mean_tokens_per_step": self.mean_tokens_per_step,
                "histogram": {str(k): v for k, v in sorted(self.histogram.items())}, **self.prompt_json(),
                **self.cpu_json()}

    def prompt_json(self) -> dict:
        """Each prompt's new tokens and wall seconds: what the speed-ups' intervals are computed from."""
        return {"prompt_new_tokens": self.prompt_tokens, "prompt_seconds": self.prompt_seconds}

    def cpu_json(self) -> dict:
        return {"cpu_seconds": self.cpu_seconds, "cpu_wait_seconds": self.cpu_wait_seconds,
                "cpu_wait_share": self.cpu_wait_share}


@dataclass
class ConfigResult:
    num_beams: int
    draft_len: int
    run: Run
    speedup_vs_hf: float
    speedup_vs_no_draft: float
    mismatched_prompts: list[int]  # the prompts whose drafted output differs from the no-draft output, numbered
    # from 1 in the prompts file's order (`prompt 3/80`; of a --num-prompts subset, `prompt 2/20 (#5 of 80)`: 5)

    def to_json(self) -> dict:
        return {"num_beams": self.num_beams, "draft_len": self.draft_len,
                "mean_tokens_per_step": self.run.mean_tokens_per_step,
                "tokens_per_second": self.run.tokens_per_second,
                "speedup_vs_hf": json_number(self.speedup_vs_hf),
                "speedup_vs_no_draft": json_number(self.speedup_vs_no_draft),
                "histogram": {str(k): v for k, v in sorted(self.run.histogram.items())},
                "new_tokens": self.run.new_tokens, "wall_seconds": self.run.wall_seconds, "steps": self.run.steps,
                "matches_no_draft": not self.mismatched_prompts, "mismatched_prompts": self.mismatched_prompts,
                **self.run.prompt_json(), **self.run.cpu_json()}


@dataclass
class BenchReport:
    meta: dict
    hf: Run
    no_draft: Run
    configs: list[ConfigResult]

    @property
    def best(self) -> ConfigResult | None:
        """The fastest configuration (speed-up over transformers) whose output matches plain decoding on every prompt;
        None where none does. One whose output differs is left out (`excluded`): its tokens/step and tokens/s were
        measured on other text than the baselines', so its speed-up compares nothing."""
        exact = [c for c in self.configs if not c.mismatched_prompts]
        return max(exact, key=lambda c: c.speedup_vs_hf) if exact else None

    @property
    def excluded(self) -> list[ConfigResult]:
        """The configurations left out of `best` and the verdict: their output differs from plain decoding."""
        return [c for c in self.configs if c.mismatched_prompts]

    @property
    def headline(self) -> ConfigResult:
        """`best`, else (no configuration matches plain decoding) the fastest: the one whose answers the quickstart
        shows, saying they differ."""
        return self.best or max(self.configs, key=lambda c: c.speedup_vs_hf)

    @property
    def eligible(self) -> int:
        """How many configurations compete for `best` (at least 1): its intervals' Bonferroni count."""
        return max(1, len(self.configs) - len(self.excluded))

    def vs_no_draft(self, config: ConfigResult) -> RatioInterval:
        """The config's speed-up over the runtime without drafting and its interval: the verdict's margin."""
        return config.run.speedup(self.no_draft, self.eligible)

    def vs_hf(self, config: ConfigResult) -> RatioInterval:
        """The config's speed-up over transformers and its interval."""
        return config.run.speedup(self.hf, self.eligible)

    @property
    def methods(self) -> list[tuple[str, Run]]:
        """Every timed method with its table name."""
        return [("transformers", self.hf), ("no draft", self.no_draft),
                *((f"W={c.num_beams} L={c.draft_len}", c.run) for c in self.configs)]

    @property
    def hf_matches_no_draft(self) -> int:
        """Prompts where transformers and the runtime (no drafting) produced the same tokens: a conversion check."""
        return sum(a == b for a, b in zip(self.hf.outputs, self.no_draft.outputs))

    def to_json(self) -> dict:
        why = f"drafted output differs from plain decoding ({mismatch_reason(self.meta)})"
        return {"meta": self.meta,
                "baselines": {"hf": self.hf.to_json(), "no_draft": self.no_draft.to_json(),
                              "hf_matches_no_draft": self.hf_matches_no_draft},
                "configs": [self.config_json(c) for c in self.configs],
                "best": self.config_json(self.best) if self.best else None,
                "excluded_from_best": [{"num_beams": c.num_beams, "draft_len": c.draft_len,
                                        "mismatched_prompts": c.mismatched_prompts, "why": why}
                                       for c in self.excluded],
                "all_match_no_draft": not self.excluded}

    def config_json(self, config: ConfigResult) -> dict:
        """A configuration's JSON with its speed-ups' intervals (bench_stats.RatioInterval)."""
        return {**config.to_json(), "speedup_vs_no_draft_interval": self.vs_no_draft(config).to_json(),
                "speedup_vs_hf_interval": self.vs_hf(config).to_json()}


def mismatch_reason(meta: dict) -> str:
    """Why greedy drafting's output can differ from plain decoding in the dtype measured."""
    dtype = meta.get("dtype", "float32")
    if dtype == "float32":
        return "in float32 that is a bug: please report it"
    return (f"{dtype} logits tie often, and a tree rounds differently from one token, so a near-tie can flip a token; "
            f"a float32 checkpoint times drafting on the same text")


# ---- the three methods ---------------------------------------------------------------------------------------------

def load_hf_baseline(hf_dir: Path, dtype: torch.dtype):
    """The transformers model of the base (on the CPU, in eval mode), or one line naming why it cannot load. Its
    folder's generation_config.json is dropped: `generate` fills every field hf_generate leaves unset from it (Qwen2.5
    Instruct's repetition_penalty 1.05 would apply to the greedy baseline, which the runtime never does)."""
    from safetensors import SafetensorError

    from .hf_model import load_causal_lm
    from .hf_state import TRANSFORMERS_LOCK

    with TRANSFORMERS_LOCK:
        from transformers import GenerationConfig

    try:
        model = load_causal_lm(hf_dir, dtype).eval()
    except (OSError, ValueError, SafetensorError) as e:
        raise ConfigError(f"cannot load the transformers baseline from {hf_dir} ({first_line(e, type(e).__name__)}): "
                          f"pass --hf-dir with the complete Hugging Face folder of the checkpoint's base") from None
    model.generation_config = GenerationConfig()
    return model


def greedy_config(max_new_tokens: int, eos: list[int]):
    """The GenerationConfig of transformers' greedy baseline: greedy alone, stopping on `eos` (`stop_ids`, as the
    runtime does)."""
    from .hf_state import TRANSFORMERS_LOCK

    with TRANSFORMERS_LOCK:
        from transformers import GenerationConfig

    return GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eos or None,
                            pad_token_id=eos[0] if eos else 0)


@torch.inference_mode()
def hf_generate(model, ids: list[int], max_new_tokens: int, eos: list[int]) -> tuple[list[int], Timing]:
    """transformers' greedy `generate` on one prompt: (new ids, its Timing)."""
    device = next(model.parameters()).device
    gen = greedy_config(max_new_tokens, eos)
    x = torch.tensor([ids], device=device)
    out, timing = timed(lambda: model.generate(input_ids=x, attention_mask=torch.ones_like(x), generation_config=gen))
    return out[0, len(ids):].tolist(), timing


def runtime_generate(model, ids: list[int], max_new_tokens: int, eos: list[int], num_beams: int, draft_len: int,
                     use_draft: bool):
    """The reference runtime on one prompt: (GenerationResult, its Timing)."""
    from .runtime import generate

    return timed(lambda: generate(model, [ids], max_new_tokens, num_beams=num_beams, draft_len=draft_len,
                                  temperature=0.0, eos_token_id=eos, use_draft=use_draft))


def _hf_cut(output: list[int], eos: list[int]) -> list[int]:
    """generate pads finished rows; a batch of one stops at EOS, but cut after the first EOS to be sure."""
    for i, t in enumerate(output):
        if t in eos:
            return output[: i + 1]
    return output


# ---- orchestration ------------------------------------------------------------------------------------------------

def check_inputs(opts: BenchOptions) -> tuple[Checkpoint, Path]:
    """Everything that can be checked before loading a model: (the checkpoint opened, HF base folder)."""
    from .runtime import RUN, check_compile, check_device

    ckpt = check_checkpoint(opts)
    check_compile(ckpt.config, opts.compile, opts.device, spelling=RUN)  # bench's --compile and --device are run's
    check_device(opts.device, spelling=RUN)  # before the transformers baseline moves there (torch's traceback otherwise)
    return ckpt, resolve_hf_dir(opts.hf_dir, ckpt.raw, ckpt.path)


def rotated(items: list[T], i: int) -> list[T]:
    """`items` starting at item i mod len(items): prompt i's order of the methods, so that none always runs last
    (after the machine warmed or throttled) and none always right after another."""
    k = i % len(items)
    return items[k:] + items[:k]


def run_bench(opts: BenchOptions, progress: Callable[[str], None] = lambda line: None,
              checked: tuple[Checkpoint, Path] | None = None) -> BenchReport:
    """Run the benchmark on the prompts pick_prompts takes from the file. `checked`: what
    check_inputs(opts) returned where the caller ran it already (the bench command, to name the base among the files
    its outputs may not replace): the base's rows are compared with the checkpoint's once a bench."""
    from .prompts import load_prompts, names_of
    from .runtime import check_positions, load

    ckpt, hf_dir = checked or check_inputs(opts)
    require_scipy()
    cfg, ckpt_config = ckpt.config, ckpt.raw
    beams_flag, lens_flag = opts.grid_flags
    beams = check_grid(opts.beams, cfg.num_beams, beams_flag, "redrafter_num_beams", reconvert_beams)
    lens = check_grid(opts.draft_lens, cfg.draft_len, lens_flag, "redrafter_draft_len_per_beam", cfg.draft_len_fix)
    grid = [(w, n) for n in lens for w in beams]
    file_texts = load_prompts(opts.prompts)
    if not file_texts:
        raise ConfigError("no prompts to benchmark: pass a --prompts file with at least one prompt")
    indices, texts = pick_prompts(file_texts, opts.num_prompts)
    tokenizer = load_tokenizer(opts.tokenizer_dir, cfg.vocab_size, opts.chat_template_kwargs)
    prompt_ids = encode_prompts(tokenizer, texts, opts.chat)
    if why := drafter_mode_warning(ckpt_config, tokenizer, opts.chat):
        log.warning("%s", why)
    check_positions(cfg, prompt_ids, opts.max_new_tokens, flag="--max-new-tokens", names=names_of(texts))
    eos = stop_ids(tokenizer, opts.tokenizer_dir)  # as run and acceptance: every method stops on the same ids
    hf = load_hf_baseline(hf_dir, cfg.torch_dtype).to(opts.device)  # first: fails in seconds, a compile takes minutes
    if opts.compile:
        progress("compiling the runtime's base layers (minutes, before any timing)")
    model = load(ckpt, device=opts.device, compile=opts.compile)
    N = opts.max_new_tokens

    warm, warm_tokens = prompt_ids[0], min(WARMUP_TOKENS, N)  # within the positions check_positions allowed
    hf_generate(hf, warm, warm_tokens, eos)
    runtime_generate(model, warm, warm_tokens, eos, 0, 0, False)
    for w, n in grid:  # each (W, L) once: no configuration's first timed call pays a warm-up another did not
        runtime_generate(model, warm, warm_tokens, eos, w, n, True)

    hf_run, plain = Run(), Run()
    drafted = {wl: Run() for wl in grid}

    def time_hf(ids: list[int]) -> None:
        out, timing = hf_generate(hf, ids, N, eos)
        out = _hf_cut(out, eos)
        hf_run.add(out, timing, len(out), {1: len(out) - 1})  # one token per step, the first at prefill

    def time_runtime(run: Run, w: int, n: int, use_draft: bool) -> Callable[[list[int]], None]:
        def measure(ids: list[int]) -> None:
            result, timing = runtime_generate(model, ids, N, eos, w, n, use_draft)
            run.add(result.output_ids[0], timing, result.steps[0], result.histogram())
        return measure

    methods = [time_hf, time_runtime(plain, 0, 0, False),
               *(time_runtime(run, w, n, True) for (w, n), run in drafted.items())]
    for i, ids in enumerate(prompt_ids):
        for measure in rotated(methods, i):
            measure(ids)
        progress(f"prompt {i + 1}/{len(prompt_ids)}{file_number(indices, i, len(file_texts))}: {len(ids)} prompt "
                 f"tokens, {len(plain.outputs[-1])} new tokens")

    configs = []
    for (w, n), run in drafted.items():
        mismatched = [k + 1 for k, a, b in zip(indices, run.outputs, plain.outputs) if a != b]  # the file's numbers
        if mismatched:
            log.warning("W=%d L=%d: drafted output differs from plain decoding on %s %s", w, n,
                        counted(len(mismatched), "prompt"), mismatched)
        configs.append(ConfigResult(w, n, run, run.speedup(hf_run).ratio, run.speedup(plain).ratio, mismatched))
    meta = {**paths_meta(opts), "hf_dir": absolute(hf_dir), "num_prompts_asked": opts.num_prompts,
            **prompts_meta(indices, len(file_texts)),
            "max_new_tokens": N,
            "chat": uses_chat(tokenizer, opts.chat),
            "dtype": cfg.dtype, "device": opts.device, "compile": opts.compile,
            "torch_threads": torch.get_num_threads(),
            "checkpoint_num_beams": cfg.num_beams, "checkpoint_draft_len": cfg.draft_len, **model_meta(ckpt),
            "drafter": recorded_source(ckpt_config, "drafter"),
            "torch": torch.__version__, "transformers": transformers.__version__}
    return BenchReport(meta, hf_run, plain, configs)
