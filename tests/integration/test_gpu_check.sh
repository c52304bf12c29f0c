#!/usr/bin/env bash
# tests/integration/test_gpu_check.sh BUILD_DIR - what tools/gpu-check.sh does on a
# machine without a GPU (CI): it fails fast and plainly when asked for the GPU steps,
# and every step it can run on the CPU works, from a build tree and from a bundle
# made by tools/gpu-bundle.sh.
set -uo pipefail
build=$(cd "${1:?usage: test_gpu_check.sh BUILD_DIR}" && pwd)
repo=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*"; exit 1; }

# 1. No GPU: exit 3 at once, saying why.  nvidia-smi as a machine without a working
# GPU has it ("No devices were found", exit 6), first on PATH.
mkdir -p "$tmp/fake"
printf '#!/bin/sh\necho "No devices were found"\nexit 6\n' >"$tmp/fake/nvidia-smi"
chmod +x "$tmp/fake/nvidia-smi"
t0=$(date +%s%N)
PATH="$tmp/fake:$PATH" bash "$repo/tools/gpu-check.sh" --out "$tmp/nogpu" >"$tmp/nogpu.txt" 2>&1
rc=$?
ms=$((($(date +%s%N) - t0) / 1000000))
cat "$tmp/nogpu.txt"
[ $rc = 3 ] || fail "without a GPU gpu-check.sh exited $rc, not 3"
grep -q "no GPU on this machine: nvidia-smi lists no GPU: No devices were found" "$tmp/nogpu.txt" ||
    fail "the reason is not in the output"
[ $ms -lt 5000 ] || fail "failing took $ms ms"
# and without nvidia-smi at all, when this machine has none
if ! command -v nvidia-smi >/dev/null 2>&1; then
    bash "$repo/tools/gpu-check.sh" --out "$tmp/nogpu2" >"$tmp/nogpu2.txt" 2>&1
    rc=$?
    [ $rc = 3 ] || fail "without nvidia-smi gpu-check.sh exited $rc"
    grep -q "nvidia-smi is not installed" "$tmp/nogpu2.txt" || fail "no reason without nvidia-smi"
fi
echo "ok: no GPU is a fast, plain failure ($ms ms)"

# check_run DIR: a --cpu-only run passed every step and wrote its results.
check_run() {
    local d=$1
    for f in summary.txt summary.json env.txt tests.log bench.log modelbench.jsonl; do
        [ -s "$d/$f" ] || fail "$d/$f is missing or empty"
    done
    grep -q "every step passed" "$d/summary.txt" || fail "$(cat "$d/summary.txt")"
    python3 - "$d/summary.json" <<'PY' || fail "summary.json: $(cat "$d/summary.json")"
import json, sys
j = json.load(open(sys.argv[1]))
assert j["passed"] is True and j["backend"] == "cpu", j
names = {(s["step"], s["name"]) for s in j["steps"]}
for want in [("tests", "test_forward_cuda"), ("tests", "test_inference"),
             ("tests", "test_inference_scheduler"), ("modelbench", "stories15M cpu"),
             ("llmbench", "cpu, 1 streams"), ("llmbench", "cpu, 8 streams")]:
    assert want in names, want
assert all(s["status"] == "ok" for s in j["steps"]), j["steps"]
mb = j["modelbench"]
assert len(mb) == 1 and mb[0]["backend"] == "cpu" and mb[0]["bandwidth_of"] == "host"
assert mb[0]["decode_tok_s"] > 0 and mb[0]["bound_tok_s"] > 0
PY
    grep -q "tok/s" "$d/summary.txt" || fail "no figures in the summary"
}

# 2. The CPU-side steps from the build tree.
bash "$repo/tools/gpu-check.sh" --cpu-only --quick --build-dir "$build" --no-build \
    --out "$tmp/cpu" || fail "gpu-check.sh --cpu-only failed"
check_run "$tmp/cpu"
echo "ok: --cpu-only from the build tree"

# 3. The same from a bundle, as on a GPU machine without the build dependencies.
if [ -x "$build/tests/test_forward_cuda" ]; then # a build with the CUDA backend
    bash "$repo/tools/gpu-bundle.sh" "$build" "$tmp/bundle" || fail "gpu-bundle.sh failed"
    [ -x "$tmp/bundle/bin/llmserve-inference" ] && [ -s "$tmp/bundle/MANIFEST" ] ||
        fail "the bundle lacks its parts"
    ! ls "$tmp/bundle/lib" | grep -q '^libc\.so' || fail "the bundle carries the C library in lib/"
    bash "$repo/tools/gpu-check.sh" --cpu-only --quick --bundle "$tmp/bundle" \
        --out "$tmp/bundled" || fail "gpu-check.sh --cpu-only --bundle failed"
    check_run "$tmp/bundled"
    echo "ok: --cpu-only from a bundle"
fi
echo "PASS"
