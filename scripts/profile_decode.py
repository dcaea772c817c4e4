"""Where a drafted decoding step's time goes on this machine: greedy generation of a few prompts with the reference
runtime, each piece of the step loop timed around its call (wall clock, summed over all steps):
draft (the drafter's beam search), verify (the base forward over the tree), argmax (the base lm_head's greedy
tokens over the tree), accept (longest accepted path), commit (KV cache keeps the accepted path), prefill (the
prompt's forward and first token, apart from the steps' verify and argmax) and the rest of the loop.
Also prints plain decoding's time per step over the same prompts, so the drafted step's cost is a ratio measured in
the same run.

    python scripts/profile_decode.py --checkpoint-dir CKPT --tokenizer-dir SMOLLM2 [--beams 1] [--draft-len L]
        [--num-prompts 5] [--max-new-tokens 96] [--threads N] [--compile]
"""

from __future__ import annotations

import importlib
import time
from collections import defaultdict
from pathlib import Path

import click
import torch

from redrafter_trt.cli import Script

PIECES = {"draft": ("drafter", "beam_search"), "verify": ("base", "forward"), "argmax": ("base", "greedy_tokens")}


def timed(totals: dict, name: str, fn):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        out = fn(*args, **kwargs)
        totals[name] += time.perf_counter() - start
        return out
    return wrapper


def timed_apart(totals: dict, name: str, fn):
    """timed, but what the pieces called inside it add is taken back: the prefill's forward is no verify."""
    def wrapper(*args, **kwargs):
        before = {piece: totals[piece] for piece in PIECES}
        out = timed(totals, name, fn)(*args, **kwargs)
        totals.update(before)
        return out
    return wrapper


@click.command(cls=Script)
@click.option("--checkpoint-dir", required=True, type=click.Path(path_type=Path, exists=True))
@click.option("--tokenizer-dir", required=True, type=click.Path(path_type=Path, exists=True))
@click.option("--prompts", default=None, type=click.Path(path_type=Path), help="[default: the packaged MT-Bench]")
@click.option("--beams", default=1, show_default=True)
@click.option("--draft-len", type=click.IntRange(min=1), default=None, help="[default: the checkpoint's]")
@click.option("--num-prompts", default=5, show_default=True, type=click.IntRange(min=1),
              help="prompts spread evenly over the file, as bench takes them")
@click.option("--max-new-tokens", default=96, show_default=True, type=click.IntRange(min=1))
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="torch intra-op threads [default: torch's choice].")
@click.option("--compile", "compile_layers", is_flag=True, help="The base's layers compiled (runtime/compiled.py).")
def main(checkpoint_dir, tokenizer_dir, prompts, beams, draft_len, num_prompts, max_new_tokens, threads,
         compile_layers):
    import redrafter_trt.runtime as rt
    decode_mod = importlib.import_module("redrafter_trt.runtime.decode")
    from redrafter_trt.runtime.cache import KVCache
    from redrafter_trt.bench_inputs import check_grid, reconvert_beams
    from redrafter_trt.cli.bench_cmd import echo_merge_note
    from redrafter_trt.plural import counted
    from redrafter_trt.prompts import load_prompts, take_spread
    from redrafter_trt.quickstart import mt_bench_path
    from redrafter_trt.tokens import encode_prompts, load_tokenizer, stop_ids

    checkpoint_dir = rt.merge_ranks(checkpoint_dir)  # refused as `run` refuses it, before the tokenizer
    echo_merge_note(checkpoint_dir)  # a tp>1 one's rank files merged, as bench says
    if threads:
        torch.set_num_threads(threads)
    prompts = prompts or mt_bench_path()
    tokenizer = load_tokenizer(tokenizer_dir, None)
    ids = encode_prompts(tokenizer, take_spread(load_prompts(prompts), num_prompts), None)
    eos = stop_ids(tokenizer, tokenizer_dir)  # as run and bench: the generation config's stop tokens too
    # this script's options, named so (the runtime's own checks name its Python keywords)
    rt.check_compile(checkpoint_dir.config, compile_layers, spelling=rt.RUN)
    rt.check_positions(checkpoint_dir.config, ids, max_new_tokens, flag="--max-new-tokens")
    model = rt.load(checkpoint_dir, compile=compile_layers)
    draft_len = draft_len or model.config.draft_len
    check_grid((beams,), model.config.num_beams, "--beams", "redrafter_num_beams", reconvert_beams)
    check_grid((draft_len,), model.config.draft_len, "--draft-len", "redrafter_draft_len_per_beam",
               model.config.draft_len_fix)
    rt.generate(model, [ids[0]], 8, num_beams=beams, draft_len=draft_len, eos_token_id=eos)  # warm-up
    rt.generate(model, [ids[0]], 8, eos_token_id=eos, use_draft=False)

    plain = rt.generate(model, ids, max_new_tokens, eos_token_id=eos, use_draft=False, batch_size=1)
    plain_ms = plain.wall_seconds / sum(plain.steps) * 1000  # the prompts the drafted steps run over

    totals: dict[str, float] = defaultdict(float)
    for name, (owner, method) in PIECES.items():
        obj = getattr(model, owner)
        setattr(obj, method, timed(totals, name, getattr(obj, method)))
    decode_mod.accept_greedy = timed(totals, "accept", decode_mod.accept_greedy)
    KVCache.commit = timed(totals, "commit", KVCache.commit)
    decode_mod._prefill = timed_apart(totals, "prefill", decode_mod._prefill)
    wall, steps, new = 0.0, 0, 0
    for p in ids:
        res = rt.generate(model, [p], max_new_tokens, num_beams=beams, draft_len=draft_len, eos_token_id=eos)
        wall, steps, new = wall + res.wall_seconds, steps + res.steps[0], new + res.total_new_tokens
    totals["rest of the loop"] = wall - sum(totals.values())
    print(f"{counted(len(ids), 'prompt')}, W={beams} L={draft_len}, {counted(torch.get_num_threads(), 'thread')}: "
          f"{new / steps:.2f} tokens/step, {wall / steps * 1000:.1f} ms/step = {wall / steps * 1000 / plain_ms:.2f}x "
          f"a plain step ({plain_ms:.1f} ms)")
    print("piece                        ms/step  share")
    for name, seconds in sorted(totals.items(), key=lambda kv: -kv[1]):
        print(f"{name:28s} {seconds / steps * 1000:7.1f}  {seconds / wall:5.1%}")


if __name__ == "__main__":
    main()
