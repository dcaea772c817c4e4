"""`redrafter-trt quickstart`: SmolLM2-135M-Instruct, a trained drafter, a converted checkpoint, answers to a few
MT-Bench questions with the measured speed-up, and the commands for a GPU machine. Reuses its work folder."""

from __future__ import annotations

import textwrap
from pathlib import Path

import click

from .params import Command


@click.command(short_help="From nothing to a measured speed-up on CPU.", cls=Command,
               context_settings={"show_default": True})
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path),
              help="Keeps drafter/, checkpoint/ and train-cache/ for the next run: new, empty or an earlier quickstart's "
                   "[default: <cache>/quickstart, <cache>: $REDRAFTER_TRT_CACHE, else ~/.cache/redrafter-trt].")
@click.option("--num-questions", type=click.IntRange(1, 80), default=3,
              help="MT-Bench questions to answer (spread over its categories).")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=96, help="New tokens per answer at most.")
@click.option("--force", is_flag=True,
              help="Retrain the drafter and reconvert even when the work folder has them.")
def quickstart(workdir, num_questions, max_new_tokens, force):
    """From nothing to a measured ReDrafter speed-up on this CPU, then the GPU commands."""
    from ..quickstart import QuickstartOptions, default_workdir, quickstart as run
    from .train_cmd import _Bars

    bars = _Bars()  # training's progress, as `train` shows it
    opts = QuickstartOptions(workdir or default_workdir(), num_questions, max_new_tokens, force)
    try:
        res = run(opts, on_stage=lambda line: click.echo(f"== {line}", err=True), on_progress=bars)
    finally:
        bars.close()
    rep, best = res.report, res.report.headline

    click.echo("")
    for i, (q, a) in enumerate(zip(res.questions, res.answers)):
        steps = best.run.prompt_steps[i]
        n = len(best.run.outputs[i])
        click.echo(f"Q{i + 1}: {q}")
        click.echo(textwrap.indent(a, "    "))
        click.echo(f"    [{n} tokens in {steps} steps: {n / steps:.2f} tokens/step]\n")

    from ..bench_report import format_table
    from ..plural import counted

    m = rep.meta
    click.echo(f"Measured here ({counted(m['num_prompts'], 'question')}, up to {m['max_new_tokens']} tokens, greedy, "
               f"batch 1, {m['dtype']}, {counted(m['torch_threads'], 'CPU thread')}):")
    click.echo(format_table(rep))
    click.echo(f"\n{headline(rep)}")
    click.echo(quickstart_verdict(rep))
    stages = ", ".join(f"{k} {v:.0f}s{' (reused)' if res.reused.get(k) else ''}" for k, v in res.seconds.items())
    click.echo(f"time: {stages}")
    made = {k: "reused" if res.reused.get(k) else done for k, done in (("drafter", "trained"),
                                                                        ("checkpoint", "converted"))}
    click.echo(f"work folder: {opts.workdir} (drafter/ {made['drafter']}, checkpoint/ {made['checkpoint']})")
    click.echo("\nOn this CPU: all 80 MT-Bench questions (tokens/step in minutes; then tokens/step and speed, an hour), "
               "and the checkpoint over HTTP:")
    for line in res.cpu_commands:
        click.echo(f"  {line}")
    from ..installed_trtllm import INSTALL_HINT

    click.echo(f"\nOn a machine with an NVIDIA GPU and TensorRT-LLM, installed with: {INSTALL_HINT}:")
    for line in res.gpu_commands:
        click.echo(f"  {line}")


def headline(report) -> str:
    """The line users read: the configuration whose answers were shown (`report.headline`), its tokens/step and
    tokens/s, and its speed-ups with their intervals as bench's `best:` line prints them (bench_report.speedups_text,
    in questions); marked unreliable when the machine was busy during timing."""
    from ..bench_report import busy_warning, speedups_text
    from ..plural import counted

    best = report.headline
    exact = "yes" if not best.mismatched_prompts else "NO (a bug: please report it)"
    busy = "; speeds unreliable: the machine was busy during timing" if busy_warning(report) else ""
    return (f"ReDrafter, {counted(best.num_beams, 'beam')} x {counted(best.draft_len, 'draft token')}: "
            f"{best.run.mean_tokens_per_step:.2f} tokens/step, {best.run.tokens_per_second:.1f} tokens/s "
            f"(transformers generate {report.hf.tokens_per_second:.1f} tokens/s): "
            f"{speedups_text(report, best, 'question')}; same text as without drafting: {exact}{busy}")


def quickstart_verdict(report) -> str:
    """bench's verdict in the quickstart's words: its prompts are questions, and where it is too close to call the
    `bench` line printed below it measures all 80 (the quickstart again with more is slower for the same; bench's
    --num-prompts N takes N spread over the file, as --num-questions does, every category among them)."""
    from ..bench_report import MoreAdvice, verdict

    return verdict(report, MoreAdvice("question", "for a verdict, run the `redrafter-trt bench` line below (all 80 "
                                                  "questions, every category)"))
