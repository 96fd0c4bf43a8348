#include "client/client.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "client/buffer_overlap.h"
#include "client/fork_guard.h"
#include "client/grpc_data_plane.h"
#ifdef KVHUB_HAVE_UCX
#include "client/ucx_data_plane.h"
#endif
#include "common/clock.h"
#include "common/fd_limit.h"
#include "common/log.h"
#include "client/shard.h"
#include "client/thread_pool.h"
#include "client/wire.h"
#include "common/hash.h"

namespace kvhub {
namespace {

constexpr uint64_t kMaxBlockBytes = 256ull << 20;  // proto hard cap
constexpr uint64_t kMaxReserveBatchBytes = 256ull << 20;

std::string KeyString(const BlockKey& k) {
  std::string s(16, '\0');
  k.ToBytes(reinterpret_cast<uint8_t*>(s.data()));
  return s;
}

std::string KeysString(std::span<const BlockKey> keys, const std::vector<size_t>& items) {
  std::string s(items.size() * 16, '\0');
  for (size_t i = 0; i < items.size(); ++i) {
    keys[items[i]].ToBytes(reinterpret_cast<uint8_t*>(s.data()) + 16 * i);
  }
  return s;
}

absl::Status FromItem(const v1::ItemStatus& st, const BlockKey& key) {
  if (st.code() == 0) return absl::OkStatus();
  return absl::Status(static_cast<absl::StatusCode>(st.code()),
                      absl::StrCat("block ", key.Hex(), ": ",
                                   st.message().empty() ? "error" : st.message()));
}

// stored / skipped / failed from r->outcome.
void CountOutcomes(PutResult* r) {
  r->stored = r->skipped = r->failed = 0;
  for (PutOutcome o : r->outcome) {
    switch (o) {
      case PutOutcome::kStored: ++r->stored; break;
      case PutOutcome::kSkipped: ++r->skipped; break;
      case PutOutcome::kFailed: ++r->failed; break;
    }
  }
}

absl::Status CountMismatch(absl::string_view what, const std::string& addr, size_t got,
                           size_t want) {
  return absl::DataLossError(
      absl::StrCat(what, " ", addr, ": response has ", got, " items, request had ", want));
}

size_t LeadingRun(const std::vector<absl::Status>& st) {
  size_t n = 0;
  while (n < st.size() && st[n].ok()) ++n;
  return n;
}

}  // namespace

absl::StatusOr<std::unique_ptr<Client>> Client::Create(ClientConfig config) {
  if (absl::Status s = CheckNotForkedAfterClient(); !s.ok()) return s;
  WatchForkAfterClient();  // before the data plane starts threads
  if (absl::Status s = config.Validate(); !s.ok()) return s;
  std::unique_ptr<DataPlane> dp;
  if (config.transport == TransportMode::kGrpc) {
    dp = std::make_unique<GrpcDataPlane>(config);
  } else {
#ifdef KVHUB_HAVE_UCX
    dp = std::make_unique<UcxDataPlane>(config);
#else
    if (config.transport == TransportMode::kUcx) {
      return absl::FailedPreconditionError("transport=ucx: this kvhub client was built without UCX");
    }
    KVHUB_LOG(warn, "kvhub client: built without UCX; every shard uses gRPC");
    dp = std::make_unique<GrpcDataPlane>(config);
#endif
  }
  return Create(std::move(config), std::move(dp));
}

std::vector<ShardTransportStats> Client::TransportStats() const {
  if (!CheckNotForkedAfterClient().ok()) {
    std::vector<ShardTransportStats> out(shards_.size());
    for (size_t i = 0; i < shards_.size(); ++i) {
      out[i].address = shards_[i]->address();
      out[i].transport = "unusable: this process is a fork of the client's";
    }
    return out;
  }
  const std::vector<ShardTransportStats> known = data_plane_->TransportStats();
  std::vector<ShardTransportStats> out;
  for (const auto& sh : shards_) {
    auto it = std::find_if(known.begin(), known.end(),
                           [&](const ShardTransportStats& k) { return k.address == sh->address(); });
    if (it != known.end()) {
      out.push_back(*it);
    } else {
      ShardTransportStats st;
      st.address = sh->address();
      st.transport = data_plane_->name() == "grpc" ? "grpc (transport=grpc)" : "not connected yet";
      out.push_back(std::move(st));
    }
  }
  return out;
}

absl::StatusOr<std::unique_ptr<Client>> Client::Create(ClientConfig config,
                                                       std::unique_ptr<DataPlane> data_plane) {
  if (absl::Status s = CheckNotForkedAfterClient(); !s.ok()) return s;
  WatchForkAfterClient();  // before the channels and the pool start threads
  if (absl::Status s = config.Validate(); !s.ok()) return s;
  if (data_plane == nullptr) return absl::InvalidArgumentError("data_plane is null");
  std::vector<RendezvousMember> rm;
  for (const MemberConfig& m : config.members) rm.push_back({m.address, m.weight});
  absl::StatusOr<Rendezvous> placement = Rendezvous::Create(std::move(rm));
  if (!placement.ok()) return placement.status();
  absl::StatusOr<ChannelSecurity> security = ChannelSecurity::FromConfig(config);
  if (!security.ok()) return security.status();
  // One TCP connection per channel: a process that cannot open them gets UNAVAILABLE
  // from the members past its open files limit (the library does not raise it).
  const uint64_t connections = config.members.size() * static_cast<uint64_t>(config.channels_per_member);
  if (absl::StatusOr<OpenFileLimits> fds = ReadOpenFileLimits(); fds.ok() && connections + 64 > fds->soft) {
    KVHUB_LOG(warn, "kvhub client: {} members x {} channels need {} connections, but this process may hold only {} "
              "open files (hard limit {}): raise the soft limit (setrlimit RLIMIT_NOFILE, ulimit -n) or lower "
              "channels_per_member", config.members.size(), config.channels_per_member, connections, fds->soft,
              fds->hard);
  }
  return std::unique_ptr<Client>(
      new Client(std::move(config), *std::move(placement), std::move(data_plane), *security));
}

Client::Client(ClientConfig config, Rendezvous placement, std::unique_ptr<DataPlane> data_plane,
               const ChannelSecurity& security)
    : config_(std::move(config)),
      placement_(std::move(placement)),
      data_plane_(std::move(data_plane)),
      pool_(std::make_unique<ThreadPool>(config_.concurrency)) {
  for (const MemberConfig& m : config_.members) {
    shards_.push_back(std::make_unique<Shard>(m.address, config_, security));
  }
}

Client::~Client() {
  if (!CheckNotForkedAfterClient().ok()) {
    // A fork's child: the threads these would join, and the locks they would take,
    // belong to the parent (client/fork_guard.h). Leak them.
    for (auto& shard : shards_) (void)shard.release();
    (void)data_plane_.release();
    (void)pool_.release();
  }
}

const std::string& Client::MemberAddress(size_t index) const { return shards_[index]->address(); }

std::vector<Client::Batch> Client::MakeBatches(std::span<const BlockKey> keys, size_t max_keys,
                                               const std::vector<uint64_t>* sizes,
                                               uint64_t max_bytes) const {
  std::vector<std::vector<size_t>> per_shard(shards_.size());
  for (size_t i = 0; i < keys.size(); ++i) per_shard[placement_.Owner(keys[i])].push_back(i);
  std::vector<Batch> batches;
  for (size_t s = 0; s < per_shard.size(); ++s) {
    Batch cur{s, {}};
    uint64_t bytes = 0;
    for (size_t i : per_shard[s]) {
      const uint64_t sz = sizes != nullptr ? (*sizes)[i] : 0;
      if (!cur.items.empty() &&
          (cur.items.size() >= max_keys || (sizes != nullptr && bytes + sz > max_bytes))) {
        batches.push_back(std::move(cur));
        cur = Batch{s, {}};
        bytes = 0;
      }
      cur.items.push_back(i);
      bytes += sz;
    }
    if (!cur.items.empty()) batches.push_back(std::move(cur));
  }
  return batches;
}

// ---------------------------------------------------------------- Lookup

absl::StatusOr<LookupResult> Client::Lookup(absl::string_view ns, std::span<const BlockKey> keys,
                                            bool prefix, uint32_t block_tokens,
                                            absl::string_view model) {
  if (absl::Status s = CheckNotForkedAfterClient(); !s.ok()) return s;
  if (absl::Status s = ValidateNamespace(ns); !s.ok()) return s;
  // The shards' limits on the metrics labels (kvhub.proto): refused here whole, or every
  // shard would refuse its batch and the result would say "unreachable" for each key.
  if (block_tokens > (1u << 20)) {
    return absl::InvalidArgumentError(absl::StrCat("lookup: block_tokens ", block_tokens, " exceeds 1048576"));
  }
  if (model.size() > 256 ||
      std::any_of(model.begin(), model.end(), [](char c) { return static_cast<unsigned char>(c) < 0x20 || c == 0x7f; })) {
    return absl::InvalidArgumentError("lookup: model must be <= 256 bytes without control bytes");
  }
  LookupResult out;
  out.keys.assign(keys.begin(), keys.end());
  out.present.assign(keys.size(), 0);
  out.answered.assign(keys.size(), 0);
  if (keys.empty()) return out;
  std::vector<Batch> batches = MakeBatches(keys, config_.max_keys_per_rpc);
  std::vector<absl::Status> errors(batches.size());
  RunParallel(pool_.get(), batches.size(), [&](size_t b) {
    const Batch& batch = batches[b];
    Shard& shard = *shards_[batch.shard];
    v1::LookupRequest req;
    req.set_namespace_(std::string(ns));
    req.set_keys(KeysString(keys, batch.items));
    req.set_prefix(prefix);
    req.set_block_tokens(block_tokens);
    req.set_model(std::string(model));
    v1::LookupResponse resp;
    absl::Status s = shard.Lookup(req, &resp);
    if (s.ok() && resp.present().size() != batch.items.size()) {
      s = CountMismatch("Lookup", shard.address(), resp.present().size(), batch.items.size());
    }
    if (!s.ok()) {
      errors[b] = s;
      return;
    }
    for (size_t i = 0; i < batch.items.size(); ++i) {
      out.present[batch.items[i]] = resp.present()[i] == 1 ? 1 : 0;
      out.answered[batch.items[i]] = 1;
    }
  });
  for (size_t b = 0; b < batches.size(); ++b) {
    if (errors[b].ok()) continue;
    out.unreachable_keys += batches[b].items.size();
    if (out.first_error.ok()) out.first_error = errors[b];
  }
  while (out.hit_blocks < keys.size() && out.present[out.hit_blocks]) ++out.hit_blocks;
  out.hit_tokens = static_cast<uint64_t>(out.hit_blocks) * block_tokens;
  return out;
}

absl::StatusOr<LookupResult> Client::LookupPrefix(absl::string_view ns, const ModelSpec& spec,
                                                  std::span<const int32_t> tokens) {
  if (absl::Status s = spec.Validate(); !s.ok()) return s;
  if (absl::Status s = ValidateNamespace(ns); !s.ok()) return s;
  std::vector<BlockKey> keys = BlockKeys(ns, spec, tokens);
  return Lookup(ns, keys, /*prefix=*/true, spec.block_tokens, spec.model);
}

// ---------------------------------------------------------------- Put

std::vector<Client::PutJob> Client::MakePutJobs(std::span<const BlockKey> keys,
                                                std::span<const uint64_t> sizes) const {
  // Inline and reserved blocks are batched separately, per shard.
  std::vector<PutJob> jobs;
  for (bool inl : {true, false}) {
    std::vector<BlockKey> sub_keys;
    std::vector<uint64_t> sub_sizes;
    std::vector<size_t> map;
    for (size_t i = 0; i < keys.size(); ++i) {
      if ((sizes[i] <= config_.inline_put_max_block_bytes) != inl) continue;
      sub_keys.push_back(keys[i]);
      sub_sizes.push_back(sizes[i]);
      map.push_back(i);
    }
    const uint64_t max_bytes = inl ? config_.max_inline_batch_bytes : kMaxReserveBatchBytes;
    for (Batch& b : MakeBatches(sub_keys, config_.max_keys_per_rpc, &sub_sizes, max_bytes)) {
      for (size_t& item : b.items) item = map[item];
      jobs.push_back(PutJob{inl, std::move(b)});
    }
  }
  return jobs;
}

size_t Client::MostPutCallsPerShard(std::span<const BlockKey> keys, std::span<const uint64_t> sizes) const {
  std::vector<size_t> calls(shards_.size(), 0);
  size_t most = 0;
  for (const PutJob& j : MakePutJobs(keys, sizes)) most = std::max(most, ++calls[j.batch.shard]);
  return most;
}

absl::StatusOr<PutResult> Client::Put(absl::string_view ns, std::span<const BlockPut> blocks) {
  if (absl::Status s = CheckNotForkedAfterClient(); !s.ok()) return s;
  if (absl::Status s = ValidateNamespace(ns); !s.ok()) return s;
  for (size_t i = 0; i < blocks.size(); ++i) {
    const uint64_t n = blocks[i].data.size();
    if (n == 0 || n > kMaxBlockBytes) {
      return absl::InvalidArgumentError(
          absl::StrCat("block ", i, " is ", n, " bytes; blocks must be 1 byte .. 256 MiB"));
    }
  }
  PutResult out;
  out.outcome.assign(blocks.size(), PutOutcome::kFailed);
  out.errors.assign(blocks.size(), absl::OkStatus());
  if (blocks.empty()) return out;

  std::vector<BlockKey> keys(blocks.size());
  std::vector<uint64_t> sizes(blocks.size());
  for (size_t i = 0; i < blocks.size(); ++i) {
    keys[i] = blocks[i].key;
    sizes[i] = blocks[i].data.size();
  }
  const std::vector<PutJob> jobs = MakePutJobs(keys, sizes);
  RunParallel(pool_.get(), jobs.size(), [&](size_t j) {
    Shard& shard = *shards_[jobs[j].batch.shard];
    if (jobs[j].inline_put && !data_plane_->WantsAllPutsReserved(shard)) {
      PutInline(ns, shard, blocks, jobs[j].batch.items, &out);
    } else {
      PutReserved(ns, shard, blocks, jobs[j].batch.items, &out);
    }
  });
  CountOutcomes(&out);
  for (size_t i = 0; i < blocks.size(); ++i) {
    if (out.outcome[i] == PutOutcome::kStored) out.bytes_uploaded += sizes[i];
  }
  return out;
}

namespace {
// How long a commit or an abort answered busy (a transfer still in its reservation)
// waits before each of its next tries (~0.2 s in all).
constexpr absl::Duration kBusyReservationWaits[] = {absl::Milliseconds(10), absl::Milliseconds(40),
                                                    absl::Milliseconds(160)};

PutItemView ItemView(const BlockPut& b, bool with_data) {
  PutItemView v;
  v.key = KeyString(b.key);
  if (b.parent.has_value()) v.parent = KeyString(*b.parent);
  v.checksum = Xxh3_64(b.data.data(), b.data.size());
  v.pin = b.pin;
  if (with_data) {
    v.data = b.data;
  } else {
    v.size = b.data.size();
  }
  return v;
}

// PutAbort of `ids` (none: no call, OK). The call's status, with a reply of the
// wrong length as DATA_LOSS; the per-item answers in *resp. A reservation with a
// transfer still in it answers FAILED_PRECONDITION (the shard's receive can outlive
// the client's side of it: a UCX put past its deadline); left so, it would keep
// every other publisher of the key out (ABORTED) until reservation_timeout, so such
// items are asked again a few times (~0.2 s in all); their last answers stay.
absl::Status AbortReservations(Shard& shard, const google::protobuf::RepeatedField<uint64_t>& ids,
                               v1::PutAbortResponse* resp) {
  if (ids.empty()) return absl::OkStatus();
  v1::PutAbortRequest req;
  *req.mutable_reservation_ids() = ids;
  absl::Status a = shard.PutAbort(req, resp);
  if (a.ok() && resp->items_size() != ids.size()) {
    a = CountMismatch("PutAbort", shard.address(), resp->items_size(), ids.size());
  }
  if (!a.ok()) return a;
  for (absl::Duration wait : kBusyReservationWaits) {
    std::vector<int> busy;
    v1::PutAbortRequest again;
    for (int k = 0; k < resp->items_size(); ++k) {
      if (resp->items(k).code() != static_cast<int>(absl::StatusCode::kFailedPrecondition)) continue;
      busy.push_back(k);
      again.add_reservation_ids(ids[k]);
    }
    if (busy.empty()) break;
    absl::SleepFor(wait);
    v1::PutAbortResponse later;
    if (!shard.PutAbort(again, &later).ok() || later.items_size() != again.reservation_ids_size()) break;
    for (size_t j = 0; j < busy.size(); ++j) *resp->mutable_items(busy[j]) = later.items(static_cast<int>(j));
  }
  return a;
}

void SetOutcome(const v1::ItemStatus& st, const BlockKey& key, PutOutcome* outcome,
                absl::Status* error) {
  if (st.code() == 0) {
    *outcome = PutOutcome::kStored;
    *error = absl::OkStatus();  // an earlier answer's (a busy commit tried again) goes
  } else if (st.code() == static_cast<int>(absl::StatusCode::kAlreadyExists) ||
             st.code() == static_cast<int>(absl::StatusCode::kAborted)) {
    // Stored already, or being stored right now by a concurrent publisher.
    *outcome = PutOutcome::kSkipped;
    *error = absl::OkStatus();
  } else {
    *outcome = PutOutcome::kFailed;
    *error = FromItem(st, key);
  }
}
}  // namespace

void Client::PutInline(absl::string_view ns, Shard& shard, std::span<const BlockPut> blocks,
                       const std::vector<size_t>& items, PutResult* result) {
  std::vector<PutItemView> views;
  views.reserve(items.size());
  for (size_t i : items) views.push_back(ItemView(blocks[i], /*with_data=*/true));
  BorrowedBytes borrowed;  // outlives req: waits until gRPC let go of the payload
  v1::PutResponse resp;
  absl::Status s;
  {
    grpc::ByteBuffer req = EncodePutRequest(ns, views, &borrowed);
    s = shard.PutRaw(req, &resp);
  }
  if (s.ok() && resp.items_size() != static_cast<int>(items.size())) {
    s = CountMismatch("Put", shard.address(), resp.items_size(), items.size());
  }
  if (s.ok()) {
    uint64_t sent = 0;
    for (size_t i : items) sent += blocks[i].data.size();
    data_plane_->RecordInlinePut(shard, sent);
  }
  for (size_t k = 0; k < items.size(); ++k) {
    const size_t i = items[k];
    if (!s.ok()) {
      result->outcome[i] = PutOutcome::kFailed;
      result->errors[i] = s;
    } else {
      SetOutcome(resp.items(static_cast<int>(k)), blocks[i].key, &result->outcome[i],
                 &result->errors[i]);
    }
  }
}

void Client::PutReserved(absl::string_view ns, Shard& shard, std::span<const BlockPut> blocks,
                         const std::vector<size_t>& items, PutResult* result) {
  auto fail_all = [&](const std::vector<size_t>& which, const absl::Status& s) {
    for (size_t i : which) {
      result->outcome[i] = PutOutcome::kFailed;
      result->errors[i] = s;
    }
  };
  std::vector<PutItemView> views;
  views.reserve(items.size());
  for (size_t i : items) views.push_back(ItemView(blocks[i], /*with_data=*/false));
  v1::PutStartResponse started;
  absl::Status s;
  // The shard counts a reservation's time from when it answers, after we sent:
  // counting from here errs on the safe side, whatever the two hosts' clocks say.
  const absl::Time sent = Clock::Real()->Now();
  int start_attempts = 0;
  {
    BorrowedBytes none;
    s = shard.PutStartRaw(EncodePutRequest(ns, views, &none), &started, &start_attempts);
  }
  if (s.ok() && started.items_size() != static_cast<int>(items.size())) {
    s = CountMismatch("PutStart", shard.address(), started.items_size(), items.size());
    // Whatever it reserved, nobody will commit: give it back now rather than hold
    // the keys (a publisher of them gets ABORTED) until the reservation timeout.
    google::protobuf::RepeatedField<uint64_t> ids;
    for (const auto& r : started.items()) {
      if (r.reservation_id() != 0) ids.Add(r.reservation_id());
    }
    v1::PutAbortResponse resp;
    if (absl::Status a = AbortReservations(shard, ids, &resp); !a.ok()) {
      KVHUB_LOG(debug, "kvhub client: aborting the reservations of a malformed PutStart reply from {}: {}",
                shard.address(), a.ToString());
    }
  }
  if (!s.ok()) return fail_all(items, s);

  std::vector<size_t> reserved;  // indices into blocks
  std::vector<BlockWrite> writes;
  v1::PutCommitRequest commit;
  for (size_t k = 0; k < items.size(); ++k) {
    const size_t i = items[k];
    const auto& r = started.items(static_cast<int>(k));
    SetOutcome(r.status(), blocks[i].key, &result->outcome[i], &result->errors[i]);
    if (start_attempts > 1 && r.status().code() == static_cast<int>(absl::StatusCode::kAborted)) {
      // "Another reservation is in progress" may be our own, made by an attempt whose
      // reply was lost: nobody will commit it, so this block is not being stored.
      result->outcome[i] = PutOutcome::kFailed;
      result->errors[i] = absl::AbortedError(absl::StrCat(
          "block ", blocks[i].key.Hex(), ": PutStart to ", shard.address(), " was retried (a reply was lost) and ",
          "the block has a reservation in progress, possibly this client's own from the lost attempt; the shard "
          "reclaims it after its reservation_timeout, publish again then"));
    }
    if (result->outcome[i] != PutOutcome::kStored) continue;  // skipped or failed
    result->outcome[i] = PutOutcome::kFailed;                 // until committed
    reserved.push_back(i);
    BlockWrite w;
    w.reservation_id = r.reservation_id();
    w.location = RemoteLocation{r.location().region(), r.location().offset(),
                                r.location().size(), r.location().rkey_id()};
    w.data = blocks[i].data;
    // 0: less than a millisecond left (or a shard from before expires_in_ms, whose
    // wall-clock expires_unix_ms this client does not trust: the hosts' clocks may
    // differ, and a late one-sided put could land in memory reused meanwhile).
    w.expires = sent + absl::Milliseconds(r.expires_in_ms());
    w.incarnation = started.incarnation();
    writes.push_back(w);
    commit.add_reservation_ids(r.reservation_id());
  }
  if (reserved.empty()) return;
  auto abort = [&] {
    v1::PutAbortResponse resp;
    // Best effort (a busy reservation asked again): one left is reclaimed by its timeout.
    (void)AbortReservations(shard, commit.reservation_ids(), &resp).ok();
  };
  s = data_plane_->WriteReserved(shard, writes);
  if (!s.ok()) {
    abort();
    return fail_all(reserved, s);
  }
  v1::PutCommitResponse committed;
  int commit_attempts = 0;
  s = shard.PutCommit(commit, &committed, &commit_attempts);
  if (s.ok() && committed.items_size() != static_cast<int>(reserved.size())) {
    s = CountMismatch("PutCommit", shard.address(), committed.items_size(), reserved.size());
  }
  if (!s.ok()) {
    // Failed whole, yet an attempt may have reached the shard and committed (its
    // reply lost, or the deadline passed while it ran): such blocks were reported
    // failed although stored. The abort tells: NOT_FOUND is a reservation gone
    // (committed, or expired), and the block's presence tells which.
    fail_all(reserved, s);
    v1::PutAbortResponse aborted;
    const absl::Status a = AbortReservations(shard, commit.reservation_ids(), &aborted);
    std::vector<size_t> gone;
    for (size_t k = 0; a.ok() && k < reserved.size(); ++k) {
      if (aborted.items(static_cast<int>(k)).code() == static_cast<int>(absl::StatusCode::kNotFound)) {
        gone.push_back(reserved[k]);
      }
    }
    if (gone.empty()) return;
    ResolveLostCommits(ns, shard, blocks, gone, result);
    for (size_t i : gone) {
      if (result->outcome[i] != PutOutcome::kStored) result->errors[i] = s;  // not stored: the commit's error
    }
    return;
  }
  std::vector<size_t> unsure;  // NOT_FOUND after a retried commit: maybe committed by the lost attempt
  std::vector<size_t> busy;    // FAILED_PRECONDITION: still reserved (being committed, a transfer in it)
  v1::PutCommitRequest again;
  for (size_t k = 0; k < reserved.size(); ++k) {
    const size_t i = reserved[k];
    const v1::ItemStatus& st = committed.items(static_cast<int>(k));
    SetOutcome(st, blocks[i].key, &result->outcome[i], &result->errors[i]);
    if (commit_attempts > 1 && st.code() == static_cast<int>(absl::StatusCode::kNotFound)) unsure.push_back(i);
    if (st.code() == static_cast<int>(absl::StatusCode::kFailedPrecondition)) {
      busy.push_back(i);
      again.add_reservation_ids(commit.reservation_ids(static_cast<int>(k)));
    }
  }
  if (!busy.empty()) RetryBusyCommits(shard, blocks, busy, std::move(again), &unsure, result);
  if (!unsure.empty()) ResolveLostCommits(ns, shard, blocks, unsure, result);
}

void Client::RetryBusyCommits(Shard& shard, std::span<const BlockPut> blocks, std::vector<size_t> busy,
                              v1::PutCommitRequest again, std::vector<size_t>* unsure, PutResult* result) {
  // The shard keeps such a reservation (a retry may commit it): left alone, it
  // would keep every other publisher of the key out (ABORTED) until it expired.
  // Commit it again a few times, then give it back.
  int commits = 1;  // the first, which answered busy
  for (absl::Duration wait : kBusyReservationWaits) {
    absl::SleepFor(wait);
    v1::PutCommitResponse resp;
    absl::Status s = shard.PutCommit(again, &resp);
    if (s.ok() && resp.items_size() != again.reservation_ids_size()) {
      s = CountMismatch("PutCommit", shard.address(), resp.items_size(), again.reservation_ids_size());
    }
    if (!s.ok()) break;  // the shard is unreachable now: abort below (best effort)
    ++commits;
    std::vector<size_t> still;
    v1::PutCommitRequest next;
    for (size_t k = 0; k < busy.size(); ++k) {
      const size_t i = busy[k];
      const v1::ItemStatus& st = resp.items(static_cast<int>(k));
      SetOutcome(st, blocks[i].key, &result->outcome[i], &result->errors[i]);
      if (st.code() == static_cast<int>(absl::StatusCode::kNotFound)) {
        unsure->push_back(i);  // committed meanwhile by the attempt that held it, or expired
      } else if (st.code() == static_cast<int>(absl::StatusCode::kFailedPrecondition)) {
        still.push_back(i);
        next.add_reservation_ids(again.reservation_ids(static_cast<int>(k)));
      }
    }
    busy = std::move(still);
    again = std::move(next);
    if (busy.empty()) return;
  }
  v1::PutAbortResponse resp;
  const absl::Status a = AbortReservations(shard, again.reservation_ids(), &resp);
  for (size_t k = 0; k < busy.size(); ++k) {
    const size_t i = busy[k];
    absl::Status aborted = a;
    if (a.ok()) aborted = FromItem(resp.items(static_cast<int>(k)), blocks[i].key);
    if (absl::IsNotFound(aborted)) {
      // Gone before the abort: committed by the attempt that held it (or expired).
      // The block's presence tells which (ResolveLostCommits).
      unsure->push_back(i);
      continue;
    }
    result->errors[i] = absl::Status(
        result->errors[i].code(),
        absl::StrCat(result->errors[i].message(), "; committed ", commits, " time(s), then ",
                     aborted.ok() ? std::string("aborted")
                                  : absl::StrCat("aborting it said ", aborted.ToString(),
                                                 " (a reservation left is reclaimed after the shard's "
                                                 "reservation_timeout)")));
  }
}

void Client::ResolveLostCommits(absl::string_view ns, Shard& shard, std::span<const BlockPut> blocks,
                                const std::vector<size_t>& which, PutResult* result) {
  // A commit whose reply was lost, retried: the retry finds the reservation gone
  // (NOT_FOUND) whether the lost attempt committed it or it expired. The block's
  // presence tells which; present is stored either way (same key, same bytes).
  v1::LookupRequest req;
  req.set_namespace_(std::string(ns));
  std::string keys(which.size() * 16, '\0');
  for (size_t k = 0; k < which.size(); ++k) {
    blocks[which[k]].key.ToBytes(reinterpret_cast<uint8_t*>(keys.data()) + 16 * k);
  }
  req.set_keys(std::move(keys));
  v1::LookupResponse resp;
  absl::Status s = shard.Lookup(req, &resp);
  if (s.ok() && resp.present().size() != which.size()) {
    s = CountMismatch("Lookup", shard.address(), resp.present().size(), which.size());
  }
  for (size_t k = 0; k < which.size(); ++k) {
    const size_t i = which[k];
    if (s.ok() && resp.present()[k] != 0) {
      result->outcome[i] = PutOutcome::kStored;
      result->errors[i] = absl::OkStatus();
    } else {
      result->errors[i] = absl::NotFoundError(absl::StrCat(
          "block ", blocks[i].key.Hex(), ": PutCommit to ", shard.address(),
          " was tried again (a reply was lost, or the reservation was busy) and the block is not stored",
          s.ok() ? "" : absl::StrCat(" (or could not be checked: ", s.message(), ")")));
    }
  }
}

absl::StatusOr<PublishResult> Client::Publish(absl::string_view ns, const ModelSpec& spec,
                                              std::span<const int32_t> tokens,
                                              std::span<const std::span<const uint8_t>> blocks,
                                              bool pin) {
  // First: with no full block it returned OK before any call checked (docs: every
  // call fails in such a child).
  if (absl::Status s = CheckNotForkedAfterClient(); !s.ok()) return s;
  if (absl::Status s = spec.Validate(); !s.ok()) return s;
  if (absl::Status s = ValidateNamespace(ns); !s.ok()) return s;
  const size_t full = tokens.size() / spec.block_tokens;
  if (blocks.size() != full) {
    return absl::InvalidArgumentError(absl::StrCat("Publish: ", tokens.size(), " tokens make ",
                                                   full, " full blocks of ", spec.block_tokens,
                                                   " tokens, but ", blocks.size(),
                                                   " payloads were given"));
  }
  for (size_t i = 0; i < blocks.size(); ++i) {
    if (blocks[i].empty() || blocks[i].size() > kMaxBlockBytes) {
      return absl::InvalidArgumentError(absl::StrCat(
          "Publish: payload ", i, " is ", blocks[i].size(), " bytes; must be 1 byte .. 256 MiB"));
    }
  }
  PublishResult out;
  out.keys = BlockKeys(ns, spec, tokens);
  if (out.keys.empty()) return out;
  absl::StatusOr<LookupResult> present =
      Lookup(ns, out.keys, /*prefix=*/false, spec.block_tokens, spec.model);
  if (!present.ok()) return present.status();

  std::vector<BlockPut> todo;
  std::vector<size_t> map;
  out.outcome.assign(full, PutOutcome::kSkipped);
  out.errors.assign(full, absl::OkStatus());
  for (size_t i = 0; i < full; ++i) {
    if (present->present[i]) continue;  // unreachable shards read as absent: the put reports it
    BlockPut p;
    p.key = out.keys[i];
    if (i > 0) p.parent = out.keys[i - 1];
    p.data = blocks[i];
    p.pin = pin;
    todo.push_back(p);
    map.push_back(i);
  }
  absl::StatusOr<PutResult> put = Put(ns, todo);
  if (!put.ok()) return put.status();
  for (size_t k = 0; k < map.size(); ++k) {
    out.outcome[map[k]] = put->outcome[k];
    out.errors[map[k]] = put->errors[k];
  }
  out.bytes_uploaded = put->bytes_uploaded;
  if (pin) PinPresent(ns, &out);
  CountOutcomes(&out);
  return out;
}

void Client::PinPresent(absl::string_view ns, PublishResult* out) {
  // A put never pins a key that exists (proto: use Pin), so the blocks found
  // present, or stored by someone else meanwhile, are pinned here; so are those
  // reported stored, since one whose commit reply was lost and that a lookup then
  // found may be another publisher's unpinned copy (Pin is idempotent). One that
  // cannot be pinned (a concurrent publisher has not committed it yet, the pinned
  // quota is full) is not what the caller asked for: failed, with the reason.
  std::vector<BlockKey> keys;
  std::vector<size_t> which;
  for (size_t i = 0; i < out->outcome.size(); ++i) {
    if (out->outcome[i] == PutOutcome::kFailed) continue;
    keys.push_back(out->keys[i]);
    which.push_back(i);
  }
  if (keys.empty()) return;
  absl::StatusOr<std::vector<absl::Status>> pinned = Pin(ns, keys, /*pin=*/true);
  for (size_t k = 0; k < which.size(); ++k) {
    const absl::Status s = pinned.ok() ? (*pinned)[k] : pinned.status();
    if (s.ok()) continue;
    out->outcome[which[k]] = PutOutcome::kFailed;
    out->errors[which[k]] = absl::Status(
        s.code(), absl::StrCat("block ", keys[k].Hex(), " is stored (or being stored by another publisher) ",
                               "but could not be pinned: ", s.message()));
  }
}

// ---------------------------------------------------------------- Get

absl::StatusOr<FetchResult> Client::Get(absl::string_view ns, std::span<const BlockKey> keys,
                                        std::span<const std::span<uint8_t>> buffers) {
  if (absl::Status s = CheckNotForkedAfterClient(); !s.ok()) return s;
  if (absl::Status s = ValidateNamespace(ns); !s.ok()) return s;
  if (buffers.size() != keys.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat("Get: ", keys.size(), " keys but ", buffers.size(), " buffers"));
  }
  if (absl::Status s = CheckBuffersDisjoint(buffers); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("Get: ", s.message()));
  }
  FetchResult out;
  out.sizes.assign(keys.size(), 0);
  out.status.assign(keys.size(), absl::UnknownError("not read"));
  if (keys.empty()) return out;
  std::vector<Batch> batches = MakeBatches(keys, config_.max_keys_per_rpc);
  RunParallel(pool_.get(), batches.size(), [&](size_t b) {
    const Batch& batch = batches[b];
    std::vector<BlockRead> reads(batch.items.size());
    for (size_t k = 0; k < reads.size(); ++k) {
      reads[k].key = keys[batch.items[k]];
      reads[k].dest = buffers[batch.items[k]];
    }
    // Per-read statuses carry every failure; the call status adds nothing.
    (void)data_plane_->ReadBlocks(*shards_[batch.shard], ns, std::span<BlockRead>(reads)).ok();
    for (size_t k = 0; k < reads.size(); ++k) {
      out.status[batch.items[k]] = reads[k].status;
      out.sizes[batch.items[k]] = reads[k].status.ok() ? reads[k].size : 0;
    }
  });
  out.valid_blocks = LeadingRun(out.status);
  return out;
}

absl::StatusOr<FetchResult> Client::Fetch(absl::string_view ns, const ModelSpec& spec,
                                          std::span<const int32_t> tokens, size_t n_blocks,
                                          std::span<const std::span<uint8_t>> buffers) {
  if (absl::Status s = spec.Validate(); !s.ok()) return s;
  if (absl::Status s = ValidateNamespace(ns); !s.ok()) return s;
  const size_t full = tokens.size() / spec.block_tokens;
  if (n_blocks > full) {
    return absl::InvalidArgumentError(absl::StrCat("Fetch: asked for ", n_blocks, " blocks; ",
                                                   tokens.size(), " tokens make only ", full));
  }
  if (buffers.size() != n_blocks) {
    return absl::InvalidArgumentError(
        absl::StrCat("Fetch: ", n_blocks, " blocks but ", buffers.size(), " buffers"));
  }
  std::vector<BlockKey> keys =
      BlockKeys(ns, spec, tokens.first(n_blocks * static_cast<size_t>(spec.block_tokens)));
  absl::StatusOr<FetchResult> r = Get(ns, keys, buffers);
  if (r.ok()) r->valid_tokens = static_cast<uint64_t>(r->valid_blocks) * spec.block_tokens;
  return r;
}

// ---------------------------------------------------------------- Delete, Pin, Stats

template <typename Request, typename Response>
absl::StatusOr<std::vector<absl::Status>> Client::PerKeyCall(
    absl::string_view ns, std::span<const BlockKey> keys, const char* rpc, const Request& prototype,
    absl::Status (Shard::*call)(const Request&, Response*)) {
  if (absl::Status s = CheckNotForkedAfterClient(); !s.ok()) return s;
  if (absl::Status s = ValidateNamespace(ns); !s.ok()) return s;
  std::vector<absl::Status> out(keys.size());
  std::vector<Batch> batches = MakeBatches(keys, config_.max_keys_per_rpc);
  RunParallel(pool_.get(), batches.size(), [&](size_t b) {
    const Batch& batch = batches[b];
    Shard& shard = *shards_[batch.shard];
    Request req = prototype;
    req.set_namespace_(std::string(ns));
    req.set_keys(KeysString(keys, batch.items));
    Response resp;
    absl::Status s = (shard.*call)(req, &resp);
    if (s.ok() && resp.items_size() != static_cast<int>(batch.items.size())) {
      s = CountMismatch(rpc, shard.address(), resp.items_size(), batch.items.size());
    }
    for (size_t k = 0; k < batch.items.size(); ++k) {
      const size_t i = batch.items[k];
      out[i] = s.ok() ? FromItem(resp.items(static_cast<int>(k)), keys[i]) : s;
    }
  });
  return out;
}

absl::StatusOr<std::vector<absl::Status>> Client::Delete(absl::string_view ns,
                                                         std::span<const BlockKey> keys) {
  return PerKeyCall(ns, keys, "Delete", v1::DeleteRequest(), &Shard::Delete);
}

absl::StatusOr<std::vector<absl::Status>> Client::Pin(absl::string_view ns,
                                                      std::span<const BlockKey> keys, bool pin) {
  v1::PinRequest prototype;
  prototype.set_pin(pin);
  return PerKeyCall(ns, keys, "Pin", prototype, &Shard::Pin);
}

std::vector<MemberStats> Client::Stats() {
  std::vector<MemberStats> out(shards_.size());
  if (absl::Status s = CheckNotForkedAfterClient(); !s.ok()) {
    for (size_t i = 0; i < shards_.size(); ++i) out[i] = MemberStats{shards_[i]->address(), s};
    return out;
  }
  RunParallel(pool_.get(), shards_.size(), [&](size_t i) {
    out[i].address = shards_[i]->address();
    v1::StatsResponse resp;
    absl::Status s = shards_[i]->Stats(&resp);
    if (s.ok()) {
      out[i].stats = std::move(resp);
    } else {
      out[i].stats = s;
    }
  });
  return out;
}

absl::Status Client::CheckMembersAnswer() {
  if (absl::Status s = CheckNotForkedAfterClient(); !s.ok()) return s;
  std::string failed;
  for (const MemberStats& m : Stats()) {
    if (!m.stats.ok()) absl::StrAppend(&failed, failed.empty() ? "" : "; ", m.address, ": ", m.stats.status().ToString());
  }
  if (failed.empty()) return absl::OkStatus();
  return absl::UnavailableError(absl::StrCat("member(s) do not answer: ", failed));
}

}  // namespace kvhub
