// mTLS between the services (core/comm/tls.h), on a real cluster started with a throwaway CA:
// a process without a valid client certificate (plaintext, TLS without a certificate, or a
// certificate from another CA) can neither reach the control plane (and so never register)
// nor dispatch to an expert node; a correctly certified one can, and a malformed
// DispatchRequest is answered INVALID without harming the node. The development path
// (--insecure-plaintext on every process) still serves, and then speaks plaintext only.
#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>

#include "core/comm/throwaway_ca.h"
#include "core/comm/tls.h"
#include "gtest/gtest.h"
#include "moemesh/v1/control.grpc.pb.h"
#include "moemesh/v1/expert.grpc.pb.h"
#include "tests/integration/cluster_harness.h"

namespace moemesh::integration {
namespace {

std::string Read(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return text.str();
}

std::chrono::system_clock::time_point Soon() {
  return std::chrono::system_clock::now() + std::chrono::seconds(5);
}

// The credentials a client could try.
struct Attempt {
  const char* name;
  std::shared_ptr<grpc::ChannelCredentials> credentials;
  bool should_pass;
};

std::vector<Attempt> Attempts(const Cluster& cluster, const std::string& other_dir) {
  grpc::SslCredentialsOptions no_cert;
  no_cert.pem_root_certs = Read(cluster.tls_file("ca.pem"));
  grpc::SslCredentialsOptions foreign = no_cert;
  foreign.pem_cert_chain = Read(other_dir + "/node.pem");
  foreign.pem_private_key = Read(other_dir + "/node.key");
  grpc::SslCredentialsOptions valid = no_cert;
  valid.pem_cert_chain = Read(cluster.tls_file("node.pem"));
  valid.pem_private_key = Read(cluster.tls_file("node.key"));
  return {{"plaintext", grpc::InsecureChannelCredentials(), false},
          {"TLS without a client certificate", grpc::SslCredentials(no_cert), false},
          {"a certificate from another CA", grpc::SslCredentials(foreign), false},
          {"the cluster's certificate", grpc::SslCredentials(valid), true}};
}

class SecurityTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    cluster_ = new Cluster({.attention_nodes = 1, .expert_nodes = 1});
    other_dir_ = new std::string(cluster_->log_dir() + "/other-ca");
    std::filesystem::create_directories(*other_dir_);
    other_ok_ = comm::GenerateThrowawayCertificates(*other_dir_).ok();
  }
  static void TearDownTestSuite() {
    delete cluster_;
    delete other_dir_;
  }
  void SetUp() override {
    ASSERT_TRUE(cluster_->ok()) << cluster_->error();
    ASSERT_TRUE(other_ok_);
  }
  static Cluster* cluster_;
  static std::string* other_dir_;
  static bool other_ok_;
};
Cluster* SecurityTest::cluster_ = nullptr;
std::string* SecurityTest::other_dir_ = nullptr;
bool SecurityTest::other_ok_ = false;

TEST_F(SecurityTest, ControlPlaneRefusesNodesWithoutAValidCertificate) {
  for (const Attempt& attempt : Attempts(*cluster_, *other_dir_)) {
    auto stub = moemesh::v1::ControlPlane::NewStub(
        grpc::CreateChannel(cluster_->control_address(), attempt.credentials));
    // Registering is what a rogue expert node would do first.
    grpc::ClientContext context;
    context.set_deadline(Soon());
    moemesh::v1::RegisterRequest request;
    request.set_kind(moemesh::v1::NODE_KIND_EXPERT);
    request.set_address("127.0.0.1:1");
    request.set_preferred_id(attempt.should_pass ? "" : "rogue");
    moemesh::v1::RegisterReply reply;
    if (attempt.should_pass) {
      // Certified but empty-handed: GetPlacement only, so the real cluster stays as it is.
      grpc::ClientContext get;
      get.set_deadline(Soon());
      moemesh::v1::Placement placement;
      grpc::Status status = stub->GetPlacement(&get, {}, &placement);
      EXPECT_TRUE(status.ok()) << attempt.name << ": " << status.error_message();
      EXPECT_GT(placement.version(), 0u);
    } else {
      grpc::Status status = stub->Register(&context, request, &reply);
      EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE)
          << attempt.name << ": " << status.error_message();
    }
  }
  // The cluster still serves.
  HttpResult result = cluster_->Post("/v1/completions", R"({"prompt":[0,1,2],"max_tokens":2,"temperature":0})");
  EXPECT_EQ(result.status, 200) << result.body << result.error;
}

TEST_F(SecurityTest, ExpertNodeRefusesDispatchesWithoutAValidCertificate) {
  for (const Attempt& attempt : Attempts(*cluster_, *other_dir_)) {
    auto stub = moemesh::v1::ExpertService::NewStub(
        grpc::CreateChannel(cluster_->expert_address(0), attempt.credentials));
    grpc::ClientContext context;
    context.set_deadline(Soon());
    auto stream = stub->Dispatch(&context);
    // Malformed on purpose: 3 rows announced, bytes for none.
    moemesh::v1::DispatchRequest request;
    request.set_dispatch_id(7);
    request.set_layer(1);
    request.set_hidden_size(4);
    request.set_rows(3);
    moemesh::v1::DispatchReply reply;
    const bool exchanged = stream->Write(request) && stream->Read(&reply);
    stream->WritesDone();
    grpc::Status status = stream->Finish();
    if (attempt.should_pass) {
      ASSERT_TRUE(exchanged) << attempt.name << ": " << status.error_message();
      EXPECT_EQ(reply.dispatch_id(), 7u);
      EXPECT_EQ(reply.code(), moemesh::v1::DispatchReply::INVALID) << reply.error();
      EXPECT_FALSE(reply.error().empty());
    } else {
      EXPECT_FALSE(exchanged) << attempt.name;
      EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE)
          << attempt.name << ": " << status.error_message();
    }
  }
  HttpResult result = cluster_->Post("/v1/completions", R"({"prompt":[0,1,2],"max_tokens":2,"temperature":0})");
  EXPECT_EQ(result.status, 200) << result.body << result.error;
}

// --insecure-plaintext on every process: the cluster serves golden tokens, and its control plane
// answers plaintext gRPC and refuses a TLS handshake (the flag really turned TLS off).
TEST(InsecurePlaintext, ClusterServesAndSpeaksPlaintextOnly) {
  Cluster cluster({.attention_nodes = 1, .expert_nodes = 1, .tls = false});
  ASSERT_TRUE(cluster.ok()) << cluster.error();
  grpc::SslCredentialsOptions tls;
  tls.pem_root_certs = Read(TestCertificateDir() + "/ca.pem");
  tls.pem_cert_chain = Read(TestCertificateDir() + "/node.pem");
  tls.pem_private_key = Read(TestCertificateDir() + "/node.key");
  for (const bool plaintext : {true, false}) {
    auto stub = moemesh::v1::ControlPlane::NewStub(grpc::CreateChannel(
        cluster.control_address(),
        plaintext ? grpc::InsecureChannelCredentials() : grpc::SslCredentials(tls)));
    grpc::ClientContext context;
    context.set_deadline(Soon());
    moemesh::v1::Placement placement;
    grpc::Status status = stub->GetPlacement(&context, {}, &placement);
    if (plaintext) {
      EXPECT_TRUE(status.ok()) << status.error_message();
      EXPECT_GT(placement.version(), 0u);
    } else {
      EXPECT_EQ(status.error_code(), grpc::StatusCode::UNAVAILABLE) << status.error_message();
    }
  }
  const json& prompt = TinyR1Goldens()["results"][0];
  const json body = {{"prompt", prompt["ids"]},
                     {"max_tokens", prompt["greedy"].size()},
                     {"temperature", 0},
                     {"return_token_ids", true}};
  HttpResult result = cluster.Post("/v1/completions", body.dump());
  ASSERT_EQ(result.status, 200) << result.body << result.error;
  const json reply = result.Json();
  ASSERT_TRUE(reply.contains("choices")) << result.body;
  EXPECT_EQ(CompareGreedy(prompt, reply["choices"][0]["token_ids"].get<std::vector<int64_t>>()), "");
}

}  // namespace
}  // namespace moemesh::integration
