#include "core/kernels/cpu/simd_path.h"

#if defined(MOEMESH_HAVE_AVX2_KERNELS)
#include <cpuid.h>
#endif

#include <atomic>
#include <cstdio>
#include <cstdlib>

#include "absl/strings/str_cat.h"

namespace moemesh::kernels {
namespace {

constexpr int kUnset = -1;
std::atomic<int> active_path{kUnset};

SimdPath FromEnvironmentOrBest() {
  const char* value = std::getenv("MOEMESH_SIMD");
  if (value == nullptr || *value == '\0') return BestSupportedSimdPath();
  absl::StatusOr<SimdPath> path = ParseSimdPath(value);
  if (!path.ok()) {
    std::fprintf(stderr, "MOEMESH_SIMD: %s\n", std::string(path.status().message()).c_str());
    std::abort();
  }
  if (!SimdPathSupported(*path)) {
    std::fprintf(stderr, "MOEMESH_SIMD=%s: this CPU or build cannot run it\n", value);
    std::abort();
  }
  return *path;
}

#if defined(MOEMESH_HAVE_AVX2_KERNELS)
// F16C from CPUID leaf 1, ECX bit 29 (Intel SDM vol. 2A, CPUID): clang 14's
// __builtin_cpu_supports does not know "f16c".
bool CpuHasF16c() {
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (__get_cpuid(1, &eax, &ebx, &ecx, &edx) == 0) return false;
  return (ecx & (1u << 29)) != 0;
}
#endif

}  // namespace

absl::string_view SimdPathName(SimdPath path) {
  switch (path) {
    case SimdPath::kScalar: return "scalar";
    case SimdPath::kAvx2: return "avx2";
    case SimdPath::kAvx512: return "avx512";
  }
  return "?";
}

absl::StatusOr<SimdPath> ParseSimdPath(absl::string_view name) {
  for (SimdPath path : {SimdPath::kScalar, SimdPath::kAvx2, SimdPath::kAvx512}) {
    if (name == SimdPathName(path)) return path;
  }
  return absl::InvalidArgumentError(
      absl::StrCat("unknown SIMD path '", name, "' (expected scalar, avx2 or avx512)"));
}

bool SimdPathSupported(SimdPath path) {
  switch (path) {
    case SimdPath::kScalar: return true;
    case SimdPath::kAvx2:
#if defined(MOEMESH_HAVE_AVX2_KERNELS)
      return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && CpuHasF16c();
#else
      return false;
#endif
    case SimdPath::kAvx512:
#if defined(MOEMESH_HAVE_AVX512_KERNELS)
      return SimdPathSupported(SimdPath::kAvx2) && __builtin_cpu_supports("avx512f") &&
             __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl") &&
             __builtin_cpu_supports("avx512dq");
#else
      return false;
#endif
  }
  return false;
}

SimdPath BestSupportedSimdPath() {
  if (SimdPathSupported(SimdPath::kAvx512)) return SimdPath::kAvx512;
  if (SimdPathSupported(SimdPath::kAvx2)) return SimdPath::kAvx2;
  return SimdPath::kScalar;
}

SimdPath ActiveSimdPath() {
  int path = active_path.load(std::memory_order_relaxed);
  if (path == kUnset) {
    int expected = kUnset;
    active_path.compare_exchange_strong(expected, static_cast<int>(FromEnvironmentOrBest()));
    path = active_path.load(std::memory_order_relaxed);
  }
  return static_cast<SimdPath>(path);
}

absl::Status SetSimdPath(SimdPath path) {
  if (!SimdPathSupported(path)) {
    return absl::FailedPreconditionError(
        absl::StrCat("SIMD path ", SimdPathName(path), " is not supported by this CPU or build"));
  }
  active_path.store(static_cast<int>(path));
  return absl::OkStatus();
}

}  // namespace moemesh::kernels
