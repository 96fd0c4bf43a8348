#include "storage/ghost_fifo.h"

#include <bit>

namespace kvhub::storage {

void GhostFifo::Init(uint32_t capacity) {
  if (capacity == 0) capacity = 1;
  ring_.assign(capacity, Entry{});
  head_ = used_ = 0;
  size_t tsize = std::bit_ceil(size_t{capacity} * 2);
  table_.assign(tsize, Entry{});
  mask_ = tsize - 1;
  live_ = 0;
  next_seq_ = 1;
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

void GhostFifo::Insert(uint64_t digest) {
  Erase(digest);
  if (used_ == ring_.size()) PopOldest();
  uint64_t seq = next_seq_++;
  ring_[(head_ + used_) % ring_.size()] = Entry{digest, seq};
  ++used_;
  size_t i = Mix(digest) & mask_;
  while (table_[i].seq != 0) i = (i + 1) & mask_;
  table_[i] = Entry{digest, seq};
  ++live_;
}

void GhostFifo::TrimTo(uint32_t limit) {
  while (live_ > limit && used_ > 0) PopOldest();
}

}  // namespace kvhub::storage
