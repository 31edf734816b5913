// GrpcAttentionBackend against an in-process fake AttentionService: events arrive in order,
// Cancel() reaches the node as a cancelled call, a node that is down ends the sequence with
// Unavailable, and the control plane's answers (no node, unserved expert) are returned as is.
#include "router/attention_client.h"

#include <atomic>
#include <chrono>
#include <thread>

#include "absl/synchronization/notification.h"
#include "grpcpp/grpcpp.h"
#include "gtest/gtest.h"

namespace moemesh::router {
namespace {

using moemesh::v1::SequenceEvent;

// Streams `events_` tokens, one per 5 ms, then finishes with LENGTH; notes a cancelled call.
class FakeAttentionService : public moemesh::v1::AttentionService::Service {
 public:
  int events_ = 3;
  std::atomic<bool> saw_cancel{false};
  std::atomic<int> calls{0};

  grpc::Status AddSequence(grpc::ServerContext* context,
                           const moemesh::v1::AddSequenceRequest* request,
                           grpc::ServerWriter<SequenceEvent>* writer) override {
    ++calls;
    for (int i = 0; i < events_; ++i) {
      if (context->IsCancelled()) {
        saw_cancel = true;
        return grpc::Status::CANCELLED;
      }
      SequenceEvent event;
      event.add_tokens()->set_token_id(static_cast<uint32_t>(100 + i));
      event.set_prompt_tokens(static_cast<uint32_t>(request->prompt_token_ids_size()));
      writer->Write(event);
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    SequenceEvent last;
    last.set_finish_reason(SequenceEvent::LENGTH);
    writer->Write(last);
    return grpc::Status::OK;
  }
};

class AttentionClientTest : public ::testing::Test {
 protected:
  void StartNode(int events) {
    service_.events_ = events;
    grpc::ServerBuilder builder;
    builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port_);
    builder.RegisterService(&service_);
    server_ = builder.BuildAndStart();
    ASSERT_TRUE(server_);
  }
  void TearDown() override {
    if (server_) server_->Shutdown();
  }
  GrpcAttentionBackend Backend(std::string address) {
    GrpcAttentionBackendOptions options;
    options.ready = [] { return absl::OkStatus(); };
    options.check_experts = [this] { return experts_; };
    options.pick_node = [address](uint64_t,
                                  const std::vector<std::string>&) -> absl::StatusOr<std::string> {
      if (address.empty()) return absl::UnavailableError("no healthy attention node");
      return address;
    };
    options.failover_timeout = absl::Seconds(2);
    return GrpcAttentionBackend(std::move(options));
  }

  struct Collected {
    std::mutex mutex;
    std::vector<SequenceEvent> events;
    absl::Status end;
    absl::Notification done;
  };
  static SequenceObserver Observer(Collected* c) {
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

  FakeAttentionService service_;
  std::unique_ptr<grpc::Server> server_;
  int port_ = 0;
  absl::Status experts_ = absl::OkStatus();
};

TEST_F(AttentionClientTest, StreamsEventsInOrder) {
  StartNode(3);
  GrpcAttentionBackend backend = Backend("127.0.0.1:" + std::to_string(port_));
  moemesh::v1::AddSequenceRequest request;
  request.add_prompt_token_ids(5);
  Collected c;
  auto handle = backend.AddSequence(request, Observer(&c));
  ASSERT_TRUE(handle.ok()) << handle.status();
  ASSERT_TRUE(c.done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_TRUE(c.end.ok()) << c.end;
  ASSERT_EQ(c.events.size(), 4u);
  EXPECT_EQ(c.events[0].tokens(0).token_id(), 100u);
  EXPECT_EQ(c.events[2].tokens(0).token_id(), 102u);
  EXPECT_EQ(c.events[3].finish_reason(), SequenceEvent::LENGTH);
}

TEST_F(AttentionClientTest, CancelReachesTheNode) {
  StartNode(100000);
  GrpcAttentionBackend backend = Backend("127.0.0.1:" + std::to_string(port_));
  Collected c;
  auto handle = backend.AddSequence(moemesh::v1::AddSequenceRequest(), Observer(&c));
  ASSERT_TRUE(handle.ok());
  for (int i = 0; i < 500; ++i) {
    {
      std::lock_guard<std::mutex> lock(c.mutex);
      if (!c.events.empty()) break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  (*handle)->Cancel();
  ASSERT_TRUE(c.done.WaitForNotificationWithTimeout(absl::Seconds(10)));
  EXPECT_EQ(c.end.code(), absl::StatusCode::kCancelled) << c.end;
  for (int i = 0; i < 500 && !service_.saw_cancel; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE(service_.saw_cancel);
  handle->reset();  // joins
}

TEST_F(AttentionClientTest, NodeDownIsUnavailable) {
  GrpcAttentionBackend backend = Backend("127.0.0.1:1");
  Collected c;
  auto handle = backend.AddSequence(moemesh::v1::AddSequenceRequest(), Observer(&c));
  ASSERT_TRUE(handle.ok());
  ASSERT_TRUE(c.done.WaitForNotificationWithTimeout(absl::Seconds(30)));
  EXPECT_EQ(c.end.code(), absl::StatusCode::kUnavailable) << c.end;
  EXPECT_NE(c.end.message().find("127.0.0.1:1"), absl::string_view::npos) << c.end;
}

TEST_F(AttentionClientTest, ControlPlaneRefusalsAreReturned) {
  GrpcAttentionBackend none = Backend("");
  Collected c;
  auto no_node = none.AddSequence(moemesh::v1::AddSequenceRequest(), Observer(&c));
  EXPECT_EQ(no_node.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(no_node.status().message(), "no healthy attention node");
  experts_ = absl::UnavailableError("no healthy expert node holds expert 3 of layer 1");
  GrpcAttentionBackend backend = Backend("127.0.0.1:1");
  auto unserved = backend.AddSequence(moemesh::v1::AddSequenceRequest(), Observer(&c));
  EXPECT_EQ(unserved.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_FALSE(c.done.HasBeenNotified());
}

}  // namespace
}  // namespace moemesh::router
