// core/comm/tls.h: the configuration rules (all three files or --insecure-plaintext, never
// neither, never both) and mTLS in process: a server started with StartGrpcServer after
// ConfigureServiceTls accepts a channel from ServiceChannelCredentials and refuses plaintext and
// certificate-less TLS clients.
#include "core/comm/tls.h"

#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "core/comm/grpc_server.h"
#include "core/comm/throwaway_ca.h"
#include "core/checkpoint/model_config.h"
#include "gtest/gtest.h"
#include "moemesh/v1/control.grpc.pb.h"
#include "router/control_plane.h"

namespace moemesh::comm {
namespace {

std::string Read(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

class TlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // One directory per test process: ctest runs the cases of this fixture in parallel.
    dir_ = ::testing::TempDir() + "/moemesh_tls_test_" + std::to_string(::getpid()) + "_" +
           ::testing::UnitTest::GetInstance()->current_test_info()->name();
    std::filesystem::create_directories(dir_);
    ASSERT_TRUE(GenerateThrowawayCertificates(dir_).ok());
  }
  void TearDown() override { ResetServiceTls(); }
  TlsOptions Files() const {
    TlsOptions options;
    options.ca_file = dir_ + "/ca.pem";
    options.cert_file = dir_ + "/node.pem";
    options.key_file = dir_ + "/node.key";
    return options;
  }
  std::string dir_;
};

TEST_F(TlsTest, ConfigurationNeedsAllFilesOrAnExplicitPlaintext) {
  EXPECT_EQ(ConfigureServiceTls({}).code(), absl::StatusCode::kFailedPrecondition);
  TlsOptions partial = Files();
  partial.key_file.clear();
  EXPECT_EQ(ConfigureServiceTls(partial).code(), absl::StatusCode::kInvalidArgument);
  TlsOptions both = Files();
  both.insecure_plaintext = true;
  EXPECT_EQ(ConfigureServiceTls(both).code(), absl::StatusCode::kInvalidArgument);
  TlsOptions missing = Files();
  missing.ca_file = dir_ + "/nope.pem";
  EXPECT_EQ(ConfigureServiceTls(missing).code(), absl::StatusCode::kNotFound);
  TlsOptions plaintext;
  plaintext.insecure_plaintext = true;
  EXPECT_TRUE(ConfigureServiceTls(plaintext).ok());
  EXPECT_FALSE(ServiceTlsEnabled());
  EXPECT_TRUE(ConfigureServiceTls(Files()).ok());
  EXPECT_TRUE(ServiceTlsEnabled());
}

TEST_F(TlsTest, ServersRequireAClientCertificate) {
  ASSERT_TRUE(ConfigureServiceTls(Files()).ok());
  auto config = checkpoint::LoadModelConfig(MOEMESH_SHARED_DIR "/fixtures/tiny-r1/config.json");
  ASSERT_TRUE(config.ok()) << config.status();
  router::ControlPlane control(*config, router::ControlPlaneOptions{});
  int port = 0;
  std::unique_ptr<grpc::Server> server =
      StartGrpcServer("127.0.0.1:0", {&control}, &port, kControlMaxMessageBytes);
  ASSERT_NE(server, nullptr);
  const std::string address = "127.0.0.1:" + std::to_string(port);
  auto check = [&](std::shared_ptr<grpc::Channel> channel) {
    auto stub = moemesh::v1::ControlPlane::NewStub(channel);
    grpc::ClientContext context;
    context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    moemesh::v1::GetPlacementRequest request;
    moemesh::v1::Placement placement;
    return stub->GetPlacement(&context, request, &placement);
  };
  EXPECT_TRUE(check(CreateServiceChannel(address)).ok());
  EXPECT_EQ(check(grpc::CreateChannel(address, grpc::InsecureChannelCredentials())).error_code(),
            grpc::StatusCode::UNAVAILABLE);
  grpc::SslCredentialsOptions no_cert;
  no_cert.pem_root_certs = Read(dir_ + "/ca.pem");
  EXPECT_EQ(check(grpc::CreateChannel(address, grpc::SslCredentials(no_cert))).error_code(),
            grpc::StatusCode::UNAVAILABLE);
  ShutdownGrpcServer(server.get(), 0.1);
}

TEST(GrpcLimitsTest, ControlPlaneRefusesOversizedMessages) {
  auto config = checkpoint::LoadModelConfig(MOEMESH_SHARED_DIR "/fixtures/tiny-r1/config.json");
  ASSERT_TRUE(config.ok()) << config.status();
  router::ControlPlane control(*config, router::ControlPlaneOptions{});
  int port = 0;
  std::unique_ptr<grpc::Server> server =
      StartGrpcServer("127.0.0.1:0", {&control}, &port, kControlMaxMessageBytes);
  ASSERT_NE(server, nullptr);
  grpc::ChannelArguments args;
  args.SetMaxSendMessageSize(-1);
  auto stub = moemesh::v1::ControlPlane::NewStub(grpc::CreateCustomChannel(
      "127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials(), args));
  moemesh::v1::RegisterRequest request;
  request.set_kind(moemesh::v1::NODE_KIND_EXPERT);
  request.set_address(std::string(kControlMaxMessageBytes + 1, 'a'));
  moemesh::v1::RegisterReply reply;
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
  EXPECT_EQ(stub->Register(&context, request, &reply).error_code(),
            grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_EQ(control.CurrentPlacement().nodes_size(), 0);
  ShutdownGrpcServer(server.get(), 0.1);
}

}  // namespace
}  // namespace moemesh::comm
