// Byte-exact transfers between two UCX workers in one process, over tcp and over
// shared memory, on both protocols (RMA and active messages).

#include <algorithm>
#include <gtest/gtest.h>

#include <atomic>
#include <cstring>
#include <optional>
#include <random>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "common/hash.h"
#include "transport/ucx_context.h"
#include "transport/ucx_worker.h"

namespace kvhub::transport {
namespace {

struct Param {
  const char* tls;
  UcxPath path;
};

std::string Name(const ::testing::TestParamInfo<Param>& p) {
  std::string tls = p.param.tls;
  for (char& c : tls) if (c == ',') c = '_';
  return tls + "_" + std::string(UcxPathName(p.param.path));
}

// One UCX context for the serving side, one for the client side.
void CreateContexts(const UcxConfig& cfg, std::unique_ptr<UcxContext>* server, std::unique_ptr<UcxContext>* client) {
  auto sctx = UcxContext::Create(cfg);
  ASSERT_TRUE(sctx.ok()) << sctx.status();
  *server = std::move(*sctx);
  auto cctx = UcxContext::Create(cfg);
  ASSERT_TRUE(cctx.ok()) << cctx.status();
  *client = std::move(*cctx);
}

class UcxTransferTest : public ::testing::TestWithParam<Param> {
 protected:
  static constexpr uint64_t kRegionBytes = 8ull << 20;

  void SetUp() override {
    UcxConfig cfg;
    cfg.tls = GetParam().tls;
    cfg.get_path = GetParam().path;
    cfg.put_path = GetParam().path;
    cfg.op_timeout = absl::Seconds(5);
    cfg.require_peer_failure_detection = std::string(GetParam().tls) == "tcp";
    ASSERT_NO_FATAL_FAILURE(CreateContexts(cfg, &server_ctx_, &client_ctx_));

    for (int r = 0; r < 2; ++r) {
      regions_.emplace_back(kRegionBytes);
      std::mt19937_64 rng(r + 1);
      for (size_t i = 0; i < kRegionBytes; i += 8) {
        const uint64_t v = rng();
        std::memcpy(regions_.back().data() + i, &v, 8);
      }
      auto mem = server_ctx_->Register(regions_.back().data(), kRegionBytes);
      ASSERT_TRUE(mem.ok()) << mem.status();
      mems_.push_back(std::move(*mem));
    }
    UcxWorker::Options so;
    so.name = "server";
    so.access = ServerHooks();
    so.calls = ServerCalls();
    if (std::optional<uint32_t> cap = TransfersPerConn(); cap.has_value()) so.max_transfers_per_conn = *cap;
    for (auto& m : mems_) so.served.push_back(m.get());
    auto sw = UcxWorker::Create(server_ctx_.get(), so);
    ASSERT_TRUE(sw.ok()) << sw.status();
    server_ = std::move(*sw);
    auto cw = UcxWorker::Create(client_ctx_.get(), {.name = "client"});
    ASSERT_TRUE(cw.ok()) << cw.status();
    client_ = std::move(*cw);

    auto conn = server_->Accept(client_->address());
    ASSERT_TRUE(conn.ok()) << conn.status();
    conn_ = *conn;
    auto peer = client_->Connect({server_->address(), server_->ServedRegions(), *conn});
    ASSERT_TRUE(peer.ok()) << peer.status();
    peer_ = *peer;
  }

  void TearDown() override {
    client_.reset();
    server_.reset();
    mems_.clear();
  }
  // Access hooks of the serving worker (none: any range of a region is served).
  virtual UcxWorker::AccessHooks ServerHooks() { return {}; }
  // The serving worker's max_transfers_per_conn (nullopt: its default).
  virtual std::optional<uint32_t> TransfersPerConn() { return std::nullopt; }
  // The serving worker's calls: 1 answers the request reversed, 2 refuses, 3
  // answers after 300 ms; others are unknown.
  static constexpr uint32_t kReverse = 1, kRefuse = 2, kSlow = 3, kSlower = 4;
  static UcxWorker::CallHandler ServerCalls() {
    return [](uint32_t method, absl::string_view request) -> absl::StatusOr<std::string> {
      switch (method) {
        case kReverse: return std::string(request.rbegin(), request.rend());
        case kRefuse: return absl::PermissionDeniedError("test call refused");
        case kSlow:
          absl::SleepFor(absl::Milliseconds(300));
          return std::string("late");
        case kSlower:
          absl::SleepFor(absl::Seconds(1));
          return std::string("later");
        default: return absl::InvalidArgumentError(absl::StrCat("unknown method ", method));
      }
    };
  }

  std::unique_ptr<UcxContext> server_ctx_, client_ctx_;
  std::vector<std::vector<uint8_t>> regions_;
  std::vector<std::unique_ptr<UcxMemory>> mems_;
  std::unique_ptr<UcxWorker> server_, client_;
  AcceptedConn conn_;  // the server's connection to client_
  PeerId peer_ = 0;
};

// Connect to a connected address replaces the peer's region keys while other
// threads' transfers are in flight on the old ones: those finish on the keys
// they started with (destroyed by the last of them), and every byte is exact.
TEST_P(UcxTransferTest, ReconnectingUnderTransfersInFlightLosesNoByte) {
  constexpr int kThreads = 3;
  constexpr uint64_t kBlock = 1 << 20;
  std::atomic<bool> stop{false};
  std::atomic<int> ok{0}, bad{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::vector<uint8_t> dst(kBlock);
      for (uint64_t i = 0; !stop.load(); ++i) {
        const uint32_t region = static_cast<uint32_t>((t + i) % 2);
        const uint64_t off = ((t * 5 + i) % 8) * kBlock;
        Transfer tr{TransferKind::kGet, UcxPath::kAuto, region, off, kBlock, dst.data()};
        absl::Status st;
        if (client_->Execute(peer_, {&tr, 1}, {&st, 1}).ok() && st.ok() &&
            std::memcmp(dst.data(), regions_[region].data() + off, kBlock) == 0) {
          ok.fetch_add(1);
        } else {
          ADD_FAILURE() << "get " << region << "+" << off << ": " << st;
          bad.fetch_add(1);
        }
      }
    });
  }
  for (int round = 0; round < 30; ++round) {
    absl::SleepFor(absl::Milliseconds(2));
    auto again = client_->Connect({server_->address(), server_->ServedRegions(), conn_});
    ASSERT_TRUE(again.ok()) << again.status();
    ASSERT_EQ(*again, peer_) << "a healthy peer is reconnected in place";
  }
  stop.store(true);
  for (auto& th : threads) th.join();
  EXPECT_EQ(bad.load(), 0);
  EXPECT_GT(ok.load(), 0);
}

TEST_P(UcxTransferTest, CallsCarryRequestsAndAnswers) {
  std::mt19937_64 rng(3);
  for (size_t size : {size_t{0}, size_t{1}, size_t{100} << 10, kMaxUcxCallBytes}) {
    std::string req(size, '\0');
    for (char& c : req) c = static_cast<char>(rng());
    absl::StatusOr<std::string> got = client_->CallPeer(peer_, kReverse, req);
    ASSERT_TRUE(got.ok()) << size << ": " << got.status();
    EXPECT_EQ(*got, std::string(req.rbegin(), req.rend())) << size;
  }
  absl::StatusOr<std::string> refused = client_->CallPeer(peer_, kRefuse, "x");
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kPermissionDenied) << refused.status();
  EXPECT_TRUE(absl::StrContains(refused.status().message(), "test call refused")) << refused.status();
  absl::StatusOr<std::string> unknown = client_->CallPeer(peer_, 99, "x");
  EXPECT_EQ(unknown.status().code(), absl::StatusCode::kInvalidArgument) << unknown.status();
  absl::StatusOr<std::string> big = client_->CallPeer(peer_, kReverse, std::string(kMaxUcxCallBytes + 1, 'a'));
  EXPECT_EQ(big.status().code(), absl::StatusCode::kInvalidArgument) << big.status();
  EXPECT_EQ(server_->Stats().served_calls, 6u);  // the oversized one never left
  EXPECT_EQ(client_->Stats().calls_ok, 4u);
  EXPECT_EQ(client_->Stats().calls_failed, 2u);

  // A worker without a handler answers UNIMPLEMENTED (here: the client, called
  // by the server over a connection the other way).
  auto conn = client_->Accept(server_->address());
  ASSERT_TRUE(conn.ok()) << conn.status();
  auto back = server_->Connect({client_->address(), {}, *conn});
  ASSERT_TRUE(back.ok()) << back.status();
  absl::StatusOr<std::string> none = server_->CallPeer(*back, kReverse, "x");
  EXPECT_EQ(none.status().code(), absl::StatusCode::kUnimplemented) << none.status();
}

TEST_P(UcxTransferTest, ACallPastItsDeadlineFailsAndLaterCallsWork) {
  absl::StatusOr<std::string> late = client_->CallPeer(peer_, kSlow, "", absl::Milliseconds(50));
  EXPECT_EQ(late.status().code(), absl::StatusCode::kDeadlineExceeded) << late.status();
  // The slow answer arrives later and is dropped; the next call gets its own.
  absl::StatusOr<std::string> next = client_->CallPeer(peer_, kReverse, "abc");
  ASSERT_TRUE(next.ok()) << next.status();
  EXPECT_EQ(*next, "cba");
}

TEST_P(UcxTransferTest, CallsToAGonePeerFail) {
  ASSERT_TRUE(client_->Disconnect(peer_).ok());
  absl::StatusOr<std::string> r = client_->CallPeer(peer_, kReverse, "abc");
  EXPECT_EQ(r.status().code(), absl::StatusCode::kUnavailable) << r.status();
}

// A call waiting on a peer that is disconnected (failed, or its session ended)
// fails at once and is forgotten: the worker held every such call (and its request
// bytes) until it was destroyed.
TEST_P(UcxTransferTest, ACallCutOffByADisconnectIsForgotten) {
  absl::StatusOr<std::string> cut = std::string("not run");
  std::thread caller([&] { cut = client_->CallPeer(peer_, kSlower, "", absl::Seconds(20)); });
  for (int i = 0; i < 2000 && server_->Stats().served_calls == 0; ++i) absl::SleepFor(absl::Milliseconds(1));
  ASSERT_TRUE(client_->Disconnect(peer_).ok());
  caller.join();
  EXPECT_FALSE(cut.ok()) << "the call was answered before the disconnect";
  // Well before the answer the shard sends after 1 s (which the worker also took as
  // the end of the call; a dead shard sends none).
  uint64_t held = 1;
  for (int i = 0; i < 200 && (held = client_->Stats().calls_held) != 0; ++i) absl::SleepFor(absl::Milliseconds(1));
  EXPECT_EQ(held, 0u);
}

TEST_P(UcxTransferTest, ReportsTransportAndPath) {
  auto tls = client_->PeerTransports(peer_);
  ASSERT_TRUE(tls.ok()) << tls.status();
  EXPECT_NE(*tls, "unknown");
  auto path = client_->ResolvedPath(peer_, TransferKind::kGet);
  ASSERT_TRUE(path.ok());
  EXPECT_EQ(*path, GetParam().path);
  std::printf("transports: %s\n", tls->c_str());
}

TEST_P(UcxTransferTest, GetIsByteExact) {
  const std::vector<std::pair<uint32_t, std::pair<uint64_t, uint64_t>>> cases = {
      {0, {0, 1}}, {0, {13, 4096}}, {1, {4096, 100000}}, {0, {1 << 20, 1 << 20}},
      {1, {kRegionBytes - (3 << 20) - 7, (3 << 20) + 7}}};
  std::vector<std::vector<uint8_t>> dst;
  std::vector<Transfer> ts;
  for (const auto& [region, range] : cases) {
    dst.emplace_back(range.second, 0xEE);
    ts.push_back({TransferKind::kGet, UcxPath::kAuto, region, range.first, range.second, dst.back().data()});
  }
  std::vector<absl::Status> results(ts.size());
  ASSERT_TRUE(client_->Execute(peer_, ts, std::span<absl::Status>(results)).ok());
  for (size_t i = 0; i < ts.size(); ++i) {
    ASSERT_TRUE(results[i].ok()) << i << ": " << results[i];
    const uint8_t* want = regions_[ts[i].region].data() + ts[i].offset;
    EXPECT_EQ(Xxh3_64(dst[i].data(), ts[i].size), Xxh3_64(want, ts[i].size)) << i;
    EXPECT_EQ(std::memcmp(dst[i].data(), want, ts[i].size), 0) << i;
  }
  const UcxWorkerStats s = client_->Stats();
  uint64_t total = 0;
  for (auto& t : ts) total += t.size;
  EXPECT_EQ(GetParam().path == UcxPath::kRma ? s.get_bytes_rma : s.get_bytes_am, total);
  if (GetParam().path == UcxPath::kAm) {
    // Counted before the server sends: exact as soon as the client has its bytes.
    EXPECT_EQ(server_->Stats().served_get_bytes, total);
    // Counted on send completion, which the server may learn after the client
    // finished (rendezvous): asynchronous, so wait for it (bounded).
    const absl::Time until = absl::Now() + absl::Seconds(5);
    while (server_->Stats().served_get_bytes_completed < total && absl::Now() < until) {
      absl::SleepFor(absl::Milliseconds(1));
    }
    EXPECT_EQ(server_->Stats().served_get_bytes_completed, total);
  }
}

TEST_P(UcxTransferTest, PutIsByteExactAndLeavesNeighboursIntact) {
  const std::vector<uint8_t> before = regions_[1];
  std::vector<std::vector<uint8_t>> src;
  std::vector<Transfer> ts;
  const std::vector<std::pair<uint64_t, uint64_t>> ranges = {{100, 1}, {5000, 4096}, {1 << 20, (2 << 20) + 3}};
  std::mt19937 rng(7);
  for (const auto& [off, size] : ranges) {
    src.emplace_back(size);
    for (auto& b : src.back()) b = static_cast<uint8_t>(rng());
    ts.push_back({TransferKind::kPut, UcxPath::kAuto, 1, off, size, src.back().data()});
  }
  std::vector<absl::Status> results(ts.size());
  ASSERT_TRUE(client_->Execute(peer_, ts, std::span<absl::Status>(results)).ok());
  std::vector<uint8_t> want = before;
  const bool shm_am = std::string(GetParam().tls) != "tcp" && GetParam().path == UcxPath::kAm;
  for (size_t i = 0; i < ts.size(); ++i) {
    if (shm_am && i == 2) {
      // A rendezvous-sized AM put on an endpoint without peer failure detection
      // is refused by the shard (it would have to CMA-pull from the client).
      EXPECT_EQ(results[i].code(), absl::StatusCode::kFailedPrecondition) << results[i];
      continue;
    }
    ASSERT_TRUE(results[i].ok()) << i << ": " << results[i];
    std::memcpy(want.data() + ts[i].offset, src[i].data(), ts[i].size);
  }
  EXPECT_TRUE(want == regions_[1]);
}

TEST_P(UcxTransferTest, OutOfRangeTransfersFailAlone) {
  std::vector<uint8_t> a(4096), b(4096);
  std::vector<Transfer> ts = {
      {TransferKind::kGet, UcxPath::kAuto, 0, kRegionBytes - 10, 4096, a.data()},  // past the end
      {TransferKind::kGet, UcxPath::kAuto, 7, 0, 4096, a.data()},                  // no such region
      {TransferKind::kGet, UcxPath::kAuto, 0, 0, 4096, b.data()},                  // fine
  };
  std::vector<absl::Status> results(ts.size());
  ASSERT_TRUE(client_->Execute(peer_, ts, std::span<absl::Status>(results)).ok());
  EXPECT_EQ(results[0].code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(results[1].code(), absl::StatusCode::kInvalidArgument);
  ASSERT_TRUE(results[2].ok()) << results[2];
  EXPECT_EQ(std::memcmp(b.data(), regions_[0].data(), 4096), 0);
}

// Accept's cap is checked on the worker's thread, where no concurrent Accept can
// pass it at the same time (kvhubd checked its 4096 before a vetting wait of up to
// 5 s, and Connects arriving together all passed).
TEST_P(UcxTransferTest, AcceptRefusesPastItsCap) {
  const uint64_t live = server_->Stats().accepted_peers;  // the fixture's connection
  auto refused = server_->Accept(client_->address(), 0, live);
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kResourceExhausted) << refused.status();
  EXPECT_EQ(server_->Stats().accepted_peers, live);
  auto one_more = server_->Accept(client_->address(), 0, live + 1);
  ASSERT_TRUE(one_more.ok()) << one_more.status();
  ASSERT_TRUE(server_->CloseAccepted(one_more->id).ok());
}

// Anyone who reaches the serving worker's UCX port can send it requests. One that
// was never handed a connection's key (here: it names client_'s connection with
// a wrong key) is served nothing: its gets, puts and calls are dropped unanswered
// and counted, the region keeps its bytes, and the connection's owner goes on.
// The same request with the key is served, so the key is what refuses them.
TEST_P(UcxTransferTest, RequestsWithoutTheConnectionsKeyAreDropped) {
  EXPECT_NE(conn_.key, 0u);
  auto other = server_->Accept(client_->address());
  ASSERT_TRUE(other.ok()) << other.status();
  EXPECT_NE(other->key, conn_.key);
  ASSERT_TRUE(server_->CloseAccepted(other->id).ok());

  auto iw = UcxWorker::Create(client_ctx_.get(), {.name = "intruder"});
  ASSERT_TRUE(iw.ok()) << iw.status();
  std::unique_ptr<UcxWorker> intruder = std::move(*iw);
  auto wrong = intruder->Connect({server_->address(), server_->ServedRegions(), {conn_.id, conn_.key ^ 1}});
  ASSERT_TRUE(wrong.ok()) << wrong.status();
  const std::vector<uint8_t> before = regions_[0];
  std::vector<uint8_t> got(64 << 10, 0), junk(64 << 10, 0xee);
  const UcxWorkerStats s0 = server_->Stats();
  for (size_t size : {size_t{1024}, size_t{64} << 10}) {  // eager and (on tcp) rendezvous puts
    std::vector<Transfer> ts = {{TransferKind::kGet, UcxPath::kAm, 0, 0, size, got.data()},
                                {TransferKind::kPut, UcxPath::kAm, 0, 4096, size, junk.data()}};
    std::vector<absl::Status> results(ts.size());
    ASSERT_TRUE(intruder->Execute(*wrong, ts, std::span<absl::Status>(results), absl::Milliseconds(300)).ok());
    EXPECT_EQ(results[0].code(), absl::StatusCode::kDeadlineExceeded) << size << ": " << results[0];
    EXPECT_EQ(results[1].code(), absl::StatusCode::kDeadlineExceeded) << size << ": " << results[1];
  }
  absl::StatusOr<std::string> call = intruder->CallPeer(*wrong, kReverse, "abc", absl::Milliseconds(300));
  EXPECT_EQ(call.status().code(), absl::StatusCode::kDeadlineExceeded) << call.status();
  EXPECT_EQ(regions_[0], before) << "a put without the key changed the served region";
  EXPECT_EQ(std::count(got.begin(), got.end(), 0), static_cast<long>(got.size())) << "a get without the key got bytes";
  const UcxWorkerStats s1 = server_->Stats();
  EXPECT_EQ(s1.unknown_conn_requests - s0.unknown_conn_requests, 5u);
  EXPECT_EQ(s1.served_get_bytes, s0.served_get_bytes);
  EXPECT_EQ(s1.served_put_bytes, s0.served_put_bytes);
  EXPECT_EQ(s1.served_calls, s0.served_calls);

  // The connection's owner is served as before.
  std::vector<uint8_t> mine(4096);
  std::vector<Transfer> own = {{TransferKind::kGet, UcxPath::kAm, 0, 8192, 4096, mine.data()}};
  std::vector<absl::Status> own_results(1);
  ASSERT_TRUE(client_->Execute(peer_, own, std::span<absl::Status>(own_results)).ok());
  ASSERT_TRUE(own_results[0].ok()) << own_results[0];
  EXPECT_EQ(std::memcmp(mine.data(), regions_[0].data() + 8192, 4096), 0);

  // With the key the server serves the request (and answers the connection it
  // names, so the intruder still hears nothing).
  auto right = intruder->Connect({server_->address(), server_->ServedRegions(), conn_});
  ASSERT_TRUE(right.ok()) << right.status();
  std::vector<Transfer> keyed = {{TransferKind::kGet, UcxPath::kAm, 0, 0, 1024, got.data()}};
  std::vector<absl::Status> keyed_results(1);
  ASSERT_TRUE(intruder->Execute(*right, keyed, std::span<absl::Status>(keyed_results), absl::Milliseconds(300)).ok());
  EXPECT_EQ(server_->Stats().served_get_bytes - s1.served_get_bytes, 1024u + 4096u);
  EXPECT_EQ(server_->Stats().unknown_conn_requests, s1.unknown_conn_requests);
}

TEST_P(UcxTransferTest, ManyConcurrentCallers) {
  constexpr int kThreads = 8, kIters = 20;
  constexpr uint64_t kBlock = 256 << 10;
  std::vector<std::thread> threads;
  std::atomic<int> bad{0};
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::vector<uint8_t> dst(kBlock);
      for (int i = 0; i < kIters; ++i) {
        const uint64_t off = ((t * kIters + i) % 30) * kBlock;
        Transfer tr{TransferKind::kGet, UcxPath::kAuto, static_cast<uint32_t>(i % 2), off, kBlock, dst.data()};
        absl::Status st;
        if (!client_->Execute(peer_, {&tr, 1}, {&st, 1}).ok() || !st.ok() ||
            std::memcmp(dst.data(), regions_[i % 2].data() + off, kBlock) != 0) {
          bad.fetch_add(1);
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(bad.load(), 0);
}

TEST_P(UcxTransferTest, RegisteredClientBuffersAreUsed) {
  std::vector<uint8_t> dst(1 << 20);
  ASSERT_TRUE(client_->registrations().Register(dst.data(), dst.size()).ok());
  Transfer tr{TransferKind::kGet, UcxPath::kAuto, 0, 0, dst.size(), dst.data()};
  absl::Status st;
  ASSERT_TRUE(client_->Execute(peer_, {&tr, 1}, {&st, 1}).ok());
  ASSERT_TRUE(st.ok()) << st;
  EXPECT_EQ(std::memcmp(dst.data(), regions_[0].data(), dst.size()), 0);
  EXPECT_GE(client_->registrations().hits(), 1u);
  ASSERT_TRUE(client_->registrations().Unregister(dst.data()).ok());
}

TEST_P(UcxTransferTest, IdleWorkerSleeps) {
  // Finish wire-up first (one transfer each way uses both endpoints): while UCX
  // still establishes a tcp connection its sockets keep the event fd readable.
  std::vector<uint8_t> buf(4096);
  Transfer tr{TransferKind::kGet, UcxPath::kAuto, 0, 0, buf.size(), buf.data()};
  absl::Status st;
  ASSERT_TRUE(client_->Execute(peer_, {&tr, 1}, {&st, 1}).ok());
  ASSERT_TRUE(st.ok()) << st;
  absl::SleepFor(absl::Milliseconds(100));
  const uint64_t before = client_->Stats().wakeups + server_->Stats().wakeups;
  absl::SleepFor(absl::Milliseconds(500));
  const uint64_t after = client_->Stats().wakeups + server_->Stats().wakeups;
  // idle_wakeup is 200 ms: a sleeping worker wakes a few times, a spinning one millions.
  EXPECT_LT(after - before, 50u);
}

TEST_P(UcxTransferTest, DisconnectedPeerFailsCleanly) {
  ASSERT_TRUE(client_->Disconnect(peer_).ok());
  std::vector<uint8_t> dst(4096);
  Transfer tr{TransferKind::kGet, UcxPath::kAuto, 0, 0, 4096, dst.data()};
  absl::Status st;
  ASSERT_TRUE(client_->Execute(peer_, {&tr, 1}, {&st, 1}).ok());
  EXPECT_EQ(st.code(), absl::StatusCode::kUnavailable);
  EXPECT_EQ(client_->Disconnect(peer_).code(), absl::StatusCode::kNotFound);
}

// A serving worker with AccessHooks: a transfer is served only when its grant is
// what the hook expects for its range (here: offset + 1), and every hold begun is
// ended exactly once, also for refused puts and rendezvous sizes.
class UcxGrantTest : public UcxTransferTest {
 protected:
  UcxWorker::AccessHooks ServerHooks() override {
    UcxWorker::AccessHooks h;
    h.begin = [this](TransferKind kind, uint64_t grant, uint32_t region, uint64_t offset,
                     uint64_t size) -> absl::StatusOr<uint64_t> {
      if (grant != offset + 1) return absl::PermissionDeniedError("test grant refused");
      absl::MutexLock l(&mu_);
      ++begun_;
      peak_held_ = std::max(peak_held_, begun_ - ended_);
      return grant * 2 + (kind == TransferKind::kPut ? 1 : 0);
    };
    h.end = [this](TransferKind kind, uint64_t hold) {
      absl::MutexLock l(&mu_);
      ++ended_;
      if (hold % 2 != (kind == TransferKind::kPut ? 1u : 0u)) ++mismatched_;
      ended_grants_.push_back(hold / 2);
    };
    h.end_grant = [this](uint64_t grant) {
      absl::MutexLock l(&mu_);
      // Always after the hold on that grant has ended.
      if (std::find(ended_grants_.begin(), ended_grants_.end(), grant) == ended_grants_.end()) {
        ++grant_ended_before_hold_;
      }
      grants_ended_.push_back(grant);
    };
    return h;
  }
  // Waits (bounded) until every hold begun has ended: send completions may lag.
  void ExpectHoldsEnded(uint64_t want_begun) {
    const absl::Time until = absl::Now() + absl::Seconds(5);
    for (;;) {
      {
        absl::MutexLock l(&mu_);
        if (ended_ >= begun_ || absl::Now() > until) {
          EXPECT_EQ(begun_, want_begun);
          EXPECT_EQ(ended_, begun_);
          EXPECT_EQ(mismatched_, 0u);
          return;
        }
      }
      absl::SleepFor(absl::Milliseconds(1));
    }
  }
  absl::Mutex mu_;
  uint64_t begun_ ABSL_GUARDED_BY(mu_) = 0, ended_ ABSL_GUARDED_BY(mu_) = 0,
           mismatched_ ABSL_GUARDED_BY(mu_) = 0, grant_ended_before_hold_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t peak_held_ ABSL_GUARDED_BY(mu_) = 0;  // most holds ever begun and not ended at once
  std::vector<uint64_t> ended_grants_ ABSL_GUARDED_BY(mu_);  // grant of every hold ended
  std::vector<uint64_t> grants_ended_ ABSL_GUARDED_BY(mu_);  // AccessHooks::end_grant calls
};

TEST_P(UcxGrantTest, TransfersNeedTheirGrantAndEveryHoldEnds) {
  const std::vector<uint8_t> before_get = regions_[0], before_put = regions_[1];
  const bool tcp = std::string(GetParam().tls) == "tcp";
  struct Case {
    TransferKind kind;
    uint64_t offset, size;
    bool good;
  };
  // Gets from region 0, puts into region 1; eager (64 B) and rendezvous (3 MiB).
  const std::vector<Case> cases = {
      {TransferKind::kGet, 64, 64, true},          {TransferKind::kGet, 4096 + 64, 64, false},
      {TransferKind::kGet, 1 << 20, 3 << 20, true}, {TransferKind::kGet, (4 << 20) + 1, 3 << 20, false},
      {TransferKind::kPut, 100, 64, true},          {TransferKind::kPut, 8192, 64, false},
      {TransferKind::kPut, 1 << 20, 3 << 20, true}, {TransferKind::kPut, (4 << 20) + 3, 3 << 20, false}};
  std::vector<std::vector<uint8_t>> bufs;
  std::vector<Transfer> ts;
  for (const Case& c : cases) {
    bufs.emplace_back(c.size, c.kind == TransferKind::kGet ? 0xEE : 0x5A);
    ts.push_back({c.kind, UcxPath::kAm, c.kind == TransferKind::kGet ? 0u : 1u, c.offset, c.size,
                  bufs.back().data(), c.good ? c.offset + 1 : 7});
  }
  std::vector<absl::Status> results(ts.size());
  ASSERT_TRUE(client_->Execute(peer_, ts, std::span<absl::Status>(results)).ok());
  for (size_t i = 0; i < ts.size(); ++i) {
    const Case& c = cases[i];
    const Transfer& t = ts[i];
    const uint8_t* local = static_cast<const uint8_t*>(t.local);
    // Without peer failure detection (shared memory) the server refuses a
    // rendezvous AM put by design (docs/transport.md); its hold still ends.
    const bool refused_rndv_put = c.good && !tcp && c.kind == TransferKind::kPut && c.size > 64;
    if (!c.good) {
      EXPECT_EQ(results[i].code(), absl::StatusCode::kPermissionDenied) << i << ": " << results[i];
      EXPECT_NE(std::string(results[i].message()).find("test grant refused"), std::string::npos)
          << results[i];
    } else if (refused_rndv_put) {
      EXPECT_EQ(results[i].code(), absl::StatusCode::kFailedPrecondition) << i << ": " << results[i];
    } else {
      EXPECT_TRUE(results[i].ok()) << i << ": " << results[i];
    }
    if (c.kind == TransferKind::kGet && results[i].ok()) {
      EXPECT_EQ(std::memcmp(local, before_get.data() + t.offset, t.size), 0) << i;
    }
    if (c.kind == TransferKind::kPut) {
      const uint8_t* want = results[i].ok() ? local : before_put.data() + t.offset;
      EXPECT_EQ(std::memcmp(regions_[1].data() + t.offset, want, t.size), 0)
          << i << (results[i].ok() ? ": put not written" : ": a refused put wrote the region");
    }
  }
  ExpectHoldsEnded(4);  // the four good transfers, whatever became of them
  absl::MutexLock l(&mu_);
  EXPECT_TRUE(grants_ended_.empty()) << "no transfer asked the server to end its grant";
}

// Transfer::end_grant: the server ends the grant of a get it served, after the
// hold; never for a get it refused, a get that did not ask, or a put.
TEST_P(UcxGrantTest, GetsThatAskEndTheirGrantAfterTheBytesAreOut) {
  struct Case {
    TransferKind kind;
    uint64_t offset, size;
    bool good, end_grant;
  };
  const std::vector<Case> cases = {
      {TransferKind::kGet, 64, 64, true, true},            // eager
      {TransferKind::kGet, 1 << 20, 3 << 20, true, true},  // rendezvous
      {TransferKind::kGet, 4096, 64, true, false},         // did not ask
      {TransferKind::kGet, 8192, 64, false, true},         // refused: the grant is not ended
      {TransferKind::kPut, 100, 64, true, true}};          // puts never end their grant
  std::vector<std::vector<uint8_t>> bufs;
  std::vector<Transfer> ts;
  for (const Case& c : cases) {
    bufs.emplace_back(c.size, 0);
    ts.push_back({c.kind, UcxPath::kAm, c.kind == TransferKind::kGet ? 0u : 1u, c.offset, c.size,
                  bufs.back().data(), c.good ? c.offset + 1 : 7, c.end_grant});
  }
  std::vector<absl::Status> results(ts.size());
  ASSERT_TRUE(client_->Execute(peer_, ts, std::span<absl::Status>(results)).ok());
  for (size_t i = 0; i < ts.size(); ++i) EXPECT_EQ(results[i].ok(), cases[i].good) << i << ": " << results[i];
  ExpectHoldsEnded(4);
  // end_grant runs right after its hold's end, on the serving thread: it may
  // still be on its way when the last hold has ended.
  const absl::Time until = absl::Now() + absl::Seconds(5);
  for (;;) {
    {
      absl::MutexLock l(&mu_);
      if (grants_ended_.size() >= 2 || absl::Now() > until) break;
    }
    absl::SleepFor(absl::Milliseconds(1));
  }
  absl::MutexLock l(&mu_);
  std::vector<uint64_t> got = grants_ended_;
  std::sort(got.begin(), got.end());
  EXPECT_EQ(got, (std::vector<uint64_t>{64 + 1, (1 << 20) + 1}));
  EXPECT_EQ(grant_ended_before_hold_, 0u);
}

INSTANTIATE_TEST_SUITE_P(Transports, UcxGrantTest,
                         ::testing::Values(Param{"tcp", UcxPath::kAm}, Param{"posix,cma", UcxPath::kAm}), Name);

// A peer that sends get requests and does not take the bytes kept every response
// in flight, each holding its served memory (beyond its leases): without bound.
// One connection has at most max_transfers_per_conn in flight (here 2); past it a
// request is refused with RESOURCE_EXHAUSTED before anything is held.
class UcxBusyConnTest : public UcxGrantTest {
 protected:
  std::optional<uint32_t> TransfersPerConn() override { return 2; }
};

TEST_P(UcxBusyConnTest, AConnectionHoldsAtMostItsTransferCap) {
  constexpr uint64_t kSize = 1 << 20;  // rendezvous: in flight until the peer pulls it
  std::vector<std::vector<uint8_t>> bufs;
  std::vector<Transfer> ts;
  for (uint64_t k = 0; k < 32; ++k) {
    const uint64_t off = k * (128 << 10);
    bufs.emplace_back(kSize, 0);
    ts.push_back({TransferKind::kGet, UcxPath::kAm, 0u, off, kSize, bufs.back().data(), off + 1});
  }
  std::vector<absl::Status> results(ts.size());
  ASSERT_TRUE(client_->Execute(peer_, ts, std::span<absl::Status>(results)).ok());
  size_t ok = 0;
  for (size_t i = 0; i < ts.size(); ++i) {
    if (results[i].ok()) {
      ++ok;
      EXPECT_EQ(std::memcmp(bufs[i].data(), regions_[0].data() + ts[i].offset, kSize), 0) << i;
    } else {
      EXPECT_EQ(results[i].code(), absl::StatusCode::kResourceExhausted) << i << ": " << results[i];
      EXPECT_NE(std::string(results[i].message()).find("max_transfers_per_conn"), std::string::npos);
    }
  }
  EXPECT_GE(ok, 1u);
  EXPECT_EQ(server_->Stats().busy_conn_requests, ts.size() - ok);
  ExpectHoldsEnded(ok);  // a refused request begins no hold
  {
    absl::MutexLock l(&mu_);
    EXPECT_LE(peak_held_, 2u) << "a connection held more transfers than its cap";
  }
  // Every transfer that ended gave its place back: one at a time, each is served
  // (a count that never went down would refuse them all now). A refused put (over
  // shared memory, rendezvous AM puts are refused by design) and a refused get
  // (no grant) give theirs back too.
  for (int round = 0; round < 4; ++round) {
    Transfer bad{TransferKind::kGet, UcxPath::kAm, 0u, 4096, kSize, bufs[0].data(), 7};  // grant refused
    absl::Status refused;
    ASSERT_TRUE(client_->Execute(peer_, {&bad, 1}, {&refused, 1}).ok());
    EXPECT_EQ(refused.code(), absl::StatusCode::kPermissionDenied) << refused;
    std::vector<uint8_t> src(kSize, static_cast<uint8_t>(round));
    Transfer put{TransferKind::kPut, UcxPath::kAm, 1u, 0, kSize, src.data(), 1};
    absl::Status put_st;
    ASSERT_TRUE(client_->Execute(peer_, {&put, 1}, {&put_st, 1}).ok());
    EXPECT_NE(put_st.code(), absl::StatusCode::kResourceExhausted) << put_st;
    for (int k = 0; k < 3; ++k) {
      Transfer one{TransferKind::kGet, UcxPath::kAm, 0u, 0, kSize, bufs[0].data(), 1};
      absl::Status st;
      ASSERT_TRUE(client_->Execute(peer_, {&one, 1}, {&st, 1}).ok());
      EXPECT_TRUE(st.ok()) << round << "/" << k << ": " << st;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Transports, UcxBusyConnTest,
                         ::testing::Values(Param{"tcp", UcxPath::kAm}, Param{"posix,cma", UcxPath::kAm}), Name);

INSTANTIATE_TEST_SUITE_P(Transports, UcxTransferTest,
                         ::testing::Values(Param{"tcp", UcxPath::kAm}, Param{"tcp", UcxPath::kRma},
                                           Param{"posix,cma", UcxPath::kAm}, Param{"posix,cma", UcxPath::kRma},
                                           Param{"sysv,cma", UcxPath::kAm}),
                         Name);

// Regions UCX allocated in shared memory (UcxContext::Allocate), reached over
// posix: the client maps them and copies gets and puts on the calling thread
// (param true), or leaves them to the progress thread (false).
class UcxMappedCopyTest : public ::testing::TestWithParam<bool> {
 protected:
  static constexpr uint64_t kRegionBytes = 8ull << 20;

  void SetUp() override {
    UcxConfig cfg;
    cfg.tls = "posix,cma";
    cfg.op_timeout = absl::Seconds(5);
    cfg.require_peer_failure_detection = false;
    cfg.mapped_gets = GetParam();
    cfg.mapped_puts = GetParam();
    ASSERT_NO_FATAL_FAILURE(CreateContexts(cfg, &server_ctx_, &client_ctx_));
    auto mem = server_ctx_->Allocate(kRegionBytes);
    if (!mem.ok()) GTEST_SKIP() << "UCX cannot allocate shared memory here: " << mem.status();
    mem_ = std::move(*mem);
    std::mt19937_64 rng(5);
    auto* base = static_cast<uint8_t*>(mem_->base());
    for (size_t i = 0; i < kRegionBytes; i += 8) {
      const uint64_t v = rng();
      std::memcpy(base + i, &v, 8);
    }
    auto sw = UcxWorker::Create(server_ctx_.get(), {.name = "server", .served = {mem_.get()}});
    ASSERT_TRUE(sw.ok()) << sw.status();
    server_ = std::move(*sw);
    auto cw = UcxWorker::Create(client_ctx_.get(), {.name = "client"});
    ASSERT_TRUE(cw.ok()) << cw.status();
    client_ = std::move(*cw);
    ASSERT_NO_FATAL_FAILURE(Connect());
  }
  void TearDown() override {
    client_.reset();
    server_.reset();
    mem_.reset();
  }
  void Connect() {
    auto conn = server_->Accept(client_->address());
    ASSERT_TRUE(conn.ok()) << conn.status();
    PeerInfo info{server_->address(), server_->ServedRegions(), *conn};
    info.one_sided_shm = true;
    auto peer = client_->Connect(info);
    ASSERT_TRUE(peer.ok()) << peer.status();
    peer_ = *peer;
  }
  const uint8_t* served() const { return static_cast<const uint8_t*>(mem_->base()); }

  std::unique_ptr<UcxContext> server_ctx_, client_ctx_;
  std::unique_ptr<UcxMemory> mem_;
  std::unique_ptr<UcxWorker> server_, client_;
  PeerId peer_ = 0;
};

TEST_P(UcxMappedCopyTest, GetsAreByteExactAndHashedAsTheyLand) {
  const bool mapped = GetParam();
  EXPECT_EQ(client_->Maps(peer_, TransferKind::kGet), mapped);
  EXPECT_EQ(absl::StrContains(client_->PeerTransports(peer_).value_or(""), "mapped gets"), mapped);
  std::vector<uint8_t> a(1 << 20), b(100000), c(4096);
  Transfer::CopyChecksum sa, sb, sc;
  std::vector<Transfer> ts = {
      {TransferKind::kGet, UcxPath::kAuto, 0, 3 << 20, a.size(), a.data(), 0, false, &sa},
      {TransferKind::kGet, UcxPath::kAuto, 0, 12345, b.size(), b.data(), 0, false, &sb},
      {TransferKind::kGet, UcxPath::kAuto, 0, kRegionBytes - 10, c.size(), c.data(), 0, false, &sc},  // past the end
  };
  std::vector<absl::Status> results(ts.size());
  const uint64_t wakeups_before = server_->Stats().wakeups;
  ASSERT_TRUE(client_->Execute(peer_, ts, std::span<absl::Status>(results)).ok());
  ASSERT_TRUE(results[0].ok()) << results[0];
  ASSERT_TRUE(results[1].ok()) << results[1];
  EXPECT_EQ(results[2].code(), absl::StatusCode::kInvalidArgument) << results[2];
  EXPECT_EQ(std::memcmp(a.data(), served() + (3 << 20), a.size()), 0);
  EXPECT_EQ(std::memcmp(b.data(), served() + 12345, b.size()), 0);
  EXPECT_EQ(sa.computed, mapped);
  EXPECT_EQ(sb.computed, mapped);
  EXPECT_FALSE(sc.computed);
  if (mapped) {
    EXPECT_EQ(sa.xxh3_64, Xxh3_64(a.data(), a.size()));
    EXPECT_EQ(sb.xxh3_64, Xxh3_64(b.data(), b.size()));
  }
  const UcxWorkerStats st = client_->Stats();
  EXPECT_EQ(st.get_bytes_rma, a.size() + b.size());
  EXPECT_EQ(st.get_bytes_mapped, mapped ? a.size() + b.size() : 0u);
  EXPECT_EQ(server_->Stats().wakeups, wakeups_before) << "one-sided gets never wake the serving worker";
}

// The region table comes from the shard; the mapping from the key's segments. A
// table that claims more than the segments hold (a hostile or confused shard) is
// refused at Connect: checked against it alone, a copy would run past the mapping.
TEST_P(UcxMappedCopyTest, ARegionTableClaimingMoreThanTheSegmentIsRefused) {
  auto conn = server_->Accept(client_->address());
  ASSERT_TRUE(conn.ok()) << conn.status();
  std::vector<RemoteRegionInfo> regions = server_->ServedRegions();
  ASSERT_EQ(regions.size(), 1u);
  for (const uint64_t claimed : {uint64_t{1} << 30, ~uint64_t{0} - regions[0].base}) {
    std::vector<RemoteRegionInfo> forged = regions;
    forged[0].size = claimed;
    PeerInfo info{server_->address(), forged, *conn};
    info.one_sided_shm = true;
    auto peer = client_->Connect(info);
    ASSERT_FALSE(peer.ok()) << "a region of " << claimed << " bytes was accepted";
    EXPECT_EQ(peer.status().code(), absl::StatusCode::kDataLoss) << peer.status();
    EXPECT_TRUE(absl::StrContains(peer.status().message(), "outside the shared-memory segments")) << peer.status();
  }
  // A base moved before the segment's start: refused too.
  std::vector<RemoteRegionInfo> shifted = regions;
  shifted[0].base -= 4096;
  PeerInfo info{server_->address(), shifted, *conn};
  info.one_sided_shm = true;
  EXPECT_EQ(client_->Connect(info).status().code(), absl::StatusCode::kDataLoss);
  // The true table still connects, and copies the last byte of the region.
  PeerInfo good{server_->address(), regions, *conn};
  good.one_sided_shm = true;
  auto peer = client_->Connect(good);
  ASSERT_TRUE(peer.ok()) << peer.status();
  uint8_t last = 0;
  Transfer t{TransferKind::kGet, UcxPath::kAuto, 0, kRegionBytes - 1, 1, &last};
  absl::Status st;
  ASSERT_TRUE(client_->Execute(*peer, {&t, 1}, {&st, 1}).ok());
  ASSERT_TRUE(st.ok()) << st;
  EXPECT_EQ(last, served()[kRegionBytes - 1]);
}

// A key whose shared-memory segments cannot be read here (its layout does not
// parse, as another UCX version's would not) gives no bound to check copies
// against: over shared memory Connect is refused, mapped or not (UCX's own RMA
// there checks no bounds either).
TEST_P(UcxMappedCopyTest, AKeyWhoseSegmentsCannotBeReadIsRefused) {
  auto conn = server_->Accept(client_->address());
  ASSERT_TRUE(conn.ok()) << conn.status();
  std::vector<RemoteRegionInfo> regions = server_->ServedRegions();
  regions[0].packed_rkey.push_back('\0');  // UCX unpacks it; its layout no longer parses
  PeerInfo info{server_->address(), regions, *conn};
  info.one_sided_shm = true;
  auto peer = client_->Connect(info);
  ASSERT_FALSE(peer.ok());
  EXPECT_EQ(peer.status().code(), absl::StatusCode::kUnavailable) << peer.status();
  EXPECT_TRUE(absl::StrContains(peer.status().message(), "cannot be read here")) << peer.status();
}

TEST_P(UcxMappedCopyTest, DisconnectWaitsForCopiesInFlightAndLaterGetsFailCleanly) {
  // Readers copy 1 MiB blocks in a loop while the peer is dropped and
  // reconnected under them: every get is byte-exact or fails with UNAVAILABLE
  // (peer gone); none reads an unmapped segment (ASan / a crash would say so).
  constexpr int kThreads = 3;
  constexpr uint64_t kBlock = 1 << 20;
  std::atomic<bool> stop{false};
  std::atomic<PeerId> peer{peer_};
  std::atomic<int> ok{0}, gone{0}, bad{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::vector<uint8_t> dst(kBlock);
      for (uint64_t i = 0; !stop.load(); ++i) {
        const uint64_t off = ((t * 7 + i) % 8) * kBlock;
        Transfer tr{TransferKind::kGet, UcxPath::kAuto, 0, off, kBlock, dst.data()};
        absl::Status st;
        if (!client_->Execute(peer.load(), {&tr, 1}, {&st, 1}).ok()) {
          bad.fetch_add(1);
        } else if (st.ok()) {
          if (std::memcmp(dst.data(), served() + off, kBlock) == 0) {
            ok.fetch_add(1);
          } else {
            bad.fetch_add(1);
          }
        } else if (st.code() == absl::StatusCode::kUnavailable) {
          gone.fetch_add(1);
        } else {
          bad.fetch_add(1);
        }
      }
    });
  }
  for (int round = 0; round < 20; ++round) {
    absl::SleepFor(absl::Milliseconds(5));
    ASSERT_TRUE(client_->Disconnect(peer.load()).ok());
    absl::SleepFor(absl::Milliseconds(1));
    ASSERT_NO_FATAL_FAILURE(Connect());
    peer.store(peer_);
  }
  absl::SleepFor(absl::Milliseconds(5));
  stop.store(true);
  for (auto& th : threads) th.join();
  EXPECT_EQ(bad.load(), 0);
  EXPECT_GT(ok.load(), 0);
  std::printf("gets: %d ok, %d failed cleanly (peer gone)\n", ok.load(), gone.load());
}

TEST_P(UcxMappedCopyTest, PutsLandExactlyInTheirRangeAndLeaveNeighboursIntact) {
  const bool mapped = GetParam();
  EXPECT_EQ(client_->Maps(peer_, TransferKind::kPut), mapped);
  std::vector<uint8_t> before(served(), served() + kRegionBytes);
  std::vector<uint8_t> a(1 << 20, 0x5A), b(4096, 0x33);
  std::vector<Transfer> ts = {
      {TransferKind::kPut, UcxPath::kAuto, 0, 2 << 20, a.size(), a.data()},
      {TransferKind::kPut, UcxPath::kAuto, 0, kRegionBytes - 100, b.size(), b.data()},  // past the end
  };
  std::vector<absl::Status> results(ts.size());
  const uint64_t wakeups_before = server_->Stats().wakeups;
  ASSERT_TRUE(client_->Execute(peer_, ts, std::span<absl::Status>(results)).ok());
  ASSERT_TRUE(results[0].ok()) << results[0];
  EXPECT_EQ(results[1].code(), absl::StatusCode::kInvalidArgument) << results[1];
  EXPECT_EQ(std::memcmp(served() + (2 << 20), a.data(), a.size()), 0);
  EXPECT_EQ(std::memcmp(served(), before.data(), 2 << 20), 0) << "bytes before the range changed";
  EXPECT_EQ(std::memcmp(served() + (3 << 20), before.data() + (3 << 20), kRegionBytes - (3 << 20)), 0)
      << "bytes after the range changed";
  const UcxWorkerStats st = client_->Stats();
  EXPECT_EQ(st.put_bytes_rma, a.size());
  EXPECT_EQ(st.put_bytes_mapped, mapped ? a.size() : 0u);
  if (mapped) {
    EXPECT_EQ(server_->Stats().wakeups, wakeups_before) << "mapped puts never wake the serving worker";
  }
}

TEST_P(UcxMappedCopyTest, NoCopyStartsPastItsDeadline) {
  if (!GetParam()) GTEST_SKIP() << "the progress thread checks the deadline only while it waits";
  std::vector<uint8_t> a(4096, 0x77);
  std::vector<uint8_t> before(served(), served() + a.size());
  Transfer t{TransferKind::kPut, UcxPath::kAuto, 0, 0, a.size(), a.data()};
  absl::Status st;
  ASSERT_TRUE(client_->Execute(peer_, {&t, 1}, {&st, 1}, absl::Nanoseconds(1)).ok());
  EXPECT_EQ(st.code(), absl::StatusCode::kDeadlineExceeded) << st;
  EXPECT_EQ(std::memcmp(served(), before.data(), a.size()), 0) << "a late put wrote";
}

// Where no lane is one-sided (tcp here), UCX serves a peer's RMA in software at
// whatever address the message names. A context made without RMA (kvhubd's on tcp,
// its address vetter's and its probe's) serves none: an RMA get aimed at it is not
// answered and copies nothing, while active messages still move the same bytes. A
// worker on such a context refuses to be told to use RMA.
TEST(UcxNoRmaTest, AContextWithoutRmaServesNoPeerRmaAndIssuesNone) {
  UcxConfig server_cfg;
  server_cfg.tls = "tcp";
  server_cfg.rma = false;
  UcxConfig client_cfg;
  client_cfg.tls = "tcp";
  client_cfg.op_timeout = absl::Milliseconds(800);
  auto sctx = UcxContext::Create(server_cfg);
  ASSERT_TRUE(sctx.ok()) << sctx.status();
  auto cctx = UcxContext::Create(client_cfg);
  ASSERT_TRUE(cctx.ok()) << cctx.status();
  constexpr uint64_t kBytes = 1 << 20;
  std::vector<uint8_t> region(kBytes);
  for (size_t i = 0; i < kBytes; ++i) region[i] = static_cast<uint8_t>(i * 7 + 3);
  auto mem = (*sctx)->Register(region.data(), kBytes);
  ASSERT_TRUE(mem.ok()) << mem.status();
  UcxWorker::Options so;
  so.name = "server";
  so.served.push_back(mem->get());
  auto server = UcxWorker::Create(sctx->get(), so);
  ASSERT_TRUE(server.ok()) << server.status();
  auto client = UcxWorker::Create(cctx->get(), {.name = "client"});
  ASSERT_TRUE(client.ok()) << client.status();
  auto conn = (*server)->Accept((*client)->address());
  ASSERT_TRUE(conn.ok()) << conn.status();
  auto peer = (*client)->Connect({(*server)->address(), (*server)->ServedRegions(), *conn});
  ASSERT_TRUE(peer.ok()) << peer.status();

  std::vector<uint8_t> dst(64 << 10, 0xEE);
  Transfer am{TransferKind::kGet, UcxPath::kAm, 0, 4096, dst.size(), dst.data()};
  absl::Status st;
  ASSERT_TRUE((*client)->Execute(*peer, {&am, 1}, {&st, 1}).ok());
  ASSERT_TRUE(st.ok()) << st;
  EXPECT_EQ(std::memcmp(dst.data(), region.data() + 4096, dst.size()), 0);

  std::fill(dst.begin(), dst.end(), 0xEE);
  Transfer rma{TransferKind::kGet, UcxPath::kRma, 0, 4096, dst.size(), dst.data()};
  const absl::Status call = (*client)->Execute(*peer, {&rma, 1}, {&st, 1});
  EXPECT_FALSE(call.ok() && st.ok()) << "an RMA get was served by a context without RMA";
  EXPECT_TRUE(std::all_of(dst.begin(), dst.end(), [](uint8_t b) { return b == 0xEE; }))
      << "bytes of the region arrived by RMA";
  client->reset();

  // Told to use RMA, a worker on a context without it refuses to connect.
  UcxConfig forced = server_cfg;
  forced.get_path = UcxPath::kRma;
  auto fctx = UcxContext::Create(forced);
  ASSERT_TRUE(fctx.ok()) << fctx.status();
  auto forced_client = UcxWorker::Create(fctx->get(), {.name = "forced"});
  ASSERT_TRUE(forced_client.ok()) << forced_client.status();
  auto conn2 = (*server)->Accept((*forced_client)->address());
  ASSERT_TRUE(conn2.ok()) << conn2.status();
  auto refused = (*forced_client)->Connect({(*server)->address(), (*server)->ServedRegions(), *conn2});
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kFailedPrecondition) << refused.status();
  EXPECT_TRUE(absl::StrContains(refused.status().message(), "no RMA")) << refused.status();
}

INSTANTIATE_TEST_SUITE_P(MappedCopies, UcxMappedCopyTest, ::testing::Bool(),
                         [](const ::testing::TestParamInfo<bool>& p) { return p.param ? "mapped" : "progress_thread"; });

}  // namespace
}  // namespace kvhub::transport
