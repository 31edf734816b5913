// Element types found in DeepSeek-V3 safetensors checkpoints and their conversions to float32.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include "absl/strings/string_view.h"

#include "absl/status/statusor.h"

namespace moemesh::checkpoint {

// The safetensors dtypes moemesh reads. DeepSeek-V3 ships F8_E4M3 linear weights, BF16
// embeddings/norms/gate/lm_head and F32 scales and gate bias; F16 appears in some casts.
enum class DType { kF8E4M3, kBF16, kF16, kF32 };

// Parses the safetensors dtype string ("F8_E4M3", "BF16", "F16", "F32").
// Errors: InvalidArgument naming the unknown string.
absl::StatusOr<DType> ParseDType(absl::string_view name);
absl::string_view DTypeName(DType dtype);
// Bytes per element (1, 2, 2, 4).
int DTypeSize(DType dtype);

// FP8 e4m3fn (1 sign, 4 exponent bits with bias 7, 3 mantissa bits, no infinities; 0x7F/0xFF
// are NaN) to float32, exactly. Table-driven.
float Fp8E4M3ToFloat(uint8_t bits);
// Nearest e4m3fn value (round half to even), saturating at +-448. Used by the checkpoint writer.
uint8_t FloatToFp8E4M3(float value);

inline float BFloat16ToFloat(uint16_t bits) {
  uint32_t word = static_cast<uint32_t>(bits) << 16;
  float value;
  std::memcpy(&value, &word, sizeof(value));
  return value;
}
// Round to nearest even, as torch's float32 -> bfloat16 cast does.
uint16_t FloatToBFloat16(float value);
float Float16ToFloat(uint16_t bits);

// Converts `count` elements of `dtype` stored at `bytes` to float32 (no scaling).
void ConvertToFloat(DType dtype, const void* bytes, int64_t count, float* out);

}  // namespace moemesh::checkpoint
