"""The `--engine-dir` path: run a built ReDrafter engine with TensorRT-LLM 1.2.x's `ModelRunnerCpp`
(as `examples/run.py` does). TensorRT-LLM is imported only here, only when asked for; tensor parallel engines
run under `mpirun -n TP redrafter-trt run --engine-dir ...` (every rank calls this, rank 0 gets the outputs).

Beam count, draft length and greedy mode are fixed when the engine is built; a temperature is passed through to
the executor's sampling config (greedy engines ignore it). API used (TensorRT-LLM 1.2.x,
`tensorrt_llm/runtime/model_runner_cpp.py`): `ModelRunnerCpp.from_dir(...).executor`, and from
`tensorrt_llm.bindings.executor`: `Request`, `SamplingConfig`, `enqueue_requests`, `await_responses`,
`Result.output_token_ids / is_final / decoding_iter`.
"""

from __future__ import annotations

import importlib
import time
from pathlib import Path

from ..errors import ConfigError, DependencyError, RedrafterError
from .decode import GenerationResult


def import_trtllm():
    try:
        return importlib.import_module("tensorrt_llm"), importlib.import_module("tensorrt_llm.runtime")
    except ImportError as e:
        raise DependencyError(f"--engine-dir needs TensorRT-LLM 1.2.x ({e.msg}): install it on a GPU machine "
                              f"(`pip install 'tensorrt_llm>=1.0,<1.3'`), or run the checkpoint with "
                              f"--checkpoint-dir instead") from None


def runner_kwargs(engine_dir: Path, rank: int, batch_size: int, max_input_len: int, max_output_len: int) -> dict:
    """Arguments for `ModelRunnerCpp.from_dir` (keyword names of TensorRT-LLM 1.2.x)."""
    return dict(engine_dir=str(engine_dir), rank=rank, max_batch_size=batch_size, max_input_len=max_input_len,
                max_output_len=max_output_len, max_beam_width=1)


def sampling_kwargs(temperature: float, seed: int) -> dict:
    """`tensorrt_llm.bindings.executor.SamplingConfig` arguments: greedy is top_k=1, as `examples/run.py` does."""
    return dict(beam_width=1, seed=seed, **(dict(temperature=temperature) if temperature > 0 else dict(top_k=1)))


def generate_engine(engine_dir: Path | str, prompt_ids: list[list[int]], max_new_tokens: int, *, end_id: int,
                    pad_id: int, temperature: float = 0.0, seed: int = 0) -> GenerationResult | None:
    """Generate with a TensorRT-LLM engine; None on ranks other than 0. ModelRunnerCpp sets the executor up; the
    requests go to its executor directly (as `trtllm-bench` does) because only the executor's results carry
    `decoding_iter`, the number of engine steps, so tokens per step are TensorRT-LLM's own count. The engine
    reports no per-step acceptance, so the histogram stays empty."""
    engine_dir = Path(engine_dir)
    if not (engine_dir / "config.json").is_file():
        raise ConfigError(f"{engine_dir} holds no engine config.json: pass the output folder of `redrafter-trt build`")
    tllm, runtime = import_trtllm()
    executor_api = importlib.import_module("tensorrt_llm.bindings.executor")
    runner = runtime.ModelRunnerCpp.from_dir(**runner_kwargs(engine_dir, tllm.mpi_rank(), len(prompt_ids),
                                                             max(len(p) for p in prompt_ids), max_new_tokens))
    executor = runner.executor
    if not executor.can_enqueue_requests():  # under mpirun only rank 0 submits; the others serve its requests
        return None
    sampling = executor_api.SamplingConfig(**sampling_kwargs(temperature, seed))
    requests = [executor_api.Request(input_token_ids=list(p), max_tokens=max_new_tokens, end_id=end_id, pad_id=pad_id,
                                     sampling_config=sampling, streaming=False) for p in prompt_ids]
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
        outputs.append(list(result.output_token_ids[0][len(prompt):]))  # the executor returns prompt + output
        steps.append(max(int(result.decoding_iter), 1))
    return GenerationResult(output_ids=outputs, steps=steps, accepted=[[] for _ in outputs], wall_seconds=wall)
