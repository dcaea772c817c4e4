"""`redrafter-trt train`: thin click wrapper over `redrafter_trt.train.train_drafter`, with a progress bar."""

from __future__ import annotations

import os
from pathlib import Path

import click

from ..errors import ConfigError, json_loads
from ..interrupts import stop_at_exit_as_finished
from ..plural import counted
from .params import CHAT_TEMPLATE_KWARGS, Command, Device, SEED


class _Bars:
    """One tqdm bar per stage (distill, hidden, heldout_base, train); the train bar shows loss and per-step top-1.
    disable=None (as convert's): no bar where stderr is not a terminal (a log file gets no '\\r' frames)."""

    def __init__(self, disable: bool | None = None):
        self.bars = {}
        self.disable = disable

    def __call__(self, p):
        from tqdm import tqdm

        labels = {"distill": "distilling answers (prompts)", "hidden": "caching base hidden states (examples)",
                  "heldout_base": "base's held-out answers (prompts)", "train": "training drafter (steps)"}
        bar = self.bars.get(p.stage)
        if bar is None:
            # from where a resumed stage starts (a training state's step, hidden states cached by an interrupted
            # run): its rate and ETA count only what this run does
            bar = self.bars[p.stage] = tqdm(total=p.total, desc=labels[p.stage], unit="", dynamic_ncols=True,
                                            initial=p.done - 1 if p.stage == "train" else p.done,
                                            disable=self.disable)
        bar.update(p.done - bar.n)
        if p.stats is not None:
            bar.set_postfix_str(f"loss {p.stats.loss:.3f} top1 {'/'.join(f'{a:.2f}' for a in p.stats.top1)} "
                                f"{p.stats.positions_per_s:.0f} pos/s", refresh=False)
        if p.done >= p.total:
            bar.close()

    def close(self):
        for bar in self.bars.values():
            bar.close()


def score_line(key: str, res: dict) -> str:
    """The line saying a producer block's score (`heldout`, `train_set` or `heldout_base`) and the draft length it
    assumes (--predict-n, the steps scored): on the data's answers (train without --distill), teacher forcing scores
    text the base would not write, which its greedy decoding never reaches: said, with how to measure what it will
    accept. Either way the prompts are like the training data's; others (MT-Bench) accept less."""
    from ..train.heldout import per_step

    label = {"heldout": "held-out", "train_set": "training-set (no held-out examples)", "heldout_base": "held-out"}[key]
    scores = (f"top-1 per step {per_step(res['top1'])}, chained {per_step(res['chained'])}: "
              f"{res['tokens_per_step_beam1']} tokens/step")
    steps = len(res["top1"])
    at = f"at beam width 1 and draft length {steps}"
    if None in res["top1"]:  # no answer reaches them (heldout.evaluate): always the last ones
        first = res["top1"].index(None) + 1
        at += (f" (draft step{'s' if first < steps else ''} {first}{f' to {steps}' if first < steps else ''} "
               f"unscored: no answer scored is long enough to reach them)")
    if res.get("answers") == "data":
        return (f"{label}, on the data's answers (not the base's own): {scores} {at} on that text; where "
                f"another model wrote the data, more than the base's greedy decoding will accept (measure that with "
                f"`redrafter-trt acceptance` on the converted checkpoint; train on the base's answers with --distill)")
    if key == "heldout_base":
        label += f", on the base's own greedy answers to {counted(res['prompts'], 'prompt')}:"
    return (f"{label} {scores} expected {at}, on prompts like the training data (other prompts, MT-Bench's among them, "
            f"accept less: measure them with `redrafter-trt acceptance` on the converted checkpoint)")


def _positive(ctx, param, value):
    if value is not None and value < 1:
        raise ConfigError(f"--{param.name.replace('_', '-')} must be at least 1 (got {value})")
    return value


# train.config.DTYPES, spelled here: importing redrafter_trt.train would load torch before --help
_DTYPE = click.Choice(["auto", "float32", "bfloat16"])


@click.command(short_help="Train a ReDrafter drafter for a base model.", cls=Command)
@click.option("--base", required=True, type=click.Path(path_type=Path), help="Hugging Face folder of the chat base model.")
@click.option("--data", "data", required=True, multiple=True, type=click.Path(path_type=Path),
              help="jsonl (prompt / question+answer / messages), ShareGPT json or .txt prompts (one per line); repeat for several files.")
@click.option("--output", required=True, type=click.Path(path_type=Path), help="Drafter folder to write (Apple layout).")
@click.option("--num-draft-layers", default=1, show_default=True, type=int, help="ResBlocks before the final projection.")
@click.option("--rnn/--no-rnn", default=True, show_default=True, help="Recurrent state (Apple's rnn) or a plain sum of embeddings.")
@click.option("--exit-dim", type=int, callback=_positive, help="Width of the final projection [default: the base hidden size].")
@click.option("--predict-n", default=5, show_default=True, type=int, callback=_positive,
              help="Draft steps trained; recorded so `convert` can refuse a longer --draft-len.")
@click.option("--epochs", default=1, show_default=True, type=int, callback=_positive, help="Passes over the data.")
@click.option("--max-steps", type=int, callback=_positive,
              help="Stop after this many steps (instead of --epochs: not both).")
@click.option("--lr", default=1e-3, show_default=True, type=float,
              help="AdamW's peak learning rate (5% linear warm-up, then cosine to zero).")
@click.option("--batch-size", default=256, show_default=True, type=int, callback=_positive,
              help="Anchor positions per step (each trains every draft step); per rank under torchrun.")
@click.option("--max-seq-len", type=int, help="Truncate each training example (a conversation, or one answer of it "
              "with the turns before it) to this many tokens (at least 8), at most the base's max_position_embeddings "
              "[default: 1024, or that when fewer].")
@click.option("--max-examples", type=int, callback=_positive, help="Use at most this many conversations (seeded shuffle; without --distill, those kept to train or hold out).")
@click.option("--seed", default=0, show_default=True, type=SEED,
              help="Seed of the initialisation, the data shuffle and each step's anchors.")
@click.option("--device", default="cpu", show_default=True, type=Device(),
              help="cpu, cuda or cuda:N (torchrun picks the rank's GPU).")
@click.option("--resume", is_flag=True, help="Continue from OUTPUT.train-state.pt (same options as the interrupted run).")
@click.option("--distill", is_flag=True,
              help="Train on the base's own greedy answers to the prompts (cached, resumable). Without it the data's "
                   "answers are trained on, and the base answers up to 8 held-out prompts (cached) to score the "
                   "drafter on its own answers too.")
@CHAT_TEMPLATE_KWARGS
@click.option("--distill-max-new-tokens", default=256, show_default=True, type=int, callback=_positive,
              help="New tokens per answer of the base at most (at least 2): those trained on with --distill, those "
                   "to the held-out prompts without it.")
@click.option("--distill-batch-size", default=64, show_default=True, type=int, callback=_positive,
              help="Prompts the base answers together (with --distill or without); lower it if the base runs out of "
                   "memory.")
@click.option("--base-dtype", type=_DTYPE, default="auto", show_default=True,
              help="The base's dtype while it writes answers and hidden states. auto: bfloat16 on a GPU or on a CPU "
                   "with native bfloat16 (AVX512-BF16 / AMX), else float32.")
@click.option("--train-dtype", type=_DTYPE, default="auto", show_default=True,
              help="The dtype of the drafter head's products in training (weights, loss and gradients stay "
                   "float32). auto: the same rule as --base-dtype's auto, whatever --base-dtype is.")
@click.option("--soft-target", default=0.5, show_default=True, type=float,
              help="Share of each target given to the base's own next-token distribution (its top 16 tokens, from "
                   "the cached hidden states); the rest stays on the distilled token. 0 = hard targets only.")
@click.option("--later-sharpness", default=4.0, show_default=True, type=float,
              help="Train the draft steps after the first to logits this many times sharper than calibrated: "
                   "TensorRT-LLM's beam search, which ranks beams by summed drafter log-probs, then keeps more "
                   "distinct first tokens (greedy acceptance; for a sampling engine use 1, plain cross-entropy).")
@click.option("--step-decay", default=0.8, show_default=True, type=float,
              help="Draft step i's loss weighs this to the power i (a later step counts only when the ones before it "
                   "are accepted); 1 weighs every step alike.")
@click.option("--freeze-head", is_flag=True,
              help="Keep the final projection's rows at their init from the base lm_head (rows of tokens absent from "
                   "the data are saved as zeros unless --full-vocab).")
@click.option("--full-vocab", is_flag=True,
              help="Train every row of the final projection, not only those of tokens seen in the data (about 6x slower).")
@click.option("--cache-dir", type=click.Path(path_type=Path),
              help="Distilled answers and hidden states [default: <cache>/train, <cache>: $REDRAFTER_TRT_CACHE, else "
                   "~/.cache/redrafter-trt].")
@click.option("--force", is_flag=True, help="Replace an existing --output folder: an earlier ReDrafter output (a drafter, "
              "checkpoint or engine folder holding only what its tools write), or an empty folder.")
def train(base, data, output, num_draft_layers, rnn, exit_dim, predict_n, epochs, max_steps, lr, batch_size, max_seq_len,
          max_examples, seed, device, resume, distill, chat_template_kwargs, distill_max_new_tokens, distill_batch_size,
          base_dtype, train_dtype, soft_target, later_sharpness, step_decay, freeze_head, full_vocab, cache_dir, force):
    """Train a ReDrafter drafter for the --base model on conversations (or, with --distill, on the base's own
    answers)."""
    from ..output import WrittenThenInterrupted
    from ..train import TrainConfig, train_drafter

    ctx = click.get_current_context()
    if max_steps is not None and ctx.get_parameter_source("epochs") == click.core.ParameterSource.COMMANDLINE:
        raise ConfigError(f"--epochs {epochs} has no effect with --max-steps {max_steps}, which sets the number of "
                          f"steps: leave one out")  # the epochs were dropped without a word
    cfg = TrainConfig(base=base, data=list(data), output=output, num_draft_layers=num_draft_layers, rnn=rnn,
                      exit_dim=exit_dim, predict_n=predict_n, epochs=epochs, max_steps=max_steps, lr=lr,
                      batch_size=batch_size, max_seq_len=max_seq_len, max_examples=max_examples, seed=seed,
                      device=device, resume=resume, distill=distill, distill_max_new_tokens=distill_max_new_tokens,
                      distill_batch_size=distill_batch_size, base_dtype=base_dtype, train_dtype=train_dtype,
                      soft_target=soft_target, later_sharpness=later_sharpness, step_decay=step_decay,
                      train_head=not freeze_head,
                      full_vocab=full_vocab, cache_dir=cache_dir, chat_template_kwargs=chat_template_kwargs,
                      force=force)
    cfg.validate()  # every option first: a refused run leaves nothing behind
    if os.environ.get("RANK", "0") != "0":  # torchrun's other ranks: rank 0 alone draws the bars and reports
        train_drafter(cfg)
        return
    bars = _Bars()
    note, written = f"interrupted after {cfg.output} was written", False
    try:
        try:
            train_drafter(cfg, on_progress=bars)
        except WrittenThenInterrupted:  # after the drafter was written whole (the loop said so): a finished run
            pass
        # the drafter is written: a Ctrl-C (or SIGTERM) in the lines below or as the process exits, a moment after the
        # bar ended, stopped a finished run with exit 130; it stops what is left (sizing a large cache on a network
        # disk can take long), saying so, and the run exits 0
        written = True
        stop_at_exit_as_finished(note)
        bars.close()
        _report(cfg)
    except KeyboardInterrupt:
        if not written:
            raise
        click.echo(note, err=True)
    finally:
        bars.close()


def _report(cfg) -> None:
    """The lines a finished run ends with: where its drafter is, its scores, its cache's size."""
    out = cfg.output
    meta = json_loads((out / "config.json").read_text()).get("producer", {})
    click.echo(f"wrote {out}")
    for key in ("heldout", "train_set", "heldout_base"):
        if res := meta.get(key):
            click.echo(score_line(key, res))
    from ..train.cache import summary

    click.echo(summary(cfg.cache_dir))
