"""A tokenizer folder read as TensorRT-LLM reads it, whatever transformers is installed here: the drafter learns the
tokens the engine is sent. TensorRT-LLM 1.2 (pinning transformers 4.57) loads every tokenizer with legacy=False
(run.py's load_tokenizer, trtllm-serve's tokenizer_factory), and its fast tokenizers follow the folder's
tokenizer.json as written. transformers 5 reads two kinds of Llama-2-era folders otherwise:

- SentencePiece's tokenizer.model alone (Vicuna): converted at load, in the legacy way where tokenizer_config.json
  names no `legacy` under transformers 4 and not under 5 (`sentencepiece_reading`);
- a tokenizer.json whose normalizer prepends SentencePiece's "▁" (Llama 2's, TinyLlama's): transformers 5's
  LlamaTokenizer builds its own pre-tokenizer from `legacy` instead (`file_pipeline` puts the file's back).

Either way, the text after a special token ("<s>[INST]", "</s>USER:") got other tokens than TensorRT-LLM's.

    tokenizer = AutoTokenizer.from_pretrained(folder, **sentencepiece_reading(folder))
    file_pipeline(tokenizer, folder)
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from .token_deps import is_sentencepiece_only

log = logging.getLogger(__name__)
# what turns text into pieces and pieces into text, which transformers 5 may rebuild; not the post-processor, which
# both 4 and 5 rebuild from tokenizer_config.json's add_bos_token / add_eos_token
PIPELINE = ("normalizer", "pre_tokenizer", "decoder")


def sentencepiece_reading(folder) -> dict:
    """from_pretrained's keyword arguments for the folder's tokenizer: {"legacy": False} for a SentencePiece-only
    folder (`is_sentencepiece_only`), as TensorRT-LLM passes it, whatever its tokenizer_config.json says; else none
    (a tokenizer.json is read as written: `file_pipeline`)."""
    return {"legacy": False} if is_sentencepiece_only(folder) else {}


def file_pipeline(tokenizer, folder) -> None:
    """Puts the folder's tokenizer.json normalizer, pre-tokenizer and decoder back into the loaded tokenizer's backend
    where they differ (transformers 5's LlamaTokenizer replaces a Llama 2 file's Prepend("▁") normalizer with a Metaspace
    pre-tokenizer of its own): the file as transformers 4, and so TensorRT-LLM, reads it. A folder without a
    tokenizer.json the `tokenizers` library reads, or a tokenizer without a backend, is left as loaded."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return
    from tokenizers import Tokenizer

    try:
        written = Tokenizer.from_file(str(Path(folder) / "tokenizer.json"))
    except Exception:  # noqa: BLE001 - none, or one tokenizers cannot parse (its bare Exception): as loaded
        return
    theirs, ours = json.loads(written.to_str()), json.loads(backend.to_str())
    changed = [part for part in PIPELINE if theirs.get(part) != ours.get(part)]
    for part in changed:
        setattr(backend, part, getattr(written, part))
    if changed:
        log.info("%s: the %s of its tokenizer.json kept, as TensorRT-LLM's transformers reads it (this transformers "
                 "built its own)", folder, " and ".join(changed))
