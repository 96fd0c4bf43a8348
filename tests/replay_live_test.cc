// Live replay equals simulation: a generated trace replayed through kvhub::Client
// against real kvhubd shards gives the hit rate the simulator predicts for the
// same placement, policy, watermarks and byte accounting (docs/replay.md).
#include <cmath>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "bench/replay/live.h"
#include "bench/replay/payload.h"
#include "bench/replay/policies.h"
#include "bench/replay/simulator.h"
#include "bench/replay/store_model.h"
#include "bench/replay/workload_gen.h"
#include "client/client.h"
#include "gtest/gtest.h"
#include "tests/testing/kvhubd_process.h"

namespace kvhub::replay {
namespace {

struct Cluster {
  std::vector<std::unique_ptr<testing::KvhubdProcess>> procs;
  std::unique_ptr<Client> client;
};

// Starts `shards` kvhubd processes whose host tier holds about `blocks` blocks
// of `block_bytes` each; *model receives the exact store model.
// `prepare`: the client as kvhub-replay configures it (PrepareReplayClient).
void StartCluster(int shards, uint64_t blocks, uint64_t block_bytes, const std::string& policy,
                  bool prefix_aware, Cluster* c, StoreModel* model, bool prepare = true) {
  StoreModelInput in;
  in.block_bytes = block_bytes;
  in.max_block_bytes = 1ull << 20;
  // Capacity for `blocks` chunks under the high watermark, in whole pages.
  absl::StatusOr<StoreModel> probe = [&] {
    StoreModelInput p = in;
    p.capacity_bytes = p.region_bytes = 64ull << 20;
    return ModelStore(p);
  }();
  ASSERT_TRUE(probe.ok()) << probe.status();
  uint64_t cap = static_cast<uint64_t>((blocks + 0.5) * probe->chunk_bytes / in.high_watermark);
  cap = (cap + 4095) / 4096 * 4096;
  in.capacity_bytes = in.region_bytes = cap;
  in.slab_bytes = cap;  // one slab, given to kvhubd explicitly
  absl::StatusOr<StoreModel> m = ModelStore(in);
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_TRUE(m->exact);
  *model = *m;
  ClientConfig cc;
  for (int i = 0; i < shards; ++i) {
    testing::KvhubdProcessOptions o;
    o.flags = {absl::StrCat("--capacity_bytes=", cap), absl::StrCat("--region_bytes=", cap),
               absl::StrCat("--max_block_bytes=", in.max_block_bytes),
               absl::StrCat("--slab_bytes=", in.slab_bytes),
               absl::StrCat("--high_watermark=", in.high_watermark),
               absl::StrCat("--low_watermark=", in.low_watermark),
               absl::StrCat("--eviction_policy=", policy),
               absl::StrCat("--eviction_prefix_aware=", prefix_aware ? "true" : "false"),
               "--try_hugepages=false", "--log_level=warn"};
    auto p = testing::KvhubdProcess::Start(o);
    ASSERT_TRUE(p.ok()) << p.status();
    cc.members.push_back({(*p)->grpc_address(), 1.0});
    c->procs.push_back(*std::move(p));
  }
  if (prepare) PrepareReplayClient(&cc);
  auto client = Client::Create(cc);
  ASSERT_TRUE(client.ok()) << client.status();
  c->client = *std::move(client);
}

// The simulator's prediction for the cluster: its placement, policy, watermarks and
// the live client's access pattern.
absl::StatusOr<SimResult> SimulateCluster(const Trace& trace, const Cluster& cluster, const StoreModel& model,
                                          const std::string& policy, const LiveOptions& lo,
                                          const PayloadFactory& payloads) {
  std::vector<BlockKey> keys = TraceBlockKeys(trace, lo.ns, payloads.spec());
  std::vector<uint32_t> shard_of(keys.size());
  for (size_t b = 0; b < keys.size(); ++b) shard_of[b] = static_cast<uint32_t>(cluster.client->OwnerOf(keys[b]));
  std::vector<std::unique_ptr<storage::EvictionPolicy>> owned;
  std::vector<storage::EvictionPolicy*> pols;
  for (size_t i = 0; i < cluster.procs.size(); ++i) {
    auto p = MakeReplayPolicy(policy);
    if (!p.ok()) return p.status();
    pols.push_back(p->get());
    owned.push_back(*std::move(p));
  }
  SimOptions so;
  so.capacity_blocks = model.capacity_blocks;
  so.evict_to_blocks = model.evict_to_blocks;
  so.access_model = SimOptions::AccessModel::kLiveClient;
  so.cache_partial_tail = lo.pad_partial_tail;
  return SimulateSharded(trace, pols, shard_of, so);
}

struct Case {
  std::string policy;
  bool prefix_aware;
  bool pad_partial_tail = true;  // false: partial tails keep their length; nobody stores them
};

class ReplayLiveEqualsSim : public ::testing::TestWithParam<Case> {};

TEST_P(ReplayLiveEqualsSim, WithinOnePoint) {
  const Case& pc = GetParam();
  WorkloadConfig wc;
  wc.seed = 5;
  wc.duration_s = 600;
  wc.rate_per_s = 1.0;
  wc.system_prompts = 20;
  wc.rag_corpus_docs = 300;
  wc.think_time_s = 30;
  auto gen = GenerateWorkload(wc);
  ASSERT_TRUE(gen.ok()) << gen.status();
  Trace trace = TruncateTrace(*gen, 400);

  PayloadConfig pcfg;
  pcfg.codec = "raw";
  pcfg.bytes_per_token = 64;  // ~33 KB blocks keep the test to seconds
  auto payloads = PayloadFactory::Create(pcfg);
  ASSERT_TRUE(payloads.ok()) << payloads.status();
  ASSERT_EQ((*payloads)->block_bytes(), (*payloads)->first_block_bytes());

  const int kShards = 2;
  const uint64_t per_shard = trace.distinct_blocks / 25;  // 8% of the distinct blocks in all
  Cluster cluster;
  StoreModel model;
  StartCluster(kShards, per_shard, (*payloads)->block_bytes(), pc.policy, pc.prefix_aware,
               &cluster, &model);
  if (HasFatalFailure()) return;

  LiveOptions lo;
  lo.ns = "live-eq-sim";
  lo.pad_partial_tail = pc.pad_partial_tail;
  auto live = RunLive(trace, *cluster.client, **payloads, lo);
  ASSERT_TRUE(live.ok()) << live.status();
  EXPECT_EQ(live->verify_failures, 0u);
  EXPECT_EQ(live->fetch_failures, 0u);
  EXPECT_EQ(live->put_failures, 0u);
  EXPECT_EQ(live->errors(), 0u) << live->first_error;
  EXPECT_EQ(live->requests, trace.requests.size());

  EXPECT_EQ(live->unordered_publishes, 0u);
  auto sim = SimulateCluster(trace, cluster, model, pc.prefix_aware ? pc.policy + "+prefix" : pc.policy, lo,
                             **payloads);
  ASSERT_TRUE(sim.ok()) << sim.status();
  ASSERT_GT(sim->evicted_blocks, 0u) << "the capacity must be exercised";
  SimOptions so;
  so.cache_partial_tail = pc.pad_partial_tail;
  SimResult inf = SimulateInfinite(trace, so);
  EXPECT_LT(sim->hit_rate(), inf.hit_rate() - 0.02) << "capacity too large to tell policies apart";
  std::cout << pc.policy << (pc.prefix_aware ? "+prefix" : "")
            << (pc.pad_partial_tail ? "" : " (full blocks only)") << ": live " << live->hit_rate()
            << " sim " << sim->hit_rate() << " infinite " << inf.hit_rate() << " ("
            << trace.requests.size() << " requests, " << trace.distinct_blocks << " blocks, "
            << kShards << " shards x " << model.capacity_blocks << " blocks of "
            << model.chunk_bytes << " B)\n";
  EXPECT_NEAR(live->hit_rate(), sim->hit_rate(), 0.01)
      << pc.policy << (pc.prefix_aware ? "+prefix" : "") << ": live " << live->hit_rate()
      << " sim " << sim->hit_rate() << " (" << trace.requests.size() << " requests, "
      << trace.distinct_blocks << " blocks, " << model.capacity_blocks << " per shard)";
  uint64_t evictions = 0;
  for (const MemberStats& ms : cluster.client->Stats()) {
    ASSERT_TRUE(ms.stats.ok()) << ms.stats.status();
    for (const auto& t : ms.stats->tiers()) evictions += t.evictions();
  }
  EXPECT_GT(evictions, 0u);
}

// A request whose new blocks exceed one inline Put batch (32 MiB) went to its shard
// in several parallel calls, so the shard stored them out of chain order and evicted
// others than the simulator did: here the sim evicts the chain's first blocks (the
// third request hits nothing) while live kept some of them (17% hit, every run, in
// kvhub-replay before the fix). kvhub-replay's client now sends inline batches of up
// to 256 MiB (one call per shard) and counts requests that would still split.
TEST(ReplayLive, BlocksOfOneRequestAreStoredInChainOrder) {
  std::string text;
  const auto request = [&text](int ts, int first, int count) {
    std::string ids;
    for (int i = 0; i < count; ++i) absl::StrAppend(&ids, i ? "," : "", first + i);
    absl::StrAppend(&text, "{\"timestamp\": ", ts, ", \"input_length\": ", 512 * count,
                    ", \"output_length\": 1, \"hash_ids\": [", ids, "]}\n");
  };
  request(0, 1, 80);
  request(1, 1001, 16);
  request(2, 1, 80);
  absl::StatusOr<Trace> trace = ParseTrace(text);
  ASSERT_TRUE(trace.ok()) << trace.status();
  PayloadConfig pcfg;
  pcfg.codec = "raw";
  pcfg.bytes_per_token = 1024;  // 512 KiB blocks: 80 of them are 40 MiB, two inline batches
  auto payloads = PayloadFactory::Create(pcfg);
  ASSERT_TRUE(payloads.ok()) << payloads.status();
  LiveOptions lo;
  lo.ns = "chain-order";
  for (bool prepare : {false, true}) {
    SCOPED_TRACE(prepare ? "PrepareReplayClient" : "default client");
    Cluster cluster;
    StoreModel model;
    StartCluster(1, 48, (*payloads)->block_bytes(), "lru", false, &cluster, &model, prepare);
    if (HasFatalFailure()) return;
    ASSERT_LT(model.capacity_blocks, 96u) << "the second request must evict";
    auto live = RunLive(*trace, *cluster.client, **payloads, lo);
    ASSERT_TRUE(live.ok()) << live.status();
    EXPECT_EQ(live->errors(), 0u) << live->first_error;
    auto sim = SimulateCluster(*trace, cluster, model, "lru", lo, **payloads);
    ASSERT_TRUE(sim.ok()) << sim.status();
    ASSERT_GT(sim->evicted_blocks, 0u);
    if (!prepare) {
      EXPECT_GE(live->unordered_publishes, 1u) << "the first request split";
      continue;
    }
    EXPECT_EQ(live->unordered_publishes, 0u);
    EXPECT_EQ(live->hit_tokens, sim->hit_tokens) << "live " << live->hit_rate() << " sim " << sim->hit_rate();
  }
}

// A shard that is down turns its blocks into misses the cache did not cause: the
// replay counts them as errors with the first one (kvhub-replay then exits
// non-zero) instead of reporting a lower hit rate as the cache's.
TEST(ReplayLive, ShardErrorsAreCountedNotTakenForMisses) {
  WorkloadConfig wc;
  wc.seed = 7;
  wc.duration_s = 120;
  auto gen = GenerateWorkload(wc);
  ASSERT_TRUE(gen.ok()) << gen.status();
  Trace trace = TruncateTrace(*gen, 40);
  PayloadConfig pcfg;
  pcfg.codec = "raw";
  pcfg.bytes_per_token = 64;
  auto payloads = PayloadFactory::Create(pcfg);
  ASSERT_TRUE(payloads.ok()) << payloads.status();
  Cluster cluster;
  StoreModel model;
  StartCluster(2, 1000, (*payloads)->block_bytes(), "lru", false, &cluster, &model);
  if (HasFatalFailure()) return;
  LiveOptions lo;
  lo.ns = "errors";
  auto healthy = RunLive(TruncateTrace(trace, 10), *cluster.client, **payloads, lo);
  ASSERT_TRUE(healthy.ok()) << healthy.status();
  EXPECT_EQ(healthy->errors(), 0u) << healthy->first_error;
  ASSERT_TRUE(cluster.procs[1]->Kill().ok());
  auto live = RunLive(trace, *cluster.client, **payloads, lo);
  ASSERT_TRUE(live.ok()) << live.status();
  EXPECT_GT(live->lookup_failures, 0u);
  EXPECT_GT(live->put_failures, 0u);
  EXPECT_GT(live->errors(), 0u);
  EXPECT_FALSE(live->first_error.ok());
}

// Distinct hash ids get distinct tokens, however large (hashed ids, say): before
// session 27 h * 512 wrapped and ids 2^55 apart shared their tokens and keys.
TEST(ReplayLive, DistinctIdsGetDistinctTokens) {
  const auto tokens = [](int64_t id) {
    std::vector<int32_t> t;
    AppendBlockTokens(id, 512, &t);
    return t;
  };
  EXPECT_EQ(tokens(7), tokens(7));
  EXPECT_NE(tokens(1), tokens(1 + (int64_t{1} << 55)));
  EXPECT_NE(tokens(int64_t{1} << 62), tokens((int64_t{1} << 62) + 1));
  EXPECT_NE(tokens(int64_t{1} << 62), tokens(0));
  const std::vector<int32_t> top = tokens(INT64_MAX);
  ASSERT_EQ(top.size(), 512u);
  for (int32_t v : top) ASSERT_TRUE(v >= 1000 && v < 101000) << v;
}

// Checked before anything is sent (the client points nowhere): a request whose
// blocks would not fit in memory at once (it was an OOM kill or abort), and pacing
// stretched past 1e6 s (a double of seconds past ~9.2e9 overflowed the clock's
// duration: undefined, in practice no pacing at all).
TEST(ReplayLive, RefusesWhatCannotRunBeforeSendingAnything) {
  absl::StatusOr<Trace> trace = ParseTrace(
      "{\"timestamp\": 0, \"input_length\": 1024, \"output_length\": 1, \"hash_ids\": [1, 2]}\n"
      "{\"timestamp\": 5000, \"input_length\": 1536, \"output_length\": 1, \"hash_ids\": [1, 2, 3]}\n");
  ASSERT_TRUE(trace.ok()) << trace.status();
  PayloadConfig pcfg;
  pcfg.codec = "raw";
  pcfg.bytes_per_token = 64;  // 32 KiB blocks
  auto payloads = PayloadFactory::Create(pcfg);
  ASSERT_TRUE(payloads.ok()) << payloads.status();
  ClientConfig cc;
  cc.members = {{"127.0.0.1:1", 1.0}};
  auto client = Client::Create(cc);
  ASSERT_TRUE(client.ok()) << client.status();
  LiveOptions lo;
  lo.memory_bytes = 256 << 10;  // the largest request: 3 blocks x 32 KiB, twice: 192 KiB > half
  absl::StatusOr<LiveResult> r = RunLive(*trace, **client, **payloads, lo);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kResourceExhausted) << r.status();
  EXPECT_THAT(std::string(r.status().message()), ::testing::HasSubstr("largest request has 3 blocks"));
  lo.memory_bytes = 0;
  for (double speedup : {1e-6, 1e-300, -1.0, std::nan("")}) {  // 5 s of trace: over 1e6 s, or invalid
    lo.speedup = speedup;
    r = RunLive(*trace, **client, **payloads, lo);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << speedup << " " << r.status();
  }
  // Timestamps that go back, paced: each request is due at its timestamp after the
  // first one's, so the pacing lag reported the backward jump as lag (2000, 0, 0 at
  // speedup 1: 2 s that never happened). Refused, naming the request and its line
  // (a blank line is skipped but counted); without pacing they are fine.
  absl::StatusOr<Trace> backwards = ParseTrace(
      "{\"timestamp\": 2000, \"input_length\": 1024, \"output_length\": 1, \"hash_ids\": [1, 2]}\n"
      "\n"
      "{\"timestamp\": 0, \"input_length\": 1024, \"output_length\": 1, \"hash_ids\": [1, 2]}\n"
      "{\"timestamp\": 0, \"input_length\": 1536, \"output_length\": 1, \"hash_ids\": [1, 2, 3]}\n");
  ASSERT_TRUE(backwards.ok()) << backwards.status();
  ASSERT_EQ(backwards->requests.size(), 3u);
  EXPECT_EQ(backwards->requests[1].line, 3u);
  lo.speedup = 1;
  const absl::Status back = CheckLiveRun(*backwards, **payloads, lo);
  EXPECT_EQ(back.code(), absl::StatusCode::kInvalidArgument) << back;
  EXPECT_THAT(std::string(back.message()),
              ::testing::HasSubstr("trace request 2 (line 3): timestamp 0 ms is before the previous request's 2000 ms"));
  r = RunLive(*backwards, **client, **payloads, lo);
  EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << r.status();
  lo.speedup = 0;
  EXPECT_TRUE(CheckLiveRun(*backwards, **payloads, lo).ok());
}

INSTANTIATE_TEST_SUITE_P(Policies, ReplayLiveEqualsSim,
                         ::testing::Values(Case{"lru", false}, Case{"s3fifo", true},
                                           Case{"s3fifo", false}, Case{"as3fifo", false},
                                           Case{"duel", false}, Case{"duel", false, false}),
                         [](const ::testing::TestParamInfo<Case>& i) {
                           return i.param.policy + (i.param.prefix_aware ? "_prefix" : "") +
                                  (i.param.pad_partial_tail ? "" : "_full_blocks_only");
                         });

}  // namespace
}  // namespace kvhub::replay
