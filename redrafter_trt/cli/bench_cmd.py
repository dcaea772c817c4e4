"""`redrafter-trt bench`: acceptance and speed-up of a converted checkpoint against transformers' `generate` and
against the runtime without drafting, on the same prompts (greedy, batch 1, one process); `redrafter-trt acceptance`:
the same tokens per step predicted from one greedy pass."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import click

from ..errors import ConfigError
from ..plural import counted
from ..presets import as_given, config_option
from .params import CHAT_TEMPLATE_KWARGS, Command, Device, OutputFile, check_output_file, check_output_files, \
    template_kwargs_given


def _ints(value: str) -> tuple[int, ...] | None:
    """`1,2,4` -> (1, 2, 4); None unless every item is an integer >= 1 (drafting off is the `no draft` baseline
    every run measures)."""
    try:
        values = tuple(int(v) for v in value.split(","))
    except ValueError:
        return None
    return values if values and min(values) >= 1 else None


LIST_FIX = "is not a comma-separated list of integers >= 1: write e.g. 1,2,4, or leave it out for the default grid"


def int_list(ctx, param, value: str | None) -> tuple[int, ...]:
    """A callback (the scripts' lists): `1,2,4` -> (1, 2, 4); not given -> () (the command's default grid)."""
    if value is None:
        return ()
    values = _ints(value)
    if values is None:
        raise ConfigError(f"--{param.name.replace('_', '-')} {value!r} {LIST_FIX}")
    return values


class IntList(click.ParamType):
    """bench's and acceptance's grids as a type, so that a preset's `bench: {beams: "0"}` is refused when the preset
    loads (presets check every value but a path), not by bench after convert and build. A preset may also write a
    YAML list (`beams: [1, 2, 4]`), as `yaml_list` tells presets."""

    name = "list"
    yaml_list = True

    def convert(self, value, param, ctx):
        if isinstance(value, (list, tuple)):  # a preset's YAML list, or a grid already converted
            bad = [v for v in value if not isinstance(v, int) or isinstance(v, bool) or v < 1]
            if bad or not value:
                what = f"item {bad[0]!r} is not an integer >= 1" if bad else "the list is empty"
                self.fail(f"{what}: write e.g. [1, 2, 4], or leave it out for the default grid", param, ctx)
            return tuple(value)
        values = _ints(str(value))
        if values is None:
            self.fail(f"{value!r} {LIST_FIX}", param, ctx)
        return values


def _grid(ctx, param, value):
    return value or ()  # not given: the command's default grid


def shared_options(f):
    """The options `bench` and `acceptance` share (same names, same defaults)."""
    options = [
        click.option("--checkpoint-dir", required=True, type=click.Path(file_okay=False, path_type=Path),
                     help="ReDrafter checkpoint (from `convert`); a tp>1 one's ranks are merged into this process."),
        click.option("--tokenizer-dir", required=True, type=click.Path(file_okay=False, path_type=Path),
                     help="Tokenizer folder (the base's Hugging Face folder)."),
        click.option("--prompts", required=True, type=click.Path(dir_okay=False, path_type=Path),
                     help="Prompt file: jsonl (prompt / turns / question / messages / ..., as `train --data` reads "
                          "them), ShareGPT JSON or a .txt with one prompt per line."),
        click.option("--num-prompts", type=click.IntRange(min=1), help="Use K prompts spread evenly over the file, in its order [default: all]."),
        click.option("--max-new-tokens", type=click.IntRange(min=1), default=64, help="New tokens per prompt at most."),
        click.option("--beams", type=IntList(), callback=_grid, metavar="W,W,...",
                     help="Beam widths [default: 1,2,4,... up to the checkpoint's num_beams]."),
        click.option("--draft-lens", type=IntList(), callback=_grid, metavar="L,L,...",
                     help="Draft lengths [default: 1,2,4,... up to the checkpoint's draft_len]."),
        click.option("--chat/--no-chat", default=None, show_default=False,
                     help="Wrap each prompt in the chat template [default: when the tokenizer has one]."),
        CHAT_TEMPLATE_KWARGS,
        click.option("--device", default="cpu", type=Device(), help="Torch device (cpu, cuda, cuda:N)."),
        click.option("--output-json", type=OutputFile(), help="Write the results as JSON."),
    ]
    for option in reversed(options):
        f = option(f)
    return config_option(f)


@click.command(short_help="Measure tokens per step and speed-up.", cls=Command,
               context_settings={"show_default": True})
@shared_options
@click.option("--hf-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Hugging Face base for the transformers baseline [default: the base recorded in the checkpoint].")
@click.option("--plot", "plot_path", type=OutputFile(),
              help="Write a plot (.png, .pdf or .svg): tokens per step and speed-up against beam width (needs "
                   "matplotlib).")
@click.option("--compile/--no-compile", "compile_layers", default=False,
              help="Run the runtime's base layers compiled by TorchInductor (CPU, float32; minutes of compiling "
                   "before the timed runs; --no-compile: eager, over a preset's `compile: true`).")
def bench(checkpoint_dir, tokenizer_dir, prompts, hf_dir, num_prompts, max_new_tokens, beams, draft_lens, chat,
          chat_template_kwargs, device, output_json, plot_path, compile_layers):
    """Measure tokens per step and speed-up for each (beam width, draft length)."""
    from ..bench import BenchOptions, check_inputs, run_bench
    from ..bench_report import (baseline_note, plot, plot_format, prompts_text, require_matplotlib, result_lines,
                                weights_text)

    ctx = click.get_current_context()
    opts = BenchOptions(checkpoint_dir, tokenizer_dir, prompts, hf_dir, num_prompts, max_new_tokens, beams, draft_lens,
                        chat, device, compile_layers, template_kwargs_given(ctx, chat, chat_template_kwargs),
                        grid_flags(ctx))
    ckpt, base = check_inputs(opts)  # the base recorded in the checkpoint is read too
    inputs = [checkpoint_dir, tokenizer_dir, prompts, base]
    plot_flag = as_given(ctx, "plot_path")
    check_output_files({as_given(ctx, "output_json"): output_json, plot_flag: plot_path}, inputs)
    if plot_path:
        plot_format(plot_path, plot_flag)
        require_matplotlib(plot_flag)  # fail before the long run, not after it
    echo_merge_note(ckpt)
    warn_if_sampling(ckpt.config, checkpoint_dir)
    report = run_bench(replace(opts, checkpoint_dir=ckpt), progress=lambda line: click.echo(line, err=True),
                       checked=(ckpt, base))
    m = report.meta
    click.echo(f"{prompts_text(m)}, up to {m['max_new_tokens']} new tokens, greedy, batch 1, "
               f"{weights_text(m)} on {m['device']} ({counted(m['torch_threads'], 'thread')}); transformers and the "
               f"runtime agree on {report.hf_matches_no_draft}/{counted(m['num_prompts'], 'prompt')}"
               f"{baseline_note(report)}")
    for line in result_lines(report):
        click.echo(line)
    made_by = producer("bench", opts, base)
    if output_json:
        from ..output import write_text_atomic
        write_text_atomic(output_json, json.dumps({**report.to_json(), "producer": made_by}, indent=2) + "\n")
        click.echo(f"wrote {output_json}")
    if plot_path:
        click.echo(f"wrote {plot(report, plot_path, made_by)}")


@click.command(short_help="Predict bench's tokens per step in one pass.", cls=Command,
               context_settings={"show_default": True})
@shared_options
def acceptance(checkpoint_dir, tokenizer_dir, prompts, num_prompts, max_new_tokens, beams, draft_lens, chat,
               chat_template_kwargs, device, output_json):
    """Predict bench's tokens per step for each (beam width, draft length) from one greedy pass (minutes).

    Greedy verification accepts a draft exactly when it equals the base's greedy output, so every configuration is
    replayed over that one output; beam widths above the checkpoint's are allowed (pick --num-beams before converting).
    """
    from ..bench_inputs import check_checkpoint
    from ..bench_report import histogram_text, prompts_text, weights_text
    from ..replay import AcceptanceOptions, run_acceptance

    ctx = click.get_current_context()
    check_output_file(output_json, [checkpoint_dir, tokenizer_dir, prompts], as_given(ctx, "output_json"))
    opts = AcceptanceOptions(checkpoint_dir, tokenizer_dir, prompts, num_prompts, max_new_tokens, beams, draft_lens,
                             chat, device, template_kwargs_given(ctx, chat, chat_template_kwargs), grid_flags(ctx))
    ckpt = check_checkpoint(opts)
    echo_merge_note(ckpt)
    warn_if_sampling(ckpt.config, checkpoint_dir)
    report = run_acceptance(replace(opts, checkpoint_dir=ckpt), progress=lambda line: click.echo(line, err=True))
    m = report["meta"]
    click.echo(f"{prompts_text(m)}, up to {m['max_new_tokens']} new tokens, greedy, "
               f"{weights_text(m)} on {m['device']}: tokens per step replayed over one greedy pass (speed: "
               "`redrafter-trt bench`)")
    click.echo(f"{'config':<14} {'tokens/step':>11}  histogram")
    for c in report["configs"]:
        name = f"W={c['num_beams']} L={c['draft_len']}" + ("*" if c == report["best"] else "")
        click.echo(f"{name:<14} {c['mean_tokens_per_step']:>11.3f}  "
                   f"{histogram_text({int(k): v for k, v in c['histogram'].items()})}")
    if output_json:
        from ..output import write_text_atomic
        write_text_atomic(output_json, json.dumps({**report, "producer": producer("acceptance", opts)}, indent=2)
                          + "\n")
        click.echo(f"wrote {output_json}")


def grid_flags(ctx: click.Context) -> tuple[str, str]:
    """How refusals name --beams and --draft-lens (`as_given`: as typed, or as the --config preset's fields)."""
    return as_given(ctx, "beams"), as_given(ctx, "draft_lens")


def producer(command: str, opts, base: Path | None = None) -> dict:
    """The JSON's `producer` block: bench's or acceptance's options, and the files they read; --num-prompts as
    `num_prompts_asked` (null: all), as `meta` records it beside the `num_prompts` measured."""
    from dataclasses import asdict

    from ..producer import producer_block

    left_out = ("checkpoint_dir", "tokenizer_dir", "prompts", "hf_dir", "grid_flags")  # paths: in `sources`
    options = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(opts).items() if k not in left_out}
    options["num_prompts_asked"] = options.pop("num_prompts")
    return producer_block(command, options, {"checkpoint": opts.checkpoint_dir, "tokenizer": opts.tokenizer_dir,
                                             "prompts": opts.prompts, "hf": base})


def echo_merge_note(ckpt) -> None:
    from ..bench_inputs import merge_note

    if note := merge_note(ckpt):
        click.echo(note)


def warn_if_sampling(cfg, checkpoint_dir: Path) -> None:
    """A --no-greedy checkpoint's engine samples: greedy tokens per step are not what it will accept."""
    if not cfg.greedy_search:
        click.echo(f"warning: {checkpoint_dir} was converted with --no-greedy: its engine samples, so these greedy "
                   f"figures are not what it accepts; measure that with `redrafter-trt run --checkpoint-dir "
                   f"{checkpoint_dir} --temperature T --sampling-rule trtllm`", err=True)
