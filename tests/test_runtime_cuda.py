"""The reference runtime and `train` on a CUDA GPU (marker `gpu`, deselected by default; run
`python -m pytest -m gpu tests/test_runtime_cuda.py` on a machine with CUDA). `REDRAFTER_TEST_DEVICE=cpu` runs the
same checks on the CPU (to try the module without a GPU; it proves nothing about CUDA).

float32 on the GPU must give the CPU's logits (tight tolerance) and, plain and speculative, transformers' greedy
tokens from the same GPU. float16 and bfloat16 must keep the float32 argmax almost everywhere and generate; their
speculative output is not compared with plain decoding token for token: verifying a tree rounds differently from a
one-token forward, so in 16-bit a near tie can flip (seen on CPU in bfloat16), as it can in TensorRT-LLM.
Training on the GPU must lower the loss, write a drafter the CPU loads, repeat itself under one seed and record
the GPU in its caches.
`acceptance`'s replay must count what drafted decoding counts there (also in bfloat16), a float16 overflow must be
the one-line error, and `serve --device cuda` must answer as transformers does on the same GPU. On two GPUs, tp=2
(NCCL) must give tp=1's tokens."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import urllib.request

import pytest
import torch

from redrafter_trt import runtime as rt
from redrafter_trt.drafter import load_drafter
from redrafter_trt.errors import ConfigError
from redrafter_trt.replay import greedy_pass, replay
from redrafter_trt.train import train_drafter
from test_replay import measured
from test_runtime_support import LookupDrafter, chat_prompts, checkpoint, eos_of, fresh_drafter, hf_greedy
from test_train_loop import _cfg, chat_base, qa_file  # noqa: F401  (fixtures)

DEVICE = os.environ.get("REDRAFTER_TEST_DEVICE", "cuda")
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(DEVICE == "cuda" and not torch.cuda.is_available(), reason="needs a CUDA GPU")]

IDS = [1, 17, 33, 5, 250, 99, 3, 3, 42, 7, 128, 64, 200, 11]
TINY_PROMPTS = [[1, 17, 33, 5], [1, 250, 99, 3, 3, 42, 7, 128, 64], [1, 200], [1, 11, 12, 13, 14, 15, 16]]


def hf_greedy_on_device(base, prompts: list[list[int]], max_new_tokens: int) -> list[list[int]]:
    """transformers' greedy `generate` on DEVICE in float32, batch 1, cut after the first EOS."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).to(DEVICE).eval()
    eos = eos_of(base)
    eos = set(eos if isinstance(eos, list) else [eos])
    outs = []
    with torch.no_grad():
        for p in prompts:
            x = torch.tensor([p], device=DEVICE)
            new = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=max_new_tokens,
                                 do_sample=False)[0, len(p):].tolist()
            cut = next((i + 1 for i, t in enumerate(new) if t in eos), len(new))
            outs.append(new[:cut])
    return outs


def test_float32_logits_equal_cpu(smollm2):
    ckpt = checkpoint(smollm2, fresh_drafter(smollm2), 1)
    cpu = rt.forward_logits(rt.load(ckpt), IDS)
    gpu = rt.forward_logits(rt.load(ckpt, device=DEVICE), IDS)
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-3, rtol=1e-3)


def test_float32_greedy_equals_transformers(smollm2):
    model = rt.load(checkpoint(smollm2, fresh_drafter(smollm2), 1), device=DEVICE)
    prompts = chat_prompts(smollm2, 4)
    refs = hf_greedy_on_device(smollm2, prompts, 48)
    eos = eos_of(smollm2)
    assert rt.generate(model, prompts, 48, eos_token_id=eos, use_draft=False).output_ids == refs
    assert rt.generate(model, prompts, 48, eos_token_id=eos, num_beams=4, draft_len=4).output_ids == refs


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_qwen2"])
def test_tiny_speculative_exact_with_accepted_drafts(request, fixture, tiny_drafter):
    """A lookup drafter gets many drafts accepted, rows accepting different counts: the tree verification and the
    KV compaction run on the GPU, and the output is still transformers' greedy output."""
    base = request.getfixturevalue(fixture)
    refs = [hf_greedy(base, p, 40) for p in TINY_PROMPTS]
    assert hf_greedy_on_device(base, TINY_PROMPTS, 40) == refs
    model = rt.load(checkpoint(base, tiny_drafter, 1, num_beams=3, draft_len=4), device=DEVICE)
    model = dataclasses.replace(model, drafter=LookupDrafter([p + r for p, r in zip(TINY_PROMPTS, refs)], 256,
                                                             seed=1))
    res = rt.generate(model, TINY_PROMPTS, 40, eos_token_id=eos_of(base))
    assert res.output_ids == refs
    assert res.mean_tokens_per_step > 1.5 and len({tuple(a) for a in res.accepted}) > 1


@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_half_dtypes(smollm2, dtype):
    ckpt = checkpoint(smollm2, fresh_drafter(smollm2), 1)
    ref = rt.forward_logits(rt.load(ckpt, device=DEVICE), IDS)
    model = rt.load(ckpt, device=DEVICE, dtype=dtype)
    half = rt.forward_logits(model, IDS)
    assert (half.argmax(-1) == ref.argmax(-1)).float().mean() > 0.9
    res = rt.generate(model, chat_prompts(smollm2, 4), 48, eos_token_id=eos_of(smollm2))
    assert all(out for out in res.output_ids) and res.mean_tokens_per_step >= 1.0


def test_train_on_device_learns_and_repeats_under_one_seed(chat_base, qa_file, tmp_path):  # noqa: F811
    losses = []
    a = train_drafter(_cfg(chat_base, qa_file, tmp_path / "a", max_steps=40, device=DEVICE),
                      on_progress=lambda p: p.stats and losses.append(p.stats.loss))
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5
    b = train_drafter(_cfg(chat_base, qa_file, tmp_path / "b", max_steps=40, device=DEVICE))
    ta, tb = load_drafter(a)[1], load_drafter(b)[1]  # loads on the CPU
    assert all(t.device.type == "cpu" for t in ta.values())
    assert all(torch.equal(ta[k], tb[k]) for k in ta)


def test_train_on_device_resumes_as_uninterrupted(chat_base, qa_file, tmp_path):  # noqa: F811
    """--resume on the GPU (the saved state is read onto the CPU, the kept rows compared across devices)."""
    whole = load_drafter(train_drafter(_cfg(chat_base, qa_file, tmp_path / "whole", device=DEVICE)))[1]

    def interrupt(p):
        if p.stage == "train" and p.done == 6:
            raise KeyboardInterrupt

    cfg = _cfg(chat_base, qa_file, tmp_path / "cut", device=DEVICE)
    with pytest.raises(KeyboardInterrupt):
        train_drafter(cfg, on_progress=interrupt)
    cfg.resume = True
    resumed = load_drafter(train_drafter(cfg))[1]
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)


def test_train_caches_record_the_gpu_and_a_cpu_rerun_names_it(chat_base, qa_file, tmp_path, caplog):  # noqa: F811
    """`train --distill --device cuda` records the GPU's model in every cache file it writes (distilled answers with
    their hidden states, soft targets). A rerun on the same GPU reuses them without a word: train hands its device to
    distill, which compares the answers' device with it before any base is loaded (without the hand-off it compared
    them with the CPU, and said the GPU's own answers came from another device; the check before, a CPU rerun alone,
    passed without it). A rerun on the CPU over the same cache (float32 both times: one folder) reuses them, warning
    once for the answers and once for the soft targets, each naming both devices."""
    import logging

    from redrafter_trt.io import read_metadata
    from redrafter_trt.train.chunks import describe_device

    cache = tmp_path / "cache"
    kw = dict(distill=True, distill_max_new_tokens=8, base_dtype="float32", max_steps=4, cache_dir=cache)
    train_drafter(_cfg(chat_base, qa_file, tmp_path / "gpu", device=DEVICE, **kw))
    here = describe_device(torch.device(DEVICE))
    if DEVICE == "cuda":
        assert torch.cuda.get_device_name() in here
    records = [read_metadata(f) for f in cache.rglob("*.safetensors")]
    assert len(records) >= 3 and all(r.get("device_name") == here for r in records), records
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        train_drafter(_cfg(chat_base, qa_file, tmp_path / "again", device=DEVICE, **kw))
    assert "computed on" not in caplog.text, caplog.text
    with caplog.at_level(logging.WARNING):
        train_drafter(_cfg(chat_base, qa_file, tmp_path / "cpu", device="cpu", **kw))
    named = f"computed on {here}, not {describe_device(torch.device('cpu'))}"
    assert (named in caplog.text) == (DEVICE != "cpu"), caplog.text
    assert all((f"{w} {named}" in caplog.text) == (DEVICE != "cpu") for w in ("distilled answers", "soft targets"))


@pytest.mark.parametrize("dtype", [None, "bfloat16"])
def test_replay_counts_what_decoding_counts_on_device(tiny_llama, tiny_drafter, dtype):
    """`acceptance` on the GPU: one greedy pass and the replayed beam searches give drafted decoding's steps and
    histogram (in bfloat16 its float32 contexts once broke every 16-bit checkpoint)."""
    model = rt.load(checkpoint(tiny_llama, tiny_drafter, 1, num_beams=3, draft_len=4), device=DEVICE, dtype=dtype)
    outputs, contexts = greedy_pass(model, TINY_PROMPTS, 20, [])
    for w, n in [(1, 2), (3, 4)]:
        r = replay(model.drafter, outputs, contexts, w, n)
        steps, hist, _ = measured(model, TINY_PROMPTS, 20, [], w, n)
        assert (r.steps, r.histogram) == (steps, hist), (w, n)


def test_float16_overflow_is_one_clear_error_on_device(tiny_llama, tiny_drafter):
    model = rt.load(checkpoint(tiny_llama, tiny_drafter, 1), device=DEVICE, dtype="float16")
    model.base.ln_f.fill_(6e4)  # 6e4 x |normed| > 65504
    with pytest.raises(ConfigError, match="overflowed float16"):
        rt.generate(model, [[1, 2, 3]], 4)


def test_serve_on_device_answers_as_transformers(smollm2):
    """`serve --device cuda` in its own process: three prompts in one request on a batch of two (the third joins
    as a row ends), each transformers' greedy answer on the same GPU; SIGTERM stops it cleanly."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(smollm2)
    texts = ["The capital of France is", "def fibonacci(n):", "Three primary colours are"]
    want = [tok.decode(ids, skip_special_tokens=True)
            for ids in hf_greedy_on_device(smollm2, [tok(t).input_ids for t in texts], 24)]
    ckpt = checkpoint(smollm2, fresh_drafter(smollm2), 1, num_beams=3, draft_len=3)
    proc = subprocess.Popen([sys.executable, "-m", "redrafter_trt", "serve", "--checkpoint-dir", str(ckpt),
                             "--tokenizer-dir", str(smollm2), "--port", "0", "--device", DEVICE,
                             "--max-batch-size", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        address = re.search(r"(http://[\d.:]+)/v1", line)
        assert address, (line, proc.stderr.read() if proc.poll() is not None else "")
        body = json.dumps({"prompt": texts, "max_tokens": 24}).encode()
        req = urllib.request.Request(address.group(1) + "/v1/completions", data=body,
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=300) as r:
            out = json.loads(r.read())
        with urllib.request.urlopen(address.group(1) + "/metrics", timeout=60) as r:
            iterations = json.loads(r.read())
    finally:
        proc.send_signal(signal.SIGTERM)
        rest, err = proc.communicate(timeout=120)
    assert [c["text"] for c in sorted(out["choices"], key=lambda c: c["index"])] == want
    # /metrics: the tensors held on the GPU (the weights at least: half the checkpoint's bytes, in case a tied
    # lm_head is held once), 0 on the CPU; the drafter timed between two CUDA events, within the step
    weights = sum(f.stat().st_size for f in ckpt.glob("*.safetensors"))
    assert all((s["gpuMemUsage"] >= weights // 2) == (DEVICE == "cuda") for s in iterations), iterations
    steps = [s for s in iterations if s["inflightBatchingStats"]["numGenRequests"]]
    assert steps and all(0 < s["specDecodingStats"]["iterLatencyMS"] < s["iterLatencyMS"] for s in steps), steps
    assert proc.returncode == 0 and "stopped" in rest, (proc.returncode, err[-2000:])


@pytest.mark.skipif(DEVICE != "cuda" or torch.cuda.device_count() != 1, reason="needs exactly one CUDA GPU")
def test_tp2_checkpoint_on_one_gpu_is_one_clear_error(tiny_llama, tiny_drafter):
    with pytest.raises(ConfigError, match="tp=2 checkpoint but 1 CUDA device"):
        rt.generate_tp(checkpoint(tiny_llama, tiny_drafter, 2), [[1, 2, 3]], 4, device="cuda")


@pytest.mark.skipif(DEVICE == "cuda" and torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_tp2_on_two_devices_answers_as_tp1(tiny_llama, tiny_drafter):
    """tp=2 on two GPUs (NCCL, rank r on cuda:r), in fresh processes and kept loaded (serve's LocalRanks, with a
    prompt admitted mid-batch and sampling decisions broadcast): the tp=1 tokens and steps on the same device."""
    from redrafter_trt.runtime.ranks import LocalRanks

    kw = dict(num_beams=3, draft_len=3, eos_token_id=eos_of(tiny_llama))
    tp2 = checkpoint(tiny_llama, tiny_drafter, 2, num_beams=3, draft_len=3)
    tp1 = rt.generate(rt.load(checkpoint(tiny_llama, tiny_drafter, 1, num_beams=3, draft_len=3), device=DEVICE),
                      TINY_PROMPTS, 24, **kw)
    res = rt.generate_tp(tp2, TINY_PROMPTS, 24, device=DEVICE, **kw)
    assert (res.output_ids, res.steps) == (tp1.output_ids, tp1.steps)
    ranks = LocalRanks(tp2, device=DEVICE)
    try:
        joined = ranks.generate(TINY_PROMPTS[:1], 24, admit=lambda running, left=[TINY_PROMPTS[1:]]:
                                left.pop() if left else [], **kw)
        sampled = ranks.generate(TINY_PROMPTS, 8, num_beams=3, draft_len=3, temperature=0.8, seed=1)
    finally:
        ranks.close()
    assert (joined.output_ids, joined.steps) == (tp1.output_ids, tp1.steps)
    assert all(1 <= len(o) <= 8 for o in sampled.output_ids)
