"""FP8 base through nvidia-modelopt: calibrate a Hugging Face Llama/Qwen2/Qwen3 base (`mtq.quantize` with
`FP8_DEFAULT_CFG`, plus `FP8_KV_CFG` for an FP8 KV cache) over a few calibration prompts, export it with
modelopt's own `export_tensorrt_llm_checkpoint` at the requested tp, then patch the exported config.json the way
TensorRT-LLM's `tensorrt_llm/quantization/quantize_by_modelopt.py` does. The drafter is attached afterwards by the
converter, always in the config dtype and listed in `quantization.exclude_modules`: a drafter is never FP8.

Why the patch: modelopt 0.47 under transformers 5 reads the old `rope_theta`/`rope_scaling` attributes and writes
`rotary_base: null`, `rotary_scaling: null`; TensorRT-LLM would then silently use 10000 and no scaling. For Qwen,
without `qwen_type` TensorRT-LLM assumes the first Qwen.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import warnings
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from .config import rope_fields, source_dtype
from .errors import ConfigError, DependencyError, json_loads
from .fp8_calibration import forward_loop
from .installed_trtllm import version_tuple
from .registry import bias_fields, extra_fields, lookup
from .shard import check_tp

if TYPE_CHECKING:
    import torch  # imported where used: modelopt's path loads it anyway

log = logging.getLogger(__name__)

QUANTIZE_CHOICES = ("fp8",)
KV_CACHE_DTYPES = ("fp8",)
# modelopt export warnings that do not apply to this export, kept off the user's screen (a user reading "Enable
# lm_head quantization" would think the lm_head is FP8):
MISLEADING_WARNINGS = (
    "Enable lm_head quantization",  # said whenever lm_head is a QuantLinear, its quantizers off or not; FP8's config
                                    # turns them off and the exported lm_head stays in --dtype (tests/test_fp8.py)
    "Cannot export tensorrt_llm checkpoint config",  # no TensorRT-LLM installed: modelopt writes the config itself,
                                                     # which patch_exported_config completes
)
FP8_DTYPES = ("float16", "bfloat16")  # dtypes of the layers FP8 leaves alone (norms, embedding, lm_head, drafter)
FP8_ALIASES = ("fp8", "float8", "float8_e4m3fn", "e4m3")
# modelopt's decoder type a base is exported as. Qwen2 goes through modelopt's Llama path: for these dense decoders the
# decoder type only picks how modelopt writes config.json (the tensors, Qwen2's qkv bias included, are the same:
# tests/test_modelopt_oracle.py), and modelopt before 0.44 writes a "qwen" config only through an installed
# TensorRT-LLM, raising NotImplementedError without one. patch_exported_config writes the Qwen2 fields either way.
DECODER_TYPES = {"LlamaForCausalLM": "llama", "MistralForCausalLM": "llama", "Qwen2ForCausalLM": "llama",
                 # modelopt's attention export writes Qwen3's q_norm / k_norm as attention.q_layernorm / k_layernorm
                 # (unquantised, whole on every rank) under either decoder type (tests/test_modelopt_oracle.py)
                 "Qwen3ForCausalLM": "llama"}
DEFAULT_CALIBRATION = "calibration.jsonl"
INSTALL_HINT = "pip install 'redrafter-trt[fp8]'"
# the oldest nvidia-modelopt the FP8 path runs with (setup.cfg's fp8 extra; a test keeps the two equal). 0.33
# (TensorRT-LLM 1.0's) under transformers >= 4.56 quantises no KV cache: --kv-cache-dtype fp8 wrote
# kv_cache_quant_algo null and no kv scales, silently.
MODELOPT_MIN = "0.35"


def check_quantize_options(quantize: str | None, kv_cache_dtype: str | None, dtype: str | None = None) -> None:
    """Reject what the FP8 path cannot do, before any work: an unknown `--quantize`, an unknown
    `--kv-cache-dtype`, an FP8 KV cache without FP8 weights, and an FP8 `--dtype` (that would make the drafter
    FP8; the drafter is always written in the config dtype)."""
    if dtype is not None and str(dtype).lower() in FP8_ALIASES:
        raise ConfigError(f"--dtype {dtype} would make the drafter FP8, which ReDrafter engines do not support: "
                          f"use --quantize fp8 (base only) with --dtype bfloat16 or float16")
    if quantize is not None and quantize not in QUANTIZE_CHOICES:
        raise ConfigError(f"unknown --quantize value {quantize!r}: supported is {', '.join(QUANTIZE_CHOICES)}")
    if kv_cache_dtype is not None and kv_cache_dtype not in KV_CACHE_DTYPES:
        raise ConfigError(f"unknown --kv-cache-dtype {kv_cache_dtype!r}: supported is {', '.join(KV_CACHE_DTYPES)}")
    if kv_cache_dtype is not None and quantize is None:
        raise ConfigError("--kv-cache-dtype fp8 needs FP8 weights: add --quantize fp8")


def require_modelopt():
    """(mtq, export_tensorrt_llm_checkpoint), or a DependencyError naming the extra to install (also for a modelopt
    older than MODELOPT_MIN: a container's own, which pip's floor does not replace)."""
    try:
        import modelopt
        import modelopt.torch.quantization as mtq
        from modelopt.torch.export import export_tensorrt_llm_checkpoint
    except ImportError as e:
        raise DependencyError(f"--quantize fp8 needs nvidia-modelopt ({e.msg}): run {INSTALL_HINT}") from None
    if version_tuple(modelopt.__version__) < version_tuple(MODELOPT_MIN):
        raise DependencyError(f"--quantize fp8 needs nvidia-modelopt {MODELOPT_MIN} or newer, not the installed "
                              f"{modelopt.__version__}: run pip install 'nvidia-modelopt>={MODELOPT_MIN}'")
    return mtq, export_tensorrt_llm_checkpoint


def calibration_prompts(path: Path | None, size: int) -> list[str]:
    """The first `size` prompts of `path` (any format `redrafter-trt run` reads), or of the default set shipped
    in `redrafter_trt/data/calibration.jsonl` (48 GSM8K problems with their worked answers, MIT, and 16
    FastChat conversations, Apache-2.0; licenses beside it). Fewer than `size` in the file: all of them."""
    from .prompts import load_prompts

    if size < 1:
        raise ConfigError(f"--calib-size {size} is invalid: use 1 or more")
    if path is None:
        with resources.as_file(resources.files("redrafter_trt") / "data" / DEFAULT_CALIBRATION) as default:
            prompts = load_prompts(default)
    else:
        prompts = load_prompts(Path(path))
    if len(prompts) < size:  # the hint names what holds the prompts: the shipped set, or the user's own file
        more = "pass --calib-data FILE for more" if path is None else f"add prompts to {path} for more"
        log.warning("the calibration set holds %d prompts, not the %d asked for: using all %d (%s, or lower "
                    "--calib-size)", len(prompts), size, len(prompts), more)
    return prompts[:size]


def resolve_fp8_dtype(dtype: str, hf_config: dict) -> str:
    """The dtype of the layers FP8 leaves alone. `auto` follows TensorRT-LLM's `infer_dtype`: the base's own
    dtype (float16 when config.json names none), with float32 mapped to float16."""
    if dtype == "auto":
        source = source_dtype(hf_config)
        dtype = "float16" if source == "float32" else source
        log.info("--dtype auto for an FP8 base: using %s", dtype)
    if dtype not in FP8_DTYPES:
        raise ConfigError(f"--dtype {dtype} cannot carry an FP8 checkpoint: use --dtype bfloat16 or float16")
    return dtype


def fp8_quant_config(mtq, kv_cache_dtype: str | None) -> dict:
    """`FP8_DEFAULT_CFG`, plus `FP8_KV_CFG`'s quantizers for an FP8 KV cache. modelopt 0.47 keeps `quant_cfg`
    as an ordered list (later entries win), older releases as a dict: handle both."""
    cfg = copy.deepcopy(mtq.FP8_DEFAULT_CFG)
    if kv_cache_dtype == "fp8":
        kv = copy.deepcopy(mtq.FP8_KV_CFG["quant_cfg"])
        if isinstance(cfg["quant_cfg"], dict):
            cfg["quant_cfg"].update(kv)
        else:
            cfg["quant_cfg"] = list(cfg["quant_cfg"]) + list(kv)
    return cfg


def patch_exported_config(cfg: dict, hf: dict, kv_cache_dtype: str | None) -> dict:
    """modelopt's exported config.json, corrected from the HF config as `quantize_by_modelopt.py` does:
    `rotary_base`/`rotary_scaling` (both HF layouts), `norm_epsilon`, `intermediate_size`, Qwen's `qwen_type` and
    `seq_length` (which modelopt without TensorRT-LLM leaves out), `attn_bias`, `mlp_bias`, and `kv_cache_quant_algo:
    null` when the KV cache stays in the model dtype; and `architecture` in TensorRT-LLM's name. Pure: returns a new
    dict."""
    out = copy.deepcopy(cfg)
    # modelopt names the HF class (MistralForCausalLM); TensorRT-LLM's, as the unquantised path writes (LlamaForCausalLM)
    spec = lookup((hf.get("architectures") or [""])[0])
    out["architecture"] = spec.trtllm_architecture
    theta, scaling = rope_fields(hf)
    out["rotary_base"] = theta
    out["rotary_scaling"] = scaling
    if hf.get("rms_norm_eps") is not None:  # checked by BaseModelConfig.from_hf
        out["norm_epsilon"] = float(hf["rms_norm_eps"])
    out["intermediate_size"] = int(hf["intermediate_size"])
    out.update(extra_fields(spec, hf))  # Qwen's qwen_type and seq_length
    # modelopt writes `bias` (which TensorRT-LLM does not read), no `attn_bias` or `mlp_bias`: say them (Qwen2: true)
    out.update(bias_fields(spec, hf))
    quant = out.setdefault("quantization", {})
    if kv_cache_dtype is None:
        quant["kv_cache_quant_algo"] = None
    return out


def check_exported_quantization(cfg: dict, kv_cache_dtype: str | None) -> None:
    """modelopt's exported config.json says what it quantised, and its tensors follow it: an FP8 it did not apply
    (`quant_algo`, or `kv_cache_quant_algo` for --kv-cache-dtype fp8, written null, as 0.33 did for the KV cache under
    transformers >= 4.56) would become a checkpoint that is silently not FP8. Refused, naming the field."""
    import modelopt

    quant = cfg.get("quantization") if isinstance(cfg.get("quantization"), dict) else {}
    wanted = ("quant_algo",) + (("kv_cache_quant_algo",) if kv_cache_dtype == "fp8" else ())
    wrong = [f"quantization.{key} {json.dumps(quant.get(key))}" for key in wanted if quant.get(key) != "FP8"]
    if wrong:
        raise DependencyError(f"nvidia-modelopt {modelopt.__version__} exported {' and '.join(wrong)}, not \"FP8\": it "
                              f"did not quantise this model as asked, and the checkpoint would not be FP8; install "
                              f"another release (pip install -U 'nvidia-modelopt>={MODELOPT_MIN}')")


def _tokenizer(hf_dir: Path):
    from .errors import TokenizerError
    from .tokens import auto_tokenizer

    try:
        tok = auto_tokenizer(hf_dir)
    except TokenizerError as e:
        raise ConfigError(f"{hf_dir} has no usable tokenizer for FP8 calibration ({e}): "
                          f"save the model's tokenizer into the folder") from None
    if not tok("Hello")["input_ids"]:  # transformers 5 makes an empty Qwen2 tokenizer from a folder with none
        raise ConfigError(f"{hf_dir} has no usable tokenizer for FP8 calibration (it turns text into no tokens): "
                          f"save the model's tokenizer into the folder")
    return tok


@contextlib.contextmanager
def _prints_logged():
    """modelopt print()s its progress (`Inserted 756 quantizers`, `current rank: 0, ...`) to stdout, the CLI's
    output: those lines go to this module's debug log instead."""
    printed = io.StringIO()
    try:
        with contextlib.redirect_stdout(printed):
            yield
    finally:
        for line in printed.getvalue().splitlines():
            log.debug("modelopt: %s", line)


def _check_finite(model, hf_dir: Path, loaded_dtype: torch.dtype) -> None:
    """A TensorError naming the Hugging Face tensor (and its file) that holds NaN or Inf, checked on the loaded
    model's weights (one pass over memory) before calibrating: afterwards the export refused it under its TensorRT-LLM
    name. A weight finite in its file that the load in `loaded_dtype` made Inf is named as beyond its range."""
    from .base_plan import nonfinite_refusal
    from .io import TensorSource, all_finite

    broken = [name for name, p in model.named_parameters() if not all_finite(p)]
    if not broken:
        return
    src = TensorSource.from_hf_folder(hf_dir)
    try:
        names = src.names()
        raise nonfinite_refusal(src, [name for name in broken if name in names], broken[0], loaded_dtype,
                               FP8_DTYPES)
    finally:
        src.close()


def export_fp8_base(hf_dir: Path, out_dir: Path, *, tp_size: int, dtype: str, kv_cache_dtype: str | None,
                    calib_prompts: list[str], calib_size: int, calib_seq_len: int, calib_batch_size: int,
                    device: str) -> None:
    """Calibrate the HF base in `hf_dir` to FP8 and write a TensorRT-LLM base checkpoint (config.json +
    rank{r}.safetensors) into `out_dir` (created; should be empty, e.g. a temporary folder).

    dtype: `auto`, `float16` or `bfloat16`: the dtype of the layers left unquantised (and of the drafter later).
    kv_cache_dtype: None (model dtype) or `fp8` (adds `attention.kv_cache_scaling_factor` per layer).
    calib_prompts: texts; the first `calib_size` are used, `calib_batch_size` at a time, cut to `calib_seq_len`
    tokens.
    """
    check_quantize_options("fp8", kv_cache_dtype)
    import torch

    from .config import BaseModelConfig, read_json
    from .hf_model import load_causal_lm

    hf_dir, out_dir = Path(hf_dir), Path(out_dir)
    hf = read_json(hf_dir / "config.json", "base model")
    base = BaseModelConfig.from_hf(hf, str(hf_dir / "config.json"))
    decoder_type = DECODER_TYPES.get(base.spec.hf_architecture)
    if decoder_type is None:
        raise ConfigError(f"--quantize fp8 does not support {base.spec.hf_architecture}: "
                          f"supported are {', '.join(sorted(DECODER_TYPES))}")
    # modelopt does not check these: for nkv=3 at tp=2 it silently cuts a kv head in two.
    check_tp(base.num_heads, base.num_kv_heads, base.intermediate_size, tp_size, qk_norm=base.spec.qk_norm)
    if min(calib_size, calib_seq_len, calib_batch_size) < 1:
        raise ConfigError("--calib-size, --calib-seq-len and --calib-batch-size must be 1 or more")
    prompts = list(calib_prompts)[:calib_size]
    if not prompts:
        raise ConfigError("FP8 calibration needs at least one prompt: pass --calib-data FILE or drop it for the default set")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {device} but no CUDA device is visible: use --device cpu")
    dtype = resolve_fp8_dtype(dtype, hf)
    torch_dtype = getattr(torch, dtype)
    mtq, export = require_modelopt()  # after the checks: importing modelopt prints its own version warnings
    tokenizer = _tokenizer(hf_dir)  # before the model: loading a large one takes minutes

    # The weights are `dtype`'s, as TensorRT-LLM's quantize.py loads them: their FP8 values and scales then equal its
    # bit for bit (quantised from a float32 source's own weights, a float32 or float16 base's differed). On CPU the
    # calibration computes in float32 (half-precision matmuls are many times slower there) on those same values.
    calib_dtype = torch.float32 if device == "cpu" else torch_dtype
    log.info("loading %s in %s on %s for FP8 calibration", hf_dir, dtype, device)
    model = load_causal_lm(hf_dir, torch_dtype).to(device, calib_dtype).eval()
    _check_finite(model, hf_dir, torch_dtype)
    loop = forward_loop(tokenizer, prompts, calib_seq_len, calib_batch_size, device)
    with _prints_logged():
        mtq.quantize(model, fp8_quant_config(mtq, kv_cache_dtype), forward_loop=loop)

    out_dir.mkdir(parents=True, exist_ok=True)
    with torch.inference_mode(), warnings.catch_warnings(), _prints_logged():
        for message in MISLEADING_WARNINGS:
            warnings.filterwarnings("ignore", message=message)
        export(model, decoder_type, dtype=torch_dtype, export_dir=out_dir, inference_tensor_parallel=tp_size)
    path = out_dir / "config.json"
    exported = json_loads(path.read_text())
    check_exported_quantization(exported, kv_cache_dtype)
    cfg = patch_exported_config(exported, hf, kv_cache_dtype)
    path.write_text(json.dumps(cfg, indent=4))
    log.info("FP8 base written to %s (tp %d, kv cache %s)", out_dir, tp_size, kv_cache_dtype or dtype)
