"""FP8 calibration on CPU (`quantize.export_fp8_base`): the model computes in float32 (half-precision matmuls are many
times slower there), on the weights rounded to the checkpoint's dtype, as TensorRT-LLM's quantize.py loads them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

pytest.importorskip("modelopt.torch.quantization", reason="FP8 needs nvidia-modelopt (pip install -e '.[test]')")

from redrafter_trt import quantize  # noqa: E402
from test_fp8 import byte_tokenizer  # noqa: E402


def test_cpu_calibration_runs_in_float32_on_the_checkpoint_dtypes_values(tiny_llama, tmp_path, monkeypatch):
    mtq, export = quantize.require_modelopt()
    real, seen = mtq.quantize, []

    def spy(model, config, forward_loop):
        seen.extend(p.detach().clone() for p in model.parameters())  # as calibration starts
        return real(model, config, forward_loop=forward_loop)

    monkeypatch.setattr(mtq, "quantize", spy)
    base = byte_tokenizer(Path(shutil.copytree(tiny_llama, tmp_path / "base")))
    quantize.export_fp8_base(base, tmp_path / "fp8", tp_size=1, dtype="bfloat16", kv_cache_dtype=None,
                             calib_prompts=["hello world"], calib_size=1, calib_seq_len=8, calib_batch_size=1,
                             device="cpu")
    assert seen and {p.dtype for p in seen} == {torch.float32}
    assert all(torch.equal(p, p.to(torch.bfloat16).float()) for p in seen)  # bfloat16's values
