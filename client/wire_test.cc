#include "client/wire.h"

#include <atomic>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/time/clock.h"
#include "common/hash.h"
#include "gtest/gtest.h"
#include "kvhub/v1/kvhub.pb.h"

namespace kvhub {
namespace {

std::string Flatten(const grpc::ByteBuffer& bb) {
  std::vector<grpc::Slice> slices;
  EXPECT_TRUE(bb.Dump(&slices).ok());
  std::string s;
  for (const grpc::Slice& sl : slices) s.append(reinterpret_cast<const char*>(sl.begin()), sl.size());
  return s;
}

// Splits serialized bytes into slices of `piece` bytes, so decoders meet
// fields that straddle slice boundaries.
grpc::ByteBuffer Sliced(const std::string& bytes, size_t piece) {
  std::vector<grpc::Slice> slices;
  for (size_t off = 0; off < bytes.size(); off += piece) {
    slices.emplace_back(bytes.data() + off, std::min(piece, bytes.size() - off));
  }
  return grpc::ByteBuffer(slices.data(), slices.size());
}

TEST(WireTest, PutRequestParsesWithGeneratedClass) {
  std::vector<uint8_t> a(1000, 7), b(3, 9);
  std::vector<PutItemView> items(3);
  items[0].key = std::string(16, 'k');
  items[0].checksum = 0x1122334455667788ull;
  items[0].data = a;
  items[0].pin = true;
  items[1].key = std::string(16, 'l');
  items[1].parent = std::string(16, 'k');
  items[1].checksum = 42;
  items[1].data = b;
  items[2].key = std::string(16, 'm');
  items[2].size = 1ull << 33;  // PutStart style: size, no data
  items[2].checksum = 1;
  v1::PutRequest parsed;
  {
    BorrowedBytes borrowed;
    grpc::ByteBuffer bb = EncodePutRequest("tenant-a", items, &borrowed);
    ASSERT_TRUE(parsed.ParseFromString(Flatten(bb)));
  }
  EXPECT_EQ(parsed.namespace_(), "tenant-a");
  ASSERT_EQ(parsed.items_size(), 3);
  EXPECT_EQ(parsed.items(0).key(), std::string(16, 'k'));
  EXPECT_TRUE(parsed.items(0).parent().empty());
  EXPECT_EQ(parsed.items(0).checksum(), 0x1122334455667788ull);
  EXPECT_EQ(parsed.items(0).data(), std::string(1000, 7));
  EXPECT_TRUE(parsed.items(0).pin());
  EXPECT_EQ(parsed.items(1).parent(), std::string(16, 'k'));
  EXPECT_EQ(parsed.items(1).data(), std::string(3, 9));
  EXPECT_FALSE(parsed.items(1).pin());
  EXPECT_EQ(parsed.items(2).size(), 1ull << 33);
  EXPECT_TRUE(parsed.items(2).data().empty());
}

TEST(WireTest, PutDataChunkParsesWithGeneratedClass) {
  std::vector<uint8_t> d(5000);
  for (size_t i = 0; i < d.size(); ++i) d[i] = static_cast<uint8_t>(i);
  v1::PutDataChunk c;
  {
    BorrowedBytes borrowed;
    ASSERT_TRUE(c.ParseFromString(Flatten(EncodePutDataChunk(99, 1 << 20, d, &borrowed))));
  }
  EXPECT_EQ(c.reservation_id(), 99u);
  EXPECT_EQ(c.offset(), 1u << 20);
  EXPECT_EQ(c.data(), std::string(d.begin(), d.end()));
}

// Wait() blocks while gRPC may still read the caller's bytes (a slice over them
// lives), and returns once every reference is gone.
TEST(WireTest, BorrowedBytesWaitsForRelease) {
  std::vector<uint8_t> d(10, 1);
  BorrowedBytes b;
  std::optional<grpc::ByteBuffer> held;
  {
    grpc::ByteBuffer bb = EncodePutDataChunk(1, 0, d, &b);
    held.emplace(bb);  // a second reference to the same slices, kept past this scope
  }
  std::atomic<bool> returned{false};
  std::thread waiter([&] {
    b.Wait();
    returned.store(true);
  });
  absl::SleepFor(absl::Milliseconds(50));
  EXPECT_FALSE(returned.load()) << "Wait() returned while a slice over the caller's bytes was alive";
  held.reset();  // the last reference
  waiter.join();
  EXPECT_TRUE(returned.load());
}

TEST(WireTest, DecodesGetResponseIntoBuffers) {
  v1::GetResponse resp;
  std::string d0(3000, 'x'), d2(10, 'z');
  auto* b0 = resp.add_blocks();
  b0->set_size(d0.size());
  b0->set_checksum(Xxh3_64(d0.data(), d0.size()));
  b0->set_data(d0);
  b0->mutable_location()->set_offset(5);
  auto* b1 = resp.add_blocks();
  b1->mutable_status()->set_code(5);
  b1->mutable_status()->set_message("not found");
  auto* b2 = resp.add_blocks();
  b2->set_size(d2.size());
  b2->set_checksum(77);
  b2->set_data(d2);
  const std::string bytes = resp.SerializeAsString();
  for (size_t piece : {1ul, 7ul, 100ul, bytes.size()}) {
    std::vector<uint8_t> buf0(4096), buf1(16), buf2(5);  // buf2 too small
    std::vector<std::span<uint8_t>> dests = {buf0, buf1, buf2};
    std::vector<DecodedBlock> out;
    ASSERT_TRUE(DecodeGetResponse(Sliced(bytes, piece), dests, &out).ok());
    ASSERT_EQ(out.size(), 3u);
    EXPECT_EQ(out[0].code, 0);
    EXPECT_TRUE(out[0].data_copied);
    EXPECT_EQ(out[0].data_len, d0.size());
    EXPECT_EQ(out[0].size, d0.size());
    EXPECT_EQ(out[0].checksum, Xxh3_64(d0.data(), d0.size()));
    EXPECT_EQ(out[0].data_xxh3, Xxh3_64(d0.data(), d0.size())) << "hashed as copied, pieces of " << piece;
    EXPECT_EQ(std::string(buf0.begin(), buf0.begin() + d0.size()), d0);
    EXPECT_EQ(out[1].code, 5);
    EXPECT_EQ(out[1].message, "not found");
    EXPECT_FALSE(out[2].data_copied);
    EXPECT_EQ(out[2].data_xxh3, 0u);
    EXPECT_EQ(out[2].data_len, 10u);
    EXPECT_EQ(out[2].checksum, 77u);
  }
}

TEST(WireTest, GetResponseBlockCountMismatchIsAnError) {
  v1::GetResponse resp;
  resp.add_blocks()->set_size(1);
  std::vector<uint8_t> a(4), b(4);
  std::vector<std::span<uint8_t>> dests = {a, b};
  std::vector<DecodedBlock> out;
  EXPECT_EQ(DecodeGetResponse(Sliced(resp.SerializeAsString(), 64), dests, &out).code(),
            absl::StatusCode::kDataLoss);
}

TEST(WireTest, TruncatedGetResponseIsAnError) {
  v1::GetResponse resp;
  resp.add_blocks()->set_data(std::string(100, 'a'));
  std::string bytes = resp.SerializeAsString();
  bytes.resize(bytes.size() - 10);
  std::vector<uint8_t> a(200);
  std::vector<std::span<uint8_t>> dests = {a};
  std::vector<DecodedBlock> out;
  EXPECT_FALSE(DecodeGetResponse(Sliced(bytes, 8), dests, &out).ok());
}

TEST(WireTest, DecodesGetChunkAtOffset) {
  v1::GetChunk c;
  c.set_index(1);
  c.set_offset(4);
  c.set_data("abcd");
  c.mutable_status()->set_code(0);
  c.set_size(8);
  c.set_checksum(123);
  std::vector<uint8_t> a(8, 0), b(8, 0);
  std::vector<std::span<uint8_t>> dests = {a, b};
  DecodedChunk out;
  ASSERT_TRUE(DecodeGetChunk(Sliced(c.SerializeAsString(), 3), dests, &out).ok());
  EXPECT_EQ(out.index, 1u);
  EXPECT_TRUE(out.has_status);
  EXPECT_EQ(out.block.size, 8u);
  EXPECT_EQ(out.block.checksum, 123u);
  EXPECT_TRUE(out.data_copied);
  EXPECT_EQ(std::string(b.begin() + 4, b.end()), "abcd");
  EXPECT_EQ(std::string(a.begin(), a.end()), std::string(8, '\0'));
  // A chunk past the end of its buffer is not copied.
  c.set_offset(6);
  ASSERT_TRUE(DecodeGetChunk(Sliced(c.SerializeAsString(), 5), dests, &out).ok());
  EXPECT_FALSE(out.data_copied);
}

}  // namespace
}  // namespace kvhub
