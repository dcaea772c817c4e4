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


@pytest.mark.parametrize("temperature", [0.0, 0.7])
def test_runner_arguments_and_outputs(tmp_path, monkeypatch, temperature):
    (tmp_path / "config.json").write_text("{}")
    calls = {}

    class FakeRunner:
        @classmethod
        def from_dir(cls, **kwargs):
            calls["from_dir"] = kwargs
            return cls()

        def generate(self, batch_input_ids, **kwargs):
            calls["generate"] = (batch_input_ids, kwargs)
            ids = torch.zeros(2, 1, 10, dtype=torch.int32)
            ids[0, 0, :6] = torch.tensor([1, 2, 3, 7, 8, 2])
            ids[1, 0, :4] = torch.tensor([4, 5, 9, 9])
            return {"output_ids": ids, "sequence_lengths": torch.tensor([[6], [4]])}

    tllm = types.ModuleType("tensorrt_llm")
    tllm.mpi_rank = lambda: 0
    runtime = types.ModuleType("tensorrt_llm.runtime")
    runtime.ModelRunnerCpp = FakeRunner
    monkeypatch.setitem(sys.modules, "tensorrt_llm", tllm)
    monkeypatch.setitem(sys.modules, "tensorrt_llm.runtime", runtime)
    res = trtllm.generate_engine(tmp_path, [[1, 2, 3], [4, 5]], 5, end_id=2, pad_id=0, temperature=temperature, seed=3)
    assert calls["from_dir"] == dict(engine_dir=str(tmp_path), rank=0, max_batch_size=2, max_input_len=3,
                                     max_output_len=5, max_beam_width=1)
    inputs, kwargs = calls["generate"]
    assert [t.tolist() for t in inputs] == [[1, 2, 3], [4, 5]] and inputs[0].dtype == torch.int32
    assert kwargs["max_new_tokens"] == 5 and kwargs["end_id"] == 2 and kwargs["pad_id"] == 0
    assert kwargs["random_seed"] == 3 and kwargs["return_dict"] and kwargs["output_sequence_lengths"]
    assert (kwargs.get("temperature") == temperature) if temperature else (kwargs.get("top_k") == 1)
    assert res.output_ids == [[7, 8, 2], [9, 9]]
