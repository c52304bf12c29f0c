#!/usr/bin/env bash
# tools/gpu-check.sh - the one device check of the CUDA backend, run from the
# repository root on a GPU machine.  It answers in one go, in well under 10 minutes:
#
#   1 environment   nvidia-smi, driver and CUDA versions; configure and build with
#                   LLMSERVE_CUDA=ON only the targets below (or take them from a
#                   bundle made by tools/gpu-bundle.sh, for a machine without the
#                   build dependencies)
#   2 tests         test_forward_cuda with LLMSERVE_REQUIRE_CUDA=1 (a skip is a
#                   failure), then the inference unit and service tests on the CUDA
#                   backend (LLMSERVE_TEST_BACKEND=cuda)
#   3 modelbench    stories15M and stories110M shapes made on the spot, CUDA and CPU
#                   in the same run, each beside the bound from the memory bandwidth
#                   measured in the same run (the GPU's by a read kernel); and
#                   stories15M as int8 (Q8_0) on CUDA
#   4 llmbench      llmserve-inference on CUDA, then on the CPU, each driven by
#                   llmbench --direct at 1, 8 and 32 streams (TTFT, ITL, tokens/s)
#
# Results go to --out DIR (default $OUT when set, else out/gpu-check): summary.txt
# and summary.json (every figure), env.txt, build.log, tests.log, bench.log.  The
# summary table is printed last.  Exit status: 0 when every step passed, 1 when one
# failed, 2 for bad usage, 3 when there is no GPU (it says so at once).
#
# --cpu-only runs every step that needs no GPU (the CPU backend throughout), which is
# what CI exercises (tests/integration/test_gpu_check.sh); --quick makes the runs
# short (stories15M only, few repeats and requests).
set -uo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

usage() {
    sed -n '2,/^set -uo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//' >&2
    echo "usage: tools/gpu-check.sh [--out DIR] [--build-dir DIR | --bundle DIR] [--no-build]" \
        "[--cpu-only] [--quick]" >&2
    exit 2
}

out=${OUT:-$repo/out/gpu-check}
build=$repo/build-gpu-check
bundle=""
no_build=0 cpu_only=0 quick=0
while [ $# -gt 0 ]; do
    case "$1" in
    --out) out=${2:?}; shift 2 ;;
    --build-dir) build=${2:?}; shift 2 ;;
    --bundle) bundle=${2:?}; shift 2 ;;
    --no-build) no_build=1; shift ;;
    --cpu-only) cpu_only=1; shift ;;
    --quick) quick=1; shift ;;
    -h | --help) usage ;;
    *) echo "gpu-check: unknown argument '$1'" >&2; usage ;;
    esac
done

t_start=$(date +%s)
mkdir -p "$out" || exit 2
out=$(cd "$out" && pwd)
work=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
    rm -rf "$work"
}
trap cleanup EXIT
: >"$out/summary.txt"
results=$out/results.tsv # step <tab> name <tab> status <tab> detail; summary.json is made from it
: >"$results"

say() { echo "gpu-check: $*"; }
record() { # step name status detail
    printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >>"$results"
    printf '  %-10s %-44s %-5s %s\n' "$1" "$2" "$3" "$4"
}

backend=cuda
[ "$cpu_only" = 1 ] && backend=cpu

# ---- 0: is there a GPU at all?  Fail fast and plainly. --------------------------------
if [ "$cpu_only" = 0 ]; then
    why=""
    if ! command -v nvidia-smi >/dev/null 2>&1; then
        why="nvidia-smi is not installed (no NVIDIA driver)"
    elif ! nvidia-smi -L 2>&1 | grep -q '^GPU '; then
        why="nvidia-smi lists no GPU: $(nvidia-smi -L 2>&1 | head -1)"
    fi
    if [ -n "$why" ]; then
        say "no GPU on this machine: $why."
        say "Run it on a GPU machine, or with --cpu-only for the steps that need none."
        record env gpu FAIL "$why"
        exit 3
    fi
fi

# ---- 1: environment and build ---------------------------------------------------------
say "1/4 environment and build (results in $out)"
{
    echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "host: $(uname -srm), $(nproc) cores, $(awk '/MemTotal/{printf "%.0f GiB", $2/1048576}' /proc/meminfo)"
    echo "os: $(. /etc/os-release 2>/dev/null && echo "$PRETTY_NAME"), $(ldd --version 2>&1 | head -1)"
    echo "commit: $(git rev-parse HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with local changes)')"
    if command -v nvidia-smi >/dev/null 2>&1; then
        nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,clocks.max.mem \
            --format=csv 2>&1
        nvidia-smi 2>&1
    else
        echo "nvidia-smi: not installed"
    fi
    for nv in nvcc /usr/local/cuda/bin/nvcc; do
        command -v "$nv" >/dev/null 2>&1 && { echo "nvcc: $("$nv" --version | tail -2 | tr '\n' ' ')"; break; }
    done
    [ -n "$bundle" ] && { echo "bundle:"; sed 's/^/  /' "$bundle/MANIFEST"; }
} >"$out/env.txt" 2>&1
gpu_name=$( (nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null || true) | head -1)
record env machine ok "$(nproc) cores${gpu_name:+, $gpu_name}"

targets=(test_forward_cuda test_forward_cpu test_model_sampler test_inference_scheduler
         test_inference llmserve-inference llmserve-modelmaker llmserve-modelbench llmbench)
declare -A bin
if [ -n "$bundle" ]; then
    bundle=$(cd "$bundle" && pwd)
    # cuBLAS (and the driver) come from this machine: find its CUDA libraries
    cudalib=""
    for d in /usr/local/cuda/lib64 /usr/local/cuda/lib /usr/local/cuda/targets/x86_64-linux/lib \
        /usr/local/cuda-*/lib64 /usr/local/cuda-*/lib /usr/lib/x86_64-linux-gnu; do
        [ -e "$d/libcublas.so.13" ] && { cudalib=$d; break; }
    done
    [ -z "$cudalib" ] && cudalib=$(dirname "$(find /opt /usr -name 'libcublas.so.13' 2>/dev/null | head -1)" 2>/dev/null)
    [ "$cudalib" = . ] && cudalib=""
    lt=$(find /opt /usr -name 'libcublasLt.so.13' 2>/dev/null | head -1)
    [ -n "$lt" ] && [ "$(dirname "$lt")" != "$cudalib" ] && cudalib="$cudalib:$(dirname "$lt")"
    export LLMSERVE_GPU_CUDA_LIBS=$cudalib
    echo "cuda libraries: ${cudalib:-not found}" >>"$out/env.txt"
    rm -f "$bundle/use-glibc"
    if ! "$bundle/bin/llmbench" --help >/dev/null 2>"$work/ld.err"; then
        if grep -q "GLIBC" "$work/ld.err"; then
            touch "$bundle/use-glibc" # this machine's C library is older than the build's
            echo "loader: the bundle's (this machine's glibc is older)" >>"$out/env.txt"
        fi
    fi
    for t in "${targets[@]}"; do bin[$t]=$bundle/bin/$t; done
    if "${bin[llmbench]}" --help >/dev/null 2>>"$out/env.txt"; then
        record build bundle ok "$(head -1 "$bundle/MANIFEST")"
    else
        record build bundle FAIL "its binaries do not run here (env.txt)"
    fi
else
    if [ "$no_build" = 0 ]; then
        cuda_opt=ON
        [ "$cpu_only" = 1 ] && cuda_opt=AUTO
        t0=$(date +%s)
        if cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DLLMSERVE_CUDA=$cuda_opt >"$out/build.log" 2>&1 &&
            cmake --build "$build" -j"$(nproc)" --target "${targets[@]}" >>"$out/build.log" 2>&1; then
            record build "cmake (LLMSERVE_CUDA=$cuda_opt)" ok "$(($(date +%s) - t0)) s"
        else
            record build "cmake (LLMSERVE_CUDA=$cuda_opt)" FAIL "see build.log"
        fi
    fi
    for t in "${targets[@]}"; do
        bin[$t]=$(find "$build" -type f -name "$t" -perm -u+x -not -path '*/CMakeFiles/*' 2>/dev/null | head -1)
    done
fi
missing=""
for t in "${targets[@]}"; do
    # a build without the CUDA backend has no test_forward_cuda: fine for --cpu-only
    [ "$t" = test_forward_cuda ] && [ "$cpu_only" = 1 ] && [ -z "${bin[$t]:-}" ] && continue
    [ -x "${bin[$t]:-}" ] || missing="$missing $t"
done
if [ -n "$missing" ]; then
    record build targets FAIL "missing:$missing"
    say "cannot go on without:$missing"
    exit 1
fi

# ---- 2: tests ----------------------------------------------------------------------------
say "2/4 tests on the $backend backend"
export LLMSERVE_LOG_LEVEL=${LLMSERVE_LOG_LEVEL:-warn}
export LLMSERVE_INFERENCE=${bin[llmserve-inference]} LLMSERVE_MODELMAKER=${bin[llmserve-modelmaker]}
: >"$out/tests.log"
run_test() { # name env... -- : runs a criterion binary, records its synthesis line
    local name=$1
    shift
    local t0
    t0=$(date +%s)
    echo "==== $name ($*)" >>"$out/tests.log"
    env "$@" timeout 300 "${bin[$name]}" --verbose >>"$work/t.log" 2>&1
    local rc=$?
    cat "$work/t.log" >>"$out/tests.log"
    local syn
    syn=$(grep 'Synthesis' "$work/t.log" | tail -1 | sed 's/.*Synthesis: //')
    rm -f "$work/t.log"
    if [ $rc = 0 ]; then
        record tests "$name" ok "${syn:-passed} ($(($(date +%s) - t0)) s)"
    else
        record tests "$name" FAIL "${syn:-exit $rc} (tests.log)"
    fi
}
if [ "$cpu_only" = 0 ]; then
    run_test test_forward_cuda LLMSERVE_REQUIRE_CUDA=1
elif [ -n "${bin[test_forward_cuda]:-}" ]; then
    run_test test_forward_cuda LLMSERVE_REQUIRE_CUDA=0
else
    record tests test_forward_cuda ok "not built (no CUDA backend in this build)"
fi
run_test test_forward_cpu
run_test test_model_sampler
run_test test_inference_scheduler LLMSERVE_TEST_BACKEND=$backend
run_test test_inference LLMSERVE_TEST_BACKEND=$backend
grep -h "largest logit difference" "$out/tests.log" | sed 's/^/  /' | head -3

# ---- 3: modelbench ---------------------------------------------------------------------
say "3/4 modelbench"
shapes=(stories15M stories110M)
[ "$quick" = 1 ] && shapes=(stories15M)
: >"$out/bench.log"
: >"$out/modelbench.jsonl"
bench() { # label model backend: one modelbench run, recorded under label
    local label=$1 model=$2 be=$3
    local args=(--model "$model" --backend "$be" --json)
    if [ "$quick" = 1 ]; then
        args+=(--repeats 1 --batches 1,4 --decode-tokens 16 --prefill-tokens 32 --batch-steps 4 --bw-mib 64)
    elif [ "$be" = cuda ]; then
        args+=(--repeats 5 --batches 1,8,32,64 --bw-mib 2048)
    else
        args+=(--repeats 3 --batches 1,8,32 --decode-tokens 64 --batch-steps 16)
    fi
    echo "==== modelbench $label $be: ${args[*]}" >>"$out/bench.log"
    if timeout 300 "${bin[llmserve-modelbench]}" "${args[@]}" >"$work/mb.json" 2>>"$out/bench.log"; then
        cat "$work/mb.json" >>"$out/modelbench.jsonl"
        record modelbench "$label $be" ok "$(python3 -c '
import json, sys
j = json.load(open(sys.argv[1]))
b = {x["batch"]: x["tok_s"] for x in j["batches"]}
big = max(b)
print("decode %.0f tok/s (%.2f of the %s bound %.0f), B=%d %.0f tok/s, prefill %.0f tok/s" % (
    j["decode_tok_s"], j["decode_tok_s"] / j["bound_tok_s"] if j["bound_tok_s"] > 0 else 0,
    j["bandwidth_of"], j["bound_tok_s"], big, b[big], j["prefill_tok_s"]))' "$work/mb.json")"
    else
        record modelbench "$label $be" FAIL "bench.log"
    fi
}
for shape in "${shapes[@]}"; do
    if ! "${bin[llmserve-modelmaker]}" --preset "$shape" --seed 7 --out "$work/$shape.bin" \
        --tokenizer-out "$work/$shape.tok" >>"$out/bench.log" 2>&1; then
        record modelbench "$shape: make the model" FAIL "bench.log"
        continue
    fi
    backends=(cuda cpu)
    [ "$cpu_only" = 1 ] && backends=(cpu)
    for be in "${backends[@]}"; do
        bench "$shape" "$work/$shape.bin" "$be"
    done
done
# the int8 (Q8_0) file of the smallest shape, on the CUDA backend
if [ "$cpu_only" = 0 ]; then
    if "${bin[llmserve-modelmaker]}" --preset stories15M --seed 7 --quantize q8_0 \
        --out "$work/stories15M-q8.bin" >>"$out/bench.log" 2>&1; then
        bench stories15M-q8_0 "$work/stories15M-q8.bin" cuda
    else
        record modelbench "stories15M-q8_0: make the model" FAIL "bench.log"
    fi
fi

# ---- 4: the inference service under llmbench --direct ------------------------------------
say "4/4 llmserve-inference under llmbench --direct"
serve_model=$work/stories15M.bin serve_tok=$work/stories15M.tok
streams_list=(1 8 32)
[ "$quick" = 1 ] && streams_list=(1 8)
backends=(cuda cpu)
[ "$cpu_only" = 1 ] && backends=(cpu)
for be in "${backends[@]}"; do
    [ -e "$serve_model" ] || { record llmbench "$be" FAIL "no model (step 3)"; break; }
    log=$work/inference-$be.log
    "${bin[llmserve-inference]}" --listen 127.0.0.1:0 --model "$serve_model" --tokenizer "$serve_tok" \
        --backend "$be" --pool small --model-name stories15M-check --max-batch 32 \
        --max-queue 256 >"$log" 2>&1 &
    pid=$!
    pids+=("$pid")
    for _ in $(seq 1 600); do
        grep -q '^SERVING$' "$log" && break
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    port=$(sed -n 's/^LISTENING port=//p' "$log" | head -1)
    if ! grep -q '^SERVING$' "$log" || [ -z "$port" ]; then
        record llmbench "inference on $be" FAIL "did not start: $(tail -1 "$log")"
        cat "$log" >>"$out/bench.log"
        kill "$pid" 2>/dev/null
        continue
    fi
    for s in "${streams_list[@]}"; do
        n=$((s * 8))
        [ $n -lt 24 ] && n=24
        [ "$quick" = 1 ] && n=$((s * 2 + 4))
        echo "==== llmbench $be --streams $s --direct-requests $n" >>"$out/bench.log"
        if timeout 300 "${bin[llmbench]}" --router none --direct "127.0.0.1:$port" --streams "$s" \
            --direct-requests "$n" --max-tokens 64 --no-progress >"$work/lb.txt" 2>&1; then
            cat "$work/lb.txt" >>"$out/bench.log"
            record llmbench "$be, $s streams" ok "$(awk '
                /^  TTFT/ {t = $3} /^  inter-token/ {i = $4} /^  end to end/ {e = $5}
                /^  throughput/ {tp = $2; rq = $4}
                END {printf "TTFT p50 %s ms, ITL p50 %s ms, e2e p50 %s ms, %s tok/s, %s req/s", t, i, e, tp, rq}' "$work/lb.txt")"
        else
            cat "$work/lb.txt" >>"$out/bench.log"
            record llmbench "$be, $s streams" FAIL "$(grep -m1 -i 'error' "$work/lb.txt" || tail -1 "$work/lb.txt")"
        fi
    done
    kill -TERM "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    echo "==== inference ($be) log" >>"$out/bench.log"
    cat "$log" >>"$out/bench.log"
done

# ---- summary -----------------------------------------------------------------------------
secs=$(($(date +%s) - t_start))
fails=$(awk -F'\t' '$3 == "FAIL"' "$results" | wc -l)
python3 - "$results" "$out/modelbench.jsonl" "$out/summary.json" "$secs" "$backend" <<'EOF'
import json, sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1]) if l.strip()]
mb = [json.loads(l) for l in open(sys.argv[2]) if l.strip()]
json.dump({"seconds": int(sys.argv[4]), "backend": sys.argv[5],
           "passed": all(r[2] != "FAIL" for r in rows),
           "steps": [{"step": r[0], "name": r[1], "status": r[2], "detail": r[3]} for r in rows],
           "modelbench": mb}, open(sys.argv[3], "w"), indent=1)
EOF
{
    echo "gpu-check: $(date -u +%Y-%m-%dT%H:%M:%SZ), ${secs} s, backend $backend${gpu_name:+, $gpu_name}"
    awk -F'\t' '{printf "  %-10s %-44s %-5s %s\n", $1, $2, $3, $4}' "$results"
    if [ "$fails" = 0 ]; then echo "gpu-check: every step passed"; else echo "gpu-check: $fails step(s) FAILED"; fi
} >"$out/summary.txt"
echo
cat "$out/summary.txt"
[ "$fails" = 0 ]
