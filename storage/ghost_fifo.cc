#include "storage/ghost_fifo.h"

#include <algorithm>
#include <bit>

namespace kvhub::storage {

void GhostFifo::Init(uint32_t capacity, uint32_t initial) {
  capacity_ = std::max<uint32_t>(capacity, 1);
  const uint32_t room = initial == 0 || initial >= capacity_ ? capacity_ : std::min(capacity_, std::max(initial, 16u));
  ring_.assign(room, Entry{});
  head_ = used_ = 0;
  ResetTable(room);
  live_ = 0;
  next_seq_ = 1;
}

void GhostFifo::ResetTable(size_t room) {
  const size_t tsize = std::bit_ceil(room * 2);
  table_.assign(tsize, Entry{});
  mask_ = tsize - 1;
}

void GhostFifo::Grow() {
  const size_t room = std::min<size_t>(capacity_, ring_.size() * 2);
  std::vector<Entry> ring(room);
  for (size_t k = 0; k < used_; ++k) ring[k] = ring_[(head_ + k) % ring_.size()];
  ring_ = std::move(ring);
  head_ = 0;
  // The table holds exactly the live digests (with their sequence numbers, which
  // tell PopOldest whether a ring entry is still live): rehash them.
  std::vector<Entry> old = std::move(table_);
  ResetTable(room);
  for (const Entry& e : old) {
    if (e.seq != 0) Place(e);
  }
}

void GhostFifo::Place(const Entry& e) {
  size_t i = Mix(e.digest) & mask_;
  while (table_[i].seq != 0) i = (i + 1) & mask_;
  table_[i] = e;
}

size_t GhostFifo::Find(uint64_t digest) const {
  for (size_t i = Mix(digest) & mask_;; i = (i + 1) & mask_) {
    const Entry& e = table_[i];
    if (e.seq == 0) return kNpos;
    if (e.digest == digest) return i;
  }
}

bool GhostFifo::Contains(uint64_t digest) const { return Find(digest) != kNpos; }

void GhostFifo::EraseAt(size_t i) {
  // Backward-shift deletion keeps probe sequences intact without tombstones.
  size_t j = i;
  for (;;) {
    j = (j + 1) & mask_;
    if (table_[j].seq == 0) break;
    size_t home = Mix(table_[j].digest) & mask_;
    // Move j into the hole at i if its home is not in (i, j] cyclically.
    bool between = (i <= j) ? (home > i && home <= j) : (home > i || home <= j);
    if (!between) {
      table_[i] = table_[j];
      i = j;
    }
  }
  table_[i] = Entry{};
  --live_;
}

void GhostFifo::Erase(uint64_t digest) {
  size_t i = Find(digest);
  if (i != kNpos) EraseAt(i);
}

void GhostFifo::PopOldest() {
  Entry e = ring_[head_];
  head_ = (head_ + 1) % ring_.size();
  --used_;
  if (e.seq == 0) return;
  size_t i = Find(e.digest);
  if (i != kNpos && table_[i].seq == e.seq) EraseAt(i);  // else refreshed or erased since
}

void GhostFifo::Compact() {
  const size_t n = ring_.size();
  size_t kept = 0;
  for (size_t k = 0; k < used_; ++k) {
    const Entry e = ring_[(head_ + k) % n];
    if (e.seq == 0) continue;
    const size_t i = Find(e.digest);
    if (i == kNpos || table_[i].seq != e.seq) continue;  // erased or refreshed since
    ring_[(head_ + kept) % n] = e;                      // kept <= k: in place, in order
    ++kept;
  }
  used_ = kept;
}

void GhostFifo::Insert(uint64_t digest) {
  Erase(digest);
  // Ring entries of digests erased or refreshed since stay until they reach the
  // head. When a quarter of a full ring is such dead entries, reclaim them before
  // growing or dropping a live digest (amortized O(1) per insert).
  if (used_ == ring_.size() && (used_ - live_) * 4 >= used_ && used_ > live_) Compact();
  if (used_ == ring_.size() && ring_.size() < capacity_) Grow();
  if (used_ == ring_.size()) PopOldest();
  uint64_t seq = next_seq_++;
  ring_[(head_ + used_) % ring_.size()] = Entry{digest, seq};
  ++used_;
  Place(Entry{digest, seq});
  ++live_;
}

void GhostFifo::TrimTo(uint32_t limit) {
  while (live_ > limit && used_ > 0) PopOldest();
}

}  // namespace kvhub::storage
