// Tokenizer encode throughput on one core, in bytes per second of UTF-8 input.
//
// The input (about 1 MiB) mixes English prose, Chinese prose and source code in equal shares,
// with fresh numbers and identifiers sprinkled in so that not every pre-token is a cache hit.
// "Warm" measures steady state (pre-token cache filled, as in a long-running router); "Cold"
// clears the cache before every pass.
#include <random>
#include <string>

#include "benchmark/benchmark.h"
#include "core/text/tokenizer.h"

namespace moemesh::text {
namespace {

constexpr const char* kEnglish[] = {
    "The mixture-of-experts model routes every token to a handful of experts, so only a small "
    "fraction of its parameters is active for any one token. ",
    "Serving it well means keeping the experts busy while the attention layers wait for nothing. ",
    "Latency matters as much as throughput: users notice the first token long before the last. ",
    "In 2024 the team measured the cache hit rate at several load levels and wrote it down. ",
    "Don't guess; measure, and then measure again with a different batch size! ",
};
constexpr const char* kChinese[] = {
    "混合专家模型把每个词元路由到少数几个专家，因此每个词元只激活一小部分参数。",
    "要把它服务好，就要让专家一直忙碌，同时注意力层不必等待。",
    "延迟和吞吐量同样重要：用户远在最后一个词元之前就会注意到第一个词元。",
    "我们在不同负载下测量了缓存命中率，并记录了结果。",
    "深度求索的推理模型会先思考，再给出答案。",
};
constexpr const char* kCode[] = {
    "for (int i = 0; i < n; ++i) {\n  sum += weights[i] * inputs[i];\n}\n",
    "def route(tokens, experts):\n    scores = gate(tokens)\n    return topk(scores, k=8)\n",
    "if (status.ok()) {\n  return absl::InvalidArgumentError(\"bad shape\");\n}\n",
    "SELECT expert_id, COUNT(*) FROM dispatch WHERE layer = 3 GROUP BY expert_id;\n",
    "    const auto& [name, value] = *it;  // structured binding\n",
};

std::string MixedText(size_t bytes) {
  std::mt19937 random(42);
  std::string text;
  while (text.size() < bytes) {
    switch (random() % 3) {
      case 0:
        text += kEnglish[random() % 5];
        break;
      case 1:
        text += kChinese[random() % 5];
        break;
      default:
        text += kCode[random() % 5];
        break;
    }
    if (random() % 4 == 0) text += " value_" + std::to_string(random() % 100000) + " ";
    if (random() % 4 == 0) text += std::to_string(random()) + ". ";
  }
  return text;
}

const Tokenizer& R1Tokenizer() {
  static const Tokenizer* tokenizer =
      Tokenizer::FromFile(MOEMESH_SHARED_DIR "/fixtures/tiny-r1/tokenizer.json")->release();
  return *tokenizer;
}

void BM_EncodeMixedWarm(benchmark::State& state) {
  const std::string text = MixedText(1 << 20);
  R1Tokenizer().Encode(text);  // fill the cache
  size_t tokens = 0;
  for (auto _ : state) {
    std::vector<TokenId> ids = R1Tokenizer().Encode(text);
    tokens = ids.size();
    benchmark::DoNotOptimize(ids.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * text.size()));
  state.counters["tokens"] = static_cast<double>(tokens);
}
BENCHMARK(BM_EncodeMixedWarm)->Unit(benchmark::kMillisecond);

void BM_EncodeMixedCold(benchmark::State& state) {
  const std::string text = MixedText(1 << 20);
  for (auto _ : state) {
    R1Tokenizer().ClearCache();
    std::vector<TokenId> ids = R1Tokenizer().Encode(text);
    benchmark::DoNotOptimize(ids.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * text.size()));
}
BENCHMARK(BM_EncodeMixedCold)->Unit(benchmark::kMillisecond);

}  // namespace
}  // namespace moemesh::text

BENCHMARK_MAIN();
