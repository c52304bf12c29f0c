#!/usr/bin/env bash
# tests/integration/test_semcachebench.sh BUILD_DIR DATA_DIR - llmserve-semcachebench on the
# semantic-cache tuning set: the per-category table with intervals, JSON, the vetoes by
# reason, that the guards turn down hard negatives (fewer false hits than similarity
# alone, no paraphrase found for another prompt), that word normalization finds more
# paraphrases, and bad input refused with exit 1 or 2.
set -uo pipefail
bench="${1:?usage: test_semcachebench.sh BUILD_DIR DATA_DIR}/tools/semcachebench/llmserve-semcachebench"
data="${2:?usage: test_semcachebench.sh BUILD_DIR DATA_DIR}/semcache_tune.tsv"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() {
    echo "FAIL: $*"
    exit 1
}

"$bench" --data "$data" >"$tmp/on.txt" 2>"$tmp/on.err" || fail "guards on: exit $?"
"$bench" --data "$data" --no-guards >"$tmp/off.txt" 2>"$tmp/off.err" || fail "guards off: exit $?"
cat "$tmp/on.txt"
for c in reorder synonym typo polite mixed; do
    grep -Eq "^P +$c +[0-9]+ +[0-9]+ +[01]\.[0-9]{3}  \[[01]\.[0-9]{3}, [01]\.[0-9]{3}\]$" "$tmp/on.txt" ||
        fail "no row for paraphrase category $c"
done
for c in number negation role entity unit; do
    grep -Eq "^N +$c +[0-9]+ " "$tmp/on.txt" || fail "no row for negative category $c"
done
false_on=$(awk '$1 == "N" && $2 == "all" {print $4}' "$tmp/on.txt")
false_off=$(awk '$1 == "N" && $2 == "all" {print $4}' "$tmp/off.txt")
[ -n "$false_on" ] && [ -n "$false_off" ] || fail "no totals"
[ "$false_on" -lt "$false_off" ] || fail "guards did not lower false hits ($false_on vs $false_off)"
grep -q "^paraphrases that found another pair's stored prompt: 0$" "$tmp/on.txt" ||
    fail "a paraphrase found another prompt"
for r in number unit negation entity order; do
    grep -Eq "^  $r +negatives +[0-9]+ +paraphrases +[0-9]+$" "$tmp/on.txt" || fail "no veto row $r"
done
"$bench" --data "$data" --json >"$tmp/on.json" || fail "--json: exit $?"
/usr/bin/python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["guards"] is True and len(d["categories"]) == 10 and d["false_hits"] >= 0' "$tmp/on.json" ||
    fail "--json is not the expected object"
"$bench" --data "$data" --sweep | grep -Eq "^ +0\.80 +[0-9]+/" || fail "--sweep has no 0.80 row"

# word normalization (WordNet and stems, on by default as in the service) finds more
# paraphrases than the words as written, with no more false hits
/usr/bin/python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert d["wordnet"] is True and d["stem"] is True' "$tmp/on.json" ||
    fail "--json should say WordNet and stems are on (is wordnet-base installed?)"
"$bench" --data "$data" --wordnet none --no-stem >"$tmp/plain.txt" || fail "--wordnet none: exit $?"
hits_on=$(awk '$1 == "P" && $2 == "all" {print $4}' "$tmp/on.txt")
hits_plain=$(awk '$1 == "P" && $2 == "all" {print $4}' "$tmp/plain.txt")
false_plain=$(awk '$1 == "N" && $2 == "all" {print $4}' "$tmp/plain.txt")
[ "$hits_on" -gt "$hits_plain" ] || fail "normalization found no more paraphrases ($hits_on vs $hits_plain)"
[ "$false_on" -le "$false_plain" ] || fail "normalization added false hits ($false_on vs $false_plain)"
grep -q "WordNet off, stems off)" "$tmp/plain.txt" || fail "the header should say WordNet and stems are off"
"$bench" --data "$data" --wordnet /nonexistent-wordnet >/dev/null 2>"$tmp/wn.err"
[ $? = 1 ] || fail "a missing WordNet directory should exit 1"
grep -q "/nonexistent-wordnet/index.noun" "$tmp/wn.err" || fail "the error should name the file"
# the dense index of the same space answers as the sparse one (tested bit for bit in
# test_cache_semantic); the old service's dense 512-float index still runs
"$bench" --data "$data" --dim 4096 --json >"$tmp/s4096.json" || fail "--dim 4096: exit $?"
"$bench" --data "$data" --dim 4096 --dense --json >"$tmp/d4096.json" || fail "--dense: exit $?"
/usr/bin/python3 -c 'import json,sys; s=json.load(open(sys.argv[1])); d=json.load(open(sys.argv[2])); assert s["index"] == "sparse" and d["index"] == "dense"; del s["index"], d["index"]; assert s == d, (s, d)' "$tmp/s4096.json" "$tmp/d4096.json" ||
    fail "sparse and dense indexes of one space disagree"
"$bench" --data "$data" --dense --dim 512 | grep -q "dim 512, dense index, WordNet on, stems on" || fail "--dense --dim 512"
"$bench" --data "$data" --dense --dim 1048576 >/dev/null 2>&1
[ $? = 2 ] || fail "--dense with a 2^20 space should exit 2"
"$bench" --data "$data" --latency 300 >"$tmp/lat.txt" || fail "--latency: exit $?"
grep -Eq "^  sparse index \(dim 1048576\): +p50 +[0-9.]+ us  p99 +[0-9.]+ us" "$tmp/lat.txt" ||
    fail "--latency has no sparse row"
grep -Eq "^  dense baseline \(dim 512\): +p50 " "$tmp/lat.txt" || fail "--latency has no baseline row"
grep -Eq "^  dense baseline / sparse index: p50 [0-9.]+x, p99 [0-9.]+x$" "$tmp/lat.txt" ||
    fail "--latency has no ratio"

printf 'P\treorder\tonly three fields\n' >"$tmp/bad.tsv"
"$bench" --data "$tmp/bad.tsv" >/dev/null 2>"$tmp/bad.err"
[ $? = 1 ] || fail "a malformed line should exit 1"
grep -q "bad.tsv:1:" "$tmp/bad.err" || fail "the error should name the line"
"$bench" --data /nonexistent.tsv >/dev/null 2>&1
[ $? = 1 ] || fail "a missing file should exit 1"
"$bench" >/dev/null 2>&1
[ $? = 2 ] || fail "no --data should exit 2"
echo "test_semcachebench: ok"
