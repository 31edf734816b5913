// GEMM kernels for AVX2 + FMA + F16C: gemm_kernels.inc over a 16-lane vector held in two 256-bit
// registers (lanes 0-7, 8-15), so the arithmetic matches the AVX-512 and scalar paths exactly.
#include <immintrin.h>

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "core/kernels/cpu/gemm_isa.h"

namespace moemesh::kernels::internal {
namespace {

struct V16 {
  __m256 lo;
  __m256 hi;
};

inline V16 VZero() { return V16{_mm256_setzero_ps(), _mm256_setzero_ps()}; }
inline V16 VSet1(float value) { return V16{_mm256_set1_ps(value), _mm256_set1_ps(value)}; }
inline V16 VLoad(const float* p) { return V16{_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8)}; }
inline V16 VLoadPartial(const float* p, int count) {
  alignas(32) float padded[16] = {};
  std::memcpy(padded, p, sizeof(float) * count);
  return VLoad(padded);
}
inline void VStore(float* p, V16 v) {
  _mm256_storeu_ps(p, v.lo);
  _mm256_storeu_ps(p + 8, v.hi);
}
inline void VStorePartial(float* p, V16 v, int count) {
  alignas(32) float padded[16];
  VStore(padded, v);
  std::memcpy(p, padded, sizeof(float) * count);
}
inline V16 VLoadBf16(const uint16_t* p) {
  const __m256i bits = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  const __m256i lo = _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm256_castsi256_si128(bits)), 16);
  const __m256i hi = _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm256_extracti128_si256(bits, 1)), 16);
  return V16{_mm256_castsi256_ps(lo), _mm256_castsi256_ps(hi)};
}
// 16 e4m3 codes -> value * 2^-8: magnitude bits moved up by 7 form a half; adding bit 14 (the
// sign after the shift) to itself carries it into bit 15.
inline V16 VLoadFp8(const uint8_t* p) {
  const __m128i codes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  const __m256i shifted = _mm256_slli_epi16(_mm256_cvtepu8_epi16(codes), 7);
  const __m256i half =
      _mm256_add_epi16(shifted, _mm256_and_si256(shifted, _mm256_set1_epi16(0x4000)));
  return V16{_mm256_cvtph_ps(_mm256_castsi256_si128(half)),
             _mm256_cvtph_ps(_mm256_extracti128_si256(half, 1))};
}
// Packed BF16 (packed_bf16.h): lanes 0-7 and 8-15 of a block are its first and second 32 low
// bytes and 16 index bytes. Vector V's index of a lane goes to the lane's byte 3 (the other bytes
// 0x80), so one byte shuffle of the table puts the high byte in bits 24-31 and zeros below.
struct VTable {
  __m256i high;
};
inline VTable VLoadTable(const uint8_t* table) {
  return VTable{_mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(table)))};
}
struct VBlock {
  __m256i low_lo, low_hi, index_lo, index_hi;
};
inline VBlock VLoadBlock(const uint8_t* block) {
  return VBlock{
      _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block)),
      _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block + 32)),
      _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(block + 64))),
      _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(block + 80)))};
}
template <int V>
inline __m256 DecodeHalf(__m256i low_bytes, __m256i index, const VTable& table) {
  __m256i low;
  if constexpr (V == 0) low = _mm256_slli_epi32(low_bytes, 16);
  if constexpr (V == 1) low = _mm256_slli_epi32(low_bytes, 8);
  if constexpr (V == 2) low = low_bytes;
  if constexpr (V == 3) low = _mm256_srli_epi32(low_bytes, 8);
  low = _mm256_and_si256(low, _mm256_set1_epi32(0x00FF0000));
  const __m256i control =
      _mm256_or_si256(_mm256_srli_epi32(_mm256_slli_epi32(index, 28 - 4 * V), 4),
                      _mm256_set1_epi32(0x00808080));
  const __m256i high = _mm256_shuffle_epi8(table.high, control);
  return _mm256_castsi256_ps(_mm256_or_si256(low, high));
}
template <int V>
inline V16 VDecode(const VBlock& block, const VTable& table) {
  return V16{DecodeHalf<V>(block.low_lo, block.index_lo, table),
             DecodeHalf<V>(block.low_hi, block.index_hi, table)};
}
inline void VPrefetch(const void* p) { _mm_prefetch(static_cast<const char*>(p), _MM_HINT_T1); }
inline V16 VFma(V16 a, V16 b, V16 c) {
  return V16{_mm256_fmadd_ps(a.lo, b.lo, c.lo), _mm256_fmadd_ps(a.hi, b.hi, c.hi)};
}
inline V16 VMul(V16 a, V16 b) {
  return V16{_mm256_mul_ps(a.lo, b.lo), _mm256_mul_ps(a.hi, b.hi)};
}
inline float VSum(V16 v) {
  const __m256 a = _mm256_add_ps(v.lo, v.hi);
  const __m128 b = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  const __m128 c = _mm_add_ps(b, _mm_movehl_ps(b, b));
  return _mm_cvtss_f32(_mm_add_ss(c, _mm_shuffle_ps(c, c, 1)));
}

constexpr int kNtRows = 2;
constexpr int kNtRowsF32 = 2;
constexpr int kNtOutputs = 2;
constexpr int kNnRows = 2;
constexpr int kNnVectors = 2;

#include "core/kernels/cpu/gemm_kernels.inc"

}  // namespace

const IsaKernels& Avx2Kernels() { return kKernels; }

}  // namespace moemesh::kernels::internal
