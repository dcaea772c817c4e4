"""FP8 calibration's forward loop: the prompts in batches, each left-padded to its longest prompt, with the padded
positions kept out of every maximum the calibration takes. modelopt's max calibration takes each quantizer's amax
over every position it is given; a padded row, masked out of attention, still has activations (on SmolLM2, larger
than any real token's), which the engine never computes. So a forward pre-hook on each calibrated activation
quantizer zeroes the current batch's padded rows of its input (a zero never raises an amax), and the scales are
those of the real tokens alone, whatever `--calib-batch-size` (tests/test_fp8.py)."""

from __future__ import annotations

from functools import partial

from .errors import DependencyError

# The quantizers calibration feeds activations to, by name, and the axis of their input that runs over a prompt's
# tokens (axis 0 runs over the batch): a linear's input is (batch, tokens, features); the KV cache's, as modelopt's
# Hugging Face attention gives them the keys and values, (batch, heads, tokens, head_dim).
TOKEN_AXIS = {"input_quantizer": 1, "k_bmm_quantizer": 2, "v_bmm_quantizer": 2}
# Fills the padded positions: any id in the vocabulary does (they are masked out of attention and zeroed before
# every quantizer), unlike the tokenizer's own pad token, which may lie past the model's vocabulary (a `<pad>` added to
# a tokenizer whose model never saw it).
PAD_ID = 0


def token_batches(tokenizer, prompts: list[str], seq_len: int, batch_size: int) -> list[tuple]:
    """(input_ids, attention_mask, position_ids) for each `batch_size` prompts, each cut to `seq_len` tokens and
    left-padded with PAD_ID to the batch's longest. Positions count from each prompt's first token, as an engine's do
    (and `generate`'s over a left-padded batch)."""
    import torch

    ids = [tokenizer(p, truncation=True, max_length=seq_len)["input_ids"] for p in prompts]
    batches = []
    for start in range(0, len(ids), batch_size):
        batch = ids[start:start + batch_size]
        width = max(map(len, batch))
        input_ids = torch.tensor([[PAD_ID] * (width - len(t)) + t for t in batch])
        mask = torch.tensor([[0] * (width - len(t)) + [1] * len(t) for t in batch])
        batches.append((input_ids, mask, (mask.cumsum(-1) - 1).clamp(min=0)))
    return batches


def forward_loop(tokenizer, prompts: list[str], seq_len: int, batch_size: int, device: str):
    """The `forward_loop` for `mtq.quantize`: every batch through the model, padding left out of the calibration."""
    import torch
    from tqdm.auto import tqdm

    batches = token_batches(tokenizer, prompts, seq_len, batch_size)

    def loop(model):
        current = {}  # the batch's attention mask, as bools, for the hooks
        padded = any(not mask.all() for _, mask, _ in batches)
        hooks = [quantizer.register_forward_pre_hook(partial(_zero_padding, current, name, TOKEN_AXIS[kind]))
                 for name, quantizer, kind in (_activation_quantizers(model) if padded else ())]
        try:
            with torch.no_grad():
                for input_ids, mask, position_ids in tqdm(batches, desc="FP8 calibration", unit="batch", disable=None):
                    current["mask"] = mask.to(device, torch.bool)
                    model(input_ids=input_ids.to(device), attention_mask=mask.to(device),
                          position_ids=position_ids.to(device))
        finally:
            for hook in hooks:
                hook.remove()

    return loop


def _activation_quantizers(model) -> list[tuple]:
    """(name, quantizer, kind) of every enabled quantizer of `model` that calibrates on activations. One that
    TOKEN_AXIS does not name (a modelopt release quantizing something else) is refused: its maxima would count the
    padding. Only called when some batch is padded."""
    from modelopt.torch.quantization.nn import TensorQuantizer

    found = []
    for name, module in model.named_modules():
        kind = name.rpartition(".")[2]
        if not isinstance(module, TensorQuantizer) or not module.is_enabled or kind == "weight_quantizer":
            continue
        if kind not in TOKEN_AXIS:
            raise _padding_kept_in(f"calibrates {name}")
        found.append((name, module, kind))
    return found


def _zero_padding(current: dict, name: str, axis: int, quantizer, args: tuple) -> tuple:
    """`args` with the padded rows of their first tensor, the quantizer's input, set to zero."""
    import torch

    x, *rest = args
    mask = current["mask"]
    if x.ndim <= axis or (x.shape[0], x.shape[axis]) != tuple(mask.shape):
        raise _padding_kept_in(f"gives {name} a tensor of shape {tuple(x.shape)} for {mask.shape[0]} prompts of "
                               f"{mask.shape[1]} tokens")
    shape = [1] * x.ndim
    shape[0], shape[axis] = mask.shape
    return (torch.where(mask.view(shape), x, 0), *rest)


def _padding_kept_in(what: str) -> DependencyError:
    import modelopt

    return DependencyError(f"nvidia-modelopt {modelopt.__version__} {what}, which FP8 calibration cannot keep padding "
                           f"out of: use --calib-batch-size 1 (no padding), or install another release")
