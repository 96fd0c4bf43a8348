#include "storage/tiered_block_store.h"

#include <algorithm>
#include <limits>
#include <optional>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/types/span.h"
#include "common/clock.h"
#include "common/hash.h"
#include "common/log.h"

namespace kvhub::storage {

absl::Status TieredStoreConfig::Validate() const {
  if (mirror_queue_blocks == 0 || mirror_queue_blocks > (1u << 20)) {
    return absl::InvalidArgumentError(
        absl::StrCat("tiered store: mirror_queue_blocks ", mirror_queue_blocks, " not in 1 .. 1048576"));
  }
  if (mirror_lease < absl::Milliseconds(1) || mirror_lease > absl::Minutes(1)) {
    return absl::InvalidArgumentError(absl::StrCat("tiered store: mirror_lease ",
                                                   absl::FormatDuration(mirror_lease),
                                                   " not in 1ms .. 1m"));
  }
  if (device_timeout < absl::Milliseconds(1) || device_timeout > absl::Minutes(10)) {
    return absl::InvalidArgumentError(absl::StrCat("tiered store: device_timeout ",
                                                   absl::FormatDuration(device_timeout),
                                                   " not in 1ms .. 10m"));
  }
  if (device_error_limit == 0 || device_error_limit > (1u << 20)) {
    return absl::InvalidArgumentError(
        absl::StrCat("tiered store: device_error_limit ", device_error_limit, " not in 1 .. 1048576"));
  }
  return absl::OkStatus();
}

std::string TieredBlockStore::Id(absl::string_view ns, const BlockKey& key) {
  std::string id(ns);
  id.push_back('\0');
  id.append(reinterpret_cast<const char*>(&key.lo), sizeof(key.lo));
  id.append(reinterpret_cast<const char*>(&key.hi), sizeof(key.hi));
  return id;
}

absl::StatusOr<std::unique_ptr<TieredBlockStore>> TieredBlockStore::Create(
    std::unique_ptr<BlockStore> host, std::unique_ptr<GpuTier> gpu, const TieredStoreConfig& config) {
  if (host == nullptr || gpu == nullptr) {
    return absl::InvalidArgumentError("tiered store: the host store and the gpu tier are required");
  }
  if (auto s = config.Validate(); !s.ok()) return s;
  return std::unique_ptr<TieredBlockStore>(
      new TieredBlockStore(std::move(host), std::move(gpu), config));
}

TieredBlockStore::TieredBlockStore(std::unique_ptr<BlockStore> host, std::unique_ptr<GpuTier> gpu,
                                   const TieredStoreConfig& config)
    : config_(config), host_(std::move(host)), gpu_(std::move(gpu)) {
  gpu_capacity_ = gpu_->Stats().capacity_bytes;
  mirror_ = std::thread([this] { MirrorLoop(); });
}

TieredBlockStore::~TieredBlockStore() {
  {
    absl::MutexLock l(&mu_);
    stop_ = true;
  }
  mirror_.join();
}

void TieredBlockStore::Enqueue(absl::string_view ns, const BlockKey& key, const BlockKey* parent,
                               uint64_t size, uint64_t checksum) {
  absl::MutexLock l(&mu_);
  // The key put again with other bytes after the host evicted the first block: the
  // copier would replace the old copy when it copies this block, but a full queue,
  // or the host evicting this block first, left the old copy to be promoted over
  // the newer block.
  if (auto it = gpu_index_.find(Id(ns, key));
      it != gpu_index_.end() && (it->second.size != size || it->second.checksum != checksum)) {
    DropCopyLocked(it, ns, key);
  }
  if (!DeviceUsableLocked() || queue_.size() >= config_.mirror_queue_blocks) {
    ++stats_.mirror_dropped;
    return;
  }
  queue_.push_back(Item{std::string(ns), key, ++seq_,
                        parent == nullptr ? std::nullopt : std::optional<BlockKey>(*parent)});
}

void TieredBlockStore::MirrorLoop() {
  for (;;) {
    Item item;
    std::optional<FifoEntry> erase;
    {
      absl::MutexLock l(&mu_);
      mu_.Await(absl::Condition(
          +[](TieredBlockStore* t) ABSL_EXCLUSIVE_LOCKS_REQUIRED(t->mu_) {
            return t->stop_ || !t->queue_.empty() || !t->erase_queue_.empty();
          },
          this));
      if (stop_) return;
      // Erases first: a copy of the same key queued after its delete must find
      // the device free of the old one.
      if (!erase_queue_.empty()) {
        erase = std::move(erase_queue_.front());
        erase_queue_.pop_front();
      } else {
        item = std::move(queue_.front());
        queue_.pop_front();
      }
      ++in_flight_;
    }
    if (erase.has_value()) {
      absl::Status s = CopierDeviceCall([&] { return gpu_->Erase(erase->ns, erase->key); });
      if (!s.ok() && !absl::IsNotFound(s) && !absl::IsFailedPrecondition(s)) {
        KVHUB_LOG(warn, "tiered store: erasing a dropped gpu copy: {}", s.ToString());
      }
    } else {
      MirrorOne(item);
    }
    absl::MutexLock l(&mu_);
    --in_flight_;
    // A delete's record matters only to copies queued before it: those older than
    // the oldest queued copy are done with (this thread is the only copier, so
    // nothing else is in flight now).
    const uint64_t oldest = queue_.empty() ? std::numeric_limits<uint64_t>::max() : queue_.front().seq;
    while (!deleted_order_.empty() && deleted_order_.front().first < oldest) {
      if (auto d = deleted_seq_.find(deleted_order_.front().second);
          d != deleted_seq_.end() && d->second == deleted_order_.front().first) {
        deleted_seq_.erase(d);
      }
      deleted_order_.pop_front();
    }
  }
}

absl::Status TieredBlockStore::CopierDeviceCall(const std::function<absl::Status()>& call) {
  {
    absl::MutexLock l(&mu_);
    if (!DeviceUsableLocked()) return absl::FailedPreconditionError("gpu tier is off");
    copier_call_since_ = Clock::Real()->Now();
  }
  absl::Status s = call();
  absl::MutexLock l(&mu_);
  // A call that came back after the timeout was hung for that long: the same verdict
  // as if it were still running (nothing else may have noticed it meanwhile).
  (void)DeviceUsableLocked();
  copier_call_since_ = absl::InfiniteFuture();
  NoteDeviceResultLocked(s);
  return s;
}

void TieredBlockStore::MirrorOne(const Item& item) {
  const std::string id = Id(item.ns, item.key);
  // The copier's own read: not a hit for the host tier's policy (it would make every
  // block look reused once) and not one of the namespace's leases. With a transfer
  // hold: a device copy that outlasts the lease (a slow device) must still read this
  // block's bytes, not those of whatever reused the chunk after expiry.
  absl::StatusOr<Lease> lease = host_->Acquire(item.ns, item.key, config_.mirror_lease,
                                               AcquireOptions{.count_as_read = false, .hold = true});
  if (!lease.ok()) {  // evicted or deleted before its turn
    absl::MutexLock l(&mu_);
    ++stats_.mirror_dropped;
    return;
  }
  const absl::Span<const uint8_t> bytes(lease->data, lease->size);
  // The tier holds this block under the key already (nothing to copy), or another
  // block (stale: its copy must go first).
  bool skip = false, stale = false;
  uint64_t stale_copy = 0;
  {
    absl::MutexLock l(&mu_);
    if (auto it = gpu_index_.find(id); it != gpu_index_.end()) {
      skip = it->second.checksum == lease->checksum && it->second.size == lease->size;
      stale = !skip;
      stale_copy = it->second.copy;
    }
  }
  if (stale) {
    // Put again with other bytes (another encoding of the key) after the host
    // evicted the first: the old copy would come back once the host evicts this.
    // Unindexed whatever the erase says: an old copy left indexed could be promoted
    // over the newer block (a device that would not free it keeps the bytes counted
    // in its own used_bytes).
    absl::Status e = CopierDeviceCall([&] { return gpu_->Erase(item.ns, item.key); });
    absl::MutexLock l(&mu_);
    if (auto it = gpu_index_.find(id); it != gpu_index_.end() && it->second.copy == stale_copy) {
      gpu_bytes_ -= it->second.size;
      gpu_index_.erase(it);
    }
    if (absl::IsFailedPrecondition(e)) {  // the tier is off: nothing is indexed any more
      ++stats_.mirror_dropped;
      skip = true;
    } else if (!e.ok() && !absl::IsNotFound(e)) {
      ++stats_.mirror_failed;
      KVHUB_LOG(warn, "tiered store: dropping a stale gpu copy: {}", e.ToString());
      skip = true;  // give up on this block: released below
    }
  }
  if (skip) {  // already there (the same block put again after the host evicted it), or given up
    host_->EndTransfer(TransferAccess::kRead, lease->hold);
    if (absl::Status r = host_->Release(lease->id); !r.ok() && !absl::IsNotFound(r)) {
      KVHUB_LOG(warn, "tiered store: releasing the copier's lease: {}", r.ToString());
    }
    return;
  }
  absl::Status put;
  if (lease->size > gpu_capacity_) {
    // Never fits: evicting every copy for it (as before) emptied the tier for nothing.
    put = absl::ResourceExhaustedError("block larger than the gpu tier");
  } else {
    put = CopierDeviceCall([&] { return gpu_->Put(item.ns, item.key, bytes); });
    // Room is made by evicting the oldest copies, up to twice the block's size (the
    // device pool may need more than the bytes, e.g. fragmented); a Put that still
    // fails is not short of room (the device is, e.g. shared with an engine): this
    // block is dropped rather than the whole tier emptied for it.
    uint64_t freed = 0;
    while (put.code() == absl::StatusCode::kResourceExhausted && freed < 2 * lease->size) {
      FifoEntry victim;
      uint64_t got = 0;
      {
        absl::MutexLock l(&mu_);
        if (!PopOldestLocked(&victim, &got)) break;  // empty and still too big: give up on this block
      }
      absl::Status e = CopierDeviceCall([&] { return gpu_->Erase(victim.ns, victim.key); });
      if (!e.ok()) {
        KVHUB_LOG(warn, "tiered store: evicting a gpu copy: {}", e.ToString());
        if (absl::IsFailedPrecondition(e)) break;  // the tier is off
      }
      freed += got;
      put = CopierDeviceCall([&] { return gpu_->Put(item.ns, item.key, bytes); });
    }
  }
  // Indexed before the lease ends: while it lives the host holds this block, so the
  // key cannot be put again with other bytes; once it ends, such a put's Enqueue
  // must find this copy indexed to drop it (else the older copy could be promoted
  // over the newer block once the host evicted that one).
  IndexCopy(item, id, put, lease->size, lease->checksum);
  host_->EndTransfer(TransferAccess::kRead, lease->hold);
  if (absl::Status r = host_->Release(lease->id); !r.ok() && !absl::IsNotFound(r)) {  // NOT_FOUND: expired
    KVHUB_LOG(warn, "tiered store: releasing the copier's lease: {}", r.ToString());
  }
}

void TieredBlockStore::IndexCopy(const Item& item, const std::string& id, const absl::Status& put, uint64_t size,
                                 uint64_t checksum) {
  absl::MutexLock l(&mu_);
  if (!put.ok()) {
    if (put.code() == absl::StatusCode::kAlreadyExists) {
      // Already indexed: nothing to do. Not indexed: an old copy the device kept
      // (its erase failed); it is erased again so the key can be copied later.
      if (!gpu_index_.contains(id)) {
        ++stats_.mirror_failed;
        erase_queue_.push_back(FifoEntry{item.ns, item.key, 0});
      }
      return;
    }
    if (put.code() == absl::StatusCode::kResourceExhausted ||
        put.code() == absl::StatusCode::kFailedPrecondition) {  // full, or the tier is off
      ++stats_.mirror_dropped;
    } else {
      ++stats_.mirror_failed;
      KVHUB_LOG(warn, "tiered store: copying a block to the gpu tier: {}", put.ToString());
    }
    return;
  }
  if (stats_.gpu_off) {  // switched off during the copy: nothing is indexed any more
    ++stats_.mirror_dropped;
    return;
  }
  if (auto d = deleted_seq_.find(id); d != deleted_seq_.end() && d->second > item.seq) {
    // Deleted while it was copied: it must not come back.
    erase_queue_.push_back(FifoEntry{item.ns, item.key, 0});
    ++stats_.mirror_dropped;
    return;
  }
  const uint64_t copy = ++copies_;
  gpu_index_[id] = GpuEntry{size, checksum, copy, item.parent};
  gpu_bytes_ += size;
  gpu_fifo_.push_back(FifoEntry{item.ns, item.key, copy});
  ++stats_.mirrored;
  CompactFifoLocked();
}

bool TieredBlockStore::DeviceUsableLocked() {
  if (stats_.gpu_off) return false;
  const absl::Time oldest = std::min(copier_call_since_, promote_since_);
  if (Clock::Real()->Now() - oldest > config_.device_timeout) {
    TurnOffLocked(absl::StrCat("a device call has run for more than ",
                               absl::FormatDuration(config_.device_timeout), " (device hung)"));
    return false;
  }
  return true;
}

void TieredBlockStore::NoteDeviceResultLocked(const absl::Status& s) {
  switch (s.code()) {
    case absl::StatusCode::kOk:
      errors_in_a_row_ = 0;
      return;
    // The tier's answers about its contents and room, not device faults.
    case absl::StatusCode::kNotFound:
    case absl::StatusCode::kAlreadyExists:
    case absl::StatusCode::kResourceExhausted:
    case absl::StatusCode::kInvalidArgument:
    case absl::StatusCode::kFailedPrecondition:
      return;
    default:
      break;
  }
  ++stats_.device_errors;
  if (++errors_in_a_row_ >= config_.device_error_limit && !stats_.gpu_off) {
    TurnOffLocked(absl::StrCat(errors_in_a_row_, " device calls failed in a row, the last: ", s.ToString()));
  }
}

void TieredBlockStore::TurnOffLocked(std::string reason) {
  if (stats_.gpu_off) return;
  KVHUB_LOG(error, "tiered store: switching the gpu tier off, serving from the host tier only: {}", reason);
  stats_.gpu_off = true;
  stats_.gpu_off_reason = std::move(reason);
  stats_.mirror_dropped += queue_.size();
  queue_.clear();
  deleted_seq_.clear();  // no copy will be indexed any more
  deleted_order_.clear();
  gpu_index_.clear();
  gpu_bytes_ = 0;
  gpu_fifo_.clear();
  erase_queue_.clear();  // the device is not asked again; its memory goes with the process
}

void TieredBlockStore::DropCopyLocked(absl::flat_hash_map<std::string, GpuEntry>::iterator it,
                                      absl::string_view ns, const BlockKey& key) {
  gpu_bytes_ -= it->second.size;
  gpu_index_.erase(it);
  if (!stats_.gpu_off) erase_queue_.push_back(FifoEntry{std::string(ns), key, 0});
}

bool TieredBlockStore::PopOldestLocked(FifoEntry* victim, uint64_t* size) {
  while (!gpu_fifo_.empty()) {
    FifoEntry e = std::move(gpu_fifo_.front());
    gpu_fifo_.pop_front();
    auto it = gpu_index_.find(Id(e.ns, e.key));
    // Gone (deleted, dropped), or the key's copy is a newer one (deleted and put
    // again): this entry is stale, and the newer copy keeps its place.
    if (it == gpu_index_.end() || it->second.copy != e.copy) continue;
    *size = it->second.size;
    gpu_bytes_ -= it->second.size;
    gpu_index_.erase(it);
    ++stats_.gpu_evictions;
    *victim = std::move(e);
    return true;
  }
  return false;
}

void TieredBlockStore::CompactFifoLocked() {
  if (gpu_fifo_.size() <= 2 * gpu_index_.size() + 1024) return;
  std::deque<FifoEntry> live;
  for (FifoEntry& e : gpu_fifo_) {
    auto it = gpu_index_.find(Id(e.ns, e.key));
    if (it != gpu_index_.end() && it->second.copy == e.copy) live.push_back(std::move(e));
  }
  gpu_fifo_.swap(live);
}

bool TieredBlockStore::Promote(absl::string_view ns, const BlockKey& key, const GpuEntry& e) {
  // With its chain parent, as first put: prefix-aware eviction must see it as a
  // child, not a root (a root outlives its parent's eviction, stranded).
  absl::StatusOr<Reservation> r =
      host_->Reserve(ns, key, e.size, e.checksum, PutOptions{.parent = e.parent ? &*e.parent : nullptr});
  if (r.status().code() == absl::StatusCode::kAlreadyExists) return true;  // put back meanwhile
  if (!r.ok()) {
    absl::MutexLock l(&mu_);
    ++stats_.promotion_failures;
    return false;
  }
  // Held while the device copies into it, like any write into a reservation: an
  // expiry sweep must not reclaim the chunk under the copy.
  absl::StatusOr<uint64_t> hold = host_->BeginTransfer(TransferAccess::kWrite, r->id, r->location);
  absl::StatusOr<uint64_t> got =
      hold.ok() ? gpu_->Get(ns, key, absl::Span<uint8_t>(r->data, e.size)) : hold.status();
  const absl::Status device_read = got.status();
  // Checked here, not only by the host's Commit: a corrupt copy is the device's
  // fault, not a client's write (the host counts its commit failures as those).
  // Under the hold: once it ends, an expired reservation's chunk may be reused.
  if (got.ok() && Xxh3_64(r->data, e.size) != e.checksum) {
    got = absl::DataLossError("the gpu copy's bytes do not match the block's checksum");
  }
  if (hold.ok()) host_->EndTransfer(TransferAccess::kWrite, *hold);
  absl::MutexLock l(&mu_);
  // A copy whose bytes failed the checksum counts as a device error too (a device
  // that keeps returning bad bytes is switched off like one that fails its calls).
  if (hold.ok()) NoteDeviceResultLocked(device_read.ok() ? got.status() : device_read);
  (void)DeviceUsableLocked();  // a read that came back after the timeout: hung; switched off
  auto it = gpu_index_.find(Id(ns, key));
  // Deleted, evicted, replaced or switched off while the device copied: the bytes
  // read must not become visible (a deleted block would come back). Checked and
  // committed under mu_, so a Delete is either before (no commit) or after (it
  // deletes the promoted block).
  const bool current = it != gpu_index_.end() && it->second.copy == e.copy;
  absl::Status c = !got.ok() ? got.status()
                   : current ? host_->Commit(r->id)
                             : absl::NotFoundError("the gpu copy was dropped during the promotion");
  if (!got.ok() || !current) {
    if (absl::Status a = host_->Abort(r->id); !a.ok()) {
      KVHUB_LOG(warn, "tiered store: aborting a failed promotion: {}", a.ToString());
    }
  }
  if (!current) return false;  // not a failure of the copy: it is gone
  if ((got.ok() || !hold.ok()) && absl::IsNotFound(c)) {
    // The reservation expired (found by the commit: the device read outlasted the
    // host's reservation_timeout, slow, not hung; or before the hold): the copy is
    // not at fault and stays for the next try. (The device's own NOT_FOUND drops it.)
    ++stats_.promotion_failures;
    KVHUB_LOG(warn, "tiered store: a promotion outlasted its host reservation, copy kept: {}", c.ToString());
    return false;
  }
  if (!c.ok()) {
    ++stats_.promotion_failures;
    if (c.code() == absl::StatusCode::kDataLoss) ++stats_.gpu_checksum_failures;
    KVHUB_LOG(warn, "tiered store: promoting a gpu copy failed, dropping it: {}", c.ToString());
    DropCopyLocked(it, ns, key);
    return false;
  }
  ++stats_.promotions;
  return true;
}

absl::Status TieredBlockStore::PromoteThen(absl::string_view ns, const BlockKey& key,
                                           const std::function<absl::Status()>& use) {
  const std::string id = Id(ns, key);
  // A put elsewhere may evict the promoted block before `use` reaches it (the
  // host store admits new blocks on probation): try again while the copy lasts.
  absl::Status s = absl::NotFoundError("block not found");
  for (int attempt = 0; attempt < 3; ++attempt) {
    GpuEntry e;
    {
      absl::MutexLock l(&mu_);
      // A key the tier does not hold is a miss at once, not after someone else's
      // promotion (a device read that may take up to device_timeout).
      if (!gpu_index_.contains(id)) return absl::NotFoundError("block not found");
      // One promotion at a time; behind a device call that has run past the
      // timeout this gives up (and switches the tier off) instead of queueing.
      for (;;) {
        if (!DeviceUsableLocked()) return absl::NotFoundError("block not found (gpu tier off)");
        if (!promoting_) break;
        // Clock::Real() is monotonic, absl's deadlines are wall-clock: wait a duration.
        mu_.AwaitWithTimeout(absl::Condition(
                                 +[](TieredBlockStore* t) ABSL_EXCLUSIVE_LOCKS_REQUIRED(t->mu_) {
                                   return !t->promoting_ || t->stats_.gpu_off;
                                 },
                                 this),
                             promote_since_ + config_.device_timeout + absl::Milliseconds(1) -
                                 Clock::Real()->Now());
      }
      auto it = gpu_index_.find(id);
      if (it == gpu_index_.end()) return absl::NotFoundError("block not found");
      e = it->second;
      promoting_ = true;
      promote_since_ = Clock::Real()->Now();
    }
    const bool promoted = Promote(ns, key, e);
    // `use` (a host-store call) runs inside the promotion slot, so another promotion
    // cannot evict the block first.
    if (promoted) s = use();
    {
      absl::MutexLock l(&mu_);
      promoting_ = false;
      promote_since_ = absl::InfiniteFuture();
    }
    if (!promoted) return absl::NotFoundError("block not found");
    if (s.code() != absl::StatusCode::kNotFound) return s;
  }
  return s;
}

size_t TieredBlockStore::Lookup(absl::string_view ns, std::span<const BlockKey> keys,
                                std::span<uint8_t> present) {
  size_t prefix = host_->Lookup(ns, keys, present);
  if (prefix == keys.size()) return prefix;
  absl::MutexLock l(&mu_);
  if (gpu_index_.empty() || !DeviceUsableLocked()) return prefix;
  size_t run = keys.size();
  for (size_t i = 0; i < keys.size() && i < present.size(); ++i) {
    if (present[i] == 0 && gpu_index_.contains(Id(ns, keys[i]))) present[i] = 1;
    if (present[i] == 0 && run == keys.size()) run = i;
  }
  return run;
}

absl::StatusOr<Reservation> TieredBlockStore::Reserve(absl::string_view ns, const BlockKey& key,
                                                      uint64_t size, uint64_t checksum,
                                                      const PutOptions& options) {
  absl::StatusOr<Reservation> r = host_->Reserve(ns, key, size, checksum, options);
  if (r.ok()) {
    absl::MutexLock l(&pending_mu_);
    pending_[r->id] = Pending{std::string(ns), key,
                              options.parent == nullptr ? std::nullopt : std::optional<BlockKey>(*options.parent),
                              size, checksum};
  }
  return r;
}

absl::Status TieredBlockStore::Commit(uint64_t reservation_id) {
  // Which block this is, read before the host commits: while it verifies the
  // checksum the reservation is neither live nor committed, and an expiry sweep
  // (ExpireNow) in that window drops its pending_ entry; the block must still get
  // its gpu copy.
  Pending p;
  bool known = false;
  {
    absl::MutexLock l(&pending_mu_);
    auto it = pending_.find(reservation_id);
    if (it != pending_.end()) {
      p = it->second;
      known = true;
    }
  }
  absl::Status s = host_->Commit(reservation_id);
  if (s.code() == absl::StatusCode::kFailedPrecondition) return s;  // held by a transfer: still live
  if (known) {
    absl::MutexLock l(&pending_mu_);
    pending_.erase(reservation_id);
  }
  if (s.ok() && known) Enqueue(p.ns, p.key, p.parent ? &*p.parent : nullptr, p.size, p.checksum);
  return s;
}

absl::Status TieredBlockStore::Abort(uint64_t reservation_id) {
  absl::Status s = host_->Abort(reservation_id);
  if (s.code() != absl::StatusCode::kFailedPrecondition) {
    absl::MutexLock l(&pending_mu_);
    pending_.erase(reservation_id);
  }
  return s;
}

absl::Status TieredBlockStore::Put(absl::string_view ns, const BlockKey& key,
                                   std::span<const uint8_t> data, uint64_t checksum,
                                   const PutOptions& options) {
  absl::Status s = host_->Put(ns, key, data, checksum, options);
  if (s.ok()) Enqueue(ns, key, options.parent, data.size(), checksum);
  return s;
}

absl::StatusOr<Lease> TieredBlockStore::Acquire(absl::string_view ns, const BlockKey& key,
                                                absl::Duration lease, const AcquireOptions& options) {
  absl::StatusOr<Lease> l = host_->Acquire(ns, key, lease, options);
  if (l.status().code() != absl::StatusCode::kNotFound) return l;
  absl::StatusOr<Lease> promoted = l;
  absl::Status s = PromoteThen(ns, key, [&] {
    promoted = host_->Acquire(ns, key, lease, options);
    return promoted.status();
  });
  // NOT_FOUND: no usable gpu copy, the host's miss stands; anything else is the
  // promoted block's own answer (e.g. the namespace's lease share is spent).
  return absl::IsNotFound(s) ? l : promoted;
}

absl::Status TieredBlockStore::Pin(absl::string_view ns, const BlockKey& key, bool pin) {
  absl::Status s = host_->Pin(ns, key, pin);
  if (s.code() != absl::StatusCode::kNotFound) return s;
  if (!pin) {
    // A block only the gpu tier holds is present (Lookup says so) and not pinned:
    // unpinning it is done, not NOT_FOUND.
    absl::MutexLock l(&mu_);
    return gpu_index_.contains(Id(ns, key)) && DeviceUsableLocked() ? absl::OkStatus() : s;
  }
  absl::Status p = PromoteThen(ns, key, [&] { return host_->Pin(ns, key, pin); });
  return p.code() == absl::StatusCode::kNotFound ? s : p;
}

absl::Status TieredBlockStore::Delete(absl::string_view ns, const BlockKey& key) {
  bool had_gpu = false;
  {
    absl::MutexLock l(&mu_);
    const std::string id = Id(ns, key);
    // Only a copy queued or running now could bring the block back; with none the
    // record is not needed (kept anyway, the map grew with every Delete until the
    // copier next went idle).
    if (DeviceUsableLocked() && (!queue_.empty() || in_flight_ > 0)) {
      deleted_seq_[id] = ++seq_;
      deleted_order_.emplace_back(seq_, id);
    }
    // The device erase is left to the copier: a Delete never waits for the device.
    if (auto it = gpu_index_.find(id); it != gpu_index_.end()) {
      had_gpu = true;
      DropCopyLocked(it, ns, key);
    }
  }
  absl::Status s = host_->Delete(ns, key);
  if (s.code() == absl::StatusCode::kNotFound && had_gpu) return absl::OkStatus();
  return s;
}

size_t TieredBlockStore::ExpireNow() {
  const size_t n = host_->ExpireNow();
  // Forget reservations the host store no longer has (expired or ended
  // without Commit/Abort reaching us). Asked without pending_mu_, which every
  // Reserve, Commit and Abort takes: one host call per pending reservation under
  // it stalled them all for the sweep.
  std::vector<uint64_t> ids;
  {
    absl::MutexLock l(&pending_mu_);
    ids.reserve(pending_.size());
    for (const auto& [id, p] : pending_) ids.push_back(id);
  }
  std::vector<uint64_t> gone;
  for (uint64_t id : ids) {
    if (host_->GrantNamespaceTag(TransferAccess::kWrite, id).status().code() == absl::StatusCode::kNotFound) {
      gone.push_back(id);
    }
  }
  // A reservation id is never reused (generations), so one found gone stays gone.
  absl::MutexLock l(&pending_mu_);
  for (uint64_t id : gone) pending_.erase(id);
  return n;
}

TierStats TieredBlockStore::tier_stats() const {
  // From our own index: asking the device would wait behind a hung copy.
  absl::MutexLock l(&mu_);
  TierStats s = stats_;
  s.gpu_capacity_bytes = gpu_capacity_;
  s.gpu_used_bytes = gpu_bytes_;
  s.gpu_blocks = gpu_index_.size();
  return s;
}

size_t TieredBlockStore::deleted_records_for_testing() const {
  absl::MutexLock l(&mu_);
  return deleted_seq_.size() + deleted_order_.size();
}

size_t TieredBlockStore::mirror_pending() const {
  absl::MutexLock l(&mu_);
  return queue_.size() + in_flight_ + erase_queue_.size();
}

}  // namespace kvhub::storage
