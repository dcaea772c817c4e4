"""YAML presets: `--config FILE` for any click command, so that one file drives convert, build, run and serve.

A preset holds top-level keys shared by every command that has such an option, and one section per command
(`convert:`, `build:`, `run:`, `serve:`) whose keys win over the shared ones. Keys are the command's option names,
with dashes or underscores (`tp-size` or `tp_size`); a `--x/--no-x` flag also takes `no-x: true`. Preset values
become defaults (click's `default_map`), so flags given on the command line always win (build's arguments after
`--` follow the preset's `trtllm-args`, and typed chat template variables override the preset's one by one:
`preset_then_typed`). A comma list of the command line (bench's `--beams 1,2,4`)
is a YAML list (`beams: [1, 2, 4]`) or that string, and a JSON object
(`--chat-template-kwargs`) a YAML mapping (`chat-template-kwargs: {enable_thinking: false}`) or that string. Paths are read as on the
command line (relative to the working directory); YAML anchors (`&ckpt` / `*ckpt`) share a path between sections.

    checkpoint-dir: &ckpt work/llama-3.1-8b/checkpoint    # build and run
    num-beams: 5                                        # convert and run
    convert: {base: models/Llama-3.1-8B-Instruct, output: *ckpt, dtype: bfloat16}
    build: {output-dir: work/llama-3.1-8b/engine, max-batch-size: 8}

A key that is no option of its command (or, at the top level, of any command taking --config), a section for a
command that takes no --config, a value of the wrong YAML type (12.5 for a count, a list for a path, 1 for a
flag, 1.10 for text: quoted, '1.10' stays text), `force` or `dry-run` (command line only) and a choice or number out of its range (`gemm-plugin: fp16`, `max-output-len: 0`) are a `ConfigError` naming the
file and the field (`run.tp`), whichever command reads the preset: a top-level value refused by one command using it
(one taking it whose section does not set it) stops the others too (`device: cuda:1` is bench's and acceptance's
alone: under their sections, or override it under `convert:`, `run:` and `serve:`). Of rival options (`--checkpoint-dir` / `--engine-dir`, `--input-text` / `--input-file`), one given on the command line,
or else one in the command's section, drops the preset's other (`one_of`).
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import shlex
from collections.abc import Callable, Hashable, Iterable
from pathlib import Path

import click
import yaml

from .errors import NESTED_TOO_DEEPLY, ConfigError, first_line, long_number, name_list, number_too_long, read_text

log = logging.getLogger(__name__)

# Section names a preset may hold besides the group's own commands (commands still being written).
KNOWN_SECTIONS = frozenset({"convert", "build", "run", "serve", "inspect", "bench", "train", "quickstart"})


class _Mapping(dict):
    """A preset's mapping; `merges`: (the keys written in it, the same pair for each mapping a merge key (`<<: *run`)
    brought in, in order), nested as its merges are."""

    merges: tuple = ()


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load that refuses a key given twice in one mapping (PyYAML keeps the last one silently). A merge key
    (`<<: *run`) is no key of its own: the base class merges it, and a key written beside it overrides the merged
    one, as YAML says; each mapping is a _Mapping naming the keys merged in, so that a key written beside the merge
    overrides one of the same option spelled otherwise too (`resolve`)."""

    MERGE = "tag:yaml.org,2002:merge"

    def construct_yaml_map(self, node):
        data = _Mapping()
        yield data
        data.update(self.construct_mapping(node))
        data.merges = self._merges(node)

    def flatten_mapping(self, node):
        # what a mapping writes and merges, noted before the base class moves the merged keys into node.value: once,
        # at its first flattening (where it is merged, perhaps before it is constructed itself)
        if not hasattr(node, "written"):
            node.written = [key_node for key_node, _ in node.value if key_node.tag != self.MERGE]
            node.merged = [sub for key_node, value in node.value if key_node.tag == self.MERGE
                           for sub in (value.value if isinstance(value, yaml.SequenceNode) else [value])]
        super().flatten_mapping(node)

    def _merges(self, node, within: tuple = ()) -> tuple:
        # `within`: the mappings merging this one; one merging itself (`a: &a {<<: *a}`) merges nothing more
        return (frozenset(self.construct_object(key_node) for key_node in node.written),
                tuple(self._merges(sub, (*within, node)) for sub in node.merged
                      if isinstance(sub, yaml.MappingNode) and sub is not node and sub not in within))

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == self.MERGE:
                continue
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, Hashable):  # `[a]: 1`: the base class refuses it as YAML with its line
                continue
            if key in seen:
                raise ConfigError(f"preset field '{key}' is given twice in one section (line "
                                  f"{key_node.start_mark.line + 1}): give it once")
            seen.add(key)
        return super().construct_mapping(node, deep)


_UniqueKeyLoader.add_constructor("tag:yaml.org,2002:map", _UniqueKeyLoader.construct_yaml_map)


def load_preset(path: str | Path) -> dict:
    """Parse a preset file into a dict; an empty file is an empty preset."""
    if not str(path).strip():  # Path("") is ".", which read as "cannot read  (Is a directory)"
        raise ConfigError("--config is empty: pass the path of a YAML preset, or leave --config out")
    text = read_text(path, "pass an existing UTF-8 YAML preset to --config")
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except ConfigError as e:  # a key given twice
        raise ConfigError(f"preset {path}: {str(e).removeprefix('preset ')}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"preset {path} is not valid YAML{where}; fix the file or pass another --config") from e
    except (RecursionError, ValueError) as e:  # PyYAML, as json, reads nesting recursively and numbers with int()
        # (a ValueError too for a date it cannot be: 2025-13-01)
        number = long_number(text)
        why = NESTED_TOO_DEEPLY if isinstance(e, RecursionError) else \
            number_too_long(len(number[0])) if number else first_line(e, type(e).__name__)
        raise ConfigError(f"preset {path} cannot be read ({why}); fix the file or pass another --config") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"preset {path} must be a mapping of option names to values, not a {type(data).__name__}")
    return data


_SECTION_META = "redrafter_trt.presets.section"  # ctx.meta: parameter names the command's own section set
_TYPED_META = "redrafter_trt.presets.typed"  # ctx.meta: {parameter name: its value as typed} (preset_then_typed)
_PRESET_META = "redrafter_trt.presets.preset"  # ctx.meta: {parameter name: the preset's value} (preset_then_typed)


def _key(name: str) -> str:
    return name.lstrip("-").replace("_", "-").lower()


def option_keys(command: click.Command) -> dict[str, tuple[click.Parameter, bool]]:
    """Preset key -> (click parameter, invert). Invert is true for the `--no-x` half of a `--x/--no-x` flag."""
    keys: dict[str, tuple[click.Parameter, bool]] = {}
    for param in command.params:
        if not param.expose_value or param.name in (None, "config"):
            continue
        keys[_key(param.name)] = (param, False)
        for opt in param.opts:
            keys.setdefault(_key(opt), (param, False))
        for opt in getattr(param, "secondary_opts", ()):
            keys.setdefault(_key(opt), (param, True))
    return keys


def shown_names(command: click.Command) -> set[str]:
    """One name per parameter a preset may set, for error messages: its first long flag (dashes, no prefix) or
    argument name (`force` and `dry-run` are the command line's)."""
    names = set()
    for param in command.params:
        if not param.expose_value or param.name in (None, "config", *COMMAND_LINE_ONLY):
            continue
        names.add(_shown(param))
    return names


def _shown(param: click.Parameter) -> str:
    """A parameter's name in messages: its first long flag (dashes, no prefix), or its argument name."""
    longs = [o for o in param.opts if o.startswith("--")]
    return _key(longs[0] if longs else param.name)


def split_preset(preset: dict, sections: Iterable[str]) -> tuple[dict, dict[str, dict]]:
    """(shared top-level keys, {command: section}). A mapping under a command's name is that command's section."""
    sections = set(sections)
    shared, by_command = {}, {}
    for key, value in preset.items():
        if key in sections and (isinstance(value, dict) or value is None):  # `run:` with nothing under it
            by_command[key] = value or {}
        elif key in sections:
            raise ConfigError(f"preset section '{key}' must be a mapping of option names to values")
        else:
            shared[key] = value
    return shared, by_command


def _yaml_type(param: click.Parameter) -> tuple[str, Callable[[object], bool]]:
    """What a preset value for this parameter must be, as YAML writes it (click would turn 3.7 into 3, a list
    into a path's traceback)."""
    if getattr(param, "is_flag", False):
        return "true or false", lambda v: isinstance(v, bool)
    if isinstance(param.type, click.types.IntParamType):
        return "a whole number", lambda v: isinstance(v, int) and not isinstance(v, bool)
    if isinstance(param.type, click.types.FloatParamType):
        return "a number", lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
    if isinstance(param.type, (click.Path, click.File)):  # click passes a number on, and os.fspath fails on it
        return "a string (quote a path YAML reads as a number)", lambda v: isinstance(v, str)
    if isinstance(param.type, click.types.StringParamType):  # free text: YAML's 1.10 is 1.1, 12:30 is 750, 010 is 8
        return "a string (quote text YAML reads as a number)", lambda v: isinstance(v, str)
    if getattr(param.type, "yaml_mapping", False):  # a JSON object on the command line (chat-template-kwargs)
        return "a YAML mapping or a JSON object as a string", lambda v: isinstance(v, (dict, str))
    if getattr(param.type, "yaml_list", False):  # a comma list on the command line (bench's beams: [1, 2, 4])
        return "a YAML list or a comma-separated string", lambda v: isinstance(v, (str, int, list)) and \
            not isinstance(v, bool)
    return "a string", lambda v: isinstance(v, (str, int, float)) and not isinstance(v, bool)


# Flags a preset may not set: `force: true` would replace the outputs of every run the preset drives, and
# `dry-run: true` would skip the work of every run, with no off form on the command line to undo either.
COMMAND_LINE_ONLY = frozenset({"force", "dry_run"})


def _to_default(keys: dict[str, tuple[click.Parameter, bool]], key: str, value, shown: str = "") -> tuple[str, object]:
    """(parameter name, default) for one preset field; `shown` names it in errors (`run.max-output-len`)."""
    param, invert = keys[_key(key)]
    key = shown or key
    if param.name in COMMAND_LINE_ONLY:
        raise ConfigError(f"preset field '{key}' is for the command line only (a preset would apply it to every run): "
                          f"drop it and pass --{_key(param.name)} when you mean it")
    if value is None:  # click would take None over the option's own default
        raise ConfigError(f"preset field '{key}' is null: remove it to keep the default, or give a value")
    if invert:
        if not isinstance(value, bool):
            raise ConfigError(f"preset field '{key}' is a flag: write true or false")
        return param.name, not value
    need, ok = _yaml_type(param)
    if param.nargs == -1 and isinstance(value, str):  # pass-through arguments (build's trtllm-build args)
        try:
            value = shlex.split(value)  # as a shell splits them after `--`: one string was one argv item
        except ValueError as e:  # an unclosed quote
            raise ConfigError(f"preset field '{key}' is {value!r}, which a shell cannot split ({e}): close its quotes, "
                              f"or write a YAML list") from None
    many = param.multiple or param.nargs == -1
    if many:  # a YAML list; one value is a list of one
        if not all(ok(v) for v in (value if isinstance(value, list) else [value])):
            each = "a YAML list, each item " if isinstance(value, list) else ""
            raise ConfigError(f"preset field '{key}' is {value!r}: write {each}{need}")
        value = value if isinstance(value, list) else [value]
    elif not ok(value):
        raise ConfigError(f"preset field '{key}' is {value!r}: write {need}")
    for item in value if many else [value]:
        _check_value(param, key, item, many)
    return param.name, value


def _check_value(param: click.Parameter, key: str, value, item: bool = False) -> None:
    """A choice, a number's range or a device name, checked when the preset loads: `run: {max-output-len: 0}` stopped
    the example scripts' last step after convert and build had run, as "Invalid value for '--max-output-len'", a flag
    nobody typed (and `bench: {device: gpu}` stopped bench so). Paths wait for their command (an earlier step may
    make the folder)."""
    if isinstance(param.type, (click.Path, click.File)):
        return
    try:
        param.type.convert(value, param, None)
    except click.BadParameter as e:
        raise ConfigError(f"preset field '{key}' {'holds' if item else 'is'} {value!r}: {e.message.rstrip('.')}") \
            from None


def _section_meant(key: str, configured: set[str], commands: set[str]) -> str:
    """What a top-level mapping `key` that is no section may have meant: the command named closest (difflib's own
    cutoff: at 0.5 `trian` was `run` and `tokenizer` `convert`), one taking no --config said to be so, else the
    sections."""
    close = difflib.get_close_matches(key, sorted(commands | configured), n=1)
    if close and close[0] not in configured:
        return f"did you mean `{close[0]}:`? `{close[0]}` takes no --config: pass its options on the command line"
    return f"did you mean `{close[0]}:`?" if close else f"sections are {', '.join(sorted(configured))}"


def resolve(preset: dict, command_name: str, command: click.Command, sections: Iterable[str] = KNOWN_SECTIONS,
            other_commands: Callable[[], Iterable[click.Command]] = lambda: ()) -> dict:
    """The `default_map` for one command: shared keys it has, then its section (which wins).

    Shared keys that this command lacks must be options of some other command (`other_commands` is called only
    when the preset has shared keys), and each shared value must pass every command reading it, i.e. taking it
    with a section that does not set it (one this command reads but another refuses is named with the section to
    move it to); section keys must all be this command's options.
    """
    keys = option_keys(command)
    commands = set(sections) | {command_name}  # with those that take no --config, for a misspelt section's name
    shared, sections = split_preset(preset, commands)
    defaults: dict = {}
    others = list(other_commands()) if shared else []
    foreign = [k for k in shared if _key(str(k)) not in keys]
    known = set().union(*(option_keys(c) for c in others))
    unknown = [k for k in foreign if _key(str(k)) not in known]
    if unknown:
        if isinstance(shared[unknown[0]], dict):  # a misspelt section: the fields' list would not name the sections
            raise ConfigError(f"preset field '{unknown[0]}' is a mapping but no command's section: "
                              f"{_section_meant(str(unknown[0]), {command_name, *(c.name for c in others)}, commands)}")
        shown = set().union(shown_names(command), *(shown_names(c) for c in others))
        raise ConfigError(f"preset field '{unknown[0]}' is not an option of any command; valid top-level fields: "
                          f"{name_list(shown, limit=60)}")
    section = sections.get(command_name, {})

    def readers(key: str) -> list[click.Command]:  # the other commands using the top-level `key`
        return [o for o in others if _reads(o, sections.get(o.name, {}), key)]

    for key in section:
        if _key(str(key)) not in keys:
            raise ConfigError(f"preset field '{command_name}.{key}' is not an option of '{command_name}'; valid: "
                              f"{name_list(shown_names(command), limit=60)}")
    used = {k: v for k, v in shared.items() if _reads(command, section, str(k))}  # not those its section sets
    for prefix, fields, mapping in (("", used, preset), (f"{command_name}.", section, section)):  # the section wins
        fields = _overridden(fields, mapping, keys)
        given: dict = {}
        for key, value in fields.items():
            if _key(str(key)) not in keys:
                continue
            try:
                name, value = _to_default(keys, str(key), value, f"{prefix}{key}")
            except ConfigError as e:
                raise ConfigError(f"{e}{_taken_by(readers(str(key)), str(key), value) if not prefix else ''}") from None
            _given_once(given, name, f"{prefix}{key}")  # `max_output_len` and `max-output-len`, as the command line
            defaults[name] = value
    # shared values now (this command's passed above), as the other commands using them (their sections leave them)
    # read them: `max-batch-size: 12.5` stopped build only after convert, and `device: cuda:1` (bench's; convert, run
    # and serve take cpu or cuda) passed bench alone
    for other in others:
        other_keys = option_keys(other)
        other_given: dict = {}  # `tp_size` and `tp-size` at the top level: convert's, so build refuses them too
        for key, value in _overridden(shared, preset, other_keys).items():
            if not _reads(other, sections.get(other.name, {}), str(key)):  # not its, or its section sets it
                continue
            try:
                name, _ = _to_default(other_keys, str(key), value)
            except ConfigError as e:
                where = f"{e} for `{other.name}`, which reads the top-level fields too"
                if not _reads(command, section, str(key)):
                    raise ConfigError(f"{where}{_taken_by(readers(str(key)), str(key), value)}") from None
                raise ConfigError(f"{where}: move it under `{command_name}:`") from None
            # `output` and `output-dir` (build's) are both convert's --output: named as convert's, not build's
            _given_once(other_given, name, str(key), f" of `{other.name}` (--{_shown(other_keys[_key(str(key))][0])}), "
                        f"which reads the top-level fields too: give it once, or put each under the section of the "
                        f"command it is for")
    return defaults


def _overridden(fields: dict, mapping: dict, keys: dict[str, tuple[click.Parameter, bool]]) -> dict:
    """`fields` (of the preset's `mapping`: a _Mapping, or a dict made otherwise, with no merged keys) without the keys
    a merge key brought in whose option (`keys`: option_keys) a key written beside the merge sets under another
    spelling (`tp-size` under a written `tp_size`, `greedy` under `no-greedy`): YAML overrides one spelled alike. A
    merged mapping is read so first, then merged on (`_Mapping.merges`). Two spellings both written, or both merged
    (from two mappings), are left to be refused."""
    def option(key) -> str | None:
        return keys[_key(str(key))][0].name if _key(str(key)) in keys else None

    def kept(written: frozenset, merged: tuple) -> set:
        options = {option(k) for k in written} - {None}
        return set(written).union(*({k for k in kept(*sub) if option(k) is None or option(k) not in options}
                                    for sub in merged))

    merges = getattr(mapping, "merges", ())
    keep = kept(*merges) if merges else set(fields)
    return {k: v for k, v in fields.items() if k in keep}


def _given_once(given: dict, name: str, field: str, fix: str = ": give it once") -> None:
    """Record that preset `field` sets parameter `name`; a second field setting it (another spelling) is refused,
    with `fix` (another command's option: that command named)."""
    if name in given:
        raise ConfigError(f"preset fields '{given[name]}' and '{field}' set the same option{fix}")
    given[name] = field


def _reads(command: click.Command, section: dict, key: str) -> bool:
    """Whether `command` uses the top-level `key`: it takes the option, and its own `section` does not set it (under
    any of its names: `dev` for `device`, `no-compile` for `compile`)."""
    keys = option_keys(command)
    set_here = {keys[_key(str(k))][0].name for k in section if _key(str(k)) in keys}
    return _key(key) in keys and keys[_key(key)][0].name not in set_here


def _taken_by(commands: Iterable[click.Command], key: str, value) -> str:
    """' (`acceptance` and `bench` take it: move it under `acceptance:` and `bench:`)': the `commands` whose option
    `key` takes the top-level `value` another command refuses ('' when none does)."""
    takers = []
    for command in commands:
        keys = option_keys(command)
        if _key(key) in keys:
            with contextlib.suppress(ConfigError):
                _to_default(keys, key, value)
                takers.append(command.name)
    if not takers:
        return ""
    takers.sort()
    return (f" ({' and '.join(f'`{t}`' for t in takers)} take{'s' if len(takers) == 1 else ''} it: move it under "
            f"{' and '.join(f'`{t}:`' for t in takers)})")


def _group(ctx: click.Context) -> click.Group | None:
    parent = ctx.parent
    return parent.command if parent is not None and isinstance(parent.command, click.Group) else None


def _sibling_commands(ctx: click.Context) -> Callable[[], list[click.Command]]:
    def load() -> list[click.Command]:
        parent = ctx.parent
        group = parent.command if parent is not None else None
        if not isinstance(group, click.Group):
            return []
        found = []
        for name in group.list_commands(parent):
            if name == ctx.info_name:
                continue
            try:
                cmd = group.get_command(parent, name)
            except ImportError as e:  # a command that cannot be imported here must not stop another command
                log.warning("cannot load command %s to check preset keys: %s", name, e)
                continue
            if cmd is not None and takes_config(cmd):
                found.append(cmd)
        return found
    return load


def takes_config(command: click.Command) -> bool:
    return any(p.name == "config" for p in command.params)


def _load_into_context(ctx: click.Context, param: click.Parameter, value):
    if value is None or ctx.resilient_parsing:
        return value
    name = ctx.info_name or ctx.command.name
    group = _group(ctx)
    preset = load_preset(value)
    sections = KNOWN_SECTIONS | set(group.list_commands(ctx.parent) if group else ())
    try:
        others = []
        for section in sorted(k for k in preset if k in sections and k != name):
            try:
                command = group.get_command(ctx.parent, section) if group else None
            except ImportError as e:  # a command that cannot be imported here must not stop another command
                log.warning("cannot load command %s to check its preset section: %s", section, e)
                continue
            if command is not None and not takes_config(command):
                raise ConfigError(f"preset section '{section}': `{section}` takes no --config; remove the section "
                                  f"and pass its options on the command line")
            if command is not None:
                others.append((section, command))
        defaults = resolve(preset, name, ctx.command, sections, _sibling_commands(ctx))
        # the other commands' sections now, not when their turn comes: a typo under `run:` stopped an example script
        # only after convert and build had run (hours for a 70B base)
        for section, command in others:
            resolve({section: preset[section]}, section, command, sections)
    except ConfigError as e:  # which file: a script passes several presets, a user edits one of them
        raise ConfigError(f"preset {value}: {str(e).removeprefix('preset ')}") from None
    ctx.default_map = {**(ctx.default_map or {}), **defaults}
    # what the command's own section sets, for `one_of`: its `engine-dir` beats a top-level `checkpoint-dir`
    ctx.meta[_SECTION_META] = set(resolve({name: preset.get(name) or {}}, name, ctx.command, sections))
    log.info("preset %s sets %s for %s", value, ", ".join(sorted(defaults)) or "nothing", name)
    return value


def one_of(ctx: click.Context, **values):
    """The values of rival options (e.g. --checkpoint-dir / --engine-dir) after the command line beat the preset:
    one given on the command line drops the preset's others, and one in the command's section drops a top-level
    one (the section wins over the shared keys)."""
    from click.core import ParameterSource

    typed = [k for k, v in values.items() if v and ctx.get_parameter_source(k) == ParameterSource.COMMANDLINE]
    if typed:
        return tuple(v if k in typed else None for k, v in values.items())
    section = [k for k, v in values.items() if v and k in ctx.meta.get(_SECTION_META, ())]
    if section:
        return tuple(v if k in section else None for k, v in values.items())
    return tuple(values.values())


def preset_then_typed(ctx: click.Context, param: click.Parameter, value: tuple | dict) -> tuple | dict:
    """Callback of an option holding many settings of their own (build's trtllm-build arguments after `--`, the chat
    template's variables): the preset's, then the command line's over them. trtllm-build's argparse takes the last
    of a flag given twice, and a typed variable replaces the preset's of that name (as a serve request's
    chat_template_kwargs do serve's), so what is typed wins setting by setting and the preset's others stay: the
    typed value replacing the preset's whole dropped those in silence. The value as typed is kept (`typed_alone`)."""
    from click.core import ParameterSource

    preset = ctx.lookup_default(param.name, call=False)
    typed = ctx.get_parameter_source(param.name) == ParameterSource.COMMANDLINE
    if preset:
        preset = ctx.meta.setdefault(_PRESET_META, {})[param.name] = \
            param.type_cast_value(ctx, preset) if typed else value
    if not typed:
        return value
    ctx.meta.setdefault(_TYPED_META, {})[param.name] = value
    if not preset:
        return value
    return {**preset, **value} if isinstance(value, dict) else (*preset, *value)


def typed_alone(ctx: click.Context, name: str, empty: tuple | dict) -> tuple | dict:
    """The value of a `preset_then_typed` option as typed on the command line, the preset's left out (`empty`: not
    typed): where a preset's settings do not apply, the typed ones alone are checked and used."""
    return ctx.meta.get(_TYPED_META, {}).get(name, empty)


def preset_setting(meta: dict, name: str, key: str) -> str | None:
    """How a refusal names setting `key` of a `preset_then_typed` mapping option `name`, where the --config preset's
    field set it and nothing typed overrode it (`the --config preset's chat-template-kwargs`); None otherwise. Read
    from the context's `meta` (shared by a command's contexts): the group's error handling runs after the command's
    context has closed."""
    if key in meta.get(_PRESET_META, {}).get(name, {}) and key not in meta.get(_TYPED_META, {}).get(name, {}):
        return f"the --config preset's {_key(name)}"
    return None


def as_given(ctx: click.Context, name: str) -> str:
    """How a refusal names the option of parameter `name`: its flag as typed (`--plot`), or the --config preset's
    field that set it (`the --config preset's plot`): a preset's `draft_lens: 5` was refused as `--draft-lens 5`, a
    flag nobody typed."""
    from click.core import ParameterSource

    param = next(p for p in ctx.command.params if p.name == name)
    if ctx.get_parameter_source(name) == ParameterSource.DEFAULT_MAP:
        return f"the --config preset's {_shown(param)}"
    return f"--{_shown(param)}"


def config_option(command: Callable) -> Callable:
    """Add `--config FILE` to a click command: the preset's values become defaults; command-line flags win.

    Put it below `@click.command(...)` like any option. Errors in the preset raise `ConfigError` (exit 2).
    """
    return click.option(
        "--config", type=click.Path(dir_okay=False), is_eager=True, expose_value=False,
        callback=_load_into_context,
        help="YAML preset: shared keys plus a section per command (convert/build/run/serve/bench/acceptance); flags win.",
    )(command)
