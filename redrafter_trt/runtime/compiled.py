"""The base's decoder layers compiled by TorchInductor (`torch.compile`) for a CPU in float32: `load(compile=True)`.

Why: a decoding step on a small CPU reads every weight once, and the eager forward of `BaseModel` reaches less of
the memory bandwidth than it could. Inductor with frozen weights generates a C++ micro-GEMM per linear, timed against
MKL's packed sgemm at compile time (`max_autotune` with the CPP and ATen backends, the fastest kept per shape), and
fuses each layer's small ops (RMSNorm, rope, SwiGLU, residuals) into a few loops. Measured on SmolLM2-135M, 2 threads
of an Intel Xeon, one forward after 100 cached tokens, eager / compiled in turns in one process: 1 / 3 / 5 / 7 / 9 /
13 new tokens 1.27x / 1.32x / 1.38x / 1.48x / 1.24x / 1.14x faster (`python scripts/bench_compiled.py
--checkpoint-dir CKPT --threads 2`).

The cost: both kinds of forward (one token; several, any count) compile at load, 2.5-5 minutes for SmolLM2 on 2
cores, once per process; a batch of several rows compiles twice more on first use. So it pays for long runs
(`bench` on many prompts, `run` on a file of prompts), not for a few answers. Only the layers are compiled: the
embedding, the mask, rope's angles, the lm_head and the drafter stay eager.

Same semantics as `BaseModel.forward` (outputs equal to rounding: another summation order in the products).
"""

from __future__ import annotations

import logging

import torch
import torch._inductor.config as inductor_config
import torch.fx.experimental._config
import torch.nn.functional as F

log = logging.getLogger(__name__)

INDUCTOR_OPTIONS = {
    "freezing": True,                              # weights become constants: packed once at compile time
    "max_autotune": True,                          # time the candidate GEMMs per shape, keep the fastest
    "max_autotune_gemm_backends": "CPP,ATEN",      # inductor's C++ micro-GEMM and ATen's (MKL) product
}


TREE_HINT = 8  # rows the many-token kind is first compiled for: about a verify tree's (W=4 L=2: up to 9)
WARM_CONTEXT = 100  # cached tokens (zeros) the compiling forwards attend over


class LayerStack(torch.nn.Module):
    """The decoder layers of a tp=1 base over weights it shares with the checkpoint tensors (no copy).

    forward(x [B, T, H], cos, sin [B, 1, T, hd], mask [B, 1, T, S] additive, slots [B, T], keys, values: lists of
    [B, hkv, capacity, hd] per layer, written at `slots`) -> final-normed hidden states [B, T, H]."""

    def __init__(self, layers: list[dict[str, torch.Tensor | None]], ln_f: torch.Tensor, heads: int, kv_heads: int,
                 head_size: int, eps: float, apply_rope):
        super().__init__()
        self.heads, self.kv_heads, self.head_size, self.eps, self.apply_rope = heads, kv_heads, head_size, eps, apply_rope
        self.weights = torch.nn.ParameterList()
        self.qkv_bias = [layer["qkv_bias"] is not None for layer in layers]
        for layer in layers:
            for name in ("input_norm", "qkv", "qkv_bias", "dense", "post_norm", "fc_gate", "proj"):
                if layer[name] is not None:
                    self.weights.append(torch.nn.Parameter(layer[name], requires_grad=False))
        self.ln_f = torch.nn.Parameter(ln_f, requires_grad=False)

    def forward(self, x, cos, sin, mask, slots, keys, values):
        B, T, _ = x.shape
        hd, hq, hkv = self.head_size, self.heads, self.kv_heads
        end = mask.shape[-1]
        w = iter(self.weights)
        for i, has_bias in enumerate(self.qkv_bias):
            input_norm, qkv_w = next(w), next(w)
            qkv_b = next(w) if has_bias else None
            dense, post_norm, fc_gate, proj = next(w), next(w), next(w), next(w)
            h = F.rms_norm(x, input_norm.shape, input_norm, self.eps)
            qkv = F.linear(h, qkv_w, qkv_b).view(B, T, hq + 2 * hkv, hd).transpose(1, 2)
            qk, v = qkv.split([hq + hkv, hkv], dim=1)
            q, k = self.apply_rope(qk, cos, sin).split([hq, hkv], dim=1)
            idx = slots[:, None, :, None].expand(-1, hkv, -1, hd)
            keys[i].scatter_(2, idx, k)
            values[i].scatter_(2, idx, v)
            att = F.scaled_dot_product_attention(q, keys[i][:, :, :end], values[i][:, :, :end], attn_mask=mask,
                                                 enable_gqa=hq != hkv)
            x = x + F.linear(att.transpose(1, 2).reshape(B, T, hq * hd), dense)
            h = F.rms_norm(x, post_norm.shape, post_norm, self.eps)
            gate, up = F.linear(h, fc_gate).chunk(2, dim=-1)
            x = x + F.linear(F.silu(gate) * up, proj)
        return F.rms_norm(x, self.ln_f.shape, self.ln_f, self.eps)


def compile_stack(stack: LayerStack):
    """torch.compile with frozen weights and GEMM autotuning; every dimension dynamic but size 1 (dynamo keeps a
    size-1 dimension apart), so a batch of one compiles twice, for one token and for more (`BaseModel._compile_now`
    does both at load), and a batch of several twice again on first use."""
    log.info("compiling the base's layers with TorchInductor (minutes)")
    compiled = torch.compile(stack.eval(), dynamic=True)

    def run(*args):
        # inductor's settings hold wherever a call compiles (torch.compile's `options` did not reach freezing);
        # no "duck sizing": sizes that happen to be equal when a kind compiles (a prompt's tokens and the cache
        # slots it fills) must not become a guard that compiles the kind again for every other forward
        with inductor_config.patch(INDUCTOR_OPTIONS), torch.fx.experimental._config.patch(use_duck_shape=False):
            return compiled(*args)
    return run
