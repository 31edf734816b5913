#!/usr/bin/env bash
# Sets up (Debian packages), builds, runs the bounded fuzz run, then every test.
# This is the README's test command and what CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh --with-tests
BUILD_DIR=${BUILD_DIR:-build}
JOBS=${JOBS:-$(nproc)}
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMOEMESH_BUILD_TESTS=ON \
  -DMOEMESH_BUILD_BENCH=ON
cmake --build "$BUILD_DIR" -j "$JOBS"
# libFuzzer targets (tokenizer encode/decode, tool-call and streaming parsers), bounded in time.
FUZZ_SECONDS=${FUZZ_SECONDS:-15} bash scripts/fuzz.sh
ctest --test-dir "$BUILD_DIR" --output-on-failure -j "$JOBS" "$@"
