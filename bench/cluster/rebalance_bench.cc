// Rebalance benchmark: C streaming clients run continuously against a cluster while the
// elastic expert pool changes under them: a forced re-plan from the load so far (POST
// /v1/placement/rebalance), then `cycles` times an extra expert node joining (re-plan onto it)
// and draining again (SIGTERM: re-plan without it). Every token's arrival time is recorded; ITL
// samples are split into "steady" (before the first change), "during" (a token that arrived
// while a change was being planned, loaded and committed) and "after". Prints ITL p50 / p99 per
// phase, the re-plan's predicted balancedness before / after, the measured per-layer
// balancedness of the router's recent window before and after, and the failed requests.
//
// usage: bench_rebalance --url http://127.0.0.1:PORT --join-command "EXPERT NODE COMMAND"
//          [--concurrency 8] [--prompt-tokens 64] [--output-tokens 96] [--steady-seconds 20]
//          [--cycles 2]
// The join command is run through /bin/sh -c with " --node-name bench-join-N" appended; it must
// exec the node (e.g. "exec build/bin/moemesh-expert-node --model DIR --router HOST:PORT").
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "bench/cluster/bench_client.h"
#include "bench/cluster/bench_flags.h"
#include "httplib.h"
#include "nlohmann/json.hpp"

namespace {

using moemesh::bench::GetJson;
using moemesh::bench::Now;
using moemesh::bench::Percentile;
using nlohmann::json;

constexpr char kProgram[] = "bench_rebalance";

[[noreturn]] void Die(const std::string& message) { moemesh::bench::Die(kProgram, message); }

// Mean over layers of the router's measured recent-window balancedness.
double MeasuredBalancedness(const std::string& url) {
  const json load = GetJson(url, "/v1/experts/load");
  if (!load.contains("layers") || load["layers"].empty()) return 0;
  double sum = 0;
  for (const json& layer : load["layers"]) sum += layer["balancedness"].get<double>();
  return sum / static_cast<double>(load["layers"].size());
}

bool InPlacement(const json& placement, const std::string& node) {
  if (!placement.contains("expert_nodes")) return false;
  for (const json& n : placement["expert_nodes"]) {
    if (n["node"] == node) return n["in_placement"].get<bool>() && placement["target"].is_null();
  }
  return false;
}

}  // namespace

int main(int argc, char** argv) {
  std::string url, join_command;
  int concurrency = 8, prompt_tokens = 64, output_tokens = 96, cycles = 2;
  double steady_seconds = 20;
  moemesh::bench::BenchFlags flags(kProgram);
  flags.Add("--url", &url);
  flags.Add("--join-command", &join_command);
  flags.Add("--concurrency", &concurrency);
  flags.Add("--prompt-tokens", &prompt_tokens);
  flags.Add("--output-tokens", &output_tokens);
  flags.Add("--cycles", &cycles);
  flags.Add("--steady-seconds", &steady_seconds);
  flags.Parse(argc, argv);
  if (url.empty() || join_command.empty()) Die("--url and --join-command are required");

  // ITL samples of complete requests only.
  moemesh::bench::StreamSamples samples({.record_incomplete = false, .detailed_failures = false});
  moemesh::bench::ContinuousClients clients(
      concurrency, /*seed=*/1234, prompt_tokens, [&](const std::vector<int32_t>& prompt) {
        samples.Record(moemesh::bench::StreamCompletion(url, prompt, output_tokens), output_tokens);
      });
  std::vector<std::pair<double, double>> windows;  // [start, end] of each change
  const double warm = Now() + 3;
  std::this_thread::sleep_for(std::chrono::duration<double>(3 + steady_seconds));
  const double steady_end = Now();
  const double measured_before = MeasuredBalancedness(url);

  // 1. A forced re-plan from the (skewed) load window.
  json rebalance;
  {
    httplib::Client client(url);
    client.set_read_timeout(600, 0);
    const double start = Now();
    auto result = client.Post("/v1/placement/rebalance", "{}", "application/json");
    windows.push_back({start, Now()});
    if (!result || result->status != 200) Die("rebalance failed");
    rebalance = json::parse(result->body);
  }
  std::this_thread::sleep_for(std::chrono::seconds(2));
  // 2. Join and drain cycles.
  for (int cycle = 0; cycle < cycles; ++cycle) {
    const std::string name = "bench-join-" + std::to_string(cycle);
    const std::string command = join_command + " --node-name " + name;
    double start = Now();
    const pid_t pid = ::fork();
    if (pid == 0) {
      ::execl("/bin/sh", "sh", "-c", command.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    while (!InPlacement(GetJson(url, "/v1/placement"), name)) {
      if (Now() - start > 300) Die("the joining node was not placed within 300 s");
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    windows.push_back({start, Now()});
    std::this_thread::sleep_for(std::chrono::seconds(2));
    start = Now();
    ::kill(pid, SIGTERM);
    int status = 0;
    ::waitpid(pid, &status, 0);
    windows.push_back({start, Now()});
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) Die("the drained node did not exit 0");
    std::this_thread::sleep_for(std::chrono::seconds(2));
  }
  const double after_start = Now();
  std::this_thread::sleep_for(std::chrono::duration<double>(steady_seconds));
  const double measured_after = MeasuredBalancedness(url);
  clients.Stop();

  std::vector<double> steady, during, after;
  double during_seconds = 0;
  for (const auto& [s, e] : windows) during_seconds += e - s;
  for (const auto& [t, gap] : samples.itl) {
    bool in_window = false;
    for (const auto& [s, e] : windows) in_window |= t >= s && t <= e;
    if (in_window) during.push_back(gap);
    else if (t >= warm && t <= steady_end) steady.push_back(gap);
    else if (t >= after_start) after.push_back(gap);
  }
  std::printf("concurrency %d, prompt %d tokens, output %d tokens; %zu placement changes "
              "(%.1f s in total); %d requests, %d failed\n",
              concurrency, prompt_tokens, output_tokens, windows.size(), during_seconds,
              samples.requests, samples.failed);
  std::printf("\n| phase | ITL samples | ITL p50 ms | ITL p99 ms |\n|---|---|---|---|\n");
  for (const auto& [name, v] : {std::pair<const char*, std::vector<double>*>{"steady", &steady},
                                {"during placement changes", &during},
                                {"after", &after}}) {
    std::printf("| %s | %zu | %.1f | %.1f |\n", name, v->size(), 1e3 * Percentile(*v, 0.5),
                1e3 * Percentile(*v, 0.99));
  }
  std::printf("\np99 during / steady: %.2fx\n",
              Percentile(steady, 0.99) > 0 ? Percentile(during, 0.99) / Percentile(steady, 0.99) : 0);
  std::printf("re-plan: %s\n", rebalance.dump().c_str());
  // Wire encoding: one output per (row, expert) instead of one partial sum per (row, node).
  double expert_rows = 0, rows = 0;
  const json targets = GetJson(url, "/v1/metrics/targets");
  for (const json& group : targets.is_array() ? targets : json::array()) {
    if (group["labels"]["kind"] != "expert") continue;
    const std::string address = group["targets"][0];
    const std::optional<std::string> text =
        moemesh::bench::GetBody("http://" + address, "/metrics", /*read_timeout_s=*/10);
    if (!text) continue;
    // moemesh_expert_rows_total has (layer, expert) labels; the dispatch rows counter has none.
    expert_rows += moemesh::bench::SumMetric(*text, "moemesh_expert_rows_total");
    rows += moemesh::bench::SumMetric(*text, "moemesh_expert_dispatch_rows_total");
  }
  if (rows > 0) {
    std::printf("wire (expert nodes still running): %.0f (row, expert) outputs for %.0f dispatched "
                "rows: %.2fx the floats of per-node partial sums\n",
                expert_rows, rows, expert_rows / rows);
  }
  std::printf("measured mean layer balancedness (router's recent window): before %.3f, after %.3f\n",
              measured_before, measured_after);
  return samples.failed == 0 ? 0 : 1;
}
