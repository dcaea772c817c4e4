"""Half precision runs, and FP8 checkpoints (float8_e4m3fn weights + weights_scaling_factor) are dequantised
to exactly what the scales say."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from redrafter_trt import runtime as rt
from test_runtime_support import checkpoint, hf_model, one_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")
PROMPT = [1, 17, 33, 5, 250, 99]


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_runs_close_to_float32(tiny_llama, tiny_drafter, dtype):
    ckpt = checkpoint(tiny_llama, tiny_drafter, 1)
    model = rt.load(ckpt, dtype=dtype)
    assert model.base.dtype == getattr(torch, dtype)
    logits = rt.forward_logits(model, PROMPT)
    with torch.no_grad():
        ref = hf_model(tiny_llama)(torch.tensor([PROMPT])).logits[0]
    assert (logits - ref).abs().max() < 0.1
    res = rt.generate(model, [PROMPT, PROMPT[:3]], 8, num_beams=2, draft_len=2)
    assert [len(o) for o in res.output_ids] == [8, 8]


def test_fp8_checkpoint_dequantised(tiny_llama, tiny_drafter, tmp_path):
    src = checkpoint(tiny_llama, tiny_drafter, 1)
    fp8, deq = tmp_path / "fp8", tmp_path / "deq"
    shutil.copytree(src, fp8)
    shutil.copytree(src, deq)
    tensors = load_file(str(src / "rank0.safetensors"))
    q_tensors, d_tensors = dict(tensors), dict(tensors)
    for name, t in tensors.items():
        if name.startswith("transformer.layers.") and name.endswith(("qkv.weight", "dense.weight", "fc.weight",
                                                                      "gate.weight", "proj.weight")):
            scale = (t.abs().max() / 448.0).reshape(1).float()
            q = (t / scale).to(torch.float8_e4m3fn)
            q_tensors[name] = q
            q_tensors[name[: -len("weight")] + "weights_scaling_factor"] = scale
            q_tensors[name[: -len("weight")] + "activation_scaling_factor"] = torch.ones(1)
            d_tensors[name] = q.float() * scale
    save_file(q_tensors, str(fp8 / "rank0.safetensors"))
    save_file(d_tensors, str(deq / "rank0.safetensors"))
    cfg = json.loads((fp8 / "config.json").read_text())
    cfg["quantization"] = {"quant_algo": "FP8", "kv_cache_quant_algo": None, "exclude_modules": ["lm_head", "drafter*"]}
    (fp8 / "config.json").write_text(json.dumps(cfg))
    got = rt.forward_logits(rt.load(fp8), PROMPT)
    want = rt.forward_logits(rt.load(deq), PROMPT)
    assert torch.equal(got, want)
    assert not torch.equal(got, rt.forward_logits(rt.load(src), PROMPT))  # the quantisation really happened


@pytest.mark.parametrize("dtype, needle", [("float16", "overflowed float16"),
                                           ("float32", "NaN or Inf.*`redrafter-trt inspect --values`")])
def test_non_finite_hidden_states_are_one_clear_error(tiny_llama, tiny_drafter, dtype, needle):
    """Activations beyond float16's 65504 (or broken weights) would make every token id 0 and every logprob NaN,
    silently: decoding and scoring refuse instead, naming the fix. Broken weights are named by `inspect --values`
    alone (inspect without it reads headers and called an FP8 checkpoint with a NaN weight OK)."""
    from redrafter_trt.errors import ConfigError

    model = rt.load(checkpoint(tiny_llama, tiny_drafter, 1), dtype=dtype)
    model.base.ln_f.fill_(6e4 if dtype == "float16" else float("nan"))  # 6e4 x |normed| > 65504
    for call in (lambda: rt.generate(model, [[1, 2, 3]], 4), lambda: rt.prompt_logprobs(model, [[1, 2, 3]], 1)):
        with pytest.raises(ConfigError, match=needle):
            call()


def test_default_dtype_float64_changes_nothing(tiny_llama, tiny_drafter):
    """A user's torch.set_default_dtype(torch.float64) (common in scientific scripts) made load's product timing
    and the int8 drafter head build float64 inputs that oneDNN / the quantized op refuse (a RuntimeError
    traceback); loading and decoding now ignore torch's default dtype."""
    ckpt = checkpoint(tiny_llama, tiny_drafter, 1)
    want = rt.generate(rt.load(ckpt), [PROMPT, PROMPT[:3]], 12)
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        model = rt.load(ckpt)
        got = rt.generate(model, [PROMPT, PROMPT[:3]], 12)
    finally:
        torch.set_default_dtype(before)
    assert model.base.dtype == torch.float32
    assert (got.output_ids, got.steps, got.accepted) == (want.output_ids, want.steps, want.accepted)


def test_rms_norm_in_bfloat16_scales_in_bfloat16_as_transformers():
    """In bfloat16 the norm is computed in float32, rounded to bfloat16, then scaled by the weight in bfloat16 (as
    transformers' LlamaRMSNorm): scaling in float32 and rounding once gives other bits."""
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    from redrafter_trt.runtime.layer import rms_norm

    gen = torch.Generator().manual_seed(0)
    x = torch.randn(4, 64, generator=gen).to(torch.bfloat16)
    w = (torch.rand(64, generator=gen) + 0.5).to(torch.bfloat16)
    norm = LlamaRMSNorm(64, eps=1e-5).to(torch.bfloat16)
    with torch.no_grad():
        norm.weight.copy_(w)
        assert torch.equal(rms_norm(x, w, 1e-5), norm(x))
