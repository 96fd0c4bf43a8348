// The host store with the gpu tier behind it (tiered_block_store.h). Every test
// runs against the CUDA tier when a device is present (else it SKIPs, saying
// why) and against a host-memory tier that exists to inject faults the device
// cannot (corrupted copies, slow copies that race with deletes).
#include "storage/tiered_block_store.h"

#include <gtest/gtest.h>

#include <atomic>
#include <functional>
#include <thread>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/match.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "storage/block_store_test_util.h"

namespace kvhub::storage {
namespace {

using testing::Bytes;
using testing::Key;
using testing::SmallConfig;
using testing::Sum;

// GpuTier over host memory, for fault injection: copies can be corrupted
// after the fact, slowed down, failed as a device error, or hung (a Get that
// blocks holding the tier's lock, as a stuck CUDA copy holds the real tier's).
class FaultTier final : public GpuTier {
 public:
  explicit FaultTier(uint64_t capacity) : capacity_(capacity) {}
  absl::Status Put(absl::string_view ns, const BlockKey& key, absl::Span<const uint8_t> bytes) override {
    ++puts_started_;
    if (delay_.load() > 0) absl::SleepFor(absl::Milliseconds(delay_.load()));
    if (refuse_.load()) return absl::ResourceExhaustedError("device out of memory (injected)");
    if (fail_next_.fetch_sub(1) > 0) return absl::InternalError("device error (injected)");
    absl::MutexLock l(&mu_);
    std::string id = Id(ns, key);
    if (blocks_.contains(id)) return absl::AlreadyExistsError("present");
    if (used_ + bytes.size() > capacity_) return absl::ResourceExhaustedError("full");
    blocks_[id].assign(bytes.begin(), bytes.end());
    used_ += bytes.size();
    return absl::OkStatus();
  }
  absl::StatusOr<uint64_t> Get(absl::string_view ns, const BlockKey& key, absl::Span<uint8_t> out) override {
    absl::MutexLock l(&mu_);
    if (hang_get_.load()) {
      ++hung_;
      absl::MutexLock g(&gate_mu_);
      gate_mu_.Await(absl::Condition(&gate_open_));
    }
    auto it = blocks_.find(Id(ns, key));
    if (it == blocks_.end()) return absl::NotFoundError("absent");
    if (out.size() != it->second.size()) return absl::InvalidArgumentError("size");
    std::copy(it->second.begin(), it->second.end(), out.begin());
    return it->second.size();
  }
  absl::StatusOr<uint64_t> Size(absl::string_view ns, const BlockKey& key) const override {
    absl::MutexLock l(&mu_);
    auto it = blocks_.find(Id(ns, key));
    if (it == blocks_.end()) return absl::NotFoundError("absent");
    return it->second.size();
  }
  absl::StatusOr<DeviceBytes> Find(absl::string_view, const BlockKey&) const override {
    return absl::UnimplementedError("host-memory test tier");
  }
  absl::Status Erase(absl::string_view ns, const BlockKey& key) override {
    absl::MutexLock l(&mu_);
    auto it = blocks_.find(Id(ns, key));
    if (it == blocks_.end()) return absl::NotFoundError("absent");
    used_ -= it->second.size();
    blocks_.erase(it);
    return absl::OkStatus();
  }
  GpuTierStats Stats() const override {
    absl::MutexLock l(&mu_);
    return GpuTierStats{capacity_, used_, blocks_.size(), "host memory (test)"};
  }
  bool Corrupt(absl::string_view ns, const BlockKey& key) {
    absl::MutexLock l(&mu_);
    auto it = blocks_.find(Id(ns, key));
    if (it == blocks_.end()) return false;
    it->second[it->second.size() / 2] ^= 0x40;
    return true;
  }
  // Lets every hung Get go on.
  void Unhang() {
    hang_get_ = false;
    absl::MutexLock g(&gate_mu_);
    gate_open_ = true;
  }
  std::atomic<int> delay_{0};
  std::atomic<bool> refuse_{false};  // every Put fails as a device short of memory would
  std::atomic<int> fail_next_{0};    // this many Puts fail as a device error
  std::atomic<bool> hang_get_{false};
  std::atomic<int> hung_{0};         // Gets that hung
  std::atomic<int> puts_started_{0};
  bool Has(absl::string_view ns, const BlockKey& key) const { return Size(ns, key).ok(); }

 private:
  static std::string Id(absl::string_view ns, const BlockKey& k) {
    return std::string(ns) + "/" + std::to_string(k.lo) + "/" + std::to_string(k.hi);
  }
  const uint64_t capacity_;
  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, std::vector<uint8_t>> blocks_ ABSL_GUARDED_BY(mu_);
  uint64_t used_ ABSL_GUARDED_BY(mu_) = 0;
  absl::Mutex gate_mu_ ABSL_ACQUIRED_AFTER(mu_);
  bool gate_open_ ABSL_GUARDED_BY(gate_mu_) = false;
};

constexpr size_t kBlock = 16 << 10;  // 4 MiB host store: ~230 blocks

class TieredStoreTest : public ::testing::TestWithParam<bool> {
 protected:
  // `gpu_capacity` bytes in the second tier: the CUDA tier (param true) or a FaultTier.
  void Make(uint64_t gpu_capacity, const TieredStoreConfig& config = {}, BlockStoreConfig host_config = SmallConfig()) {
    std::unique_ptr<GpuTier> tier;
    if (GetParam()) {
      GpuTierConfig c;
      c.capacity_bytes = gpu_capacity;
      c.staging_bytes = 64 << 10;
      auto t = GpuTier::Create(c);
      if (!t.ok()) {
        // Only a missing device is a reason to skip; on a machine with one, a tier
        // that cannot start is a failure.
        ASSERT_TRUE(absl::IsFailedPrecondition(t.status()) &&
                    absl::StrContains(t.status().message(), "no CUDA device"))
            << t.status();
        GTEST_SKIP() << t.status().message();
      }
      tier = *std::move(t);
    } else {
      auto f = std::make_unique<FaultTier>(gpu_capacity);
      fault_ = f.get();
      tier = std::move(f);
    }
    auto host = BlockStore::Create(host_config);
    ASSERT_TRUE(host.ok()) << host.status();
    auto s = TieredBlockStore::Create(*std::move(host), std::move(tier), config);
    ASSERT_TRUE(s.ok()) << s.status();
    store_ = *std::move(s);
  }
  void Drain() {
    for (int i = 0; i < 20000 && store_->mirror_pending() > 0; ++i) absl::SleepFor(absl::Milliseconds(1));
    ASSERT_EQ(store_->mirror_pending(), 0u);
  }
  void PutBlock(uint64_t i) {
    std::vector<uint8_t> b = Bytes(i, kBlock);
    ASSERT_TRUE(store_->Put("ns", Key(i), b, Sum(b), PutOptions{}).ok()) << i;
  }
  // The block's bytes through a lease, or the lease's error.
  absl::StatusOr<std::vector<uint8_t>> Read(uint64_t i) {
    absl::StatusOr<Lease> l = store_->Acquire("ns", Key(i), absl::ZeroDuration());
    if (!l.ok()) return l.status();
    std::vector<uint8_t> out(l->data, l->data + l->size);
    EXPECT_TRUE(store_->Release(l->id).ok());
    return out;
  }
  // Visible in either tier (the tiered Lookup).
  bool Visible(uint64_t i) {
    uint8_t p = 0;
    BlockKey k = Key(i);
    return store_->Lookup("ns", std::span<const BlockKey>(&k, 1), std::span<uint8_t>(&p, 1)) == 1;
  }
  FaultTier* fault_ = nullptr;
  std::unique_ptr<TieredBlockStore> store_;
};

TEST_P(TieredStoreTest, BlocksEvictedFromHostAreServedFromTheGpuTier) {
  Make(64ull << 20);
  if (store_ == nullptr) return;
  constexpr uint64_t kN = 600;  // ~2.6x the host capacity
  for (uint64_t i = 0; i < kN; ++i) {
    PutBlock(i);
    if (i % 10 == 9) Drain();  // copy before the host evicts (S3-FIFO probation: ~25 blocks)
  }
  Drain();
  ASSERT_GT(store_->Stats().evictions, 0u);
  TierStats t = store_->tier_stats();
  EXPECT_EQ(t.mirrored, kN);
  std::vector<BlockKey> keys;
  for (uint64_t i = 0; i < kN; ++i) keys.push_back(Key(i));
  std::vector<uint8_t> present(kN);
  EXPECT_EQ(store_->Lookup("ns", keys, present), kN);
  for (uint64_t i = 0; i < kN; i += 37) {
    absl::StatusOr<std::vector<uint8_t>> got = Read(i);
    ASSERT_TRUE(got.ok()) << i << " " << got.status();
    EXPECT_EQ(*got, Bytes(i, kBlock)) << i;
  }
  EXPECT_GT(store_->tier_stats().promotions, 0u);
  // Another namespace never sees them.
  std::vector<uint8_t> other(kN);
  EXPECT_EQ(store_->Lookup("other", keys, other), 0u);
}

TEST_P(TieredStoreTest, DeleteRemovesBothCopiesForGood) {
  Make(64ull << 20);
  if (store_ == nullptr) return;
  for (uint64_t i = 0; i < 400; ++i) {
    PutBlock(i);
    if (i % 10 == 9) Drain();
  }
  Drain();
  // Block 0 is long evicted from the host; 399 is in both tiers.
  for (uint64_t i : {uint64_t{0}, uint64_t{399}}) {
    EXPECT_TRUE(store_->Delete("ns", Key(i)).ok()) << i;
    EXPECT_FALSE(Visible(i)) << i;
    EXPECT_EQ(Read(i).status().code(), absl::StatusCode::kNotFound) << i;
    EXPECT_EQ(store_->Delete("ns", Key(i)).code(), absl::StatusCode::kNotFound) << i;
  }
}

TEST_P(TieredStoreTest, DeleteWhileTheCopyIsInFlightNeverResurrects) {
  Make(64ull << 20);
  if (store_ == nullptr) return;
  if (fault_ != nullptr) fault_->delay_ = 2;  // widen the copy window
  for (uint64_t i = 0; i < 100; ++i) {
    PutBlock(i);
    ASSERT_TRUE(store_->Delete("ns", Key(i)).ok());
  }
  Drain();
  for (uint64_t i = 0; i < 100; ++i) EXPECT_EQ(Read(i).status().code(), absl::StatusCode::kNotFound) << i;
  EXPECT_EQ(store_->tier_stats().gpu_blocks, 0u);
}

TEST_P(TieredStoreTest, FullGpuTierDropsItsOldestCopies) {
  Make(40 * kBlock);
  if (store_ == nullptr) return;
  for (uint64_t i = 0; i < 400; ++i) {
    PutBlock(i);
    if (i % 10 == 9) Drain();
  }
  Drain();
  TierStats t = store_->tier_stats();
  EXPECT_GE(t.gpu_evictions, 360u);
  EXPECT_LE(t.gpu_used_bytes, 40 * kBlock);
  EXPECT_EQ(Read(0).status().code(), absl::StatusCode::kNotFound);  // gone from both
  absl::StatusOr<std::vector<uint8_t>> last = Read(399);
  ASSERT_TRUE(last.ok()) << last.status();
  EXPECT_EQ(*last, Bytes(399, kBlock));
}

// The copier made room for a copy by evicting older ones until the Put fit, or the
// tier was empty: a block larger than the tier, or a device that refuses every
// allocation for a while (shared with an inference engine), emptied it for nothing.
TEST_P(TieredStoreTest, ACopyThatCannotFitEvictsLittleOrNothing) {
  if (!GetParam()) {
    Make(12 << 10);  // 12 KiB: two 4 KiB copies fit, a 16 KiB block never does
  } else {
    GTEST_SKIP() << "needs the host-memory tier (fault injection)";
  }
  for (uint64_t i = 0; i < 2; ++i) {
    std::vector<uint8_t> b = Bytes(i, 4 << 10);
    ASSERT_TRUE(store_->Put("ns", Key(i), b, Sum(b), PutOptions{}).ok());
  }
  Drain();
  ASSERT_EQ(store_->tier_stats().gpu_blocks, 2u);
  PutBlock(100);  // 16 KiB
  Drain();
  EXPECT_EQ(store_->tier_stats().gpu_evictions, 0u);
  EXPECT_EQ(store_->tier_stats().gpu_blocks, 2u);

  Make(40 * kBlock);
  for (uint64_t i = 0; i < 20; ++i) PutBlock(i);
  Drain();
  ASSERT_EQ(store_->tier_stats().gpu_blocks, 20u);
  fault_->refuse_ = true;
  PutBlock(200);
  Drain();
  // Room for twice the block is made, then the copy is given up.
  EXPECT_LE(store_->tier_stats().gpu_evictions, 2u);
  EXPECT_GE(store_->tier_stats().gpu_blocks, 18u);
}

// A key deleted and put again has a new copy; the old copy's place in the eviction
// order must not evict it (the newest copy went first), and places of copies that are
// gone must not pile up.
TEST_P(TieredStoreTest, AKeyPutAgainAfterDeleteIsNotEvictedForItsOldCopy) {
  if (!GetParam()) {
    Make(3 * kBlock);
  } else {
    GTEST_SKIP() << "needs the host-memory tier (fault injection)";
  }
  for (uint64_t i : {1, 2, 3}) {
    PutBlock(i);
    Drain();
  }
  ASSERT_TRUE(store_->Delete("ns", Key(1)).ok());
  PutBlock(1);  // the newest copy now
  Drain();
  ASSERT_TRUE(fault_->Has("ns", Key(1)));
  PutBlock(4);  // evicts the oldest live copy: 2
  Drain();
  EXPECT_TRUE(fault_->Has("ns", Key(1)));
  EXPECT_FALSE(fault_->Has("ns", Key(2)));
  EXPECT_TRUE(fault_->Has("ns", Key(3)));
  EXPECT_TRUE(fault_->Has("ns", Key(4)));
}

// A key put again with other bytes (another encoding of the same tokens) after the
// host evicted its first block: the gpu copy follows, so when the host evicts the
// second, the second comes back (the first did: the copier skipped keys it held).
TEST_P(TieredStoreTest, AKeyPutAgainWithOtherBytesReplacesItsGpuCopy) {
  BlockStoreConfig lru = SmallConfig();
  lru.eviction.name = "lru";  // S3-FIFO would keep the second in its main queue (a ghost hit)
  Make(64ull << 20, {}, lru);
  if (store_ == nullptr) return;
  PutBlock(5);
  Drain();
  auto flood = [&](uint64_t from) {  // ~1.3x the host tier: evicts key 5 there
    for (uint64_t i = from; i < from + 300; ++i) {
      PutBlock(i);
      if (i % 10 == 9) Drain();
    }
    Drain();
  };
  flood(1000);
  const std::vector<uint8_t> second = Bytes(555, kBlock);  // same size class: evicted as the first
  ASSERT_TRUE(store_->Put("ns", Key(5), second, Sum(second), PutOptions{}).ok()) << "the host evicted key 5";
  Drain();
  flood(2000);
  absl::StatusOr<std::vector<uint8_t>> got = Read(5);
  EXPECT_EQ(store_->tier_stats().promotions, 1u) << "served from the host: the test did not evict it";
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, second) << "the first block came back";
}

// The same, when the second block is never copied (the copy queue is full): the
// first block's gpu copy stayed indexed and, once the host evicted the second, was
// promoted and served although the second was the last one published.
TEST_P(TieredStoreTest, AKeyPutAgainIsNeverServedItsOlderGpuCopy) {
  if (GetParam()) GTEST_SKIP() << "a slow device is injected through the host-memory tier";
  BlockStoreConfig lru = SmallConfig();
  lru.eviction.name = "lru";
  TieredStoreConfig config;
  config.mirror_queue_blocks = 1;
  Make(64ull << 20, config, lru);
  PutBlock(5);
  Drain();
  auto flood = [&](uint64_t from) {  // ~1.3x the host tier: evicts key 5 there
    for (uint64_t i = from; i < from + 300; ++i) {
      PutBlock(i);
      Drain();
    }
  };
  flood(1000);
  ASSERT_TRUE(Visible(5));
  // The copier busy with one block and the queue holding another: the second
  // block of key 5 is not queued for copying.
  fault_->delay_ = 300;
  PutBlock(9000);
  for (int i = 0; i < 20000 && fault_->puts_started_.load() == 0; ++i) absl::SleepFor(absl::Milliseconds(1));
  const int started = fault_->puts_started_.load();
  PutBlock(9001);
  const uint64_t dropped = store_->tier_stats().mirror_dropped;
  const std::vector<uint8_t> second = Bytes(555, kBlock);
  ASSERT_TRUE(store_->Put("ns", Key(5), second, Sum(second), PutOptions{}).ok());
  EXPECT_EQ(store_->tier_stats().mirror_dropped, dropped + 1) << "the queue was not full";
  EXPECT_GE(fault_->puts_started_.load(), started);
  fault_->delay_ = 0;
  Drain();
  flood(2000);
  absl::StatusOr<std::vector<uint8_t>> got = Read(5);
  EXPECT_EQ(got.status().code(), absl::StatusCode::kNotFound) << "the first block came back";
  EXPECT_FALSE(Visible(5));
}

// The host store, with a hook run once after the next Release (the copier's, in the
// test below): the moment the copier's lease on a block ends.
class ReleaseHookedStore final : public BlockStore {
 public:
  explicit ReleaseHookedStore(std::unique_ptr<BlockStore> inner) : inner_(std::move(inner)) {}
  std::function<void()> after_next_release;  // set while the copier is idle
  BlockStore& inner() { return *inner_; }

  std::span<const Region> regions() const override { return inner_->regions(); }
  size_t Lookup(absl::string_view ns, std::span<const BlockKey> keys, std::span<uint8_t> present) override {
    return inner_->Lookup(ns, keys, present);
  }
  absl::StatusOr<Reservation> Reserve(absl::string_view ns, const BlockKey& key, uint64_t size, uint64_t checksum,
                                      const PutOptions& options) override {
    return inner_->Reserve(ns, key, size, checksum, options);
  }
  absl::Status Commit(uint64_t id) override { return inner_->Commit(id); }
  absl::Status Abort(uint64_t id) override { return inner_->Abort(id); }
  absl::Status Put(absl::string_view ns, const BlockKey& key, std::span<const uint8_t> data, uint64_t checksum,
                   const PutOptions& options) override {
    return inner_->Put(ns, key, data, checksum, options);
  }
  absl::StatusOr<Lease> Acquire(absl::string_view ns, const BlockKey& key, absl::Duration lease,
                                const AcquireOptions& options) override {
    return inner_->Acquire(ns, key, lease, options);
  }
  absl::Status Release(uint64_t lease_id) override {
    absl::Status s = inner_->Release(lease_id);
    if (std::function<void()> hook = std::exchange(after_next_release, nullptr)) hook();
    return s;
  }
  absl::Status Delete(absl::string_view ns, const BlockKey& key) override { return inner_->Delete(ns, key); }
  absl::Status Pin(absl::string_view ns, const BlockKey& key, bool pin) override { return inner_->Pin(ns, key, pin); }
  absl::StatusOr<uint64_t> BeginTransfer(TransferAccess access, uint64_t grant_id,
                                         const BlockLocation& range) override {
    return inner_->BeginTransfer(access, grant_id, range);
  }
  void EndTransfer(TransferAccess access, uint64_t hold) override { inner_->EndTransfer(access, hold); }
  absl::StatusOr<uint64_t> GrantNamespaceTag(TransferAccess access, uint64_t grant_id) override {
    return inner_->GrantNamespaceTag(access, grant_id);
  }
  size_t ExpireNow() override { return inner_->ExpireNow(); }
  BlockStoreStats Stats() const override { return inner_->Stats(); }
  NamespaceUsage NamespaceUsageOf(absl::string_view ns) const override { return inner_->NamespaceUsageOf(ns); }
  std::string PolicyName() const override { return inner_->PolicyName(); }
  PolicyState PolicyStateNow() const override { return inner_->PolicyStateNow(); }

 private:
  std::unique_ptr<BlockStore> inner_;
};

// The copier released its lease on the first block of a key before indexing its gpu
// copy: a second block of the key put in that window (the host having evicted the
// first) found no copy to drop, and once the host evicted the second too (before
// its own copy was made) the first was promoted over it.
TEST_P(TieredStoreTest, AKeyPutAgainWhileItsFirstCopyIsIndexedNeverGetsTheFirstBack) {
  auto host = BlockStore::Create(SmallConfig());
  ASSERT_TRUE(host.ok()) << host.status();
  auto hooked = std::make_unique<ReleaseHookedStore>(*std::move(host));
  ReleaseHookedStore* h = hooked.get();
  std::unique_ptr<GpuTier> tier;
  if (GetParam()) {
    GpuTierConfig c;
    c.capacity_bytes = 64ull << 20;
    c.staging_bytes = 64 << 10;
    auto t = GpuTier::Create(c);
    if (!t.ok()) {
      ASSERT_TRUE(absl::StrContains(t.status().message(), "no CUDA device")) << t.status();
      GTEST_SKIP() << t.status().message();
    }
    tier = *std::move(t);
  } else {
    tier = std::make_unique<FaultTier>(64ull << 20);
  }
  auto s = TieredBlockStore::Create(std::move(hooked), std::move(tier), TieredStoreConfig{});
  ASSERT_TRUE(s.ok()) << s.status();
  store_ = *std::move(s);

  const std::vector<uint8_t> first = Bytes(5, kBlock), second = Bytes(555, kBlock);
  absl::Status put_second = absl::UnknownError("hook never ran");
  h->after_next_release = [&] {  // the copier's lease on the first block just ended
    EXPECT_TRUE(h->inner().Delete("ns", Key(5)).ok());  // the host evicts it
    put_second = store_->Put("ns", Key(5), second, Sum(second), PutOptions{});
    EXPECT_TRUE(h->inner().Delete("ns", Key(5)).ok());  // and the second, before its copy
  };
  ASSERT_TRUE(store_->Put("ns", Key(5), first, Sum(first), PutOptions{}).ok());
  Drain();
  ASSERT_TRUE(put_second.ok()) << put_second;
  absl::StatusOr<std::vector<uint8_t>> got = Read(5);
  EXPECT_EQ(got.status().code(), absl::StatusCode::kNotFound)
      << (got.ok() && *got == first ? "the first block came back" : "");
  EXPECT_FALSE(Visible(5));
}

// Unpinning a block only the gpu tier holds (Lookup reports it present) is done,
// not NOT_FOUND; a miss on a key the tier does not hold does not wait behind
// another key's promotion (it waited for device_timeout behind a hung one, which
// then switched the tier off).
TEST_P(TieredStoreTest, GpuOnlyBlocksUnpinAndMissesDoNotWaitForPromotions) {
  if (GetParam()) GTEST_SKIP() << "a hung device is injected through the host-memory tier";
  BlockStoreConfig lru = SmallConfig();
  lru.eviction.name = "lru";
  TieredStoreConfig config;
  config.device_timeout = absl::Seconds(3);
  Make(64ull << 20, config, lru);
  for (uint64_t i = 0; i < 300; ++i) {
    PutBlock(i);
    Drain();
  }
  ASSERT_TRUE(Visible(0));
  EXPECT_TRUE(store_->Pin("ns", Key(0), false).ok());
  EXPECT_TRUE(absl::IsNotFound(store_->Pin("ns", Key(99999), false)));
  fault_->hang_get_ = true;
  absl::StatusOr<std::vector<uint8_t>> hung_read = absl::UnknownError("not run");
  std::thread reader([&] { hung_read = Read(1); });  // gpu-only: its promotion hangs
  for (int i = 0; i < 20000 && fault_->hung_.load() == 0; ++i) absl::SleepFor(absl::Milliseconds(1));
  ASSERT_EQ(fault_->hung_.load(), 1);
  absl::StatusOr<std::vector<uint8_t>> miss = Read(99999);
  const bool off_after_miss = store_->tier_stats().gpu_off;
  fault_->Unhang();
  reader.join();
  EXPECT_EQ(miss.status().code(), absl::StatusCode::kNotFound) << miss.status();
  EXPECT_FALSE(off_after_miss) << "the miss waited for the hung promotion";
}

// A promotion slower than the host's reservation_timeout (a slow device, not a hung
// one) found its reservation expired at commit and dropped the gpu copy, a good one.
TEST_P(TieredStoreTest, APromotionThatOutlastsItsReservationKeepsTheCopy) {
  if (GetParam()) GTEST_SKIP() << "a slow device is injected through the host-memory tier";
  BlockStoreConfig lru = SmallConfig();
  lru.eviction.name = "lru";
  lru.reservation_timeout = absl::Milliseconds(200);  // past a loaded machine's stalls in the setup puts
  Make(64ull << 20, {}, lru);
  for (uint64_t i = 0; i < 300; ++i) {
    PutBlock(i);
    Drain();
  }
  ASSERT_TRUE(Visible(1));
  fault_->hang_get_ = true;
  absl::StatusOr<std::vector<uint8_t>> slow = absl::UnknownError("not run");
  std::thread reader([&] { slow = Read(1); });  // gpu-only: promoted
  for (int i = 0; i < 20000 && fault_->hung_.load() == 0; ++i) absl::SleepFor(absl::Milliseconds(1));
  ASSERT_EQ(fault_->hung_.load(), 1);
  absl::SleepFor(absl::Milliseconds(500));  // past the reservation's 200 ms
  fault_->Unhang();
  reader.join();
  EXPECT_FALSE(store_->tier_stats().gpu_off);
  EXPECT_GE(store_->tier_stats().promotion_failures, 1u) << "the reservation did not expire";
  absl::StatusOr<std::vector<uint8_t>> again = Read(1);
  ASSERT_TRUE(again.ok()) << again.status() << " (the copy was dropped)";
  EXPECT_EQ(*again, Bytes(1, kBlock));
}

// Deletes are remembered only against copies queued before them: under a copy
// queue that never empties the records were kept until it did (for ever).
TEST_P(TieredStoreTest, DeleteRecordsDoNotOutliveTheCopiesTheyGuard) {
  if (GetParam()) GTEST_SKIP() << "a slow device is injected through the host-memory tier";
  Make(64ull << 20);
  fault_->delay_ = 2;
  uint64_t most = 0;
  for (uint64_t i = 0; i < 600; ++i) {
    PutBlock(i);
    if (i >= 10) {
      ASSERT_TRUE(store_->Delete("ns", Key(i - 10)).ok());
    }
    most = std::max<uint64_t>(most, store_->deleted_records_for_testing());
  }
  EXPECT_GT(store_->mirror_pending(), 0u) << "the queue must stay busy";
  // Records of deletes newer than the oldest queued copy only: at most what the
  // queue holds, twice (map and order).
  EXPECT_LE(store_->deleted_records_for_testing(), 2 * (store_->mirror_pending() + 1));
  fault_->delay_ = 0;
  Drain();
  EXPECT_EQ(store_->deleted_records_for_testing(), 0u);
  EXPECT_GT(most, 0u);
}

// A gpu copy that no longer matches its checksum is a miss, never wrong bytes.
TEST_P(TieredStoreTest, CorruptGpuCopyIsAMiss) {
  if (GetParam()) GTEST_SKIP() << "corruption is injected through the host-memory tier";
  Make(64ull << 20);
  for (uint64_t i = 0; i < 400; ++i) {
    PutBlock(i);
    if (i % 10 == 9) Drain();
  }
  Drain();
  ASSERT_TRUE(fault_->Corrupt("ns", Key(3)));
  EXPECT_EQ(Read(3).status().code(), absl::StatusCode::kNotFound);
  EXPECT_FALSE(Visible(3));
  TierStats t = store_->tier_stats();
  EXPECT_EQ(t.gpu_checksum_failures, 1u);
  EXPECT_EQ(t.promotion_failures, 1u);
  // The device's fault, not a client's write (kvhub_checksum_failures_total).
  EXPECT_EQ(store_->Stats().checksum_failures, 0u);
  absl::StatusOr<std::vector<uint8_t>> ok = Read(4);  // its neighbour is intact
  ASSERT_TRUE(ok.ok()) << ok.status();
  EXPECT_EQ(*ok, Bytes(4, kBlock));
}

TEST_P(TieredStoreTest, TwoPhasePutsAreCopiedToo) {
  Make(64ull << 20);
  if (store_ == nullptr) return;
  std::vector<uint8_t> b = Bytes(7, kBlock);
  absl::StatusOr<Reservation> r = store_->Reserve("ns", Key(7), b.size(), Sum(b), PutOptions{});
  ASSERT_TRUE(r.ok()) << r.status();
  std::copy(b.begin(), b.end(), r->data);
  ASSERT_TRUE(store_->Commit(r->id).ok());
  absl::StatusOr<Reservation> a = store_->Reserve("ns", Key(8), b.size(), Sum(b), PutOptions{});
  ASSERT_TRUE(a.ok());
  ASSERT_TRUE(store_->Abort(a->id).ok());
  Drain();
  EXPECT_EQ(store_->tier_stats().mirrored, 1u);
  EXPECT_EQ(store_->tier_stats().gpu_blocks, 1u);
}

TEST_P(TieredStoreTest, ConcurrentReadersDuringPromotions) {
  Make(64ull << 20);
  if (store_ == nullptr) return;
  for (uint64_t i = 0; i < 500; ++i) {
    PutBlock(i);
    if (i % 10 == 9) Drain();
  }
  Drain();
  std::atomic<int> wrong{0}, missing{0};
  std::vector<std::thread> ts;
  for (int t = 0; t < 4; ++t) {
    ts.emplace_back([&, t] {
      for (uint64_t i = t; i < 500; i += 3) {
        absl::StatusOr<std::vector<uint8_t>> got = Read(i);
        if (!got.ok()) {
          ++missing;
        } else if (*got != Bytes(i, kBlock)) {
          ++wrong;
        }
      }
    });
  }
  for (auto& t : ts) t.join();
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_EQ(missing.load(), 0);
}

// The copier reads the host block while the device copies it. It held only a lease
// (mirror_lease), so a device copy that outlasted it read whatever reused the chunk
// after the lease expired and the block was evicted, and stored that under the
// block's checksum: the copy later failed its checksum (a miss, and a page blaming
// GPU memory). It now holds the bytes with a transfer hold until the copy is done.
TEST_P(TieredStoreTest, ACopySlowerThanItsLeaseStillCopiesTheBlocksOwnBytes) {
  if (GetParam()) GTEST_SKIP() << "a slow device is injected through the host-memory tier";
  TieredStoreConfig config;
  config.mirror_lease = absl::Milliseconds(1);
  BlockStoreConfig host = SmallConfig();
  host.eviction.name = "lru";
  Make(64ull << 20, config, host);
  fault_->delay_ = 300;
  PutBlock(0);
  for (int i = 0; i < 20000 && fault_->puts_started_.load() == 0; ++i) absl::SleepFor(absl::Milliseconds(1));
  ASSERT_EQ(fault_->puts_started_.load(), 1);
  fault_->delay_ = 0;  // the copy in progress still sleeps
  absl::SleepFor(absl::Milliseconds(5));
  store_->ExpireNow();  // the copier's lease is over
  // Evicts block 0 (its chunk is wanted again): without the hold its chunk is reused
  // under the copy; with it, the block stays as a zombie until the copy is done.
  for (uint64_t i = 1; i <= 300; ++i) PutBlock(i);
  ASSERT_LT(store_->Stats().blocks, 301u) << "the host tier must have evicted";
  Drain();
  absl::StatusOr<std::vector<uint8_t>> got = Read(0);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, Bytes(0, kBlock));
  EXPECT_EQ(store_->tier_stats().gpu_checksum_failures, 0u);
}

// Runs `fn` on a thread and says whether it finished within `limit` (a deadlock
// detector, not a timing: the limits are far above what the calls take). The
// thread is joined either way, after `unblock`.
bool FinishesWhileBlocked(const std::function<void()>& fn, const std::function<void()>& unblock) {
  absl::Notification done;
  std::thread t([&] {
    fn();
    done.Notify();
  });
  const bool finished = done.WaitForNotificationWithTimeout(absl::Seconds(20));
  unblock();
  t.join();
  return finished;
}

// The promotion of an evicted block hangs on the device (a stuck copy holding the
// tier's lock). Before, the store's one mutex was held through the copy: every
// Lookup that missed the host tier, every Put/Commit (queueing the copy) and every
// Delete waited with it, for ever. Now none of them waits; a read of another gpu
// copy waits at most device_timeout, then the tier is switched off (reads of gpu
// copies are misses from then on) and the hung read, when the device returns,
// brings nothing back.
TEST_P(TieredStoreTest, AHungDeviceNeverStallsTheHostTier) {
  if (GetParam()) GTEST_SKIP() << "a hung device is injected through the host-memory tier";
  TieredStoreConfig config;
  config.device_timeout = absl::Seconds(2);  // far above what the calls before Read(20) take
  Make(64ull << 20, config);
  for (uint64_t i = 0; i < 400; ++i) {
    PutBlock(i);
    if (i % 10 == 9) Drain();
  }
  Drain();
  ASSERT_EQ(store_->tier_stats().gpu_blocks, 400u);
  fault_->hang_get_ = true;
  absl::StatusOr<std::vector<uint8_t>> hung_read = absl::UnknownError("not run");
  std::thread reader([&] { hung_read = Read(0); });  // block 0 lives only in the gpu tier
  for (int i = 0; i < 20000 && fault_->hung_.load() == 0; ++i) absl::SleepFor(absl::Milliseconds(1));
  ASSERT_EQ(fault_->hung_.load(), 1);

  absl::StatusOr<std::vector<uint8_t>> host_hit = absl::UnknownError("not run");
  bool visible = false, visible_after = true;
  absl::Status del = absl::UnknownError("not run"), put = absl::UnknownError("not run");
  absl::StatusOr<std::vector<uint8_t>> other_gpu_read = absl::UnknownError("not run");
  TierStats during;
  const bool finished = FinishesWhileBlocked(
      [&] {
        host_hit = Read(399);
        visible = Visible(5);  // a gpu-only key: the Lookup takes the tier's lock
        std::vector<uint8_t> b = Bytes(1000, kBlock);
        put = store_->Put("ns", Key(1000), b, Sum(b), PutOptions{});
        del = store_->Delete("ns", Key(10));  // a gpu-only key: its erase waits for the copier
        during = store_->tier_stats();
        // Waits behind the hung promotion for device_timeout, then gives up.
        other_gpu_read = Read(20);
        visible_after = Visible(30);
      },
      [&] { fault_->Unhang(); });
  reader.join();
  ASSERT_TRUE(finished) << "a host-tier call waited for the hung device";
  ASSERT_TRUE(host_hit.ok()) << host_hit.status();
  EXPECT_EQ(*host_hit, Bytes(399, kBlock));
  EXPECT_TRUE(visible);
  EXPECT_TRUE(put.ok()) << put;
  EXPECT_TRUE(del.ok()) << del;
  EXPECT_FALSE(during.gpu_off);
  EXPECT_EQ(other_gpu_read.status().code(), absl::StatusCode::kNotFound) << other_gpu_read.status();
  EXPECT_FALSE(visible_after);
  // The hung read got its bytes once the device returned, but the tier was off by
  // then: nothing comes back from it.
  EXPECT_EQ(hung_read.status().code(), absl::StatusCode::kNotFound) << hung_read.status();
  TierStats t = store_->tier_stats();
  EXPECT_TRUE(t.gpu_off);
  EXPECT_TRUE(absl::StrContains(t.gpu_off_reason, "hung")) << t.gpu_off_reason;
  EXPECT_EQ(t.gpu_blocks, 0u);
  EXPECT_EQ(t.gpu_used_bytes, 0u);
  EXPECT_EQ(t.promotions, 0u);
  // The host tier serves on, and a new block is no longer copied.
  Drain();
  absl::StatusOr<std::vector<uint8_t>> again = Read(399);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_EQ(*again, Bytes(399, kBlock));
  const uint64_t dropped = store_->tier_stats().mirror_dropped;
  PutBlock(1001);
  Drain();
  EXPECT_EQ(store_->tier_stats().mirror_dropped, dropped + 1);
  EXPECT_FALSE(fault_->Has("ns", Key(1001)));
}

// A device that keeps failing is switched off after device_error_limit failures in
// a row (before, every block was tried and logged, for ever); failures with
// successes between them are not.
TEST_P(TieredStoreTest, AFailingDeviceIsSwitchedOff) {
  if (GetParam()) GTEST_SKIP() << "device errors are injected through the host-memory tier";
  TieredStoreConfig config;
  config.device_error_limit = 4;
  Make(64ull << 20, config);
  uint64_t next = 0;
  auto put_drained = [&](int n) {
    for (int i = 0; i < n; ++i) {
      PutBlock(next++);
      Drain();
    }
  };
  for (int round = 0; round < 2; ++round) {
    fault_->fail_next_ = 3;
    put_drained(3);
    put_drained(1);  // succeeds: the run of failures starts again
  }
  TierStats t = store_->tier_stats();
  EXPECT_FALSE(t.gpu_off);
  EXPECT_EQ(t.mirror_failed, 6u);
  EXPECT_EQ(t.device_errors, 6u);
  EXPECT_EQ(t.mirrored, 2u);
  fault_->fail_next_ = 4;
  put_drained(6);
  t = store_->tier_stats();
  EXPECT_TRUE(t.gpu_off);
  EXPECT_TRUE(absl::StrContains(t.gpu_off_reason, "4 device calls failed in a row")) << t.gpu_off_reason;
  EXPECT_TRUE(absl::StrContains(t.gpu_off_reason, "device error (injected)")) << t.gpu_off_reason;
  EXPECT_EQ(t.mirror_failed, 10u);
  EXPECT_EQ(t.mirrored, 2u);
  EXPECT_EQ(t.mirror_dropped, 2u);  // the two blocks after it switched off
  EXPECT_EQ(t.gpu_blocks, 0u);
  // Every block is still served by the host tier.
  for (uint64_t i = 0; i < next; ++i) {
    absl::StatusOr<std::vector<uint8_t>> got = Read(i);
    ASSERT_TRUE(got.ok()) << i << " " << got.status();
    EXPECT_EQ(*got, Bytes(i, kBlock)) << i;
  }
}

// A Delete while the block's gpu copy is being promoted returns without waiting
// for the device, and the promotion, when the device returns, must not put the
// deleted block back.
TEST_P(TieredStoreTest, DeleteDuringAPromotionNeverResurrects) {
  if (GetParam()) GTEST_SKIP() << "a hung device is injected through the host-memory tier";
  Make(64ull << 20);
  for (uint64_t i = 0; i < 400; ++i) {
    PutBlock(i);
    if (i % 10 == 9) Drain();
  }
  Drain();
  ASSERT_FALSE(store_->Stats().blocks == 400) << "block 0 must have left the host tier";
  fault_->hang_get_ = true;
  absl::StatusOr<std::vector<uint8_t>> promoted = absl::UnknownError("not run");
  std::thread reader([&] { promoted = Read(0); });
  for (int i = 0; i < 20000 && fault_->hung_.load() == 0; ++i) absl::SleepFor(absl::Milliseconds(1));
  ASSERT_EQ(fault_->hung_.load(), 1);
  absl::Status del = absl::UnknownError("not run");
  const bool finished =
      FinishesWhileBlocked([&] { del = store_->Delete("ns", Key(0)); }, [&] { fault_->Unhang(); });
  reader.join();
  ASSERT_TRUE(finished) << "Delete waited for the device";
  EXPECT_TRUE(del.ok()) << del;
  EXPECT_EQ(promoted.status().code(), absl::StatusCode::kNotFound) << promoted.status();
  EXPECT_FALSE(Visible(0));
  EXPECT_EQ(Read(0).status().code(), absl::StatusCode::kNotFound);
  Drain();
  EXPECT_FALSE(fault_->Has("ns", Key(0)));  // the copier erased the device copy
  TierStats t = store_->tier_stats();
  EXPECT_FALSE(t.gpu_off);
  EXPECT_EQ(t.promotion_failures, 0u);  // a dropped copy is not a failed one
  absl::StatusOr<std::vector<uint8_t>> other = Read(1);  // promotions go on
  ASSERT_TRUE(other.ok()) << other.status();
  EXPECT_EQ(*other, Bytes(1, kBlock));
}

TEST(TieredStoreConfigTest, Validate) {
  TieredStoreConfig c;
  EXPECT_TRUE(c.Validate().ok());
  c.mirror_queue_blocks = 0;
  EXPECT_EQ(c.Validate().code(), absl::StatusCode::kInvalidArgument);
  c.mirror_queue_blocks = 8;
  c.mirror_lease = absl::ZeroDuration();
  EXPECT_EQ(c.Validate().code(), absl::StatusCode::kInvalidArgument);
  c = TieredStoreConfig{};
  c.device_timeout = absl::ZeroDuration();
  EXPECT_EQ(c.Validate().code(), absl::StatusCode::kInvalidArgument);
  c = TieredStoreConfig{};
  c.device_error_limit = 0;
  EXPECT_EQ(c.Validate().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(TieredBlockStore::Create(nullptr, nullptr, TieredStoreConfig{}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

INSTANTIATE_TEST_SUITE_P(Tiers, TieredStoreTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& i) {
                           return i.param ? std::string("Cuda") : std::string("HostMemory");
                         });

}  // namespace
}  // namespace kvhub::storage
