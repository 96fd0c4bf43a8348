#pragma once
// UcxServer: kvhubd's side of the UCX data plane (docs/transport.md).
//
// At start it registers every host region of the BlockStore with UCX once
// (ucp_mem_map + packed rkey), or with shared memory has UCX allocate them, and
// runs one UcxWorker that serves them: clients reach the regions one-sidedly
// (RMA) or by active messages the worker answers.
// The Connect RPC hands a client the worker address and the packed rkeys
// (rkey_id == region index == BlockLocation.region) and accepts an endpoint back to
// the client for active-message replies.
//
// Never fails to construct: when UCX is disabled by config, was not built, or
// cannot initialize, the object is "off", records why (status_text()), and Connect
// answers FAILED_PRECONDITION with that reason; kvhubd then serves gRPC only.
//
// What the shard can and cannot check: an active-message request (the path on
// tcp and shared memory) must name the live lease (get) or reservation (put)
// whose block covers its range; the store holds that memory until UCX is done
// with it (BlockStore::BeginTransfer), so a late or stray transfer is refused
// and never touches another block. One-sided RDMA (verbs RMA) cannot be checked
// by the shard at all: there the store's contract (leased and reserved memory is
// never reused while the lease/reservation lives) and the clients' expiry bounds
// and checksums are what protect data, and any client that completed Connect can
// reach the registered regions; run UCX only on trusted networks
// (docs/transport.md "Security").
//
// A stuck shared-memory queue. Over shared memory (posix/sysv), UCX 1.13 has
// every sender write its message into a slot of the receiving worker's one
// queue; a client killed between reserving a slot and finishing it leaves the
// queue stopped there, and the worker receives nothing over shared memory again.
// With shared memory in ucx_tls, a probe (a second worker in this process) pings
// the serving worker every ucx_probe_ms and right after a connection closes;
// when two pings in a row go unanswered, Serve's worker is replaced by a new one
// (new address and queue, connection ids past the old ones), every connection of
// the old one ends (the reset handler ends their Sessions, and clients Connect
// again), and worker_resets() counts it. Leases and reservations live in the
// store and are untouched; transfers in flight on the old worker fail.
//
// Thread safety: Connect and the accessors may be called concurrently.
// Ownership: see Create (the store must outlive Serve..Stop; with shared-memory
// regions the UcxServer owns the store's memory and must outlive the store).

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "cachesvc/kvhubd_config.h"
#include "grpcpp/support/status.h"
#include "kvhub/v1/kvhub.pb.h"
#include "storage/block_store.h"

namespace kvhub::transport {
class UcxWorker;
}  // namespace kvhub::transport

namespace kvhub::cachesvc {

// Limits of the Connect RPC (proto/kvhub/v1/kvhub.proto).
inline constexpr size_t kMaxUcxWorkerAddressBytes = 8192;
inline constexpr size_t kMaxUcxClientNameBytes = 256;
inline constexpr uint64_t kMaxUcxConnections = 4096;

class UcxServer {
 public:
  // Starting takes three steps, because with shared memory UCX must allocate the
  // store's regions before the store exists:
  //   auto ucx = UcxServer::Create(config);                       // UCX context (or off)
  //   store = BlockStore::Create(config.store, clock, ucx->RegionProvider());
  //   ucx->Serve(store.get());                                    // worker over the regions
  // and stopping two: Stop() before the store is destroyed (the worker calls
  // into the store), the UcxServer itself after it (it may own the regions'
  // memory). Each step logs what it did: "ucx: serving N regions via ..." or
  // "ucx: off: <why>; gRPC only".
  // The check Connect runs on client addresses (transport/ucx_address_vetter.h),
  // opaque here so that code built without UCX can hold one.
  class AddressVetter;
  struct AddressVetterDeleter {
    void operator()(AddressVetter* v) const;
  };
  using AddressVetterPtr = std::unique_ptr<AddressVetter, AddressVetterDeleter>;
  // `vetter` (from StartAddressVetter; may be null) checks every client address
  // Connect receives before the worker uses it.
  static std::unique_ptr<UcxServer> Create(const KvhubdConfig& config, AddressVetterPtr vetter = nullptr);
  // The address vetter Connect should use, or null when UCX is off, kvhubd was
  // built without UCX, or ucx_vet_addresses is false. It forks a process: call it
  // while this process is single-threaded and has not initialized UCX (kvhubd: in
  // main, before KvhubdServer::Start).
  static absl::StatusOr<AddressVetterPtr> StartAddressVetter(const KvhubdConfig& config);
  // With shared memory in ucx_tls and ucx_shm_regions: a provider that has UCX
  // allocate the regions (owned by this object), else nullptr (the store maps its
  // own). If the provider fails, retry BlockStore::Create without it.
  storage::RegionProvider RegionProvider();
  // Answers a client's call over UCX (v1::UcxCall methods; runs on the worker's
  // progress thread): KvHubService::UcxCall.
  using CallHandler = std::function<absl::StatusOr<std::string>(uint32_t method, absl::string_view request)>;
  // Registers the store's regions (unless UCX allocated them) and starts the
  // worker; on failure logs why and turns off. `store` must stay alive until Stop,
  // and so must what `calls` uses (optional: without it Connect says the shard
  // answers no calls, and clients send every RPC over gRPC).
  // Runs on the probe's thread after the worker was replaced: connections with
  // ids below `first_conn_id` (the old worker's) are gone; their Sessions must end.
  using ResetHandler = std::function<void(uint64_t first_conn_id)>;
  // `on_reset` is optional.
  void Serve(storage::BlockStore* store, CallHandler calls = nullptr, ResetHandler on_reset = nullptr);
  // Stops the worker (transfers in flight fail) and drops the registrations of
  // regions the store mapped itself; idempotent.
  void Stop();
  ~UcxServer();
  UcxServer(const UcxServer&) = delete;
  UcxServer& operator=(const UcxServer&) = delete;

  bool serving() const;
  // Whether a client's Connect can succeed now: nullopt when UCX is off by
  // design (ucx_enabled=false, or kvhubd built without UCX); false when it is
  // enabled but cannot serve (failed to start, stopped, or the address vetter is
  // gone: every Connect is refused and clients use gRPC until a restart); true
  // otherwise. The gauge kvhub_ucx_accepting and its alert show it. Never waits.
  std::optional<bool> accepting() const;
  // "serving via tcp ..." or the reason UCX is off.
  const std::string& status_text() const { return status_text_; }

  // The Connect RPC. Validates the request (INVALID_ARGUMENT, also for an address
  // the vetter refused), then FAILED_PRECONDITION when off, when the vetter is gone,
  // or when the client's address is not reachable (no common transport),
  // RESOURCE_EXHAUSTED beyond kMaxUcxConnections.
  // `owner` tags the connection with its caller (a digest of the credentials): only
  // a Session of the same owner may watch it (CheckLive). `gave_up` (optional) is
  // asked once the address is vetted, which can take seconds while other callers'
  // probes run: when it says the caller cancelled or ran past its deadline, no
  // connection is made and Connect answers CANCELLED.
  grpc::Status Connect(const v1::ConnectRequest& req, v1::ConnectResponse* resp, uint64_t owner = 0,
                       const std::function<bool()>& gave_up = nullptr);

  // Closes connection `conn_id` (its Session ended): transfers in flight on it
  // fail and its slot is free. NOT_FOUND if unknown (closed already, never made,
  // or UCX is off / stopped). With the probe on, it pings the worker at once
  // (the client may have died mid-send).
  absl::Status Close(uint64_t conn_id);
  // OK when connection `conn_id` is live and was made by `owner`; NOT_FOUND
  // otherwise (also for another owner's: ids cannot be probed by other callers).
  absl::Status CheckLive(uint64_t conn_id, uint64_t owner = 0);
  // Closes the clients' connections accepted more than `grace` ago that
  // `watched` says no Session watches (a client that died or gave up between
  // Connect and its Session); returns how many. The probe's own is left alone.
  size_t CloseUnwatched(const std::function<bool(uint64_t conn_id)>& watched, absl::Duration grace);
  // The ids of the connections the serving worker holds now (empty when off or
  // stopped): one round trip to the worker, however many there are.
  std::vector<uint64_t> LiveConnectionIds();
  // Live UCX connections of clients now (0 when off or stopped; the probe's own
  // is not counted).
  uint64_t connections() const;
  // Times the probe found the worker deaf and replaced it.
  uint64_t worker_resets() const;
  // Client addresses the vetter refused because they crashed or hung a probe process.
  uint64_t refused_addresses() const;
  // Client addresses the vetter refused because a probe process could not connect to
  // them (a network mismatch; no harm to the shard).
  uint64_t unreachable_addresses() const;
  // UCX requests dropped because no open connection has the id and key their
  // header names (a stale client, or a peer never handed the key).
  uint64_t unknown_conn_requests() const;
  // UCX requests refused because their connection had UcxWorker::Options::
  // max_transfers_per_conn transfers in flight (a peer not taking its answers).
  uint64_t busy_conn_requests() const;

  // Block bytes the worker served by active messages (0 when off).
  uint64_t served_get_bytes() const;
  uint64_t served_put_bytes() const;

 private:
  struct State;  // UCX objects; absent when off
  UcxServer() = default;
  // The probe found `deaf` (the serving worker) receiving nothing: serve from a
  // new worker, end the old one's connections (on_reset). Probe thread only.
  void ReplaceWorker(std::shared_ptr<transport::UcxWorker> deaf);
  std::unique_ptr<State> state_;
  std::string status_text_;
  bool enabled_ = false;  // ucx_enabled
};

}  // namespace kvhub::cachesvc
