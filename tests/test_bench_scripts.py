"""The measuring scripts on a tiny checkpoint: profile_decode.py under a clock that a base forward advances by its
token count (the plain step it compares against is timed over the same prompts, and the prefill is its own piece),
and bench_compiled.py's timed forward."""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from redrafter_trt import runtime as rt
from redrafter_trt.plural import counted
from test_bench import save_byte_tokenizer
from test_runtime_support import checkpoint
from tinymodels import make_hf


def script(name: str):
    spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


profile_decode = script("profile_decode")

PROMPTS = ["a", "The quick brown fox jumps over the lazy dog"]  # prefills of very different cost


def test_plain_step_over_the_same_prompts_and_prefill_apart(tiny_llama, tiny_drafter, tmp_path, monkeypatch):
    """A review: the plain step was timed on the first prompt alone (the drafted ones on all), and the prefill's
    forward and argmax were summed into `verify` and `argmax` under a row named `prefill + rest of the loop`."""
    import time

    from redrafter_trt.runtime.cache import KVCache
    from redrafter_trt.tokens import encode_prompts, eos_ids, load_tokenizer

    decode_mod = importlib.import_module("redrafter_trt.runtime.decode")
    for owner, name in ((decode_mod, "_prefill"), (decode_mod, "accept_greedy"), (KVCache, "commit")):
        monkeypatch.setattr(owner, name, getattr(owner, name))  # the script patches them for good: restored after
    tokenizer_dir = tmp_path / "tok"
    save_byte_tokenizer(tokenizer_dir)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    ckpt = checkpoint(tiny_llama, tiny_drafter, 1, num_beams=2, draft_len=2)

    clock = [0.0]
    real_load = rt.load

    def load(*args, **kwargs):
        model = real_load(*args, **kwargs)
        forward = model.base.forward

        def ticking(tokens, *a, **k):
            clock[0] += tokens.shape[1]  # one second a token
            return forward(tokens, *a, **k)
        model.base.forward = ticking
        return model

    monkeypatch.setattr(rt, "load", load)
    monkeypatch.setattr(time, "perf_counter", lambda: clock[0])
    result = CliRunner().invoke(profile_decode.main, ["--checkpoint-dir", str(ckpt), "--tokenizer-dir",
                                                      str(tokenizer_dir), "--prompts", str(prompts), "--beams", "2",
                                                      "--draft-len", "2", "--num-prompts", "2",
                                                      "--max-new-tokens", "6"])
    assert result.exit_code == 0, result.output

    tokenizer = load_tokenizer(tokenizer_dir, None)
    ids = encode_prompts(tokenizer, PROMPTS, None)
    model, eos = real_load(ckpt), eos_ids(tokenizer)
    plain = [rt.generate(model, [p], 6, eos_token_id=eos, use_draft=False) for p in ids]
    drafted = [rt.generate(model, [p], 6, num_beams=2, draft_len=2, eos_token_id=eos) for p in ids]
    # a plain step is one forward of one token, and the prefill one of the prompt's
    plain_ms = sum(len(p) + r.steps[0] - 1 for p, r in zip(ids, plain)) / sum(r.steps[0] for r in plain) * 1000
    assert f"({plain_ms:.1f} ms)" in result.output, (plain_ms, result.output)
    steps = sum(r.steps[0] for r in drafted)
    prefill = re.search(r"^prefill\s+([\d.]+)", result.output, re.M)
    assert prefill and float(prefill[1]) == round(sum(map(len, ids)) / steps * 1000, 1), result.output
    assert f"2 prompts, W=2 L=2, {counted(torch.get_num_threads(), 'thread')}: " in result.output, result.output


def test_profile_decode_stops_where_run_and_bench_stop(tiny_llama, tiny_drafter, tmp_path, monkeypatch):
    """A review: it stopped on the tokenizer's EOS alone, running past the stop tokens of the generation_config.json
    beside it that run and bench stop at (Llama 3.1 Instruct's <|eom_id|>), so it profiled other answers."""
    from redrafter_trt.runtime.cache import KVCache

    decode_mod = importlib.import_module("redrafter_trt.runtime.decode")
    for owner, name in ((decode_mod, "_prefill"), (decode_mod, "accept_greedy"), (KVCache, "commit")):
        monkeypatch.setattr(owner, name, getattr(owner, name))
    tokenizer_dir = tmp_path / "tok"
    save_byte_tokenizer(tokenizer_dir)
    (tokenizer_dir / "generation_config.json").write_text(json.dumps({"eos_token_id": [65, 66]}))
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": PROMPTS[1]}) + "\n")
    stops, real = [], rt.generate
    monkeypatch.setattr(rt, "generate", lambda *a, **k: stops.append(k["eos_token_id"]) or real(*a, **k))
    ckpt = checkpoint(tiny_llama, tiny_drafter, 1, num_beams=2, draft_len=2)
    result = CliRunner().invoke(profile_decode.main, ["--checkpoint-dir", str(ckpt), "--tokenizer-dir",
                                                      str(tokenizer_dir), "--prompts", str(prompts), "--beams", "1",
                                                      "--draft-len", "1", "--num-prompts", "1",
                                                      "--max-new-tokens", "2"])
    assert result.exit_code == 0, result.output
    assert stops and all({65, 66} <= set(s) for s in stops), stops
    assert result.output.startswith(f"1 prompt, W=1 L=1, {counted(torch.get_num_threads(), 'thread')}: ")


def test_profile_decode_drafts_the_checkpoints_length_by_default(tiny_llama, tiny_drafter, tmp_path, monkeypatch):
    """A newcomer's pass: `profile_decode.py --checkpoint-dir CKPT --tokenizer-dir TOK`, as its docstring shows it,
    stopped on the quickstart's checkpoint (draft_len 2) with `--draft-len 5 is outside 1..2`, a default it never asked
    for: without --draft-len it drafts the checkpoint's own length, as `run` does."""
    from redrafter_trt.runtime.cache import KVCache

    decode_mod = importlib.import_module("redrafter_trt.runtime.decode")
    for owner, name in ((decode_mod, "_prefill"), (decode_mod, "accept_greedy"), (KVCache, "commit")):
        monkeypatch.setattr(owner, name, getattr(owner, name))
    tokenizer_dir = tmp_path / "tok"
    save_byte_tokenizer(tokenizer_dir)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": PROMPTS[1]}) + "\n")
    ckpt = checkpoint(tiny_llama, tiny_drafter, 1, num_beams=2, draft_len=2)
    result = CliRunner().invoke(profile_decode.main, ["--checkpoint-dir", str(ckpt), "--tokenizer-dir",
                                                      str(tokenizer_dir), "--prompts", str(prompts),
                                                      "--num-prompts", "1", "--max-new-tokens", "2"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"1 prompt, W=1 L=2, {counted(torch.get_num_threads(), 'thread')}: "), result.output


def test_bench_compiled_forward_fits_a_small_vocabulary(tiny_llama, tiny_drafter):
    """A review: the timed forward fed token ids from 1000 up, an IndexError traceback on a checkpoint whose
    vocabulary is smaller (the tiny test models': 256)."""
    import torch

    model = rt.load(checkpoint(tiny_llama, tiny_drafter, 1, num_beams=2, draft_len=2))
    bench_compiled = script("bench_compiled")
    for rows in bench_compiled.ROWS:
        hidden, seconds = bench_compiled.forward_once(model, torch.arange(10)[None], rows)
        assert hidden.shape[:2] == (1, rows) and seconds >= 0


def test_bench_convert_keeps_a_workdir_holding_other_files(tmp_path, monkeypatch):
    """A review: `--workdir` was deleted whole before the run (`--workdir ~/models` lost every model there); only a
    folder holding nothing but an earlier run's scratch is emptied now. And a --tp the synthetic Llama cannot split
    (0, 3) was found by the conversion after the model was written, as `conversion failed with exit code 1` (its
    error discarded); --layers 0 a CalledProcessError traceback. Refused first, one line, exit 2."""
    from test_convert_errors import assert_one_line_error

    bench_convert = script("bench_convert")
    precious = tmp_path / "mine.safetensors"
    precious.write_text("keep")
    monkeypatch.setattr(bench_convert, "synth_llama", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("stop")))
    assert_one_line_error(CliRunner().invoke(bench_convert.main, ["--workdir", str(tmp_path)]),
                          "holds more than an earlier run's")
    assert precious.read_text() == "keep"
    earlier = tmp_path / "earlier"
    (earlier / "ckpt").mkdir(parents=True)
    for args, needle in ((["--tp", "3"], "--tp 3 does not divide"), (["--tp", "0"], "--tp"),
                         (["--layers", "0"], "--layers")):
        assert_one_line_error(CliRunner().invoke(bench_convert.main, ["--workdir", str(earlier), *args]), needle)
    assert (earlier / "ckpt").exists()
    result = CliRunner().invoke(bench_convert.main, ["--workdir", str(earlier)])
    assert isinstance(result.exception, RuntimeError)  # an earlier run's folder is emptied and reused
    assert not (earlier / "ckpt").exists()


def test_bench_verify_ratios_are_to_a_t1_row(smollm2, monkeypatch):
    """A review: `vs T=1` divided by the first size timed, so `--sizes 2,4` printed 1.00 for T=2; T=1 is timed
    always. Forward times are faked (T ms for T tokens): the ratio must be T."""
    import redrafter_trt.convert
    import redrafter_trt.drafter
    from test_runtime_support import fresh_drafter

    bench_verify = script("bench_verify")
    ckpt = checkpoint(smollm2, fresh_drafter(smollm2), 1)
    monkeypatch.setattr(redrafter_trt.drafter, "init_drafter_for_base", lambda *a, **k: None)
    monkeypatch.setattr(redrafter_trt.convert, "convert", lambda *a, **k: ckpt)
    monkeypatch.setattr(bench_verify, "time_verify", lambda base, T, *a: float(T))
    monkeypatch.setattr(bench_verify, "best_ms", lambda fn, reps: 1.0)
    result = CliRunner().invoke(bench_verify.main, ["--sizes", "2,4", "--reps", "1", "--context", "8"])
    assert result.exit_code == 0, result.output
    rows = {int(m[1]): float(m[2]) for m in re.finditer(r"^(\d+)\s+[\d.]+\s+[\d.]+\s+([\d.]+)", result.output, re.M)}
    assert rows == {1: 1.0, 2: 2.0, 4: 4.0}, result.output
    assert f"float32, {counted(torch.get_num_threads(), 'thread')}, context 8;" in result.output, result.output


@pytest.mark.parametrize("threads", [1, 2])
def test_bench_dtype_counts_its_threads(threads):
    """It printed "1 thread(s)"; the count reads as every printed count does now."""
    before = torch.get_num_threads()
    try:
        result = CliRunner().invoke(script("bench_dtype").main, [
            "--skip-distill", "--rows", "4", "--head-rows", "8", "--exit-dim", "4", "--repeats", "1",
            "--threads", str(threads)])
    finally:
        torch.set_num_threads(before)
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"{counted(threads, 'thread')}; native bfloat16"), result.output


def test_scripts_bad_input_is_one_line(tiny_llama, tiny_drafter, tmp_path):
    """A review: a missing or wrong --drafter / --checkpoint-dir (a base model's folder, an empty one) was a
    ConfigError traceback with exit code 1; the scripts' commands print it as the CLI does: one line, exit 2."""
    from test_convert_errors import assert_one_line_error

    empty, tokenizer = tmp_path / "empty", tmp_path / "tok"
    empty.mkdir()
    save_byte_tokenizer(tokenizer)
    ckpt = checkpoint(tiny_llama, tiny_drafter, 1, num_beams=2, draft_len=2)
    for name, args, needle in (
            ("eval_drafter", ["--drafter", tiny_llama, "--base", tiny_llama], "not an Apple ReDrafter drafter"),
            ("eval_drafter", ["--drafter", empty, "--base", tiny_llama], "config.json is missing"),
            ("eval_drafter", ["--drafter", tmp_path / "nowhere"], "does not exist"),
            ("profile_decode", ["--checkpoint-dir", tiny_llama, "--tokenizer-dir", tokenizer], "holds a Hugging Face model"),
            ("profile_decode", ["--checkpoint-dir", ckpt, "--tokenizer-dir", empty], "cannot load a tokenizer"),
            ("bench_compiled", ["--checkpoint-dir", empty], "config.json is missing")):
        result = CliRunner().invoke(script(name).main, [str(a) for a in args])
        assert_one_line_error(result, needle)


def test_scripts_refuse_counts_below_one(tiny_llama, tiny_drafter, tmp_path):
    """A review: --threads -1 was torch's RuntimeError traceback (and --threads 0 silently torch's choice), --reps 0
    printed inf ms and nan ratios, --sizes a a ValueError, --num-prompts 0 an IndexError, --temperature 0
    transformers' ValueError, train_smollm2 --max-examples 0 trained on every example: each is one line, exit 2."""
    from test_convert_errors import assert_one_line_error

    tokenizer = tmp_path / "tok"
    save_byte_tokenizer(tokenizer)
    ckpt = checkpoint(tiny_llama, tiny_drafter, 1, num_beams=2, draft_len=2)
    profile = ["--checkpoint-dir", ckpt, "--tokenizer-dir", tokenizer, "--beams", "2", "--draft-len", "2"]
    for name, args, needle in (
            ("bench_linear", ["--threads", "-1"], "--threads"),
            ("bench_linear", ["--reps", "0"], "--reps"),
            ("bench_verify", ["--sizes", "a"], "--sizes 'a'"),
            ("bench_verify", ["--sizes", "0"], "--sizes '0'"),
            ("bench_compiled", ["--checkpoint-dir", ckpt, "--threads", "0"], "--threads"),
            ("profile_decode", [*profile, "--num-prompts", "0"], "--num-prompts"),
            # named run's --num-beams, an option the script does not have; --draft-len 5 was refused so
            ("profile_decode", [*profile[:4], "--beams", "3", "--draft-len", "2"], "--beams 3 is outside 1..2"),
            ("profile_decode", [*profile[:6], "--draft-len", "5"], "--draft-len 5 is outside 1..2"),
            # the runtime's load and generate name their Python keywords (compile=True, max_new_tokens=): the
            # script checks its own options first
            ("profile_decode", ["--checkpoint-dir", checkpoint(tiny_llama, tiny_drafter, 1, num_beams=2, draft_len=2,
                                                               dtype="bfloat16"), *profile[2:], "--compile"],
             "bfloat16, cpu): drop --compile"),
            ("profile_decode", [*profile, "--max-new-tokens", "100000"], "new tokens (--max-new-tokens "),
            ("self_prompts", ["--base", tiny_llama, "--output", tmp_path / "p.jsonl", "--temperature", "0"],
             "--temperature"),
            ("train_smollm2", ["--max-examples", "0", "--output", tmp_path / "d"], "--max-examples")):
        result = CliRunner().invoke(script(name).main, [str(a) for a in args])
        assert_one_line_error(result, needle)


def test_bench_runtime_bad_input_is_one_line(tiny_llama, monkeypatch):
    """A review: bench_runtime.py (argparse) let every error through as a traceback: a base model's folder as
    --drafter, --beams a, -n 0."""
    import redrafter_trt.smollm2
    from test_convert_errors import assert_one_line_error

    monkeypatch.setattr(redrafter_trt.smollm2, "ensure_smollm2", lambda: tiny_llama)
    bench_runtime = script("bench_runtime")
    for args, needle in ((["--drafter", tiny_llama], "not an Apple ReDrafter drafter"),
                         (["--beams", "a"], "--beams 'a'"), (["-n", "0"], "--num-prompts")):
        assert_one_line_error(CliRunner().invoke(bench_runtime.main, [str(a) for a in args]), needle)


@pytest.mark.parametrize("differs", [False, True])
def test_bench_runtime_ends_with_benchs_verdict(tiny_llama, tiny_drafter, tmp_path, monkeypatch, differs):
    """A review: the README calls bench_runtime.py `bench` on the built-in default, whose last line says whether
    drafting pays here and why; the script printed the table alone, so its fresh drafter's run ("shows the cost of
    drafting") never said that such a drafter accepts almost nothing. A drafted output that differs from plain
    decoding was not said at all: it is, before the verdict, which then has no configuration to judge. Then it left
    out bench's `best:` line, the speed-ups over transformers with their intervals: its lines after the table are
    bench's, from one function."""
    import shutil

    from redrafter_trt import bench

    import redrafter_trt.quickstart
    import redrafter_trt.smollm2
    from redrafter_trt.bench_report import ACCEPTS_NOTHING

    base = tmp_path / "base"
    shutil.copytree(tiny_llama, base)
    save_byte_tokenizer(base)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": PROMPTS[1]}) + "\n")
    monkeypatch.setattr(redrafter_trt.smollm2, "ensure_smollm2", lambda: base)
    monkeypatch.setattr(redrafter_trt.quickstart, "mt_bench_path", lambda: prompts)
    real = bench.runtime_generate

    def runtime_generate(model, ids, *args):
        result, timing = real(model, ids, *args)
        if differs and args[-1]:  # drafting on
            result.output_ids[0][-1] = (result.output_ids[0][-1] + 1) % 256
        return result, timing

    monkeypatch.setattr(bench, "runtime_generate", runtime_generate)
    result = CliRunner().invoke(script("bench_runtime").main, ["--drafter", str(tiny_drafter), "-n", "1",
                                                               "--max-new-tokens", "6", "--beams", "2",
                                                               "--draft-lens", "2"])
    assert result.exit_code == 0, result.output
    *_, warning, best, last = result.output.strip().splitlines()
    if differs:
        assert warning.startswith("warning: drafted output differs") and best.startswith("best: none ("), result.output
        assert last.startswith("no verdict"), result.output
        return
    assert best.startswith("best: W=2 L=2: ") and "x over transformers (no interval from 1 prompt)" in best, best
    assert last.startswith(("drafting pays here", "drafting does not pay here", "too close to call", "the drafter accepts almost nothing",
                            "no drafted step ran")), (ACCEPTS_NOTHING, result.output)


def test_train_smollm2_evaluates_on_the_packaged_mt_bench(tmp_path, monkeypatch):
    """A review: --mt-bench defaulted to ../shared/data beside the checkout, a folder only this project's machines
    have: anywhere else the MT-Bench report was skipped without a word, as for a mistyped --mt-bench. The default is
    the packaged file, and a missing one is refused."""
    from redrafter_trt.quickstart import mt_bench_path
    from test_convert_errors import assert_one_line_error

    train_smollm2 = script("train_smollm2")
    evaluated = []

    def train(cfg):
        cfg.output.mkdir()
        (cfg.output / "config.json").write_text(json.dumps({"producer": {}}))
    monkeypatch.setattr(train_smollm2, "ensure_smollm2", lambda: tmp_path / "base")
    monkeypatch.setattr(train_smollm2, "train_drafter", train)
    monkeypatch.setattr(train_smollm2, "evaluate_on_prompts", lambda out, base, path, *a, **k: evaluated.append(path))
    result = CliRunner().invoke(train_smollm2.main, ["--output", str(tmp_path / "d")])
    assert result.exit_code == 0, result.output
    assert evaluated == [mt_bench_path()]
    missing = CliRunner().invoke(train_smollm2.main, ["--output", str(tmp_path / "e"), "--mt-bench",
                                                      str(tmp_path / "typo.jsonl")])
    assert_one_line_error(missing, "--mt-bench")


def test_train_smollm2_keeps_its_folders_under_the_cache_root(tmp_path, monkeypatch):
    """--output, --cache-dir and --eval-cache-dir defaulted to .cache-drafter/... under whatever folder the script
    was run from, scattering caches of minutes of distilling. They default to the cache root's folders now (train's
    and eval_drafter.py's caches, $REDRAFTER_TRT_CACHE), and --help shows where."""
    root, elsewhere = tmp_path / "root", tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.setenv("REDRAFTER_TRT_CACHE", str(root))
    monkeypatch.chdir(elsewhere)
    train_smollm2 = script("train_smollm2")
    seen = {}

    def train(cfg):
        seen["train"] = (cfg.output, cfg.cache_dir)
        cfg.output.mkdir(parents=True)
        (cfg.output / "config.json").write_text(json.dumps({"producer": {}}))

    monkeypatch.setattr(train_smollm2, "ensure_smollm2", lambda: tmp_path / "base")
    monkeypatch.setattr(train_smollm2, "train_drafter", train)
    monkeypatch.setattr(train_smollm2, "evaluate_on_prompts",
                        lambda out, base, path, cache, **k: seen.update(eval=(out, cache)) or {})
    result = CliRunner().invoke(train_smollm2.main, [])
    assert result.exit_code == 0, result.output
    drafter = root / "smollm2-drafter"
    assert seen == {"train": (drafter, root / "train"), "eval": (drafter, root / "eval")}
    assert list(elsewhere.iterdir()) == []
    shown = " ".join(CliRunner().invoke(train_smollm2.main, ["--help"]).output.split())
    assert "<cache>/...: $REDRAFTER_TRT_CACHE, else ~/.cache/redrafter-trt" in shown, shown
    for folder in (drafter, root / "train", root / "eval"):
        assert f"[default: <cache>/{folder.name}]" in shown, shown


def test_eval_drafter_refuses_another_base_before_distilling(tiny_llama, tiny_drafter, tmp_path, monkeypatch):
    """A review: a drafter made for another base (or a --base folder that is no model) was a matrix-shape
    RuntimeError traceback, after minutes of distilling the base's answers to every MT-Bench question."""
    import redrafter_trt.train.heldout as heldout
    from test_convert_errors import assert_one_line_error

    other = tmp_path / "other"
    make_hf(other, "llama", hidden_size=32)
    monkeypatch.setattr(heldout, "distill", lambda *a, **k: pytest.fail("distilled"))
    eval_drafter = script("eval_drafter")
    for base, needle in ((other, "not made for the base"), (tmp_path, "config.json is missing")):
        result = CliRunner().invoke(eval_drafter.main, ["--drafter", str(tiny_drafter), "--base", str(base),
                                                        "--cache-dir", str(tmp_path / "cache")])
        assert_one_line_error(result, needle)


def test_bench_serve_bad_input_is_one_line(tiny_llama, tiny_drafter, tmp_path):
    """A review: bench_serve.py (argparse) let every error through as a traceback: a missing checkpoint, --clients 0
    (ThreadPoolExecutor's ValueError), --max-batch-sizes a, and a tokenizer without a chat template (the server's
    HTTP 400 to every chat request, an HTTPError)."""
    from test_convert_errors import assert_one_line_error

    tokenizer = tmp_path / "tok"
    save_byte_tokenizer(tokenizer)
    ckpt = checkpoint(tiny_llama, tiny_drafter, 1, num_beams=2, draft_len=2)
    bench_serve = script("bench_serve")
    for args, needle in ((["--checkpoint-dir", tmp_path / "nowhere"], "does not exist"),
                         (["--checkpoint-dir", ckpt, "--clients", "0"], "--clients"),
                         (["--checkpoint-dir", ckpt, "--max-batch-sizes", "a"], "--max-batch-sizes 'a'"),
                         (["--checkpoint-dir", ckpt, "--requests", "2", "--max-tokens", "2"], "no chat template")):
        result = CliRunner().invoke(bench_serve.main, [str(a) for a in [*args, "--tokenizer-dir", tokenizer]])
        assert_one_line_error(result, needle)


def test_bench_serve_names_the_servers_reason_for_a_refused_request(tiny_llama, tiny_drafter, tmp_path):
    """A review: a request the server refused (an MT-Bench prompt plus --max-tokens past the model's positions) ended
    in `HTTP Error 400: Bad Request: check the path, its permissions and the free disk space`, the one line for a
    disk error; it names the server's own reason now."""
    import transformers

    from test_convert_errors import assert_one_line_error
    from test_train_data import CHATML

    tokenizer = tmp_path / "tok"
    save_byte_tokenizer(tokenizer)
    tok = transformers.AutoTokenizer.from_pretrained(tokenizer)
    tok.chat_template = CHATML
    tok.save_pretrained(tokenizer)
    ckpt = checkpoint(tiny_llama, tiny_drafter, 1, num_beams=2, draft_len=2)
    # the warm-up's "Hello" fits 512 positions with 400 new tokens; the first MT-Bench question does not
    result = CliRunner().invoke(script("bench_serve").main, [
        "--checkpoint-dir", str(ckpt), "--tokenizer-dir", str(tokenizer), "--requests", "1", "--clients", "1",
        "--max-tokens", "400", "--max-batch-sizes", "1", "--threads", "1"])
    assert_one_line_error(result, "the server refused a request (HTTP 400)")
    assert "maximum context length" in result.output and "disk space" not in result.output, result.output


def test_fp8_agreement_bad_input_is_one_line(tiny_llama, tmp_path):
    """A review: fp8_agreement.py (argparse) let every error through as a traceback: --limit 0 (a ZeroDivisionError
    after both conversions and decodes), --batch-size 0, a missing --questions file, a base model as --drafter."""
    import shutil

    from test_convert_errors import assert_one_line_error
    from test_train_data import CHATML
    from transformers import AutoTokenizer

    base = tmp_path / "base"
    shutil.copytree(tiny_llama, base)
    save_byte_tokenizer(base)
    tok = AutoTokenizer.from_pretrained(base)
    tok.chat_template = CHATML
    tok.save_pretrained(base)
    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"prompt": "hello"}) + "\n")
    fp8_agreement = script("fp8_agreement")
    for args, needle in ((["--limit", "0"], "--limit"), (["--batch-size", "0"], "--batch-size"),
                         (["--drafter", base], "not an Apple ReDrafter drafter"),
                         # the runtime reads no KV-cache scales: an FP8 KV cache would change no figure, yet the
                         # JSON said kv_cache_dtype fp8 (a review), so the option is gone
                         (["--kv-cache-dtype", "fp8"], "No such option '--kv-cache-dtype'")):
        result = CliRunner().invoke(fp8_agreement.main, [str(a) for a in ["--base", base, "--questions", questions,
                                                                             "--work-dir", tmp_path / "work", *args]])
        assert_one_line_error(result, needle)
    result = CliRunner().invoke(fp8_agreement.main, ["--base", str(base), "--questions", str(tmp_path / "no.jsonl")])
    assert_one_line_error(result, "does not exist")
    # a base without a tokenizer was transformers' traceback
    result = CliRunner().invoke(fp8_agreement.main, ["--base", str(tiny_llama), "--questions", str(questions)])
    assert_one_line_error(result, "cannot load a tokenizer")


def test_fp8_agreement_stops_where_run_and_bench_stop(tiny_llama, tiny_drafter, tmp_path, monkeypatch):
    """A review: it stopped on the tokenizer's EOS alone, running past the stop tokens of the base's
    generation_config.json that run, bench and profile_decode stop at (Llama 3.1 Instruct's <|eom_id|>), so its
    agreement and KL figures counted tokens after the answers' end. Both conversions are bf16 here (no calibration):
    what is checked is the stop tokens each decode gets."""
    import shutil

    import redrafter_trt.convert

    base = tmp_path / "base"
    shutil.copytree(tiny_llama, base)
    save_byte_tokenizer(base)
    (base / "generation_config.json").write_text(json.dumps({"eos_token_id": [65, 66]}))
    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"prompt": PROMPTS[1]}) + "\n")
    real_convert, stops, real_generate = redrafter_trt.convert.convert, [], rt.generate
    monkeypatch.setattr(redrafter_trt.convert, "convert", lambda b, d, out, **k: real_convert(
        b, d, out, dtype="bfloat16", num_beams=2, draft_len=2, force=True))
    monkeypatch.setattr(rt, "generate", lambda *a, **k: stops.append(k["eos_token_id"]) or real_generate(*a, **k))
    result = CliRunner().invoke(script("fp8_agreement").main, [
        "--base", str(base), "--drafter", str(tiny_drafter), "--questions", str(questions), "--max-new-tokens", "4",
        "--json"])
    assert result.exit_code == 0, result.output
    assert len(stops) == 2 and all(isinstance(s, list) and {65, 66} <= set(s) for s in stops), stops


def test_fp8_agreement_records_the_calibration_prompts_used(tiny_llama, tiny_drafter, tmp_path):
    """A review: `--calib-size 65` calibrated on the 64 prompts shipped (convert warns "using all 64") and its figures
    said calib_size 65; they say the 64 the FP8 checkpoint's producer block records."""
    import shutil

    pytest.importorskip("modelopt.torch.quantization", reason="FP8 needs nvidia-modelopt")
    base = tmp_path / "base"
    shutil.copytree(tiny_llama, base)
    save_byte_tokenizer(base)
    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"prompt": PROMPTS[0]}) + "\n")
    result = CliRunner().invoke(script("fp8_agreement").main, [
        "--base", str(base), "--drafter", str(tiny_drafter), "--questions", str(questions), "--max-new-tokens", "2",
        "--calib-size", "65", "--calib-seq-len", "4", "--json"])
    assert result.exit_code == 0, result.output
    assert '"calib_size": 64,' in result.output, result.output


def test_self_prompts_checks_its_output_first_and_replaces_it_whole(tiny_llama, tmp_path, monkeypatch):
    """A review: --output in a missing folder was a FileNotFoundError traceback after the model had loaded, a missing
    --base transformers' traceback, and the output was emptied before the first batch: a run that failed or was
    stopped lost the previous file. It is written to OUTPUT.partial and renamed when done."""
    import shutil

    import transformers
    from test_convert_errors import assert_one_line_error
    from test_train_data import CHATML

    base = tmp_path / "base"
    shutil.copytree(tiny_llama, base)
    save_byte_tokenizer(base)
    self_prompts = script("self_prompts")
    missing = CliRunner().invoke(self_prompts.main, ["--base", str(base), "--output", str(tmp_path / "no" / "p.jsonl")])
    assert_one_line_error(missing, "does not exist")
    assert_one_line_error(CliRunner().invoke(self_prompts.main, ["--base", str(tmp_path / "nowhere"), "--output",
                                                                 str(tmp_path / "p.jsonl")]), "does not exist")
    output = tmp_path / "p.jsonl"
    output.write_text("earlier\n")
    no_chat = CliRunner().invoke(self_prompts.main, ["--base", str(base), "--output", str(output)])
    assert_one_line_error(no_chat, "no chat template")
    tok = transformers.AutoTokenizer.from_pretrained(base)
    tok.chat_template = CHATML
    tok.save_pretrained(base)
    monkeypatch.setattr(transformers.GenerationMixin, "generate", lambda *a, **k: (_ for _ in ()).throw(OSError("x")))
    result = CliRunner().invoke(self_prompts.main, ["--base", str(base), "--output", str(output), "--num", "2"])
    assert result.exit_code == 2 and output.read_text() == "earlier\n", result.output
    # a run that keeps prompts replaces it: test_self_prompts_that_keeps_no_prompt_writes_nothing_and_says_why


def chat_base(tiny_llama: Path, tmp_path: Path):
    """A copy of the tiny base with a byte tokenizer and a ChatML template: (its folder, the tokenizer)."""
    import shutil

    import transformers
    from test_train_data import CHATML

    base = tmp_path / "base"
    shutil.copytree(tiny_llama, base)
    save_byte_tokenizer(base)
    tok = transformers.AutoTokenizer.from_pretrained(base)
    tok.chat_template = CHATML
    tok.save_pretrained(base)
    return base, tok


def answering(tok, text: str):
    """A GenerationMixin.generate whose every sample is `text` then EOS."""
    def generate(self, input_ids, **kwargs):
        answer = tok(text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        return torch.cat([input_ids, torch.tensor([answer]).repeat(len(input_ids), 1)], 1)
    return generate


def test_self_prompts_that_keeps_no_prompt_writes_nothing_and_says_why(tiny_llama, tmp_path, monkeypatch):
    """A review: `--num 2 --max-new-tokens 8` on SmolLM2 printed "0 prompts", exited 0 and replaced --output with an
    empty file: no sample ended its user turn within 8 tokens. Nothing kept is one line naming why and the fix, exit
    2, the output as it was and no OUTPUT.partial left; a run that keeps one writes it."""
    import transformers
    from test_convert_errors import assert_one_line_error

    base, tok = chat_base(tiny_llama, tmp_path)
    output = tmp_path / "p.jsonl"
    output.write_text("earlier\n")
    main = script("self_prompts").main
    args = ["--base", str(base), "--output", str(output), "--num", "2", "--max-new-tokens", "4"]
    # the tiny base's sampled bytes end no user turn within 4 tokens (its EOS, byte 255, is one of 256)
    assert_one_line_error(CliRunner().invoke(main, args), "no prompt kept of 2 samples",
                          "2 ran past --max-new-tokens 4 before ending the user turn", "raise --max-new-tokens")
    assert output.read_text() == "earlier\n" and not (tmp_path / "p.jsonl.partial").exists()

    def short(self, input_ids, **kwargs):  # every sample ends at once: an empty user turn
        return torch.cat([input_ids, torch.full((len(input_ids), 1), tok.eos_token_id)], 1)

    monkeypatch.setattr(transformers.GenerationMixin, "generate", short)
    assert_one_line_error(CliRunner().invoke(main, args), "2 ended under 15 characters", "--starters")
    # a review: a run with --starters was told to add --starters
    result = CliRunner().invoke(main, [*args, "--starters"])
    assert_one_line_error(result, "2 ended under 15 characters", "draw more with --num")
    assert "--starters" not in result.output, result.output
    assert output.read_text() == "earlier\n" and not (tmp_path / "p.jsonl.partial").exists()

    monkeypatch.setattr(transformers.GenerationMixin, "generate", answering(tok, "Write a poem about the sea"))
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert output.read_text() == json.dumps({"prompt": "Write a poem about the sea", "source": "self"}) + "\n"
    assert not (tmp_path / "p.jsonl.partial").exists()
    # a review: --starters wrote "source": "self" as well, while the packaged starter_prompts.jsonl (the documented
    # command's output) says "self-starter"
    result = CliRunner().invoke(main, [*args, "--starters"])
    assert result.exit_code == 0, result.output
    (record,) = map(json.loads, output.read_text().splitlines())
    starter = script("self_prompts").STARTERS[0]
    assert record == {"prompt": f"{starter}Write a poem about the sea".strip(), "source": "self-starter"}, record


def test_self_prompts_refuses_an_output_among_its_inputs_first(tiny_llama, tmp_path, monkeypatch):
    """An audit: `--output BASE/config.json` replaced the base's config with the prompts after generating (the script
    never called check_output_file, as run and bench do). It is refused first, one line, as the CLI refuses it."""
    import transformers
    from test_convert_errors import assert_one_line_error

    base, tok = chat_base(tiny_llama, tmp_path)
    config = (base / "config.json").read_text()

    monkeypatch.setattr(transformers.GenerationMixin, "generate", answering(tok, "Write a poem about the sea"))
    for output in (base / "config.json", base / "prompts.jsonl"):
        result = CliRunner().invoke(script("self_prompts").main, ["--base", str(base), "--output", str(output),
                                                                  "--num", "2"])
        assert_one_line_error(result, f"--output {output} is", f"the input {base}: write it elsewhere")
    assert (base / "config.json").read_text() == config and not (base / "prompts.jsonl").exists()


def test_self_prompts_ends_the_user_turn_at_the_templates_end_of_turn_token(tmp_path, monkeypatch):
    """A review: a ChatML base whose EOS is <|endoftext|> (Qwen2's base models) was sampled until that EOS alone, and
    a sample was cut at it: the user turn's <|im_end|> did not end it, every sample "ran past --max-new-tokens", and
    nothing was kept (exit 2). Sampling stops, and the prompt is cut, at the template's end of turn or EOS."""
    import transformers
    from test_train_data import make_hf, make_tokenizer

    base = make_hf(tmp_path / "base", "llama", tie=True, vocab_size=128)
    tok = make_tokenizer(base, eos="<|endoftext|>")
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    asked = []

    def ends_its_turn(self, input_ids, **kwargs):  # the turn, <|im_end|>, then a turn of its own: no EOS
        asked.append(kwargs["eos_token_id"])
        turn = tok("Write a poem about the sea", add_special_tokens=False)["input_ids"] + [im_end]
        turn += tok("\nHi", add_special_tokens=False)["input_ids"]
        return torch.cat([input_ids, torch.tensor([turn]).repeat(len(input_ids), 1)], 1)

    monkeypatch.setattr(transformers.GenerationMixin, "generate", ends_its_turn)
    output = tmp_path / "p.jsonl"
    result = CliRunner().invoke(script("self_prompts").main, ["--base", str(base), "--output", str(output), "--num",
                                                              "2"])
    assert result.exit_code == 0, result.output
    assert output.read_text() == json.dumps({"prompt": "Write a poem about the sea", "source": "self"}) + "\n"
    assert asked == [sorted({im_end, tok.eos_token_id})] and im_end != tok.eos_token_id


def test_bench_scripts_refuse_a_context_past_the_models_positions(tiny_llama, tiny_drafter, monkeypatch):
    """A review: bench_verify.py and bench_compiled.py took any --context (8200 on SmolLM2's 8192 positions ran past
    400 s); it is refused before any weights load, one line, exit 2, as run and bench refuse a prompt too long."""
    import redrafter_trt.convert
    import redrafter_trt.drafter
    import redrafter_trt.smollm2
    from test_convert_errors import assert_one_line_error

    ckpt = checkpoint(tiny_llama, tiny_drafter, 1, num_beams=2, draft_len=2)
    positions = rt.RuntimeConfig.from_dir(ckpt).max_positions
    monkeypatch.setattr(rt, "load", lambda *a, **k: pytest.fail("loaded the weights"))
    bench_compiled = script("bench_compiled")
    assert_one_line_error(CliRunner().invoke(bench_compiled.main, ["--checkpoint-dir", str(ckpt), "--context",
                                                                   str(positions)]), "--context")
    monkeypatch.setattr(redrafter_trt.smollm2, "ensure_smollm2", lambda: tiny_llama)
    monkeypatch.setattr(redrafter_trt.drafter, "init_drafter_for_base", lambda *a, **k: None)
    monkeypatch.setattr(redrafter_trt.convert, "convert", lambda *a, **k: ckpt)
    bench_verify = script("bench_verify")
    assert_one_line_error(CliRunner().invoke(bench_verify.main, ["--sizes", "4", "--context", str(positions - 3)]),
                          "--context")


def test_train_smollm2_refuses_a_wrong_output_before_training(tiny_llama, tmp_path, monkeypatch):
    """A review: train_smollm2.py checked --output only when it saved the drafter, after distilling and training (an
    hour on a CPU): a folder holding other files was refused then. Refused first now, one line, exit 2."""
    from test_convert_errors import assert_one_line_error

    train_smollm2 = script("train_smollm2")
    monkeypatch.setattr(train_smollm2, "ensure_smollm2", lambda: tiny_llama)
    monkeypatch.setattr(train_smollm2, "train_drafter", lambda cfg: pytest.fail("training started"))
    output = tmp_path / "project"
    output.mkdir()
    (output / "notes.txt").write_text("keep")
    result = CliRunner().invoke(train_smollm2.main, ["--output", str(output), "--cache-dir", str(tmp_path / "cache"),
                                                     "--mt-bench-prompts", "0"])
    assert_one_line_error(result, "holds notes.txt")
    assert (output / "notes.txt").read_text() == "keep"


def test_train_smollm2_refuses_unusable_held_out_prompts_before_training(tiny_llama, tmp_path, monkeypatch):
    """A review: the --mt-bench file was first read by the evaluation after distilling and training (an hour on a
    CPU), so one without a usable prompt (no user message in any record) stopped the script only then, the drafter
    trained but never evaluated. Refused first now, one line, exit 2."""
    from test_convert_errors import assert_one_line_error

    train_smollm2 = script("train_smollm2")
    monkeypatch.setattr(train_smollm2, "ensure_smollm2", lambda: tiny_llama)
    monkeypatch.setattr(train_smollm2, "train_drafter", lambda cfg: pytest.fail("training started"))
    held_out = tmp_path / "held_out.jsonl"
    held_out.write_text(json.dumps({"answer": "no question here"}) + "\n")
    result = CliRunner().invoke(train_smollm2.main, ["--output", str(tmp_path / "d"), "--cache-dir",
                                                     str(tmp_path / "cache"), "--mt-bench", str(held_out)])
    assert_one_line_error(result, str(held_out), "no usable record")


@pytest.mark.parametrize("name", sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "scripts").glob("*.py")))
def test_every_script_answers_help_in_whole_sentences(name):
    """The scripts are run rarely, so --help is where they rot first. A review: bench_runtime.py's help was its
    docstring's first line, cut mid-sentence ("... a drafter (a fresh"), and fp8_agreement.py's ended "..., and:"
    before a list --help never shows."""
    result = CliRunner().invoke(script(name).main, ["--help"])
    assert result.exit_code == 0, result.output
    about = " ".join(result.output.split("Options:")[0].split("\n")[1:]).strip()
    assert not about or about.endswith((".", ")")), about


@pytest.mark.parametrize("name", sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "scripts").glob("*.py")))
def test_every_script_says_what_it_does_in_help(name):
    """A newcomer's pass: seven scripts (bench_compiled.py, eval_drafter.py, ...) answered --help with options alone,
    their module docstring, which says what they measure, never shown. With no docstring on the command itself, the
    help is the module docstring's first paragraph."""
    module = script(name)
    result = CliRunner().invoke(module.main, ["--help"])
    about = " ".join(result.output.split("Options:")[0].split("\n")[1:]).split()
    first = (module.main.callback.__doc__ or module.__doc__).strip().split("\n\n")[0].split()
    assert about and about[:8] == first[:8], (about, first)


def test_bench_serve_runs_with_max_tokens_below_its_warm_up(tiny_llama, tiny_drafter, tmp_path):
    """A review: the warm-up request asked for 4 tokens of a server started with --max-tokens as its limit, so
    `--max-tokens 1` (to 3) ended in "the server refused a request (HTTP 400)" before any measuring."""
    import transformers

    from test_train_data import CHATML

    tokenizer = tmp_path / "tok"
    save_byte_tokenizer(tokenizer)
    tok = transformers.AutoTokenizer.from_pretrained(tokenizer)
    tok.chat_template = CHATML
    tok.save_pretrained(tokenizer)
    result = CliRunner().invoke(script("bench_serve").main, [
        "--checkpoint-dir", str(checkpoint(tiny_llama, tiny_drafter, 1, num_beams=2, draft_len=2)),
        "--tokenizer-dir", str(tokenizer), "--requests", "1", "--clients", "1", "--max-tokens", "1",
        "--max-batch-sizes", "1", "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert "1/1 answers identical" in result.output, result.output
    # a newcomer's pass: the header said "1 MT-Bench chat requests ... from 1 clients, 1 threads"
    assert "eager: 1 MT-Bench chat request x max_tokens 1 from 1 client, 1 thread, 2 beams x 2 draft tokens" \
        in result.output, result.output



def test_bench_serve_reports_the_threads_a_tp_checkpoints_ranks_run(tiny_llama, tiny_drafter, tmp_path, monkeypatch):
    """A review: on a tp=2 checkpoint each rank takes cores / 2 threads as it joins the group (runtime/tp.py), yet
    the header printed --threads, a figure nothing ran with. It prints what each rank runs with."""
    import os

    import torch
    import transformers

    from test_train_data import CHATML

    tokenizer = tmp_path / "tok"
    save_byte_tokenizer(tokenizer)
    tok = transformers.AutoTokenizer.from_pretrained(tokenizer)
    tok.chat_template = CHATML
    tok.save_pretrained(tokenizer)
    # rank 0 (this process) joins with 4 // 2 threads, not --threads 1: the 4 CPUs it may use, not the host's 64
    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(4)), raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # a thread count asked for would cap the share (tp.py)
    before = torch.get_num_threads()
    try:
        result = CliRunner().invoke(script("bench_serve").main, [
            "--checkpoint-dir", str(checkpoint(tiny_llama, tiny_drafter, 2, num_beams=2, draft_len=2)),
            "--tokenizer-dir", str(tokenizer), "--requests", "1", "--clients", "1", "--max-tokens", "4",
            "--max-batch-sizes", "1", "--threads", "1"])
    finally:
        torch.set_num_threads(before)
    assert result.exit_code == 0, result.output
    assert ", 2 threads per rank x 2 ranks," in result.output, result.output


def test_scripts_run_a_tp_checkpoint_with_its_ranks_merged_as_bench_does(tiny_llama, tiny_drafter, tmp_path,
                                                                         monkeypatch):
    """profile_decode.py and bench_compiled.py refused a tp=2 checkpoint ("runs one process (tp=1 checkpoints)"),
    bench_logprobs.py with rt.load's "pass --tp 2", an option it has not, where bench and acceptance measure one
    with its rank files merged: each loads it so (`merge_ranks`) and prints bench's line saying so (`merge_note`)."""
    from redrafter_trt.bench_inputs import merge_note
    from redrafter_trt.runtime.cache import KVCache

    decode_mod = importlib.import_module("redrafter_trt.runtime.decode")
    for owner, name in ((decode_mod, "_prefill"), (decode_mod, "accept_greedy"), (KVCache, "commit")):
        monkeypatch.setattr(owner, name, getattr(owner, name))  # profile_decode patches them for good
    tokenizer = tmp_path / "tok"
    save_byte_tokenizer(tokenizer)
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text(json.dumps({"prompt": PROMPTS[1]}) + "\n")
    ckpt = checkpoint(tiny_llama, tiny_drafter, 2, num_beams=2, draft_len=2)
    loaded, real_load = [], rt.load

    def load(checkpoint_dir, *args, compile=False, **kwargs):  # bench_compiled's compiled copy: minutes, not its point
        loaded.append(checkpoint_dir)
        return real_load(checkpoint_dir, *args, **kwargs)

    monkeypatch.setattr(rt, "load", load)
    for name, args in (("profile_decode", ["--checkpoint-dir", ckpt, "--tokenizer-dir", tokenizer, "--prompts", prompts,
                                           "--num-prompts", "1", "--max-new-tokens", "2"]),
                       ("bench_compiled", ["--checkpoint-dir", ckpt, "--context", "4", "--reps", "1"]),
                       ("bench_logprobs", ["--checkpoint-dir", ckpt, "--tokenizer-dir", tokenizer, "--questions",
                                           prompts, "--num-prompts", "1", "--max-new-tokens", "2", "--repeats", "1",
                                           "--threads", "1"])):
        loaded.clear()
        result = CliRunner().invoke(script(name).main, [str(a) for a in args])
        assert result.exit_code == 0, (name, result.output)
        assert loaded and all(c.merged and c.config.tp_size == 1 for c in loaded), (name, loaded)
        assert result.output.startswith(merge_note(loaded[0]) + "\n"), (name, result.output)


def test_bench_compiled_refuses_a_checkpoint_not_in_float32_before_loading(tiny_llama, tiny_drafter, monkeypatch):
    """A walk with an FP8 checkpoint (float16): bench_compiled.py loaded the eager model, then stopped on the compiled
    load's "compiling the base runs ... in float32: drop --compile", an option it has not (it always compiles). It
    is refused first, one line, naming the conversion that it runs."""
    from test_convert_errors import assert_one_line_error

    ckpt = checkpoint(tiny_llama, tiny_drafter, 1, num_beams=2, draft_len=2, dtype="bfloat16")
    monkeypatch.setattr(rt, "load", lambda *a, **k: pytest.fail("loaded the weights"))
    result = CliRunner().invoke(script("bench_compiled").main, ["--checkpoint-dir", str(ckpt), "--context", "4"])
    assert_one_line_error(result, "is bfloat16", "convert with --dtype float32")
    assert "--compile" not in result.output


def test_dtype_ties_counts_rows_whose_rounded_maximum_is_shared():
    """dtype_ties.py's README figure (bfloat16 ties at the top of float32 logits): a row counts when rounding makes
    two tokens share its maximum, not when only lower logits collide."""
    import torch

    tied_top = script("dtype_ties").tied_top
    logits = torch.tensor([[30.1, 30.12, 1.0],   # 30.1 and 30.12 round to bfloat16's 30.125: a tie at the top
                           [30.0, 29.0, 29.0],   # lower logits tie, the top does not
                           [2.0, 1.0, 3.0]])
    assert tied_top(logits, torch.bfloat16) == 1
    assert tied_top(logits, torch.float16) == 0  # float16 keeps them apart (steps of 1/64 at 30)
    assert tied_top(logits, torch.float32) == 0


def test_greedy_exactness_names_the_first_differing_token():
    first_difference = script("greedy_exactness").first_difference
    assert first_difference([1, 2, 3], [1, 5, 3]) == 1
    assert first_difference([1, 2, 3], [1, 2, 3]) == 3
    assert first_difference([1, 2, 3], [1, 2]) == 2  # one output ended (EOS) before the other


def test_greedy_exactness_compares_against_greedy_generate_with_the_runtimes_stop_ids(tiny_llama, tmp_path,
                                                                                      monkeypatch):
    """A review: the reference `generate` took every field the base's generation_config.json sets (Qwen2.5
    Instruct's repetition_penalty) and its stop token from there alone, so float32 drafting was reported as not
    exact ("0 of 3 identical" under a repetition_penalty of 2). It runs bench's transformers baseline, greedy alone,
    and both sides stop on the ids run stops on (stop_ids: the tokenizer's EOS and the generation config's)."""
    import shutil

    import transformers

    base = tmp_path / "base"
    shutil.copytree(tiny_llama, base)
    save_byte_tokenizer(base)
    (base / "generation_config.json").write_text(json.dumps({"repetition_penalty": 2.0, "eos_token_id": 7}))
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in ["hello there", *PROMPTS]))
    stops = {"runtime": [], "transformers": []}
    real_generate, real_hf_generate = rt.generate, transformers.GenerationMixin.generate

    def generate(model, prompts, max_new_tokens, **kwargs):
        eos = kwargs["eos_token_id"]
        stops["runtime"].append(sorted(eos) if isinstance(eos, list) else [eos])
        return real_generate(model, prompts, max_new_tokens, **kwargs)

    def hf_generate(self, *args, **kwargs):
        eos = kwargs.get("generation_config", self.generation_config).eos_token_id
        stops["transformers"].append(sorted(eos) if isinstance(eos, list) else [eos])
        return real_hf_generate(self, *args, **kwargs)

    monkeypatch.setattr(rt, "generate", generate)
    monkeypatch.setattr(transformers.GenerationMixin, "generate", hf_generate)
    result = CliRunner().invoke(script("greedy_exactness").main, [
        "--base", str(base), "--questions", str(prompts), "--num-prompts", "3", "--max-new-tokens", "24",
        "--seeds", "0", "--batch-sizes", "1", "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1].startswith("3 of 3 identical"), result.output
    assert stops == {"runtime": [[7, 255]], "transformers": [[7, 255]] * 3}


def test_greedy_exactness_numbers_prompts_from_1_as_bench_does():
    """greedy_exactness.py named the second prompt `prompt 1` while bench numbers prompts from 1 in the prompts
    file's order (7260377): a divergence it reported was looked up as the wrong prompt. Its --num-prompts now takes
    prompts spread over the file, as bench's, so the second taken is the file's 41st of 80 with --num-prompts 2."""
    import torch

    refs, outputs = [[1, 2, 3], [4, 5, 6]], [[1, 2, 3], [4, 7, 6]]
    ref_logits = [[torch.zeros(1, 8)] * 3, [torch.tensor([[0.0, 0, 0, 0, 0, 9.5, 9.25, 0]])] * 3]
    lines = script("greedy_exactness").differences(refs, outputs, ref_logits, [1, 41])
    assert lines == ["  prompt 41: differs at token 1: transformers [5], runtime [7]; transformers' top two logits "
                     "[9.5, 9.25] (tokens [5, 6])"]


def test_eval_drafter_reports_progress_and_caches_under_the_cache_root(tiny_llama, tiny_drafter, tmp_path, monkeypatch):
    """A README walk-through: eval_drafter.py printed nothing in its minutes of distilling, and its --cache-dir
    default was .cache-drafter/eval-cache under whatever folder it was run from; it now says on stderr what it does,
    category by category, and caches under the toolkit's cache root, as train does."""
    import redrafter_trt.train.heldout as heldout
    from redrafter_trt.quickstart import mt_bench_path

    seen = []

    def evaluate_on_prompts(drafter, base, path, cache_dir, num_prompts, progress):
        seen.append((path.stem, cache_dir))
        progress("answering")
        return {"anchors": num_prompts, "top1": [0.5, 0.25], "tokens_per_step_beam1": 1.625}

    monkeypatch.setattr(heldout, "evaluate_on_prompts", evaluate_on_prompts)
    monkeypatch.setenv("REDRAFTER_TRT_CACHE", str(tmp_path / "root"))
    monkeypatch.chdir(tmp_path)
    args = ["--drafter", str(tiny_drafter), "--base", str(tiny_llama)]  # no --cache-dir
    result = CliRunner().invoke(script("eval_drafter").main, args)
    assert result.exit_code == 0, result.output
    categories = sorted({json.loads(line)["category"] for line in mt_bench_path().read_text().splitlines()})
    assert [c for c, _ in seen] == categories
    assert {d for _, d in seen} == {tmp_path / "root" / "eval"}
    assert not (tmp_path / ".cache-drafter").exists()
    assert result.stderr.splitlines() == [f"{c} ({i + 1}/{len(categories)}): {line}" for i, c in enumerate(categories)
                                          for line in ("answering", "1.625 tokens/step at W=1")]
    assert "category" not in result.stderr and result.stdout.startswith("category"), result.stdout


def test_bench_compiled_without_a_compiler_names_the_eager_profile(tiny_llama, tiny_drafter, monkeypatch):
    """bench_compiled.py always compiles: on a machine without a C++ compiler its refusal named load's fix, "pass
    compile=False", which the script has no way to take. It names the eager profile instead, before any load."""
    from torch._inductor import cpp_builder
    from torch._inductor.exc import InvalidCxxCompiler
    from test_convert_errors import assert_one_line_error

    def no_compiler():
        raise InvalidCxxCompiler()

    ckpt = checkpoint(tiny_llama, tiny_drafter, 1, num_beams=2, draft_len=2, dtype="float32")
    monkeypatch.setattr(cpp_builder, "get_cpp_compiler", no_compiler)
    monkeypatch.setattr(rt, "load", lambda *a, **k: pytest.fail("loaded the weights"))
    result = CliRunner().invoke(script("bench_compiled").main, ["--checkpoint-dir", str(ckpt)])
    assert_one_line_error(result, "bench_compiled.py times the base compiled, which needs a C++ compiler")
    assert "scripts/profile_decode.py" in result.output and "compile=False" not in result.output
