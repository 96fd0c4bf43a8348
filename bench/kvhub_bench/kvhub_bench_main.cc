// kvhub-bench: service throughput of kvhub (through kvhub::Client) and of a
// redis-server baseline, same payloads and concurrency, in one run
// (docs/results-service.md, docs/client.md).
//
//   kvhub-bench [--addr H:P | --members A,B | --spawn N] [--concurrency 4] [--seconds 1]
//               [--sizes 64KiB,256KiB,1MiB,4MiB,16MiB] [--batches 1,16,64,256,1024]
//               [--get-modes inline,stream] [--put-paths inline,reserved] [--get-blocks 1] [--channels 2]
//               [--get-working-set BLOCKS]
//               [--no-redis] [--json PATH|-] [--kvhubd PATH] [--kvhubd-flags "a b"]
//               [--redis-server /usr/bin/redis-server]
//               [--transport grpc|ucx|both] [--ucx-tls "tcp;posix,cma"] [--no-perftest]
//               [--no-ucx-calls]
//
// --transport ucx|both adds, per UCX_TLS in --ucx-tls (';'-separated), kvhub put
// and get over the UCX data plane (transport=ucx: PutStart + UCX put + PutCommit;
// leased Get + UCX get + Release) and ucx_perftest tag_bw / ucp_get on the same
// UCX_TLS (transport/ucx_perftest_pair.sh), next to the gRPC rows and redis-server.
// With spawned shards every kvhub row also reports the shards' CPU seconds per GiB
// moved (utime+stime from /proc/<pid>/stat before and after the row).

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstdio>
#include <filesystem>
#include <functional>
#include <fstream>
#include <iostream>
#include <memory>
#include <new>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "common/log.h"
#include "common/memory_limit.h"
#include "common/malloc_tuning.h"
#include "common/mutex_checks.h"
#include "common/output_file.h"
#include "common/version.h"
#include "absl/cleanup/cleanup.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/ascii.h"
#include "bench/kvhub_bench/redis_server.h"
#include "client/client.h"
#include "nlohmann/json.hpp"
#include "spdlog/spdlog.h"
#include "tests/testing/kvhubd_process.h"
#include "tools/kvhub/cli_args.h"

namespace kvhub::bench {
namespace {

// SIGINT/SIGTERM: the running cell ends early, no other starts, and the bench
// still removes its blocks from a cluster it did not start.
std::atomic<bool> g_interrupted{false};
static_assert(std::atomic<bool>::is_always_lock_free);
extern "C" void OnInterrupt(int) { g_interrupted.store(true, std::memory_order_relaxed); }

// The first error of a cell, shown with its row (a benchmark that only counts
// errors leaves the user guessing). Thread-safe.
class CellError {
 public:
  void Note(const absl::Status& why) {
    if (why.ok()) return;
    absl::MutexLock l(&mu_);
    if (first_.ok()) first_ = why;
  }
  absl::Status Take() {
    absl::MutexLock l(&mu_);
    return std::exchange(first_, absl::OkStatus());
  }

 private:
  absl::Mutex mu_;
  absl::Status first_ ABSL_GUARDED_BY(mu_);
};

// The first error among a Put's blocks (OK if none failed).
absl::Status FirstPutError(const absl::StatusOr<PutResult>& res) {
  if (!res.ok()) return res.status();
  for (const absl::Status& e : res->errors) {
    if (!e.ok()) return e;
  }
  return absl::OkStatus();
}

constexpr char kUsage[] =
    "usage: kvhub-bench [--addr H:P | --members A,B | --spawn N] [--concurrency 4] [--seconds 1]\n"
    "                   [--sizes 64KiB,256KiB,1MiB,4MiB,16MiB] [--batches 1,16,64,256,1024]\n"
    "                   [--get-modes inline,stream] [--put-paths inline,reserved] [--get-blocks 1] [--channels 2]\n"
    "                   [--get-working-set BLOCKS]\n"
    "                   [--no-redis] [--json PATH|-] [--kvhubd PATH] [--kvhubd-flags \"a b\"]\n"
    "                   [--redis-server /usr/bin/redis-server]\n"
    "                   [--transport grpc|ucx|both] [--ucx-tls \"tcp;posix,cma\"] [--no-perftest]\n"
    "                   [--no-ucx-calls]\n"
    "Put/get GB/s per block size and lookup keys/s per batch size against kvhub, and the same\n"
    "payloads and concurrency against a redis-server it starts on a free loopback port.\n"
    "Details: docs/client.md.\n";

struct Options {
  std::vector<std::string> members;
  int spawn = 0;
  int concurrency = 4;
  double seconds = 1.0;
  std::vector<uint64_t> sizes = {64 << 10, 256 << 10, 1 << 20, 4 << 20, 16 << 20};
  std::vector<uint32_t> batches = {1, 16, 64, 256, 1024};
  std::vector<std::string> get_modes = {"inline", "stream"};
  std::vector<std::string> put_paths = {"inline", "reserved"};
  int channels = 2;
  int get_blocks = 1;  // blocks per kvhub Get call (a prefix fetch asks for many at once)
  // Distinct blocks the get cells cycle over; 0: max(get_blocks, min(max(2 x concurrency
  // x get_blocks, 64), 1 GiB / block size)), more than the CPU caches hold. A few blocks
  // make the reads cache-hot, as ucx_perftest's single buffer is.
  int get_working_set = 0;
  bool redis = true;
  std::string json;
  std::string kvhubd;
  std::vector<std::string> kvhubd_flags;
  std::string redis_server = "/usr/bin/redis-server";
  bool grpc = true, ucx = false;
  std::vector<std::string> ucx_tls = {"tcp", "posix,cma"};
  bool perftest = true;
  bool ucx_calls = true;  // UCX clients call their leases over UCX (ClientConfig::ucx_calls)
};

struct Row {
  std::string system, op, path;
  uint64_t block_bytes = 0;
  uint32_t batch = 0;
  uint64_t working_set = 0;  // get rows: distinct blocks cycled over
  int concurrency = 0;
  double seconds = 0;
  uint64_t ops = 0, bytes = 0, keys = 0, errors = 0;
  absl::Status first_error;  // of the `errors`
  double shard_cpu_s = -1;  // CPU seconds of the spawned shards during the row; -1 unknown
  double cpu_s_per_gib() const { return shard_cpu_s >= 0 && bytes > 0 ? shard_cpu_s / (bytes / 1073741824.0) : -1; }
  double gbps() const { return seconds > 0 ? bytes / seconds / 1e9 : 0; }
  double ops_per_s() const { return seconds > 0 ? ops / seconds : 0; }
  double keys_per_s() const { return seconds > 0 ? keys / seconds : 0; }
};

std::string Human(uint64_t b) {
  if (b >= (1 << 20) && b % (1 << 20) == 0) return absl::StrCat(b >> 20, "MiB");
  if (b >= 1024 && b % 1024 == 0) return absl::StrCat(b >> 10, "KiB");
  return absl::StrCat(b, "B");
}

absl::StatusOr<uint64_t> ParseSize(absl::string_view s) {
  const absl::string_view given = s;
  uint64_t mult = 1;
  for (auto [suf, m] : std::vector<std::pair<std::string, uint64_t>>{
           {"GiB", 1ull << 30}, {"MiB", 1ull << 20}, {"KiB", 1ull << 10}, {"B", 1}}) {
    if (absl::EndsWith(s, suf)) {
      s.remove_suffix(suf.size());
      mult = m;
      break;
    }
  }
  uint64_t v;
  if (!absl::SimpleAtoi(s, &v) || v == 0 || v > UINT64_MAX / mult) {
    return absl::InvalidArgumentError(absl::StrCat("bad size '", given, "' (a whole number of B, KiB, MiB or GiB)"));
  }
  return v * mult;
}

// Distinct blocks the get cells of `size`-byte blocks cycle over: --get-working-set,
// or by default 2 x the blocks in flight (at least 64), at most 1 GiB (half the
// spawned shard's default capacity; was 2 x in flight alone: 2 GiB of 4 MiB
// blocks at --get-blocks 64 did not fit), never fewer than one call's blocks.
size_t WorkingSetBlocks(const Options& o, uint64_t size) {
  if (o.get_working_set > 0) return static_cast<size_t>(o.get_working_set);
  const size_t n = static_cast<size_t>(o.concurrency), b = static_cast<size_t>(o.get_blocks);
  return std::max<size_t>(b, std::min<size_t>(std::max<size_t>(2 * n * b, 64), (1ull << 30) / size));
}

// redis-server's memory when the run has no spawned shard to match (--addr,
// --members): the capacity the bench gives a shard it spawns.
constexpr uint64_t kDefaultRedisMaxmemory = 2ull << 30;

// redis-server's --maxmemory: a kvhub shard's host-tier capacity (`shard_capacity`;
// 0: kDefaultRedisMaxmemory), raised where the largest get working set would not
// fit, so that redis GETs never miss: redis keeps a value in an allocation up to
// ~25% larger than it (jemalloc size classes) plus ~100 bytes of key and entry,
// and each connection buffers a call's values (a SET's, an MGET's).
uint64_t RedisMaxmemory(const Options& o, uint64_t shard_capacity) {
  uint64_t bytes = shard_capacity > 0 ? shard_capacity : kDefaultRedisMaxmemory;
  const uint64_t conns = static_cast<uint64_t>(o.concurrency);
  const uint64_t per_call = static_cast<uint64_t>(o.get_blocks) + 1;
  for (uint64_t size : o.sizes) {
    const uint64_t w = WorkingSetBlocks(o, size);
    const uint64_t need = w * (size / 2 * 3 + 256) + 2 * conns * per_call * size + (64ull << 20);
    bytes = std::max(bytes, need);
  }
  return bytes;
}

// Runs body(thread, iteration) on `threads` threads for `seconds`; body
// returns bytes moved (or -1 for an error). Returns a filled Row. First, untimed
// and uncounted, one call per thread at once (iteration 0), for every system
// alike: connections made lazily (gRPC channels, UCX endpoints) are made and
// warmed outside the timed window, as the redis connections made beforehand are.
// What the warm-up noted in `errors` is dropped: the timed calls report their own.
// `on_start` runs between the two (to read counters the row covers).
template <typename Body>
Row Drive(int threads, double seconds, CellError& errors_noted, Body body,
          const std::function<void()>& on_start = nullptr) {
  {
    std::vector<std::thread> warm;
    for (int t = 0; t < threads; ++t) warm.emplace_back([&body, t] { (void)body(t, 0); });
    for (auto& th : warm) th.join();
    (void)errors_noted.Take();
  }
  if (on_start != nullptr) on_start();
  std::atomic<uint64_t> ops{0}, bytes{0}, errors{0};
  std::atomic<bool> stop{false};
  std::vector<std::thread> ts;
  const auto start = std::chrono::steady_clock::now();
  for (int t = 0; t < threads; ++t) {
    ts.emplace_back([&, t] {
      uint64_t my_ops = 0, my_bytes = 0, my_err = 0;
      for (uint64_t i = 0; !stop.load(std::memory_order_relaxed); ++i) {
        const int64_t n = body(t, i);
        if (n < 0) {
          ++my_err;
        } else {
          ++my_ops;
          my_bytes += static_cast<uint64_t>(n);
        }
      }
      ops += my_ops;
      bytes += my_bytes;
      errors += my_err;
    });
  }
  const auto end = start + std::chrono::duration_cast<std::chrono::steady_clock::duration>(
                               std::chrono::duration<double>(seconds));
  while (std::chrono::steady_clock::now() < end && !g_interrupted.load(std::memory_order_relaxed)) {
    std::this_thread::sleep_until(std::min(end, std::chrono::steady_clock::now() + std::chrono::milliseconds(50)));
  }
  stop = true;
  for (auto& t : ts) t.join();
  Row r;
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  r.ops = ops;
  r.bytes = bytes;
  r.errors = errors;
  r.concurrency = threads;
  return r;
}

// Page-aligned buffers, as serving engines hand them over (tensors, pinned
// pages). A destination only 16-byte aligned (plain malloc) copies and hashes
// 7-20% slower (docs/client.md, "Buffers").
template <typename T>
struct PageAlignedAllocator {
  using value_type = T;
  PageAlignedAllocator() = default;
  template <typename U>
  PageAlignedAllocator(const PageAlignedAllocator<U>&) {}
  T* allocate(size_t n) {
    void* p = std::aligned_alloc(4096, (n * sizeof(T) + 4095) / 4096 * 4096);
    if (p == nullptr) throw std::bad_alloc();
    return static_cast<T*>(p);
  }
  void deallocate(T* p, size_t) { std::free(p); }
  bool operator==(const PageAlignedAllocator&) const { return true; }
};
using Buffer = std::vector<uint8_t, PageAlignedAllocator<uint8_t>>;

std::vector<uint8_t> RandomBytes(size_t n, uint64_t seed) {
  std::vector<uint8_t> v(n);
  std::mt19937_64 rng(seed);
  for (size_t i = 0; i + 8 <= n; i += 8) {
    const uint64_t x = rng();
    std::memcpy(v.data() + i, &x, 8);
  }
  return v;
}

// utime + stime of a process in seconds (/proc/<pid>/stat fields 14, 15); -1 if unreadable.
double ProcessCpuSeconds(pid_t pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/stat"));
  std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const size_t paren = text.rfind(')');  // the command name may contain spaces
  if (paren == std::string::npos) return -1;
  std::vector<std::string> f = absl::StrSplit(text.substr(paren + 2), ' ');
  uint64_t ut = 0, st = 0;  // fields 14, 15 are f[11], f[12] after "pid (comm) "
  if (f.size() < 13 || !absl::SimpleAtoi(f[11], &ut) || !absl::SimpleAtoi(f[12], &st)) return -1;
  return static_cast<double>(ut + st) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

// kvhub over the UCX data plane with UCX_TLS `tls` (transport=ucx: no gRPC fallback).
std::unique_ptr<Client> MakeUcxClient(const Options& o, const std::string& tls) {
  ClientConfig cfg;
  for (const std::string& m : o.members) cfg.members.push_back({m, 1.0});
  cfg.concurrency = std::max(2, o.concurrency);
  cfg.channels_per_member = o.channels;
  cfg.transport = TransportMode::kUcx;
  cfg.ucx_tls = tls;
  cfg.ucx_calls = o.ucx_calls;
  cfg.ApplySecurityEnvironment();
  absl::StatusOr<std::unique_ptr<Client>> c = Client::Create(cfg);
  if (!c.ok()) {
    std::cerr << "kvhub-bench: " << c.status() << "\n";
    return nullptr;
  }
  return *std::move(c);
}

// Null (the reason printed) if the client cannot be made.
std::unique_ptr<Client> MakeClient(const Options& o, absl::string_view put_path, absl::string_view get_mode) {
  ClientConfig cfg;
  cfg.transport = TransportMode::kGrpc;  // the gRPC rows: UCX rows use MakeUcxClient
  for (const std::string& m : o.members) cfg.members.push_back({m, 1.0});
  cfg.concurrency = std::max(2, o.concurrency);
  cfg.channels_per_member = o.channels;
  cfg.inline_put_max_block_bytes = put_path == "inline" ? (256ull << 20) : 0;
  cfg.max_inline_batch_bytes = 256ull << 20;
  cfg.get_mode = get_mode == "stream" ? GetMode::kStream : GetMode::kInline;
  cfg.ApplySecurityEnvironment();
  absl::StatusOr<std::unique_ptr<Client>> c = Client::Create(cfg);
  if (!c.ok()) {
    std::cerr << "kvhub-bench: " << c.status() << "\n";
    return nullptr;
  }
  return *std::move(c);
}

int Main(int argc, char** argv) {
  absl::StatusOr<cli::Args> args = cli::Args::Parse(argc, argv, {"no-redis", "no-perftest", "no-ucx-calls", "help"},
                                                            /*verbatim=*/{"kvhubd-flags"});
  if (!args.ok()) {
    std::cerr << "kvhub-bench: " << args.status().message() << "\n";
    return 2;
  }
  Options o;
  auto fail = [](absl::string_view m) {
    std::cerr << "kvhub-bench: " << m << "\n";
    return 2;
  };
  if (args->Has("help")) {
    std::cout << kUsage;
    return 0;
  }
  auto addr = args->Get("addr"), members = args->Get("members"), spawn = args->Get("spawn");
  if ((addr.has_value() + members.has_value() + spawn.has_value()) > 1) {
    return fail("give at most one of --addr, --members, --spawn");
  }
  if (addr || members) {
    auto m = ClientConfig::ParseMembers(addr ? *addr : *members);
    if (!m.ok()) return fail(m.status().message());
    for (auto& x : *m) o.members.push_back(x.address);
  } else {
    o.spawn = 1;
    if (spawn && (!absl::SimpleAtoi(*spawn, &o.spawn) || o.spawn < 1 || o.spawn > 16)) {
      return fail("--spawn must be 1..16");
    }
  }
  if (auto v = args->Get("concurrency"); v && (!absl::SimpleAtoi(*v, &o.concurrency) || o.concurrency < 1 || o.concurrency > 256)) {
    return fail("--concurrency must be 1..256");
  }
  // Written so that nan fails it too (nan ran every cell for ~1 ms and exited 0).
  if (auto v = args->Get("seconds"); v && (!absl::SimpleAtod(*v, &o.seconds) || !(o.seconds > 0 && o.seconds <= 60))) {
    return fail("--seconds must be in (0, 60]");
  }
  if (auto v = args->Get("get-blocks"); v && (!absl::SimpleAtoi(*v, &o.get_blocks) || o.get_blocks < 1 || o.get_blocks > 64)) {
    return fail("--get-blocks must be 1..64");
  }
  if (auto v = args->Get("get-working-set");
      v && (!absl::SimpleAtoi(*v, &o.get_working_set) || o.get_working_set < o.get_blocks || o.get_working_set > 65536)) {
    return fail("--get-working-set must be --get-blocks..65536 (blocks)");
  }
  if (auto v = args->Get("channels"); v && (!absl::SimpleAtoi(*v, &o.channels) || o.channels < 1 || o.channels > 64)) {
    return fail("--channels must be 1..64");
  }
  if (auto v = args->Get("sizes")) {
    o.sizes.clear();
    for (absl::string_view s : absl::StrSplit(*v, ',', absl::SkipEmpty())) {
      auto n = ParseSize(s);
      if (!n.ok()) return fail(absl::StrCat("--sizes: ", n.status().message()));
      if (*n > (256ull << 20)) return fail(absl::StrCat("--sizes: '", s, "' is larger than a block can be (256MiB)"));
      o.sizes.push_back(*n);
    }
    if (o.sizes.empty()) return fail("--sizes names no size");
  }
  {  // every worker holds a payload and a get buffer of --get-blocks blocks, at once
    const uint64_t largest = *std::max_element(o.sizes.begin(), o.sizes.end());
    const long double need = static_cast<long double>(o.concurrency) * (o.get_blocks + 1) * largest;
    const MemoryLimit limit = ReadMemoryLimit();
    if (limit.bytes > 0 && need > limit.bytes / 2.0L) {
      return fail(absl::StrFormat(
          "--concurrency %d x (--get-blocks %d + 1) x %d-byte blocks needs %.1f GiB of buffers, more than half "
          "of the %s this process may use (%s)",
          o.concurrency, o.get_blocks, largest, static_cast<double>(need) / (1ull << 30),
          HumanBytes(limit.bytes), limit.source));
    }
  }
  if (auto v = args->Get("batches")) {
    o.batches.clear();
    for (absl::string_view s : absl::StrSplit(*v, ',', absl::SkipEmpty())) {
      uint32_t b;
      if (!absl::SimpleAtoi(s, &b) || b < 1 || b > 4096) return fail("--batches: each 1..4096");
      o.batches.push_back(b);
    }
    if (o.batches.empty()) return fail("--batches names no batch size");
  }
  if (auto v = args->Get("get-modes")) o.get_modes = absl::StrSplit(*v, ',', absl::SkipEmpty());
  if (auto v = args->Get("put-paths")) o.put_paths = absl::StrSplit(*v, ',', absl::SkipEmpty());
  for (const auto& m : o.get_modes) if (m != "inline" && m != "stream") return fail("--get-modes: inline|stream");
  for (const auto& m : o.put_paths) if (m != "inline" && m != "reserved") return fail("--put-paths: inline|reserved");
  o.redis = !args->Has("no-redis");
  o.json = args->Get("json").value_or("");
  if (!o.json.empty()) {  // before the run, not after it
    if (absl::Status s = CheckOutputPath(o.json); !s.ok()) return fail(absl::StrCat("--json: ", s.message()));
  }
  o.kvhubd = args->Get("kvhubd").value_or("");
  if (auto v = args->Get("kvhubd-flags")) o.kvhubd_flags = absl::StrSplit(*v, ' ', absl::SkipEmpty());
  else o.kvhubd_flags = {"--capacity_bytes=2GiB", "--try_hugepages=false", "--log_level=warn"};
  o.redis_server = args->Get("redis-server").value_or(o.redis_server);
  if (auto v = args->Get("transport")) {
    if (*v == "grpc") {
      o.grpc = true, o.ucx = false;
    } else if (*v == "ucx") {
      o.grpc = false, o.ucx = true;
    } else if (*v == "both") {
      o.grpc = true, o.ucx = true;
    } else {
      return fail("--transport: grpc|ucx|both");
    }
  }
  if (auto v = args->Get("ucx-tls")) o.ucx_tls = absl::StrSplit(*v, ';', absl::SkipEmpty());
  if (o.ucx && o.ucx_tls.empty()) return fail("--ucx-tls: give at least one UCX_TLS value");
  // Flags the run would ignore are refused, not silently dropped (a run without the
  // rows they ask for looks like a measurement of them).
  for (const char* f : {"ucx-tls", "no-perftest", "no-ucx-calls"}) {
    if (!o.ucx && args->Has(f)) return fail(absl::StrCat("--", f, " needs --transport ucx or both"));
  }
  for (const char* f : {"get-modes", "put-paths"}) {
    if (!o.grpc && args->Has(f)) return fail(absl::StrCat("--", f, " needs --transport grpc or both"));
  }
  for (const char* f : {"kvhubd", "kvhubd-flags"}) {
    if (o.spawn == 0 && args->Has(f)) return fail(absl::StrCat("--", f, " is for --spawn (no shard is started here)"));
  }
  if (!o.redis && args->Has("redis-server")) return fail("--redis-server with --no-redis");
  if (o.grpc && o.get_modes.empty()) return fail("--get-modes names no mode");
  if (o.grpc && o.put_paths.empty()) return fail("--put-paths names no path");
  // Each row once: a second one of a kind would never be compared (ratios take the first).
  auto duplicated = [](auto list) {
    std::sort(list.begin(), list.end());
    return std::adjacent_find(list.begin(), list.end()) != list.end();
  };
  if (duplicated(o.sizes)) return fail("--sizes names a size twice");
  if (duplicated(o.batches)) return fail("--batches names a batch size twice");
  if (duplicated(o.get_modes)) return fail("--get-modes names a mode twice");
  if (duplicated(o.put_paths)) return fail("--put-paths names a path twice");
  if (duplicated(o.ucx_tls)) return fail("--ucx-tls names a UCX_TLS value twice");
  o.perftest = !args->Has("no-perftest");
  o.ucx_calls = !args->Has("no-ucx-calls");
  if (o.ucx && o.spawn > 0) {
    // The shard must allow every TLS the client rows use (shared memory is opt-in on kvhubd).
    std::string all;
    for (const std::string& t : o.ucx_tls) absl::StrAppend(&all, all.empty() ? "" : ",", t);
    o.kvhubd_flags.push_back(absl::StrCat("--ucx_tls=", all));
  }
  if (absl::Status s = args->CheckAllUsed(); !s.ok()) return fail(s.message());
  if (!args->positional().empty()) return fail(absl::StrCat("unexpected argument '", args->positional()[0], "'"));

  // Start what we own.
  std::vector<std::unique_ptr<testing::KvhubdProcess>> shards;
  if (o.spawn > 0) {
    std::string bin = o.kvhubd;
    if (bin.empty()) bin = (std::filesystem::read_symlink("/proc/self/exe").parent_path() / "kvhubd").string();
    for (int i = 0; i < o.spawn; ++i) {
      testing::KvhubdProcessOptions po;
      po.binary = bin;
      po.flags = o.kvhubd_flags;
      po.node_id = absl::StrCat("bench-", i);
      auto p = testing::KvhubdProcess::Start(po);
      if (!p.ok()) {
        std::cerr << "kvhub-bench: cannot start kvhubd (" << bin << "): " << p.status() << "\n";
        return 1;
      }
      o.members.push_back((*p)->grpc_address());
      shards.push_back(*std::move(p));
    }
  }
  // Every member must answer before any cell runs: a table of failed operations
  // measures nothing.
  // The host-tier capacity of the smallest spawned shard (its Stats: whatever
  // --kvhubd-flags set), which bounds redis-server's memory as well; 0 unknown.
  uint64_t shard_capacity = 0;
  {
    std::unique_ptr<Client> probe = MakeClient(o, "inline", "inline");
    if (probe == nullptr) return 1;
    if (absl::Status up = probe->CheckMembersAnswer(); !up.ok()) {
      std::cerr << "kvhub-bench: " << up << "\n";
      return 1;
    }
    if (o.spawn > 0 && o.redis) {
      for (const MemberStats& m : probe->Stats()) {
        if (!m.stats.ok()) continue;
        for (const auto& tier : m.stats->tiers()) {
          if (tier.tier() != "host" || tier.capacity_bytes() == 0) continue;
          if (shard_capacity == 0 || tier.capacity_bytes() < shard_capacity) shard_capacity = tier.capacity_bytes();
        }
      }
    }
  }
  std::unique_ptr<RedisServer> redis;
  uint64_t redis_maxmemory = 0;
  if (o.redis) {
    redis_maxmemory = RedisMaxmemory(o, shard_capacity);
    const uint64_t bound = shard_capacity > 0 ? shard_capacity : kDefaultRedisMaxmemory;
    if (redis_maxmemory > bound) {
      std::fprintf(stderr,
                   "kvhub-bench: redis-server --maxmemory %s, not the %s of %s, so that its get working set fits\n",
                   HumanBytes(redis_maxmemory).c_str(), HumanBytes(bound).c_str(),
                   shard_capacity > 0 ? "a spawned shard" : "the default for --addr/--members");
    }
    auto r = RedisServer::Start(o.redis_server, redis_maxmemory);
    if (!r.ok()) {
      std::cerr << "kvhub-bench: " << r.status() << " (use --no-redis to skip the baseline)\n";
      return 1;
    }
    redis = *std::move(r);
  }

  const int N = o.concurrency;
  const std::string ns = absl::StrCat("bench-", getpid(), "-", std::chrono::steady_clock::now().time_since_epoch().count());
  std::vector<Row> rows;
  std::atomic<uint64_t> key_counter{1};        // kvhub blocks: removed at the end
  std::atomic<uint64_t> redis_key_counter{1};  // redis keys (FLUSHALL)
  const uint64_t key_salt = 0xbe11c4ull ^ std::hash<std::string>()(ns);  // keys: {n, key_salt}, n = 1, 2, ...
  auto fresh_key = [&] { return U128{key_counter.fetch_add(1), key_salt}; };
  // On a cluster the bench did not start, its blocks would stay and evict the
  // users' data: every key it made (keys 1 .. key_counter - 1 of its namespace) is
  // deleted when Main returns, whatever the path (a failed cell, SIGINT).
  absl::Cleanup remove_blocks = [&] {
    if (o.spawn || key_counter.load() == 1) return;
    std::unique_ptr<Client> client = MakeClient(o, "inline", "inline");
    const uint64_t made = key_counter.load();
    if (client == nullptr) {
      std::fprintf(stderr, "kvhub-bench: could not remove its %lu blocks from namespace %s\n",
                   static_cast<unsigned long>(made - 1), ns.c_str());
      return;
    }
    uint64_t deleted = 0, gone = 0, failed = 0;
    std::vector<BlockKey> batch;
    for (uint64_t k = 1; k < made; k += 1024) {
      batch.clear();
      for (uint64_t j = k; j < std::min(made, k + 1024); ++j) batch.push_back(U128{j, key_salt});
      absl::StatusOr<std::vector<absl::Status>> r = client->Delete(ns, batch);
      if (!r.ok()) {
        failed += batch.size();
        continue;
      }
      for (const absl::Status& st : *r) (st.ok() ? deleted : (absl::IsNotFound(st) ? gone : failed)) += 1;
    }
    // Keys whose put failed, or that the cache evicted, are not found: not removed by us.
    std::fprintf(stderr, "kvhub-bench: removed its %lu blocks from namespace %s%s%s\n",
                 static_cast<unsigned long>(deleted), ns.c_str(),
                 gone > 0 ? absl::StrCat(" (", gone, " keys were not stored or already evicted)").c_str() : "",
                 failed > 0 ? absl::StrCat(" (", failed, " could not be deleted)").c_str() : "");
  };
  CellError cell_error;
  auto print = [](const Row& r) {
    std::fprintf(stderr, "  %-6s %-7s %-13s %8s %5u  c=%d  %8.0f ops/s  %7.3f GB/s  %10.0f keys/s  err=%lu  cpu/GiB=%.3f\n",
                 r.system.c_str(), r.op.c_str(), r.path.c_str(), r.block_bytes ? Human(r.block_bytes).c_str() : "-",
                 r.batch, r.concurrency, r.ops_per_s(), r.gbps(), r.keys_per_s(), static_cast<unsigned long>(r.errors),
                 r.cpu_s_per_gib());
    if (!r.first_error.ok()) std::fprintf(stderr, "         first error: %s\n", r.first_error.ToString().c_str());
  };
  // CPU seconds of every spawned shard (-1 when not spawned or unreadable).
  auto shard_cpu = [&]() -> double {
    if (shards.empty()) return -1;
    double t = 0;
    for (const auto& sh : shards) {
      const double c = ProcessCpuSeconds(sh->pid());
      if (c < 0) return -1;
      t += c;
    }
    return t;
  };
  // Drive() with the shards' CPU time over the row.
  auto drive = [&](auto body) {
    double c0 = -1;
    Row r = Drive(N, o.seconds, cell_error, body, [&] { c0 = shard_cpu(); });
    const double c1 = shard_cpu();
    if (c0 >= 0 && c1 >= 0) r.shard_cpu_s = c1 - c0;
    r.first_error = cell_error.Take();
    return r;
  };

  for (uint64_t size : o.sizes) {
    if (g_interrupted.load()) break;
    std::vector<Buffer> payload(N);
    for (int t = 0; t < N; ++t) {
      const std::vector<uint8_t> bytes = RandomBytes(size, 1000 + t);
      payload[t].assign(bytes.begin(), bytes.end());
    }
    const size_t B = static_cast<size_t>(o.get_blocks);
    std::vector<Buffer> bufs(N, Buffer(B * size, 0));
    // put
    for (const std::string& path : o.grpc ? o.put_paths : std::vector<std::string>{}) {
      if (g_interrupted.load()) break;  // no cell starts after an interrupt
      auto client = MakeClient(o, path, "inline");
      if (client == nullptr) return 1;
      Row r = drive([&](int t, uint64_t) -> int64_t {
        BlockPut p{fresh_key(), std::nullopt, payload[t]};
        auto res = client->Put(ns, std::span<const BlockPut>(&p, 1));
        if (res.ok() && res->stored == 1) return static_cast<int64_t>(size);
        cell_error.Note(FirstPutError(res));
        return -1;
      });
      r.system = "kvhub"; r.op = "put"; r.path = path; r.block_bytes = size;
      rows.push_back(r); print(r);
    }
    // get: a working set of W blocks (WorkingSetBlocks), written (under fresh
    // keys) right before each transport's get cell, so the put cells in between
    // cannot have evicted it.
    const size_t W = WorkingSetBlocks(o, size);
    std::vector<BlockKey> set(W);
    auto write_set = [&] {
      auto client = MakeClient(o, "inline", "inline");
      if (client == nullptr) return;  // the get cells then count their misses as errors
      std::vector<BlockPut> puts(W);
      for (size_t i = 0; i < W; ++i) puts[i] = BlockPut{set[i] = fresh_key(), std::nullopt, payload[i % N]};
      auto res = client->Put(ns, puts);
      if (!res.ok() || res->stored != W) {
        const absl::Status why = FirstPutError(res);
        std::cerr << "kvhub-bench: could not store the get working set (" << (res.ok() ? res->failed : W)
                  << " failed" << (why.ok() ? "" : absl::StrCat(": ", why.ToString())) << ")\n";
      }
    };
    if (!g_interrupted.load()) write_set();
    // One Get call for B distinct blocks of the working set; -1 unless all B hit.
    auto get_blocks = [&](Client& client, int t, uint64_t i) -> int64_t {
      BlockKey keys[64];
      std::span<uint8_t> dests[64];
      for (size_t b = 0; b < B; ++b) {
        keys[b] = set[((t + i * N) * B + b) % W];
        dests[b] = std::span<uint8_t>(bufs[t]).subspan(b * size, size);
      }
      auto res = client.Get(ns, std::span<const BlockKey>(keys, B), std::span<const std::span<uint8_t>>(dests, B));
      if (!res.ok() || res->valid_blocks != B) {
        absl::Status why = res.ok() ? absl::OkStatus() : res.status();
        for (size_t b = 0; why.ok() && res.ok() && b < B; ++b) why = res->status[b];
        cell_error.Note(why.ok() ? absl::DataLossError("fewer blocks verified than asked for") : why);
        return -1;
      }
      int64_t bytes = 0;
      for (size_t b = 0; b < B; ++b) bytes += static_cast<int64_t>(res->sizes[b]);
      return bytes;
    };
    for (const std::string& mode : o.grpc ? o.get_modes : std::vector<std::string>{}) {
      if (g_interrupted.load()) break;
      auto client = MakeClient(o, "inline", mode);
      if (client == nullptr) return 1;
      Row r = drive([&](int t, uint64_t i) -> int64_t {
        return get_blocks(*client, t, i);
      });
      r.system = "kvhub"; r.op = "get"; r.path = mode; r.block_bytes = size; r.batch = static_cast<uint32_t>(B);
      r.working_set = W;
      rows.push_back(r); print(r);
    }
    // UCX data plane, per UCX_TLS: put (fresh keys) and get (the same working set).
    for (const std::string& tls : o.ucx ? o.ucx_tls : std::vector<std::string>{}) {
      if (g_interrupted.load()) break;
      auto client = MakeUcxClient(o, tls);
      if (client == nullptr) return 1;
      const std::string path = absl::StrCat("ucx:", tls);
      Row r = drive([&](int t, uint64_t) -> int64_t {
        BlockPut p{fresh_key(), std::nullopt, payload[t]};
        auto res = client->Put(ns, std::span<const BlockPut>(&p, 1));
        if (res.ok() && res->stored == 1) return static_cast<int64_t>(size);
        cell_error.Note(FirstPutError(res));
        return -1;
      });
      r.system = "kvhub"; r.op = "put"; r.path = path; r.block_bytes = size;
      rows.push_back(r); print(r);
      if (g_interrupted.load()) break;
      write_set();
      r = drive([&](int t, uint64_t i) -> int64_t {
        return get_blocks(*client, t, i);
      });
      r.system = "kvhub"; r.op = "get"; r.path = path; r.block_bytes = size; r.batch = static_cast<uint32_t>(B);
      r.working_set = W;
      rows.push_back(r); print(r);
      for (const ShardTransportStats& st : client->TransportStats()) {
        std::fprintf(stderr, "  (%s: %s)\n", st.address.c_str(), st.transport.c_str());
      }
      if (o.perftest) {
        for (const char* test : {"tag_bw", "ucp_get"}) {
          if (g_interrupted.load()) break;
          Row pr;
          pr.system = "perftest"; pr.op = test; pr.path = path; pr.block_bytes = size; pr.concurrency = N;
          absl::StatusOr<int> port = FreeLoopbackPort();  // a fixed port range hung when taken
          if (!port.ok()) {
            pr.errors = 1;
            pr.first_error = port.status();
            rows.push_back(pr); print(pr);
            continue;
          }
          // timeout: a pair that never meets (a port taken meanwhile) ends the row, not the bench.
          const std::string cmd = absl::StrCat("timeout -k 5 120 ", KVHUB_SOURCE_DIR_STR, "/transport/ucx_perftest_pair.sh '",
                                               tls, "' ", test, " ", size, " ", *port, " ", N, " 2>/dev/null");
          if (FILE* f = popen(cmd.c_str(), "r")) {
            char line[512] = {0};
            std::string out;
            while (fgets(line, sizeof(line), f) != nullptr) out += line;
            pclose(f);
            const size_t at = out.find("\"GBps\":");
            double gbps = 0;
            if (at != std::string::npos && absl::SimpleAtod(absl::StripTrailingAsciiWhitespace(
                                                                absl::string_view(out).substr(at + 7, out.find('}', at) - at - 7)),
                                                            &gbps) &&
                gbps > 0) {  // a run that failed inside the pair script printed 0
              pr.seconds = 1;
              pr.bytes = static_cast<uint64_t>(gbps * 1e9);
            } else {
              pr.errors = 1;
              pr.first_error = absl::UnavailableError(absl::StrCat("ucx_perftest ", test, " on ", tls,
                                                                   " measured nothing (no server, or it failed)"));
            }
          }
          rows.push_back(pr); print(pr);
        }
      }
    }
    // Not after an interrupt: the table then holds the cells measured so far.
    if (redis && !g_interrupted.load()) {
      // A redis-server that cannot be reached or refuses a command (it died, say)
      // fails this size's redis cell with the reason, in the table and the JSON,
      // instead of ending the bench before either is written.
      auto redis_failed = [&](const char* op, const char* path, const absl::Status& why) {
        Row r;
        r.system = "redis"; r.op = op; r.path = path; r.block_bytes = size; r.concurrency = N;
        r.errors = 1;
        r.first_error = why;
        rows.push_back(r); print(r);
      };
      auto flush = [&](RedisConn& c) {
        if (absl::Status f = c.FlushAll(); !f.ok()) std::cerr << "kvhub-bench: " << f << "\n";
      };
      std::vector<std::unique_ptr<RedisConn>> conns;
      absl::Status connect_error;
      for (int t = 0; t < N && connect_error.ok(); ++t) {
        auto c = RedisConn::Connect(redis->port());
        if (c.ok()) {
          conns.push_back(*std::move(c));
        } else {
          connect_error = c.status();
        }
      }
      if (!connect_error.ok()) {
        redis_failed("put", "SET", connect_error);
        continue;  // the next size tries again
      }
      Row r = Drive(N, o.seconds, cell_error, [&](int t, uint64_t) -> int64_t {
        const absl::Status st = conns[t]->Set(U128{redis_key_counter.fetch_add(1), key_salt}.Hex(), payload[t].data(), size);
        cell_error.Note(st);
        return st.ok() ? static_cast<int64_t>(size) : -1;
      });
      r.first_error = cell_error.Take();
      r.system = "redis"; r.op = "put"; r.path = "SET"; r.block_bytes = size;
      rows.push_back(r); print(r);
      flush(*conns[0]);
      if (g_interrupted.load()) continue;
      std::vector<std::string> rset(W);
      absl::Status set_error;
      for (size_t i = 0; i < W; ++i) {
        rset[i] = U128{redis_key_counter.fetch_add(1), key_salt}.Hex();
        if (absl::Status st = conns[0]->Set(rset[i], payload[i % N].data(), size); !st.ok() && set_error.ok()) {
          set_error = st;
        }
      }
      if (!set_error.ok()) {
        // Its GETs would only miss: the get cell fails with the reason instead.
        redis_failed("get", "GET", absl::Status(set_error.code(), absl::StrCat("storing the get working set of ", W,
                                                                               " values: ", set_error.message())));
        flush(*conns[0]);
        continue;
      }
      // GET, one value per call: the baseline. With B blocks per kvhub Get,
      // also MGET of B keys (the same key pattern): calls of equal size. The
      // redis ratios use GET (here redis serves 1 MiB values faster by GET than by
      // MGET of 8), the _mget ratios MGET.
      r = Drive(N, o.seconds, cell_error, [&](int t, uint64_t i) -> int64_t {
        absl::StatusOr<size_t> n = conns[t]->Get(rset[(t + i * N) % W]);
        cell_error.Note(n.status());
        return n.ok() ? static_cast<int64_t>(*n) : -1;
      });
      r.first_error = cell_error.Take();
      r.system = "redis"; r.op = "get"; r.path = "GET"; r.block_bytes = size; r.working_set = W; r.batch = 1;
      rows.push_back(r); print(r);
      if (B > 1 && !g_interrupted.load()) {
        r = Drive(N, o.seconds, cell_error, [&](int t, uint64_t i) -> int64_t {
          std::string keys[64];
          for (size_t b = 0; b < B; ++b) keys[b] = rset[((t + i * N) * B + b) % W];
          absl::StatusOr<size_t> n = conns[t]->MGet(keys, B);
          cell_error.Note(n.status());
          return n.ok() ? static_cast<int64_t>(*n) : -1;
        });
        r.first_error = cell_error.Take();
        r.system = "redis"; r.op = "get"; r.path = "MGET"; r.block_bytes = size; r.working_set = W;
        r.batch = static_cast<uint32_t>(B);
        rows.push_back(r); print(r);
      }
      flush(*conns[0]);
    }
  }

  // lookup: keys/s for batches of present keys
  if (!o.batches.empty() && !g_interrupted.load()) {
    auto client = MakeClient(o, "inline", "inline");
    if (client == nullptr) return 1;
    const uint32_t max_batch = *std::max_element(o.batches.begin(), o.batches.end());
    const size_t K = std::max<size_t>(4096, max_batch);
    std::vector<BlockKey> keys(K);
    std::vector<uint8_t> tiny(64, 1);
    std::vector<BlockPut> puts(K);
    for (size_t i = 0; i < K; ++i) puts[i] = BlockPut{keys[i] = fresh_key(), std::nullopt, tiny};
    auto res = client->Put(ns, puts);
    if (!res.ok() || res->stored != K) std::cerr << "kvhub-bench: lookup key set not fully stored\n";
    // Lookups of absent keys measure something else: a batch with a missing key counts as an error.
    for (uint32_t b : o.batches) {
      if (g_interrupted.load()) break;
      Row r = Drive(N, o.seconds, cell_error, [&](int t, uint64_t i) -> int64_t {
        const size_t off = ((t * 7919 + i * b) % (K - b + 1));
        auto l = client->Lookup(ns, std::span<const BlockKey>(keys).subspan(off, b));
        if (l.ok() && l->first_error.ok() && l->hit_blocks != b) {
          const size_t absent = static_cast<size_t>(std::count(l->present.begin(), l->present.end(), 0));
          cell_error.Note(absl::NotFoundError(absl::StrCat(absent, " of the ", b,
                                                           " looked-up keys are absent (evicted?)")));
          return -1;
        }
        cell_error.Note(!l.ok() ? l.status() : l->first_error);
        return l.ok() && l->first_error.ok() ? 0 : -1;
      });
      r.first_error = cell_error.Take();
      r.keys = r.ops * b;
      r.system = "kvhub"; r.op = "lookup"; r.path = "batch"; r.batch = b;
      rows.push_back(r); print(r);
    }
  }

  // Table and ratios.
  auto find = [&](const std::string& sys, const std::string& op, const std::string& path, uint64_t size) -> const Row* {
    for (const Row& r : rows) if (r.system == sys && r.op == op && r.path == path && r.block_bytes == size) return &r;
    return nullptr;
  };
  // With --json - the JSON alone goes to stdout (parseable as is) and the table to stderr.
  FILE* table = o.json == "-" ? stderr : stdout;
  const std::string redis_note =
      redis ? absl::StrCat(", redis-server baseline in the same run (maxmemory ", HumanBytes(redis_maxmemory), ")") : "";
  std::fprintf(table, "kvhub-bench: %zu member(s)%s, concurrency %d, %.1f s per cell%s\n", o.members.size(),
              o.spawn ? " (spawned)" : "", N, o.seconds, redis_note.c_str());
  std::fprintf(table, "%-8s %-7s %-13s %8s %6s %12s %9s %12s %6s %14s\n", "system", "op", "path", "block", "batch", "ops/s",
              "GB/s", "keys/s", "errors", "shard_cpu_s/GiB");
  for (const Row& r : rows) {
    std::fprintf(table, "%-8s %-7s %-13s %8s %6s %12.0f %9.3f %12.0f %6lu %14s\n", r.system.c_str(), r.op.c_str(),
                r.path.c_str(), r.block_bytes ? Human(r.block_bytes).c_str() : "-",
                r.batch ? absl::StrCat(r.batch).c_str() : "-", r.system == "perftest" ? 0.0 : r.ops_per_s(), r.gbps(),
                r.keys_per_s(), static_cast<unsigned long>(r.errors),
                r.cpu_s_per_gib() >= 0 ? absl::StrFormat("%.3f", r.cpu_s_per_gib()).c_str() : "-");
  }
  nlohmann::json ratios = nlohmann::json::object();
  // What the redis ratios compare, when it is not like with like.
  if (redis && o.spawn > 1) {
    std::fprintf(table, "note: the redis ratios compare %d kvhub shards with one single-threaded redis-server\n",
                 o.spawn);
  } else if (redis && o.spawn == 0) {
    std::fprintf(table, "note: redis-server runs on this host's loopback; the kvhub members given may not\n");
  }
  for (uint64_t size : o.sizes) {
    const Row* rg = find("redis", "get", "GET", size);
    const Row* rmg = find("redis", "get", "MGET", size);  // --get-blocks > 1 only
    const Row* rs = find("redis", "put", "SET", size);
    for (const std::string& m : o.grpc ? o.get_modes : std::vector<std::string>{}) {
      const Row* k = find("kvhub", "get", m, size);
      if (k && rg && rg->gbps() > 0) {
        const double x = k->gbps() / rg->gbps();
        ratios[absl::StrCat("get_", m, "_", Human(size), "_vs_redis")] = x;
        std::fprintf(table, "ratio get %-7s %6s: kvhub/redis = %.2fx\n", m.c_str(), Human(size).c_str(), x);
      }
      if (k && rmg && rmg->gbps() > 0) {
        const double x = k->gbps() / rmg->gbps();
        ratios[absl::StrCat("get_", m, "_", Human(size), "_vs_redis_mget")] = x;
        std::fprintf(table, "ratio get %-7s %6s: kvhub/redis MGET = %.2fx\n", m.c_str(), Human(size).c_str(), x);
      }
    }
    for (const std::string& tls : o.ucx ? o.ucx_tls : std::vector<std::string>{}) {
      const std::string path = absl::StrCat("ucx:", tls);
      const Row* ug = find("kvhub", "get", path, size);
      const Row* up = find("kvhub", "put", path, size);
      const Row* tb = find("perftest", "tag_bw", path, size);
      auto ratio = [&](const char* name, const Row* a, const Row* b) {
        if (a == nullptr || b == nullptr || b->gbps() <= 0) return;
        ratios[absl::StrCat(name, "_", tls, "_", Human(size))] = a->gbps() / b->gbps();
        std::fprintf(table, "ratio %-22s %-10s %6s: %.2fx\n", name, tls.c_str(), Human(size).c_str(), a->gbps() / b->gbps());
      };
      ratio("get_ucx_vs_redis", ug, rg);
      ratio("get_ucx_vs_redis_mget", ug, rmg);
      ratio("put_ucx_vs_redis", up, rs);
      ratio("get_ucx_vs_perftest_tag_bw", ug, tb);
      const Row* pg = find("perftest", "ucp_get", path, size);
      ratio("get_ucx_vs_perftest_ucp_get", ug, pg);
      // The tcp target compares with perftest's best bandwidth.
      ratio("get_ucx_vs_perftest_best", ug, tb == nullptr || (pg != nullptr && pg->gbps() > tb->gbps()) ? pg : tb);
      // Against each gRPC get mode measured, named (the ratio depends on which): GB/s,
      // and shard CPU seconds per GiB fetched (one-sided reads cost the shard little).
      for (const std::string& m : o.grpc ? o.get_modes : std::vector<std::string>{}) {
        const Row* gg = find("kvhub", "get", m, size);
        ratio(absl::StrCat("get_ucx_vs_grpc_", m).c_str(), ug, gg);
        if (ug != nullptr && gg != nullptr && ug->cpu_s_per_gib() >= 0 && gg->cpu_s_per_gib() > 0) {
          const double x = ug->cpu_s_per_gib() / gg->cpu_s_per_gib();
          ratios[absl::StrCat("shard_cpu_per_gib_get_ucx_vs_grpc_", m, "_", tls, "_", Human(size))] = x;
          std::fprintf(table, "ratio %-22s %-10s %6s: %.3fx\n", absl::StrCat("shard_cpu_get_ucx_vs_grpc_", m).c_str(),
                       tls.c_str(), Human(size).c_str(), x);
        }
      }
    }
    for (const std::string& p : o.grpc ? o.put_paths : std::vector<std::string>{}) {
      const Row* k = find("kvhub", "put", p, size);
      if (k && rs && rs->gbps() > 0) {
        const double x = k->gbps() / rs->gbps();
        ratios[absl::StrCat("put_", p, "_", Human(size), "_vs_redis")] = x;
        std::fprintf(table, "ratio put %-8s %6s: kvhub/redis = %.2fx\n", p.c_str(), Human(size).c_str(), x);
      }
    }
  }
  int rc = 0;
  // A cell in which every operation failed (a shard died, the cache is full of pins)
  // is a failed run, not a measurement of zero.
  int failed_cells = 0, cells_with_errors = 0;
  for (const Row& r : rows) {
    // perftest rows carry bytes, not ops.
    failed_cells += (r.system == "perftest" ? r.bytes == 0 : r.ops == 0) ? 1 : 0;
    cells_with_errors += r.errors > 0 ? 1 : 0;
  }
  if (failed_cells > 0) {
    std::cerr << "kvhub-bench: " << failed_cells << " cell(s) had no successful operation (first errors above)\n";
    rc = 1;
  } else if (cells_with_errors > 0) {
    // Their numbers count only what succeeded: not a clean measurement.
    std::cerr << "kvhub-bench: " << cells_with_errors << " cell(s) had failed operations (first errors above)\n";
    rc = 1;
  }
  if (g_interrupted.load()) {
    std::cerr << "kvhub-bench: interrupted; the table holds the cells measured so far\n";
    rc = 130;
  }
  if (!o.json.empty()) {
    nlohmann::json j;
    j["members"] = o.members;
    j["spawned"] = o.spawn;
    j["concurrency"] = N;
    j["seconds_per_cell"] = o.seconds;
    j["channels_per_member"] = o.channels;
    j["ucx_calls"] = o.ucx_calls;
    j["cpus"] = std::thread::hardware_concurrency();
    j["redis_baseline"] = redis != nullptr;
    j["redis_maxmemory_bytes"] = redis != nullptr ? redis_maxmemory : 0;
    j["ratios"] = ratios;
    for (const Row& r : rows) {
      j["results"].push_back({{"system", r.system}, {"op", r.op}, {"path", r.path}, {"block_bytes", r.block_bytes},
                              {"batch", r.batch}, {"working_set_blocks", r.working_set}, {"concurrency", r.concurrency}, {"seconds", r.seconds},
                              {"ops", r.ops}, {"bytes", r.bytes}, {"keys", r.keys}, {"errors", r.errors},
                              {"first_error", r.first_error.ok() ? "" : r.first_error.ToString()},
                              {"ops_per_s", r.ops_per_s()}, {"gbps", r.gbps()}, {"keys_per_s", r.keys_per_s()},
                              {"shard_cpu_s_per_gib", r.cpu_s_per_gib()}});
    }
    if (absl::Status w = WriteOutput(o.json, j.dump(1) + "\n"); !w.ok()) {
      std::cerr << "kvhub-bench: --json: " << w << "\n";
      rc = 1;
    }
  }
  redis.reset();
  for (auto& s : shards) {
    // A shard that crashed or failed its drain during the run makes the run fail.
    absl::StatusOr<int> code = s->Stop(absl::Seconds(10));
    if ((!code.ok() || *code != 0) && !g_interrupted.load()) {  // Ctrl-C reached them too
      std::cerr << "kvhub-bench: spawned kvhubd " << s->grpc_address() << " ended badly: "
                << (code.ok() ? absl::StrCat("exit code ", *code) : code.status().ToString()) << "\n";
      if (rc == 0) rc = 1;
    }
  }
  return rc;
}

}  // namespace
}  // namespace kvhub::bench

int main(int argc, char** argv) {
  kvhub::TuneMallocForLargeBuffers();
  kvhub::TurnOffMutexDeadlockChecks();  // tests keep them; see common/mutex_checks.h
  kvhub::LogToStderr("kvhub-bench");  // stdout: the table and JSON only
  if (kvhub::PrintVersionIfAsked(argc, argv, "kvhub-bench")) return kvhub::ExitCodeAfterStdout(0, "kvhub-bench");
  struct sigaction sa {};
  sa.sa_handler = kvhub::bench::OnInterrupt;
  sa.sa_flags = SA_RESTART | SA_RESETHAND;  // a second Ctrl-C ends the bench at once
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  int code;
  try {
    code = kvhub::bench::Main(argc, argv);
  } catch (const std::bad_alloc&) {  // a clear message instead of an abort
    std::fprintf(stderr, "kvhub-bench: out of memory (lower --concurrency, --get-blocks or --sizes)\n");
    code = 1;
  }
  return kvhub::ExitCodeAfterStdout(code, "kvhub-bench");
}
