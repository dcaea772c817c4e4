"""`bench`'s report: the table of baselines and configurations (and a line after it when other processes competed for
the cores during timing), the warning when drafted output differs from plain decoding, the `best:` line, the verdict
on whether drafting pays (outside this run's spread over prompts: bench_stats), and the plot (matplotlib, an optional
dependency).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .bench import BenchReport, mismatch_reason
from .errors import ConfigError, DependencyError
from .output import atomic_file
from .plural import counted


def histogram_text(histogram: dict[int, int]) -> str:
    return " ".join(f"{k}:{v}" for k, v in sorted(histogram.items()))


# The share of the timed calls' runnable thread time spent waiting for a core above which the machine was busy. Measured
# on 2 cores, SmolLM2-135M, transformers' generate at 2 threads (docs/measurements.md): 1% alone; 6-9% while other jobs
# ran part of the time, already 11-17% slower; 38-40% beside one Python busy loop, 3x slower (OpenMP's threads wait at
# every barrier for the one without a core).
BUSY_WAIT_SHARE = 0.05


def busy_warning(report: BenchReport) -> str | None:
    """One line when some method's threads waited for a core more than BUSY_WAIT_SHARE of their runnable time (None:
    none did, or the scheduler's figures could not be read)."""
    shares = [(run.cpu_wait_share, name) for name, run in report.methods if run.cpu_wait_share is not None]
    if not shares or max(shares)[0] <= BUSY_WAIT_SHARE:
        return None
    share, name = max(shares)
    return (f"warning: the machine was busy during timing: this process's threads waited for a core {share:.0%} of "
            f"the time they were ready to run ({name}; a quiet machine: under {BUSY_WAIT_SHARE:.0%}), so tokens/s, "
            f"speed-ups and the verdict are unreliable (tokens/step and histograms are not affected): rerun on a "
            f"quiet machine")


def format_table(report: BenchReport) -> str:
    """One row per baseline and configuration, the best configuration starred; then busy_warning's line, if any."""
    head = f"{'method':<14} {'tokens/step':>11} {'tokens/s':>9} {'vs HF':>6} {'vs plain':>8} {'exact':>5}  histogram"
    rows = [head, "-" * len(head)]
    base = report.hf.tokens_per_second
    rows.append(f"{'transformers':<14} {1.0:>11.2f} {base:>9.2f} {1.0:>6.2f} "
                f"{report.hf.speedup(report.no_draft).ratio:>8.2f} {'-':>5}  -")
    nd = report.no_draft
    rows.append(f"{'no draft':<14} {nd.mean_tokens_per_step:>11.2f} {nd.tokens_per_second:>9.2f} "
                f"{nd.speedup(report.hf).ratio:>6.2f} {1.0:>8.2f} {'-':>5}  -")
    best = report.best
    for c in report.configs:
        name = f"W={c.num_beams} L={c.draft_len}" + ("*" if c is best else "")
        rows.append(f"{name:<14} {c.run.mean_tokens_per_step:>11.2f} {c.run.tokens_per_second:>9.2f} "
                    f"{c.speedup_vs_hf:>6.2f} {c.speedup_vs_no_draft:>8.2f} "
                    f"{'yes' if not c.mismatched_prompts else 'NO':>5}  {histogram_text(c.run.histogram)}")
    if busy := busy_warning(report):
        rows.append(busy)
    return "\n".join(rows)


def result_lines(report: BenchReport) -> list[str]:
    """What bench prints after its header, scripts/bench_runtime.py too: the table (and busy_warning's line), the
    warning when drafted output differs from plain decoding, the `best:` line and the verdict."""
    warning = mismatch_warning(report)
    return [format_table(report), *([warning] if warning else []), best_line(report), verdict(report)]


def best_line(report: BenchReport) -> str:
    """bench's `best:` line: the fastest configuration whose output matches plain decoding, or that none does."""
    best = report.best
    if best is None:
        return "best: none (no configuration's output matches plain decoding on every prompt)"
    return (f"best: W={best.num_beams} L={best.draft_len}: {best.run.mean_tokens_per_step:.2f} tokens/step, "
            f"{speedups_text(report, best)}")


def speedups_text(report: BenchReport, config, noun: str = "prompt") -> str:
    """A configuration's speed-ups with their intervals, as the `best:` line and the quickstart's headline print them:
    `1.50x over transformers (interval ...), 1.13x over no drafting (interval ...)` (`noun`: the quickstart's
    `question`)."""
    return (f"{speedup_text(report.vs_hf(config), 'over transformers', noun)}, "
            f"{speedup_text(report.vs_no_draft(config), 'over no drafting', noun)}")


def speedup_text(margin, against: str, noun: str = "prompt") -> str:
    """`1.13x over no drafting (95% interval 1.00-1.27x over 3 prompts)` (bench_stats.RatioInterval)."""
    return f"{margin.ratio:.2f}x {against} ({margin.interval_text(noun)})"


ACCEPTS_NOTHING = 1.05  # tokens per step below which no configuration can beat plain decoding (a step costs >= 1x)


@dataclass(frozen=True)
class MoreAdvice:
    """How the verdict names a prompt and what it advises when its interval straddles 1: bench's, or the quickstart's
    (its prompts are questions, and the `bench` line it prints measures more of them)."""
    noun: str = "prompt"
    measure_more: str = "measure more prompts (--num-prompts)"


def verdict(report: BenchReport, advice: MoreAdvice = MoreAdvice()) -> str:
    """Whether drafting pays on this machine, and why: the best configuration's step against a plain one's, and its
    speed-up's interval (bench_stats): it pays only where the interval lies above 1, does not where below, and is too
    close to call otherwise (`advice`: what measures more prompts; on a busy machine, busy_warning, a quiet machine
    instead); marked unreliable when the machine was busy during timing."""
    busy = busy_warning(report) is not None
    line = timed_verdict(report, advice, busy)
    return f"{line} (unreliable: the machine was busy during timing: rerun on a quiet machine)" if busy else line


def timed_verdict(report: BenchReport, advice: MoreAdvice, busy: bool) -> str:
    best, plain = report.best, report.no_draft
    if best is None:
        return (f"no verdict: no configuration's output matches plain decoding on every prompt, so each speed-up here "
                f"compares other text than the baselines' ({mismatch_reason(report.meta)})")
    return best_verdict(report, best, plain, advice, busy) + excluded_note(report)


def excluded_note(report: BenchReport) -> str:
    """The configurations left out of the verdict, named ("" where none is)."""
    if not report.excluded:
        return ""
    names = ", ".join(f"W={c.num_beams} L={c.draft_len}" for c in report.excluded)
    return f"; left out: {names} (output differs from plain decoding)"


def best_verdict(report: BenchReport, best, plain, advice: MoreAdvice, busy: bool) -> str:
    cost = (best.run.wall_seconds / best.run.steps) / (plain.wall_seconds / plain.steps)
    step = (f"a W={best.num_beams} L={best.draft_len} step costs {cost:.2f}x a plain one and makes "
            f"{best.run.mean_tokens_per_step:.2f} tokens")
    if not any(sum(c.run.histogram.values()) for c in report.configs):
        return ("no drafted step ran: every answer ended with the prefill's token, so these figures say nothing of the "
                "drafter; give a larger --max-new-tokens")
    if max(c.run.mean_tokens_per_step for c in report.configs) < ACCEPTS_NOTHING:
        return (f"the drafter accepts almost nothing ({step}): drafting cannot pay, and any speed-up measured is "
                f"noise; train it on the base's own answers (`redrafter-trt train --distill`) or longer")
    margin = report.vs_no_draft(best)
    against = f"{margin.ratio:.2f}x the runtime without drafting, {margin.interval_text(advice.noun)}"
    if margin.low is not None and margin.low > 1:
        return f"drafting pays here: {step} ({against})"
    if margin.high is not None and margin.high < 1:
        return (f"drafting does not pay here: {step} ({against}); it pays where a tree costs little more than one "
                f"token (a GPU engine) or with a drafter that accepts more")
    line = f"too close to call: {step} ({against})"
    if busy:  # more prompts do not quiet the machine: verdict's note says to rerun on a quiet one
        return line
    if margin.low is None and margin.prompts < 2:
        return f"{line}: one {advice.noun} gives no noise estimate: {advice.measure_more}"
    if margin.low is None:
        return f"{line}: the same speed-up on every {advice.noun} gives no noise estimate: {advice.measure_more}"
    return f"{line}: within this run's spread over {advice.noun}s: {advice.measure_more}"


def mismatch_warning(report: BenchReport) -> str | None:
    """The configurations whose drafted output differs from plain decoding, and why (None: none differs); printed
    on stdout before the `best:` line and the verdict."""
    bad = report.excluded
    if not bad:
        return None
    return (f"warning: drafted output differs from plain decoding in {counted(len(bad), 'configuration')}, left out "
            f"of `best` and the verdict ({mismatch_reason(report.meta)})")


def weights_text(meta: dict) -> str:
    """What bench and acceptance computed in, for their headers and bench's plot title: "bfloat16", or "FP8 weights
    dequantised to bfloat16" (the runtime dequantises an FP8 checkpoint on load: its tokens/s are not an FP8
    engine's)."""
    quant = meta.get("quant_algo")
    return f"{quant} weights dequantised to {meta['dtype']}" if quant else meta["dtype"]


def prompts_text(meta: dict) -> str:
    """How many prompts bench and acceptance measured, for their headers and bench's plot title: "80 prompts", or
    "20 of 80 prompts, spread over the file" where --num-prompts took some (bench_inputs.pick_prompts)."""
    n, in_file = meta["num_prompts"], meta.get("prompts_in_file", meta["num_prompts"])
    return counted(n, "prompt") if n == in_file else f"{n} of {counted(in_file, 'prompt')}, spread over the file"


def baseline_note(report: BenchReport) -> str:
    """Why transformers' greedy output may differ from the runtime's without drafting, for the header's `agree on`
    ("" where every prompt agrees, and in float32, where a conversion makes them agree)."""
    if report.hf_matches_no_draft == report.meta["num_prompts"]:
        return ""
    if report.meta.get("quant_algo") == "FP8":
        return (" (transformers runs the unquantised base: FP8 weights change a token now and then, and the answer "
                "goes on from there; scripts/fp8_agreement.py measures how often)")
    dtype = report.meta["dtype"]
    return "" if dtype == "float32" else f" ({dtype} logits tie often, and transformers rounds them its own way)"


def require_matplotlib(flag: str = "--plot"):
    """matplotlib's pyplot (Agg), or one line naming `flag` (how the plot was asked for: `as_given`)."""
    try:
        import matplotlib
    except ImportError:
        raise DependencyError(f"{flag} needs matplotlib: run `pip install 'redrafter-trt[plot]'` "
                              f"(or `pip install matplotlib`), or leave out {flag}") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


PLOT_FORMATS = ("png", "pdf", "svg")  # what matplotlib writes without LaTeX or Pillow's optional codecs


def plot_format(path: Path | str, flag: str = "--plot") -> str:
    """The format `plot` writes to `path`: its suffix's, png without one; a ConfigError naming `flag` (`as_given`)
    for any other suffix (a bench.pdf held PNG bytes, and a --plot naming a .json file got a PNG)."""
    suffix = Path(path).suffix.lower().removeprefix(".")
    if suffix and suffix not in PLOT_FORMATS:
        raise ConfigError(f"{flag} {path}: cannot write a .{suffix} plot: name it .png, .pdf or .svg")
    return suffix or "png"


# The PNG text chunk holding the producer block (PIL: Image.open(path).text[PLOT_PRODUCER_KEY]).
PLOT_PRODUCER_KEY = "redrafter-trt producer"


def plot_metadata(fmt: str, producer: dict | None) -> dict | None:
    """savefig's metadata carrying the producer block as JSON, where each format keeps free text: a PNG text chunk
    (PLOT_PRODUCER_KEY), a PDF's Subject, an SVG's Description (matplotlib refuses other SVG keys, and warns on other
    PDF ones). None without a block."""
    if producer is None:
        return None
    import json

    key = {"png": PLOT_PRODUCER_KEY, "pdf": "Subject", "svg": "Description"}[fmt]
    return {key: json.dumps(producer)}


def plot(report: BenchReport, path: Path | str, producer: dict | None = None) -> Path:
    """Tokens per step and speed-up over transformers against beam width, one line per draft length; PNG, PDF or SVG
    by the path's suffix (`plot_format`), carrying `producer` (the JSON's block: which version, command, options and
    inputs made it) as its metadata (`plot_metadata`)."""
    plt = require_matplotlib()
    fig, (ax_tps, ax_speed) = plt.subplots(1, 2, figsize=(11, 4.2))
    for n in sorted({c.draft_len for c in report.configs}):
        rows = sorted((c for c in report.configs if c.draft_len == n), key=lambda c: c.num_beams)
        xs = [c.num_beams for c in rows]
        ax_tps.plot(xs, [c.run.mean_tokens_per_step for c in rows], marker="o", label=f"draft length {n}")
        ax_speed.plot(xs, [c.speedup_vs_hf for c in rows], marker="o", label=f"draft length {n}")
    ax_speed.axhline(1.0, color="gray", linestyle="--", label="transformers generate")
    ax_speed.axhline(report.no_draft.speedup(report.hf).ratio, color="gray", linestyle=":",
                     label="runtime, no drafting")
    m = report.meta
    beams = sorted({c.num_beams for c in report.configs})
    for ax, title in ((ax_tps, "mean tokens per step"), (ax_speed, "speed-up over transformers generate")):
        ax.set_xlabel("beam width")
        ax.set_xticks(beams)
        ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"{Path(m['hf_dir']).name}, {prompts_text(m)} x {m['max_new_tokens']} tokens, "
                 f"{weights_text(m)}, "
                 f"{m['device']}, {counted(m['torch_threads'], 'thread')}", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    try:
        with atomic_file(path) as tmp:
            fmt = plot_format(path)
            fig.savefig(tmp, dpi=110, format=fmt, metadata=plot_metadata(fmt, producer))
    finally:
        plt.close(fig)
    return path
