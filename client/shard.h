#pragma once
// One cluster member as seen by the client: a few gRPC channels (separate TCP
// connections, used round-robin) and every kvhub.v1 call with its per-attempt
// deadline and UNAVAILABLE-only retry (client/retry.h). Thread-safe.

#include <atomic>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/time/time.h"
#include "client/channel_security.h"
#include "client/client_config.h"
#include "client/retry.h"
#include "grpcpp/channel.h"
#include "grpcpp/client_context.h"
#include "grpcpp/impl/rpc_method.h"
#include "grpcpp/support/byte_buffer.h"
#include "kvhub/v1/kvhub.grpc.pb.h"

namespace kvhub {

class Shard {
 public:
  // One connection: a channel, its generated stub, and raw-bytes methods for
  // the calls whose payload bypasses the generated classes (client/wire.h).
  struct Conn {
    std::shared_ptr<grpc::Channel> channel;
    std::unique_ptr<v1::KvHub::Stub> stub;
    grpc::internal::RpcMethod put;
    grpc::internal::RpcMethod put_start;
    grpc::internal::RpcMethod put_data;
    grpc::internal::RpcMethod get;
    grpc::internal::RpcMethod get_stream;
    explicit Conn(std::shared_ptr<grpc::Channel> ch);
  };

  // Channels are made by `security` (TLS, token), used only during construction.
  Shard(std::string address, const ClientConfig& config,
        const ChannelSecurity& security = ChannelSecurity::Plaintext());
  Shard(const Shard&) = delete;
  Shard& operator=(const Shard&) = delete;

  const std::string& address() const { return address_; }
  const RetryPolicy& retry() const { return retry_; }
  absl::Duration control_deadline() const { return control_deadline_; }
  absl::Duration data_deadline() const { return data_deadline_; }

  // The next connection, round-robin.
  Conn& NextConn();
  // A connection that is up now (the first), else NextConn(): for a long-lived
  // stream opened right after a call succeeded, while other channels may still be
  // reconnecting.
  Conn& ReadyConn();

  // Between the attempts of a call that failed UNAVAILABLE (RetryPolicy::wait_for):
  // waits for `wait` or until every channel that was not connected is connected
  // again. gRPC completes a reconnect only while some thread polls its channels;
  // calls to a channel in backoff fail at once without polling, so after a shard
  // restart its channels would otherwise stay down until gRPC's 5 s backup poller
  // ran. Channels connected from the start (e.g. a draining shard): sleeps.
  void WaitBeforeRetry(absl::Duration wait);

  // Control calls: control deadline, retried on UNAVAILABLE.
  absl::Status Lookup(const v1::LookupRequest& req, v1::LookupResponse* resp);
  // `attempts` (optional) gets how many times the call was sent: above 1, an earlier
  // attempt may have been carried out by the shard with its reply lost (PutCommit and
  // PutStart are not idempotent; the caller resolves what that leaves ambiguous).
  absl::Status PutCommit(const v1::PutCommitRequest& req, v1::PutCommitResponse* resp, int* attempts = nullptr);
  absl::Status PutAbort(const v1::PutAbortRequest& req, v1::PutAbortResponse* resp);
  absl::Status Delete(const v1::DeleteRequest& req, v1::DeleteResponse* resp);
  absl::Status Pin(const v1::PinRequest& req, v1::PinResponse* resp);
  absl::Status Stats(v1::StatsResponse* resp);
  absl::Status Health(v1::HealthResponse* resp);
  absl::Status Release(const v1::ReleaseRequest& req, v1::ReleaseResponse* resp);
  // UCX handshake (client/ucx_data_plane.h).
  absl::Status Connect(const v1::ConnectRequest& req, v1::ConnectResponse* resp);
  // PutStart with a request encoded by EncodePutRequest (no data).
  absl::Status PutStartRaw(const grpc::ByteBuffer& req, v1::PutStartResponse* resp, int* attempts = nullptr);

  // Data calls: data deadline, retried on UNAVAILABLE.
  // Inline Put with a request encoded by EncodePutRequest.
  absl::Status PutRaw(const grpc::ByteBuffer& req, v1::PutResponse* resp);
  // Inline Get; the response stays raw for DecodeGetResponse.
  absl::Status GetRaw(const v1::GetRequest& req, grpc::ByteBuffer* resp);

  // Sets a deadline `d` from now on ctx.
  static void SetDeadline(grpc::ClientContext* ctx, absl::Duration d);

 private:
  template <typename Req, typename Resp>
  absl::Status Unary(const char* what, absl::Duration deadline,
                     grpc::Status (v1::KvHub::Stub::*fn)(grpc::ClientContext*, const Req&, Resp*),
                     const Req& req, Resp* resp, int* attempts = nullptr);
  absl::Status RawUnary(const char* what, absl::Duration deadline,
                        grpc::internal::RpcMethod Conn::*method, const grpc::ByteBuffer& req,
                        grpc::ByteBuffer* resp, int* attempts = nullptr);

  const std::string address_;
  const RetryPolicy retry_;
  const absl::Duration control_deadline_;
  const absl::Duration data_deadline_;
  std::vector<std::unique_ptr<Conn>> conns_;
  std::atomic<uint64_t> next_{0};
};

}  // namespace kvhub
