// The router's HTTP server: the OpenAI API (chat/completions, completions, models) with SSE
// streaming, /health and /ready, over an AttentionBackend that runs the sequences. Requests
// arrive through HttpTransport (Boost.Beast, event-driven); this layer routes them (404 / 405),
// checks API keys (api_auth.h), accepts or generates X-Request-Id (echoed on every response)
// and answers completions through ResponseProducers, so an open stream holds no thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "router/api_auth.h"
#include "router/attention_backend.h"
#include "router/http_transport.h"
#include "router/http_types.h"
#include "router/openai_api.h"

namespace moemesh::router {

// How one completion request ended, for metrics.
struct RequestOutcome {
  bool ok = false;
  int http_status = 200;                    // error status when !ok (499: client went away)
  std::vector<std::string> finish_reasons;  // per choice, when ok ("stop", "length", ...)
  int64_t prompt_tokens = 0;
  int64_t completion_tokens = 0;
  double e2e_seconds = 0;                   // request received -> response complete
};

// Optional observer of completion requests (metrics). Called on serving threads; thread-safe.
class HttpServerObserver {
 public:
  virtual ~HttpServerObserver() = default;
  virtual void OnRequestStart() {}
  // First generated token of the request: seconds since it was received.
  virtual void OnFirstToken(double seconds) {}
  // `count` more tokens of one choice after its previous ones: seconds between them, per token.
  virtual void OnInterTokenLatency(double seconds, int count) {}
  // Exactly once per OnRequestStart.
  virtual void OnRequestEnd(const RequestOutcome& outcome) {}
};

struct HttpServerOptions {
  std::string host = "127.0.0.1";
  int port = 0;                           // 0 picks a free port (see HttpServer::port())
  double request_timeout_seconds = 600;   // whole request; then 504 / an SSE error event
  int threads = 4;                        // I/O (event-loop) threads; streams hold none
  size_t max_body_bytes = 32u << 20;      // larger bodies get 413
  HttpServerObserver* observer = nullptr;  // not owned; outlives the server
  // More routes (/metrics, /dashboard, ...), matched after the built-in ones.
  std::vector<HttpRoute> routes;
  // Connection limits and deadlines; its host, port, io_threads, max_body_bytes and
  // error_response are set from the fields above.
  HttpTransportOptions transport;
  ApiAuthOptions auth;
};

// Counters and timings of the HTTP layer, for the metrics exporter (a later issue). Times in
// microseconds. Updated with relaxed atomics; read at any time.
struct RouterStats {
  std::atomic<uint64_t> requests{0};           // completion requests received
  std::atomic<uint64_t> streaming_requests{0};
  std::atomic<uint64_t> errors{0};             // completion requests answered with an error
  std::atomic<uint64_t> client_disconnects{0}; // requests whose client went away
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
  // Connection counters of the transport (after Start).
  const HttpTransportStats* transport_stats() const {
    return transport_ ? &transport_->stats() : nullptr;
  }

  // Routes, checks and answers one request (what the transport calls). Public for tests.
  HttpResponse Handle(HttpRequest& request);

 private:
  class Completion;
  void Install();
  HttpResponse Completions(Endpoint endpoint, const HttpRequest& request);

  const ModelInfo& model_;
  AttentionBackend* backend_;
  HttpServerOptions options_;
  std::vector<HttpRoute> routes_;
  std::unique_ptr<HttpTransport> transport_;
  int port_ = 0;
  RouterStats stats_;
  std::atomic<bool> stopping_{false};
};

}  // namespace moemesh::router
