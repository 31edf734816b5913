// GrpcAttentionBackend moving a sequence to another attention node, against in-process fake
// nodes whose tokens are a pure function of the position (token id = 1000 + position), like a
// deterministic model: when the first node fails mid-stream (UNAVAILABLE), hands the sequence
// back (HANDED_OVER) or stops answering while the control plane reports it lost, the second
// node gets prompt + streamed tokens with the rest of the budget and the same seed, and the
// observer sees one sequence without a repeated or missing token. Errors of the sequence itself
// are not retried; with no node left the sequence ends with Unavailable after the timeout.
#include <atomic>
#include <mutex>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"
#include "router/attention_client.h"
#include "router/http_server.h"
#include "httplib.h"
#include "tests/unit/router/router_fixture.h"

namespace moemesh::router {
namespace {

using moemesh::v1::SequenceEvent;

enum class Failure { kNone, kUnavailable, kHandOver, kHang, kInvalidArgument };

// Emits tokens 1000 + position; after `fail_after` tokens fails as `failure`.
class ScriptedNode : public moemesh::v1::AttentionService::Service {
 public:
  ScriptedNode(Failure failure, int fail_after) : failure_(failure), fail_after_(fail_after) {
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(this);
    server_ = builder.BuildAndStart();
  }
  ~ScriptedNode() override {
    release_.store(true);
    server_->Shutdown();
  }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  std::vector<moemesh::v1::AddSequenceRequest> requests() {
    std::lock_guard<std::mutex> lock(mutex_);
    return requests_;
  }
  std::atomic<bool> saw_cancel{false};
  // Calls after the first fail at once, as a node that died would.
  std::atomic<bool> refuse_after_first_{false};
  // When set: the token at position p is script[p - script_start] (instead of 1000 + p), with
  // logprob -0.01 * (p - script_start + 1); set before the first call.
  std::vector<uint32_t> script;
  uint32_t script_start = 0;

  grpc::Status AddSequence(grpc::ServerContext* context,
                           const moemesh::v1::AddSequenceRequest* request,
                           grpc::ServerWriter<SequenceEvent>* writer) override {
    bool first_call;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      requests_.push_back(*request);
      first_call = requests_.size() == 1;
    }
    if (!first_call && refuse_after_first_) {
      return grpc::Status(grpc::StatusCode::UNAVAILABLE, "connection refused");
    }
    if (failure_ == Failure::kInvalidArgument) {
      return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "bad sampling");
    }
    const uint32_t prompt = static_cast<uint32_t>(request->prompt_token_ids_size());
    for (uint32_t i = 0; i < request->max_new_tokens(); ++i) {
      if (static_cast<int>(i) == fail_after_) {
        if (failure_ == Failure::kUnavailable) {
          return grpc::Status(grpc::StatusCode::UNAVAILABLE, "connection reset");
        }
        if (failure_ == Failure::kHandOver) {
          SequenceEvent handed;
          handed.set_finish_reason(SequenceEvent::HANDED_OVER);
          writer->Write(handed);
          return grpc::Status::OK;
        }
        if (failure_ == Failure::kHang) {
          while (!context->IsCancelled() && !release_.load()) {
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
          }
          saw_cancel = context->IsCancelled();
          return grpc::Status::CANCELLED;
        }
      }
      SequenceEvent event;
      moemesh::v1::GeneratedToken* token = event.add_tokens();
      if (script.empty()) {
        token->set_token_id(1000 + prompt + i);
      } else {
        const uint32_t index = prompt + i - script_start;
        token->set_token_id(script.at(index));
        token->set_logprob(-0.01f * static_cast<float>(index + 1));
      }
      const bool last = i + 1 == request->max_new_tokens();
      if (last) {
        event.set_finish_reason(SequenceEvent::LENGTH);
        event.set_prompt_tokens(prompt);
        event.set_completion_tokens(i + 1);
      }
      if (!writer->Write(event)) return grpc::Status::CANCELLED;
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }
    return grpc::Status::OK;
  }

 private:
  Failure failure_;
  int fail_after_;
  int port_ = 0;
  std::unique_ptr<grpc::Server> server_;
  std::mutex mutex_;
  std::vector<moemesh::v1::AddSequenceRequest> requests_;
  std::atomic<bool> release_{false};
};

struct Collected {
  std::mutex mutex;
  std::vector<SequenceEvent> events;
  absl::Status end;
  absl::Notification done;
  std::vector<uint32_t> Tokens() {
    std::lock_guard<std::mutex> lock(mutex);
    std::vector<uint32_t> tokens;
    for (const SequenceEvent& event : events) {
      for (const auto& token : event.tokens()) tokens.push_back(token.token_id());
    }
    return tokens;
  }
};

SequenceObserver Observer(Collected* c) {
  SequenceObserver observer;
  observer.on_event = [c](const SequenceEvent& e) {
    std::lock_guard<std::mutex> lock(c->mutex);
    c->events.push_back(e);
  };
  observer.on_end = [c](const absl::Status& s) {
    c->end = s;
    c->done.Notify();
  };
  return observer;
}

moemesh::v1::AddSequenceRequest Request(uint32_t max_new_tokens, bool seeded = true) {
  moemesh::v1::AddSequenceRequest request;
  request.set_sequence_id("cmpl-x-0");
  for (uint32_t id : {11u, 12u, 13u, 14u}) request.add_prompt_token_ids(id);
  request.set_max_new_tokens(max_new_tokens);
  request.mutable_sampling()->set_temperature(1.0);
  if (seeded) {
    request.mutable_sampling()->set_has_seed(true);
    request.mutable_sampling()->set_seed(7);
  }
  return request;
}

// Picks the first of `nodes` not avoided; records the reasons of resubmissions.
struct Cluster {
  std::vector<std::string> nodes;
  std::vector<std::string> failed;  // reported by failed_nodes
  std::mutex mutex;
  std::vector<std::string> reasons;
  std::vector<int64_t> recomputed;
  std::atomic<int> exhausted{0};

  GrpcAttentionBackendOptions Options() {
    GrpcAttentionBackendOptions options;
    options.pick_node = [this](uint64_t, const std::vector<std::string>& avoid)
        -> absl::StatusOr<std::string> {
      for (const std::string& node : nodes) {
        if (std::find(avoid.begin(), avoid.end(), node) == avoid.end()) return node;
      }
      return absl::UnavailableError("no healthy attention node");
    };
    options.failed_nodes = [this] {
      std::lock_guard<std::mutex> lock(mutex);
      return failed;
    };
    options.health_poll_interval = absl::Milliseconds(20);
    options.failover_timeout = absl::Seconds(1);
    options.on_resubmit = [this](const std::string& reason, int64_t tokens) {
      std::lock_guard<std::mutex> lock(mutex);
      reasons.push_back(reason);
      recomputed.push_back(tokens);
    };
    options.on_failover_exhausted = [this] { ++exhausted; };
    return options;
  }
};

std::vector<uint32_t> Expected(uint32_t prompt, uint32_t count) {
  std::vector<uint32_t> tokens;
  for (uint32_t i = 0; i < count; ++i) tokens.push_back(1000 + prompt + i);
  return tokens;
}

void ExpectContinuedOnSecond(Failure failure, const std::string& reason, bool report_failed) {
  ScriptedNode first(failure, /*fail_after=*/3);
  ScriptedNode second(Failure::kNone, -1);
  Cluster cluster;
  cluster.nodes = {first.address(), second.address()};
  GrpcAttentionBackend backend(cluster.Options());
  Collected c;
  auto handle = backend.AddSequence(Request(8), Observer(&c));
  ASSERT_TRUE(handle.ok()) << handle.status();
  if (report_failed) {
    for (int i = 0; i < 1000 && first.requests().empty(); ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    for (int i = 0; i < 1000 && c.Tokens().size() < 3; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    std::lock_guard<std::mutex> lock(cluster.mutex);
    cluster.failed = {first.address()};
  }
  ASSERT_TRUE(c.done.WaitForNotificationWithTimeout(absl::Seconds(20)));
  EXPECT_TRUE(c.end.ok()) << c.end;
  // One sequence: positions 4..11, none twice, none missing, one finish at the end.
  EXPECT_EQ(c.Tokens(), Expected(4, 8));
  ASSERT_FALSE(c.events.empty());
  const SequenceEvent& last = c.events.back();
  EXPECT_EQ(last.finish_reason(), SequenceEvent::LENGTH);
  EXPECT_EQ(last.prompt_tokens(), 4u);
  EXPECT_EQ(last.completion_tokens(), 8u);
  for (size_t i = 0; i + 1 < c.events.size(); ++i) {
    EXPECT_EQ(c.events[i].finish_reason(), SequenceEvent::NOT_FINISHED) << i;
  }
  // The second node got prompt + the 3 streamed tokens, 5 to go, same seed.
  const auto resubmitted = second.requests();
  ASSERT_EQ(resubmitted.size(), 1u);
  EXPECT_EQ(resubmitted[0].sequence_id(), "cmpl-x-0/replay-1");
  std::vector<uint32_t> expected_prompt = {11, 12, 13, 14, 1004, 1005, 1006};
  EXPECT_EQ(std::vector<uint32_t>(resubmitted[0].prompt_token_ids().begin(),
                                  resubmitted[0].prompt_token_ids().end()),
            expected_prompt);
  EXPECT_EQ(resubmitted[0].max_new_tokens(), 5u);
  EXPECT_TRUE(resubmitted[0].sampling().has_seed());
  EXPECT_EQ(resubmitted[0].sampling().seed(), 7u);
  std::lock_guard<std::mutex> lock(cluster.mutex);
  EXPECT_EQ(cluster.reasons, std::vector<std::string>{reason});
  EXPECT_EQ(cluster.recomputed, std::vector<int64_t>{3});
}

TEST(AttentionFailoverTest, NodeFailingMidStreamContinuesOnAnother) {
  ExpectContinuedOnSecond(Failure::kUnavailable, "node_failed", false);
}

TEST(AttentionFailoverTest, HandedBackSequenceContinuesOnAnother) {
  ExpectContinuedOnSecond(Failure::kHandOver, "node_drained", false);
}

TEST(AttentionFailoverTest, HungNodeReportedLostContinuesOnAnother) {
  ExpectContinuedOnSecond(Failure::kHang, "node_unhealthy", true);
}

TEST(AttentionFailoverTest, RouterChoosesASeedKeptAcrossResubmissions) {
  ScriptedNode first(Failure::kUnavailable, 2);
  ScriptedNode second(Failure::kNone, -1);
  Cluster cluster;
  cluster.nodes = {first.address(), second.address()};
  GrpcAttentionBackend backend(cluster.Options());
  Collected c;
  auto handle = backend.AddSequence(Request(5, /*seeded=*/false), Observer(&c));
  ASSERT_TRUE(handle.ok());
  ASSERT_TRUE(c.done.WaitForNotificationWithTimeout(absl::Seconds(20)));
  EXPECT_TRUE(c.end.ok()) << c.end;
  ASSERT_EQ(first.requests().size(), 1u);
  ASSERT_EQ(second.requests().size(), 1u);
  EXPECT_TRUE(first.requests()[0].sampling().has_seed());
  EXPECT_EQ(second.requests()[0].sampling().seed(), first.requests()[0].sampling().seed());
  EXPECT_EQ(c.Tokens(), Expected(4, 5));
}

TEST(AttentionFailoverTest, SequenceErrorsAreNotRetried) {
  ScriptedNode first(Failure::kInvalidArgument, 0);
  ScriptedNode second(Failure::kNone, -1);
  Cluster cluster;
  cluster.nodes = {first.address(), second.address()};
  GrpcAttentionBackend backend(cluster.Options());
  Collected c;
  auto handle = backend.AddSequence(Request(5), Observer(&c));
  ASSERT_TRUE(handle.ok());
  ASSERT_TRUE(c.done.WaitForNotificationWithTimeout(absl::Seconds(20)));
  EXPECT_EQ(c.end.code(), absl::StatusCode::kInvalidArgument) << c.end;
  EXPECT_TRUE(second.requests().empty());
  std::lock_guard<std::mutex> lock(cluster.mutex);
  EXPECT_TRUE(cluster.reasons.empty());
}

TEST(AttentionFailoverTest, NoNodeLeftFailsWithUnavailableAfterTheTimeout) {
  ScriptedNode only(Failure::kUnavailable, 2);
  only.refuse_after_first_ = true;
  Cluster cluster;
  cluster.nodes = {only.address()};
  GrpcAttentionBackend backend(cluster.Options());
  Collected c;
  auto handle = backend.AddSequence(Request(6), Observer(&c));
  ASSERT_TRUE(handle.ok());
  ASSERT_TRUE(c.done.WaitForNotificationWithTimeout(absl::Seconds(20)));
  EXPECT_EQ(c.end.code(), absl::StatusCode::kUnavailable) << c.end;
  EXPECT_NE(c.end.message().find(only.address()), absl::string_view::npos) << c.end;
  EXPECT_NE(c.end.message().find("no other one continued it"), absl::string_view::npos) << c.end;
  // The two tokens streamed before the failure were delivered once; nothing else.
  EXPECT_EQ(c.Tokens(), Expected(4, 2));
  // The only node is tried again (it might be back), each time from the 2 delivered tokens,
  // with a growing pause between tries (about 20 in the second before giving up, not spinning).
  const auto requests = only.requests();
  ASSERT_GE(requests.size(), 2u);
  EXPECT_LT(requests.size(), 100u);
  for (size_t i = 1; i < requests.size(); ++i) {
    EXPECT_EQ(requests[i].prompt_token_ids_size(), 6) << i;
    EXPECT_EQ(requests[i].max_new_tokens(), 4u) << i;
  }
  EXPECT_EQ(cluster.exhausted.load(), 1);
}

TEST(AttentionFailoverTest, NodeGoneFromTheRegistryFailsNamingItAndWhyNoneIsLeft) {
  ScriptedNode only(Failure::kUnavailable, 2);
  Cluster cluster;
  cluster.nodes = {only.address()};
  GrpcAttentionBackendOptions options = cluster.Options();
  // After its first pick the control plane knows no attention node any more.
  auto picks = std::make_shared<std::atomic<int>>(0);
  options.pick_node = [address = only.address(), picks](
                          uint64_t, const std::vector<std::string>&) -> absl::StatusOr<std::string> {
    if ((*picks)++ == 0) return address;
    return absl::UnavailableError("no healthy attention node");
  };
  GrpcAttentionBackend backend(std::move(options));
  Collected c;
  auto handle = backend.AddSequence(Request(6), Observer(&c));
  ASSERT_TRUE(handle.ok());
  ASSERT_TRUE(c.done.WaitForNotificationWithTimeout(absl::Seconds(20)));
  EXPECT_EQ(c.end.code(), absl::StatusCode::kUnavailable) << c.end;
  EXPECT_NE(c.end.message().find(only.address()), absl::string_view::npos) << c.end;
  EXPECT_NE(c.end.message().find("no healthy attention node"), absl::string_view::npos) << c.end;
  EXPECT_EQ(only.requests().size(), 1u);
  EXPECT_EQ(c.Tokens(), Expected(4, 2));
}

TEST(AttentionFailoverTest, CancelDuringFailoverEndsCancelled) {
  ScriptedNode only(Failure::kUnavailable, 1);
  Cluster cluster;
  cluster.nodes = {only.address()};
  GrpcAttentionBackendOptions options = cluster.Options();
  options.failover_timeout = absl::Seconds(60);
  GrpcAttentionBackend backend(std::move(options));
  Collected c;
  auto handle = backend.AddSequence(Request(6), Observer(&c));
  ASSERT_TRUE(handle.ok());
  for (int i = 0; i < 1000 && only.requests().size() < 2; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  (*handle)->Cancel();
  ASSERT_TRUE(c.done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_EQ(c.end.code(), absl::StatusCode::kCancelled) << c.end;
  handle->reset();
}

// Through the HTTP layer: a stop string whose text spans the last token of the failed node and
// the first of the next one still ends the completion there, and the response (text, finish
// reason, logprobs, usage) equals the one of a run without the failure.
TEST(AttentionFailoverTest, HttpResponseAcrossTheSpliceEqualsTheUninterruptedOne) {
  const std::vector<text::TokenId> ids =
      Model().tokenizer->Encode(" alpha beta gamma delta epsilon zeta eta theta iota kappa");
  ASSERT_GE(ids.size(), 8u);
  const std::vector<text::TokenId> prompt = Model().tokenizer->Encode("Count:");
  const std::string gamma_delta = Model().tokenizer->Decode(std::vector<text::TokenId>{ids[2], ids[3]});
  auto response = [&](bool fail) {
    ScriptedNode first(fail ? Failure::kUnavailable : Failure::kNone, /*fail_after=*/3);
    ScriptedNode second(Failure::kNone, -1);
    for (ScriptedNode* node : {&first, &second}) {
      node->script.assign(ids.begin(), ids.end());
      node->script_start = static_cast<uint32_t>(prompt.size());
    }
    Cluster cluster;
    cluster.nodes = {first.address(), second.address()};
    GrpcAttentionBackend backend(cluster.Options());
    HttpServerOptions options;
    options.threads = 4;
    HttpServer server(Model().info, &backend, options);
    EXPECT_TRUE(server.Start().ok());
    httplib::Client client("127.0.0.1", server.port());
    client.set_read_timeout(30, 0);
    const nlohmann::json body = {{"model", Model().info.served_name},
                                 {"prompt", prompt},
                                 {"max_tokens", ids.size()},
                                 {"stop", {gamma_delta.substr(1)}},  // "gamma delta"
                                 {"logprobs", 0},
                                 {"ignore_eos", true}};
    auto result = client.Post("/v1/completions", body.dump(), "application/json");
    server.Stop();
    EXPECT_TRUE(result) << "no HTTP answer";
    EXPECT_EQ(second.requests().size(), fail ? 1u : 0u);
    std::lock_guard<std::mutex> lock(cluster.mutex);
    EXPECT_EQ(cluster.reasons.size(), fail ? 1u : 0u);
    return result ? nlohmann::json::parse(result->body, nullptr, false) : nlohmann::json();
  };
  const nlohmann::json uninterrupted = response(false);
  const nlohmann::json spliced = response(true);
  ASSERT_TRUE(uninterrupted.contains("choices")) << uninterrupted.dump();
  ASSERT_TRUE(spliced.contains("choices")) << spliced.dump();
  EXPECT_EQ(spliced["choices"], uninterrupted["choices"]);
  EXPECT_EQ(spliced["usage"], uninterrupted["usage"]);
  EXPECT_EQ(spliced["choices"][0]["finish_reason"], "stop");
  EXPECT_EQ(spliced["choices"][0]["text"], Model().tokenizer->Decode(std::vector<text::TokenId>{ids[0], ids[1]}) + " ");
  // Logprobs continue: one per token consumed, the failed node's first then the next node's.
  const nlohmann::json& logprobs = spliced["choices"][0]["logprobs"]["token_logprobs"];
  ASSERT_GE(logprobs.size(), 4u) << spliced.dump();
  for (size_t i = 0; i < logprobs.size(); ++i) {
    EXPECT_NEAR(logprobs[i].get<double>(), -0.01 * static_cast<double>(i + 1), 1e-6) << i;
  }
}

}  // namespace
}  // namespace moemesh::router
