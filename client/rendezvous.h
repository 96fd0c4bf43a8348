#pragma once
// Weighted rendezvous (highest-random-weight) placement of block keys over a
// member list (DESIGN §6). Exact definition (docs/client.md, normative for
// every client):
//
//   seed(m)    = XXH3_64(utf8(m.id))                         (seed 0)
//   h(k, m)    = XXH3_64(key bytes(16, DESIGN §2) | u64le(seed(m)))
//   u(k, m)    = ((h >> 11) + 0.5) / 2^53                    in (0, 1)
//   score(k,m) = -weight(m) / ln(u(k, m))
//   owner(k)   = argmax score; ties go to the smaller id (bytewise)
//
// The owner does not depend on the order of the member list. Removing a member
// moves only the keys it owned; adding one moves only keys onto it.
// Immutable after construction; thread-safe.

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/u128.h"

namespace kvhub {

struct RendezvousMember {
  std::string id;       // identity hashed into placement (the "host:port" address)
  double weight = 1.0;  // relative capacity, finite and > 0
};

class Rendezvous {
 public:
  // INVALID_ARGUMENT on an empty list, duplicate ids or a bad weight.
  static absl::StatusOr<Rendezvous> Create(std::vector<RendezvousMember> members);

  // Index into the list given to Create() of the member that owns `key`.
  size_t Owner(const U128& key) const;

  // Score of `key` on member `index` (exposed for tests and tools).
  double Score(const U128& key, size_t index) const;

  size_t size() const { return members_.size(); }
  const RendezvousMember& member(size_t index) const { return members_[index]; }

  // u(k, m) of the definition above for a member seed; exposed for tests.
  static double Unit(const U128& key, uint64_t member_seed);
  static uint64_t MemberSeed(const std::string& id);

 private:
  struct Slot {
    uint64_t seed;
    double weight;
    size_t index;  // position in members_
  };
  explicit Rendezvous(std::vector<RendezvousMember> members);

  std::vector<RendezvousMember> members_;  // as given
  std::vector<Slot> slots_;                // sorted by id, so ties are order-independent
};

}  // namespace kvhub
