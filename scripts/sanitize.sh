#!/usr/bin/env bash
# Sanitizer and static-analysis builds (part of scripts/test.sh; each can also run alone):
#
#   bash scripts/sanitize.sh thread-safety   clang -fsyntax-only -Wthread-safety -Werror over
#                                            every translation unit that uses absl::Mutex
#                                            (compile-only; reads $BUILD_DIR/compile_commands.json,
#                                            default build/)
#   bash scripts/sanitize.sh asan            clang ASan + UBSan build ($ASAN_BUILD_DIR, default
#                                            build-asan/) of everything but the benchmarks,
#                                            compiled with -Wthread-safety -Werror=thread-safety
#                                            too; ctest -L 'unit|integration' (ASAN_SCOPE=core:
#                                            only the core and services' unit test binaries)
#   bash scripts/sanitize.sh tsan            clang TSan build ($TSAN_BUILD_DIR, default
#                                            build-tsan/) of the concurrency tests: scheduler,
#                                            control plane, transport, in-process expert cluster
#                                            (TSAN_CLUSTER=1: and the services with the
#                                            process cluster tests)
#
# Each sanitizer build has its own directory (the TSan one builds only what its tests need). The
# Debian abseil libraries are not instrumented, so TSan cannot see absl::Mutex on its own:
# tests/support/tsan_absl_mutex.cc (linked first into every target with -DMOEMESH_TSAN=ON) tells
# it about every lock, unlock and wait.
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:?usage: sanitize.sh thread-safety|asan|tsan}
JOBS=${JOBS:-$(nproc)}
SHARED_FLAGS=(-G Ninja -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++
              -DMOEMESH_BUILD_TESTS=ON -DMOEMESH_BUILD_BENCH=OFF)
if [[ -n "${MOEMESH_SHARED_DIR:-}" ]]; then SHARED_FLAGS+=("-DMOEMESH_SHARED_DIR=$MOEMESH_SHARED_DIR"); fi
if command -v ccache > /dev/null && [[ -n "${CCACHE:-}" ]]; then
  SHARED_FLAGS+=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache -DCMAKE_C_COMPILER_LAUNCHER=ccache)
fi

# Sanitizer builds: the flags below only (-O0, which compiles in half the time of -O1, and the
# kernels, model and checkpoint libraries at -O2 so that compute-heavy tests run at near release
# speed; line tables for the reports' stacks, no full debug info: -g costs ~12% more compile CPU
# and 2-3x the object bytes the links read, and the reports do not need it). Asserts stay on.
SANITIZER_BUILD_TYPE=(-DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG= -DCMAKE_C_FLAGS_DEBUG=)

case "$MODE" in
  thread-safety)
    BUILD_DIR=${BUILD_DIR:-build}
    if [[ ! -f "$BUILD_DIR/compile_commands.json" ]]; then
      echo "sanitize.sh thread-safety: $BUILD_DIR/compile_commands.json missing (configure first)" >&2
      exit 2
    fi
    # The generated protobuf headers must exist for the syntax pass.
    cmake --build "$BUILD_DIR" -j "$JOBS" --target moemesh_proto > /dev/null
    python3 - "$BUILD_DIR" "$JOBS" <<'EOF'
import concurrent.futures, json, os, re, shlex, subprocess, sys
build_dir, jobs = sys.argv[1], int(sys.argv[2])
root = os.getcwd()
def uses_mutex(path):
    texts = [path] + [path[:-3] + ".h"]
    return any(os.path.exists(p) and re.search(r"absl::Mutex|ABSL_GUARDED_BY", open(p).read())
               for p in texts)
units = []
for entry in json.load(open(os.path.join(build_dir, "compile_commands.json"))):
    source = os.path.relpath(entry["file"], root)
    if source.startswith(("build", "tests/", "bench/", "..")) or not source.endswith(".cc"):
        continue
    if uses_mutex(source):
        units.append(entry)
def check(entry):
    args = shlex.split(entry["command"]) if "command" in entry else entry["arguments"]
    keep = []
    skip = False
    for arg in args[1:]:
        if skip:
            skip = False
            continue
        if arg in ("-o", "-MF", "-MT", "-MQ"):
            skip = True
            continue
        if arg in ("-c", "-MD", "-MMD") or arg == entry["file"] or arg.endswith(".o"):
            continue
        keep.append(arg)
    command = ["clang++", "-fsyntax-only", "-Wthread-safety", "-Werror=thread-safety",
               "-Wno-unknown-warning-option"] + keep + [entry["file"]]
    result = subprocess.run(command, cwd=entry["directory"], capture_output=True, text=True)
    return os.path.relpath(entry["file"], root), result.returncode, result.stderr
failed = 0
with concurrent.futures.ThreadPoolExecutor(jobs) as pool:
    for source, code, errors in pool.map(check, units):
        thread_errors = "\n".join(l for l in errors.splitlines() if "thread-safety" in l or "error" in l)
        if code != 0:
            failed += 1
            print(f"FAIL {source}\n{errors}")
        else:
            print(f"ok   {source}")
print(f"thread-safety: {len(units)} translation units, {failed} failed")
sys.exit(1 if failed else 0)
EOF
    ;;
  asan)
    BUILD_DIR=${ASAN_BUILD_DIR:-build-asan}
    FLAGS="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -O0 -gline-tables-only -Wthread-safety -Werror=thread-safety"
    cmake -S . -B "$BUILD_DIR" "${SHARED_FLAGS[@]}" "${SANITIZER_BUILD_TYPE[@]}" \
      -DMOEMESH_NUMERICS_OPTIMIZATION=-O2 \
      -DCMAKE_CXX_FLAGS="$FLAGS" -DCMAKE_C_FLAGS="$FLAGS" \
      -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=address,undefined" \
      -DCMAKE_SHARED_LINKER_FLAGS="-fsanitize=address,undefined" > /dev/null
    # Leak checking off: gRPC and protobuf keep process-lifetime singletons.
    export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:detect_stack_use_after_return=0
    export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
    if [[ "${ASAN_SCOPE:-all}" == core ]]; then
      # What CI runs: the unit tests of the parsers, the transports and control plane, the model
      # and kernels, the scheduler and the expert node (an in-process cluster over gRPC).
      cmake --build "$BUILD_DIR" -j "$JOBS" --target comm_tests shm_mailbox_tests text_tests \
        checkpoint_tests model_tests attention_node_tests expert_node_tests
      # (gtest_discover_tests names the binaries not built here <target>_NOT_BUILT.)
      ctest --test-dir "$BUILD_DIR" --output-on-failure -j "$JOBS" -L unit -E '_NOT_BUILT$'
    else
      # Everything (benchmarks off): every unit and integration test binary and the services.
      cmake --build "$BUILD_DIR" -j "$JOBS"
      ctest --test-dir "$BUILD_DIR" --output-on-failure -j "$JOBS" -L 'unit|integration' -LE long
    fi
    ;;
  tsan)
    BUILD_DIR=${TSAN_BUILD_DIR:-build-tsan}
    FLAGS="-fsanitize=thread -O0 -gline-tables-only"
    cmake -S . -B "$BUILD_DIR" "${SHARED_FLAGS[@]}" "${SANITIZER_BUILD_TYPE[@]}" \
      -DMOEMESH_NUMERICS_OPTIMIZATION=-O2 -DMOEMESH_TSAN=ON -DCMAKE_CXX_FLAGS="$FLAGS" -DCMAKE_C_FLAGS="$FLAGS" \
      -DCMAKE_EXE_LINKER_FLAGS="-fsanitize=thread" \
      -DCMAKE_SHARED_LINKER_FLAGS="-fsanitize=thread" > /dev/null
    # Only the concurrency test binaries: the scheduler, control plane, gRPC transport, the
    # shared-memory mailbox and an in-process cluster (a control plane and two expert nodes serving dispatches over gRPC);
    # with TSAN_CLUSTER=1 also the services and the cluster tests that start them.
    TARGETS=(attention_node_tests comm_tests shm_mailbox_tests router_control_tests expert_node_tests)
    TESTS='SchedulerTest|ControlPlane[A-Za-z]*|ControlClient|GrpcExpertTransport|GrpcServer|ExpertNodeClusterTest|SharedMemoryMailbox'
    if [[ -n "${TSAN_CLUSTER:-}" ]]; then
      TARGETS+=(integration_tests moemesh-router moemesh-attention-node moemesh-expert-node)
      TESTS+='|Cluster'
    fi
    cmake --build "$BUILD_DIR" -j "$JOBS" --target "${TARGETS[@]}"
    export TSAN_OPTIONS="halt_on_error=1:second_deadlock_stack=1:suppressions=$PWD/tests/support/tsan.supp"
    ctest --test-dir "$BUILD_DIR" --output-on-failure -j "$JOBS" -R "^($TESTS)\\."
    ;;
  *)
    echo "sanitize.sh: unknown mode '$MODE' (thread-safety, asan, tsan)" >&2
    exit 2
    ;;
esac
