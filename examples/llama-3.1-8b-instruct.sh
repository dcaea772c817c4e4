#!/usr/bin/env bash
# Llama-3.1-8B-Instruct + a ReDrafter drafter: bfloat16 checkpoint, engine on one GPU (24 GB+), one chat prompt.
# Runs as written on a GPU machine with the models downloaded and TensorRT-LLM 1.2.x installed
# (check with `redrafter-trt doctor`). Override any path below from the environment, e.g. BASE=/data/m ./llama-3.1-8b-instruct.sh
# The base, into BASE's default (a gated repository: accept its licence on Hugging Face and `hf auth login` first):
#   hf download meta-llama/Llama-3.1-8B-Instruct --local-dir models/Llama-3.1-8B-Instruct
set -euo pipefail

BASE=${BASE:-models/Llama-3.1-8B-Instruct}
DRAFTER=${DRAFTER:-models/Llama-3.1-8B-Instruct-redrafter}
WORK=${WORK:-work/llama-3.1-8b-instruct}
PRESET=$(cd "$(dirname "$0")/.." && pwd)/configs/llama-3.1-8b-instruct.yaml

# No ReDrafter drafter is published for this model: train one first (README, "Train a drafter"), e.g.
#   redrafter-trt train --base models/Llama-3.1-8B-Instruct --data prompts.jsonl --distill --device cuda --output models/Llama-3.1-8B-Instruct-redrafter

redrafter-trt convert --config "$PRESET" \
    --base "$BASE" --drafter "$DRAFTER" --output "$WORK/checkpoint" --force

redrafter-trt build --config "$PRESET" \
    --checkpoint-dir "$WORK/checkpoint" --output-dir "$WORK/engine" --force

redrafter-trt run --config "$PRESET" \
    --engine-dir "$WORK/engine" --tokenizer-dir "$BASE" \
    --input-text "Explain speculative decoding in three sentences."

# Serve it over HTTP (OpenAI-style /v1/completions and /v1/chat/completions on port 8000):
#   redrafter-trt serve --config configs/llama-3.1-8b-instruct.yaml
# from the repository root, where the preset finds the engine and the tokenizer (with WORK or BASE set, add
# --engine-dir "$WORK/engine" --tokenizer-dir "$BASE" with their values).
