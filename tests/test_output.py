"""output.py's atomic outputs, interrupted for real: an exception or a SIGKILL halfway through a write (or through the
replace of an earlier output) leaves the destination as it was, and the next run removes what was left and
succeeds."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from click.testing import CliRunner

from redrafter_trt import exchange
from redrafter_trt.cli import main
from redrafter_trt.errors import ConfigError
from redrafter_trt.output import atomic_output, check_output_folder, scratch_dir
from tinymodels import make_drafter

OURS = json.dumps({"producer": {"name": "redrafter-trt"}})
MARKER = "model.safetensors"  # a file an earlier output holds (output.OUTPUT_LAYOUTS), written with its config.json
NO_SWAP, NO_SWAP_REASON = exchange._RENAMEAT2 is None, "no renameat2 here (not Linux): the two renames are the way"
NEEDS_SWAP = pytest.mark.skipif(NO_SWAP, reason=NO_SWAP_REASON)


def write_output(dest: Path, marker: str, force: bool = False) -> None:
    with atomic_output(dest, force) as tmp:
        (tmp / "config.json").write_text(OURS)
        (tmp / MARKER).write_text(marker)


def run_cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def run_child(code: str) -> int:
    """Run `code` in a fresh interpreter with this worktree's package; its exit status (-9 when it killed itself)."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env, timeout=300).returncode


def kill_while_removing_the_replaced_output(dest: Path) -> None:
    """Replace `dest` (force) in a child killed as it starts removing the output it replaced."""
    rc = run_child(f"""
        import os, signal, shutil
        from pathlib import Path
        import redrafter_trt.output as output
        from redrafter_trt.output import atomic_output, scratch_dir

        def rmtree(path, *a, **k):
            if Path(path).name.startswith(".out.") and Path(path).exists():
                os.kill(os.getpid(), signal.SIGKILL)
            return shutil.rmtree(path, *a, **k)

        output.shutil = type("S", (), {{"rmtree": staticmethod(rmtree)}})
        with atomic_output(Path({str(dest)!r}), True) as tmp:
            (tmp / "config.json").write_text({OURS!r})
            (tmp / {MARKER!r}).write_text("second")
    """)
    assert rc == -signal.SIGKILL
    assert (dest / MARKER).read_text() == "second"  # renamed into place before the kill


def test_a_run_killed_while_removing_the_replaced_output_leaves_only_what_the_next_run_sweeps(tmp_path):
    """kill -9 while the earlier output (an 8B checkpoint: seconds) was being removed left `.NAME.old-PID`, which no
    sweep looked for: its gigabytes stayed for good. It is a partial now, removed by the next run."""
    dest = tmp_path / "out"
    write_output(dest, "first")
    kill_while_removing_the_replaced_output(dest)
    write_output(dest, "third", force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert (dest / MARKER).read_text() == "third"


def test_a_replaced_output_killed_while_being_removed_is_never_put_back(tmp_path):
    """What a kill stopped removing may be half gone: with the new output then deleted by hand, the next run must
    not put it back as the output."""
    dest = tmp_path / "out"
    write_output(dest, "first")
    kill_while_removing_the_replaced_output(dest)
    for f in dest.iterdir():
        f.unlink()
    dest.rmdir()
    write_output(dest, "third")  # no --force: nothing is there
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert (dest / MARKER).read_text() == "third"


def test_a_killed_runs_leftover_under_this_process_id_does_not_fail_the_replace(tmp_path):
    """In a container a killed run's process id comes back (the same command, started the same way): its
    `.NAME.old-PID` made the replace fail with `OSError: Directory not empty` after all the work, output lost."""
    dest = tmp_path / "out"
    write_output(dest, "first")
    left = tmp_path / f".out.old-{os.getpid()}"
    left.mkdir()
    (left / "rank0.safetensors").write_text("left by a killed run")
    write_output(dest, "second", force=True)
    assert (dest / MARKER).read_text() == "second"


def test_a_failure_halfway_through_the_rank_files_keeps_the_earlier_checkpoint(tmp_path, tiny_llama, monkeypatch):
    """convert --force at tp 2 raising after rank 0 is written: the earlier checkpoint is untouched, no partial stays,
    and the next run succeeds."""
    from redrafter_trt import convert as convert_mod

    drafter = make_drafter(tmp_path / "drafter", tiny_llama)
    out = tmp_path / "ckpt"
    convert_mod.convert(tiny_llama, drafter, out, tp_size=1)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real = convert_mod.StreamingWriter

    class Failing(real):
        def __init__(self, path, *a, **k):
            if path.name == "rank1.safetensors":
                assert (path.parent / "rank0.safetensors").stat().st_size > 0
                raise OSError(28, "No space left on device")
            super().__init__(path, *a, **k)

    monkeypatch.setattr(convert_mod, "StreamingWriter", Failing)
    with pytest.raises(OSError, match="No space left"):
        convert_mod.convert(tiny_llama, drafter, out, tp_size=2, force=True)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "drafter"]
    monkeypatch.setattr(convert_mod, "StreamingWriter", real)
    convert_mod.convert(tiny_llama, drafter, out, tp_size=2, force=True)
    assert json.loads((out / "config.json").read_text())["mapping"]["tp_size"] == 2


def test_a_convert_killed_after_its_first_rank_file_keeps_the_earlier_checkpoint(tmp_path, tiny_llama):
    """The CLI, SIGKILLed once rank 0 of 2 is complete: the earlier checkpoint stays as it was, and the next run
    removes the killed run's partial and replaces the checkpoint."""

    drafter = make_drafter(tmp_path / "drafter", tiny_llama)
    out = tmp_path / "ckpt"
    args = ["convert", "--base", str(tiny_llama), "--drafter", str(drafter), "--output", str(out)]
    assert run_cli(*args).exit_code == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    rc = run_child(f"""
        import os, signal
        import redrafter_trt.io as io
        real = io.StreamingWriter.__init__

        def init(self, path, *a, **k):
            if path.name == "rank1.safetensors":
                os.kill(os.getpid(), signal.SIGKILL)
            real(self, path, *a, **k)

        io.StreamingWriter.__init__ = init
        from redrafter_trt.cli import main
        main({args + ["--tp-size", "2", "--force"]!r})
    """)
    assert rc == -signal.SIGKILL
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    left = list(tmp_path.glob(".ckpt.partial-*"))
    assert [p.name for p in left[0].iterdir()] == ["rank0.safetensors"]
    assert run_cli(*args, "--tp-size", "2", "--force").exit_code == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "drafter"]
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "rank0.safetensors", "rank1.safetensors"]


def test_a_killed_runs_partial_under_this_process_id_is_swept_and_this_runs_own_is_kept(tmp_path):
    """`docker run IMAGE redrafter-trt convert ...` is process 1 every time: the partial of a run killed there (an FP8
    scratch base, a half checkpoint) was taken for the live run's own and kept by every later run."""
    from redrafter_trt.output import partial_dir, partial_prefix, remove_stale_partials

    dest = tmp_path / "ckpt"
    killed = tmp_path / f"{partial_prefix(dest)}abc"
    killed.mkdir()
    own = partial_dir(dest, "fp8-")
    for folder in (killed, own):
        (folder / "rank0.safetensors").write_bytes(b"x")
    remove_stale_partials(dest)
    assert sorted(p.name for p in tmp_path.iterdir()) == [own.name]


def test_convert_force_refuses_to_replace_a_folder_holding_its_calibration_prompts(tmp_path, tiny_llama):
    """--calib-data kept in the checkpoint folder that --force replaces was deleted with it, after calibrating."""
    drafter = make_drafter(tmp_path / "drafter", tiny_llama)
    out = tmp_path / "ckpt"
    args = ["convert", "--base", str(tiny_llama), "--drafter", str(drafter), "--output", str(out)]
    assert run_cli(*args).exit_code == 0
    prompts = out / "calib.jsonl"
    prompts.write_text('{"prompt": "hello"}\n')
    result = run_cli(*args, "--force", "--quantize", "fp8", "--calib-data", prompts)
    assert result.exit_code == 2, result.output
    assert "is (or holds) the input" in result.stderr and "calib.jsonl" in result.stderr
    assert prompts.read_text() == '{"prompt": "hello"}\n'


def test_a_full_disk_while_updating_a_cached_smollm2_config_keeps_the_old_one(tmp_path, monkeypatch):
    """The cache's config.json was rewritten in place: a write failing halfway (a full disk) left it truncated, and
    every later use of the cache failed reading it."""
    from redrafter_trt.smollm2 import _publish_config

    path = tmp_path / "config.json"
    old = json.dumps({"model_type": "llama", "rope_parameters": {"rope_theta": 100000.0, "rope_type": "default"}})
    path.write_text(old)

    def half_then_full(self, text, *a, **k):
        with open(self, "w") as f:
            f.write(text[: len(text) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", half_then_full)
    with pytest.raises(OSError, match="No space left"):
        _publish_config(path)
    monkeypatch.undo()
    assert path.read_text() == old
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]


def test_a_write_failing_halfway_leaves_none_of_the_folders_it_made(tmp_path):
    """`convert --output new/deep/ckpt` failing mid-write (a float16 overflow found in the last tensor, a full disk)
    left `new/deep/` behind, empty: the failed run's only trace."""
    (tmp_path / "kept").mkdir()
    with pytest.raises(OSError, match="No space"):
        with atomic_output(tmp_path / "new" / "deep" / "ckpt", False) as tmp:
            (tmp / "rank0.safetensors").write_bytes(b"x")
            raise OSError(28, "No space left on device")
    assert [p.name for p in tmp_path.iterdir()] == ["kept"]
    write_output(tmp_path / "new" / "deep" / "ckpt", "ok")
    assert (tmp_path / "new" / "deep" / "ckpt" / MARKER).read_text() == "ok"


def test_an_fp8_convert_failing_after_its_scratch_leaves_none_of_the_folders_it_made(tmp_path):
    """`convert --quantize fp8 --output new/deep/ckpt` made new/deep/ for its FP8 scratch before atomic_output, which
    then found them existing: a failed run left them behind, empty. A run that succeeds keeps them."""
    (tmp_path / "kept").mkdir()
    dest = tmp_path / "new" / "deep" / "ckpt"
    with pytest.raises(OSError, match="No space"):
        with scratch_dir(dest, "fp8-") as scratch, atomic_output(dest, False) as tmp:
            (scratch / "base").mkdir()
            (tmp / "rank0.safetensors").write_bytes(b"x")
            raise OSError(28, "No space left on device")
    assert [p.name for p in tmp_path.iterdir()] == ["kept"]
    with scratch_dir(dest, "fp8-"), atomic_output(dest, False) as tmp:
        (tmp / MARKER).write_text("ok")
    assert [p.name for p in dest.parent.iterdir()] == ["ckpt"]


@NEEDS_SWAP
def test_a_replace_is_one_step_the_output_name_never_empty(tmp_path, monkeypatch):
    """`--force` moved the earlier output aside, then renamed the new one in: between the two renames no output had
    the name (a reader then, trtllm-build or a server loading it, found none; a kill -9 there left none until the next
    run). The two are swapped in one step (renameat2's RENAME_EXCHANGE), the name holding a whole output throughout:
    only the earlier output is renamed after, to be removed."""
    dest = tmp_path / "out"
    write_output(dest, "first")
    real, seen = Path.rename, []

    def rename(self, target):
        seen.append((Path(target).name, (dest / MARKER).read_text()))
        return real(self, target)

    monkeypatch.setattr(Path, "rename", rename)
    write_output(dest, "second", force=True)
    monkeypatch.undo()
    assert [marker for _, marker in seen] == ["second"] and seen[0][0].endswith("-gone"), seen
    assert (dest / MARKER).read_text() == "second"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@NEEDS_SWAP
def test_a_replace_killed_after_its_swap_leaves_the_new_output_and_the_next_run_removes_the_earlier(tmp_path):
    """kill -9 once the new output took the name, before the earlier one (now under the partial's name) was removed:
    the new output is in place, and the next run's sweep removes the earlier one as a killed run's partial."""
    dest = tmp_path / "out"
    write_output(dest, "first")
    rc = run_child(f"""
        import os, signal
        from pathlib import Path
        from redrafter_trt.output import atomic_output

        Path.rename = lambda self, target: os.kill(os.getpid(), signal.SIGKILL)
        with atomic_output(Path({str(dest)!r}), True) as tmp:
            (tmp / "config.json").write_text({OURS!r})
            (tmp / {MARKER!r}).write_text("second")
    """)
    assert rc == -signal.SIGKILL
    assert (dest / MARKER).read_text() == "second"
    [left] = [p for p in tmp_path.iterdir() if p.name != "out"]
    assert (left / MARKER).read_text() == "first"
    write_output(dest, "third", force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert (dest / MARKER).read_text() == "third"


def test_a_replace_killed_between_its_two_renames_keeps_the_earlier_output(tmp_path):
    """Where there is no one-step swap (not Linux, a file system without it): kill -9 after `--force` moved the
    earlier output aside and before the new one took its name: the output was gone, and the next run's sweep deleted
    the earlier one. It is put back, and needs --force again to replace."""
    dest = tmp_path / "out"
    write_output(dest, "first")
    rc = run_child(f"""
        import os, signal
        from pathlib import Path
        from redrafter_trt import exchange
        from redrafter_trt.output import atomic_output, scratch_dir

        exchange._RENAMEAT2 = None

        real = Path.rename

        def rename(self, target):
            if ".partial-" in self.name and not self.name.endswith("-old"):  # the new output, taking its name
                os.kill(os.getpid(), signal.SIGKILL)
            return real(self, target)

        Path.rename = rename
        with atomic_output(Path({str(dest)!r}), True) as tmp:
            (tmp / "config.json").write_text({OURS!r})
            (tmp / {MARKER!r}).write_text("second")
    """)
    assert rc == -signal.SIGKILL
    assert not dest.exists()
    with pytest.raises(Exception, match="already exists"):
        write_output(dest, "third")
    assert (dest / MARKER).read_text() == "first"
    write_output(dest, "third", force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    assert (dest / MARKER).read_text() == "third"


def test_a_killed_smollm2_cache_updates_leftover_is_removed_by_the_next_update(tmp_path, monkeypatch):
    """Updating an older SmolLM2 cache wrote its tokenizer into `SmolLM2-135M-Instruct.tokenizer-XXXX`, in sight
    and removed by no run when the update was killed; it is a partial now, swept by the next update."""
    from redrafter_trt import smollm2

    def save_tokenizer(folder):
        (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": smollm2.TOKENIZER_CLASS}))

    monkeypatch.setattr(smollm2, "_check_modules", lambda: None)
    monkeypatch.setattr(smollm2, "save_tokenizer", save_tokenizer)
    dest = tmp_path / "SmolLM2-135M-Instruct"
    dest.mkdir()
    (dest / "model.safetensors").write_bytes(b"x")
    (dest / "config.json").write_text(json.dumps({"rope_parameters": {"rope_theta": 100000.0}}))
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    killed = tmp_path / f".SmolLM2-135M-Instruct.partial-{gone.pid}-tokenizer-abc"
    killed.mkdir()
    (killed / "tokenizer.json").write_text("{}")
    assert smollm2.ensure_smollm2(dest) == dest
    assert [p.name for p in tmp_path.iterdir()] == [dest.name]
    assert json.loads((dest / "config.json").read_text())["rope_theta"] == 100000.0


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_an_output_folder_gets_the_umasks_mode_as_its_files(tmp_path, umask):
    """The folder was 0755 whatever the umask: a user keeping outputs private (umask 077) had them listed to all."""
    old = os.umask(umask)
    try:
        write_output(tmp_path / "out", "x")
    finally:
        os.umask(old)
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o777 & ~umask
    assert (tmp_path / "out" / MARKER).stat().st_mode & 0o777 == 0o666 & ~umask


def test_convert_records_its_calibration_prompts_as_an_absolute_source(tmp_path, tiny_llama, monkeypatch):
    """The producer block kept --calib-data as typed (`calib.jsonl`, relative to wherever convert ran), among the
    options; the other files read are sources, as absolute paths."""
    from redrafter_trt import convert as convert_mod

    drafter = make_drafter(tmp_path / "drafter", tiny_llama)
    (tmp_path / "calib.jsonl").write_text('{"prompt": "hello"}\n')
    monkeypatch.chdir(tmp_path)
    # calibration is modelopt's, on a GPU: the base as it is, and the options
    monkeypatch.setattr(convert_mod, "_quantized_base", lambda base, *a: (base, a[-1]))
    convert_mod.convert(tiny_llama, drafter, tmp_path / "out", quantize="fp8", calib_data="calib.jsonl")
    producer = json.loads((tmp_path / "out" / "config.json").read_text())["producer"]
    assert producer["sources"]["calib_data"] == str(tmp_path.resolve() / "calib.jsonl")
    assert "calib_data" not in producer["options"] and producer["options"]["quantize"] == "fp8"


def test_an_fp8_rerun_sweeps_a_killed_runs_scratch_before_it_calibrates(tmp_path, tiny_llama, monkeypatch):
    """`convert --quantize fp8` killed (the OOM killer) left its scratch, an exported base; the rerun made its own
    scratch and calibrated and exported into it before atomic_output swept the killed run's: two bases on disk at once
    (an 8B's: a full disk). Found by an audit's kill harness. The killed run's is removed before the new scratch."""
    from redrafter_trt import convert as convert_mod

    drafter = make_drafter(tmp_path / "drafter", tiny_llama)
    stale = tmp_path / f".out.partial-{dead_pid()}-fp8-abcd1234"
    (stale / "base").mkdir(parents=True)
    (stale / "base" / "rank0.safetensors").write_bytes(b"x" * 1000)
    seen = []

    def calibrate(base, drafter, dest, opts):  # modelopt's, on a GPU: what is on disk as it starts
        seen.extend(sorted(p.name for p in tmp_path.iterdir() if ".partial-" in p.name))
        return base, opts

    monkeypatch.setattr(convert_mod, "_quantized_base", calibrate)
    convert_mod.convert(tiny_llama, drafter, tmp_path / "out", quantize="fp8")
    assert len(seen) == 1 and seen[0].startswith(f".out.partial-{os.getpid()}-fp8-"), seen
    assert not stale.exists()


ENGINE = {"pretrained_config": {"architecture": "ReDrafterForLLaMALM"}}


@pytest.mark.parametrize("config, written, like", [
    (ENGINE, ["rank0.engine", "rank12.engine", "model.cache", "redrafter_trt.json"],  # trtllm-build's, and ours
     ["rank0-old.engine", "rank.engine", "rank01.engine", "ranks.engine"]),
    ({"architecture": "ReDrafterForQWenLM"}, ["rank0.safetensors", "rank3.safetensors", "rank10.safetensors"],
     ["rank0-before-my-finetune.safetensors", "rank.safetensors", "rank1_old.safetensors", "rank\u0663.safetensors"]),
    ({"model_type": "recurrent_drafting_drafter"},  # save_pretrained's shards
     ["model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "model.safetensors.index.json",
      "pytorch_model.bin", "pytorch_model-00001-of-00003.bin"],
     ["model-finetuned.safetensors", "model-1-of-2.safetensors", "pytorch_model_old.bin", "pytorch_model-v2.bin",
      "pytorch_model-00001-of-00003.bin.bak"]),
    ({"model_type": "recurrent_drafting_drafter"}, ["model.pt"], ["model.pt.bak"]),  # Apple's trainer's drafters
])
def test_force_replaces_what_the_outputs_writers_wrote_and_refuses_the_users_own_files(tmp_path, config, written,
                                                                                      like):
    """What each kind of earlier output holds is replaced as before; a file or folder of the user's beside it (notes,
    eval results, or another kind's file) is refused, naming up to three and the fix, before any work. A review: the
    layouts were globs (rank*.safetensors, model-*.safetensors, pytorch_model*.bin, rank*.engine) matching more than
    any writer writes: the user's rank0-before-my-finetune.safetensors in a checkpoint folder was deleted by
    `convert --force`. Only the names the writers write are theirs: rank{r} (as f"rank{r}" writes r), transformers'
    five-digit shards."""
    dest = tmp_path / "checkpoint"
    dest.mkdir()
    (dest / "config.json").write_text(json.dumps(config))
    for name in written:
        (dest / name).write_text("x")
    check_output_folder(dest, True)
    for name in like:
        (dest / name).write_text("mine")
        with pytest.raises(ConfigError, match=f"also holds {re.escape(name)}, which no ReDrafter tool writes there"):
            check_output_folder(dest, True)
        (dest / name).unlink()
    other = "model.safetensors" if "architecture" in json.dumps(config) else "rank0.engine"
    for name in ("notes.md", "eval", "a.txt", "b.txt", other):
        (dest / name).mkdir() if name == "eval" else (dest / name).write_text("mine")
    with pytest.raises(ConfigError) as e:
        check_output_folder(dest, True, option="--workdir")  # as the quickstart checks its checkpoint/
    assert "holds a.txt, b.txt, eval (+2 more)" in str(e.value) and "choose another --workdir" in str(e.value)
    assert "\n" not in str(e.value) and (dest / "notes.md").read_text() == "mine"


def test_a_file_that_does_not_fit_on_the_disk_is_named(tmp_path, small_file_limit):
    """A write's error names no file: bench's and acceptance's --output-json and --plot on a full disk said `File too
    large` (or `No space left on device`) without saying which."""
    from redrafter_trt.output import write_text_atomic

    path = tmp_path / "results.json"
    with pytest.raises(OSError) as raised:
        write_text_atomic(path, "x" * (128 << 10))
    assert raised.value.filename == str(path) and raised.value.strerror == "File too large"
    assert list(tmp_path.iterdir()) == []


def test_where_signal_0_is_ctrl_c_no_process_is_probed(tmp_path, monkeypatch):
    """On Windows signal 0 is CTRL_C_EVENT: os.kill(pid, 0), asking whether a killed run's process still runs, sent
    Ctrl-C to the console, interrupting the run sweeping its partials (and the shell's other programs). There no
    process is asked: every one counts as running, so the partials stay (to delete by hand)."""
    import signal

    from redrafter_trt.output import sweep_partials

    def ctrl_c(pid, sig):
        raise KeyboardInterrupt

    monkeypatch.setattr(signal, "CTRL_C_EVENT", 0, raising=False)
    monkeypatch.setattr(os, "kill", ctrl_c)
    stale = tmp_path / ".ck.partial-999999999-abcd1234"
    stale.mkdir()
    sweep_partials(tmp_path, "ck")
    assert stale.exists()


def test_is_within_tells_nothing_by_identity_where_every_inode_reads_zero(tmp_path, monkeypatch):
    """A review: on a file system without file ids (Windows' FAT, some network shares) every st_ino is 0, so one
    device's folders would all be 'the same' and every output refused as inside its input. Identity is not used
    there; names still are."""
    import redrafter_trt.output as output

    (tmp_path / "base").mkdir()
    (tmp_path / "out").mkdir()
    assert not output.is_within(tmp_path / "out", tmp_path / "base")
    original = Path.stat

    def no_ids(self, *args, **kwargs):
        st = original(self, *args, **kwargs)
        return os.stat_result((st.st_mode, 0, st.st_dev, *st[3:10]))

    monkeypatch.setattr(Path, "stat", no_ids)
    assert not output.is_within(tmp_path / "out", tmp_path / "base")
    assert output.is_within(tmp_path / "base" / "x", tmp_path / "base")


def test_is_within_tells_two_names_of_one_folder_not_made_yet(second_name):
    """is_within said no when `folder` did not exist yet, so two new paths in one folder reached under two names (a
    bind mount; `Out` and `out` on a case-insensitive disk) were told apart: the nearest existing folder is compared
    by identity, and the names below it."""
    from redrafter_trt.output import is_within, same_file

    here, alias = second_name
    assert is_within(here / "new" / "d", alias / "new") and is_within(alias / "new", here / "new")
    assert same_file(here / "new" / "r.png", alias / "new" / "r.png")
    assert not is_within(here / "other" / "d", alias / "new") and not is_within(here / "newer", alias / "new")
    assert not is_within(here, alias / "new")  # the folder above holds it, not it the folder above
    assert not any(p.exists() for p in (here / "new", here / "other", here / "newer"))


@pytest.mark.parametrize("blind", [False, True], ids=["case-sensitive", "case-insensitive"])
def test_is_within_folds_case_only_where_the_file_system_does(tmp_path, monkeypatch, blind):
    """`Out/d` and `out`, neither made yet, are one folder where names are looked up case-blind (macOS's and Windows'
    default disks), as the nearest existing folder's own name under its other case tells; two folders elsewhere."""
    from redrafter_trt import output

    (tmp_path / "x").mkdir()
    original = Path.stat

    def case_blind(self, *args, **kwargs):  # a disk that finds `X` for `x` below tmp_path (whose own name may hold
        # capitals: a TMPDIR of /tmp/ciX, macOS's /var/folders/.../T)
        below = str(self).removeprefix(str(tmp_path))
        folded = Path(str(tmp_path) + below.lower()) if blind and below != str(self) else self
        return original(folded, *args, **kwargs)

    monkeypatch.setattr(Path, "stat", case_blind)
    assert output.is_within(tmp_path / "x" / "Out" / "d", tmp_path / "x" / "out") == blind
    assert output.same_file(tmp_path / "x" / "Out" / "r.json", tmp_path / "x" / "out" / "R.json") == blind
    assert not output.is_within(tmp_path / "x" / "Outer" / "d", tmp_path / "x" / "out")


def test_a_link_named_in_the_other_case_is_no_case_blind_disk(tmp_path):
    """A symbolic link `PROJ` -> `proj` (or `/data/ML` -> `ml`) on a case-sensitive disk made is_within take proj's
    file system as case-blind, found under its other case through the link: `--output proj/out` was then the input
    `proj/Out` (two folders), and train's new `--output proj/Out/d` lay in its new `--cache-dir proj/out`."""
    from redrafter_trt.output import check_output_folder, is_within

    proj = tmp_path / "proj"
    (proj / "Out").mkdir(parents=True)
    (tmp_path / "PROJ").symlink_to(proj)
    assert not is_within(proj / "Out", proj / "out") and not is_within(proj / "New" / "d", proj / "new")
    check_output_folder(proj / "out", False, [proj / "Out"])  # not refused
    assert is_within(proj / "new" / "d", tmp_path / "PROJ" / "new")  # the link is still a name of proj


def test_an_existing_folder_is_never_the_one_not_made_yet(tmp_path, monkeypatch):
    """A case-sensitive folder in a case-blind one (WSL's folders made from Linux on a Windows drive, a case-sensitive
    volume under macOS's /Volumes) is found under its other case through its parent: is_within took the folder's own
    names as case-blind and the existing input `x/Out` as the new `--output x/out`. A name that exists is not the new
    one, which would be found under it."""
    from redrafter_trt import output

    (tmp_path / "x" / "Out").mkdir(parents=True)
    original = Path.stat

    def blind_parent(self, *args, **kwargs):  # tmp_path finds `X` for `x`; x itself tells `Out` from `out`
        return original(tmp_path / "x" if self == tmp_path / "X" else self, *args, **kwargs)

    monkeypatch.setattr(Path, "stat", blind_parent)
    assert not output.is_within(tmp_path / "x" / "Out", tmp_path / "x" / "out")
    assert not output.is_within(tmp_path / "x" / "Out" / "d", tmp_path / "x" / "out")
    assert output.is_within(tmp_path / "x" / "New" / "d", tmp_path / "x" / "new")  # both new: taken as x's parent's


def test_a_ctrl_c_while_the_replaced_output_is_removed_leaves_the_new_one_and_no_hidden_copy(tmp_path, monkeypatch,
                                                                                             caplog):
    """`convert --force` interrupted while it removed the checkpoint it replaced said "interrupted" though the new one
    was in place, and left the old one (318 MB in a reviewer's run) hidden as `.NAME.partial-*-gone` until a later
    run wrote there. The new output stays, the old one is removed all the same, the log says so, and the interrupt
    goes on (the command stops)."""
    from redrafter_trt import output

    dest = tmp_path / "ckpt"
    write_output(dest, "old")
    real, calls = output.shutil.rmtree, []

    def ctrl_c_once(path, *args, **kw):
        calls.append(Path(path).name)
        if len(calls) == 1 and Path(path).name.endswith("-gone"):
            (Path(path) / MARKER).unlink()  # halfway through
            raise KeyboardInterrupt
        return real(path, *args, **kw)

    monkeypatch.setattr(output.shutil, "rmtree", ctrl_c_once)
    with caplog.at_level("WARNING"), pytest.raises(output.WrittenThenInterrupted):
        write_output(dest, "new", force=True)
    assert (dest / MARKER).read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    assert f"{dest} is written whole: the Ctrl-C came after" in caplog.text


def test_a_second_ctrl_c_while_the_replaced_output_is_removed_still_says_it_is_written(tmp_path, monkeypatch, caplog):
    """A second Ctrl-C (or the SIGTERM that follows one) while the removal, begun again after the first, went on (an 8B
    checkpoint's takes a while) escaped as a plain KeyboardInterrupt: "interrupted" alone, and train said to pass
    --resume to write the drafter already written. The new output is said written, the interrupt goes on as
    WrittenThenInterrupted, and what is left of the old one goes at the next run's sweep."""
    from redrafter_trt import output

    dest = tmp_path / "ckpt"
    write_output(dest, "old")
    real = output.shutil.rmtree

    def ctrl_c_every_time(path, *args, **kw):
        if Path(path).name.endswith("-gone"):
            raise KeyboardInterrupt
        return real(path, *args, **kw)

    monkeypatch.setattr(output.shutil, "rmtree", ctrl_c_every_time)
    with caplog.at_level("WARNING"), pytest.raises(KeyboardInterrupt) as e:
        write_output(dest, "new", force=True)
    monkeypatch.undo()
    assert isinstance(e.value, output.WrittenThenInterrupted)
    assert (dest / MARKER).read_text() == "new"
    assert f"{dest} is written whole: the Ctrl-C came after" in caplog.text
    [left] = [p for p in tmp_path.iterdir() if p.name != "ckpt"]
    assert f"{left} is left: the next write of {dest} removes it" in caplog.text
    output.remove_stale_partials(dest)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


@pytest.mark.parametrize("swap,after", [(False, "-old"), (False, "ckpt"), (False, "-gone"), (True, "-gone")])
def test_a_ctrl_c_between_the_renames_that_replace_an_output(tmp_path, monkeypatch, caplog, swap, after):
    """A Ctrl-C that came once the new output was renamed into place but before the removal of the old one began (at
    the old one's rename to `-gone`, or as the new one's own rename returned) was a plain KeyboardInterrupt
    ("interrupted", and train said to pass --resume to write the drafter already written), or an OSError from putting
    the old one back over the new one; one after the old one's rename aside left no output named `ckpt`. The renames
    are instant and run whole, the Ctrl-C held until they are done: the new output is in place, said so, the old one
    removed, and the interrupt goes on as WrittenThenInterrupted."""
    from redrafter_trt import output

    if swap and NO_SWAP:
        pytest.skip(NO_SWAP_REASON)
    if not swap:
        monkeypatch.setattr(output.exchange, "_RENAMEAT2", None)
    dest = tmp_path / "ckpt"
    write_output(dest, "old")
    real = Path.rename

    def ctrl_c_after(self, target):
        moved = real(self, target)
        if Path(target).name.endswith(after):
            signal.raise_signal(signal.SIGINT)
        return moved

    monkeypatch.setattr(Path, "rename", ctrl_c_after)
    with caplog.at_level("WARNING"), pytest.raises(KeyboardInterrupt) as e:
        write_output(dest, "new", force=True)
    monkeypatch.undo()
    assert isinstance(e.value, output.WrittenThenInterrupted)
    assert (dest / MARKER).read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    assert f"{dest} is written whole: the Ctrl-C came after" in caplog.text


def test_a_replace_whose_second_rename_fails_puts_the_earlier_output_back(tmp_path, monkeypatch):
    """Without renameat2's exchange the earlier output is renamed aside, then the new one in: when that second rename
    fails (a full or read-only disk, an EXDEV), the earlier output is put back under its name at once (the failure
    goes on), not left hidden aside for a later run's sweep to restore."""
    from redrafter_trt import output

    monkeypatch.setattr(output.exchange, "_RENAMEAT2", None)
    dest = tmp_path / "ckpt"
    write_output(dest, "old")
    real = Path.rename

    def new_one_fails(self, target):
        if Path(target) == dest and output.PARTIAL_MARK in self.name and not self.name.endswith("-old"):
            raise OSError(28, "No space left on device")
        return real(self, target)

    monkeypatch.setattr(Path, "rename", new_one_fails)
    with pytest.raises(OSError, match="No space left"):
        write_output(dest, "new", force=True)
    monkeypatch.undo()
    assert (dest / MARKER).read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_a_ctrl_c_as_a_new_output_is_renamed_into_place_says_it_is_written(tmp_path, monkeypatch, caplog):
    """An output written where none was: a Ctrl-C as its rename returned was a plain KeyboardInterrupt, and train said
    to pass --resume to write the drafter already written. It is held over the rename, then goes on as
    WrittenThenInterrupted, said."""
    from redrafter_trt import output

    dest = tmp_path / "ckpt"
    real = Path.rename

    def ctrl_c_after(self, target):
        moved = real(self, target)
        signal.raise_signal(signal.SIGINT)
        return moved

    monkeypatch.setattr(Path, "rename", ctrl_c_after)
    with caplog.at_level("WARNING"), pytest.raises(KeyboardInterrupt) as e:
        write_output(dest, "new")
    monkeypatch.undo()
    assert isinstance(e.value, output.WrittenThenInterrupted)
    assert (dest / MARKER).read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]
    assert f"{dest} is written whole: the Ctrl-C came as it was renamed into place" in caplog.text


@pytest.mark.parametrize("command", ["convert", "init-drafter"])
def test_force_onto_a_link_to_an_earlier_output_replaces_the_folder_it_names(tmp_path, tiny_llama, command,
                                                                            monkeypatch, caplog):
    """`--output ck --force`, ck a link to store/ck: the checks followed the link, the replace renamed the link itself
    (ck a real folder, store/ck the stale earlier output) and left the link as `.ck.partial-*-gone` beside it, which
    the next run removed as 'left by an interrupted run'. The folder the link names is replaced, written beside it,
    and the link stays."""
    monkeypatch.chdir(tmp_path)
    if command == "convert":
        drafter = make_drafter(tmp_path / "d", tiny_llama)
        args, earlier, later = ["convert", "--base", tiny_llama, "--drafter", drafter], ["--tp-size", "2"], []
    else:
        args, earlier, later = ["init-drafter", "--base", tiny_llama], ["--seed", "1"], ["--seed", "2"]
    (tmp_path / "store").mkdir()
    assert run_cli(*args, *earlier, "--output", "store/ck").exit_code == 0
    (tmp_path / "ck").symlink_to("store/ck")
    for _ in range(2):  # the second: nothing the first left is swept
        result = run_cli(*args, *later, "--output", "ck", "--force")
        assert result.exit_code == 0, result.output
    assert "removed" not in caplog.text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck", *(["d"] if command == "convert" else []), "store"]
    assert [p.name for p in (tmp_path / "store").iterdir()] == ["ck"]
    assert os.readlink(tmp_path / "ck") == "store/ck"
    config = json.loads((tmp_path / "store" / "ck" / "config.json").read_text())
    if command == "convert":
        assert config["mapping"]["tp_size"] == 1 and not (tmp_path / "store" / "ck" / "rank1.safetensors").exists()
    else:
        assert config["producer"]["options"]["seed"] == 2


def test_a_link_to_a_folder_not_made_yet_writes_that_folder(tmp_path, tiny_llama):
    """ck -> store/ck, store made and store/ck not yet (output pointed at big storage): refused as a link to nothing,
    whose fix, making store/ck, was then refused as an existing output without --force. The folder is written."""
    (tmp_path / "store").mkdir()
    (tmp_path / "ck").symlink_to("store/ck")
    result = run_cli("init-drafter", "--base", tiny_llama, "--output", tmp_path / "ck")
    assert result.exit_code == 0, result.output
    assert os.readlink(tmp_path / "ck") == "store/ck" and (tmp_path / "store" / "ck" / "config.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck", "store"]


def test_a_link_into_a_missing_folder_as_the_output_folder_is_refused_before_any_work(tmp_path, tiny_llama):
    """A link into storage not mounted: the renames into place failed at the end, the work lost; nothing is made on
    the disk under the mount point either."""
    (tmp_path / "ck").symlink_to(tmp_path / "missing" / "ck")
    result = run_cli("init-drafter", "--base", tiny_llama, "--output", tmp_path / "ck")
    assert result.exit_code == 2, result.output
    assert f"--output {tmp_path / 'ck'} is a symbolic link to {tmp_path / 'missing' / 'ck'}, in {tmp_path / 'missing'}, " \
           f"which does not exist: make {tmp_path / 'missing'}" in " ".join(result.stderr.split())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]


def test_a_replace_through_a_link_killed_between_its_two_renames_keeps_the_earlier_output(tmp_path, tiny_llama):
    """What `--output ck --force` killed between its two renames leaves: store/real moved aside as a partial, the link
    dangling. It was refused as a link to nothing, and once the folder was made the earlier output was swept as a
    killed run's partial. It is put back, as for a folder that is no link."""
    store = tmp_path / "store"
    assert run_cli("init-drafter", "--base", tiny_llama, "--output", store / "real", "--seed", "1").exit_code == 0
    (tmp_path / "ck").symlink_to("store/real")
    (store / "real").rename(store / f".real.partial-{dead_pid()}-abcd1234-old")
    result = run_cli("init-drafter", "--base", tiny_llama, "--output", tmp_path / "ck", "--seed", "2")
    assert result.exit_code == 2 and "already exists: pass --force" in result.stderr, result.output
    assert [p.name for p in store.iterdir()] == ["real"]
    assert json.loads((store / "real" / "config.json").read_text())["producer"]["options"]["seed"] == 1


def test_an_output_another_run_wrote_meanwhile_is_kept_without_force(tmp_path):
    """Two runs to one --output, the first slower: the first, checked when it began (no output then), replaced the
    second's finished output at its end without --force. It is refused then, its own output removed."""
    dest = tmp_path / "out"
    with pytest.raises(ConfigError, match=f"output folder {dest} already exists: pass --force"):
        with atomic_output(dest, False) as tmp:
            (tmp / "config.json").write_text(OURS)
            (tmp / MARKER).write_text("slower")
            write_output(dest, "faster")
    assert (dest / MARKER).read_text() == "faster"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_force_keeps_the_users_files_put_in_the_output_meanwhile(tmp_path):
    """--force replaces an earlier output only where it holds nothing of the user's: checked as the run began, then
    an hour-long run replaced the folder with the notes the user put in it meanwhile."""
    dest = tmp_path / "out"
    write_output(dest, "earlier")
    with pytest.raises(ConfigError, match="also holds notes.md"):
        with atomic_output(dest, True) as tmp:
            (tmp / MARKER).write_text("new")
            (dest / "notes.md").write_text("mine")
    assert (dest / "notes.md").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_init_drafter_keeps_a_drafter_another_run_wrote_meanwhile(tmp_path, tiny_llama, monkeypatch):
    """init-drafter (and train) saved with force whatever --force said: one written meanwhile was replaced."""
    from redrafter_trt import base_sample

    dest, real = tmp_path / "d", base_sample.record_base_sample

    def another_run_writes_it(base):
        write_output(dest, "theirs")
        return real(base)

    monkeypatch.setattr(base_sample, "record_base_sample", another_run_writes_it)
    result = run_cli("init-drafter", "--base", tiny_llama, "--output", dest)
    assert result.exit_code == 2, result.output
    assert "already exists: pass --force" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert (dest / MARKER).read_text() == "theirs"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d"]


def test_a_link_put_at_the_output_meanwhile_is_replaced_and_its_folder_kept(tmp_path):
    """The path checked as the run began is the one replaced at its end: a link put there meanwhile is replaced, not
    the folder it names, and no `.out.partial-*-gone` link is left beside it (rmtree cannot remove a link)."""
    dest, other = tmp_path / "out", tmp_path / "other"
    write_output(other, "other")
    with atomic_output(dest, True) as tmp:
        (tmp / "config.json").write_text(OURS)
        (tmp / MARKER).write_text("new")
        dest.symlink_to(other)
    assert not dest.is_symlink() and (dest / MARKER).read_text() == "new"
    assert (other / MARKER).read_text() == "other"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other", "out"]


def dead_pid() -> int:
    """The id of a process that has ended."""
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    return gone.pid


def test_a_killed_fp8_scratch_through_a_link_is_swept_by_the_next_run(tmp_path):
    """`convert --quantize fp8 --output ck --force`, ck a link to store/real, killed while calibrating: its scratch
    was made beside the link under the link's name, and the sweep looks beside the folder the link names, so the
    scratch (a base's size) stayed for good. It is made beside that folder now; one an earlier version left beside
    the link is swept too."""
    store = tmp_path / "store"
    write_output(store / "real", "first")
    link = tmp_path / "ck"
    link.symlink_to("store/real")
    rc = run_child(f"""
        import os, signal
        from pathlib import Path
        from redrafter_trt.output import scratch_dir

        with scratch_dir(Path({str(link)!r}), "fp8-") as scratch:
            (scratch / "base").mkdir()
            (scratch / "base" / "rank0.safetensors").write_bytes(b"x" * 1000)
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    assert rc == -signal.SIGKILL
    earlier = tmp_path / f".ck.partial-{dead_pid()}-fp8-abcd1234"
    (earlier / "base").mkdir(parents=True)
    write_output(link, "second", force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck", "store"]
    assert [p.name for p in store.iterdir()] == ["real"]
    assert (link / MARKER).read_text() == "second"


@pytest.mark.parametrize("target", ["empty", "not_made"])
def test_a_smollm2_cache_folder_that_is_a_link_is_written_where_it_points(tmp_path, monkeypatch, target, tiny_llama):
    """A cache folder linked to other storage was `Cannot call rmtree on a symbolic link`, after the minute of
    dequantising; the folder it names is written now, and the link stays. The GGUF's 18 s of dequantising is a tiny
    Llama's load here: where the folder is written is the point, and the tokenizer is still SmolLM2's."""
    from transformers import AutoModelForCausalLM

    from redrafter_trt import smollm2

    load = AutoModelForCausalLM.from_pretrained
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained",
                        lambda src, gguf_file, **kw: load(tiny_llama, **kw) if gguf_file == smollm2.GGUF_FILE
                        else pytest.fail(f"read {gguf_file}"))

    storage = tmp_path / "storage" / "smol"
    if target == "empty":
        storage.mkdir(parents=True)
    else:
        storage.parent.mkdir()
    (tmp_path / "cache").mkdir()
    link = tmp_path / "cache" / "SmolLM2-135M-Instruct"
    link.symlink_to(storage)
    monkeypatch.setenv("REDRAFTER_TRT_CACHE", str(tmp_path / "cache"))
    assert smollm2.ensure_smollm2() == link
    assert link.is_symlink() and (storage / "model.safetensors").is_file() and (link / "config.json").is_file()
    assert (storage / "tokenizer.json").is_file()
    assert sorted(p.name for p in storage.parent.iterdir()) == ["smol"]  # no partial left beside it


@pytest.mark.parametrize("command", ["build", "train", "convert", "init-drafter"])
def test_force_help_says_what_force_replaces(tmp_path, command):
    """A review: `build --force` said it replaces "an earlier engine, or an empty folder" (train's: "an earlier
    drafter"), where check_output_folder replaces any earlier ReDrafter output, a drafter's or a checkpoint's folder
    too, holding only what its tools write there: the help says so, as the folder is replaced whole."""
    force = next(p for p in main.get_command(None, command).params if p.name == "force")
    assert "an earlier ReDrafter output (a drafter, checkpoint or engine folder holding only what its tools write), " \
           "or an empty folder" in force.help, force.help
    drafter = tmp_path / "d"
    drafter.mkdir()
    (drafter / "config.json").write_text(json.dumps({"model_type": "recurrent_drafting_drafter"}))
    (drafter / "model.safetensors").write_text("x")
    check_output_folder(drafter, True, option="--output-dir")  # build --output-dir over a drafter: replaced


def test_a_file_write_sweeps_a_killed_runs_partial_of_that_file(tmp_path):
    """write_text_atomic (--output-json, --plot's data) removes what a killed run left for the same file first."""
    from redrafter_trt.output import write_text_atomic

    stale = tmp_path / f".r.json.partial-{dead_pid()}-abcd1234"
    stale.write_text("half")
    write_text_atomic(tmp_path / "r.json", "{}\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.json"]


def test_an_error_naming_its_own_file_keeps_that_name(tmp_path):
    """named_failures names the output only in an OSError that names no file: one naming the file it failed on (an
    input it could not read) keeps that name."""
    with pytest.raises(PermissionError) as e:
        with atomic_output(tmp_path / "out", False):
            raise PermissionError(13, "Permission denied", "base/x")
    assert e.value.filename == "base/x"
    with pytest.raises(OSError) as e:
        with atomic_output(tmp_path / "out", False):
            raise OSError(28, "No space left on device")
    assert e.value.filename == str(tmp_path / "out")


def test_a_link_loop_as_the_output_folder_is_refused(tmp_path):
    """`ln -s loop loop; convert --output loop`: refused before any work, in one line."""
    loop = tmp_path / "loop"
    loop.symlink_to("loop")
    with pytest.raises(ConfigError, match="--output .*loop is a symbolic link that leads back to itself: pass another "
                                          "--output"):
        check_output_folder(loop, True)


def test_a_live_runs_replaced_output_is_not_put_back(tmp_path):
    """A run between its two renames (its earlier output aside as `.x.partial-PID-*-old`, `x` missing) that still
    runs is left to finish: restore_replaced puts back only a killed run's."""
    old = tmp_path / f".x.partial-{os.getppid()}-ab-old"
    old.mkdir()
    (old / "config.json").write_text(OURS)
    check_output_folder(tmp_path / "x", False)
    assert sorted(p.name for p in tmp_path.iterdir()) == [old.name]


def test_a_foreign_folder_is_named_by_an_entry_other_than_its_config(tmp_path):
    """A project folder with a config.json of its own (no ReDrafter output) is refused naming what else it holds."""
    dest = tmp_path / "project"
    (dest / "src").mkdir(parents=True)
    (dest / "config.json").write_text('{"name": "mine"}')
    with pytest.raises(ConfigError, match=r"project holds src, and it is not an earlier ReDrafter output"):
        check_output_folder(dest, True)


def test_a_killed_runs_partial_that_is_a_link_is_removed_and_its_folder_kept(tmp_path):
    """A dead run's `.out.partial-PID-*` that is a link to a folder: the link is removed, never the folder it names
    (rmtree refuses a link: it stayed)."""
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "f").write_text("x")
    stale = tmp_path / f".out.partial-{dead_pid()}-abcd1234"
    stale.symlink_to(kept)
    write_output(tmp_path / "out", "new")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept", "out"] and (kept / "f").read_text() == "x"
