"""Prompts to token ids and the stop tokens, one way for every command (run, bench, train, quickstart)."""

from __future__ import annotations

import json
from pathlib import Path

from .errors import COUNT, ConfigError, first_line, read_text


def encode_prompts(tokenizer, prompts: list[str], chat: bool | None) -> list[list[int]]:
    """Token ids per prompt. chat=True: one user turn in the tokenizer's chat template, ready for the answer;
    None: chat when the tokenizer has a template; False: plain text."""
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if chat and not has_template:
        raise ConfigError("a chat template was asked for (--chat) but this tokenizer has none: leave out --chat")
    if chat is None:
        chat = has_template
    out = []
    for p in prompts:
        if chat:
            text = tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                                 tokenize=False)
            out.append(list(tokenizer(text, add_special_tokens=False)["input_ids"]))
        else:
            out.append(list(tokenizer(p)["input_ids"]))
    return out


def eos_ids(tokenizer, generation_eos=None) -> list[int]:
    """The tokenizer's EOS plus the generation config's `eos_token_id` (an id, a list or None)."""
    ids = {tokenizer.eos_token_id}
    ids |= set(generation_eos if isinstance(generation_eos, list) else [generation_eos])
    return sorted(i for i in ids if i is not None)


def stop_ids(tokenizer, tokenizer_dir) -> list[int]:
    """`eos_ids` with the generation config saved next to the tokenizer, when there is one (checked: a broken one
    is one line naming it)."""
    gen = Path(tokenizer_dir) / "generation_config.json"
    if not gen.is_file():
        return eos_ids(tokenizer)
    fix = "fix it or re-download the model's generation_config.json"
    try:
        raw = json.loads(read_text(gen, fix))
    except json.JSONDecodeError as e:
        raise ConfigError(f"{gen} is not valid JSON ({e.msg}, line {e.lineno}): {fix}") from None
    eos = raw.get("eos_token_id") if isinstance(raw, dict) else None
    listed = eos if isinstance(eos, list) else [eos]
    is_id = COUNT[1]  # the same check as the configs' counts
    if not isinstance(raw, dict) or not all(i is None or is_id(i) for i in listed):
        raise ConfigError(f"{gen}: eos_token_id is {eos!r}, not a token id or a list of them: {fix}")
    return eos_ids(tokenizer, eos)


def load_tokenizer(tokenizer_dir: str, vocab_size: int | None):
    """The base's tokenizer from its Hugging Face folder, checked against the model's vocabulary size (None: not
    checked)."""
    from transformers import AutoTokenizer

    if not Path(tokenizer_dir).is_dir():
        raise ConfigError(f"tokenizer folder {tokenizer_dir} does not exist: pass the base model's Hugging Face "
                          "folder to --tokenizer-dir")
    try:
        tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot load a tokenizer from {tokenizer_dir} ({first_line(e, type(e).__name__)}): "
                          f"pass the base model's Hugging Face folder to --tokenizer-dir") from None
    n = len(tok)
    # models pad their vocabulary a little beyond the tokenizer's (Qwen2: 151936 vs 151665), never below it
    if vocab_size is not None and (n > vocab_size or n < 0.95 * vocab_size):
        raise ConfigError(f"the tokenizer in {tokenizer_dir} has {n} tokens but the model's vocab_size is {vocab_size}: "
                          f"pass the tokenizer of the base model this checkpoint was converted from")
    return tok
