#!/usr/bin/env bash
# Sets up (Debian packages), then runs what CI runs (.ci/run; README "Development" says what each
# build covers and what it costs on 2 cores):
#   1. release build (gcc -O2, $BUILD_DIR) and every test (ctest -LE long)
#   2. the bounded fuzz run (scripts/fuzz.sh: its own small clang ASan + UBSan build of the
#      parsers the fuzzers reach)
#   3. scripts/sanitize.sh asan with ASAN_SCOPE=core: the unit tests of core/ and the services'
#      own logic under ASan + UBSan (ASAN_SCOPE=all: every unit and integration test)
#   4. scripts/sanitize.sh tsan: the concurrency tests under ThreadSanitizer
#   5. scripts/sanitize.sh thread-safety: clang -Wthread-safety -Werror
# Variables:
#   SANITIZERS="asan tsan thread-safety"  which checks of scripts/sanitize.sh run (the default;
#                                    "" skips them).
#   ASAN_SCOPE=core                  what the asan check runs (the default here). With
#                                    ASAN_SCOPE=all the ASan + UBSan build runs every unit and
#                                    integration test (~8 min build + ~15 min tests on 2 cores),
#                                    and the release build is cut to what the main job runs
#                                    (services, CLI, benchmarks) plus the golden/numerics tests
#                                    (model_tests, integration_tests): the same goldens pass in
#                                    both builds.
#   TSAN_CLUSTER=1                   the TSan run adds the services and the cluster tests
# Extra arguments go to the release ctest run.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh --with-tests
BUILD_DIR=${BUILD_DIR:-build}
JOBS=${JOBS:-$(nproc)}
SANITIZERS=${SANITIZERS-asan tsan thread-safety}
export ASAN_SCOPE=${ASAN_SCOPE:-core}
WITH_ASAN=""
if [[ " $SANITIZERS " == *" asan "* && "$ASAN_SCOPE" == all ]]; then WITH_ASAN=1; fi
phase() { echo "== $1 (${SECONDS}s so far)"; }
phase "release build"
cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMOEMESH_BUILD_TESTS=ON \
  -DMOEMESH_BUILD_BENCH=ON
if [[ -z "$WITH_ASAN" ]]; then
  cmake --build "$BUILD_DIR" -j "$JOBS"
else
  # The other test binaries are built and run by the ASan + UBSan build.
  cmake --build "$BUILD_DIR" -j "$JOBS" --target moemesh moemesh-router moemesh-attention-node \
    moemesh-expert-node moemesh_benchmarks model_tests integration_tests
fi
# libFuzzer targets (tokenizer, tool-call and streaming parsers, request path, checkpoint
# parsers, dispatch codec), bounded in time.
phase "fuzz"
FUZZ_SECONDS=${FUZZ_SECONDS:-15} bash scripts/fuzz.sh
phase "release tests"
if [[ -z "$WITH_ASAN" ]]; then
  # Every test but the 16K-token long-context run (label `long`: ctest -L long).
  ctest --test-dir "$BUILD_DIR" --output-on-failure -j "$JOBS" -LE long "$@"
else
  # The goldens and the numerics (kernels, SIMD paths, attention, sampling, the cluster's
  # greedy tokens) in the build the main job runs: the same goldens must pass
  # here as in the sanitizer builds.
  ctest --test-dir "$BUILD_DIR" --output-on-failure -j "$JOBS" -LE long \
    -R '^((Bf16)?GoldenTest|BatchInvarianceTest|GemmTest|LinearTest|SimdPathTest|MlaAttentionTest|LatentCacheTest|SamplingTest|CounterRngTest)\.|^Cluster\.GoldenGreedy' \
    "$@"
fi
for check in $SANITIZERS; do
  phase "sanitize.sh $check"
  BUILD_DIR="$BUILD_DIR" bash scripts/sanitize.sh "$check"
done
phase "done"
