// In-process tests of the KvHub handlers over a real BlockStore (no network):
// the handler logic, its validation and that a refused request changes nothing.
#include "cachesvc/kvhub_service.h"

#include <cstring>
#include <string>
#include <vector>

#include "common/hash.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvhub::cachesvc {
namespace {

using ::testing::HasSubstr;

std::string KeyBytes(uint64_t i) {
  BlockKey k{i * 0x9e3779b97f4a7c15ull + 1, i};
  auto b = k.Bytes();
  return std::string(b.begin(), b.end());
}

std::string Block(uint64_t i, size_t n) {
  std::string s(n, '\0');
  for (size_t j = 0; j < n; ++j) s[j] = static_cast<char>((i * 131 + j * 7) & 0xff);
  return s;
}

class ServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    config_ = KvhubdConfig::Defaults();
    config_.store.capacity_bytes = 64ull << 20;
    config_.store.region_bytes = 64ull << 20;
    config_.store.max_block_bytes = 4ull << 20;
    config_.store.try_hugepages = false;
    Rebuild();
  }
  // A new store, table and service with config_.
  void Rebuild() {
    ASSERT_TRUE(config_.Validate().ok()) << config_.Validate();
    service_.reset();
    table_.reset();
    auto store = storage::BlockStore::Create(config_.store);
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = std::move(*store);
    table_ = std::make_unique<ReservationTable>(store_.get(), Clock::Real(), absl::Milliseconds(10));
    metrics_ = std::make_unique<ServiceMetrics>(4, 4);
    service_ = std::make_unique<KvHubService>(config_, store_.get(), table_.get(), metrics_.get());
    service_->set_node_id("test-node");
  }

  grpc::Status PutOne(uint64_t i, const std::string& data, uint64_t checksum) {
    v1::PutRequest req;
    req.set_namespace_("ns");
    v1::PutItem* it = req.add_items();
    it->set_key(KeyBytes(i));
    it->set_data(data);
    it->set_checksum(checksum);
    v1::PutResponse resp;
    grpc::Status s = service_->DoPut(req, &resp);
    if (s.ok() && resp.items(0).code() != 0) {
      return grpc::Status(static_cast<grpc::StatusCode>(resp.items(0).code()), resp.items(0).message());
    }
    return s;
  }

  KvhubdConfig config_;
  std::unique_ptr<storage::BlockStore> store_;
  std::unique_ptr<ReservationTable> table_;
  std::unique_ptr<ServiceMetrics> metrics_;
  std::unique_ptr<KvHubService> service_;
};

// A UCX call's answer is at most 1 MiB. A Get whose answer would be larger (here:
// a long namespace past its lease share, so each of 3000 items carries a long
// refusal) is refused with RESOURCE_EXHAUSTED and the leases it granted end: the
// worker used to swap the answer for INTERNAL and the client never learnt them.
TEST_F(ServiceTest, AUcxGetWhoseAnswerIsTooLargeReleasesItsLeases) {
  config_.store.max_leases = 4096;
  config_.store.namespace_quota_bytes = 17ull << 20;  // a share of 1088 leases
  Rebuild();
  const std::string ns(250, 'n');
  std::string keys;
  for (uint64_t i = 0; i < 4096; ++i) {
    v1::PutRequest req;
    req.set_namespace_(ns);
    v1::PutItem* it = req.add_items();
    it->set_key(KeyBytes(i));
    const std::string data = Block(i, 4096);
    it->set_data(data);
    it->set_checksum(Xxh3_64(data.data(), data.size()));
    v1::PutResponse resp;
    ASSERT_TRUE(service_->DoPut(req, &resp).ok());
    ASSERT_EQ(resp.items(0).code(), 0) << i << ": " << resp.items(0).message();
    keys += KeyBytes(i);
  }
  v1::GetRequest req;
  req.set_namespace_(ns);
  req.set_keys(keys);
  absl::StatusOr<std::string> got = service_->UcxCall(v1::UCX_CALL_GET, req.SerializeAsString());
  ASSERT_FALSE(got.ok());
  EXPECT_EQ(got.status().code(), absl::StatusCode::kResourceExhausted) << got.status();
  EXPECT_EQ(store_->Stats().leased_blocks, 0u) << "the refused answer's leases live on";
  EXPECT_EQ(metrics_->get_bytes(), 0u) << "a refused answer served nothing";
  // Fewer keys fit, and lease as usual.
  req.set_keys(keys.substr(0, 16 * 512));
  got = service_->UcxCall(v1::UCX_CALL_GET, req.SerializeAsString());
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(store_->Stats().leased_blocks, 512u);
  EXPECT_EQ(metrics_->get_bytes(), 512u * 4096);
}

TEST_F(ServiceTest, PutLookupGetInlineRoundTrip) {
  std::string data = Block(1, 100000);
  ASSERT_TRUE(PutOne(1, data, Xxh3_64(data.data(), data.size())).ok());

  v1::LookupRequest lreq;
  lreq.set_namespace_("ns");
  lreq.set_keys(KeyBytes(1) + KeyBytes(2) + KeyBytes(1));
  lreq.set_block_tokens(256);
  v1::LookupResponse lresp;
  ASSERT_TRUE(service_->DoLookup(lreq, &lresp).ok());
  EXPECT_EQ(lresp.present(), std::string("\1\0\1", 3));
  EXPECT_EQ(lresp.prefix_hits(), 1u);
  EXPECT_EQ(metrics_->lookup_requested_keys(), 3u);
  EXPECT_EQ(metrics_->lookup_hit_keys(), 2u);

  // Another namespace does not see it.
  lreq.set_namespace_("other");
  ASSERT_TRUE(service_->DoLookup(lreq, &lresp).ok());
  EXPECT_EQ(lresp.present(), std::string("\0\0\0", 3));

  v1::GetRequest greq;
  greq.set_namespace_("ns");
  greq.set_keys(KeyBytes(1) + KeyBytes(2));
  greq.set_inline_data(true);
  v1::GetResponse gresp;
  ASSERT_TRUE(service_->DoGet(greq, &gresp).ok());
  ASSERT_EQ(gresp.blocks_size(), 2);
  EXPECT_EQ(gresp.blocks(0).status().code(), 0);
  EXPECT_EQ(gresp.blocks(0).data(), data);
  EXPECT_EQ(gresp.blocks(0).checksum(), Xxh3_64(data.data(), data.size()));
  EXPECT_EQ(gresp.blocks(0).lease_id(), 0u);
  EXPECT_EQ(gresp.blocks(1).status().code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_EQ(store_->Stats().leased_blocks, 0u);  // inline Get releases at once
}

TEST_F(ServiceTest, GetWithLeaseThenRelease) {
  config_.store.max_lease = absl::Seconds(60);
  config_.store.default_lease = absl::Seconds(7);
  Rebuild();
  std::string data = Block(3, 5000);
  ASSERT_TRUE(PutOne(3, data, Xxh3_64(data.data(), data.size())).ok());
  v1::GetRequest greq;
  greq.set_namespace_("ns");
  greq.set_keys(KeyBytes(3));
  greq.set_lease_ms(5000);
  v1::GetResponse gresp;
  ASSERT_TRUE(service_->DoGet(greq, &gresp).ok());
  ASSERT_EQ(gresp.blocks(0).status().code(), 0);
  EXPECT_NE(gresp.blocks(0).lease_id(), 0u);
  EXPECT_EQ(gresp.blocks(0).location().size(), 5000u);
  EXPECT_TRUE(gresp.blocks(0).data().empty());
  EXPECT_EQ(gresp.lease_ms(), 5000u);  // what was asked, within max_lease
  EXPECT_EQ(store_->Stats().leased_blocks, 1u);
  // The lease granted is reported: capped at max_lease, default_lease for 0.
  greq.set_lease_ms(600000);  // the API's limit; this shard's max_lease is 60 s
  v1::GetResponse capped;
  ASSERT_TRUE(service_->DoGet(greq, &capped).ok());
  EXPECT_EQ(capped.lease_ms(), 60000u);
  greq.set_lease_ms(0);
  v1::GetResponse dflt;
  ASSERT_TRUE(service_->DoGet(greq, &dflt).ok());
  EXPECT_EQ(dflt.lease_ms(), 7000u);
  for (const v1::GetResponse* r : {&capped, &dflt}) {
    v1::ReleaseRequest rel;
    rel.add_lease_ids(r->blocks(0).lease_id());
    v1::ReleaseResponse rel_resp;
    ASSERT_TRUE(service_->DoRelease(rel, &rel_resp).ok());
  }

  v1::ReleaseRequest rreq;
  rreq.add_lease_ids(gresp.blocks(0).lease_id());
  rreq.add_lease_ids(gresp.blocks(0).lease_id());
  v1::ReleaseResponse rresp;
  ASSERT_TRUE(service_->DoRelease(rreq, &rresp).ok());
  EXPECT_EQ(rresp.items(0).code(), 0);
  EXPECT_EQ(rresp.items(1).code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(ServiceTest, TwoPhasePutAndChecksumRefusal) {
  std::string good = Block(5, 3000);
  v1::PutStartRequest sreq;
  sreq.set_namespace_("ns");
  for (uint64_t k : {5, 6}) {
    v1::PutItem* it = sreq.add_items();
    it->set_key(KeyBytes(k));
    it->set_size(good.size());
    it->set_checksum(Xxh3_64(good.data(), good.size()));
  }
  v1::PutStartResponse sresp;
  ASSERT_TRUE(service_->DoPutStart(sreq, &sresp).ok());
  ASSERT_EQ(sresp.items_size(), 2);
  ASSERT_EQ(sresp.items(0).status().code(), 0) << sresp.items(0).status().message();
  uint64_t id_good = sresp.items(0).reservation_id();
  uint64_t id_bad = sresp.items(1).reservation_id();
  EXPECT_GT(sresp.items(0).expires_unix_ms(), absl::ToUnixMillis(absl::Now()));
  // Time left, for clients whose clock differs from the shard's.
  const int64_t timeout_ms = absl::ToInt64Milliseconds(config_.store.reservation_timeout);
  EXPECT_GT(sresp.items(0).expires_in_ms(), timeout_ms - 1000);
  EXPECT_LE(sresp.items(0).expires_in_ms(), timeout_ms);

  ASSERT_TRUE(table_->Write(id_good, 0, absl::string_view(good).substr(0, 1000)).ok());
  ASSERT_TRUE(table_->Write(id_good, 1000, absl::string_view(good).substr(1000)).ok());
  std::string corrupt = good;
  corrupt[10] ^= 1;
  ASSERT_TRUE(table_->Write(id_bad, 0, corrupt).ok());
  // Out of bounds and unknown ids.
  absl::Status s = table_->Write(id_good, 2999, "ab");
  EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
  EXPECT_THAT(s.message(), HasSubstr("exceeds reservation"));
  EXPECT_TRUE(absl::IsNotFound(table_->Write(424242, 0, "x")));

  v1::PutCommitRequest creq;
  creq.add_reservation_ids(id_good);
  creq.add_reservation_ids(id_bad);
  creq.add_reservation_ids(id_good);  // second commit of the same id
  v1::PutCommitResponse cresp;
  ASSERT_TRUE(service_->DoPutCommit(creq, &cresp).ok());
  EXPECT_EQ(cresp.items(0).code(), 0);
  EXPECT_EQ(cresp.items(1).code(), grpc::StatusCode::DATA_LOSS);
  EXPECT_EQ(cresp.items(2).code(), grpc::StatusCode::NOT_FOUND);

  v1::LookupRequest lreq;
  lreq.set_namespace_("ns");
  lreq.set_keys(KeyBytes(5) + KeyBytes(6));
  v1::LookupResponse lresp;
  ASSERT_TRUE(service_->DoLookup(lreq, &lresp).ok());
  EXPECT_EQ(lresp.present(), std::string("\1\0", 2));
  // No write can reach a committed reservation.
  EXPECT_TRUE(absl::IsNotFound(table_->Write(id_good, 0, "x")));
}

TEST_F(ServiceTest, MalformedRequestsChangeNothing) {
  std::string data = Block(7, 4096);
  ASSERT_TRUE(PutOne(7, data, Xxh3_64(data.data(), data.size())).ok());
  const storage::BlockStoreStats before = store_->Stats();

  v1::PutRequest put;
  put.set_namespace_("ns");
  v1::PutItem* ok_item = put.add_items();
  ok_item->set_key(KeyBytes(8));
  ok_item->set_data(data);
  ok_item->set_checksum(Xxh3_64(data.data(), data.size()));
  v1::PutItem* bad = put.add_items();
  bad->set_key(std::string(15, 'k'));
  bad->set_data(data);
  v1::PutResponse put_resp;
  grpc::Status s = service_->DoPut(put, &put_resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("items[1].key"));

  v1::DeleteRequest del;
  del.set_namespace_(std::string(300, 'n'));
  del.set_keys(KeyBytes(7));
  v1::DeleteResponse del_resp;
  s = service_->DoDelete(del, &del_resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("namespace"));

  v1::GetRequest get;
  get.set_namespace_("ns");
  get.set_keys(KeyBytes(7));
  get.set_lease_ms(700000);
  v1::GetResponse get_resp;
  s = service_->DoGet(get, &get_resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(s.error_message(), HasSubstr("lease_ms"));

  const storage::BlockStoreStats after = store_->Stats();
  EXPECT_EQ(after.blocks, before.blocks);
  EXPECT_EQ(after.leased_blocks, 0u);
  EXPECT_EQ(after.reserved_bytes, 0u);
  get.set_lease_ms(0);
  get.set_inline_data(true);
  ASSERT_TRUE(service_->DoGet(get, &get_resp).ok());
  EXPECT_EQ(get_resp.blocks(0).data(), data);
}

TEST_F(ServiceTest, DrainingRefusesNewPutsButServesReads) {
  std::string data = Block(9, 1000);
  ASSERT_TRUE(PutOne(9, data, Xxh3_64(data.data(), data.size())).ok());
  service_->BeginDrain();
  EXPECT_EQ(PutOne(10, data, Xxh3_64(data.data(), data.size())).error_code(), grpc::StatusCode::UNAVAILABLE);
  v1::PutStartRequest sreq;
  sreq.set_namespace_("ns");
  sreq.add_items()->set_key(KeyBytes(11));
  sreq.mutable_items(0)->set_size(10);
  v1::PutStartResponse sresp;
  EXPECT_EQ(service_->DoPutStart(sreq, &sresp).error_code(), grpc::StatusCode::UNAVAILABLE);
  v1::GetRequest get;
  get.set_namespace_("ns");
  get.set_keys(KeyBytes(9));
  get.set_inline_data(true);
  v1::GetResponse gresp;
  ASSERT_TRUE(service_->DoGet(get, &gresp).ok());
  EXPECT_EQ(gresp.blocks(0).data(), data);
}

TEST_F(ServiceTest, OnlyPrefixLookupsCountTowardTheTokenHitRate) {
  std::string data = Block(21, 1024);
  ASSERT_TRUE(PutOne(21, data, Xxh3_64(data.data(), data.size())).ok());
  v1::LookupRequest lreq;
  lreq.set_namespace_("ns");
  lreq.set_keys(KeyBytes(21) + KeyBytes(22));
  lreq.set_block_tokens(256);
  lreq.set_model("m");
  v1::LookupResponse lresp;
  lreq.set_prefix(false);  // a publisher asking which blocks exist
  ASSERT_TRUE(service_->DoLookup(lreq, &lresp).ok());
  v1::StatsResponse st;
  ASSERT_TRUE(service_->DoStats(&st).ok());
  EXPECT_EQ(st.lookup_requested_keys(), 2u);
  EXPECT_EQ(st.lookup_requested_tokens(), 0u);
  lreq.set_prefix(true);  // a prefill asking for its prefix
  ASSERT_TRUE(service_->DoLookup(lreq, &lresp).ok());
  ASSERT_TRUE(service_->DoStats(&st).ok());
  EXPECT_EQ(st.lookup_requested_keys(), 4u);
  EXPECT_EQ(st.lookup_requested_tokens(), 512u);
  EXPECT_EQ(st.lookup_hit_tokens(), 256u);
}

// Inline Get hands gRPC slices that point into the tier. A client that reads slowly
// (or stops) can keep them past the lease; the bytes must stay the block's until gRPC
// drops them, even when the block is deleted and the tier refills meanwhile.
TEST_F(ServiceTest, ZeroCopyGetBytesStayTheBlocksAfterTheLeaseEnds) {
  config_.store.capacity_bytes = 4ull << 20;
  config_.store.region_bytes = 4ull << 20;
  config_.store.max_block_bytes = 1ull << 20;
  config_.store.default_lease = config_.store.max_lease = absl::Milliseconds(20);
  Rebuild();

  const std::string data = Block(1, 1 << 20);
  ASSERT_TRUE(PutOne(1, data, Xxh3_64(data.data(), data.size())).ok());
  v1::GetRequest get;
  get.set_namespace_("ns");
  get.set_keys(KeyBytes(1));
  get.set_inline_data(true);
  std::vector<grpc::Slice> slices;
  ASSERT_TRUE(service_->DoGetInlineSlices(get, &slices).ok());
  ASSERT_EQ(slices.size(), 2u);
  ASSERT_EQ(slices[1].size(), data.size());

  absl::SleepFor(absl::Milliseconds(50));  // the lease ends
  store_->ExpireNow();
  v1::DeleteRequest del;
  del.set_namespace_("ns");
  del.set_keys(KeyBytes(1));
  v1::DeleteResponse del_resp;
  ASSERT_TRUE(service_->DoDelete(del, &del_resp).ok());
  ASSERT_EQ(del_resp.items(0).code(), 0);
  for (uint64_t i = 2; i < 12; ++i) {  // 2.5x the tier: every free chunk is reused
    const std::string b = Block(i, 1 << 20);
    grpc::Status s = PutOne(i, b, Xxh3_64(b.data(), b.size()));
    ASSERT_TRUE(s.ok() || s.error_code() == grpc::StatusCode::RESOURCE_EXHAUSTED) << s.error_message();
  }
  EXPECT_EQ(std::memcmp(slices[1].begin(), data.data(), data.size()), 0);
  EXPECT_EQ(store_->Stats().leased_blocks, 1u);  // the hold
  slices.clear();                                // gRPC drops them: the hold ends
  EXPECT_EQ(store_->Stats().leased_blocks, 0u);
  const std::string last = Block(20, 1 << 20);
  EXPECT_TRUE(PutOne(20, last, Xxh3_64(last.data(), last.size())).ok());  // the chunk is free again
}

TEST_F(ServiceTest, DeletePinAndStats) {
  std::string data = Block(12, 2048);
  ASSERT_TRUE(PutOne(12, data, Xxh3_64(data.data(), data.size())).ok());
  v1::PinRequest pin;
  pin.set_namespace_("ns");
  pin.set_keys(KeyBytes(12) + KeyBytes(13));
  pin.set_pin(true);
  v1::PinResponse pin_resp;
  ASSERT_TRUE(service_->DoPin(pin, &pin_resp).ok());
  EXPECT_EQ(pin_resp.items(0).code(), 0);
  EXPECT_EQ(pin_resp.items(1).code(), grpc::StatusCode::NOT_FOUND);

  v1::StatsResponse st;
  ASSERT_TRUE(service_->DoStats(&st).ok());
  EXPECT_EQ(st.node_id(), "test-node");
  ASSERT_EQ(st.tiers_size(), 1);
  EXPECT_EQ(st.tiers(0).tier(), "host");
  EXPECT_EQ(st.tiers(0).blocks(), 1u);
  EXPECT_EQ(st.tiers(0).pinned_blocks(), 1u);
  EXPECT_EQ(st.put_bytes(), 2048u);

  v1::DeleteRequest del;
  del.set_namespace_("ns");
  del.set_keys(KeyBytes(12) + KeyBytes(12));
  v1::DeleteResponse del_resp;
  ASSERT_TRUE(service_->DoDelete(del, &del_resp).ok());
  EXPECT_EQ(del_resp.items(0).code(), 0);
  EXPECT_EQ(del_resp.items(1).code(), grpc::StatusCode::NOT_FOUND);
}

// A latency below zero (timed across a clock step) counts as zero: the sum is a
// counter and may not go down (it wrapped to ~1.8e10 s before).
TEST(MetricsTest, ANegativeLatencyDoesNotLowerTheSum) {
  ServiceMetrics m(2, 1);
  m.RecordRpc(Rpc::kLookup, absl::Milliseconds(3), 0);
  m.RecordRpc(Rpc::kLookup, absl::Seconds(-5), 0);
  const std::string text = m.RenderPrometheus(MetricsSnapshotInputs{});
  EXPECT_THAT(text, HasSubstr("kvhub_rpc_latency_seconds_sum{method=\"Lookup\"} 0.003\n"));
  EXPECT_THAT(text, HasSubstr("kvhub_rpc_latency_seconds_count{method=\"Lookup\"} 2\n"));
}

TEST(MetricsTest, LabelCardinalityIsBoundedAndRendered) {
  ServiceMetrics m(2, 1);
  m.RecordLookup("a", "m1", 4, 2, 256);
  m.RecordLookup("a", "m3", 4, 4, 256);   // a's second model: past a's one model slot
  m.RecordLookup("b", "m2", 4, 4, 256);   // b's own slots: a's models took none of them
  m.RecordLookup("c", "m1", 4, 0, 256);   // namespace folded into "other"
  m.RecordRpc(Rpc::kLookup, absl::Microseconds(70), 0);
  MetricsSnapshotInputs in;
  in.node_id = "n";
  in.ucx_connections = 3;
  in.ucx_sessions = 2;
  std::string text = m.RenderPrometheus(in);
  EXPECT_THAT(text, HasSubstr("\nkvhub_ucx_connections 3\n"));
  EXPECT_THAT(text, HasSubstr("\nkvhub_ucx_sessions 2\n"));
  EXPECT_EQ(text.find("kvhub_ucx_accepting"), std::string::npos) << "UCX off by design: no gauge";
  in.ucx_accepting = false;
  EXPECT_THAT(m.RenderPrometheus(in), HasSubstr("\nkvhub_ucx_accepting 0\n"));
  in.ucx_accepting = true;
  EXPECT_THAT(m.RenderPrometheus(in), HasSubstr("\nkvhub_ucx_accepting 1\n"));
  in.ucx_accepting.reset();
  EXPECT_THAT(text, HasSubstr("kvhub_lookup_requested_tokens_total{namespace=\"a\",model=\"m1\"} 1024"));
  // Model slots are per namespace: one tenant's many model names (a made-up one per
  // Lookup) folded every other tenant's models into "other" before.
  EXPECT_THAT(text, HasSubstr("kvhub_lookup_hit_tokens_total{namespace=\"a\",model=\"other\"} 1024"));
  EXPECT_THAT(text, HasSubstr("kvhub_lookup_hit_tokens_total{namespace=\"b\",model=\"m2\"} 1024"));
  EXPECT_THAT(text, HasSubstr("kvhub_lookup_requested_tokens_total{namespace=\"other\",model=\"m1\"} 1024"));
  EXPECT_THAT(text, HasSubstr("kvhub_rpc_latency_seconds_bucket{method=\"Lookup\",le=\"0.0001\"} 1"));
  EXPECT_THAT(text, HasSubstr("kvhub_rpc_requests_total{method=\"Lookup\",code=\"OK\"} 1"));
  EXPECT_EQ(text.find("namespace=\"c\""), std::string::npos);
  // A namespace (or model) really named "other" joins the overflow row: it was
  // rendered beside it with the same labels (a duplicate series).
  ServiceMetrics dup(2, 4);
  dup.RecordLookup("a", "m", 1, 1, 16);
  dup.RecordLookup("other", "other", 1, 1, 16);
  dup.RecordLookup("b", "m", 1, 1, 16);
  dup.RecordLookup("c", "m", 1, 1, 16);  // past the cap: "other"
  const std::string d = dup.RenderPrometheus(MetricsSnapshotInputs{});
  EXPECT_THAT(d, HasSubstr("kvhub_lookup_requests_total{namespace=\"b\",model=\"m\"} 1\n"));
  EXPECT_THAT(d, HasSubstr("kvhub_lookup_requests_total{namespace=\"other\",model=\"other\"} 1\n"));
  EXPECT_THAT(d, HasSubstr("kvhub_lookup_requests_total{namespace=\"other\",model=\"m\"} 1\n"));
  for (const char* series : {"kvhub_lookup_requests_total{namespace=\"other\",model=\"other\"}",
                             "kvhub_lookup_requests_total{namespace=\"other\",model=\"m\"}"}) {
    const size_t first = d.find(series);
    ASSERT_NE(first, std::string::npos) << series;
    EXPECT_EQ(d.find(series, first + 1), std::string::npos) << series << " twice";
  }
  EXPECT_EQ(text.find("process_open_fds"), std::string::npos);  // unknown: not rendered
  in.open_fds = 12;
  in.max_fds = 1024;
  text = m.RenderPrometheus(in);
  EXPECT_THAT(text, HasSubstr("\nprocess_open_fds 12\n"));
  EXPECT_THAT(text, HasSubstr("\nprocess_max_fds 1024\n"));
}

}  // namespace
}  // namespace kvhub::cachesvc
