// Engine benchmark: decode tokens/s at several batch sizes and prefill tokens/s of the
// single-process model (DeepseekModel + ExpertShard) on a checkpoint, each printed next to the
// machine's bound:
//   decode:  bytes read per step (weights actually touched, counted from the loaded tensors'
//            StorageBytes and the gate's real choices, + latent KV reads) / measured memory
//            read bandwidth;
//   prefill: FLOPs per token / the faster of OpenBLAS sgemm and moemesh's own float32 GEMM.
// Wall times are medians over --repetitions runs (the machine may be shared).
//
// usage: bench_engine --model DIR [--threads N] [--batches 1,8,32] [--context 128]
//                     [--decode-steps 16] [--prefill-tokens 512] [--repetitions 5]
#include <immintrin.h>
#include <cblas.h>
#include <omp.h>

#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <optional>
#include <random>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "core/checkpoint/checkpoint.h"
#include "core/kernels/cpu/gemm.h"
#include "core/kernels/cpu/linear.h"
#include "core/kernels/cpu/packed_bf16.h"
#include "core/kernels/cpu/simd_path.h"
#include "core/kernels/cpu/threading.h"
#include "core/model/deepseek_model.h"
#include "core/model/expert_shard.h"

namespace {

using moemesh::checkpoint::WeightMatrix;
using moemesh::model::DeepseekModel;
using moemesh::model::ExpertShard;
using moemesh::model::FeedForwardWeights;
using moemesh::model::GateDecision;
using moemesh::model::LatentCache;
using moemesh::model::RoutedExperts;
using moemesh::model::SequenceStep;
using Clock = std::chrono::steady_clock;

double Seconds(Clock::time_point begin) {
  return std::chrono::duration<double>(Clock::now() - begin).count();
}

// CPU seconds of the whole process (all threads; spinning OpenMP threads count too). On a shared
// machine wall time also counts the time other processes held the cores; CPU time does not.
double ProcessCpuSeconds() {
  timespec now;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &now);
  return static_cast<double>(now.tv_sec) + 1e-9 * static_cast<double>(now.tv_nsec);
}

double Median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const size_t n = values.size();
  return n % 2 ? values[n / 2] : 0.5 * (values[n / 2 - 1] + values[n / 2]);
}

void Die(const std::string& message) {
  std::fprintf(stderr, "bench_engine: %s\n", message.c_str());
  std::exit(1);
}

// Counts the routed-expert bytes each Dispatch touches (distinct experts of the step, each read
// once), then computes them in process.
class CountingExperts : public RoutedExperts {
 public:
  CountingExperts(ExpertShard* shard, int64_t expert_bytes) : shard_(shard), expert_bytes_(expert_bytes) {}
  absl::StatusOr<Combine> Dispatch(int layer, const float* hidden, int64_t rows,
                                   const GateDecision& decision) override {
    std::set<int32_t> distinct(decision.experts.begin(), decision.experts.end());
    bytes_ += static_cast<int64_t>(distinct.size()) * expert_bytes_;
    experts_touched_ += static_cast<int64_t>(distinct.size());
    ++dispatches_;
    return shard_->Dispatch(layer, hidden, rows, decision);
  }
  void Reset() { bytes_ = experts_touched_ = dispatches_ = 0; }
  int64_t bytes() const { return bytes_; }
  int64_t experts_touched() const { return experts_touched_; }
  int64_t dispatches() const { return dispatches_; }

 private:
  ExpertShard* shard_;
  int64_t expert_bytes_;
  int64_t bytes_ = 0, experts_touched_ = 0, dispatches_ = 0;
};

// --- Machine bounds -------------------------------------------------------------------------

// Read bandwidth (bytes/s): sum of a buffer of floats with four independent AVX accumulators (so
// the adds never limit the loop, only the memory does), best of `repetitions`.
double ReadBandwidth(const std::vector<float>& buffer, int threads, int repetitions) {
  double best = 0;
  volatile float sink = 0;
  const int64_t blocks = static_cast<int64_t>(buffer.size()) / 32;
  const float* data = buffer.data();
  for (int rep = 0; rep < repetitions; ++rep) {
    const auto begin = Clock::now();
    float total = 0;
#pragma omp parallel num_threads(threads) reduction(+ : total)
    {
      __m256 sum0 = _mm256_setzero_ps(), sum1 = _mm256_setzero_ps();
      __m256 sum2 = _mm256_setzero_ps(), sum3 = _mm256_setzero_ps();
#pragma omp for schedule(static)
      for (int64_t block = 0; block < blocks; ++block) {
        const float* p = data + block * 32;
        sum0 = _mm256_add_ps(sum0, _mm256_loadu_ps(p));
        sum1 = _mm256_add_ps(sum1, _mm256_loadu_ps(p + 8));
        sum2 = _mm256_add_ps(sum2, _mm256_loadu_ps(p + 16));
        sum3 = _mm256_add_ps(sum3, _mm256_loadu_ps(p + 24));
      }
      alignas(32) float lanes[8];
      _mm256_store_ps(lanes, _mm256_add_ps(_mm256_add_ps(sum0, sum1), _mm256_add_ps(sum2, sum3)));
      for (float lane : lanes) total += lane;
    }
    const double seconds = Seconds(begin);
    sink = sink + total;
    best = std::max(best, static_cast<double>(blocks) * 32 * sizeof(float) / seconds);
  }
  return best;
}

// memcpy bandwidth (bytes read + written per second), best of `repetitions`.
double CopyBandwidth(const std::vector<float>& source, std::vector<float>& destination, int threads,
                     int repetitions) {
  double best = 0;
  const int64_t n = static_cast<int64_t>(source.size());
  for (int rep = 0; rep < repetitions; ++rep) {
    const auto begin = Clock::now();
#pragma omp parallel num_threads(threads)
    {
      const int t = omp_get_thread_num(), count = omp_get_num_threads();
      const int64_t chunk = (n + count - 1) / count;
      const int64_t first = std::min<int64_t>(n, t * chunk), last = std::min<int64_t>(n, first + chunk);
      std::memcpy(destination.data() + first, source.data() + first, (last - first) * sizeof(float));
    }
    best = std::max(best, 2.0 * n * sizeof(float) / Seconds(begin));
  }
  return best;
}

// OpenBLAS sgemm FLOP/s for C[m, n] = A[m, k] B[n, k]^T (the prefill shape), best of reps.
double SgemmFlops(int64_t m, int64_t n, int64_t k, int repetitions) {
  std::vector<float> a(m * k, 0.5f), b(n * k, 0.25f), c(m * n);
  double best = 0;
  for (int rep = 0; rep < repetitions; ++rep) {
    const auto begin = Clock::now();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1.0f, a.data(), k, b.data(), k,
                0.0f, c.data(), n);
    best = std::max(best, 2.0 * m * n * k / Seconds(begin));
  }
  return best;
}

// The same product through moemesh's own batch-invariant kernel (kernels/cpu/gemm.h).
double KernelGemmFlops(int64_t m, int64_t n, int64_t k, int repetitions) {
  std::vector<float> a(m * k, 0.5f), b(n * k, 0.25f), c(m * n);
  double best = 0;
  for (int rep = 0; rep < repetitions; ++rep) {
    const auto begin = Clock::now();
    moemesh::kernels::MatMulTransposed(a.data(), k, m, b.data(), k, n, k, c.data(), n);
    best = std::max(best, 2.0 * m * n * k / Seconds(begin));
  }
  return best;
}

// --- Model accounting -------------------------------------------------------------------------

int64_t FloatBytes(const std::vector<float>& v) { return static_cast<int64_t>(v.size()) * 4; }
int64_t MatrixBytes(const std::optional<WeightMatrix>& w) { return w ? w->StorageBytes() : 0; }

// Multiply-adds per token of one weight matrix.
int64_t MatrixMacs(const WeightMatrix& w) { return w.rows * w.cols; }
int64_t FfnMacs(const FeedForwardWeights& f) {
  return MatrixMacs(f.gate_proj) + MatrixMacs(f.up_proj) + MatrixMacs(f.down_proj);
}

struct ModelCosts {
  int64_t dense_bytes = 0;          // every non-expert weight read in one decode step
  int64_t lm_head_bytes = 0;        // part of dense_bytes
  int64_t expert_bytes = 0;         // one routed expert
  int64_t kv_bytes_per_position = 0;  // latent + rope key, all layers
  int64_t moe_layers = 0;
  double macs_per_token = 0;        // weights (with top-k experts + shared), no attention scores
  double lm_head_macs = 0;
  double attention_macs_per_position = 0;  // per (query, key position), all layers
};

ModelCosts ComputeCosts(const DeepseekModel& model, const ExpertShard& experts) {
  const auto& config = model.config();
  const auto& w = model.weights();
  ModelCosts costs;
  const int64_t hidden = config.hidden_size;
  costs.dense_bytes += w.embed_tokens.StorageBytes() / std::max<int64_t>(1, w.embed_tokens.rows);  // one row
  for (const auto& layer : w.layers) {
    const auto& a = layer.attention;
    costs.dense_bytes += FloatBytes(a.input_norm) + MatrixBytes(a.q_a_proj) + FloatBytes(a.q_a_norm) +
                         a.q_b_proj.StorageBytes() + a.kv_a_proj.StorageBytes() +
                         FloatBytes(a.kv_a_norm) + FloatBytes(a.kv_b_proj) + a.o_proj.StorageBytes() +
                         FloatBytes(layer.post_attention_norm);
    costs.macs_per_token += (a.q_a_proj ? MatrixMacs(*a.q_a_proj) : 0) + MatrixMacs(a.q_b_proj) +
                            MatrixMacs(a.kv_a_proj) + MatrixMacs(a.o_proj);
    // Absorbed kv_b_proj: the nope half folded into the query, the value half into the output.
    costs.macs_per_token += static_cast<double>(config.num_attention_heads) * config.kv_lora_rank *
                            (config.qk_nope_head_dim + config.v_head_dim);
    if (layer.is_moe) {
      ++costs.moe_layers;
      costs.dense_bytes += layer.gate.weight.StorageBytes() + FloatBytes(layer.gate.correction_bias) +
                           layer.shared_expert.StorageBytes();
      costs.macs_per_token += static_cast<double>(MatrixMacs(layer.gate.weight)) +
                              FfnMacs(layer.shared_expert);
    } else {
      costs.dense_bytes += layer.dense_mlp.StorageBytes();
      costs.macs_per_token += FfnMacs(layer.dense_mlp);
    }
  }
  // A BF16 lm_head is read in its lossless 12-bit packed form (model_weights.h).
  costs.lm_head_bytes =
      w.lm_head_packed ? w.lm_head_packed->StorageBytes() : w.lm_head.StorageBytes();
  costs.dense_bytes += FloatBytes(w.final_norm) + costs.lm_head_bytes;
  costs.lm_head_macs = static_cast<double>(MatrixMacs(w.lm_head));
  costs.expert_bytes = experts.StorageBytes() /
                       std::max<int64_t>(1, static_cast<int64_t>(experts.HeldExperts().size()));
  // Routed FFN MACs of one expert = its weights (FP8: 1 byte each, scales are ~1/16384 extra).
  const double expert_macs = static_cast<double>(config.moe_intermediate_size) * hidden * 3;
  costs.macs_per_token += costs.moe_layers * config.num_experts_per_tok * expert_macs;
  costs.kv_bytes_per_position =
      static_cast<int64_t>(config.num_hidden_layers) * (config.kv_lora_rank + config.qk_rope_head_dim) * 4;
  // Scores (latent + rope dot) and the weighted latent sum, per head.
  costs.attention_macs_per_position =
      static_cast<double>(config.num_hidden_layers) * config.num_attention_heads *
      (2.0 * config.kv_lora_rank + config.qk_rope_head_dim);
  return costs;
}

std::vector<int32_t> RandomTokens(std::mt19937& rng, int vocab, int count) {
  std::uniform_int_distribution<int32_t> token(0, vocab - 1);
  std::vector<int32_t> tokens(count);
  for (auto& t : tokens) t = token(rng);
  return tokens;
}

int32_t Argmax(const float* logits, int64_t vocab) {
  return static_cast<int32_t>(std::max_element(logits, logits + vocab) - logits);
}

std::vector<int> ParseList(const std::string& text) {
  std::vector<int> values;
  for (absl::string_view piece : absl::StrSplit(text, ',', absl::SkipEmpty())) {
    int value = 0;
    if (absl::SimpleAtoi(piece, &value)) values.push_back(value);
  }
  return values;
}

}  // namespace

int main(int argc, char** argv) {
  std::string model_dir;
  int threads = 2, context = 128, decode_steps = 16, prefill_tokens = 512, repetitions = 5;
  std::vector<int> batches = {1, 8, 32};
  for (int i = 1; i < argc; ++i) {
    const std::string flag = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) Die("missing value for " + flag);
      return argv[++i];
    };
    if (flag == "--model") model_dir = value();
    else if (flag == "--threads") threads = std::atoi(value().c_str());
    else if (flag == "--batches") batches = ParseList(value());
    else if (flag == "--context") context = std::atoi(value().c_str());
    else if (flag == "--decode-steps") decode_steps = std::atoi(value().c_str());
    else if (flag == "--prefill-tokens") prefill_tokens = std::atoi(value().c_str());
    else if (flag == "--repetitions") repetitions = std::atoi(value().c_str());
    else Die("unknown flag " + flag);
  }
  if (model_dir.empty()) Die("--model DIR is required");
  moemesh::kernels::SetComputeThreads(threads);

  auto checkpoint = moemesh::checkpoint::Checkpoint::Open(model_dir);
  if (!checkpoint.ok()) Die(checkpoint.status().ToString());
  const auto load_begin = Clock::now();
  auto model = DeepseekModel::Load(**checkpoint);
  if (!model.ok()) Die(model.status().ToString());
  auto shard = ExpertShard::LoadAll(**checkpoint);
  if (!shard.ok()) Die(shard.status().ToString());
  const double load_seconds = Seconds(load_begin);
  const auto& config = (*model)->config();
  const int64_t vocab = config.vocab_size;
  const ModelCosts costs = ComputeCosts(**model, **shard);
  CountingExperts experts(shard->get(), costs.expert_bytes);

  // Machine bounds.
  std::vector<float> buffer(static_cast<size_t>(1) << 28, 1.0f);  // 1 GiB
  std::vector<float> copy(buffer.size());
  const double read_1 = ReadBandwidth(buffer, 1, 3);
  const double read_n = ReadBandwidth(buffer, threads, 3);
  const double copy_n = CopyBandwidth(buffer, copy, threads, 3);
  buffer = {};
  copy = {};
  buffer.shrink_to_fit();
  copy.shrink_to_fit();
  const int64_t hidden = config.hidden_size;
  const double sgemm_flops =
      std::max(SgemmFlops(prefill_tokens, hidden, hidden, 3),
               SgemmFlops(prefill_tokens, 2 * hidden, hidden, 3));
  const double kernel_flops =
      std::max(KernelGemmFlops(prefill_tokens, hidden, hidden, 3),
               KernelGemmFlops(prefill_tokens, 2 * hidden, hidden, 3));
  // The prefill bound: the faster of the two float32 GEMMs this machine runs.
  const double gemm_flops = std::max(sgemm_flops, kernel_flops);

  std::printf("model %s: hidden %lld, layers %d (%lld MoE), %d experts top-%d, vocab %lld; "
              "loaded in %.1f s\n",
              model_dir.c_str(), static_cast<long long>(hidden), config.num_hidden_layers,
              static_cast<long long>(costs.moe_layers), config.n_routed_experts,
              config.num_experts_per_tok, static_cast<long long>(vocab), load_seconds);
  const char* lm_head_format =
      (*model)->weights().lm_head_packed ? "BF16 packed losslessly, 12 bits/weight"
      : (*model)->weights().lm_head.format == WeightMatrix::Format::kBFloat16 ? "BF16"
      : (*model)->weights().lm_head.format == WeightMatrix::Format::kFp8Block ? "FP8"
                                                                              : "float32";
  std::printf("weights: dense (attention, dense MLP, shared experts, gates, lm_head) %.1f MB of "
              "which lm_head %.1f MB (%s); one routed expert %.2f MB; all experts %.1f MB\n",
              costs.dense_bytes / 1e6, costs.lm_head_bytes / 1e6, lm_head_format,
              costs.expert_bytes / 1e6, (*shard)->StorageBytes() / 1e6);
  std::printf("threads %d (OpenMP max %d), kernels: %s (best on this CPU: %s)\n", threads,
              moemesh::kernels::ComputeThreads(),
              std::string(moemesh::kernels::SimdPathName(moemesh::kernels::ActiveSimdPath())).c_str(),
              std::string(moemesh::kernels::SimdPathName(moemesh::kernels::BestSupportedSimdPath()))
                  .c_str());
  std::printf("memory read bandwidth: 1 thread %.2f GB/s, %d threads %.2f GB/s; memcpy (%d "
              "threads, read+write) %.2f GB/s\n",
              read_1 / 1e9, threads, read_n / 1e9, threads, copy_n / 1e9);
  std::printf("sgemm (OpenBLAS, M=%d, K=%lld): %.1f GFLOP/s; moemesh kernel (same shapes): "
              "%.1f GFLOP/s\n",
              prefill_tokens, static_cast<long long>(hidden), sgemm_flops / 1e9,
              kernel_flops / 1e9);
  const double bandwidth = read_n;
  // The lm_head product of one decode row (the largest read of a batch-1 step), best of 20: the
  // BF16 matrix against its lossless packed form.
  if (const auto& packed = (*model)->weights().lm_head_packed; packed.has_value()) {
    WeightMatrix plain = packed->Unpack();
    std::vector<float> x(static_cast<size_t>(hidden), 0.01f), y(static_cast<size_t>(vocab));
    auto best_of = [](int runs, auto&& product) {
      double best = 1e30;
      for (int run = 0; run < runs; ++run) {
        const auto begin = Clock::now();
        product();
        best = std::min(best, Seconds(begin));
      }
      return best;
    };
    const double plain_seconds =
        best_of(20, [&] { moemesh::kernels::Linear(x.data(), 1, plain, y.data()); });
    const double packed_seconds =
        best_of(20, [&] { moemesh::kernels::LinearPacked(x.data(), 1, *packed, y.data()); });
    std::printf("lm_head x 1 row, best of 20: BF16 %.2f ms (%.1f GB/s), packed %.2f ms (%.1f GB/s "
                "of packed bytes)\n",
                1e3 * plain_seconds, plain.StorageBytes() / plain_seconds / 1e9,
                1e3 * packed_seconds, packed->StorageBytes() / packed_seconds / 1e9);
  }

  std::mt19937 rng(1);
  // --- Decode ---
  std::printf("\n| decode | context | tokens/s (median of %d) | step ms | CPU ms/step | "
              "bytes/step (MB) | experts read/MoE layer | bound tokens/s | measured/bound |\n",
              repetitions);
  std::printf("|---|---|---|---|---|---|---|---|---|\n");
  for (int batch : batches) {
    std::vector<LatentCache> caches;
    std::vector<std::vector<int32_t>> prompts;
    for (int b = 0; b < batch; ++b) {
      caches.push_back((*model)->NewCache());
      prompts.push_back(RandomTokens(rng, static_cast<int>(vocab), context));
    }
    std::vector<int32_t> next(batch);
    {
      std::vector<SequenceStep> steps;
      for (int b = 0; b < batch; ++b) steps.push_back({&caches[b], prompts[b]});
      auto logits = (*model)->Forward(steps, experts);
      if (!logits.ok()) Die(logits.status().ToString());
      for (int b = 0; b < batch; ++b) next[b] = Argmax(logits->data() + b * vocab, vocab);
    }
    std::vector<double> rates, cpu_per_step;
    double bytes_per_step = 0, experts_per_layer = 0;
    for (int rep = 0; rep <= repetitions; ++rep) {  // rep 0 warms up
      for (auto& cache : caches) cache.Truncate(context);
      experts.Reset();
      int64_t kv_positions = 0;
      const double cpu_begin = ProcessCpuSeconds();
      const auto begin = Clock::now();
      for (int step = 0; step < decode_steps; ++step) {
        std::vector<SequenceStep> steps;
        for (int b = 0; b < batch; ++b) {
          kv_positions += caches[b].length() + 1;
          steps.push_back({&caches[b], std::span<const int32_t>(&next[b], 1)});
        }
        auto logits = (*model)->Forward(steps, experts);
        if (!logits.ok()) Die(logits.status().ToString());
        for (int b = 0; b < batch; ++b) next[b] = Argmax(logits->data() + b * vocab, vocab);
      }
      const double seconds = Seconds(begin);
      const double cpu_seconds = ProcessCpuSeconds() - cpu_begin;
      if (rep == 0) continue;
      rates.push_back(static_cast<double>(batch) * decode_steps / seconds);
      cpu_per_step.push_back(cpu_seconds / decode_steps);
      bytes_per_step = (static_cast<double>(costs.dense_bytes) * decode_steps + experts.bytes() +
                        static_cast<double>(kv_positions) * costs.kv_bytes_per_position) /
                       decode_steps;
      experts_per_layer = static_cast<double>(experts.experts_touched()) / experts.dispatches();
    }
    const double rate = Median(rates);
    const double bound = batch * bandwidth / bytes_per_step;
    std::printf("| batch %d | %d+%d | %.2f | %.1f | %.1f | %.1f | %.1f | %.2f | %.2f |\n", batch,
                context, decode_steps, rate, 1e3 * batch / rate, 1e3 * Median(cpu_per_step),
                bytes_per_step / 1e6, experts_per_layer, bound, rate / bound);
    std::fflush(stdout);
  }

  // --- Prefill ---
  std::printf("\n| prefill | tokens/s (median of %d) | ms | CPU ms | GFLOP/token | "
              "bound tokens/s | measured/bound |\n",
              repetitions);
  std::printf("|---|---|---|---|---|---|---|\n");
  struct PrefillShape {
    int sequences;
    int length;
  };
  for (PrefillShape shape : {PrefillShape{1, prefill_tokens}, PrefillShape{4, prefill_tokens / 4}}) {
    std::vector<std::vector<int32_t>> prompts;
    for (int s = 0; s < shape.sequences; ++s) {
      prompts.push_back(RandomTokens(rng, static_cast<int>(vocab), shape.length));
    }
    std::vector<double> rates, cpu_times;
    for (int rep = 0; rep <= repetitions; ++rep) {
      std::vector<LatentCache> caches;
      for (int s = 0; s < shape.sequences; ++s) caches.push_back((*model)->NewCache());
      std::vector<SequenceStep> steps;
      for (int s = 0; s < shape.sequences; ++s) steps.push_back({&caches[s], prompts[s]});
      const double cpu_begin = ProcessCpuSeconds();
      const auto begin = Clock::now();
      auto logits = (*model)->Forward(steps, experts);
      if (!logits.ok()) Die(logits.status().ToString());
      const double seconds = Seconds(begin);
      if (rep > 0) {
        rates.push_back(static_cast<double>(shape.sequences) * shape.length / seconds);
        cpu_times.push_back(ProcessCpuSeconds() - cpu_begin);
      }
    }
    // Per token: weights, causal attention over (length + 1) / 2 positions on average, and
    // lm_head once per sequence (logits only at the last position).
    const double flops_per_token =
        2.0 * (costs.macs_per_token + costs.attention_macs_per_position * (shape.length + 1) / 2.0 +
               costs.lm_head_macs / shape.length);
    const double rate = Median(rates);
    const double bound = gemm_flops / flops_per_token;
    std::printf("| %d x %d tokens | %.1f | %.0f | %.0f | %.3f | %.1f | %.2f |\n", shape.sequences,
                shape.length, rate, 1e3 * shape.sequences * shape.length / rate,
                1e3 * Median(cpu_times), flops_per_token / 1e9, bound, rate / bound);
    std::fflush(stdout);
  }
  return 0;
}
