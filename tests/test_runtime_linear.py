"""`Linear` / `pack_linears`: oneDNN's and MKL's packed products agree with `F.linear` in float32 and, when asked
for, bfloat16; other dtypes stay on `F.linear`. A tuned `Linear` takes each product where `tune` measured it
fastest."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from redrafter_trt.runtime.linear import PRODUCTS, Linear, pack_linears, plan_from, tune

pytestmark = pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="needs oneDNN")


@pytest.mark.parametrize("rows", [1, 3, 17])
def test_float32_packed_matches_f_linear(rows):
    g = torch.Generator().manual_seed(rows)
    w, b, x = torch.randn(96, 64, generator=g), torch.randn(96, generator=g), torch.randn(2, rows, 64, generator=g)
    lin = Linear(w, b)
    assert set(lin.products) == {"onednn"} and lin.plan == [(None, "onednn")]
    torch.testing.assert_close(lin(x), F.linear(x, w, b), atol=1e-4, rtol=1e-4)


def test_pack_linears_takes_bfloat16_only_when_asked():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 96), torch.nn.ReLU(), torch.nn.Linear(96, 32)).to(torch.bfloat16)
    x = torch.randn(5, 64, dtype=torch.bfloat16)
    with torch.no_grad():
        ref = model(x)
        assert pack_linears(model) == 0
        # oneDNN packs bfloat16 only with avx512bw/vl/dq or avx_ne_convert: an AVX2-only CPU (CI's may be one) keeps
        # F.linear, and the test asked for 2 there
        packs = torch.ops.mkldnn._is_mkldnn_bf16_supported()
        assert pack_linears(model, dtypes=(torch.float32, torch.bfloat16)) == (2 if packs else 0)
        out = model(x)
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out.float(), ref.float(), atol=3e-2, rtol=2e-2)


@pytest.mark.parametrize("rows", [1, 5, 16, 17, 40])
def test_every_candidate_product_matches_f_linear_and_they_round_differently(rows):
    """The products a small float32 model is timed over: each agrees with F.linear (bias) at row counts below, at and
    above the one MKL's layout is made for, and they round differently, so the tests below can tell which one ran."""
    g = torch.Generator().manual_seed(rows)
    w, b = torch.randn(96, 1024, generator=g), torch.randn(96, generator=g)
    lin = Linear(w, b, products=PRODUCTS)
    assert {"plain", "onednn"} <= set(lin.products)
    if torch.backends.mkl.is_available():
        assert "mkl_packed" in lin.products
    x = torch.randn(rows, 1024, generator=g)
    outs = {name: fn(x) for name, fn in lin.products.items()}
    for name, out in outs.items():
        torch.testing.assert_close(out, F.linear(x, w, b), atol=1e-4, rtol=1e-4, msg=name)
    assert not torch.equal(outs["plain"], outs["onednn"])


def test_a_planned_linear_takes_each_product_for_its_row_count():
    """Bit for bit the product the plan names, rows counted over every leading dimension; no rows give no rows."""
    g = torch.Generator().manual_seed(1)
    w, b = torch.randn(96, 1024, generator=g), torch.randn(96, generator=g)
    lin = Linear(w, b, products=PRODUCTS)
    lin.plan = [(2, "plain"), (None, "onednn")]
    for shape in [(1, 1024), (2, 1024), (1, 2, 1024), (2, 2, 1024), (5, 1024)]:
        x = torch.randn(*shape, generator=g)
        want = "plain" if x.numel() <= 2 * 1024 else "onednn"
        assert torch.equal(lin(x), lin.products[want](x.reshape(-1, 1024)).view(*shape[:-1], 96)), shape
    assert lin(torch.randn(0, 1024)).shape == (0, 96)
    assert lin(torch.randn(3, 0, 1024)).shape == (3, 0, 96)


@pytest.mark.parametrize("seconds, want", [
    # the Intel Xeon's shape (session 18, ms): MKL's packing within 20% of F.linear at 1-3 rows and fastest above:
    # kept alone (one copy of the weights)
    ({1: {"plain": 24, "onednn": 35, "mkl_packed": 24}, 2: {"plain": 25, "onednn": 33, "mkl_packed": 27},
      3: {"plain": 28, "onednn": 37, "mkl_packed": 30}, 4: {"plain": 42, "onednn": 40, "mkl_packed": 30},
      8: {"plain": 53, "onednn": 41, "mkl_packed": 32}}, [(None, "mkl_packed")]),
    # a load on that Xeon in session 19 (ms): MKL's packing 28% slower than F.linear at 3 rows: two kept
    ({1: {"onednn": 34.8, "mkl_packed": 32.6, "plain": 29.6}, 2: {"onednn": 42.9, "mkl_packed": 36.9, "plain": 34.0},
      3: {"onednn": 45.7, "mkl_packed": 40.4, "plain": 31.5}, 4: {"onednn": 42.2, "mkl_packed": 41.4, "plain": 63.3},
      8: {"onednn": 42.7, "mkl_packed": 38.2, "plain": 66.9}, 16: {"onednn": 59.4, "mkl_packed": 55.3, "plain": 73.9}},
     [(3, "plain"), (None, "mkl_packed")]),
    # the AMD EPYCs': oneDNN everywhere
    ({1: {"plain": 2.0, "onednn": 1.0}, 4: {"plain": 2.0, "onednn": 1.0}}, [(None, "onednn")]),
    # within 5% of the fastest fits: the product that fits more counts takes a near-tie
    ({1: {"plain": 1.0, "onednn": 2.0}, 2: {"plain": 1.0, "onednn": 0.97}, 3: {"plain": 1.0, "onednn": 2.0},
      4: {"plain": 3.0, "onednn": 1.0}}, [(3, "plain"), (None, "onednn")]),
    ({1: {"plain": 6.8, "onednn": 4.4}, 2: {"plain": 3.5, "onednn": 4.7}, 4: {"plain": 6.2, "onednn": 4.6}},
     [(1, "onednn"), (2, "plain"), (None, "onednn")]),
    # session 18's `bench_linear.py` on the Intel Xeon (ms): MKL's packing within 16% everywhere, kept alone
    ({1: {"onednn": 31.6, "plain": 27.8, "mkl_packed": 27.8},
      2: {"onednn": 35.9, "plain": 27.9, "mkl_packed": 32.2},
      3: {"onednn": 41.2, "plain": 33.8, "mkl_packed": 36.0},
      4: {"onednn": 42.4, "plain": 55.1, "mkl_packed": 36.0},
      8: {"onednn": 43.4, "plain": 71.4, "mkl_packed": 37.0},
      12: {"onednn": 52.8, "plain": 94.8, "mkl_packed": 46.8},
      24: {"onednn": 73.6, "plain": 97.1, "mkl_packed": 75.9}},
     [(None, "mkl_packed")]),
])
def test_the_plan_keeps_the_fewest_products_fitting_every_row_count(seconds, want):
    assert plan_from(seconds) == want


BUSY = {1: {"onednn": 81.6, "plain": 58.0, "mkl_packed": 63.7},
        2: {"onednn": 82.7, "plain": 60.8, "mkl_packed": 69.8},
        3: {"onednn": 94.9, "plain": 65.5, "mkl_packed": 66.5},
        4: {"onednn": 107.7, "plain": 113.5, "mkl_packed": 90.3},
        6: {"onednn": 108.9, "plain": 189.4, "mkl_packed": 93.5},
        8: {"onednn": 113.5, "plain": 214.2, "mkl_packed": 96.7},
        12: {"onednn": 127.7, "plain": 200.8, "mkl_packed": 107.4},
        16: {"onednn": 130.7, "plain": 176.5, "mkl_packed": 167.6}}


def test_a_busy_machine_still_keeps_two_products_at_most():
    """Measured beside a training job: no two products fit every count. Two are kept all the same, and a count
    neither fits takes the faster of the two."""
    plan = plan_from(BUSY)
    kept = {name for _, name in plan}
    assert len(kept) == 2 and plan[-1][0] is None
    for rows, times in BUSY.items():
        name = next(n for limit, n in plan if limit is None or rows <= limit)
        fastest_kept = min(kept, key=times.get)
        assert name == fastest_kept or 0.95 * times[name] <= min(times.values()), rows


def test_tune_sets_every_linear_and_drops_the_products_it_does_not_use():
    lins = [Linear(torch.randn(96, 64), products=PRODUCTS) for _ in range(3)]
    plan = tune(lins)
    used = {name for _, name in plan}
    assert plan[-1][0] is None and all(lin.plan == plan and set(lin.products) == used for lin in lins)
    assert all(lin(torch.randn(r, 64)).shape == (r, 96) for lin in lins for r in (1, 5, 40))
    if len(used) == 1:
        assert tune(lins) is None  # nothing left to time


def test_a_second_load_follows_the_first_loads_plan_untimed(monkeypatch):
    """Timed once per process: the same shapes again take the first plan (the two loads then decode alike) without
    timing; other shapes or another thread count are timed."""
    from redrafter_trt.runtime import linear

    calls = []

    def fake_times(linears, names, rows, n):
        calls.append(rows)
        fastest = "plain" if len(calls) <= len(linear.PROBE_ROWS) else "onednn"  # a second timing would differ
        return {name: 1.0 if name == fastest else 2.0 for name in names}

    monkeypatch.setattr(linear, "_TIMED", {})
    monkeypatch.setattr(linear, "time_products", fake_times)
    fresh = lambda n=96: [Linear(torch.randn(n, 64), products=PRODUCTS) for _ in range(2)]  # noqa: E731
    assert tune(fresh()) == [(None, "plain")]
    assert tune(fresh()) == [(None, "plain")] and len(calls) == len(linear.PROBE_ROWS)
    assert tune(fresh(80)) == [(None, "onednn")] and len(calls) == 2 * len(linear.PROBE_ROWS)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(threads + 1)
        tune(fresh())
    finally:
        torch.set_num_threads(threads)
    assert len(calls) == 3 * len(linear.PROBE_ROWS)


def test_the_plan_can_be_pinned_for_run_to_run_reproducible_rounding(monkeypatch):
    from redrafter_trt.errors import ConfigError

    lins = [Linear(torch.randn(96, 64), products=PRODUCTS) for _ in range(2)]
    monkeypatch.setenv("REDRAFTER_TRT_LINEAR_PLAN", "plain:2,onednn")
    assert tune(lins) == [(2, "plain"), (None, "onednn")]
    assert all(set(lin.products) == {"plain", "onednn"} for lin in lins)
    for bad in ("plain:2", "plain:3,onednn:2,plain", "plain:3,onednn:3,mkl_packed", "plain:x,onednn", ""):
        monkeypatch.setenv("REDRAFTER_TRT_LINEAR_PLAN", bad)
        with pytest.raises(ConfigError, match="REDRAFTER_TRT_LINEAR_PLAN=.*give PRODUCT:ROWS pairs"):
            tune([Linear(torch.randn(96, 64), products=PRODUCTS)])
    monkeypatch.setenv("REDRAFTER_TRT_LINEAR_PLAN", "cublas")
    with pytest.raises(ConfigError, match="cublas is not a product: use plain, onednn, mkl_packed"):
        tune([Linear(torch.randn(96, 64), products=PRODUCTS)])
    monkeypatch.setenv("REDRAFTER_TRT_LINEAR_PLAN", "mkl_packed")  # as where torch has no MKL
    with pytest.raises(ConfigError, match="mkl_packed is not available on this machine: use onednn, plain"):
        tune([Linear(torch.randn(96, 64), products=("plain", "onednn"))])


def test_a_pin_builds_only_the_products_it_names(monkeypatch, tiny_llama, tiny_drafter):
    """A review's mutant (candidate_products giving all three whatever the pin) passed: tune drops the products its
    plan does not use, but only after the model has built them (three copies of its weights at load)."""
    from redrafter_trt import runtime as rt
    from redrafter_trt.runtime import linear
    from test_runtime_support import checkpoint

    built = []
    for name in ("_onednn", "_mkl_packed"):
        monkeypatch.setattr(linear, name, lambda *args, name=name: built.append(name))  # as if unavailable: None
    monkeypatch.setenv("REDRAFTER_TRT_LINEAR_PLAN", "plain")
    rt.load(checkpoint(tiny_llama, tiny_drafter), drafter_int8=False)
    assert built == []
    assert linear.candidate_products() == ("plain",)
    monkeypatch.delenv("REDRAFTER_TRT_LINEAR_PLAN")
    assert linear.candidate_products() == PRODUCTS


@pytest.mark.parametrize("pin", ["onednn", "plain:3,onednn"])
def test_a_small_float32_base_is_tuned_at_load_and_others_are_not(monkeypatch, tiny_llama, tiny_drafter, pin):
    """The model's wiring: every base linear, the lm_head and the drafter's linears share the plan and keep only its
    products; a pinned plan keeps the float16 screen (the pre-tuning choice); a bfloat16 load is never tuned."""
    from redrafter_trt import runtime as rt
    from redrafter_trt.runtime.linear import parse_plan
    from test_runtime_support import checkpoint

    monkeypatch.setenv("REDRAFTER_TRT_LINEAR_PLAN", pin)
    ckpt = checkpoint(tiny_llama, tiny_drafter)
    model = rt.load(ckpt, drafter_int8=False)
    base, drafter = model.base, model.drafter
    linears = [lin for L in base.layers for lin in (L.qkv, L.dense, L.fc_gate, L.proj)] + [base.lm_head]
    linears += [lin for lin in (drafter.input_proj, *drafter.layers, drafter.rnn_u, drafter.rnn_w, drafter.head_fn)
                if lin is not None]
    assert base.linear_plan == parse_plan(pin)
    assert all(lin.plan == parse_plan(pin) and set(lin.products) == {n for _, n in lin.plan} for lin in linears)
    assert base.screened_argmax is not None
    half = rt.load(ckpt, dtype=torch.bfloat16)
    assert half.base.linear_plan is None
    assert all(lin.plan == [(None, "plain")] and set(lin.products) == {"plain"}
               for lin in [L.qkv for L in half.base.layers] + half.drafter.layers)


def test_loading_leaves_torch_global_random_state_alone(tiny_llama, tiny_drafter):
    """A review: load() timed the CPU products (tune) and the float16 screen (ScreenedArgmax.pays) on torch.randn
    inputs drawn from torch's global generator, so a caller's torch.manual_seed(0) before load gave other numbers
    after it. The timing inputs come from a generator of their own."""
    from redrafter_trt import runtime as rt
    from test_runtime_support import checkpoint

    ckpt = checkpoint(tiny_llama, tiny_drafter)
    torch.manual_seed(0)
    want = torch.rand(3)
    torch.manual_seed(0)
    model = rt.load(ckpt)
    assert model.base.linear_plan is not None  # timed
    assert torch.equal(torch.rand(3), want)
