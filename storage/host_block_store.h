#pragma once
// The BlockStore implementation (see block_store.h for the contract and
// docs/storage.md for the design). Include block_store.h and use
// BlockStore::Create instead of naming this class.
//
// One absl::Mutex guards all metadata. The data path never runs long work under
// it: Commit hashes the block outside the lock (the slot is marked COMMITTING
// meanwhile) and Put copies outside it. Lookup takes the lock once per batch.

#include <algorithm>
#include <cstdint>
#include <optional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "storage/block_index.h"
#include "storage/keyed_hash.h"
#include "storage/block_store.h"
#include "storage/grant_generations.h"
#include "storage/host_regions.h"
#include "storage/size_classes.h"
#include "storage/slab_allocator.h"
#include "storage/slot_list.h"

namespace kvhub::storage {

class HostBlockStore final : public BlockStore {
 public:
  // `config` must be valid (Validate()); `clock` non-null and outliving the store.
  static absl::StatusOr<std::unique_ptr<HostBlockStore>> Make(const BlockStoreConfig& config,
                                                              Clock* clock,
                                                              RegionProvider provider = nullptr);

  std::span<const Region> regions() const override {
    return regions_ != nullptr ? regions_->regions() : std::span<const Region>(provided_regions_);
  }
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
  absl::Status Release(uint64_t lease_id) override;
  absl::Status Delete(absl::string_view ns, const BlockKey& key) override;
  absl::Status Pin(absl::string_view ns, const BlockKey& key, bool pin) override;
  absl::StatusOr<uint64_t> GrantNamespaceTag(TransferAccess access, uint64_t grant_id) override
      ABSL_LOCKS_EXCLUDED(mu_);
  absl::StatusOr<uint64_t> BeginTransfer(TransferAccess access, uint64_t grant_id,
                                         const BlockLocation& range) override;
  void EndTransfer(TransferAccess access, uint64_t hold) override;
  size_t ExpireNow() override;
  BlockStoreStats Stats() const override;
  NamespaceUsage NamespaceUsageOf(absl::string_view ns) const override;
  std::string PolicyName() const override { return policy_name_; }
  PolicyState PolicyStateNow() const override;

  // Slot table size and size classes chosen at Create (for tests and tools).
  uint32_t max_slots() const { return max_slots_; }
  const SizeClasses& size_classes() const { return classes_; }

 private:
  enum class State : uint8_t { kFree, kReserved, kCommitting, kCommitted, kZombie };
  struct Slot {
    uint64_t offset = 0;      // global chunk offset (SlabAllocator)
    uint64_t size = 0;        // block bytes
    uint64_t checksum = 0;
    int64_t expires_ns = 0;   // reservation expiry
    BlockKey parent;          // chain parent given to Reserve
    uint32_t gen = 0;         // redrawn on every reuse (GrantGenerations); the reservation id's top half
    uint32_t leases = 0;
    uint32_t transfers = 0;   // BeginTransfer holds on a reservation
    State state = State::kFree;
    bool pinned = false;
    bool pin_on_commit = false;
    bool has_parent = false;
  };
  struct LeaseRec {
    uint32_t slot = kNoSlot;  // kNoSlot when free
    uint32_t gen = 0;         // redrawn on every reuse (GrantGenerations); the lease id's top half
    int64_t expires_ns = 0;
    uint64_t ns_tag = 0;  // its namespace, for ns_leases_
    bool counted = false;  // counted in ns_leases_ (a client's read under a quota)
  };

  HostBlockStore(const BlockStoreConfig& config, Clock* clock) : config_(config), clock_(clock) {}

  // The policies' digest of a block (ghost queues, duel's shadows: hash tables
  // keyed by it), keyed per process like the index.
  static uint64_t GhostHint(const BlockKey& key, uint64_t ns_tag) { return KeyedHash64(key, ns_tag); }
  BlockLocation LocationOf(uint64_t offset, uint64_t size) const;
  int64_t NowNs() const { return absl::ToUnixNanos(clock_->Now()); }

  // Reserve / Commit. `*clear` gets how many bytes at r.data the caller must zero
  // before anyone reads them: the whole chunk when it may hold another namespace's
  // bytes (SlabAllocator's owner tags), else 0. The reservation starts with one
  // transfer hold: kForCopy always (Put's copy, which Commit ends under the same
  // lock as its other checks), kForClearing only when *clear != 0 (the caller ends
  // it with EndTransfer once cleared).
  enum class ReserveHold { kForCopy, kForClearing };
  absl::StatusOr<Reservation> ReserveImpl(absl::string_view ns, const BlockKey& key, uint64_t size,
                                          uint64_t checksum, const PutOptions& options, ReserveHold hold,
                                          uint64_t* clear) ABSL_LOCKS_EXCLUDED(mu_);
  // `held`: the reservation carries Put's hold (ReserveHold::kForCopy).
  absl::Status CommitImpl(uint64_t reservation_id, bool held) ABSL_LOCKS_EXCLUDED(mu_);

  // All below require mu_.
  bool MakeRoom(uint64_t chunk_bytes) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // `*prior`: SlabAllocator::Allocate's owner of the chunk's bytes.
  uint64_t AllocateChunk(uint32_t cls, uint64_t* prior) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  uint32_t PickVictim() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // A victim that gets a chunk of class `cls`: a block of that class, or one whose
  // whole slab can be emptied (every block in it evictable) so the slab can change
  // class. kNoSlot when none is.
  uint32_t PickVictimFor(uint32_t cls) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Whether a chunk of class `cls` is free or can be freed by eviction.
  bool ChunkObtainable(uint32_t cls) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // RESOURCE_EXHAUSTED for a `size`-byte block no chunk can be found for (counted).
  absl::Status NoChunkError(uint64_t size) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  bool EvictOne() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Evicts every evictable block in `slab`.
  void EvictSlab(uint32_t slab) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Why a block leaves: deleted; evicted as the policy's victim; or removed because
  // its slab was emptied for another size class (counted as an eviction, but told
  // to the policy as a removal it did not choose: the block was not judged cold,
  // and as an eviction it sent its parent to LRU's cold end and into S3-FIFO's ghost).
  enum class Removal { kDeleted, kEvicted, kWithSlab };
  // A committed block leaves the index and the policy; its bytes (and its
  // namespace's quota) are freed now or, if leased, when the last lease ends.
  void RemoveVisible(uint32_t slot, Removal why) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Frees a block that left the index (now, or as a zombie whose last lease
  // ended): its namespace's quota, then its chunk and slot.
  void FreeVisibleOrZombie(uint32_t slot) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Namespace quota accounting (no-ops without namespace_quota_bytes).
  void ChargeNamespace(uint64_t tag, uint64_t bytes) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void CreditNamespace(uint64_t tag, uint64_t bytes) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Frees the chunk and the slot.
  void FreeSlot(uint32_t slot) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Drops a RESERVED/COMMITTING slot: index entry, quota, chunk.
  void DropReservation(uint32_t slot) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void DropLease(uint32_t idx) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  size_t ExpireLocked(int64_t now_ns) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // ExpireLocked for a call about to be refused, at most once per millisecond.
  size_t ExpireOnDemandLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Whether [range] lies inside the block at chunk `offset` of `size` bytes.
  bool Contains(uint64_t offset, uint64_t size, const BlockLocation& range) const;
  // Slot of a live reservation id in state RESERVED, or kNoSlot.
  uint32_t ReservationSlot(uint64_t id) const ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  const BlockStoreConfig config_;
  Clock* const clock_;
  std::unique_ptr<HostRegions> regions_;  // null when a RegionProvider gave them:
  std::vector<Region> provided_regions_;
  SizeClasses classes_;
  uint64_t slab_bytes_ = 0, slabs_ = 0;  // allocator geometry (for error messages)
  uint32_t max_slots_ = 0;
  uint64_t pin_quota_ = 0;
  // Namespace quotas (set by Make, read-only after): whether any applies, and the
  // per-namespace overrides of config_.namespace_quota_bytes by namespace tag.
  bool quotas_on_ = false;
  absl::flat_hash_map<uint64_t, uint64_t> quota_by_tag_;
  // The quota of namespace `tag`: 0 = none.
  uint64_t QuotaFor(uint64_t tag) const {
    auto it = quota_by_tag_.find(tag);
    return it == quota_by_tag_.end() ? config_.namespace_quota_bytes : it->second;
  }
  uint64_t high_bytes_ = 0;
  uint64_t low_bytes_ = 0;
  std::string policy_name_;

  mutable absl::Mutex mu_;
  SlabAllocator alloc_ ABSL_GUARDED_BY(mu_);
  BlockIndex index_ ABSL_GUARDED_BY(mu_);
  std::unique_ptr<EvictionPolicy> policy_ ABSL_GUARDED_BY(mu_);
  std::vector<Slot> slots_ ABSL_GUARDED_BY(mu_);
  SlotLinks slot_links_ ABSL_GUARDED_BY(mu_);      // free slots, live reservations
  SlotList free_slots_ ABSL_GUARDED_BY(mu_){&slot_links_};
  SlotList reservations_ ABSL_GUARDED_BY(mu_){&slot_links_};
  SlotLinks slab_links_ ABSL_GUARDED_BY(mu_);      // blocks of each slab
  std::vector<SlotList> slab_blocks_ ABSL_GUARDED_BY(mu_);
  // PickVictimFor's verdict per slab, reset by each call: 0 unknown, 1 every block
  // in it is evictable, 2 not (preallocated: no allocation on the put path).
  std::vector<uint8_t> slab_verdict_ ABSL_GUARDED_BY(mu_);
  std::vector<LeaseRec> leases_ ABSL_GUARDED_BY(mu_);
  GrantGenerations generations_ ABSL_GUARDED_BY(mu_);  // of reservation and lease ids
  SlotLinks lease_links_ ABSL_GUARDED_BY(mu_);
  SlotList free_leases_ ABSL_GUARDED_BY(mu_){&lease_links_};
  SlotList live_leases_ ABSL_GUARDED_BY(mu_){&lease_links_};
  // The pinned quota and namespace quotas charge what a block takes, its chunk
  // (Footprint), not its bytes: 1-byte blocks pinned 100% of a tier that counted
  // them as 0.02% (session 15).
  uint64_t pinned_footprint_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t pin_reserved_footprint_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t Footprint(uint64_t size) const { return classes_.size(classes_.ClassFor(size)); }
  // Live leases per namespace tag (only with quotas_on_; entries stay at 0, so
  // the lease path allocates once per namespace). A namespace with a quota may
  // hold LeaseShare(quota) of max_leases: one tenant took every lease before.
  absl::flat_hash_map<uint64_t, uint32_t> ns_leases_ ABSL_GUARDED_BY(mu_);
  uint64_t LeaseShare(uint64_t quota) const {
    // A quota beyond the capacity gets all of max_leases (and the product never
    // reaches a double too large for uint64_t, whose conversion would be undefined).
    const double share = static_cast<double>(config_.max_leases) * static_cast<double>(quota) /
                         static_cast<double>(config_.capacity_bytes);
    const uint64_t capped = share >= static_cast<double>(config_.max_leases) ? config_.max_leases
                                                                             : static_cast<uint64_t>(share);
    return std::max<uint64_t>(capped, 1024);
  }
  // Bytes reserved and stored per namespace tag (only with quotas_on_).
  absl::flat_hash_map<uint64_t, uint64_t> ns_bytes_ ABSL_GUARDED_BY(mu_);
  BlockStoreStats stats_ ABSL_GUARDED_BY(mu_);
  std::optional<int64_t> demand_swept_ns_ ABSL_GUARDED_BY(mu_);  // the last ExpireOnDemandLocked
};

}  // namespace kvhub::storage
