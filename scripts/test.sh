#!/usr/bin/env bash
# Sets up (Debian packages), builds, runs the bounded fuzz run, every test, then the sanitizer and
# thread-safety builds (scripts/sanitize.sh). This is the README's test command and what CI runs.
#   SANITIZERS="thread-safety asan tsan"  which of the checks of scripts/sanitize.sh to run
#                                         (default thread-safety; "" skips them)
# Extra arguments go to the main ctest run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh --with-tests
BUILD_DIR=${BUILD_DIR:-build}
JOBS=${JOBS:-$(nproc)}
SANITIZERS=${SANITIZERS-thread-safety}
phase() { echo "== $1 (${SECONDS}s so far)"; }
phase "release build"
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMOEMESH_BUILD_TESTS=ON \
  -DMOEMESH_BUILD_BENCH=ON
cmake --build "$BUILD_DIR" -j "$JOBS"
# libFuzzer targets (tokenizer encode/decode, tool-call and streaming parsers), bounded in time.
phase "fuzz"
FUZZ_SECONDS=${FUZZ_SECONDS:-15} bash scripts/fuzz.sh
# Every test but the 16K-token long-context run (label `long`: ctest -L long).
phase "tests"
ctest --test-dir "$BUILD_DIR" --output-on-failure -j "$JOBS" -LE long "$@"
for check in $SANITIZERS; do
  phase "sanitize.sh $check"
  BUILD_DIR="$BUILD_DIR" bash scripts/sanitize.sh "$check"
done
phase "done"
