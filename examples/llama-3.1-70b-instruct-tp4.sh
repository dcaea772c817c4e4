#!/usr/bin/env bash
# Llama-3.1-70B-Instruct + a ReDrafter drafter at tensor parallelism 4: bfloat16 checkpoint in 4 rank files,
# 4 rank engines built in parallel, run over 4 GPUs of 80 GB (A100 or H100; see the preset for why bfloat16).
# Runs as written on such a machine with the models downloaded, TensorRT-LLM 1.2.x and MPI installed
# (check with `redrafter-trt doctor`). Override any path below from the environment, e.g. BASE=/data/m ./llama-3.1-70b-instruct-tp4.sh
# The base, into BASE's default (a gated repository: accept its licence on Hugging Face and `hf auth login` first):
#   hf download meta-llama/Llama-3.1-70B-Instruct --local-dir models/Llama-3.1-70B-Instruct
set -euo pipefail

BASE=${BASE:-models/Llama-3.1-70B-Instruct}
DRAFTER=${DRAFTER:-models/Llama-3.1-70B-Instruct-redrafter}
WORK=${WORK:-work/llama-3.1-70b-instruct-tp4}
PRESET=$(cd "$(dirname "$0")/.." && pwd)/configs/llama-3.1-70b-instruct-tp4.yaml

# No ReDrafter drafter is published for this model: train one first (README, "Train a drafter"). `train` holds the
# whole base on one device, 141 GB in bfloat16, which no 80 GB GPU holds (--device cuda runs out of memory, and
# torchrun copies the whole base to every GPU); on a host with RAM to spare (about 200 GB) it runs on the CPU, slowly:
#   redrafter-trt train --base models/Llama-3.1-70B-Instruct --data prompts.jsonl --distill --device cpu --base-dtype bfloat16 --output models/Llama-3.1-70B-Instruct-redrafter
# or bring a drafter trained elsewhere for this base (Apple layout: config.json + model.safetensors).

# convert reads the base lazily, one rank's slices at a time: no GPU needed for this step
redrafter-trt convert --config "$PRESET" \
    --base "$BASE" --drafter "$DRAFTER" --output "$WORK/checkpoint" --force

redrafter-trt build --config "$PRESET" \
    --checkpoint-dir "$WORK/checkpoint" --output-dir "$WORK/engine" --force

# one process per rank engine (rank 0 prints the answers)
mpirun -n 4 redrafter-trt run --config "$PRESET" \
    --engine-dir "$WORK/engine" --tokenizer-dir "$BASE" \
    --input-text "Explain speculative decoding in three sentences."

# Serve it over HTTP (OpenAI-style /v1/completions and /v1/chat/completions on port 8000):
#   redrafter-trt serve --config configs/llama-3.1-70b-instruct-tp4.yaml
# from the repository root, where the preset finds the engine and the tokenizer (with WORK or BASE set, add
# --engine-dir "$WORK/engine" --tokenizer-dir "$BASE" with their values).
