"""What training reads from the base's folder besides its hidden states: its tokenizer, and its input embedding and
output head (lazily, as tensors)."""

from __future__ import annotations

from pathlib import Path

import torch

from ..errors import ConfigError, TokenizerError
from ..io import TensorSource, finite_base_tensor


def base_tensors(base: Path, dtype: torch.dtype | None = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """(embed_tokens [V, H], lm_head [V, H]) read lazily from the base folder, in `dtype` (None: as stored), each
    checked finite."""
    src = TensorSource.from_hf_folder(base)
    names = src.names()
    emb_name = next((n for n in ("model.embed_tokens.weight", "embed_tokens.weight") if n in names), None)
    if emb_name is None:
        raise ConfigError(f"{base} has no model.embed_tokens.weight: only Llama/Qwen2/Qwen3-style bases are supported")
    def read(name: str) -> torch.Tensor:
        t = src.get(name)
        return finite_base_tensor(t if dtype is None else t.to(dtype), name, base)

    embed = read(emb_name)
    head = read("lm_head.weight") if "lm_head.weight" in names else embed
    src.close()
    return embed, head


def load_tokenizer(base: Path, vocab_size: int | None = None, template_kwargs: dict | None = None):
    """The base's tokenizer, its chat template rendered with `template_kwargs` (--chat-template-kwargs), or a
    ConfigError when its folder has none that loads, one with a special token its vocabulary lacks
    (refuse_added_specials), or one with more tokens than the model's vocab_size (its ids past the embedding crashed
    the base's first forward pass)."""
    from ..tokens import auto_tokenizer, refuse_added_specials

    fix = "copy the base's tokenizer files (tokenizer.json, tokenizer_config.json) into it"
    try:
        tokenizer = auto_tokenizer(base, template_kwargs)
    except TokenizerError as e:
        raise ConfigError(f"{base} has no usable tokenizer ({e}): "
                          f"{fix}") from None
    if vocab_size is not None:  # as run refuses them
        refuse_added_specials(tokenizer, base, vocab_size)
    if vocab_size is not None and len(tokenizer) > vocab_size:
        raise ConfigError(f"the tokenizer in {base} has {len(tokenizer)} tokens but the model's vocab_size is "
                          f"{vocab_size}: it is another model's; {fix}")
    return tokenizer
