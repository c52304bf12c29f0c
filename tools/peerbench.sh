#!/usr/bin/env bash
# tools/peerbench.sh - llmserve's forward pass against llama.cpp and llama2.c on the same
# weights, in the same sitting.
#
# The model maker writes one fp32 checkpoint and its Q8_0 twin from the same seed (so the
# same weights, the second rounded to int8), of a shape preset (default stories110M).
# llmserve-modelbench runs both.  Each peer runs them when its binaries are given:
#
#   llama.cpp  the fp32 checkpoint converted to GGUF f32 by llama-convert-llama2c-to-ggml
#              (vocabulary: the model maker's tokenizer.bin, which the converter reads as a
#              llama2.c tokenizer), then to Q8_0 by llama-quantize; B=1 decode from
#              llama-bench (-p 0 -n N: token generation only), B>1 from llama-batched-bench
#              (its S_TG column: aggregate tokens/s of the decode steps);
#   llama2.c   run.c on the fp32 file, runq.c on the Q8_0 file (single stream only; both
#              report "achieved tok/s" on stderr), greedy, threads through OMP_NUM_THREADS.
#
# Every engine runs once per round, in the same order in odd rounds and the reverse in
# even ones, after a warm-up round that is not counted; the table gives each figure's
# median over the rounds, and llmserve / peer as the median of the per-round ratios, so
# drift in the machine's load falls on both sides of a ratio.  modelbench's read
# bandwidth (measured in each of its runs) gives the bound one stream cannot beat,
# bandwidth / weight bytes per decode step, and each engine's single-stream decode is
# shown as a fraction of it.
#
# An engine that fails (a peer that cannot read the file, a modelbench whose backend
# does not run Q8_0) is reported with its error and left out of later rounds; the others
# go on.  Exit status: 0 when the fp32 llmserve figures were measured, 1 otherwise, 2 for
# bad flags.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: tools/peerbench.sh [options]

Runs llmserve-modelbench and, where given, llama.cpp and llama2.c on the same model-maker
weights (fp32 and Q8_0), alternating engines per round, and prints decode tokens/s per
engine, format and batch size, with llmserve / peer ratios.

  --build DIR              llmserve build tree (default: build)
  --modelbench PATH        llmserve-modelbench (default: DIR/tools/modelbench/llmserve-modelbench)
  --modelmaker PATH        llmserve-modelmaker (default: DIR/tools/modelmaker/llmserve-modelmaker)
  --preset NAME            model-maker shape: tiny, stories15M, stories110M (default stories110M)
  --seed N                 weight seed, the same for both formats (default 42)
  --formats LIST           fp32,q8_0 or one of them (default fp32,q8_0)
  --rounds N               counted rounds (default 3)
  --warmup N               rounds run first and not counted (default 1)
  --threads N              threads for every engine (default: all online cores)
  --batches LIST           batch sizes (default 1,4,16,32)
  --decode-tokens N        single-stream decode tokens (default 128)
  --batch-prompt N         prompt tokens of each sequence of a batched run (default 16)
  --batch-steps N          decode steps of a batched run (default 32)
  --bw-mib N               modelbench's read-bandwidth buffer (MiB; default modelbench's own)
  --llama-bench PATH       llama.cpp's llama-bench (B=1)
  --llama-batched-bench PATH  llama.cpp's llama-batched-bench (B>1)
  --llama2c-convert PATH   llama.cpp's llama-convert-llama2c-to-ggml (needed for llama.cpp)
  --llama-quantize PATH    llama.cpp's llama-quantize (needed for llama.cpp Q8_0)
  --llama-cpp DIR          all four above from DIR/build/bin
  --run PATH               llama2.c's run (fp32)
  --runq PATH              llama2.c's runq (Q8_0)
  --llama2c DIR            both from DIR/run and DIR/runq
  --work DIR               keep checkpoints and raw logs in DIR (default: a temporary
                           directory, removed at exit)
  --json                   print one JSON object on stdout instead of the table
  --quick                  stories15M, 1 round, no warm-up, 64 decode tokens, 16 batch
                           steps (a smoke run; later flags still override)
  -h, --help               this text
EOF
}

die() {
    echo "peerbench: $*" >&2
    exit 2
}
say() { echo "peerbench: $*" >&2; }

build=build
modelbench='' modelmaker=''
preset=stories110M seed=42 formats=fp32,q8_0 rounds=3 warmup=1 threads=
batches=1,4,16,32 decode_tokens=128 batch_prompt=16 batch_steps=32 bw_mib=''
llama_bench='' llama_batched='' llama_convert='' llama_quantize='' run_bin='' runq_bin=''
work='' json=0
# --quick sets defaults first, so flags given anywhere on the line still win
for a in "$@"; do
    if [ "$a" = --quick ]; then
        preset=stories15M rounds=1 warmup=0 decode_tokens=64 batch_steps=16
    fi
done
while [ $# -gt 0 ]; do
    opt=$1
    case $opt in
    -h | --help) usage; exit 0 ;;
    --quick) shift; continue ;;
    --json) json=1; shift; continue ;;
    --build | --modelbench | --modelmaker | --preset | --seed | --formats | --rounds | --warmup | \
        --threads | --batches | --decode-tokens | --batch-prompt | --batch-steps | --bw-mib | \
        --llama-bench | --llama-batched-bench | --llama2c-convert | --llama-quantize | \
        --llama-cpp | --run | --runq | --llama2c | --work) ;;
    *) die "unknown option $opt (see --help)" ;;
    esac
    [ $# -ge 2 ] || die "$opt needs a value (see --help)"
    val=$2
    case $opt in
    --build) build=$val ;;
    --modelbench) modelbench=$val ;;
    --modelmaker) modelmaker=$val ;;
    --preset) preset=$val ;;
    --seed) seed=$val ;;
    --formats) formats=$val ;;
    --rounds) rounds=$val ;;
    --warmup) warmup=$val ;;
    --threads) threads=$val ;;
    --batches) batches=$val ;;
    --decode-tokens) decode_tokens=$val ;;
    --batch-prompt) batch_prompt=$val ;;
    --batch-steps) batch_steps=$val ;;
    --bw-mib) bw_mib=$val ;;
    --llama-bench) llama_bench=$val ;;
    --llama-batched-bench) llama_batched=$val ;;
    --llama2c-convert) llama_convert=$val ;;
    --llama-quantize) llama_quantize=$val ;;
    --llama-cpp)
        llama_bench=$val/build/bin/llama-bench llama_batched=$val/build/bin/llama-batched-bench
        llama_convert=$val/build/bin/llama-convert-llama2c-to-ggml
        llama_quantize=$val/build/bin/llama-quantize
        ;;
    --run) run_bin=$val ;;
    --runq) runq_bin=$val ;;
    --llama2c) run_bin=$val/run runq_bin=$val/runq ;;
    --work) work=$val ;;
    esac
    shift 2
done

posint() { [[ $2 =~ ^[1-9][0-9]*$ ]] || die "$1 wants a positive integer, not \"$2\""; }
[[ $seed =~ ^[0-9]+$ ]] || die "--seed wants a non-negative integer, not \"$seed\""
posint --rounds "$rounds"
[[ $warmup =~ ^[0-9]+$ ]] || die "--warmup wants a count, not \"$warmup\""
posint --decode-tokens "$decode_tokens"
posint --batch-prompt "$batch_prompt"
posint --batch-steps "$batch_steps"
[ -z "$bw_mib" ] || posint --bw-mib "$bw_mib"
[ -z "$threads" ] && threads=$(nproc)
posint --threads "$threads"
[[ $batches =~ ^[1-9][0-9]*(,[1-9][0-9]*)*$ ]] || die "--batches wants sizes like 1,4,16,32"
for f in ${formats//,/ }; do
    case $f in fp32 | q8_0) ;; *) die "--formats: unknown format \"$f\" (fp32, q8_0)" ;; esac
done
has_format() { [[ ,$formats, == *,$1,* ]]; }

modelbench=${modelbench:-$build/tools/modelbench/llmserve-modelbench}
modelmaker=${modelmaker:-$build/tools/modelmaker/llmserve-modelmaker}
need_exe() { # FLAG PATH: PATH is empty (not asked for) or an executable
    [ -z "$2" ] || [ -x "$2" ] || die "$1: $2 is not an executable file"
}
need_exe --modelbench "$modelbench"
need_exe --modelmaker "$modelmaker"
for pair in "--llama-bench:$llama_bench" "--llama-batched-bench:$llama_batched" \
    "--llama2c-convert:$llama_convert" "--llama-quantize:$llama_quantize" "--run:$run_bin" \
    "--runq:$runq_bin"; do
    need_exe "${pair%%:*}" "${pair#*:}"
done
if { [ -n "$llama_bench" ] || [ -n "$llama_batched" ]; } && [ -z "$llama_convert" ]; then
    die "llama.cpp needs --llama2c-convert to make its GGUF file from the checkpoint"
fi
command -v python3 >/dev/null || die "python3 is needed for the summary"

if [ -n "$work" ]; then
    mkdir -p "$work"
    work=$(cd "$work" && pwd)
else
    work=$(mktemp -d /tmp/peerbench.XXXXXX)
    trap 'rm -rf "$work"' EXIT
fi
: >"$work/results.tsv"
: >"$work/failed.tsv"
: >"$work/meta.tsv"
meta() { printf '%s\t%s\n' "$1" "$2" >>"$work/meta.tsv"; }
fail_note() { # ENGINE FORMAT LOG WHAT: reports an engine's failure and drops it
    local msg
    msg=$(grep -v '^[[:space:]]*$' "$3" 2>/dev/null | grep -iv 'level=info' | tail -n 3 | tr '\n' ' ' || true)
    say "$1 $2: $4 failed: ${msg:-no message} (log: $3)"
    printf '%s\t%s\t%s\n' "$1" "$2" "$4 failed: ${msg:-no message}" >>"$work/failed.tsv"
}

# ---- the checkpoints -----------------------------------------------------------------
say "making the $preset checkpoints (seed $seed) in $work"
if ! "$modelmaker" --preset "$preset" --seed "$seed" --out "$work/model-fp32.bin" \
    --tokenizer-out "$work/tokenizer.bin" >"$work/modelmaker-fp32.log" 2>&1; then
    cat "$work/modelmaker-fp32.log" >&2
    echo "peerbench: the model maker failed" >&2
    exit 1
fi
group_size=0
if has_format q8_0; then
    if "$modelmaker" --preset "$preset" --seed "$seed" --quantize q8_0 \
        --out "$work/model-q8_0.bin" >"$work/modelmaker-q8_0.log" 2>&1; then
        # ak42 version 2 header: magic, version, 7 x int32 shape, shared byte, group size
        group_size=$(python3 -c 'import struct, sys
h = open(sys.argv[1], "rb").read(41)
print(struct.unpack_from("<i", h, 37)[0])' "$work/model-q8_0.bin")
    else
        fail_note llmserve q8_0 "$work/modelmaker-q8_0.log" "the model maker (--quantize q8_0)"
        formats=fp32
    fi
fi
meta group_size "${group_size:-0}"

# llama.cpp's files.  The converter takes the vocabulary from a GGUF model or, failing
# that, reads the file as a llama2.c tokenizer.bin; the model maker's has the vocabulary
# size of the checkpoint, which is all the converter checks.  It writes 128 as the
# training context; llama.cpp then warns that the benchmark's context is longer, which
# changes nothing here (RoPE is not scaled unless asked).
gguf_fp32='' gguf_q8_0=''
if [ -n "$llama_convert" ] && { [ -n "$llama_bench" ] || [ -n "$llama_batched" ]; }; then
    say "converting to GGUF f32 with $llama_convert"
    if (cd "$work" && "$llama_convert" --copy-vocab-from-model tokenizer.bin \
        --llama2c-model model-fp32.bin --llama2c-output-model model-f32.gguf) \
        >"$work/convert.log" 2>&1 && [ -s "$work/model-f32.gguf" ]; then
        gguf_fp32=$work/model-f32.gguf
    else
        fail_note llama.cpp fp32 "$work/convert.log" "llama-convert-llama2c-to-ggml"
    fi
    if has_format q8_0 && [ -n "$gguf_fp32" ]; then
        if [ -z "$llama_quantize" ]; then
            say "llama.cpp q8_0: skipped, no --llama-quantize"
        elif "$llama_quantize" "$gguf_fp32" "$work/model-q8_0.gguf" Q8_0 "$threads" \
            >"$work/quantize.log" 2>&1; then
            gguf_q8_0=$work/model-q8_0.gguf
        else
            fail_note llama.cpp q8_0 "$work/quantize.log" "llama-quantize"
        fi
    fi
fi

# ---- the engines ---------------------------------------------------------------------
# One job is one engine on one format, measuring every batch size it can.  Each writes
# "ROUND ENGINE FORMAT BATCH TOK_S" lines to results.tsv.
IFS=, read -r -a batch_list <<<"$batches"
max_batch=1 big_batches=
for b in "${batch_list[@]}"; do
    [ "$b" -gt "$max_batch" ] && max_batch=$b
    [ "$b" -gt 1 ] && big_batches=${big_batches:+$big_batches,}$b
done
has_batch1() { [[ ,$batches, == *,1,* ]]; }
# per-job limit: a peer that hangs must not hold the rest
job_timeout=${PEERBENCH_JOB_TIMEOUT:-900}

record() { printf '%s\t%s\t%s\t%s\t%s\n' "$@" >>"$work/results.tsv"; }

job_llmserve() { # ROUND FORMAT
    local log=$work/modelbench-$2-r$1
    if ! timeout "$job_timeout" "$modelbench" --model "$work/model-$2.bin" --threads "$threads" \
        --repeats 1 --json --batches "$batches" --decode-tokens "$decode_tokens" \
        --batch-prompt "$batch_prompt" --batch-steps "$batch_steps" ${bw_mib:+--bw-mib "$bw_mib"} \
        >"$log.json" 2>"$log.err"; then
        cat "$log.json" >>"$log.err"
        fail_note llmserve "$2" "$log.err" "llmserve-modelbench"
        return 1
    fi
    python3 - "$1" "$2" "$log.json" >>"$work/results.tsv" <<'EOF'
import json, sys
r, fmt, path = sys.argv[1:]
m = json.load(open(path))
print("%s\tllmserve\t%s\t1\t%s" % (r, fmt, m["decode_tok_s"]))
for b in m["batches"]:
    if b["batch"] > 1:
        print("%s\tllmserve\t%s\t%d\t%s" % (r, fmt, b["batch"], b["tok_s"]))
print("%s\tbandwidth\t%s\t0\t%s" % (r, fmt, m["read_bandwidth_gb_s"]))
print("%s\tweight_bytes\t%s\t0\t%s" % (r, fmt, m["weight_bytes_per_step"]))
EOF
}

job_llama_cpp() { # ROUND FORMAT GGUF
    local log=$work/llama-$2-r$1
    if [ -n "$llama_bench" ] && has_batch1; then
        if ! timeout "$job_timeout" "$llama_bench" -m "$3" -p 0 -n "$decode_tokens" -r 1 \
            -t "$threads" -o json >"$log-bench.json" 2>"$log-bench.err"; then
            fail_note llama.cpp "$2" "$log-bench.err" "llama-bench"
            return 1
        fi
        python3 - "$1" "$2" "$log-bench.json" >>"$work/results.tsv" <<'EOF'
import json, sys
r, fmt, path = sys.argv[1:]
for t in json.load(open(path)):
    if t["n_prompt"] == 0 and t["n_gen"] > 0:
        print("%s\tllama.cpp\t%s\t1\t%s" % (r, fmt, t["avg_ts"]))
EOF
    fi
    if [ -n "$llama_batched" ] && [ -n "$big_batches" ]; then
        # every sequence has its own prompt and KV cells, as in modelbench's batched run
        local ctx=$((max_batch * (batch_prompt + batch_steps)))
        ctx=$(((ctx + 255) / 256 * 256))
        if ! timeout "$job_timeout" "$llama_batched" -m "$3" -c "$ctx" -b 2048 -ub 512 \
            -npp "$batch_prompt" -ntg "$batch_steps" -npl "$big_batches" -t "$threads" \
            -tb "$threads" --output-format jsonl >"$log-batched.out" 2>&1; then
            fail_note llama.cpp "$2" "$log-batched.out" "llama-batched-bench"
            return 1
        fi
        python3 - "$1" "$2" "$log-batched.out" >>"$work/results.tsv" <<'EOF'
import json, sys
r, fmt, path = sys.argv[1:]
for line in open(path):
    if line.startswith("{") and "speed_tg" in line:
        t = json.loads(line)
        print("%s\tllama.cpp\t%s\t%d\t%s" % (r, fmt, t["pl"], t["speed_tg"]))
EOF
    fi
}

job_llama2c() { # ROUND FORMAT BINARY: one stream, greedy, no prompt (BOS, then generated)
    local log=$work/llama2c-$2-r$1.err tps
    # -n counts positions, BOS included; run.c stops early only if it samples BOS
    if ! OMP_NUM_THREADS=$threads timeout "$job_timeout" "$3" "$work/model-$2.bin" \
        -z "$work/tokenizer.bin" -n "$((decode_tokens + 1))" -t 0 >/dev/null 2>"$log"; then
        fail_note llama2.c "$2" "$log" "$(basename "$3")"
        return 1
    fi
    tps=$(sed -n 's/^achieved tok\/s: \([0-9.]*\).*/\1/p' "$log")
    if [ -z "$tps" ]; then
        fail_note llama2.c "$2" "$log" "$(basename "$3") (no 'achieved tok/s' line)"
        return 1
    fi
    record "$1" llama2.c "$2" 1 "$tps"
}

jobs=()
for f in ${formats//,/ }; do
    jobs+=("llmserve $f")
    g=
    [ "$f" = fp32 ] && g=$gguf_fp32
    [ "$f" = q8_0 ] && g=$gguf_q8_0
    [ -n "$g" ] && jobs+=("llama.cpp $f $g")
    if has_batch1; then
        [ "$f" = fp32 ] && [ -n "$run_bin" ] && jobs+=("llama2.c fp32 $run_bin")
        [ "$f" = q8_0 ] && [ -n "$runq_bin" ] && jobs+=("llama2.c q8_0 $runq_bin")
    fi
done

declare -A dead=()
run_job() { # ROUND "ENGINE FORMAT [ARG]"
    local r=$1 engine fmt arg
    read -r engine fmt arg <<<"$2"
    [ -n "${dead[$engine $fmt]:-}" ] && return 0
    case $engine in
    llmserve) job_llmserve "$r" "$fmt" || dead[$engine $fmt]=1 ;;
    llama.cpp) job_llama_cpp "$r" "$fmt" "$arg" || dead[$engine $fmt]=1 ;;
    llama2.c) job_llama2c "$r" "$fmt" "$arg" || dead[$engine $fmt]=1 ;;
    esac
}

total=$((warmup + rounds))
for ((i = 1; i <= total; i++)); do
    # warm-up rounds are numbered 0 and left out of the summary
    r=$((i > warmup ? i - warmup : 0))
    order=("${jobs[@]}")
    if [ $((i % 2)) = 0 ]; then
        order=()
        for ((k = ${#jobs[@]} - 1; k >= 0; k--)); do order+=("${jobs[k]}"); done
    fi
    say "round $i of $total$([ $r = 0 ] && echo ' (warm-up)'): $(printf '%s; ' "${order[@]%% /*}")"
    for j in "${order[@]}"; do
        run_job "$r" "$j"
    done
done

# ---- the summary ---------------------------------------------------------------------
meta preset "$preset"
meta seed "$seed"
meta threads "$threads"
meta rounds "$rounds"
meta warmup "$warmup"
meta decode_tokens "$decode_tokens"
meta batch_prompt "$batch_prompt"
meta batch_steps "$batch_steps"
meta batches "$batches"
meta formats "$formats"
meta work "$work"
# llama2.c legacy header: dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size
# (negative for a separate classifier), seq_len, all int32
shape=$(python3 -c 'import struct, sys
h = struct.unpack("<7i", open(sys.argv[1], "rb").read(28))
print(*h[:5], abs(h[5]))' "$work/model-fp32.bin")
meta shape "$shape"

python3 - "$work" "$json" <<'EOF'
import json, statistics, sys
from collections import defaultdict

work, as_json = sys.argv[1], sys.argv[2] == "1"
meta = dict(l.rstrip("\n").split("\t", 1) for l in open(work + "/meta.tsv"))
fails = [l.rstrip("\n").split("\t", 2) for l in open(work + "/failed.tsv") if l.strip()]
runs = defaultdict(dict)  # (engine, format, batch) -> {round: tok/s}
for l in open(work + "/results.tsv"):
    r, engine, fmt, batch, v = l.split("\t")
    if int(r) > 0:
        runs[(engine, fmt, int(batch))][int(r)] = float(v)

# weight bytes one decode step reads, by engine and format (modelbench's count: every
# matrix and the classifier once, the norms; no embedding row, no KV cache)
dim, hidden, layers, heads, kv_heads, vocab = map(int, meta["shape"].split())
kv = dim * kv_heads // heads
matrix = layers * (2 * dim * dim + 2 * kv * dim + 3 * dim * hidden) + vocab * dim
norms = layers * 2 * dim + dim
gs = int(meta.get("group_size") or 0)
def weight_bytes(engine, fmt):
    if fmt == "fp32":
        return 4.0 * (matrix + norms)
    # llmserve and runq: int8 plus an fp32 scale per group; llama.cpp's Q8_0: blocks of
    # 32 int8 with an fp16 scale
    per = 34.0 / 32 if engine == "llama.cpp" else 1 + 4.0 / gs
    return per * matrix + 4.0 * norms

bw_runs = list(runs.get(("bandwidth", "fp32", 0), {}).values()) + \
          list(runs.get(("bandwidth", "q8_0", 0), {}).values())
bw = statistics.median(bw_runs) * 1e9 if bw_runs else None

engines = ["llmserve", "llama.cpp", "llama2.c"]
rows = []
for fmt in ["fp32", "q8_0"]:
    for batch in sorted({k[2] for k in runs if k[1] == fmt and k[0] in engines}):
        base = runs.get(("llmserve", fmt, batch), {})
        for engine in engines:
            got = runs.get((engine, fmt, batch))
            if not got:
                continue
            v = list(got.values())
            row = {"engine": engine, "format": fmt, "batch": batch,
                   "tok_s": statistics.median(v), "min": min(v), "max": max(v),
                   "rounds": len(v)}
            ratios = [base[r] / got[r] for r in got if r in base and got[r] > 0]
            if engine != "llmserve" and ratios:
                row["llmserve_over_peer"] = statistics.median(ratios)
                row["ratio_rounds"] = len(ratios)
                # the two disagree when one side had a bad round: read both
                row["llmserve_over_peer_of_medians"] = statistics.median(base.values()) / row["tok_s"]
            if batch == 1 and bw:
                wb = weight_bytes(engine, fmt)
                row["weight_bytes_per_step"] = wb
                row["bound_tok_s"] = bw / wb
                row["of_bound"] = row["tok_s"] / (bw / wb)
            rows.append(row)

out = {"preset": meta["preset"], "seed": int(meta["seed"]), "threads": int(meta["threads"]),
       "rounds": int(meta["rounds"]), "warmup_rounds": int(meta["warmup"]),
       "decode_tokens": int(meta["decode_tokens"]), "batch_prompt": int(meta["batch_prompt"]),
       "batch_steps": int(meta["batch_steps"]), "q8_0_group_size": gs,
       "read_bandwidth_gb_s": bw / 1e9 if bw else None,
       "bandwidth_runs_gb_s": bw_runs, "rows": rows,
       "failures": [{"engine": e, "format": f, "error": m} for e, f, m in fails]}
if as_json:
    print(json.dumps(out))
else:
    print("peerbench: %s shape (dim %d, hidden %d, %d layers, vocab %d), seed %s, %s threads, "
          "%s rounds after %s warm-up, engines alternating"
          % (meta["preset"], dim, hidden, layers, vocab, meta["seed"], meta["threads"],
             meta["rounds"], meta["warmup"]))
    print("decode tokens/s (B=1: one stream, %s tokens; B>1: aggregate over %s steps after "
          "%s-token prompts); median [min-max]; llmserve/peer: median of the per-round "
          "ratios (and ratio of the medians)"
          % (meta["decode_tokens"], meta["batch_steps"], meta["batch_prompt"]))
    print("%-10s %-6s %4s %10s %21s %20s" % ("engine", "format", "B", "tok/s", "[min-max]",
                                            "llmserve/peer"))
    for row in rows:
        ratio = "-"
        if "llmserve_over_peer" in row:
            ratio = "%.2f (%.2f)" % (row["llmserve_over_peer"],
                                     row["llmserve_over_peer_of_medians"])
        print("%-10s %-6s %4d %10.1f %21s %20s" % (row["engine"], row["format"], row["batch"],
              row["tok_s"], "[%.1f-%.1f]" % (row["min"], row["max"]), ratio))
    if bw:
        print("read bandwidth measured by llmserve-modelbench: %.1f GB/s (median of %d runs, "
              "%.1f-%.1f)" % (bw / 1e9, len(bw_runs), min(bw_runs), max(bw_runs)))
        print("single stream against the bound (bandwidth / weight bytes per decode step):")
        for row in rows:
            if "of_bound" in row:
                print("  %-10s %-6s %7.1f MiB/step  bound %7.1f tok/s  decode %7.1f tok/s = "
                      "%.2f of bound" % (row["engine"], row["format"],
                      row["weight_bytes_per_step"] / 2**20, row["bound_tok_s"], row["tok_s"],
                      row["of_bound"]))
    else:
        print("no read bandwidth: llmserve-modelbench measured none")
    for e, f, m in fails:
        print("not measured: %s %s: %s" % (e, f, m))
ok = any(r["engine"] == "llmserve" and r["format"] == "fp32" for r in rows)
sys.exit(0 if ok else 1)
EOF
