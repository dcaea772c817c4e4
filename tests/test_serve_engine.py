"""`redrafter-trt serve --engine-dir`: the trtllm-serve command for a built engine, checked against TensorRT-LLM
1.2.x's option names (a test double stands in for trtllm-serve: this checks what we start, not that it serves),
and the engine folder checks before anything starts."""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from redrafter_trt.cli import main


def trtllm_serve_12_parser() -> argparse.ArgumentParser:
    """tensorrt_llm/commands/serve.py `serve`: the options we pass, with their types and choices."""
    p = argparse.ArgumentParser(exit_on_error=False)
    p.add_argument("model")
    p.add_argument("--backend", choices=["pytorch", "trt", "tensorrt", "_autodeploy"])
    for flag in ("--tokenizer", "--host", "--extra_llm_api_options"):
        p.add_argument(flag, type=str)
    for flag in ("--port", "--tp_size", "--max_batch_size", "--max_num_tokens", "--max_seq_len"):
        p.add_argument(flag, type=int)
    p.add_argument("--tool_parser", choices=TRTLLM_TOOL_PARSERS)
    p.add_argument("--reasoning_parser", choices=TRTLLM_REASONING_PARSERS)
    return p


# ToolParserFactory.parsers of the newest tensorrt_llm/serve/tool_parser/tool_parser_factory.py read (not checked
# at the v1.2.0 tag)
TRTLLM_TOOL_PARSERS = ["qwen3", "qwen3_coder", "kimi_k2", "deepseekv3", "deepseekv3.1", "deepseek_v32"]
# some of the ReasoningParserFactory names of the newest tensorrt_llm/llmapi/reasoning_parser.py read
TRTLLM_REASONING_PARSERS = ["deepseek-r1", "qwen3", "qwen3_5", "nano-v3"]


def make_engine(folder, tp=4, ranks=None, redrafter=True, vocab_size=49152, max_batch_size=8, max_num_tokens=8192):
    folder.mkdir()
    pretrained = {"architecture": "ReDrafterForLLaMALM", "vocab_size": vocab_size,
                  "mapping": {"world_size": tp, "tp_size": tp, "pp_size": 1}}
    if redrafter:
        pretrained |= {"redrafter_num_beams": 5, "redrafter_draft_len_per_beam": 5, "redrafter_greedy_search": True}
    (folder / "config.json").write_text(json.dumps({
        "version": "1.2.0", "pretrained_config": pretrained,
        "build_config": {"max_batch_size": max_batch_size, "max_num_tokens": max_num_tokens, "max_input_len": 1024,
                         "max_seq_len": 2073}}))
    for r in range(tp if ranks is None else ranks):
        (folder / f"rank{r}.engine").write_bytes(b"")
    return folder


@pytest.fixture(autouse=True)
def own_cache(smollm2, tmp_path, monkeypatch):
    """The cache folder, where serve writes trtllm-serve's options file, is each test's own (SmolLM2 is found first,
    in the real one)."""
    monkeypatch.setenv("REDRAFTER_TRT_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def tokenizer_dir(smollm2):
    """SmolLM2's tokenizer (49152 tokens, the vocab_size of make_engine's engines)."""
    return smollm2


def serve(*args):
    return CliRunner().invoke(main, ["serve", *map(str, args)])


def test_dry_run_is_a_trtllm_serve_command_for_the_engine(tmp_path, tokenizer_dir):
    engine = make_engine(tmp_path / "engine", tp=4)
    res = serve("--engine-dir", engine, "--tokenizer-dir", tokenizer_dir, "--host", "0.0.0.0", "--port", 9000,
                "--dry-run")
    assert res.exit_code == 0, res.output
    argv = shlex.split(res.output)
    assert argv[0] == "trtllm-serve"
    args = trtllm_serve_12_parser().parse_args(argv[1:])  # raises on a flag or value 1.2.x would reject
    assert (args.model, args.backend, args.tokenizer) == (str(engine), "trt", str(tokenizer_dir))
    assert (args.host, args.port, args.tp_size) == ("0.0.0.0", 9000, 4)
    assert (args.max_batch_size, args.max_num_tokens) == (8, 8192)  # the engine's own, not trtllm-serve's 2048
    assert args.max_seq_len is None


def test_the_limits_passed_to_trtllm_serve_are_the_engines_own(tmp_path, byte_engine):
    """Read from the engine's build_config, not serve's defaults (make_engine's 8 and 8192 passed either way)."""
    _, tok = byte_engine
    engine = make_engine(tmp_path / "engine16", tp=1, vocab_size=256, max_batch_size=16, max_num_tokens=4096)
    res = serve("--engine-dir", engine, "--tokenizer-dir", tok, "--port", 9000, "--dry-run")
    assert res.exit_code == 0, res.output
    args = trtllm_serve_12_parser().parse_args(shlex.split(res.output.splitlines()[-1])[1:])
    assert (args.max_batch_size, args.max_num_tokens) == (16, 4096)


@pytest.mark.parametrize("preset, refused", [("max-batch-size: 16\n", False), ("max-batch-size: 4\n", True)])
def test_a_presets_max_batch_size_passes_where_it_is_the_engines(tmp_path, byte_engine, preset, refused):
    """A preset's max-batch-size is compared with the engine's own (16 here, not serve's default 8): equal, it is
    what trtllm-serve gets and passes; another is refused in one line."""
    _, tok = byte_engine
    engine = make_engine(tmp_path / "engine16", tp=1, vocab_size=256, max_batch_size=16)
    path = tmp_path / "p.yaml"
    path.write_text(preset)
    res = serve("--config", path, "--engine-dir", engine, "--tokenizer-dir", tok, "--port", 9000, "--dry-run")
    if refused:
        assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1, res.output
        assert "preset sets max-batch-size," in res.output, res.output
    else:
        assert res.exit_code == 0 and "--max_batch_size 16 " in res.output.splitlines()[-1], res.output


@pytest.mark.parametrize("parallel", ["pp_size", "cp_size"])
def test_an_engine_of_pipeline_or_context_parallelism_is_refused(tmp_path, tokenizer_dir, parallel):
    """A review: an engine of tp 1 x pp 2 (TensorRT-LLM's own converter writes one; ours refuses it) was served with
    its world size as --tp_size 2, which the LLM API refuses against the engine's tp_size 1 once the GPUs load."""
    engine = make_engine(tmp_path / "engine", tp=1, ranks=2)
    config = json.loads((engine / "config.json").read_text())
    config["pretrained_config"]["mapping"] |= {"world_size": 2, parallel: 2}
    (engine / "config.json").write_text(json.dumps(config))
    res = serve("--engine-dir", engine, "--tokenizer-dir", tokenizer_dir, "--port", 9000, "--dry-run")
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1, res.output
    assert f"mapping.{parallel} is 2, where ReDrafter engines need 1" in res.output


def test_trtllm_serve_runs_with_kv_cache_block_reuse_off_as_run_does(tmp_path, tokenizer_dir, monkeypatch):
    """A review: trtllm-serve builds the LLM API's KvCacheConfig, whose enable_block_reuse defaults to True, where
    `run --engine-dir` (ModelRunnerCpp.from_dir: kv_cache_enable_block_reuse=False) runs with it off, and
    TensorRT-LLM's ReDrafter test only ever runs it off (explicit draft tokens rewind KV blocks every step). serve now
    passes an --extra_llm_api_options file turning it off (update_llm_args_with_extra_dict applies it), rewritten
    each time: it is ours, not the user's."""
    import yaml

    engine = make_engine(tmp_path / "engine", tp=1)

    def options_file():
        res = serve("--engine-dir", engine, "--tokenizer-dir", tokenizer_dir, "--port", 9000, "--dry-run")
        assert res.exit_code == 0, res.output
        path = Path(trtllm_serve_12_parser().parse_args(shlex.split(res.output)[1:]).extra_llm_api_options)
        assert path.is_relative_to(tmp_path / "cache"), path
        return path

    off = {"kv_cache_config": {"enable_block_reuse": False}}
    path = options_file()
    assert yaml.safe_load(path.read_text()) == off
    path.write_text("kv_cache_config: {enable_block_reuse: true}\n")
    assert yaml.safe_load(options_file().read_text()) == off


def test_an_unwritable_cache_folder_for_trtllm_serves_options_is_one_line(tmp_path, tokenizer_dir, monkeypatch):
    blocked = tmp_path / "a-file"
    blocked.write_text("")
    monkeypatch.setenv("REDRAFTER_TRT_CACHE", str(blocked / "cache"))
    res = serve("--engine-dir", make_engine(tmp_path / "engine", tp=1), "--tokenizer-dir", tokenizer_dir, "--port",
                9000, "--dry-run")
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    assert res.output.startswith(f"error: cannot write trtllm-serve's options file {blocked / 'cache'}"), res.output
    assert res.output.rstrip().endswith("set REDRAFTER_TRT_CACHE to a writable folder"), res.output


@pytest.mark.parametrize("kind, needle", [
    ("missing rank", "rank3.engine"),
    ("not redrafter", "not the config of a ReDrafter engine"),
    ("no config", "no engine config.json"),
    ("no folder", "engine folder"),
    ("no tokenizer", "cannot load a tokenizer"),
    ("another model's tokenizer", "has 49152 tokens but the model's vocab_size is 32000"),
])
def test_bad_engine_folders_end_in_one_line(tmp_path, tokenizer_dir, kind, needle):
    engine = tmp_path / "engine"
    if kind == "missing rank":
        make_engine(engine, tp=4, ranks=3)
    elif kind == "not redrafter":
        make_engine(engine, redrafter=False)
    elif kind == "no config":
        engine.mkdir()
    elif kind == "no folder":  # a preset's relative engine-dir read from another folder said it "holds no config"
        engine = tmp_path / "work" / "engine"
        needle = f"engine folder {engine} does not exist (paths are read from "
    elif kind == "no tokenizer":
        make_engine(engine)
        tokenizer_dir = tmp_path
    else:  # trtllm-serve would send the engine another model's token ids
        make_engine(engine, vocab_size=32000)
    res = serve("--engine-dir", engine, "--tokenizer-dir", tokenizer_dir, "--dry-run")
    assert res.exit_code == 2 and needle in res.output, res.output
    assert len(res.output.strip().splitlines()) == 1 and "Traceback" not in res.output


def test_reference_only_options_are_refused_with_an_engine(tmp_path, tokenizer_dir):
    engine = make_engine(tmp_path / "engine", tp=1)
    res = serve("--engine-dir", engine, "--tokenizer-dir", tokenizer_dir, "--device", "cuda", "--dry-run")
    assert res.exit_code == 2 and "--device applies to --checkpoint-dir only" in res.output
    res = serve("--engine-dir", engine, "--tokenizer-dir", tokenizer_dir, "--max-batch-size", "4", "--dry-run")
    assert res.exit_code == 2 and "--max-batch-size applies to --checkpoint-dir only" in res.output
    res = serve("--engine-dir", engine, "--tokenizer-dir", tokenizer_dir, "--compile", "--model-name", "m", "--dry-run")
    assert res.exit_code == 2 and "--model-name, --compile apply to --checkpoint-dir only" in res.output
    assert res.output.rstrip().endswith("kernels; leave them out"), res.output
    res = serve("--engine-dir", engine, "--tokenizer-dir", tokenizer_dir, "--model-name", "m", "--dry-run")
    assert res.output.rstrip().endswith("applies to --checkpoint-dir only: trtllm-serve names the model after the "
                                        "engine folder, takes limits and GPUs from the engine and runs TensorRT-LLM's "
                                        "kernels; leave it out"), res.output


def test_reference_only_options_say_so_in_their_help():
    """--model-name, refused with --engine-dir as the others are, was the one whose help did not say so."""
    from redrafter_trt.cli.serve_cmd import REFERENCE_ONLY, serve as command

    helps = {p.name: p.help for p in command.params if p.name in REFERENCE_ONLY}
    assert sorted(helps) == sorted(REFERENCE_ONLY)
    assert [name for name, text in helps.items() if not text.startswith("Reference server: ")] == []


def test_dry_run_is_only_for_engines(tmp_path, tokenizer_dir):
    res = serve("--checkpoint-dir", tmp_path, "--tokenizer-dir", tokenizer_dir, "--dry-run")
    assert res.exit_code == 2 and "--engine-dir" in res.output


def test_without_trtllm_serve_says_how_to_install(tmp_path, tokenizer_dir, monkeypatch):
    engine = make_engine(tmp_path / "engine", tp=1)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setattr("redrafter_trt.installed_trtllm.trtllm_version", lambda: None)
    res = serve("--engine-dir", engine, "--tokenizer-dir", tokenizer_dir)
    assert res.exit_code == 2 and "trtllm-serve not on PATH" in res.output and "tensorrt_llm==1.2" in res.output


def test_starts_trtllm_serve_in_its_place(tmp_path, tokenizer_dir):
    """A stand-in trtllm-serve records its argv: the process becomes exactly the dry-run command."""
    engine = make_engine(tmp_path / "engine", tp=2)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "argv.txt"
    fake = bin_dir / "trtllm-serve"
    fake.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > "{record}"\nexit 7\n')
    fake.chmod(0o755)
    args = ["serve", "--engine-dir", str(engine), "--tokenizer-dir", str(tokenizer_dir), "--port", "8123"]
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    proc = subprocess.run([sys.executable, "-m", "redrafter_trt", *args], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 7, proc.stderr  # trtllm-serve's own exit code: it replaced our process
    dry = serve(*args[1:], "--dry-run")
    assert record.read_text().splitlines() == shlex.split(dry.output)[1:]


def test_port_zero_is_refused_with_an_engine(tmp_path, tokenizer_dir):
    """trtllm-serve 1.2 asserts `port > 0` (commands/serve.py launch_server) instead of picking a free port."""
    engine = make_engine(tmp_path / "engine", tp=1)
    res = serve("--engine-dir", engine, "--tokenizer-dir", tokenizer_dir, "--port", 0, "--dry-run")
    assert res.exit_code == 2, res.output
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "--port 0" in lines[0], res.output


def test_eos_ids_trtllm_serve_does_not_stop_at_are_named(tmp_path, tokenizer_dir):
    """A review: TensorRT-LLM 1.2's trtllm-serve ends an engine's answers at the tokenizer's EOS only
    (sampling_params.py _setup: end_id = tokenizer.eos_token_id; llm.py _TrtLLM loads the generation config from the
    engine folder, which holds none), while the reference server also stops at generation_config.json's other
    eos_token_ids (Llama 3.1 Instruct: <|end_of_text|>, <|eom_id|>). Nothing said so: the two servers' answers
    differed silently. The ids a client must send as stop_token_ids are now named."""
    import shutil

    tok = tmp_path / "tok"
    shutil.copytree(tokenizer_dir, tok)
    engine = make_engine(tmp_path / "engine", tp=1)
    quiet = serve("--engine-dir", engine, "--tokenizer-dir", tok, "--port", 9000, "--dry-run")
    assert quiet.exit_code == 0 and "stop_token_ids" not in quiet.output, quiet.output  # SmolLM2: one EOS, 2
    gen = json.loads((tok / "generation_config.json").read_text())
    (tok / "generation_config.json").write_text(json.dumps(gen | {"eos_token_id": [2, 0, 7]}))
    res = serve("--engine-dir", engine, "--tokenizer-dir", tok, "--port", 9000, "--dry-run")
    assert res.exit_code == 0, res.output
    assert '"stop_token_ids": [0, 7]' in res.output and "tokenizer's EOS only" in res.output, res.output


def test_the_eos_ids_trtllm_serve_does_not_stop_at_name_the_file_they_come_from(tmp_path, tokenizer_dir):
    """A review: a base folder without generation_config.json stops the reference server at config.json's
    eos_token_ids (as transformers' generate does), and the warning named generation_config.json's, a file that is not
    there. It names config.json's."""
    import shutil

    tok = tmp_path / "tok"
    shutil.copytree(tokenizer_dir, tok, ignore=shutil.ignore_patterns("generation_config.json"))
    config = json.loads((tok / "config.json").read_text())
    (tok / "config.json").write_text(json.dumps(config | {"eos_token_id": [2, 0, 7]}))
    res = serve("--engine-dir", make_engine(tmp_path / "engine", tp=1), "--tokenizer-dir", tok, "--port", 9000,
                "--dry-run")
    assert res.exit_code == 0, res.output
    assert "not at config.json's other eos_token_id 0, 7 " in res.output, res.output


@pytest.mark.parametrize("preset, needle", [
    ("serve: {max-output-len: 128}\n", "preset sets max-output-len, which applies"),
    ("model-name: mine\n", "preset sets model-name,"),
    ("serve: {compile: true, shutdown-grace: 5}\n", "preset sets compile, shutdown-grace,"),
    ("max-batch-size: 4\n", "preset sets max-batch-size,"),  # the engine was built with 8
    ("device: cuda\n", "preset sets device,"),
])
def test_a_presets_reference_only_values_are_refused_with_an_engine(tmp_path, tokenizer_dir, preset, needle):
    """A review: `serve --config P --engine-dir E` dropped P's reference-server values (max-output-len, model-name,
    max-batch-size, device, compile, shutdown-grace) in silence, where the same flags typed are refused: answers ran
    past the preset's cap and its model name was unknown to trtllm-serve. They are refused now, naming the preset."""
    engine = make_engine(tmp_path / "engine", tp=1)
    path = tmp_path / "p.yaml"
    path.write_text(preset)
    res = serve("--config", path, "--engine-dir", engine, "--tokenizer-dir", tokenizer_dir, "--port", 9000,
                "--dry-run")
    assert res.exit_code == 2 and needle in res.output and "--checkpoint-dir only" in res.output, res.output
    assert len(res.output.strip().splitlines()) == 1, res.output


@pytest.mark.parametrize("preset", [
    "max-batch-size: 8\n",  # build's and serve's: the engine's own, what trtllm-serve gets
    "device: cpu\nmax-output-len: 512\n",  # the defaults (a shared `device: cpu` as in smollm2-135m-cpu.yaml)
    "serve: {compile: true}\n",  # with --no-compile below
])
def test_preset_values_that_act_or_ask_nothing_pass_with_an_engine(tmp_path, tokenizer_dir, preset):
    engine = make_engine(tmp_path / "engine", tp=1)
    path = tmp_path / "p.yaml"
    path.write_text(preset)
    extra = ["--no-compile"] if "compile" in preset else []
    res = serve("--config", path, "--engine-dir", engine, "--tokenizer-dir", tokenizer_dir, "--port", 9000,
                "--dry-run", *extra)
    assert res.exit_code == 0 and res.output.startswith("trtllm-serve "), res.output


# `launch_server` of tensorrt_llm/commands/serve.py in short: as TensorRT-LLM's main branch had it from PR #9646 until
# PR #10929 (a socket bound before the LLM loads, always IPv4: issue #10877), and as that PR left it
LAUNCH_SERVER = {
    "ipv4": "def launch_server(host, port, llm_args):\n"
            "    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:\n"
            "        s.bind((host, port))\n\n\ndef launch_grpc_server(host, port):\n    pass\n",
    "fixed": "def launch_server(host, port, llm_args):\n"
             "    infos = socket.getaddrinfo(host, port, socket.AF_UNSPEC, socket.SOCK_STREAM)\n"
             "    family = socket.AF_INET6 if all(i[0] == socket.AF_INET6 for i in infos) else socket.AF_INET\n"
             "    with socket.socket(family, socket.SOCK_STREAM) as s:\n        s.bind((host, port))\n\n\n"
             "def other(port):\n    return socket.socket(socket.AF_INET, socket.SOCK_STREAM)\n",
}


@pytest.fixture
def byte_engine(tmp_path):
    """An engine folder of vocabulary 256 and a byte-level tokenizer of 256 tokens (no SmolLM2 needed)."""
    from test_bench import save_byte_tokenizer

    save_byte_tokenizer(tmp_path / "tok")
    return make_engine(tmp_path / "engine", tp=1, vocab_size=256), tmp_path / "tok"


def installed_trtllm(folder, monkeypatch, launch_server: str, tool_parsers: str | None = None,
                     reasoning_parsers: str | None = None) -> None:
    """A tensorrt_llm package on sys.path with this commands/serve.py (read by serve_engine, never imported), this
    serve/tool_parser/tool_parser_factory.py and this llmapi/reasoning_parser.py."""
    commands = folder / "tensorrt_llm" / "commands"
    commands.mkdir(parents=True)
    (folder / "tensorrt_llm" / "__init__.py").write_text("raise ImportError('imported')\n")
    (commands / "serve.py").write_text("import socket\n\n\n" + launch_server)
    if tool_parsers is not None:
        (folder / "tensorrt_llm" / "serve" / "tool_parser").mkdir(parents=True)
        (folder / "tensorrt_llm" / "serve" / "tool_parser" / "tool_parser_factory.py").write_text(tool_parsers)
    if reasoning_parsers is not None:
        (folder / "tensorrt_llm" / "llmapi").mkdir(parents=True)
        (folder / "tensorrt_llm" / "llmapi" / "reasoning_parser.py").write_text(reasoning_parsers)
    monkeypatch.syspath_prepend(str(folder))


@pytest.mark.parametrize("host", ["::", "::1"])
def test_an_ipv6_host_is_refused_for_a_trtllm_serve_that_binds_ipv4_only(tmp_path, byte_engine, monkeypatch, host):
    """trtllm-serve from TensorRT-LLM PR #9646 until PR #10929 (1.2.0rc8 among them) creates its listening socket
    AF_INET whatever --host is: `--host ::` passed through, and trtllm-serve failed as it started ('Failed to bind
    socket to ...: Address family for hostname not supported', NVIDIA/TensorRT-LLM issue #10877) in a traceback.
    Refused here in one line naming the fix; an IPv4 host, and a trtllm-serve with the fix, pass."""
    engine, tok = byte_engine
    installed_trtllm(tmp_path / "site", monkeypatch, LAUNCH_SERVER["ipv4"])
    res = serve("--engine-dir", engine, "--tokenizer-dir", tok, "--host", host, "--dry-run")
    lines = res.output.strip().splitlines()
    assert res.exit_code == 2 and len(lines) == 1, res.output
    assert lines[0].startswith(f"error: --host {host} is IPv6") and "#10929" in lines[0] and "0.0.0.0" in lines[0]
    res = serve("--engine-dir", engine, "--tokenizer-dir", tok, "--host", "0.0.0.0", "--dry-run")
    assert res.exit_code == 0 and "warning" not in res.output, res.output


def test_a_host_whose_name_cannot_be_encoded_is_not_ipv6(tmp_path, byte_engine, monkeypatch):
    """getaddrinfo raises UnicodeError, not OSError, for a label over 63 characters: not IPv6 (trtllm-serve says
    the name does not resolve), and no traceback here."""
    from redrafter_trt.serve_engine import ipv6_only

    host = "a" * 64 + ".example"
    assert not ipv6_only(host)
    engine, tok = byte_engine
    installed_trtllm(tmp_path / "site", monkeypatch, LAUNCH_SERVER["ipv4"])
    res = serve("--engine-dir", engine, "--tokenizer-dir", tok, "--host", host, "--dry-run")
    assert res.exit_code == 0 and "Traceback" not in res.output, res.output
    assert f"--host {host} " in res.output.splitlines()[-1]


def test_a_host_with_ipv4_and_ipv6_addresses_is_not_ipv6_only(monkeypatch):
    """`localhost` resolving to ::1 and 127.0.0.1: trtllm-serve (fixed or not) binds IPv4, so it is not refused."""
    import socket

    from redrafter_trt.serve_engine import ipv6_only

    v6 = (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::1", 0, 0, 0))
    v4 = (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 0))
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: [v6, v4])
    assert not ipv6_only("localhost")
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: [v6])
    assert ipv6_only("localhost")


def test_an_ipv6_host_passes_with_a_trtllm_serve_that_has_the_fix(tmp_path, byte_engine, monkeypatch):
    engine, tok = byte_engine
    installed_trtllm(tmp_path / "site", monkeypatch, LAUNCH_SERVER["fixed"])
    res = serve("--engine-dir", engine, "--tokenizer-dir", tok, "--host", "::", "--dry-run")
    assert res.exit_code == 0 and "warning" not in res.output, res.output
    assert "--host :: " in res.output


def test_an_ipv6_host_is_a_warning_where_trtllm_serve_cannot_be_read(byte_engine):
    """--dry-run on a machine without TensorRT-LLM (the command runs elsewhere): which trtllm-serve will run is
    unknown, so a one-line warning names the problem and the fix, and the command is printed."""
    import importlib.util

    if importlib.util.find_spec("tensorrt_llm") is not None:
        pytest.skip("TensorRT-LLM is installed here")
    engine, tok = byte_engine
    res = serve("--engine-dir", engine, "--tokenizer-dir", tok, "--host", "::1", "--dry-run")
    assert res.exit_code == 0, res.output
    warnings = [line for line in res.output.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "--host ::1 is IPv6" in warnings[0] and "#10929" in warnings[0], res.output
    assert "trtllm-serve" in res.output.splitlines()[-1]


TOOL_OPTION = ('@click.option("--tool_parser", type=click.Choice(ToolParserFactory.parsers.keys()), default=None)\n'
               'def serve(model, tool_parser):\n    launch_server(host, port, llm_args, tool_parser)\n')
FACTORY = ('class ToolParserFactory:\n    parsers = {\n' + "".join(f'        "{name}": object,\n' for name in
                                                             TRTLLM_TOOL_PARSERS) + '    }\n')


@pytest.mark.parametrize("installed", [None, "1.2"])
def test_tool_parser_is_passed_as_trtllm_serves_option(tmp_path, byte_engine, monkeypatch, installed):
    """serve --engine-dir --tool-parser qwen3 starts trtllm-serve with --tool_parser qwen3 (its option and parser
    name), read from the installed trtllm-serve where there is one; without TensorRT-LLM here it is passed on."""
    engine, tok = byte_engine
    if installed:
        installed_trtllm(tmp_path / "site", monkeypatch, LAUNCH_SERVER["fixed"] + TOOL_OPTION, FACTORY)
    res = serve("--engine-dir", engine, "--tokenizer-dir", tok, "--port", 9000, "--tool-parser", "qwen3", "--dry-run")
    assert res.exit_code == 0, res.output
    args = trtllm_serve_12_parser().parse_args(shlex.split(res.output.splitlines()[-1])[1:])
    assert args.tool_parser == "qwen3"
    res = serve("--engine-dir", engine, "--tokenizer-dir", tok, "--port", 9000, "--dry-run")
    assert "--tool_parser" not in res.output


@pytest.mark.parametrize("option, factory, says", [
    ("", None, "has no --tool_parser option"),
    ("# --tool_parser: in a later release\n", None, "has no --tool_parser option"),  # named, not an option
    (TOOL_OPTION, FACTORY.replace('"qwen3"', '"qwen2"'), "has no tool parser 'qwen3'"),
    (TOOL_OPTION, None, "has no tool parser 'qwen3'"),  # the option, but no factory file to read
])
def test_a_trtllm_serve_without_the_tool_parser_is_refused_in_one_line(tmp_path, byte_engine, monkeypatch, option,
                                                                        factory, says):
    """A trtllm-serve without --tool_parser (or without the qwen3 parser) would stop on the unknown option or
    choice after its imports: refused before it starts, naming what is missing and the fix."""
    engine, tok = byte_engine
    installed_trtllm(tmp_path / "site", monkeypatch, LAUNCH_SERVER["fixed"] + option, factory)
    res = serve("--engine-dir", engine, "--tokenizer-dir", tok, "--port", 9000, "--tool-parser", "qwen3", "--dry-run")
    lines = res.output.strip().splitlines()
    assert res.exit_code == 2 and len(lines) == 1, res.output
    assert says in lines[0] and "--tool-parser" in lines[0]


REASONING_OPTION = ('@click.option("--reasoning_parser", type=click.Choice(ReasoningParserFactory.keys()), '
                    'default=None)\ndef serve(model, reasoning_parser):\n    pass\n')
REASONING_FACTORY = "".join(f'@register_reasoning_parser("{name}")\n' for name in TRTLLM_REASONING_PARSERS) + (
    "class DeepSeekR1Parser(BaseReasoningParser):\n    pass\n")


@pytest.mark.parametrize("installed", [None, "1.2"])
@pytest.mark.parametrize("name", ["qwen3", "deepseek-r1"])
def test_reasoning_parser_is_passed_as_trtllm_serves_option(tmp_path, byte_engine, monkeypatch, installed, name):
    """serve --engine-dir --reasoning-parser NAME starts trtllm-serve with --reasoning_parser NAME (beside
    --tool_parser), read from the installed trtllm-serve where there is one; without TensorRT-LLM here, passed on."""
    engine, tok = byte_engine
    if installed:
        installed_trtllm(tmp_path / "site", monkeypatch, LAUNCH_SERVER["fixed"] + TOOL_OPTION + REASONING_OPTION,
                         FACTORY, REASONING_FACTORY)
    res = serve("--engine-dir", engine, "--tokenizer-dir", tok, "--port", 9000, "--reasoning-parser", name,
                "--tool-parser", "qwen3", "--dry-run")
    assert res.exit_code == 0, res.output
    args = trtllm_serve_12_parser().parse_args(shlex.split(res.output.splitlines()[-1])[1:])
    assert (args.reasoning_parser, args.tool_parser) == (name, "qwen3")
    res = serve("--engine-dir", engine, "--tokenizer-dir", tok, "--port", 9000, "--dry-run")
    assert "--reasoning_parser" not in res.output


@pytest.mark.parametrize("option, factory, says", [
    (TOOL_OPTION, None, "has no --reasoning_parser option"),
    (REASONING_OPTION, REASONING_FACTORY.replace('"qwen3"', '"qwen2"'), "has no reasoning parser 'qwen3'"),
])
def test_a_trtllm_serve_without_the_reasoning_parser_is_refused_in_one_line(tmp_path, byte_engine, monkeypatch,
                                                                             option, factory, says):
    """A trtllm-serve without --reasoning_parser (or without the parser named) would stop on the unknown option or
    choice after its imports: refused before it starts, naming what is missing and the fix."""
    engine, tok = byte_engine
    installed_trtllm(tmp_path / "site", monkeypatch, LAUNCH_SERVER["fixed"] + option, None, factory)
    res = serve("--engine-dir", engine, "--tokenizer-dir", tok, "--port", 9000, "--reasoning-parser", "qwen3",
                "--dry-run")
    lines = res.output.strip().splitlines()
    assert res.exit_code == 2 and len(lines) == 1, res.output
    assert says in lines[0] and "--reasoning-parser" in lines[0]


def test_tool_parser_warns_of_a_chat_template_that_drops_tools(byte_engine):
    """trtllm-serve gives requests' tools to the tokenizer's chat template as it is: one that renders none (SmolLM2's
    kind) drops them unseen. serve --engine-dir --tool-parser says so in one warning line, naming the fix."""
    import json as json_

    from test_train_data import CHATML

    engine, tok = byte_engine
    config = tok / "tokenizer_config.json"
    config.write_text(json_.dumps(json_.loads(config.read_text()) | {"chat_template": CHATML}))
    res = serve("--engine-dir", engine, "--tokenizer-dir", tok, "--port", 9000, "--tool-parser", "qwen3", "--dry-run")
    assert res.exit_code == 0, res.output
    warned = [line for line in res.output.splitlines() if "--tool-parser qwen3" in line]
    assert len(warned) == 1 and "dropped the tools and an assistant's tool calls from a sample" in warned[0], res.output
    assert "answered by trtllm-serve without them where their own prompt drops them too" in warned[0], res.output
    assert "--tool-parser" not in serve("--engine-dir", engine, "--tokenizer-dir", tok, "--port", 9000,
                                        "--dry-run").output


def test_tool_parser_warns_of_a_chat_template_writing_calls_without_tool_call_tags(byte_engine):
    """trtllm-serve's qwen3 parser reads <tool_call> blocks: a template writing an assistant's calls as bare JSON
    (Llama 3.1's way) teaches the model a format it does not read. One warning line says so, as the reference
    server's (`tool_format_warning`)."""
    import json as json_

    from test_serve_tools import BARE_JSON

    engine, tok = byte_engine
    config = tok / "tokenizer_config.json"
    config.write_text(json_.dumps(json_.loads(config.read_text()) | {"chat_template": BARE_JSON}))
    res = serve("--engine-dir", engine, "--tokenizer-dir", tok, "--port", 9000, "--tool-parser", "qwen3", "--dry-run")
    assert res.exit_code == 0, res.output
    warned = [line for line in res.output.splitlines() if "reads no call from" in line]  # and: no tools shown
    assert len(warned) == 1 and warned[0].startswith("warning: --tool-parser qwen3: "), res.output
    assert "come back from trtllm-serve as text" in warned[0], res.output
