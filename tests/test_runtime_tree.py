"""Tree packing (dedupe, mask, depth) and the per-row KV cache bookkeeping."""

import torch

from redrafter_trt.runtime.cache import KVCache, write_kv
from redrafter_trt.runtime.tree import build_tree


def test_worked_example():
    beams = torch.tensor([[[7, 1, 2], [7, 4, 5], [7, 1, 2]]])
    t = build_tree(beams)
    assert t.tokens.tolist() == [[7, 1, 2, 4, 5]]
    assert t.depth.tolist() == [[0, 1, 2, 1, 2]]
    assert t.node_of.tolist() == [[[0, 1, 2], [0, 3, 4], [0, 1, 2]]]
    want = torch.tensor([[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [1, 0, 0, 1, 0], [1, 0, 0, 1, 1]]).bool()
    assert torch.equal(t.mask[0], want)


def test_rows_pad_and_partial_sharing():
    beams = torch.tensor([[[3, 1, 2], [3, 1, 9]], [[5, 6, 7], [5, 6, 7]]])
    t = build_tree(beams)
    assert t.num_nodes.tolist() == [4, 3]
    assert t.tokens[0].tolist() == [3, 1, 2, 9]
    assert t.mask[0, 3].tolist() == [True, True, False, True]
    assert t.mask[1, 3].tolist() == [False, False, False, True]  # padding sees only itself
    # every node's ancestors are exactly its prefix: decode each path from the mask
    for b in range(2):
        for w in range(2):
            for d in range(3):
                n = t.node_of[b, w, d]
                seen = t.mask[b, n].nonzero()[:, 0]
                assert t.tokens[b, seen].tolist() == beams[b, w, : d + 1].tolist()


def test_cache_commit_keeps_accepted_path():
    cache = KVCache(1, 2, 1, 16, 1, torch.float32, "cpu")
    cache.lens = torch.tensor([3, 5])
    slots = cache.slots(4)
    vals = torch.tensor([[10., 11, 12, 13], [20, 21, 22, 23]])[:, None, :, None]
    write_kv(cache.k[0], cache.v[0], vals, vals, slots, int(slots.max()) + 1)
    cache.commit(torch.tensor([[0, 2, 3, 0], [0, 0, 0, 0]]), torch.tensor([3, 1]))
    assert cache.lens.tolist() == [6, 6]
    assert cache.k[0][0, 0, 3:6, 0].tolist() == [10, 12, 13]
    assert cache.v[0][1, 0, 5, 0].item() == 20


def test_attention_mask_rows():
    cache = KVCache(1, 2, 1, 16, 1, torch.float32, "cpu")
    cache.lens = torch.tensor([2, 4])
    tree = torch.tensor([[1, 0], [1, 1]]).bool().expand(2, 2, 2)
    m = cache.attention_mask(tree, 6)
    assert m[0].int().tolist() == [[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 0, 0]]
    assert m[1].int().tolist() == [[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1]]
