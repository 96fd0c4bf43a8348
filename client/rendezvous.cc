#include "client/rendezvous.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "common/hash.h"

namespace kvhub {

uint64_t Rendezvous::MemberSeed(const std::string& id) { return Xxh3_64(id.data(), id.size()); }

double Rendezvous::Unit(const U128& key, uint64_t member_seed) {
  uint8_t buf[24];
  key.ToBytes(buf);
  for (int i = 0; i < 8; ++i) buf[16 + i] = static_cast<uint8_t>(member_seed >> (8 * i));
  const uint64_t h = Xxh3_64(buf, sizeof(buf));
  return (static_cast<double>(h >> 11) + 0.5) * 0x1.0p-53;
}

absl::StatusOr<Rendezvous> Rendezvous::Create(std::vector<RendezvousMember> members) {
  if (members.empty()) return absl::InvalidArgumentError("rendezvous: no members");
  absl::flat_hash_set<std::string> ids;
  for (const RendezvousMember& m : members) {
    if (!std::isfinite(m.weight) || m.weight <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("rendezvous: member '", m.id, "' weight must be finite and > 0"));
    }
    if (!ids.insert(m.id).second) {
      return absl::InvalidArgumentError(absl::StrCat("rendezvous: duplicate member '", m.id, "'"));
    }
  }
  return Rendezvous(std::move(members));
}

Rendezvous::Rendezvous(std::vector<RendezvousMember> members) : members_(std::move(members)) {
  slots_.reserve(members_.size());
  for (size_t i = 0; i < members_.size(); ++i) {
    slots_.push_back(Slot{MemberSeed(members_[i].id), members_[i].weight, i});
  }
  std::sort(slots_.begin(), slots_.end(), [this](const Slot& a, const Slot& b) {
    return members_[a.index].id < members_[b.index].id;
  });
}

double Rendezvous::Score(const U128& key, size_t index) const {
  const RendezvousMember& m = members_[index];
  return -m.weight / std::log(Unit(key, MemberSeed(m.id)));
}

size_t Rendezvous::Owner(const U128& key) const {
  if (slots_.size() == 1) return slots_[0].index;
  double best = -1.0;
  size_t owner = slots_[0].index;
  for (const Slot& s : slots_) {
    // ln(u) < 0 for u in (0,1), so the score is positive and finite. The one hash
    // (h >> 11 = 2^53 - 1, probability 2^-53 per key and member) whose u rounds to
    // exactly 1.0 scores -inf here: that member never owns that key (DESIGN §6's
    // Python reference divides by zero there).
    const double score = -s.weight / std::log(Unit(key, s.seed));
    if (score > best) {  // strict: on a tie the earlier (smaller id) slot stays
      best = score;
      owner = s.index;
    }
  }
  return owner;
}

}  // namespace kvhub
