// The router's HTTP/1.x transport: an event-driven server on Boost.Beast over Asio (a few I/O
// threads serve every connection; no thread per connection). It parses requests with Beast,
// enforces the connection-level limits and deadlines, hands each request to one handler and
// writes its HttpResponse (whole, or streamed by a ResponseProducer).
//
// Protocol behaviour (RFC 9110 / 9112):
//  - a request whose headers do not arrive within header_timeout, or whose body does not within
//    body_timeout, is dropped; a keep-alive connection idle for idle_timeout is closed;
//  - POST/PUT/PATCH without Content-Length (and not chunked) gets 411, a body over
//    max_body_bytes 413, headers over max_header_bytes 431, an unparsable request 400;
//  - `Expect: 100-continue` is answered before the body is read;
//  - streams go chunked to HTTP/1.1 clients and as raw bytes followed by a close to HTTP/1.0
//    clients (never chunked to 1.0);
//  - past max_connections open connections, new ones get 503 and are closed.
// Error responses are built by `error_response` (the router gives OpenAI error bodies).
#pragma once

#include <atomic>
#include <cstddef>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "router/http_types.h"

namespace moemesh::router {

struct HttpTransportOptions {
  std::string host = "127.0.0.1";
  int port = 0;                           // 0 picks a free port
  int io_threads = 4;                     // event-loop threads
  int backlog = 4096;                     // listen(2) backlog (the kernel caps it at somaxconn)
  int max_connections = 8192;             // open connections served; more get 503
  double header_timeout_seconds = 10;     // connection open / request start -> end of headers
  double body_timeout_seconds = 60;       // end of headers -> end of body
  double idle_timeout_seconds = 75;       // keep-alive: wait for the next request
  double write_timeout_seconds = 60;      // one write to a client that does not read
  size_t max_header_bytes = 64u << 10;
  size_t max_body_bytes = 32u << 20;
  size_t max_buffered_bytes = 8u << 20;   // stream bytes a slow reader may leave unsent
  // TLS on the port (PEM files); both empty = plain HTTP.
  std::string tls_cert_file;
  std::string tls_key_file;
  // The response for a transport-level error (status, message). Required.
  std::function<HttpResponse(int status, std::string message)> error_response;
};

// Counters of the transport (relaxed atomics).
struct HttpTransportStats {
  std::atomic<int64_t> open_connections{0};
  std::atomic<int64_t> active_producers{0};       // responses being produced (streams, waits)
  std::atomic<uint64_t> accepted{0};
  std::atomic<uint64_t> rejected_over_limit{0};  // answered 503 (or closed) past the limit
  std::atomic<uint64_t> timed_out{0};            // header, body, idle or write deadline
};

class HttpTransport {
 public:
  // Called on an I/O thread for every complete request; must not block.
  using Handler = std::function<HttpResponse(HttpRequest&)>;

  HttpTransport(HttpTransportOptions options, Handler handler);
  ~HttpTransport();  // Stop()

  // Binds, listens and starts the I/O threads. Unavailable when it cannot bind (or TLS files
  // cannot be read: InvalidArgument).
  absl::Status Start();
  int port() const { return port_; }
  // Stops accepting; waits up to `grace_seconds` for open streams to end (producers see their
  // own stop flag), then closes every connection and joins the threads. Idempotent.
  void Stop(double grace_seconds = 1.0);
  const HttpTransportStats& stats() const { return *stats_; }

  struct Impl;

 private:
  HttpTransportOptions options_;
  Handler handler_;
  std::shared_ptr<HttpTransportStats> stats_;
  std::unique_ptr<Impl> impl_;
  std::vector<std::thread> threads_;
  int port_ = 0;
};

}  // namespace moemesh::router
