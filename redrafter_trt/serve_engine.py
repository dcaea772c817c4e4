"""`redrafter-trt serve --engine-dir`: TensorRT-LLM's own OpenAI server on a built ReDrafter engine,
`trtllm-serve ENGINE --backend trt ...`, after checking the engine folder. Nothing here imports TensorRT-LLM.

What TensorRT-LLM 1.0 to 1.2.x does with it (`tensorrt_llm/commands/serve.py`, `llmapi/llm.py`, `llm_args.py`):
- an engine folder is a valid MODEL (model format TLLM_ENGINE: its build_config is read from the engine);
- tensor parallelism comes from the engine, and the LLM API spawns one MPI worker per rank itself on one node
  (`MpiPoolSession`), so no `mpirun`; `--tp_size` must be 1 or the engine's (we pass the engine's);
- the C++ runtime switches to explicit-draft-tokens decoding from the engine config; no speculative config is passed;
- `--max_batch_size` / `--max_num_tokens` above the engine's are clamped with a warning (the defaults are 2048 and
  8192), so we pass the engine's own; `--max_seq_len` is left to the engine;
- `--backend trt` is the spelling every 1.x accepts (1.1 and later also take `tensorrt`); the tokenizer would be
  loaded from MODEL, which holds none, so `--tokenizer` is always passed;
- `--port 0` is refused by trtllm-serve 1.2 (`launch_server` asserts `port > 0` unless a disaggregated cluster is
  configured), so it is refused here first, in one line;
- an answer ends at the tokenizer's EOS only (`SamplingParams._setup`: `end_id = tokenizer.eos_token_id`; the
  generation config, which `_TrtLLM._build_model` loads from the engine folder, where there is none, is read only for
  Kimi K2), not at the other `eos_token_id`s of the model's generation_config.json, where the reference server stops
  too (Llama 3.1 Instruct's <|end_of_text|> and <|eom_id|>, Qwen2.5's <|endoftext|>): `unstopped` names them, and
  a client that needs them sends them as `stop_token_ids`, which trtllm-serve's requests take;
- an IPv6 `--host` (`::`, `::1`) cannot work with a trtllm-serve from PR #9646 (December 2025; the 1.2.0rc8 of issue
  #10877's report) until PR #10929 (January 2026): `launch_server` binds its socket before the LLM loads, created as
  `socket.socket(socket.AF_INET, ...)` whatever the host, so the bind fails ("Address family for hostname not
  supported"); the fix takes AF_INET6 when the host resolves to IPv6 addresses only. Which 1.2.x releases carry the fix
  is not known here: `ipv6_refusal` reads the installed trtllm-serve's `launch_server` for that line instead;
- KV-cache block reuse is off, as in `run --engine-dir` (`ModelRunnerCpp.from_dir`'s
  `kv_cache_enable_block_reuse=False`): trtllm-serve builds the LLM API's `KvCacheConfig`, whose `enable_block_reuse`
  defaults to True, and an engine has paged context FMHA (`plugin.py`'s default), so the executor would keep it on.
  Explicit draft tokens rewind KV blocks every step (`needsKVCacheRewind`): reuse is kept off as a precaution, and
  so that serve answers as `run` does (TensorRT-LLM's one ReDrafter test, `summarize.py` on ModelRunnerCpp, takes
  examples/utils.py's default: off while `--kv_cache_enable_block_reuse` was store_true, on in the 1.x examples). `--extra_llm_api_options FILE` (in every trtllm-serve read,
  from before 1.0 on; later ones also spell it `--config`) holds `kv_cache_config: {enable_block_reuse: false}`:
  `update_llm_args_with_extra_dict` puts it in place of the whole KvCacheConfig trtllm-serve made, whose only setting,
  `free_gpu_memory_fraction` 0.9 (we pass none), is the executor's default anyway. trtllm-serve reads the file before
  it starts the ranks; we cannot pass it through `exec`, so it is written under the cache folder
  (`$REDRAFTER_TRT_CACHE`, else ~/.cache/redrafter-trt), each time;
- `--tool_parser NAME` (a click.Choice of `ToolParserFactory.parsers`, tensorrt_llm/serve/tool_parser/) has
  `OpenAIServer` parse the tool calls of chat answers (qwen3: Qwen2.5's and Qwen3's <tool_call> JSON). Read in
  sources of late 2025 and after, at commits whose release is not known here (none at a v1.2.x tag), and never run
  here on an engine: one factory lists qwen3, qwen3_coder, kimi_k2, deepseekv3, deepseekv3.1 and deepseek_v32; the
  chat route sets `postproc_args.tool_parser` whatever the backend, and `postprocess_handlers.apply_tool_parser`
  parses only a request with `tools` (finish_reason "tool_calls" only where the engine's was "stop"). So
  `check_parser` reads the installed option and names instead of trusting these;
- `--reasoning_parser NAME` (a click.Choice of the names of `ReasoningParserFactory`,
  tensorrt_llm/llmapi/reasoning_parser.py) has `OpenAIServer` split the thinking of chat answers into
  `reasoning_content`, before the tool calls are parsed out of the rest (`postprocess_handlers.apply_reasoning_parser`).
  Read in the same sources: qwen3 and deepseek-r1 are one DeepSeekR1Parser, deepseek-r1's answers starting inside
  their thinking; `check_parser` reads the installed option and names too.
"""

from __future__ import annotations

import os
import shlex
import socket
from dataclasses import dataclass
from pathlib import Path

from .build import check_engine, read_engine_config, world_size
from .errors import ConfigError, RedrafterError
from .installed_trtllm import installed_source, require_trtllm_tool, trtllm_version
from .serve_tools import tool_format_warning, tool_template_warning
from .smollm2 import cache_root
from .tokens import load_tokenizer, stop_file, stop_ids

TRTLLM_SERVE = "trtllm-serve"
# what trtllm-serve's --extra_llm_api_options file sets (module docstring: block reuse as run --engine-dir has it)
LLM_API_OPTIONS = {"kv_cache_config": {"enable_block_reuse": False}}
LLM_API_OPTIONS_FILE = "trtllm-serve-options.yaml"  # in the cache folder


@dataclass(frozen=True)
class ServePlan:
    argv: tuple[str, ...]
    world_size: int
    unstopped: tuple[int, ...] = ()  # the model's EOS ids trtllm-serve does not end an answer at
    max_batch_size: int = 0  # the engine's, passed as --max_batch_size
    host_warning: str | None = None  # an IPv6 --host whose trtllm-serve could not be read (ipv6_refusal)
    stop_file: str = "generation_config.json"  # where `unstopped` comes from (`stop_file`: else config.json)
    # --tool-parser on a chat template that drops tools (tool_template_warning) or writes calls in another format
    # (tool_format_warning)
    tools_warnings: tuple[str, ...] = ()

    def shell(self) -> str:
        return shlex.join(self.argv)

    def write_options(self) -> None:
        """Write the --extra_llm_api_options file the argv names (LLM_API_OPTIONS), before it is printed or run."""
        import yaml

        path = Path(self.argv[self.argv.index("--extra_llm_api_options") + 1])
        text = yaml.safe_dump(LLM_API_OPTIONS, sort_keys=False)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(f".{path.name}.{os.getpid()}")  # a serve starting beside us reads a whole file
            partial.write_text(text)
            os.replace(partial, path)
        except OSError as e:
            raise ConfigError(f"cannot write trtllm-serve's options file {path} ({e.strerror}): set "
                              "REDRAFTER_TRT_CACHE to a writable folder") from None

    def stop_warning(self) -> str | None:
        """What a client must send for trtllm-serve to stop where the reference server stops (None: nothing)."""
        if not self.unstopped:
            return None
        ids = ", ".join(map(str, self.unstopped))
        return (f"warning: trtllm-serve ends answers at the tokenizer's EOS only, not at {self.stop_file}'s "
                f"other eos_token_id {ids} (TensorRT-LLM 1.2 reads no generation config for an engine): clients that "
                f"need them send \"stop_token_ids\": [{ids}]")


def plan_trtllm_serve(engine_dir: Path, tokenizer_dir: Path, host: str, port: int,
                      tool_parser: str | None = None, reasoning_parser: str | None = None) -> ServePlan:
    """The trtllm-serve argv for a checked ReDrafter engine folder. tool_parser, reasoning_parser: serve
    --tool-parser and --reasoning-parser, passed on as trtllm-serve's --tool_parser and --reasoning_parser."""
    if port == 0:
        raise ConfigError("--port 0 cannot pick a free port for trtllm-serve (it requires a port above 0): pass a "
                          "free port with --engine-dir")
    host_warning = ipv6_refusal(host)  # before the tokenizer loads
    parsers = {option: name for option, name in (("--tool_parser", tool_parser),
                                                 ("--reasoning_parser", reasoning_parser)) if name}
    for option, name in parsers.items():
        check_parser(option, name)
    config = read_engine_config(engine_dir)
    pretrained, build = config["pretrained_config"], config["build_config"]
    try:
        check_engine(engine_dir, pretrained)  # one rank{r}.engine per rank
    except RedrafterError as e:
        raise ConfigError(str(e)) from None
    vocab_size = pretrained.get("vocab_size")  # the checkpoint's, kept by the build: as `run` checks the tokenizer
    tokenizer = load_tokenizer(str(tokenizer_dir), vocab_size if isinstance(vocab_size, int) else None)
    unstopped = tuple(i for i in stop_ids(tokenizer, tokenizer_dir) if i != tokenizer.eos_token_id)
    ranks = world_size(pretrained)  # tp_size: read_engine_config refuses pipeline and context parallelism
    argv = [TRTLLM_SERVE, str(engine_dir), "--backend", "trt", "--tokenizer", str(tokenizer_dir),
            "--host", host, "--port", str(port), "--tp_size", str(ranks),
            "--max_batch_size", str(build["max_batch_size"])]
    if build.get("max_num_tokens"):
        argv += ["--max_num_tokens", str(build["max_num_tokens"])]
    for option, name in parsers.items():
        argv += [option, name]
    argv += ["--extra_llm_api_options", str(cache_root() / LLM_API_OPTIONS_FILE)]
    source = stop_file(tokenizer_dir)  # None: no id but the tokenizer's EOS, nothing unstopped
    tools_warnings = () if not tool_parser else (
        tool_template_warning(tokenizer, tool_parser, "answered by trtllm-serve without them where their own prompt "
                              "drops them too"),
        tool_format_warning(tokenizer, tool_parser, "come back from trtllm-serve as text (its whole answer, at some "
                            "versions, reads an answer that is one bare call object as a call)"))
    return ServePlan(tuple(argv), ranks, unstopped, build["max_batch_size"], host_warning,
                     source.name if source else ServePlan.stop_file, tuple(filter(None, tools_warnings)))


IPV4_BIND = "socket.socket(socket.AF_INET, socket.SOCK_STREAM)"  # the line issue #10877 names; PR #10929 replaced it
IPV6_FIX = ("pass an IPv4 --host (0.0.0.0 listens on every interface), or use a TensorRT-LLM whose trtllm-serve has "
            "the fix of NVIDIA/TensorRT-LLM PR #10929")


def ipv6_only(host: str) -> bool:
    """Whether `host` resolves to IPv6 addresses only (`::`, `::1`, a name with AAAA records alone): where PR #10929's
    trtllm-serve takes AF_INET6, and the one before it fails."""
    try:
        infos = socket.getaddrinfo(host, None, socket.AF_UNSPEC, socket.SOCK_STREAM)
    except (OSError, UnicodeError):  # a name that does not resolve: trtllm-serve says so
        return False
    return bool(infos) and all(info[0] == socket.AF_INET6 for info in infos)


def trtllm_serve_binds_ipv4() -> bool | None:
    """Whether the installed trtllm-serve's `launch_server` (tensorrt_llm/commands/serve.py, read, not imported)
    creates an IPv4 socket whatever the host; None: no tensorrt_llm visible from this Python."""
    source = installed_source("commands/serve.py")
    if source is None:
        return None
    _, found, rest = source.partition("def launch_server(")
    return bool(found) and IPV4_BIND in rest.split("\ndef ", 1)[0]


def ipv6_refusal(host: str) -> str | None:
    """An IPv6 --host with a trtllm-serve that binds IPv4 only: a ConfigError (it would fail as it starts, after
    seconds of imports, in a traceback); with no TensorRT-LLM to read here (--dry-run elsewhere): a warning."""
    if not ipv6_only(host):
        return None
    binds_ipv4 = trtllm_serve_binds_ipv4()
    if binds_ipv4:
        version = trtllm_version()
        who = f"TensorRT-LLM {version}'s trtllm-serve" if version else "the installed trtllm-serve"
        raise ConfigError(f"--host {host} is IPv6, but {who} binds an IPv4 socket whatever the host and fails as it "
                          f"starts (NVIDIA/TensorRT-LLM issue #10877): {IPV6_FIX}")
    if binds_ipv4 is None:
        return (f"warning: --host {host} is IPv6: a trtllm-serve between NVIDIA/TensorRT-LLM PR #9646 and its fix "
                f"(1.2.0rc8 among them, issue #10877) binds IPv4 only and fails as it starts; if yours does, {IPV6_FIX}")
    return None


# trtllm-serve's parser option -> (ours, what it parses, the file of its factory of parser names, the release that
# has it where known)
PARSER_OPTIONS = {
    "--tool_parser": ("--tool-parser", "tool", "serve/tool_parser/tool_parser_factory.py", " (1.2)"),
    "--reasoning_parser": ("--reasoning-parser", "reasoning", "llmapi/reasoning_parser.py", ""),
}


def check_parser(option: str, name: str) -> None:
    """A ConfigError where the installed trtllm-serve (read, not imported) has no `option` (a PARSER_OPTIONS key)
    or no parser `name` in that option's factory (it would refuse it after seconds of imports); nothing where no
    TensorRT-LLM can be read here (--dry-run elsewhere)."""
    ours, kind, factory_file, release = PARSER_OPTIONS[option]
    source, factory = installed_source("commands/serve.py"), installed_source(factory_file)
    if source is None:
        return
    version = trtllm_version()
    who = f"TensorRT-LLM {version}'s trtllm-serve" if version else "the installed trtllm-serve"
    if f'"{option}"' not in source:
        raise ConfigError(f"{who} has no {option} option: leave out {ours}, or use a TensorRT-LLM whose trtllm-serve "
                          f"has it{release}")
    if factory is None or f'"{name}"' not in factory:
        raise ConfigError(f"{who} has no {kind} parser {name!r} (tensorrt_llm/{factory_file}): leave out {ours}, or "
                          f"use a TensorRT-LLM whose trtllm-serve has it{release}")


def exec_trtllm_serve(plan: ServePlan) -> None:
    """Replace this process with trtllm-serve (its signals and exit code become the command's)."""
    path = require_trtllm_tool(TRTLLM_SERVE)
    os.execv(path, list(plan.argv))
