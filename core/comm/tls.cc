#include "core/comm/tls.h"

#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <sstream>

#include "absl/flags/flag.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"

ABSL_FLAG(std::string, tls_ca, "", "PEM CA bundle that signs every node's certificate (mTLS)");
ABSL_FLAG(std::string, tls_cert, "", "PEM certificate chain of this node (mTLS, server and client)");
ABSL_FLAG(std::string, tls_key, "", "PEM private key of --tls-cert");
ABSL_FLAG(std::string, tls_server_name, "",
          "name checked against peers' certificates instead of the dialled host");
ABSL_FLAG(bool, insecure_plaintext, false,
          "development only: gRPC without TLS (anyone reaching the ports can join the cluster)");

namespace moemesh::comm {
namespace {

struct TlsState {
  bool enabled = false;
  std::string ca, cert, key, server_name;
};

std::mutex& StateMutex() {
  static std::mutex mutex;
  return mutex;
}
TlsState& State() {
  static TlsState state;
  return state;
}

absl::StatusOr<std::string> ReadPem(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read the TLS ", what, " file ", path));
  std::stringstream text;
  text << in.rdbuf();
  if (text.str().find("-----BEGIN") == std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat("the TLS ", what, " file ", path, " is not PEM"));
  }
  return text.str();
}

}  // namespace

absl::Status ConfigureServiceTls(const TlsOptions& options) {
  const int given = !options.ca_file.empty() + !options.cert_file.empty() + !options.key_file.empty();
  if (given != 0 && given != 3) {
    return absl::InvalidArgumentError("mTLS needs all of --tls-ca, --tls-cert and --tls-key");
  }
  if (given == 3 && options.insecure_plaintext) {
    return absl::InvalidArgumentError("--insecure-plaintext contradicts --tls-ca/--tls-cert/--tls-key");
  }
  if (given == 0 && !options.insecure_plaintext) {
    return absl::FailedPreconditionError(
        "gRPC needs mTLS: give --tls-ca, --tls-cert and --tls-key (PEM files), or "
        "--insecure-plaintext for development");
  }
  TlsState state;
  if (given == 3) {
    absl::StatusOr<std::string> ca = ReadPem(options.ca_file, "CA");
    if (!ca.ok()) return ca.status();
    absl::StatusOr<std::string> cert = ReadPem(options.cert_file, "certificate");
    if (!cert.ok()) return cert.status();
    absl::StatusOr<std::string> key = ReadPem(options.key_file, "key");
    if (!key.ok()) return key.status();
    state.enabled = true;
    state.ca = *std::move(ca);
    state.cert = *std::move(cert);
    state.key = *std::move(key);
    state.server_name = options.server_name;
  }
  std::lock_guard<std::mutex> lock(StateMutex());
  State() = std::move(state);
  return absl::OkStatus();
}

absl::Status ConfigureServiceTlsFromFlags() {
  TlsOptions options;
  options.ca_file = absl::GetFlag(FLAGS_tls_ca);
  options.cert_file = absl::GetFlag(FLAGS_tls_cert);
  options.key_file = absl::GetFlag(FLAGS_tls_key);
  options.server_name = absl::GetFlag(FLAGS_tls_server_name);
  options.insecure_plaintext = absl::GetFlag(FLAGS_insecure_plaintext);
  return ConfigureServiceTls(options);
}

void ResetServiceTls() {
  std::lock_guard<std::mutex> lock(StateMutex());
  State() = TlsState{};
}

bool ServiceTlsEnabled() {
  std::lock_guard<std::mutex> lock(StateMutex());
  return State().enabled;
}

std::shared_ptr<grpc::ServerCredentials> ServiceServerCredentials() {
  std::lock_guard<std::mutex> lock(StateMutex());
  const TlsState& state = State();
  if (!state.enabled) return grpc::InsecureServerCredentials();
  grpc::SslServerCredentialsOptions options(
      GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  options.pem_root_certs = state.ca;
  options.pem_key_cert_pairs.push_back({state.key, state.cert});
  return grpc::SslServerCredentials(options);
}

std::shared_ptr<grpc::ChannelCredentials> ServiceChannelCredentials() {
  std::lock_guard<std::mutex> lock(StateMutex());
  const TlsState& state = State();
  if (!state.enabled) return grpc::InsecureChannelCredentials();
  grpc::SslCredentialsOptions options;
  options.pem_root_certs = state.ca;
  options.pem_private_key = state.key;
  options.pem_cert_chain = state.cert;
  return grpc::SslCredentials(options);
}

void AddServiceChannelArgs(grpc::ChannelArguments* args) {
  std::lock_guard<std::mutex> lock(StateMutex());
  if (State().enabled && !State().server_name.empty()) {
    args->SetSslTargetNameOverride(State().server_name);
  }
}

std::shared_ptr<grpc::Channel> CreateServiceChannel(const std::string& address,
                                                    grpc::ChannelArguments args) {
  AddServiceChannelArgs(&args);
  return grpc::CreateCustomChannel(address, ServiceChannelCredentials(), args);
}

}  // namespace moemesh::comm
