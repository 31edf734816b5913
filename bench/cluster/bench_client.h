// HTTP client pieces shared by the cluster benchmarks (bench_cluster, bench_rebalance,
// bench_chaos): the clock, Percentile(), Die(), a streaming /v1/completions client that records
// every token's arrival, random prompts and the client threads that send them, and plain GETs of
// JSON and Prometheus text.
//
//   const StreamedCompletion r = StreamCompletion(url, prompt, output_tokens);
//   if (!r.Complete(output_tokens)) ...;               // HTTP error, error event or too few tokens
//   std::vector<double> times = r.TokenSeconds(kProcessStart);  // seconds, as Now() reads them
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <mutex>
#include <optional>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "httplib.h"
#include "nlohmann/json.hpp"

namespace moemesh::bench {

using Clock = std::chrono::steady_clock;

// When this process started (static initialisation): the origin of Now().
inline const Clock::time_point kProcessStart = Clock::now();

// Seconds from `from` to `to` (negative when `to` is earlier).
inline double Seconds(Clock::time_point from, Clock::time_point to) {
  return std::chrono::duration<double>(to - from).count();
}

// Seconds from `from` to now.
inline double SecondsSince(Clock::time_point from) { return Seconds(from, Clock::now()); }

// Seconds since the process started: the time axis of bench_rebalance and bench_chaos.
inline double Now() { return SecondsSince(kProcessStart); }

// The p-quantile (p in [0, 1]) of `v`, linearly interpolated between the two nearest ranks;
// 0 when `v` is empty. Same unit as the values.
inline double Percentile(std::vector<double> v, double p) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  const double rank = p * (v.size() - 1);
  const size_t low = static_cast<size_t>(rank);
  const size_t high = std::min(low + 1, v.size() - 1);
  return v[low] + (rank - low) * (v[high] - v[low]);
}

// Prints "PROGRAM: message" on stderr and exits 1.
[[noreturn]] inline void Die(const char* program, const std::string& message) {
  std::fprintf(stderr, "%s: %s\n", program, message.c_str());
  std::exit(1);
}

// --- Streaming completions ----------------------------------------------------------------------

// What one streaming request got back.
struct StreamedCompletion {
  bool answered = false;  // an HTTP response came back (with any status)
  int status = 0;         // its HTTP status; 0 when none came back
  httplib::Error error = httplib::Error::Success;  // why none came back (when !answered)
  bool error_event = false;                        // an SSE chunk carried "error"
  Clock::time_point sent;                          // just before the request was sent
  // One entry per token id received: the arrival of the SSE data that carried it (tokens that
  // came in the same read share a time).
  std::vector<Clock::time_point> token_times;

  // Arrival of every token in seconds after `origin` (kProcessStart: as Now() reads; `sent`:
  // since the request went out).
  std::vector<double> TokenSeconds(Clock::time_point origin) const {
    std::vector<double> seconds;
    seconds.reserve(token_times.size());
    for (Clock::time_point t : token_times) seconds.push_back(Seconds(origin, t));
    return seconds;
  }

  // HTTP 200, no error event and exactly `output_tokens` tokens.
  bool Complete(int output_tokens) const {
    return answered && status == 200 && !error_event &&
           static_cast<int>(token_times.size()) == output_tokens;
  }

  // `status_prefix` + the HTTP status when a response came back ("HTTP 503" / "503"), else
  // httplib's name for the error ("Connection").
  std::string StatusText(const std::string& status_prefix = "") const {
    return answered ? status_prefix + std::to_string(status) : httplib::to_string(error);
  }
};

// POSTs a token-id prompt to `url`/v1/completions with stream=true, ignore_eos, greedy
// (temperature 0), max_tokens `output_tokens` and return_token_ids, and reads the SSE stream to
// its end (read timeout 600 s, connection timeout 10 s). An unanswered request, a non-200 status
// or an error event shows in the result; chunks that are not JSON are skipped.
inline StreamedCompletion StreamCompletion(const std::string& url,
                                           const std::vector<int32_t>& prompt, int output_tokens) {
  using nlohmann::json;
  httplib::Client client(url);
  client.set_read_timeout(600, 0);
  client.set_connection_timeout(10, 0);
  const json body = {{"prompt", prompt},   {"max_tokens", output_tokens},
                     {"temperature", 0},  {"ignore_eos", true},
                     {"stream", true},    {"return_token_ids", true}};
  httplib::Request request;
  request.method = "POST";
  request.path = "/v1/completions";
  request.set_header("Content-Type", "application/json");
  request.body = body.dump();
  StreamedCompletion out;
  std::string buffer;
  request.content_receiver = [&](const char* data, size_t length, uint64_t, uint64_t) {
    const Clock::time_point now = Clock::now();
    buffer.append(data, length);
    for (size_t end; (end = buffer.find("\n\n")) != std::string::npos;) {
      const std::string event = buffer.substr(0, end);
      buffer.erase(0, end + 2);
      if (event.rfind("data: ", 0) != 0) continue;
      const std::string payload = event.substr(6);
      if (payload == "[DONE]") continue;
      const json chunk = json::parse(payload, nullptr, false);
      if (chunk.contains("error")) out.error_event = true;
      if (chunk.is_discarded() || !chunk.contains("choices") || chunk["choices"].empty()) continue;
      const json& choice = chunk["choices"][0];
      const size_t count = choice.contains("token_ids") ? choice["token_ids"].size() : 0;
      out.token_times.insert(out.token_times.end(), count, now);
    }
    return true;
  };
  out.sent = Clock::now();
  const httplib::Result result = client.send(request);
  out.answered = static_cast<bool>(result);
  if (result) {
    out.status = result->status;
  } else {
    out.error = result.error();
  }
  return out;
}

// The token arrivals of a run's streaming requests, on the Now() axis (seconds since the process
// started). Record() may be called from many threads at once; read the fields after they stopped.
struct StreamSamples {
  struct Options {
    // Also record the tokens of requests that were not Complete() (failed either way).
    bool record_incomplete = true;
    // The stderr line for a failed request: "request failed: HTTP 503, 3 of 64 tokens, error event"
    // when true, "request failed: 503" (or httplib's error name) when false.
    bool detailed_failures = true;
  };

  explicit StreamSamples(Options options) : options(options) {}

  // Counts `result` (a request for `output_tokens` tokens) and records its tokens; a request that
  // is not Complete() counts as failed and prints a line on stderr.
  void Record(const StreamedCompletion& result, int output_tokens) {
    const std::vector<double> times = result.TokenSeconds(kProcessStart);
    const bool complete = result.Complete(output_tokens);
    std::lock_guard<std::mutex> lock(mutex);
    ++requests;
    if (complete || options.record_incomplete) {
      token_times.insert(token_times.end(), times.begin(), times.end());
      for (size_t i = 1; i < times.size(); ++i) {
        const double gap = times[i] - times[i - 1];
        itl.push_back({times[i], gap});
        if (gap > longest_gap) {
          longest_gap = gap;
          longest_gap_at = times[i];
        }
      }
    }
    if (complete) return;
    ++failed;
    if (options.detailed_failures) {
      std::fprintf(stderr, "request failed: %s, %zu of %d tokens%s\n",
                   result.StatusText("HTTP ").c_str(), times.size(), output_tokens,
                   result.error_event ? ", error event" : "");
    } else {
      std::fprintf(stderr, "request failed: %s\n", result.StatusText().c_str());
    }
  }

  const Options options;
  std::mutex mutex;
  std::vector<double> token_times;             // every recorded token's arrival
  // (arrival, gap before it) of every token after the first of its stream.
  std::vector<std::pair<double, double>> itl;
  double longest_gap = 0;                      // the longest gap within one stream (s)
  double longest_gap_at = 0;                   // arrival of the token that ended it
  int requests = 0;                            // requests recorded
  int failed = 0;                              // of those, not Complete()
};

// Random token-id prompts: ids uniform in [min_id, max_id] from a std::mt19937 seeded `seed`
// (the same seed gives the same prompts).
class PromptSource {
 public:
  PromptSource(uint32_t seed, int32_t min_id, int32_t max_id)
      : random_(seed), token_(min_id, max_id) {}

  // The next prompt of `length` ids.
  std::vector<int32_t> Next(int length) {
    std::vector<int32_t> prompt(length);
    for (int32_t& id : prompt) id = token_(random_);
    return prompt;
  }

 private:
  std::mt19937 random_;
  std::uniform_int_distribution<int32_t> token_;
};

// `count` client threads that send requests back to back until Stop(): thread c draws its
// prompts (`prompt_tokens` ids in [1000, 100000]) from PromptSource(seed + c) and calls
// `request(prompt)` for each. `request` runs on those threads at once, so it must be thread-safe.
class ContinuousClients {
 public:
  ContinuousClients(int count, uint32_t seed, int prompt_tokens,
                    std::function<void(const std::vector<int32_t>&)> request) {
    for (int c = 0; c < count; ++c) {
      threads_.emplace_back([this, seed, c, prompt_tokens, request] {
        PromptSource prompts(seed + c, 1000, 100000);
        while (!stop_) request(prompts.Next(prompt_tokens));
      });
    }
  }
  ContinuousClients(const ContinuousClients&) = delete;
  ContinuousClients& operator=(const ContinuousClients&) = delete;
  ~ContinuousClients() { Stop(); }

  // Lets every thread finish its request in flight, then joins them. Idempotent.
  void Stop() {
    stop_ = true;
    for (std::thread& thread : threads_) {
      if (thread.joinable()) thread.join();
    }
  }

 private:
  std::atomic<bool> stop_{false};
  std::vector<std::thread> threads_;
};

// --- Plain GETs ---------------------------------------------------------------------------------

// The body of GET `base_url` (scheme://host:port) + `path` when it answers 200, else nullopt.
// Timeouts in seconds; the connection timeout defaults to httplib's (300 s).
inline std::optional<std::string> GetBody(
    const std::string& base_url, const std::string& path, int read_timeout_s,
    int connection_timeout_s = CPPHTTPLIB_CONNECTION_TIMEOUT_SECOND) {
  httplib::Client client(base_url);
  client.set_read_timeout(read_timeout_s, 0);
  client.set_connection_timeout(connection_timeout_s, 0);
  auto result = client.Get(path);
  if (!result || result->status != 200) return std::nullopt;
  return result->body;
}

// GET `base_url` + `path` parsed as JSON (read timeout 30 s): null when it does not answer 200,
// discarded (is_discarded()) when the body is not JSON.
inline nlohmann::json GetJson(const std::string& base_url, const std::string& path) {
  const std::optional<std::string> body = GetBody(base_url, path, 30);
  if (!body) return nlohmann::json();
  return nlohmann::json::parse(*body, nullptr, false);
}

// The sum of the values of every sample of metric `name` (with or without labels: the line
// starts with `name` followed by ' ' or '{') in Prometheus text; 0 when there are none.
inline double SumMetric(const std::string& prometheus_text, const std::string& name) {
  double sum = 0;
  std::istringstream lines(prometheus_text);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind(name, 0) != 0) continue;
    const char next = line.size() > name.size() ? line[name.size()] : ' ';
    if (next != ' ' && next != '{') continue;
    double value = 0;
    if (absl::SimpleAtod(line.substr(line.rfind(' ') + 1), &value)) sum += value;
  }
  return sum;
}

}  // namespace moemesh::bench
