// kvhub::Client over the UCX data plane against real kvhubd processes:
// byte-exact put/get over UCX tcp and shared memory, automatic (and logged)
// fallback to gRPC, lease expiry during a slow read, a client killed mid-transfer.

#include <arpa/inet.h>
#include <httplib.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "absl/algorithm/container.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/synchronization/mutex.h"
#include "client/channel_faults.h"
#include "client/client.h"
#include "client/ucx_data_plane.h"
#include "common/hash.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "spdlog/sinks/ringbuffer_sink.h"
#include "spdlog/spdlog.h"
#include "tests/testing/kvhubd_process.h"
#include "transport/ucx_context.h"
#include "transport/ucx_rkey_pin.h"
#include "transport/ucx_worker.h"
#include "grpcpp/client_context.h"
#include "grpcpp/support/client_interceptor.h"
#include "grpcpp/create_channel.h"
#include "kvhub/v1/kvhub.grpc.pb.h"
#include "grpcpp/security/credentials.h"

namespace kvhub {
namespace {

using testing::KvhubdProcess;

std::unique_ptr<KvhubdProcess> StartShard(std::vector<std::string> flags) {
  testing::KvhubdProcessOptions o;
  // Slabs of 32 MiB: enough of them that each block size used here gets a size class.
  o.flags = {"--try_hugepages=false", "--capacity_bytes=512MiB", "--max_block_bytes=32MiB",
             "--slab_bytes=32MiB", "--expiry_interval_ms=50"};
  o.flags.insert(o.flags.end(), flags.begin(), flags.end());
  auto p = KvhubdProcess::Start(o);
  EXPECT_TRUE(p.ok()) << p.status();
  return p.ok() ? std::move(*p) : nullptr;
}

ClientConfig Config(const KvhubdProcess& shard, TransportMode mode, const std::string& tls = "tcp") {
  ClientConfig c;
  c.members = {{shard.grpc_address(), 1.0}};
  c.transport = mode;
  c.ucx_tls = tls;
  return c;
}

BlockKey Key(uint64_t i) { return BlockKey{0x9e3779b97f4a7c15ull * (i + 1), i}; }

std::vector<uint8_t> Payload(uint64_t seed, size_t n) {
  std::vector<uint8_t> v(n);
  std::mt19937_64 rng(seed);
  for (size_t i = 0; i < n; i += 8) {
    const uint64_t x = rng();
    std::memcpy(v.data() + i, &x, std::min<size_t>(8, n - i));
  }
  return v;
}

ShardTransportStats OnlyShard(const std::vector<ShardTransportStats>& s) {
  EXPECT_EQ(s.size(), 1u);
  return s.empty() ? ShardTransportStats{} : s.front();
}

// Puts `sizes.size()` blocks, reads them back into fresh buffers (poisoned
// first), checks every byte. Returns the total bytes.
uint64_t PutGetByteExact(Client& client, const std::string& ns, const std::vector<size_t>& sizes, uint64_t seed) {
  std::vector<std::vector<uint8_t>> data;
  std::vector<BlockPut> puts;
  std::vector<BlockKey> keys;
  uint64_t total = 0;
  for (size_t i = 0; i < sizes.size(); ++i) {
    data.push_back(Payload(seed * 1000 + i, sizes[i]));
    keys.push_back(Key(seed * 1000 + i));
    total += sizes[i];
  }
  for (size_t i = 0; i < sizes.size(); ++i) puts.push_back({keys[i], std::nullopt, data[i], false});
  auto put = client.Put(ns, puts);
  EXPECT_TRUE(put.ok()) << put.status();
  if (!put.ok()) return 0;
  EXPECT_EQ(put->stored, sizes.size());
  for (size_t i = 0; i < sizes.size(); ++i) EXPECT_TRUE(put->errors[i].ok()) << put->errors[i];
  std::vector<std::vector<uint8_t>> out;
  std::vector<std::span<uint8_t>> bufs;
  for (size_t n : sizes) out.emplace_back(n + 100, 0xA5);
  for (auto& b : out) bufs.emplace_back(b);
  auto got = client.Get(ns, keys, bufs);
  EXPECT_TRUE(got.ok()) << got.status();
  if (!got.ok()) return 0;
  EXPECT_EQ(got->valid_blocks, sizes.size());
  for (size_t i = 0; i < sizes.size(); ++i) {
    EXPECT_TRUE(got->status[i].ok()) << i << ": " << got->status[i];
    EXPECT_EQ(got->sizes[i], sizes[i]);
    EXPECT_EQ(std::memcmp(out[i].data(), data[i].data(), sizes[i]), 0) << "block " << i;
    EXPECT_EQ(out[i][sizes[i]], 0xA5) << "wrote past the block";
  }
  return total;
}

const std::vector<size_t> kSizes = {1, 4097, (1 << 20) + 3, 8 << 20};

// Reads `key` once through a UCX client that records the transfer it made:
// where the block lives on the shard (and the client's transport string).
void SpyLocation(const ClientConfig& cfg, const BlockKey& key, const std::vector<uint8_t>& expect,
                 transport::Transfer* at, std::string* transport = nullptr) {
  UcxDataPlane::Hooks spy;
  spy.before_transfers = [at](std::span<transport::Transfer> ts) { *at = ts[0]; };
  auto reader = Client::Create(cfg, std::make_unique<UcxDataPlane>(cfg, spy));
  ASSERT_TRUE(reader.ok()) << reader.status();
  std::vector<uint8_t> buf(expect.size(), 0);
  std::span<uint8_t> dest(buf);
  auto got = (*reader)->Get("ns", {&key, 1}, {&dest, 1});
  ASSERT_TRUE(got.ok() && got->status[0].ok()) << (got.ok() ? got->status[0] : got.status());
  ASSERT_TRUE(buf == expect);
  if (transport != nullptr) *transport = OnlyShard((*reader)->TransportStats()).transport;
}

// UCX puts the shard's regions in /dev/shm (512 MiB with StartShard's flags).
bool ShmHoldsTheShardsRegions() {
  struct statvfs fs;
  return statvfs("/dev/shm", &fs) == 0 && static_cast<uint64_t>(fs.f_bavail) * fs.f_frsize >= (600ull << 20);
}

// Leased blocks on the (only) shard once the lease ends in flight have landed:
// an AM read's lease ends on the shard when its send completes, and a mapped
// read's lease is released in the background (DeferredReleases), both a moment
// after the client has its bytes. Waits up to 5 s for 0.
uint64_t SettledLeasedBlocks(Client& client) {
  uint64_t leased = 1;
  for (int i = 0; i < 500 && leased != 0; ++i) {
    auto st = client.Stats();
    EXPECT_TRUE(st[0].stats.ok()) << st[0].stats.status();
    if (!st[0].stats.ok()) return ~uint64_t{0};
    leased = st[0].stats->tiers(0).leased_blocks();
    if (leased != 0) absl::SleepFor(absl::Milliseconds(10));
  }
  return leased;
}

TEST(UcxClientTest, ByteExactOverUcxTcp) {
  auto shard = StartShard({"--ucx_tls=tcp"});
  ASSERT_NE(shard, nullptr);
  auto client = Client::Create(Config(*shard, TransportMode::kUcx));
  ASSERT_TRUE(client.ok()) << client.status();
  const uint64_t total = PutGetByteExact(**client, "ns", kSizes, 1);
  const ShardTransportStats st = OnlyShard((*client)->TransportStats());
  EXPECT_TRUE(absl::StartsWith(st.transport, "ucx (tcp")) << st.transport;
  EXPECT_EQ(st.ucx_put_bytes, total);
  EXPECT_EQ(st.ucx_get_bytes, total);
  EXPECT_EQ(st.grpc_put_bytes + st.grpc_get_bytes, 0u);
  // The shard served the bytes by UCX, not gRPC (tcp: active messages).
  auto stats = (*client)->Stats();
  ASSERT_TRUE(stats[0].stats.ok()) << stats[0].stats.status();
  uint64_t ucx_get = 0, grpc_bytes = 0;
  for (const auto& t : stats[0].stats->transport_bytes()) {
    if (t.transport() == "ucx") ucx_get = t.get_bytes();
    if (t.transport() == "grpc") grpc_bytes = t.get_bytes() + t.put_bytes();
  }
  EXPECT_EQ(ucx_get, total);
  EXPECT_EQ(grpc_bytes, 0u);
  EXPECT_TRUE(absl::StartsWith(stats[0].stats->ucx_status(), "serving")) << stats[0].stats->ucx_status();
}

// Deadlines longer than UCX's 1 h cap on one transfer, or none at all, are valid
// client settings: they used to turn UCX off for good (its config refused the
// deadline) and, for gRPC, overflow into a deadline in the past (every call
// DEADLINE_EXCEEDED at once).
TEST(UcxClientTest, InfiniteAndDayLongDeadlinesKeepUcxAndGrpcWorking) {
  auto shard = StartShard({"--ucx_tls=tcp"});
  ASSERT_NE(shard, nullptr);
  const absl::Duration deadlines[] = {absl::InfiniteDuration(), absl::Hours(24)};
  for (int i = 0; i < 2; ++i) {
    const absl::Duration d = deadlines[i];
    ClientConfig cfg = Config(*shard, TransportMode::kUcx);
    cfg.control_deadline = cfg.data_deadline = d;
    auto client = Client::Create(cfg);
    ASSERT_TRUE(client.ok()) << client.status();
    const uint64_t total = PutGetByteExact(**client, "ns", {4097, 1 << 20}, 30 + i);
    const ShardTransportStats st = OnlyShard((*client)->TransportStats());
    EXPECT_TRUE(absl::StartsWith(st.transport, "ucx (tcp")) << absl::FormatDuration(d) << ": " << st.transport;
    EXPECT_EQ(st.ucx_get_bytes, total);
  }
}

TEST(UcxClientTest, ByteExactOverUcxSharedMemory) {
  // Shared memory is opt-in (no peer failure detection in UCX 1.13; see
  // docs/transport.md): both sides name it explicitly.
  auto shard = StartShard({"--ucx_tls=posix,cma"});
  ASSERT_NE(shard, nullptr);
  auto client = Client::Create(Config(*shard, TransportMode::kUcx, "posix,cma"));
  ASSERT_TRUE(client.ok()) << client.status();
  const uint64_t total = PutGetByteExact(**client, "ns", kSizes, 2);
  const ShardTransportStats st = OnlyShard((*client)->TransportStats());
  EXPECT_TRUE(absl::StrContains(st.transport, "nofail")) << st.transport;
  EXPECT_EQ(st.ucx_put_bytes, total);
  EXPECT_EQ(st.ucx_get_bytes, total);
}

// The Get that leases a UCX read's blocks, and the Release of one-sided reads'
// leases, are called over the UCX connection (ClientConfig::ucx_calls, the
// default) or, with it off, over gRPC: both byte exact, and the shard's metrics
// show which way each went.
TEST(UcxClientTest, LeasesAreCalledOverUcxOrGrpcAsConfigured) {
  for (const std::string tls : {"tcp", "posix,cma"}) {
    for (const bool calls : {true, false}) {
      SCOPED_TRACE(absl::StrCat(tls, calls ? ", leases over ucx" : ", leases over grpc"));
      auto shard = StartShard({"--ucx_tls=" + tls});
      ASSERT_NE(shard, nullptr);
      ClientConfig cc = Config(*shard, TransportMode::kUcx, tls);
      cc.ucx_calls = calls;
      auto client = Client::Create(cc);
      ASSERT_TRUE(client.ok()) << client.status();
      const uint64_t total = PutGetByteExact(**client, "ns", kSizes, calls ? 21 : 22);
      const ShardTransportStats st = OnlyShard((*client)->TransportStats());
      EXPECT_EQ(st.ucx_get_bytes, total);
      EXPECT_EQ(absl::StrContains(st.transport, "leases over ucx"), calls) << st.transport;
      EXPECT_EQ(SettledLeasedBlocks(**client), 0u) << "a lease outlived its read";
      const bool shm = tls != "tcp";
      httplib::Client http("127.0.0.1", shard->http_port());
      std::string body;
      const auto called = [&](const char* method) {
        return absl::StrContains(body, absl::StrCat("kvhub_rpc_requests_total{method=\"", method, "\",code=\"OK\"}"));
      };
      // The last Release is counted just after its leases end: poll (bounded).
      for (int i = 0; i < 200; ++i) {
        auto metrics = http.Get("/metrics");
        ASSERT_TRUE(metrics) << "GET /metrics failed";
        body = metrics->body;
        if (!shm || called(calls ? "UcxRelease" : "Release")) break;
        absl::SleepFor(absl::Milliseconds(10));
      }
      EXPECT_EQ(called("UcxGet"), calls);
      EXPECT_EQ(called("Get"), !calls);
      // Reads over shared memory are one-sided, so their leases are released
      // (in the background) by the same route; tcp reads end theirs on the shard.
      EXPECT_EQ(called("UcxRelease"), shm && calls);
      EXPECT_EQ(called("Release"), shm && !calls);
    }
  }
}

// A lease called over UCX for keys the shard does not hold, or with a bad
// namespace, fails those blocks exactly as the gRPC Get does, and the
// connection keeps working.
TEST(UcxClientTest, LeaseCallErrorsAreTheRpcsErrors) {
  auto shard = StartShard({"--ucx_tls=tcp"});
  ASSERT_NE(shard, nullptr);
  auto client = Client::Create(Config(*shard, TransportMode::kUcx));
  ASSERT_TRUE(client.ok()) << client.status();
  const BlockKey missing = Key(777);
  std::vector<uint8_t> buf(4096, 0xA5);
  std::span<uint8_t> dest(buf);
  auto got = (*client)->Get("ns", {&missing, 1}, {&dest, 1});
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->valid_blocks, 0u);
  EXPECT_EQ(got->status[0].code(), absl::StatusCode::kNotFound) << got->status[0];
  auto bad_ns = (*client)->Get(std::string(4096, 'n'), {&missing, 1}, {&dest, 1});
  EXPECT_FALSE(bad_ns.ok() && bad_ns->valid_blocks > 0);
  if (bad_ns.ok()) {
    EXPECT_EQ(bad_ns->status[0].code(), absl::StatusCode::kInvalidArgument) << bad_ns->status[0];
  } else {
    EXPECT_EQ(bad_ns.status().code(), absl::StatusCode::kInvalidArgument) << bad_ns.status();
  }
  EXPECT_TRUE(std::all_of(buf.begin(), buf.end(), [](uint8_t b) { return b == 0xA5; })) << "a failed get wrote";
  // Still served over UCX afterwards.
  const uint64_t total = PutGetByteExact(**client, "ns", kSizes, 23);
  EXPECT_EQ(OnlyShard((*client)->TransportStats()).ucx_get_bytes, total);
}

TEST(UcxClientTest, ManyConcurrentClientsStayByteExact) {
  // 8 independent clients (each its own UCX worker and connection) put and get
  // overlapping key sets at once over tcp; every block read back is exact.
  auto shard = StartShard({"--ucx_tls=tcp"});
  ASSERT_NE(shard, nullptr);
  constexpr int kClients = 8, kRounds = 6;
  std::vector<std::unique_ptr<Client>> clients;
  for (int c = 0; c < kClients; ++c) {
    auto cl = Client::Create(Config(*shard, TransportMode::kUcx));
    ASSERT_TRUE(cl.ok()) << cl.status();
    clients.push_back(*std::move(cl));
  }
  std::vector<std::string> failures(kClients);
  std::vector<std::thread> threads;
  for (int c = 0; c < kClients; ++c) {
    threads.emplace_back([&, c] {
      for (int r = 0; r < kRounds && failures[c].empty(); ++r) {
        // Keys shared by pairs of clients: concurrent publishers of one block.
        const uint64_t id = 5000 + (c / 2) * 100 + r;
        const std::vector<uint8_t> data = Payload(id, (256 << 10) + 17 * r);
        BlockPut put{Key(id), std::nullopt, data, false};
        auto p = clients[c]->Put("many", {&put, 1});
        if (!p.ok() || p->failed != 0) {
          failures[c] = p.ok() ? p->errors[0].ToString() : p.status().ToString();
          break;
        }
        std::vector<uint8_t> out(data.size() + 64, 0xA5);
        std::span<uint8_t> dest(out);
        const BlockKey key = Key(id);
        auto g = clients[c]->Get("many", {&key, 1}, {&dest, 1});
        // A put skipped because the partner client was storing the same block
        // becomes visible when the partner commits (a miss until then).
        for (int tries = 0; p->skipped == 1 && g.ok() && absl::IsNotFound(g->status[0]) && tries < 200; ++tries) {
          absl::SleepFor(absl::Milliseconds(5));
          g = clients[c]->Get("many", {&key, 1}, {&dest, 1});
        }
        if (!g.ok() || !g->status[0].ok()) {
          failures[c] = g.ok() ? g->status[0].ToString() : g.status().ToString();
        } else if (g->sizes[0] != data.size() || std::memcmp(out.data(), data.data(), data.size()) != 0) {
          failures[c] = absl::StrCat("block ", id, " read back wrong");
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  for (int c = 0; c < kClients; ++c) EXPECT_EQ(failures[c], "") << "client " << c;
  uint64_t ucx_get = 0;
  for (const auto& cl : clients) ucx_get += OnlyShard(cl->TransportStats()).ucx_get_bytes;
  EXPECT_GT(ucx_get, 0u) << "the gets went over UCX";
  EXPECT_EQ(SettledLeasedBlocks(*clients[0]), 0u);
}

// Over active messages the shard ends each read's lease itself once the bytes
// are out: the client makes no Release call and no lease outlives the reads
// (the lease here is a minute long, so none simply expired).
TEST(UcxClientTest, ActiveMessageReadsEndTheirLeasesWithoutARelease) {
  for (const std::string tls : {"tcp", "posix,cma"}) {
    SCOPED_TRACE(tls);
    // (Shared-memory regions off: with them, local reads are one-sided RMA.)
    auto shard = StartShard({"--ucx_tls=" + tls, "--ucx_shm_regions=false"});
    ASSERT_NE(shard, nullptr);
    ClientConfig cc = Config(*shard, TransportMode::kUcx, tls);
    cc.ucx_lease = absl::Minutes(1);
    auto client = Client::Create(cc);
    ASSERT_TRUE(client.ok()) << client.status();
    const uint64_t total = PutGetByteExact(**client, "ns", kSizes, 7);
    EXPECT_EQ(OnlyShard((*client)->TransportStats()).ucx_get_bytes, total);
    EXPECT_EQ(SettledLeasedBlocks(**client), 0u) << "a lease outlived its read";
    httplib::Client http("127.0.0.1", shard->http_port());
    auto metrics = http.Get("/metrics");
    ASSERT_TRUE(metrics) << "GET /metrics failed";
    // The leases were called over UCX (ClientConfig::ucx_calls), not gRPC.
    EXPECT_NE(metrics->body.find("kvhub_rpc_requests_total{method=\"UcxGet\",code=\"OK\"}"), std::string::npos);
    EXPECT_EQ(metrics->body.find("kvhub_rpc_requests_total{method=\"Get\""), std::string::npos);
    EXPECT_EQ(metrics->body.find("kvhub_rpc_requests_total{method=\"Release\""), std::string::npos)
        << "the client called Release";
    EXPECT_TRUE(absl::StrContains(metrics->body, "\nkvhub_ucx_accepting 1\n")) << "UCX serves and its vetter lives";
  }
}

// With shared memory named, kvhubd has UCX allocate its regions in shared
// memory (ucx_shm_regions, the default) and a local client reads and writes them
// one-sidedly: RMA both ways, byte exact, the shard's worker serves no active
// message, and every lease is released (Release RPC) after its read.
TEST(UcxClientTest, SharedMemoryRegionsAreReadAndWrittenOneSided) {
  if (!ShmHoldsTheShardsRegions()) {
    GTEST_SKIP() << "/dev/shm has less than 600 MiB free: kvhubd would fall back to AM (and say so)";
  }
  auto shard = StartShard({"--ucx_tls=posix,cma"});
  ASSERT_NE(shard, nullptr);
  // Mapped copies off: the UCX worker's progress thread copies, still one-sided.
  for (const bool mapped : {true, false}) {
    SCOPED_TRACE(mapped ? "mapped copies" : "progress thread copies");
    ClientConfig cfg = Config(*shard, TransportMode::kUcx, "posix,cma");
    cfg.ucx_mapped_copies = mapped;
    auto client = Client::Create(cfg);
    ASSERT_TRUE(client.ok()) << client.status();
    const uint64_t total = PutGetByteExact(**client, mapped ? "ns" : "ns2", kSizes, mapped ? 11 : 12);
    const ShardTransportStats st = OnlyShard((*client)->TransportStats());
    EXPECT_TRUE(absl::StrContains(st.transport, "get=rma put=rma")) << st.transport;
    EXPECT_EQ(absl::StrContains(st.transport, "mapped gets and puts"), mapped) << st.transport;
    EXPECT_EQ(st.ucx_get_bytes, total);
    EXPECT_EQ(st.ucx_put_bytes, total);
    auto stats = (*client)->Stats();
    ASSERT_TRUE(stats[0].stats.ok()) << stats[0].stats.status();
    EXPECT_TRUE(absl::StrContains(stats[0].stats->ucx_status(), "regions in UCX shared memory"))
        << stats[0].stats->ucx_status();
    for (const auto& t : stats[0].stats->transport_bytes()) {
      if (t.transport() == "ucx") {
        EXPECT_EQ(t.get_bytes(), 0u) << "one-sided reads never reach the shard's worker";
      }
    }
    // Leases of mapped reads are released in the background (DeferredReleases).
    EXPECT_EQ(SettledLeasedBlocks(**client), 0u);
  }
}

TEST(UcxClientTest, AMappedReadOfTheWrongBytesIsAChecksumMissNeverData) {
  if (!ShmHoldsTheShardsRegions()) {
    GTEST_SKIP() << "/dev/shm has less than 600 MiB free: kvhubd would fall back to AM (and say so)";
  }
  auto shard = StartShard({"--ucx_tls=posix,cma"});
  ASSERT_NE(shard, nullptr);
  ClientConfig cfg = Config(*shard, TransportMode::kUcx, "posix,cma");
  auto writer = Client::Create(cfg);
  ASSERT_TRUE(writer.ok()) << writer.status();
  const std::vector<uint8_t> a = Payload(41, 1 << 20), b = Payload(42, 1 << 20);
  const BlockKey ka = Key(41), kb = Key(42);
  BlockPut puts[] = {{ka, std::nullopt, a, false}, {kb, std::nullopt, b, false}};
  ASSERT_EQ((*writer)->Put("ns", puts)->stored, 2u);
  // Where b lives, as a well-behaved mapped reader sees it.
  transport::Transfer b_at;
  std::string transport;
  ASSERT_NO_FATAL_FAILURE(SpyLocation(cfg, kb, b, &b_at, &transport));
  EXPECT_TRUE(absl::StrContains(transport, "mapped gets")) << transport;
  std::vector<uint8_t> buf(1 << 20, 0);
  std::span<uint8_t> dest(buf);
  // A reader whose descriptor points at b while it asked for a (stale or
  // corrupt): the bytes hashed as they are copied do not match a's checksum.
  UcxDataPlane::Hooks misdirect;
  misdirect.before_transfers = [&](std::span<transport::Transfer> ts) {
    ts[0].region = b_at.region;
    ts[0].offset = b_at.offset;
  };
  auto confused = Client::Create(cfg, std::make_unique<UcxDataPlane>(cfg, misdirect));
  ASSERT_TRUE(confused.ok());
  auto got = (*confused)->Get("ns", {&ka, 1}, {&dest, 1});
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->valid_blocks, 0u);
  EXPECT_EQ(got->status[0].code(), absl::StatusCode::kDataLoss) << got->status[0];
  EXPECT_TRUE(absl::StrContains(got->status[0].message(), "checksum mismatch")) << got->status[0];
  EXPECT_EQ(got->sizes[0], 0u);
  // Both blocks are still served intact, and every lease ended.
  got = (*writer)->Get("ns", {&ka, 1}, {&dest, 1});
  ASSERT_TRUE(got.ok() && got->status[0].ok());
  EXPECT_TRUE(buf == a);
  EXPECT_EQ(SettledLeasedBlocks(**writer), 0u);
}

// Connect calls the shard answered, from its /metrics.
uint64_t ConnectCalls(const KvhubdProcess& shard) {
  httplib::Client http("127.0.0.1", shard.http_port());
  auto metrics = http.Get("/metrics");
  if (!metrics) return ~0ull;
  uint64_t n = 0;
  for (absl::string_view line : absl::StrSplit(metrics->body, '\n')) {
    if (!absl::StartsWith(line, "kvhub_rpc_requests_total{method=\"Connect\"")) continue;
    uint64_t v = 0;
    if (absl::SimpleAtoi(line.substr(line.rfind(' ') + 1), &v)) n += v;
  }
  return n;
}

// A client that could use shared memory connects, finds only tcp lanes to this
// shard, and keeps gRPC.
TEST(UcxClientTest, AutoKeepsGrpcWhenUcxReachesTheShardOnlyOverTcp) {
  auto shard = StartShard({"--ucx_tls=tcp"});
  ASSERT_NE(shard, nullptr);
  auto client = Client::Create(Config(*shard, TransportMode::kAuto, "tcp,posix,cma"));
  ASSERT_TRUE(client.ok()) << client.status();
  const uint64_t total = PutGetByteExact(**client, "ns", {100, 5 << 20}, 5);
  const ShardTransportStats st = OnlyShard((*client)->TransportStats());
  EXPECT_TRUE(absl::StartsWith(st.transport, "grpc (fallback: UCX reaches this shard only over tcp"))
      << st.transport;
  EXPECT_EQ(st.ucx_get_bytes + st.ucx_put_bytes, 0u);
  EXPECT_EQ(st.grpc_get_bytes, total);
  EXPECT_EQ(ConnectCalls(*shard), 1u);
}

// A client whose own UCX has nothing but tcp (no RDMA device, no shared memory
// named; on this machine also UCX's default) knows that before asking: no Connect
// (no probe process on the shard, no UCX port opened in the client), gRPC at once.
TEST(UcxClientTest, AutoDoesNotConnectWhenThisClientsUcxHasOnlyTcp) {
  auto shard = StartShard({"--ucx_tls=tcp"});
  ASSERT_NE(shard, nullptr);
  uint64_t seed = 60;
  for (const char* tls : {"tcp", ""}) {
    ClientConfig cfg = Config(*shard, TransportMode::kAuto, tls);
    {
      auto probe = transport::UcxContext::Create({.tls = tls});
      ASSERT_TRUE(probe.ok()) << probe.status();
      if (!transport::ReachesPeersOnlyOverTcp((*probe)->TransportNames(), true)) {
        GTEST_SKIP() << "this host offers UCX more than tcp (RDMA): " << absl::StrJoin((*probe)->TransportNames(), ",");
      }
    }
    auto client = Client::Create(cfg);
    ASSERT_TRUE(client.ok()) << client.status();
    const uint64_t total = PutGetByteExact(**client, "ns", {100, 5 << 20}, ++seed);
    const ShardTransportStats st = OnlyShard((*client)->TransportStats());
    EXPECT_TRUE(absl::StartsWith(st.transport, "grpc (fallback: this client's UCX reaches shards only over tcp"))
        << tls << ": " << st.transport;
    EXPECT_EQ(st.grpc_get_bytes, total);
    EXPECT_EQ(ConnectCalls(*shard), 0u) << tls;
  }
}

TEST(UcxClientTest, ShardWithoutUcxFallsBackToGrpcAndSaysSo) {
  auto sink = std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(256);
  spdlog::default_logger()->sinks().push_back(sink);
  auto shard = StartShard({"--ucx_enabled=false"});
  ASSERT_NE(shard, nullptr);
  // Shared memory: a client whose UCX has only tcp would not even ask (next test).
  auto client = Client::Create(Config(*shard, TransportMode::kAuto, "posix,cma"));
  ASSERT_TRUE(client.ok()) << client.status();
  // Large blocks go through PutStart + WriteReserved (the data plane), small ones inline.
  const uint64_t total = PutGetByteExact(**client, "ns", {100, 5 << 20}, 3);
  PutGetByteExact(**client, "ns", {7000}, 4);  // a second call: no second log line
  const ShardTransportStats st = OnlyShard((*client)->TransportStats());
  EXPECT_TRUE(absl::StartsWith(st.transport, "grpc (fallback: ")) << st.transport;
  EXPECT_TRUE(absl::StrContains(st.transport, "ucx_enabled=false")) << st.transport;
  EXPECT_EQ(st.ucx_get_bytes + st.ucx_put_bytes, 0u);
  EXPECT_EQ(st.grpc_put_bytes, total + 7000);
  EXPECT_EQ(st.grpc_get_bytes, total + 7000);
  int lines = 0;
  for (const std::string& l : sink->last_formatted()) {
    if (absl::StrContains(l, absl::StrCat("shard ", shard->grpc_address(), " uses grpc"))) ++lines;
  }
  EXPECT_EQ(lines, 1);
  spdlog::default_logger()->sinks().pop_back();

  // transport=ucx does not fall back: it fails with the shard's reason.
  auto strict = Client::Create(Config(*shard, TransportMode::kUcx, ""));
  ASSERT_TRUE(strict.ok());
  std::vector<uint8_t> buf(8 << 20);
  std::span<uint8_t> dest(buf);
  const BlockKey k = Key(3000);
  auto got = (*strict)->Get("ns", {&k, 1}, {&dest, 1});
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->valid_blocks, 0u);
  EXPECT_EQ(got->status[0].code(), absl::StatusCode::kFailedPrecondition) << got->status[0];
  EXPECT_TRUE(absl::StrContains(got->status[0].message(), "ucx disabled on this shard")) << got->status[0];
}

// Fills the shard with fresh blocks (evicting whatever is evictable) so any
// memory freed by an ended lease is reused with other bytes.
void OverwritePressure(Client& writer, int n, uint64_t seed) {
  std::vector<std::vector<uint8_t>> data;
  std::vector<BlockPut> puts;
  for (int i = 0; i < n; ++i) data.push_back(Payload(seed + i, 1 << 20));
  for (int i = 0; i < n; ++i) puts.push_back({Key(seed + i), std::nullopt, data[i], false});
  auto r = writer.Put("ns", puts);
  ASSERT_TRUE(r.ok()) << r.status();
}

TEST(UcxClientTest, TransportUcxWithAShardThatDoesNotAnswerIsUnavailableThenRecovers) {
  // A shard frozen (or restarting) when the client first connects is a transient
  // failure (UNAVAILABLE, as a caller retries), not a shard without UCX
  // (FAILED_PRECONDITION, a configuration to fix); the next call connects.
  auto shard = StartShard({"--ucx_tls=tcp"});
  ASSERT_NE(shard, nullptr);
  ClientConfig cfg = Config(*shard, TransportMode::kUcx);
  cfg.control_deadline = absl::Milliseconds(300);
  cfg.max_attempts = 1;
  auto client = Client::Create(cfg);
  ASSERT_TRUE(client.ok()) << client.status();
  const BlockKey k = Key(4000);
  std::vector<uint8_t> buf(4096);
  std::span<uint8_t> dest(buf);
  ASSERT_TRUE(shard->Signal(SIGSTOP).ok());
  auto frozen = (*client)->Get("ns", {&k, 1}, {&dest, 1});
  ASSERT_TRUE(shard->Signal(SIGCONT).ok());
  ASSERT_TRUE(frozen.ok()) << frozen.status();
  EXPECT_EQ(frozen->status[0].code(), absl::StatusCode::kUnavailable) << frozen->status[0];
  EXPECT_TRUE(absl::StrContains(frozen->status[0].message(), "retried on the next call")) << frozen->status[0];
  auto thawed = (*client)->Get("ns", {&k, 1}, {&dest, 1});
  ASSERT_TRUE(thawed.ok()) << thawed.status();
  EXPECT_EQ(thawed->status[0].code(), absl::StatusCode::kNotFound) << thawed->status[0];
  EXPECT_TRUE(absl::StartsWith(OnlyShard((*client)->TransportStats()).transport, "ucx (tcp"));
}

TEST(UcxClientTest, LeasedBytesStayWhileTheLeaseLivesAndAStalledReaderNeverGetsForeignBytes) {
  // 16 MiB of blocks in a 16 MiB store: every new block evicts an old one.
  auto shard = StartShard({"--ucx_tls=tcp", "--capacity_bytes=16MiB", "--region_bytes=16MiB",
                           "--max_block_bytes=1MiB", "--slab_bytes=16MiB"});
  ASSERT_NE(shard, nullptr);
  auto writer = Client::Create(Config(*shard, TransportMode::kGrpc));
  ASSERT_TRUE(writer.ok());
  const std::vector<uint8_t> original = Payload(77, 1 << 20);
  const BlockKey key = Key(77);
  BlockPut put{key, std::nullopt, original, false};
  ASSERT_EQ((*writer)->Put("ns", {&put, 1})->stored, 1u);

  // 1) The reader stalls inside its lease while the block is deleted and the
  //    store is overwritten many times: the leased bytes must stay intact.
  int stall_ms = 0;
  uint64_t pressure_seed = 100000;
  UcxDataPlane::Hooks hooks;
  hooks.after_lease = [&] {
    ASSERT_TRUE((*writer)->Delete("ns", {&key, 1}).ok());
    OverwritePressure(**writer, 40, pressure_seed);
    pressure_seed += 1000;
    absl::SleepFor(absl::Milliseconds(stall_ms));
  };
  ClientConfig cfg = Config(*shard, TransportMode::kUcx);
  cfg.ucx_lease = absl::Seconds(3);
  auto reader = Client::Create(cfg, std::make_unique<UcxDataPlane>(cfg, hooks));
  ASSERT_TRUE(reader.ok());
  std::vector<uint8_t> buf(1 << 20, 0);
  std::span<uint8_t> dest(buf);
  auto got = (*reader)->Get("ns", {&key, 1}, {&dest, 1});
  ASSERT_TRUE(got.ok());
  ASSERT_TRUE(got->status[0].ok()) << got->status[0];
  EXPECT_TRUE(buf == original) << "leased bytes changed while the lease lived";

  // 2) A reader that stalls past its lease gets an error, never bytes.
  ASSERT_EQ((*writer)->Put("ns", {&put, 1})->stored, 1u);
  cfg.ucx_lease = absl::Milliseconds(300);
  stall_ms = 600;
  auto slow = Client::Create(cfg, std::make_unique<UcxDataPlane>(cfg, hooks));
  ASSERT_TRUE(slow.ok());
  std::fill(buf.begin(), buf.end(), 0);
  got = (*slow)->Get("ns", {&key, 1}, {&dest, 1});
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->valid_blocks, 0u);
  EXPECT_FALSE(got->status[0].ok());
  EXPECT_EQ(got->sizes[0], 0u);
  // The store saw the lease run out and took the memory back (polled: the expiry
  // sweep runs on its own period, later on a loaded machine).
  auto st = (*writer)->Stats();
  for (int i = 0; i < 250; ++i) {
    if (st[0].stats.ok() && st[0].stats->leases_expired() >= 1 && st[0].stats->tiers(0).leased_blocks() == 0) break;
    absl::SleepFor(absl::Milliseconds(20));
    st = (*writer)->Stats();
  }
  ASSERT_TRUE(st[0].stats.ok());
  EXPECT_GE(st[0].stats->leases_expired(), 1u);
  EXPECT_EQ(st[0].stats->tiers(0).leased_blocks(), 0u);
}

// The shard caps every lease at its max_lease_ms, below what the client asked
// (ucx_lease, 10 s by default). A one-sided read of shared memory is invisible to the
// shard, so the client alone keeps it inside the lease: it must use the lease the
// shard granted (GetResponse.lease_ms), not the one it asked for. A reader stalled
// past the granted lease gets an error, never the bytes.
TEST(UcxClientTest, OneSidedReadsKeepToTheLeaseTheShardGrantedNotTheOneAskedFor) {
  if (!ShmHoldsTheShardsRegions()) {
    GTEST_SKIP() << "/dev/shm has less than 600 MiB free: kvhubd would fall back to AM (and say so)";
  }
  auto shard = StartShard({"--ucx_tls=posix,cma", "--max_lease_ms=400", "--default_lease_ms=400"});
  ASSERT_NE(shard, nullptr);
  auto writer = Client::Create(Config(*shard, TransportMode::kGrpc));
  ASSERT_TRUE(writer.ok());
  const std::vector<uint8_t> original = Payload(78, 1 << 20);
  const BlockKey key = Key(78);
  BlockPut put{key, std::nullopt, original, false};
  ASSERT_EQ((*writer)->Put("ns", {&put, 1})->stored, 1u);
  int stall_ms = 0;
  UcxDataPlane::Hooks hooks;
  hooks.after_lease = [&] { absl::SleepFor(absl::Milliseconds(stall_ms)); };
  ClientConfig cfg = Config(*shard, TransportMode::kUcx, "posix,cma");
  ASSERT_EQ(cfg.ucx_lease, absl::Seconds(10));
  auto reader = Client::Create(cfg, std::make_unique<UcxDataPlane>(cfg, hooks));
  ASSERT_TRUE(reader.ok());
  std::vector<uint8_t> buf(1 << 20, 0);
  std::span<uint8_t> dest(buf);
  auto got = (*reader)->Get("ns", {&key, 1}, {&dest, 1});  // within the lease: served one-sidedly
  ASSERT_TRUE(got.ok() && got->status[0].ok()) << (got.ok() ? got->status[0] : got.status());
  ASSERT_TRUE(buf == original);
  ASSERT_TRUE(absl::StrContains(OnlyShard((*reader)->TransportStats()).transport, "nofail"));
  stall_ms = 700;  // past the 400 ms the shard granted, well inside the 10 s asked for
  std::fill(buf.begin(), buf.end(), 0);
  got = (*reader)->Get("ns", {&key, 1}, {&dest, 1});
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(got->valid_blocks, 0u);
  EXPECT_FALSE(got->status[0].ok());
  EXPECT_EQ(got->sizes[0], 0u);
}

TEST(UcxClientTest, ShardRefusesUcxTransfersOutsideTheirGrantAndKeepsStoredBytes) {
  auto shard = StartShard({"--ucx_tls=tcp"});
  ASSERT_NE(shard, nullptr);
  auto writer = Client::Create(Config(*shard, TransportMode::kGrpc));
  ASSERT_TRUE(writer.ok());
  const std::vector<uint8_t> victim = Payload(31, 1 << 20);
  const BlockKey victim_key = Key(31);
  BlockPut vput{victim_key, std::nullopt, victim, false};
  ASSERT_EQ((*writer)->Put("ns", {&vput, 1})->stored, 1u);

  // Where the victim lives: seen by a well-behaved UCX reader.
  transport::Transfer victim_at;
  ClientConfig cfg = Config(*shard, TransportMode::kUcx);
  ASSERT_NO_FATAL_FAILURE(SpyLocation(cfg, victim_key, victim, &victim_at));
  std::vector<uint8_t> buf(1 << 20, 0);
  std::span<uint8_t> dest(buf);
  ASSERT_EQ(victim_at.size, victim.size());
  ASSERT_NE(victim_at.grant, 0u) << "a get carries its lease id";

  // 1) A put whose reservation is real but whose range is the victim's (a stale
  //    or forged descriptor) is refused; the new block never becomes visible.
  UcxDataPlane::Hooks forge_put;
  forge_put.before_transfers = [&](std::span<transport::Transfer> ts) {
    for (transport::Transfer& t : ts) {
      t.region = victim_at.region;
      t.offset = victim_at.offset;
    }
  };
  auto bad_writer = Client::Create(cfg, std::make_unique<UcxDataPlane>(cfg, forge_put));
  ASSERT_TRUE(bad_writer.ok());
  const std::vector<uint8_t> evil(1 << 20, 0x66);
  const BlockKey evil_key = Key(32);
  BlockPut eput{evil_key, std::nullopt, evil, false};
  auto put = (*bad_writer)->Put("ns", {&eput, 1});
  ASSERT_TRUE(put.ok()) << put.status();
  EXPECT_EQ(put->stored, 0u);
  ASSERT_FALSE(put->errors[0].ok());
  EXPECT_NE(std::string(put->errors[0].message()).find("outside reservation"), std::string::npos) << put->errors[0];

  // 2) A get naming no lease (grant 0) or another block's lease is refused:
  //    an error, never bytes.
  for (uint64_t forged : {uint64_t{0}, victim_at.grant}) {
    UcxDataPlane::Hooks forge_get;
    forge_get.before_transfers = [&](std::span<transport::Transfer> ts) {
      for (transport::Transfer& t : ts) t.grant = forged;
    };
    auto bad_reader = Client::Create(cfg, std::make_unique<UcxDataPlane>(cfg, forge_get));
    ASSERT_TRUE(bad_reader.ok());
    std::fill(buf.begin(), buf.end(), 0);
    auto got = (*bad_reader)->Get("ns", {&victim_key, 1}, {&dest, 1});
    ASSERT_TRUE(got.ok());
    EXPECT_EQ(got->valid_blocks, 0u) << "grant " << forged;
    EXPECT_EQ(got->status[0].code(), absl::StatusCode::kNotFound) << got->status[0];
    EXPECT_NE(std::string(got->status[0].message()).find("unknown, expired or released"), std::string::npos)
        << got->status[0];
    EXPECT_EQ(got->sizes[0], 0u);
  }

  // The victim is intact and the refused put left nothing behind.
  std::fill(buf.begin(), buf.end(), 0);
  auto got = (*writer)->Get("ns", {&victim_key, 1}, {&dest, 1});
  ASSERT_TRUE(got.ok() && got->status[0].ok());
  EXPECT_TRUE(buf == victim) << "a refused UCX put changed another block's bytes";
  auto look = (*writer)->Get("ns", {&evil_key, 1}, {&dest, 1});
  ASSERT_TRUE(look.ok());
  EXPECT_EQ(look->valid_blocks, 0u);
  EXPECT_EQ(SettledLeasedBlocks(**writer), 0u) << "every hold and lease ended";
}

// A shard reached over shared memory dies (SIGKILL). UCX 1.13 cannot tell (no
// peer failure detection there), so the next read's lease call waits out its
// deadline; it fails and never serves bytes, and the client reconnects, so later
// reads fail at once through Connect instead of waiting again.
TEST(UcxClientTest, ShardKilledUnderASharedMemoryClientFailsItsReads) {
  auto shard = StartShard({"--ucx_tls=posix,cma"});
  ASSERT_NE(shard, nullptr);
  ClientConfig cfg = Config(*shard, TransportMode::kUcx, "posix,cma");
  cfg.control_deadline = absl::Milliseconds(500);
  auto client = Client::Create(cfg);
  ASSERT_TRUE(client.ok()) << client.status();
  PutGetByteExact(**client, "ns", {4096}, 31);
  const BlockKey key = Key(31 * 1000);
  ASSERT_TRUE(shard->Kill().ok());
  std::vector<uint8_t> buf(4096, 0xA5);
  std::span<uint8_t> dest(buf);
  for (int i = 0; i < 4; ++i) {
    auto got = (*client)->Get("ns", {&key, 1}, {&dest, 1});
    ASSERT_FALSE(got.ok() && got->valid_blocks > 0) << "read " << i << " served bytes from a dead shard";
    const absl::Status st = got.ok() ? got->status[0] : got.status();
    if (i == 0) {
      // UCX over shared memory never reports the dead shard: the read waits its
      // deadline, unless the client saw its Session stream end first and
      // reconnected (UNAVAILABLE: the shard is gone).
      EXPECT_TRUE(st.code() == absl::StatusCode::kDeadlineExceeded || st.code() == absl::StatusCode::kUnavailable)
          << st;
    } else {
      // Not another wait: the reconnect's Connect finds the shard gone.
      EXPECT_NE(st.code(), absl::StatusCode::kDeadlineExceeded) << "read " << i << ": " << st;
    }
  }
  EXPECT_TRUE(std::all_of(buf.begin(), buf.end(), [](uint8_t b) { return b == 0xA5; }));
  const std::string transport = OnlyShard((*client)->TransportStats()).transport;
  EXPECT_FALSE(absl::StartsWith(transport, "ucx (")) << "still claims a live UCX connection: " << transport;
}

// transport=ucx against a shard that refuses UCX: the calls fail with the reason,
// and the shard is asked again only after ucx_retry_interval, not on every call
// (each ask is a Connect; an older shard keeps each one's connection unwatched).
TEST(UcxClientTest, ExplicitUcxAsksARefusingShardOncePerRetryInterval) {
  auto shard = StartShard({"--ucx_enabled=false"});
  ASSERT_NE(shard, nullptr);
  ClientConfig cfg = Config(*shard, TransportMode::kUcx, "posix,cma");
  cfg.ucx_retry_interval = absl::Seconds(3);  // ample for the three puts on a loaded sanitizer run
  auto client = Client::Create(cfg);
  ASSERT_TRUE(client.ok()) << client.status();
  const std::vector<uint8_t> data = Payload(901, 5 << 20);  // large: it goes through the data plane
  const std::vector<BlockPut> puts = {{Key(901), std::nullopt, data, false}};
  const auto put_fails = [&] {
    auto put = (*client)->Put("ns", puts);
    if (!put.ok()) return true;
    EXPECT_NE(put->errors[0].code(), absl::StatusCode::kOk);
    return put->failed == 1;
  };
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(put_fails()) << "transport=ucx must not put over gRPC";
  EXPECT_EQ(ConnectCalls(*shard), 1u) << "asked again within the retry interval";
  const ShardTransportStats st = OnlyShard((*client)->TransportStats());
  EXPECT_TRUE(absl::StrContains(st.transport, "ucx_enabled=false")) << st.transport;
  absl::SleepFor(absl::Milliseconds(3200));
  EXPECT_TRUE(put_fails());
  EXPECT_EQ(ConnectCalls(*shard), 2u) << "not asked again after the retry interval";
}

// transport=auto falls back to gRPC for a shard without UCX, and offers UCX again
// after ucx_retry_interval: a shard restarted with UCX on (a rolling upgrade) is
// then served over UCX without recreating the client.
TEST(UcxClientTest, AutoReturnsToUcxWhenTheShardOffersItLater) {
  if (!ShmHoldsTheShardsRegions()) GTEST_SKIP() << "/dev/shm cannot hold the shard's 512 MiB";
  auto shard = StartShard({"--ucx_enabled=false"});
  ASSERT_NE(shard, nullptr);
  const std::string address = shard->grpc_address();
  ClientConfig cfg = Config(*shard, TransportMode::kAuto, "posix,cma");
  cfg.ucx_retry_interval = absl::Milliseconds(300);
  auto client = Client::Create(cfg);
  ASSERT_TRUE(client.ok()) << client.status();
  PutGetByteExact(**client, "ns", {4096}, 51);
  EXPECT_TRUE(absl::StartsWith(OnlyShard((*client)->TransportStats()).transport, "grpc (fallback")) <<
      OnlyShard((*client)->TransportStats()).transport;
  // Retries while UCX is still off find the same reason and keep gRPC.
  absl::SleepFor(absl::Milliseconds(400));
  PutGetByteExact(**client, "ns", {4096}, 52);
  EXPECT_TRUE(absl::StartsWith(OnlyShard((*client)->TransportStats()).transport, "grpc (fallback"));

  ASSERT_EQ(shard->Stop().value_or(-1), 0);
  auto upgraded = StartShard({"--ucx_tls=posix,cma", "--grpc_address=" + address});
  ASSERT_NE(upgraded, nullptr);
  std::string transport;
  for (int i = 0; i < 100 && !absl::StartsWith(transport, "ucx (posix"); ++i) {
    if ((*client)->CheckMembersAnswer().ok()) PutGetByteExact(**client, "ns", {4096}, 53 + i);
    transport = OnlyShard((*client)->TransportStats()).transport;
    absl::SleepFor(absl::Milliseconds(50));
  }
  EXPECT_TRUE(absl::StartsWith(transport, "ucx (posix")) << transport;
  PutGetByteExact(**client, "ns", {1 << 20}, 200);  // byte-exact over UCX now
  EXPECT_GT(OnlyShard((*client)->TransportStats()).ucx_get_bytes, 0u);
}

TEST(UcxClientTest, AShardRestartedAtTheSameAddressIsReconnectedBeforeAnyTransfer) {
  // A new kvhubd on the address of a killed one: its PutStart and Get answers name
  // memory of the new process. The clients' UCX connections (and, over shared memory,
  // their mappings) still lead to the dead one; they must reconnect first, not write
  // into or read from the old process's segments (a failed put or a checksum miss).
  if (!ShmHoldsTheShardsRegions()) GTEST_SKIP() << "/dev/shm cannot hold the shard's 512 MiB";
  auto shard = StartShard({"--ucx_tls=posix,cma"});
  ASSERT_NE(shard, nullptr);
  const std::string address = shard->grpc_address();
  ClientConfig wcfg = Config(*shard, TransportMode::kUcx, "posix,cma");
  ClientConfig rcfg = wcfg;
  rcfg.ucx_calls = false;  // lease Gets over gRPC: they reach the new process at once
  auto writer = Client::Create(wcfg);
  auto reader = Client::Create(rcfg);
  ASSERT_TRUE(writer.ok() && reader.ok());
  PutGetByteExact(**writer, "ns", {4096}, 41);
  PutGetByteExact(**reader, "ns", {4096}, 42);

  ASSERT_TRUE(shard->Kill().ok());
  auto restarted = StartShard({"--ucx_tls=posix,cma", "--grpc_address=" + address});
  ASSERT_NE(restarted, nullptr);
  // Each client's gRPC channels come back first (Shard::WaitBeforeRetry: within a
  // few calls; gRPC's reconnect backoff is at most 2 s here).
  for (auto* c : {&*writer, &*reader}) {
    absl::Status up;
    for (int i = 0; i < 100 && !(up = (*c)->CheckMembersAnswer()).ok(); ++i) absl::SleepFor(absl::Milliseconds(50));
    ASSERT_TRUE(up.ok()) << up;
  }

  const BlockKey key = Key(43000);
  const std::vector<uint8_t> data = Payload(43, 1 << 20);
  const BlockPut put{key, std::nullopt, data, false};
  auto stored = (*writer)->Put("ns", {&put, 1});
  ASSERT_TRUE(stored.ok()) << stored.status();
  EXPECT_EQ(stored->stored, 1u) << stored->errors[0];
  std::vector<uint8_t> buf(data.size(), 0);
  std::span<uint8_t> dest(buf);
  auto got = (*reader)->Get("ns", {&key, 1}, {&dest, 1});
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_TRUE(got->status[0].ok()) << got->status[0];
  EXPECT_TRUE(buf == data);
  for (auto* c : {&*writer, &*reader}) {
    const std::string t = OnlyShard((*c)->TransportStats()).transport;
    EXPECT_TRUE(absl::StartsWith(t, "ucx (posix")) << t;
  }
  auto stats = (*writer)->Stats();
  ASSERT_TRUE(stats[0].stats.ok()) << stats[0].stats.status();
  EXPECT_EQ(stats[0].stats->checksum_failures(), 0u) << "a put was written through the old connection";
}

// Starts build/bin/ucx_reader reading `key` (of `size` bytes, in namespace "ns")
// over UCX `tls` in a loop; returns its pid once it read the block once, or -1.
pid_t StartReader(const KvhubdProcess& shard, const BlockKey& key, size_t size, const std::string& tls) {
  const char* bin_dir = getenv("KVHUB_BIN_DIR");
  const std::string reader = absl::StrCat(bin_dir != nullptr ? bin_dir : "../bin", "/ucx_reader");
  const std::string lo = absl::StrCat(key.lo), hi = absl::StrCat(key.hi), n = absl::StrCat(size);
  int out[2];
  if (pipe(out) != 0) return -1;
  const pid_t pid = fork();
  if (pid < 0) return -1;
  if (pid == 0) {  // only async-signal-safe calls until exec
    dup2(out[1], 1);
    close(out[0]);
    execl(reader.c_str(), reader.c_str(), shard.grpc_address().c_str(), "ns", lo.c_str(), hi.c_str(), n.c_str(),
          tls.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  close(out[1]);
  char line[8] = {0};
  const bool ok = read(out[0], line, 3) == 3 && std::string(line, 3) == "ok\n";
  close(out[0]);
  EXPECT_TRUE(ok) << "reader never read its block";
  if (!ok) {
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
    return -1;
  }
  return pid;
}

// The shard's UCX connections once they settle at `want`, each watched by a
// Session (waits up to 5 s).
uint64_t SettledUcxConnections(Client& client, uint64_t want) {
  uint64_t n = ~uint64_t{0}, sessions = ~uint64_t{0};
  for (int i = 0; i < 500 && (n != want || sessions != want); ++i) {
    auto st = client.Stats();
    EXPECT_TRUE(st[0].stats.ok()) << st[0].stats.status();
    if (!st[0].stats.ok()) return ~uint64_t{0};
    n = st[0].stats->ucx_connections();
    sessions = st[0].stats->ucx_sessions();
    if (n != want || sessions != want) absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_EQ(sessions, n) << "UCX connections without a Session";
  return n;
}

// Runs build/bin/ucx_wedge with `args` (after the binary): it dies holding a
// slot of a worker's shared-memory queue. True when it died that way (SIGKILL).
bool RunWedge(const std::vector<std::string>& args) {
  const char* bin_dir = getenv("KVHUB_BIN_DIR");
  const std::string wedge = absl::StrCat(bin_dir != nullptr ? bin_dir : "../bin", "/ucx_wedge");
  std::vector<char*> argv = {const_cast<char*>(wedge.c_str())};
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  const pid_t pid = fork();
  if (pid < 0) return false;
  if (pid == 0) {
    execv(wedge.c_str(), argv.data());
    _exit(127);
  }
  int wstatus = 0;
  if (waitpid(pid, &wstatus, 0) != pid) return false;
  return WIFSIGNALED(wstatus) && WTERMSIG(wstatus) == SIGKILL;
}

// Gets `key` until it is served byte-exact over UCX shared memory (at most 20 s).
// True if it was; prints how long it took.
bool ServedAgainOverSharedMemory(Client& client, const BlockKey& key, const std::vector<uint8_t>& data) {
  std::vector<uint8_t> buf(data.size());
  std::span<uint8_t> dest(buf);
  const absl::Time t0 = absl::Now();
  int failed = 0;
  while (absl::Now() - t0 < absl::Seconds(20)) {
    std::fill(buf.begin(), buf.end(), 0);
    auto got = client.Get("ns", {&key, 1}, {&dest, 1});
    if (got.ok() && got->status[0].ok() && buf == data &&
        absl::StartsWith(OnlyShard(client.TransportStats()).transport, "ucx (posix")) {
      fprintf(stderr, "served again after %s (%d failed gets)\n", absl::FormatDuration(absl::Now() - t0).c_str(),
              failed);
      return true;
    }
    EXPECT_TRUE(!got.ok() || got->status[0].ok() || !absl::IsDataLoss(got->status[0])) << got->status[0];
    ++failed;
  }
  return false;
}

// Over shared memory UCX never tells a shard that a client died; the client's
// Session stream does: killed readers' connections are closed at once, so a
// shard's connection slots do not run out as clients come and go.
TEST(UcxClientTest, ClientsThatDieOrGoAwayGiveBackTheirUcxConnections) {
  // A reader killed while writing into the shard's shared-memory queue leaves it
  // stuck (rarely: about 1 run in 100 under load); the probe then replaces the
  // shard's worker (ShardRecoversFromAClientKilledMidSendOverSharedMemory).
  auto shard = StartShard({"--ucx_tls=posix,cma", "--ucx_probe_ms=200"});
  ASSERT_NE(shard, nullptr);
  auto client = Client::Create(Config(*shard, TransportMode::kUcx, "posix,cma"));
  ASSERT_TRUE(client.ok()) << client.status();
  const std::vector<uint8_t> data = Payload(11, 1 << 20);
  const BlockKey key = Key(11);
  BlockPut put{key, std::nullopt, data, false};
  ASSERT_EQ((*client)->Put("ns", {&put, 1})->stored, 1u);
  auto st = (*client)->Stats();
  ASSERT_TRUE(st[0].stats.ok());
  EXPECT_EQ(st[0].stats->ucx_connections(), 1u);
  EXPECT_EQ(st[0].stats->ucx_sessions(), 1u);

  for (int round = 0; round < 3; ++round) {
    SCOPED_TRACE(absl::StrCat("round ", round));
    const pid_t a = StartReader(*shard, key, data.size(), "posix,cma");
    const pid_t b = StartReader(*shard, key, data.size(), "posix,cma");
    ASSERT_GT(a, 0);
    ASSERT_GT(b, 0);
    EXPECT_EQ(SettledUcxConnections(**client, 3), 3u);
    ASSERT_EQ(kill(a, SIGKILL), 0);
    ASSERT_EQ(kill(b, SIGKILL), 0);
    ASSERT_EQ(waitpid(a, nullptr, 0), a);
    ASSERT_EQ(waitpid(b, nullptr, 0), b);
    // The shard keeps serving the survivor over UCX (after replacing its worker,
    // if a reader died mid-send: the survivor connects again).
    ASSERT_TRUE(ServedAgainOverSharedMemory(**client, key, data));
    EXPECT_EQ(SettledUcxConnections(**client, 1), 1u);
  }

  // A client that goes away cleanly, and one that auto-mode keeps on gRPC (tcp
  // only) after connecting, leave no connection behind either. (That client names
  // shared memory too: with tcp alone it would not connect at all.)
  auto tcp_shard = StartShard({"--ucx_tls=tcp"});
  ASSERT_NE(tcp_shard, nullptr);
  auto observer = Client::Create(Config(*tcp_shard, TransportMode::kGrpc));
  ASSERT_TRUE(observer.ok());
  {
    auto auto_client = Client::Create(Config(*tcp_shard, TransportMode::kAuto, "tcp,posix,cma"));
    ASSERT_TRUE(auto_client.ok());
    PutGetByteExact(**auto_client, "ns", {100}, 12);
    EXPECT_EQ(SettledUcxConnections(**observer, 0), 0u);
    auto ucx_client = Client::Create(Config(*tcp_shard, TransportMode::kUcx, "tcp"));
    ASSERT_TRUE(ucx_client.ok());
    PutGetByteExact(**ucx_client, "ns", {100}, 13);
    EXPECT_EQ(SettledUcxConnections(**observer, 1), 1u);
  }
  EXPECT_EQ(SettledUcxConnections(**observer, 0), 0u);
}

// A client killed while UCX packs its message into the shard's shared-memory
// queue leaves a slot reserved and never written, and the shard's worker receives
// nothing over shared memory after it (UCX 1.13). The shard notices with its
// probe (a ping over its own shared-memory queue), replaces its worker and ends
// every session, and its clients connect again: the survivor is served over UCX
// shared memory again within a few seconds. `shard_tls` may name tcp too: the
// probe must still ping over shared memory (over tcp it would never notice).
void ExpectShardRecoversFromAClientKilledMidSend(const std::string& shard_tls) {
  auto shard = StartShard({"--ucx_tls=" + shard_tls, "--ucx_probe_ms=200"});
  ASSERT_NE(shard, nullptr);
  auto client = Client::Create(Config(*shard, TransportMode::kUcx, "posix,cma"));
  ASSERT_TRUE(client.ok()) << client.status();
  const std::vector<uint8_t> data = Payload(21, 1 << 20);
  const BlockKey key = Key(21);
  BlockPut put{key, std::nullopt, data, false};
  ASSERT_EQ((*client)->Put("ns", {&put, 1})->stored, 1u);
  ASSERT_TRUE(ServedAgainOverSharedMemory(**client, key, data));

  ASSERT_TRUE(RunWedge({shard->grpc_address(), "posix,cma"})) << "ucx_wedge did not die mid-send";
  EXPECT_TRUE(ServedAgainOverSharedMemory(**client, key, data)) << "the shard never served over shared memory again";
  auto st = (*client)->Stats();
  ASSERT_TRUE(st[0].stats.ok()) << st[0].stats.status();
  EXPECT_EQ(st[0].stats->ucx_worker_resets(), 1u);
  EXPECT_EQ(st[0].stats->checksum_failures(), 0u);
  EXPECT_EQ(SettledUcxConnections(**client, 1), 1u);
}

TEST(UcxClientTest, ShardRecoversFromAClientKilledMidSendOverSharedMemory) {
  ExpectShardRecoversFromAClientKilledMidSend("posix,cma");
}

// A shard that also speaks tcp, and a client of it on shared memory only.
TEST(UcxClientTest, ShardOnTcpAndSharedMemoryRecoversFromAClientKilledMidSendOverSharedMemory) {
  ExpectShardRecoversFromAClientKilledMidSend("tcp,posix,cma");
}

// The other direction: a peer (a shard) killed while writing into a *client's*
// shared-memory queue leaves the client's worker deaf: the shard's replies never
// arrive. The client's call times out, the client pings its own worker, finds it
// deaf, replaces it and connects again: served over shared memory within seconds,
// the shard untouched. `client_tls` may name tcp too: the client's check must
// still ping over shared memory.
void ExpectClientRecoversFromAPeerKilledMidSend(const std::string& client_tls) {
  auto shard = StartShard({"--ucx_tls=posix,cma"});
  ASSERT_NE(shard, nullptr);
  ClientConfig cfg = Config(*shard, TransportMode::kUcx, client_tls);
  absl::Mutex mu;
  std::vector<std::string> workers;  // hex addresses of the client's UCX workers
  UcxDataPlane::Hooks hooks;
  hooks.on_worker = [&](absl::string_view address) {
    absl::MutexLock l(&mu);
    workers.push_back(absl::BytesToHexString(address));
  };
  auto client = Client::Create(cfg, std::make_unique<UcxDataPlane>(cfg, hooks));
  ASSERT_TRUE(client.ok()) << client.status();
  const std::vector<uint8_t> data = Payload(22, 1 << 20);
  const BlockKey key = Key(22);
  BlockPut put{key, std::nullopt, data, false};
  ASSERT_EQ((*client)->Put("ns", {&put, 1})->stored, 1u);
  ASSERT_TRUE(ServedAgainOverSharedMemory(**client, key, data));
  std::string first;
  {
    absl::MutexLock l(&mu);
    ASSERT_EQ(workers.size(), 1u);
    first = workers[0];
  }

  ASSERT_TRUE(RunWedge({"--worker", first, "posix,cma"})) << "ucx_wedge did not die mid-send";
  EXPECT_TRUE(ServedAgainOverSharedMemory(**client, key, data)) << "the client never read over shared memory again";
  {
    absl::MutexLock l(&mu);
    EXPECT_EQ(workers.size(), 2u) << "the client's worker was not replaced (once)";
  }
  auto st = (*client)->Stats();
  ASSERT_TRUE(st[0].stats.ok()) << st[0].stats.status();
  EXPECT_EQ(st[0].stats->ucx_worker_resets(), 0u) << "the shard's queue was never stuck";
  EXPECT_EQ(SettledUcxConnections(**client, 1), 1u);
}

TEST(UcxClientTest, ClientRecoversFromAPeerKilledMidSendOverSharedMemory) {
  ExpectClientRecoversFromAPeerKilledMidSend("posix,cma");
}

// A client that also speaks tcp, and a shard it reaches over shared memory only.
TEST(UcxClientTest, ClientOnTcpAndSharedMemoryRecoversFromAPeerKilledMidSendOverSharedMemory) {
  ExpectClientRecoversFromAPeerKilledMidSend("tcp,posix,cma");
}

// True once /proc says `pid` is stopped (state T), within 5 s.
bool ProcessStopped(pid_t pid) {
  const std::string path = absl::StrCat("/proc/", pid, "/stat");
  for (int i = 0; i < 500; ++i) {
    std::string stat;
    if (FILE* f = fopen(path.c_str(), "r"); f != nullptr) {
      char buf[512] = {0};
      const size_t n = fread(buf, 1, sizeof(buf) - 1, f);
      fclose(f);
      stat.assign(buf, n);
    }
    // "pid (comm) S ...": the state follows the last ')'.
    const size_t paren = stat.rfind(')');
    if (paren != std::string::npos && paren + 2 < stat.size() && stat[paren + 2] == 'T') return true;
    absl::SleepFor(absl::Milliseconds(10));
  }
  return false;
}

// A shard that dies under a call over shared memory (where UCX never reports a
// dead peer) ends the client's Session: the call fails at once with UNAVAILABLE
// instead of waiting out its deadline.
TEST(UcxClientTest, ShardKilledUnderACallOverSharedMemoryFailsItAtOnce) {
  auto shard = StartShard({"--ucx_tls=posix,cma"});
  ASSERT_NE(shard, nullptr);
  ClientConfig cfg = Config(*shard, TransportMode::kUcx, "posix,cma");
  cfg.control_deadline = absl::Seconds(20);  // a deadline this test would notice
  cfg.max_attempts = 1;
  auto client = Client::Create(cfg);
  ASSERT_TRUE(client.ok()) << client.status();
  const std::vector<uint8_t> data = Payload(23, 1 << 16);
  const BlockKey key = Key(23);
  BlockPut put{key, std::nullopt, data, false};
  ASSERT_EQ((*client)->Put("ns", {&put, 1})->stored, 1u);
  std::vector<uint8_t> buf(data.size());
  std::span<uint8_t> dest(buf);
  ASSERT_TRUE((*client)->Get("ns", {&key, 1}, {&dest, 1}).ok());

  // Frozen, the shard answers nothing: the next call waits on it. (SIGSTOP lands
  // asynchronously: wait until the kernel shows the process stopped.)
  ASSERT_TRUE(shard->Signal(SIGSTOP).ok());
  ASSERT_TRUE(ProcessStopped(shard->pid())) << "kvhubd did not stop";
  absl::Status got_status;
  absl::Time ended;
  std::atomic<bool> calling{false};
  std::thread caller([&] {
    calling = true;
    auto got = (*client)->Get("ns", {&key, 1}, {&dest, 1});
    got_status = !got.ok() ? got.status() : got->status[0];
    ended = absl::Now();
  });
  while (!calling.load()) absl::SleepFor(absl::Milliseconds(1));  // a slow thread start: the kill came first
  absl::SleepFor(absl::Milliseconds(300));
  const absl::Time killed = absl::Now();
  ASSERT_TRUE(shard->Kill().ok());
  caller.join();
  EXPECT_FALSE(got_status.ok());
  EXPECT_TRUE(absl::IsUnavailable(got_status)) << got_status;
  EXPECT_LT(ended - killed, absl::Seconds(5)) << "the call waited out its deadline: " << got_status;
}

// A UCX worker of this process on tcp: the client side of raw Connect calls.
struct TcpWorker {
  std::unique_ptr<transport::UcxContext> context;
  std::unique_ptr<transport::UcxWorker> worker;  // destroyed first

  static absl::StatusOr<TcpWorker> Create(const std::string& name) {
    transport::UcxConfig uc;
    uc.tls = "tcp";
    absl::StatusOr<std::unique_ptr<transport::UcxContext>> ctx = transport::UcxContext::Create(uc);
    if (!ctx.ok()) return ctx.status();
    TcpWorker out;
    out.context = *std::move(ctx);
    absl::StatusOr<std::unique_ptr<transport::UcxWorker>> w =
        transport::UcxWorker::Create(out.context.get(), {.name = name});
    if (!w.ok()) return w.status();
    out.worker = *std::move(w);
    return out;
  }
};

// Connect with the address of a UCX worker of this process, as a client that sends
// the connection key (or not); the reply goes to *resp when given.
grpc::Status ConnectRaw(const KvhubdProcess& shard, const std::string& address, bool sends_key = true,
                        v1::ConnectResponse* resp = nullptr) {
  auto stub = v1::KvHub::NewStub(grpc::CreateChannel(shard.grpc_address(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext cc;
  v1::ConnectRequest req;
  req.set_sends_conn_key(sends_key);
  req.set_worker_address(address);
  req.set_client_name("vet-test");
  v1::ConnectResponse ignored;
  return stub->Connect(&cc, req, resp != nullptr ? resp : &ignored);
}

// A shard on tcp serves no RMA (its context is made without it): over tcp UCX
// would serve a peer's RMA in software, copying whatever address the message names
// (any memory of the shard process, not only its regions, past every grant check).
// A peer that Connects and then reads by RMA instead of asking (active messages)
// gets nothing; before, the read was served.
TEST(UcxClientTest, AShardOnTcpServesNoRmaToAPeerThatConnected) {
  auto shard = StartShard({"--ucx_tls=tcp"});
  ASSERT_NE(shard, nullptr);
  transport::UcxConfig uc;
  uc.tls = "tcp";
  uc.op_timeout = absl::Milliseconds(800);
  auto ctx = transport::UcxContext::Create(uc);  // with RMA: the reading peer's side
  ASSERT_TRUE(ctx.ok()) << ctx.status();
  auto worker = transport::UcxWorker::Create(ctx->get(), {.name = "rma-reader"});
  ASSERT_TRUE(worker.ok()) << worker.status();
  v1::ConnectResponse resp;
  const grpc::Status s = ConnectRaw(*shard, (*worker)->address(), true, &resp);
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_GT(resp.regions_size(), 0);
  transport::PeerInfo info;
  info.worker_address = resp.worker_address();
  info.conn = {resp.conn_id(), resp.conn_key()};
  for (const v1::ConnectResponse::Region& r : resp.regions()) info.regions.push_back({r.base(), r.size(), r.packed_rkey()});
  auto peer = (*worker)->Connect(info);
  ASSERT_TRUE(peer.ok()) << peer.status();
  std::vector<uint8_t> dst(4096, 0xEE);
  transport::Transfer rma{transport::TransferKind::kGet, transport::UcxPath::kRma, 0, 0, dst.size(), dst.data()};
  absl::Status st;
  const absl::Status call = (*worker)->Execute(*peer, {&rma, 1}, {&st, 1});
  EXPECT_FALSE(call.ok() && st.ok()) << "the shard served an RMA read";
  EXPECT_TRUE(std::all_of(dst.begin(), dst.end(), [](uint8_t b) { return b == 0xEE; }));
  worker->reset();
  EXPECT_TRUE(shard->running()) << "the shard died of a message it does not serve";
}

// The Session RPC on its own (raw stub): an unknown connection is NOT_FOUND, a
// second session of one connection is refused, the first one is confirmed by an
// `open` event and ends with UNAVAILABLE when the shard stops, without holding
// up the shard's graceful stop.
TEST(UcxClientTest, SessionRpcConfirmsRefusesAndEndsWhenTheShardStops) {
  auto shard = StartShard({"--ucx_tls=tcp", "--shutdown_timeout_ms=20000"});
  ASSERT_NE(shard, nullptr);
  auto worker = TcpWorker::Create("session-test");
  ASSERT_TRUE(worker.ok()) << worker.status();
  auto stub = v1::KvHub::NewStub(grpc::CreateChannel(shard->grpc_address(), grpc::InsecureChannelCredentials()));
  v1::ConnectResponse conn;
  {
    grpc::ClientContext cc;
    v1::ConnectRequest req;
    req.set_sends_conn_key(true);
    req.set_worker_address(worker->worker->address());
    req.set_client_name("session-test");
    const grpc::Status s = stub->Connect(&cc, req, &conn);
    ASSERT_TRUE(s.ok()) << s.error_message();
  }
  auto session = [&](uint64_t conn_id, grpc::ClientContext* cc) {
    v1::SessionRequest req;
    req.set_conn_id(conn_id);
    return stub->Session(cc, req);
  };
  {
    grpc::ClientContext cc;
    auto unknown = session(conn.conn_id() + 1000, &cc);
    v1::SessionEvent ev;
    EXPECT_FALSE(unknown->Read(&ev));
    const grpc::Status s = unknown->Finish();
    EXPECT_EQ(s.error_code(), grpc::StatusCode::NOT_FOUND) << s.error_message();
    EXPECT_TRUE(absl::StrContains(s.error_message(), "Connect again")) << s.error_message();
  }
  auto first_ctx = std::make_unique<grpc::ClientContext>();
  auto first = session(conn.conn_id(), first_ctx.get());
  v1::SessionEvent ev;
  ASSERT_TRUE(first->Read(&ev));
  EXPECT_TRUE(ev.open());
  {
    grpc::ClientContext cc;
    auto second = session(conn.conn_id(), &cc);
    EXPECT_FALSE(second->Read(&ev));
    const grpc::Status s = second->Finish();
    EXPECT_EQ(s.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << s.error_message();
  }
  {
    grpc::ClientContext cc;
    v1::StatsResponse st;
    ASSERT_TRUE(stub->Stats(&cc, v1::StatsRequest(), &st).ok());
    EXPECT_EQ(st.ucx_connections(), 1u);
    EXPECT_EQ(st.ucx_sessions(), 1u);
  }
  const absl::Time t0 = absl::Now();
  std::thread stopper([&] { EXPECT_EQ(shard->Stop().value_or(-1), 0); });
  EXPECT_FALSE(first->Read(&ev));
  const grpc::Status s = first->Finish();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << s.error_message();
  EXPECT_TRUE(absl::StrContains(s.error_message(), "shutting down")) << s.error_message();
  // Close this channel: a graceful stop waits (within its budget) for clients to
  // close their connections, and an idle raw channel notices the GOAWAY late.
  first.reset();
  first_ctx.reset();
  stub.reset();
  stopper.join();
  // Not held up by the open session (the shutdown budget is 20 s).
  EXPECT_LT(absl::Now() - t0, absl::Seconds(10));
}

// A client that Connects and never opens its Session (it died or gave up in
// between) leaves a connection nothing would close: the shard closes it after
// ucx_session_grace_ms. A watched one stays.
TEST(UcxClientTest, ConnectionsNoSessionWatchesAreClosedAfterTheGrace) {
  auto shard = StartShard({"--ucx_tls=tcp", "--ucx_session_grace_ms=1000"});
  ASSERT_NE(shard, nullptr);
  auto watched = Client::Create(Config(*shard, TransportMode::kUcx));
  ASSERT_TRUE(watched.ok());
  PutGetByteExact(**watched, "ns", {4096}, 61);
  auto worker = TcpWorker::Create("no-session");
  ASSERT_TRUE(worker.ok()) << worker.status();
  ASSERT_TRUE(ConnectRaw(*shard, worker->worker->address()).ok());
  auto counts = [&] {
    auto st = (*watched)->Stats();
    EXPECT_TRUE(st[0].stats.ok());
    return st[0].stats.ok() ? std::pair(st[0].stats->ucx_connections(), st[0].stats->ucx_sessions())
                            : std::pair(uint64_t{0}, uint64_t{0});
  };
  EXPECT_EQ(counts(), std::pair(uint64_t{2}, uint64_t{1}));
  std::pair<uint64_t, uint64_t> now;
  for (int i = 0; i < 100 && (now = counts()) != std::pair(uint64_t{1}, uint64_t{1}); ++i) {
    absl::SleepFor(absl::Milliseconds(50));
  }
  EXPECT_EQ(now, std::pair(uint64_t{1}, uint64_t{1})) << "the unwatched connection was not closed";
  PutGetByteExact(**watched, "ns", {4096}, 62);  // the watched one still serves
}

// A token reload closes the UCX connections of revoked tokens, also those no
// Session watches (a client that never opened one): their one-sided reads and UCX
// calls are never checked against the tokens again. Before session 27 only
// watched ones were closed, and an unwatched one lived until the grace (here 10
// minutes; forever with ucx_session_grace_ms=0).
TEST(UcxClientTest, AReloadClosesUnwatchedConnectionsOfRevokedTokens) {
  constexpr char kOld[] = "ops-before-reload-0123456789";
  constexpr char kNew[] = "ops-after-reload-9876543210";
  const std::string tokens = (std::filesystem::temp_directory_path() /
                              absl::StrCat("kvhub_reload_tokens_", getpid())).string();
  std::ofstream(tokens) << kOld << " *\n" << kNew << " *\n";
  auto shard = StartShard({"--ucx_tls=tcp", "--ucx_session_grace_ms=600000", "--auth_tokens_file=" + tokens,
                           "--auth_reload_ms=0"});
  ASSERT_NE(shard, nullptr);
  auto worker = TcpWorker::Create("revoked");
  ASSERT_TRUE(worker.ok()) << worker.status();
  auto stub = v1::KvHub::NewStub(grpc::CreateChannel(shard->grpc_address(), grpc::InsecureChannelCredentials()));
  const auto connections = [&] {
    grpc::ClientContext cc;
    cc.AddMetadata("authorization", absl::StrCat("Bearer ", kNew));
    v1::StatsResponse st;
    EXPECT_TRUE(stub->Stats(&cc, v1::StatsRequest(), &st).ok());
    return st.ucx_connections();
  };
  {
    grpc::ClientContext cc;
    cc.AddMetadata("authorization", absl::StrCat("Bearer ", kOld));
    v1::ConnectRequest req;
    req.set_sends_conn_key(true);
    req.set_worker_address(worker->worker->address());
    req.set_client_name("never-watches");
    v1::ConnectResponse resp;
    const grpc::Status st = stub->Connect(&cc, req, &resp);
    ASSERT_TRUE(st.ok()) << st.error_message();
  }
  ASSERT_EQ(connections(), 1u);
  std::ofstream(tokens, std::ios::trunc) << kNew << " *\n";  // kOld revoked
  ASSERT_TRUE(shard->Signal(SIGHUP).ok());
  uint64_t now = 1;
  for (int i = 0; i < 100 && (now = connections()) != 0; ++i) absl::SleepFor(absl::Milliseconds(50));
  EXPECT_EQ(now, 0u) << "the revoked token's unwatched connection is still open";
  std::remove(tokens.c_str());
}

// The shard closes a connection itself when its endpoint to the client fails (the
// client's UCX worker went away while its gRPC channel lives on). Its Session must
// end then, with UNAVAILABLE: a client whose Session stays open never Connects
// again, and every call it sends over the dead connection waits out its deadline.
TEST(UcxClientTest, AConnectionTheShardClosesEndsItsSession) {
  auto shard = StartShard({"--ucx_tls=tcp", "--expiry_interval_ms=100"});
  ASSERT_NE(shard, nullptr);
  auto worker = TcpWorker::Create("session-peer");
  ASSERT_TRUE(worker.ok()) << worker.status();
  auto stub = v1::KvHub::NewStub(grpc::CreateChannel(shard->grpc_address(), grpc::InsecureChannelCredentials()));
  v1::ConnectResponse conn;
  ASSERT_TRUE(ConnectRaw(*shard, worker->worker->address(), true, &conn).ok());
  grpc::ClientContext cc;
  cc.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));  // a failure, not a hang
  v1::SessionRequest req;
  req.set_conn_id(conn.conn_id());
  auto session = stub->Session(&cc, req);
  v1::SessionEvent ev;
  ASSERT_TRUE(session->Read(&ev));
  ASSERT_TRUE(ev.open());
  auto ucx_stats = [&] {
    grpc::ClientContext sc;
    v1::StatsResponse st;
    EXPECT_TRUE(stub->Stats(&sc, v1::StatsRequest(), &st).ok());
    return std::pair(st.ucx_connections(), st.ucx_sessions());
  };
  EXPECT_EQ(ucx_stats(), std::pair(uint64_t{1}, uint64_t{1}));
  // The client's UCX goes; its gRPC channel and Session stay.
  worker->worker.reset();
  worker->context.reset();
  const absl::Time t0 = absl::Now();
  EXPECT_FALSE(session->Read(&ev)) << "the Session outlived its connection";
  const grpc::Status st = session->Finish();
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAVAILABLE) << st.error_message();
  EXPECT_TRUE(absl::StrContains(st.error_message(), "Connect again")) << st.error_message();
  EXPECT_LT(absl::Now() - t0, absl::Seconds(10));
  // The shard forgets the session when gRPC is done with its stream (OnDone), just after.
  std::pair<uint64_t, uint64_t> now;
  for (int i = 0; i < 100 && (now = ucx_stats()) != std::pair(uint64_t{0}, uint64_t{0}); ++i) {
    absl::SleepFor(absl::Milliseconds(20));
  }
  EXPECT_EQ(now, std::pair(uint64_t{0}, uint64_t{0}));
}

// Installs a `Factory` (a gRPC client interceptor factory) on every channel the
// clients made meanwhile create, and removes it when the scope ends.
template <typename Factory>
struct ScopedChannelFaults {
  ScopedChannelFaults() { SetChannelFaultsForTesting([] { return std::make_unique<Factory>(); }); }
  ~ScopedChannelFaults() { SetChannelFaultsForTesting(nullptr); }
};

// Points every Session a client opens at a connection id that does not exist, so the
// shard refuses it at once (NOT_FOUND), as it does when it cannot reach the client:
// the connection Connect made stays, unwatched, for the shard's grace.
class MisdirectSessions final : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  grpc::experimental::Interceptor* CreateClientInterceptor(grpc::experimental::ClientRpcInfo* info) override {
    if (absl::string_view(info->method()) != "/kvhub.v1.KvHub/Session") return nullptr;
    return new Misdirect();
  }

 private:
  class Misdirect final : public grpc::experimental::Interceptor {
   public:
    void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
      if (methods->QueryInterceptionHookPoint(grpc::experimental::InterceptionHookPoints::PRE_SEND_MESSAGE)) {
        req_ = *static_cast<const v1::SessionRequest*>(methods->GetSendMessage());
        req_.set_conn_id(req_.conn_id() + 1000000);
        methods->ModifySendMessage(&req_);
      }
      methods->Proceed();
    }

   private:
    v1::SessionRequest req_;
  };
};

// Adds an empty block to every Get reply: a reply of the wrong length, as a shard
// with a bug would send.
class LongGetReplies final : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  grpc::experimental::Interceptor* CreateClientInterceptor(grpc::experimental::ClientRpcInfo* info) override {
    if (absl::string_view(info->method()) != "/kvhub.v1.KvHub/Get") return nullptr;
    return new Lengthen();
  }

 private:
  class Lengthen final : public grpc::experimental::Interceptor {
   public:
    void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
      if (methods->QueryInterceptionHookPoint(grpc::experimental::InterceptionHookPoints::POST_RECV_MESSAGE)) {
        auto* bb = static_cast<grpc::ByteBuffer*>(methods->GetRecvMessage());
        v1::GetResponse resp;
        if (bb != nullptr && grpc::SerializationTraits<v1::GetResponse>::Deserialize(bb, &resp).ok()) {
          resp.add_blocks();
          bool own = false;
          (void)grpc::SerializationTraits<v1::GetResponse>::Serialize(resp, bb, &own);
        }
      }
      methods->Proceed();
    }
  };
};

// The leases of a Get reply the client cannot use (here: one block too many) are
// released at once, not left to keep the blocks from eviction until they expire.
TEST(UcxClientTest, LeasesOfAnUnusableGetReplyAreReleased) {
  auto shard = StartShard({"--ucx_tls=tcp"});
  ASSERT_NE(shard, nullptr);
  auto writer = Client::Create(Config(*shard, TransportMode::kGrpc));
  ASSERT_TRUE(writer.ok()) << writer.status();
  const std::vector<uint8_t> a = Payload(9101, 4096), b = Payload(9102, 4096);
  const std::vector<BlockKey> keys = {Key(9101), Key(9102)};
  const std::vector<BlockPut> puts = {{keys[0], std::nullopt, a, false}, {keys[1], std::nullopt, b, false}};
  auto put = (*writer)->Put("ns", puts);
  ASSERT_TRUE(put.ok()) << put.status();
  ScopedChannelFaults<LongGetReplies> faults;
  ClientConfig cfg = Config(*shard, TransportMode::kUcx);
  cfg.ucx_calls = false;  // lease Gets over gRPC, where the interceptor sees them
  cfg.ucx_lease = absl::Minutes(5);
  auto client = Client::Create(cfg);
  ASSERT_TRUE(client.ok()) << client.status();
  std::vector<uint8_t> x(4096), y(4096);
  std::vector<std::span<uint8_t>> out = {x, y};
  absl::StatusOr<FetchResult> r = (*client)->Get("ns", keys, out);
  if (r.ok()) {
    EXPECT_EQ(r->valid_blocks, 0u) << "a malformed reply served blocks";
  }
  EXPECT_EQ(SettledLeasedBlocks(**client), 0u) << "the reply's leases outlived it";
}

// A client whose Sessions keep failing (the shard slow, or unable to reach it) must
// not Connect again on every call: each Connect leaves the shard a connection it
// keeps for ucx_session_grace_ms, and a busy client would fill its 4096 slots for
// everyone. It backs off (50 ms doubling to 1 s) between tries.
TEST(UcxClientTest, AClientWhoseSessionsFailBacksOffConnecting) {
  auto shard = StartShard({"--ucx_tls=tcp", "--ucx_session_grace_ms=600000"});
  ASSERT_NE(shard, nullptr);
  ScopedChannelFaults<MisdirectSessions> faults;
  ClientConfig cfg = Config(*shard, TransportMode::kUcx);
  cfg.data_deadline = absl::Milliseconds(200);
  auto client = Client::Create(cfg);
  ASSERT_TRUE(client.ok()) << client.status();
  std::vector<uint8_t> buf(4096);
  std::vector<std::span<uint8_t>> out = {buf};
  const BlockKey k = Key(7);
  int calls = 0;
  for (const absl::Time end = absl::Now() + absl::Milliseconds(1500); absl::Now() < end; ++calls) {
    absl::StatusOr<FetchResult> r = (*client)->Get("ns", {&k, 1}, out);
    if (r.ok()) {
      EXPECT_EQ(r->valid_blocks, 0u);  // nothing to read over a connection that never opens
    }
  }
  auto stub = v1::KvHub::NewStub(grpc::CreateChannel(shard->grpc_address(), grpc::InsecureChannelCredentials()));
  grpc::ClientContext cc;
  v1::StatsResponse st;
  ASSERT_TRUE(stub->Stats(&cc, v1::StatsRequest(), &st).ok());
  EXPECT_EQ(st.ucx_sessions(), 0u);
  EXPECT_GE(st.ucx_connections(), 1u) << "the client never tried";
  EXPECT_LE(st.ucx_connections(), 10u) << calls << " calls in 1.5 s left " << st.ucx_connections()
                                        << " unwatched connections on the shard";
}

// In auto mode the same shard is served over gRPC meanwhile; before session 30 that
// went unsaid (TransportStats said "not connected yet" for ever, nothing logged)
// while the client sent a Connect about once a second for as long as it ran. After
// five failed sessions in a row it falls back as it does for any other reason: says
// so, and offers UCX again after ucx_retry_interval.
TEST(UcxClientTest, AutoFallsBackToGrpcAndSaysSoWhenSessionsKeepFailing) {
  // Shared memory: where auto would use UCX (over tcp alone it keeps gRPC by design).
  auto shard = StartShard({"--ucx_tls=posix,cma", "--ucx_session_grace_ms=600000"});
  ASSERT_NE(shard, nullptr);
  ScopedChannelFaults<MisdirectSessions> faults;
  ClientConfig cfg = Config(*shard, TransportMode::kAuto, "posix,cma");
  cfg.ucx_retry_interval = absl::Minutes(10);
  uint64_t seed = 8100;
  auto client = Client::Create(cfg);
  ASSERT_TRUE(client.ok()) << client.status();
  std::string transport;
  for (const absl::Time end = absl::Now() + absl::Seconds(8); absl::Now() < end;) {
    PutGetByteExact(**client, "ns", {4096}, ++seed);  // served over gRPC all along
    transport = (*client)->TransportStats().at(0).transport;
    if (absl::StartsWith(transport, "grpc (fallback")) break;
    absl::SleepFor(absl::Milliseconds(20));
  }
  EXPECT_THAT(transport, ::testing::HasSubstr("UCX connects in a row failed")) << transport;
  auto stub = v1::KvHub::NewStub(grpc::CreateChannel(shard->grpc_address(), grpc::InsecureChannelCredentials()));
  auto connections = [&] {
    grpc::ClientContext cc;
    v1::StatsResponse st;
    EXPECT_TRUE(stub->Stats(&cc, v1::StatsRequest(), &st).ok());
    return st.ucx_connections();
  };
  const uint64_t after_fallback = connections();
  EXPECT_LE(after_fallback, 5u);
  for (const absl::Time end = absl::Now() + absl::Milliseconds(1500); absl::Now() < end;) {
    PutGetByteExact(**client, "ns", {4096}, ++seed);
  }
  EXPECT_EQ(connections(), after_fallback) << "the client kept connecting after it fell back";
}

// A Connect whose worker address names an unknown format version is refused:
// UCX 1.13 aborted the shard on it (ucp_address_unpack assertion), losing its
// cache. (UCX still trusts the rest of an address: docs/protocol.md.)
TEST(UcxClientTest, AConnectWithAnAddressOfAnUnknownFormatIsRefusedAndTheShardServes) {
  auto shard = StartShard({"--ucx_tls=tcp"});
  ASSERT_NE(shard, nullptr);
  auto client = Client::Create(Config(*shard, TransportMode::kGrpc));
  ASSERT_TRUE(client.ok());
  PutGetByteExact(**client, "ns", {4096}, 71);
  for (const std::string& address : {std::string(100, 'x'), std::string("\x0f") + std::string(63, '\0')}) {
    const grpc::Status st = ConnectRaw(*shard, address);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << st.error_message();
    EXPECT_NE(st.error_message().find("not a UCX worker address"), std::string::npos) << st.error_message();
  }
  PutGetByteExact(**client, "ns", {4096}, 72);  // still serving
}

// A client older than UCX wire version 2 (it does not put the connection key in
// its request headers) is refused at Connect with the reason, so it uses gRPC
// instead of timing out on requests the shard would drop. A current client gets
// a non-zero key.
TEST(UcxClientTest, AConnectFromAClientWithoutConnectionKeysIsRefused) {
  auto shard = StartShard({"--ucx_tls=tcp"});
  ASSERT_NE(shard, nullptr);
  auto worker = TcpWorker::Create("old-client");
  ASSERT_TRUE(worker.ok()) << worker.status();
  for (bool sends_key : {false, true}) {
    v1::ConnectResponse resp;
    const grpc::Status st = ConnectRaw(*shard, worker->worker->address(), sends_key, &resp);
    if (!sends_key) {
      EXPECT_EQ(st.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << st.error_message();
      EXPECT_TRUE(absl::StrContains(st.error_message(), "update the client")) << st.error_message();
    } else {
      ASSERT_TRUE(st.ok()) << st.error_message();
      EXPECT_NE(resp.conn_key(), 0u);
      // Same host and namespaces: the client pins the keys' shared-memory segments.
      if (!transport::HostNamespaces().empty()) {
        EXPECT_THAT(resp.host_namespaces(), ::testing::MatchesRegex("[0-9a-f]{16}"));
      }
      EXPECT_EQ(resp.host_namespaces(), transport::HostNamespaces());
    }
  }
}

// The shard's UCX port takes requests from whoever reaches it. One that names a
// live connection with the wrong key (a peer that never got Connect's reply) is
// dropped: here a lease Get over UCX, which would pin blocks of the cache, is
// never run, and the shard counts it in kvhub_ucx_unknown_conn_requests_total.
// With the key the same call is run, so the key is what refuses it.
TEST(UcxClientTest, UcxCallsWithoutTheConnectionKeyAreNotRun) {
  auto shard = StartShard({"--ucx_tls=tcp"});
  ASSERT_NE(shard, nullptr);
  auto client = Client::Create(Config(*shard, TransportMode::kGrpc));
  ASSERT_TRUE(client.ok());
  PutGetByteExact(**client, "ns", {4096}, 81);
  auto owner = TcpWorker::Create("key-owner");
  ASSERT_TRUE(owner.ok()) << owner.status();
  v1::ConnectResponse conn;
  ASSERT_TRUE(ConnectRaw(*shard, owner->worker->address(), /*sends_key=*/true, &conn).ok());
  auto intruder = TcpWorker::Create("intruder");
  ASSERT_TRUE(intruder.ok()) << intruder.status();
  v1::GetRequest get;
  get.set_namespace_("ns");
  std::string key(16, '\0');
  Key(81000).ToBytes(reinterpret_cast<uint8_t*>(key.data()));
  get.set_keys(key);
  httplib::Client http("127.0.0.1", shard->http_port());
  const auto metric = [&](const std::string& line) {
    auto metrics = http.Get("/metrics");
    return metrics && absl::StrContains(metrics->body, line);
  };
  auto wrong = intruder->worker->Connect(
      {conn.worker_address(), {}, {conn.conn_id(), conn.conn_key() ^ 0x8000000000000000ull}});
  ASSERT_TRUE(wrong.ok()) << wrong.status();
  absl::StatusOr<std::string> r =
      intruder->worker->CallPeer(*wrong, v1::UCX_CALL_GET, get.SerializeAsString(), absl::Milliseconds(500));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded) << r.status();
  EXPECT_TRUE(metric("kvhub_ucx_unknown_conn_requests_total 1\n"));
  EXPECT_FALSE(metric("kvhub_rpc_requests_total{method=\"UcxGet\""));

  // With the key the call runs (its answer goes to the connection's owner).
  auto right = intruder->worker->Connect({conn.worker_address(), {}, {conn.conn_id(), conn.conn_key()}});
  ASSERT_TRUE(right.ok()) << right.status();
  r = intruder->worker->CallPeer(*right, v1::UCX_CALL_GET, get.SerializeAsString(), absl::Milliseconds(500));
  EXPECT_EQ(r.status().code(), absl::StatusCode::kDeadlineExceeded) << r.status();
  EXPECT_TRUE(metric("kvhub_rpc_requests_total{method=\"UcxGet\",code=\"OK\"} 1\n"));
  EXPECT_TRUE(metric("kvhub_ucx_unknown_conn_requests_total 1\n"));
}

// The first child of `parent` whose name (comm) is `name`; 0 if none appears within 5 s.
pid_t ChildNamed(pid_t parent, const std::string& name) {
  for (int i = 0; i < 500; ++i) {
    std::ifstream children("/proc/" + std::to_string(parent) + "/task/" + std::to_string(parent) + "/children");
    pid_t child = 0;
    while (children >> child) {
      std::ifstream comm("/proc/" + std::to_string(child) + "/comm");
      std::string c;
      if (std::getline(comm, c) && c == name) return child;
    }
    absl::SleepFor(absl::Milliseconds(10));
  }
  return 0;
}

// kvhubd tries each client's worker address in a probe process before its own
// worker gets it (ucx_vet_addresses; transport/ucx_address_vetter.h). A probe that
// hangs (here: stopped) gets the address refused; a vetting process that is gone
// makes Connect fail, so clients use gRPC; the shard serves throughout.
TEST(UcxClientTest, KvhubdVetsClientAddressesInAProbeProcess) {
  auto shard = StartShard({"--ucx_tls=tcp"});
  ASSERT_NE(shard, nullptr);
  const pid_t vetting = ChildNamed(shard->pid(), "kvhub-ucx-vet");
  ASSERT_GT(vetting, 0) << "no vetting process under kvhubd";
  {
    auto ucx = Client::Create(Config(*shard, TransportMode::kUcx));
    ASSERT_TRUE(ucx.ok()) << ucx.status();
    PutGetByteExact(**ucx, "ns", {65536}, 81);  // a vetted address: UCX serves
  }
  auto worker = TcpWorker::Create("vet-test");
  ASSERT_TRUE(worker.ok()) << worker.status();

  const pid_t probe = ChildNamed(vetting, "kvhub-ucx-probe");
  ASSERT_GT(probe, 0) << "no probe process ready";
  ASSERT_EQ(kill(probe, SIGSTOP), 0);  // as a probe stuck inside UCX would be
  grpc::Status st = ConnectRaw(*shard, worker->worker->address());
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << st.error_message();
  EXPECT_NE(st.error_message().find("did not finish within 5s in a probe process"), std::string::npos)
      << st.error_message();
  httplib::Client http("127.0.0.1", shard->http_port());
  auto metrics = http.Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_NE(metrics->body.find("kvhub_ucx_refused_addresses_total 1\n"), std::string::npos);

  ASSERT_EQ(kill(vetting, SIGKILL), 0);
  st = ConnectRaw(*shard, worker->worker->address());
  EXPECT_EQ(st.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << st.error_message();
  EXPECT_NE(st.error_message().find("vetter is gone"), std::string::npos) << st.error_message();
  auto fallback = Client::Create(Config(*shard, TransportMode::kAuto));
  ASSERT_TRUE(fallback.ok()) << fallback.status();
  PutGetByteExact(**fallback, "ns", {65536}, 82);  // over gRPC now
  EXPECT_TRUE(shard->running());
}

// Addresses are vetted one at a time, so a Connect can wait seconds behind another
// caller's hung probe. A caller that gave up meanwhile (its deadline passed) gets no
// connection: nothing would watch it, and it would hold a slot until the grace.
TEST(UcxClientTest, AConnectWhoseCallerGaveUpDuringVettingMakesNoConnection) {
  auto shard = StartShard({"--ucx_tls=tcp", "--ucx_session_grace_ms=600000"});
  ASSERT_NE(shard, nullptr);
  const pid_t vetting = ChildNamed(shard->pid(), "kvhub-ucx-vet");
  ASSERT_GT(vetting, 0) << "no vetting process under kvhubd";
  const pid_t probe = ChildNamed(vetting, "kvhub-ucx-probe");
  ASSERT_GT(probe, 0) << "no probe process ready";
  auto hung = TcpWorker::Create("hangs-the-probe");
  auto late = TcpWorker::Create("gives-up");
  ASSERT_TRUE(hung.ok() && late.ok());
  ASSERT_EQ(kill(probe, SIGSTOP), 0);  // the first address hangs its probe for 5 s
  std::thread first([&] {
    const grpc::Status st = ConnectRaw(*shard, hung->worker->address());
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << st.error_message();
  });
  absl::SleepFor(absl::Milliseconds(300));
  {
    auto stub = v1::KvHub::NewStub(grpc::CreateChannel(shard->grpc_address(), grpc::InsecureChannelCredentials()));
    grpc::ClientContext cc;
    cc.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(1));
    v1::ConnectRequest req;
    req.set_sends_conn_key(true);
    req.set_worker_address(late->worker->address());
    req.set_client_name("gives-up");
    v1::ConnectResponse resp;
    const grpc::Status st = stub->Connect(&cc, req, &resp);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::DEADLINE_EXCEEDED) << st.error_message();
  }
  first.join();
  // The second address is vetted (by a fresh probe) once the first is refused;
  // the shard must then see that its caller is gone.
  auto stub = v1::KvHub::NewStub(grpc::CreateChannel(shard->grpc_address(), grpc::InsecureChannelCredentials()));
  for (int i = 0; i < 60; ++i) {  // vetting the second address takes ~20 ms; slack for a loaded machine
    absl::SleepFor(absl::Milliseconds(100));
    grpc::ClientContext cc;
    v1::StatsResponse st;
    ASSERT_TRUE(stub->Stats(&cc, v1::StatsRequest(), &st).ok());
    ASSERT_EQ(st.ucx_connections(), 0u) << "a connection was made for a caller that had given up";
  }
  EXPECT_TRUE(shard->running());
}

// The TCP sockets process `pid` listens on: {local address as /proc/net/tcp[6]
// prints it (hex, in the kernel's byte order), port}, from the LISTEN sockets of
// its network namespace whose inode is one of its descriptors.
std::vector<std::pair<std::string, uint16_t>> ListeningSocketsOf(pid_t pid) {
  const std::string proc = absl::StrCat("/proc/", pid);
  std::set<std::string> inodes;
  for (const auto& e : std::filesystem::directory_iterator(proc + "/fd")) {
    std::error_code ec;
    const std::string target = std::filesystem::read_symlink(e.path(), ec).string();
    if (!ec && absl::StartsWith(target, "socket:[")) inodes.insert(target.substr(8, target.size() - 9));
  }
  std::vector<std::pair<std::string, uint16_t>> out;
  for (const char* table : {"/net/tcp", "/net/tcp6"}) {
    std::ifstream in(proc + table);
    std::string line;
    std::getline(in, line);  // header
    while (std::getline(in, line)) {
      std::vector<std::string> f = absl::StrSplit(line, ' ', absl::SkipEmpty());
      if (f.size() < 10 || f[3] != "0A" || !inodes.contains(f[9])) continue;  // 0A: LISTEN
      const size_t colon = f[1].rfind(':');
      out.emplace_back(f[1].substr(0, colon),
                       static_cast<uint16_t>(std::stoul(f[1].substr(colon + 1), nullptr, 16)));
    }
  }
  return out;
}

std::vector<uint16_t> ListeningPortsOfThisProcess() {
  std::vector<uint16_t> ports;
  for (const auto& [address, port] : ListeningSocketsOf(getpid())) ports.push_back(port);
  return ports;
}

// 127.0.0.0/8, ::1 or ::ffff:127.x.y.z, as /proc/net/tcp[6] prints them on x86 (each
// 32-bit word in host byte order).
bool IsLoopbackInProcNet(const std::string& hex) {
  if (hex.size() == 8) return absl::EndsWith(hex, "7F");
  return hex == "00000000000000000000000001000000" ||
         (absl::StartsWith(hex, "0000000000000000FFFF0000") && absl::EndsWith(hex, "7F"));
}

// A shard whose gRPC port is on loopback listens for UCX's tcp transport on
// loopback only, and so does a client whose shards are all on loopback
// (ucx_net_devices=auto): anyone who reaches such a port can send it bytes UCX 1.13
// aborts on, and before, both listened on every interface.
TEST(UcxClientTest, ShardAndClientOnLoopbackKeepUcxTcpOnLoopback) {
  auto shard = StartShard({"--ucx_tls=tcp"});
  ASSERT_NE(shard, nullptr);
  const auto sockets = ListeningSocketsOf(shard->pid());
  EXPECT_GE(sockets.size(), 3u) << "gRPC, HTTP and at least one UCX tcp listener";
  for (const auto& [address, port] : sockets) {
    EXPECT_TRUE(IsLoopbackInProcNet(address)) << "kvhubd listens on " << address << ":" << port;
  }
  const auto before = ListeningSocketsOf(getpid());
  auto ucx = Client::Create(Config(*shard, TransportMode::kUcx));
  ASSERT_TRUE(ucx.ok()) << ucx.status();
  PutGetByteExact(**ucx, "ns", {65536}, 84);
  int added = 0;
  for (const auto& socket : ListeningSocketsOf(getpid())) {
    if (absl::c_linear_search(before, socket)) continue;
    ++added;
    EXPECT_TRUE(IsLoopbackInProcNet(socket.first)) << "the client listens on " << socket.first << ":" << socket.second;
  }
  EXPECT_GE(added, 1) << "the client's UCX tcp listener";
}

// A well-formed worker address whose tcp ports point at a listener that is not
// UCX (here: one that answers anything with an HTTP error, as a web server would).
// UCX 1.13 aborts the process whose endpoint reads that reply; kvhubd's probe
// process waits for the endpoint's wire-up, so the probe dies, not the shard.
TEST(UcxClientTest, KvhubdRefusesAnAddressThatPointsAtANonUcxListener) {
  const int listener = socket(AF_INET, SOCK_STREAM, 0);
  ASSERT_GE(listener, 0);
  sockaddr_in sa{};
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(bind(listener, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)), 0);
  ASSERT_EQ(listen(listener, 64), 0);
  socklen_t len = sizeof(sa);
  ASSERT_EQ(getsockname(listener, reinterpret_cast<sockaddr*>(&sa), &len), 0);
  const uint16_t http_port = ntohs(sa.sin_port);
  std::thread web([listener] {
    for (;;) {
      const int c = accept(listener, nullptr, nullptr);
      if (c < 0) return;  // shut down
      char buf[4096];
      (void)!read(c, buf, sizeof(buf));
      const char reply[] = "HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
      (void)!write(c, reply, sizeof(reply) - 1);
      close(c);
    }
  });

  const std::vector<uint16_t> before = ListeningPortsOfThisProcess();
  auto worker = TcpWorker::Create("forger");
  ASSERT_TRUE(worker.ok()) << worker.status();
  std::string forged = worker->worker->address();
  int replaced = 0;
  for (uint16_t port : ListeningPortsOfThisProcess()) {
    if (absl::c_linear_search(before, port)) continue;
    const char be[2] = {static_cast<char>(port >> 8), static_cast<char>(port & 0xFF)};
    for (size_t at = forged.find(std::string_view(be, 2)); at != std::string::npos;
         at = forged.find(std::string_view(be, 2), at + 2)) {
      forged[at] = static_cast<char>(http_port >> 8);
      forged[at + 1] = static_cast<char>(http_port & 0xFF);
      ++replaced;
    }
  }
  ASSERT_GT(replaced, 0) << "the worker's listening port is not in its address";

  auto shard = StartShard({"--ucx_tls=tcp"});
  ASSERT_NE(shard, nullptr);
  grpc::Status st = ConnectRaw(*shard, forged);
  EXPECT_TRUE(st.error_code() == grpc::StatusCode::INVALID_ARGUMENT ||
              st.error_code() == grpc::StatusCode::FAILED_PRECONDITION)
      << st.error_code() << " " << st.error_message();
  EXPECT_NE(st.error_message().find("in a probe process"), std::string::npos) << st.error_message();
  const grpc::StatusCode first = st.error_code();
  shutdown(listener, SHUT_RDWR);
  close(listener);
  web.join();
  // Nothing listens there now: the shard's own worker says so.
  st = ConnectRaw(*shard, forged);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << st.error_message();

  // The shard serves on, over UCX to a real client too.
  absl::SleepFor(absl::Milliseconds(500));  // where a shard that took the address died
  ASSERT_TRUE(shard->running());
  auto ucx = Client::Create(Config(*shard, TransportMode::kUcx));
  ASSERT_TRUE(ucx.ok()) << ucx.status();
  PutGetByteExact(**ucx, "ns", {65536}, 83);
  httplib::Client http("127.0.0.1", shard->http_port());
  auto metrics = http.Get("/metrics");
  ASSERT_TRUE(metrics);
  // Refused as harmful (a crashed probe) or as unreachable: counted as what it was.
  const bool crashed = first == grpc::StatusCode::INVALID_ARGUMENT;
  EXPECT_TRUE(absl::StrContains(metrics->body, absl::StrCat("kvhub_ucx_refused_addresses_total ", crashed ? 1 : 0, "\n")))
      << metrics->body;
  EXPECT_TRUE(absl::StrContains(metrics->body, absl::StrCat("kvhub_ucx_unreachable_addresses_total ", crashed ? 0 : 1, "\n")))
      << metrics->body;
}

TEST(UcxClientTest, ClientKilledMidTransferLeavesTheShardServing) {
  auto shard = StartShard({"--ucx_tls=tcp", "--max_lease_ms=600000"});
  ASSERT_NE(shard, nullptr);
  auto client = Client::Create(Config(*shard, TransportMode::kUcx));
  ASSERT_TRUE(client.ok());
  const size_t kSize = 32 << 20;
  const std::vector<uint8_t> data = Payload(9, kSize);
  const BlockKey key = Key(9);
  BlockPut put{key, std::nullopt, data, false};
  ASSERT_EQ((*client)->Put("ns", {&put, 1})->stored, 1u);

  const pid_t pid = StartReader(*shard, key, kSize, "tcp");
  ASSERT_GT(pid, 0);
  absl::SleepFor(absl::Milliseconds(30));  // mid-transfer: it reads 32 MiB in a loop
  ASSERT_EQ(kill(pid, SIGKILL), 0);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_TRUE(WIFSIGNALED(status));

  // The shard keeps serving, over UCX too.
  std::vector<uint8_t> buf(kSize);
  std::span<uint8_t> dest(buf);
  for (int i = 0; i < 3; ++i) {
    auto got = (*client)->Get("ns", {&key, 1}, {&dest, 1});
    ASSERT_TRUE(got.ok());
    ASSERT_TRUE(got->status[0].ok()) << got->status[0];
    EXPECT_TRUE(buf == data);
  }
  EXPECT_TRUE(shard->running());
  // The dead reader's lease (2 s) runs out and its memory is reclaimed.
  const absl::Time until = absl::Now() + absl::Seconds(10);
  uint64_t leased = 1;
  while (absl::Now() < until) {
    auto st = (*client)->Stats();
    ASSERT_TRUE(st[0].stats.ok());
    leased = st[0].stats->tiers(0).leased_blocks();
    if (leased == 0) break;
    absl::SleepFor(absl::Milliseconds(100));
  }
  EXPECT_EQ(leased, 0u);
  client->reset();  // close our connections so the shard's drain does not wait for them
  EXPECT_EQ(shard->Stop().value_or(-1), 0);
}

}  // namespace
}  // namespace kvhub
