// Chaos benchmark: C streaming clients run continuously against a cluster; after a steady phase
// one node (process `--victim-pid`) is SIGKILLed while they stream, and the run goes on for
// `--after-seconds`. Every token's arrival is recorded. Prints, per second around the fault,
// the output tokens/s and the ITL p50 / max of the tokens that arrived in that second; then the
// detection time (kill -> the first increase of the metric `--detect-prefix` summed over the
// Prometheus text at `--detect-url`: the attention node's dispatch errors for an expert-node
// fault, the router's resubmissions for an attention-node fault), the time to recovered
// throughput (after the slowest of the first ten seconds after the kill, the first second from
// which two in a row reach 90 % of the steady tokens/s; 0 = none fell below), the longest gap between two tokens of any stream, and the failed
// requests (an HTTP error, an error event, or fewer tokens than asked).
//
// usage: bench_chaos --url http://127.0.0.1:PORT --victim-pid PID [--label TEXT]
//          [--detect-url http://HOST:PORT/metrics --detect-prefix NAME]
//          [--concurrency 8] [--prompt-tokens 32] [--output-tokens 64]
//          [--steady-seconds 10] [--after-seconds 20] [--max-gap-seconds 0]
// Exits 1 when a request failed, or when --max-gap-seconds > 0 and the longest gap exceeds it.
// The victim must be a process this one may signal (bench/cluster/run_chaos_bench.sh starts the
// cluster and passes the node's pid).
#include <signal.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "bench/cluster/bench_client.h"
#include "bench/cluster/bench_flags.h"

namespace {

using moemesh::bench::Now;
using moemesh::bench::Percentile;

// The sum of every sample of metric `name` in the Prometheus text at `url`
// (http://host:port/path, default path /metrics), or NaN when it does not answer.
double ScrapeSum(const std::string& url, const std::string& name) {
  const size_t path_at = url.find('/', url.find("//") + 2);
  const std::optional<std::string> text = moemesh::bench::GetBody(
      url.substr(0, path_at), path_at == std::string::npos ? "/metrics" : url.substr(path_at),
      /*read_timeout_s=*/2, /*connection_timeout_s=*/1);
  return text ? moemesh::bench::SumMetric(*text, name) : std::nan("");
}

}  // namespace

int main(int argc, char** argv) {
  std::string url, label = "fault", detect_url, detect_prefix;
  int victim = 0, concurrency = 8, prompt_tokens = 32, output_tokens = 64;
  double steady_seconds = 10, after_seconds = 20, max_gap_seconds = 0;
  moemesh::bench::BenchFlags flags("bench_chaos");
  flags.Add("--url", &url);
  flags.Add("--victim-pid", &victim);
  flags.Add("--label", &label);
  flags.Add("--detect-url", &detect_url);
  flags.Add("--detect-prefix", &detect_prefix);
  flags.Add("--concurrency", &concurrency);
  flags.Add("--prompt-tokens", &prompt_tokens);
  flags.Add("--output-tokens", &output_tokens);
  flags.Add("--steady-seconds", &steady_seconds);
  flags.Add("--after-seconds", &after_seconds);
  flags.Add("--max-gap-seconds", &max_gap_seconds);
  flags.Parse(argc, argv);
  if (url.empty() || victim <= 0) flags.Fail("--url and --victim-pid are required");
  if (detect_url.empty() != detect_prefix.empty()) {
    flags.Fail("give both --detect-url and --detect-prefix, or neither");
  }

  // Every token's arrival, failed requests' too; the longest gap.
  moemesh::bench::StreamSamples samples({.record_incomplete = true, .detailed_failures = true});
  moemesh::bench::ContinuousClients clients(
      concurrency, /*seed=*/4321, prompt_tokens, [&](const std::vector<int32_t>& prompt) {
        samples.Record(moemesh::bench::StreamCompletion(url, prompt, output_tokens), output_tokens);
      });
  // Warm-up, then the steady window the recovery is measured against.
  std::this_thread::sleep_for(std::chrono::seconds(3));
  const double steady_start = Now();
  std::this_thread::sleep_for(std::chrono::duration<double>(steady_seconds));
  const double detect_before = detect_url.empty() ? 0 : ScrapeSum(detect_url, detect_prefix);
  const double kill_at = Now();
  if (::kill(victim, SIGKILL) != 0) flags.Fail("cannot SIGKILL pid " + std::to_string(victim));
  double detected_at = -1;
  while (Now() - kill_at < after_seconds) {
    if (!detect_url.empty() && detected_at < 0) {
      const double value = ScrapeSum(detect_url, detect_prefix);
      if (!std::isnan(value) && value > detect_before) detected_at = Now();
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
  const double end = Now();
  clients.Stop();

  // One-second buckets relative to the kill, from the steady start to the end.
  const int first = static_cast<int>(std::floor(steady_start - kill_at));
  const int last = static_cast<int>(std::ceil(end - kill_at));
  std::map<int, int> tokens;
  std::map<int, std::vector<double>> gaps;
  for (double t : samples.token_times) {
    if (t >= steady_start && t < end) ++tokens[static_cast<int>(std::floor(t - kill_at))];
  }
  for (const auto& [t, gap] : samples.itl) {
    if (t >= steady_start && t < end) gaps[static_cast<int>(std::floor(t - kill_at))].push_back(gap);
  }
  double steady_tokens = 0;
  int steady_buckets = 0;
  for (int b = first; b < 0; ++b) {
    if (kill_at + b < steady_start) continue;  // partial bucket
    steady_tokens += tokens[b];
    ++steady_buckets;
  }
  const double steady_rate = steady_buckets > 0 ? steady_tokens / steady_buckets : 0;
  // The fault's dip: the slowest second of the first ten after the kill (or of what ran). Recovered
  // at the first second after it from which two seconds in a row reach 90 % of steady; 0 when no
  // second fell below that.
  const int window = std::min(10, last - 1);
  int dip = 0;
  for (int b = 0; b < window; ++b) {
    if (tokens[b] < tokens[dip]) dip = b;
  }
  const double threshold = 0.9 * steady_rate;
  double recovered = -1;
  if (window > 0 && tokens[dip] >= threshold) {
    recovered = 0;
  } else {
    for (int b = dip + 1; b + 1 < last - 1; ++b) {
      if (tokens[b] >= threshold && tokens[b + 1] >= threshold) {
        recovered = b;
        break;
      }
    }
  }
  std::printf("%s: concurrency %d, prompt %d tokens, output %d tokens; %d requests, %d failed\n",
              label.c_str(), concurrency, prompt_tokens, output_tokens, samples.requests,
              samples.failed);
  std::printf("\n| second (0 = SIGKILL) | output tokens/s | ITL p50 ms | ITL max ms |\n"
              "|---|---|---|---|\n");
  for (int b = first; b < last; ++b) {
    if (kill_at + b < steady_start) continue;
    const std::vector<double>& v = gaps[b];
    std::printf("| %+d | %d | %.1f | %.1f |\n", b, tokens[b], 1e3 * Percentile(v, 0.5),
                v.empty() ? 0.0 : 1e3 * *std::max_element(v.begin(), v.end()));
  }
  std::printf("\nsteady: %.1f output tokens/s\n", steady_rate);
  if (detect_url.empty()) {
    std::printf("detection: not measured (no --detect-url)\n");
  } else if (detected_at < 0) {
    std::printf("detection: %s did not increase within %.0f s\n", detect_prefix.c_str(),
                after_seconds);
  } else {
    std::printf("detection (%s rose): %.3f s after the SIGKILL\n", detect_prefix.c_str(),
                detected_at - kill_at);
  }
  if (recovered < 0) {
    std::printf("recovered throughput (two seconds in a row >= 90%% of steady): not within %.0f s\n",
                after_seconds);
  } else if (recovered == 0) {
    std::printf("recovered throughput: no second after the SIGKILL fell below 90%% of steady "
                "(slowest: %+d at %d tokens/s)\n",
                dip, tokens[dip]);
  } else {
    std::printf("recovered throughput (two seconds in a row >= 90%% of steady): from second %+.0f "
                "(slowest: %+d at %d tokens/s)\n",
                recovered, dip, tokens[dip]);
  }
  std::printf("longest gap between two tokens of a stream: %.3f s (ending %+.2f s from the "
              "SIGKILL)\n",
              samples.longest_gap, samples.longest_gap_at - kill_at);
  std::printf("failed requests: %d\n", samples.failed);
  bool ok = samples.failed == 0;
  if (max_gap_seconds > 0 && samples.longest_gap > max_gap_seconds) {
    std::printf("FAIL: the longest gap %.3f s is above --max-gap-seconds %.3f\n",
                samples.longest_gap, max_gap_seconds);
    ok = false;
  }
  return ok ? 0 : 1;
}
