"""Bad input across commands (found by an adversarial review): one line on stderr naming the problem and the fix,
exit 2, no traceback, inputs never deleted, nothing written, and refused before any work where it can be."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import click
import pytest
import torch
from click.testing import CliRunner

from redrafter_trt.cli import main
from redrafter_trt.convert import convert
from redrafter_trt.errors import ConfigError
from test_convert_errors import assert_one_line_error, run_cli
from test_runtime_support import smollm2_checkpoint
from tinymodels import TRANSFORMERS_5

NOT_WRITABLE = "/proc/redrafter-nowhere"  # no folder can be made there, even as root


@pytest.fixture()
def parts(tmp_path, tiny_llama, tiny_drafter):
    base, drafter = tmp_path / "base", tmp_path / "drafter"
    shutil.copytree(tiny_llama, base)
    shutil.copytree(tiny_drafter, drafter)
    return base, drafter


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory, tiny_llama, tiny_drafter):
    return convert(tiny_llama, tiny_drafter, tmp_path_factory.mktemp("ck") / "ck", num_beams=2, draft_len=2)


def files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize("which", ["base", "drafter"])
def test_force_never_replaces_an_input(parts, which):
    base, drafter = parts
    target = base if which == "base" else drafter
    before = files(target)
    result = run_cli("convert", "--base", base, "--drafter", drafter, "--output", target, "--force")
    assert_one_line_error(result, "would delete the input", "another --output")
    assert files(target) == before
    holder = run_cli("convert", "--base", base, "--drafter", drafter, "--output", base.parent, "--force")
    assert_one_line_error(holder, "is (or holds) the input")
    assert_one_line_error(run_cli("init-drafter", "--base", base, "--output", base, "--force"), "would delete")
    assert files(target) == before


def test_an_input_under_another_name_is_never_replaced(parts, second_name):
    """Inputs were compared with the output by name: `--output ./Drafter --force` replaced (deleted) the input
    ./drafter on a Mac. They are compared by identity too."""
    here, alias = second_name
    base, drafter = (shutil.move(p, here / p.name) for p in parts)
    before = files(drafter)
    for output, needle in ((alias / "drafter", "would delete the input"), (alias, "is (or holds) the input"),
                           (alias / "drafter" / "ck", "is inside the input folder")):
        assert_one_line_error(run_cli("convert", "--base", base, "--drafter", drafter, "--output", output, "--force"),
                              needle)
    assert files(drafter) == before
    from redrafter_trt.cli.params import check_output_file

    for output, needle in ((alias / "drafter" / "config.json", "is the input"), (alias / "drafter" / "x.json",
                                                                                  "is inside the input")):
        with pytest.raises(ConfigError, match=needle):
            check_output_file(output, [drafter / "config.json", drafter], "--output-json")


def test_an_output_inside_an_input_folder_is_refused(parts, tmp_path):
    """init-drafter wrote a drafter inside its base's folder, convert a checkpoint inside the base's or the drafter's,
    train a drafter inside its base's: each output sat among the files it was made from."""
    base, drafter = parts
    data = tmp_path / "d.jsonl"
    data.write_text('{"question": "q", "answer": "a"}\n')
    before = {f: files(f) for f in (base, drafter)}
    runs = [("init-drafter", "--base", base, "--output", base / "d"),
            ("convert", "--base", base, "--drafter", drafter, "--output", base / "ck"),
            ("convert", "--base", base, "--drafter", drafter, "--output", drafter / "sub" / "ck", "--dry-run"),
            ("train", "--base", base, "--data", data, "--output", base / "d", "--cache-dir", tmp_path / "c")]
    for args in runs:
        assert_one_line_error(run_cli(*args), "is inside the input folder", "choose an --output outside")
    assert {f: files(f) for f in (base, drafter)} == before


def test_an_output_inside_an_earlier_output_is_refused(parts, ckpt, tmp_path):
    """`train --output d1/sub` wrote d1/sub/ and d1/sub.train-state.pt inside the earlier drafter d1, and a later
    `train --output d1 --force` (or --resume) then refused d1 for holding them. An output inside an earlier drafter,
    checkpoint or engine folder is refused before any work, naming the folder; convert's, init-drafter's and
    build's too."""
    base, drafter = parts
    earlier = tmp_path / "d1"
    shutil.copytree(drafter, earlier)
    before = files(earlier)
    data = tmp_path / "d.jsonl"
    data.write_text('{"question": "q", "answer": "a"}\n')
    from test_train_data import make_chat_base

    chat_base = make_chat_base(tmp_path / "chat_base")  # train needs a tokenizer first
    runs = [("train", "--base", chat_base, "--data", data, "--output", earlier / "sub", "--cache-dir", tmp_path / "c"),
            ("init-drafter", "--base", base, "--output", earlier / "a" / "b"),
            ("convert", "--base", base, "--drafter", drafter, "--output", earlier / "ck", "--dry-run")]
    for args in runs:
        assert_one_line_error(run_cli(*args), f"is inside {earlier}, an earlier drafter folder",
                              f"choose an --output outside {earlier}")
    assert files(earlier) == before and not (tmp_path / "c").exists()
    inside_ckpt = run_cli("convert", "--base", base, "--drafter", drafter, "--output", Path(ckpt) / "again")
    assert_one_line_error(inside_ckpt, f"is inside {ckpt}, an earlier checkpoint folder")
    assert_one_line_error(run_cli("build", "--checkpoint-dir", ckpt, "--output-dir", earlier / "engine", "--dry-run"),
                          f"is inside {earlier}, an earlier drafter folder", f"choose an --output-dir outside {earlier}")
    assert files(earlier) == before


def test_init_drafter_does_not_replace_a_folder_made_during_its_run_without_force(parts, tmp_path, monkeypatch):
    """save_drafter replaced its folder whatever --force said: one made at --output after init-drafter checked it
    free went without a word."""
    import redrafter_trt.base_sample as base_sample

    base, _ = parts
    out = tmp_path / "d"
    real = base_sample.record_base_sample
    monkeypatch.setattr(base_sample, "record_base_sample", lambda b: (out.mkdir(), real(b))[1])
    assert_one_line_error(run_cli("init-drafter", "--base", base, "--output", out), "already exists", "--force")
    assert out.is_dir() and not list(out.iterdir())


def test_force_replaces_only_empty_folders_and_earlier_outputs(parts, tmp_path, monkeypatch):
    """A mistyped --output with --force must not wipe a project folder (a review: notes.txt was deleted)."""
    base, drafter = parts
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    (project / "notes.txt").write_text("important")
    before = files(project)
    result = run_cli("convert", "--base", base, "--drafter", drafter, "--output", project, "--force")
    assert_one_line_error(result, "not an earlier ReDrafter output", "another --output")
    assert files(project) == before
    (project / "notes.txt").unlink()
    shutil.rmtree(project / "src")
    (project / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')  # another model's folder
    assert_one_line_error(run_cli("init-drafter", "--base", base, "--output", project, "--force"), "holds config.json")
    (project / "config.json").unlink()  # empty now
    assert run_cli("convert", "--base", base, "--drafter", drafter, "--output", project, "--force").exit_code == 0
    assert run_cli("convert", "--base", base, "--drafter", drafter, "--output", project, "--force").exit_code == 0
    assert run_cli("init-drafter", "--base", base, "--output", tmp_path / "d").exit_code == 0
    assert run_cli("init-drafter", "--base", base, "--output", tmp_path / "d", "--force").exit_code == 0
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)  # `--output .` converted, then raised "has an empty name"
    assert_one_line_error(run_cli("convert", "--base", base, "--drafter", drafter, "--output", ".", "--force"),
                          "the current folder", "choose another --output")
    assert run_cli("convert", "--base", base, "--drafter", drafter, "--output", "../work2").exit_code == 0
    assert json.loads((tmp_path / "work2" / "config.json").read_text())["producer"]["name"] == "redrafter-trt"


def test_force_refuses_an_earlier_output_that_holds_the_users_own_files(parts, tmp_path):
    """init-drafter --force over its earlier drafter that also held the user's notes.md and eval/ deleted them (a
    README walk-through): the folder is replaced whole, so --force refuses it, naming them, and replaces what it wrote
    itself (convert's rank files of another --tp-size too) as before."""
    base, drafter = parts
    out, ck = tmp_path / "d", tmp_path / "ck"
    assert run_cli("init-drafter", "--base", base, "--output", out).exit_code == 0
    (out / "notes.md").write_text("mine")
    (out / "eval").mkdir()
    (out / "eval" / "scores.json").write_text("{}")
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    result = run_cli("init-drafter", "--base", base, "--output", out, "--force", "--seed", 1)
    assert_one_line_error(result, "eval, notes.md", "move them out", "another --output")
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    shutil.move(out / "notes.md", tmp_path / "notes.md")
    shutil.move(out / "eval", tmp_path / "eval")
    assert run_cli("init-drafter", "--base", base, "--output", out, "--force", "--seed", 1).exit_code == 0

    assert run_cli("convert", "--base", base, "--drafter", drafter, "--output", ck, "--tp-size", 2).exit_code == 0
    assert run_cli("convert", "--base", base, "--drafter", drafter, "--output", ck, "--force").exit_code == 0
    assert sorted(p.name for p in ck.iterdir()) == ["config.json", "rank0.safetensors"]
    (ck / "README.md").write_text("mine")
    assert_one_line_error(run_cli("convert", "--base", base, "--drafter", drafter, "--output", ck, "--force"),
                          "holds README.md", "another --output")
    assert (ck / "README.md").read_text() == "mine"


def test_output_paths_through_symbolic_links(parts, tmp_path, monkeypatch):
    """`sym/../ckpt` is where the OS puts it (the link followed, as before 7d44cf3..); an output under a dangling
    link is refused before any work, not when the result is written (a review)."""
    base, drafter = parts
    (tmp_path / "elsewhere" / "deep").mkdir(parents=True)
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "sym").symlink_to(tmp_path / "elsewhere" / "deep")
    monkeypatch.chdir(tmp_path / "work")
    result = run_cli("convert", "--base", base, "--drafter", drafter, "--output", "sym/../ckpt")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "elsewhere" / "ckpt" / "config.json").exists() and not (tmp_path / "work" / "ckpt").exists()
    (tmp_path / "work" / "dangling").symlink_to(tmp_path / "missing")
    assert_one_line_error(run_cli("convert", "--base", base, "--drafter", drafter, "--output", "dangling/out"),
                          "dangling symbolic link")
    assert_one_line_error(run_cli("init-drafter", "--base", base, "--output", "dangling/a/b"), "dangling")


def test_train_output_over_its_data_or_a_file(parts, tmp_path):
    data = tmp_path / "data" / "d.jsonl"
    data.parent.mkdir()
    data.write_text('{"question": "q", "answer": "a"}\n')
    result = run_cli("train", "--base", parts[0], "--data", data, "--output", data.parent, "--force")
    assert_one_line_error(result, "would delete the input")
    assert data.exists()
    (tmp_path / "f").write_text("x")
    assert_one_line_error(run_cli("train", "--base", parts[0], "--data", data, "--output", tmp_path / "f"),
                          "is a file", "folder path")
    result = run_cli("train", "--base", parts[0], "--data", data, "--output", tmp_path / "o", "--cache-dir", tmp_path / "f")
    assert_one_line_error(result, "--cache-dir", "is a file")


@pytest.mark.parametrize("fields, needle", [
    ({"num_hidden_layers": 3}, "missing tensors: model.layers.2."),  # transformers made layer 2 up at random
    ({"hidden_size": 128, "head_dim": None}, "model.norm.weight (64,) != (128,)"),  # its RuntimeError traceback
])
def test_train_checks_the_bases_tensors(parts, tmp_path, fields, needle):
    """A review: train loaded a base whose config.json disagreed with its weights through transformers, which
    initialised missing layers at random without a word (a drafter trained on a broken base) or raised a
    RuntimeError traceback for misshapen ones; it now refuses it up front, as convert does."""
    rewrite_config(parts[0], **fields)
    data = tmp_path / "d.jsonl"
    data.write_text('{"question": "q", "answer": "a"}\n')
    result = run_cli("train", "--base", parts[0], "--data", data, "--output", tmp_path / "o", "--cache-dir",
                     tmp_path / "cache")
    assert_one_line_error(result, needle, "re-download the model")
    assert not (tmp_path / "o").exists() and not (tmp_path / "cache").exists()


def test_train_cache_dir_checked_before_the_base_runs(parts, tmp_path):
    """A review: an unwritable --cache-dir failed only when the first cache file was written, after the base had run
    over every example ('/proc/x: No such file or directory'); --cache-dir BASE put hidden-*.safetensors among the
    model's weights."""
    data = tmp_path / "d.jsonl"
    data.write_text('{"question": "q", "answer": "a"}\n')
    train = ["train", "--base", parts[0], "--data", data, "--output", tmp_path / "o", "--cache-dir"]
    assert_one_line_error(run_cli(*train, NOT_WRITABLE), f"cannot write in --cache-dir {NOT_WRITABLE}",
                          "choose another --cache-dir")
    before = files(parts[0])
    assert_one_line_error(run_cli(*train, parts[0]), "is the base folder", "choose a --cache-dir outside it")
    assert files(parts[0]) == before and not (tmp_path / "o").exists()


def test_train_cache_dir_inside_the_base_the_output_or_a_model_folder_is_refused(parts, ckpt, tmp_path):
    """A review: only a --cache-dir equal to --base was refused. `--cache-dir base/cache` exited 0 with bases/,
    hidden-* and teacher-* written into the base model's folder; `--cache-dir DRAFTER` (or CKPT) put them in an earlier
    output, so that a later `convert --output CKPT --force` refused it for holding them. A cache inside --base,
    --output or any model, drafter or checkpoint folder (one holding config.json) is refused before any work."""
    from test_train_data import make_chat_base

    base, drafter = make_chat_base(tmp_path / "chat_base"), parts[1]  # train needs a tokenizer first
    data = tmp_path / "d.jsonl"
    data.write_text('{"question": "q", "answer": "a"}\n')
    train = ["train", "--base", base, "--data", data, "--output", tmp_path / "o", "--cache-dir"]
    before = {f: files(f) for f in (base, drafter, Path(ckpt))}
    for cache, needle in ((base / "cache", f"is inside the base folder {base}"),
                          (tmp_path / "o" / "cache", f"is inside the --output folder {tmp_path / 'o'}"),
                          (tmp_path / "o", f"is the --output folder {tmp_path / 'o'}"),
                          (drafter, f"is {drafter}, an earlier drafter folder"),
                          (drafter / "cache", f"is inside {drafter}, an earlier drafter folder"),
                          (Path(ckpt) / "c", f"is inside {ckpt}, an earlier checkpoint folder")):
        assert_one_line_error(run_cli(*train, cache), f"--cache-dir {cache} {needle}", "choose a --cache-dir outside")
    other = tmp_path / "model"
    shutil.copytree(base, other)
    assert_one_line_error(run_cli(*train, other / "c"), f"is inside {other}, a model folder (it holds config.json)")
    assert {f: files(f) for f in (base, drafter, Path(ckpt))} == before and not (tmp_path / "o").exists()


def test_train_cache_dir_that_is_the_base_under_another_name_is_refused(parts, second_name, tmp_path):
    """--cache-dir and --base were compared by name: `--cache-dir Base` for the base `base` on a Mac's case-insensitive
    disk put the cache among the model's weights (and its summary line said to delete that folder to free space)."""
    here, alias = second_name
    base = Path(shutil.move(parts[0], here / "base"))
    data = tmp_path / "d.jsonl"
    data.write_text('{"question": "q", "answer": "a"}\n')
    before = files(base)
    assert_one_line_error(run_cli("train", "--base", base, "--data", data, "--output", tmp_path / "o", "--cache-dir",
                                  alias / "base"), "is the base folder", "choose a --cache-dir outside it")
    assert files(base) == before and not (tmp_path / "o").exists()


def test_output_that_is_a_file_or_unwritable(parts, tmp_path):
    (tmp_path / "out").write_text("not a folder")
    result = run_cli("convert", "--base", parts[0], "--drafter", parts[1], "--output", tmp_path / "out", "--force")
    assert_one_line_error(result, "is a file")
    assert (tmp_path / "out").read_text() == "not a folder"
    result = run_cli("convert", "--base", parts[0], "--drafter", parts[1], "--output", f"{NOT_WRITABLE}/ck")
    assert_one_line_error(result, "cannot write in", "choose another --output")
    assert_one_line_error(run_cli("init-drafter", "--base", parts[0], "--output", f"{NOT_WRITABLE}/d"), "cannot write")


def test_the_writability_probe_makes_no_folders(tmp_path):
    """It once made the missing parents of --output, left behind when the run was then refused."""
    from redrafter_trt.output import writable_folder

    assert writable_folder(tmp_path / "a" / "b") is None and not (tmp_path / "a").exists()
    (tmp_path / "afile").write_text("")
    assert writable_folder(tmp_path / "afile" / "b").endswith("afile is not a folder")
    assert writable_folder(Path(NOT_WRITABLE) / "b") is not None and not Path(NOT_WRITABLE).exists()


def test_output_json_in_an_unwritable_folder(ckpt, tiny_llama):
    result = run_cli("acceptance", "--checkpoint-dir", ckpt, "--tokenizer-dir", tiny_llama, "--prompts", "x",
                     "--output-json", "/proc/sys/out.json")
    assert_one_line_error(result, "cannot write in /proc/sys", "write elsewhere")


def test_an_input_file_that_is_a_pipe(ckpt, tiny_llama, tmp_path):
    """`--input-file <(jq ...)` (a pipe, /dev/fd/63), a named pipe: the error said the file did not exist, while the
    shell had just made it. Refused as a pipe, before it is opened (a named pipe without a writer blocks the open)."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    runs = [("run", "--checkpoint-dir", ckpt, "--tokenizer-dir", tiny_llama, "--input-file", fifo),
            ("acceptance", "--checkpoint-dir", ckpt, "--tokenizer-dir", tiny_llama, "--prompts", fifo),
            ("train", "--base", tiny_llama, "--data", fifo, "--output", tmp_path / "d", "--cache-dir", tmp_path / "c")]
    for args in runs:
        assert_one_line_error(run_cli(*args), f"{fifo} is a pipe or device, not a file", "save its text in a file")
    assert not (tmp_path / "d").exists()


def test_an_empty_path_is_refused_as_empty(parts, ckpt, tiny_llama, tmp_path):
    """A review: `convert --output ''` said "output folder <cwd> already exists: pass --force" (and with --force
    refused the current folder), `run --output-json ''` said ". is not a regular file (a device, pipe or socket...)":
    '' is the current folder to pathlib. Every path option of every command refuses '' as empty."""
    base, drafter = parts
    data = tmp_path / "d.jsonl"
    data.write_text('{"question": "q", "answer": "a"}\n')
    before = files(tmp_path)
    runs = [(("convert", "--base", base, "--drafter", drafter, "--output", ""), "--output"),
            (("convert", "--base", base, "--drafter", drafter, "--output", "", "--force"), "--output"),
            (("convert", "--base", "", "--drafter", drafter, "--output", tmp_path / "ck"), "--base"),
            (("run", "--checkpoint-dir", ckpt, "--tokenizer-dir", tiny_llama, "--input-text", "hi", "--output-json",
              ""), "--output-json"),
            (("run", "--checkpoint-dir", ckpt, "--tokenizer-dir", "", "--input-text", "hi"), "--tokenizer-dir"),
            (("train", "--base", base, "--data", data, "--output", tmp_path / "o", "--cache-dir", ""), "--cache-dir"),
            (("bench", "--checkpoint-dir", ckpt, "--tokenizer-dir", tiny_llama, "--prompts", data, "--plot", ""),
             "--plot"),
            (("inspect", ""), "FOLDER"),
            (("convert", "--config", "", "--base", base, "--drafter", drafter, "--output", tmp_path / "ck"),
             "--config")]
    for args, option in runs:
        assert_one_line_error(run_cli(*args), f"{option} is empty", "pass a")
    assert files(tmp_path) == before


@pytest.mark.parametrize("command, option", [("run", "--output-json"), ("acceptance", "--output-json"),
                                             ("bench", "--plot")])
def test_output_file_on_a_pipe_or_device(tmp_path, command, option):
    """`--output-json /dev/full` (or /dev/stdout, a named pipe) was written as a sibling renamed over it: as root, a
    plain file replaced the device node /dev/full for every program of the host. Refused while parsing options."""
    fifo, folder = tmp_path / "fifo", tmp_path / "in"
    os.mkfifo(fifo)
    folder.mkdir()
    inputs = ["--input-text", "hi"] if command == "run" else ["--prompts", folder / "p.jsonl"]
    result = run_cli(command, option, fifo, "--checkpoint-dir", folder, "--tokenizer-dir", folder, *inputs)
    assert_one_line_error(result, f"{fifo} is not a regular file", "pass a file path")
    assert fifo.is_fifo()


def test_a_copied_cache_snapshot_of_dangling_links(parts, ckpt, smollm2, tmp_path):
    """A Hugging Face cache snapshot is relative symbolic links into ../../blobs; `cp -r` copies the links, which then
    point nowhere. `ls` shows config.json and tokenizer.json, but the errors said config.json was missing and the
    folder held no tokenizer file."""
    snapshot = tmp_path / "hub" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    for folder, name in [(parts[0], "base"), (parts[1], "drafter"), (smollm2, "tok")]:
        for f in folder.iterdir():
            blob = tmp_path / "hub" / "blobs" / f"{name}-{f.name}"
            blob.parent.mkdir(exist_ok=True)
            shutil.copy(f, blob)
            (snapshot / name).mkdir(exist_ok=True)
            (snapshot / name / f.name).symlink_to(Path("../../../blobs") / blob.name)
        copied = tmp_path / f"copied-{name}"
        shutil.copytree(snapshot / name, copied, symlinks=True)  # `cp -r`
    needle = "which does not exist", "copy it with `cp -rL`"
    base, drafter = tmp_path / "copied-base", tmp_path / "copied-drafter"
    out = tmp_path / "out"
    assert_one_line_error(run_cli("convert", "--base", base, "--drafter", parts[1], "--output", out),
                          f"{base / 'config.json'} is a symbolic link to ../../../blobs/base-config.json", *needle)
    assert_one_line_error(run_cli("convert", "--base", parts[0], "--drafter", drafter, "--output", out),
                          f"{drafter / 'config.json'} is a symbolic link", *needle)
    assert_one_line_error(run_cli("init-drafter", "--base", base, "--output", out), "config.json is a symbolic", *needle)
    tok = tmp_path / "copied-tok"
    assert_one_line_error(run_cli("run", "--checkpoint-dir", ckpt, "--tokenizer-dir", tok, "--input-text", "hi"),
                          f"{tok / 'tokenizer.json'} is a symbolic link", *needle)
    for folder, source in [(base, parts[0]), (drafter, parts[1])]:  # the weights' links alone dangle
        (folder / "config.json").unlink()
        shutil.copy(source / "config.json", folder)
    assert_one_line_error(run_cli("convert", "--base", base, "--drafter", parts[1], "--output", out),
                          f"{base / 'model.safetensors'} is a symbolic link", *needle)
    assert_one_line_error(run_cli("convert", "--base", parts[0], "--drafter", drafter, "--output", out),
                          f"{drafter / 'model.safetensors'} is a symbolic link", *needle)
    assert not out.exists()


def test_a_cache_snapshot_whose_links_resolve_loads_beside_a_dangling_optional_file(smollm2, tmp_path):
    """A review: a snapshot laid out as huggingface_hub does (snapshots/REV/* -> ../../blobs/*) whose tokenizer.json
    loads, beside one link to nothing (a tokenizer.model whose blob was removed), was refused naming the dangling
    link, though transformers loads the folder; the link is named only when no tokenizer file can be read."""
    from redrafter_trt.tokens import auto_tokenizer

    snapshot, blobs = tmp_path / "hub" / "snapshots" / "abc", tmp_path / "hub" / "blobs"
    snapshot.mkdir(parents=True)
    blobs.mkdir()
    for f in smollm2.glob("*.json*"):
        shutil.copy(f, blobs / f.name)
        (snapshot / f.name).symlink_to(Path("../../blobs") / f.name)
    (snapshot / "tokenizer.model").symlink_to("../../blobs/removed")
    assert auto_tokenizer(snapshot)("ReDrafter")["input_ids"] == auto_tokenizer(smollm2)("ReDrafter")["input_ids"]


@pytest.mark.parametrize("command", ["init-drafter", "convert"])
def test_a_full_disk_is_one_line_and_leaves_nothing(parts, tmp_path, small_file_limit, command):
    """init-drafter's drafter is written by safetensors, whose failed write is its own SafetensorError, not an
    OSError: a full disk ended init-drafter (and train's final save) in a traceback, exit 1. A write's error names no
    file: convert's said `No space left on device` without saying where."""
    out = tmp_path / "out"
    extra = ("--drafter", parts[1], "--num-beams", 2, "--draft-len", 2) if command == "convert" else ()
    result = run_cli(command, "--base", parts[0], "--output", out, *extra)
    assert_one_line_error(result, f"{out}: File too large", "free disk space")  # the failed write's output named
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base", "drafter"]


def test_convert_leaves_no_scratch_folder(parts, tmp_path):
    out = tmp_path / "ck"
    assert run_cli("convert", "--base", parts[0], "--drafter", parts[1], "--output", out).exit_code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base", "ck", "drafter"]


def test_text_files_that_are_not_utf8(parts, ckpt, tiny_llama, smollm2, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(b'\xff\xfe{"prompt": "x"}\n')
    assert_one_line_error(run_cli("run", "--checkpoint-dir", ckpt, "--tokenizer-dir", tiny_llama, "--input-file", bad),
                          "not UTF-8", "save it as UTF-8")
    assert_one_line_error(run_cli("train", "--base", smollm2, "--data", bad, "--output", tmp_path / "o"), "not UTF-8")
    (tmp_path / "bad.yaml").write_bytes(b"\xff")
    assert_one_line_error(run_cli("run", "--config", tmp_path / "bad.yaml"), "not UTF-8", "--config")
    (parts[1] / "config.json").write_bytes(b'{"hidden_size": "\xff"}')
    assert_one_line_error(run_cli("convert", "--base", parts[0], "--drafter", parts[1], "--output", tmp_path / "ck"),
                          "not UTF-8")


@pytest.mark.parametrize("file, edit", [
    ("tokenizer_config.json", lambda raw: None),  # null
    ("tokenizer_config.json", lambda raw: [raw]),
    ("tokenizer_config.json", lambda raw: {**raw, "eos_token": 5}),
    ("tokenizer_config.json", lambda raw: {**raw, "model_max_length": "long"}),  # fails every encoding
    ("tokenizer.json", lambda raw: {}),
    pytest.param("special_tokens_map.json", lambda raw: [raw], marks=pytest.mark.skipif(
        not TRANSFORMERS_5, reason="transformers 4.x ignores a special_tokens_map.json that is not a mapping")),
])
def test_malformed_tokenizer_files_are_one_line(ckpt, tmp_path, file, edit):
    """A review: a tokenizer_config.json holding a list, null or an eos_token number (or a tokenizer.json without its
    keys) was an AttributeError / TypeError / KeyError traceback from transformers; a model_max_length written as
    text was one at the first prompt's encoding."""
    from test_bench import save_byte_tokenizer

    tok = tmp_path / "tok"
    save_byte_tokenizer(tok)
    path = tok / file
    raw = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps(edit(raw)))
    result = run_cli("run", "--checkpoint-dir", ckpt, "--tokenizer-dir", tok, "--input-text", "hi",
                     "--max-output-len", 1)
    assert_one_line_error(result, f"cannot load a tokenizer from {tok}", "--tokenizer-dir")


@pytest.mark.parametrize("entries, lacking", [
    ([{"template": "{{ messages }}"}], 'without "name"'),
    ([{"name": "default", "template": "{{ messages }}"}, {"name": "tool_use"}], 'without "template"'),
    (["{{ messages }}"], "that is not an object"),
])
def test_a_chat_template_list_entry_it_cannot_read_is_named(ckpt, tmp_path, entries, lacking):
    """The bad-input sweep: a tokenizer_config.json whose chat_template list had an entry without "name" gave the
    reason `('name')` (transformers' KeyError) and said to pass another folder; it names the entry and the fix."""
    from test_bench import save_byte_tokenizer

    tok = tmp_path / "tok"
    save_byte_tokenizer(tok)
    path = tok / "tokenizer_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "chat_template": entries}))
    result = run_cli("run", "--checkpoint-dir", ckpt, "--tokenizer-dir", tok, "--input-text", "hi",
                     "--max-output-len", 1)
    assert_one_line_error(result, f"the chat_template list of {path} has an entry {lacking} (entry {len(entries)} of "
                                  f"{len(entries)})", '{"name": ..., "template": ...}', "the template's text")


def test_a_tokenizer_dir_without_tokenizer_files_says_so(ckpt, tmp_path):
    """README walk: `--tokenizer-dir CKPT` (the checkpoint, not the base), or an empty folder, gave transformers'
    reason cut at its first line, 'Couldn't instantiate the backend tokenizer from one of: ', which names nothing."""
    empty = tmp_path / "empty"
    empty.mkdir()
    for folder in (ckpt, empty):
        result = run_cli("run", "--checkpoint-dir", ckpt, "--tokenizer-dir", folder, "--input-text", "hi")
        assert_one_line_error(result, f"cannot load a tokenizer from {folder} (it holds none of tokenizer.json, "
                              f"tokenizer_config.json, tokenizer.model, vocab.json, tekken.json, tokenizer.model.v*)", "--tokenizer-dir")


def test_a_drafter_as_tokenizer_dir_is_one_line_in_a_fresh_process(ckpt, tiny_drafter):
    """README walk: `run --tokenizer-dir DRAFTER` printed transformers' own warning ('You are using a model of type
    `recurrent_drafting_drafter` ...', read from the drafter's config.json) above the error; a fresh process, since
    transformers' logging writes to the stderr of the process that imported it, not to CliRunner's."""
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run([sys.executable, "-m", "redrafter_trt", "run", "--checkpoint-dir", str(ckpt),
                           "--tokenizer-dir", str(tiny_drafter), "--input-text", "hi"],
                          capture_output=True, text=True, timeout=120, env=env)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"error: cannot load a tokenizer from {tiny_drafter} (it holds none of "), lines[0]


def test_every_tokenizer_dir_without_tokenizer_files_is_refused_before_transformers(ckpt, tiny_drafter, tmp_path,
                                                                                     monkeypatch):
    """run, bench, acceptance and serve (a checkpoint or an engine) load --tokenizer-dir through one check: a folder
    holding none of the tokenizer files never reaches transformers, which would speak about it first."""
    import transformers

    from test_serve_engine import make_engine

    asked = []

    def record(folder, *args, **kwargs):
        asked.append(folder)
        raise OSError("transformers was asked")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", record)
    monkeypatch.setattr(transformers.PreTrainedTokenizerFast, "from_pretrained", record)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": "hi"}) + "\n")
    grid = ("--checkpoint-dir", ckpt, "--prompts", prompts, "--max-new-tokens", 2)
    commands = [("run", "--checkpoint-dir", ckpt, "--input-text", "hi"), ("bench", *grid), ("acceptance", *grid),
                ("serve", "--checkpoint-dir", ckpt, "--port", 0, "--max-output-len", 8),
                ("serve", "--engine-dir", make_engine(tmp_path / "engine", tp=1), "--dry-run")]
    for command in commands:
        result = run_cli(*command, "--tokenizer-dir", tiny_drafter)
        assert_one_line_error(result, f"cannot load a tokenizer from {tiny_drafter} (it holds none of ")
    assert asked == []


def save_tekken_mistral(folder: Path) -> Path:
    """A Mistral base's tokenizer as Mistral ships it in some repositories: tekken.json beside config.json, with no
    tokenizer.json or tokenizer_config.json (256 byte tokens, one merge, three special tokens)."""
    import base64

    folder.mkdir()
    vocab = [{"rank": i, "token_bytes": base64.b64encode(bytes([i])).decode(), "token_str": None} for i in range(256)]
    vocab.append({"rank": 256, "token_bytes": base64.b64encode(b"Re").decode(), "token_str": "Re"})
    specials = [{"rank": i, "token_str": s, "is_control": True} for i, s in enumerate(("<unk>", "<s>", "</s>"))]
    (folder / "tekken.json").write_text(json.dumps({
        "config": {"pattern": r"\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+|\s+", "num_vocab_tokens": 257,
                   "default_vocab_size": 260, "default_num_special_tokens": 3, "version": "v7"},
        "vocab": vocab, "special_tokens": specials}))
    (folder / "config.json").write_text(json.dumps({"architectures": ["MistralForCausalLM"], "model_type": "mistral",
                                                    "vocab_size": 260}))
    return folder


@pytest.mark.parametrize("name", ["tekken.json", "tokenizer.model.v3"])
def test_a_mistral_tokenizer_without_tokenizer_json_reaches_transformers(tmp_path, monkeypatch, name):
    """977b3db refused a folder holding none of tokenizer.json, tokenizer_config.json, tokenizer.model, vocab.json
    before transformers saw it, and with it a Mistral base shipping only its own format: tekken.json (transformers 5
    reads it itself) or a versioned tokenizer.model.v3 (read through mistral-common)."""
    import transformers

    from redrafter_trt.tokens import auto_tokenizer

    asked = []

    def record(folder, *args, **kwargs):
        asked.append(Path(folder))
        raise OSError("transformers was asked")

    folder = tmp_path / "mistral"
    folder.mkdir()
    (folder / name).write_text("{}")
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", record)
    with pytest.raises(Exception, match="transformers was asked"):
        auto_tokenizer(folder)
    assert asked == [folder]


@pytest.mark.skipif(not TRANSFORMERS_5, reason="transformers 4 reads tekken.json through mistral-common only")
def test_a_tekken_only_mistral_tokenizer_loads(tmp_path):
    """A tekken.json-only Mistral folder loads as transformers loads it (977b3db refused it as holding no tokenizer)."""
    import transformers

    from redrafter_trt.tokens import auto_tokenizer

    folder = save_tekken_mistral(tmp_path / "mistral")
    assert auto_tokenizer(folder)("ReDrafter")["input_ids"] == \
        transformers.AutoTokenizer.from_pretrained(folder)("ReDrafter")["input_ids"]


def test_a_chat_template_that_does_not_render_is_one_line(ckpt, tmp_path):
    from test_bench import save_byte_tokenizer

    tok = tmp_path / "tok"
    save_byte_tokenizer(tok)
    path = tok / "tokenizer_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "chat_template": "{% for m in messages %}{{ m.content"}))
    result = run_cli("run", "--checkpoint-dir", ckpt, "--tokenizer-dir", tok, "--input-text", "hi", "--chat",
                     "--max-output-len", 1)
    assert_one_line_error(result, "chat template does not render", "turn chat off")


@pytest.mark.parametrize("template, named", [
    ("{{ 1/0 }}", "ZeroDivisionError: division by zero"),
    ("{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}", "RecursionError: maximum recursion depth"),
    ("{% for i in range(10**9) %}{% endfor %}", "OverflowError: Range too big"),  # jinja's sandbox refuses it
])
def test_a_chat_template_raising_a_python_error_is_one_line(ckpt, tmp_path, template, named):
    """A review: a chat template whose code raised a plain Python error (a division by zero, endless recursion, a
    range the sandbox refuses) was a traceback in run, bench, acceptance and train, where serve answered 400: any
    error raised by the template's own code is the template's, named in one line."""
    from test_bench import save_byte_tokenizer
    from test_train_data import make_chat_base

    tok = tmp_path / "tok"
    save_byte_tokenizer(tok)
    (tok / "chat_template.jinja").write_text(template)
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "hi"}\n')
    for args in (("run", "--input-text", "hi", "--chat", "--max-output-len", 1),
                 ("bench", "--prompts", prompts, "--max-new-tokens", 1, "--chat"),
                 ("acceptance", "--prompts", prompts, "--max-new-tokens", 1, "--chat")):
        result = run_cli(*args, "--checkpoint-dir", ckpt, "--tokenizer-dir", tok)
        assert_one_line_error(result, "chat template", named)
    base = make_chat_base(tmp_path / "base")
    (base / "chat_template.jinja").write_text(template)
    data = tmp_path / "d.jsonl"
    data.write_text('{"question": "q", "answer": "a"}\n')
    result = run_cli("train", "--base", base, "--data", data, "--output", tmp_path / "o", "--cache-dir",
                     tmp_path / "c")
    assert_one_line_error(result, "chat template", named)


@pytest.mark.parametrize("content, needle", [("[1, 2]", "JSON list, not an object"), (None, "Is a directory")])
def test_drafter_config_that_is_no_object(parts, tmp_path, content, needle):
    path = parts[1] / "config.json"
    path.unlink()
    path.mkdir() if content is None else path.write_text(content)
    result = run_cli("convert", "--base", parts[0], "--drafter", parts[1], "--output", tmp_path / "ck")
    assert_one_line_error(result, needle)


DEEP = "[" * 3000 + "]" * 3000  # past the recursion limit Python's json reads nesting with (a RecursionError)
BIG = "1" + "0" * 5000  # past int()'s 4300 digits (a ValueError that is no JSONDecodeError)


@pytest.mark.parametrize("value, why", [(DEEP, "nested too deeply to read"), (BIG, "a number too long to read")],
                         ids=["deep", "big"])
def test_json_nested_too_deeply_or_holding_a_number_too_long_is_one_line_in_every_reader(parts, ckpt, smollm2,
                                                                                        tmp_path, value, why):
    """A fuzzing review: every JSON reader of the CLI caught JSONDecodeError alone, so JSON nested past Python's
    recursion limit (RecursionError) or an integer past int()'s 4300 digits (ValueError) was a traceback. `json_loads`
    raises both as a JSONDecodeError."""
    from test_bench import save_byte_tokenizer

    base, drafter = parts
    data = tmp_path / "data.jsonl"
    data.write_text('{"question": %s, "answer": "a"}\n' % value)
    tok = tmp_path / "tok"
    save_byte_tokenizer(tok)
    run = ("run", "--checkpoint-dir", ckpt, "--input-text", "hi", "--max-output-len", 1, "--tokenizer-dir")
    cases = [(("run", "--checkpoint-dir", ckpt, "--tokenizer-dir", tok, "--input-file", data), "line 1"),
             (("train", "--base", smollm2, "--data", data, "--output", tmp_path / "o"), "line 1"),
             *(((cmd, "--checkpoint-dir", ckpt, "--tokenizer-dir", tok, "--prompts", data), "line 1")
               for cmd in ("bench", "acceptance")),
             ((*run, tok, "--chat-template-kwargs", '{"a": %s}' % value), "--chat-template-kwargs")]
    for name in ("generation_config.json", "tokenizer_config.json"):
        other = tmp_path / name.split(".")[0]
        shutil.copytree(tok, other)
        (other / name).write_text('{"eos_token_id": %s}' % value)
        cases.append(((*run, other), f"{name} is not valid JSON"))
    (drafter / "config.json").write_text('{"hidden_size": %s}' % value)
    cases.append((("convert", "--base", base, "--drafter", drafter, "--output", tmp_path / "ck"), "config.json"))
    broken = tmp_path / "broken"
    shutil.copytree(ckpt, broken)
    (broken / "config.json").write_text('{"architecture": %s}' % value)
    cases += [(("run", "--checkpoint-dir", broken, "--tokenizer-dir", tok, "--input-text", "hi"), "config.json"),
              (("build", "--checkpoint-dir", broken, "--output-dir", tmp_path / "engine", "--dry-run"), "config.json")]
    engine = tmp_path / "engine-dir"
    engine.mkdir()
    (engine / "config.json").write_text('{"pretrained_config": %s}' % value)
    cases += [(("run", "--engine-dir", engine, "--tokenizer-dir", tok, "--input-text", "hi"), "config.json"),
              (("serve", "--dry-run", "--engine-dir", engine, "--tokenizer-dir", tok), "config.json")]
    for args, needle in cases:
        result = run_cli(*args)
        assert_one_line_error(result, needle, why)
        assert len(result.stderr) < 400, (args, result.stderr)
    inspected = run_cli("inspect", broken)
    assert inspected.exit_code == 1 and why in inspected.output and "Traceback" not in inspected.output


def test_architectures_as_a_string(parts, tmp_path):
    path = parts[0] / "config.json"
    path.write_text(json.dumps(json.loads(path.read_text()) | {"architectures": "LlamaForCausalLM"}))
    result = run_cli("convert", "--base", parts[0], "--drafter", parts[1], "--output", tmp_path / "ck")
    assert_one_line_error(result, "not a list of names")


def test_lengths_beyond_the_models_positions(smollm2, tmp_path):
    """SmolLM2 has 8192 positions: refused before decoding (not an 80 GB allocation, nor a silent run past them)."""
    args = ("--checkpoint-dir", smollm2_checkpoint(smollm2),
            "--tokenizer-dir", smollm2)
    assert_one_line_error(run_cli("run", *args, "--input-text", "hi", "--max-output-len", 100000), "8192 positions")
    long = tmp_path / "long.jsonl"
    long.write_text(json.dumps({"prompt": "hello " * 9000}) + "\n")
    assert_one_line_error(run_cli("run", *args, "--input-file", long, "--max-output-len", 4), "8192 positions",
                          "shorten it to 8188 tokens")
    for cmd in ("bench", "acceptance"):  # their option is --max-new-tokens (the message named run's)
        result = run_cli(cmd, *args, "--prompts", long, "--max-new-tokens", 10000)
        assert_one_line_error(result, f"{long} line 1: a ", "-token prompt + 10000 new tokens", "(--max-new-tokens below 8192)")


@pytest.mark.parametrize("args, needle", [
    (("--seed", "99999999999999999999999"), "--seed"),
    (("--temperature", "nan"), "finite number"),
    (("--temperature", "inf"), "finite number"),
])
def test_run_options_out_of_range(ckpt, tiny_llama, args, needle):
    result = run_cli("run", "--checkpoint-dir", ckpt, "--tokenizer-dir", tiny_llama, "--input-text", "hi", *args)
    assert_one_line_error(result, needle)


@pytest.mark.parametrize("flag, value", [("--draft-lens", "0"), ("--beams", "1,,2")])
def test_bench_grid_lists(ckpt, tiny_llama, flag, value):
    result = run_cli("acceptance", "--checkpoint-dir", ckpt, "--tokenizer-dir", tiny_llama, "--prompts", "x", flag, value)
    assert_one_line_error(result, "comma-separated list of integers >= 1")


def test_draft_layers_bounded(parts, tmp_path):
    result = run_cli("init-drafter", "--base", parts[0], "--output", tmp_path / "d", "--num-draft-layers", 100000)
    assert_one_line_error(result, "outside 0..64")


def test_exit_dim_bounded_by_the_base(parts, tmp_path):
    """A review: `init-drafter --exit-dim 100000000` was a traceback (50 GB asked for input_proj); a drafter larger
    than its base (it cannot speed it up) is refused before anything is allocated or written."""
    for exit_dim in (10 ** 8, 2000):
        result = run_cli("init-drafter", "--base", parts[0], "--output", tmp_path / "d", "--exit-dim", exit_dim)
        assert_one_line_error(result, f"--exit-dim {exit_dim} makes a drafter of", "or less (default")
    assert not (tmp_path / "d").exists()
    assert run_cli("init-drafter", "--base", parts[0], "--output", tmp_path / "d", "--exit-dim", 96).exit_code == 0


def test_exit_dim_refusal_names_the_widest_that_fits(parts, tmp_path):
    """A walk-through on a tiny tied Qwen2 (hidden 64, SmolLM2's 49152 tokens): init-drafter's default refused with
    "use a smaller --exit-dim (default 128)", naming no width that fits. It names the widest: it is taken, one more
    refused."""
    import re

    result = run_cli("init-drafter", "--base", parts[0], "--output", tmp_path / "d", "--exit-dim", 2000)
    assert_one_line_error(result, "makes a drafter of")
    fits = int(re.search(r"use --exit-dim (\d+) or less", result.output)[1])
    refused = run_cli("init-drafter", "--base", parts[0], "--output", tmp_path / "d", "--exit-dim", fits + 1)
    assert_one_line_error(refused, f"--exit-dim {fits + 1} makes a drafter of")
    assert run_cli("init-drafter", "--base", parts[0], "--output", tmp_path / "d", "--exit-dim", fits).exit_code == 0


def test_the_default_exit_dim_refused_is_called_the_default(tmp_path):
    """A review: `init-drafter` without --exit-dim, on a base whose drafter at the default width would outgrow it,
    said `--exit-dim 128 makes a drafter of ...`, naming a flag never typed: it says the default (2 x the hidden
    size) and how to pass a smaller one."""
    import re

    from tinymodels import make_hf

    base = make_hf(tmp_path / "base", "qwen2", tie=True, vocab_size=49152, num_hidden_layers=1)
    result = run_cli("init-drafter", "--base", base, "--output", tmp_path / "d")
    assert_one_line_error(result, "error: the default exit_dim 128 (2 x the hidden size 64) makes a drafter of ",
                          "; pass --exit-dim ")
    assert "--exit-dim 128" not in result.output, result.output
    fits = int(re.search(r"pass --exit-dim (\d+) or less", result.output)[1])
    assert run_cli("init-drafter", "--base", base, "--output", tmp_path / "d", "--exit-dim", fits).exit_code == 0


@pytest.mark.parametrize("H, V, layers, rnn", [(64, 1000, 1, True), (16, 5, 1, False), (16, 50, 1, True),
                                                (8, 49152, 2, True)])
def test_every_exit_dim_the_refusal_names_fits(H, V, layers, rnn):
    """E = 2H needs no input_proj, so it may fit where a narrower E does not: "--exit-dim 128 or less" was said where
    126 and 127 were refused in turn. Each width named fits (counted independently of the search: the drafter's
    tensors against the base's), and the one past "or less" does not."""
    import math
    import re
    from dataclasses import replace
    from types import SimpleNamespace

    from redrafter_trt.drafter import DrafterConfig, check_size, expected_shapes

    def size(cfg):
        return sum(math.prod(shape) for shape in expected_shapes(cfg).values())

    planned = DrafterConfig(hidden_size=H, exit_dim=5 * H, num_draft_layers=layers, rnn=rnn, vocab_size=V)
    widths = [E for E in range(1, 5 * H) if E != 2 * H]
    for limit in sorted({size(replace(planned, exit_dim=2 * H)) + d for d in (-1, 0, 1)}
                        | {size(replace(planned, exit_dim=E)) for E in widths[::7]}):
        base = SimpleNamespace(names=lambda: ["w"], shape=lambda name, n=limit: (n,))
        with pytest.raises(ConfigError) as e:
            check_size(planned, base, default_exit_dim=2 * H)
        fix = re.search(r"use (.*) \(default", str(e.value))[1]
        below = re.search(r"--exit-dim (\d+) or less", fix)
        named = [*range(1, int(below[1]) + 1)] if below else []
        named += [int(E) for E in re.findall(r"(?:, or|^--exit-dim) (\d+)$", fix)]
        assert named or fix == "a smaller --exit-dim", fix
        assert all(size(replace(planned, exit_dim=E)) <= limit for E in named), (limit, fix)
        if below:
            assert size(replace(planned, exit_dim=int(below[1]) + 1)) > limit, (limit, fix)


def rewrite_config(folder: Path, **fields) -> None:
    cfg = folder / "config.json"
    cfg.write_text(json.dumps({**json.loads(cfg.read_text()), **fields}))


@pytest.mark.parametrize("fields, needle", [
    ({"vocab_size": 300}, "model.embed_tokens.weight (256, 64) != (300, 64)"),  # head [256, H] into [300, H]
    ({"num_hidden_layers": 3}, "missing tensors: model.layers.2."),
    ({"num_key_value_heads": 4}, "k_proj.weight (32, 64) != (64, 64)"),
])
def test_init_drafter_checks_the_bases_tensors(parts, tmp_path, fields, needle):
    """A review: a base whose vocab_size disagreed with its lm_head was a RuntimeError traceback from init-drafter,
    and one whose layers or heads disagreed with config.json got a drafter that convert then refused."""
    rewrite_config(parts[0], **fields)
    result = run_cli("init-drafter", "--base", parts[0], "--output", tmp_path / "d")
    assert_one_line_error(result, needle, "re-download")
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("dtype, said", [(torch.float8_e5m2, "F8_E5M2"), (torch.complex64, "C64")])
@pytest.mark.parametrize("cmd", ["convert", "init-drafter", "train", "bench"])
def test_a_safetensors_base_in_a_dtype_no_reader_takes_is_refused(parts, ckpt, tmp_path, cmd, dtype, said):
    """A review: a safetensors base holding a float8_e5m2 or complex tensor was cast and used (convert, init-drafter,
    train, bench's baseline) where the same tensor in a pytorch_model.bin was refused: every path reads one table."""
    from safetensors.torch import load_file, save_file

    base, drafter = parts
    name = "model.layers.0.self_attn.q_proj.weight"
    t = load_file(base / "model.safetensors")
    save_file(t | {name: t[name].to(dtype)}, base / "model.safetensors")
    assert_one_line_error(run_cli(cmd, *base_reader_args(cmd, parts, ckpt, tmp_path)), f"base {base}: {name} is {said}",
                          "re-download or re-export")
    assert not (tmp_path / "o").exists()


def base_reader_args(cmd: str, parts, ckpt, tmp_path: Path) -> list:
    """The arguments of `cmd`, one of the commands that read a Hugging Face base's tensors, for the base of `parts`
    (written to tmp_path / "o" where it writes)."""
    base, drafter = parts
    data, prompts = tmp_path / "d.jsonl", tmp_path / "p.jsonl"
    data.write_text('{"question": "q", "answer": "a"}\n')
    prompts.write_text('{"prompt": "hi"}\n')
    if cmd == "bench":
        from test_bench import save_byte_tokenizer

        save_byte_tokenizer(tmp_path / "tok")
    return {"convert": ["--base", base, "--drafter", drafter, "--output", tmp_path / "o"],
            "init-drafter": ["--base", base, "--output", tmp_path / "o"],
            "train": ["--base", base, "--data", data, "--output", tmp_path / "o", "--cache-dir", tmp_path / "cache"],
            "bench": ["--checkpoint-dir", ckpt, "--tokenizer-dir", tmp_path / "tok", "--prompts", prompts,
                      "--hf-dir", base, "--max-new-tokens", 1]}[cmd]


@pytest.mark.parametrize("fields, needles, commands", [
    ({"hidden_act": "x"}, ["hidden_act is 'x', not an activation transformers computes"], ["train", "bench"]),
    ({"model_type": "llama4_text"}, ["model_type 'llama4_text' disagrees with architectures LlamaForCausalLM",
                                     "correct one of them"], ["train", "bench"]),
    *[({field: "x"}, [f"transformers refuses it (Validation error for field '{field}': TypeError: Field '{field}'"],
       ["train", "bench", "run"]) for field in ("initializer_range", "attention_dropout", "use_cache", "pad_token_id")],
])
def test_a_base_config_transformers_refuses_is_named(parts, ckpt, tmp_path, fields, needles, commands):
    """A review: a base config.json that transformers refuses was a traceback in train and bench --hf-dir (an unknown
    hidden_act's KeyError, transformers 5's field validation's TypeError, a model_type whose class is another model's:
    a ValueError in train's first forward pass, and bench's baseline a model of random weights), and in train and run
    the tokenizer was blamed ("has no usable tokenizer", "cannot load a tokenizer": AutoTokenizer reads config.json).
    Each names config.json and its field, refused before any work."""
    if not TRANSFORMERS_5 and "run" in commands:
        pytest.skip("transformers 4 does not type-check config fields")
    from test_bench import save_byte_tokenizer
    from test_train_data import make_chat_base

    base, chat_base = parts[0], make_chat_base(tmp_path / "chat_base")  # the checkpoint's base; one train takes
    save_byte_tokenizer(base)
    for folder in (base, chat_base):
        rewrite_config(folder, **fields)
    args = base_reader_args("train", (chat_base, parts[1]), ckpt, tmp_path)
    runs = {"train": (chat_base, ["train", *args]),
            "bench": (base, ["bench", "--checkpoint-dir", ckpt, "--tokenizer-dir", base, "--prompts",
                             tmp_path / "p.jsonl", "--hf-dir", base, "--max-new-tokens", 1]),
            "run": (base, ["run", "--checkpoint-dir", ckpt, "--tokenizer-dir", base, "--input-text", "hi"])}
    for cmd in commands:
        folder, cmd_args = runs[cmd]
        assert_one_line_error(run_cli(*cmd_args), f"{folder / 'config.json'}: ", *needles, "re-download")
    assert not (tmp_path / "o").exists() and not (tmp_path / "cache").exists()


@pytest.mark.parametrize("field", ["tie_word_embeddings", "attention_bias", "mlp_bias"])
@pytest.mark.parametrize("cmd", ["convert", "init-drafter"])
def test_a_truth_value_written_as_a_string_is_refused(parts, tmp_path, field, cmd):
    """A review: `"tie_word_embeddings": "false"` (a hand-edited config) was read as bool("false"), true: convert
    wrote a checkpoint for a tied base without a word. A truth value must be a JSON true or false."""
    rewrite_config(parts[0], **{field: "false"})
    args = ["--drafter", parts[1]] if cmd == "convert" else []
    result = run_cli(cmd, "--base", parts[0], *args, "--output", tmp_path / "o")
    assert_one_line_error(result, f"{field} is 'false', not true or false", "fix or re-download the config")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("record, needle", [
    ({"messages": [{"role": "user"}]}, "'user' message whose `value`/`content` is None"),
    ({"conversations": [{"from": "gpt", "value": 5}]}, "'gpt' message whose `value`/`content` is 5"),
    ({"question": "q", "answer": 5}, "`answer` is 5"),
    ({"question": "q", "answer": ""}, "prompts but no answers: pass --distill"),  # an empty answer is none
])
def test_train_data_errors_name_the_field(smollm2, tmp_path, record, needle):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps(record) + "\n")
    assert_one_line_error(run_cli("train", "--base", smollm2, "--data", data, "--output", tmp_path / "o"), needle)


def test_output_file_that_is_an_input_file_is_said_to_be_it(tmp_path):
    """`acceptance --output-json` naming its --prompts file was refused as '... prompts.jsonl is inside the input
    prompts.jsonl': a file holds nothing; it is that input."""
    from redrafter_trt.cli.params import check_output_file

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "hi"}\n')
    with pytest.raises(ConfigError, match=rf"^--output-json {prompts} is the input {prompts}: write it elsewhere$"):
        check_output_file(prompts, [tmp_path / "ckpt", prompts], "--output-json")
    with pytest.raises(ConfigError, match=rf"^--plot {tmp_path / 'ckpt' / 'b.png'} is inside the input "
                                          rf"{tmp_path / 'ckpt'}: write it elsewhere$"):
        check_output_file(tmp_path / "ckpt" / "b.png", [tmp_path / "ckpt", prompts], "--plot")


def test_output_json_inside_an_input_folder(ckpt, tiny_llama):
    target = Path(ckpt) / "config.json"
    before = target.read_text()
    result = run_cli("run", "--checkpoint-dir", ckpt, "--tokenizer-dir", tiny_llama, "--input-text", "hi",
                     "--output-json", target)
    assert_one_line_error(result, "is inside the input", "write it elsewhere")
    assert target.read_text() == before


# exclude_modules 0 or false (a fuzzing review): `or []` let them pass the check, and list(False) was a TypeError
# traceback in inspect, run and build
@pytest.mark.parametrize("quantization", ["FP8", [1], *({"quant_algo": "FP8", "exclude_modules": v}
                                                          for v in (5, 0, False))])
def test_inspect_names_a_malformed_quantization(ckpt, tiny_llama, tmp_path, quantization):
    copy = tmp_path / "ck"
    shutil.copytree(ckpt, copy)
    cfg = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps(cfg | {"quantization": quantization}))
    result = run_cli("inspect", copy)
    assert result.exit_code == 1 and "quantization is" in result.output and "Traceback" not in result.output
    assert_one_line_error(run_cli("run", "--checkpoint-dir", copy, "--tokenizer-dir", tiny_llama, "--input-text", "hi"),
                          "quantization is", "exclude_modules: null or a list of names")
    assert_one_line_error(run_cli("build", "--checkpoint-dir", copy, "--output-dir", tmp_path / "engine", "--dry-run"),
                          "quantization is")


@pytest.mark.parametrize("beams, draft_len", [(10 ** 30, 5), (5, 10 ** 6)])
def test_inspect_refuses_a_tree_beyond_the_context(ckpt, tmp_path, beams, draft_len):
    """Hand-edited beam counts no step could verify (the tree exceeds the model's positions) are a problem, and run
    refuses the checkpoint with one line instead of trying to allocate the tree."""
    copy = tmp_path / "ck"
    shutil.copytree(ckpt, copy)
    cfg = json.loads((copy / "config.json").read_text())
    assert cfg["max_position_embeddings"]
    cfg |= {"redrafter_num_beams": beams, "redrafter_draft_len_per_beam": draft_len}
    (copy / "config.json").write_text(json.dumps(cfg))
    result = run_cli("inspect", copy)
    assert result.exit_code == 1 and "exceed max_position_embeddings" in result.output
    assert_one_line_error(run_cli("run", "--checkpoint-dir", copy, "--tokenizer-dir", tmp_path, "--input-text", "hi"),
                          "exceed max_position_embeddings")


def apple_saved(drafter: Path, tmp_path: Path) -> Path:
    """A copy of `drafter` with the config.json Apple's trainer writes (`Drafter.save_pretrained`: transformers adds
    architectures ["Drafter"], dtype and its version, Apple's DrafterConfig num_lookback_tokens)."""
    copy = tmp_path / "apple_drafter"
    shutil.copytree(drafter, copy)
    cfg = json.loads((copy / "config.json").read_text())
    cfg |= {"architectures": ["Drafter"], "dtype": "float32", "num_lookback_tokens": -1, "transformers_version": "4.57.1"}
    (copy / "config.json").write_text(json.dumps(cfg))
    return copy


def test_inspect_names_a_model_drafter_or_engine_folder(tiny_llama, tiny_drafter, tmp_path):
    """A review: these said `config.json lacks architecture, ...: not a TensorRT-LLM checkpoint config` (inspect)
    and `... then re-convert it` (run, for an engine folder); a drafter Apple's trainer saved (architectures
    ["Drafter"]) was called a Hugging Face model."""
    engine = tmp_path / "engine"
    engine.mkdir()
    (engine / "config.json").write_text(json.dumps({"version": "1.2.0", "pretrained_config": {}, "build_config": {}}))
    for folder, kind, fix in ((tiny_llama, "a Hugging Face model", "redrafter-trt convert"),
                              (tiny_drafter, "an Apple ReDrafter drafter", "redrafter-trt convert"),
                              (apple_saved(tiny_drafter, tmp_path), "an Apple ReDrafter drafter", "redrafter-trt convert"),
                              (engine, "a TensorRT-LLM engine", "--engine-dir")):
        result = run_cli("inspect", folder)
        assert result.exit_code == 1 and f"problem: {folder} holds {kind}, not a ReDrafter checkpoint" in result.output
        assert fix in result.output
    assert_one_line_error(run_cli("run", "--checkpoint-dir", engine, "--tokenizer-dir", tmp_path, "--input-text", "hi"),
                          "holds a TensorRT-LLM engine", "--engine-dir")
    # serve was told to use `run --engine-dir`
    assert_one_line_error(run_cli("serve", "--checkpoint-dir", engine, "--tokenizer-dir", tmp_path),
                          "holds a TensorRT-LLM engine", "pass it to --engine-dir (`redrafter-trt run` or `serve`)")


def edited(ckpt, tmp_path, **fields) -> Path:
    """A copy of `ckpt` whose config.json has `fields` replaced (a float NaN is written as JSON's NaN)."""
    copy = tmp_path / "ck"
    shutil.copytree(ckpt, copy)
    cfg = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps(cfg | fields))
    return copy


def test_inspect_shows_the_sound_fields_beside_a_malformed_one(ckpt, tmp_path):
    """A review: one malformed field turned the header into `? dtype ? tp ?`."""
    result = run_cli("inspect", edited(ckpt, tmp_path, hidden_size=6.5, quantization=5))
    head = result.output.splitlines()
    assert result.exit_code == 1 and "ReDrafterForLLaMALM  dtype float32  tp 1" in head[0]
    assert head[1] == "  quantization: ?" and "problem: hidden_size is 6.5" in result.output


@pytest.mark.parametrize("text", ["{", "[1]", '{"architecture": "LlamaForCausalLM"}'])
def test_inspect_of_an_unread_config_claims_no_quantization(tmp_path, text):
    """A review: a config.json that is not JSON, not an object or lacks the model keys printed `quantization: none`."""
    (tmp_path / "config.json").write_text(text)
    result = run_cli("inspect", tmp_path)
    assert result.exit_code == 1 and result.output.splitlines()[1] == "  quantization: ?"


@pytest.mark.parametrize("field, named", [("num_hidden_layers", "tensors cannot hold num_hidden_layers 1000000000"),
                                          ("redrafter_num_layers", "redrafter_num_layers is 1000000000, must be an "
                                                                   "integer within 0..1024")])
def test_inspect_of_absurd_layer_counts_ends(ckpt, tmp_path, field, named):
    """A review: inspect (and run, through it) listed every tensor a billion layers would hold, and never ended. A
    drafter's count past any drafter's is a malformed field (the FP8 exclusions' check, run beside the tensors', names
    each drafter layer); the base's is told by its rank files, which cannot hold it."""
    copy = edited(ckpt, tmp_path, **{field: 10 ** 9})
    result = run_cli("inspect", copy)
    assert result.exit_code == 1 and named in result.output, result.output
    assert_one_line_error(run_cli("run", "--checkpoint-dir", copy, "--tokenizer-dir", tmp_path, "--input-text", "hi"),
                          named)


@pytest.mark.parametrize("fields, named", [
    ({"norm_epsilon": float("nan")}, "norm_epsilon is nan"),
    ({"norm_epsilon": None}, "norm_epsilon is None"),
    ({"rotary_base": -5}, "rotary_base is -5"),
    ({"head_size": "x"}, "head_size is 'x'"),
    ({"rotary_scaling": "linear"}, "rotary_scaling is 'linear'"),
    ({"rotary_scaling": {"rope_type": "foo"}}, "rotary_scaling is {'rope_type': 'foo'}"),
    ({"rotary_scaling": {"rope_type": "yarn", "factor": float("nan")}}, "rotary_scaling is {'rope_type': 'yarn', "
                                                                       "'factor': nan}"),
])
def test_inspect_flags_the_config_values_run_refuses(ckpt, tmp_path, fields, named):
    """A review: inspect passed these (or raised a traceback: head_size 'x'); run refused them only after loading
    the weights (`hidden states hold NaN`) or with a traceback (null norm_epsilon, a string rotary_scaling)."""
    copy = edited(ckpt, tmp_path, **fields)
    result = run_cli("inspect", copy)
    assert result.exit_code == 1 and f"problem: {named}" in result.output and "Traceback" not in result.output
    assert_one_line_error(run_cli("run", "--checkpoint-dir", copy, "--tokenizer-dir", tmp_path, "--input-text", "hi"),
                          named, "redrafter-trt inspect")


@pytest.mark.parametrize("factor", [float("nan"), float("inf"), -2.0])
def test_build_refuses_a_rope_factor_it_cannot_multiply_by(ckpt, tmp_path, factor):
    """A review: inspect called a linear rotary_scaling with factor NaN or inf `OK` (`an engine can still be built`),
    and build then ended in a ValueError or OverflowError traceback (the positions times the factor); -2 warned that
    --max-seq-len exceeds the model's -1024 positions."""
    copy = edited(ckpt, tmp_path, rotary_scaling={"rope_type": "linear", "factor": factor})
    result = run_cli("inspect", copy)
    assert result.exit_code == 1 and "problem: rotary_scaling is" in result.output, result.output
    assert_one_line_error(run_cli("build", "--checkpoint-dir", copy, "--output-dir", tmp_path / "engine",
                                  "--max-seq-len", 100, "--dry-run"), "rotary_scaling is", "positive finite number")


REBUILD, RECONVERT = "build a TensorRT-LLM engine to run it (`redrafter-trt build`)", "reconvert with this redrafter-trt"


@pytest.mark.parametrize("scaling, positions, named, fix", [
    ({"rope_type": "yarn", "factor": 4.0}, None, "yarn needs original_max_position_embeddings", RECONVERT),
    ({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0}, None,
     "llama3 needs original_max_position_embeddings", RECONVERT),
    # the 4096 TensorRT-LLM assumes is the max_position_embeddings transformers takes: an engine computes its RoPE
    ({"rope_type": "yarn", "factor": 4.0}, 4096, "yarn needs original_max_position_embeddings", REBUILD),
    ({"type": "linear"}, None, "linear needs factor", REBUILD)])
def test_inspect_names_a_rope_scaling_only_engines_run(ckpt, tmp_path, scaling, positions, named, fix):
    """TensorRT-LLM builds these, the reference runtime cannot compute them: inspect says so (and stays valid, so
    build works); run refuses with the same words before loading any weight. A review: a llama3 or yarn scaling
    without original_max_position_embeddings (an older redrafter-trt's, a TensorRT-LLM base checkpoint's) was sent to
    build an engine, which assumes 8192 or 4096 original positions where transformers takes max_position_embeddings:
    the fix is to reconvert (or add the key); where max_position_embeddings is the number assumed, as build takes
    it, an engine (inspect said to reconvert)."""
    sized = {"max_position_embeddings": positions} if positions else {}
    copy = edited(ckpt, tmp_path, rotary_scaling=scaling, **sized)
    result = run_cli("inspect", copy)
    assert result.exit_code == 0 and f"reference runtime (run, bench, serve) refuses it: rotary_scaling {named}" \
        in result.output and fix in result.output and (fix == RECONVERT) != ("redrafter-trt build" in result.output)
    assert json.loads(run_cli("inspect", copy, "--json").output)["runtime_problems"]
    assert_one_line_error(run_cli("run", "--checkpoint-dir", copy, "--tokenizer-dir", tmp_path, "--input-text", "hi"),
                          named, fix)


def test_inspect_convert_and_build_do_not_import_the_runtime():
    """A review: checkpoint.py imported the runtime's rope check, and with it the runtime and TorchInductor: every
    inspect, convert and build started seconds later (3.4 -> 7-8 s on 2 shared cores) for one small function."""
    import subprocess
    import sys

    code = ("import sys, redrafter_trt.checkpoint, redrafter_trt.build; "
            "print(sorted(m for m in ('redrafter_trt.runtime', 'torch._inductor') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out


def test_convert_of_a_yarn_base_notes_nothing(parts, tmp_path):
    """A YaRN base converted with a note that the reference runtime refuses it; the runtime computes yarn now (a base
    only engines run still gets the note: the gelu one below)."""
    from redrafter_trt.runtime.config import RuntimeConfig

    base, drafter = parts
    raw = json.loads((base / "config.json").read_text())
    yarn = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64, "rope_theta": 10000.0}
    (base / "config.json").write_text(json.dumps(raw | {"rope_parameters": yarn}))
    result = run_cli("convert", "--base", base, "--drafter", drafter, "--output", tmp_path / "ck")
    assert result.exit_code == 0 and "note:" not in result.stderr, result.output
    assert RuntimeConfig.from_dir(tmp_path / "ck").rotary_scaling["rope_type"] == "yarn"


def test_a_base_whose_activation_the_runtime_does_not_compute_is_refused_by_run(parts, tmp_path):
    """A gelu base (TensorRT-LLM builds it) converted, and `run --checkpoint-dir` computed silu in its place: wrong
    tokens, silently."""
    from redrafter_trt.runtime.config import RuntimeConfig

    base, drafter = parts
    raw = json.loads((base / "config.json").read_text())
    (base / "config.json").write_text(json.dumps(raw | {"hidden_act": "gelu_pytorch_tanh"}))
    result = run_cli("convert", "--base", base, "--drafter", drafter, "--output", tmp_path / "ck")
    assert result.exit_code == 0, result.output
    assert "refuses it: hidden_act 'gelu_pytorch_tanh' is not computed by the reference runtime" in result.stderr
    with pytest.raises(ConfigError, match="hidden_act 'gelu_pytorch_tanh' .* build a TensorRT-LLM engine"):
        RuntimeConfig.from_dir(tmp_path / "ck")


@pytest.mark.parametrize("cmd", ["train", "init-drafter"])
def test_a_checkpoint_or_drafter_passed_as_base_is_named(ckpt, tiny_drafter, tmp_path, cmd):
    """`train --base CKPT` said only "names no `architectures`: is this a Hugging Face causal-LM config?"; a drafter
    Apple's trainer saved (architectures ["Drafter"]) was "unsupported architecture 'Drafter'"."""
    data = ("--data", tmp_path / "d.jsonl") if cmd == "train" else ()
    (tmp_path / "d.jsonl").write_text('{"prompt": "hi"}\n')
    for folder, kind in ((ckpt, "a TensorRT-LLM checkpoint's config"), (tiny_drafter, "an Apple ReDrafter drafter's"),
                         (apple_saved(tiny_drafter, tmp_path), "an Apple ReDrafter drafter's")):
        assert_one_line_error(run_cli(cmd, "--base", folder, *data, "--output", tmp_path / "out"), kind,
                              "pass the Hugging Face base model's folder")


def test_a_work_folder_holding_a_checkpoint_names_it(ckpt, tmp_path):
    """`run --checkpoint-dir` on the quickstart's work folder (it prints that path) said "config.json is missing (an
    interrupted conversion, ...) then re-convert it", though checkpoint/ sits inside it."""
    work = tmp_path / "quickstart"
    shutil.copytree(ckpt, work / "checkpoint")
    assert_one_line_error(run_cli("run", "--checkpoint-dir", work, "--tokenizer-dir", tmp_path, "--input-text", "hi"),
                          "holds no checkpoint itself but checkpoint in it", f"pass {work / 'checkpoint'}")


def test_unwritable_quickstart_workdir_fails_fast():
    assert_one_line_error(run_cli("quickstart", "--workdir", "/proc/redrafter-qs"), "cannot write in /proc/redrafter-qs",
                          "choose another --workdir")


def test_os_errors_are_one_line(monkeypatch):
    import redrafter_trt.quickstart as qs

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device", "/data/ck/rank0.safetensors")
    monkeypatch.setattr(qs, "quickstart", full_disk)
    assert_one_line_error(run_cli("quickstart"), "/data/ck/rank0.safetensors: No space left on device",
                          "free disk space")


def test_fp8_options_need_quantize(parts, tmp_path):
    result = run_cli("convert", "--base", parts[0], "--drafter", parts[1], "--output", tmp_path / "ck",
                     "--calib-size", 5, "--device", "cuda")
    assert_one_line_error(result, "--calib-size, --device only apply to FP8 calibration", "--quantize fp8",
                          "leave them out")
    result = run_cli("convert", "--base", parts[0], "--drafter", parts[1], "--output", tmp_path / "ck",
                     "--calib-size", 5)  # one option: "--calib-size only apply ... leave them out" before
    assert_one_line_error(result, "--calib-size only applies to FP8 calibration: add --quantize fp8, or leave it out")


def test_the_library_refuses_fp8_options_without_quantize_as_the_cli_does(parts, tmp_path):
    """A review: `convert()` without quantize ignored calib_size, device and the other calibration options the CLI
    refused; the library's ConvertOptions now holds the one rule, and the CLI passes them on when typed."""
    with pytest.raises(ConfigError, match="^--calib-size, --device only apply to FP8 calibration: add --quantize fp8, "
                                          "or leave them out$"):
        convert(*parts, tmp_path / "ck", calib_size=5, device="cuda")
    with pytest.raises(ConfigError, match="^--calib-seq-len only applies to FP8 calibration"):
        convert(*parts, tmp_path / "ck", calib_seq_len=128)  # given, even at FP8's default
    assert not (tmp_path / "ck").exists()
    preset = tmp_path / "p.yaml"
    preset.write_text("device: cuda\nconvert: {calib-size: 5}\n")  # a preset's: used only with --quantize fp8
    result = run_cli("convert", "--config", preset, "--base", parts[0], "--drafter", parts[1], "--output", tmp_path / "ck")
    assert result.exit_code == 0, result.output
    assert "kv-cache-dtype" not in result.output
    preset.write_text("convert: {kv-cache-dtype: fp8}\n")  # an FP8 KV cache the checkpoint will not have: said
    result = run_cli("convert", "--config", preset, "--base", parts[0], "--drafter", parts[1], "--output",
                     tmp_path / "ck2")
    assert result.exit_code == 0, result.output
    assert ("note: the preset's kv-cache-dtype fp8 applies with --quantize fp8 only: this checkpoint's KV cache stays "
            "in its dtype") in result.output


@pytest.mark.parametrize("args, needle", [
    (["serve", "--port", "1", "--port=2"], "--port is given twice"),
    (["convert", "--output", "a", "--output_dir", "b"], "--output and --output_dir set the same option"),
    (["train", "--rnn", "--no-rnn"], "--rnn and --no-rnn set the same option"),
])
def test_an_option_given_twice_is_refused_not_overridden(args, needle):
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2 and needle in res.output and "Traceback" not in res.output


def test_repeatable_options_and_values_that_look_like_options_still_parse(tmp_path):
    """--data twice is two files; an option's value is never read as an option (here the value '--port')."""
    from redrafter_trt.cli.params import Command

    @click.command(cls=Command)
    @click.option("--data", multiple=True)
    @click.option("--stop")
    @click.option("--port")
    def probe(data, stop, port):
        click.echo(f"{data} {stop} {port}")

    res = CliRunner().invoke(probe, ["--data", "a", "--data", "b", "--stop", "--port", "--port", "7"])
    assert res.exit_code == 0 and res.output.strip() == "('a', 'b') --port 7"
    res = CliRunner().invoke(probe, ["--data", "--port", "--port", "7"])  # a repeatable option's value too
    assert res.exit_code == 0 and res.output.strip() == "('--port',) None 7"
    res = CliRunner().invoke(probe, ["--port", "1", "--port", "2", "--help"])  # help still answers
    assert res.exit_code == 0 and "--data" in res.output
    res = CliRunner().invoke(probe, ["--port", "1", "--port", "2"], resilient_parsing=True)  # shell completion
    assert res.exception is None


def test_a_bad_top_level_option_is_one_line_and_exit_codes_survive():
    res = CliRunner().invoke(main, ["--bogus"])
    assert res.exit_code == 2 and res.output.strip().splitlines() == [
        "error: No such option '--bogus'. Did you mean '--verbose'? (see 'redrafter-trt --help')"]
    assert CliRunner().invoke(main, ["inspect", "/nonexistent"]).exit_code == 2  # ctx.exit(2) inside a command
    assert CliRunner().invoke(main, ["--version"]).exit_code == 0
    bare = CliRunner().invoke(main, [])
    assert bare.exit_code == 2 and "Commands:" in bare.output and "error:" not in bare.output


def test_the_top_level_help_names_what_the_tool_does():
    """`redrafter-trt --help` summed the tool up as "Convert, check, run and build ...": training, measuring and
    serving, three of its commands' work, went unnamed."""
    summary = main.help.strip().splitlines()
    assert len(summary) == 1, summary
    verbs = ("train", "convert", "check", "build", "run", "measure", "serve")
    assert [verb for verb in verbs if verb not in summary[0].lower()] == []


def test_the_top_level_help_sums_up_every_command_in_full():
    """`redrafter-trt --help` cut 10 of its 11 command summaries ("convert  Convert a base model and an Apple
    ReDrafter drafter into..."): each command's short_help is a whole line of 45 characters at most (click's own
    limit), shown in full in an 80-column terminal."""
    from redrafter_trt.cli import COMMANDS

    res = CliRunner().invoke(main, ["--help"], terminal_width=80)
    assert res.exit_code == 0, res.output
    listed = res.output.split("Commands:")[1].splitlines()
    assert "..." not in res.output.split("Commands:")[1], res.output
    assert sorted(line.split()[0] for line in listed if line.strip()) == sorted(COMMANDS)
    ctx = click.Context(main)
    for name in COMMANDS:
        short = main.get_command(ctx, name).short_help
        assert short and len(short) <= 45 and short.endswith("."), (name, short)


@pytest.mark.parametrize("args", [["-h"], ["run", "-h"], ["convert", "-h"], ["serve", "--port", "1", "-h"]])
def test_dash_h_is_help_as_in_tensorrt_llms_scripts(args):
    """trtllm-build, run.py and gpu_check.sh take -h (argparse's); redrafter-trt said "No such option '-h'"."""
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0 and res.output.startswith("Usage: "), res.output
    assert res.output == CliRunner().invoke(main, [a if a != "-h" else "--help" for a in args]).output


@pytest.mark.parametrize("args", [["run", "--top_k", "3", "-h"], ["run", "--bogus", "--help"],
                                  ["convert", "--bogus", "-h"], ["train", "--no-such", "1", "--help"]])
def test_help_is_shown_whatever_else_is_typed(args):
    """argparse's -h (run.py, trtllm-build) shows the help whatever else the line holds; `run --top_k 3 -h` said
    click's "No such option '--top_k'. Did you mean '--tp'?" instead of the help (or run.py's refusal)."""
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0 and res.output.startswith("Usage: "), res.output
    assert res.output == CliRunner().invoke(main, [args[0], "--help"]).output


@pytest.mark.parametrize("config", [["--config", "P"], ["--config=P"]])
def test_help_beside_other_flags_shows_the_presets_defaults(tmp_path, config):
    """The help shown whatever else is typed keeps --config's preset, whose values it shows as the defaults."""
    preset = tmp_path / "p.yaml"
    preset.write_text("build:\n  max-batch-size: 7\n")
    args = ["build", *[a.replace("P", str(preset)) for a in config], "--nope", "-h"]
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 0 and "[default: 7; x>=1]" in res.output, res.output


def test_a_scripts_dash_h_is_its_help():
    from redrafter_trt.cli import Script

    @click.command(cls=Script)
    def probe():
        """Probe."""

    res = CliRunner().invoke(probe, ["-h"])
    assert res.exit_code == 0 and "Probe." in res.output


def test_debug_shows_the_traceback(tmp_path):
    """README: `redrafter-trt --debug CMD` shows tracebacks. A review: it printed the same one line as without it (the
    group's main caught the error --debug let through)."""
    from redrafter_trt.errors import ConfigError

    res = CliRunner().invoke(main, ["--debug", "inspect", str(tmp_path / "nonexistent")])
    assert isinstance(res.exception, ConfigError) and res.exit_code == 1, res.output
    assert "error:" not in res.output
    res = CliRunner().invoke(main, ["--debug", "run", "--tokenizer-dir", str(tmp_path), "--engine-dir", str(tmp_path),
                                    "--checkpoint-dir", str(tmp_path)])
    assert isinstance(res.exception, ConfigError) and "exactly one of" in str(res.exception)
    res = CliRunner().invoke(main, ["--debug", "convert", "--bogus"])
    assert isinstance(res.exception, click.UsageError)
    res = CliRunner().invoke(main, ["inspect", str(tmp_path / "nonexistent")])  # without it: one line, exit 2
    assert res.exit_code == 2 and res.output.startswith("error: ")


@pytest.mark.parametrize("args", [["convert", "--base"], ["serve", "--port"], ["run", "--tokenizer-dir"]])
def test_an_option_without_its_value_points_to_its_commands_help(args):
    """A review: 'convert --base' pointed to the group's help ("(see 'redrafter-trt --help')"), which lists no
    option of convert: click raises that error without a context."""
    res = CliRunner().invoke(main, args)
    assert res.exit_code == 2 and res.output.strip().splitlines() == [
        f"error: Option '{args[1]}' requires an argument. (see 'main {args[0]} --help')"]


def test_fp8_bad_input_is_one_line_before_modelopt_speaks(parts, tmp_path):
    """A fresh process (modelopt not yet imported), --device cuda without a GPU: the input is checked before
    modelopt is imported, whose import prints version warnings of its own (transformers 5.24 with modelopt 0.47: two
    lines) above the error."""
    import subprocess
    import sys

    import torch

    if torch.cuda.is_available():
        pytest.skip("needs a machine without a CUDA GPU")

    proc = subprocess.run([sys.executable, "-m", "redrafter_trt", "convert", "--base", str(parts[0]), "--drafter",
                           str(parts[1]), "--output", str(tmp_path / "ck"), "--quantize", "fp8", "--dtype", "bfloat16", "--device", "cuda"],
                          capture_output=True, text=True, timeout=120)
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: "), proc.stderr


def test_a_reader_that_leaves_the_pipe_early_is_no_error(parts):
    """A review: `redrafter-trt convert --dry-run ... | head` ended in 'error: Broken pipe: check the path, its
    permissions and the free disk space' (exit 2); it ends quietly with 141, as a command killed by SIGPIPE does."""
    import subprocess
    import sys

    import fcntl

    base, drafter = parts
    read, write = os.pipe()
    fcntl.fcntl(write, fcntl.F_SETPIPE_SZ, 4096)  # the plan of a tp 2 tiny model is longer
    proc = subprocess.Popen([sys.executable, "-m", "redrafter_trt", "convert", "--base", base, "--drafter", drafter,
                             "--output", base.parent / "out", "--tp-size", "2", "--dry-run", "--dtype", "float32"],
                            stdout=write, stderr=subprocess.PIPE)
    os.close(write)
    proc.stdout = os.fdopen(read, "rb", buffering=0)
    assert len(proc.stdout.read(10)) == 10
    proc.stdout.close()
    assert proc.wait(timeout=120) == 141
    assert proc.stderr.read() == b""


@pytest.mark.parametrize("grace", ["nan", "inf", "1e300", "-1"])
def test_serve_shutdown_grace_is_a_finite_wait(ckpt, tmp_path, grace):
    """A review: click's FloatRange(min=0) let NaN through (the drain on Ctrl-C then waited forever) and inf (an
    OverflowError traceback from threading when the wait came); both are refused before the server starts."""
    result = run_cli("serve", "--checkpoint-dir", ckpt, "--tokenizer-dir", tmp_path / "nope", "--shutdown-grace", grace)
    assert_one_line_error(result, f"'{grace}' is not a number of seconds from 0 to 86400", "--shutdown-grace")


def test_bench_hf_dir_whose_weights_disagree_with_its_config(ckpt, tiny_llama, tmp_path):
    """A review: a --hf-dir whose config.json disagreed with its weights (hidden_size 128 over 64-wide tensors) was
    transformers' RuntimeError traceback ('ignore_mismatched_sizes') when the baseline loaded; it is refused with the
    inputs, as convert refuses such a base."""
    hf = tmp_path / "hf"
    shutil.copytree(tiny_llama, hf)
    rewrite_config(hf, hidden_size=128, head_dim=None)
    from test_bench import save_byte_tokenizer

    save_byte_tokenizer(tmp_path / "tok")
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"prompt": "hi"}\n')
    result = run_cli("bench", "--checkpoint-dir", ckpt, "--tokenizer-dir", tmp_path / "tok", "--prompts", prompts,
                     "--hf-dir", hf, "--max-new-tokens", 1)
    assert_one_line_error(result, f"base {hf}: misshapen tensors", "re-download the model")


def test_the_command_list_needs_no_importlib_util_from_elsewhere():
    """The CLI finds its commands with importlib.util.find_spec: a process where nothing else imported importlib.util
    (no .pth file of an editable install doing it) must still list them, not fail on 'no attribute util'."""

    code = ("import sys, importlib; sys.modules.pop('importlib.util', None); del importlib.util; "
            "from redrafter_trt.cli import main; print(sorted(main.list_commands(None))[:2])")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-500:]
    assert "bench" in done.stdout


@pytest.mark.parametrize("command", ["convert", "run", "serve"])
def test_a_command_that_is_no_torchrun_rank_is_refused_under_torchrun(parts, ckpt, tmp_path, monkeypatch, command):
    """`torchrun --nproc-per-node 2 -m redrafter_trt run --checkpoint-dir CKPT` (a tp-2 checkpoint, after training
    under torchrun) ran the whole command in each copy: each started its own 2 tp ranks and printed every answer,
    and two converts wrote the same output. Only train's copies work together; the others say to start it once."""
    base, drafter = parts
    args = {"convert": ["--base", base, "--drafter", drafter, "--output", tmp_path / "out"],
            "run": ["--checkpoint-dir", ckpt, "--tokenizer-dir", base, "--input-text", "hi"],
            "serve": ["--checkpoint-dir", ckpt, "--tokenizer-dir", base]}[command]
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert_one_line_error(run_cli(command, *args), f"`{command}`", "torchrun", "WORLD_SIZE 2", "without torchrun")
    assert not (tmp_path / "out").exists()
    monkeypatch.setenv("WORLD_SIZE", "1")  # torchrun --nproc-per-node 1: one copy, nothing duplicated
    assert run_cli("inspect", ckpt).exit_code == 0
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert run_cli("inspect", ckpt).exit_code == 0  # reads only: each copy prints the same report, nothing clashes


def test_a_checkpoint_or_model_passed_as_engine_names_what_it_is(ckpt, tiny_llama, tmp_path):
    """`run --engine-dir CKPT` (the converted checkpoint, before any build) said only `CKPT/config.json is not the
    config of a ReDrafter engine: pass the output folder of redrafter-trt build`, where `--checkpoint-dir CKPT` given
    an engine names the engine and the other flag."""
    for cmd in (["run", "--input-text", "hi"], ["serve", "--dry-run"]):
        args = [*cmd, "--engine-dir", ckpt, "--tokenizer-dir", tiny_llama]
        assert_one_line_error(run_cli(*args), f"{ckpt} holds a ReDrafter checkpoint, not an engine",
                              f"redrafter-trt build --checkpoint-dir {ckpt}", "--checkpoint-dir")
    args = ["run", "--input-text", "hi", "--engine-dir", tiny_llama, "--tokenizer-dir", tiny_llama]
    assert_one_line_error(run_cli(*args), f"{tiny_llama} holds a Hugging Face model, not an engine",
                          "redrafter-trt convert")


def test_output_the_terminals_encoding_cannot_write_is_written_as_utf8(tiny_llama, tmp_path):
    """Windows writes a redirected stdout in its ANSI code page (cp1252): an emoji or a CJK character in an answer or a
    path (`run ... > answers.txt`) was a UnicodeEncodeError traceback after the work was done. Such a stdout writes
    UTF-8, as Python's UTF-8 mode would."""
    import subprocess
    import sys

    dest = tmp_path / "drafter \U0001f600 \u4f60\u597d"
    env = {**os.environ, "PYTHONIOENCODING": "cp1252"}
    res = subprocess.run([sys.executable, "-m", "redrafter_trt", "init-drafter", "--base", str(tiny_llama), "--output",
                          str(dest)], capture_output=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr.decode(errors="replace")[-2000:]
    assert str(dest) in res.stdout.decode("utf-8")


@pytest.mark.parametrize("command", ["run", "serve", "convert"])
def test_a_refused_commands_help_still_shows_under_torchrun(monkeypatch, command):
    """A review: `run --help` in a shell where WORLD_SIZE is 2 (a torchrun rank, a job's environment) printed the
    torchrun refusal instead of the help: the group refused the command before it read its options. --help does no
    work, so it shows; the command itself is still refused."""
    from redrafter_trt.errors import ConfigError

    monkeypatch.setenv("WORLD_SIZE", "2")
    shown = run_cli(command, "--help")
    assert shown.exit_code == 0 and shown.output.startswith("Usage:") and "torchrun" not in shown.stderr, shown.output
    # a shell or container whose environment keeps a launcher's WORLD_SIZE (no torchrun here): the way out
    assert_one_line_error(run_cli(command), f"`{command}`", "WORLD_SIZE 2", "unset WORLD_SIZE")
    debug = run_cli("--debug", command)  # --debug: the traceback, as for any other error
    assert isinstance(debug.exception, ConfigError) and "WORLD_SIZE 2" in str(debug.exception), debug.output


@pytest.mark.parametrize("terminal", [False, True], ids=["redirected", "terminal"])
def test_a_terminal_keeps_its_encoding_and_undecodable_names_print(tiny_llama, tmp_path, terminal):
    """stdout is re-encoded as UTF-8 only where redirected (Windows' cp1252 file): a terminal in a Latin-1 locale shows
    Latin-1 still (UTF-8 there printed 'Ã©' for 'é'), and the error handler is kept, so a path with bytes that are not
    UTF-8 (a non-UTF-8 locale's surrogateescape) prints as those bytes, as before (it was a UnicodeEncodeError)."""
    import pty
    import subprocess
    import sys

    dest = Path(os.fsdecode(bytes(tmp_path) + "/drafter-é-".encode() + b"\xff"))
    env = {**os.environ, "PYTHONIOENCODING": "latin-1:surrogateescape"}
    reader, writer = pty.openpty() if terminal else (None, subprocess.PIPE)
    res = subprocess.run([sys.executable, "-m", "redrafter_trt", "init-drafter", "--base", str(tiny_llama), "--output",
                          dest], stdout=writer, stderr=subprocess.PIPE, env=env, timeout=120)
    if terminal:
        os.close(writer)
        out = b""
        with contextlib.suppress(OSError):  # EIO once the child's end is closed and read
            while chunk := os.read(reader, 65536):
                out += chunk
        os.close(reader)
    else:
        out = res.stdout
    assert res.returncode == 0, res.stderr.decode(errors="replace")[-2000:]
    assert os.fsencode(dest).replace(b"\xc3\xa9", b"\xe9" if terminal else b"\xc3\xa9") in out


MPI_LAUNCHERS = [("OMPI_COMM_WORLD_SIZE", "mpirun"), ("PMI_SIZE", "mpiexec"), ("MV2_COMM_WORLD_SIZE", "mpirun"),
                 ("SLURM_STEP_NUM_TASKS", "srun")]


@pytest.mark.parametrize("var, launcher", MPI_LAUNCHERS, ids=[v for v, _ in MPI_LAUNCHERS])
def test_copies_started_by_an_mpi_launcher_are_refused_but_an_engines_ranks(parts, ckpt, tmp_path, monkeypatch, var,
                                                                            launcher):
    """`mpirun -n 2 redrafter-trt run --checkpoint-dir CKPT` (or mpiexec, srun) ran the whole command in each copy, as
    under torchrun, which alone was refused. An engine of world size 2 is run that way (TensorRT-LLM's run.py under
    `mpirun -n 2`): `run --engine-dir` passes, as do inspect and doctor, which only read; the others are refused in
    one line naming the variable; their --help still shows."""
    for other in ("WORLD_SIZE", *(v for v, _ in MPI_LAUNCHERS)):
        monkeypatch.delenv(other, raising=False)
    base, drafter = parts
    monkeypatch.setenv(var, "2")
    refused = {"convert": ["--base", base, "--drafter", drafter, "--output", tmp_path / "out"],
               "run": ["--checkpoint-dir", ckpt, "--tokenizer-dir", base, "--input-text", "hi"],
               "serve": ["--engine-dir", ckpt, "--tokenizer-dir", base, "--dry-run"],
               "train": ["--base", base, "--output", tmp_path / "out"]}
    for command, args in refused.items():
        assert_one_line_error(run_cli(command, *args), f"`{command}", launcher, f"{var} 2", f"unset {var}")
        shown = run_cli(command, "--help")
        assert shown.exit_code == 0 and shown.output.startswith("Usage:"), shown.output
    assert not (tmp_path / "out").exists()
    # an engine's ranks: past the launcher, to run's own checks of the folder
    assert_one_line_error(run_cli("run", "--engine-dir", ckpt, "--tokenizer-dir", base, "--input-text", "hi"),
                          "holds a ReDrafter checkpoint, not an engine")
    assert run_cli("inspect", ckpt).exit_code == 0
    monkeypatch.setenv(var, "1")  # one copy: nothing duplicated (past the launcher, to the tiny base's missing tokenizer)
    assert_one_line_error(run_cli("run", *refused["run"]), "cannot load a tokenizer")
    monkeypatch.delenv(var)
    monkeypatch.setenv("SLURM_NTASKS", "4")  # sbatch's, for the allocation, in a batch script that runs once
    assert_one_line_error(run_cli("run", *refused["run"]), "cannot load a tokenizer")


def test_serve_under_an_mpi_launcher_says_how_to_serve_an_engine_across_nodes(parts, ckpt, monkeypatch):
    """`mpirun -n 2 redrafter-trt serve --engine-dir ENGINE` was refused saying serve starts its ranks itself, and no
    more: across nodes TensorRT-LLM serves under `mpirun -n N trtllm-llmapi-launch ...`, whose rank 0 runs the command
    once with the MPI launcher's variables removed (OMPI_ PMI_ MV2_ SLURM_ ...; the other ranks are its MPI workers),
    so that form passes our check, and the refusal names it."""
    for other in ("WORLD_SIZE", *(v for v, _ in MPI_LAUNCHERS)):
        monkeypatch.delenv(other, raising=False)
    args = ("serve", "--engine-dir", ckpt, "--tokenizer-dir", parts[0], "--dry-run")
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "2")
    assert_one_line_error(run_cli(*args), "`serve`", "OMPI_COMM_WORLD_SIZE 2",
                          "`trtllm-llmapi-launch redrafter-trt serve --engine-dir", "mpirun or srun")
    # what trtllm-llmapi-launch leaves the command it runs on rank 0: its own variables, none of the launcher's
    monkeypatch.delenv("OMPI_COMM_WORLD_SIZE")
    monkeypatch.setenv("TLLM_SPAWN_PROXY_PROCESS", "1")
    monkeypatch.setenv("tllm_mpi_size", "2")
    assert_one_line_error(run_cli(*args), "holds a ReDrafter checkpoint, not an engine")  # past the launcher


def test_commands_the_llm_api_does_not_run_are_refused_under_trtllm_llmapi_launch(parts, ckpt, tmp_path, monkeypatch):
    """`mpirun -n 4 trtllm-llmapi-launch redrafter-trt serve --checkpoint-dir CKPT` passed the MPI check (rank 0's
    command runs without the launcher's variables) and served from rank 0 alone, the other 3 ranks waiting for an
    engine that never came; so did convert, train or run there. Refused in one line, as the script marks its command
    (TLLM_SPAWN_PROXY_PROCESS=1, tllm_mpi_size); `serve --engine-dir`, inspect and doctor pass, and one rank is one
    process."""
    for other in ("WORLD_SIZE", *(v for v, _ in MPI_LAUNCHERS)):
        monkeypatch.delenv(other, raising=False)
    base, drafter = parts
    monkeypatch.setenv("TLLM_SPAWN_PROXY_PROCESS", "1")
    monkeypatch.setenv("tllm_mpi_size", "4")
    refused = {("convert",): ["--base", base, "--drafter", drafter, "--output", tmp_path / "out"],
               ("run",): ["--checkpoint-dir", ckpt, "--tokenizer-dir", base, "--input-text", "hi"],
               ("serve", "--checkpoint-dir"): ["--checkpoint-dir", ckpt, "--tokenizer-dir", base],
               ("train",): ["--base", base, "--output", tmp_path / "out"]}
    for command, args in refused.items():
        assert_one_line_error(run_cli(command[0], *args), f"`{' '.join(command)}` under trtllm-llmapi-launch "
                              "(tllm_mpi_size 4)", "3 other MPI ranks", "without mpirun and trtllm-llmapi-launch")
    assert not (tmp_path / "out").exists()
    serve_engine = ("serve", "--engine-dir", ckpt, "--tokenizer-dir", base, "--dry-run")
    assert_one_line_error(run_cli(*serve_engine), "holds a ReDrafter checkpoint, not an engine")  # past the launcher
    assert run_cli("inspect", ckpt).exit_code == 0
    monkeypatch.setenv("tllm_mpi_size", "1")  # one rank: nobody waits
    assert_one_line_error(run_cli("run", *refused[("run",)]), "cannot load a tokenizer")


def test_the_llm_api_refusal_says_how_to_clear_variables_left_without_the_launcher(parts, ckpt, tmp_path, monkeypatch):
    """TLLM_SPAWN_PROXY_PROCESS and tllm_mpi_size left in a shell (a job script or profile exporting what
    trtllm-llmapi-launch sets) refused every command with 'start it once, without mpirun and trtllm-llmapi-launch',
    which it already was: the refusal names the variable to unset, as the MPI launchers' does. `run`, whose
    --engine-dir runs an engine's ranks under mpirun itself, is told so."""
    for other in ("WORLD_SIZE", *(v for v, _ in MPI_LAUNCHERS)):
        monkeypatch.delenv(other, raising=False)
    base, drafter = parts
    monkeypatch.setenv("TLLM_SPAWN_PROXY_PROCESS", "1")
    monkeypatch.setenv("tllm_mpi_size", "2")
    unset = "or unset TLLM_SPAWN_PROXY_PROCESS where a launcher's environment left it"
    assert_one_line_error(run_cli("convert", "--base", base, "--drafter", drafter, "--output", tmp_path / "out"),
                          unset)
    assert_one_line_error(run_cli("serve", "--checkpoint-dir", ckpt, "--tokenizer-dir", base), unset)
    assert_one_line_error(run_cli("run", "--engine-dir", ckpt, "--tokenizer-dir", base, "--input-text", "hi"), unset,
                          "`run --engine-dir` runs an engine's ranks under mpirun without trtllm-llmapi-launch")
    monkeypatch.delenv("TLLM_SPAWN_PROXY_PROCESS")  # unset as told: past the launcher
    assert_one_line_error(run_cli("run", "--checkpoint-dir", ckpt, "--tokenizer-dir", base, "--input-text", "hi"),
                          "cannot load a tokenizer")


def test_the_llm_api_refusal_of_train_names_torchrun(parts, tmp_path, monkeypatch):
    """A review: `train` under trtllm-llmapi-launch was told only 'start it once, without mpirun and
    trtllm-llmapi-launch', where the MPI launchers' refusal says its ranks run under torchrun: a user after several
    GPUs learnt only to run one process. It names torchrun too, as `run`'s names its --engine-dir form."""
    for other in ("WORLD_SIZE", *(v for v, _ in MPI_LAUNCHERS)):
        monkeypatch.delenv(other, raising=False)
    monkeypatch.setenv("TLLM_SPAWN_PROXY_PROCESS", "1")
    monkeypatch.setenv("tllm_mpi_size", "2")
    result = run_cli("train", "--base", parts[0], "--output", tmp_path / "out")
    assert_one_line_error(result, "`train` under trtllm-llmapi-launch", "without mpirun and trtllm-llmapi-launch (",
                          "torchrun", "leaving 1 other MPI rank waiting")  # 'the other 1 MPI ranks wait' was said


@pytest.mark.parametrize("release", [False, True], ids=["no-block", "fp8-release"])
@pytest.mark.parametrize("cmd", ["convert", "init-drafter", "train", "bench"])
def test_an_fp8_base_is_refused(parts, ckpt, tmp_path, cmd, release):
    """A Hugging Face base holding float8_e4m3fn weights and no quantization_config was cast to float without a scale:
    garbage weights converted, trained on or benched. Refused naming the tensor and the unquantized base, as
    `--quantize fp8` makes FP8 itself. An FP8 release (its quantization_config and weight_scale tensors) was refused
    by convert alone; init-drafter, train and bench said its scales were unexpected tensors, to re-download it."""
    from safetensors.torch import load_file, save_file

    base = parts[0]
    name = "model.layers.0.mlp.up_proj.weight"
    t = load_file(base / "model.safetensors")
    scales = {name + "_scale": torch.ones(())} if release else {}
    save_file(t | {name: t[name].to(torch.float8_e4m3fn)} | scales, base / "model.safetensors")
    if release:
        rewrite_config(base, quantization_config={"quant_method": "fp8", "activation_scheme": "dynamic"})
    args = base_reader_args(cmd, parts, ckpt, tmp_path)
    said = ("is a quantized model (quantization_config: fp8)" if release else
            f"{name} is F8_E4M3, not a weight dtype this converter reads (F16, BF16, F32, F64; FP8 here has no scales")
    assert_one_line_error(run_cli(cmd, *args), f"{base}", said, "unquantized", "--quantize fp8")
    assert not (tmp_path / "o").exists()


def test_train_output_inside_a_new_cache_under_another_name_is_refused(parts, second_name, tmp_path):
    """--output inside --cache-dir, both to be made, under two names of one folder (a bind mount; `Out/d` and `out` on
    a case-insensitive disk) was not seen: the cache's folder did not exist yet, so is_within said no and train wrote
    its drafter where it removes cache entries."""
    here, alias = second_name
    data = tmp_path / "d.jsonl"
    data.write_text('{"question": "q", "answer": "a"}\n')
    assert_one_line_error(run_cli("train", "--base", parts[0], "--data", data, "--output", here / "new" / "d",
                                  "--cache-dir", alias / "new", "--max-steps", 1), "is inside the training cache")
    assert not (here / "new").exists()


def test_the_shell_of_an_interactive_srun_step_is_not_its_copies(parts, ckpt, monkeypatch):
    """`srun -n 8 --pty bash` (tasks asked for their CPUs or GPUs) gives a shell on task 0 whose environment says 8
    tasks in the step (SLURM_STEP_NUM_TASKS 8): the others have no terminal and end at once. Every command typed in
    that shell was refused as one of srun's copies. Task 0 of a pty step (SLURM_PTY_PORT) runs; another task of it
    is still refused."""
    for other in ("WORLD_SIZE", *(v for v, _ in MPI_LAUNCHERS)):
        monkeypatch.delenv(other, raising=False)
    base = parts[0]
    args = ["--checkpoint-dir", ckpt, "--tokenizer-dir", base, "--input-text", "hi"]
    monkeypatch.setenv("SLURM_STEP_NUM_TASKS", "8")
    monkeypatch.setenv("SLURM_PTY_PORT", "34889")
    monkeypatch.setenv("SLURM_PROCID", "0")
    assert_one_line_error(run_cli("run", *args), "cannot load a tokenizer")  # past the launcher
    monkeypatch.setenv("SLURM_PROCID", "3")
    assert_one_line_error(run_cli("run", *args), "under srun (SLURM_STEP_NUM_TASKS 8)")
    monkeypatch.setenv("SLURM_PROCID", "0")
    monkeypatch.delenv("SLURM_PTY_PORT")  # `srun -n 8 redrafter-trt ...`: its task 0 is one of 8 copies
    assert_one_line_error(run_cli("run", *args), "under srun (SLURM_STEP_NUM_TASKS 8)")


@pytest.mark.parametrize("command", ["run", "bench", "acceptance"])
def test_an_output_json_inside_an_earlier_output_is_refused_up_front(ckpt, tiny_llama, tmp_path, command):
    """`--output-json` inside a drafter folder (bench's or acceptance's results kept beside the drafter measured) was
    written there, and a later `train --force` of that drafter was refused for holding it (a file no ReDrafter tool
    writes there). As an --output inside an earlier output is, it is refused before the work, naming the fix; the
    drafter stays one that --force replaces."""
    from redrafter_trt.cli.params import check_output_file
    from redrafter_trt.output import check_output_folder
    from tinymodels import make_drafter

    drafter = make_drafter(tmp_path / "drafter", tiny_llama)
    target = drafter / "results.json"
    prompts = tmp_path / "p.txt"
    prompts.write_text("hi\n")
    inputs = ["--input-text", "hi"] if command == "run" else ["--prompts", prompts]
    result = run_cli(command, "--checkpoint-dir", ckpt, "--tokenizer-dir", tiny_llama, *inputs, "--output-json", target)
    assert_one_line_error(result, f"--output-json {target} is inside {drafter}, an earlier drafter folder",
                          f"choose an --output-json outside {drafter}")
    assert not target.exists()
    check_output_folder(drafter, force=True)
    with pytest.raises(ConfigError, match=f"^--plot {drafter / 'b.png'} is inside {drafter}, an earlier drafter"):
        check_output_file(drafter / "b.png", [], "--plot")


@pytest.mark.parametrize("cmd, field, needle", [
    ("run", "output-json: {ckpt}/x.json", "the --config preset's output-json {ckpt}/x.json is inside the input"),
    ("run", "output-log-probs-npy: {ckpt}/x.npy", "the --config preset's output-log-probs-npy {ckpt}/x.npy is inside"),
    ("convert", "output: {base}/ck",
     "the --config preset's output {base}/ck is inside the input folder {base}: the output would sit among the files "
     "it is made from; choose a path outside {base} for the --config preset's output"),
    ("convert", "output: {base}", "the --config preset's output {base} is (or holds) the input {base}"),
    ("build", "output-dir: {ckpt}/e", "the --config preset's output-dir {ckpt}/e is inside the input folder {ckpt}"),
])
def test_a_presets_output_is_named_as_the_preset_field_not_a_flag(parts, ckpt, tmp_path, cmd, field, needle):
    """A review: a preset's `run: {output-json: <checkpoint>/x.json}` was refused as `--output-json ... is inside the
    input`, a `convert: {output: <base>/ck}` as `--output ...; choose an --output outside`, flags nobody typed: the
    output checks name an option as it was given (presets.as_given), as bench's and acceptance's do."""
    base, drafter = parts
    preset = tmp_path / "preset.yaml"
    preset.write_text(f"{cmd}:\n  {field.format(ckpt=ckpt, base=base)}\n")
    args = {"run": ("--checkpoint-dir", ckpt, "--tokenizer-dir", base, "--input-text", "hi"),
            "convert": ("--base", base, "--drafter", drafter),
            "build": ("--checkpoint-dir", ckpt, "--dry-run")}[cmd]
    result = run_cli(cmd, "--config", preset, *args)
    assert_one_line_error(result, needle.format(ckpt=ckpt, base=base))
    assert "error: --" not in result.output, result.output


def test_a_line_logged_while_a_progress_bar_runs_gets_a_line_of_its_own(tmp_path):
    """train's "interrupted: state saved after step N" (logged as another torchrun rank died) was glued to the end of
    its progress bar's last frame, where it went unseen: every command's log lines go above a running bar now."""
    (tmp_path / "demo_command.py").write_text(textwrap.dedent("""
        import logging

        import click
        from tqdm import tqdm

        @click.command()
        def demo():
            with tqdm(total=4, desc="demo bar") as bar:
                bar.update(2)
                logging.getLogger("redrafter_trt.demo").warning("state saved after step 2")
                bar.update(2)
    """))
    code = ("import sys; from redrafter_trt import cli; cli.COMMANDS['demo'] = 'demo_command:demo'; "
            "sys.exit(cli.main(['demo']))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), *sys.path])})
    assert r.returncode == 0, r.stderr
    lines = re.split(r"[\r\n]", r.stderr)
    assert "WARNING redrafter_trt.demo: state saved after step 2" in lines, r.stderr
