"""Dynamic tree attention: deduplicate the beams' shared prefixes, pack the distinct prefixes into one sequence
per row, and build the ancestor mask and depths that let one base forward verify every beam.

Worked example (one row, W = 3, L = 3):
    beams  [[7, 1, 2],    node_of [[0, 1, 2],    packed tokens [7, 1, 2, 4, 5]    depth [0, 1, 2, 1, 2]
            [7, 4, 5],             [0, 3, 4],
            [7, 1, 2]]             [0, 1, 2]]
    (beam 2 repeats beam 0, so it adds no node). Node n sees node m iff m is an ancestor of n or n itself.
The packed order is "first occurrence in (beam, depth) order", so node 0 is always the guaranteed token.
Rows with fewer nodes than the widest row are padded with nodes that see only themselves and are never accepted.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Tree:
    tokens: torch.Tensor   # [B, N] packed tokens (padding: the row's root token)
    depth: torch.Tensor    # [B, N] depth of each packed node (position = committed length + depth)
    mask: torch.Tensor     # [B, N, N] bool: node n sees node m (ancestors and itself)
    node_of: torch.Tensor  # [B, W, L] packed index of prefix beams[b, w, :d+1]
    num_nodes: torch.Tensor  # [B] real nodes per row


def build_tree(beams: torch.Tensor) -> Tree:
    """beams [B, W, L] (column 0 identical within a row) -> Tree."""
    B, W, L = beams.shape
    dev = beams.device
    # same[b, w, u, d]: beams w and u share the prefix of length d+1
    same = (beams[:, :, None, :] == beams[:, None, :, :]).long().cumprod(-1).bool()
    rep = same.int().argmax(dim=2)  # [B, W, L] first beam holding the same prefix
    keep = rep == torch.arange(W, device=dev)[None, :, None]  # [B, W, L] first occurrences
    flat_keep = keep.reshape(B, W * L)
    index = flat_keep.long().cumsum(-1) - 1  # packed index of each kept (w, d)
    num_nodes = flat_keep.sum(-1)
    N = int(num_nodes.max())
    index = index.reshape(B, W, L)
    node_of = index.gather(1, rep)  # representative's index at the same depth
    # pack
    tokens = beams[:, 0, :1].expand(B, N).clone()
    depth = torch.zeros(B, N, dtype=torch.long, device=dev)
    b_idx, w_idx, d_idx = keep.nonzero(as_tuple=True)
    n_idx = index[b_idx, w_idx, d_idx]
    tokens[b_idx, n_idx] = beams[b_idx, w_idx, d_idx]
    depth[b_idx, n_idx] = d_idx
    # mask: node_of[w, d] sees node_of[w, d'] for d' <= d; padding sees itself
    mask = torch.eye(N, dtype=torch.bool, device=dev).repeat(B, 1, 1)
    tri = torch.ones(L, L, dtype=torch.bool, device=dev).tril()  # [d, d']
    bb, ww, dd, ee = torch.nonzero(tri[None, None].expand(B, W, L, L), as_tuple=True)
    mask[bb, node_of[bb, ww, dd], node_of[bb, ww, ee]] = True
    return Tree(tokens=tokens, depth=depth, mask=mask, node_of=node_of, num_nodes=num_nodes)
