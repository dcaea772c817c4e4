"""scripts/fp8_agreement.py's teacher-forced figures: KL divergence, same top-1 and NLL sums, on logits whose
answers are known."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch

SPEC = importlib.util.spec_from_file_location("fp8_agreement",
                                              Path(__file__).resolve().parents[1] / "scripts" / "fp8_agreement.py")
fp8_agreement = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(fp8_agreement)


def test_identical_checkpoints_agree_everywhere():
    logits = torch.randn(5, 11)
    out = fp8_agreement.teacher_forced(logits, logits.clone(), [3, 1, 4, 1, 5])
    assert out["positions"] == 5 and out["same_top1"] == 5
    assert out["kl"] == pytest.approx(0.0, abs=1e-12) and out["nll_ref"] == pytest.approx(out["nll_other"])


def test_kl_top1_and_nll_by_hand():
    ref = torch.log(torch.tensor([[0.5, 0.5, 1e-30], [0.9, 0.1, 1e-30]]))
    other = torch.log(torch.tensor([[0.25, 0.75, 1e-30], [0.6, 0.4, 1e-30]]))
    out = fp8_agreement.teacher_forced(ref, other, [1, 0])
    kl = 0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75) + 0.9 * math.log(0.9 / 0.6) + 0.1 * math.log(0.1 / 0.4)
    assert out["kl"] == pytest.approx(kl, rel=1e-6)
    assert out["same_top1"] == 1  # position 0: ref's tie goes to token 0, other's top is 1; position 1: both 0
    assert out["nll_ref"] == pytest.approx(-math.log(0.5) - math.log(0.9), rel=1e-6)
    assert out["nll_other"] == pytest.approx(-math.log(0.75) - math.log(0.6), rel=1e-6)
