"""The reference server's GET /metrics on SmolLM2 over HTTP: each prefill and decoding step once, as TensorRT-LLM's
iteration statistics (executor/types.h IterationStats, InflightBatchingStats, SpecDecodingStats; the key names and
JSON types of executor/jsonSerialization.cpp), with measured times and counts that add up to the answers'."""

from __future__ import annotations

import dataclasses
import re
import threading

import pytest

from test_runtime_support import one_thread  # noqa: F401
from test_serve import backend, call, smol_ckpt, url  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")

PROMPTS = ["The capital of France is", "Name a color:"]


def answer_and_metrics(url, backend, body: dict) -> tuple[dict, list[dict]]:
    call(url, "/metrics")  # drop what earlier tests left
    status, out = call(url, "/v1/completions", body)
    assert status == 200, out
    assert backend.wait_idle(60)  # the answer goes out at its last token, the iteration's statistics right after
    status, iterations = call(url, "/metrics")
    assert status == 200 and call(url, "/metrics") == (200, [])  # each iteration is given once
    first = iterations[0]["iter"]
    assert [s["iter"] for s in iterations] == list(range(first, first + len(iterations)))
    return out, iterations


def test_metrics_give_the_prefill_then_each_decoding_step(url, backend):
    """The prefill is an iteration of its own (TensorRT-LLM's context phase: context requests, their prompt tokens,
    no drafts); every later one decodes the rows; the rows scheduled over all iterations are the answers' steps."""
    out, its = answer_and_metrics(url, backend, {"prompt": PROMPTS, "max_tokens": 12})
    prefill, steps = its[0], its[1:]
    ifb = prefill["inflightBatchingStats"]
    assert (ifb["numContextRequests"], ifb["numGenRequests"], ifb["numScheduledRequests"]) == (2, 0, 2)
    assert ifb["numCtxTokens"] == sum(len(backend.encode(p)) for p in PROMPTS)
    assert prefill["numNewActiveRequests"] == prefill["numActiveRequests"] == 2
    assert prefill["specDecodingStats"] == {"numDraftTokens": 0, "numAcceptedTokens": 0,
                                            "numRequestsWithDraftTokens": 0, "acceptanceLength": 0.0,
                                            "iterLatencyMS": 0.0, "draftOverhead": 0.0}
    for s in steps:
        ifb = s["inflightBatchingStats"]
        assert ifb["numContextRequests"] == ifb["numCtxTokens"] == s["numNewActiveRequests"] == 0
        assert ifb["numGenRequests"] == ifb["numScheduledRequests"] == s["numActiveRequests"]
        assert s["newActiveRequestsQueueLatencyMS"] == 0.0
    spec = [s["specDecodingStats"] for s in steps]
    assert all(s["numDraftTokens"] == s["numRequestsWithDraftTokens"] * backend.config.draft_len for s in spec)
    assert all(0 <= s["numAcceptedTokens"] <= s["numDraftTokens"] for s in spec)
    assert sum(s["numCompletedRequests"] for s in its) == 2 and steps[0]["numActiveRequests"] == 2
    # every token after each prompt's first (the prefill's) comes from a step, counted as returned
    emitted = sum(s["numAcceptedTokens"] + s["numRequestsWithDraftTokens"] for s in spec)
    assert emitted == out["usage"]["completion_tokens"] - 2
    assert out["redrafter"]["steps"] == sum(s["inflightBatchingStats"]["numScheduledRequests"] for s in its)
    assert all(s["iterLatencyMS"] > 0 for s in its)
    # TensorRT-LLM's timestamp (common/timestampUtils.cpp getCurrentTimestamp): local time to the microsecond
    assert all(re.fullmatch(r"\d\d-\d\d-\d{4} \d\d:\d\d:\d\d\.\d{6}", s["timestamp"]) for s in its)


def test_metrics_time_the_drafter_within_each_step(url, backend):
    """specDecodingStats.iterLatencyMS is the drafter's time in the step, draftOverhead its share of the step's."""
    _, its = answer_and_metrics(url, backend, {"prompt": PROMPTS, "max_tokens": 12})
    for s in its[1:]:
        spec = s["specDecodingStats"]
        assert 0 < spec["iterLatencyMS"] < s["iterLatencyMS"]
        assert spec["draftOverhead"] == pytest.approx(spec["iterLatencyMS"] / s["iterLatencyMS"], abs=2e-3)


def test_metrics_avg_decoded_tokens_per_iter_is_the_rows_tokens_per_step_so_far(url, backend):
    """inflightBatchingStats.avgNumDecodedTokensPerIter: each generating row's tokens per step before this step
    (TensorRT-LLM's LlmRequest getAvgDecodedTokensPerIter, taken as it schedules the iteration), the prefill's token
    and step counted; 0 with no generating row (the prefill), as TensorRT-LLM writes it."""
    _, its = answer_and_metrics(url, backend, {"prompt": PROMPTS[0], "max_tokens": 12})
    assert its[0]["inflightBatchingStats"]["avgNumDecodedTokensPerIter"] == 0.0
    tokens = 1  # the prefill's
    for k, s in enumerate(its[1:], start=1):
        assert s["inflightBatchingStats"]["avgNumDecodedTokensPerIter"] == round(tokens / k, 4)
        tokens += s["specDecodingStats"]["numAcceptedTokens"] + 1


def test_metrics_count_the_prompts_waiting_and_their_time_in_the_queue(url, backend):
    """Three prompts on a batch of two: the third waits (numQueuedRequests, though its request was taken), then
    joins as a row ends, prefilled while the other row waits; newActiveRequestsQueueLatencyMS sums the time the
    rows a prefill started spent waiting, so the third's covers the iterations before it."""
    before, backend.scheduler.max_batch = backend.scheduler.max_batch, 2
    try:  # "Paris" ends the first answer early (its greedy answer names it), the second runs on
        out, its = answer_and_metrics(url, backend, {"prompt": PROMPTS[:1] + ["Two plus two is", "Red, green and"],
                                                     "max_tokens": 12, "stop": ["Paris"]})
    finally:
        backend.scheduler.max_batch = before
    assert out["choices"][0]["finish_reason"] == "stop"  # the premise: a row ended before the others
    prefills = [(i, s) for i, s in enumerate(its) if s["inflightBatchingStats"]["numContextRequests"]]
    assert [s["inflightBatchingStats"]["numContextRequests"] for _, s in prefills] == [2, 1]
    first, (i, joined) = prefills[0][1], prefills[1]
    assert first["numQueuedRequests"] == 1 and joined["numQueuedRequests"] == 0
    assert all(s["numQueuedRequests"] == 1 for s in its[1:i])
    assert all(s["maxNumActiveRequests"] == 2 for s in its)
    ifb = joined["inflightBatchingStats"]
    assert joined["numActiveRequests"] == 2 and ifb["numScheduledRequests"] == 1 and ifb["numGenRequests"] == 0
    assert joined["newActiveRequestsQueueLatencyMS"] >= sum(s["iterLatencyMS"] for s in its[:i])
    assert 0 < first["newActiveRequestsQueueLatencyMS"] < joined["newActiveRequestsQueueLatencyMS"]


def test_metrics_write_what_trtllm_writes_for_what_the_runtime_lacks(url, backend):
    """No paged KV cache manager (kvCacheStats null), no static batching, no batch tuner, no max_num_tokens budget
    (TensorRT-LLM's 0), nothing paused, one micro batch; no GPU memory on the CPU, no pinned memory; cpuMemUsage the
    process's resident memory (TensorRT-LLM always writes the key); TensorRT-LLM's JSON types (integers as integers, its doubles and floats as numbers with a point)."""
    _, its = answer_and_metrics(url, backend, {"prompt": PROMPTS, "max_tokens": 4})
    for s in its:
        assert s["kvCacheStats"] is None and s["staticBatchingStats"] is None
        assert type(s["cpuMemUsage"]) is int and 50 << 20 < s["cpuMemUsage"] < 64 << 30  # torch alone takes more
        assert (s["maxBatchSizeStatic"], s["maxBatchSizeTunerRecommended"], s["maxBatchSizeRuntime"]) == (
            backend.scheduler.max_batch, 0, backend.scheduler.max_batch)
        assert s["maxNumTokensStatic"] == s["maxNumTokensTunerRecommended"] == s["maxNumTokensRuntime"] == 0
        assert s["gpuMemUsage"] == s["pinnedMemUsage"] == 0
        assert s["inflightBatchingStats"]["numPausedRequests"] == s["inflightBatchingStats"]["microBatchId"] == 0
        doubles = {"iterLatencyMS", "newActiveRequestsQueueLatencyMS"}
        assert all(isinstance(v, float) for k, v in s.items() if k in doubles)
        assert all(type(v) is int for k, v in s.items() if k.startswith(("num", "max", "iter")) and k not in doubles
                   and k != "iterLatencyMS")
        ifb, spec = s["inflightBatchingStats"], s["specDecodingStats"]
        assert all(type(v) is int for k, v in ifb.items() if k != "avgNumDecodedTokensPerIter")
        assert isinstance(ifb["avgNumDecodedTokensPerIter"], float)
        assert all(type(spec[k]) is int for k in ("numDraftTokens", "numAcceptedTokens", "numRequestsWithDraftTokens"))
        assert all(isinstance(spec[k], float) for k in ("acceptanceLength", "iterLatencyMS", "draftOverhead"))


def test_metrics_without_a_drafter_say_specdecodingstats_null(url, backend):
    """Decoding without drafts, each iteration carries "specDecodingStats": null, as TensorRT-LLM's JSON does
    whenever it has no speculative-decoding statistics (an unset std::optional; jsonSerializeOptional.h writes null):
    the key is always there."""
    original = backend.scheduler.config
    try:
        backend.scheduler.config = dataclasses.replace(original, num_beams=0)
        _, its = answer_and_metrics(url, backend, {"prompt": PROMPTS[0], "max_tokens": 4})
    finally:
        backend.scheduler.config = original
    assert len(its) == 4 and all(s["specDecodingStats"] is None for s in its)  # 4 tokens: the prefill + 3 steps


def test_metrics_count_the_tokens_a_request_took_not_those_past_its_own_max_tokens(url, backend, monkeypatch):
    """Two requests in one batch, max_tokens 4 and 12: the batch decodes up to 12, and the step that gives the short
    answer its 4th token accepts a draft past it (alone with max_tokens 5, its 4th and 5th tokens come in one step).
    That token is no part of the answer: the drafts counted accepted add up to the tokens the answers took."""
    alone = call(url, "/v1/completions", {"prompt": PROMPTS[0], "max_tokens": 5})[1]
    assert alone["redrafter"]["steps"] == 4, alone  # the premise: 5 tokens in the prefill and 3 steps
    assert backend.wait_idle(60)  # its batch is over: the two requests start a new one

    def together(real=backend.scheduler._next_batch):  # the scheduler takes the two requests into one batch
        backend.scheduler.wake.wait_for(lambda: len(backend.scheduler.waiting) == 2, 60)
        return real()

    monkeypatch.setattr(backend.scheduler, "_next_batch", together)
    call(url, "/metrics")
    outs = [None, None]

    def post(i, max_tokens):
        outs[i] = call(url, "/v1/completions", {"prompt": PROMPTS[i], "max_tokens": max_tokens})

    threads = [threading.Thread(target=post, args=(i, m)) for i, m in enumerate((4, 12))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert backend.wait_idle(60)
    its = call(url, "/metrics")[1]
    assert [status for status, _ in outs] == [200, 200], outs
    assert its[0]["inflightBatchingStats"]["numContextRequests"] == 2  # the premise: one batch
    taken = sum(out["usage"]["completion_tokens"] for _, out in outs)
    spec = [s["specDecodingStats"] for s in its]
    assert sum(s["numAcceptedTokens"] + s["numRequestsWithDraftTokens"] for s in spec) + 2 == taken
