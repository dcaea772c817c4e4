"""`--config` presets: values become defaults, flags win, unknown keys are one-line errors; every shipped preset
names only real options of its commands."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from redrafter_trt.errors import ConfigError
from redrafter_trt.presets import KNOWN_SECTIONS, config_option, load_preset, option_keys

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


@click.group()
def group():
    pass


@group.command()
@config_option
@click.option("--tp-size", type=int, default=1)
@click.option("--greedy/--no-greedy", default=True)
@click.option("--output", default="out")
@click.argument("extra", nargs=-1)
def convert(tp_size, greedy, output, extra):
    click.echo(f"{tp_size} {greedy} {output} {list(extra)}")


@group.command()
@config_option
@click.option("--tp", type=int, default=1)
@click.option("--output", default="out")
def run(tp, output):
    click.echo(f"{tp} {output}")


def invoke(tmp_path, text: str, *args: str):
    path = tmp_path / "preset.yaml"
    path.write_text(text)
    return CliRunner().invoke(group, [args[0], "--config", str(path), *args[1:]])


PRESET = """
output: shared
tp: 3
convert:
  tp_size: 4
  no-greedy: true
  extra: [--a, b]
run: {tp: 2}
"""


def test_section_wins_over_shared_and_flags_win_over_both(tmp_path):
    assert invoke(tmp_path, PRESET, "convert").output == "4 False shared ['--a', 'b']\n"
    assert invoke(tmp_path, PRESET, "run").output == "2 shared\n"
    assert invoke(tmp_path, PRESET, "convert", "--tp-size", "8", "--greedy", "--output", "x").output == \
        "8 True x ['--a', 'b']\n"


def test_shared_key_applies_only_where_it_is_an_option(tmp_path):
    assert invoke(tmp_path, "tp: 5\ntp-size: 2\n", "run").output == "5 out\n"
    assert invoke(tmp_path, "tp: 5\ntp-size: 2\n", "convert").output == "2 True out []\n"


def test_config_given_after_flags_still_loses_to_them(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("run: {tp: 2}\n")
    assert CliRunner().invoke(group, ["run", "--tp", "7", "--config", str(path)]).output == "7 out\n"


@pytest.mark.parametrize("text", ["build: {bogus: 1}\n", "bogus: 1\n"])
def test_the_valid_fields_listed_leave_out_the_command_lines_own(tmp_path, text):
    """A review: an unknown field's list of valid ones offered force and dry-run, which a preset may not set."""
    from redrafter_trt.cli import main

    path = tmp_path / "p.yaml"
    path.write_text(text)
    result = CliRunner().invoke(main, ["build", "--config", str(path)])
    assert result.exit_code == 2 and "max-batch-size" in result.output, result.output
    assert "force" not in result.output and "dry-run" not in result.output, result.output


@pytest.mark.parametrize("text, field", [
    ("convert: {tp_sise: 4}\n", "convert.tp_sise"),
    ("tpp: 3\n", "tpp"),
])
def test_unknown_field_is_named(tmp_path, text, field):
    result = invoke(tmp_path, text, "convert")
    assert isinstance(result.exception, ConfigError)
    message = str(result.exception)
    assert f"'{field}'" in message and "tp-size" in message and "\n" not in message


@pytest.mark.parametrize("text, says", [
    ("convrt: {tp-size: 2}\n", "'convrt' is a mapping but no command's section: did you mean `convert:`?"),
    ("benchmark: {beams: [1, 2]}\n", "'benchmark' is a mapping but no command's section: did you mean `bench:`?"),
    ("gpu: {device: cuda}\n", "'gpu' is a mapping but no command's section: sections are acceptance, bench, build, "
                               "convert, run, serve"),
    # a review: at difflib's cutoff 0.5 these were 'did you mean `run:`?' and 'did you mean `convert:`?'
    ("trian: {epochs: 1}\n", "'trian' is a mapping but no command's section: did you mean `train:`? `train` takes "
                             "no --config: pass its options on the command line"),
    ("tokenizer: {dir: t}\n", "'tokenizer' is a mapping but no command's section: sections are acceptance, bench, "
                              "build, convert, run, serve"),
    ("quant: {algo: fp8}\n", "'quant' is a mapping but no command's section: sections are acceptance, bench, "
                             "build, convert, run, serve"),
])
def test_a_misspelt_section_is_named_as_a_section(tmp_path, text, says):
    """A misspelt section (`convrt:`, `benchmark:`) was called a field that 'is not an option of any command', then
    listed the 50 top-level fields, none of them a section: the section it meant is named instead."""
    from redrafter_trt.cli import main

    path = tmp_path / "p.yaml"
    path.write_text(text)
    for command in ("convert", "run", "serve"):
        result = CliRunner().invoke(main, [command, "--config", str(path)])
        assert result.exit_code == 2 and says in result.output, result.output


@pytest.mark.parametrize("text, first, second", [
    ("convert: {tp_size: 4, tp-size: 2}\n", "convert.tp_size", "convert.tp-size"),
    ("convert: {greedy: true, no-greedy: true}\n", "convert.greedy", "convert.no-greedy"),
    ("tp_size: 4\ntp-size: 2\n", "tp_size", "tp-size"),
])
def test_one_option_under_two_spellings_is_refused(tmp_path, text, first, second):
    """As on the command line: the last spelling must not win silently."""
    result = invoke(tmp_path, text, "convert")
    assert isinstance(result.exception, ConfigError), result.output
    assert f"'{first}' and '{second}' set the same option" in str(result.exception)


def test_one_top_level_option_under_two_spellings_stops_a_command_that_does_not_take_it(tmp_path):
    """`tp_size: 4` and `tp-size: 2` at the top level are convert's: `run` (which has no --tp-size) passed them
    silently, though a typo at the top level stops every command reading the preset."""
    result = invoke(tmp_path, "tp_size: 4\ntp-size: 2\n", "run")
    assert isinstance(result.exception, ConfigError), result.output
    assert "'tp_size' and 'tp-size' set the same option" in str(result.exception)


def test_flag_half_needs_a_boolean(tmp_path):
    result = invoke(tmp_path, "convert: {no-greedy: maybe}\n", "convert")
    assert isinstance(result.exception, ConfigError) and "no-greedy" in str(result.exception)


# a list or a mapping as a key (`[a]: 1`) was a TypeError traceback from the check for keys given twice; a fuzzing
# review: lists nested past the recursion limit (RecursionError), a number past int()'s 4300 digits or a date that is
# none (ValueError) were tracebacks too
@pytest.mark.parametrize("text", ["[1, 2]\n", "a: [\n", "[a]: 1\n", "? [a]\n: 1\n", "run:\n  {a: 1}: 2\n",
                                  pytest.param("a: " + "[" * 5000, id="deep"),
                                  pytest.param("a: 1" + "0" * 5000, id="big"), "a: 2025-13-01"])
def test_bad_yaml_is_a_config_error(tmp_path, text):
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match="preset"):
        load_preset(path)


def test_missing_preset_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read .*absent.yaml.*--config"):
        load_preset(tmp_path / "absent.yaml")
    with pytest.raises(ConfigError, match="^--config is empty: pass the path of a YAML preset"):  # was "cannot read  (Is
        load_preset("")  # a directory)": Path("") is the working folder


def test_a_required_option_the_preset_leaves_out_says_where_to_add_it(tmp_path):
    """configs/smollm2-135m-cpu.yaml leaves --tokenizer-dir to the command line (its base lives in the cache):
    `run --config` with it said only "Missing option '--tokenizer-dir'"."""
    from redrafter_trt.cli import main

    preset = Path(__file__).parent.parent / "configs" / "smollm2-135m-cpu.yaml"
    result = CliRunner().invoke(main, ["run", "--config", str(preset), "--input-text", "hi"])
    assert result.exit_code == 2 and result.stderr.strip() == (
        "error: Missing option '--tokenizer-dir' / '--tokenizer_dir': the preset does not set it either; pass it, or add "
        "`tokenizer-dir:` to the preset (see 'main run --help')")
    plain = CliRunner().invoke(main, ["run", "--input-text", "hi"])
    assert plain.exit_code == 2 and "preset" not in plain.stderr


def test_cli_turns_preset_error_into_exit_2(tmp_path):
    from redrafter_trt.cli import main

    if main.get_command(None, "build") is None:
        pytest.skip("build command not present")
    path = tmp_path / "p.yaml"
    path.write_text("build: {max-batch-sise: 4}\n")
    result = CliRunner().invoke(main, ["build", "--config", str(path), "--dry-run"])
    assert result.exit_code == 2
    assert "'build.max-batch-sise'" in result.output and len(result.output.strip().splitlines()) == 1
    assert f"preset {path}: " in result.output  # the key and the file it is in


@pytest.mark.parametrize("text, needle", [
    ("run: {max-output-len: 12.5}", "'run.max-output-len' is 12.5: write a whole number"),
    ("run: {max-output-len: true}", "'run.max-output-len' is True: write a whole number"),
    ("build: {checkpoint-dir: [ck], output-dir: e}", "'build.checkpoint-dir' is ['ck']: write a string"),
    # a review: a path YAML reads as a number (a folder named 123, or 2025.10) reached the command as an int or a
    # float, a TypeError traceback from os.fspath; the command line gives the string
    ("build: {checkpoint-dir: 123, output-dir: e}", "'build.checkpoint-dir' is 123: write a string (quote a path"),
    ("run: {checkpoint-dir: ck, tokenizer-dir: 2025.10}", "'run.tokenizer-dir' is 2025.1: write a string (quote"),
    ("run: {chat: 1}", "'run.chat' is 1: write true or false"),
    # a review: run's temperature type was no float type here, so '0.5' (a string) passed and true was told
    # "write a string"
    ("run: {temperature: '0.5'}", "'run.temperature' is '0.5': write a number"),
    ("run: {temperature: true}", "'run.temperature' is True: write a number"),
    ("run: {input-text: [{a: 1}]}", "write a YAML list, each item a string"),
    # a review: free text YAML reads as a number reached the command as str() of that number: a prompt 12:30 was
    # '750' (YAML 1.1's base 60), a model name 1.10 was '1.1', a host 010 was '8'
    ("run: {input-text: 12:30}", "'run.input-text' is 750: write a string (quote text YAML reads as a number)"),
    ("run: {input-text: [hi, 1.10]}", "'run.input-text' is ['hi', 1.1]: write a YAML list, each item a string (quote"),
    ("serve: {model-name: 1.10}", "'serve.model-name' is 1.1: write a string (quote text YAML reads as a number)"),
    ("serve: {host: 010}", "'serve.host' is 8: write a string (quote"),
    # a range or a choice was click's "Invalid value for '--max-output-len'", a flag nobody typed
    ("run: {max-output-len: 0}", "'run.max-output-len' is 0: 0 is not in the range x>=1"),
    ("run: {temperature: -0.5}", "'run.temperature' is -0.5: -0.5 is not a finite number >= 0"),
    ("build: {gemm-plugin: fp16}", "'build.gemm-plugin' is 'fp16': 'fp16' is not one of"),
    ("train: {bogus: 1}\nrun: {chat: true}", "`train` takes no --config"),
    # null took the place of the option's default: tracebacks in run, a silently dropped --max_batch_size in build
    ("run: {max-output-len: null}", "'run.max-output-len' is null: remove it to keep the default"),
    ("run: {chat: true}\ndevice: null", "'device' is null"),
    ("build: {max-batch-size: ~}", "'build.max-batch-size' is null"),
    # PyYAML keeps the last of two equal keys: the README promises the command line's refusal
    ("run:\n  max-output-len: 2\n  max-output-len: 5", "'max-output-len' is given twice in one section (line 3)"),
])
def test_preset_values_have_the_options_types(tmp_path, text, needle):
    """Checked as YAML wrote them: click alone would turn 12.5 into 12 and a list path into a traceback."""
    from redrafter_trt.cli import main

    path = tmp_path / "p.yaml"
    path.write_text(text + "\n")
    command = text.split(":")[0] if not text.startswith("train") else "run"
    result = CliRunner().invoke(main, [command, "--config", str(path)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], result.output
    assert f"preset {path}: " in lines[0]  # which file: a script may pass several presets


@pytest.mark.parametrize("command", ["run", "bench", "acceptance", "convert"])
@pytest.mark.parametrize("value, needle", [
    ("{day: 2025-01-01}", '"day" is 2025-01-01 (a YAML date), which JSON cannot write'),
    ("{at: 2025-01-01 10:00:00}", '"at" is 2025-01-01 10:00:00 (a YAML date), which JSON cannot write'),
    ("{tags: !!set {a}}", '"tags" is a YAML set, which JSON cannot write'),
    ("{blob: !!binary aGk=}", '"blob" is YAML binary, which JSON cannot write'),
    ("{deep: [1, {when: 2025-01-01}]}", '"deep" holds 2025-01-01 (a YAML date), which JSON cannot write'),
    ("{loop: &l [*l]}", '"loop" holds itself (a YAML alias inside its own anchor), which JSON cannot write'),
])
def test_a_presets_template_variable_json_cannot_write_is_refused_when_it_loads(tmp_path, command, value, needle):
    """A review: a preset's chat-template-kwargs holding a value JSON cannot write (a YAML date, !!set, !!binary) went
    through; `run --output-json` did all its work, then died with a TypeError traceback writing the file (the
    producer block records the variables), and bench's and acceptance's reports so. Refused when the preset loads,
    under every command (convert here, before hours of converting), in one line naming the field (exit 2)."""
    from redrafter_trt.cli import main

    path = tmp_path / "p.yaml"
    path.write_text(f"run:\n  chat: true\n  chat-template-kwargs: {value}\n")
    result = CliRunner().invoke(main, [command, "--config", str(path), "--help"])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: preset {path}: field 'run.chat-template-kwargs' "), lines
    assert needle in lines[0] and "quote it" in lines[0], lines
    path.write_text(f"chat-template-kwargs: {value}\n")  # top level: bench's, acceptance's and train's too
    result = CliRunner().invoke(main, [command, "--config", str(path), "--help"])
    assert result.exit_code == 2 and "field 'chat-template-kwargs' " in result.output and needle in result.output, \
        result.output
    path.write_text("run:\n  chat: true\n  chat-template-kwargs: {day: '2025-01-01', n: .nan, m: {1: x}}\n")
    assert CliRunner().invoke(main, [command, "--config", str(path), "--help"]).exit_code == 0  # quoted: text


@pytest.mark.parametrize("text, needle", [
    ("run: {tpp: 2}\n", "'run.tpp' is not an option of 'run'"),
    ("run: {tp: 2.5}\n", "'run.tp' is 2.5: write a whole number"),
    ("run: {tp: null}\n", "'run.tp' is null"),
])
def test_another_commands_section_is_checked_up_front(tmp_path, text, needle):
    """`convert --config` with a typo under `run:` converted (hours for a 70B base, then build) and only `run`, the
    example scripts' last step, refused the preset."""
    result = invoke(tmp_path, "convert: {tp-size: 2}\n" + text, "convert")
    assert isinstance(result.exception, ConfigError) and needle in str(result.exception), result.output
    assert invoke(tmp_path, "convert: {tp-size: 2}\nrun: {tp: 3}\n", "convert").output == "2 True out []\n"


@pytest.mark.parametrize("text, needle", [
    ("tp: 2.5\n", "'tp' is 2.5: write a whole number"),
    ("tp: null\n", "'tp' is null"),
])
def test_a_shared_key_of_another_command_is_checked_up_front(tmp_path, text, needle):
    """A review: `max-batch-size: 12.5` at the top level was checked only by `build`, after `convert` had run with
    the preset (hours for a 70B base), though the same line under `build:` stopped `convert` at once."""
    result = invoke(tmp_path, "convert: {tp-size: 2}\n" + text, "convert")
    assert isinstance(result.exception, ConfigError) and needle in str(result.exception), result.output
    assert invoke(tmp_path, "convert: {tp-size: 2}\ntp: 3\n", "convert").output == "2 True out []\n"


def test_yaml_merge_keys_share_a_section(tmp_path):
    """`serve: {<<: *run}` is YAML safe_load reads (a key beside the merge overrides it): the loader that refuses
    keys given twice called it "not valid YAML at line 4" (no constructor for the merge key)."""
    text = "convert: &c\n  tp-size: 2\n  output: o\nrun:\n  <<: *c\n  tp: 7\n  output: p\n"
    assert load_preset_text(tmp_path, text)["run"] == {"tp-size": 2, "output": "p", "tp": 7}
    assert invoke(tmp_path, "convert: &c\n  output: x\nrun:\n  <<: *c\n  tp: 6\n", "run").output == "6 x\n"
    result = invoke(tmp_path, "base: &b {tp: 1}\nrun:\n  <<: *b\n  tp: 2\n  tp: 3\n", "run")
    assert isinstance(result.exception, ConfigError) and "'tp' is given twice" in str(result.exception)


def test_a_key_beside_a_merge_overrides_it_under_any_spelling(tmp_path):
    """A review: `tp_size: 4` written beside a merge bringing `tp-size: 2` was refused as the same option given twice,
    where YAML overrides a merged key spelled alike: the written one wins under any spelling of its option (a `no-x`
    for a merged `x` too). Two spellings written side by side, or both merged, are still refused."""
    assert invoke(tmp_path, "convert:\n  <<: &c {tp-size: 2}\n  tp_size: 4\n", "convert").output == "4 True out []\n"
    text = "convert:\n  <<: &c {greedy: true, tp_size: 2}\n  no-greedy: true\n  TP-SIZE: 3\n"
    assert invoke(tmp_path, text, "convert").output == "3 False out []\n"
    assert invoke(tmp_path, "tp_size: 5\n<<: {tp-size: 2}\n", "convert").output == "5 True out []\n"  # top level
    for text in ("convert:\n  <<: &c {output: x}\n  tp_size: 4\n  tp-size: 3\n",
                 "convert:\n  <<: [{tp_size: 4}, {tp-size: 3}]\n"):
        result = invoke(tmp_path, text, "convert")
        assert isinstance(result.exception, ConfigError), result.output
        assert "'convert.tp" in str(result.exception) and "set the same option" in str(result.exception)


def test_a_key_beside_a_merge_overrides_it_through_merges_of_merges(tmp_path):
    """A review: a mapping merged in (`<<: *run`) whose own key beside its merge overrode the same option spelled
    otherwise (`tp_size: 4` over a merged `tp-size: 2`) brought both spellings into the mapping merging it, refused as
    the same option given twice: each mapping is read as its own keys override its merged ones, then merged on."""
    inner = "{<<: {tp-size: 2, greedy: true}, tp_size: 4, no-greedy: true}"
    assert invoke(tmp_path, f"convert:\n  <<: {inner}\n  output: o\n", "convert").output == "4 False o []\n"
    chain = f"convert:\n  <<: {{<<: {inner}, TP-SIZE: 6}}\n"  # three deep: the nearest written one wins
    assert invoke(tmp_path, chain, "convert").output == "6 False out []\n"
    result = invoke(tmp_path, "convert:\n  <<: [{<<: {tp-size: 2}, tp_size: 4}, {tp-size: 3}]\n", "convert")
    assert isinstance(result.exception, ConfigError), result.output  # two merged mappings: still refused
    assert "set the same option" in str(result.exception)
    # a mapping merging itself (YAML lets an alias name the mapping it is in): merged once, as PyYAML does
    assert invoke(tmp_path, "convert: &a\n  <<: *a\n  tp_size: 2\n", "convert").output == "2 True out []\n"


def load_preset_text(tmp_path, text: str) -> dict:
    path = tmp_path / "merge.yaml"
    path.write_text(text)
    return load_preset(path)


def test_an_empty_section_is_an_empty_section(tmp_path):
    """`run:` with nothing under it was called "not an option of any command"."""
    assert invoke(tmp_path, "run:\ntp: 5\n", "run").output.split() == ["5", "out"]


def test_command_line_folder_beats_the_presets_rival(tmp_path):
    """A preset serving --checkpoint-dir, --engine-dir on the command line: the engine is served (its checks run)."""
    from redrafter_trt.cli import main

    path = tmp_path / "p.yaml"
    path.write_text(f"serve: {{checkpoint-dir: {tmp_path / 'ck'}}}\n")
    result = CliRunner().invoke(main, ["serve", "--config", str(path), "--engine-dir", str(tmp_path / "eng"),
                                       "--tokenizer-dir", str(tmp_path), "--dry-run"])
    assert result.exit_code == 2 and f"engine folder {tmp_path / 'eng'} does not exist" in result.output, result.output


@pytest.mark.parametrize("command", ["serve", "run"])
def test_a_sections_folder_beats_a_top_level_rival(tmp_path, command):
    """A top-level checkpoint-dir (build's and run's, as the presets module shows) beside `serve: {engine-dir: E}`
    stopped with "pass exactly one of --checkpoint-dir and --engine-dir", though a section wins over shared keys."""
    from redrafter_trt.cli import main

    path = tmp_path / "p.yaml"
    path.write_text(f"checkpoint-dir: {tmp_path / 'ck'}\n{command}: {{engine-dir: {tmp_path / 'eng'}}}\n")
    args = ["--dry-run"] if command == "serve" else ["--input-text", "hi"]
    result = CliRunner().invoke(main, [command, "--config", str(path), "--tokenizer-dir", str(tmp_path), *args])
    assert result.exit_code == 2 and f"engine folder {tmp_path / 'eng'} does not exist" in result.output, result.output
    path.write_text(f"{command}: {{engine-dir: {tmp_path / 'eng'}, checkpoint-dir: {tmp_path / 'ck'}}}\n")
    result = CliRunner().invoke(main, [command, "--config", str(path), "--tokenizer-dir", str(tmp_path), *args])
    assert result.exit_code == 2 and "pass exactly one of" in result.output, result.output


# ---- shipped presets -------------------------------------------------------------------------------------------

def _commands():
    from redrafter_trt.cli import COMMANDS, main

    found = {}
    for name in sorted(KNOWN_SECTIONS | set(COMMANDS)):
        module = COMMANDS.get(name, "").split(":")[0]
        if module and importlib.util.find_spec(module) is not None:
            found[name] = main.get_command(None, name)
    return found


PRESETS = sorted(CONFIGS.glob("*.yaml"))


def test_presets_ship():
    assert {p.stem for p in PRESETS} >= {"vicuna-7b-v1.3", "llama-3.1-8b-instruct", "qwen2.5-7b-instruct-fp8",
                                         "llama-3.1-70b-instruct-tp4", "smollm2-135m-cpu", "qwen3-8b"}


@pytest.mark.parametrize("path", PRESETS, ids=[p.stem for p in PRESETS])
def test_shipped_preset_names_only_real_options(path):
    preset = load_preset(path)
    commands = _commands()
    all_keys = set().union(*(option_keys(c) for c in commands.values()))
    sections = {k for k, v in preset.items() if isinstance(v, dict)}
    assert sections <= {"convert", "build", "run", "serve"}, sections
    assert {"convert", "build", "run"} <= sections
    for section in sorted(sections):
        if section not in commands:
            continue  # that command module is not written yet
        keys = option_keys(commands[section])
        unknown = [k for k in preset[section] if str(k).replace("_", "-") not in keys]
        assert not unknown, f"{path.name}: {section}.{unknown} are not options of {section}"
    shared = [k for k in preset if k not in sections]
    if {"convert", "build", "run"} <= commands.keys():
        assert all(str(k).replace("_", "-") in all_keys for k in shared), shared


@pytest.mark.parametrize("path", PRESETS, ids=[p.stem for p in PRESETS])
def test_shipped_preset_drives_build_dry_run(path, tmp_path):
    """The preset's `build` section resolves against the real build command (no TensorRT-LLM needed)."""
    from redrafter_trt.presets import resolve

    commands = _commands()
    if "build" not in commands:
        pytest.skip("build command not present")
    defaults = resolve(load_preset(path), "build", commands["build"], set(commands) | KNOWN_SECTIONS,
                       lambda: [c for n, c in commands.items() if n != "build"])
    assert {"checkpoint_dir", "output_dir"} <= defaults.keys()


@pytest.mark.parametrize("args, argv", [("--tokens_per_block 64", ["--tokens_per_block", "64"]),
                                        (["--tokens_per_block", "64"], ["--tokens_per_block", "64"]),
                                        ("--log_level 'info'", ["--log_level", "info"])])
def test_a_presets_trtllm_build_arguments_split_as_a_shell_would(tmp_path, args, argv):
    """A review: `build: {trtllm-args: "--tokens_per_block 64"}` reached trtllm-build as one argv item (which
    it rejects), and past build's own guards; a string is now split as a shell splits what follows `--`."""
    from redrafter_trt.presets import resolve

    commands = _commands()
    defaults = resolve({"build": {"trtllm-args": args}}, "build", commands["build"], set(commands) | KNOWN_SECTIONS,
                       lambda: [c for n, c in commands.items() if n != "build"])
    assert defaults["trtllm_args"] == argv


def test_a_presets_trtllm_build_arguments_with_an_unclosed_quote_are_refused(tmp_path):
    """A review: an unclosed quote in the string was shlex's ValueError traceback (exit 1) from the preset's load."""
    from redrafter_trt.cli import main

    path = tmp_path / "p.yaml"
    path.write_text("build: {trtllm-args: \"--log_level 'info\"}\n")
    result = CliRunner().invoke(main, ["build", "--config", str(path), "--checkpoint-dir", "c", "--output-dir", "e"])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert result.output.strip() == (f"error: preset {path}: field 'build.trtllm-args' is \"--log_level 'info\", which "
                                     f"a shell cannot split (No closing quotation): close its quotes, or write a YAML "
                                     f"list")


def test_a_presets_trtllm_build_argument_may_be_a_yaml_number(tmp_path):
    """A review: `build: {trtllm-args: [--tokens_per_block, 64]}` (YAML reads 64 as a number) was an AttributeError
    traceback ('int' object has no attribute 'split') from the reserved-flag check; argv items are strings."""
    from redrafter_trt.cli import main

    path = tmp_path / "p.yaml"
    path.write_text("build: {trtllm-args: [--tokens_per_block, 64]}\n")
    result = CliRunner().invoke(main, ["build", "--config", str(path), "--checkpoint-dir", str(tmp_path / "c"),
                                       "--output-dir", "e", "--dry-run"])
    assert result.exit_code == 2 and result.output.startswith(f"error: checkpoint folder {tmp_path / 'c'} does not "
                                                               f"exist"), result.output


def test_a_presets_reserved_trtllm_build_argument_is_refused_before_convert(tmp_path, monkeypatch):
    """A review: `build: {trtllm-args: "--max_beam_width 2"}` (a flag ReDrafter fixes) passed `convert --config P`,
    which converted (hours for a 70B base), and only `build --config P` refused it."""
    from redrafter_trt import convert
    from redrafter_trt.cli import main

    def no_convert(*args, **kwargs):
        raise AssertionError("converted")

    monkeypatch.setattr(convert, "convert", no_convert)
    path = tmp_path / "p.yaml"
    path.write_text("convert: {base: b, drafter: d, output: o}\nbuild: {trtllm-args: '--max_beam_width 2'}\n")
    result = CliRunner().invoke(main, ["convert", "--config", str(path)])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert result.output.startswith(f"error: preset {path}: field 'build.trtllm-args' holds '--max_beam_width'")


@pytest.mark.parametrize("args, message", [
    ("'--max_beam_width 2'", "holds '--max_beam_width': a trtllm-build flag that build refuses: ReDrafter needs 1 "
                             "(its beams are draft beams, set at convert time); remove it and its value"),
    ("[--log_level, info, --max_seq_len, 4096]", "holds '--max_seq_len': a trtllm-build flag that build sets itself; "
                                                 "remove it and its value, and set max-seq-len under build: instead"),
    ("[--max_beam_w=2]", "holds '--max_beam_w=2': --max_beam_w is --max_beam_width, a trtllm-build flag that build "
                         "refuses: ReDrafter needs 1 (its beams are draft beams, set at convert time); remove it and "
                         "its value"),
    # a review: build does not set these, and the reason's own "leave it out" was followed by "remove it"
    ("[--multiple_profiles, enable]", "holds '--multiple_profiles': a trtllm-build flag that build refuses: "
                                      "TensorRT-LLM's ReDrafter model builds its own inputs for a single optimization "
                                      "profile (models/redrafter/model.py prepare_inputs), so trtllm-build fails with "
                                      "an IndexError after loading the weights; remove it and its value"),
    # a flag trtllm-build reads as store_true has no value to remove
    ("[--dry_run]", "holds '--dry_run': a trtllm-build flag that build refuses: trtllm-build's own dry run writes "
                    "no engine: use redrafter-trt build --dry-run to see the command; remove it"),
])
@pytest.mark.parametrize("command", ["convert", "build"])
def test_a_presets_reserved_trtllm_build_argument_names_the_field_and_the_fix(tmp_path, args, message, command):
    """A review: the refusal said "do not pass --max_beam_width to trtllm-build after '--'", though the preset has no
    '--' and the flag was in its build.trtllm-args; it now names that field and how to fix it there."""
    from redrafter_trt.cli import main

    path = tmp_path / "p.yaml"
    path.write_text(f"build: {{trtllm-args: {args}}}\n")
    result = CliRunner().invoke(main, [command, "--config", str(path)])
    assert result.exit_code == 2 and "after '--'" not in result.output, result.output
    assert result.output.strip() == f"error: preset {path}: field 'build.trtllm-args' {message}", result.output


@pytest.mark.parametrize("path", PRESETS, ids=[p.stem for p in PRESETS])
def test_shipped_preset_serves_one_folder(path):
    """`serve --config PRESET` gets exactly one of --checkpoint-dir / --engine-dir, and GPU presets serve the engine
    that `build` writes."""
    from redrafter_trt.presets import resolve

    commands = _commands()
    others = lambda name: (lambda: [c for n, c in commands.items() if n != name])  # noqa: E731
    preset = load_preset(path)
    serve = resolve(preset, "serve", commands["serve"], set(commands) | KNOWN_SECTIONS, others("serve"))
    assert ("checkpoint_dir" in serve) != ("engine_dir" in serve), serve
    if "engine_dir" in serve:
        build = resolve(preset, "build", commands["build"], set(commands) | KNOWN_SECTIONS, others("build"))
        assert serve["engine_dir"] == build["output_dir"] and "tokenizer_dir" in serve


ENGINE_PRESETS = [p for p in PRESETS if "engine-dir" in (load_preset(p).get("serve") or {})]


@pytest.mark.parametrize("path", ENGINE_PRESETS, ids=[p.stem for p in ENGINE_PRESETS])
def test_shipped_preset_serves_its_engine_with_trtllm_serve(path, tmp_path):
    """Preset checks take every option of `serve`, but --engine-dir refuses the reference server's (max-output-len,
    chat-template-kwargs, ...) only when it starts: each GPU preset's serve, as its example runs it, makes a
    trtllm-serve command, its serve section's parsers passed on (Qwen3's tool-parser and reasoning-parser)."""
    from test_bench import save_byte_tokenizer
    from test_serve_engine import make_engine

    from redrafter_trt.cli import main

    save_byte_tokenizer(tmp_path / "tok")
    engine = make_engine(tmp_path / "engine", tp=int(load_preset(path)["convert"].get("tp-size", 1)), vocab_size=256)
    res = CliRunner().invoke(main, ["serve", "--config", str(path), "--engine-dir", str(engine), "--tokenizer-dir",
                                    str(tmp_path / "tok"), "--dry-run"])
    assert res.exit_code == 0 and res.output.startswith("trtllm-serve "), res.output
    serve = load_preset(path)["serve"]
    for key in ("tool-parser", "reasoning-parser"):
        if key in serve:
            assert f"--{key.replace('-', '_')} {serve[key]}" in res.output, res.output


@pytest.mark.parametrize("path", PRESETS, ids=[p.stem for p in PRESETS])
def test_shipped_engine_run_passes_no_option_the_engine_fixed(path):
    """`run --engine-dir` refuses --num-beams / --draft-len / --tp; a tensor parallel preset's example runs the
    engine under `mpirun -n TP` instead."""
    from redrafter_trt.cli.run_cmd import FIXED_BY_ENGINE, RUNTIME_ONLY

    preset = load_preset(path)
    run = {str(k).replace("_", "-") for k in preset["run"]}
    if "engine-dir" in run:
        assert not run & {f.removeprefix("--") for f in FIXED_BY_ENGINE + RUNTIME_ONLY}, path.name
    tp = int(preset["convert"].get("tp-size", 1))
    script = (Path(__file__).resolve().parents[1] / "examples" / f"{path.stem}.sh").read_text().replace("\\\n", " ")
    assert (f"mpirun -n {tp} redrafter-trt run" in script) == (tp > 1), path.name


def test_example_per_preset():
    examples = Path(__file__).resolve().parents[1] / "examples"
    for path in PRESETS:
        script = examples / f"{path.stem}.sh"
        assert script.exists(), script
        text = script.read_text()
        for command in ("convert", "build", "run"):
            assert f"redrafter-trt {command} --config" in text.replace("\\\n", " "), (script.name, command)
        assert f"configs/{path.name}" in text


@pytest.mark.parametrize("args, chat", [((), True), (("--no-chat",), False), (("--chat",), True)])
def test_command_line_turns_off_a_presets_chat(tmp_path, monkeypatch, args, chat):
    """The shipped Llama and Qwen presets set `run: {chat: true}`; run's --chat had no --no-chat, so a prompt meant
    to go in as written could not, though flags on the command line win over the preset."""
    from redrafter_trt.cli import main, run_cmd

    def seen(ckpt, tokenizer_dir, o):
        raise ConfigError(f"chat={o['chat']}")

    monkeypatch.setattr(run_cmd, "_run_checkpoint", seen)
    path = tmp_path / "p.yaml"
    path.write_text("run: {chat: true}\n")
    result = CliRunner().invoke(main, ["run", "--config", str(path), "--checkpoint-dir", str(tmp_path),
                                       "--tokenizer-dir", str(tmp_path), "--input-text", "hi", *args])
    assert result.exit_code == 2 and f"chat={chat}" in result.output, result.output


@pytest.mark.parametrize("preset, args, prompts", [
    ("run: {input-text: [from the preset]}\n", ["--input-file", "FILE"], ["from the file"]),
    ("run: {input-file: FILE}\n", ["--input-text", "typed"], ["typed"]),
    ("input-text: [from the preset]\n", [], ["from the preset"]),
])
def test_typed_prompts_win_over_a_presets_other_kind(tmp_path, monkeypatch, preset, args, prompts):
    """A review: a preset's `run: {input-text: [...]}` (a default prompt) with a typed --input-file was refused as
    "pass either --input-text or --input-file, not both", a flag nobody typed; flags win over the preset, so the
    typed one drops the preset's other, as a typed --engine-dir drops its checkpoint-dir."""
    from redrafter_trt.cli import main, run_cmd

    def seen(ckpt, tokenizer_dir, o):
        raise ConfigError(f"prompts={o['prompts']}")

    monkeypatch.setattr(run_cmd, "_run_checkpoint", seen)
    file = tmp_path / "prompts.jsonl"
    file.write_text('{"prompt": "from the file"}\n')
    path = tmp_path / "p.yaml"
    path.write_text(preset.replace("FILE", str(file)))
    result = CliRunner().invoke(main, ["run", "--config", str(path), "--checkpoint-dir", str(tmp_path),
                                       "--tokenizer-dir", str(tmp_path), *[str(file) if a == "FILE" else a for a in args]])
    assert result.exit_code == 2 and f"prompts={prompts}" in result.output, result.output


@pytest.mark.parametrize("text", ["num-beams: 5\n", "run: {draft-len: 2}\n"])
def test_a_presets_option_the_engine_fixed_is_named_as_the_presets(tmp_path, text):
    """A top-level `num-beams:` (convert's and a checkpoint run's, as the presets module shows) with run --engine-dir
    said "--num-beams is fixed when the engine is built: drop it", a flag the user never typed."""
    from redrafter_trt.cli import main

    path = tmp_path / "p.yaml"
    path.write_text(text)
    result = CliRunner().invoke(main, ["run", "--config", str(path), "--engine-dir", str(tmp_path),
                                       "--tokenizer-dir", str(tmp_path), "--input-text", "hi"])
    assert result.exit_code == 2 and "the --config preset sets" in result.output, result.output
    assert "move it under `convert:`" in result.output and len(result.output.strip().splitlines()) == 1
    typed = CliRunner().invoke(main, ["run", "--engine-dir", str(tmp_path), "--tokenizer-dir", str(tmp_path),
                                      "--input-text", "hi", "--num-beams", "2"])
    assert typed.exit_code == 2 and "--num-beams is fixed when the engine is built" in typed.output


@pytest.mark.parametrize("text", ["run: {tp: 2}\n", "tp: 2\n"])
def test_a_presets_tp_the_engine_fixed_moves_as_convert_tp_size(tmp_path, text):
    """A review: a preset's `tp` (run's option) with run --engine-dir was told "move it under `convert:`", where
    convert refuses `tp` as no option of its own: convert's is `tp-size`."""
    from redrafter_trt.cli import main

    path = tmp_path / "p.yaml"
    path.write_text(text)
    result = CliRunner().invoke(main, ["run", "--config", str(path), "--engine-dir", str(tmp_path),
                                       "--tokenizer-dir", str(tmp_path), "--input-text", "hi"])
    assert result.exit_code == 2 and "the --config preset sets tp," in result.output, result.output
    assert "move it as `tp-size` under `convert:`" in result.output, result.output
    path.write_text("convert: {tp-size: 2}\n")  # the move it says: convert takes it
    assert "not an option" not in CliRunner().invoke(main, ["convert", "--config", str(path)]).output


@pytest.mark.parametrize("text, needle", [
    ("run: {max-output-len: 0}\n", "'run.max-output-len' is 0"),
    ("build: {gemm-plugin: fp16}\n", "'build.gemm-plugin' is 'fp16'"),
    ("serve: {port: 70000}\n", "'serve.port' is 70000"),
    ("bench: {device: gpu}\n", "'bench.device' is 'gpu'"),  # a type of the project's own (cli.params.Device)
    ("acceptance: {beams: '1,0'}\n", "'acceptance.beams' is '1,0'"),  # and bench_cmd.IntList
])
def test_a_range_or_choice_in_another_section_stops_convert(tmp_path, text, needle):
    """The example scripts run convert, build, then run with one preset: `run: {max-output-len: 0}` passed convert
    and build (hours for a 70B base) and stopped only run."""
    from redrafter_trt.cli import main

    path = tmp_path / "p.yaml"
    path.write_text(text)
    result = CliRunner().invoke(main, ["convert", "--config", str(path), "--base", str(tmp_path), "--drafter",
                                       str(tmp_path), "--output", str(tmp_path / "ck"), "--dry-run"])
    assert result.exit_code == 2 and needle in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1


def _command_lines(text: str) -> list[str]:
    """`redrafter-trt CMD ...` lines (continuations joined, comments and `mpirun -n N` dropped)."""
    import re

    lines = []
    for line in text.replace("\\\n", " ").splitlines():
        line = re.sub(r"^\s*#?\s*(mpirun -n \S+ )?", "", line)
        if line.startswith("redrafter-trt ") and not line.startswith("redrafter-trt --"):
            lines.append(line.split("  #")[0])
    return lines


def test_examples_and_readme_use_only_real_options():
    """What a user copies: every option in examples/*.sh and in the README's code blocks is one its command takes."""
    import re

    root = Path(__file__).resolve().parents[1]
    commands = _commands()
    readme = root.joinpath("README.md").read_text()
    blocks = "\n".join(re.findall(r"```bash\n(.*?)```", readme, flags=re.S))
    texts = {p.name: p.read_text() for p in sorted(root.joinpath("examples").glob("*.sh"))} | {"README.md": blocks}
    checked = 0
    for name, text in texts.items():
        for line in _command_lines(text):
            command = line.split()[1]
            assert command in commands, (name, line)
            opts = {o for p in commands[command].params for o in (*p.opts, *getattr(p, "secondary_opts", ()))}
            for flag in re.findall(r"(?<![\w-])--[a-z][\w-]*", line.split(" -- ")[0]):
                assert flag in opts, (name, command, flag)
                checked += 1
    assert checked > 50


def _readme_section(readme: str, command: str) -> str:
    """Where the README documents `command`: the `## ` section whose heading starts with its name (`## Convert`,
    `## Run: ...`, `## Benchmark: ...` for bench), else the one holding a `### ... (command)` heading (acceptance), else
    its row in the Pipeline table (init-drafter). Empty where there is none."""
    import re

    sections = re.split(r"^(?=## )", readme, flags=re.M)[1:]
    for section in sections:
        if section[3:].lower().startswith(command):
            return section
    for section in sections:
        if re.search(rf"^### .*\({command}\)", section, flags=re.M):
            return section
    return "\n".join(re.findall(rf"^\| `{command}` \|.*", readme, flags=re.M))


def test_readme_mentions_every_option_in_its_commands_section():
    """The converse of the test above: every long name of every option of every command (TensorRT-LLM's
    underscore spellings too) is in the README where that command is documented, so a new option is documented."""
    import re

    readme = Path(__file__).resolve().parents[1].joinpath("README.md").read_text()
    missing = []
    for name, command in _commands().items():
        section = _readme_section(readme, name)
        assert section, f"README.md has no section for `{name}`: add one, or a row in the Pipeline table"
        for param in command.params:
            for opt in (*param.opts, *getattr(param, "secondary_opts", ())) if isinstance(param, click.Option) else ():
                if opt.startswith("--") and not re.search(rf"(?<![\w-]){re.escape(opt)}(?![\w-])", section):
                    missing.append(f"{name} {opt}")
    assert not missing, f"options not in their command's README section: {', '.join(missing)}"


# options of other programs that train's README section names: torchrun's, scripts/self_prompts.py's, every command's
TRAIN_SECTION_OTHERS = {"--nproc_per_node", "--starters", "--help"}


def test_the_readmes_train_section_names_only_options_that_exist():
    """The README told users `--eval-examples 0` skips the base's answers to held-out prompts: train has no such option
    (a TrainConfig field only), and the line was an error. Every option train's section names in backticks is one a
    redrafter-trt command takes (or another program's, named above)."""
    import re

    readme = Path(__file__).resolve().parents[1].joinpath("README.md").read_text()
    ours = {o for command in _commands().values() for param in command.params
            for o in (*param.opts, *getattr(param, "secondary_opts", ()))}
    named = {flag for code in re.findall(r"`([^`\n]*)`", _readme_section(readme, "train"))
             for flag in re.findall(r"(?<![\w-])--[a-z][\w-]*", code)}
    assert not named - ours - TRAIN_SECTION_OTHERS, sorted(named - ours - TRAIN_SECTION_OTHERS)


def test_every_option_has_a_help_text():
    """`redrafter-trt CMD --help` says what each option does (convert's --num-beams and --calib-size showed only
    their defaults)."""
    bare = [f"{name} {param.opts[0]}" for name, command in _commands().items() for param in command.params
            if isinstance(param, click.Option) and not param.help]
    assert not bare, f"options without a help text: {', '.join(bare)}"


# how the README states an option's default: `[--port 8000]` in a usage line, "`--lr` (default 1e-3",
# "`--soft-target 0.5`, the default", "`--max-output-len`: 512 by default", "`--max-batch-size` defaults to 8"
README_DEFAULTS = (r"\[(--[a-z][\w-]*) ([\d.]+)\]", r"`(--[a-z][\w-]*)`,? \(default:? `?([\w.]+)",
                   r"`(--[a-z][\w-]*) ([\w.]+)`,? the default", r"`(--[a-z][\w-]*)`:? ([\w.]+) by default",
                   r"`(--[a-z][\w-]*)`'s\s+default of ([\w.]+)", r"`(--[a-z][\w-]*)` defaults to ([\w.]+)")


def test_readme_states_the_commands_defaults():
    """A default the README states in a command's section is the one its option has (options whose default is
    worked out at run time, as train's `--max-seq-len`, have none to compare)."""
    import re

    readme = Path(__file__).resolve().parents[1].joinpath("README.md").read_text()
    compared = []
    for name, command in _commands().items():
        options = {o: p for p in command.params if isinstance(p, click.Option) for o in p.opts}
        for pattern in README_DEFAULTS:
            for opt, stated in re.findall(pattern, _readme_section(readme, name)):
                default = getattr(options.get(opt), "default", None)
                if isinstance(default, (bool, int, float, str)) and not isinstance(default, bool):
                    value = type(default)(stated)
                    assert value == default, f"README.md: {name} {opt} defaults to {stated}, the option to {default}"
                    compared.append(f"{name} {opt}")
    assert len(compared) >= 15, compared


REQUIRED = {"convert": ["--base", "b", "--drafter", "d", "--output", "o"],
            "run": ["--tokenizer-dir", "t", "--checkpoint-dir", "c"],
            "serve": ["--tokenizer-dir", "t", "--checkpoint-dir", "c"],
            "bench": ["--checkpoint-dir", "c", "--tokenizer-dir", "t", "--prompts", "p"]}


def _params(tmp_path, command: str, preset: str, *args: str) -> dict:
    """The values the real command would run with, after parsing (the command itself does not run)."""
    from redrafter_trt.cli import main

    path = tmp_path / "p.yaml"
    path.write_text(preset)
    cmd = main.get_command(None, command)
    with cmd.make_context(command, ["--config", str(path), *REQUIRED[command], *args]) as ctx:
        return ctx.params


@pytest.mark.parametrize("command, preset, on, off, name", [
    ("convert", "no-greedy: true\n", "--no-greedy", "--greedy", "no_greedy"),
    ("convert", "convert: {redrafter_no_greedy_search: true}\n", "--redrafter_no_greedy_search", "--greedy",
     "no_greedy"),
    ("run", "run: {no-draft: true}\n", "--no-draft", "--draft", "no_draft"),
    ("run", "compile: true\n", "--compile", "--no-compile", "compile_layers"),
    ("serve", "serve: {compile: true}\n", "--compile", "--no-compile", "compile_layers"),
    ("bench", "compile: true\n", "--compile", "--no-compile", "compile_layers"),
])
def test_a_flag_a_preset_turns_on_can_be_turned_off_on_the_command_line(tmp_path, command, preset, on, off, name):
    """These flags were a bare --x (or --no-x): once a preset set it, no command line could take it back."""
    assert _params(tmp_path, command, preset)[name] is True
    assert _params(tmp_path, command, preset, off)[name] is False
    assert _params(tmp_path, command, "", on)[name] is True  # the old spellings still turn it on
    assert _params(tmp_path, command, "")[name] is False


def test_a_presets_fp8_can_be_turned_off_on_the_command_line(tmp_path, tiny_llama, tiny_drafter):
    """`quantize: fp8` (and `kv-cache-dtype: fp8`) in a preset could not be taken back: --quantize took fp8 only."""
    from redrafter_trt.cli import main

    fp8 = "convert: {quantize: fp8, kv-cache-dtype: fp8}\n"
    assert _params(tmp_path, "convert", fp8)["quantize"] == "fp8"
    assert _params(tmp_path, "convert", fp8, "--quantize", "none")["quantize"] is None
    assert _params(tmp_path, "convert", fp8, "--kv-cache-dtype", "none")["kv_cache_dtype"] is None
    assert _params(tmp_path, "convert", "", "--quantize", "fp8")["quantize"] == "fp8"
    path = tmp_path / "p.yaml"
    path.write_text(fp8)
    args = ["convert", "--config", str(path), "--base", str(tiny_llama), "--drafter", str(tiny_drafter), "--output",
            str(tmp_path / "ck"), "--dry-run"]
    refused = CliRunner().invoke(main, args)
    assert refused.exit_code == 2 and "pass --quantize none over a preset's" in refused.output, refused.output
    res = CliRunner().invoke(main, [*args, "--quantize", "none", "--kv-cache-dtype", "none"])
    assert res.exit_code == 0 and "dry run: nothing was written" in res.output, res.output


def test_an_off_flag_over_a_preset_is_not_refused_with_an_engine(tmp_path):
    """`--no-compile` / `--draft` undo a preset's reference-runtime flag: with --engine-dir they ask for nothing,
    so they must not be refused as "works with --checkpoint-dir only" (the preset's on value still is)."""
    from redrafter_trt.cli import main

    path = tmp_path / "p.yaml"
    path.write_text("compile: true\nno-draft: true\n")
    run = ["run", "--config", str(path), "--engine-dir", str(tmp_path / "engine"), "--tokenizer-dir", str(tmp_path),
           "--input-text", "hi"]
    refused = CliRunner().invoke(main, run)
    assert refused.exit_code == 2 and "works with --checkpoint-dir only" in refused.output, refused.output
    # the preset's, not a typed flag: "drop it with --engine-dir" named a flag nobody typed
    assert "the --config preset sets no-draft" in refused.output and "pass --draft" in refused.output
    refused = CliRunner().invoke(main, [*run, "--draft"])
    assert "the --config preset sets compile" in refused.output and "pass --no-compile" in refused.output
    res = CliRunner().invoke(main, [*run, "--no-compile", "--draft"])
    missing = f"engine folder {tmp_path / 'engine'} does not exist"
    assert missing in res.output, res.output  # past the option checks, to the engine's
    assert missing in CliRunner().invoke(main, [run[0], *run[3:], "--no-compile"]).output
    serve = ["serve", "--engine-dir", str(tmp_path / "engine"), "--tokenizer-dir", str(tmp_path), "--dry-run"]
    res = CliRunner().invoke(main, [*serve, "--no-compile"])
    assert missing in res.output, res.output
    res = CliRunner().invoke(main, [*serve, "--compile"])
    assert "--compile applies to --checkpoint-dir only" in res.output, res.output


def test_draft_options_under_a_presets_no_draft_say_where_it_comes_from(tmp_path, tiny_llama, tiny_drafter):
    """`run --num-beams 2` under a preset's `no-draft: true` said "drop them with --no-draft", a flag nobody typed;
    --draft (the preset's flag turned off) is the way to draft."""
    from test_runtime_support import checkpoint

    from redrafter_trt.cli import main

    path = tmp_path / "p.yaml"
    path.write_text("run: {no-draft: true}\n")
    args = ["run", "--config", str(path), "--checkpoint-dir", str(checkpoint(tiny_llama, tiny_drafter)),
            "--tokenizer-dir", str(tmp_path), "--input-text", "hi", "--num-beams", "2"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2 and "the --config preset sets no-draft: pass --draft" in res.output, res.output
    res = CliRunner().invoke(main, [*args, "--draft"])
    assert "shape the drafts" not in res.output, res.output


@pytest.mark.parametrize("text, needle", [
    ("convert: {force: true}\n", "'convert.force' is for the command line only"),
    ("force: true\n", "'force' is for the command line only"),  # shared: convert and build take it
    ("build: {dry-run: true}\n", "'build.dry-run' is for the command line only"),
])
def test_force_and_dry_run_are_command_line_only(tmp_path, text, needle):
    """A preset's `force: true` replaced the outputs of every run it drove (with no --no-force to undo it), and
    `dry-run: true` skipped the work of every run: both are refused when the preset loads, before anything is
    replaced."""
    from redrafter_trt.cli import main

    (tmp_path / "ck").mkdir()
    (tmp_path / "ck" / "mine.txt").write_text("keep")
    path = tmp_path / "p.yaml"
    path.write_text(text)
    result = CliRunner().invoke(main, ["convert", "--config", str(path), "--base", str(tmp_path), "--drafter",
                                       str(tmp_path), "--output", str(tmp_path / "ck")])
    assert result.exit_code == 2 and needle in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1
    assert (tmp_path / "ck" / "mine.txt").read_text() == "keep"


def test_a_presets_quoted_text_stays_text(tmp_path):
    """Quoted, the same text reaches the command as written."""
    params = _params(tmp_path, "serve", "serve: {model-name: '1.10', host: '010'}\n")
    assert (params["model_name"], params["host"]) == ("1.10", "010")
    assert _params(tmp_path, "run", "run: {input-text: ['12:30', hi]}\n")["input_text"] == ("12:30", "hi")


@pytest.mark.parametrize("preset, beams, draft_lens", [
    ("bench: {beams: [1, 2, 4], draft-lens: [3]}\n", (1, 2, 4), (3,)),
    ("beams: [2]\nbench: {draft-lens: '1,2'}\n", (2,), (1, 2)),  # shared, and the command line's comma string
    ("bench: {beams: 4}\n", (4,), ()),
])
def test_a_presets_grid_may_be_a_yaml_list(tmp_path, preset, beams, draft_lens):
    """A review: `bench: {beams: [1, 2, 4]}`, the list a YAML user writes, was refused ('write a string'); only the
    command line's comma string "1,2,4" was taken."""
    params = _params(tmp_path, "bench", preset)
    assert (params["beams"], params["draft_lens"]) == (beams, draft_lens)
    assert _params(tmp_path, "bench", preset, "--beams", "1,3")["beams"] == (1, 3)  # the command line still wins


@pytest.mark.parametrize("value, needle", [
    ("[1, x]", "is [1, 'x']: item 'x' is not an integer >= 1: write e.g. [1, 2, 4]"),
    ("[2, 0]", "is [2, 0]: item 0 is not an integer >= 1"),
    ("[1, 2.5]", "item 2.5 is not an integer >= 1"),
    ("[true]", "item True is not an integer >= 1"),
    ("[[1]]", "item [1] is not an integer >= 1"),
    ("[]", "is []: the list is empty"),
    ("{a: 1}", "is {'a': 1}: write a YAML list or a comma-separated string"),
])
def test_a_presets_grid_list_with_a_wrong_item_is_one_line(tmp_path, value, needle):
    """Each item of a grid's YAML list is an integer >= 1, refused in one line naming the item when any command loads
    the preset (convert here, before hours of converting)."""
    from redrafter_trt.cli import main

    path = tmp_path / "p.yaml"
    path.write_text(f"acceptance: {{draft-lens: {value}}}\n")
    result = CliRunner().invoke(main, ["convert", "--config", str(path), "--base", str(tmp_path), "--drafter",
                                       str(tmp_path), "--output", str(tmp_path / "ck"), "--dry-run"])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: preset {path}: field 'acceptance.draft-lens' is "), lines
    assert needle in lines[0], lines


def device_refusal(path, command: str, preset: str) -> str:
    """The one error line of `command --config path` over `preset`: its top-level `device: cuda:1` a command refuses."""
    from redrafter_trt.cli import main

    path.write_text(preset)
    result = CliRunner().invoke(main, [command, "--config", str(path), "--help"])
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1, result.output
    assert lines[0].startswith(f"error: preset {path}: field 'device' is 'cuda:1': "), lines
    return lines[0]


@pytest.mark.parametrize("command", ["convert", "build", "run", "serve", "bench", "acceptance"])
def test_a_top_level_value_one_command_refuses_stops_every_command(tmp_path, command):
    """A top-level `device: cuda:1` passed bench and acceptance (cpu, cuda or cuda:N) and stopped convert, run and
    serve (cpu or cuda) and build (for convert's sake): one preset drove some commands and not others. Every command
    refuses it, naming the sections to move it to (convert, run, serve and build named none, nor build the command
    refusing it); there it loads with every command."""
    from redrafter_trt.cli import main

    path = tmp_path / "p.yaml"
    line = device_refusal(path, command, "device: cuda:1\n")
    if command in ("bench", "acceptance"):
        assert line.endswith(f"for `convert`, which reads the top-level fields too: move it under `{command}:`")
    else:
        assert line.endswith("(`acceptance` and `bench` take it: move it under `acceptance:` and `bench:`)"), line
    if command == "build":  # no option of build's: the command refusing it is named
        assert "for `convert`, which reads the top-level fields too" in line, line
    path.write_text("bench: {device: cuda:1}\nacceptance: {device: cuda:1}\n")
    assert CliRunner().invoke(main, [command, "--config", str(path), "--help"]).exit_code == 0


@pytest.mark.parametrize("command", ["convert", "build", "run", "serve", "bench", "acceptance"])
def test_a_top_level_value_is_checked_only_by_commands_whose_section_leaves_it(tmp_path, command):
    """A top-level `device: cuda:1` that convert, run and serve each override in their section is bench's and
    acceptance's alone, yet stopped every command, as if convert, run and serve read it. It loads with every command."""
    from redrafter_trt.cli import main

    path = tmp_path / "p.yaml"
    path.write_text("device: cuda:1\nconvert: {device: cuda}\nrun: {device: cuda}\nserve: {device: cuda}\n")
    result = CliRunner().invoke(main, [command, "--config", str(path), "--help"])
    assert result.exit_code == 0, result.output


def test_a_section_setting_an_option_under_another_name_overrides_the_top_level_value():
    """`dev: cpu` sets `--device` as `device: cpu` does: the top-level `device: gpu` is the other command's alone."""
    from redrafter_trt.presets import resolve

    picky = click.Command("picky", params=[click.Option(["--device", "--dev"], type=click.Choice(["cpu"]))])
    lax = click.Command("lax", params=[click.Option(["--device"])])
    preset = {"device": "gpu", "picky": {"dev": "cpu"}}
    assert resolve(preset, "lax", lax, {"picky", "lax"}, lambda: [picky]) == {"device": "gpu"}
    assert resolve(preset, "picky", picky, {"picky", "lax"}, lambda: [lax]) == {"device": "cpu"}


@pytest.mark.parametrize("command", ["convert", "build", "run", "serve", "bench", "acceptance"])
def test_a_top_level_value_names_only_the_sections_that_would_use_it(tmp_path, command):
    """`device: cuda:1` with `convert: {device: cuda}` and `bench: {device: cuda}` still reaches run and serve, which
    refuse it: every command stops, naming run as the refusing command (convert no more) and acceptance, whose
    section leaves it, as the only one to move it under (bench's own section sets its device)."""
    line = device_refusal(tmp_path / "p.yaml", command,
                          "device: cuda:1\nconvert: {device: cuda}\nbench: {device: cuda}\n")
    if command == "acceptance":
        assert line.endswith("for `run`, which reads the top-level fields too: move it under `acceptance:`"), line
    else:
        assert line.endswith("(`acceptance` takes it: move it under `acceptance:`)"), line
    if command in ("convert", "build", "bench"):  # none of them reads it: the command refusing it is named
        assert "for `run`, which reads the top-level fields too" in line, line


@pytest.mark.parametrize("command", ["convert", "build", "run", "serve", "bench", "acceptance"])
@pytest.mark.parametrize("path", PRESETS, ids=[p.stem for p in PRESETS])
def test_shipped_preset_loads_with_every_command_taking_config(path, command):
    """Each shipped preset loads (every section checked against its command) under every command with --config:
    `--help` after `--config` exits 0 only once the eager preset callback has passed."""
    from redrafter_trt.cli import main
    from redrafter_trt.presets import takes_config

    assert takes_config(main.get_command(None, command))
    result = CliRunner().invoke(main, [command, "--config", str(path), "--help"])
    assert result.exit_code == 0 and result.output.startswith("Usage:"), result.output


def _example_commands(script: Path) -> list[list[str]]:
    """The `redrafter-trt ...` lines of an example script (comments too) as argv, its variables at their defaults."""
    import re
    import shlex

    text = script.read_text()
    env = dict(re.findall(r"^(\w+)=\$\{\w+:-(.*)\}$", text, flags=re.M))
    env |= {"PRESET": str(CONFIGS / f"{script.stem}.yaml"), "ENGINE_CKPT": "$WORK/checkpoint-bf16"}
    env = {k: v.strip('"') for k, v in env.items()}
    if script.stem.startswith("smollm2"):
        env["BASE"] = "models/SmolLM2-135M-Instruct"  # the script asks Python for the cache's path
    commands = []
    for line in _command_lines(text):
        line = line.replace('"${BUILD_MODE[@]}"', "--dry-run").replace('"$(python3 -m redrafter_trt.smollm2)"', "$BASE")
        for _ in range(3):  # a default naming another variable ($WORK/drafter)
            line = re.sub(r"\$\{?(\w+)\}?", lambda m: env.get(m[1], m[0]), line)
        assert "$" not in line, (script.name, line)
        commands.append(shlex.split(line)[1:])
    return commands


@pytest.mark.parametrize("script", sorted((CONFIGS.parent / "examples").glob("*.sh")), ids=lambda p: p.stem)
def test_example_scripts_parse_with_their_presets(script):
    """Every command line of an example script (and its commented ones) parses as click parses it, with the preset
    loaded: options, their values, an option given twice, rival folders and required options left to the preset."""
    from redrafter_trt.cli import main

    commands = _example_commands(script)
    assert {c[0] for c in commands} >= {"convert", "build", "run", "serve"}, commands
    for argv in commands:
        command = main.get_command(None, argv[0])
        with click.Context(main, info_name="redrafter-trt") as parent:
            with command.make_context(argv[0], argv[1:], parent=parent) as ctx:
                given = {p.name for p in command.params if ctx.get_parameter_source(p.name).name == "COMMANDLINE"}
                assert given, argv


@pytest.mark.parametrize("field", ["num-beams", "draft-len", "tp-size", "calib-size", "calib-seq-len",
                                   "calib-batch-size"])
@pytest.mark.parametrize("command", ["convert", "build"])
def test_a_presets_convert_count_below_one_names_the_field(tmp_path, field, command):
    """A review: convert's counts were plain integers, so `convert: {num-beams: 0}` passed every preset check and
    convert itself said "--num-beams 0 is invalid", a flag nobody typed (and `build --config P` never looked)."""
    from redrafter_trt.cli import main

    path = tmp_path / "p.yaml"
    path.write_text(f"convert: {{quantize: fp8, {field}: 0}}\n")
    args = ["--base", "b", "--drafter", "d", "--output", "o"] if command == "convert" else \
        ["--checkpoint-dir", "c", "--output-dir", "e"]
    result = CliRunner().invoke(main, [command, "--config", str(path), *args])
    assert result.exit_code == 2, result.output
    assert result.output.strip() == f"error: preset {path}: field 'convert.{field}' is 0: 0 is not in the range x>=1"


def test_two_top_level_fields_of_one_option_of_another_command_name_that_command(tmp_path):
    """`output: ck` and `output-dir: engine` at the top level, meant for convert's --output and build's --output-dir,
    are both convert's --output (--output_dir is its TensorRT-LLM spelling): build refused them as fields that 'set
    the same option: give it once', which its own --output-dir is not (a review of bc3da47)."""
    from redrafter_trt.cli import main

    path = tmp_path / "p.yaml"
    path.write_text(f"output: {tmp_path / 'ck'}\noutput-dir: {tmp_path / 'engine'}\n")
    result = CliRunner().invoke(main, ["build", "--config", str(path), "--dry-run"])
    assert result.exit_code == 2, result.output
    assert ("fields 'output' and 'output-dir' set the same option of `convert` (--output), which reads the top-level "
            "fields too: give it once, or put each under the section of the command it is for") in result.output
    assert not list(tmp_path.glob("engine*"))
    path.write_text(f"convert: {{output: {tmp_path / 'ck'}}}\noutput-dir: {tmp_path / 'engine'}\n")
    assert "set the same option" not in CliRunner().invoke(main, ["build", "--config", str(path), "--dry-run"]).output


def test_readme_counts_the_gpu_tests_pytest_collects():
    """The README's count of GPU tests (its Tests paragraph: how many, how many on tiny models, how many on SmolLM2) is
    what `pytest --collect-only -m gpu` collects. It said "8 of the 10 on tiny models took 34 s", session 16's run of
    8 tests, while 15 were collected, 10 of them on tiny models."""
    import ast
    import re
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    readme = " ".join(root.joinpath("README.md").read_text().split())
    stated = re.search(r"\((\d+) tests: (\d+) on tiny models, one of them for two GPUs, and (\d+) on SmolLM2;", readme)
    assert stated, "README.md's Tests paragraph no longer states the GPU tests as 'N tests: T on tiny models, ...'"
    total, tiny, smollm2 = map(int, stated.groups())
    marked = [p.name for p in sorted(root.joinpath("tests").glob("*.py"))
              if p.name != Path(__file__).name and "mark.gpu" in p.read_text()]
    assert marked == ["test_runtime_cuda.py"], marked
    out = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider", "-m", "gpu",
                          "tests/test_runtime_cuda.py"], cwd=root, capture_output=True, text=True, timeout=240)
    ids = [line for line in out.stdout.splitlines() if "::" in line]
    assert ids, out.stdout[-2000:] + out.stderr[-2000:]
    tree = ast.parse(root.joinpath("tests", "test_runtime_cuda.py").read_text())
    on_smollm2 = {f.name for f in tree.body if isinstance(f, ast.FunctionDef)
                  and "smollm2" in [a.arg for a in f.args.args]}
    assert all(i.startswith("tests/test_runtime_cuda.py::") for i in ids), ids
    n_smollm2 = sum(i.split("::")[1].split("[")[0] in on_smollm2 for i in ids)
    assert (total, tiny, smollm2) == (len(ids), len(ids) - n_smollm2, n_smollm2)


def test_a_mapping_merged_after_it_was_read_keeps_its_own_key_over_its_merged_one(tmp_path):
    """A mapping read (flattened) once as its own section, then merged into another: what it writes and merges is noted
    at its first flattening only, as the second sees its merged keys moved among its own (`max-output-len` and
    `max_output_len` both written: refused as one option set twice). Its own key wins in both sections."""
    preset = "serve: &c {<<: {max-output-len: 8}, max_output_len: 16}\nrun: {<<: *c}\n"
    assert _params(tmp_path, "run", preset)["max_output_len"] == 16
    assert _params(tmp_path, "serve", preset)["max_output_len"] == 16


def test_a_presets_template_variables_may_be_a_json_string(tmp_path):
    """chat-template-kwargs in a preset is a YAML mapping or the command line's JSON object, as a string."""
    preset = "run: {chat: true, chat-template-kwargs: '{\"enable_thinking\": false}'}\n"
    assert _params(tmp_path, "run", preset)["chat_template_kwargs"] == {"enable_thinking": False}


def test_a_yaml_boolean_among_trtllm_build_arguments_is_refused(tmp_path):
    """`yes` (YAML's true) among the pass-through arguments is no argv item: refused, where a number is taken as
    text (test_a_presets_trtllm_build_argument_may_be_a_yaml_number)."""
    from redrafter_trt.cli import main

    path = tmp_path / "p.yaml"
    path.write_text("build: {trtllm-args: [--flag, yes]}\n")
    result = CliRunner().invoke(main, ["build", "--config", str(path), "--help"])
    assert result.exit_code == 2 and result.output.strip() == (
        f"error: preset {path}: field 'build.trtllm-args' is ['--flag', True]: write a YAML list, each item a string"), \
        result.output


@pytest.mark.parametrize("command, tail", [
    ("run", ""), ("serve", ""), ("convert", " for `run`, which reads the top-level fields too")])
def test_a_top_level_value_every_command_refuses_names_no_section_to_move_it_to(tmp_path, command, tail):
    """`max-output-len: 0` at the top level: no command taking it takes 0, so none is named to move it under."""
    from redrafter_trt.cli import main

    path = tmp_path / "p.yaml"
    path.write_text("max-output-len: 0\n")
    result = CliRunner().invoke(main, [command, "--config", str(path), "--help"])
    assert result.exit_code == 2 and result.output.strip() == (
        f"error: preset {path}: field 'max-output-len' is 0: 0 is not in the range x>=1{tail}"), result.output
