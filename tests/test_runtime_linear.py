"""`Linear` / `pack_linears`: oneDNN's packed products agree with `F.linear` in float32 and, when asked for,
bfloat16; other dtypes stay on `F.linear`. A tuned `Linear` takes each path where `tune` measured it faster."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from redrafter_trt.runtime.linear import Linear, pack_linears, plain_rows_from, tune

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="needs oneDNN")


@pytest.mark.parametrize("rows", [1, 3, 17])
def test_float32_packed_matches_f_linear(rows):
    g = torch.Generator().manual_seed(rows)
    w, b, x = torch.randn(96, 64, generator=g), torch.randn(96, generator=g), torch.randn(2, rows, 64, generator=g)
    lin = Linear(w, b)
    assert lin.packed is not None and lin.weight is None
    torch.testing.assert_close(lin(x), F.linear(x, w, b), atol=1e-4, rtol=1e-4)


def test_pack_linears_takes_bfloat16_only_when_asked():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 96), torch.nn.ReLU(), torch.nn.Linear(96, 32)).to(torch.bfloat16)
    x = torch.randn(5, 64, dtype=torch.bfloat16)
    with torch.no_grad():
        ref = model(x)
        assert pack_linears(model) == 0
        assert pack_linears(model, dtypes=(torch.float32, torch.bfloat16)) == 2
        out = model(x)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref.float(), atol=3e-2, rtol=2e-2)


@pytest.mark.parametrize("plain_rows", [0, 2])
def test_a_tuned_linear_takes_f_linear_up_to_plain_rows_and_onednn_above(plain_rows):
    """Each product is bit for bit the path it should take (the two round differently at this width): F.linear's up
    to plain_rows rows, counted over every leading dimension, oneDNN's above; no rows give no rows."""
    g = torch.Generator().manual_seed(plain_rows)
    w, b = torch.randn(96, 1024, generator=g), torch.randn(96, generator=g)
    lin = Linear(w, b, keep_plain=True)
    assert lin.packed is not None and lin.weight is w
    lin.plain_rows = plain_rows
    for shape in [(1, 1024), (2, 1024), (1, 2, 1024), (2, 2, 1024), (5, 1024)]:
        x = torch.randn(*shape, generator=g)
        plain, packed = F.linear(x, w, b), lin.onednn(x)
        assert not torch.equal(plain, packed)  # so the comparison below tells the paths apart
        assert torch.equal(lin(x), plain if x.numel() <= plain_rows * 1024 else packed), shape
    assert lin(torch.randn(0, 1024)).shape == (0, 96)
    lin.weight = None  # as `tune` leaves it at crossover 0
    assert lin(torch.randn(0, 1024)).shape == (0, 96)


@pytest.mark.parametrize("seconds, want", [
    ({1: (1.0, 2.0), 2: (1.0, 2.0), 3: (2.5, 2.0), 4: (3.0, 2.0)}, 2),   # the Intel Xeon's shape: MKL first
    ({1: (2.0, 1.0), 2: (2.0, 1.0), 3: (2.0, 1.0), 4: (2.0, 1.0)}, 0),   # the AMD EPYCs': oneDNN everywhere
    ({1: (6.8, 4.4), 2: (3.5, 4.7), 3: (3.9, 5.0), 4: (6.2, 4.6)}, 3),   # a disturbed first timing (measured)
    ({1: (1.0, 2.0), 2: (1.0, 2.0), 3: (1.0, 2.0), 4: (1.0, 2.0)}, 4),
    ({1: (0.97, 1.0), 2: (0.97, 1.0), 3: (2.0, 1.0), 4: (2.0, 1.0)}, 0),  # within 5%: not a clear win
])
def test_the_crossover_is_the_largest_row_count_where_f_linear_clearly_won(seconds, want):
    assert plain_rows_from(seconds) == want


def test_tune_sets_every_linear_and_drops_the_copy_it_does_not_use():
    from redrafter_trt.runtime import linear as module

    lins = [Linear(torch.randn(96, 64), keep_plain=True) for _ in range(3)]
    crossover = tune(lins)
    assert crossover in (0, *module.PROBE_ROWS)
    assert all(lin.plain_rows == crossover and (lin.weight is None) == (crossover == 0) for lin in lins)
    if crossover == 0:
        assert tune(lins) == 0  # nothing left to time once the plain copies are gone


def test_the_crossover_can_be_pinned_for_run_to_run_reproducible_rounding(monkeypatch):
    from redrafter_trt.errors import ConfigError

    lins = [Linear(torch.randn(96, 64), keep_plain=True) for _ in range(2)]
    monkeypatch.setenv("REDRAFTER_TRT_PLAIN_ROWS", "2")
    assert tune(lins) == 2 and all(lin.plain_rows == 2 and lin.weight is not None for lin in lins)
    monkeypatch.setenv("REDRAFTER_TRT_PLAIN_ROWS", "two")
    with pytest.raises(ConfigError, match="REDRAFTER_TRT_PLAIN_ROWS='two': give a whole number"):
        tune([Linear(torch.randn(96, 64), keep_plain=True)])


@pytest.mark.parametrize("pin", ["0", "3"])
def test_a_small_float32_base_is_tuned_at_load_and_others_are_not(monkeypatch, tiny_llama, tiny_drafter, pin):
    """The model's wiring: every base linear and the lm_head share the crossover; at 0 no plain copy is left and the
    float16 screen is kept (a pinned choice is the pre-tuning one); a bfloat16 load is never tuned."""
    from redrafter_trt import runtime as rt
    from test_runtime_support import checkpoint

    monkeypatch.setenv("REDRAFTER_TRT_PLAIN_ROWS", pin)
    ckpt = checkpoint(tiny_llama, tiny_drafter)
    base = rt.load(ckpt).base
    linears = [lin for L in base.layers for lin in (L.qkv, L.dense, L.fc_gate, L.proj)] + [base.lm_head]
    assert {lin.plain_rows for lin in linears} == {int(pin)}
    assert all((lin.weight is None) == (pin == "0") and lin.packed is not None for lin in linears)
    assert base.screened_argmax is not None
    half = rt.load(ckpt, dtype=torch.bfloat16).base
    assert all(lin.plain_rows == 0 and lin.packed is None for L in half.layers for lin in (L.qkv, L.proj))
