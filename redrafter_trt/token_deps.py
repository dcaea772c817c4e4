"""What transformers needs installed, beyond itself and `tokenizers`, to read a tokenizer folder. A SentencePiece
tokenizer.model without a tokenizer.json (Vicuna v1.3, the Llama 2 generation) is converted at load with
`sentencepiece` and `protobuf` (transformers 5.25 and 4.57 alike); without either, transformers 5 logs a paragraph and
falls back to reading the file as tiktoken's, failing with "`tiktoken` is required", a package that would not help.
How it is then read is `token_reading`'s.
"""

from __future__ import annotations

import importlib.util
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
