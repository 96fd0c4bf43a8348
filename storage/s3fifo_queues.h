#pragma once
// The two FIFO queues of S3-FIFO (Yang et al., SOSP'23) over slot ids, shared by
// S3FifoPolicy and AdaptiveS3FifoPolicy, which differ only in how a new block is
// admitted (ghosts) and in the small queue's share; everything else lives here:
//
//  - small FIFO S and main FIFO M, byte-weighted; every block has a 2-bit
//    frequency (0..3) bumped on each hit;
//  - Pick: takes from S while S holds >= `small_share` of the resident bytes (or
//    M is empty; blocks of S a pick found unevictable, until one finds them
//    evictable again, count for neither: pinned blocks stay in S): the tail of S moves to M if it was hit since insertion
//    (freq >= 1), else it is the victim; otherwise from M: the tail is reinserted
//    at M's head with freq-1 while freq > 0, else it is the victim;
//  - prefix awareness (optional per Pick): a block with live children in the
//    tier is reinserted at the head of its queue instead of being evicted;
//    slots the caller cannot evict are likewise reinserted, and slots it does
//    not want (evictable, but of no use to it) are passed over untouched. Each Pick examines
//    each slot a bounded number of times (freq <= 3): O(1) amortized unless most
//    of the tier is unevictable.
//
// Thread safety: none (the owning policy's caller serializes). No allocation
// after Init. Misuse (unknown or duplicate slots) is ignored, as policies do.

#include <cstdint>
#include <vector>

#include "absl/functional/function_ref.h"
#include "storage/prefix_tracker.h"
#include "storage/slot_list.h"

namespace kvhub::storage {

class S3FifoQueues {
 public:
  enum Queue : uint8_t { kNone = 0, kSmall = 1, kMain = 2 };
  static constexpr uint8_t kMaxFreq = 3;

  // What happens to a block's frequency when it moves from S to M.
  enum class OnPromote { kKeepFrequency, kResetFrequency };

  void Init(uint32_t capacity_slots);

  // A new block enters `queue` (kSmall or kMain) with frequency 0. `parent_slot`
  // (its chain parent, or kNoSlot) is ignored unless resident.
  void Insert(uint32_t slot, uint32_t parent_slot, uint64_t bytes, Queue queue);
  void Access(uint32_t slot);
  // Removes the block; returns the queue it was in (kNone if not resident).
  Queue Remove(uint32_t slot);

  // The next victim (see above), or kNoSlot. Does not remove it. A slot that can
  // be evicted but is not `wanted` is passed over untouched: it keeps its place
  // and its frequency (EvictionPolicy::PickVictim).
  uint32_t Pick(absl::FunctionRef<bool(uint32_t)> can_evict, absl::FunctionRef<bool(uint32_t)> wanted,
                bool leaves_only, double small_share, OnPromote on_promote);

  bool resident(uint32_t slot) const { return slot < where_.size() && where_[slot] != kNone; }
  bool in_small(uint32_t slot) const { return slot < where_.size() && where_[slot] == kSmall; }
  bool in_main(uint32_t slot) const { return slot < where_.size() && where_[slot] == kMain; }
  uint32_t frequency(uint32_t slot) const { return freq_[slot]; }
  uint32_t size() const { return small_.count() + main_.count(); }
  uint64_t small_bytes() const { return small_bytes_; }
  uint64_t main_bytes() const { return main_bytes_; }

 private:
  void MoveSmallToMain(uint32_t slot);
  void SetStuck(uint32_t slot, bool stuck);

  SlotLinks links_;
  SlotList small_{&links_};
  SlotList main_{&links_};
  std::vector<uint8_t> where_;
  std::vector<uint8_t> freq_;
  std::vector<uint64_t> bytes_;
  uint64_t small_bytes_ = 0;
  uint64_t main_bytes_ = 0;
  // S's blocks the last pick that looked at them found unevictable (pinned, leased),
  // and their bytes: left out of S's share. A pinned block never leaves S (a put
  // that pins passes no ghost); counted, pinned blocks took the probation of new
  // blocks, which then left in the first pick after they came.
  std::vector<uint8_t> stuck_;
  uint64_t small_stuck_bytes_ = 0;
  PrefixTracker prefix_;
};

}  // namespace kvhub::storage
