"""`convert` and `init-drafter`. TensorRT-LLM's own spellings (examples/redrafter/convert_checkpoint.py)
are accepted as aliases, so its README's commands work unchanged."""

from __future__ import annotations

from pathlib import Path

import click

from ..plural import counted
from ..presets import as_given, config_option
from .params import Command, SEED

PATH = click.Path(path_type=Path)
# counts of 1 or more: a preset's `convert: {num-beams: 0}` is refused as that field when any command loads the preset
# (convert's own check named --num-beams, a flag nobody typed)
COUNT = click.IntRange(min=1)


def _none_is_off(ctx, param, value):
    """`none` (typed over a preset's `fp8`, which a choice without it could not take back) is the option left out."""
    return None if value == "none" else value


@click.command(short_help="Convert a base and a drafter to TensorRT-LLM.", cls=Command)
@config_option
@click.option("--base", "--base_model_checkpoint_dir", "base", type=PATH, required=True,
              help="Hugging Face folder (Llama, Mistral, Qwen2, Qwen3) or a TensorRT-LLM base checkpoint "
                   "(bf16/fp16/FP8).")
@click.option("--drafter", "--drafter_model_dir", "drafter", type=PATH, required=True,
              help="Apple-layout drafter folder (config.json + model.safetensors, sharded or not, or model.pt).")
@click.option("--output", "--output_dir", "output", type=PATH, required=True, help="Checkpoint folder to write.")
@click.option("--tp-size", "--tp_size", "tp_size", type=COUNT, default=None,
              help="Tensor parallel size [default: 1, or the TensorRT-LLM base checkpoint's own].")
@click.option("--dtype", type=click.Choice(["auto", "float16", "bfloat16", "float32"]), default="auto", show_default=True,
              help="Model dtype; auto keeps the base's (float16 when its config.json names none, as TensorRT-LLM; "
                   "with --quantize fp8 a float32 base becomes float16). The drafter is always written in this dtype.")
@click.option("--num-beams", "--redrafter_num_beams", "num_beams", type=COUNT, default=5, show_default=True,
              help="Beams the drafter searches per step.")
@click.option("--draft-len", "--redrafter_draft_len_per_beam", "draft_len", type=COUNT, default=5, show_default=True,
              help="Drafted tokens per beam, excluding the guaranteed token.")
@click.option("--no-greedy/--greedy", "--redrafter_no_greedy_search", "no_greedy", default=False,
              help="Build for sampling (temperature > 0) instead of greedy acceptance (--greedy: greedy, over a "
                   "preset's `no-greedy: true`).")
@click.option("--quantize", type=click.Choice(["none", "fp8"]), default=None, callback=_none_is_off,
              help="Quantise the base with nvidia-modelopt (none: keep it as it is, over a preset's `quantize: fp8`).")
@click.option("--kv-cache-dtype", type=click.Choice(["none", "fp8"]), default=None, callback=_none_is_off,
              help="FP8 KV cache (with --quantize fp8; none: the checkpoint's dtype, over a preset's).")
@click.option("--calib-data", type=PATH, default=None, help="Calibration prompts (jsonl/json) [default: shipped set].")
@click.option("--calib-size", type=COUNT, default=16, show_default=True, help="Calibration prompts used (the first N).")
@click.option("--calib-seq-len", type=COUNT, default=128, show_default=True,
              help="Tokens each calibration prompt is cut to.")
@click.option("--calib-batch-size", type=COUNT, default=4, show_default=True,
              help="Calibration prompts per forward.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
              help="Where FP8 calibration runs.")
@click.option("--force", is_flag=True, help="Replace an existing output folder: an earlier ReDrafter output (a drafter, "
              "checkpoint or engine folder holding only what its tools write), or an empty folder.")
@click.option("--dry-run", is_flag=True,
              help="Check everything, print config.json and each rank file's tensors; write nothing.")
def convert(base, drafter, output, tp_size, dtype, num_beams, draft_len, no_greedy, quantize, kv_cache_dtype,
            calib_data, calib_size, calib_seq_len, calib_batch_size, device, force, dry_run):
    """Convert a base model and an Apple ReDrafter drafter into one TensorRT-LLM checkpoint."""
    from ..checkpoint import inspect_checkpoint
    from ..convert import convert as run_convert, plan_conversion
    from .inspect_cmd import quantization_text

    # FP8 calibration's options go to convert, which refuses them without --quantize, when typed; a preset's and the
    # defaults only with --quantize (a preset's shared `device` is run's too)
    ctx = click.get_current_context()
    fp8 = dict(kv_cache_dtype=kv_cache_dtype, calib_data=str(calib_data) if calib_data else None,
               calib_size=calib_size, calib_seq_len=calib_seq_len, calib_batch_size=calib_batch_size, device=device)
    fp8 = {k: v for k, v in fp8.items()
           if quantize or ctx.get_parameter_source(k) == click.core.ParameterSource.COMMANDLINE}
    if kv_cache_dtype and "kv_cache_dtype" not in fp8:  # a preset's, waiting for --quantize fp8: say it is not used
        click.echo(f"note: the preset's kv-cache-dtype {kv_cache_dtype} applies with --quantize fp8 only: this "
                   "checkpoint's KV cache stays in its dtype", err=True)
    options = dict(force=force, output_named=as_given(ctx, "output"), tp_size=tp_size, dtype=dtype,
                   num_beams=num_beams, draft_len=draft_len,
                   greedy=not no_greedy, quantize=quantize, **fp8)
    if dry_run:
        _print_plan(plan_conversion(base, drafter, output, **options), output)
        return
    out = run_convert(base, drafter, output, **options)
    rep = inspect_checkpoint(out)
    size = sum(r.bytes for r in rep.ranks) / 2**20
    quant = f"{quantization_text(rep.quantization)}, " if (rep.quantization or {}).get("quant_algo") else ""
    click.echo(f"wrote {out}: {rep.architecture}, {rep.dtype}, {quant}tp {rep.tp_size}, "
               f"{counted(len(rep.ranks), 'rank file')}, {size:.1f} MiB")
    for p in rep.problems:
        click.echo(f"problem: {p}", err=True)
    for p in rep.runtime_problems:  # e.g. a gelu base: TensorRT-LLM builds it, `run --checkpoint-dir` cannot
        click.echo(f"note: the reference runtime (run, bench, serve) refuses it: {p}", err=True)
    if rep.problems:
        raise SystemExit(1)


def _print_plan(plan, output: Path) -> None:
    import json

    click.echo(f"{output}/config.json:\n{json.dumps(plan.cfg, indent=2)}")
    for r, tensors in enumerate(plan.ranks):
        size = sum(t.nbytes for t in tensors) / 2**20
        click.echo(f"{output}/rank{r}.safetensors: {len(tensors)} tensors, {size:.1f} MiB")
        for t in tensors:
            click.echo(f"  {t.name}  {list(t.shape)}  {str(t.dtype).removeprefix('torch.')}")
    click.echo("dry run: nothing was written")


@click.command("init-drafter", short_help="Write a freshly initialised drafter.", cls=Command)
@click.option("--base", type=PATH, required=True, help="Hugging Face folder of the base model.")
@click.option("--output", type=PATH, required=True, help="Drafter folder to write (Apple layout).")
@click.option("--num-draft-layers", type=int, default=2, show_default=True, help="ResBlocks before the final projection.")
@click.option("--rnn/--no-rnn", default=True, show_default=True, help="Recurrent state update (Apple's default).")
@click.option("--exit-dim", type=int, default=None, help="Drafter width E [default: 2 x hidden size, no input_proj].")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of the random initialisation.")
@click.option("--force", is_flag=True, help="Replace an existing output folder: an earlier ReDrafter output (a drafter, "
              "checkpoint or engine folder holding only what its tools write), or an empty folder.")
def init_drafter(base, output, num_draft_layers, rnn, exit_dim, seed, force):
    """Write a freshly initialised drafter for the --base model (the start of training, or a pipeline smoke test)."""
    from ..drafter import init_drafter_for_base
    from ..output import check_output_folder

    check_output_folder(output, force, [base])
    cfg = init_drafter_for_base(base, output, num_draft_layers=num_draft_layers, rnn=rnn, exit_dim=exit_dim, seed=seed,
                                force=force)
    click.echo(f"wrote {output}: hidden {cfg.hidden_size}, exit_dim {cfg.exit_dim}, {cfg.num_draft_layers} layers, "
               f"rnn {cfg.rnn}, vocab {cfg.vocab_size}")
