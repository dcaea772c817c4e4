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
    """Each product is bit for bit the path it should take: F.linear's up to plain_rows rows, oneDNN's above."""
    g = torch.Generator().manual_seed(plain_rows)
    w, b = torch.randn(96, 64, generator=g), torch.randn(96, generator=g)
    lin = Linear(w, b, keep_plain=True)
    assert lin.packed is not None and lin.weight is w
    lin.plain_rows = plain_rows
    for rows in (1, 2, 3, 5):
        x = torch.randn(rows, 64, generator=g)
        want = F.linear(x, w, b) if rows <= plain_rows else lin.onednn(x)
        assert torch.equal(lin(x), want)


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
