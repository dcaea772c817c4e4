"""Pure tensor-parallel arithmetic: which rows or columns of a source tensor a rank holds.

Ranges, not tensors, so the converter reads only a rank's part from disk. Tested through the converter: the
shards of every kind join back to the source (tests/test_convert.py). MERGES, at the end, is the inverse: a tp
checkpoint's ranks of one tensor joined back (rules.py's table; tests/test_tp_merge.py).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from .errors import ConfigError
from .plural import or_list

if TYPE_CHECKING:
    import torch

    from .runtime.config import RuntimeConfig


def even_range(n: int, tp_rank: int, tp_size: int) -> tuple[int, int]:
    """Rank's [start, stop) of n items cut in tp_size equal blocks (n must divide)."""
    if n % tp_size:
        raise ConfigError(f"internal: {n} is not divisible by tp {tp_size}")
    block = n // tp_size
    return tp_rank * block, (tp_rank + 1) * block


def padded_rows(n: int, tp_size: int) -> int:
    """Rows after zero-padding n to a multiple of tp_size (TensorRT-LLM's lm_head)."""
    return math.ceil(n / tp_size) * tp_size


def vocab_range(n: int, tp_rank: int, tp_size: int) -> tuple[int, int, int]:
    """(start, stop, pad) for a rank's rows of a vocab-padded tensor: real rows [start, stop) then `pad` zero rows."""
    block = padded_rows(n, tp_size) // tp_size
    start = min(tp_rank * block, n)
    stop = min((tp_rank + 1) * block, n)
    return start, stop, block - (stop - start)


def kv_head_range(num_kv_heads: int, tp_rank: int, tp_size: int) -> tuple[int, int]:
    """The kv heads a rank holds. When num_kv_heads < tp_size each head is repeated tp/nkv times,
    so rank r holds head r // (tp/nkv)."""
    if num_kv_heads >= tp_size:
        return even_range(num_kv_heads, tp_rank, tp_size)
    head = tp_rank // (tp_size // num_kv_heads)
    return head, head + 1


def row_home(n: int, row: int, tp_size: int) -> tuple[int, int]:
    """(rank, its row) holding `row` of n split in blocks of rows (even_range, or vocab_range's padded ones)."""
    block = padded_rows(n, tp_size) // tp_size
    return row // block, row % block


def qkv_home(part: int, row: int, num_heads: int, num_kv_heads: int, head_size: int,
             tp_size: int) -> tuple[int, int]:
    """(rank, its row of the fused qkv) holding `row` of q (part 0), k (1) or v (2); a kv head repeated over ranks
    (kv_head_range): its first rank."""
    q_rows = num_heads // tp_size * head_size
    if part == 0:
        return row // q_rows, row % q_rows
    kv_heads = max(num_kv_heads // tp_size, 1)  # a rank's
    rank = row // head_size // kv_heads * max(tp_size // num_kv_heads, 1)
    return rank, q_rows + (part - 1) * kv_heads * head_size + row % (kv_heads * head_size)


def qk_norm_misread(num_heads: int, num_kv_heads: int, tp_size: int) -> bool:
    """Whether TensorRT-LLM 1.2's Attention misreads a Qwen3 (per-head q/k norms) at this tp: a rank holding as many
    kv heads as heads, more than one, is normed as interleaved per head (Persimmon's layout), not as the q, k and v
    blocks written. Only one head a rank of a Qwen3 with as many kv heads as heads is read right."""
    return num_heads // tp_size == -(-num_kv_heads // tp_size) > 1


def qk_norm_problem(num_heads: int, num_kv_heads: int, tp_size: int) -> str:
    """Why a Qwen3 that qk_norm_misread names at this tp is refused (check_tp's and inspect's words; each adds its
    advice)."""
    return (f"a Qwen3 with {num_heads} heads and {num_kv_heads} kv heads has {num_heads // tp_size} of each a rank at "
            f"tp_size {tp_size}: TensorRT-LLM 1.2's Attention then norms q and k reading a rank's qkv as interleaved "
            f"per head (Persimmon's layout), not as the q, k and v blocks written, and its engine would compute another "
            f"model")


def tp_problem(num_heads: int, num_kv_heads: int, intermediate_size: int, tp_size: int,
               qk_norm: bool = False) -> str | None:
    """What about this base a tp_size of 1 or more breaks, worded after "--tp-size N" (None: nothing): TensorRT-LLM
    splits the heads and the MLP evenly, never one kv head, and (`qk_norm`: Qwen3) reads q/k norms right only where
    qk_norm_misread does not name the tp. check_tp, tp_sizes and inspect's config check share it."""
    if num_heads % tp_size:
        return f"does not divide the {num_heads} attention heads"
    if num_kv_heads % tp_size and tp_size % num_kv_heads:
        return f"and the {num_kv_heads} kv heads must divide one another (a kv head cannot be split)"
    if intermediate_size % tp_size:
        return f"does not divide the intermediate size {intermediate_size}"
    if qk_norm and qk_norm_misread(num_heads, num_kv_heads, tp_size):
        return f"is refused: {qk_norm_problem(num_heads, num_kv_heads, tp_size)}"
    return None


# Why a tp_size must divide the drafter's H and E (DRAFTER_ROWS) and its vocabulary V (DRAFTER_VOCAB), in convert's and
# inspect's refusals: TensorRT-LLM 1.2.x's Drafter splits its ColumnLinears by rows with no padding, and its
# ReDrafterMixin builds the drafter's lm_head at pad_vocab_size(V, tp) but declares the engine's draft_probs input (the
# drafter's probabilities fed back the next step) at V itself (models/redrafter/model.py, drafter.py)
DRAFTER_ROWS = "TensorRT-LLM splits the drafter's layers by rows without padding"
DRAFTER_VOCAB = ("TensorRT-LLM pads the drafter's lm_head to a multiple of tp_size, but declares its draft_probs input "
                 "with the unpadded vocab_size")


def tp_sizes(num_heads: int, num_kv_heads: int, intermediate_size: int, unpadded: tuple[int, ...] = (),
             qk_norm: bool = False) -> list[int]:
    """Every tp_size that check_tp accepts for this base, that divides each of `unpadded` (the drafter's H, E and V:
    DRAFTER_ROWS, DRAFTER_VOCAB) and, for a base with per-head q/k norms (`qk_norm`: Qwen3), that
    qk_norm_misread does not refuse. Divisors of what they share, found up to its square root: a mistyped head count
    (10**9) is not counted up to."""
    shared = math.gcd(num_heads, intermediate_size, *unpadded)
    low = [t for t in range(1, math.isqrt(shared) + 1) if not shared % t]
    return sorted(t for t in {*low, *(shared // t for t in low)}
                  if tp_problem(num_heads, num_kv_heads, intermediate_size, t, qk_norm) is None)


def tp_fits(num_heads: int, num_kv_heads: int, intermediate_size: int, unpadded: tuple[int, ...] = (),
            base_checkpoint: bool = False, qk_norm: bool = False) -> str:
    """The advice a tp refusal ends with: the sizes tp_sizes names (1 fits all but a Qwen3 with as many kv heads as
    heads, which may fit none). A TensorRT-LLM `base_checkpoint` is split already (--tp-size must be its own): its
    advice is to re-export it at one of them."""
    sizes = tp_sizes(num_heads, num_kv_heads, intermediate_size, unpadded, qk_norm)
    if not sizes:
        return (f"no --tp-size splits this model: a Qwen3 with as many kv heads as heads is read right by "
                f"TensorRT-LLM at one head a rank only (tp {num_heads}), which does not divide one of its "
                f"intermediate size, hidden size, vocabulary or drafter exit_dim: use another model")
    named = or_list(sizes)
    if base_checkpoint:
        return f"re-export the base at tp {named}, or convert its Hugging Face model at --tp-size {named}"
    return f"--tp-size {named} splits this model" if len(sizes) > 1 else f"use --tp-size {named}"


def resplit(sizes: list[int], current: int, how: str, wanted: int | None = None) -> str:
    """What a refusal of a checkpoint's tp_size `current` adds after 'pass `current`': ", or {how} N" for the tp sizes
    convert takes (`sizes`: tp_sizes's, or those of them a machine fits) other than `current`: `wanted` where it is
    one, else the others, saying that `wanted` does not split the model. A tp it names was once refused by convert."""
    refused = f" (tp {wanted} does not split this model)" if wanted is not None and wanted not in sizes else ""
    others = [wanted] if wanted in sizes else [s for s in sizes if s != current]
    return (f", or {how} {or_list(others)}" if others else "") + refused


def check_tp(num_heads: int, num_kv_heads: int, intermediate_size: int, tp_size: int,
             unpadded: tuple[int, ...] = (), qk_norm: bool = False) -> None:
    """TensorRT-LLM's constraints on a base model's tensor parallelism, as one-line errors. Each names the sizes
    that pass them all and divide `unpadded` (tp_sizes): a divisor of the heads alone (SmolLM2's 9) can fail on
    the intermediate size next, one of the base's (SmolLM2-360M's 5) on the drafter's vocabulary. A Qwen3 (`qk_norm`)
    is refused at a tp qk_norm_misread names (inspect's rule) here, before any weight is read or calibrated."""
    if tp_size < 1:
        raise ConfigError(f"--tp-size {tp_size} is invalid: use 1 or more")
    problem = tp_problem(num_heads, num_kv_heads, intermediate_size, tp_size, qk_norm)
    if problem is None:
        return
    fits = tp_fits(num_heads, num_kv_heads, intermediate_size, unpadded, qk_norm=qk_norm)
    raise ConfigError(f"--tp-size {tp_size} {problem}: {fits}")


def merge_qkv(parts: list[torch.Tensor], num_heads: int, num_kv_heads: int, head_size: int) -> torch.Tensor:
    """The tp=1 fused qkv [(nh + 2 nkv) hd, ...] from each rank's cat(q_r, k_r, v_r): every rank's q rows, then the k
    rows and the v rows of each kv head's first rank (kv_head_range: a head repeated over ranks is taken once)."""
    import torch

    tp = len(parts)
    q, kv = num_heads // tp * head_size, max(num_kv_heads // tp, 1) * head_size
    firsts = sorted({kv_head_range(num_kv_heads, r, tp): r for r in reversed(range(tp))}.values())
    return torch.cat([p[:q] for p in parts] + [parts[r][q + i * kv: q + (i + 1) * kv] for i in (0, 1) for r in firsts])


def _cat(dim: int, keep: str | None = None):
    """Ranks joined along `dim`; `keep` names the config field of how many rows to keep (a vocab's padding dropped)."""
    def cat(parts: list[torch.Tensor], cfg: RuntimeConfig) -> torch.Tensor:
        import torch

        whole = torch.cat(parts, dim)
        return whole[: getattr(cfg, keep)] if keep else whole
    return cat


# Each split kind's inverse (rules.py's table): a tensor's ranks, in rank order -> the tp=1 tensor
MERGES = {
    "replicate": lambda parts, cfg: parts[0],
    "rows": _cat(0),
    "cols": _cat(1),
    "qkv": lambda parts, cfg: merge_qkv(parts, cfg.num_heads, cfg.num_kv_heads, cfg.head_size),
    "vocab": _cat(0, keep="vocab_size"),
}
