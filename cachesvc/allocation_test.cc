// Shows that the steady-state data path in cachesvc's own code performs no heap
// allocation per block: global operator new is counted (tests/testing/alloc_counter.h) around warmed-up handler calls
// (messages are reused as the pooled gRPC allocators reuse them). gRPC's own buffers
// (slices, byte buffers; gpr_malloc) are outside this count by design.
#include <string>
#include <vector>

#include "cachesvc/kvhub_service.h"
#include "common/hash.h"
#include "gtest/gtest.h"
#include "tests/testing/alloc_counter.h"

namespace kvhub::cachesvc {
namespace {

class AllocCounter {
 public:
  AllocCounter() { kvhub::testing::StartCountingAllocations(); }
  uint64_t Stop() { return kvhub::testing::StopCountingAllocations(); }
};

std::string Key(uint64_t i) {
  BlockKey k{i * 0x9e3779b97f4a7c15ull + 3, i};
  auto b = k.Bytes();
  return std::string(b.begin(), b.end());
}

class AllocationTest : public ::testing::Test {
 protected:
  void SetUp() override {
    config_ = KvhubdConfig::Defaults();
    config_.store.capacity_bytes = 256ull << 20;
    config_.store.region_bytes = 256ull << 20;
    config_.store.max_block_bytes = 4ull << 20;
    auto store = storage::BlockStore::Create(config_.store);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
    table_ = std::make_unique<ReservationTable>(store_.get(), Clock::Real(), absl::Milliseconds(10));
    metrics_ = std::make_unique<ServiceMetrics>(8, 8);
    service_ = std::make_unique<KvHubService>(config_, store_.get(), table_.get(), metrics_.get());
  }
  KvhubdConfig config_;
  std::unique_ptr<storage::BlockStore> store_;
  std::unique_ptr<ReservationTable> table_;
  std::unique_ptr<ServiceMetrics> metrics_;
  std::unique_ptr<KvHubService> service_;
};

TEST_F(AllocationTest, PutLookupGetPerBlockAllocateNothing) {
  constexpr int kBlocks = 200;
  const std::string data(64 << 10, 'x');
  std::vector<v1::PutRequest> puts(kBlocks + 1);
  for (int i = 0; i <= kBlocks; ++i) {
    puts[i].set_namespace_("ns");
    v1::PutItem* it = puts[i].add_items();
    it->set_key(Key(i));
    it->set_data(data);
    it->set_checksum(Xxh3_64(data.data(), data.size()));
  }
  v1::PutResponse put_resp;
  ASSERT_TRUE(service_->DoPut(puts[kBlocks], &put_resp).ok());  // warm-up
  put_resp.Clear();
  AllocCounter put_count;
  for (int i = 0; i < kBlocks; ++i) {
    put_resp.Clear();
    ASSERT_TRUE(service_->DoPut(puts[i], &put_resp).ok());
  }
  EXPECT_EQ(put_count.Stop(), 0u) << "allocations while putting " << kBlocks << " blocks";
  ASSERT_EQ(put_resp.items(0).code(), 0) << put_resp.items(0).message();

  v1::LookupRequest lookup;
  lookup.set_namespace_("ns");
  lookup.set_model("m");
  lookup.set_block_tokens(256);
  for (int i = 0; i < 256; ++i) *lookup.mutable_keys() += Key(i);
  v1::LookupResponse lookup_resp;
  ASSERT_TRUE(service_->DoLookup(lookup, &lookup_resp).ok());
  AllocCounter lookup_count;
  for (int r = 0; r < 100; ++r) {
    lookup_resp.Clear();
    ASSERT_TRUE(service_->DoLookup(lookup, &lookup_resp).ok());
  }
  EXPECT_EQ(lookup_count.Stop(), 0u) << "allocations in 100 Lookups of 256 keys";
  EXPECT_EQ(lookup_resp.prefix_hits(), static_cast<uint32_t>(kBlocks + 1));  // + the warm-up block

  v1::GetRequest get;
  get.set_namespace_("ns");
  get.set_inline_data(true);
  get.set_keys(Key(0));
  v1::GetResponse get_resp;
  ASSERT_TRUE(service_->DoGet(get, &get_resp).ok());
  std::vector<std::string> keys(kBlocks);
  for (int i = 0; i < kBlocks; ++i) keys[i] = Key(i);
  AllocCounter get_count;
  for (int i = 0; i < kBlocks; ++i) {
    get.set_keys(keys[i]);  // 16 bytes into retained capacity
    get_resp.Clear();
    ASSERT_TRUE(service_->DoGet(get, &get_resp).ok());
  }
  EXPECT_EQ(get_count.Stop(), 0u) << "allocations in " << kBlocks << " inline Gets";
  EXPECT_EQ(get_resp.blocks(0).data(), data);

  // The zero-copy form gRPC serves. Our code allocates nothing; gRPC's
  // grpc_slice_new_with_user_data allocates its 32-byte refcount with operator new, one
  // per block slice, which this counter sees: so exactly one per block is expected.
  std::vector<grpc::Slice> slices;
  slices.reserve(16);
  ASSERT_TRUE(service_->DoGetInlineSlices(get, &slices).ok());
  slices.clear();
  AllocCounter slice_count;
  for (int i = 0; i < kBlocks; ++i) {
    get.set_keys(keys[i]);
    ASSERT_TRUE(service_->DoGetInlineSlices(get, &slices).ok());
    slices.clear();  // drops the slice: releases the lease
  }
  EXPECT_EQ(slice_count.Stop(), static_cast<uint64_t>(kBlocks))
      << "operator new calls in " << kBlocks << " zero-copy inline Gets (expected: gRPC's slice refcounts only)";
  EXPECT_EQ(store_->Stats().leased_blocks, 0u);
}

TEST_F(AllocationTest, TwoPhasePutAllocatesNothingPerBlock) {
  constexpr int kBlocks = 100;
  const std::string data(32 << 10, 'y');
  const uint64_t checksum = Xxh3_64(data.data(), data.size());
  std::vector<v1::PutStartRequest> starts(kBlocks + 1);
  for (int i = 0; i <= kBlocks; ++i) {
    starts[i].set_namespace_("ns2");
    v1::PutItem* it = starts[i].add_items();
    it->set_key(Key(1000 + i));
    it->set_size(data.size());
    it->set_checksum(checksum);
  }
  // As the PutStart allocator does: the response on an arena with an initial block.
  std::vector<char> initial_block(64 << 10);
  google::protobuf::ArenaOptions opts;
  opts.initial_block = initial_block.data();
  opts.initial_block_size = initial_block.size();
  google::protobuf::Arena arena(opts);
  v1::PutCommitRequest commit;
  commit.add_reservation_ids(1);
  v1::PutCommitResponse commit_resp;
  auto one = [&](int i) {
    arena.Reset();
    auto& start_resp = *google::protobuf::Arena::CreateMessage<v1::PutStartResponse>(&arena);
    ASSERT_TRUE(service_->DoPutStart(starts[i], &start_resp).ok());
    ASSERT_EQ(start_resp.items(0).status().code(), 0);
    const uint64_t id = start_resp.items(0).reservation_id();
    ASSERT_TRUE(table_->Write(id, 0, data).ok());
    commit.set_reservation_ids(0, id);
    commit_resp.Clear();
    ASSERT_TRUE(service_->DoPutCommit(commit, &commit_resp).ok());
    ASSERT_EQ(commit_resp.items(0).code(), 0) << commit_resp.items(0).message();
  };
  one(kBlocks);  // warm-up
  AllocCounter count;
  for (int i = 0; i < kBlocks; ++i) one(i);
  EXPECT_EQ(count.Stop(), 0u) << "allocations in " << kBlocks << " PutStart+write+PutCommit";
}

}  // namespace
}  // namespace kvhub::cachesvc
