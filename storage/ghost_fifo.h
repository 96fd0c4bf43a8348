#pragma once
// A FIFO of 64-bit key digests with O(1) membership (S3-FIFO's ghost queue):
// remembers recently evicted keys without their data, at most `capacity` of
// them (chosen at Init).
//
// Memory: ~48 B per digest it has room for. By default all of it is allocated
// at Init and Insert never allocates. Init with a smaller `initial` room makes
// the FIFO start there and double its room whenever an Insert finds it full
// (up to `capacity`): memory then follows the digests really held, at the cost
// of O(log(capacity / initial)) allocations (each moving every held digest) on
// the Inserts that grow it. Room is never given back.
//
// Thread safety: none.

#include <cstddef>
#include <cstdint>
#include <vector>

namespace kvhub::storage {

class GhostFifo {
 public:
  // Holds at most `capacity` digests (>= 1), with room for `initial` of them
  // allocated now (0 or >= capacity: all of it; else at least 16).
  void Init(uint32_t capacity, uint32_t initial = 0);

  bool Contains(uint64_t digest) const;
  // Forgets `digest` if present.
  void Erase(uint64_t digest);
  // Appends `digest` (refreshing it if present), dropping the oldest when full.
  void Insert(uint64_t digest);
  // Drops the oldest digests until at most `limit` remain.
  void TrimTo(uint32_t limit);

  uint32_t size() const { return live_; }
  uint32_t capacity() const { return capacity_; }
  // Digests there is room for now (<= capacity()).
  uint32_t allocated() const { return static_cast<uint32_t>(ring_.size()); }

 private:
  struct Entry {
    uint64_t digest = 0;
    uint64_t seq = 0;  // 0 = empty (table) / dead (ring)
  };
  size_t Find(uint64_t digest) const;  // table index or npos
  void EraseAt(size_t i);
  void PopOldest();
  // Drops the ring's dead entries, keeping the live ones in order.
  void Compact();
  // Doubles the room (at most capacity_), keeping every digest and its order.
  void Grow();
  // Sizes the table for `room` digests (load factor <= 1/2) and empties it.
  void ResetTable(size_t room);
  // Puts `e` in the table's first free slot from its home (the table has room).
  void Place(const Entry& e);
  static uint64_t Mix(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return x;
  }
  static constexpr size_t kNpos = ~size_t{0};

  uint32_t capacity_ = 1;
  std::vector<Entry> ring_;   // insertion order; [head_, head_ + used_) mod size
  size_t head_ = 0;
  size_t used_ = 0;
  std::vector<Entry> table_;  // open addressing, linear probing, backward-shift delete
  size_t mask_ = 0;
  uint32_t live_ = 0;
  uint64_t next_seq_ = 1;
};

}  // namespace kvhub::storage
