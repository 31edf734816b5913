// Stub AttentionBackends for the router's HTTP tests (no model): FakeBackend plays a script of
// SequenceEvents per sequence on its own thread; GatedBackend serves many sequences from one
// thread and holds them all until released (for tests of many concurrent streams).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <list>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "router/attention_backend.h"
#include "tests/unit/router/router_fixture.h"

namespace moemesh::router {

using Event = moemesh::v1::SequenceEvent;

inline std::vector<text::TokenId> Ids(const std::string& text) {
  return Model().tokenizer->Encode(text);
}

inline Event Tokens(const std::vector<text::TokenId>& ids,
                    Event::FinishReason finish = Event::NOT_FINISHED) {
  Event event;
  for (text::TokenId id : ids) event.add_tokens()->set_token_id(static_cast<uint32_t>(id));
  event.set_finish_reason(finish);
  return event;
}



// Emits `script` (one event per `delay`) for every sequence; then, when `hang`, waits for Cancel.
class FakeBackend : public AttentionBackend {
 public:
  std::atomic<bool> available{true};
  std::atomic<bool> ready{false};
  std::vector<Event> script;
  std::chrono::milliseconds delay{0};
  bool hang = false;
  std::atomic<int> started{0};
  std::atomic<int> cancelled{0};
  std::atomic<int> ended{0};
  std::mutex mutex;
  std::vector<moemesh::v1::AddSequenceRequest> requests;

  absl::Status Ready() override {
    return ready ? absl::OkStatus() : absl::UnavailableError("0 of 2 expert nodes registered");
  }

  absl::StatusOr<std::unique_ptr<SequenceHandle>> AddSequence(
      const moemesh::v1::AddSequenceRequest& request, SequenceObserver observer) override {
    if (!available) return absl::UnavailableError("no healthy attention node");
    {
      std::lock_guard<std::mutex> lock(mutex);
      requests.push_back(request);
    }
    ++started;
    return std::unique_ptr<SequenceHandle>(new Sequence(this, std::move(observer)));
  }

 private:
  class Sequence : public SequenceHandle {
   public:
    Sequence(FakeBackend* backend, SequenceObserver observer) : backend_(backend) {
      thread_ = std::thread([this, observer = std::move(observer)] {
        for (const Event& event : backend_->script) {
          for (auto waited = std::chrono::milliseconds(0); waited < backend_->delay && !cancel_;
               waited += std::chrono::milliseconds(2)) {
            std::this_thread::sleep_for(std::chrono::milliseconds(2));
          }
          if (cancel_) break;
          observer.on_event(event);
        }
        while (backend_->hang && !cancel_) std::this_thread::sleep_for(std::chrono::milliseconds(2));
        ++backend_->ended;
        observer.on_end(cancel_ ? absl::CancelledError("cancelled") : absl::OkStatus());
      });
    }
    ~Sequence() override {
      Cancel();
      thread_.join();
    }
    void Cancel() override {
      if (!cancel_.exchange(true)) ++backend_->cancelled;
    }

   private:
    FakeBackend* backend_;
    std::atomic<bool> cancel_{false};
    std::thread thread_;
  };
};


// Every sequence waits until Release(); then one thread emits `script` to every live sequence,
// one event per sequence per round (every `period`). Handles end their sequence (on_end
// Cancelled) when destroyed early.
class GatedBackend : public AttentionBackend {
 public:
  explicit GatedBackend(std::vector<Event> script,
                        std::chrono::milliseconds period = std::chrono::milliseconds(5))
      : script_(std::move(script)), period_(period) {
    thread_ = std::thread([this] { Run(); });
  }
  ~GatedBackend() override {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      quit_ = true;
    }
    thread_.join();
  }
  absl::Status Ready() override { return absl::OkStatus(); }
  absl::StatusOr<std::unique_ptr<SequenceHandle>> AddSequence(
      const moemesh::v1::AddSequenceRequest&, SequenceObserver observer) override {
    auto state = std::make_shared<State>();
    state->observer = std::move(observer);
    std::lock_guard<std::mutex> lock(mutex_);
    live_.push_back(state);
    ++started_;
    return std::unique_ptr<SequenceHandle>(new Handle(this, state));
  }
  void Release() { released_ = true; }
  int started() {
    std::lock_guard<std::mutex> lock(mutex_);
    return started_;
  }
  int completed() {
    std::lock_guard<std::mutex> lock(mutex_);
    return completed_;
  }

 private:
  struct State {
    SequenceObserver observer;
    size_t next = 0;
    bool ended = false;
  };
  class Handle : public SequenceHandle {
   public:
    Handle(GatedBackend* backend, std::shared_ptr<State> state)
        : backend_(backend), state_(std::move(state)) {}
    ~Handle() override {
      std::lock_guard<std::mutex> lock(backend_->mutex_);
      if (!state_->ended) {
        state_->ended = true;
        state_->observer.on_end(absl::CancelledError("cancelled"));
      }
    }
    void Cancel() override {}

   private:
    GatedBackend* backend_;
    std::shared_ptr<State> state_;
  };

  void Run() {
    while (true) {
      std::this_thread::sleep_for(period_);
      std::lock_guard<std::mutex> lock(mutex_);
      if (quit_) return;
      if (!released_) continue;
      for (auto it = live_.begin(); it != live_.end();) {
        State& state = **it;
        if (!state.ended && state.next < script_.size()) {
          state.observer.on_event(script_[state.next++]);
        }
        if (!state.ended && state.next == script_.size()) {
          state.ended = true;
          ++completed_;
          state.observer.on_end(absl::OkStatus());
        }
        if (state.ended) {
          it = live_.erase(it);
        } else {
          ++it;
        }
      }
    }
  }

  std::vector<Event> script_;
  std::chrono::milliseconds period_;
  std::mutex mutex_;
  std::list<std::shared_ptr<State>> live_;
  int started_ = 0;
  int completed_ = 0;
  bool quit_ = false;
  std::atomic<bool> released_{false};
  std::thread thread_;
};

}  // namespace moemesh::router
