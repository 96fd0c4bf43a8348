#include "bench/replay/workload_gen.h"

#include <algorithm>
#include <cmath>
#include <queue>
#include <random>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/str_cat.h"

namespace kvhub::replay {
namespace {

struct Segment {
  uint64_t id;     // content identity
  uint32_t tokens;
};
using Prompt = std::vector<Segment>;

uint64_t Mix(uint64_t a, uint64_t b) {
  uint64_t x = a * 0x9e3779b97f4a7c15ull ^ (b + 0x632be59bd9b4e019ull + (a << 6) + (a >> 2));
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

class Zipf {
 public:
  Zipf(uint32_t n, double s) : cdf_(n) {
    double sum = 0;
    for (uint32_t i = 0; i < n; ++i) cdf_[i] = (sum += 1.0 / std::pow(i + 1.0, s));
    for (double& c : cdf_) c /= sum;
  }
  uint32_t operator()(std::mt19937_64& rng) const {
    double u = std::uniform_real_distribution<double>(0, 1)(rng);
    return static_cast<uint32_t>(std::lower_bound(cdf_.begin(), cdf_.end(), u) - cdf_.begin()) %
           static_cast<uint32_t>(cdf_.size());
  }

 private:
  std::vector<double> cdf_;
};

class Builder {
 public:
  explicit Builder(Trace* trace) : trace_(trace) {}
  // Appends a request for `prompt` (truncated to max tokens) at `ts_ms`.
  void Emit(int64_t ts_ms, const Prompt& prompt, uint32_t output, uint32_t max_tokens) {
    TraceRequest r;
    r.timestamp_ms = ts_ms;
    r.output_length = output;
    uint64_t total = 0;
    for (const Segment& s : prompt) total += s.tokens;
    r.input_length = static_cast<uint32_t>(std::min<uint64_t>(total, max_tokens));
    if (r.input_length == 0) return;
    // Walk blocks, hashing the segment pieces each covers.
    size_t seg = 0;
    uint32_t off = 0;
    int64_t parent = -1;
    for (uint32_t start = 0; start < r.input_length; start += kTraceBlockTokens) {
      uint32_t len = std::min(kTraceBlockTokens, r.input_length - start);
      uint64_t h = 0x51ed2701ull;
      uint32_t need = len;
      while (need > 0) {
        uint32_t take = std::min(need, prompt[seg].tokens - off);
        h = Mix(h, Mix(prompt[seg].id, (uint64_t{off} << 32) | take));
        need -= take;
        off += take;
        if (off == prompt[seg].tokens) {
          ++seg;
          off = 0;
        }
      }
      auto [it, inserted] = ids_.try_emplace(Mix(static_cast<uint64_t>(parent), h),
                                             static_cast<int64_t>(ids_.size()));
      parent = it->second;
      r.hash_ids.push_back(parent);
    }
    trace_->requests.push_back(std::move(r));
  }

 private:
  Trace* trace_;
  absl::flat_hash_map<uint64_t, int64_t> ids_;
};

}  // namespace

absl::Status WorkloadConfig::Validate() const {
  if (!(duration_s > 0 && duration_s <= 7 * 86400)) return absl::InvalidArgumentError("duration_s must be in (0, 1 week]");
  if (!(rate_per_s > 0 && rate_per_s <= 10000)) return absl::InvalidArgumentError("rate_per_s must be in (0, 10000]");
  if (rate_per_s * duration_s > kMaxExpectedRequests) {
    return absl::InvalidArgumentError(absl::StrCat("rate_per_s x duration_s asks for ", rate_per_s * duration_s,
                                                   " requests; at most ", kMaxExpectedRequests,
                                                   " (the trace is held in memory)"));
  }
  if (share_chat < 0 || share_rag < 0 || share_agent < 0 || share_chat + share_rag + share_agent <= 0) {
    return absl::InvalidArgumentError("request shares must be >= 0 and not all 0");
  }
  if (system_prompts == 0 || rag_corpus_docs == 0 || agent_steps == 0 || rag_docs_per_request == 0) {
    return absl::InvalidArgumentError("system_prompts, rag_corpus_docs, rag_docs_per_request, agent_steps must be > 0");
  }
  if (!(p_continue >= 0 && p_continue < 1)) return absl::InvalidArgumentError("p_continue must be in [0, 1)");
  if (!(zipf_s >= 0 && zipf_s <= 4)) return absl::InvalidArgumentError("zipf_s must be in [0, 4]");
  if (user_tokens_mean == 0 || max_input_tokens == 0) {
    return absl::InvalidArgumentError("user_tokens_mean and max_input_tokens must be > 0");
  }
  return absl::OkStatus();
}

absl::StatusOr<Trace> GenerateWorkload(const WorkloadConfig& c) {
  if (absl::Status s = c.Validate(); !s.ok()) return s;
  std::mt19937_64 rng(c.seed);
  auto exp_tokens = [&](double mean) {
    return std::max<uint32_t>(1, static_cast<uint32_t>(std::exponential_distribution<double>(1.0 / mean)(rng)));
  };
  uint64_t next_content = 1;
  auto fresh = [&](uint32_t tokens) { return Segment{next_content++, tokens}; };
  // Content ids below 2^40 are fresh text; system prompts and documents get fixed ids.
  auto sys_prompt = [&](uint32_t i) { return Segment{(uint64_t{1} << 40) + i, c.system_prompt_tokens}; };
  auto doc = [&](uint32_t i) { return Segment{(uint64_t{2} << 40) + i, c.rag_doc_tokens}; };
  Zipf sys_zipf(c.system_prompts, c.zipf_s), doc_zipf(c.rag_corpus_docs, c.zipf_s);
  double total_share = c.share_chat + c.share_rag + c.share_agent;

  struct Pending {
    double t;
    uint64_t order;
    Prompt prompt;
    uint32_t output;
    int kind;  // 0 chat turn, 1 agent step
    uint32_t step;
    bool operator>(const Pending& o) const { return t != o.t ? t > o.t : order > o.order; }
  };
  std::priority_queue<Pending, std::vector<Pending>, std::greater<>> pending;
  uint64_t order = 0;
  Trace trace;
  Builder out(&trace);
  double t = 0;
  std::exponential_distribution<double> gap(c.rate_per_s);
  std::uniform_real_distribution<double> u01(0, 1);
  auto emit_until = [&](double until) {
    while (!pending.empty() && pending.top().t <= until) {
      Pending p = pending.top();
      pending.pop();
      out.Emit(static_cast<int64_t>(p.t * 1000), p.prompt, p.output, c.max_input_tokens);
      if (p.kind == 0 && u01(rng) < c.p_continue) {  // next chat turn
        Prompt next = p.prompt;
        next.push_back(fresh(p.output));
        next.push_back(fresh(exp_tokens(c.user_tokens_mean)));
        double think = std::exponential_distribution<double>(1.0 / c.think_time_s)(rng);
        pending.push({p.t + think, order++, std::move(next), exp_tokens(c.output_tokens_mean), 0, 0});
      } else if (p.kind == 1 && p.step + 1 < c.agent_steps) {  // hand the message on
        Prompt next;
        next.push_back(sys_prompt((c.system_prompts - 1 - p.step - 1) % c.system_prompts));
        // Task and earlier messages follow the new agent's system prompt.
        next.insert(next.end(), p.prompt.begin() + 1, p.prompt.end());
        next.push_back(fresh(p.output));
        pending.push({p.t + 2.0 + 10.0 * u01(rng), order++, std::move(next), exp_tokens(c.output_tokens_mean), 1,
                      p.step + 1});
      }
    }
  };
  while ((t += gap(rng)) < c.duration_s) {
    emit_until(t);
    double pick = u01(rng) * total_share;
    Prompt p;
    if (pick < c.share_chat) {
      p.push_back(sys_prompt(sys_zipf(rng)));
      p.push_back(fresh(exp_tokens(c.user_tokens_mean)));
      pending.push({t, order++, std::move(p), exp_tokens(c.output_tokens_mean), 0, 0});
    } else if (pick < c.share_chat + c.share_rag) {
      p.push_back(sys_prompt(sys_zipf(rng)));
      for (uint32_t k = 0; k < c.rag_docs_per_request; ++k) p.push_back(doc(doc_zipf(rng)));
      p.push_back(fresh(exp_tokens(c.user_tokens_mean)));
      out.Emit(static_cast<int64_t>(t * 1000), p, exp_tokens(c.output_tokens_mean), c.max_input_tokens);
    } else {
      p.push_back(sys_prompt((c.system_prompts - 1) % c.system_prompts));
      p.push_back(fresh(exp_tokens(c.user_tokens_mean * 2.0)));  // the task
      pending.push({t, order++, std::move(p), exp_tokens(c.output_tokens_mean), 1, 0});
    }
  }
  emit_until(c.duration_s);
  // Re-parse to get dense ids and validated lengths.
  return ParseTrace(FormatTrace(trace));
}

}  // namespace kvhub::replay
