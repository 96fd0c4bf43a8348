#include "bench/replay/simulator.h"

#include <algorithm>
#include <limits>
#include <queue>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"

namespace kvhub::replay {
namespace {

constexpr uint32_t kAbsent = 0xffffffffu;

absl::Status CheckOptions(const SimOptions& o) {
  if (o.capacity_blocks == 0 || o.capacity_blocks > (uint64_t{1} << 31)) {
    return absl::InvalidArgumentError(
        absl::StrCat("capacity must be 1 .. 2^31 blocks, got ", o.capacity_blocks));
  }
  if (!(o.low_watermark > 0.0 && o.low_watermark <= 1.0)) {
    return absl::InvalidArgumentError("low_watermark must be in (0, 1]");
  }
  return absl::OkStatus();
}

bool Cacheable(const TraceRequest& r, size_t i, const SimOptions& o) {
  return o.cache_partial_tail || r.BlockTokens(i, o.block_tokens) == o.block_tokens;
}

// Tokens of the leading run of blocks for which present(block) holds.
template <typename Present>
uint64_t PrefixHit(const TraceRequest& r, const SimOptions& o, Present present) {
  uint64_t hit = 0;
  for (size_t i = 0; i < r.blocks.size(); ++i) {
    if (!Cacheable(r, i, o) || !present(r.blocks[i])) break;
    hit += r.BlockTokens(i, o.block_tokens);
  }
  return hit;
}

}  // namespace

uint64_t SimGhostHint(uint32_t block) {
  uint64_t x = uint64_t{block} + 0x9e3779b97f4a7c15ull;  // splitmix64
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

absl::StatusOr<SimResult> SimulatePolicy(const Trace& trace, storage::EvictionPolicy& policy,
                                         const SimOptions& o) {
  std::vector<uint32_t> one_shard(trace.distinct_blocks, 0);
  return SimulateSharded(trace, {&policy}, one_shard, o);
}

namespace {

// One shard: a cache of `cap` slots driven by its policy.
struct ShardCache {
  storage::EvictionPolicy* policy = nullptr;
  std::vector<uint32_t> block_in;  // slot -> dense block id
  std::vector<uint32_t> free_slots;
};

}  // namespace

absl::StatusOr<SimResult> SimulateSharded(const Trace& trace,
                                          const std::vector<storage::EvictionPolicy*>& policies,
                                          const std::vector<uint32_t>& shard_of,
                                          const SimOptions& o) {
  if (absl::Status s = CheckOptions(o); !s.ok()) return s;
  if (policies.empty()) return absl::InvalidArgumentError("no policies (shards) given");
  if (shard_of.size() != trace.distinct_blocks) {
    return absl::InvalidArgumentError(absl::StrCat("shard_of has ", shard_of.size(),
                                                   " entries for ", trace.distinct_blocks,
                                                   " distinct blocks"));
  }
  for (uint32_t s : shard_of) {
    if (s >= policies.size()) return absl::InvalidArgumentError("shard_of names a missing shard");
  }
  const uint32_t cap = static_cast<uint32_t>(o.capacity_blocks);
  if (o.evict_to_blocks >= cap && o.evict_to_blocks > 0) {
    return absl::InvalidArgumentError("evict_to_blocks must be < capacity_blocks");
  }
  const uint64_t bytes = o.block_tokens;  // every block weighs the same
  uint32_t low = std::max<uint32_t>(1, static_cast<uint32_t>(o.low_watermark * cap));
  if (low >= cap) low = cap - 1;  // used blocks after an eviction round
  if (o.evict_to_blocks > 0) low = static_cast<uint32_t>(o.evict_to_blocks);
  std::vector<ShardCache> shards(policies.size());
  SimResult res;
  res.policy = policies[0]->Name();
  res.capacity_blocks = cap;
  for (size_t i = 0; i < shards.size(); ++i) {
    ShardCache& c = shards[i];
    c.policy = policies[i];
    if (c.policy == nullptr) return absl::InvalidArgumentError("null policy");
    c.policy->Init(cap);
    c.block_in.assign(cap, kAbsent);
    c.free_slots.reserve(cap);
    for (uint32_t s = cap; s-- > 0;) c.free_slots.push_back(s);
  }
  std::vector<uint32_t> slot_of(trace.distinct_blocks, kAbsent);  // within its shard
  auto all = [](uint32_t) { return true; };
  auto evict_one = [&](ShardCache& c) -> bool {
    uint32_t v = c.policy->PickVictim(all);
    if (v == storage::kNoSlot || v >= cap || c.block_in[v] == kAbsent) return false;
    c.policy->OnRemove(v, /*evicted=*/true);
    slot_of[c.block_in[v]] = kAbsent;
    c.block_in[v] = kAbsent;
    c.free_slots.push_back(v);
    ++res.evicted_blocks;
    return true;
  };
  auto access = [&](uint32_t b) { shards[shard_of[b]].policy->OnAccess(slot_of[b]); };
  auto insert = [&](const TraceRequest& r, size_t i) {
    uint32_t b = r.blocks[i];
    ShardCache& c = shards[shard_of[b]];
    uint64_t hint = SimGhostHint(b);
    if (!c.policy->Admit(hint, bytes)) {
      ++res.rejected_blocks;
      return;
    }
    if (c.free_slots.empty()) {
      while (cap - c.free_slots.size() > low && evict_one(c)) {
      }
    }
    if (c.free_slots.empty()) {
      ++res.rejected_blocks;
      return;
    }
    uint32_t s = c.free_slots.back();
    c.free_slots.pop_back();
    uint32_t parent = kAbsent;
    if (i > 0 && shard_of[r.blocks[i - 1]] == shard_of[b]) parent = slot_of[r.blocks[i - 1]];
    slot_of[b] = s;
    c.block_in[s] = b;
    c.policy->OnInsert(s, parent == kAbsent ? storage::kNoSlot : parent, hint, bytes);
    ++res.inserted_blocks;
  };
  const bool live = o.access_model == SimOptions::AccessModel::kLiveClient;
  std::vector<uint8_t> was_present;
  for (const TraceRequest& r : trace.requests) {
    res.requested_tokens += r.input_length;
    res.hit_tokens += PrefixHit(r, o, [&](uint32_t b) { return slot_of[b] != kAbsent; });
    size_t n = 0;
    while (n < r.blocks.size() && Cacheable(r, n, o)) ++n;
    if (!live) {
      for (size_t i = 0; i < n; ++i) {
        if (slot_of[r.blocks[i]] != kAbsent) {
          access(r.blocks[i]);
        } else {
          insert(r, i);
        }
      }
      continue;
    }
    was_present.assign(n, 0);
    size_t lead = 0;
    for (size_t i = 0; i < n; ++i) was_present[i] = slot_of[r.blocks[i]] != kAbsent;
    while (lead < n && was_present[lead]) ++lead;
    for (size_t i = 0; i < n; ++i) {  // LookupPrefix
      if (was_present[i]) access(r.blocks[i]);
    }
    for (size_t i = 0; i < lead; ++i) access(r.blocks[i]);  // Fetch (Acquire)
    for (size_t i = 0; i < n; ++i) {  // Publish: Lookup
      if (was_present[i]) access(r.blocks[i]);
    }
    for (size_t i = 0; i < n; ++i) {  // Publish: Put of the missing blocks
      if (!was_present[i] && slot_of[r.blocks[i]] == kAbsent) insert(r, i);
    }
  }
  return res;
}

absl::StatusOr<SimResult> SimulateBelady(const Trace& trace, const SimOptions& o) {
  if (absl::Status s = CheckOptions(o); !s.ok()) return s;
  // Next use of every access, by global access index.
  constexpr uint64_t kNever = std::numeric_limits<uint64_t>::max();
  uint64_t accesses = 0;
  for (const TraceRequest& r : trace.requests) accesses += r.blocks.size();
  std::vector<uint64_t> next(accesses);
  {
    std::vector<uint64_t> last(trace.distinct_blocks, kNever);
    uint64_t k = accesses;
    for (size_t q = trace.requests.size(); q-- > 0;) {
      const TraceRequest& r = trace.requests[q];
      for (size_t i = r.blocks.size(); i-- > 0;) {
        --k;
        next[k] = last[r.blocks[i]];
        last[r.blocks[i]] = k;
      }
    }
  }
  SimResult res;
  res.policy = "belady";
  res.capacity_blocks = o.capacity_blocks;
  std::vector<uint64_t> cur(trace.distinct_blocks, 0);  // next use of a present block
  std::vector<uint8_t> present(trace.distinct_blocks, 0);
  std::priority_queue<std::pair<uint64_t, uint32_t>> heap;  // (next use, block), lazy
  uint64_t size = 0;
  auto top_valid = [&]() {
    while (!heap.empty() && (!present[heap.top().second] || cur[heap.top().second] != heap.top().first)) {
      heap.pop();
    }
  };
  uint64_t k = 0;
  for (const TraceRequest& r : trace.requests) {
    res.requested_tokens += r.input_length;
    res.hit_tokens += PrefixHit(r, o, [&](uint32_t b) { return present[b] != 0; });
    for (size_t i = 0; i < r.blocks.size(); ++i, ++k) {
      if (!Cacheable(r, i, o)) continue;
      uint32_t b = r.blocks[i];
      uint64_t nu = next[k];
      if (present[b]) {
        cur[b] = nu;
        heap.push({nu, b});
        continue;
      }
      if (size >= o.capacity_blocks) {
        top_valid();
        if (nu >= heap.top().first) {  // bypass: the newcomer is needed last
          ++res.rejected_blocks;
          continue;
        }
        present[heap.top().second] = 0;
        heap.pop();
        --size;
        ++res.evicted_blocks;
      }
      present[b] = 1;
      cur[b] = nu;
      heap.push({nu, b});
      ++size;
      ++res.inserted_blocks;
    }
  }
  return res;
}

SimResult SimulateInfinite(const Trace& trace, const SimOptions& o) {
  SimResult res;
  res.policy = "infinite";
  res.capacity_blocks = 0;
  std::vector<uint8_t> seen(trace.distinct_blocks, 0);
  for (const TraceRequest& r : trace.requests) {
    res.requested_tokens += r.input_length;
    res.hit_tokens += PrefixHit(r, o, [&](uint32_t b) { return seen[b] != 0; });
    for (size_t i = 0; i < r.blocks.size(); ++i) {
      if (!Cacheable(r, i, o)) break;
      if (!seen[r.blocks[i]]) ++res.inserted_blocks;
      seen[r.blocks[i]] = 1;
    }
  }
  return res;
}

}  // namespace kvhub::replay
