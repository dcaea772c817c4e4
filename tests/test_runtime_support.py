"""Helpers shared by the runtime tests (no tests here): checkpoints built with `convert()` and cached for the
session, fresh drafters for SmolLM2, Hugging Face greedy references, and a lookup drafter test double."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import torch

from redrafter_trt.convert import convert
from redrafter_trt.drafter import init_drafter_for_base
from tinymodels import make_drafter

MT_BENCH = str(Path(__file__).resolve().parents[1] / "redrafter_trt" / "data" / "mt_bench_questions.jsonl")
_ROOT = Path(tempfile.mkdtemp(prefix="redrafter-rt-tests-"))
_CACHE: dict = {}


def fresh_drafter(base: Path, seed: int = 0, randomize: bool = False, **kwargs) -> Path:
    """The output of `init-drafter` (identity ResBlocks, final projection from the base's lm_head) with this
    seed; randomize=True: every tensor random instead (a freshly initialised, untrained drafter)."""
    key = ("drafter", str(base), seed, randomize, tuple(sorted(kwargs.items())))
    if key not in _CACHE:
        folder = _ROOT / f"drafter{len(_CACHE)}"
        if randomize:
            make_drafter(folder, base, seed=seed, **kwargs)
        else:
            init_drafter_for_base(base, folder, seed=seed, **kwargs)
        _CACHE[key] = folder
    return _CACHE[key]


def checkpoint(base: Path, drafter: Path, tp_size: int = 1, **options) -> Path:
    key = ("ckpt", str(base), str(drafter), tp_size, tuple(sorted(options.items())))
    if key not in _CACHE:
        _CACHE[key] = convert(base, drafter, _ROOT / f"ckpt{len(_CACHE)}", tp_size=tp_size, **options)
    return _CACHE[key]


def hf_model(base: Path):
    key = ("hf", str(base))
    if key not in _CACHE:
        from transformers import AutoModelForCausalLM

        _CACHE[key] = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
    return _CACHE[key]


def hf_greedy(base: Path, prompt: list[int], max_new_tokens: int) -> list[int]:
    """transformers' greedy output (batch 1), prompt removed, stopping at the model's EOS like the runtime."""
    key = ("greedy", str(base), tuple(prompt), max_new_tokens)
    if key not in _CACHE:
        model = hf_model(base)
        with torch.no_grad():
            out = model.generate(torch.tensor([prompt]), max_new_tokens=max_new_tokens, do_sample=False,
                                 attention_mask=torch.ones(1, len(prompt), dtype=torch.long))
        _CACHE[key] = out[0, len(prompt):].tolist()
    return _CACHE[key]


def eos_of(base: Path):
    return hf_model(base).generation_config.eos_token_id


def chat_prompts(base: Path, n: int) -> list[list[int]]:
    from transformers import AutoTokenizer

    from redrafter_trt.prompts import load_prompts

    tok = AutoTokenizer.from_pretrained(base)
    return [tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=True,
                                    return_dict=False)
            for p in load_prompts(MT_BENCH)[:n]]


class LookupDrafter:
    """Test double for the drafter: proposes continuations copied from known sequences after an occurrence of the
    guaranteed token, corrupted at a random depth for some beams, so steps accept 0..L-1 tokens with shared
    prefixes (a real untrained drafter accepts almost nothing and would leave the cache bookkeeping untested)."""

    def __init__(self, sequences: list[list[int]], vocab_size: int, seed: int = 0):
        self.sequences, self.vocab = sequences, vocab_size
        self.gen = torch.Generator().manual_seed(seed)

    def _rand(self, n: int) -> list[int]:
        return torch.randint(0, self.vocab, (n,), generator=self.gen).tolist()

    def beam_search(self, context, token, num_beams, draft_len):
        B = token.shape[0]
        beams = torch.zeros(B, num_beams, draft_len + 1, dtype=torch.long)
        for b, t in enumerate(token.tolist()):
            follow = [s[i + 1: i + 1 + draft_len] for s in self.sequences for i, x in enumerate(s) if x == t]
            for w in range(num_beams):
                pick = follow[int(torch.randint(0, len(follow), (1,), generator=self.gen))] if follow else []
                pick = (pick + self._rand(draft_len))[:draft_len]
                cut = int(torch.randint(0, draft_len + 2, (1,), generator=self.gen))
                if cut < draft_len and w > 0:
                    pick = pick[:cut] + self._rand(draft_len - cut)
                beams[b, w] = torch.tensor([t] + pick)
        return beams.to(context.device)


@pytest.fixture
def one_thread():
    """Run the test with one intra-op thread: on these shared 2-core machines OpenMP's second thread makes small
    matmuls 30x slower under load. Restores the previous setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def chi_square_pvalue(counts: torch.Tensor, probs: torch.Tensor, min_expected: float = 5.0) -> float:
    """Pearson chi-square goodness of fit; categories expected below `min_expected` are pooled into one."""
    counts, probs = counts.double(), probs.double() / probs.sum()
    n = counts.sum()
    expected = probs * n
    big = expected >= min_expected
    obs = torch.cat([counts[big], counts[~big].sum()[None]])
    exp = torch.cat([expected[big], expected[~big].sum()[None]])
    if exp[-1] < 1e-9:
        obs, exp = obs[:-1], exp[:-1]
    stat = ((obs - exp) ** 2 / exp).sum()
    dof = len(obs) - 1
    return float(torch.special.gammaincc(torch.tensor(dof / 2.0, dtype=torch.float64), stat / 2))
