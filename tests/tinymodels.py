"""Tiny random Hugging Face models and drafters for tests: built in-process with fixed seeds, saved as real
Hugging Face folders (config.json + safetensors), in either RoPE config layout."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import transformers

from redrafter_trt.drafter import init_drafter, save_drafter

LLAMA = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, vocab_size=256, max_position_embeddings=512, rms_norm_eps=1e-5)

# transformers 5 names RoPE `rope_parameters`; 4.x (TensorRT-LLM 1.2 pins 4.57.3) takes top-level `rope_theta` /
# `rope_scaling` and keeps an unknown `rope_parameters` as an attribute it never computes with.
TRANSFORMERS_5 = int(transformers.__version__.split(".")[0]) >= 5


def make_hf(folder: Path, arch: str = "llama", *, tie: bool = False, dtype: torch.dtype = torch.float32,
            rope_layout: str | None = None, rope_theta: float = 10000.0, rope_scaling: dict | None = None,
            seed: int = 0, bias_std: float = 0.1, **overrides) -> Path:
    """Save a random LlamaForCausalLM / Qwen2ForCausalLM / Qwen3ForCausalLM / MistralForCausalLM.

    rope_layout: "params" = transformers 5's `rope_parameters`; "top" = published checkpoints' (and transformers 4's)
    top-level `rope_theta` / `rope_scaling`; None = the layout the installed transformers writes, the only one it
    reads back (transformers 4 computes a "params" file with rope_theta 10000).
    bias_std: the spread of random biases (0.1 in o_proj and down_proj, added to the residual at every layer over
    weights of 0.02, makes every greedy answer one token repeated: a Llama with attention_bias and mlp_bias takes less).
    """
    from transformers import AutoModelForCausalLM, LlamaConfig, MistralConfig, Qwen2Config, Qwen3Config

    cls = {"llama": LlamaConfig, "qwen2": Qwen2Config, "qwen3": Qwen3Config, "mistral": MistralConfig}[arch]
    kwargs = {**LLAMA, **overrides, "tie_word_embeddings": tie}
    rope = {"rope_type": "default", "rope_theta": rope_theta}
    if rope_scaling:
        rope = {**rope_scaling, "rope_theta": rope_theta}
    if TRANSFORMERS_5:
        cfg = cls(**kwargs, rope_parameters=rope)
    else:
        cfg = cls(**kwargs, rope_theta=rope_theta, rope_scaling=rope_scaling and dict(rope_scaling))
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg).to(dtype)
    with torch.no_grad():  # make norms non-trivial so a wrong mapping shows
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
            elif "bias" in name:
                p.normal_(0, bias_std)
    model.save_pretrained(folder)
    path = Path(folder) / "config.json"
    raw = json.loads(path.read_text())
    if rope_layout == "top" and "rope_parameters" in raw:
        params = raw.pop("rope_parameters")
        raw["rope_theta"] = params.pop("rope_theta", rope_theta)
        if params.get("rope_type", "default") != "default":
            raw["rope_scaling"] = params
    elif rope_layout == "params" and "rope_parameters" not in raw:
        raw.pop("rope_theta", None)
        raw["rope_parameters"] = {**(raw.pop("rope_scaling", None) or {"rope_type": "default"}), "rope_theta": rope_theta}
    path.write_text(json.dumps(raw, indent=2))
    return Path(folder)


def make_drafter(folder: Path, base_dir: Path, *, rnn: bool = True, exit_dim: int | None = None,
                 num_draft_layers: int = 2, seed: int = 0, randomize: bool = True, dtype=torch.float32) -> Path:
    """An Apple-layout drafter for the base in `base_dir`; `randomize` fills every tensor (identity ResBlocks
    would hide mapping mistakes)."""
    base_cfg = json.loads((Path(base_dir) / "config.json").read_text())
    cfg, model = init_drafter(base_cfg, None, num_draft_layers=num_draft_layers, rnn=rnn, exit_dim=exit_dim, seed=seed)
    if randomize:
        gen = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    save_drafter(folder, cfg, {k: v.to(dtype) for k, v in model.state_dict().items()}, force=True)
    return Path(folder)


def lora_merged(tmp_path: Path, base: Path, tensor: str, scale: float = 0.01, name: str = "tuned") -> Path:
    """A copy of `base` with a rank-2 update merged into `tensor` alone (`scale` of its spread), every other tensor
    as it was: what a LoRA fine-tune of that module leaves."""
    import shutil

    from safetensors.torch import load_file, save_file

    tuned = tmp_path / name
    shutil.copytree(base, tuned)
    tensors = load_file(tuned / "model.safetensors")
    t = tensors[tensor]
    gen = torch.Generator().manual_seed(2)
    b, a = torch.randn(t.shape[0], 2, generator=gen), torch.randn(2, t.shape[1], generator=gen)
    tensors[tensor] = (t.float() + scale * t.float().std() * (b @ a)).to(t.dtype)
    save_file(tensors, tuned / "model.safetensors", metadata={"format": "pt"})
    return tuned


VICUNA_TEMPLATE = Path(__file__).resolve().parents[1] / "configs" / "chat_templates" / "vicuna_v1.1.jinja"


def make_vicuna(folder: Path, vocab_size: int = 512, template: bool = True) -> Path:
    """A tiny random Llama with a tokenizer folder as Vicuna v1.3's: a real SentencePiece BPE tokenizer.model (byte
    fallback, split digits, <unk> <s> </s> at 0-2, as Llama's; trained here on the package's prompts) and Vicuna's
    tokenizer_config.json (LlamaTokenizer, add_bos_token), no tokenizer.json. template: the repository's Vicuna
    template (configs/chat_templates) copied in as chat_template.jinja, as the README says; else no chat template."""
    import io

    import sentencepiece

    from redrafter_trt.train.quickstart import TASK_PROMPTS, packaged

    text = [json.loads(line)["prompt"] for line in packaged(TASK_PROMPTS).read_text().splitlines()]
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=iter(text), model_writer=model, vocab_size=vocab_size, model_type="bpe", byte_fallback=True,
        split_digits=True, character_coverage=1.0, unk_id=0, bos_id=1, eos_id=2, pad_id=-1, num_threads=1,
        remove_extra_whitespaces=False, normalization_rule_name="identity", minloglevel=2)
    folder = make_hf(folder, "llama", vocab_size=vocab_size, bos_token_id=1, eos_token_id=2)
    (folder / "tokenizer.model").write_bytes(model.getvalue())
    special = {name: {"__type": "AddedToken", "content": text, "lstrip": False, "normalized": True, "rstrip": False,
                      "single_word": False} for name, text in (("bos_token", "<s>"), ("eos_token", "</s>"),
                                                                 ("unk_token", "<unk>"))}
    (folder / "tokenizer_config.json").write_text(json.dumps(
        {"add_bos_token": True, "add_eos_token": False, "clean_up_tokenization_spaces": False,
         "model_max_length": 2048, "pad_token": None, "sp_model_kwargs": {}, "tokenizer_class": "LlamaTokenizer",
         **special}, indent=2))
    (folder / "generation_config.json").write_text(json.dumps({"bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0}))
    if template:
        (folder / "chat_template.jinja").write_text(VICUNA_TEMPLATE.read_text())
    return folder


def resaved(weights: Path) -> None:
    """The safetensors file `weights` as a base re-saved with one value changed: the lowest bit of its first tensor's
    first byte flipped (float32, float16 and bfloat16 store that byte first: a value a little off, never inf or NaN),
    the size the same."""
    data = bytearray(weights.read_bytes())
    data[8 + int.from_bytes(data[:8], "little")] ^= 1
    weights.write_bytes(bytes(data))
