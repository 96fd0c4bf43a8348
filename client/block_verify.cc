#include "client/block_verify.h"

#include "absl/strings/str_cat.h"
#include "common/hash.h"

namespace kvhub {
namespace {

absl::Status SizeMismatch(uint64_t received, uint64_t declared) {
  return absl::DataLossError(
      absl::StrCat("block size mismatch: received ", received, " bytes, shard declared ", declared));
}

}  // namespace

absl::Status VerifyBlock(std::span<const uint8_t> bytes, uint64_t declared_size,
                         uint64_t declared_checksum) {
  if (bytes.size() != declared_size) return SizeMismatch(bytes.size(), declared_size);
  return VerifyBlockChecksum(Xxh3_64(bytes.data(), bytes.size()), declared_checksum);
}

absl::Status VerifyHashedBlock(uint64_t received, uint64_t xxh3_64, uint64_t declared_size,
                               uint64_t declared_checksum) {
  if (received != declared_size) return SizeMismatch(received, declared_size);
  return VerifyBlockChecksum(xxh3_64, declared_checksum);
}

absl::Status VerifyBlockChecksum(uint64_t got, uint64_t declared_checksum) {
  if (got != declared_checksum) {
    return absl::DataLossError(absl::StrCat("block checksum mismatch: xxh3-64 ", absl::Hex(got),
                                            ", shard declared ", absl::Hex(declared_checksum)));
  }
  return absl::OkStatus();
}

}  // namespace kvhub
