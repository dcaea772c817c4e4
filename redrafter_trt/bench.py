"""Acceptance and speed-up benchmark: the same prompts, greedy, batch 1, through transformers' `generate`, the
reference runtime without drafting, and the runtime with drafting at each (beam width W, draft length L).

Per configuration: mean tokens per step (the runtime's count: new tokens / decoding steps, the prefill being one
step), the histogram of tokens emitted per step after the prefill, tokens per second (new tokens / wall seconds, both
summed over prompts) and the speed-up over both baselines (the ratio of tokens per second). Prompts run one at a
time, every method on a prompt before the next prompt, so that a change in machine load hits all methods alike.

Greedy drafting must reproduce plain decoding token for token: every configuration reports the prompts where it
did not (in float32 that is a bug; in float16/bfloat16 logits tie often, and a tie can flip a token).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import transformers

from .errors import ConfigError, DependencyError, RedrafterError, first_line
from .output import atomic_file
from .plural import counted
from .runtime.config import RuntimeConfig
from .tokens import encode_prompts, load_tokenizer, stop_ids, uses_chat

log = logging.getLogger(__name__)

WARMUP_TOKENS = 8


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


@dataclass
class Run:
    """One method over all prompts, batch 1 each: outputs (prompt excluded), summed wall time and steps."""
    outputs: list[list[int]] = field(default_factory=list)
    wall_seconds: float = 0.0
    steps: int = 0
    histogram: dict[int, int] = field(default_factory=dict)
    prompt_steps: list[int] = field(default_factory=list)  # decoding steps of each prompt

    @property
    def new_tokens(self) -> int:
        return sum(len(o) for o in self.outputs)

    @property
    def tokens_per_second(self) -> float:
        return self.new_tokens / self.wall_seconds if self.wall_seconds else 0.0

    @property
    def mean_tokens_per_step(self) -> float:
        return self.new_tokens / self.steps if self.steps else 0.0

    def add(self, output: list[int], seconds: float, steps: int, histogram: dict[int, int]) -> None:
        self.outputs.append(list(output))
        self.wall_seconds += seconds
        self.steps += steps
        self.prompt_steps.append(steps)
        for k, n in histogram.items():
            self.histogram[k] = self.histogram.get(k, 0) + n

    def to_json(self) -> dict:
        return {"new_tokens": self.new_tokens, "wall_seconds": self.wall_seconds, "steps": self.steps,
                "tokens_per_second": self.tokens_per_second, "mean_tokens_per_step": self.mean_tokens_per_step,
                "histogram": {str(k): v for k, v in sorted(self.histogram.items())}}


@dataclass
class ConfigResult:
    num_beams: int
    draft_len: int
    run: Run
    speedup_vs_hf: float
    speedup_vs_no_draft: float
    mismatched_prompts: list[int]  # the prompts whose drafted output differs from the no-draft output, numbered
    # from 1 in the prompts file's order, as the progress lines number them (`prompt 3/80`)

    def to_json(self) -> dict:
        return {"num_beams": self.num_beams, "draft_len": self.draft_len,
                "mean_tokens_per_step": self.run.mean_tokens_per_step,
                "tokens_per_second": self.run.tokens_per_second,
                "speedup_vs_hf": self.speedup_vs_hf, "speedup_vs_no_draft": self.speedup_vs_no_draft,
                "histogram": {str(k): v for k, v in sorted(self.run.histogram.items())},
                "new_tokens": self.run.new_tokens, "wall_seconds": self.run.wall_seconds, "steps": self.run.steps,
                "matches_no_draft": not self.mismatched_prompts, "mismatched_prompts": self.mismatched_prompts}


@dataclass
class BenchReport:
    meta: dict
    hf: Run
    no_draft: Run
    configs: list[ConfigResult]

    @property
    def best(self) -> ConfigResult:
        return max(self.configs, key=lambda c: c.speedup_vs_hf)

    @property
    def hf_matches_no_draft(self) -> int:
        """Prompts where transformers and the runtime (no drafting) produced the same tokens: a conversion check."""
        return sum(a == b for a, b in zip(self.hf.outputs, self.no_draft.outputs))

    def to_json(self) -> dict:
        return {"meta": self.meta,
                "baselines": {"hf": self.hf.to_json(), "no_draft": self.no_draft.to_json(),
                              "hf_matches_no_draft": self.hf_matches_no_draft},
                "configs": [c.to_json() for c in self.configs],
                "best": self.best.to_json(),
                "all_match_no_draft": all(not c.mismatched_prompts for c in self.configs)}


# ---- inputs --------------------------------------------------------------------------------------------------------

def default_grid(maximum: int) -> tuple[int, ...]:
    """1, 2, 4, ... below `maximum`, then `maximum`."""
    out, v = [], 1
    while v < maximum:
        out.append(v)
        v *= 2
    return tuple(out + [maximum])


def check_grid(values: tuple[int, ...], maximum: int, flag: str, key: str,
               fix: Callable[[int], str]) -> tuple[int, ...]:
    """The values, sorted (none: default_grid); refused outside 1..maximum, `fix` saying how to get the largest
    (`reconvert with --num-beams 8`, RuntimeConfig.draft_len_fix)."""
    values = tuple(sorted(set(values))) or default_grid(maximum)
    bad = [v for v in values if not 1 <= v <= maximum]
    if bad:
        larger = f", or {fix(max(values))}" if max(values) > maximum else ""
        raise ConfigError(f"{flag} {bad[0]} is outside 1..{maximum} (the checkpoint's {key}): pass values up to "
                          f"{maximum}{larger}")
    return values


def reconvert_beams(wanted: int) -> str:
    return f"reconvert with --num-beams {wanted}"


def first_prompts(texts: list[str], num_prompts: int | None) -> list[str]:
    """The first --num-prompts prompts (all of them without it); a file holding fewer is said, not hidden."""
    if num_prompts and num_prompts > len(texts):
        log.warning("--num-prompts %d, but there are only %d prompts: measuring those %d", num_prompts, len(texts),
                    len(texts))
    return texts[:num_prompts] if num_prompts else texts


def recorded_source(ckpt_config: dict, key: str) -> str | None:
    """The `base` or `drafter` folder `convert` recorded in producer.sources; None when absent or hand-edited into
    something else."""
    producer = ckpt_config.get("producer")
    sources = producer.get("sources") if isinstance(producer, dict) else None
    value = sources.get(key) if isinstance(sources, dict) else None
    return value if isinstance(value, str) and value else None


def resolve_hf_dir(hf_dir: Path | None, ckpt_config: dict, checkpoint_dir: Path) -> Path:
    """The Hugging Face base for the transformers baseline: --hf-dir, else the checkpoint's recorded base."""
    from .config import read_json

    if hf_dir is None:
        recorded = recorded_source(ckpt_config, "base")
        if not recorded:
            raise ConfigError(f"{checkpoint_dir} records no base model (producer.sources.base): pass --hf-dir with "
                              f"the Hugging Face folder of its base")
        hf_dir, origin = Path(recorded), f"recorded in {checkpoint_dir}/config.json"
    else:
        hf_dir, origin = Path(hf_dir), "--hf-dir"
    raw = hf_dir / "config.json"
    if not raw.is_file():
        raise ConfigError(f"base folder {hf_dir} ({origin}) has no config.json: pass --hf-dir with the Hugging Face "
                          f"folder of the checkpoint's base")
    hf = read_json(raw, f"base ({origin})")
    if "architectures" not in hf:
        raise ConfigError(f"base folder {hf_dir} ({origin}) is not a Hugging Face model (a TensorRT-LLM checkpoint?): "
                          f"pass --hf-dir with the Hugging Face folder of the checkpoint's base")
    b = check_hf_folder(hf_dir, hf)
    check_same_base(b, ckpt_config, hf_dir, origin, checkpoint_dir)
    return hf_dir


# (the checkpoint's field, the Hugging Face config's value, the checkpoint's value when the field is absent)
SHAPE_FIELDS = (("num_hidden_layers", lambda b: b.num_layers, None),
                ("hidden_size", lambda b: b.hidden_size, None),
                ("intermediate_size", lambda b: b.intermediate_size, None),
                ("num_attention_heads", lambda b: b.num_heads, None),
                ("num_key_value_heads", lambda b: b.num_kv_heads, lambda c: c["num_attention_heads"]),
                ("head_size", lambda b: b.head_size, lambda c: c["hidden_size"] // c["num_attention_heads"]),
                ("vocab_size", lambda b: b.vocab_size, None))


def check_same_base(b, ckpt_config: dict, hf_dir: Path, origin: str, checkpoint_dir: Path) -> None:
    """The transformers baseline is the checkpoint's base in shape: another model (a larger one of the family, with
    the same tokenizer) was timed as 'transformers' without a word but 'agree on 0/N prompts', and every
    speedup_vs_hf, `best` among them, was measured against it."""
    for key, hf_value, absent in SHAPE_FIELDS:
        ours = ckpt_config.get(key)
        if ours is None and absent is not None:
            ours = absent(ckpt_config)
        if ours != hf_value(b):
            raise ConfigError(f"base folder {hf_dir} ({origin}) is not the checkpoint's base: its {key} is "
                              f"{hf_value(b)}, {checkpoint_dir}'s {ours}: pass --hf-dir with the Hugging Face folder "
                              f"the checkpoint was converted from")


def check_hf_folder(hf_dir: Path, hf: dict):
    """The base's config (a BaseModelConfig), its tensors named and shaped as its config.json says (headers only, as
    convert checks them): weights that disagree were transformers' RuntimeError traceback ('ignore_mismatched_sizes')
    when the baseline loaded."""
    from .base_plan import check_hf_tensors
    from .config import BaseModelConfig
    from .io import TensorSource

    b = BaseModelConfig.from_hf(hf, str(hf_dir / "config.json"))
    try:
        src = TensorSource.from_hf_folder(hf_dir)
    except RedrafterError:  # no weights, or a truncated file: load_hf_baseline names it as transformers sees it
        return b
    try:
        check_hf_tensors(src, b, hf_dir)
    finally:
        src.close()
    return b


# ---- the three methods ---------------------------------------------------------------------------------------------

def load_hf_baseline(hf_dir: Path, dtype: torch.dtype):
    """The transformers model of the base (on the CPU, in eval mode), or one line naming why it cannot load. Its
    folder's generation_config.json is dropped: `generate` fills every field hf_generate leaves unset from it (Qwen2.5
    Instruct's repetition_penalty 1.05 would apply to the greedy baseline, which the runtime never does)."""
    from safetensors import SafetensorError
    from transformers import GenerationConfig

    from .hf_model import load_causal_lm

    try:
        model = load_causal_lm(hf_dir, dtype).eval()
    except (OSError, ValueError, SafetensorError) as e:
        raise ConfigError(f"cannot load the transformers baseline from {hf_dir} ({first_line(e, type(e).__name__)}): "
                          f"pass --hf-dir with the complete Hugging Face folder of the checkpoint's base") from None
    model.generation_config = GenerationConfig()
    return model


@torch.inference_mode()
def hf_generate(model, ids: list[int], max_new_tokens: int, eos: list[int]) -> tuple[list[int], float]:
    """transformers' greedy `generate` on one prompt: (new ids, wall seconds)."""
    from transformers import GenerationConfig

    device = next(model.parameters()).device
    gen = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eos or None,
                           pad_token_id=eos[0] if eos else 0)
    x = torch.tensor([ids], device=device)
    start = time.perf_counter()
    out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), generation_config=gen)
    seconds = time.perf_counter() - start
    return out[0, len(ids):].tolist(), seconds


def runtime_generate(model, ids: list[int], max_new_tokens: int, eos: list[int], num_beams: int, draft_len: int,
                     use_draft: bool):
    """The reference runtime on one prompt: (GenerationResult, wall seconds)."""
    from .runtime import generate

    start = time.perf_counter()
    result = generate(model, [ids], max_new_tokens, num_beams=num_beams, draft_len=draft_len, temperature=0.0,
                      eos_token_id=eos, use_draft=use_draft)
    return result, time.perf_counter() - start


def _hf_cut(output: list[int], eos: list[int]) -> list[int]:
    """generate pads finished rows; a batch of one stops at EOS, but cut after the first EOS to be sure."""
    for i, t in enumerate(output):
        if t in eos:
            return output[: i + 1]
    return output


# ---- orchestration ------------------------------------------------------------------------------------------------

def check_inputs(opts: BenchOptions) -> tuple[RuntimeConfig, dict, Path]:
    """Everything that can be checked before loading a model: (runtime config, raw config, HF base folder)."""
    from .runtime import check_compile, check_device

    cfg, raw = check_checkpoint(opts)
    check_compile(cfg, opts.compile, opts.device)
    check_device(opts.device)  # before the transformers baseline moves there (torch's traceback otherwise)
    return cfg, raw, resolve_hf_dir(opts.hf_dir, raw, Path(opts.checkpoint_dir))


def check_checkpoint(opts) -> tuple[RuntimeConfig, dict]:
    """The checks `bench` and `acceptance` share: limits, a tp-1 checkpoint with a drafter, the tokenizer folder."""
    if opts.max_new_tokens < 1:
        raise ConfigError(f"--max-new-tokens {opts.max_new_tokens} is invalid: use 1 or more")
    if opts.num_prompts is not None and opts.num_prompts < 1:
        raise ConfigError(f"--num-prompts {opts.num_prompts} is invalid: use 1 or more")
    from .checkpoint import require_valid

    raw = require_valid(opts.checkpoint_dir)  # a Hugging Face folder is named as no checkpoint, not as "no drafter"
    cfg = RuntimeConfig.from_dict(raw, f"{opts.checkpoint_dir}/config.json")
    if not cfg.has_drafter:
        raise ConfigError(f"{opts.checkpoint_dir} has no drafter (no redrafter_* keys): pass a checkpoint "
                          f"converted with --drafter")
    if cfg.tp_size != 1:
        raise ConfigError(f"{opts.checkpoint_dir} is a tp={cfg.tp_size} checkpoint: bench and acceptance run one "
                          f"process; convert with --tp-size 1 for them")
    if not Path(opts.tokenizer_dir).is_dir():
        raise ConfigError(f"tokenizer folder {opts.tokenizer_dir} does not exist: pass --tokenizer-dir with the base's "
                          f"Hugging Face folder")
    return cfg, raw


def run_bench(opts: BenchOptions, prompts: list[str] | None = None,
              progress: Callable[[str], None] = lambda line: None) -> BenchReport:
    """Run the benchmark; `prompts` overrides the prompts file (the quickstart passes its own)."""
    from .prompts import load_prompts
    from .runtime import check_positions, load

    cfg, ckpt_config, hf_dir = check_inputs(opts)
    beams = check_grid(opts.beams, cfg.num_beams, "--beams", "redrafter_num_beams", reconvert_beams)
    lens = check_grid(opts.draft_lens, cfg.draft_len, "--draft-lens", "redrafter_draft_len_per_beam", cfg.draft_len_fix)
    grid = [(w, n) for n in lens for w in beams]
    texts = load_prompts(opts.prompts) if prompts is None else list(prompts)
    if not texts:
        raise ConfigError("no prompts to benchmark: pass a --prompts file with at least one prompt")
    texts = first_prompts(texts, opts.num_prompts)
    tokenizer = load_tokenizer(opts.tokenizer_dir, cfg.vocab_size)
    prompt_ids = encode_prompts(tokenizer, texts, opts.chat)
    check_positions(cfg, prompt_ids, opts.max_new_tokens, "--max-new-tokens")
    eos = stop_ids(tokenizer, opts.tokenizer_dir)  # as run and acceptance: every method stops on the same ids
    hf = load_hf_baseline(hf_dir, cfg.torch_dtype).to(opts.device)  # first: fails in seconds, a compile takes minutes
    if opts.compile:
        progress("compiling the runtime's base layers (minutes, before any timing)")
    model = load(opts.checkpoint_dir, device=opts.device, compile=opts.compile)
    N = opts.max_new_tokens

    warm, warm_tokens = prompt_ids[0], min(WARMUP_TOKENS, N)  # within the positions check_positions allowed
    hf_generate(hf, warm, warm_tokens, eos)
    runtime_generate(model, warm, warm_tokens, eos, 0, 0, False)
    runtime_generate(model, warm, warm_tokens, eos, max(beams), max(lens), True)

    hf_run, plain = Run(), Run()
    drafted = {wl: Run() for wl in grid}
    for i, ids in enumerate(prompt_ids):
        out, seconds = hf_generate(hf, ids, N, eos)
        out = _hf_cut(out, eos)
        hf_run.add(out, seconds, len(out), {1: len(out) - 1})  # one token per step, the first at prefill
        result, seconds = runtime_generate(model, ids, N, eos, 0, 0, False)
        plain.add(result.output_ids[0], seconds, result.steps[0], result.histogram())
        for (w, n), run in drafted.items():
            result, seconds = runtime_generate(model, ids, N, eos, w, n, True)
            run.add(result.output_ids[0], seconds, result.steps[0], result.histogram())
        progress(f"prompt {i + 1}/{len(prompt_ids)}: {len(ids)} prompt tokens, {len(plain.outputs[-1])} new tokens")

    configs = []
    for (w, n), run in drafted.items():
        tps = run.tokens_per_second
        mismatched = [i for i, (a, b) in enumerate(zip(run.outputs, plain.outputs), start=1) if a != b]
        if mismatched:
            log.warning("W=%d L=%d: drafted output differs from plain decoding on %s %s", w, n,
                        counted(len(mismatched), "prompt"), mismatched)
        configs.append(ConfigResult(w, n, run, tps / hf_run.tokens_per_second, tps / plain.tokens_per_second,
                                    mismatched))
    meta = {"checkpoint_dir": str(opts.checkpoint_dir), "hf_dir": str(hf_dir), "tokenizer_dir": str(opts.tokenizer_dir),
            "prompts": str(opts.prompts), "num_prompts": len(prompt_ids), "max_new_tokens": N,
            "chat": uses_chat(tokenizer, opts.chat),
            "dtype": cfg.dtype, "device": opts.device, "compile": opts.compile, "torch_threads": torch.get_num_threads(),
            "checkpoint_num_beams": cfg.num_beams, "checkpoint_draft_len": cfg.draft_len,
            "drafter": recorded_source(ckpt_config, "drafter"),
            "torch": torch.__version__, "transformers": transformers.__version__}
    return BenchReport(meta, hf_run, plain, configs)


# ---- output --------------------------------------------------------------------------------------------------------

def histogram_text(histogram: dict[int, int]) -> str:
    return " ".join(f"{k}:{v}" for k, v in sorted(histogram.items()))


def format_table(report: BenchReport) -> str:
    """One row per baseline and configuration; the best configuration is starred."""
    head = f"{'method':<14} {'tokens/step':>11} {'tokens/s':>9} {'vs HF':>6} {'vs plain':>8} {'exact':>5}  histogram"
    rows = [head, "-" * len(head)]
    base = report.hf.tokens_per_second
    rows.append(f"{'transformers':<14} {1.0:>11.2f} {base:>9.2f} {1.0:>6.2f} "
                f"{base / report.no_draft.tokens_per_second:>8.2f} {'-':>5}  -")
    nd = report.no_draft
    rows.append(f"{'no draft':<14} {nd.mean_tokens_per_step:>11.2f} {nd.tokens_per_second:>9.2f} "
                f"{nd.tokens_per_second / base:>6.2f} {1.0:>8.2f} {'-':>5}  -")
    best = report.best
    for c in report.configs:
        name = f"W={c.num_beams} L={c.draft_len}" + ("*" if c is best else "")
        rows.append(f"{name:<14} {c.run.mean_tokens_per_step:>11.2f} {c.run.tokens_per_second:>9.2f} "
                    f"{c.speedup_vs_hf:>6.2f} {c.speedup_vs_no_draft:>8.2f} "
                    f"{'yes' if not c.mismatched_prompts else 'NO':>5}  {histogram_text(c.run.histogram)}")
    return "\n".join(rows)


ACCEPTS_NOTHING = 1.05  # tokens per step below which no configuration can beat plain decoding (a step costs >= 1x)


def verdict(report: BenchReport) -> str:
    """Whether drafting pays on this machine, and why: the best configuration's step against a plain one's."""
    best, plain = report.best, report.no_draft
    cost = (best.run.wall_seconds / best.run.steps) / (plain.wall_seconds / plain.steps)
    step = (f"a W={best.num_beams} L={best.draft_len} step costs {cost:.2f}x a plain one and makes "
            f"{best.run.mean_tokens_per_step:.2f} tokens")
    if not any(sum(c.run.histogram.values()) for c in report.configs):
        return ("no drafted step ran: every answer ended with the prefill's token, so these figures say nothing of the "
                "drafter; give a larger --max-new-tokens")
    if max(c.run.mean_tokens_per_step for c in report.configs) < ACCEPTS_NOTHING:
        return (f"the drafter accepts almost nothing ({step}): drafting cannot pay, and any speed-up measured is "
                f"noise; train it on the base's own answers (`redrafter-trt train --distill`) or longer")
    if best.speedup_vs_no_draft >= 1:
        return f"drafting pays here: {step} ({best.speedup_vs_no_draft:.2f}x the runtime without drafting)"
    return (f"drafting does not pay here: {step} ({best.speedup_vs_no_draft:.2f}x the runtime without drafting); "
            f"it pays where a tree costs little more than one token (a GPU engine) or with a drafter that accepts more")


def mismatch_warning(report: BenchReport) -> str | None:
    """The configurations whose drafted output differs from plain decoding, and why (None: none differs)."""
    bad = [c for c in report.configs if c.mismatched_prompts]
    if not bad:
        return None
    dtype = report.meta["dtype"]
    why = "a bug" if dtype == "float32" else f"{dtype} logits tie often, and a tree rounds differently from one token"
    return f"warning: drafted output differs from plain decoding in {counted(len(bad), 'configuration')} ({why})"


def require_matplotlib():
    try:
        import matplotlib
    except ImportError:
        raise DependencyError("--plot needs matplotlib: run `pip install 'redrafter-trt[plot]'` "
                              "(or `pip install matplotlib`), or leave out --plot") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


PLOT_FORMATS = ("png", "pdf", "svg")  # what matplotlib writes without LaTeX or Pillow's optional codecs


def plot_format(path: Path | str) -> str:
    """The format `plot` writes to `path`: its suffix's, png without one; a ConfigError for any other suffix (a
    bench.pdf held PNG bytes, and a --plot naming a .json file got a PNG)."""
    suffix = Path(path).suffix.lower().removeprefix(".")
    if suffix and suffix not in PLOT_FORMATS:
        raise ConfigError(f"--plot {path}: cannot write a .{suffix} plot: name it .png, .pdf or .svg")
    return suffix or "png"


def plot(report: BenchReport, path: Path | str) -> Path:
    """Tokens per step and speed-up over transformers against beam width, one line per draft length; PNG, PDF or SVG
    by the path's suffix (`plot_format`)."""
    plt = require_matplotlib()
    fig, (ax_tps, ax_speed) = plt.subplots(1, 2, figsize=(11, 4.2))
    for n in sorted({c.draft_len for c in report.configs}):
        rows = sorted((c for c in report.configs if c.draft_len == n), key=lambda c: c.num_beams)
        xs = [c.num_beams for c in rows]
        ax_tps.plot(xs, [c.run.mean_tokens_per_step for c in rows], marker="o", label=f"draft length {n}")
        ax_speed.plot(xs, [c.speedup_vs_hf for c in rows], marker="o", label=f"draft length {n}")
    ax_speed.axhline(1.0, color="gray", linestyle="--", label="transformers generate")
    ax_speed.axhline(report.no_draft.tokens_per_second / report.hf.tokens_per_second, color="gray", linestyle=":",
                     label="runtime, no drafting")
    m = report.meta
    beams = sorted({c.num_beams for c in report.configs})
    for ax, title in ((ax_tps, "mean tokens per step"), (ax_speed, "speed-up over transformers generate")):
        ax.set_xlabel("beam width")
        ax.set_xticks(beams)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{Path(m['hf_dir']).name}, {m['num_prompts']} prompts x {m['max_new_tokens']} tokens, {m['dtype']}, "
                 f"{m['device']}, {m['torch_threads']} threads", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    try:
        with atomic_file(path) as tmp:
            fig.savefig(tmp, dpi=110, format=plot_format(path))
    finally:
        plt.close(fig)
    return path
