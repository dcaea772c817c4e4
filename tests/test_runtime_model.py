"""Base logits from the checkpoint equal Hugging Face's (float32), at tp 1 and through the tp path; the drafter
read from the checkpoint computes what Apple's Drafter module computes; beam search keeps Apple's rules."""

from __future__ import annotations

import pytest
import torch

from redrafter_trt import runtime as rt
from redrafter_trt.drafter import Drafter, load_drafter
from redrafter_trt.runtime.drafter import LOG_0, TOP_K
from tinymodels import make_drafter, make_hf
from test_runtime_support import one_thread, checkpoint, eos_of, fresh_drafter, hf_greedy, hf_model  # noqa: F401

IDS = [1, 17, 33, 5, 250, 99, 3, 3, 42, 7, 128, 64, 200, 11]

pytestmark = pytest.mark.usefixtures("one_thread")


def hf_logits(base, ids):
    with torch.no_grad():
        return hf_model(base)(torch.tensor([ids])).logits[0].float()


@pytest.mark.parametrize("fixture", ["tiny_llama", "tiny_llama_tied", "tiny_qwen2", "tiny_qwen3", "tiny_llama_bias"])
@pytest.mark.parametrize("tp", [1, 2])
def test_tiny_logits_match_hf(request, fixture, tp, tiny_drafter):
    base = request.getfixturevalue(fixture)
    ckpt = checkpoint(base, tiny_drafter, tp)
    got = rt.forward_logits_tp(ckpt, IDS)
    torch.testing.assert_close(got, hf_logits(base, IDS), atol=2e-5, rtol=1e-5)


def test_qwen3_qk_norms_use_the_engine_epsilon(tmp_path, tiny_drafter):
    """TensorRT-LLM's QWenDecoderLayer builds Qwen3's q_layernorm / k_layernorm without an eps (Attention's default,
    1e-5), while transformers' Qwen3 uses rms_norm_eps (1e-6 in Qwen3's configs) there too: the runtime computes the
    engine's, so its logits are transformers' with the q/k norms' epsilon set to 1e-5, and every other norm's 1e-6."""
    from transformers import AutoModelForCausalLM

    # q_proj weights of 0.003 make each head's mean square near 1e-5, where the two epsilons differ visibly
    base = make_hf(tmp_path / "b", "qwen3", head_dim=32, rms_norm_eps=1e-6, initializer_range=0.003)
    got = rt.forward_logits_tp(checkpoint(base, tiny_drafter, 1), IDS)
    hf = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
    with torch.no_grad():
        as_is = hf(torch.tensor([IDS])).logits[0]
        for layer in hf.model.layers:
            layer.self_attn.q_norm.variance_epsilon = layer.self_attn.k_norm.variance_epsilon = 1e-5
        engine = hf(torch.tensor([IDS])).logits[0]
    torch.testing.assert_close(got, engine, atol=2e-5, rtol=1e-5)
    assert not torch.allclose(got, as_is, atol=2e-5, rtol=1e-5)  # the test can tell the two apart


def test_llama3_rope_scaling_matches_hf(tmp_path):
    scaling = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 16}
    base = make_hf(tmp_path / "l3", "llama", rope_theta=500000.0, rope_scaling=scaling, rope_layout="top")
    ckpt = checkpoint(base, make_drafter(tmp_path / "d", base), 1)
    ids = (IDS * 4)[:48]
    torch.testing.assert_close(rt.forward_logits_tp(ckpt, ids), hf_logits(base, ids), atol=2e-5, rtol=1e-5)


# yarn bases as convert takes them (TensorRT-LLM builds the same RoPE), rope_theta 100 so that the ramp between
# interpolated and extrapolated frequencies spans dimensions of head_size 16. max_position_embeddings is factor x
# original_max_position_embeddings where that is given (transformers warns otherwise).
YARN_BASES = [
    ("qwen2", {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16}, 64),  # Qwen2.5's model card
    ("llama", {"rope_type": "yarn", "factor": 4.0}, 32),  # transformers' original: max_position_embeddings
    ("llama", {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16, "beta_fast": 2,
               "beta_slow": 0.5}, 64),
    ("qwen2", {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16, "mscale": 2.0,
               "mscale_all_dim": 1.0}, 64),
]


@pytest.mark.parametrize("arch, scaling, positions", YARN_BASES)
def test_yarn_rope_scaling_matches_hf(tmp_path, arch, scaling, positions):
    """The reference runtime refused a YaRN base (Qwen2.5 / Qwen3 past 32k) that convert and TensorRT-LLM take: past
    original_max_position_embeddings its logits and greedy output (drafting or not) are transformers'."""
    import json

    base = make_hf(tmp_path / "b", arch, rope_theta=100.0, rope_scaling=scaling, rope_layout="top",
                   max_position_embeddings=positions)
    raw = json.loads((base / "config.json").read_text())  # the scaling as given (transformers 5 adds the original)
    (base / "config.json").write_text(json.dumps(raw | {"rope_scaling": scaling}))
    ckpt = checkpoint(base, make_drafter(tmp_path / "d", base), 1)
    ids = (IDS * 4)[:48]
    torch.testing.assert_close(rt.forward_logits_tp(ckpt, ids), hf_logits(base, ids), atol=2e-5, rtol=1e-5)
    prompt, model = IDS + IDS[:6], rt.load(ckpt)
    want = hf_greedy(base, prompt, 28)
    for use_draft in (False, True):
        assert rt.generate(model, [prompt], 28, eos_token_id=eos_of(base), use_draft=use_draft).output_ids == [want]


@pytest.mark.parametrize("layout", ["top", "params"])
def test_every_hf_load_computes_the_rope_convert_writes(tmp_path, layout):
    """transformers 4.x (TensorRT-LLM 1.2 pins 4.57.3) reads no `rope_parameters`: a base saved by transformers 5 ran
    with rope_theta 10000 in distillation, bench's baseline and FP8 calibration, while convert wrote its own."""
    from redrafter_trt.hf_model import load_causal_lm

    scaling = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 16}
    base = make_hf(tmp_path / "b", "llama", rope_theta=500000.0, rope_scaling=scaling, rope_layout=layout)
    ckpt = checkpoint(base, make_drafter(tmp_path / "d", base), 1)
    ids = (IDS * 4)[:48]
    with torch.no_grad():
        hf = load_causal_lm(base, torch.float32)(torch.tensor([ids])).logits[0]
    torch.testing.assert_close(rt.forward_logits_tp(ckpt, ids), hf, atol=2e-5, rtol=1e-5)


def assert_as_accurate_as_hf(base, got: torch.Tensor, ids: list[int], factor: float = 4.0):
    """Through 30 layers float32 rounding differs with the kernels (oneDNN's here, MKL's in transformers): judge
    both against transformers in float64 and require our error within `factor` x transformers' float32 error."""
    model = hf_model(base)
    with torch.no_grad():
        ref = model.double()(torch.tensor([ids])).logits[0]
        model.float()
        hf_err = (model(torch.tensor([ids])).logits[0].double() - ref).abs().max().item()
    our_err = (got.double() - ref).abs().max().item()
    assert our_err <= factor * hf_err + 1e-5, f"max |error| vs float64: ours {our_err:.2e}, transformers {hf_err:.2e}"


def test_smollm2_logits_match_hf(smollm2):
    ckpt = checkpoint(smollm2, fresh_drafter(smollm2), 1)
    ids = list(range(1, 60, 3)) + [2000, 30000, 49151]
    assert_as_accurate_as_hf(smollm2, rt.forward_logits_tp(ckpt, ids), ids)


def test_smollm2_logits_tp3(smollm2):
    ckpt = checkpoint(smollm2, fresh_drafter(smollm2), 3)
    ids = [1, 504, 3458, 314, 260, 2000, 30000]
    assert_as_accurate_as_hf(smollm2, rt.forward_logits_tp(ckpt, ids), ids)


@pytest.mark.parametrize("variant", [dict(rnn=True), dict(rnn=False), dict(exit_dim=48, num_draft_layers=1)])
def test_drafter_matches_apple_module(tmp_path, tiny_llama, variant):
    folder = make_drafter(tmp_path / "d", tiny_llama, **variant)
    dcfg, tensors = load_drafter(folder)
    ref = Drafter(dcfg)
    ref.load_state_dict(tensors)
    model = rt.load(checkpoint(tiny_llama, folder, 1), drafter_int8=False)
    g = torch.Generator().manual_seed(0)
    context, state = torch.randn(3, 64, generator=g), torch.randn(3, 64, generator=g)
    tokens = torch.tensor([5, 77, 200])
    emb = model.base.embed_tokens(tokens)
    with torch.no_grad():
        torch.testing.assert_close(model.drafter.next_state(state, tokens), ref.next_state(state, emb))
        torch.testing.assert_close(model.drafter.logits(context, state), ref.logits(context, state))


def reference_beam_search(drafter, embed, context, token, W, steps, top_k=TOP_K):
    """Apple's formulation, written out directly: all W beams start, only beam 0 with log-prob 0; the full
    vocabulary in every step."""
    B, H = context.shape
    beams = token[:, None, None].expand(B, W, 1)
    score = torch.full((B, W), LOG_0)
    score[:, 0] = 0
    state = torch.zeros(B, W, H)
    ctx = context[:, None].expand(B, W, H)
    for _ in range(steps):
        state = drafter.next_state(state, embed(beams[..., -1]))
        logits = drafter.logits(ctx, state)
        logits = logits - logits.max(-1, keepdim=True).values
        kth = logits.topk(top_k, -1).values[..., -1:]
        logp = logits.masked_fill(logits < kth, LOG_0).log_softmax(-1)
        score, idx = (logp + score[..., None]).reshape(B, -1).topk(W, -1)
        V = logits.shape[-1]
        rows = torch.arange(B)[:, None]
        beams = torch.cat([beams[rows, idx // V], (idx % V)[..., None]], -1)
        state = state[rows, idx // V]
    return beams


def test_beam_search_matches_reference(tmp_path, tiny_llama):
    folder = make_drafter(tmp_path / "d", tiny_llama)
    dcfg, tensors = load_drafter(folder)
    ref = Drafter(dcfg)
    ref.load_state_dict(tensors)
    model = rt.load(checkpoint(tiny_llama, folder, 1), drafter_int8=False)
    g = torch.Generator().manual_seed(1)
    context, token = torch.randn(2, 64, generator=g), torch.tensor([3, 100])
    got = model.drafter.beam_search(context, token, 4, 3)
    with torch.no_grad():
        want = reference_beam_search(ref, model.base.embed_tokens, context, token, 4, 3)
    assert got.shape == (2, 4, 4)
    assert torch.equal(got, want)
    assert torch.equal(got[:, :, 0], token[:, None].expand(2, 4))


def test_default_load_drafts_in_the_checkpoint_dtype_as_the_engine(tmp_path, tiny_llama):
    """A review: `load` (so acceptance, bench, run and serve) drafted through an int8 copy of the head on CPU by
    default, while TensorRT-LLM's engine drafts in the checkpoint's dtype: on SmolLM2 over half of the W=4 L=2
    beam searches proposed other drafts and predicted tokens per step moved (1.157 against 1.165 at W=4 L=4), and the trtllm sampling
    rule accepted against int8's q. By default the drafts and their log-probabilities are now the reference's."""
    folder = make_drafter(tmp_path / "d", tiny_llama)
    dcfg, tensors = load_drafter(folder)
    ref = Drafter(dcfg)
    ref.load_state_dict(tensors)
    ckpt = checkpoint(tiny_llama, folder, 1)
    model = rt.load(ckpt)
    g = torch.Generator().manual_seed(3)
    context, token = torch.randn(64, 64, generator=g) * 4, torch.randint(0, 256, (64,), generator=g)
    with torch.no_grad():
        want = reference_beam_search(ref, model.base.embed_tokens, context, token, 4, 3)
    beams, logp = model.drafter.beam_search(context, token, 4, 3, with_logp=True)
    assert torch.equal(beams, want)
    exact = rt.load(ckpt, drafter_int8=False).drafter
    assert torch.equal(logp, exact.beam_search(context, token, 4, 3, with_logp=True)[1])
    fast = rt.load(ckpt, drafter_int8=True).drafter  # the int8 head drafts otherwise here: the check has teeth
    assert not torch.equal(fast.beam_search(context, token, 4, 3), want)


def test_int8_drafter_head_close(tiny_llama, tiny_drafter):
    exact = rt.load(checkpoint(tiny_llama, tiny_drafter, 1), drafter_int8=False).drafter
    fast = rt.load(checkpoint(tiny_llama, tiny_drafter, 1), drafter_int8=True).drafter
    assert fast.head_fn is not None
    g = torch.Generator().manual_seed(2)
    context, state = torch.randn(256, 64, generator=g), torch.randn(256, 64, generator=g)
    a, b = exact.logits(context, state), fast.logits(context, state)
    rel = ((a - b).pow(2).mean() / a.pow(2).mean()).sqrt().item()
    agree = (a.argmax(-1) == b.argmax(-1)).float().mean().item()
    print(f"int8 drafter head: relative rms error {rel:.4f}, top-1 agreement {agree:.3f}")
    assert rel < 0.05 and agree > 0.9
    # the weights it multiplies by: each row rounded to the nearest of 255 steps of max |row| / 127, none clipped.
    # The head of the identity gives them times one factor (its input's own quantization of 1.0), divided out by
    # each row's largest weight, which the grid holds exactly. A review's mutant dividing the row max by 64, not
    # 127 (half the steps), measured 0.99 of a step here against 0.50 but passed the bounds above (0.015, 0.961)
    w = fast.lm_head.double()
    got = fast.head_fn(torch.eye(w.shape[1])).T.double()
    big = w.abs().argmax(1, keepdim=True)
    got = got / got.gather(1, big) * w.gather(1, big)
    steps = ((got - w).abs().amax(1) / (w.abs().amax(1) / 127)).max().item()
    print(f"int8 drafter head: weights within {steps:.4f} of a step")
    assert steps <= 0.5 + 1e-3
    # each row is quantized alone: a prompt's drafts do not depend on what is batched beside it. Compared on one
    # input to the head: the linears before it follow the plan timed at load, and MKL's products (`plain`,
    # `mkl_packed`, picked on an Intel Xeon or by a disturbed timing) round a row by the rows beside it
    loud = torch.cat([context[:1], 50 * context[1:]])
    x = fast.features(loud, state)
    assert torch.equal(fast.head_fn(x)[:1], fast.head_fn(x[:1]))
    beams = fast.beam_search(loud, torch.arange(256) % 7, 4, 3)
    assert torch.equal(beams[:1], fast.beam_search(loud[:1], torch.tensor([0]), 4, 3))


@pytest.mark.parametrize("vnni", ["this CPU's", False])
@pytest.mark.parametrize("E", [1, 8])
def test_int8_head_rows_alone_at_any_magnitude(E, vnni, monkeypatch):
    """Each row alone and within 3% of its largest logit, at any magnitude. Without VNNI fbgemm's int16 pair sums
    saturated (an AMD EPYC's AVX2: 0.80 of the largest logit at E=8); there the inputs take 7 bits, a path a VNNI CPU
    takes here too where told it has none."""
    from redrafter_trt.runtime.drafter import _int8_head

    if vnni is False:
        monkeypatch.setattr(torch.cpu, "_is_vnni_supported", lambda: False)
    g = torch.Generator().manual_seed(0)
    weight = torch.randn(50, E, generator=g)
    head = _int8_head(weight)
    x = torch.randn(6, E, generator=g) * torch.tensor([1e-35, 1e-20, 1.0, 3.0, 1e20, 1e30])[:, None]
    got = head(x)
    for i in range(6):
        assert torch.equal(head(x[i: i + 1])[0], got[i])  # the same alone as beside any other row
        want = x[i].double() @ weight.double().T
        assert ((got[i].double() - want).abs().max() / want.abs().max()).item() < 0.03, i


@pytest.mark.parametrize("engine, vnni, reduced", [("x86", True, False), ("x86", False, True), ("fbgemm", False, True),
                                                   ("onednn", False, True), ("qnnpack", False, False)])
def test_int8_head_takes_7_bit_inputs_only_where_the_products_saturate(engine, vnni, reduced, monkeypatch):
    """7-bit inputs only on an x86 engine without VNNI: a VNNI CPU keeps 8 bits (twice the steps), and qnnpack (ARM:
    Apple silicon) has no saturating sums and warned of an ignored reduce_range at every draft step."""
    from redrafter_trt.runtime.drafter import _int8_head

    if engine not in torch.backends.quantized.supported_engines:
        pytest.skip(f"this torch has no {engine} engine")
    monkeypatch.setattr(torch.backends.quantized, "engine", engine)
    monkeypatch.setattr(torch.cpu, "_is_vnni_supported", lambda: vnni)
    seen, product = [], torch.ops.quantized.linear_dynamic
    monkeypatch.setattr(torch.ops.quantized, "linear_dynamic", lambda *args: seen.append(args[2:]) or product(*args))
    g = torch.Generator().manual_seed(0)
    weight, x = torch.randn(50, 16, generator=g), torch.randn(3, 16, generator=g)
    got = _int8_head(weight)(x)
    assert seen == [(reduced,)]
    if reduced or engine == "qnnpack":  # (8 bits on an x86 CPU told it has VNNI saturate where it has none)
        want = x.double() @ weight.double().T
        assert ((got.double() - want).abs().amax(1) / want.abs().amax(1)).max().item() < 0.03


def pruned_drafter(folder):
    """The drafter at `folder` with two thirds of its head's rows zeroed (tokens our trainer never saw): 86 of 256
    rows computed."""
    from safetensors.torch import load_file, save_file

    weights = load_file(folder / "model.safetensors")
    head = next(k for k in weights if k.startswith("lm_head.") and k.count(".") == 2)
    weights[head][torch.arange(256) % 3 != 0] = 0
    save_file(weights, folder / "model.safetensors")
    return folder


def test_pruned_beam_search_matches_full_vocabulary(tmp_path, tiny_llama, monkeypatch):
    """Steps where every zero-row token is masked work on the 86 computed tokens alone; the beams equal the full
    vocabulary's (Apple's reference) through both paths: the 35th of 86 logits is above 0 in some steps only.
    The drafts' log-probabilities (TensorRT-LLM's draft_probs) are the full-vocabulary step's too: the same top 35
    tokens kept, the same values but for the last bits of log_softmax's sum (a review's mutant masking the 35th
    token of a compact step too, `<=` for `<`, kept 34 and changed only these, beams and greedy outputs alike)."""
    import copy

    from redrafter_trt.runtime import drafter as drafter_mod

    monkeypatch.setattr(drafter_mod, "TOP_K", 35)
    folder = pruned_drafter(make_drafter(tmp_path / "d", tiny_llama))
    dcfg, tensors = load_drafter(folder)
    ref = Drafter(dcfg)
    ref.load_state_dict(tensors)
    model = rt.load(checkpoint(tiny_llama, folder, 1), drafter_int8=False)
    assert model.drafter.compact_rows is not None and len(model.drafter.compact_rows) == 86
    full = copy.copy(model.drafter)  # before the spy below: its steps all take the full vocabulary
    full.compact_rows = None
    compact = []
    step_logp = model.drafter.step_logp

    def spy(*args):
        out = step_logp(*args)
        compact.append(out[1] is not None)
        return out

    monkeypatch.setattr(model.drafter, "step_logp", spy)
    g = torch.Generator().manual_seed(4)
    for scale in (0.3, 1.0, 3.0):
        context, token = scale * torch.randn(6, 64, generator=g), torch.randint(0, 256, (6,), generator=g)
        for W, L in ((1, 3), (4, 3), (35, 2)):
            got, logp = model.drafter.beam_search(context, token, W, L, with_logp=True)
            with torch.no_grad():
                want = reference_beam_search(ref, model.base.embed_tokens, context, token, W, L, top_k=35)
            assert torch.equal(got, want), (scale, W, L)
            beams, want_logp = full.beam_search(context, token, W, L, with_logp=True)
            assert torch.equal(beams, want)
            # masked: -50000 less the log-sum (full), or -inf (left out of a compact step); kept: above -1e4
            kept = logp > -1e4
            assert torch.equal(kept, want_logp > -1e4), (scale, W, L)
            assert bool((kept.sum(-1) >= 35).all())  # more at ties: a 35th logit of 0 keeps every zero row
            assert torch.allclose(logp[kept], want_logp[kept], rtol=0, atol=1e-5), (scale, W, L)
    print(f"beam-search steps on the computed tokens alone: {sum(compact)} of {len(compact)}")
    assert 0 < sum(compact) < len(compact)


def test_pruned_beam_search_with_more_beams_than_top_k_drafts_over_the_full_vocabulary(tmp_path, tiny_llama,
                                                                                        monkeypatch):
    """More beams than the top k (36 and 60 of TOP_K 35): a step keeps beams past the k tokens a beam allows, masked
    ties that the compact columns would name among the computed tokens only (other drafts at draft length 1, other
    log-probabilities at 2), so every step takes the full vocabulary and the drafts and their log-probabilities are
    the uncompacted drafter's; the same inputs at 35 beams do work on the computed tokens alone in some steps (a
    review's mutant dropping `num_beams <= TOP_K` went unseen)."""
    import copy

    from redrafter_trt.runtime import drafter as drafter_mod

    monkeypatch.setattr(drafter_mod, "TOP_K", 35)
    folder = pruned_drafter(make_drafter(tmp_path / "d", tiny_llama))
    pruned = rt.load(checkpoint(tiny_llama, folder, 1), drafter_int8=False).drafter
    full = copy.copy(pruned)
    full.compact_rows = None
    compact = {}
    step_logp = pruned.step_logp

    def spy(context, state, num_beams):
        out = step_logp(context, state, num_beams)
        compact.setdefault(num_beams, []).append(out[1] is not None)
        return out

    monkeypatch.setattr(pruned, "step_logp", spy)
    g = torch.Generator().manual_seed(4)
    for scale in (1.0, 3.0):
        context, token = scale * torch.randn(6, 64, generator=g), torch.randint(0, 256, (6,), generator=g)
        pruned.beam_search(context, token, 35, 2)  # the premise: below
        for W, L in ((36, 1), (36, 2), (60, 1), (60, 2)):
            got = pruned.beam_search(context, token, W, L, with_logp=True)
            want = full.beam_search(context, token, W, L, with_logp=True)
            assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1]), (scale, W, L)
    assert any(compact[35]) and not any(compact[36] + compact[60])


def test_pruned_drafter_head_same_logits(tmp_path, tiny_llama):
    """Rows of zeros (tokens the trainer never saw) are skipped and scattered back: identical logits."""
    folder = pruned_drafter(make_drafter(tmp_path / "d", tiny_llama))
    pruned = rt.load(checkpoint(tiny_llama, folder, 1), drafter_int8=False).drafter
    assert pruned.head_rows is not None and len(pruned.head_rows) == 86
    g = torch.Generator().manual_seed(3)
    context, state = torch.randn(8, 64, generator=g), torch.randn(8, 64, generator=g)
    dense = torch.nn.functional.linear(pruned.features(context, state), pruned.lm_head)
    assert torch.allclose(pruned.logits(context, state), dense.float(), atol=1e-6)


def test_load_names_a_folder_that_is_no_checkpoint(tiny_llama, tiny_drafter):
    """`runtime.load` (what the scripts call) on a Hugging Face model or an Apple drafter said "rank0.safetensors is
    missing: the checkpoint is incomplete, re-run convert"; it names what the folder holds, as `run` does."""
    from redrafter_trt.errors import ConfigError

    for folder, kind in ((tiny_llama, "a Hugging Face model"), (tiny_drafter, "an Apple ReDrafter drafter")):
        with pytest.raises(ConfigError, match=f"holds {kind}, not a ReDrafter checkpoint: make one with"):
            rt.load(folder)



def test_load_names_a_file_given_as_the_checkpoint_folder(tiny_llama, tiny_drafter):
    """A review: `runtime.load` (any entry point, since it inspects) on a checkpoint's rank file said the folder "does
    not exist"; it says the path is a file, as the drafter and base folders' checks do."""
    from redrafter_trt.errors import ConfigError

    rank0 = checkpoint(tiny_llama, tiny_drafter, 1) / "rank0.safetensors"
    with pytest.raises(ConfigError, match=f"^checkpoint folder {rank0} is a file, not a folder: pass the folder"):
        rt.load(rank0)

def test_fp8_weights_stored_as_int8_run_as_fp8(tiny_llama, tiny_drafter, tmp_path):
    """A review: FP8 weights stored as int8 (older exporters' layout, which TensorRT-LLM views as FP8, and which
    inspect passes) were read by the runtime as integers, 56 becoming 56.0 times nothing: every linear garbage, no
    error. They are viewed as FP8 and dequantised now; an integer tensor without a scale, or int8 weights of another
    quant_algo (SmoothQuant's), is refused in one line."""
    import json
    import shutil

    from safetensors.torch import load_file, save_file

    from redrafter_trt.errors import ConfigError, TensorError
    from redrafter_trt.runtime.model import read_rank_file

    fp8 = tmp_path / "fp8"
    shutil.copytree(checkpoint(tiny_llama, tiny_drafter, 1), fp8)
    tensors = load_file(fp8 / "rank0.safetensors")
    for name in [n for n in tensors if n.startswith("transformer.layers.") and n.endswith(".weight")
                 and "norm" not in n]:
        scale = tensors[name].abs().max().reshape(1) / 448
        tensors[name] = (tensors[name] / scale).to(torch.float8_e4m3fn)
        tensors[name.removesuffix("weight") + "weights_scaling_factor"] = scale
        tensors[name.removesuffix("weight") + "activation_scaling_factor"] = torch.ones(1)  # as an FP8 export's
    save_file(tensors, fp8 / "rank0.safetensors")
    cfg = json.loads((fp8 / "config.json").read_text())
    fp8_cfg = {"quant_algo": "FP8", "exclude_modules": ["lm_head", "drafter*"]}  # what inspect (so load) requires
    (fp8 / "config.json").write_text(json.dumps(cfg | {"quantization": fp8_cfg}))
    as_int8 = tmp_path / "int8"
    shutil.copytree(fp8, as_int8)
    save_file({n: t.view(torch.int8) if t.dtype == torch.float8_e4m3fn else t for n, t in tensors.items()},
              as_int8 / "rank0.safetensors")
    want = rt.forward_logits(rt.load(fp8), IDS)
    torch.testing.assert_close(want, hf_logits(tiny_llama, IDS), atol=0.1, rtol=0)  # FP8 rounding only
    assert torch.equal(rt.forward_logits(rt.load(as_int8), IDS), want)
    name = "transformer.layers.0.mlp.proj.weight"  # int8 without a scale beside it: no FP8 bits, no weights
    unscaled = {n: t for n, t in tensors.items() if n != name.removesuffix("weight") + "weights_scaling_factor"}
    save_file(unscaled | {name: tensors[name].view(torch.int8)}, as_int8 / "rank0.safetensors")
    # load refuses both through inspect's checks (`run`'s line), before the runtime's own reading of the rank file
    with pytest.raises(ConfigError, match=f"missing tensors {name.removesuffix('weight')}weights_scaling_factor"):
        rt.load(as_int8)
    with pytest.raises(TensorError, match=f"{name} is int8, which the reference runtime does not dequantise"):
        read_rank_file(as_int8, 0)
    smooth_quant = fp8_cfg | {"quant_algo": "W8A8_SQ_PER_CHANNEL"}
    (as_int8 / "config.json").write_text(json.dumps(cfg | {"quantization": smooth_quant}))
    with pytest.raises(ConfigError, match="quant_algo 'W8A8_SQ_PER_CHANNEL' is not supported"):
        rt.load(as_int8)
    with pytest.raises(ConfigError, match="quant_algo 'W8A8_SQ_PER_CHANNEL' is not run by the reference runtime"):
        read_rank_file(as_int8, 0)
    save_file({n: t.view(torch.int8) if t.dtype == torch.float8_e4m3fn else t for n, t in tensors.items()},
              as_int8 / "rank0.safetensors")  # scaled int8 weights, but a config that names no FP8: not viewed as FP8
    (as_int8 / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(TensorError, match=r"transformer\.layers\.0\..*\.weight is int8, which the reference runtime"):
        read_rank_file(as_int8, 0)


def test_a_checkpoint_written_again_since_it_was_opened_is_opened_again(tiny_llama, tiny_drafter, tmp_path):
    """A review: a Checkpoint (runtime.open_checkpoint) is taken as checked, config included; a folder converted
    again into after it was opened (the quickstart re-converts its checkpoint in place) ran the weights on disk with
    the config read before: another rotary_base's logits, and a config inspect now refuses was run. The entry points
    open it again when its config or rank files changed."""
    import json
    import shutil

    from redrafter_trt.errors import ConfigError

    folder = tmp_path / "ck"
    shutil.copytree(checkpoint(tiny_llama, tiny_drafter, 1), folder)
    opened = rt.open_checkpoint(folder)
    raw = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps(raw | {"rotary_base": raw["rotary_base"] / 7}))
    want = rt.forward_logits(rt.load(folder), IDS)
    assert not torch.equal(want, rt.forward_logits(rt.load(checkpoint(tiny_llama, tiny_drafter, 1)), IDS))
    torch.testing.assert_close(rt.forward_logits(rt.load(opened), IDS), want, atol=0, rtol=0)
    (folder / "config.json").write_text(json.dumps(raw | {"mapping": {"world_size": 2, "tp_size": 1}}))
    with pytest.raises(ConfigError, match="is not valid: "):
        rt.load(opened)


def test_a_config_rewritten_to_the_same_size_is_read_again(tiny_llama, tiny_drafter, tmp_path):
    """A config edited in place to the same length (rotary_base 10000.0 -> 20000.0) keeps its size: its modification
    time alone tells the opened Checkpoint that it changed, and the new config is loaded."""
    import os
    import shutil

    folder = tmp_path / "ck"
    shutil.copytree(checkpoint(tiny_llama, tiny_drafter, 1), folder)
    opened = rt.open_checkpoint(folder)
    before = rt.forward_logits(rt.load(opened), IDS)
    config = folder / "config.json"
    text, st = config.read_text(), config.stat()
    assert text.count('"rotary_base": 10000.0') == 1
    config.write_text(text.replace('"rotary_base": 10000.0', '"rotary_base": 20000.0'))
    os.utime(config, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert config.stat().st_size == st.st_size
    got = rt.forward_logits(rt.load(opened), IDS)
    assert not torch.equal(got, before)
    torch.testing.assert_close(got, rt.forward_logits(rt.load(folder), IDS), atol=0, rtol=0)
