"""What transformers needs installed, beyond itself and `tokenizers`, to read a tokenizer folder. A SentencePiece
tokenizer.model without a tokenizer.json (Vicuna v1.3, the Llama 2 generation) is converted at load with
`sentencepiece` and `protobuf` (transformers 5.25 and 4.57 alike); without either, transformers 5 logs a paragraph and
falls back to reading the file as tiktoken's, failing with "`tiktoken` is required", a package that would not help.
Such a folder converted at load is read in the `legacy` way its tokenizer_config.json names, and one naming none
(Vicuna's) is read in transformers 4's way (`sentencepiece_reading`).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

# module -> its pip name: what reads a SentencePiece tokenizer.model
SENTENCEPIECE_PACKAGES = {"sentencepiece": "sentencepiece", "google.protobuf": "protobuf"}
SENTENCEPIECE_INSTALL = f"pip install {' '.join(SENTENCEPIECE_PACKAGES.values())}"


def installed(module: str) -> bool:
    """Whether `module` (dotted: `google.protobuf`) can be imported, without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # its parent package (`google`) is missing
        return False


def missing_sentencepiece() -> list[str]:
    """The pip names of SENTENCEPIECE_PACKAGES not installed here."""
    return [name for module, name in SENTENCEPIECE_PACKAGES.items() if not installed(module)]


def is_sentencepiece_only(folder) -> bool:
    """Whether the folder's tokenizer is a SentencePiece tokenizer.model with no tokenizer.json beside it. The model
    is a protobuf whose first field is a piece (byte 0x0A); Llama 3's tokenizer.model is tiktoken's text (base64)."""
    folder = Path(folder)
    if (folder / "tokenizer.json").is_file():
        return False
    try:
        with open(folder / "tokenizer.model", "rb") as f:
            return f.read(1) == b"\n"
    except OSError:
        return False


def sentencepiece_refusal(folder) -> str | None:
    """Why transformers cannot read the folder's tokenizer here, with the fix, or None: a SentencePiece-only folder
    (`is_sentencepiece_only`) with `sentencepiece` or `protobuf` missing."""
    missing = missing_sentencepiece() if is_sentencepiece_only(folder) else []
    if not missing:
        return None
    return (f"the tokenizer in {folder} is a SentencePiece tokenizer.model without a tokenizer.json, which transformers "
            f"reads with sentencepiece and protobuf ({' and '.join(missing)} not installed): run `{SENTENCEPIECE_INSTALL}`")


def sentencepiece_reading(folder) -> dict:
    """from_pretrained's keyword arguments for the folder's tokenizer: {"legacy": True} for a SentencePiece-only
    folder (`is_sentencepiece_only`) whose tokenizer_config.json sets no `legacy`, else none. Unset, transformers 4
    (TensorRT-LLM 1.2 pins 4.57, so trtllm-serve) reads it as legacy, transformers 5 as not, and the two tokenize
    the text after a special token differently: Vicuna's "<s>A chat" gives "<s>", "▁A" in 4 (as its FastChat
    training tokenized it), "<s>", "A" in 5, and "</s>USER:" loses its "▁" likewise. A drafter trained under one
    and served under the other learnt prompts the base never sees."""
    if not is_sentencepiece_only(folder):
        return {}
    try:
        config = json.loads((Path(folder) / "tokenizer_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}  # no config that reads: transformers says why, or reads the model alone
    return {"legacy": True} if isinstance(config, dict) and "legacy" not in config else {}
