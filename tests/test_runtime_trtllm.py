"""The --engine-dir path with a test double for TensorRT-LLM (this checks the arguments we pass, not that an
engine runs): a clear DependencyError without TensorRT-LLM, requests checked against the engine's build limits,
ModelRunnerCpp.from_dir / generate arguments, and how outputs are cut."""

from __future__ import annotations

import json
import logging
import re
import sys
import types

import pytest

from redrafter_trt.errors import ConfigError, DependencyError, RedrafterError
from redrafter_trt.runtime import trtllm


def write_engine_config(folder, max_batch_size=8, max_input_len=16, max_seq_len=64, greedy=True, max_num_tokens=None,
                        packed=True, rope=None):
    """The keys of an engine config.json that the run reads; max_seq_len as passed to trtllm-build, which stores it
    plus max_draft_len (5 x 5 here)."""
    build = {"max_batch_size": max_batch_size, "max_input_len": max_input_len, "max_seq_len": max_seq_len + 25,
             "max_draft_len": 25, "max_beam_width": 1,
             "plugin_config": {"remove_input_padding": packed, "context_fmha": True}}
    if max_num_tokens:
        build["max_num_tokens"] = max_num_tokens
    (folder / "config.json").write_text(json.dumps({
        "version": "1.2.0",
        "pretrained_config": {"architecture": "ReDrafterForLLaMALM", "redrafter_num_beams": 5,
                              "redrafter_draft_len_per_beam": 5, "redrafter_greedy_search": greedy, **(rope or {})},
        "build_config": build}))
    (folder / "rank0.engine").write_bytes(b"engine")


def test_missing_tensorrt_llm_is_a_clear_error(tmp_path, monkeypatch):
    write_engine_config(tmp_path)
    monkeypatch.setitem(sys.modules, "tensorrt_llm", None)
    with pytest.raises(DependencyError, match="TensorRT-LLM") as e:
        trtllm.generate_engine(tmp_path, [[1, 2]], 4, end_id=2, pad_id=2)
    # what is quoted is a command to copy: the install hint's remark on the releases was quoted with it
    assert all("(" not in quoted for quoted in re.findall("`([^`]*)`", str(e.value))), str(e.value)
    assert "pip install 'tensorrt_llm==1.2.*'" in str(e.value)


@pytest.mark.parametrize("version, why", [("1.3.0", "is past the 1.2.x line"), ("0.21.0", "older ReDrafter format")])
def test_tensorrt_llm_without_redrafter_is_refused_before_the_import(tmp_path, monkeypatch, version, why):
    """As `build` and `serve` refuse it: a TensorRT-LLM outside 1.0 to 1.2.x is named, not imported, and for what it
    is (1.3.0rc0-rc15 still ran this format: past the supported line, not unable)."""
    write_engine_config(tmp_path)
    monkeypatch.setattr("redrafter_trt.installed_trtllm.trtllm_version", lambda: version)
    monkeypatch.setitem(sys.modules, "tensorrt_llm", types.ModuleType("tensorrt_llm"))  # importable: not imported
    with pytest.raises(DependencyError, match=f"TensorRT-LLM {version} [^:]*{why}.*1.2.*rebuild the engine"):
        trtllm.generate_engine(tmp_path, [[1, 2]], 4, end_id=2, pad_id=2)


class FakeExecutor:
    """Answers every request in two polls (a non-final response first), like the executor's await loop."""

    def __init__(self, outputs: list[list[int]], iters: list[int], leader: bool = True, reasons: list[str] = ()):
        self.outputs, self.iters, self.leader, self.requests, self.polls = outputs, iters, leader, [], 0
        self.reasons = list(reasons) or ["LENGTH"] * len(outputs)

    def can_enqueue_requests(self):
        return self.leader

    def enqueue_requests(self, requests):
        self.requests = requests
        return [10 + i for i in range(len(requests))]

    def await_responses(self):
        self.polls += 1
        final = self.polls > 1
        return [types.SimpleNamespace(request_id=10 + i, has_error=lambda: False, error_msg="",
                                      result=types.SimpleNamespace(is_final=final, output_token_ids=[out],
                                                                   decoding_iter=it, finish_reasons=[why]))
                for i, (out, it, why) in enumerate(zip(self.outputs, self.iters, self.reasons))]


def install_fake_trtllm(monkeypatch, executor, calls, holds="session"):
    class FakeRunner:
        @classmethod
        def from_dir(cls, **kwargs):
            calls["from_dir"] = kwargs
            runner = cls()
            setattr(runner, holds, executor)  # ModelRunnerCpp.__init__: self.session = executor (or self.executor)
            return runner

    def record(name):
        return lambda **kwargs: (name, kwargs)

    tllm = types.ModuleType("tensorrt_llm")
    tllm.mpi_rank, tllm.mpi_world_size = (lambda: 0), (lambda: 1)
    runtime = types.ModuleType("tensorrt_llm.runtime")
    runtime.ModelRunnerCpp = FakeRunner
    api = types.ModuleType("tensorrt_llm.bindings.executor")
    api.Request, api.SamplingConfig = record("Request"), record("SamplingConfig")
    api.FinishReason = types.SimpleNamespace(END_ID="END_ID", STOP_WORDS="STOP_WORDS", LENGTH="LENGTH")
    for name, module in (("tensorrt_llm", tllm), ("tensorrt_llm.runtime", runtime),
                         ("tensorrt_llm.bindings.executor", api)):
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr("redrafter_trt.installed_trtllm.trtllm_version", lambda: "1.2.0")  # whatever this machine has installed


@pytest.mark.parametrize("temperature", [0.0, 0.7])
def test_runner_arguments_and_outputs(tmp_path, monkeypatch, temperature):
    write_engine_config(tmp_path, greedy=temperature == 0)
    calls = {}
    executor = FakeExecutor([[1, 2, 3, 7, 8, 2], [4, 5, 9, 9]], iters=[2, 1])
    install_fake_trtllm(monkeypatch, executor, calls)
    res = trtllm.generate_engine(tmp_path, [[1, 2, 3], [4, 5]], 5, end_id=2, pad_id=0, temperature=temperature, seed=3)
    assert calls["from_dir"] == dict(engine_dir=str(tmp_path), rank=0, max_batch_size=2, max_input_len=3,
                                     max_output_len=5, max_beam_width=1)
    kinds = [kind for kind, _ in executor.requests]
    assert kinds == ["Request", "Request"]
    first = executor.requests[0][1]
    assert first["input_token_ids"] == [1, 2, 3] and first["max_tokens"] == 5 and first["end_id"] == 2
    assert first["pad_id"] == 0 and first["streaming"] is False
    kind, sampling = first["sampling_config"]
    assert kind == "SamplingConfig" and sampling["beam_width"] == 1 and sampling["seed"] == 3
    assert sampling == ({"beam_width": 1, "seed": 3, "temperature": temperature} if temperature
                        else {"beam_width": 1, "seed": 3, "top_k": 1})
    assert res.output_ids == [[7, 8, 2], [9, 9]]
    assert res.steps == [2, 1] and res.mean_tokens_per_step == pytest.approx(5 / 3)
    assert executor.polls == 2  # the non-final responses were not taken as results


def test_an_engines_temperature_is_refused_in_runs_words(tmp_path, monkeypatch):
    """run --engine-dir checks the temperature as the reference runtime does (runtime.check_temperature), in run's
    words: the engine runtime has no Python API of its own whose keyword it could name."""
    from redrafter_trt.errors import ConfigError

    write_engine_config(tmp_path, greedy=False)
    install_fake_trtllm(monkeypatch, FakeExecutor([[1, 2, 3, 7]], iters=[1]), {})
    with pytest.raises(ConfigError, match=r"^--temperature 1e-07 is negative, below 1e-05 or not finite: use 0 for "
                                          r"greedy"):
        trtllm.generate_engine(tmp_path, [[1, 2, 3]], 1, end_id=2, pad_id=0, temperature=1e-7, seed=3)


@pytest.mark.parametrize("holds", ["session", "executor"])
def test_the_runner_executor_is_taken_under_either_name(tmp_path, monkeypatch, holds):
    """NVIDIA/TensorRT-LLM's model_runner_cpp.py keeps the Executor as self.session in some commits and as
    self.executor in others (its generate() calls that attribute's enqueue_requests): either runs."""
    write_engine_config(tmp_path)
    executor = FakeExecutor([[1, 2, 7, 8]], iters=[1])
    install_fake_trtllm(monkeypatch, executor, {}, holds=holds)
    assert trtllm.generate_engine(tmp_path, [[1, 2]], 4, end_id=2, pad_id=0).output_ids == [[7, 8]]


def test_a_runner_without_an_executor_is_a_dependency_error(tmp_path, monkeypatch):
    write_engine_config(tmp_path)
    install_fake_trtllm(monkeypatch, object(), {}, holds="engine")
    with pytest.raises(DependencyError, match="no Executor as `session` or `executor`.*1.2"):
        trtllm.generate_engine(tmp_path, [[1, 2]], 4, end_id=2, pad_id=0)


@pytest.mark.parametrize("tokenizer_eos, stop, expected", [
    (128009, [128001, 128008, 128009], (128009, [128001, 128008])),  # Llama 3.1 Instruct: <|eot_id|> ends a turn
    (151645, [151643, 151645], (151645, [151643])),                   # Qwen2.5 Instruct: <|im_end|>
    (None, [7, 9], (7, [9])),
    (5, [7, 9], (7, [9])),  # an EOS that is not a stop token is no end_id
    (None, [], (-1, [])),
])
def test_stop_tokens_split_into_end_id_and_stop_words(tokenizer_eos, stop, expected):
    assert trtllm.split_stop_tokens(tokenizer_eos, stop) == expected


def test_stop_words_reach_the_request_and_the_end_id_is_put_back(tmp_path, monkeypatch):
    """The executor drops an end_id it stops at and keeps a stop word: both outputs end on their stop token."""
    write_engine_config(tmp_path)
    executor = FakeExecutor([[1, 7, 8], [1, 6, 5], [1, 4, 4, 4]], iters=[2, 2, 2],
                            reasons=["END_ID", "STOP_WORDS", "LENGTH"])
    install_fake_trtllm(monkeypatch, executor, {})
    res = trtllm.generate_engine(tmp_path, [[1]] * 3, 3, end_id=2, pad_id=0, stop_words=[5, 9])
    assert all(kwargs["stop_words"] == [[5], [9]] and kwargs["end_id"] == 2 for _, kwargs in executor.requests)
    assert res.output_ids == [[7, 8, 2], [6, 5], [4, 4, 4]]
    executor = FakeExecutor([[1, 3]], iters=[1])
    install_fake_trtllm(monkeypatch, executor, {})
    trtllm.generate_engine(tmp_path, [[1]], 3, end_id=2, pad_id=0)
    assert executor.requests[0][1]["stop_words"] is None


def write_two_rank_engine(folder):
    """A tp=2 engine: its config's mapping and both ranks' engine files."""
    write_engine_config(folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["pretrained_config"]["mapping"] = {"tp_size": 2, "pp_size": 1, "world_size": 2}
    (folder / "config.json").write_text(json.dumps(cfg))
    (folder / "rank1.engine").write_bytes(b"engine")


def test_a_failed_request_is_an_error(tmp_path, monkeypatch):
    write_engine_config(tmp_path)
    executor = FakeExecutor([[1, 5]], iters=[1])
    answers = executor.await_responses
    executor.await_responses = lambda: [types.SimpleNamespace(**{**vars(r), "has_error": lambda: True,
                                                                 "error_msg": "out of KV cache blocks"})
                                        for r in answers()]
    install_fake_trtllm(monkeypatch, executor, {})
    with pytest.raises(RedrafterError, match="TensorRT-LLM failed on request 10: out of KV cache blocks"):
        trtllm.generate_engine(tmp_path, [[1]], 4, end_id=2, pad_id=0)


def test_a_result_of_no_decoding_iterations_counts_one_step(tmp_path, monkeypatch):
    """The executor reports decoding_iter 0 for a request answered in its context step: still one engine step."""
    write_engine_config(tmp_path)
    install_fake_trtllm(monkeypatch, FakeExecutor([[1, 5]], iters=[0]), {})
    assert trtllm.generate_engine(tmp_path, [[1]], 4, end_id=2, pad_id=0).steps == [1]


def test_non_leader_rank_returns_none(tmp_path, monkeypatch):
    """Rank 1 of a tp=2 engine loads its own rank's engine, and leaves the answers to the leader."""
    write_two_rank_engine(tmp_path)
    executor, calls = FakeExecutor([[1, 2]], iters=[1], leader=False), {}
    install_fake_trtllm(monkeypatch, executor, calls)
    tllm = sys.modules["tensorrt_llm"]
    monkeypatch.setattr(tllm, "mpi_rank", lambda: 1)
    monkeypatch.setattr(tllm, "mpi_world_size", lambda: 2)
    assert trtllm.generate_engine(tmp_path, [[1]], 4, end_id=2, pad_id=2) is None
    assert executor.requests == [] and calls["from_dir"]["rank"] == 1


def test_more_prompts_than_the_engine_batch_wait_in_the_executor_queue(tmp_path, monkeypatch):
    """ModelRunnerCpp.from_dir asserts max_batch_size <= the engine's: ask for at most that, enqueue every prompt."""
    write_engine_config(tmp_path, max_batch_size=2)
    calls = {}
    executor = FakeExecutor([[1, 5, 2], [1, 6, 2], [1, 7, 2]], iters=[1, 1, 1])
    install_fake_trtllm(monkeypatch, executor, calls)
    res = trtllm.generate_engine(tmp_path, [[1], [1], [1]], 4, end_id=2, pad_id=2)
    assert calls["from_dir"]["max_batch_size"] == 2 and len(executor.requests) == 3
    assert res.output_ids == [[5, 2], [6, 2], [7, 2]]


@pytest.mark.parametrize("prompt_len, new_tokens, message", [
    (17, 4, "17 tokens exceeds the 16 the engine takes"),
    (16, 49, r"16 prompt tokens \+ --max-output-len 49 exceed the engine's max_seq_len 64: lower --max-output-len to 48"),
    (1, 64, r"^1 prompt token \+ --max-output-len 64 exceed"),
])
def test_requests_beyond_the_build_limits_are_refused_before_loading(tmp_path, monkeypatch, prompt_len, new_tokens,
                                                                     message):
    write_engine_config(tmp_path)
    monkeypatch.setitem(sys.modules, "tensorrt_llm", None)  # refused before TensorRT-LLM is needed
    with pytest.raises(ConfigError, match=message):
        trtllm.generate_engine(tmp_path, [[1] * min(3, prompt_len), [1] * prompt_len], new_tokens, end_id=2, pad_id=2)


@pytest.mark.parametrize("prompt_len", [64, 70])
def test_a_prompt_that_leaves_no_room_to_generate_is_told_to_shorten(tmp_path, monkeypatch, prompt_len):
    """The executor takes prompts up to 88 tokens here (max_seq_len 64 + 25 draft tokens, minus 1), but one of 64 or
    more leaves no room for a new token: the fix is a shorter prompt, not a lower --max-output-len (already 1)."""
    write_engine_config(tmp_path, max_num_tokens=8192)
    monkeypatch.setitem(sys.modules, "tensorrt_llm", None)
    with pytest.raises(ConfigError, match=f"a prompt of {prompt_len} tokens exceeds the 63 the engine takes: shorten"):
        trtllm.generate_engine(tmp_path, [[1] * prompt_len], 1, end_id=2, pad_id=2)


@pytest.mark.parametrize("max_num_tokens, packed, limit", [
    (8192, True, 88),   # stored max_seq_len 64 + 25, minus 1: the builder ignored max_input_len 16
    (40, True, 40),     # max_num_tokens below that
    (8192, False, 16),  # padded input: max_input_len holds
])
def test_prompt_limit_is_the_one_the_executor_applies(tmp_path, max_num_tokens, packed, limit):
    """With packed input and context FMHA, TensorRT-LLM's executor takes prompts up to min(max_seq_len - 1,
    max_num_tokens) whatever --max_input_len was (trtGptModel.h); ModelRunnerCpp no longer asserts it."""
    write_engine_config(tmp_path, max_num_tokens=max_num_tokens, packed=packed)
    assert trtllm.EngineLimits.read(tmp_path).max_input_len == limit


@pytest.mark.parametrize("scaling, table", [
    ({"type": "linear", "factor": 4.0}, 16),
    ({"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16}, 16),
    ({"rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
      "original_max_position_embeddings": 16}, None),  # llama3's factor does not stretch: max_seq_len stays in it
    (None, None),
])
def test_a_request_past_the_rope_table_warns(tmp_path, caplog, scaling, table):
    """A review: an engine of a linear or yarn scaling whose max_seq_len passes max_position_embeddings (trtllm-build's
    default: max_position_embeddings x factor) reads its RoPE from a table of max_position_embeddings rows, by position
    and unchecked (TensorRT-LLM 1.2 layers/attention.py create_attention_const_params), so tokens past it got no RoPE
    of the model's scaling without a word; run --engine-dir warns now."""
    write_engine_config(tmp_path, max_seq_len=64, rope={"max_position_embeddings": 16, "rotary_scaling": scaling})
    limits = trtllm.EngineLimits.read(tmp_path)
    assert limits.rope_table == table
    with caplog.at_level("WARNING", logger="redrafter_trt.runtime.trtllm"):
        limits.check([[1] * 10], 6, 0.0)
        assert caplog.text == ""
        limits.check([[1] * 10], 7, 0.0)
    assert ("pass max_position_embeddings 16" in caplog.text) is (table is not None)


def test_request_at_the_build_limits_runs(tmp_path, monkeypatch):
    write_engine_config(tmp_path)
    install_fake_trtllm(monkeypatch, FakeExecutor([[1] * 16 + [3] * 48], iters=[12]), {})
    assert trtllm.generate_engine(tmp_path, [[1] * 16], 48, end_id=2, pad_id=2).output_ids == [[3] * 48]


def test_sampling_engine_refuses_temperature_zero(tmp_path, monkeypatch):
    """The explicit-draft-tokens decoder reads only the temperature (1.0 when unset), never top_k."""
    write_engine_config(tmp_path, greedy=False)
    monkeypatch.setitem(sys.modules, "tensorrt_llm", None)
    with pytest.raises(ConfigError, match="pass a positive --temperature"):
        trtllm.generate_engine(tmp_path, [[1, 2]], 4, end_id=2, pad_id=2)


@pytest.mark.parametrize("temperature", [1e-9, 1e-300, -0.5, float("nan"), float("inf")])
def test_a_temperature_the_reference_runtime_refuses_is_refused_for_an_engine(tmp_path, monkeypatch, temperature):
    """The same --temperature check as --checkpoint-dir: below 1e-5, logits / T overflow (1e-300 is 0 in the
    executor's float32), which a sampling engine would decode into NaN."""
    write_engine_config(tmp_path, greedy=False)
    monkeypatch.setitem(sys.modules, "tensorrt_llm", None)  # refused before TensorRT-LLM is needed
    with pytest.raises(ConfigError, match="below 1e-05 or not finite"):
        trtllm.generate_engine(tmp_path, [[1, 2]], 4, end_id=2, pad_id=2, temperature=temperature)


def test_greedy_engine_warns_that_it_ignores_the_temperature(tmp_path, monkeypatch, caplog):
    """...and is sent what a greedy run is (top_k 1): the temperature went to it as typed."""
    write_engine_config(tmp_path, greedy=True)
    executor = FakeExecutor([[1, 5]], iters=[1])
    install_fake_trtllm(monkeypatch, executor, {})
    with caplog.at_level(logging.WARNING, logger="redrafter_trt.runtime.trtllm"):
        trtllm.generate_engine(tmp_path, [[1]], 4, end_id=2, pad_id=2, temperature=0.8)
    assert "is ignored" in caplog.text
    assert executor.requests[0][1]["sampling_config"] == ("SamplingConfig", {"beam_width": 1, "seed": 0, "top_k": 1})


@pytest.mark.parametrize("greedy, recorded", [(True, 0.0), (False, 0.7)])
def test_run_output_json_records_the_temperature_the_engine_ran_at(tmp_path, monkeypatch, smollm2, greedy, recorded):
    """A greedy engine ignores --temperature (with a warning): the producer recorded the 0.7 typed."""
    from click.testing import CliRunner

    from redrafter_trt.cli import main

    engine = tmp_path / "engine"
    engine.mkdir()
    write_engine_config(engine, greedy=greedy)
    install_fake_trtllm(monkeypatch, FakeExecutor([[1, 2, 3, 7, 8]], iters=[1]), {})
    (tmp_path / "ids.csv").write_text("1,2,3\n")
    out = tmp_path / "out.json"
    res = CliRunner().invoke(main, ["run", "--engine-dir", str(engine), "--tokenizer-dir", str(smollm2), "--input-file",
                                    str(tmp_path / "ids.csv"), "--max-output-len", "2", "--temperature", "0.7",
                                    "--output-json", str(out)])
    assert res.exit_code == 0, res.output
    assert json.loads(out.read_text())["producer"]["options"]["temperature"] == recorded


@pytest.mark.parametrize("text, needle", [
    ("{}", "not the config of a ReDrafter engine"),
    ("not json", "not the config of a ReDrafter engine"),
    ('{"pretrained_config": {}, "build_config": {}}', "not the config of a ReDrafter engine"),
    ('{"pretrained_config": {"redrafter_num_beams": 5}, "build_config": {"max_batch_size": "many"}}',
     "build_config.max_batch_size is 'many', not a positive integer"),
    ('{"pretrained_config": {"redrafter_num_beams": 5, "mapping": [1]}, "build_config": {"max_batch_size": 1, '
     '"max_input_len": 1, "max_seq_len": 2}}', r"pretrained_config.mapping is \[1\], not an object"),
])
def test_folder_without_an_engine_config_is_a_clear_error(tmp_path, text, needle):
    (tmp_path / "config.json").write_text(text)
    with pytest.raises(ConfigError, match=needle):
        trtllm.generate_engine(tmp_path, [[1]], 4, end_id=2, pad_id=2)


def test_a_tensor_parallel_engine_needs_its_mpi_ranks(tmp_path, monkeypatch):
    """Run without mpirun, a tp=2 engine would fail inside TensorRT-LLM: one line naming the command instead."""
    write_two_rank_engine(tmp_path)
    install_fake_trtllm(monkeypatch, FakeExecutor([[1, 5]], iters=[1]), {})
    with pytest.raises(ConfigError, match=r"2 ranks but 1 process\(es\).*mpirun -n 2"):
        trtllm.generate_engine(tmp_path, [[1]], 4, end_id=2, pad_id=2)
