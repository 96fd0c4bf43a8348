#pragma once
// ShardSession: the Session stream that keeps one UCX connection alive on a shard
// (proto: SessionRequest). While it is open the shard keeps the connection; when
// it ends from this side (destruction, or this process dying and its gRPC
// connection breaking) the shard closes the connection and frees its slot. Over
// shared memory that is the only way a shard learns that a client is gone.
//
// Thread safety: Open and the destructor may run on any thread; `on_end` runs on a
// gRPC thread. Ownership: the stub's channel must outlive the session.

#include <cstdint>
#include <functional>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "kvhub/v1/kvhub.grpc.pb.h"

namespace kvhub {

class ShardSession {
 public:
  // Called once when the stream ends for any reason but this object's destruction
  // (the shard stopped or refused, the connection broke), with the status. Runs on
  // a gRPC thread: it must not block, take locks held around the session's
  // destruction, or destroy the session.
  using OnEnd = std::function<void(const absl::Status&)>;

  // Opens Session(conn_id) and waits (at most `timeout`) until the shard has
  // registered it. Errors: the shard's (NOT_FOUND: connection unknown; UNIMPLEMENTED:
  // a shard without sessions; UNAVAILABLE: stopping or unreachable), or
  // DEADLINE_EXCEEDED. `on_end` is not called for a session that failed to open.
  static absl::StatusOr<std::unique_ptr<ShardSession>> Open(v1::KvHub::Stub* stub, uint64_t conn_id,
                                                            absl::Duration timeout, OnEnd on_end);

  // Ends the stream (the shard then closes the connection) and waits until gRPC is
  // done with it; `on_end` is not called afterwards.
  ~ShardSession();
  ShardSession(const ShardSession&) = delete;
  ShardSession& operator=(const ShardSession&) = delete;

 private:
  class Reactor;
  explicit ShardSession(Reactor* r) : reactor_(r) {}
  Reactor* reactor_;  // owned; deleted by the destructor once gRPC is done
};

}  // namespace kvhub
