// Long prompts at the latent cache's full capacity on a checkpoint with DeepSeek-V3's 128
// attention heads (make-checkpoint --preset heads128): the tiled attention against the untiled
// reference in process, then the same prompt through a 1+1 cluster, with the peak memory of every
// process. DeepSeek's model.py cannot run here, so the reference is our own untiled attention at
// a length where it fits (CI) and the single process at 16K (the `long` label).
//
//   LongContext.CiLength      2,048-position cache (ctest label integration)
//   LongContext.FullLength    16,384-position cache (ctest label long; several minutes on 2 cores)
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "core/checkpoint/checkpoint.h"
#include "core/model/deepseek_model.h"
#include "core/model/expert_shard.h"
#include "core/model/sampling.h"
#include "gtest/gtest.h"
#include "tests/integration/cluster_harness.h"

namespace moemesh::integration {
namespace {

constexpr int kMaxNewTokens = 4;
constexpr double kLogitTolerance = 1e-3;
// "Well under 1.5 GB": the weights are ~135 MB; the untiled attention needed ~137 GB at 16K.
constexpr int64_t kPeakLimitKiB = 768 * 1024;

// VmHWM (peak resident set) of a process, in KiB; -1 when unreadable.
int64_t PeakRssKiB(pid_t pid) {
  std::ifstream status("/proc/" + std::to_string(pid) + "/status");
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stoll(line.substr(6));
  }
  return -1;
}

// Runs argv to completion; its exit status or -1.
int RunCommand(const std::vector<std::string>& args) {
  std::vector<char*> argv;
  std::vector<std::string> copy = args;
  for (std::string& arg : copy) argv.push_back(arg.data());
  argv.push_back(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  int status = 0;
  if (pid < 0 || ::waitpid(pid, &status, 0) != pid) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

struct InProcessRun {
  std::vector<float> last_logits;  // [vocab] at the last prompt position
  std::vector<int32_t> greedy;     // kMaxNewTokens greedy tokens
};

// Prefill in chunks of `chunk` tokens, then greedy decode, on a fresh cache.
InProcessRun RunInProcess(model::DeepseekModel& model, model::RoutedExperts& experts,
                          const std::vector<int32_t>& prompt, int64_t chunk) {
  InProcessRun run;
  model::LatentCache cache = model.NewCache();
  const int64_t vocab = model.config().vocab_size;
  std::vector<float> logits;
  for (int64_t first = 0; first < static_cast<int64_t>(prompt.size()); first += chunk) {
    const int64_t count = std::min<int64_t>(chunk, static_cast<int64_t>(prompt.size()) - first);
    const bool last = first + count == static_cast<int64_t>(prompt.size());
    model::SequenceStep step{&cache, std::span<const int32_t>(prompt).subspan(first, count), last};
    auto result = model.Forward({&step, 1}, experts);
    EXPECT_TRUE(result.ok()) << result.status();
    if (!result.ok()) return run;
    if (last) logits = *std::move(result);
  }
  run.last_logits = logits;
  for (int i = 0; i < kMaxNewTokens; ++i) {
    const int32_t token =
        static_cast<int32_t>(std::max_element(logits.begin(), logits.begin() + vocab) - logits.begin());
    run.greedy.push_back(token);
    if (i + 1 == kMaxNewTokens) break;
    model::SequenceStep step{&cache, std::span<const int32_t>(&run.greedy.back(), 1)};
    auto result = model.Forward({&step, 1}, experts);
    EXPECT_TRUE(result.ok()) << result.status();
    if (!result.ok()) return run;
    logits = *std::move(result);
  }
  return run;
}

void RunLongContext(int64_t capacity, bool with_naive_reference) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() /
                       ("moemesh-long-" + std::to_string(::getpid()) + "-" +
                        std::to_string(capacity));
  fs::remove_all(dir);
  ASSERT_EQ(RunCommand({std::string(MOEMESH_BINARY_DIR) + "/bin/moemesh", "make-checkpoint",
                        "--preset", "heads128", "--seed", "14", "--tokenizer-from", FixtureDir(),
                        dir.string()}),
            0);
  struct Cleanup {
    fs::path dir;
    ~Cleanup() {
      std::error_code ignored;
      fs::remove_all(dir, ignored);
    }
  } cleanup{dir};

  // The prompt fills the cache exactly with its completion.
  const int64_t prompt_length = capacity - kMaxNewTokens;
  std::vector<int32_t> prompt(static_cast<size_t>(prompt_length));
  std::mt19937 engine(static_cast<uint32_t>(capacity));
  for (int32_t& id : prompt) id = static_cast<int32_t>(2 + engine() % 100000);

  auto checkpoint = checkpoint::Checkpoint::Open(dir.string());
  ASSERT_TRUE(checkpoint.ok()) << checkpoint.status();
  ASSERT_EQ((*checkpoint)->config().num_attention_heads, 128);
  auto model = model::DeepseekModel::Load(**checkpoint);
  ASSERT_TRUE(model.ok()) << model.status();
  auto experts = model::ExpertShard::LoadAll(**checkpoint);
  ASSERT_TRUE(experts.ok()) << experts.status();
  const int64_t vocab = (*model)->config().vocab_size;

  const InProcessRun tiled = RunInProcess(**model, **experts, prompt, /*chunk=*/512);
  ASSERT_EQ(tiled.greedy.size(), static_cast<size_t>(kMaxNewTokens));
  const int64_t process_peak = PeakRssKiB(::getpid());
  std::fprintf(stderr, "single process, %lld-token prompt: peak RSS %lld MiB\n",
               static_cast<long long>(prompt_length), static_cast<long long>(process_peak / 1024));
  EXPECT_LT(process_peak, kPeakLimitKiB);

  if (with_naive_reference) {
    (*model)->set_attention_kernel(model::DeepseekModel::AttentionKernel::kNaive);
    const InProcessRun naive = RunInProcess(**model, **experts, prompt, /*chunk=*/128);
    (*model)->set_attention_kernel(model::DeepseekModel::AttentionKernel::kTiled);
    ASSERT_EQ(naive.last_logits.size(), static_cast<size_t>(vocab));
    double worst = 0.0;
    for (int64_t i = 0; i < vocab; ++i) {
      worst = std::max(worst, std::fabs(static_cast<double>(tiled.last_logits[i]) -
                                        naive.last_logits[i]));
    }
    EXPECT_LT(worst, kLogitTolerance) << "tiled vs untiled attention, largest logit difference";
    EXPECT_EQ(tiled.greedy.front(), naive.greedy.front());
  }

  // The same prompt through a 1+1 cluster whose attention node holds exactly `capacity`.
  ClusterOptions options;
  options.model_dir = dir.string();
  options.cache_tokens = capacity;
  // A 16K prefill takes minutes on two busy cores: more than the router's default deadline.
  options.router_flags = {"--max-model-len", std::to_string(capacity),
                          "--request-timeout-seconds", "3000"};
  Cluster cluster(options);
  ASSERT_TRUE(cluster.ok()) << cluster.error();
  json body = {{"model", dir.filename().string()}, {"prompt", prompt},
               {"max_tokens", kMaxNewTokens},      {"temperature", 0},
               {"ignore_eos", true},               {"return_token_ids", true},
               {"logprobs", 1}};
  HttpResult result = cluster.Post("/v1/completions", body.dump(), /*timeout_seconds=*/3000);
  ASSERT_EQ(result.status, 200) << result.body << result.error;
  const json reply = result.Json();
  const auto token_ids = reply["choices"][0]["token_ids"].get<std::vector<int32_t>>();
  EXPECT_EQ(token_ids, tiled.greedy);
  const double first_logprob = reply["choices"][0]["logprobs"]["token_logprobs"][0].get<double>();
  EXPECT_NEAR(first_logprob,
              model::LogProbability(tiled.last_logits.data(), vocab, tiled.greedy.front()),
              kLogitTolerance);
  const int64_t attention_peak = PeakRssKiB(cluster.attention_pid(0));
  const int64_t expert_peak = PeakRssKiB(cluster.expert_pid(0));
  std::fprintf(stderr, "cluster: attention node peak RSS %lld MiB, expert node %lld MiB\n",
               static_cast<long long>(attention_peak / 1024),
               static_cast<long long>(expert_peak / 1024));
  EXPECT_GT(attention_peak, 0);
  EXPECT_LT(attention_peak, kPeakLimitKiB);
  EXPECT_GT(expert_peak, 0);
  EXPECT_LT(expert_peak, kPeakLimitKiB);
}

TEST(LongContext, CiLength) { RunLongContext(2048, /*with_naive_reference=*/true); }

TEST(LongContext, FullLength) { RunLongContext(16384, /*with_naive_reference=*/false); }

}  // namespace
}  // namespace moemesh::integration
