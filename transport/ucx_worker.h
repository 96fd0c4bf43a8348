#pragma once
// UcxWorker: one UCP worker, the thread that drives it, its endpoints and the
// protocols that move block bytes (docs/transport.md).
//
// Threading. Every UCP call on the worker happens on its own progress thread.
// Public methods hand work to that thread (a queue + ucp_worker_signal) and wait
// for it, so they may be called from any thread concurrently. With
// UcxProgressMode::kSleep the thread sleeps in epoll on ucp_worker_get_efd after
// ucp_worker_arm when there is nothing to progress: an idle worker uses no CPU.
//
// Roles. A worker is symmetric: it can serve registered regions (shard side:
// `served` regions answer active-message requests; peers with the packed rkeys
// reach them one-sidedly) and it can fetch from / write to peers (client side).
// Either side may also make small request/response calls (CallPeer) that the
// other side's CallHandler answers.
//
// Connection (the Connect RPC carries these bytes, see docs/transport.md):
//   client: address() ---------------------------------> shard: Accept(addr) -> conn
//   client: Connect({shard address(), ServedRegions(), conn}) -> PeerId
// `conn` (AcceptedConn) names the connection and carries its key, a random
// secret every request header repeats: a peer that reaches the worker's UCX port
// without having been handed the key cannot make it serve anything.
// The endpoint cache keys peers by worker address: connecting twice to the same
// address returns the same PeerId while the endpoint is healthy.
//
// Failure semantics. Endpoints use UCP_ERR_HANDLING_MODE_PEER: a peer that dies
// fails the transfers in flight to it (UNAVAILABLE) instead of hanging, and the
// peer is dropped from the cache (the next Connect makes a new endpoint). A batch
// that misses its deadline returns DEADLINE_EXCEEDED for its unfinished
// transfers; if UCX still had requests in flight on them, the peer's endpoint is
// force-closed first, so that when Execute returns UCX no longer touches any
// caller buffer. Execute never returns while UCX may still write a destination.

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include <ucp/api/ucp.h>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "transport/registration_cache.h"
#include "transport/ucx_config.h"
#include "transport/ucx_context.h"
#include "transport/ucx_memory.h"

namespace kvhub::transport {


// One registered region as a peer must know it to reach it.
struct RemoteRegionInfo {
  uint64_t base = 0;        // virtual address in the serving process
  uint64_t size = 0;
  std::string packed_rkey;  // ucp_rkey_pack bytes
};

// A connection as the serving worker's Accept() made it. Hand both fields to the
// client only over a channel that authenticates it: the key is what lets its
// requests be served.
struct AcceptedConn {
  uint64_t id = 0;   // addresses the server's replies; ordered (Options::first_conn_id)
  uint64_t key = 0;  // random, non-zero; requests naming `id` with another key are dropped
};
// "id:key" in decimal, and back (false on anything else): for handing a connection
// to another process, as tests and benches do.
std::string FormatAcceptedConn(const AcceptedConn& conn);
bool ParseAcceptedConn(absl::string_view text, AcceptedConn* conn);

// What a client needs to reach a serving worker.
struct PeerInfo {
  std::string worker_address;             // ucp_worker_get_address bytes
  std::vector<RemoteRegionInfo> regions;  // index = region id (BlockLocation.region)
  AcceptedConn conn;                      // from the server's Accept()
  // The regions were allocated by UCX (UcxContext::Allocate) in shared memory:
  // over posix/sysv lanes, RMA to them is one-sided (kAuto then picks RMA).
  bool one_sided_shm = false;
  // The peer runs on this host in this process's pid and IPC namespaces
  // (ConnectResponse.host_namespaces equals HostNamespaces()). Connect then first
  // attaches the shared-memory segments the region keys name
  // (transport/ucx_rkey_pin.h), and answers UNAVAILABLE if they are gone, instead
  // of UCX 1.13 crashing on them. False: the endpoint's lanes decide (posix and
  // sysv lanes vouch for their own kind of segment).
  bool same_namespaces = false;
};

using PeerId = uint64_t;

enum class TransferKind : uint8_t { kGet = 0, kPut = 1 };

// One block's bytes to move between a local buffer and a peer's region.
struct Transfer {
  TransferKind kind = TransferKind::kGet;
  UcxPath path = UcxPath::kAuto;  // kAuto: the peer's resolved path for `kind`
  uint32_t region = 0;
  uint64_t offset = 0;            // within the region
  uint64_t size = 0;
  void* local = nullptr;          // get: destination (size bytes); put: source (read only)
  // What entitles the caller to this range on the serving side (for kvhubd: the
  // lease id of a get, the reservation id of a put). Carried by active messages
  // and checked by the server's AccessHooks; one-sided RMA carries nothing.
  uint64_t grant = 0;
  // Get over active messages only (ignored on RMA): asks the server to end the
  // grant once UCX is done with the range (AccessHooks::end_grant; kvhubd
  // releases the lease), saving the caller a Release round trip. Whether the
  // transfer succeeded or not, the caller must treat the grant as gone.
  bool end_grant = false;
  // Get only, optional (not owned; must outlive Execute): a get copied from a
  // mapped segment (UcxWorker::Maps) stores XXH3-64 of its bytes here,
  // computed as they land, and sets `computed`. Untouched on every other path.
  struct CopyChecksum {
    bool computed = false;
    uint64_t xxh3_64 = 0;
  };
  CopyChecksum* checksum = nullptr;
};

// Counters since Create. Bytes count completed, successful transfers only.
struct UcxWorkerStats {
  uint64_t get_bytes_rma = 0, get_bytes_am = 0;  // this worker fetched from peers
  // Of get_bytes_rma / put_bytes_rma: copied by the calling thread from / to a
  // peer's mapped segment (UcxConfig::mapped_gets / mapped_puts).
  uint64_t get_bytes_mapped = 0, put_bytes_mapped = 0;
  uint64_t put_bytes_rma = 0, put_bytes_am = 0;  // this worker wrote to peers
  // Serving side (AM requests from peers). The two "get" counters differ in WHEN
  // they count, and only the first is synchronous with the peer:
  //  * served_get_bytes: bytes of valid get requests handed to UCX, counted on the
  //    progress thread *before* the response is sent. A peer whose Execute returned
  //    OK therefore always finds its bytes counted here (the response it received
  //    was sent after the count). A send that then fails is also in served_errors.
  //  * served_get_bytes_completed: bytes of responses UCX reported complete. On
  //    rendezvous transports (tcp zcopy, shared-memory CMA pulled by the peer) the
  //    server learns of completion only after the peer has its bytes, so this lags
  //    and must be polled (bounded wait), never compared right after Execute.
  //  * served_put_bytes: bytes written into served regions, counted before the
  //    put's response is sent (synchronous with the peer, like served_get_bytes).
  // RMA transfers (ucp_get/ucp_put against the rkeys) are not counted on the
  // serving side: with one-sided RDMA the server never sees them; the peer's
  // get_bytes_rma / put_bytes_rma count them.
  uint64_t served_get_bytes = 0, served_get_bytes_completed = 0, served_put_bytes = 0;
  uint64_t served_errors = 0;                            // AM requests refused or failed
  // Of served_errors: requests dropped because no open connection has the id and
  // key their header names (a stale client, or a peer never handed the key).
  uint64_t unknown_conn_requests = 0;
  // Of served_errors: AM gets and rendezvous puts refused (RESOURCE_EXHAUSTED)
  // because their connection had Options::max_transfers_per_conn in flight.
  uint64_t busy_conn_requests = 0;
  // Calls (CallPeer): answered here for peers (handler run, reply sent or not),
  // and made from here, by outcome.
  uint64_t served_calls = 0, calls_ok = 0, calls_failed = 0;
  // Calls made from here that the worker still holds: awaiting their answer or
  // their send's completion (a finished call is forgotten once both are in).
  uint64_t calls_held = 0;
  uint64_t transfers_ok = 0, transfers_failed = 0, deadline_exceeded = 0;
  uint64_t peer_failures = 0;     // endpoints that reported an error
  uint64_t forced_closes = 0;     // endpoints closed to cancel timed-out transfers
  uint64_t wakeups = 0;           // returns from epoll (kSleep mode)
  uint64_t arm_busy = 0;          // ucp_worker_arm said events were pending: progressed again
  uint64_t connected_peers = 0, accepted_peers = 0;  // live now
};

class UcxWorker {
 public:
  // Server-side checks of active-message requests, both called on the progress
  // thread. `begin` runs before a request touches a served region (after the
  // region range check): a non-OK status refuses it (the peer gets that error);
  // an OK value is a hold that keeps the memory valid, and `end` receives it
  // exactly once when UCX no longer touches the range (send or receive finished
  // or failed, the peer's connection closed, or the request refused later). Holds of requests still in flight when the worker
  // is destroyed are ended by the destructor. Optional: without hooks any range
  // inside a served region is accepted.
  struct AccessHooks {
    std::function<absl::StatusOr<uint64_t>(TransferKind kind, uint64_t grant, uint32_t region,
                                           uint64_t offset, uint64_t size)>
        begin;
    std::function<void(TransferKind kind, uint64_t hold)> end;
    // Optional: called right after `end` for a get whose request asked for it
    // (Transfer::end_grant), with the request's grant.
    std::function<void(uint64_t grant)> end_grant;
  };

  // Server side: answers a peer's CallPeer(method, request) with the response
  // bytes or an error (which the caller receives). Runs on the progress thread,
  // which serves nothing else meanwhile: keep it short, and never call this
  // worker's blocking methods from it. Request and response are at most
  // kMaxUcxCallBytes (a larger response is replaced by INTERNAL).
  using CallHandler = std::function<absl::StatusOr<std::string>(uint32_t method, absl::string_view request)>;

  struct Options {
    std::string name = "kvhub";
    // Regions this worker serves, index = region id. Not owned; must outlive the worker.
    std::vector<const UcxMemory*> served;
    AccessHooks access;  // optional; begin and end are set together or not at all
    CallHandler calls;   // optional; without it every call is answered UNIMPLEMENTED
    // Accept numbers connections from here up. A server that replaces a worker
    // starts the new one past the old one's ids, so a stale id never names a
    // new connection. Must be > 0.
    uint64_t first_conn_id = 1;
    // Transfers one accepted connection may have in flight on this worker: get
    // responses carrying bytes and rendezvous put receives not yet completed by
    // UCX (each holds its served memory, AccessHooks, until then). A request past
    // it is answered RESOURCE_EXHAUSTED at once, touching nothing: a peer that
    // sends requests and never takes the bytes could otherwise pin memory without
    // bound, beyond its leases. 0: no limit. The default is above what one
    // client puts in flight: kvhub's client reads at most max_keys_per_rpc (1024)
    // per batch, (concurrency + 1) batches at once (9216 by default).
    uint32_t max_transfers_per_conn = 16384;
  };

  // `context` must outlive the worker. Errors from UCX as UNAVAILABLE/INTERNAL.
  static absl::StatusOr<std::unique_ptr<UcxWorker>> Create(UcxContext* context, Options options);
  // Fails whatever is in flight, closes every endpoint, stops the thread.
  ~UcxWorker();
  UcxWorker(const UcxWorker&) = delete;
  UcxWorker& operator=(const UcxWorker&) = delete;

  // This worker's address (opaque bytes) for peers to connect to.
  const std::string& address() const { return address_; }
  // The served regions as peers must see them (base, size, packed rkey).
  std::vector<RemoteRegionInfo> ServedRegions() const;

  // Server side: makes an endpoint back to a client for AM replies; returns the
  // connection (id and key) the client passes in PeerInfo. Requests whose header
  // names an accepted id with another key are dropped unanswered (counted in
  // served_errors, logged at most once a second): the sender's deadline fails
  // them. INVALID_ARGUMENT for an empty address
  // or one of an unknown format version; UNAVAILABLE if UCX cannot reach it.
  // UCX trusts the address: some malformed ones crash the process inside
  // ucp_ep_create (UCX 1.13), and a well-formed one that points at a port where no
  // UCX listens can crash it later (garbage read as a UCX header). The address is
  // handed to UCX followed by zeros, so a malformed one reads the same bytes past
  // its end in every process; try untrusted ones in UcxAddressVetter first, and
  // still accept only addresses from trusted clients.
  // `owner` is an opaque tag the acceptor attaches (kvhubd: a digest of the caller's
  // credentials); CheckAccepted compares it.
  // INTERNAL when the kernel gives no randomness for the key (getrandom).
  // RESOURCE_EXHAUSTED when `max_accepted` connections are accepted already
  // (checked on the worker's thread, so concurrent Accepts cannot pass it together).
  absl::StatusOr<AcceptedConn> Accept(absl::string_view client_address, uint64_t owner = 0,
                                      uint64_t max_accepted = UINT64_MAX);
  // Closes an accepted connection. NOT_FOUND if unknown. With `flush_wait` > 0
  // the endpoint is closed in flush mode, which first completes its wire-up with
  // the client (UCX connects and exchanges wire-up messages with it) and delivers
  // what was sent; waits at most `flush_wait` for that: the close's outcome
  // (UNAVAILABLE and the like when the client cannot be reached), or
  // DEADLINE_EXCEEDED (the close goes on in the background). Without it the
  // endpoint is closed at once (forced, where UCX allows that).
  absl::Status CloseAccepted(uint64_t conn_id, absl::Duration flush_wait = absl::ZeroDuration());
  // OK when `conn_id` is an accepted connection not closed or failed, accepted with
  // this `owner`; NOT_FOUND otherwise (the same answer for a connection of another
  // owner, so ids cannot be probed).
  absl::Status CheckAccepted(uint64_t conn_id, uint64_t owner = 0);
  // The accepted connections open now, with the time each was accepted (on
  // Clock::Real(), the monotonic clock: compare with Clock::Real()->Now()).
  std::vector<std::pair<uint64_t, absl::Time>> AcceptedConnections();

  // Client side: endpoint to a serving worker and its unpacked rkeys. Returns the
  // cached peer when one with the same address is healthy (its region table and
  // conn id are replaced by `peer`'s). UNAVAILABLE when no transport reaches it.
  absl::StatusOr<PeerId> Connect(const PeerInfo& peer);
  // Drops the peer; in-flight transfers and calls to it fail with `why`
  // (CANCELLED by default). NOT_FOUND if unknown.
  absl::Status Disconnect(PeerId peer, absl::Status why = absl::CancelledError("ucx peer disconnected"));
  // Drops the peer like Disconnect, but closes its endpoint in flush mode: what
  // was sent arrives and the serving side learns of the close. Waits at most
  // `wait` for that; DEADLINE_EXCEEDED then (the close goes on in the
  // background). NOT_FOUND if unknown.
  absl::Status Close(PeerId peer, absl::Duration wait);

  // Transport names UCX chose for the peer's lanes, e.g. "tcp" or "cma,posix".
  absl::StatusOr<std::string> PeerTransports(PeerId peer);
  // The protocol kAuto resolves to for this peer and direction.
  absl::StatusOr<UcxPath> ResolvedPath(PeerId peer, TransferKind kind);

  // True when transfers of `kind` with `peer` are copied by the calling thread
  // from / to its mapped shared-memory segments (UcxConfig::mapped_gets,
  // mapped_puts). Thread-safe, no hop to the progress thread. False for an
  // unknown peer.
  bool Maps(PeerId peer, TransferKind kind);

  // Moves every transfer; results[i] gets transfer i's outcome: OK,
  // INVALID_ARGUMENT (out of the region), UNAVAILABLE (peer failed), the
  // server's refusal, or DEADLINE_EXCEEDED. The returned status is non-OK only
  // when the spans differ in size (nothing attempted); an unknown or gone peer
  // fails each transfer with UNAVAILABLE and returns OK.
  // `timeout` 0 = config().op_timeout. Blocks until every transfer finished.
  // A batch of gets, or of puts (path kAuto or kRma), to a peer that Maps() that
  // direction is copied by the calling thread without waking the progress
  // thread; a copy is not started past the deadline, and one that ends past it
  // fails with DEADLINE_EXCEEDED. A disconnect or peer failure waits for such
  // copies to finish before the mapping goes away.
  absl::Status Execute(PeerId peer, std::span<const Transfer> transfers, std::span<absl::Status> results,
                       absl::Duration timeout = absl::ZeroDuration());

  // Client side: a small request/response exchange with the serving worker of
  // `peer` over active messages (kvhubd: a UCX read's lease Get and Release), cheaper than a gRPC
  // round trip. Both sides' messages travel eagerly (never rendezvous).
  // Returns the peer handler's response or its error; UNIMPLEMENTED when the
  // peer has no handler; INVALID_ARGUMENT for a request over kMaxUcxCallBytes;
  // UNAVAILABLE when the peer is unknown or fails; DEADLINE_EXCEEDED after
  // `timeout` (0 = config().op_timeout), in which case the handler may still
  // run on the peer (its answer is then dropped here). Thread-safe; blocks;
  // never call it from a CallHandler or AccessHooks (the progress thread).
  // `request` is taken over (move a serialized message in: no copy).
  absl::StatusOr<std::string> CallPeer(PeerId peer, uint32_t method, std::string request,
                                       absl::Duration timeout = absl::ZeroDuration());

  // Client buffers registered once (see RegistrationCache).
  RegistrationCache& registrations() { return registrations_; }
  UcxWorkerStats Stats() const;
  const UcxConfig& config() const { return context_->config(); }

  struct Impl;  // progress-thread state; defined in ucx_worker.cc
  struct CallOp;  // a CallPeer in flight; defined in ucx_worker.cc
  struct MappedPeer;  // a peer's regions as mapped here; defined in ucx_worker.cc

 private:
  // The peer's mapping, or null. Thread-safe.
  std::shared_ptr<MappedPeer> FindMapped(PeerId peer);
  // Copies a batch from / to `m`; false (nothing done) when `m` was unmapped
  // meanwhile or the batch is not all of one direction `m` maps.
  // `deadline` is a time of Clock::Real() (monotonic).
  // A copy that ends past `deadline` fails with DEADLINE_EXCEEDED (as a
  // transfer finishing late does on the progress thread).
  bool ExecuteMapped(MappedPeer* m, std::span<const Transfer> transfers, std::span<absl::Status> results,
                     absl::Time deadline);
  // Progress thread: publishes / withdraws a peer's mapping. Withdraw waits for
  // copies in flight on it, so the rkeys may be destroyed after it returns.
  void PublishMapped(PeerId peer, std::shared_ptr<MappedPeer> m);
  void WithdrawMapped(PeerId peer);
  UcxWorker(UcxContext* context, Options options);
  // Runs `fn` on the progress thread and waits for it (inline when already there).
  void Call(const std::function<void()>& fn);
  void Loop();
  bool HasTasks();

  UcxContext* const context_;
  const Options options_;
  RegistrationCache registrations_;
  ucp_worker_h worker_ = nullptr;
  int efd_ = -1;
  std::string address_;
  std::unique_ptr<Impl> impl_;  // touched only on the progress thread
  std::thread thread_;
  std::atomic<std::thread::id> thread_id_{};

  absl::Mutex task_mu_;
  std::vector<std::function<void()>> tasks_ ABSL_GUARDED_BY(task_mu_);
  std::atomic<bool> has_tasks_{false};
  std::atomic<bool> stop_{false};

  absl::Mutex mapped_mu_;
  absl::flat_hash_map<PeerId, std::shared_ptr<MappedPeer>> mapped_ ABSL_GUARDED_BY(mapped_mu_);
};

}  // namespace kvhub::transport
