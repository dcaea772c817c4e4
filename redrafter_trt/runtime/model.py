"""The base model (Llama / Qwen2 / Qwen3 semantics) executed straight from one rank file of a TensorRT-LLM checkpoint.

Names are TensorRT-LLM's: `attention.qkv` = per rank cat(q_r, k_r, v_r) (+bias for Qwen2 and Llama's attention_bias),
`attention.q_layernorm` / `k_layernorm` (Qwen3: [hd], whole on every rank, applied to each head before RoPE),
`attention.dense` (row-parallel: all-reduce; its bias, with Llama's attention_bias, whole on every rank and added after
it), `mlp.fc` = gate_proj, `mlp.gate` = up_proj (both column-parallel, with Llama's mlp_bias their biases split alike),
`mlp.proj` (row-parallel like dense, its bias too), `lm_head` (column-parallel, rows padded to a multiple of tp:
all-gather, then sliced to vocab_size), `vocab_embedding` (whole; with use_parallel_embedding split by rows: all-reduce,
or by columns with embedding_sharding_dim 1: all-gather). FP8 linears (float8_e4m3fn + `weights_scaling_factor`) are
dequantised on load.

Shapes: B batch rows, T new tokens, S cached slots, H hidden, hq/hkv local heads, hd head size.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from ..errors import ConfigError, TensorError, json_loads
from ..io import all_finite
from .argmax import MAX_ROWS, ScreenedArgmax
from .cache import KVCache
from .config import RuntimeConfig, rope_inv_freq
from .layer import decoder_layer, rms_norm
from .linear import TUNE_MAX_BYTES, Linear, Plan, candidate_products, tune
from .tp import SINGLE, TPGroup

log = logging.getLogger(__name__)

FP8 = getattr(torch, "float8_e4m3fn", None)


@dataclass
class Layer:
    input_norm: torch.Tensor   # [H]
    qkv: Linear                # [(hq + 2 hkv) hd, H] (+ bias)
    dense: Linear              # [H, hq hd]
    post_norm: torch.Tensor    # [H]
    fc_gate: Linear            # cat(gate_proj, up_proj) [2 I/tp, H]: one product for both (+ cat of biases)
    proj: Linear               # down_proj [H, I/tp]
    dense_bias: torch.Tensor | None = None  # [H], row-parallel: added after the all-reduce (layer.row_parallel)
    proj_bias: torch.Tensor | None = None   # [H], likewise
    q_norm: torch.Tensor | None = None      # [hd], Qwen3: each q head RMS-normed before RoPE (layer.decoder_layer)
    k_norm: torch.Tensor | None = None      # [hd], each k head likewise


def read_rank_file(ckpt_dir: Path, tp_rank: int) -> dict[str, torch.Tensor]:
    """Only this rank's tensors; FP8 linear weights dequantised to float32 (weight * weights_scaling_factor), in an
    FP8 checkpoint FP8 bits stored as int8 too (older exporters' layout: TensorRT-LLM views an int8 weight of an FP8
    checkpoint as FP8, and inspect and convert take it so). Another quant_algo, or any other integer tensor, is
    refused in one line (its integers are no float weights)."""
    path = Path(ckpt_dir) / f"rank{tp_rank}.safetensors"
    if not path.is_file():
        raise ConfigError(f"{path} is missing: the checkpoint is incomplete, re-run convert")
    algo = quant_algo(Path(ckpt_dir))
    if algo not in (None, "FP8"):
        raise ConfigError(f"{ckpt_dir}: quantization.quant_algo {algo!r} is not run by the reference runtime "
                          f"(unquantized or FP8 checkpoints only): convert from an unquantized base, with --quantize "
                          f"fp8 for FP8")
    try:
        raw = load_file(str(path))
    except Exception as e:  # safetensors raises several types for a bad file
        raise TensorError(f"{path} is truncated or not a safetensors file ({e}): re-run convert") from None
    out = {}
    for name, t in raw.items():
        if name.endswith((".weights_scaling_factor", ".activation_scaling_factor", ".kv_cache_scaling_factor")):
            continue
        scale = raw.get(name.removesuffix("weight") + "weights_scaling_factor") if name.endswith("weight") else None
        if FP8 is not None and t.dtype == torch.int8 and scale is not None and algo == "FP8":
            t = t.view(FP8)
        if FP8 is not None and t.dtype == FP8:
            if scale is None:
                raise TensorError(f"{path}: FP8 tensor {name} has no weights_scaling_factor: re-export the checkpoint")
            t = t.float() * scale.float()
        elif not t.is_floating_point():
            raise TensorError(f"{path}: {name} is {str(t.dtype).removeprefix('torch.')}, which the reference runtime "
                              f"does not dequantise (float and FP8 weights only): run it as an engine, or convert "
                              f"from an unquantized or FP8 base")
        out[name] = t
    return out



def quant_algo(ckpt_dir: Path) -> str | None:
    """config.json's quantization.quant_algo (None where it has none or cannot be read: RuntimeConfig names that)."""
    try:
        raw = json_loads((ckpt_dir / "config.json").read_text())
        return (raw.get("quantization") or {}).get("quant_algo")
    except (OSError, ValueError, AttributeError):
        return None


class BaseModel:
    """One tensor-parallel rank of the base model. `forward` runs new tokens against a KVCache."""

    def __init__(self, cfg: RuntimeConfig, tensors: dict[str, torch.Tensor], group: TPGroup = SINGLE,
                 dtype: torch.dtype | None = None, device: str = "cpu", compile: bool = False):
        self.cfg, self.group, self.device = cfg, group, torch.device(device)
        self.dtype = dtype or cfg.torch_dtype
        if compile and (self.device.type != "cpu" or self.dtype != torch.float32 or group.tp_size != 1):
            raise ConfigError(f"compile=True compiles the base on one CPU rank in float32 (here {self.device.type}, "
                              f"{str(self.dtype).removeprefix('torch.')}, tp={group.tp_size}): pass compile=False")

        def take(name: str, required: bool = True) -> torch.Tensor | None:
            t = tensors.get(name)
            if t is None:
                if required:
                    raise TensorError(f"checkpoint rank {group.tp_rank} lacks {name}: re-run convert")
                return None
            return t.to(device=self.device, dtype=self.dtype)

        # a small float32 model on one CPU rank holds every product until `tune` has timed them (linear.py)
        tuned = (self.device.type == "cpu" and self.dtype == torch.float32 and group.tp_size == 1
                 and 4 * sum(t.numel() for t in tensors.values()) <= TUNE_MAX_BYTES)
        products = candidate_products() if tuned else ("onednn",)
        # compiled layers (compiled.py) multiply their own copies: the eager ones keep plain references
        layer_products = ("plain",) if compile else products

        self.embed = take("transformer.vocab_embedding.weight")
        self.layers, weights = [], []
        for i in range(cfg.num_layers):
            p = f"transformer.layers.{i}."
            fc_bias = take(p + "mlp.fc.bias", required=False)  # mlp_bias: fc's and gate's both (inspect checks)
            w = dict(input_norm=take(p + "input_layernorm.weight"), qkv=take(p + "attention.qkv.weight"),
                     qkv_bias=take(p + "attention.qkv.bias", required=False), dense=take(p + "attention.dense.weight"),
                     dense_bias=take(p + "attention.dense.bias", required=False),
                     post_norm=take(p + "post_layernorm.weight"),
                     fc_gate=torch.cat([take(p + "mlp.fc.weight"), take(p + "mlp.gate.weight")]),
                     fc_gate_bias=None if fc_bias is None else torch.cat([fc_bias, take(p + "mlp.gate.bias")]),
                     proj=take(p + "mlp.proj.weight"), proj_bias=take(p + "mlp.proj.bias", required=False),
                     q_norm=take(p + "attention.q_layernorm.weight") if cfg.qk_norm else None,
                     k_norm=take(p + "attention.k_layernorm.weight") if cfg.qk_norm else None)
            weights.append(w)
            self.layers.append(Layer(
                input_norm=w["input_norm"], qkv=Linear(w["qkv"], w["qkv_bias"], products=layer_products),
                dense=Linear(w["dense"], products=layer_products), post_norm=w["post_norm"],
                fc_gate=Linear(w["fc_gate"], w["fc_gate_bias"], products=layer_products),
                proj=Linear(w["proj"], products=layer_products), dense_bias=w["dense_bias"], proj_bias=w["proj_bias"],
                q_norm=w["q_norm"], k_norm=w["k_norm"]))
        self.ln_f = take("transformer.ln_f.weight")
        head = take("lm_head.weight")
        # greedy steps need only the argmax: screened through a float16 copy where a single rank holds the head
        self.screened_argmax = ScreenedArgmax.create(head[: cfg.vocab_size]) if group.tp_size == 1 else None
        self.lm_head = Linear(head, products=products)
        # the plan the linears follow (None: untuned, oneDNN's product); the drafter's small linears take it too
        self.linear_plan: Plan | None = None
        if tuned:
            eager = [] if compile else [lin for L in self.layers for lin in (L.qkv, L.dense, L.fc_gate, L.proj)]
            self.linear_plan = tune(eager + [self.lm_head])
            if self.screened_argmax is not None and not self.screened_argmax.pays(self.lm_head):
                self.screened_argmax = None
        hd = cfg.head_size
        self.local_heads = self.layers[0].dense.in_features // hd
        self.local_kv_heads = (self.layers[0].qkv.out_features // hd - self.local_heads) // 2
        if self.local_heads * group.tp_size != cfg.num_heads or self.local_kv_heads < 1:
            raise TensorError(f"attention shapes of rank {group.tp_rank} do not match config.json "
                              f"(num_attention_heads={cfg.num_heads}, tp_size={group.tp_size}): re-run convert")
        inv_freq, self.rope_scale = rope_inv_freq(cfg)
        self.inv_freq = inv_freq.to(self.device)
        self.vocab_sharded = self.embed.shape[0] * group.tp_size >= cfg.vocab_size > self.embed.shape[0]
        # use_parallel_embedding with embedding_sharding_dim 1: each rank holds H/tp columns of every row
        self.hidden_sharded = self.embed.shape[1] < cfg.hidden_size
        self.compiled = None
        if compile:  # compiled.py imports TorchInductor (seconds; it sets TORCHINDUCTOR_CACHE_DIR): only to compile
            from .compiled import LayerStack, compile_stack

            self.compiled = compile_stack(LayerStack(weights, self.ln_f, self.local_heads, self.local_kv_heads,
                                                     cfg.norm_epsilon))
            self.compile_now(batch=1)

    # ---- pieces -------------------------------------------------------------------------------------------
    def embed_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens [...] -> [..., H]; a vocab-sharded embedding looks up local rows and all-reduces, a hidden-sharded
        one looks up its columns and all-gathers them."""
        if self.hidden_sharded:
            return self.group.all_gather(F.embedding(tokens, self.embed))
        if not self.vocab_sharded:
            return F.embedding(tokens, self.embed)
        rows = self.embed.shape[0]
        local = tokens - self.group.tp_rank * rows
        inside = (local >= 0) & (local < rows)
        out = F.embedding(local.clamp(0, rows - 1), self.embed) * inside[..., None].to(self.dtype)
        return self.group.all_reduce(out)

    def rope(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """positions [B, T] -> cos, sin [B, 1, T, hd] in the model dtype."""
        freqs = positions.float()[..., None] * self.inv_freq
        emb = torch.cat([freqs, freqs], dim=-1)
        return ((emb.cos() * self.rope_scale).to(self.dtype)[:, None],
                (emb.sin() * self.rope_scale).to(self.dtype)[:, None])

    # ---- forward ------------------------------------------------------------------------------------------
    def forward(self, tokens: torch.Tensor, positions: torch.Tensor, tree_mask: torch.Tensor,
                cache: KVCache) -> torch.Tensor:
        """tokens, positions [B, T]; tree_mask [B, T, T] (which new tokens each new token sees, itself
        included) -> final-normed hidden states [B, T, H]. Writes the new tokens' KV at slots lens+i; does not
        advance cache.lens (see KVCache.commit)."""
        T = tokens.shape[1]
        slots = cache.slots(T)
        end = int(slots.max()) + 1
        if self.compiled is not None:  # compiled kinds hold guards "slots != tokens" and "slots < capacity": a
            end = min(max(end, T + 1), cache.capacity - 1)  # prompt sees one masked slot more (new_cache: one spare)
        visible = cache.attention_mask(tree_mask, end)[:, None]  # [B, 1, T, S]
        # additive float mask built once: SDPA would otherwise convert a boolean mask in every layer
        mask = torch.zeros(visible.shape, dtype=self.dtype, device=self.device).masked_fill_(~visible, float("-inf"))
        cos, sin = self.rope(positions)
        x = self.embed_tokens(tokens)
        if self.compiled is not None:
            return self._finite(self.compiled(x, cos, sin, mask, slots, cache.k, cache.v))
        for i, layer in enumerate(self.layers):
            x = decoder_layer(x, layer, cos, sin, mask, slots, cache.k[i], cache.v[i], heads=self.local_heads,
                              kv_heads=self.local_kv_heads, eps=self.cfg.norm_epsilon, all_reduce=self.group.all_reduce)
        return self._finite(rms_norm(x, self.ln_f, self.cfg.norm_epsilon))

    @torch.no_grad()
    def compile_now(self, batch: int) -> None:
        """Compile both kinds of forward for `batch` rows (1, or any count above: a batch of one is compiled apart,
        see compiled.compile_stack), on a scratch cache: first a tree of TREE_HINT tokens after WARM_CONTEXT cached
        ones (inductor fits the many-token kind's GEMMs to the row count it first sees: a verify tree's, not a
        prompt's), then one token. `load(compile=True)` does batch 1; a server its --max-batch-size too, before it
        listens."""
        from .compiled import TREE_HINT, WARM_CONTEXT

        cache = self.new_cache(batch, WARM_CONTEXT + TREE_HINT + 3)
        cache.lens += WARM_CONTEXT
        for T in (TREE_HINT, 1):
            self.forward(torch.zeros(batch, T, dtype=torch.long, device=self.device), cache.slots(T),
                         torch.ones(batch, T, T, dtype=torch.bool, device=self.device).tril(), cache)

    def _finite(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden, refused when it holds NaN or Inf: every token would silently become id 0 and every logprob NaN."""
        if all_finite(hidden):
            return hidden
        if self.dtype == torch.float16:
            raise ConfigError("the base overflowed float16 (its activations exceed 65504) on this input: convert "
                              "with --dtype bfloat16 (or load with dtype bfloat16), whose range is float32's")
        raise ConfigError("the base's hidden states hold NaN or Inf: its weights are broken (`redrafter-trt inspect "
                          "--values` names the tensors; reconvert from a sound source)")

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden [..., H] -> float32 logits [..., vocab_size] (padding rows of lm_head dropped)."""
        local = self.lm_head(hidden)
        return self.group.all_gather(local)[..., : self.cfg.vocab_size].float()

    def greedy_tokens(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden [..., H] -> argmax token ids [...], equal to `logits(hidden).argmax(-1)` (see argmax.py)."""
        if self.screened_argmax is not None and hidden[..., 0].numel() <= MAX_ROWS:
            return self.screened_argmax(hidden)
        return self.logits(hidden).argmax(-1)

    def new_cache(self, batch: int, capacity: int) -> KVCache:
        spare = 1 if self.compiled is not None else 0  # see forward
        return KVCache(self.cfg.num_layers, batch, self.local_kv_heads, capacity + spare, self.cfg.head_size,
                       self.dtype, self.device)
