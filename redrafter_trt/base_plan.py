"""The base's half of a conversion: its config.json read and checked (a Hugging Face folder or a TensorRT-LLM base
checkpoint), its tensors checked against that config, and each rank's plan of base tensors (name, shape, dtype and
a reader; no data). convert.py adds the drafter's tensors and writes the checkpoint.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch

from . import layout
from .checkpoint import config_problems, ending_in_fix
from .config import DTYPES, BaseModelConfig, read_json, trtllm_model_fields
from .errors import ConfigError, TensorError, name_list
from .io import ST_TO_TORCH, UNREAD_BASE_FIX, TensorSource, all_finite, broken_base_tensor, unread_weights
from .registry import QWEN_SEQ_LENGTH, TRTLLM_ACTIVATIONS, bias_fields
from .rope import rope_kind, trtllm_kind
from .rules import DROPPED, EMBEDDING, LAYER_RULES, MODEL_RULES, embedding_split
from .shard import check_tp, even_range, kv_head_range, resplit, vocab_range

if TYPE_CHECKING:
    from .convert import ConvertOptions

log = logging.getLogger(__name__)
# Mistral 7B v0.1 (and its fine-tunes: Zephyr, OpenHermes, ...): rope_theta 10000 and a sliding window of 4096 in
# 32768 positions; v0.2 and later (and NeMo, Codestral, Mathstral) use rope_theta 1e6 and no window
MISTRAL_V01 = {"rotary_base": 10000.0, "window": 4096}


@dataclass
class Planned:
    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    read: Callable[[], torch.Tensor]
    # a Hugging Face base's or a drafter's: where the tensors `read` reads (a fused qkv's three) are read again whole,
    # only once `read`'s tensor is not finite, to name the one holding NaN or Inf, or the cast (`nonfinite_refusal`)
    src: TensorSource | None = None
    sources: tuple[str, ...] = ()

    @property
    def nbytes(self) -> int:
        return torch.Size(self.shape).numel() * torch.empty((), dtype=self.dtype).element_size()


def is_trtllm_checkpoint(folder: Path) -> bool:
    cfg = folder / "config.json"
    if not cfg.exists():
        return False
    raw = read_json(cfg, "base")
    return "architecture" in raw  # a Hugging Face config has "architectures"; TensorRT-LLM's mapping may be left out


# ---------------------------------------------------------------- Hugging Face base

def hf_source_shapes(b: BaseModelConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor a Hugging Face folder of this config must hold (lm_head only when untied)."""
    H, I, hd = b.hidden_size, b.intermediate_size, b.head_size
    q, kv = b.num_heads * hd, b.num_kv_heads * hd
    per_layer = {
        "input_layernorm.weight": (H,), "post_attention_layernorm.weight": (H,),
        "self_attn.q_proj.weight": (q, H), "self_attn.k_proj.weight": (kv, H), "self_attn.v_proj.weight": (kv, H),
        "self_attn.o_proj.weight": (H, q), "mlp.gate_proj.weight": (I, H), "mlp.up_proj.weight": (I, H),
        "mlp.down_proj.weight": (H, I),
    }
    biases = bias_fields(b.spec, b.hf)
    if biases["attn_bias"]:
        per_layer |= {"self_attn.q_proj.bias": (q,), "self_attn.k_proj.bias": (kv,), "self_attn.v_proj.bias": (kv,)}
    if biases["attn_bias"] and b.spec.bias_flags:  # Llama's attention_bias biases o_proj too; Qwen2's does not
        per_layer["self_attn.o_proj.bias"] = (H,)
    if biases["mlp_bias"]:
        per_layer |= {"mlp.gate_proj.bias": (I,), "mlp.up_proj.bias": (I,), "mlp.down_proj.bias": (H,)}
    if b.spec.qk_norm:
        per_layer |= {"self_attn.q_norm.weight": (hd,), "self_attn.k_norm.weight": (hd,)}
    out = {"model.embed_tokens.weight": (b.vocab_size, H), "model.norm.weight": (H,)}
    if not b.tie_word_embeddings:
        out["lm_head.weight"] = (b.vocab_size, H)
    for layer in range(b.num_layers):
        out |= {f"model.layers.{layer}.{k}": v for k, v in per_layer.items()}
    return out


def check_hf_tensors(src: TensorSource, b: BaseModelConfig, where: Path) -> None:
    refuse_quantized(b.hf, where)  # before its scales are called unexpected tensors (init-drafter, train, bench)
    have = src.names()
    _check_layer_count(len(have), b.num_layers, f"base {where}")
    want = hf_source_shapes(b)
    dropped = {d.replace("{L}", str(layer)) for d in DROPPED for layer in range(b.num_layers)}
    optional = {"lm_head.weight"}  # tied checkpoints sometimes store it anyway
    missing = set(want) - have
    unexpected = have - set(want) - dropped - optional
    if missing or unexpected:
        parts = ([f"missing tensors: {name_list(missing)}"] if missing else []) + \
                ([f"unexpected tensors: {name_list(unexpected)}"] if unexpected else [])
        fix = _hf_bias_hint(b, unexpected) or _tie_hint(b, missing | unexpected) or \
            "re-download the model (config.json and weights from one download)"
        raise TensorError(f"base {where}: {'; '.join(parts)}: the weights do not match its config.json; {fix}")
    if "lm_head.weight" in have:  # stored beside tied embeddings: refused below unless it is the embedding
        want["lm_head.weight"] = (b.vocab_size, b.hidden_size)
    bad = [f"{k} {src.shape(k)} != {s}" for k, s in want.items() if src.shape(k) != s]
    if bad:
        raise TensorError(f"base {where}: misshapen tensors: {'; '.join(bad[:3])}: the weights do not match its "
                          f"config.json; re-download the model (config.json and weights from one download)")
    if unread := unread_weights({k: src.dtype(k) for k in want}):
        raise TensorError(f"base {where}: {unread}: {UNREAD_BASE_FIX}")
    if b.tie_word_embeddings and "lm_head.weight" in have:
        _check_tied_head(src, where)


# the bytes of rows (as float32) _check_tied_head compares at once: its memory whatever the vocabulary (Llama 3 70B's
# head is 128256 x 8192, 2 GB in bfloat16 a table)
TIED_CHUNK_BYTES = 64 << 20


def _check_tied_head(src: TensorSource, where: Path) -> None:
    """A config.json that ties the head to the embedding over weights that also hold an lm_head.weight: transformers
    5 uses the stored head (and warns it will not tie them), transformers 4.x (4.57, which TensorRT-LLM 1.2 pins) ties
    it to the embedding after loading, so the two are different models unless the stored head is the embedding.
    Compared in chunks of rows ([rows, H], TIED_CHUNK_BYTES each), read by get_slice (mmap views, no copy of a whole
    table), stopping at the first that differs, whose first differing row is named; NaN at the same places in both is
    no difference (a broken embedding stored twice: convert names the NaN)."""
    emb, head = "model.embed_tokens.weight", "lm_head.weight"
    vocab, hidden = src.shape(emb)
    step = max(1, TIED_CHUNK_BYTES // (hidden * 4))
    for start in range(0, vocab, step):
        a, b = src.get(emb, 0, start, start + step), src.get(head, 0, start, start + step)
        common = torch.promote_types(a.dtype, b.dtype)
        a, b = a.to(common), b.to(common)
        if torch.equal(a, b):
            continue
        differs = ((a != b) & ~(a.isnan() & b.isnan())).any(dim=1).nonzero()
        if len(differs):
            raise ConfigError(f"base {where}: config.json sets tie_word_embeddings, but its weights also hold an "
                              f"{head} that differs from {emb} (first at row {start + int(differs[0])}): transformers "
                              f"4.x (TensorRT-LLM's) ties the head to the embedding, transformers 5 keeps the stored "
                              f"one; set \"tie_word_embeddings\": false in config.json to keep the stored head, or "
                              f"delete {head} from the weights to tie them")


def _tie_hint(b: BaseModelConfig, astray: set[str]) -> str | None:
    """A tied model (its weights hold no lm_head.weight) whose config.json does not say so: transformers initialises
    its lm_head at random. An absent tie_word_embeddings is false, the default of every architecture registered (a
    null one is refused before, config.typed_flag)."""
    if astray != {"lm_head.weight"}:
        return None
    said = "false" if "tie_word_embeddings" in b.hf else f"absent, {b.spec.hf_architecture}'s default is false"
    return (f'if the model ties its head to the embedding, set "tie_word_embeddings": true in config.json (it is '
            f'{said}), else re-download the model')


def _hf_bias_hint(b: BaseModelConfig, unexpected: set[str]) -> str | None:
    """transformers' Llama biases its projections only for `attention_bias` / `mlp_bias`; a config saying `bias: true`
    (which it does not read; TensorRT-LLM's from_hugging_face reads it as attention_bias) over biased weights would
    run without them. Name the flags that would carry them."""
    if not b.spec.bias_flags:
        return None
    fields = [f for f, mod in (("attention_bias", ".self_attn."), ("mlp_bias", ".mlp.")) if not b.hf.get(f)
              and any(n.endswith(".bias") and mod in n for n in unexpected)]
    if not fields:
        return None
    added = " and ".join(f'"{f}": true' for f in fields)
    said = " (transformers' Llama does not read `bias`)" if "bias" in b.hf else ""
    return f"if the model has these biases, add {added} to config.json{said}"


def plan_hf_rank(src: TensorSource, b: BaseModelConfig, cfg: dict, tp_rank: int) -> list[Planned]:
    tp, dtype = layout.tp_size(cfg), layout.TORCH_DTYPES[cfg["dtype"]]
    specs = layout.base_tensors(cfg, tp_rank)
    hd = b.head_size

    def reader(split: str, sources: tuple[str, ...]) -> Callable[[], torch.Tensor]:
        def read() -> torch.Tensor:
            if split == "replicate":
                t = src.get(sources[0])
            elif split in ("rows", "cols"):
                dim = 0 if split == "rows" else 1
                t = src.get(sources[0], dim, *even_range(src.shape(sources[0])[dim], tp_rank, tp))
            elif split == "vocab":
                start, stop, pad = vocab_range(b.vocab_size, tp_rank, tp)
                t = src.get(sources[0], 0, start, stop)
                t = torch.cat([t, t.new_zeros((pad, *t.shape[1:]))]) if pad else t
            else:  # qkv
                q0, q1 = even_range(b.num_heads, tp_rank, tp)
                k0, k1 = kv_head_range(b.num_kv_heads, tp_rank, tp)
                t = torch.cat([src.get(sources[0], 0, q0 * hd, q1 * hd), src.get(sources[1], 0, k0 * hd, k1 * hd),
                               src.get(sources[2], 0, k0 * hd, k1 * hd)])
            return t.to(dtype)
        return read

    planned = []
    rows = [(r, {"L": layer}) for layer in range(b.num_layers) for r in LAYER_RULES] + [(r, {}) for r in MODEL_RULES]
    for rule, fmt in rows:
        name = rule.dest.format(**fmt)
        if name not in specs:
            continue  # optional rows (qkv bias) absent from this family's layout
        sources = tuple(s.format(**fmt) for s in rule.sources)
        if name == "lm_head.weight":
            sources = (hf_lm_head(src),)
        shape, dt = specs[name]
        # a parallel embedding: modelopt's export at tp > 1 (inspect --base compares with it)
        split = embedding_split(cfg) if name == EMBEDDING else rule.split
        planned.append(Planned(name, shape, dt, reader(split, sources), src, sources))
    return planned


def nonfinite_refusal(src: TensorSource | None, sources, name: str, dtype: torch.dtype,
                      dtypes: tuple[str, ...] = DTYPES) -> TensorError:
    """The refusal of `name`, which holds NaN or Inf as read in `dtype`. `sources`: the tensors of `src` it is read
    from (a Hugging Face base's names, a fused qkv's three; a drafter's), read again whole as stored:
    broken_base_tensor of the first holding NaN or Inf; where all are finite, the cast to `dtype` made Inf of values
    beyond its range (float16's 65504: a bfloat16 base's; bfloat16's 3.39e38: a float32 one's), whose fix is a wider
    one of `dtypes` (those the command converts to). Without them (a TensorRT-LLM base's) either may be the cause."""
    if src is None or not sources:
        if dtype == torch.float16:
            return TensorError(f"{name} holds NaN or Inf in float16: its values exceed float16's range (65504) or the "
                               f"source is broken: convert with --dtype bfloat16")
        return TensorError(f"{name} holds NaN or Inf: the source weights are broken, re-export them")
    stored = {source: src.get(source) for source in sources}
    for source, t in stored.items():
        if not all_finite(t):
            return broken_base_tensor(source, src.file(source))
    kind, limit = str(dtype).removeprefix("torch."), torch.finfo(dtype).max
    wider = [d for d in dtypes if torch.finfo(getattr(torch, d)).max > limit
             and all(all_finite(t.to(getattr(torch, d))) for t in stored.values())]  # as cast, not by the limits
    fix = f"convert with --dtype {' or '.join(wider)}" if wider else "no dtype it converts to holds them: fix the model"
    as_stored = ", ".join(sorted({src.dtype(source) for source in sources}))
    return TensorError(f"{name} holds Inf in {kind}: finite as stored ({as_stored}), its values exceed {kind}'s range "
                       f"(largest {limit:g}): {fix}")


def hf_lm_head(src: TensorSource) -> str:
    """The Hugging Face tensor the checkpoint's lm_head is: the embedding where a tied model stores no lm_head."""
    return "lm_head.weight" if "lm_head.weight" in src.names() else "model.embed_tokens.weight"


# ---------------------------------------------------------------- TensorRT-LLM base

def _check_layer_count(tensors: int, layers: int, where: str) -> None:
    """Each layer holds several tensors: naming every tensor of a config's billion layers would hang."""
    if layers > tensors:
        raise TensorError(f"{where}: its {tensors} tensors cannot hold num_hidden_layers={layers} layers: the weights "
                          f"do not match its config.json")


def plan_trtllm_rank(src: TensorSource, cfg: dict, tp_rank: int, where: Path) -> list[Planned]:
    have = src.names()
    _check_layer_count(len(have), cfg["num_hidden_layers"], f"base checkpoint {where} rank {tp_rank}")
    specs = layout.base_tensors(cfg, tp_rank)
    specs |= layout.held_optional_tensors(cfg, have)
    quantizing, stale = layout.lm_head_scales(cfg, {n: src.dtype(n) for n in have if n.startswith("lm_head.")})
    if quantizing:
        raise TensorError(f"base checkpoint {where} rank {tp_rank} quantizes lm_head ({', '.join(quantizing)}), "
                          f"{layout.fp8_lm_head(cfg['dtype'])}")
    if stale:
        log.info("base checkpoint %s rank %d: dropping %s beside its %s lm_head.weight, as TensorRT-LLM does",
                 where, tp_rank, ", ".join(stale), src.dtype("lm_head.weight"))
    missing, unexpected = set(specs) - have, have - set(specs) - set(stale)
    if missing or unexpected:
        parts = ([f"missing tensors: {name_list(missing)}"] if missing else []) + \
                ([f"unexpected tensors: {name_list(unexpected)}"] if unexpected else [])
        raise TensorError(f"base checkpoint {where} rank {tp_rank}: {'; '.join(parts)}: it does not match its "
                          f"config.json{_bias_hint(cfg, unexpected)}")
    planned = []
    for name, (shape, dt) in specs.items():
        if src.shape(name) != shape:
            raise TensorError(f"base checkpoint {where} rank {tp_rank}: {name} is {src.shape(name)}, config says "
                              f"{shape}: the rank files do not match its config.json: fix its config.json or re-export "
                              "the base")
        planned.append(Planned(name, shape, dt, _trtllm_reader(src, name, dt, f"base checkpoint {where} rank {tp_rank}")))
    return planned


def _bias_hint(cfg: dict, unexpected: set[str]) -> str:
    """modelopt 0.47 writes a biased Llama's config with `bias: true`, which TensorRT-LLM does not read (it would
    warn and build the model without its biases), and no attn_bias / mlp_bias: name the fields that would fix it."""
    fields = [f for f, mod in (("attn_bias", ".attention."), ("mlp_bias", ".mlp.")) if not cfg.get(f)
              and any(n.endswith(".bias") and mod in n for n in unexpected)]
    added = " and ".join(f'"{f}": true' for f in fields)
    return f" (add {added}, as TensorRT-LLM reads them)" if fields else ""


def _trtllm_reader(src: TensorSource, name: str, dt: torch.dtype, where: str) -> Callable[[], torch.Tensor]:
    """How a TensorRT-LLM base tensor becomes the layout's `dt`: a float cast, or FP8 bits stored as int8 (older
    exporters' layout) viewed as FP8, as TensorRT-LLM's `preprocess_perlayer_weights` loads them. A cast into or
    out of FP8 (or of integers) would change the values without their scale: refused."""
    stored = ST_TO_TORCH.get(src.dtype(name))
    if dt == torch.float8_e4m3fn and stored == torch.int8:
        return lambda: src.get(name).view(dt)
    if stored != dt and (stored is None or torch.float8_e4m3fn in (stored, dt) or not stored.is_floating_point):
        raise TensorError(f"{where}: {name} is {src.dtype(name)}, but its config.json makes it "
                          f"{str(dt).removeprefix('torch.')}: the base's quantization block does not match its "
                          f"weights: re-export the base")
    return lambda: src.get(name).to(dt)


# ---------------------------------------------------------------- the base's config

def resolve_dtype(requested: str, source: str) -> str:
    if requested != "auto":
        return requested
    if source not in DTYPES:
        raise ConfigError(f"base dtype {source!r} is not supported: pass --dtype float16, bfloat16 or float32")
    return source


def hf_config(base: Path, opts: ConvertOptions, exit_dim: tuple[int, ...] = ()) -> BaseModelConfig:
    """The Hugging Face base's config, checked for what this converter carries (the tp split, the activation, no
    quantization) before any tensor is read or calibrated. `exit_dim`: the drafter's E, where known, which the tp
    sizes a refusal names divide as they divide the base's hidden size and vocabulary (the drafter's H and V)."""
    hf = read_json(base / "config.json", "base")
    b = BaseModelConfig.from_hf(hf, str(base / "config.json"))
    check_tp(b.num_heads, b.num_kv_heads, b.intermediate_size, opts.tp_size or 1,
             (b.hidden_size, b.vocab_size, *exit_dim), b.spec.qk_norm)
    if (act := hf.get("hidden_act", "silu")) not in TRTLLM_ACTIVATIONS:  # transformers runs more (train may use them)
        raise ConfigError(f"{base / 'config.json'}: hidden_act is {act!r}, not an activation TensorRT-LLM's Llama and "
                          f"Qwen2 build ({', '.join(TRTLLM_ACTIVATIONS)}; transformers' swish is silu): fix or "
                          f"re-download the config")
    if b.spec.qk_norm and hf.get("attention_bias"):  # transformers' Qwen3 biases q/k/v and o_proj for it
        raise ConfigError(f"{base / 'config.json'}: attention_bias is true, but TensorRT-LLM builds a Qwen3 without "
                          f"attention biases (its QWenConfig sets attn_bias false for qwen3): its engine would drop "
                          f"them; use a Qwen3 without attention biases")
    refuse_quantized(hf, base)
    return b


def refuse_quantized(hf: dict, base: Path) -> None:
    """ConfigError for a Hugging Face base whose config.json (`hf`) has a quantization_config (an -FP8 release, GPTQ,
    AWQ): its tensors are packed or scaled (qweight, weight_scale, ...): cast as they are, they would be garbage."""
    quant = hf.get("quantization_config")
    if quant:
        method = quant.get("quant_method", "?") if isinstance(quant, dict) else quant
        raise ConfigError(f"{base} is a quantized model (quantization_config: {method}), which this converter does not "
                          f"read: pass the unquantized model (add --quantize fp8 for an FP8 checkpoint)")


def base_fields(base: Path, opts: ConvertOptions, exit_dim: tuple[int, ...] = ()) -> dict:
    """The base's TensorRT-LLM model config from its config.json alone, checked: no tensor is read. `exit_dim`: as
    hf_config's."""
    if is_trtllm_checkpoint(base):
        return _trtllm_config(base, opts)
    b = hf_config(base, opts, exit_dim)
    return trtllm_model_fields(b, resolve_dtype(opts.dtype, b.source_dtype), opts.tp_size or 1)


def hf_base(base: Path, opts: ConvertOptions):
    b = hf_config(base, opts)
    src = TensorSource.from_hf_folder(base)
    check_hf_tensors(src, b, base)
    if opts.dtype == "auto" and b.source_dtype == "float32":
        log.warning("%s is float32 and --dtype auto keeps it: the checkpoint and its engine are twice a float16 one's "
                    "size (TensorRT-LLM's own converter makes auto float16 here): pass --dtype bfloat16 or float16 "
                    "for a GPU engine", base)
    cfg = trtllm_model_fields(b, resolve_dtype(opts.dtype, b.source_dtype), opts.tp_size or 1)
    return cfg, [src], b


def trtllm_base(base: Path, opts: ConvertOptions):
    cfg = _trtllm_config(base, opts)
    tp = layout.tp_size(cfg)
    files = [base / f"rank{r}.safetensors" for r in range(tp)]
    absent = [f.name for f in files if not f.exists()]
    if absent:
        raise TensorError(f"base checkpoint {base} lacks {', '.join(absent)} for tp_size {tp}: re-export it")
    return cfg, [TensorSource.from_files([f]) for f in files]


def _trtllm_config(base: Path, opts: ConvertOptions) -> dict:
    cfg = read_json(base / "config.json", "base checkpoint")
    if "redrafter_num_layers" in cfg:
        raise ConfigError(f"{base} is already a ReDrafter checkpoint: pass the base model's checkpoint instead")
    if cfg.get("architecture") in layout.QWEN_BASES:  # modelopt without TensorRT-LLM writes none
        cfg.setdefault("seq_length", QWEN_SEQ_LENGTH)
    scaling = cfg.get("rotary_scaling")
    if isinstance(scaling, dict) and rope_kind(scaling) == "default" and trtllm_kind(scaling) in (None, "default"):
        cfg["rotary_scaling"] = None  # the same RoPE: 1.0 to 1.2's RotaryScalingType.from_string has no "default"
    problems = config_problems(cfg)
    if problems:
        raise ConfigError(f"base checkpoint {base}: "
                          f"{ending_in_fix(problems[0], 'fix its config.json or re-export the base')}")
    mapping = cfg.get("mapping") or {}
    tp = layout.tp_size(cfg)  # pp_size 1: checked by config_problems
    if opts.tp_size is not None and opts.tp_size != tp:
        fix = resplit(layout.convert_tp_sizes(cfg), tp, "re-export the base at tp", opts.tp_size)
        raise ConfigError(f"--tp-size {opts.tp_size} differs from the base checkpoint's tp_size {tp}: "
                          f"pass --tp-size {tp}{fix}")
    if opts.dtype not in ("auto", cfg["dtype"]):
        raise ConfigError(f"--dtype {opts.dtype} differs from the base checkpoint's {cfg['dtype']}: pass --dtype auto "
                          f"(the drafter follows the base), or convert from the Hugging Face model")
    _warn_mistral_window(base, cfg)
    cfg.pop("producer", None)
    cfg["mapping"] = {**mapping, "tp_size": tp}
    return cfg


def _warn_mistral_window(base: Path, cfg: dict) -> None:
    """A TensorRT-LLM checkpoint does not record a sliding window (TensorRT-LLM takes it at run time, as
    max_attention_window_size), so the refusal a Hugging Face Mistral v0.1 gets cannot be made here: a Mistral base
    with v0.1's rope_theta and more positions than its window is named, with the way to find out."""
    positions = cfg.get("max_position_embeddings")
    if (cfg.get("architecture") == "MistralForCausalLM" and cfg.get("rotary_base") == MISTRAL_V01["rotary_base"]
            and isinstance(positions, int) and positions > MISTRAL_V01["window"]):
        log.warning("base checkpoint %s is a Mistral with rotary_base 10000, as Mistral 7B v0.1 and its fine-tunes, "
                    "which attend over a sliding window of %d positions that a TensorRT-LLM checkpoint does not record: "
                    "if the model's Hugging Face config.json has sliding_window, the engine attends over the whole "
                    "context past %d tokens (transformers does not); convert from the Hugging Face folder to have it "
                    "checked", base, MISTRAL_V01["window"], MISTRAL_V01["window"])
