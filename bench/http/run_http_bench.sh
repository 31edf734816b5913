#!/usr/bin/env bash
# Load benchmark of the router's HTTP front alone (bench/README.md, "HTTP front"): starts
# bench_http_server (HttpServer over an instant stub backend, 16 tokens per request) and drives it
# with wrk: non-streaming chat completions, streaming chat completions (SSE) and GET /health;
# then one client's request latency idle and with SLOW connections open (half of them idle, half
# sending a header line every 2 s and never finishing), and the ratio of the two medians.
#   BUILD=build  DURATION=10s  CONNECTIONS=64  THREADS=2  PORT=18080  SLOW=500 \
#     bash bench/http/run_http_bench.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
PORT=${PORT:-18080}
SLOW=${SLOW:-500}
MODEL=${MODEL:-../shared/fixtures/tiny-r1}
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
work=$(mktemp -d /tmp/moemesh-http-bench.XXXXXX)
# The header deadline is raised so that the slow connections stay for the whole measurement.
"$BUILD/bin/bench_http_server" --model "$MODEL" --port "$PORT" --header_timeout_seconds 600 \
  > "$work/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do grep -q "listening on" "$work/server.log" && break; sleep 0.1; done
body='{"model":"tiny-r1","messages":[{"role":"user","content":"Hello, how are you today?"}],"max_tokens":16}'
stream_body='{"model":"tiny-r1","messages":[{"role":"user","content":"Hello, how are you today?"}],"max_tokens":16,"stream":true}'
for kind in plain stream; do
  b=$body; [[ $kind == stream ]] && b=$stream_body
  cat > "$work/$kind.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '$b'
LUA
done
echo "== non-streaming POST /v1/chat/completions (16 tokens), $CONNECTIONS connections"
wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s "$work/plain.lua" "http://127.0.0.1:$PORT/v1/chat/completions"
echo "== streaming (SSE) POST /v1/chat/completions (16 tokens), $CONNECTIONS connections"
wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s "$work/stream.lua" "http://127.0.0.1:$PORT/v1/chat/completions"
echo "== GET /health, $CONNECTIONS connections"
wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "http://127.0.0.1:$PORT/health"

# wrk's median latency ("50%  1.23ms") in milliseconds.
median_ms() {
  awk '$1 == "50%" { v = $2; if (v ~ /us$/) m = v / 1000; else if (v ~ /ms$/) m = v + 0;
       else if (v ~ /s$/) m = v * 1000; print m }' "$1"
}
echo "== one client, non-streaming POST /v1/chat/completions: idle"
wrk -t1 -c1 -d"$DURATION" --latency -s "$work/plain.lua" "http://127.0.0.1:$PORT/v1/chat/completions" | tee "$work/idle.txt"
ulimit -n $((SLOW + 256)) 2>/dev/null || true
slow_fds=()
for i in $(seq "$SLOW"); do
  exec {fd}<>"/dev/tcp/127.0.0.1/$PORT"
  if (( i % 2 == 0 )); then
    printf 'POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n' >&"$fd"
    slow_fds+=("$fd")
  fi
done
( while true; do for fd in "${slow_fds[@]}"; do printf 'X-Slow: 1\r\n' >&"$fd" 2>/dev/null || true; done; sleep 2; done ) &
trickle=$!
if command -v ss >/dev/null; then
  echo "connections open to the server: $(ss -Htn state established "( sport = :$PORT )" | wc -l)"
fi
echo "== one client, non-streaming POST /v1/chat/completions: with $SLOW slow/idle connections open"
wrk -t1 -c1 -d"$DURATION" --latency -s "$work/plain.lua" "http://127.0.0.1:$PORT/v1/chat/completions" | tee "$work/loaded.txt"
kill "$trickle" 2>/dev/null; wait "$trickle" 2>/dev/null || true
idle=$(median_ms "$work/idle.txt"); loaded=$(median_ms "$work/loaded.txt")
awk -v i="$idle" -v l="$loaded" -v n="$SLOW" 'BEGIN { printf "median latency: idle %.3f ms, with %d slow/idle connections %.3f ms, ratio %.2f\n", i, n, l, (i > 0 ? l / i : 0) }'
