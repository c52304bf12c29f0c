#!/usr/bin/env bash
# tests/integration/test_peerbench.sh BUILD_DIR - tools/peerbench.sh without the peers: the
# quick run prints the fp32 table and the bandwidth bound, says plainly why a format was
# not measured, and reads each peer's output (stand-in executables that print what
# llama.cpp's and llama2.c's tools print) into rows with llmserve / peer ratios.
set -uo pipefail
build=$(cd "${1:?usage: test_peerbench.sh BUILD_DIR}" && pwd)
repo=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() {
    echo "FAIL: $*"
    exit 1
}

# 1. --quick, no peers: a table for fp32 at every batch size, the bound, and Q8_0 either
# measured or named with modelbench's reason.
t0=$(date +%s)
bash "$repo/tools/peerbench.sh" --quick --build "$build" >"$tmp/quick.txt" 2>"$tmp/quick.err"
rc=$?
cat "$tmp/quick.txt"
[ $rc = 0 ] || { cat "$tmp/quick.err"; fail "--quick exited $rc"; }
for b in 1 4 16 32; do
    grep -Eq "^llmserve +fp32 +$b +[0-9]+\.[0-9]" "$tmp/quick.txt" || fail "no fp32 row for B=$b"
done
grep -q "^read bandwidth measured by llmserve-modelbench: [0-9.]* GB/s" "$tmp/quick.txt" ||
    fail "no read bandwidth"
grep -Eq "^  llmserve +fp32 .* of bound$" "$tmp/quick.txt" || fail "no fraction of the bound"
grep -Eq "^llmserve +q8_0 +1 |^not measured: llmserve q8_0: llmserve-modelbench failed: .+" \
    "$tmp/quick.txt" || fail "q8_0 neither measured nor explained"
echo "ok: --quick without peers in $(($(date +%s) - t0)) s"

# 2. Peers that print what the real tools print, at fixed rates, on the tiny shape.
p=$tmp/peers
mkdir -p "$p"
cat >"$p/llama-convert-llama2c-to-ggml" <<'EOF'
#!/bin/sh
# writes --llama2c-output-model after checking its inputs exist
while [ $# -gt 0 ]; do
    case $1 in
    --copy-vocab-from-model | --llama2c-model) [ -s "$2" ] || exit 1 ;;
    --llama2c-output-model) out=$2 ;;
    esac
    shift 2
done
echo gguf >"$out"
EOF
cat >"$p/llama-quantize" <<'EOF'
#!/bin/sh
cp "$1" "$2"
EOF
cat >"$p/llama-bench" <<'EOF'
#!/bin/sh
echo '[{"n_prompt": 0, "n_gen": 64, "avg_ts": 100.0, "stddev_ts": 1.0}]'
EOF
cat >"$p/llama-batched-bench" <<'EOF'
#!/bin/sh
while [ $# -gt 0 ]; do
    [ "$1" = -npl ] && npl=$2
    shift
done
echo "main: some log line"
for b in $(echo "$npl" | tr , ' '); do
    echo "{\"pl\": $b, \"speed_tg\": $((b * 100)).0}"
done
EOF
printf '#!/bin/sh\necho "achieved tok/s: 50.0" >&2\n' >"$p/run"
printf '#!/bin/sh\necho "segfault" >&2\nexit 139\n' >"$p/runq"
chmod +x "$p"/*
bash "$repo/tools/peerbench.sh" --quick --preset tiny --build "$build" --batches 1,4 --bw-mib 64 \
    --llama-bench "$p/llama-bench" --llama-batched-bench "$p/llama-batched-bench" \
    --llama2c-convert "$p/llama-convert-llama2c-to-ggml" --llama-quantize "$p/llama-quantize" \
    --llama2c "$p" --json >"$tmp/peers.json" 2>"$tmp/peers.err" ||
    { cat "$tmp/peers.err"; fail "with stand-in peers it exited $?"; }
verdict=$(
    python3 - "$tmp/peers.json" <<'EOF'
import json, sys
out = json.load(open(sys.argv[1]))
rows = {(r["engine"], r["format"], r["batch"]): r for r in out["rows"]}
def need(cond, what):
    if not cond:
        print("bad: " + what)
        sys.exit(0)
need(("llama.cpp", "fp32", 1) in rows and rows[("llama.cpp", "fp32", 1)]["tok_s"] == 100.0,
     "llama-bench's avg_ts")
need(rows.get(("llama.cpp", "fp32", 4), {}).get("tok_s") == 400.0, "batched-bench's speed_tg")
need(rows.get(("llama2.c", "fp32", 1), {}).get("tok_s") == 50.0, "run's achieved tok/s")
mine = rows[("llmserve", "fp32", 4)]["tok_s"]
need(abs(rows[("llama.cpp", "fp32", 4)]["llmserve_over_peer"] - mine / 400.0) < 1e-9,
     "the ratio llmserve / llama.cpp")
need(any(f["engine"] == "llama2.c" and f["format"] == "q8_0" and "segfault" in f["error"]
         for f in out["failures"]), "runq's failure and its message")
need(out["read_bandwidth_gb_s"] > 0, "read bandwidth")
print("ok")
EOF
)
[ "$verdict" = ok ] || { cat "$tmp/peers.json" "$tmp/peers.err"; fail "stand-in peers: $verdict"; }
echo "ok: peers' outputs read, ratios from the same rounds, a failing peer named"

# 3. Bad flags: exit 2 with the reason.
bash "$repo/tools/peerbench.sh" --rounds 0 >/dev/null 2>"$tmp/bad.err"
rc=$?
[ $rc = 2 ] || fail "--rounds 0 exited $rc, not 2"
grep -q "rounds wants a positive integer" "$tmp/bad.err" || fail "no reason for --rounds 0"
echo "ok: bad flags"
