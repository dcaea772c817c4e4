"""The --engine-dir path with a test double for TensorRT-LLM (this checks the arguments we pass, not that an
engine runs): a clear DependencyError without TensorRT-LLM, ModelRunnerCpp.from_dir / generate arguments, and
how outputs are cut."""

from __future__ import annotations

import sys
import types

import pytest
import torch

from redrafter_trt.errors import DependencyError
from redrafter_trt.runtime import trtllm


def test_missing_tensorrt_llm_is_a_clear_error(tmp_path, monkeypatch):
    (tmp_path / "config.json").write_text("{}")
    monkeypatch.setitem(sys.modules, "tensorrt_llm", None)
    with pytest.raises(DependencyError, match="TensorRT-LLM"):
        trtllm.generate_engine(tmp_path, [[1, 2]], 4, end_id=2, pad_id=2)


class FakeExecutor:
    """Answers every request in two polls (a non-final response first), like the executor's await loop."""

    def __init__(self, outputs: list[list[int]], iters: list[int], leader: bool = True):
        self.outputs, self.iters, self.leader, self.requests, self.polls = outputs, iters, leader, [], 0

    def can_enqueue_requests(self):
        return self.leader

    def enqueue_requests(self, requests):
        self.requests = requests
        return [10 + i for i in range(len(requests))]

    def await_responses(self):
        self.polls += 1
        final = self.polls > 1
        return [types.SimpleNamespace(request_id=10 + i, has_error=lambda: False, error_msg="",
                                      result=types.SimpleNamespace(is_final=final, output_token_ids=[out],
                                                                   decoding_iter=it))
                for i, (out, it) in enumerate(zip(self.outputs, self.iters))]


def install_fake_trtllm(monkeypatch, executor, calls):
    class FakeRunner:
        @classmethod
        def from_dir(cls, **kwargs):
            calls["from_dir"] = kwargs
            runner = cls()
            runner.executor = executor
            return runner

    def record(name):
        return lambda **kwargs: (name, kwargs)

    tllm = types.ModuleType("tensorrt_llm")
    tllm.mpi_rank = lambda: 0
    runtime = types.ModuleType("tensorrt_llm.runtime")
    runtime.ModelRunnerCpp = FakeRunner
    api = types.ModuleType("tensorrt_llm.bindings.executor")
    api.Request, api.SamplingConfig = record("Request"), record("SamplingConfig")
    for name, module in (("tensorrt_llm", tllm), ("tensorrt_llm.runtime", runtime),
                         ("tensorrt_llm.bindings.executor", api)):
        monkeypatch.setitem(sys.modules, name, module)


@pytest.mark.parametrize("temperature", [0.0, 0.7])
def test_runner_arguments_and_outputs(tmp_path, monkeypatch, temperature):
    (tmp_path / "config.json").write_text("{}")
    calls = {}
    executor = FakeExecutor([[1, 2, 3, 7, 8, 2], [4, 5, 9, 9]], iters=[2, 1])
    install_fake_trtllm(monkeypatch, executor, calls)
    res = trtllm.generate_engine(tmp_path, [[1, 2, 3], [4, 5]], 5, end_id=2, pad_id=0, temperature=temperature, seed=3)
    assert calls["from_dir"] == dict(engine_dir=str(tmp_path), rank=0, max_batch_size=2, max_input_len=3,
                                     max_output_len=5, max_beam_width=1)
    kinds = [kind for kind, _ in executor.requests]
    assert kinds == ["Request", "Request"]
    first = executor.requests[0][1]
    assert first["input_token_ids"] == [1, 2, 3] and first["max_tokens"] == 5 and first["end_id"] == 2
    assert first["pad_id"] == 0 and first["streaming"] is False
    kind, sampling = first["sampling_config"]
    assert kind == "SamplingConfig" and sampling["beam_width"] == 1 and sampling["seed"] == 3
    assert sampling == ({"beam_width": 1, "seed": 3, "temperature": temperature} if temperature
                        else {"beam_width": 1, "seed": 3, "top_k": 1})
    assert res.output_ids == [[7, 8, 2], [9, 9]]
    assert res.steps == [2, 1] and res.mean_tokens_per_step == pytest.approx(5 / 3)
    assert executor.polls == 2  # the non-final responses were not taken as results


def test_non_leader_rank_returns_none(tmp_path, monkeypatch):
    (tmp_path / "config.json").write_text("{}")
    executor = FakeExecutor([[1, 2]], iters=[1], leader=False)
    install_fake_trtllm(monkeypatch, executor, {})
    assert trtllm.generate_engine(tmp_path, [[1]], 4, end_id=2, pad_id=2) is None
    assert executor.requests == []
