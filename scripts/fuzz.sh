#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (ASan + UBSan) in their own build directory and runs
# each for a bounded time over its seed corpus (tests/fuzz/corpus/): the text layer, the
# router's request path, the checkpoint parsers and the expert node's dispatch decoding (see
# tests/fuzz/README.md). Exit status is non-zero when a fuzzer finds a crash or a failed check.
# Only the sources the fuzzers need are built, so the rest of the tree does not need to compile
# with clang.
#   FUZZ_SECONDS   seconds per fuzzer (default 15; six fuzzers, JOBS (default: the cores) at a time)
#   FUZZ_BUILD_DIR build directory (default build-fuzz)
set -euo pipefail
cd "$(dirname "$0")/.."
FUZZ_SECONDS=${FUZZ_SECONDS:-15}
FUZZ_BUILD_DIR=${FUZZ_BUILD_DIR:-build-fuzz}
if ! command -v clang++ >/dev/null; then bash scripts/install-deps.sh --with-tests; fi
cmake -S tests/fuzz -B "$FUZZ_BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ -DMOEMESH_FUZZ_SECONDS="$FUZZ_SECONDS"
cmake --build "$FUZZ_BUILD_DIR" -j "${JOBS:-$(nproc)}"
# One fuzzer per core (each is single-threaded and time-bounded): ceil(6 / cores) x FUZZ_SECONDS.
ctest --test-dir "$FUZZ_BUILD_DIR" -L fuzz --output-on-failure -j "${JOBS:-$(nproc)}"
