// Transport security of the services' gRPC (control plane, attention service, expert data path):
// mutual TLS. Every server requires and verifies a client certificate signed by the configured
// CA; every channel presents this process's certificate and verifies the server's against the
// same CA. The CA bundle, certificate chain and key are PEM files (as Kubernetes secrets or
// cert-manager's tls.crt / tls.key / ca.crt provide them).
//
// The setting is process-wide: a service binary calls ConfigureServiceTlsFromFlags once at start
// (flags --tls-ca, --tls-cert, --tls-key, --tls-server-name, --insecure-plaintext) and then every
// server (StartGrpcServer) and channel (ServiceChannelCredentials) uses it. A binary refuses to
// start with neither TLS files nor --insecure-plaintext. Unconfigured (library use, unit tests),
// credentials are plaintext.
#pragma once

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "grpcpp/grpcpp.h"

namespace moemesh::comm {

struct TlsOptions {
  std::string ca_file;    // PEM bundle of the CA(s) that sign every node's certificate
  std::string cert_file;  // PEM certificate chain of this process (server and client use)
  std::string key_file;   // PEM private key of cert_file
  // Name checked against the servers' certificates instead of the host of the address dialled
  // (e.g. one name for every node's certificate); "" = the host dialled.
  std::string server_name;
  bool insecure_plaintext = false;  // development only: no TLS at all
};

// Reads the files and makes them the process's credentials. InvalidArgument when only some of
// ca/cert/key are given, or when both TLS files and insecure_plaintext are; NotFound when a file
// cannot be read; FailedPrecondition when neither is given.
absl::Status ConfigureServiceTls(const TlsOptions& options);
// ConfigureServiceTls from the --tls-* / --insecure-plaintext flags.
absl::Status ConfigureServiceTlsFromFlags();
// Back to the unconfigured (plaintext) state; for tests.
void ResetServiceTls();

bool ServiceTlsEnabled();
// For servers: mTLS requiring a client certificate signed by the CA, or plaintext.
std::shared_ptr<grpc::ServerCredentials> ServiceServerCredentials();
// For channels: this process's certificate plus the CA, or plaintext.
std::shared_ptr<grpc::ChannelCredentials> ServiceChannelCredentials();
// Adds the server-name override (when configured) to channel arguments.
void AddServiceChannelArgs(grpc::ChannelArguments* args);
// A channel to `address` with the process's credentials and `args` (plus AddServiceChannelArgs).
std::shared_ptr<grpc::Channel> CreateServiceChannel(const std::string& address,
                                                    grpc::ChannelArguments args = {});

}  // namespace moemesh::comm
