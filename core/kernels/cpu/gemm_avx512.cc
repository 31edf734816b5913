// GEMM kernels for AVX-512 (F, BW, VL, DQ): gemm_kernels.inc over one 512-bit register. Built
// with AVX-512 flags (this file only) and called only when the CPU reports them.
#include <immintrin.h>

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "core/kernels/cpu/gemm_isa.h"

namespace moemesh::kernels::internal {
namespace {

struct V16 {
  __m512 v;
};

inline __mmask16 Mask(int count) { return static_cast<__mmask16>((1u << count) - 1u); }
inline V16 VZero() { return V16{_mm512_setzero_ps()}; }
inline V16 VSet1(float value) { return V16{_mm512_set1_ps(value)}; }
inline V16 VLoad(const float* p) { return V16{_mm512_loadu_ps(p)}; }
inline V16 VLoadPartial(const float* p, int count) {
  return V16{_mm512_maskz_loadu_ps(Mask(count), p)};
}
inline void VStore(float* p, V16 v) { _mm512_storeu_ps(p, v.v); }
inline void VStorePartial(float* p, V16 v, int count) {
  _mm512_mask_storeu_ps(p, Mask(count), v.v);
}
inline V16 VLoadBf16(const uint16_t* p) {
  const __m256i bits = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return V16{_mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(bits), 16))};
}
// As in gemm_avx2.cc: shift the magnitude into a half, carry the sign from bit 14 into bit 15.
inline V16 VLoadFp8(const uint8_t* p) {
  const __m128i codes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  const __m256i shifted = _mm256_slli_epi16(_mm256_cvtepu8_epi16(codes), 7);
  const __m256i half =
      _mm256_add_epi16(shifted, _mm256_and_si256(shifted, _mm256_set1_epi16(0x4000)));
  return V16{_mm512_cvtph_ps(half)};
}
// Packed BF16 (packed_bf16.h): the table's high bytes moved to bits 24-31 of a lane. A block's 64
// low bytes are one register whose lane l holds the low bytes of vectors 0-3 in its bytes 0-3;
// its index words widened put vector V's index in bits 4V..4V+3 of lane l (vpermd reads only an
// index's low 4 bits).
struct VTable {
  __m512i high;
};
inline VTable VLoadTable(const uint8_t* table) {
  const __m128i bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(table));
  return VTable{_mm512_slli_epi32(_mm512_cvtepu8_epi32(bytes), 24)};
}
struct VBlock {
  __m512i low;
  __m512i index;
};
inline VBlock VLoadBlock(const uint8_t* block) {
  return VBlock{_mm512_loadu_si512(block),
                _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(block + 64)))};
}
template <int V>
inline V16 VDecode(const VBlock& block, const VTable& table) {
  __m512i low;
  if constexpr (V == 0) low = _mm512_slli_epi32(block.low, 16);
  if constexpr (V == 1) low = _mm512_slli_epi32(block.low, 8);
  if constexpr (V == 2) low = block.low;
  if constexpr (V == 3) low = _mm512_srli_epi32(block.low, 8);
  const __m512i index = V == 0 ? block.index : _mm512_srli_epi32(block.index, 4 * V);
  const __m512i high = _mm512_permutexvar_epi32(index, table.high);
  // (low & 0x00FF0000) | high
  return V16{_mm512_castsi512_ps(
      _mm512_ternarylogic_epi32(low, _mm512_set1_epi32(0x00FF0000), high, 0xEA))};
}
inline void VPrefetch(const void* p) { _mm_prefetch(static_cast<const char*>(p), _MM_HINT_T1); }
inline V16 VFma(V16 a, V16 b, V16 c) { return V16{_mm512_fmadd_ps(a.v, b.v, c.v)}; }
inline V16 VMul(V16 a, V16 b) { return V16{_mm512_mul_ps(a.v, b.v)}; }
inline float VSum(V16 v) {
  const __m256 a =
      _mm256_add_ps(_mm512_castps512_ps256(v.v), _mm512_extractf32x8_ps(v.v, 1));
  const __m128 b = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  const __m128 c = _mm_add_ps(b, _mm_movehl_ps(b, b));
  return _mm_cvtss_f32(_mm_add_ss(c, _mm_shuffle_ps(c, c, 1)));
}

// VSum of four vectors at once, with exactly VSum's additions (the tree of gemm_isa.h).
inline void VSum4(V16 a, V16 b, V16 c, V16 d, float* out) {
  // s[i] + s[i + 8]: [a0-7 | b0-7] + [a8-15 | b8-15], and the same for c, d.
  const __m512 ab = _mm512_add_ps(_mm512_shuffle_f32x4(a.v, b.v, _MM_SHUFFLE(1, 0, 1, 0)),
                                  _mm512_shuffle_f32x4(a.v, b.v, _MM_SHUFFLE(3, 2, 3, 2)));
  const __m512 cd = _mm512_add_ps(_mm512_shuffle_f32x4(c.v, d.v, _MM_SHUFFLE(1, 0, 1, 0)),
                                  _mm512_shuffle_f32x4(c.v, d.v, _MM_SHUFFLE(3, 2, 3, 2)));
  // + 4: one 128-bit lane per input.
  const __m512 q = _mm512_add_ps(_mm512_shuffle_f32x4(ab, cd, _MM_SHUFFLE(2, 0, 2, 0)),
                                 _mm512_shuffle_f32x4(ab, cd, _MM_SHUFFLE(3, 1, 3, 1)));
  // + 2, then + 1, within each 128-bit lane.
  const __m512 r = _mm512_add_ps(q, _mm512_permute_ps(q, _MM_SHUFFLE(1, 0, 3, 2)));
  const __m512 t = _mm512_add_ps(r, _mm512_permute_ps(r, _MM_SHUFFLE(2, 3, 0, 1)));
  const __m512i lanes = _mm512_set_epi32(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 12, 8, 4, 0);
  _mm_storeu_ps(out, _mm512_castps512_ps128(_mm512_permutexvar_ps(lanes, t)));
}
#define MOEMESH_HAVE_VSUM4 1

constexpr int kNtRows = 4;
constexpr int kNtRowsF32 = 6;
constexpr int kNtOutputs = 4;
constexpr int kNnRows = 4;
constexpr int kNnVectors = 4;

#include "core/kernels/cpu/gemm_kernels.inc"

}  // namespace

const IsaKernels& Avx512Kernels() { return kKernels; }

}  // namespace moemesh::kernels::internal
