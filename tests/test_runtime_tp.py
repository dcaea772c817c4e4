"""Tensor parallel: tp=2 (tiny Llama / Qwen2) and tp=3 (SmolLM2, through `run --tp 3`) checkpoints give the same
greedy tokens as tp=1. Each worker process loads only its own rank file."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from redrafter_trt import runtime as rt
from redrafter_trt.cli import main
from redrafter_trt.errors import ConfigError
from redrafter_trt.prompts import load_prompts
from test_runtime_support import (MT_BENCH, chat_prompts, checkpoint, eos_of, fresh_drafter, hf_greedy,  # noqa: F401
                                  one_thread)

pytestmark = pytest.mark.usefixtures("one_thread")
PROMPTS = [[1, 17, 33, 5], [1, 250, 99, 3, 3, 42, 7, 128, 64], [1, 200]]


@pytest.mark.parametrize("fixture", ["tiny_llama"] + [pytest.param(f, marks=pytest.mark.long)
                                                    for f in ("tiny_qwen2", "tiny_qwen3", "tiny_llama_bias")])
def test_tp2_equals_tp1(request, fixture, tiny_drafter):
    base = request.getfixturevalue(fixture)
    kw = dict(num_beams=3, draft_len=3, eos_token_id=eos_of(base), batch_size=2)
    tp1 = rt.generate_tp(checkpoint(base, tiny_drafter, 1, num_beams=3, draft_len=3), PROMPTS, 24, **kw)
    tp2 = rt.generate_tp(checkpoint(base, tiny_drafter, 2, num_beams=3, draft_len=3), PROMPTS, 24, **kw)
    assert tp2.output_ids == tp1.output_ids and tp2.steps == tp1.steps
    assert tp2.output_ids == [hf_greedy(base, p, 24) for p in PROMPTS]  # row-parallel biases added once, not per rank
    sampled = rt.generate_tp(checkpoint(base, tiny_drafter, 2, num_beams=3, draft_len=3), PROMPTS, 8,
                             temperature=0.8, seed=1)
    assert all(1 <= len(o) <= 8 for o in sampled.output_ids)  # sampling decisions are broadcast from rank 0


def test_a_row_parallel_bias_is_added_once_after_the_ranks_partials_are_summed():
    """Each of two ranks holds a partial product and the whole bias: the bias is added after the all-reduce, once,
    not by every rank before it (tp times). The fast check of test_tp2_equals_tp1[tiny_llama_bias]."""
    import torch

    from redrafter_trt.runtime.layer import row_parallel

    def two_ranks(t):  # the all-reduce of two ranks whose inputs are alike
        return t + t

    partial, bias = torch.tensor([1.0, 2.0]), torch.tensor([0.5, -0.5])
    assert torch.equal(row_parallel(partial, bias, two_ranks), torch.tensor([2.5, 3.5]))
    assert torch.equal(row_parallel(partial, None, two_ranks), torch.tensor([2.0, 4.0]))


@pytest.mark.parametrize("dim", [0, 1])
def test_a_sharded_embedding_runs_as_tp1(tiny_llama, tiny_drafter, tmp_path, dim):
    """A TensorRT-LLM base exported with use_parallel_embedding (the two-step flow copies it): embedding_sharding_dim
    1 (each rank holds H/tp columns of vocab_embedding) was looked up as whole rows, a shape error in the first layer
    on every rank; dim 0 (V/tp rows each, nvidia-modelopt's export at tp > 1) is looked up and all-reduced."""
    import shutil

    from safetensors.torch import load_file, save_file

    kw = dict(num_beams=2, draft_len=3, eos_token_id=eos_of(tiny_llama))
    ckpt = tmp_path / "ckpt"
    shutil.copytree(checkpoint(tiny_llama, tiny_drafter, 2, num_beams=2, draft_len=3), ckpt)
    cfg = json.loads((ckpt / "config.json").read_text())
    (ckpt / "config.json").write_text(json.dumps(cfg | {"use_parallel_embedding": True, "embedding_sharding_dim": dim}))
    for r in range(2):
        tensors = load_file(str(ckpt / f"rank{r}.safetensors"))
        name = "transformer.vocab_embedding.weight"
        tensors[name] = tensors[name].chunk(2, dim=dim)[r].contiguous()
        save_file(tensors, str(ckpt / f"rank{r}.safetensors"))
    tp1 = rt.generate(rt.load(checkpoint(tiny_llama, tiny_drafter, 1, num_beams=2, draft_len=3)), PROMPTS, 12, **kw)
    assert rt.generate_tp(ckpt, PROMPTS, 12, **kw).output_ids == tp1.output_ids


def test_tp_loads_only_its_rank_file(tiny_llama, tiny_drafter, monkeypatch):
    from redrafter_trt.runtime import model

    seen = []
    real = model.load_file
    monkeypatch.setattr(model, "load_file", lambda path: seen.append(path) or real(path))
    ckpt = checkpoint(tiny_llama, tiny_drafter, 2)
    rt.load(ckpt, group=rt.TPGroup(1, 2))
    assert [p.rsplit("/", 1)[-1] for p in seen] == ["rank1.safetensors"]


def test_loading_a_checkpoint_at_another_tp_names_the_tp_to_run_it_at(tiny_llama, tiny_drafter):
    """runtime.load of a tp=2 checkpoint in one process (or a tp=1 one as a rank of two) says which tp the checkpoint
    is and how to run it, before reading a rank file whose shards would not fit: a mutant dropping the check left
    "attention shapes of rank 0 do not match config.json: re-run convert" (found by mutation testing in a review)."""
    with pytest.raises(ConfigError, match=r"is a tp=2 checkpoint but the runtime runs tp=1: pass --tp 2 "
                                          r"\(Python: generate_tp\)"):
        rt.load(checkpoint(tiny_llama, tiny_drafter, 2))
    with pytest.raises(ConfigError, match="is a tp=1 checkpoint but the runtime runs tp=2: pass --tp 1"):
        rt.load(checkpoint(tiny_llama, tiny_drafter, 1), group=rt.TPGroup(0, 2))


def _base_and_drafter_logits(group, padded, drafted, ids: list[int]):
    """A launch fn (or tp=1 in this process): the base logits of `padded` on ids, and the drafter logits of `drafted`
    for fixed random contexts and states after a step on three tokens (its RNN, ResBlocks and head all run)."""
    import torch

    base = rt.forward_logits(rt.load(padded, group=group), ids)
    model = rt.load(drafted, group=group)
    g = torch.Generator().manual_seed(0)
    context, state = (torch.randn(3, model.config.hidden_size, generator=g) for _ in range(2))
    with torch.no_grad():
        drafts = model.drafter.logits(context, model.drafter.next_state(state, torch.tensor([5, 77, 200])))
    return base, drafts


def test_tp2_base_logits_of_a_padded_vocabulary_and_drafter_logits_equal_tp1(tiny_llama, tiny_drafter, tmp_path):
    """One tp=2 launch, two checks no other default test made (both found by mutation testing in a review):
    - a base of vocabulary 251 has its lm_head padded to 252 rows (126 a rank): the logits are 251 columns wide, tp=1's
      (a mutant keeping the padding column survived; sampling could then pick a token id past the vocabulary);
    - the drafter's column-parallel layers are all-gathered: a mutant repeating rank 0's slice tp times survived
      every default test (its logits off by up to 3.5), the drafts of a random drafter being rejected alike."""
    import torch
    from test_convert import _trtllm_base_only
    from tinymodels import make_hf

    from redrafter_trt.runtime.tp import launch

    base = make_hf(tmp_path / "hf", "llama", vocab_size=251)
    ids = [1, 17, 33, 5, 250, 100]
    tp1 = _base_and_drafter_logits(rt.TPGroup(), _trtllm_base_only(tmp_path, base, 1),
                                   checkpoint(tiny_llama, tiny_drafter, 1), ids)
    tp2 = launch(_base_and_drafter_logits, 2, _trtllm_base_only(tmp_path, base, 2),
                 checkpoint(tiny_llama, tiny_drafter, 2), ids)
    assert tp1[0].shape == (len(ids), 251)
    for want, got in zip(tp1, tp2):
        torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-5)


@pytest.mark.long
def test_smollm2_tp3_cli_equals_tp1(smollm2, tmp_path):
    drafter = fresh_drafter(smollm2)
    tp1 = checkpoint(smollm2, drafter, 1, num_beams=2, draft_len=2)
    tp3 = checkpoint(smollm2, drafter, 3, num_beams=2, draft_len=2)
    out, prompts = tmp_path / "tp3.json", tmp_path / "p.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in load_prompts(MT_BENCH)[:2]))
    res = CliRunner().invoke(main, ["run", "--checkpoint-dir", str(tp3), "--tokenizer-dir", str(smollm2), "--tp", "3",
                                    "--chat", "--input-file", str(prompts), "--max-output-len", "12",
                                    "--batch-size", "2", "--output-json", str(out)])
    assert res.exit_code == 0, res.output
    got = [r["output_ids"] for r in json.loads(out.read_text())["results"]]
    want = rt.generate(rt.load(tp1), chat_prompts(smollm2, 2), 12, eos_token_id=eos_of(smollm2)).output_ids
    assert got == want


def test_prompts_joining_a_running_tp2_batch_get_their_answers_alone(tiny_llama, tiny_drafter):
    """In-flight batching under tp: rank 0's admit hands two prompts to a batch three steps in; every rank prefills
    and decodes them (rank 0's list is broadcast), and each row gets exactly its tp=1 answer and step count. The
    second comes as a server's does, a Joining of its own max new tokens (5), which every rank ends it at."""
    from redrafter_trt.runtime.decode import Joining
    from redrafter_trt.runtime.ranks import LocalRanks

    kw = dict(num_beams=3, draft_len=3, eos_token_id=eos_of(tiny_llama))
    alone = [rt.generate(rt.load(checkpoint(tiny_llama, tiny_drafter, 1, num_beams=3, draft_len=3)), [p], n, **kw)
             for p, n in zip(PROMPTS, (24, 24, 5))]
    calls = []

    def admit(running):
        calls.append(running)
        return [PROMPTS[1], Joining(PROMPTS[2], 5)] if len(calls) == 3 else []

    ranks = LocalRanks(checkpoint(tiny_llama, tiny_drafter, 2, num_beams=3, draft_len=3))
    try:
        result = ranks.generate(PROMPTS[:1], 24, admit=admit, **kw)
    finally:
        ranks.close()
    assert calls[:3] == [1, 1, 1] and calls[3] == 3  # joined after the third step
    assert result.output_ids == [a.output_ids[0] for a in alone] and result.steps == [a.steps[0] for a in alone]


@pytest.mark.parametrize("callback", ["on_tokens", "admit", "on_step"])
def test_generate_tp_refuses_callbacks_it_cannot_call_here(tiny_llama, tiny_drafter, monkeypatch, callback):
    """generate_tp spawns the ranks: a lambda callback was a PicklingError traceback from multiprocessing, a
    module-level one ran in the rank processes (on every rank, on copies: streamed tokens never reached the caller,
    admit's queue was a copy). A tp=2 checkpoint refuses them in one line, before any rank starts; tp=1 takes them,
    and calls them: on_tokens with each token, admit after the steps (its prompt joins the result), on_step at each
    prefill and decoding step."""
    seen, asked, heard = [], [], []

    def admit(running):
        asked.append(running)
        return [PROMPTS[2]] if len(asked) == 1 else []

    fn = {"on_tokens": lambda i, new, lps: seen.extend(new), "admit": admit, "on_step": heard.append}[callback]
    monkeypatch.setattr(rt, "launch", lambda *a, **k: pytest.fail("a rank started"))
    with pytest.raises(ConfigError, match=f"{callback}: generate_tp runs a tp=2 checkpoint .*LocalRanks"):
        rt.generate_tp(checkpoint(tiny_llama, tiny_drafter, 2), [[1, 2, 3]], 4, **{callback: fn})
    tp1 = checkpoint(tiny_llama, tiny_drafter, 1)
    result = rt.generate_tp(tp1, [[1, 2, 3]], 4, **{callback: fn})
    assert callback != "on_tokens" or seen == result.output_ids[0]
    if callback == "admit":  # the admitted prompt decoded as a row of its own, as it decodes alone
        assert asked and len(result.output_ids) == 2
        assert result.output_ids[1] == rt.generate_tp(tp1, [PROMPTS[2]], 4).output_ids[0]
    if callback == "on_step":  # one prefill, then one call per decoding step (each row's steps count its prefill)
        assert [i.context_rows for i in heard] == [1] + [0] * (result.steps[0] - 1)
        assert len(heard) == sum(result.steps) >= 2
        assert sum(i.tokens for i in heard) == len(result.output_ids[0]) - 1


def test_too_few_gpus_is_one_clear_error_before_any_rank_starts(tiny_llama, tiny_drafter, monkeypatch):
    """A tp=2 checkpoint on CUDA with one GPU visible: generate_tp (run) and LocalRanks (serve) both say so, instead
    of a spawned rank's 'invalid device ordinal'."""
    import torch

    from redrafter_trt.errors import ConfigError
    from redrafter_trt.runtime.ranks import LocalRanks

    ckpt = checkpoint(tiny_llama, tiny_drafter, 2)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(rt, "launch", lambda *a, **k: pytest.fail("a rank was started"))
    for start in (lambda: rt.generate_tp(ckpt, [[1, 2, 3]], 4, device="cuda"), lambda: LocalRanks(ckpt, "cuda")):
        with pytest.raises(ConfigError, match="tp=2 checkpoint but 1 CUDA device"):
            start()


def test_a_prompt_too_long_is_refused_before_any_rank_starts(tiny_llama, tiny_drafter, monkeypatch):
    """run --tp: a prompt + --max-output-len beyond the positions was found by each spawned rank after loading its
    weights (30 s for SmolLM2 at tp 3 on a CPU, minutes for a large model), not before."""
    from redrafter_trt.errors import ConfigError

    ckpt = checkpoint(tiny_llama, tiny_drafter, 2)
    monkeypatch.setattr(rt, "launch", lambda *a, **k: pytest.fail("a rank was started"))
    with pytest.raises(ConfigError, match="500-token prompt \\+ 13 new tokens exceed the model's 512 positions"):
        rt.generate_tp(ckpt, [[1, 2], [3] * 500], 13)


def test_a_broken_rank_file_other_than_rank0s_is_named_by_generate_tp(tiny_llama, tiny_drafter, tmp_path,
                                                                      monkeypatch):
    """generate_tp on a tp=2 checkpoint whose rank1.safetensors was cut short (an interrupted copy): rank 1's
    TensorError was dropped (only rank 0 reported), and rank 0 died in its first collective, so the caller got
    ProcessRaisedException 'Connection closed by peer' from gloo instead of the file to re-convert. Inspect's checks
    (which generate_tp runs as `run` does) name it now, before any rank starts; a rank's own errors reach the caller
    through launch (test_a_rank_that_refuses_ends_the_others_at_once)."""
    import os
    import shutil

    ckpt = tmp_path / "ckpt"
    shutil.copytree(checkpoint(tiny_llama, tiny_drafter, 2), ckpt)
    with open(ckpt / "rank1.safetensors", "r+b") as f:
        f.truncate(os.path.getsize(ckpt / "rank1.safetensors") - 4000)
    monkeypatch.setattr(rt, "launch", lambda *a, **k: pytest.fail("a rank was started"))
    with pytest.raises(ConfigError, match="rank1.safetensors is truncated .*: re-convert it"):
        rt.generate_tp(ckpt, PROMPTS, 4)


def _refuse_on_rank(group, refusing: int, seconds: float) -> str:
    """A launch fn: rank `refusing` refuses; the others wait where its end does not reach them (as in an NCCL
    collective, which waits for its timeout, 10 minutes, where gloo's fails as the peer's sockets close)."""
    import time

    if group.tp_rank == refusing:
        raise ConfigError(f"rank {refusing} refuses")
    time.sleep(seconds)
    return "waited"


@pytest.mark.parametrize("refusing", [0, 1])
def test_a_rank_that_refuses_ends_the_others_at_once(refusing):
    """A rank's RedrafterError (its own rank file cut short, on CUDA) left its process with exit code 0, so mp.spawn
    let the other ranks run on: stuck in an NCCL collective for its timeout before the error was seen (or, from rank
    1, never raised at all when rank 0 returned). A refusing rank now exits 1: spawn ends the others, launch raises,
    and no rank is left running (a mutation review: launch raised without ending them)."""
    import multiprocessing
    import time

    from redrafter_trt.runtime.tp import launch

    start = time.monotonic()
    with pytest.raises(ConfigError, match=f"rank {refusing} refuses"):
        launch(_refuse_on_rank, 2, refusing, 120.0)
    assert time.monotonic() - start < 90  # starting two ranks takes 10-30 s here
    assert not [p.name for p in multiprocessing.active_children() if p.name.startswith("redrafter-tp-rank")]


def _killed_on_rank_1(group) -> None:
    """A launch fn whose rank 1 is killed as the kernel's OOM killer kills."""
    import os
    import signal

    import time

    if group.tp_rank == 1:
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(60)  # rank 0 waits (gloo's collective would fail soon after, NCCL's not for minutes)


def test_a_rank_killed_by_a_signal_is_one_line():
    """A rank killed by a signal (the OOM killer while a tp=N run loads or decodes) left `run --tp` with
    torch.multiprocessing's ProcessExitedException traceback; it is a PeerError naming the rank and the signal, as a
    torchrun peer's end is in train."""
    from redrafter_trt.errors import PeerError
    from redrafter_trt.runtime.tp import launch

    with pytest.raises(PeerError, match="tp rank 1 was killed by SIGKILL"):
        launch(_killed_on_rank_1, 2)


def _exits_on_rank_1(group) -> None:
    """A launch fn whose rank 1 exits 1 once started, leaving no result (as sys.exit in the user's fn does). The
    barrier first: on a loaded machine rank 1 left while rank 0 was still joining gloo's mesh, whose own failure
    ('Connection closed by peer') came back first (CI, session 59)."""
    import time

    import torch.distributed as dist

    dist.barrier()
    if group.tp_rank == 1:
        raise SystemExit(1)
    time.sleep(60)


def test_a_rank_that_exits_after_it_started_is_not_told_to_add_a_main_guard():
    """A rank that exited 1 without a result was taken for a script without a main guard, which fails before
    `_worker` runs; one that started (SystemExit in fn, its result not written on a full disk) is told as such."""
    from redrafter_trt.runtime.tp import launch

    with pytest.raises(Exception, match="tp rank 1 exited with code 1") as raised:
        launch(_exits_on_rank_1, 2)
    assert "__main__" not in str(raised.value)


def test_a_program_ending_with_local_ranks_open_exits(tiny_llama, tiny_drafter, tmp_path):
    """A script that used LocalRanks on a tp=2 checkpoint and ended without close() never exited: multiprocessing's
    exit handler sent the followers SIGTERM, which they ignore, and joined them forever (they wait on the pipe the
    exiting process holds open). They are let go at exit now."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "script.py"
    script.write_text("import sys\nfrom redrafter_trt.runtime.ranks import LocalRanks\n"
                      "if __name__ == '__main__':\n"
                      "    ranks = LocalRanks(sys.argv[1])\n"
                      "    print(ranks.generate([[1, 2, 3]], 4).output_ids, flush=True)\n")
    root = str(Path(__file__).resolve().parents[1])
    try:
        done = subprocess.run([sys.executable, str(script), str(checkpoint(tiny_llama, tiny_drafter, 2))],
                              capture_output=True, text=True, timeout=90, cwd=root,
                              env={**os.environ, "PYTHONPATH": root})
    except subprocess.TimeoutExpired:
        pytest.fail("the script did not exit")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith("[[")
    assert "Traceback" not in done.stderr, done.stderr[-2000:]


def test_local_ranks_opened_in_a_thread_that_ends_says_so(tiny_llama, tiny_drafter, tmp_path):
    """A mutation review: LocalRanks opened in a worker thread that then ended killed the program with
    'redrafter-tp-rank1 exited (code -9) while serving' (its followers get SIGKILL when the thread that started them
    ends, PR_SET_PDEATHSIG). The message names that thread and says to keep LocalRanks in one long-lived thread."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "script.py"
    script.write_text("import sys, threading, time\nfrom redrafter_trt.runtime.ranks import LocalRanks\n"
                      "if __name__ == '__main__':\n"
                      "    box = []\n"
                      "    t = threading.Thread(target=lambda: box.append(LocalRanks(sys.argv[1])), name='loader')\n"
                      "    t.start(); t.join()\n"
                      "    time.sleep(30)\n"  # the watchdog ends this process first
                      "    print(box[0].generate([[1, 2, 3]], 4).output_ids, flush=True)\n")
    root = str(Path(__file__).resolve().parents[1])
    done = subprocess.run([sys.executable, str(script), str(checkpoint(tiny_llama, tiny_drafter, 2))],
                          capture_output=True, text=True, timeout=90, cwd=root, env={**os.environ, "PYTHONPATH": root})
    assert done.returncode == 1 and not done.stdout, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1] == (
        "the thread that opened LocalRanks (loader) ended, and its followers ended with it: open, use and close "
        "LocalRanks in one long-lived thread; exiting"), done.stderr[-2000:]


def test_a_script_without_a_main_guard_is_told_to_add_one(tiny_llama, tiny_drafter, tmp_path):
    """generate_tp in a script's top level, as a notebook cell runs it: every spawned rank runs the script again and
    fails in multiprocessing's bootstrap, and the script got RuntimeError('tp rank 0 exited with code 1'). It is
    one line naming the `if __name__ == "__main__":` guard."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "script.py"
    script.write_text("import sys\nfrom redrafter_trt.errors import RedrafterError\n"
                      "from redrafter_trt.runtime import generate_tp\n"
                      "try:\n"
                      "    generate_tp(sys.argv[1], [[1, 2, 3]], 4)\n"
                      "except RedrafterError as e:\n"  # as the CLI does
                      "    sys.exit(f'error: {e}')\n")
    root = str(Path(__file__).resolve().parents[1])
    done = subprocess.run([sys.executable, str(script), str(checkpoint(tiny_llama, tiny_drafter, 2))],
                          capture_output=True, text=True, timeout=90, cwd=root, env={**os.environ, "PYTHONPATH": root})
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: tp rank") and 'if __name__ == "__main__":' in last, done.stderr[-2000:]


def test_a_program_read_from_standard_input_is_refused_before_ranks_start(tiny_llama, tiny_drafter):
    """`python - <<EOF` with its call under the main guard: each spawned rank runs the calling program again from
    __main__.__file__, '<stdin>', a file that is not there, and the guard's PeerError told it to add the guard it
    has. It is refused before any rank starts, naming standard input and what to do."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    program = ("import sys\nfrom redrafter_trt.errors import RedrafterError\n"
               "from redrafter_trt.runtime import generate_tp\n"
               "if __name__ == '__main__':\n"
               "    try:\n"
               f"        generate_tp({str(checkpoint(tiny_llama, tiny_drafter, 2))!r}, [[1, 2, 3]], 4)\n"
               "    except RedrafterError as e:\n"
               "        sys.exit(f'error: {e}')\n")
    root = str(Path(__file__).resolve().parents[1])
    done = subprocess.run([sys.executable, "-"], input=program, capture_output=True, text=True, timeout=90, cwd=root,
                          env={**os.environ, "PYTHONPATH": root})
    assert done.stderr.strip().splitlines()[-1].startswith("error: ") and "standard input" in done.stderr, \
        done.stderr[-2000:]
    assert "Traceback" not in done.stderr, done.stderr[-2000:]  # no rank started (each printed one)


def test_what_c_code_prints_while_ranks_connect_goes_to_stderr():
    """torch 2.8 / 2.9's gloo (TensorRT-LLM 1.2 pins 2.9) printf's "[Gloo] Rank r is connected to ..." as a group
    connects; C's stdout buffer then wrote it into `run --tp`'s answers. Joining is wrapped in quiet_stdout."""
    import subprocess
    import sys

    script = ("import ctypes\nfrom redrafter_trt.runtime.tp import quiet_stdout\nprint('before', flush=True)\n"
              "with quiet_stdout():\n    ctypes.CDLL(None).printf(b'[Gloo] Rank 0 is connected\\n')\nprint('answer')\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout) == (0, "before\nanswer\n") and "[Gloo] Rank 0" in done.stderr, done


def test_a_broken_rank_file_other_than_rank0s_is_named_by_local_ranks(tiny_llama, tiny_drafter, tmp_path):
    """serve on a tp=2 checkpoint whose rank1.safetensors was cut short after the server's startup check: rank 1
    died with a traceback of its own, and rank 0 logged only 'redrafter-tp-rank1 exited (code 1) while loading'.
    Rank 1 now writes its error as generate_tp's ranks do, and rank 0 names the file in one line."""
    import os
    import shutil
    import subprocess
    import sys
    from pathlib import Path

    ckpt = tmp_path / "ckpt"
    shutil.copytree(checkpoint(tiny_llama, tiny_drafter, 2), ckpt)
    with open(ckpt / "rank1.safetensors", "r+b") as f:
        f.truncate(os.path.getsize(ckpt / "rank1.safetensors") - 4000)
    script = tmp_path / "script.py"
    script.write_text("import sys\nfrom redrafter_trt.errors import RedrafterError\n"
                      "from redrafter_trt.runtime.ranks import LocalRanks\n"
                      "if __name__ == '__main__':\n"
                      "    try:\n"
                      "        LocalRanks(sys.argv[1])\n"
                      "    except RedrafterError as e:\n"  # as the CLI does
                      "        sys.exit(f'error: {e}')\n")
    root = str(Path(__file__).resolve().parents[1])
    done = subprocess.run([sys.executable, str(script), str(ckpt)], capture_output=True, text=True, timeout=90,
                          cwd=root, env={**os.environ, "PYTHONPATH": root})
    assert done.returncode == 1  # the error raised here, or the watchdog's exit when it sees rank 1 end first
    assert "rank1.safetensors is truncated" in done.stderr, done.stderr[-2000:]
    assert "Traceback" not in done.stderr, done.stderr[-2000:]


def test_ranks_share_the_cpus_this_process_may_use(monkeypatch):
    """A review: each rank took os.cpu_count() // tp_size threads, the host's CPUs, though taskset, a container's
    cpuset or a batch scheduler let the process use fewer (torch's own default follows that affinity mask): on 4 of
    a host's 64 CPUs two ranks ran 32 threads each. They share the CPUs the process may use."""
    import os

    from redrafter_trt.runtime.tp import rank_threads

    monkeypatch.setattr(os, "cpu_count", lambda: 64)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(4)), raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # no thread count asked for (below)
    assert [rank_threads(n) for n in (1, 2, 3, 8)] == [4, 2, 1, 1]


def test_ranks_keep_to_the_threads_omp_num_threads_asks(monkeypatch):
    """A walkthrough: README has a shared machine run with OMP_NUM_THREADS=1, yet each tp rank took its share of the
    CPUs whatever it said (torch.set_num_threads overrides the variable): on 16 free-looking CPUs two ranks ran 8
    threads each beside the other users' jobs. A thread count the variable asks for is kept, within the share."""
    import os

    from redrafter_trt.runtime.tp import rank_threads

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    for value, want in (("1", [1, 1, 1]), ("4", [4, 4, 4]), ("12", [12, 8, 4]), ("", [16, 8, 4]), ("x", [16, 8, 4]),
                        ("0", [16, 8, 4])):
        monkeypatch.setenv("OMP_NUM_THREADS", value)
        assert [rank_threads(n) for n in (1, 2, 4)] == want, value
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert [rank_threads(n) for n in (1, 2, 4)] == [16, 8, 4]


def test_a_callback_raising_on_rank0_ends_the_generation_on_every_rank(tiny_llama, tiny_drafter, tmp_path):
    """A review: an on_tokens raising a RedrafterError (a library user's callback) mid-generation was taken for
    arguments every rank refused: it left rank 0 while rank 1 waited in the collective broadcasting its answer, so
    the ranks were out of step from then on (the next generate hung, or answered wrong on gloo); any other exception
    from a callback ended the process. The generation now ends on every rank and rank 0 raises the user's error;
    the ranks go on answering as tp=1 does."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    kw = dict(num_beams=3, draft_len=3, eos_token_id=eos_of(tiny_llama))
    want = rt.generate(rt.load(checkpoint(tiny_llama, tiny_drafter, 1, num_beams=3, draft_len=3)), PROMPTS, 12,
                       **kw).output_ids
    script = tmp_path / "script.py"
    script.write_text(
        "import json, sys\nfrom redrafter_trt.errors import ConfigError\n"
        "from redrafter_trt.runtime.ranks import LocalRanks\n"
        "PROMPTS, KW = json.loads(sys.argv[2]), json.loads(sys.argv[3])\n"
        "def failing(n, error):\n"
        "    calls = []\n"
        "    def callback(*args):\n"
        "        calls.append(args)\n"
        "        if len(calls) == n:\n"
        "            raise error\n"
        "        return [] if len(args) == 1 else None\n"
        "    return callback\n"
        "if __name__ == '__main__':\n"
        "    ranks = LocalRanks(sys.argv[1])\n"
        "    for name, error in (('on_tokens', ConfigError('the user refused')), ('admit', ValueError('no queue')),\n"
        "                        ('on_step', ConfigError('statistics'))):\n"
        "        try:\n"
        "            ranks.generate(PROMPTS, 12, **{name: failing(5, error)}, **KW)\n"
        "            print(name, 'returned', flush=True)\n"
        "        except Exception as e:\n"
        "            print(name, 'raised', type(e).__name__, e, e is error, flush=True)\n"
        "    print(json.dumps(ranks.generate(PROMPTS, 12, logprobs=2, **KW).output_ids), flush=True)\n"
        "    ranks.close()\n")
    root = str(Path(__file__).resolve().parents[1])
    try:
        done = subprocess.run([sys.executable, str(script), str(checkpoint(tiny_llama, tiny_drafter, 2, num_beams=3,
                                                                          draft_len=3)),
                               json.dumps(PROMPTS), json.dumps(kw)],
                              capture_output=True, text=True, timeout=120, cwd=root,
                              env={**os.environ, "PYTHONPATH": root, "OMP_NUM_THREADS": "1"})
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"the ranks hung: {(e.stdout or b'').decode()}")
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert lines[:3] == ["on_tokens raised ConfigError the user refused True", "admit raised ValueError no queue True",
                         "on_step raised ConfigError statistics True"], done.stdout + done.stderr[-2000:]
    assert json.loads(lines[3]) == want


@pytest.mark.parametrize("failing", ["on_tokens", "admit", "on_step"])
def test_a_callback_raising_ends_the_generation_within_a_step(tiny_llama, tiny_drafter, failing):
    """A review's mutant (`_Guard.on_tokens` no longer asking every row to end once a callback had raised) passed the
    test above: every rank then decoded to max_new_tokens before rank 0 raised. Rank 0's guarded callbacks, as
    LocalRanks.generate passes them, on a tp=1 checkpoint (the followers take rank 0's answers): the generation ends
    within a step of the error, with max_new_tokens far beyond."""
    from redrafter_trt.runtime.ranks import _Guard

    calls = []

    def callback(*args):
        calls.append(args)
        if len(calls) == 3:
            raise ValueError("the user's error")
        return [] if failing == "admit" else None

    guard = _Guard(*(callback if name == failing else None for name in ("on_tokens", "admit", "on_step")))
    after = []  # the forward passes whose on_step comes after the error: the one on_tokens or admit raised in, and
    # one more, where the rows already told to go on report again and are asked to end

    def on_step(it):
        if guard.error is not None:
            after.append(it)
        guard.on_step(it)

    model = rt.load(checkpoint(tiny_llama, tiny_drafter, 1, num_beams=3, draft_len=3))
    result = rt.generate(model, PROMPTS, 200, num_beams=3, draft_len=3, on_tokens=guard.on_tokens,
                         admit=guard.admit if failing == "admit" else None, on_step=on_step)
    assert isinstance(guard.error, ValueError) and len(calls) == 3
    assert len(after) <= 2 and all(len(o) < 50 for o in result.output_ids), (len(after), result.steps)


@pytest.mark.parametrize("gpus, visible", [(1, "but 1 CUDA device is visible"), (2, "but 2 CUDA devices are visible")])
def test_too_few_gpus_are_counted_and_name_only_tp_sizes_convert_takes(smollm2, monkeypatch, gpus, visible):
    """The refusal said '1 CUDA device(s) are visible'. A tp-3 SmolLM2 checkpoint on 2 GPUs was told to convert with
    'a smaller --tp-size': 2 is refused by convert (it does not divide the 9 heads); the size named is convert's, 1."""
    import torch

    from redrafter_trt.runtime import open_checkpoint
    from redrafter_trt.runtime.tp import require_gpus

    tp3 = open_checkpoint(checkpoint(smollm2, fresh_drafter(smollm2), 3, num_beams=2, draft_len=2))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    with pytest.raises(ConfigError, match=f"^{tp3} is a tp=3 checkpoint {visible}: run on 3 GPUs, or convert again "
                                          f"with --tp-size 1$"):
        require_gpus("cuda", tp3)


def test_exactly_as_many_gpus_as_ranks_are_enough(tiny_llama, tiny_drafter, monkeypatch):
    """A tp=2 checkpoint on 2 visible GPUs runs (rank r on cuda:r): only fewer GPUs than ranks are refused."""
    import torch

    from redrafter_trt.runtime import open_checkpoint
    from redrafter_trt.runtime.tp import require_gpus

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert require_gpus("cuda", open_checkpoint(checkpoint(tiny_llama, tiny_drafter, 2))) is None


def test_the_launchers_os_calls_degrade_where_windows_lacks_them(monkeypatch, capfd):
    """Windows has no signal.pthread_sigmask, and its ctypes cannot open the process itself (CDLL(None) raises
    TypeError): starting the ranks raised AttributeError, and every rank TypeError. Without them a Ctrl-C while the
    ranks start is not held, gloo's printf is not flushed first and no rank dies with its parent."""
    import ctypes
    import os
    import signal

    from redrafter_trt.runtime.tp import children_ignore_sigint, die_with_parent, quiet_stdout

    def no_self(name, *args, **kwargs):
        if name is None:
            raise TypeError("argument of type 'NoneType' is not iterable")
        return real(name, *args, **kwargs)

    real = ctypes.CDLL
    monkeypatch.setattr(ctypes, "CDLL", no_self)
    for name in ("pthread_sigmask", "SIG_BLOCK", "SIG_UNBLOCK"):
        monkeypatch.delattr(signal, name)
    die_with_parent(os.getppid())  # returns: not Linux
    with quiet_stdout():
        os.write(1, b"[Gloo] Rank 0 is connected\n")
    os.write(1, b"answer\n")
    assert capfd.readouterr() == ("answer\n", "[Gloo] Rank 0 is connected\n")
    handler = signal.getsignal(signal.SIGINT)
    with children_ignore_sigint():
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    assert signal.getsignal(signal.SIGINT) is handler


def _local_ranks_script(tmp_path, body: str, *args: str) -> list[str]:
    """Run `body` in a script of its own (a failing follower ends the process it runs in) after
    `ranks = LocalRanks(sys.argv[1])`, with PROMPTS and `KW` (json in sys.argv[2]); its stdout lines."""
    import os
    import subprocess
    import sys
    import textwrap
    from pathlib import Path

    script = tmp_path / "script.py"
    script.write_text("import json, sys, threading\nfrom redrafter_trt.runtime.ranks import LocalRanks\n"
                      f"PROMPTS = {PROMPTS!r}\n"
                      "if __name__ == '__main__':\n    KW = json.loads(sys.argv[2])\n"
                      "    ranks = LocalRanks(sys.argv[1])\n" + textwrap.indent(textwrap.dedent(body), "    "))
    root = str(Path(__file__).resolve().parents[1])
    try:
        done = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=180,
                              cwd=root, env={**os.environ, "PYTHONPATH": root, "OMP_NUM_THREADS": "1"})
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"the ranks hung: {(e.stdout or b'').decode()}")
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    return done.stdout.splitlines()


def test_a_wrong_keyword_to_local_ranks_is_raised_in_the_caller_and_the_ranks_go_on(tiny_llama, tiny_drafter,
                                                                                    tmp_path):
    """A review: ranks.generate(..., top_p=0.9) on a tp=2 checkpoint ended the caller's process: the job went to the
    follower before rank 0 checked it, and the follower's TypeError made it leave (exit 1, and rank 0 with it). The
    arguments are bound and checked before any is sent; the TypeError names the method called."""
    kw = dict(num_beams=3, draft_len=3, eos_token_id=eos_of(tiny_llama))
    want = rt.generate(rt.load(checkpoint(tiny_llama, tiny_drafter, 1, num_beams=3, draft_len=3)), PROMPTS, 8,
                       **kw).output_ids
    lines = _local_ranks_script(tmp_path, """
        for bad in ({"top_p": 0.9}, {"temperature": "0.5"}, {"eos_token_id": -1}):
            try:
                ranks.generate(PROMPTS, 8, **bad)
                print("returned")
            except Exception as e:
                print(type(e).__name__, e)
        print(json.dumps(ranks.generate(PROMPTS, 8, **KW).output_ids))
        ranks.close()
        """, str(checkpoint(tiny_llama, tiny_drafter, 2, num_beams=3, draft_len=3)), json.dumps(kw))
    assert lines[:3] == ["TypeError LocalRanks.generate() got an unexpected keyword argument 'top_p'",
                         "ConfigError temperature='0.5': it must be a number",
                         "ConfigError eos_token_id -1 is outside the vocabulary (0..255): pass the base model's "
                         "tokenizer's eos_token_id"], lines
    assert json.loads(lines[3]) == want


def test_local_ranks_called_from_two_threads_answer_one_call_after_the_other(tiny_llama, tiny_drafter, tmp_path):
    """A review: two threads calling ranks.generate at once on a tp=2 checkpoint interleaved their collectives: gloo
    aborted ('Received data size doesn't match expected size'), rank 1 died of SIGABRT and the process ended. Calls
    take turns."""
    kw = dict(num_beams=3, draft_len=3, eos_token_id=eos_of(tiny_llama))
    model = rt.load(checkpoint(tiny_llama, tiny_drafter, 1, num_beams=3, draft_len=3))
    want = [rt.generate(model, PROMPTS[:2], 16, **kw).output_ids, rt.generate(model, PROMPTS[2:], 8, **kw).output_ids]
    lines = _local_ranks_script(tmp_path, """
        answers = [None, None]
        def call(i, prompts, n):
            answers[i] = ranks.generate(prompts, n, **KW).output_ids
        threads = [threading.Thread(target=call, args=(0, PROMPTS[:2], 16)),
                   threading.Thread(target=call, args=(1, PROMPTS[2:], 8))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        print(json.dumps(answers))
        ranks.close()
        """, str(checkpoint(tiny_llama, tiny_drafter, 2, num_beams=3, draft_len=3)), json.dumps(kw))
    assert json.loads(lines[0]) == want


def test_local_ranks_give_the_callers_torch_threads_back(tiny_llama, tiny_drafter, tmp_path, monkeypatch):
    """A review: LocalRanks on a tp=2 checkpoint left the calling process on its rank's share of the CPUs
    (torch.set_num_threads as rank 0 joined: 2 threads became 1 for good), after close() and after a failed start.
    Rank 0 keeps its share while the ranks are open; the caller's count comes back after. Also (a mutation review):
    close() lets the followers leave on their own (exit code 0, not killed), and neither a start nor a failed one
    leaves its results folder in the temporary directory."""
    import tempfile

    import torch

    from redrafter_trt.runtime.ranks import LocalRanks
    from redrafter_trt.runtime.tp import rank_threads

    ckpt = checkpoint(tiny_llama, tiny_drafter, 2, num_beams=3, draft_len=3)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    threads = rank_threads(2) + 1  # more than a rank's share
    torch.set_num_threads(threads)
    ranks = LocalRanks(ckpt)
    try:
        assert torch.get_num_threads() == rank_threads(2)
        ranks.generate(PROMPTS, 4)
    finally:
        ranks.close()
    assert torch.get_num_threads() == threads
    assert [p.exitcode for p in ranks.procs] == [0]
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".redrafter-tp")]

    def fails(*args, **kwargs):
        raise ConfigError("rank 0 cannot load")

    monkeypatch.setattr(rt, "load", fails)
    with pytest.raises(ConfigError, match="rank 0 cannot load"):
        LocalRanks(ckpt)
    assert torch.get_num_threads() == threads
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".redrafter-tp")]


def _python(tmp_path, *args, program: str | None = None) -> str:
    """The stderr of `python -m redrafter_trt ARGS`, or of `program` (a script's text) run with ARGS, from the
    repository root; asserting exit 0."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    if program is not None:
        (tmp_path / "program.py").write_text(program)
    command = [sys.executable, *(["-m", "redrafter_trt"] if program is None else [str(tmp_path / "program.py")])]
    root = str(Path(__file__).resolve().parents[1])
    done = subprocess.run([*command, *map(str, args)], capture_output=True, text=True, timeout=180, cwd=root,
                          env={**os.environ, "PYTHONPATH": root, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stderr


@pytest.mark.long  # processes or signals: setup.cfg's `long` job (.ci/run)
def test_verbose_reaches_the_spawned_ranks(tiny_llama, tiny_drafter, tmp_path):
    """`-v run --tp 2` printed no rank's "loaded ... rank r/2" line, and a rank's warning lost the CLI's format: the
    spawned ranks never got its logging.basicConfig. They take the parent's root level and format now; a library
    caller who configured no logging still gets nothing more from them."""
    import shutil
    from pathlib import Path

    from test_build import save_byte_tokenizer

    tok = Path(shutil.copytree(tiny_llama, tmp_path / "tok"))
    save_byte_tokenizer(tok)
    ckpt = checkpoint(tiny_llama, tiny_drafter, 2)
    run = ("run", "--checkpoint-dir", ckpt, "--tokenizer-dir", tok, "--tp", "2", "--input-text", "hi",
           "--max-output-len", "2")
    err = _python(tmp_path, "-v", *run)
    for r in (0, 1):
        assert f"INFO redrafter_trt.runtime: loaded {ckpt} rank {r}/2" in err, err[-2000:]
    assert "rank 0/2" not in _python(tmp_path, *run)  # without -v: warnings only, in every rank
    err = _python(tmp_path, ckpt, program="import sys\nfrom redrafter_trt import runtime as rt\n"
                                          "if __name__ == '__main__':\n"
                                          "    rt.generate_tp(sys.argv[1], [[1, 2, 3]], 2)\n")
    assert "rank 0/2" not in err and "INFO" not in err, err[-2000:]


def test_local_ranks_followers_log_as_their_caller_configured(tiny_llama, tiny_drafter, tmp_path):
    """serve's ranks (LocalRanks): a follower logged nothing at INFO and its warnings without the caller's format.
    It takes the caller's root level and format now."""
    ckpt = checkpoint(tiny_llama, tiny_drafter, 2)
    err = _python(tmp_path, ckpt, program="import logging, sys\nfrom redrafter_trt.runtime.ranks import LocalRanks\n"
                                          "if __name__ == '__main__':\n"
                                          "    logging.basicConfig(level=logging.INFO, "
                                          "format='[%(levelname)s] %(name)s: %(message)s')\n"
                                          "    LocalRanks(sys.argv[1]).close()\n")
    for r in (0, 1):
        assert f"[INFO] redrafter_trt.runtime: loaded {ckpt} rank {r}/2" in err, err[-2000:]
