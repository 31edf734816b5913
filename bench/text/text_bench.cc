// Rendering a chat prompt through the Jinja engine, and sampling one token over DeepSeek's
// 129,280-token vocabulary, on one core.
//
// Render: a 40-turn conversation (user / assistant with reasoning / tool calls and results,
// about 20 KB of text) with 4 tools, through the fixture's official R1 template and through
// deploy/templates/deepseek-r1-tools.jinja; the template is compiled once (as the router does).
// Sample: random normal logits (sd 3), temperature 1; top-k 50, top-p 0.9, and no cut (the
// partial selection only orders the candidates it reaches); greedy for reference.
#include <algorithm>
#include <random>
#include <string>
#include <vector>

#include "benchmark/benchmark.h"
#include "core/model/sampling.h"
#include "core/text/chat_template.h"

namespace moemesh {
namespace {

using Json = nlohmann::ordered_json;

Json Conversation(int turns) {
  Json messages = Json::array({{{"role", "system"}, {"content", "You are a helpful assistant."}}});
  for (int i = 0; i < turns; ++i) {
    const std::string n = std::to_string(i);
    messages.push_back({{"role", "user"}, {"content", "Question " + n + ": what is the weather in city " + n +
                                                      "? Please answer in detail, with the reasons."}});
    if (i % 3 == 1) {
      messages.push_back({{"role", "assistant"}, {"content", nullptr},
                          {"tool_calls", {{{"type", "function"},
                                           {"function", {{"name", "get_weather"},
                                                         {"arguments", "{\"city\": \"city " + n + "\"}"}}}}}}});
      messages.push_back({{"role", "tool"}, {"content", "{\"temp_c\": " + n + ", \"sky\": \"clear\"}"}});
    }
    messages.push_back({{"role", "assistant"},
                        {"content", "<think>The user asks about city " + n +
                                        "; I should look it up and explain.</think>It is sunny in city " + n +
                                        " today, with light wind from the west and no rain expected."}});
  }
  messages.push_back({{"role", "user"}, {"content", "Thanks!"}});
  return messages;
}

Json Tools() {
  Json tools = Json::array();
  for (const char* name : {"get_weather", "get_time", "search", "calculator"}) {
    tools.push_back({{"type", "function"},
                     {"function", {{"name", name}, {"description", std::string("Tool ") + name},
                                   {"parameters", {{"type", "object"},
                                                   {"properties", {{"q", {{"type", "string"}}}}}}}}}});
  }
  return tools;
}

void Render(benchmark::State& state, const std::string& template_file) {
  auto chat_template =
      text::LoadChatTemplate(MOEMESH_SHARED_DIR "/fixtures/tiny-r1", template_file);
  if (!chat_template.ok()) {
    state.SkipWithError(std::string(chat_template.status().message()).c_str());
    return;
  }
  text::ChatInput input;
  input.messages = Conversation(40);
  input.tools = Tools();
  size_t bytes = 0;
  for (auto _ : state) {
    auto prompt = text::RenderChat(*chat_template, input);
    if (!prompt.ok()) {
      state.SkipWithError(std::string(prompt.status().message()).c_str());
      return;
    }
    bytes = prompt->size();
    benchmark::DoNotOptimize(prompt->data());
  }
  state.counters["prompt_bytes"] = static_cast<double>(bytes);
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * bytes));
}

void BM_RenderOfficialR1(benchmark::State& state) { Render(state, ""); }
void BM_RenderToolTemplate(benchmark::State& state) {
  Render(state, MOEMESH_SOURCE_DIR "/deploy/templates/deepseek-r1-tools.jinja");
}
BENCHMARK(BM_RenderOfficialR1)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_RenderToolTemplate)->Unit(benchmark::kMicrosecond);

void Sample(benchmark::State& state, model::SamplingParams params) {
  constexpr int64_t kVocab = 129280;
  std::mt19937 random(1);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::vector<std::vector<float>> rows(8, std::vector<float>(kVocab));
  for (auto& row : rows) {
    for (float& x : row) x = normal(random);
  }
  params.seed = 7;
  model::Sampler sampler(params);
  size_t i = 0;
  for (auto _ : state) {
    benchmark::DoNotOptimize(sampler.Sample(rows[i++ % rows.size()].data(), kVocab));
  }
}

void BM_SampleGreedy(benchmark::State& state) { Sample(state, {.temperature = 0}); }
void BM_SampleTopK50(benchmark::State& state) { Sample(state, {.temperature = 1.0, .top_k = 50}); }
void BM_SampleTopP09(benchmark::State& state) { Sample(state, {.temperature = 1.0, .top_p = 0.9}); }
void BM_SampleNoCut(benchmark::State& state) { Sample(state, {.temperature = 1.0}); }
// What the sampler did per token before partial selection: sort the whole vocabulary.
void BM_FullVocabularySort(benchmark::State& state) {
  constexpr int64_t kVocab = 129280;
  std::mt19937 random(1);
  std::normal_distribution<float> normal(0.0f, 3.0f);
  std::vector<float> logits(kVocab);
  for (float& x : logits) x = normal(random);
  std::vector<int32_t> order(kVocab);
  for (auto _ : state) {
    for (int32_t i = 0; i < kVocab; ++i) order[static_cast<size_t>(i)] = i;
    std::sort(order.begin(), order.end(), [&](int32_t a, int32_t b) {
      return logits[a] != logits[b] ? logits[a] > logits[b] : a < b;
    });
    benchmark::DoNotOptimize(order.data());
  }
}
BENCHMARK(BM_FullVocabularySort)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_SampleGreedy)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_SampleTopK50)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_SampleTopP09)->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_SampleNoCut)->Unit(benchmark::kMicrosecond);

}  // namespace
}  // namespace moemesh

BENCHMARK_MAIN();
