"""Launchers that start one command as several copies (torchrun, mpirun / mpiexec, srun), told apart by the variable
each sets in every copy it starts: the number of copies started together.

Read from the launchers' documentation: torchrun sets WORLD_SIZE; Open MPI's mpirun OMPI_COMM_WORLD_SIZE (its PMIx
launcher, Open MPI 5's prterun, too); the hydra mpiexec of MPICH and Intel MPI PMI_SIZE (as `srun --mpi=pmi2`
does); MVAPICH2's MV2_COMM_WORLD_SIZE; Slurm's srun SLURM_STEP_NUM_TASKS, the tasks of its job step. Not SLURM_NTASKS:
sbatch sets it too, to the allocation's task count, in a batch script that runs once. PMIx alone (PMIX_RANK) sets no
count in the environment: a PMIx process started by srun or Open MPI is told by theirs. Nor the shell of an
interactive step (`srun -n 8 --pty bash`, tasks asked for their CPUs or GPUs): srun gives task 0 the terminal
(SLURM_PTY_PORT, its port) and the other tasks none, so they end at once; what is typed there runs once.

TensorRT-LLM's trtllm-llmapi-launch (read from its script in tensorrt_llm/llmapi), started under mpirun or srun,
runs the command once on rank 0 with those variables removed, setting TLLM_SPAWN_PROXY_PROCESS=1 and tllm_mpi_size
(the ranks); the other ranks wait as MPI workers for an engine that TensorRT-LLM's LLM API starts on them. It takes
tllm_mpi_size from SLURM_NTASKS, else OMPI_COMM_WORLD_SIZE (newer: else WORLD_SIZE), else 1; so under the hydra mpiexec
outside a Slurm job its command is given 1, as under one rank, and PMI_SIZE removed: nothing there tells its ranks
(TensorRT-LLM's LLM API, reading tllm_mpi_size, counts 1 there too), and it goes unrefused.
"""

from __future__ import annotations

import os

from .errors import ConfigError
from .plural import counted

# (variable, launcher): torchrun first, so train's ranks under a torchrun that srun or mpirun started count as torchrun's
LAUNCHERS = (
    ("WORLD_SIZE", "torchrun"),
    ("OMPI_COMM_WORLD_SIZE", "mpirun"),
    ("PMI_SIZE", "mpiexec"),
    ("MV2_COMM_WORLD_SIZE", "mpirun"),
    ("SLURM_STEP_NUM_TASKS", "srun"),
)
# (variable, its launcher's interactive mark): the copies counted by `variable` are one shell where the mark is set
# and this is task 0 (SLURM_PROCID), the one with the terminal
INTERACTIVE = {"SLURM_STEP_NUM_TASKS": "SLURM_PTY_PORT"}


def launched_copies() -> tuple[str, str, int] | None:
    """(variable, launcher, copies) of the first of LAUNCHERS that started this process as one of several copies;
    None for a process started alone (a count of 1, or none)."""
    for var, launcher in LAUNCHERS:
        n = os.environ.get(var, "").strip()
        if n.isdigit() and int(n) > 1 and not _interactive_shell(var):
            return var, launcher, int(n)
    return None


def copies_error(copies: tuple[str, str, int], what: str, why: str) -> ConfigError:
    """The one-line refusal of `what` (a command) started as one of `copies` (launched_copies), `why` saying which
    commands do run as copies."""
    var, launcher, n = copies
    return ConfigError(f"{what} under {launcher} ({var} {n}) would run whole in every copy: start it once, without "
                       f"{launcher}, or unset {var} where a launcher's environment left it ({why})")


def llmapi_ranks() -> int | None:
    """The MPI ranks trtllm-llmapi-launch started, where this process is the command it runs on rank 0 and they are
    more than one; None otherwise."""
    n = os.environ.get("tllm_mpi_size", "").strip()
    if os.environ.get("TLLM_SPAWN_PROXY_PROCESS") == "1" and n.isdigit() and int(n) > 1:
        return int(n)
    return None


def llmapi_error(ranks: int, what: str, instead: str) -> ConfigError:
    """The one-line refusal of `what`, which TensorRT-LLM's LLM API does not run, under trtllm-llmapi-launch's
    `ranks` (llmapi_ranks); `instead` says how to run it, and the variable to unset where a shell was left them
    (a job script exporting what the launcher sets): started without the launcher, nothing else clears them."""
    return ConfigError(f"{what} under trtllm-llmapi-launch (tllm_mpi_size {ranks}) would run in this process alone, "
                       f"leaving {counted(ranks - 1, 'other MPI rank')} waiting for an engine: {instead}, or unset "
                       "TLLM_SPAWN_PROXY_PROCESS where a launcher's environment left it; only `serve --engine-dir` "
                       "serves across them")


def _interactive_shell(var: str) -> bool:
    """Whether this process is the shell (or runs in it) that an interactive step of the launcher counting `var`
    opened on task 0 (INTERACTIVE)."""
    return var in INTERACTIVE and INTERACTIVE[var] in os.environ and os.environ.get("SLURM_PROCID", "0") == "0"
