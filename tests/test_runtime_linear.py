"""`Linear` / `pack_linears`: oneDNN's packed products agree with `F.linear` in float32 and, when asked for,
bfloat16; other dtypes stay on `F.linear`."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from redrafter_trt.runtime.linear import Linear, pack_linears

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
