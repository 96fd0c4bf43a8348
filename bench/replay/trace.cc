#include "bench/replay/trace.h"


#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/str_cat.h"
#include "common/input_file.h"
#include "nlohmann/json.hpp"

namespace kvhub::replay {

uint32_t TraceRequest::BlockTokens(size_t i, uint32_t block_tokens) const {
  if (i + 1 < blocks.size()) return block_tokens;
  uint64_t full = uint64_t{block_tokens} * (blocks.size() - 1);
  return input_length > full ? static_cast<uint32_t>(input_length - full) : 0;
}

absl::StatusOr<Trace> ParseTrace(absl::string_view text, uint32_t block_tokens) {
  if (block_tokens == 0) return absl::InvalidArgumentError("block_tokens must be > 0");
  Trace trace;
  // By (hash id, dense id of the block before it; ~0 for a first block).
  absl::flat_hash_map<std::pair<int64_t, uint32_t>, uint32_t> dense;
  absl::flat_hash_set<int64_t> in_request;
  size_t line_no = 0;
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = text.find('\n', pos);
    if (end == absl::string_view::npos) end = text.size();
    absl::string_view line = text.substr(pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (line.find_first_not_of(" \t\r") == absl::string_view::npos) continue;
    nlohmann::json j = nlohmann::json::parse(line.begin(), line.end(), nullptr, false);
    auto bad = [&](absl::string_view why) {
      return absl::InvalidArgumentError(absl::StrCat("trace line ", line_no, ": ", why));
    };
    if (j.is_discarded() || !j.is_object()) return bad("not a JSON object");
    for (const char* f : {"timestamp", "input_length", "hash_ids"}) {
      if (!j.contains(f)) return bad(absl::StrCat("missing field \"", f, "\""));
    }
    if (!j["timestamp"].is_number() || !j["input_length"].is_number_integer() ||
        !j["hash_ids"].is_array()) {
      return bad("timestamp, input_length must be numbers and hash_ids an array");
    }
    if (j.contains("output_length") && !j["output_length"].is_number_integer()) {
      return bad("output_length must be an integer");
    }
    TraceRequest r;
    double ts = j["timestamp"].get<double>();
    int64_t in = j["input_length"].get<int64_t>();
    int64_t out = j.value("output_length", int64_t{0});
    // Milliseconds up to 2^53 (exact in a double; 285,000 years).
    if (!(ts >= 0 && ts <= 9007199254740992.0)) return bad("timestamp must be in [0, 2^53] ms");
    if (in <= 0 || in > (int64_t{1} << 31)) return bad("input_length must be in (0, 2^31]");
    if (out < 0 || out > (int64_t{1} << 31)) return bad("output_length must be in [0, 2^31]");
    r.timestamp_ms = static_cast<int64_t>(ts);
    r.input_length = static_cast<uint32_t>(in);
    r.output_length = static_cast<uint32_t>(out);
    r.line = line_no;
    size_t n = j["hash_ids"].size();
    if (n != (static_cast<uint64_t>(in) + block_tokens - 1) / block_tokens) {
      return bad(absl::StrCat("has ", n, " hash_ids; input_length ", in, " needs ceil(",
                              in, "/", block_tokens, ")"));
    }
    r.blocks.reserve(n);
    r.hash_ids.reserve(n);
    in_request.clear();
    uint32_t parent = ~uint32_t{0};
    for (const auto& h : j["hash_ids"]) {
      if (!h.is_number_integer() || h.get<int64_t>() < 0) return bad("hash_ids must be integers >= 0");
      int64_t id = h.get<int64_t>();
      if (!in_request.insert(id).second) {
        // A prefix-chained id names a block and everything before it: it cannot recur.
        return bad(absl::StrCat("hash id ", id, " appears twice; ids must be prefix-chained"));
      }
      auto [it, inserted] = dense.try_emplace(std::pair(id, parent), static_cast<uint32_t>(dense.size()));
      r.blocks.push_back(it->second);
      parent = it->second;
      r.hash_ids.push_back(id);
    }
    trace.total_input_tokens += r.input_length;
    trace.requests.push_back(std::move(r));
  }
  trace.distinct_blocks = static_cast<uint32_t>(dense.size());
  return trace;
}

uint64_t ReusesAfterOtherPrefix(const Trace& trace) {
  absl::flat_hash_map<int64_t, uint32_t> first_block;  // hash id -> the dense id it first named
  uint64_t reuses = 0;
  for (const TraceRequest& r : trace.requests) {
    for (size_t i = 0; i < r.blocks.size(); ++i) {
      auto [it, inserted] = first_block.try_emplace(r.hash_ids[i], r.blocks[i]);
      if (!inserted && it->second != r.blocks[i]) ++reuses;
    }
  }
  return reuses;
}

absl::StatusOr<Trace> LoadTrace(const std::string& path, uint32_t block_tokens) {
  // 4 GiB: ~1400x the Mooncake conversation trace (3 MB); a pipe or device (/dev/zero) fails
  // there instead of buffering up to ReadInput's 16 GiB default.
  absl::StatusOr<std::string> text = ReadInput(path, size_t{4} << 30);
  if (!text.ok()) return absl::Status(text.status().code(), absl::StrCat("trace: ", text.status().message()));
  absl::StatusOr<Trace> trace = ParseTrace(*text, block_tokens);
  if (trace.ok() && trace->requests.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("trace '", path, "' holds no requests"));
  }
  return trace;
}

std::string FormatTrace(const Trace& trace) {
  std::string out;
  for (const TraceRequest& r : trace.requests) {
    nlohmann::json j;
    j["timestamp"] = r.timestamp_ms;
    j["input_length"] = r.input_length;
    j["output_length"] = r.output_length;
    j["hash_ids"] = r.hash_ids;
    absl::StrAppend(&out, j.dump(), "\n");
  }
  return out;
}

}  // namespace kvhub::replay
