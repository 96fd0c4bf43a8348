#pragma once
// KvHubService: the kvhub.v1.KvHub gRPC service (callback API) over a BlockStore.
//
// Every handler validates its request first (request_validation.h): a malformed
// request fails whole with INVALID_ARGUMENT naming the field and changes nothing.
// Per-item outcomes come back in ItemStatus. docs/protocol.md describes each RPC.
//
// Data path: unary messages come from pooled allocators (message_pool.h), keys are
// parsed from the packed bytes field into a thread-local array, Get copies block bytes
// once, from the leased region straight into the response's `data` field; PutData
// copies each chunk once, from the request into the reservation. No per-block heap
// allocation happens in this code on the success path.
//
// Draining (BeginDrain): Health reports DRAINING; PutStart and Put are refused with
// UNAVAILABLE; everything else (reads, PutData/PutCommit of open reservations) still
// works until the server shuts down.
//
// Thread safety: handlers run concurrently on gRPC threads; all state is
// thread-safe. The store, table, metrics and clock must outlive the service.

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/functional/function_ref.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "cachesvc/auth.h"
#include "cachesvc/reloadable_auth.h"
#include "cachesvc/kvhubd_config.h"
#include "cachesvc/message_pool.h"
#include "cachesvc/metrics.h"
#include "cachesvc/reservation_table.h"
#include "cachesvc/stalled_sends.h"
#include "cachesvc/ucx_server.h"
#include "kvhub/v1/kvhub.grpc.pb.h"
#include "storage/block_store.h"

namespace kvhub::storage {
class TieredBlockStore;
}  // namespace kvhub::storage

namespace kvhub::cachesvc {

// The generated KvHub service with every method registered in its raw (ByteBuffer) form:
// Get and GetStream so block bytes go out straight from the leased region (zero-copy),
// and all of them so a request that does not parse gets INVALID_ARGUMENT with a message
// (cachesvc/raw_messages.h) instead of gRPC's bare UNIMPLEMENTED.
using KvHubCallbackBase = v1::KvHub::WithRawCallbackMethod_Lookup<v1::KvHub::WithRawCallbackMethod_PutStart<
    v1::KvHub::WithRawCallbackMethod_PutData<v1::KvHub::WithRawCallbackMethod_PutCommit<
        v1::KvHub::WithRawCallbackMethod_PutAbort<v1::KvHub::WithRawCallbackMethod_Put<
            v1::KvHub::WithRawCallbackMethod_Get<v1::KvHub::WithRawCallbackMethod_GetStream<
                v1::KvHub::WithRawCallbackMethod_Release<v1::KvHub::WithRawCallbackMethod_Delete<
                    v1::KvHub::WithRawCallbackMethod_Pin<v1::KvHub::WithRawCallbackMethod_Stats<
                        v1::KvHub::WithRawCallbackMethod_Health<v1::KvHub::WithRawCallbackMethod_Connect<
                            v1::KvHub::WithRawCallbackMethod_Session<v1::KvHub::Service>>>>>>>>>>>>>>>;

// The grant ids a by-id call names (KvHubService::Serve): reservation ids (kWrite)
// or lease ids (kRead); none when `ids` is null.
struct GrantIds {
  storage::TransferAccess access = storage::TransferAccess::kRead;
  const google::protobuf::RepeatedField<uint64_t>* ids = nullptr;
};

class KvHubService final : public KvHubCallbackBase {
 public:
  KvHubService(const KvhubdConfig& config, storage::BlockStore* store, ReservationTable* reservations,
               ServiceMetrics* metrics);

  // The name Stats/Health report; set once the gRPC port is known.
  void set_node_id(std::string id) ABSL_LOCKS_EXCLUDED(node_mu_);
  // The UCX data plane (Connect, rkey ids, Stats); set once before serving starts.
  // nullptr: Connect answers FAILED_PRECONDITION. Not owned; must outlive the service.
  void set_ucx(UcxServer* ucx) { ucx_ = ucx; }
  // The gpu tier behind `store` (the same object, when kvhubd runs one), for Stats'
  // "gpu" entry; set once before serving starts. nullptr (default): host tier only.
  // Not owned; must outlive the service.
  void set_tiered(const storage::TieredBlockStore* tiered) { tiered_ = tiered; }
  // Bearer-token authorization of every RPC but Health (cachesvc/auth.h), each call
  // checked against the tokens in force when it starts; set once before serving
  // starts. nullptr (default): no authentication. Not owned; must outlive the service.
  void set_auth(const ReloadableAuthenticator* auth) { auth_ = auth; }
  // After a reload of the tokens (`now`): ends, with UNAUTHENTICATED, the Session of
  // every UCX connection whose token `now` no longer accepts for every namespace
  // (what Connect requires), and closes those connections. Returns how many.
  // Connections no Session watches are closed too (a client that never opened
  // one, or one between Connect and its Session): their one-sided reads and UCX
  // calls are not checked against the tokens again.
  size_t EndRevokedUcxSessions(const Authenticator& now) ABSL_LOCKS_EXCLUDED(sessions_mu_, conn_auth_mu_);
  std::string node_id() const ABSL_LOCKS_EXCLUDED(node_mu_);

  // A call from a UCX client (UcxServer; v1::UcxCall methods): UCX_CALL_GET is
  // the Get of leases (inline_data must be false), with DoGet's validation,
  // leases, errors and metrics (recorded as Rpc::kUcxGet); UCX_CALL_RELEASE is
  // Release (Rpc::kUcxRelease). Returns the serialized response, or the error
  // the RPC would have returned. Thread-safe; runs on the UCX progress thread.
  absl::StatusOr<std::string> UcxCall(uint32_t method, absl::string_view request);

  void BeginDrain() { draining_.store(true, std::memory_order_release); }
  bool draining() const { return draining_.load(std::memory_order_acquire); }
  // Shutdown's last phase: every new call except Health is refused with UNAVAILABLE so
  // the calls in flight can finish and the server can stop without waiting on idle clients.
  // Session streams end with UNAVAILABLE (their UCX connections stay until UCX stops).
  void BeginStop() ABSL_LOCKS_EXCLUDED(sessions_mu_);
  bool stopping() const { return stopping_.load(std::memory_order_acquire); }
  // Calls being handled now: unary handlers while they run, Get/Put streams until
  // they are done (not Session streams, which BeginStop ends).
  int inflight() const { return inflight_.load(std::memory_order_acquire); }
  // Cancels the Get and GetStream calls whose response made no progress for
  // stalled_send_timeout (cachesvc/stalled_sends.h); returns how many. Called
  // periodically (kvhubd's expiry thread).
  size_t CancelStalledSends();
  uint64_t stalled_sends_cancelled() const { return stalled_sends_.cancelled_total(); }

  // The RPCs. Each parses its request (INVALID_ARGUMENT when it does not), checks the
  // caller's token, runs its Do* handler below and serializes the response.
  grpc::ServerUnaryReactor* Lookup(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* req,
                                   grpc::ByteBuffer* resp) override;
  grpc::ServerUnaryReactor* PutStart(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* req,
                                     grpc::ByteBuffer* resp) override;
  // A stream of PutDataChunk; a chunk that does not parse ends it with INVALID_ARGUMENT.
  grpc::ServerReadReactor<grpc::ByteBuffer>* PutData(grpc::CallbackServerContext* ctx,
                                                     grpc::ByteBuffer* resp) override;
  grpc::ServerUnaryReactor* PutCommit(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* req,
                                      grpc::ByteBuffer* resp) override;
  grpc::ServerUnaryReactor* PutAbort(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* req,
                                     grpc::ByteBuffer* resp) override;
  grpc::ServerUnaryReactor* Put(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* req,
                                grpc::ByteBuffer* resp) override;
  // Get: inline_data responses are assembled from slices that point into the leased
  // region (each lease is released when gRPC drops its slice); otherwise DoGet's
  // response is serialized.
  grpc::ServerUnaryReactor* Get(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* req,
                                grpc::ByteBuffer* resp) override;
  // GetStream: each GetChunk is a small framing slice plus a zero-copy slice over
  // the leased block; the block's lease ends when gRPC has dropped all of its chunks.
  grpc::ServerWriteReactor<grpc::ByteBuffer>* GetStream(grpc::CallbackServerContext* ctx,
                                                        const grpc::ByteBuffer* req) override;
  grpc::ServerUnaryReactor* Release(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* req,
                                    grpc::ByteBuffer* resp) override;
  grpc::ServerUnaryReactor* Delete(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* req,
                                   grpc::ByteBuffer* resp) override;
  grpc::ServerUnaryReactor* Pin(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* req,
                                grpc::ByteBuffer* resp) override;
  grpc::ServerUnaryReactor* Stats(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* req,
                                  grpc::ByteBuffer* resp) override;
  grpc::ServerUnaryReactor* Health(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* req,
                                   grpc::ByteBuffer* resp) override;
  grpc::ServerUnaryReactor* Connect(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* req,
                                    grpc::ByteBuffer* resp) override;
  // Watches a UCX connection: when the client ends the stream (or its gRPC
  // connection breaks), the connection is closed (proto: SessionRequest; a stream
  // of SessionEvent).
  grpc::ServerWriteReactor<grpc::ByteBuffer>* Session(grpc::CallbackServerContext* ctx,
                                                      const grpc::ByteBuffer* req) override;
  // Session streams open now.
  uint64_t ucx_sessions() const ABSL_LOCKS_EXCLUDED(sessions_mu_);
  // True when a Session stream watches UCX connection `conn_id`.
  bool HasUcxSession(uint64_t conn_id) const ABSL_LOCKS_EXCLUDED(sessions_mu_);
  // The UCX worker was replaced (UcxServer's reset handler): ends, with
  // UNAVAILABLE, the Sessions of connections with ids below `first_conn_id`,
  // whose UCX connections are gone; their clients Connect again.
  void EndUcxSessionsBefore(uint64_t first_conn_id) ABSL_LOCKS_EXCLUDED(sessions_mu_);
  // Ends, with UNAVAILABLE, the Sessions whose UCX connection the shard no longer
  // has: the worker closed it itself (its endpoint to the client failed) or the
  // grace sweep did. Their clients Connect again instead of sending calls nothing
  // answers. Returns how many ended. kvhubd runs it every expiry sweep.
  size_t EndUcxSessionsOfClosedConnections() ABSL_LOCKS_EXCLUDED(sessions_mu_);

  // The request handlers without gRPC around them (unit-testable, used by the above).
  grpc::Status DoLookup(const v1::LookupRequest& req, v1::LookupResponse* resp);
  grpc::Status DoPutStart(const v1::PutStartRequest& req, v1::PutStartResponse* resp);
  grpc::Status DoPutCommit(const v1::PutCommitRequest& req, v1::PutCommitResponse* resp);
  grpc::Status DoPutAbort(const v1::PutAbortRequest& req, v1::PutAbortResponse* resp);
  // Takes reservation `id` from the table (its entry to *taken), ends it in the store
  // with `end` (Commit or Abort), then forgets it, or makes it writable again when
  // the store refused for now (FAILED_PRECONDITION). The table's error (NOT_FOUND,
  // or FAILED_PRECONDITION while another commit or abort of it runs), else end's.
  absl::Status EndReservation(uint64_t id, absl::FunctionRef<absl::Status(uint64_t)> end,
                              ReservationTable::Entry* taken);
  // Releases the leases of a Get answer its caller will never see (cancelled, or
  // an answer too large to send), and aborts the reservations of such a PutStart.
  void ReleaseUnannounced(const v1::GetResponse& granted);
  void AbortUnannounced(const v1::PutStartResponse& started);
  grpc::Status DoPut(const v1::PutRequest& req, v1::PutResponse* resp);
  // Get with the bytes copied into the response (inline) or leases returned; the
  // reference semantics of Get, used by in-process callers and the non-inline path.
  // Counts the blocks and bytes it served in the metrics, unless `unrecorded` is
  // given: then they are returned there for the caller to count (RecordGet) once
  // it has an answer to send (a UcxGet refused as too large counts nothing; one
  // whose reply send later fails still counts).
  struct GetTally {
    uint64_t blocks = 0, bytes = 0;
  };
  grpc::Status DoGet(const v1::GetRequest& req, v1::GetResponse* resp, GetTally* unrecorded = nullptr);
  void RecordGet(const v1::GetRequest& req, const GetTally& served);
  // Inline Get as gRPC sends it: appends the serialized GetResponse to `slices`, block
  // bytes as zero-copy slices over the leased region.
  grpc::Status DoGetInlineSlices(const v1::GetRequest& req, std::vector<grpc::Slice>* slices);
  grpc::Status DoRelease(const v1::ReleaseRequest& req, v1::ReleaseResponse* resp);
  grpc::Status DoDelete(const v1::DeleteRequest& req, v1::DeleteResponse* resp);
  grpc::Status DoPin(const v1::PinRequest& req, v1::PinResponse* resp);
  grpc::Status DoStats(v1::StatsResponse* resp);
  // `owner`: UcxOwner of the caller's authorization metadata; only a Session with
  // the same may watch (and end) the connection.
  grpc::Status DoConnect(const v1::ConnectRequest& req, v1::ConnectResponse* resp, uint64_t owner = 0,
                         const std::function<bool()>& gave_up = nullptr);
  // The owner tag of a UCX connection made with `authorization` (the metadata value;
  // "" without a token).
  static uint64_t UcxOwner(absl::string_view authorization);

  ServiceMetrics* metrics() { return metrics_; }
  storage::BlockStore* store() { return store_; }
  ReservationTable* reservations() { return reservations_; }
  const KvhubdConfig& config() const { return config_; }
  // Random, non-zero, new for every service object (every kvhubd process): sent in
  // ConnectResponse, PutStartResponse and lease GetResponses so UCX clients notice a
  // restart at the same address (proto: ConnectResponse.incarnation).
  uint64_t incarnation() const { return incarnation_; }

 private:
  // UNAVAILABLE "kvhubd is shutting down": what calls get once stopping().
  static const grpc::Status& StoppingStatus();
  // UcxCall's two methods, without the metrics and the stopping check.
  absl::StatusOr<std::string> UcxGet(absl::string_view request);
  absl::StatusOr<std::string> UcxRelease(absl::string_view request);
  // This thread's arena for Get responses (reused: Reset after each call).
  static google::protobuf::Arena& ResponseArena();
  class GetStreamReactor;
  class WatchedGetReactor;
  class PutDataReactor;
  class SessionReactor;
  // Ends the Sessions `which` selects; `for_good` refuses new ones from then on;
  // `close` also closes their UCX connections (else they stay until UCX drops them).
  // `which` sees each session's connection id and the authorization metadata it was
  // opened with. Returns how many ended.
  size_t EndSessions(const grpc::Status& status,
                     const std::function<bool(uint64_t conn_id, const std::string& authorization)>& which,
                     bool for_good, bool close = false) ABSL_LOCKS_EXCLUDED(sessions_mu_);
  // What zero-copy slices' destroy callbacks release, refcounted: the lease (it counts
  // against the namespace's lease share) and the transfer hold taken with it
  // (AcquireOptions::hold), which keeps the bytes from being reused until gRPC has
  // dropped the last slice even if the lease runs out first: a client that reads slowly
  // (or stops reading) never receives another block's bytes. The hold lasts as long as
  // gRPC keeps the slices: until the call ends or is cancelled, or the connection
  // closes. A peer that stops reading is cut off by CancelStalledSends.
  struct SliceLease {
    KvHubService* service = nullptr;
    uint64_t lease_id = 0;
    uint64_t hold = 0;
    std::atomic<int> refs{0};
  };
  // A context for `lease` (acquired with AcquireOptions::hold) holding one reference;
  // each slice made with it takes another (Ref).
  SliceLease* NewSliceLease(const storage::Lease& lease);
  static void* RefSliceLease(SliceLease* sl) {
    sl->refs.fetch_add(1, std::memory_order_relaxed);
    return sl;
  }
  // Drops one reference; the last one releases the lease and ends the hold.
  static void ReleaseSliceLease(void* arg);

  // What a unary call touches, for the token check (Admit).
  struct CallScope {
    const std::string* ns = nullptr;  // the request's namespace (nullptr: any valid token will do)
    GrantIds grants;                  // the reservation or lease ids of a by-id call
    bool every_namespace = false;     // the call needs a '*' token (Connect)
  };
  // The token check of a unary call: Authorize (`ns`, `every_namespace`), then every
  // live id of `grants` must belong to a namespace the token allows (PERMISSION_DENIED
  // naming the id; unknown ids are left to the call).
  grpc::Status Admit(const grpc::CallbackServerContext* ctx, const CallScope& scope) const;
  // One unary RPC: latency timing, in-flight accounting, refusal while stopping, the
  // request parsed from `raw_req` (INVALID_ARGUMENT if it does not parse), Admit with
  // `scope(req)`, then `handler(req, &resp)` (returning grpc::Status), the response
  // serialized into `raw_resp`, and Finish. The messages come from `pool` (recycled
  // between calls) or, when it is null, are built for the call.
  template <typename Req, typename Resp, typename Scope, typename Handler>
  grpc::ServerUnaryReactor* Serve(grpc::CallbackServerContext* ctx, Rpc rpc, grpc::MessageAllocator<Req, Resp>* pool,
                                  const grpc::ByteBuffer* raw_req, grpc::ByteBuffer* raw_resp, Scope&& scope,
                                  Handler&& handler);
  // With auth on: UNAUTHENTICATED without a valid token; PERMISSION_DENIED when it
  // does not allow `ns` (if given) or, with `every_namespace`, is not a '*' token.
  // OK when auth is off.
  // `grant_out` (optional) receives the caller's grant (left null when auth is off).
  // The grant shares ownership of the token set it came from, so it stays valid
  // across a reload for as long as the caller holds it.
  // The call's authorization metadata value; nullopt when it carries none.
  static std::optional<absl::string_view> AuthorizationOf(const grpc::CallbackServerContext* ctx);
  grpc::Status Authorize(const grpc::CallbackServerContext* ctx, const std::string* ns,
                         bool every_namespace = false, std::shared_ptr<const AuthGrant>* grant_out = nullptr) const;
  // OK when `grant` may use the namespace of grant id `id` (or `id` is not live).
  absl::Status GrantAllowed(const AuthGrant& grant, storage::TransferAccess access, uint64_t id) const;
  // Records the call and finishes it on `reactor` (the call's default reactor when null).
  grpc::ServerUnaryReactor* Finish(grpc::CallbackServerContext* ctx, Rpc rpc, absl::Time start,
                                   const grpc::Status& status, grpc::ServerUnaryReactor* reactor = nullptr);

  const KvhubdConfig config_;
  mutable absl::Mutex node_mu_;
  std::string node_id_ ABSL_GUARDED_BY(node_mu_);
  const absl::Time started_;
  const uint64_t incarnation_;
  storage::BlockStore* const store_;
  ReservationTable* const reservations_;
  ServiceMetrics* const metrics_;
  UcxServer* ucx_ = nullptr;
  const storage::TieredBlockStore* tiered_ = nullptr;
  const ReloadableAuthenticator* auth_ = nullptr;
  std::atomic<bool> draining_{false};
  std::atomic<bool> stopping_{false};
  std::atomic<int> inflight_{0};
  // Get and GetStream calls sending zero-copy responses.
  StalledSends stalled_sends_{Clock::Real()};
  // Session streams by UCX connection id; closed at BeginStop (no new ones).
  mutable absl::Mutex sessions_mu_;
  absl::flat_hash_map<uint64_t, SessionReactor*> sessions_ ABSL_GUARDED_BY(sessions_mu_);
  bool sessions_closed_ ABSL_GUARDED_BY(sessions_mu_) = false;
  // The authorization each UCX connection was made with (only with tokens on), for
  // EndRevokedUcxSessions. Entries of closed connections go at each reload and when
  // the map passes twice the connections a shard holds.
  absl::Mutex conn_auth_mu_;
  absl::flat_hash_map<uint64_t, std::string> conn_auth_ ABSL_GUARDED_BY(conn_auth_mu_);
  // Records it; false (and the connection closed) when the tokens in force no
  // longer allow it: a reload that ran during the Connect did not see the entry.
  bool RememberConnAuth(uint64_t conn_id, absl::string_view authorization) ABSL_LOCKS_EXCLUDED(conn_auth_mu_);
  // Drops the entries of connections no longer live (ucx_ must be set).
  void PruneConnAuthLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(conn_auth_mu_);

  // Counts a unary handler as in flight for its scope.
  class InflightScope {
   public:
    explicit InflightScope(KvHubService* s) : s_(s) { s_->inflight_.fetch_add(1, std::memory_order_acq_rel); }
    ~InflightScope() { s_->inflight_.fetch_sub(1, std::memory_order_acq_rel); }
    InflightScope(const InflightScope&) = delete;
    InflightScope& operator=(const InflightScope&) = delete;

   private:
    KvHubService* const s_;
  };

  // Recycled messages of the data path's unary calls (Serve's `pool`).
  PooledMessageAllocator<v1::LookupRequest, v1::LookupResponse> lookup_alloc_;
  PooledMessageAllocator<v1::PutStartRequest, v1::PutStartResponse, /*kArenaResponse=*/true> put_start_alloc_;
  PooledMessageAllocator<v1::PutCommitRequest, v1::PutCommitResponse> put_commit_alloc_;
  PooledMessageAllocator<v1::PutRequest, v1::PutResponse> put_alloc_;
  absl::Mutex slice_lease_mu_;
  std::vector<std::unique_ptr<SliceLease>> slice_lease_storage_ ABSL_GUARDED_BY(slice_lease_mu_);
  std::vector<SliceLease*> slice_lease_free_ ABSL_GUARDED_BY(slice_lease_mu_);
  PooledMessageAllocator<v1::ReleaseRequest, v1::ReleaseResponse> release_alloc_;
};

}  // namespace kvhub::cachesvc
