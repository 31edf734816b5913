// Things every moemesh gRPC server has: grpc.health.v1 health and server reflection.
#pragma once

#include <initializer_list>
#include <memory>
#include <string>

#include "grpcpp/grpcpp.h"

namespace moemesh::comm {

// Call before building any grpc::Server: turns on the default grpc.health.v1 service and the
// reflection plugin for servers built afterwards. StartGrpcServer calls it itself.
void EnableHealthAndReflection();

// Largest message a service accepts, per service (bigger ones fail RESOURCE_EXHAUSTED before
// any handler runs). The expert data path carries a micro-batch's hidden rows: 4096 rows x 7168
// x 4 bytes is 117 MiB, so it gets 256 MiB; control and attention messages are small.
inline constexpr int kExpertMaxMessageBytes = 256 << 20;
inline constexpr int kAttentionMaxMessageBytes = 64 << 20;
inline constexpr int kControlMaxMessageBytes = 16 << 20;

// Builds and starts a server on `address` ("host:port", port 0 picks one) with `services`, health
// (SERVING for "") and reflection, receiving messages up to `max_message_bytes`, with the
// process's transport security (tls.h: mTLS when configured). Returns nullptr on failure
// (address in use, bad address); `bound_port` receives the port actually bound.
std::unique_ptr<grpc::Server> StartGrpcServer(const std::string& address,
                                              std::initializer_list<grpc::Service*> services,
                                              int* bound_port,
                                              int max_message_bytes = kExpertMaxMessageBytes);

// Health goes NOT_SERVING, then the server stops, cancelling calls still open after
// `grace_seconds` (open streams are cancelled, so Shutdown never waits on a client).
void ShutdownGrpcServer(grpc::Server* server, double grace_seconds = 1.0);

}  // namespace moemesh::comm
