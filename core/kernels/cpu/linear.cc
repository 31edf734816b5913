#include "core/kernels/cpu/linear.h"

#include <cblas.h>

#include <algorithm>
#include <vector>

#include "core/checkpoint/dtype.h"
#include "core/kernels/cpu/threading.h"

#if defined(__AVX2__) && defined(__F16C__) && defined(__FMA__)
#include <immintrin.h>
#define MOEMESH_FP8_AVX2 1
#endif

namespace moemesh::kernels {
namespace {

using checkpoint::WeightMatrix;

// Below this many weights a matrix is not worth waking other threads for.
constexpr int64_t kParallelMinimumWeights = 1 << 18;

#if MOEMESH_FP8_AVX2
// Eight e4m3 codes -> eight floats scaled by 2^-8. Moving the e4m3 exponent/mantissa bits up by
// 7 gives an IEEE half whose value is the e4m3 value times 2^(7-15) (subnormals included), so a
// half->float conversion does the decode; the 2^8 is folded into the block scale by the caller.
inline __m256 Fp8x8ToFloatTimes2Pow8Inverse(const uint8_t* codes) {
  const __m128i bytes = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(codes));
  const __m128i words = _mm_cvtepu8_epi16(bytes);
  const __m128i sign = _mm_slli_epi16(_mm_and_si128(words, _mm_set1_epi16(0x80)), 8);
  const __m128i magnitude = _mm_slli_epi16(_mm_and_si128(words, _mm_set1_epi16(0x7F)), 7);
  return _mm256_cvtph_ps(_mm_or_si128(sign, magnitude));
}

inline float HorizontalSum(__m256 v) {
  __m128 low = _mm256_castps256_ps128(v);
  __m128 high = _mm256_extractf128_ps(v, 1);
  low = _mm_add_ps(low, high);
  low = _mm_hadd_ps(low, low);
  low = _mm_hadd_ps(low, low);
  return _mm_cvtss_f32(low);
}
#endif

// Fused FP8 GEMV for up to kFp8FusedGemvMaxRows input rows: each weight byte is decoded once and
// used for every row. Per block: partial dot in float32, then times the block's scale. The row
// count is a template parameter so that the accumulators stay in registers; one row gets two
// accumulators (two independent FMA chains).
template <int kRows>
void Fp8FusedGemvRows(const float* x, int64_t x_stride, const WeightMatrix& weight, float* y,
                      int64_t y_stride) {
  const int64_t cols = weight.cols;
  const int64_t scale_cols = weight.scale_cols();
  const int block_cols = weight.block_cols;
#pragma omp parallel for schedule(static) num_threads(ComputeThreads()) \
    if (weight.rows * cols >= kParallelMinimumWeights)
  for (int64_t out = 0; out < weight.rows; ++out) {
    const uint8_t* codes = weight.fp8.data() + out * cols;
    const float* scales = weight.block_scales.data() + (out / weight.block_rows) * scale_cols;
    float totals[kRows] = {};
    for (int64_t block = 0; block < scale_cols; ++block) {
      const int64_t begin = block * block_cols;
      const int64_t end = std::min<int64_t>(begin + block_cols, cols);
      int64_t col = begin;
      float partial[kRows] = {};
#if MOEMESH_FP8_AVX2
      __m256 accumulators[kRows];
      for (int r = 0; r < kRows; ++r) accumulators[r] = _mm256_setzero_ps();
      if constexpr (kRows == 1) {
        __m256 second = _mm256_setzero_ps();
        for (; col + 16 <= end; col += 16) {
          accumulators[0] = _mm256_fmadd_ps(Fp8x8ToFloatTimes2Pow8Inverse(codes + col),
                                            _mm256_loadu_ps(x + col), accumulators[0]);
          second = _mm256_fmadd_ps(Fp8x8ToFloatTimes2Pow8Inverse(codes + col + 8),
                                   _mm256_loadu_ps(x + col + 8), second);
        }
        accumulators[0] = _mm256_add_ps(accumulators[0], second);
      }
      for (; col + 8 <= end; col += 8) {
        const __m256 w = Fp8x8ToFloatTimes2Pow8Inverse(codes + col);
        for (int r = 0; r < kRows; ++r) {
          accumulators[r] =
              _mm256_fmadd_ps(w, _mm256_loadu_ps(x + r * x_stride + col), accumulators[r]);
        }
      }
      for (int r = 0; r < kRows; ++r) partial[r] = HorizontalSum(accumulators[r]) * 256.0f;
#endif
      for (; col < end; ++col) {
        const float w = checkpoint::Fp8E4M3ToFloat(codes[col]);
        for (int r = 0; r < kRows; ++r) partial[r] += w * x[r * x_stride + col];
      }
      const float scale = scales[block];
      for (int r = 0; r < kRows; ++r) totals[r] += partial[r] * scale;
    }
    for (int r = 0; r < kRows; ++r) y[r * y_stride + out] = totals[r];
  }
}

void Fp8FusedGemv(const float* x, int64_t x_stride, int64_t rows, const WeightMatrix& weight,
                  float* y, int64_t y_stride) {
  static_assert(kFp8FusedGemvMaxRows == 8, "one instantiation per row count below");
  switch (rows) {
    case 1: return Fp8FusedGemvRows<1>(x, x_stride, weight, y, y_stride);
    case 2: return Fp8FusedGemvRows<2>(x, x_stride, weight, y, y_stride);
    case 3: return Fp8FusedGemvRows<3>(x, x_stride, weight, y, y_stride);
    case 4: return Fp8FusedGemvRows<4>(x, x_stride, weight, y, y_stride);
    case 5: return Fp8FusedGemvRows<5>(x, x_stride, weight, y, y_stride);
    case 6: return Fp8FusedGemvRows<6>(x, x_stride, weight, y, y_stride);
    case 7: return Fp8FusedGemvRows<7>(x, x_stride, weight, y, y_stride);
    default: return Fp8FusedGemvRows<8>(x, x_stride, weight, y, y_stride);
  }
}

// Dequantizes weight rows [row_begin, row_end) into `out` ([row_end - row_begin, cols]).
void DequantizeRows(const WeightMatrix& weight, int64_t row_begin, int64_t row_end, float* out) {
  const int64_t cols = weight.cols;
  const int64_t scale_cols = weight.scale_cols();
#pragma omp parallel for schedule(static) num_threads(ComputeThreads()) \
    if ((row_end - row_begin) * cols >= kParallelMinimumWeights)
  for (int64_t row = row_begin; row < row_end; ++row) {
    const uint8_t* codes = weight.fp8.data() + row * cols;
    const float* scales = weight.block_scales.data() + (row / weight.block_rows) * scale_cols;
    float* destination = out + (row - row_begin) * cols;
    for (int64_t block = 0; block < scale_cols; ++block) {
      const int64_t end = std::min<int64_t>((block + 1) * weight.block_cols, cols);
      const float scale = scales[block];
      int64_t col = block * weight.block_cols;
#if MOEMESH_FP8_AVX2
      // (e4m3 * 2^-8) * (scale * 2^8): both factors exact, so the product rounds exactly as
      // e4m3 * scale does (bit-identical to the scalar loop).
      const __m256 scaled = _mm256_set1_ps(scale * 256.0f);
      for (; col + 8 <= end; col += 8) {
        _mm256_storeu_ps(destination + col,
                         _mm256_mul_ps(Fp8x8ToFloatTimes2Pow8Inverse(codes + col), scaled));
      }
#endif
      for (; col < end; ++col) destination[col] = checkpoint::Fp8E4M3ToFloat(codes[col]) * scale;
    }
  }
}

}  // namespace

void LinearStrided(const float* x, int64_t x_stride, int64_t rows, const WeightMatrix& weight,
                   float* y, int64_t y_stride) {
  if (rows <= 0) return;
  const int64_t out_features = weight.rows;
  const int64_t in_features = weight.cols;
  if (weight.format == WeightMatrix::Format::kFloat32) {
    if (rows == 1) {
      cblas_sgemv(CblasRowMajor, CblasNoTrans, out_features, in_features, 1.0f,
                  weight.values.data(), in_features, x, 1, 0.0f, y, 1);
    } else {
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, out_features, in_features, 1.0f,
                  x, x_stride, weight.values.data(), in_features, 0.0f, y, y_stride);
    }
    return;
  }
  if (rows <= kFp8FusedGemvMaxRows) {
    Fp8FusedGemv(x, x_stride, rows, weight, y, y_stride);
    return;
  }
  // Prefill: one stripe of output features at a time, so the scratch stays small.
  const int64_t stripe = std::max<int64_t>(weight.block_rows, 256);
  std::vector<float> scratch(static_cast<size_t>(std::min(stripe, out_features) * in_features));
  for (int64_t begin = 0; begin < out_features; begin += stripe) {
    const int64_t end = std::min(begin + stripe, out_features);
    DequantizeRows(weight, begin, end, scratch.data());
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, rows, end - begin, in_features, 1.0f, x,
                x_stride, scratch.data(), in_features, 0.0f, y + begin, y_stride);
  }
}

void Linear(const float* x, int64_t rows, const WeightMatrix& weight, float* y) {
  LinearStrided(x, weight.cols, rows, weight, y, weight.rows);
}

}  // namespace moemesh::kernels
