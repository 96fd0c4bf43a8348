#include "storage/host_block_store.h"

#include <algorithm>
#include <bit>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/copy.h"
#include "common/hash.h"

namespace kvhub::storage {
namespace {

absl::Status CheckSize(uint64_t size, uint64_t max) {
  if (size == 0) return absl::InvalidArgumentError("block size must be > 0");
  if (size > max) {
    return absl::InvalidArgumentError(
        absl::StrCat("block size ", size, " exceeds max_block_bytes ", max));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::unique_ptr<HostBlockStore>> HostBlockStore::Make(
    const BlockStoreConfig& config, Clock* clock, RegionProvider provider) {
  std::unique_ptr<HostBlockStore> st(new HostBlockStore(config, clock));
  const uint64_t slab = config.EffectiveSlabBytes();
  absl::StatusOr<SizeClasses> classes = SizeClasses::Build(
      config.min_block_bytes, config.max_block_bytes, slab, config.size_class_steps);
  if (!classes.ok()) return classes.status();
  st->classes_ = *std::move(classes);

  // Regions: whole region_bytes, then a tail rounded up to whole slabs.
  uint64_t total = (config.capacity_bytes + slab - 1) / slab * slab;
  st->slab_bytes_ = slab;
  st->slabs_ = total / slab;
  std::vector<uint64_t> sizes;
  for (uint64_t left = total; left > 0;) {
    uint64_t r = std::min(left, config.region_bytes);
    sizes.push_back(r);
    left -= r;
  }
  if (provider != nullptr) {
    absl::StatusOr<std::vector<Region>> given = provider(sizes);
    if (!given.ok()) return given.status();
    if (given->size() != sizes.size()) {
      return absl::InvalidArgumentError(absl::StrCat("region provider gave ", given->size(),
                                                     " regions, the store needs ", sizes.size()));
    }
    for (size_t i = 0; i < sizes.size(); ++i) {
      const Region& r = (*given)[i];
      if (r.base == nullptr || r.size < sizes[i] || reinterpret_cast<uintptr_t>(r.base) % 4096 != 0) {
        return absl::InvalidArgumentError(absl::StrCat("region provider's region ", i, " (", r.size,
                                                       " bytes) does not fit: need ", sizes[i],
                                                       " bytes, page-aligned"));
      }
    }
    for (size_t i = 0; i < sizes.size(); ++i) (*given)[i].size = sizes[i];  // use what was asked for
    st->provided_regions_ = *std::move(given);
  } else {
    absl::StatusOr<std::unique_ptr<HostRegions>> regions =
        HostRegions::Map(sizes, {.try_hugepages = config.try_hugepages, .populate = config.populate});
    if (!regions.ok()) return regions.status();
    st->regions_ = *std::move(regions);
  }
  std::vector<uint8_t*> slab_base;
  for (const Region& r : st->regions()) {
    for (uint64_t off = 0; off < r.size; off += slab) slab_base.push_back(r.base + off);
  }

  st->max_slots_ = static_cast<uint32_t>(config.EffectiveMaxBlocks());
  st->quotas_on_ = config.namespace_quota_bytes != 0 || !config.namespace_quotas.empty();
  for (const BlockStoreConfig::NamespaceQuota& q : config.namespace_quotas) {
    st->quota_by_tag_[NamespaceTag(q.ns)] = q.bytes;
  }
  st->pin_quota_ = static_cast<uint64_t>(config.max_pinned_fraction *
                                         static_cast<double>(config.capacity_bytes));
  st->high_bytes_ = static_cast<uint64_t>(config.high_watermark *
                                          static_cast<double>(config.capacity_bytes));
  st->low_bytes_ = static_cast<uint64_t>(config.low_watermark *
                                         static_cast<double>(config.capacity_bytes));

  absl::StatusOr<std::unique_ptr<EvictionPolicy>> policy = MakeEvictionPolicy(config.eviction);
  if (!policy.ok()) return policy.status();

  absl::MutexLock lock(&st->mu_);
  st->policy_ = *std::move(policy);
  st->policy_->Init(st->max_slots_);
  st->policy_name_ = st->policy_->Name();
  st->alloc_.Init(&st->classes_, std::move(slab_base));
  st->index_.Init(st->max_slots_);
  st->slots_.assign(st->max_slots_, Slot{});
  st->slot_links_.Init(st->max_slots_);
  for (uint32_t i = 0; i < st->max_slots_; ++i) st->free_slots_.PushTail(i);
  st->slab_links_.Init(st->max_slots_);
  st->slab_blocks_.assign(st->alloc_.slabs(), SlotList(&st->slab_links_));
  st->slab_verdict_.assign(st->alloc_.slabs(), 0);
  st->leases_.assign(config.max_leases, LeaseRec{});
  for (LeaseRec& rec : st->leases_) rec.gen = st->generations_.Next(0);  // a first lease's id is not guessable either
  st->lease_links_.Init(config.max_leases);
  for (uint32_t i = 0; i < config.max_leases; ++i) st->free_leases_.PushTail(i);
  st->stats_.capacity_bytes = config.capacity_bytes;
  return st;
}

BlockLocation HostBlockStore::LocationOf(uint64_t offset, uint64_t size) const {
  return BlockLocation{static_cast<uint32_t>(offset / config_.region_bytes),
                       offset % config_.region_bytes, size};
}

// ---------------------------------------------------------------------------
// Lookup

size_t HostBlockStore::Lookup(absl::string_view ns, std::span<const BlockKey> keys,
                              std::span<uint8_t> present) {
  size_t n = std::min(keys.size(), present.size());
  if (!ValidateNamespace(ns).ok()) {
    std::fill(present.begin(), present.begin() + n, 0);
    return 0;
  }
  const uint64_t tag = NamespaceTag(ns);
  size_t leading = 0;
  bool run = true;
  absl::MutexLock lock(&mu_);
  constexpr size_t kAhead = 8;
  for (size_t i = 0; i < std::min(n, kAhead); ++i) index_.Prefetch(keys[i], tag);
  for (size_t i = 0; i < n; ++i) {
    if (i + kAhead < n) index_.Prefetch(keys[i + kAhead], tag);
    uint32_t s = index_.Find(keys[i], tag);
    bool hit = s != kNoSlot && slots_[s].state == State::kCommitted;
    present[i] = hit ? 1 : 0;
    if (hit) policy_->OnAccess(s);
    run = run && hit;
    if (run) ++leading;
  }
  return leading;
}

// ---------------------------------------------------------------------------
// Space

uint32_t HostBlockStore::PickVictim() {
  // The callback runs inside this call, under mu_; it reads the slots through a
  // plain pointer because a lambda body is analysed without the caller's locks.
  const Slot* slots = slots_.data();
  return policy_->PickVictim([slots](uint32_t s) {
    const Slot& slot = slots[s];
    return slot.state == State::kCommitted && !slot.pinned && slot.leases == 0;
  });
}

uint32_t HostBlockStore::PickVictimFor(uint32_t cls) {
  std::fill(slab_verdict_.begin(), slab_verdict_.end(), 0);
  // As in PickVictim: the callback reads through plain pointers.
  const Slot* slots = slots_.data();
  const SlabAllocator* alloc = &alloc_;
  const SlotList* slab_blocks = slab_blocks_.data();
  const SlotLinks* links = &slab_links_;
  uint8_t* verdict = slab_verdict_.data();
  auto evictable = [slots](uint32_t s) {
    const Slot& slot = slots[s];
    return slot.state == State::kCommitted && !slot.pinned && slot.leases == 0;
  };
  // A block of another class is wanted only if its whole slab can be emptied; the
  // others could leave but would not help, and keep their place in the policy's
  // order (they are not pinned: treated as such, they would be made younger).
  return policy_->PickVictim(evictable, [&](uint32_t s) {
    if (alloc->ClassOf(slots[s].offset) == cls) return true;
    const uint32_t slab = alloc->SlabOf(slots[s].offset);
    if (verdict[slab] == 0) {
      verdict[slab] = 1;
      for (uint32_t b = slab_blocks[slab].head(); b != kNoSlot; b = links->next(b)) {
        if (!evictable(b)) {
          verdict[slab] = 2;
          break;
        }
      }
    }
    return verdict[slab] == 1;
  });
}

bool HostBlockStore::EvictOne() {
  uint32_t v = PickVictim();
  if (v == kNoSlot) return false;
  RemoveVisible(v, Removal::kEvicted);
  return true;
}

void HostBlockStore::EvictSlab(uint32_t slab) {
  SlotList& blocks = slab_blocks_[slab];
  for (uint32_t s = blocks.head(); s != kNoSlot;) {
    uint32_t next = slab_links_.next(s);
    const Slot& slot = slots_[s];
    if (slot.state == State::kCommitted && !slot.pinned && slot.leases == 0) {
      RemoveVisible(s, Removal::kWithSlab);
    }
    s = next;
  }
}

bool HostBlockStore::MakeRoom(uint64_t chunk_bytes) {
  if (alloc_.allocated_bytes() + chunk_bytes > high_bytes_) {
    while (alloc_.allocated_bytes() + chunk_bytes > low_bytes_ && EvictOne()) {
    }
  }
  if (alloc_.allocated_bytes() + chunk_bytes > config_.capacity_bytes) {
    ExpireOnDemandLocked();  // stale leases/reservations may hold the room
    while (alloc_.allocated_bytes() + chunk_bytes > config_.capacity_bytes && EvictOne()) {
    }
  }
  return alloc_.allocated_bytes() + chunk_bytes <= config_.capacity_bytes;
}

bool HostBlockStore::ChunkObtainable(uint32_t cls) {
  return alloc_.CanAllocate(cls) || PickVictimFor(cls) != kNoSlot;
}

absl::Status HostBlockStore::NoChunkError(uint64_t size) {
  ++stats_.rejected_full;
  return absl::ResourceExhaustedError(absl::StrCat(
      "host tier has no free chunk for a ", size, "-byte block and no slab it could free: each of its ", slabs_,
      " slab(s) of ", slab_bytes_, " bytes holds a pinned, leased or half-written block of another size "
      "(a small capacity_bytes with a large max_block_bytes leaves few slabs; docs/storage.md)"));
}

uint64_t HostBlockStore::AllocateChunk(uint32_t cls, uint64_t* prior) {
  for (;;) {
    uint64_t off = alloc_.Allocate(cls, prior);
    if (off != SlabAllocator::kNoChunk) return off;
    // No free chunk of this class and no free slab: evict in policy order. A
    // victim of the same class frees a chunk; one of another class gets its
    // whole slab emptied so the slab can change class. Blocks of other classes in
    // slabs that cannot be emptied (a pinned, leased or half-written block in
    // them) are left alone: evicting them frees nothing this call can use (before,
    // a Reserve that found no slab to free evicted every such block, then failed).
    uint32_t v = PickVictimFor(cls);
    if (v == kNoSlot) return SlabAllocator::kNoChunk;
    uint64_t voff = slots_[v].offset;
    bool same_class = alloc_.ClassOf(voff) == cls;
    uint32_t vslab = alloc_.SlabOf(voff);
    RemoveVisible(v, Removal::kEvicted);
    if (!same_class && alloc_.live_chunks(vslab) > 0) EvictSlab(vslab);
  }
}

void HostBlockStore::FreeSlot(uint32_t s) {
  Slot& slot = slots_[s];
  slab_blocks_[alloc_.SlabOf(slot.offset)].Remove(s);
  // The chunk holds this namespace's bytes, or zeros where they were another's
  // (Reserve and Put cleared it then).
  alloc_.Free(slot.offset, index_.ns_tag(s));
  slot.state = State::kFree;
  slot.pinned = slot.pin_on_commit = slot.has_parent = false;
  slot.leases = 0;
  slot.transfers = 0;
  free_slots_.PushHead(s);
}

void HostBlockStore::ChargeNamespace(uint64_t tag, uint64_t bytes) {
  if (quotas_on_) ns_bytes_[tag] += bytes;
}

void HostBlockStore::CreditNamespace(uint64_t tag, uint64_t bytes) {
  if (!quotas_on_) return;
  auto it = ns_bytes_.find(tag);
  if (it == ns_bytes_.end()) return;
  it->second -= std::min(it->second, bytes);
  if (it->second == 0) ns_bytes_.erase(it);
}

void HostBlockStore::RemoveVisible(uint32_t s, Removal why) {
  Slot& slot = slots_[s];
  index_.Erase(index_.key(s), index_.ns_tag(s));
  policy_->OnRemove(s, /*evicted=*/why == Removal::kEvicted);
  const bool evicted = why != Removal::kDeleted;
  stats_.used_bytes -= slot.size;
  --stats_.blocks;
  if (slot.pinned) {
    slot.pinned = false;
    stats_.pinned_bytes -= slot.size;
    pinned_footprint_ -= Footprint(slot.size);
    --stats_.pinned_blocks;
  }
  if (evicted) {
    ++stats_.evictions;
    stats_.evicted_bytes += slot.size;
  }
  if (slot.leases > 0) {
    // The bytes stay until the last lease ends, and count against the namespace's
    // quota until then (crediting them here let a namespace hold quota + its whole
    // lease share of deleted blocks: Put, Acquire, Delete, repeat).
    slot.state = State::kZombie;
  } else {
    FreeVisibleOrZombie(s);
  }
}

void HostBlockStore::FreeVisibleOrZombie(uint32_t s) {
  CreditNamespace(index_.ns_tag(s), Footprint(slots_[s].size));  // the slot keeps its tag until reused
  FreeSlot(s);
}

void HostBlockStore::DropReservation(uint32_t s) {
  Slot& slot = slots_[s];
  if (slot.state == State::kReserved) reservations_.Remove(s);
  CreditNamespace(index_.ns_tag(s), Footprint(slot.size));
  index_.Erase(index_.key(s), index_.ns_tag(s));
  stats_.reserved_bytes -= slot.size;
  if (slot.pin_on_commit) pin_reserved_footprint_ -= Footprint(slot.size);
  FreeSlot(s);
}

uint32_t HostBlockStore::ReservationSlot(uint64_t id) const {
  uint32_t s = static_cast<uint32_t>(id);
  if (s >= max_slots_) return kNoSlot;
  const Slot& slot = slots_[s];
  if (slot.gen != static_cast<uint32_t>(id >> 32)) return kNoSlot;
  if (slot.state != State::kReserved && slot.state != State::kCommitting) return kNoSlot;
  return s;
}

// ---------------------------------------------------------------------------
// Two-phase put

absl::StatusOr<Reservation> HostBlockStore::Reserve(absl::string_view ns, const BlockKey& key,
                                                    uint64_t size, uint64_t checksum,
                                                    const PutOptions& options) {
  // A chunk keeps the bytes of its last occupant: the writer may leave some
  // unwritten (and RMA writes are invisible here), and Commit would then verify,
  // and make readable, bytes that were not the writer's. A chunk that may hold
  // another namespace's is zeroed, outside the lock, under a transfer hold that
  // keeps expiry and Abort away from it meanwhile.
  uint64_t clear = 0;
  absl::StatusOr<Reservation> r =
      ReserveImpl(ns, key, size, checksum, options, ReserveHold::kForClearing, &clear);
  if (!r.ok() || clear == 0) return r;  // nothing to clear: no hold was taken
  std::memset(r->data, 0, clear);
  EndTransfer(TransferAccess::kWrite, static_cast<uint32_t>(r->id));
  return r;
}

absl::StatusOr<Reservation> HostBlockStore::ReserveImpl(absl::string_view ns, const BlockKey& key,
                                                        uint64_t size, uint64_t checksum,
                                                        const PutOptions& options, ReserveHold hold,
                                                        uint64_t* clear) {
  if (absl::Status s = ValidateNamespace(ns); !s.ok()) return s;
  if (absl::Status s = CheckSize(size, config_.max_block_bytes); !s.ok()) return s;
  const uint64_t tag = NamespaceTag(ns);
  const uint32_t cls = classes_.ClassFor(size);
  const uint64_t chunk = classes_.size(cls);

  absl::MutexLock lock(&mu_);
  const int64_t now = NowNs();
  uint32_t existing = index_.Find(key, tag);
  if (existing != kNoSlot) {
    Slot& e = slots_[existing];
    if (e.state == State::kCommitted) return absl::AlreadyExistsError("block already stored");
    if (e.state == State::kReserved && e.expires_ns <= now && e.transfers == 0) {
      DropReservation(existing);  // expired, not yet reclaimed
      ++stats_.reservations_expired;
    } else {
      return absl::AbortedError("another reservation for this block is in progress");
    }
  }
  if (const uint64_t quota = quotas_on_ ? QuotaFor(tag) : 0; quota != 0) {
    const auto held = ns_bytes_.find(tag);
    const uint64_t now_held = held == ns_bytes_.end() ? 0 : held->second;
    if (now_held + chunk > quota) {
      ++stats_.rejected_quota;
      return absl::ResourceExhaustedError(absl::StrCat(
          "namespace '", ns, "' holds ", now_held, " bytes; this ", size, "-byte block (a ", chunk,
          "-byte chunk) would pass its quota of ",
          quota, " bytes (", quota_by_tag_.contains(tag) ? "namespace_quotas" : "namespace_quota_bytes",
          "; its blocks free it as they are evicted or deleted, or, if leased then, when their last lease ends)"));
    }
  }
  if (options.pin && pinned_footprint_ + pin_reserved_footprint_ + chunk > pin_quota_) {
    ++stats_.rejected_pin_quota;
    return absl::ResourceExhaustedError(
        absl::StrCat("pinned quota of ", pin_quota_, " bytes would be exceeded"));
  }
  if (!policy_->Admit(GhostHint(key, tag), size)) {
    return absl::ResourceExhaustedError("block not admitted by the eviction policy");
  }
  // A chunk of this class must be obtainable before anything is evicted for it: a
  // free one, a free slab, or a victim whose eviction frees one (PickVictimFor;
  // the watermark evictions below only remove blocks, so what it finds stays
  // obtainable). Without this check the watermark pass evicted blocks and the
  // Reserve then failed anyway ("a failed call changes nothing visible"). Asked
  // only when something would be evicted before AllocateChunk (past the high
  // watermark, or no free slot): AllocateChunk's own evictions each free what it
  // needs, and the search it repeats ages an S3-FIFO tier's blocks.
  const bool evicts_first = alloc_.allocated_bytes() + chunk > high_bytes_ || free_slots_.empty();
  if (evicts_first && !ChunkObtainable(cls)) {
    ExpireOnDemandLocked();  // expired reservations and leases may hold the chunks
    if (!ChunkObtainable(cls)) return NoChunkError(size);
  }
  if (!MakeRoom(chunk)) {
    ++stats_.rejected_full;
    return absl::ResourceExhaustedError(
        "host tier full: every block is pinned, leased or being written");
  }
  if (free_slots_.empty()) ExpireOnDemandLocked();  // expired reservations and leases may hold slots
  if (free_slots_.empty() && !EvictOne()) {
    ++stats_.rejected_full;
    return absl::ResourceExhaustedError("host tier slot table full and nothing is evictable");
  }
  uint32_t s = free_slots_.PopTail();
  uint64_t prior = 0;
  uint64_t off = AllocateChunk(cls, &prior);
  if (off == SlabAllocator::kNoChunk && ExpireOnDemandLocked() > 0) {
    off = AllocateChunk(cls, &prior);  // expired reservations and leases held the chunks
  }
  if (off == SlabAllocator::kNoChunk) {
    free_slots_.PushTail(s);
    return NoChunkError(size);
  }
  // Bytes of another namespace (or of several) may lie in the chunk.
  *clear = prior != 0 && prior != tag ? chunk : 0;
  Slot& slot = slots_[s];
  slot.gen = generations_.Next(slot.gen);  // never 0: reservation ids are never 0
  slot.offset = off;
  slot.size = size;
  slot.checksum = checksum;
  slot.expires_ns = now + absl::ToInt64Nanoseconds(config_.reservation_timeout);
  slot.leases = 0;
  slot.transfers = hold == ReserveHold::kForCopy || *clear != 0 ? 1 : 0;
  slot.state = State::kReserved;
  slot.pinned = false;
  slot.pin_on_commit = options.pin;
  slot.has_parent = options.parent != nullptr;
  if (slot.has_parent) slot.parent = *options.parent;
  slab_blocks_[alloc_.SlabOf(off)].PushHead(s);
  index_.Insert(key, tag, s);
  reservations_.PushTail(s);
  stats_.reserved_bytes += size;
  if (options.pin) pin_reserved_footprint_ += chunk;
  ChargeNamespace(tag, chunk);

  Reservation r;
  r.id = (uint64_t{slot.gen} << 32) | s;
  r.location = LocationOf(off, size);
  r.data = alloc_.Address(off);
  r.expires = absl::FromUnixNanos(slot.expires_ns);
  return r;
}

absl::Status HostBlockStore::Commit(uint64_t reservation_id) {
  return CommitImpl(reservation_id, /*held=*/false);
}

absl::Status HostBlockStore::CommitImpl(uint64_t reservation_id, bool held) {
  const uint8_t* data;
  uint64_t size, want;
  uint32_t s;
  {
    absl::MutexLock lock(&mu_);
    s = ReservationSlot(reservation_id);
    if (s == kNoSlot) return absl::NotFoundError("unknown or expired reservation");
    Slot& slot = slots_[s];
    if (held && slot.transfers > 0) --slot.transfers;  // the caller's own hold (Put) ends here
    if (slot.state == State::kCommitting) {
      return absl::FailedPreconditionError("reservation is already being committed");
    }
    if (slot.transfers > 0) {
      return absl::FailedPreconditionError("a transfer into this reservation is still in progress");
    }
    if (slot.expires_ns <= NowNs()) {
      DropReservation(s);
      ++stats_.reservations_expired;
      return absl::NotFoundError("reservation expired");
    }
    slot.state = State::kCommitting;  // neither expiry nor Abort touches it now
    reservations_.Remove(s);
    data = alloc_.Address(slot.offset);
    size = slot.size;
    want = slot.checksum;
  }
  const uint64_t got = Xxh3_64(data, size);  // outside the lock
  absl::MutexLock lock(&mu_);
  Slot& slot = slots_[s];
  if (got != want) {
    DropReservation(s);
    ++stats_.checksum_failures;
    // The hash of what the chunk holds stays here: it may cover bytes the writer
    // did not write.
    return absl::DataLossError(absl::StrCat("block checksum mismatch: the bytes written do not hash to the ",
                                            "checksum given at reservation (", want, "); reservation dropped"));
  }
  const uint64_t tag = index_.ns_tag(s);
  uint32_t parent = kNoSlot;
  if (slot.has_parent) {
    parent = index_.Find(slot.parent, tag);
    if (parent != kNoSlot && slots_[parent].state != State::kCommitted) parent = kNoSlot;
  }
  slot.state = State::kCommitted;
  stats_.reserved_bytes -= size;
  stats_.used_bytes += size;
  ++stats_.blocks;
  if (slot.pin_on_commit) {
    slot.pin_on_commit = false;
    pin_reserved_footprint_ -= Footprint(size);
    slot.pinned = true;
    stats_.pinned_bytes += size;
    pinned_footprint_ += Footprint(size);
    ++stats_.pinned_blocks;
  }
  policy_->OnInsert(s, parent, GhostHint(index_.key(s), tag), size);
  return absl::OkStatus();
}

absl::Status HostBlockStore::Abort(uint64_t reservation_id) {
  absl::MutexLock lock(&mu_);
  uint32_t s = ReservationSlot(reservation_id);
  if (s == kNoSlot) return absl::NotFoundError("unknown or expired reservation");
  if (slots_[s].state == State::kCommitting) {
    return absl::FailedPreconditionError("reservation is being committed");
  }
  if (slots_[s].transfers > 0) {
    return absl::FailedPreconditionError(
        "a transfer into this reservation is still in progress; it expires after the transfer ends");
  }
  if (slots_[s].expires_ns <= NowNs()) {
    DropReservation(s);
    ++stats_.reservations_expired;
    return absl::NotFoundError("reservation expired");
  }
  DropReservation(s);
  return absl::OkStatus();
}

absl::Status HostBlockStore::Put(absl::string_view ns, const BlockKey& key,
                                 std::span<const uint8_t> data, uint64_t checksum,
                                 const PutOptions& options) {
  // Reserved with a transfer hold that Commit ends under its own lock: the store
  // reclaims expired reservations on other threads' paths (MakeRoom, Reserve), and a
  // slow copy of a large block must not write into a chunk freed under it.
  uint64_t clear = 0;
  absl::StatusOr<Reservation> r = ReserveImpl(ns, key, data.size(), checksum, options, ReserveHold::kForCopy, &clear);
  if (!r.ok()) return r.status();
  CopyBytes(r->data, data.data(), data.size());
  // The block's bytes are all ours; the rest of its chunk may still be another
  // namespace's, and belongs to this one when the chunk is freed.
  if (clear > data.size()) std::memset(r->data + data.size(), 0, clear - data.size());
  return CommitImpl(r->id, /*held=*/true);
}

// ---------------------------------------------------------------------------
// Leases

absl::StatusOr<Lease> HostBlockStore::Acquire(absl::string_view ns, const BlockKey& key,
                                              absl::Duration lease, const AcquireOptions& options) {
  if (absl::Status s = ValidateNamespace(ns); !s.ok()) return s;
  if (lease < absl::ZeroDuration()) return absl::InvalidArgumentError("lease must be >= 0");
  if (lease == absl::ZeroDuration()) lease = config_.default_lease;
  lease = std::min(lease, config_.max_lease);
  const uint64_t tag = NamespaceTag(ns);
  absl::MutexLock lock(&mu_);
  uint32_t s = index_.Find(key, tag);
  if (s == kNoSlot || slots_[s].state != State::kCommitted) {
    return absl::NotFoundError("block not found");
  }
  const uint64_t quota = quotas_on_ && options.count_as_read ? QuotaFor(tag) : 0;
  if (quota != 0) {
    uint32_t held = ns_leases_[tag];
    if (held >= LeaseShare(quota)) {
      ExpireOnDemandLocked();  // leases past their time count until swept
      held = ns_leases_[tag];
    }
    if (held >= LeaseShare(quota)) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "namespace '", ns, "' holds ", held, " live leases, its share of max_leases (", config_.max_leases,
          ") by its quota; release leases or let them expire"));
    }
  }
  uint32_t idx = free_leases_.PopTail();
  if (idx == kNoSlot) {
    ExpireOnDemandLocked();
    idx = free_leases_.PopTail();
    if (idx == kNoSlot) {
      return absl::ResourceExhaustedError(
          absl::StrCat("too many live leases (max_leases = ", config_.max_leases, ")"));
    }
  }
  Slot& slot = slots_[s];
  LeaseRec& rec = leases_[idx];
  rec.slot = s;
  rec.ns_tag = tag;
  rec.counted = quota != 0;
  if (rec.counted) ++ns_leases_[tag];
  rec.expires_ns = NowNs() + absl::ToInt64Nanoseconds(lease);
  live_leases_.PushTail(idx);
  if (slot.leases++ == 0) ++stats_.leased_blocks;
  if (options.hold) ++slot.leases;  // one more lease without a record, as BeginTransfer's
  if (options.count_as_read) policy_->OnAccess(s);

  Lease l;
  l.id = (uint64_t{rec.gen} << 32) | idx;
  l.location = LocationOf(slot.offset, slot.size);
  l.data = alloc_.Address(slot.offset);
  l.size = slot.size;
  l.checksum = slot.checksum;
  l.expires = absl::FromUnixNanos(rec.expires_ns);
  if (options.hold) l.hold = s;  // EndTransfer(kRead, s), as BeginTransfer's holds
  return l;
}

void HostBlockStore::DropLease(uint32_t idx) {
  LeaseRec& rec = leases_[idx];
  uint32_t s = rec.slot;
  if (rec.counted) {
    if (auto it = ns_leases_.find(rec.ns_tag); it != ns_leases_.end() && it->second > 0) --it->second;
    rec.counted = false;
  }
  live_leases_.Remove(idx);
  rec.slot = kNoSlot;
  rec.gen = generations_.Next(rec.gen);
  free_leases_.PushHead(idx);
  Slot& slot = slots_[s];
  if (slot.leases > 0 && --slot.leases == 0) {  // as EndTransfer: never wraps
    --stats_.leased_blocks;
    if (slot.state == State::kZombie) FreeVisibleOrZombie(s);
  }
}

absl::StatusOr<uint64_t> HostBlockStore::GrantNamespaceTag(TransferAccess access, uint64_t grant_id) {
  absl::MutexLock lock(&mu_);
  const int64_t now = NowNs();
  uint32_t s = kNoSlot;
  if (access == TransferAccess::kWrite) {
    s = ReservationSlot(grant_id);
    if (s != kNoSlot && (slots_[s].state != State::kReserved || slots_[s].expires_ns <= now)) s = kNoSlot;
  } else {
    const uint32_t idx = static_cast<uint32_t>(grant_id);
    if (idx < leases_.size() && leases_[idx].slot != kNoSlot &&
        leases_[idx].gen == static_cast<uint32_t>(grant_id >> 32) && leases_[idx].expires_ns > now) {
      s = leases_[idx].slot;
    }
  }
  if (s == kNoSlot) return absl::NotFoundError("unknown or expired grant");
  return index_.ns_tag(s);
}

absl::Status HostBlockStore::Release(uint64_t lease_id) {
  uint32_t idx = static_cast<uint32_t>(lease_id);
  absl::MutexLock lock(&mu_);
  if (idx >= leases_.size() || leases_[idx].slot == kNoSlot ||
      leases_[idx].gen != static_cast<uint32_t>(lease_id >> 32)) {
    return absl::NotFoundError("unknown or expired lease");
  }
  bool expired = leases_[idx].expires_ns <= NowNs();
  DropLease(idx);
  if (expired) {
    ++stats_.leases_expired;
    return absl::NotFoundError("lease expired");
  }
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------
// Delete, pin, expiry, stats

absl::Status HostBlockStore::Delete(absl::string_view ns, const BlockKey& key) {
  if (absl::Status s = ValidateNamespace(ns); !s.ok()) return s;
  const uint64_t tag = NamespaceTag(ns);
  absl::MutexLock lock(&mu_);
  uint32_t s = index_.Find(key, tag);
  if (s == kNoSlot || slots_[s].state != State::kCommitted) {
    return absl::NotFoundError("block not found");
  }
  RemoveVisible(s, Removal::kDeleted);
  return absl::OkStatus();
}

absl::Status HostBlockStore::Pin(absl::string_view ns, const BlockKey& key, bool pin) {
  if (absl::Status s = ValidateNamespace(ns); !s.ok()) return s;
  const uint64_t tag = NamespaceTag(ns);
  absl::MutexLock lock(&mu_);
  uint32_t s = index_.Find(key, tag);
  if (s == kNoSlot || slots_[s].state != State::kCommitted) {
    return absl::NotFoundError("block not found");
  }
  Slot& slot = slots_[s];
  if (slot.pinned == pin) return absl::OkStatus();
  if (pin) {
    if (pinned_footprint_ + pin_reserved_footprint_ + Footprint(slot.size) > pin_quota_) {
      ++stats_.rejected_pin_quota;
      return absl::ResourceExhaustedError(
          absl::StrCat("pinned quota of ", pin_quota_, " bytes would be exceeded"));
    }
    slot.pinned = true;
    stats_.pinned_bytes += slot.size;
    pinned_footprint_ += Footprint(slot.size);
    ++stats_.pinned_blocks;
  } else {
    slot.pinned = false;
    stats_.pinned_bytes -= slot.size;
    pinned_footprint_ -= Footprint(slot.size);
    --stats_.pinned_blocks;
  }
  return absl::OkStatus();
}

size_t HostBlockStore::ExpireOnDemandLocked() {
  // Every refused call sweeping (each O(live leases + reservations) under mu_) let
  // one caller at its lease share hold the lock for seconds with a 4096-key Get.
  // Nothing new expires within the same millisecond, near enough.
  constexpr int64_t kGapNs = 1000000;
  const int64_t now = NowNs();
  if (demand_swept_ns_.has_value() && now - *demand_swept_ns_ < kGapNs) return 0;
  demand_swept_ns_ = now;
  ++stats_.demand_sweeps;
  return ExpireLocked(now);
}

size_t HostBlockStore::ExpireLocked(int64_t now) {
  size_t n = 0;
  for (uint32_t s = reservations_.head(); s != kNoSlot;) {
    uint32_t next = slot_links_.next(s);
    if (slots_[s].expires_ns <= now && slots_[s].transfers == 0) {
      DropReservation(s);
      ++stats_.reservations_expired;
      ++n;
    }
    s = next;
  }
  for (uint32_t i = live_leases_.head(); i != kNoSlot;) {
    uint32_t next = lease_links_.next(i);
    if (leases_[i].expires_ns <= now) {
      DropLease(i);
      ++stats_.leases_expired;
      ++n;
    }
    i = next;
  }
  return n;
}

// ---------------------------------------------------------------------------
// Transfer holds (transports that move bytes without the store's CPU)

bool HostBlockStore::Contains(uint64_t offset, uint64_t size, const BlockLocation& range) const {
  const BlockLocation b = LocationOf(offset, size);
  return range.size > 0 && range.region == b.region && range.offset >= b.offset &&
         range.offset - b.offset <= b.size && range.size <= b.size - (range.offset - b.offset);
}

absl::StatusOr<uint64_t> HostBlockStore::BeginTransfer(TransferAccess access, uint64_t grant_id,
                                                       const BlockLocation& range) {
  absl::MutexLock lock(&mu_);
  const int64_t now = NowNs();
  if (access == TransferAccess::kWrite) {
    const uint32_t s = ReservationSlot(grant_id);
    if (s == kNoSlot || slots_[s].state != State::kReserved || slots_[s].expires_ns <= now) {
      return absl::NotFoundError(absl::StrCat("reservation ", grant_id,
                                              " is unknown, expired, committed or aborted"));
    }
    Slot& slot = slots_[s];
    if (!Contains(slot.offset, slot.size, range)) {
      return absl::PermissionDeniedError(absl::StrCat("range is outside reservation ", grant_id));
    }
    ++slot.transfers;
    return grant_id;
  }
  const uint32_t idx = static_cast<uint32_t>(grant_id);
  if (idx >= leases_.size() || leases_[idx].slot == kNoSlot ||
      leases_[idx].gen != static_cast<uint32_t>(grant_id >> 32) || leases_[idx].expires_ns <= now) {
    return absl::NotFoundError(absl::StrCat("lease ", grant_id, " is unknown, expired or released"));
  }
  const uint32_t s = leases_[idx].slot;
  Slot& slot = slots_[s];
  if (!Contains(slot.offset, slot.size, range)) {
    return absl::PermissionDeniedError(absl::StrCat("range is outside the block of lease ", grant_id));
  }
  // The hold is one more lease on the slot (without a lease record): the bytes
  // stay until EndTransfer even if the client's lease ends first.
  if (slot.leases++ == 0) ++stats_.leased_blocks;
  return s;
}

void HostBlockStore::EndTransfer(TransferAccess access, uint64_t hold) {
  absl::MutexLock lock(&mu_);
  const uint32_t s = static_cast<uint32_t>(hold);
  if (s >= max_slots_) return;
  Slot& slot = slots_[s];
  if (access == TransferAccess::kWrite) {
    if (slot.transfers > 0) --slot.transfers;
    return;  // an expired reservation is reclaimed by the next expiry sweep
  }
  if (slot.leases > 0 && --slot.leases == 0) {
    --stats_.leased_blocks;
    if (slot.state == State::kZombie) FreeVisibleOrZombie(s);
  }
}

size_t HostBlockStore::ExpireNow() {
  absl::MutexLock lock(&mu_);
  return ExpireLocked(NowNs());
}

BlockStore::PolicyState HostBlockStore::PolicyStateNow() const {
  absl::MutexLock lock(&mu_);
  return PolicyState{policy_->ActiveName(), policy_->Switches()};
}

BlockStore::NamespaceUsage HostBlockStore::NamespaceUsageOf(absl::string_view ns) const {
  const uint64_t tag = NamespaceTag(ns);
  NamespaceUsage u;
  if (!quotas_on_) return u;
  u.quota_bytes = QuotaFor(tag);
  absl::MutexLock lock(&mu_);
  auto it = ns_bytes_.find(tag);
  if (it != ns_bytes_.end()) u.held_bytes = it->second;
  return u;
}

BlockStoreStats HostBlockStore::Stats() const {
  absl::MutexLock lock(&mu_);
  BlockStoreStats s = stats_;
  s.allocated_bytes = alloc_.allocated_bytes();
  return s;
}

}  // namespace kvhub::storage
