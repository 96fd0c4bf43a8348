#pragma once
// The host-memory tier of one kvhubd shard (DESIGN §5): a few large regions
// allocated at start (hugepages when available) and never moved, so a transport
// can register them once (UCX); a size-class allocator carves them; a concurrent
// index maps (namespace, key) to blocks; two-phase put; leases; watermarks;
// eviction through an EvictionPolicy.
//
// Thread safety: every method is safe to call concurrently.
// Failure semantics: a failed call changes nothing that was visible before it.
// A block is visible (Lookup/Acquire find it) only after a successful Commit,
// whole. Bytes of a leased block are never reused or moved while the lease lives.
// Allocation: after Create(), Reserve/Commit/Acquire/Release/Lookup perform no
// heap allocation per block.

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "common/keys.h"
#include "storage/eviction_policy.h"

namespace kvhub::storage {

struct BlockStoreConfig {
  uint64_t capacity_bytes = 1ull << 30;      // bytes of block data the tier may hold (1 GiB)
  uint64_t region_bytes = 1ull << 30;        // size of each region allocated at start (1 GiB; the last one may be shorter)
  bool try_hugepages = true;                 // MAP_HUGETLB first, plain pages if none are free
  uint64_t max_block_bytes = 64ull << 20;    // largest block accepted (64 MiB)
  uint64_t min_block_bytes = 4096;           // smallest size class; bounds the slot table
  // Reserve evicts when the chunk bytes held would exceed high * capacity, down to
  // low * capacity. The 2% above high lets puts proceed while every evictable
  // block is leased; rounds of 1% keep the tier full (every point of unused
  // capacity costs hit rate: docs/storage.md, "Watermarks").
  double high_watermark = 0.98;
  double low_watermark = 0.97;
  absl::Duration reservation_timeout = absl::Seconds(30);  // uncommitted reservations are reclaimed after
  absl::Duration default_lease = absl::Seconds(10);
  absl::Duration max_lease = absl::Minutes(10);  // at most 24h
  double max_pinned_fraction = 0.5;          // pinned blocks may use at most this share of capacity
  // Block bytes one namespace may hold at once, reserved and stored (DESIGN §8:
  // per-namespace quotas). A Reserve/Put that would go past it is refused with
  // RESOURCE_EXHAUSTED naming the namespace; the namespace's blocks leave by
  // eviction and Delete as usual, which frees its quota (a block still leased
  // when it leaves keeps counting until its last lease ends: its bytes are still
  // held). 0 (default): no quota.
  // With a quota, the first block of a namespace the store has not seen may
  // allocate a map entry (the only allocation on the put path).
  uint64_t namespace_quota_bytes = 0;
  // Per-namespace quotas, for tenants of different sizes: each entry replaces
  // namespace_quota_bytes for its namespace; bytes 0 exempts that namespace from
  // any quota. Names must be valid namespaces (1..256 bytes, no control bytes) and
  // distinct; bytes must be 0 or >= max_block_bytes. Empty (default): every
  // namespace gets namespace_quota_bytes.
  struct NamespaceQuota {
    std::string ns;
    uint64_t bytes = 0;
  };
  std::vector<NamespaceQuota> namespace_quotas;
  EvictionPolicyConfig eviction;
  // Added with the implementation (docs/storage.md):
  uint64_t slab_bytes = 0;       // allocator slab; 0 = auto (AutoSlabBytes in size_classes.h): >= bit_ceil(max_block_bytes), >= 64 slabs when possible
  uint32_t size_class_steps = 8; // size classes per power of two (8: <= ~8% rounding waste)
  uint64_t max_blocks = 0;       // slot table size; 0 = auto: capacity / min_block_bytes, at most 4M
  uint32_t max_leases = 1u << 18;  // live leases at once (preallocated); 1..16M
  bool populate = false;         // MAP_POPULATE the regions at start (fault pages in now)

  absl::Status Validate() const;
  // The allocator slab the store uses: slab_bytes, or AutoSlabBytes() when it is 0.
  uint64_t EffectiveSlabBytes() const;
  // The slot table size the store uses: max_blocks, or the auto size when it is 0
  // (capacity / min_block_bytes, at most 4M); clamped to [1, 16M].
  uint64_t EffectiveMaxBlocks() const;
};

// What a transport does to a block's memory (BlockStore::BeginTransfer).
enum class TransferAccess : uint8_t {
  kRead,   // out of a leased block (a get)
  kWrite,  // into a reservation (a put)
};

// A place in a region: what a transport needs to move bytes.
struct BlockLocation {
  uint32_t region = 0;
  uint64_t offset = 0;
  uint64_t size = 0;
};

struct Region {
  uint8_t* base = nullptr;
  uint64_t size = 0;
  bool hugepages = false;
};

struct Reservation {
  uint64_t id = 0;          // never 0 for a live reservation
  BlockLocation location;
  uint8_t* data = nullptr;  // writable until Commit/Abort/expiry; owned by the store
  absl::Time expires;
};

struct Lease {
  uint64_t id = 0;          // never 0
  BlockLocation location;
  const uint8_t* data = nullptr;  // readable until Release or expiry; owned by the store
  uint64_t size = 0;
  uint64_t checksum = 0;    // XXH3-64 of the bytes
  absl::Time expires;
  // With AcquireOptions::hold: a transfer hold taken with the lease (as BeginTransfer
  // kRead would); the caller ends it with EndTransfer(kRead, hold), after Release.
  uint64_t hold = 0;
};

struct PutOptions {
  const BlockKey* parent = nullptr;  // chain parent, for prefix-aware eviction
  bool pin = false;                  // never evicted until unpinned or deleted
};

struct AcquireOptions {
  // A client's read: the eviction policy counts it as a hit and the lease counts
  // toward the namespace's share of max_leases. false for the store's own reads (the
  // tiered store copying a block to its gpu tier), which must not make a block look
  // used or take a tenant's leases.
  bool count_as_read = true;
  // Also take a transfer hold on the block (Lease::hold), in the same step: its bytes
  // stay until EndTransfer even after the lease ends (zero-copy sends to slow readers).
  bool hold = false;
};

struct BlockStoreStats {
  uint64_t capacity_bytes = 0;
  uint64_t used_bytes = 0;       // committed blocks
  uint64_t reserved_bytes = 0;   // uncommitted reservations
  uint64_t blocks = 0;
  uint64_t pinned_blocks = 0;
  uint64_t leased_blocks = 0;
  uint64_t evictions = 0;
  uint64_t evicted_bytes = 0;
  uint64_t checksum_failures = 0;
  uint64_t reservations_expired = 0;
  uint64_t leases_expired = 0;
  uint64_t rejected_full = 0;    // reservations refused: nothing evictable
  uint64_t rejected_quota = 0;   // reservations refused: the namespace's quota (namespace_quota_bytes)
  uint64_t rejected_pin_quota = 0;  // pinned puts and Pin calls refused: max_pinned_fraction
  uint64_t allocated_bytes = 0;  // chunk bytes held (committed, reserved, deleted-but-leased)
  uint64_t pinned_bytes = 0;
  // Sweeps of expired leases and reservations made on demand, by a call that would
  // otherwise be refused (tier full, lease share or table exhausted): at most one
  // per millisecond, each O(live leases + reservations) under the store's lock.
  uint64_t demand_sweeps = 0;
};

// Supplies a store's regions instead of the store mapping its own (e.g. memory
// a transport allocated so peers can reach it one-sidedly: docs/transport.md,
// "Shared-memory regions"). Called once by Create with the region sizes the
// store needs; must return exactly that many regions of at least those sizes,
// page-aligned, and zero-filled (fresh mappings are: the store hands a never-used
// chunk out without clearing it, so recycled memory could let a Commit verify and
// publish bytes its writer never wrote). The memory must stay valid until the
// store is destroyed, and the store never frees it.
using RegionProvider =
    std::function<absl::StatusOr<std::vector<Region>>(std::span<const uint64_t> sizes)>;

class BlockStore {
 public:
  // Allocates the regions (or takes them from `provider`). INVALID_ARGUMENT for
  // a bad config or provider regions that do not fit, RESOURCE_EXHAUSTED when
  // memory cannot be had (the provider's error is returned as is). `clock` must
  // outlive the store (nullptr = real clock).
  static absl::StatusOr<std::unique_ptr<BlockStore>> Create(const BlockStoreConfig& config,
                                                            Clock* clock = nullptr,
                                                            RegionProvider provider = nullptr);
  virtual ~BlockStore() = default;

  // Regions allocated at start; stable for the store's lifetime.
  virtual std::span<const Region> regions() const = 0;

  // present[i] = 1 if keys[i] is visible in namespace `ns`, else 0. A key stored
  // under another namespace is absent. Counts as an access for the policy.
  // Returns the leading run of present keys.
  virtual size_t Lookup(absl::string_view ns, std::span<const BlockKey> keys,
                        std::span<uint8_t> present) = 0;

  // Reserves `size` bytes for `key`. ALREADY_EXISTS if visible; ABORTED if another
  // reservation for the key is live (a concurrent publisher is storing it); INVALID_ARGUMENT for size 0 or
  // > max_block_bytes; RESOURCE_EXHAUSTED when nothing evictable frees room.
  virtual absl::StatusOr<Reservation> Reserve(absl::string_view ns, const BlockKey& key,
                                              uint64_t size, uint64_t checksum,
                                              const PutOptions& options = {}) = 0;
  // Verifies XXH3-64 of the reserved bytes against the checksum given to Reserve,
  // then makes the block visible. DATA_LOSS on mismatch (the reservation is
  // dropped, nothing visible); NOT_FOUND if the id is unknown or expired.
  virtual absl::Status Commit(uint64_t reservation_id) = 0;
  // Drops a reservation. NOT_FOUND if unknown or expired.
  virtual absl::Status Abort(uint64_t reservation_id) = 0;
  // Reserve + copy + Commit.
  virtual absl::Status Put(absl::string_view ns, const BlockKey& key,
                           std::span<const uint8_t> data, uint64_t checksum,
                           const PutOptions& options = {}) = 0;

  // Pins a visible block for reading until Release or `lease` elapses
  // (0 = default_lease; capped at max_lease). NOT_FOUND on a miss.
  virtual absl::StatusOr<Lease> Acquire(absl::string_view ns, const BlockKey& key,
                                        absl::Duration lease = absl::ZeroDuration(),
                                        const AcquireOptions& options = {}) = 0;
  // NOT_FOUND if unknown or already expired.
  virtual absl::Status Release(uint64_t lease_id) = 0;

  // Makes the block invisible now; its bytes are freed when its last lease ends.
  // NOT_FOUND if absent.
  virtual absl::Status Delete(absl::string_view ns, const BlockKey& key) = 0;
  // Sets or clears the pin. NOT_FOUND if absent; RESOURCE_EXHAUSTED over the pinned quota.
  virtual absl::Status Pin(absl::string_view ns, const BlockKey& key, bool pin) = 0;

  // Transfers by a transport that moves bytes without the store's CPU copying
  // them (UCX active messages; docs/transport.md "Grants"). Before touching
  // memory the transport calls BeginTransfer with the grant the client named:
  // a reservation id (kWrite: the range is written) or a lease id (kRead).
  // It succeeds only if the grant is live (not expired, released, committed or
  // aborted) and [range.offset, +range.size) in range.region lies inside the
  // grant's block; then that memory is held until EndTransfer: a held
  // reservation does not expire and refuses Commit/Abort (FAILED_PRECONDITION),
  // a held leased block is not reused even if its lease ends. Every successful
  // BeginTransfer must be followed by exactly one EndTransfer with its hold.
  // NOT_FOUND: unknown or expired grant; PERMISSION_DENIED: range outside it.
  virtual absl::StatusOr<uint64_t> BeginTransfer(TransferAccess access, uint64_t grant_id,
                                                 const BlockLocation& range) = 0;
  virtual void EndTransfer(TransferAccess access, uint64_t hold) = 0;

  // Which namespace a live grant belongs to, as NamespaceTag(ns): a reservation
  // id (kWrite) or a lease id (kRead). NOT_FOUND for an unknown, ended or expired
  // grant. For authorization (a client may end only its own namespaces' grants).
  virtual absl::StatusOr<uint64_t> GrantNamespaceTag(TransferAccess access, uint64_t grant_id) = 0;
  // The 64-bit tag the store keys namespaces by (XXH3-64 of the name).
  static uint64_t NamespaceTag(absl::string_view ns);

  // Reclaims expired reservations and leases; returns how many. The daemon calls
  // it periodically; tests call it after advancing a ManualClock.
  virtual size_t ExpireNow() = 0;

  virtual BlockStoreStats Stats() const = 0;
  // A namespace's quota (namespace_quotas, else namespace_quota_bytes; 0 = none) and
  // the block bytes it holds now, reserved and stored. The bytes are tracked only
  // while some quota is configured; without one they read 0.
  struct NamespaceUsage {
    uint64_t quota_bytes = 0;
    uint64_t held_bytes = 0;
  };
  virtual NamespaceUsage NamespaceUsageOf(absl::string_view ns) const = 0;
  virtual std::string PolicyName() const = 0;
  // The policy choosing victims now and how often that changed
  // (EvictionPolicy::ActiveName/Switches; only duel ever switches).
  struct PolicyState {
    std::string active;
    uint64_t switches = 0;
  };
  virtual PolicyState PolicyStateNow() const = 0;
};

}  // namespace kvhub::storage
