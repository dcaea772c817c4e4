"""`quickstart` on the real SmolLM2-135M-Instruct. Default run: the whole command once with a stand-in trainer
(init-drafter's drafter, recorded as this recipe's: seconds, not minutes of training), then the reuse rules. `-m slow`:
the real training API with a budget of two steps, first and second run. The printed GPU commands are the build
module's plan."""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from redrafter_trt import quickstart as qs
from redrafter_trt.cli import main
from redrafter_trt.errors import ConfigError

TINY = dict(max_examples=6, distill_max_new_tokens=12, max_steps=2, batch_size=16, eval_examples=1)


def stand_in_training(calls: list):
    """A training API (`qs.training_api`'s) whose trainer writes init-drafter's drafter for the base, recorded as
    train_drafter records the quickstart's (command train, this recipe's id, its predict_n): for the stages after
    training (convert, generate, report, reuse). Each training's TrainConfig goes into `calls`."""
    import json
    from dataclasses import replace

    from redrafter_trt.drafter import init_drafter_for_base, load_drafter, save_drafter
    from redrafter_trt.train import quickstart_config

    def train(cfg, on_progress=None, **kw):
        calls.append(cfg)
        init_drafter_for_base(cfg.base, cfg.output, num_draft_layers=cfg.num_draft_layers, force=True)
        dcfg, tensors = load_drafter(cfg.output)
        made = json.loads((cfg.output / "config.json").read_text())["producer"]
        save_drafter(cfg.output, replace(dcfg, predict_n=cfg.predict_n), tensors,
                     {**made, "command": "train", **cfg.extra}, force=True)
        return cfg.output

    return lambda: (quickstart_config, train)


@pytest.fixture(scope="module")
def first_run(smollm2, tmp_path_factory):
    """One whole quickstart through the CLI with the stand-in trainer: (workdir, CLI result, trainings)."""
    import torch

    workdir = tmp_path_factory.mktemp("quickstart")
    calls = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # its header counts them: "1 CPU thread"
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(qs, "training_api", stand_in_training(calls))
            result = CliRunner().invoke(main, ["quickstart", "--workdir", str(workdir), "--num-questions", "1",
                                               "--max-new-tokens", "6"])
    finally:
        torch.set_num_threads(threads)
    assert result.exit_code == 0, result.output
    return workdir, result, calls


def test_first_run_prints_answers_speed_ups_and_gpu_commands(first_run):
    workdir, result, calls = first_run
    out = result.stdout
    assert len(calls) == 1 and calls[0].cache_dir == workdir / "train-cache" and calls[0].distill
    assert qs.drafter_origin(workdir / "drafter", calls[0].extra["recipe"]) == "trained"
    assert "UNTRAINED" not in out and f"work folder: {workdir} (drafter/ trained, checkpoint/ converted)" in out
    for needle in ("Q1: ", "tokens/step", "x over transformers (no interval from 1 question), ",
                   "x over no drafting (no interval from 1 question); same text as without drafting: yes",
                   "redrafter-trt convert", "--dtype bfloat16", "redrafter-trt build --checkpoint-dir",
                   "trtllm-build --checkpoint_dir", "--speculative_decoding_mode explicit_draft_tokens",
                   "--gemm_plugin bfloat16", "redrafter-trt run --engine-dir", "redrafter-trt serve --engine-dir",
                   f"redrafter-trt acceptance --checkpoint-dir {workdir / 'checkpoint'}", "redrafter-trt bench"):
        assert needle in out, needle
    for w in qs.GRID_BEAMS:
        assert f"W={w} L={qs.CPU_DRAFT_LEN}" in out
    # the install command stands alone on its line's end, not inside another parenthesis (copied, it ran as written)
    # (TensorRT-LLM 1.2.x's CUDA 13 torch first, as its install page has it)
    assert "On a machine with an NVIDIA GPU and TensorRT-LLM, installed with: pip install 'torch>=2.9.1,<=2.10.0a0' " \
           "--index-url https://download.pytorch.org/whl/cu130, then pip install 'tensorrt_llm==1.2.*'" in out
    # a walkthrough: "Measured here (1 questions, ..., 1 CPU threads)"
    assert "Measured here (1 question, " in out and "1 CPU thread):" in out, out
    assert "generating: 1 MT-Bench question, up to 6 tokens" in result.output, result.output  # its stage line too
    best = int(re.search(r"W=(\d+) L=\d+\*", out).group(1))  # the table's starred row
    assert f"ReDrafter, {best} beam{'' if best == 1 else 's'} x " in out, out
    # bench's verdict, as `bench` prints it (the stand-in's untrained weights mostly "accept almost nothing")
    verdict = next(line for line in out.splitlines() if line.startswith(
        ("drafting pays here", "drafting does not pay here", "the drafter accepts almost", "too close to call")))
    assert " prompt" not in verdict, verdict  # the quickstart's prompts are questions
    if verdict.startswith("too close to call"):  # the printed `bench` line measures more, not the quickstart again
        assert verdict.endswith("from 1 question): one question gives no noise estimate: for a verdict, run the "
                                "`redrafter-trt bench` line below (all 80 questions, every category)"), verdict


def test_a_close_verdict_points_at_the_printed_bench_line_in_questions():
    """A review: '... over 3 prompts): within this run's noise over 3 prompts: measure more prompts (--num-questions)':
    prompts where the quickstart says questions, said twice, and a rerun of the whole quickstart where the `bench` line
    it prints measures more for less."""
    from test_bench import timed_run

    from redrafter_trt.bench import BenchReport, ConfigResult
    from redrafter_trt.cli.quickstart_cmd import quickstart_verdict

    plain = timed_run(300, 15.0, 300, prompts=3)
    drafted = timed_run(180, 12.0, 300, prompts=3, spread=(0.7, 1.3, 1.0))
    config = ConfigResult(2, 2, drafted, speedup_vs_hf=1.0, speedup_vs_no_draft=1.25, mismatched_prompts=[])
    line = quickstart_verdict(BenchReport(meta={}, hf=timed_run(300, 30.0, 300, prompts=3), no_draft=plain,
                                          configs=[config]))
    assert line.startswith("too close to call") and " prompt" not in line and line.count("3 questions") == 1, line
    assert line.endswith("over 3 questions): within this run's spread over questions: for a verdict, run the "
                         "`redrafter-trt bench` line below (all 80 questions, every category)"), line


def test_each_answers_tokens_per_step_are_the_headline_configurations(tmp_path, monkeypatch):
    """Each answer's `[N tokens in S steps: x tokens/step]` counts the steps of the configuration whose answers are
    shown (the table's starred row), not those of the run without drafting (1.00 tokens/step on every answer) nor
    those of a faster configuration left out for differing from plain decoding."""
    from test_bench import hand_run

    from redrafter_trt.bench import BenchReport, ConfigResult

    def config(beams, steps, seconds, mismatched=()):
        return ConfigResult(beams, 2, hand_run([6, 4], seconds, steps), 10.0 / sum(seconds), 1.0, list(mismatched))

    configs = [config(1, [4, 3], [0.8, 0.6]), config(2, [3, 4], [0.6, 0.5]), config(4, [2, 2], [0.3, 0.3], [1])]
    report = BenchReport(meta={"num_prompts": 2, "max_new_tokens": 6, "dtype": "float32", "torch_threads": 1},
                         hf=hand_run([6, 4], [2.0, 1.5]), no_draft=hand_run([6, 4], [1.0, 0.7]), configs=configs)
    assert report.headline is configs[1]
    result = qs.QuickstartResult(tmp_path, tmp_path, tmp_path, {}, {}, ["q1?", "q2?"], ["a1", "a2"], report)
    monkeypatch.setattr(qs, "quickstart", lambda *a, **k: result)
    out = CliRunner().invoke(main, ["quickstart", "--workdir", str(tmp_path)])
    assert out.exit_code == 0, out.output
    assert re.findall(r"\[.*tokens/step\]", out.stdout) == ["[6 tokens in 3 steps: 2.00 tokens/step]",
                                                            "[4 tokens in 4 steps: 1.00 tokens/step]"], out.stdout
    assert re.search(r"W=2 L=2\* +1\.43 ", out.stdout), out.stdout  # 10 tokens in the starred row's 7 steps


def test_second_run_reuses_drafter_and_checkpoint_and_force_retrains(smollm2, first_run, monkeypatch):
    workdir, _, _ = first_run
    calls = []
    monkeypatch.setattr(qs, "training_api", stand_in_training(calls))
    assert qs.ensure_drafter(smollm2, workdir, False, None) == (workdir / "drafter", True)
    assert qs.ensure_checkpoint(smollm2, workdir / "drafter", workdir, False) == (workdir / "checkpoint", True)
    assert calls == [] and qs.plan_drafter(smollm2, workdir, True).reuse is False


def test_the_work_folder_line_says_what_was_reused(first_run, monkeypatch):
    """A review: after `drafter 0s (reused)` the summary still said `work folder: ... (drafter/ trained, checkpoint/)`."""
    workdir, _, _ = first_run
    monkeypatch.setattr(qs, "training_api", stand_in_training([]))
    result = CliRunner().invoke(main, ["quickstart", "--workdir", str(workdir), "--num-questions", "1",
                                       "--max-new-tokens", "6"])
    assert result.exit_code == 0, result.output
    assert f"work folder: {workdir} (drafter/ reused, checkpoint/ reused)" in result.stdout, result.stdout


def test_the_users_files_in_folders_it_reuses_do_not_stop_it(smollm2, first_run, monkeypatch):
    """Notes of the user's in the work folder's drafter/ and checkpoint/ refused every quickstart, even one reusing
    both (nothing to delete or overwrite). They are refused only where the folder is about to be replaced (--force
    here, before anything is)."""
    workdir, _, _ = first_run

    class Stop(Exception):
        pass

    def stop(*args, **kwargs):
        raise Stop

    calls = []
    monkeypatch.setattr(qs, "training_api", stand_in_training(calls))
    monkeypatch.setattr(qs, "run_bench", stop)  # reached once drafter and checkpoint are settled: nothing timed
    notes = [workdir / folder / "notes.txt" for folder in ("drafter", "checkpoint")]
    before = {p: p.stat().st_mtime_ns for p in (workdir / "drafter").iterdir()}
    try:
        for note in notes:
            note.write_text("mine")
        with pytest.raises(Stop):
            qs.quickstart(qs.QuickstartOptions(workdir, num_questions=1, max_new_tokens=6))
        with pytest.raises(ConfigError, match=f"--workdir {workdir / 'drafter'} is an earlier ReDrafter output but "
                                              f"also holds notes.txt"):
            qs.quickstart(qs.QuickstartOptions(workdir, num_questions=1, max_new_tokens=6, force=True))
        assert [note.read_text() for note in notes] == ["mine", "mine"]
        assert {p: p.stat().st_mtime_ns for p in (workdir / "drafter").iterdir() if p not in notes} == before
    finally:
        for note in notes:
            note.unlink(missing_ok=True)
    assert calls == []
    assert qs.ensure_checkpoint(smollm2, workdir / "drafter", workdir, False) == (workdir / "checkpoint", True)


def test_an_untrained_drafter_from_init_drafter_is_retrained_and_reconverted(smollm2, first_run, monkeypatch):
    """A drafter/ that init-drafter wrote (as an earlier version did where the training package failed to import)
    was never this recipe's: it is replaced by a trained one, and the checkpoint follows the new drafter."""
    from redrafter_trt.drafter import init_drafter_for_base

    workdir, _, _ = first_run
    init_drafter_for_base(smollm2, workdir / "drafter", force=True)
    assert qs.ensure_checkpoint(smollm2, workdir / "drafter", workdir, False)[1] is False  # converted from it
    calls = []
    train = stand_in_training(calls)

    def training_api():
        config, stand_in = train()

        def later(cfg, on_progress=None, **kw):  # newer than the checkpoint, however coarse the clock
            stand_in(cfg, on_progress, **kw)
            after = (workdir / "checkpoint" / "config.json").stat().st_mtime + 0.001
            os.utime(cfg.output / "model.safetensors", (after, after))
        return config, later

    monkeypatch.setattr(qs, "training_api", training_api)
    assert qs.ensure_drafter(smollm2, workdir, False, None) == (workdir / "drafter", False)
    assert len(calls) == 1 and qs.drafter_origin(workdir / "drafter", calls[0].extra["recipe"]) == "trained"
    assert qs.ensure_drafter(smollm2, workdir, False, None) == (workdir / "drafter", True)
    assert len(calls) == 1
    assert qs.ensure_checkpoint(smollm2, workdir / "drafter", workdir, False)[1] is False  # reconverted
    assert qs.ensure_checkpoint(smollm2, workdir / "drafter", workdir, False)[1] is True


def test_a_broken_training_package_is_an_error_not_an_untrained_drafter(monkeypatch):
    """`redrafter_trt.train` failing to import (it ships with the tool: only a broken install meets that) made the
    quickstart go on with an untrained drafter, a warning and a NOTE in its report; the ImportError now stops it."""
    import sys

    monkeypatch.setitem(sys.modules, "redrafter_trt.train", None)  # `import redrafter_trt.train` raises ImportError
    with pytest.raises(ImportError):
        qs.training_api()


@pytest.mark.slow
def test_real_training_first_and_second_run(smollm2, tmp_path, monkeypatch):
    """The real training API with a budget of two steps on six prompts; the second run trains nothing."""
    from redrafter_trt.train import quickstart_config, train_drafter

    calls = []

    def config(base, output, **kw):
        return quickstart_config(base, output, **{**kw, **TINY})

    def train(cfg, on_progress=None, **kw):
        calls.append(cfg)
        return train_drafter(cfg, on_progress, **kw)

    monkeypatch.setattr(qs, "training_api", lambda: (config, train))
    opts = qs.QuickstartOptions(tmp_path, num_questions=1, max_new_tokens=8)
    first = qs.quickstart(opts)
    assert first.reused == {"drafter": False, "checkpoint": False} and len(calls) == 1
    draft_len = min(qs.CPU_DRAFT_LEN, qs.predict_n(tmp_path / "drafter"))
    assert [(c.num_beams, c.draft_len) for c in first.report.configs] == [(w, draft_len) for w in qs.GRID_BEAMS]
    assert all(not c.mismatched_prompts for c in first.report.configs), "drafting changed greedy output in float32"
    assert len(first.answers) == 1 and first.answers[0]
    second = qs.quickstart(opts)
    assert second.reused == {"drafter": True, "checkpoint": True} and len(calls) == 1
    assert second.report.no_draft.outputs == first.report.no_draft.outputs


def test_gpu_commands_follow_the_build_plan(tmp_path):
    from redrafter_trt.build import BuildOptions, plan_build

    config = {"dtype": "float32", "mapping": {"world_size": 1, "tp_size": 1, "pp_size": 1},
              "redrafter_num_beams": 4, "redrafter_draft_len_per_beam": 4}
    drafter = tmp_path / "drafter"
    drafter.mkdir()
    (drafter / "config.json").write_text('{"predict_n": 3}')
    lines = qs.gpu_commands(tmp_path / "base", drafter, tmp_path, config)
    plan = plan_build(BuildOptions(tmp_path / "checkpoint-bf16", tmp_path / "engine"), {**config, "dtype": "bfloat16"})
    assert plan.shell() in "\n".join(lines)
    assert "--draft-len 3" in lines[0] and f"--num-beams {qs.GPU_BEAMS}" in lines[0]  # capped by predict_n


def test_printed_commands_run_as_printed(tmp_path):
    """Every printed command goes through our own CLI's parser as printed (a path with a space included), the GPU
    convert line converts, and `build --dry-run` on what it wrote prints the very trtllm-build line quoted beside it."""
    import json
    import shlex

    from tinymodels import make_drafter, make_hf

    from redrafter_trt.convert import convert

    root = tmp_path / "work dir"
    base = make_hf(root / "base", "llama")
    drafter = make_drafter(root / "drafter", base)
    ckpt = convert(base, drafter, root / "checkpoint", tp_size=1, dtype="float32", num_beams=qs.CPU_BEAMS,
                   draft_len=qs.CPU_DRAFT_LEN, greedy=qs.CPU_GREEDY)
    gpu = qs.gpu_commands(base, drafter, root, json.loads((ckpt / "config.json").read_text()))
    parsed = {}
    for line in gpu + qs.cpu_commands(base, ckpt):
        argv = shlex.split(line, comments=True)
        if argv and argv[0] == "redrafter-trt":
            with main.make_context("redrafter-trt", argv[1:2]) as ctx:
                parsed[argv[1]] = main.get_command(ctx, argv[1]).make_context(argv[1], argv[2:], parent=ctx).params
    # the CPU bench line times the compiled layers, its fastest on a CPU (cpu_commands; a mutant printing
    # it without --compile survived)
    assert parsed["bench"]["compile_layers"] is True
    convert_line, build_line, trtllm_line = gpu[:3]
    result = CliRunner().invoke(main, shlex.split(convert_line)[1:])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(main, [*shlex.split(build_line)[1:], "--dry-run"])
    assert result.exit_code == 0, result.output
    assert trtllm_line == f"# (runs: {result.output.strip()})"


def test_force_help_names_no_case_an_install_meets():
    """--force's help said a trained drafter is kept "without the training package": the package always ships with the
    tool (the fallback is for a broken install alone)."""
    result = CliRunner().invoke(main, ["quickstart", "--help"])
    assert result.exit_code == 0 and "training package" not in " ".join(result.output.split()), result.output


def test_pick_questions():
    prompts = [f"q{i}" for i in range(80)]
    assert qs.pick_questions(prompts, 8) == [f"q{i}" for i in range(0, 80, 10)]  # one per MT-Bench category
    assert qs.pick_questions(prompts, 1) == ["q0"]
    with pytest.raises(ConfigError, match="--num-questions"):
        qs.pick_questions(prompts, 81)


def test_packaged_mt_bench():
    prompts = qs.load_prompts(qs.mt_bench_path())
    assert len(prompts) == 80
    assert (qs.mt_bench_path().parent / "LICENSE.fastchat-apache-2.0").is_file()


def test_a_hand_edited_producer_block_is_not_ours(tmp_path):
    """A `producer` edited into a string was an AttributeError traceback when the quickstart looked for reuse."""
    import json

    from tinymodels import make_drafter, make_hf

    from redrafter_trt.convert import convert

    base = make_hf(tmp_path / "base", "llama")
    drafter = make_drafter(tmp_path / "drafter", base)
    ckpt = convert(base, drafter, tmp_path / "ckpt", tp_size=1, dtype="float32", num_beams=2, draft_len=2)
    assert qs.checkpoint_is_current(ckpt, drafter, base, 2, 2)
    for folder in (drafter, ckpt):
        cfg = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps(cfg | {"producer": "by hand"}))
    assert qs.drafter_origin(drafter) == "outdated"
    assert not qs.checkpoint_is_current(ckpt, drafter, base, 2, 2)


def test_a_checkpoint_older_than_its_base_is_reconverted(tmp_path):
    """A base made again (the model cache deleted, its config.json rewritten for another transformers) left the
    checkpoint converted from the old one trusted wherever the drafter was not retrained (no training package)."""
    from tinymodels import make_drafter, make_hf

    from redrafter_trt.convert import convert

    base = make_hf(tmp_path / "base", "llama")
    drafter = make_drafter(tmp_path / "drafter", base)
    ckpt = convert(base, drafter, tmp_path / "ckpt", tp_size=1, dtype="float32", num_beams=2, draft_len=2)
    assert qs.checkpoint_is_current(ckpt, drafter, base, 2, 2)
    later = (ckpt / "config.json").stat().st_mtime + 1
    for name in ("config.json", "model.safetensors"):
        os.utime(base / name, (later, later))
        assert not qs.checkpoint_is_current(ckpt, drafter, base, 2, 2), name
        os.utime(base / name, (later - 2, later - 2))
    assert qs.checkpoint_is_current(ckpt, drafter, base, 2, 2)


def test_a_checkpoint_converted_for_sampling_is_reconverted(tmp_path):
    """A review: checkpoint_is_current did not look at greedy mode, so a checkpoint converted with --no-greedy into
    the work folder (same version, base, drafter, beams) was reused, though the quickstart converts a greedy one."""
    from tinymodels import make_drafter, make_hf

    from redrafter_trt.convert import convert

    base = make_hf(tmp_path / "base", "llama")
    drafter = make_drafter(tmp_path / "drafter", base)
    for greedy in (True, False):
        ckpt = convert(base, drafter, tmp_path / "ckpt", tp_size=1, dtype="float32", num_beams=2, draft_len=2,
                       greedy=greedy, force=True)
        assert qs.checkpoint_is_current(ckpt, drafter, base, 2, 2) is (greedy == qs.CPU_GREEDY)


def test_a_checkpoint_from_another_version_is_reconverted(tmp_path, monkeypatch):
    """The converter's fixes (e.g. max_position_embeddings per architecture) reach the quickstart's checkpoint."""
    from tinymodels import make_drafter, make_hf

    from redrafter_trt.convert import convert

    base = make_hf(tmp_path / "base", "llama")
    drafter = make_drafter(tmp_path / "drafter", base)
    ckpt = convert(base, drafter, tmp_path / "ckpt", tp_size=1, dtype="float32", num_beams=2, draft_len=2)
    assert qs.checkpoint_is_current(ckpt, drafter, base, 2, 2)
    monkeypatch.setattr("redrafter_trt.__version__", "99.0")
    assert not qs.checkpoint_is_current(ckpt, drafter, base, 2, 2)


def test_a_checkpoint_from_another_drafter_or_base_is_reconverted(tmp_path):
    """A mutation review: with either recorded-source check gone, a checkpoint converted from drafter B (or base X),
    written after drafter A (and base Y), was reused for A (for Y). Every file here predates the checkpoint."""
    from tinymodels import make_drafter, make_hf

    from redrafter_trt.convert import convert

    base_x, base_y = make_hf(tmp_path / "base-x", "llama"), make_hf(tmp_path / "base-y", "llama", seed=1)
    drafter_a = make_drafter(tmp_path / "drafter-a", base_x)
    drafter_b = make_drafter(tmp_path / "drafter-b", base_x, seed=1)
    ckpt = convert(base_x, drafter_b, tmp_path / "ckpt", tp_size=1, dtype="float32", num_beams=2, draft_len=2)
    assert qs.checkpoint_is_current(ckpt, drafter_b, base_x, 2, 2)
    assert not qs.checkpoint_is_current(ckpt, drafter_a, base_x, 2, 2)
    assert not qs.checkpoint_is_current(ckpt, drafter_b, base_y, 2, 2)


@pytest.fixture(scope="module")
def tiny_recipe(tmp_path_factory):
    """A chat base of a few KB and 40 question-answer records: (base, training_api maker) where the maker's
    keyword arguments change the recipe's options."""
    import json
    import random

    from test_train_data import make_chat_base

    from redrafter_trt.train import quickstart_config, train_drafter

    folder = tmp_path_factory.mktemp("tiny-recipe")
    base = make_chat_base(folder / "base")
    data, r = folder / "qa.jsonl", random.Random(0)
    data.write_text("".join(json.dumps({"question": f"What is {a} plus {b}?", "answer": f"{a} plus {b} is {a + b}."})
                            + "\n" for a, b in ((r.randint(1, 60), r.randint(1, 60)) for _ in range(40))))

    def api(calls, **options):
        def config(b, output, **kw):
            return quickstart_config(b, output, **{**kw, "data": [data], "distill": False, "max_examples": None,
                                                   "batch_size": 32, "max_steps": 4, "predict_n": 3, **options})

        def train(cfg, on_progress=None, **kw):
            calls.append(cfg.resume)
            return train_drafter(cfg, on_progress, **kw)
        return lambda: (config, train)
    return base, api


def test_a_changed_recipe_retrains_and_never_resumes_the_old_state(tiny_recipe, tmp_path, monkeypatch):
    """A recipe option changed without a RECIPE bump reused the stale drafter; with the bump, the next run resumed the
    finished run's state and stopped with train's `--resume` error (a flag the quickstart does not have); a RECIPE
    bump alone (new training code, the same options) resumed the finished state and relabelled the old weights as the
    new recipe's. A finished run's state (train keeps it for --resume: 170 MB for SmolLM2's drafter) was left beside
    drafter/ too, where nothing ever reads it again: it is removed once the drafter is written."""
    base, api = tiny_recipe
    calls = []
    monkeypatch.setattr(qs, "training_api", api(calls, step_decay=1.0))
    assert qs.ensure_drafter(base, tmp_path, False, None) == (tmp_path / "drafter", False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["drafter", "train-cache"]
    assert qs.ensure_drafter(base, tmp_path, False, None)[1] is True and calls == [False]  # reused
    monkeypatch.setattr(qs, "training_api", api(calls, step_decay=0.5))  # an option of the recipe changed
    assert qs.ensure_drafter(base, tmp_path, False, None) == (tmp_path / "drafter", False)
    assert calls == [False, False]
    monkeypatch.setattr(qs, "training_api", api(calls, step_decay=1.0))
    monkeypatch.setattr(qs, "RECIPE", "quickstart-next")  # new training code, the same options
    assert qs.ensure_drafter(base, tmp_path, False, None) == (tmp_path / "drafter", False)
    assert calls == [False, False, False]


def test_the_recipe_id_leaves_out_replacing_the_drafter(tiny_recipe, tmp_path):
    """TrainConfig's force (the quickstart's is True: drafter/ may hold another recipe's) shapes no drafter: in the
    recipe id, it would have retrained every drafter an earlier version trained."""
    import dataclasses

    base, api = tiny_recipe
    config, _ = api([])()
    cfg = config(base, tmp_path / "drafter")
    assert qs.recipe_id(cfg) == qs.recipe_id(dataclasses.replace(cfg, force=not cfg.force))


def test_the_trained_drafter_converts_on_its_base_without_a_warning(tiny_recipe, tmp_path, monkeypatch, caplog):
    """The quickstart converts its drafter with the base it trained it on: train's record of that base (its weights
    read as convert reads them) matches, and the checkpoint says so."""
    import json

    base, api = tiny_recipe
    monkeypatch.setattr(qs, "training_api", api([]))
    drafter = qs.ensure_drafter(base, tmp_path, False, None)[0]
    caplog.clear()  # train's own (the data's duplicate questions)
    checkpoint = qs.ensure_checkpoint(base, drafter, tmp_path, False)[0]
    assert [r.getMessage() for r in caplog.records if r.levelname == "WARNING"] == []
    assert json.loads((checkpoint / "config.json").read_text())["producer"]["drafter_base_matches"] is True


def interrupt_after_step_2(tiny_recipe, workdir, monkeypatch, calls: list) -> None:
    """A quickstart training of tiny_recipe's, saving its state each step, stopped by a Ctrl-C after step 2: the
    state is left beside a drafter/ not written. Each training's resume flag goes into `calls`."""
    base, api = tiny_recipe

    def stop(progress):
        if progress.stats and progress.stats.step == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(qs, "training_api", api(calls, checkpoint_every=1))
    with pytest.raises(KeyboardInterrupt):
        qs.ensure_drafter(base, workdir, False, stop)
    assert not (workdir / "drafter").exists() and (workdir / "drafter.train-state.pt").exists()


def test_an_interrupted_run_resumes_with_its_own_recipe_only(tiny_recipe, tmp_path, monkeypatch):
    base, api = tiny_recipe
    calls = []
    interrupt_after_step_2(tiny_recipe, tmp_path, monkeypatch, calls)
    assert qs.ensure_drafter(base, tmp_path, False, None) == (tmp_path / "drafter", False)
    assert calls == [False, True]  # went on where it stopped
    (tmp_path / "drafter").rename(tmp_path / "kept")
    monkeypatch.setattr(qs, "training_api", api(calls, checkpoint_every=1, lr=2e-3))
    assert qs.ensure_drafter(base, tmp_path, False, None)[1] is False
    assert calls == [False, True, False]  # another recipe's state is not resumed (the run starts over)


def test_force_starts_an_interrupted_run_over(tiny_recipe, tmp_path, monkeypatch):
    """--force retrains (README): an interrupted run of this very recipe is not resumed, and its state goes once the
    new drafter is written."""
    calls = []
    interrupt_after_step_2(tiny_recipe, tmp_path, monkeypatch, calls)
    assert qs.ensure_drafter(tiny_recipe[0], tmp_path, True, None) == (tmp_path / "drafter", False)
    assert calls == [False, False] and not (tmp_path / "drafter.train-state.pt").exists()


def test_a_rewritten_data_file_changes_the_recipe_id(tiny_recipe, tmp_path):
    """README: a changed prompt file retrains the drafter; its contents, not its name, are in the recipe id."""
    base, api = tiny_recipe
    data = tmp_path / "qa.jsonl"
    data.write_text('{"question": "What is 1 plus 1?", "answer": "2."}\n')
    config, _ = api([], data=[data])()
    before = qs.recipe_id(config(base, tmp_path / "drafter"))
    assert qs.recipe_id(config(base, tmp_path / "drafter")) == before
    data.write_text('{"question": "What is 1 plus 2?", "answer": "3."}\n')
    assert qs.recipe_id(config(base, tmp_path / "drafter")) != before


def test_a_finished_runs_state_is_removed_after_a_ctrl_c_once_the_drafter_is_written(tiny_recipe, tmp_path,
                                                                                       monkeypatch):
    """A Ctrl-C once train wrote drafter/ (WrittenThenInterrupted, as the cache was pruned) skipped the removal of
    the finished run's state, and the next quickstart reused the drafter without removing it: 170 MB for SmolLM2's,
    kept for good. It is removed right away, and by a quickstart reusing the drafter (one left by an earlier version);
    another recipe's state, which a quickstart of that recipe resumes, is kept."""
    import shutil

    import torch

    from redrafter_trt.output import WrittenThenInterrupted

    base, api = tiny_recipe
    state = tmp_path / "drafter.train-state.pt"
    trained = api([])

    def interrupted():
        config, train = trained()

        def written_then_stopped(cfg, on_progress=None, **kw):
            train(cfg, on_progress, **kw)
            shutil.copy(state, tmp_path / "kept.pt")
            raise WrittenThenInterrupted
        return config, written_then_stopped

    monkeypatch.setattr(qs, "training_api", interrupted)
    with pytest.raises(WrittenThenInterrupted):
        qs.ensure_drafter(base, tmp_path, False, None)
    assert (tmp_path / "drafter").is_dir() and not state.exists()
    shutil.copy(tmp_path / "kept.pt", state)
    assert qs.ensure_drafter(base, tmp_path, False, None) == (tmp_path / "drafter", True)
    assert not state.exists()
    other = torch.load(tmp_path / "kept.pt", weights_only=True)
    torch.save({**other, "extra": {"recipe": "another"}}, state)
    assert qs.ensure_drafter(base, tmp_path, False, None)[1] is True
    assert state.exists()


@pytest.mark.parametrize("stage", ["hidden", "train"])
def test_an_interrupted_training_says_to_rerun_the_quickstart(tiny_recipe, tmp_path, monkeypatch, caplog, stage):
    """Ctrl-C in the quickstart's training said '...; pass --resume to continue' (before the first saved step: 'rerun
    without --resume'): train's flag, which the quickstart does not have; a rerun of it goes on by itself."""
    base, api = tiny_recipe

    def stop(progress):
        if progress.stage == stage and (stage != "train" or progress.stats and progress.stats.step == 2):
            raise KeyboardInterrupt

    monkeypatch.setattr(qs, "training_api", api([], checkpoint_every=1))
    with pytest.raises(KeyboardInterrupt), caplog.at_level("WARNING"):
        qs.ensure_drafter(base, tmp_path, False, stop)
    said = [r.getMessage() for r in caplog.records if r.name == "redrafter_trt.train.loop"]
    assert len(said) == 1 and "rerun the quickstart" in said[0] and "--resume" not in said[0], said
    if stage == "train":
        assert said[0] == f"interrupted: state saved after step 2 in {tmp_path / 'drafter.train-state.pt'}; rerun " \
                          f"the quickstart to continue"


def test_answers_past_the_positions_are_refused_before_training(smollm2, tmp_path, monkeypatch):
    """--max-new-tokens 9000 (SmolLM2 has 8192 positions) trained for minutes and converted, then bench refused it."""
    def no_training():
        raise AssertionError("the drafter stage started")

    monkeypatch.setattr(qs, "training_api", no_training)
    result = CliRunner().invoke(main, ["quickstart", "--workdir", str(tmp_path / "new"), "--num-questions", "1",
                                       "--max-new-tokens", "9000"])
    assert result.exit_code == 2, result.output
    assert "--max-new-tokens 9000" in result.stderr and "8192 positions" in result.stderr
    assert not (tmp_path / "new").exists()  # it was made, empty, before the refusal


def test_the_refusals_advice_on_max_new_tokens_is_taken(tiny_recipe):
    """'pass --max-new-tokens N or less': N itself fits (the longest question and its answer fill the positions
    exactly), N + 1 does not."""
    base, _ = tiny_recipe
    questions = ["What is 1 plus 1?", "What is 12 plus 34, and why?"]
    with pytest.raises(ConfigError) as refused:
        qs.check_room(base, questions, 10 ** 6)
    most = int(re.search(r"pass --max-new-tokens (\d+) or less", str(refused.value)).group(1))
    qs.check_room(base, questions, most)
    with pytest.raises(ConfigError, match=f"pass --max-new-tokens {most} or less"):
        qs.check_room(base, questions, most + 1)


def test_a_train_cache_file_is_refused_naming_the_workdir(smollm2, tmp_path, monkeypatch):
    """A file named train-cache in the work folder was refused by train as '--cache-dir ... is a file', a flag the
    quickstart does not have."""
    from redrafter_trt.train import quickstart_config

    def train(cfg, on_progress=None, **kw):  # train's own checks, without the minutes of training
        cfg.validate()
        raise AssertionError("the drafter trained")

    monkeypatch.setattr(qs, "training_api", lambda: (quickstart_config, train))
    (tmp_path / qs.MARKER).write_text("{}")
    (tmp_path / "train-cache").write_text("mine")
    result = CliRunner().invoke(main, ["quickstart", "--workdir", str(tmp_path), "--num-questions", "1"])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().splitlines()[-1] == (f"error: --workdir {tmp_path / 'train-cache'} exists and is a "
                                                       f"file: remove it or pass another --workdir")
    assert (tmp_path / "train-cache").read_text() == "mine"


def training_not_started():
    """A training API whose training must not start: the quickstart reads its recipe (to tell whether drafter/ is
    reused) before it checks the folders it will replace."""
    from redrafter_trt.train import quickstart_config

    def train(*args, **kwargs):
        raise AssertionError("the drafter trained")

    return quickstart_config, train


@pytest.mark.parametrize("folder", ["checkpoint", "drafter"])
def test_a_foreign_work_folder_is_refused_before_training(smollm2, tmp_path, monkeypatch, folder):
    """A `checkpoint/` in --workdir holding someone's files was found by convert only after minutes of training; a
    foreign `drafter/` was refused as '--output', an option the quickstart does not have."""
    monkeypatch.setattr(qs, "training_api", training_not_started)
    (tmp_path / qs.MARKER).write_text("{}")  # an earlier quickstart's work folder
    (tmp_path / folder).mkdir()
    (tmp_path / folder / "notes.txt").write_text("mine")
    result = CliRunner().invoke(main, ["quickstart", "--workdir", str(tmp_path), "--num-questions", "1"])
    assert result.exit_code == 2, result.output
    assert f"--workdir {tmp_path / folder} holds notes.txt" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("error: --workdir") and "Traceback" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == [folder, qs.MARKER]
    assert (tmp_path / folder / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("folder, config", [("checkpoint", {"architecture": "ReDrafterForLLaMALM"}),
                                            ("drafter", {"model_type": "recurrent_drafting_drafter"})])
def test_an_earlier_work_folder_holding_the_users_files_is_refused_before_training(smollm2, tmp_path, monkeypatch,
                                                                                   folder, config):
    """Notes of the user's in the quickstart's own `checkpoint/` or `drafter/` were deleted with it by the next
    reconvert or retrain, which replaces the folder whole."""
    import json

    monkeypatch.setattr(qs, "training_api", training_not_started)
    (tmp_path / qs.MARKER).write_text("{}")
    (tmp_path / folder).mkdir()
    (tmp_path / folder / "config.json").write_text(json.dumps(config))
    (tmp_path / folder / "notes.txt").write_text("mine")
    result = CliRunner().invoke(main, ["quickstart", "--workdir", str(tmp_path), "--num-questions", "1"])
    assert result.exit_code == 2, result.output
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: --workdir {tmp_path / folder} is an earlier ReDrafter output but also holds "
                           f"notes.txt") and last.endswith("or choose another --workdir"), last
    assert (tmp_path / folder / "notes.txt").read_text() == "mine"


def _workdir(kind: str, folder):
    """A folder of each kind someone may pass as --workdir by mistake."""
    import json

    from tinymodels import make_drafter, make_hf

    from redrafter_trt.convert import convert

    folder.mkdir()
    if kind == "notes":
        (folder / "notes.txt").write_text("mine")
        return folder
    if kind == "engine":
        (folder / "config.json").write_text(json.dumps({"version": "1.2.0", "pretrained_config": {
            "architecture": "ReDrafterForLLaMALM"}, "build_config": {}}))
        (folder / "rank0.engine").write_bytes(b"x")
        return folder
    base = make_hf(folder / "base", "llama")
    if kind == "model":
        return base
    if kind == "init_project":  # examples/smollm2-135m-cpu.sh's WORK: init-drafter's drafter/ and its checkpoint/
        from redrafter_trt.drafter import init_drafter_for_base

        init_drafter_for_base(base, folder / "drafter")
        convert(base, folder / "drafter", folder / "checkpoint", tp_size=1, dtype="float32", num_beams=2, draft_len=2)
        shutil.rmtree(base)
        return folder
    drafter = make_drafter(folder / "drafter", base)
    if kind == "drafter":
        return drafter
    checkpoint = convert(base, drafter, folder / "checkpoint", tp_size=1, dtype="float32", num_beams=2, draft_len=2)
    return checkpoint if kind == "checkpoint" else folder  # "project": base/, drafter/ (not the quickstart's), ...


@pytest.mark.parametrize("kind, what", [
    ("model", "a Hugging Face model"), ("checkpoint", "a TensorRT-LLM checkpoint"),
    ("engine", "a TensorRT-LLM engine"), ("drafter", "an Apple ReDrafter drafter"), ("notes", "notes.txt"),
    ("project", "base and more"), ("init_project", "checkpoint and more")])
def test_a_workdir_that_is_something_else_is_refused_untouched(tmp_path, monkeypatch, kind, what):
    """`--workdir` given a model, checkpoint or engine folder (or a project holding drafter/ and checkpoint/) wrote
    drafter/, checkpoint/ and train-cache/ into it, replacing a ReDrafter drafter/ or checkpoint/ found there."""
    from redrafter_trt import smollm2

    def no_base():
        raise AssertionError("the base stage started")

    monkeypatch.setattr(smollm2, "ensure_smollm2", no_base)
    workdir = _workdir(kind, tmp_path / "w")
    before = sorted(p.relative_to(workdir) for p in workdir.rglob("*"))
    result = CliRunner().invoke(main, ["quickstart", "--workdir", str(workdir), "--num-questions", "1"])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == (f"error: --workdir {workdir} holds {what}, not a quickstart work folder (no "
                                     f"{qs.MARKER}): pass a new or empty folder, or leave --workdir out")
    assert sorted(p.relative_to(workdir) for p in workdir.rglob("*")) == before


@pytest.mark.parametrize("kind", ["new", "empty", "marked", "marking", "earlier", "earlier-interrupted"])
def test_a_new_empty_or_quickstart_workdir_is_taken_and_marked(smollm2, tmp_path, monkeypatch, kind):
    import json

    class Stop(Exception):
        pass

    def stop(*args):
        raise Stop

    monkeypatch.setattr("redrafter_trt.smollm2.ensure_smollm2", lambda: smollm2)
    monkeypatch.setattr(qs, "ensure_drafter", stop)
    workdir = tmp_path / "w"
    if kind != "new":
        workdir.mkdir()
    if kind == "marked":
        (workdir / qs.MARKER).write_text("{}")
        (workdir / "notes.txt").write_text("mine")
    if kind == "marking":  # killed while it wrote the marker
        (workdir / f".{qs.MARKER}.partial-1-abc").write_text("{")
    if kind == "earlier":  # a work folder of a version before the marker
        (workdir / "drafter").mkdir()
        (workdir / "drafter" / "config.json").write_text(json.dumps({"producer": {
            "name": "redrafter-trt", "recipe": "quickstart-6-abc"}}))
        (workdir / "checkpoint").mkdir()
        (workdir / "drafter.train-state.pt").write_bytes(b"x")
    if kind == "earlier-interrupted":  # stopped while distilling, before drafter/ existed
        (workdir / "train-cache").mkdir()
    with pytest.raises(Stop):
        qs.quickstart(qs.QuickstartOptions(workdir, num_questions=1))
    if kind == "marked":  # kept as it was
        assert (workdir / qs.MARKER).read_text() == "{}" and (workdir / "notes.txt").read_text() == "mine"
    else:
        assert json.loads((workdir / qs.MARKER).read_text())["producer"]["command"] == "quickstart"


def test_an_unwritable_model_cache_is_refused_before_dequantising(tmp_path, monkeypatch):
    """REDRAFTER_TRT_CACHE on a file or a read-only place failed only after a minute and a half of dequantising."""
    from redrafter_trt import smollm2

    def no_gguf():
        raise AssertionError("dequantising started")

    monkeypatch.setattr(smollm2, "gguf_dir", no_gguf)
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("REDRAFTER_TRT_CACHE", str(tmp_path / "file"))
    with pytest.raises(ConfigError, match="is not a folder.*REDRAFTER_TRT_CACHE"):
        smollm2.ensure_smollm2()


def test_a_killed_smollm2_dequantisation_leaves_nothing_the_next_one_keeps(tmp_path, monkeypatch):
    """A first use killed while it wrote SmolLM2 (kill -9, the OOM killer) left `SmolLM2-135M-Instruct.partial-XXXX`
    (540 MB) in the model cache, removed by no run. The partial is now hidden and named by its process, and the next
    first use removes those of processes gone, not a live one's."""
    import os
    import subprocess
    import sys

    from redrafter_trt import smollm2

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    killed = tmp_path / f".SmolLM2-135M-Instruct.partial-{gone.pid}-abc"
    live = tmp_path / f".SmolLM2-135M-Instruct.partial-{os.getppid()}-def"
    for folder in (killed, live):
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"x" * 100)

    def stop():
        raise KeyboardInterrupt

    monkeypatch.setattr(smollm2, "_check_modules", lambda: None)
    monkeypatch.setattr(smollm2, "gguf_dir", stop)
    monkeypatch.setenv("REDRAFTER_TRT_CACHE", str(tmp_path))
    with pytest.raises(KeyboardInterrupt):
        smollm2.ensure_smollm2()
    assert sorted(p.name for p in tmp_path.iterdir()) == [live.name]


def test_smollm2_tokenizer_is_its_published_one(smollm2):
    """transformers 4.57's GGUF conversion (the SmolLM2 cache made in TensorRT-LLM's environment) swapped BOS and EOS,
    put <|im_start|> before every text (an echoed prompt began with it, an empty prompt was not empty) and decoded
    through byte fallback (an emoji's token bytes were replacement characters)."""
    from transformers import AutoTokenizer

    from redrafter_trt.serve_logprobs import token_bytes

    tok = AutoTokenizer.from_pretrained(smollm2)
    assert (tok.bos_token, tok.eos_token, tok.pad_token, tok.unk_token) == (
        "<|im_start|>", "<|im_end|>", "<|im_end|>", "<|endoftext|>")
    text = "caf\u00e9 \U0001f600 <|im_end|>"
    ids = tok(text)["input_ids"]
    assert tok("")["input_ids"] == [] and ids[-1] == tok.eos_token_id and tok.decode(ids) == text
    assert b"".join(token_bytes(tok, t) for t in ids[:-1]) == text.removesuffix("<|im_end|>").encode()
    assert tok.decode(ids, skip_special_tokens=True) == text.removesuffix("<|im_end|>")
    assert not tok.clean_up_tokenization_spaces and tok.decode(tok("a , b")["input_ids"]) == "a , b"


def test_a_smollm2_cache_from_another_version_is_made_portable(smollm2, tmp_path):
    """A cache saved by transformers 5 (tokenizer_class TokenizersBackend, rope_theta inside rope_parameters) could
    not give its tokenizer to transformers 4.57, which also read rope_theta as 10000 instead of 100000. The cached
    folder is rewritten in place (tokenizer and config.json) rather than dequantised again."""
    import json
    import shutil

    from transformers import AutoTokenizer

    from redrafter_trt.smollm2 import ensure_smollm2

    dest = tmp_path / "SmolLM2-135M-Instruct"
    shutil.copytree(smollm2, dest, ignore=shutil.ignore_patterns("model.safetensors"))
    (dest / "model.safetensors").symlink_to(smollm2 / "model.safetensors")
    config = json.loads((dest / "config.json").read_text())
    theta = config.pop("rope_theta")
    del config["rope_scaling"]
    (dest / "config.json").write_text(json.dumps({**config, "rope_parameters": {"rope_theta": theta,
                                                                               "rope_type": "default"}}))
    tok = json.loads((dest / "tokenizer_config.json").read_text())
    (dest / "tokenizer_config.json").write_text(json.dumps({**tok, "tokenizer_class": "TokenizersBackend"}))
    (dest / "special_tokens_map.json").unlink(missing_ok=True)
    assert ensure_smollm2(dest) == dest
    config = json.loads((dest / "config.json").read_text())
    assert config["rope_theta"] == theta == 100000.0 and "rope_parameters" not in config
    assert json.loads((dest / "tokenizer_config.json").read_text())["tokenizer_class"] == "PreTrainedTokenizerFast"
    fresh, reference = AutoTokenizer.from_pretrained(dest), AutoTokenizer.from_pretrained(smollm2)
    text = "<|im_start|>user\nhi \U0001f916<|im_end|>"
    assert fresh(text)["input_ids"] == reference(text)["input_ids"] and fresh.eos_token == reference.eos_token
    assert (dest / "model.safetensors").is_symlink()  # not dequantised again


def test_sigterm_stops_every_command_as_ctrl_c_does(tmp_path):
    """`kill` (SIGTERM) ended quickstart at once, losing up to 200 training steps that Ctrl-C saves: only train and
    serve turned it into Ctrl-C. The command group does it for every command now (the work here is a stand-in that
    sends itself SIGTERM and records whether its cleanup ran)."""
    import subprocess
    import sys

    marker = tmp_path / "cleaned-up"
    script = f"""
import os, signal, time
import redrafter_trt.quickstart as q
def work(*args, **kwargs):
    try:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(30)
    finally:
        open({str(marker)!r}, "w").close()
q.quickstart = work
from redrafter_trt.cli import main
main(["quickstart", "--workdir", {str(tmp_path / "w")!r}])
"""
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert res.returncode == 130 and res.stderr.strip().endswith("interrupted"), (res.returncode, res.stderr)
    assert marker.exists()


def test_the_smollm2_cache_gets_the_umasks_modes(tmp_path, monkeypatch):
    """The cache folder came from mkdtemp (owner-only) and safetensors 0.8 writes its weights owner-only, so a model
    cache built by one user (a Docker image built as root, REDRAFTER_TRT_CACHE shared) could not be read by another;
    it gets the umask's modes, as every other output does. A tiny Llama stands in for the dequantised GGUF."""
    import stat

    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

    from redrafter_trt import smollm2

    config = LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64)
    monkeypatch.setattr(smollm2, "_check_modules", lambda: None)
    monkeypatch.setattr(smollm2, "gguf_dir", lambda: tmp_path)
    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained",
                        lambda *a, **k: LlamaForCausalLM(config).to(torch.float32))
    monkeypatch.setattr(smollm2, "save_tokenizer", lambda folder: (folder / "tokenizer_config.json").write_text("{}"))
    old = os.umask(0o022)
    try:
        dest = smollm2.ensure_smollm2(tmp_path / "cache" / "SmolLM2-135M-Instruct")
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in [dest, *dest.iterdir()]}
    assert modes.pop(dest.name) == 0o755 and set(modes.values()) == {0o644}, modes
    assert "model.safetensors" in modes


def test_a_busy_machine_leaves_the_headline_speed_unreliable_too(first_run, monkeypatch):
    """bench's busy-machine line and verdict said the speeds were noise, but the quickstart's headline, the figure
    users read ('ReDrafter, 2 beams x 2 draft tokens: ... 5.29x the same runtime without drafting'), did not."""
    from test_bench import fake_scheduler

    monkeypatch.setattr(qs, "training_api", stand_in_training([]))
    fake_scheduler(monkeypatch, 0.5)  # a third of each timed call's runnable time spent waiting for a core
    result = CliRunner().invoke(main, ["quickstart", "--workdir", str(first_run[0]), "--num-questions", "1",
                                       "--max-new-tokens", "6"])
    assert result.exit_code == 0, result.output
    headline = next(line for line in result.stdout.splitlines() if line.startswith("ReDrafter, "))
    assert headline.endswith("; speeds unreliable: the machine was busy during timing"), headline


def test_the_headline_speed_ups_carry_benchs_intervals():
    """A review: bench's `best:` line printed '1.25x over no drafting (95% interval 0.72-2.17x over 3 prompts)' on the
    very speed-up the quickstart's headline printed bare ('1.25x the same runtime without drafting'): a run too close
    to call read as a gain. The headline now prints both speed-ups as `best:` does, with their intervals."""
    from test_bench import timed_run

    from redrafter_trt.bench import BenchReport, ConfigResult
    from redrafter_trt.cli.quickstart_cmd import headline

    plain = timed_run(300, 15.0, 300, prompts=3)
    drafted = timed_run(180, 12.0, 300, prompts=3, spread=(0.7, 1.3, 1.0))
    config = ConfigResult(2, 2, drafted, speedup_vs_hf=2.5, speedup_vs_no_draft=1.25, mismatched_prompts=[])
    report = BenchReport(meta={}, hf=timed_run(300, 30.0, 300, prompts=3), no_draft=plain, configs=[config])
    line = headline(report)
    hf, own = report.vs_hf(config), report.vs_no_draft(config)
    assert line.startswith("ReDrafter, 2 beams x 2 draft tokens: 1.67 tokens/step, 25.0 tokens/s (transformers "
                           "generate 10.0 tokens/s): "), line
    assert (f"2.50x over transformers (95% interval {hf.low:.2f}-{hf.high:.2f}x over 3 questions), 1.25x over no "
            f"drafting (95% interval {own.low:.2f}-{own.high:.2f}x over 3 questions); same text as without drafting: "
            f"yes") in line, line


def test_the_default_work_folder_of_an_earlier_version_is_taken_and_a_foreign_one_refused_as_the_default(
        smollm2, tmp_path, monkeypatch):
    """Left out, --workdir is the cache's quickstart/: an earlier version's there, with the init-drafter drafter/ it
    left where training failed to import, is the quickstart's own (a typed folder with one is refused: an example's
    project); refused, the default folder was told to "leave --workdir out", which it was."""
    import json

    class Stop(Exception):
        pass

    monkeypatch.setenv("REDRAFTER_TRT_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr("redrafter_trt.smollm2.ensure_smollm2", lambda: smollm2)
    monkeypatch.setattr(qs, "ensure_drafter", lambda *a: (_ for _ in ()).throw(Stop()))
    from tinymodels import make_hf

    from redrafter_trt.drafter import init_drafter_for_base

    workdir = qs.default_workdir()
    init_drafter_for_base(make_hf(tmp_path / "base", "llama"), workdir / "drafter")
    assert json.loads((workdir / "drafter" / "config.json").read_text())["producer"]["command"] == "init-drafter"
    (workdir / "checkpoint").mkdir()
    with pytest.raises(Stop):
        qs.quickstart(qs.QuickstartOptions(workdir, num_questions=1))
    assert (workdir / qs.MARKER).is_file()
    (workdir / qs.MARKER).unlink()
    (workdir / "notes.txt").write_text("mine")
    result = CliRunner().invoke(main, ["quickstart", "--num-questions", "1"])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == (f"error: the quickstart's default work folder {workdir} holds notes.txt and more, "
                                     f"not a quickstart work folder (no {qs.MARKER}): move it away or empty it, or "
                                     f"pass --workdir with a new folder")


def test_a_relative_workdir_or_cache_gives_absolute_paths_in_the_printed_commands(smollm2, tmp_path, monkeypatch):
    """`--workdir rel` (or a relative REDRAFTER_TRT_CACHE) printed `convert ... --drafter rel/drafter` and `build
    --checkpoint-dir rel/checkpoint-bf16`: "exact" commands for a GPU machine that only worked from the folder the
    quickstart ran in."""
    from redrafter_trt import smollm2 as smollm2_module

    class Stop(Exception):
        pass

    seen = {}

    def stop(base, workdir, *args):
        seen["workdir"] = workdir
        raise Stop

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("REDRAFTER_TRT_CACHE", "rel-cache")
    assert smollm2_module.cache_root() == tmp_path / "rel-cache"
    assert qs.default_workdir() == tmp_path / "rel-cache" / "quickstart"
    monkeypatch.setattr("redrafter_trt.smollm2.ensure_smollm2", lambda: smollm2)
    monkeypatch.setattr(qs, "ensure_drafter", stop)
    with pytest.raises(Stop):
        qs.quickstart(qs.QuickstartOptions(Path("w"), num_questions=1))
    assert seen["workdir"] == tmp_path / "w"


def test_workdir_help_names_the_cache_root():
    """--workdir's default was "<cache>/quickstart", a <cache> the help never named."""
    from test_run_cli import _option_help

    text = _option_help("quickstart", "--workdir")
    assert "[default: <cache>/quickstart, <cache>: $REDRAFTER_TRT_CACHE, else ~/.cache/redrafter-trt]" in text, text
