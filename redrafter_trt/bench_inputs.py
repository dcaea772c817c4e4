"""What `bench` and `acceptance` check before loading a model: the checkpoint (limits, a drafter, the tokenizer
folder; a tp>1 one run with its ranks merged), the (beam width, draft length) grids, the prompts taken, and for bench
the Hugging Face base of the transformers baseline: --hf-dir or the base `convert` recorded, a Hugging Face model
whose tensors match its config.json, and the checkpoint's base in shape and in a few rows of its weights.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

from .base_rows import HfRows, TrtllmRows
from .base_sample import SAME_WEIGHTS_TOLERANCE, SAMPLED_ROWS, relative_difference, sampled_names, spread
from .errors import ConfigError, RedrafterError
from .layout import tp_size
from .plural import are, counted
from .prompts import spread_indices
from .producer import absolute, recorded_source
from .runtime.folder import Checkpoint, open_checkpoint
from .runtime.merge import merge_ranks

log = logging.getLogger(__name__)


def check_checkpoint(opts) -> Checkpoint:
    """The checks `bench` and `acceptance` share: limits, a checkpoint with a drafter, the tokenizer folder; the
    checkpoint opened (`runtime.open_checkpoint`: one opened before is not inspected again), a tp>1 one to run with
    its ranks merged in this process (`runtime.merge.merge_ranks`)."""
    if opts.max_new_tokens < 1:
        raise ConfigError(f"--max-new-tokens {opts.max_new_tokens} is invalid: use 1 or more")
    if opts.num_prompts is not None and opts.num_prompts < 1:
        raise ConfigError(f"--num-prompts {opts.num_prompts} is invalid: use 1 or more")
    ckpt = open_checkpoint(opts.checkpoint_dir)  # a Hugging Face folder is named as no checkpoint, not as "no drafter"
    cfg = ckpt.config
    if not cfg.has_drafter:
        raise ConfigError(f"{opts.checkpoint_dir} has no drafter (no redrafter_* keys): pass a checkpoint "
                          f"converted with --drafter")
    if not Path(opts.tokenizer_dir).is_dir():
        raise ConfigError(f"tokenizer folder {opts.tokenizer_dir} does not exist: pass --tokenizer-dir with the base's "
                          f"Hugging Face folder")
    return merge_ranks(ckpt)


def merge_note(ckpt: Checkpoint) -> str | None:
    """The line bench and acceptance print for a checkpoint whose rank files `load` merges (None: a tp=1 one)."""
    if not ckpt.merged:
        return None
    tp = tp_size(ckpt.raw)
    return (f"{ckpt} is tp={tp}: its {tp} rank files merged into one process for this measurement (the whole model "
            f"in memory); tokens/step are the tp={tp} model's up to the order of its row-parallel sums (a near-tie, "
            f"rarely)")


def model_meta(ckpt: Checkpoint) -> dict:
    """What bench's and acceptance's JSON `meta` say of the model measured: its quantisation (`quant_algo`: FP8, or
    None), the checkpoint's tp (its config.json's) and whether its rank files were merged into this process
    (merge_note)."""
    return {"quant_algo": (ckpt.raw.get("quantization") or {}).get("quant_algo"),
            "checkpoint_tp_size": tp_size(ckpt.raw), "ranks_merged": ckpt.merged}


def default_grid(maximum: int) -> tuple[int, ...]:
    """1, 2, 4, ... below `maximum`, then `maximum`."""
    out, v = [], 1
    while v < maximum:
        out.append(v)
        v *= 2
    return tuple(out + [maximum])


def check_grid(values: tuple[int, ...], maximum: int, flag: str, key: str,
               fix: Callable[[int], str]) -> tuple[int, ...]:
    """The values, sorted (none: default_grid); refused outside 1..maximum, `fix` saying how to get the largest
    (`reconvert with --num-beams 8`, RuntimeConfig.draft_len_fix)."""
    values = tuple(sorted(set(values))) or default_grid(maximum)
    bad = [v for v in values if not 1 <= v <= maximum]
    if bad:
        larger = f", or {fix(max(values))}" if max(values) > maximum else ""
        raise ConfigError(f"{flag} {bad[0]} is outside 1..{maximum} (the checkpoint's {key}): pass values up to "
                          f"{maximum}{larger}")
    return values


def reconvert_beams(wanted: int) -> str:
    return f"reconvert with --num-beams {wanted}"


def pick_prompts(texts: list[str], num_prompts: int | None) -> tuple[list[int], list[str]]:
    """(indices, prompts): the --num-prompts prompts bench and acceptance measure (spread_indices; all without it); a
    file holding fewer is said, not hidden (the JSON's meta records both: `num_prompts_asked`, `num_prompts`
    measured, and `prompt_indices`)."""
    if num_prompts and num_prompts > len(texts):
        n = len(texts)
        log.warning("--num-prompts %d, but there %s only %s: measuring %s", num_prompts, are(n),
                    counted(n, "prompt"), "it" if n == 1 else f"those {n}")
    indices = spread_indices(len(texts), num_prompts)
    return indices, [texts[i] for i in indices]


def file_number(indices: list[int], i: int, in_file: int) -> str:
    """` (#9 of 80)` after the progress line of the i-th prompt measured, where pick_prompts took some of the file's
    `in_file` prompts ("" where it took all: the i-th is the file's too); no "in the file", which the quickstart's user
    never named."""
    return "" if len(indices) == in_file else f" (#{indices[i] + 1} of {in_file})"


def prompts_meta(indices: list[int], in_file: int) -> dict:
    """What bench's and acceptance's JSON `meta` say of the prompts pick_prompts took from a file of `in_file`."""
    return {"num_prompts": len(indices), "prompts_in_file": in_file, "prompt_indices": indices}


def paths_meta(opts) -> dict:
    """What bench's and acceptance's JSON `meta` say of the checkpoint, tokenizer and prompts read: absolute paths,
    as producer.sources records them (a relative one named a folder the JSON does not)."""
    return {"checkpoint_dir": absolute(opts.checkpoint_dir), "tokenizer_dir": absolute(opts.tokenizer_dir),
            "prompts": absolute(opts.prompts)}


def resolve_hf_dir(hf_dir: Path | None, ckpt_config: dict, checkpoint_dir: Path) -> Path:
    """The Hugging Face base for the transformers baseline: --hf-dir, else the checkpoint's recorded base."""
    from .config import BaseModelConfig, read_json

    if hf_dir is None:
        recorded = recorded_source(ckpt_config, "base")
        if not recorded:
            raise ConfigError(f"{checkpoint_dir} records no base model (producer.sources.base): pass --hf-dir with "
                              f"the Hugging Face folder of its base")
        hf_dir, origin = Path(recorded), f"recorded in {checkpoint_dir}/config.json"
    else:
        hf_dir, origin = Path(hf_dir), "--hf-dir"
    raw = hf_dir / "config.json"
    if not raw.is_file():
        raise ConfigError(f"base folder {hf_dir} ({origin}) has no config.json: pass --hf-dir with the Hugging Face "
                          f"folder of the checkpoint's base")
    hf = read_json(raw, f"base ({origin})")
    if "architectures" not in hf:
        raise ConfigError(f"base folder {hf_dir} ({origin}) is not a Hugging Face model (a TensorRT-LLM checkpoint?): "
                          f"pass --hf-dir with the Hugging Face folder of the checkpoint's base")
    check_base_folder(BaseModelConfig.from_hf(hf, str(raw)), ckpt_config, hf_dir, origin, checkpoint_dir)
    return hf_dir


def check_base_folder(b, ckpt_config: dict, hf_dir: Path, origin: str, checkpoint_dir: Path) -> None:
    """The base's tensors named and shaped as its config.json says (headers only, as convert checks them: weights that
    disagree were transformers' RuntimeError traceback, 'ignore_mismatched_sizes', when the baseline loaded), then
    the checkpoint's base in shape and in a few rows of its weights."""
    from .base_plan import check_hf_tensors
    from .io import TensorSource

    try:
        src = TensorSource.from_hf_folder(hf_dir)
    except RedrafterError:  # no weights, or a truncated file: load_hf_baseline names it as transformers sees it
        check_same_base(b, ckpt_config, hf_dir, origin, checkpoint_dir)
        return
    try:
        check_hf_tensors(src, b, hf_dir)
        check_same_base(b, ckpt_config, hf_dir, origin, checkpoint_dir)
        check_same_weights(src, b, ckpt_config, hf_dir, origin, checkpoint_dir)
    finally:
        src.close()


# (the checkpoint's field, the Hugging Face config's value, the checkpoint's value when the field is absent)
SHAPE_FIELDS = (("num_hidden_layers", lambda b: b.num_layers, None),
                ("hidden_size", lambda b: b.hidden_size, None),
                ("intermediate_size", lambda b: b.intermediate_size, None),
                ("num_attention_heads", lambda b: b.num_heads, None),
                ("num_key_value_heads", lambda b: b.num_kv_heads, lambda c: c["num_attention_heads"]),
                ("head_size", lambda b: b.head_size, lambda c: c["hidden_size"] // c["num_attention_heads"]),
                ("vocab_size", lambda b: b.vocab_size, None))


def check_same_base(b, ckpt_config: dict, hf_dir: Path, origin: str, checkpoint_dir: Path) -> None:
    """The transformers baseline is the checkpoint's base in shape: another model (a larger one of the family, with
    the same tokenizer) was timed as 'transformers' without a word but 'agree on 0/N prompts', and every
    speedup_vs_hf, `best` among them, was measured against it."""
    for key, hf_value, absent in SHAPE_FIELDS:
        ours = ckpt_config.get(key)
        if ours is None and absent is not None:
            ours = absent(ckpt_config)
        if ours != hf_value(b):
            raise ConfigError(f"base folder {hf_dir} ({origin}) is not the checkpoint's base: its {key} is "
                              f"{hf_value(b)}, {checkpoint_dir}'s {ours}: {source_fix(hf_dir, ckpt_config)}")


def check_same_weights(src, b, ckpt_config: dict, hf_dir: Path, origin: str, checkpoint_dir: Path) -> None:
    """SAMPLED_ROWS rows of each of sampled_names (lm_head, the embedding, every linear of the first, middle and last
    layers) in `src` (the base's TensorSource) are the checkpoint's within SAME_WEIGHTS_TOLERANCE (a few KiB read of
    a large base): a model of the same shapes but other weights (a fine-tune, the instruct model of a base, a LoRA
    merged into any linear) was timed as the baseline, and bench reported 'agree on 0/N prompts'."""
    from .checkpoint import RECONVERT

    theirs, ours = HfRows(src), TrtllmRows(Path(checkpoint_dir), ckpt_config, fix=RECONVERT)  # any tp: by its raw
    try:
        for name in sampled_names(b.num_layers):
            if ours.dtype(name) is None:  # an FP8 checkpoint's quantised linears
                continue
            rows = spread(theirs.shape(name)[0], SAMPLED_ROWS)
            relative = relative_difference(theirs.rows(name, rows), ours.rows(name, rows))
            if relative > SAME_WEIGHTS_TOLERANCE:
                raise ConfigError(f"base folder {hf_dir} ({origin}) is not the checkpoint's base: its {name} is not "
                                  f"{checkpoint_dir}'s (relative difference {relative:.2g} in {SAMPLED_ROWS} rows): "
                                  f"{source_fix(hf_dir, ckpt_config)}")
    finally:
        ours.close()


def source_fix(hf_dir: Path, ckpt_config: dict) -> str:
    """What to pass instead of a base folder that is not the checkpoint's: the one convert recorded, unless that is
    the folder refused (it holds another model now)."""
    recorded = recorded_source(ckpt_config, "base")
    fix = "pass --hf-dir with the Hugging Face folder the checkpoint was converted from"
    if recorded is None:
        return fix
    if Path(recorded).resolve() == Path(hf_dir).resolve():
        return f"{hf_dir} changed since convert recorded it: {fix}"
    return f"{fix} (convert recorded {recorded})"
