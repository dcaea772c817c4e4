"""`redrafter-trt`: one click command per stage. Subcommands are imported only when invoked (torch and
transformers are slow to import), each from its own small module under `redrafter_trt/cli/`.

Library code raises `RedrafterError`; this group prints it, and click's own usage errors (a bad option or
value) and OS errors (a full disk, an unwritable folder), as one line on stderr and exits 2 (`--debug` shows the
traceback instead). The scripts under scripts/ do the same through `Script`.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import inspect
import logging
import os
import signal
import sys

import click

from .. import __version__
from ..errors import RedrafterError
from ..interrupts import exit_keeping, uninterrupted
from ..launchers import copies_error, launched_copies, llmapi_error, llmapi_ranks
from .params import Command, with_help_names

COMMANDS = {
    "convert": "redrafter_trt.cli.convert_cmd:convert",
    "init-drafter": "redrafter_trt.cli.convert_cmd:init_drafter",
    "inspect": "redrafter_trt.cli.inspect_cmd:inspect",
    "run": "redrafter_trt.cli.run_cmd:run",
    "build": "redrafter_trt.cli.build_cmd:build",
    "doctor": "redrafter_trt.cli.doctor_cmd:doctor",
    "train": "redrafter_trt.cli.train_cmd:train",
    "bench": "redrafter_trt.cli.bench_cmd:bench",
    "acceptance": "redrafter_trt.cli.bench_cmd:acceptance",
    "quickstart": "redrafter_trt.cli.quickstart_cmd:quickstart",
    "serve": "redrafter_trt.cli.serve_cmd:serve",
}

# Commands whose copies may run under torchrun: train's ranks share the work; inspect and doctor only read. Any other
# command, started once per rank, would do all of its work in each copy (run and serve start a tp checkpoint's ranks
# themselves), printing every answer twice or writing one output folder from two processes.
TORCHRUN_COMMANDS = ("train", "inspect", "doctor")
# ... and under an MPI launcher (mpirun, mpiexec, srun: launchers.py): `run --engine-dir`, an engine's ranks as
# TensorRT-LLM's run.py runs them (run refuses its --checkpoint-dir there itself: the reference runtime starts its
# ranks); not train, whose ranks are torchrun's, nor serve, whose trtllm-serve starts an engine's ranks itself
MPI_COMMANDS = ("run", "inspect", "doctor")
# (command, its form under an MPI launcher) for a refused command that has one: an engine served across nodes as
# TensorRT-LLM serves one, under trtllm-llmapi-launch, whose rank 0 runs the command once with the launcher's
# variables (OMPI_ PMI_ MV2_ SLURM_ ...) removed, so past this check, and whose other ranks are the engine's MPI workers
MPI_FORMS = {"serve": "to serve an engine across nodes, start `trtllm-llmapi-launch redrafter-trt serve --engine-dir "
                      "...` under mpirun or srun: its rank 0 runs it once"}
# ... and under trtllm-llmapi-launch's rank 0 (launchers.llmapi_ranks): `serve --engine-dir` (serve refuses its
# --checkpoint-dir there itself), whose trtllm-serve starts the engine on the waiting ranks
LLMAPI_COMMANDS = ("serve", "inspect", "doctor")
# (command, how it runs across ranks instead) for a command refused there that has another form: `run --engine-dir`
# runs an engine's ranks under mpirun itself (MPI_COMMANDS), train's ranks are torchrun's (TORCHRUN_COMMANDS)
LLMAPI_FORMS = {"run": "`run --engine-dir` runs an engine's ranks under mpirun without trtllm-llmapi-launch",
                "train": "on several GPUs, start `train` under torchrun"}
HELP_ASKED = "redrafter_trt.help_asked"  # ctx.meta: the command's arguments ask for its --help (LazyGroup)

NO_ARGS_IS_HELP = getattr(click.exceptions, "NoArgsIsHelpError", ())  # click >= 8.2


def utf8_stdout() -> None:
    """A redirected stdout in UTF-8 where its encoding cannot write every character: Windows writes one in its ANSI
    code page (cp1252), where an emoji or a CJK character in an answer or a path (`run ... > answers.txt`) was a
    UnicodeEncodeError traceback after the work was done. Python's UTF-8 mode (PYTHONUTF8=1) does the same. A terminal
    keeps its encoding (a Latin-1 one would show UTF-8's bytes), and the error handler stays (surrogateescape writes a
    name's bytes that are not UTF-8 as they are)."""
    encoding = (getattr(sys.stdout, "encoding", None) or "").lower().replace("-", "").replace("_", "")
    if encoding not in ("utf8", "utf16", "utf32") and hasattr(sys.stdout, "reconfigure") and not sys.stdout.isatty():
        sys.stdout.reconfigure(encoding="utf-8", errors=sys.stdout.errors)


class OneLineErrors:
    """The command-line's error handling: bad input (a `RedrafterError`, a bad option or value, an OS error) is one
    line on stderr and exit code 2. Shared by the `redrafter-trt` group and the scripts' commands (`Script`)."""

    prog = None  # what a usage error outside any command points to [default: the command's own path]

    def main(self, *args, standalone_mode: bool = True, **kwargs):
        """click's own entry point, with a bad top-level option as one line too (click prints a usage block)."""
        if not standalone_mode:
            return super().main(*args, standalone_mode=False, **kwargs)
        utf8_stdout()
        try:
            code = super().main(*args, standalone_mode=False, **kwargs)  # ctx.exit(n) comes back as n
        except NO_ARGS_IS_HELP as e:  # no command at all: the help, as click shows it
            e.show()
            exit_keeping(e.exit_code)
        except click.UsageError as e:
            if getattr(e, "debug", False):
                raise
            where = self.prog or (e.ctx.command_path if e.ctx else self.name)
            click.echo(f"error: {e.format_message()} (see '{where} --help')", err=True)
            exit_keeping(2)
        except RedrafterError as e:  # from an option's callback, while a script's command parses its options
            if getattr(e, "debug", False):
                raise
            click.echo(f"error: {e}", err=True)
            exit_keeping(2)
        except click.ClickException as e:
            e.show()
            exit_keeping(e.exit_code)
        except click.exceptions.Exit as e:
            exit_keeping(e.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            exit_keeping(1)
        exit_keeping(code if isinstance(code, int) else 0)

    def invoke(self, ctx):
        try:
            result = super().invoke(ctx)
            sys.stdout.flush()  # here, not at exit: a reader gone (`| head`) is a BrokenPipeError handled below
            return result
        except RedrafterError as e:
            shown = _name_preset_variable(ctx, e)
            if _debug(ctx, shown):
                if shown is e:
                    raise
                raise shown from e
            click.echo(f"error: {shown}", err=True)
            ctx.exit(2)
        except click.UsageError as e:  # a bad option or value: one line too, with where to look
            if _debug(ctx, e):
                raise
            # an option lacking its value comes without a context: the command being parsed is the one to read
            where = e.ctx.command_path if e.ctx else " ".join(filter(None, (ctx.command_path, ctx.invoked_subcommand)))
            _name_preset_field(e)
            hint = _not_in_preset(e)
            message = e.format_message().rstrip(".") + hint if hint else e.format_message()
            click.echo(f"error: {message} (see '{where} --help')", err=True)
            ctx.exit(2)
        except BrokenPipeError:  # `redrafter-trt inspect --json CKPT | head`: the reader left, as for cat or git
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
            ctx.exit(141)  # 128 + SIGPIPE
        except OSError as e:  # the disk filled up, a folder became unwritable: one line too
            if _debug(ctx, e):
                raise
            where = f"{e.filename}: " if e.filename else ""
            click.echo(f"error: {where}{e.strerror or e}: check the path, its permissions and the free disk space",
                       err=True)
            ctx.exit(2)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(130)


class LazyGroup(OneLineErrors, click.Group):
    prog = "redrafter-trt"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **with_help_names(kwargs))

    def list_commands(self, ctx):
        return [name for name in COMMANDS if self._spec_exists(name)]

    @staticmethod
    def _spec_exists(name: str) -> bool:
        module = COMMANDS[name].split(":")[0]
        return importlib.util.find_spec(module) is not None

    def get_command(self, ctx, name):
        if name not in COMMANDS or not self._spec_exists(name):
            return None
        module, attr = COMMANDS[name].split(":")
        return getattr(importlib.import_module(module), attr)

    def resolve_command(self, ctx, args):
        """click's, noting for `main` whether the command's own arguments ask for its --help (which `main`, run
        before the command reads them, cannot see): a help does no work, so it shows under torchrun too."""
        name, cmd, rest = super().resolve_command(ctx, args)
        head = rest[: rest.index("--")] if "--" in rest else rest
        ctx.meta[HELP_ASKED] = cmd is not None and bool(set(head) & set(cmd.get_help_option_names(ctx)))
        return name, cmd, rest


class Script(OneLineErrors, Command):
    """A script's command (scripts/*.py: `@click.command(cls=Script)`): bad input is one line and exit 2, as in
    `redrafter-trt`, and an option given twice is refused; with no docstring of its own, --help opens with the first
    paragraph of the script's module docstring (what it measures)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        about = getattr(inspect.unwrap(self.callback), "__globals__", {}).get("__doc__")  # under @torch.no_grad()
        if self.help is None and about:
            self.help = about.strip().split("\n\n")[0]


def _debug(ctx, e: BaseException) -> bool:
    """Whether `--debug` asked for the traceback; if so, marks `e` so that `main` lets it through (it printed the
    exceptions re-raised here as one line, so --debug showed no traceback at all)."""
    debug = bool(ctx.obj and ctx.obj.get("debug"))
    if debug:
        e.debug = True
    return debug


def _refuse_launched_copies(command: str | None) -> None:
    """ConfigError for a command started as one of several copies by a launcher whose copies it does not share its
    work between (TORCHRUN_COMMANDS under torchrun, MPI_COMMANDS under an MPI launcher), or by trtllm-llmapi-launch on
    rank 0 while its other ranks wait for an engine (LLMAPI_COMMANDS)."""
    ranks = llmapi_ranks()
    if ranks and command not in LLMAPI_COMMANDS:
        form = f" ({LLMAPI_FORMS[command]})" if command in LLMAPI_FORMS else ""
        raise llmapi_error(ranks, f"`{command}`", f"start it once, without mpirun and trtllm-llmapi-launch{form}")
    copies = launched_copies()
    if copies is None:
        return
    if copies[1] == "torchrun":
        if command not in TORCHRUN_COMMANDS:
            raise copies_error(copies, f"`{command}`", "only `train` shares its work between torchrun's copies; `run` "
                               "and `serve` start a tp checkpoint's ranks themselves")
    elif command not in MPI_COMMANDS:
        form = f"; {MPI_FORMS[command]}" if command in MPI_FORMS else ""
        raise copies_error(copies, f"`{command}`", "under an MPI launcher only `run --engine-dir` runs as an engine's "
                           "ranks; `train` shares its work under torchrun; `run --checkpoint-dir` and `serve` start "
                           f"their ranks themselves{form}")


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _load_torch() -> None:
    """Import torch (every command loads it) with Ctrl-C and SIGTERM held back until it has loaded (`uninterrupted`):
    a stop while its C++ extensions loaded (numpy's, torch.distributed's) went wrong in 17 of 130 SIGTERMs sent to
    `doctor` in its first 3 s: 'interrupted', then death by SIGINT (-2) in 13, doctor blaming torch (numpy's
    ImportError 'cannot load module more than once per process') in 2, an abort ('terminate called after throwing an
    instance of pybind11::error_already_set') in 2; in 0 of 130 since ('interrupted', exit 130, once torch is in). A
    torch that does not import (missing, broken) is left to the command that needs it (doctor says why), as before."""
    with uninterrupted(), contextlib.suppress(Exception):
        importlib.import_module("torch")


def _name_preset_field(e: click.UsageError) -> None:
    """A value a --config preset set that its option's type refuses (a path: presets check the others when they
    load) is named as the preset's field (`as_given`), not as a flag nobody typed."""
    from click.core import ParameterSource

    from ..presets import as_given

    if isinstance(e, click.BadParameter) and e.param_hint is None and e.ctx is not None and e.param is not None \
            and e.ctx.get_parameter_source(e.param.name) == ParameterSource.DEFAULT_MAP:
        e.param_hint = as_given(e.ctx, e.param.name)


def _name_preset_variable(ctx: click.Context, e: Exception) -> Exception:
    """A chat template variable that the template never reads, set by a --config preset's chat-template-kwargs, is
    named as the preset's field (`presets.preset_setting`): it was blamed on --chat-template-kwargs, a flag nobody
    typed. Other errors as they are."""
    from ..presets import preset_setting
    from ..tokens import UnreadTemplateVariable

    if isinstance(e, UnreadTemplateVariable) and (named := preset_setting(ctx.meta, "chat_template_kwargs", e.key)):
        return UnreadTemplateVariable(e.key, e.reads, named)
    return e


def _not_in_preset(e: click.UsageError) -> str:
    """For a required option a --config preset left out (its values are the context's default_map): where to add it."""
    if isinstance(e, click.MissingParameter) and e.ctx and e.ctx.default_map is not None and e.param is not None:
        key = e.param.name.replace("_", "-")
        return f": the preset does not set it either; pass it, or add `{key}:` to the preset"
    return ""


@click.group(cls=LazyGroup)
@click.version_option(__version__, prog_name="redrafter-trt")
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.option("-v", "--verbose", is_flag=True, help="Log at INFO level.")
@click.pass_context
def main(ctx, debug, verbose):
    """Train ReDrafter drafters; convert, check, build, run, measure and serve them with TensorRT-LLM or PyTorch."""
    ctx.obj = {"debug": debug}
    if not ctx.meta.get(HELP_ASKED):
        _refuse_launched_copies(ctx.invoked_subcommand)
    # `kill`, `docker stop`, a scheduler's preemption, torchrun stopping its ranks: stop as on Ctrl-C, so train and
    # quickstart save their training state, serve drains, and a half-written output's temporary folder is removed
    previous = signal.signal(signal.SIGTERM, _interrupt)
    # only while the command runs: torchrun's SIGTERM to a rank exiting after its one-line error (another rank
    # failed too) raised KeyboardInterrupt in an exit handler, a traceback after that line. A handler set since (a
    # finished train's: interrupts.stop_at_exit_as_finished) stays: reset, a SIGTERM as the process exits was its death
    ctx.call_on_close(lambda: signal.getsignal(signal.SIGTERM) is _interrupt and signal.signal(
        signal.SIGTERM, signal.SIG_DFL if previous is None else previous))
    if ctx.invoked_subcommand and not ctx.meta.get(HELP_ASKED):
        _load_torch()
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)
    from tqdm.contrib.logging import logging_redirect_tqdm

    # a line logged while a progress bar runs goes above it, on a line of its own: it was glued to the bar's end
    # (train's "interrupted: state saved after step N" behind its last frame, when another torchrun rank died). Only
    # where the lines go to this stderr: tqdm's handler is added even where none was (a caller's own logging)
    if any(type(h) is logging.StreamHandler and h.stream is sys.stderr for h in logging.root.handlers):
        ctx.with_resource(logging_redirect_tqdm())

