#pragma once
// .kvraw: a simple file of one block's uncompressed K/V, the CLI's exchange
// format (spec in docs/format.md, "kvraw"). 64-byte little-endian header:
//   0  "KVRW"      4  u32 version (1)   8 u32 layers   12 u32 kv_heads
//   16 u32 head_dim 20 u32 tokens  24 u8 dtype (1 bf16, 2 fp16, 3 fp32)
//   25 u8 rope pairing (1 neox, 2 interleaved)  26 u16 zero
//   28 u32 zero    32 f64 rope_base   40 i64 base_position   48..64 zero
// then the data, [layer][k|v][token][head][dim].
// Optional sidecar "<file>.kvq" with queries for the quality harness:
//   0 "KVRQ"  4 u32 version (1)  8 u32 layers  12 u32 kv_heads
//   16 u32 queries per kv head  20 u32 head_dim  24..32 zero
// then float32 [layer][kv_head][query][dim].

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "codec/kv_view.h"
#include "codec/quality.h"

namespace kvhub::codec {

struct KvRaw {
  KvShape shape;
  double rope_base = 10000.0;
  RopePairing rope_pairing = RopePairing::kNeox;
  int64_t base_position = 0;
  std::vector<uint8_t> data;

  KvView View() const;
};

std::vector<uint8_t> SerializeKvRaw(const KvRaw& kv);
absl::StatusOr<KvRaw> ParseKvRaw(const std::vector<uint8_t>& bytes);
std::vector<uint8_t> SerializeQueries(const KvShape& shape, const Queries& q);
absl::StatusOr<Queries> ParseQueries(const KvShape& shape, const std::vector<uint8_t>& bytes);

// Whole-file helpers; errors name the path. ReadFileBytes reads through
// common/input_file.h (a directory or unreadable file is an error), WriteFileBytes
// writes through common/output_file.h (complete or not at all; "-" is stdout).
absl::StatusOr<std::vector<uint8_t>> ReadFileBytes(const std::string& path);
absl::Status WriteFileBytes(const std::string& path, const std::vector<uint8_t>& bytes);

}  // namespace kvhub::codec
