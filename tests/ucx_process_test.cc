// UCX data plane across real processes: byte-exact transfers, and a peer killed
// in the middle of transfers costs only those transfers (errors, no hang), while
// the survivor keeps working. The other process is this test binary re-executed
// with KVHUB_UCX_CHILD set; it talks to the parent over two pipes.

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <ucp/api/ucp.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "absl/cleanup/cleanup.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/hash.h"
#include "transport/ucx_context.h"
#include "common/fd_messages.h"
#include "transport/ucx_rkey_pin.h"
#include "transport/ucx_worker.h"

namespace kvhub::transport {
namespace {

constexpr uint64_t kRegionBytes = 64ull << 20;
constexpr uint64_t kBlock = 1ull << 20;
// shm_server's region: small, so that three at once fit a container's 64 MiB /dev/shm.
constexpr uint64_t kShmRegionBytes = 4 * kBlock;


void FillPattern(uint8_t* p, uint64_t n, uint64_t seed) {
  std::mt19937_64 rng(seed);
  for (uint64_t i = 0; i + 8 <= n; i += 8) {
    const uint64_t v = rng();
    std::memcpy(p + i, &v, 8);
  }
}

UcxConfig ConfigFor(const std::string& tls) {
  UcxConfig c;
  c.tls = tls;
  c.op_timeout = absl::Seconds(3);
  c.require_peer_failure_detection = tls == "tcp";
  return c;
}

// ---- child roles (run before gtest's main, then _exit)
// `allocate`: the region is memory UCX allocated (shared memory under posix or
// sysv, as kvhubd's ucx_shm_regions), not registered heap memory.
[[noreturn]] void ChildServer(int in, int out, const std::string& tls, bool allocate) {
  auto ctx = UcxContext::Create(ConfigFor(tls));
  if (!ctx.ok()) _exit(10);
  std::vector<uint8_t> heap(allocate ? 0 : kRegionBytes);
  const uint64_t bytes = allocate ? kShmRegionBytes : kRegionBytes;
  auto mem = allocate ? (*ctx)->Allocate(bytes) : (*ctx)->Register(heap.data(), heap.size());
  if (!mem.ok()) _exit(11);
  FillPattern(static_cast<uint8_t*>((*mem)->base()), bytes, 42);
  UcxWorker::Options o;
  o.served = {mem->get()};
  auto w = UcxWorker::Create(ctx->get(), o);
  if (!w.ok()) _exit(12);
  const RemoteRegionInfo r = (*w)->ServedRegions()[0];
  std::string client_addr;
  if (!SendMessage(out, (*w)->address()) || !SendMessage(out, r.packed_rkey) || !SendMessage(out, absl::StrCat(r.base)) ||
      !RecvMessage(in, &client_addr)) {
    _exit(13);
  }
  auto conn = (*w)->Accept(client_addr);
  if (!conn.ok() || !SendMessage(out, FormatAcceptedConn(*conn))) _exit(14);
  std::string cmd;
  RecvMessage(in, &cmd);  // serve until the parent says anything or closes the pipe
  _exit(0);
}

[[noreturn]] void ChildClient(int in, int out, const std::string& tls) {
  auto ctx = UcxContext::Create(ConfigFor(tls));
  if (!ctx.ok()) _exit(20);
  auto w = UcxWorker::Create(ctx->get(), {});
  if (!w.ok()) _exit(21);
  PeerInfo info;
  std::string rkey, base, conn;
  if (!RecvMessage(in, &info.worker_address) || !RecvMessage(in, &rkey) || !RecvMessage(in, &base) ||
      !SendMessage(out, (*w)->address()) || !RecvMessage(in, &conn)) {
    _exit(22);
  }
  RemoteRegionInfo r;
  r.size = kRegionBytes;
  r.packed_rkey = rkey;
  if (!absl::SimpleAtoi(base, &r.base) || !ParseAcceptedConn(conn, &info.conn)) _exit(23);
  info.regions = {r};
  auto peer = (*w)->Connect(info);
  if (!peer.ok()) _exit(24);
  std::vector<uint8_t> dst(8 * kBlock);
  for (uint64_t i = 0;; ++i) {  // until killed
    std::vector<Transfer> ts;
    for (int b = 0; b < 8; ++b) {
      ts.push_back({TransferKind::kGet, UcxPath::kAuto, 0, ((i * 8 + b) % 64) * kBlock, kBlock,
                    dst.data() + b * kBlock});
    }
    std::vector<absl::Status> results(ts.size());
    const bool all_ok = (*w)->Execute(*peer, ts, std::span<absl::Status>(results)).ok() &&
                        std::all_of(results.begin(), results.end(), [](const absl::Status& s) { return s.ok(); });
    // Told once a whole batch came back, so the parent kills a client that is
    // really transferring (not one still connecting, or whose reads all fail).
    if (i == 0 && !SendMessage(out, all_ok ? "fetching" : "first batch failed")) _exit(25);
  }
}

int MaybeRunChild() {
  const char* role = std::getenv("KVHUB_UCX_CHILD");
  if (role == nullptr) return 0;
  int in = -1, out = -1;
  const char* fds = std::getenv("KVHUB_UCX_CHILD_FDS");
  if (fds == nullptr || std::sscanf(fds, "%d,%d", &in, &out) != 2) _exit(2);
  const char* tls = std::getenv("KVHUB_UCX_CHILD_TLS");
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (std::strcmp(role, "server") == 0) ChildServer(in, out, tls != nullptr ? tls : "tcp", false);
  if (std::strcmp(role, "shm_server") == 0) ChildServer(in, out, tls != nullptr ? tls : "posix", true);
  if (std::strcmp(role, "client") == 0) ChildClient(in, out, tls != nullptr ? tls : "tcp");
  _exit(3);
}
[[maybe_unused]] const int kChildHook = MaybeRunChild();

// ---- parent side
struct Child {
  pid_t pid = -1;
  int to = -1, from = -1;
  ~Child() {
    if (to >= 0) close(to);
    if (from >= 0) close(from);
    if (pid > 0) {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
    }
  }
};

std::unique_ptr<Child> Spawn(const std::string& role, const std::string& tls) {
  int down[2], up[2];
  if (pipe(down) != 0 || pipe(up) != 0) return nullptr;
  auto c = std::make_unique<Child>();
  c->pid = fork();
  if (c->pid == 0) {
    close(down[1]);
    close(up[0]);
    setenv("KVHUB_UCX_CHILD", role.c_str(), 1);
    setenv("KVHUB_UCX_CHILD_TLS", tls.c_str(), 1);
    setenv("KVHUB_UCX_CHILD_FDS", absl::StrCat(down[0], ",", up[1]).c_str(), 1);
    execl("/proc/self/exe", "ucx_process_test_child", nullptr);
    _exit(4);
  }
  close(down[0]);
  close(up[1]);
  c->to = down[1];
  c->from = up[0];
  return c;
}

// The parent's half of a server child's handshake: the child's worker address and
// region, then the connection it accepted for `w`.
::testing::AssertionResult Handshake(const Child& c, UcxWorker& w, PeerInfo* info,
                                     uint64_t region_bytes = kRegionBytes) {
  std::string rkey, base, conn;
  if (!RecvMessage(c.from, &info->worker_address) || !RecvMessage(c.from, &rkey) || !RecvMessage(c.from, &base) ||
      !SendMessage(c.to, w.address()) || !RecvMessage(c.from, &conn)) {
    return ::testing::AssertionFailure() << "the server child broke off the handshake (it could not set up "
                                            "UCX or its region; exit codes in ChildServer)";
  }
  RemoteRegionInfo r;
  r.size = region_bytes;
  r.packed_rkey = rkey;
  if (!absl::SimpleAtoi(base, &r.base) || !ParseAcceptedConn(conn, &info->conn)) {
    return ::testing::AssertionFailure() << "the server child sent a bad region base or connection";
  }
  info->regions = {r};
  return ::testing::AssertionSuccess();
}

void KillAndReap(Child& c) {
  kill(c.pid, SIGKILL);
  waitpid(c.pid, nullptr, 0);
  c.pid = -1;
}

class UcxProcessTest : public ::testing::TestWithParam<const char*> {};

// A server in another process: byte-exact gets and puts, then the server is
// killed while a stream of batches is in flight.
TEST_P(UcxProcessTest, ServerKilledMidTransferFailsOnlyThoseTransfers) {
  const std::string tls = GetParam();
  if (tls != "tcp") {
    // UCX 1.13 has no peer failure detection on shared memory, and its CMA copy
    // from a process that died aborts the copying process (cma_ep.c fatal error).
    // The shard never runs a CMA copy (gets: the client pulls; puts: RMA emulated
    // by the shard from its own FIFO), so only this direction is unsafe;
    // docs/transport.md says so. Byte-exactness on shared memory is covered by
    // ClientKilledMidTransferLeavesServerServing and ucx_transfer_test.
    GTEST_SKIP() << "a client on UCX 1.13 shared memory cannot survive its shard dying mid-copy";
  }
  auto child = Spawn("server", tls);
  ASSERT_NE(child, nullptr);
  auto ctx = UcxContext::Create(ConfigFor(tls));
  ASSERT_TRUE(ctx.ok()) << ctx.status();
  auto w = UcxWorker::Create(ctx->get(), {});
  ASSERT_TRUE(w.ok()) << w.status();

  PeerInfo info;
  ASSERT_TRUE(Handshake(*child, **w, &info));
  auto peer = (*w)->Connect(info);
  ASSERT_TRUE(peer.ok()) << peer.status();

  // Byte-exact get of the whole region against the pattern the child wrote.
  std::vector<uint8_t> want(kRegionBytes);
  FillPattern(want.data(), want.size(), 42);
  std::vector<uint8_t> got(kRegionBytes, 0);
  {
    std::vector<Transfer> ts;
    for (uint64_t off = 0; off < kRegionBytes; off += 4 * kBlock) {
      ts.push_back({TransferKind::kGet, UcxPath::kAuto, 0, off, 4 * kBlock, got.data() + off});
    }
    std::vector<absl::Status> results(ts.size());
    ASSERT_TRUE((*w)->Execute(*peer, ts, std::span<absl::Status>(results)).ok());
    for (auto& st : results) ASSERT_TRUE(st.ok()) << st;
    ASSERT_EQ(Xxh3_64(got.data(), got.size()), Xxh3_64(want.data(), want.size()));
  }
  // Put a block, read it back.
  {
    std::vector<uint8_t> src(kBlock + 123), back(kBlock + 123);
    FillPattern(src.data(), src.size(), 7);
    Transfer put{TransferKind::kPut, UcxPath::kAuto, 0, 5 * kBlock + 1, src.size(), src.data()};
    Transfer get{TransferKind::kGet, UcxPath::kAuto, 0, 5 * kBlock + 1, back.size(), back.data()};
    absl::Status st;
    ASSERT_TRUE((*w)->Execute(*peer, {&put, 1}, {&st, 1}).ok());
    ASSERT_TRUE(st.ok()) << st;
    ASSERT_TRUE((*w)->Execute(*peer, {&get, 1}, {&st, 1}).ok());
    ASSERT_TRUE(st.ok()) << st;
    ASSERT_EQ(std::memcmp(src.data(), back.data(), src.size()), 0);
  }

  // Kill the server while batches are in flight.
  std::atomic<bool> stop{false};
  std::atomic<int> failed{0}, ok{0};
  std::thread fetcher([&] {
    std::vector<uint8_t> dst(16 * kBlock);
    while (!stop.load()) {
      std::vector<Transfer> ts;
      for (int b = 0; b < 16; ++b) {
        ts.push_back({TransferKind::kGet, UcxPath::kAuto, 0, b * kBlock, kBlock, dst.data() + b * kBlock});
      }
      std::vector<absl::Status> results(ts.size());
      if (!(*w)->Execute(*peer, ts, std::span<absl::Status>(results)).ok()) {
        failed.fetch_add(1);
        continue;
      }
      for (auto& st : results) (st.ok() ? ok : failed).fetch_add(1);
      if (failed.load() > 0) return;
    }
  });
  absl::SleepFor(absl::Milliseconds(100));
  KillAndReap(*child);
  const absl::Time killed = absl::Now();
  while (failed.load() == 0 && absl::Now() - killed < absl::Seconds(15)) absl::SleepFor(absl::Milliseconds(10));
  stop.store(true);
  fetcher.join();
  EXPECT_GT(ok.load(), 0);
  EXPECT_GT(failed.load(), 0) << "transfers to a dead server must fail, not hang";
  EXPECT_LT(absl::Now() - killed, absl::Seconds(15));

  // The worker survives: a new server process is reachable from the same worker.
  auto child2 = Spawn("server", tls);
  ASSERT_NE(child2, nullptr);
  PeerInfo info2;
  ASSERT_TRUE(Handshake(*child2, **w, &info2));
  auto peer2 = (*w)->Connect(info2);
  ASSERT_TRUE(peer2.ok()) << peer2.status();
  std::vector<uint8_t> one(kBlock);
  Transfer t{TransferKind::kGet, UcxPath::kAuto, 0, 0, kBlock, one.data()};
  absl::Status st;
  ASSERT_TRUE((*w)->Execute(*peer2, {&t, 1}, {&st, 1}).ok());
  ASSERT_TRUE(st.ok()) << st;
  EXPECT_EQ(std::memcmp(one.data(), want.data(), kBlock), 0);
}

// A client in another process is killed while fetching; the server keeps serving others.
TEST_P(UcxProcessTest, ClientKilledMidTransferLeavesServerServing) {
  const std::string tls = GetParam();
  auto ctx = UcxContext::Create(ConfigFor(tls));
  ASSERT_TRUE(ctx.ok()) << ctx.status();
  std::vector<uint8_t> region(kRegionBytes);
  FillPattern(region.data(), region.size(), 42);
  auto mem = (*ctx)->Register(region.data(), region.size());
  ASSERT_TRUE(mem.ok()) << mem.status();
  UcxWorker::Options o;
  o.served = {mem->get()};
  auto server = UcxWorker::Create(ctx->get(), o);
  ASSERT_TRUE(server.ok()) << server.status();
  const RemoteRegionInfo r = (*server)->ServedRegions()[0];

  auto child = Spawn("client", tls);
  ASSERT_NE(child, nullptr);
  std::string client_addr, msg;
  ASSERT_TRUE(SendMessage(child->to, (*server)->address()));
  ASSERT_TRUE(SendMessage(child->to, r.packed_rkey));
  ASSERT_TRUE(SendMessage(child->to, absl::StrCat(r.base)));
  ASSERT_TRUE(RecvMessage(child->from, &client_addr));
  auto conn = (*server)->Accept(client_addr);
  ASSERT_TRUE(conn.ok()) << conn.status();
  ASSERT_TRUE(SendMessage(child->to, FormatAcceptedConn(*conn)));
  ASSERT_TRUE(RecvMessage(child->from, &msg));
  ASSERT_EQ(msg, "fetching") << "the client's first batch must have moved bytes";
  absl::SleepFor(absl::Milliseconds(200));
  kill(child->pid, SIGKILL);
  waitpid(child->pid, nullptr, 0);
  child->pid = -1;

  // A new in-process client still gets byte-exact data.
  auto cctx = UcxContext::Create(ConfigFor(tls));
  ASSERT_TRUE(cctx.ok());
  auto client = UcxWorker::Create(cctx->get(), {});
  ASSERT_TRUE(client.ok());
  auto conn2 = (*server)->Accept((*client)->address());
  ASSERT_TRUE(conn2.ok()) << conn2.status();
  auto peer = (*client)->Connect({(*server)->address(), (*server)->ServedRegions(), *conn2});
  ASSERT_TRUE(peer.ok()) << peer.status();
  std::vector<uint8_t> dst(4 * kBlock);
  for (int i = 0; i < 10; ++i) {
    Transfer t{TransferKind::kGet, UcxPath::kAuto, 0, i * kBlock, dst.size(), dst.data()};
    absl::Status st;
    ASSERT_TRUE((*client)->Execute(*peer, {&t, 1}, {&st, 1}).ok());
    ASSERT_TRUE(st.ok()) << st;
    ASSERT_EQ(std::memcmp(dst.data(), region.data() + i * kBlock, dst.size()), 0);
  }
}

// A shard on this host whose regions are UCX shared memory has gone between
// handing out its region keys and the client unpacking them, on an endpoint UCX
// made while the memory was there. UCX 1.13 fails to open the gone segment and
// then crashes in its own cleanup (ucp_rkey_destroy -> uct_posix_rkey_release, a
// `make stress` client in session 23); the client must get an error and live.
// The window is made deterministic with two shards: the endpoint goes to one that
// lives, the keys are those of one that was killed.
class UcxDeadShardTest : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    unsigned major = 0, minor = 0, release = 0;
    ucp_get_version(&major, &minor, &release);
    if (major != 1 || minor != 13) {
      GTEST_SKIP() << "the pinning reads UCX 1.13's key layout; this is UCX " << major << "." << minor;
    }
  }
};

TEST_P(UcxDeadShardTest, KeysOfAShardThatDiedFailConnectCleanly) {
  const std::string tls = GetParam();
  auto first = Spawn("shm_server", tls);
  auto dead = Spawn("shm_server", tls);
  ASSERT_NE(first, nullptr);
  ASSERT_NE(dead, nullptr);
  auto ctx = UcxContext::Create(ConfigFor(tls));
  ASSERT_TRUE(ctx.ok()) << ctx.status();
  auto w = UcxWorker::Create(ctx->get(), {});
  ASSERT_TRUE(w.ok()) << w.status();
  PeerInfo info, gone;
  ASSERT_TRUE(Handshake(*first, **w, &info, kShmRegionBytes));
  ASSERT_TRUE(Handshake(*dead, **w, &gone, kShmRegionBytes));
  KillAndReap(*dead);
  const auto with_gone_keys = [&](PeerInfo i) {
    i.one_sided_shm = true;
    i.same_namespaces = true;
    i.regions = gone.regions;
    return i;
  };
  const auto expect_refused = [](const absl::StatusOr<PeerId>& r) {
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable) << r.status();
    EXPECT_THAT(std::string(r.status().message()), ::testing::HasSubstr("shared-memory segment"));
  };
  // A new endpoint (closed again on the refusal; that may end `first`'s side too).
  expect_refused((*w)->Connect(with_gone_keys(info)));

  // The worker is whole: another shard connects and serves byte-exact.
  auto live = Spawn("shm_server", tls);
  ASSERT_NE(live, nullptr);
  PeerInfo live_info;
  ASSERT_TRUE(Handshake(*live, **w, &live_info, kShmRegionBytes));
  live_info.one_sided_shm = true;
  live_info.same_namespaces = true;
  auto peer = (*w)->Connect(live_info);
  ASSERT_TRUE(peer.ok()) << peer.status();
  std::vector<uint8_t> want(kBlock);
  FillPattern(want.data(), want.size(), 42);
  const auto get_block = [&] {
    std::vector<uint8_t> got(kBlock);
    Transfer t{TransferKind::kGet, UcxPath::kAuto, 0, 0, kBlock, got.data()};
    absl::Status st;
    ASSERT_TRUE((*w)->Execute(*peer, {&t, 1}, {&st, 1}).ok());
    ASSERT_TRUE(st.ok()) << st;
    EXPECT_EQ(std::memcmp(got.data(), want.data(), kBlock), 0);
  };
  get_block();
  // A known peer whose new keys are gone keeps its old ones and serves on.
  expect_refused((*w)->Connect(with_gone_keys(live_info)));
  get_block();
}

// The pinned key closes the window itself: pinned while the shard lives, it
// unpacks after the shard is gone, onto the very bytes the shard wrote (raw UCP:
// the endpoint is made while the shard lives, the unpack comes after its death).
TEST_P(UcxDeadShardTest, PinnedKeyUnpacksAfterTheShardDied) {
  const std::string tls = GetParam();
  auto child = Spawn("shm_server", tls);
  ASSERT_NE(child, nullptr);
  auto ctx = UcxContext::Create(ConfigFor(tls));
  ASSERT_TRUE(ctx.ok()) << ctx.status();
  auto w = UcxWorker::Create(ctx->get(), {});
  ASSERT_TRUE(w.ok()) << w.status();
  PeerInfo info;
  ASSERT_TRUE(Handshake(*child, **w, &info, kShmRegionBytes));
  const RemoteRegionInfo& region = info.regions[0];

  ucp_worker_params_t wp{};
  wp.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
  wp.thread_mode = UCS_THREAD_MODE_SINGLE;
  ucp_worker_h raw_worker = nullptr;
  ASSERT_EQ(ucp_worker_create((*ctx)->get(), &wp, &raw_worker), UCS_OK);
  absl::Cleanup destroy_worker = [&] { ucp_worker_destroy(raw_worker); };
  ucp_ep_params_t ep_params{};
  ep_params.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS;
  ep_params.address = reinterpret_cast<const ucp_address_t*>(info.worker_address.data());
  ucp_ep_h ep = nullptr;
  ASSERT_EQ(ucp_ep_create(raw_worker, &ep_params, &ep), UCS_OK);
  absl::Cleanup close_ep = [&] {
    ucp_request_param_t cp{};
    cp.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
    cp.flags = UCP_EP_CLOSE_FLAG_FORCE;
    ucs_status_ptr_t req = ucp_ep_close_nbx(ep, &cp);
    while (UCS_PTR_IS_PTR(req) && ucp_request_check_status(req) == UCS_INPROGRESS) ucp_worker_progress(raw_worker);
    if (UCS_PTR_IS_PTR(req)) ucp_request_free(req);
  };

  absl::StatusOr<PinnedRkey> pinned = PinRkey(region.packed_rkey, PinScope{.posix = true, .sysv = true});
  ASSERT_TRUE(pinned.ok()) << pinned.status();
  const bool posix = tls.find("posix") != std::string::npos;
  EXPECT_EQ(pinned->posix_segments(), posix ? 1u : 0u) << tls;
  EXPECT_EQ(pinned->sysv_segments(), posix ? 0u : 1u) << tls;
  KillAndReap(*child);

  ucp_rkey_h rkey = nullptr;
  ASSERT_EQ(ucp_ep_rkey_unpack(ep, pinned->packed().data(), &rkey), UCS_OK);
  void* mapped = nullptr;
  ASSERT_EQ(ucp_rkey_ptr(rkey, region.base, &mapped), UCS_OK);
  std::vector<uint8_t> want(kBlock);
  FillPattern(want.data(), want.size(), 42);
  EXPECT_EQ(std::memcmp(mapped, want.data(), kBlock), 0);
  ucp_rkey_destroy(rkey);

  // With the pin and the mapping gone, the segment is gone too: the key is refused.
  pinned = PinnedRkey();
  auto late = PinRkey(region.packed_rkey, PinScope{.posix = true, .sysv = true});
  ASSERT_FALSE(late.ok());
  EXPECT_EQ(late.status().code(), absl::StatusCode::kUnavailable) << late.status();
}

INSTANTIATE_TEST_SUITE_P(SharedMemory, UcxDeadShardTest, ::testing::Values("tcp,posix,cma", "tcp,sysv,cma"),
                         [](const auto& p) { return std::string(p.param).find("posix") != std::string::npos ? "posix" : "sysv"; });

INSTANTIATE_TEST_SUITE_P(Transports, UcxProcessTest, ::testing::Values("tcp", "posix,cma"),
                         [](const auto& p) { return std::string(p.param) == "tcp" ? "tcp" : "posix_cma"; });

}  // namespace
}  // namespace kvhub::transport
