"""Orchestration only: base + drafter -> ReDrafter TensorRT-LLM checkpoint.

    plan  (names, shapes, dtypes and a reader per tensor; no data)  ->  checked against layout.py
          ->  each rank file streamed tensor by tensor (StreamingWriter)  ->  config.json last  ->  rename

The base comes from a Hugging Face folder (rules.py maps it) or an existing TensorRT-LLM base checkpoint
(TensorRT-LLM's two-step flow, FP8 from modelopt included), whose tensors are copied as they are; base_plan.py
reads and checks it and plans its tensors, this module adds the drafter's and writes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shlex
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from tqdm import tqdm

from . import __version__, layout
from .base_sample import base_sample_difference, recorded_sample
from .base_plan import (Planned, base_fields, check_hf_tensors, hf_base, hf_config, is_trtllm_checkpoint,
                        nonfinite_refusal, plan_hf_rank, plan_trtllm_rank, resolve_dtype, trtllm_base)
from .checkpoint import config_problems
from .config import DTYPES, read_json, redrafter_fields, trtllm_model_fields
from .drafter import DrafterConfig, drafter_config, load_drafter
from .errors import DEVICE, POSITIVE_INT, ConfigError, TensorError, check_types, name_list, optional
from .io import StreamingWriter, TensorSource, all_finite
from .output import atomic_output, check_output_folder, scratch_dir
from .producer import drafter_command, drafter_template_kwargs, producer_block, recorded_source
from .registry import redrafter_for_trtllm_base
from .rules import drafter_to_trtllm
from .shard import DRAFTER_ROWS, DRAFTER_VOCAB, even_range, tp_fits

log = logging.getLogger(__name__)


# FP8 calibration's options, with their values when quantizing and not given
FP8_DEFAULTS = {"kv_cache_dtype": None, "calib_data": None, "calib_size": 16, "calib_seq_len": 128,
                "calib_batch_size": 4, "device": "cpu"}


# FP8 calibration's typed fields (a script's "gpu" reached torch: 'Expected one of cpu, cuda, ...' from inside it)
CALIBRATION_TYPES = {"calib_size": optional(POSITIVE_INT), "calib_seq_len": optional(POSITIVE_INT),
                     "calib_batch_size": optional(POSITIVE_INT), "device": optional(DEVICE)}


@dataclass(frozen=True)
class ConvertOptions:
    tp_size: int | None = None     # None: 1 for a HF base, the checkpoint's own for a TensorRT-LLM base
    dtype: str = "auto"            # auto: the base's own dtype
    num_beams: int = 5
    draft_len: int = 5
    greedy: bool = True
    quantize: str | None = None    # None or "fp8"
    # FP8 calibration's options (FP8_DEFAULTS): None when not given, refused when given without quantize
    kv_cache_dtype: str | None = None
    calib_data: str | None = None
    calib_size: int | None = None
    calib_seq_len: int | None = None
    calib_batch_size: int | None = None
    device: str | None = None

    def with_fp8_defaults(self) -> "ConvertOptions":
        """These options, with FP8 calibration's not given set to FP8_DEFAULTS when quantizing."""
        if not self.quantize:
            return self
        return replace(self, **{k: v for k, v in FP8_DEFAULTS.items() if getattr(self, k) is None})

    def check(self) -> None:
        if not self.quantize and (given := [k for k in FP8_DEFAULTS if getattr(self, k) is not None]):
            flags, many = [f"--{k.replace('_', '-')}" for k in given], len(given) > 1
            raise ConfigError(f"{', '.join(flags)} only {'apply' if many else 'applies'} to FP8 calibration: add "
                              f"--quantize fp8, or leave {'them' if many else 'it'} out")
        for flag, value, hint in (("--num-beams", self.num_beams, " (TensorRT-LLM's default is 5)"),
                                  ("--draft-len", self.draft_len, " (TensorRT-LLM's default is 5)"),
                                  ("--tp-size", 1 if self.tp_size is None else self.tp_size, "")):
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):  # "5" from a script too
                raise ConfigError(f"{flag} {value!r} is invalid: use an integer of 1 or more{hint}")
        check_types("ConvertOptions", vars(self), CALIBRATION_TYPES)  # a script's; the CLI's are typed
        from .quantize import check_quantize_options

        check_quantize_options(self.quantize, self.kv_cache_dtype, self.dtype)  # FP8 drafter, unknown values
        if self.dtype not in ("auto", *DTYPES):
            raise ConfigError(f"--dtype {self.dtype} is invalid: use auto, {', '.join(DTYPES)}")



# ---------------------------------------------------------------- drafter

def check_drafter_fits(d: DrafterConfig, cfg: dict, opts: ConvertOptions, base_checkpoint: bool = False) -> None:
    """The drafter matches the base (`cfg`, its TensorRT-LLM config: hidden size, vocabulary), splits at its tp and
    was trained for --draft-len. `base_checkpoint`: the base is the user's TensorRT-LLM checkpoint, whose tp is its
    own, not --tp-size's."""
    hidden_size, vocab_size, tp = cfg["hidden_size"], cfg["vocab_size"], layout.tp_size(cfg)
    if d.hidden_size != hidden_size:
        raise ConfigError(f"drafter hidden_size {d.hidden_size} differs from the base's {hidden_size}: "
                          f"the drafter was trained for another base model")
    if d.vocab_size != vocab_size:
        raise ConfigError(f"drafter vocab {d.vocab_size} differs from the base's {vocab_size}: "
                          f"the drafter was trained for another tokenizer")
    dims = (d.hidden_size, d.exit_dim, d.vocab_size)
    reasons = (DRAFTER_ROWS, DRAFTER_ROWS, DRAFTER_VOCAB)
    for label, n, why in zip(("hidden size H", "exit_dim E", "vocab V"), dims, reasons):
        if n % tp:
            nh = cfg["num_attention_heads"]
            fits = tp_fits(nh, cfg.get("num_key_value_heads") or nh, cfg["intermediate_size"], dims, base_checkpoint,
                           layout.qk_norm(cfg))
            tp_named = f"the base checkpoint's tp_size {tp}" if base_checkpoint else f"--tp-size {tp}"
            raise ConfigError(f"{tp_named} does not divide the drafter's {label} = {n} ({why}): {fits}")
    if d.predict_n is not None and opts.draft_len > d.predict_n:
        raise ConfigError(f"--draft-len {opts.draft_len} exceeds the {d.predict_n} tokens the drafter was trained to "
                          f"predict: use --draft-len {d.predict_n} or less")


def _exit_dim(drafter: Path) -> tuple[int, ...]:
    """The drafter's exit_dim E from its config.json, for the tp sizes a refusal of the base names (the drafter
    splits E without padding); () where it cannot be read: the drafter's own checks, after the base's, say why."""
    try:
        raw = read_json(drafter / "config.json", "drafter")
    except ConfigError:
        return ()
    e = raw.get("exit_dim") if isinstance(raw, dict) else None
    return (e,) if isinstance(e, int) and not isinstance(e, bool) and e > 0 else ()


def drafter_producer(drafter: Path) -> dict:
    """The drafter's producer block ({} where it has none or a hand-edited one that is no mapping)."""
    producer = read_json(drafter / "config.json", "drafter").get("producer")
    return producer if isinstance(producer, dict) else {}


def warn_sharpened_for_sampling(drafter: Path, greedy: bool) -> None:
    """A drafter trained with `train --later-sharpness S > 1` proposes well for greedy acceptance, but its
    later-step probabilities are S times too confident for sampling's min(1, p/q) test."""
    producer = drafter_producer(drafter)
    options = producer.get("options") if isinstance(producer.get("options"), dict) else {}
    # train records its options as every output does; drafters trained before, at the top of the block
    trained = options.get("later_sharpness", producer.get("later_sharpness", 1.0))
    if not greedy and isinstance(trained, (int, float)) and trained > 1:
        log.warning("%s was trained with --later-sharpness %g for greedy acceptance: with --no-greedy its "
                    "overconfident later draft steps are accepted less often; for sampling, train with "
                    "--later-sharpness 1", drafter, trained)


def check_drafter_base(base: Path, drafter: Path, cfg: dict, output: Path) -> bool | None:
    """Whether --base holds the weights `train` trained the drafter on, or init-drafter made it for (the sample of
    them recorded, within the tolerance of their dtypes): a drafter trained on another model of the same shapes (the
    base's instruct model, a fine-tune) converted without a word and accepted little. A warning, not a refusal: on a light fine-tune it may
    still pay, which `acceptance` measures. None: the drafter records no sample, or nothing could be compared."""
    producer = drafter_producer(drafter)
    sample = recorded_sample(producer)
    found = base_sample_difference(sample, base, cfg) if sample else None
    if found is None:
        return None
    name, relative, tolerance = found
    if relative <= tolerance:
        return True
    trained_on = recorded_source({"producer": producer}, "base") or "another base"
    made = "made for" if producer.get("command") == "init-drafter" else "trained on"  # init-drafter's, untrained
    what = f"{name} differs by {relative:.2g}" if relative != float("inf") else f"{name}: another depth or width"
    log.warning("drafter %s was %s %s, but the weights of --base %s differ (%s): it will likely accept few "
                "draft tokens; %s", drafter, made, trained_on, base, what, measure_or_retrain(base, output))
    return False


def measure_or_retrain(base: Path, output: Path) -> str:
    """check_drafter_base's advice, as commands that run: acceptance (which requires --tokenizer-dir and --prompts,
    and merges a tp>1 checkpoint's ranks itself) on the checkpoint, or train on --base (its Hugging Face model where
    --base is a TensorRT-LLM checkpoint, which neither reads)."""
    from .quickstart import mt_bench_path

    hf = "HF_BASE" if is_trtllm_checkpoint(base) else str(base)
    measure = shlex.join(["redrafter-trt", "acceptance", "--checkpoint-dir", str(output), "--tokenizer-dir", hf,
                          "--prompts", str(mt_bench_path())])
    note = "" if hf == str(base) else f" (HF_BASE: the Hugging Face model {base} was exported from)"
    return (f"measure it with `{measure}` before building an engine, or train a drafter on this base "
            f"(`{shlex.join(['redrafter-trt', 'train', '--base', hf])}`){note}")


def plan_drafter(d: DrafterConfig, tensors: dict[str, torch.Tensor], cfg: dict, tp_rank: int) -> list[Planned]:
    tp = layout.tp_size(cfg)
    specs = layout.drafter_tensors(cfg)
    planned = []
    stored = TensorSource({}, tensors)  # finite (load_drafter checks): a NaN or Inf read is the cast's
    for apple, t in tensors.items():
        name = drafter_to_trtllm(apple, d.num_draft_layers)
        shape, dt = specs[name]
        start, stop = even_range(t.shape[0], tp_rank, tp)
        planned.append(Planned(name, shape, dt, lambda t=t, a=start, b=stop, dt=dt: t[a:b].to(dt), stored, (apple,)))
    order = list(specs)
    return sorted(planned, key=lambda p: order.index(p.name))


# ---------------------------------------------------------------- orchestration

def convert(base: Path | str, drafter: Path | str, output: Path | str, *, force: bool = False,
            output_named: str = "--output", **options) -> Path:
    """Convert; `options` are ConvertOptions fields; `output_named` is how refusals name `output` (the CLI's
    presets.as_given). Returns the output folder."""
    base, drafter, output = Path(base), Path(drafter), Path(output)
    opts = ConvertOptions(**options).with_fp8_defaults()
    dcfg, dtensors, base_matches = _inputs(base, drafter, output, force, opts, output_named)

    # FP8 scratch: hidden, named like this run's partial output, so the next run removes it (before making its own) if
    # this one is killed
    with scratch_dir(output, "fp8-") if opts.quantize else contextlib.nullcontext() as scratch:
        source, opts = _quantized_base(base, dcfg, scratch / "base", opts) if opts.quantize else (base, opts)
        plan, sources = _plan(source, base, drafter, dcfg, dtensors, opts, base_matches)
        _write(output, plan.cfg, plan.ranks, force, _read(base, drafter, opts), output_named)
        for s in sources:
            s.close()
    return output


@dataclass
class Conversion:
    """What convert writes: the checkpoint's config.json and each rank file's tensors, in order."""
    cfg: dict
    ranks: list[list[Planned]]


def plan_conversion(base: Path | str, drafter: Path | str, output: Path | str, *, force: bool = False,
                    output_named: str = "--output", **options) -> Conversion:
    """`convert --dry-run`: every check convert makes and the plan it would write; no tensor is read or written."""
    base, drafter, output = Path(base), Path(drafter), Path(output)
    opts = ConvertOptions(**options)
    if opts.quantize:
        raise ConfigError("--dry-run plans from the base's own tensors, and FP8's come from calibration: leave out "
                          "--quantize (pass --quantize none over a preset's) to see the plan, or leave out --dry-run "
                          "to convert")
    dcfg, dtensors, base_matches = _inputs(base, drafter, output, force, opts, output_named)
    plan, sources = _plan(base, base, drafter, dcfg, dtensors, opts, base_matches)
    for s in sources:
        s.close()
    return plan


def _read(base: Path, drafter: Path, opts: ConvertOptions) -> tuple:
    """What convert reads, which --force must not delete: --calib-data too (a prompts file kept in the checkpoint
    folder it replaces was deleted with it)."""
    return (base, drafter) + ((opts.calib_data,) if opts.calib_data else ())


def _inputs(base: Path, drafter: Path, output: Path, force: bool, opts: ConvertOptions, output_named: str):
    """The options, the output folder, the base's config and (from the configs alone) the drafter's fit checked,
    then the drafter loaded: (DrafterConfig, its tensors, check_drafter_base's outcome)."""
    opts.check()
    check_output_folder(output, force, _read(base, drafter, opts), output_named)
    if not base.is_dir():
        if base.exists():
            raise ConfigError(f"base folder {base} is a file, not a folder: pass a Hugging Face model folder or a "
                              "TensorRT-LLM checkpoint")
        raise ConfigError(f"base folder {base} does not exist (paths are read from {Path.cwd()}): pass a Hugging Face "
                          f"model folder (`hf download ORG/NAME --local-dir {base}` fetches one) or a TensorRT-LLM "
                          "checkpoint")
    cfg = base_fields(base, opts, _exit_dim(drafter))
    if (early := drafter_config(drafter)) is not None:  # else its vocab is known once its weights are read
        check_drafter_fits(early, cfg, opts, is_trtllm_checkpoint(base))
        _redrafter_config(cfg, early, opts)
    dcfg, dtensors = load_drafter(drafter)
    warn_sharpened_for_sampling(drafter, opts.greedy)
    return dcfg, dtensors, check_drafter_base(base, drafter, cfg, output)


def _plan(base: Path, source_base: Path, drafter: Path, dcfg: DrafterConfig, dtensors, opts: ConvertOptions,
          base_matches: bool | None):
    """The checked config and every rank's tensors from `base` (the FP8 export, or `source_base` itself), and the
    open tensor sources the plan reads from; `base_matches`: check_drafter_base's outcome, recorded."""
    trt_base = is_trtllm_checkpoint(base)
    if trt_base:
        cfg, sources = trtllm_base(base, opts)
    else:
        cfg, sources, hf_cfg = hf_base(base, opts)
    check_drafter_fits(dcfg, cfg, opts, trt_base and base == source_base)  # not an FP8 export: its tp is --tp-size's
    cfg = _redrafter_config(cfg, dcfg, opts)
    if (cfg.get("quantization") or {}).get("quant_algo"):
        quant = cfg["quantization"]
        quant["exclude_modules"] = sorted(set(layout.exclusions(quant)) | set(layout.required_exclusions(cfg)))
    # --calib-data among the sources, as an absolute path: as typed (relative to where convert ran) it named nothing
    options = {k: v for k, v in asdict(opts).items() if k != "calib_data"}
    # the drafter's predict_n too (null: it does not say), for `bench`, `acceptance` and `run` to advise on a longer
    # draft length; whether the drafter was trained on this base (null: not known), for `inspect`; the producer block
    # is ours (TensorRT-LLM keeps an unknown key as an attribute, unread)
    drafter_cfg = read_json(drafter / "config.json", "drafter")
    cfg["producer"] = {**producer_block("convert", {**options, "tp_size": layout.tp_size(cfg)},
                                        {"base": source_base, "drafter": drafter, "calib_data": opts.calib_data}),
                       "drafter_predict_n": dcfg.predict_n, "drafter_base_matches": base_matches,
                       "drafter_chat_template_kwargs": drafter_template_kwargs(drafter_cfg),
                       "drafter_command": drafter_command(drafter_cfg)}
    ranks = []
    for r in range(layout.tp_size(cfg)):
        plan = (plan_trtllm_rank(sources[r], cfg, r, base) if trt_base else plan_hf_rank(sources[0], hf_cfg, cfg, r))
        plan += plan_drafter(dcfg, dtensors, cfg, r)
        _check_plan(plan, cfg, r)
        ranks.append(plan)
    return Conversion(cfg, ranks), sources


def _redrafter_config(cfg: dict, d: DrafterConfig, opts: ConvertOptions) -> dict:
    """The base's TensorRT-LLM config with the drafter's fields, refused here if `inspect` would refuse it."""
    cfg = cfg | redrafter_fields(redrafter_for_trtllm_base(cfg["architecture"]), cfg["architecture"], d,
                                 opts.num_beams, opts.draft_len, opts.greedy)
    if problems := config_problems(cfg):
        raise ConfigError(f"the checkpoint would be invalid: {'; '.join(problems)}")
    return cfg




def _quantized_base(base: Path, drafter: DrafterConfig, dest: Path,
                    opts: ConvertOptions) -> tuple[Path, ConvertOptions]:
    """The FP8 base (modelopt's TensorRT-LLM export) in `dest`, after checking from the configs alone that the
    drafter fits the base (calibrating a large model takes long), and `opts` with calib_size the prompts calibrated
    on, for the producer block: a set holding fewer than --calib-size gives all it has (calibration_prompts)."""
    if is_trtllm_checkpoint(base):
        raise ConfigError(f"--quantize fp8 needs a Hugging Face --base, but {base} is a TensorRT-LLM checkpoint: "
                          f"pass it without --quantize (an FP8 base checkpoint is used as it is)")
    b = hf_config(base, opts, (drafter.exit_dim,))
    src = TensorSource.from_hf_folder(base)  # headers only: transformers would initialise a missing tensor at random
    try:
        check_hf_tensors(src, b, base)
    finally:
        src.close()
    cfg = trtllm_model_fields(b, resolve_dtype(opts.dtype, b.source_dtype), opts.tp_size or 1)
    check_drafter_fits(drafter, cfg, opts)
    _redrafter_config(cfg, drafter, opts)
    from .quantize import calibration_prompts, export_fp8_base

    prompts = calibration_prompts(Path(opts.calib_data) if opts.calib_data else None, opts.calib_size)
    opts = replace(opts, calib_size=len(prompts))
    export_fp8_base(base, dest, tp_size=opts.tp_size or 1, dtype=opts.dtype, kv_cache_dtype=opts.kv_cache_dtype,
                    calib_prompts=prompts, calib_size=opts.calib_size, calib_seq_len=opts.calib_seq_len,
                    calib_batch_size=opts.calib_batch_size, device=opts.device)
    return dest, opts


def _check_plan(plan: list[Planned], cfg: dict, tp_rank: int) -> None:
    optional = layout.optional_tensors(cfg)
    got = {p.name: (p.shape, p.dtype) for p in plan if p.name not in optional}
    want = layout.expected_tensors(cfg, tp_rank)
    if got != want:
        diff = set(got.items()) ^ set(want.items())
        raise TensorError(f"internal: rank {tp_rank} plan differs from the layout at {name_list(n for n, _ in diff)}")


def _read_checked(p: Planned) -> torch.Tensor:
    t = p.read()
    if all_finite(t):
        return t
    raise nonfinite_refusal(p.src, p.sources, p.name, p.dtype)


def _write(output: Path, cfg: dict, plans: list[list[Planned]], force: bool, inputs: tuple = (),
           output_named: str = "--output") -> None:
    """Stream every rank file; the next tensor is read and checked in a worker thread while the current one is
    written (torch and file writes release the GIL), so at most two tensors are in memory."""
    total = sum(p.nbytes for plan in plans for p in plan)
    meta = {"format": "pt", "producer": f"redrafter-trt {__version__}"}
    with atomic_output(output, force, inputs, output_named) as tmp, ThreadPoolExecutor(1) as pool, \
            tqdm(total=total, unit="B", unit_scale=True, desc="convert", disable=None) as bar:
        for r, plan in enumerate(plans):
            writer = StreamingWriter(tmp / f"rank{r}.safetensors", [(p.name, p.shape, p.dtype) for p in plan],
                                     meta | {"rank": str(r), "tp_size": str(len(plans))})  # for inspect
            with writer:
                pending = pool.submit(_read_checked, plan[0])
                for i, p in enumerate(plan):
                    t = pending.result()
                    if i + 1 < len(plan):
                        pending = pool.submit(_read_checked, plan[i + 1])
                    writer.write(p.name, t)
                    bar.update(t.numel() * t.element_size())
                    bar.set_postfix_str(f"rank {r} {p.name}", refresh=False)
        (tmp / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
