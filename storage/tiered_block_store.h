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
// never promoted back. A gpu copy whose bytes no longer match the checksum it
// was stored with is dropped and reported (DATA_LOSS is never returned to the
// caller for it: the block is a miss).
//
// Thread safety: all methods are thread-safe. Promotions and the gpu index are
// serialized by one mutex (a promotion copies the block from the device while
// holding it); host-store calls are not.
// Ownership: owns both stores; the destructor stops the background copier.

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
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

  absl::Status Validate() const;
};

struct TierStats {
  uint64_t gpu_capacity_bytes = 0;
  uint64_t gpu_used_bytes = 0;
  uint64_t gpu_blocks = 0;
  uint64_t mirrored = 0;          // blocks copied to the gpu tier
  uint64_t mirror_dropped = 0;    // not copied: queue full, or gone from the host before the copy
  uint64_t mirror_failed = 0;     // the gpu tier refused or failed the copy (other than full)
  uint64_t gpu_evictions = 0;     // oldest gpu copies dropped to make room
  uint64_t promotions = 0;        // gpu copies put back into the host store
  uint64_t promotion_failures = 0;  // host store full, or the gpu copy failed its checksum
  uint64_t gpu_checksum_failures = 0;
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
  // Blocks the copier has not finished yet (queued or being copied). For tests
  // and drain-before-exit.
  size_t mirror_pending() const;

 private:
  struct Item {  // a committed block waiting to be copied
    std::string ns;
    BlockKey key;
    uint64_t seq = 0;
  };
  struct GpuEntry {
    uint64_t size = 0;
    uint64_t checksum = 0;
    uint64_t copy = 0;  // which copy: its gpu_fifo_ entry carries the same number
  };
  struct FifoEntry {
    std::string ns;
    BlockKey key;
    uint64_t copy = 0;
  };
  struct Pending {  // a reservation, to know what Commit made visible
    std::string ns;
    BlockKey key;
  };
  // (namespace, key) as one map key.
  static std::string Id(absl::string_view ns, const BlockKey& key);

  TieredBlockStore(std::unique_ptr<BlockStore> host, std::unique_ptr<GpuTier> gpu,
                   const TieredStoreConfig& config);
  void Enqueue(absl::string_view ns, const BlockKey& key);
  void MirrorLoop();
  void MirrorOne(const Item& item);
  // Puts the gpu copy of (ns, key) back into the host store. True if the host
  // store now has the block (promoted, or already there).
  bool PromoteLocked(absl::string_view ns, const BlockKey& key) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Promotes (ns, key) and runs `use` on the host store (a lease, a pin) while
  // no other promotion can evict it; NOT_FOUND when there is no gpu copy.
  absl::Status PromoteThen(absl::string_view ns, const BlockKey& key,
                           const std::function<absl::Status()>& use);
  // Evicts the oldest gpu copy; returns its size, 0 when there is none.
  uint64_t EvictOldestLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Drops gpu_fifo_ entries whose copy is gone (deleted, dropped, replaced) once they
  // outnumber the live copies: the FIFO stays O(live copies).
  void CompactFifoLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const TieredStoreConfig config_;
  const std::unique_ptr<BlockStore> host_;
  const std::unique_ptr<GpuTier> gpu_;

  mutable absl::Mutex mu_;
  std::deque<Item> queue_ ABSL_GUARDED_BY(mu_);
  size_t in_flight_ ABSL_GUARDED_BY(mu_) = 0;  // items taken by the copier, not finished
  uint64_t seq_ ABSL_GUARDED_BY(mu_) = 0;
  // Keys deleted while copies may be in flight: a copy enqueued before the
  // delete (smaller seq) is dropped. Cleared when the copier is idle.
  absl::flat_hash_map<std::string, uint64_t> deleted_seq_ ABSL_GUARDED_BY(mu_);
  absl::flat_hash_map<std::string, GpuEntry> gpu_index_ ABSL_GUARDED_BY(mu_);
  std::deque<FifoEntry> gpu_fifo_ ABSL_GUARDED_BY(mu_);  // oldest first; may hold stale entries
  uint64_t copies_ ABSL_GUARDED_BY(mu_) = 0;            // numbers the copies
  uint64_t gpu_capacity_ = 0;                           // the gpu tier's, fixed
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  TierStats stats_ ABSL_GUARDED_BY(mu_);

  absl::Mutex pending_mu_;
  absl::flat_hash_map<uint64_t, Pending> pending_ ABSL_GUARDED_BY(pending_mu_);

  std::thread mirror_;
};

}  // namespace kvhub::storage
