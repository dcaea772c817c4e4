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

# Vicuna v1.3 ships no chat template: its format (FastChat's vicuna_v1.1) goes into the base's folder, where every
# command and trtllm-serve read it (README, "Vicuna and other bases without a chat template").
TEMPLATE=$(cd "$(dirname "$0")/.." && pwd)/configs/chat_templates/vicuna_v1.1.jinja
if [ -d "$BASE" ] && [ ! -e "$BASE/chat_template.jinja" ]; then  # a missing base: convert names it, one line
    cp "$TEMPLATE" "$BASE/chat_template.jinja"
    echo "wrote $BASE/chat_template.jinja (Vicuna's chat format)"
fi

# No ReDrafter drafter is published for this model: train one first on Vicuna's own answers (README, "Train a drafter")
#   redrafter-trt train --base models/vicuna-7b-v1.3 --data prompts.jsonl --distill --device cuda --output models/vicuna-7b-v1.3-redrafter

redrafter-trt convert --config "$PRESET" \
    --base "$BASE" --drafter "$DRAFTER" --output "$WORK/checkpoint" --force

redrafter-trt build --config "$PRESET" \
    --checkpoint-dir "$WORK/checkpoint" --output-dir "$WORK/engine" --force

redrafter-trt run --config "$PRESET" \
    --engine-dir "$WORK/engine" --tokenizer-dir "$BASE" \
    --input-text "What is speculative decoding?"

# Serve it over HTTP (OpenAI-style /v1/chat/completions and /v1/completions on port 8000):
#   redrafter-trt serve --config configs/vicuna-7b-v1.3.yaml
# from the repository root, where the preset finds the engine and the tokenizer (with WORK or BASE set, add
# --engine-dir "$WORK/engine" --tokenizer-dir "$BASE" with their values).
