// GrpcExpertTransport against fake expert services: ordering and thread safety, deadlines,
// broken streams, unreachable nodes; the server helper's health and reflection; the codec.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <thread>
#include <vector>

#include "core/comm/dispatch_codec.h"
#include "core/comm/grpc_expert_transport.h"
#include "core/comm/grpc_server.h"
#include "gtest/gtest.h"
#include "moemesh/v1/expert.grpc.pb.h"
#include "tests/support/wait.h"
#include "tests/unit/comm/grpc_test_util.h"

namespace moemesh::comm {
namespace {

using moemesh::v1::DispatchReply;
using moemesh::v1::DispatchRequest;

// Answers partial_sum = 2 * hidden (or NOT_HELD for expert 13); replies in reverse order of
// pairs to check dispatch_id matching. With `hang`, reads and never replies.
class FakeExpertService final : public moemesh::v1::ExpertService::Service {
 public:
  explicit FakeExpertService(bool hang) : hang_(hang) {}
  grpc::Status Dispatch(grpc::ServerContext* context,
                        grpc::ServerReaderWriter<DispatchReply, DispatchRequest>* stream) override {
    DispatchRequest request;
    while (stream->Read(&request)) {
      ++received;
      if (hang_) continue;
      DispatchReply reply;
      reply.set_dispatch_id(request.dispatch_id());
      reply.set_placement_version(7);
      bool not_held = false;
      for (const auto& slice : request.slices()) {
        if (slice.expert() == 13) not_held = true;
      }
      if (not_held) {
        reply.set_code(DispatchReply::NOT_HELD);
        reply.add_missing_experts(13);
      } else {
        auto hidden = FloatBuffer::FromBytes(request.hidden());
        for (size_t i = 0; i < hidden->size(); ++i) hidden->data()[i] *= 2;
        reply.set_partial_sum(hidden->TakeBytes());
      }
      if (!stream->Write(reply)) break;
    }
    return grpc::Status::OK;
  }
  std::atomic<int> received{0};

 private:
  bool hang_;
};

struct FakeServer {
  explicit FakeServer(bool hang) : service(hang) {
    server = StartGrpcServer("127.0.0.1:0", {&service}, &port);
  }
  ~FakeServer() { ShutdownGrpcServer(server.get(), 0); }
  std::string address() const { return "127.0.0.1:" + std::to_string(port); }
  FakeExpertService service;
  std::unique_ptr<grpc::Server> server;
  int port = 0;
};

DispatchBatch MakeBatch(int rows, int hidden, float base, int expert = 1) {
  DispatchBatch batch;
  batch.layer = 1;
  batch.placement_version = 7;
  batch.hidden_size = hidden;
  std::vector<float> values;
  for (int i = 0; i < rows * hidden; ++i) values.push_back(base + i);
  batch.hidden = FloatBuffer(values);
  ExpertSliceRows slice;
  slice.expert = expert;
  for (int r = 0; r < rows; ++r) {
    slice.rows.push_back(r);
    slice.gate_weights.push_back(0.5f);
  }
  batch.slices.push_back(slice);
  return batch;
}

double SecondsSince(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

TEST(DispatchCodec, RoundTripAndValidation) {
  DispatchBatch batch = MakeBatch(3, 4, 1.5f);
  const DispatchRequest request = DispatchRequestFromBatch(batch, 42);
  EXPECT_EQ(request.dispatch_id(), 42u);
  EXPECT_EQ(request.hidden().size(), 3u * 4 * 4);
  DispatchRequest taken = request;
  auto back = DispatchBatchFromRequest(taken, 16);
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_EQ(back->hidden, batch.hidden);  // bitwise
  EXPECT_EQ(back->hidden.ToVector(), (std::vector<float>{1.5f, 2.5f, 3.5f, 4.5f, 5.5f, 6.5f,
                                                         7.5f, 8.5f, 9.5f, 10.5f, 11.5f, 12.5f}));
  EXPECT_TRUE(taken.hidden().empty()) << "the bytes are moved into the batch, not copied";
  EXPECT_EQ(back->slices[0].rows, batch.slices[0].rows);
  // A rejected request keeps its bytes.
  DispatchRequest rejected = request;
  rejected.set_rows(5);
  EXPECT_FALSE(DispatchBatchFromRequest(rejected, 16).ok());
  EXPECT_EQ(rejected.hidden(), request.hidden());

  DispatchRequest bad = request;
  bad.set_rows(4);
  EXPECT_TRUE(absl::IsInvalidArgument(DispatchBatchFromRequest(bad, 16).status()));
  bad = request;
  bad.mutable_slices(0)->add_row_indices(3);
  bad.mutable_slices(0)->add_gate_weights(1);
  EXPECT_TRUE(absl::IsInvalidArgument(DispatchBatchFromRequest(bad, 16).status()));
  bad = request;
  bad.mutable_slices(0)->set_expert(16);
  EXPECT_TRUE(absl::IsInvalidArgument(DispatchBatchFromRequest(bad, 16).status()));
  bad = request;
  *bad.add_slices() = request.slices(0);
  EXPECT_TRUE(absl::IsInvalidArgument(DispatchBatchFromRequest(bad, 16).status()));
}

TEST(GrpcServer, HealthServingAndReflection) {
  FakeServer server(/*hang=*/false);
  ASSERT_NE(server.server, nullptr);
  EXPECT_EQ(moemesh::testing::HealthCheck(server.address()), 1);  // SERVING
  const std::string services = moemesh::testing::ReflectionListServices(server.address());
  EXPECT_NE(services.find("moemesh.v1.ExpertService"), std::string::npos) << services;
  EXPECT_NE(services.find("grpc.health.v1.Health"), std::string::npos) << services;
}

TEST(GrpcExpertTransport, ConcurrentDispatchesOnSeveralLanesGetTheirOwnReplies) {
  FakeServer server(/*hang=*/false);
  GrpcExpertTransport transport;
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 25; ++i) {
        DispatchBatch batch = MakeBatch(1 + (i % 3), 8, 100.0f * t + i);
        std::vector<float> expected = batch.hidden.ToVector();
        for (float& v : expected) v *= 2;
        auto result = transport.Dispatch("expert-0", server.address(), t % 2, batch).get();
        if (!result.ok() || result->partial_sum.ToVector() != expected ||
            result->node_placement_version != 7) {
          ++failures;
        }
      }
    });
  }
  for (auto& thread : threads) thread.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(transport.counters().ok, 100u);
}

// A node without ExpertService.ServeSharedMemory (UNIMPLEMENTED here; another host answers
// NOT_FOUND) is reached over the stream by a transport that prefers shared memory.
TEST(GrpcExpertTransport, SharedMemoryTransportUsesTheStreamForNodesThatCannotAttach) {
  FakeServer server(/*hang=*/false);
  GrpcExpertTransportOptions options;
  options.shared_memory = true;
  GrpcExpertTransport transport(options);
  for (int i = 0; i < 5; ++i) {
    DispatchBatch batch = MakeBatch(2, 8, 10.0f * i);
    std::vector<float> expected = batch.hidden.ToVector();
    for (float& v : expected) v *= 2;
    auto result = transport.Dispatch("expert-0", server.address(), 0, batch).get();
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_EQ(result->partial_sum.ToVector(), expected);
  }
  EXPECT_EQ(server.service.received.load(), 5);
  EXPECT_EQ(transport.counters().dispatches, 5u);
  EXPECT_EQ(transport.counters().shared_memory_dispatches, 0u);
}

TEST(GrpcExpertTransport, NotHeldIsFailedPreconditionNamingTheExpert) {
  FakeServer server(/*hang=*/false);
  GrpcExpertTransport transport;
  auto result = transport.Dispatch("expert-3", server.address(), 0, MakeBatch(2, 4, 0, 13)).get();
  ASSERT_TRUE(absl::IsFailedPrecondition(result.status())) << result.status();
  EXPECT_NE(result.status().message().find("[13]"), absl::string_view::npos) << result.status();
  EXPECT_NE(result.status().message().find("expert-3"), absl::string_view::npos);
}

TEST(GrpcExpertTransport, SilentNodeFailsWithinDeadlineAndStreamReconnects) {
  FakeServer server(/*hang=*/true);
  GrpcExpertTransportOptions options;
  options.dispatch_deadline = absl::Milliseconds(300);
  GrpcExpertTransport transport(options);
  const auto start = std::chrono::steady_clock::now();
  auto first = transport.Dispatch("expert-1", server.address(), 0, MakeBatch(1, 4, 0));
  auto second = transport.Dispatch("expert-1", server.address(), 0, MakeBatch(1, 4, 1));
  auto r1 = first.get();
  auto r2 = second.get();
  EXPECT_LT(SecondsSince(start), 2.0);
  ASSERT_TRUE(absl::IsUnavailable(r1.status())) << r1.status();
  EXPECT_TRUE(absl::IsUnavailable(r2.status())) << r2.status();
  EXPECT_NE(r1.status().message().find("expert-1"), absl::string_view::npos) << r1.status();
  // The next dispatch opens a new stream (and times out again, quickly).
  auto r3 = transport.Dispatch("expert-1", server.address(), 0, MakeBatch(1, 4, 0)).get();
  EXPECT_TRUE(absl::IsUnavailable(r3.status()));
  EXPECT_GE(transport.counters().reconnects, 1u);
  EXPECT_GE(transport.counters().deadline_exceeded, 1u);
}

TEST(GrpcExpertTransport, ServerShutdownFailsPendingAndNextDispatchesFast) {
  auto server = std::make_unique<FakeServer>(/*hang=*/true);
  const std::string address = server->address();
  GrpcExpertTransportOptions options;
  options.dispatch_deadline = absl::Seconds(20);
  GrpcExpertTransport transport(options);
  auto pending = transport.Dispatch("expert-2", address, 1, MakeBatch(2, 4, 0));
  ASSERT_TRUE(testing::WaitUntil([&] { return server->service.received.load() > 0; }))
      << "the fake server never received the dispatch";
  const auto start = std::chrono::steady_clock::now();
  server.reset();  // shutdown, cancelling the open stream
  auto result = pending.get();
  EXPECT_LT(SecondsSince(start), 5.0);
  EXPECT_TRUE(absl::IsUnavailable(result.status())) << result.status();
  const auto next_start = std::chrono::steady_clock::now();
  auto next = transport.Dispatch("expert-2", address, 1, MakeBatch(2, 4, 0)).get();
  EXPECT_LT(SecondsSince(next_start), 5.0);
  EXPECT_TRUE(absl::IsUnavailable(next.status())) << next.status();
}

// A loopback TCP proxy to `target_port` that can freeze: it then stops forwarding in both
// directions but keeps every connection open, as a host or network that went away would.
class FreezingProxy {
 public:
  explicit FreezingProxy(int target_port) : target_port_(target_port) {
    listen_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t length = sizeof(address);
    if (::bind(listen_, reinterpret_cast<sockaddr*>(&address), length) != 0 ||
        ::listen(listen_, 8) != 0 ||
        ::getsockname(listen_, reinterpret_cast<sockaddr*>(&address), &length) != 0) {
      ADD_FAILURE() << "proxy: cannot listen";
      return;
    }
    port_ = ntohs(address.sin_port);
    threads_.reserve(64);
    threads_.emplace_back([this] { Accept(); });
  }
  ~FreezingProxy() {
    stopping_ = true;
    ::shutdown(listen_, SHUT_RDWR);
    threads_.front().join();  // the accept thread: no pump is added after it
    for (size_t i = 1; i < threads_.size(); ++i) threads_[i].join();
    for (int fd : fds_) ::close(fd);
    ::close(listen_);
  }
  std::string address() const { return "127.0.0.1:" + std::to_string(port_); }
  void Freeze() { frozen_ = true; }

 private:
  void Accept() {
    while (!stopping_) {
      pollfd wait{listen_, POLLIN, 0};
      if (::poll(&wait, 1, 50) <= 0) continue;
      const int client = ::accept(listen_, nullptr, nullptr);
      if (client < 0) continue;
      const int server = ::socket(AF_INET, SOCK_STREAM, 0);
      sockaddr_in target{};
      target.sin_family = AF_INET;
      target.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
      target.sin_port = htons(static_cast<uint16_t>(target_port_));
      if (::connect(server, reinterpret_cast<sockaddr*>(&target), sizeof(target)) != 0) {
        ::close(client);
        ::close(server);
        continue;
      }
      fds_.push_back(client);
      fds_.push_back(server);
      threads_.emplace_back([this, client, server] { Pump(client, server); });
      threads_.emplace_back([this, server, client] { Pump(server, client); });
    }
  }
  void Pump(int from, int to) {
    char buffer[16384];
    while (!stopping_) {
      if (frozen_) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
        continue;
      }
      pollfd wait{from, POLLIN, 0};
      if (::poll(&wait, 1, 20) <= 0 || frozen_) continue;  // frozen while polling: keep it
      const ssize_t read = ::recv(from, buffer, sizeof(buffer), 0);
      if (read <= 0) return;
      for (ssize_t sent = 0; sent < read;) {
        const ssize_t n = ::send(to, buffer + sent, static_cast<size_t>(read - sent), MSG_NOSIGNAL);
        if (n <= 0) return;
        sent += n;
      }
    }
  }

  const int target_port_;
  int listen_ = -1;
  int port_ = 0;
  std::atomic<bool> frozen_{false};
  std::atomic<bool> stopping_{false};
  std::vector<int> fds_;  // accept thread only, closed after the joins
  std::vector<std::thread> threads_;  // the accept thread adds pumps; joined after it ends
};

TEST(GrpcExpertTransport, KeepaliveFailureBreaksTheStreamBeforeTheDispatchDeadline) {
  FakeServer server(/*hang=*/false);
  FreezingProxy proxy(server.port);
  GrpcExpertTransportOptions options;
  options.dispatch_deadline = absl::Seconds(60);
  options.dispatch_deadline_floor = absl::Seconds(60);
  options.keepalive_time = absl::Milliseconds(200);
  options.keepalive_timeout = absl::Milliseconds(300);
  GrpcExpertTransport transport(options);
  auto first = transport.Dispatch("expert-3", proxy.address(), 0, MakeBatch(1, 4, 0)).get();
  ASSERT_TRUE(first.ok()) << first.status();
  proxy.Freeze();  // the node's host goes silent; its connection stays open
  const auto start = std::chrono::steady_clock::now();
  auto frozen = transport.Dispatch("expert-3", proxy.address(), 0, MakeBatch(1, 4, 1)).get();
  EXPECT_TRUE(absl::IsUnavailable(frozen.status())) << frozen.status();
  EXPECT_NE(frozen.status().message().find("expert-3"), absl::string_view::npos)
      << frozen.status();
  // Seconds (PING unanswered), not the 60 s dispatch deadline.
  EXPECT_LT(SecondsSince(start), 30.0);
  EXPECT_EQ(transport.counters().deadline_exceeded, 0u);
}

TEST(GrpcExpertTransport, UnreachableNodeIsUnavailable) {
  int port = 0;
  {
    FakeServer server(false);
    port = server.port;
  }
  GrpcExpertTransportOptions options;
  options.dispatch_deadline = absl::Seconds(20);
  GrpcExpertTransport transport(options);
  const auto start = std::chrono::steady_clock::now();
  auto result = transport.Dispatch("expert-9", "127.0.0.1:" + std::to_string(port), 0,
                                   MakeBatch(1, 4, 0)).get();
  EXPECT_LT(SecondsSince(start), 5.0);
  EXPECT_TRUE(absl::IsUnavailable(result.status())) << result.status();
}

TEST(GrpcExpertTransport, RejectsMalformedBatchWithoutSending) {
  GrpcExpertTransport transport;
  DispatchBatch batch = MakeBatch(1, 4, 0);
  batch.hidden = FloatBuffer(std::vector<float>(3));
  auto result = transport.Dispatch("expert-0", "127.0.0.1:1", 0, batch).get();
  EXPECT_TRUE(absl::IsInvalidArgument(result.status()));
}

}  // namespace
}  // namespace moemesh::comm
