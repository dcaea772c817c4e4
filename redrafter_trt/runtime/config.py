"""The parts of a TensorRT-LLM ReDrafter checkpoint's `config.json` the runtime needs, as one frozen dataclass,
plus RoPE inverse frequencies computed the way transformers computes them (default, linear, llama3, yarn)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from ..checkpoint import foreign, rope_differs, runtime_refusals
from ..errors import ConfigError, json_loads
from ..layout import qk_norm
from ..producer import recorded_predict_n
from ..rope import position_limit, rope_kind, rope_scaling_problem, yarn_attention_factor

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class RuntimeConfig:
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_size: int
    vocab_size: int
    norm_epsilon: float
    rotary_base: float
    rotary_scaling: dict | None
    dtype: str
    tp_size: int
    architecture: str
    # drafter (absent in a plain base checkpoint: then only --no-draft decoding works)
    num_beams: int = 0
    draft_len: int = 0
    drafter_layers: int = 0
    drafter_exit_dim: int = 0
    drafter_rnn: bool = False
    greedy_search: bool = True
    drafter_predict_n: int | None = None  # the tokens its drafter was trained to predict (None: not recorded)
    max_positions: int = 2048  # prompt + new tokens must fit: max_position_embeddings (x linear scaling's factor)
    qk_norm: bool = False  # Qwen3 (qwen_type qwen3): each layer's q and k heads RMS-normed before RoPE

    @property
    def has_drafter(self) -> bool:
        return self.num_beams > 0

    @property
    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def draft_len_fix(self, wanted: int) -> str:
        """How to draft `wanted` tokens a beam, past this checkpoint's draft_len: convert again up to what its drafter
        was trained to predict (convert refuses more), past that retrain it."""
        n, retrain = self.drafter_predict_n, f"`redrafter-trt train --predict-n {wanted}`"
        if n is None:  # converted before predict_n was recorded, or a drafter that does not say
            return (f"reconvert with --draft-len {wanted} if its drafter was trained to predict {wanted} tokens (else "
                    f"retrain the drafter with {retrain})")
        if wanted <= n:
            return f"reconvert with --draft-len {wanted}"
        if n > self.draft_len:
            return f"reconvert with --draft-len {n} (the most its drafter was trained to predict), or retrain the " \
                   f"drafter with {retrain}"
        return f"retrain its drafter (trained to predict {n} tokens) with {retrain}, then convert again"

    @classmethod
    def from_dict(cls, raw: dict, where: str = "config.json") -> "RuntimeConfig":
        try:
            mapping = raw.get("mapping") or {}
            H, nh = int(raw["hidden_size"]), int(raw["num_attention_heads"])
            dtype = str(raw.get("dtype", "float32"))
            if dtype not in DTYPES:
                raise ConfigError(f"{where}: dtype {dtype!r} is not one of {', '.join(DTYPES)}")
            if refusals := [p for p in (rope_differs(raw), *runtime_refusals(raw)) if p]:
                raise ConfigError(f"{where}: {refusals[0]}")
            return cls(
                hidden_size=H,
                num_layers=int(raw["num_hidden_layers"]),
                num_heads=nh,
                num_kv_heads=int(raw.get("num_key_value_heads") or nh),
                head_size=int(raw.get("head_size") or H // nh),
                vocab_size=int(raw["vocab_size"]),
                norm_epsilon=float(raw.get("norm_epsilon", 1e-5)),  # absent: TensorRT-LLM's PretrainedConfig's
                rotary_base=float(raw.get("rotary_base") or 10000.0),
                rotary_scaling=raw.get("rotary_scaling"),
                dtype=dtype,
                tp_size=int(mapping.get("tp_size", 1)),
                architecture=str(raw.get("architecture", "")),
                num_beams=int(raw.get("redrafter_num_beams", 0) or 0),
                draft_len=int(raw.get("redrafter_draft_len_per_beam", 0) or 0),
                drafter_layers=int(raw.get("redrafter_num_layers", 0) or 0),
                drafter_exit_dim=int(raw.get("redrafter_exit_dim", 0) or 0),
                drafter_rnn=bool(raw.get("redrafter_is_rnn", False)),
                greedy_search=bool(raw.get("redrafter_greedy_search", True)),
                drafter_predict_n=recorded_predict_n(raw),
                qk_norm=qk_norm(raw),
                # as trtllm-build's default max_seq_len: a linear scaling's factor stretches the positions
                max_positions=position_limit({**raw, "max_position_embeddings": int(raw.get("max_position_embeddings")
                                                                                    or 2048)}),
            )
        except KeyError as e:
            raise ConfigError(f"{where} lacks {e.args[0]}: it is not a TensorRT-LLM checkpoint config") from None

    @classmethod
    def from_dir(cls, ckpt_dir: Path | str) -> "RuntimeConfig":
        path = Path(ckpt_dir) / "config.json"
        if not path.is_file():
            raise ConfigError(f"{path} is missing: point --checkpoint-dir at the output of `redrafter-trt convert`")
        try:
            raw = json_loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path} is not valid JSON ({e.msg}): re-run convert") from None
        # a model, drafter or engine folder says so (not "rank0 is missing")
        if isinstance(raw, dict) and (other := foreign(Path(ckpt_dir), raw)):
            raise ConfigError(other)
        return cls.from_dict(raw, str(path))


def rope_inv_freq(cfg: RuntimeConfig) -> tuple[torch.Tensor, float]:
    """inv_freq [head_size/2] (float32) and the attention scaling factor, as transformers computes them."""
    dim, base = cfg.head_size, cfg.rotary_base
    wavelen_over_2pi = base ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim)
    inv = 1.0 / wavelen_over_2pi
    scaling = cfg.rotary_scaling or {}
    kind = rope_kind(scaling)
    if kind in ("default", "none"):  # TensorRT-LLM's RotaryScalingType.none: plain RoPE
        return inv, 1.0
    if kind == "linear":
        return inv / float(scaling["factor"]), 1.0
    if kind == "llama3":
        factor, low, high = float(scaling["factor"]), float(scaling["low_freq_factor"]), float(scaling["high_freq_factor"])
        old = float(scaling["original_max_position_embeddings"])
        low_wavelen, high_wavelen = old / low, old / high
        wavelen = 2 * math.pi / inv
        scaled = torch.where(wavelen > low_wavelen, inv / factor, inv)
        smooth = (old / wavelen - low) / (high - low)
        smoothed = (1 - smooth) * scaled / factor + smooth * scaled
        medium = ~(wavelen < high_wavelen) * ~(wavelen > low_wavelen)
        return torch.where(medium, smoothed, scaled), 1.0
    if kind == "yarn":  # transformers' _compute_yarn_parameters (4.57 and 5). TensorRT-LLM 1.2 reads its yarn in
        # layers/attention.py create_attention_const_params (RopeEmbeddingUtils.create_sinusoidal_positions_yarn), which
        # computes another RoPE where rope.yarn_problem says: convert, inspect and run refuse those (checkpoint
        # .rope_differs), the runtime stays transformers'
        factor, old = float(scaling["factor"]), float(scaling["original_max_position_embeddings"])

        def dim_of(rotations):  # the dimension that turns `rotations` times over the original positions
            return dim * math.log(old / (rotations * 2 * math.pi)) / (2 * math.log(base))

        low, high = dim_of(scaling.get("beta_fast") or 32), dim_of(scaling.get("beta_slow") or 1)
        if scaling.get("truncate", True):
            low, high = math.floor(low), math.ceil(high)
        low, high = max(low, 0), min(high, dim - 1)
        high = high + 0.001 if high == low else high
        extrapolated = 1 - ((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
        interpolated = 1.0 / (factor * wavelen_over_2pi)
        return interpolated * (1 - extrapolated) + inv * extrapolated, yarn_attention_factor(scaling)
    raise ConfigError(rope_scaling_problem(scaling))
