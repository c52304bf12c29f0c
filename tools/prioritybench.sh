#!/usr/bin/env bash
# tools/prioritybench.sh [BUILD_DIR] - what priority classes give an interactive user
# while batch work saturates an instance: servebench priority against one inference
# instance (MAX_BATCH 8 requests at once, one CPU thread), BATCH_STREAMS (twice
# MAX_BATCH) loops of BATCH_TOKENS (256)-token batch requests, and a probe of
# INTERACTIVE_TOKENS (8) tokens every INTERVAL_MS (50) for DURATION_S (10) seconds per
# phase; phases "priorities" (batch PRIORITY_BATCH, probes PRIORITY_INTERACTIVE) and "no
# priorities" (all unspecified) alternate for ROUNDS (2) rounds (see
# tools/servebench/priority.h).  Prints servebench's report: probe TTFT p50/p95/p99, probes
# done, batch tokens/s, errors, and the no-priorities/priorities ratio of probe p95; fails
# when a request failed.  About 50 s on two cores.
#
# The model: modelmaker's tiny shape with a 2048-token context and a classifier of its own,
# as prefixbench.sh's (MODEL_FLAGS to change it).
set -euo pipefail
cd "$(dirname "$0")/.."
B=${1:-build}
MODEL_FLAGS=${MODEL_FLAGS:---preset tiny --seq-len 2048 --no-shared-classifier}
CPU_THREADS=${CPU_THREADS:-1} MAX_BATCH=${MAX_BATCH:-8}
ROUNDS=${ROUNDS:-2} DURATION_S=${DURATION_S:-10} INTERVAL_MS=${INTERVAL_MS:-50}
BATCH_STREAMS=${BATCH_STREAMS:-0} BATCH_TOKENS=${BATCH_TOKENS:-256}
INTERACTIVE_TOKENS=${INTERACTIVE_TOKENS:-8}
run=$(mktemp -d /tmp/prioritybench.XXXXXX)
trap 'kill $(cat "$run/pids" 2>/dev/null) 2>/dev/null || true; sleep 0.5; rm -rf "$run"' EXIT
BENCH=prioritybench
. tools/benchlib.sh

# shellcheck disable=SC2086 # MODEL_FLAGS is a list of flags
"$B/tools/modelmaker/llmserve-modelmaker" $MODEL_FLAGS --seed 1 --out "$run/m.bin" \
    --tokenizer-out "$run/tok.bin" >/dev/null 2>&1
port=$(bench_start inference "$B/services/inference/llmserve-inference" --listen 127.0.0.1:0 \
    --model "$run/m.bin" --tokenizer "$run/tok.bin" --model-name bench \
    --cpu-threads "$CPU_THREADS" --max-batch "$MAX_BATCH")
echo "prioritybench: $(date -u +%Y-%m-%dT%H:%MZ) on $(hostname), $(nproc) cores; model: $MODEL_FLAGS"
"$B/tools/servebench/servebench" priority --target "127.0.0.1:$port" --rounds "$ROUNDS" \
    --duration-s "$DURATION_S" --interval-ms "$INTERVAL_MS" --batch-streams "$BATCH_STREAMS" \
    --batch-tokens "$BATCH_TOKENS" --interactive-tokens "$INTERACTIVE_TOKENS"
