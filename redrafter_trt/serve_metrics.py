"""The reference server's GET /metrics: each forward pass of the running batch (a prefill of the rows joining it, or a
decoding step) as one of TensorRT-LLM's iteration statistics, the JSON list trtllm-serve's /metrics returns
(TensorRT-LLM 1.2: cpp/include/tensorrt_llm/executor/types.h IterationStats, InflightBatchingStats, SpecDecodingStats,
serialized by cpp/tensorrt_llm/executor/jsonSerialization.cpp), with its key names and JSON types.

    log = IterationLog(device)
    log.record(iteration, queued=3, queue_seconds=0.2, max_batch=8, draft_len=4)   # the scheduler thread
    log.take()                                                                      # GET /metrics: each given once

What our runtime has no counterpart for is written as TensorRT-LLM writes it with that feature off (README "Serve
over HTTP"): no paged KV cache manager, so "kvCacheStats": null; inflight batching only, "staticBatchingStats": null;
no dynamic batch tuner, its recommendations 0; no max_num_tokens budget, the maxNumTokens keys 0 (the engine's
`mMaxNumTokensStatic.value_or(0)`); nothing paused (a row is never evicted from the cache); one micro batch (no
pipeline parallelism), microBatchId 0. "cpuMemUsage" is the server process's resident memory (Linux's
/proc/self/statm; 0 where that is absent): TensorRT-LLM counts its own host buffers there, which torch does not count
for us, and the 0 its PyTorch backend writes would say on --device cpu that the weights take nothing.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from datetime import datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # torch loads with the model, not with the HTTP side
    import torch

    from .runtime.decode import Iteration

MAX_ITERATIONS = 1000  # iterations kept for GET /metrics until read (TensorRT-LLM's default keeps 1000 too)


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


class IterationLog:
    """The iterations not read yet, oldest first, at most MAX_ITERATIONS; record and take from any thread."""

    def __init__(self, device: torch.device):
        self.device = device
        self.lock = threading.Lock()
        self.kept: deque[dict] = deque(maxlen=MAX_ITERATIONS)
        self.count = 0

    def _gpu_bytes(self) -> int:
        """The bytes of the tensors the runtime holds on its GPU (weights, KV cache, the step's activations), as
        TensorRT-LLM counts the buffers its own allocator holds there (runtime::MemoryCounters); 0 on CPU."""
        if self.device.type != "cuda":
            return 0
        import torch

        return torch.cuda.memory_allocated(self.device)

    @staticmethod
    def _resident_bytes() -> int:
        """The process's resident memory (weights and KV cache on --device cpu, Python and torch besides), read from
        /proc/self/statm: 0 where there is none (not Linux)."""
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, IndexError):
            return 0

    def take(self, keep: bool = False) -> list[dict]:
        """keep: leave them for the next take (HEAD /metrics, which sends GET's headers)."""
        with self.lock:
            taken = list(self.kept)
            if not keep:
                self.kept = deque(maxlen=MAX_ITERATIONS)
        return taken

    def record(self, it: Iteration, *, queued: int, queue_seconds: float, max_batch: int,
               draft_len: int | None) -> None:
        """`it` as TensorRT-LLM's IterationStats. queued: prompts waiting to start; queue_seconds: the time the rows
        `it` prefilled waited, summed; draft_len: each row's draft (None: no drafter, "specDecodingStats": null)."""
        scheduled = it.context_rows + it.generation_rows
        stats = {
            "timestamp": datetime.now().strftime("%m-%d-%Y %H:%M:%S.%f"),  # common/timestampUtils.cpp's
            "iter": 0,  # numbered as recorded, below
            "iterLatencyMS": _ms(it.seconds),
            "newActiveRequestsQueueLatencyMS": _ms(queue_seconds),
            "numNewActiveRequests": it.context_rows,
            "numActiveRequests": scheduled + it.waiting_rows,
            "numQueuedRequests": queued,
            "numCompletedRequests": it.ended,
            "maxNumActiveRequests": max_batch,
            "maxBatchSizeStatic": max_batch,
            "maxBatchSizeTunerRecommended": 0,
            "maxBatchSizeRuntime": max_batch,
            "maxNumTokensStatic": 0,
            "maxNumTokensTunerRecommended": 0,
            "maxNumTokensRuntime": 0,
            "cpuMemUsage": self._resident_bytes(),
            "gpuMemUsage": self._gpu_bytes(),
            "pinnedMemUsage": 0,  # the runtime pins no host memory
            "kvCacheStats": None,
            "staticBatchingStats": None,
            "inflightBatchingStats": {
                "numScheduledRequests": scheduled,
                "numContextRequests": it.context_rows,
                "numGenRequests": it.generation_rows,
                "numPausedRequests": 0,
                "numCtxTokens": it.context_tokens,
                "microBatchId": 0,
                "avgNumDecodedTokensPerIter": round(it.tokens_per_step, 4),
            },
            "specDecodingStats": None if draft_len is None else _spec_decoding(it, draft_len),
        }
        with self.lock:
            self.count += 1
            stats["iter"] = self.count
            self.kept.append(stats)


def _spec_decoding(it: Iteration, draft_len: int) -> dict:
    """SpecDecodingStats as TensorRT-LLM's PyTorch backend fills it for its own speculative modes (py_executor.py
    _update_iter_stats): each generation row drafted draft_len tokens (one beam's, as TensorRT-LLM counts a ReDrafter
    request's draft tokens in its per-request metrics), numAcceptedTokens / numDraftTokens is the acceptance rate,
    acceptanceLength the tokens per row (0 with no drafts: a prefill), iterLatencyMS the drafter's time and
    draftOverhead its share of the iteration's."""
    rows = it.generation_rows if it.drafted else 0
    return {"numDraftTokens": rows * draft_len, "numAcceptedTokens": it.tokens - rows if rows else 0,
            "numRequestsWithDraftTokens": rows, "acceptanceLength": round(it.tokens / rows, 4) if rows else 0.0,
            "iterLatencyMS": _ms(it.draft_seconds),
            "draftOverhead": round(it.draft_seconds / it.seconds, 4) if it.seconds > 0 else 0.0}
