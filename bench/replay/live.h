#pragma once
// Live replay: a trace against a running kvhub cluster through kvhub::Client
// (docs/replay.md, "Live mode").
//
// Tokens: block hash id h maps to block_tokens tokens
//   t_j = (splitmix64(h * block_tokens + j) mod 100000) + 1000,
// a request's tokens are its blocks' tokens in order; a partial last block is
// padded to a full block (its own tokens), so every block of the trace is a
// cacheable kvhub block, as the simulator's default model assumes; with
// pad_partial_tail = false it keeps its real length, so kvhub::Client neither
// stores nor finds it (what an engine sees; SimOptions::cache_partial_tail =
// false). Equal ids at
// equal positions give equal chain keys; distinct ids distinct keys.
//
// Per request, in trace order: LookupPrefix; Fetch of the leading hit blocks,
// each verified byte for byte against PayloadFactory::Make (a mismatch is
// counted and ends the hit there); Publish of every block (the client skips the
// present ones, uploads the rest). Requests are paced by their timestamps
// divided by `speedup` (0: back to back). One request at a time, so the order of
// accesses each shard sees is the trace's (the simulator's AccessModel::kLiveClient).
//
// Thread safety: RunLive uses the client from the calling thread only.

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "bench/replay/payload.h"
#include "bench/replay/trace.h"
#include "client/client.h"

namespace kvhub::replay {

// The tokens of block hash id `hash_id` (appended to *out).
void AppendBlockTokens(int64_t hash_id, uint32_t block_tokens, std::vector<int32_t>* out);

// Chain keys of every dense block of the trace under (ns, spec), computed the
// way kvhub::Client does from the tokens above. (A dense id always follows the
// same parent, trace.h, so each block has one key.)
std::vector<BlockKey> TraceBlockKeys(const Trace& trace, absl::string_view ns, const ModelSpec& spec);

// The first n requests of a trace (all when n == 0 or n >= size), ids re-densified.
Trace TruncateTrace(const Trace& trace, size_t n);

struct LiveOptions {
  std::string ns = "replay";
  double speedup = 0;       // timestamps / speedup; 0 = no pacing
  size_t max_requests = 0;  // 0 = all
  bool verify = true;       // compare fetched bytes with the expected payload
  bool pad_partial_tail = true;  // see above
  // Memory the run may use (0: not checked). A request's blocks are held at once
  // (fetched and published copies), so RunLive refuses a trace whose largest
  // request would need more than half of it, instead of being OOM-killed.
  uint64_t memory_bytes = 0;
  // When set and true, RunLive stops before its next request (also during a
  // pacing wait) and returns what it measured so far with `interrupted` set; the
  // request in flight finishes first. Not owned; read from the calling thread,
  // may be set from any thread or a signal handler.
  const std::atomic<bool>* stop = nullptr;
};

struct LatencySummary {
  size_t count = 0;
  double p50_us = 0, p90_us = 0, p99_us = 0, max_us = 0, mean_us = 0;
};

struct LiveResult {
  uint64_t requests = 0;
  uint64_t requested_tokens = 0;
  uint64_t hit_tokens = 0;           // tokens of the leading run fetched and verified
  uint64_t lookup_hit_blocks = 0;    // leading run LookupPrefix reported
  uint64_t fetched_blocks = 0, fetched_bytes = 0;
  uint64_t published_blocks = 0, published_bytes = 0, skipped_blocks = 0;
  uint64_t put_failures = 0;         // blocks Publish could not store
  uint64_t fetch_failures = 0;       // looked up but not loaded (evicted meanwhile, errors)
  uint64_t verify_failures = 0;      // loaded but bytes differ from the expected payload
  // Keys whose shard did not answer a lookup (counted as misses: the hit rate is
  // then too low), and blocks a Fetch failed with an error other than NOT_FOUND
  // (of fetch_failures; NOT_FOUND is a block evicted meanwhile, a real miss).
  uint64_t lookup_failures = 0, fetch_errors = 0;
  uint64_t fetch_evicted = 0;        // of fetch_failures: NOT_FOUND (the rest follow a failed block)
  // Requests whose new blocks went to some shard in more than one put call: the
  // client runs a shard's calls in parallel, so that shard stored them out of chain
  // order and its eviction order can differ from the simulator's (live != sim).
  // 0 with PrepareReplayClient's settings unless a request carries more than 256 MiB
  // or 4096 new blocks to one shard (or blocks on both sides of 4 MiB, the largest
  // put inline).
  uint64_t unordered_publishes = 0;
  absl::Status first_error;          // the first lookup, fetch or put error; OK if none
  // Failures that make the run's numbers untrustworthy (everything but evictions).
  uint64_t errors() const { return lookup_failures + fetch_errors + put_failures + verify_failures; }
  double wall_s = 0, fetch_s = 0, publish_s = 0;
  LatencySummary lookup, fetch, publish;  // per request (fetch: requests with a hit)
  // With pacing (speedup > 0): how far behind its due time (start + timestamp /
  // speedup) each request began; large values mean the run could not keep the
  // trace's rate, so it is not the load the timestamps describe. Empty without.
  LatencySummary lag;
  // LiveOptions::stop ended the run early: `requests` of the trace's were replayed.
  bool interrupted = false;
  double hit_rate() const {
    return requested_tokens ? static_cast<double>(hit_tokens) / static_cast<double>(requested_tokens)
                            : 0.0;
  }
};

// Client settings live replay needs to equal the simulation: inline Put batches of
// up to 256 MiB and 4096 keys (not 32 MiB and 1024), so a request's new blocks
// reach each shard in one call, stored one by one in chain order as the simulator
// inserts them. A request split into several calls for one shard is stored out of
// order (the client sends them in parallel). Reservations would not split either,
// but a batch reserves all its blocks (evicting for each) before committing any,
// which the one-at-a-time simulation does not model.
void PrepareReplayClient(ClientConfig* config);

// What RunLive refuses before it sends anything (call it before starting shards):
// INVALID_ARGUMENT for a bad speedup, pacing past 1e6 s, or (with pacing) timestamps
// that go backwards; RESOURCE_EXHAUSTED for a request too large for memory_bytes.
absl::Status CheckLiveRun(const Trace& trace, const PayloadFactory& payloads, const LiveOptions& o);

// Replays trace.requests (up to max_requests). Returns a non-OK status only for
// bad input (CheckLiveRun) or a client call that failed as a whole; per-block
// failures are counted.
absl::StatusOr<LiveResult> RunLive(const Trace& trace, Client& client,
                                   const PayloadFactory& payloads, const LiveOptions& options);

}  // namespace kvhub::replay
