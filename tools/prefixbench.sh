#!/usr/bin/env bash
# tools/prefixbench.sh [BUILD_DIR] - what the prefix cache saves: TTFT of requests that
# share a long system prompt, on two inference instances of the same model, one with the
# prefix cache (the default) and one started with --no-prefix-cache, measured in the same
# run by servebench prefix (alternating rounds; see tools/servebench/prefix.h).  Prints
# servebench's report: TTFT p50/p95/mean per instance, the prompt tokens the cache held,
# the uncached/cached ratios, and whether both gave the same greedy tokens (the script
# fails when they did not, or when a request failed).
#
# The model: modelmaker's tiny shape with a 2048-token context and a classifier of its own
# (MODEL_FLAGS to change it), one CPU thread per instance (CPU_THREADS).  Random weights
# with the classifier shared with the embedding answer every prompt with its last token
# again and again, which would make the identical-outputs check blind to the prefix; with
# a classifier of its own the greedy tokens depend on the context.  Requests: PREFIX_TOKENS (1000) shared ids +
# SUFFIX_TOKENS (16) of their own, MAX_TOKENS (16) tokens each; ROUNDS (5) rounds of
# REQUESTS (20) one at a time per instance, then CONCURRENCY (4) at once.  About 20 s on
# two cores.
set -euo pipefail
cd "$(dirname "$0")/.."
B=${1:-build}
MODEL_FLAGS=${MODEL_FLAGS:---preset tiny --seq-len 2048 --no-shared-classifier}
CPU_THREADS=${CPU_THREADS:-1}
ROUNDS=${ROUNDS:-5} REQUESTS=${REQUESTS:-20} CONCURRENCY=${CONCURRENCY:-4}
PREFIX_TOKENS=${PREFIX_TOKENS:-1000} SUFFIX_TOKENS=${SUFFIX_TOKENS:-16} MAX_TOKENS=${MAX_TOKENS:-16}
run=$(mktemp -d /tmp/prefixbench.XXXXXX)
trap 'kill $(cat "$run/pids" 2>/dev/null) 2>/dev/null || true; sleep 0.5; rm -rf "$run"' EXIT
BENCH=prefixbench
. tools/benchlib.sh

# shellcheck disable=SC2086 # MODEL_FLAGS is a list of flags
"$B/tools/modelmaker/llmserve-modelmaker" $MODEL_FLAGS --seed 1 --out "$run/m.bin" \
    --tokenizer-out "$run/tok.bin" >/dev/null 2>&1
inst() { # NAME EXTRA-FLAGS...: an instance of the model, its port
    local name=$1
    shift
    bench_start "$name" "$B/services/inference/llmserve-inference" --listen 127.0.0.1:0 \
        --model "$run/m.bin" --tokenizer "$run/tok.bin" --model-name bench \
        --cpu-threads "$CPU_THREADS" "$@"
}
cached=$(inst cached)
uncached=$(inst uncached --no-prefix-cache)
echo "prefixbench: $(date -u +%Y-%m-%dT%H:%MZ) on $(hostname), $(nproc) cores; model: $MODEL_FLAGS"
"$B/tools/servebench/servebench" prefix --cached "127.0.0.1:$cached" \
    --uncached "127.0.0.1:$uncached" --rounds "$ROUNDS" --requests "$REQUESTS" \
    --concurrency "$CONCURRENCY" --prefix-tokens "$PREFIX_TOKENS" \
    --suffix-tokens "$SUFFIX_TOKENS" --max-tokens "$MAX_TOKENS"
