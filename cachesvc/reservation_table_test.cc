// ReservationTable against a real BlockStore: a PutData write lands only in memory
// the store still gives to that reservation.
#include "cachesvc/reservation_table.h"

#include <atomic>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "common/hash.h"
#include "gtest/gtest.h"

namespace kvhub::cachesvc {
namespace {

storage::BlockStoreConfig Config() {
  storage::BlockStoreConfig c;
  c.capacity_bytes = 64ull << 20;
  c.region_bytes = 64ull << 20;
  c.max_block_bytes = 16ull << 20;
  c.try_hugepages = false;
  c.max_leases = 64;
  return c;
}

BlockKey Key(uint64_t i) { return BlockKey{i * 0x9e3779b97f4a7c15ull + 1, i}; }

class ReservationTableTest : public ::testing::Test {
 protected:
  void SetUp() override {
    auto s = storage::BlockStore::Create(Config(), &clock_);
    ASSERT_TRUE(s.ok()) << s.status();
    store_ = *std::move(s);
    table_ = std::make_unique<ReservationTable>(store_.get(), &clock_, absl::Milliseconds(100));
  }
  storage::Reservation Reserve(uint64_t i, const std::string& bytes) {
    auto r = store_->Reserve("ns", Key(i), bytes.size(), Xxh3_64(bytes.data(), bytes.size()), {});
    EXPECT_TRUE(r.ok()) << r.status();
    if (!r.ok()) return {};
    table_->Add(*r, 0);
    return *r;
  }

  ManualClock clock_;
  std::unique_ptr<storage::BlockStore> store_;
  std::unique_ptr<ReservationTable> table_;
};

// The store may end a reservation on paths that do not go through the table (its own
// expiry when it needs room, a Reserve of the same key after expiry). The table's entry
// is then stale: a write must be refused, not copied into a chunk the store freed
// (whose first bytes hold the allocator's free list).
TEST_F(ReservationTableTest, WriteIntoAReservationTheStoreEndedIsRefused) {
  const std::string bytes(1 << 20, 'a');
  storage::Reservation r = Reserve(1, bytes);
  ASSERT_TRUE(store_->Abort(r.id).ok());  // behind the table's back
  absl::Status s = table_->Write(r.id, 0, bytes);
  EXPECT_TRUE(absl::IsNotFound(s)) << s;
  // The freed chunk is whole: the next reservation of that size gets it and commits.
  const std::string other(1 << 20, 'b');
  storage::Reservation r2 = Reserve(2, other);
  ASSERT_TRUE(table_->Write(r2.id, 0, other).ok());
  ReservationTable::Entry e;
  ASSERT_TRUE(table_->Take(r2.id, &e).ok());
  ASSERT_TRUE(store_->Commit(r2.id).ok());
  table_->Finish(r2.id);
  EXPECT_TRUE(absl::IsNotFound(table_->Take(r2.id, &e)));
}

// While one PutCommit holds a reservation (the store hashing it, or refusing it for
// now), a second commit of it and a write into it are told it is busy, not that it
// is gone (NOT_FOUND before: the retrying client took the block for lost while the
// first commit could still be refused and the reservation restored).
TEST_F(ReservationTableTest, ATakenReservationIsBusyNotGoneUntilFinished) {
  const std::string bytes(4096, 'c');
  storage::Reservation r = Reserve(7, bytes);
  ASSERT_TRUE(table_->Write(r.id, 0, bytes).ok());
  ReservationTable::Entry e, again;
  ASSERT_TRUE(table_->Take(r.id, &e).ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(table_->Take(r.id, &again)));
  EXPECT_TRUE(absl::IsFailedPrecondition(table_->Write(r.id, 0, bytes)));
  table_->Restore(r.id, e);  // the store refused for now
  ASSERT_TRUE(table_->Write(r.id, 0, bytes).ok());
  ASSERT_TRUE(table_->Take(r.id, &e).ok());
  ASSERT_TRUE(store_->Commit(r.id).ok());
  table_->Finish(r.id);
  EXPECT_TRUE(absl::IsNotFound(table_->Take(r.id, &again)));
  EXPECT_TRUE(absl::IsNotFound(table_->Write(r.id, 0, bytes)));
}

// A write that is still copying when the reservation's time runs out keeps its chunk:
// the store's expiry (here called directly, as MakeRoom does) skips it, so a block
// reserved meanwhile never shares its memory. Without the hold the expiry freed the
// chunk mid-copy, the next reservation got it, and the copy overwrote that block.
TEST_F(ReservationTableTest, ExpiryDuringAWriteNeverHandsItsChunkToAnotherBlock) {
  const std::string bytes(16 << 20, 'w');
  const std::string other(16 << 20, 'o');
  for (int round = 0; round < 8; ++round) {
    storage::Reservation r = Reserve(100 + round, bytes);
    std::atomic<bool> started{false}, done{false};
    absl::Status write;
    std::thread writer([&] {
      started = true;
      for (int i = 0; i < 4 && write.ok(); ++i) write = table_->Write(r.id, 0, bytes);
      done = true;
    });
    while (!started) std::this_thread::yield();
    clock_.Advance(Config().reservation_timeout + absl::Seconds(1));
    std::vector<storage::Reservation> others;
    while (!done) {
      store_->ExpireNow();
      auto o = store_->Reserve("ns", Key(1000 + round * 100 + others.size()), other.size(),
                               Xxh3_64(other.data(), other.size()), {});
      if (!o.ok()) continue;  // full: held chunks and the other reservations
      std::memcpy(o->data, other.data(), other.size());
      others.push_back(*o);
    }
    writer.join();
    EXPECT_TRUE(write.ok() || absl::IsNotFound(write)) << write;
    for (const storage::Reservation& o : others) {
      ASSERT_EQ(std::memcmp(o.data, other.data(), other.size()), 0) << "round " << round;
      EXPECT_TRUE(store_->Abort(o.id).ok());
    }
    store_->ExpireNow();
  }
}

}  // namespace
}  // namespace kvhub::cachesvc
