// kvhub-replay: replays Mooncake-format traces (docs/replay.md).
//
//   kvhub-replay --trace FILE --sim [--capacities 1M,3M,10M,50M] [--policies a,b]
//                [--json OUT] [--partial_tail skip]
//   kvhub-replay --generate agentic [--seed N] [--duration_s S] [--rate R] --write_trace OUT
//   kvhub-replay --trace FILE --live (--members HOST:PORT,... | --spawn N [--shard_capacity 256MiB])
//                [--codec raw|fp8|int8|kivi4|kivi2] [--bytes_per_token 4096] [--speedup X]
//                [--max_requests N] [--policy s3fifo] [--prefix_aware false] [--json OUT]
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <limits>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/keys.h"
#include "common/log.h"
#include "common/malloc_tuning.h"
#include "common/memory_limit.h"
#include "common/mutex_checks.h"
#include "common/output_file.h"
#include "common/version.h"
#include "absl/cleanup/cleanup.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "bench/replay/byte_budget.h"
#include "bench/replay/live.h"
#include "storage/block_store.h"
#include "storage/size_classes.h"
#include "bench/replay/local_shards.h"
#include "bench/replay/payload.h"
#include "bench/replay/policies.h"
#include "bench/replay/store_model.h"
#include "client/client.h"
#include "bench/replay/simulator.h"
#include "bench/replay/trace.h"
#include "bench/replay/workload_gen.h"
#include "nlohmann/json.hpp"

namespace kvhub::replay {
namespace {

struct Args {
  std::map<std::string, std::string> kv;
  bool Has(const std::string& k) const { return kv.count(k) > 0; }
  std::string Get(const std::string& k, const std::string& d = "") const {
    auto it = kv.find(k);
    return it == kv.end() ? d : it->second;
  }
};

absl::StatusOr<bool> ParseBool(const std::string& v) {
  if (v == "true" || v == "1" || v == "yes") return true;
  if (v == "false" || v == "0" || v == "no") return false;
  return absl::InvalidArgumentError(absl::StrCat("bad boolean \"", v, "\""));
}

absl::StatusOr<Args> ParseArgs(int argc, char** argv) {
  static const absl::flat_hash_set<absl::string_view> kBool = {"sim", "live", "help", "no_belady", "no_verify",
                                                                "keep_blocks"};
  static const absl::flat_hash_set<absl::string_view> kValued = {
      "budget_accounting", "byte_budget", "bytes_per_token", "capacities", "codec", "codecs",
      "duration_s", "generate", "high_watermark", "json", "kvhubd", "low_watermark", "max_requests",
      "members", "ns", "partial_tail", "policies", "policy", "prefix_aware", "rate", "seed",
      "shard_capacity", "shard_log_level", "spawn", "spec_bytes_per_token", "speedup", "trace",
      "write_trace"};
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string s = argv[i];
    if (!absl::StartsWith(s, "--")) return absl::InvalidArgumentError(absl::StrCat("unexpected argument ", s));
    s = s.substr(2);
    const size_t eq = s.find('=');
    const std::string name = s.substr(0, eq);
    const bool is_bool = kBool.contains(name);
    if (!is_bool && !kValued.contains(name)) {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name, " (kvhub-replay --help lists them)"));
    }
    if (a.Has(name)) return absl::InvalidArgumentError(absl::StrCat("--", name, " given twice"));
    if (is_bool) {
      absl::StatusOr<bool> on = eq == std::string::npos ? true : ParseBool(s.substr(eq + 1));
      if (!on.ok()) return absl::InvalidArgumentError(absl::StrCat("--", s, ": ", on.status().message()));
      if (*on) a.kv[name] = "1";
    } else if (eq != std::string::npos) {
      a.kv[name] = s.substr(eq + 1);
    } else if (i + 1 < argc) {
      a.kv[name] = argv[++i];
    } else {
      return absl::InvalidArgumentError(absl::StrCat("--", name, " needs a value"));
    }
  }
  return a;
}

// "3M" -> 3000000 tokens, "500k", "1.5M"; "inf" (that word only) -> 0. A value
// that rounds to 0 tokens ("0.5") is refused: it meant "inf" and was dropped.
absl::StatusOr<uint64_t> ParseTokens(absl::string_view text) {
  if (text == "inf") return uint64_t{0};
  absl::string_view s = text;
  double mult = 1;
  if (absl::EndsWith(s, "M") || absl::EndsWith(s, "m")) mult = 1e6;
  if (absl::EndsWith(s, "k") || absl::EndsWith(s, "K")) mult = 1e3;
  if (absl::EndsWith(s, "G") || absl::EndsWith(s, "g")) mult = 1e9;
  if (mult != 1) s.remove_suffix(1);
  double v;
  // 1e15 tokens (2^31 blocks of 512 is 1.1e12): far beyond any cache, and exact as uint64.
  if (!absl::SimpleAtod(s, &v) || !(v > 0) || !(v * mult <= 1e15)) {
    return absl::InvalidArgumentError(absl::StrCat("bad capacity \"", s, "\": a number of tokens in (0, 1e15]"));
  }
  const uint64_t tokens = static_cast<uint64_t>(v * mult);
  if (tokens == 0) {
    return absl::InvalidArgumentError(absl::StrCat("capacity \"", text,
                                                   "\" is less than one token (only \"inf\" means no limit)"));
  }
  return tokens;
}

// "256MiB", "64M" (binary multiples), "4096".
absl::StatusOr<uint64_t> ParseBytes(absl::string_view text) {
  absl::string_view s = text;
  uint64_t mult = 1;
  for (auto [suffix, m] : std::initializer_list<std::pair<const char*, uint64_t>>{
           {"KiB", 1ull << 10}, {"MiB", 1ull << 20}, {"GiB", 1ull << 30}, {"TiB", 1ull << 40},
           {"K", 1ull << 10}, {"M", 1ull << 20}, {"G", 1ull << 30}, {"B", 1}}) {
    if (absl::ConsumeSuffix(&s, suffix)) {
      mult = m;
      break;
    }
  }
  uint64_t v;
  if (!absl::SimpleAtoi(s, &v) || v == 0) {
    return absl::InvalidArgumentError(absl::StrCat("bad size \"", text, "\": a positive whole number with an optional "
                                                   "KiB, MiB, GiB, TiB or B suffix"));
  }
  if (v > std::numeric_limits<uint64_t>::max() / mult) {
    return absl::InvalidArgumentError(absl::StrCat("size \"", text, "\" overflows 64 bits"));
  }
  return v * mult;
}

std::string Pct(double r) { return absl::StrFormat("%.2f%%", 100 * r); }

// One column of the sim table: a cache capacity, with how it was derived.
struct Column {
  std::string label;
  uint64_t tokens = 0;
  nlohmann::json meta = nlohmann::json::object();
  uint64_t evict_to_blocks = 0;  // > 0: store-style eviction rounds (SimOptions)
};

// The store model of a kvhubd host tier of `capacity` bytes holding blocks of
// `block_bytes` (a chain's first: `first_block_bytes`), with kvhubd's default
// settings (storage::BlockStoreConfig) unless --high_watermark / --low_watermark
// say otherwise.
absl::StatusOr<StoreModelInput> DefaultTierModel(const Args& a, uint64_t capacity, uint64_t block_bytes,
                                                 uint64_t first_block_bytes) {
  const storage::BlockStoreConfig d;
  StoreModelInput in;
  in.capacity_bytes = capacity;
  in.region_bytes = std::min<uint64_t>(d.region_bytes, (capacity + 4095) / 4096 * 4096);
  in.max_block_bytes = std::min<uint64_t>(d.max_block_bytes, in.region_bytes);
  in.min_block_bytes = d.min_block_bytes;
  in.size_class_steps = d.size_class_steps;
  in.high_watermark = d.high_watermark;
  in.low_watermark = d.low_watermark;
  if ((a.Has("high_watermark") && !absl::SimpleAtod(a.Get("high_watermark"), &in.high_watermark)) ||
      (a.Has("low_watermark") && !absl::SimpleAtod(a.Get("low_watermark"), &in.low_watermark))) {
    return absl::InvalidArgumentError("bad --high_watermark/--low_watermark");
  }
  in.block_bytes = block_bytes;
  in.first_block_bytes = first_block_bytes;
  return in;
}

// --capacities, or --byte_budget (budgets in bytes, or in bf16 tokens of --spec_bytes_per_token)
// x --codecs: the tokens each budget holds under each codec's real block size.
absl::StatusOr<std::vector<Column>> SimColumns(const Args& a) {
  std::vector<Column> cols;
  const std::string accounting = a.Get("budget_accounting", "encoded");
  if (accounting != "encoded" && accounting != "store") {
    return absl::InvalidArgumentError("--budget_accounting is encoded or store");
  }
  if (a.Has("budget_accounting") && !a.Has("byte_budget")) {
    return absl::InvalidArgumentError("--budget_accounting applies to --byte_budget only");
  }
  if (a.Has("byte_budget") && a.Has("capacities")) {
    return absl::InvalidArgumentError("give --capacities (tokens) or --byte_budget (bytes), not both");
  }
  // The simulator's block (SimOptions): a cache of fewer tokens holds no block.
  const uint32_t block_tokens = SimOptions().block_tokens;
  if (!a.Has("byte_budget")) {
    for (absl::string_view c : absl::StrSplit(a.Get("capacities", "1M,3M,10M,50M"), ',', absl::SkipEmpty())) {
      absl::StatusOr<uint64_t> t = ParseTokens(c);
      if (!t.ok()) return absl::InvalidArgumentError(absl::StrCat("--capacities: ", t.status().message()));
      if (*t > 0 && *t < block_tokens) {
        return absl::InvalidArgumentError(absl::StrCat("--capacities: capacity \"", c, "\" is ", *t,
                                                       " tokens, less than one block of ", block_tokens,
                                                       " (only \"inf\" means no limit)"));
      }
      if (*t > 0) cols.push_back({absl::StrCat(*t / 1e6, "M tok"), *t, {}});
    }
    if (cols.empty() && !absl::StrContains(a.Get("capacities"), "inf")) {
      return absl::InvalidArgumentError("--capacities names no capacity (e.g. 1M,3M; inf: the infinite cache only)");
    }
    return cols;
  }
  PayloadConfig pc;
  if (!absl::SimpleAtoi(a.Get("spec_bytes_per_token", "131072"), &pc.bytes_per_token)) {
    return absl::InvalidArgumentError("bad --spec_bytes_per_token");
  }
  absl::StatusOr<ModelSpec> spec = ReplayModelSpec(pc);
  if (!spec.ok()) return spec.status();
  const uint64_t bpt = pc.bytes_per_token;
  std::cerr << "byte budget: spec " << spec->CanonicalText() << ", " << bpt << " B/token bf16\n";
  for (absl::string_view b : absl::StrSplit(a.Get("byte_budget"), ',', absl::SkipEmpty())) {
    // Bytes when the value names a byte unit ("384GiB", "4096B"), else bf16 tokens of the spec.
    uint64_t budget = 0;
    if (absl::EndsWith(b, "B")) {
      absl::StatusOr<uint64_t> bytes = ParseBytes(b);
      if (!bytes.ok()) return bytes.status();
      if (*bytes > (uint64_t{1} << 62)) {
        return absl::InvalidArgumentError(absl::StrCat("--byte_budget ", b, " exceeds 2^62 bytes"));
      }
      budget = *bytes;
    } else {
      absl::StatusOr<uint64_t> bf16_tokens = ParseTokens(b);
      if (!bf16_tokens.ok()) {
        return absl::InvalidArgumentError(absl::StrCat("--byte_budget: ", bf16_tokens.status().message()));
      }
      if (*bf16_tokens == 0) return absl::InvalidArgumentError("--byte_budget has no infinite budget (inf)");
      if (*bf16_tokens > (uint64_t{1} << 62) / bpt) {  // the product would not fit (or be meaningful)
        return absl::InvalidArgumentError(absl::StrCat("--byte_budget ", b, " x ", bpt,
                                                       " bytes per token exceeds 2^62 bytes"));
      }
      budget = *bf16_tokens * bpt;
    }
    const double bf16_tokens = static_cast<double>(budget) / static_cast<double>(bpt);
    for (absl::string_view c : absl::StrSplit(a.Get("codecs", "raw,fp8,kivi4,kivi2"), ',', absl::SkipEmpty())) {
      absl::StatusOr<CodecBlockSize> sz = BlockSizeFor(*spec, std::string(c), budget);
      if (!sz.ok()) return sz.status();
      uint64_t tokens = TokensInBudget(budget, *sz, spec->block_tokens);
      uint64_t evict_to_blocks = 0;
      std::optional<StoreModel> store_model;  // --budget_accounting store only
      if (a.Get("budget_accounting", "encoded") == "store") {
        // What a kvhubd host tier of `budget` bytes holds with its default (or the
        // given) watermarks: size-class chunks, evicting in rounds from the high
        // down to the low watermark (store_model.h).
        if (sz->store_chunk_bytes == 0) {
          return absl::InvalidArgumentError(absl::StrCat(
              c, " blocks of ", sz->encoded_bytes, " bytes exceed the default max_block_bytes"));
        }
        absl::StatusOr<StoreModelInput> in = DefaultTierModel(a, budget, sz->encoded_bytes, sz->first_bytes);
        if (!in.ok()) return in.status();
        absl::StatusOr<StoreModel> m = ModelStore(*in);
        if (!m.ok()) return m.status();
        tokens = m->capacity_blocks * spec->block_tokens;
        evict_to_blocks = m->evict_to_blocks;
        store_model = *m;
      } else if (a.Get("budget_accounting", "encoded") != "encoded") {
        return absl::InvalidArgumentError("--budget_accounting is encoded or store");
      }
      if (tokens < block_tokens) {  // a cache of 0 blocks: the simulator refused it without naming the budget
        return absl::InvalidArgumentError(absl::StrCat("--byte_budget ", b, " holds ", tokens, " tokens of ", c,
                                                       " blocks, less than one block of ", block_tokens, " tokens"));
      }
      std::cerr << absl::StrFormat(
          "  budget %.2f GB (%.4gM bf16 tokens), %-5s: %d B/block (first %d, store chunk %d), "
          "ratio %.3f -> %.2fM tokens\n",
          budget / 1e9, bf16_tokens / 1e6, c, sz->encoded_bytes, sz->first_bytes, sz->store_chunk_bytes,
          sz->ratio(), tokens / 1e6);
      nlohmann::json meta = {{"budget_bytes", budget},
                             {"budget_bf16_tokens", bf16_tokens},
                             {"codec", std::string(c)},
                             {"block_bytes", sz->encoded_bytes},
                             {"first_block_bytes", sz->first_bytes},
                             {"store_chunk_bytes", sz->store_chunk_bytes},
                             {"ratio", sz->ratio()}};
      if (evict_to_blocks > 0) meta["evict_to_blocks"] = evict_to_blocks;
      if (store_model.has_value()) {
        // The chunk every block is modelled in (the larger of the first and later
        // blocks' classes), and whether the model is exact for this tier (store_model.h).
        meta["store_model_chunk_bytes"] = store_model->chunk_bytes;
        meta["store_model_exact"] = store_model->exact;
        if (!store_model->exact) {
          std::cerr << "  note: the store model is approximate for " << c << " blocks here (store_model.h)\n";
        }
      }
      cols.push_back({absl::StrCat(b, "/", c), tokens, meta, evict_to_blocks});
    }
  }
  return cols;
}

absl::Status RunSim(const Args& a, const Trace& trace) {
  std::vector<std::string> policies = DefaultReplayPolicies();
  if (a.Has("policies")) policies = absl::StrSplit(a.Get("policies"), ',', absl::SkipEmpty());
  // Every name is checked before the first simulation runs.
  if (policies.empty()) return absl::InvalidArgumentError("--policies is empty");
  size_t name_width = 16;
  for (size_t i = 0; i < policies.size(); ++i) {
    if (policies[i] == "belady") {
      return absl::InvalidArgumentError("belady is not an online policy: it is simulated unless --no_belady");
    }
    if (std::find(policies.begin(), policies.begin() + i, policies[i]) != policies.begin() + i) {
      return absl::InvalidArgumentError(absl::StrCat("policy \"", policies[i], "\" is listed twice"));
    }
    if (absl::StatusOr<std::unique_ptr<storage::EvictionPolicy>> p = MakeReplayPolicy(policies[i]); !p.ok()) {
      return p.status();
    }
    name_width = std::max(name_width, policies[i].size() + 1);
  }
  absl::StatusOr<std::vector<Column>> cols = SimColumns(a);
  if (!cols.ok()) return cols.status();
  SimOptions base;
  // A kvhubd deployment (--budget_accounting store) never holds a partial block:
  // kvhub::Client::Publish stores full blocks only.
  const bool store_accounting = a.Get("budget_accounting", "encoded") == "store";
  const std::string partial = a.Get("partial_tail", store_accounting ? "skip" : "cache");
  if (partial != "skip" && partial != "cache") {
    return absl::InvalidArgumentError("--partial_tail is cache or skip");
  }
  base.cache_partial_tail = partial == "cache";
  // With store accounting the watermarks belong to the store model (DefaultTierModel).
  if (!store_accounting && a.Has("high_watermark") && !a.Has("live")) {
    return absl::InvalidArgumentError(
        "--high_watermark models a kvhubd tier: give --byte_budget with --budget_accounting store, or --live "
        "(plain --sim fills capacity_blocks exactly)");
  }
  if (!store_accounting && a.Has("low_watermark") &&
      !absl::SimpleAtod(a.Get("low_watermark"), &base.low_watermark)) {
    return absl::InvalidArgumentError("bad --low_watermark");
  }
  nlohmann::json out;
  out["trace"] = a.Get("trace", a.Get("generate"));
  out["requests"] = trace.requests.size();
  out["input_tokens"] = trace.total_input_tokens;
  out["distinct_blocks"] = trace.distinct_blocks;
  out["block_tokens"] = base.block_tokens;
  out["partial_tail"] = base.cache_partial_tail ? "cache" : "skip";
  out["results"] = nlohmann::json::array();
  auto record = [&](const SimResult& r, const Column& col) {
    nlohmann::json j = {{"policy", r.policy},
                        {"capacity_tokens", col.tokens},
                        {"capacity_blocks", r.capacity_blocks},
                        {"hit_rate", r.hit_rate()},
                        {"hit_tokens", r.hit_tokens},
                        {"requested_tokens", r.requested_tokens},
                        {"inserted_blocks", r.inserted_blocks},
                        {"evicted_blocks", r.evicted_blocks},
                        {"rejected_blocks", r.rejected_blocks}};
    if (col.meta.is_object()) j.update(col.meta);
    out["results"].push_back(j);
  };
  // table[policy][column] = rate
  std::vector<std::string> rows;
  std::map<std::string, std::map<size_t, double>> table;
  auto put = [&](const SimResult& r, size_t ci) {
    if (!table.count(r.policy)) rows.push_back(r.policy);
    table[r.policy][ci] = r.hit_rate();
    record(r, (*cols)[ci]);
  };
  for (size_t ci = 0; ci < cols->size(); ++ci) {
    SimOptions o = base;
    o.capacity_blocks = (*cols)[ci].tokens / base.block_tokens;
    o.evict_to_blocks = (*cols)[ci].evict_to_blocks;
    // A tier that holds every distinct block never evicts: simulate it at that
    // size, since the policies allocate per slot (10G tokens asked for ~20M slots).
    const uint64_t asked_blocks = o.capacity_blocks;
    if (o.capacity_blocks > uint64_t{trace.distinct_blocks} + 1) {
      o.capacity_blocks = uint64_t{trace.distinct_blocks} + 1;
      if (o.evict_to_blocks >= o.capacity_blocks) o.evict_to_blocks = o.capacity_blocks - 1;
    }
    for (const std::string& name : policies) {
      absl::StatusOr<std::unique_ptr<storage::EvictionPolicy>> p = MakeReplayPolicy(name);
      if (!p.ok()) return p.status();
      absl::StatusOr<SimResult> r = SimulatePolicy(trace, **p, o);
      if (!r.ok()) return r.status();
      r->policy = name;
      r->capacity_blocks = asked_blocks;
      put(*r, ci);
    }
    if (!a.Has("no_belady")) {
      absl::StatusOr<SimResult> r = SimulateBelady(trace, o);
      if (!r.ok()) return r.status();
      r->capacity_blocks = asked_blocks;
      put(*r, ci);
    }
  }
  SimResult inf = SimulateInfinite(trace, base);
  record(inf, Column{"infinite", 0, {}});
  std::string hdr = absl::StrFormat("%-*s", name_width, "policy");
  for (const Column& c : *cols) absl::StrAppend(&hdr, absl::StrFormat(" %12s", c.label));
  absl::StrAppend(&hdr, absl::StrFormat(" %12s", "infinite"));
  // With the JSON on stdout, the table goes to stderr: stdout stays parseable.
  std::ostream& table_out = a.Get("json") == "-" ? std::cerr : std::cout;
  table_out << hdr << "\n";
  if (rows.empty()) {  // --capacities inf (or every policy left out): the reference alone
    std::string line = absl::StrFormat("%-*s", name_width, "infinite");
    for (size_t ci = 0; ci < cols->size(); ++ci) absl::StrAppend(&line, absl::StrFormat(" %12s", "-"));
    table_out << line << absl::StrFormat(" %12s", Pct(inf.hit_rate())) << "\n";
  }
  for (const std::string& p : rows) {
    std::string line = absl::StrFormat("%-*s", name_width, p);
    for (size_t ci = 0; ci < cols->size(); ++ci) {
      absl::StrAppend(&line, absl::StrFormat(" %12s", table[p].count(ci) ? Pct(table[p][ci]) : "-"));
    }
    absl::StrAppend(&line, absl::StrFormat(" %12s", Pct(inf.hit_rate())));
    table_out << line << "\n";
  }
  if (a.Has("json")) {
    if (absl::Status s = WriteOutput(a.Get("json"), out.dump(2) + "\n"); !s.ok()) return s;
  }
  return absl::OkStatus();
}

std::string LatLine(const char* name, const LatencySummary& l) {
  return absl::StrFormat("  %-8s n=%-6d p50 %8.0f us  p90 %8.0f us  p99 %8.0f us  max %8.0f us",
                         name, l.count, l.p50_us, l.p90_us, l.p99_us, l.max_us);
}

nlohmann::json LatJson(const LatencySummary& l) {
  return {{"count", l.count}, {"p50_us", l.p50_us}, {"p90_us", l.p90_us},
          {"p99_us", l.p99_us}, {"max_us", l.max_us}, {"mean_us", l.mean_us}};
}

// Set by SIGINT/SIGTERM during a live run: the replay stops before its next
// request, reports what it measured and removes its blocks (--members), then ends
// by that signal (main re-raises it, so a shell loop around the tool stops as for
// any Ctrl-C). The handler puts the default back, so a second signal ends the
// process at once.
std::atomic<bool> g_live_stop{false};
std::atomic<int> g_live_signal{0};  // the signal that set g_live_stop
static_assert(std::atomic<bool>::is_always_lock_free && std::atomic<int>::is_always_lock_free);

// Which of SIGINT and SIGTERM the handler was installed for (set before).
std::atomic<bool> g_live_handles_int{false}, g_live_handles_term{false};

extern "C" void OnLiveStopSignal(int sig) {
  int none = 0;
  g_live_signal.compare_exchange_strong(none, sig, std::memory_order_relaxed);
  g_live_stop.store(true, std::memory_order_relaxed);
  // A second signal, either of the two, ends the process at once.
  if (g_live_handles_int.load(std::memory_order_relaxed)) signal(SIGINT, SIG_DFL);
  if (g_live_handles_term.load(std::memory_order_relaxed)) signal(SIGTERM, SIG_DFL);
}

// The handlers above for the lifetime of the object, the previous ones after;
// a signal ignored when it starts (a background job's SIGINT) stays ignored.
class LiveStopSignals {
 public:
  LiveStopSignals() {
    struct sigaction sa {};
    sa.sa_handler = OnLiveStopSignal;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGINT, nullptr, &old_int_);
    sigaction(SIGTERM, nullptr, &old_term_);
    g_live_handles_int.store(old_int_.sa_handler != SIG_IGN);
    g_live_handles_term.store(old_term_.sa_handler != SIG_IGN);
    if (g_live_handles_int.load()) sigaction(SIGINT, &sa, nullptr);
    if (g_live_handles_term.load()) sigaction(SIGTERM, &sa, nullptr);
  }
  ~LiveStopSignals() {
    sigaction(SIGINT, &old_int_, nullptr);
    sigaction(SIGTERM, &old_term_, nullptr);
  }
  LiveStopSignals(const LiveStopSignals&) = delete;
  LiveStopSignals& operator=(const LiveStopSignals&) = delete;

 private:
  struct sigaction old_int_ {};
  struct sigaction old_term_ {};
};

// *cleanup: the removal of the run's blocks from a --members cluster failed (OK
// otherwise); set whatever the returned status.
absl::Status RunLiveMode(const Args& a, const Trace& full_trace, absl::Status* cleanup) {
  PayloadConfig pc;
  pc.codec = a.Get("codec", "raw");
  if (!absl::SimpleAtoi(a.Get("bytes_per_token", "4096"), &pc.bytes_per_token)) {
    return absl::InvalidArgumentError("bad --bytes_per_token");
  }
  absl::StatusOr<std::unique_ptr<PayloadFactory>> payloads = PayloadFactory::Create(pc);
  if (!payloads.ok()) return payloads.status();
  LiveOptions lo;
  lo.memory_bytes = ReadMemoryLimit().bytes;
  // Per run (two runs started in the same second shared one: each counted the other's
  // blocks as hits and its cleanup deleted them mid-run).
  lo.ns = a.Get("ns", absl::StrCat("replay-", absl::ToUnixSeconds(absl::Now()), "-", getpid()));
  lo.verify = !a.Has("no_verify");
  if (a.Has("speedup") && !absl::SimpleAtod(a.Get("speedup"), &lo.speedup)) {
    return absl::InvalidArgumentError("bad --speedup");
  }
  const Trace& trace = full_trace;  // already cut to --max_requests (Main)
  // cache (default): partial tails padded to full blocks, the reference model;
  // skip: real lengths, so the client stores full blocks only, as an engine's would.
  const std::string partial = a.Get("partial_tail", "cache");
  if (partial != "skip" && partial != "cache") {
    return absl::InvalidArgumentError("--partial_tail is cache or skip");
  }
  lo.pad_partial_tail = partial == "cache";

  // Shard settings: passed to spawned shards, and the store model of the sim check.
  // kvhubd's defaults (eviction_policy s3fifo, eviction_prefix_aware false); with
  // --members the shards' own policy, from their Stats, below.
  std::string policy = a.Get("policy", "s3fifo");
  absl::StatusOr<bool> prefix_aware = ParseBool(a.Get("prefix_aware", "false"));
  if (!prefix_aware.ok()) return prefix_aware.status();
  const bool know_shards = a.Has("spawn") || a.Has("shard_capacity");
  absl::StatusOr<uint64_t> cap = ParseBytes(a.Get("shard_capacity", "256MiB"));
  if (!cap.ok()) return cap.status();
  absl::StatusOr<StoreModelInput> tier =
      DefaultTierModel(a, *cap, (*payloads)->block_bytes(), (*payloads)->first_block_bytes());
  if (!tier.ok()) return tier.status();
  StoreModelInput sm = *tier;
  sm.slab_bytes = storage::AutoSlabBytes(sm.capacity_bytes, sm.region_bytes,
                                         sm.max_block_bytes);  // passed explicitly
  // Checked before any shard starts: the run is minutes, and these would refuse it
  // (the store model at its end) or its first request.
  if (know_shards) {
    if (absl::StatusOr<StoreModel> m = ModelStore(sm); !m.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("--shard_capacity: ", m.status().message()));
    }
  }
  if (!(lo.speedup >= 0 && std::isfinite(lo.speedup))) {
    return absl::InvalidArgumentError("--speedup must be >= 0 (0: no pacing)");
  }
  // Before any shard starts: a request too large for memory, pacing out of range.
  if (absl::Status s = CheckLiveRun(trace, **payloads, lo); !s.ok()) return s;
  if (absl::Status ns = ValidateNamespace(lo.ns); !ns.ok()) return absl::InvalidArgumentError(absl::StrCat("--ns: ", ns.message()));

  std::unique_ptr<LocalShards> shards;
  ClientConfig cc;
  if (a.Has("spawn") && a.Has("members")) {
    return absl::InvalidArgumentError("give --spawn N or --members HOST:PORT,..., not both");
  }
  if (a.Has("spawn")) {
    int n = 0;
    if (!absl::SimpleAtoi(a.Get("spawn"), &n)) return absl::InvalidArgumentError("bad --spawn");
    std::vector<std::string> flags = {
        absl::StrCat("--capacity_bytes=", sm.capacity_bytes),
        absl::StrCat("--region_bytes=", sm.region_bytes),
        absl::StrCat("--max_block_bytes=", sm.max_block_bytes),
        absl::StrCat("--slab_bytes=", sm.slab_bytes),
        absl::StrCat("--high_watermark=", sm.high_watermark),
        absl::StrCat("--low_watermark=", sm.low_watermark),
        absl::StrCat("--eviction_policy=", policy),
        absl::StrCat("--eviction_prefix_aware=", *prefix_aware ? "true" : "false"),
        "--try_hugepages=false",
        absl::StrCat("--log_level=", a.Get("shard_log_level", "warn"))};
    // Slot table (and so the policy's per-slot metadata, ~40 B per slot for
    // as3fifo and ~230 B for duel) sized to twice the blocks the shard can hold,
    // not capacity / 4 KiB (docs/replay.md, "Policy memory").
    if (absl::StatusOr<StoreModel> m = ModelStore(sm); m.ok()) {
      flags.push_back(absl::StrCat("--max_blocks=", std::max<uint64_t>(1024, 2 * m->slab_chunks)));
    }
    absl::StatusOr<std::unique_ptr<LocalShards>> started =
        LocalShards::Start(a.Get("kvhubd", LocalShards::DefaultBinary()), n, flags);
    if (!started.ok()) return started.status();
    shards = *std::move(started);
    for (const std::string& addr : shards->grpc_addresses()) cc.members.push_back({addr, 1.0});
  } else if (a.Has("members")) {
    absl::StatusOr<std::vector<MemberConfig>> m = ClientConfig::ParseMembers(a.Get("members"));
    if (!m.ok()) return m.status();
    cc.members = *m;
    cc.ApplySecurityEnvironment();  // a secured cluster: $KVHUB_TOKEN, $KVHUB_TLS_*
  } else {
    return absl::InvalidArgumentError("--live needs --members HOST:PORT,... or --spawn N");
  }
  PrepareReplayClient(&cc);
  absl::StatusOr<std::unique_ptr<Client>> client = Client::Create(cc);
  if (!client.ok()) return client.status();
  // Every member must answer first: a replay against a dead shard measures nothing.
  if (absl::Status up = (*client)->CheckMembersAnswer(); !up.ok()) return up;
  if (a.Has("members")) {
    // The simulation must run the policy the shards run: take it from their Stats,
    // and refuse --policy / --prefix_aware that say otherwise.
    std::string theirs;
    for (const MemberStats& m : (*client)->Stats()) {
      if (!m.stats.ok()) return m.stats.status();
      if (!theirs.empty() && theirs != m.stats->eviction_policy()) {
        return absl::FailedPreconditionError(absl::StrCat("the shards run different eviction policies (", theirs,
                                                          ", ", m.stats->eviction_policy(), " on ", m.address,
                                                          "): the simulation cannot model them"));
      }
      theirs = m.stats->eviction_policy();
    }
    absl::string_view base = theirs;
    const bool their_prefix = absl::ConsumeSuffix(&base, "+prefix");
    if ((a.Has("policy") && policy != base) || (a.Has("prefix_aware") && *prefix_aware != their_prefix)) {
      return absl::InvalidArgumentError(absl::StrCat("the shards run eviction policy ", theirs, "; --policy ", policy,
                                                     " --prefix_aware ", *prefix_aware ? "true" : "false",
                                                     " would simulate another (leave them out with --members)"));
    }
    policy = std::string(base);
    *prefix_aware = their_prefix;
    // The simulation models --shard_capacity: shards of another size would make
    // "live - sim" compare unequal caches (it printed -4.5 pp for 64 MiB shards
    // replayed as 4 GiB, exit 0). Blocks already held are warned about: the
    // simulation starts empty.
    for (const MemberStats& m : (*client)->Stats()) {
      if (!m.stats.ok() || m.stats->tiers_size() == 0) continue;
      const auto& host = m.stats->tiers(0);
      if (know_shards && host.capacity_bytes() != sm.capacity_bytes) {
        return absl::FailedPreconditionError(absl::StrCat(
            m.address, " holds ", host.capacity_bytes(), " bytes, --shard_capacity says ", sm.capacity_bytes,
            ": the simulation would model another cache (give its capacity, or leave --shard_capacity out)"));
      }
      if (host.blocks() > 0) {
        std::cerr << "kvhub-replay: warning: " << m.address << " already holds " << host.blocks()
                  << " blocks; the simulation starts empty, and evictions start earlier live\n";
      }
    }
  }

  std::cerr << "live: " << cc.members.size() << " shard(s), codec " << pc.codec << ", "
            << (*payloads)->block_bytes() << " B/block (first " << (*payloads)->first_block_bytes()
            << "), spec " << (*payloads)->spec().CanonicalText() << "\n";
  // Ctrl-C / SIGTERM from here to the end, the removal below included (declared
  // first, so in force until after it): stop, report, remove the blocks.
  const LiveStopSignals signals;
  // On a cluster the replay did not start (--members), its blocks would stay and
  // take the room of the users' data: every block of the run's namespace is deleted
  // when this returns, whatever the path, unless --keep_blocks.
  absl::Cleanup remove_blocks = [&] {
    if (!a.Has("members") || a.Has("keep_blocks")) return;
    const std::vector<BlockKey> keys = TraceBlockKeys(trace, lo.ns, (*payloads)->spec());
    uint64_t deleted = 0, failed = 0;  // NOT_FOUND: never stored, or evicted
    absl::StatusOr<std::vector<absl::Status>> d = (*client)->Delete(lo.ns, keys);  // batched per shard
    if (!d.ok()) {
      failed = keys.size();
    } else {
      for (const absl::Status& st : *d) {
        if (st.ok()) ++deleted;
        if (!st.ok() && !absl::IsNotFound(st)) ++failed;
      }
    }
    std::cerr << "kvhub-replay: removed its " << deleted << " blocks from namespace " << lo.ns
              << (failed > 0 ? absl::StrCat(" (", failed, " could not be deleted)") : std::string())
              << " (--keep_blocks keeps them)\n";
    if (failed > 0) {
      *cleanup = absl::UnavailableError(absl::StrCat(
          failed, " blocks of namespace ", lo.ns, " could not be deleted: ",
          d.ok() ? std::string("some shards refused or did not answer") : d.status().ToString(),
          "; they stay on the cluster until evicted"));
    }
  };
  lo.stop = &g_live_stop;
  absl::StatusOr<LiveResult> r = RunLive(trace, **client, **payloads, lo);
  if (!r.ok()) return r.status();
  // An interrupted run replayed a prefix of the trace; the simulation below
  // models that prefix.
  const Trace done = r->interrupted && r->requests > 0 ? TruncateTrace(trace, r->requests) : Trace{};
  const Trace& replayed = r->interrupted ? done : trace;

  nlohmann::json out;
  out["mode"] = "live";
  out["codec"] = pc.codec;
  out["bytes_per_token"] = pc.bytes_per_token;
  out["block_bytes"] = (*payloads)->block_bytes();
  out["shards"] = cc.members.size();
  out["policy"] = *prefix_aware ? policy + "+prefix" : policy;
  out["ns"] = lo.ns;
  out["partial_tail"] = partial;
  out["requests"] = r->requests;
  out["interrupted"] = r->interrupted;
  out["requested_tokens"] = r->requested_tokens;
  out["hit_tokens"] = r->hit_tokens;
  out["hit_rate"] = r->hit_rate();
  out["fetched_bytes"] = r->fetched_bytes;
  out["published_bytes"] = r->published_bytes;
  out["fetch_gbps"] = r->fetch_s > 0 ? r->fetched_bytes / r->fetch_s / 1e9 : 0.0;
  out["publish_gbps"] = r->publish_s > 0 ? r->published_bytes / r->publish_s / 1e9 : 0.0;
  out["wall_s"] = r->wall_s;
  out["verify"] = lo.verify;
  if (lo.verify) {
    out["verify_failures"] = r->verify_failures;
  } else {
    out["verify_failures"] = nullptr;  // not checked (--no_verify)
  }
  out["fetch_failures"] = r->fetch_failures;
  out["fetch_evicted"] = r->fetch_evicted;
  out["put_failures"] = r->put_failures;
  out["lookup_failures"] = r->lookup_failures;
  out["fetch_errors"] = r->fetch_errors;
  out["first_error"] = r->first_error.ok() ? "" : r->first_error.ToString();
  out["already_stored_blocks"] = r->skipped_blocks;
  out["unordered_publishes"] = r->unordered_publishes;
  out["lookup"] = LatJson(r->lookup);
  out["fetch"] = LatJson(r->fetch);
  out["publish"] = LatJson(r->publish);
  if (r->lag.count > 0) out["pacing_lag"] = LatJson(r->lag);
  // With the JSON on stdout, the report goes to stderr: stdout stays parseable.
  std::ostream& report = a.Get("json") == "-" ? std::cerr : std::cout;
  report << absl::StrFormat(
      "live: %d requests in %.2f s; hit rate %s (%d of %d tokens%s)\n"
      "  fetched %.3f GB at %.2f GB/s (in Fetch calls), published %.3f GB at %.2f GB/s; "
      "%.2f GB/s over the run's wall time%s\n"
      "  verify failures %s, fetch failures %d (%d evicted meanwhile, %d errors, the rest after a failed "
      "block), put failures %d, lookup keys unanswered %d; blocks already stored (not sent) %d\n",
      r->requests, r->wall_s, Pct(r->hit_rate()), r->hit_tokens, r->requested_tokens,
      lo.verify ? "" : "; fetched bytes NOT verified (--no_verify)", r->fetched_bytes / 1e9,
      out["fetch_gbps"].get<double>(), r->published_bytes / 1e9, out["publish_gbps"].get<double>(),
      r->wall_s > 0 ? (r->fetched_bytes + r->published_bytes) / r->wall_s / 1e9 : 0.0,
      lo.speedup > 0 ? " (pacing waits included)" : "",
      lo.verify ? absl::StrCat(r->verify_failures) : std::string("not checked"), r->fetch_failures,
      r->fetch_evicted, r->fetch_errors, r->put_failures, r->lookup_failures, r->skipped_blocks);
  if (r->interrupted) {
    report << "  INTERRUPTED (signal) after " << r->requests << " of " << trace.requests.size()
           << " requests: the figures cover those only\n";
  }
  if (!r->first_error.ok()) report << "  first error: " << r->first_error.ToString() << "\n";
  if (r->unordered_publishes > 0) {
    report << "  " << r->unordered_publishes
           << " request(s) sent their new blocks to a shard in several parallel calls (over 256 MiB or "
              "4096 blocks for one shard): stored out of chain order, so the shards' eviction order "
              "(and the hit rate) can differ from --sim; lower --bytes_per_token\n";
  }
  report << LatLine("lookup", r->lookup) << "\n"
            << LatLine("fetch", r->fetch) << "\n"
            << LatLine("publish", r->publish) << "\n";
  if (r->lag.count > 0) {
    // Requests go out one at a time: behind schedule, the run offered less load than
    // the trace's timestamps (at this speedup) describe.
    report << LatLine("pacing lag", r->lag) << "\n";
  }

  if (know_shards && g_live_stop.load() && !r->interrupted) {
    report << "sim of the same cluster: skipped (a signal came after the last request)\n";
    out["sim_skipped"] = "a signal came after the last request";
  } else if (know_shards) {
    // The simulator's prediction for this cluster: same placement, policy and
    // watermarks, the store's byte accounting (docs/replay.md, "Live equals sim").
    absl::StatusOr<StoreModel> m = ModelStore(sm);
    if (!m.ok()) return m.status();
    std::vector<BlockKey> keys = TraceBlockKeys(replayed, lo.ns, (*payloads)->spec());
    std::vector<uint32_t> shard_of(keys.size());
    for (size_t b = 0; b < keys.size(); ++b) shard_of[b] = static_cast<uint32_t>((*client)->OwnerOf(keys[b]));
    std::vector<std::unique_ptr<storage::EvictionPolicy>> owned;
    std::vector<storage::EvictionPolicy*> pols;
    for (size_t i = 0; i < cc.members.size(); ++i) {
      absl::StatusOr<std::unique_ptr<storage::EvictionPolicy>> p =
          MakeReplayPolicy(*prefix_aware ? policy + "+prefix" : policy);
      if (!p.ok()) return p.status();
      pols.push_back(p->get());
      owned.push_back(*std::move(p));
    }
    SimOptions so;
    so.capacity_blocks = m->capacity_blocks;
    so.evict_to_blocks = m->evict_to_blocks;
    so.access_model = SimOptions::AccessModel::kLiveClient;
    so.cache_partial_tail = lo.pad_partial_tail;
    absl::StatusOr<SimResult> sim = SimulateSharded(replayed, pols, shard_of, so);
    if (!sim.ok()) return sim.status();
    report << absl::StrFormat(
        "sim of the same cluster: %s (%d shards x %d blocks of %d B chunks, evict to %d%s); "
        "live - sim = %+.2f pp\n",
        Pct(sim->hit_rate()), cc.members.size(), m->capacity_blocks, m->chunk_bytes,
        m->evict_to_blocks, m->exact ? "" : ", model approximate",
        100 * (r->hit_rate() - sim->hit_rate()));
    out["sim_hit_rate"] = sim->hit_rate();
    out["sim_capacity_blocks_per_shard"] = m->capacity_blocks;
    out["sim_exact_model"] = m->exact;
    // Which policy each shard's eviction follows at the end (duel switches), live
    // (the shards' Stats) and in the simulation: the same when live = sim.
    std::vector<MemberStats> stats = (*client)->Stats();
    std::string line;
    for (size_t i = 0; i < pols.size() && i < stats.size(); ++i) {
      const std::string live_state =
          stats[i].stats.ok()
              ? absl::StrCat(stats[i].stats->eviction_active_policy(), "/", stats[i].stats->eviction_policy_switches())
              : std::string("?");
      const std::string sim_state = absl::StrCat(pols[i]->ActiveName(), "/", pols[i]->Switches());
      absl::StrAppend(&line, i == 0 ? "" : ", ", stats[i].address, " live ", live_state, " sim ", sim_state);
      out["eviction_live"].push_back(live_state);
      out["eviction_sim"].push_back(sim_state);
    }
    report << "eviction following / switches per shard: " << line << "\n";
  }
  if (a.Has("json")) {
    if (absl::Status s = WriteOutput(a.Get("json"), out.dump(2) + "\n"); !s.ok()) return s;
  }
  // Spawned shards that crashed or failed their drain make the run fail (their
  // exit statuses were dropped).
  absl::Status stopped = shards != nullptr ? shards->StopAll() : absl::OkStatus();
  if (g_live_stop.load()) {
    return absl::CancelledError(absl::StrCat("interrupted by signal ", g_live_signal.load(), " after ", r->requests,
                                             " of ", trace.requests.size(), " requests"));
  }
  if (r->verify_failures > 0) {
    return absl::DataLossError(absl::StrCat(r->verify_failures, " fetched blocks did not verify"));
  }
  if (r->errors() > 0) {
    // The table and JSON above stand, but a miss caused by an error is not the
    // cache's: the hit rate is too low by an unknown amount.
    return absl::Status(r->first_error.ok() ? absl::StatusCode::kUnavailable : r->first_error.code(),
                        absl::StrCat(r->errors(), " lookups, fetches or puts failed, so the hit rate above is "
                                     "not the cache's; the first: ",
                                     r->first_error.ok() ? "(no message)" : r->first_error.message()));
  }
  return stopped;
}

absl::StatusOr<Trace> GetTrace(const Args& a) {
  if (a.Has("trace") && a.Has("generate")) {
    return absl::InvalidArgumentError("give --trace FILE or --generate agentic, not both");
  }
  if (a.Has("trace")) {
    for (const char* flag : {"seed", "duration_s", "rate"}) {
      if (a.Has(flag)) return absl::InvalidArgumentError(absl::StrCat("--", flag, " applies to --generate only"));
    }
    return LoadTrace(a.Get("trace"));
  }
  if (a.Has("generate")) {
    if (a.Get("generate") != "agentic") {
      return absl::InvalidArgumentError("--generate knows one workload: agentic");
    }
    WorkloadConfig c;
    if (a.Has("seed") && !absl::SimpleAtoi(a.Get("seed"), &c.seed)) return absl::InvalidArgumentError("bad --seed");
    if (a.Has("duration_s") && !absl::SimpleAtod(a.Get("duration_s"), &c.duration_s)) return absl::InvalidArgumentError("bad --duration_s");
    if (a.Has("rate") && !absl::SimpleAtod(a.Get("rate"), &c.rate_per_s)) return absl::InvalidArgumentError("bad --rate");
    absl::StatusOr<Trace> gen = GenerateWorkload(c);
    if (gen.ok() && gen->requests.empty()) {
      return absl::InvalidArgumentError("--generate agentic made no requests: give a longer --duration_s or a higher --rate");
    }
    return gen;
  }
  return absl::InvalidArgumentError("give --trace FILE or --generate agentic");
}

int Main(int argc, char** argv) {
  absl::StatusOr<Args> a = ParseArgs(argc, argv);
  if (!a.ok()) {
    std::cerr << "kvhub-replay: " << a.status() << "\n";
    return 2;
  }
  if (a->Has("help")) {
    std::cout << "usage: kvhub-replay (--trace FILE | --generate agentic [--seed N --duration_s S --rate R])\n"
                 "         [--max_requests N] [--write_trace OUT]\n"
                 "         [--sim [--capacities 1M,3M,...] [--policies lru,...]\n"
                 "         [--partial_tail cache|skip] [--low_watermark F] [--no_belady] [--json OUT]\n"
                 "          [--byte_budget 1M,3M (bf16 tokens) or 128GiB,384GiB (bytes) --codecs raw,fp8,kivi4,kivi2\n"
                 "           --spec_bytes_per_token 131072 --budget_accounting encoded|store\n"
                 "           (store: kvhubd's chunks and watermarks, partial tails skipped;\n"
                 "            --high_watermark/--low_watermark override the store defaults)]]\n"
                 "         [--live (--members HOST:PORT,... | --spawn N [--kvhubd PATH])\n"
                 "          [--shard_capacity 256MiB] [--policy s3fifo] [--prefix_aware false]\n"
                 "          [--high_watermark 0.98] [--low_watermark 0.97] [--codec raw|fp8|int8|kivi4|kivi2]\n"
                 "          [--bytes_per_token 4096] [--speedup X] [--ns NS]\n"
                 "          [--partial_tail cache|skip]\n"
                 "          [--no_verify] [--keep_blocks] [--json OUT]]\n";
    return 0;
  }
  for (const char* flag : {"json", "write_trace"}) {  // before the run, not after it
    if (!a->Has(flag)) continue;
    if (absl::Status s = CheckOutputPath(a->Get(flag)); !s.ok()) {
      std::cerr << "kvhub-replay: --" << flag << ": " << s.message() << "\n";
      return 2;
    }
  }
  // A flag of the other mode would be accepted and silently do nothing.
  static constexpr const char* kSimOnly[] = {"capacities", "policies", "no_belady", "byte_budget", "codecs",
                                             "spec_bytes_per_token", "budget_accounting"};
  static constexpr const char* kLiveOnly[] = {"members", "spawn", "kvhubd", "shard_capacity", "shard_log_level",
                                              "policy", "prefix_aware", "codec", "bytes_per_token", "speedup",
                                              "ns", "no_verify", "keep_blocks"};
  for (const char* flag : kSimOnly) {
    if (a->Has(flag) && !a->Has("sim")) {
      std::cerr << "kvhub-replay: --" << flag << " applies to --sim only\n";
      return 2;
    }
  }
  for (const char* flag : kLiveOnly) {
    if (a->Has(flag) && !a->Has("live")) {
      std::cerr << "kvhub-replay: --" << flag << " applies to --live only"
                << (std::string(flag) == "policy" ? " (--sim takes --policies)" : "") << "\n";
      return 2;
    }
  }
  for (const char* flag : {"json", "partial_tail", "high_watermark", "low_watermark"}) {
    if (a->Has(flag) && !a->Has("sim") && !a->Has("live")) {
      std::cerr << "kvhub-replay: --" << flag << " applies to --sim or --live only\n";
      return 2;
    }
  }
  if (a->Has("live") && !a->Has("spawn")) {  // --members: shards someone else started
    for (const char* flag : {"kvhubd", "shard_log_level"}) {
      if (a->Has(flag)) {
        std::cerr << "kvhub-replay: --" << flag << " applies to shards --spawn starts only\n";
        return 2;
      }
    }
    for (const char* flag : {"high_watermark", "low_watermark"}) {
      if (a->Has(flag) && !a->Has("shard_capacity") && !a->Has("sim")) {
        std::cerr << "kvhub-replay: --" << flag << " with --members describes the shards for the simulation "
                  << "check, which needs --shard_capacity too\n";
        return 2;
      }
    }
  }
  for (const char* flag : {"codecs", "spec_bytes_per_token"}) {
    if (a->Has(flag) && !a->Has("byte_budget")) {
      std::cerr << "kvhub-replay: --" << flag << " applies to --byte_budget only\n";
      return 2;
    }
  }
  absl::StatusOr<Trace> trace = GetTrace(*a);
  if (!trace.ok()) {
    std::cerr << "kvhub-replay: " << trace.status() << "\n";
    return 2;
  }
  if (a->Has("max_requests")) {  // the first N requests, for --sim and --live alike
    size_t n = 0;
    if (!absl::SimpleAtoi(a->Get("max_requests"), &n) || n == 0) {
      std::cerr << "kvhub-replay: --max_requests must be a whole number > 0, got \"" << a->Get("max_requests")
                << "\"\n";
      return 2;
    }
    *trace = TruncateTrace(*trace, n);
  }
  std::cerr << "trace: " << trace->requests.size() << " requests, " << trace->total_input_tokens
            << " input tokens, " << trace->distinct_blocks << " distinct blocks\n";
  if (const uint64_t reuses = ReusesAfterOtherPrefix(*trace); reuses > 0) {
    std::cerr << "warning: " << reuses << " block references reuse a hash id after another prefix than its "
              << "first: the trace is not prefix-chained there; each such (prefix, id) is a block of its own, "
              << "as kvhub's chained keys make it\n";
  }
  if (a->Has("write_trace")) {
    if (absl::Status w = WriteOutput(a->Get("write_trace"), FormatTrace(*trace)); !w.ok()) {
      std::cerr << "kvhub-replay: " << w << "\n";
      return 1;
    }
  }
  if (!a->Has("sim") && !a->Has("live") && !a->Has("write_trace")) {
    std::cerr << "kvhub-replay: nothing to do: give --sim, --live and/or --write_trace (--help)\n";
    return 2;
  }
  if (a->Has("sim") && a->Has("live") && a->Has("json")) {
    std::cerr << "kvhub-replay: --json with both --sim and --live would keep only one report: run them apart\n";
    return 2;
  }
  absl::Status s = absl::OkStatus();
  if (a->Has("sim")) s = RunSim(*a, *trace);
  absl::Status cleanup = absl::OkStatus();
  if (s.ok() && a->Has("live")) {
    s = RunLiveMode(*a, *trace, &cleanup);
  }
  if (!s.ok()) {
    std::cerr << "kvhub-replay: " << s << "\n";
    if (!cleanup.ok()) std::cerr << "kvhub-replay: also: " << cleanup << "\n";
    return 1;  // a signal's run ends by that signal (main)
  }
  if (!cleanup.ok()) {
    std::cerr << "kvhub-replay: " << cleanup << "\n";
    return 1;
  }
  return 0;
}

}  // namespace
}  // namespace kvhub::replay

int main(int argc, char** argv) {
  kvhub::LogToStderr("kvhub-replay");  // stdout carries only the program's output
  if (kvhub::PrintVersionIfAsked(argc, argv, "kvhub-replay")) return kvhub::ExitCodeAfterStdout(0, "kvhub-replay");
  kvhub::TuneMallocForLargeBuffers();  // live mode moves large blocks over gRPC
  kvhub::TurnOffMutexDeadlockChecks();  // tests keep them; see common/mutex_checks.h
  const int rc = kvhub::ExitCodeAfterStdout(kvhub::replay::Main(argc, argv), "kvhub-replay");
  if (const int sig = kvhub::replay::g_live_signal.load(); sig != 0) {
    // Stopped by SIGINT/SIGTERM and cleaned up: end by that signal, as the shell
    // expects of a program it interrupted (exit status 130 / 143 there).
    std::fflush(nullptr);
    signal(sig, SIG_DFL);
    raise(sig);
    return 128 + sig;
  }
  return rc;
}
