"""One decoder layer of a Llama / Qwen2 / Qwen3 base: the math the eager forward (`BaseModel.forward`) and the compiled
one (`compiled.LayerStack`) share.

A layer is anything with `input_norm`, `post_norm` ([H] tensors), `q_norm`, `k_norm` ([hd] or None: Qwen3's per-head
RMSNorm of q and k before RoPE), `dense_bias`, `proj_bias` ([H] or None) and the
callables `qkv`, `dense`, `fc_gate`, `proj` (x [..., K] -> [..., N]; qkv and fc_gate add their own column-parallel
biases): the eager `model.Layer` holds tuned `Linear`s, the compiled one frozen `F.linear`s. Names are TensorRT-LLM's
(see model.py). The row-parallel biases are added once, after the all-reduce, as TensorRT-LLM's RowLinear adds them:
inside `dense` and `proj` every rank would add its whole copy.

Shapes: B batch rows, T new tokens, S visible cache slots, H hidden, hq/hkv local heads, hd head size.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .cache import write_kv

# The epsilon of Qwen3's q/k norms in a TensorRT-LLM engine: its QWenDecoderLayer builds Attention(qk_layernorm=True,
# layernorm_type=RmsNorm) without `eps`, so q_layernorm / k_layernorm take Attention's default 1e-5
# (tensorrt_llm/layers/attention.py), not config.norm_epsilon (transformers' Qwen3 uses rms_norm_eps, 1e-6).
QK_NORM_EPSILON = 1e-5


def rms_norm(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    """x [..., H], w [H] -> [..., H]: normalised in float32, then scaled in the model dtype (as transformers does);
    one fused op in float32."""
    if x.dtype == torch.float32:
        return F.rms_norm(x, w.shape, w, eps)
    return w * F.rms_norm(x.float(), w.shape, eps=eps).to(x.dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, h, T, hd], cos, sin [B, 1, T, hd] -> x rotated (rotate-half convention, as transformers' Llama)."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


def decoder_layer(x: torch.Tensor, layer, cos: torch.Tensor, sin: torch.Tensor, mask: torch.Tensor,
                  slots: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, *, heads: int, kv_heads: int,
                  eps: float, all_reduce) -> torch.Tensor:
    """x [B, T, H]; cos, sin [B, 1, T, hd]; mask [B, 1, T, S] additive; this layer's keys, values
    [B, hkv, capacity, hd], written at `slots` [B, T]; all_reduce sums the row-parallel outputs over tp ranks
    -> x after the layer [B, T, H]."""
    B, T, _ = x.shape
    hd, hq, hkv = cos.shape[-1], heads, kv_heads
    h = rms_norm(x, layer.input_norm, eps)
    qkv = layer.qkv(h).view(B, T, hq + 2 * hkv, hd).transpose(1, 2)
    qk, v = qkv.split([hq + hkv, hkv], dim=1)
    if layer.q_norm is not None:  # per head, before RoPE, as TensorRT-LLM's Attention (and transformers' Qwen3)
        q, k = qk.split([hq, hkv], dim=1)
        qk = torch.cat([rms_norm(q, layer.q_norm, QK_NORM_EPSILON), rms_norm(k, layer.k_norm, QK_NORM_EPSILON)], 1)
    q, k = apply_rope(qk, cos, sin).split([hq, hkv], dim=1)  # one rotation for q and k together
    keys, values = write_kv(keys, values, k, v, slots, mask.shape[-1])
    att = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, enable_gqa=hq != hkv)
    x = x + row_parallel(layer.dense(att.transpose(1, 2).reshape(B, T, hq * hd)), layer.dense_bias, all_reduce)
    h = rms_norm(x, layer.post_norm, eps)
    gate, up = layer.fc_gate(h).chunk(2, dim=-1)
    return x + row_parallel(layer.proj(F.silu(gate) * up), layer.proj_bias, all_reduce)


def row_parallel(partial: torch.Tensor, bias: torch.Tensor | None, all_reduce) -> torch.Tensor:
    """A row-parallel linear's output: this rank's partial product [..., H] summed over ranks, then the bias [H]
    (whole on every rank) added once."""
    out = all_reduce(partial)
    return out if bias is None else out + bias
