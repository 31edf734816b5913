// The router's HTTP server: the OpenAI API (chat/completions, completions, models) with SSE
// streaming, /health and /ready, over an AttentionBackend that runs the sequences.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/status.h"
#include "router/attention_backend.h"
#include "router/openai_api.h"

namespace httplib {
class Server;
}

namespace moemesh::router {

struct HttpServerOptions {
  std::string host = "127.0.0.1";
  int port = 0;                           // 0 picks a free port (see HttpServer::port())
  double request_timeout_seconds = 600;   // whole request; then 504 / an SSE error event
  int threads = 64;                       // connections served at once (one per open stream)
  size_t max_body_bytes = 32u << 20;      // larger bodies get 413
};

// Counters and timings of the HTTP layer, for the metrics exporter (a later issue). Times in
// microseconds. Updated with relaxed atomics; read at any time.
struct RouterStats {
  std::atomic<uint64_t> requests{0};           // completion requests received
  std::atomic<uint64_t> streaming_requests{0};
  std::atomic<uint64_t> errors{0};             // completion requests answered with an error
  std::atomic<uint64_t> client_disconnects{0}; // streams whose client went away
  std::atomic<uint64_t> sequences_started{0};
  std::atomic<uint64_t> sequences_cancelled{0};  // stop strings, disconnects, errors, timeouts
  std::atomic<uint64_t> prompt_tokens{0};
  std::atomic<uint64_t> completion_tokens{0};
  std::atomic<uint64_t> ttft_us_sum{0};        // request received -> first generated token
  std::atomic<uint64_t> ttft_count{0};
  std::atomic<uint64_t> request_us_sum{0};     // request received -> last byte produced
};

class HttpServer {
 public:
  // `model` and `backend` must outlive the server.
  HttpServer(const ModelInfo& model, AttentionBackend* backend, HttpServerOptions options);
  ~HttpServer();  // Stop()

  // Binds host:port and serves on a background thread. Unavailable when it cannot bind.
  absl::Status Start();
  // The bound port (after Start).
  int port() const { return port_; }
  // Stops accepting, ends open requests' waits, joins the serving thread. Idempotent.
  void Stop();
  const RouterStats& stats() const { return stats_; }

 private:
  struct Run;
  void Install();

  const ModelInfo& model_;
  AttentionBackend* backend_;
  HttpServerOptions options_;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  int port_ = 0;
  RouterStats stats_;
  std::atomic<bool> stopping_{false};
};

}  // namespace moemesh::router
