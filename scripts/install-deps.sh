#!/usr/bin/env bash
# Installs the Debian 12 packages moemesh needs: to build and run it (default), and with
# --with-tests also to build and run the tests, benchmarks and fuzzers.
# Idempotent: packages already present are skipped; safe to re-run.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build pkg-config git ca-certificates
  libgrpc++-dev libgrpc-dev protobuf-compiler protobuf-compiler-grpc libprotobuf-dev
  libabsl-dev
  prometheus-cpp-dev
  nlohmann-json3-dev libpcre2-dev libcpp-httplib-dev
  libopenblas-dev
)
if [[ ${1:-} == --with-tests ]]; then
  PACKAGES+=(
    libgtest-dev libgmock-dev libbenchmark-dev
    # libFuzzer (scripts/fuzz.sh)
    clang libclang-rt-14-dev
    python3 curl
    # Observability tests: a real Prometheus server and promtool, headless Chromium for /dashboard.
    prometheus chromium chromium-driver
  )
fi

missing=()
for package in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$package")
  fi
done

SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
# npm (for the offline Kubernetes schema validators) only where no node/npm is installed yet:
# a NodeSource nodejs already ships npm and conflicts with Debian's npm package.
if [[ ${1:-} == --with-tests ]] && ! command -v npm >/dev/null 2>&1; then
  missing+=(nodejs npm)
fi

if ((${#missing[@]} == 0)); then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
else
  echo "install-deps: installing ${missing[*]}"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if [[ ${1:-} == --with-tests ]]; then
  # deploy/k8s tests: kubernetes-models (+ KEDA, prometheus-operator) and yaml, versions pinned
  # in tests/integration/deploy/package.json, installed beside it (node_modules is ignored).
  DEPLOY_TESTS="$(cd "$(dirname "$0")/.." && pwd)/tests/integration/deploy"
  if [[ ! -d $DEPLOY_TESTS/node_modules/kubernetes-models ]]; then
    echo "install-deps: npm packages for the Kubernetes manifest tests"
    (cd "$DEPLOY_TESTS" && npm install --no-audit --no-fund --no-package-lock --loglevel=error)
  fi
  if ! command -v kubectl >/dev/null 2>&1; then
    echo "install-deps: kubectl is not installed (not a Debian 12 package): the kustomize tests skip"
  fi
fi
