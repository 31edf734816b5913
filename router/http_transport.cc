#include "router/http_transport.h"

#include <signal.h>

#include <chrono>
#include <exception>
#include <optional>
#include <sstream>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "boost/asio.hpp"
#include "boost/asio/ssl.hpp"
#include "boost/beast/core.hpp"
#include "boost/beast/http.hpp"
#include "boost/beast/ssl.hpp"

namespace moemesh::router {

namespace beast = boost::beast;
namespace http = boost::beast::http;
namespace net = boost::asio;
namespace ssl = boost::asio::ssl;
using tcp = net::ip::tcp;

namespace {

using Clock = std::chrono::steady_clock;

std::chrono::steady_clock::duration Seconds(double s) {
  return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
}

constexpr auto kTick = std::chrono::milliseconds(100);
// Past max_connections + this, new connections are closed without an answer.
constexpr int kOverLimitSlack = 1024;

bool MethodHasBody(http::verb verb) {
  return verb == http::verb::post || verb == http::verb::put || verb == http::verb::patch;
}

}  // namespace

struct HttpTransport::Impl {
  HttpTransportOptions* options = nullptr;
  Handler* handler = nullptr;
  std::shared_ptr<HttpTransportStats> stats;
  net::io_context ioc;
  std::optional<tcp::acceptor> acceptor;
  std::optional<net::steady_timer> accept_retry;
  std::optional<ssl::context> tls;
  std::atomic<bool> stopping{false};

  explicit Impl(int threads) : ioc(threads) {}
  void Accept();
};

namespace {

// One connection. All its handlers run on its strand.
template <class Stream>
class Session : public std::enable_shared_from_this<Session<Stream>> {
 public:
  using std::enable_shared_from_this<Session<Stream>>::shared_from_this;

  template <class... Args>
  Session(HttpTransport::Impl* impl, bool over_limit, Args&&... args)
      : impl_(impl),
        options_(*impl->options),
        stats_(impl->stats),
        stream_(std::forward<Args>(args)...),
        idle_timer_(stream_.get_executor()),
        tick_timer_(stream_.get_executor()),
        over_limit_(over_limit) {}

  ~Session() {
    DetachProducer(/*cancel=*/true);
    stats_->open_connections.fetch_sub(1, std::memory_order_relaxed);
  }

  void Start() {
    net::dispatch(stream_.get_executor(), [self = shared_from_this()] {
      if constexpr (kTls) {
        self->Lowest().expires_after(Seconds(self->options_.header_timeout_seconds));
        self->stream_.async_handshake(ssl::stream_base::server,
                                      [self](beast::error_code ec) {
                                        if (ec) return self->Close();
                                        self->ReadHeader();
                                      });
      } else {
        self->ReadHeader();
      }
    });
  }

 private:
  static constexpr bool kTls = !std::is_same_v<Stream, beast::tcp_stream>;

  beast::tcp_stream& Lowest() { return beast::get_lowest_layer(stream_); }

  // Keep-alive: waits (idle_timeout) for the next request's first byte.
  void WaitForNextRequest() {
    ++generation_;
    if (buffer_.size() > 0) return ReadHeader();  // pipelined
    const uint64_t gen = generation_;
    idle_timer_.expires_after(Seconds(options_.idle_timeout_seconds));
    idle_timer_.async_wait([self = shared_from_this(), gen](beast::error_code ec) {
      if (ec || gen != self->generation_ || self->reading_) return;
      self->stats_->timed_out.fetch_add(1, std::memory_order_relaxed);
      self->Close();
    });
    Lowest().socket().async_wait(
        tcp::socket::wait_read, [self = shared_from_this(), gen](beast::error_code ec) {
          if (gen != self->generation_ || self->closed_) return;
          self->idle_timer_.cancel();
          if (ec) return self->Close();
          self->ReadHeader();
        });
  }

  void ReadHeader() {
    reading_ = true;
    parser_.emplace();
    parser_->header_limit(static_cast<uint32_t>(options_.max_header_bytes));
    parser_->body_limit(options_.max_body_bytes);
    Lowest().expires_after(Seconds(options_.header_timeout_seconds));
    http::async_read_header(stream_, buffer_, *parser_,
                            [self = shared_from_this()](beast::error_code ec, size_t) {
                              self->OnHeader(ec);
                            });
  }

  void OnHeader(beast::error_code ec) {
    if (ec == beast::error::timeout) {
      stats_->timed_out.fetch_add(1, std::memory_order_relaxed);
      return Close();
    }
    if (ec == http::error::header_limit) {
      return Fail(431, absl::StrCat("the request headers exceed ", options_.max_header_bytes,
                                    " bytes"));
    }
    if (ec == http::error::end_of_stream || ec == net::error::eof ||
        ec == net::error::connection_reset || ec == net::error::operation_aborted) {
      return Close();
    }
    if (ec) return Fail(400, absl::StrCat("malformed HTTP request: ", ec.message()));
    auto& header = parser_->get();
    version_ = header.version() == 10 ? 10 : 11;
    if (over_limit_) {
      stats_->rejected_over_limit.fetch_add(1, std::memory_order_relaxed);
      return Fail(503, absl::StrCat("the server has too many open connections (limit ",
                                    options_.max_connections, "); retry later"));
    }
    if (MethodHasBody(header.method()) && !parser_->content_length() && !parser_->chunked()) {
      return Fail(411, "a request body needs a Content-Length header");
    }
    if (parser_->content_length() && *parser_->content_length() > options_.max_body_bytes) {
      return Fail(413, absl::StrCat("the request body is too large (limit ",
                                    options_.max_body_bytes, " bytes)"));
    }
    auto expect = header.find(http::field::expect);
    if (expect != header.end() && beast::iequals(expect->value(), "100-continue")) {
      auto cont = std::make_shared<http::response<http::empty_body>>(http::status::continue_,
                                                                     header.version());
      Lowest().expires_after(Seconds(options_.write_timeout_seconds));
      http::async_write(stream_, *cont,
                        [self = shared_from_this(), cont](beast::error_code ec, size_t) {
                          if (ec) return self->Close();
                          self->ReadBody();
                        });
      return;
    }
    ReadBody();
  }

  void ReadBody() {
    Lowest().expires_after(Seconds(options_.body_timeout_seconds));
    http::async_read(stream_, buffer_, *parser_,
                     [self = shared_from_this()](beast::error_code ec, size_t) {
                       self->OnBody(ec);
                     });
  }

  void OnBody(beast::error_code ec) {
    reading_ = false;
    if (ec == beast::error::timeout) {
      stats_->timed_out.fetch_add(1, std::memory_order_relaxed);
      return Fail(408, "the request body did not arrive in time");
    }
    if (ec == http::error::body_limit) {
      return Fail(413, absl::StrCat("the request body is too large (limit ",
                                    options_.max_body_bytes, " bytes)"));
    }
    if (ec == http::error::end_of_stream || ec == net::error::eof ||
        ec == net::error::connection_reset || ec == net::error::operation_aborted) {
      return Close();
    }
    if (ec) return Fail(400, absl::StrCat("malformed HTTP request: ", ec.message()));
    http::request<http::string_body> message = parser_->release();
    parser_.reset();
    keep_alive_ = message.keep_alive();

    HttpRequest request;
    request.method = std::string(message.method_string());
    request.target = std::string(message.target());
    const size_t q = request.target.find('?');
    request.path = request.target.substr(0, q);
    if (q != std::string::npos) request.query = request.target.substr(q + 1);
    request.version = version_;
    for (const auto& field : message) {
      request.headers.emplace_back(absl::AsciiStrToLower(std::string(field.name_string())),
                                   std::string(field.value()));
    }
    request.body = std::move(message.body());
    beast::error_code remote_ec;
    const tcp::endpoint remote = Lowest().socket().remote_endpoint(remote_ec);
    if (!remote_ec) request.remote = absl::StrCat(remote.address().to_string(), ":", remote.port());

    HttpResponse response;
    try {
      response = (*impl_->handler)(request);
    } catch (const std::exception& e) {
      response = options_.error_response(500, absl::StrCat("internal error: ", e.what()));
    } catch (...) {
      response = options_.error_response(500, "internal error");
    }
    if (response.producer) return StartProducer(std::move(response));
    WriteWhole(std::move(response), /*close=*/!keep_alive_);
  }

  // Answers a transport error and closes the connection.
  void Fail(int status, std::string message) {
    reading_ = false;
    if (version_ == 0) version_ = 11;
    WriteWhole(options_.error_response(status, std::move(message)), /*close=*/true);
  }

  void WriteWhole(HttpResponse response, bool close) {
    auto message = std::make_shared<http::response<http::string_body>>();
    message->version(version_ == 10 ? 10 : 11);
    message->result(static_cast<unsigned>(response.status));
    message->set(http::field::server, "moemesh-router");
    message->set(http::field::content_type, response.content_type);
    for (auto& [name, value] : response.headers) message->insert(name, value);
    message->body() = std::move(response.body);
    message->keep_alive(!close);
    message->prepare_payload();
    Lowest().expires_after(Seconds(options_.write_timeout_seconds));
    http::async_write(stream_, *message,
                      [self = shared_from_this(), message, close](beast::error_code ec, size_t) {
                        if (ec == beast::error::timeout) {
                          self->stats_->timed_out.fetch_add(1, std::memory_order_relaxed);
                        }
                        if (ec || close) return self->Close();
                        self->WaitForNextRequest();
                      });
  }

  // ---- responses produced over time

  void StartProducer(HttpResponse response) {
    producer_ = std::move(response.producer);
    base_headers_ = std::move(response.headers);
    stats_->active_producers.fetch_add(1, std::memory_order_relaxed);
    head_sent_ = false;
    stream_done_ = false;
    chunked_ = version_ != 10;
    const uint64_t gen = ++generation_;
    std::weak_ptr<Session> weak = shared_from_this();
    producer_->SetWaker([weak] {
      if (auto self = weak.lock()) {
        if (!self->pump_posted_.exchange(true)) {
          net::post(self->stream_.get_executor(), [self] {
            self->pump_posted_.store(false);
            self->Pump();
          });
        }
      }
    });
    // Notice a client that goes away (FIN or reset) while the response is being produced.
    Lowest().socket().async_wait(tcp::socket::wait_read,
                                 [self = shared_from_this(), gen](beast::error_code ec) {
                                   self->OnPeerReadable(ec, gen);
                                 });
    ArmTick(gen);
    Pump();
  }

  void ArmTick(uint64_t gen) {
    tick_timer_.expires_after(kTick);
    tick_timer_.async_wait([self = shared_from_this(), gen](beast::error_code ec) {
      if (ec || gen != self->generation_ || !self->producer_) return;
      self->Pump();
      if (self->producer_) self->ArmTick(gen);
    });
  }

  void OnPeerReadable(beast::error_code ec, uint64_t gen) {
    if (gen != generation_ || !producer_ || closed_) return;
    if (!ec) {
      char byte;
      const ssize_t n = ::recv(Lowest().socket().native_handle(), &byte, 1,
                               MSG_PEEK | MSG_DONTWAIT);
      if (n > 0) return;  // a pipelined request (or TLS record): read after this response
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
        Lowest().socket().async_wait(tcp::socket::wait_read,
                                     [self = shared_from_this(), gen](beast::error_code ec) {
                                       self->OnPeerReadable(ec, gen);
                                     });
        return;
      }
    }
    Close();  // the client went away: the producer is cancelled
  }

  void Pump() {
    if (!producer_ || closed_) return;
    ResponseSink sink;
    producer_->Poll(sink);
    if (sink.whole()) {
      HttpResponse whole = std::move(*sink.whole());
      for (auto& header : base_headers_) whole.headers.push_back(std::move(header));
      DetachProducer(/*cancel=*/false);
      if (head_sent_) return Close();  // a producer bug: cannot answer twice
      return WriteWhole(std::move(whole), /*close=*/!keep_alive_);
    }
    if (sink.head() && !head_sent_) {
      head_sent_ = true;
      http::response<http::empty_body> head;
      head.version(version_ == 10 ? 10 : 11);
      head.result(static_cast<unsigned>(sink.head()->status));
      head.set(http::field::server, "moemesh-router");
      head.set(http::field::content_type, sink.head()->content_type);
      for (auto& [name, value] : sink.head()->headers) head.insert(name, value);
      for (auto& [name, value] : base_headers_) head.insert(name, value);
      if (chunked_) {
        head.chunked(true);
        head.keep_alive(keep_alive_);
      } else {
        head.keep_alive(false);  // HTTP/1.0: the body ends at the close
      }
      std::ostringstream text;
      text << head.base();
      outbox_ += text.str();
    }
    if (!sink.pending().empty() && head_sent_) {
      if (chunked_) {
        outbox_ += absl::StrFormat("%x\r\n", sink.pending().size());
        outbox_ += sink.pending();
        outbox_ += "\r\n";
      } else {
        outbox_ += sink.pending();
      }
    }
    if (sink.ended() && head_sent_) {
      if (chunked_) outbox_ += "0\r\n\r\n";
      stream_done_ = true;
      DetachProducer(/*cancel=*/false);
    }
    if (outbox_.size() > options_.max_buffered_bytes) return Close();  // does not read
    Flush();
  }

  void Flush() {
    if (writing_ || closed_) return;
    if (outbox_.empty()) {
      if (stream_done_) {
        stream_done_ = false;
        if (!chunked_ || !keep_alive_) return Close();
        WaitForNextRequest();
      }
      return;
    }
    writing_ = true;
    inflight_ = std::move(outbox_);
    outbox_.clear();
    Lowest().expires_after(Seconds(options_.write_timeout_seconds));
    net::async_write(stream_, net::buffer(inflight_),
                     [self = shared_from_this()](beast::error_code ec, size_t) {
                       self->writing_ = false;
                       if (ec) {
                         if (ec == beast::error::timeout) {
                           self->stats_->timed_out.fetch_add(1, std::memory_order_relaxed);
                         }
                         return self->Close();
                       }
                       self->Flush();
                     });
  }

  void DetachProducer(bool cancel) {
    if (!producer_) return;
    std::shared_ptr<ResponseProducer> producer = std::move(producer_);
    producer_.reset();
    stats_->active_producers.fetch_sub(1, std::memory_order_relaxed);
    producer->SetWaker({});
    if (cancel) producer->Cancel();
  }

  // Closes the connection (cancelling a producer still running). For an answered error the
  // send side is shut first and what the client still sends is drained briefly, so that the
  // answer is not lost to a reset.
  void Close() {
    if (closed_) return;
    closed_ = true;
    ++generation_;
    DetachProducer(/*cancel=*/true);
    idle_timer_.cancel();
    tick_timer_.cancel();
    beast::error_code ec;
    if constexpr (kTls) {
      Lowest().socket().close(ec);
    } else {
      Lowest().socket().shutdown(tcp::socket::shutdown_send, ec);
      Drain();
    }
  }

  void Drain() {
    Lowest().expires_after(std::chrono::seconds(2));
    Lowest().async_read_some(net::buffer(drain_, sizeof(drain_)),
                             [self = shared_from_this()](beast::error_code ec, size_t) {
                               if (!ec) return self->Drain();
                               beast::error_code ignored;
                               self->Lowest().socket().close(ignored);
                             });
  }

  HttpTransport::Impl* impl_;
  const HttpTransportOptions& options_;
  std::shared_ptr<HttpTransportStats> stats_;
  Stream stream_;
  net::steady_timer idle_timer_;
  net::steady_timer tick_timer_;
  beast::flat_buffer buffer_;
  std::optional<http::request_parser<http::string_body>> parser_;
  bool over_limit_;
  int version_ = 0;
  bool keep_alive_ = true;
  bool reading_ = false;
  bool closed_ = false;
  uint64_t generation_ = 0;
  std::shared_ptr<ResponseProducer> producer_;
  std::vector<std::pair<std::string, std::string>> base_headers_;  // e.g. X-Request-Id
  std::atomic<bool> pump_posted_{false};
  bool head_sent_ = false;
  bool stream_done_ = false;
  bool chunked_ = true;
  bool writing_ = false;
  std::string outbox_;
  std::string inflight_;
  char drain_[4096];
};

}  // namespace

void HttpTransport::Impl::Accept() {
  acceptor->async_accept(net::make_strand(ioc), [this](beast::error_code ec, tcp::socket socket) {
    if (stopping.load()) return;
    if (ec) {
      // EMFILE and the like: back off briefly instead of spinning.
      accept_retry->expires_after(std::chrono::milliseconds(50));
      accept_retry->async_wait([this](beast::error_code) {
        if (!stopping.load()) Accept();
      });
      return;
    }
    stats->accepted.fetch_add(1, std::memory_order_relaxed);
    const int64_t open = stats->open_connections.fetch_add(1, std::memory_order_relaxed) + 1;
    if (open > options->max_connections + kOverLimitSlack) {
      stats->rejected_over_limit.fetch_add(1, std::memory_order_relaxed);
      stats->open_connections.fetch_sub(1, std::memory_order_relaxed);
      beast::error_code ignored;
      socket.close(ignored);
    } else {
      beast::error_code ignored;
      socket.set_option(tcp::no_delay(true), ignored);
      const bool over = open > options->max_connections;
      if (tls) {
        std::make_shared<Session<beast::ssl_stream<beast::tcp_stream>>>(this, over,
                                                                        std::move(socket), *tls)
            ->Start();
      } else {
        std::make_shared<Session<beast::tcp_stream>>(this, over, std::move(socket))->Start();
      }
    }
    Accept();
  });
}

HttpTransport::HttpTransport(HttpTransportOptions options, Handler handler)
    : options_(std::move(options)),
      handler_(std::move(handler)),
      stats_(std::make_shared<HttpTransportStats>()) {}

HttpTransport::~HttpTransport() { Stop(0); }

absl::Status HttpTransport::Start() {
  if (!options_.error_response) return absl::InvalidArgumentError("error_response is required");
  // A client that goes away mid-stream must not kill the process with SIGPIPE.
  signal(SIGPIPE, SIG_IGN);
  const int threads = std::max(1, options_.io_threads);
  impl_ = std::make_unique<Impl>(threads);
  impl_->options = &options_;
  impl_->handler = &handler_;
  impl_->stats = stats_;
  if (!options_.tls_cert_file.empty() || !options_.tls_key_file.empty()) {
    impl_->tls.emplace(ssl::context::tls_server);
    beast::error_code ec;
    impl_->tls->set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                            ssl::context::no_sslv3 | ssl::context::no_tlsv1 |
                            ssl::context::no_tlsv1_1);
    impl_->tls->use_certificate_chain_file(options_.tls_cert_file, ec);
    if (!ec) impl_->tls->use_private_key_file(options_.tls_key_file, ssl::context::pem, ec);
    if (ec) {
      return absl::InvalidArgumentError(absl::StrCat("HTTP TLS: cannot load ",
                                                     options_.tls_cert_file, " / ",
                                                     options_.tls_key_file, ": ", ec.message()));
    }
  }
  beast::error_code ec;
  tcp::resolver resolver(impl_->ioc);
  auto results = resolver.resolve(options_.host, std::to_string(options_.port),
                                  tcp::resolver::passive | tcp::resolver::numeric_service, ec);
  if (ec || results.empty()) {
    return absl::UnavailableError(
        absl::StrCat("cannot resolve ", options_.host, ": ", ec.message()));
  }
  const tcp::endpoint endpoint = results.begin()->endpoint();
  impl_->acceptor.emplace(impl_->ioc);
  impl_->acceptor->open(endpoint.protocol(), ec);
  if (!ec) impl_->acceptor->set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) impl_->acceptor->bind(endpoint, ec);
  if (!ec) impl_->acceptor->listen(std::max(16, options_.backlog), ec);
  if (ec) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", options_.host, ":", options_.port, ": ", ec.message()));
  }
  port_ = impl_->acceptor->local_endpoint().port();
  impl_->accept_retry.emplace(impl_->ioc);
  impl_->Accept();
  for (int i = 0; i < threads; ++i) threads_.emplace_back([this] { impl_->ioc.run(); });
  return absl::OkStatus();
}

void HttpTransport::Stop(double grace_seconds) {
  if (!impl_) return;
  impl_->stopping.store(true);
  net::post(impl_->ioc, [this] {
    beast::error_code ignored;
    impl_->acceptor->close(ignored);
    impl_->accept_retry->cancel();
  });
  // Producers answer their own stop (503 / an SSE error event) at their next Poll.
  const auto until = Clock::now() + Seconds(grace_seconds);
  while (Clock::now() < until && stats_->active_producers.load() > 0) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  impl_->ioc.stop();
  for (std::thread& thread : threads_) thread.join();
  threads_.clear();
  impl_.reset();  // destroys the pending handlers, hence the sessions (producers cancelled)
}

}  // namespace moemesh::router
