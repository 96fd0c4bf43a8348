// kvhubd over real gRPC: a child kvhubd on port 0, called through the raw stub.
#include <chrono>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/kvhub_test_util.h"
#include "tests/testing/kvhubd_process.h"

namespace kvhub::testing {
namespace {

using ::testing::HasSubstr;

class KvhubdApiTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto p = KvhubdProcess::Start({.flags = {"--shutdown_timeout_ms=1000", "--capacity_bytes=512MiB", "--region_bytes=256MiB",
                                             "--max_block_bytes=4MiB", "--reservation_timeout_ms=300",
                                             "--expiry_interval_ms=50", "--log_level=warn"},
                                   .node_id = "api-test"});
    ASSERT_TRUE(p.ok()) << p.status();
    proc_ = p->release();
  }
  static void TearDownTestSuite() {
    if (proc_ != nullptr) {
      EXPECT_EQ(proc_->Stop().value_or(-1), 0);
      delete proc_;
      proc_ = nullptr;
    }
  }
  void SetUp() override {
    ASSERT_NE(proc_, nullptr);
    stub_ = NewKvHubStub(proc_->grpc_address());
  }

  // The shard's Stats now.
  v1::StatsResponse StatsNow() {
    v1::StatsResponse st;
    grpc::ClientContext ctx;
    EXPECT_TRUE(stub_->Stats(&ctx, v1::StatsRequest(), &st).ok());
    return st;
  }
  // The host tier's counters from Stats.
  v1::TierStats HostTier() {
    v1::StatsResponse st = StatsNow();
    return st.tiers_size() > 0 ? st.tiers(0) : v1::TierStats();
  }
  // Waits (up to 2 s) until the host tier holds no lease: those of inline Gets end
  // when gRPC has sent their bytes, just after the client has them.
  uint64_t LeasedAfterDrain() {
    uint64_t leased = HostTier().leased_blocks();
    for (int i = 0; i < 400 && leased > 0; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
      leased = HostTier().leased_blocks();
    }
    return leased;
  }

  v1::PutResponse Put(const std::string& ns, uint64_t k, const std::string& data, uint64_t checksum) {
    v1::PutResponse resp;
    grpc::Status s = PutOne(*stub_, ns, k, data, checksum, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    return resp;
  }

  std::string Present(const std::string& ns, std::initializer_list<uint64_t> keys, uint32_t* prefix = nullptr) {
    v1::LookupRequest req;
    req.set_namespace_(ns);
    for (uint64_t k : keys) *req.mutable_keys() += TestKey(k);
    v1::LookupResponse resp;
    grpc::ClientContext ctx;
    grpc::Status s = stub_->Lookup(&ctx, req, &resp);
    EXPECT_TRUE(s.ok()) << s.error_message();
    if (prefix != nullptr) *prefix = resp.prefix_hits();
    return resp.present();
  }

  static KvhubdProcess* proc_;
  std::unique_ptr<v1::KvHub::Stub> stub_;
};
KvhubdProcess* KvhubdApiTest::proc_ = nullptr;

TEST_F(KvhubdApiTest, PutLookupGetInlineByteExact) {
  std::string a = TestBlock(1, 1 << 20), b = TestBlock(2, 12345);
  EXPECT_EQ(Put("api", 101, a, Checksum(a)).items(0).code(), 0);
  EXPECT_EQ(Put("api", 102, b, Checksum(b)).items(0).code(), 0);
  EXPECT_EQ(Put("api", 101, a, Checksum(a)).items(0).code(), grpc::StatusCode::ALREADY_EXISTS);

  uint32_t prefix = 0;
  EXPECT_EQ(Present("api", {101, 102, 103, 101}, &prefix), std::string("\1\1\0\1", 4));
  EXPECT_EQ(prefix, 2u);
  EXPECT_EQ(Present("other-ns", {101, 102}), std::string("\0\0", 2));

  v1::GetRequest req;
  req.set_namespace_("api");
  req.set_keys(TestKey(101) + TestKey(103) + TestKey(102));
  req.set_inline_data(true);
  v1::GetResponse resp;
  grpc::ClientContext ctx;
  ASSERT_TRUE(stub_->Get(&ctx, req, &resp).ok());
  ASSERT_EQ(resp.blocks_size(), 3);
  EXPECT_EQ(resp.blocks(0).status().code(), 0);
  EXPECT_EQ(resp.blocks(0).data(), a);
  EXPECT_EQ(resp.blocks(0).size(), a.size());
  EXPECT_EQ(resp.blocks(0).checksum(), Checksum(a));
  EXPECT_EQ(resp.blocks(1).status().code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_TRUE(resp.blocks(1).data().empty());
  EXPECT_EQ(resp.blocks(2).data(), b);
}

// A GetStream cut short (the client cancels after its first chunk) counts the blocks
// it started sending; only a stream that ended cleanly was counted before (nothing
// here: Stats get_bytes stayed where it was).
TEST_F(KvhubdApiTest, AGetStreamCutShortCountsWhatItSent) {
  std::string keys;
  for (uint64_t k = 901; k < 909; ++k) {  // keys no other test of the shared shard uses
    const std::string block = TestBlock(k, 4 << 20);
    ASSERT_EQ(Put("api", k, block, Checksum(block)).items(0).code(), 0);
    keys += TestKey(k);
  }
  auto get_bytes = [&] { return StatsNow().get_bytes(); };
  const uint64_t before = get_bytes();
  v1::GetRequest req;
  req.set_namespace_("api");
  req.set_keys(keys);
  {
    grpc::ClientContext ctx;
    auto reader = stub_->GetStream(&ctx, req);
    v1::GetChunk chunk;
    ASSERT_TRUE(reader->Read(&chunk));
    ctx.TryCancel();
    while (reader->Read(&chunk)) {
    }
    (void)reader->Finish();  // CANCELLED, or OK if every chunk was sent before the cancel
  }
  const absl::Time until = absl::Now() + absl::Seconds(5);
  while (get_bytes() == before && absl::Now() < until) absl::SleepFor(absl::Milliseconds(20));
  EXPECT_GE(get_bytes(), before + (4u << 20)) << "the blocks a cancelled stream sent were not counted";
}

TEST_F(KvhubdApiTest, GetLeaseThenReleaseAndGetStreamChunks) {
  std::string big = TestBlock(3, (2 << 20) + 777);  // 3 chunks of <= 1 MiB
  ASSERT_EQ(Put("api", 201, big, Checksum(big)).items(0).code(), 0);

  v1::GetRequest req;
  req.set_namespace_("api");
  req.set_keys(TestKey(201));
  req.set_lease_ms(10000);
  v1::GetResponse resp;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub_->Get(&ctx, req, &resp).ok());
  }
  ASSERT_EQ(resp.blocks(0).status().code(), 0);
  EXPECT_NE(resp.blocks(0).lease_id(), 0u);
  EXPECT_EQ(resp.blocks(0).location().size(), big.size());
  EXPECT_GE(HostTier().leased_blocks(), 1u) << "the lease is held";
  v1::ReleaseRequest rel;
  rel.add_lease_ids(resp.blocks(0).lease_id());
  v1::ReleaseResponse rel_resp;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub_->Release(&ctx, rel, &rel_resp).ok());
  }
  EXPECT_EQ(rel_resp.items(0).code(), 0);
  EXPECT_EQ(LeasedAfterDrain(), 0u) << "Release answered OK but the lease is still held";

  req.set_keys(TestKey(201) + TestKey(202));
  grpc::ClientContext ctx;
  auto reader = stub_->GetStream(&ctx, req);
  v1::GetChunk chunk;
  std::string got;
  int chunks = 0;
  bool saw_miss = false;
  while (reader->Read(&chunk)) {
    if (chunk.index() == 0) {
      if (chunks == 0) {
        EXPECT_EQ(chunk.status().code(), 0);
        EXPECT_EQ(chunk.size(), big.size());
        EXPECT_EQ(chunk.checksum(), Checksum(big));
      }
      EXPECT_EQ(chunk.offset(), got.size());
      EXPECT_LE(chunk.data().size(), 1u << 20);
      got += chunk.data();
      ++chunks;
    } else {
      EXPECT_EQ(chunk.index(), 1u);
      EXPECT_EQ(chunk.status().code(), grpc::StatusCode::NOT_FOUND);
      saw_miss = true;
    }
  }
  ASSERT_TRUE(reader->Finish().ok());
  EXPECT_EQ(chunks, 3);
  EXPECT_TRUE(saw_miss);
  EXPECT_EQ(got, big);
}

TEST_F(KvhubdApiTest, PutStartPutDataPutCommit) {
  std::string a = TestBlock(4, 300000), b = TestBlock(5, 5000);
  v1::PutStartRequest sreq;
  sreq.set_namespace_("api");
  for (auto [k, d] : {std::pair<uint64_t, const std::string*>{301, &a}, {302, &b}}) {
    v1::PutItem* it = sreq.add_items();
    it->set_key(TestKey(k));
    it->set_size(d->size());
    it->set_checksum(Checksum(*d));
    if (k == 302) it->set_parent(TestKey(301));
  }
  v1::PutStartResponse sresp;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub_->PutStart(&ctx, sreq, &sresp).ok());
  }
  ASSERT_EQ(sresp.items_size(), 2);
  for (const auto& r : sresp.items()) {
    ASSERT_EQ(r.status().code(), 0) << r.status().message();
    EXPECT_NE(r.reservation_id(), 0u);
    EXPECT_GT(r.expires_unix_ms(), 0);
  }
  // Not visible before commit.
  EXPECT_EQ(Present("api", {301, 302}), std::string("\0\0", 2));

  v1::PutDataResponse dresp;
  {
    grpc::ClientContext ctx;
    auto writer = stub_->PutData(&ctx, &dresp);
    v1::PutDataChunk c;
    for (size_t off = 0; off < a.size(); off += 65536) {
      c.set_reservation_id(sresp.items(0).reservation_id());
      c.set_offset(off);
      c.set_data(a.substr(off, 65536));
      ASSERT_TRUE(writer->Write(c));
    }
    c.set_reservation_id(sresp.items(1).reservation_id());
    c.set_offset(0);
    c.set_data(b);
    ASSERT_TRUE(writer->Write(c));
    writer->WritesDone();
    grpc::Status s = writer->Finish();
    ASSERT_TRUE(s.ok()) << s.error_message();
  }
  EXPECT_EQ(dresp.bytes_written(), a.size() + b.size());

  v1::PutCommitRequest creq;
  creq.add_reservation_ids(sresp.items(0).reservation_id());
  creq.add_reservation_ids(sresp.items(1).reservation_id());
  v1::PutCommitResponse cresp;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub_->PutCommit(&ctx, creq, &cresp).ok());
  }
  EXPECT_EQ(cresp.items(0).code(), 0) << cresp.items(0).message();
  EXPECT_EQ(cresp.items(1).code(), 0) << cresp.items(1).message();
  EXPECT_EQ(Present("api", {301, 302}), std::string("\1\1", 2));

  v1::GetRequest greq;
  greq.set_namespace_("api");
  greq.set_keys(TestKey(301) + TestKey(302));
  greq.set_inline_data(true);
  v1::GetResponse gresp;
  grpc::ClientContext ctx;
  ASSERT_TRUE(stub_->Get(&ctx, greq, &gresp).ok());
  EXPECT_EQ(gresp.blocks(0).data(), a);
  EXPECT_EQ(gresp.blocks(1).data(), b);
}

TEST_F(KvhubdApiTest, WrongChecksumIsRefusedAndNothingBecomesVisible) {
  std::string a = TestBlock(6, 40000);
  // Inline put with a wrong checksum.
  EXPECT_EQ(Put("api", 401, a, Checksum(a) ^ 1).items(0).code(), grpc::StatusCode::DATA_LOSS);
  EXPECT_EQ(Present("api", {401}), std::string("\0", 1));

  // Two-phase put whose bytes do not match the checksum.
  v1::PutStartRequest sreq;
  sreq.set_namespace_("api");
  v1::PutItem* it = sreq.add_items();
  it->set_key(TestKey(402));
  it->set_size(a.size());
  it->set_checksum(Checksum(a));
  v1::PutStartResponse sresp;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub_->PutStart(&ctx, sreq, &sresp).ok());
  }
  ASSERT_EQ(sresp.items(0).status().code(), 0);
  std::string corrupt = a;
  corrupt[123] ^= 0x40;
  {
    v1::PutDataResponse dresp;
    grpc::ClientContext ctx;
    auto writer = stub_->PutData(&ctx, &dresp);
    v1::PutDataChunk c;
    c.set_reservation_id(sresp.items(0).reservation_id());
    c.set_data(corrupt);
    ASSERT_TRUE(writer->Write(c));
    writer->WritesDone();
    ASSERT_TRUE(writer->Finish().ok());
  }
  v1::PutCommitRequest creq;
  creq.add_reservation_ids(sresp.items(0).reservation_id());
  v1::PutCommitResponse cresp;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub_->PutCommit(&ctx, creq, &cresp).ok());
  }
  EXPECT_EQ(cresp.items(0).code(), grpc::StatusCode::DATA_LOSS);
  EXPECT_FALSE(cresp.items(0).message().empty());
  EXPECT_EQ(Present("api", {402}), std::string("\0", 1));

  v1::StatsResponse st;
  grpc::ClientContext ctx;
  ASSERT_TRUE(stub_->Stats(&ctx, v1::StatsRequest(), &st).ok());
  EXPECT_GE(st.checksum_failures(), 1u);
}

TEST_F(KvhubdApiTest, UncommittedReservationExpires) {
  v1::PutStartRequest sreq;
  sreq.set_namespace_("api");
  v1::PutItem* it = sreq.add_items();
  it->set_key(TestKey(501));
  it->set_size(10000);
  it->set_checksum(1);
  v1::PutStartResponse sresp;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub_->PutStart(&ctx, sreq, &sresp).ok());
  }
  ASSERT_EQ(sresp.items(0).status().code(), 0);
  const uint64_t id = sresp.items(0).reservation_id();
  // A second reservation of the same key while the first lives is refused.
  {
    v1::PutStartResponse again;
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub_->PutStart(&ctx, sreq, &again).ok());
    EXPECT_EQ(again.items(0).status().code(), grpc::StatusCode::ABORTED);
  }
  // Timeout 300 ms, sweep every 50 ms (1.5 s: a loaded machine runs the sweep late).
  std::this_thread::sleep_for(std::chrono::milliseconds(1500));

  {
    v1::PutDataResponse dresp;
    grpc::ClientContext ctx;
    auto writer = stub_->PutData(&ctx, &dresp);
    v1::PutDataChunk c;
    c.set_reservation_id(id);
    c.set_data("late bytes");
    writer->Write(c);
    writer->WritesDone();
    grpc::Status s = writer->Finish();
    EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND) << s.error_message();
  }
  v1::PutCommitRequest creq;
  creq.add_reservation_ids(id);
  v1::PutCommitResponse cresp;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub_->PutCommit(&ctx, creq, &cresp).ok());
  }
  EXPECT_EQ(cresp.items(0).code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(Present("api", {501}), std::string("\0", 1));

  v1::StatsResponse st;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub_->Stats(&ctx, v1::StatsRequest(), &st).ok());
  }
  EXPECT_GE(st.reservations_expired(), 1u);
  // The key can be reserved again.
  v1::PutStartResponse again;
  grpc::ClientContext ctx;
  ASSERT_TRUE(stub_->PutStart(&ctx, sreq, &again).ok());
  EXPECT_EQ(again.items(0).status().code(), 0);
}

TEST_F(KvhubdApiTest, DeletePinStatsHealth) {
  std::string a = TestBlock(7, 8192);
  ASSERT_EQ(Put("api", 601, a, Checksum(a)).items(0).code(), 0);
  const uint64_t pinned_before = HostTier().pinned_blocks();
  v1::PinRequest pin;
  pin.set_namespace_("api");
  pin.set_keys(TestKey(601));
  pin.set_pin(true);
  v1::PinResponse pin_resp;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub_->Pin(&ctx, pin, &pin_resp).ok());
  }
  EXPECT_EQ(pin_resp.items(0).code(), 0);
  EXPECT_EQ(HostTier().pinned_blocks(), pinned_before + 1) << "Pin answered OK but pinned nothing";

  v1::DeleteRequest del;
  del.set_namespace_("api");
  del.set_keys(TestKey(601) + TestKey(602));
  v1::DeleteResponse del_resp;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub_->Delete(&ctx, del, &del_resp).ok());
  }
  EXPECT_EQ(del_resp.items(0).code(), 0);
  EXPECT_EQ(del_resp.items(1).code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(Present("api", {601}), std::string("\0", 1));

  v1::StatsResponse st;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub_->Stats(&ctx, v1::StatsRequest(), &st).ok());
  }
  EXPECT_EQ(st.node_id(), "api-test");
  ASSERT_EQ(st.tiers_size(), 1);
  EXPECT_EQ(st.tiers(0).tier(), "host");
  EXPECT_EQ(st.tiers(0).capacity_bytes(), 512ull << 20);
  EXPECT_GT(st.put_bytes(), 0u);
  EXPECT_FALSE(st.eviction_policy().empty());
  EXPECT_EQ(st.eviction_active_policy(), st.eviction_policy());  // only duel follows another
  EXPECT_EQ(st.eviction_policy_switches(), 0u);

  v1::HealthResponse h;
  grpc::ClientContext ctx;
  ASSERT_TRUE(stub_->Health(&ctx, v1::HealthRequest(), &h).ok());
  EXPECT_EQ(h.state(), v1::HealthResponse::SERVING);
  EXPECT_EQ(h.node_id(), "api-test");
}

}  // namespace
}  // namespace kvhub::testing
