// Which instruction set the CPU kernels use, chosen at run time: one binary runs on every x86-64
// machine with AVX2+FMA and uses AVX-512 where the CPU has it. All paths compute every output
// with the same operations in the same order (16 float32 lanes, fused multiply-adds, a fixed
// reduction tree), so they give bit-identical results; the choice changes only the speed.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace moemesh::kernels {

enum class SimdPath {
  kScalar,  // portable C++ (std::fma per lane): the reference, and non-x86 builds
  kAvx2,    // AVX2 + FMA + F16C: a 16-lane vector is two 256-bit registers
  kAvx512,  // AVX-512 F/BW/VL/DQ: one 512-bit register
};

// "scalar", "avx2", "avx512".
absl::string_view SimdPathName(SimdPath path);
// Parses SimdPathName's strings. Errors: InvalidArgument naming the accepted values.
absl::StatusOr<SimdPath> ParseSimdPath(absl::string_view name);

// The fastest path this CPU (and this build) supports.
SimdPath BestSupportedSimdPath();
bool SimdPathSupported(SimdPath path);

// The path the kernels use now: the MOEMESH_SIMD environment variable ("scalar", "avx2",
// "avx512") when set at the first call, else BestSupportedSimdPath(). A value the CPU cannot run
// or cannot parse aborts with a message on stderr (a silent fallback would hide a misconfigured
// test or benchmark).
SimdPath ActiveSimdPath();

// Switches the path for the whole process (tests run every path against the goldens).
// Errors: FailedPrecondition when this CPU or build cannot run `path`.
absl::Status SetSimdPath(SimdPath path);

}  // namespace moemesh::kernels
