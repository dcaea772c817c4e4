"""torchrun with two CPU ranks (gloo): each rank trains on its shard, gradients are averaged, rank 0 writes."""

from __future__ import annotations

import contextlib
import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from redrafter_trt.drafter import load_drafter
from test_train_data import make_chat_base

SCRIPT = """
import os, sys, torch
from pathlib import Path
from redrafter_trt.train import TrainConfig, train_drafter
from redrafter_trt.train import steps
seen = []
real = steps.drafter_step
def spy(drafter, *a, **k):  # record every rank's parameters before each step: they must stay equal
    seen.append(torch.cat([p.detach().flatten() for p in drafter.parameters()]))
    return real(drafter, *a, **k)
steps.drafter_step = spy
tmp = Path(sys.argv[1])
train_drafter(TrainConfig(base=Path(sys.argv[2]), data=[tmp / "qa.jsonl"], output=tmp / "out", cache_dir=tmp / "cache",
                          max_steps=4, batch_size=32, predict_n=2))
assert not torch.distributed.is_initialized(), "the process group outlived train_drafter"
rank = os.environ["RANK"]
torch.save(torch.stack(seen[:4]), tmp / f"params{rank}.pt")  # the 4 training steps (rank 0 then evaluates)
"""


def torchrun(script: str, tmp_path: Path, base: Path, fails: bool = False) -> subprocess.CompletedProcess:
    """Run `script` (given tmp_path and base) in two torchrun ranks on CPU; it must succeed (or, `fails`, not).
    --standalone: the ranks meet on a port the OS picks (a fixed --master_port was sometimes taken: EADDRINUSE), at
    127.0.0.1 (not the host's name, which a CI container may not resolve)."""
    (tmp_path / "run.py").write_text(script)
    repo = str(Path(__file__).resolve().parents[1])  # the workers import this checkout, installed or not
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")]))}
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--local-addr",
                           "127.0.0.1", "--nproc_per_node", "2", str(tmp_path / "run.py"), str(tmp_path), str(base)],
                          capture_output=True, text=True, env=env, timeout=240)
    assert (proc.returncode != 0) == fails, proc.stderr[-3000:]
    return proc


def twenty_sums(tmp_path: Path) -> Path:
    """A chat base and qa.jsonl of 20 question/answer records in tmp_path: the base's folder."""
    (tmp_path / "qa.jsonl").write_text("\n".join(json.dumps({"question": f"{i}+1?", "answer": f"{i}+1 is {i + 1}."})
                                                 for i in range(20)))
    return make_chat_base(tmp_path / "base")


@pytest.mark.long  # processes or signals: setup.cfg's `long` job (.ci/run)
def test_torchrun_two_ranks(tmp_path):
    base = make_chat_base(tmp_path / "base")
    r = random.Random(0)
    (tmp_path / "qa.jsonl").write_text("\n".join(
        json.dumps({"question": f"{a}+{b}?", "answer": f"{a}+{b} is {a + b}."})
        for a, b in ((r.randint(1, 50), r.randint(1, 50)) for _ in range(40))))
    torchrun(SCRIPT, tmp_path, base)
    cfg, _ = load_drafter(tmp_path / "out")
    assert cfg.predict_n == 2
    # its options' batch_size is each rank's: the producer once left out how many ranks trained
    assert json.loads((tmp_path / "out" / "config.json").read_text())["producer"]["ranks"] == 2
    assert torch.equal(torch.load(tmp_path / "params0.pt"), torch.load(tmp_path / "params1.pt"))


def test_process_group_follows_the_device(monkeypatch):
    """torchrun's ranks join gloo for --device cpu (even on a host with GPUs), and for --device cuda / cuda:N each
    takes its LOCAL_RANK's GPU with NCCL for GPU tensors and gloo for CPU ones (the kept-vocabulary vote is a CPU
    tensor: NCCL alone refuses it)."""
    from redrafter_trt.train import torchrun

    joined, gpus, timeouts = [], [], []
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.distributed, "init_process_group",
                        lambda backend, timeout: joined.append(backend) or timeouts.append(timeout))
    monkeypatch.setattr(torch.distributed, "get_rank", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_device", gpus.append)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert torchrun._dist("cpu") == (1, 2)
    assert torchrun._dist("cuda") == (1, 2) and torchrun._dist("cuda:0") == (1, 2)
    assert joined == ["gloo", "cpu:gloo,cuda:nccl", "cpu:gloo,cuda:nccl"] and gpus == [1, 1]
    assert set(timeouts) == {torchrun.DIST_TIMEOUT} and torchrun.DIST_TIMEOUT.total_seconds() >= 6 * 3600  # hours of distilling



def test_a_group_joined_for_training_is_left_destroyed_unless_a_gpu_rank_failed(monkeypatch):
    """gloo's group left to the interpreter's exit sometimes aborted a finished rank (SIGABRT): the group train joins
    is destroyed after it, and after a failure on CPU; a failed GPU rank leaves its NCCL group (destroying it can
    wait on peers stuck in a collective)."""
    from redrafter_trt.train import torchrun

    joined, destroyed = [], []
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: bool(joined) and not destroyed)
    monkeypatch.setattr(torchrun, "_dist", lambda device: joined.append(device) or (0, 2))
    monkeypatch.setattr(torch.distributed, "destroy_process_group", lambda: destroyed.append(True))
    for device, fails, destroys in (("cpu", False, True), ("cuda", False, True), ("cpu", True, True),
                                    ("cuda", True, False)):
        joined.clear()
        destroyed.clear()
        with contextlib.suppress(RuntimeError):
            with torchrun.process_group(device) as (rank, world):
                assert (rank, world) == (0, 2)
                if fails:
                    raise RuntimeError("a collective failed")
        assert destroyed == ([True] if destroys else []), (device, fails)


DISTILL = """
import sys
from pathlib import Path
from redrafter_trt.train import TrainConfig, train_drafter
tmp = Path(sys.argv[1])
train_drafter(TrainConfig(base=Path(sys.argv[2]), data=[tmp / "p.jsonl", tmp / "chat.jsonl"], output=tmp / "out",
                          cache_dir=tmp / "cache", max_steps=1, batch_size=8, predict_n=2, distill=True,
                          distill_max_new_tokens=6, distill_batch_size=2, eval_examples=0))
"""


@pytest.mark.long
def test_torchrun_ranks_append_distilled_answers_to_files_of_their_own(tmp_path):
    """Every rank once appended its answers to one answers.jsonl: their buffered writes tore each other's lines,
    and a later run generated every torn answer again. Each rank now has an index of its own, and all are read."""
    from redrafter_trt.train.distill import read_cache

    base = make_chat_base(tmp_path / "base")
    (tmp_path / "p.jsonl").write_text("\n".join(json.dumps({"prompt": f"Question {i}?"}) for i in range(8)))
    # a conversation asking "Question 0?" again, and more after its answer: what --distill says of the data as a
    # whole (a prompt answered once, later turns left out) is rank 0's to say (a review: every rank said it)
    (tmp_path / "chat.jsonl").write_text(json.dumps({"messages": [
        {"role": "user", "content": "Question 0?"}, {"role": "assistant", "content": "Yes."},
        {"role": "user", "content": "Why?"}, {"role": "assistant", "content": "So."}]}))
    proc = torchrun(DISTILL, tmp_path, base)
    for said in ("1 of 9 conversations have user turns after an answer", "1 of 9 conversations share their prompt"):
        assert proc.stderr.count(said) == 1, proc.stderr[-3000:]
    (folder,) = (tmp_path / "cache").glob("distill-*")
    keys = {name: [json.loads(line)["key"] for line in (folder / name).read_text().splitlines()]
            for name in ("answers.jsonl", "answers.rank1.jsonl")}
    assert len(keys["answers.jsonl"]) == len(keys["answers.rank1.jsonl"]) == 4  # each rank's half, whole lines
    assert not set(keys["answers.jsonl"]) & set(keys["answers.rank1.jsonl"])
    assert len(read_cache(folder)) == 8  # a later run reads both



FAIL_ON_RANK_1 = """
import os, sys, time
from redrafter_trt.cli import main
from redrafter_trt.errors import ConfigError
from redrafter_trt.train import loop
real = loop._seen_tokens
marker = sys.argv[1] + "/rank0-in-collective"
def seen(*a, **k):  # rank 1 meets bad data only it sees, while rank 0 waits in the first collective
    if os.environ["RANK"] == "1":
        while not os.path.exists(marker):
            time.sleep(0.1)
        time.sleep(1)
        raise ConfigError("bad data on rank 1: fix it")
    open(marker, "w").close()
    return real(*a, **k)
loop._seen_tokens = seen
main(["train", "--base", sys.argv[2], "--data", sys.argv[1] + "/qa.jsonl", "--output", sys.argv[1] + "/out",
      "--cache-dir", sys.argv[1] + "/cache", "--max-steps", "2", "--predict-n", "2"])
"""


@pytest.mark.long
def test_a_rank_that_fails_ends_the_others_with_one_line(tmp_path):
    """Rank 1 failed with its one-line error, and rank 0, waiting for it in a collective, printed a 40-line traceback
    of gloo's 'Connection closed by peer'. Rank 0 now says in one line that another rank stopped."""
    proc = torchrun(FAIL_ON_RANK_1, tmp_path, twenty_sums(tmp_path), fails=True)
    assert "error: bad data on rank 1: fix it" in proc.stderr, proc.stderr[-3000:]
    assert "error: another torchrun rank stopped (RuntimeError in a collective)" in proc.stderr, proc.stderr[-3000:]
    assert "[rank0]: Traceback" not in proc.stderr and "Connection closed by peer" not in proc.stderr


KILLED_ON_RANK_1 = """
import os, sys, time
from redrafter_trt.cli import main
from redrafter_trt.train import loop, steps
real, calls = steps.drafter_step, []
def step(*a, **k):  # rank 1 is killed (out of memory, a node lost) in its 6th step
    calls.append(1)
    if os.environ["RANK"] == "1" and len(calls) == 6:
        os._exit(137)
    return real(*a, **k)
steps.drafter_step = step
real_save = loop.save_state
def slow_save(*a, **k):  # rank 0's save outlasts torchrun's SIGTERM (0.1 s after rank 1's death), as a large one does
    time.sleep(2)
    return real_save(*a, **k)
loop.save_state = slow_save
main(["train", "--base", sys.argv[2], "--data", sys.argv[1] + "/qa.jsonl", "--output", sys.argv[1] + "/out",
      "--cache-dir", sys.argv[1] + "/cache", "--max-steps", "50", "--batch-size", "8", "--predict-n", "2"])
"""


@pytest.mark.long
def test_a_rank_killed_mid_training_keeps_the_steps_done(tmp_path):
    """A rank killed mid-training failed rank 0's next collective, and rank 0 left without saving: every step since
    the last checkpoint (up to 199) was lost. Rank 0 now saves the state of the steps all ranks finished, as on
    Ctrl-C. torchrun's SIGTERM to rank 0, arriving during a save slower than 0.1 s, then ended it before it said
    so (and to --resume): a flake in CI, and the rule for any real drafter."""
    proc = torchrun(KILLED_ON_RANK_1, tmp_path, twenty_sums(tmp_path), fails=True)
    assert "state saved after step 5" in proc.stderr, proc.stderr[-3000:]
    assert torch.load(tmp_path / "out.train-state.pt", weights_only=True)["step"] == 5


def test_a_rank_left_by_an_interrupted_rank_points_to_resume():
    """A review: rank 0 interrupted alone (`kill -INT`, a scheduler's SIGTERM to one process) saved the state and said
    to --resume, and rank 1, its collective failed, then said "fix it and rerun", as for an error. It now names both."""
    import pytest

    from redrafter_trt.errors import PeerError
    from redrafter_trt.train import torchrun

    with pytest.raises(PeerError, match=r"fix its error and rerun, or, if it was interrupted and saved the training "
                                        r"state, rerun with --resume"):
        with torchrun.collective():
            raise RuntimeError("[../third_party/gloo/gloo/transport/tcp/pair.cc:534] Connection closed by peer")


GLOBAL_BATCH = """
import os, sys, torch
from pathlib import Path
from redrafter_trt.train import TrainConfig, train_drafter
from redrafter_trt.train import steps
tmp, rank, seen = Path(sys.argv[1]), os.environ["RANK"], {}
real_step, real_clip = steps.drafter_step, torch.nn.utils.clip_grad_norm_
interrupt_at, calls = [0], []
def step(drafter, head, embed, feats, idx, k, **kw):  # the first step's inputs, to redo it in one process
    calls.append(1)
    if len(calls) == interrupt_at[0]:  # Ctrl-C on every rank, in the same step
        raise KeyboardInterrupt
    if not seen:
        seen.update(drafter={n: p.detach().clone() for n, p in drafter.state_dict().items()}, head=head.weight.detach().clone(),
                    keep=head.keep, vocab_size=head.vocab_size,
                    embed=embed, tokens=feats.tokens, mask=feats.mask, anchors=feats.anchors, hidden=feats.hidden,
                    idx=idx, k=k, later_sharpness=kw["later_sharpness"], step_decay=kw["step_decay"])
    r = real_step(drafter, head, embed, feats, idx, k, **kw)
    if "correct" not in seen:  # this rank's rows: the bar's top-1 is over both ranks'
        seen.update(correct=r.correct.sum(0), valid=r.valid.sum(0))
    return r
def clip(params, norm):  # the gradients the ranks agreed on, before clipping
    if "grads" not in seen:
        seen["grads"] = [p.grad.clone() for p in params]
    return real_clip(params, norm)
steps.drafter_step, torch.nn.utils.clip_grad_norm_ = step, clip
torch.distributed.init_process_group("gloo")  # the runs' group: one destroyed is not joined again in a process
train_drafter(TrainConfig(base=Path(sys.argv[2]), data=[tmp / "qa.jsonl"], output=tmp / "out", cache_dir=tmp / "cache",
                          max_steps=1, batch_size=64, predict_n=3, soft_target=0, train_dtype="float32",
                          eval_examples=0), on_progress=lambda p: p.stats and seen.setdefault("bar", p.stats))
torch.save(seen, tmp / f"step{rank}.pt")
# --epochs on shards of unequal anchors; then the same run stopped after its second step and resumed under torchrun
opts = dict(base=Path(sys.argv[2]), data=[tmp / "qa.jsonl"], cache_dir=tmp / "cache", epochs=2, batch_size=16,
            predict_n=3, soft_target=0, train_dtype="float32", eval_examples=0)
train_drafter(TrainConfig(output=tmp / "whole", **opts))
calls.clear()
interrupt_at[0] = 3
try:
    train_drafter(TrainConfig(output=tmp / "resumed", **opts))
    raise AssertionError("not interrupted")
except KeyboardInterrupt:
    pass
interrupt_at[0] = 0
train_drafter(TrainConfig(output=tmp / "resumed", resume=True, **opts))
torch.distributed.destroy_process_group()
"""


@pytest.mark.long
def test_ranks_gradients_are_one_processs_on_the_global_batch(tmp_path):
    """Each rank's loss was the mean over its own rows, and the ranks' gradients were averaged: a rank with fewer valid
    rows (shorter answers) weighed as much as a fuller one, so two ranks did not train as one process on both batches.
    The means are now over every rank's rows, and the summed gradients are the global batch's. The bar's top-1 was
    rank 0's batch alone; it is the global batch's too, as its loss is. In the same ranks (one torchrun launch): the
    head rows kept are every rank's tokens, --epochs over shards of unequal anchors ends, and a run interrupted and
    resumed under torchrun is the run left alone."""
    import transformers

    from redrafter_trt.drafter import Drafter
    from redrafter_trt.train.features import Features
    from redrafter_trt.train.objective import Head, drafter_step

    # rank 0 gets the even records (short answers), rank 1 the odd ones (long answers)
    (tmp_path / "qa.jsonl").write_text("\n".join(json.dumps(
        {"question": f"{i}+1?", "answer": f"{i}+1 is {i + 1}." if i % 2 == 0 else
         f"Adding one to {i} gives {i + 1}, since {i} and then one more is {i + 1}, so the answer is {i + 1}."})
        for i in range(16)))
    proc = torchrun(GLOBAL_BATCH, tmp_path, make_chat_base(tmp_path / "base"))
    a, b = (torch.load(tmp_path / f"step{r}.pt", weights_only=False) for r in (0, 1))
    offset = len(a["tokens"])  # each rank's tokens end in padding: a window never crosses into the other's
    union = Features(torch.cat([a["tokens"], b["tokens"]]), torch.cat([a["mask"], b["mask"]]),
                     torch.cat([a["anchors"], b["anchors"] + offset]), torch.cat([a["hidden"], b["hidden"]]))
    idx = torch.cat([a["idx"], b["idx"] + len(a["anchors"])])
    valid = [union.windows(x, a["k"])[1].sum(0) for x in (idx[: len(a["idx"])], idx[len(a["idx"]):])]
    assert not torch.equal(valid[0] * len(b["idx"]), valid[1] * len(a["idx"]))  # the ranks' rows differ
    cfg, _ = load_drafter(tmp_path / "out")
    drafter = Drafter(cfg)
    drafter.load_state_dict(a["drafter"])
    full = torch.zeros((a["vocab_size"], a["head"].shape[1]))
    full[a["keep"]] = a["head"]
    head = Head.pruned(full, a["keep"], True)  # the kept rows, as the ranks trained them
    res = drafter_step(drafter, head, a["embed"], union, idx, a["k"], later_sharpness=a["later_sharpness"],
                       step_decay=a["step_decay"])
    res.loss.backward()
    params = [p for p in drafter.parameters() if p.requires_grad and p is not drafter.lm_head[-1].weight]
    expected = [p.grad for p in params] + [head.weight.grad]
    assert len(expected) == len(a["grads"])
    for want, got0, got1 in zip(expected, a["grads"], b["grads"]):
        assert torch.equal(got0, got1)
        torch.testing.assert_close(got0, want, rtol=1e-4, atol=1e-6)
    top1 = ((a["correct"] + b["correct"]) / (a["valid"] + b["valid"])).tolist()
    assert a["bar"].top1 == b["bar"].top1 == top1 != (a["correct"] / a["valid"]).tolist()
    # and its loss is the global batch's on every rank (a review: each rank's share of it was not summed)
    assert a["bar"].loss == b["bar"].loss == pytest.approx(res.loss.item(), rel=1e-5)
    # the head rows trained are those of every token in either rank's shard, and EOS (rank 1's long answers hold
    # tokens that rank 0's never do: a review saw those rows left untrained when the ranks' vote was a MIN)
    only_1 = set(b["tokens"].tolist()) - set(a["tokens"].tolist())
    assert only_1 and only_1 <= set(a["keep"].tolist())
    eos = transformers.AutoTokenizer.from_pretrained(tmp_path / "base").eos_token_id
    assert a["keep"].tolist() == sorted(set(union.tokens[union.tokens < a["vocab_size"]].tolist()) | {eos})
    assert json.loads((tmp_path / "out" / "config.json").read_text())["producer"]["head_rows_kept"] == len(a["keep"])
    # --epochs: every rank takes an epoch of the fewest anchors' steps (a review: each taking its own, rank 0 with
    # fewer hung in a collective rank 1 never ended); and the run stopped after step 2 and resumed under torchrun is
    # the run left alone (a review: the resume was refused as "saved with different training examples")
    per_epoch = [-(-len(x["anchors"]) // 16) for x in (a, b)]
    assert per_epoch[0] != per_epoch[1]
    whole = json.loads((tmp_path / "whole" / "config.json").read_text())["producer"]
    assert whole["steps"] == json.loads((tmp_path / "resumed" / "config.json").read_text())["producer"]["steps"] \
        == 2 * min(per_epoch)
    assert "interrupted: state saved after step 2" in proc.stderr, proc.stderr[-3000:]
    weights = [load_drafter(tmp_path / name)[1] for name in ("whole", "resumed")]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][key], weights[1][key]) for key in weights[0])


NODES = """
import os, sys
os.chdir(os.path.join(sys.argv[1], "node" + os.environ["RANK"]))  # each rank on a node of its own: no shared disk
from redrafter_trt.cli import main
main(["train", "--base", sys.argv[2], "--data", sys.argv[1] + "/qa.jsonl", "--output", "out", "--cache-dir", "cache",
      "--max-steps", "8", "--predict-n", "2", "--resume"])
"""


@pytest.mark.long
@pytest.mark.parametrize("other", [None, 3])
def test_a_rank_that_cannot_find_rank_0s_state_stops_the_resume_in_one_line(tmp_path, other):
    """Only rank 0 writes the training state, and every rank reads it at the same path: with --resume on nodes that
    share no disk, rank 1 found none and said to run without --resume (which deletes rank 0's state and its steps),
    or found another run's (other steps than rank 0's). Every rank now stops, naming the reason and the fix."""
    base = twenty_sums(tmp_path)
    for rank, step in ((0, 5), (1, other)):
        (tmp_path / f"node{rank}").mkdir()
        if step is not None:
            torch.save({"step": step}, tmp_path / f"node{rank}" / "out.train-state.pt")
    proc = torchrun(NODES, tmp_path, base, fails=True)
    has = "none" if other is None else f"one after step {other}"
    line = (f"error: --resume: torchrun's rank 0 has the training state after step 5 at out.train-state.pt, but at "
            f"that path rank 1 has {has}: every rank reads it there on its own node and only rank 0 writes it, so put "
            f"--output on a file system every node shares (or copy the file to that path on each node), then rerun "
            f"with --resume")
    assert proc.stderr.count(line) == 2, proc.stderr[-3000:]
    assert "run without --resume" not in proc.stderr
    assert proc.stderr.count("Traceback") == 1  # torchrun's own, of ChildFailedError: none of a rank


@pytest.mark.long
def test_a_resume_where_rank_0_has_no_state_stops_every_rank(tmp_path):
    """Rank 0 without a training state failed with the usual error while a rank finding one on its own node (another
    run's) went on alone: distilling or teacher-forcing its shard for as long as that takes before its first
    collective, to fail there. Every rank now stops at once with rank 0's error."""
    base = twenty_sums(tmp_path)
    for rank in (0, 1):
        (tmp_path / f"node{rank}").mkdir()
    torch.save({"step": 3}, tmp_path / "node1" / "out.train-state.pt")
    # rank 1's is another run's, on the same options
    proc = torchrun(NODES.replace("from redrafter_trt.cli import main", "from redrafter_trt.cli import main\n"
                                  "from redrafter_trt.train import loop\n"
                                  "loop.refuse_other = lambda *a, **k: None"), tmp_path, base, fails=True)
    line = ("error: --resume: no training state at out.train-state.pt (a run interrupted before its first step saves "
            "none): run without --resume (the answers and hidden states cached so far are reused)")
    assert proc.stderr.count(line) == 2, proc.stderr[-3000:]
    assert not list((tmp_path / "node1" / "cache").glob("hidden-*")), "rank 1 went on to its teacher-forced pass"


WARNED = """
import sys
from redrafter_trt.cli import main
main(["train", "--base", sys.argv[2], "--data", sys.argv[1] + "/qa.jsonl", "--output", sys.argv[1] + "/out",
      "--cache-dir", sys.argv[1] + "/cache", "--max-steps", "2", "--predict-n", "2", "--max-seq-len", "64"])
"""


@pytest.mark.long
def test_warnings_about_the_data_are_said_once_and_a_shards_name_its_rank(tmp_path):
    """Every rank reads every data file: each said the same warnings about it (a skipped record, duplicates, left-out
    conversations), once per rank. Rank 0 alone says those now; what a rank counts on its own shard (conversations
    cut by --max-seq-len) names the rank, its counts being of that shard, not of the data."""
    base = twenty_sums(tmp_path)
    lines = (tmp_path / "qa.jsonl").read_text().splitlines()
    long = json.dumps({"question": "Say it.", "answer": "word " * 80})
    (tmp_path / "qa.jsonl").write_text("\n".join(lines + [lines[0], '{"question": 3}', '{"question": "x?"}']
                                                 + [long, long.replace("Say", "Tell")]))
    proc = torchrun(WARNED, tmp_path, base)
    for said in ("skipped 1 of 25 records", "dropped 1 duplicate conversations of 24",
                 "left out 1 of 23 conversations with no answer"):
        assert proc.stderr.count(said) == 1, proc.stderr[-3000:]
    cut = [line for line in proc.stderr.splitlines() if "run past --max-seq-len 64" in line]
    assert cut and all("torchrun rank " in line for line in cut), proc.stderr[-3000:]


@pytest.mark.long  # processes or signals: setup.cfg's `long` job (.ci/run)
def test_a_torchrun_run_on_an_output_another_train_writes_is_refused_on_every_rank(tmp_path):
    """Rank 0 holds the output's lock (the state and the drafter are its to write): where another run holds it, every
    rank stops at once with the same line, not rank 0 alone while the others wait in a collective."""
    from redrafter_trt.locks import holding

    base = twenty_sums(tmp_path)
    with holding(tmp_path / "out.train.lock"):  # this process is the other run
        proc = torchrun(WARNED, tmp_path, base, fails=True)
    line = (f"error: another train (process {os.getpid()}) is writing --output {tmp_path}/out and its training state "
            f"{tmp_path}/out.train-state.pt: wait for it to end, or choose another --output")
    assert proc.stderr.count(line) == 2, proc.stderr[-3000:]
    assert not (tmp_path / "cache").exists() and not (tmp_path / "out.train.lock").exists()
