#pragma once
// A host BlockStore with the `gpu` tier behind it (DESIGN §5; docs/storage.md,
// "The gpu tier in kvhubd"). The host store stays authoritative: every put,
// lease, pin and transfer goes to it. Committed blocks are also copied to the
// gpu tier in the background (write-through, through a short lease on the host
// block), so the device keeps the most recently published blocks in FIFO
// order of arrival; when the host store evicts a block, the gpu copy keeps it
// servable: Lookup reports it present and Acquire (and Pin) promote it back
// into the host store, verifying its checksum, before leasing it as usual.
//
// Coherence: Delete removes a key from both tiers, and a copy still on its way
// to the gpu tier when the key is deleted is dropped, so a deleted block is
// never promoted back. A key the gpu tier alone holds may be put again (Reserve
// and Put go to the host store): once the new block is committed, a gpu copy of
// other bytes is dropped, so the older block never comes back over it. A gpu copy whose bytes no longer match the checksum it
// was stored with is dropped and reported (DATA_LOSS is never returned to the
// caller for it: the block is a miss).
//
// A failing device never fails a host-tier operation and never stalls one:
// device copies run outside the lock that Lookup, Put, Commit and Delete take
// (held for map operations and a promotion's host commit, a checksum of the
// block), a Delete's device erase is left to the background copier, and the tier is
// switched off (every gpu copy forgotten: reads of them are misses; nothing
// more is copied; TierStats::gpu_off says why) when `device_error_limit`
// device calls fail in a row or one runs longer than `device_timeout` (a hung
// device; a call that comes back after that long counts as hung too). The
// device memory of a switched-off tier is not freed; restarting the process is
// the way back. A thread already inside a hung device call (the copier, one
// promotion) stays there.
//
// Thread safety: all methods are thread-safe. Promotions are serialized (one
// at a time, each copying the block back from the device); host-store calls,
// and reads of blocks the host store has, never wait for their device copy.
// Ownership: owns both stores; the destructor stops the background copier
// (and so waits for a device call in progress).

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "storage/block_store.h"
#include "storage/gpu_tier.h"

namespace kvhub::storage {

struct TieredStoreConfig {
  // Committed blocks waiting to be copied to the gpu tier; when the queue is
  // full a new block is not copied (counted in mirror_dropped). 1 .. 1M;
  // default 4096.
  uint32_t mirror_queue_blocks = 4096;
  // The host lease the copier holds while it copies one block. 1 ms .. 1 min;
  // default 10 s.
  absl::Duration mirror_lease = absl::Seconds(10);
  // A device call (a copy either way, an erase) running longer than this
  // switches the gpu tier off: the device is taken for hung, and reads stop
  // queueing behind it. 1 ms .. 10 min; default 10 s (a 16 MiB copy takes ~ms).
  absl::Duration device_timeout = absl::Seconds(10);
  // This many device calls failing in a row (errors other than "full",
  // "absent" or "present") switch the gpu tier off. 1 .. 1M; default 16.
  uint32_t device_error_limit = 16;

  absl::Status Validate() const;
};

struct TierStats {
  uint64_t gpu_capacity_bytes = 0;
  uint64_t gpu_used_bytes = 0;  // bytes of the copies the tier serves
  uint64_t gpu_blocks = 0;
  uint64_t mirrored = 0;          // blocks copied to the gpu tier
  uint64_t mirror_dropped = 0;    // not copied: queue full, or gone from the host before the copy
  uint64_t mirror_failed = 0;     // the gpu tier refused or failed the copy (other than full)
  uint64_t gpu_evictions = 0;     // oldest gpu copies dropped to make room
  uint64_t promotions = 0;        // gpu copies put back into the host store
  uint64_t promotion_failures = 0;  // host store full, or the gpu copy failed its checksum
  uint64_t gpu_checksum_failures = 0;
  uint64_t device_errors = 0;      // device calls that failed (errors other than full/absent/present)
  bool gpu_off = false;            // switched off: a hung or failing device (see the class comment)
  std::string gpu_off_reason;      // why, when gpu_off
};

class TieredBlockStore final : public BlockStore {
 public:
  // INVALID_ARGUMENT for a bad config or null stores.
  static absl::StatusOr<std::unique_ptr<TieredBlockStore>> Create(std::unique_ptr<BlockStore> host,
                                                                  std::unique_ptr<GpuTier> gpu,
                                                                  const TieredStoreConfig& config);
  ~TieredBlockStore() override;

  std::span<const Region> regions() const override { return host_->regions(); }
  size_t Lookup(absl::string_view ns, std::span<const BlockKey> keys,
                std::span<uint8_t> present) override;
  absl::StatusOr<Reservation> Reserve(absl::string_view ns, const BlockKey& key, uint64_t size,
                                      uint64_t checksum, const PutOptions& options) override;
  absl::Status Commit(uint64_t reservation_id) override;
  absl::Status Abort(uint64_t reservation_id) override;
  absl::Status Put(absl::string_view ns, const BlockKey& key, std::span<const uint8_t> data,
                   uint64_t checksum, const PutOptions& options) override;
  absl::StatusOr<Lease> Acquire(absl::string_view ns, const BlockKey& key, absl::Duration lease,
                                const AcquireOptions& options = {}) override;
  absl::Status Release(uint64_t lease_id) override { return host_->Release(lease_id); }
  absl::Status Delete(absl::string_view ns, const BlockKey& key) override;
  absl::Status Pin(absl::string_view ns, const BlockKey& key, bool pin) override;
  absl::StatusOr<uint64_t> BeginTransfer(TransferAccess access, uint64_t grant_id,
                                         const BlockLocation& range) override {
    return host_->BeginTransfer(access, grant_id, range);
  }
  void EndTransfer(TransferAccess access, uint64_t hold) override { host_->EndTransfer(access, hold); }
  absl::StatusOr<uint64_t> GrantNamespaceTag(TransferAccess access, uint64_t grant_id) override {
    return host_->GrantNamespaceTag(access, grant_id);
  }
  size_t ExpireNow() override;
  BlockStoreStats Stats() const override { return host_->Stats(); }
  NamespaceUsage NamespaceUsageOf(absl::string_view ns) const override {
    return host_->NamespaceUsageOf(ns);
  }
  std::string PolicyName() const override { return host_->PolicyName(); }
  PolicyState PolicyStateNow() const override { return host_->PolicyStateNow(); }

  TierStats tier_stats() const;
  // Blocks the copier has not finished yet (queued or being copied, and
  // dropped copies not yet erased from the device). For tests and
  // drain-before-exit.
  size_t mirror_pending() const;
  // Deletes remembered against copies queued before them (bounded by the queue).
  size_t deleted_records_for_testing() const;

 private:
  struct Item {  // a committed block waiting to be copied
    std::string ns;
    BlockKey key;
    uint64_t seq = 0;
    std::optional<BlockKey> parent;  // its chain parent, given back when it is promoted
  };
  struct GpuEntry {
    uint64_t size = 0;
    uint64_t checksum = 0;
    uint64_t copy = 0;  // which copy: its gpu_fifo_ entry carries the same number
    std::optional<BlockKey> parent;
  };
  struct FifoEntry {
    std::string ns;
    BlockKey key;
    uint64_t copy = 0;
  };
  struct Pending {  // a reservation, to know what Commit made visible
    std::string ns;
    BlockKey key;
    std::optional<BlockKey> parent;
    uint64_t size = 0, checksum = 0;
  };
  // (namespace, key) as one map key.
  static std::string Id(absl::string_view ns, const BlockKey& key);

  TieredBlockStore(std::unique_ptr<BlockStore> host, std::unique_ptr<GpuTier> gpu,
                   const TieredStoreConfig& config);
  // After the host store committed (ns, key) with these bytes: drops a gpu copy of
  // other bytes, then queues the block's copy.
  void Enqueue(absl::string_view ns, const BlockKey& key, const BlockKey* parent, uint64_t size,
               uint64_t checksum);
  void MirrorLoop();
  void MirrorOne(const Item& item);
  // Counts the copier's device Put `put` of `item` (`id`: Id of its namespace and
  // key) and, when it stored the block, indexes the copy (unless the key was deleted
  // meanwhile).
  void IndexCopy(const Item& item, const std::string& id, const absl::Status& put, uint64_t size, uint64_t checksum);
  // Runs one device call of the copier (`call`, made without mu_), timed for
  // device_timeout and counted for device_error_limit. FAILED_PRECONDITION,
  // without calling, once the tier is off.
  absl::Status CopierDeviceCall(const std::function<absl::Status()>& call);
  // Copies the gpu copy `e` of (ns, key) back into the host store, the device
  // read made without mu_; the commit is made under mu_ and only while `e` is
  // still the key's copy (not deleted, evicted or replaced meanwhile). True if
  // the host store now has the block (promoted, or already there). Called by
  // the one promotion running (promoting_).
  bool Promote(absl::string_view ns, const BlockKey& key, const GpuEntry& e);
  // Promotes (ns, key) and runs `use` on the host store (a lease, a pin) while
  // no other promotion can evict it; NOT_FOUND when there is no gpu copy or the
  // tier is off.
  absl::Status PromoteThen(absl::string_view ns, const BlockKey& key,
                           const std::function<absl::Status()>& use);
  // False once the tier is off; first switches it off if a device call has run
  // past device_timeout.
  bool DeviceUsableLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Counts a device call's result toward device_error_limit.
  void NoteDeviceResultLocked(const absl::Status& s) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void TurnOffLocked(std::string reason) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Forgets the copy `it` (the index, its bytes) and leaves its device erase
  // to the copier.
  void DropCopyLocked(absl::flat_hash_map<std::string, GpuEntry>::iterator it, absl::string_view ns,
                      const BlockKey& key) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Takes the oldest gpu copy out of the index for eviction; false when there
  // is none. The caller erases it from the device.
  bool PopOldestLocked(FifoEntry* victim, uint64_t* size) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Drops gpu_fifo_ entries whose copy is gone (deleted, dropped, replaced) once they
  // outnumber the live copies: the FIFO stays O(live copies).
  void CompactFifoLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const TieredStoreConfig config_;
  const std::unique_ptr<BlockStore> host_;
  const std::unique_ptr<GpuTier> gpu_;

  mutable absl::Mutex mu_;
  std::deque<Item> queue_ ABSL_GUARDED_BY(mu_);
  size_t in_flight_ ABSL_GUARDED_BY(mu_) = 0;  // copies and erases taken by the copier, not finished
  uint64_t seq_ ABSL_GUARDED_BY(mu_) = 0;
  // Keys deleted while copies may be in flight: a copy enqueued before the
  // delete (smaller seq) is dropped. Forgotten once older than every queued copy.
  absl::flat_hash_map<std::string, uint64_t> deleted_seq_ ABSL_GUARDED_BY(mu_);
  // deleted_seq_'s records in the order made, to forget those older than every
  // queued copy (under a steady queue it never empties; it grew with every Delete).
  std::deque<std::pair<uint64_t, std::string>> deleted_order_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, GpuEntry> gpu_index_ ABSL_GUARDED_BY(mu_);
  uint64_t gpu_bytes_ ABSL_GUARDED_BY(mu_) = 0;          // sum of gpu_index_'s sizes
  std::deque<FifoEntry> gpu_fifo_ ABSL_GUARDED_BY(mu_);  // oldest first; may hold stale entries
  // Copies dropped from the index (deleted, failed their checksum) whose device
  // bytes the copier erases before its next copy.
  std::deque<FifoEntry> erase_queue_ ABSL_GUARDED_BY(mu_);
  uint64_t copies_ ABSL_GUARDED_BY(mu_) = 0;            // numbers the copies
  uint64_t gpu_capacity_ = 0;                           // the gpu tier's, fixed
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  // The device calls in progress, by start time (InfiniteFuture: none): the
  // copier's, and the one promotion's.
  absl::Time copier_call_since_ ABSL_GUARDED_BY(mu_) = absl::InfiniteFuture();
  absl::Time promote_since_ ABSL_GUARDED_BY(mu_) = absl::InfiniteFuture();
  bool promoting_ ABSL_GUARDED_BY(mu_) = false;
  uint32_t errors_in_a_row_ ABSL_GUARDED_BY(mu_) = 0;
  TierStats stats_ ABSL_GUARDED_BY(mu_);

  absl::Mutex pending_mu_;
  absl::flat_hash_map<uint64_t, Pending> pending_ ABSL_GUARDED_BY(pending_mu_);

  std::thread mirror_;
};

}  // namespace kvhub::storage
