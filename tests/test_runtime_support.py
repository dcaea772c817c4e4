"""Helpers shared by the runtime tests (no tests here): checkpoints built with `convert()` and cached for the
session, fresh drafters for SmolLM2, Hugging Face greedy references, and a lookup drafter test double."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

from redrafter_trt.convert import convert
from redrafter_trt.drafter import init_drafter_for_base
from tinymodels import make_drafter, make_hf

MT_BENCH = str(Path(__file__).resolve().parents[1] / "redrafter_trt" / "data" / "mt_bench_questions.jsonl")
_ROOT = Path(tempfile.mkdtemp(prefix="redrafter-rt-tests-"))
_CACHE: dict = {}
_KEPT: set = set()  # folders release_folders leaves: the SmolLM2 checkpoint many modules share (smollm2_checkpoint)
atexit.register(shutil.rmtree, _ROOT, ignore_errors=True)


def release_folders() -> None:
    """Delete the cached checkpoints and drafters (a float32 SmolLM2 checkpoint is 0.8 GB; conftest calls this
    after each test module so the suite's disk use stays at one module's worth and the shared one,
    `smollm2_checkpoint`). Models in memory stay cached."""
    for key in [k for k in _CACHE if k[0] in ("drafter", "ckpt") and _CACHE[k] not in _KEPT]:
        shutil.rmtree(_CACHE.pop(key).parent, ignore_errors=True)


def fresh_drafter(base: Path, seed: int = 0, randomize: bool = False, **kwargs) -> Path:
    """The output of `init-drafter` (identity ResBlocks, final projection from the base's lm_head) with this
    seed; randomize=True: every tensor random instead (a freshly initialised, untrained drafter)."""
    key = ("drafter", str(base), seed, randomize, tuple(sorted(kwargs.items())))
    if key not in _CACHE:
        folder = Path(tempfile.mkdtemp(prefix="drafter", dir=_ROOT)) / "drafter"
        if randomize:
            make_drafter(folder, base, seed=seed, **kwargs)
        else:
            init_drafter_for_base(base, folder, seed=seed, **kwargs)
        _CACHE[key] = folder
    return _CACHE[key]


def _signature(folder: Path) -> tuple:
    """A folder's path and its files' sizes and mtimes: pytest reuses tmp_path names once a passed test's folder is
    removed, so the path alone would hand a later test a checkpoint of an earlier test's drafter."""
    stats = [(f.name, f.stat()) for f in sorted(Path(folder).iterdir())]
    return str(folder), tuple((name, st.st_size, st.st_mtime_ns) for name, st in stats)


def checkpoint(base: Path, drafter: Path, tp_size: int = 1, **options) -> Path:
    key = ("ckpt", _signature(base), _signature(drafter), tp_size, tuple(sorted(options.items())))
    if key not in _CACHE:
        _CACHE[key] = convert(base, drafter, Path(tempfile.mkdtemp(prefix="ckpt", dir=_ROOT)) / "ckpt", tp_size=tp_size,
                              **options)
    return _CACHE[key]


def smollm2_checkpoint(smollm2: Path) -> Path:
    """SmolLM2 with init-drafter's drafter (seed 0) at tp 1, 3 beams x 3 tokens: the checkpoint the run, serve and
    CLI modules share, converted once for the session and kept on disk by release_folders."""
    drafter = fresh_drafter(smollm2)
    path = checkpoint(smollm2, drafter, 1, num_beams=3, draft_len=3)
    _KEPT.update((drafter, path))
    return path


def tiny_sampling_checkpoint(folder: Path, chat_template: str | None = None) -> tuple[Path, Path]:
    """(base, checkpoint): a tiny Llama with a byte tokenizer (and this chat template) in `folder`, converted with
    greedy=False at 3 beams x 3 tokens, as a sampling engine's."""
    from test_bench import save_byte_tokenizer

    base = make_hf(folder / "base", "llama")
    save_byte_tokenizer(base, chat_template)
    return base, checkpoint(base, fresh_drafter(base), 1, num_beams=3, draft_len=3, greedy=False)


def hf_model(base: Path):
    key = ("hf", _signature(base))  # not the path alone: see _signature
    if key not in _CACHE:
        from transformers import AutoModelForCausalLM

        _CACHE[key] = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
    return _CACHE[key]


def hf_greedy(base: Path, prompt: list[int], max_new_tokens: int) -> list[int]:
    """transformers' greedy output (batch 1), prompt removed, stopping at the model's EOS like the runtime."""
    key = ("greedy", _signature(base), tuple(prompt), max_new_tokens)
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
