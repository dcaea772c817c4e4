#!/usr/bin/env bash
# Qwen3-8B + a ReDrafter drafter: bfloat16 checkpoint, engine on one GPU (80 GB), one chat prompt with thinking on.
# Runs as written on a GPU machine with the models downloaded and TensorRT-LLM 1.2.x installed
# (check with `redrafter-trt doctor`). Override any path below from the environment, e.g. BASE=/data/m ./qwen3-8b.sh
# The base, into BASE's default:
#   hf download Qwen/Qwen3-8B --local-dir models/Qwen3-8B
set -euo pipefail

BASE=${BASE:-models/Qwen3-8B}
DRAFTER=${DRAFTER:-models/Qwen3-8B-redrafter}
WORK=${WORK:-work/qwen3-8b}
PRESET=$(cd "$(dirname "$0")/.." && pwd)/configs/qwen3-8b.yaml

# No ReDrafter drafter is published for this model: train one first (README, "Train a drafter"), on the answers it
# will draft: thinking on (the template's default, as served here), e.g.
#   redrafter-trt train --base models/Qwen3-8B --data prompts.jsonl --distill --device cuda --output models/Qwen3-8B-redrafter
# To serve with thinking off, distil those answers instead (and set chat-template-kwargs under the preset's run:):
#   redrafter-trt train --base models/Qwen3-8B --data prompts.jsonl --distill --chat-template-kwargs '{"enable_thinking": false}' --device cuda --output models/Qwen3-8B-redrafter

redrafter-trt convert --config "$PRESET" \
    --base "$BASE" --drafter "$DRAFTER" --output "$WORK/checkpoint" --force

redrafter-trt build --config "$PRESET" \
    --checkpoint-dir "$WORK/checkpoint" --output-dir "$WORK/engine" --force

redrafter-trt run --config "$PRESET" \
    --engine-dir "$WORK/engine" --tokenizer-dir "$BASE" \
    --input-text "Explain speculative decoding in three sentences."

# Serve it over HTTP (OpenAI-style /v1/completions and /v1/chat/completions on port 8000), tool calls and thinking
# parsed (the preset's tool-parser and reasoning-parser qwen3):
#   redrafter-trt serve --config configs/qwen3-8b.yaml
# from the repository root, where the preset finds the engine and the tokenizer (with WORK or BASE set, add
# --engine-dir "$WORK/engine" --tokenizer-dir "$BASE" with their values).
