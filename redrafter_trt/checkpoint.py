"""Inspect any TensorRT-LLM checkpoint folder (base or ReDrafter) from its config.json and safetensors
headers (and rows spread over the drafter head): what it is, what it holds per rank, and every problem found. `run` and `build` refuse a
checkpoint with problems through `require_valid`. With `values=True` every tensor is read too, for NaN and Inf (a
checkpoint another tool wrote; convert checks what it writes).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tqdm import tqdm

from . import layout
from .drafter import uniform_head
from .errors import (FLAG, LAYER_COUNT, POSITIVE_INT, POSITIVE_NUMBER, ConfigError, TensorError, json_loads, name_list,
                     optional)
from .io import ST_TO_TORCH, TensorSource, all_finite, dtype_name
from .plural import agreeing
from .producer import producer_summary, recorded_predict_n
from .registry import QWEN_SEQ_LENGTH, TRTLLM_ACTIVATIONS, TRTLLM_BASES, activation_problem
from .rope import (ENGINE_FIX, TRTLLM_ROPE_SCALINGS, rope_scaling_problem, runtime_fix, trtllm_builds,
                   trtllm_rope_refusal)
from .shard import DRAFTER_ROWS, DRAFTER_VOCAB, qk_norm_misread, qk_norm_problem, tp_fits, tp_problem

REDRAFTER_KEYS = ("redrafter_num_layers", "redrafter_hidden_size", "redrafter_exit_dim", "redrafter_is_rnn",
                  "redrafter_num_beams", "redrafter_draft_len_per_beam", "redrafter_greedy_search",
                  "base_model_architecture")
MODEL_KEYS = ("architecture", "dtype", "hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size",
              "intermediate_size")  # mapping: TensorRT-LLM reads a missing one as tp 1

ROPE_KEYS = ("rotary_base", "rotary_scaling", "max_position_embeddings")  # the positions TensorRT-LLM builds

# config key -> (what it must be, check); checked before anything computes with them
CONFIG_TYPES = {
    **dict.fromkeys(("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size", "intermediate_size",
                     "redrafter_hidden_size", "redrafter_exit_dim", "redrafter_num_beams",
                     "redrafter_draft_len_per_beam"), POSITIVE_INT),
    "num_key_value_heads": optional(POSITIVE_INT),
    "redrafter_num_layers": LAYER_COUNT,
    "redrafter_is_rnn": FLAG,
    "redrafter_greedy_search": FLAG,
    **dict.fromkeys(("attn_bias", "mlp_bias"), optional(FLAG)),  # which bias tensors the layout holds
    "max_position_embeddings": optional(POSITIVE_INT),
    "head_size": optional(POSITIVE_INT),
    "norm_epsilon": POSITIVE_NUMBER,
    "hidden_act": (f"one of {', '.join(TRTLLM_ACTIVATIONS)}", lambda v: v in TRTLLM_ACTIVATIONS),
    # Llama's and Qwen's attention build what it names (rope_gptj rotates interleaved pairs, learned_absolute none);
    # the reference runtime computes rope_gpt_neox
    "position_embedding_type": ("rope_gpt_neox", lambda v: v == "rope_gpt_neox"),
    "rotary_base": POSITIVE_NUMBER,  # null: TensorRT-LLM cannot build it (theta None), the runtime took 10000
    "rotary_scaling": (f"null (no scaling) or an object whose rope_type (or type, the same if both) is one of "
                       f"{', '.join(TRTLLM_ROPE_SCALINGS)} and whose factor, if any, is {POSITIVE_NUMBER[0]} (yarn's "
                       f"beta_fast, beta_slow too; its mscale, mscale_all_dim numbers)",
                       trtllm_builds),
    **dict.fromkeys(("architecture", "dtype", "base_model_architecture"), ("a string", lambda v: isinstance(v, str))),
    # exclude_modules null: TensorRT-LLM's defaults (layout.exclusions); 0 or false passed as `or []` once, and
    # list(False) was a TypeError traceback (a fuzzing review)
    "quantization": ("null or an object (quant_algo, kv_cache_quant_algo, exclude_modules: null or a list of names)",
                     lambda v: v is None or isinstance(v, dict)
                     and (v.get("exclude_modules") is None or isinstance(v["exclude_modules"], list)
                          and all(isinstance(m, str) for m in v["exclude_modules"]))  # fnmatch patterns
                     and all(isinstance(v.get(k), (str, type(None))) for k in ("quant_algo", "kv_cache_quant_algo"))),
    "mapping": ("null or an object of positive integer tp_size / pp_size / cp_size / world_size",
                lambda v: v is None or isinstance(v, dict) and all(POSITIVE_INT[1](v[k]) for k in (
                    "tp_size", "pp_size", "cp_size", "world_size") if k in v)),
}


@dataclass
class RankReport:
    rank: int
    file: str
    tensors: int
    bytes: int


class WithFix(str):
    """A problem that ends in its own fix ('...: add it to the list', '...: re-convert it'): require_valid (and
    convert, of a base's config) adds no other fix after it."""


def ending_in_fix(problem: str, fix: str) -> str:
    """The problem followed by `fix`, or alone where it carries its own (a WithFix)."""
    return problem if isinstance(problem, WithFix) else f"{problem}: {fix}"


@dataclass
class Report:
    path: str
    architecture: str | None = None
    dtype: str | None = None
    tp_size: int | None = None
    quantization: dict | None = None
    config_read: bool = False  # config.json parsed into an object holding the model keys
    drafter: dict | None = None
    producer: dict | None = None  # producer_summary: the tool that wrote it, its drafter's recorded predict_n and base
    rope: dict | None = None  # ROPE_KEYS as config.json holds them (None: absent or malformed), what an engine builds
    ranks: list[RankReport] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    malformed: list[str] = field(default_factory=list)  # config fields that fail their CONFIG_TYPES check
    runtime_problems: list[str] = field(default_factory=list)  # why `run` refuses it (an engine can still be built)
    compared: dict | None = None  # inspect --base / --drafter: the models compared with, the tensors compared

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict:
        return {**asdict(self), "ok": self.ok}


def inspect_checkpoint(path: Path | str, values: bool = False, base: Path | str | None = None,
                       drafter: Path | str | None = None) -> Report:
    """values: also read every tensor of every rank for NaN and Inf (minutes for a large base), not just the headers
    and the drafter head's rows. base / drafter: also compare every tensor with what convert writes from them
    (compare.py)."""
    path = Path(path)
    rep = Report(str(path))
    cfg_path = path / "config.json"
    if not path.is_dir():
        rep.problems.append(f"{path} is not a folder")
        return rep
    if not cfg_path.exists():
        rep.problems.append("config.json is missing (an interrupted conversion, or not a checkpoint folder)")
        return rep
    try:
        cfg = json_loads(cfg_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        rep.problems.append(f"config.json is not valid JSON ({e.msg}, line {e.lineno})")
        return rep
    except (UnicodeDecodeError, OSError) as e:
        rep.problems.append(f"config.json cannot be read as UTF-8 text ({type(e).__name__})")
        return rep
    if not isinstance(cfg, dict):
        rep.problems.append(f"config.json holds a JSON {type(cfg).__name__}, not an object")
        return rep
    if other := foreign(path, cfg):
        rep.problems.append(other)
        return rep
    missing = [k for k in MODEL_KEYS if k not in cfg]
    if missing:
        rep.problems.append(f"config.json lacks {', '.join(missing)}: not a TensorRT-LLM checkpoint config")
        return rep
    rep.config_read = True
    _check_fields(cfg, rep)
    if rep.problems:
        return rep
    fp8_lm_head = _check_ranks(path, cfg, rep, values)
    _check_exclusions(cfg, rep, fp8_lm_head)  # with the tensors' problems: every problem is listed
    if base is not None or drafter is not None:
        from .compare import compare_checkpoint

        base, drafter = (Path(p) if p is not None else None for p in (base, drafter))
        found = compare_checkpoint(path, cfg, base, drafter)
        rep.compared = {"base": base and str(base), "drafter": drafter and str(drafter), "tensors": found.compared}
        rep.problems += found.problems
    return rep


def foreign(folder: Path, cfg: dict) -> str | None:
    """The problem of a folder whose config.json is a model's, a drafter's or an engine's (each has its own fix)."""
    if "architectures" in cfg or "exit_dim" in cfg:
        # a drafter first: Apple's trainer saves it with save_pretrained, which writes architectures ["Drafter"]
        kind = "an Apple ReDrafter drafter" if "exit_dim" in cfg else "a Hugging Face model"
        return (f"{folder} holds {kind}, not a ReDrafter checkpoint: make one with `redrafter-trt convert --base BASE "
                f"--drafter DRAFTER --output CKPT` and pass CKPT")
    if "pretrained_config" in cfg:
        return (f"{folder} holds a TensorRT-LLM engine, not a ReDrafter checkpoint: pass it to --engine-dir "
                f"(`redrafter-trt run` or `serve`), or pass the checkpoint it was built from")
    return None


def config_problems(cfg: dict) -> list[str]:
    """What `inspect` says of a checkpoint config alone (no tensors): convert checks a TensorRT-LLM base's before
    reading it (a malformed field was a traceback) and the checkpoint's before writing it."""
    if missing := [k for k in MODEL_KEYS if k not in cfg]:
        return [f"config.json lacks {', '.join(missing)}: not a TensorRT-LLM checkpoint config"]
    rep = Report("")
    _check_fields(cfg, rep)
    return rep.problems


def _check_fields(cfg: dict, rep: Report) -> None:
    """The config's field types, then the rules between fields; the sound fields go into the header either way."""
    bad = rep.malformed = [k for k, (_, ok) in CONFIG_TYPES.items() if k in cfg and not ok(cfg[k])]
    rep.problems += [f"{k} is {cfg[k]!r}, must be {CONFIG_TYPES[k][0]}" for k in bad]
    # what is sound is shown even when another field is not
    rep.architecture = None if "architecture" in bad else cfg["architecture"]
    rep.dtype = None if "dtype" in bad else cfg["dtype"]
    rep.tp_size = None if "mapping" in bad else layout.tp_size(cfg)
    rep.quantization = None if "quantization" in bad else cfg.get("quantization")
    rep.producer = producer_summary(cfg)
    rep.rope = {k: None if k in bad else cfg.get(k) for k in ROPE_KEYS}
    if not rep.problems:
        rep.runtime_problems = runtime_refusals(cfg)
        _check_config(cfg, rep)


def runtime_refusals(cfg: dict) -> list[str]:
    """Why the reference runtime refuses a checkpoint config TensorRT-LLM builds, each with its fix: `run` raises the
    first, `inspect` and `convert` name them all."""
    scaling, positions = cfg.get("rotary_scaling"), cfg.get("max_position_embeddings")
    return [f"{p}: {fix}" for p, fix in ((rope_scaling_problem(scaling), runtime_fix(scaling, positions)),
                                         (activation_problem(cfg.get("hidden_act", "silu")), ENGINE_FIX)) if p]


def rope_differs(cfg: dict) -> WithFix | None:
    """A `rotary_scaling` TensorRT-LLM builds otherwise than transformers computes it (rope.trtllm_rope_problem), as
    convert refuses it in a Hugging Face config: inspect, build and run refuse it, and convert from a TensorRT-LLM
    base (no fix in its config.json would make the engine compute the model's RoPE)."""
    scaling = cfg.get("rotary_scaling")
    refusal = trtllm_rope_refusal(scaling)
    return refusal and WithFix(f"rotary_scaling {scaling}: {refusal}")


def _check_config(cfg: dict, rep: Report) -> None:
    if differs := rope_differs(cfg):
        rep.problems.append(differs)
    if "rotary_base" not in cfg and isinstance(cfg.get("producer"), dict) and cfg["producer"].get("name") == "modelopt":
        rep.problems.append(WithFix("rotary_base is absent: nvidia-modelopt under transformers 5 leaves out "
                                    "rotary_base and rotary_scaling, and TensorRT-LLM then builds RoPE with 10000 "
                                    "and no scaling: add both to config.json from the Hugging Face config's "
                                    "rope_theta and rope_scaling"))
    if "hidden_act" not in cfg:  # PretrainedConfig's default: every Llama, Mistral and Qwen2 layer's GatedMLP as gelu
        rep.problems.append(WithFix("hidden_act is absent: TensorRT-LLM reads gelu, which no Llama, Mistral or Qwen2 "
                                    "uses: add the model's (\"hidden_act\": \"silu\") to config.json"))
    if "position_embedding_type" not in cfg:  # PretrainedConfig's default: learned_absolute, every layer without RoPE
        rep.problems.append(WithFix("position_embedding_type is absent: TensorRT-LLM reads learned_absolute (no RoPE "
                                    "at all), which no Llama, Mistral or Qwen uses: add \"position_embedding_type\": "
                                    "\"rope_gpt_neox\" to config.json"))
    base_arch = cfg.get("base_model_architecture", cfg["architecture"])
    if base_arch in layout.QWEN_BASES and "seq_length" not in cfg:
        rep.problems.append(WithFix(f"seq_length is absent: TensorRT-LLM's Qwen model reads it and trtllm-build "
                                    f"fails without it ('QWenConfig' object has no attribute 'seq_length'): add "
                                    f"\"seq_length\": {QWEN_SEQ_LENGTH} (TensorRT-LLM's default) to config.json"))
    if base_arch in layout.QWEN_BASES and cfg.get("qwen_type") not in layout.QWEN_TYPES:
        rep.problems.append(WithFix(f"qwen_type {cfg.get('qwen_type')!r} (TensorRT-LLM reads a missing one as the "
                                    f"first Qwen) is not supported, only Qwen2 and Qwen3 (dense): for a Qwen2 or "
                                    f"Qwen3 checkpoint add \"qwen_type\": \"qwen2\" or \"qwen3\" (its Hugging Face "
                                    f"model_type) to its config.json"))
    if layout.qk_norm(cfg) and "attn_bias" not in cfg:
        rep.problems.append(WithFix("attn_bias is absent: TensorRT-LLM's QWenConfig reads it as true (biased q/k/v) "
                                    "for every qwen_type, and a Qwen3 has no attention biases: add \"attn_bias\": "
                                    "false to config.json"))
    m = cfg.get("mapping") or {}
    tp, pp, cp = (int(m.get(k, 1)) for k in ("tp_size", "pp_size", "cp_size"))
    if pp != 1:
        rep.problems.append(f"pp_size is {pp} (pipeline parallel): ReDrafter engines need pp_size 1")
    if cp != 1:  # its rank files would be world_size = tp x cp, each tp split repeated
        rep.problems.append(WithFix(f"cp_size is {cp} (context parallel): ReDrafter checkpoints need cp_size 1 (a "
                                    f"rank file per tp rank): convert or export the base without context parallelism"))
    ranks = tp * pp * cp  # TensorRT-LLM 1.2's Mapping refuses any other world_size (a ValueError)
    if "world_size" not in m and ranks != 1:  # it reads a missing one as 1
        rep.problems.append(WithFix(f"mapping lacks world_size, which TensorRT-LLM reads as 1, not tp_size x pp_size "
                                    f"x cp_size = {ranks}: add \"world_size\": {ranks} to mapping"))
    elif int(m.get("world_size", 1)) != ranks:
        rep.problems.append(f"mapping.world_size {m.get('world_size')} != tp_size x pp_size x cp_size = {ranks}")
    quant = cfg.get("quantization") or {}
    for key in ("quant_algo", "kv_cache_quant_algo"):  # what layout and the runtime know; the build makes the others
        if quant.get(key) not in (None, "FP8"):
            rep.problems.append(WithFix(f"quantization.{key} {quant[key]!r} is not supported (ReDrafter checkpoints "
                                        f"here are unquantized or FP8): convert from an unquantized base, with "
                                        f"--quantize fp8 for FP8"))
    if cfg["dtype"] not in layout.TORCH_DTYPES:
        rep.problems.append(f"dtype {cfg['dtype']!r} is not one of {', '.join(layout.TORCH_DTYPES)}")
    nh, nkv = cfg["num_attention_heads"], cfg.get("num_key_value_heads") or cfg["num_attention_heads"]
    if tp_problem(nh, nkv, cfg["intermediate_size"], tp):
        rep.problems.append(f"tp_size {tp} does not fit {nh} heads / {nkv} kv heads / intermediate {cfg['intermediate_size']}")
    elif layout.qk_norm(cfg) and qk_norm_misread(nh, nkv, tp):
        dims = (cfg["hidden_size"], cfg["vocab_size"], *[cfg[k] for k in ("redrafter_exit_dim",) if cfg.get(k)])
        fits = tp_fits(nh, nkv, cfg["intermediate_size"], dims, base_checkpoint=True, qk_norm=True)
        rep.problems.append(WithFix(f"{qk_norm_problem(nh, nkv, tp)}: {fits}"))
    head = cfg.get("head_size") or cfg["hidden_size"] // nh
    if head % 2:
        rep.problems.append(WithFix(f"head size {head} is odd: rotary embeddings rotate pairs of dimensions, so "
                                    f"TensorRT-LLM (and transformers) need an even head size: use another model"))
    if not layout.is_redrafter(cfg):
        return
    absent = [k for k in REDRAFTER_KEYS if k not in cfg]
    if absent:
        rep.problems.append(f"ReDrafter config lacks {', '.join(absent)}")
        return
    rep.drafter = {k.removeprefix("redrafter_"): cfg[k] for k in REDRAFTER_KEYS}
    want_arch = TRTLLM_BASES.get(cfg["base_model_architecture"])
    if want_arch != cfg["architecture"]:
        rep.problems.append(f"architecture {cfg['architecture']} does not match base_model_architecture "
                            f"{cfg['base_model_architecture']} (expected {want_arch})")
    # redrafter_num_beams, redrafter_draft_len_per_beam >= 1 and redrafter_num_layers >= 0: CONFIG_TYPES (checked first)
    tree = layout.tree_tokens(int(cfg["redrafter_num_beams"]), int(cfg["redrafter_draft_len_per_beam"]))
    if cfg.get("max_position_embeddings") and tree > cfg["max_position_embeddings"]:
        rep.problems.append(WithFix(f"redrafter_num_beams x redrafter_draft_len_per_beam + 1 = {tree} tokens "
                                    f"verified per step exceed max_position_embeddings "
                                    f"{cfg['max_position_embeddings']}: reconvert with smaller --num-beams / "
                                    f"--draft-len"))
    draft_len, predict_n = int(cfg["redrafter_draft_len_per_beam"]), recorded_predict_n(cfg)
    if predict_n is not None and draft_len > predict_n:  # convert refuses it as --draft-len
        rep.problems.append(WithFix(f"redrafter_draft_len_per_beam {draft_len} exceeds the {predict_n} tokens the "
                                    f"drafter was trained to predict (producer.drafter_predict_n): reconvert with "
                                    f"--draft-len <= {predict_n}, or retrain the drafter with --predict-n >= "
                                    f"{draft_len}"))
    if int(cfg["redrafter_num_beams"]) > int(cfg["vocab_size"]):
        rep.problems.append(WithFix(f"redrafter_num_beams {cfg['redrafter_num_beams']} exceeds the vocabulary "
                                    f"({cfg['vocab_size']} tokens), beyond which no beams differ: reconvert with a "
                                    f"smaller --num-beams"))
    H, E, V = cfg["redrafter_hidden_size"], cfg["redrafter_exit_dim"], cfg["vocab_size"]
    if H != cfg["hidden_size"]:
        rep.problems.append(f"redrafter_hidden_size {H} != base hidden_size {cfg['hidden_size']}")
    for label, n, why in (("redrafter_hidden_size", H, DRAFTER_ROWS), ("redrafter_exit_dim", E, DRAFTER_ROWS),
                          ("vocab_size", V, DRAFTER_VOCAB)):
        if n % tp:
            rep.problems.append(f"{label} {n} is not divisible by tp_size {tp} ({why})")


def _check_exclusions(cfg: dict, rep: Report, fp8_lm_head: bool = False) -> None:
    """An FP8 config must keep lm_head and every drafter module out of FP8. For a config `_check_fields` passed: it
    names each drafter layer, at most 1024 (errors.LAYER_COUNT; a hand-edited count could be billions).
    `fp8_lm_head`: the rank files hold lm_head in FP8, a problem of its own (_check_rank's), not this one."""
    quant = cfg.get("quantization") or {}
    if quant.get("quant_algo"):
        listed = layout.exclusions(quant)
        lacking = [mod for mod in layout.required_exclusions(cfg) if not layout.is_excluded(mod, listed)
                   and not (fp8_lm_head and mod == "lm_head")]
        if lacking:
            it = agreeing(len(lacking), "it", "them")
            rep.problems.append(WithFix(f"quantization.exclude_modules lacks {name_list(lacking)}: the build would "
                                        f"quantize {it} to {quant['quant_algo']}, though this checkpoint holds {it} "
                                        f"in {cfg['dtype']}: add {it} to the list"))


def _check_ranks(path: Path, cfg: dict, rep: Report, values: bool) -> bool:
    """Adds every rank's problems to `rep`; returns whether a rank holds lm_head in FP8."""
    tp = rep.tp_size
    fp8_lm_head = False
    uniform: dict[int, tuple[float, int]] = {}  # rank -> the one value its drafter head holds throughout, its rows
    shards: dict[int, bytes] = {}  # rank -> the bytes of the first rows of its lm_head shard (_shard_sample)
    present = {int(m.group(1)) for f in path.glob("rank*.safetensors") if (m := re.fullmatch(r"rank(\d+)\.safetensors", f.name))}
    if present - set(range(tp)):
        rep.problems.append(f"rank files {sorted(present - set(range(tp)))} exceed tp_size {tp}")
    # named before the tensors' problems: a tp_size edited by hand (or rank files lost) makes every shape wrong
    missing = [r for r in range(tp) if not (path / f"rank{r}.safetensors").exists()]
    rep.problems += [f"rank{r}.safetensors is missing" for r in missing]
    for r in range(tp):
        f = path / f"rank{r}.safetensors"
        if r in missing:
            continue
        try:
            src = TensorSource.from_files([f], fix=RECONVERT)  # convert writes it, no download
            have = {n: (src.shape(n), src.dtype(n)) for n in src.names()}
            meta = src.metadata(f)
        except TensorError as e:
            rep.problems.append(WithFix(f"rank{r}.safetensors: {e}"))
            continue
        written = (meta.get("rank"), meta.get("tp_size"))  # ours say which rank they were written as
        if written != (None, None) and written != (str(r), str(tp)):
            rep.problems.append(WithFix(f"rank{r}.safetensors was written as rank {written[0]} of tp_size "
                                        f"{written[1]}: rank files were renamed or mixed from another checkpoint; "
                                        f"re-convert"))
        fp8_lm_head |= bool(layout.lm_head_scales(cfg, {n: d for n, (_, d) in have.items()})[0])
        try:
            if (value := _check_rank(cfg, r, f, have, src, rep, values)) is not None:
                uniform[r] = value
            if (sample := _shard_sample(src, have)) is not None:  # a copy of ours is named by its metadata, above
                twin = next((q for q, b in shards.items() if b == sample), None)
                if twin is not None and written in ((None, None), (str(r), str(tp))):
                    rep.problems.append(WithFix(f"rank{r}.safetensors holds the same {SPLIT_SAMPLED} shard as "
                                                f"rank{twin}.safetensors: a copied rank file; reconvert with "
                                                f"--tp-size {tp}"))
                shards[r] = sample
        except TensorError as e:  # the drafter head's rows, read past a header that looked whole
            rep.problems.append(WithFix(f"rank{r}.safetensors: {e}"))
        finally:
            src.close()
    # train saves the rows of tokens it never saw as zeros, so one rank's rows of a trained head may all be zero (its
    # share of the vocabulary unseen): a head drafts nothing only when every rank holds one same value throughout
    if len(uniform) == tp and len({value for value, _ in uniform.values()}) == 1:
        rep.problems += [WithFix(f"rank{r}: {DRAFTER_HEAD} {uniform_head(value, rows)}: train the drafter "
                                 f"(`redrafter-trt train`) and re-convert") for r, (value, rows) in uniform.items()]
    return fp8_lm_head


def _check_rank(cfg: dict, r: int, f: Path, have: dict, src: TensorSource, rep: Report,
                values: bool) -> tuple[float, int] | None:
    """Adds the rank's problems to `rep`; returns the one value its drafter head holds throughout and its rows, if so."""
    nbytes = sum(_numel(s) * ST_TO_TORCH[d].itemsize for s, d in have.values() if d in ST_TO_TORCH)
    rep.ranks.append(RankReport(r, f.name, len(have), nbytes))
    counts = {k: cfg[k] for k in ("num_hidden_layers", "redrafter_num_layers") if k in cfg}
    if sum(counts.values()) > len(have):  # each layer holds tensors: listing millions of missing names would hang
        layers = " + ".join(f"{k} {n}" for k, n in counts.items())
        rep.problems.append(WithFix(f"rank{r}: {len(have)} tensors cannot hold {layers} layers: fix the config or "
                                    f"re-convert"))
        return None
    uniform = None
    want = layout.expected_tensors(cfg, r) | layout.held_optional_tensors(cfg, have)
    quantizing, stale = layout.lm_head_scales(cfg, {n: d for n, (_, d) in have.items()})
    if quantizing:  # one problem, not the scales unexpected and lm_head.weight's dtype besides (convert refuses it)
        head = "lm_head.weight"
        rep.problems.append(WithFix(f"rank{r}: lm_head is FP8 ({head} {have[head][1]}, {', '.join(quantizing)}), "
                                    f"{layout.fp8_lm_head(cfg['dtype'])}"))
        want[head] = (want[head][0], ST_TO_TORCH["F8_E4M3"])  # as held (int8 bits too, below)
    # stale scales beside an lm_head.weight that is not FP8: TensorRT-LLM drops them when it loads the checkpoint
    miss, extra = set(want) - set(have), set(have) - set(want) - set(quantizing) - set(stale)
    if miss:
        rep.problems.append(f"rank{r}: missing tensors {name_list(miss)}")
    if extra:
        rep.problems.append(f"rank{r}: unexpected tensors {name_list(extra)}")
    # FP8 weights stored as int8 (older exporters): TensorRT-LLM's preprocess_perlayer_weights views an int8
    # `*weight` of an FP8 checkpoint as FP8, and convert attaches to such a base
    fp8_as_int8 = {n for n in want if n in have and n.endswith("weight") and have[n][1] == "I8"
                   and want[n][1] == ST_TO_TORCH["F8_E4M3"]}
    for n in [n for n in want if n in have]:  # layout order: the same report (and first problem) every run
        (ws, wd), (hs, hd) = want[n], have[n]
        if tuple(hs) != ws:
            rep.problems.append(f"rank{r}: {n} has shape {tuple(hs)}, config implies {ws}")
        elif ST_TO_TORCH.get(hd) != wd and n not in fp8_as_int8:
            rep.problems.append(f"rank{r}: {n} is {hd}, config implies {dtype_name(wd)}")
        elif n == DRAFTER_HEAD:
            sample = _spread_rows(src, n, hs[0])
            if not all_finite(sample):
                rep.problems.append(WithFix(f"rank{r}: {n} holds NaN or Inf: train the drafter (`redrafter-trt "
                                            f"train`) and re-convert"))
            elif (value := _one_value(src, n, hs[0], sample)) is not None:
                uniform = (value, hs[0])
    if values:
        broken = [n for n in tqdm(sorted(have), desc=f"rank{r} values", unit="tensor", disable=None, leave=False)
                  if not _finite_values(src, n, have[n][0], n in fp8_as_int8)]
        if broken:
            verb, source = ("holds", "it comes") if len(broken) == 1 else ("hold", "they come")
            rep.problems.append(WithFix(f"rank{r}: {name_list(broken)} {verb} NaN or Inf: re-export the weights "
                                        f"{source} from, then re-convert (convert refuses non-finite weights)"))
    return uniform


DRAFTER_HEAD = "drafter.lm_head.weight"
SPLIT_SAMPLED = "lm_head.weight"  # split by vocabulary rows across ranks: each rank holds other tokens' rows
SHARD_ROWS = 4  # the rows of each rank's SPLIT_SAMPLED compared: from the start, the last rank's padding is at its end


def _shard_sample(src: TensorSource, have: dict) -> bytes | None:
    """The bytes of the first SHARD_ROWS rows of the rank's lm_head shard, to tell a rank file copied over another
    (TensorRT-LLM's convert_checkpoint writes no rank metadata to tell it by); None where absent, or where the rows
    hold one value throughout (rows of tokens never trained, as zero on one rank as on another)."""
    import torch

    shape = have.get(SPLIT_SAMPLED, ((), None))[0]
    if len(shape) != 2 or not shape[0]:
        return None
    rows = src.get(SPLIT_SAMPLED, 0, 0, min(SHARD_ROWS, shape[0])).contiguous().view(torch.uint8)
    return None if bool((rows == rows.flatten()[0]).all()) else rows.numpy().tobytes()


RECONVERT = "re-convert it"  # a checkpoint's fix: convert wrote it, so nothing is downloaded again

HEAD_ROWS = 256  # the rows of each rank's drafter head inspect reads, spread over it


def _spread_rows(src: TensorSource, name: str, rows: int):
    """HEAD_ROWS rows spread evenly over a [rows, E] tensor, read one by one (not the whole head: a GB on an 8B base).
    Not the first rows: our trainer zeroes the rows of tokens it never saw, and a trained head held 315 zero rows
    in a row (SmolLM2's quickstart drafter, 88% of its rows zero), which a window would take for an untrained head."""
    import torch

    picks = sorted({i * rows // HEAD_ROWS for i in range(min(HEAD_ROWS, rows))})
    return torch.cat([src.get(name, 0, i, i + 1) for i in picks])


def _one_value(src: TensorSource, name: str, rows: int, sample) -> float | None:
    """The one value a [rows, E] tensor holds throughout, else None: read whole, in slices, only when the rows of
    `sample` hold one value (a trained head's rank may keep a few rows in thousands, which the sample misses)."""
    value = sample.flatten()[0]
    if not bool((sample == value).all()):
        return None
    step = max(1, VALUES_CHUNK // max(1, sample.shape[1]))
    if any(not bool((src.get(name, 0, start, min(rows, start + step)) == value).all()) for start in range(0, rows, step)):
        return None
    return value.item()


VALUES_CHUNK = 1 << 26  # elements read at once when scanning a tensor's values (256 MiB in float32)


def _finite_values(src: TensorSource, name: str, shape, fp8_bits: bool = False) -> bool:
    """Whether a tensor holds no NaN or Inf, read in slices of its first dimension (an 8B base's embedding is 1 GB).
    FP8 (e4m3fn) has no Inf and one NaN pattern, S.1111.111; integer tensors are always finite, except int8 holding
    FP8 bits (`fp8_bits`)."""
    import torch

    rows = shape[0] if shape else 1
    step = max(1, VALUES_CHUNK // max(1, _numel(shape[1:])))
    for start in range(0, rows, step):
        t = src.get(name) if not shape else src.get(name, 0, start, min(rows, start + step))
        if fp8_bits:
            t = t.view(torch.float8_e4m3fn)
        if t.dtype == torch.float8_e4m3fn:
            if bool(((t.view(torch.uint8) & 0x7F) == 0x7F).any()):
                return False
        elif not all_finite(t):
            return False
    return True


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def require_valid(path: Path | str) -> dict:
    """The checkpoint's config, or a one-line ConfigError with its first problems (a folder that is missing, or
    holds a model or drafter `convert` has not turned into a checkpoint yet, or an engine, says so)."""
    folder = Path(path)
    if not folder.is_dir():
        state = "is a file, not a folder" if folder.exists() else f"does not exist (paths are read from {Path.cwd()})"
        raise ConfigError(f"checkpoint folder {path} {state}: pass the folder `redrafter-trt convert` wrote")
    inner = sorted(c.parent.name for c in folder.glob("*/config.json") if (c.parent / "rank0.safetensors").is_file())
    if not (folder / "config.json").exists() and inner:  # a work folder such as the quickstart's
        raise ConfigError(f"{path} holds no checkpoint itself but {', '.join(inner)} in it: pass "
                          f"{folder / inner[0]}")
    try:
        raw = json_loads((folder / "config.json").read_text())
    except (OSError, ValueError):
        raw = None
    if isinstance(raw, dict) and (other := foreign(path, raw)):
        raise ConfigError(other)
    rep = inspect_checkpoint(path)
    if not rep.ok:
        others = len(rep.problems) - 1
        # a problem carrying its own fix (add a field to config.json, re-convert a rank file cut short) ends in it:
        # the other problems are named in brackets, not as a second fix after a colon
        if isinstance(rep.problems[0], WithFix):
            more = f"+{others} more; " if others else ""
            raise ConfigError(f"checkpoint {path} is not valid: {rep.problems[0]} ({more}`redrafter-trt inspect "
                              f"{path}` lists every problem)")
        more = f" (+{others} more)" if others else ""
        raise ConfigError(f"checkpoint {path} is not valid: {rep.problems[0]}{more}: "
                          f"run `redrafter-trt inspect {path}` for all problems, then {RECONVERT}")
    return json_loads((Path(path) / "config.json").read_text())
