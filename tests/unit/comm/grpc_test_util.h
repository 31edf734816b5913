// Test helpers: grpc.health.v1 Check and reflection's list_services over raw bytes (no generated
// stubs for those protos in Debian's gRPC).
#pragma once

#include <string>

#include "grpcpp/grpcpp.h"
#include "grpcpp/impl/codegen/client_unary_call.h"
#include "grpcpp/impl/codegen/sync_stream.h"

namespace moemesh::testing {

inline std::string ToString(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  (void)buffer.Dump(&slices);
  std::string out;
  for (const auto& slice : slices) {
    out.append(reinterpret_cast<const char*>(slice.begin()), slice.size());
  }
  return out;
}

inline grpc::ByteBuffer FromString(const std::string& bytes) {
  grpc::Slice slice(bytes);
  return grpc::ByteBuffer(&slice, 1);
}

// grpc.health.v1.Health/Check for service "": returns the status enum (1 = SERVING), or -1.
inline int HealthCheck(const std::string& address) {
  auto channel = grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  grpc::ByteBuffer response;
  grpc::Status status = grpc::internal::BlockingUnaryCall<grpc::ByteBuffer, grpc::ByteBuffer>(
      channel.get(),
      grpc::internal::RpcMethod("/grpc.health.v1.Health/Check", nullptr,
                                grpc::internal::RpcMethod::NORMAL_RPC),
      &context, FromString(""), &response);
  if (!status.ok()) return -1;
  const std::string bytes = ToString(response);  // field 1 varint: 0x08 <status>
  if (bytes.empty()) return 0;                   // UNKNOWN encodes as nothing
  if (bytes.size() != 2 || bytes[0] != 0x08) return -1;
  return bytes[1];
}

// Reflection list_services: the raw reply bytes (service names appear verbatim), or "".
inline std::string ReflectionListServices(const std::string& address) {
  auto channel = grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
  grpc::ClientContext context;
  context.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
  std::unique_ptr<grpc::ClientReaderWriter<grpc::ByteBuffer, grpc::ByteBuffer>> stream(
      grpc::internal::ClientReaderWriterFactory<grpc::ByteBuffer, grpc::ByteBuffer>::Create(
          channel.get(),
          grpc::internal::RpcMethod("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
                                    nullptr, grpc::internal::RpcMethod::BIDI_STREAMING),
          &context));
  // ServerReflectionRequest { list_services = "*" } (field 7, string).
  if (!stream->Write(FromString(std::string("\x3a\x01*", 3)))) return "";
  stream->WritesDone();
  grpc::ByteBuffer reply;
  std::string out;
  if (stream->Read(&reply)) out = ToString(reply);
  while (stream->Read(&reply)) {
  }
  (void)stream->Finish();
  return out;
}

}  // namespace moemesh::testing
