#!/usr/bin/env bash
# Vicuna-7B v1.3 + its ReDrafter drafter: float16 checkpoint, engine on one GPU (compute capability 8.0+), one prompt.
# Runs as written on a GPU machine with the models downloaded and TensorRT-LLM 1.2.x installed
# (check with `redrafter-trt doctor`). Override any path below from the environment, e.g. BASE=/data/m ./vicuna-7b-v1.3.sh
# The base, into BASE's default:
#   hf download lmsys/vicuna-7b-v1.3 --local-dir models/vicuna-7b-v1.3
# Its tokenizer is SentencePiece's tokenizer.model alone, which transformers reads with: pip install sentencepiece protobuf
set -euo pipefail

BASE=${BASE:-models/vicuna-7b-v1.3}
DRAFTER=${DRAFTER:-models/vicuna-7b-v1.3-redrafter}
WORK=${WORK:-work/vicuna-7b-v1.3}
PRESET=$(cd "$(dirname "$0")/.." && pwd)/configs/vicuna-7b-v1.3.yaml

# No ReDrafter drafter is published for this model: train one first with Apple's ml-recurrent-drafter recipe (as the
# preset says). `redrafter-trt train` renders prompts through the tokenizer's chat template, which Vicuna v1.3 lacks
# (it refuses such a base): add Vicuna's template to its tokenizer_config.json first, then (README, "Train a drafter")
#   redrafter-trt train --base models/vicuna-7b-v1.3 --data prompts.jsonl --distill --device cuda --output models/vicuna-7b-v1.3-redrafter

redrafter-trt convert --config "$PRESET" \
    --base "$BASE" --drafter "$DRAFTER" --output "$WORK/checkpoint" --force

redrafter-trt build --config "$PRESET" \
    --checkpoint-dir "$WORK/checkpoint" --output-dir "$WORK/engine" --force

redrafter-trt run --config "$PRESET" \
    --engine-dir "$WORK/engine" --tokenizer-dir "$BASE" \
    --input-text "A chat between a curious user and an artificial intelligence assistant. USER: What is speculative decoding? ASSISTANT:"

# Serve it over HTTP (OpenAI-style /v1/completions on port 8000; Vicuna v1.3 has no chat template for /v1/chat/completions):
#   redrafter-trt serve --config configs/vicuna-7b-v1.3.yaml
# from the repository root, where the preset finds the engine and the tokenizer (with WORK or BASE set, add
# --engine-dir "$WORK/engine" --tokenizer-dir "$BASE" with their values).
