#include "router/http_server.h"

#include <dirent.h>
#include <netdb.h>
#include <signal.h>
#include <sys/socket.h>

#include <cerrno>
#include <cstdlib>

#include <chrono>
#include <deque>
#include <map>
#include <exception>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "httplib.h"

namespace moemesh::router {
namespace {

using nlohmann::json;

constexpr char kJson[] = "application/json";

// One backend callback: an event of choice `choice`, or the end of its stream.
struct Item {
  int choice = 0;
  bool end = false;
  moemesh::v1::SequenceEvent event;
  absl::Status status;
};

// Events of all of a request's sequences, in arrival order (filled by backend threads).
class EventQueue {
 public:
  void Push(Item item) {
    absl::MutexLock lock(&mutex_);
    items_.push_back(std::move(item));
  }
  // Next item, waiting up to `timeout`; nullopt when none came.
  std::optional<Item> Pop(absl::Duration timeout) {
    absl::MutexLock lock(&mutex_);
    mutex_.AwaitWithTimeout(
        absl::Condition(+[](std::deque<Item>* items) { return !items->empty(); }, &items_),
        timeout);
    if (items_.empty()) return std::nullopt;
    Item item = std::move(items_.front());
    items_.pop_front();
    return item;
  }

 private:
  absl::Mutex mutex_;
  std::deque<Item> items_;
};

void SetError(httplib::Response& res, const ApiError& error) {
  res.status = error.http_status;
  res.set_content(ErrorBody(error), kJson);
}

uint64_t Micros(absl::Duration d) { return static_cast<uint64_t>(absl::ToInt64Microseconds(d)); }

// The numeric host and port of a socket address (as httplib fills Request::remote_addr).
bool HostAndPort(const sockaddr_storage& addr, socklen_t len, std::string* host, int* port) {
  char buffer[NI_MAXHOST];
  if (getnameinfo(reinterpret_cast<const sockaddr*>(&addr), len, buffer, sizeof(buffer), nullptr,
                  0, NI_NUMERICHOST) != 0) {
    return false;
  }
  *host = buffer;
  if (addr.ss_family == AF_INET) {
    *port = ntohs(reinterpret_cast<const sockaddr_in&>(addr).sin_port);
  } else if (addr.ss_family == AF_INET6) {
    *port = ntohs(reinterpret_cast<const sockaddr_in6&>(addr).sin6_port);
  } else {
    return false;
  }
  return true;
}

// The connection socket of `req`, found among the process's descriptors by its local and remote
// address (cpp-httplib 0.11 does not hand the socket to handlers); -1 when not found. Only
// meaningful on the thread serving `req`, which keeps the socket open meanwhile.
int FindConnectionSocket(const httplib::Request& req) {
  DIR* dir = opendir("/proc/self/fd");
  if (dir == nullptr) return -1;
  const int dir_fd = dirfd(dir);
  int found = -1;
  while (dirent* entry = readdir(dir)) {
    char* end = nullptr;
    const long fd = std::strtol(entry->d_name, &end, 10);
    if (end == entry->d_name || *end != '\0' || fd == dir_fd) continue;
    sockaddr_storage addr{};
    socklen_t len = sizeof(addr);
    std::string host;
    int port = -1;
    if (getsockname(static_cast<int>(fd), reinterpret_cast<sockaddr*>(&addr), &len) != 0 ||
        !HostAndPort(addr, len, &host, &port) ||
        (req.local_port > 0 && port != req.local_port)) {
      continue;
    }
    len = sizeof(addr);
    if (getpeername(static_cast<int>(fd), reinterpret_cast<sockaddr*>(&addr), &len) != 0 ||
        !HostAndPort(addr, len, &host, &port) || port != req.remote_port ||
        host != req.remote_addr) {
      continue;
    }
    found = static_cast<int>(fd);
    break;
  }
  closedir(dir);
  return found;
}

// True when the peer of connected socket `fd` has closed (FIN or reset). Data waiting (a
// pipelined request) is left unread. A client that half-closes after sending counts as gone.
bool PeerClosed(int fd) {
  char byte;
  const ssize_t n = recv(fd, &byte, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n > 0) return false;
  if (n == 0) return true;
  return errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR;
}

}  // namespace

// One completion request in flight. Non-movable (the builder points into `prepared`).
struct HttpServer::Run {
  Run(PreparedRequest p, const ModelInfo& model, std::string id, int64_t created)
      : prepared(std::move(p)), builder(prepared, model, std::move(id), created) {}
  ~Run() {
    handles.clear();  // cancel and join the sequences before the builder goes
    if (!reported) Report(false, 500);  // a handler that threw
  }

  // Tells the observer (once) how the request ended.
  void Report(bool ok, int http_status) {
    if (reported || observer == nullptr) return;
    reported = true;
    RequestOutcome outcome;
    outcome.ok = ok;
    outcome.http_status = ok ? 200 : http_status;
    if (ok) {
      for (size_t i = 0; i < prepared.sequences.size(); ++i) {
        outcome.finish_reasons.push_back(builder.finish_reason(static_cast<int>(i)));
      }
    }
    outcome.prompt_tokens = builder.prompt_tokens();
    outcome.completion_tokens = builder.completion_tokens();
    outcome.e2e_seconds = absl::ToDoubleSeconds(absl::Now() - received);
    observer->OnRequestEnd(outcome);
  }

  void CancelAll(RouterStats& stats) {
    for (size_t i = 0; i < handles.size(); ++i) {
      if (handles[i] && !builder.finished(static_cast<int>(i))) {
        handles[i]->Cancel();
        stats.sequences_cancelled.fetch_add(1, std::memory_order_relaxed);
      }
    }
    cancelled = true;
  }

  // Applies one item; chunks (streaming) go to `chunks`. Returns an error that fails the request.
  std::optional<ApiError> Apply(const Item& item, RouterStats& stats,
                                std::vector<std::string>* chunks) {
    if (item.end) {
      if (builder.finished(item.choice)) return std::nullopt;
      return builder.OnStreamEnd(item.choice, item.status);
    }
    if (!first_token && item.event.tokens_size() > 0) {
      first_token = true;
      stats.ttft_us_sum.fetch_add(Micros(absl::Now() - received), std::memory_order_relaxed);
      stats.ttft_count.fetch_add(1, std::memory_order_relaxed);
      if (observer != nullptr) observer->OnFirstToken(absl::ToDoubleSeconds(absl::Now() - received));
    }
    if (observer != nullptr && item.event.tokens_size() > 0) {
      const absl::Time now = absl::Now();
      auto [last, first_of_choice] = last_token.emplace(item.choice, now);
      if (!first_of_choice) {
        observer->OnInterTokenLatency(
            absl::ToDoubleSeconds(now - last->second) / item.event.tokens_size(),
            item.event.tokens_size());
        last->second = now;
      }
    }
    ResponseBuilder::EventResult result = builder.OnEvent(item.choice, item.event);
    if (result.error) return result.error;
    if (result.cancel_sequence && item.choice < static_cast<int>(handles.size())) {
      handles[item.choice]->Cancel();
      stats.sequences_cancelled.fetch_add(1, std::memory_order_relaxed);
    }
    for (std::string& chunk : result.chunks) chunks->push_back(std::move(chunk));
    return std::nullopt;
  }

  void Finish(RouterStats& stats) {
    stats.prompt_tokens.fetch_add(builder.prompt_tokens(), std::memory_order_relaxed);
    stats.completion_tokens.fetch_add(builder.completion_tokens(), std::memory_order_relaxed);
    stats.request_us_sum.fetch_add(Micros(absl::Now() - received), std::memory_order_relaxed);
  }

  PreparedRequest prepared;
  ResponseBuilder builder;
  std::shared_ptr<EventQueue> queue = std::make_shared<EventQueue>();
  absl::Time received;
  absl::Time deadline;
  absl::Time last_write;
  bool stream_started = false;
  bool done = false;
  bool first_token = false;
  bool cancelled = false;
  HttpServerObserver* observer = nullptr;
  bool reported = false;
  std::map<int, absl::Time> last_token;  // per choice: when its latest tokens came
  std::vector<std::unique_ptr<SequenceHandle>> handles;  // last: destroyed first
};

HttpServer::HttpServer(const ModelInfo& model, AttentionBackend* backend,
                       HttpServerOptions options)
    : model_(model), backend_(backend), options_(std::move(options)) {}

HttpServer::~HttpServer() { Stop(); }

absl::Status HttpServer::Start() {
  // A client that goes away mid-stream must not kill the process with SIGPIPE.
  signal(SIGPIPE, SIG_IGN);
  server_ = std::make_unique<httplib::Server>();
  const int threads = options_.threads;
  server_->new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  server_->set_payload_max_length(options_.max_body_bytes);
  server_->set_keep_alive_max_count(1000);
  Install();
  if (options_.port == 0) {
    port_ = server_->bind_to_any_port(options_.host);
  } else {
    port_ = server_->bind_to_port(options_.host, options_.port) ? options_.port : -1;
  }
  if (port_ <= 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot listen on ", options_.host, ":", options_.port));
  }
  thread_ = std::thread([this] { server_->listen_after_bind(); });
  return absl::OkStatus();
}

void HttpServer::Stop() {
  stopping_.store(true);
  if (server_) server_->stop();
  if (thread_.joinable()) thread_.join();
}

void HttpServer::Install() {
  httplib::Server& s = *server_;

  // Any handler failure becomes a 500 error body; the server never goes down on input.
  auto guard = [](auto handler) {
    return [handler](const httplib::Request& req, httplib::Response& res) {
      try {
        handler(req, res);
      } catch (const std::exception& e) {
        res.content_provider_ = nullptr;
        SetError(res, ApiErrorFromHttpStatus(500, absl::StrCat("internal error: ", e.what())));
      } catch (...) {
        res.content_provider_ = nullptr;
        SetError(res, ApiErrorFromHttpStatus(500, "internal error"));
      }
    };
  };

  s.set_error_handler([](const httplib::Request& req, httplib::Response& res) {
    if (!res.body.empty() || res.content_provider_) return;
    std::string message =
        res.status == 404 ? absl::StrCat("no route for ", req.method, " ", req.path)
        : res.status == 413 ? std::string("the request body is too large")
                            : absl::StrCat("HTTP error ", res.status);
    ApiError error = ApiErrorFromHttpStatus(res.status, message);
    if (res.status == 404) error.type = "invalid_request_error";
    res.set_content(ErrorBody(error), kJson);
  });

  s.Get("/health", guard([](const httplib::Request&, httplib::Response& res) {
    res.set_content(R"({"status":"ok"})", kJson);
  }));

  s.Get("/ready", guard([this](const httplib::Request&, httplib::Response& res) {
    absl::Status ready = backend_->Ready();
    if (ready.ok()) {
      res.set_content(R"({"status":"ready"})", kJson);
      return;
    }
    SetError(res, ApiErrorFromHttpStatus(503, std::string(ready.message())));
  }));

  s.Get("/v1/models", guard([this](const httplib::Request&, httplib::Response& res) {
    res.set_content(DumpJson(ModelsJson(model_)), kJson);
  }));

  s.Get(R"(/v1/models/(.+))", guard([this](const httplib::Request& req, httplib::Response& res) {
    const std::string id = req.matches[1];
    if (id != model_.served_name) return SetError(res, ModelNotFoundError(id, model_));
    res.set_content(DumpJson(ModelJson(model_)), kJson);
  }));

  // vLLM's text endpoints and /version: plain (body) -> (status, JSON) handlers (openai_api.h).
  auto reply = [](httplib::Response& res, const JsonReply& answer) {
    res.status = answer.http_status;
    res.set_content(DumpJson(answer.body), kJson);
  };
  s.Post("/tokenize", guard([this, reply](const httplib::Request& req, httplib::Response& res) {
    reply(res, TokenizeEndpoint(req.body, model_));
  }));
  s.Post("/detokenize", guard([this, reply](const httplib::Request& req, httplib::Response& res) {
    reply(res, DetokenizeEndpoint(req.body, model_));
  }));
  s.Get("/version", guard([reply](const httplib::Request&, httplib::Response& res) {
    reply(res, VersionEndpoint());
  }));

  auto completions = [this](Endpoint endpoint) {
    return [this, endpoint](const httplib::Request& req, httplib::Response& res) {
      stats_.requests.fetch_add(1, std::memory_order_relaxed);
      const absl::Time received = absl::Now();
      HttpServerObserver* const observer = options_.observer;
      if (observer != nullptr) observer->OnRequestStart();
      std::shared_ptr<Run> run;
      auto fail = [&](const ApiError& error) {
        stats_.errors.fetch_add(1, std::memory_order_relaxed);
        SetError(res, error);
        if (run != nullptr) {
          run->Report(false, error.http_status);
        } else if (observer != nullptr) {
          RequestOutcome outcome;
          outcome.http_status = error.http_status;
          outcome.e2e_seconds = absl::ToDoubleSeconds(absl::Now() - received);
          observer->OnRequestEnd(outcome);
        }
      };
      absl::StatusOr<ApiRequest> parsed = ParseRequest(endpoint, req.body, model_);
      if (!parsed.ok()) return fail(ToApiError(parsed.status()));
      const std::string id = NewResponseId(endpoint);
      absl::StatusOr<PreparedRequest> prepared = PrepareRequest(*std::move(parsed), model_, id);
      if (!prepared.ok()) return fail(ToApiError(prepared.status()));
      const int64_t created = absl::ToUnixSeconds(received);
      run = std::make_shared<Run>(*std::move(prepared), model_, id, created);
      run->observer = observer;
      run->received = received;
      run->deadline = received + absl::Seconds(options_.request_timeout_seconds);
      run->last_write = received;

      // Start every choice's sequence before answering, so that a missing node is a 503.
      const auto& sequences = run->prepared.sequences;
      for (size_t i = 0; i < sequences.size(); ++i) {
        std::shared_ptr<EventQueue> queue = run->queue;
        const int choice = static_cast<int>(i);
        SequenceObserver observer;
        observer.on_event = [queue, choice](const moemesh::v1::SequenceEvent& event) {
          queue->Push(Item{choice, false, event, absl::OkStatus()});
        };
        observer.on_end = [queue, choice](const absl::Status& status) {
          queue->Push(Item{choice, true, {}, status});
        };
        absl::StatusOr<std::unique_ptr<SequenceHandle>> handle =
            backend_->AddSequence(sequences[i], std::move(observer));
        if (!handle.ok()) {
          run->CancelAll(stats_);
          ApiError error = ToApiError(handle.status());
          return fail(error);
        }
        run->handles.push_back(*std::move(handle));
        stats_.sequences_started.fetch_add(1, std::memory_order_relaxed);
      }

      if (!run->prepared.api.stream) {
        // No bytes go out until the response is complete, so a client that went away is
        // noticed by watching its socket; then the sequences are cancelled.
        const int client_fd = FindConnectionSocket(req);
        absl::Time next_check = absl::Now() + absl::Milliseconds(200);
        while (!run->builder.all_finished()) {
          std::optional<ApiError> error;
          const absl::Time now = absl::Now();
          if (client_fd >= 0 && now >= next_check) {
            next_check = now + absl::Milliseconds(200);
            if (PeerClosed(client_fd)) {
              stats_.client_disconnects.fetch_add(1, std::memory_order_relaxed);
              run->CancelAll(stats_);
              run->Finish(stats_);
              run->Report(false, 499);
              SetError(res, ApiErrorFromHttpStatus(499, "the client closed the connection"));
              return;
            }
          }
          if (stopping_.load()) {
            error = ApiErrorFromHttpStatus(503, "the router is shutting down");
          } else if (now >= run->deadline) {
            error = ApiErrorFromHttpStatus(
                504, absl::StrCat("the request timed out after ", options_.request_timeout_seconds,
                                  " seconds"));
          } else if (std::optional<Item> item =
                         run->queue->Pop(std::min(absl::Milliseconds(100), run->deadline - now))) {
            std::vector<std::string> unused;
            error = run->Apply(*item, stats_, &unused);
          }
          if (error) {
            run->CancelAll(stats_);
            run->Finish(stats_);
            return fail(*error);
          }
        }
        run->Finish(stats_);
        res.set_content(DumpJson(run->builder.Response()), kJson);
        run->Report(true, 200);
        return;
      }

      stats_.streaming_requests.fetch_add(1, std::memory_order_relaxed);
      res.set_header("Cache-Control", "no-cache");
      res.set_chunked_content_provider(
          "text/event-stream",
          [this, run](size_t /*offset*/, httplib::DataSink& sink) -> bool {
            try {
              auto write_raw = [&](const std::string& text) {
                run->last_write = absl::Now();
                return sink.write(text.data(), text.size());
              };
              auto write = [&](const std::string& payload) {
                return write_raw(absl::StrCat("data: ", payload, "\n\n"));
              };
              auto disconnected = [&] {
                stats_.client_disconnects.fetch_add(1, std::memory_order_relaxed);
                run->CancelAll(stats_);
                run->Finish(stats_);
                run->done = true;
                run->Report(false, 499);
                return false;
              };
              auto end_with_error = [&](const ApiError& error) {
                stats_.errors.fetch_add(1, std::memory_order_relaxed);
                run->CancelAll(stats_);
                run->Finish(stats_);
                run->done = true;
                run->Report(false, error.http_status);
                write(DumpJson(ErrorJson(error)));
                sink.done();
                return true;
              };
              if (run->done) {
                sink.done();
                return true;
              }
              if (!run->stream_started) {
                run->stream_started = true;
                for (const std::string& chunk : run->builder.StartChunks()) {
                  if (!write(chunk)) return disconnected();
                }
                return true;
              }
              const absl::Time now = absl::Now();
              if (stopping_.load()) {
                return end_with_error(ApiErrorFromHttpStatus(503, "the router is shutting down"));
              }
              if (now >= run->deadline) {
                return end_with_error(ApiErrorFromHttpStatus(
                    504, absl::StrCat("the request timed out after ",
                                      options_.request_timeout_seconds, " seconds")));
              }
              std::optional<Item> item =
                  run->queue->Pop(std::min(absl::Milliseconds(100), run->deadline - now));
              if (!item) {
                // An SSE comment now and then, so that a client gone while the sequence waits
                // (admission, long prefill) is noticed by a failing write.
                if (absl::Now() - run->last_write > absl::Seconds(2)) {
                  if (!write_raw(": keep-alive\n\n")) return disconnected();
                }
                return true;
              }
              std::vector<std::string> chunks;
              std::optional<ApiError> error = run->Apply(*item, stats_, &chunks);
              for (const std::string& chunk : chunks) {
                if (!write(chunk)) return disconnected();
              }
              if (error) return end_with_error(*error);
              if (run->builder.all_finished()) {
                for (const std::string& chunk : run->builder.EndChunks()) {
                  if (!write(chunk)) return disconnected();
                }
                if (!write("[DONE]")) return disconnected();
                run->Finish(stats_);
                run->done = true;
                run->Report(true, 200);
                sink.done();
              }
              return true;
            } catch (...) {
              run->CancelAll(stats_);
              run->done = true;
              return false;
            }
          },
          [this, run](bool /*success*/) {
            if (!run->done) {
              stats_.client_disconnects.fetch_add(1, std::memory_order_relaxed);
              run->CancelAll(stats_);
              run->Report(false, 499);
            }
            // The sequences are joined when the last reference to `run` goes.
          });
    };
  };
  if (options_.install_routes) options_.install_routes(s);
  s.Post("/v1/chat/completions", guard(completions(Endpoint::kChatCompletions)));
  s.Post("/v1/completions", guard(completions(Endpoint::kCompletions)));

  // A known path with the wrong method: 405 with an Allow header and an OpenAI error body
  // (httplib would answer 404). Registered last, so the real routes match first.
  auto not_allowed = [](std::string allow) {
    return [allow](const httplib::Request& req, httplib::Response& res) {
      res.set_header("Allow", allow);
      SetError(res, ApiErrorFromHttpStatus(
                        405, absl::StrCat("method ", req.method, " is not allowed for ", req.path,
                                          " (use ", allow, ")")));
      res.status = 405;
    };
  };
  const std::pair<const char*, const char*> known[] = {
      {"/v1/chat/completions", "POST"}, {"/v1/completions", "POST"}, {"/v1/models", "GET"},
      {R"(/v1/models/(.+))", "GET"},    {"/health", "GET"},          {"/ready", "GET"},
      {"/tokenize", "POST"},            {"/detokenize", "POST"},     {"/version", "GET"}};
  for (const auto& [path, allow] : known) {
    const std::string method = allow;
    if (method != "GET") s.Get(path, not_allowed(allow));
    if (method != "POST") s.Post(path, not_allowed(allow));
    s.Put(path, not_allowed(allow));
    s.Patch(path, not_allowed(allow));
    s.Delete(path, not_allowed(allow));
  }
}

}  // namespace moemesh::router
