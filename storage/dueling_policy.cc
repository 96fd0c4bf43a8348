#include "storage/dueling_policy.h"

#include <algorithm>
#include <bit>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "storage/lru_policy.h"
#include "storage/s3fifo_policy.h"

namespace kvhub::storage {

absl::Status DuelingConfig::Validate() const {
  if (absl::Status s = as3fifo.Validate(); !s.ok()) return s;
  if (!(half_life > 0.0 && half_life <= 64.0)) {
    return absl::InvalidArgumentError(absl::StrCat("duel half_life must be in (0, 64], got ", half_life));
  }
  if (!(min_half_life_refs >= 0.0 && min_half_life_refs <= 1e9)) {
    return absl::InvalidArgumentError(
        absl::StrCat("duel min_half_life_refs must be in [0, 1e9], got ", min_half_life_refs));
  }
  if (!(s3fifo_small_ratio >= 0.0 && s3fifo_small_ratio < 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("duel s3fifo_small_ratio must be in [0, 1), got ", s3fifo_small_ratio));
  }
  if (!(s3fifo_margin >= 0.0 && s3fifo_margin <= 10.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("duel s3fifo_margin must be in [0, 10], got ", s3fifo_margin));
  }
  if (!(margin >= 0.0 && margin < 1.0)) {
    return absl::InvalidArgumentError(absl::StrCat("duel margin must be in [0, 1), got ", margin));
  }
  if (!(lru_margin >= 0.0 && lru_margin < 1.0)) {
    return absl::InvalidArgumentError(
        absl::StrCat("duel lru_margin must be in [0, 1), got ", lru_margin));
  }
  return absl::OkStatus();
}

// Open-addressing digest -> virtual slot table (linear probing, backward-shift
// deletion) plus the policy that orders the virtual slots.
class DuelingPolicy::Shadow {
 public:
  explicit Shadow(std::unique_ptr<EvictionPolicy> policy) : policy_(std::move(policy)) {}

  void Init(uint32_t slots) {
    policy_->Init(slots);
    size_t cap = std::bit_ceil(std::max<size_t>(16, size_t{2} * slots));
    table_.assign(cap, Entry{});
    mask_ = cap - 1;
    hint_of_.assign(slots, 0);
    chain_hit_.assign(slots, 0);
    free_.clear();
    free_.reserve(slots);
    for (uint32_t s = slots; s-- > 0;) free_.push_back(s);
    size_ = 0;
  }

  // One reference to `hint` (whose chain parent is `parent`, 0 for none) with
  // the cache held to `limit` blocks. True on a prefix hit: the block is
  // present and so was its parent at the parent's last reference (the request
  // references its chain in order, so that is this request's).
  bool Reference(uint64_t hint, uint64_t parent, uint32_t limit) {
    size_t i = Find(hint);
    if (i != kNpos) {
      const uint32_t s = table_[i].slot;
      bool prefix = true;
      if (parent != 0) {
        size_t j = Find(parent);
        prefix = j != kNpos && chain_hit_[table_[j].slot] != 0;
      }
      chain_hit_[s] = prefix ? 1 : 0;
      policy_->OnAccess(s);
      return prefix;
    }
    auto all = [](uint32_t) { return true; };
    // One eviction per miss keeps the shadow at the tier's size; after the tier
    // shrank at once (a mass delete: 200k blocks gone) the shadow follows a few
    // blocks per miss instead of all in one call, under the store's lock.
    uint32_t evictions = 0;
    while (free_.empty() || (size_ >= std::max<uint32_t>(limit, 1) && evictions < kMaxShrinkPerReference)) {
      uint32_t v = policy_->PickVictim(all);
      if (v == kNoSlot) return false;
      policy_->OnRemove(v, /*evicted=*/true);
      Erase(hint_of_[v]);
      free_.push_back(v);
      --size_;
      ++evictions;
    }
    uint32_t s = free_.back();
    free_.pop_back();
    hint_of_[s] = hint;
    chain_hit_[s] = 0;
    Insert(hint, s);
    ++size_;
    policy_->OnInsert(s, kNoSlot, hint, 1);
    return false;
  }

 private:
  struct Entry {
    uint64_t hint = 0;
    uint32_t slot = kNoSlot;  // kNoSlot = empty
  };
  static constexpr size_t kNpos = ~size_t{0};
  static constexpr uint32_t kMaxShrinkPerReference = 16;
  size_t Home(uint64_t h) const {
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    return static_cast<size_t>(h) & mask_;
  }
  size_t Find(uint64_t h) const {
    for (size_t i = Home(h);; i = (i + 1) & mask_) {
      if (table_[i].slot == kNoSlot) return kNpos;
      if (table_[i].hint == h) return i;
    }
  }
  void Insert(uint64_t h, uint32_t slot) {
    size_t i = Home(h);
    while (table_[i].slot != kNoSlot) i = (i + 1) & mask_;
    table_[i] = Entry{h, slot};
  }
  void Erase(uint64_t h) {
    size_t i = Find(h);
    if (i == kNpos) return;
    table_[i].slot = kNoSlot;
    for (size_t j = (i + 1) & mask_; table_[j].slot != kNoSlot; j = (j + 1) & mask_) {
      size_t home = Home(table_[j].hint);
      // Move j back to i if its home is not in (i, j] (cyclically).
      bool between = i <= j ? (home > i && home <= j) : (home > i || home <= j);
      if (!between) {
        table_[i] = table_[j];
        table_[j].slot = kNoSlot;
        i = j;
      }
    }
  }

  std::unique_ptr<EvictionPolicy> policy_;
  std::vector<Entry> table_;
  size_t mask_ = 0;
  std::vector<uint64_t> hint_of_;
  std::vector<uint8_t> chain_hit_;  // per virtual slot: its last reference was a prefix hit
  std::vector<uint32_t> free_;
  uint32_t size_ = 0;
};

DuelingPolicy::DuelingPolicy(const DuelingConfig& config) : config_(config) {
  AdaptiveS3FifoConfig plain = config.as3fifo;
  plain.prefix_aware = false;  // shadows see no chain structure
  auto add = [this](const char* name, std::unique_ptr<EvictionPolicy> real,
                    std::unique_ptr<EvictionPolicy> shadow, double margin) {
    candidates_.push_back(Candidate{name, std::move(real), std::make_unique<Shadow>(std::move(shadow)),
                                    0.0, margin});
  };
  add("lru", std::make_unique<LruPolicy>(config.as3fifo.prefix_aware), std::make_unique<LruPolicy>(false),
      config.lru_margin);
  add("as3fifo", std::make_unique<AdaptiveS3FifoPolicy>(config.as3fifo),
      std::make_unique<AdaptiveS3FifoPolicy>(plain), config.margin);
  if (config.s3fifo_small_ratio > 0) {
    constexpr uint32_t kRoom = AdaptiveS3FifoPolicy::kInitialGhostRoom;
    add("s3fifo", std::make_unique<S3FifoPolicy>(config.s3fifo_small_ratio, config.as3fifo.prefix_aware, kRoom),
        std::make_unique<S3FifoPolicy>(config.s3fifo_small_ratio, false, kRoom),
        config.s3fifo_margin);
  }
}

DuelingPolicy::~DuelingPolicy() = default;

void DuelingPolicy::Init(uint32_t capacity_slots) {
  for (Candidate& c : candidates_) {
    c.real->Init(capacity_slots);
    c.shadow->Init(capacity_slots);
    c.hits = 0;
  }
  hint_.assign(capacity_slots, 0);
  parent_hint_.assign(capacity_slots, 0);
  live_.assign(capacity_slots, 0);
  resident_ = 0;
  references_ = 0;
  leader_ = config_.start_with_lru ? 0 : 1;
  switches_ = 0;
}

void DuelingPolicy::Reference(uint64_t hint, uint64_t parent) {
  const uint32_t limit = std::max<uint32_t>(resident_, 1);
  const double half_life = std::max(config_.half_life * limit, config_.min_half_life_refs);
  const double decay = std::exp2(-1.0 / half_life);
  for (Candidate& c : candidates_) {
    c.hits = c.hits * decay + (c.shadow->Reference(hint, parent, limit) ? 1.0 : 0.0);
  }
  if (references_ < half_life) {  // too little evidence yet to leave the starting policy
    ++references_;
    return;
  }
  // The candidate with the most hits among those leading by their margin.
  const double lead = candidates_[leader_].hits;
  size_t next = leader_;
  for (size_t i = 0; i < candidates_.size(); ++i) {
    const Candidate& c = candidates_[i];
    if (i != leader_ && c.hits > lead * (1.0 + c.margin) &&
        (next == leader_ || c.hits > candidates_[next].hits)) {
      next = i;
    }
  }
  if (next != leader_) {
    leader_ = next;
    ++switches_;
  }
}

void DuelingPolicy::OnInsert(uint32_t slot, uint32_t parent_slot, uint64_t ghost_hint,
                             uint64_t bytes) {
  if (slot >= live_.size() || live_[slot]) return;
  live_[slot] = 1;
  hint_[slot] = ghost_hint;
  parent_hint_[slot] =
      parent_slot < live_.size() && live_[parent_slot] ? hint_[parent_slot] : uint64_t{0};
  ++resident_;
  Reference(ghost_hint, parent_hint_[slot]);
  for (Candidate& c : candidates_) c.real->OnInsert(slot, parent_slot, ghost_hint, bytes);
}

void DuelingPolicy::OnAccess(uint32_t slot) {
  if (slot >= live_.size() || !live_[slot]) return;
  Reference(hint_[slot], parent_hint_[slot]);
  for (Candidate& c : candidates_) c.real->OnAccess(slot);
}

void DuelingPolicy::OnRemove(uint32_t slot, bool evicted) {
  if (slot >= live_.size() || !live_[slot]) return;
  live_[slot] = 0;
  --resident_;
  for (Candidate& c : candidates_) c.real->OnRemove(slot, evicted);
}

uint32_t DuelingPolicy::PickVictim(absl::FunctionRef<bool(uint32_t)> can_evict,
                                   absl::FunctionRef<bool(uint32_t)> wanted) {
  return candidates_[leader_].real->PickVictim(can_evict, wanted);
}

}  // namespace kvhub::storage
