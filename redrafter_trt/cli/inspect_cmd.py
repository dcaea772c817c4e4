"""`inspect`: what a TensorRT-LLM checkpoint folder is and every problem in it. Exit 0 valid, 1 not."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..plural import counted
from ..rope import rope_kind
from .params import Command


def quantization_text(q: dict) -> str:
    """A checkpoint's `quantization` as inspect and convert say it: "FP8 (kv cache FP8)", "none (kv cache model dtype)"."""
    return f"{q.get('quant_algo') or 'none'} (kv cache {q.get('kv_cache_quant_algo') or 'model dtype'})"


@click.command(short_help="Check a TensorRT-LLM checkpoint.", cls=Command)
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--values", is_flag=True,
              help="Also read every tensor for NaN and Inf (a checkpoint another tool wrote; minutes for a large base).")
@click.option("--base", type=click.Path(path_type=Path),
              help="Also compare every base tensor, value for value, with this base (the Hugging Face model or "
                   "TensorRT-LLM base checkpoint it was converted from): finds wrong splits, q/k/v order, swapped "
                   "ranks, another model's weights.")
@click.option("--drafter", type=click.Path(path_type=Path),
              help="Also compare every drafter tensor with this drafter (Apple's layout) in the same way.")
def inspect(folder, as_json, values, base, drafter):
    """Check a TensorRT-LLM checkpoint (base or ReDrafter) from its config, tensor headers and drafter head; with
    --base / --drafter, every tensor's values too, against the models it was converted from."""
    from ..checkpoint import inspect_checkpoint
    from ..errors import ConfigError

    if not folder.is_dir():
        raise ConfigError(f"{folder} is not a folder: pass a checkpoint folder (the --output of convert)")
    for given, named in ((base, "--base"), (drafter, "--drafter")):
        if given is not None and not given.is_dir():
            raise ConfigError(f"{named} {given} is not a folder: pass the model folder the checkpoint was converted "
                              f"from")
    rep = inspect_checkpoint(folder, values=values, base=base, drafter=drafter)
    if as_json:
        click.echo(json.dumps(rep.to_json(), indent=2))
    else:
        click.echo(f"{rep.path}: {rep.architecture or '?'}  dtype {rep.dtype or '?'}  tp {rep.tp_size or '?'}")
        q = rep.quantization or {}
        if not rep.config_read or "quantization" in rep.malformed:
            click.echo("  quantization: ?")
        else:
            click.echo(f"  quantization: {quantization_text(q)}")
        if rep.drafter:
            d = rep.drafter
            click.echo(f"  drafter: {d['num_layers']} layers, hidden {d['hidden_size']}, exit_dim {d['exit_dim']}, "
                       f"rnn {d['is_rnn']}; {d['num_beams']} beams x draft len {d['draft_len_per_beam']}, "
                       f"greedy {d['greedy_search']}")
        if rep.rope:
            click.echo(f"  rope: {rope_line(rep.rope, 'rotary_scaling' in rep.malformed)}")
        if rep.producer:
            click.echo(f"  producer: {producer_line(rep.producer, bool(rep.drafter))}")
        for r in rep.ranks:
            click.echo(f"  {r.file}: {r.tensors} tensors, {r.bytes / 2**20:.1f} MiB")
        if rep.compared:
            c = rep.compared
            models = " and ".join(filter(None, (c["base"], c["drafter"])))
            click.echo(f"  compared with {models}: {counted(c['tensors'], 'tensor')}")
        for p in rep.problems:
            click.echo(f"  problem: {p}")
        for p in rep.runtime_problems:
            click.echo(f"  reference runtime (run, bench, serve) refuses it: {p}")
        click.echo("  OK" if rep.ok else f"  INVALID ({counted(len(rep.problems), 'problem')})")
    raise SystemExit(0 if rep.ok else 1)


TYPE_KEYS = ("type", "rope_type")  # a scaling's type, shown before its values


def rope_line(rope: dict, malformed_scaling: bool = False) -> str:
    """`theta 500000, llama3 (factor 8, low_freq_factor 1, ...); 131072 positions` ("?" for a value absent or
    malformed; `scaling ?` for a malformed scaling, whose null in `rope` is no null one's "no scaling", nor type
    none's)."""
    def num(v):
        return "?" if v is None else f"{int(v)}" if isinstance(v, (int, float)) and float(v).is_integer() else f"{v}"

    def value(v):  # a scaling's true, false, null and lists as config.json writes them (true was `1`, null `?`)
        return num(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else json.dumps(v)

    scaling = rope["rotary_scaling"]
    kind = rope_kind(scaling) if isinstance(scaling, dict) else None
    if malformed_scaling:  # once "no scaling", beside the problem naming it
        scaled = "scaling ?"
    elif kind in (None, "default", "none"):
        scaled = "no scaling"
    else:
        scaled = f"{kind} ({', '.join(f'{k} {value(v)}' for k, v in scaling.items() if k not in TYPE_KEYS)})"
    return f"theta {num(rope['rotary_base'])}, {scaled}; {num(rope['max_position_embeddings'])} positions"


def producer_line(producer: dict, drafter: bool) -> str:
    """`redrafter-trt 0.1.0 (convert)`, then with a drafter the most draft tokens it was trained to predict and, where
    convert could tell, whether it was trained on this base (or made for it by init-drafter, untrained)."""
    made = " ".join(filter(None, (producer["name"] or "?", producer["version"],
                                  producer["command"] and f"({producer['command']})")))
    if not drafter:
        return made
    n = producer["drafter_predict_n"]
    line = f"{made}; drafter predict_n {n if n is not None else 'unknown'}"
    matches = producer["drafter_base_matches"]
    if producer.get("drafter_command") == "init-drafter":  # its head is the base's own: about 1 token per step
        made_for = {True: "made for this base ", False: "made for another base ", None: "made "}[matches]
        return f"{line}; drafter {made_for}by init-drafter (untrained: expect about 1 token per step)"
    if matches is None:
        return line
    if matches:
        return f"{line}; drafter trained on this base"
    return (f"{line}; drafter trained on another base (it will likely accept few draft tokens: measure with "
            f"`redrafter-trt acceptance`)")
