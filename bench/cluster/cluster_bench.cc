// Cluster benchmark: C concurrent streaming clients of POST /v1/completions (token-id prompts,
// ignore_eos, greedy), per concurrency level: output tokens/s, TTFT and ITL (median / p90, from
// the SSE chunks' token_ids), and the attention node's mean MoE dispatch round trip (it prints a
// "dispatch statistics" line to its log on SIGUSR1; we signal it before and after each level
// and take the difference).
//
// With --engine DIR it runs the same workload through model::Generate in this process (what
// `moemesh generate` runs: all C prompts prefilled in one step, then decoded together), with
// TTFT = the prefill step and ITL = the decode steps.
//
// usage: bench_cluster --url http://127.0.0.1:PORT [--stats-pid PID --stats-log FILE]
//        bench_cluster --engine DIR [--threads N]
//        common: [--concurrency 1,8,32] [--prompt-tokens 128] [--output-tokens 64] [--rounds 1]
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "bench/cluster/bench_client.h"
#include "bench/cluster/bench_flags.h"
#include "core/checkpoint/checkpoint.h"
#include "core/kernels/cpu/threading.h"
#include "core/model/deepseek_model.h"
#include "core/model/expert_shard.h"
#include "core/model/generator.h"

namespace {

using moemesh::bench::Clock;
using moemesh::bench::Percentile;
using moemesh::bench::SecondsSince;

constexpr char kProgram[] = "bench_cluster";

[[noreturn]] void Die(const std::string& message) { moemesh::bench::Die(kProgram, message); }

struct Level {
  std::vector<double> throughputs;  // output tokens/s per round
  std::vector<double> ttft, itl;    // seconds, pooled over rounds
  int64_t tokens = 0;
  int errors = 0;
};

void PrintRow(const char* mode, int concurrency, const Level& level, const std::string& dispatch) {
  std::printf("| %s | %d | %.1f | %.0f / %.0f | %.0f / %.0f | %s |\n", mode, concurrency,
              Percentile(level.throughputs, 0.5), 1e3 * Percentile(level.ttft, 0.5),
              1e3 * Percentile(level.ttft, 0.9), 1e3 * Percentile(level.itl, 0.5),
              1e3 * Percentile(level.itl, 0.9), dispatch.c_str());
  if (level.errors > 0) std::printf("  (%d failed requests)\n", level.errors);
  std::fflush(stdout);
}

// --- Cluster mode -----------------------------------------------------------------------------

struct DispatchTotals {
  double layers = 0, round_trips = 0, seconds = 0;
  bool ok = false;
};

// Signals the attention node and reads its newest "dispatch statistics" line.
DispatchTotals ReadDispatchTotals(int pid, const std::string& log) {
  DispatchTotals totals;
  if (pid <= 0) return totals;
  std::string last_before;
  auto last_line = [&] {
    std::ifstream in(log);
    std::string line, found;
    while (std::getline(in, line)) {
      if (line.find("dispatch statistics") != std::string::npos) found = line;
    }
    return found;
  };
  last_before = last_line();
  ::kill(pid, SIGUSR1);
  std::string line;
  for (int i = 0; i < 50; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    line = last_line();
    if (!line.empty() && line != last_before) break;
  }
  std::smatch m;
  static const std::regex pattern(
      R"(layer_dispatches=(\d+) node_round_trips=(\d+) round_trip_seconds=([0-9.eE+-]+))");
  if (std::regex_search(line, m, pattern)) {
    totals.layers = std::stod(m[1]);
    totals.round_trips = std::stod(m[2]);
    totals.seconds = std::stod(m[3]);
    totals.ok = true;
  }
  return totals;
}

// One streaming request; TTFT and ITL from its tokens' arrivals (seconds since it was sent).
void RunClusterRequest(const std::string& url, const std::vector<int32_t>& prompt, int output_tokens,
                       std::mutex& mutex, Level& level) {
  const moemesh::bench::StreamedCompletion result =
      moemesh::bench::StreamCompletion(url, prompt, output_tokens);
  const std::vector<double> token_times = result.TokenSeconds(result.sent);
  std::lock_guard<std::mutex> lock(mutex);
  // Error events and short streams are not failures here: the tokens that came are counted.
  if (!result.answered || result.status != 200 || token_times.empty()) {
    ++level.errors;
    std::fprintf(stderr, "request failed: %s\n", result.StatusText().c_str());
    return;
  }
  level.ttft.push_back(token_times.front());
  for (size_t i = 1; i < token_times.size(); ++i) level.itl.push_back(token_times[i] - token_times[i - 1]);
  level.tokens += static_cast<int64_t>(token_times.size());
}

}  // namespace

int main(int argc, char** argv) {
  std::string url, engine_dir, stats_log;
  int stats_pid = 0, prompt_tokens = 128, output_tokens = 64, rounds = 1, threads = 0;
  std::vector<int> levels = {1, 8, 32};
  moemesh::bench::BenchFlags flags(kProgram);
  flags.Add("--url", &url);
  flags.Add("--engine", &engine_dir);
  flags.Add("--stats-pid", &stats_pid);
  flags.Add("--stats-log", &stats_log);
  flags.Add("--concurrency", &levels);
  flags.Add("--prompt-tokens", &prompt_tokens);
  flags.Add("--output-tokens", &output_tokens);
  flags.Add("--rounds", &rounds);
  flags.Add("--threads", &threads);
  flags.Parse(argc, argv);
  if (url.empty() == engine_dir.empty()) Die("give exactly one of --url and --engine");
  moemesh::bench::PromptSource prompts(/*seed=*/7, 0, 127999);  // ordinary (non-special) ids
  auto random_prompt = [&] { return prompts.Next(prompt_tokens); };
  std::printf("workload: %d-token random prompts, %d output tokens (ignore_eos, greedy), %d "
              "round(s) per level; ITL from per-token arrival times\n",
              prompt_tokens, output_tokens, rounds);
  std::printf("\n| mode | concurrent requests | output tokens/s | TTFT ms median / p90 | ITL ms "
              "median / p90 | MoE dispatch round trip |\n|---|---|---|---|---|---|\n");

  if (!engine_dir.empty()) {
    if (threads > 0) moemesh::kernels::SetComputeThreads(threads);
    auto checkpoint = moemesh::checkpoint::Checkpoint::Open(engine_dir);
    if (!checkpoint.ok()) Die(checkpoint.status().ToString());
    auto model = moemesh::model::DeepseekModel::Load(**checkpoint);
    if (!model.ok()) Die(model.status().ToString());
    auto experts = moemesh::model::ExpertShard::LoadAll(**checkpoint);
    if (!experts.ok()) Die(experts.status().ToString());
    for (int concurrency : levels) {
      Level level;
      for (int round = 0; round < rounds; ++round) {
        std::vector<moemesh::model::GenerationRequest> requests(concurrency);
        for (auto& r : requests) {
          r.prompt = random_prompt();
          r.max_new_tokens = output_tokens;
          r.stop_at_eos = false;
        }
        // Prefill alone (the first token), then the whole generation: TTFT and decode steps.
        for (auto& r : requests) r.max_new_tokens = 1;
        auto begin = Clock::now();
        auto first = moemesh::model::Generate(**model, **experts, requests, 0);
        if (!first.ok()) Die(first.status().ToString());
        const double ttft = SecondsSince(begin);
        for (auto& r : requests) r.max_new_tokens = output_tokens;
        begin = Clock::now();
        auto results = moemesh::model::Generate(**model, **experts, requests, 0);
        if (!results.ok()) Die(results.status().ToString());
        const double total = SecondsSince(begin);
        int64_t tokens = 0;
        for (const auto& result : *results) tokens += static_cast<int64_t>(result.generated.size());
        level.throughputs.push_back(tokens / total);
        level.tokens += tokens;
        for (int i = 0; i < concurrency; ++i) level.ttft.push_back(ttft);
        const double itl = (total - ttft) / std::max(1, output_tokens - 1);
        for (int i = 0; i < concurrency * (output_tokens - 1); ++i) level.itl.push_back(itl);
      }
      PrintRow("single process (Generate)", concurrency, level, "in process");
    }
    return 0;
  }

  for (int concurrency : levels) {
    Level level;
    DispatchTotals before = ReadDispatchTotals(stats_pid, stats_log);
    for (int round = 0; round < rounds; ++round) {
      std::vector<std::vector<int32_t>> prompts;
      for (int c = 0; c < concurrency; ++c) prompts.push_back(random_prompt());
      std::mutex mutex;
      const int64_t tokens_before = level.tokens;
      const auto begin = Clock::now();
      std::vector<std::thread> clients;
      for (int c = 0; c < concurrency; ++c) {
        clients.emplace_back([&, c] { RunClusterRequest(url, prompts[c], output_tokens, mutex, level); });
      }
      for (auto& t : clients) t.join();
      level.throughputs.push_back((level.tokens - tokens_before) / SecondsSince(begin));
    }
    DispatchTotals after = ReadDispatchTotals(stats_pid, stats_log);
    std::string dispatch = "n/a";
    if (before.ok && after.ok && after.layers > before.layers) {
      const double layers = after.layers - before.layers;
      char text[160];
      std::snprintf(text, sizeof(text), "%.2f ms mean over %.0f layer dispatches (%.2f nodes each)",
                    1e3 * (after.seconds - before.seconds) / layers, layers,
                    (after.round_trips - before.round_trips) / layers);
      dispatch = text;
    }
    PrintRow("cluster (1 attention + 2 expert nodes)", concurrency, level, dispatch);
  }
  return 0;
}
