#pragma once
// Mooncake-format request traces (FAST'25 release): one JSON object per line,
//   {"timestamp": ms, "input_length": tokens, "output_length": tokens, "hash_ids": [...]}
// where hash_ids are prefix-chained block ids (equal id at equal position = same
// prefix), `trace_block_tokens` (512) tokens per block, the last one possibly partial.
//
// The loader remaps hash ids to dense ids [0, distinct) in order of first
// appearance, so simulators can index per-block state by vector. A dense id names
// a hash id after its prefix: an id that recurs after another prefix than before
// (a trace that is not prefix-chained there) is another block, as it is for
// kvhub, whose keys chain the whole prefix (ReusesAfterOtherPrefix counts them).
// Thread safety: values; no shared state.

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace kvhub::replay {

inline constexpr uint32_t kTraceBlockTokens = 512;

struct TraceRequest {
  int64_t timestamp_ms = 0;
  uint32_t input_length = 0;
  uint32_t output_length = 0;
  std::vector<uint32_t> blocks;  // dense block ids, prefix-chained
  std::vector<int64_t> hash_ids; // the ids as written in the file
  uint64_t line = 0;             // its line in the parsed text (1-based); 0: not parsed (generated)

  // Tokens of block i: block_tokens, except a partial last block.
  uint32_t BlockTokens(size_t i, uint32_t block_tokens = kTraceBlockTokens) const;
};

struct Trace {
  std::vector<TraceRequest> requests;
  uint32_t distinct_blocks = 0;
  uint64_t total_input_tokens = 0;
};

// Parses JSONL text. INVALID_ARGUMENT (naming the line) for malformed JSON, missing
// or negative fields, or len(hash_ids) != ceil(input_length / block_tokens).
absl::StatusOr<Trace> ParseTrace(absl::string_view text, uint32_t block_tokens = kTraceBlockTokens);
// Reads and parses a file. NOT_FOUND if it cannot be opened.
absl::StatusOr<Trace> LoadTrace(const std::string& path, uint32_t block_tokens = kTraceBlockTokens);
// Block references whose hash id appeared before after another prefix (0 for a
// prefix-chained trace such as Mooncake's): each is a distinct block here.
uint64_t ReusesAfterOtherPrefix(const Trace& trace);
// Writes a trace (its hash_ids) back as JSONL.
std::string FormatTrace(const Trace& trace);

}  // namespace kvhub::replay
