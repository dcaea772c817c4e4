"""The `--engine-dir` path: run a built ReDrafter engine with TensorRT-LLM 1.2.x's `ModelRunnerCpp`
(as `examples/run.py` does). TensorRT-LLM is imported only here, only when asked for; tensor parallel engines
run under `mpirun -n TP redrafter-trt run --engine-dir ...` (every rank calls this, rank 0 gets the outputs).

Beam count, draft length and greedy mode are fixed when the engine is built; a temperature is passed through to
the executor's sampling config (greedy engines ignore it).
"""

from __future__ import annotations

import importlib
import time
from pathlib import Path

import torch

from ..errors import ConfigError, DependencyError
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


def generate_engine(engine_dir: Path | str, prompt_ids: list[list[int]], max_new_tokens: int, *, end_id: int,
                    pad_id: int, temperature: float = 0.0, seed: int = 0) -> GenerationResult | None:
    """Generate with a TensorRT-LLM engine; None on ranks other than 0. Steps are not reported by the runner,
    so `steps` counts one per token (tokens_per_step 1.0) and the acceptance histogram stays empty."""
    engine_dir = Path(engine_dir)
    if not (engine_dir / "config.json").is_file():
        raise ConfigError(f"{engine_dir} holds no engine config.json: pass the output folder of `redrafter-trt build`")
    tllm, runtime = import_trtllm()
    rank = tllm.mpi_rank()
    runner = runtime.ModelRunnerCpp.from_dir(**runner_kwargs(engine_dir, rank, len(prompt_ids),
                                                             max(len(p) for p in prompt_ids), max_new_tokens))
    start = time.perf_counter()
    sampling = dict(temperature=temperature) if temperature > 0 else dict(top_k=1)  # greedy as examples/run.py
    out = runner.generate([torch.tensor(p, dtype=torch.int32) for p in prompt_ids], max_new_tokens=max_new_tokens,
                          end_id=end_id, pad_id=pad_id, random_seed=seed, return_dict=True,
                          output_sequence_lengths=True, **sampling)
    if rank != 0 or not out:
        return None
    ids, lengths = out["output_ids"], out["sequence_lengths"]
    outputs = [ids[i, 0, len(p): int(lengths[i, 0])].tolist() for i, p in enumerate(prompt_ids)]
    return GenerationResult(output_ids=outputs, steps=[max(len(o), 1) for o in outputs],
                            accepted=[[] for _ in outputs], wall_seconds=time.perf_counter() - start)
