"""TensorRT-LLM 1.2.x `examples/run.py` beside `run`: what to do instead of each run.py option run has no equivalent
of (`RUN_PY_INSTEAD`; run's own take run.py's spellings as second names: --engine_dir, --tokenizer_dir, --input_text,
--input_file, --max_output_len, --random_seed, --output_log_probs_npy, --output_cum_log_probs_npy), and the log-prob
`.npy` files run.py writes:

    write_log_probs_npy(path, [[-0.1, -2.3], [-0.5]])     # float32 [batch, 1, longest], zero-padded, as run.py's
    write_cum_log_probs_npy(path, [[-0.1, -2.3], [-0.5]])  # float32 [batch, 1]: each output's sum
"""

from __future__ import annotations

from pathlib import Path

# shared reasons (several run.py options ask for the same thing run does not do)
BEAM_SEARCH = ("shapes beam search (N outputs a prompt), which run does not do: run's --num-beams is the drafter's beam "
               "count (ReDrafter's W), one output a prompt; leave it out")
NO_FILTERS = "run has no top-k, top-p or min-p: it samples the base's whole distribution at --temperature (0: greedy)"
NO_PENALTIES = ("run applies no penalties or banned words: its tokens are the base's own at --temperature (greedy, "
                "or exact sampling); leave it out")
STOPS = "run stops at the tokenizer's EOS and generation_config.json's eos_token_id: leave it out"
TOKEN_OUTPUT = "pass --output-json: it writes each prompt's output_ids (and text)"
STREAMING = "run prints each output when it is done; `redrafter-trt serve` streams"
WHOLE_CONTEXT = "run attends to the whole context (no sliding window or attention sinks): leave it out"
ENGINE_DEFAULTS = ("run --engine-dir runs the engine with ModelRunnerCpp's defaults (its kernels, KV cache and "
                   "memory): leave it out, or tune them with TensorRT-LLM's run.py")
PROMPT_TUNING = "run has no prompt tuning (p-tuning tables, virtual tokens): leave it out"
LORA = "run has no LoRA: merge the adapter into the base (peft's merge_and_unload), then convert that"
OTHER_DRAFTERS = ("run decodes with the checkpoint's or engine's ReDrafter drafter (--num-beams, --draft-len; "
                  "--no-draft for none): other speculative decoding is TensorRT-LLM run.py's")
TOKENIZER = "run loads the tokenizer of --tokenizer-dir (the base's Hugging Face folder): pass that"
NO_HF_MODEL = "run loads no Hugging Face model (the checkpoint or engine holds the weights, in their dtype): leave it out"
LOGITS = ("run writes no logits: --output-log-probs-npy writes each output token's log-probability under the base, "
          "--output-json the tokens")

# run.py's options (TensorRT-LLM 1.2.x examples/run.py and utils.py's add_common_args) run has no equivalent of
RUN_PY_INSTEAD = {
    "--num_beams": "run.py's --num_beams is beam search (N outputs a prompt), which run does not do: run's --num-beams "
                   "is the drafter's beam count (ReDrafter's W), one output a prompt",
    "--num_return_sequences": "run gives one output a prompt, the same for the same prompt and --seed: run again "
                              "with another --seed for another sample",
    "--length_penalty": BEAM_SEARCH, "--early_stopping": BEAM_SEARCH, "--beam_search_diversity_rate": BEAM_SEARCH,
    "--beam_width_array": BEAM_SEARCH,
    "--top_k": NO_FILTERS, "--top_p": NO_FILTERS, "--min_p": NO_FILTERS,
    "--repetition_penalty": NO_PENALTIES, "--presence_penalty": NO_PENALTIES, "--frequency_penalty": NO_PENALTIES,
    "--no_repeat_ngram_size": NO_PENALTIES, "--bad_words": NO_PENALTIES,
    "--end_id": STOPS, "--stop_words": STOPS,
    "--output_csv": TOKEN_OUTPUT, "--output_npy": TOKEN_OUTPUT,
    "--output_generation_logits": LOGITS, "--output_logits_npy": LOGITS,
    "--run_profiling": "time it with `redrafter-trt bench`",
    "--max_input_length": "run does not truncate prompts (run.py cuts each to N tokens, 923 by default): one past "
                          "the model's positions is refused, naming it; shorten it",
    "--log_level": "log at INFO with `redrafter-trt -v run ...`",
    "--debug_mode": "run has no tensor dump (run.py's Python session's); `redrafter-trt --debug run ...` shows "
                    "tracebacks",
    "--streaming": STREAMING, "--streaming_interval": STREAMING, "--return_all_generated_tokens": STREAMING,
    "--sink_token_length": WHOLE_CONTEXT, "--max_attention_window_size": WHOLE_CONTEXT,
    "--multi_block_mode": ENGINE_DEFAULTS, "--enable_context_fmha_fp32_acc": ENGINE_DEFAULTS,
    "--cuda_graph_mode": ENGINE_DEFAULTS, "--gpu_weights_percent": ENGINE_DEFAULTS,
    "--max_tokens_in_paged_kv_cache": ENGINE_DEFAULTS, "--kv_cache_free_gpu_memory_fraction": ENGINE_DEFAULTS,
    "--enable_chunked_context": ENGINE_DEFAULTS, "--cross_kv_cache_fraction": ENGINE_DEFAULTS,
    "--kv_cache_enable_block_reuse": "run --engine-dir keeps KV-cache block reuse off (ModelRunnerCpp's default; "
                                     "run.py turns it on), a precaution with KV blocks rewound every step: leave it out",
    "--no_kv_cache_enable_block_reuse": "run --engine-dir keeps KV-cache block reuse off already: leave it out",
    "--fail_fast_on_attention_window_too_large": "run refuses a prompt + --max-output-len past the engine's "
                                                 "max_seq_len before it starts: leave it out",
    "--use_py_session": "run --engine-dir runs TensorRT-LLM's C++ executor (ModelRunnerCpp) alone: leave it out",
    "--no_prompt_template": "run wraps a prompt in no template but with --chat (the tokenizer's chat template; run.py "
                            "wraps Qwen's and InternLM's in its own): leave it out",
    "--no_add_special_tokens": "run adds the tokenizer's special tokens (BOS) to text as run.py does by default; to "
                               "send ids as they are, pass them in a .csv or .npy --input-file",
    "--prompt_table_path": PROMPT_TUNING, "--prompt_tasks": PROMPT_TUNING, "--num_prepend_vtokens": PROMPT_TUNING,
    "--input_token_extra_ids": PROMPT_TUNING, "--input_token_extra_ids_file": PROMPT_TUNING,
    "--lora_dir": LORA, "--lora_ckpt_source": LORA, "--lora_task_uids": LORA,
    "--language_task_uids": "run has no language adapters: leave it out",
    "--multimodal_input_file": "run takes text prompts and token ids alone (no encoder or vision input)",
    "--draft_engine_dir": OTHER_DRAFTERS, "--draft_target_model_config": OTHER_DRAFTERS,
    "--ngram_config": OTHER_DRAFTERS, "--medusa_choices": OTHER_DRAFTERS, "--eagle_choices": OTHER_DRAFTERS,
    "--eagle_posterior_threshold": OTHER_DRAFTERS, "--eagle_use_dynamic_tree": OTHER_DRAFTERS,
    "--eagle_dynamic_tree_max_top_k": OTHER_DRAFTERS, "--lookahead_config": OTHER_DRAFTERS,
    "--tokenizer_type": TOKENIZER, "--vocab_file": TOKENIZER, "--hf_model_dir": TOKENIZER, "--model_dir": TOKENIZER,
    "--hf_data_type": NO_HF_MODEL, "--data_type": NO_HF_MODEL, "--hf_device_map_auto": NO_HF_MODEL,
    "--backend": "run's backend is the reference runtime with --checkpoint-dir, TensorRT-LLM with --engine-dir: pass "
                 "one of them",
}


def run_py_name(name: str) -> str:
    """run.py's spelling of an option as typed: underscores after `--` (`--top-k`, `--no-kv_cache_enable_block_reuse`:
    `--top_k`, `--no_kv_cache_enable_block_reuse`)."""
    return "--" + name[2:].replace("-", "_") if name.startswith("--") else name


def run_py_instead(name: str) -> str | None:
    """What to do instead of run.py's option `name` (any spelling), or None when it is no run.py option run lacks."""
    return RUN_PY_INSTEAD.get(run_py_name(name))


# TensorRT-LLM's ExplicitDraftTokensLayer (the decoding of an explicit_draft_tokens engine, every engine `build` makes)
# computes no log-probabilities: the executor returns the zeros it set the buffer to, at each output's length
def engine_log_probs(given: list[str]) -> str:
    """The refusal of log-probability files (`given`: how each asked for was given) with --engine-dir."""
    return (f"{' and '.join(given)} need{'s' if len(given) == 1 else ''} --checkpoint-dir: a ReDrafter engine "
            f"computes no log-probabilities (TensorRT-LLM's explicit-draft-tokens decoding writes none, and its "
            f"executor returns zeros)")


def write_log_probs_npy(path: Path, log_probs: list[list[float]]) -> None:
    """run.py's --output_log_probs_npy: float32 [batch, 1, longest output], each output's per-token log-probabilities
    zero-padded past its end (as ModelRunnerCpp fills `log_probs`; one beam)."""
    import numpy as np

    out = np.zeros((len(log_probs), 1, max(map(len, log_probs), default=0)), dtype="float32")
    for i, row in enumerate(log_probs):
        out[i, 0, :len(row)] = row
    _save(path, out)


def write_cum_log_probs_npy(path: Path, log_probs: list[list[float]]) -> None:
    """run.py's --output_cum_log_probs_npy: float32 [batch, 1], each output's summed log-probability (one beam)."""
    import numpy as np

    _save(path, np.array([[sum(row)] for row in log_probs], dtype="float32").reshape(len(log_probs), 1))


def _save(path: Path, array) -> None:
    import numpy as np

    from ..output import atomic_file

    with atomic_file(path) as tmp, open(tmp, "wb") as f:  # a file object: np.save adds no .npy to the temporary name
        np.save(f, array)
