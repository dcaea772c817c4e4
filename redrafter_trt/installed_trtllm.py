"""The installed TensorRT-LLM, read without importing it (its import loads CUDA): its version from package metadata
(`trtllm_version`), whether it has the ReDrafter of this toolkit's checkpoints (REDRAFTER_TRTLLM: the 1.0 to 1.2.x
releases, `has_redrafter`), what its trtllm-build builds (its MODEL_MAP's and QWenConfig's source, read by
`installed_source`: `model_map_lacks`, `qwen3_lacks`, `check_trtllm_builds`), and its commands on PATH
(`require_trtllm_tool`); INSTALL_HINT says how to install one that has ReDrafter. `build`, `serve --engine-dir`,
`run --engine-dir` and `doctor` ask it.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import logging
import re
import shutil
from pathlib import Path

from .errors import DependencyError
from .plural import or_list

log = logging.getLogger(__name__)

# ReDrafter's checkpoint format (ReDrafterForLLaMALM / ReDrafterForQWenLM) ships in the TensorRT-LLM 1.0 to 1.2.x
# releases (1.2.1, April 2026, the newest in December 2026; no 1.3 release, 1.4 pre-releases have no TensorRT backend).
REDRAFTER_TRTLLM = (1, 0), (1, 3)
TORCH_CUDA_INDEX = "https://download.pytorch.org/whl/cu130"  # 1.2.x wheels are built on CUDA 13 (its install page)
TRTLLM_PINS = Path(__file__).resolve().parent / "data" / "trtllm-1.2-pins.txt"  # what TensorRT-LLM 1.2.x pins


def trtllm_torch_pin() -> str:
    """The torch requirement TensorRT-LLM 1.2.x pins ("torch>=2.9.1,<=2.10.0a0"), from the pins file shipped in the package: a
    newer torch would be swapped out again when TensorRT-LLM is installed."""
    return next(line.split("#")[0].strip() for line in TRTLLM_PINS.read_text().splitlines()
                if line.startswith("torch"))


def torch_install(spec: str) -> str:
    """The pip command for a torch meeting `spec` built on CUDA 13 as TensorRT-LLM 1.2.x's are (its install page):
    PyPI's torch 2.9 is a CUDA 12.8 build. Its own command, since --index-url is every package's index."""
    return f"pip install '{spec}' --index-url {TORCH_CUDA_INDEX}"


# torch first, from PyTorch's CUDA 13 index, as 1.2.x's install page does: its pip alone lands a CUDA 12.8 torch
INSTALL_HINT = (f"{torch_install(trtllm_torch_pin())}, then pip install 'tensorrt_llm==1.2.*' --extra-index-url "
                f"https://pypi.nvidia.com (ReDrafter ships in the TensorRT-LLM 1.0 to 1.2.x releases, on a Linux "
                f"machine with an NVIDIA GPU)")


def trtllm_version() -> str | None:
    """Installed TensorRT-LLM version from package metadata (nothing is imported), or None."""
    for dist in ("tensorrt_llm", "tensorrt-llm"):
        try:
            return importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def version_tuple(version: str) -> tuple[int, int]:
    parts = version.split(".")
    try:
        return int(parts[0]), int("".join(ch for ch in parts[1] if ch.isdigit()) or 0)
    except (IndexError, ValueError):
        return 0, 0


def has_redrafter(version: str) -> bool:
    low, high = REDRAFTER_TRTLLM
    return low <= version_tuple(version) < high


def unsupported_trtllm(version: str) -> str:
    """Why a TensorRT-LLM outside 1.0 to 1.2.x is refused (the words after "TensorRT-LLM VERSION"). The 1.3 line's
    early pre-releases (1.3.0rc0-rc15) predate the removal of its TensorRT engine backend (July 2026, PRs #15918,
    #16369, before 1.3.0rc22; their source not read, untested here), and 1.4 has none."""
    if version_tuple(version) < REDRAFTER_TRTLLM[0]:
        return "has the older ReDrafter format (one ReDrafterForCausalLM, Llama bases only), not this checkpoint's"
    return ("is past the 1.2.x line redrafter-trt supports (from 1.3.0rc22 on there is no TensorRT engine backend: "
            "no trtllm-build, no ReDrafter)")


def installed_source(relative: str) -> str | None:
    """The text of a module of the installed TensorRT-LLM (`relative` to its package folder), read, not imported (its
    import loads CUDA); None where no tensorrt_llm is visible from this Python, or the file cannot be read."""
    spec = importlib.util.find_spec("tensorrt_llm")
    if spec is None or not spec.submodule_search_locations:
        return None
    try:
        return (Path(next(iter(spec.submodule_search_locations))) / relative).read_text()
    except (OSError, UnicodeError):
        return None


# the installed TensorRT-LLM's module that names the architectures it builds (`model_map_lacks`)
MODEL_MAP_SOURCE = "models/__init__.py"


def redrafter_architectures() -> tuple[str, ...]:
    """The `architecture`s this toolkit's checkpoints name (convert's and the two-step flow's)."""
    from .registry import REGISTRY, TRTLLM_BASES

    return tuple(sorted({spec.redrafter_architecture for spec in REGISTRY.values()} | set(TRTLLM_BASES.values())))


def model_map_lacks(model_map: str | None, architectures) -> str | None:
    """Which of `architectures` the installed TensorRT-LLM's MODEL_MAP lacks, as the words after "TensorRT-LLM
    VERSION", or None (also where `model_map` is None: no source visible from this Python). model_map: the source of
    its tensorrt_llm/models/__init__.py (`installed_source(MODEL_MAP_SOURCE)`), whose MODEL_MAP names what trtllm-build
    builds, `'ReDrafterForLLaMALM': ReDrafterForLLaMALM,` (its `__all__` lists the classes, no colon; trtllm-build
    asserts `architecture in MODEL_MAP` after seconds of imports). The 1.0.0 release candidates before PR #4875 name
    ReDrafterForCausalLM alone: a version in 1.0 to 1.2.x says not enough."""
    if model_map is None:
        return None
    missing = [a for a in architectures if not re.search(rf"""['"]{re.escape(a)}['"]\s*:""", model_map)]
    if not missing:
        return None
    return (f"has no {or_list(missing)} in its MODEL_MAP (tensorrt_llm/models/__init__.py), the ReDrafter "
            f"architecture{'s' if len(missing) > 1 else ''} of redrafter-trt's checkpoints: it predates PR #4875, "
            "which added them (as the 0.x releases and the early 1.0.0 release candidates do)")


# the installed TensorRT-LLM's module whose QWenConfig names the qwen_types it builds (`qwen3_lacks`)
QWEN_CONFIG_SOURCE = "models/qwen/config.py"


def qwen3_lacks(qwen_config: str | None) -> str | None:
    """Why the installed TensorRT-LLM builds no Qwen3, as the words after "TensorRT-LLM VERSION", or None (also where
    `qwen_config` is None: no source visible from this Python). qwen_config: the source of its
    tensorrt_llm/models/qwen/config.py (`installed_source(QWEN_CONFIG_SOURCE)`), whose QWenConfig knows qwen_type
    qwen3 since PR #5650 (July 2025; an older trtllm-build stops on an assertion after its imports)."""
    if qwen_config is None or "'qwen3'" in qwen_config or '"qwen3"' in qwen_config:
        return None
    return "builds no Qwen3 (its QWenConfig has no qwen_type qwen3, added by PR #5650 in July 2025)"


def check_trtllm_builds(config: dict) -> None:
    """A DependencyError where the installed TensorRT-LLM cannot build this checkpoint: its MODEL_MAP lacks the
    checkpoint's architecture (`model_map_lacks`), or its base is a Qwen3 it builds none of (`qwen3_lacks`)."""
    from .layout import qk_norm

    installed = " ".join(filter(None, ("TensorRT-LLM", trtllm_version())))  # a source checkout has no version
    if why := model_map_lacks(installed_source(MODEL_MAP_SOURCE), [config["architecture"]]):
        raise DependencyError(f"{installed} {why}: {INSTALL_HINT}")
    if qk_norm(config) and (why := qwen3_lacks(installed_source(QWEN_CONFIG_SOURCE))):
        raise DependencyError(f"{installed} {why}: {INSTALL_HINT}")


def require_trtllm_tool(tool: str) -> str:
    """Path of a TensorRT-LLM command (`trtllm-build`, `trtllm-serve`), or a DependencyError saying how to install a
    TensorRT-LLM that has ReDrafter."""
    path = shutil.which(tool)
    version = trtllm_version()
    if path is None:
        found = (f"TensorRT-LLM {version} is installed but {tool} is not on PATH" if version
                 else f"TensorRT-LLM is not installed ({tool} not on PATH, tensorrt_llm not importable)")
        raise DependencyError(f"{found}: {INSTALL_HINT}; or use --dry-run to print the command")
    if version is not None and not has_redrafter(version):
        raise DependencyError(f"TensorRT-LLM {version} {unsupported_trtllm(version)}: {INSTALL_HINT}")
    if version is None and importlib.util.find_spec("tensorrt_llm") is None:
        log.info("%s found at %s; its TensorRT-LLM version is unknown from this Python", tool, path)
    return path
