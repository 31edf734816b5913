#include "core/comm/grpc_server.h"

#include "core/comm/tls.h"

#include "grpcpp/ext/proto_server_reflection_plugin.h"
#include "grpcpp/health_check_service_interface.h"

namespace moemesh::comm {

void EnableHealthAndReflection() {
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
}

std::unique_ptr<grpc::Server> StartGrpcServer(const std::string& address,
                                              std::initializer_list<grpc::Service*> services,
                                              int* bound_port, int max_message_bytes) {
  EnableHealthAndReflection();
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort(address, ServiceServerCredentials(), &port);
  builder.SetMaxReceiveMessageSize(max_message_bytes);
  builder.SetMaxSendMessageSize(-1);
  // Clients keep their streams alive with HTTP/2 PINGs (the expert data path: every 2 s by
  // default, GrpcExpertTransportOptions): accept them down to every 500 ms, also on idle
  // streams, instead of answering GOAWAY "too_many_pings".
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MIN_RECV_PING_INTERVAL_WITHOUT_DATA_MS, 500);
  builder.AddChannelArgument(GRPC_ARG_HTTP2_MAX_PING_STRIKES, 0);
  builder.AddChannelArgument(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 1);
  for (grpc::Service* service : services) builder.RegisterService(service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) return nullptr;
  if (bound_port != nullptr) *bound_port = port;
  return server;
}

void ShutdownGrpcServer(grpc::Server* server, double grace_seconds) {
  if (server == nullptr) return;
  if (auto* health = server->GetHealthCheckService()) health->Shutdown();
  server->Shutdown(std::chrono::system_clock::now() +
                   std::chrono::milliseconds(static_cast<int64_t>(grace_seconds * 1000)));
}

}  // namespace moemesh::comm
