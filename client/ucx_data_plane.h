#pragma once
// UcxDataPlane: block bytes over UCX (RDMA, tcp, or shared memory when asked
// for), with gRPC per shard where UCX is not available (docs/transport.md).
//
// Per shard, on first use: the Connect RPC exchanges UCX worker addresses and the
// shard's packed rkeys; then
//   WriteReserved: UCX put (RMA or active message, transport/ucx_worker.h) of each
//     block into its reservation's BlockLocation, finished before the reservation
//     expires; the caller's PutCommit then verifies the checksum on the shard.
//   ReadBlocks: Get(inline_data=false, lease_ms=ucx_lease) -> leases + locations
//     (the Get is called over the UCX connection itself when the shard answers
//     calls, ConnectResponse.calls and ClientConfig::ucx_calls; over gRPC else) ->
//     UCX get into the caller's buffers, bounded by the lease -> XXH3-64 verify ->
//     Release. A block whose lease could have ended before its bytes were in
//     place (transfer past the bound, or Release says the lease expired) is a
//     failed read, never data: the shard reuses memory only after a lease ends.
//     Reads copied from the shard's mapped shared memory (UcxWorker::Maps)
//     are hashed as they are copied, each copy is checked against the lease
//     bound when it ends, and their leases are released in the background
//     (DeferredReleases, called over UCX too when the shard answers calls), off
//     the caller's path.
//
// Fallback (transport=auto): a shard that answers Connect with UNIMPLEMENTED (old
// shard) or FAILED_PRECONDITION (UCX off there, or it cannot reach us), or that
// UCX cannot reach (no common transport), or a client whose own UCX cannot start,
// uses gRPC (GrpcDataPlane) from then on. Never silently: the decision is logged
// once per shard ("kvhub client: shard A uses ucx via tcp" / "... uses grpc:
// <why>") and TransportStats() names it. A Connect that fails transiently
// (UNAVAILABLE, DEADLINE_EXCEEDED: shard down) is retried on the next call.
// transport=ucx: no fallback; data calls to a shard without UCX fail with the reason.
// A UCX peer failure (shard died) drops the connection; the next call reconnects.
// A UCX call to a shard that times out over shared memory makes the client check
// its own worker (transport/ucx_ping.h): a shard killed while writing a reply into
// the worker's shared-memory queue leaves it stuck, and the worker then receives
// nothing over shared memory. A worker that answers no ping is replaced, and every
// shard is connected again on its next call (logged as a warning).
//
// Thread safety: every method may be called concurrently.

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "client/client_config.h"
#include "client/data_plane.h"
#include "client/deferred_releases.h"
#include "client/grpc_data_plane.h"
#include "kvhub/v1/kvhub.pb.h"

namespace kvhub {

namespace transport {
class UcxContext;
class UcxWorker;
struct Transfer;
}  // namespace transport

class UcxDataPlane final : public DataPlane {
 public:
  // Test seams (fault injection); empty in production.
  struct Hooks {
    // Runs in ReadBlocks after the leases were granted, before any UCX transfer
    // (a reader that stalls).
    std::function<void()> after_lease;
    // Sees (and may change) every batch of transfers right before UCX runs it,
    // reads and writes alike (a misbehaving or stale client).
    std::function<void(std::span<transport::Transfer>)> before_transfers;
    // Told the address of each UCX worker the client creates (the first, and
    // replacements): a test can reach the worker from outside.
    std::function<void(absl::string_view worker_address)> on_worker;
  };

  // config.transport must be kAuto or kUcx. UCX itself starts lazily (first use).
  explicit UcxDataPlane(const ClientConfig& config, Hooks hooks = {});
  ~UcxDataPlane() override;

  absl::string_view name() const override { return "ucx"; }
  absl::Status WriteReserved(Shard& shard, std::span<const BlockWrite> writes) override;
  absl::Status ReadBlocks(Shard& shard, absl::string_view ns, std::span<BlockRead> reads) override;
  std::vector<ShardTransportStats> TransportStats() const override;
  void RecordInlinePut(const Shard& shard, uint64_t bytes) override;
  bool WantsAllPutsReserved(Shard& shard) override;

 private:
  struct Peer;  // one shard's connection state and counters

  // The shard's state, connecting first when needed. Never null.
  Peer* PeerFor(Shard& shard);
  // Connects `p` (held under p->mu) if it is not decided yet.
  void EnsureConnected(Shard& shard, Peer* p);
  // How one call reaches `shard`: over UCX (peer_id), else over gRPC, unless
  // transport=ucx forbids that (`refused` then says why).
  struct Route {
    Peer* peer = nullptr;
    bool ucx = false;
    std::shared_ptr<transport::UcxWorker> worker;  // of the connection (when ucx)
    uint64_t peer_id = 0;
    bool shm = false;      // UCX reaches the shard over shared memory
    bool am_gets = false;  // see Peer::am_gets
    bool calls = false;    // see Peer::calls
    uint64_t incarnation = 0;  // the shard process connected to (ConnectResponse.incarnation; 0: unknown)
    absl::Status refused;
  };
  Route RouteFor(Shard& shard);
  // Creates the UCX context and worker once; the error when UCX cannot start.
  absl::Status EnsureWorker();
  // True when EnsureWorker's error is auto mode choosing gRPC (tcp only here).
  bool WorkerByDesign();
  // The worker new connections use (null before EnsureWorker succeeded).
  std::shared_ptr<transport::UcxWorker> CurrentWorker();
  absl::StatusOr<std::unique_ptr<transport::UcxWorker>> NewWorker();
  // A UCX call or active-message read over shared memory timed out on `w`: if `w`
  // answers no ping, it is replaced (connections move to the new one on their next
  // call). One check at a time, at most one a second; a caller that finds one
  // running returns at once.
  void CheckWorker(const std::shared_ptr<transport::UcxWorker>& w);

  absl::Status ReadUcx(Shard& shard, Peer* p, const Route& route, absl::string_view ns, std::span<BlockRead> reads);
  absl::Status WriteUcx(Shard& shard, Peer* p, const Route& route, std::span<const BlockWrite> writes);
  // The UCX connection `peer_id` on `worker` is no use (UCX reported the peer failed, or the
  // shard restarted behind it: `why`): reconnect on the next call (unless that
  // happened already).
  void ForgetPeer(Peer* p, const transport::UcxWorker* worker, uint64_t peer_id, absl::string_view why);
  // Under p->mu, p connected over UCX: ends its session and endpoint; p->state
  // becomes kNew (the next call connects again).
  void DropConnection(Peer* p);
  // True when `incarnation` (from a PutStart or Get response) names another shard
  // process than `route`'s connection; 0 on either side is unknown, not a mismatch.
  static bool OtherProcess(const Route& route, uint64_t incarnation) {
    return incarnation != 0 && route.incarnation != 0 && incarnation != route.incarnation;
  }
  // After OtherProcess: drops the stale connection and connects again. The new route
  // (which may be gRPC: auto's fallback, or refused), or UNAVAILABLE when UCX reached
  // yet another process than `incarnation`.
  absl::StatusOr<Route> Reconnect(Shard& shard, const Route& stale, uint64_t incarnation);
  // DeferredReleases' sender: over the UCX connection when the shard answers
  // calls, else the Release RPC.
  // `retried` (optional): set when the UCX call failed in transit and gRPC answered
  // (the shard may have run both: a NOT_FOUND item then proves nothing).
  absl::Status ReleaseLeases(Shard& shard, const v1::ReleaseRequest& req, v1::ReleaseResponse* resp,
                             bool* retried = nullptr);
  // `req` called as `method` over the UCX connection to `peer_id` on `worker`, its
  // answer parsed into `resp`; errors are CallPeer's, named "<what> <address> over
  // ucx: ...". `shm`: the connection runs over shared memory (a timeout there
  // makes the client check its worker).
  absl::Status CallShard(Shard& shard, const std::shared_ptr<transport::UcxWorker>& worker, uint64_t peer_id,
                         bool shm, v1::UcxCall method, absl::string_view what, const google::protobuf::Message& req,
                         google::protobuf::Message* resp);

  const ClientConfig config_;
  const Hooks hooks_;
  GrpcDataPlane grpc_;
  std::unique_ptr<DeferredReleases> releases_;  // leases of mapped reads

  mutable absl::Mutex peers_mu_;
  absl::flat_hash_map<const Shard*, std::unique_ptr<Peer>> peers_ ABSL_GUARDED_BY(peers_mu_);

  absl::Mutex worker_mu_;
  bool worker_tried_ ABSL_GUARDED_BY(worker_mu_) = false;
  absl::Status worker_status_ ABSL_GUARDED_BY(worker_mu_);
  // worker_status_ is auto's choice, not a failure: this client's UCX has only tcp.
  bool worker_by_design_ ABSL_GUARDED_BY(worker_mu_) = false;
  std::unique_ptr<transport::UcxContext> context_;  // set once under worker_mu_, then read-only
  // Replaced by CheckWorker; connections hold the one they were made on.
  std::shared_ptr<transport::UcxWorker> worker_ ABSL_GUARDED_BY(worker_mu_);
  uint64_t worker_resets_ ABSL_GUARDED_BY(worker_mu_) = 0;
  absl::Mutex check_mu_;
  bool checking_ ABSL_GUARDED_BY(check_mu_) = false;  // one CheckWorker at a time
  absl::Time last_check_ ABSL_GUARDED_BY(check_mu_) = absl::InfinitePast();
  // A shard whose UCX session fails to open this many times in a row is served over
  // gRPC (auto) until ucx_retry_interval.
  static constexpr int kSessionFailuresBeforeFallback = 5;
};

}  // namespace kvhub
