"""The float16-screened greedy argmax equals the float32 logits' argmax: on near ties built on purpose, exact ties
(first index wins), non-finite inputs, and SmolLM2's own hidden states, whose float16 error must stay inside the
bound the screen relies on."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from redrafter_trt import runtime as rt
from redrafter_trt.runtime.argmax import MAX_ROWS, SAFETY, ScreenedArgmax
from test_runtime_support import chat_prompts, checkpoint, fresh_drafter, one_thread  # noqa: F401

pytestmark = pytest.mark.usefixtures("one_thread")


def screen(weight: torch.Tensor) -> ScreenedArgmax:
    s = ScreenedArgmax.create(weight)
    assert s is not None, "fbgemm float16 GEMM is missing from this torch build"
    return s


def test_near_ties_are_decided_in_float32():
    gen = torch.Generator().manual_seed(0)
    V, K, R = 4096, 256, 256
    weight = torch.randn(V, K, generator=gen) * 0.05
    x = torch.randn(R, K, generator=gen) * 3
    # for each row, a rival token (an unrelated row, moved along x) whose float32 logit sits 1e-5..1e-2 above or
    # below the row's best: closer than float16's rounding of the weights can tell apart
    logits = F.linear(x, weight)
    best = logits.argmax(-1)
    gaps = torch.logspace(-5, -2, R) * torch.where(torch.arange(R) % 2 == 0, 1.0, -1.0)
    for r in range(R):
        rival = (int(best[r]) + 1 + r) % V
        target = logits[r, best[r]] + gaps[r]
        weight[rival] += (target - weight[rival] @ x[r]) * x[r] / x[r].norm() ** 2
    s = screen(weight)
    want = F.linear(x, weight).argmax(-1)
    assert torch.equal(s(x), want)
    assert s.candidates(x).numel() < V // 4  # the screen still rules most tokens out


def test_worst_case_float16_rounding_keeps_the_rival_a_candidate():
    """A review's mutants (the bound without float16's 2^-11 rounding term, or built from the smallest row norm)
    passed on random weights, whose rounding errors cancel. Here they add up: token 0's weights sit half an ulp
    above 1, so float16 rounds every one down by 2^-11 relative (ties to even) and its approximate logit falls
    below token 1's, float16-exact and just under token 0's in float32; a zero row makes the smallest norm 0."""
    K = 64
    rival = torch.ones(K)
    rival[: K // 2 - 1] = 1 + 2.0**-10
    weight = torch.stack([torch.full((K,), 1 + 2.0**-11), rival, torch.zeros(K)])  # [3, K]
    x = torch.ones(1, K)
    s = screen(weight)
    approx = s.approx(x)[0]
    assert float(approx[0]) < float(approx[1]), "float16 no longer turns the order round: the case tests nothing"
    assert int(F.linear(x, weight).argmax(-1)) == 0
    assert s.candidates(x).tolist() == [0, 1]
    assert s(x).tolist() == [0]


def test_float16_rounding_down_the_maximum_and_up_its_rival_keeps_the_maximum():
    """A mutant survived: candidates() reaching one bound (0.5 * ... instead of 2 * ... of the screen's reach) below
    the approximate maximum, not two, passed the case above, where only token 0's rounding errors add up. Here both
    rows' do, in opposite directions: token 0's weights sit half an ulp above 1 (float16 rounds each down by 2^-11,
    ties to even), token 1's half an ulp above 1 + 2^-10 (each rounded up by 2^-11) but for one weight, exact in
    float16, that puts its float32 logit 2^-11 under token 0's. The approximate gap is then more than one row's
    bound: only a reach of both rows' bounds keeps token 0."""
    K = 64
    rival = torch.full((K,), 1 + 3 * 2.0**-11)
    rival[-1] = 1 - 126 * 2.0**-11
    weight = torch.stack([torch.full((K,), 1 + 2.0**-11), rival, torch.zeros(K)])  # [3, K]
    x = torch.ones(1, K)
    s = screen(weight)
    exact, approx = F.linear(x, weight)[0], s.approx(x)[0]
    assert float(exact[0] - exact[1]) == 2.0**-11 and int(exact.argmax()) == 0
    assert float(approx[0]) < float(exact[0]) and float(approx[1]) > float(exact[1]), "rounding no longer adverse"
    one_bound = float(x.norm()) * (s.rel * s.max_row_norm + s.abs) / SAFETY  # the proven bound of the largest row
    assert float(approx[1] - approx[0]) > one_bound, "the rows' errors no longer exceed one bound: the case is weak"
    assert s.candidates(x).tolist() == [0, 1]
    assert s(x).tolist() == [0]


def test_errors_up_to_the_bound_in_opposite_directions_keep_the_maximum():
    """The screen holds wherever each row's approximate logit is within the bound it uses (SAFETY times the proven
    one): real float16 rounding stays under the proven bound, so a reach of one used bound (a surviving mutant, 1 *
    instead of 2 * in candidates()) passed every float16 case. Here the approximate product is replaced by the exact
    logits with the maximum's lowered and its rival's raised by 0.99 of that bound each: only a reach of two bounds
    keeps the maximum a candidate."""
    gen = torch.Generator().manual_seed(5)
    K = 64
    x = torch.randn(1, K, generator=gen)
    w = x[0] + 0.5 * torch.randn(K, generator=gen)  # the maximum, well above the third row
    rival = w.clone()
    rival[0] -= 1e-4 / float(x[0, 0])  # its logit 1e-4 under the maximum's, far less than the bound
    weight = torch.stack([w, rival, torch.randn(K, generator=gen) * 0.1])
    s = screen(weight)
    exact = F.linear(x, weight)
    bound = float(x.norm()) * (s.rel * weight.norm(dim=1) + s.abs)  # [V]: each row's bound, as the screen uses it
    assert 0 < float(exact[0, 0] - exact[0, 1]) < 0.01 * float(bound[:2].min()) and int(exact.argmax()) == 0
    adverse = exact.clone()
    adverse[0, 0] -= 0.99 * bound[0]
    adverse[0, 1] += 0.99 * bound[1]
    s.approx = lambda flat: adverse
    assert 0 in s.candidates(x).tolist()
    assert s(x).tolist() == [0]


def test_exact_ties_pick_the_first_index_and_shapes_follow_the_input():
    weight = torch.randn(300, 32, generator=torch.Generator().manual_seed(1))
    weight[250] = weight[7]
    x = weight[7].expand(2, 3, 32).clone()  # token 7 and its copy 250 share the maximum
    got = screen(weight)(x)
    assert got.shape == (2, 3) and bool((got == 7).all())


def test_non_finite_input_falls_back_to_the_full_logits():
    weight = torch.randn(100, 16, generator=torch.Generator().manual_seed(2))
    x = torch.randn(3, 16, generator=torch.Generator().manual_seed(3))
    x[1, 4] = float("nan")
    assert torch.equal(screen(weight)(x), F.linear(x, weight).argmax(-1))


def test_overflowing_logits_fall_back_to_the_full_logits():
    """A finite input whose logits overflow float32 (inf, or NaN from inf - inf) left no candidate in its row: the
    exact argmax over none raised IndexError alone, and batched took another row's candidate."""
    weight = torch.randn(100, 16, generator=torch.Generator().manual_seed(0)) * 3
    x = torch.randn(2, 16, generator=torch.Generator().manual_seed(1))
    x[1] *= 1e38
    s = screen(weight)
    assert bool(torch.isfinite(x).all())
    assert torch.equal(s(x[1:]), F.linear(x[1:], weight).argmax(-1))
    assert torch.equal(s(x), F.linear(x, weight).argmax(-1))


def test_timed_under_a_float64_default_dtype():
    """pays() timed the screen on torch.randn inputs, float64 under a user's torch.set_default_dtype(torch.float64):
    fbgemm's float16 product refused them ('expected scalar type Float but found Double') as the model loaded."""
    weight = torch.randn(100, 16, generator=torch.Generator().manual_seed(2))
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        assert screen(weight).pays(lambda x: F.linear(x, weight)) in (True, False)
    finally:
        torch.set_default_dtype(before)


def test_not_used_where_the_bound_does_not_apply():
    w = torch.randn(10, 8)
    assert ScreenedArgmax.create(w.half()) is None
    big = w.clone()
    big[3, 3] = 7e4  # beyond float16's range
    assert ScreenedArgmax.create(big) is None


def test_smollm2_hidden_states_within_the_bound_and_argmax_equal(smollm2):
    from redrafter_trt.runtime.model import read_rank_file

    ckpt = checkpoint(smollm2, fresh_drafter(smollm2), 1)
    base = rt.load(ckpt).base  # its own screen only where it pays on this machine (ScreenedArgmax.pays)
    rows = []
    for ids in chat_prompts(smollm2, 4):
        cache = base.new_cache(1, len(ids))
        T = len(ids)
        rows.append(base.forward(torch.tensor([ids]), torch.arange(T)[None],
                                 torch.ones(1, T, T, dtype=torch.bool).tril(), cache)[0])
    hidden = torch.cat(rows)  # [R, H]
    s = screen(read_rank_file(ckpt, 0)["lm_head.weight"][: base.cfg.vocab_size].float())
    exact = F.linear(hidden.double(), s.weight.double())
    # the module docstring's bound, rebuilt here rather than read from the screen it checks
    K = hidden.shape[1]
    gamma = K * 2.0**-24 / (1 - K * 2.0**-24)
    x_norm = hidden.double().norm(dim=1, keepdim=True)  # [R, 1]
    w_norm = s.weight.double().norm(dim=1)[None]  # [1, V]
    bound = (2.0**-11 + 3 * gamma) * w_norm * x_norm + 2.0**-25 * math.sqrt(K) * x_norm  # [R, V]
    err = (s.approx(hidden).double() - exact).abs()
    assert bool((err <= bound).all()), f"float16 error {(err / bound).max():.3f} of the bound"
    # and the screen's own reach per unit |x| (candidates()) covers SAFETY times the largest row's bound
    largest = (2.0**-11 + 3 * gamma) * float(w_norm.max()) + 2.0**-25 * math.sqrt(K)
    assert s.rel * s.max_row_norm + s.abs >= SAFETY * largest * (1 - 1e-12)
    full = base.logits(hidden).argmax(-1)
    assert torch.equal(s(hidden), full)
    for rows in range(1, MAX_ROWS + 1):  # what greedy_tokens screens: plain steps and small trees
        assert torch.equal(base.greedy_tokens(hidden[-rows:][None]), full[-rows:][None])


def test_timing_leaves_torch_global_random_state_alone():
    """A review: pays() drew its timing inputs from torch's global generator, as the model loaded (load advanced a
    caller's torch.manual_seed)."""
    weight = torch.randn(100, 16, generator=torch.Generator().manual_seed(2))
    torch.manual_seed(0)
    want = torch.rand(3)
    torch.manual_seed(0)
    screen(weight).pays(lambda x: F.linear(x, weight))
    assert torch.equal(torch.rand(3), want)
