"""FP8 calibration's forward loop: the prompts in batches, each left-padded to its longest prompt."""

from __future__ import annotations

# Fills the padded positions: any id in the vocabulary does (they are masked out of attention), unlike the tokenizer's
# own pad token, which may lie past the model's vocabulary (a `<pad>` added to a tokenizer whose model never saw it).
PAD_ID = 0


def token_batches(tokenizer, prompts: list[str], seq_len: int, batch_size: int) -> list[tuple]:
    """(input_ids, attention_mask) for each `batch_size` prompts, each cut to `seq_len` tokens and left-padded with
    PAD_ID to the batch's longest."""
    import torch

    ids = [tokenizer(p, truncation=True, max_length=seq_len)["input_ids"] for p in prompts]
    batches = []
    for start in range(0, len(ids), batch_size):
        batch = ids[start:start + batch_size]
        width = max(map(len, batch))
        input_ids = torch.tensor([[PAD_ID] * (width - len(t)) + t for t in batch])
        mask = torch.tensor([[0] * (width - len(t)) + [1] * len(t) for t in batch])
        batches.append((input_ids, mask))
    return batches


def forward_loop(tokenizer, prompts: list[str], seq_len: int, batch_size: int, device: str):
    """The `forward_loop` for `mtq.quantize`: every batch through the model."""
    import torch
    from tqdm.auto import tqdm

    batches = token_batches(tokenizer, prompts, seq_len, batch_size)

    def loop(model):
        with torch.no_grad():
            for input_ids, mask in tqdm(batches, desc="FP8 calibration", unit="batch"):
                model(input_ids=input_ids.to(device), attention_mask=mask.to(device))

    return loop
