// KvHubService: the Connect RPC of the UCX data plane (cachesvc/ucx_server.h).
// Kept apart from kvhub_service.cc: it is the only handler that depends on UCX.

#include "cachesvc/kvhub_service.h"

namespace kvhub::cachesvc {

grpc::Status KvHubService::DoConnect(const v1::ConnectRequest& req, v1::ConnectResponse* resp) {
  if (ucx_ == nullptr) {
    return grpc::Status(grpc::StatusCode::FAILED_PRECONDITION, "ucx is not set up on this shard; use gRPC");
  }
  return ucx_->Connect(req, resp);
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

}  // namespace kvhub::cachesvc
