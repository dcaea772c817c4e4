"""`bench` on a tiny converted Llama with a byte tokenizer: JSON keys and internal consistency (speed-ups are ratios
of tokens per second, `best` is the argmax, histograms add up to the tokens), greedy exactness, the plot, and bad
input exiting 2 with one line."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from redrafter_trt.bench import BenchReport, ConfigResult, Run, Timing
from redrafter_trt.bench_inputs import default_grid, resolve_hf_dir
from redrafter_trt.bench_report import PLOT_PRODUCER_KEY, mismatch_warning, verdict
from redrafter_trt.cli import main
from redrafter_trt.errors import ConfigError
from redrafter_trt.drafter import init_drafter_for_base
from tinymodels import make_hf

PROMPTS = ["The quick brown fox", "Once upon a time", "1, 2, 3,"]


def save_byte_tokenizer(folder, chat_template: str | None = None) -> None:
    """A 256-token byte-level tokenizer for the tiny models (vocab 256), with this chat template (None: none)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tok = Tokenizer(models.BPE({ch: i for i, ch in enumerate(alphabet)}, []))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    # EOS outside the byte range the prompts use, so that generations run to max_new_tokens more often than not
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=alphabet[-1])
    fast.chat_template = chat_template
    fast.save_pretrained(folder)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from redrafter_trt.convert import convert

    tmp = tmp_path_factory.mktemp("bench")
    base = make_hf(tmp / "base", "llama")
    save_byte_tokenizer(base)
    # init-drafter's drafter (identity ResBlocks, the base's lm_head) gets drafts accepted on the tiny base: a random
    # one accepted none, so bench's histograms were all ones and acceptance matched them whatever its replay did
    init_drafter_for_base(base, tmp / "drafter")
    ckpt = convert(base, tmp / "drafter", tmp / "ckpt", tp_size=1, dtype="float32", num_beams=2, draft_len=3)
    prompts = tmp / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in PROMPTS))
    return base, ckpt, prompts


def run_cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def bench_args(setup, *extra):
    base, ckpt, prompts = setup
    return ("bench", "--checkpoint-dir", ckpt, "--tokenizer-dir", base, "--prompts", prompts, *extra)


def assert_one_line_error(result, *needles):
    assert result.exit_code == 2, (result.exit_code, result.output)
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])


@pytest.fixture(scope="module")
def report(setup, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench-out") / "bench.json"
    result = run_cli(*bench_args(setup, "--max-new-tokens", 12, "--draft-lens", "1,3", "--output-json", out))
    assert result.exit_code == 0, result.output
    return json.loads(out.read_text()), result.stdout


def test_json_keys_and_grid(report):
    data, _ = report
    assert {"configs", "best", "baselines", "meta"} <= set(data)
    assert {"hf", "no_draft"} <= set(data["baselines"])
    # default beams: 1..checkpoint's 2; requested draft lengths 1 and 3
    assert sorted((c["num_beams"], c["draft_len"]) for c in data["configs"]) == [(1, 1), (1, 3), (2, 1), (2, 3)]
    for c in data["configs"]:
        assert {"num_beams", "draft_len", "mean_tokens_per_step", "tokens_per_second", "speedup_vs_hf",
                "speedup_vs_no_draft", "histogram"} <= set(c)
    assert data["meta"]["num_prompts"] == len(PROMPTS) and data["meta"]["chat"] is False
    import torch
    import transformers
    assert (data["meta"]["torch"], data["meta"]["transformers"]) == (torch.__version__, transformers.__version__)


def test_json_says_what_produced_it(setup, report, tmp_path):
    """bench's and acceptance's JSON named no version (a review: numbers kept in docs could not be traced to the code
    that measured them); both carry the `producer` block a converted checkpoint carries."""
    from redrafter_trt import __version__

    base, ckpt, prompts = setup
    data, _ = report
    p = data["producer"]
    assert (p["name"], p["version"], p["command"]) == ("redrafter-trt", __version__, "bench")
    assert p["options"]["max_new_tokens"] == 12 and p["options"]["draft_lens"] == [1, 3]
    assert p["sources"] == {"checkpoint": str(ckpt.resolve()), "tokenizer": str(base.resolve()),
                            "prompts": str(prompts.resolve()), "hf": str(base.resolve())}
    out = tmp_path / "acc.json"
    result = run_cli(*acceptance_args(setup, "--num-prompts", 1, "--max-new-tokens", 2, "--beams", 1, "--draft-lens",
                                      1, "--output-json", out))
    assert result.exit_code == 0, result.output
    p = json.loads(out.read_text())["producer"]
    assert (p["version"], p["command"], p["options"]["num_prompts_asked"]) == (__version__, "acceptance", 1)
    assert set(p["sources"]) == {"checkpoint", "tokenizer", "prompts"}


@pytest.mark.parametrize("cmd", ["bench", "acceptance"])
def test_meta_records_the_paths_absolute_as_producer_sources_do(setup, cmd, tmp_path, monkeypatch):
    """A review: `meta` kept checkpoint_dir, tokenizer_dir and prompts as typed (`ckpt`, relative to a folder the JSON
    does not name) while producer.sources held the same paths absolute."""
    base, ckpt, prompts = setup
    out = tmp_path / "out.json"
    monkeypatch.chdir(ckpt.parent)
    result = run_cli(cmd, "--checkpoint-dir", ckpt.name, "--tokenizer-dir", base.name, "--prompts", prompts.name,
                     "--num-prompts", 1, "--max-new-tokens", 2, "--beams", 1, "--draft-lens", 1, "--output-json", out)
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    meta, sources = data["meta"], data["producer"]["sources"]
    assert (meta["checkpoint_dir"], meta["tokenizer_dir"], meta["prompts"]) == \
        (sources["checkpoint"], sources["tokenizer"], sources["prompts"]) == \
        (str(ckpt.resolve()), str(base.resolve()), str(prompts.resolve()))
    if cmd == "bench":
        assert meta["hf_dir"] == sources["hf"] == str(base.resolve())


def test_speedups_are_ratios_and_best_is_argmax(report):
    data, _ = report
    hf, plain = data["baselines"]["hf"]["tokens_per_second"], data["baselines"]["no_draft"]["tokens_per_second"]
    assert hf > 0 and plain > 0
    for c in data["configs"]:
        # the table's speed-ups are their intervals' centres: the tokens/s columns' ratios
        assert c["speedup_vs_hf"] == pytest.approx(c["speedup_vs_hf_interval"]["ratio"])
        assert c["speedup_vs_no_draft"] == pytest.approx(c["speedup_vs_no_draft_interval"]["ratio"])
        assert c["speedup_vs_no_draft"] == pytest.approx(c["tokens_per_second"] / plain)
        assert c["speedup_vs_hf"] == pytest.approx(c["tokens_per_second"] / hf)  # whatever each answer's length
        assert c["tokens_per_second"] == pytest.approx(c["new_tokens"] / c["wall_seconds"])
    best = max(data["configs"], key=lambda c: c["speedup_vs_hf"])
    assert (data["best"]["num_beams"], data["best"]["draft_len"]) == (best["num_beams"], best["draft_len"])


def test_the_printed_table_shows_each_configs_json_numbers(report):
    """A mutation review: swapping the "vs HF" and "vs plain" columns, printing new_tokens as tokens/s or dropping the
    best row's `*` went unseen (only the JSON was checked). Each configuration's row, parsed from stdout, carries its
    JSON numbers to the printed precision, and only the best row is starred."""
    data, stdout = report
    rows = {}
    for line in stdout.splitlines():
        if m := re.match(r"W=(\d+) L=(\d+)(\*?)\s+(\S+)\s+(\S+)\s+(\S+)\s+(\S+)\s+(yes|NO)\s", line):
            rows[int(m[1]), int(m[2])] = m.groups()[2:]
    assert sorted(rows) == sorted((c["num_beams"], c["draft_len"]) for c in data["configs"]), stdout
    best = (data["best"]["num_beams"], data["best"]["draft_len"])
    for c in data["configs"]:
        star, tps, tok_s, vs_hf, vs_plain, exact = rows[c["num_beams"], c["draft_len"]]
        assert (star == "*") == ((c["num_beams"], c["draft_len"]) == best), stdout
        assert [tps, tok_s, vs_hf, vs_plain] == [f"{c[k]:.2f}" for k in ("mean_tokens_per_step", "tokens_per_second",
                                                                          "speedup_vs_hf", "speedup_vs_no_draft")]
        assert exact == ("yes" if not c["mismatched_prompts"] else "NO")
    assert sum(star == "*" for star, *_ in rows.values()) == 1


def test_histograms_add_up(report):
    """Each prompt's prefill emits one token; every later step emits its histogram bucket's count of tokens."""
    data, _ = report
    n = data["meta"]["num_prompts"]
    for c in [*data["configs"], data["baselines"]["no_draft"], data["baselines"]["hf"]]:
        hist = {int(k): v for k, v in c["histogram"].items()}
        assert sum(k * v for k, v in hist.items()) + n == c["new_tokens"]
        assert sum(hist.values()) + n == c["steps"]
        assert c["mean_tokens_per_step"] == pytest.approx(c["new_tokens"] / c["steps"])
        assert max(hist) <= c.get("draft_len", 0) + 1
    assert set(data["baselines"]["no_draft"]["histogram"]) <= {"1"} and set(data["baselines"]["hf"]["histogram"]) <= {"1"}


def test_greedy_drafting_is_exact_in_float32(report):
    data, stdout = report
    assert data["all_match_no_draft"] is True
    assert all(c["matches_no_draft"] and not c["mismatched_prompts"] for c in data["configs"])
    # transformers and the runtime decode the same converted weights: same greedy tokens
    assert data["baselines"]["hf_matches_no_draft"] == len(PROMPTS)
    assert "transformers" in stdout and "W=2 L=3" in stdout and "best:" in stdout
    best = max(c["mean_tokens_per_step"] for c in data["configs"])
    verdicts = (("the drafter accepts almost nothing",) if best < 1.05
                else ("drafting pays here", "drafting does not pay", "too close to call"))
    assert any(v in stdout for v in verdicts), stdout


def test_counted():
    from redrafter_trt.plural import counted

    assert [counted(n, "prompt") for n in (0, 1, 2)] == ["0 prompts", "1 prompt", "2 prompts"]
    assert (counted(1, "CPU thread"), counted(8, "CPU thread")) == ("1 CPU thread", "8 CPU threads")


@pytest.mark.parametrize("prompts, threads, words", [
    (1, 1, ["1 of 3 prompts, spread over the file, ", "(1 thread)", "agree on 1/1 prompt\n"]),
    (2, 2, ["2 of 3 prompts, spread over the file, ", "(2 threads)", "agree on 2/2 prompts\n"]),
])
def test_headers_count_in_the_singular_and_plural(setup, prompts, threads, words):
    """A walkthrough: bench printed "1 prompts" and "(1 threads)", acceptance "1 prompts"."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        short = ("--num-prompts", prompts, "--max-new-tokens", 2, "--beams", 1, "--draft-lens", 1)
        bench, acceptance = run_cli(*bench_args(setup, *short)), run_cli(*acceptance_args(setup, *short))
    finally:
        torch.set_num_threads(before)
    assert bench.exit_code == 0 and acceptance.exit_code == 0, (bench.output, acceptance.output)
    assert all(w in bench.stdout for w in words), bench.stdout
    assert acceptance.stdout.startswith(words[0]), acceptance.stdout


def test_plot(setup, tmp_path, monkeypatch):
    """The PNG, and what it draws (a mutation review: plotting speedup_vs_no_draft under "speed-up over transformers",
    the no-drafting line at the inverse ratio, or "draft length" on the x axis went unseen): the figure, kept from
    plt.close, has per draft length the JSON's tokens/step and speed-up over transformers against beam width."""
    pytest.importorskip("matplotlib")
    from redrafter_trt.bench_report import require_matplotlib

    plt = require_matplotlib()
    figures, close = [], plt.close
    monkeypatch.setattr(plt, "close", figures.append)
    png, out = tmp_path / "bench.png", tmp_path / "bench.json"
    result = run_cli(*bench_args(setup, "--num-prompts", 1, "--max-new-tokens", 4, "--draft-lens", "1,3", "--plot", png,
                                 "--output-json", out))
    assert result.exit_code == 0, result.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    data, (fig,) = json.loads(out.read_text()), figures
    from PIL import Image

    with Image.open(png) as image:  # its provenance, as the JSON's: which version, command, options and inputs
        assert json.loads(image.text[PLOT_PRODUCER_KEY]) == data["producer"]
    try:
        ax_tps, ax_speed = fig.axes
        assert ax_tps.get_title() == "mean tokens per step"
        assert ax_speed.get_title() == "speed-up over transformers generate"
        assert ax_tps.get_xlabel() == ax_speed.get_xlabel() == "beam width"
        for ax, key in ((ax_tps, "mean_tokens_per_step"), (ax_speed, "speedup_vs_hf")):
            lines = {ln.get_label(): ln for ln in ax.get_lines()}
            for n in (1, 3):
                rows = sorted((c for c in data["configs"] if c["draft_len"] == n), key=lambda c: c["num_beams"])
                line = lines[f"draft length {n}"]
                assert list(line.get_xdata()) == [c["num_beams"] for c in rows] == [1, 2]
                assert list(line.get_ydata()) == pytest.approx([c[key] for c in rows])
        lines = {ln.get_label(): ln for ln in ax_speed.get_lines()}
        hf, plain = (data["baselines"][k]["tokens_per_second"] for k in ("hf", "no_draft"))
        assert list(lines["transformers generate"].get_ydata()) == [1.0, 1.0]
        assert list(lines["runtime, no drafting"].get_ydata()) == pytest.approx([plain / hf] * 2)
    finally:
        close(fig)


def test_the_plots_title_says_an_fp8_checkpoint_ran_dequantised(tmp_path):
    """bench's header says "FP8 weights dequantised to bfloat16" for an FP8 checkpoint; its --plot's title still said
    "bfloat16", the words a bfloat16 checkpoint gets. Read from the SVG's text (matplotlib writes each as a comment)."""
    pytest.importorskip("matplotlib")
    import re
    from types import SimpleNamespace

    from redrafter_trt.bench_report import plot, weights_text

    meta = {"hf_dir": "/models/base", "num_prompts": 2, "max_new_tokens": 4, "dtype": "bfloat16", "device": "cpu",
            "torch_threads": 1, "quant_algo": "FP8"}
    run = timed_run(1, 1.0, 1)
    svg = plot(SimpleNamespace(meta=meta, hf=run, no_draft=run, configs=[]), tmp_path / "bench.svg")
    title = next(t for t in re.findall(r"<!-- (.*?) -->", svg.read_text()) if t.startswith("base, "))
    assert f", {weights_text(meta)}, cpu" in title and weights_text(meta) != "bfloat16", title


@pytest.mark.parametrize("suffix", ["png", "pdf", "svg"])
def test_the_plot_carries_the_producer_block(tmp_path, suffix):
    """bench's --plot carried no provenance (its JSON has the producer block): a PNG has it in a text chunk, a PDF
    in its Subject, an SVG in its Description (the metadata keys matplotlib takes for them)."""
    pytest.importorskip("matplotlib")
    import html
    from types import SimpleNamespace

    from redrafter_trt.bench_report import plot
    from redrafter_trt.producer import producer_block

    meta = {"hf_dir": "/models/base", "num_prompts": 2, "max_new_tokens": 4, "dtype": "bfloat16", "device": "cpu",
            "torch_threads": 1}
    run = timed_run(1, 1.0, 1)
    block = producer_block("bench", {"beams": [1, 2], "draft_lens": [2]}, {"checkpoint": "/ckpt"})
    out = plot(SimpleNamespace(meta=meta, hf=run, no_draft=run, configs=[]), tmp_path / f"bench.{suffix}", block)
    if suffix == "png":
        from PIL import Image

        with Image.open(out) as image:
            assert json.loads(image.text[PLOT_PRODUCER_KEY]) == block
    else:
        assert json.dumps(block) in (out.read_text(errors="replace") if suffix == "pdf"
                                     else html.unescape(out.read_text())), out.read_bytes()[:3000]
    plain = plot(SimpleNamespace(meta=meta, hf=run, no_draft=run, configs=[]), tmp_path / f"plain.{suffix}")
    assert b"redrafter-trt" not in plain.read_bytes()  # none given (a caller of plot), none written


def test_plot_format_follows_the_suffix(setup, tmp_path):
    """A review: --plot bench.pdf (or .svg) wrote PNG bytes under that name, and a --plot naming a .json file got a
    PNG; the suffix picks PDF or SVG, and another suffix is refused before any work."""
    pytest.importorskip("matplotlib")
    pdf = tmp_path / "bench.pdf"
    result = run_cli(*bench_args(setup, "--num-prompts", 1, "--max-new-tokens", 2, "--beams", 1, "--draft-lens", 1,
                                 "--plot", pdf))
    assert result.exit_code == 0, result.output
    assert pdf.read_bytes()[:5] == b"%PDF-"
    wrong = tmp_path / "bench.json"
    assert_one_line_error(run_cli(*bench_args(setup, "--plot", wrong)), "cannot write a .json plot", ".png, .pdf or .svg")
    assert not wrong.exists()


def test_beams_above_checkpoint(setup):
    assert_one_line_error(run_cli(*bench_args(setup, "--beams", "1,3")), "--beams 3", "outside 1..2", "--num-beams")


def test_draft_len_above_checkpoint(setup):
    assert_one_line_error(run_cli(*bench_args(setup, "--draft-lens", "4")), "--draft-lens 4", "outside 1..3")


def short_checkpoint(setup, folder, predict_n: int, draft_len: int):
    """The setup's base and drafter, the drafter recorded as trained to predict `predict_n` tokens, converted at
    `draft_len`."""
    import shutil

    from redrafter_trt.convert import convert

    base, ckpt, _ = setup
    drafter = folder / "drafter"
    shutil.copytree(ckpt.parent / "drafter", drafter)
    cfg = json.loads((drafter / "config.json").read_text())
    (drafter / "config.json").write_text(json.dumps({**cfg, "predict_n": predict_n}))
    return convert(base, drafter, folder / "ckpt", tp_size=1, dtype="float32", num_beams=2, draft_len=draft_len)


def test_a_draft_length_past_the_drafters_asks_for_retraining(setup, tmp_path):
    """A walkthrough: on a checkpoint whose drafter predicts 2 tokens, `acceptance --draft-lens 3` (and bench, and
    run's --draft-len) advised "reconvert with --draft-len 3", which convert refuses; they say to retrain."""
    from redrafter_trt import runtime as rt

    base, _, prompts = setup
    ckpt = short_checkpoint(setup, tmp_path, predict_n=2, draft_len=2)
    args = ("--checkpoint-dir", ckpt, "--tokenizer-dir", base, "--prompts", prompts, "--draft-lens", "1,3")
    for command in ("acceptance", "bench"):
        result = run_cli(command, *args)
        assert_one_line_error(result, "--draft-lens 3", "outside 1..2", "train --predict-n 3")
        assert "--draft-len 3" not in result.stderr
    with pytest.raises(ConfigError, match="train --predict-n 3") as e:
        rt.check_draft_shape(rt.RuntimeConfig.from_dir(ckpt), None, 3, True, spelling=rt.RUN)  # run's words
    assert "--draft-len 3 is outside 0..2" in str(e.value) and "reconvert" not in str(e.value)


def test_run_num_beams_past_the_checkpoints_says_how_to_get_them(setup):
    """run --num-beams above the checkpoint's said only that it was outside 1..W, where --draft-len and bench's
    --beams say to pass at most W or reconvert."""
    from redrafter_trt import runtime as rt

    _, ckpt, _ = setup
    cfg = rt.RuntimeConfig.from_dir(ckpt)
    with pytest.raises(ConfigError) as e:
        rt.check_draft_shape(cfg, cfg.num_beams + 2, None, True, spelling=rt.RUN)  # run's words
    assert str(e.value) == (f"--num-beams {cfg.num_beams + 2} is outside 1..{cfg.num_beams} (the checkpoint's "
                            f"redrafter_num_beams): pass at most {cfg.num_beams}, or reconvert with --num-beams "
                            f"{cfg.num_beams + 2}"), e.value


@pytest.mark.parametrize("recorded, wanted, says, never", [
    (None, 5, ["or reconvert with --draft-len 5 if its drafter", "train --predict-n 5"], []),  # converted by an older version
    (5, 5, ["or reconvert with --draft-len 5"], ["predict-n"]),
    (4, 5, ["or reconvert with --draft-len 4", "train --predict-n 5"], ["--draft-len 5"]),
    (3, 5, ["trained to predict 3 tokens", "train --predict-n 5"], ["reconvert", "--draft-len 5"]),
])
def test_the_longer_draft_length_advice_follows_the_recorded_predict_n(setup, recorded, wanted, says, never):
    from redrafter_trt.bench_inputs import check_grid
    from redrafter_trt.runtime.config import RuntimeConfig

    _, ckpt, _ = setup
    raw = json.loads((ckpt / "config.json").read_text())
    raw["producer"] = {k: v for k, v in raw["producer"].items() if k != "drafter_predict_n"}
    if recorded is not None:
        raw["producer"]["drafter_predict_n"] = recorded
    cfg = RuntimeConfig.from_dict(raw)
    with pytest.raises(ConfigError) as e:
        check_grid((1, wanted), cfg.draft_len, "--draft-lens", "redrafter_draft_len_per_beam", cfg.draft_len_fix)
    assert str(e.value).startswith(f"--draft-lens {wanted} is outside 1..3"), e.value
    assert all(s in str(e.value) for s in says) and not any(n in str(e.value) for n in never), e.value


@pytest.mark.parametrize("flag, value", [("--beams", "1,x"), ("--beams", ""), ("--beams", "0"), ("--draft-lens", "-1")])
def test_malformed_list(setup, flag, value):
    assert_one_line_error(run_cli(*bench_args(setup, flag, value)), flag, "comma-separated")


@pytest.mark.parametrize("extra, needle", [
    (("--output-json", "nodir/x.json"), "nodir does not exist"),
    (("--plot", "nodir/x.png"), "nodir does not exist"),
    (("--device", "tpu"), "not a device"),
])
def test_bad_output_folder_or_device_before_any_work(setup, tmp_path, extra, needle):
    flag, value = extra
    value = str(tmp_path / value) if "/" in value else value
    assert_one_line_error(run_cli(*bench_args(setup, flag, value)), needle)
    assert_one_line_error(run_cli(*acceptance_args(setup, flag, value)) if flag != "--plot" else
                          run_cli(*bench_args(setup, flag, value)), needle)


def test_output_inside_the_recorded_base_is_refused(setup):
    """The transformers baseline reads the base the checkpoint records: bench must not write into it."""
    base, _, _ = setup
    target = base / "generation_config.json"
    before = target.read_bytes() if target.exists() else None
    for flag in ("--output-json", "--plot"):
        assert_one_line_error(run_cli(*bench_args(setup, flag, target)), "is inside the input")
    assert (target.read_bytes() if target.exists() else None) == before


def test_output_json_and_plot_in_one_file_are_refused(setup, tmp_path):
    """A review: the PNG silently replaced the JSON written a moment before."""
    out = tmp_path / "out"
    assert_one_line_error(run_cli(*bench_args(setup, "--output-json", out, "--plot", tmp_path / "." / "out")),
                          "--output-json and --plot both name", "two files")
    assert not out.exists()


def test_output_json_and_plot_in_one_file_under_two_names_are_refused(setup, second_name):
    """--output-json and --plot were compared by name: one file under two names (`R.png` and `r.png` on a Mac's
    case-insensitive disk) had the PNG replace the JSON; refused whether the file exists yet or not."""
    here, alias = second_name
    for exists in (False, True):
        if exists:
            (here / "r.png").write_text("an earlier result")
        assert_one_line_error(run_cli(*bench_args(setup, "--output-json", here / "r.png", "--plot", alias / "r.png")),
                              "--output-json and --plot both name", "two files")
    assert (here / "r.png").read_text() == "an earlier result"


def test_output_json_through_a_link_writes_the_file_it_names(setup, tmp_path):
    """A review: `--output-json LINK` (a symbolic link to a regular file, as `/dev/stdout` is when stdout is redirected
    to one) had the link replaced by a plain file and its target left stale; as root, `--output-json /dev/stdout >
    f.json` replaced /dev/stdout for every program of the host. The file the link names is written."""
    target, link = tmp_path / "results" / "acc.json", tmp_path / "latest.json"
    target.parent.mkdir()
    target.write_text("stale")
    link.symlink_to(target)
    result = run_cli(*acceptance_args(setup, "--num-prompts", 1, "--max-new-tokens", 2, "--beams", 1, "--draft-lens", 1,
                                      "--output-json", link))
    assert result.exit_code == 0, result.output
    assert link.is_symlink() and "meta" in json.loads(target.read_text())


def test_a_sampling_checkpoint_warns_its_figures_are_greedy(setup, tmp_path):
    import shutil

    base, ckpt, prompts = setup
    sampling = tmp_path / "sampling"
    shutil.copytree(ckpt, sampling)
    raw = json.loads((sampling / "config.json").read_text())
    (sampling / "config.json").write_text(json.dumps({**raw, "redrafter_greedy_search": False}))
    for cmd in ("bench", "acceptance"):
        r = run_cli(cmd, "--checkpoint-dir", sampling, "--tokenizer-dir", base, "--prompts", prompts,
                    "--num-prompts", 1, "--max-new-tokens", 2, "--beams", 1, "--draft-lens", 1)
        assert r.exit_code == 0, r.output
        assert "converted with --no-greedy" in r.stderr and "--sampling-rule trtllm" in r.stderr, r.stderr
    r = run_cli(*acceptance_args(setup, "--num-prompts", 1, "--max-new-tokens", 2, "--beams", 1, "--draft-lens", 1))
    assert "--no-greedy" not in r.stderr


def test_empty_prompts_file(setup, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    base, ckpt, _ = setup
    assert_one_line_error(run_cli(*bench_args((base, ckpt, empty))), "holds no prompts")


@pytest.mark.parametrize("cmd", ["bench", "acceptance"])
def test_a_tokenizer_that_does_not_fit_is_one_line(setup, tmp_path, cmd):
    """A review: a folder without a tokenizer, or a tokenizer larger than the model's vocabulary, raised tracebacks
    (bench: an IndexError from the embedding, after loading both models), where run refuses them with one line."""
    from transformers import AutoTokenizer

    base, ckpt, prompts = setup
    args = (cmd, "--checkpoint-dir", ckpt, "--prompts", prompts, "--max-new-tokens", 2, "--tokenizer-dir")
    assert_one_line_error(run_cli(*args, ckpt), "cannot load a tokenizer", "--tokenizer-dir")
    big = tmp_path / "big"
    save_byte_tokenizer(big)
    tok = AutoTokenizer.from_pretrained(big)
    tok.add_tokens([f"<extra{i}>" for i in range(50)])
    tok.save_pretrained(big)
    assert_one_line_error(run_cli(*args, big), "306 tokens", "vocab_size is 256")


def test_compile_where_it_cannot_run_is_refused_before_any_work(setup):
    """A review: bench announced `compiling the runtime's base layers (minutes ...)`, read the weights and only then
    refused (a float16 checkpoint, a GPU); it is refused with run's words (runtime.check_compile) before anything."""
    result = run_cli(*bench_args(setup, "--compile", "--device", "cuda"))
    assert "compiling" not in result.stderr
    assert_one_line_error(result, "--compile runs the layers of a tp=1 float32 checkpoint", "cuda", "drop --compile")


def test_compile_reaches_the_runtime(setup, tmp_path, monkeypatch):
    """A mutant survived: run_bench loading the runtime without `compile=opts.compile` timed the eager layers while
    meta said compile true. The runtime's compile (compiled.compile_stack) is replaced by a recorder that hands back
    the eager LayerStack (no TorchInductor, no C++ compiler needed): bench --compile must go through it, once."""
    from redrafter_trt.runtime import compiled

    stacks = []

    def recorder(stack):
        stacks.append(stack)
        return stack

    monkeypatch.setattr(compiled, "check_cxx_compiler", lambda spelling=None: None)
    monkeypatch.setattr(compiled, "compile_stack", recorder)
    out = tmp_path / "bench.json"
    result = run_cli(*bench_args(setup, "--compile", "--num-prompts", 1, "--max-new-tokens", 2, "--beams", 1,
                                 "--draft-lens", 1, "--output-json", out))
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["meta"]["compile"] is True
    assert len(stacks) == 1 and isinstance(stacks[0], compiled.LayerStack)


def test_every_tokenizer_failure_is_one_config_error(tmp_path, monkeypatch):
    """transformers 4.57 raises an ImportError ("requires the protobuf library") for a folder without tokenizer
    files, which went past the commands' `except (OSError, ValueError)` as a traceback (train, fp8_agreement,
    profile_decode); every load goes through tokens.auto_tokenizer, which turns it into one line."""
    import transformers

    from redrafter_trt.tokens import load_tokenizer

    def fails(*args, **kwargs):
        raise ImportError("\n requires the protobuf library but it was not found in your environment.")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", fails)
    with pytest.raises(ConfigError, match=r"cannot load a tokenizer from .* \(it holds none of tokenizer.json, "):
        load_tokenizer(str(tmp_path), None)  # what the missing files mean, not the ImportError they caused
    (tmp_path / "tokenizer_config.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"cannot load a tokenizer from .* \(requires the protobuf library"):
        load_tokenizer(str(tmp_path), None)


@pytest.mark.parametrize("key", ["eos_token", "pad_token"])
def test_a_special_token_outside_the_vocabulary_is_named(tmp_path, key):
    """The bad-input sweep: an eos_token that is no token of the vocabulary (transformers adds it as a new one, past
    the model's rows) was refused as a vocabulary-size mismatch, naming no token; it names the token and its key."""
    from redrafter_trt.tokens import load_tokenizer
    from redrafter_trt.train import base as train_base

    folder = tmp_path / "tok"
    save_byte_tokenizer(folder)
    config = folder / "tokenizer_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), key: "<|no such token|>"}))
    for load in (load_tokenizer, train_base.load_tokenizer):  # run's and the other commands', train's
        with pytest.raises(ConfigError) as raised:
            load(str(folder), 256)
        message = str(raised.value)
        assert f"the tokenizer in {folder} has {key} '<|no such token|>', which is not in its vocabulary" in message
        assert "token 256, past the model's vocab_size 256" in message and f"set {key}" in message, message
    assert load_tokenizer(str(folder), None).convert_tokens_to_ids("<|no such token|>") == 256  # what was added


@pytest.mark.parametrize("key", ["eos_token", "bos_token"])
def test_a_special_token_outside_the_vocabulary_is_named_under_a_padded_vocab(tmp_path, key):
    """A review: with a model vocabulary padded past the tokenizer's (Qwen2: 151936 rows, 151665 tokens), an eos_token
    missing from the vocabulary was added at load as token 151665, under vocab_size, and passed: the model never emits
    it. What transformers added is told from what the tokenizer files define, not by the model's vocab_size; a special
    token the files add (Qwen2's <|im_end|>, in tokenizer.json's added_tokens) is the vocabulary's own."""
    from redrafter_trt.tokens import load_tokenizer
    from redrafter_trt.train import base as train_base

    folder = tmp_path / "tok"
    save_byte_tokenizer(folder)
    config = folder / "tokenizer_config.json"
    saved = json.loads(config.read_text())
    config.write_text(json.dumps({**saved, key: "<|no such token|>"}))
    for load in (load_tokenizer, train_base.load_tokenizer):  # run's and the other commands', train's
        with pytest.raises(ConfigError) as raised:
            load(str(folder), 260)
        message = str(raised.value)
        assert f"the tokenizer in {folder} has {key} '<|no such token|>', which is not in its vocabulary" in message
        assert "token 256, a padding row of the model's vocab_size 260" in message and f"set {key}" in message
    config.write_text(json.dumps(saved))
    tokenizer = load_tokenizer(str(folder), None)
    tokenizer.add_special_tokens({key: "<|end|>"})  # token 256, defined by the files it saves
    tokenizer.save_pretrained(folder)
    for load in (load_tokenizer, train_base.load_tokenizer):
        assert load(str(folder), 260).convert_tokens_to_ids(getattr(load(str(folder), 260), key)) == 256


def test_a_pad_token_outside_the_vocabulary_on_a_padding_row_loads(tmp_path):
    """A review of the check above: a pad_token the files lack, added at load on a padding row, fills only masked
    positions (run's and distillation's batches), so it loads; past vocab_size it is still refused."""
    from redrafter_trt.tokens import load_tokenizer

    folder = tmp_path / "tok"
    save_byte_tokenizer(folder)
    config = folder / "tokenizer_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "pad_token": "<|no such token|>"}))
    assert load_tokenizer(str(folder), 260).pad_token_id == 256
    with pytest.raises(ConfigError, match=re.escape("pad_token '<|no such token|>', which is not in its vocabulary")):
        load_tokenizer(str(folder), 256)


@pytest.mark.parametrize("vocab_size, loads", [(256, True), (269, True), (270, False), (int(256 / 0.9), False)])
def test_a_vocab_size_past_the_tokenizers_padding_is_another_bases(tmp_path, vocab_size, loads):
    """Models pad their vocabulary a little past the tokenizer's (Qwen2: 151665 tokens, 151936 rows, 0.9982): 95% of
    vocab_size or more loads; fewer tokens (a ratio of 0.9, or the 0.84 of a wrong base's tokenizer) are another
    base's, refused naming both sizes."""
    from redrafter_trt.tokens import load_tokenizer

    folder = tmp_path / "tok"
    save_byte_tokenizer(folder)  # 256 tokens
    if loads:
        assert len(load_tokenizer(str(folder), vocab_size)) == 256
        return
    with pytest.raises(ConfigError, match=rf"has 256 tokens but the model's vocab_size is {vocab_size}: pass the "):
        load_tokenizer(str(folder), vocab_size)


def test_a_tokenizer_saved_by_transformers_5_loads_under_every_version(tmp_path):
    """transformers 5 saves `"tokenizer_class": "TokenizersBackend"`, a class transformers 4 lacks: a folder saved by
    5 (the SmolLM2 cache, a user's fine-tune) was `cannot load a tokenizer` inside TensorRT-LLM's transformers 4.57."""
    from tokenizers import pre_tokenizers

    from redrafter_trt.tokens import load_tokenizer

    folder = tmp_path / "tok"
    save_byte_tokenizer(folder)
    config = folder / "tokenizer_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "tokenizer_class": "TokenizersBackend"}))
    tok = load_tokenizer(str(folder), 256)
    text = "caf\u00e9 \U0001f600"
    ids = tok(text)["input_ids"]
    assert len(ids) == len(text.encode()) and tok.decode(ids) == text  # one token a byte
    assert tok.eos_token == sorted(pre_tokenizers.ByteLevel.alphabet())[-1]


@pytest.mark.parametrize("cmd", ["bench", "acceptance"])
@pytest.mark.parametrize("device, gpus, needle", [("cuda", 0, "--device cuda requested but no CUDA device is "
                                                              "available: use --device cpu"),
                                                  ("cuda:1", 1, "--device cuda:1 but only 1 CUDA device is visible: "
                                                                "pass cuda:0"),
                                                  ("cuda:2", 2, "--device cuda:2 but only 2 CUDA devices are "
                                                                "visible: pass cuda:0 to cuda:1")])
def test_a_cuda_device_that_is_not_there_is_one_line_before_any_model_loads(setup, cmd, device, gpus, needle,
                                                                              monkeypatch):
    """bench --device cuda without a GPU moved the transformers baseline there first: torch's 'Torch not compiled
    with CUDA enabled' traceback; cuda:N past the visible GPUs was a traceback in bench and acceptance alike."""
    import torch

    from redrafter_trt import bench, replay

    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    for module in (bench, replay):
        monkeypatch.setattr(module, "load_tokenizer", lambda *a: pytest.fail("the tokenizer loaded first"))
    base, ckpt, prompts = setup
    result = run_cli(cmd, "--checkpoint-dir", ckpt, "--tokenizer-dir", base, "--prompts", prompts, "--device", device)
    assert_one_line_error(result, needle)
    assert result.stderr.strip().endswith(needle)  # one GPU: `pass cuda:0`, not `cuda:0 to cuda:0`


@pytest.mark.parametrize("cmd", ["bench", "acceptance"])
def test_more_prompts_asked_than_the_file_holds_is_said(setup, cmd, caplog):
    """A review: --num-prompts 80 on a file of 3 measured 3 without a word (the JSON's num_prompts: 3)."""
    base, ckpt, prompts = setup
    result = run_cli(cmd, "--checkpoint-dir", ckpt, "--tokenizer-dir", base, "--prompts", prompts, "--num-prompts", 80,
                     "--max-new-tokens", 2, "--beams", 1, "--draft-lens", 1)
    assert result.exit_code == 0, result.output
    assert f"--num-prompts 80, but there are only {len(PROMPTS)} prompts: measuring those 3" in caplog.text


@pytest.mark.parametrize("cmd", ["bench", "acceptance"])
def test_one_prompt_where_more_were_asked_is_said_in_the_singular_and_recorded(setup, cmd, caplog, tmp_path):
    """A review: `--num-prompts 100` on a file of one prompt said 'only 1 prompts: measuring those 1', and the JSON's
    producer.options.num_prompts (100) and meta.num_prompts (1) disagreed under one name."""
    base, ckpt, _ = setup
    one, out = tmp_path / "one.txt", tmp_path / "out.json"
    one.write_text(PROMPTS[0] + "\n")
    result = run_cli(cmd, "--checkpoint-dir", ckpt, "--tokenizer-dir", base, "--prompts", one, "--num-prompts", 100,
                     "--max-new-tokens", 2, "--beams", 1, "--draft-lens", 1, "--output-json", out)
    assert result.exit_code == 0, result.output
    assert "--num-prompts 100, but there is only 1 prompt: measuring it" in caplog.text
    data = json.loads(out.read_text())
    assert (data["meta"]["num_prompts_asked"], data["meta"]["num_prompts"]) == (100, 1)
    assert data["producer"]["options"]["num_prompts_asked"] == 100 and "num_prompts" not in data["producer"]["options"]


def test_a_prompt_near_the_positions_is_benched(setup, tmp_path):
    """A review: the warm-up decoded 8 new tokens whatever --max-new-tokens was, so a 508-token prompt (of 512
    positions) with --max-new-tokens 4, which fits, was refused after loading both models, naming run's
    --max-output-len."""
    base, ckpt, _ = setup
    prompts = tmp_path / "long.jsonl"
    prompts.write_text(json.dumps({"prompt": "a" * 508}) + "\n")  # the byte tokenizer: one token per byte
    out = tmp_path / "bench.json"
    result = run_cli(*bench_args((base, ckpt, prompts), "--max-new-tokens", 4, "--beams", 1, "--draft-lens", 1,
                                 "--output-json", out))
    assert result.exit_code == 0, result.output
    assert 1 <= json.loads(out.read_text())["baselines"]["no_draft"]["new_tokens"] <= 4


def test_chat_without_template(setup):
    assert_one_line_error(run_cli(*bench_args(setup, "--chat")), "chat template", "leave out --chat")


def test_hf_dir_resolution(setup, tmp_path):
    base, ckpt, _ = setup
    raw = json.loads((ckpt / "config.json").read_text())
    assert resolve_hf_dir(None, raw, ckpt).resolve() == base.resolve()
    with pytest.raises(ConfigError, match="--hf-dir"):
        resolve_hf_dir(None, {}, ckpt)
    with pytest.raises(ConfigError, match="not a Hugging Face model"):
        resolve_hf_dir(ckpt, raw, ckpt)  # a TensorRT-LLM checkpoint is no transformers model


def test_another_model_as_the_baseline_is_refused(setup, tmp_path):
    """A review: an --hf-dir (or a recorded base) of another model, one sharing the tokenizer but with more layers or a
    wider hidden state, was timed as the transformers baseline without a word but 'agree on 0/3 prompts', and every
    speedup_vs_hf (and `best`) was a ratio to that other model's speed; now one line before any model loads."""
    for name, overrides, field in (("deeper", {"num_hidden_layers": 3}, "num_hidden_layers"),
                                   ("wider", {"hidden_size": 128}, "hidden_size"),
                                   ("more_kv_heads", {"num_key_value_heads": 4}, "num_key_value_heads")):
        other = make_hf(tmp_path / name, "llama", **overrides)  # the tokenizer stays --tokenizer-dir's
        assert_one_line_error(run_cli(*bench_args(setup, "--hf-dir", other, "--max-new-tokens", 2)),
                              f"base folder {other} (--hf-dir) is not the checkpoint's base", f"its {field} is",
                              "--hf-dir")


def test_another_model_of_the_same_shapes_is_refused(setup, tmp_path):
    """A review: a model of the checkpoint's shapes but other weights (a random Qwen2 and a trained copy of it, a
    base and its instruct model) passed the shape check, was timed as the transformers baseline, and bench reported
    'agree on 0/3 prompts'. A few rows of lm_head and of the last layer's q_proj and down_proj, read from both
    folders, tell them apart before any model loads; the fix names the base convert recorded."""
    import shutil

    from safetensors.torch import load_file, save_file

    base, ckpt, prompts = setup
    other = make_hf(tmp_path / "other", "llama", seed=1)
    assert_one_line_error(run_cli(*bench_args(setup, "--hf-dir", other, "--max-new-tokens", 2)),
                          f"base folder {other} (--hf-dir) is not the checkpoint's base", "lm_head.weight",
                          f"convert recorded {base.resolve()}", "--hf-dir")
    # a LoRA-style fine-tune: only the attention's q_proj moved, lm_head and embeddings as they were
    tuned = Path(shutil.copytree(base, tmp_path / "tuned"))
    weights = load_file(tuned / "model.safetensors")
    for name in [n for n in weights if n.endswith("q_proj.weight")]:
        weights[name] = weights[name] * 1.1
    save_file(weights, tuned / "model.safetensors", metadata={"format": "pt"})
    assert_one_line_error(run_cli(*bench_args(setup, "--hf-dir", tuned, "--max-new-tokens", 2)),
                          "q_proj.weight", "is not the checkpoint's")
    # the recorded base itself replaced by another model since convert
    moved = Path(shutil.copytree(ckpt, tmp_path / "ckpt"))
    raw = json.loads((ckpt / "config.json").read_text())
    raw["producer"]["sources"]["base"] = str(other)
    (moved / "config.json").write_text(json.dumps(raw))
    assert_one_line_error(run_cli(*bench_args((base, moved, prompts), "--max-new-tokens", 2)),
                          f"base folder {other} (recorded in {moved}/config.json) is not the checkpoint's base",
                          "changed since convert", "--hf-dir")


def test_the_base_in_another_dtype_is_its_base(setup, tmp_path):
    """The checkpoint's base saved in bfloat16 (a float32 checkpoint here) differs from it by rounding alone: it is the
    same model, accepted as the baseline."""
    import shutil

    from safetensors.torch import load_file, save_file

    base, ckpt, _ = setup
    copy = Path(shutil.copytree(base, tmp_path / "bf16"))
    weights = {k: v.bfloat16() for k, v in load_file(copy / "model.safetensors").items()}
    save_file(weights, copy / "model.safetensors", metadata={"format": "pt"})
    raw = json.loads((ckpt / "config.json").read_text())
    assert resolve_hf_dir(copy, raw, ckpt) == copy


def test_a_broken_base_config_or_producer_block_is_one_line(setup, tmp_path):
    """A review: a --hf-dir whose config.json is not JSON, and a hand-edited `producer` block, raised tracebacks
    (acceptance's after its whole run, writing the meta)."""
    import shutil

    base, ckpt, prompts = setup
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{bad")
    assert_one_line_error(run_cli(*bench_args(setup, "--hf-dir", broken)), "config.json is not valid JSON")
    edited = tmp_path / "ckpt"
    shutil.copytree(ckpt, edited)
    raw = json.loads((ckpt / "config.json").read_text())
    for producer in ("x", {"sources": {"base": 5}}):
        (edited / "config.json").write_text(json.dumps({**raw, "producer": producer}))
        assert_one_line_error(run_cli(*bench_args((base, edited, prompts))), "records no base model", "--hf-dir")
    out = tmp_path / "acc.json"
    result = run_cli(*acceptance_args((base, edited, prompts), "--num-prompts", 1, "--max-new-tokens", 2, "--beams",
                                      1, "--draft-lens", 1, "--output-json", out))
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text())["meta"]["drafter"] is None


def test_a_base_without_sound_weights_is_one_line(setup, tmp_path):
    """A review: a --hf-dir with a truncated model.safetensors raised a SafetensorError traceback, and one without
    weights said `check the path, its permissions and the free disk space`, both after loading the runtime."""
    import shutil

    base = setup[0]
    weightless, truncated = tmp_path / "weightless", tmp_path / "truncated"
    weightless.mkdir()
    shutil.copy(base / "config.json", weightless)
    shutil.copytree(base, truncated)
    with open(truncated / "model.safetensors", "r+b") as f:
        f.truncate(100)
    # transformers 4.57 names every weights file it looked for ("no file named pytorch_model.bin, model.safetensors,")
    for folder, why in ((weightless, ("no file named", "model.safetensors")), (truncated, ("deserializing header",))):
        assert_one_line_error(run_cli(*bench_args(setup, "--hf-dir", folder, "--max-new-tokens", 2)),
                              f"cannot load the transformers baseline from {folder}", *why, "--hf-dir")


def test_a_broken_stop_token_file_is_refused_before_any_model_loads(setup, tmp_path):
    """A review: bench read --tokenizer-dir's generation_config.json only after loading (or compiling) both models;
    it is read first, as acceptance and run read it, so its one line comes before a baseline that cannot load."""
    import shutil

    base, ckpt, prompts = setup
    tokenizer_dir, weightless = tmp_path / "tok", tmp_path / "weightless"
    shutil.copytree(base, tokenizer_dir, ignore=shutil.ignore_patterns("*.safetensors"))
    (tokenizer_dir / "generation_config.json").write_text("{bad")
    weightless.mkdir()
    shutil.copy(base / "config.json", weightless)
    result = run_cli("bench", "--checkpoint-dir", ckpt, "--tokenizer-dir", tokenizer_dir, "--prompts", prompts,
                     "--hf-dir", weightless, "--max-new-tokens", 2)
    assert_one_line_error(result, "generation_config.json is not valid JSON")


@pytest.mark.parametrize("cmd", ["bench", "acceptance"])
def test_a_presets_draft_length_past_the_checkpoints_names_the_preset_field(setup, cmd, tmp_path):
    """A review: a preset's `bench: {draft_lens: 5}` was refused as `--draft-lens 5 is outside 1..2`, a flag nobody
    typed; a typed one is still named as typed."""
    base, ckpt, prompts = setup
    preset = tmp_path / "preset.yaml"
    preset.write_text(f"{cmd}:\n  draft_lens: 5\n")
    args = (cmd, "--checkpoint-dir", ckpt, "--tokenizer-dir", base, "--prompts", prompts, "--max-new-tokens", 2)
    assert_one_line_error(run_cli(*args, "--config", preset),
                          "the --config preset's draft-lens 5 is outside 1..3", "reconvert with --draft-len 5")
    assert_one_line_error(run_cli(*args, "--draft-lens", 5), "error: --draft-lens 5 is outside 1..3")


@pytest.mark.parametrize("cmd, field, needle", [
    # no checkpoint can hold 200 beams of 3 draft tokens (601 tokens a step) over the tiny model's 512 positions
    ("acceptance", "beams: 1,2,200\n  draft_lens: [3]",
     "the --config preset's beams 200 with the --config preset's draft-lens 3 verify 601 tokens per step"),
    ("acceptance", "beams: [300]", "the --config preset's beams 300 exceeds the vocabulary"),
    ("bench", "plot: x.jpg", "the --config preset's plot x.jpg: cannot write a .jpg plot"),
    ("bench", "output_json: {tmp}/nope/x.json",
     "Invalid value for the --config preset's output-json: folder {tmp}/nope does not exist"),
    ("acceptance", "output-json: {tmp}/nope/x.json", "the --config preset's output-json: folder {tmp}/nope"),
    ("bench", "output_json: {ckpt}/x.json", "the --config preset's output-json {ckpt}/x.json is inside the input"),
    ("acceptance", "output_json: {ckpt}/x.json", "the --config preset's output-json {ckpt}/x.json is inside the input"),
])
def test_a_presets_bad_value_names_the_preset_field_not_a_flag(setup, cmd, field, needle, tmp_path):
    """A review: acceptance refused a preset's `beams: 1,2,9999` as `--beams 9999 with --draft-lens 2 ...`, and bench
    a preset's `plot: x.jpg` as `--plot x.jpg` and its `output_json: /nope/x.json` as an invalid '--output-json',
    flags nobody typed: every refusal names an option as it was given (`as_given`), as the grid checks did."""
    base, ckpt, prompts = setup
    preset = tmp_path / "preset.yaml"
    preset.write_text(f"{cmd}:\n  {field.format(tmp=tmp_path, ckpt=ckpt)}\n")
    args = (cmd, "--checkpoint-dir", ckpt, "--tokenizer-dir", base, "--prompts", prompts, "--max-new-tokens", 2)
    assert_one_line_error(run_cli(*args, "--config", preset), needle.format(tmp=tmp_path, ckpt=ckpt))


def test_default_grid():
    assert default_grid(1) == (1,)
    assert default_grid(5) == (1, 2, 4, 5)
    assert default_grid(8) == (1, 2, 4, 8)


# ---- acceptance: the same tokens per step from one greedy pass ----------------------------------------------------

def acceptance_args(setup, *extra):
    return ("acceptance", *bench_args(setup, *extra)[1:])


def test_acceptance_predicts_bench(setup, report, tmp_path):
    """Same prompts, tokens and grid as the bench fixture: the replay gives bench's steps and histograms."""
    out = tmp_path / "acc.json"
    result = run_cli(*acceptance_args(setup, "--max-new-tokens", 12, "--draft-lens", "1,3", "--beams", "1,2,5",
                                      "--output-json", out))
    assert result.exit_code == 0, result.output
    data = json.loads(out.read_text())
    assert {"meta", "configs", "best"} <= set(data) and data["meta"]["num_prompts"] == len(PROMPTS)
    assert data["meta"]["chat"] is False  # as bench's: the tiny tokenizer has no template
    got = {(c["num_beams"], c["draft_len"]): c for c in data["configs"]}
    assert sorted(got) == [(1, 1), (1, 3), (2, 1), (2, 3), (5, 1), (5, 3)]  # above the checkpoint's 2 beams too
    assert max(int(k) for c in report[0]["configs"] for k in c["histogram"]) >= 3  # runs of drafts were accepted
    for c in report[0]["configs"]:
        mine = got[(c["num_beams"], c["draft_len"])]
        assert (mine["steps"], mine["histogram"], mine["new_tokens"]) == (c["steps"], c["histogram"], c["new_tokens"])
        # a mutation review: (new_tokens - 1) / steps went unseen while steps and new_tokens matched
        assert mine["mean_tokens_per_step"] == pytest.approx(c["mean_tokens_per_step"])
        assert mine["mean_tokens_per_step"] == pytest.approx(mine["new_tokens"] / mine["steps"])
    best = max(data["configs"], key=lambda c: c["mean_tokens_per_step"])
    assert data["best"] == best and "W=5 L=3" in result.stdout
    # the printed table (a mutation review: starring configs[0] or printing new_tokens / (steps - 1) went unseen):
    # each row's tokens/step is its JSON number to the printed precision, and only the best row, not the first, is
    # starred
    assert data["configs"][0] != best
    rows = {}
    for line in result.stdout.splitlines():
        if m := re.match(r"W=(\d+) L=(\d+)(\*?)\s+(\S+)\s", line):
            rows[int(m[1]), int(m[2])] = m[3], m[4]
    assert sorted(rows) == sorted(got), result.stdout
    for c in data["configs"]:
        star, tps = rows[c["num_beams"], c["draft_len"]]
        assert tps == f"{c['mean_tokens_per_step']:.3f}", result.stdout
        assert (star == "*") == (c == best), result.stdout
    assert sum(star == "*" for star, _ in rows.values()) == 1


def test_acceptance_bad_input(setup):
    assert_one_line_error(run_cli(*acceptance_args(setup, "--draft-lens", "4")), "--draft-lens 4", "outside 1..3")
    assert_one_line_error(run_cli(*acceptance_args(setup, "--beams", "0,2")), "'--beams': '0,2'", "integers >= 1")
    assert_one_line_error(run_cli(*acceptance_args(setup, "--chat")), "chat template", "leave out --chat")


def test_acceptance_refuses_beam_widths_no_checkpoint_can_have(setup, tmp_path):
    """A review: --beams above the vocabulary (256 here) ran the greedy pass, then died in the drafter's top-k with a
    RuntimeError traceback; a tree past the model's positions (200 x 3 + 1 > 512) was predicted, though inspect refuses
    such a checkpoint. Both are one line before any model loads, and no JSON is written."""
    out = tmp_path / "acc.json"
    assert_one_line_error(run_cli(*acceptance_args(setup, "--beams", "1,257", "--output-json", out)),
                          "--beams 257", "vocabulary (256 tokens)")
    assert_one_line_error(run_cli(*acceptance_args(setup, "--beams", "200", "--draft-lens", "1,3", "--output-json",
                                                   out)), "200", "601 tokens", "512 positions")
    assert not out.exists()


def test_acceptance_needs_a_drafter(setup, tmp_path):
    """A base-only TensorRT-LLM checkpoint (no redrafter_* keys)."""
    import shutil

    base, ckpt, prompts = setup
    plain = tmp_path / "plain"
    shutil.copytree(ckpt, plain)
    cfg = json.loads((plain / "config.json").read_text())
    (plain / "config.json").write_text(json.dumps({k: v for k, v in cfg.items() if not k.startswith("redrafter")}))
    from safetensors.torch import load_file, save_file

    tensors = load_file(plain / "rank0.safetensors")
    save_file({k: v for k, v in tensors.items() if not k.startswith("drafter.")}, plain / "rank0.safetensors")
    assert_one_line_error(run_cli(*acceptance_args((base, plain, prompts))), "has no drafter", "--drafter")


def timed_run(steps: int, seconds: float, tokens: int, histogram: dict | None = None, prompts: int = 1,
              spread: tuple[float, ...] = ()) -> Run:
    """`steps` steps (the prefill and, unless `histogram` says otherwise, steps - 1 decoding steps) making `tokens`,
    split evenly over `prompts`; `spread`: each prompt's seconds multiplied by these factors in turn (noise)."""
    run = Run()
    for i in range(prompts):
        factor = spread[i % len(spread)] if spread else 1.0
        run.add([0] * (tokens // prompts), Timing(seconds / prompts * factor), steps // prompts,
                {1: steps // prompts - 1} if histogram is None else histogram)
    return run


@pytest.mark.parametrize("draft_seconds, pays", [(4.0, True), (6.0, False)])
def test_verdict_weighs_a_step_against_its_tokens(draft_seconds, pays):
    """100 tokens: plain 100 steps in 5 s (50 ms each); drafted 60 steps (1.67 tokens each) in 4 s (1.33x a plain
    step: pays) or 6 s (2x a plain step: does not); each prompt 1% off the next (timings are never all alike)."""
    plain = timed_run(100, 5.0, 100, prompts=4)
    drafted = timed_run(60, draft_seconds, 100, prompts=4, spread=(0.99, 1.01))
    config = ConfigResult(4, 2, drafted, speedup_vs_hf=1.0, speedup_vs_no_draft=5.0 / draft_seconds,
                          mismatched_prompts=[])
    line = verdict(BenchReport(meta={}, hf=timed_run(100, 10.0, 100, prompts=4), no_draft=plain, configs=[config]))
    assert line.startswith("drafting pays here" if pays else "drafting does not pay here")
    assert f"costs {draft_seconds / 60 / 0.05:.2f}x a plain one and makes 1.67 tokens" in line


@pytest.mark.parametrize("spread, prompts, speedup, says", [
    ((1.0,), 4, 1.25, "too close to call"),              # 1.25x on every prompt: no spread, no noise estimate
    ((0.7, 1.3), 4, 1.25, "too close to call"),          # 1.25x on the whole, 0.96x to 1.79x prompt by prompt
    ((0.7, 1.3), 40, 1.25, "drafting pays here"),        # the same spread, ten times the prompts
    ((1.0,), 1, 1.25, "too close to call"),              # one prompt: no interval at all
    ((0.7, 1.3), 4, 0.9, "too close to call"),           # 0.9x on the whole, an interval reaching past 1
])
def test_the_verdict_pays_only_outside_this_runs_spread(spread, prompts, speedup, says):
    """A review: the same bench on a quiet machine gave W=1 L=1 1.07x, then W=2 L=1 1.15x, as best, each 'drafting
    pays here' from 3 prompts x 32 tokens: the verdict weighed no noise. Each prompt's timings (drafted against plain,
    back to back) give a 95% interval over prompts, and only an interval above 1 pays."""
    from redrafter_trt.bench_report import best_line

    plain = timed_run(100 * prompts, 5.0 * prompts, 100 * prompts, prompts=prompts)
    drafted = timed_run(60 * prompts, 5.0 / speedup * prompts, 100 * prompts, prompts=prompts, spread=spread)
    config = ConfigResult(2, 2, drafted, speedup_vs_hf=1.0, speedup_vs_no_draft=speedup, mismatched_prompts=[])
    report = BenchReport(meta={}, hf=timed_run(100 * prompts, 10.0 * prompts, 100 * prompts, prompts=prompts),
                         no_draft=plain, configs=[config])
    line = verdict(report)
    assert line.startswith(says), line
    if says == "too close to call" and spread != (1.0,) and speedup == 1.25:
        assert line.endswith("(1.25x the runtime without drafting, 95% interval 0.72-2.17x over 4 prompts): within "
                             "this run's spread over prompts: measure more prompts (--num-prompts)"), line
    margin = report.vs_no_draft(config)
    if margin.low is not None:
        assert f"interval {margin.low:.2f}-{margin.high:.2f}x over {prompts} prompts" in line
        assert f"interval {margin.low:.2f}-{margin.high:.2f}x" in best_line(report)
    interval = report.to_json()["configs"][0]["speedup_vs_no_draft_interval"]
    assert (interval["prompts"], interval["confidence"]) == (prompts, 0.95)
    assert (interval["low"] is None) == (spread == (1.0,))


def test_one_prompt_is_said_to_give_no_noise_estimate():
    """A review: one prompt, drafting 2x as fast, said 'within this run's noise over 1 prompt', a noise never
    measured."""
    from redrafter_trt.bench_report import MoreAdvice

    plain, drafted = timed_run(100, 5.0, 100), timed_run(50, 2.5, 100)
    config = ConfigResult(2, 2, drafted, speedup_vs_hf=1.0, speedup_vs_no_draft=2.0, mismatched_prompts=[])
    report = BenchReport(meta={}, hf=timed_run(100, 10.0, 100), no_draft=plain, configs=[config])
    assert verdict(report).endswith("(2.00x the runtime without drafting, no interval from 1 prompt): one prompt "
                                    "gives no noise estimate: measure more prompts (--num-prompts)"), verdict(report)
    advice = MoreAdvice("question", "for a verdict, run the `bench` line below")  # the quickstart's
    assert verdict(report, advice).endswith("no interval from 1 question): one question gives no noise estimate: "
                                            "for a verdict, run the `bench` line below"), verdict(report, advice)


def test_a_busy_machine_is_told_to_rerun_quietly_not_to_measure_more_prompts():
    """A review: on a busy machine the verdict advised 'measure more prompts (--num-questions)' and '(unreliable:
    ...)' at once; more prompts do not quiet the machine."""
    plain = timed_run(400, 20.0, 400, prompts=4)
    drafted = timed_run(240, 16.0, 400, prompts=4, spread=(0.7, 1.3))
    drafted.cpu_seconds, drafted.cpu_wait_seconds = 10.0, 5.0
    config = ConfigResult(2, 2, drafted, speedup_vs_hf=1.0, speedup_vs_no_draft=1.25, mismatched_prompts=[])
    line = verdict(BenchReport(meta={}, hf=timed_run(400, 40.0, 400, prompts=4), no_draft=plain, configs=[config]))
    assert line.startswith("too close to call") and "more prompts" not in line, line
    assert line.endswith("over 4 prompts) (unreliable: the machine was busy during timing: rerun on a quiet "
                         "machine)"), line


def hand_run(tokens: list[int], seconds: list[float], steps: list[int] | None = None) -> Run:
    """A run of one prompt per entry: its new tokens, wall seconds and steps (the tokens: plain decoding)."""
    run = Run()
    for k, s, n in zip(tokens, seconds, steps or tokens):
        run.add([0] * k, Timing(s), n, {1: n - 1})
    return run


def test_the_verdict_judges_the_speedup_it_prints():
    """A review: 2 long answers where drafting gains 1.5x, 60 short ones where it loses 5%. The table and `best:` said
    1.04x over no drafting (total tokens over total time), the verdict judged the geometric mean of per-prompt ratios
    (0.96x) and said 'does not pay'. Now its interval is on the printed speed-up, centred on it."""
    from redrafter_trt.bench_report import best_line

    tokens = [96, 96] + [10] * 60
    plain_s = [4.8, 4.8] + [0.5 + 0.01 * (i % 3 - 1) for i in range(60)]
    drafted_s = [3.2, 3.2] + [s / 0.95 for s in plain_s[2:]]
    plain, drafted = hand_run(tokens, plain_s), hand_run(tokens, drafted_s, [64, 64] + [10] * 60)
    hf = hand_run(tokens, [2 * s for s in plain_s])
    total = drafted.tokens_per_second / plain.tokens_per_second
    config = ConfigResult(1, 2, drafted, drafted.speedup(hf).ratio, drafted.speedup(plain).ratio, [])
    report = BenchReport(meta={}, hf=hf, no_draft=plain, configs=[config])
    margin = report.vs_no_draft(config)
    assert margin.ratio == pytest.approx(total) == pytest.approx(config.speedup_vs_no_draft)
    assert f"{total:.2f}x over no drafting (95% interval" in best_line(report), best_line(report)
    assert "per prompt" not in best_line(report)
    line = verdict(report)
    assert f"({total:.2f}x the runtime without drafting, 95% interval {margin.low:.2f}-" in line, line
    assert "does not pay" not in line and margin.low < total < margin.high


def test_the_interval_is_the_ratio_estimators_with_students_t():
    """Three prompts, the drafted run's seconds x and the baseline's y (the same tokens): R = sum(y) / sum(x), its
    linearised standard error and t(0.975, 2 df), on log R (an interval above 0 however noisy). Where the answers'
    lengths differ, R is still the two tokens-per-second figures' ratio (a review: the baseline's seconds scaled
    prompt by prompt printed 2.60x beside a tokens/s column whose ratio was 2.559)."""
    import math

    from scipy.stats import t

    from redrafter_trt.bench_stats import ratio_interval

    x, y = [1.0, 2.0, 3.0], [1.1, 2.4, 3.0]
    r = sum(y) / sum(x)
    se = math.sqrt(sum((b - r * a) ** 2 for a, b in zip(x, y)) / 2 / 3) / 2.0
    got = ratio_interval(x, [10, 10, 10], y, [10, 10, 10])
    spread = math.exp(4.3027 * se / r)
    assert (got.ratio, got.low, got.high) == pytest.approx((r, r / spread, r * spread), rel=1e-4)
    unequal = ratio_interval(x, [10, 20, 10], [1.1, 1.2, 3.0], [10, 11, 9])  # transformers stopped elsewhere
    assert unequal.ratio == pytest.approx((40 / sum(x)) / (30 / sum([1.1, 1.2, 3.0])))
    noisy = ratio_interval([1.0, 1.0, 1.0], [10] * 3, [0.1, 1.0, 9.0], [10] * 3)
    assert 0 < noisy.low < noisy.ratio < noisy.high  # a symmetric interval went below 0 (clamped to 0.00x)
    three = ratio_interval(x, [10, 10, 10], y, [10, 10, 10], configurations=3)
    assert three.high == pytest.approx(r * math.exp(t.ppf(1 - 0.025 / 3, 2) * se / r))
    assert three.to_json()["level"] == pytest.approx(1 - 0.05 / 3)
    assert all(type(v) is float for v in (three.ratio, three.low, three.high))  # plain floats, not numpy's
    two = ratio_interval([1.0, 2.0], [10, 10], [1.1, 2.4], [10, 10])  # two prompts: one degree of freedom
    r2 = 3.5 / 3.0
    se2 = math.sqrt(sum((b - r2 * a) ** 2 for a, b in ((1.0, 1.1), (2.0, 2.4))) / 1 / 2) / 1.5
    assert two.high == pytest.approx(r2 * math.exp(t.ppf(0.975, 1) * se2 / r2))


def test_best_is_judged_at_a_level_for_every_configuration_it_was_picked_from():
    """A review: `best` is the fastest of the grid's configurations, so a plain 95% interval on it said 'pays' for a
    grid as fast as plain decoding 10% of the time with 6 configurations, 19% with 20 (2.5% nominal). Its interval
    takes t at 1 - 0.025 / k over the k configurations eligible for `best`, and says so."""
    from redrafter_trt.bench_report import best_line

    plain = timed_run(400, 20.0, 400, prompts=4)
    configs = [ConfigResult(w, 2, timed_run(240, 16.0, 400, prompts=4, spread=(0.9, 1.1)), 1.0, 1.25, [])
               for w in (1, 2, 4)]
    configs.append(ConfigResult(8, 2, timed_run(240, 16.0, 400, prompts=4), 1.0, 1.25, [1]))  # differs: not eligible
    report = BenchReport(meta={"dtype": "float32"}, hf=timed_run(400, 40.0, 400, prompts=4), no_draft=plain,
                         configs=configs)
    alone = configs[0].run.speedup(plain)
    margin = report.vs_no_draft(report.best)
    assert margin.low < alone.low and margin.high > alone.high
    assert f"interval {margin.low:.2f}-{margin.high:.2f}x over 4 prompts, 95% over the 3 configurations" in \
        verdict(report)
    assert "95% over the 3 configurations" in best_line(report)
    interval = report.to_json()["best"]["speedup_vs_no_draft_interval"]
    assert (interval["configurations"], interval["level"]) == (3, pytest.approx(1 - 0.05 / 3))


def test_the_json_keeps_each_prompts_timing(report):
    """The interval's inputs are in the JSON: each method's per-prompt seconds and tokens, summing to its totals."""
    data, stdout = report
    for c in [*data["configs"], data["baselines"]["no_draft"], data["baselines"]["hf"]]:
        assert len(c["prompt_seconds"]) == len(PROMPTS) and sum(c["prompt_seconds"]) == pytest.approx(c["wall_seconds"])
        assert sum(c["prompt_new_tokens"]) == c["new_tokens"]
    for c in data["configs"]:
        for key in ("speedup_vs_no_draft_interval", "speedup_vs_hf_interval"):
            i = c[key]
            assert i["prompts"] == len(PROMPTS) and i["low"] <= i["ratio"] <= i["high"]
    best = next(line for line in stdout.splitlines() if line.startswith("best: "))
    assert "x over no drafting (interval " in best and "95% over the 4 configurations" in best, best


def test_verdict_names_a_drafter_that_accepts_nothing():
    """1.01 tokens/step: a faster timing than plain decoding is noise, not drafting paying (TensorRT-LLM #2155)."""
    plain, drafted = timed_run(100, 5.0, 100), timed_run(99, 4.5, 100)
    config = ConfigResult(1, 2, drafted, speedup_vs_hf=1.0, speedup_vs_no_draft=5.0 / 4.5, mismatched_prompts=[])
    line = verdict(BenchReport(meta={}, hf=timed_run(100, 10.0, 100), no_draft=plain, configs=[config]))
    assert line.startswith("the drafter accepts almost nothing") and "1.01 tokens" in line and "--distill" in line


def test_a_drafter_accepting_more_in_another_configuration_than_the_best_is_not_said_to_accept_nothing():
    """The best configuration (the fastest) makes 1.0 tokens a step, another 1.6: the drafter does accept tokens."""
    plain = timed_run(100, 5.0, 100)
    fastest = ConfigResult(1, 1, timed_run(100, 2.5, 100), speedup_vs_hf=4.0, speedup_vs_no_draft=2.0,
                           mismatched_prompts=[])
    accepting = ConfigResult(2, 2, timed_run(62, 6.0, 100), speedup_vs_hf=1.6, speedup_vs_no_draft=5.0 / 6.0,
                             mismatched_prompts=[])
    report = BenchReport(meta={}, hf=timed_run(100, 10.0, 100), no_draft=plain, configs=[fastest, accepting])
    assert report.best is fastest and fastest.run.mean_tokens_per_step == 1.0
    assert "accepts almost nothing" not in verdict(report)


def test_the_transformers_row_compares_it_to_plain_decoding():
    """transformers 10 s, plain decoding 5 s for the same tokens: transformers runs at 0.50x plain decoding."""
    from redrafter_trt.bench_report import format_table

    report = BenchReport(meta={}, hf=timed_run(100, 10.0, 100), no_draft=timed_run(100, 5.0, 100), configs=[])
    hf_row, plain_row = (line.split() for line in format_table(report).splitlines()[2:4])
    assert hf_row[0] == "transformers" and hf_row[4] == "0.50"
    assert plain_row[:2] == ["no", "draft"] and plain_row[4] == "2.00"



@pytest.mark.parametrize("dtype, why", [("float32", "a bug"), ("bfloat16", "bfloat16 logits tie often")])
def test_best_and_the_verdict_take_only_configurations_that_match_plain_decoding(dtype, why):
    """A review (bfloat16, 5 prompts): W=4 L=2, its output differing from plain decoding on 3 of them, was `best` and
    got 'drafting pays here', though its tokens/s were measured on text the baselines never produced."""
    plain = timed_run(100, 5.0, 100, prompts=4)
    exact = ConfigResult(1, 2, timed_run(80, 6.0, 100, prompts=4), 1.0, 5.0 / 6.0, [])
    differs = ConfigResult(4, 2, timed_run(60, 3.0, 100, prompts=4), 2.0, 5.0 / 3.0, [1, 3])
    report = BenchReport(meta={"dtype": dtype}, hf=timed_run(100, 10.0, 100, prompts=4), no_draft=plain,
                         configs=[exact, differs])
    assert report.best is exact
    data = report.to_json()
    assert (data["best"]["num_beams"], data["best"]["draft_len"]) == (1, 2)
    [left_out] = data["excluded_from_best"]
    assert (left_out["num_beams"], left_out["draft_len"], left_out["mismatched_prompts"]) == (4, 2, [1, 3])
    assert "differs from plain decoding" in left_out["why"] and why in left_out["why"]
    line = verdict(report)
    assert "drafting pays" not in line and "W=1 L=2 step" in line and "left out: W=4 L=2" in line
    assert why in mismatch_warning(report) and "left out of `best` and the verdict" in mismatch_warning(report)
    exact.mismatched_prompts = [2]  # none matches: no verdict, said plainly
    assert report.best is None and report.to_json()["best"] is None
    line = verdict(report)
    assert line.startswith("no verdict: no configuration's output matches plain decoding") and why in line
    assert "pays" not in line


def test_bench_prints_the_mismatch_before_the_verdict(setup, monkeypatch):
    """The warning that a configuration's output differs came after 'drafting pays here', on stderr: now before the
    `best:` line, which names only a configuration that matches."""
    from redrafter_trt import bench

    real = bench.runtime_generate

    def runtime_generate(model, ids, *args):
        result, timing = real(model, ids, *args)
        if args[2] == 2:  # W=2 differs on every prompt
            result.output_ids[0][-1] = (result.output_ids[0][-1] + 1) % 256
        return result, timing

    monkeypatch.setattr(bench, "runtime_generate", runtime_generate)
    result = run_cli(*bench_args(setup, "--max-new-tokens", 4, "--beams", "1,2", "--draft-lens", 1))
    assert result.exit_code == 0, result.output
    out = result.output
    out = result.stdout  # in order there, piped as well as in a terminal
    assert out.index("warning: drafted output differs") < out.index("best: W=1 L=1") < out.index("left out: W=2 L=1")


def test_each_prompt_starts_the_methods_at_another_one(setup, monkeypatch):
    """A review: every prompt timed transformers, plain decoding, then each (W, L) in grid order, so the grid's last
    configuration always ran last: a position bias pairing neither removes nor shows. Prompt i starts at method
    i mod m."""
    from redrafter_trt import bench

    calls = []
    hf_generate, runtime_generate = bench.hf_generate, bench.runtime_generate

    def hf_recorded(model, ids, *args):
        calls.append("hf")
        return hf_generate(model, ids, *args)

    def runtime_recorded(model, ids, max_new_tokens, eos, w, n, use_draft):
        calls.append(f"W={w} L={n}" if use_draft else "plain")
        return runtime_generate(model, ids, max_new_tokens, eos, w, n, use_draft)

    monkeypatch.setattr(bench, "hf_generate", hf_recorded)
    monkeypatch.setattr(bench, "runtime_generate", runtime_recorded)
    base, ckpt, prompts = setup
    bench.run_bench(bench.BenchOptions(ckpt, base, prompts, max_new_tokens=2, beams=(1, 2), draft_lens=(1,)))
    methods = ["hf", "plain", "W=1 L=1", "W=2 L=1"]
    assert calls[:4] == methods  # the warm-up
    assert calls[4:] == [*methods, *methods[1:], methods[0], *methods[2:], *methods[:2]], calls


def test_verdict_says_when_no_drafted_step_ran():
    """--max-new-tokens 1: every answer is the prefill's token, no draft is ever tried; the verdict said 'the drafter
    accepts almost nothing ... train it longer'."""
    plain, drafted = timed_run(3, 0.3, 3, {}), timed_run(3, 0.3, 3, {})
    config = ConfigResult(4, 2, drafted, speedup_vs_hf=1.0, speedup_vs_no_draft=1.0, mismatched_prompts=[])
    line = verdict(BenchReport(meta={}, hf=timed_run(3, 0.6, 3), no_draft=plain, configs=[config]))
    assert line.startswith("no drafted step ran") and "--max-new-tokens" in line


def test_bench_stops_on_the_tokenizer_folders_generation_config_as_acceptance_does(setup, report, tmp_path):
    """bench took its stop tokens from the transformers baseline's folder, acceptance and run from --tokenizer-dir:
    with a generation_config.json beside the tokenizer alone, bench ran past a stop token acceptance stopped at."""
    import shutil

    from redrafter_trt import runtime as rt
    from redrafter_trt.tokens import encode_prompts, load_tokenizer

    base, ckpt, prompts = setup
    tokenizer_dir = tmp_path / "tok"
    shutil.copytree(base, tokenizer_dir, ignore=shutil.ignore_patterns("*.safetensors", "generation_config.json"))
    ids = encode_prompts(load_tokenizer(str(base), None), PROMPTS[:1], None)
    stop = rt.generate(rt.load(ckpt), ids, 4, use_draft=False).output_ids[0][1]  # the base's second token
    (tokenizer_dir / "generation_config.json").write_text(json.dumps({"eos_token_id": stop}))
    counts, walks = {}, {}
    for cmd in ("bench", "acceptance"):
        out = tmp_path / f"{cmd}.json"
        hf = ("--hf-dir", base) if cmd == "bench" else ()
        result = run_cli(cmd, "--checkpoint-dir", ckpt, "--tokenizer-dir", tokenizer_dir, "--prompts", prompts, *hf,
                         "--max-new-tokens", 12, "--draft-lens", "1", "--beams", "1", "--output-json", out)
        assert result.exit_code == 0, result.output
        data = json.loads(out.read_text())
        counts[cmd] = data["configs"][0]["new_tokens"]
        walks[cmd] = data["configs"][0]["steps"], data["configs"][0]["histogram"]
        if cmd == "bench":  # transformers stops at that token too, with the same tokens
            b = data["baselines"]
            assert (b["hf"]["new_tokens"], b["hf_matches_no_draft"]) == (b["no_draft"]["new_tokens"], len(PROMPTS))
    everything = next(c for c in report[0]["configs"] if c["draft_len"] == 1)["new_tokens"]
    assert counts["bench"] == counts["acceptance"] < everything, (counts, everything)
    assert walks["bench"] == walks["acceptance"], walks  # stops mid-answer, drafts accepted


def test_the_transformers_baseline_ignores_the_bases_sampling_and_penalty_settings(setup, tmp_path):
    """A review: `generate` fills every field bench's GenerationConfig leaves unset from the base's
    generation_config.json, so a base shipping a repetition_penalty (Qwen2.5 Instruct: 1.05) made the greedy
    transformers baseline decode other tokens (0/3 prompts agreed with the runtime here) and other counts."""
    import shutil

    base, ckpt, prompts = setup
    penalised = tmp_path / "base"
    shutil.copytree(base, penalised)
    gen = json.loads((base / "generation_config.json").read_text())
    gen.update(repetition_penalty=1.5, do_sample=True, temperature=0.7, top_k=20)
    (penalised / "generation_config.json").write_text(json.dumps(gen))
    out = tmp_path / "bench.json"
    result = run_cli(*bench_args(setup, "--hf-dir", penalised, "--max-new-tokens", 12, "--beams", 1, "--draft-lens", 1,
                                 "--output-json", out))
    assert result.exit_code == 0, result.output
    baselines = json.loads(out.read_text())["baselines"]
    assert baselines["hf_matches_no_draft"] == len(PROMPTS)
    assert baselines["hf"]["new_tokens"] == baselines["no_draft"]["new_tokens"]


def test_differing_outputs_are_reported(setup, monkeypatch, caplog):
    """The exactness checks compare tokens: a drafted output that differs from plain decoding on some prompts, and a
    transformers output that differs from the runtime's, are both counted (the fixture's agree everywhere); the
    warnings count prompts and configurations in the singular or the plural (they said 'prompt(s)',
    'configuration(s)'), and name the prompts by the numbers the progress lines give them."""
    from redrafter_trt import bench

    base, ckpt, prompts = setup
    real_hf, real_rt = bench.hf_generate, bench.runtime_generate
    calls = {"hf": 0}

    def hf_generate(model, ids, *args):
        out, seconds = real_hf(model, ids, *args)
        calls["hf"] += 1
        return (out[:-1] + [(out[-1] + 1) % 256] if calls["hf"] == 3 else out), seconds  # prompt 2 (after warm-up)

    def runtime_generate(model, ids, *args):
        result, seconds = real_rt(model, ids, *args)
        if ids in {1: prompt_ids[:2], 2: prompt_ids[:1]}.get(args[2], []):  # W=1: prompts 0 and 1 altered, W=2: 0
            result.output_ids[0][-1] = (result.output_ids[0][-1] + 1) % 256
        return result, seconds

    from redrafter_trt.tokens import encode_prompts, load_tokenizer
    prompt_ids = encode_prompts(load_tokenizer(str(base), None), PROMPTS, None)
    monkeypatch.setattr(bench, "hf_generate", hf_generate)
    monkeypatch.setattr(bench, "runtime_generate", runtime_generate)
    report = bench.run_bench(bench.BenchOptions(ckpt, base, prompts, max_new_tokens=4, beams=(1, 2), draft_lens=(1,)))
    # numbered from 1, as the progress lines number them (`prompt 1/3`): the JSON and the warning said [0, 1]
    assert {c.num_beams: c.mismatched_prompts for c in report.configs} == {1: [1, 2], 2: [1]}
    assert report.hf_matches_no_draft == len(PROMPTS) - 1
    assert report.to_json()["all_match_no_draft"] is False
    assert [c["mismatched_prompts"] for c in report.to_json()["configs"]] == [[1, 2], [1]]
    assert [r.getMessage() for r in caplog.records if "differs" in r.getMessage()] == [
        "W=1 L=1: drafted output differs from plain decoding on 2 prompts [1, 2]",
        "W=2 L=1: drafted output differs from plain decoding on 1 prompt [1]"]
    assert mismatch_warning(report).startswith("warning: drafted output differs from plain decoding in 2 "
                                               "configurations, left out of `best` and the verdict (in float32 "
                                               "that is a bug")
    report.configs[0].mismatched_prompts = []
    assert mismatch_warning(report).startswith("warning: drafted output differs from plain decoding in 1 "
                                               "configuration, left out")
    report.configs[1].mismatched_prompts = []
    assert mismatch_warning(report) is None


def test_every_configuration_is_warmed_before_any_timed_call(setup, monkeypatch):
    """A review: the warm-up ran transformers, plain decoding and only the largest (W, L), so every other
    configuration's first timed call paid a warm-up (a compile's shapes, a GPU's kernel choice) the others did not."""
    from redrafter_trt import bench

    base, ckpt, prompts = setup
    real, calls = bench.runtime_generate, []

    def runtime_generate(model, ids, max_new_tokens, eos, num_beams, draft_len, use_draft):
        calls.append((max_new_tokens, num_beams, draft_len, use_draft))
        return real(model, ids, max_new_tokens, eos, num_beams, draft_len, use_draft)

    monkeypatch.setattr(bench, "runtime_generate", runtime_generate)
    bench.run_bench(bench.BenchOptions(ckpt, base, prompts, num_prompts=1, max_new_tokens=12, beams=(1, 2),
                                       draft_lens=(1, 3)))
    warm = calls[:[c[0] for c in calls].index(12)]  # every call before the first timed one (12 tokens, not 8)
    assert {c[1:] for c in warm} == {(0, 0, False), (1, 1, True), (2, 1, True), (1, 3, True), (2, 3, True)}
    assert len(warm) == 5 and all(c[0] == bench.WARMUP_TOKENS for c in warm)


def test_a_checkpoint_cut_short_under_the_weight_check_is_re_converted(setup, tmp_path):
    """bench's weight check reads a few rows of the checkpoint's rank0 through TensorSource.from_files, whose fix is a
    download's unless named (2ca06c2): a rank0 cut short after require_valid read it (a copy still going on) was
    told 're-download or re-export it'; convert wrote it, so it is re-converted, as inspect says."""
    import shutil

    from redrafter_trt.errors import TensorError

    base, ckpt, _ = setup
    copy = Path(shutil.copytree(ckpt, tmp_path / "ck"))
    rank0 = copy / "rank0.safetensors"
    rank0.write_bytes(rank0.read_bytes()[:-8])
    with pytest.raises(TensorError, match=r"rank0\.safetensors is truncated .*: re-convert it$"):
        resolve_hf_dir(base, json.loads((copy / "config.json").read_text()), copy)


def test_a_lora_merged_into_an_early_v_proj_alone_is_refused_as_the_baseline(setup, tmp_path):
    """A review: bench compared rows of lm_head and of the last layer's q_proj and down_proj alone, so a base with a
    LoRA merged into other linears (v_proj, the early layers) was timed as the transformers baseline; every linear of
    the first, middle and last layers is compared now."""
    from tinymodels import lora_merged

    base, ckpt, _ = setup
    tuned = lora_merged(tmp_path, base, "model.layers.0.self_attn.v_proj.weight", scale=0.05)
    raw = json.loads((ckpt / "config.json").read_text())
    with pytest.raises(ConfigError, match="its model.layers.0.self_attn.v_proj.weight is not"):
        resolve_hf_dir(tuned, raw, ckpt)
    assert resolve_hf_dir(base, raw, ckpt) == base


@pytest.mark.parametrize("command", ["run", "bench", "acceptance"])
def test_a_checkpoint_is_inspected_once_a_command(setup, command, monkeypatch):
    """The runtime's loading entry points inspect the checkpoint they are given (its rank files' headers, rows of its
    drafter head); a command inspects it first, to refuse it before the tokenizer and models load, and hands on the
    opened checkpoint, which is not inspected again (bench and acceptance inspected it twice before they loaded it)."""
    from redrafter_trt import checkpoint

    seen = []
    monkeypatch.setattr(checkpoint, "inspect_checkpoint", lambda *a, _inspect=checkpoint.inspect_checkpoint, **k:
                        seen.append(a) or _inspect(*a, **k))
    base, ckpt, prompts = setup
    given = (["--input-text", "hi", "--max-output-len", 2] if command == "run" else
             ["--prompts", prompts, "--num-prompts", 1, "--max-new-tokens", 2, "--draft-lens", 1])
    result = run_cli(command, "--checkpoint-dir", ckpt, "--tokenizer-dir", base, *given)
    assert result.exit_code == 0, result.output
    assert len(seen) == 1, seen


def test_the_bases_rows_are_compared_once_a_bench(setup, monkeypatch):
    """bench compared the base's sampled rows with the checkpoint's twice: in the command (to name the base among the
    files its outputs may not replace) and again in run_bench. Once now, in each way bench runs: the command's, and
    run_bench alone (the quickstart's); nothing is timed, the baseline's loading stops each."""
    from redrafter_trt import bench, bench_inputs

    seen = []
    monkeypatch.setattr(bench_inputs, "check_same_weights", lambda *a, _check=bench_inputs.check_same_weights:
                        seen.append(a[3]) or _check(*a))

    def stop(*args):
        raise ConfigError("stopped where the baseline loads")

    monkeypatch.setattr(bench, "load_hf_baseline", stop)
    base, ckpt, prompts = setup
    assert_one_line_error(run_cli(*bench_args(setup, "--num-prompts", 1)), "stopped where the baseline loads")
    assert seen == [base], seen
    with pytest.raises(ConfigError, match="stopped where the baseline loads"):
        bench.run_bench(bench.BenchOptions(ckpt, base, prompts, num_prompts=1))
    assert seen == [base, base], seen


def fake_scheduler(monkeypatch, wait_per_call: float):
    """bench's scheduler clock faked: every reading adds 1 s running and `wait_per_call` s waiting for a core, so each
    timed call (read before and after) waits wait / (1 + wait) of its runnable time."""
    from redrafter_trt import bench

    clock = {"run": 0.0, "wait": 0.0}

    def sched_seconds():
        clock["run"] += 1.0
        clock["wait"] += wait_per_call
        return clock["run"], clock["wait"]

    monkeypatch.setattr(bench, "sched_seconds", sched_seconds)


@pytest.mark.parametrize("wait, busy", [(0.01, False), (0.5, True)])
def test_timings_disturbed_by_other_processes_are_said(setup, monkeypatch, wait, busy):
    """On a shared machine other processes took the cores during timing: a quickstart printed 5.29x the runtime
    without drafting ('a W=2 L=2 step costs 0.26x a plain one') beside a W=4 L=2 row at 0.95x, and nothing said the
    figures were noise. The share of runnable time spent waiting for a core is recorded per method, and above
    BUSY_WAIT_SHARE a line after the table and the verdict say so."""
    from redrafter_trt import bench
    from redrafter_trt.bench_report import BUSY_WAIT_SHARE, format_table

    base, ckpt, prompts = setup
    fake_scheduler(monkeypatch, wait)
    report = bench.run_bench(bench.BenchOptions(ckpt, base, prompts, max_new_tokens=4, beams=(1,), draft_lens=(1,)))
    share = wait / (1 + wait)
    data = report.to_json()
    for method in (data["baselines"]["hf"], data["baselines"]["no_draft"], *data["configs"]):
        assert method["cpu_wait_share"] == pytest.approx(share)
        assert method["cpu_seconds"] == pytest.approx(len(PROMPTS)) and method["wall_seconds"] > 0
    last = format_table(report).splitlines()[-1]
    line = verdict(report)
    if busy:
        assert share > BUSY_WAIT_SHARE
        assert last.startswith("warning: the machine was busy during timing") and f"{share:.0%}" in last
        assert all(w in last for w in ("unreliable", "tokens/step", "not affected", "quiet machine")), last
        assert "unreliable" in line and "busy" in line
    else:
        assert share < BUSY_WAIT_SHARE
        assert last.startswith("W=1 L=1") and "busy" not in line


def test_no_scheduler_clock_says_nothing(setup, monkeypatch):
    """Where the kernel keeps no per-thread scheduler figures (not Linux): nothing is known, nothing is claimed."""
    from redrafter_trt import bench
    from redrafter_trt.bench_report import format_table

    base, ckpt, prompts = setup
    monkeypatch.setattr(bench, "sched_seconds", lambda: None)
    report = bench.run_bench(bench.BenchOptions(ckpt, base, prompts, max_new_tokens=4, beams=(1,), draft_lens=(1,)))
    assert report.to_json()["baselines"]["hf"]["cpu_wait_share"] is None
    assert "busy" not in format_table(report) + verdict(report)


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="Linux's /proc/self/task/*/schedstat")
def test_the_scheduler_clock_reads_this_process():
    """The real reader (the tests above fake it): this process's threads' running seconds grow with work done."""
    from redrafter_trt.bench import sched_seconds

    run, wait = sched_seconds()
    sum(range(10**6))
    run2, wait2 = sched_seconds()
    assert run2 > run > 0 and wait2 >= wait >= 0


def test_the_busiest_method_is_named():
    """The line names the method whose threads waited most, and how much; the verdict keeps its figures and says it
    is unreliable."""
    from redrafter_trt.bench_report import busy_warning

    plain, drafted = timed_run(100, 5.0, 100, prompts=4), timed_run(60, 4.0, 100, prompts=4, spread=(0.99, 1.01))
    plain.cpu_seconds, plain.cpu_wait_seconds = 9.0, 1.0      # 10% waiting
    drafted.cpu_seconds, drafted.cpu_wait_seconds = 6.0, 4.0  # 40%: the worst
    config = ConfigResult(2, 2, drafted, speedup_vs_hf=1.0, speedup_vs_no_draft=5.0 / 4.0, mismatched_prompts=[])
    report = BenchReport(meta={}, hf=timed_run(100, 10.0, 100, prompts=4), no_draft=plain, configs=[config])
    assert "40% of the time" in busy_warning(report) and "(W=2 L=2;" in busy_warning(report)
    plain.cpu_seconds, plain.cpu_wait_seconds = 9.9, 0.1      # 1%: quiet while plain decoding was timed
    assert "40% of the time" in busy_warning(report) and "(W=2 L=2;" in busy_warning(report)
    line = verdict(report)
    assert line.startswith("drafting pays here: a W=2 L=2 step costs") and line.endswith(
        "(unreliable: the machine was busy during timing: rerun on a quiet machine)")


@pytest.mark.parametrize("dtype, quant_algo, note", [
    ("bfloat16", "FP8", "transformers runs the unquantised base"),
    ("bfloat16", None, "bfloat16 logits tie often"),
    ("float32", None, None),
])
def test_a_baseline_that_differs_says_why_where_it_may(dtype, quant_algo, note):
    """A walkthrough: bench on an FP8 checkpoint said `transformers and the runtime agree on 2/3 prompts` and no more,
    though its transformers baseline is the unquantised base, which FP8 weights depart from now and then."""
    from redrafter_trt.bench_report import baseline_note

    hf, plain = Run(), Run()
    for a, b in (([1, 2], [1, 2]), ([3, 4], [3, 5])):
        hf.add(a, Timing(1.0), 2, {1: 1})
        plain.add(b, Timing(1.0), 2, {1: 1})
    report = BenchReport(meta={"dtype": dtype, "quant_algo": quant_algo, "num_prompts": 2}, hf=hf, no_draft=plain,
                         configs=[])
    assert report.hf_matches_no_draft == 1
    assert (baseline_note(report) or None) is None if note is None else note in baseline_note(report)
    plain.outputs[1] = [3, 4]  # every prompt agrees: nothing to explain
    assert baseline_note(report) == ""


def test_without_scipy_bench_is_refused_before_any_timing(setup, monkeypatch):
    """A review: scipy was first imported for the table, after every timed run (an hour with --compile), so an
    environment installed before it became a dependency lost the whole run to a traceback."""
    monkeypatch.setitem(sys.modules, "scipy", None)  # `import scipy` raises ImportError
    monkeypatch.setitem(sys.modules, "scipy.stats", None)
    monkeypatch.setattr("redrafter_trt.runtime.load", lambda *a, **k: pytest.fail("timed without scipy"))
    assert_one_line_error(run_cli(*bench_args(setup, "--max-new-tokens", 4)),
                          "bench's speed-up intervals need scipy: run `pip install scipy`")


def test_num_prompts_takes_prompts_spread_over_the_file():
    """A review: --num-prompts K took the file's first K, and MT-Bench is sorted by category: 20 of its 80 were
    writing and roleplay alone, a verdict on two categories. K now spread evenly over the file, in its order, the
    quickstart's questions too (one way to pick prompts)."""
    from redrafter_trt.prompts import spread_indices
    from redrafter_trt.quickstart import pick_questions

    assert spread_indices(80, 20) == list(range(0, 80, 4))  # every category's share: 10 questions each, 2 taken
    assert spread_indices(80, 8) == list(range(0, 80, 10))
    assert spread_indices(6, 3) == [0, 2, 4] and spread_indices(80, 1) == [0]
    assert spread_indices(3, 3) == spread_indices(3, 80) == spread_indices(3, None) == [0, 1, 2]
    for n, k in ((80, 3), (7, 5), (80, 79)):  # distinct, in file order, within the file
        taken = spread_indices(n, k)
        assert taken == sorted(set(taken)) and len(taken) == k and taken[-1] < n
    questions = [f"q{i}" for i in range(80)]
    assert pick_questions(questions, 3) == [questions[i] for i in spread_indices(80, 3)]


@pytest.mark.parametrize("cmd", ["bench", "acceptance"])
def test_the_prompts_taken_are_recorded_and_said(setup, cmd, tmp_path):
    """Which prompts --num-prompts took: the JSON's meta.prompt_indices (from 0, in the file's order) and the header
    ("3 of 6 prompts, spread over the file")."""
    base, ckpt, _ = setup
    six, out = tmp_path / "six.txt", tmp_path / "out.json"
    six.write_text("".join(f"{p} {i}\n" for i, p in enumerate(PROMPTS * 2)))
    result = run_cli(cmd, "--checkpoint-dir", ckpt, "--tokenizer-dir", base, "--prompts", six, "--num-prompts", 3,
                     "--max-new-tokens", 2, "--beams", 1, "--draft-lens", 1, "--output-json", out)
    assert result.exit_code == 0, result.output
    meta = json.loads(out.read_text())["meta"]
    assert (meta["prompt_indices"], meta["num_prompts"], meta["prompts_in_file"]) == ([0, 2, 4], 3, 6)
    assert result.stdout.startswith("3 of 6 prompts, spread over the file, up to 2 new tokens"), result.stdout
    full = tmp_path / "full.json"
    result = run_cli(cmd, "--checkpoint-dir", ckpt, "--tokenizer-dir", base, "--prompts", six, "--max-new-tokens", 2,
                     "--beams", 1, "--draft-lens", 1, "--output-json", full)
    assert result.stdout.startswith("6 prompts, up to 2 new tokens"), result.stdout
    assert json.loads(full.read_text())["meta"]["prompt_indices"] == list(range(6))


def test_timings_with_no_spread_give_no_interval():
    """Identical per-prompt speed-ups (timings never agree so) made a zero-width interval, '1.25-1.25x', and the
    verdict 'drafting pays here' on it: certainty measured from nothing. Now no interval, as from one prompt, and too
    close to call; seconds that read 0 divide nothing by zero."""
    from redrafter_trt.bench_stats import ratio_interval

    same = ratio_interval([1.0, 2.0, 3.0], [10] * 3, [1.1, 2.2, 3.3], [10] * 3)
    assert same.ratio == pytest.approx(1.1) and (same.low, same.high) == (None, None)
    assert same.interval_text() == "no interval: no spread over 3 prompts"
    two = ratio_interval([1.0, 2.0], [10] * 2, [1.1, 2.2], [10] * 2)  # the fewest prompts that could spread
    assert (two.low, two.high) == (None, None) and two.interval_text() == "no interval: no spread over 2 prompts"
    assert ratio_interval([5.0], [10], [6.0], [10]).interval_text("question") == "no interval from 1 question"
    zero = ratio_interval([0.0, 0.0], [10, 10], [0.0, 0.0], [10, 10])
    assert (zero.low, zero.high) == (None, None)
    plain, drafted = timed_run(400, 20.0, 400, prompts=4), timed_run(240, 16.0, 400, prompts=4)
    config = ConfigResult(2, 2, drafted, speedup_vs_hf=1.0, speedup_vs_no_draft=1.25, mismatched_prompts=[])
    line = verdict(BenchReport(meta={}, hf=timed_run(400, 40.0, 400, prompts=4), no_draft=plain, configs=[config]))
    assert line.endswith("(1.25x the runtime without drafting, no interval: no spread over 4 prompts): the same "
                         "speed-up on every prompt gives no noise estimate: measure more prompts (--num-prompts)"), line


def test_an_interval_from_two_far_apart_prompts_prints_its_bounds_not_zero():
    """A README walk: two prompts (t at 1 degree of freedom) printed 'interval 0.00-25168246306.00x': a low bound of
    4.9e-12 shown as zero, the high one as an 11-digit number. Bounds outside 0.01-1000 print in two figures."""
    from redrafter_trt.bench_stats import RatioInterval

    assert RatioInterval(1.3, 4.9e-12, 2.5168e10, 2).interval_text() == "95% interval 4.9e-12 to 2.5e+10x over 2 prompts"
    assert RatioInterval(1.1, 0.98, 1.17, 3).interval_text() == "95% interval 0.98-1.17x over 3 prompts"
    assert RatioInterval(float("nan"), None, None, 2).to_json()["ratio"] is None  # json.dumps would write NaN


def test_a_progress_line_numbers_a_prompt_of_its_file_without_naming_a_file():
    """A review: the quickstart printed 'prompt 2/3 (#27 in the file)' to a user who never named a file."""
    from redrafter_trt.bench_inputs import file_number

    assert file_number([0, 26, 53], 1, 80) == " (#27 of 80)"
    assert file_number([0, 1, 2], 1, 3) == ""  # every prompt taken: its number is the file's


def test_the_headline_is_best_even_where_an_excluded_configuration_is_faster():
    """`headline` (the configuration whose answers the quickstart shows) is `best` where one matches plain decoding,
    not a faster one left out for differing from it; where none matches, the fastest."""
    plain = timed_run(100, 5.0, 100, prompts=4)
    exact = ConfigResult(1, 2, timed_run(80, 4.0, 100, prompts=4), 2.5, 1.25, [])
    differs = ConfigResult(4, 2, timed_run(60, 3.0, 100, prompts=4), 3.3, 5.0 / 3.0, [1])
    report = BenchReport(meta={}, hf=timed_run(100, 10.0, 100, prompts=4), no_draft=plain, configs=[exact, differs])
    assert report.best is exact and report.headline is exact
    exact.mismatched_prompts = [2]
    assert report.best is None and report.headline is differs


@pytest.mark.parametrize("asked, warned", [(79, False), (80, False), (81, True)])
def test_num_prompts_up_to_the_files_count_is_not_said_to_be_more(asked, warned, caplog):
    """--num-prompts 80 on MT-Bench's 80 prompts takes them all without a word; 81 is said."""
    from redrafter_trt.bench_inputs import pick_prompts

    texts = [f"p{i}" for i in range(80)]
    with caplog.at_level("WARNING"):
        indices, taken = pick_prompts(texts, asked)
    assert len(indices) == min(asked, 80) and taken == [texts[i] for i in indices]
    assert ("but there are only 80 prompts" in caplog.text) is warned, caplog.text
