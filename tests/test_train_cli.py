"""`redrafter-trt train`: bad inputs exit 2 with one line; a good run writes a loadable drafter; --distill
captures the base's teacher-forced hidden states and reuses its cache."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from click.testing import CliRunner

from redrafter_trt.cli import main
from redrafter_trt.drafter import load_drafter
from test_train_data import make_chat_base
from tinymodels import make_hf


@pytest.fixture(scope="module")
def chat_base(tmp_path_factory):
    return make_chat_base(tmp_path_factory.mktemp("chat_base"))


@pytest.fixture
def prompts(tmp_path):
    p = tmp_path / "prompts.jsonl"
    p.write_text("\n".join(json.dumps({"prompt": q}) for q in ["Say hi.", "Count to 3.", "Name a fruit.", "Why?"]))
    return p


def _run(*args):
    return CliRunner().invoke(main, ["train", *map(str, args)])


def test_a_frozen_heads_exit_dim_refusal_names_a_width_it_takes(chat_base, tmp_path):
    """--freeze-head takes --exit-dim up to the hidden size or 2H (the base lm_head's); a drafter too large named the
    widest that fits whatever the head ("--exit-dim 107 or less"), which --freeze-head then refused in turn."""
    import re

    r = _run("--base", chat_base, "--data", tmp_path / "nope.jsonl", "--output", tmp_path / "out", "--freeze-head",
             "--num-draft-layers", "4", "--exit-dim", "128")
    assert r.exit_code == 2 and "makes a drafter of" in r.output, r.output
    width = re.search(r"use --exit-dim (\d+) or less", r.output)[1]
    r = _run("--base", chat_base, "--data", tmp_path / "nope.jsonl", "--output", tmp_path / "out", "--freeze-head",
             "--num-draft-layers", "4", "--exit-dim", width)
    assert r.exit_code == 2 and "nope.jsonl" in r.output, r.output  # past the size and the head: the data's turn


@pytest.mark.parametrize("case, match", [
    ("missing", "does not exist: pass jsonl, ShareGPT json or .txt prompt files to --data"),
    ("dangling", "data file {tmp}/link.jsonl is a symbolic link to {tmp}/gone.jsonl, which does not exist"),
    ("empty", "holds no records"),
    ("predict0", "--predict-n must be at least 1"),
    ("no_answers", "pass --distill"),
    ("soft2", "--soft-target must be within [0, 1]"),
    ("sharp", "--later-sharpness must be at least 1"),
    ("dtype", "Invalid value for '--base-dtype'"),
    ("distill_batch0", "--distill-batch-size must be at least 1"),
    ("device", "not a device this tool runs on"),
    ("decay", "--step-decay must be within (0, 1]"),
    ("base_json", "not valid JSON"),
    ("data_folder", "is a folder: pass jsonl, ShareGPT json or .txt prompt files to --data"),
    ("lr_inf", "--lr must be positive and finite (got inf)"),
    # AdamW's first step is lr / (1 - beta1) = 10 x lr: --lr 1e38 passed a float32 bound and was its overflow
    ("lr_past_float32", "--lr must be below 3.4e+37 (got 1e+38): AdamW's first step is 10x --lr"),
    ("lr_tiny", "--lr must be at least 1.2e-38 (got 1e-50): a smaller one is 0 or denormal in float32"),
    ("sharp_inf", "--later-sharpness must be at least 1 and finite (got inf)"),
    ("no_tokenizer", "has no usable tokenizer"),
    ("template", "record 1 of its JSON list: the base's chat template refuses it"),
    ("epochs_and_steps", "--epochs 3 has no effect with --max-steps 5, which sets the number of steps: leave one out"),
    ("frozen_random_head", "--freeze-head keeps the final projection at its init, which at --exit-dim 96 is random"),
    ("vocab", "tokens but the model's vocab_size is 64: it is another model's; copy the base's tokenizer files"),
    ("seq_len", "--max-seq-len 4096 is more than the base's 512 positions (max_position_embeddings): pass "
                "--max-seq-len 512 or less"),
    ("one_new_token", "--distill-max-new-tokens must be at least 2 (got 1): a draft step learns from 2 answer tokens"),
    ("one_new_token_held_out", "--distill-max-new-tokens must be at least 2 (got 1)"),
    ("huge_exit_dim", "--exit-dim 100000000 makes a drafter of"),
    ("nothing_to_train", "--freeze-head with --no-rnn and --num-draft-layers 0 at --exit-dim 128 leaves the drafter "
                         "nothing to train"),
])
def test_bad_inputs_exit_2_with_one_line(chat_base, prompts, tmp_path, case, match):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    if case == "dangling":  # said as missing, its target unnamed
        (tmp_path / "link.jsonl").symlink_to(tmp_path / "gone.jsonl")
        match = match.format(tmp=tmp_path)
    data = {"missing": tmp_path / "nope.jsonl", "empty": empty, "data_folder": tmp_path,
            "dangling": tmp_path / "link.jsonl"}.get(case, prompts)
    extra = {"predict0": ["--predict-n", "0"], "soft2": ["--soft-target", "2"],
             "sharp": ["--later-sharpness", "0.5"], "device": ["--device", "tpu"], "decay": ["--step-decay", "0"],
             "dtype": ["--base-dtype", "float16"], "distill_batch0": ["--distill-batch-size", "0"],
             "lr_inf": ["--lr", "inf"], "lr_past_float32": ["--lr", "1e38"],
             "lr_tiny": ["--lr", "1e-50"], "sharp_inf": ["--later-sharpness", "inf"],
             "template": ["--distill"],
             "epochs_and_steps": ["--epochs", "3", "--max-steps", "5"],
             "frozen_random_head": ["--freeze-head", "--exit-dim", "96", "--distill"],
             "seq_len": ["--max-seq-len", "4096", "--distill"],
             "one_new_token": ["--distill", "--distill-max-new-tokens", "1"],
             "one_new_token_held_out": ["--distill-max-new-tokens", "1"],  # the held-out answers' cap: none scored
             "huge_exit_dim": ["--exit-dim", "100000000"],
             # no recurrence, ResBlock or input_proj, and the head frozen: an optimizer's ValueError traceback once,
             # after the distillation
             "nothing_to_train": ["--freeze-head", "--no-rnn", "--num-draft-layers", "0", "--exit-dim", "128",
                                  "--distill"]}.get(case, [])
    base = chat_base
    if case in ("base_json", "no_tokenizer", "template", "vocab"):
        base = tmp_path / "base"
        shutil.copytree(chat_base, base)
    if case == "base_json":
        (base / "config.json").write_text("{not json")
    if case == "vocab":  # another model's tokenizer, with ids past this one's embedding: an IndexError traceback
        small = make_hf(tmp_path / "small", "llama", tie=True, vocab_size=64)  # config and weights agree: 64 tokens
        for name in ("config.json", "model.safetensors"):
            shutil.copy(small / name, base / name)
    if case == "no_tokenizer":  # a base folder with only its config and weights
        for f in base.glob("*"):
            if f.name not in ("config.json", "model.safetensors"):
                f.unlink()
    if case == "template":  # a template refusing the conversation: jinja's traceback once
        data = tmp_path / "sg.json"
        data.write_text(json.dumps([{"conversations": [{"from": "human", "value": "Hi you"}]}]))
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(base)
        tok.chat_template = ("{% if messages[0]['content'] == 'Hi you' %}{{ raise_exception('Conversation roles must "
                             "alternate') }}{% endif %}" + tok.chat_template)
        tok.save_pretrained(base)
    r = _run("--base", base, "--data", data, "--output", tmp_path / "out", "--cache-dir", tmp_path / "c", *extra)
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and match in lines[0], r.output
    assert not (tmp_path / "out").exists()


def test_a_base_that_stops_at_once_is_named_not_max_seq_len(chat_base, prompts, tmp_path):
    """A base whose every greedy answer was a stop token at once (here: its generation_config.json lists two
    eos_token_id, one of them the token it always says first) gave no example, and the error said to raise
    --max-seq-len (512, far more than the prompts)."""
    base = tmp_path / "base"
    shutil.copytree(chat_base, base)
    gen = json.loads((base / "generation_config.json").read_text())
    (base / "generation_config.json").write_text(json.dumps({**gen, "eos_token_id": [2, 98]}))  # 98: "\n"
    r = _run("--base", base, "--data", prompts, "--output", tmp_path / "out", "--cache-dir", tmp_path / "c",
             "--distill", "--distill-max-new-tokens", "8", "--max-steps", "2", "--base-dtype", "float32")
    assert r.exit_code == 2, r.output
    (folder,) = (tmp_path / "c").glob("distill-*")
    from redrafter_trt.train.distill import read_cache

    assert [a for a, _ in read_cache(folder).values()] == [[98]] * 4  # the second eos id ended every answer
    last = r.output.strip().splitlines()[-1]
    assert last.startswith("error: the base answered every training prompt with a stop token at once") and \
        "max-seq-len" not in last, r.output


def test_the_default_max_seq_len_fits_the_base(chat_base, prompts, tmp_path):
    """--max-seq-len past max_position_embeddings was accepted, and the base's hidden states there (which it never
    produces in use: run refuses such prompts) trained the drafter; the default 1024 is cut to a base with fewer."""
    from redrafter_trt.train import TrainConfig

    cfg = TrainConfig(base=chat_base, data=[prompts], output=tmp_path / "out", cache_dir=tmp_path / "c")
    cfg.validate()
    assert cfg.max_seq_len == 512  # the tiny base's max_position_embeddings
    cfg = TrainConfig(base=chat_base, data=[prompts], output=tmp_path / "out", cache_dir=tmp_path / "c", max_seq_len=300)
    cfg.validate()
    assert cfg.max_seq_len == 300


@pytest.mark.parametrize("as_type", [str, lambda p: p], ids=["str", "Path"])
def test_one_data_file_may_be_passed_alone(chat_base, prompts, tmp_path, as_type):
    """TrainConfig(data="prompts.jsonl") took each character of the str as a file ('data file / is a folder') and
    data=Path(...) was a TypeError: one file is a list of one."""
    from redrafter_trt.train import TrainConfig

    cfg = TrainConfig(base=chat_base, data=as_type(prompts), output=tmp_path / "out", cache_dir=tmp_path / "c")
    cfg.validate()
    assert cfg.data == [prompts]


def test_a_refused_run_leaves_no_folders_behind(chat_base, prompts, tmp_path):
    """The writability probe once made the output's missing parents before the options were checked."""
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(chat_base / "config.json", bare)
    for base, extra, needle in ((chat_base, ["--lr", "0"], "--lr must be"), (bare, [], "holds no model.safetensors")):
        r = _run("--base", base, "--data", prompts, "--output", tmp_path / "x" / "a" / "out", "--cache-dir",
                 tmp_path / "c", *extra)
        assert r.exit_code == 2 and needle in r.output and len(r.output.strip().splitlines()) == 1, r.output
        assert not (tmp_path / "x").exists() and not (tmp_path / "c").exists()


@pytest.mark.parametrize("device, gpus, match", [("cuda", 0, "--device cuda but no CUDA device is visible"),
                                                 ("cuda:5", 2, "--device cuda:5 but only 2 CUDA devices are visible: "
                                                               "pass cuda:0 to cuda:1"),
                                                 ("cuda:1", 1, "--device cuda:1 but only 1 CUDA device is visible: "
                                                               "pass cuda:0\n")])
def test_a_missing_gpu_is_refused_before_any_work(chat_base, prompts, tmp_path, monkeypatch, device, gpus, match):
    """`--device cuda` without CUDA once crashed with torch's traceback after the data stage."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpus > 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    r = _run("--base", chat_base, "--data", prompts, "--output", tmp_path / "out", "--cache-dir", tmp_path / "c",
             "--distill", "--device", device)
    assert r.exit_code == 2 and r.output.startswith(f"error: {match}") and len(r.output.splitlines()) == 1, r.output
    assert not (tmp_path / "c").exists()


def test_existing_output_needs_force(chat_base, prompts, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "afile").write_text("keep me")
    for out, needle in ((tmp_path / "out", "pass --force"), (tmp_path / "afile", "is a file")):
        r = _run("--base", chat_base, "--data", prompts, "--output", out, "--cache-dir", tmp_path / "c")
        assert r.exit_code == 2 and needle in r.output and len(r.output.strip().splitlines()) == 1, r.output
    assert (tmp_path / "afile").read_text() == "keep me"


def test_output_over_the_default_cache_is_refused(chat_base, prompts, tmp_path, monkeypatch):
    """--force must not replace the distillation cache that train itself defaults to (and would read)."""
    monkeypatch.setenv("REDRAFTER_TRT_CACHE", str(tmp_path / "root"))
    cache = tmp_path / "root" / "train"
    (cache / "distill-x").mkdir(parents=True)
    for out in (cache, tmp_path / "root"):
        r = _run("--base", chat_base, "--data", prompts, "--output", out, "--distill", "--force")
        assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1, r.output
    assert (cache / "distill-x").is_dir()


def test_output_inside_the_cache_is_refused(chat_base, prompts, tmp_path, monkeypatch):
    """A drafter written inside the training cache (the default one, or --cache-dir) sat among entries that train
    removes and that its summary line says may be deleted."""
    monkeypatch.setenv("REDRAFTER_TRT_CACHE", str(tmp_path / "root"))
    for out, cache in ((tmp_path / "root" / "train" / "d", []), (tmp_path / "c" / "sub" / "d", ["--cache-dir", tmp_path / "c"])):
        r = _run("--base", chat_base, "--data", prompts, "--output", out, "--distill", *cache)
        assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1, r.output
        assert "is inside the training cache" in r.output and "choose an --output outside it" in r.output, r.output
    assert not (tmp_path / "root").exists() and not (tmp_path / "c").exists()


def test_output_inside_the_cache_under_another_name_is_refused(chat_base, prompts, second_name):
    """--output and --cache-dir were compared by name: a drafter written into the cache under another of its names
    (`Cache/d` for `cache` on a Mac's case-insensitive disk) was refused only as inside an input folder (the cache is
    one), which said nothing of the cache."""
    cache, alias = second_name
    r = _run("--base", chat_base, "--data", prompts, "--output", alias / "sub" / "d", "--distill", "--cache-dir", cache)
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1, r.output
    assert "is inside the training cache" in r.output and "choose an --output outside it" in r.output, r.output
    assert not (cache / "sub").exists()


def test_distill_run_writes_drafter_and_reuses_cache(chat_base, prompts, tmp_path):
    args = ["--base", chat_base, "--data", prompts, "--output", tmp_path / "out", "--cache-dir", tmp_path / "c",
            "--distill", "--distill-max-new-tokens", "12", "--max-steps", "3", "--predict-n", "2", "--no-rnn",
            "--exit-dim", "32", "--base-dtype", "float32"]
    r = _run(*args)
    assert r.exit_code == 0, r.output
    assert "training-set (no held-out examples) top-1" in r.output  # 4 prompts: none held out
    cfg, tensors = load_drafter(tmp_path / "out")
    assert (cfg.predict_n, cfg.rnn, cfg.exit_dim) == (2, False, 32)
    folder = next((tmp_path / "c").glob("distill-*"))
    lines = (folder / "answers.jsonl").read_text().splitlines()
    assert len(lines) == 4
    # the hidden states captured while generating are the base's teacher-forced ones
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from redrafter_trt.train.data import Conversation, prompt_ids
    from redrafter_trt.train.distill import prompt_key

    tok = AutoTokenizer.from_pretrained(chat_base)
    model = AutoModelForCausalLM.from_pretrained(chat_base).eval()
    p = prompt_ids(tok, Conversation(({"role": "user", "content": "Say hi."},)), 1000)
    rec = next(json.loads(line) for line in lines if json.loads(line)["key"] == prompt_key(p, 12))
    h = load_file(folder / rec["file"])[rec["key"]].float()
    with torch.no_grad():
        ref = model.model(input_ids=torch.tensor([p + rec["answer_ids"]])).last_hidden_state[0]
    n = len(rec["answer_ids"])
    torch.testing.assert_close(h, ref[len(p) - 1: len(p) + n - 1], atol=5e-3, rtol=1e-2)
    assert model.lm_head(ref[len(p) - 1: len(p) + n - 1]).argmax(-1).tolist() == rec["answer_ids"]
    # a second run generates nothing new
    r = _run(*args, "--force")
    assert r.exit_code == 0, r.output
    assert len((folder / "answers.jsonl").read_text().splitlines()) == 4


def test_a_broken_batch_file_of_answers_is_distilled_again_or_named_in_one_line(chat_base, prompts, tmp_path,
                                                                                monkeypatch, caplog):
    """A batch file of distilled answers cut short (a copy broken off, a disk filled up on another host) was a
    safetensors traceback at every later run: its prompts are now distilled again, saying so. One broken after distill
    read it (the run going on) is one line naming it and the fix, exit 2."""
    from redrafter_trt.train import dataset

    args = ["--base", chat_base, "--data", prompts, "--output", tmp_path / "out", "--cache-dir", tmp_path / "c",
            "--distill", "--distill-max-new-tokens", "6", "--max-steps", "1", "--predict-n", "2", "--base-dtype",
            "float32"]
    assert _run(*args).exit_code == 0
    broken = sorted(next((tmp_path / "c").glob("distill-*")).glob("hidden-*.safetensors"))[0]
    broken.write_bytes(broken.read_bytes()[:-40])
    with caplog.at_level("WARNING"):
        assert _run(*args, "--force").exit_code == 0
    assert f"{broken} is truncated" in caplog.text and not broken.exists(), caplog.text
    real, cut = dataset.distill, []

    def cut_once_read(*a, **k):
        answers = real(*a, **k)
        cut.append(answers[0][1].path)
        cut[0].write_bytes(cut[0].read_bytes()[:-40])
        return answers

    monkeypatch.setattr(dataset, "distill", cut_once_read)
    r = _run(*args, "--force")
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1, r.output
    assert r.output.startswith(f"error: {cut[0]} is truncated") and "delete it and rerun" in r.output, r.output


def test_bfloat16_answers_are_cached_apart_and_dtypes_recorded(chat_base, prompts, tmp_path):
    common = ["--base", chat_base, "--data", prompts, "--cache-dir", tmp_path / "c", "--distill",
              "--distill-max-new-tokens", "12", "--max-steps", "2", "--predict-n", "2"]
    for dtype in ("bfloat16", "float32"):
        r = _run(*common, "--output", tmp_path / dtype, "--base-dtype", dtype, "--train-dtype", dtype)
        assert r.exit_code == 0, r.output
        meta = json.loads((tmp_path / dtype / "config.json").read_text())["producer"]
        assert meta["base_dtype"] == meta["train_dtype"] == dtype
    folders = sorted(f.name.rsplit("-", 1)[1] for f in (tmp_path / "c").glob("distill-*"))
    assert folders == ["bfloat16", "float32"]  # float32 did not reuse the bfloat16 answers


def test_batched_distillation_is_greedy_generate_per_prompt_and_warns_nothing(chat_base):
    """Left-padded batched greedy answers are transformers' greedy `generate` of each prompt alone, and the KV cache
    goes by the name this transformers takes (5.24 renamed past_key_values to cache and warns on the old name)."""
    import warnings

    from transformers import AutoModelForCausalLM

    from redrafter_trt.train.distill import greedy_batch

    model = AutoModelForCausalLM.from_pretrained(chat_base).eval()
    prompts = [[1, 17, 33, 5, 25, 9], [1, 42], [1, 7, 12]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        answers, hidden = greedy_batch(model, prompts, 8, stop={2}, pad_id=0)
    for p, a, h in zip(prompts, answers, hidden):
        with torch.no_grad():
            want = model.generate(torch.tensor([p]), attention_mask=torch.ones(1, len(p), dtype=torch.long),
                                  max_new_tokens=8, do_sample=False, eos_token_id=[2])[0, len(p):].tolist()
        assert a == want[: want.index(2) + 1 if 2 in want else None] and h.shape == (len(a), model.config.hidden_size)


def test_only_torchrun_rank_0_reports(chat_base, tmp_path, monkeypatch):
    """Under torchrun every rank drew its own progress bars and printed 'wrote' and the accuracy, read back from
    rank 0's drafter: two of everything, interleaved."""
    qa = tmp_path / "qa.jsonl"
    qa.write_text("".join(json.dumps({"question": f"{i}+1?", "answer": f"{i}+1 is {i + 1}."}) + "\n" for i in range(20)))
    monkeypatch.setenv("RANK", "1")  # WORLD_SIZE unset: the loop trains alone, as rank 0 would
    r = _run("--base", chat_base, "--data", qa, "--output", tmp_path / "out", "--cache-dir", tmp_path / "c",
             "--max-steps", "2", "--predict-n", "2")
    assert r.exit_code == 0, r.output
    assert "training drafter" not in r.output and "wrote" not in r.output and "top-1" not in r.output, r.output
    assert load_drafter(tmp_path / "out")[0].predict_n == 2


@pytest.mark.long  # processes or signals: setup.cfg's `long` job (.ci/run)
def test_sigterm_saves_the_state_as_ctrl_c_does(chat_base, tmp_path):
    """`kill`, a scheduler's preemption or torchrun stopping the ranks sends SIGTERM: the run died with the state of
    its last checkpoint (every 200 steps), losing up to 199 steps."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    qa = tmp_path / "qa.jsonl"
    qa.write_text("".join(json.dumps({"question": f"{i}+1?", "answer": f"{i}+1 is {i + 1}."}) + "\n" for i in range(40)))
    repo = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen([sys.executable, "-m", "redrafter_trt", "train", "--base", str(chat_base), "--data", str(qa),
                             "--output", str(tmp_path / "out"), "--cache-dir", str(tmp_path / "c"), "--max-steps",
                             "100000", "--batch-size", "8", "--predict-n", "2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    state = tmp_path / "out.train-state.pt"
    deadline = time.monotonic() + 240
    while not state.exists():  # the checkpoint of step 200
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()[-2000:]
        time.sleep(0.1)
    def cpu_seconds() -> float:  # the run's own CPU time: steps past the checkpoint however loaded the machine is
        fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime

    start = cpu_seconds()  # a fixed 1 s sleep could end before a loaded machine ran one step past it
    while cpu_seconds() < start + 1.0:
        assert proc.poll() is None and time.monotonic() < deadline + 120, proc.stderr.read()[-2000:]
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=60)[1]
    assert proc.returncode == 130 and "interrupted" in err, err[-2000:]
    assert torch.load(state, weights_only=True)["step"] > 200


def test_a_sigterm_after_the_command_ended_adds_nothing_to_its_one_line(tmp_path):
    """torchrun sends SIGTERM to the ranks left when one fails; a rank already exiting after its own one-line error
    turned it into KeyboardInterrupt inside an exit handler: 'Exception ignored in atexit callback' and a
    traceback. SIGTERM is Ctrl-C only while the command runs."""
    import subprocess
    import sys
    from pathlib import Path

    script = f"""
import atexit, os, signal
atexit.register(lambda: os.kill(os.getpid(), signal.SIGTERM))  # as torchrun's, while the process exits
from redrafter_trt.cli import main
main(["train", "--base", {str(tmp_path)!r}, "--data", {str(tmp_path / "nope.jsonl")!r}, "--output",
      {str(tmp_path / "out")!r}])
"""
    repo = str(Path(__file__).resolve().parents[1])
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, cwd=repo)
    (line,) = res.stderr.strip().splitlines()
    assert line == f"error: {tmp_path / 'config.json'} is missing: base folder must contain config.json", res.stderr


def test_distilled_hidden_states_past_float16_are_kept_not_inf(chat_base, prompts, tmp_path):
    """Distillation cast the base's hidden states to float16 unchecked: a base whose hidden states pass 65504 cached
    inf, and training stopped at step 1 with NaN, saying to lower --lr. Such answers are now kept in float32 (as the
    teacher-forced pass does); a cache of infs written before is named."""
    from safetensors.torch import load_file, save_file

    base = tmp_path / "base"
    shutil.copytree(chat_base, base)
    weights = load_file(base / "model.safetensors")
    weights["model.norm.weight"] = weights["model.norm.weight"] * 1e5  # final hidden states of about 1e5
    save_file(weights, base / "model.safetensors", metadata={"format": "pt"})
    args = ["--base", base, "--data", prompts, "--output", tmp_path / "out", "--cache-dir", tmp_path / "c",
            "--distill", "--distill-max-new-tokens", "6", "--max-steps", "2", "--predict-n", "2", "--base-dtype",
            "float32"]
    r = _run(*args)
    assert r.exit_code == 0, r.output
    files = list(next((tmp_path / "c").glob("distill-*")).glob("hidden-*.safetensors"))
    saved = [t for f in files for t in load_file(f).values()]
    assert all(t.dtype == torch.float32 and torch.isfinite(t).all() for t in saved)
    assert max(float(t.abs().max()) for t in saved) > 65504
    for f in files:  # as the unchecked cast cached them, with the soft targets of NaNs computed from them
        save_file({k: v.half() for k, v in load_file(f).items()}, f)
    teacher = next((tmp_path / "c").glob("teacher-*/*.safetensors"))
    save_file({k: v.fill_(float("nan")) if k == "probs" else v for k, v in load_file(teacher).items()}, teacher)
    r = _run(*args, "--force")
    assert r.exit_code == 2 and len(r.output.strip().splitlines()) == 1, r.output
    assert "holds inf or NaN hidden states of the base" in r.output and "lower --lr" not in r.output, r.output
    shutil.rmtree(files[0].parent)  # the fix it names: the same answers are distilled again, the same teacher key
    r = _run(*args, "--force")
    assert r.exit_code == 0, r.output


def test_a_base_whose_hidden_states_are_not_finite_is_named(chat_base, tmp_path):
    """Broken base weights (hidden states of inf or NaN) stopped training at step 1 saying to lower --lr."""
    from safetensors.torch import load_file, save_file

    base = tmp_path / "base"
    shutil.copytree(chat_base, base)
    weights = load_file(base / "model.safetensors")
    save_file({**weights, "model.norm.weight": torch.full_like(weights["model.norm.weight"], float("inf"))},
              base / "model.safetensors", metadata={"format": "pt"})
    data = tmp_path / "qa.jsonl"
    data.write_text(json.dumps({"question": "Hi?", "answer": "Hello there."}) + "\n")
    r = _run("--base", base, "--data", data, "--output", tmp_path / "out", "--cache-dir", tmp_path / "c",
             "--base-dtype", "float32")
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    assert r.output.strip().splitlines()[-1] == (
        "error: the base's hidden states hold inf or NaN (computed in float32): its weights are broken or overflow "
        "there: check the base, or pass --base-dtype float32"), r.output
    assert not (tmp_path / "out").exists()


def test_the_drafters_producer_block_is_every_outputs_with_the_recipe_on_top(chat_base, prompts, tmp_path,
                                                                             monkeypatch, caplog):
    """train built its drafter's `producer` by its own dict: named "redrafter-trt train", the base as typed (a
    relative path), no `options` (max_seq_len, epochs, num_draft_layers... not recorded) and no `sources`. It is now
    producer.py's block, with the run's results and the quickstart's recipe at the top, where the quickstart and
    convert's sharpness warning find them."""
    from redrafter_trt import quickstart as qs
    from redrafter_trt.convert import warn_sharpened_for_sampling
    from redrafter_trt.train import TrainConfig, train_drafter

    shutil.copytree(chat_base, tmp_path / "base")
    monkeypatch.chdir(tmp_path)
    cfg = TrainConfig(base="base", data=[prompts], output=tmp_path / "out", cache_dir=tmp_path / "c", distill=True,
                      distill_max_new_tokens=12, max_steps=2, predict_n=2, extra={"recipe": "r1"})
    out = train_drafter(cfg)
    meta = json.loads((out / "config.json").read_text())["producer"]
    assert (meta["name"], meta["command"]) == ("redrafter-trt", "train")
    assert meta["sources"] == {"base": str((tmp_path / "base").resolve()), "data": [str(prompts.resolve())]}
    assert meta["options"]["max_seq_len"] == 512 and meta["options"]["later_sharpness"] == 4.0
    assert {"num_draft_layers", "epochs", "max_steps", "distill", "lr", "seed"} <= set(meta["options"])
    assert meta["steps"] == 2 and meta["ranks"] == 1 and meta["recipe"] == "r1"
    assert "heldout" in meta or "train_set" in meta
    assert qs.drafter_origin(out, "r1") == "trained" and qs.drafter_origin(out, "r2") == "outdated"
    warn_sharpened_for_sampling(out, greedy=False)
    assert "trained with --later-sharpness 4" in caplog.text


def test_more_draft_steps_than_a_sequence_holds_are_refused(chat_base, prompts, tmp_path):
    """--predict-n past --max-seq-len less 2 (a typo: 50000 for 5) trained for ever, every step looping over draft
    steps no sequence makes valid, and recorded it: convert then took any --draft-len up to it."""
    from redrafter_trt.errors import ConfigError
    from redrafter_trt.train import TrainConfig

    def cfg(n):
        return TrainConfig(base=chat_base, data=[prompts], output=tmp_path / "out", cache_dir=tmp_path / "c",
                           max_seq_len=64, predict_n=n)

    cfg(62).validate()
    with pytest.raises(ConfigError, match="--predict-n 63 is more draft steps than --max-seq-len 64 holds"):
        cfg(63).validate()


def test_the_hidden_state_bar_starts_at_what_an_interrupted_run_cached():
    """A rerun after an interrupted teacher-forced pass reads the chunks cached so far: its bar starts there, and its
    rate and ETA count only the examples this run computes (not those read in the first moment)."""
    from redrafter_trt.cli.train_cmd import _Bars
    from redrafter_trt.train.progress import Progress

    bars = _Bars(disable=False)  # drawn where stderr is not a terminal (pytest's capture)
    bars(Progress("hidden", 16, 38))
    bars(Progress("hidden", 17, 38))
    bar = bars.bars["hidden"]
    assert (bar.n, bar.total, bar.format_dict["initial"]) == (17, 38, 16)
    bars.close()


def test_the_held_out_figure_on_the_datas_answers_says_so_and_the_bases_own_answers_are_scored(chat_base, tmp_path,
                                                                                                monkeypatch):
    """Without --distill the held-out set was scored on the data's answers alone, printed as the tokens/step 'expected'
    (3.44 on a review's ShareGPT data, where `acceptance` measured 1.11 to 1.16: the base does not write that text). It
    now says what it was scored on, points to `acceptance` and --distill, and the base's own greedy answers to a few
    held-out prompts are scored too (recorded apart in the producer block)."""
    from functools import partial

    from redrafter_trt.cli import train_cmd

    monkeypatch.setattr(train_cmd, "_Bars", partial(train_cmd._Bars, disable=False))  # its bars, drawn off a terminal
    data = tmp_path / "qa.jsonl"
    data.write_text("\n".join(json.dumps({"question": f"What is {a} plus {a + 1}?", "answer": f"It is {2 * a + 1}."})
                              for a in range(40)))
    r = _run("--base", chat_base, "--data", data, "--output", tmp_path / "out", "--cache-dir", tmp_path / "c",
             "--max-steps", "2", "--predict-n", "2", "--base-dtype", "float32")
    assert r.exit_code == 0, r.output
    ref = next(line for line in r.output.splitlines() if line.startswith("held-out, on the data's answers"))
    assert "not the base's own" in ref and "`redrafter-trt acceptance`" in ref and "--distill" in ref, ref
    own = next(line for line in r.output.splitlines() if line.startswith("held-out, on the base's own greedy answers"))
    assert "to 2 prompts" in own and "tokens/step expected at beam width 1 and draft length 2" in own, own
    # a review: N (1.741 on the quickstart's held-out prompts, its 5 draft steps) read as bench's W=1 L=2 (1.343 on
    # MT-Bench): the line names the draft length and that other prompts accept less
    assert "on prompts like the training data" in own and "`redrafter-trt acceptance`" in own, own
    # its bar says what it does (it said "distilling answers", though without --distill nothing is distilled to train),
    # and what it counts, as the others do
    assert "base's held-out answers (prompts)" in r.output and "distilling" not in r.output, r.output
    meta = json.loads((tmp_path / "out" / "config.json").read_text())["producer"]
    assert meta["heldout"]["answers"] == "data" and meta["heldout_base"]["answers"] == "base"
    assert meta["heldout_base"]["prompts"] == 2 and meta["heldout_base"]["anchors"] > 0
    assert str(meta["heldout_base"]["tokens_per_step_beam1"]) in own
    # the base's answers, cached where --distill keeps them (a later --distill run reuses them)
    folder = next((tmp_path / "c").glob("distill-*"))
    assert len((folder / "answers.jsonl").read_text().splitlines()) == 2


@pytest.mark.parametrize("asked, stopped", [(2, 1), (2, 2), (1, 1)])
def test_the_bases_own_answers_count_the_prompts_scored(chat_base, tmp_path, monkeypatch, caplog, asked, stopped):
    """`heldout_base.prompts` and its line counted the held-out prompts asked: one the base answered with a stop token
    at once gives no position to score and was counted all the same. They count those scored; where none is, a
    warning says so (no line then), why (held-out prompts are cut to leave 2 answer tokens within --max-seq-len: only
    a stop token at once leaves fewer) and what to check; of one prompt it said "each of the 1 held-out prompt"."""
    from redrafter_trt.train import heldout, loop

    real = heldout.distill

    def stop_at_once(*args, **kw):
        return [(a[:1], h) if i < stopped else (a, h) for i, (a, h) in enumerate(real(*args, **kw))]

    monkeypatch.setattr(heldout, "distill", stop_at_once)
    monkeypatch.setattr(loop, "BASE_ANSWERED_PROMPTS", asked)
    data = tmp_path / "qa.jsonl"
    data.write_text("\n".join(json.dumps({"question": f"What is {a} plus {a + 1}?", "answer": f"It is {2 * a + 1}."})
                              for a in range(40)))
    with caplog.at_level("WARNING", logger="redrafter_trt.train.loop"):
        r = _run("--base", chat_base, "--data", data, "--output", tmp_path / "out", "--cache-dir", tmp_path / "c",
                 "--max-steps", "2", "--predict-n", "2", "--base-dtype", "float32")
    assert r.exit_code == 0, r.output
    meta = json.loads((tmp_path / "out" / "config.json").read_text())["producer"]
    own = [line for line in r.output.splitlines() if line.startswith("held-out, on the base's own greedy answers")]
    if stopped < asked:
        assert meta["heldout_base"]["prompts"] == 1 and len(own) == 1 and "answers to 1 prompt:" in own[0], own
        assert not caplog.records
    else:
        assert "heldout_base" not in meta and not own
        which = "the 1 held-out prompt" if asked == 1 else "all 2 held-out prompts"
        assert caplog.messages == [f"the base answered {which} with a stop token at once: none scored on its own "
                                   f"answers; check its chat template and the eos_token_id of its "
                                   f"generation_config.json and tokenizer"], caplog.messages


def test_held_out_prompts_leaving_the_base_little_room_are_named(chat_base, tmp_path, monkeypatch, caplog):
    """Without --distill the base answers held-out prompts within --max-seq-len (a longer one's middle is cut to
    leave 2 answer tokens): its answers to them, capped short, were scored without a word (a run reported 6.0
    tokens/step on them). They are named as --distill names its prompts that leave less room than
    --distill-max-new-tokens."""
    from redrafter_trt.train import loop

    monkeypatch.setattr(loop, "BASE_ANSWERED_PROMPTS", 2)
    data = tmp_path / "qa.jsonl"
    data.write_text("\n".join(json.dumps({"question": f"What is {a} plus {a + 1}?", "answer": f"It is {2 * a + 1}."})
                              for a in range(40)))
    with caplog.at_level("WARNING", logger="redrafter_trt.train.loop"):
        r = _run("--base", chat_base, "--data", data, "--output", tmp_path / "out", "--cache-dir", tmp_path / "c",
                 "--max-steps", "2", "--predict-n", "2", "--base-dtype", "float32", "--max-seq-len", "64",
                 "--distill-max-new-tokens", "48")
    assert r.exit_code == 0, r.output
    assert "2 of 2 held-out prompts leave less than --distill-max-new-tokens 48 answer tokens within --max-seq-len " \
           "64: their answers stop there" in caplog.messages, caplog.messages


def test_train_help_says_the_base_answers_held_out_prompts_without_distill():
    """Without --distill the base answers a few held-out prompts (minutes on a CPU), which train --help never said."""
    from redrafter_trt.train.heldout import BASE_ANSWERED_PROMPTS

    r = CliRunner().invoke(main, ["train", "--help"], terminal_width=200)
    assert r.exit_code == 0 and f"answers up to {BASE_ANSWERED_PROMPTS} held-out prompts" in " ".join(r.output.split())


def test_the_base_answers_held_out_prompts_with_the_distill_options_without_distill(chat_base, tmp_path):
    """Without --distill the base answers up to 8 held-out prompts with --distill-max-new-tokens and
    --distill-batch-size, which were refused there as applying "only to the base's own answers: add --distill": the
    answers it writes were capped at the default 256 tokens, in batches of 64, whatever the base's memory allowed."""
    data = tmp_path / "qa.jsonl"
    data.write_text("\n".join(json.dumps({"question": f"What is {a} plus {a + 1}?", "answer": f"It is {2 * a + 1}."})
                              for a in range(40)))
    r = _run("--base", chat_base, "--data", data, "--output", tmp_path / "out", "--cache-dir", tmp_path / "c",
             "--max-steps", "2", "--predict-n", "2", "--base-dtype", "float32", "--distill-max-new-tokens", "3",
             "--distill-batch-size", "1")
    assert r.exit_code == 0, r.output
    folder = next((tmp_path / "c").glob("distill-*"))
    answers = [json.loads(line) for line in (folder / "answers.jsonl").read_text().splitlines()]
    assert len(answers) == 2 and all(len(a["answer_ids"]) <= 3 for a in answers), answers
    assert len({a["file"] for a in answers}) == 2  # one batch file a batch: batches of 1


def _python(script: str, **kw):
    """`python -c script` with this checkout importable, its threads 1."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")]))}
    return subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, **kw)


@pytest.mark.long  # processes or signals: setup.cfg's `long` job (.ci/run)
@pytest.mark.parametrize("stop", ["SIGINT", "SIGTERM"])
def test_a_stop_while_the_interpreter_shuts_down_after_a_finished_run_exits_0(chat_base, tmp_path, stop):
    """Ctrl-C within half a second of the drafter's rename (torch's teardown as the process exits) killed the
    finished run (exit 130), or was 'Exception ignored in atexit callback' with a traceback; a SIGTERM then was the
    signal's death (143), where README says exit 0. Either stops what is left of the exit, says so, and exits 0."""
    qa = tmp_path / "qa.jsonl"
    qa.write_text("".join(json.dumps({"question": f"{i}+1?", "answer": f"{i}+1 is {i + 1}."}) + "\n" for i in range(20)))
    argv = ["redrafter-trt", "train", "--base", str(chat_base), "--data", str(qa), "--output", str(tmp_path / "out"),
            "--cache-dir", str(tmp_path / "c"), "--max-steps", "2", "--predict-n", "2"]
    script = f"""
import atexit, os, runpy, signal, sys, time
from redrafter_trt import interrupts

def own_process(real=interrupts.own_process):  # a stop in an exit handler that the command's imports registered
    real()
    atexit.register(lambda: (os.kill(os.getpid(), signal.{stop}), time.sleep(5)))

interrupts.own_process = own_process
sys.argv = {argv!r}
runpy.run_module("redrafter_trt", run_name="__main__")
"""
    proc = _python(script)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0 and "Traceback" not in err and f"interrupted after {tmp_path / 'out'} was written" in err, err[-2000:]
    assert f"wrote {tmp_path / 'out'}" in out


@pytest.mark.long  # processes or signals: setup.cfg's `long` job (.ci/run)
@pytest.mark.parametrize("stop", ["SIGINT", "SIGTERM"])
def test_a_stop_in_the_interpreters_last_teardown_after_a_finished_run_exits_0(chat_base, tmp_path, stop):
    """Once the interpreter has run its exit handlers it resets the signal handlers it set to the default, then tears
    its modules down (2 s after a tiny train here, torch's): a stop then was the signal's death (143 or 130), in every
    one of 12 runs stopped 0-0.8 s after `wrote`. A finished run ignores them there: it exits 0. The stop is sent from
    a module's teardown (an object's __del__), after the handlers were reset."""
    qa = tmp_path / "qa.jsonl"
    qa.write_text("".join(json.dumps({"question": f"{i}+1?", "answer": f"{i}+1 is {i + 1}."}) + "\n" for i in range(20)))
    argv = ["redrafter-trt", "train", "--base", str(chat_base), "--data", str(qa), "--output", str(tmp_path / "out"),
            "--cache-dir", str(tmp_path / "c"), "--max-steps", "2", "--predict-n", "2"]
    script = f"""
import os, runpy, signal, sys, time

class StopInTeardown:
    def __del__(self):
        assert signal.getsignal(signal.{stop}) in (signal.SIG_DFL, signal.SIG_IGN, None)  # the handlers reset
        os.kill(os.getpid(), signal.{stop})
        time.sleep(1)

holder = StopInTeardown()
sys.argv = {argv!r}
runpy.run_module("redrafter_trt", run_name="__main__")
"""
    proc = _python(script)
    out, err = proc.communicate(timeout=240)
    assert proc.returncode == 0 and "Traceback" not in err, (proc.returncode, err[-2000:])
    assert f"wrote {tmp_path / 'out'}" in out


@pytest.mark.parametrize("stop", ["SIGINT", "SIGTERM"])
def test_a_stop_right_after_a_finished_train_returns_exits_0(chat_base, prompts, tmp_path, stop):
    """A SIGTERM just after train's command returned (its context closed: SIGTERM reset to its default), before the
    interpreter ran its exit handlers, was the signal's death (143) with no word, and a Ctrl-C there died of SIGINT:
    the finished-run handler came only from an atexit callback. The process's own command sets it as the drafter is
    written. The stop is sent as `main` exits (its sys.exit), the command's context closed."""
    script = f"""
import json, os, runpy, signal, sys, time
import redrafter_trt.train as train_api

def trained(cfg, on_progress=None):
    cfg.output.mkdir()
    (cfg.output / "config.json").write_text(json.dumps({{"producer": {{}}}}))
    return cfg.output

def exit_(code=0, real=sys.exit):
    os.kill(os.getpid(), signal.{stop}); time.sleep(5); real(code)

train_api.train_drafter = trained
sys.exit = exit_
sys.argv = {["redrafter-trt", "train", "--base", str(chat_base), "--data", str(prompts), "--output",
             str(tmp_path / "out"), "--cache-dir", str(tmp_path / "c")]!r}
runpy.run_module("redrafter_trt", run_name="__main__")
"""
    proc = _python(script)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0 and "Traceback" not in err, (proc.returncode, err[-2000:])
    assert f"interrupted after {tmp_path / 'out'} was written" in err and f"wrote {tmp_path / 'out'}" in out


def test_a_ctrl_c_while_the_cli_imports_is_one_line_and_exit_130():
    """A Ctrl-C in the first third of a second (`python -m redrafter_trt`, the console script: click and the group
    importing) was a KeyboardInterrupt traceback from the import; it is 'interrupted' and exit 130."""
    script = """
import builtins, os, runpy, signal, sys
real = builtins.__import__

def import_(name, *args, **kw):
    if name == "cli" or name == "redrafter_trt.cli":
        os.kill(os.getpid(), signal.SIGINT)
    return real(name, *args, **kw)

builtins.__import__ = import_
sys.argv = ["redrafter-trt", "--version"]
runpy.run_module("redrafter_trt", run_name="__main__")
"""
    proc = _python(script)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and err == "interrupted\n", (proc.returncode, err[-2000:])


def test_a_ctrl_c_at_exit_of_another_command_stops_it_and_a_caller_keeps_its_handler():
    """The console script ignored Ctrl-C at every exit of every command: a process hanging at exit (a thread
    joined) went on after two Ctrl-C, and a caller running the module in its own process (runpy) was left with Ctrl-C
    ignored. A stop in the exit handlers keeps the command's exit code (interrupts.exit_keeping), set only as they
    start: the caller keeps its handler."""
    import signal
    import time

    script = """
import runpy, signal, sys, threading
threading.Thread(target=threading.Event().wait).start()  # joined at exit: the process hangs there
sys.argv = ["redrafter-trt", "--version"]
try:
    runpy.run_module("redrafter_trt", run_name="__main__")
except SystemExit:
    pass
print("handler kept:", signal.getsignal(signal.SIGINT) is signal.default_int_handler, flush=True)
"""
    proc = _python(script)
    try:
        assert proc.stdout.readline().startswith("redrafter-trt, version")
        assert proc.stdout.readline() == "handler kept: True\n"
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)
    finally:
        proc.kill()
        proc.communicate()


@pytest.mark.parametrize("when", ["report", "loop"])
def test_a_ctrl_c_once_the_drafter_is_written_ends_a_finished_run(chat_base, prompts, tmp_path, monkeypatch, when):
    """A Ctrl-C in the lines train prints once its drafter is written (reading its scores, sizing the cache), or
    one the loop raised as WrittenThenInterrupted (while the drafter it replaced was removed, the cache pruned), said
    'interrupted' and exit 130: the drafter is in place, so the run ends as a finished one, exit 0. The loop's said
    so, and the lines are printed; one in the lines stops them, saying so (they were printed with Ctrl-C ignored: the
    size of a large cache on a network disk could not be skipped)."""
    import signal

    import redrafter_trt.train as train_api
    from redrafter_trt.output import WrittenThenInterrupted
    from redrafter_trt.train import cache

    def trained(cfg, on_progress=None):
        cfg.output.mkdir()
        (cfg.output / "config.json").write_text(json.dumps({"producer": {}}))
        if when == "loop":
            raise WrittenThenInterrupted
        return cfg.output

    def sized(cache_dir):
        if when == "report":
            signal.raise_signal(signal.SIGINT)  # stops the sizing: a large cache on a network disk takes long
        return "training cache: sized"

    monkeypatch.setattr(train_api, "train_drafter", trained)
    monkeypatch.setattr(cache, "summary", sized)
    handler = signal.getsignal(signal.SIGINT)
    r = _run("--base", chat_base, "--data", prompts, "--output", tmp_path / "out", "--cache-dir", tmp_path / "c")
    assert r.exit_code == 0, r.output
    assert f"wrote {tmp_path / 'out'}" in r.output
    if when == "report":
        assert "training cache: sized" not in r.output and f"interrupted after {tmp_path / 'out'} was written" in r.output
    else:
        assert "training cache: sized" in r.output
    assert signal.getsignal(signal.SIGINT) is handler  # an in-process caller's Ctrl-C stops it again


def test_draft_steps_no_held_out_answer_reaches_are_recorded_and_said_unscored(chat_base, tmp_path):
    """Answers of 3 tokens reach 2 draft steps of --predict-n 5 (step i needs the anchor and i + 2 tokens after it):
    the 3 others scored 0.0 (0 right of 0 positions, the count clamped to 1), recorded as the drafter's accuracy there.
    Now null, printed '-', and left out of the expected tokens/step."""
    data = tmp_path / "p.jsonl"
    data.write_text("\n".join(json.dumps({"prompt": f"Tell me about number {i}."}) for i in range(60)))
    r = _run("--base", chat_base, "--data", data, "--output", tmp_path / "out", "--cache-dir", tmp_path / "c",
             "--distill", "--distill-max-new-tokens", "3", "--predict-n", "5", "--max-steps", "2",
             "--base-dtype", "float32")
    assert r.exit_code == 0, r.output
    res = json.loads((tmp_path / "out" / "config.json").read_text())["producer"]["heldout"]
    assert res["top1"][2:] == res["chained"][2:] == [None] * 3 and None not in res["top1"][:2], res
    assert res["tokens_per_step_beam1"] == round(1 + sum(res["chained"][:2]), 3), res
    line = next(line for line in r.output.splitlines() if line.startswith("held-out"))
    assert ", -, -, -], chained [" in line and "draft steps 3 to 5 unscored" in line, line


def test_each_option_reaches_the_train_config(chat_base, prompts, tmp_path, monkeypatch):
    """Every option given reaches the TrainConfig that train_drafter receives, not its default (an audit's mutants
    replacing --seed, --epochs, --batch-size, --lr ... by their defaults passed every test); nothing is trained."""
    import redrafter_trt.train
    from redrafter_trt.errors import ConfigError

    options = [("--num-draft-layers", 2, "num_draft_layers", 2), ("--no-rnn", None, "rnn", False),
               ("--predict-n", 3, "predict_n", 3), ("--epochs", 2, "epochs", 2), ("--lr", 0.002, "lr", 0.002),
               ("--batch-size", 5, "batch_size", 5), ("--max-seq-len", 64, "max_seq_len", 64),
               ("--max-examples", 3, "max_examples", 3), ("--seed", 3, "seed", 3), ("--distill", None, "distill", True),
               ("--distill-max-new-tokens", 7, "distill_max_new_tokens", 7),
               ("--distill-batch-size", 4, "distill_batch_size", 4), ("--base-dtype", "float32", "base_dtype", "float32"),
               ("--train-dtype", "bfloat16", "train_dtype", "bfloat16"), ("--soft-target", 0.25, "soft_target", 0.25),
               ("--later-sharpness", 2.0, "later_sharpness", 2.0), ("--step-decay", 0.5, "step_decay", 0.5),
               ("--freeze-head", None, "train_head", False), ("--full-vocab", None, "full_vocab", True),
               ("--cache-dir", tmp_path / "c", "cache_dir", tmp_path / "c")]
    given = []

    def stop_here(cfg, **kwargs):
        given.append(cfg)
        raise ConfigError("stopped here")
    monkeypatch.setattr(redrafter_trt.train, "train_drafter", stop_here)
    args = [a for flag, value, _, _ in options for a in ([flag] if value is None else [flag, value])]
    res = _run("--base", chat_base, "--data", prompts, "--output", tmp_path / "out", *args)
    assert res.exit_code == 2 and "stopped here" in res.output, res.output
    (cfg,) = given
    assert {field: getattr(cfg, field) for _, _, field, _ in options} == {field: want for _, _, field, want in options}


def test_no_progress_bar_frames_where_stderr_is_not_a_terminal(chat_base, prompts, tmp_path):
    """train's bars drew '\\r' frames into a log file (`2> err.txt`), as convert's and the checkpoint check's do not
    (tqdm's disable=None: no bar where the output is not a terminal); quickstart shares them."""
    r = _run("--base", chat_base, "--data", prompts, "--output", tmp_path / "out", "--cache-dir", tmp_path / "c",
             "--distill", "--distill-max-new-tokens", "2", "--max-steps", "2", "--predict-n", "2",
             "--base-dtype", "float32")
    assert r.exit_code == 0, r.output
    assert "\r" not in r.stderr and "training drafter (steps)" not in r.stderr, r.stderr


@pytest.mark.parametrize("command", ["train", "init-drafter"])
def test_help_names_the_base_as_the_option_it_is(command):
    """train's and init-drafter's help said "a drafter for BASE", as if BASE were an argument: it is --base."""
    r = CliRunner().invoke(main, [command, "--help"], terminal_width=200)
    assert r.exit_code == 0 and "BASE" not in r.output and "the --base model" in r.output, r.output


@pytest.mark.parametrize("flag, words", [
    ("--cache-dir", "[default: <cache>/train, <cache>: $REDRAFTER_TRT_CACHE, else ~/.cache/redrafter-trt]"),
    ("--max-seq-len", "(at least 8)"),
    ("--distill-max-new-tokens", "(at least 2)"),
])
def test_train_help_names_the_cache_root_and_the_least_lengths(flag, words):
    """--cache-dir's default was "cache root/train", a root no help named; --max-seq-len and --distill-max-new-tokens
    did not say the least they take (TrainConfig.validate refuses under 8 and under 2)."""
    from test_run_cli import _option_help

    assert words in _option_help("train", flag)
