"""`load(compile=True)`: the base's layers compiled by TorchInductor decode exactly what transformers' greedy
`generate` does (batches whose rows accept different drafts, plain steps, Llama and Qwen2 with its qkv bias, Llama
with attention and MLP biases), and compute the eager forward's hidden states over a tree; where it cannot run it is
a one-line error."""

from __future__ import annotations

import dataclasses
import errno

import pytest
import torch
from torch._dynamo.utils import counters

from redrafter_trt import runtime as rt
from redrafter_trt.errors import ConfigError
from test_runtime_support import one_thread, LookupDrafter, checkpoint, eos_of, hf_greedy  # noqa: F401

PROMPTS = [[1, 17, 33, 5], [1, 250, 99, 3, 3, 42, 7, 128, 64], [1, 200]]

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture()
def fresh_inductor(tmp_path):
    """Compiling as in a new process, for a test that needs inductor to compile: dynamo's compiled kinds of
    `LayerStack.forward` dropped (past its recompile_limit, 8 kinds, the 4 `load(compile=True)` of the tests above,
    dynamo runs the layers eagerly and compiles nothing: nothing was left to fail) and no cache, on disk or in memory."""
    from torch._inductor.utils import fresh_cache

    torch._dynamo.reset()
    with fresh_cache(dir=str(tmp_path)):
        yield
    torch._dynamo.reset()


@pytest.mark.long
@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_qwen2", "tiny_qwen3", "tiny_llama_bias"])
def test_compiled_layers_decode_exactly(request, fixture, tiny_drafter, capfd, tmp_path, monkeypatch):
    base = request.getfixturevalue(fixture)
    ckpt = checkpoint(base, tiny_drafter, 1, num_beams=3, draft_len=4)
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))  # autotuning runs, not a cache's answer
    compiled, eager = rt.load(ckpt, compile=True), rt.load(ckpt)
    assert compiled.base.compiled is not None and eager.base.compiled is None
    assert "AUTOTUNE" not in capfd.readouterr().err  # inductor's timing tables flooded bench --compile's stderr

    # one forward over a tree after a cached prompt: the same hidden states as the eager layers
    tree = torch.tensor([[[1, 0, 0, 0], [1, 1, 0, 0], [1, 0, 1, 0], [1, 0, 1, 1]]], dtype=torch.bool)
    hidden = []
    for model in (compiled, eager):
        cache = model.base.new_cache(1, 32)
        prompt = torch.tensor([PROMPTS[1]])
        with torch.no_grad():
            model.base.forward(prompt, torch.arange(9)[None], torch.ones(1, 9, 9, dtype=torch.bool).tril(), cache)
            cache.lens += 9
            hidden.append(model.base.forward(torch.tensor([[7, 8, 9, 10]]), torch.tensor([[9, 10, 10, 11]]), tree,
                                             cache))
    torch.testing.assert_close(hidden[0], hidden[1], atol=2e-5, rtol=1e-5)

    refs = [hf_greedy(base, p, 30) for p in PROMPTS]
    drafter = LookupDrafter([p + r for p, r in zip(PROMPTS, refs)], 256, seed=1)
    model = dataclasses.replace(compiled, drafter=drafter)
    eos = eos_of(base)
    res = rt.generate(model, PROMPTS, 30, eos_token_id=eos)
    assert res.output_ids == refs
    assert res.mean_tokens_per_step > 1.5 and len({tuple(a) for a in res.accepted}) > 1
    assert rt.generate(model, [PROMPTS[0]], 30, eos_token_id=eos, use_draft=False).output_ids[0] == refs[0]

    # a one-token sequence teacher-forced (forward_logits; prompt_logprobs: a server's echo of a one-token prompt)
    # runs on the kinds compiled at load: its forward attended over 1 cache slot, which compiled a third kind
    graphs = counters["stats"]["unique_graphs"]
    torch.testing.assert_close(rt.forward_logits(compiled, [5]), rt.forward_logits(eager, [5]), atol=1e-4, rtol=1e-4)
    assert rt.prompt_logprobs(compiled, [[5]], 1) == [[]]
    assert counters["stats"]["unique_graphs"] == graphs


def test_compile_refuses_what_it_cannot_run(tiny_llama, tiny_drafter):
    with pytest.raises(ConfigError, match="^compile=True .*one CPU rank in float32.*bfloat16.*pass compile=False$"):
        rt.load(checkpoint(tiny_llama, tiny_drafter, 1), dtype="bfloat16", compile=True)


def test_check_compile_follows_the_dtype_the_runtime_loads_in(tiny_llama, tiny_drafter):
    """check_compile refuses before loading; it must judge the dtype actually loaded (an override included)."""
    cfg = rt.RuntimeConfig.from_dir(checkpoint(tiny_llama, tiny_drafter, 1, dtype="bfloat16"))
    with pytest.raises(ConfigError, match="^compile=True .*bfloat16.*pass compile=False, or load it with "
                                          "dtype='float32'$"):  # the Python API's words, and the dtype that compiles
        rt.check_compile(cfg, True)
    with pytest.raises(ConfigError, match="^--compile .*bfloat16.*drop --compile, or reconvert with --dtype float32$"):
        rt.check_compile(cfg, True, spelling=rt.RUN)
    rt.check_compile(cfg, True, "cpu", torch.float32)  # loaded in float32: compilable
    rt.check_compile(cfg, False, "cuda")  # nothing to check without --compile
    with pytest.raises(ConfigError, match="^--compile .*cuda.*drop --compile$"):  # the commands' (run's)
        rt.check_compile(cfg, True, "cuda", "float32", spelling=rt.RUN)


def test_compile_without_a_cpp_compiler_is_one_line(tiny_llama, tiny_drafter):
    """TorchInductor generates C++: on a laptop without a compiler (a Mac without Xcode's command line tools, Windows
    without MSVC) --compile was a 30-line InductorError traceback after the weights were read. It is refused first."""
    import torch._inductor.config as inductor_config

    ckpt = checkpoint(tiny_llama, tiny_drafter, 1)
    with inductor_config.patch({"cpp.cxx": ("/nonexistent/c++",)}):  # torch's own: monkeypatch >= 9.2 deletes it after
        with pytest.raises(ConfigError, match=r"^--compile needs a C\+\+ compiler.*/nonexistent/c\+\+.*drop --compile$"):
            rt.check_compile(rt.RuntimeConfig.from_dir(ckpt), True, spelling=rt.RUN)
        with pytest.raises(ConfigError, match=r"^compile=True needs a C\+\+ compiler.*pass compile=False$"):
            rt.load(ckpt, compile=True)
    rt.check_compile(rt.RuntimeConfig.from_dir(ckpt), False)  # nothing to check without --compile


def test_a_cpp_compiler_that_cannot_build_inductors_code_is_one_line(tiny_llama, tiny_drafter, tmp_path,
                                                                    fresh_inductor):
    """A compiler that is there but cannot build inductor's OpenMP code (macOS's clang without Homebrew's libomp:
    'omp.h' file not found) was 40 lines of autotuning errors and an InductorError traceback; it is one line naming
    the compiler's own error."""
    import stat

    import torch._inductor.config as inductor_config

    cxx = tmp_path / "c++"  # answers --version as the real one, fails every build
    cxx.write_text('#!/bin/sh\ncase " $* " in *" --version "*|*" -v "*|*" -dumpversion "*|*" -E "*) exec c++ "$@";; '
                   "esac\necho \"fatal error: 'omp.h' file not found\" >&2\nexit 1\n")
    cxx.chmod(cxx.stat().st_mode | stat.S_IXUSR)
    with inductor_config.patch({"cpp.cxx": (str(cxx),)}), \
            pytest.raises(ConfigError, match=r"TorchInductor could not compile the base's layers \(.*'omp.h' file not "
                                             r"found\).*brew install libomp.*drop --compile \(Python: "
                                             r"compile=False\)$"):
        rt.load(checkpoint(tiny_llama, tiny_drafter, 1), compile=True)


@pytest.mark.parametrize("failure", [OSError(errno.ENOSPC, "No space left on device"), RuntimeError("a bug")],
                         ids=["disk-full", "inductor-bug"])
def test_only_a_compiler_that_cannot_build_is_blamed_on_the_compiler(tiny_llama, tiny_drafter, monkeypatch, failure,
                                                                     fresh_inductor):
    """A compile that fails for another reason than the C++ compiler is not blamed on it (or on OpenMP): a full disk
    under inductor's cache (or TMPDIR) is the OSError it is, which the command line says in one line with the free disk
    space to check; any other failure is inductor's own error (a bug to report), not a ConfigError."""
    import torch._inductor.codecache as codecache

    def fail(*args, **kwargs):
        raise failure

    monkeypatch.setattr(codecache, "write_atomic", fail)
    with pytest.raises(Exception) as raised:
        rt.load(checkpoint(tiny_llama, tiny_drafter, 1), compile=True)
    assert not isinstance(raised.value, ConfigError), raised.value
    if isinstance(failure, OSError):
        assert raised.value is failure


def test_the_runtime_imports_inductor_only_to_compile(tiny_llama, tiny_drafter):
    """A review: importing redrafter_trt.runtime imported TorchInductor (about 2.5 s more) and set
    TORCHINDUCTOR_CACHE_DIR in os.environ, which every subprocess then inherited, though nothing was compiled. Only
    compile=True (and check_compile's check of a C++ compiler) imports it now."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = str(Path(__file__).resolve().parents[1])
    code = ("import os, sys\nfrom redrafter_trt import runtime as rt\n"
            "from redrafter_trt.runtime.ranks import LocalRanks\nmodel = rt.load(sys.argv[1])\n"
            "rt.check_compile(model.config, False)\n"
            "rt.generate(model, [[1, 2, 3]], 4, temperature=0.5)\n"
            "print('torch._inductor' in sys.modules, 'TORCHINDUCTOR_CACHE_DIR' in os.environ)\n"
            "rt.check_compile(model.config, True)\n"
            "print('torch._inductor' in sys.modules)\n")
    env = {k: v for k, v in os.environ.items() if k != "TORCHINDUCTOR_CACHE_DIR"} | {"PYTHONPATH": root}
    done = subprocess.run([sys.executable, "-c", code, str(checkpoint(tiny_llama, tiny_drafter, 1))],
                          capture_output=True, text=True, timeout=120, cwd=root, env=env)
    assert done.stdout.splitlines() == ["False False", "True"], done.stdout + done.stderr[-2000:]
