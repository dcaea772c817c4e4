"""`redrafter-trt run`: generate with a checkpoint (the reference runtime) or a built engine (TensorRT-LLM),
in the spirit of TensorRT-LLM's `examples/run.py`. Prints each output and one statistics line; `--output-json`
writes `results` (prompt, messages, prompt_ids, output_ids, text, steps, tokens_per_step) and `stats` (mean_tokens_per_step,
tokens_per_second, total_new_tokens, wall_seconds); `--output-log-probs-npy` / `--output-cum-log-probs-npy` write
run.py's log-probability arrays (cli/run_py.py)."""

from __future__ import annotations

import json
import logging
import re

import click

from ..errors import ConfigError
from ..launchers import copies_error, launched_copies
from ..presets import as_given, config_option, one_of
from .params import CHAT_TEMPLATE_KWARGS, Command, OutputFile, SEED, Temperature, check_output_files, options_given, \
    template_kwargs_given
from .run_py import engine_log_probs, run_py_instead, write_cum_log_probs_npy, write_log_probs_npy
from ..prompts import Prompt, names_of
from ..token_files import TokenRows, is_token_file, read_token_rows
from ..tokens import KWARGS_WITHOUT_TEMPLATE, drafter_mode_warning, encode_prompts, load_tokenizer, stop_ids

log = logging.getLogger(__name__)


def _gather_prompts(input_text: tuple[str, ...], input_file: str | None) -> list[str] | TokenRows:
    """The prompts: texts, or a run.py token-id file's rows (`TokenRows`)."""
    from ..message_fields import check_text
    from ..prompts import load_prompts

    if input_text and input_file:
        raise ConfigError("pass either --input-text or --input-file, not both")
    if input_file and is_token_file(input_file):
        return read_token_rows(input_file)
    if input_file:
        return load_prompts(input_file)
    if not input_text:
        raise ConfigError("nothing to generate: pass --input-text TEXT (repeatable) or --input-file FILE")
    if any(not t.strip() for t in input_text):
        raise ConfigError("--input-text is empty: pass some text")
    for t in input_text:  # bytes of argv that are not UTF-8 arrive as lone surrogates (surrogateescape)
        try:
            check_text(t, "--input-text")
        except ValueError as e:
            raise ConfigError(f"{e}: pass UTF-8 text") from None
    return list(input_text)


def prompt_names(prompts: list[str] | TokenRows) -> list[str]:
    """Each prompt's name for messages: its file and line, or `--input-text N`."""
    if isinstance(prompts, TokenRows):
        return prompts.names()
    return [where or (f"--input-text {n}" if len(prompts) > 1 else "--input-text")
            for n, where in enumerate(names_of(prompts), start=1)]


def _encode(tok, o: dict) -> list[list[int]]:
    """The prompts' token ids (a token-id file's as they are, as run.py sends them); a preset's `chat: true` with a tokenizer that has no chat template (a base model's
    beside an instruct preset) is refused naming the preset and --no-chat (it said 'leave out --chat', a flag nobody
    typed)."""
    if isinstance(o["prompts"], TokenRows):
        if o["chat"] or o["chat_template_kwargs"]:
            raise ConfigError(f"{o['prompts'].path} holds token ids, sent as they are: the chat template renders text; "
                              f"drop --chat (a --config preset's `chat: true`: pass --no-chat)")
        pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id  # run.py's load_tokenizer's
        return o["prompts"].ids(pad_id, len(tok))
    if o["chat"] and "--chat" not in o["typed"] and not getattr(tok, "chat_template", None):
        raise ConfigError("the --config preset sets chat, but this tokenizer has no chat template: pass --no-chat, or "
                          "the tokenizer of the instruct model the preset is for")
    return encode_prompts(tok, o["prompts"], o["chat"])


def _run_checkpoint(ckpt: str, tokenizer_dir: str, o: dict):
    """The reference runtime's (tokenizer, prompt ids, result); `o["temperature"]` becomes the temperature it decodes
    at (0.0 on a greedy checkpoint, which ignores the one given)."""
    from ..layout import convert_tp_sizes
    from ..shard import resplit
    from ..runtime import (RUN, check_compile, check_device, check_draft_shape, check_positions, check_temperature,
                           generate, generate_tp, load, open_checkpoint)

    copies = launched_copies()  # past the group's check: an MPI launcher's, whose copies only an engine's ranks are
    if copies is not None:
        raise copies_error(copies, "`run --checkpoint-dir`", "the reference runtime starts a tp checkpoint's ranks "
                           "itself; only `run --engine-dir` runs as an engine's ranks")
    ckpt = open_checkpoint(ckpt)  # inspected once, here: generate_tp and load take it checked
    cfg = ckpt.config
    if o["tp"] is not None and o["tp"] != cfg.tp_size:
        fix = resplit(convert_tp_sizes(ckpt.raw), cfg.tp_size, "convert again with --tp-size", o["tp"])
        raise ConfigError(f"--tp {o['tp']} differs from the checkpoint's tp_size {cfg.tp_size}: pass --tp "
                          f"{cfg.tp_size}{fix}")
    # run's own checks name its flags (RUN); generate and load, which check again, the Python API's keywords
    check_compile(cfg, o["compile"], o["device"], spelling=RUN)
    if o["no_draft"] and {"--num-beams", "--draft-len"} & o["typed"]:  # a preset's are convert's too: not refused
        fix = "drop them with --no-draft" if "--no-draft" in o["typed"] else \
            "the --config preset sets no-draft: pass --draft to draft, or drop them"
        raise ConfigError(f"--num-beams and --draft-len shape the drafts: {fix}")
    check_draft_shape(cfg, o["num_beams"], o["draft_len"], not o["no_draft"], spelling=RUN)
    check_temperature(o["temperature"], spelling=RUN)  # before the weights load
    if o["sampling_rule"] == "trtllm" and (why := _no_sampled_drafts(cfg, o["no_draft"])):
        raise ConfigError(f"--sampling-rule trtllm decides which drafts a sampled step accepts: {why}")
    if cfg.has_drafter and not o["no_draft"]:  # as its engine (and `serve`): the checkpoint's greedy mode decides
        if cfg.greedy_search and o["temperature"] > 0:
            log.warning("greedy checkpoint (redrafter_greedy_search): --temperature %s is ignored, as its engine "
                        "ignores it; convert with --no-greedy to sample", o["temperature"])
            o["temperature"] = 0.0  # the one the run uses, and --output-json's producer records (it recorded 0.7)
        elif not cfg.greedy_search and o["temperature"] == 0:
            raise ConfigError("this checkpoint samples (converted with --no-greedy), as its engine does: pass a "
                              "positive --temperature, or --no-draft for plain greedy decoding")
    tok = load_tokenizer(tokenizer_dir, cfg.vocab_size, o["chat_template_kwargs"])
    ids = _encode(tok, o)
    if not o["no_draft"] and (why := drafter_mode_warning(ckpt.raw, tok, o["chat"])):
        log.warning("%s", why)
    check_positions(cfg, ids, o["max_output_len"], flag=RUN.flags["max_new_tokens"],  # before the weights load
                    names=prompt_names(o["prompts"]))
    kwargs = dict(num_beams=o["num_beams"], draft_len=o["draft_len"], temperature=o["temperature"],
                  eos_token_id=stop_ids(tok, tokenizer_dir), use_draft=not o["no_draft"],
                  seed=o["seed"],  # each prompt's own generator's, as an engine seeds every request
                  batch_size=o["batch_size"], sampling_rule=o["sampling_rule"] or "exact",
                  logprobs=0 if o["log_probs"] else None)  # the tokens' own, none of the most likely beside them
    if cfg.tp_size > 1:
        result = generate_tp(ckpt, ids, o["max_output_len"], device=o["device"], **kwargs)
    else:
        # (tp > 1: generate_tp's require_gpus counts the GPUs first, which leaves run's cpu or cuda nothing to refuse)
        check_device(o["device"], spelling=RUN)
        result = generate(load(ckpt, device=o["device"], compile=o["compile"]), ids, o["max_output_len"], **kwargs)
    return tok, ids, result


def _no_sampled_drafts(cfg, no_draft: bool) -> str | None:
    """Why a run makes no sampled drafts for --sampling-rule trtllm to judge, and the fix; None when it does (a
    sampling checkpoint's temperature 0 is refused on its own)."""
    if not cfg.has_drafter:
        return "this checkpoint has no drafter; leave it out"
    if no_draft:
        return "--no-draft makes none; leave it out"
    if cfg.greedy_search:
        return "this checkpoint is greedy (redrafter_greedy_search): convert with --no-greedy to sample, or leave it out"
    return None


# run options an engine fixed when it was built, and convert's preset key for each
FIXED_BY_ENGINE = ("--num-beams", "--draft-len", "--tp")
CONVERT_KEY = {"--num-beams": "num-beams", "--draft-len": "draft-len", "--tp": "tp-size"}
# run options of the reference runtime alone (an engine decodes with TensorRT-LLM's own kernels, batches up to its
# build's --max-batch-size and runs on its GPUs); refused with an engine when given at all, defaults included
RUNTIME_ONLY = ("--no-draft", "--compile", "--sampling-rule", "--batch-size", "--device")
OFF_FORMS = {"--no-draft": "--draft", "--compile": "--no-compile"}


def _run_engine(engine: str, tokenizer_dir: str, o: dict):
    from ..runtime.trtllm import generate_engine, greedy_engine, split_stop_tokens

    for flag in FIXED_BY_ENGINE:
        if o[flag.removeprefix("--").replace("-", "_")] is None:
            continue
        if flag not in o["typed"]:  # a top-level `num-beams:` is convert's too: say where it comes from
            key, moved = flag.removeprefix("--"), CONVERT_KEY[flag]  # convert's `tp` is `tp-size`
            where = "it" if key == moved else f"it as `{moved}`"
            raise ConfigError(f"the --config preset sets {key}, which the engine fixed when it was built: move {where} "
                              f"under `convert:` (or `run:` of a --checkpoint-dir preset) to run --engine-dir")
        raise ConfigError(f"{flag} is fixed when the engine is built: drop it with --engine-dir "
                          f"(tensor parallel engines run under `mpirun -n TP`)")
    for flag in RUNTIME_ONLY:
        # an off flag (`--no-compile` over a preset's `compile: true`) asks nothing of the runtime: not refused
        if flag not in o["given"] or o[flag.removeprefix("--").replace("-", "_")] is False:
            continue
        if flag in o["typed"]:
            raise ConfigError(f"{flag} works with --checkpoint-dir only (the reference runtime): drop it with "
                              f"--engine-dir")
        off = OFF_FORMS.get(flag)  # a preset's: "drop it" named a flag nobody typed
        raise ConfigError(f"the --config preset sets {flag.removeprefix('--')}: {flag} works with --checkpoint-dir "
                          f"only (the reference runtime); {f'pass {off} or ' if off else ''}remove it from the "
                          f"preset to run --engine-dir")
    from ..build import read_engine_config

    pretrained = read_engine_config(engine)["pretrained_config"]
    vocab_size = pretrained.get("vocab_size")  # the checkpoint's, kept by the build
    tok = load_tokenizer(tokenizer_dir, vocab_size if isinstance(vocab_size, int) else None, o["chat_template_kwargs"])
    ids = _encode(tok, o)
    end_id, stop_words = split_stop_tokens(tok.eos_token_id, stop_ids(tok, tokenizer_dir))
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else max(end_id, 0)
    result = generate_engine(engine, ids, o["max_output_len"], end_id=end_id, pad_id=pad_id, stop_words=stop_words,
                             temperature=o["temperature"], seed=o["seed"])
    if greedy_engine(pretrained):  # it ignored --temperature (generate_engine warned): the producer records what ran
        o["temperature"] = 0.0
    return tok, ids, result


GROUP_OPTIONS = ("-v", "--verbose", "--debug")  # redrafter-trt's, before the command
# a word argparse reads as a negative number (CPython 3.14's _negative_number_matcher; before 3.14 only whole numbers
# and decimals did, so run takes every word any run.py takes)
NEGATIVE_NUMBER = re.compile(r"-\.?\d")


class RunCommand(Command):
    """run as TensorRT-LLM's run.py users type it: `--input-text A B` (run.py's nargs='+') is `--input-text A
    --input-text B`; a run.py option run lacks (run_py.RUN_PY_INSTEAD) and redrafter-trt's -v and --debug typed after
    `run` are refused naming what to do (click guessed --tp for --top_k, --engine-dir for --end_id)."""

    def parse_args(self, ctx, args):
        if ctx.resilient_parsing or set(args) & set(self.get_help_option_names(ctx)):
            return super().parse_args(ctx, args)
        return super().parse_args(ctx, self._run_py_args(args))

    def _run_py_args(self, args: list[str]) -> list[str]:
        options = {name: param for param in self.params if isinstance(param, click.Option)
                   for name in param.opts + param.secondary_opts}
        out, rest, prompts = [], iter(args), False
        for arg in rest:
            if arg == "--":
                return out + [arg, *rest]
            name = arg.split("=", 1)[0]
            if prompts and _is_prompt(arg, name, options):  # another prompt after --input-text's first
                out += ["--input-text", arg]
                continue
            param, prompts = options.get(name), False
            out.append(arg)
            if param is None:
                _refuse_foreign(name)
            elif not param.is_flag and not param.count:
                if "=" not in arg:  # its value, whatever it looks like
                    out.extend(value for value in [next(rest, None)] if value is not None)
                prompts = param.name == "input_text"
        return out


def _is_prompt(arg: str, name: str, options) -> bool:
    """Whether a word after --input-text's prompts is one more, as run.py's argparse (nargs='+') decides in
    `_parse_optional`: one that does not start with '-', '-' alone, and, unless it is an option (`name`, before any
    '='), one that holds a space ("- item one") or looks like a negative number ("-5"; run.py has no option that
    does)."""
    if not arg.startswith("-") or arg == "-":
        return True
    return name not in options and (" " in arg or bool(NEGATIVE_NUMBER.match(arg)))


def _refuse_foreign(name: str) -> None:
    """A ConfigError for redrafter-trt's own options after `run` and for run.py's that run lacks
    (run_py.RUN_PY_INSTEAD)."""
    if name in GROUP_OPTIONS:
        raise ConfigError(f"{name} is an option of redrafter-trt, not of run: put it before the command "
                          f"(`redrafter-trt {name} run ...`)")
    instead = run_py_instead(name)
    if instead:
        raise ConfigError(f"{name} (TensorRT-LLM run.py's) is no option of run: {instead}")


def stats_line(result, *, engine: bool) -> str:
    tps = result.total_new_tokens / result.wall_seconds if result.wall_seconds else 0.0
    # empty: an engine reports no per-step counts; the reference runtime made no step after the prefill
    hist = " ".join(f"{k}:{v}" for k, v in result.histogram().items()) or (
        "- (not reported by the engine)" if engine else "- (no decoding step after the prefill)")
    return (f"mean tokens/step {result.mean_tokens_per_step:.2f} | {tps:.1f} tokens/s | "
            f"{result.total_new_tokens} new tokens in {result.wall_seconds:.1f}s | tokens per step histogram {hist}")


@click.command(short_help="Generate with a checkpoint or an engine.", cls=RunCommand)
@config_option
@click.option("--checkpoint-dir", type=click.Path(file_okay=False), help="Converted checkpoint: the reference runtime (exactly one of --checkpoint-dir / --engine-dir).")
@click.option("--engine-dir", "--engine_dir", "engine_dir", type=click.Path(file_okay=False), help="Built engine: TensorRT-LLM's ModelRunnerCpp (exactly one of --checkpoint-dir / "
                   "--engine-dir).")
@click.option("--tokenizer-dir", "--tokenizer_dir", "tokenizer_dir", required=True, type=click.Path(file_okay=False), help="The base model's HF folder.")
@click.option("--input-text", "--input_text", "input_text", multiple=True,
              help="A prompt (repeatable; several after one --input-text, as run.py takes them; not with --input-file).")
@click.option("--input-file", "--input_file", "input_file", type=click.Path(dir_okay=False),
              help="jsonl (prompt / turns / question / messages / conversations / ..., as `train --data` reads "
                   "them), a ShareGPT .json, a .txt with one prompt per line, or run.py's token ids: a .csv (a prompt a "
                   "line) or an integer .npy (a prompt a row); not with --input-text.")
@click.option("--chat/--no-chat", default=False,
              help="Apply the tokenizer's chat template to each prompt (--no-chat: as written, over a preset's "
                   "`chat: true`).")
@CHAT_TEMPLATE_KWARGS
@click.option("--max-output-len", "--max_output_len", "max_output_len", default=128, show_default=True, type=click.IntRange(min=1), help="New tokens per prompt.")
@click.option("--temperature", default=0.0, show_default=True, type=Temperature(),
              help="0 = greedy. With the drafter, the checkpoint's mode decides, as in its engine: a greedy checkpoint "
                   "or engine ignores a positive temperature (with a warning); a --no-greedy one needs one above 0.")
@click.option("--num-beams", type=click.IntRange(min=1), help="The drafter's beam count (ReDrafter's W), not beam search: one output a prompt (at most the "
                   "checkpoint's; fixed by the engine: --checkpoint-dir only) [default: the checkpoint's].")
@click.option("--draft-len", type=click.IntRange(min=0), help="Draft tokens per beam (at most the checkpoint's; fixed by the engine: --checkpoint-dir only) "
                   "[default: the checkpoint's].")
@click.option("--no-draft/--draft", default=False,
              help="Plain autoregressive decoding with the same runtime (--draft: drafting, over a preset's "
                   "`no-draft: true`; --checkpoint-dir only).")
@click.option("--batch-size", default=1, show_default=True, type=click.IntRange(min=1), help="Prompts per batch (--checkpoint-dir only: an engine batches up to its build's --max-batch-size).")
@click.option("--tp", type=click.IntRange(min=1), help="Tensor parallel size (must equal the checkpoint's; fixed by the engine: --checkpoint-dir only) "
                   "[default: the checkpoint's].")
@click.option("--device", default="cpu", show_default=True, type=click.Choice(["cpu", "cuda"]),
              help="Where the reference runtime runs (--checkpoint-dir only).")
@click.option("--compile/--no-compile", "compile_layers", default=False,
              help="Run the base's layers compiled by TorchInductor (one CPU, float32): minutes of compiling at load "
                   "(and again on the first batch of several prompts), then faster steps (--no-compile: eager, over "
                   "a preset's `compile: true`; --checkpoint-dir only).")
@click.option("--seed", "--random_seed", "seed", default=0, show_default=True, type=SEED, help="Sampling seed.")
@click.option("--sampling-rule", type=click.Choice(["exact", "trtllm"]),
              help="Sampling with drafts (a --no-greedy checkpoint): exact (the default: the base's distribution at "
                   "the temperature) or trtllm (a sampling engine's own, biased rule, which accepts more: its tokens "
                   "per step predict the engine's; --checkpoint-dir only).")
@click.option("--output-json", type=OutputFile(), help="Write results and stats as JSON.")
@click.option("--output-log-probs-npy", "--output_log_probs_npy", "output_log_probs_npy",
              type=OutputFile(".npy"),
              help="Write each output token's log-probability under the base in run.py's array: float32 [prompts, 1, "
                   "longest output], zero-padded (.npy added to a name without it, as run.py's np.save does; "
                   "--checkpoint-dir only).")
@click.option("--output-cum-log-probs-npy", "--output_cum_log_probs_npy", "output_cum_log_probs_npy",
              type=OutputFile(".npy"),
              help="Write each output's summed log-probability in run.py's array: float32 [prompts, 1] (.npy added "
                   "as above; --checkpoint-dir only).")
def run(checkpoint_dir, engine_dir, tokenizer_dir, input_text, input_file, chat, chat_template_kwargs, max_output_len,
        temperature, num_beams, draft_len, no_draft, batch_size, tp, device, compile_layers, seed, sampling_rule,
        output_json, output_log_probs_npy, output_cum_log_probs_npy):
    """Generate with a ReDrafter checkpoint (PyTorch reference runtime) or engine (TensorRT-LLM)."""
    checkpoint_dir, engine_dir = one_of(click.get_current_context(), checkpoint_dir=checkpoint_dir, engine_dir=engine_dir)
    if bool(checkpoint_dir) == bool(engine_dir):
        raise ConfigError("pass exactly one of --checkpoint-dir (reference runtime) and --engine-dir (TensorRT-LLM)")
    ctx = click.get_current_context()
    # a preset's prompts (`run: {input-text: [...]}`) give way to a typed --input-file, as its folders do
    input_text, input_file = one_of(ctx, input_text=input_text, input_file=input_file)
    check_output_files({as_given(ctx, "output_json"): output_json,
                        as_given(ctx, "output_log_probs_npy"): output_log_probs_npy,
                        as_given(ctx, "output_cum_log_probs_npy"): output_cum_log_probs_npy},
                       [checkpoint_dir, engine_dir, tokenizer_dir, input_file])
    if engine_dir and (output_log_probs_npy or output_cum_log_probs_npy):  # named as given: a preset's were flags
        raise ConfigError(engine_log_probs([as_given(ctx, name) for name, path in (
            ("output_log_probs_npy", output_log_probs_npy), ("output_cum_log_probs_npy", output_cum_log_probs_npy))
            if path]))
    if output_json and is_token_file(output_json):  # run.py's --output_csv / --output_npy names
        raise ConfigError(f"{as_given(ctx, 'output_json')} writes JSON, not {output_json.suffix}: name it .json "
                          f"(each result holds its prompt_ids and output_ids)")
    prompts = _gather_prompts(input_text or (), input_file)
    typed = {p.opts[0] for p in options_given(ctx)}
    preset = {p.opts[0] for p in options_given(ctx, preset=True)}
    o = dict(typed=typed, given=typed | preset, prompts=prompts, chat=chat,
             chat_template_kwargs=template_kwargs_given(ctx, chat, chat_template_kwargs),
             max_output_len=max_output_len, temperature=temperature, num_beams=num_beams, draft_len=draft_len,
             no_draft=no_draft, batch_size=batch_size, tp=tp, device=device, seed=seed, compile=compile_layers,
             sampling_rule=sampling_rule, log_probs=bool(output_log_probs_npy or output_cum_log_probs_npy))
    if o["chat_template_kwargs"] and not chat and not isinstance(prompts, TokenRows):  # before the tokenizer's
        raise ConfigError(KWARGS_WITHOUT_TEMPLATE)  # check of the names, which blamed a name when --chat was missing
    if checkpoint_dir:
        tok, ids, result = _run_checkpoint(checkpoint_dir, tokenizer_dir, o)
    else:
        tok, ids, result = _run_engine(engine_dir, tokenizer_dir, o)
        if result is None:  # a non-zero MPI rank
            return
    records = []
    if isinstance(prompts, TokenRows):  # shown as run.py shows its input: the ids decoded
        prompts, messages = [tok.decode(p, skip_special_tokens=True) for p in ids], [None] * len(ids)
    else:  # what the chat template rendered, system messages too; plain text is sent alone
        messages = [(p if isinstance(p, Prompt) else Prompt(p)).messages() if chat else None for p in prompts]
    for prompt, turns, prompt_ids, out, steps, tps in zip(prompts, messages, ids, result.output_ids, result.steps,
                                                          result.tokens_per_step):
        text = tok.decode(out, skip_special_tokens=True)
        records.append(dict(prompt=prompt, messages=turns, prompt_ids=prompt_ids, output_ids=out, text=text,
                            steps=steps, tokens_per_step=round(tps, 4)))
        click.echo(f"[prompt] {prompt}\n[output] {text}\n")
    click.echo(stats_line(result, engine=bool(engine_dir)))
    log_probs = [[lp.logprob for lp in row] for row in result.logprobs]
    if output_log_probs_npy:
        write_log_probs_npy(output_log_probs_npy, log_probs)
    if output_cum_log_probs_npy:
        write_cum_log_probs_npy(output_cum_log_probs_npy, log_probs)
    if output_json:
        stats = dict(mean_tokens_per_step=result.mean_tokens_per_step,
                     tokens_per_second=result.total_new_tokens / result.wall_seconds if result.wall_seconds else 0.0,
                     total_new_tokens=result.total_new_tokens, wall_seconds=result.wall_seconds,
                     histogram={str(k): v for k, v in result.histogram().items()})
        from ..output import write_text_atomic
        from ..producer import producer_block
        options = {k: v for k, v in o.items() if k not in ("typed", "given", "prompts")}
        producer = producer_block("run", options, {"checkpoint": checkpoint_dir, "engine": engine_dir,
                                                   "tokenizer": tokenizer_dir, "input_file": input_file})
        write_text_atomic(output_json, json.dumps(dict(results=records, stats=stats, producer=producer), indent=2)
                          + "\n")
