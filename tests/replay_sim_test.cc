// Trace parsing, the offline simulator (policies, Belady, infinite) and the
// agentic workload generator of bench/replay, on small generated traces.
#include <memory>
#include <string>

#include "bench/replay/policies.h"
#include "bench/replay/simulator.h"
#include "bench/replay/trace.h"
#include "bench/replay/workload_gen.h"
#include "gtest/gtest.h"

namespace kvhub::replay {
namespace {

TEST(ReplayTrace, ParsesAndRemapsIds) {
  auto t = ParseTrace(
      "{\"timestamp\": 0, \"input_length\": 1000, \"output_length\": 5, \"hash_ids\": [7, 9]}\n"
      "\n"
      "{\"timestamp\": 10, \"input_length\": 512, \"output_length\": 1, \"hash_ids\": [7]}\n");
  ASSERT_TRUE(t.ok()) << t.status();
  ASSERT_EQ(t->requests.size(), 2u);
  EXPECT_EQ(t->distinct_blocks, 2u);
  EXPECT_EQ(t->requests[0].blocks, (std::vector<uint32_t>{0, 1}));
  EXPECT_EQ(t->requests[1].blocks, (std::vector<uint32_t>{0}));
  EXPECT_EQ(t->requests[0].BlockTokens(1), 1000u - 512u);
  EXPECT_EQ(t->total_input_tokens, 1512u);
  auto again = ParseTrace(FormatTrace(*t));
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->requests[0].hash_ids, t->requests[0].hash_ids);
}

TEST(ReplayTrace, RejectsBadLinesNamingThem) {
  auto t = ParseTrace("{\"timestamp\": 0, \"input_length\": 1000, \"hash_ids\": [1]}\n");
  ASSERT_FALSE(t.ok());
  EXPECT_NE(std::string(t.status().message()).find("line 1"), std::string::npos);
  EXPECT_FALSE(ParseTrace("not json\n").ok());
  EXPECT_FALSE(ParseTrace("{\"timestamp\": 0, \"input_length\": -1, \"hash_ids\": []}\n").ok());
  EXPECT_FALSE(LoadTrace("/nonexistent/trace.jsonl").ok());
}

Trace Tiny() {
  // Blocks a,b,c; a,b,d; e; a,b,c: capacity 3 LRU keeps a,b,d then a,b... see test.
  auto t = ParseTrace(
      "{\"timestamp\": 0, \"input_length\": 1536, \"hash_ids\": [1, 2, 3]}\n"
      "{\"timestamp\": 1, \"input_length\": 1536, \"hash_ids\": [1, 2, 4]}\n"
      "{\"timestamp\": 2, \"input_length\": 512, \"hash_ids\": [5]}\n"
      "{\"timestamp\": 3, \"input_length\": 1300, \"hash_ids\": [1, 2, 3]}\n");
  EXPECT_TRUE(t.ok());
  return *t;
}

TEST(ReplaySim, LruOnAHandTrace) {
  Trace t = Tiny();
  SimOptions o;
  o.capacity_blocks = 3;
  auto lru = MakeReplayPolicy("lru");
  ASSERT_TRUE(lru.ok());
  auto r = SimulatePolicy(t, **lru, o);
  ASSERT_TRUE(r.ok()) << r.status();
  // req2 hits 1,2 (1024); req3 misses; after req3 LRU holds {2,4,5} minus... 1 was
  // evicted for 5 (LRU order 1,2,4), so req4 misses at block 1.
  EXPECT_EQ(r->hit_tokens, 1024u);
  EXPECT_EQ(r->requested_tokens, 1536u * 2 + 512 + 1300);
  auto inf = SimulateInfinite(t, o);
  EXPECT_EQ(inf.hit_tokens, 1024u + 1300u);
  auto bel = SimulateBelady(t, o);
  ASSERT_TRUE(bel.ok());
  // Belady bypasses 4 and 5 (never reused): req4 hits all 1300 tokens.
  EXPECT_EQ(bel->hit_tokens, 1024u + 1300u);
}

TEST(ReplaySim, RejectsZeroCapacity) {
  Trace t = Tiny();
  auto lru = MakeReplayPolicy("lru");
  ASSERT_TRUE(lru.ok());
  EXPECT_FALSE(SimulatePolicy(t, **lru, SimOptions{}).ok());
  EXPECT_FALSE(MakeReplayPolicy("nope").ok());
  EXPECT_FALSE(MakeReplayPolicy("as3fifo:window=7").ok());
}

TEST(ReplaySim, BeladyBoundsEveryPolicyOnAGeneratedWorkload) {
  WorkloadConfig c;
  c.duration_s = 300;
  c.rate_per_s = 5;
  auto t = GenerateWorkload(c);
  ASSERT_TRUE(t.ok()) << t.status();
  ASSERT_GT(t->requests.size(), 500u);
  for (uint64_t cap : {200u, 1000u}) {
    SimOptions o;
    o.capacity_blocks = cap;
    auto bel = SimulateBelady(*t, o);
    ASSERT_TRUE(bel.ok());
    SimResult inf = SimulateInfinite(*t, o);
    EXPECT_LE(bel->hit_tokens, inf.hit_tokens);
    for (const std::string& name : DefaultReplayPolicies()) {
      auto p = MakeReplayPolicy(name);
      ASSERT_TRUE(p.ok()) << name;
      auto r = SimulatePolicy(*t, **p, o);
      ASSERT_TRUE(r.ok()) << name;
      EXPECT_LE(r->hit_tokens, bel->hit_tokens) << name << " cap " << cap;
      EXPECT_GT(r->hit_tokens, 0u) << name;
      EXPECT_EQ(r->inserted_blocks - r->evicted_blocks <= cap, true) << name;
    }
  }
}

TEST(ReplayWorkload, DeterministicSharedPrefixesAndValidated) {
  WorkloadConfig c;
  c.duration_s = 120;
  auto a = GenerateWorkload(c);
  auto b = GenerateWorkload(c);
  ASSERT_TRUE(a.ok() && b.ok());
  EXPECT_EQ(FormatTrace(*a), FormatTrace(*b));
  c.seed = 2;
  auto d = GenerateWorkload(c);
  ASSERT_TRUE(d.ok());
  EXPECT_NE(FormatTrace(*a), FormatTrace(*d));
  SimOptions o;
  SimResult inf = SimulateInfinite(*a, o);
  EXPECT_GT(inf.hit_rate(), 0.05);  // system prompts, sessions and agents share prefixes
  c.rate_per_s = 0;
  EXPECT_FALSE(GenerateWorkload(c).ok());
}

}  // namespace
}  // namespace kvhub::replay
