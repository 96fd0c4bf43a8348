#pragma once
// Parsing requests and serializing responses of calls kvhubd registers in their raw
// (ByteBuffer) form, which is all of them: gRPC 1.51's typed callback handlers answer
// a request that does not parse (truncated bytes, a string field such as the namespace
// that is not valid UTF-8) with UNIMPLEMENTED and an empty message, before the service
// sees it. Parsed here, such a request gets INVALID_ARGUMENT naming the message and
// what may be wrong with it.
//
// Thread-safe, pure functions. ParseRawRequest consumes `raw` (gRPC hands the handler
// a buffer it owns for the call; its bytes are not needed afterwards).

#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/support/proto_buffer_reader.h"
#include "grpcpp/support/proto_buffer_writer.h"
#include "grpcpp/support/status.h"

namespace kvhub::cachesvc {

// The message of a request of type `type_name` (e.g. "kvhub.v1.LookupRequest") that
// does not parse; used by gRPC and UCX calls alike.
inline std::string UnparseableRequestMessage(absl::string_view type_name) {
  return absl::StrCat("the request does not parse as ", type_name,
                      ": truncated or malformed protobuf bytes, or a string field (such as namespace) "
                      "that is not valid UTF-8");
}

// Parses `raw` into `*msg`. INVALID_ARGUMENT (UnparseableRequestMessage) when it does
// not parse; `*msg` is then unspecified.
template <typename Message>
grpc::Status ParseRawRequest(const grpc::ByteBuffer* raw, Message* msg) {
  grpc::Status s =
      grpc::GenericDeserialize<grpc::ProtoBufferReader, Message>(const_cast<grpc::ByteBuffer*>(raw), msg);
  if (s.ok()) return s;
  return grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, UnparseableRequestMessage(msg->GetTypeName()));
}

// Serializes `msg` into `*out` (replacing what it held). INTERNAL only if protobuf
// refuses (a message over 2 GiB, which the limits of the API rule out).
template <typename Message>
grpc::Status SerializeRawResponse(const Message& msg, grpc::ByteBuffer* out) {
  bool own = false;
  return grpc::GenericSerialize<grpc::ProtoBufferWriter, Message>(msg, out, &own);
}

}  // namespace kvhub::cachesvc
