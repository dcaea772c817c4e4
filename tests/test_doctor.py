"""`doctor`: each check on made-up machines, and the command's exit code and lines."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from redrafter_trt import doctor, installed_trtllm
from redrafter_trt.cli import main
from redrafter_trt.doctor import Gpu, TorchInfo
from test_build import MODEL_MAP, fake_trtllm_package

# TensorRT-LLM 1.2.x's install page puts its CUDA 13 torch first: pip alone lands a CUDA 12.8 one (a review)
CUDA_TORCH = "pip install 'torch>=2.9.1,<=2.10.0a0' --index-url https://download.pytorch.org/whl/cu130"

A100, L4, H100, T4 = (Gpu("NVIDIA A100-SXM4-80GB", (8, 0)), Gpu("NVIDIA L4", (8, 9)),
                      Gpu("NVIDIA H100 80GB HBM3", (9, 0)), Gpu("Tesla T4", (7, 5)))


@pytest.mark.parametrize("gpu, ok, fp8", [(A100, True, False), (L4, True, True), (H100, True, True), (T4, False, False)])
def test_gpu_capability(gpu, ok, fp8):
    check = doctor.check_gpu(0, gpu)
    assert check.ok is ok
    assert gpu.name in check.detail
    if ok:
        assert ("FP8 ok" in check.detail) is fp8
    else:
        assert "8.0 or newer" in check.fix
    assert doctor.check_fp8_gpu((gpu,)).ok is fp8


B200, GB300, RTX5090 = (Gpu("NVIDIA B200", (10, 0)), Gpu("NVIDIA GB300", (10, 3)),
                        Gpu("NVIDIA GeForce RTX 5090", (12, 0)))


@pytest.mark.parametrize("gpu, says", [
    (H100, None),
    (B200, "its ReDrafter test is skip_post_blackwell"),
    (GB300, "skips its whole TensorRT engine flow at 10.3+"),
    (RTX5090, "skips its whole TensorRT engine flow at 10.3+"),
])
def test_blackwell_and_newer_are_a_warning_not_a_pass(gpu, says):
    """A review: doctor said "ReDrafter ok" at any compute capability 8.0+, though TensorRT-LLM 1.2.x's only ReDrafter
    test (tests/integration/defs/examples/test_redrafter.py) is skipped at SM 10.0+ and its whole TensorRT flow at
    10.3+: a warning there, not a failure (its support matrix still says 8.0+, and nothing known fails)."""
    check = doctor.check_gpu(0, gpu)
    line = doctor.format_check(check)
    assert check.ok, line  # engines stay listed as available
    if says is None:
        assert line.startswith("OK ") and "ReDrafter ok" in line, line
    else:
        assert line.startswith("WARN ") and "ReDrafter untested" in line and says in line, line
        assert "ReDrafter ok" not in line and "compute capability 10.0" in line, line


def test_cuda_states():
    assert not doctor.check_cuda(TorchInfo("2.4", None)).ok
    assert "no GPU visible" in doctor.check_cuda(TorchInfo("2.4", "12.4")).detail
    assert doctor.check_cuda(TorchInfo("2.4", "12.4", (H100,))).ok
    assert doctor.check_cuda(TorchInfo("2.4", "12.4", (H100,))).detail == "CUDA 12.4, 1 GPU"
    assert doctor.check_cuda(TorchInfo("2.4", "12.4", (H100, H100))).detail == "CUDA 12.4, 2 GPUs"


def test_a_cpu_torch_is_told_a_cuda_torch_tensorrt_llm_accepts(monkeypatch):
    """A review: doctor advised the newest torch from the cu128 index, which TensorRT-LLM 1.2.x (torch 2.9.1 up to
    2.10.0a0) would swap out again when installed; the advice names the pins file's torch requirement."""
    import re

    from packaging.requirements import Requirement

    pins = installed_trtllm.TRTLLM_PINS.read_text()
    spec = next(Requirement(line) for line in pins.splitlines() if line.startswith("torch"))
    fix = doctor.check_cuda(TorchInfo("2.13.0", None)).fix
    # 1.2.x's wheels are built on CUDA 13: its install page installs torch from cu130 (cu128's is PyPI's default)
    advised = Requirement(re.search(r"pip install '([^']+)' --index-url \S+/cu130", fix)[1])
    assert advised.name == "torch" and advised.specifier == spec.specifier, fix
    assert "2.9.1" in advised.specifier and "2.13.0" not in advised.specifier


def test_the_pins_file_ships_in_the_package():
    """A review: the pins file lived in scripts/, outside the package, so a wheel install's doctor had no torch pin
    to advise; it is package data now (setup.cfg's `data/*`)."""
    package = Path(doctor.__file__).parent
    assert installed_trtllm.TRTLLM_PINS.parent == package / "data" and installed_trtllm.TRTLLM_PINS.is_file()
    assert doctor.trtllm_torch_pin().startswith("torch")


def test_the_pins_are_the_released_1_2_x_ones():
    """A review: the pins file held a 1.2.0 release candidate's requirements (torch<=2.9.0, transformers 4.57.1),
    while TensorRT-LLM's releases 1.2.0 and 1.2.1 depend on PyTorch 2.9.1 and transformers 4.57.3 (their release
    notes; 1.2.1's requirements.txt: torch>=2.9.1,<=2.10.0a0): CI's second job ran under an environment no release
    installs, and doctor advised a torch the release swaps out."""
    from packaging.requirements import Requirement

    pins = {r.name: r.specifier for r in (Requirement(line) for line in installed_trtllm.TRTLLM_PINS.read_text().splitlines()
                                          if line.strip() and not line.startswith("#"))}
    assert "2.9.1" in pins["torch"] and "2.9.0" not in pins["torch"] and "2.10.0" not in pins["torch"]
    assert "4.57.3" in pins["transformers"] and "4.57.1" not in pins["transformers"]
    assert "0.37.0" in pins["nvidia-modelopt"] and "1.26.4" in pins["numpy"]


@pytest.mark.parametrize("version, ok", [(None, False), ("0.21.0", False), ("1.0.0", True), ("1.2.0", True),
                                         ("1.3.0rc1", False)])
def test_trtllm_versions(version, ok):
    check = doctor.check_trtllm(version, None, (3, 12, 3))
    assert check.ok is ok
    if not ok:
        assert "tensorrt_llm==1.2.*" in check.fix and "1.0 to 1.2.x" in check.fix
    if version == "1.3.0rc1":  # the 1.3 line's early pre-releases had ReDrafter: past the supported line, not without it
        assert "no ReDrafter in this checkpoint format" not in check.detail and "past the 1.2.x line" in check.detail


@pytest.mark.parametrize("model_map, missing", [
    (MODEL_MAP["1.0.0rc"], "ReDrafterForLLaMALM or ReDrafterForQWenLM"),
    # `__all__` names both classes; MODEL_MAP, what trtllm-build reads, one
    (MODEL_MAP["1.2"].replace("    'ReDrafterForQWenLM': ReDrafterForQWenLM,\n", ""), "ReDrafterForQWenLM"),
    (MODEL_MAP["1.2"], None),
])
def test_a_tensorrt_llm_without_the_checkpoints_architectures_is_named(tmp_path, monkeypatch, model_map, missing):
    """TensorRT-LLM's 1.0.0 release candidates before PR #4875 have tensorrt_llm/models/redrafter, but not the
    architectures redrafter-trt's checkpoints name: doctor reads the installed MODEL_MAP (tensorrt_llm is not imported)
    and says which it lacks, and to install 1.2.x."""

    fake_machine(monkeypatch, TorchInfo("2.6.0", "12.6", (H100,)), "1.0.0rc4", CPU_DISTS)
    monkeypatch.setattr(doctor, "installed_source", installed_trtllm.installed_source)  # the fake package's
    fake_trtllm_package(tmp_path / "site", monkeypatch, {"models/__init__.py": model_map,
                                                         "models/redrafter/__init__.py": ""})
    (check,) = [c for c in doctor.run_checks() if c.name == "tensorrt_llm"]
    if missing is None:
        assert check.ok, check
    else:
        assert not check.ok and check.fix == installed_trtllm.INSTALL_HINT, check
        assert check.detail.startswith(f"1.0.0rc4, which has no {missing} in its MODEL_MAP") and "PR #4875" in \
            check.detail, check.detail


@pytest.mark.parametrize("model_map, line", [
    (MODEL_MAP["1.2"], "WARN tensorrt_llm: importable, version unknown (no package metadata: a source checkout?), has "
                       "ReDrafter (explicit_draft_tokens) -> redrafter-trt supports the TensorRT-LLM 1.0 to 1.2.x "
                       "releases: check the checkout is one"),
    (MODEL_MAP["1.0.0rc"], "FIX  tensorrt_llm: importable, version unknown (no package metadata: a source checkout?), "
                           "which has no ReDrafterForLLaMALM or ReDrafterForQWenLM in its MODEL_MAP"),
], ids=["1.2", "1.0.0rc"])
def test_a_tensorrt_llm_without_package_metadata_is_importable_version_unknown(tmp_path, monkeypatch, model_map, line):
    """A review: doctor called a TensorRT-LLM importable without package metadata (a source checkout on the path)
    "not installed", while build accepts it (version unknown); doctor says so now and reads its MODEL_MAP."""

    fake_machine(monkeypatch, TorchInfo("2.6.0", "12.6", (H100,)), None, CPU_DISTS)
    monkeypatch.setattr(doctor, "installed_source", installed_trtllm.installed_source)  # the fake package's
    fake_trtllm_package(tmp_path / "site", monkeypatch, {"models/__init__.py": model_map})
    result = CliRunner().invoke(main, ["doctor"])
    assert result.exit_code == 0, result.output
    assert line in result.output, result.output
    assert "not installed" not in result.output.split("tensorrt_llm:", 1)[1].splitlines()[0]


@pytest.mark.parametrize("trtllm", [None, "1.2.0"])
def test_a_broken_torch_is_reinstalled_at_tensorrt_llms_pin_where_it_is_installed(monkeypatch, trtllm):
    """A review: the fix for a torch that does not import was an unpinned `pip install --force-reinstall torch`,
    the newest, which TensorRT-LLM 1.2.x does not import under; with it installed the fix is the cuda line's torch."""
    fake_machine(monkeypatch, TorchInfo(None, None, error="libcudnn.so.9: cannot open shared object file"), trtllm,
                 CPU_DISTS)
    result = CliRunner().invoke(main, ["doctor"])
    (line,) = [line for line in result.output.splitlines() if line.startswith("FIX  torch import:")]
    reinstall = (doctor.torch_install(doctor.trtllm_torch_pin()) + " --force-reinstall" if trtllm
                 else "pip install --force-reinstall torch")
    assert line.startswith(f"FIX  torch import: libcudnn.so.9: cannot open shared object file -> reinstall torch "
                           f"({reinstall}); a CUDA build also needs"), line


@pytest.mark.parametrize("mpi4py, mpirun, ok", [(True, "/usr/bin/mpirun", True), (False, "/usr/bin/mpirun", False),
                                                (True, None, False)])
def test_mpi(mpi4py, mpirun, ok):
    check = doctor.check_mpi(mpi4py, mpirun)
    assert check.ok is ok and (ok or "mpi4py" in check.fix)


def test_python_version():
    assert doctor.check_python((3, 11, 7)).ok
    assert not doctor.check_python((3, 9, 18)).ok


@pytest.mark.parametrize("python", [(3, 11, 7), (3, 13, 1), (3, 14, 0)])
def test_a_python_tensorrt_llm_has_no_wheel_for_is_a_warning_and_its_install_a_new_environment(monkeypatch, python):
    """A review: doctor said `OK python` on 3.13+, and its fix for TensorRT-LLM was a pip command that cannot work
    there: TensorRT-LLM 1.2.x ships wheels for Python 3.10 and 3.12 only (no cp311: its setup.py's classifiers, and a
    second review found 3.11 called one it ships for). The python line warns (the CPU path is fine), and the install
    advice says to make an environment of a Python it ships for first."""
    fake_machine(monkeypatch, TorchInfo("2.6.0", "12.6", (H100,)), None, CPU_DISTS, python)
    result = CliRunner().invoke(main, ["doctor"])
    assert result.exit_code == 0, result.output
    shown = ".".join(map(str, python))
    assert f"WARN python: {shown} -> fine for everything but engines: TensorRT-LLM 1.2.x ships wheels for Python " \
           "3.10 and Python 3.12 only" in result.output, result.output
    (trtllm,) = [line for line in result.output.splitlines() if line.startswith("FIX  tensorrt_llm:")]
    assert trtllm.startswith(f"FIX  tensorrt_llm: not installed -> in an environment of Python 3.10 or "
                             f"Python 3.12 (python3.12 -m venv ...; TensorRT-LLM 1.2.x has no wheel for Python {shown[:4]}): {CUDA_TORCH}, then "
                             "pip install 'tensorrt_llm==1.2.*'"), trtllm
    assert "in an environment of Python 3.10 or Python 3.12" in doctor.check_tensorrt(None, python).fix


@pytest.mark.parametrize("python", [(3, 10, 0), (3, 12, 7)])
def test_a_python_tensorrt_llm_ships_for_is_ok_and_its_install_plain(python):
    assert doctor.format_check(doctor.check_python(python)) == f"OK   python: {'.'.join(map(str, python))}"
    assert doctor.check_trtllm(None, None, python).fix == doctor.INSTALL_HINT
    assert doctor.check_tensorrt(None, python).fix == "installed with tensorrt_llm: " + doctor.INSTALL_HINT


def test_lines_say_ok_or_fix():
    assert doctor.format_check(doctor.check_mpi(True, "/usr/bin/mpirun")).startswith("OK ")
    line = doctor.format_check(doctor.check_modelopt(None))
    assert line.startswith("FIX ") and "redrafter-trt[fp8]" in line


def fake_machine(monkeypatch, torch: TorchInfo, trtllm: str | None, dists: dict[str, str],
                 python: tuple[int, ...] = (3, 12, 3)):
    """python: the interpreter's version doctor sees (one TensorRT-LLM ships for, whatever runs the tests)."""
    import sys
    from types import SimpleNamespace

    monkeypatch.setattr(doctor, "sys", SimpleNamespace(version_info=python, executable=sys.executable))
    monkeypatch.setattr(doctor, "torch_info", lambda: torch)
    monkeypatch.setattr(doctor, "trtllm_version", lambda: trtllm)
    monkeypatch.setattr(doctor, "installed_source", lambda relative: None)
    monkeypatch.setattr(doctor, "dist_version", lambda *names: next((dists[n] for n in names if n in dists), None))
    monkeypatch.setattr(doctor, "which", lambda name: f"/usr/bin/{name}" if trtllm else None)
    monkeypatch.setattr(doctor, "has_module", lambda name: bool(trtllm))
    monkeypatch.setattr(doctor, "modelopt_import_error", lambda: None)
    monkeypatch.setattr(doctor, "mpi4py_import_error", lambda: None)
    monkeypatch.setattr(doctor, "trtllm_import_error", lambda: None)
    monkeypatch.setattr(doctor, "missing_sentencepiece", lambda: [] if trtllm else ["sentencepiece", "protobuf"])


CPU_DISTS = {"torch": "2.6.0", "transformers": "4.56.0", "safetensors": "0.4.5", "click": "8.1.7", "pyyaml": "6.0",
             "tqdm": "4.66.0", "scipy": "1.11.0"}


def test_required_packages_are_setup_cfgs():
    """doctor checks what the package installs with, at the same minimum versions."""
    import configparser
    from pathlib import Path

    from packaging.requirements import Requirement

    cfg = configparser.ConfigParser()
    cfg.read(Path(__file__).resolve().parents[1] / "setup.cfg")
    reqs = [Requirement(line) for line in cfg["options"]["install_requires"].split("\n") if line.strip()]
    assert {r.name: min((str(s.version) for s in r.specifier if s.operator == ">="), default=None) for r in reqs} \
        == doctor.REQUIRED_PACKAGES


def test_modelopt_minimum_is_setup_cfgs():
    """setup.cfg's fp8 and test extras ask for the nvidia-modelopt that quantize.py and doctor require (it said
    0.27; 0.33 under transformers >= 4.56 quantises no KV cache), and doctor flags an older one."""
    import configparser
    from pathlib import Path

    from packaging.requirements import Requirement

    from redrafter_trt.quantize import MODELOPT_MIN

    cfg = configparser.ConfigParser()
    cfg.read(Path(__file__).resolve().parents[1] / "setup.cfg")
    for extra in ("fp8", "test"):
        reqs = [Requirement(line) for line in cfg["options.extras_require"][extra].split("\n") if line.strip()]
        (modelopt,) = [r for r in reqs if r.name == "nvidia-modelopt"]
        assert [str(s.version) for s in modelopt.specifier if s.operator == ">="] == [MODELOPT_MIN], extra
    assert doctor.format_check(doctor.check_modelopt("0.33.1")).startswith(
        f"FIX  modelopt: 0.33.1, older than {MODELOPT_MIN} -> pip install 'nvidia-modelopt>={MODELOPT_MIN}'")
    assert doctor.check_modelopt(MODELOPT_MIN + ".0").ok and doctor.check_modelopt("0.47.0").ok


def test_transformers_minimum_takes_from_pretrained_dtype():
    """The package loads models with `from_pretrained(..., dtype=)`, which transformers has since 4.56 (4.55 passes
    it on to the model's __init__: a TypeError traceback in train, bench and the quickstart); setup.cfg said 4.45."""
    import re
    from pathlib import Path

    from packaging.version import Version

    package = Path(doctor.__file__).parent
    uses = [f for f in package.rglob("*.py") if re.search(r"from_pretrained\([^)]*\bdtype=", f.read_text())]
    assert uses
    assert Version(doctor.REQUIRED_PACKAGES["transformers"]) >= Version("4.56")


@pytest.mark.parametrize("dists, line", [
    ({k: v for k, v in CPU_DISTS.items() if k != "tqdm"}, "FIX  tqdm: not installed -> pip install tqdm"),
    ({**CPU_DISTS, "transformers": "4.55.4"}, "FIX  transformers: 4.55.4, older than 4.56 -> pip install 'transformers>=4.56'"),
])
def test_a_missing_or_old_required_package_is_not_ready(monkeypatch, dists, line):
    fake_machine(monkeypatch, TorchInfo("2.6.0+cpu", None), None, dists)
    result = CliRunner().invoke(main, ["doctor"])
    assert line in result.output, result.output
    assert "CPU path (convert, inspect, run on CPU): ready" not in result.output


def test_cpu_machine_is_ready_and_lists_what_is_unavailable(monkeypatch):
    fake_machine(monkeypatch, TorchInfo("2.6.0+cpu", None), None, CPU_DISTS)
    result = CliRunner().invoke(main, ["doctor"])
    assert result.exit_code == 0, result.output
    assert "OK   torch: 2.6.0" in result.output
    assert f"FIX  tensorrt_llm: not installed -> {CUDA_TORCH}, then pip install 'tensorrt_llm==1.2.*'" in result.output
    assert "CPU path (convert, inspect, run on CPU): ready" in result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("unavailable here:") and "engines" in last and "FP8 engines" in last
    assert "FIX  mpi: missing mpi4py and mpirun" in result.output


@pytest.mark.parametrize("missing", [["protobuf"], []])
def test_sentencepiece_is_checked_for_the_tokenizers_that_need_it(monkeypatch, missing):
    """A review: a SentencePiece-only tokenizer folder (Vicuna v1.3) needs sentencepiece and protobuf, which
    transformers reads its tokenizer.model with; doctor said nothing of them."""
    fake_machine(monkeypatch, TorchInfo("2.6.0", "12.6", (H100,)), "1.2.0",
                 {**CPU_DISTS, "tensorrt": "10.11.0", "nvidia-modelopt": "0.37.0"})
    monkeypatch.setattr(doctor, "missing_sentencepiece", lambda: missing)
    result = CliRunner().invoke(main, ["doctor"])
    assert result.exit_code == 0, result.output
    if missing:
        assert "FIX  sentencepiece: protobuf not installed -> pip install sentencepiece protobuf" in result.output
        last = result.output.strip().splitlines()[-1]
        assert last == "unavailable here: tokenizers given as SentencePiece's tokenizer.model alone (Vicuna v1.3)"
    else:
        assert "OK   sentencepiece: sentencepiece and protobuf" in result.output
        assert result.output.strip().endswith("GPU features: all available")


def test_gpu_machine_with_everything(monkeypatch):
    fake_machine(monkeypatch, TorchInfo("2.6.0", "12.6", (H100, H100)), "1.2.0",
                 {**CPU_DISTS, "tensorrt": "10.11.0", "nvidia-modelopt": "0.37.0"})
    result = CliRunner().invoke(main, ["doctor"])
    assert result.exit_code == 0, result.output
    assert "FIX" not in result.output
    assert "gpu1: NVIDIA H100 80GB HBM3, compute capability 9.0" in result.output
    assert result.output.strip().endswith("GPU features: all available")


def test_a_warning_is_not_followed_by_all_available(monkeypatch):
    """A review: a Blackwell GPU's WARN line was followed by "GPU features: all available", as if nothing were said;
    the last line points at the caveat."""
    fake_machine(monkeypatch, TorchInfo("2.6.0", "12.8", (B200,)), "1.2.0",
                 {**CPU_DISTS, "tensorrt": "10.11.0", "nvidia-modelopt": "0.37.0"})
    result = CliRunner().invoke(main, ["doctor"])
    assert result.exit_code == 0 and "WARN " in result.output, result.output
    assert result.output.strip().endswith("GPU features: all available, with the caveats marked WARN above")


def test_missing_required_package_exits_2(monkeypatch):
    dists = {k: v for k, v in CPU_DISTS.items() if k != "transformers"}
    fake_machine(monkeypatch, TorchInfo("2.6.0+cpu", None), None, dists)
    result = CliRunner().invoke(main, ["doctor"])
    assert result.exit_code == 2
    assert "FIX  transformers: not installed -> pip install 'transformers>=4.56'" in result.output
    assert "NOT ready" in result.output


def test_a_torch_that_does_not_import_is_not_ready(monkeypatch):
    """A review: a torch whose import fails (a CUDA library missing) printed `error: ...: check the path, its
    permissions and the free disk space` and no check at all; the package metadata alone said torch was fine."""
    import importlib.abc
    import sys

    class Broken(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name == "torch":
                raise OSError("libcudnn.so.9: cannot open shared object file")

    monkeypatch.delitem(sys.modules, "torch")
    monkeypatch.setattr(sys, "meta_path", [Broken(), *sys.meta_path])
    info = doctor.torch_info()
    assert info.version is None and info.error == "libcudnn.so.9: cannot open shared object file"
    fake_machine(monkeypatch, info, None, CPU_DISTS)
    result = CliRunner().invoke(main, ["doctor"])
    assert result.exit_code == 2 and "NOT ready" in result.output
    assert "FIX  torch import: libcudnn.so.9" in result.output and "FIX  cuda: torch does not import" in result.output


def test_a_modelopt_that_does_not_import_is_not_ok(monkeypatch):
    """A review: doctor read modelopt from its package metadata alone, so a modelopt whose import fails (simulated:
    None in sys.modules) was `OK   modelopt: 0.47.0` while `convert --quantize fp8` refused to start."""
    import sys

    real = doctor.modelopt_import_error
    fake_machine(monkeypatch, TorchInfo("2.6.0+cpu", None), None, {**CPU_DISTS, "nvidia-modelopt": "0.47.0"})
    monkeypatch.setattr(doctor, "modelopt_import_error", real)
    # every module the FP8 path imports, as the suite may have imported them before (then "modelopt" alone is not
    # looked up again)
    for name in ("modelopt", "modelopt.torch", "modelopt.torch.quantization", "modelopt.torch.export"):
        monkeypatch.setitem(sys.modules, name, None)
    result = CliRunner().invoke(main, ["doctor"])
    assert result.exit_code == 0, result.output  # the CPU path does not need it
    assert "FIX  modelopt: 0.47.0, but it does not import: " in result.output, result.output
    assert "convert --quantize fp8" in result.output.strip().splitlines()[-1]


@pytest.mark.parametrize("error", [RuntimeError("CUDA error: unknown error"),
                                   AttributeError("module 'torch._C' has no attribute '_cuda_getDeviceCount'")])
def test_a_gpu_torch_cannot_query_is_no_gpu(monkeypatch, error):
    """A review: a RuntimeError from the driver while listing GPUs ended doctor in a traceback; a later one: a broken
    torch may raise other errors there (an AttributeError of a half-installed one)."""
    import torch

    def broken(i):
        raise error

    monkeypatch.setattr(torch.version, "cuda", "12.4")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_name", broken)
    info = doctor.torch_info()
    assert info.gpus == () and "no GPU visible" in doctor.check_cuda(info).detail


def test_real_machine_runs():
    """On this machine (whatever it has) the command runs and every line is OK, WARN, FIX or the summary."""
    result = CliRunner().invoke(main, ["doctor"])
    assert result.exit_code in (0, 2)
    for line in result.output.strip().splitlines():
        assert line.split()[0] in ("OK", "WARN", "FIX", "CPU", "unavailable", "GPU"), line


def test_prerelease_builds_of_the_minimum_are_enough(monkeypatch):
    """NGC's torch (in TensorRT-LLM's images) and transformers from git carry pre-release versions."""
    fake_machine(monkeypatch, TorchInfo("2.5.0a0", None), None,
                 {**CPU_DISTS, "torch": "2.5.0a0+e000cf0ad9.nv24.10", "transformers": "4.56.0.dev0"})
    result = CliRunner().invoke(main, ["doctor"])
    assert "OK   torch: 2.5.0a0+e000cf0ad9.nv24.10" in result.output and "FIX  transformers" not in result.output


def test_without_mpi4py_no_engine_builds_or_runs(monkeypatch):
    """`import tensorrt_llm` (trtllm-build's too) runs `from mpi4py import MPI`: a GPU machine with TensorRT-LLM but
    no mpi4py builds and runs no engine at all. doctor said only tensor-parallel runs were unavailable there."""
    fake_machine(monkeypatch, TorchInfo("2.6.0", "12.6", (H100,)), "1.2.0",
                 {**CPU_DISTS, "tensorrt": "10.11.0", "nvidia-modelopt": "0.37.0"})
    monkeypatch.setattr(doctor, "has_module", lambda name: name != "mpi4py")
    result = CliRunner().invoke(main, ["doctor"])
    assert result.exit_code == 0, result.output
    assert "FIX  mpi: missing mpi4py (tensorrt_llm imports mpi4py: no engine builds or runs)" in result.output
    last = result.output.strip().splitlines()[-1]
    assert last == "unavailable here: engines (redrafter-trt build, engine runs)", last


TRTLLM_12_REQUIRES = ["torch<=2.9.0,>=2.9.0a0", "transformers==4.57.1", "nvidia-modelopt[torch]~=0.37.0",
                      "numpy<2", "pynvml; extra == 'devel'", "flashinfer-python==0.3.1; python_version < '3.0'"]


@pytest.mark.parametrize("dists, outside, fix", [
    ({"torch": "2.9.0+cu128", "transformers": "4.57.1", "nvidia-modelopt": "0.37.0", "numpy": "1.26.4"}, None, None),
    ({"torch": "2.13.0+cpu", "transformers": "5.0.0", "nvidia-modelopt": "0.37.0", "pynvml": "1.0"},
     "torch 2.13.0+cpu (wants <=2.9.0,>=2.9.0a0), transformers 5.0.0 (wants ==4.57.1)",
     "pip install 'torch<=2.9.0,>=2.9.0a0' --index-url https://download.pytorch.org/whl/cu130 && "
     "pip install 'transformers==4.57.1'"),
    ({"torch": "2.9.0+cu130", "transformers": "4.57.1", "nvidia-modelopt": "0.35.0", "numpy": "2.1.0"},
     "nvidia-modelopt 0.35.0 (wants ~=0.37.0), numpy 2.1.0 (wants <2)", "pip install 'nvidia-modelopt[torch]~=0.37.0' "
     "'numpy<2'"),
    ({"torch": "2.13.0+cpu", "transformers": "4.57.1", "nvidia-modelopt": "0.37.0", "numpy": "1.26.4"},
     "torch 2.13.0+cpu (wants <=2.9.0,>=2.9.0a0)",
     "pip install 'torch<=2.9.0,>=2.9.0a0' --index-url https://download.pytorch.org/whl/cu130"),
], ids=["met", "torch-and-transformers", "modelopt-extra-kept", "torch-alone"])
def test_packages_outside_tensorrt_llms_requirements_are_named(monkeypatch, dists, outside, fix):
    """A review: with TensorRT-LLM 1.2 installed beside a newer torch (pip install -U torch after it), doctor said every
    engine check was OK, though 1.2.x's compiled extensions do not import under another torch; the requirements
    its metadata declares are checked now (extras and other Pythons' markers left out). A later review: the fix
    installed PyPI's torch, a CUDA 12.8 build, where the cuda line says PyTorch's CUDA 13 index (TensorRT-LLM's install
    page), and dropped nvidia-modelopt's [torch] extra."""
    fake_machine(monkeypatch, TorchInfo(dists["torch"], "12.8", (H100,)), "1.2.0",
                 {**CPU_DISTS, "tensorrt": "10.13.0", **dists})
    monkeypatch.setattr(doctor, "trtllm_requirements", lambda: TRTLLM_12_REQUIRES)
    result = CliRunner().invoke(main, ["doctor"])
    if outside is None:
        assert "OK   tensorrt_llm requirements: the installed versions meet tensorrt_llm 1.2.0's" in result.output
        assert result.output.strip().endswith("GPU features: all available"), result.output
    else:
        assert f"FIX  tensorrt_llm requirements: outside tensorrt_llm 1.2.0's: {outside} -> {fix}, or a fresh " \
               "environment" in result.output
        assert "engines" in result.output.strip().splitlines()[-1]


def fake_mpi4py(folder: Path, mpi_module: str) -> Path:
    """An mpi4py package in `folder` whose MPI module is `mpi_module`'s text."""
    (folder / "mpi4py").mkdir()
    (folder / "mpi4py" / "__init__.py").write_text("class rc:\n    initialize = True\n    finalize = True\n")
    (folder / "mpi4py" / "MPI.py").write_text(mpi_module)
    return folder


def test_mpi4py_that_does_not_import_builds_no_engine(monkeypatch, tmp_path):
    """mpi4py 4's PyPI wheels load the MPI library at `from mpi4py import MPI`, which `import tensorrt_llm` runs: with
    no MPI library there it raises, and no engine builds or runs. doctor looked for the package alone and said
    only mpirun was missing (tensor-parallel runs)."""
    broken = fake_mpi4py(tmp_path, "raise RuntimeError('cannot load MPI library')\n")
    monkeypatch.setenv("PYTHONPATH", str(broken))
    error = doctor.mpi4py_import_error()
    assert error == "RuntimeError: cannot load MPI library", error
    fake_machine(monkeypatch, TorchInfo("2.6.0", "12.6", (H100,)), "1.2.0",
                 {**CPU_DISTS, "tensorrt": "10.11.0", "nvidia-modelopt": "0.37.0"})
    monkeypatch.setattr(doctor, "mpi4py_import_error", lambda: error)
    result = CliRunner().invoke(main, ["doctor"])
    assert "FIX  mpi: from mpi4py import MPI fails (RuntimeError: cannot load MPI library): tensorrt_llm imports " \
           "it, no engine builds or runs -> apt install openmpi-bin" in result.output, result.output
    last = result.output.strip().splitlines()[-1]
    assert last == "unavailable here: engines (redrafter-trt build, engine runs)", last


def test_mpi4py_imports_without_initialising_mpi(monkeypatch, tmp_path):
    """The import is tried with MPI_Init left off (it may wait for a launcher), and a working one is OK."""
    fine = fake_mpi4py(tmp_path, "import mpi4py\nassert not mpi4py.rc.initialize and not mpi4py.rc.finalize\n")
    monkeypatch.setenv("PYTHONPATH", str(fine))
    assert doctor.mpi4py_import_error() is None
    assert doctor.check_mpi(True, "/usr/bin/mpirun", None).ok


def test_tensorrt_llm_that_does_not_import_builds_no_engine(monkeypatch, tmp_path):
    """TensorRT-LLM's wheel installs without the native libraries its import loads (libpython3.x's shared library,
    libmpi, a recent enough driver): every check from package metadata said OK, and trtllm-build failed at its first
    line. The import is tried now, in a child Python."""
    (tmp_path / "tensorrt_llm").mkdir()
    (tmp_path / "tensorrt_llm" / "__init__.py").write_text(
        "raise ImportError('libpython3.12.so.1.0: cannot open shared object file: No such file or directory')\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))
    error = doctor.trtllm_import_error()
    assert error == "ImportError: libpython3.12.so.1.0: cannot open shared object file: No such file or directory"
    fake_machine(monkeypatch, TorchInfo("2.6.0", "12.6", (H100,)), "1.2.0",
                 {**CPU_DISTS, "tensorrt": "10.11.0", "nvidia-modelopt": "0.37.0"})
    monkeypatch.setattr(doctor, "trtllm_import_error", lambda: error)
    result = CliRunner().invoke(main, ["doctor"])
    assert result.exit_code == 0, result.output
    assert f"FIX  tensorrt_llm import: {error} -> install what it names" in result.output, result.output
    last = result.output.strip().splitlines()[-1]
    assert last == "unavailable here: engines (redrafter-trt build, engine runs)", last


def test_tensorrt_llm_import_is_tried_only_for_a_usable_install(monkeypatch):
    fake_machine(monkeypatch, TorchInfo("2.6.0", "12.6", (H100,)), "0.12.0", {**CPU_DISTS, "tensorrt": "10.11.0"})
    monkeypatch.setattr(doctor, "trtllm_import_error", lambda: pytest.fail("imported a TensorRT-LLM without ReDrafter"))
    result = CliRunner().invoke(main, ["doctor"])
    assert "tensorrt_llm import" not in result.output, result.output
    fake_machine(monkeypatch, TorchInfo("2.6.0", "12.6", (H100,)), "1.2.0", {**CPU_DISTS, "tensorrt": "10.11.0"})
    assert "OK   tensorrt_llm import: import tensorrt_llm works" in CliRunner().invoke(main, ["doctor"]).output


def test_the_import_is_tried_on_the_installed_package_not_a_folder_in_the_working_directory(monkeypatch, tmp_path):
    """`python -c` imports from the working directory first: doctor run inside a TensorRT-LLM source checkout (its
    tensorrt_llm/ folder, not built) judged that folder's import, not the installed package doctor reports."""
    (tmp_path / "tensorrt_llm").mkdir()
    (tmp_path / "tensorrt_llm" / "__init__.py").write_text("raise ImportError('the source checkout')\n")
    monkeypatch.chdir(tmp_path)
    assert doctor.child_import_error("import tensorrt_llm", 60) == "ModuleNotFoundError: No module named 'tensorrt_llm'"


def test_a_torch_folder_without_init_is_a_torch_problem(monkeypatch, tmp_path):
    """A review: a torch/ folder left without __init__.py (pip uninstall leaves folders of files it did not install)
    imports as a namespace package, whose `torch.version` raised AttributeError: doctor ended in a traceback."""
    import importlib.machinery
    import importlib.util
    import sys

    spec = importlib.machinery.ModuleSpec("torch", None, is_package=True)
    spec.submodule_search_locations = [str(tmp_path / "torch")]
    monkeypatch.setitem(sys.modules, "torch", importlib.util.module_from_spec(spec))
    real = doctor.torch_info
    fake_machine(monkeypatch, TorchInfo(None, None), None, CPU_DISTS)
    monkeypatch.setattr(doctor, "torch_info", real)
    result = CliRunner().invoke(main, ["doctor"])
    assert result.exit_code == 2 and result.exception is not None and isinstance(result.exception, SystemExit), \
        result.output
    (line,) = [line for line in result.output.splitlines() if line.startswith("FIX  torch import:")]
    assert f"{tmp_path / 'torch'} is a torch folder without __init__.py (left by an uninstall?)" in line, line
    assert "FIX  cuda: torch does not import" in result.output


QWEN_CONFIG = "valid_types = ('qwen', 'qwen2'"


@pytest.mark.parametrize("knows", [True, False])
def test_a_tensorrt_llm_that_builds_no_qwen3_is_a_warning(tmp_path, monkeypatch, knows):
    """A review: `build` refuses a Qwen3 checkpoint where the installed TensorRT-LLM's QWenConfig has no qwen_type
    qwen3 (the 1.0.0 release candidates before PR #5650), while doctor read its MODEL_MAP alone and said OK. It warns
    now (Llama and Qwen2 checkpoints still build), by the same test as `build`."""

    fake_machine(monkeypatch, TorchInfo("2.6.0", "12.6", (H100,)), "1.0.0rc4",
                 {**CPU_DISTS, "tensorrt": "10.11.0", "nvidia-modelopt": "0.37.0"})
    monkeypatch.setattr(doctor, "installed_source", installed_trtllm.installed_source)  # the fake package's
    fake_trtllm_package(tmp_path / "site", monkeypatch, {
        "models/__init__.py": MODEL_MAP["1.2"],
        "models/qwen/config.py": QWEN_CONFIG + (", 'qwen3')" if knows else ")")})
    result = CliRunner().invoke(main, ["doctor"])
    assert result.exit_code == 0, result.output
    (line,) = [line for line in result.output.splitlines() if " tensorrt_llm: " in line]
    if knows:
        assert line == "OK   tensorrt_llm: 1.0.0rc4, has ReDrafter (explicit_draft_tokens)", line
        assert result.output.strip().endswith("GPU features: all available")
    else:
        assert line == ("WARN tensorrt_llm: 1.0.0rc4, has ReDrafter (explicit_draft_tokens) -> builds no Qwen3 (its "
                        "QWenConfig has no qwen_type qwen3, added by PR #5650 in July 2025): Qwen3 checkpoints will not "
                        f"build; for them: {installed_trtllm.INSTALL_HINT}"), line
        assert result.output.strip().endswith("GPU features: all available, with the caveats marked WARN above")


def test_cpu_machine_names_each_unavailable_feature_once(monkeypatch):
    """tensorrt_llm, tensorrt, trtllm-build and mpi all gate engines: the last line names engines once."""
    fake_machine(monkeypatch, TorchInfo("2.6.0+cpu", None), None, CPU_DISTS)
    last = CliRunner().invoke(main, ["doctor"]).output.strip().splitlines()[-1]
    assert last == ("unavailable here: engines (redrafter-trt build, engine runs); FP8 engines; convert --quantize fp8; "
                    "tokenizers given as SentencePiece's tokenizer.model alone (Vicuna v1.3)"), last


def test_without_mpirun_only_tensor_parallel_runs_are_unavailable(monkeypatch):
    fake_machine(monkeypatch, TorchInfo("2.6.0", "12.6", (H100,)), "1.2.0",
                 {**CPU_DISTS, "tensorrt": "10.11.0", "nvidia-modelopt": "0.37.0"})
    monkeypatch.setattr(doctor, "which", lambda name: None if name == "mpirun" else f"/usr/bin/{name}")
    result = CliRunner().invoke(main, ["doctor"])
    assert result.exit_code == 0 and "FIX  mpi: missing mpirun" in result.output, result.output
    last = result.output.strip().splitlines()[-1]
    assert last == "unavailable here: tensor-parallel engine runs (mpirun -n TP)", last


def test_a_torch_whose_dependency_is_missing_is_not_ready(monkeypatch):
    """`import torch` failing on a module of its own (filelock, sympy) is a broken torch, not a missing one."""
    import importlib.abc
    import sys

    class Missing(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path, target=None):
            if name == "torch":
                raise ModuleNotFoundError("No module named 'filelock'", name="filelock")

    monkeypatch.delitem(sys.modules, "torch")
    monkeypatch.setattr(sys, "meta_path", [Missing(), *sys.meta_path])
    info = doctor.torch_info()
    assert info.version is None and info.error == "No module named 'filelock'", info
    fake_machine(monkeypatch, info, None, CPU_DISTS)
    result = CliRunner().invoke(main, ["doctor"])
    assert result.exit_code == 2 and "FIX  torch import: No module named 'filelock'" in result.output, result.output


def test_a_child_import_that_hangs_or_dies_is_named():
    assert doctor.child_import_error("import time; time.sleep(5)", 1) == "it did not finish in 1 s"
    assert doctor.child_import_error("import os; os.kill(os.getpid(), 9)", 60) == "exit status -9"


def test_a_requirement_whose_marker_applies_here_is_checked():
    check = doctor.check_trtllm_requirements("1.2.0", ["numpy<2; python_version >= '3.0'"], {"numpy": "2.1.0"})
    assert not check.ok and "numpy 2.1.0 (wants <2)" in check.detail, check


def test_a_prerelease_torch_within_the_pin_meets_it():
    """NGC's containers carry pre-release torch builds: one within TensorRT-LLM 1.2.x's pin meets it."""
    pin = doctor.trtllm_torch_pin()
    assert doctor.check_trtllm_requirements("1.2.1", [pin], {"torch": "2.10.0a0+nv25.11"}).ok, pin


def test_a_version_past_1_2_is_refused_whatever_its_model_map():
    check = doctor.check_trtllm("1.3.0rc1", MODEL_MAP["1.2"], (3, 12, 3))
    assert not check.ok and "past the 1.2.x line" in check.detail, check


def test_one_fp8_gpu_among_others_is_enough():
    assert doctor.check_fp8_gpu((T4, H100)).ok and not doctor.check_fp8_gpu((T4, A100)).ok


def test_not_ready_goes_to_stderr(monkeypatch):
    dists = {k: v for k, v in CPU_DISTS.items() if k != "transformers"}
    fake_machine(monkeypatch, TorchInfo("2.6.0+cpu", None), None, dists)
    result = CliRunner().invoke(main, ["doctor"])
    assert result.exit_code == 2
    assert "NOT ready" in result.stderr and "NOT ready" not in result.stdout, result.output
