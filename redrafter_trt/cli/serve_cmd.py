"""`redrafter-trt serve`: an OpenAI-style HTTP server. `--checkpoint-dir` serves a checkpoint with the reference
runtime (`redrafter_trt.serve_app` over `serve_http`); `--engine-dir` starts TensorRT-LLM's own `trtllm-serve` on a
built engine, on every GPU its ranks need (`redrafter_trt.serve_engine`). Same routes and request fields both ways."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click

from ..errors import ConfigError, json_loads
from ..launchers import llmapi_error, llmapi_ranks
from ..plural import agreeing
from ..presets import config_option, one_of
from ..serve_reasoning import REASONING_PARSERS
from ..serve_tools import (CALLS_AS_TEXT, REFUSED_PER_REQUEST, TOOL_PARSERS, tool_format_warning,
                           tool_template_warning)
from .params import Command, Seconds, chat_template_kwargs_option, options_given


# the parameters of the reference server alone (trtllm-serve takes them from the engine or has no such thing)
REFERENCE_ONLY = ("model_name", "max_output_len", "max_batch_size", "device", "compile_layers", "shutdown_grace")


def _refuse_preset_reference_options(ctx: click.Context, plan) -> None:
    """A --config preset's reference-server values (`serve: {max-output-len: 128}`, `compile: true`) were dropped in
    silence with --engine-dir (answers ran past the preset's cap, clients asking for the preset's model name got
    404s). Refused as a typed flag is, naming the preset. A max-batch-size equal to the engine's does act (it is what
    trtllm-serve gets), so a top-level one shared with `build` passes."""
    names = [p for p in options_given(ctx, preset=True) if p.name in REFERENCE_ONLY and ctx.params[p.name] is not False
             and not (p.name == "max_batch_size" and ctx.params[p.name] == plan.max_batch_size)]
    if names:
        shown = ", ".join(p.opts[0].removeprefix("--") for p in names)
        off = " (or pass --no-compile)" if any(p.name == "compile_layers" for p in names) else ""
        n = len(names)
        raise ConfigError(f"the --config preset sets {shown}, which {agreeing(n, 'applies', 'apply')} to "
                          "--checkpoint-dir only (trtllm-serve names the model after the engine folder, takes limits "
                          f"and GPUs from the engine and runs TensorRT-LLM's kernels): remove "
                          f"{agreeing(n, 'it', 'them')} from the preset{off} to serve --engine-dir")


def _refuse_engine_template_kwargs(ctx: click.Context, kwargs: dict) -> None:
    """trtllm-serve 1.2 has no server-wide chat template variables (no flag, no LLM API option: it renders each chat
    request with that request's chat_template_kwargs alone): --chat-template-kwargs, typed or a preset's, would be
    dropped and Qwen3 served thinking. Refused, as the other reference-server options; a preset's named first (typed
    keys override its own one by one, so a typed '{}' leaves them)."""
    if not kwargs:
        return
    fix = ("trtllm-serve has no server-wide chat template variables: its clients send \"chat_template_kwargs\" "
           "with each request")
    preset = ctx.lookup_default("chat_template_kwargs", call=False)  # a YAML mapping, or a JSON object's text
    if ctx.get_parameter_source("chat_template_kwargs") == click.core.ParameterSource.COMMANDLINE and \
            not (json_loads(preset) if isinstance(preset, str) else preset):
        raise ConfigError(f"--chat-template-kwargs applies to --checkpoint-dir only ({fix}); leave it out")
    raise ConfigError(f"the --config preset sets chat-template-kwargs, which applies to --checkpoint-dir only ({fix}): "
                      "remove it from the preset (or move it under the sections of run, bench and acceptance) to "
                      "serve --engine-dir")


GREEDY = ("greedy checkpoint: every answer is the greedy one, whatever temperature, seed or top_p asks (n > 1: n "
          "copies of it); convert --no-greedy for one that samples")


def start_line(app, url: str, kind: str, device: str) -> str:
    """What `serve --checkpoint-dir` says once it listens at `url`: the model, how it runs (kind: the reference
    runtime, compiled or not), its drafting, the server's chat options, and what a greedy checkpoint does with the
    sampling fields (accepted: clients send a temperature by default). app: the serve_app.App."""
    cfg = app.backend.config
    kwargs = f", chat_template_kwargs {json.dumps(app.template_kwargs, default=str)}" if app.template_kwargs else ""
    kwargs += f", tool parser {app.tool_parser}" if app.tool_parser else ""
    kwargs += f", reasoning parser {app.reasoning_parser}" if app.reasoning_parser else ""
    greedy = f"; {GREEDY}" if app.backend.greedy else ""
    return (f"serving {app.model_name} at {url} ({kind}, {device}, tp {cfg.tp_size}, {cfg.num_beams} beams x "
            f"{cfg.draft_len} draft tokens{kwargs}){greedy}; Ctrl-C stops")


@click.command(short_help="Serve a checkpoint or an engine over HTTP.", cls=Command)
@config_option
@click.option("--checkpoint-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Converted checkpoint: the reference runtime, one local process per tp rank (exactly one of "
                   "--checkpoint-dir / --engine-dir).")
@click.option("--engine-dir", type=click.Path(file_okay=False, path_type=Path),
              help="Built engine: TensorRT-LLM's trtllm-serve, one GPU per rank (exactly one of --checkpoint-dir / "
                   "--engine-dir).")
@click.option("--tokenizer-dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="The base model's HF folder.")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on (0.0.0.0: every interface; ::, IPv6 too).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535),
              help="0 picks a free port (--checkpoint-dir only: trtllm-serve needs one above 0).")
@click.option("--model-name",
              help="Reference server: the model id clients send and /v1/models lists (default: the checkpoint "
                   "folder's name; trtllm-serve names it after the engine folder).")
@click.option("--max-output-len", default=512, show_default=True, type=click.IntRange(min=1),
              help="Reference server: the largest max_tokens a request may ask for, and the default (left out: at "
                   "most the model's positions less one).")
@click.option("--max-batch-size", default=8, show_default=True, type=click.IntRange(min=1),
              help="Reference server: prompts decoding at once; greedy requests join the running batch between "
                   "steps (in-flight batching), a sampled request goes alone.")
@click.option("--device", default="cpu", show_default=True, type=click.Choice(["cpu", "cuda"]),
              help="Reference server: where the checkpoint runs.")
@click.option("--compile/--no-compile", "compile_layers", default=False,
              help="Reference server: run the base's layers compiled by TorchInductor (one CPU, float32, tp 1): "
                   "faster steps after minutes of compiling before it listens (--no-compile: eager, over a preset's "
                   "`compile: true`).")
@click.option("--shutdown-grace", default=30.0, show_default=True, type=Seconds(),
              help="Reference server: seconds the answers in flight get to finish after SIGTERM or Ctrl-C (new and "
                   "queued requests get 503 at once); a second Ctrl-C cuts them. It exits by then, or 1 s after the "
                   "generation the grace cut, even with clients that stopped reading.")
@chat_template_kwargs_option(
    """Reference server: the chat template's variables of every chat request, a JSON object (e.g. """
    """'{"enable_thinking": false}' turns Qwen3's thinking off); a request's own chat_template_kwargs override them """
    """key by key, as vLLM's --default-chat-template-kwargs.""")
@click.option("--tool-parser", type=click.Choice(sorted(TOOL_PARSERS)),
              help="Parse the tool calls of chat answers in this model's format and take requests' \"tools\" (qwen3: "
                   "Qwen2.5's and Qwen3's <tool_call> JSON, as trtllm-serve's --tool_parser qwen3, which --engine-dir "
                   "passes on). Without it, \"tools\" are refused.")
@click.option("--reasoning-parser", type=click.Choice(sorted(REASONING_PARSERS)),
              help="Split the thinking of chat answers into message.reasoning_content (streamed as "
                   "delta.reasoning_content), the rest staying content (qwen3: the answer opens <think> itself; "
                   "deepseek-r1: the prompt did, the answer starts inside it), as trtllm-serve's --reasoning_parser, "
                   "which --engine-dir passes on.")
@click.option("--dry-run", is_flag=True, help="Engine: print the trtllm-serve command and exit.")
def serve(checkpoint_dir, engine_dir, tokenizer_dir, host, port, model_name, max_output_len, max_batch_size, device,
          compile_layers, shutdown_grace, chat_template_kwargs, tool_parser, reasoning_parser, dry_run):
    """Serve a ReDrafter checkpoint or engine over HTTP (OpenAI-style /v1/completions, /v1/chat/completions)."""
    checkpoint_dir, engine_dir = one_of(click.get_current_context(), checkpoint_dir=checkpoint_dir, engine_dir=engine_dir)
    if bool(checkpoint_dir) == bool(engine_dir):
        raise ConfigError("pass exactly one of --checkpoint-dir (reference runtime) and --engine-dir (trtllm-serve)")
    if engine_dir:
        from ..serve_engine import exec_trtllm_serve, plan_trtllm_serve

        ctx = click.get_current_context()  # an off flag (`--no-compile`) asks nothing of the reference server
        given = [p.opts[0] for p in options_given(ctx) if p.name in REFERENCE_ONLY and ctx.params[p.name] is not False]
        if given:
            n = len(given)
            raise ConfigError(f"{', '.join(given)} {agreeing(n, 'applies', 'apply')} to --checkpoint-dir only: "
                              "trtllm-serve names the model after the engine folder, takes limits and GPUs from the "
                              f"engine and runs TensorRT-LLM's kernels; leave {agreeing(n, 'it', 'them')} out")

        _refuse_engine_template_kwargs(ctx, chat_template_kwargs)
        plan = plan_trtllm_serve(engine_dir, tokenizer_dir, host, port, tool_parser, reasoning_parser)
        _refuse_preset_reference_options(ctx, plan)
        for warning in (plan.host_warning, plan.stop_warning(), *plan.tools_warnings):
            if warning:
                click.echo(warning, err=True)
        plan.write_options()  # the file the command names, printed or run
        if dry_run:
            click.echo(plan.shell())
            return
        exec_trtllm_serve(plan)
    if dry_run:
        raise ConfigError("--dry-run prints the trtllm-serve command of an --engine-dir: leave it out here")
    if ranks := llmapi_ranks():  # past the group's check, which lets serve --engine-dir through
        raise llmapi_error(ranks, "`serve --checkpoint-dir`", "start it once, without mpirun and trtllm-llmapi-launch "
                           "(the reference runtime starts a tp checkpoint's ranks itself)")
    from ..runtime import RUN, check_compile, check_device, open_checkpoint
    from ..serve_app import App, serve_max_output_len
    from ..serve_backend import ReferenceBackend
    from ..serve_http import make_server, stop_serving
    from ..tokens import drafter_mode_warning, load_tokenizer

    checkpoint_dir = open_checkpoint(checkpoint_dir)  # inspected once: the backend and its ranks take it checked
    cfg = checkpoint_dir.config
    check_compile(cfg, compile_layers, device, spelling=RUN)
    if cfg.tp_size == 1:  # a tp checkpoint's GPUs are counted first, in the loading thread (LocalRanks)
        check_device(device, spelling=RUN)
    default = click.get_current_context().get_parameter_source("max_output_len") == click.core.ParameterSource.DEFAULT
    max_output_len = serve_max_output_len(cfg, max_output_len, given=not default)
    # a variable its template never reads, or another model's tokenizer, refused before the port and minutes of
    # loading; the backend takes this one (loading it again cost 0.2-0.4 s at start)
    tokenizer = load_tokenizer(str(tokenizer_dir), cfg.vocab_size, chat_template_kwargs)
    if why := drafter_mode_warning(checkpoint_dir.raw, tokenizer, None):  # chat requests without their own
        click.echo(f"warning: {why}", err=True)
    for why in (tool_template_warning(tokenizer, tool_parser, REFUSED_PER_REQUEST),
                tool_format_warning(tokenizer, tool_parser, CALLS_AS_TEXT)) if tool_parser else ():
        if why:
            click.echo(why, err=True)
    # the port first (as vLLM binds its socket before building the engine): a taken port is one line at once, not
    # after minutes of loading and compiling; connections made meanwhile wait in the backlog
    server = make_server(None, host, port)
    try:
        if compile_layers:
            click.echo("compiling the base's layers (minutes)")
        backend = ReferenceBackend(checkpoint_dir, tokenizer_dir, device, max_batch_size, compile=compile_layers,
                                   tokenizer=tokenizer)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM while the scheduler thread loads or compiles the model
        # the interpreter's teardown, with that thread inside torch, aborted the process ("terminate called without
        # an active exception", SIGABRT): leave at once, as after serving (a follower rank ends with its parent)
        server.server_close()
        click.echo("interrupted", err=True)
        sys.stderr.flush()
        os._exit(130)
    except BaseException:
        server.server_close()
        raise
    name = model_name or Path(checkpoint_dir).resolve().name
    try:
        server.app = App(backend, name, max_output_len, chat_template_kwargs, tool_parser, reasoning_parser)
    except BaseException:  # let the other tp ranks go before the error
        backend.stop()
        server.server_close()
        raise
    kind = "reference runtime, compiled" if compile_layers else "reference runtime"
    shown = f"[{host}]" if ":" in host else host  # an IPv6 address, as URLs write it
    click.echo(start_line(server.app, f"http://{shown}:{server.server_address[1]}/v1", kind, device))
    sys.stdout.flush()  # the address, for whoever reads this through a pipe
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        click.echo(f"stopping: the answers in flight have {shutdown_grace:g} s to finish")
        sent = stop_serving(server, backend, shutdown_grace)
        click.echo("stopped" if sent else "stopped (answers to clients that stopped reading left unsent)")
    finally:
        server.server_close()
    # Idle keep-alive handler threads may still be alive: skip the interpreter's teardown, during which a thread
    # that has run torch can abort the process ("terminate called without an active exception").
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
