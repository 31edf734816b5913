#!/usr/bin/env bash
# Side by side with llama.cpp on the same weights (issue 11): RUNS pairs of one llama.cpp run
# (../shared/tools/peer/llamacpp_bench.mjs, Q8_0 GGUF of the checkpoint, 2 threads) and one
# bench_engine run (2 threads), back to back, each with the load average when it started; prints
# one table (prefill of a 512-token prompt, decode at batch 1, 8, 32) and the ratio of each pair.
#
# usage (from the repository root, after building moemesh and bench_engine):
#   bench/engine/run_vs_llamacpp.sh [RUNS]
# environment: MODEL (checkpoint dir, made when missing; default /tmp/moemesh-bench-ckpt),
#   GGUF (its Q8_0 conversion, made when missing; default /tmp/ck-q8.gguf), LLAMACPP_DIR (the
#   npm directory of ../shared/tools/peer/README.md, step 3; default ./llamacpp), BIN (./build/bin),
#   KEEP (a directory for the raw outputs). Both programs run with the caller's environment
#   (moemesh's kernels do not use OpenMP, so OMP_* variables only reach llama.cpp).
# Besides each pair's ratio, the table ends with the most conservative one: moemesh's worst run
# against llama.cpp's best, per column.
set -euo pipefail

RUNS=${1:-3}
MODEL=${MODEL:-/tmp/moemesh-bench-ckpt}
GGUF=${GGUF:-/tmp/ck-q8.gguf}
LLAMACPP_DIR=${LLAMACPP_DIR:-llamacpp}
BIN=${BIN:-./build/bin}
PEER_TOOLS=${PEER_TOOLS:-../shared/tools/peer}
OUT=${KEEP:-$(mktemp -d)}
mkdir -p "$OUT"

die() { echo "run_vs_llamacpp: $*" >&2; exit 1; }
[[ -x $BIN/bench_engine && -x $BIN/moemesh ]] || die "build moemesh and bench_engine first ($BIN)"
[[ -f $LLAMACPP_DIR/llamacpp_bench.mjs ]] ||
  die "no $LLAMACPP_DIR/llamacpp_bench.mjs: install the peer as in $PEER_TOOLS/README.md, step 3"
if [[ ! -f $MODEL/config.json ]]; then
  "$BIN/moemesh" make-checkpoint --preset bench --seed 1 --tokenizer-from ../shared/fixtures/tiny-r1 \
    "$MODEL" >&2
fi
if [[ ! -f $GGUF ]]; then
  /usr/bin/python3 "$PEER_TOOLS/to_gguf.py" "$MODEL" "$GGUF" --type q8_0 >&2
fi
GGUF_ABS=$(readlink -f "$GGUF")

load() { cut -d' ' -f1 /proc/loadavg; }
# Values of one run, "prefill b1 b8 b32".
peer_values() {
  awk '/llama.cpp prefill:/ {p = $3} /decode batch 1:/ {a = $5} /decode batch 8:/ {b = $5}
       /decode batch 32:/ {c = $5} END {print p, a, b, c}' "$1"
}
ours_values() {
  awk -F'|' '/^\| batch 1 \|/ {a = $4} /^\| batch 8 \|/ {b = $4} /^\| batch 32 \|/ {c = $4}
             /^\| 1 x 512 tokens/ {p = $3} END {gsub(/ /, "", p); gsub(/ /, "", a);
             gsub(/ /, "", b); gsub(/ /, "", c); print p, a, b, c}' "$1"
}

rows=()
peer_best=(0 0 0 0)
ours_worst=(0 0 0 0)
for run in $(seq 1 "$RUNS"); do
  peer_load=$(load); peer_time=$(date -u +%H:%M)
  (cd "$LLAMACPP_DIR" && node llamacpp_bench.mjs "$GGUF_ABS" bench 512 16 1,8,32) \
    >"$OUT/llamacpp.$run.txt" 2>&1 || die "llama.cpp run $run failed: see $OUT/llamacpp.$run.txt"
  ours_load=$(load); ours_time=$(date -u +%H:%M)
  "$BIN/bench_engine" --model "$MODEL" --threads 2 --decode-steps 8 --repetitions 3 \
    >"$OUT/moemesh.$run.txt" 2>&1 || die "bench_engine run $run failed: see $OUT/moemesh.$run.txt"
  read -r pp p1 p8 p32 <<<"$(peer_values "$OUT/llamacpp.$run.txt")"
  read -r op o1 o8 o32 <<<"$(ours_values "$OUT/moemesh.$run.txt")"
  ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
  peer_now=("$pp" "$p1" "$p8" "$p32")
  ours_now=("$op" "$o1" "$o8" "$o32")
  for c in 0 1 2 3; do
    peer_best[c]=$(awk -v a="${peer_best[c]}" -v b="${peer_now[c]}" 'BEGIN {print (b > a ? b : a)}')
    ours_worst[c]=$(awk -v a="${ours_worst[c]}" -v b="${ours_now[c]}" -v first="$run" \
                      'BEGIN {print (first == 1 || b < a ? b : a)}')
  done
  rows+=("| llama.cpp Q8_0, run $run, $peer_time (load $peer_load) | $pp | $p1 | $p8 | $p32 |")
  rows+=("| moemesh \`bench_engine --threads 2\`, run $run, $ours_time (load $ours_load) | $op | $o1 | $o8 | $o32 |")
  rows+=("| **moemesh / llama.cpp, run $run** | **$(ratio "$op" "$pp")** | **$(ratio "$o1" "$p1")** | **$(ratio "$o8" "$p8")** | **$(ratio "$o32" "$p32")** |")
done

echo "| run (UTC, 1-minute load average at its start) | prefill tok/s (512) | decode b=1 | b=8 | b=32 |"
echo "|---|---|---|---|---|"
printf '%s\n' "${rows[@]}"
worst=()
for c in 0 1 2 3; do worst+=("$(awk -v a="${ours_worst[c]}" -v b="${peer_best[c]}" 'BEGIN {printf "%.2f", a / b}')"); done
echo "| **moemesh's worst run / llama.cpp's best run** | **${worst[0]}** | **${worst[1]}** | **${worst[2]}** | **${worst[3]}** |"
echo "| goal | >= 1.3 | >= 1.3 | >= 2 | >= 2.5 |"
echo
echo "bounds and lm_head of the last moemesh run:"
grep -E '^(memory read bandwidth|sgemm|lm_head x|weights:|threads)' "$OUT/moemesh.$RUNS.txt"
echo "raw outputs: $OUT"
