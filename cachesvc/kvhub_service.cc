#include "cachesvc/kvhub_service.h"

#include <malloc.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <random>
#include <span>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/str_cat.h"
#include "cachesvc/raw_messages.h"
#include "cachesvc/request_validation.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/version.h"
#include "grpcpp/impl/codegen/proto_utils.h"
#include "storage/tiered_block_store.h"

namespace kvhub::cachesvc {
namespace {

grpc::Status ToGrpc(const absl::Status& s) {
  if (s.ok()) return grpc::Status::OK;
  return grpc::Status(static_cast<grpc::StatusCode>(s.code()), std::string(s.message()));
}

void SetItemStatus(const absl::Status& s, v1::ItemStatus* out) {
  out->set_code(static_cast<int32_t>(s.code()));
  if (!s.ok()) out->set_message(s.message().data(), s.message().size());
}

void SetLocation(const storage::BlockLocation& loc, v1::BlockLocation* out) {
  out->set_region(loc.region);
  out->set_offset(loc.offset);
  out->set_size(loc.size);
  out->set_rkey_id(loc.region);  // ConnectResponse.regions[rkey_id] is this region's packed rkey
}

// Keys of one call, parsed from the packed bytes field into per-thread storage
// (no allocation; valid until the next call on this thread).
std::span<const BlockKey> ParseKeys(absl::string_view packed, size_t n) {
  thread_local BlockKey keys[kMaxKeysPerCall];
  for (size_t i = 0; i < n; ++i) keys[i] = PackedKey(packed, i);
  return {keys, n};
}

absl::Duration LeaseFor(uint32_t lease_ms) {
  return lease_ms == 0 ? absl::ZeroDuration() : absl::Milliseconds(lease_ms);
}

// Refusal while draining.
const grpc::Status& DrainingStatus() {
  static const grpc::Status* s =
      new grpc::Status(grpc::StatusCode::UNAVAILABLE, "kvhubd is draining (shutting down); put elsewhere");
  return *s;
}

uint64_t NewIncarnation() {
  std::random_device rd;
  uint64_t id = 0;
  while (id == 0) {
    id = (static_cast<uint64_t>(rd()) << 32) ^ rd() ^ static_cast<uint64_t>(absl::ToUnixNanos(absl::Now()));
  }
  return id;
}

}  // namespace

const grpc::Status& KvHubService::StoppingStatus() {
  static const grpc::Status* s =
      new grpc::Status(grpc::StatusCode::UNAVAILABLE, "kvhubd is shutting down; retry on another node");
  return *s;
}

KvHubService::KvHubService(const KvhubdConfig& config, storage::BlockStore* store,
                           ReservationTable* reservations, ServiceMetrics* metrics)
    : config_(config),
      started_(Clock::Real()->Now()),
      incarnation_(NewIncarnation()),
      store_(store),
      reservations_(reservations),
      metrics_(metrics) {
}

void KvHubService::set_node_id(std::string id) {
  absl::MutexLock lock(&node_mu_);
  node_id_ = std::move(id);
}

std::string KvHubService::node_id() const {
  absl::MutexLock lock(&node_mu_);
  return node_id_;
}

grpc::ServerUnaryReactor* KvHubService::Finish(grpc::CallbackServerContext* ctx, Rpc rpc, absl::Time start,
                                               const grpc::Status& status, grpc::ServerUnaryReactor* reactor) {
  metrics_->RecordRpc(rpc, Clock::Real()->Now() - start, static_cast<int>(status.error_code()));
  if (reactor == nullptr) reactor = ctx->DefaultReactor();
  reactor->Finish(status);
  return reactor;
}

// ---------------------------------------------------------------- Lookup

grpc::Status KvHubService::DoLookup(const v1::LookupRequest& req, v1::LookupResponse* resp) {
  if (absl::Status s = ValidateLookup(req); !s.ok()) return ToGrpc(s);
  const size_t n = req.keys().size() / kKeyBytes;
  std::span<const BlockKey> keys = ParseKeys(req.keys(), n);
  std::string* present = resp->mutable_present();
  present->resize(n);
  size_t prefix = store_->Lookup(req.namespace_(), keys,
                                 std::span<uint8_t>(reinterpret_cast<uint8_t*>(present->data()), n));
  resp->set_prefix_hits(static_cast<uint32_t>(prefix));
  uint64_t hits = prefix;
  if (!req.prefix()) {
    hits = static_cast<uint64_t>(std::count(present->begin(), present->end(), '\1'));
  }
  // Tokens only for prefix lookups, the question a prefill asks: a publisher's
  // existence check (prefix=false) must not count toward the token hit rate.
  metrics_->RecordLookup(req.namespace_(), req.model(), n, hits, req.prefix() ? req.block_tokens() : 0);
  return grpc::Status::OK;
}

namespace {

// A unary call's request and response: from a pool when there is one (returned to it
// at the end of the call), else built for the call.
template <typename Req, typename Resp>
class CallMessages {
 public:
  explicit CallMessages(grpc::MessageAllocator<Req, Resp>* pool)
      : holder_(pool != nullptr ? pool->AllocateMessages() : nullptr) {}
  ~CallMessages() {
    if (holder_ != nullptr) holder_->Release();
  }
  CallMessages(const CallMessages&) = delete;
  CallMessages& operator=(const CallMessages&) = delete;
  Req* request() { return holder_ != nullptr ? holder_->request() : &request_; }
  Resp* response() { return holder_ != nullptr ? holder_->response() : &response_; }

 private:
  grpc::MessageHolder<Req, Resp>* const holder_;
  Req request_;
  Resp response_;
};

}  // namespace

template <typename Req, typename Resp, typename Scope, typename Handler>
grpc::ServerUnaryReactor* KvHubService::Serve(grpc::CallbackServerContext* ctx, Rpc rpc,
                                              grpc::MessageAllocator<Req, Resp>* pool,
                                              const grpc::ByteBuffer* raw_req, grpc::ByteBuffer* raw_resp,
                                              Scope&& scope, Handler&& handler) {
  absl::Time start = Clock::Real()->Now();
  InflightScope inflight(this);
  if (stopping()) return Finish(ctx, rpc, start, StoppingStatus());
  grpc::Status status;
  {
    CallMessages<Req, Resp> messages(pool);
    const Req& req = *messages.request();
    status = ParseRawRequest(raw_req, messages.request());
    if (status.ok()) status = Admit(ctx, scope(req));
    if (status.ok()) status = handler(req, messages.response());
    if (status.ok()) status = SerializeRawResponse(*messages.response(), raw_resp);
  }
  return Finish(ctx, rpc, start, status);
}

grpc::Status KvHubService::Admit(const grpc::CallbackServerContext* ctx, const CallScope& scope) const {
  std::shared_ptr<const AuthGrant> grant;
  if (grpc::Status a = Authorize(ctx, scope.ns, scope.every_namespace, &grant); !a.ok()) return a;
  if (grant != nullptr && scope.grants.ids != nullptr) {
    // The list's shape first: each id below is a store lookup under its lock, and
    // a request may carry millions (the call itself refuses more than 4096).
    if (absl::Status v = ValidateIds(
            scope.grants.access == storage::TransferAccess::kWrite ? "reservation_ids" : "lease_ids",
            *scope.grants.ids);
        !v.ok()) {
      return ToGrpc(v);
    }
    for (uint64_t id : *scope.grants.ids) {
      if (absl::Status s = GrantAllowed(*grant, scope.grants.access, id); !s.ok()) return ToGrpc(s);
    }
  }
  return grpc::Status::OK;
}

absl::Status KvHubService::GrantAllowed(const AuthGrant& grant, storage::TransferAccess access, uint64_t id) const {
  if (grant.all_namespaces) return absl::OkStatus();
  absl::StatusOr<uint64_t> tag = store_->GrantNamespaceTag(access, id);
  if (!tag.ok()) return absl::OkStatus();  // unknown or ended: the call itself says NOT_FOUND
  if (grant.namespace_tags.contains(*tag)) return absl::OkStatus();
  return absl::PermissionDeniedError(absl::StrCat(
      access == storage::TransferAccess::kWrite ? "reservation " : "lease ", id,
      " belongs to a namespace this token may not use (tokens file line ", grant.line, ")"));
}

std::optional<absl::string_view> KvHubService::AuthorizationOf(const grpc::CallbackServerContext* ctx) {
  const auto& md = ctx->client_metadata();
  const auto it = md.find(std::string(kAuthMetadataKey));
  if (it == md.end()) return std::nullopt;
  return absl::string_view(it->second.data(), it->second.size());
}

grpc::Status KvHubService::Authorize(const grpc::CallbackServerContext* ctx, const std::string* ns,
                                     bool every_namespace, std::shared_ptr<const AuthGrant>* grant_out) const {
  if (auth_ == nullptr) return grpc::Status::OK;
  const std::optional<absl::string_view> value = AuthorizationOf(ctx);
  const std::shared_ptr<const Authenticator> tokens = auth_->Current();
  absl::StatusOr<const AuthGrant*> grant = tokens->Authenticate(value ? &*value : nullptr);
  if (!grant.ok()) return ToGrpc(grant.status());
  if (grant_out != nullptr) *grant_out = std::shared_ptr<const AuthGrant>(tokens, *grant);  // keeps `tokens` alive
  if (every_namespace && !(*grant)->all_namespaces) {
    return grpc::Status(grpc::StatusCode::PERMISSION_DENIED,
                        "UCX exposes the shard's whole host tier to a connected client: Connect needs a token "
                        "for every namespace ('*'); clients with this token use gRPC");
  }
  if (ns == nullptr) return grpc::Status::OK;
  // A namespace over its limit would be echoed whole in the refusal (a status
  // message far beyond what a peer accepts in trailers): its shape first.
  if (absl::Status v = ValidateNamespaceField(*ns); !v.ok()) return ToGrpc(v);
  return ToGrpc((*grant)->AllowsNamespace(*ns));
}

grpc::ServerUnaryReactor* KvHubService::Lookup(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* req,
                                               grpc::ByteBuffer* resp) {
  return Serve<v1::LookupRequest, v1::LookupResponse>(
      ctx, Rpc::kLookup, &lookup_alloc_, req, resp, [](const v1::LookupRequest& r) { return CallScope{&r.namespace_()}; },
      [this](const v1::LookupRequest& r, v1::LookupResponse* out) { return DoLookup(r, out); });
}

// ---------------------------------------------------------------- PutStart

grpc::Status KvHubService::DoPutStart(const v1::PutStartRequest& req, v1::PutStartResponse* resp) {
  if (draining()) return DrainingStatus();
  // The configured max_block_bytes is refused per item by the store (Reserve).
  if (absl::Status s = ValidatePutStart(req, kHardMaxBlockBytes); !s.ok()) return ToGrpc(s);
  const int ns_index = metrics_->NamespaceIndex(req.namespace_());
  resp->set_incarnation(incarnation_);
  resp->mutable_items()->Reserve(req.items_size());
  for (const v1::PutItem& item : req.items()) {
    v1::PutStartResponse::Reserved* out = resp->add_items();
    BlockKey key = PackedKey(item.key(), 0);
    BlockKey parent;
    storage::PutOptions opts;
    opts.pin = item.pin();
    if (!item.parent().empty()) {
      parent = PackedKey(item.parent(), 0);
      opts.parent = &parent;
    }
    absl::StatusOr<storage::Reservation> r =
        store_->Reserve(req.namespace_(), key, item.size(), item.checksum(), opts);
    if (!r.ok()) {
      SetItemStatus(r.status(), out->mutable_status());
      continue;
    }  // OK: status left absent (code 0), so no sub-message is built
    reservations_->Add(*r, ns_index);
    out->set_reservation_id(r->id);
    SetLocation(r->location, out->mutable_location());
    // The store's clock is monotonic (common/clock.h): send wall time and time left.
    const absl::Duration left = std::max(reservations_->Remaining(r->expires), absl::ZeroDuration());
    out->set_expires_unix_ms(absl::ToUnixMillis(absl::Now() + left));
    out->set_expires_in_ms(absl::ToInt64Milliseconds(left));
  }
  return grpc::Status::OK;
}

grpc::ServerUnaryReactor* KvHubService::PutStart(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* req,
                                                 grpc::ByteBuffer* resp) {
  return Serve<v1::PutStartRequest, v1::PutStartResponse>(
      ctx, Rpc::kPutStart, &put_start_alloc_, req, resp, [](const v1::PutStartRequest& r) { return CallScope{&r.namespace_()}; },
      [this, ctx](const v1::PutStartRequest& r, v1::PutStartResponse* out) {
        grpc::Status st = DoPutStart(r, out);
        if (st.ok() && ctx->IsCancelled()) {
          // The caller is gone: nobody will write or commit these, and until they
          // expired every other publisher of the keys was told ABORTED.
          AbortUnannounced(*out);
          st = grpc::Status(grpc::StatusCode::CANCELLED, "PutStart cancelled; its reservations were aborted");
        }
        return st;
      });
}

// ---------------------------------------------------------------- PutData

// Reads chunks and copies each into its reservation. The first bad chunk (one that does
// not parse included) ends the stream with its error (earlier chunks stay written;
// nothing is visible until commit).
class KvHubService::PutDataReactor final : public grpc::ServerReadReactor<grpc::ByteBuffer> {
 public:
  PutDataReactor(KvHubService* service, const grpc::CallbackServerContext* ctx, grpc::ByteBuffer* resp)
      : service_(service), ctx_(ctx), resp_(resp), start_(Clock::Real()->Now()) {
    service_->inflight_.fetch_add(1, std::memory_order_acq_rel);
    if (service_->stopping()) {
      Done(StoppingStatus());
      return;
    }
    if (grpc::Status a = service_->Authorize(ctx, nullptr, false, &grant_); !a.ok()) {
      Done(a);
      return;
    }
    StartRead(&raw_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {  // client half-closed (or the call is gone)
      if (ctx_->IsCancelled()) {
        // Cancelled or broken, not finished: recorded as such (it counted as OK).
        Done(grpc::Status(grpc::StatusCode::CANCELLED, "PutData stream cancelled"));
        return;
      }
      v1::PutDataResponse resp;
      resp.set_bytes_written(written_);
      Done(SerializeRawResponse(resp, resp_));
      return;
    }
    if (grpc::Status ps = ParseRawRequest(&raw_, &chunk_); !ps.ok()) {
      Done(ps);
      return;
    }
    absl::Status s = ValidatePutDataChunk(chunk_);
    if (s.ok() && grant_ != nullptr && chunk_.reservation_id() != allowed_reservation_) {
      // Chunks of one reservation arrive together: its namespace is checked once.
      s = service_->GrantAllowed(*grant_, storage::TransferAccess::kWrite, chunk_.reservation_id());
      if (s.ok()) allowed_reservation_ = chunk_.reservation_id();
    }
    if (s.ok()) s = service_->reservations_->Write(chunk_.reservation_id(), chunk_.offset(), chunk_.data());
    if (s.ok()) service_->metrics_->AddGrpcBytes(/*get=*/false, chunk_.data().size());
    if (!s.ok()) {
      Done(ToGrpc(s));
      return;
    }
    written_ += chunk_.data().size();
    // The parsed chunk's buffer is reused for the next one; one far above the
    // client's default chunk (1 MiB) is given back, or an idle stream would keep its
    // largest chunk (up to max_block_bytes) on the heap, outside gRPC's memory quota.
    if (chunk_.data().capacity() > kKeepChunkBytes) std::string().swap(*chunk_.mutable_data());
    StartRead(&raw_);
  }

  void OnDone() override {
    service_->inflight_.fetch_sub(1, std::memory_order_acq_rel);
    delete this;
  }

 private:
  void Done(const grpc::Status& status) {
    service_->metrics_->RecordRpc(Rpc::kPutData, Clock::Real()->Now() - start_, static_cast<int>(status.error_code()));
    Finish(status);
  }

  static constexpr size_t kKeepChunkBytes = size_t{4} << 20;
  KvHubService* const service_;
  const grpc::CallbackServerContext* const ctx_;  // outlives the reactor (gRPC's)
  grpc::ByteBuffer* const resp_;
  const absl::Time start_;
  grpc::ByteBuffer raw_;     // the chunk as it arrived
  v1::PutDataChunk chunk_;   // ... parsed
  std::shared_ptr<const AuthGrant> grant_;  // the caller's token (auth on), for each chunk's reservation
  uint64_t allowed_reservation_ = 0;  // the last reservation grant_ was checked against
  uint64_t written_ = 0;
};

grpc::ServerReadReactor<grpc::ByteBuffer>* KvHubService::PutData(grpc::CallbackServerContext* ctx,
                                                                 grpc::ByteBuffer* resp) {
  return new PutDataReactor(this, ctx, resp);
}

// ---------------------------------------------------------------- PutCommit / PutAbort

absl::Status KvHubService::EndReservation(uint64_t id, absl::FunctionRef<absl::Status(uint64_t)> end,
                                          ReservationTable::Entry* taken) {
  if (absl::Status t = reservations_->Take(id, taken); !t.ok()) return t;
  absl::Status s = end(id);
  if (absl::IsFailedPrecondition(s)) {
    reservations_->Restore(id, *taken);  // still reserved: a retry may end it
  } else {
    reservations_->Finish(id);
  }
  return s;
}

grpc::Status KvHubService::DoPutCommit(const v1::PutCommitRequest& req, v1::PutCommitResponse* resp) {
  if (absl::Status s = ValidateIds("reservation_ids", req.reservation_ids()); !s.ok()) return ToGrpc(s);
  resp->mutable_items()->Reserve(req.reservation_ids_size());
  for (uint64_t id : req.reservation_ids()) {
    v1::ItemStatus* out = resp->add_items();
    ReservationTable::Entry e;
    const absl::Status s = EndReservation(id, [this](uint64_t r) { return store_->Commit(r); }, &e);
    SetItemStatus(s, out);
    if (s.ok()) {
      metrics_->AddPutBytes(e.ns_index, 1, e.size);
    } else if (absl::IsDataLoss(s)) {
      metrics_->AddChecksumFailure(e.ns_index);
    }
  }
  return grpc::Status::OK;
}

grpc::ServerUnaryReactor* KvHubService::PutCommit(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* req,
                                                  grpc::ByteBuffer* resp) {
  return Serve<v1::PutCommitRequest, v1::PutCommitResponse>(
      ctx, Rpc::kPutCommit, &put_commit_alloc_, req, resp,
      [](const v1::PutCommitRequest& r) {
        return CallScope{nullptr, {storage::TransferAccess::kWrite, &r.reservation_ids()}};
      },
      [this](const v1::PutCommitRequest& r, v1::PutCommitResponse* out) { return DoPutCommit(r, out); });
}

void KvHubService::ReleaseUnannounced(const v1::GetResponse& granted) {
  for (const v1::GetResponse::Block& b : granted.blocks()) {
    if (b.lease_id() != 0) (void)store_->Release(b.lease_id()).ok();  // ours, live: NOT_FOUND only if expired
  }
}

void KvHubService::AbortUnannounced(const v1::PutStartResponse& started) {
  for (const v1::PutStartResponse::Reserved& r : started.items()) {
    if (r.reservation_id() == 0) continue;
    // Fresh and never handed out: nothing writes into it, so the abort cannot be refused.
    ReservationTable::Entry e;
    (void)EndReservation(r.reservation_id(), [this](uint64_t id) { return store_->Abort(id); }, &e).ok();
  }
}

grpc::Status KvHubService::DoPutAbort(const v1::PutAbortRequest& req, v1::PutAbortResponse* resp) {
  if (absl::Status s = ValidateIds("reservation_ids", req.reservation_ids()); !s.ok()) return ToGrpc(s);
  resp->mutable_items()->Reserve(req.reservation_ids_size());
  for (uint64_t id : req.reservation_ids()) {
    v1::ItemStatus* out = resp->add_items();
    ReservationTable::Entry e;
    SetItemStatus(EndReservation(id, [this](uint64_t r) { return store_->Abort(r); }, &e), out);
  }
  return grpc::Status::OK;
}

grpc::ServerUnaryReactor* KvHubService::PutAbort(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* req,
                                                 grpc::ByteBuffer* resp) {
  return Serve<v1::PutAbortRequest, v1::PutAbortResponse>(
      ctx, Rpc::kPutAbort, nullptr, req, resp,
      [](const v1::PutAbortRequest& r) {
        return CallScope{nullptr, {storage::TransferAccess::kWrite, &r.reservation_ids()}};
      },
      [this](const v1::PutAbortRequest& r, v1::PutAbortResponse* out) { return DoPutAbort(r, out); });
}

// ---------------------------------------------------------------- Put (inline)

grpc::Status KvHubService::DoPut(const v1::PutRequest& req, v1::PutResponse* resp) {
  if (draining()) return DrainingStatus();
  // The configured max_block_bytes is refused per item by the store (Put).
  if (absl::Status s = ValidatePut(req, kHardMaxBlockBytes); !s.ok()) return ToGrpc(s);
  const int ns_index = metrics_->NamespaceIndex(req.namespace_());
  resp->mutable_items()->Reserve(req.items_size());
  uint64_t blocks = 0, bytes = 0, received = 0;
  for (const v1::PutItem& item : req.items()) {
    received += item.data().size();  // moved over gRPC whether stored, present already or refused
    BlockKey key = PackedKey(item.key(), 0);
    BlockKey parent;
    storage::PutOptions opts;
    opts.pin = item.pin();
    if (!item.parent().empty()) {
      parent = PackedKey(item.parent(), 0);
      opts.parent = &parent;
    }
    const std::string& data = item.data();
    absl::Status s = store_->Put(
        req.namespace_(), key,
        std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(data.data()), data.size()), item.checksum(),
        opts);
    SetItemStatus(s, resp->add_items());
    if (s.ok()) {
      ++blocks;
      bytes += data.size();
    } else if (absl::IsDataLoss(s)) {
      metrics_->AddChecksumFailure(ns_index);
    }
  }
  if (blocks > 0) metrics_->AddPutBytes(ns_index, blocks, bytes);
  metrics_->AddGrpcBytes(/*get=*/false, received);
  return grpc::Status::OK;
}

grpc::ServerUnaryReactor* KvHubService::Put(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* req,
                                            grpc::ByteBuffer* resp) {
  return Serve<v1::PutRequest, v1::PutResponse>(
      ctx, Rpc::kPut, &put_alloc_, req, resp, [](const v1::PutRequest& r) { return CallScope{&r.namespace_()}; },
      [this](const v1::PutRequest& r, v1::PutResponse* out) { return DoPut(r, out); });
}

// ---------------------------------------------------------------- Get

grpc::Status KvHubService::DoGet(const v1::GetRequest& req, v1::GetResponse* resp, GetTally* unrecorded) {
  if (absl::Status s = ValidateGet(req); !s.ok()) return ToGrpc(s);
  const size_t n = req.keys().size() / kKeyBytes;
  std::span<const BlockKey> keys = ParseKeys(req.keys(), n);
  const absl::Duration lease = LeaseFor(req.lease_ms());
  if (!req.inline_data()) {
    resp->set_incarnation(incarnation_);
    // What the store grants (BlockStore::Acquire): 0 means default_lease, capped at max_lease.
    const absl::Duration granted =
        std::min(lease == absl::ZeroDuration() ? config_.store.default_lease : lease, config_.store.max_lease);
    resp->set_lease_ms(static_cast<uint32_t>(absl::ToInt64Milliseconds(granted)));
  }
  resp->mutable_blocks()->Reserve(static_cast<int>(n));
  GetTally served;
  for (size_t i = 0; i < n; ++i) {
    v1::GetResponse::Block* out = resp->add_blocks();
    absl::StatusOr<storage::Lease> l = store_->Acquire(req.namespace_(), keys[i], lease);
    if (!l.ok()) {
      SetItemStatus(l.status(), out->mutable_status());
      continue;
    }
    if (req.inline_data()) {
      if (served.bytes + l->size > kMaxInlinePayloadBytes) {
        store_->Release(l->id).IgnoreError();  // our own fresh lease; cannot be unknown
        SetItemStatus(absl::ResourceExhaustedError(absl::StrCat(
                          "inline response would exceed 256MiB at key ", i, "; fetch the rest with GetStream")),
                      out->mutable_status());
        continue;
      }
      // The one copy: leased region -> response bytes (capacity reused from the pool).
      out->mutable_data()->assign(reinterpret_cast<const char*>(l->data), l->size);  // reuses capacity
      absl::Status rel = store_->Release(l->id);
      if (!rel.ok()) {
        // The lease expired while copying: the bytes may have been reused. Never serve them.
        out->clear_data();
        SetItemStatus(absl::UnavailableError(absl::StrCat("lease expired while copying key ", i, ": ",
                                                          rel.message())),
                      out->mutable_status());
        continue;
      }
    } else {
      out->set_lease_id(l->id);
      SetLocation(l->location, out->mutable_location());
    }
    // OK: status left absent (code 0).
    out->set_size(l->size);
    out->set_checksum(l->checksum);
    ++served.blocks;
    served.bytes += l->size;
  }
  if (unrecorded != nullptr) {
    *unrecorded = served;
  } else {
    RecordGet(req, served);
  }
  return grpc::Status::OK;
}

void KvHubService::RecordGet(const v1::GetRequest& req, const GetTally& served) {
  if (served.blocks > 0) metrics_->AddGetBytes(req.namespace_(), served.blocks, served.bytes);
  if (req.inline_data()) metrics_->AddGrpcBytes(/*get=*/true, served.bytes);  // leases: the bytes go by UCX
}

KvHubService::SliceLease* KvHubService::NewSliceLease(const storage::Lease& lease) {
  absl::MutexLock lock(&slice_lease_mu_);
  if (slice_lease_free_.empty()) {
    // Grows in batches; steady state reuses them (no allocation per block).
    for (int i = 0; i < 64; ++i) {
      slice_lease_storage_.push_back(std::make_unique<SliceLease>());
      slice_lease_free_.push_back(slice_lease_storage_.back().get());
    }
  }
  SliceLease* sl = slice_lease_free_.back();
  slice_lease_free_.pop_back();
  sl->service = this;
  sl->lease_id = lease.id;
  sl->hold = lease.hold;
  sl->refs.store(1, std::memory_order_relaxed);
  return sl;
}

void KvHubService::ReleaseSliceLease(void* arg) {
  auto* sl = static_cast<SliceLease*>(arg);
  if (sl->refs.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
  KvHubService* svc = sl->service;
  absl::Status s = svc->store_->Release(sl->lease_id);
  if (!s.ok()) {
    // The lease ran out while gRPC still held the bytes (a slow reader); the hold kept
    // them from being reused, so what was sent is the block's.
    KVHUB_LOG(debug, "zero-copy Get: lease {} ended before gRPC dropped its bytes: {}", sl->lease_id,
              s.ToString());
  }
  svc->store_->EndTransfer(storage::TransferAccess::kRead, sl->hold);
  absl::MutexLock lock(&svc->slice_lease_mu_);
  svc->slice_lease_free_.push_back(sl);
}

namespace {

// Protobuf wire helpers for the hand-assembled inline GetResponse.
size_t PutVarint(uint64_t v, uint8_t* out) {
  size_t n = 0;
  while (v >= 0x80) {
    out[n++] = static_cast<uint8_t>(v | 0x80);
    v >>= 7;
  }
  out[n++] = static_cast<uint8_t>(v);
  return n;
}
size_t VarintSize(uint64_t v) {
  size_t n = 1;
  while (v >= 0x80) {
    v >>= 7;
    ++n;
  }
  return n;
}

}  // namespace

grpc::Status KvHubService::DoGetInlineSlices(const v1::GetRequest& req, std::vector<grpc::Slice>* slices) {
  if (absl::Status s = ValidateGet(req); !s.ok()) return ToGrpc(s);
  const size_t n = req.keys().size() / kKeyBytes;
  std::span<const BlockKey> keys = ParseKeys(req.keys(), n);
  // The bytes are held until gRPC has sent them (AcquireOptions::hold); the slice's
  // destroy callback releases the lease and the hold.
  const absl::Duration lease = config_.store.max_lease;
  thread_local v1::GetResponse::Block header;
  thread_local std::string header_bytes;
  uint64_t blocks = 0, bytes = 0;
  for (size_t i = 0; i < n; ++i) {
    header.Clear();
    absl::StatusOr<storage::Lease> l =
        store_->Acquire(req.namespace_(), keys[i], lease, storage::AcquireOptions{.hold = true});
    if (l.ok() && bytes + l->size > kMaxInlinePayloadBytes) {
      store_->Release(l->id).IgnoreError();  // our own fresh lease and hold
      store_->EndTransfer(storage::TransferAccess::kRead, l->hold);
      l = absl::ResourceExhaustedError(
          absl::StrCat("inline response would exceed 256MiB at key ", i, "; fetch the rest with GetStream"));
    }
    if (!l.ok()) {
      SetItemStatus(l.status(), header.mutable_status());
    } else {
      header.set_size(l->size);  // OK: status left absent (code 0)
      header.set_checksum(l->checksum);
    }
    // Block = header fields, then (on a hit) field 6 `data` as tag, length, bytes.
    const uint64_t data_len = l.ok() ? l->size : 0;
    const size_t header_len = header.ByteSizeLong();
    const size_t data_field_len = l.ok() ? 1 + VarintSize(data_len) + data_len : 0;
    const uint64_t block_len = header_len + data_field_len;
    header_bytes.resize(1 + VarintSize(block_len) + header_len + (l.ok() ? 1 + VarintSize(data_len) : 0));
    uint8_t* p = reinterpret_cast<uint8_t*>(header_bytes.data());
    size_t at = 0;
    p[at++] = 0x0a;  // GetResponse.blocks = 1, length-delimited
    at += PutVarint(block_len, p + at);
    header.SerializeWithCachedSizesToArray(p + at);
    at += header_len;
    if (l.ok()) {
      p[at++] = 0x32;  // Block.data = 6, length-delimited
      at += PutVarint(data_len, p + at);
    }
    slices->emplace_back(header_bytes.data(), at);  // small copy into a gRPC slice
    if (l.ok()) {
      slices->emplace_back(const_cast<uint8_t*>(l->data), l->size, &KvHubService::ReleaseSliceLease,
                           NewSliceLease(*l));
      ++blocks;
      bytes += l->size;
    }
  }
  if (blocks > 0) metrics_->AddGetBytes(req.namespace_(), blocks, bytes);
  metrics_->AddGrpcBytes(/*get=*/true, bytes);
  return grpc::Status::OK;
}

// The reactor of an inline Get that answers with zero-copy slices: watched by
// stalled_sends_ from its answer until gRPC is done with the call.
class KvHubService::WatchedGetReactor final : public grpc::ServerUnaryReactor {
 public:
  WatchedGetReactor(KvHubService* service, grpc::CallbackServerContext* ctx)
      : service_(service), ticket_(service->stalled_sends_.Watch([ctx] { ctx->TryCancel(); })) {}
  void OnDone() override {
    service_->stalled_sends_.Unwatch(ticket_);
    delete this;
  }

 private:
  KvHubService* const service_;
  const uint64_t ticket_;
};

grpc::ServerUnaryReactor* KvHubService::Get(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* req,
                                            grpc::ByteBuffer* resp) {
  absl::Time start = Clock::Real()->Now();
  InflightScope scope(this);
  if (stopping()) return Finish(ctx, Rpc::kGet, start, StoppingStatus());
  thread_local v1::GetRequest request;  // reused: no allocation once warm
  // A reused message keeps its fields' capacity: after a request far larger than
  // a valid Get (which an unauthenticated caller can send), start afresh, so that
  // no thread keeps its memory for good, and hand what the allocator kept of it
  // back to the system (a 100 MiB request otherwise leaves most of it resident).
  absl::Cleanup trim = [] {
    constexpr size_t kKeep = size_t{1} << 20;
    if (request.keys().capacity() > kKeep || request.namespace_().capacity() > kKeep) {
      request = v1::GetRequest();
      // At most once a second: the trim walks every allocator arena under its lock,
      // and any caller can send such requests.
      static std::atomic<int64_t> last_trim_ms{0};
      const int64_t now_ms = absl::ToUnixMillis(Clock::Real()->Now());
      int64_t last = last_trim_ms.load(std::memory_order_relaxed);
      if (now_ms - last >= 1000 && last_trim_ms.compare_exchange_strong(last, now_ms)) malloc_trim(0);
    }
  };
  request.Clear();
  if (grpc::Status s = ParseRawRequest(req, &request); !s.ok()) return Finish(ctx, Rpc::kGet, start, s);
  if (grpc::Status a = Authorize(ctx, &request.namespace_()); !a.ok()) return Finish(ctx, Rpc::kGet, start, a);
  grpc::Status status;
  if (request.inline_data()) {
    thread_local std::vector<grpc::Slice> slices;
    slices.clear();
    status = DoGetInlineSlices(request, &slices);
    if (status.ok()) {
      grpc::ByteBuffer out(slices.data(), slices.size());
      resp->Swap(&out);
    }
    slices.clear();  // the ByteBuffer holds its own references
  } else {
    // Leases and locations: per-block sub-messages, so the response lives on a reused
    // arena (a heap message would allocate them on every call).
    google::protobuf::Arena& arena = ResponseArena();
    auto* response = google::protobuf::Arena::CreateMessage<v1::GetResponse>(&arena);
    GetTally served;  // counted once the leases are handed out, as UcxGet does
    status = DoGet(request, response, &served);
    if (status.ok() && ctx->IsCancelled()) {
      // The caller is gone (cancelled, past its deadline): it never learns these
      // leases, which would keep their blocks from eviction and count against its
      // namespace's lease share until they expire (up to max_lease).
      ReleaseUnannounced(*response);
      status = grpc::Status(grpc::StatusCode::CANCELLED, "Get cancelled; its leases were released");
    }
    if (status.ok()) status = SerializeRawResponse(*response, resp);
    if (status.ok()) RecordGet(request, served);
    arena.Reset();
  }
  // An inline response holds its blocks until gRPC has sent it: watched for a peer
  // that stops reading (CancelStalledSends).
  return Finish(ctx, Rpc::kGet, start, status,
                request.inline_data() && status.ok() ? new WatchedGetReactor(this, ctx) : nullptr);
}

size_t KvHubService::CancelStalledSends() {
  const size_t n = stalled_sends_.CancelStalled(config_.stalled_send_timeout);
  if (n > 0) {
    KVHUB_LOG(warn, "kvhubd: cancelled {} Get/GetStream call(s) whose response made no progress for {} "
              "(the peer stopped reading; stalled_send_ms)", n, absl::FormatDuration(config_.stalled_send_timeout));
  }
  return n;
}

google::protobuf::Arena& KvHubService::ResponseArena() {
  thread_local std::unique_ptr<char[]> initial_block(new char[64 << 10]);
  thread_local google::protobuf::Arena arena([] {
    google::protobuf::ArenaOptions o;
    o.initial_block = initial_block.get();
    o.initial_block_size = 64 << 10;
    return o;
  }());
  return arena;
}

// ---------------------------------------------------------------- GetStream

// Streams the requested blocks in key order: per block, acquire a lease and send its
// bytes in chunks of get_stream_chunk_bytes, each chunk a hand-framed GetChunk whose
// data is a zero-copy slice of the leased region; the lease ends when the reactor and
// gRPC have dropped every slice of the block. A miss is one chunk with its status.
class KvHubService::GetStreamReactor final : public grpc::ServerWriteReactor<grpc::ByteBuffer> {
 public:
  GetStreamReactor(KvHubService* service, grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* req)
      : service_(service), start_(Clock::Real()->Now()) {
    service_->inflight_.fetch_add(1, std::memory_order_acq_rel);
    if (service_->stopping()) {
      Done(StoppingStatus());
      return;
    }
    if (grpc::Status ps = ParseRawRequest(req, &req_); !ps.ok()) {
      Done(ps);
      return;
    }
    if (grpc::Status a = service_->Authorize(ctx, &req_.namespace_()); !a.ok()) {
      Done(a);
      return;
    }
    absl::Status s = ValidateGet(req_);
    if (!s.ok()) {
      Done(ToGrpc(s));
      return;
    }
    n_ = req_.keys().size() / kKeyBytes;
    chunk_bytes_ = service_->config_.get_stream_chunk_bytes;
    // Its chunks hold their blocks until gRPC has sent them: watched for a peer
    // that stops reading (CancelStalledSends).
    ticket_ = service_->stalled_sends_.Watch([ctx] { ctx->TryCancel(); });
    Next();
  }

  void OnWriteDone(bool ok) override {
    out_.Clear();  // our references to the chunk's slices
    if (ok) service_->stalled_sends_.Progress(ticket_);
    if (!ok) {     // the client went away (or the call was cancelled)
      DropBlock();
      Done(grpc::Status(grpc::StatusCode::CANCELLED, "GetStream write failed (client cancelled)"));
      return;
    }
    Next();
  }

  void OnDone() override {
    // Counted however the stream ended (a client that cancels after its first
    // chunks was sent them too): the blocks it started sending and their bytes.
    if (blocks_ > 0) service_->metrics_->AddGetBytes(req_.namespace_(), blocks_, bytes_);
    service_->metrics_->AddGrpcBytes(/*get=*/true, bytes_);
    out_.Clear();
    DropBlock();
    if (ticket_ != 0) service_->stalled_sends_.Unwatch(ticket_);
    service_->inflight_.fetch_sub(1, std::memory_order_acq_rel);
    delete this;
  }

 private:
  // Sends the next chunk, or finishes.
  void Next() {
    if (block_ != nullptr && offset_ >= size_) {
      DropBlock();
      ++index_;
    }
    bool first = false;
    absl::Status status;
    if (block_ == nullptr) {
      if (index_ >= n_) {
        Done(grpc::Status::OK);  // counted in OnDone
        return;
      }
      // The bytes leave zero-copy: they are held until gRPC drops the last chunk's
      // slice (AcquireOptions::hold); the lease is released then too.
      absl::StatusOr<storage::Lease> l =
          service_->store_->Acquire(req_.namespace_(), PackedKey(req_.keys(), index_),
                                    service_->config_.store.max_lease, storage::AcquireOptions{.hold = true});
      first = true;
      status = l.status();
      if (l.ok()) {
        block_ = service_->NewSliceLease(*l);  // the reactor's reference
        data_ = l->data;
        size_ = l->size;
        checksum_ = l->checksum;
        offset_ = 0;
        ++blocks_;
        bytes_ += size_;
      }
    }
    // Framing: index, [status, size, checksum on the first chunk], offset, data tag+len.
    DetachStatus();   // keep the status sub-message: Clear() would free it
    header_.Clear();
    header_.set_index(static_cast<uint32_t>(index_));
    if (first) {
      // Clients rely on the first chunk of a block carrying its status, OK included.
      AttachStatus(status);
      if (status.ok()) {
        header_.set_size(size_);
        header_.set_checksum(checksum_);
      }
    }
    uint64_t len = 0;
    if (block_ != nullptr) {
      len = std::min<uint64_t>(chunk_bytes_, size_ - offset_);
      header_.set_offset(offset_);
    }
    const size_t header_len = header_.ByteSizeLong();
    frame_.resize(header_len + (block_ != nullptr ? 1 + VarintSize(len) : 0));
    uint8_t* p = reinterpret_cast<uint8_t*>(frame_.data());
    header_.SerializeWithCachedSizesToArray(p);
    size_t at = header_len;
    if (block_ != nullptr) {
      p[at++] = 0x32;  // GetChunk.data = 6, length-delimited
      at += PutVarint(len, p + at);
    }
    slices_[0] = grpc::Slice(frame_.data(), at);
    size_t nslices = 1;
    if (block_ != nullptr) {
      slices_[1] = grpc::Slice(const_cast<uint8_t*>(data_ + offset_), len, &KvHubService::ReleaseSliceLease,
                               KvHubService::RefSliceLease(block_));
      nslices = 2;
      offset_ += len;
    } else {
      ++index_;  // a miss is a single chunk
    }
    grpc::ByteBuffer buf(slices_, nslices);
    out_.Swap(&buf);
    slices_[0] = grpc::Slice();
    slices_[1] = grpc::Slice();
    StartWrite(&out_);
  }

  void AttachStatus(const absl::Status& s) {
    if (!header_.has_status()) header_.set_allocated_status(spare_status_.release());
    v1::ItemStatus* st = header_.mutable_status();
    st->set_code(static_cast<int32_t>(s.code()));
    if (s.ok()) {
      st->clear_message();
    } else {
      st->set_message(s.message().data(), s.message().size());
    }
  }
  void DetachStatus() {
    if (header_.has_status()) spare_status_.reset(header_.release_status());
  }

  // Drops the reactor's reference to the current block's lease (gRPC may hold more).
  void DropBlock() {
    if (block_ == nullptr) return;
    KvHubService::ReleaseSliceLease(block_);
    block_ = nullptr;
  }

  void Done(const grpc::Status& status) {
    service_->metrics_->RecordRpc(Rpc::kGetStream, Clock::Real()->Now() - start_, static_cast<int>(status.error_code()));
    Finish(status);
  }

  KvHubService* const service_;
  const absl::Time start_;
  uint64_t ticket_ = 0;  // in stalled_sends_, once the stream sends
  v1::GetRequest req_;
  size_t n_ = 0;
  size_t index_ = 0;
  uint64_t chunk_bytes_ = 1 << 20;
  SliceLease* block_ = nullptr;  // current block's lease context (our reference)
  const uint8_t* data_ = nullptr;
  uint64_t size_ = 0;
  uint64_t checksum_ = 0;
  uint64_t offset_ = 0;
  uint64_t blocks_ = 0;
  uint64_t bytes_ = 0;
  v1::GetChunk header_;  // framing fields only; never holds data
  std::unique_ptr<v1::ItemStatus> spare_status_ = std::make_unique<v1::ItemStatus>();
  std::string frame_;
  grpc::Slice slices_[2];
  grpc::ByteBuffer out_;
};

grpc::ServerWriteReactor<grpc::ByteBuffer>* KvHubService::GetStream(grpc::CallbackServerContext* ctx,
                                                                    const grpc::ByteBuffer* req) {
  return new GetStreamReactor(this, ctx, req);
}

// ---------------------------------------------------------------- Release / Delete / Pin

grpc::Status KvHubService::DoRelease(const v1::ReleaseRequest& req, v1::ReleaseResponse* resp) {
  if (absl::Status s = ValidateIds("lease_ids", req.lease_ids()); !s.ok()) return ToGrpc(s);
  resp->mutable_items()->Reserve(req.lease_ids_size());
  for (uint64_t id : req.lease_ids()) SetItemStatus(store_->Release(id), resp->add_items());
  return grpc::Status::OK;
}

grpc::ServerUnaryReactor* KvHubService::Release(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* req,
                                                grpc::ByteBuffer* resp) {
  return Serve<v1::ReleaseRequest, v1::ReleaseResponse>(
      ctx, Rpc::kRelease, &release_alloc_, req, resp,
      [](const v1::ReleaseRequest& r) { return CallScope{nullptr, {storage::TransferAccess::kRead, &r.lease_ids()}}; },
      [this](const v1::ReleaseRequest& r, v1::ReleaseResponse* out) { return DoRelease(r, out); });
}

grpc::Status KvHubService::DoDelete(const v1::DeleteRequest& req, v1::DeleteResponse* resp) {
  if (absl::Status s = ValidateDelete(req); !s.ok()) return ToGrpc(s);
  const size_t n = req.keys().size() / kKeyBytes;
  std::span<const BlockKey> keys = ParseKeys(req.keys(), n);
  resp->mutable_items()->Reserve(static_cast<int>(n));
  for (const BlockKey& key : keys) SetItemStatus(store_->Delete(req.namespace_(), key), resp->add_items());
  return grpc::Status::OK;
}

grpc::ServerUnaryReactor* KvHubService::Delete(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* req,
                                               grpc::ByteBuffer* resp) {
  return Serve<v1::DeleteRequest, v1::DeleteResponse>(
      ctx, Rpc::kDelete, nullptr, req, resp, [](const v1::DeleteRequest& r) { return CallScope{&r.namespace_()}; },
      [this](const v1::DeleteRequest& r, v1::DeleteResponse* out) { return DoDelete(r, out); });
}

grpc::Status KvHubService::DoPin(const v1::PinRequest& req, v1::PinResponse* resp) {
  if (absl::Status s = ValidatePin(req); !s.ok()) return ToGrpc(s);
  const size_t n = req.keys().size() / kKeyBytes;
  std::span<const BlockKey> keys = ParseKeys(req.keys(), n);
  resp->mutable_items()->Reserve(static_cast<int>(n));
  for (const BlockKey& key : keys) SetItemStatus(store_->Pin(req.namespace_(), key, req.pin()), resp->add_items());
  return grpc::Status::OK;
}

grpc::ServerUnaryReactor* KvHubService::Pin(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* req,
                                            grpc::ByteBuffer* resp) {
  return Serve<v1::PinRequest, v1::PinResponse>(
      ctx, Rpc::kPin, nullptr, req, resp, [](const v1::PinRequest& r) { return CallScope{&r.namespace_()}; },
      [this](const v1::PinRequest& r, v1::PinResponse* out) { return DoPin(r, out); });
}

// ---------------------------------------------------------------- Stats / Health

grpc::Status KvHubService::DoStats(v1::StatsResponse* resp) {
  storage::BlockStoreStats st = store_->Stats();
  resp->set_node_id(node_id());
  resp->set_version(kVersion);
  v1::TierStats* t = resp->add_tiers();
  t->set_tier("host");
  t->set_capacity_bytes(st.capacity_bytes);
  t->set_used_bytes(st.used_bytes);
  t->set_blocks(st.blocks);
  t->set_evictions(st.evictions);
  t->set_pinned_blocks(st.pinned_blocks);
  t->set_leased_blocks(st.leased_blocks);
  t->set_reserved_bytes(st.reserved_bytes);
  if (tiered_ != nullptr) {
    // Copies of host blocks, served once the host evicts them (not counted above).
    const storage::TierStats g = tiered_->tier_stats();
    v1::TierStats* gt = resp->add_tiers();
    gt->set_tier("gpu");
    gt->set_capacity_bytes(g.gpu_off ? 0 : g.gpu_capacity_bytes);
    gt->set_used_bytes(g.gpu_used_bytes);
    gt->set_blocks(g.gpu_blocks);
    gt->set_evictions(g.gpu_evictions);
  }
  resp->set_lookup_requested_keys(metrics_->lookup_requested_keys());
  resp->set_lookup_hit_keys(metrics_->lookup_hit_keys());
  resp->set_lookup_requested_tokens(metrics_->lookup_requested_tokens());
  resp->set_lookup_hit_tokens(metrics_->lookup_hit_tokens());
  resp->set_get_bytes(metrics_->get_bytes());
  resp->set_put_bytes(metrics_->put_bytes());
  resp->set_checksum_failures(st.checksum_failures);
  resp->set_reservations_expired(st.reservations_expired);
  resp->set_leases_expired(st.leases_expired);
  resp->set_uptime_ms(absl::ToInt64Milliseconds(Clock::Real()->Now() - started_));
  resp->set_eviction_policy(store_->PolicyName());
  const storage::BlockStore::PolicyState policy = store_->PolicyStateNow();
  resp->set_eviction_active_policy(policy.active);
  resp->set_eviction_policy_switches(policy.switches);
  v1::TransportBytes* g = resp->add_transport_bytes();
  g->set_transport("grpc");
  g->set_get_bytes(metrics_->grpc_get_bytes());
  g->set_put_bytes(metrics_->grpc_put_bytes());
  v1::TransportBytes* u = resp->add_transport_bytes();
  u->set_transport("ucx");
  if (ucx_ != nullptr) {
    u->set_get_bytes(ucx_->served_get_bytes());
    u->set_put_bytes(ucx_->served_put_bytes());
    resp->set_ucx_status(ucx_->status_text());
    resp->set_ucx_connections(ucx_->connections());
    resp->set_ucx_sessions(ucx_sessions());
    resp->set_ucx_worker_resets(ucx_->worker_resets());
  } else {
    resp->set_ucx_status("ucx is not set up on this shard");
  }
  return grpc::Status::OK;
}

grpc::ServerUnaryReactor* KvHubService::Stats(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* req,
                                              grpc::ByteBuffer* resp) {
  return Serve<v1::StatsRequest, v1::StatsResponse>(
      ctx, Rpc::kStats, nullptr, req, resp, [](const v1::StatsRequest&) { return CallScope{}; },
      [this](const v1::StatsRequest&, v1::StatsResponse* out) { return DoStats(out); });
}

grpc::ServerUnaryReactor* KvHubService::Connect(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* req,
                                                grpc::ByteBuffer* resp) {
  return Serve<v1::ConnectRequest, v1::ConnectResponse>(
      ctx, Rpc::kConnect, nullptr, req, resp,
      [](const v1::ConnectRequest&) { return CallScope{nullptr, {}, /*every_namespace=*/true}; },
      [this, ctx](const v1::ConnectRequest& r, v1::ConnectResponse* out) {
        // A caller that gave up while its address waited for the vetter gets no
        // connection: nobody would watch it, and it would hold a slot until the grace.
        auto gave_up = [ctx] { return ctx->IsCancelled() || ctx->deadline() <= std::chrono::system_clock::now(); };
        const std::optional<absl::string_view> authorization = AuthorizationOf(ctx);
        grpc::Status st = DoConnect(r, out, UcxOwner(authorization.value_or("")), gave_up);
        if (st.ok() && authorization.has_value() && !RememberConnAuth(out->conn_id(), *authorization)) {
          return grpc::Status(grpc::StatusCode::UNAUTHENTICATED,
                              "the shard's tokens were reloaded while this Connect ran, and this token no longer "
                              "allows UCX (Connect needs a token for every namespace, '*')");
        }
        return st;
      });
}

// Not through Serve: Health answers without a token and while stopping (DRAINING).
grpc::ServerUnaryReactor* KvHubService::Health(grpc::CallbackServerContext* ctx, const grpc::ByteBuffer* req,
                                               grpc::ByteBuffer* resp) {
  absl::Time start = Clock::Real()->Now();
  v1::HealthRequest request;
  grpc::Status status = ParseRawRequest(req, &request);
  if (status.ok()) {
    v1::HealthResponse response;
    response.set_state(draining() ? v1::HealthResponse::DRAINING : v1::HealthResponse::SERVING);
    response.set_node_id(node_id());
    status = SerializeRawResponse(response, resp);
  }
  return Finish(ctx, Rpc::kHealth, start, status);
}

}  // namespace kvhub::cachesvc
