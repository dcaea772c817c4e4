#!/usr/bin/env bash
# Qwen2.5-7B-Instruct + a ReDrafter drafter, FP8 base (calibrated on the GPU with nvidia-modelopt), FP8 engine on one GPU with compute capability 8.9+ (L4, L40S, H100).
# Runs as written on a GPU machine with the models downloaded and TensorRT-LLM 1.2.x installed
# (check with `redrafter-trt doctor`). Override any path below from the environment, e.g. BASE=/data/m ./qwen2.5-7b-instruct-fp8.sh
# The base, into BASE's default:
#   hf download Qwen/Qwen2.5-7B-Instruct --local-dir models/Qwen2.5-7B-Instruct
set -euo pipefail

BASE=${BASE:-models/Qwen2.5-7B-Instruct}
DRAFTER=${DRAFTER:-models/Qwen2.5-7B-Instruct-redrafter}
WORK=${WORK:-work/qwen2.5-7b-instruct-fp8}
PRESET=$(cd "$(dirname "$0")/.." && pwd)/configs/qwen2.5-7b-instruct-fp8.yaml

# No ReDrafter drafter is published for this model: train one first (README, "Train a drafter"), e.g.
#   redrafter-trt train --base models/Qwen2.5-7B-Instruct --data prompts.jsonl --distill --device cuda --output models/Qwen2.5-7B-Instruct-redrafter

redrafter-trt convert --config "$PRESET" \
    --base "$BASE" --drafter "$DRAFTER" --output "$WORK/checkpoint" --force

redrafter-trt build --config "$PRESET" \
    --checkpoint-dir "$WORK/checkpoint" --output-dir "$WORK/engine" --force

redrafter-trt run --config "$PRESET" \
    --engine-dir "$WORK/engine" --tokenizer-dir "$BASE" \
    --input-text "Explain speculative decoding in three sentences."

# Serve it over HTTP (OpenAI-style /v1/completions and /v1/chat/completions on port 8000):
#   redrafter-trt serve --config configs/qwen2.5-7b-instruct-fp8.yaml
# from the repository root, where the preset finds the engine and the tokenizer (with WORK or BASE set, add
# --engine-dir "$WORK/engine" --tokenizer-dir "$BASE" with their values).
