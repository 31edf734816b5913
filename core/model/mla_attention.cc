#include "core/model/mla_attention.h"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

#include "core/kernels/cpu/elementwise.h"

namespace moemesh::model {
namespace {

// Cephes expf constants.
constexpr float kExpHigh = 88.3762626647949f;
constexpr float kExpLow = -87.3365447504f;
constexpr float kLog2e = 1.44269504088896341f;
constexpr float kLn2High = 0.693359375f;
constexpr float kLn2Low = -2.12194440e-4f;
constexpr float kExpP0 = 1.9875691500e-4f;
constexpr float kExpP1 = 1.3981999507e-3f;
constexpr float kExpP2 = 8.3334519073e-3f;
constexpr float kExpP3 = 4.1665795894e-2f;
constexpr float kExpP4 = 1.6666665459e-1f;
constexpr float kExpP5 = 5.0000001201e-1f;

#if defined(__AVX2__) && defined(__FMA__)
__m256 Exp8(__m256 x) {
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(kExpLow)), _mm256_set1_ps(kExpHigh));
  const __m256 n = _mm256_floor_ps(
      _mm256_fmadd_ps(x, _mm256_set1_ps(kLog2e), _mm256_set1_ps(0.5f)));
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2High), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(kLn2Low), r);
  __m256 y = _mm256_set1_ps(kExpP0);
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(kExpP1));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(kExpP2));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(kExpP3));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(kExpP4));
  y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(kExpP5));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(r, r), r);
  y = _mm256_add_ps(y, _mm256_set1_ps(1.0f));
  const __m256i exponent = _mm256_slli_epi32(
      _mm256_add_epi32(_mm256_cvttps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(y, _mm256_castsi256_ps(exponent));
}
#else
float Exp1(float x) {
  x = std::min(std::max(x, kExpLow), kExpHigh);
  const float n = std::floor(std::fma(x, kLog2e, 0.5f));
  float r = std::fma(-n, kLn2High, x);
  r = std::fma(-n, kLn2Low, r);
  float y = kExpP0;
  y = std::fma(y, r, kExpP1);
  y = std::fma(y, r, kExpP2);
  y = std::fma(y, r, kExpP3);
  y = std::fma(y, r, kExpP4);
  y = std::fma(y, r, kExpP5);
  y = std::fma(y, r * r, r) + 1.0f;
  return std::ldexp(y, static_cast<int>(n));
}
#endif

// Sum of values[0, count) in a fixed order (eight interleaved partial sums, then pairwise).
float FixedOrderSum(const float* values, int64_t count) {
  float partial[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  for (int64_t i = 0; i < count; ++i) partial[i % 8] += values[i];
  return ((partial[0] + partial[4]) + (partial[1] + partial[5])) +
         ((partial[2] + partial[6]) + (partial[3] + partial[7]));
}

// Per-thread scratch of the tiled kernel, kept between calls (no allocation per step once warm).
struct TileScratch {
  std::vector<float> query_latent;  // [heads, kv_rank]
  std::vector<float> accumulator;   // [heads, kv_rank]
  std::vector<float> scores;        // [heads, block_size]
  std::vector<float> maximum;       // [heads]
  std::vector<float> denominator;   // [heads]
  void Size(int64_t heads, int64_t kv_rank, int64_t block_size) {
    query_latent.resize(static_cast<size_t>(heads * kv_rank));
    accumulator.resize(static_cast<size_t>(heads * kv_rank));
    scores.resize(static_cast<size_t>(heads * block_size));
    maximum.resize(static_cast<size_t>(heads));
    denominator.resize(static_cast<size_t>(heads));
  }
};

// q_latent[h] = W_uk[h]^T q_nope[h] for one row; W_uk[h] = kv_b rows [h (nope + v), + nope).
void AbsorbQuery(const MlaDims& d, const float* kv_b, const float* row_query, float* q_latent) {
  for (int64_t h = 0; h < d.heads; ++h) {
    cblas_sgemv(CblasRowMajor, CblasTrans, static_cast<int>(d.nope), static_cast<int>(d.kv_rank),
                1.0f, kv_b + h * (d.nope + d.value_dim) * d.kv_rank, static_cast<int>(d.kv_rank),
                row_query + h * d.qk_head(), 1, 0.0f, q_latent + h * d.kv_rank, 1);
  }
}

// out[h] = W_uv[h] context[h] for one row; W_uv[h] = kv_b rows [h (nope + v) + nope, + v).
void AbsorbValue(const MlaDims& d, const float* kv_b, const float* context, float* row_out) {
  for (int64_t h = 0; h < d.heads; ++h) {
    cblas_sgemv(CblasRowMajor, CblasNoTrans, static_cast<int>(d.value_dim),
                static_cast<int>(d.kv_rank), 1.0f,
                kv_b + (h * (d.nope + d.value_dim) + d.nope) * d.kv_rank,
                static_cast<int>(d.kv_rank), context + h * d.kv_rank, 1, 0.0f,
                row_out + h * d.value_dim, 1);
  }
}

}  // namespace

void ExpInPlace(float* x, int64_t count) {
#if defined(__AVX2__) && defined(__FMA__)
  int64_t i = 0;
  for (; i + 8 <= count; i += 8) _mm256_storeu_ps(x + i, Exp8(_mm256_loadu_ps(x + i)));
  if (i < count) {
    float tail[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    std::copy(x + i, x + count, tail);
    _mm256_storeu_ps(tail, Exp8(_mm256_loadu_ps(tail)));
    std::copy(tail, tail + (count - i), x + i);
  }
#else
  for (int64_t i = 0; i < count; ++i) x[i] = Exp1(x[i]);
#endif
}

void MlaAttentionTiled(const MlaDims& d, const LatentCache& cache, int layer, const float* kv_b,
                       const float* query, int64_t rows, int64_t start, float* out) {
  const int64_t heads = d.heads;
  const int64_t rank = d.kv_rank;
  const int64_t block_size = cache.block_size();
  thread_local TileScratch scratch;
  scratch.Size(heads, rank, block_size);
  float* q_latent = scratch.query_latent.data();
  float* accumulator = scratch.accumulator.data();
  float* scores = scratch.scores.data();
  float* maximum = scratch.maximum.data();
  float* denominator = scratch.denominator.data();
  constexpr float kMinusInfinity = -std::numeric_limits<float>::infinity();

  for (int64_t i = 0; i < rows; ++i) {
    const float* row_query = query + i * heads * d.qk_head();
    const int64_t visible = start + i + 1;
    AbsorbQuery(d, kv_b, row_query, q_latent);
    std::fill(accumulator, accumulator + heads * rank, 0.0f);
    std::fill(maximum, maximum + heads, kMinusInfinity);
    std::fill(denominator, denominator + heads, 0.0f);
    for (int64_t block = 0; block * block_size < visible; ++block) {
      const int64_t first = block * block_size;
      const int64_t width = std::min(block_size, visible - first);
      // scores [heads, width] = q_latent . latent^T + q_rope . rope_key^T
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(heads),
                  static_cast<int>(width), static_cast<int>(rank), 1.0f, q_latent,
                  static_cast<int>(rank), cache.block_latent(block, layer), static_cast<int>(rank),
                  0.0f, scores, static_cast<int>(block_size));
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(heads),
                  static_cast<int>(width), static_cast<int>(d.rope), 1.0f, row_query + d.nope,
                  static_cast<int>(d.qk_head()), cache.block_rope_key(block, layer),
                  static_cast<int>(d.rope), 1.0f, scores, static_cast<int>(block_size));
      // Online softmax: rescale what was accumulated under the old maximum.
      for (int64_t h = 0; h < heads; ++h) {
        float* row_scores = scores + h * block_size;
        float tile_maximum = kMinusInfinity;
        for (int64_t t = 0; t < width; ++t) {
          row_scores[t] *= d.softmax_scale;
          tile_maximum = std::max(tile_maximum, row_scores[t]);
        }
        const float new_maximum = std::max(maximum[h], tile_maximum);
        const float correction =
            maximum[h] == kMinusInfinity ? 0.0f : std::exp(maximum[h] - new_maximum);
        for (int64_t t = 0; t < width; ++t) row_scores[t] -= new_maximum;
        ExpInPlace(row_scores, width);
        denominator[h] = denominator[h] * correction + FixedOrderSum(row_scores, width);
        maximum[h] = new_maximum;
        if (correction != 1.0f) {
          float* row_accumulator = accumulator + h * rank;
          for (int64_t c = 0; c < rank; ++c) row_accumulator[c] *= correction;
        }
      }
      // accumulator [heads, rank] += p [heads, width] . latent [width, rank]
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(heads),
                  static_cast<int>(rank), static_cast<int>(width), 1.0f, scores,
                  static_cast<int>(block_size), cache.block_latent(block, layer),
                  static_cast<int>(rank), 1.0f, accumulator, static_cast<int>(rank));
    }
    for (int64_t h = 0; h < heads; ++h) {
      const float inverse = 1.0f / denominator[h];
      float* row_accumulator = accumulator + h * rank;
      for (int64_t c = 0; c < rank; ++c) row_accumulator[c] *= inverse;
    }
    AbsorbValue(d, kv_b, accumulator, out + i * heads * d.value_dim);
  }
}

void MlaAttentionNaive(const MlaDims& d, const LatentCache& cache, int layer, const float* kv_b,
                       const float* query, int64_t rows, int64_t start, float* out) {
  const int64_t heads = d.heads;
  const int64_t rank = d.kv_rank;
  const int64_t positions = start + rows;
  const int64_t block_size = cache.block_size();
  const int64_t query_rows = rows * heads;
  std::vector<float> q_latent(static_cast<size_t>(query_rows * rank));
  for (int64_t h = 0; h < heads; ++h) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(rows),
                static_cast<int>(rank), static_cast<int>(d.nope), 1.0f, query + h * d.qk_head(),
                static_cast<int>(heads * d.qk_head()), kv_b + h * (d.nope + d.value_dim) * rank,
                static_cast<int>(rank), 0.0f, q_latent.data() + h * rank,
                static_cast<int>(heads * rank));
  }
  // scores [rows * heads, positions], block by block into the matching columns.
  std::vector<float> scores(static_cast<size_t>(query_rows * positions), 0.0f);
  std::vector<float> q_rope(static_cast<size_t>(query_rows * d.rope));
  for (int64_t r = 0; r < query_rows; ++r) {
    std::copy(query + r * d.qk_head() + d.nope, query + r * d.qk_head() + d.qk_head(),
              q_rope.begin() + r * d.rope);
  }
  for (int64_t block = 0; block * block_size < positions; ++block) {
    const int64_t first = block * block_size;
    const int64_t width = std::min(block_size, positions - first);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(query_rows),
                static_cast<int>(width), static_cast<int>(rank), 1.0f, q_latent.data(),
                static_cast<int>(rank), cache.block_latent(block, layer), static_cast<int>(rank),
                0.0f, scores.data() + first, static_cast<int>(positions));
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(query_rows),
                static_cast<int>(width), static_cast<int>(d.rope), 1.0f, q_rope.data(),
                static_cast<int>(d.rope), cache.block_rope_key(block, layer),
                static_cast<int>(d.rope), 1.0f, scores.data() + first,
                static_cast<int>(positions));
  }
  for (int64_t i = 0; i < rows; ++i) {
    const int64_t visible = start + i + 1;
    for (int64_t h = 0; h < heads; ++h) {
      float* row_scores = scores.data() + (i * heads + h) * positions;
      for (int64_t t = 0; t < visible; ++t) row_scores[t] *= d.softmax_scale;
      kernels::Softmax(row_scores, visible);
      std::fill(row_scores + visible, row_scores + positions, 0.0f);
    }
  }
  std::vector<float> context(static_cast<size_t>(query_rows * rank));
  for (int64_t block = 0; block * block_size < positions; ++block) {
    const int64_t first = block * block_size;
    const int64_t width = std::min(block_size, positions - first);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(query_rows),
                static_cast<int>(rank), static_cast<int>(width), 1.0f, scores.data() + first,
                static_cast<int>(positions), cache.block_latent(block, layer),
                static_cast<int>(rank), block == 0 ? 0.0f : 1.0f, context.data(),
                static_cast<int>(rank));
  }
  for (int64_t h = 0; h < heads; ++h) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(rows),
                static_cast<int>(d.value_dim), static_cast<int>(rank), 1.0f,
                context.data() + h * rank, static_cast<int>(heads * rank),
                kv_b + (h * (d.nope + d.value_dim) + d.nope) * rank, static_cast<int>(rank), 0.0f,
                out + h * d.value_dim, static_cast<int>(heads * d.value_dim));
  }
}

}  // namespace moemesh::model
