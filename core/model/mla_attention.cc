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

// The products of the tiled kernel, written here rather than taken from BLAS: their shapes are
// small (heads x tile x kv_rank), and every output element is computed by the same sequence of
// operations whichever code path (register block or tail) it falls in, so a row's bits cannot
// depend on how many rows, positions or heads share a call.
//
// A dot product: eight lanes accumulate a[k] b[k] for k = lane (mod 8) by FMA in k order, the
// lanes are summed pairwise, then the k tail (n mod 8) is added by FMA in order.
#if defined(__AVX2__) && defined(__FMA__)
float HorizontalSum(__m256 v) {
  __m128 sum = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  sum = _mm_add_ps(sum, _mm_movehl_ps(sum, sum));
  sum = _mm_add_ss(sum, _mm_shuffle_ps(sum, sum, 1));
  return _mm_cvtss_f32(sum);
}
#endif

float Dot(const float* a, const float* b, int64_t n) {
  int64_t k = 0;
  float sum = 0.0f;
#if defined(__AVX2__) && defined(__FMA__)
  __m256 acc = _mm256_setzero_ps();
  for (; k + 8 <= n; k += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + k), _mm256_loadu_ps(b + k), acc);
  sum = HorizontalSum(acc);
#endif
  for (; k < n; ++k) sum = std::fma(a[k], b[k], sum);
  return sum;
}

// scores[h * score_stride + t] = sum over k < dim, in k order, of q[h * dim + k] *
// keys_t[k * key_stride + t], each term by FMA from 0; h < heads, t < width_padded (a multiple of
// 8; keys_t holds the tile transposed, [dim, key_stride], so positions lie along the vector).
void TileScores(const float* q, int64_t dim, const float* keys_t, int64_t key_stride,
                int64_t heads, int64_t width_padded, float* scores, int64_t score_stride) {
#if defined(__AVX2__) && defined(__FMA__)
  int64_t h = 0;
  // Register block: 4 heads x 16 positions.
  for (; h + 4 <= heads; h += 4) {
    int64_t t = 0;
    for (; t + 16 <= width_padded; t += 16) {
      __m256 acc[8];
      for (__m256& a : acc) a = _mm256_setzero_ps();
      for (int64_t k = 0; k < dim; ++k) {
        const __m256 key0 = _mm256_loadu_ps(keys_t + k * key_stride + t);
        const __m256 key1 = _mm256_loadu_ps(keys_t + k * key_stride + t + 8);
        for (int j = 0; j < 4; ++j) {
          const __m256 qv = _mm256_broadcast_ss(q + (h + j) * dim + k);
          acc[2 * j] = _mm256_fmadd_ps(qv, key0, acc[2 * j]);
          acc[2 * j + 1] = _mm256_fmadd_ps(qv, key1, acc[2 * j + 1]);
        }
      }
      for (int j = 0; j < 4; ++j) {
        _mm256_storeu_ps(scores + (h + j) * score_stride + t, acc[2 * j]);
        _mm256_storeu_ps(scores + (h + j) * score_stride + t + 8, acc[2 * j + 1]);
      }
    }
    for (; t < width_padded; t += 8) {
      __m256 acc[4];
      for (__m256& a : acc) a = _mm256_setzero_ps();
      for (int64_t k = 0; k < dim; ++k) {
        const __m256 key0 = _mm256_loadu_ps(keys_t + k * key_stride + t);
        for (int j = 0; j < 4; ++j) {
          acc[j] = _mm256_fmadd_ps(_mm256_broadcast_ss(q + (h + j) * dim + k), key0, acc[j]);
        }
      }
      for (int j = 0; j < 4; ++j) _mm256_storeu_ps(scores + (h + j) * score_stride + t, acc[j]);
    }
  }
  for (; h < heads; ++h) {
    for (int64_t t = 0; t < width_padded; t += 8) {
      __m256 acc = _mm256_setzero_ps();
      for (int64_t k = 0; k < dim; ++k) {
        acc = _mm256_fmadd_ps(_mm256_broadcast_ss(q + h * dim + k),
                              _mm256_loadu_ps(keys_t + k * key_stride + t), acc);
      }
      _mm256_storeu_ps(scores + h * score_stride + t, acc);
    }
  }
#else
  for (int64_t h = 0; h < heads; ++h) {
    for (int64_t t = 0; t < width_padded; ++t) {
      float acc = 0.0f;
      for (int64_t k = 0; k < dim; ++k) acc = std::fma(q[h * dim + k], keys_t[k * key_stride + t], acc);
      scores[h * score_stride + t] = acc;
    }
  }
#endif
}

// acc[h * acc_stride + c] += sum over t < width, in t order, of p[h * p_stride + t] *
// values[t * dim + c], each term by FMA; h < heads, c < dim.
void WeightedSum(const float* p, int64_t p_stride, const float* values, int64_t dim,
                 int64_t heads, int64_t width, float* acc, int64_t acc_stride) {
  for (int64_t h = 0; h < heads; ++h) {
    const float* ph = p + h * p_stride;
    float* ah = acc + h * acc_stride;
    int64_t c = 0;
#if defined(__AVX2__) && defined(__FMA__)
    for (; c + 32 <= dim; c += 32) {
      __m256 a0 = _mm256_loadu_ps(ah + c), a1 = _mm256_loadu_ps(ah + c + 8);
      __m256 a2 = _mm256_loadu_ps(ah + c + 16), a3 = _mm256_loadu_ps(ah + c + 24);
      for (int64_t t = 0; t < width; ++t) {
        const __m256 weight = _mm256_set1_ps(ph[t]);
        const float* v = values + t * dim + c;
        a0 = _mm256_fmadd_ps(weight, _mm256_loadu_ps(v), a0);
        a1 = _mm256_fmadd_ps(weight, _mm256_loadu_ps(v + 8), a1);
        a2 = _mm256_fmadd_ps(weight, _mm256_loadu_ps(v + 16), a2);
        a3 = _mm256_fmadd_ps(weight, _mm256_loadu_ps(v + 24), a3);
      }
      _mm256_storeu_ps(ah + c, a0);
      _mm256_storeu_ps(ah + c + 8, a1);
      _mm256_storeu_ps(ah + c + 16, a2);
      _mm256_storeu_ps(ah + c + 24, a3);
    }
    for (; c + 8 <= dim; c += 8) {
      __m256 a0 = _mm256_loadu_ps(ah + c);
      for (int64_t t = 0; t < width; ++t) {
        a0 = _mm256_fmadd_ps(_mm256_set1_ps(ph[t]), _mm256_loadu_ps(values + t * dim + c), a0);
      }
      _mm256_storeu_ps(ah + c, a0);
    }
#endif
    for (; c < dim; ++c) {
      float a = ah[c];
      for (int64_t t = 0; t < width; ++t) a = std::fma(ph[t], values[t * dim + c], a);
      ah[c] = a;
    }
  }
}

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
  std::vector<float> query;        // [heads, kv_rank + rope]: q_latent, then q_rope
  std::vector<float> keys;         // [kv_rank + rope, padded block]: the tile transposed
  std::vector<float> accumulator;  // [heads, kv_rank]
  std::vector<float> scores;       // [heads, padded block]
  std::vector<float> maximum;      // [heads]
  std::vector<float> denominator;  // [heads]
  void Size(int64_t heads, int64_t kv_rank, int64_t rope, int64_t padded_block) {
    query.resize(static_cast<size_t>(heads * (kv_rank + rope)));
    keys.resize(static_cast<size_t>((kv_rank + rope) * padded_block));
    accumulator.resize(static_cast<size_t>(heads * kv_rank));
    scores.resize(static_cast<size_t>(heads * padded_block));
    maximum.resize(static_cast<size_t>(heads));
    denominator.resize(static_cast<size_t>(heads));
  }
};

// For one row, q_cat[h] = [W_uk[h]^T q_nope[h], q_rope[h]] ([heads, kv_rank + rope]);
// W_uk[h] = kv_b rows [h (nope + v), + nope).
void AbsorbQuery(const MlaDims& d, const float* kv_b, const float* row_query, float* q_cat) {
  const int64_t width = d.kv_rank + d.rope;
  for (int64_t h = 0; h < d.heads; ++h) {
    float* target = q_cat + h * width;
    std::fill(target, target + d.kv_rank, 0.0f);
    WeightedSum(row_query + h * d.qk_head(), 0, kv_b + h * (d.nope + d.value_dim) * d.kv_rank,
                d.kv_rank, /*heads=*/1, /*width=*/d.nope, target, 0);
    std::copy(row_query + h * d.qk_head() + d.nope, row_query + (h + 1) * d.qk_head(),
              target + d.kv_rank);
  }
}

// out[h] = W_uv[h] context[h] for one row; W_uv[h] = kv_b rows [h (nope + v) + nope, + v).
void AbsorbValue(const MlaDims& d, const float* kv_b, const float* context, float* row_out) {
  for (int64_t h = 0; h < d.heads; ++h) {
    const float* w_uv = kv_b + (h * (d.nope + d.value_dim) + d.nope) * d.kv_rank;
    for (int64_t v = 0; v < d.value_dim; ++v) {
      row_out[h * d.value_dim + v] = Dot(w_uv + v * d.kv_rank, context + h * d.kv_rank, d.kv_rank);
    }
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
  const int64_t key_dim = rank + d.rope;
  const int64_t block_size = cache.block_size();
  const int64_t padded = (block_size + 7) / 8 * 8;
  thread_local TileScratch scratch;
  scratch.Size(heads, rank, d.rope, padded);
  float* q_cat = scratch.query.data();
  float* keys = scratch.keys.data();
  float* accumulator = scratch.accumulator.data();
  float* scores = scratch.scores.data();
  float* maximum = scratch.maximum.data();
  float* denominator = scratch.denominator.data();
  constexpr float kMinusInfinity = -std::numeric_limits<float>::infinity();

  for (int64_t i = 0; i < rows; ++i) {
    const float* row_query = query + i * heads * d.qk_head();
    const int64_t visible = start + i + 1;
    AbsorbQuery(d, kv_b, row_query, q_cat);
    std::fill(accumulator, accumulator + heads * rank, 0.0f);
    std::fill(maximum, maximum + heads, kMinusInfinity);
    std::fill(denominator, denominator + heads, 0.0f);
    for (int64_t block = 0; block * block_size < visible; ++block) {
      const int64_t first = block * block_size;
      const int64_t width = std::min(block_size, visible - first);
      const int64_t width_padded = (width + 7) / 8 * 8;
      // The tile transposed: keys [latent | rope key, position], zero past `width`.
      const float* latent = cache.block_latent(block, layer);
      const float* rope_key = cache.block_rope_key(block, layer);
      for (int64_t t = 0; t < width; ++t) {
        const float* latent_t = latent + t * rank;
        const float* rope_t = rope_key + t * d.rope;
        for (int64_t c = 0; c < rank; ++c) keys[c * padded + t] = latent_t[c];
        for (int64_t c = 0; c < d.rope; ++c) keys[(rank + c) * padded + t] = rope_t[c];
      }
      for (int64_t c = 0; c < key_dim; ++c) {
        std::fill(keys + c * padded + width, keys + c * padded + width_padded, 0.0f);
      }
      // scores [heads, width] = q_latent . latent^T + q_rope . rope_key^T
      TileScores(q_cat, key_dim, keys, padded, heads, width_padded, scores, padded);
      // Online softmax: rescale what was accumulated under the old maximum.
      for (int64_t h = 0; h < heads; ++h) {
        float* row_scores = scores + h * padded;
        const float tile_maximum = ScaleAndMax(row_scores, width, d.softmax_scale);
        const float new_maximum = std::max(maximum[h], tile_maximum);
        const float correction =
            maximum[h] == kMinusInfinity ? 0.0f : std::exp(maximum[h] - new_maximum);
        ExpShifted(row_scores, width, new_maximum);
        denominator[h] = denominator[h] * correction + FixedOrderSum(row_scores, width);
        maximum[h] = new_maximum;
        if (correction != 1.0f) {
          float* row_accumulator = accumulator + h * rank;
          for (int64_t c = 0; c < rank; ++c) row_accumulator[c] *= correction;
        }
      }
      // accumulator [heads, rank] += p [heads, width] . latent [width, rank]
      WeightedSum(scores, padded, latent, rank, heads, width, accumulator, rank);
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
