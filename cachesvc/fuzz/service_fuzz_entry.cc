#include "cachesvc/fuzz/service_fuzz_entry.h"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/time.h"
#include "cachesvc/kvhub_service.h"
#include "cachesvc/kvhubd_config.h"
#include "cachesvc/metrics.h"
#include "cachesvc/request_validation.h"
#include "cachesvc/reservation_table.h"
#include "common/clock.h"
#include "common/hash.h"
#include "google/protobuf/stubs/logging.h"
#include "kvhub/v1/kvhub.pb.h"
#include "spdlog/spdlog.h"
#include "storage/block_store.h"

namespace kvhub::cachesvc {
namespace {

constexpr uint64_t kCapacity = 512 << 10;
constexpr uint64_t kRegionBytes = 256 << 10;
constexpr uint64_t kMaxBlock = 64 << 10;
constexpr int kMaxOps = 64;
constexpr int kPoolKeys = 48;

ServiceFuzzCoverage g_coverage;  // the entry point is one call at a time (header)

// The input, read front to back; past its end every read gives zeros.
class Input {
 public:
  Input(const uint8_t* p, size_t n) : p_(p), n_(n) {}
  bool empty() const { return n_ == 0; }
  uint8_t U8() {
    if (n_ == 0) return 0;
    --n_;
    return *p_++;
  }
  uint16_t U16() { return static_cast<uint16_t>(U8() | (U8() << 8)); }
  uint32_t U32() { return U16() | (static_cast<uint32_t>(U16()) << 16); }
  uint64_t U64() { return U32() | (static_cast<uint64_t>(U32()) << 32); }
  std::string Take(size_t len) {
    len = std::min(len, n_);
    std::string s(reinterpret_cast<const char*>(p_), len);
    p_ += len;
    n_ -= len;
    return s;
  }

 private:
  const uint8_t* p_;
  size_t n_;
};

std::string KeyString(const BlockKey& k) {
  auto b = k.Bytes();
  return std::string(b.begin(), b.end());
}

// Generated block bytes: a function of (seed, position), so the PutData chunks and
// transfer writes of one block can be produced separately.
std::string Content(uint8_t seed, uint64_t offset, uint64_t len) {
  std::string s(len, '\0');
  for (uint64_t j = 0; j < len; ++j) {
    const uint64_t x = offset + j;
    s[j] = static_cast<char>((seed * 31u + x * 7u + (x >> 8) * 13u) & 0xff);
  }
  return s;
}

uint64_t Hash(const std::string& s) { return Xxh3_64(s.data(), s.size()); }

// True when `range` lies within `loc` (same region).
bool Inside(const storage::BlockLocation& range, const storage::BlockLocation& loc) {
  return range.region == loc.region && range.offset >= loc.offset && range.size <= loc.size &&
         range.offset - loc.offset <= loc.size - range.size;
}

struct Snapshot {
  uint64_t blocks = 0, used = 0, reserved = 0, pinned = 0, leased = 0, allocated = 0;
  friend bool operator==(const Snapshot&, const Snapshot&) = default;
  std::string ToString() const {
    return absl::StrCat("blocks=", blocks, " used=", used, " reserved=", reserved, " pinned=", pinned,
                        " leased=", leased, " allocated=", allocated);
  }
};

using ModelKey = std::pair<std::string, BlockKey>;  // (namespace, key)

struct ModelLease {
  ModelKey block;
  storage::BlockLocation loc;
  const uint8_t* ptr = nullptr;
  std::string bytes;  // what the lease must show while it lives
  absl::Time expires;
};

struct ModelReservation {
  ModelKey block;
  storage::BlockLocation loc;
  uint8_t* ptr = nullptr;
  uint64_t checksum = 0;  // as given to PutStart
  uint8_t seed = 0;       // the generated content it is meant to receive
  // The response gives the expiry in whole milliseconds: the store may reclaim the
  // reservation from `expires_from` on, and has by `expires_by`.
  absl::Time expires_from;
  absl::Time expires_by;
};

struct ModelHold {
  storage::TransferAccess access;
  uint64_t hold = 0;
  const uint8_t* ptr = nullptr;
  std::string bytes;  // kRead: what the held range must show until EndTransfer
};

class Harness {
 public:
  std::string Run(Input& in);

 private:
  // ---- set-up and checks
  bool Init(uint8_t variant);
  void Fail(const std::string& what) {
    if (failure_.empty()) failure_ = absl::StrCat("op ", op_index_, " (", op_name_, "): ", what);
  }
  bool failed() const { return !failure_.empty(); }
  Snapshot Snap() const;
  // A request refused whole: INVALID_ARGUMENT (or UNAVAILABLE once draining) with a
// message, nothing stored changed.
  void CheckRefusal(const grpc::Status& s, const Snapshot& before);
  void CheckItem(const v1::ItemStatus& st, const char* what);
  // The range lies inside one region; returns its address (nullptr after Fail).
  uint8_t* Address(const storage::BlockLocation& loc);
  bool Overlaps(const uint8_t* p, uint64_t n, const uint8_t* q, uint64_t m) const { return p < q + m && q < p + n; }
  // A new reservation or lease must not overlap memory another live grant holds.
  void CheckDisjoint(const uint8_t* p, uint64_t n, const char* what);
  void VerifyLive();
  bool LeaseLive(const ModelLease& l) const { return clock_.Now() < l.expires; }

  // ---- request builders (structured operations)
  std::string Namespace(Input& in);
  std::string KeyField(Input& in);
  std::string Keys(Input& in);
  uint64_t BlockSize(Input& in);
  uint64_t ReservationId(Input& in);
  uint64_t LeaseId(Input& in);
  uint32_t LeaseMs(Input& in);
  storage::BlockLocation Perturb(Input& in, storage::BlockLocation loc);

  // ---- operations: execute one request and check it against the model
  void RunLookup(const v1::LookupRequest& req);
  void RunPut(const v1::PutRequest& req);
  void RunPutStart(const v1::PutStartRequest& req, const std::vector<uint8_t>& seeds);
  void RunPutData(const v1::PutDataChunk& chunk);
  void RunCommit(const v1::PutCommitRequest& req);
  void RunAbort(const v1::PutAbortRequest& req);
  void RunGet(const v1::GetRequest& req);
  void CheckGetResponse(const v1::GetRequest& req, const v1::GetResponse& resp);
  void RunGetSlices(const v1::GetRequest& req);
  void RunUcxCall(uint32_t method, const std::string& request);
  void RunRelease(const v1::ReleaseRequest& req);
  void CheckReleaseResponse(const v1::ReleaseRequest& req, const v1::ReleaseResponse& resp);
  void RunDelete(const v1::DeleteRequest& req);
  void RunPin(const v1::PinRequest& req);
  void RunStats();
  void RunTransferWrite(Input& in);
  void RunTransferRead(Input& in);
  void RunGarbage(Input& in);
  void Advance(Input& in);
  void Finish();

  ManualClock clock_;
  KvhubdConfig config_;
  std::unique_ptr<storage::BlockStore> store_;
  std::unique_ptr<ReservationTable> table_;
  std::unique_ptr<ServiceMetrics> metrics_;
  std::unique_ptr<KvHubService> service_;
  BlockKey pool_[kPoolKeys];

  std::map<ModelKey, std::string> blocks_;  // committed, not deleted (may have been evicted)
  std::map<uint64_t, ModelLease> leases_;
  std::map<uint64_t, ModelReservation> reservations_;
  std::vector<ModelHold> holds_;
  int op_index_ = -1;
  const char* op_name_ = "init";
  std::string failure_;
  const bool trace_ = std::getenv("KVHUB_FUZZ_TRACE") != nullptr;  // each operation and the store's counts
};

bool Harness::Init(uint8_t variant) {
  static const char* const kPolicies[] = {"lru", "s3fifo", "as3fifo", "duel"};
  config_ = KvhubdConfig::Defaults();
  storage::BlockStoreConfig& sc = config_.store;
  sc.capacity_bytes = kCapacity;
  sc.region_bytes = kRegionBytes;
  sc.max_block_bytes = kMaxBlock;
  sc.min_block_bytes = 4096;
  sc.try_hugepages = false;
  sc.eviction.name = kPolicies[variant & 3];
  sc.eviction.prefix_aware = (variant & 4) != 0;
  sc.namespace_quota_bytes = (variant & 8) != 0 ? 192 << 10 : 0;
  if ((variant & 32) != 0) sc.namespace_quotas = {{"a", 96 << 10}, {"b", 0}};
  sc.max_leases = (variant & 16) != 0 ? 4 : 64;
  if (absl::Status s = config_.Validate(); !s.ok()) {
    Fail(absl::StrCat("config: ", s.ToString()));
    return false;
  }
  auto store = storage::BlockStore::Create(sc, &clock_);
  if (!store.ok()) {
    Fail(absl::StrCat("store: ", store.status().ToString()));
    return false;
  }
  store_ = std::move(*store);
  table_ = std::make_unique<ReservationTable>(store_.get(), &clock_, absl::Milliseconds(10));
  metrics_ = std::make_unique<ServiceMetrics>(4, 4);
  service_ = std::make_unique<KvHubService>(config_, store_.get(), table_.get(), metrics_.get());
  for (int i = 0; i < kPoolKeys; ++i) pool_[i] = BlockKey{0x9e3779b97f4a7c15ull * (i + 1), 0x1234u + i};
  return true;
}

Snapshot Harness::Snap() const {
  storage::BlockStoreStats st = store_->Stats();
  return Snapshot{st.blocks, st.used_bytes, st.reserved_bytes, st.pinned_blocks, st.leased_blocks, st.allocated_bytes};
}

void Harness::CheckRefusal(const grpc::Status& s, const Snapshot& before) {
  if (s.ok()) return;
  ++g_coverage.refused;
  const bool drained = s.error_code() == grpc::StatusCode::UNAVAILABLE && service_->draining();
  g_coverage.refused_draining += drained;
  if (s.error_code() != grpc::StatusCode::INVALID_ARGUMENT && !drained) {
    Fail(absl::StrCat("refused with code ", s.error_code(), " (want INVALID_ARGUMENT): ", s.error_message()));
  }
  if (s.error_message().empty()) Fail("refused without a message");
  Snapshot after = Snap();
  if (!(after == before)) {
    Fail(absl::StrCat("a refused request changed the store: ", before.ToString(), " -> ", after.ToString()));
  }
}

void Harness::CheckItem(const v1::ItemStatus& st, const char* what) {
  if (st.code() == static_cast<int>(absl::StatusCode::kDataLoss)) ++g_coverage.checksum_refused;
  if (st.code() != 0 && st.message().empty()) Fail(absl::StrCat(what, ": item failed with code ", st.code(), " and no message"));
}

uint8_t* Harness::Address(const storage::BlockLocation& loc) {
  std::span<const storage::Region> regions = store_->regions();
  if (loc.region >= regions.size() || loc.size == 0 || loc.offset > regions[loc.region].size ||
      loc.size > regions[loc.region].size - loc.offset) {
    Fail(absl::StrCat("location outside the regions: region ", loc.region, " offset ", loc.offset, " size ", loc.size));
    return nullptr;
  }
  return regions[loc.region].base + loc.offset;
}

void Harness::CheckDisjoint(const uint8_t* p, uint64_t n, const char* what) {
  for (const auto& [id, l] : leases_) {
    if (LeaseLive(l) && Overlaps(p, n, l.ptr, l.bytes.size())) Fail(absl::StrCat(what, " overlaps live lease ", id));
  }
  for (const ModelHold& h : holds_) {
    if (h.access == storage::TransferAccess::kRead && Overlaps(p, n, h.ptr, h.bytes.size())) {
      Fail(absl::StrCat(what, " overlaps a held read transfer"));
    }
  }
  for (const auto& [id, r] : reservations_) {
    if (clock_.Now() < r.expires_from && Overlaps(p, n, r.ptr, r.loc.size)) Fail(absl::StrCat(what, " overlaps reservation ", id));
  }
}

void Harness::VerifyLive() {
  for (const auto& [id, l] : leases_) {
    if (LeaseLive(l) && std::memcmp(l.ptr, l.bytes.data(), l.bytes.size()) != 0) {
      Fail(absl::StrCat("the bytes under live lease ", id, " changed"));
    }
  }
  for (const ModelHold& h : holds_) {
    if (h.access == storage::TransferAccess::kRead && std::memcmp(h.ptr, h.bytes.data(), h.bytes.size()) != 0) {
      Fail("the bytes under a held read transfer changed");
    }
  }
}

// ---------------------------------------------------------------- builders

std::string Harness::Namespace(Input& in) {
  const uint8_t b = in.U8() % 32;
  if (b < 16) return "a";
  if (b < 30) return "b";
  if (b == 30) return in.U8() & 1 ? "" : std::string(kMaxModelBytes + 1, 'n');
  return in.Take(in.U8() % 8);  // may hold control bytes or invalid UTF-8
}

std::string Harness::KeyField(Input& in) {
  const uint8_t b = in.U8();
  if (b < 240) return KeyString(pool_[b % kPoolKeys]);
  if (b < 248) {
    std::string k = in.Take(kKeyBytes);
    k.resize(kKeyBytes, '\0');
    return k;
  }
  if (b < 254) return in.Take(b % 33);  // usually the wrong length
  return "";
}

std::string Harness::Keys(Input& in) {
  const uint8_t c = in.U8();
  std::string keys;
  if (c == 255) {
    for (size_t i = 0; i <= kMaxKeysPerCall; ++i) keys += KeyString(pool_[i % kPoolKeys]);  // one too many
  } else if (c == 254) {
    for (size_t i = 0; i < kMaxKeysPerCall; ++i) keys += KeyString(pool_[i % kPoolKeys]);
  } else if (c != 253) {
    const int n = 1 + c % 6;
    for (int i = 0; i < n; ++i) {
      const uint8_t b = in.U8();
      if (b < 230) {
        keys += KeyString(pool_[b % kPoolKeys]);
      } else {
        std::string k = in.Take(kKeyBytes);
        k.resize(kKeyBytes, '\0');
        keys += k;
      }
    }
  }
  if (in.U8() == 7) keys.push_back('x');  // not a multiple of 16
  return keys;
}

uint64_t Harness::BlockSize(Input& in) {
  static const uint64_t kSizes[] = {1, 17, 4095, 4096, 4097, 9000, 30000, 40000, kMaxBlock - 1, kMaxBlock};
  const uint8_t b = in.U8() % 32;
  if (b < 10) return kSizes[b];
  if (b < 30) return 1 + in.U16() % kMaxBlock;
  return b == 30 ? 0 : kMaxBlock + 1 + in.U8();  // refused
}

uint64_t Harness::ReservationId(Input& in) {
  const uint8_t b = in.U8();
  if (b < 220 && !reservations_.empty()) {
    auto it = reservations_.begin();
    std::advance(it, b % reservations_.size());
    return it->first;
  }
  return b < 240 ? in.U64() : 0;
}

uint64_t Harness::LeaseId(Input& in) {
  const uint8_t b = in.U8();
  if (b < 220 && !leases_.empty()) {
    auto it = leases_.begin();
    std::advance(it, b % leases_.size());
    return it->first;
  }
  return b < 240 ? in.U64() : 0;
}

uint32_t Harness::LeaseMs(Input& in) {
  static const uint32_t kMs[] = {0, 1, 50, 1000, 600000, 600001};
  const uint8_t b = in.U8() % 8;
  return b < 6 ? kMs[b] : in.U32();
}

storage::BlockLocation Harness::Perturb(Input& in, storage::BlockLocation loc) {
  switch (in.U8() % 8) {
    case 3: loc.offset += 1; break;                                 // one byte past the end
    case 4: {                                                       // a sub-range
      const uint64_t cut = loc.size > 1 ? in.U16() % loc.size : 0;
      loc.offset += cut;
      loc.size -= cut;
      if (loc.size > 1) loc.size -= in.U8() % loc.size;
      break;
    }
    case 5: loc.region ^= 1; break;                                 // the other region
    case 6: loc.size += 1 + in.U8(); break;                         // too long
    case 7: loc.offset = in.U64(); loc.size = in.U32(); break;      // anywhere
    default: break;                                                 // exact
  }
  return loc;
}

// ---------------------------------------------------------------- operations

void Harness::RunLookup(const v1::LookupRequest& req) {
  const Snapshot before = Snap();
  v1::LookupResponse resp;
  grpc::Status s = service_->DoLookup(req, &resp);
  CheckRefusal(s, before);
  if (!s.ok()) return;
  const size_t n = req.keys().size() / kKeyBytes;
  if (resp.present().size() != n) return Fail(absl::StrCat("Lookup: ", resp.present().size(), " flags for ", n, " keys"));
  size_t run = 0;
  bool in_run = true;
  for (size_t i = 0; i < n; ++i) {
    const uint8_t p = static_cast<uint8_t>(resp.present()[i]);
    if (p > 1) return Fail("Lookup: a presence flag is neither 0 nor 1");
    if (p == 1 && !blocks_.contains({req.namespace_(), PackedKey(req.keys(), i)})) {
      return Fail(absl::StrCat("Lookup: key ", i, " present but never committed (or deleted)"));
    }
    if (p == 1 && in_run) ++run;
    g_coverage.lookup_hits += p;
    if (p == 0) in_run = false;
  }
  if (resp.prefix_hits() != run) Fail(absl::StrCat("Lookup: prefix_hits ", resp.prefix_hits(), ", leading run ", run));
}

void Harness::RunPut(const v1::PutRequest& req) {
  const Snapshot before = Snap();
  v1::PutResponse resp;
  grpc::Status s = service_->DoPut(req, &resp);
  CheckRefusal(s, before);
  if (!s.ok()) return;
  if (resp.items_size() != req.items_size()) return Fail("Put: one status per item expected");
  for (int i = 0; i < req.items_size(); ++i) {
    CheckItem(resp.items(i), "Put");
    if (resp.items(i).code() != 0) continue;
    const v1::PutItem& it = req.items(i);
    if (Hash(it.data()) != it.checksum()) return Fail(absl::StrCat("Put: item ", i, " stored with a wrong checksum"));
    blocks_[{req.namespace_(), PackedKey(it.key(), 0)}] = it.data();
    ++g_coverage.puts_stored;
  }
}

void Harness::RunPutStart(const v1::PutStartRequest& req, const std::vector<uint8_t>& seeds) {
  const Snapshot before = Snap();
  v1::PutStartResponse resp;
  grpc::Status s = service_->DoPutStart(req, &resp);
  CheckRefusal(s, before);
  if (!s.ok()) return;
  if (resp.items_size() != req.items_size()) return Fail("PutStart: one result per item expected");
  for (int i = 0; i < req.items_size(); ++i) {
    const v1::PutStartResponse::Reserved& r = resp.items(i);
    CheckItem(r.status(), "PutStart");
    if (r.status().code() != 0) continue;
    const v1::PutItem& it = req.items(i);
    if (r.reservation_id() == 0 || reservations_.contains(r.reservation_id())) {
      return Fail(absl::StrCat("PutStart: reservation id ", r.reservation_id(), " is 0 or already live"));
    }
    storage::BlockLocation loc{r.location().region(), r.location().offset(), r.location().size()};
    if (loc.size != it.size()) return Fail(absl::StrCat("PutStart: reserved ", loc.size, " bytes for ", it.size()));
    uint8_t* p = Address(loc);
    if (p == nullptr) return;
    CheckDisjoint(p, loc.size, "a new reservation");
    ModelReservation m;
    m.block = {req.namespace_(), PackedKey(it.key(), 0)};
    m.loc = loc;
    m.ptr = p;
    m.checksum = it.checksum();
    m.seed = i < static_cast<int>(seeds.size()) ? seeds[i] : 0;
    // The model's own expiry (the configured timeout from now), not the service's
    // answer, which is checked against it: a short one would end the overlap checks early.
    if (r.expires_in_ms() != absl::ToInt64Milliseconds(config_.store.reservation_timeout)) {
      return Fail(absl::StrCat("PutStart: expires_in_ms ", r.expires_in_ms(), ", the reservation timeout is ",
                               absl::ToInt64Milliseconds(config_.store.reservation_timeout)));
    }
    m.expires_from = clock_.Now() + config_.store.reservation_timeout;
    m.expires_by = m.expires_from + absl::Milliseconds(1);
    reservations_[r.reservation_id()] = m;
  }
}

void Harness::RunPutData(const v1::PutDataChunk& chunk) {
  // What the PutData stream does with each chunk (KvHubService::PutDataReactor).
  const Snapshot before = Snap();
  absl::Status s = ValidatePutDataChunk(chunk);
  if (s.ok()) s = table_->Write(chunk.reservation_id(), chunk.offset(), chunk.data());
  if (!s.ok()) {
    if (s.message().empty()) Fail("PutData refused without a message");
    if (!(Snap() == before)) Fail("a refused PutData changed the store");
    return;
  }
  auto it = reservations_.find(chunk.reservation_id());
  if (it == reservations_.end()) {
    // Not in the model: never granted, or committed/aborted (an expiry the model
    // cannot see yet is refused by the table's margin, not accepted).
    return Fail(absl::StrCat("PutData wrote to reservation ", chunk.reservation_id(), ", which is not live"));
  }
  if (chunk.offset() > it->second.loc.size || chunk.data().size() > it->second.loc.size - chunk.offset()) {
    Fail("PutData wrote outside its reservation");
  }
}

void Harness::RunCommit(const v1::PutCommitRequest& req) {
  const Snapshot before = Snap();
  v1::PutCommitResponse resp;
  grpc::Status s = service_->DoPutCommit(req, &resp);
  CheckRefusal(s, before);
  if (!s.ok()) return;
  if (resp.items_size() != req.reservation_ids_size()) return Fail("PutCommit: one status per id expected");
  for (int i = 0; i < req.reservation_ids_size(); ++i) {
    const uint64_t id = req.reservation_ids(i);
    CheckItem(resp.items(i), "PutCommit");
    auto it = reservations_.find(id);
    if (resp.items(i).code() == 0) {
      if (it == reservations_.end()) return Fail(absl::StrCat("PutCommit committed reservation ", id, ", which is not live"));
      std::string bytes(reinterpret_cast<const char*>(it->second.ptr), it->second.loc.size);
      if (Hash(bytes) != it->second.checksum) return Fail("PutCommit made a block visible whose bytes fail its checksum");
      blocks_[it->second.block] = std::move(bytes);
      ++g_coverage.commits;
    }
    if (it != reservations_.end()) reservations_.erase(it);  // the table took it, whatever the store said
  }
}

void Harness::RunAbort(const v1::PutAbortRequest& req) {
  const Snapshot before = Snap();
  v1::PutAbortResponse resp;
  grpc::Status s = service_->DoPutAbort(req, &resp);
  CheckRefusal(s, before);
  if (!s.ok()) return;
  if (resp.items_size() != req.reservation_ids_size()) return Fail("PutAbort: one status per id expected");
  for (int i = 0; i < req.reservation_ids_size(); ++i) {
    CheckItem(resp.items(i), "PutAbort");
    reservations_.erase(req.reservation_ids(i));
  }
}

void Harness::CheckGetResponse(const v1::GetRequest& req, const v1::GetResponse& resp) {
  const size_t n = req.keys().size() / kKeyBytes;
  if (static_cast<size_t>(resp.blocks_size()) != n) return Fail("Get: one block per key expected");
  for (size_t i = 0; i < n; ++i) {
    const v1::GetResponse::Block& b = resp.blocks(static_cast<int>(i));
    CheckItem(b.status(), "Get");
    if (b.status().code() != 0) {
      if (b.lease_id() != 0 || !b.data().empty()) Fail("Get: a failed block carries a lease or bytes");
      continue;
    }
    auto it = blocks_.find({req.namespace_(), PackedKey(req.keys(), i)});
    if (it == blocks_.end()) return Fail(absl::StrCat("Get served key ", i, ", never committed (or deleted)"));
    const std::string& want = it->second;
    if (b.size() != want.size() || b.checksum() != Hash(want)) return Fail(absl::StrCat("Get: key ", i, " has the wrong size or checksum"));
    if (req.inline_data()) {
      if (b.lease_id() != 0) Fail("inline Get returned a lease");
      if (b.data() != want) return Fail(absl::StrCat("inline Get served wrong bytes for key ", i));
      ++g_coverage.inline_hits;
      continue;
    }
    if (b.lease_id() == 0 || leases_.contains(b.lease_id())) return Fail("Get: lease id 0 or already live");
    storage::BlockLocation loc{b.location().region(), b.location().offset(), b.location().size()};
    if (loc.size != want.size()) return Fail("Get: the location's size is not the block's");
    const uint8_t* p = Address(loc);
    if (p == nullptr) return;
    if (std::memcmp(p, want.data(), want.size()) != 0) return Fail(absl::StrCat("leased Get: key ", i, "'s memory holds wrong bytes"));
    for (const auto& [rid, r] : reservations_) {
      if (clock_.Now() < r.expires_from && Overlaps(p, loc.size, r.ptr, r.loc.size)) return Fail(absl::StrCat("a leased block overlaps reservation ", rid));
    }
    absl::Duration d = req.lease_ms() == 0 ? config_.store.default_lease : absl::Milliseconds(req.lease_ms());
    d = std::min(d, config_.store.max_lease);
    // What the response advertises is what a UCX client bounds its reads by: it must
    // be the lease the store grants, never longer (memory reused under a read).
    if (absl::Milliseconds(resp.lease_ms()) != d) {
      return Fail(absl::StrCat("Get: lease_ms ", resp.lease_ms(), " advertised, the store grants ",
                               absl::ToInt64Milliseconds(d)));
    }
    leases_[b.lease_id()] = ModelLease{it->first, loc, p, want, clock_.Now() + d};
    ++g_coverage.leases;
  }
}

void Harness::RunGet(const v1::GetRequest& req) {
  const Snapshot before = Snap();
  v1::GetResponse resp;
  grpc::Status s = service_->DoGet(req, &resp);
  CheckRefusal(s, before);
  if (s.ok()) CheckGetResponse(req, resp);
}

void Harness::RunGetSlices(const v1::GetRequest& req) {
  const Snapshot before = Snap();
  std::string wire;
  {
    std::vector<grpc::Slice> slices;
    grpc::Status s = service_->DoGetInlineSlices(req, &slices);
    CheckRefusal(s, before);
    if (!s.ok()) return;
    for (const grpc::Slice& sl : slices) wire.append(reinterpret_cast<const char*>(sl.begin()), sl.size());
  }  // the slices are dropped: their leases end
  // (Fewer is fine: with the lease table full, Acquire reclaims expired leases.)
  if (Snap().leased > before.leased) Fail("inline Get (slices): leases outlived the slices");
  v1::GetResponse resp;
  if (!resp.ParseFromString(wire)) return Fail("inline Get (slices): the response does not parse");
  v1::GetRequest inline_req = req;
  inline_req.set_inline_data(true);  // its blocks carry their bytes, whatever the flag said
  CheckGetResponse(inline_req, resp);
}

void Harness::RunUcxCall(uint32_t method, const std::string& request) {
  const Snapshot before = Snap();
  absl::StatusOr<std::string> out = service_->UcxCall(method, request);
  if (!out.ok()) {
    if (out.status().message().empty()) Fail("UCX call refused without a message");
    if (!absl::IsInvalidArgument(out.status()) && !absl::IsUnimplemented(out.status())) {
      Fail(absl::StrCat("UCX call refused with ", out.status().ToString()));
    }
    if (!(Snap() == before)) Fail("a refused UCX call changed the store");
    return;
  }
  if (method == v1::UCX_CALL_GET) {
    v1::GetRequest req;
    v1::GetResponse resp;
    if (!req.ParseFromString(request) || !resp.ParseFromString(*out)) return Fail("UCX Get: request or response does not parse");
    CheckGetResponse(req, resp);
  } else if (method == v1::UCX_CALL_RELEASE) {
    v1::ReleaseRequest req;
    v1::ReleaseResponse resp;
    if (!req.ParseFromString(request) || !resp.ParseFromString(*out)) return Fail("UCX Release: request or response does not parse");
    CheckReleaseResponse(req, resp);
  } else {
    Fail(absl::StrCat("UCX call method ", method, " accepted"));
  }
}

void Harness::CheckReleaseResponse(const v1::ReleaseRequest& req, const v1::ReleaseResponse& resp) {
  if (resp.items_size() != req.lease_ids_size()) return Fail("Release: one status per id expected");
  std::set<uint64_t> released;
  for (int i = 0; i < req.lease_ids_size(); ++i) {
    const uint64_t id = req.lease_ids(i);
    CheckItem(resp.items(i), "Release");
    auto it = leases_.find(id);
    if (resp.items(i).code() == 0) {
      if (it == leases_.end() || released.contains(id)) return Fail(absl::StrCat("Release ended lease ", id, ", which is not live"));
      released.insert(id);
      leases_.erase(it);
      ++g_coverage.releases;
    } else if (it != leases_.end() && LeaseLive(it->second)) {
      return Fail(absl::StrCat("Release of live lease ", id, " failed: ", resp.items(i).message()));
    }
  }
}

void Harness::RunRelease(const v1::ReleaseRequest& req) {
  const Snapshot before = Snap();
  v1::ReleaseResponse resp;
  grpc::Status s = service_->DoRelease(req, &resp);
  CheckRefusal(s, before);
  if (s.ok()) CheckReleaseResponse(req, resp);
}

void Harness::RunDelete(const v1::DeleteRequest& req) {
  const Snapshot before = Snap();
  v1::DeleteResponse resp;
  grpc::Status s = service_->DoDelete(req, &resp);
  CheckRefusal(s, before);
  if (!s.ok()) return;
  const size_t n = req.keys().size() / kKeyBytes;
  if (static_cast<size_t>(resp.items_size()) != n) return Fail("Delete: one status per key expected");
  for (size_t i = 0; i < n; ++i) {
    CheckItem(resp.items(static_cast<int>(i)), "Delete");
    const ModelKey k{req.namespace_(), PackedKey(req.keys(), i)};
    if (resp.items(static_cast<int>(i)).code() == 0) {
      if (!blocks_.contains(k)) return Fail(absl::StrCat("Delete removed key ", i, ", never committed"));
      blocks_.erase(k);
      ++g_coverage.deletes;
    }
  }
}

void Harness::RunPin(const v1::PinRequest& req) {
  const Snapshot before = Snap();
  v1::PinResponse resp;
  grpc::Status s = service_->DoPin(req, &resp);
  CheckRefusal(s, before);
  if (!s.ok()) return;
  for (const v1::ItemStatus& st : resp.items()) CheckItem(st, "Pin");
  const size_t n = req.keys().size() / kKeyBytes;
  for (size_t i = 0; i < n && i < static_cast<size_t>(resp.items_size()); ++i) {
    if (resp.items(static_cast<int>(i)).code() == 0 && !blocks_.contains({req.namespace_(), PackedKey(req.keys(), i)})) {
      return Fail(absl::StrCat("Pin found key ", i, ", never committed"));
    }
  }
}

void Harness::RunStats() {
  v1::StatsResponse resp;
  grpc::Status s = service_->DoStats(&resp);
  if (!s.ok()) return Fail(absl::StrCat("Stats failed: ", s.error_message()));
  if (resp.tiers_size() < 1 || resp.tiers(0).used_bytes() > resp.tiers(0).capacity_bytes()) {
    Fail("Stats: host tier missing or over capacity");
  }
}

void Harness::RunTransferWrite(Input& in) {
  const uint64_t id = ReservationId(in);
  auto it = reservations_.find(id);
  storage::BlockLocation range = it != reservations_.end() ? it->second.loc : storage::BlockLocation{0, 0, 4096};
  range = Perturb(in, range);
  absl::StatusOr<uint64_t> hold = store_->BeginTransfer(storage::TransferAccess::kWrite, id, range);
  if (!hold.ok()) {
    if (hold.status().message().empty()) Fail("BeginTransfer refused without a message");
    return;
  }
  if (it == reservations_.end()) {
    store_->EndTransfer(storage::TransferAccess::kWrite, *hold);
    return Fail(absl::StrCat("BeginTransfer granted a write to reservation ", id, ", which is not live"));
  }
  const storage::BlockLocation& loc = it->second.loc;
  if (!Inside(range, loc)) {
    store_->EndTransfer(storage::TransferAccess::kWrite, *hold);
    return Fail("BeginTransfer granted a write outside the reservation");
  }
  ++g_coverage.write_holds;
  const std::string bytes = Content(it->second.seed, range.offset - loc.offset, range.size);
  std::memcpy(it->second.ptr + (range.offset - loc.offset), bytes.data(), bytes.size());
  if (in.U8() & 1) {
    store_->EndTransfer(storage::TransferAccess::kWrite, *hold);
  } else {
    holds_.push_back(ModelHold{storage::TransferAccess::kWrite, *hold, nullptr, {}});
  }
}

void Harness::RunTransferRead(Input& in) {
  const uint64_t id = LeaseId(in);
  auto it = leases_.find(id);
  storage::BlockLocation range = it != leases_.end() ? it->second.loc : storage::BlockLocation{0, 0, 4096};
  range = Perturb(in, range);
  absl::StatusOr<uint64_t> hold = store_->BeginTransfer(storage::TransferAccess::kRead, id, range);
  if (!hold.ok()) {
    if (hold.status().message().empty()) Fail("BeginTransfer refused without a message");
    if (it != leases_.end() && LeaseLive(it->second) && range.region == it->second.loc.region &&
        range.offset == it->second.loc.offset && range.size == it->second.loc.size) {
      Fail(absl::StrCat("BeginTransfer refused live lease ", id, " its own range: ", hold.status().ToString()));
    }
    return;
  }
  if (it == leases_.end() || !LeaseLive(it->second)) {
    store_->EndTransfer(storage::TransferAccess::kRead, *hold);
    return Fail(absl::StrCat("BeginTransfer granted a read of lease ", id, ", which is not live"));
  }
  const storage::BlockLocation& loc = it->second.loc;
  if (!Inside(range, loc)) {
    store_->EndTransfer(storage::TransferAccess::kRead, *hold);
    return Fail("BeginTransfer granted a read outside the leased block");
  }
  ++g_coverage.read_holds;
  const uint64_t at = range.offset - loc.offset;
  ModelHold h{storage::TransferAccess::kRead, *hold, it->second.ptr + at, it->second.bytes.substr(at, range.size)};
  if (std::memcmp(h.ptr, h.bytes.data(), h.bytes.size()) != 0) Fail("a read transfer sees wrong bytes");
  if (in.U8() & 1) {
    store_->EndTransfer(storage::TransferAccess::kRead, *hold);
  } else {
    holds_.push_back(std::move(h));
  }
}

void Harness::RunGarbage(Input& in) {
  const uint8_t type = in.U8() % 10;
  const std::string bytes = in.Take(in.U16() % 256);
  switch (type) {
    case 0: { v1::LookupRequest r; if (r.ParseFromString(bytes)) RunLookup(r); break; }
    case 1: { v1::PutRequest r; if (r.ParseFromString(bytes)) RunPut(r); break; }
    case 2: { v1::PutStartRequest r; if (r.ParseFromString(bytes)) RunPutStart(r, {}); break; }
    case 3: { v1::PutDataChunk r; if (r.ParseFromString(bytes)) RunPutData(r); break; }
    case 4: { v1::PutCommitRequest r; if (r.ParseFromString(bytes)) RunCommit(r); break; }
    case 5: { v1::GetRequest r; if (r.ParseFromString(bytes)) RunGet(r); break; }
    case 6: { v1::ReleaseRequest r; if (r.ParseFromString(bytes)) RunRelease(r); break; }
    case 7: { v1::DeleteRequest r; if (r.ParseFromString(bytes)) RunDelete(r); break; }
    case 8: RunUcxCall(v1::UCX_CALL_GET, bytes); break;
    default: RunUcxCall(in.U8() % 4, bytes); break;
  }
}

void Harness::Advance(Input& in) {
  static const int64_t kMs[] = {1, 10, 1000, 10001, 30001, 600001};
  const uint8_t raw = in.U8();
  const uint8_t b = raw % 8;
  clock_.Advance(absl::Milliseconds(b < 6 ? kMs[b] : in.U16()));
  if (raw == 0xd7) service_->BeginDrain();  // from now on PutStart and Put are refused
  if (in.U8() & 1) table_->Sweep([this] { return store_->ExpireNow(); });
  for (auto it = reservations_.begin(); it != reservations_.end();) {
    it = clock_.Now() > it->second.expires_by ? reservations_.erase(it) : std::next(it);
  }
}

void Harness::Finish() {
  op_name_ = "finish";
  for (const ModelHold& h : holds_) store_->EndTransfer(h.access, h.hold);
  holds_.clear();
  for (const auto& [id, l] : leases_) {
    absl::Status s = store_->Release(id);
    if (!s.ok() && LeaseLive(l)) Fail(absl::StrCat("Release of live lease ", id, " at the end: ", s.ToString()));
  }
  leases_.clear();
  for (const auto& [id, r] : reservations_) {
    v1::PutAbortRequest req;
    req.add_reservation_ids(id);
    v1::PutAbortResponse resp;
    if (!service_->DoPutAbort(req, &resp).ok()) Fail("PutAbort at the end refused");
  }
  reservations_.clear();
  clock_.Advance(config_.store.max_lease + config_.store.reservation_timeout + absl::Seconds(1));
  table_->Sweep([this] { return store_->ExpireNow(); });
  // Every block still stored reads back exactly; then delete all of them.
  std::map<std::string, std::string> keys_by_ns;
  for (const auto& [k, bytes] : blocks_) keys_by_ns[k.first] += KeyString(k.second);
  for (const auto& [ns, keys] : keys_by_ns) {
    for (size_t at = 0; at < keys.size(); at += kMaxKeysPerCall * kKeyBytes) {
      v1::GetRequest get;
      get.set_namespace_(ns);
      get.set_keys(keys.substr(at, kMaxKeysPerCall * kKeyBytes));
      get.set_inline_data(true);
      RunGet(get);
      v1::DeleteRequest del;
      del.set_namespace_(ns);
      del.set_keys(get.keys());
      RunDelete(del);
    }
  }
  g_coverage.evictions += store_->Stats().evictions;
  const Snapshot end = Snap();
  if (!(end == Snapshot{})) Fail(absl::StrCat("the store is not empty after every grant ended and every block was deleted: ", end.ToString()));
}

std::string Harness::Run(Input& in) {
  if (!Init(in.U8())) return failure_;
  for (op_index_ = 0; op_index_ < kMaxOps && !in.empty() && !failed(); ++op_index_) {
    const uint8_t op = in.U8() % 20;
    switch (op) {
      case 0: {
        op_name_ = "Lookup";
        v1::LookupRequest r;
        r.set_namespace_(Namespace(in));
        r.set_keys(Keys(in));
        r.set_prefix(in.U8() & 1);
        r.set_block_tokens(in.U8() == 0 ? in.U32() : 256);
        if (in.U8() == 0) r.set_model(std::string(kMaxModelBytes + (in.U8() & 1), 'm'));
        RunLookup(r);
        break;
      }
      case 1:
      case 2: {
        op_name_ = "Put";
        v1::PutRequest r;
        r.set_namespace_(Namespace(in));
        const uint8_t c = in.U8();
        const int n = c == 255 ? static_cast<int>(kMaxKeysPerCall) + 1 : c == 254 ? 0 : 1 + c % 3;
        for (int i = 0; i < n; ++i) {
          v1::PutItem* it = r.add_items();
          it->set_key(n > 3 ? KeyString(pool_[i % kPoolKeys]) : KeyField(in));
          if (in.U8() % 4 == 0) it->set_parent(KeyString(pool_[in.U8() % kPoolKeys]));
          const uint64_t size = n > 3 ? 1 : BlockSize(in);
          it->set_data(Content(in.U8(), 0, size));
          const uint8_t sz = in.U8() % 16;
          it->set_size(sz == 0 ? size + 1 : sz < 8 ? size : 0);
          const uint8_t ck = in.U8() % 8;
          it->set_checksum(ck == 0 ? Hash(it->data()) ^ 1 : ck == 1 ? in.U64() : Hash(it->data()));
          it->set_pin(in.U8() % 8 == 0);
        }
        RunPut(r);
        break;
      }
      case 3:
      case 4: {
        op_name_ = "PutStart";
        v1::PutStartRequest r;
        r.set_namespace_(Namespace(in));
        const int n = in.U8() == 254 ? 0 : 1 + in.U8() % 3;
        std::vector<uint8_t> seeds;
        for (int i = 0; i < n; ++i) {
          v1::PutItem* it = r.add_items();
          it->set_key(KeyField(in));
          if (in.U8() % 4 == 0) it->set_parent(KeyField(in));
          const uint64_t size = BlockSize(in);
          it->set_size(size);
          seeds.push_back(in.U8());
          const uint8_t ck = in.U8() % 8;
          it->set_checksum(ck == 0 ? in.U64() : Hash(Content(seeds.back(), 0, size)));
          if (in.U8() % 16 == 0) it->set_data("x");
          it->set_pin(in.U8() % 8 == 0);
        }
        RunPutStart(r, seeds);
        break;
      }
      case 5:
      case 6: {
        op_name_ = "PutData";
        v1::PutDataChunk c;
        c.set_reservation_id(ReservationId(in));
        auto it = reservations_.find(c.reservation_id());
        const uint64_t size = it != reservations_.end() ? it->second.loc.size : 4096;
        const uint8_t seed = it != reservations_.end() ? it->second.seed : 0;
        const uint8_t how = in.U8() % 8;
        uint64_t off = 0, len = size;
        if (how == 1 || how == 2) {  // the first or the second part
          const uint64_t half = size / 2;
          off = how == 1 ? 0 : half;
          len = how == 1 ? half : size - half;
        } else if (how == 3) {
          off = size;
          len = 1;  // just past the end
        } else if (how == 4) {
          off = in.U32();
          len = in.U16();
        } else if (how == 5) {
          len = 0;
        }
        c.set_offset(off);
        c.set_data(Content(how == 6 ? seed ^ 0x5a : seed, off, std::min<uint64_t>(len, kMaxBlock + 1)));
        RunPutData(c);
        break;
      }
      case 7: {
        op_name_ = "PutCommit";
        v1::PutCommitRequest r;
        const int n = in.U8() % 4;  // 0: refused
        for (int i = 0; i < n; ++i) r.add_reservation_ids(ReservationId(in));
        RunCommit(r);
        break;
      }
      case 8: {
        op_name_ = "PutAbort";
        v1::PutAbortRequest r;
        const int n = in.U8() % 3;
        for (int i = 0; i < n; ++i) r.add_reservation_ids(ReservationId(in));
        RunAbort(r);
        break;
      }
      case 9:
      case 10: {
        const uint8_t how = in.U8() % 3;
        op_name_ = how == 0 ? "Get inline" : how == 1 ? "Get leases" : "Get slices";
        v1::GetRequest r;
        r.set_namespace_(Namespace(in));
        r.set_keys(Keys(in));
        r.set_inline_data(how != 1);
        if (how == 1) r.set_lease_ms(LeaseMs(in));
        if (how == 2) {
          RunGetSlices(r);
        } else {
          RunGet(r);
        }
        break;
      }
      case 11: {
        op_name_ = "UCX Get";
        v1::GetRequest r;
        r.set_namespace_(Namespace(in));
        r.set_keys(Keys(in));
        r.set_lease_ms(LeaseMs(in));
        r.set_inline_data(in.U8() % 8 == 0);  // refused over UCX
        RunUcxCall(v1::UCX_CALL_GET, r.SerializeAsString());
        break;
      }
      case 12: {
        const bool ucx = in.U8() & 1;
        op_name_ = ucx ? "UCX Release" : "Release";
        v1::ReleaseRequest r;
        const int n = in.U8() % 4;
        for (int i = 0; i < n; ++i) r.add_lease_ids(LeaseId(in));
        if (ucx) {
          RunUcxCall(v1::UCX_CALL_RELEASE, r.SerializeAsString());
        } else {
          RunRelease(r);
        }
        break;
      }
      case 13: {
        op_name_ = "Delete";
        v1::DeleteRequest r;
        r.set_namespace_(Namespace(in));
        r.set_keys(Keys(in));
        RunDelete(r);
        break;
      }
      case 14: {
        op_name_ = "Pin";
        v1::PinRequest r;
        r.set_namespace_(Namespace(in));
        r.set_keys(Keys(in));
        r.set_pin(in.U8() & 1);
        RunPin(r);
        break;
      }
      case 15:
        op_name_ = "Stats";
        RunStats();
        break;
      case 16:
        op_name_ = "transfer write";
        RunTransferWrite(in);
        break;
      case 17: {
        op_name_ = "transfer read";
        if (!holds_.empty() && in.U8() % 4 == 0) {  // or end a held one
          const size_t i = in.U8() % holds_.size();
          store_->EndTransfer(holds_[i].access, holds_[i].hold);
          holds_.erase(holds_.begin() + static_cast<std::ptrdiff_t>(i));
        } else {
          RunTransferRead(in);
        }
        break;
      }
      case 18:
        op_name_ = "garbage";
        RunGarbage(in);
        break;
      default:
        op_name_ = "advance clock";
        Advance(in);
        break;
    }
    if (!failed()) VerifyLive();
    if (trace_) std::fprintf(stderr, "op %d %s: %s\n", op_index_, op_name_, Snap().ToString().c_str());
  }
  if (!failed()) Finish();
  return failure_;
}

}  // namespace

std::string FuzzServiceOne(const uint8_t* data, size_t size) {
  static const bool quiet = [] {
    spdlog::set_level(spdlog::level::err);  // the service warns about what the fuzzer does on purpose
    google::protobuf::SetLogHandler(nullptr);  // and protobuf about invalid UTF-8 in string fields
    return true;
  }();
  (void)quiet;
  ++g_coverage.inputs;
  Input in(data, size);
  Harness h;
  return h.Run(in);
}

ServiceFuzzCoverage FuzzServiceCoverage() { return g_coverage; }

}  // namespace kvhub::cachesvc
