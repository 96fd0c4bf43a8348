#include "client/rendezvous.h"

#include <cmath>
#include <random>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace kvhub {
namespace {

std::vector<U128> RandomKeys(size_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<U128> keys(n);
  for (U128& k : keys) k = U128{rng(), rng()};
  return keys;
}

Rendezvous Make(const std::vector<std::pair<std::string, double>>& ms) {
  std::vector<RendezvousMember> members;
  for (const auto& [id, w] : ms) members.push_back({id, w});
  auto r = Rendezvous::Create(std::move(members));
  EXPECT_TRUE(r.ok()) << r.status();
  return *std::move(r);
}

TEST(RendezvousTest, RejectsBadMemberLists) {
  EXPECT_FALSE(Rendezvous::Create({}).ok());
  EXPECT_FALSE(Rendezvous::Create({{"a:1", 1}, {"a:1", 2}}).ok());
  EXPECT_FALSE(Rendezvous::Create({{"a:1", 0}}).ok());
  EXPECT_FALSE(Rendezvous::Create({{"a:1", -1}}).ok());
  EXPECT_FALSE(Rendezvous::Create({{"a:1", NAN}}).ok());
}

TEST(RendezvousTest, UnitIsInOpenInterval) {
  for (const U128& k : RandomKeys(10000, 1)) {
    const double u = Rendezvous::Unit(k, 12345);
    EXPECT_GT(u, 0.0);
    EXPECT_LT(u, 1.0);
  }
}

TEST(RendezvousTest, BalancedWithEqualWeights) {
  Rendezvous r = Make({{"10.0.0.1:7000", 1}, {"10.0.0.2:7000", 1}, {"10.0.0.3:7000", 1},
                       {"10.0.0.4:7000", 1}});
  const size_t n = 200000;
  std::vector<size_t> count(r.size());
  for (const U128& k : RandomKeys(n, 2)) ++count[r.Owner(k)];
  for (size_t c : count) {
    // Expected 50000 each; binomial sd ~194, allow 5 sd.
    EXPECT_NEAR(static_cast<double>(c), n / 4.0, 1000.0);
  }
}

TEST(RendezvousTest, ShareFollowsWeights) {
  Rendezvous r = Make({{"a:1", 1}, {"b:1", 2}, {"c:1", 5}});
  const size_t n = 200000;
  std::vector<size_t> count(r.size());
  for (const U128& k : RandomKeys(n, 3)) ++count[r.Owner(k)];
  const double total = 8.0;
  EXPECT_NEAR(count[0] / static_cast<double>(n), 1 / total, 0.01);
  EXPECT_NEAR(count[1] / static_cast<double>(n), 2 / total, 0.01);
  EXPECT_NEAR(count[2] / static_cast<double>(n), 5 / total, 0.01);
}

TEST(RendezvousTest, DeterministicAndOrderIndependent) {
  Rendezvous a = Make({{"x:1", 1}, {"y:2", 3}, {"z:3", 2}});
  Rendezvous b = Make({{"z:3", 2}, {"x:1", 1}, {"y:2", 3}});
  Rendezvous a2 = Make({{"x:1", 1}, {"y:2", 3}, {"z:3", 2}});
  for (const U128& k : RandomKeys(20000, 4)) {
    EXPECT_EQ(a.member(a.Owner(k)).id, b.member(b.Owner(k)).id);
    EXPECT_EQ(a.Owner(k), a2.Owner(k));
  }
}

// The hash is normative (docs/client.md): these values pin it so another
// implementation (or a refactor) cannot drift silently.
TEST(RendezvousTest, PinnedHashValues) {
  const U128 key = *U128::FromHex("000102030405060708090a0b0c0d0e0f");
  EXPECT_EQ(Rendezvous::MemberSeed(""), 0x2d06800538d394c2ull);  // XXH3_64("") seed 0
  // Values computed independently with python3-xxhash (docs/client.md shows the code).
  EXPECT_DOUBLE_EQ(Rendezvous::Unit(key, 0), 0.23885912269538773);
  Rendezvous r = Make({{"10.0.0.1:7000", 1}, {"10.0.0.2:7000", 1}, {"10.0.0.3:7000", 2}});
  const char* want[] = {"10.0.0.3:7000", "10.0.0.3:7000", "10.0.0.3:7000",
                        "10.0.0.1:7000", "10.0.0.2:7000", "10.0.0.3:7000"};
  for (int i = 0; i < 6; ++i) {
    std::string hex;
    for (int j = 0; j < 16; ++j) hex += absl::StrCat(absl::Hex((i * 16 + j) & 255, absl::kZeroPad2));
    const U128 k = *U128::FromHex(hex);
    EXPECT_EQ(r.member(r.Owner(k)).id, want[i]) << hex;
  }
}

TEST(RendezvousTest, RemovingAMemberMovesOnlyItsKeys) {
  Rendezvous full = Make({{"a:1", 1}, {"b:1", 2}, {"c:1", 1}, {"d:1", 1}});
  Rendezvous less = Make({{"a:1", 1}, {"b:1", 2}, {"d:1", 1}});  // c removed
  size_t moved = 0, owned_by_c = 0;
  for (const U128& k : RandomKeys(50000, 5)) {
    const std::string before = full.member(full.Owner(k)).id;
    const std::string after = less.member(less.Owner(k)).id;
    if (before == "c:1") {
      ++owned_by_c;
      EXPECT_NE(after, "c:1");
    } else {
      EXPECT_EQ(before, after) << "a key not owned by the removed member moved";
    }
    if (before != after) ++moved;
  }
  EXPECT_EQ(moved, owned_by_c);
  EXPECT_GT(owned_by_c, 0u);
}

TEST(RendezvousTest, AddingAMemberMovesKeysOnlyOntoIt) {
  Rendezvous before = Make({{"a:1", 1}, {"b:1", 1}, {"c:1", 1}});
  Rendezvous after = Make({{"a:1", 1}, {"b:1", 1}, {"c:1", 1}, {"d:1", 1}});
  size_t moved = 0;
  const size_t n = 100000;
  for (const U128& k : RandomKeys(n, 6)) {
    const std::string x = before.member(before.Owner(k)).id;
    const std::string y = after.member(after.Owner(k)).id;
    if (x != y) {
      ++moved;
      EXPECT_EQ(y, "d:1");
    }
  }
  EXPECT_NEAR(moved / static_cast<double>(n), 0.25, 0.01);
}

}  // namespace
}  // namespace kvhub
