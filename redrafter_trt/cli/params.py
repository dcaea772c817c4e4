"""Click pieces the commands share: the command class (an option given twice is refused), output files whose folder
is checked before any work, and the torch device names this tool runs on."""

from __future__ import annotations

import copy
import datetime
import json
import math
from pathlib import Path

import click

from ..errors import DEVICE, ConfigError, json_loads
from ..output import is_within, refuse_inside_earlier_output, same_file
from ..presets import preset_then_typed, typed_alone


HELP_NAMES = ["-h", "--help"]  # -h as argparse's (TensorRT-LLM's scripts, trtllm-build, run.py) and gpu_check.sh's


def with_help_names(kwargs: dict) -> dict:
    """A command's or group's keyword arguments with -h beside --help (a context setting its subcommands inherit)."""
    kwargs["context_settings"] = {"help_option_names": HELP_NAMES, **(kwargs.get("context_settings") or {})}
    return kwargs


class Command(click.Command):
    """A command that refuses an option given twice, under one name or two (`--output A --output_dir B`, `--rnn
    --no-rnn`), where click would keep the last one silently. Options that take many values (`--data A --data B`)
    and everything after `--` are left alone. -h is --help's short name, and shows the help whatever else is typed,
    as argparse's does (TensorRT-LLM's run.py, trtllm-build), where click refused an unknown option first."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **with_help_names(kwargs))
        for param in self.params:  # every path option and argument refuses '' as empty (`refusing_empty`)
            if isinstance(param.type, click.Path):
                param.type = refusing_empty(param.type)

    def parse_args(self, ctx, args):
        head = args[: args.index("--")] if "--" in args else args
        if ctx.resilient_parsing:  # shell completion
            return super().parse_args(ctx, args)
        options = {name: param for param in self.params if isinstance(param, click.Option)
                   for name in param.opts + param.secondary_opts}
        asked = [arg for arg in head if arg in self.get_help_option_names(ctx)]
        if asked:  # with --config's preset loaded: its values are the defaults the help shows
            return super().parse_args(ctx, _eager_options(head, options) + asked[:1])
        seen: dict[str, str] = {}
        rest = iter(head)
        for arg in rest:
            name = arg.split("=", 1)[0]
            param = options.get(name)
            if param is None:
                continue
            if not (param.multiple or param.count):
                if param.name in seen:
                    twice = f"{name} is given twice" if seen[param.name] == name else \
                        f"{seen[param.name]} and {name} set the same option"
                    raise click.UsageError(f"{twice}: give it once", ctx)
                seen[param.name] = name
            if not param.is_flag and not param.count and "=" not in arg:
                next(rest, None)  # its value, whatever it looks like
        return super().parse_args(ctx, args)


def _eager_options(args: list[str], options: dict) -> list[str]:
    """The eager options in `args` (--config FILE) with their values, the help option left out."""
    kept, rest = [], iter(args)
    for arg in rest:
        param = options.get(arg.split("=", 1)[0])
        if param is not None and param.is_eager and not param.is_flag:
            kept += [arg] if "=" in arg else [arg, *[value for value in [next(rest, None)] if value is not None]]
    return kept


class EmptyPath(click.BadParameter):
    """A path option or argument given '' (`--output ''`, a shell's unset "$VAR"): named as empty, with the kind of
    path it takes."""

    def format_message(self) -> str:
        hint = self.param_hint or (self.param.opts[0] if isinstance(self.param, click.Option) else
                                   self.param.human_readable_name)
        return f"{hint} is empty: pass {self.message}"


class _RefusesEmpty(click.Path):
    """A click.Path that refuses '' before pathlib reads it as the current folder: `convert --output ''` said
    "output folder <cwd> already exists: pass --force" (with --force, refused as the current folder), `run
    --output-json ''` ". is not a regular file (a device, pipe or socket...)" (a review)."""

    def convert(self, value, param, ctx):
        if isinstance(value, str) and not value:
            what = "a folder path" if not self.file_okay else "a file path" if not self.dir_okay else "a path"
            raise EmptyPath(what, ctx, param)
        return super().convert(value, param, ctx)


_REFUSING: dict[type, type] = {}  # a click.Path class -> its subclass refusing '' (`refusing_empty`)


def refusing_empty(kind: click.Path) -> click.Path:
    """`kind` (a click.Path, OutputFile, ...: its own checks kept) refusing '' as empty (`_RefusesEmpty`): what
    `Command` makes of every path parameter of every command, so that none of them reads '' as the current folder."""
    if isinstance(kind, _RefusesEmpty):
        return kind
    cls = type(kind)
    refusing = _REFUSING.setdefault(cls, type(f"NonEmpty{cls.__name__}", (_RefusesEmpty, cls), {}))
    copied = copy.copy(kind)
    copied.__class__ = refusing
    return copied


class OutputFile(click.Path):
    """A file written at the end of a command: its folder must exist now, not after an hour of generation. It is
    written as a sibling renamed over it, so a device or pipe (/dev/full, /dev/stdout, a named pipe) is refused: the
    rename would replace it by a plain file (as root, /dev/full for every program of the host). A link to a regular
    file is taken as the file it names, which is written, not the link replaced (`/dev/stdout > f.json`: f.json).
    `suffix` is added to a name without it before the checks (run.py's `np.save` adds `.npy`): they looked at the name
    as typed, and `lp` passed with `lp.npy` a folder (refused after generating) or a link (replaced by a plain file)."""

    def __init__(self, suffix: str = ""):
        super().__init__(dir_okay=False, path_type=Path)
        self.suffix = suffix

    def convert(self, value, param, ctx):
        path = super().convert(value, param, ctx)
        if self.suffix and path.suffix != self.suffix:
            path = path.with_name(path.name + self.suffix)
        if path.is_dir():  # only with the suffix added: click refuses a folder typed as it is
            self.fail(f"{path} is a folder: pass a file path", param, ctx)
        if path.exists() and not path.is_file():
            self.fail(f"{path} is not a regular file (a device, pipe or socket, which the output would replace): "
                      f"pass a file path", param, ctx)
        if path.is_symlink() and path.is_file():
            path = path.resolve()
        if not path.parent.is_dir():
            self.fail(f"folder {path.parent} does not exist: create it first, or write elsewhere", param, ctx)
        from ..output import writable_folder

        why = writable_folder(path.parent)
        if why:
            self.fail(f"cannot write in {path.parent} ({why}): write elsewhere", param, ctx)
        return path


SEED = click.IntRange(0, 2 ** 63 - 1)  # what torch.Generator.manual_seed takes


class Temperature(click.types.FloatParamType):
    """A finite number >= 0 (0 = greedy). A float type, so that a preset's `temperature` must be a YAML number."""

    name = "float"

    def convert(self, value, param, ctx):
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        if not (math.isfinite(number) and number >= 0):
            self.fail(f"{value!r} is not a finite number >= 0: pass 0 for greedy or e.g. 0.7", param, ctx)
        return number


class Seconds(click.types.FloatParamType):
    """A wait in seconds, 0 to a day: NaN passed click's FloatRange(min=0) and made threading's wait last forever,
    and inf (or 1e300) overflowed it (OverflowError) when the wait came."""

    name = "float"
    DAY = 86400

    def convert(self, value, param, ctx):
        number = super().convert(value, param, ctx)
        if not 0 <= number <= self.DAY:  # NaN fails both comparisons
            self.fail(f"{value!r} is not a number of seconds from 0 to {self.DAY}: pass e.g. 30", param, ctx)
        return number


def options_given(ctx: click.Context, *, preset: bool = False) -> list[click.Parameter]:
    """The command's parameters given on the command line, or (preset=True) set by a --config preset to something
    other than their own default (a preset's shared keys reach every command that has them, often at the default)."""
    source = click.core.ParameterSource
    bare = click.Context(ctx.command)  # no preset: the parameters' own defaults
    out = []
    for p in ctx.command.params:
        if not p.name:
            continue
        if preset:
            if ctx.get_parameter_source(p.name) == source.DEFAULT_MAP and \
                    ctx.params.get(p.name) not in (None, p.get_default(bare)):
                out.append(p)
        elif ctx.get_parameter_source(p.name) == source.COMMANDLINE:
            out.append(p)
    return out


def check_output_file(path: Path | None, inputs: list, option: str) -> None:
    """Refuse an output file that is an input or lies inside an input folder (it would overwrite what is read), or
    inside an earlier output folder (a drafter, checkpoint or engine: `--force` would then refuse to replace it, as it
    holds a file no ReDrafter tool writes there)."""
    if path is None:
        return
    for item in inputs:
        if item is not None and is_within(path, item):
            where = "is the input" if is_within(item, path) else "is inside the input"
            raise ConfigError(f"{option} {path} {where} {item}: write it elsewhere")
    refuse_inside_earlier_output(path, option)


def check_output_files(outputs: dict[str, Path | None], inputs: list) -> None:
    """check_output_file for each of a command's output files ({option: path}), and no two of them one file (the
    later written would replace the earlier without a word)."""
    given = [(option, path) for option, path in outputs.items() if path is not None]
    for option, path in given:
        check_output_file(path, inputs, option)
    for i, (option, path) in enumerate(given):
        for other, other_path in given[i + 1:]:
            if same_file(path, other_path):
                raise ConfigError(f"{option} and {other} both name {other_path} (one would replace the other): "
                                  f"write them to two files")


class TemplateKwargs(click.ParamType):
    """--chat-template-kwargs: a JSON object of the chat template's variables, given to every render of the command
    (Qwen3's `{"enable_thinking": false}`, as vLLM's and trtllm-serve's clients send `chat_template_kwargs`); a
    preset's YAML mapping too (`yaml_mapping` tells presets)."""

    name = "json"
    yaml_mapping = True
    EXAMPLE = """write a JSON object of template variables, e.g. '{"enable_thinking": false}'"""

    def convert(self, value, param, ctx):
        kwargs = value
        if isinstance(value, str):
            try:
                kwargs = json_loads(value)
            except json.JSONDecodeError as e:  # a value of thousands of characters (nested too deeply) not echoed
                shown = repr(value) if len(value) <= 80 else f"the value ({len(value)} characters)"
                self.fail(f"{shown} is not JSON ({e.msg}): {self.EXAMPLE}", param, ctx)
        if not isinstance(kwargs, dict):
            self.fail(f"{value!r} is not a JSON object: {self.EXAMPLE}", param, ctx)
        if names := [k for k in kwargs if not isinstance(k, str)]:  # a preset's YAML: {1: true}
            self.fail(f"{names[0]!r} is not the name of a template variable: {self.EXAMPLE}", param, ctx)
        if why := _unwritable(kwargs):  # a preset's YAML: a date, !!set, !!binary
            self.fail(why, param, ctx)
        from ..tokens import template_kwargs_refusal

        if why := template_kwargs_refusal(kwargs):
            self.fail(why, param, ctx)
        return kwargs


class _NoJSON(Exception):
    pass


def _no_json(value):
    raise _NoJSON(value)


def _unwritable(kwargs: dict) -> str | None:
    """Why a variable of `kwargs` (a preset's YAML mapping) is a value JSON cannot write, or None: a YAML date,
    !!set, !!binary, an alias inside its own anchor. It went through, and `run --output-json` (bench's, acceptance's
    report) did all its work, then died writing the producer block, which records the variables."""
    for key, value in kwargs.items():
        try:
            json.dumps(value, default=_no_json)
        except _NoJSON as e:
            bad = e.args[0]
            what = ("a YAML set" if isinstance(bad, (set, frozenset)) else
                    "YAML binary" if isinstance(bad, (bytes, bytearray)) else
                    f"{bad} (a YAML date)" if isinstance(bad, (datetime.date, datetime.time)) else
                    f"a {type(bad).__name__}")
            where = "is" if bad is value else "holds"
        except (ValueError, RecursionError):  # json's "Circular reference detected"
            where, what = "holds", "itself (a YAML alias inside its own anchor)"
        except TypeError:  # a nested mapping's key (json writes only text, numbers, booleans and null as keys)
            where, what = "holds", "a mapping key that is not text"
        else:
            continue
        return (f'"{key}" {where} {what}, which JSON cannot write (the outputs\' producer block records the '
                f"variables): quote it to give it as text, or write a string, number, true, false, null, list or "
                f"mapping")
    return None


def chat_template_kwargs_option(help: str):
    """--chat-template-kwargs JSON (`TemplateKwargs`), its help the command's use of it; typed, its keys override a
    --config preset's one by one (`preset_then_typed`)."""
    return click.option("--chat-template-kwargs", type=TemplateKwargs(), default="{}", metavar="JSON",
                        callback=preset_then_typed, help=help)


CHAT_TEMPLATE_KWARGS = chat_template_kwargs_option(
    """Variables of the chat template, a JSON object given to it at every render (e.g. '{"enable_thinking": """
    """false}' turns Qwen3's thinking off, as serve's chat_template_kwargs).""")


def template_kwargs_given(ctx: click.Context, chat: bool | None, kwargs: dict) -> dict:
    """--chat-template-kwargs (the preset's variables under the typed ones), or those typed alone where chat is off
    (--no-chat, run without --chat): a preset's options that do not apply are left out, typed ones reach
    encode_prompts' refusal (a typed '{}' sets none)."""
    return kwargs if chat is not False else typed_alone(ctx, "chat_template_kwargs", {})


class Device(click.ParamType):
    """cpu, cuda or cuda:N (errors.DEVICE, which the Python API's configs check too)."""

    name = "device"

    def convert(self, value, param, ctx):
        need, ok = DEVICE
        if ok(value):
            return value
        self.fail(f"{value!r} is not a device this tool runs on: use {need}", param, ctx)
