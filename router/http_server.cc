#include "router/http_server.h"

#include <algorithm>
#include <deque>
#include <exception>
#include <map>
#include <optional>
#include <random>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "core/obs/log.h"

namespace moemesh::router {
namespace {

using nlohmann::json;

constexpr char kJson[] = "application/json";
constexpr char kEventStream[] = "text/event-stream; charset=utf-8";

// One backend callback: an event of choice `choice`, or the end of its stream.
struct Item {
  int choice = 0;
  bool end = false;
  moemesh::v1::SequenceEvent event;
  absl::Status status;
};

// Events of all of a request's sequences, in arrival order (filled by backend threads). Every
// Push calls the wake function (under the queue's lock, so that clearing it waits for a Push
// in progress).
class EventQueue {
 public:
  void Push(Item item) {
    absl::MutexLock lock(&mutex_);
    items_.push_back(std::move(item));
    if (wake_) wake_();
  }
  std::optional<Item> TryPop() {
    absl::MutexLock lock(&mutex_);
    if (items_.empty()) return std::nullopt;
    Item item = std::move(items_.front());
    items_.pop_front();
    return item;
  }
  void SetWake(std::function<void()> wake) {
    absl::MutexLock lock(&mutex_);
    wake_ = std::move(wake);
  }

 private:
  absl::Mutex mutex_;
  std::deque<Item> items_;
  std::function<void()> wake_;
};

HttpResponse ErrorResponse(const ApiError& error) {
  return MakeResponse(error.http_status, ErrorBody(error));
}

uint64_t Micros(absl::Duration d) { return static_cast<uint64_t>(absl::ToInt64Microseconds(d)); }

// A client's X-Request-Id when it is 1-128 characters of [A-Za-z0-9._:-]; else a new one.
std::string RequestId(const HttpRequest& request) {
  if (std::optional<std::string_view> given = request.Header("x-request-id")) {
    bool ok = !given->empty() && given->size() <= 128;
    for (char c : *given) {
      ok = ok && (absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' ||
                  c == ':' || c == '-');
    }
    if (ok) return std::string(*given);
  }
  thread_local std::mt19937_64 rng{std::random_device{}()};
  return absl::StrFormat("%016x%016x", rng(), rng());
}

}  // namespace

// One completion request in flight, as the producer of its HTTP response: Poll (on the
// connection's thread) applies the sequences' events to the ResponseBuilder and writes the
// whole body (non-streaming) or SSE events (streaming). Destroying it cancels and joins the
// sequences.
class HttpServer::Completion : public ResponseProducer {
 public:
  Completion(HttpServer* server, PreparedRequest p, std::string id, absl::Time received,
             std::string request_id)
      : server_(server),
        prepared_(std::move(p)),
        builder_(prepared_, server->model_, std::move(id), absl::ToUnixSeconds(received)),
        received_(received),
        deadline_(received + absl::Seconds(server->options_.request_timeout_seconds)),
        last_write_(received),
        request_id_(std::move(request_id)),
        observer_(server->options_.observer) {
    queue_->SetWake([this] { Wake(); });
  }

  ~Completion() override {
    queue_->SetWake({});
    handles_.clear();  // cancel and join the sequences before the builder goes
    if (!reported_) Report(false, 500);
  }

  // Starts every choice's sequence; an error (e.g. no healthy node: 503) fails the request
  // before any byte is sent.
  std::optional<ApiError> StartSequences() {
    const auto& sequences = prepared_.sequences;
    for (size_t i = 0; i < sequences.size(); ++i) {
      std::shared_ptr<EventQueue> queue = queue_;
      const int choice = static_cast<int>(i);
      SequenceObserver observer;
      observer.on_event = [queue, choice](const moemesh::v1::SequenceEvent& event) {
        queue->Push(Item{choice, false, event, absl::OkStatus()});
      };
      observer.on_end = [queue, choice](const absl::Status& status) {
        queue->Push(Item{choice, true, {}, status});
      };
      absl::StatusOr<std::unique_ptr<SequenceHandle>> handle =
          server_->backend_->AddSequence(sequences[i], std::move(observer));
      if (!handle.ok()) {
        CancelAll();
        ApiError error = ToApiError(handle.status());
        Fail(error);
        return error;
      }
      handles_.push_back(*std::move(handle));
      server_->stats_.sequences_started.fetch_add(1, std::memory_order_relaxed);
    }
    return std::nullopt;
  }

  bool streaming() const { return prepared_.api.stream; }

  void Poll(ResponseSink& sink) override {
    if (done_) return;
    if (streaming()) return PollStream(sink);
    std::optional<ApiError> error;
    while (!error && !builder_.all_finished()) {
      std::optional<Item> item = queue_->TryPop();
      if (!item) break;
      std::vector<std::string> unused;
      error = Apply(*item, &unused);
    }
    if (!error && !builder_.all_finished()) error = StopOrDeadline();
    if (error) {
      CancelAll();
      Finish();
      Fail(*error);
      done_ = true;
      return sink.Respond(ErrorResponse(*error));
    }
    if (builder_.all_finished()) {
      Finish();
      done_ = true;
      Report(true, 200);
      sink.Respond(MakeResponse(200, DumpJson(builder_.Response())));
    }
  }

  void Cancel() override {
    if (done_) return;
    done_ = true;
    server_->stats_.client_disconnects.fetch_add(1, std::memory_order_relaxed);
    CancelAll();
    Finish();
    Report(false, 499);
    obs::LogInfo("request ended: the client closed the connection request_id={}", request_id_);
  }

 private:
  void PollStream(ResponseSink& sink) {
    auto write = [&](const std::string& payload) {
      sink.Write(absl::StrCat("data: ", payload, "\n\n"));
      last_write_ = absl::Now();
    };
    if (!stream_started_) {
      stream_started_ = true;
      server_->stats_.streaming_requests.fetch_add(1, std::memory_order_relaxed);
      sink.StartStream(200, kEventStream, {{"Cache-Control", "no-cache"}});
      for (const std::string& chunk : builder_.StartChunks()) write(chunk);
    }
    std::optional<ApiError> error;
    while (!error && !builder_.all_finished()) {
      std::optional<Item> item = queue_->TryPop();
      if (!item) break;
      std::vector<std::string> chunks;
      error = Apply(*item, &chunks);
      for (const std::string& chunk : chunks) write(chunk);
    }
    if (!error && !builder_.all_finished()) error = StopOrDeadline();
    if (error) {
      server_->stats_.errors.fetch_add(1, std::memory_order_relaxed);
      CancelAll();
      Finish();
      done_ = true;
      Report(false, error->http_status);
      LogError(*error);
      write(DumpJson(ErrorJson(*error)));
      return sink.End();
    }
    if (builder_.all_finished()) {
      for (const std::string& chunk : builder_.EndChunks()) write(chunk);
      write("[DONE]");
      Finish();
      done_ = true;
      Report(true, 200);
      return sink.End();
    }
    // An SSE comment now and then, so that a client gone while the sequence waits (admission,
    // long prefill) is noticed by a failing write.
    if (absl::Now() - last_write_ > absl::Seconds(2)) {
      sink.Write(": keep-alive\n\n");
      last_write_ = absl::Now();
    }
  }

  std::optional<ApiError> StopOrDeadline() {
    if (server_->stopping_.load()) {
      return ApiErrorFromHttpStatus(503, "the router is shutting down");
    }
    if (absl::Now() >= deadline_) {
      return ApiErrorFromHttpStatus(
          504, absl::StrCat("the request timed out after ",
                            server_->options_.request_timeout_seconds, " seconds"));
    }
    return std::nullopt;
  }

  // Tells the observer (once) how the request ended.
  void Report(bool ok, int http_status) {
    if (reported_) return;
    reported_ = true;
    if (observer_ == nullptr) return;
    RequestOutcome outcome;
    outcome.ok = ok;
    outcome.http_status = ok ? 200 : http_status;
    if (ok) {
      for (size_t i = 0; i < prepared_.sequences.size(); ++i) {
        outcome.finish_reasons.push_back(builder_.finish_reason(static_cast<int>(i)));
      }
    }
    outcome.prompt_tokens = builder_.prompt_tokens();
    outcome.completion_tokens = builder_.completion_tokens();
    outcome.e2e_seconds = absl::ToDoubleSeconds(absl::Now() - received_);
    observer_->OnRequestEnd(outcome);
  }

  // A non-streaming failure: counted and reported (the caller answers it).
  void Fail(const ApiError& error) {
    server_->stats_.errors.fetch_add(1, std::memory_order_relaxed);
    Report(false, error.http_status);
    LogError(error);
  }

  void LogError(const ApiError& error) {
    obs::LogWarn("request failed request_id={} status={} type={} error=\"{}\"", request_id_,
                 error.http_status, error.type, error.message);
  }

  void CancelAll() {
    for (size_t i = 0; i < handles_.size(); ++i) {
      if (handles_[i] && !builder_.finished(static_cast<int>(i))) {
        handles_[i]->Cancel();
        server_->stats_.sequences_cancelled.fetch_add(1, std::memory_order_relaxed);
      }
    }
  }

  // Applies one item; chunks (streaming) go to `chunks`. Returns an error that fails the request.
  std::optional<ApiError> Apply(const Item& item, std::vector<std::string>* chunks) {
    RouterStats& stats = server_->stats_;
    if (item.end) {
      if (builder_.finished(item.choice)) return std::nullopt;
      return builder_.OnStreamEnd(item.choice, item.status);
    }
    if (!first_token_ && item.event.tokens_size() > 0) {
      first_token_ = true;
      stats.ttft_us_sum.fetch_add(Micros(absl::Now() - received_), std::memory_order_relaxed);
      stats.ttft_count.fetch_add(1, std::memory_order_relaxed);
      if (observer_ != nullptr) {
        observer_->OnFirstToken(absl::ToDoubleSeconds(absl::Now() - received_));
      }
    }
    if (observer_ != nullptr && item.event.tokens_size() > 0) {
      const absl::Time now = absl::Now();
      auto [last, first_of_choice] = last_token_.emplace(item.choice, now);
      if (!first_of_choice) {
        observer_->OnInterTokenLatency(
            absl::ToDoubleSeconds(now - last->second) / item.event.tokens_size(),
            item.event.tokens_size());
        last->second = now;
      }
    }
    ResponseBuilder::EventResult result = builder_.OnEvent(item.choice, item.event);
    if (result.error) return result.error;
    if (result.cancel_sequence && item.choice < static_cast<int>(handles_.size())) {
      handles_[item.choice]->Cancel();
      stats.sequences_cancelled.fetch_add(1, std::memory_order_relaxed);
    }
    for (std::string& chunk : result.chunks) chunks->push_back(std::move(chunk));
    return std::nullopt;
  }

  void Finish() {
    if (finished_) return;
    finished_ = true;
    RouterStats& stats = server_->stats_;
    stats.prompt_tokens.fetch_add(builder_.prompt_tokens(), std::memory_order_relaxed);
    stats.completion_tokens.fetch_add(builder_.completion_tokens(), std::memory_order_relaxed);
    stats.request_us_sum.fetch_add(Micros(absl::Now() - received_), std::memory_order_relaxed);
  }

  HttpServer* server_;
  PreparedRequest prepared_;
  ResponseBuilder builder_;
  std::shared_ptr<EventQueue> queue_ = std::make_shared<EventQueue>();
  absl::Time received_;
  absl::Time deadline_;
  absl::Time last_write_;
  std::string request_id_;
  HttpServerObserver* observer_;
  bool stream_started_ = false;
  bool done_ = false;
  bool first_token_ = false;
  bool finished_ = false;
  bool reported_ = false;
  std::map<int, absl::Time> last_token_;  // per choice: when its latest tokens came
  std::vector<std::unique_ptr<SequenceHandle>> handles_;  // last: destroyed first
};

HttpServer::HttpServer(const ModelInfo& model, AttentionBackend* backend,
                       HttpServerOptions options)
    : model_(model), backend_(backend), options_(std::move(options)) {}

HttpServer::~HttpServer() { Stop(); }

absl::Status HttpServer::Start() {
  Install();
  HttpTransportOptions transport = options_.transport;
  transport.host = options_.host;
  transport.port = options_.port;
  transport.io_threads = options_.threads;
  transport.max_body_bytes = options_.max_body_bytes;
  transport.error_response = [](int status, std::string message) {
    ApiError error = ApiErrorFromHttpStatus(status, std::move(message));
    if (status >= 400 && status < 500) error.type = "invalid_request_error";
    return ErrorResponse(error);
  };
  transport_ = std::make_unique<HttpTransport>(
      std::move(transport), [this](HttpRequest& request) { return Handle(request); });
  if (absl::Status status = transport_->Start(); !status.ok()) {
    transport_.reset();
    return status;
  }
  port_ = transport_->port();
  return absl::OkStatus();
}

void HttpServer::Stop() {
  stopping_.store(true);
  if (transport_) transport_->Stop();
}

HttpResponse HttpServer::Handle(HttpRequest& request) {
  request.request_id = RequestId(request);
  HttpResponse response;
  if (std::optional<ApiError> denied = CheckApiAuth(options_.auth, request)) {
    obs::LogWarn("request refused request_id={} status={} method={} path={} remote={} "
                 "error=\"{}\"",
                 request.request_id, denied->http_status, request.method, request.path,
                 request.remote, denied->message);
    response = ErrorResponse(*denied);
    if (denied->http_status == 401) response.SetHeader("WWW-Authenticate", "Bearer");
  } else {
    const HttpRoute* match = nullptr;
    std::string allow;
    for (const HttpRoute& route : routes_) {
      const bool path_matches =
          route.prefix ? request.path.size() > route.path.size() &&
                             request.path.compare(0, route.path.size(), route.path) == 0
                       : request.path == route.path;
      if (!path_matches) continue;
      if (route.method == request.method) {
        match = &route;
        break;
      }
      if (allow.find(route.method) == std::string::npos) {
        absl::StrAppend(&allow, allow.empty() ? "" : ", ", route.method);
      }
    }
    if (match != nullptr) {
      if (match->prefix) request.path_suffix = request.path.substr(match->path.size());
      try {
        response = match->handler(request);
      } catch (const std::exception& e) {
        response = ErrorResponse(
            ApiErrorFromHttpStatus(500, absl::StrCat("internal error: ", e.what())));
      }
    } else if (!allow.empty()) {
      response = ErrorResponse(ApiErrorFromHttpStatus(
          405, absl::StrCat("method ", request.method, " is not allowed for ", request.path,
                            " (use ", allow, ")")));
      response.status = 405;
      response.SetHeader("Allow", allow);
    } else {
      ApiError error = ApiErrorFromHttpStatus(
          404, absl::StrCat("no route for ", request.method, " ", request.path));
      error.type = "invalid_request_error";
      response = ErrorResponse(error);
    }
  }
  response.SetHeader("X-Request-Id", request.request_id);
  return response;
}

void HttpServer::Install() {
  routes_.clear();
  routes_.push_back({"GET", "/health", [](const HttpRequest&) {
                       return MakeResponse(200, R"({"status":"ok"})");
                     }});
  routes_.push_back({"GET", "/ready", [this](const HttpRequest&) {
                       absl::Status ready = backend_->Ready();
                       if (ready.ok()) return MakeResponse(200, R"({"status":"ready"})");
                       return ErrorResponse(
                           ApiErrorFromHttpStatus(503, std::string(ready.message())));
                     }});
  routes_.push_back({"GET", "/v1/models", [this](const HttpRequest&) {
                       return MakeResponse(200, DumpJson(ModelsJson(model_)));
                     }});
  routes_.push_back({"GET", "/v1/models/",
                     [this](const HttpRequest& request) {
                       if (request.path_suffix != model_.served_name) {
                         return ErrorResponse(ModelNotFoundError(request.path_suffix, model_));
                       }
                       return MakeResponse(200, DumpJson(ModelJson(model_)));
                     },
                     /*prefix=*/true});
  routes_.push_back({"POST", "/v1/chat/completions", [this](const HttpRequest& request) {
                       return Completions(Endpoint::kChatCompletions, request);
                     }});
  routes_.push_back({"POST", "/v1/completions", [this](const HttpRequest& request) {
                       return Completions(Endpoint::kCompletions, request);
                     }});
  // vLLM's text endpoints and /version: plain (body) -> (status, JSON) handlers (openai_api.h).
  auto reply = [](const JsonReply& answer) {
    return MakeResponse(answer.http_status, DumpJson(answer.body));
  };
  routes_.push_back({"POST", "/tokenize", [this, reply](const HttpRequest& request) {
                       return reply(TokenizeEndpoint(request.body, model_));
                     }});
  routes_.push_back({"POST", "/detokenize", [this, reply](const HttpRequest& request) {
                       return reply(DetokenizeEndpoint(request.body, model_));
                     }});
  routes_.push_back({"GET", "/version", [reply](const HttpRequest&) {
                       return reply(VersionEndpoint());
                     }});
  for (const HttpRoute& route : options_.routes) routes_.push_back(route);
}

HttpResponse HttpServer::Completions(Endpoint endpoint, const HttpRequest& request) {
  stats_.requests.fetch_add(1, std::memory_order_relaxed);
  const absl::Time received = absl::Now();
  HttpServerObserver* const observer = options_.observer;
  if (observer != nullptr) observer->OnRequestStart();
  auto fail = [&](const absl::Status& status) {
    const ApiError error = ToApiError(status);
    stats_.errors.fetch_add(1, std::memory_order_relaxed);
    if (observer != nullptr) {
      RequestOutcome outcome;
      outcome.http_status = error.http_status;
      outcome.e2e_seconds = absl::ToDoubleSeconds(absl::Now() - received);
      observer->OnRequestEnd(outcome);
    }
    obs::LogInfo("request refused request_id={} status={} param={} error=\"{}\"",
                 request.request_id, error.http_status, error.param, error.message);
    return ErrorResponse(error);
  };
  absl::StatusOr<ApiRequest> parsed = ParseRequest(endpoint, request.body, model_);
  if (!parsed.ok()) return fail(parsed.status());
  const std::string id = NewResponseId(endpoint);
  absl::StatusOr<PreparedRequest> prepared = PrepareRequest(*std::move(parsed), model_, id);
  if (!prepared.ok()) return fail(prepared.status());
  auto completion = std::make_shared<Completion>(this, *std::move(prepared), id, received,
                                                 request.request_id);
  if (std::optional<ApiError> error = completion->StartSequences()) {
    return ErrorResponse(*error);
  }
  HttpResponse response;
  response.producer = std::move(completion);
  return response;
}

}  // namespace moemesh::router
