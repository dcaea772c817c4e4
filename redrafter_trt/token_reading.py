"""A tokenizer folder read as TensorRT-LLM reads it, whatever transformers is installed here: the drafter learns the
tokens the engine is sent. TensorRT-LLM 1.2 (pinning transformers 4.57) loads every tokenizer with legacy=False
(run.py's load_tokenizer, trtllm-serve's tokenizer_factory), and its fast tokenizers follow the folder's
tokenizer.json as written. transformers 5 reads two kinds of Llama-2-era folders otherwise:

- SentencePiece's tokenizer.model alone (Vicuna): converted at load, in the legacy way where tokenizer_config.json
  names no `legacy` under transformers 4 and not under 5 (`sentencepiece_reading`);
- a tokenizer.json whose normalizer prepends SentencePiece's "▁" (Llama 2's, TinyLlama's): transformers 5's
  LlamaTokenizer builds its own pre-tokenizer from `legacy` instead (`file_pipeline` puts the file's back).

Either way, the text after a special token ("<s>[INST]", "</s>USER:") got other tokens than TensorRT-LLM's.
And one whose tokenizer_config.json names LlamaTokenizer(Fast) over a byte-level BPE tokenizer.json
(DeepSeek-R1-Distill-Qwen's, -Llama's): transformers 4.57's LlamaTokenizerFast rebuilds the post-processor from add_bos_token /
add_eos_token, transformers 5 loads TokenizersBackend, which keeps the file's: the BOS was added or not otherwise
(`class_post_processor`). Measured over tiny folders saved by 4.57 as Llama 2/3, Mistral v0.1/v0.3, Qwen2.5/3 ship:
the rest read alike (decode aside: 4.57 applies clean_up_tokenization_spaces, which 5 ignores for BPE).

    tokenizer = AutoTokenizer.from_pretrained(folder, **sentencepiece_reading(folder))
    file_pipeline(tokenizer, folder)
    class_post_processor(tokenizer, folder)
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from .token_deps import is_sentencepiece_only

log = logging.getLogger(__name__)
# what turns text into pieces and pieces into text, which transformers 5 may rebuild; the post-processor is the
# class's (`class_post_processor`)
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
    changed = [part for part in PIPELINE if _state(getattr(written, part)) != _state(getattr(backend, part))]
    for part in changed:
        setattr(backend, part, getattr(written, part))
    if changed:
        log.info("%s: the %s of its tokenizer.json kept, as TensorRT-LLM's transformers reads it (this transformers "
                 "built its own)", folder, " and ".join(changed))


def _state(component) -> dict | None:
    """A tokenizer component (normalizer, pre-tokenizer, decoder) as its tokenizer.json entry; None: none. Read part
    by part: the whole tokenizers' JSON (SmolLM2's vocabulary and merges) took 0.27 of a 0.54 s load to compare."""
    return None if component is None else json.loads(component.__getstate__())


# tokenizer_config.json's tokenizer_class (less "Fast") -> the add_bos_token, add_eos_token its transformers 4.57 fast
# class defaults to; that class rebuilds the post-processor from them (its update_post_processor), whatever the file's
TEMPLATE_CLASSES = {"LlamaTokenizer": (True, False), "CodeLlamaTokenizer": (True, False),
                    "GemmaTokenizer": (True, False), "CohereTokenizer": (True, False),
                    "GPTNeoXTokenizer": (False, False)}


def class_post_processor(tokenizer, folder) -> None:
    """Gives the loaded tokenizer the post-processor transformers 4.57 builds for the class its tokenizer_config.json
    names (TEMPLATE_CLASSES): BOS and EOS as add_bos_token / add_eos_token say, around the text. transformers 5 loads a
    byte-level tokenizer.json under LlamaTokenizerFast as TokenizersBackend, which keeps the file's: DeepSeek-R1-
    Distill-Qwen's config says add_bos_token over a Qwen file that adds none, and TensorRT-LLM's prompts open with the
    BOS a drafter trained here never saw. Another class, a tokenizer without a backend, or a BOS / EOS asked for but
    named nowhere (4.57 refuses that folder) is left as loaded."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    try:
        config = json.loads((Path(folder) / "tokenizer_config.json").read_text())
        defaults = TEMPLATE_CLASSES.get(config["tokenizer_class"].removesuffix("Fast"))
    except (OSError, ValueError, TypeError, KeyError, AttributeError):  # none, or not a class name: as loaded
        return
    if backend is None or defaults is None:
        return
    from tokenizers import processors

    add_bos, add_eos = (config.get(key, default) for key, default in zip(("add_bos_token", "add_eos_token"), defaults))
    bos, eos = tokenizer.bos_token, tokenizer.eos_token
    if (add_bos and bos is None) or (add_eos and eos is None):
        return
    opens, closes = (lambda seq: [f"{bos}:{seq}"] * bool(add_bos)), (lambda seq: [f"{eos}:{seq}"] * bool(add_eos))
    single = [*opens(0), "$A:0", *closes(0)]
    built = processors.TemplateProcessing(
        single=" ".join(single), pair=" ".join([*single, *opens(1), "$B:1", *closes(1)]),
        special_tokens=[(token, tokenizer.convert_tokens_to_ids(token))
                        for token, add in ((bos, add_bos), (eos, add_eos)) if add])
    if backend.post_processor is None or built.__getstate__() != backend.post_processor.__getstate__():
        backend.post_processor = built
        log.info("%s: BOS / EOS added as its %s says, as TensorRT-LLM's transformers reads it", folder,
                 config["tokenizer_class"])
