#include "core/checkpoint/dtype.h"

#include <array>
#include <cmath>

#include "absl/strings/str_cat.h"

namespace moemesh::checkpoint {
namespace {

float DecodeFp8E4M3(uint8_t bits) {
  const int sign = bits >> 7;
  const int exponent = (bits >> 3) & 0xF;
  const int mantissa = bits & 0x7;
  float magnitude;
  if (exponent == 0xF && mantissa == 0x7) {
    magnitude = NAN;
  } else if (exponent == 0) {
    magnitude = std::ldexp(static_cast<float>(mantissa) / 8.0f, -6);
  } else {
    magnitude = std::ldexp(1.0f + static_cast<float>(mantissa) / 8.0f, exponent - 7);
  }
  return sign ? -magnitude : magnitude;
}

const std::array<float, 256>& Fp8Table() {
  static const std::array<float, 256> table = [] {
    std::array<float, 256> values{};
    for (int i = 0; i < 256; ++i) values[i] = DecodeFp8E4M3(static_cast<uint8_t>(i));
    return values;
  }();
  return table;
}

}  // namespace

absl::StatusOr<DType> ParseDType(absl::string_view name) {
  if (name == "F8_E4M3") return DType::kF8E4M3;
  if (name == "BF16") return DType::kBF16;
  if (name == "F16") return DType::kF16;
  if (name == "F32") return DType::kF32;
  return absl::InvalidArgumentError(absl::StrCat("unknown dtype '", name, "'"));
}

absl::string_view DTypeName(DType dtype) {
  switch (dtype) {
    case DType::kF8E4M3: return "F8_E4M3";
    case DType::kBF16: return "BF16";
    case DType::kF16: return "F16";
    case DType::kF32: return "F32";
  }
  return "?";
}

int DTypeSize(DType dtype) {
  switch (dtype) {
    case DType::kF8E4M3: return 1;
    case DType::kBF16:
    case DType::kF16: return 2;
    case DType::kF32: return 4;
  }
  return 0;
}

float Fp8E4M3ToFloat(uint8_t bits) { return Fp8Table()[bits]; }

uint8_t FloatToFp8E4M3(float value) {
  if (std::isnan(value)) return 0x7F;
  const uint8_t sign = std::signbit(value) ? 0x80 : 0x00;
  const float magnitude = std::fabs(value);
  if (magnitude >= 448.0f) return sign | 0x7E;  // saturate at the largest finite value
  if (magnitude < 0.015625f) {
    // Subnormal range (below 2^-6): codes 0..8 step 2^-9; code 8 is the smallest normal, 2^-6.
    // magnitude * 512 is exact and at most 8; lrint rounds half to even.
    return sign | static_cast<uint8_t>(std::lrint(magnitude * 512.0f));
  }
  // Normal range: round the float32 mantissa to 3 bits, half to even; a carry moves into the
  // exponent as it should. The float32 exponent bias 127 becomes e4m3's 7.
  uint32_t bits;
  std::memcpy(&bits, &magnitude, sizeof(bits));
  const uint32_t rounded = bits + 0x7FFFFu + ((bits >> 20) & 1u);
  const uint32_t code = (rounded >> 20) - (120u << 3);
  return sign | static_cast<uint8_t>(code > 0x7E ? 0x7E : code);
}

uint16_t FloatToBFloat16(float value) {
  uint32_t word;
  std::memcpy(&word, &value, sizeof(word));
  if (std::isnan(value)) return static_cast<uint16_t>((word >> 16) | 0x40);
  const uint32_t rounding = 0x7FFF + ((word >> 16) & 1);
  return static_cast<uint16_t>((word + rounding) >> 16);
}

float Float16ToFloat(uint16_t bits) {
  const int sign = bits >> 15;
  const int exponent = (bits >> 10) & 0x1F;
  const int mantissa = bits & 0x3FF;
  float magnitude;
  if (exponent == 0) {
    magnitude = std::ldexp(static_cast<float>(mantissa), -24);
  } else if (exponent == 0x1F) {
    magnitude = mantissa ? NAN : INFINITY;
  } else {
    magnitude = std::ldexp(1.0f + static_cast<float>(mantissa) / 1024.0f, exponent - 15);
  }
  return sign ? -magnitude : magnitude;
}

void ConvertToFloat(DType dtype, const void* bytes, int64_t count, float* out) {
  switch (dtype) {
    case DType::kF32:
      std::memcpy(out, bytes, static_cast<size_t>(count) * sizeof(float));
      return;
    case DType::kBF16: {
      const auto* in = static_cast<const uint16_t*>(bytes);
      for (int64_t i = 0; i < count; ++i) out[i] = BFloat16ToFloat(in[i]);
      return;
    }
    case DType::kF16: {
      const auto* in = static_cast<const uint16_t*>(bytes);
      for (int64_t i = 0; i < count; ++i) out[i] = Float16ToFloat(in[i]);
      return;
    }
    case DType::kF8E4M3: {
      const auto* in = static_cast<const uint8_t*>(bytes);
      const auto& table = Fp8Table();
      for (int64_t i = 0; i < count; ++i) out[i] = table[in[i]];
      return;
    }
  }
}

}  // namespace moemesh::checkpoint
