#include "bench/replay/live.h"

#include <algorithm>
#include <chrono>
#include <string>
#include <thread>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace kvhub::replay {
namespace {

uint64_t SplitMix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

LatencySummary Summarize(std::vector<double> us) {
  LatencySummary s;
  s.count = us.size();
  if (us.empty()) return s;
  std::sort(us.begin(), us.end());
  // Nearest rank: the pct-th percentile is the ceil(pct/100 x n)-th smallest value
  // (in integers, so 90% of 10 is rank 9, not 10 by a rounding error). Rounding
  // pct/100 x (n - 1) half up made the p50 of two samples their max.
  const size_t n = us.size();
  auto at = [&](size_t pct) {
    const size_t rank = (pct * n + 99) / 100;
    return us[std::clamp<size_t>(rank, 1, n) - 1];
  };
  s.p50_us = at(50);
  s.p90_us = at(90);
  s.p99_us = at(99);
  s.max_us = us.back();
  double sum = 0;
  for (double v : us) sum += v;
  s.mean_us = sum / static_cast<double>(us.size());
  return s;
}

using Clock = std::chrono::steady_clock;
double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

}  // namespace

void AppendBlockTokens(int64_t hash_id, uint32_t block_tokens, std::vector<int32_t>* out) {
  const uint64_t h = static_cast<uint64_t>(hash_id);
  // h * block_tokens + j names each token of each id once while it does not wrap;
  // larger ids (hashed ones, say) start at a hash of the id instead, so two of them
  // never share tokens (before, ids 2^55 apart did).
  const bool fits = h <= (~uint64_t{0} - block_tokens) / block_tokens;
  const uint64_t base = fits ? h * block_tokens : SplitMix64(h);
  for (uint32_t j = 0; j < block_tokens; ++j) {
    out->push_back(static_cast<int32_t>(SplitMix64(fits ? base + j : base ^ j) % 100000) + 1000);
  }
}

std::vector<BlockKey> TraceBlockKeys(const Trace& trace, absl::string_view ns, const ModelSpec& spec) {
  std::vector<BlockKey> key_of(trace.distinct_blocks);
  std::vector<uint8_t> known(trace.distinct_blocks, 0);
  const U128 root = ChainRoot(ns, spec.Fingerprint());
  std::vector<int32_t> tokens;
  for (const TraceRequest& r : trace.requests) {
    U128 prev = root;
    for (size_t i = 0; i < r.blocks.size(); ++i) {
      const uint32_t b = r.blocks[i];
      if (!known[b]) {  // a block's key is computed once, at its first reference
        tokens.clear();
        AppendBlockTokens(r.hash_ids[i], spec.block_tokens, &tokens);
        key_of[b] = NextBlockKey(prev, tokens);
        known[b] = 1;
      }
      prev = key_of[b];
    }
  }
  return key_of;
}

Trace TruncateTrace(const Trace& trace, size_t n) {
  if (n == 0 || n >= trace.requests.size()) return trace;
  Trace out;
  absl::flat_hash_map<uint32_t, uint32_t> dense;
  out.requests.assign(trace.requests.begin(), trace.requests.begin() + static_cast<long>(n));
  for (TraceRequest& r : out.requests) {
    for (uint32_t& b : r.blocks) {
      b = dense.try_emplace(b, static_cast<uint32_t>(dense.size())).first->second;
    }
    out.total_input_tokens += r.input_length;
  }
  out.distinct_blocks = static_cast<uint32_t>(dense.size());
  return out;
}

absl::Status CheckLiveRun(const Trace& trace, const PayloadFactory& payloads, const LiveOptions& o) {
  if (!(o.speedup >= 0)) return absl::InvalidArgumentError("speedup must be >= 0");
  const size_t n_req = o.max_requests == 0 ? trace.requests.size()
                                           : std::min(o.max_requests, trace.requests.size());
  int64_t ts_min = 0, ts_max = 0;
  size_t most_blocks = 0;
  for (size_t q = 0; q < n_req; ++q) {
    const TraceRequest& r = trace.requests[q];
    // Pacing sends the requests in trace order, each due at its timestamp after the
    // first one's: a timestamp that goes back is due at once, and the pacing lag
    // then reports the trace's backward jump as lag that never happened (2000, 0, 0
    // at speedup 1 reported 2 s). The simulator does not care; pacing does.
    if (o.speedup > 0 && q > 0 && r.timestamp_ms < trace.requests[q - 1].timestamp_ms) {
      return absl::InvalidArgumentError(absl::StrCat(
          "trace request ", q + 1, r.line > 0 ? absl::StrCat(" (line ", r.line, ")") : std::string(),
          ": timestamp ", r.timestamp_ms, " ms is before the previous request's ",
          trace.requests[q - 1].timestamp_ms,
          " ms; pacing (speedup > 0) needs timestamps that never decrease: sort the trace by timestamp, "
          "or replay it with speedup 0 (no pacing)"));
    }
    ts_min = q == 0 ? r.timestamp_ms : std::min(ts_min, r.timestamp_ms);
    ts_max = q == 0 ? r.timestamp_ms : std::max(ts_max, r.timestamp_ms);
    most_blocks = std::max(most_blocks, r.blocks.size());
  }
  // Pacing sleeps until start + timestamp / speedup: a span past ~11 days is a
  // mistake (and past ~292 years it would not fit a clock's duration).
  if (o.speedup > 0 && !(static_cast<double>(ts_max - ts_min) / 1000.0 / o.speedup <= 1e6)) {
    return absl::InvalidArgumentError(absl::StrFormat(
        "speedup %g paces the trace's %.0f s over more than 1e6 s: raise it, or give 0 (no pacing)", o.speedup,
        static_cast<double>(ts_max - ts_min) / 1000.0));
  }
  // Fetched copies and published payloads of the largest request, at once.
  const uint64_t block = std::max(payloads.first_block_bytes(), payloads.block_bytes());
  const long double need = 2.0L * most_blocks * block;
  if (o.memory_bytes > 0 && need > o.memory_bytes / 2.0L) {
    return absl::ResourceExhaustedError(absl::StrFormat(
        "the trace's largest request has %d blocks of up to %d bytes: replaying it holds ~%.1f GiB at once, "
        "more than half of the %.1f GiB this process may use; lower --bytes_per_token",
        most_blocks, block, static_cast<double>(need) / (1ull << 30), o.memory_bytes / double(1ull << 30)));
  }
  return absl::OkStatus();
}

void PrepareReplayClient(ClientConfig* config) {
  config->max_inline_batch_bytes = 256ull << 20;  // the most ClientConfig and kvhubd allow
  // Every block inline, as the simulation's order assumes: a reservation batch (the
  // default above 4 MiB) evicts for all its blocks before committing any.
  config->inline_put_max_block_bytes = 256ull << 20;
  config->max_keys_per_rpc = 4096;
}

absl::StatusOr<LiveResult> RunLive(const Trace& trace, Client& client,
                                   const PayloadFactory& payloads, const LiveOptions& o) {
  if (absl::Status s = CheckLiveRun(trace, payloads, o); !s.ok()) return s;
  const ModelSpec& spec = payloads.spec();
  const uint32_t bt = spec.block_tokens;
  const size_t n_req = o.max_requests == 0 ? trace.requests.size()
                                           : std::min(o.max_requests, trace.requests.size());
  LiveResult res;
  const auto note = [&res](const absl::Status& s) {
    if (res.first_error.ok() && !s.ok()) res.first_error = s;
  };
  std::vector<double> lookup_us, fetch_us, publish_us, lag_us;
  std::vector<int32_t> tokens;
  std::vector<std::vector<uint8_t>> payload;  // per block of the request
  std::vector<std::vector<uint8_t>> fetched;
  std::vector<uint8_t> scratch;
  std::vector<BlockKey> new_keys;
  std::vector<uint64_t> new_sizes;
  const Clock::time_point start = Clock::now();
  const int64_t ts0 = n_req ? trace.requests[0].timestamp_ms : 0;
  const auto stopped = [&o] { return o.stop != nullptr && o.stop->load(std::memory_order_relaxed); };
  for (size_t q = 0; q < n_req; ++q) {
    const TraceRequest& r = trace.requests[q];
    if (stopped()) {
      res.interrupted = true;
      break;
    }
    if (o.speedup > 0) {
      double due = static_cast<double>(r.timestamp_ms - ts0) / 1000.0 / o.speedup;
      const Clock::time_point due_at =
          start + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(due));
      // In slices, so a stop request is seen during a long pacing wait.
      while (Clock::now() < due_at && !stopped()) {
        const Clock::time_point slice = Clock::now() + std::chrono::milliseconds(50);
        std::this_thread::sleep_until(std::min(due_at, slice));
      }
      if (stopped()) {
        res.interrupted = true;
        break;
      }
      lag_us.push_back(std::max(0.0, std::chrono::duration<double, std::micro>(Clock::now() - due_at).count()));
    }
    tokens.clear();
    for (int64_t h : r.hash_ids) AppendBlockTokens(h, bt, &tokens);
    size_t n = r.blocks.size();
    if (!o.pad_partial_tail && n > 0 && r.BlockTokens(n - 1, bt) < bt) {
      tokens.resize(tokens.size() - (bt - r.BlockTokens(n - 1, bt)));
      --n;  // the client stores and looks up full blocks only
    }
    res.requests++;
    res.requested_tokens += r.input_length;

    Clock::time_point t0 = Clock::now();
    absl::StatusOr<LookupResult> look = client.LookupPrefix(o.ns, spec, tokens);
    Clock::time_point t1 = Clock::now();
    if (!look.ok()) return look.status();
    lookup_us.push_back(Seconds(t1 - t0) * 1e6);
    res.lookup_failures += look->unreachable_keys;
    note(look->first_error);
    const size_t lead = std::min(look->hit_blocks, n);
    res.lookup_hit_blocks += lead;

    size_t valid = 0;
    if (lead > 0) {
      fetched.resize(std::max(fetched.size(), lead));
      std::vector<std::span<uint8_t>> bufs(lead);
      for (size_t i = 0; i < lead; ++i) {
        fetched[i].resize(payloads.SizeOf(i));
        bufs[i] = std::span<uint8_t>(fetched[i]);
      }
      Clock::time_point f0 = Clock::now();
      absl::StatusOr<FetchResult> got = client.Fetch(o.ns, spec, tokens, lead, bufs);
      Clock::time_point f1 = Clock::now();
      if (!got.ok()) return got.status();
      fetch_us.push_back(Seconds(f1 - f0) * 1e6);
      res.fetch_s += Seconds(f1 - f0);
      valid = got->valid_blocks;
      res.fetch_failures += lead - valid;
      for (const absl::Status& s : got->status) {
        if (s.ok()) continue;
        if (absl::IsNotFound(s)) {
          ++res.fetch_evicted;
          continue;
        }
        ++res.fetch_errors;
        note(s);
      }
      if (o.verify) {
        for (size_t i = 0; i < valid; ++i) {
          std::span<const uint8_t> bytes(fetched[i].data(), got->sizes[i]);
          if (!payloads.Verify(look->keys[i], i, bytes, &scratch)) {
            ++res.verify_failures;
            valid = i;  // a block that does not verify ends the hit
            break;
          }
        }
      }
      // Bytes of the blocks that count (loaded and verified), not of those after a
      // failure (they were counted before the check).
      for (size_t i = 0; i < valid; ++i) res.fetched_bytes += got->sizes[i];
      res.fetched_blocks += valid;
    }
    for (size_t i = 0; i < valid; ++i) res.hit_tokens += r.BlockTokens(i, bt);

    // The blocks Publish will upload (those its own lookup finds absent: as this
    // one did, unless a block left meanwhile): in one call per shard, or out of order.
    new_keys.clear();
    new_sizes.clear();
    for (size_t i = 0; i < n; ++i) {
      if (look->present[i]) continue;
      new_keys.push_back(look->keys[i]);
      new_sizes.push_back(payloads.SizeOf(i));
    }
    if (client.MostPutCallsPerShard(new_keys, new_sizes) > 1) ++res.unordered_publishes;

    // Publish every block: the client skips those present and uploads the rest.
    // The verified fetched bytes serve as the payloads of the hit blocks; the
    // others are made from the key.
    payload.resize(std::max(payload.size(), n));
    std::vector<std::span<const uint8_t>> spans(n);
    for (size_t i = 0; i < n; ++i) {
      if (i < valid && o.verify) {
        spans[i] = std::span<const uint8_t>(fetched[i].data(), payloads.SizeOf(i));
        continue;
      }
      payloads.Make(look->keys[i], i, &payload[i]);
      spans[i] = std::span<const uint8_t>(payload[i]);
    }
    Clock::time_point p0 = Clock::now();
    absl::StatusOr<PublishResult> pub = client.Publish(o.ns, spec, tokens, spans);
    Clock::time_point p1 = Clock::now();
    if (!pub.ok()) return pub.status();
    publish_us.push_back(Seconds(p1 - p0) * 1e6);
    res.publish_s += Seconds(p1 - p0);
    res.published_blocks += pub->stored;
    res.skipped_blocks += pub->skipped;
    res.put_failures += pub->failed;
    for (const absl::Status& s : pub->errors) note(s);
    res.published_bytes += pub->bytes_uploaded;
  }
  res.wall_s = Seconds(Clock::now() - start);
  res.lookup = Summarize(std::move(lookup_us));
  res.fetch = Summarize(std::move(fetch_us));
  res.publish = Summarize(std::move(publish_us));
  res.lag = Summarize(std::move(lag_us));
  return res;
}

}  // namespace kvhub::replay
