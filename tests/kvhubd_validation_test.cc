// Malformed, oversized and out-of-range requests to a real kvhubd: each fails with the
// documented code and a message naming the field, and everything stored stays served.
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "absl/synchronization/notification.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/generic/generic_stub.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/support/client_callback.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/kvhub_test_util.h"
#include "tests/testing/kvhubd_process.h"

namespace kvhub::testing {
namespace {

using ::testing::HasSubstr;

// One call of any kind (unary or streaming) with hand-made request bytes: writes each
// of `messages`, half-closes, reads until the server finishes. What a client with a
// broken protobuf library, or a hostile one, sends.
class RawCall final : public grpc::ClientBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  static grpc::Status Run(const std::string& address, const std::string& method,
                          std::vector<std::string> messages) {
    auto channel = grpc::CreateChannel(address, grpc::InsecureChannelCredentials());
    grpc::GenericStub stub(channel);
    RawCall call(std::move(messages));
    call.ctx_.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    stub.PrepareBidiStreamingCall(&call.ctx_, method, grpc::StubOptions(), &call);
    call.StartRead(&call.in_);
    call.WriteNext();
    call.StartCall();
    call.done_.WaitForNotification();
    return call.status_;
  }

  void OnWriteDone(bool ok) override {
    if (ok) WriteNext();
  }
  void OnWritesDoneDone(bool) override {}
  void OnReadDone(bool ok) override {
    if (ok) StartRead(&in_);
  }
  void OnDone(const grpc::Status& s) override {
    status_ = s;
    done_.Notify();
  }

 private:
  explicit RawCall(std::vector<std::string> messages) : messages_(std::move(messages)) {}
  void WriteNext() {
    if (next_ == messages_.size()) {
      StartWritesDone();
      return;
    }
    grpc::Slice slice(messages_[next_++]);
    out_ = grpc::ByteBuffer(&slice, 1);
    StartWrite(&out_);
  }

  grpc::ClientContext ctx_;
  std::vector<std::string> messages_;
  size_t next_ = 0;
  grpc::ByteBuffer out_, in_;
  grpc::Status status_;
  absl::Notification done_;
};

constexpr int kStored = 8;
constexpr size_t kBlockBytes = 64 << 10;

class KvhubdValidationTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto p = KvhubdProcess::Start({.flags = {"--shutdown_timeout_ms=1000", "--capacity_bytes=64MiB", "--region_bytes=64MiB",
                                             "--max_block_bytes=1MiB", "--log_level=warn"}});
    ASSERT_TRUE(p.ok()) << p.status();
    proc_ = p->release();
    auto stub = NewKvHubStub(proc_->grpc_address());
    v1::PutRequest req;
    req.set_namespace_("tenant");
    for (int i = 0; i < kStored; ++i) {
      v1::PutItem* it = req.add_items();
      it->set_key(TestKey(i));
      it->set_data(TestBlock(i, kBlockBytes));
      it->set_checksum(Checksum(it->data()));
    }
    v1::PutResponse resp;
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub->Put(&ctx, req, &resp).ok());
    for (const auto& s : resp.items()) ASSERT_EQ(s.code(), 0) << s.message();
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
  void TearDown() override { ExpectStoredIntact(); }

  // Everything stored before is still there, byte-exact, and nothing else appeared.
  void ExpectStoredIntact() {
    v1::GetRequest req;
    req.set_namespace_("tenant");
    for (int i = 0; i < kStored + 2; ++i) *req.mutable_keys() += TestKey(i);
    req.set_inline_data(true);
    v1::GetResponse resp;
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub_->Get(&ctx, req, &resp).ok());
    for (int i = 0; i < kStored; ++i) {
      ASSERT_EQ(resp.blocks(i).status().code(), 0) << i;
      EXPECT_EQ(resp.blocks(i).data(), TestBlock(i, kBlockBytes)) << i;
    }
    EXPECT_EQ(resp.blocks(kStored).status().code(), grpc::StatusCode::NOT_FOUND);
    // An inline Get's leases end when gRPC has sent the bytes, which may be just after
    // the client has them: wait briefly for them to drain.
    v1::StatsResponse st;
    for (int i = 0; i < 200; ++i) {
      grpc::ClientContext sctx;
      ASSERT_TRUE(stub_->Stats(&sctx, v1::StatsRequest(), &st).ok());
      if (st.tiers(0).leased_blocks() == 0) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    EXPECT_EQ(st.tiers(0).blocks(), static_cast<uint64_t>(kStored));
    EXPECT_EQ(st.tiers(0).leased_blocks(), 0u);
  }

  static void ExpectInvalid(const grpc::Status& s, const char* field) {
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
    EXPECT_THAT(s.error_message(), HasSubstr(field));
  }

  grpc::Status Lookup(const std::string& ns, const std::string& keys) {
    v1::LookupRequest req;
    req.set_namespace_(ns);
    req.set_keys(keys);
    v1::LookupResponse resp;
    grpc::ClientContext ctx;
    return stub_->Lookup(&ctx, req, &resp);
  }

  static KvhubdProcess* proc_;
  std::unique_ptr<v1::KvHub::Stub> stub_;
};
KvhubdProcess* KvhubdValidationTest::proc_ = nullptr;

TEST_F(KvhubdValidationTest, BadKeysAndNamespaces) {
  ExpectInvalid(Lookup("tenant", std::string(17, 'k')), "keys");
  ExpectInvalid(Lookup("tenant", ""), "keys");
  ExpectInvalid(Lookup("tenant", std::string(5000 * 16, 'k')), "5000 keys");
  ExpectInvalid(Lookup("", TestKey(0)), "namespace");
  ExpectInvalid(Lookup(std::string(300, 'n'), TestKey(0)), "namespace");
  ExpectInvalid(Lookup("bad\x01ns", TestKey(0)), "namespace");

  v1::DeleteRequest del;  // a bad key anywhere fails the whole delete: key 0 stays
  del.set_namespace_("tenant");
  del.set_keys(TestKey(0) + "short");
  v1::DeleteResponse del_resp;
  grpc::ClientContext ctx;
  ExpectInvalid(stub_->Delete(&ctx, del, &del_resp), "keys");

  v1::PinRequest pin;
  pin.set_namespace_("tenant");
  pin.set_keys(std::string(4097 * 16, 'p'));
  v1::PinResponse pin_resp;
  grpc::ClientContext pctx;
  ExpectInvalid(stub_->Pin(&pctx, pin, &pin_resp), "keys");
}

TEST_F(KvhubdValidationTest, OversizedAndMalformedPuts) {
  // A block bigger than the shard's max_block_bytes (1 MiB) is refused alone, per
  // item: a client cannot know the shard's setting, and one such block failed the
  // whole batch (the item before it was not stored).
  v1::PutRequest req;
  req.set_namespace_("tenant");
  v1::PutItem* good = req.add_items();
  good->set_key(TestKey(kStored + 2));
  good->set_data(TestBlock(99, 1000));
  good->set_checksum(Checksum(good->data()));
  v1::PutItem* big = req.add_items();
  big->set_key(TestKey(kStored + 1));
  big->set_data(std::string((1 << 20) + 1, 'x'));
  big->set_checksum(Checksum(big->data()));
  v1::PutResponse resp;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub_->Put(&ctx, req, &resp).ok());
    ASSERT_EQ(resp.items_size(), 2);
    EXPECT_EQ(resp.items(0).code(), 0) << resp.items(0).message();
    EXPECT_EQ(resp.items(1).code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(resp.items(1).message(), HasSubstr("exceeds max_block_bytes"));
    v1::DeleteRequest del;  // the fixture's check wants only its own blocks stored
    del.set_namespace_("tenant");
    del.set_keys(TestKey(kStored + 2));
    v1::DeleteResponse dresp;
    grpc::ClientContext dctx;
    ASSERT_TRUE(stub_->Delete(&dctx, del, &dresp).ok());
  }
  // Past the protocol's 256 MiB the whole call is malformed (a size field that large).
  good->set_key(TestKey(kStored + 3));
  big->set_data("abc");
  big->set_size(4);
  {
    grpc::ClientContext ctx;
    ExpectInvalid(stub_->Put(&ctx, req, &resp), "items[1].size");
  }
  big->set_size(0);
  big->set_key(std::string(20, 'k'));
  {
    grpc::ClientContext ctx;
    ExpectInvalid(stub_->Put(&ctx, req, &resp), "items[1].key");
  }

  v1::PutStartRequest sreq;
  sreq.set_namespace_("tenant");
  v1::PutItem* it = sreq.add_items();
  it->set_key(TestKey(kStored));
  it->set_size(2 << 20);
  v1::PutStartResponse sresp;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub_->PutStart(&ctx, sreq, &sresp).ok());
    ASSERT_EQ(sresp.items_size(), 1);
    EXPECT_EQ(sresp.items(0).status().code(), grpc::StatusCode::INVALID_ARGUMENT);
    EXPECT_THAT(sresp.items(0).status().message(), HasSubstr("exceeds max_block_bytes"));
  }
  it->set_size((256ull << 20) + 1);
  {
    grpc::ClientContext ctx;
    ExpectInvalid(stub_->PutStart(&ctx, sreq, &sresp), "exceeds the largest block");
  }
  it->set_size(0);
  {
    grpc::ClientContext ctx;
    ExpectInvalid(stub_->PutStart(&ctx, sreq, &sresp), "items[0].size");
  }
  sreq.clear_items();
  {
    grpc::ClientContext ctx;
    ExpectInvalid(stub_->PutStart(&ctx, sreq, &sresp), "items");
  }
}

TEST_F(KvhubdValidationTest, LeaseOutOfRangeAndUnknownIds) {
  v1::GetRequest g;
  g.set_namespace_("tenant");
  g.set_keys(TestKey(0));
  g.set_lease_ms(600001);
  v1::GetResponse gresp;
  {
    grpc::ClientContext ctx;
    ExpectInvalid(stub_->Get(&ctx, g, &gresp), "lease_ms");
  }
  {
    grpc::ClientContext ctx;
    auto reader = stub_->GetStream(&ctx, g);
    v1::GetChunk c;
    EXPECT_FALSE(reader->Read(&c));
    ExpectInvalid(reader->Finish(), "lease_ms");
  }
  // Unknown ids are per-item NOT_FOUND; id 0 or an empty list is malformed.
  v1::PutCommitRequest creq;
  creq.add_reservation_ids(987654321);
  v1::PutCommitResponse cresp;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub_->PutCommit(&ctx, creq, &cresp).ok());
    EXPECT_EQ(cresp.items(0).code(), grpc::StatusCode::NOT_FOUND);
    EXPECT_THAT(cresp.items(0).message(), HasSubstr("987654321"));
  }
  creq.add_reservation_ids(0);
  {
    grpc::ClientContext ctx;
    ExpectInvalid(stub_->PutCommit(&ctx, creq, &cresp), "reservation_ids[1]");
  }
  v1::ReleaseRequest rel;
  v1::ReleaseResponse rel_resp;
  {
    grpc::ClientContext ctx;
    ExpectInvalid(stub_->Release(&ctx, rel, &rel_resp), "lease_ids");
  }
  rel.add_lease_ids(123456789);
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub_->Release(&ctx, rel, &rel_resp).ok());
    EXPECT_EQ(rel_resp.items(0).code(), grpc::StatusCode::NOT_FOUND);
  }
  v1::PutAbortRequest abort_req;
  abort_req.add_reservation_ids(55555);
  v1::PutAbortResponse abort_resp;
  grpc::ClientContext ctx;
  ASSERT_TRUE(stub_->PutAbort(&ctx, abort_req, &abort_resp).ok());
  EXPECT_EQ(abort_resp.items(0).code(), grpc::StatusCode::NOT_FOUND);
}

TEST_F(KvhubdValidationTest, PutDataOutOfBoundsAndUnknownReservation) {
  v1::PutStartRequest sreq;
  sreq.set_namespace_("tenant");
  v1::PutItem* it = sreq.add_items();
  it->set_key(TestKey(kStored));
  it->set_size(1000);
  it->set_checksum(1);
  v1::PutStartResponse sresp;
  {
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub_->PutStart(&ctx, sreq, &sresp).ok());
  }
  ASSERT_EQ(sresp.items(0).status().code(), 0);
  const uint64_t id = sresp.items(0).reservation_id();

  auto put_data = [&](uint64_t rid, uint64_t offset, const std::string& data) {
    v1::PutDataResponse dresp;
    grpc::ClientContext ctx;
    auto writer = stub_->PutData(&ctx, &dresp);
    v1::PutDataChunk c;
    c.set_reservation_id(rid);
    c.set_offset(offset);
    c.set_data(data);
    writer->Write(c);
    writer->WritesDone();
    return writer->Finish();
  };
  ExpectInvalid(put_data(id, 999, "ab"), "exceeds reservation");
  ExpectInvalid(put_data(id, 1ull << 63, "a"), "exceeds reservation");
  ExpectInvalid(put_data(id, 0, std::string(1001, 'a')), "exceeds reservation");
  ExpectInvalid(put_data(0, 0, "a"), "reservation_id");
  grpc::Status s = put_data(id + 1000000, 0, "a");
  EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND) << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("reservation_id"));

  // Abort it: nothing becomes visible.
  v1::PutAbortRequest abort_req;
  abort_req.add_reservation_ids(id);
  v1::PutAbortResponse abort_resp;
  grpc::ClientContext ctx;
  ASSERT_TRUE(stub_->PutAbort(&ctx, abort_req, &abort_resp).ok());
  EXPECT_EQ(abort_resp.items(0).code(), 0);
}

// gRPC's typed handlers answer a request that does not parse with UNIMPLEMENTED and
// no message; kvhubd parses every request itself and says what is wrong.
TEST_F(KvhubdValidationTest, RequestsThatDoNotParseGetInvalidArgument) {
  // Field 1, length-delimited, 16 bytes announced and 3 sent: no message parses it.
  const std::string truncated("\x0a\x10" "abc", 5);
  // LookupRequest-shaped bytes: namespace (field 1) "\xff\xfe", not UTF-8, then one key.
  const std::string not_utf8 = std::string("\x0a\x02\xff\xfe\x12\x10", 6) + TestKey(0);
  struct Case {
    const char* method;
    const char* message;
  };
  const Case cases[] = {
      {"Lookup", "kvhub.v1.LookupRequest"},       {"PutStart", "kvhub.v1.PutStartRequest"},
      {"PutData", "kvhub.v1.PutDataChunk"},        {"PutCommit", "kvhub.v1.PutCommitRequest"},
      {"PutAbort", "kvhub.v1.PutAbortRequest"},    {"Put", "kvhub.v1.PutRequest"},
      {"Get", "kvhub.v1.GetRequest"},              {"GetStream", "kvhub.v1.GetRequest"},
      {"Release", "kvhub.v1.ReleaseRequest"},      {"Delete", "kvhub.v1.DeleteRequest"},
      {"Pin", "kvhub.v1.PinRequest"},              {"Stats", "kvhub.v1.StatsRequest"},
      {"Health", "kvhub.v1.HealthRequest"},        {"Connect", "kvhub.v1.ConnectRequest"},
      {"Session", "kvhub.v1.SessionRequest"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.method);
    const std::string method = std::string("/kvhub.v1.KvHub/") + c.method;
    grpc::Status s = RawCall::Run(proc_->grpc_address(), method, {truncated});
    ExpectInvalid(s, (std::string("does not parse as ") + c.message).c_str());
  }
  for (const char* m : {"Lookup", "Get", "Delete", "Pin"}) {
    SCOPED_TRACE(m);
    grpc::Status s = RawCall::Run(proc_->grpc_address(), std::string("/kvhub.v1.KvHub/") + m, {not_utf8});
    ExpectInvalid(s, "not valid UTF-8");
  }
  // A PutData stream whose second chunk does not parse ends with that error (the
  // first is a valid chunk of a real reservation: an empty first chunk, as before,
  // was refused for its reservation_id 0 and the second never read).
  {
    v1::PutStartRequest start;
    start.set_namespace_("tenant");
    v1::PutItem* item = start.add_items();
    item->set_key(TestKey(kStored + 5));
    item->set_size(8);
    item->set_checksum(1);
    v1::PutStartResponse started;
    grpc::ClientContext sctx;
    ASSERT_TRUE(stub_->PutStart(&sctx, start, &started).ok());
    ASSERT_EQ(started.items(0).status().code(), 0) << started.items(0).status().message();
    v1::PutDataChunk chunk;
    chunk.set_reservation_id(started.items(0).reservation_id());
    chunk.set_data("12345678");
    grpc::Status s =
        RawCall::Run(proc_->grpc_address(), "/kvhub.v1.KvHub/PutData", {chunk.SerializeAsString(), truncated});
    ExpectInvalid(s, "does not parse as kvhub.v1.PutDataChunk");
    v1::PutAbortRequest abort;  // nothing of it stays (TearDown checks what is stored)
    abort.add_reservation_ids(started.items(0).reservation_id());
    v1::PutAbortResponse aborted;
    grpc::ClientContext actx;
    ASSERT_TRUE(stub_->PutAbort(&actx, abort, &aborted).ok());
    EXPECT_EQ(aborted.items(0).code(), 0) << aborted.items(0).message();
  }
  // The same bytes, well formed, are served (the parse is not what refuses them).
  v1::LookupRequest ok;
  ok.set_namespace_("tenant");
  ok.set_keys(TestKey(0));
  EXPECT_TRUE(RawCall::Run(proc_->grpc_address(), "/kvhub.v1.KvHub/Lookup", {ok.SerializeAsString()}).ok());
}

}  // namespace
}  // namespace kvhub::testing
