"""Reference runtime: executes a TensorRT-LLM ReDrafter checkpoint (`config.json` + `rank{r}.safetensors`) in
PyTorch, with ReDrafter's draft / tree-verify / accept loop. Stable Python API:

    from redrafter_trt.runtime import load, generate, generate_tp
    model = load("ckpt/", device="cpu", dtype=None)          # tp=1 checkpoints; dtype None = the checkpoint's
    # every loading entry point first refuses a checkpoint `inspect` finds problems in, in `run`'s line;
    # open_checkpoint("ckpt/") is that check alone: its Checkpoint, passed to any of them, is not inspected again
    # (a folder written again since, by a convert into it, is opened again)
    result = generate(model, [[1, 2, 3], [4, 5]], max_new_tokens=64,
                      num_beams=None, draft_len=None,         # None = the checkpoint's redrafter_* values
                      temperature=0.0,                        # 0 = greedy (exactly the base's greedy output)
                      eos_token_id=2, seed=0, use_draft=True,  # use_draft=False: plain decoding, same runtime
                      batch_size=None,                        # prompts at a time (None: all in one batch)
                      logprobs=None, sampling_rule="exact")   # logprobs=k: below; "trtllm": see Sampling below
    result.output_ids[i]        # generated ids of prompt i (prompt excluded, EOS kept)
    result.steps[i]             # decoding steps (the prefill counts as one)
    result.tokens_per_step[i]   # len(output_ids[i]) / steps[i]
    result.accepted[i]          # tokens emitted by each step after the prefill (1 + accepted drafts)
    result.histogram()          # {tokens per step: count} over all prompts
    result.mean_tokens_per_step, result.total_new_tokens, result.wall_seconds
    # logprobs=k: result.logprobs[i][t] = TokenLogprob(logprob, top) of output token t under the base (k most likely)
    prompt_logprobs(model, prompt_ids, k)[i][t - 1]   # the same for prompt token t >= 1, teacher-forced

    # a tp=N checkpoint in one process, its rank files merged (bench, acceptance; the whole model in memory):
    model = load(merge_ranks("ckpt_tp2/"))   # from redrafter_trt.runtime.merge import merge_ranks
    # a tp=N checkpoint: N local processes (gloo on CPU, nccl on CUDA), each loading only its own rank file; they
    # run the calling script again: a script calls it under `if __name__ == "__main__":` (a notebook need not)
    result = generate_tp("ckpt_tp2/", prompt_ids, max_new_tokens=64, device="cpu", ...same keywords...)
    # (but on_tokens / admit / on_step: they need rank 0 in this process, `runtime.ranks.LocalRanks`)

Sampling (temperature > 0) is exact: the emitted tokens follow the base model's softmax(logits / T) (see
`runtime.accept`). No top-k / top-p is applied. sampling_rule="trtllm" accepts as a sampling TensorRT-LLM engine
does instead (biased, more accepted): its tokens per step predict such an engine's. `generate` samples whenever
temperature > 0, also on a greedy checkpoint (`redrafter_greedy_search`), to study sampling on any drafter; that
checkpoint's engine decodes greedily whatever the temperature, and `run` and `serve` do the same for it.
"""

from __future__ import annotations

import inspect
import logging
import math
import numbers
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import ConfigError, cuda_index_past
from ..plural import counted
from .config import DTYPES, RuntimeConfig
from .decode import MAX_TOP_LOGPROBS, GenerationResult, TokenLogprob, decode, token_logprobs
from .drafter import CheckpointDrafter
from .folder import Checkpoint, open_checkpoint
from .merge import merge_ranks, merged_tensors
from .model import BaseModel, read_rank_file
from .tp import SINGLE, TPGroup, launch, rank_device, require_gpus

SAMPLING_RULES = ("exact", "trtllm")  # generate's sampling_rule: see runtime.accept
MIN_TEMPERATURE = 1e-5  # below it logits / T overflow to NaN (vLLM decodes greedily there)

__all__ = ["ReDrafterModel", "GenerationResult", "TokenLogprob", "RuntimeConfig", "Checkpoint", "open_checkpoint",
           "load", "generate", "generate_tp", "forward_logits", "forward_logits_tp", "prompt_logprobs", "merge_ranks",
           "Spelling", "API", "RUN", "check_device", "check_compile", "check_draft_shape", "check_temperature",
           "check_positions"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Spelling:
    """How the checks below name an argument they refuse, and the fix: the Python API's keywords as a caller writes
    them (`API`, every check's default: `draft_len=99`, `pass use_draft=False`), or `run`'s flags (`RUN`:
    `--draft-len 99`, `pass --no-draft`), which the commands pass where they check their options before calling the
    API (bench, acceptance and serve share run's --device and --compile). check_positions takes a command's own
    flag for the new tokens (`run`'s: RUN.flags["max_new_tokens"])."""
    flags: dict[str, str] = field(default_factory=dict)  # keyword -> flag; empty: the keywords (`name=value`)
    no_draft: str = "pass use_draft=False"  # decoding without drafts
    on_cpu: str = "pass device='cpu'"  # running on the CPU
    compiling: str = "compile=True"  # compiling the base's layers, and the fix that does not
    no_compile: str = "pass compile=False"
    in_float32: str = "load it with dtype='float32'"  # compiling a checkpoint of another dtype

    def given(self, keyword: str, value) -> str:
        """The argument as the caller gave it: `draft_len=99`, or `--draft-len 99`."""
        flag = self.flags.get(keyword)
        return f"{keyword}={value!r}" if flag is None else f"{flag} {value}"


API = Spelling()
RUN = Spelling({"num_beams": "--num-beams", "draft_len": "--draft-len", "temperature": "--temperature",
                "max_new_tokens": "--max-output-len", "device": "--device"},
               no_draft="pass --no-draft", on_cpu="use --device cpu", compiling="--compile",
               no_compile="drop --compile", in_float32="reconvert with --dtype float32")


@dataclass
class ReDrafterModel:
    config: RuntimeConfig
    base: BaseModel
    drafter: CheckpointDrafter | None
    group: TPGroup = SINGLE


def _dtype(dtype) -> torch.dtype | None:
    if dtype is None or dtype in (*DTYPES.values(), torch.float64):  # float64: a numeric reference, as transformers'
        return dtype
    if isinstance(dtype, str) and dtype in DTYPES:
        return DTYPES[dtype]
    raise ConfigError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")


def load(checkpoint_dir: Checkpoint | Path | str, device: str = "cpu", dtype: torch.dtype | str | None = None,
         group: TPGroup = SINGLE, drafter_int8: bool = False, compile: bool = False) -> ReDrafterModel:
    """Load this process's rank of a checkpoint. Without `group`, the checkpoint must be tp=1, or one
    `merge.merge_ranks` returned: every rank file read and merged into the tp=1 model. A checkpoint `inspect`
    finds problems in is refused first, in `run`'s line (`open_checkpoint`; a `Checkpoint` it returned is not
    inspected again).

    compile: run the base's layers compiled by TorchInductor (CPU, float32, tp=1; minutes of compiling on first
    use, then faster steps: `runtime/compiled.py`).

    drafter_int8: on CPU in float32, draft through an int8 copy of the drafter's final projection (4x fewer bytes
    per draft step, about 1.3x faster there). Off by default, as in every command: TensorRT-LLM's engine drafts in
    the checkpoint's dtype, and int8 changes the drafts (SmolLM2, a 60-step drafter, 20 MT-Bench questions x 64
    tokens: 714 of 1260 W=4 L=2 beam searches drafted differently; tokens per step at W=4 L=4 1.157 against 1.165),
    so tokens per step would no longer predict the engine's, and `sampling_rule="trtllm"` would accept against
    int8's q.
    Greedy output and exact sampling stay exact either way (the base verifies; q is not used there)."""
    merge = isinstance(checkpoint_dir, Checkpoint) and checkpoint_dir.merged  # kept where its folder is opened again
    checkpoint_dir = open_checkpoint(checkpoint_dir)  # stands for its folder below (Path, f-strings)
    if merge:
        checkpoint_dir = merge_ranks(checkpoint_dir)
    cfg = checkpoint_dir.config
    if cfg.tp_size != group.tp_size:
        raise ConfigError(f"{checkpoint_dir} is a tp={cfg.tp_size} checkpoint but the runtime runs tp={group.tp_size}: "
                          f"pass --tp {cfg.tp_size} (Python: generate_tp)")
    check_device(device)
    if checkpoint_dir.merged:  # bench, acceptance: a tp=N checkpoint in one process (runtime/merge.py)
        tensors = merged_tensors(checkpoint_dir.path, checkpoint_dir.raw)
    else:
        tensors = read_rank_file(Path(checkpoint_dir), group.tp_rank)
    dtype = _dtype(dtype)
    base = BaseModel(cfg, tensors, group, dtype, device, compile=compile)
    drafter = (CheckpointDrafter(cfg, tensors, base.embed_tokens, group, dtype, device, int8_head=drafter_int8,
                                 linear_plan=base.linear_plan)
               if cfg.has_drafter else None)
    del tensors
    log.info("loaded %s rank %d/%d (%s, %s)", checkpoint_dir, group.tp_rank, group.tp_size, base.dtype, device)
    return ReDrafterModel(cfg, base, drafter, group)


def check_device(device: str, *, spelling: Spelling = API) -> None:
    """Refuse a CUDA device that is not there (a CPU build of torch, no GPU visible, or cuda:N past the visible
    GPUs), or a device the runtime does not run on, in one line, before any model loads: torch's own error is a
    traceback. `spelling`: the caller's names (`Spelling`)."""
    if not (isinstance(device, str) and re.fullmatch(r"cpu|cuda(:\d+)?", device)):
        raise ConfigError(f"device {device!r} is not cpu, cuda or cuda:N: pass one of them (as a string)")
    if not device.startswith("cuda"):
        return
    if not torch.cuda.is_available():
        raise ConfigError(f"{spelling.given('device', device)} requested but no CUDA device is available: "
                          f"{spelling.on_cpu}")
    index, count = device.partition(":")[2], torch.cuda.device_count()
    if index and int(index) >= count:
        raise ConfigError(cuda_index_past(device, count, spelling.given("device", device)))


def check_compile(cfg: RuntimeConfig, compile: bool, device: str = "cpu", dtype: torch.dtype | str | None = None,
                  *, spelling: Spelling = API) -> None:
    """Refuse compile=True (--compile) where it cannot run (it compiles one CPU rank's layers in float32), before
    any rank starts or any weight is read. dtype: the one the runtime will load in (None: the checkpoint's)."""
    dtype = str(_dtype(dtype) or cfg.torch_dtype).removeprefix("torch.")
    if compile and (cfg.tp_size > 1 or not device.startswith("cpu") or dtype != "float32"):
        alone = cfg.tp_size == 1 and device.startswith("cpu")  # the dtype alone stands in the way
        raise ConfigError(f"{spelling.compiling} runs the layers of a tp=1 float32 checkpoint on one CPU (here "
                          f"tp={cfg.tp_size}, {dtype}, {device}): {spelling.no_compile}"
                          + (f", or {spelling.in_float32}" if alone else ""))
    if compile:
        from .compiled import check_cxx_compiler  # imports TorchInductor: only where it will compile

        check_cxx_compiler(spelling)


def check_draft_shape(cfg: RuntimeConfig, num_beams: int | None, draft_len: int | None, use_draft: bool,
                      *, spelling: Spelling = API) -> tuple[int, int]:
    """The beam width and draft length to use; raises ConfigError above the checkpoint's. The fixes that reconvert
    name convert's options, the command to run."""
    if not use_draft:
        return 0, 0
    if not cfg.has_drafter:
        raise ConfigError(f"the checkpoint has no drafter (no redrafter_* keys): {spelling.no_draft}, or convert with "
                          f"a drafter")
    W = cfg.num_beams if num_beams is None else int(num_beams)
    L = cfg.draft_len if draft_len is None else int(draft_len)
    if not 1 <= W <= cfg.num_beams:
        larger = f": pass at most {cfg.num_beams}, or reconvert with --num-beams {W}" if W > cfg.num_beams else ""
        raise ConfigError(f"{spelling.given('num_beams', W)} is outside 1..{cfg.num_beams} (the checkpoint's "
                          f"redrafter_num_beams){larger}")
    if not 0 <= L <= cfg.draft_len:
        larger = f": pass at most {cfg.draft_len}, or {cfg.draft_len_fix(L)}" if L > cfg.draft_len else ""
        raise ConfigError(f"{spelling.given('draft_len', L)} is outside 0..{cfg.draft_len} (the checkpoint's "
                          f"redrafter_draft_len_per_beam){larger}")
    return W, L


def check_positions(cfg: RuntimeConfig, prompt_ids: list[list[int]], max_new_tokens: int, *,
                    flag: str | None = None, names: list[str | None] | None = None) -> None:
    """Refuse prompts that with max_new_tokens run past the model's positions (as TensorRT-LLM's max_seq_len),
    naming the longest (`names`: each prompt's, a file's line, or None; else its index when there are several) and the fixes
    that can work: fewer new tokens cannot help a prompt over the positions alone. `flag`: the caller's option for
    the new tokens (a command's, `--max-new-tokens 5 at most`; `run`'s is RUN.flags["max_new_tokens"]); None:
    generate's keyword (`max_new_tokens=5 at most`)."""
    at_most = (lambda n: f"max_new_tokens={n}") if flag is None else (lambda n: f"{flag} {n}")
    i = max(range(len(prompt_ids)), key=lambda i: len(prompt_ids[i]))
    longest, positions = len(prompt_ids[i]), cfg.max_positions
    if longest + max_new_tokens <= positions:
        return
    which = f"{names[i]}: " if names and names[i] else f"prompt_ids[{i}]: " if len(prompt_ids) > 1 else ""
    fixes = [f"shorten it to {positions - max_new_tokens} tokens"] * (max_new_tokens < positions) \
        + [f"ask for fewer new tokens ({at_most(positions - longest)} at most)"] * (longest < positions)
    fix = " or ".join(fixes) or \
        f"shorten it and ask for fewer new tokens ({flag or 'max_new_tokens'} below {positions})"
    raise ConfigError(f"{which}a {longest}-token prompt + {max_new_tokens} new tokens exceed the model's "
                      f"{positions} positions: {fix}")


def check_temperature(temperature: float, *, spelling: Spelling = API) -> None:
    """Refuse a temperature that is not 0 (greedy) or a finite value from MIN_TEMPERATURE."""
    if not (temperature == 0 or MIN_TEMPERATURE <= temperature < math.inf):  # NaN sampled one token forever
        raise ConfigError(f"{spelling.given('temperature', temperature)} is negative, below {MIN_TEMPERATURE:g} or not "
                          f"finite: use 0 for greedy or a finite value from {MIN_TEMPERATURE:g}")


def check_prompts(cfg: RuntimeConfig, prompt_ids: list[list[int]]) -> None:
    """Refuse a tokenizer's BatchEncoding, an empty prompt list, an empty prompt, or a token id outside the
    vocabulary (an IndexError deep in the embedding otherwise, on every tp rank)."""
    prompts = list(prompt_ids) if isinstance(prompt_ids, (list, tuple)) else []
    if any(isinstance(p, Mapping) and "input_ids" in p for p in [prompt_ids, *prompts]):
        raise ConfigError("prompt_ids holds a tokenizer's BatchEncoding (transformers 5's apply_chat_template returns "
                          "one): pass its ['input_ids'], or call apply_chat_template with return_dict=False")
    if not isinstance(prompt_ids, (list, tuple)) or not all(isinstance(p, (list, tuple)) for p in prompt_ids):
        raise ConfigError("prompt_ids is a batch: one list of token ids per prompt, unpadded ([ids] for one prompt; "
                          "a tensor's .tolist() without its padding)")
    if not prompt_ids or any(len(p) == 0 for p in prompt_ids):
        raise ConfigError("every prompt needs at least one token")
    # [t], not t: a None in a prompt (a tokenizer's id for an unknown token) is the first bad one too
    bad = next(([t] for p in prompt_ids for t in p if not (_integer(t) and 0 <= t < cfg.vocab_size)), None)
    if bad and not _integer(bad[0]):
        raise ConfigError(f"token id {bad[0]!r} is not an integer: pass each prompt as a list of Python ints (a "
                          f"tensor's .tolist(); a tokenizer's None for an unknown token is no id)")
    if bad:
        raise ConfigError(f"token id {bad[0]} is outside the vocabulary (0..{cfg.vocab_size - 1}): encode the prompts "
                          f"with the base model's tokenizer")


def check_model(model, name: str) -> None:
    """Refuse a checkpoint folder (or a Checkpoint) passed where the loaded model goes: an AttributeError deep in
    `name` otherwise."""
    if not isinstance(model, ReDrafterModel):
        raise ConfigError(f"{name} takes the model runtime.load(checkpoint) returns, not {type(model).__name__} "
                          f"{str(model)[:80]!r}: model = load(checkpoint) first (generate_tp takes the folder)")


def _check_top_k(k: int, keyword: str) -> None:
    if not (_integer(k) and 0 <= k <= MAX_TOP_LOGPROBS):  # "2" from a script was a TypeError
        raise ConfigError(f"{keyword}={k!r} is outside 0..{MAX_TOP_LOGPROBS}")


def _integer(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)  # Python's and numpy's ints


# generate's plain arguments: (what each must be, check); the CLI's options arrive checked by click
ARGUMENTS = {
    "max_new_tokens": ("an integer >= 1", lambda v: _integer(v) and v >= 1),
    "temperature": ("a number", lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool)),
    "eos_token_id": ("None, a token id or a list of token ids (the tokenizer's eos_token_id, not its eos_token)",
                     lambda v: v is None or _integer(v) or (isinstance(v, (list, tuple, set)) and all(map(_integer, v)))),
    "seed": ("an integer in 0..2**63-1", lambda v: _integer(v) and 0 <= v < 2 ** 63),  # torch.Generator's
    "batch_size": ("None or an integer >= 1", lambda v: v is None or (_integer(v) and v >= 1)),
    "num_beams": ("None or an integer", lambda v: v is None or _integer(v)),
    "draft_len": ("None or an integer", lambda v: v is None or _integer(v)),
    "use_draft": ("True or False", lambda v: isinstance(v, bool)),  # "no" drafted
    "forget_ended": ("True or False", lambda v: isinstance(v, bool)),
    **{name: ("None or a function", lambda v: v is None or callable(v)) for name in ("on_tokens", "admit", "on_step")},
}


def check_generate(cfg: RuntimeConfig, prompt_ids, max_new_tokens, num_beams=None, draft_len=None,
                   temperature=0.0, eos_token_id=None, seed=0, use_draft=True, batch_size=None, on_tokens=None,
                   admit=None, logprobs=None, on_step=None, sampling_rule="exact", forget_ended=False) -> tuple[int, int]:
    """Refuse `generate`'s arguments that cannot work, each in one line (generate_tp: before any rank starts and
    loads its weights); returns the beam width and draft length. Same parameters as generate, named as generate's
    keywords (the commands check their options first, in their flags' names: `Spelling`)."""
    check_prompts(cfg, prompt_ids)
    given = dict(max_new_tokens=max_new_tokens, temperature=temperature, eos_token_id=eos_token_id, seed=seed,
                 batch_size=batch_size, num_beams=num_beams, draft_len=draft_len, use_draft=use_draft,
                 forget_ended=forget_ended, on_tokens=on_tokens, admit=admit, on_step=on_step)
    seeds = seed if isinstance(seed, (list, tuple)) else None  # one per prompt: each checked as an int seed
    if seeds is not None and len(seeds) != len(prompt_ids):
        raise ConfigError(f"seed: {counted(len(seeds), 'seed')} for {counted(len(prompt_ids), 'prompt')}: give "
                          "one seed per prompt (or one integer for the batch)")
    for name, (need, ok) in ARGUMENTS.items():
        for value in (seeds if name == "seed" and seeds is not None else [given[name]]):
            if not ok(value):
                raise ConfigError(f"{name}={value!r}: it must be {need}")
    eos = [eos_token_id] if _integer(eos_token_id) else eos_token_id or []
    if (bad := next((e for e in eos if not 0 <= e < cfg.vocab_size), None)) is not None:  # it never stopped there
        raise ConfigError(f"eos_token_id {bad} is outside the vocabulary (0..{cfg.vocab_size - 1}): pass the base "
                          f"model's tokenizer's eos_token_id")
    check_temperature(temperature)
    check_positions(cfg, prompt_ids, max_new_tokens)
    W, L = check_draft_shape(cfg, num_beams, draft_len, use_draft)
    if logprobs is not None:
        _check_top_k(logprobs, "logprobs")
    if sampling_rule not in SAMPLING_RULES:
        raise ConfigError(f"sampling_rule={sampling_rule!r} is unknown: use one of {', '.join(SAMPLING_RULES)}")
    if admit is not None and batch_size is not None:
        raise ConfigError("admit joins prompts to one running batch: leave batch_size out")
    if forget_ended and on_tokens is None:
        raise ConfigError("forget_ended drops the tokens of rows that ended, which only on_tokens sees: pass on_tokens")
    return W, L


def check_call(caller: str, cfg: RuntimeConfig, *args, **kwargs) -> tuple[int, int]:
    """check_generate of a call `caller(prompt_ids, max_new_tokens, ...)` that hands generate's arguments on (to tp
    ranks): an argument generate does not take is a TypeError naming `caller`, the function the user called, not
    check_generate or a rank's generate."""
    try:
        bound = inspect.signature(check_generate).bind(cfg, *args, **kwargs)
    except TypeError as e:
        raise TypeError(f"{caller}() {e}") from None
    return check_generate(*bound.args, **bound.kwargs)


def generate(model: ReDrafterModel, prompt_ids: list[list[int]], max_new_tokens: int, num_beams: int | None = None,
             draft_len: int | None = None, temperature: float = 0.0, eos_token_id: int | list[int] | None = None,
             seed: int | list[int] = 0, use_draft: bool = True, batch_size: int | None = None,
             on_tokens=None, admit=None, logprobs: int | None = None, on_step=None,
             sampling_rule: str = "exact", forget_ended: bool = False) -> GenerationResult:
    """Generate for every prompt, `batch_size` prompts at a time (None: all in one batch); see the module
    docstring. seed: each prompt's row draws from a generator of its own, seeded so: one integer, that seed for every
    prompt (as `run --seed`, and an engine seeding each request: a prompt's sample is the one it gets alone, whatever
    the batch_size and the prompts beside it; copies of one prompt draw the same sample), or one seed per prompt (an
    admitted `Joining` brings its own, else takes the integer). on_tokens(prompt index, new
    ids, their logprobs) -> True ends that prompt (under tp, every rank passes one and rank 0's answers count; see
    `runtime.decode`). admit(running rows) -> more prompts to join the batch as it runs (one batch only: no batch_size;
    see `runtime.decode`). logprobs=k: each token's log-probability under the base and the k most likely there
    (`runtime.decode`). on_step(Iteration) hears of each prefill and decoding step (`runtime.decode`). sampling_rule:
    "exact" (the base's distribution at the temperature) or "trtllm" (a sampling engine's own rule, to predict its
    tokens per step; `runtime.accept`). forget_ended: a row that ended keeps nothing, its result lists empty (a server's
    long-running batch; on_tokens had its tokens; `runtime.decode`)."""
    check_model(model, "generate")
    W, L = check_generate(model.config, prompt_ids, max_new_tokens, num_beams, draft_len, temperature, eos_token_id,
                          seed, use_draft, batch_size, on_tokens=on_tokens, admit=admit, logprobs=logprobs,
                          on_step=on_step, sampling_rule=sampling_rule, forget_ended=forget_ended)
    size = batch_size or len(prompt_ids)
    parts = [decode(model.base, model.drafter, prompt_ids[i: i + size], max_new_tokens, W, L, temperature,
                    eos_token_id, seed[i: i + size] if isinstance(seed, (list, tuple)) else seed,
                    model.group,
                    None if on_tokens is None else (lambda b, *new, i=i: on_tokens(i + b, *new)), admit, logprobs,
                    on_step, sampling_rule, forget_ended)
             for i in range(0, len(prompt_ids), size)]
    return GenerationResult(output_ids=[o for r in parts for o in r.output_ids], steps=[s for r in parts for s in r.steps],
                            accepted=[a for r in parts for a in r.accepted],
                            logprobs=[lp for r in parts for lp in r.logprobs],
                            wall_seconds=sum(r.wall_seconds for r in parts))


def _tp_worker(group: TPGroup, checkpoint_dir, device, dtype, prompt_ids, kwargs) -> GenerationResult:
    model = load(checkpoint_dir, device=rank_device(device, group.tp_rank), dtype=dtype, group=group)
    return generate(model, prompt_ids, **kwargs)


def generate_tp(checkpoint_dir: Checkpoint | Path | str, prompt_ids: list[list[int]], max_new_tokens: int, *,
                device: str = "cpu", dtype: str | None = None, **kwargs) -> GenerationResult:
    """`generate` on a tp=N checkpoint in N spawned local processes; returns rank 0's result. on_tokens, admit and
    on_step would run in those processes (a copy of each callback and of what it touches, on every rank): a tp=N
    checkpoint refuses them; `runtime.ranks.LocalRanks` runs rank 0, and its callbacks, in this process."""
    checkpoint_dir = open_checkpoint(checkpoint_dir)  # once: the ranks take it checked
    cfg = checkpoint_dir.config
    check_call("generate_tp", cfg, prompt_ids, max_new_tokens, **kwargs)  # before any rank starts and loads weights
    _dtype(dtype)
    if cfg.tp_size == 1:
        return generate(load(checkpoint_dir, device, dtype), prompt_ids, max_new_tokens, **kwargs)
    given = [name for name in ("on_tokens", "admit", "on_step") if kwargs.get(name) is not None]
    if given:
        raise ConfigError(f"{', '.join(given)}: generate_tp runs a tp={cfg.tp_size} checkpoint in {cfg.tp_size} "
                          f"spawned processes, where callbacks cannot reach this one: use "
                          f"runtime.ranks.LocalRanks(checkpoint_dir).generate(...), which runs rank 0 here")
    require_gpus(device, checkpoint_dir)
    check_device(device)
    return launch(_tp_worker, cfg.tp_size, checkpoint_dir, device, dtype, prompt_ids,
                  {"max_new_tokens": max_new_tokens, **kwargs}, device=device)


def _hidden(base: BaseModel, input_ids: list[int]) -> torch.Tensor:
    """Final-normed hidden states [1, T, H] of one sequence, teacher-forced (a fresh cache, no drafting)."""
    T = len(input_ids)
    # one slot more than the tokens: the compiled forward attends over one masked slot more (BaseModel.forward); with
    # exactly T, a one-token sequence attended over 1 slot, a size compiled apart (minutes, in a server's scheduler)
    cache = base.new_cache(1, T + 1)
    tokens = torch.tensor([input_ids], device=base.device)
    causal = torch.ones(T, T, dtype=torch.bool, device=base.device).tril()[None]
    return base.forward(tokens, torch.arange(T, device=base.device)[None], causal, cache)


@torch.no_grad()
def forward_logits(model: ReDrafterModel, input_ids: list[int]) -> torch.Tensor:
    """Base-model logits [T, vocab] (float32) of one sequence, no drafting: the conversion check."""
    check_model(model, "forward_logits")
    check_prompts(model.config, [input_ids])
    check_positions(model.config, [input_ids], 0)
    return model.base.logits(_hidden(model.base, input_ids))[0].cpu()


SCORE_CHUNK = 256  # positions whose log-softmax is held at once (256 x a 128k vocabulary in float64: 256 MB)


@torch.no_grad()
def prompt_logprobs(model: ReDrafterModel, prompt_ids: list[list[int]], k: int) -> list[list[TokenLogprob]]:
    """Each prompt's tokens after the first under the base, teacher-forced: [prompt][t - 1] is token t's
    log-probability given tokens 0..t-1 and the k most likely there (an API's `echo` with logprobs, perplexity).
    Under tp every rank calls it with the same arguments."""
    check_model(model, "prompt_logprobs")
    check_prompts(model.config, prompt_ids)
    _check_top_k(k, "k")
    check_positions(model.config, prompt_ids, 0)
    out = []
    for ids in prompt_ids:
        hidden = _hidden(model.base, ids)
        targets = torch.tensor([ids[1:]], device=model.base.device)
        out.append([lp for s in range(0, len(ids) - 1, SCORE_CHUNK)
                    for lp in token_logprobs(model.base, hidden[:, s: s + SCORE_CHUNK], targets[:, s: s + SCORE_CHUNK],
                                             k)[0]])
    return out


def _logits_worker(group: TPGroup, checkpoint_dir, input_ids, dtype) -> torch.Tensor:
    return forward_logits(load(checkpoint_dir, dtype=dtype, group=group), input_ids)


def forward_logits_tp(checkpoint_dir: Checkpoint | Path | str, input_ids: list[int], dtype: str | None = None
                      ) -> torch.Tensor:
    """`forward_logits` of any checkpoint on CPU, in tp_size processes when tp_size > 1."""
    checkpoint_dir = open_checkpoint(checkpoint_dir)
    if checkpoint_dir.config.tp_size == 1:
        return forward_logits(load(checkpoint_dir, dtype=dtype), input_ids)
    return launch(_logits_worker, checkpoint_dir.config.tp_size, checkpoint_dir, input_ids, dtype)
