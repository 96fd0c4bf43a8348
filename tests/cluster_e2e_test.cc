// End-to-end tests of kvhub::Client against three real kvhubd processes
// (tests/testing/kvhubd_process.h): publish -> lookup -> fetch byte-exact,
// placement over all shards, both put paths and both get paths, concurrent
// clients, eviction under memory pressure, a killed shard, and a block whose
// declared checksum is wrong (refused by the server).

#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "client/channel_faults.h"
#include "client/client.h"
#include "common/hash.h"
#include "common/keys.h"
#include "common/model_spec.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/client_interceptor.h"
#include "gtest/gtest.h"
#include "kvhub/v1/kvhub.grpc.pb.h"
#include "tests/testing/kvhubd_process.h"
#include "tests/testing/raw_calls.h"
#include "tests/testing/run_command.h"

namespace kvhub {
namespace {

using testing::KvhubdProcess;
using testing::KvhubdProcessOptions;

ModelSpec TestSpec() {
  ModelSpec s;
  s.model = "e2e-model";
  s.layers = 2;
  s.kv_heads = 2;
  s.head_dim = 64;
  s.block_tokens = 16;
  return s;
}

std::vector<int32_t> Tokens(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<int32_t> t(n);
  for (int32_t& v : t) v = static_cast<int32_t>(rng() % 128000);
  return t;
}

// Deterministic payload of `size` bytes for a key: any mix-up of blocks or
// bytes shows as a mismatch.
std::vector<uint8_t> Payload(const BlockKey& key, size_t size) {
  std::vector<uint8_t> p(size);
  uint64_t x = key.lo ^ (key.hi * 0x9e3779b97f4a7c15ull) ^ size;
  for (size_t i = 0; i < size; i += 8) {
    x += 0x9e3779b97f4a7c15ull;
    uint64_t z = x;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    std::memcpy(p.data() + i, &z, std::min<size_t>(8, size - i));
  }
  return p;
}

struct Sequence {
  std::vector<int32_t> tokens;
  std::vector<BlockKey> keys;
  std::vector<std::vector<uint8_t>> payloads;
  std::vector<std::span<const uint8_t>> spans;
};

// `sizes(i)` picks block i's payload size.
template <typename SizeFn>
Sequence MakeSequence(absl::string_view ns, const ModelSpec& spec, size_t blocks, uint32_t seed,
                      SizeFn sizes) {
  Sequence s;
  s.tokens = Tokens(blocks * spec.block_tokens + 5, seed);  // a partial tail block is ignored
  s.keys = BlockKeys(ns, spec, s.tokens);
  for (size_t i = 0; i < s.keys.size(); ++i) s.payloads.push_back(Payload(s.keys[i], sizes(i)));
  for (const auto& p : s.payloads) s.spans.emplace_back(p);
  return s;
}

class Cluster {
 public:
  static std::unique_ptr<Cluster> Start(size_t n, std::vector<std::string> flags = {}) {
    auto c = std::make_unique<Cluster>();
    for (size_t i = 0; i < n; ++i) {
      KvhubdProcessOptions o;
      // try_hugepages=false: on hosts without reserved hugepages kvhubd's
      // MAP_HUGETLB regions fault with SIGBUS (reported to the server owner).
      o.flags = {"--try_hugepages=false"};
      o.flags.insert(o.flags.end(), flags.begin(), flags.end());
      o.node_id = absl::StrCat("e2e-", i);
      auto p = KvhubdProcess::Start(o);
      EXPECT_TRUE(p.ok()) << p.status();
      if (!p.ok()) return nullptr;
      c->procs.push_back(*std::move(p));
    }
    return c;
  }
  ClientConfig Config() const {
    ClientConfig cfg;
    for (const auto& p : procs) cfg.members.push_back({p->grpc_address(), 1.0});
    cfg.control_deadline = absl::Seconds(5);
    cfg.data_deadline = absl::Seconds(20);
    cfg.concurrency = 4;
    return cfg;
  }
  std::unique_ptr<Client> NewClient(ClientConfig cfg) const {
    auto c = Client::Create(std::move(cfg));
    EXPECT_TRUE(c.ok()) << c.status();
    return c.ok() ? *std::move(c) : nullptr;
  }
  std::vector<std::unique_ptr<KvhubdProcess>> procs;
};

struct Buffers {
  explicit Buffers(size_t n, size_t cap) : store(n, std::vector<uint8_t>(cap, 0xEE)) {
    for (auto& b : store) spans.emplace_back(b);
  }
  std::vector<std::vector<uint8_t>> store;
  std::vector<std::span<uint8_t>> spans;
};

void ExpectByteExact(const Sequence& s, const Buffers& b, const FetchResult& r, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    if (!r.status[i].ok()) continue;
    ASSERT_EQ(r.sizes[i], s.payloads[i].size()) << "block " << i;
    ASSERT_EQ(0, std::memcmp(b.store[i].data(), s.payloads[i].data(), r.sizes[i]))
        << "block " << i << " differs from what was published";
  }
}

TEST(ClusterE2eTest, PublishLookupFetchByteExactAcrossThreeShards) {
  auto cluster = Cluster::Start(3);
  ASSERT_NE(cluster, nullptr);
  ClientConfig cfg = cluster->Config();
  cfg.inline_put_max_block_bytes = 48 << 10;  // blocks above 48 KiB take PutStart/PutData/PutCommit
  cfg.max_keys_per_rpc = 16;                  // several batches per shard
  auto client = cluster->NewClient(cfg);
  ASSERT_NE(client, nullptr);
  const ModelSpec spec = TestSpec();
  const std::string ns = "tenant-e2e";
  // 90 blocks, sizes 1 KiB .. ~200 KiB: both put paths.
  Sequence seq = MakeSequence(ns, spec, 90, 1, [](size_t i) { return 1024 + (i * 7919) % (200 << 10); });

  absl::StatusOr<LookupResult> before = client->LookupPrefix(ns, spec, seq.tokens);
  ASSERT_TRUE(before.ok()) << before.status();
  EXPECT_EQ(before->hit_blocks, 0u);
  EXPECT_TRUE(before->first_error.ok()) << before->first_error;

  absl::StatusOr<PublishResult> pub = client->Publish(ns, spec, seq.tokens, seq.spans);
  ASSERT_TRUE(pub.ok()) << pub.status();
  for (size_t i = 0; i < pub->errors.size(); ++i) EXPECT_TRUE(pub->errors[i].ok()) << pub->errors[i];
  EXPECT_EQ(pub->stored, 90u);
  EXPECT_EQ(pub->skipped, 0u);
  EXPECT_EQ(pub->failed, 0u);
  EXPECT_EQ(pub->keys, seq.keys);

  absl::StatusOr<LookupResult> hit = client->LookupPrefix(ns, spec, seq.tokens);
  ASSERT_TRUE(hit.ok()) << hit.status();
  EXPECT_EQ(hit->hit_blocks, 90u);
  EXPECT_EQ(hit->hit_tokens, 90u * spec.block_tokens);

  Buffers bufs(90, 256 << 10);
  absl::StatusOr<FetchResult> got = client->Fetch(ns, spec, seq.tokens, 90, bufs.spans);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->valid_blocks, 90u);
  EXPECT_EQ(got->valid_tokens, 90u * spec.block_tokens);
  ExpectByteExact(seq, bufs, *got, 90);

  // Publishing again uploads nothing.
  absl::StatusOr<PublishResult> again = client->Publish(ns, spec, seq.tokens, seq.spans);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(again->skipped, 90u);
  EXPECT_EQ(again->stored, 0u);
  EXPECT_EQ(again->bytes_uploaded, 0u);

  // Blocks land on every shard, exactly where the placement says.
  std::vector<uint64_t> owned(3, 0);
  for (const BlockKey& k : seq.keys) ++owned[client->OwnerOf(k)];
  std::vector<MemberStats> stats = client->Stats();
  ASSERT_EQ(stats.size(), 3u);
  for (size_t m = 0; m < 3; ++m) {
    ASSERT_TRUE(stats[m].stats.ok()) << stats[m].stats.status();
    uint64_t blocks = 0;
    for (const auto& t : stats[m].stats->tiers()) blocks += t.blocks();
    EXPECT_GT(owned[m], 0u) << "no block placed on member " << m;
    EXPECT_EQ(blocks, owned[m]) << "member " << stats[m].address;
  }

  // Another namespace sees nothing.
  absl::StatusOr<LookupResult> other = client->LookupPrefix("tenant-other", spec, seq.tokens);
  ASSERT_TRUE(other.ok());
  EXPECT_EQ(other->hit_blocks, 0u);
}

TEST(ClusterE2eTest, EveryPutPathAndGetModeIsByteExact) {
  auto cluster = Cluster::Start(3);
  ASSERT_NE(cluster, nullptr);
  const ModelSpec spec = TestSpec();
  struct Mode {
    uint64_t inline_max;
    GetMode get;
    uint64_t chunk;
  };
  const Mode modes[] = {{0, GetMode::kInline, 4096},          // all reserved, inline Get
                        {256ull << 20, GetMode::kStream, 4096},  // all inline Put, GetStream
                        {64 << 10, GetMode::kAuto, 1 << 20}};
  uint32_t seed = 10;
  for (const Mode& m : modes) {
    ClientConfig cfg = cluster->Config();
    cfg.inline_put_max_block_bytes = m.inline_max;
    cfg.get_mode = m.get;
    cfg.stream_chunk_bytes = m.chunk;  // small chunks: many PutDataChunks per block
    auto client = cluster->NewClient(cfg);
    ASSERT_NE(client, nullptr);
    const std::string ns = absl::StrCat("mode-", seed);
    Sequence seq = MakeSequence(ns, spec, 24, ++seed, [](size_t i) { return 1 + i * 13001; });
    absl::StatusOr<PublishResult> pub = client->Publish(ns, spec, seq.tokens, seq.spans);
    ASSERT_TRUE(pub.ok()) << pub.status();
    EXPECT_EQ(pub->stored, 24u) << (pub->failed ? pub->errors[0].ToString() : "");
    Buffers bufs(24, 400 << 10);
    absl::StatusOr<FetchResult> got = client->Fetch(ns, spec, seq.tokens, 24, bufs.spans);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(got->valid_blocks, 24u) << got->status[got->valid_blocks % 24];
    ExpectByteExact(seq, bufs, *got, 24);
  }
}

TEST(ClusterE2eTest, HitEndsAtFirstMissingOrUnloadableBlock) {
  auto cluster = Cluster::Start(3);
  ASSERT_NE(cluster, nullptr);
  auto client = cluster->NewClient(cluster->Config());
  ASSERT_NE(client, nullptr);
  const ModelSpec spec = TestSpec();
  const std::string ns = "prefix";
  Sequence seq = MakeSequence(ns, spec, 20, 3, [](size_t) { return 8192; });
  // Publish only the first 12 blocks.
  std::vector<int32_t> first12(seq.tokens.begin(), seq.tokens.begin() + 12 * spec.block_tokens);
  absl::StatusOr<PublishResult> pub = client->Publish(
      ns, spec, first12, std::span<const std::span<const uint8_t>>(seq.spans).first(12));
  ASSERT_TRUE(pub.ok()) << pub.status();
  EXPECT_EQ(pub->stored, 12u);

  absl::StatusOr<LookupResult> hit = client->LookupPrefix(ns, spec, seq.tokens);
  ASSERT_TRUE(hit.ok());
  EXPECT_EQ(hit->hit_blocks, 12u);

  Buffers bufs(20, 8192);
  bufs.spans[5] = std::span<uint8_t>(bufs.store[5]).first(100);  // too small for block 5
  absl::StatusOr<FetchResult> got = client->Fetch(ns, spec, seq.tokens, 20, bufs.spans);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->valid_blocks, 5u);
  EXPECT_EQ(got->valid_tokens, 5u * spec.block_tokens);
  EXPECT_EQ(got->status[5].code(), absl::StatusCode::kResourceExhausted) << got->status[5];
  EXPECT_EQ(got->sizes[5], 0u);
  EXPECT_EQ(got->status[12].code(), absl::StatusCode::kNotFound) << got->status[12];
  ExpectByteExact(seq, bufs, *got, 20);

  // Bad input is refused before anything is sent.
  EXPECT_EQ(client->Publish(ns, spec, seq.tokens, std::span<const std::span<const uint8_t>>(seq.spans).first(3))
                .status()
                .code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(client->Fetch(ns, spec, seq.tokens, 21, bufs.spans).status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(client->LookupPrefix("", spec, seq.tokens).status().code(),
            absl::StatusCode::kInvalidArgument);
  // Metrics labels the shards refuse: the call fails, not every key "unreachable".
  EXPECT_EQ(client->Lookup(ns, seq.keys, true, (1u << 20) + 1, "m").status().code(),
            absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(client->Lookup(ns, seq.keys, true, 16, "a\tb").status().code(), absl::StatusCode::kInvalidArgument);

  // Delete the hit's block 3: the prefix now ends there.
  absl::StatusOr<std::vector<absl::Status>> del =
      client->Delete(ns, std::span<const BlockKey>(seq.keys).subspan(3, 1));
  ASSERT_TRUE(del.ok());
  EXPECT_TRUE((*del)[0].ok()) << (*del)[0];
  hit = client->LookupPrefix(ns, spec, seq.tokens);
  ASSERT_TRUE(hit.ok());
  EXPECT_EQ(hit->hit_blocks, 3u);
}

TEST(ClusterE2eTest, ConcurrentClientsPublishAndFetch) {
  auto cluster = Cluster::Start(3);
  ASSERT_NE(cluster, nullptr);
  const ModelSpec spec = TestSpec();
  const std::string ns = "concurrent";
  constexpr int kThreads = 6;
  // One shared sequence that every thread publishes (races on the same keys)
  // plus a private one each.
  Sequence shared = MakeSequence(ns, spec, 30, 100, [](size_t i) { return 2048 + i * 997; });
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      ClientConfig cfg = cluster->Config();
      cfg.inline_put_max_block_bytes = 16 << 10;
      auto client = Client::Create(cfg);
      if (!client.ok()) {
        ++failures;
        return;
      }
      Sequence mine = MakeSequence(ns, spec, 20, 200 + t, [](size_t i) { return 4096 + i * 4099; });
      for (int round = 0; round < 3; ++round) {
        for (const Sequence* s : {&shared, &mine}) {
          auto pub = (*client)->Publish(ns, spec, s->tokens, s->spans);
          if (!pub.ok() || pub->failed != 0) ++failures;
          Buffers bufs(s->keys.size(), 128 << 10);
          auto got = (*client)->Fetch(ns, spec, s->tokens, s->keys.size(), bufs.spans);
          // A shared block skipped because another thread was storing it may
          // not be committed yet: a shorter hit is fine, wrong bytes never are.
          if (!got.ok() || (s == &mine && got->valid_blocks != s->keys.size())) {
            ++failures;
            continue;
          }
          for (size_t i = 0; i < got->valid_blocks; ++i) {
            if (got->sizes[i] != s->payloads[i].size() ||
                std::memcmp(bufs.store[i].data(), s->payloads[i].data(), got->sizes[i]) != 0) {
              ++failures;
            }
          }
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  // Every racing publisher is done: the shared sequence is whole and exact.
  auto client = cluster->NewClient(cluster->Config());
  ASSERT_NE(client, nullptr);
  Buffers bufs(shared.keys.size(), 128 << 10);
  auto got = client->Fetch(ns, spec, shared.tokens, shared.keys.size(), bufs.spans);
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(got->valid_blocks, shared.keys.size());
  for (size_t i = 0; i < shared.keys.size(); ++i) {
    ASSERT_EQ(got->sizes[i], shared.payloads[i].size());
    EXPECT_EQ(std::memcmp(bufs.store[i].data(), shared.payloads[i].data(), got->sizes[i]), 0);
  }
}

TEST(ClusterE2eTest, EvictionUnderMemoryPressureNeverServesWrongData) {
  // 3 shards x 8 MiB; publish ~10x that.
  auto cluster = Cluster::Start(3, {"--capacity_bytes=8MiB", "--region_bytes=8MiB",
                                    "--max_block_bytes=1MiB"});
  ASSERT_NE(cluster, nullptr);
  auto client = cluster->NewClient(cluster->Config());
  ASSERT_NE(client, nullptr);
  const ModelSpec spec = TestSpec();
  const std::string ns = "pressure";
  std::vector<Sequence> seqs;
  size_t stored = 0;
  for (uint32_t s = 0; s < 30; ++s) {
    seqs.push_back(MakeSequence(ns, spec, 32, 1000 + s, [](size_t i) { return 24576 + i * 512; }));
    absl::StatusOr<PublishResult> pub = client->Publish(ns, spec, seqs.back().tokens, seqs.back().spans);
    ASSERT_TRUE(pub.ok()) << pub.status();
    stored += pub->stored;
  }
  EXPECT_GT(stored, 0u);
  size_t hits = 0, misses = 0, last_seq_hits = 0;
  for (const Sequence& s : seqs) {
    absl::StatusOr<LookupResult> look = client->LookupPrefix(ns, spec, s.tokens);
    ASSERT_TRUE(look.ok());
    Buffers bufs(s.keys.size(), 64 << 10);
    absl::StatusOr<FetchResult> got = client->Fetch(ns, spec, s.tokens, s.keys.size(), bufs.spans);
    ASSERT_TRUE(got.ok());
    ExpectByteExact(s, bufs, *got, s.keys.size());  // every block reported OK is exact
    for (size_t i = 0; i < s.keys.size(); ++i) {
      if (got->status[i].ok()) {
        ++hits;
        if (&s == &seqs.back()) ++last_seq_hits;
      } else {
        EXPECT_EQ(got->status[i].code(), absl::StatusCode::kNotFound) << got->status[i];
        ++misses;
      }
    }
  }
  EXPECT_GT(misses, 0u) << "capacity did not force evictions";
  EXPECT_GT(hits, 0u) << "nothing survived";
  // Each shard stays within its capacity and reports evictions.
  for (const MemberStats& m : client->Stats()) {
    ASSERT_TRUE(m.stats.ok()) << m.stats.status();
    for (const auto& t : m.stats->tiers()) {
      if (t.tier() != "host") continue;
      EXPECT_LE(t.used_bytes(), t.capacity_bytes());
      EXPECT_GT(t.evictions(), 0u);
    }
  }
  // The most recent sequence is mostly still cached and fetchable. Not all of
  // it: when a size class needs a slab, the victim's whole slab is emptied and
  // that can take recent blocks of other classes with it (docs/storage.md).
  std::fprintf(stderr, "last sequence: %zu of %zu blocks cached\n", last_seq_hits, seqs.back().keys.size());
  EXPECT_GE(last_seq_hits * 2, seqs.back().keys.size());
}

TEST(ClusterE2eTest, KilledShardCostsItsBlocksNeverCorrectness) {
  auto cluster = Cluster::Start(3);
  ASSERT_NE(cluster, nullptr);
  ClientConfig cfg = cluster->Config();
  cfg.control_deadline = absl::Seconds(2);
  cfg.max_attempts = 2;
  auto client = cluster->NewClient(cfg);
  ASSERT_NE(client, nullptr);
  const ModelSpec spec = TestSpec();
  const std::string ns = "faults";
  Sequence seq = MakeSequence(ns, spec, 60, 7, [](size_t i) { return 5000 + i * 300; });
  absl::StatusOr<PublishResult> pub = client->Publish(ns, spec, seq.tokens, seq.spans);
  ASSERT_TRUE(pub.ok());
  ASSERT_EQ(pub->stored, 60u);

  EXPECT_TRUE(client->CheckMembersAnswer().ok());
  const size_t dead = 1;
  const std::string dead_address = cluster->procs[dead]->grpc_address();
  ASSERT_TRUE(cluster->procs[dead]->Kill().ok());
  absl::Status up = client->CheckMembersAnswer();
  EXPECT_TRUE(absl::IsUnavailable(up)) << up;
  EXPECT_NE(std::string(up.message()).find(dead_address), std::string::npos) << up;
  EXPECT_EQ(std::string(up.message()).find(cluster->procs[0]->grpc_address()), std::string::npos) << up;
  size_t first_dead = 60;
  for (size_t i = 0; i < 60 && first_dead == 60; ++i) {
    if (client->OwnerOf(seq.keys[i]) == dead) first_dead = i;
  }
  ASSERT_LT(first_dead, 60u);

  absl::StatusOr<LookupResult> look = client->LookupPrefix(ns, spec, seq.tokens);
  ASSERT_TRUE(look.ok());
  EXPECT_EQ(look->hit_blocks, first_dead);
  EXPECT_GT(look->unreachable_keys, 0u);
  EXPECT_FALSE(look->first_error.ok());

  Buffers bufs(60, 64 << 10);
  absl::StatusOr<FetchResult> got = client->Fetch(ns, spec, seq.tokens, 60, bufs.spans);
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->valid_blocks, first_dead);
  ExpectByteExact(seq, bufs, *got, 60);
  for (size_t i = 0; i < 60; ++i) {
    if (client->OwnerOf(seq.keys[i]) == dead) {
      EXPECT_FALSE(got->status[i].ok()) << "block " << i << " of a dead shard reported loaded";
      EXPECT_EQ(got->sizes[i], 0u);
    } else {
      EXPECT_TRUE(got->status[i].ok()) << "block " << i << ": " << got->status[i];
    }
  }

  // Publishing a new sequence stores what live shards own and reports the rest.
  Sequence fresh = MakeSequence(ns, spec, 30, 8, [](size_t) { return 3000; });
  size_t on_dead = 0;
  for (const BlockKey& k : fresh.keys) on_dead += client->OwnerOf(k) == dead;
  absl::StatusOr<PublishResult> pub2 = client->Publish(ns, spec, fresh.tokens, fresh.spans);
  ASSERT_TRUE(pub2.ok());
  EXPECT_EQ(pub2->failed, on_dead);
  EXPECT_EQ(pub2->stored, 30u - on_dead);
  for (size_t i = 0; i < 30; ++i) {
    if (client->OwnerOf(fresh.keys[i]) == dead) {
      EXPECT_EQ(pub2->errors[i].code(), absl::StatusCode::kUnavailable) << pub2->errors[i];
    }
  }
  std::vector<MemberStats> stats = client->Stats();
  EXPECT_FALSE(stats[dead].stats.ok());
  EXPECT_TRUE(stats[(dead + 1) % 3].stats.ok());
}

TEST(ClusterE2eTest, AShardRestartedOnItsAddressIsReachedAgainAndStopsPromptlyWithIdleClients) {
  // gRPC sees a reconnect or a shard's GOAWAY on an idle client connection only when
  // something polls it (client/shard.cc): without that a restarted shard stayed
  // unreachable for up to 5 s and a shard's SIGTERM waited up to 5 s for its idle
  // clients to hang up.
  auto cluster = Cluster::Start(1, {"--shutdown_timeout_ms=10000"});
  ASSERT_NE(cluster, nullptr);
  ClientConfig cfg = cluster->Config();
  cfg.control_deadline = absl::Milliseconds(500);
  auto client = cluster->NewClient(cfg);
  ASSERT_NE(client, nullptr);
  ASSERT_TRUE(client->CheckMembersAnswer().ok());
  const std::string address = cluster->procs[0]->grpc_address();
  ASSERT_TRUE(cluster->procs[0]->Kill().ok());
  for (int i = 0; i < 5; ++i) EXPECT_FALSE(client->CheckMembersAnswer().ok());  // channels now in backoff

  KvhubdProcessOptions o;
  o.flags = {"--try_hugepages=false", "--shutdown_timeout_ms=10000", "--grpc_address=" + address};
  auto restarted = KvhubdProcess::Start(o);
  ASSERT_TRUE(restarted.ok()) << restarted.status();
  const absl::Time back = absl::Now();
  absl::Status up;
  while (!(up = client->CheckMembersAnswer()).ok() && absl::Now() - back < absl::Seconds(10)) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  ASSERT_TRUE(up.ok()) << up;
  // gRPC's reconnect backoff (at most 2 s here, client/shard.cc, plus up to 20%
  // jitter) bounds it; without the cap it would be gRPC's default 120 s.
  EXPECT_LT(absl::Now() - back, absl::Milliseconds(4000));

  const absl::Time stop = absl::Now();
  auto code = (*restarted)->Stop();
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 0);
  EXPECT_LT(absl::Now() - stop, absl::Seconds(3)) << "the drain waited for an idle client to hang up";
}

// A fork of a process with a client (Python multiprocessing's default start
// method does this) must fail fast with a clear error, not hang in gRPC or in
// locks the parent's threads held; the parent's client goes on working.
TEST(ClusterE2eTest, AForkedChildGetsAClearErrorInsteadOfAHang) {
  auto cluster = Cluster::Start(1);
  ASSERT_NE(cluster, nullptr);
  auto client = cluster->NewClient(cluster->Config());
  ASSERT_NE(client, nullptr);
  const BlockKey key{0xf0, 0x0f};
  ASSERT_TRUE(client->Lookup("fork", std::span<const BlockKey>(&key, 1)).ok());
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {  // the child: only the calls under test, then _exit with a verdict
    absl::StatusOr<LookupResult> look = client->Lookup("fork", std::span<const BlockKey>(&key, 1));
    const bool call_refused = absl::IsFailedPrecondition(look.status()) &&
                              absl::StrContains(look.status().message(), "forked");
    absl::StatusOr<std::unique_ptr<Client>> fresh = Client::Create(cluster->Config());
    const bool create_refused = absl::IsFailedPrecondition(fresh.status());
    const bool stats_refused = absl::IsFailedPrecondition(client->Stats()[0].stats.status());
    // Tokens of no full block: Publish returned OK, having nothing to send.
    const ModelSpec spec{.model = "m", .layers = 1, .kv_heads = 1, .head_dim = 8, .block_tokens = 16};
    const std::vector<int32_t> few(3, 1);
    const bool publish_refused = absl::IsFailedPrecondition(client->Publish("fork", spec, few, {}).status());
    client.reset();  // leaks the parent's threads' state instead of joining them
    _exit(call_refused && create_refused && stats_refused && publish_refused ? 0 : 3);
  }
  absl::StatusOr<int> waited = testing::WaitChildUntil(pid, absl::Now() + absl::Seconds(20));
  ASSERT_TRUE(waited.ok()) << "the forked child: " << waited.status();
  const int status = *waited;
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "the child's calls were not refused with FAILED_PRECONDITION";
  EXPECT_TRUE(client->Lookup("fork", std::span<const BlockKey>(&key, 1)).ok());  // the parent's still works
}

// Points the proxy variables gRPC reads at a dead port (and clears the
// exclusions) while it lives.
class ScopedDeadProxy {
 public:
  ScopedDeadProxy() {
    for (const char* v : kProxyVars) setenv(v, "http://127.0.0.1:9", 1);
    for (const char* v : kExclusionVars) unsetenv(v);
  }
  ~ScopedDeadProxy() {
    for (const char* v : kProxyVars) unsetenv(v);
  }

 private:
  static constexpr const char* kProxyVars[] = {"grpc_proxy", "https_proxy", "http_proxy"};
  static constexpr const char* kExclusionVars[] = {"no_grpc_proxy", "no_proxy"};
};

// A proxy in the environment (set for a host's or pod's outbound web traffic)
// must not sit between a client and its shards: here it is a dead port, so a
// call through it fails. The client connects straight to the shard unless told
// to follow the proxy variables.
TEST(ClusterE2eTest, ClientIgnoresProxyEnvironmentUnlessAsked) {
  auto cluster = Cluster::Start(1);
  ASSERT_NE(cluster, nullptr);
  const BlockKey key{0xabc, 0xdef};
  const std::vector<uint8_t> data(4096, 7);
  ScopedDeadProxy env;  // before the channels exist
  {
    auto client = cluster->NewClient(cluster->Config());
    ASSERT_NE(client, nullptr);
    BlockPut put{key, std::nullopt, data};
    absl::StatusOr<PutResult> r = client->Put("proxy", std::span<const BlockPut>(&put, 1));
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_EQ(r->stored, 1u);
  }
  ClientConfig cfg = cluster->Config();
  cfg.use_proxy_env = true;
  cfg.max_attempts = 1;
  auto proxied = cluster->NewClient(cfg);
  ASSERT_NE(proxied, nullptr);
  absl::StatusOr<LookupResult> look = proxied->Lookup("proxy", std::span<const BlockKey>(&key, 1));
  const bool failed = !look.ok() || look->present[0] == 0;
  EXPECT_TRUE(failed) << "use_proxy_env=true reached the shard past a dead proxy";
}

// Makes the reply of the first `count` calls to `method` go missing after the shard
// carried them out: the client sees UNAVAILABLE, as when a connection drops before the
// reply arrives, and retries (client/channel_faults.h).
class LoseReplies final : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  LoseReplies(std::string method, std::shared_ptr<std::atomic<int>> left) : method_(std::move(method)), left_(left) {}
  grpc::experimental::Interceptor* CreateClientInterceptor(grpc::experimental::ClientRpcInfo* info) override {
    if (method_ != info->method()) return nullptr;
    return new Lose(left_.get());
  }

 private:
  class Lose final : public grpc::experimental::Interceptor {
   public:
    explicit Lose(std::atomic<int>* left) : left_(left) {}
    void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
      if (methods->QueryInterceptionHookPoint(grpc::experimental::InterceptionHookPoints::POST_RECV_STATUS) &&
          methods->GetRecvStatus()->ok() && left_->fetch_sub(1) > 0) {
        *methods->GetRecvStatus() = grpc::Status(grpc::StatusCode::UNAVAILABLE, "injected: the reply was lost");
      }
      methods->Proceed();
    }

   private:
    std::atomic<int>* const left_;
  };
  const std::string method_;
  const std::shared_ptr<std::atomic<int>> left_;
};

struct ScopedLostReplies {
  ScopedLostReplies(const std::string& method, int count) : left(std::make_shared<std::atomic<int>>(count)) {
    auto l = left;
    SetChannelFaultsForTesting([method, l] { return std::make_unique<LoseReplies>(method, l); });
  }
  ~ScopedLostReplies() { SetChannelFaultsForTesting(nullptr); }
  std::shared_ptr<std::atomic<int>> left;
};

// Three 64 KiB blocks (keys key_lo.., bytes fill..) and a gRPC config under which
// they take the reservation path (PutStart / PutData / PutCommit), for the tests of
// that path's lost and busy answers. The puts point into `data`.
struct ReservedPuts {
  ClientConfig cfg;
  std::vector<std::vector<uint8_t>> data;
  std::vector<BlockPut> puts;
};
ReservedPuts ThreeReservedPuts(const Cluster& cluster, uint64_t key_lo, uint8_t fill) {
  ReservedPuts r;
  r.cfg = cluster.Config();
  r.cfg.transport = TransportMode::kGrpc;
  r.cfg.inline_put_max_block_bytes = 1024;  // 64 KiB blocks take PutStart / PutData / PutCommit
  for (uint64_t i = 0; i < 3; ++i) r.data.emplace_back(64 << 10, static_cast<uint8_t>(i + fill));
  for (uint64_t i = 0; i < 3; ++i) r.puts.push_back({BlockKey{key_lo + i, i}, std::nullopt, r.data[i], false});
  return r;
}

// PutStart and PutCommit are not idempotent, and a retry after a lost reply finds the
// first attempt's work done: a commit that went through looked like an unknown
// reservation (the block reported failed, and aborted, although stored), and a
// reservation made by the lost attempt looked like another publisher's (the block
// reported skipped, although nobody would ever commit it).
TEST(ClusterE2eTest, LostRepliesOfRetriedPutStartAndPutCommitAreReportedAsWhatHappened) {
  auto cluster = Cluster::Start(1);
  ASSERT_NE(cluster, nullptr);
  ReservedPuts setup = ThreeReservedPuts(*cluster, 0x1057, 1);
  const ClientConfig& cfg = setup.cfg;
  const std::vector<BlockPut>& puts = setup.puts;
  {
    ScopedLostReplies lost("/kvhub.v1.KvHub/PutCommit", 1);
    auto client = cluster->NewClient(cfg);
    ASSERT_NE(client, nullptr);
    absl::StatusOr<PutResult> r = client->Put("lost", puts);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_LE(lost.left->load(), 0) << "no reply was lost";
    EXPECT_EQ(r->stored, 3u);
    for (const absl::Status& e : r->errors) EXPECT_TRUE(e.ok()) << e;
  }
  auto client = cluster->NewClient(cfg);
  ASSERT_NE(client, nullptr);
  Buffers bufs(3, 64 << 10);
  std::vector<BlockKey> keys;
  for (const BlockPut& p : puts) keys.push_back(p.key);
  absl::StatusOr<FetchResult> got = client->Get("lost", keys, bufs.spans);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->valid_blocks, 3u);
  for (size_t i = 0; i < 3; ++i) EXPECT_TRUE(bufs.store[i] == setup.data[i]) << i;

  {
    ScopedLostReplies lost("/kvhub.v1.KvHub/PutStart", 1);
    auto c2 = cluster->NewClient(cfg);
    ASSERT_NE(c2, nullptr);
    absl::StatusOr<PutResult> r = c2->Put("lost2", puts);
    ASSERT_TRUE(r.ok()) << r.status();
    EXPECT_LE(lost.left->load(), 0) << "no reply was lost";
    EXPECT_EQ(r->stored, 0u);
    EXPECT_EQ(r->skipped, 0u);
    for (size_t i = 0; i < 3; ++i) {
      EXPECT_EQ(r->outcome[i], PutOutcome::kFailed) << i;
      EXPECT_TRUE(absl::IsAborted(r->errors[i])) << r->errors[i];
      EXPECT_TRUE(absl::StrContains(r->errors[i].message(), "reply was lost")) << r->errors[i];
    }
  }
  absl::StatusOr<LookupResult> look = client->Lookup("lost2", keys);
  ASSERT_TRUE(look.ok()) << look.status();
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(look->present[i], 0) << "reported failed, so not stored";
}

// A PutCommit whose every attempt lost its reply fails whole, yet the shard
// committed: the blocks are stored and reported so (they were reported failed).
TEST(ClusterE2eTest, ACommitThatFailsWholeAfterTheShardCommittedReportsTheBlocksStored) {
  auto cluster = Cluster::Start(1);
  ASSERT_NE(cluster, nullptr);
  ReservedPuts setup = ThreeReservedPuts(*cluster, 0x2057, 7);
  ScopedLostReplies lost("/kvhub.v1.KvHub/PutCommit", 1000);
  auto client = cluster->NewClient(setup.cfg);
  ASSERT_NE(client, nullptr);
  absl::StatusOr<PutResult> r = client->Put("lost-all", setup.puts);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_LT(lost.left->load(), 1000) << "no reply was lost";
  EXPECT_EQ(r->stored, 3u);
  EXPECT_EQ(r->failed, 0u);
  for (const absl::Status& e : r->errors) EXPECT_TRUE(e.ok()) << e;
  std::vector<BlockKey> keys;
  for (const BlockPut& p : setup.puts) keys.push_back(p.key);
  absl::StatusOr<LookupResult> look = client->Lookup("lost-all", keys);
  ASSERT_TRUE(look.ok()) << look.status();
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(look->present[i], 1) << i;
}

// Makes the first `left` PutCommit replies say FAILED_PRECONDITION for every item
// the shard committed (or, with `every_item`, for every item): the shard's answer
// while a reservation is being committed or written into, which it keeps for a
// retry to commit.
class BusyCommits final : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  BusyCommits(std::shared_ptr<std::atomic<int>> left, bool every_item) : left_(left), every_item_(every_item) {}
  grpc::experimental::Interceptor* CreateClientInterceptor(grpc::experimental::ClientRpcInfo* info) override {
    if (std::string(info->method()) != "/kvhub.v1.KvHub/PutCommit") return nullptr;
    return new Busy(left_.get(), every_item_);
  }

 private:
  class Busy final : public grpc::experimental::Interceptor {
   public:
    Busy(std::atomic<int>* left, bool every_item) : left_(left), every_item_(every_item) {}
    void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
      if (methods->QueryInterceptionHookPoint(grpc::experimental::InterceptionHookPoints::POST_RECV_MESSAGE) &&
          left_->fetch_sub(1) > 0) {
        auto* resp = static_cast<v1::PutCommitResponse*>(methods->GetRecvMessage());
        for (v1::ItemStatus& st : *resp->mutable_items()) {
          if (st.code() != 0 && !every_item_) continue;
          st.set_code(static_cast<int>(absl::StatusCode::kFailedPrecondition));
          st.set_message("injected: reservation is already being committed");
        }
      }
      methods->Proceed();
    }

   private:
    std::atomic<int>* const left_;
    const bool every_item_;
  };
  const std::shared_ptr<std::atomic<int>> left_;
  const bool every_item_;
};

// A commit answered FAILED_PRECONDITION (the reservation is still the shard's,
// busy) was reported failed and left reserved, so every other publisher of the key
// was told ABORTED ("being stored") until the reservation expired, while nobody
// would commit it. The client commits it again (here the shard had committed it:
// the retry finds no reservation and a lookup finds the block), and aborts what
// stays busy.
TEST(ClusterE2eTest, ABusyCommitIsCommittedAgainOrGivenBack) {
  auto cluster = Cluster::Start(1);
  ASSERT_NE(cluster, nullptr);
  ReservedPuts setup = ThreeReservedPuts(*cluster, 0xb05e, 7);
  const ClientConfig& cfg = setup.cfg;
  const std::vector<BlockPut>& puts = setup.puts;
  auto left = std::make_shared<std::atomic<int>>(1);
  SetChannelFaultsForTesting([left] { return std::make_unique<BusyCommits>(left, false); });
  auto client = cluster->NewClient(cfg);
  SetChannelFaultsForTesting(nullptr);
  ASSERT_NE(client, nullptr);
  absl::StatusOr<PutResult> r = client->Put("busy", puts);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_LE(left->load(), 0) << "no commit was answered busy";
  EXPECT_EQ(r->stored, 3u);
  for (const absl::Status& e : r->errors) EXPECT_TRUE(e.ok()) << e;

  // Busy every time: four commits, then an abort, which finds the reservations
  // gone (the shard committed them on the first): a lookup then finds the blocks,
  // stored (reported failed before, though they were there).
  left->store(100);
  SetChannelFaultsForTesting([left] { return std::make_unique<BusyCommits>(left, true); });
  auto stuck = cluster->NewClient(cfg);
  SetChannelFaultsForTesting(nullptr);
  ASSERT_NE(stuck, nullptr);
  std::vector<BlockPut> more = puts;
  for (BlockPut& p : more) p.key.lo += 0x100;
  absl::StatusOr<PutResult> s = stuck->Put("busy", more);
  ASSERT_TRUE(s.ok()) << s.status();
  EXPECT_EQ(left->load(), 96) << "the busy commits were not tried again three times";
  EXPECT_EQ(s->stored, 3u);
  for (const absl::Status& e : s->errors) EXPECT_TRUE(e.ok()) << e;
}

// The first call of a method carrying reservation ids (PutCommit, PutAbort) names
// ids nobody holds, so it does nothing, and every item is answered
// FAILED_PRECONDITION, as a shard answers for a reservation busy with a transfer.
template <typename Req, typename Resp>
class BusyFirstCall final : public grpc::experimental::Interceptor {
 public:
  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    using grpc::experimental::InterceptionHookPoints;
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::PRE_SEND_MESSAGE)) {
      if (const auto* req = static_cast<const Req*>(methods->GetSendMessage()); req != nullptr) {
        for (uint64_t id : req->reservation_ids()) bogus_.add_reservation_ids(id ^ 0x5a5a000000000000ull);
        methods->ModifySendMessage(&bogus_);
      }
    }
    if (methods->QueryInterceptionHookPoint(InterceptionHookPoints::POST_RECV_MESSAGE)) {
      for (v1::ItemStatus& st : *static_cast<Resp*>(methods->GetRecvMessage())->mutable_items()) {
        st.set_code(static_cast<int>(absl::StatusCode::kFailedPrecondition));
        st.set_message("injected: a transfer is still in the reservation");
      }
    }
    methods->Proceed();
  }

 private:
  Req bogus_;  // the payload sent instead: alive until sent
};

// Fails every PutData (status INTERNAL after the bytes went in) when asked to, and
// makes the first PutCommit or PutAbort a BusyFirstCall; counts the calls of each.
class BusyReservationFaults final : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  struct Counts {
    std::atomic<int> commits{0}, aborts{0};
  };
  BusyReservationFaults(std::shared_ptr<Counts> counts, bool fail_writes, bool busy_commit, bool busy_abort)
      : counts_(std::move(counts)), fail_writes_(fail_writes), busy_commit_(busy_commit), busy_abort_(busy_abort) {}
  grpc::experimental::Interceptor* CreateClientInterceptor(grpc::experimental::ClientRpcInfo* info) override {
    const std::string method = info->method();
    if (method == "/kvhub.v1.KvHub/PutData" && fail_writes_) return new FailStatus;
    if (method == "/kvhub.v1.KvHub/PutCommit" && counts_->commits.fetch_add(1) == 0 && busy_commit_) {
      return new BusyFirstCall<v1::PutCommitRequest, v1::PutCommitResponse>;
    }
    if (method == "/kvhub.v1.KvHub/PutAbort" && counts_->aborts.fetch_add(1) == 0 && busy_abort_) {
      return new BusyFirstCall<v1::PutAbortRequest, v1::PutAbortResponse>;
    }
    return nullptr;
  }

 private:
  class FailStatus final : public grpc::experimental::Interceptor {
   public:
    void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
      if (methods->QueryInterceptionHookPoint(grpc::experimental::InterceptionHookPoints::POST_RECV_STATUS)) {
        *methods->GetRecvStatus() = grpc::Status(grpc::StatusCode::INTERNAL, "injected: the write failed");
      }
      methods->Proceed();
    }
  };
  const std::shared_ptr<Counts> counts_;
  const bool fail_writes_, busy_commit_, busy_abort_;
};

// A failed write's abort answered busy was given up at once, so the reservation
// kept every other publisher of the key out (ABORTED: "skipped, being stored")
// until reservation_timeout, while nobody would store the block. The client asks
// again; and a block stored on a busy commit's second try keeps no error.
TEST(ClusterE2eTest, ABusyAbortIsAskedAgainAndABusyCommitStoredLaterKeepsNoError) {
  auto cluster = Cluster::Start(1);
  ASSERT_NE(cluster, nullptr);
  ReservedPuts setup = ThreeReservedPuts(*cluster, 0xab0e, 31);
  const ClientConfig& cfg = setup.cfg;
  const std::vector<BlockPut>& puts = setup.puts;
  auto counts = std::make_shared<BusyReservationFaults::Counts>();
  SetChannelFaultsForTesting([counts] { return std::make_unique<BusyReservationFaults>(counts, true, false, true); });
  auto failing = cluster->NewClient(cfg);
  SetChannelFaultsForTesting(nullptr);
  ASSERT_NE(failing, nullptr);
  absl::StatusOr<PutResult> r = failing->Put("busy-abort", puts);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->failed, 3u);
  EXPECT_EQ(counts->aborts.load(), 2) << "the busy abort was not asked again";
  auto other = cluster->NewClient(cfg);
  ASSERT_NE(other, nullptr);
  absl::StatusOr<PutResult> o = other->Put("busy-abort", puts);
  ASSERT_TRUE(o.ok()) << o.status();
  EXPECT_EQ(o->stored, 3u) << "the reservations were left to expire: skipped " << o->skipped;

  // A commit answered busy and committed on its second try is stored with no error
  // (the busy answer's FAILED_PRECONDITION stayed in errors[i] before).
  std::vector<BlockPut> more = puts;
  for (BlockPut& p : more) p.key.lo += 0x100;
  auto busy_counts = std::make_shared<BusyReservationFaults::Counts>();
  SetChannelFaultsForTesting(
      [busy_counts] { return std::make_unique<BusyReservationFaults>(busy_counts, false, true, false); });
  auto retrying = cluster->NewClient(cfg);
  SetChannelFaultsForTesting(nullptr);
  ASSERT_NE(retrying, nullptr);
  absl::StatusOr<PutResult> b = retrying->Put("busy-abort", more);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(busy_counts->commits.load(), 2);
  EXPECT_EQ(b->stored, 3u);
  for (const absl::Status& e : b->errors) EXPECT_TRUE(e.ok()) << e;
}

// A shard batch read inline in parts (each at most max_inline_batch_bytes) stops
// at the first part that fails as a whole: its blocks are misses, so no later
// block can be in the valid prefix. Every part used to be asked in turn, each
// waiting its own data_deadline on a hung shard (a 1024-block fetch of 1 MiB
// blocks: 32 parts, ~16 minutes).
TEST(ClusterE2eTest, ABatchReadInPartsStopsAtThePartThatFailedWhole) {
  auto cluster = Cluster::Start(1);
  ASSERT_NE(cluster, nullptr);
  ClientConfig cfg = cluster->Config();
  cfg.transport = TransportMode::kGrpc;
  cfg.max_inline_batch_bytes = 1024;  // 1 KiB blocks: one part each
  cfg.max_attempts = 1;
  std::vector<std::vector<uint8_t>> data;
  std::vector<BlockPut> puts;
  std::vector<BlockKey> keys;
  for (uint64_t i = 0; i < 8; ++i) data.emplace_back(1024, static_cast<uint8_t>(i + 1));
  for (uint64_t i = 0; i < 8; ++i) {
    puts.push_back({BlockKey{0x9a7 + i, i}, std::nullopt, data[i], false});
    keys.push_back(puts.back().key);
  }
  {
    auto client = cluster->NewClient(cfg);
    ASSERT_NE(client, nullptr);
    absl::StatusOr<PutResult> r = client->Put("parts", puts);
    ASSERT_TRUE(r.ok()) << r.status();
    ASSERT_EQ(r->stored, 8u);
  }
  {
    constexpr int kLose = 100;
    ScopedLostReplies lost("/kvhub.v1.KvHub/Get", kLose);
    auto client = cluster->NewClient(cfg);
    ASSERT_NE(client, nullptr);
    Buffers bufs(8, 1024);
    absl::StatusOr<FetchResult> got = client->Get("parts", keys, bufs.spans);
    ASSERT_TRUE(got.ok()) << got.status();
    EXPECT_EQ(got->valid_blocks, 0u);
    for (size_t i = 0; i < 8; ++i) EXPECT_TRUE(absl::IsUnavailable(got->status[i])) << i << " " << got->status[i];
    EXPECT_EQ(kLose - lost.left->load(), 1) << "Get calls made after the first part failed";
  }
  auto client = cluster->NewClient(cfg);
  ASSERT_NE(client, nullptr);
  Buffers bufs(8, 1024);
  absl::StatusOr<FetchResult> got = client->Get("parts", keys, bufs.spans);
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->valid_blocks, 8u);
  for (size_t i = 0; i < 8; ++i) EXPECT_TRUE(bufs.store[i] == data[i]) << i;
}

TEST(ClusterE2eTest, ServerRefusesBlockWithWrongChecksum) {
  auto cluster = Cluster::Start(1);
  ASSERT_NE(cluster, nullptr);
  auto channel = grpc::CreateChannel(cluster->procs[0]->grpc_address(),
                                     grpc::InsecureChannelCredentials());
  auto stub = v1::KvHub::NewStub(channel);
  const std::string ns = "checksum";
  const BlockKey key{0x1234, 0x5678};
  const std::string data(10000, 'q');
  const uint64_t good = Xxh3_64(data.data(), data.size());
  std::string key_bytes(16, '\0');
  key.ToBytes(reinterpret_cast<uint8_t*>(key_bytes.data()));

  // Inline Put with a wrong checksum.
  {
    v1::PutRequest req;
    req.set_namespace_(ns);
    auto* it = req.add_items();
    it->set_key(key_bytes);
    it->set_checksum(good ^ 1);
    it->set_data(data);
    v1::PutResponse resp;
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub->Put(&ctx, req, &resp).ok());
    ASSERT_EQ(resp.items_size(), 1);
    EXPECT_EQ(resp.items(0).code(), 15) << resp.items(0).message();  // DATA_LOSS
  }
  // Reservation path with a wrong checksum.
  {
    v1::PutStartRequest req;
    req.set_namespace_(ns);
    auto* it = req.add_items();
    it->set_key(key_bytes);
    it->set_size(data.size());
    it->set_checksum(good + 1);
    v1::PutStartResponse started;
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub->PutStart(&ctx, req, &started).ok());
    ASSERT_EQ(started.items_size(), 1);
    ASSERT_EQ(started.items(0).status().code(), 0) << started.items(0).status().message();
    absl::StatusOr<v1::ItemStatus> committed =
        testing::RawWriteAndCommit(*stub, started.items(0).reservation_id(), data);
    ASSERT_TRUE(committed.ok()) << committed.status();
    EXPECT_EQ(committed->code(), 15) << committed->message();  // DATA_LOSS
  }
  // Nothing became visible.
  ClientConfig cfg = cluster->Config();
  auto client = cluster->NewClient(cfg);
  ASSERT_NE(client, nullptr);
  absl::StatusOr<LookupResult> look = client->Lookup(ns, std::span<const BlockKey>(&key, 1));
  ASSERT_TRUE(look.ok());
  EXPECT_EQ(look->present[0], 0);
  MemberStats after = client->Stats()[0];
  ASSERT_TRUE(after.stats.ok()) << after.stats.status();
  EXPECT_GE(after.stats->checksum_failures(), 2u);

  // The right checksum is accepted, and the client reads the block back verified.
  BlockPut put{key, std::nullopt,
               std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(data.data()), data.size())};
  absl::StatusOr<PutResult> ok = client->Put(ns, std::span<const BlockPut>(&put, 1));
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(ok->stored, 1u) << ok->errors[0];
  std::vector<uint8_t> buf(data.size());
  std::span<uint8_t> dest(buf);
  absl::StatusOr<FetchResult> got =
      client->Get(ns, std::span<const BlockKey>(&key, 1), std::span<const std::span<uint8_t>>(&dest, 1));
  ASSERT_TRUE(got.ok());
  EXPECT_TRUE(got->status[0].ok()) << got->status[0];
  EXPECT_EQ(std::string(buf.begin(), buf.end()), data);
}

}  // namespace
}  // namespace kvhub
