#pragma once
// Hand-rolled protobuf wire encoding/decoding of the kvhub.v1 messages that
// carry block bytes, so bytes move between the caller's memory and gRPC's
// slices with no intermediate std::string (one copy on receive, none on send).
// Everything else uses the generated classes. The encoders produce exactly
// what the generated serializer accepts; wire_test.cc checks both directions
// against the generated kvhub.v1 classes.

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/support/slice.h"

namespace kvhub {

// Tracks slices that point into caller memory: every such slice holds a
// reference; Wait() blocks until gRPC has dropped them all, so the caller's
// buffers may be reused. Thread-safe.
class BorrowedBytes {
 public:
  BorrowedBytes() = default;
  ~BorrowedBytes() { Wait(); }
  BorrowedBytes(const BorrowedBytes&) = delete;
  BorrowedBytes& operator=(const BorrowedBytes&) = delete;

  // A slice over [data, data+len) that keeps *this busy until released.
  grpc::Slice Borrow(const uint8_t* data, size_t len);
  void Wait();

 private:
  static void Release(void* self);
  absl::Mutex mu_;
  int64_t outstanding_ ABSL_GUARDED_BY(mu_) = 0;
};

struct PutItemView {
  std::string key;            // 16 bytes
  std::string parent;         // 16 bytes or empty
  uint64_t size = 0;          // PutStart only; 0 for inline Put
  uint64_t checksum = 0;
  std::span<const uint8_t> data;  // inline Put only
  bool pin = false;
};

// kvhub.v1.PutRequest / PutStartRequest (same shape: namespace = 1, items = 2).
// data spans are borrowed through `borrow` (must outlive the call).
grpc::ByteBuffer EncodePutRequest(absl::string_view ns, std::span<const PutItemView> items,
                                  BorrowedBytes* borrow);

// kvhub.v1.PutDataChunk; data borrowed.
grpc::ByteBuffer EncodePutDataChunk(uint64_t reservation_id, uint64_t offset,
                                    std::span<const uint8_t> data, BorrowedBytes* borrow);

// One block of a GetResponse (or the header of a GetChunk), decoded.
struct DecodedBlock {
  int32_t code = 0;           // ItemStatus.code
  std::string message;        // ItemStatus.message
  uint64_t size = 0;
  uint64_t checksum = 0;
  uint64_t lease_id = 0;
  uint64_t data_len = 0;      // bytes of the data field
  bool data_copied = false;   // data_len bytes were copied into the destination
  uint64_t data_xxh3 = 0;     // XXH3-64 of the bytes copied (DecodeGetResponse, when data_copied)
};

// Decodes a kvhub.v1.GetResponse: block i's data is copied into dests[i] when
// it fits (data_copied), otherwise left out. INVALID_ARGUMENT/DATA_LOSS on a
// malformed message or a block count other than dests.size().
absl::Status DecodeGetResponse(const grpc::ByteBuffer& buf, std::span<const std::span<uint8_t>> dests,
                               std::vector<DecodedBlock>* out);

// One kvhub.v1.GetChunk. data is copied into dests[index] at `offset` when it
// fits inside it; *copied says whether it was.
struct DecodedChunk {
  uint32_t index = 0;
  DecodedBlock block;         // status, size, checksum of the block (first chunk)
  bool has_status = false;
  uint64_t offset = 0;
  uint64_t data_len = 0;
  bool data_copied = false;
};
absl::Status DecodeGetChunk(const grpc::ByteBuffer& buf, std::span<const std::span<uint8_t>> dests,
                            DecodedChunk* out);

}  // namespace kvhub
