#!/usr/bin/env bash
# Load benchmark of the router's HTTP front alone (bench/README.md, "HTTP front"): starts
# bench_http_server (HttpServer over an instant stub backend, 16 tokens per request) and drives it
# with wrk: non-streaming chat completions, streaming chat completions (SSE) and GET /health.
#   BUILD=build  DURATION=10s  CONNECTIONS=64  THREADS=2  PORT=18080  bash bench/http/run_http_bench.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
BUILD=${BUILD:-build}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
PORT=${PORT:-18080}
MODEL=${MODEL:-../shared/fixtures/tiny-r1}
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
work=$(mktemp -d /tmp/moemesh-http-bench.XXXXXX)
"$BUILD/bin/bench_http_server" --model "$MODEL" --port "$PORT" > "$work/server.log" 2>&1 &
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
