"""io's safetensors readers: a file that cannot be opened is one line with the operating system's own reason."""

from __future__ import annotations

import os

import pytest
import torch
from safetensors.torch import save_file

from redrafter_trt.errors import CorruptFileError, TensorError
from redrafter_trt.io import TensorSource, read_metadata


def unreadable(tmp_path, why):
    """A path that cannot be opened for `why`: missing, a folder, under a file, or a file this process may not read."""
    if why == "missing":
        return tmp_path / "model.safetensors"
    if why == "folder":
        (tmp_path / "model.safetensors").mkdir()
        return tmp_path / "model.safetensors"
    if why == "nul byte":  # a path from JSON or YAML may hold one; no file can be named so
        return tmp_path / "model\0.safetensors"
    if why == "under a file":
        (tmp_path / "model").write_bytes(b"")
        return tmp_path / "model" / "model.safetensors"
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"")
    path.chmod(0)
    if os.access(path, os.R_OK):
        pytest.skip("this process reads a file of mode 000 (root)")
    return path


@pytest.mark.parametrize("why, reason", [("missing", "No such file or directory"), ("folder", "Is a directory"),
                                         ("under a file", "Not a directory"), ("mode 000", "Permission denied"),
                                         ("nul byte", "embedded null byte")])
def test_an_unopenable_file_is_named_with_the_os_reason(tmp_path, why, reason):
    """safetensors names every failed open 'No such file or directory' (a folder 'No such device'): a file this
    process may not read, or a path through a file, was reported missing."""
    path = unreadable(tmp_path, why)
    with pytest.raises(TensorError) as e:
        read_metadata(path, "fix it")
    assert str(e.value) == f"{path} cannot be read ({reason}): fix it"


@pytest.mark.parametrize("content", [b"", b"\x05", b"x" * 100], ids=["empty", "short", "garbage"])
def test_a_readable_file_that_is_not_safetensors_is_corrupt(tmp_path, content):
    """The other side of the test above: a file the operating system opens, whose bytes safetensors refuses, stays
    a CorruptFileError (train deletes such a cache file and computes it again), not 'cannot be read'."""
    path = tmp_path / "model.safetensors"
    path.write_bytes(content)
    with pytest.raises(CorruptFileError) as e:
        read_metadata(path, "fix it")
    assert str(e.value).startswith(f"{path} is truncated or not a safetensors file (") and str(e.value).endswith(
        "): fix it")


def test_a_tensor_source_names_its_own_fix(tmp_path):
    """TensorSource.from_files takes the fix to name, as io's readers do (a checkpoint's rank file: re-convert it),
    for a file cut short when opened and for one that fails when a tensor is read; by default a download's fix."""
    path = tmp_path / "rank0.safetensors"
    save_file({"w": torch.ones(4, 4)}, str(path))
    whole = path.read_bytes()
    src = TensorSource.from_files([path], fix="re-convert it")
    path.write_bytes(whole[:-8])
    with pytest.raises(TensorError, match=r"truncated .*: re-convert it$"):
        src.get("w")  # opened only now: the file was cut after its names were read
    with pytest.raises(CorruptFileError, match=r": re-convert it$"):
        TensorSource.from_files([path], fix="re-convert it")
    with pytest.raises(CorruptFileError, match=r": re-download or re-export it$"):
        TensorSource.from_files([path])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("bad", [None, float("nan"), float("inf"), float("-inf")])
def test_all_finite_allocates_no_copy_of_the_tensor(dtype, bad):
    """A review: all_finite's `t.abs().amax()` allocated a copy of `t` (train's float32 embedding and lm_head of an
    8B base: 2 GB more, about 1.4 s each on one core); one pass of aminmax reads it in place (NaN in both ends, -Inf
    in the minimum)."""
    from torch.profiler import ProfilerActivity, profile

    from redrafter_trt.io import all_finite

    t = torch.randn(512, 256).to(dtype)
    if bad is not None:
        t[-1, -1] = bad
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as p:
        finite = all_finite(t)
    assert finite == (bad is None)
    assert max((e.cpu_memory_usage for e in p.events()), default=0) < t.nbytes // 8


@pytest.mark.parametrize("message, said", [
    ("short: one line\nmore", "short: one line"),
    ("Weights only load failed. In PyTorch 2.6, we changed the default value of the `weights_only` argument in "
     "`torch.load` from `False` to `True`.\nmore", "Weights only load failed."),
    ("a " + "word " * 40 + "end. Next.", "a " + "word " * 22 + "word…"),
    ("", "fallback")])
def test_first_line_ends_on_a_word(message, said):
    """A review: first_line cut a long line at 120 characters, mid-word (torch's '... in `torch.load` fr'); a line past
    120 is its first sentence where that fits, else its words up to 120 characters and an ellipsis."""
    from redrafter_trt.errors import first_line

    assert first_line(ValueError(message), "fallback") == said


def test_an_unsafe_training_state_is_refused_as_every_unsafe_pickle(tmp_path):
    """read_state's refusal of a state torch.load(weights_only=True) refuses quoted torch's first line cut mid-word,
    then its first sentence ('Weights only load failed.'), and called the file truncated: it names the global torch
    refused, as convert's refusal of a pickle does (io.unsafe_pickle)."""
    import os
    from types import SimpleNamespace

    from redrafter_trt.errors import CorruptFileError
    from redrafter_trt.train.state import read_state

    class Evil:
        def __reduce__(self):
            return (os.system, ("true",))

    path = tmp_path / "state.pt"
    torch.save({"step": 1, "x": Evil()}, path)
    with pytest.raises(CorruptFileError) as e:
        read_state(SimpleNamespace(state_path=path))
    assert str(e.value) == (f"{path} is a pickle that would run code or load non-tensor objects (torch.load("
                            f"weights_only=True) refuses its global {os.system.__module__}.system): start over without "
                            f"--resume (the answers and hidden states cached so far are reused)")
