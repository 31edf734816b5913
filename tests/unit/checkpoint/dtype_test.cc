// Element conversions: FP8 e4m3fn, BF16, F16 against values worked out by hand and a
// brute-force nearest-value search.
#include "core/checkpoint/dtype.h"

#include <cmath>
#include <cstring>
#include <random>

#include "gtest/gtest.h"

namespace moemesh::checkpoint {
namespace {

float Bits(uint32_t bits) {
  float value;
  std::memcpy(&value, &bits, sizeof(value));
  return value;
}

TEST(DTypeTest, ParsesSafetensorsNames) {
  EXPECT_EQ(*ParseDType("F8_E4M3"), DType::kF8E4M3);
  EXPECT_EQ(*ParseDType("BF16"), DType::kBF16);
  EXPECT_EQ(*ParseDType("F32"), DType::kF32);
  absl::StatusOr<DType> unknown = ParseDType("F8_E5M2");
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.status().message().find("F8_E5M2"), absl::string_view::npos);
  EXPECT_EQ(DTypeSize(DType::kF8E4M3), 1);
  EXPECT_EQ(DTypeSize(DType::kBF16), 2);
  EXPECT_EQ(DTypeSize(DType::kF32), 4);
}

TEST(DTypeTest, DecodesFp8E4M3ByHand) {
  EXPECT_EQ(Fp8E4M3ToFloat(0x00), 0.0f);
  EXPECT_EQ(Fp8E4M3ToFloat(0x38), 1.0f);                  // exponent 7 - bias 7, mantissa 0
  EXPECT_EQ(Fp8E4M3ToFloat(0x3C), 1.5f);                  // mantissa 4/8
  EXPECT_EQ(Fp8E4M3ToFloat(0xC0), -2.0f);                 // sign, exponent 8
  EXPECT_EQ(Fp8E4M3ToFloat(0x7E), 448.0f);                // 2^8 * 1.75, the largest finite
  EXPECT_EQ(Fp8E4M3ToFloat(0x08), std::ldexp(1.0f, -6));  // smallest normal
  EXPECT_EQ(Fp8E4M3ToFloat(0x01), std::ldexp(1.0f, -9));  // smallest subnormal
  EXPECT_EQ(Fp8E4M3ToFloat(0x07), 7 * std::ldexp(1.0f, -9));
  EXPECT_TRUE(std::isnan(Fp8E4M3ToFloat(0x7F)));
  EXPECT_TRUE(std::isnan(Fp8E4M3ToFloat(0xFF)));
}

// Nearest finite e4m3 code by exhaustive search, ties to the even code, saturating.
uint8_t ReferenceFp8(float value) {
  const uint8_t sign = std::signbit(value) ? 0x80 : 0;
  const float magnitude = std::fabs(value);
  int best = 0;
  float best_error = INFINITY;
  for (int code = 0; code <= 0x7E; ++code) {
    const float error = std::fabs(Fp8E4M3ToFloat(static_cast<uint8_t>(code)) - magnitude);
    if (error < best_error || (error == best_error && code % 2 == 0)) {
      best = code;
      best_error = error;
    }
  }
  return sign | static_cast<uint8_t>(best);
}

TEST(DTypeTest, EncodesFp8E4M3NearestEvenSaturating) {
  // Every code round-trips, and every midpoint between neighbours goes to the even one.
  for (int code = 0; code <= 0x7E; ++code) {
    const float value = Fp8E4M3ToFloat(static_cast<uint8_t>(code));
    EXPECT_EQ(FloatToFp8E4M3(value), code);
    EXPECT_EQ(FloatToFp8E4M3(-value), code == 0 ? 0x80 : (0x80 | code));
    if (code < 0x7E) {
      const float midpoint = (value + Fp8E4M3ToFloat(static_cast<uint8_t>(code + 1))) / 2;
      EXPECT_EQ(FloatToFp8E4M3(midpoint), code % 2 == 0 ? code : code + 1) << midpoint;
    }
  }
  EXPECT_EQ(FloatToFp8E4M3(1e6f), 0x7E);
  EXPECT_EQ(FloatToFp8E4M3(-500.0f), 0xFE);
  EXPECT_EQ(FloatToFp8E4M3(INFINITY), 0x7E);
  EXPECT_EQ(FloatToFp8E4M3(NAN) & 0x7F, 0x7F);
  // Every BF16-representable value below saturation, and random floats.
  for (uint32_t bits = 0; bits < 0x10000; ++bits) {
    const float value = Bits(bits << 16);
    if (std::isnan(value) || std::fabs(value) >= 448.0f) continue;
    ASSERT_EQ(FloatToFp8E4M3(value), ReferenceFp8(value)) << value;
  }
  std::mt19937 engine(1);
  std::uniform_real_distribution<float> uniform(-460.0f, 460.0f);
  for (int i = 0; i < 20000; ++i) {
    const float value = uniform(engine) * (i % 2 ? 1.0f : 1e-3f);
    ASSERT_EQ(FloatToFp8E4M3(value), ReferenceFp8(value)) << value;
  }
}

TEST(DTypeTest, BFloat16RoundsToNearestEven) {
  EXPECT_EQ(FloatToBFloat16(1.0f), 0x3F80);
  EXPECT_EQ(FloatToBFloat16(Bits(0x3F808000)), 0x3F80);  // tie, keep even
  EXPECT_EQ(FloatToBFloat16(Bits(0x3F818000)), 0x3F82);  // tie, round up to even
  EXPECT_EQ(FloatToBFloat16(Bits(0x3F808001)), 0x3F81);  // above the tie
  EXPECT_EQ(FloatToBFloat16(Bits(0x7F7FFFFF)), 0x7F80);  // overflows to +inf, as torch does
  EXPECT_TRUE(std::isnan(BFloat16ToFloat(FloatToBFloat16(NAN))));
  EXPECT_EQ(BFloat16ToFloat(0xC040), -3.0f);
  EXPECT_EQ(Float16ToFloat(0x3C00), 1.0f);
  EXPECT_EQ(Float16ToFloat(0xC500), -5.0f);
  EXPECT_EQ(Float16ToFloat(0x0001), std::ldexp(1.0f, -24));
}

TEST(DTypeTest, ConvertsBuffersToFloat) {
  const uint16_t bf16[] = {0x3F80, 0xC040};
  const uint8_t fp8[] = {0x38, 0xC0};
  const float f32[] = {0.25f, -7.5f};
  float out[2];
  ConvertToFloat(DType::kBF16, bf16, 2, out);
  EXPECT_EQ(out[0], 1.0f);
  EXPECT_EQ(out[1], -3.0f);
  ConvertToFloat(DType::kF8E4M3, fp8, 2, out);
  EXPECT_EQ(out[0], 1.0f);
  EXPECT_EQ(out[1], -2.0f);
  ConvertToFloat(DType::kF32, f32, 2, out);
  EXPECT_EQ(out[1], -7.5f);
}

}  // namespace
}  // namespace moemesh::checkpoint
