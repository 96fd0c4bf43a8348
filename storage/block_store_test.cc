#include "storage/block_store.h"

#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "storage/block_store_test_util.h"
#include "common/memory_limit.h"
#include "storage/host_regions.h"

namespace kvhub::storage {
namespace {

using testing::Bytes;
using testing::Key;
using testing::SmallConfig;
using testing::Sum;

class BlockStoreTest : public ::testing::Test {
 protected:
  void Make(BlockStoreConfig c = SmallConfig()) {
    auto s = BlockStore::Create(c, &clock_);
    ASSERT_TRUE(s.ok()) << s.status();
    store_ = *std::move(s);
  }
  void SetUp() override { Make(); }
  // LRU without prefix awareness: eviction order is easy to predict.
  void MakeLru() {
    BlockStoreConfig c = SmallConfig();
    c.eviction.name = "lru";
    c.eviction.prefix_aware = false;
    Make(c);
  }

  absl::Status PutBlock(uint64_t i, size_t size, absl::string_view ns = "tenant",
                        PutOptions o = {}) {
    auto b = Bytes(i, size);
    return store_->Put(ns, Key(i), b, Sum(b), o);
  }
  bool Present(uint64_t i, absl::string_view ns = "tenant") {
    BlockKey k = Key(i);
    uint8_t p = 0;
    store_->Lookup(ns, {&k, 1}, {&p, 1});
    return p == 1;
  }
  // Acquires, checks the bytes and releases.
  void ExpectBytes(uint64_t i, size_t size, absl::string_view ns = "tenant") {
    auto l = store_->Acquire(ns, Key(i));
    ASSERT_TRUE(l.ok()) << l.status();
    auto want = Bytes(i, size);
    ASSERT_EQ(l->size, size);
    EXPECT_EQ(0, std::memcmp(l->data, want.data(), size));
    EXPECT_EQ(l->checksum, Sum(want));
    EXPECT_TRUE(store_->Release(l->id).ok());
  }

  ManualClock clock_;
  std::unique_ptr<BlockStore> store_;
};

TEST_F(BlockStoreTest, ConfigValidation) {
  absl::Status s_huge;
  BlockStoreConfig c = SmallConfig();
  EXPECT_TRUE(c.Validate().ok());
  c.low_watermark = 0.99;
  EXPECT_EQ(c.Validate().code(), absl::StatusCode::kInvalidArgument);
  c = SmallConfig();
  c.max_block_bytes = 128ull << 10;  // > slab_bytes
  EXPECT_EQ(c.Validate().code(), absl::StatusCode::kInvalidArgument);
  c = SmallConfig();
  c.max_leases = 0;
  EXPECT_EQ(c.Validate().code(), absl::StatusCode::kInvalidArgument);
  c.max_leases = (1u << 24) + 1;  // preallocated: a typo must not reserve gigabytes
  EXPECT_EQ(c.Validate().code(), absl::StatusCode::kInvalidArgument);
  c = SmallConfig();
  c.max_lease = absl::InfiniteDuration();  // now + lease overflowed: every lease was born expired
  EXPECT_EQ(c.Validate().code(), absl::StatusCode::kInvalidArgument);
  c = SmallConfig();
  c.eviction.name = "clock";
  EXPECT_EQ(BlockStore::Create(c).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(BlockStoreConfig{}.Validate().ok());
  // Absurd sizes are refused, not overflowed: 2^32 chunks of 256 bytes in one 1 TiB
  // slab passed (side tables under an eighth of capacity), and the allocator's
  // 32-bit chunk count truncated to 0 (its first Free wrote out of bounds).
  c = SmallConfig();
  c.min_block_bytes = c.max_block_bytes = 256;
  c.capacity_bytes = c.region_bytes = c.slab_bytes = uint64_t{1} << 40;
  s_huge = c.Validate();
  EXPECT_EQ(s_huge.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s_huge.message()), ::testing::HasSubstr("2^32-1 chunks"));
  c = SmallConfig();
  c.capacity_bytes = c.region_bytes = c.max_block_bytes = uint64_t{1} << 63;  // bit_ceil and doubling overflow
  EXPECT_THAT(std::string(c.Validate().message()), ::testing::HasSubstr("exceeds 2^50 bytes"));
  // Capacity and quotas are charged chunks: a 40 KiB block takes a whole 64 KiB slab.
  c = SmallConfig();
  c.max_block_bytes = 40ull << 10;
  c.namespace_quota_bytes = 40ull << 10;
  absl::Status s = c.Validate();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), ::testing::HasSubstr("65536-byte chunk"));
  c.namespace_quota_bytes = 64ull << 10;
  EXPECT_TRUE(c.Validate().ok()) << c.Validate();
  c.namespace_quotas = {{"big", 48ull << 10}};
  EXPECT_EQ(c.Validate().code(), absl::StatusCode::kInvalidArgument);
  c = SmallConfig();
  c.max_block_bytes = 40ull << 10;
  c.capacity_bytes = 48ull << 10;
  c.region_bytes = 64ull << 10;
  s = c.Validate();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), ::testing::HasSubstr("more than capacity_bytes"));
  c = SmallConfig();
  c.reservation_timeout = absl::Hours(2);  // now + a huge timeout used to overflow
  EXPECT_EQ(c.Validate().code(), absl::StatusCode::kInvalidArgument);
  // 64-byte blocks on 512 GiB: 96 GiB of allocator tables filled at start (checked
  // by Validate alone: nothing is mapped).
  c = BlockStoreConfig{};
  c.capacity_bytes = 512ull << 30;
  c.min_block_bytes = 64;
  s = c.Validate();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(std::string(s.message()), ::testing::HasSubstr("allocator tables"));
  c.min_block_bytes = 4096;
  EXPECT_TRUE(c.Validate().ok()) << c.Validate();
}

TEST_F(BlockStoreTest, RegionsAreMappedAndStable) {
  auto regions = store_->regions();
  ASSERT_EQ(regions.size(), 4u);
  for (const Region& r : regions) {
    EXPECT_NE(r.base, nullptr);
    EXPECT_EQ(r.size, 1u << 20);
  }
  auto res = store_->Reserve("tenant", Key(1), 1000, 0);
  ASSERT_TRUE(res.ok());
  const Region& r = regions[res->location.region];
  EXPECT_EQ(res->data, r.base + res->location.offset);
  EXPECT_EQ(res->location.size, 1000u);
  EXPECT_EQ(reinterpret_cast<uintptr_t>(res->data) % 64, 0u);
}

TEST_F(BlockStoreTest, TwoPhasePutBecomesVisibleOnlyAtCommit) {
  auto b = Bytes(1, 5000);
  auto res = store_->Reserve("tenant", Key(1), b.size(), Sum(b));
  ASSERT_TRUE(res.ok()) << res.status();
  EXPECT_NE(res->id, 0u);
  EXPECT_FALSE(Present(1));
  EXPECT_EQ(store_->Acquire("tenant", Key(1)).status().code(), absl::StatusCode::kNotFound);
  // A second reservation for the same key is refused while the first lives.
  EXPECT_EQ(store_->Reserve("tenant", Key(1), b.size(), Sum(b)).status().code(),
            absl::StatusCode::kAborted);
  EXPECT_EQ(store_->Stats().reserved_bytes, 5000u);
  std::memcpy(res->data, b.data(), b.size());
  ASSERT_TRUE(store_->Commit(res->id).ok());
  EXPECT_TRUE(Present(1));
  ExpectBytes(1, 5000);
  auto st = store_->Stats();
  EXPECT_EQ(st.used_bytes, 5000u);
  EXPECT_EQ(st.reserved_bytes, 0u);
  EXPECT_EQ(st.blocks, 1u);
  // Committing twice, and re-putting a visible key, are refused.
  EXPECT_EQ(store_->Commit(res->id).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(PutBlock(1, 5000).code(), absl::StatusCode::kAlreadyExists);
}

TEST_F(BlockStoreTest, WrongChecksumIsRefusedAndNothingVisible) {
  auto b = Bytes(2, 3000);
  auto res = store_->Reserve("tenant", Key(2), b.size(), Sum(b) ^ 1);
  ASSERT_TRUE(res.ok());
  std::memcpy(res->data, b.data(), b.size());
  EXPECT_EQ(store_->Commit(res->id).code(), absl::StatusCode::kDataLoss);
  EXPECT_FALSE(Present(2));
  auto st = store_->Stats();
  EXPECT_EQ(st.checksum_failures, 1u);
  EXPECT_EQ(st.blocks, 0u);
  EXPECT_EQ(st.reserved_bytes, 0u);
  EXPECT_EQ(st.allocated_bytes, 0u);
  // The key is free again: a correct put succeeds.
  EXPECT_TRUE(PutBlock(2, 3000).ok());
  ExpectBytes(2, 3000);
}

// A chunk keeps the bytes of its last occupant. A reservation must not expose
// them: neither to a reader (Commit without writing everything), nor through the
// DATA_LOSS message (which used to echo the hash of what the chunk held), nor as
// an oracle (reserve with the hash of a guessed block, commit without writing).
TEST_F(BlockStoreTest, AReservationNeverShowsItsChunksLastOccupant) {
  const std::vector<uint8_t> secret = Bytes(7, 5000);
  // A neighbour of the same class keeps the slab in use once the secret is deleted,
  // so the next chunk of that class is the secret's own (an emptied slab goes back
  // to the free list, and a fresh one, still zero from mmap, proved nothing).
  const std::vector<uint8_t> neighbour = Bytes(6, 5000);
  ASSERT_TRUE(store_->Put("tenant-a", Key(6), neighbour, Sum(neighbour)).ok());
  ASSERT_TRUE(store_->Put("tenant-a", Key(7), secret, Sum(secret)).ok());
  absl::StatusOr<Lease> where = store_->Acquire("tenant-a", Key(7), absl::ZeroDuration());
  ASSERT_TRUE(where.ok()) << where.status();
  const uint8_t* secret_chunk = where->data;
  ASSERT_TRUE(store_->Release(where->id).ok());
  ASSERT_TRUE(store_->Delete("tenant-a", Key(7)).ok());  // its chunk is free, its bytes still there
  auto probe = store_->Reserve("tenant-b", Key(8), secret.size(), Sum(secret));
  ASSERT_TRUE(probe.ok()) << probe.status();
  ASSERT_EQ(probe->data, secret_chunk) << "the probe must get the secret's chunk for the test to mean anything";
  const std::vector<uint8_t> zeros(secret.size(), 0);
  EXPECT_EQ(std::memcmp(probe->data, zeros.data(), zeros.size()), 0) << "the reservation shows old bytes";
  const absl::Status guessed = store_->Commit(probe->id);  // nothing written
  EXPECT_EQ(guessed.code(), absl::StatusCode::kDataLoss) << "a guessed block confirmed";
  auto again = store_->Reserve("tenant-b", Key(8), secret.size(), 12345);
  ASSERT_TRUE(again.ok()) << again.status();
  const absl::Status refused = store_->Commit(again->id);
  EXPECT_EQ(refused.code(), absl::StatusCode::kDataLoss);
  EXPECT_FALSE(absl::StrContains(refused.message(), absl::StrCat(Sum(zeros)))) << refused;
  EXPECT_TRUE(absl::StrContains(refused.message(), "12345")) << "says what was expected: " << refused;
  EXPECT_FALSE(Present(8, "tenant-b"));
}

// The same across size classes: a slab that held one tenant's blocks and changed
// class hands the next tenant zeros. Two slabs: one full of tenant-b's 16 KiB
// blocks, so tenant-a's small blocks take the other, which then changes class.
TEST_F(BlockStoreTest, ASlabThatChangedClassShowsNoEarlierTenant) {
  BlockStoreConfig c = SmallConfig();
  c.capacity_bytes = c.region_bytes = 128ull << 10;
  Make(c);
  for (uint64_t i = 0; i < 4; ++i) ASSERT_TRUE(PutBlock(300 + i, 16000, "tenant-b").ok()) << i;
  for (uint64_t i = 0; i < 8; ++i) ASSERT_TRUE(PutBlock(100 + i, 3000, "tenant-a").ok()) << i;
  for (uint64_t i = 0; i < 8; ++i) ASSERT_TRUE(store_->Delete("tenant-a", Key(100 + i)).ok());
  const uint64_t size = 5000;  // another class: a fresh chunk of the slab tenant-a left
  auto r = store_->Reserve("tenant-b", Key(200), size, 1);
  ASSERT_TRUE(r.ok()) << r.status();
  const std::vector<uint8_t> zeros(size, 0);
  EXPECT_EQ(std::memcmp(r->data, zeros.data(), size), 0) << "the reservation shows tenant-a's bytes";
  EXPECT_TRUE(store_->Abort(r->id).ok());
  for (uint64_t i = 0; i < 4; ++i) ExpectBytes(300 + i, 16000, "tenant-b");
}

TEST_F(BlockStoreTest, AbortDropsReservation) {
  auto res = store_->Reserve("tenant", Key(3), 1000, 0);
  ASSERT_TRUE(res.ok());
  EXPECT_TRUE(store_->Abort(res->id).ok());
  EXPECT_EQ(store_->Abort(res->id).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->Commit(res->id).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->Stats().allocated_bytes, 0u);
  EXPECT_EQ(store_->Commit(12345).code(), absl::StatusCode::kNotFound);
}

TEST_F(BlockStoreTest, UncommittedReservationDisappearsAfterTimeout) {
  auto b = Bytes(4, 2000);
  auto res = store_->Reserve("tenant", Key(4), b.size(), Sum(b));
  ASSERT_TRUE(res.ok());
  std::memcpy(res->data, b.data(), b.size());
  clock_.Advance(absl::Seconds(29));
  EXPECT_EQ(store_->ExpireNow(), 0u);
  clock_.Advance(absl::Seconds(2));
  EXPECT_EQ(store_->ExpireNow(), 1u);
  auto st = store_->Stats();
  EXPECT_EQ(st.reservations_expired, 1u);
  EXPECT_EQ(st.reserved_bytes, 0u);
  EXPECT_EQ(st.allocated_bytes, 0u);
  EXPECT_EQ(store_->Commit(res->id).code(), absl::StatusCode::kNotFound);
  EXPECT_FALSE(Present(4));
  // Without ExpireNow, a late Commit is refused too, and a new Reserve takes over.
  auto res2 = store_->Reserve("tenant", Key(5), b.size(), Sum(b));
  ASSERT_TRUE(res2.ok());
  clock_.Advance(absl::Seconds(31));
  auto res3 = store_->Reserve("tenant", Key(5), b.size(), Sum(b));
  ASSERT_TRUE(res3.ok()) << res3.status();
  EXPECT_EQ(store_->Commit(res2->id).code(), absl::StatusCode::kNotFound);
}

TEST_F(BlockStoreTest, BadInputsAreRejectedAndChangeNothing) {
  ASSERT_TRUE(PutBlock(1, 1000).ok());
  auto before = store_->Stats();
  EXPECT_EQ(store_->Reserve("tenant", Key(9), 0, 0).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->Reserve("tenant", Key(9), (16 << 10) + 1, 0).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->Reserve("", Key(9), 100, 0).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->Reserve(std::string(300, 'x'), Key(9), 100, 0).status().code(),
            absl::StatusCode::kInvalidArgument);
  std::vector<uint8_t> empty;
  EXPECT_EQ(store_->Put("tenant", Key(9), empty, 0).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->Acquire("tenant", Key(1), absl::Seconds(-1)).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->Delete("bad\n", Key(1)).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(store_->Release(0).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->Release(~uint64_t{0}).code(), absl::StatusCode::kNotFound);
  auto after = store_->Stats();
  EXPECT_EQ(after.blocks, before.blocks);
  EXPECT_EQ(after.used_bytes, before.used_bytes);
  EXPECT_EQ(after.allocated_bytes, before.allocated_bytes);
  EXPECT_EQ(after.reserved_bytes, 0u);
  ExpectBytes(1, 1000);
}

TEST_F(BlockStoreTest, NamespacesAreIsolated) {
  ASSERT_TRUE(PutBlock(1, 1000, "alice").ok());
  EXPECT_TRUE(Present(1, "alice"));
  EXPECT_FALSE(Present(1, "bob"));
  EXPECT_EQ(store_->Acquire("bob", Key(1)).status().code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->Delete("bob", Key(1)).code(), absl::StatusCode::kNotFound);
  EXPECT_EQ(store_->Pin("bob", Key(1), true).code(), absl::StatusCode::kNotFound);
  // The same key may live independently in both.
  ASSERT_TRUE(PutBlock(1, 1000, "bob").ok());
  ASSERT_TRUE(store_->Delete("alice", Key(1)).ok());
  EXPECT_FALSE(Present(1, "alice"));
  EXPECT_TRUE(Present(1, "bob"));
}

TEST_F(BlockStoreTest, LookupReportsLeadingRun) {
  for (uint64_t i : {0, 1, 2, 4}) ASSERT_TRUE(PutBlock(i, 500).ok());
  std::vector<BlockKey> keys;
  for (uint64_t i = 0; i < 6; ++i) keys.push_back(Key(i));
  std::vector<uint8_t> present(6, 9);
  EXPECT_EQ(store_->Lookup("tenant", keys, present), 3u);
  EXPECT_EQ(present, (std::vector<uint8_t>{1, 1, 1, 0, 1, 0}));
  EXPECT_EQ(store_->Lookup("", keys, present), 0u);
  EXPECT_EQ(present, std::vector<uint8_t>(6, 0));
}

TEST_F(BlockStoreTest, LeaseExpiresAndReleaseAfterExpiryIsNotFound) {
  ASSERT_TRUE(PutBlock(1, 1000).ok());
  auto l = store_->Acquire("tenant", Key(1), absl::Seconds(5));
  ASSERT_TRUE(l.ok());
  EXPECT_NE(l->id, 0u);
  EXPECT_EQ(store_->Stats().leased_blocks, 1u);
  clock_.Advance(absl::Seconds(6));
  EXPECT_EQ(store_->ExpireNow(), 1u);
  EXPECT_EQ(store_->Stats().leased_blocks, 0u);
  EXPECT_EQ(store_->Stats().leases_expired, 1u);
  EXPECT_EQ(store_->Release(l->id).code(), absl::StatusCode::kNotFound);
  // Lease longer than max_lease is capped.
  auto l2 = store_->Acquire("tenant", Key(1), absl::Hours(5));
  ASSERT_TRUE(l2.ok());
  EXPECT_EQ(l2->expires, clock_.Now() + absl::Minutes(10));
  EXPECT_TRUE(store_->Release(l2->id).ok());
  EXPECT_EQ(store_->Release(l2->id).code(), absl::StatusCode::kNotFound);
}

TEST_F(BlockStoreTest, DeleteWhileLeasedDefersFreeing) {
  ASSERT_TRUE(PutBlock(1, 4000).ok());
  auto l = store_->Acquire("tenant", Key(1));
  ASSERT_TRUE(l.ok());
  uint64_t allocated = store_->Stats().allocated_bytes;
  ASSERT_TRUE(store_->Delete("tenant", Key(1)).ok());
  EXPECT_FALSE(Present(1));
  EXPECT_EQ(store_->Delete("tenant", Key(1)).code(), absl::StatusCode::kNotFound);
  // Invisible but its bytes are intact and still held.
  EXPECT_EQ(store_->Stats().allocated_bytes, allocated);
  EXPECT_EQ(store_->Stats().blocks, 0u);
  auto want = Bytes(1, 4000);
  // Fill the store with other blocks: the leased bytes must not be reused.
  for (uint64_t i = 100; i < 2000; ++i) ASSERT_TRUE(PutBlock(i, 4000).ok());
  EXPECT_EQ(0, std::memcmp(l->data, want.data(), want.size()));
  // The key can be stored again while the old bytes are leased.
  ASSERT_TRUE(PutBlock(1, 4000).ok());
  ASSERT_TRUE(store_->Release(l->id).ok());
  ExpectBytes(1, 4000);
}

TEST_F(BlockStoreTest, LeasePreventsEvictionAndReuse) {
  MakeLru();
  ASSERT_TRUE(PutBlock(1, 8000).ok());
  auto l = store_->Acquire("tenant", Key(1), absl::Minutes(5));
  ASSERT_TRUE(l.ok());
  auto want = Bytes(1, 8000);
  // Several times the capacity of other blocks go through the store.
  for (uint64_t i = 100; i < 3000; ++i) ASSERT_TRUE(PutBlock(i, 8000).ok()) << i;
  EXPECT_GT(store_->Stats().evictions, 1000u);
  EXPECT_TRUE(Present(1));
  EXPECT_EQ(0, std::memcmp(l->data, want.data(), want.size()));
  ASSERT_TRUE(store_->Release(l->id).ok());
  for (uint64_t i = 3000; i < 4000; ++i) ASSERT_TRUE(PutBlock(i, 8000).ok()) << i;
  EXPECT_FALSE(Present(1));  // evictable again once released
}

// Reservation and lease ids carry a random generation (storage/grant_generations.h):
// a client cannot reach another client's grant by counting from its own ids.
TEST_F(BlockStoreTest, GrantIdsOfAReusedSlotAreNotGuessableFromTheLastOne) {
  // Sequential generations started at 1 in every slot: the first ids were 1 << 32 | slot.
  auto b = Bytes(9, 3000);
  std::set<uint64_t> generations;
  uint64_t previous = 0;
  for (int round = 0; round < 50; ++round) {
    auto res = store_->Reserve("tenant", Key(9), b.size(), Sum(b));
    ASSERT_TRUE(res.ok()) << res.status();
    generations.insert(res->id >> 32);
    if (previous != 0) {
      EXPECT_EQ(store_->Commit(previous).code(), absl::StatusCode::kNotFound);  // aborted
    }
    previous = res->id;
    ASSERT_TRUE(store_->Abort(res->id).ok());
  }
  EXPECT_GE(generations.size(), 49u);
  ASSERT_TRUE(PutBlock(9, 3000).ok());
  generations.clear();
  for (int round = 0; round < 50; ++round) {
    auto l = store_->Acquire("tenant", Key(9));
    ASSERT_TRUE(l.ok()) << l.status();
    generations.insert(l->id >> 32);
    ASSERT_TRUE(store_->Release(l->id).ok());
    EXPECT_EQ(store_->Release(l->id).code(), absl::StatusCode::kNotFound);
  }
  EXPECT_GE(generations.size(), 49u);
}

TEST_F(BlockStoreTest, TransferIntoReservationIsCheckedAndHeldUntilItEnds) {
  auto b = Bytes(7, 3000);
  auto res = store_->Reserve("tenant", Key(7), b.size(), Sum(b));
  ASSERT_TRUE(res.ok());
  const BlockLocation loc = res->location;
  // Unknown grant, a lease id used as a reservation, a range outside the block.
  EXPECT_EQ(store_->BeginTransfer(TransferAccess::kWrite, res->id + (uint64_t{1} << 32), loc).status().code(),
            absl::StatusCode::kNotFound);
  BlockLocation past = loc;
  past.offset += 1;  // one byte beyond the reservation's end
  EXPECT_EQ(store_->BeginTransfer(TransferAccess::kWrite, res->id, past).status().code(),
            absl::StatusCode::kPermissionDenied);
  BlockLocation other_region = loc;
  other_region.region += 1;
  EXPECT_EQ(store_->BeginTransfer(TransferAccess::kWrite, res->id, other_region).status().code(),
            absl::StatusCode::kPermissionDenied);
  BlockLocation empty = loc;
  empty.size = 0;
  EXPECT_EQ(store_->BeginTransfer(TransferAccess::kWrite, res->id, empty).status().code(),
            absl::StatusCode::kPermissionDenied);
  BlockLocation tail{loc.region, loc.offset + 1000, 2000};  // a sub-range is fine
  auto hold = store_->BeginTransfer(TransferAccess::kWrite, res->id, tail);
  ASSERT_TRUE(hold.ok()) << hold.status();
  // While held: no commit, no abort, no expiry, no takeover by a new Reserve.
  EXPECT_EQ(store_->Commit(res->id).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(store_->Abort(res->id).code(), absl::StatusCode::kFailedPrecondition);
  clock_.Advance(absl::Seconds(31));
  EXPECT_EQ(store_->ExpireNow(), 0u);
  EXPECT_EQ(store_->Reserve("tenant", Key(7), b.size(), Sum(b)).status().code(),
            absl::StatusCode::kAborted);
  EXPECT_EQ(store_->BeginTransfer(TransferAccess::kWrite, res->id, loc).status().code(), absl::StatusCode::kNotFound)
      << "an expired reservation takes no new transfers";
  std::memcpy(res->data, b.data(), b.size());  // the transfer lands
  store_->EndTransfer(TransferAccess::kWrite, *hold);
  // Ended after expiry: the next sweep reclaims it; it never becomes visible.
  EXPECT_EQ(store_->ExpireNow(), 1u);
  EXPECT_EQ(store_->Stats().allocated_bytes, 0u);
  EXPECT_FALSE(Present(7));

  // The normal order: transfer, end, commit.
  auto res2 = store_->Reserve("tenant", Key(8), b.size(), Sum(b));
  ASSERT_TRUE(res2.ok());
  auto hold2 = store_->BeginTransfer(TransferAccess::kWrite, res2->id, res2->location);
  ASSERT_TRUE(hold2.ok());
  std::memcpy(res2->data, b.data(), b.size());
  store_->EndTransfer(TransferAccess::kWrite, *hold2);
  ASSERT_TRUE(store_->Commit(res2->id).ok());
  EXPECT_EQ(store_->BeginTransfer(TransferAccess::kWrite, res2->id, res2->location).status().code(),
            absl::StatusCode::kNotFound)
      << "a committed reservation takes no more writes";
}

TEST_F(BlockStoreTest, TransferOutOfLeaseKeepsBytesAfterTheLeaseEnds) {
  MakeLru();
  ASSERT_TRUE(PutBlock(1, 8000).ok());
  auto l = store_->Acquire("tenant", Key(1), absl::Seconds(5));
  ASSERT_TRUE(l.ok());
  BlockLocation wrong = l->location;
  wrong.size += 1;
  EXPECT_EQ(store_->BeginTransfer(TransferAccess::kRead, l->id, wrong).status().code(),
            absl::StatusCode::kPermissionDenied);
  EXPECT_EQ(store_->BeginTransfer(TransferAccess::kRead, l->id ^ (uint64_t{1} << 40), l->location).status().code(),
            absl::StatusCode::kNotFound);
  auto hold = store_->BeginTransfer(TransferAccess::kRead, l->id, l->location);
  ASSERT_TRUE(hold.ok()) << hold.status();
  // The lease ends and the block is deleted while the transport still reads.
  clock_.Advance(absl::Seconds(6));
  EXPECT_EQ(store_->ExpireNow(), 1u);
  ASSERT_TRUE(store_->Delete("tenant", Key(1)).ok());
  EXPECT_EQ(store_->BeginTransfer(TransferAccess::kRead, l->id, l->location).status().code(),
            absl::StatusCode::kNotFound);
  auto want = Bytes(1, 8000);
  for (uint64_t i = 100; i < 3000; ++i) ASSERT_TRUE(PutBlock(i, 8000).ok()) << i;
  EXPECT_EQ(0, std::memcmp(l->data, want.data(), want.size())) << "held bytes were reused";
  EXPECT_EQ(store_->Stats().leased_blocks, 1u);
  const uint64_t allocated = store_->Stats().allocated_bytes;
  store_->EndTransfer(TransferAccess::kRead, *hold);
  EXPECT_EQ(store_->Stats().leased_blocks, 0u);
  EXPECT_LT(store_->Stats().allocated_bytes, allocated) << "the deleted block's chunk is freed";
}

TEST_F(BlockStoreTest, PinsSurvivePressureWithinQuota) {
  MakeLru();
  PutOptions pin;
  pin.pin = true;
  // Quota: half of 4 MiB = 2 MiB.
  for (uint64_t i = 0; i < 100; ++i) ASSERT_TRUE(PutBlock(i, 16000, "tenant", pin).ok()) << i;
  EXPECT_EQ(store_->Stats().pinned_blocks, 100u);
  EXPECT_EQ(PutBlock(500, 16000 * 32, "tenant", pin).code(), absl::StatusCode::kInvalidArgument);
  uint64_t extra = 100;
  for (; extra < 140; ++extra) {
    absl::Status s = PutBlock(extra, 16000, "tenant", pin);
    if (!s.ok()) {
      EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
      break;
    }
  }
  EXPECT_LT(extra, 140u);
  // The quota counts chunks (16 KiB for a 16000-byte block), not block bytes.
  const uint64_t pinned_chunks = store_->Stats().pinned_blocks * 16384;
  EXPECT_LE(pinned_chunks, 2ull << 20);
  EXPECT_GT(pinned_chunks, (2ull << 20) - 16384);
  for (uint64_t i = 1000; i < 2000; ++i) ASSERT_TRUE(PutBlock(i, 16000).ok());
  for (uint64_t i = 0; i < 100; ++i) EXPECT_TRUE(Present(i)) << i;
  // Pin over quota refused (and counted: the pinned put above, this Pin); unpin makes evictable.
  EXPECT_EQ(store_->Pin("tenant", Key(1999), true).code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(store_->Stats().rejected_pin_quota, 2u);
  for (uint64_t i = 0; i < extra; ++i) ASSERT_TRUE(store_->Pin("tenant", Key(i), false).ok());
  EXPECT_EQ(store_->Stats().pinned_blocks, 0u);
  EXPECT_EQ(store_->Stats().pinned_bytes, 0u);
  EXPECT_TRUE(store_->Pin("tenant", Key(1999), true).ok());
  for (uint64_t i = 2000; i < 3000; ++i) ASSERT_TRUE(PutBlock(i, 16000).ok());
  EXPECT_TRUE(Present(1999));
  int left = 0;
  for (uint64_t i = 0; i < 100; ++i) left += Present(i) ? 1 : 0;
  EXPECT_LT(left, 100);
}

// Tiny blocks are charged the chunk they take (min_block_bytes at least): 1-byte
// blocks pinned 100% of a tier that counted them as 0.02%, and passed namespace quotas.
TEST_F(BlockStoreTest, TinyBlocksAreChargedTheChunkTheyTake) {
  BlockStoreConfig c = SmallConfig();
  c.namespace_quota_bytes = c.max_block_bytes;
  Make(c);
  const uint64_t chunk = c.min_block_bytes;
  PutOptions pin;
  pin.pin = true;
  uint64_t pinned = 0;
  for (uint64_t i = 0; i < 4 * c.capacity_bytes / chunk; ++i) {
    if (!PutBlock(i, 1, absl::StrCat("t", i % 1024), pin).ok()) break;
    ++pinned;
  }
  EXPECT_LE(pinned * chunk, static_cast<uint64_t>(c.capacity_bytes * c.max_pinned_fraction));
  EXPECT_GT(store_->Stats().rejected_pin_quota, 0u);
  // A namespace's quota fills with max_block_bytes / chunk tiny blocks, not max_block_bytes of them.
  uint64_t held = 0;
  for (uint64_t i = 0; i < c.max_block_bytes; ++i) {
    if (!PutBlock(100000 + i, 1, "tiny").ok()) break;
    ++held;
  }
  EXPECT_EQ(held, c.max_block_bytes / chunk);
  EXPECT_EQ(store_->NamespaceUsageOf("tiny").held_bytes, c.max_block_bytes);
}

// With quotas, one namespace cannot take every lease of the tier (one tenant
// leasing a block 4096 times per call held all 262,144 for 10 minutes).
TEST_F(BlockStoreTest, ANamespaceWithAQuotaHoldsOnlyItsShareOfTheLeases) {
  BlockStoreConfig c = SmallConfig();  // max_leases 4096
  c.namespace_quota_bytes = c.max_block_bytes;
  Make(c);
  ASSERT_TRUE(PutBlock(1, 100, "greedy").ok());
  ASSERT_TRUE(PutBlock(2, 100, "other").ok());
  std::vector<uint64_t> held;
  absl::StatusOr<Lease> l;
  while ((l = store_->Acquire("greedy", Key(1), absl::Seconds(600))).ok()) held.push_back(l->id);
  EXPECT_EQ(held.size(), 1024u);  // its share: max(max_leases x quota / capacity, 1024)
  EXPECT_EQ(l.status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_THAT(std::string(l.status().message()), ::testing::HasSubstr("its share of max_leases"));
  EXPECT_TRUE(store_->Acquire("other", Key(2), absl::Seconds(1)).ok());  // others still read
  ASSERT_TRUE(store_->Release(held.back()).ok());
  EXPECT_TRUE(store_->Acquire("greedy", Key(1), absl::Seconds(1)).ok());
  // Leases past their time stop counting at once, swept or not.
  clock_.Advance(absl::Seconds(601));
  EXPECT_TRUE(store_->Acquire("greedy", Key(1), absl::Seconds(1)).ok());
}

TEST_F(BlockStoreTest, NamespaceQuotaCapsEachNamespaceAndFreesAsItsBlocksLeave) {
  BlockStoreConfig c = SmallConfig();
  c.eviction.name = "lru";
  c.namespace_quota_bytes = 65536;  // 4 blocks of 16000 bytes: the quota counts their 16 KiB chunks
  Make(c);
  for (uint64_t i = 0; i < 4; ++i) ASSERT_TRUE(PutBlock(i, 16000, "a").ok()) << i;
  const absl::Status over = PutBlock(4, 16000, "a");
  EXPECT_EQ(over.code(), absl::StatusCode::kResourceExhausted) << over;
  EXPECT_THAT(std::string(over.message()), ::testing::HasSubstr("namespace 'a' holds 65536 bytes"));
  EXPECT_FALSE(Present(4, "a"));
  EXPECT_EQ(store_->Stats().rejected_quota, 1u);
  // Other namespaces have quotas of their own; what "a" stored is intact.
  for (uint64_t i = 0; i < 4; ++i) ASSERT_TRUE(PutBlock(100 + i, 16000, "b").ok()) << i;
  for (uint64_t i = 0; i < 4; ++i) ExpectBytes(i, 16000, "a");
  // A reservation counts until it is aborted; a smaller block fits after a delete.
  ASSERT_TRUE(store_->Delete("a", Key(0)).ok());
  auto b = Bytes(5, 16000);
  auto r = store_->Reserve("a", Key(5), b.size(), Sum(b));
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(PutBlock(6, 100, "a").code(), absl::StatusCode::kResourceExhausted);
  ASSERT_TRUE(store_->Abort(r->id).ok());
  ASSERT_TRUE(PutBlock(6, 100, "a").ok());
  // Evicted blocks free the quota too: fill the tier from many namespaces.
  for (uint64_t i = 0; i < 400; ++i) ASSERT_TRUE(PutBlock(1000 + i, 16000, absl::StrCat("n", i % 100)).ok()) << i;
  EXPECT_GT(store_->Stats().evictions, 0u);
  int a_left = 0;
  for (uint64_t i = 1; i < 4; ++i) a_left += Present(i, "a") ? 1 : 0;
  EXPECT_EQ(a_left, 0) << "LRU evicted a's old blocks";
  for (uint64_t i = 0; i < 4; ++i) EXPECT_TRUE(PutBlock(200 + i, 16000, "a").ok()) << i;
  // Below one block of the largest size, a quota is a configuration error.
  c.namespace_quota_bytes = c.max_block_bytes - 1;
  EXPECT_EQ(c.Validate().code(), absl::StatusCode::kInvalidArgument);
}

// A deleted (or evicted) block that is still leased keeps its bytes until the last
// lease ends, and must keep counting against its namespace's quota until then: it was
// credited at once, so Put, Acquire, Delete, repeat let one namespace hold its quota
// plus its whole lease share of deleted blocks, and fill the tier for everyone else.
TEST_F(BlockStoreTest, LeasedBlocksThatLeaveStillCountAgainstTheQuota) {
  BlockStoreConfig c = SmallConfig();
  c.eviction.name = "lru";
  c.namespace_quota_bytes = 32768;  // two 16 KiB chunks
  Make(c);
  std::vector<uint64_t> leases;
  for (uint64_t i = 0; i < 2; ++i) {
    ASSERT_TRUE(PutBlock(i, 16000, "a").ok()) << i;
    absl::StatusOr<Lease> l = store_->Acquire("a", Key(i), absl::Seconds(600));
    ASSERT_TRUE(l.ok()) << l.status();
    leases.push_back(l->id);
    ASSERT_TRUE(store_->Delete("a", Key(i)).ok());
    EXPECT_EQ(store_->NamespaceUsageOf("a").held_bytes, (i + 1) * 16384) << i;
  }
  const absl::Status over = PutBlock(2, 16000, "a");
  EXPECT_EQ(over.code(), absl::StatusCode::kResourceExhausted) << over;
  // Other namespaces are unaffected; the leased bytes are intact.
  ASSERT_TRUE(PutBlock(100, 16000, "b").ok());
  // The last lease of a deleted block frees its quota, and expiry does too.
  ASSERT_TRUE(store_->Release(leases[0]).ok());
  EXPECT_EQ(store_->NamespaceUsageOf("a").held_bytes, 16384u);
  ASSERT_TRUE(PutBlock(2, 16000, "a").ok());
  EXPECT_EQ(PutBlock(3, 16000, "a").code(), absl::StatusCode::kResourceExhausted);
  clock_.Advance(absl::Seconds(601));
  store_->ExpireNow();
  EXPECT_EQ(store_->NamespaceUsageOf("a").held_bytes, 16384u);  // block 2 only
  ASSERT_TRUE(PutBlock(3, 16000, "a").ok());
  EXPECT_EQ(store_->Stats().leased_blocks, 0u);
}

// A call about to be refused sweeps expired leases first, but not every such call:
// a namespace at its lease share sending 4096-key Gets made 4096 sweeps of every
// live lease in the tier, each under the store's lock. Now at most one per
// millisecond of the store's clock; time passing still lets the next one through.
TEST_F(BlockStoreTest, RefusedCallsSweepExpiredLeasesAtMostOncePerMillisecond) {
  BlockStoreConfig c = SmallConfig();  // max_leases 4096
  c.namespace_quota_bytes = c.max_block_bytes;
  Make(c);
  ASSERT_TRUE(PutBlock(1, 100, "greedy").ok());
  ASSERT_TRUE(PutBlock(2, 100, "other").ok());
  for (int i = 0; i < 1000; ++i) ASSERT_TRUE(store_->Acquire("other", Key(2), absl::Seconds(600)).ok());
  size_t held = 0;
  while (store_->Acquire("greedy", Key(1), absl::Seconds(5)).ok()) ++held;
  ASSERT_EQ(held, 1024u);
  const uint64_t before = store_->Stats().demand_sweeps;
  for (int i = 0; i < 4096; ++i) {
    ASSERT_EQ(store_->Acquire("greedy", Key(1), absl::Seconds(5)).status().code(),
              absl::StatusCode::kResourceExhausted);
  }
  EXPECT_LE(store_->Stats().demand_sweeps - before, 1u);
  // Once its leases expire, the next call sweeps them and is served.
  clock_.Advance(absl::Seconds(6));
  EXPECT_TRUE(store_->Acquire("greedy", Key(1), absl::Seconds(5)).ok());
  EXPECT_EQ(store_->Stats().leases_expired, 1024u);
}

TEST_F(BlockStoreTest, PerNamespaceQuotasOverrideTheDefault) {
  BlockStoreConfig c = SmallConfig();
  c.eviction.name = "lru";
  c.namespace_quota_bytes = 32768;  // 2 blocks of 16000 bytes (16 KiB chunks) for everyone else
  c.namespace_quotas = {{"big", 98304}, {"free", 0}};
  ASSERT_TRUE(c.Validate().ok()) << c.Validate();
  Make(c);
  for (uint64_t i = 0; i < 6; ++i) ASSERT_TRUE(PutBlock(i, 16000, "big").ok()) << i;
  absl::Status over = PutBlock(6, 16000, "big");
  EXPECT_EQ(over.code(), absl::StatusCode::kResourceExhausted) << over;
  EXPECT_THAT(std::string(over.message()), ::testing::HasSubstr("quota of 98304 bytes (namespace_quotas"));
  for (uint64_t i = 0; i < 2; ++i) ASSERT_TRUE(PutBlock(100 + i, 16000, "small").ok()) << i;
  over = PutBlock(102, 16000, "small");
  EXPECT_EQ(over.code(), absl::StatusCode::kResourceExhausted) << over;
  EXPECT_THAT(std::string(over.message()), ::testing::HasSubstr("quota of 32768 bytes (namespace_quota_bytes"));
  // "free" is exempt: it may hold more than either quota.
  for (uint64_t i = 0; i < 10; ++i) ASSERT_TRUE(PutBlock(200 + i, 16000, "free").ok()) << i;
  EXPECT_EQ(store_->NamespaceUsageOf("big").quota_bytes, 98304u);
  EXPECT_EQ(store_->NamespaceUsageOf("big").held_bytes, 98304u);
  EXPECT_EQ(store_->NamespaceUsageOf("small").quota_bytes, 32768u);
  EXPECT_EQ(store_->NamespaceUsageOf("small").held_bytes, 32768u);
  EXPECT_EQ(store_->NamespaceUsageOf("free").quota_bytes, 0u);
  EXPECT_EQ(store_->NamespaceUsageOf("free").held_bytes, 163840u);
  EXPECT_EQ(store_->NamespaceUsageOf("never-seen").held_bytes, 0u);
  EXPECT_EQ(store_->Stats().rejected_quota, 2u);
  for (uint64_t i = 0; i < 6; ++i) ExpectBytes(i, 16000, "big");
  // Deleting frees the tenant's own quota.
  ASSERT_TRUE(store_->Delete("big", Key(0)).ok());
  EXPECT_TRUE(PutBlock(6, 16000, "big").ok());

  // Without a default, only the listed namespaces are capped.
  c.namespace_quota_bytes = 0;
  c.namespace_quotas = {{"capped", 16384}};
  Make(c);
  ASSERT_TRUE(PutBlock(1, 16000, "capped").ok());
  EXPECT_EQ(PutBlock(2, 16000, "capped").code(), absl::StatusCode::kResourceExhausted);
  for (uint64_t i = 0; i < 10; ++i) ASSERT_TRUE(PutBlock(300 + i, 16000, "other").ok()) << i;

  // Bad lists are configuration errors that name the entry.
  c.namespace_quotas = {{"a", c.max_block_bytes - 1}};
  EXPECT_THAT(std::string(c.Validate().message()), ::testing::HasSubstr("'a' gets"));
  c.namespace_quotas = {{"a", 0}, {"a", 0}};
  EXPECT_THAT(std::string(c.Validate().message()), ::testing::HasSubstr("'a' is listed twice"));
  c.namespace_quotas = {{"", 0}};
  EXPECT_THAT(std::string(c.Validate().message()), ::testing::HasSubstr("namespace_quotas[0]"));
}

TEST_F(BlockStoreTest, GrantsNameTheirNamespaceWhileTheyLive) {
  auto b = Bytes(1, 1000);
  auto r = store_->Reserve("a", Key(1), b.size(), Sum(b));
  ASSERT_TRUE(r.ok());
  auto tag = store_->GrantNamespaceTag(TransferAccess::kWrite, r->id);
  ASSERT_TRUE(tag.ok()) << tag.status();
  EXPECT_EQ(*tag, BlockStore::NamespaceTag("a"));
  EXPECT_NE(*tag, BlockStore::NamespaceTag("b"));
  EXPECT_EQ(store_->GrantNamespaceTag(TransferAccess::kRead, r->id).status().code(), absl::StatusCode::kNotFound);
  std::memcpy(r->data, b.data(), b.size());
  ASSERT_TRUE(store_->Commit(r->id).ok());
  EXPECT_EQ(store_->GrantNamespaceTag(TransferAccess::kWrite, r->id).status().code(), absl::StatusCode::kNotFound);
  auto l = store_->Acquire("a", Key(1));
  ASSERT_TRUE(l.ok());
  tag = store_->GrantNamespaceTag(TransferAccess::kRead, l->id);
  ASSERT_TRUE(tag.ok());
  EXPECT_EQ(*tag, BlockStore::NamespaceTag("a"));
  ASSERT_TRUE(store_->Release(l->id).ok());
  EXPECT_EQ(store_->GrantNamespaceTag(TransferAccess::kRead, l->id).status().code(), absl::StatusCode::kNotFound);
}

TEST_F(BlockStoreTest, WatermarksEvictDownToLowAndKeepServing) {
  const uint64_t cap = 4ull << 20;
  uint64_t max_alloc = 0;
  for (uint64_t i = 0; i < 2000; ++i) {
    ASSERT_TRUE(PutBlock(i, 4000).ok()) << i;
    auto st = store_->Stats();
    max_alloc = std::max(max_alloc, st.allocated_bytes);
    ASSERT_LE(st.allocated_bytes, static_cast<uint64_t>(BlockStoreConfig{}.high_watermark * cap));
  }
  EXPECT_GT(max_alloc, static_cast<uint64_t>(BlockStoreConfig{}.low_watermark * cap));
  auto st = store_->Stats();
  EXPECT_GT(st.evictions, 0u);
  // The most recent blocks are served.
  for (uint64_t i = 1990; i < 2000; ++i) ExpectBytes(i, 4000);
}

TEST_F(BlockStoreTest, FullOfPinnedAndLeasedRejectsWithResourceExhausted) {
  BlockStoreConfig c = SmallConfig();
  c.max_pinned_fraction = 1.0;
  Make(c);
  PutOptions pin;
  pin.pin = true;
  uint64_t i = 0;
  absl::Status s;
  while ((s = PutBlock(i, 16000, "tenant", pin)).ok()) ++i;
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted);
  // At max_pinned_fraction 1.0 the pinned quota is the tier: full either way.
  EXPECT_GT(store_->Stats().rejected_full + store_->Stats().rejected_pin_quota, 0u);
  for (uint64_t j = 0; j < i; ++j) ASSERT_TRUE(Present(j));
  ExpectBytes(0, 16000);
}

// A block of a new size needs a whole slab. When every slab holds a leased block of
// another size, the put fails, and it must fail without evicting anything: it used to
// evict every evictable block of the tier (each freed a chunk of the wrong size and
// no slab emptied) and then fail anyway.
TEST_F(BlockStoreTest, NewSizeWithEverySlabHeldEvictsNothingAndFails) {
  BlockStoreConfig c = SmallConfig();  // 64 slabs of 64 KiB
  c.high_watermark = c.low_watermark = 1.0;  // 1024 blocks of 4 KiB fill every slab, none evicted
  Make(c);
  uint64_t n = 0;
  for (; n < 1024; ++n) ASSERT_TRUE(PutBlock(n, 4000).ok()) << n;  // 4 KiB chunks, 16 per slab
  // Group the blocks still present by slab; lease one per slab, delete half the others.
  const uint64_t slab = c.slab_bytes, per_region = c.region_bytes / slab;
  std::map<uint64_t, std::vector<uint64_t>> by_slab;
  for (uint64_t i = 0; i < n; ++i) {
    auto l = store_->Acquire("tenant", Key(i));
    ASSERT_TRUE(l.ok()) << i << ": " << l.status();
    by_slab[l->location.region * per_region + l->location.offset / slab].push_back(i);
    ASSERT_TRUE(store_->Release(l->id).ok());
  }
  ASSERT_EQ(by_slab.size(), 64u) << "every slab should hold 4 KiB blocks";
  std::vector<uint64_t> leases, kept;
  for (auto& [s, blocks] : by_slab) {
    auto l = store_->Acquire("tenant", Key(blocks[0]), absl::Minutes(5));
    ASSERT_TRUE(l.ok()) << l.status();
    leases.push_back(l->id);
    for (size_t j = 1; j < blocks.size(); ++j) {
      if (j % 2 == 0) {
        ASSERT_TRUE(store_->Delete("tenant", Key(blocks[j])).ok());
      } else {
        kept.push_back(blocks[j]);
      }
    }
  }
  const uint64_t evictions = store_->Stats().evictions;
  absl::Status s = PutBlock(100000, 16000);
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  EXPECT_THAT(std::string(s.message()), ::testing::HasSubstr("no slab it could free"));
  EXPECT_EQ(store_->Stats().evictions, evictions);
  for (uint64_t i : kept) ASSERT_TRUE(Present(i)) << i;
  // With the leases gone one slab is emptied for it: at most its 16 blocks leave.
  for (uint64_t id : leases) ASSERT_TRUE(store_->Release(id).ok());
  ASSERT_TRUE(PutBlock(100000, 16000).ok());
  EXPECT_LE(store_->Stats().evictions - evictions, 16u);
  ExpectBytes(100000, 16000);
}

// The same with the watermarks on: a Reserve that crossed the high watermark
// evicted down to the low one first, and only then found no chunk it could get,
// failing with hundreds of blocks gone for nothing.
TEST_F(BlockStoreTest, AReserveThatCannotGetAChunkEvictsNothingEvenPastTheHighWatermark) {
  BlockStoreConfig c = SmallConfig();  // 64 slabs of 64 KiB: 1024 chunks of 4 KiB
  c.high_watermark = 0.99;             // 1013 chunks
  c.low_watermark = 0.5;
  Make(c);
  const uint64_t n = 1010;  // 4 KiB chunks in every slab, just below the high watermark
  for (uint64_t i = 0; i < n; ++i) ASSERT_TRUE(PutBlock(i, 4000).ok()) << i;
  ASSERT_EQ(store_->Stats().evictions, 0u);
  const uint64_t slab = c.slab_bytes, per_region = c.region_bytes / slab;
  std::map<uint64_t, uint64_t> one_per_slab;
  for (uint64_t i = 0; i < n; ++i) {
    auto l = store_->Acquire("tenant", Key(i));
    ASSERT_TRUE(l.ok()) << i << ": " << l.status();
    one_per_slab.emplace(l->location.region * per_region + l->location.offset / slab, i);
    ASSERT_TRUE(store_->Release(l->id).ok());
  }
  ASSERT_EQ(one_per_slab.size(), 64u);
  std::vector<uint64_t> leases;
  for (const auto& [s, i] : one_per_slab) {
    auto l = store_->Acquire("tenant", Key(i), absl::Minutes(5));
    ASSERT_TRUE(l.ok()) << l.status();
    leases.push_back(l->id);
  }
  absl::Status s = PutBlock(100000, 16000);  // a 16 KiB chunk: past the high watermark
  EXPECT_EQ(s.code(), absl::StatusCode::kResourceExhausted) << s;
  EXPECT_THAT(std::string(s.message()), ::testing::HasSubstr("no slab it could free"));
  EXPECT_EQ(store_->Stats().evictions, 0u);
  for (uint64_t i = 0; i < n; ++i) ASSERT_TRUE(Present(i)) << i;
  // Once a slab can be emptied, the watermarks apply as before.
  for (uint64_t id : leases) ASSERT_TRUE(store_->Release(id).ok());
  ASSERT_TRUE(PutBlock(100000, 16000).ok());
  EXPECT_GT(store_->Stats().evictions, 0u);
  ExpectBytes(100000, 16000);
}

// A block of a new size empties the coldest slab that can be emptied. The blocks of
// colder slabs that cannot be (a lease in them) are passed over, and must keep
// their age: they used to be treated as pinned, moved to the young end of the LRU
// list, and so outlived blocks that were used after them.
TEST_F(BlockStoreTest, SlabSearchLeavesPassedBlocksTheirAge) {
  BlockStoreConfig c = SmallConfig();  // 64 slabs of 64 KiB, 16 blocks of 4 KiB each
  c.eviction.name = "lru";
  c.eviction.prefix_aware = false;
  c.high_watermark = c.low_watermark = 1.0;
  Make(c);
  for (uint64_t i = 0; i < 1024; ++i) ASSERT_TRUE(PutBlock(i, 4000).ok()) << i;
  // Which slab holds which blocks (acquiring in insertion order keeps LRU order).
  const uint64_t slab = c.slab_bytes, per_region = c.region_bytes / slab;
  std::map<uint64_t, std::vector<uint64_t>> by_slab;
  for (uint64_t i = 0; i < 1024; ++i) {
    auto l = store_->Acquire("tenant", Key(i));
    ASSERT_TRUE(l.ok()) << i << ": " << l.status();
    by_slab[l->location.region * per_region + l->location.offset / slab].push_back(i);
    ASSERT_TRUE(store_->Release(l->id).ok());
  }
  ASSERT_EQ(by_slab.size(), 64u);
  std::vector<std::vector<uint64_t>> slabs;  // by their oldest block
  for (auto& [s, blocks] : by_slab) slabs.push_back(blocks);
  std::sort(slabs.begin(), slabs.end());
  const std::vector<uint64_t>& a = slabs[0];  // the coldest slab: held by a lease
  const std::vector<uint64_t>& third = slabs[2];
  ASSERT_EQ(a.size(), 16u);
  auto lease = store_->Acquire("tenant", Key(a[1]), absl::Minutes(5));
  ASSERT_TRUE(lease.ok()) << lease.status();

  // A 16 KiB block: room is made first (the 4 coldest free blocks, in `a`), then the
  // next slab (the second coldest) is emptied for the new class.
  ASSERT_TRUE(PutBlock(100000, 16000).ok());
  ASSERT_TRUE(store_->Release(lease->id).ok());
  // Four 4 KiB blocks take the chunks freed in `a`; the fifth must evict the coldest
  // block left, the rest of `a`, not the younger blocks of the third slab.
  for (uint64_t i = 0; i < 5; ++i) ASSERT_TRUE(PutBlock(200000 + i, 4000).ok()) << i;
  EXPECT_FALSE(Present(a[5])) << "the coldest block should have been evicted";
  EXPECT_TRUE(Present(third[0])) << "a younger block was evicted before the colder ones of a passed slab";
  ExpectBytes(100000, 16000);
}

TEST_F(BlockStoreTest, MixedSizesReassignSlabs) {
  // Fill with small blocks, then switch to large ones: slabs change class.
  for (uint64_t i = 0; i < 4000; ++i) ASSERT_TRUE(PutBlock(i, 700).ok()) << i;
  for (uint64_t i = 10000; i < 10400; ++i) ASSERT_TRUE(PutBlock(i, 15000).ok()) << i;
  for (uint64_t i = 10390; i < 10400; ++i) ExpectBytes(i, 15000);
  for (uint64_t i = 20000; i < 24000; ++i) ASSERT_TRUE(PutBlock(i, 300).ok()) << i;
  for (uint64_t i = 23990; i < 24000; ++i) ExpectBytes(i, 300);
  EXPECT_LE(store_->Stats().allocated_bytes, 4ull << 20);
}

TEST_F(BlockStoreTest, PolicyNames) {
  EXPECT_EQ(store_->PolicyName(), "s3fifo");
  BlockStoreConfig c = SmallConfig();
  c.eviction.name = "lru";
  c.eviction.prefix_aware = false;
  Make(c);
  EXPECT_EQ(store_->PolicyName(), "lru");
  EXPECT_EQ(store_->PolicyStateNow().active, "lru");
  EXPECT_EQ(store_->PolicyStateNow().switches, 0u);
  c.eviction.name = "duel";
  Make(c);
  EXPECT_EQ(store_->PolicyName(), "duel");
  EXPECT_EQ(store_->PolicyStateNow().active, "lru");  // duel starts by following LRU
  for (uint64_t i = 1; i <= 200; ++i) ASSERT_TRUE(PutBlock(i, 4096).ok()) << i;
  EXPECT_EQ(store_->PolicyStateNow().active, "lru");  // within its warm-up
}

TEST_F(BlockStoreTest, PrefixAwareEvictsLeavesFirst) {
  BlockStoreConfig c = SmallConfig();
  c.eviction.name = "lru";
  c.eviction.prefix_aware = true;
  c.capacity_bytes = 1ull << 20;
  c.region_bytes = 1ull << 20;
  Make(c);
  // One chain of 10 blocks, then unrelated blocks that push it out.
  for (uint64_t i = 0; i < 10; ++i) {
    PutOptions o;
    BlockKey parent = Key(i - 1);
    if (i > 0) o.parent = &parent;
    ASSERT_TRUE(PutBlock(i, 8000, "tenant", o).ok());
  }
  // Block 0 is the least recently used, but it has children: the leaf goes first.
  for (uint64_t i = 100; store_->Stats().evictions == 0; ++i) ASSERT_TRUE(PutBlock(i, 8000).ok());
  // Watermark eviction took several blocks; all came off the chain's end, so
  // what is left of the chain is still a usable prefix, and no newer block went.
  uint64_t evicted = store_->Stats().evictions;
  ASSERT_GE(evicted, 1u);
  ASSERT_LT(evicted, 10u);
  for (uint64_t i = 0; i < 10; ++i) EXPECT_EQ(Present(i), i < 10 - evicted) << i;
  for (uint64_t i = 100; i < 110; ++i) EXPECT_TRUE(Present(i)) << i;
}

// A block removed because its slab was emptied for another size class was not
// chosen as cold: it leaves like a deleted one. Reported as an eviction to the
// policy, it sent its recently used parent to LRU's cold end (prefix-aware), the
// next victim; S3-FIFO remembered it in its ghost as a small-queue eviction.
TEST_F(BlockStoreTest, BlocksRemovedWithTheirSlabDoNotMakeTheirParentTheNextVictim) {
  BlockStoreConfig c = SmallConfig();  // 64 slabs of 64 KiB, 16 blocks of 4 KiB each
  c.eviction.name = "lru";
  c.eviction.prefix_aware = true;
  c.high_watermark = c.low_watermark = 1.0;
  Make(c);
  // P (0) opens the first slab, its child C (16) the second; fillers everywhere else.
  for (uint64_t i = 0; i < 1024; ++i) {
    PutOptions o;
    const BlockKey parent = Key(0);
    if (i == 16) o.parent = &parent;
    ASSERT_TRUE(PutBlock(i, 4000, "tenant", o).ok()) << i;
  }
  const uint64_t slab = c.slab_bytes, per_region = c.region_bytes / slab;
  auto slab_of = [&](uint64_t i) {
    auto l = store_->Acquire("tenant", Key(i));  // a read: P and C are recently used
    EXPECT_TRUE(l.ok()) << i << ": " << l.status();
    const uint64_t at = l->location.region * per_region + l->location.offset / slab;
    EXPECT_TRUE(store_->Release(l->id).ok());
    return at;
  };
  ASSERT_EQ(slab_of(5), slab_of(0));
  ASSERT_NE(slab_of(16), slab_of(0));
  ASSERT_EQ(slab_of(17), slab_of(16));
  // P's slab cannot be emptied (a lease), so a 16 KiB block empties C's slab, whose
  // coldest block is a filler (17); C leaves with it.
  auto lease = store_->Acquire("tenant", Key(5), absl::Minutes(5));
  ASSERT_TRUE(lease.ok()) << lease.status();
  ASSERT_TRUE(PutBlock(100000, 16000).ok());
  ASSERT_FALSE(Present(16)) << "C's slab was not the one emptied";
  ASSERT_TRUE(store_->Release(lease->id).ok());
  // Four 4 KiB blocks take the chunks freed in P's slab; the fifth evicts the coldest
  // leaf: a filler of P's slab, not P (read just now, and a leaf only since C left).
  for (uint64_t i = 0; i < 5; ++i) ASSERT_TRUE(PutBlock(200000 + i, 4000).ok()) << i;
  EXPECT_TRUE(Present(0)) << "P was evicted as the coldest leaf";
  EXPECT_FALSE(Present(6)) << "the coldest filler should have been evicted";
}

}  // namespace
}  // namespace kvhub::storage

namespace kvhub::storage {
namespace {

// With try_hugepages on a machine with no (or too few) hugetlb pages, the store
// must fall back to normal pages and every byte must be writable (no SIGBUS).
TEST(BlockStoreRegionsTest, HugepageAttemptFallsBackAndMemoryIsUsable) {
  BlockStoreConfig c = testing::SmallConfig();
  c.try_hugepages = true;
  c.region_bytes = 2ull << 20;
  auto s = BlockStore::Create(c);
  ASSERT_TRUE(s.ok()) << s.status();
  for (const Region& r : (*s)->regions()) {
    std::memset(r.base, 0xab, r.size);
    EXPECT_EQ(r.base[r.size - 1], 0xab);
  }
}

// A pod's hugetlb cgroup limit (zero unless it requests hugepages-2Mi) is checked
// at the first write, not at mmap: a MAP_HUGETLB region past it maps, then kills
// the process with SIGBUS where the node has hugepages reserved. Only regions that
// fit the limit's room may be hugetlb, and every byte stays writable.
TEST(BlockStoreRegionsTest, HugetlbRegionsStayWithinTheCgroupLimit) {
  // The fake limits below allow up to 4 MiB of hugetlb pages; the kernel enforces
  // this process's real limit, which must allow that much.
  if (const HugetlbLimit real = ReadHugetlbLimit(); real.limited && real.room < (4ull << 20)) {
    GTEST_SKIP() << "this process's hugetlb cgroup limit (" << real.source << ") leaves under 4 MiB";
  }
  const std::filesystem::path root =
      std::filesystem::path(::testing::TempDir()) / ("hugetlb_cgroup_" + std::to_string(getpid()));
  std::filesystem::remove_all(root);
  std::filesystem::create_directories(root / "cgroup/pod");
  std::ofstream(root / "self_cgroup") << "0::/pod\n";
  HostRegions::Options o;
  o.try_hugepages = true;
  o.cgroup.proc_self_cgroup = (root / "self_cgroup").string();
  o.cgroup.cgroup_root = (root / "cgroup").string();
  const std::vector<uint64_t> sizes = {2ull << 20, 2ull << 20, 2ull << 20};
  for (uint64_t limit : {0ull, 2ull << 20, 4ull << 20}) {
    std::ofstream(root / "cgroup/pod/hugetlb.2MB.max") << limit << "\n";
    std::ofstream(root / "cgroup/pod/hugetlb.2MB.current") << "0\n";
    auto r = HostRegions::Map(sizes, o);
    ASSERT_TRUE(r.ok()) << r.status();
    uint64_t huge = 0;
    for (const Region& region : (*r)->regions()) {
      if (region.hugepages) huge += region.size;
      std::memset(region.base, 0x5a, region.size);
      EXPECT_EQ(region.base[region.size - 1], 0x5a);
    }
    EXPECT_LE(huge, limit) << "hugetlb regions past the cgroup limit of " << limit;
  }
  // Pages the cgroup already holds count against the limit.
  std::ofstream(root / "cgroup/pod/hugetlb.2MB.max") << (4ull << 20) << "\n";
  std::ofstream(root / "cgroup/pod/hugetlb.2MB.current") << (4ull << 20) << "\n";
  auto r = HostRegions::Map(sizes, o);
  ASSERT_TRUE(r.ok()) << r.status();
  for (const Region& region : (*r)->regions()) EXPECT_FALSE(region.hugepages);
  std::filesystem::remove_all(root);
}

}  // namespace
}  // namespace kvhub::storage

namespace kvhub::storage {
namespace {

// A RegionProvider's memory becomes the store's regions (blocks live in it), at
// the sizes the store asked for; a provider that gives too little or fails is
// refused with its error.
TEST(BlockStoreRegionProviderTest, BlocksLiveInTheProvidedMemory) {
  BlockStoreConfig c = testing::SmallConfig();
  std::vector<void*> owned;
  std::vector<uint64_t> asked;
  RegionProvider provider = [&](std::span<const uint64_t> sizes) -> absl::StatusOr<std::vector<Region>> {
    std::vector<Region> out;
    for (uint64_t n : sizes) {
      asked.push_back(n);
      void* p = std::aligned_alloc(4096, n + 4096);
      std::memset(p, 0, n + 4096);  // provided regions are zero-filled (RegionProvider)
      owned.push_back(p);
      out.push_back(Region{static_cast<uint8_t*>(p), n + 4096, false});
    }
    return out;
  };
  {
    auto s = BlockStore::Create(c, nullptr, provider);
    ASSERT_TRUE(s.ok()) << s.status();
    ASSERT_EQ((*s)->regions().size(), asked.size());
    uint64_t total = 0;
    for (size_t i = 0; i < asked.size(); ++i) {
      EXPECT_EQ((*s)->regions()[i].base, owned[i]);
      EXPECT_EQ((*s)->regions()[i].size, asked[i]) << "the store uses what it asked for";
      total += asked[i];
    }
    EXPECT_GE(total, c.capacity_bytes);
    auto b = testing::Bytes(1, 5000);
    ASSERT_TRUE((*s)->Put("t", testing::Key(1), b, testing::Sum(b)).ok());
    auto lease = (*s)->Acquire("t", testing::Key(1));
    ASSERT_TRUE(lease.ok()) << lease.status();
    bool inside = false;
    for (void* p : owned) {
      const uint8_t* q = static_cast<const uint8_t*>(p);
      inside |= lease->data >= q && lease->data < q + asked[0] + 4096;
    }
    EXPECT_TRUE(inside) << "the block is not in the provided memory";
    EXPECT_EQ(std::memcmp(lease->data, b.data(), b.size()), 0);
    ASSERT_TRUE((*s)->Release(lease->id).ok());
  }
  for (void* p : owned) std::free(p);

  RegionProvider short_one = [](std::span<const uint64_t> sizes) -> absl::StatusOr<std::vector<Region>> {
    static uint8_t page[4096] __attribute__((aligned(4096)));
    return std::vector<Region>(sizes.size(), Region{page, sizeof(page), false});
  };
  auto s = BlockStore::Create(c, nullptr, short_one);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kInvalidArgument) << s.status();
  RegionProvider failing = [](std::span<const uint64_t>) -> absl::StatusOr<std::vector<Region>> {
    return absl::ResourceExhaustedError("no shared memory");
  };
  s = BlockStore::Create(c, nullptr, failing);
  EXPECT_EQ(s.status().code(), absl::StatusCode::kResourceExhausted) << s.status();
}

}  // namespace
}  // namespace kvhub::storage
