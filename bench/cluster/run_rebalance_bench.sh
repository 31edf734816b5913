#!/usr/bin/env bash
# Rebalance benchmark: starts `moemesh up` (1 attention + 2 expert nodes, R redundant experts)
# on MODEL_DIR (make it with `moemesh make-checkpoint --preset bench --gate-skew G` for skewed
# traffic), then runs bench_rebalance: 8 streaming clients through a forced re-plan and
# join/drain cycles of a third expert node.
# usage: bench/cluster/run_rebalance_bench.sh BUILD_DIR MODEL_DIR [PORT] [R] [-- extra bench_rebalance flags]
set -euo pipefail
build=$(realpath "$1"); model=$(realpath "$2"); port=${3:-18490}; redundant=${4:-2}
shift $(( $# >= 4 ? 4 : $# )); [[ "${1:-}" == "--" ]] && shift
logs=$(mktemp -d /tmp/moemesh-rebalance-bench.XXXXXX)
echo "logs in $logs"
"$build/bin/moemesh" up --model "$model" --attention-nodes 1 --expert-nodes 2 --port "$port" \
    --redundant-experts "$redundant" --log-dir "$logs" > "$logs/up.out" 2>&1 &
up=$!
stop() { kill -INT "$up" 2>/dev/null || true; wait "$up" 2>/dev/null || true; }
trap stop EXIT
for _ in $(seq 1 600); do
  curl -sf "http://127.0.0.1:$port/ready" > /dev/null && break
  kill -0 "$up" 2>/dev/null || { cat "$logs/up.out"; exit 1; }
  sleep 1
done
control=$(grep -o 'control listening on [0-9.:]*' "$logs/router.log" | head -1 | awk '{print $4}')
"$build/bin/bench_rebalance" --url "http://127.0.0.1:$port" \
    --join-command "exec $build/bin/moemesh-expert-node --model $model --router $control --host 127.0.0.1 >> $logs/join.log 2>&1" \
    "$@"
