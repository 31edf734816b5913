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
#include "core/kernels/cpu/gemm.h"

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

// The products of the tiled kernel are core/kernels/cpu/gemm.h's batch-invariant kernels:
// scores and the weighted sum of the latents as x B products (each element one fused
// multiply-add chain over its depth, in order), the absorbed value projection as x W^T (16 fixed
// lanes). An element's operations never depend on how many rows, positions or heads share a
// call, the thread or the SIMD path.

// Sum of values[0, count) in a fixed order: eight partial sums (lane i mod 8, in i order), then
// pairwise.
float FixedOrderSum(const float* values, int64_t count) {
  float partial[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
#if defined(__AVX2__) && defined(__FMA__)
  __m256 lanes = _mm256_setzero_ps();
  for (; i + 8 <= count; i += 8) lanes = _mm256_add_ps(lanes, _mm256_loadu_ps(values + i));
  _mm256_storeu_ps(partial, lanes);
#endif
  for (; i < count; ++i) partial[i % 8] += values[i];
  return ((partial[0] + partial[4]) + (partial[1] + partial[5])) +
         ((partial[2] + partial[6]) + (partial[3] + partial[7]));
}

// values[t] *= scale for t < count; returns the largest scaled value (-inf for count 0).
float ScaleAndMax(float* values, int64_t count, float scale) {
  float maximum = -std::numeric_limits<float>::infinity();
  int64_t t = 0;
#if defined(__AVX2__) && defined(__FMA__)
  const __m256 scale_v = _mm256_set1_ps(scale);
  __m256 max_v = _mm256_set1_ps(maximum);
  for (; t + 8 <= count; t += 8) {
    const __m256 v = _mm256_mul_ps(_mm256_loadu_ps(values + t), scale_v);
    _mm256_storeu_ps(values + t, v);
    max_v = _mm256_max_ps(max_v, v);
  }
  float lanes[8];
  _mm256_storeu_ps(lanes, max_v);
  for (float lane : lanes) maximum = std::max(maximum, lane);
#endif
  for (; t < count; ++t) {
    values[t] *= scale;
    maximum = std::max(maximum, values[t]);
  }
  return maximum;
}

// values[t] = e^(values[t] - shift) for t < count.
void ExpShifted(float* values, int64_t count, float shift) {
  for (int64_t t = 0; t < count; ++t) values[t] -= shift;
  ExpInPlace(values, count);
}

// Per-thread scratch of the tiled kernel, kept between calls (no allocation per step once warm).
struct TileScratch {
  std::vector<float> query;        // [rows, heads, kv_rank + rope]: q_latent, then q_rope
  std::vector<float> keys;         // [kv_rank + rope, block_size]: the tile transposed
  std::vector<float> accumulator;  // [rows, heads, kv_rank]
  std::vector<float> scores;       // [rows, heads, block_size]
  std::vector<float> maximum;      // [rows, heads]
  std::vector<float> denominator;  // [rows, heads]
  void Size(int64_t rows, int64_t heads, int64_t kv_rank, int64_t rope, int64_t block_size) {
    query.resize(static_cast<size_t>(rows * heads * (kv_rank + rope)));
    keys.resize(static_cast<size_t>((kv_rank + rope) * block_size));
    accumulator.resize(static_cast<size_t>(rows * heads * kv_rank));
    scores.resize(static_cast<size_t>(rows * heads * block_size));
    maximum.resize(static_cast<size_t>(rows * heads));
    denominator.resize(static_cast<size_t>(rows * heads));
  }
};

// For each of `rows` rows, q_cat[r, h] = [W_uk[h]^T q_nope[r, h], q_rope[r, h]]
// ([rows, heads, kv_rank + rope]); W_uk[h] = kv_b rows [h (nope + v), + nope). One product per
// head over all rows, so each head's W_uk is read once.
void AbsorbQuery(const MlaDims& d, const float* kv_b, const float* query, int64_t rows,
                 float* q_cat) {
  const int64_t width = d.kv_rank + d.rope;
  for (int64_t h = 0; h < d.heads; ++h) {
    const float* w_uk = kv_b + h * (d.nope + d.value_dim) * d.kv_rank;
    kernels::MatMul(query + h * d.qk_head(), d.heads * d.qk_head(), rows, w_uk, d.kv_rank, d.nope,
                    d.kv_rank, q_cat + h * width, d.heads * width);
    for (int64_t r = 0; r < rows; ++r) {
      const float* rope_query = query + (r * d.heads + h) * d.qk_head() + d.nope;
      std::copy(rope_query, rope_query + d.rope, q_cat + (r * d.heads + h) * width + d.kv_rank);
    }
  }
}

// out[r, h] = W_uv[h] context[r, h] for each row; W_uv[h] = kv_b rows [h (nope + v) + nope, + v).
void AbsorbValue(const MlaDims& d, const float* kv_b, const float* context, int64_t rows,
                 float* out) {
  for (int64_t h = 0; h < d.heads; ++h) {
    const float* w_uv = kv_b + (h * (d.nope + d.value_dim) + d.nope) * d.kv_rank;
    kernels::MatMulTransposed(context + h * d.kv_rank, d.heads * d.kv_rank, rows, w_uv, d.kv_rank,
                              d.value_dim, d.kv_rank, out + h * d.value_dim,
                              d.heads * d.value_dim);
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
  if (rows <= 0) return;
  const int64_t heads = d.heads;
  const int64_t rank = d.kv_rank;
  const int64_t key_dim = rank + d.rope;
  const int64_t block_size = cache.block_size();
  thread_local TileScratch scratch;
  scratch.Size(rows, heads, rank, d.rope, block_size);
  float* q_cat = scratch.query.data();
  float* keys = scratch.keys.data();
  float* accumulator = scratch.accumulator.data();
  float* scores = scratch.scores.data();
  float* maximum = scratch.maximum.data();
  float* denominator = scratch.denominator.data();
  constexpr float kMinusInfinity = -std::numeric_limits<float>::infinity();

  AbsorbQuery(d, kv_b, query, rows, q_cat);
  std::fill(accumulator, accumulator + rows * heads * rank, 0.0f);
  std::fill(maximum, maximum + rows * heads, kMinusInfinity);
  std::fill(denominator, denominator + rows * heads, 0.0f);
  // Tiles in ascending position; each is transposed once and visited by every row that sees
  // part of it (row i sees [0, start + i]). What a row computes in a tile depends only on the
  // tile and that row's visible width, never on the other rows.
  const int64_t last_visible = start + rows;
  for (int64_t block = 0; block * block_size < last_visible; ++block) {
    const int64_t first = block * block_size;
    const int64_t tile_width = std::min(block_size, last_visible - first);
    // The tile transposed: keys [latent | rope key, position] (row stride block_size).
    const float* latent = cache.block_latent(block, layer);
    const float* rope_key = cache.block_rope_key(block, layer);
    for (int64_t t = 0; t < tile_width; ++t) {
      const float* latent_t = latent + t * rank;
      const float* rope_t = rope_key + t * d.rope;
      for (int64_t c = 0; c < rank; ++c) keys[c * block_size + t] = latent_t[c];
      for (int64_t c = 0; c < d.rope; ++c) keys[(rank + c) * block_size + t] = rope_t[c];
    }
    // Rows that see this tile: start + i + 1 > first. Their scores [rows, heads, tile width] =
    // q_latent . latent^T + q_rope . rope_key^T in one product (a row uses its own width).
    const int64_t first_row = std::max<int64_t>(0, first - start);
    kernels::MatMul(q_cat + first_row * heads * key_dim, key_dim, (rows - first_row) * heads, keys,
                    block_size, key_dim, tile_width, scores, block_size);
    for (int64_t i = first_row; i < rows; ++i) {
      const int64_t width = std::min(block_size, start + i + 1 - first);
      float* row_maximum = maximum + i * heads;
      float* row_denominator = denominator + i * heads;
      float* row_accumulator = accumulator + i * heads * rank;
      float* row_scores_base = scores + (i - first_row) * heads * block_size;
      // Online softmax: rescale what was accumulated under the old maximum.
      for (int64_t h = 0; h < heads; ++h) {
        float* row_scores = row_scores_base + h * block_size;
        const float tile_maximum = ScaleAndMax(row_scores, width, d.softmax_scale);
        const float new_maximum = std::max(row_maximum[h], tile_maximum);
        const float correction =
            row_maximum[h] == kMinusInfinity ? 0.0f : std::exp(row_maximum[h] - new_maximum);
        ExpShifted(row_scores, width, new_maximum);
        row_denominator[h] = row_denominator[h] * correction + FixedOrderSum(row_scores, width);
        row_maximum[h] = new_maximum;
        if (correction != 1.0f) {
          float* head_accumulator = row_accumulator + h * rank;
          for (int64_t c = 0; c < rank; ++c) head_accumulator[c] *= correction;
        }
      }
      // accumulator [heads, rank] += p [heads, width] . latent [width, rank]
      kernels::MatMul(row_scores_base, block_size, heads, latent, rank, width, rank, row_accumulator,
                      rank, /*accumulate=*/true);
    }
  }
  for (int64_t rh = 0; rh < rows * heads; ++rh) {
    const float inverse = 1.0f / denominator[rh];
    float* head_accumulator = accumulator + rh * rank;
    for (int64_t c = 0; c < rank; ++c) head_accumulator[c] *= inverse;
  }
  AbsorbValue(d, kv_b, accumulator, rows, out);
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
