#include "storage/slab_allocator.h"

#include <algorithm>

namespace kvhub::storage {

void SlabAllocator::Init(const SizeClasses* classes, std::vector<uint8_t*> slab_base) {
  classes_ = classes;
  slab_bytes_ = classes->slab_bytes();
  slab_base_ = std::move(slab_base);
  slabs_.assign(slab_base_.size(), Slab{});
  max_chunks_ = 0;
  for (uint32_t c = 0; c < classes->count(); ++c) max_chunks_ = std::max(max_chunks_, classes->chunks_per_slab(c));
  next_free_.assign(slabs_.size() * uint64_t{max_chunks_}, kEnd);
  owner_.assign(slabs_.size() * uint64_t{max_chunks_}, 0);
  links_.Init(static_cast<uint32_t>(slabs_.size()));
  free_slabs_.Clear();
  for (uint32_t i = 0; i < slabs_.size(); ++i) free_slabs_.PushTail(i);
  partial_.assign(classes->count(), SlotList(&links_));
  allocated_bytes_ = 0;
}

uint64_t SlabAllocator::Allocate(uint32_t cls, uint64_t* prior) {
  SlotList& partial = partial_[cls];
  uint32_t id = partial.head();
  if (id == kNoSlot) {
    id = free_slabs_.PopTail();
    if (id == kNoSlot) return kNoChunk;
    Slab& fresh = slabs_[id];
    fresh.cls = cls;
    fresh.live = fresh.carved = 0;
    fresh.capacity = classes_->chunks_per_slab(cls);
    fresh.free_head = kEnd;
    partial.PushHead(id);
  }
  Slab& s = slabs_[id];
  uint32_t chunk;
  if (s.free_head != kEnd) {
    chunk = s.free_head;
    s.free_head = NextFree(id, chunk);
    if (prior != nullptr) *prior = owner_[ChunkIndex(id, chunk)];
  } else {
    chunk = s.carved++;
    if (prior != nullptr) *prior = s.residue;
  }
  ++s.live;
  if (s.live == s.capacity) partial.Remove(id);  // full
  allocated_bytes_ += classes_->size(cls);
  return uint64_t{id} * slab_bytes_ + uint64_t{chunk} * classes_->size(cls);
}

bool SlabAllocator::Free(uint64_t offset, uint64_t owner) {
  uint32_t id = SlabOf(offset);
  Slab& s = slabs_[id];
  uint64_t size = classes_->size(s.cls);
  uint32_t chunk = static_cast<uint32_t>((offset % slab_bytes_) / size);
  bool was_full = s.live == s.capacity;
  --s.live;
  allocated_bytes_ -= size;
  owner_[ChunkIndex(id, chunk)] = owner;
  if (s.live == 0) {
    // The slab leaves its class: what its chunks left behind is its residue.
    // (Every chunk carved in this class was freed since, so each has an owner.)
    for (uint32_t c = 0; c < s.carved && s.residue != kMixed; ++c) {
      s.residue = Combine(s.residue, owner_[ChunkIndex(id, c)]);
    }
    if (!was_full) partial_[s.cls].Remove(id);
    s.cls = kNoClass;
    s.carved = 0;
    s.free_head = kEnd;
    free_slabs_.PushHead(id);  // PopTail hands out long-free slabs first
    return true;
  }
  NextFree(id, chunk) = s.free_head;
  s.free_head = chunk;
  if (was_full) partial_[s.cls].PushTail(id);
  return false;
}

}  // namespace kvhub::storage
