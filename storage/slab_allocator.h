#pragma once
// Carves fixed-size slabs of host memory into chunks of one size class each
// (docs/storage.md). A slab belongs to no class (free) or to exactly one class;
// it returns to the free pool as soon as its last chunk is freed, so evicting
// the blocks of one class makes room for any other. Chunks are addressed by a
// global byte offset over the concatenated slabs.
//
// Free chunks are linked per slab, so a slab can leave its class in O(1). The
// links live in a side table (4 bytes per chunk of the smallest class), never in
// the chunks: block memory is written by peers (one-sided puts, a late write into
// a chunk freed under it), and a link read from there could hand out a chunk
// outside the slab or one that is in use. Allocation order: the class's first
// partially-used slab, from its free list, else carving fresh chunks; then a free
// slab. No heap allocation after Init.
//
// Thread safety: none; the owner serializes calls.

#include <cstdint>
#include <vector>

#include "storage/size_classes.h"
#include "storage/slot_list.h"

namespace kvhub::storage {

class SlabAllocator {
 public:
  static constexpr uint64_t kNoChunk = ~uint64_t{0};

  // `slab_base[i]` is the address of slab i (slab_bytes each, from `classes`).
  void Init(const SizeClasses* classes, std::vector<uint8_t*> slab_base);

  // Owner tags say whose bytes a chunk holds, for a caller that must not hand one
  // writer's bytes to another (kvhub: the namespace tag). 0: nobody's (zeros, as
  // the memory was mapped); kMixed: more than one owner's; any other value is the
  // caller's. A chunk carved fresh holds whatever its slab held before it changed
  // class: the owners of every chunk freed there since the slab was mapped.
  static constexpr uint64_t kMixed = ~uint64_t{0};

  // A chunk of class `cls`, or kNoChunk when the class has no free chunk and no
  // slab is free. `*prior` (optional) gets the owner of the bytes it holds.
  uint64_t Allocate(uint32_t cls, uint64_t* prior = nullptr);
  // Whether Allocate(cls) would succeed now (a free chunk of the class, or a free slab).
  bool CanAllocate(uint32_t cls) const { return partial_[cls].head() != kNoSlot || free_slabs_.count() > 0; }
  // Returns the chunk at `offset`, whose bytes are `owner`'s now (see kMixed).
  // Returns true when its slab became free.
  bool Free(uint64_t offset, uint64_t owner = kMixed);

  uint8_t* Address(uint64_t offset) const {
    return slab_base_[offset / slab_bytes_] + offset % slab_bytes_;
  }
  uint32_t SlabOf(uint64_t offset) const { return static_cast<uint32_t>(offset / slab_bytes_); }
  // Class of the chunk at `offset` (its slab's class).
  uint32_t ClassOf(uint64_t offset) const { return slabs_[SlabOf(offset)].cls; }

  uint32_t slabs() const { return static_cast<uint32_t>(slabs_.size()); }
  uint32_t free_slabs() const { return free_slabs_.count(); }
  uint64_t allocated_bytes() const { return allocated_bytes_; }
  uint32_t live_chunks(uint32_t slab) const { return slabs_[slab].live; }

 private:
  static constexpr uint32_t kNoClass = ~uint32_t{0};
  static constexpr uint32_t kEnd = ~uint32_t{0};
  struct Slab {
    uint32_t cls = kNoClass;
    uint32_t live = 0;        // allocated chunks
    uint32_t carved = 0;      // chunks handed out at least once (bump pointer)
    uint32_t capacity = 0;    // chunks per slab for cls
    uint32_t free_head = kEnd;  // chunk index, linked through next_free_
    uint64_t residue = 0;       // owners of the bytes chunks of earlier classes left
  };
  static uint64_t Combine(uint64_t a, uint64_t b) { return a == 0 ? b : b == 0 || a == b ? a : kMixed; }
  // Index of a chunk in the side tables.
  uint64_t ChunkIndex(uint32_t slab, uint32_t chunk) const { return uint64_t{slab} * max_chunks_ + chunk; }
  uint32_t& NextFree(uint32_t slab, uint32_t chunk) { return next_free_[ChunkIndex(slab, chunk)]; }

  const SizeClasses* classes_ = nullptr;
  uint64_t slab_bytes_ = 0;
  std::vector<uint8_t*> slab_base_;
  std::vector<Slab> slabs_;
  uint32_t max_chunks_ = 0;           // chunks per slab of the smallest class
  std::vector<uint32_t> next_free_;   // [slab * max_chunks_ + chunk]: the free list's next chunk
  std::vector<uint64_t> owner_;       // [slab * max_chunks_ + chunk]: owner given to its last Free
  SlotLinks links_;                   // over slab ids
  SlotList free_slabs_{&links_};
  std::vector<SlotList> partial_;     // per class: slabs with a free or uncarved chunk
  uint64_t allocated_bytes_ = 0;
};

}  // namespace kvhub::storage
