#!/usr/bin/env python3
"""Converter throughput and memory, measured in one run.

Writes a synthetic Llama (~2 GB in bfloat16, sharded safetensors with an index), copies its files once (the
I/O baseline), converts it at tp 2 in a child process, and prints:
  - throughput ratio = (source bytes / convert seconds) / (source bytes / copy seconds)
  - peak memory of the conversion (anonymous RSS, sampled every 10 ms; and the kernel's VmHWM, which also
    counts mapped file pages) as a ratio of the largest tensor.
Targets (issue 3): throughput ratio >= 0.8; peak <= 2 x largest tensor + 0.5 GB.

    python scripts/bench_convert.py [--layers 16] [--workdir /tmp/bench_convert]
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import click
import torch
from safetensors.torch import save_file

from redrafter_trt.cli import Script
from redrafter_trt.errors import ConfigError

KV_HEADS = 8  # the synthetic Llama's: --tp must divide them
SCRATCH = {"base", "copy", "drafter", "ckpt"}  # what a run leaves in --workdir (emptied at the next run's start)


def synth_llama(folder: Path, layers: int, hidden: int = 2048, inter: int = 5632, vocab: int = 32000,
                heads: int = 16, kv_heads: int = KV_HEADS, shard_bytes: int = 500_000_000) -> tuple[int, int]:
    """Random bf16 Llama as sharded safetensors; returns (total bytes, largest tensor bytes)."""
    folder.mkdir(parents=True)
    hd = hidden // heads
    shapes = {"model.embed_tokens.weight": (vocab, hidden), "model.norm.weight": (hidden,), "lm_head.weight": (vocab, hidden)}
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes |= {p + "input_layernorm.weight": (hidden,), p + "post_attention_layernorm.weight": (hidden,),
                   p + "self_attn.q_proj.weight": (heads * hd, hidden), p + "self_attn.k_proj.weight": (kv_heads * hd, hidden),
                   p + "self_attn.v_proj.weight": (kv_heads * hd, hidden), p + "self_attn.o_proj.weight": (hidden, heads * hd),
                   p + "mlp.gate_proj.weight": (inter, hidden), p + "mlp.up_proj.weight": (inter, hidden),
                   p + "mlp.down_proj.weight": (hidden, inter)}
    gen = torch.Generator().manual_seed(0)
    shards, current, size = [], {}, 0
    for name, shape in shapes.items():
        t = (torch.rand(shape, generator=gen) * 0.02).to(torch.bfloat16)
        current[name] = t
        size += t.numel() * 2
        if size >= shard_bytes:
            shards.append(current)
            current, size = {}, 0
    if current:
        shards.append(current)
    weight_map, total, largest = {}, 0, 0
    for i, shard in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        save_file(shard, folder / fname, metadata={"format": "pt"})
        for name, t in shard.items():
            weight_map[name] = fname
            total += t.numel() * 2
            largest = max(largest, t.numel() * 2)
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}))
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden, "intermediate_size": inter,
           "num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": kv_heads, "vocab_size": vocab,
           "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "hidden_act": "silu",
           "torch_dtype": "bfloat16", "tie_word_embeddings": False}
    (folder / "config.json").write_text(json.dumps(cfg))
    return total, largest


def proc_status(pid: int, key: str) -> int:
    """A memory line of /proc/PID/status (RssAnon, VmHWM, ...) in bytes; 0 once the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


@click.command(cls=Script, help=__doc__.splitlines()[0])
@click.option("--layers", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--tp", type=click.IntRange(min=1), default=2, show_default=True,
              help=f"Tensor parallel size: a divisor of the synthetic Llama's {KV_HEADS} KV heads.")
@click.option("--workdir", type=click.Path(path_type=Path), default=None,
              help="Scratch folder, kept after the run [default: a temporary one, removed].")
def main(layers, tp, workdir) -> None:
    if KV_HEADS % tp:
        raise ConfigError(f"--tp {tp} does not divide the synthetic Llama's {KV_HEADS} KV heads: use 1, 2, 4 or 8")
    if workdir and workdir.exists() and (not workdir.is_dir() or {p.name for p in workdir.iterdir()} - SCRATCH):
        raise ConfigError(f"--workdir {workdir} holds more than an earlier run's {', '.join(sorted(SCRATCH))} and "
                          f"is emptied first: pass a new or empty folder")
    work = workdir or Path(tempfile.mkdtemp(prefix="bench_convert-"))
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    try:
        base = work / "base"
        t0 = time.perf_counter()
        total, largest = synth_llama(base, layers)
        print(f"synthetic Llama: {total / 1e9:.2f} GB in {len(list(base.glob('*.safetensors')))} shards, "
              f"largest tensor {largest / 1e6:.0f} MB ({time.perf_counter() - t0:.0f} s to write)")
        drafter = work / "drafter"  # its process also warms the imports the timed child makes
        subprocess.run([sys.executable, "-c", "from redrafter_trt.cli import main; main()", "init-drafter", "--base",
                        str(base), "--output", str(drafter), "--exit-dim", "1024", "--num-draft-layers", "1"], check=True)

        t0 = time.perf_counter()
        (work / "copy").mkdir()
        for f in base.iterdir():
            shutil.copyfile(f, work / "copy" / f.name)
        copy_s = time.perf_counter() - t0
        shutil.rmtree(work / "copy")

        # The child imports first and reports when conversion proper starts, so the ratio compares the
        # conversion with the copy; the whole command (process start and imports) is printed too.
        child = ("import sys, time, resource, pathlib\n"
                 "from redrafter_trt.convert import convert\n"
                 "from redrafter_trt.checkpoint import inspect_checkpoint\n"
                 "status = pathlib.Path(f'/proc/{__import__(\"os\").getpid()}/status').read_text()\n"
                 "anon = [l for l in status.splitlines() if l.startswith('RssAnon:')][0].split()[1]\n"
                 "print('START', time.perf_counter(), int(anon) * 1024, flush=True)\n"
                 "out = convert(sys.argv[1], sys.argv[2], sys.argv[3], tp_size=int(sys.argv[4]))\n"
                 "assert inspect_checkpoint(out).ok\n"
                 "print('END', time.perf_counter(), flush=True)\n")
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-c", child, str(base), str(drafter), str(work / "ckpt"), str(tp)],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        peak_anon, hwm = 0, 0

        def sample():
            nonlocal peak_anon, hwm
            while proc.poll() is None:
                peak_anon = max(peak_anon, proc_status(proc.pid, 'RssAnon'))
                hwm = max(hwm, proc_status(proc.pid, 'VmHWM'))
                time.sleep(0.01)

        sampler = threading.Thread(target=sample)
        sampler.start()
        out, err = proc.communicate()
        sampler.join()
        whole_s = time.perf_counter() - t0
        if proc.returncode:
            last = (err.strip().splitlines() or ["no output"])[-1]
            sys.exit(f"error: the conversion failed (exit code {proc.returncode}): {last}")
        marks = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.split()}
        convert_s = float(marks["END"][0]) - float(marks["START"][0])
        baseline = int(marks["START"][1])
        drafter_bytes = sum(f.stat().st_size for f in drafter.glob("*.safetensors"))
        out_bytes = sum(f.stat().st_size for f in (work / "ckpt").glob("rank*.safetensors"))
        print(f"copy:    {total / 1e9:.2f} GB in {copy_s:.2f} s = {total / copy_s / 1e6:.0f} MB/s")
        print(f"convert: {total / 1e9:.2f} GB base (+{drafter_bytes / 1e6:.0f} MB drafter) -> {out_bytes / 1e9:.2f} GB "
              f"at tp {tp} in {convert_s:.2f} s = {total / convert_s / 1e6:.0f} MB/s "
              f"(whole command with process start and imports: {whole_s:.2f} s)")
        print(f"throughput ratio convert/copy: {copy_s / convert_s:.2f}   (target >= 0.8; whole command: {copy_s / whole_s:.2f})")
        budget = 2 * largest + 0.5e9
        print(f"peak anonymous memory: {peak_anon / 1e9:.2f} GB = {peak_anon / largest:.2f} x largest tensor "
              f"(budget 2 x largest + 0.5 GB = {budget / 1e9:.2f} GB: {'OK' if peak_anon <= budget else 'OVER'}); "
              f"above the {baseline / 1e9:.2f} GB the interpreter and torch hold after import: "
              f"{(peak_anon - baseline) / largest:.2f} x largest tensor")
        print(f"peak RSS incl. mapped file pages (VmHWM): {hwm / 1e9:.2f} GB = {hwm / largest:.2f} x largest tensor")
    finally:
        if workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
