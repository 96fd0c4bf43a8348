#include "bench/replay/policies.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "storage/adaptive_s3fifo_policy.h"
#include "storage/dueling_policy.h"

namespace kvhub::replay {

absl::StatusOr<std::unique_ptr<storage::EvictionPolicy>> MakeReplayPolicy(const std::string& name) {
  absl::string_view base = name;
  absl::string_view params;
  if (size_t colon = base.find(':'); colon != absl::string_view::npos) {
    params = base.substr(colon + 1);
    base = base.substr(0, colon);
  }
  bool prefix = absl::ConsumeSuffix(&base, "+prefix");
  if (base == "as3fifo") {
    storage::AdaptiveS3FifoConfig cfg;
    cfg.prefix_aware = prefix;
    // Optional overrides for experiments: as3fifo:ghost=5;window=0.2;min=0.01;max=0.9;init=0.05
    for (absl::string_view kv : absl::StrSplit(params, ';', absl::SkipEmpty())) {
      std::pair<absl::string_view, absl::string_view> p = absl::StrSplit(kv, absl::MaxSplits('=', 1));
      double v;
      if (!absl::SimpleAtod(p.second, &v)) {
        return absl::InvalidArgumentError(absl::StrCat("bad as3fifo parameter \"", kv, "\""));
      }
      if (p.first == "ghost") cfg.ghost_factor = v;
      else if (p.first == "window") cfg.window = v;
      else if (p.first == "min") cfg.min_small = v;
      else if (p.first == "max") cfg.max_small = v;
      else if (p.first == "init") cfg.initial_small = v;
      else if (p.first == "gain") cfg.gain = v;

      else return absl::InvalidArgumentError(absl::StrCat("unknown as3fifo parameter \"", p.first, "\""));
    }
    if (absl::Status s = cfg.Validate(); !s.ok()) return s;
    return std::unique_ptr<storage::EvictionPolicy>(std::make_unique<storage::AdaptiveS3FifoPolicy>(cfg));
  }
  if (base == "duel") {
    storage::DuelingConfig cfg;
    cfg.as3fifo.prefix_aware = prefix;
    for (absl::string_view kv : absl::StrSplit(params, ';', absl::SkipEmpty())) {
      std::pair<absl::string_view, absl::string_view> p = absl::StrSplit(kv, absl::MaxSplits('=', 1));
      double v;
      if (!absl::SimpleAtod(p.second, &v)) {
        return absl::InvalidArgumentError(absl::StrCat("bad duel parameter \"", kv, "\""));
      }
      if (p.first == "half") cfg.half_life = v;
      else if (p.first == "minref") cfg.min_half_life_refs = v;
      else if (p.first == "margin") cfg.margin = v;
      else if (p.first == "lmargin") cfg.lru_margin = v;
      else if (p.first == "lru0") cfg.start_with_lru = v != 0;
      else if (p.first == "s3") cfg.s3fifo_small_ratio = v;
      else if (p.first == "s3margin") cfg.s3fifo_margin = v;
      else if (p.first == "window") cfg.as3fifo.window = v;
      else if (p.first == "gain") cfg.as3fifo.gain = v;
      else if (p.first == "max") cfg.as3fifo.max_small = v;
      else return absl::InvalidArgumentError(absl::StrCat("unknown duel parameter \"", p.first, "\""));
    }
    if (absl::Status s = cfg.Validate(); !s.ok()) return s;
    return std::unique_ptr<storage::EvictionPolicy>(std::make_unique<storage::DuelingPolicy>(cfg));
  }
  if (base == "lru" || base == "s3fifo") {
    if (!params.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("policy \"", name, "\": ", base, " takes no parameters"));
    }
    storage::EvictionPolicyConfig cfg;
    cfg.name = std::string(base);
    cfg.prefix_aware = prefix;
    return storage::MakeEvictionPolicy(cfg);
  }
  return absl::InvalidArgumentError(absl::StrCat(
      "unknown policy \"", name, "\"; known: lru, s3fifo, as3fifo, duel, each optionally with +prefix"));
}

std::vector<std::string> DefaultReplayPolicies() {
  return {"lru",     "lru+prefix",     "s3fifo", "s3fifo+prefix",
          "as3fifo", "as3fifo+prefix", "duel",   "duel+prefix"};
}

}  // namespace kvhub::replay
