"""TensorRT-LLM run.py beside `run` (cli/run_py.py): every option run.py's parser takes is run's (a first or second
name) or refused in one line saying what to do instead, and the log-prob .npy files have run.py's shapes."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from redrafter_trt.cli import main
from redrafter_trt.errors import ConfigError
from redrafter_trt.cli.run_cmd import run
from redrafter_trt.cli.run_py import (RUN_PY_INSTEAD, run_py_instead, run_py_name, write_cum_log_probs_npy,
                                      write_log_probs_npy)

# Every option of TensorRT-LLM 1.2.x's examples/run.py (parse_arguments, NVIDIA/TensorRT-LLM 640403b) and of
# examples/utils.py's add_common_args (1b17f9d) it adds, as argparse spells them (second names included;
# --kv_cache_enable_block_reuse is a BooleanOptionalAction, which adds --no-kv_cache_enable_block_reuse).
RUN_PY_OPTIONS = (
    "-h", "--help",
    # run.py's own
    "--max_input_length", "--max_output_len", "--draft_engine_dir", "--input_text", "--input_file",
    "--multimodal_input_file", "--input_token_extra_ids", "--input_token_extra_ids_file", "--output_csv",
    "--output_npy", "--output_generation_logits", "--output_logits_npy", "--output_log_probs_npy",
    "--output_cum_log_probs_npy", "--run_profiling", "--fail_fast_on_attention_window_too_large",
    # add_common_args: sampling
    "--num_beams", "--num_return_sequences", "--temperature", "--top_k", "--top_p", "--length_penalty",
    "--repetition_penalty", "--presence_penalty", "--frequency_penalty", "--min_p", "--beam_search_diversity_rate",
    "--random_seed", "--early_stopping", "--beam_width_array", "--end_id", "--stop_words", "--bad_words",
    "--no_repeat_ngram_size",
    # runtime
    "--sink_token_length", "--max_attention_window_size", "--multi_block_mode", "--enable_context_fmha_fp32_acc",
    "--cuda_graph_mode", "--log_level", "--no_prompt_template", "--use_py_session", "--debug_mode", "--streaming",
    "--streaming_interval", "--prompt_table_path", "--prompt_tasks", "--lora_dir", "--lora_ckpt_source",
    "--lora_task_uids", "--num_prepend_vtokens", "--draft_target_model_config", "--ngram_config", "--medusa_choices",
    "--eagle_choices", "--eagle_posterior_threshold", "--eagle_use_dynamic_tree", "--eagle_dynamic_tree_max_top_k",
    "--lookahead_config",
    # model
    "--engine_dir", "--tokenizer_type", "--vocab_file", "--no_add_special_tokens", "--hf_model_dir", "--model_dir",
    "--tokenizer_dir",
    # memory
    "--gpu_weights_percent", "--max_tokens_in_paged_kv_cache", "--kv_cache_enable_block_reuse",
    "--no-kv_cache_enable_block_reuse", "--kv_cache_free_gpu_memory_fraction", "--cross_kv_cache_fraction",
    "--enable_chunked_context",
    # Hugging Face model, streaming, adapters
    "--hf_data_type", "--data_type", "--hf_device_map_auto", "--return_all_generated_tokens", "--language_task_uids",
    "--backend",
)
RUNS_NAMES = {name for p in run.get_params(click.Context(run, **run.context_settings))  # -h and --help included
              if isinstance(p, click.Option)
              for name in p.opts + p.secondary_opts}


def test_every_run_py_option_is_runs_or_refused_and_no_refusal_is_dead():
    for name in RUN_PY_OPTIONS:
        assert (name in RUNS_NAMES) != (run_py_instead(name) is not None), name  # one or the other, never both
    assert set(RUN_PY_INSTEAD) <= {run_py_name(n) for n in RUN_PY_OPTIONS}  # each refusal is of a run.py option
    assert {"--output_log_probs_npy", "--output_cum_log_probs_npy", "--random_seed"} <= RUNS_NAMES


@pytest.mark.parametrize("name", [n for n in RUN_PY_OPTIONS if n not in RUNS_NAMES])
def test_each_refused_run_py_option_is_one_line_naming_it(name):
    """Refused as it is parsed, before any file is read: click's 'No such option' (or its guess, --tp for --top_k)
    said nothing of what to do."""
    res = CliRunner().invoke(main, ["run", "--tokenizer-dir", "nowhere", "--input-text", "hi", name, "1"])
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and f"{name} (TensorRT-LLM run.py's) is no option of run: " in lines[0], res.output
    assert run_py_instead(name) in lines[0] and "Traceback" not in res.output


def test_dash_spellings_are_refused_alike():
    assert run_py_instead("--top-k") == run_py_instead("--top_k")
    assert run_py_instead("--no-kv-cache-enable-block-reuse") == RUN_PY_INSTEAD["--no_kv_cache_enable_block_reuse"]
    assert run_py_instead("--chat") is None and run_py_instead("-v") is None


def test_log_prob_files_have_run_pys_shapes_and_padding(tmp_path):
    """ModelRunnerCpp fills log_probs [batch, beams, longest] with zeros past each output, cum_log_probs [batch,
    beams]; run.py saves both as float32."""
    np = pytest.importorskip("numpy")
    rows = [[-0.5, -1.25, -2.0], [-0.75], []]
    write_log_probs_npy(tmp_path / "lp.npy", rows)
    write_cum_log_probs_npy(tmp_path / "cum", rows)  # named as given (run adds .npy first, as np.save would)
    lp, cum = np.load(tmp_path / "lp.npy"), np.load(tmp_path / "cum")
    assert lp.dtype == cum.dtype == np.float32 and lp.shape == (3, 1, 3) and cum.shape == (3, 1)
    assert lp[:, 0].tolist() == [[-0.5, -1.25, -2.0], [-0.75, 0, 0], [0, 0, 0]]
    assert cum[:, 0].tolist() == [-3.75, -0.75, 0.0]


# a later word after --input_text's first prompt: what argparse's _parse_optional makes of it (None: a prompt)
LATER_WORDS = ("- item one", "-5 apples", "-5", "-.5", "-1.5", "-", "--top_k 1", "plain", "--max_output_len",
               "--max_output_len=4", "--input_text", "--top_k", "-x", "--chat", "-v", "--max_output_len=4 x")


def test_a_later_prompt_starting_with_a_dash_is_a_prompt_where_run_pys_parser_takes_one():
    """`--input_text A "- item one"` was 'No such option: - ' and "-5 apples" 'No such option: -5', where run.py's
    argparse (nargs='+') takes both as prompts: a word that starts with '-' is a value when it holds a space or looks
    like a negative number (its parser has no options that do), or is '-' alone; a known option still ends the list."""
    import argparse

    parser = argparse.ArgumentParser()
    for name in RUN_PY_OPTIONS:
        if name not in ("-h", "--help"):
            parser.add_argument(name, nargs="+" if name == "--input_text" else None)
    for word in LATER_WORDS:
        try:
            out = run._run_py_args(["--input_text", "A", word])
        except ConfigError:  # a run.py option run lacks, refused
            out = []
        taken = out[-2:] == ["--input-text", word]
        assert taken == (parser._parse_optional(word) is None), (word, out)
    assert run._run_py_args(["--input_text", "A", "--", "-x"]) == ["--input_text", "A", "--", "-x"]
    assert run._run_py_args(["--input_text", "A", "-5apples"])[-2:] == ["--input-text", "-5apples"]  # Python 3.14's
    res = CliRunner().invoke(main, ["run", "--tokenizer-dir", "nowhere", "--input_text", "A", "- item one", "-5 apples",
                                    "--max_output_len", "1"])
    assert res.exit_code == 2 and "pass exactly one of --checkpoint-dir" in res.output, res.output
