"""`redrafter-trt build`: check a ReDrafter checkpoint, run trtllm-build on it with what ReDrafter needs, check the
engine folder. `--dry-run` prints the command instead (no TensorRT-LLM needed)."""

from __future__ import annotations

import re
from pathlib import Path

import click

from ..plural import counted
from ..presets import as_given, config_option, preset_then_typed
from .params import Command


class TrtllmArg(click.ParamType):
    """One argument for trtllm-build, refused when it undoes what ReDrafter needs: checked as a --config preset's
    `trtllm-args` loads, so `convert --config P` does not convert for hours before `build --config P` refuses them.
    One typed after `--` is build's error; one in a preset says to remove it from there (the preset names the field)."""

    name = "trtllm-build argument"

    def convert(self, value, param, ctx):
        from ..build import VALUELESS, check_extra_args, reserved_flag

        value = str(value)  # a preset's YAML number (`[--multiple_profiles, 1]`): argv items are strings
        typed = ctx is not None and ctx.get_parameter_source(param.name) == click.core.ParameterSource.COMMANDLINE
        found = None if typed else reserved_flag(value)
        if found:
            name, meant, why = found
            lead = f"{name} is {meant}, " if name != meant else ""
            option = re.fullmatch(r"use --([\w-]+)", why)  # one of build's own options: the preset's key for it
            remove = "remove it" if meant in VALUELESS else "remove it and its value"
            what = (f"sets itself; {remove}, and set {option[1]} under build: instead" if option else
                    f"refuses: {why}; {remove}")
            self.fail(f"{lead}a trtllm-build flag that build {what}", param, ctx)
        check_extra_args((value,))
        return value


class SeqLen(click.types.IntParamType):
    """--max-seq-len: an engine that answers nothing (`build.seq_len_problem`) is refused as the value is read, before
    the checkpoint or TensorRT-LLM is looked at, and as a --config preset's `max-seq-len` loads (naming its field)."""

    def convert(self, value, param, ctx):
        from ..build import seq_len_problem

        number = super().convert(value, param, ctx)
        why = seq_len_problem(number)
        if why:
            self.fail(f"{number} {why}", param, ctx)
        return number


@click.command(short_help="Build a TensorRT-LLM engine.", cls=Command, context_settings={"show_default": True})
@config_option
@click.option("--checkpoint-dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="ReDrafter TensorRT-LLM checkpoint (from `convert`).")
@click.option("--output-dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Engine folder to write.")
@click.option("--max-batch-size", type=click.IntRange(min=1), default=8,
              help="Requests per batch. A ReDrafter engine reserves batch x (beams x draft_len + 1) tokens of "
                   "activations and logits: trtllm-build's own default (2048) would reserve 53248 at 5 x 5.")
@click.option("--max-seq-len", type=SeqLen(),
              help="Prompt plus output tokens, 2 or more (trtllm-build adds room for the draft tokens) [default: from "
                   "the model].")
@click.option("--max-num-tokens", type=click.IntRange(min=1),
              help="Tokens per batch after padding removal (raised to batch x (draft tokens + 1) if lower); a prompt "
                   "may have at most this many tokens, and at most --max-seq-len - 1.")
@click.option("--gemm-plugin", type=click.Choice(["auto", "float16", "bfloat16", "fp8"]), default="auto",
              help="auto: the checkpoint dtype, or fp8 for an FP8 base.")
@click.option("--workers", type=click.IntRange(min=1), default=1, help="Ranks built in parallel (one GPU each).")
@click.option("--force", is_flag=True, help="Replace an existing --output-dir: an earlier ReDrafter output (a drafter, "
              "checkpoint or engine folder holding only what its tools write), or an empty folder.")
@click.option("--dry-run", is_flag=True, help="Print the trtllm-build command and exit.")
@click.argument("trtllm_args", nargs=-1, type=TrtllmArg(), callback=preset_then_typed,
                metavar="[-- TRTLLM-BUILD ARGS]")
def build(checkpoint_dir, output_dir, max_batch_size, max_seq_len, max_num_tokens, gemm_plugin, workers, force, dry_run,
          trtllm_args):
    """Build a TensorRT-LLM engine from a ReDrafter checkpoint.

    Arguments after `--` go to trtllm-build unchanged (except the settings ReDrafter fixes), after a preset's
    trtllm-args.
    """
    from ..build import TRTLLM_BUILD, BuildOptions, build_engine, prepare
    from ..installed_trtllm import require_trtllm_tool

    if not dry_run:  # first: the checkpoint's warnings (float32's unfused attention) are of an engine it cannot build
        require_trtllm_tool(TRTLLM_BUILD)
    named = as_given(click.get_current_context(), "output_dir")
    plan = prepare(BuildOptions(checkpoint_dir, output_dir, max_batch_size, max_seq_len, max_num_tokens, gemm_plugin,
                                workers, tuple(trtllm_args), force, named))
    if dry_run:
        click.echo(plan.shell())
        return
    report = build_engine(plan, on_line=click.echo)
    click.echo(f"engine: {report.engine_dir} ({counted(len(report.engines), 'rank')}, "
               f"{report.total_bytes / 2**30:.2f} GiB); "
               f"ReDrafter {report.redrafter.get('redrafter_num_beams')} beams x "
               f"{report.redrafter.get('redrafter_draft_len_per_beam')} draft tokens")
