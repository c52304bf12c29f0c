#!/usr/bin/env bash
# tests/integration/test_servebench.sh BUILD_DIR - tools/prefixbench.sh and
# tools/prioritybench.sh at their smallest, through servebench against real instances of
# the tiny model: both exit 0 (no request failed, every request ended once, the cached
# and uncached instances gave the same greedy tokens), print their reports, and only the
# cached instance reports prompt tokens from its cache; servebench
# refuses instances it cannot compare with exit 2.  About 15 s.
set -uo pipefail
build=$(cd "${1:?usage: test_servebench.sh BUILD_DIR}" && pwd)
repo=$(cd "$(dirname "$0")/../.." && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() {
    echo "FAIL: $*"
    exit 1
}

# 1. prefix: two instances, a short prefix, two rounds.
ROUNDS=2 REQUESTS=3 CONCURRENCY=2 PREFIX_TOKENS=200 MAX_TOKENS=8 \
    bash "$repo/tools/prefixbench.sh" "$build" >"$tmp/prefix.txt" 2>"$tmp/prefix.err"
rc=$?
cat "$tmp/prefix.txt"
[ $rc = 0 ] || { cat "$tmp/prefix.err"; fail "prefixbench.sh exited $rc"; }
grep -q '^outputs identical: yes (12 requests compared, 0 differ)$' "$tmp/prefix.txt" ||
    fail "outputs not reported identical for all 12 requests (2 rounds of 1 + 3 + 2)"
for side in cached uncached; do
    grep -Eq "^  $side +one at a time +[0-9.]+ +[0-9.]+ +[0-9.]+ +[0-9.]+ +[0-9.]+ +6 +0$" \
        "$tmp/prefix.txt" || fail "no row of 6 requests one at a time for $side"
    grep -Eq "^  $side +concurrent 2 +.* 4 +0$" "$tmp/prefix.txt" ||
        fail "no row of 4 concurrent requests for $side"
    grep -q "^errors ($side): none$" "$tmp/prefix.txt" || fail "errors on $side"
done
grep -Eq '^uncached / cached TTFT \(one at a time\): p50 x[0-9.]+  p95 x[0-9.]+$' \
    "$tmp/prefix.txt" || fail "no ratio line"
# the cache held the shared prefix's whole blocks for the cached instance, nothing for the
# other (after "one at a time": TTFT p50, p95, mean, cached tokens, usage's cached tokens)
awk '$1 == "cached" && $2 == "one" {exit !($9 > 0 && $10 > 0)}' "$tmp/prefix.txt" ||
    fail "the cached instance reported no cached prompt tokens"
awk '$1 == "uncached" && $2 == "one" {exit !($9 == 0 && $10 == 0)}' "$tmp/prefix.txt" ||
    fail "the uncached instance reported cached prompt tokens"

# 2. priority: one round of each phase, one second of probing.
ROUNDS=1 DURATION_S=1 INTERVAL_MS=100 MAX_BATCH=2 BATCH_TOKENS=64 \
    bash "$repo/tools/prioritybench.sh" "$build" >"$tmp/priority.txt" 2>"$tmp/priority.err"
rc=$?
cat "$tmp/priority.txt"
[ $rc = 0 ] || { cat "$tmp/priority.err"; fail "prioritybench.sh exited $rc"; }
for phase in priorities "no priorities"; do
    grep -Eq "^  $phase +[0-9.]+ +[0-9.]+ +[0-9.]+ +10/10 +[0-9]+ +0$" "$tmp/priority.txt" ||
        fail "no row with 10 of 10 probes and no errors for $phase"
done
grep -Eq '^no priorities / priorities: probe TTFT p95 x[0-9.]+' "$tmp/priority.txt" ||
    fail "no ratio line"

# 3. Instances that cannot be compared: exit 2 with the reason, before any request.
mm="$build/tools/modelmaker/llmserve-modelmaker"
"$mm" --preset tiny --seq-len 2048 --seed 1 --out "$tmp/m.bin" --tokenizer-out "$tmp/tok.bin" \
    >/dev/null 2>&1 || fail "modelmaker"
"$build/services/inference/llmserve-inference" --listen 127.0.0.1:0 --model "$tmp/m.bin" \
    --tokenizer "$tmp/tok.bin" --cpu-threads 1 >"$tmp/inf.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; rm -rf "$tmp"' EXIT
for _ in $(seq 1 100); do
    grep -q '^SERVING$' "$tmp/inf.log" && break
    sleep 0.1
done
port=$(sed -n 's/^LISTENING port=//p' "$tmp/inf.log")
[ -n "$port" ] || fail "the instance did not start"
"$build/tools/servebench/servebench" prefix --cached "127.0.0.1:$port" \
    --uncached "127.0.0.1:$port" >"$tmp/same.txt" 2>"$tmp/same.err"
rc=$?
[ $rc = 2 ] || fail "one instance as both sides: exit $rc, not 2"
grep -q 'must have the prefix cache and --uncached not' "$tmp/same.err" ||
    fail "no reason for refusing: $(cat "$tmp/same.err")"
"$build/tools/servebench/servebench" fastest >/dev/null 2>&1
rc=$?
[ $rc = 2 ] || fail "an unknown mode: exit $rc, not 2"
echo "ok: servebench prefix and priority"
