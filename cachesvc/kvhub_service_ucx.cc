// KvHubService: the Connect RPC of the UCX data plane (cachesvc/ucx_server.h).
// Kept apart from kvhub_service.cc: it is the only handler that depends on UCX.

#include "cachesvc/kvhub_service.h"

#include "absl/strings/str_cat.h"
#include "google/protobuf/arena.h"

namespace kvhub::cachesvc {

grpc::Status KvHubService::DoConnect(const v1::ConnectRequest& req, v1::ConnectResponse* resp) {
  if (ucx_ == nullptr) {
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "ucx is not set up on this shard; use gRPC");
  }
  grpc::Status st = ucx_->Connect(req, resp);
  if (st.ok()) resp->set_incarnation(incarnation_);
  return st;
}

grpc::ServerUnaryReactor* KvHubService::Connect(grpc::CallbackServerContext* ctx, const v1::ConnectRequest* req,
                                                v1::ConnectResponse* resp) {
  absl::Time start = absl::Now();
  InflightScope scope(this);
  if (stopping()) {
    return Finish(ctx, Rpc::kConnect, start,
                  grpc::Status(grpc::StatusCode::UNAVAILABLE, "kvhubd is shutting down; retry on another node"));
  }
  return Finish(ctx, Rpc::kConnect, start, DoConnect(*req, resp));
}

namespace {
absl::Status FromGrpc(const grpc::Status& st) {
  return absl::Status(static_cast<absl::StatusCode>(st.error_code()), st.error_message());
}
}  // namespace

absl::StatusOr<std::string> KvHubService::UcxCall(uint32_t method, absl::string_view request) {
  Rpc rpc;
  switch (method) {
    case v1::UCX_CALL_GET: rpc = Rpc::kUcxGet; break;
    case v1::UCX_CALL_RELEASE: rpc = Rpc::kUcxRelease; break;
    default: return absl::UnimplementedError(absl::StrCat("unknown UCX call method ", method));
  }
  const absl::Time start = absl::Now();
  InflightScope scope(this);
  absl::StatusOr<std::string> out = absl::UnavailableError("kvhubd is shutting down; retry on another node");
  if (!stopping()) out = rpc == Rpc::kUcxGet ? UcxGet(request) : UcxRelease(request);
  metrics_->RecordRpc(rpc, absl::Now() - start, static_cast<int>(out.status().code()));
  return out;
}

absl::StatusOr<std::string> KvHubService::UcxGet(absl::string_view request) {
  thread_local v1::GetRequest req;  // reused: no allocation once warm
  req.Clear();
  if (!req.ParseFromArray(request.data(), static_cast<int>(request.size()))) {
    return absl::InvalidArgumentError("GetRequest does not parse");
  }
  if (req.inline_data()) {
    return absl::InvalidArgumentError("a Get called over UCX returns leases only (inline_data=false); "
                                      "fetch inline data over gRPC");
  }
  // As in Get: the per-block sub-messages live on a reused arena.
  google::protobuf::Arena& arena = ResponseArena();
  auto* response = google::protobuf::Arena::CreateMessage<v1::GetResponse>(&arena);
  const grpc::Status st = DoGet(req, response);
  absl::StatusOr<std::string> out = st.ok() ? absl::StatusOr<std::string>(response->SerializeAsString()) : FromGrpc(st);
  arena.Reset();
  return out;
}

absl::StatusOr<std::string> KvHubService::UcxRelease(absl::string_view request) {
  thread_local v1::ReleaseRequest req;
  thread_local v1::ReleaseResponse resp;
  req.Clear();
  resp.Clear();
  if (!req.ParseFromArray(request.data(), static_cast<int>(request.size()))) {
    return absl::InvalidArgumentError("ReleaseRequest does not parse");
  }
  const grpc::Status st = DoRelease(req, &resp);
  if (!st.ok()) return FromGrpc(st);
  return resp.SerializeAsString();
}

}  // namespace kvhub::cachesvc
