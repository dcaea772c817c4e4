"""The base's decoder layers compiled by TorchInductor (`torch.compile`) for a CPU in float32: `load(compile=True)`.

Why: a decoding step on a small CPU reads every weight once, and the eager forward of `BaseModel` reaches less of
the memory bandwidth than it could. Inductor with frozen weights generates a C++ micro-GEMM per linear, timed against
MKL's packed sgemm at compile time (`max_autotune` with the CPP and ATen backends, the fastest kept per shape), and
fuses each layer's small ops (RMSNorm, rope, SwiGLU, residuals) into a few loops. Measured on SmolLM2-135M, 2 threads
of an Intel Xeon, one forward after 100 cached tokens, eager / compiled in turns in one process: 1 / 3 / 5 / 7 / 9 /
13 new tokens 1.27x / 1.32x / 1.38x / 1.48x / 1.24x / 1.14x faster (`python scripts/bench_compiled.py
--checkpoint-dir CKPT --threads 2`; the many-token kind tuned for 8 rows then, for 3 now: see TREE_HINT). On an
AVX-512 AMD EPYC, tuned for 3 rows: 1.62x / 1.83x / 1.23x / 1.50x / 1.04x / 0.98x.

The cost: both kinds of forward (one token; several, any count) compile at load, 2.5-5 minutes for SmolLM2 on 2
cores, once per process; a batch of several rows compiles twice more on first use. So it pays for long runs
(`bench` on many prompts, `run` on a file of prompts), not for a few answers. Only the layers are compiled: the
embedding, the mask, rope's angles, the lm_head and the drafter stay eager.

The layer math is `layer.decoder_layer`, the eager forward's own; outputs equal it to rounding (inductor's products
sum in another order).
"""

from __future__ import annotations

import logging

import torch
import torch._inductor.config as inductor_config
import torch.fx.experimental._config
import torch.nn.functional as F
from torch._dynamo.exc import BackendCompilerFailed

from ..errors import ConfigError
from .layer import decoder_layer, rms_norm
from .tp import SINGLE

log = logging.getLogger(__name__)

INDUCTOR_OPTIONS = {
    "freezing": True,                              # weights become constants: packed once at compile time
    "max_autotune": True,                          # time the candidate GEMMs per shape, keep the fastest
    "max_autotune_gemm_backends": "CPP,ATEN",      # inductor's C++ micro-GEMM and ATen's (MKL) product
}
# autotuning printed its timing tables (about 60 lines on stderr for a SmolLM2 bench --compile); torch releases
# without these settings print them still
INDUCTOR_OPTIONS |= {key: value for key, value in {"autotune_num_choices_displayed": 0,
                                                   "max_autotune_report_choices_stats": False}.items()
                     if hasattr(inductor_config, key)}


# Rows the many-token kind is first compiled for, which its GEMMs are autotuned at: the verify tree of W=1 L=2, the
# best compiled configuration on the Intel Xeon (sessions 20-21) and, tuned for it, on the AMD EPYC (session 22).
# There, tuned for 3 rows, autotuning took inductor's C++ micro-GEMM and a 3-token forward ran in 18.9 ms; tuned for 8
# (a W=4 L=2 tree) it kept oneDNN's product and took 30.8 ms (a plain one-token forward: 16.9-21.3), while 9-13
# tokens got 1.03-1.14x slower.
TREE_HINT = 3
WARM_CONTEXT = 100  # cached tokens (zeros) the compiling forwards attend over


class FrozenLinear(torch.nn.Module):
    """F.linear over a weight [N, K] (+ bias [N]) that freezing folds into the graph as a constant."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.weight = torch.nn.Parameter(weight, requires_grad=False)
        self.bias = None if bias is None else torch.nn.Parameter(bias, requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias)


class CompiledLayer(torch.nn.Module):
    """One decoder layer's weights as a module (a layer in `layer.decoder_layer`'s sense), sharing the checkpoint's
    tensors (no copy)."""

    def __init__(self, w: dict[str, torch.Tensor | None]):
        super().__init__()
        self.input_norm = torch.nn.Parameter(w["input_norm"], requires_grad=False)
        self.post_norm = torch.nn.Parameter(w["post_norm"], requires_grad=False)
        self.qkv = FrozenLinear(w["qkv"], w["qkv_bias"])
        self.fc_gate = FrozenLinear(w["fc_gate"], w["fc_gate_bias"])
        self.dense, self.proj = FrozenLinear(w["dense"], None), FrozenLinear(w["proj"], None)
        # row-parallel biases: added after the (here trivial) all-reduce, as the eager layer adds them; Qwen3's q/k norms
        self.dense_bias, self.proj_bias, self.q_norm, self.k_norm = (
            None if w[k] is None else torch.nn.Parameter(w[k], requires_grad=False)
            for k in ("dense_bias", "proj_bias", "q_norm", "k_norm"))


class LayerStack(torch.nn.Module):
    """The decoder layers of a tp=1 base, then the final norm.

    forward(x [B, T, H], cos, sin [B, 1, T, hd], mask [B, 1, T, S] additive, slots [B, T], keys, values: lists of
    [B, hkv, capacity, hd] per layer, written at `slots`) -> final-normed hidden states [B, T, H]."""

    def __init__(self, layers: list[dict[str, torch.Tensor | None]], ln_f: torch.Tensor, heads: int, kv_heads: int,
                 eps: float):
        super().__init__()
        self.heads, self.kv_heads, self.eps = heads, kv_heads, eps
        self.layers = torch.nn.ModuleList(CompiledLayer(w) for w in layers)
        self.ln_f = torch.nn.Parameter(ln_f, requires_grad=False)

    def forward(self, x, cos, sin, mask, slots, keys, values):
        for i, layer in enumerate(self.layers):
            x = decoder_layer(x, layer, cos, sin, mask, slots, keys[i], values[i], heads=self.heads,
                              kv_heads=self.kv_heads, eps=self.eps, all_reduce=SINGLE.all_reduce)
        return rms_norm(x, self.ln_f, self.eps)


def check_cxx_compiler(spelling=None) -> None:
    """Refuse a machine where TorchInductor finds no working C++ compiler (it generates C++ for the CPU: a Mac without
    Xcode's command line tools, Windows without MSVC), before minutes of tracing end in its long traceback. A torch
    without inductor's `get_cpp_compiler` is not checked. spelling: the caller's names (`runtime.Spelling`; None:
    the Python API's, `runtime.API`)."""
    from . import API

    spelling = spelling or API
    try:
        from torch._inductor.cpp_builder import get_cpp_compiler
        from torch._inductor.exc import InvalidCxxCompiler
    except ImportError:
        return
    try:
        get_cpp_compiler()
    except InvalidCxxCompiler as e:
        raise ConfigError(f"{spelling.compiling} needs a C++ compiler for TorchInductor and none works here ({e}): "
                          f"install one (g++ or clang++; Xcode's command line tools on macOS, MSVC on Windows) or name "
                          f"it in CXX, or {spelling.no_compile}") from None


def compile_stack(stack: LayerStack):
    """torch.compile with frozen weights and GEMM autotuning; every dimension dynamic but size 1 (dynamo keeps a
    size-1 dimension apart), so a batch of one compiles twice, for one token and for more (`BaseModel.compile_now`
    does both at load), and a batch of several twice again (`compile_now(B)`, or on first use)."""
    check_cxx_compiler()
    log.info("compiling the base's layers with TorchInductor (minutes)")
    compiled = torch.compile(stack.eval(), dynamic=True)

    def run(*args):
        # inductor's settings hold wherever a call compiles (torch.compile's `options` did not reach freezing);
        # no "duck sizing": sizes that happen to be equal when a kind compiles (a prompt's tokens and the cache
        # slots it fills) must not become a guard that compiles the kind again for every other forward
        with inductor_config.patch(INDUCTOR_OPTIONS), torch.fx.experimental._config.patch(use_duck_shape=False):
            try:
                return compiled(*args)
            except BackendCompilerFailed as e:  # --debug shows inductor's own traceback (the cause)
                cause = _cause(e)
                if isinstance(cause, OSError):  # a full disk, an unwritable cache: the command line's one line on it
                    raise cause from e
                if cause is None:  # inductor's own failure (a bug to report): its traceback
                    raise
                raise ConfigError(f"TorchInductor could not compile the base's layers ({_reason(e)}): its C++ "
                                  f"compiler must build OpenMP code (on macOS: brew install libomp), or drop "
                                  f"--compile (Python: compile=False)") from e
    return run


def _cause(e: BaseException) -> BaseException | None:
    """What made inductor fail, where it is the machine's doing: the C++ compiler's error (CppCompileError) or an
    OSError (a full disk under its cache or TMPDIR), the first found down `e`'s causes; None for anything else."""
    from torch._inductor.exc import CppCompileError

    seen = set()
    while e is not None and id(e) not in seen:
        if isinstance(e, (CppCompileError, OSError)):
            return e
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


def _reason(e: Exception) -> str:
    """Inductor's error in one line: its first line, and the first line after it naming an error (the compiler's own,
    as `fatal error: 'omp.h' file not found`)."""
    lines = [line.strip() for line in str(e).splitlines() if line.strip()] or [type(e).__name__]
    detail = next((line for line in lines[1:] if "error" in line.lower()), None)
    return f"{lines[0]}: {detail}" if detail else lines[0]
