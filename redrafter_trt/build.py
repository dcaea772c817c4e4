"""`trtllm-build` for a ReDrafter checkpoint: plan the argv (pure), run it streaming its output, then check the engine
folder it wrote (whether the installed TensorRT-LLM can build it at all: `installed_trtllm`).

What ReDrafter needs from TensorRT-LLM 1.2.x's builder (`tensorrt_llm/commands/build.py`, `plugin/plugin.py`,
`builder.py`): `--speculative_decoding_mode explicit_draft_tokens`, `--max_beam_width 1`, a GEMM plugin in the
checkpoint dtype (`fp8` for an FP8 base), paged KV cache (`--kv_cache_type paged`; 1.2.x has no `--paged_kv_cache`
plugin flag any more, only a deprecated top-level alias), `--remove_input_padding enable` and `--context_fmha enable`,
and the GPT attention plugin (its default, the checkpoint dtype: the executor, `TrtGptModelInflightBatching`, runs no
engine without it, packed input or paged KV cache).
No `--max_draft_len`: the builder sets it to num_beams x draft_len from the `redrafter_*` config keys.
"""

from __future__ import annotations

import json
import logging
import shlex
import signal
import subprocess
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .errors import POSITIVE_INT, ConfigError, DependencyError, RedrafterError, json_loads, name_list
from .installed_trtllm import INSTALL_HINT, check_trtllm_builds, require_trtllm_tool, trtllm_version
from .output import earlier_output_kind
from .plural import counted
from .rope import engine_original_differs, position_limit, rope_kind, runtime_fix

log = logging.getLogger(__name__)

TRTLLM_BUILD = "trtllm-build"
PRODUCER_FILE = "redrafter_trt.json"  # beside TensorRT-LLM's config.json in the engine folder: who built it, how
# trtllm-build's --output_timing_cache defaults to `model.cache` in the working directory (BuildConfig's
# output_timing_cache; rank 0 saves it after building, builder.py): kept in the engine folder, which the build owns
TIMING_CACHE = "model.cache"

ENGINE_LIMITS = ("max_batch_size", "max_input_len", "max_seq_len")  # build_config keys every engine has
MIN_SEQ_LEN = 2  # the least --max-seq-len: one prompt token and one new one (seq_len_problem)

# checkpoint dtype -> --gemm_plugin value for `--gemm-plugin auto` (an FP8 base uses "fp8" whatever its dtype)
GEMM_FOR_DTYPE = {"float16": "float16", "bfloat16": "bfloat16", "float32": "float32"}
GEMM_CHOICES = ("auto", "float16", "bfloat16", "fp8")

# (weights FP8, KV cache FP8) -> --use_fp8_context_fmha. 1.2.x turns FP8 context FMHA off (with a warning) when paged
# context FMHA is on and the KV cache is not FP8, so say so explicitly; a non-FP8 checkpoint gets the builder default.
FP8_CONTEXT_FMHA = {(True, True): "enable", (True, False): "disable"}

# Settings ReDrafter fixes: trtllm-build flags the user may not pass after `--`, with the reason.
RESERVED = {
    "--checkpoint_dir": "use --checkpoint-dir",
    "--model_config": "build from --checkpoint-dir",
    "--output_dir": "use --output-dir",
    "--max_batch_size": "use --max-batch-size",
    "--max_input_len": "with packed input and context FMHA (which ReDrafter needs) trtllm-build ignores it: a prompt "
                       "may take up to min(--max-seq-len - 1, --max-num-tokens) tokens",
    "--max_seq_len": "use --max-seq-len",
    "--max_decoder_seq_len": "use --max-seq-len",
    "--max_num_tokens": "use --max-num-tokens",
    "--gemm_plugin": "use --gemm-plugin",
    "--workers": "use --workers",
    "--max_draft_len": "the builder derives it from redrafter_num_beams x redrafter_draft_len_per_beam",
    "--speculative_decoding_mode": "ReDrafter needs explicit_draft_tokens",
    "--max_beam_width": "ReDrafter needs 1 (its beams are draft beams, set at convert time)",
    "--kv_cache_type": "ReDrafter needs the paged KV cache",
    "--paged_kv_cache": "ReDrafter needs the paged KV cache",
    "--remove_input_padding": "ReDrafter needs removed input padding",
    "--context_fmha": "ReDrafter keeps context FMHA on",
    # TrtGptModelInflightBatching, the executor behind run --engine-dir and trtllm-serve, throws for an engine
    # without it
    "--gpt_attention_plugin": "TensorRT-LLM's executor runs only engines built with the GPT attention plugin (in the "
                              "checkpoint dtype, trtllm-build's default)",
    "--use_fp8_context_fmha": "set from the checkpoint's quantization",
    # GenerationMixin splits the base's inputs into up to 6 profiles by token count; ReDrafterMixin.prepare_inputs
    # never reads multiple_profiles, so Builder._add_optimization_profile indexes past its inputs' one profile
    "--multiple_profiles": "TensorRT-LLM's ReDrafter model builds its own inputs for a single optimization profile "
                           "(models/redrafter/model.py prepare_inputs), so trtllm-build fails with an IndexError "
                           "after loading the weights",
    "--build_config": "a build config file would override what ReDrafter needs: pass trtllm-build flags instead",
    "--output_timing_cache": "build saves the timing cache as the engine folder's model.cache; to start from an "
                             "earlier build's, pass --input_timing_cache EARLIER_ENGINE/model.cache",
    # its dry run writes config.json and no rank{r}.engine, which check_engine took for a failed build
    "--dry_run": "trtllm-build's own dry run writes no engine: use redrafter-trt build --dry-run to see the command",
}
VALUELESS = frozenset({"--dry_run"})  # the reserved flags trtllm-build reads as store_true; the others take a value


@dataclass(frozen=True)
class BuildOptions:
    checkpoint_dir: Path
    output_dir: Path
    max_batch_size: int | None = 8  # see `build --max-batch-size`; None leaves trtllm-build's default (2048)
    max_seq_len: int | None = None
    max_num_tokens: int | None = None
    gemm_plugin: str = "auto"
    workers: int = 1
    extra_args: tuple[str, ...] = ()
    force: bool = False  # replace an existing --output-dir
    output_named: str = "--output-dir"  # how refusals name output_dir (the CLI's presets.as_given)


@dataclass(frozen=True)
class BuildPlan:
    argv: tuple[str, ...]
    world_size: int
    config: dict = field(repr=False)
    force: bool = False
    output_named: str = "--output-dir"

    def with_output(self, folder: Path) -> tuple[str, ...]:
        """argv writing the engine (and its timing cache) into `folder` instead."""
        argv = list(self.argv)
        argv[argv.index("--output_dir") + 1] = str(folder)
        argv[argv.index("--output_timing_cache") + 1] = str(Path(folder) / TIMING_CACHE)
        return tuple(argv)

    @property
    def output_dir(self) -> Path:
        return Path(self.argv[self.argv.index("--output_dir") + 1])

    @property
    def checkpoint_dir(self) -> Path:
        return Path(self.argv[self.argv.index("--checkpoint_dir") + 1])

    def shell(self) -> str:
        """The command as one line a shell runs unchanged."""
        return shlex.join(self.argv)


@dataclass(frozen=True)
class EngineReport:
    engine_dir: Path
    engines: tuple[Path, ...]
    total_bytes: int
    redrafter: dict


# ---- plan (pure) ------------------------------------------------------------------------------------------------

def quantization(config: dict) -> tuple[bool, bool]:
    """(weights FP8, KV cache FP8) from a TensorRT-LLM checkpoint config."""
    quant = config.get("quantization") or {}
    return quant.get("quant_algo") == "FP8", quant.get("kv_cache_quant_algo") == "FP8"


def gemm_plugin(config: dict, requested: str = "auto") -> str:
    """The `--gemm_plugin` value: the checkpoint dtype, or `fp8` for an FP8 base; an explicit choice must fit."""
    dtype = config.get("dtype")
    fp8, _ = quantization(config)
    if dtype not in GEMM_FOR_DTYPE:
        raise ConfigError(f"checkpoint dtype {dtype!r} is not one of {', '.join(GEMM_FOR_DTYPE)}: reconvert the checkpoint")
    if requested == "auto":
        return "fp8" if fp8 else GEMM_FOR_DTYPE[dtype]
    if requested == "fp8" and not fp8:
        raise ConfigError("--gemm-plugin fp8 needs an FP8 checkpoint (quantization.quant_algo FP8): convert with "
                          "--quantize fp8, or use --gemm-plugin auto")
    if requested != "fp8" and requested != dtype:
        also = f" (or {dtype})" if dtype in GEMM_CHOICES else ""
        raise ConfigError(f"--gemm-plugin {requested} does not match the checkpoint dtype {dtype}: use --gemm-plugin "
                          f"auto{also}")
    return requested


def _flag_name(arg: str) -> str:
    return arg.split("=", 1)[0]


def reserved_flag(arg: str) -> tuple[str, str, str] | None:
    """(flag as given, the reserved flag it is, why) for an extra trtllm-build argument that would undo what ReDrafter
    needs or duplicate our own options; None for any other."""
    name = _flag_name(arg)
    # argparse takes an unambiguous prefix for the whole flag: --max_beam_w is --max_beam_width
    meant = [flag for flag in RESERVED if len(name) > 2 and name.startswith("--") and flag.startswith(name)]
    return (name, meant[0], RESERVED[meant[0]]) if meant else None


def check_extra_args(extra: tuple[str, ...]) -> None:
    """Refuse extra trtllm-build flags that would undo what ReDrafter needs or duplicate our own options."""
    for arg in extra:
        found = reserved_flag(arg)
        if found:
            name, meant, why = found
            spelled = f" (it is {meant})" if name != meant else ""  # only an abbreviation needs saying what it is
            raise ConfigError(f"do not pass {name} to trtllm-build after '--'{spelled}: {why}")


def world_size(config: dict) -> int:
    mapping = config.get("mapping") or {}
    return int(mapping.get("world_size") or int(mapping.get("tp_size", 1)) * int(mapping.get("pp_size", 1)))


def check_original_positions(config: dict, checkpoint_dir: Path) -> None:
    """Refuse a llama3 or yarn rotary_scaling without a positive original_max_position_embeddings where the engine
    would compute another RoPE than the model, in silence (`engine_original_differs`: trtllm-build's default for it,
    TRTLLM_ORIGINAL, is not the max_position_embeddings transformers takes)."""
    scaling, positions = config.get("rotary_scaling"), config.get("max_position_embeddings")
    if engine_original_differs(scaling, positions):
        raise ConfigError(f"{checkpoint_dir}/config.json: its {rope_kind(scaling)} rotary_scaling has no positive "
                          f"original_max_position_embeddings and max_position_embeddings is {positions}: "
                          f"{runtime_fix(scaling, positions)}")


def seq_len_problem(max_seq_len: int) -> str | None:
    """Why an engine of this --max-seq-len would answer nothing (the words after the value); None when it holds an
    answer. With packed input and context FMHA TensorRT-LLM's executor takes prompts of up to min(max_seq_len - 1,
    max_num_tokens) tokens (`trtGptModel.h`) and cuts a request's new tokens to what max_seq_len leaves after its
    prompt and the draft tokens (`LlmRequest::validate`). trtllm-build refuses nothing here (`_init_max_seq_len` clips
    max_input_len to max_seq_len, and ignores it with packed input) and gives the draft tokens room of their own:
    `builder.build` adds max_draft_len (num_beams x draft_len) to max_seq_len. So MIN_SEQ_LEN, one prompt token and
    one new one, is the least an engine holds."""
    if max_seq_len >= MIN_SEQ_LEN:
        return None
    return (f"leaves no room for an answer: the longest prompt the engine would take is {max(max_seq_len - 1, 0)} "
            f"tokens (max_seq_len - 1: one new token after it); use {MIN_SEQ_LEN} or more (prompt plus answer: "
            f"trtllm-build adds room for the num_beams x draft_len draft tokens itself)")


def plan_build(options: BuildOptions, config: dict) -> BuildPlan:
    """The exact trtllm-build argv for a validated ReDrafter checkpoint config."""
    why = options.max_seq_len is not None and seq_len_problem(options.max_seq_len)
    if why:
        raise ConfigError(f"--max-seq-len {options.max_seq_len} {why}")
    check_extra_args(options.extra_args)
    check_original_positions(config, options.checkpoint_dir)
    gemm = gemm_plugin(config, options.gemm_plugin)  # refused before any warning is printed
    positions = position_limit(config)
    table = config.get("max_position_embeddings") if positions else None  # an int when position_limit read one
    if options.max_seq_len and positions and options.max_seq_len > positions:
        log.warning("--max-seq-len %d exceeds the model's %d positions (max_position_embeddings x its RoPE scaling "
                    "factor): answers past %d tokens run outside the positions it was trained on",
                    options.max_seq_len, positions, positions)
    # TensorRT-LLM's RoPE is a cos/sin table of max_position_embeddings rows (layers/attention.py
    # create_attention_const_params), read at each token's position without a bound; trtllm-build's default max_seq_len
    # (`positions`) stretches past it under a linear or yarn scaling
    engine_seq = options.max_seq_len or positions
    if table and table < positions and engine_seq > table:
        log.warning("%s %d passes max_position_embeddings %d, the length of the cos/sin table TensorRT-LLM "
                    "builds the RoPE from (its attention kernels index that table by position, unchecked): tokens past "
                    "%d get no %s RoPE in the engine; pass --max-seq-len %d",
                    "--max-seq-len" if options.max_seq_len else "trtllm-build's default max_seq_len", engine_seq,
                    table, table, rope_kind(config.get("rotary_scaling") or {}), table)
    if config.get("dtype") == "float32":
        log.warning("float32 checkpoint: TensorRT-LLM's context FMHA runs only in float16/bfloat16, so this engine "
                    "falls back to unfused attention, and TensorRT-LLM's ReDrafter documents float16, bfloat16 and FP8 "
                    "only; convert with --dtype bfloat16 for a fast, supported engine")
    fp8, fp8_kv = quantization(config)
    argv = [
        TRTLLM_BUILD,
        "--checkpoint_dir", str(options.checkpoint_dir),
        "--output_dir", str(options.output_dir),
        "--output_timing_cache", str(Path(options.output_dir) / TIMING_CACHE),
        "--speculative_decoding_mode", "explicit_draft_tokens",
        "--max_beam_width", "1",
        "--gemm_plugin", gemm,
        "--kv_cache_type", "paged",
        "--remove_input_padding", "enable",
        "--context_fmha", "enable",
    ]
    if (fp8, fp8_kv) in FP8_CONTEXT_FMHA:
        argv += ["--use_fp8_context_fmha", FP8_CONTEXT_FMHA[fp8, fp8_kv]]
    for flag, value in (("--max_batch_size", options.max_batch_size), ("--max_seq_len", options.max_seq_len),
                        ("--max_num_tokens", options.max_num_tokens)):
        if value is not None:
            argv += [flag, str(value)]
    if options.workers != 1:
        argv += ["--workers", str(options.workers)]
    argv += list(options.extra_args)
    return BuildPlan(tuple(argv), world_size(config), config, options.force, options.output_named)


END_GRACE_SECONDS = 10.0  # what an interrupted trtllm-build gets to end after SIGTERM

# ---- run and check ------------------------------------------------------------------------------------------------

def run_streaming(argv: tuple[str, ...], on_line: Callable[[str], None], tail: int = 20) -> None:
    """Run argv, passing each output line (stdout and stderr merged) to on_line as it comes."""
    last = deque(maxlen=tail)
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                                errors="replace")
    except OSError as e:
        raise DependencyError(f"cannot start {argv[0]}: {e.strerror}; {INSTALL_HINT}") from e
    with proc:
        assert proc.stdout is not None
        try:
            for line in proc.stdout:
                line = line.rstrip("\n")
                last.append(line)
                on_line(line)
        except BaseException:  # Ctrl-C, SIGTERM (KeyboardInterrupt): the build ends with this command
            _end(proc)
            raise
    if proc.returncode != 0:
        lines = [line for line in last if line.strip()]
        hint = f" (last line: {lines[-1].strip()[:200]})" if lines else ""
        raise RedrafterError(f"{argv[0]} {_ending(proc.returncode)}{hint}: see its output above")


def _ending(returncode: int) -> str:
    """How a failed command ended: its exit code, or the signal that killed it (Popen's negative return code)."""
    if returncode > 0:
        return f"failed with exit code {returncode}"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    oom = " (the out-of-memory killer? it holds the whole model in host memory: free memory and build again)"
    return f"was killed by {name}{oom if name == 'SIGKILL' else ''}"


def _end(proc: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL after END_GRACE_SECONDS (or at a second Ctrl-C): a stop signalled to this process alone
    (`kill PID`, `docker stop` of a container whose main process is build; a terminal's Ctrl-C and GNU timeout
    signal the whole process group) left trtllm-build building, its GPU held, into the folder being removed
    (Popen's exit gives a child a quarter of a second after a KeyboardInterrupt)."""
    try:
        proc.terminate()
        proc.wait(timeout=END_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        pass
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def read_engine_config(engine_dir: Path) -> dict:
    """An engine folder's config.json (`pretrained_config` with the `redrafter_*` keys, `build_config` with the
    limits trtllm-build fixed); a ConfigError naming the fix when it is absent or not an engine's."""
    path = Path(engine_dir) / "config.json"
    if not Path(engine_dir).is_dir():  # a preset's relative engine-dir, read from another folder, did not say so
        raise ConfigError(f"engine folder {engine_dir} does not exist (paths are read from {Path.cwd()}): pass the "
                          "output folder of `redrafter-trt build`")
    if not path.is_file():
        raise ConfigError(f"{engine_dir} holds no engine config.json: pass the output folder of `redrafter-trt build`")
    config, why = None, ""
    try:
        config = json_loads(path.read_text())
        ok = all(isinstance(config.get(k), dict) for k in ("pretrained_config", "build_config"))
    except json.JSONDecodeError as e:
        ok, why = False, f" (not valid JSON: {e.msg}, line {e.lineno})"
    except (UnicodeDecodeError, AttributeError):
        ok = False
    if not ok or "redrafter_num_beams" not in config["pretrained_config"]:
        raise ConfigError(_not_an_engine(Path(engine_dir), config if isinstance(config, dict) else {}, why))
    need, positive = POSITIVE_INT
    mapping = config["pretrained_config"].get("mapping") or {}
    bad = [f"build_config.{k} is {config['build_config'].get(k)!r}, not {need}" for k in ENGINE_LIMITS
           if not positive(config["build_config"].get(k))]
    if not isinstance(mapping, dict):
        bad.append(f"pretrained_config.mapping is {mapping!r}, not an object")
    else:
        bad += [f"pretrained_config.mapping.{k} is {mapping[k]!r}, not {need}" for k in ("tp_size", "pp_size",
                                                                                        "world_size")
                if k in mapping and not positive(mapping[k])]
        # as inspect refuses such a checkpoint: serve passed its world size as trtllm-serve's --tp_size, which the
        # LLM API refuses against the engine's tp_size (a review); only TensorRT-LLM's own converter writes one
        bad += [f"pretrained_config.mapping.{k} is {mapping[k]}, where ReDrafter engines need 1 (tensor parallelism "
                f"alone)" for k in ("pp_size", "cp_size") if positive(mapping.get(k)) and mapping[k] != 1]
    if bad:
        raise ConfigError(f"{path}: {bad[0]}: rebuild the engine with `redrafter-trt build`")
    return config


def _not_an_engine(engine_dir: Path, config: dict, why: str = "") -> str:
    """Why `engine_dir`'s config.json is no ReDrafter engine's, with the fix for what the folder holds instead (a
    checkpoint not built yet, a drafter or a model not converted yet), as inspect names an engine passed as one; `why`:
    what is wrong with a config.json of none of these (` (not valid JSON: ...)`)."""
    if earlier_output_kind(engine_dir) == "checkpoint":
        return (f"{engine_dir} holds a ReDrafter checkpoint, not an engine: build one (`redrafter-trt build "
                f"--checkpoint-dir {engine_dir} --output-dir ENGINE`) and pass ENGINE, or run this checkpoint in the "
                f"reference runtime with --checkpoint-dir")
    if "exit_dim" in config or "architectures" in config:  # Apple's trainer saves a drafter with architectures too
        kind = "an Apple ReDrafter drafter" if "exit_dim" in config else "a Hugging Face model"
        return (f"{engine_dir} holds {kind}, not an engine: make a checkpoint (`redrafter-trt convert --base BASE "
                f"--drafter DRAFTER --output CKPT`), build it (`redrafter-trt build --checkpoint-dir CKPT --output-dir "
                f"ENGINE`) and pass ENGINE")
    return (f"{engine_dir / 'config.json'} is not the config of a ReDrafter engine{why}: pass the output folder of "
            "`redrafter-trt build`")


def check_engine(engine_dir: Path, checkpoint_config: dict) -> EngineReport:
    """The engine folder keeps the checkpoint's `redrafter_*` keys and holds one rank{r}.engine per rank."""
    engine_dir = Path(engine_dir)
    path = engine_dir / "config.json"
    if not path.exists():
        raise RedrafterError(f"{path} is missing: trtllm-build did not finish; rerun the build")
    try:
        pretrained = json_loads(path.read_text()).get("pretrained_config") or {}
    except json.JSONDecodeError as e:
        raise RedrafterError(f"{path} is not valid JSON ({e.msg}): rerun the build") from None
    expected = {k: v for k, v in checkpoint_config.items() if k.startswith("redrafter_")}
    missing = [k for k in expected if k not in pretrained]
    changed = [k for k in expected if k in pretrained and pretrained[k] != expected[k]]
    if missing or changed:
        raise RedrafterError(f"engine config {path} lost ReDrafter settings (missing: {name_list(missing) or '-'}; "
                             f"changed: {name_list(changed) or '-'}): use TensorRT-LLM 1.0 to 1.2.x and rebuild")
    size = world_size(checkpoint_config)
    engines = tuple(engine_dir / f"rank{r}.engine" for r in range(size))
    absent = [p.name for p in engines if not p.is_file()]
    if absent:
        raise RedrafterError(f"engine folder {engine_dir} lacks {name_list(absent)} for {counted(size, 'rank')}: "
                             "rerun the build")
    stale = sorted(p.name for p in engine_dir.glob("rank*.engine") if p not in engines)
    if stale:
        log.warning("engine folder %s also holds %s from an earlier build", engine_dir, ", ".join(stale))
    return EngineReport(engine_dir, engines, sum(p.stat().st_size for p in engines), expected)


def validate_checkpoint(checkpoint_dir: Path) -> dict:
    """The same checks as `inspect`; returns the checkpoint config."""
    from .checkpoint import require_valid

    return require_valid(checkpoint_dir)


def prepare(options: BuildOptions) -> BuildPlan:
    from .output import check_output_folder

    config = validate_checkpoint(options.checkpoint_dir)
    check_output_folder(options.output_dir, options.force, [options.checkpoint_dir], option=options.output_named)
    return plan_build(options, config)


def build_engine(plan: BuildPlan, on_line: Callable[[str], None] = log.info) -> EngineReport:
    """Run trtllm-build for a plan into a hidden sibling of the engine folder, check what it wrote, then rename it
    into place (a failed or interrupted build leaves no folder that looks like an engine)."""
    from .output import atomic_output

    require_trtllm_tool(TRTLLM_BUILD)
    check_trtllm_builds(plan.config)
    on_line(f"$ {plan.shell()}")
    with atomic_output(plan.output_dir, plan.force, [plan.checkpoint_dir], option=plan.output_named) as tmp:
        run_streaming(plan.with_output(tmp), on_line)
        check_engine(tmp, plan.config)
        (tmp / PRODUCER_FILE).write_text(json.dumps({"producer": engine_producer(plan)}, indent=2) + "\n")
    return check_engine(plan.output_dir, plan.config)


def engine_producer(plan: BuildPlan) -> dict:
    """The engine folder's `producer` block (TensorRT-LLM writes the folder's config.json, so ours is a file of its
    own): the trtllm-build command line as run and TensorRT-LLM's version, with the checkpoint it read."""
    from .producer import producer_block

    return producer_block("build", {"trtllm_build": list(plan.argv), "tensorrt_llm": trtllm_version()},
                          {"checkpoint": plan.checkpoint_dir})
