// Several threads put, look up, acquire (verifying bytes), release and delete
// concurrently over overlapping keys, with eviction running. Any block a reader
// obtains must carry exactly the bytes that were put under its key.

#include <atomic>
#include <cstring>
#include <thread>
#include <vector>

#include "gtest/gtest.h"
#include "storage/block_store.h"
#include "storage/block_store_test_util.h"

namespace kvhub::storage {
namespace {

using testing::Bytes;
using testing::Key;
using testing::Sum;

size_t SizeOf(uint64_t i) { return 256 + (i * 977) % 12000; }

void Churn(const char* policy) {
  BlockStoreConfig c = testing::SmallConfig();
  c.eviction.name = policy;
  auto made = BlockStore::Create(c);
  ASSERT_TRUE(made.ok()) << made.status();
  std::unique_ptr<BlockStore> store = *std::move(made);

  constexpr int kThreads = 4;
  constexpr uint64_t kKeys = 3000;  // ~18 MB of distinct blocks through a 4 MiB store
  std::atomic<uint64_t> verified{0}, bad{0}, puts{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      uint64_t x = 88172645463325252ull + t;
      auto next = [&] {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        return x;
      };
      std::vector<BlockKey> keys(16);
      std::vector<uint8_t> present(16);
      for (int op = 0; op < 4000; ++op) {
        uint64_t i = next() % kKeys;
        const char* ns = (i % 2) ? "even" : "odd";
        switch (next() % 6) {
          case 0:
          case 1: {
            auto b = Bytes(i, SizeOf(i));
            absl::Status s = store->Put(ns, Key(i), b, Sum(b));
            if (s.ok()) {
              ++puts;
            } else if (s.code() != absl::StatusCode::kAlreadyExists &&
                       s.code() != absl::StatusCode::kAborted) {
              ADD_FAILURE() << s;
            }
            break;
          }
          case 2: {
            auto l = store->Acquire(ns, Key(i), absl::Seconds(30));
            if (!l.ok()) {
              if (l.status().code() != absl::StatusCode::kNotFound) ADD_FAILURE() << l.status();
              break;
            }
            auto want = Bytes(i, SizeOf(i));
            if (l->size != want.size() || std::memcmp(l->data, want.data(), want.size()) != 0 ||
                l->checksum != Sum(want)) {
              ++bad;
            } else {
              ++verified;
            }
            if (!store->Release(l->id).ok()) ++bad;
            break;
          }
          case 3: {
            absl::Status s = store->Delete(ns, Key(i));
            if (!s.ok() && s.code() != absl::StatusCode::kNotFound) ADD_FAILURE() << s;
            break;
          }
          case 4: {
            for (size_t k = 0; k < keys.size(); ++k) keys[k] = Key((i + k) % kKeys);
            store->Lookup(ns, keys, present);
            break;
          }
          default: {  // two-phase put written in pieces
            auto b = Bytes(i, SizeOf(i));
            auto r = store->Reserve(ns, Key(i), b.size(), Sum(b));
            if (!r.ok()) break;
            size_t half = b.size() / 2;
            std::memcpy(r->data, b.data(), half);
            std::memcpy(r->data + half, b.data() + half, b.size() - half);
            if (next() % 8 == 0) {
              EXPECT_TRUE(store->Abort(r->id).ok());
            } else {
              EXPECT_TRUE(store->Commit(r->id).ok());
            }
            break;
          }
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(bad.load(), 0u);
  EXPECT_GT(verified.load(), 100u);
  EXPECT_GT(puts.load(), 1000u);
  BlockStoreStats st = store->Stats();
  EXPECT_EQ(st.leased_blocks, 0u);
  EXPECT_EQ(st.reserved_bytes, 0u);
  EXPECT_GT(st.evictions, 0u);
  EXPECT_LE(st.allocated_bytes, c.capacity_bytes);
}

TEST(BlockStoreConcurrencyTest, ChurnWithS3Fifo) { Churn("s3fifo"); }
TEST(BlockStoreConcurrencyTest, ChurnWithLru) { Churn("lru"); }

// Readers hold leases while writers flood the store: leased bytes never change.
TEST(BlockStoreConcurrencyTest, LeasedBytesStableUnderFlood) {
  auto made = BlockStore::Create(testing::SmallConfig());
  ASSERT_TRUE(made.ok());
  std::unique_ptr<BlockStore> store = *std::move(made);
  for (uint64_t i = 0; i < 8; ++i) {
    auto b = Bytes(i, 8000);
    ASSERT_TRUE(store->Put("ns", Key(i), b, Sum(b)).ok());
  }
  std::atomic<bool> stop{false};
  std::atomic<uint64_t> bad{0};
  std::vector<std::thread> readers;
  for (int t = 0; t < 2; ++t) {
    readers.emplace_back([&, t] {
      for (int round = 0; !stop.load(); ++round) {
        uint64_t i = (round + t) % 8;
        auto l = store->Acquire("ns", Key(i));
        if (!l.ok()) continue;  // evicted between rounds: fine
        auto want = Bytes(i, 8000);
        for (int k = 0; k < 5; ++k) {
          if (std::memcmp(l->data, want.data(), want.size()) != 0) ++bad;
          std::this_thread::yield();
        }
        if (!store->Release(l->id).ok()) ++bad;
      }
    });
  }
  std::thread writer([&] {
    for (uint64_t i = 100; i < 3000; ++i) {
      auto b = Bytes(i, 8000);
      absl::Status s = store->Put("ns", Key(i), b, Sum(b));
      if (!s.ok()) ADD_FAILURE() << s;
    }
    stop = true;
  });
  writer.join();
  for (auto& r : readers) r.join();
  EXPECT_EQ(bad.load(), 0u);
}

}  // namespace
}  // namespace kvhub::storage
