#!/usr/bin/env python3
"""The reference server under concurrent clients: throughput with in-flight batching, against one request at a time,
measured in one run on one loaded checkpoint.

Starts `redrafter-trt serve`'s server in this process on CKPT (port 0), then for each --max-batch-size in turn
(1 first) sends the same chat requests from --clients threads at once over HTTP (MT-Bench first turns, greedy,
max_tokens each) and prints completion tokens per second, mean latency, and the ratio to batch size 1. Every
answer must be identical across batch sizes (greedy answers do not depend on their batch): checked, not assumed.
--compile then starts a second server with the base's layers compiled (`serve --compile`; one server at a time) and
sends it the same requests: its ratio to the eager server at each batch size, answers checked alike.

    python scripts/bench_serve.py --checkpoint-dir CKPT --tokenizer-dir SMOLLM2 [--clients 8] [--requests 16]
        [--max-tokens 64] [--max-batch-sizes 1,4,8] [--threads 2] [--compile]
"""

from __future__ import annotations

import json
import statistics
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import click
import torch

from redrafter_trt.cli import Script
from redrafter_trt.cli.bench_cmd import int_list
from redrafter_trt.errors import ConfigError
from redrafter_trt.plural import counted
from redrafter_trt.prompts import load_prompts, take_spread
from redrafter_trt.quickstart import mt_bench_path
from redrafter_trt.runtime.tp import rank_threads
from redrafter_trt.serve_app import App
from redrafter_trt.serve_backend import ReferenceBackend
from redrafter_trt.serve_http import make_server


def ask(url: str, question: str, max_tokens: int) -> tuple[float, str, int]:
    body = {"messages": [{"role": "user", "content": question}], "max_tokens": max_tokens}
    req = urllib.request.Request(url + "/v1/chat/completions", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=3600) as r:
            out = json.loads(r.read())
    except urllib.error.HTTPError as e:  # an OSError: it ended as one, with a hint about paths and disk space
        try:
            reason = json.loads(e.read())["error"]["message"]
        except Exception:  # not the server's JSON error
            reason = e.reason
        raise ConfigError(f"the server refused a request (HTTP {e.code}): {reason}") from None
    return time.perf_counter() - start, out["choices"][0]["message"]["content"], out["usage"]["completion_tokens"]


@click.command(cls=Script, help=__doc__.split("\n\n")[0])
@click.option("--checkpoint-dir", required=True, type=click.Path(path_type=Path))
@click.option("--tokenizer-dir", required=True, type=click.Path(path_type=Path))
@click.option("--clients", type=click.IntRange(min=1), default=8, show_default=True,
              help="threads sending requests at once")
@click.option("--requests", type=click.IntRange(min=1), default=16, show_default=True,
              help="MT-Bench questions sent in all (per batch size)")
@click.option("--max-tokens", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--max-batch-sizes", default="1,4,8", show_default=True, callback=int_list)
@click.option("--threads", type=click.IntRange(min=1), default=2, show_default=True,
              help="torch intra-op threads (a tp=N checkpoint: the CPUs it may use / N per rank instead)")
@click.option("--compile", "compile_layers", is_flag=True, help="also a server with the base's layers compiled")
def main(checkpoint_dir, tokenizer_dir, clients, requests, max_tokens, max_batch_sizes, threads,
         compile_layers) -> None:
    torch.set_num_threads(threads)
    sizes = sorted({1, *max_batch_sizes})  # batch 1 first: the ratios' base
    every = load_prompts(mt_bench_path())  # past 80, each question again; the rest spread over the file (prompts.py)
    rest = requests % len(every)
    questions = every * (requests // len(every)) + (take_spread(every, rest) if rest else [])

    first_rate, answers, eager_rate = {}, None, {}
    for kind in ("eager", "compiled") if compile_layers else ("eager",):
        # one server at a time: two scheduler threads computing at once would slow each other (serve_scheduler.py)
        backend = ReferenceBackend(checkpoint_dir, tokenizer_dir, max_batch=max(sizes), compile=kind == "compiled")
        if not backend.tokenizer.chat_template:
            backend.stop()
            raise ConfigError(f"the tokenizer in {tokenizer_dir} has no chat template, and bench_serve sends chat "
                              f"requests: pass a chat model's tokenizer folder")
        server, url = start(backend, max_tokens)
        cfg = backend.config
        # what runs: a tp=N checkpoint's ranks take the usable CPUs / N threads each as they join, not --threads
        ran = f"{counted(rank_threads(cfg.tp_size), 'thread')} per rank x {cfg.tp_size} ranks" if cfg.tp_size > 1 \
            else counted(threads, "thread")
        print(f"{kind}: {counted(requests, 'MT-Bench chat request')} x max_tokens {max_tokens} from "
              f"{counted(clients, 'client')}, {ran}, {counted(cfg.num_beams, 'beam')} x "
              f"{counted(cfg.draft_len, 'draft token')}")
        for size in sizes:
            assert backend.wait_idle(600)  # the last batch has ended: nothing joins it from this round
            backend.scheduler.max_batch = size
            start_time = time.perf_counter()
            with ThreadPoolExecutor(clients) as pool:
                results = list(pool.map(lambda q: ask(url, q, max_tokens), questions))
            wall = time.perf_counter() - start_time
            texts = [text for _, text, _ in results]
            answers = answers or texts
            same = sum(a == b for a, b in zip(texts, answers))
            rate = sum(n for _, _, n in results) / wall
            first_rate.setdefault(kind, rate)
            eager_rate.setdefault(size, rate)
            latency = statistics.mean(t for t, _, _ in results)
            vs_eager = f", {rate / eager_rate[size]:.2f}x eager" if kind != "eager" else ""
            print(f"{kind:8s} max batch {size:3d}: {rate:6.1f} tokens/s, mean latency {latency:6.2f} s, "
                  f"{rate / first_rate[kind]:.2f}x batch 1{vs_eager}, {same}/{len(texts)} answers identical to "
                  f"eager batch 1", flush=True)
        server.shutdown()
        backend.stop()


def start(backend: ReferenceBackend, max_tokens: int):
    """Serve `backend` on a free port in a thread, warmed up by one request: the server and its URL."""
    server = make_server(App(backend, "bench", max_tokens), "127.0.0.1", 0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    ask(url, "Hello", min(4, max_tokens))  # the server refuses more than max_tokens
    return server, url


if __name__ == "__main__":
    main()
