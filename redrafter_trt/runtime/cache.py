"""Preallocated KV cache with one committed length per batch row.

Layout per layer: k, v [B, kv_heads, capacity, head_size]. Row b's committed entries are slots [0, lens[b]).
A forward over T new tokens writes them at slots lens[b] .. lens[b]+T-1 (per-row offsets, so rows that accepted
different numbers of tokens never need padding) and attends over slots [0, max(lens)+T) with a mask that hides
other rows' garbage. After acceptance, `commit` moves the accepted tree nodes' entries down to lens[b]+k in place
and advances lens: only the accepted path survives; the rest is overwritten by the next step.

Worked example: lens = [5], tree nodes written at slots 5..11, accepted nodes [0, 2, 5] ->
slot 5 stays, slot 7 -> 6, slot 10 -> 7, lens becomes 8.
"""

from __future__ import annotations

import torch


def write_kv(keys: torch.Tensor, values: torch.Tensor, k: torch.Tensor, v: torch.Tensor, slots: torch.Tensor,
             end: int) -> tuple[torch.Tensor, torch.Tensor]:
    """k, v [B, kv_heads, T, hd] into one layer's keys, values [B, kv_heads, capacity, hd] at `slots` [B, T];
    returns that layer's keys, values over slots [0, end) (end > max(slots), computed once per forward)."""
    idx = slots[:, None, :, None].expand(-1, k.shape[1], -1, k.shape[3])
    keys.scatter_(2, idx, k)
    values.scatter_(2, idx, v)
    return keys[:, :, :end], values[:, :, :end]


class KVCache:
    def __init__(self, num_layers: int, batch: int, kv_heads: int, capacity: int, head_size: int,
                 dtype: torch.dtype, device: torch.device | str):
        shape = (batch, kv_heads, capacity, head_size)
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(num_layers)]
        self.lens = torch.zeros(batch, dtype=torch.long, device=device)
        self.capacity = capacity

    @property
    def batch(self) -> int:
        return self.lens.shape[0]

    def slots(self, t: int) -> torch.Tensor:
        """[B, t] cache slots of the next t new tokens."""
        return self.lens[:, None] + torch.arange(t, device=self.lens.device)

    def commit(self, nodes: torch.Tensor, counts: torch.Tensor) -> None:
        """Keep tree nodes `nodes` [B, K] (node i sits at slot lens+i; row b keeps its first counts[b]) as the
        next counts[b] committed entries; lens += counts. Unused entries of `nodes` may hold anything < T."""
        K = nodes.shape[1]
        src = self.lens[:, None] + nodes
        dst = self.slots(K)
        if not torch.equal(src, dst):
            for cache in (self.k, self.v):
                for t in cache:
                    s = src[:, None, :, None].expand(-1, t.shape[1], -1, t.shape[3])
                    d = dst[:, None, :, None].expand(-1, t.shape[1], -1, t.shape[3])
                    t.scatter_(2, d, t.gather(2, s))
        self.lens += counts

    def select_rows(self, rows: torch.Tensor) -> None:
        """Keep only batch rows `rows` (finished rows leave the batch)."""
        self.k = [t[rows] for t in self.k]
        self.v = [t[rows] for t in self.v]
        self.lens = self.lens[rows]

    def extend(self, other: "KVCache") -> None:
        """Append other's rows (entries and lens) after these; the capacity grows to the larger of the two."""
        if self.batch == 0:  # nothing to keep: take other's tensors as they are
            self.k, self.v, self.lens, self.capacity = other.k, other.v, other.lens, other.capacity
            return
        cap = max(self.capacity, other.capacity)

        def pad(t: torch.Tensor) -> torch.Tensor:
            return torch.nn.functional.pad(t, (0, 0, 0, cap - t.shape[2])) if t.shape[2] < cap else t

        self.k = [torch.cat([pad(a), pad(b)]) for a, b in zip(self.k, other.k)]
        self.v = [torch.cat([pad(a), pad(b)]) for a, b in zip(self.v, other.v)]
        self.lens = torch.cat([self.lens, other.lens])
        self.capacity = cap

    def attention_mask(self, tree_mask: torch.Tensor, slots_end: int) -> torch.Tensor:
        """Boolean mask [B, T, slots_end]: committed context of the row plus the new tokens' own tree mask
        `tree_mask` [B, T, T] (new token i of row b sits at slot lens[b]+i)."""
        B, T, _ = tree_mask.shape
        rel = torch.arange(slots_end, device=self.lens.device)[None, :] - self.lens[:, None]  # [B, S]
        context = (rel < 0)[:, None, :].expand(B, T, slots_end)
        inside = (rel >= 0) & (rel < T)
        gathered = tree_mask.gather(2, rel.clamp(0, T - 1)[:, None, :].expand(B, T, slots_end))
        return context | (gathered & inside[:, None, :])
