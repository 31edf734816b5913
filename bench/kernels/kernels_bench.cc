// GFLOP/s of the CPU kernels at the shapes of a prefill step (bench/README.md, "Kernels"):
//   BM_LinearFp8/M/N/K   y [M, N] = x [M, K] W^T, W FP8 e4m3 with 128x128 block scales
//   BM_MatMulTransposed/M/N/K   the same with float32 W
//   BM_MlaAttention/P    one layer of MLA attention (16 heads, kv_rank 256, rope 32) for a
//                        P-token prompt (causal), absorbed form
// Threads: --threads N (default 1) sets kernels::SetComputeThreads.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <cstring>
#include <random>
#include <vector>

#include "core/checkpoint/weight_matrix.h"
#include "core/kernels/cpu/gemm.h"
#include "core/kernels/cpu/linear.h"
#include "core/kernels/cpu/packed_bf16.h"
#include "core/kernels/cpu/threading.h"
#include "core/model/latent_cache.h"
#include "core/model/mla_attention.h"

namespace {

using moemesh::checkpoint::WeightMatrix;

std::vector<float> RandomFloats(int64_t count, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> uniform(-scale, scale);
  std::vector<float> values(static_cast<size_t>(count));
  for (float& v : values) v = uniform(rng);
  return values;
}

WeightMatrix Shaped(WeightMatrix::Format format, int64_t rows, int64_t cols) {
  WeightMatrix w;
  w.format = format;
  w.rows = rows;
  w.cols = cols;
  return w;
}

WeightMatrix RandomFp8(int64_t rows, int64_t cols, uint32_t seed) {
  WeightMatrix w = Shaped(WeightMatrix::Format::kFp8Block, rows, cols);
  std::mt19937 rng(seed);
  w.fp8.resize(static_cast<size_t>(rows * cols));
  for (uint8_t& code : w.fp8) {
    code = static_cast<uint8_t>(rng() & 0xFF);
    if ((code & 0x7F) == 0x7F) code = 0x30;  // no NaN codes
  }
  w.block_scales = RandomFloats(w.scale_rows() * w.scale_cols(), seed + 1, 0.01f);
  return w;
}

// BF16 weights whose high bytes take few values per row (as trained weights do), so that every
// row packs (packed_bf16.h).
WeightMatrix RandomBf16(int64_t rows, int64_t cols, uint32_t seed) {
  WeightMatrix w = Shaped(WeightMatrix::Format::kBFloat16, rows, cols);
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  w.bf16.resize(static_cast<size_t>(rows * cols));
  for (uint16_t& bits : w.bf16) {
    float value = normal(rng);
    uint32_t raw;
    std::memcpy(&raw, &value, 4);
    bits = static_cast<uint16_t>(raw >> 16);
  }
  return w;
}

void SetFlops(benchmark::State& state, double flops_per_iteration) {
  state.counters["GFLOP/s"] = benchmark::Counter(flops_per_iteration * 1e-9 *
                                                     static_cast<double>(state.iterations()),
                                                 benchmark::Counter::kIsRate);
}

// Times product(x, m, y) for y [m, n] = x [m, k] W^T; counts 2 m n k FLOPs per call and, when
// weight_bytes > 0, that many bytes of weights per call.
template <typename Product>
void RunProduct(benchmark::State& state, int64_t m, int64_t n, int64_t k, int64_t weight_bytes,
                const Product& product) {
  const std::vector<float> x = RandomFloats(m * k, 3);
  std::vector<float> y(static_cast<size_t>(m * n));
  for (auto _ : state) {
    product(x.data(), m, y.data());
    benchmark::DoNotOptimize(y.data());
  }
  SetFlops(state, 2.0 * m * n * k);
  if (weight_bytes > 0) {
    state.SetBytesProcessed(static_cast<int64_t>(state.iterations()) * weight_bytes);
  }
}

void BM_LinearFp8(benchmark::State& state) {
  const int64_t m = state.range(0), n = state.range(1), k = state.range(2);
  const WeightMatrix w = RandomFp8(n, k, 7);
  RunProduct(state, m, n, k, 0, [&](const float* x, int64_t rows, float* y) {
    moemesh::kernels::Linear(x, rows, w, y);
  });
}

void BM_MatMulTransposed(benchmark::State& state) {
  const int64_t m = state.range(0), n = state.range(1), k = state.range(2);
  const std::vector<float> w = RandomFloats(n * k, 7);
  RunProduct(state, m, n, k, 0, [&](const float* x, int64_t rows, float* y) {
    moemesh::kernels::MatMulTransposed(x, k, rows, w.data(), k, n, k, y, n);
  });
}

void BM_MlaAttention(benchmark::State& state) {
  const int64_t prompt = state.range(0);
  moemesh::model::MlaDims dims{16, 64, 32, 64, 256, 0.1f};
  auto pool = std::make_shared<moemesh::model::LatentBlockPool>(1, dims.kv_rank, dims.rope, 64,
                                                                (prompt + 63) / 64 + 1);
  moemesh::model::LatentCache cache(pool);
  const std::vector<float> latent = RandomFloats(prompt * dims.kv_rank, 1);
  const std::vector<float> rope_key = RandomFloats(prompt * dims.rope, 2);
  if (!cache.Append(0, latent.data(), rope_key.data(), prompt).ok()) std::abort();
  cache.Commit(prompt);
  const std::vector<float> kv_b =
      RandomFloats(dims.heads * (dims.nope + dims.value_dim) * dims.kv_rank, 4, 0.05f);
  const std::vector<float> query = RandomFloats(prompt * dims.heads * dims.qk_head(), 5);
  std::vector<float> out(static_cast<size_t>(prompt * dims.heads * dims.value_dim));
  for (auto _ : state) {
    moemesh::model::MlaAttentionTiled(dims, cache, 0, kv_b.data(), query.data(), prompt, 0,
                                      out.data());
    benchmark::DoNotOptimize(out.data());
  }
  // Scores (kv_rank + rope) and values (kv_rank) over (P + 1) / 2 positions on average, plus the
  // two absorbed kv_b products per row.
  const double positions = static_cast<double>(prompt) * (prompt + 1) / 2;
  SetFlops(state, 2.0 * dims.heads *
                      (positions * (2 * dims.kv_rank + dims.rope) +
                       static_cast<double>(prompt) * (dims.nope + dims.value_dim) * dims.kv_rank));
}

// The lm_head product of decode (vocab 129,280 x hidden 1,024): BF16 as stored, and packed.
void BM_LmHeadBf16(benchmark::State& state) {
  constexpr int64_t n = 129280, k = 1024;
  static const WeightMatrix w = RandomBf16(n, k, 11);
  RunProduct(state, state.range(0), n, k, n * k * 2, [&](const float* x, int64_t rows, float* y) {
    moemesh::kernels::Linear(x, rows, w, y);
  });
}

void BM_LmHeadPacked(benchmark::State& state) {
  constexpr int64_t n = 129280, k = 1024;
  static const moemesh::kernels::PackedBf16Matrix w =
      *moemesh::kernels::PackedBf16Matrix::Pack(RandomBf16(n, k, 11));
  RunProduct(state, state.range(0), n, k, n * k * 3 / 2,
             [&](const float* x, int64_t rows, float* y) {
               moemesh::kernels::LinearPacked(x, rows, w, y);
             });
}

BENCHMARK(BM_LmHeadBf16)->Arg(1)->Arg(8)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_LmHeadPacked)->Arg(1)->Arg(8)->Unit(benchmark::kMillisecond);

// Expert gate/up (48 rows, 1024 -> 512), expert down (512 -> 1024), attention projections and the
// dense MLP at 512 rows.
BENCHMARK(BM_LinearFp8)->Args({48, 512, 1024})->Args({48, 1024, 512})->Args({512, 1024, 1024})
    ->Args({512, 1536, 384})->Args({512, 2816, 1024})->Args({8, 512, 1024})
    ->Unit(benchmark::kMillisecond);
BENCHMARK(BM_MatMulTransposed)->Args({512, 1024, 1024})->Args({16, 64, 256})->Args({48, 512, 1024})->Args({64, 64, 256})->Unit(benchmark::kMillisecond);
BENCHMARK(BM_MlaAttention)->Arg(512)->Arg(2048)->Unit(benchmark::kMillisecond);

}  // namespace

int main(int argc, char** argv) {
  int threads = 1;
  std::vector<char*> rest;
  for (int i = 0; i < argc; ++i) {
    if (std::strncmp(argv[i], "--threads=", 10) == 0) {
      threads = std::atoi(argv[i] + 10);
    } else {
      rest.push_back(argv[i]);
    }
  }
  moemesh::kernels::SetComputeThreads(threads);
  int rest_count = static_cast<int>(rest.size());
  benchmark::Initialize(&rest_count, rest.data());
  benchmark::RunSpecifiedBenchmarks();
  return 0;
}
