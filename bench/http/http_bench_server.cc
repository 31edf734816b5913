// The router's HTTP server (router/http_server.h) over a stub AttentionBackend that answers
// every sequence at once with --tokens tokens, from one worker thread: what is measured is the
// HTTP front (parsing, validation, chat template, tokenization, SSE framing), not the model.
//
//   bench_http_server --model ../shared/fixtures/tiny-r1 --port 18080 [--tokens 16]
//                     [--io-threads 2]
// Prints "listening on PORT"; runs until SIGINT/SIGTERM.
#include <signal.h>

#include <condition_variable>
#include <cstdio>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "router/http_server.h"

ABSL_FLAG(std::string, model, "", "model directory (config.json, tokenizer files)");
ABSL_FLAG(int, port, 18080, "HTTP port");
ABSL_FLAG(int, tokens, 16, "tokens each sequence produces (one event each)");
ABSL_FLAG(int, io_threads, 2, "HTTP I/O threads");
ABSL_FLAG(int, max_connections, 8192, "open connections served");
ABSL_FLAG(double, header_timeout_seconds, 10,
          "deadline for a request's headers (the slow-connection case raises it so that its "
          "trickling connections stay open while it measures)");

namespace {

using moemesh::v1::SequenceEvent;

// Answers every sequence immediately: `tokens` events, the last with finish_reason LENGTH.
class InstantBackend : public moemesh::router::AttentionBackend {
 public:
  explicit InstantBackend(int tokens) : tokens_(tokens) {
    worker_ = std::thread([this] { Run(); });
  }
  ~InstantBackend() override {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      quit_ = true;
    }
    cv_.notify_all();
    worker_.join();
  }
  absl::Status Ready() override { return absl::OkStatus(); }
  absl::StatusOr<std::unique_ptr<moemesh::router::SequenceHandle>> AddSequence(
      const moemesh::v1::AddSequenceRequest&, moemesh::router::SequenceObserver observer) override {
    auto state = std::make_shared<State>();
    state->observer = std::move(observer);
    {
      std::lock_guard<std::mutex> lock(mutex_);
      queue_.push_back(state);
    }
    cv_.notify_one();
    return std::unique_ptr<moemesh::router::SequenceHandle>(new Handle(state));
  }

 private:
  struct State {
    std::mutex mutex;
    moemesh::router::SequenceObserver observer;
    bool ended = false;
  };
  class Handle : public moemesh::router::SequenceHandle {
   public:
    explicit Handle(std::shared_ptr<State> state) : state_(std::move(state)) {}
    ~Handle() override {
      std::lock_guard<std::mutex> lock(state_->mutex);
      if (!state_->ended) {
        state_->ended = true;
        state_->observer.on_end(absl::CancelledError("cancelled"));
      }
    }
    void Cancel() override {}

   private:
    std::shared_ptr<State> state_;
  };

  void Run() {
    while (true) {
      std::shared_ptr<State> state;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        cv_.wait(lock, [this] { return quit_ || !queue_.empty(); });
        if (quit_) return;
        state = queue_.front();
        queue_.pop_front();
      }
      std::lock_guard<std::mutex> lock(state->mutex);
      if (state->ended) continue;
      for (int i = 0; i < tokens_; ++i) {
        SequenceEvent event;
        event.add_tokens()->set_token_id(static_cast<uint32_t>(1000 + i % 500));
        event.set_finish_reason(i + 1 == tokens_ ? SequenceEvent::LENGTH
                                                 : SequenceEvent::NOT_FINISHED);
        state->observer.on_event(event);
      }
      state->ended = true;
      state->observer.on_end(absl::OkStatus());
    }
  }

  const int tokens_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<State>> queue_;
  bool quit_ = false;
  std::thread worker_;
};

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  auto model = moemesh::router::LoadModel(absl::GetFlag(FLAGS_model), "tiny-r1", 0);
  if (!model.ok()) {
    std::fprintf(stderr, "bench_http_server: %s\n", std::string(model.status().message()).c_str());
    return 1;
  }
  sigset_t signals;
  sigemptyset(&signals);
  sigaddset(&signals, SIGINT);
  sigaddset(&signals, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &signals, nullptr);
  InstantBackend backend(absl::GetFlag(FLAGS_tokens));
  moemesh::router::HttpServerOptions options;
  options.port = absl::GetFlag(FLAGS_port);
  options.threads = absl::GetFlag(FLAGS_io_threads);
  options.transport.max_connections = absl::GetFlag(FLAGS_max_connections);
  options.transport.header_timeout_seconds = absl::GetFlag(FLAGS_header_timeout_seconds);
  moemesh::router::HttpServer server((*model)->info, &backend, options);
  if (absl::Status status = server.Start(); !status.ok()) {
    std::fprintf(stderr, "bench_http_server: %s\n", std::string(status.message()).c_str());
    return 1;
  }
  std::printf("listening on %d\n", server.port());
  std::fflush(stdout);
  int signal_number = 0;
  sigwait(&signals, &signal_number);
  server.Stop();
  return 0;
}
