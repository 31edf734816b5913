#!/usr/bin/env bash
# Cluster benchmark: starts `moemesh up` (1 attention + 2 expert nodes) on MODEL_DIR, drives it
# with bench_cluster at 1, 8 and 32 concurrent streaming requests, stops it; then runs the same
# workload through the single-process generator (bench_cluster --engine) for comparison.
# usage: bench/cluster/run_cluster_bench.sh BUILD_DIR MODEL_DIR [PORT] [-- extra bench_cluster flags]
# UP_FLAGS="..." adds flags to `moemesh up` (e.g. --no-shared-memory-dispatch).
set -euo pipefail
build=$(realpath "$1"); model=$(realpath "$2"); port=${3:-18480}
shift $(( $# >= 3 ? 3 : $# )); [[ "${1:-}" == "--" ]] && shift
logs=$(mktemp -d /tmp/moemesh-cluster-bench.XXXXXX)
echo "logs in $logs"
"$build/bin/moemesh" up --model "$model" --attention-nodes 1 --expert-nodes 2 --port "$port" \
    --log-dir "$logs" ${UP_FLAGS:-} > "$logs/up.out" 2>&1 &
up=$!
stop() { kill -INT "$up" 2>/dev/null || true; wait "$up" 2>/dev/null || true; }
trap stop EXIT
for _ in $(seq 1 600); do
  curl -sf "http://127.0.0.1:$port/ready" > /dev/null && break
  kill -0 "$up" 2>/dev/null || { cat "$logs/up.out"; exit 1; }
  sleep 1
done
attention=$(pgrep -P "$up" -f moemesh-attention-node | head -1)
"$build/bin/bench_cluster" --url "http://127.0.0.1:$port" --stats-pid "$attention" \
    --stats-log "$logs/attention-0.log" "$@"
stop
trap - EXIT
grep -h "dispatch statistics" "$logs/attention-0.log" | tail -1
echo
"$build/bin/bench_cluster" --engine "$model" "$@"
