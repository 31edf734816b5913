// core/obs/log.h: one line per event with UTC time, level and service name; levels filter;
// unknown level names are refused. And the control plane's events (registration, loss,
// placement versions) reach the log.
#include "core/obs/log.h"

#include <string>

#include "absl/time/clock.h"
#include "core/checkpoint/model_config.h"
#include "gtest/gtest.h"
#include "router/control_plane.h"

namespace moemesh::obs {
namespace {

TEST(LogTest, LinesCarryLevelAndServiceAndLevelsFilter) {
  ASSERT_TRUE(InitLogging("moemesh-test", "info").ok());
  ::testing::internal::CaptureStderr();
  LogInfo("node {} registered kind={}", "expert-3", "expert");
  LogDebug("hidden at info");
  LogWarn("request {} failed", "abc");
  const std::string out = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(out.find("info moemesh-test: node expert-3 registered kind=expert\n"), std::string::npos)
      << out;
  EXPECT_NE(out.find("warning moemesh-test: request abc failed"), std::string::npos) << out;
  EXPECT_EQ(out.find("hidden at info"), std::string::npos) << out;
  EXPECT_NE(out.find("Z info"), std::string::npos) << out;  // UTC timestamp
  EXPECT_EQ(SetLogLevel("loud").code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(SetLogLevel("error").ok());
  ::testing::internal::CaptureStderr();
  LogWarn("filtered");
  EXPECT_EQ(::testing::internal::GetCapturedStderr(), "");
  ASSERT_TRUE(SetLogLevel("info").ok());
}

TEST(LogTest, ControlPlaneLogsRegistrationLossAndPlacementVersions) {
  ASSERT_TRUE(InitLogging("moemesh-router", "info").ok());
  auto config = checkpoint::LoadModelConfig(MOEMESH_SHARED_DIR "/fixtures/tiny-r1/config.json");
  ASSERT_TRUE(config.ok()) << config.status();
  router::ControlPlaneOptions options;
  options.expected_expert_nodes = 1;
  options.heartbeat_timeout = absl::Milliseconds(50);
  router::ControlPlane control(*config, options);
  ::testing::internal::CaptureStderr();
  moemesh::v1::RegisterRequest request;
  request.set_kind(moemesh::v1::NODE_KIND_EXPERT);
  request.set_address("127.0.0.1:5555");
  request.set_preferred_id("expert-9");
  moemesh::v1::RegisterReply reply;
  ASSERT_TRUE(control.Register(nullptr, &request, &reply).ok());
  absl::SleepFor(absl::Milliseconds(120));
  moemesh::v1::HeartbeatRequest heartbeat;
  heartbeat.set_node_id("other");
  moemesh::v1::HeartbeatReply heartbeat_reply;
  ASSERT_TRUE(control.Heartbeat(nullptr, &heartbeat, &heartbeat_reply).ok());  // refreshes
  ASSERT_TRUE(control.Register(nullptr, &request, &reply).ok());
  const std::string out = ::testing::internal::GetCapturedStderr();
  EXPECT_NE(out.find("info moemesh-router: node registered node=expert-9 kind=expert "
                     "address=127.0.0.1:5555"),
            std::string::npos) << out;
  EXPECT_NE(out.find("placement version 1 published placement_version=1 expert_nodes=1"),
            std::string::npos) << out;
  EXPECT_NE(out.find("warning moemesh-router: node lost node=expert-9 kind=expert "
                     "address=127.0.0.1:5555 silent_for="),
            std::string::npos) << out;
  EXPECT_NE(out.find("node rejoined (restarted) node=expert-9 kind=expert"), std::string::npos)
      << out;
}

}  // namespace
}  // namespace moemesh::obs
