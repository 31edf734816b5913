#!/usr/bin/env bash
# Chaos benchmark: three faults, each on a fresh local cluster of real processes (loopback,
# plaintext), under C streaming clients (bench_chaos), one SIGKILL each:
#   expert-min-replicas-2   1 attention + 4 expert nodes, --min-replicas 2: SIGKILL expert-1
#                           (bench_chaos exits non-zero if the longest token gap is above 2 s)
#   expert-no-redundancy    1 attention + 3 expert nodes: SIGKILL expert-2 (the survivors load
#                           its experts; the stall is reported)
#   attention-of-two        2 attention + 2 expert nodes: SIGKILL attention-0 (its sequences are
#                           resubmitted to attention-1)
# Detection is read from the attention node's moemesh_dispatch_failovers_total (expert faults;
# its own detection-time and re-dispatch counters are appended) or the router's
# moemesh_sequence_resubmissions_total (attention fault).
# usage: bench/cluster/run_chaos_bench.sh BUILD_DIR MODEL_DIR [BASE_PORT] [-- extra bench_chaos flags]
set -euo pipefail
build=$(realpath "$1"); model=$(realpath "$2"); base=${3:-18600}
shift $(( $# >= 3 ? 3 : $# )); [[ "${1:-}" == "--" ]] && shift
logs=$(mktemp -d /tmp/moemesh-chaos-bench.XXXXXX)
echo "logs in $logs"
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 OMP_WAIT_POLICY=PASSIVE
pids=()
stop_all() {
  for pid in "${pids[@]}"; do kill -INT "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  pids=()
}
trap stop_all EXIT

# The address printed after MARKER in FILE (waits up to 60 s).
address_in() {
  for _ in $(seq 1 600); do
    local found
    found=$(grep -o "$2[0-9.:]*" "$1" 2>/dev/null | head -1 | sed "s/^$2//") || true
    [[ -n "$found" ]] && { echo "$found"; return 0; }
    sleep 0.1
  done
  echo "no '$2' in $1" >&2; return 1
}

failures=0
# scenario NAME ATTENTION EXPERTS VICTIM(expert-N|attention-N) MAX_GAP [router flags...]
scenario() {
  local name=$1 attention=$2 experts=$3 victim=$4 max_gap=$5; shift 5
  local http=$base control=$((base + 1)); base=$((base + 10))
  local dir="$logs/$name"; mkdir -p "$dir"
  declare -A pid_of
  "$build/bin/moemesh-router" --model "$model" --host 127.0.0.1 --port "$http" \
      --control-port "$control" --attention-nodes "$attention" --expert-nodes "$experts" \
      --insecure-plaintext "$@" > "$dir/router.log" 2>&1 &
  pids+=($!)
  address_in "$dir/router.log" "http listening on " > /dev/null
  for i in $(seq 0 $((experts - 1))); do
    "$build/bin/moemesh-expert-node" --model "$model" --router "127.0.0.1:$control" \
        --node-name "expert-$i" --insecure-plaintext > "$dir/expert-$i.log" 2>&1 &
    pids+=($!); pid_of[expert-$i]=$!
  done
  for i in $(seq 0 $((attention - 1))); do
    "$build/bin/moemesh-attention-node" --model "$model" --router "127.0.0.1:$control" \
        --node-name "attention-$i" --insecure-plaintext > "$dir/attention-$i.log" 2>&1 &
    pids+=($!); pid_of[attention-$i]=$!
  done
  for _ in $(seq 1 600); do
    curl -sf "http://127.0.0.1:$http/ready" > /dev/null && break
    sleep 0.2
  done
  curl -sf "http://127.0.0.1:$http/ready" > /dev/null || { echo "$name: not ready" >&2; exit 1; }
  local detect_url detect_prefix
  if [[ "$victim" == expert-* ]]; then
    detect_url="http://$(address_in "$dir/attention-0.log" "metrics on ")/metrics"
    detect_prefix=moemesh_dispatch_failovers_total
  else
    detect_url="http://127.0.0.1:$http/metrics"
    detect_prefix=moemesh_sequence_resubmissions_total
  fi
  local rc=0
  "$build/bin/bench_chaos" --url "http://127.0.0.1:$http" --victim-pid "${pid_of[$victim]}" \
      --label "$name (SIGKILL $victim)" --detect-url "$detect_url" --detect-prefix "$detect_prefix" \
      --max-gap-seconds "$max_gap" "${bench_flags[@]}" | tee "$dir/result.md" || rc=$?
  [[ $rc -ne 0 ]] && failures=$((failures + 1))
  if [[ "$victim" == expert-* ]]; then
    { echo; echo "attention node's data-path counters:"
      curl -s "$detect_url" | grep -E '^moemesh_dispatch_(failovers|redispatched|failure_detection|recovery_wait)' \
        | sed 's/^/    /'; } | tee -a "$dir/result.md"
  fi
  echo
  stop_all
}

bench_flags=("$@")
scenario expert-min-replicas-2 1 4 expert-1 2 --min-replicas 2
scenario expert-no-redundancy 1 3 expert-2 0
scenario attention-of-two 2 2 attention-0 0
echo "results in $logs/*/result.md; $failures scenario(s) failed"
exit $(( failures > 0 ))
