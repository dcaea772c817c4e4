"""`redrafter-trt doctor`: one line per check, OK, WARN and the caveat, or FIX and the fix; exit 0 when the CPU path
works (GPU features that are unavailable are listed, not failed), 2 when something the CPU path needs is missing."""

from __future__ import annotations

import click

from .params import Command


@click.command(short_help="Check the GPUs and libraries the tool needs.", cls=Command)
@click.pass_context
def doctor(ctx):
    """Check Python, torch, CUDA, GPUs, TensorRT-LLM, TensorRT, modelopt, MPI and sentencepiece."""
    from ..doctor import cpu_ready, format_check, run_checks, unavailable

    checks = run_checks()
    for check in checks:
        click.echo(format_check(check))
    missing = unavailable(checks)
    if not cpu_ready(checks):
        click.echo("CPU path (convert, inspect, run on CPU): NOT ready: apply the fixes above", err=True)
        ctx.exit(2)
    click.echo("CPU path (convert, inspect, run on CPU): ready")
    caveats = ", with the caveats marked WARN above" if any(check.ok and check.warning for check in checks) else ""
    click.echo(f"unavailable here: {'; '.join(missing)}" if missing else f"GPU features: all available{caveats}")
