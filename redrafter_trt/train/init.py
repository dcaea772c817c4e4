"""A fresh drafter for training, started from the base's own output head where the shapes allow.

    E = 2H   init_drafter: the final projection's context half is the base lm_head, so the untrained drafter
             already predicts what the base says after the context.
    E <= H   the same idea through an SVD of the lm_head W [V, H] = U S Vt: final projection = U_E S_E [V, E],
             input_proj's context half = Vt_E [E, H] (exact when E = H; the best rank-E approximation below).
             Vt comes from the eigenvectors of W^T W [H, H]: U is never formed and no float64 copy of W is made.
    else     random (init_drafter's 0.02-scale normal).
The ResBlocks start as identity in every case.
"""

from __future__ import annotations

import torch

from ..drafter import Drafter, DrafterConfig, init_drafter


def new_drafter(base_config: dict, lm_head: torch.Tensor, *, num_draft_layers: int, rnn: bool, exit_dim: int,
                predict_n: int, seed: int) -> tuple[DrafterConfig, Drafter]:
    """lm_head: the base's output weight [V, H] (the tied embedding when the base ties them)."""
    cfg, model = init_drafter(base_config, lm_head, num_draft_layers=num_draft_layers, rnn=rnn, exit_dim=exit_dim,
                              seed=seed)
    cfg = DrafterConfig(**{**cfg.__dict__, "predict_n": predict_n})
    model.cfg = cfg
    H, E = cfg.hidden_size, cfg.exit_dim
    if E <= H:
        W = lm_head.float()
        Vt = top_right_singular_vectors(W, E).float()
        with torch.no_grad():
            # W Vt_E^T = U_E S_E: the projection of the head onto its top-E right singular directions
            model.lm_head[-1].weight.copy_(W @ Vt.T)
            model.input_proj.weight[:, :H] = Vt
            model.input_proj.bias.zero_()
    return cfg, model


def top_right_singular_vectors(W: torch.Tensor, E: int) -> torch.Tensor:
    """Vt_E [E, H] (float64) of W [V, H], largest singular value first: the eigenvectors of W^T W (the product in W's
    dtype, the eigenvectors in float64), each signed so that its largest entry is positive (the same drafter
    whichever LAPACK computed them). Orthonormal whatever the product's rounding, so E = H stays exact."""
    _, vectors = torch.linalg.eigh((W.T @ W).double())  # ascending eigenvalues
    vt = vectors[:, -E:].flip(1).T
    peak = vt.gather(1, vt.abs().argmax(1, keepdim=True))
    return (vt * torch.sign(peak)).contiguous()
