// Trace parsing, the offline simulator (policies, Belady, infinite) and the
// agentic workload generator of bench/replay, on small generated traces.
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "bench/replay/policies.h"
#include "bench/replay/simulator.h"
#include "bench/replay/trace.h"
#include "bench/replay/workload_gen.h"
#include "gtest/gtest.h"

namespace kvhub::replay {
namespace {

Trace Tiny();

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

// A hash id that recurs after another prefix than its first is another block (as
// kvhub's chained keys make it): before session 27 the simulator shared it, and
// counted [4,5,3] as hitting [1,2,3]'s block 3 (1536 hit tokens instead of 1024).
TEST(ReplayTrace, AnIdAfterAnotherPrefixIsAnotherBlock) {
  auto t = ParseTrace(
      "{\"timestamp\": 0, \"input_length\": 1536, \"hash_ids\": [4, 5, 9]}\n"
      "{\"timestamp\": 1, \"input_length\": 1536, \"hash_ids\": [1, 2, 3]}\n"
      "{\"timestamp\": 2, \"input_length\": 1536, \"hash_ids\": [4, 5, 3]}\n");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->distinct_blocks, 7u);
  EXPECT_NE(t->requests[2].blocks[2], t->requests[1].blocks[2]);
  EXPECT_EQ(ReusesAfterOtherPrefix(*t), 1u);
  SimOptions o;
  o.capacity_blocks = 100;
  EXPECT_EQ(SimulateInfinite(*t, o).hit_tokens, 1024u);
  auto lru = MakeReplayPolicy("lru");
  ASSERT_TRUE(lru.ok());
  auto r = SimulatePolicy(*t, **lru, o);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->hit_tokens, 1024u);
  EXPECT_EQ(ReusesAfterOtherPrefix(Tiny()), 0u) << "a prefix-chained trace";
}

TEST(ReplayTrace, RejectsBadLinesNamingThem) {
  auto t = ParseTrace("{\"timestamp\": 0, \"input_length\": 1000, \"hash_ids\": [1]}\n");
  ASSERT_FALSE(t.ok());
  EXPECT_NE(std::string(t.status().message()).find("line 1"), std::string::npos);
  EXPECT_FALSE(ParseTrace("not json\n").ok());
  EXPECT_FALSE(ParseTrace("{\"timestamp\": 0, \"input_length\": -1, \"hash_ids\": []}\n").ok());
  // Wrong types and values out of range are refused, not cast (before: an
  // uncaught exception for "abc", a wrapped timestamp for 1e19, 5e9 cut to 32 bits).
  for (const char* field : {"\"output_length\": \"abc\"", "\"output_length\": null", "\"output_length\": 5e9",
                            "\"output_length\": 5000000000", "\"timestamp\": 1e19, \"x\": 0"}) {
    const std::string line = absl::StrCat("{\"timestamp\": 0, \"input_length\": 10, \"hash_ids\": [1], ", field, "}\n");
    // (a duplicated "timestamp" key: nlohmann keeps the last)
    absl::Status st = ParseTrace(line).status();
    EXPECT_TRUE(absl::IsInvalidArgument(st)) << line << st;
  }
  EXPECT_TRUE(absl::IsNotFound(LoadTrace("/nonexistent/trace.jsonl").status()));
  // A directory, and a file with no requests, are errors rather than an all-zero report.
  EXPECT_TRUE(absl::IsInvalidArgument(LoadTrace(::testing::TempDir()).status()));
  const std::string empty = ::testing::TempDir() + "/empty_trace_" + std::to_string(getpid()) + ".jsonl";
  std::ofstream(empty).flush();
  absl::Status s = LoadTrace(empty).status();
  EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
  EXPECT_NE(std::string(s.message()).find("no requests"), std::string::npos) << s;
  std::remove(empty.c_str());
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

TEST(ReplaySim, ShardedWithOneShardEqualsSimulatePolicy) {
  WorkloadConfig c;
  c.duration_s = 200;
  auto t = GenerateWorkload(c);
  ASSERT_TRUE(t.ok());
  SimOptions o;
  o.capacity_blocks = 300;
  for (const char* name : {"lru", "s3fifo", "as3fifo", "duel"}) {
    auto a = MakeReplayPolicy(name);
    auto b = MakeReplayPolicy(name);
    ASSERT_TRUE(a.ok() && b.ok()) << name;
    auto single = SimulatePolicy(*t, **a, o);
    std::vector<uint32_t> zero(t->distinct_blocks, 0);
    auto sharded = SimulateSharded(*t, {b->get()}, zero, o);
    ASSERT_TRUE(single.ok() && sharded.ok()) << name;
    EXPECT_EQ(single->hit_tokens, sharded->hit_tokens) << name;
    EXPECT_EQ(single->evicted_blocks, sharded->evicted_blocks) << name;
  }
}

TEST(ReplaySim, ShardsEachHoldTheirCapacity) {
  WorkloadConfig c;
  c.duration_s = 200;
  auto t = GenerateWorkload(c);
  ASSERT_TRUE(t.ok());
  std::vector<uint32_t> shard_of(t->distinct_blocks);
  for (uint32_t b = 0; b < shard_of.size(); ++b) shard_of[b] = b % 3;
  auto p0 = MakeReplayPolicy("lru"), p1 = MakeReplayPolicy("lru"), p2 = MakeReplayPolicy("lru");
  ASSERT_TRUE(p0.ok() && p1.ok() && p2.ok());
  SimOptions o;
  // Three shards that together hold every block: the infinite cache's hits.
  o.capacity_blocks = t->distinct_blocks;
  auto all = SimulateSharded(*t, {p0->get(), p1->get(), p2->get()}, shard_of, o);
  ASSERT_TRUE(all.ok()) << all.status();
  EXPECT_EQ(all->hit_tokens, SimulateInfinite(*t, o).hit_tokens);
  EXPECT_EQ(all->evicted_blocks, 0u);
  // Small shards with a watermark: each round leaves evict_to_blocks + 1 after the insert.
  o.capacity_blocks = 50;
  o.evict_to_blocks = 40;
  o.access_model = SimOptions::AccessModel::kLiveClient;
  auto small = SimulateSharded(*t, {p0->get(), p1->get(), p2->get()}, shard_of, o);
  ASSERT_TRUE(small.ok());
  EXPECT_LT(small->hit_tokens, all->hit_tokens);
  EXPECT_LE(small->inserted_blocks - small->evicted_blocks, 3u * 50u);
  // Bad inputs.
  EXPECT_FALSE(SimulateSharded(*t, {}, shard_of, o).ok());
  std::vector<uint32_t> short_map(3, 0);
  EXPECT_FALSE(SimulateSharded(*t, {p0->get()}, short_map, o).ok());
  EXPECT_FALSE(SimulateSharded(*t, {p0->get()}, shard_of, o).ok());  // names shards 1, 2
  o.evict_to_blocks = 50;
  EXPECT_FALSE(SimulateSharded(*t, {p0->get(), p1->get(), p2->get()}, shard_of, o).ok());
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
