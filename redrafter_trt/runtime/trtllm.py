"""The `--engine-dir` path: run a built ReDrafter engine with TensorRT-LLM 1.2.x's `ModelRunnerCpp`
(as `examples/run.py` does). TensorRT-LLM is imported only here, only when asked for; tensor parallel engines
run under `mpirun -n TP redrafter-trt run --engine-dir ...` (every rank calls this, rank 0 gets the outputs).

Beam count, draft length and greedy mode are fixed when the engine is built: a greedy engine ignores the temperature;
a sampling engine (converted with --no-greedy) samples at it, 1.0 when none is given, so it refuses 0. The requests
are checked against the engine's build limits first (`ModelRunnerCpp.from_dir` only asserts them). API used (TensorRT-LLM 1.2.x,
`tensorrt_llm/runtime/model_runner_cpp.py`): `ModelRunnerCpp.from_dir(...)` and the `Executor` it holds (its
`session` attribute, `executor` in some TensorRT-LLM commits: `runner_executor`), and from
`tensorrt_llm.bindings.executor`: `Request`, `SamplingConfig`, `enqueue_requests`, `await_responses`,
`FinishReason`, `Result.output_token_ids / is_final / decoding_iter / finish_reasons`; `tensorrt_llm.mpi_rank` /
`mpi_world_size`.
"""

from __future__ import annotations

import importlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, DependencyError, RedrafterError
from ..plural import counted
from ..rope import position_limit
from .decode import GenerationResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class EngineLimits:
    """What `trtllm-build` fixed (the engine's config.json): `max_seq_len` as the user built it (the builder adds
    max_draft_len for the draft tokens), `greedy` from `redrafter_greedy_search`. `max_input_len` is the longest
    prompt the executor takes: with packed input and context FMHA (what ReDrafter engines are built with) the
    builder ignores `--max_input_len` and the executor allows min(stored max_seq_len - 1, max_num_tokens)
    (`trtGptModel.h`). `rope_table`: max_position_embeddings when a linear or yarn scaling lets max_seq_len pass it:
    TensorRT-LLM's RoPE is a cos/sin table of that many rows, read unchecked by position (see build.plan_build)."""
    max_batch_size: int
    max_input_len: int
    max_seq_len: int
    greedy: bool
    ranks: int = 1  # tp x pp: the MPI processes that must run it
    rope_table: int | None = None

    @classmethod
    def read(cls, engine_dir: Path) -> "EngineLimits":
        from ..build import check_engine, read_engine_config

        config = read_engine_config(engine_dir)
        try:
            ranks = len(check_engine(engine_dir, config["pretrained_config"]).engines)  # one rank{r}.engine per rank
        except RedrafterError as e:
            raise ConfigError(str(e)) from None
        build = config["build_config"]
        plugins = build.get("plugin_config") or {}
        try:
            stored_seq = int(build["max_seq_len"])
            packed = plugins.get("remove_input_padding", True) and plugins.get("context_fmha", True)
            max_input = (min(stored_seq - 1, int(build["max_num_tokens"])) if packed and build.get("max_num_tokens")
                         else int(build["max_input_len"]))
            pretrained = config["pretrained_config"]
            positions = position_limit(pretrained)
            table = pretrained.get("max_position_embeddings") if positions else None
            return cls(int(build["max_batch_size"]), max_input, stored_seq - int(build.get("max_draft_len") or 0),
                       greedy_engine(pretrained), ranks,
                       table if table and table < positions else None)
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"{engine_dir}/config.json lacks a build limit ({type(e).__name__}: {e}): rebuild the "
                              "engine with `redrafter-trt build`") from None

    def check(self, prompt_ids: list[list[int]], max_new_tokens: int, temperature: float) -> float:
        """Refuse what the engine cannot run; return the temperature it decodes at (0 on a greedy engine)."""
        longest = max(len(p) for p in prompt_ids)
        takes = min(self.max_input_len, self.max_seq_len - 1)  # a prompt leaves room for one new token
        if longest > takes:
            raise ConfigError(f"a prompt of {longest} tokens exceeds the {takes} the engine takes: "
                              "shorten it, or rebuild with a larger --max-num-tokens and --max-seq-len")
        if longest + max_new_tokens > self.max_seq_len:
            raise ConfigError(f"{counted(longest, 'prompt token')} + --max-output-len {max_new_tokens} exceed the engine's "
                              f"max_seq_len {self.max_seq_len}: lower --max-output-len to "
                              f"{max(self.max_seq_len - longest, 1)}, or rebuild with a larger --max-seq-len")
        from . import RUN, check_temperature

        check_temperature(temperature, spelling=RUN)  # as the reference runtime: a tiny one overflows logits / T (1 / 0 in float32)
        if not self.greedy and temperature == 0:
            raise ConfigError("this engine samples (converted with --no-greedy), so --temperature 0 would sample at "
                              "1.0: pass a positive --temperature, or convert without --no-greedy and rebuild")
        if self.greedy and temperature > 0:
            log.warning("greedy engine (redrafter_greedy_search): --temperature %s is ignored; convert with "
                        "--no-greedy and rebuild to sample", temperature)
            temperature = 0.0  # sent as top_k 1, as a greedy run's is (the temperature went to the engine before)
        if self.rope_table and longest + max_new_tokens > self.rope_table:
            log.warning("%s + --max-output-len %d pass max_position_embeddings %d, the length of the "
                        "cos/sin table this engine's RoPE is read from (TensorRT-LLM does not check the position): "
                        "tokens past %d get no RoPE of the model's scaling; keep prompt and output within %d tokens, "
                        "or run the checkpoint with --checkpoint-dir", counted(longest, "prompt token"), max_new_tokens, self.rope_table,
                        self.rope_table, self.rope_table)
        return temperature


def greedy_engine(pretrained_config: dict) -> bool:
    """Whether an engine (its config's `pretrained_config`) was built greedy: it then ignores the temperature."""
    return bool(pretrained_config.get("redrafter_greedy_search", True))


def import_trtllm():
    from ..installed_trtllm import INSTALL_HINT, has_redrafter, trtllm_version, unsupported_trtllm

    version = trtllm_version()  # from package metadata, as `build` and `serve` check it, before the long import
    if version is not None and not has_redrafter(version):
        raise DependencyError(f"TensorRT-LLM {version} {unsupported_trtllm(version)}: {INSTALL_HINT}, and rebuild the "
                              "engine with it")
    try:
        return importlib.import_module("tensorrt_llm"), importlib.import_module("tensorrt_llm.runtime")
    except ImportError as e:
        raise DependencyError(f"--engine-dir needs TensorRT-LLM 1.2.x ({e.msg}): {INSTALL_HINT}; or run the "
                              f"checkpoint with --checkpoint-dir instead") from None


def runner_kwargs(engine_dir: Path, rank: int, batch_size: int, max_input_len: int, max_output_len: int) -> dict:
    """Arguments for `ModelRunnerCpp.from_dir` (keyword names of TensorRT-LLM 1.2.x)."""
    return dict(engine_dir=str(engine_dir), rank=rank, max_batch_size=batch_size, max_input_len=max_input_len,
                max_output_len=max_output_len, max_beam_width=1)


def sampling_kwargs(temperature: float, seed: int) -> dict:
    """`tensorrt_llm.bindings.executor.SamplingConfig` arguments: greedy is top_k=1, as `examples/run.py` does (a
    greedy engine verifies greedily whatever it gets)."""
    return dict(beam_width=1, seed=seed, **(dict(temperature=temperature) if temperature > 0 else dict(top_k=1)))


def split_stop_tokens(tokenizer_eos: int | None, stop: list[int]) -> tuple[int, list[int]]:
    """(end_id, stop words): a request ends at one end_id or at any of its stop words. As TensorRT-LLM's LLM API
    splits them: the tokenizer's EOS is the end_id (-1, none, when there is no stop token) and the generation
    config's others (Llama 3's <|eom_id|>, Qwen's <|endoftext|>) are one-token stop words."""
    end_id = tokenizer_eos if tokenizer_eos in stop else (stop[0] if stop else -1)
    return end_id, [t for t in stop if t != end_id]


def runner_executor(runner):
    """The `Executor` a `ModelRunnerCpp` holds. TensorRT-LLM's `__init__` has stored it as `self.session` (its own
    `generate` calls `self.session.enqueue_requests`) and, in other commits of the same line, as `self.executor`
    (`self.executor.enqueue_requests`); either is taken, so no 1.x runner ends in an AttributeError after loading."""
    from ..installed_trtllm import INSTALL_HINT

    for name in ("session", "executor"):
        executor = getattr(runner, name, None)
        if hasattr(executor, "enqueue_requests"):
            return executor
    raise DependencyError(f"this TensorRT-LLM's ModelRunnerCpp holds no Executor as `session` or `executor`: "
                          f"{INSTALL_HINT}")


def generate_engine(engine_dir: Path | str, prompt_ids: list[list[int]], max_new_tokens: int, *, end_id: int,
                    pad_id: int, stop_words: list[int] = (), temperature: float = 0.0,
                    seed: int = 0) -> GenerationResult | None:
    """Generate with a TensorRT-LLM engine; None on ranks other than 0. ModelRunnerCpp sets the executor up; the
    requests go to its executor directly (as `trtllm-bench` does) because only the executor's results carry
    `decoding_iter`, the number of engine steps, so tokens per step are TensorRT-LLM's own count. The engine
    reports no per-step acceptance, so the histogram stays empty. The executor leaves the end_id out of an output
    that ends on it (its maintainers' "expected behavior", TensorRT-LLM issue #2190): it is put back, so outputs end
    on their stop token as the reference runtime's do."""
    engine_dir = Path(engine_dir)
    limits = EngineLimits.read(engine_dir)
    temperature = limits.check(prompt_ids, max_new_tokens, temperature)
    tllm, runtime = import_trtllm()
    if tllm.mpi_world_size() != limits.ranks:
        raise ConfigError(f"this engine has {limits.ranks} ranks but {tllm.mpi_world_size()} process(es) run it: "
                          f"start it as `mpirun -n {limits.ranks} redrafter-trt run --engine-dir ...`")
    executor_api = importlib.import_module("tensorrt_llm.bindings.executor")
    batch = min(len(prompt_ids), limits.max_batch_size)  # more requests than that wait in the executor's queue
    runner = runtime.ModelRunnerCpp.from_dir(**runner_kwargs(engine_dir, tllm.mpi_rank(), batch,
                                                             max(len(p) for p in prompt_ids), max_new_tokens))
    executor = runner_executor(runner)
    if not executor.can_enqueue_requests():  # under mpirun only rank 0 submits; the others serve its requests
        return None
    sampling = executor_api.SamplingConfig(**sampling_kwargs(temperature, seed))
    requests = [executor_api.Request(input_token_ids=list(p), max_tokens=max_new_tokens, end_id=end_id, pad_id=pad_id,
                                     stop_words=[[t] for t in stop_words] or None, sampling_config=sampling,
                                     streaming=False) for p in prompt_ids]
    start = time.perf_counter()
    request_ids = executor.enqueue_requests(requests)
    results: dict[int, object] = {}
    while len(results) < len(request_ids):
        for response in executor.await_responses():
            if response.has_error():
                raise RedrafterError(f"TensorRT-LLM failed on request {response.request_id}: {response.error_msg}; "
                                     "check the engine and the prompt lengths against the build limits")
            if response.result.is_final:
                results[response.request_id] = response.result
    wall = time.perf_counter() - start
    outputs, steps = [], []
    for rid, prompt in zip(request_ids, prompt_ids):
        result = results[rid]
        out = list(result.output_token_ids[0][len(prompt):])  # the executor returns prompt + output
        if list(result.finish_reasons)[:1] == [executor_api.FinishReason.END_ID]:
            out.append(end_id)
        outputs.append(out)
        steps.append(max(int(result.decoding_iter), 1))
    return GenerationResult(output_ids=outputs, steps=steps, accepted=[[] for _ in outputs], wall_seconds=wall)
