"""The fresh drafter starts from the base's own output head: with its state at zero it says what the base says
(E = H), or the best rank-E approximation of it (E < H)."""

import pytest
import torch

from redrafter_trt.train.init import new_drafter, top_right_singular_vectors

V, H = 300, 24


def head_with_spread_spectrum(seed: int = 0) -> torch.Tensor:
    """lm_head [V, H] with well separated singular values (so the top-E subspace is unique)."""
    g = torch.Generator().manual_seed(seed)
    u, _ = torch.linalg.qr(torch.randn(V, H, generator=g, dtype=torch.float64))
    v, _ = torch.linalg.qr(torch.randn(H, H, generator=g, dtype=torch.float64))
    s = torch.logspace(0, -2, H, dtype=torch.float64)
    return (u * s) @ v.T


def test_singular_vectors_match_the_svd_up_to_sign():
    W = head_with_spread_spectrum()
    _, _, Vt = torch.linalg.svd(W, full_matrices=False)
    mine = top_right_singular_vectors(W, 10)
    assert mine.shape == (10, H)
    signs = torch.sign((mine * Vt[:10]).sum(1, keepdim=True))
    assert torch.allclose(mine * signs, Vt[:10], atol=1e-8)


@pytest.mark.parametrize("exit_dim", [H, 8])
def test_untrained_drafter_reads_the_base_head(exit_dim):
    W = head_with_spread_spectrum(1)
    cfg = {"hidden_size": H, "vocab_size": V}
    _, drafter = new_drafter(cfg, W.float(), num_draft_layers=2, rnn=True, exit_dim=exit_dim, predict_n=3, seed=0)
    h = torch.randn(5, H, dtype=torch.float64)
    with torch.no_grad():
        got = drafter.logits(h.float(), torch.zeros(5, H)).double()
    U, S, Vt = torch.linalg.svd(W, full_matrices=False)
    best = (U[:, :exit_dim] * S[:exit_dim]) @ Vt[:exit_dim]  # the best rank-E approximation of W
    assert torch.allclose(got, h @ best.T, atol=1e-5)
    if exit_dim == H:
        assert torch.allclose(got, h @ W.T, atol=1e-5)
    else:  # and not the head itself: the discarded directions are gone
        assert not torch.allclose(got, h @ W.T, atol=1e-3)


def test_initial_weights_follow_the_seed():
    """The random part of a fresh drafter (its recurrent layer, and the final projection when not the base's) is drawn
    under --seed: the same seed, the same weights; another, others."""
    cfg = {"hidden_size": H, "vocab_size": V}

    def weights(seed):
        _, drafter = new_drafter(cfg, head_with_spread_spectrum().float(), num_draft_layers=1, rnn=True,
                                 exit_dim=2 * H + 1, predict_n=2, seed=seed)
        return torch.cat([p.detach().flatten() for p in drafter.parameters()])

    assert torch.equal(weights(1), weights(1))
    assert not torch.equal(weights(1), weights(2)) and not torch.equal(weights(1), weights(0))


def test_singular_vectors_have_a_fixed_sign():
    W = head_with_spread_spectrum(2)
    vt = top_right_singular_vectors(W, 6)
    peak = vt.gather(1, vt.abs().argmax(1, keepdim=True))
    assert (peak > 0).all()


def test_saved_drafter_carries_the_metadata_apples_loader_needs(tmp_path):
    """Apple's Drafter.from_pretrained under transformers before 4.46 (the versions of its time) reads the
    safetensors metadata's `format` with no check for none: our drafters, written without metadata, failed there
    with "'NoneType' object has no attribute 'get'". save_pretrained writes {"format": "pt"}; so do we."""
    from safetensors import safe_open

    from redrafter_trt.drafter import save_drafter

    cfg, model = new_drafter({"hidden_size": H, "vocab_size": V}, head_with_spread_spectrum(), num_draft_layers=1,
                             rnn=True, exit_dim=H, predict_n=2, seed=0)
    save_drafter(tmp_path / "d", cfg, model.state_dict(), force=False)
    with safe_open(str(tmp_path / "d" / "model.safetensors"), framework="pt") as f:
        assert f.metadata() == {"format": "pt"}
