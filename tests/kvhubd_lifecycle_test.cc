// kvhubd as a process: HTTP endpoints, SIGTERM drain, bad configuration, ready file.
#include <httplib.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "grpcpp/generic/generic_stub.h"
#include "nlohmann/json.hpp"
#include "absl/time/clock.h"
#include "common/version.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/kvhub_test_util.h"
#include "tests/testing/kvhubd_process.h"
#include "tests/testing/run_command.h"

namespace kvhub::testing {
namespace {

using ::testing::HasSubstr;

// A TCP connection to 127.0.0.1:port that sends nothing; -1 on failure.
int ConnectLoopback(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return -1;
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

httplib::Result HttpGet(const KvhubdProcess& p, const char* path) {
  httplib::Client cli("127.0.0.1", p.http_port());
  cli.set_connection_timeout(5);
  cli.set_read_timeout(5);
  return cli.Get(path);
}

TEST(KvhubdLifecycleTest, HttpEndpointsAndMetrics) {
  auto p = KvhubdProcess::Start({.flags = {"--shutdown_timeout_ms=1000", "--capacity_bytes=64MiB", "--region_bytes=64MiB", "--max_block_bytes=1MiB", "--log_level=warn"}});
  ASSERT_TRUE(p.ok()) << p.status();
  auto stub = NewKvHubStub((*p)->grpc_address());
  std::string data = TestBlock(1, 4096);
  {
    v1::PutResponse resp;
    ASSERT_TRUE(PutOne(*stub, "tenant-a", 1, data, Checksum(data), &resp).ok());
    ASSERT_EQ(resp.items(0).code(), 0);
  }
  {
    v1::LookupRequest req;
    req.set_namespace_("tenant-a");
    req.set_keys(TestKey(1) + TestKey(2));
    req.set_block_tokens(256);
    req.set_model("llama-3-8b");
    req.set_prefix(true);
    v1::LookupResponse resp;
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub->Lookup(&ctx, req, &resp).ok());
    EXPECT_EQ(resp.prefix_hits(), 1u);
  }

  auto healthz = HttpGet(**p, "/healthz");
  ASSERT_TRUE(healthz);
  EXPECT_EQ(healthz->status, 200);
  auto readyz = HttpGet(**p, "/readyz");
  ASSERT_TRUE(readyz);
  EXPECT_EQ(readyz->status, 200);
  auto metrics = HttpGet(**p, "/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_EQ(metrics->status, 200);
  const std::string& m = metrics->body;
  EXPECT_THAT(m, HasSubstr("kvhub_lookup_requested_tokens_total{namespace=\"tenant-a\",model=\"llama-3-8b\"} 512"));
  EXPECT_THAT(m, HasSubstr("kvhub_lookup_hit_tokens_total{namespace=\"tenant-a\",model=\"llama-3-8b\"} 256"));
  EXPECT_THAT(m, HasSubstr("kvhub_put_bytes_total{namespace=\"tenant-a\"} 4096"));
  EXPECT_THAT(m, HasSubstr("kvhub_tier_capacity_bytes{tier=\"host\"} 67108864"));
  EXPECT_THAT(m, HasSubstr("kvhub_tier_blocks{tier=\"host\"} 1"));
  EXPECT_THAT(m, HasSubstr("kvhub_rpc_latency_seconds_count{method=\"Lookup\"} 1"));
  EXPECT_THAT(m, HasSubstr("kvhub_checksum_failures_total 0"));
  EXPECT_THAT(m, HasSubstr("\nkvhub_grpc_listener_failed 0\n"));
  EXPECT_THAT(m, HasSubstr("kvhub_eviction_policy_info{policy=\"s3fifo\",active=\"s3fifo\"} 1"));
  EXPECT_THAT(m, HasSubstr("kvhub_eviction_policy_switches_total 0"));
  auto dash = HttpGet(**p, "/dashboard");
  ASSERT_TRUE(dash);
  EXPECT_EQ(dash->status, 200);
  EXPECT_THAT(dash->body, HasSubstr("/metrics"));
  {
    httplib::Client cli("127.0.0.1", (*p)->http_port());
    cli.set_connection_timeout(5);
    cli.set_read_timeout(5);
    auto post = cli.Post("/metrics", "x", "text/plain");
    ASSERT_TRUE(post);
    EXPECT_EQ(post->status, 405);
    EXPECT_EQ(post->get_header_value("Allow"), "GET, HEAD");
    auto del = cli.Delete("/readyz");
    ASSERT_TRUE(del);
    EXPECT_EQ(del->status, 405);
    auto head = cli.Head("/healthz");
    ASSERT_TRUE(head);
    EXPECT_EQ(head->status, 200);
    auto missing = cli.Get("/nope");
    ASSERT_TRUE(missing);
    EXPECT_EQ(missing->status, 404);
  }
  EXPECT_EQ((*p)->Stop().value_or(-1), 0);
}

// The dashboard shows namespace and model names, which come from clients (a Lookup's
// `model` is any printable string). They must reach the page as text: a model named
// like an HTML element used to be inserted as markup (script in an operator's browser).
// Runs the page's own script with node against the shard (tests/testing/dashboard_render.js).
TEST(KvhubdLifecycleTest, DashboardShowsClientSuppliedNamesAsText) {
  auto p = KvhubdProcess::Start({.flags = {"--capacity_bytes=64MiB", "--region_bytes=64MiB", "--max_block_bytes=1MiB", "--log_level=warn"}});
  ASSERT_TRUE(p.ok()) << p.status();
  auto stub = NewKvHubStub((*p)->grpc_address());
  const std::string evil = "<img src=x onerror=alert(1)>&'\"";
  {
    v1::LookupRequest req;
    req.set_namespace_("tenant-a");
    req.set_keys(TestKey(1));
    req.set_block_tokens(256);
    req.set_model(evil);
    req.set_prefix(true);
    v1::LookupResponse resp;
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub->Lookup(&ctx, req, &resp).ok());
  }
  const char* src = std::getenv("KVHUB_SOURCE_DIR");
  const std::string script = std::string(src != nullptr ? src : ".") + "/tests/testing/dashboard_render.js";
  // node's own stderr (a warning) goes to the test's log, not into the JSON parsed below.
  CommandResult r = RunCommand("node " + script + " http://127.0.0.1:" + std::to_string((*p)->http_port()));
  ASSERT_EQ(r.exit_code, 0) << "node (Debian package nodejs, installed by scripts/install-deps.sh; its stderr "
                               "is above): "
                            << r.out;
  auto page = nlohmann::json::parse(r.out, nullptr, /*allow_exceptions=*/false);
  ASSERT_FALSE(page.is_discarded()) << r.out;
  const std::string hits = page["hits"]["innerHTML"].get<std::string>();
  EXPECT_THAT(hits, HasSubstr("<td>tenant-a</td><td>&lt;img src=x onerror=alert(1)&gt;&amp;&#39;&quot;</td><td>256</td>"));
  EXPECT_THAT(hits, ::testing::Not(HasSubstr("<img")));
  // The rest of the page still renders: the tier bar is markup the page builds itself.
  EXPECT_THAT(page["tiers"]["innerHTML"].get<std::string>(), HasSubstr("<span class=\"bar\">"));
  EXPECT_THAT(page["summary"]["innerHTML"].get<std::string>(), HasSubstr("<td>0.0%</td>"));
  EXPECT_EQ(page["state"]["textContent"].get<std::string>(), "(serving)");
  EXPECT_EQ((*p)->Stop().value_or(-1), 0);
}

// Connections that sit idle on the HTTP port (keep-alives, scanners) or send their
// request a byte at a time must not hold up the probes: each idle one used to hold
// one of 2 threads for 5 s, so with 40 of them /healthz answered after 100 s, long
// after a Kubernetes liveness probe (1 s) would have restarted the pod.
TEST(KvhubdLifecycleTest, IdleAndTricklingHttpConnectionsDoNotHoldUpProbes) {
  auto p = KvhubdProcess::Start({.flags = {"--capacity_bytes=64MiB", "--region_bytes=64MiB", "--max_block_bytes=1MiB",
                                           "--log_level=warn"}});
  ASSERT_TRUE(p.ok()) << p.status();
  std::vector<int> idle;
  for (int i = 0; i < 40; ++i) {
    const int fd = ConnectLoopback((*p)->http_port());
    ASSERT_GE(fd, 0);
    idle.push_back(fd);
  }
  auto probe = [&](const std::string& what) {
    for (const char* path : {"/healthz", "/readyz"}) {
      httplib::Client cli("127.0.0.1", (*p)->http_port());
      cli.set_connection_timeout(1);
      cli.set_read_timeout(1);  // a Kubernetes probe's default timeout
      auto r = cli.Get(path);
      ASSERT_TRUE(r) << path << " did not answer within 1 s with " << what;
      EXPECT_EQ(r->status, 200);
    }
  };
  probe("40 idle connections open");
  // 200 more that send a header byte every 200 ms: with cpp-httplib's thread per
  // connection and per-read timeouts 130 of them kept /healthz from answering at all
  // (session 15); the event-loop listener closes each at its request deadline.
  std::vector<int> trickling;
  for (int i = 0; i < 200; ++i) {
    const int fd = ConnectLoopback((*p)->http_port());
    ASSERT_GE(fd, 0);
    trickling.push_back(fd);
  }
  const std::string slow = "GET /metrics HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaa";
  for (size_t round = 0; round < 10; ++round) {
    for (int fd : trickling) (void)send(fd, &slow[round], 1, MSG_NOSIGNAL);
    probe(absl::StrCat("200 connections trickling a header byte every 200 ms (round ", round, ")"));
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  for (int fd : trickling) close(fd);
  for (int fd : idle) close(fd);
  EXPECT_EQ((*p)->Stop().value_or(-1), 0);
}

// Connections to the gRPC port that never send a byte (a port scanner, an attacker)
// are closed at grpc_handshake_timeout_ms; gRPC's own 120 s let 600 of them use up a
// shard's 512 descriptors and every new client was refused (session 16).
TEST(KvhubdLifecycleTest, GrpcConnectionsThatNeverHandshakeAreClosed) {
  auto p = KvhubdProcess::Start({.flags = {"--capacity_bytes=64MiB", "--region_bytes=64MiB", "--max_block_bytes=1MiB",
                                           "--log_level=warn", "--grpc_handshake_timeout_ms=500"}});
  ASSERT_TRUE(p.ok()) << p.status();
  std::vector<int> silent;
  for (int i = 0; i < 20; ++i) {
    const int fd = ConnectLoopback((*p)->grpc_port());
    ASSERT_GE(fd, 0);
    timeval tv{10, 0};  // far beyond the timeout: a recv that returns in time saw the close
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    silent.push_back(fd);
  }
  const auto start = std::chrono::steady_clock::now();
  for (int fd : silent) {
    char buf[256];
    ssize_t n;
    do {  // gRPC may send its SETTINGS first; then the close
      n = recv(fd, buf, sizeof(buf), 0);
    } while (n > 0);
    EXPECT_TRUE(n == 0 || errno == ECONNRESET) << "recv: " << n << " errno " << errno;
    close(fd);
  }
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(8));
  // A real client is served as before.
  auto stub = NewKvHubStub((*p)->grpc_address());
  v1::PutResponse resp;
  const std::string data = TestBlock(3, 4096);
  ASSERT_TRUE(PutOne(*stub, "tenant-a", 3, data, Checksum(data), &resp).ok());
  EXPECT_EQ(resp.items(0).code(), 0);
  EXPECT_EQ((*p)->Stop().value_or(-1), 0);
}

// gRPC 1.51 stops accepting for good once accept4 fails for want of descriptors
// (grpc/grpc#20418). The shard cannot recover by itself, so it says so: /healthz and
// /readyz answer 503 with the reason (Kubernetes then restarts it) and the metric is 1.
TEST(KvhubdLifecycleTest, GrpcListenerOutOfDescriptorsFailsHealthz) {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  // UBSan's vptr check asks whether memory is readable by writing it to a pipe; a
  // process out of descriptors gets no pipe, so the check reports an invalid vptr and
  // aborts the sanitized kvhubd (seen in `make asan`). The plain build runs this.
  GTEST_SKIP() << "a sanitized kvhubd cannot run out of descriptors: UBSan needs a pipe for its vptr checks";
#endif
  auto p = KvhubdProcess::Start({.flags = {"--capacity_bytes=64MiB", "--region_bytes=64MiB", "--max_block_bytes=1MiB",
                                           "--log_level=error", "--grpc_handshake_timeout_ms=300"},
                                 .max_open_files = 160});
  ASSERT_TRUE(p.ok()) << p.status();
  {
    auto healthz = HttpGet(**p, "/healthz");
    ASSERT_TRUE(healthz);
    EXPECT_EQ(healthz->status, 200);
  }
  std::vector<int> silent;
  for (int i = 0; i < 200; ++i) {  // more than the shard's 160 descriptors
    const int fd = ConnectLoopback((*p)->grpc_port());
    ASSERT_GE(fd, 0);
    silent.push_back(fd);
  }
  absl::SleepFor(absl::Seconds(1));  // gRPC accepts what it can, then fails
  for (int fd : silent) close(fd);
  // The handshake timeout frees the shard's descriptors, so the HTTP listener answers.
  int status = 0;
  std::string body;
  for (int i = 0; i < 100 && status != 503; ++i) {
    absl::SleepFor(absl::Milliseconds(100));
    if (auto r = HttpGet(**p, "/healthz")) {
      status = r->status;
      body = r->body;
    }
  }
  EXPECT_EQ(status, 503);
  EXPECT_THAT(body, HasSubstr("grpc listener stopped (Failed accept4: Too many open files)"));
  auto readyz = HttpGet(**p, "/readyz");
  ASSERT_TRUE(readyz);
  EXPECT_EQ(readyz->status, 503);
  EXPECT_THAT(readyz->body, HasSubstr("restart"));
  auto metrics = HttpGet(**p, "/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_THAT(metrics->body, HasSubstr("\nkvhub_grpc_listener_failed 1\n"));
  EXPECT_EQ((*p)->Stop().value_or(-1), 0);
}

TEST(KvhubdLifecycleTest, SigtermDrainsThenExitsZero) {
  auto p = KvhubdProcess::Start(
      {.flags = {"--shutdown_timeout_ms=1000", "--capacity_bytes=64MiB", "--region_bytes=64MiB", "--max_block_bytes=1MiB", "--drain_grace_ms=5000", "--log_level=warn"}});  // room for a loaded CI machine
  ASSERT_TRUE(p.ok()) << p.status();
  auto stub = NewKvHubStub((*p)->grpc_address());
  std::string data = TestBlock(3, 10000);
  auto put = [&](uint64_t k) {
    v1::PutResponse resp;
    return PutOne(*stub, "ns", k, data, Checksum(data), &resp);
  };
  ASSERT_TRUE(put(1).ok());

  ASSERT_TRUE((*p)->Signal(SIGTERM).ok());
  // During the drain grace: readyz 503, Health DRAINING, puts refused, reads served.
  bool saw_503 = false;
  for (int i = 0; i < 100 && !saw_503; ++i) {
    auto r = HttpGet(**p, "/readyz");
    saw_503 = r && r->status == 503;
    if (!saw_503) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  EXPECT_TRUE(saw_503);
  {
    v1::HealthResponse h;
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub->Health(&ctx, v1::HealthRequest(), &h).ok());
    EXPECT_EQ(h.state(), v1::HealthResponse::DRAINING);
  }
  EXPECT_EQ(put(2).error_code(), grpc::StatusCode::UNAVAILABLE);
  {
    v1::GetRequest req;
    req.set_namespace_("ns");
    req.set_keys(TestKey(1));
    req.set_inline_data(true);
    v1::GetResponse resp;
    grpc::ClientContext ctx;
    ASSERT_TRUE(stub->Get(&ctx, req, &resp).ok());
    EXPECT_EQ(resp.blocks(0).data(), data);
  }
  absl::StatusOr<int> code = (*p)->Wait(absl::Seconds(20));
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 0);
}

TEST(KvhubdLifecycleTest, InFlightStreamFinishesDuringShutdown) {
  auto p = KvhubdProcess::Start({.flags = {"--shutdown_timeout_ms=1000", "--capacity_bytes=64MiB", "--region_bytes=64MiB", "--max_block_bytes=4MiB",
                                           "--get_stream_chunk_bytes=4KiB", "--log_level=warn"}});
  ASSERT_TRUE(p.ok()) << p.status();
  auto stub = NewKvHubStub((*p)->grpc_address());
  std::string data = TestBlock(9, 4 << 20);
  {
    v1::PutResponse resp;
    ASSERT_TRUE(PutOne(*stub, "ns", 9, data, Checksum(data), &resp).ok());
    ASSERT_EQ(resp.items(0).code(), 0);
  }
  v1::GetRequest req;
  req.set_namespace_("ns");
  req.set_keys(TestKey(9));
  grpc::ClientContext ctx;
  auto reader = stub->GetStream(&ctx, req);
  v1::GetChunk chunk;
  ASSERT_TRUE(reader->Read(&chunk));
  std::string got = chunk.data();
  // 1024 chunks of 4 KiB: most are still to come when the server is told to stop.
  ASSERT_TRUE((*p)->Signal(SIGTERM).ok());
  std::this_thread::sleep_for(std::chrono::milliseconds(300));
  while (reader->Read(&chunk)) got += chunk.data();
  grpc::Status s = reader->Finish();
  EXPECT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(got, data);
  absl::StatusOr<int> code = (*p)->Wait(absl::Seconds(20));
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 0);
}

// A counter or gauge (no labels) from /metrics; -1 if absent.
double MetricValue(const KvhubdProcess& p, const std::string& name) {
  httplib::Result r = HttpGet(p, "/metrics");
  if (!r || r->status != 200) return -1;
  std::istringstream lines(r->body);
  for (std::string line; std::getline(lines, line);) {
    if (line.rfind(name + " ", 0) == 0) return std::atof(line.c_str() + name.size() + 1);
  }
  return -1;
}

// A channel on a connection of its own (reading on one stream of a connection opens
// the connection's flow-control window, and other streams' bytes flow with it)
// whose windows stay at HTTP/2's initial 64 KiB unless the application reads:
// without BDP probing gRPC's transport does not buffer ahead of the reader, as a
// peer that never sends WINDOW_UPDATE would not.
std::shared_ptr<grpc::Channel> OwnConnection(const std::string& address) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
  args.SetInt(GRPC_ARG_HTTP2_BDP_PROBE, 0);
  args.SetMaxReceiveMessageSize(300 << 20);
  return grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args);
}

uint64_t LeasedBlocks(v1::KvHub::Stub& stub) {
  grpc::ClientContext ctx;
  v1::StatsRequest req;
  v1::StatsResponse resp;
  if (!stub.Stats(&ctx, req, &resp).ok() || resp.tiers_size() == 0) return ~0ull;
  return resp.tiers(0).leased_blocks();  // the host tier
}

// A Get or GetStream whose peer stops reading (its gRPC transport alive, so
// keepalive never closes the connection) held its blocks unevictable for ever:
// zero-copy responses keep a transfer hold until gRPC drops them, and flow control
// only pauses such a stream. kvhubd now cancels a response that makes no progress
// for stalled_send_ms; a reader that is slow but reading is left alone.
TEST(KvhubdLifecycleTest, AReaderThatStopsReadingIsCutOffAndItsBlocksFreed) {
  auto p = KvhubdProcess::Start({.flags = {"--capacity_bytes=96MiB", "--region_bytes=96MiB", "--max_block_bytes=16MiB",
                                           "--get_stream_chunk_bytes=1MiB", "--stalled_send_ms=1000",
                                           "--expiry_interval_ms=100", "--default_lease_ms=1000", "--max_lease_ms=1000",
                                           "--log_level=warn"}});
  ASSERT_TRUE(p.ok()) << p.status();
  auto stub = NewKvHubStub((*p)->grpc_address());
  std::vector<std::string> data;
  for (uint64_t k = 1; k <= 3; ++k) {
    data.push_back(TestBlock(k, k == 3 ? 8 << 20 : 16 << 20));
    v1::PutResponse resp;
    ASSERT_TRUE(PutOne(*stub, "ns", k, data.back(), Checksum(data.back()), &resp).ok());
    ASSERT_EQ(resp.items(0).code(), 0);
  }
  // Block 1 by GetStream, block 2 by inline Get, each on a connection of its own;
  // neither response is read.
  auto stream_stub = v1::KvHub::NewStub(OwnConnection((*p)->grpc_address()));
  v1::GetRequest stream_req;
  stream_req.set_namespace_("ns");
  stream_req.set_keys(TestKey(1));
  grpc::ClientContext stream_ctx;
  std::unique_ptr<grpc::ClientReader<v1::GetChunk>> stalled = stream_stub->GetStream(&stream_ctx, stream_req);
  // The unary Get as a generic call: its request is sent, and no read asks for the
  // response (a unary stub would read it).
  grpc::GenericStub generic(OwnConnection((*p)->grpc_address()));
  grpc::CompletionQueue cq;
  grpc::ClientContext get_ctx;
  std::unique_ptr<grpc::GenericClientAsyncReaderWriter> get_call =
      generic.PrepareCall(&get_ctx, "/kvhub.v1.KvHub/Get", &cq);
  auto step = [&cq](int want) {
    void* tag = nullptr;
    bool ok = false;
    return cq.Next(&tag, &ok) && tag == reinterpret_cast<void*>(static_cast<intptr_t>(want)) && ok;
  };
  get_call->StartCall(reinterpret_cast<void*>(1));
  ASSERT_TRUE(step(1));
  v1::GetRequest get_req;
  get_req.set_namespace_("ns");
  get_req.set_keys(TestKey(2));
  get_req.set_inline_data(true);
  std::string get_bytes = get_req.SerializeAsString();
  grpc::Slice get_slice(get_bytes);
  grpc::ByteBuffer get_buf(&get_slice, 1);
  get_call->Write(get_buf, reinterpret_cast<void*>(2));
  ASSERT_TRUE(step(2));
  get_call->WritesDone(reinterpret_cast<void*>(3));
  ASSERT_TRUE(step(3));

  // Block 3 by a GetStream read slowly: one 1 MiB chunk every 200 ms, 1.6 s in all.
  v1::GetRequest slow_req;
  slow_req.set_namespace_("ns");
  slow_req.set_keys(TestKey(3));
  grpc::ClientContext slow_ctx;
  std::unique_ptr<grpc::ClientReader<v1::GetChunk>> slow = stub->GetStream(&slow_ctx, slow_req);
  std::string slow_got;
  v1::GetChunk chunk;
  while (slow->Read(&chunk)) {
    slow_got += chunk.data();
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  grpc::Status slow_status = slow->Finish();
  EXPECT_TRUE(slow_status.ok()) << slow_status.error_message();
  EXPECT_TRUE(slow_got == data[2]) << "the slow reader got " << slow_got.size() << " bytes";

  // The stalled two are cancelled and their blocks' holds end.
  double cancelled = 0;
  uint64_t leased = ~0ull;
  for (int i = 0; i < 200 && (cancelled < 2 || leased != 0); ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
    cancelled = MetricValue(**p, "kvhub_stalled_sends_cancelled_total");
    leased = LeasedBlocks(*stub);
  }
  EXPECT_EQ(cancelled, 2) << "leased " << leased;
  EXPECT_EQ(leased, 0u);
  // Both callers see the cancel once they read.
  v1::GetChunk unread;
  while (stalled->Read(&unread)) {
  }
  grpc::Status s = stalled->Finish();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::CANCELLED) << s.error_message();
  grpc::ByteBuffer get_resp;
  get_call->Read(&get_resp, reinterpret_cast<void*>(4));
  void* tag = nullptr;
  bool ok = false;
  ASSERT_TRUE(cq.Next(&tag, &ok));
  EXPECT_FALSE(ok) << "the cancelled Get's response arrived";
  grpc::Status get_status;
  get_call->Finish(&get_status, reinterpret_cast<void*>(5));
  ASSERT_TRUE(step(5));
  EXPECT_EQ(get_status.error_code(), grpc::StatusCode::CANCELLED) << get_status.error_message();
  cq.Shutdown();
  while (cq.Next(&tag, &ok)) {
  }
  // Everything stored is intact and served.
  for (uint64_t k = 1; k <= 3; ++k) {
    grpc::ClientContext ctx;
    v1::GetRequest req;
    req.set_namespace_("ns");
    req.set_keys(TestKey(k));
    req.set_inline_data(true);
    v1::GetResponse resp;
    ASSERT_TRUE(stub->Get(&ctx, req, &resp).ok()) << k;
    ASSERT_EQ(resp.blocks_size(), 1);
    EXPECT_TRUE(resp.blocks(0).data() == data[k - 1]) << k;
  }
}

// Resident memory of `pid` in bytes (VmRSS), or 0 if unreadable.
uint64_t ResidentBytes(pid_t pid) {
  std::ifstream in(absl::StrCat("/proc/", pid, "/status"));
  for (std::string line; std::getline(in, line);) {
    if (line.rfind("VmRSS:", 0) == 0) return std::stoull(line.substr(6)) << 10;
  }
  return 0;
}

// Get parses into a message each gRPC thread reuses. One far larger than a valid
// Get (any caller can send one: it is refused only after parsing) must not leave
// its memory held by that thread for good: before session 27 each thread that
// served one kept it (here 367-479 MiB resident after four, from 38 MiB; now
// 70-112 MiB).
TEST(KvhubdLifecycleTest, AnOversizedGetLeavesNoMemoryBehind) {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
  GTEST_SKIP() << "a sanitizer's allocator keeps freed memory (ASan's quarantine): resident size says nothing here";
#endif
  auto p = KvhubdProcess::Start({.flags = {"--capacity_bytes=64MiB", "--region_bytes=64MiB", "--max_block_bytes=1MiB",
                                           "--try_hugepages=false", "--log_level=error"}});
  ASSERT_TRUE(p.ok()) << p.status();
  auto stub = NewKvHubStub((*p)->grpc_address());
  const uint64_t before = ResidentBytes((*p)->pid());
  ASSERT_GT(before, 0u);
  v1::GetRequest req;
  req.set_namespace_("tenant-a");
  req.set_keys(std::string((100u << 20) + 1, 'k'));
  for (int i = 0; i < 4; ++i) {
    v1::GetResponse resp;
    grpc::ClientContext ctx;
    const grpc::Status st = stub->Get(&ctx, req, &resp);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << st.error_message();
  }
  // The trim runs at most once a second, inside a handler (while gRPC still holds
  // that request's buffers): one more oversized request a second later lets it
  // return what the 100 MiB ones left. Up to five such rounds (a loaded machine
  // can run the trim while gRPC still holds buffers; the old per-thread copies
  // never go, however many rounds).
  req.set_keys(std::string((2u << 20) + 1, 'k'));
  uint64_t after = 0;
  for (int round = 0; round < 5; ++round) {
    absl::SleepFor(absl::Milliseconds(1100));
    v1::GetResponse resp;
    grpc::ClientContext ctx;
    EXPECT_EQ(stub->Get(&ctx, req, &resp).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
    absl::SleepFor(absl::Milliseconds(300));
    after = ResidentBytes((*p)->pid());
    if (after < before + (150ull << 20)) break;
  }
  // What the allocator keeps of the last request's buffers (up to one request's
  // worth) is allowed; a copy per thread is not.
  std::printf("resident: %llu MiB before, %llu MiB after four 100 MiB Get requests\n",
              static_cast<unsigned long long>(before >> 20), static_cast<unsigned long long>(after >> 20));
  EXPECT_LT(after, before + (150ull << 20)) << "resident " << (before >> 20) << " MiB before, " << (after >> 20)
                                           << " MiB after four 100 MiB Get requests";
  EXPECT_EQ((*p)->Stop().value_or(-1), 0);
}

TEST(KvhubdLifecycleTest, SigkillIsACrash) {
  auto p = KvhubdProcess::Start({.flags = {"--shutdown_timeout_ms=1000", "--capacity_bytes=64MiB", "--region_bytes=64MiB", "--max_block_bytes=1MiB"}});
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ((*p)->Kill().value_or(-1), 128 + SIGKILL);
  EXPECT_FALSE((*p)->running());
}

TEST(KvhubdLifecycleTest, BadConfigurationExitsNonZeroWithReason) {
  auto p = KvhubdProcess::Start({.flags = {"--shutdown_timeout_ms=1000", "--capacity_bytes=lots"}});
  ASSERT_FALSE(p.ok());
  EXPECT_THAT(std::string(p.status().message()), HasSubstr("exit code 2"));

  p = KvhubdProcess::Start({.flags = {"--shutdown_timeout_ms=1000", "--max_lease_ms=700000"}});
  ASSERT_FALSE(p.ok());
  EXPECT_THAT(std::string(p.status().message()), HasSubstr("exit code 2"));

  // An empty value is refused, not taken as "use the default".
  p = KvhubdProcess::Start({.flags = {"--shutdown_timeout_ms=1000", "--capacity_bytes="}});
  ASSERT_FALSE(p.ok());
  EXPECT_THAT(std::string(p.status().message()), HasSubstr("exit code 2"));
  // So is a flag whose value vanished (`--ready_file $UNSET --grpc_address=...`): abseil
  // took the next flag for its value, and the address silently became the default.
  CommandResult r = RunCommand(absl::StrCat(ProgramPath("kvhubd"),
                                            " --ready_file --grpc_address=127.0.0.1:0 --http_address=127.0.0.1:0 2>&1"));
  EXPECT_EQ(r.exit_code, 2) << r.out;
  EXPECT_THAT(r.out, HasSubstr("--ready_file is followed by --grpc_address=127.0.0.1:0 instead of its value"));
  // The same with one dash, which abseil takes as two (it slipped past both checks).
  r = RunCommand(absl::StrCat(ProgramPath("kvhubd"), " -ready_file -grpc_address=127.0.0.1:0 2>&1"));
  EXPECT_EQ(r.exit_code, 2) << r.out;
  EXPECT_THAT(r.out, HasSubstr("-ready_file is followed by -grpc_address=127.0.0.1:0 instead of its value"));
  r = RunCommand(absl::StrCat(ProgramPath("kvhubd"), " -grpc_address= 2>&1"));
  EXPECT_EQ(r.exit_code, 2) << r.out;
  EXPECT_THAT(r.out, HasSubstr("has an empty value"));
  // An unwritable ready_file is refused before the tier is mapped (it was found
  // after start-up, and the exit waited out drain_grace_ms).
  r = RunCommand(absl::StrCat(ProgramPath("kvhubd"), " --ready_file=/nonexistent-dir/ready --drain_grace_ms=8000",
                              " --grpc_address=127.0.0.1:0 --http_address=127.0.0.1:0 2>&1"));
  EXPECT_EQ(r.exit_code, 2) << r.out;
  EXPECT_THAT(r.out, HasSubstr("ready_file: cannot write /nonexistent-dir/ready"));
  // "-" would be stdout: the ready line printed twice, and a file named "-" unlinked.
  r = RunCommand(absl::StrCat(ProgramPath("kvhubd"), " --ready_file=- --grpc_address=127.0.0.1:0",
                              " --http_address=127.0.0.1:0 2>&1"));
  EXPECT_EQ(r.exit_code, 2) << r.out;
  EXPECT_THAT(r.out, HasSubstr("ready_file: '-' is not a file"));

  std::string conf = absl::StrCat(::testing::TempDir(), "/kvhubd_bad_", getpid(), ".conf");
  {
    std::ofstream out(conf);
    out << "capacity_bytes = 64MiB\nno_such_key = 3\n";
  }
  p = KvhubdProcess::Start({.flags = {"--shutdown_timeout_ms=1000", absl::StrCat("--config=", conf)}});
  ASSERT_FALSE(p.ok());
  EXPECT_THAT(std::string(p.status().message()), HasSubstr("exit code 2"));
  std::remove(conf.c_str());
}

// Asking for help or the version is not a failure (abseil 20220623 exits 1 for --help);
// the help lists kvhubd's own flags with paths relative to the source tree. The other
// programs parsing flags the same way (common/flags.h) list theirs too: abseil's
// default filter showed "No flags matched" for kvhub-stress and kvhub-demo.
TEST(KvhubdLifecycleTest, HelpAndVersionExitZeroOnStdout) {
  CommandResult help = RunCommand(absl::StrCat(ProgramPath("kvhubd"), " --help 2>/dev/null"));
  EXPECT_EQ(help.exit_code, 0);
  EXPECT_THAT(help.out, HasSubstr("Flags from cachesvc/kvhubd_main.cc:"));
  EXPECT_THAT(help.out, HasSubstr("--capacity_bytes"));
  EXPECT_THAT(help.out, ::testing::Not(HasSubstr("--flagfile")));  // abseil's own, in --helpfull only

  // Every program answers --version alike (operators compare tools with the shards' Stats).
  std::vector<std::string> programs = {"kvhubd", "kvhub", "kvhub-codec", "kvhub-replay", "kvhub-stress", "kvhub-demo"};
#ifdef KVHUB_TESTS_HAVE_BENCH
  programs.push_back("kvhub-bench");  // not built without libhiredis-dev (a plain cmake build)
#endif
  for (const std::string& program : programs) {
    CommandResult version = RunCommand(absl::StrCat(ProgramPath(program), " --version 2>/dev/null"));
    EXPECT_EQ(version.exit_code, 0) << program;
    EXPECT_EQ(version.out, absl::StrCat(program, " ", kVersion, "\n"));
  }

  for (const char* program : {"kvhub-stress", "kvhub-demo", "kvhubd_loadgen"}) {
    CommandResult other = RunCommand(absl::StrCat(ProgramPath(program), " --help 2>/dev/null"));
    EXPECT_EQ(other.exit_code, 0) << program;
    EXPECT_THAT(other.out, HasSubstr("Flags from ")) << program;
    EXPECT_THAT(other.out, ::testing::Not(HasSubstr("No flags matched"))) << program;
  }

  // Unknown flags and stray arguments still fail.
  EXPECT_EQ(RunCommand(absl::StrCat(ProgramPath("kvhubd"), " --no_such_flag=1 2>/dev/null")).exit_code, 1);
  EXPECT_EQ(RunCommand(absl::StrCat(ProgramPath("kvhubd"), " stray 2>/dev/null")).exit_code, 2);
  EXPECT_EQ(RunCommand(absl::StrCat(ProgramPath("kvhub-demo"), " stray 2>/dev/null")).exit_code, 2);
}

// kvhubd_loadgen's values that ran forever (--requests=-1), divided by zero
// (--blocks=0), read past its buffer (--mode=lookup --block_bytes=1KiB) or ran
// another mode (--mode=gett ran health, exit 0 against a live server) are usage
// errors, said before any call (nothing listens on port 1).
TEST(KvhubdLifecycleTest, LoadgenRefusesValuesItCannotRun) {
  for (const auto& [flags, message] : std::vector<std::pair<std::string, std::string>>{
           {"--mode=gett", "--mode is get, getstream, lookup or health, not 'gett'"},
           {"--mode=health --requests=-1", "--requests must be >= 0"},
           {"--mode=get --blocks=0", "--blocks must be >= 1"},
           {"--mode=get --block_bytes=0", "--block_bytes must be > 0"},
           {"--mode=lookup --batch=0", "--batch must be 1..4096"},
           {"--mode=get --concurrency=0", "--concurrency must be 1..1024"},
           {"--mode=get --seconds=-1", "--seconds must be in (0, 86400]"},
           {"--mode=get --deadline_ms=0", "--deadline_ms must be >= 1"}}) {
    CommandResult r =
        RunCommand(absl::StrCat(ProgramPath("kvhubd_loadgen"), " --target=127.0.0.1:1 ", flags, " 2>&1"));
    EXPECT_EQ(r.exit_code, 2) << flags << "\n" << r.out;
    EXPECT_THAT(r.out, HasSubstr(message)) << flags;
  }
  // A server that does not answer ends the run at the deadline, with an error.
  CommandResult r = RunCommand(
      absl::StrCat(ProgramPath("kvhubd_loadgen"), " --target=127.0.0.1:1 --mode=get --deadline_ms=200 2>&1"));
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_THAT(r.out, HasSubstr("put 0 failed")) << r.out;
}

TEST(KvhubdLifecycleTest, PortsInUseAreRefused) {
  auto first = KvhubdProcess::Start({.flags = {"--capacity_bytes=64MiB", "--try_hugepages=false"}});
  ASSERT_TRUE(first.ok()) << first.status();
  // Both ports are exclusive: before, a second kvhubd shared the HTTP port
  // (SO_REUSEPORT) and answered half of the first one's probes and scrapes.
  for (const std::string& flag : {absl::StrCat("--http_address=", (*first)->http_address()),
                                  absl::StrCat("--grpc_address=", (*first)->grpc_address())}) {
    auto second = KvhubdProcess::Start({.flags = {"--capacity_bytes=64MiB", "--try_hugepages=false", flag}});
    ASSERT_FALSE(second.ok()) << flag;
    EXPECT_THAT(std::string(second.status().message()), HasSubstr("exit code 1")) << flag;
  }
  EXPECT_EQ((*first)->Stop().value_or(-1), 0);
}

TEST(KvhubdLifecycleTest, CapacityAboveTheMachinesMemoryIsRefusedAtStart) {
  // Far above any test machine's memory: the node would be OOM-killed once full.
  auto p = KvhubdProcess::Start({.flags = {"--shutdown_timeout_ms=1000", "--capacity_bytes=64TiB"}});
  ASSERT_FALSE(p.ok());
  EXPECT_THAT(std::string(p.status().message()), HasSubstr("exit code 1"));
}

TEST(KvhubdLifecycleTest, ConfigFileFlagsOverrideAndReadyFile) {
  std::string dir = ::testing::TempDir();
  std::string conf = absl::StrCat(dir, "/kvhubd_ok_", getpid(), ".conf");
  std::string ready = absl::StrCat(dir, "/kvhubd_ready_", getpid(), ".txt");
  {
    std::ofstream out(conf);
    out << "# test config\ncapacity_bytes = 32MiB\nregion_bytes = 32MiB\nmax_block_bytes = 1MiB\nnode_id = from-file\n";
  }
  // A ready line left by an earlier run goes before the start (a poller would
  // connect to its dead ports), and this run's goes at its exit.
  std::ofstream(ready) << "kvhubd ready grpc=127.0.0.1:1 http=127.0.0.1:2 node=stale\n";
  auto p = KvhubdProcess::Start(
      {.flags = {"--shutdown_timeout_ms=1000", absl::StrCat("--config=", conf), "--node_id=from-flag", absl::StrCat("--ready_file=", ready)}});
  ASSERT_TRUE(p.ok()) << p.status();
  EXPECT_EQ((*p)->node_id(), "from-flag");
  std::ifstream in(ready);
  std::stringstream ss;
  ss << in.rdbuf();
  auto parsed = ParseReadyLine(ss.str());
  ASSERT_TRUE(parsed.ok()) << parsed.status();
  EXPECT_EQ(parsed->grpc_address, (*p)->grpc_address());
  EXPECT_EQ(parsed->http_address, (*p)->http_address());

  auto stub = NewKvHubStub((*p)->grpc_address());
  v1::StatsResponse st;
  grpc::ClientContext ctx;
  ASSERT_TRUE(stub->Stats(&ctx, v1::StatsRequest(), &st).ok());
  EXPECT_EQ(st.tiers(0).capacity_bytes(), 32ull << 20);
  EXPECT_EQ(st.node_id(), "from-flag");
  stub.reset();
  EXPECT_EQ((*p)->Stop().value_or(-1), 0);
  EXPECT_NE(access(ready.c_str(), F_OK), 0) << "the ready file outlived the process";
  std::remove(conf.c_str());
  std::remove(ready.c_str());
}

// The drain can take drain_grace + shutdown_timeout (up to 20 minutes): a second
// SIGTERM or SIGINT was ignored (the signals stayed blocked and nobody waited for
// them), so an operator's second Ctrl-C did nothing and only SIGKILL ended it. It
// ends the process now, exit 1.
TEST(KvhubdLifecycleTest, ASecondSignalEndsTheDrainAtOnce) {
  auto p = KvhubdProcess::Start({.flags = {"--capacity_bytes=64MiB", "--region_bytes=64MiB", "--max_block_bytes=1MiB",
                                           "--drain_grace_ms=60000", "--log_level=warn"}});
  ASSERT_TRUE(p.ok()) << p.status();
  ASSERT_TRUE((*p)->Signal(SIGTERM).ok());
  bool saw_503 = false;  // the drain has begun
  for (int i = 0; i < 500 && !saw_503; ++i) {
    auto r = HttpGet(**p, "/readyz");
    saw_503 = r && r->status == 503;
    if (!saw_503) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  ASSERT_TRUE(saw_503);
  ASSERT_TRUE((*p)->Signal(SIGINT).ok());
  absl::StatusOr<int> code = (*p)->Wait(absl::Seconds(20));  // the drain alone is 60 s
  ASSERT_TRUE(code.ok()) << code.status();
  EXPECT_EQ(*code, 1);
}

// At exit kvhubd removed whatever was at ready_file, also a successor's ready line
// written there meanwhile (a restart on the same path), and pollers of it then
// waited for a node that was serving. It removes only the file it wrote.
TEST(KvhubdLifecycleTest, ExitLeavesASuccessorsReadyFile) {
  const std::string ready = absl::StrCat(::testing::TempDir(), "/kvhubd_ready_succ_", getpid(), ".txt");
  auto p = KvhubdProcess::Start({.flags = {"--shutdown_timeout_ms=1000", "--capacity_bytes=32MiB",
                                           "--region_bytes=32MiB", "--max_block_bytes=1MiB",
                                           absl::StrCat("--ready_file=", ready)}});
  ASSERT_TRUE(p.ok()) << p.status();
  const std::string successor = "kvhubd ready grpc=127.0.0.1:5 http=127.0.0.1:6 node=next\n";
  {
    // As a successor does: remove the old line, then write its own beside and rename
    // it (its inode number may be the freed one of the old file).
    ASSERT_EQ(unlink(ready.c_str()), 0);
    const std::string tmp = ready + ".new";
    std::ofstream(tmp) << successor;
    ASSERT_EQ(std::rename(tmp.c_str(), ready.c_str()), 0);
  }
  EXPECT_EQ((*p)->Stop().value_or(-1), 0);
  std::ifstream in(ready);
  std::stringstream ss;
  ss << in.rdbuf();
  EXPECT_EQ(ss.str(), successor) << "the successor's ready file was removed or changed";
  std::remove(ready.c_str());
}

TEST(KvhubdLifecycleTest, ParseReadyLine) {
  auto r = ParseReadyLine("kvhubd ready grpc=127.0.0.1:5000 http=127.0.0.1:5001 node=n-1\n");
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->grpc_port, 5000);
  EXPECT_EQ(r->http_port, 5001);
  EXPECT_EQ(r->node_id, "n-1");
  EXPECT_FALSE(ParseReadyLine("hello").ok());
  EXPECT_FALSE(ParseReadyLine("kvhubd ready grpc=127.0.0.1 http=127.0.0.1:1 node=x").ok());
}

}  // namespace
}  // namespace kvhub::testing
