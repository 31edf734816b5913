// The portable GEMM kernels (gemm_kernels.inc over 16 floats with std::fma per lane): the
// reference the SIMD paths are tested against bit for bit, and the path of non-x86 builds.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "core/kernels/cpu/gemm_isa.h"

namespace moemesh::kernels::internal {
namespace {

struct V16 {
  float lane[16];
};

inline V16 VZero() { return V16{}; }
inline V16 VSet1(float value) {
  V16 v;
  for (float& lane : v.lane) lane = value;
  return v;
}
inline V16 VLoad(const float* p) {
  V16 v;
  std::memcpy(v.lane, p, sizeof(v.lane));
  return v;
}
inline V16 VLoadPartial(const float* p, int count) {
  V16 v{};
  std::memcpy(v.lane, p, sizeof(float) * count);
  return v;
}
inline void VStore(float* p, V16 v) { std::memcpy(p, v.lane, sizeof(v.lane)); }
inline void VStorePartial(float* p, V16 v, int count) {
  std::memcpy(p, v.lane, sizeof(float) * count);
}
inline V16 VLoadBf16(const uint16_t* p) {
  V16 v;
  for (int i = 0; i < 16; ++i) {
    const uint32_t bits = static_cast<uint32_t>(p[i]) << 16;
    std::memcpy(&v.lane[i], &bits, sizeof(float));
  }
  return v;
}
// e4m3 -> e4m3 * 2^-8 by the bit move the SIMD paths use: the 7 magnitude bits shifted up by 7
// form an IEEE half equal to value * 2^-8 (subnormals included), the sign goes to bit 15.
inline float HalfToFloat(uint16_t half) {
  const uint32_t sign = static_cast<uint32_t>(half & 0x8000) << 16;
  const uint32_t exponent = (half >> 10) & 0x1F;
  const uint32_t mantissa = half & 0x3FF;
  float magnitude;
  if (exponent == 0) {
    magnitude = std::ldexp(static_cast<float>(mantissa), -24);
  } else {
    const uint32_t bits = ((exponent + 112) << 23) | (mantissa << 13);
    std::memcpy(&magnitude, &bits, sizeof(float));
  }
  uint32_t bits;
  std::memcpy(&bits, &magnitude, sizeof(float));
  bits |= sign;
  float value;
  std::memcpy(&value, &bits, sizeof(float));
  return value;
}
inline V16 VLoadFp8(const uint8_t* p) {
  V16 v;
  for (int i = 0; i < 16; ++i) {
    const uint16_t half =
        static_cast<uint16_t>(((p[i] & 0x80u) << 8) | (static_cast<uint16_t>(p[i] & 0x7Fu) << 7));
    v.lane[i] = HalfToFloat(half);
  }
  return v;
}
// Packed BF16 (packed_bf16.h): lane l of vector V of a block = table[index] << 8 | low byte
// 4 l + V, the index in bits 4V..4V+3 of the block's 16-bit word l.
struct VTable {
  uint8_t high[16];
};
inline VTable VLoadTable(const uint8_t* table) {
  VTable t;
  std::memcpy(t.high, table, sizeof(t.high));
  return t;
}
struct VBlock {
  const uint8_t* bytes;
};
inline VBlock VLoadBlock(const uint8_t* block) { return VBlock{block}; }
template <int V>
inline V16 VDecode(const VBlock& block, const VTable& table) {
  V16 v;
  for (int l = 0; l < 16; ++l) {
    const int word = block.bytes[64 + 2 * l] | (block.bytes[65 + 2 * l] << 8);
    const int index = (word >> (4 * V)) & 0x0F;
    const uint32_t bits = (static_cast<uint32_t>(table.high[index]) << 24) |
                          (static_cast<uint32_t>(block.bytes[4 * l + V]) << 16);
    std::memcpy(&v.lane[l], &bits, sizeof(float));
  }
  return v;
}
inline void VPrefetch(const void*) {}
inline V16 VFma(V16 a, V16 b, V16 c) {
  V16 v;
  for (int i = 0; i < 16; ++i) v.lane[i] = std::fma(a.lane[i], b.lane[i], c.lane[i]);
  return v;
}
inline V16 VMul(V16 a, V16 b) {
  V16 v;
  for (int i = 0; i < 16; ++i) v.lane[i] = a.lane[i] * b.lane[i];
  return v;
}
inline float VSum(V16 v) {
  float a[8], b[4], c[2];
  for (int i = 0; i < 8; ++i) a[i] = v.lane[i] + v.lane[i + 8];
  for (int i = 0; i < 4; ++i) b[i] = a[i] + a[i + 4];
  for (int i = 0; i < 2; ++i) c[i] = b[i] + b[i + 2];
  return c[0] + c[1];
}

constexpr int kNtRows = 1;
constexpr int kNtRowsF32 = 1;
constexpr int kNtOutputs = 1;
constexpr int kNnRows = 1;
constexpr int kNnVectors = 1;

#include "core/kernels/cpu/gemm_kernels.inc"

}  // namespace

const IsaKernels& ScalarKernels() { return kKernels; }

}  // namespace moemesh::kernels::internal
