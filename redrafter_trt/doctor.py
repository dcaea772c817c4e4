"""`doctor`: what this machine can do. Each check is a pure function of facts gathered elsewhere (versions from
package metadata, torch's device list), so tests feed it any machine they like.

A check is `required` when the CPU path (convert, inspect, run on CPU) needs it; the others gate GPU features (engine
build and run, FP8, tensor parallelism) and say which feature they gate.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import shutil
import subprocess
import sys
from dataclasses import dataclass

from .errors import first_line
from .installed_trtllm import (INSTALL_HINT, MODEL_MAP_SOURCE, QWEN_CONFIG_SOURCE, has_redrafter, installed_source,
                               model_map_lacks, qwen3_lacks, redrafter_architectures, torch_install, trtllm_torch_pin,
                               trtllm_version, unsupported_trtllm, version_tuple)
from .plural import counted
from .token_deps import SENTENCEPIECE_INSTALL, missing_sentencepiece

REDRAFTER_MIN_CC = (8, 0)   # TensorRT-LLM's ReDrafter support matrix: Ampere or newer
# TensorRT-LLM 1.2.x's only ReDrafter test (tests/integration/defs/examples/test_redrafter.py) is @skip_post_blackwell
# (SM 10.0+), and the file skips itself at SM 10.3+ ("TRT workflow tests are not supported on post Blackwell-Ultra
# architecture"; SM = major x 10 + minor, so 12.x too)
REDRAFTER_UNTESTED_CC = (10, 0)
TRT_FLOW_UNTESTED_CC = (10, 3)
FP8_MIN_CC = (8, 9)         # FP8 GEMMs: Ada or Hopper
MIN_PYTHON = (3, 10)


def dotted(version: tuple[int, ...]) -> str:
    return ".".join(map(str, version))


# the Pythons TensorRT-LLM 1.2.x ships wheels for: cp310 and cp312, no cp311 (its setup.py's classifiers; its issue #2481)
TRTLLM_PYTHONS = (3, 10), (3, 12)
SHIPPED = " and ".join(f"Python {dotted(v)}" for v in TRTLLM_PYTHONS)
SHIPPED_EITHER = " or ".join(f"Python {dotted(v)}" for v in TRTLLM_PYTHONS)  # an environment of one of them
ENGINES = "engines (redrafter-trt build, engine runs)"
TP_RUNS = "tensor-parallel engine runs (mpirun -n TP)"

# what the CPU path imports: distribution -> the oldest version it runs with (setup.cfg's install_requires; a test
# keeps the two equal). transformers 4.56: `from_pretrained(..., dtype=)` (4.55 passes it to the model's __init__)
REQUIRED_PACKAGES = {"torch": "2.5", "transformers": "4.56", "safetensors": "0.4", "click": "8.1", "tqdm": None,
                     "pyyaml": None, "scipy": None}


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    required: bool = False      # the CPU path needs it
    feature: str = ""           # for optional checks: what is unavailable without it
    warning: str = ""           # an ok check's caveat: works as far as is known, but untested or unsure


@dataclass(frozen=True)
class Gpu:
    name: str
    capability: tuple[int, int]


@dataclass(frozen=True)
class TorchInfo:
    version: str | None
    cuda: str | None            # torch.version.cuda: None on CPU builds
    gpus: tuple[Gpu, ...] = ()
    error: str | None = None    # why an installed torch does not import (a CUDA library missing, a broken wheel)


# ---- pure checks --------------------------------------------------------------------------------------------------

def check_python(version: tuple[int, ...]) -> Check:
    ok = tuple(version[:2]) >= MIN_PYTHON
    caveat = ("" if tuple(version[:2]) in TRTLLM_PYTHONS or not ok else
              f"fine for everything but engines: TensorRT-LLM 1.2.x ships wheels for {SHIPPED} only")
    return Check("python", ok, dotted(version[:3]), "" if ok else f"use Python {dotted(MIN_PYTHON)} or newer",
                 required=True, warning=caveat)


def trtllm_install(python: tuple[int, ...]) -> str:
    """How to install a TensorRT-LLM with ReDrafter from `python`: INSTALL_HINT where 1.2.x ships a wheel for it, else
    in a new environment of a Python it ships for (its pip finds no 1.2.x wheel)."""
    if tuple(python[:2]) in TRTLLM_PYTHONS:
        return INSTALL_HINT
    newest = dotted(TRTLLM_PYTHONS[-1])
    return (f"in an environment of {SHIPPED_EITHER} (python{newest} -m venv ...; TensorRT-LLM 1.2.x has no wheel for Python "
            f"{dotted(python[:2])}): {INSTALL_HINT}")


def check_package(dist: str, version: str | None, minimum: str | None) -> Check:
    fix = f"pip install '{dist}>={minimum}'" if minimum else f"pip install {dist}"
    if version is None:
        return Check(dist, False, "not installed", fix, required=True)
    try:
        from packaging.version import Version
        # release numbers only: NGC's torch 2.5.0a0+...nv24.10 and a 4.56.0.dev0 build are 2.5 and 4.56
        old = minimum is not None and Version(version).release < Version(minimum).release
    except Exception:  # packaging missing (it comes with transformers) or an odd version string: trust it
        old = False
    return Check(dist, not old, f"{version}, older than {minimum}" if old else version, fix if old else "",
                 required=True)


def check_torch_import(error: str, with_trtllm: bool) -> Check:
    """with_trtllm: a TensorRT-LLM is installed, whose torch pin the reinstall keeps (as check_cuda's advice does)."""
    reinstall = (f"{torch_install(trtllm_torch_pin())} --force-reinstall" if with_trtllm
                 else "pip install --force-reinstall torch")
    return Check("torch import", False, error, f"reinstall torch ({reinstall}); a CUDA build also needs its NVIDIA "
                 "libraries and driver (nvidia-smi)", required=True)


def check_cuda(torch: TorchInfo) -> Check:
    feature = ENGINES
    if torch.version is None:
        return Check("cuda", False, "torch does not import", "fix torch first (above)", feature=feature)
    if torch.cuda is None:
        return Check("cuda", False, "torch is a CPU build", "install a CUDA build of torch on a machine with an NVIDIA "
                     f"GPU ({torch_install(trtllm_torch_pin())}: a torch TensorRT-LLM 1.2.x accepts)", feature=feature)
    if not torch.gpus:
        return Check("cuda", False, f"CUDA {torch.cuda}, but no GPU visible",
                     "check the NVIDIA driver (nvidia-smi) and CUDA_VISIBLE_DEVICES", feature=feature)
    return Check("cuda", True, f"CUDA {torch.cuda}, {counted(len(torch.gpus), 'GPU')}", feature=feature)


def check_gpu(index: int, gpu: Gpu) -> Check:
    cc = f"{gpu.capability[0]}.{gpu.capability[1]}"
    name = f"gpu{index}"
    if gpu.capability < REDRAFTER_MIN_CC:
        return Check(name, False, f"{gpu.name}, compute capability {cc}",
                     "ReDrafter engines need compute capability 8.0 or newer (Ampere, Ada, Hopper; Blackwell "
                     "untested by TensorRT-LLM)",
                     feature=f"{ENGINES} on {name}")
    fp8 = "FP8 ok" if gpu.capability >= FP8_MIN_CC else "no FP8 (needs 8.9+): build bf16/fp16 engines"
    caveat = redrafter_caveat(gpu.capability)
    return Check(name, True, f"{gpu.name}, compute capability {cc}, ReDrafter {'untested' if caveat else 'ok'}, "
                 f"{fp8}", feature=f"{ENGINES} on {name}", warning=caveat)


def redrafter_caveat(capability: tuple[int, int]) -> str:
    """What TensorRT-LLM 1.2.x itself knows of ReDrafter engines at this compute capability ("" where it tests them):
    its support matrix says 8.0+, its tests stop at Blackwell."""
    if capability < REDRAFTER_UNTESTED_CC:
        return ""
    why = ("TensorRT-LLM 1.2.x tests no ReDrafter engine at compute capability 10.0+ (its ReDrafter test is "
           "skip_post_blackwell)")
    if capability >= TRT_FLOW_UNTESTED_CC:
        why += (" and skips its whole TensorRT engine flow at 10.3+ (\"not supported on post Blackwell-Ultra "
                "architecture\")")
    return (f"{why}, though its support matrix says 8.0+: check a small engine's answers (redrafter-trt run "
            "--engine-dir against --checkpoint-dir) before relying on one")


def check_fp8_gpu(gpus: tuple[Gpu, ...]) -> Check:
    ok = any(g.capability >= FP8_MIN_CC for g in gpus)
    return Check("fp8 gpu", ok, "a GPU with compute capability 8.9+" if ok else "no GPU with compute capability 8.9+",
                 "" if ok else "FP8 engines need an Ada or Hopper GPU (L4, L40S, H100, H200); FP8 checkpoints still "
                 "convert and run in the CPU reference runtime", feature="FP8 engines")


def check_trtllm(version: str | None, model_map: str | None, python: tuple[int, ...],
                 qwen_config: str | None = None) -> Check:
    """version: from package metadata (None: none found). model_map: the source of its tensorrt_llm/models/__init__.py
    (`installed_trtllm.model_map_lacks`; None: not visible from this Python). One visible without metadata (a source
    checkout) is judged by its MODEL_MAP alone, as `build` accepts it. qwen_config: the source of its
    models/qwen/config.py (`installed_trtllm.qwen3_lacks`): one that builds no Qwen3 is a warning, as `build` refuses
    Qwen3 checkpoints alone."""
    feature, install = ENGINES, trtllm_install(python)
    if version is None and model_map is None:
        return Check("tensorrt_llm", False, "not installed", install, feature=feature)
    shown = version or "importable, version unknown (no package metadata: a source checkout?)"
    if version is not None and not has_redrafter(version):
        return Check("tensorrt_llm", False, f"{shown}, which {unsupported_trtllm(version)}", install, feature=feature)
    if why := model_map_lacks(model_map, redrafter_architectures()):
        return Check("tensorrt_llm", False, f"{shown}, which {why}", install, feature=feature)
    caveats = [] if version else ["redrafter-trt supports the TensorRT-LLM 1.0 to 1.2.x releases: check the checkout "
                                  "is one"]
    if why := qwen3_lacks(qwen_config):
        caveats.append(f"{why}: Qwen3 checkpoints will not build; for them: {install}")
    return Check("tensorrt_llm", True, f"{shown}, has ReDrafter (explicit_draft_tokens)", feature=feature,
                 warning="; ".join(caveats))


def check_trtllm_import(error: str | None, python: tuple[int, ...]) -> Check:
    """error: why `import tensorrt_llm` (what trtllm-build and every engine run do first) fails here, or None."""
    if error is None:
        return Check("tensorrt_llm import", True, "import tensorrt_llm works", feature=ENGINES)
    return Check("tensorrt_llm import", False, error, "install what it names (TensorRT-LLM's system packages: apt "
                 "install libopenmpi-dev python3-dev), or reinstall: " + trtllm_install(python), feature=ENGINES)


def check_tensorrt(version: str | None, python: tuple[int, ...]) -> Check:
    return Check("tensorrt", version is not None, version or "not installed",
                 "" if version else "installed with tensorrt_llm: " + trtllm_install(python), feature=ENGINES)


def check_modelopt(version: str | None, import_error: str | None = None) -> Check:
    """import_error: why the modules `convert --quantize fp8` imports fail to import (None: they import)."""
    from .quantize import MODELOPT_MIN

    feature = "convert --quantize fp8"
    if version is None:
        return Check("modelopt", False, "not installed", "pip install 'redrafter-trt[fp8]' (nvidia-modelopt)",
                     feature=feature)
    if version_tuple(version) < version_tuple(MODELOPT_MIN):
        return Check("modelopt", False, f"{version}, older than {MODELOPT_MIN}",
                     f"pip install 'nvidia-modelopt>={MODELOPT_MIN}'", feature=feature)
    if import_error is not None:
        return Check("modelopt", False, f"{version}, but it does not import: {import_error}",
                     f"pip install --force-reinstall 'nvidia-modelopt>={MODELOPT_MIN}' (with its dependencies)",
                     feature=feature)
    return Check("modelopt", True, version, feature=feature)


def check_trtllm_build(path: str | None) -> Check:
    return Check("trtllm-build", path is not None, path or "not on PATH",
                 "" if path else "comes with tensorrt_llm; activate its environment", feature=ENGINES)


def check_trtllm_requirements(version: str, requirements: list[str], installed: dict[str, str | None]) -> Check:
    """The installed distributions against what tensorrt_llm `version`'s metadata requires (`requirements`, as
    importlib.metadata.requires gives them; `installed`: name -> version or None). A torch outside 1.2.x's
    `torch>=2.9.1,<=2.10.0a0` breaks its compiled extensions' import; a transformers outside its pin changes what it loads.
    The fix installs torch from PyTorch's CUDA 13 index (`torch_install`), the others as required, extras kept."""
    from packaging.requirements import Requirement

    outside = []
    for line in requirements:
        req = Requirement(line)
        have = installed.get(req.name)
        if have is None or not req.specifier or (req.marker is not None and not req.marker.evaluate({"extra": ""})):
            continue
        if not req.specifier.contains(have, prereleases=True):
            outside.append((req, have))
    if not outside:
        return Check("tensorrt_llm requirements", True, f"the installed versions meet tensorrt_llm {version}'s",
                     feature=ENGINES)
    shown = ", ".join(f"{req.name} {have} (wants {req.specifier})" for req, have in outside)
    wanted = {req.name: f"{req.name}{'[' + ','.join(sorted(req.extras)) + ']' if req.extras else ''}{req.specifier}"
              for req, _ in outside}  # extras kept: nvidia-modelopt[torch]
    torch = [torch_install(wanted.pop("torch"))] if "torch" in wanted else []
    fix = " && ".join(torch + (["pip install " + " ".join(f"'{w}'" for w in wanted.values())] if wanted else []))
    return Check("tensorrt_llm requirements", False, f"outside tensorrt_llm {version}'s: {shown}",
                 f"{fix}, or a fresh environment for tensorrt_llm", feature=ENGINES)


def check_sentencepiece(missing: list[str]) -> Check:
    """sentencepiece and protobuf (`missing`: the pip names not installed), which transformers reads a tokenizer
    folder with when it holds SentencePiece's tokenizer.model and no tokenizer.json (token_deps)."""
    feature = "tokenizers given as SentencePiece's tokenizer.model alone (Vicuna v1.3)"
    if missing:
        return Check("sentencepiece", False, f"{' and '.join(missing)} not installed", SENTENCEPIECE_INSTALL,
                     feature=feature)
    return Check("sentencepiece", True, "sentencepiece and protobuf", feature=feature)


def check_mpi(has_mpi4py: bool, mpirun: str | None, import_error: str | None = None) -> Check:
    """mpirun starts tensor-parallel runs; mpi4py is needed by any engine: `import tensorrt_llm` (trtllm-build's too)
    runs `from mpi4py import MPI` in tensorrt_llm/_utils.py. import_error: why that import fails where mpi4py is
    installed (mpi4py 4's PyPI wheels load the MPI library then: 'cannot load MPI library' without one)."""
    fix = "apt install openmpi-bin libopenmpi-dev && pip install mpi4py"
    missing = " and ".join(what for what, ok in (("mpi4py", has_mpi4py), ("mpirun", mpirun)) if not ok)
    if not has_mpi4py:
        return Check("mpi", False, f"missing {missing} (tensorrt_llm imports mpi4py: no engine builds or runs)", fix,
                     feature=ENGINES)
    if import_error is not None:
        return Check("mpi", False, f"from mpi4py import MPI fails ({import_error}): tensorrt_llm imports it, no engine "
                     "builds or runs", fix, feature=ENGINES)
    if not mpirun:
        return Check("mpi", False, f"missing {missing}", fix, feature=TP_RUNS)
    return Check("mpi", True, f"mpi4py and {mpirun}", feature=TP_RUNS)


def cpu_ready(checks: list[Check]) -> bool:
    return all(c.ok for c in checks if c.required)


def unavailable(checks: list[Check]) -> list[str]:
    seen: list[str] = []
    for c in checks:
        if not c.ok and not c.required and c.feature not in seen:
            seen.append(c.feature)
    return seen


def format_check(check: Check) -> str:
    """`OK`, `WARN` (ok, with a caveat after the arrow) or `FIX` (the fix after the arrow), then the check."""
    mark = "FIX" if not check.ok else "WARN" if check.warning else "OK"
    line = f"{mark:<4} {check.name}: {check.detail}"
    return line if mark == "OK" else f"{line} -> {check.warning if check.ok else check.fix}"


# ---- gathering facts (the only impure part) -----------------------------------------------------------------------

def dist_version(*names: str) -> str | None:
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def trtllm_requirements() -> list[str] | None:
    """tensorrt_llm's declared requirements (None: its metadata is not found, e.g. a source checkout on the path)."""
    for name in ("tensorrt_llm", "tensorrt-llm"):
        try:
            return importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def which(program: str) -> str | None:
    return shutil.which(program)


def has_module(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def torch_info() -> TorchInfo:
    try:
        import torch
    except ModuleNotFoundError as e:
        return TorchInfo(None, None, error=None if e.name == "torch" else first_line(e, type(e).__name__))
    except Exception as e:  # installed but broken: doctor exists for such machines, it must not fail on them
        return TorchInfo(None, None, error=first_line(e, type(e).__name__))
    if getattr(torch, "__file__", None) is None:  # a namespace package: a folder pip uninstall left files in
        where = next(iter(getattr(torch, "__path__", [])), "torch")
        return TorchInfo(None, None, error=f"{where} is a torch folder without __init__.py (left by an uninstall?)")
    gpus: tuple[Gpu, ...] = ()
    try:
        if torch.version.cuda and torch.cuda.is_available():
            gpus = tuple(Gpu(torch.cuda.get_device_name(i), tuple(torch.cuda.get_device_capability(i)))
                         for i in range(torch.cuda.device_count()))
    except Exception:  # a driver torch cannot talk to, a half-installed torch: no GPU visible, and check_cuda says
        gpus = ()      # to check the driver
    return TorchInfo(torch.__version__, torch.version.cuda, gpus)


def modelopt_import_error() -> str | None:
    """Whether the modules `convert --quantize fp8` needs import here (its package metadata alone says nothing of a
    dependency missing or a torch it does not run with): None, or the first line of the error."""
    import warnings

    try:
        with warnings.catch_warnings():  # modelopt warns about untested transformers versions on import
            warnings.simplefilter("ignore")
            importlib.import_module("modelopt.torch.quantization")
            getattr(importlib.import_module("modelopt.torch.export"), "export_tensorrt_llm_checkpoint")
    except Exception as e:  # a broken install must not end doctor
        return first_line(e, type(e).__name__)
    return None


def child_import_error(code: str, timeout: int) -> str | None:
    """Whether `code` (imports) runs in a child Python (None) or the last line of its error: a library that loads
    native code may crash or hang, and must not end doctor."""
    # `python -c` puts the working directory first on sys.path, where this process (a console script) has none: a
    # TensorRT-LLM source checkout there would be imported in place of the installed package doctor reports
    code = f"import sys; sys.path[:1] = [p for p in sys.path[:1] if p]; {code}"  # PYTHONSAFEPATH puts none
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return f"it did not finish in {timeout} s"
    if done.returncode == 0:
        return None
    lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
    return lines[-1] if lines else f"exit status {done.returncode}"


def mpi4py_import_error() -> str | None:
    """Whether `from mpi4py import MPI` works here (None) or the last line of its error, with MPI left uninitialised
    (mpi4py.rc.initialize): MPI_Init may wait for a launcher."""
    return child_import_error("import mpi4py; mpi4py.rc.initialize = mpi4py.rc.finalize = False; from mpi4py import MPI",
                              60)


def trtllm_import_error() -> str | None:
    """Whether `import tensorrt_llm` works here (None) or the last line of its error. Its package metadata says nothing
    of the native libraries the import loads (libpython3.x's shared library, libmpi, TensorRT's, the CUDA driver), whose
    absence fails trtllm-build and every engine run; it takes seconds, so it runs once, in a child Python."""
    return child_import_error("import tensorrt_llm", 300)


def run_checks() -> list[Check]:
    torch, python = torch_info(), tuple(sys.version_info)
    trtllm, model_map = trtllm_version(), installed_source(MODEL_MAP_SOURCE)
    checks = [check_python(python)]
    checks += [check_package(dist, dist_version(dist), minimum) for dist, minimum in REQUIRED_PACKAGES.items()]
    if torch.error:
        checks.append(check_torch_import(torch.error, with_trtllm=trtllm is not None or model_map is not None))
    checks.append(check_cuda(torch))
    checks += [check_gpu(i, g) for i, g in enumerate(torch.gpus)]
    checks.append(check_fp8_gpu(torch.gpus))
    checks.append(check_trtllm(trtllm, model_map, python, installed_source(QWEN_CONFIG_SOURCE)))
    if checks[-1].ok:
        checks.append(check_trtllm_import(trtllm_import_error(), python))
    if trtllm is not None and (requirements := trtllm_requirements()) is not None:
        from packaging.requirements import Requirement

        names = {Requirement(line).name for line in requirements}
        checks.append(check_trtllm_requirements(trtllm, requirements, {n: dist_version(n) for n in names}))
    checks.append(check_tensorrt(dist_version("tensorrt", "tensorrt-cu12", "tensorrt_cu12", "tensorrt-cu13"), python))
    checks.append(check_trtllm_build(which("trtllm-build")))
    modelopt = dist_version("nvidia-modelopt", "nvidia_modelopt")
    checks.append(check_modelopt(modelopt, modelopt_import_error() if modelopt else None))
    has_mpi4py = has_module("mpi4py")
    checks.append(check_mpi(has_mpi4py, which("mpirun"), mpi4py_import_error() if has_mpi4py else None))
    checks.append(check_sentencepiece(missing_sentencepiece()))
    return checks
