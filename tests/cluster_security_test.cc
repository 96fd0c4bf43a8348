// Authentication and TLS (docs/operations.md, "Authentication and TLS") against
// real kvhubd processes: bearer tokens scoped to namespaces, UCX Connect only
// for '*' tokens, TLS and mutual TLS with certificates made by openssl here.

#include <httplib.h>
#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <chrono>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "client/client.h"
#include "common/hash.h"
#include "grpcpp/client_context.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "kvhub/v1/kvhub.grpc.pb.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/kvhubd_process.h"
#include "tests/testing/raw_calls.h"
#include "tests/testing/run_command.h"

namespace kvhub {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using testing::KvhubdProcess;

constexpr char kTenantToken[] = "tenant-a-0123456789abcdef";
constexpr char kOpsToken[] = "ops-fedcba9876543210ffff";

std::string TempPath(const std::string& name) {
  return absl::StrCat(::testing::TempDir(), "/kvhub_security_", getpid(), "_", name);
}

std::string WriteFile(const std::string& name, const std::string& text) {
  const std::string path = TempPath(name);
  std::ofstream(path) << text;
  return path;
}

std::unique_ptr<KvhubdProcess> StartShard(std::vector<std::string> flags) {
  testing::KvhubdProcessOptions o;
  o.flags = {"--try_hugepages=false", "--capacity_bytes=64MiB", "--max_block_bytes=1MiB",
             "--shutdown_timeout_ms=2000"};
  o.flags.insert(o.flags.end(), flags.begin(), flags.end());
  auto p = KvhubdProcess::Start(o);
  EXPECT_TRUE(p.ok()) << p.status();
  return p.ok() ? std::move(*p) : nullptr;
}

ClientConfig Config(const KvhubdProcess& shard, const std::string& token) {
  ClientConfig c;
  c.members = {{shard.grpc_address(), 1.0}};
  c.transport = TransportMode::kGrpc;
  c.auth_token = token;
  c.control_deadline = c.data_deadline = absl::Seconds(2);
  c.max_attempts = 2;
  return c;
}

// A client reading over UCX tcp (Connect needs a '*' token).
ClientConfig UcxTcpConfig(const KvhubdProcess& shard, const std::string& token) {
  ClientConfig c = Config(shard, token);
  c.transport = TransportMode::kUcx;
  c.ucx_tls = "tcp";
  return c;
}

const BlockKey kKey{0x1234, 0x5678};

absl::Status PutOne(Client& c, const std::string& ns, const std::vector<uint8_t>& data) {
  BlockPut put{kKey, std::nullopt, data, false};
  auto r = c.Put(ns, {&put, 1});
  if (!r.ok()) return r.status();
  return r->stored == 1 ? absl::OkStatus() : r->errors[0];
}

absl::StatusOr<std::vector<uint8_t>> GetOne(Client& c, const std::string& ns, size_t n) {
  std::vector<uint8_t> buf(n);
  std::span<uint8_t> dest(buf);
  auto r = c.Get(ns, {&kKey, 1}, {&dest, 1});
  if (!r.ok()) return r.status();
  if (!r->status[0].ok()) return r->status[0];
  return buf;
}

TEST(ClusterSecurityTest, TokensAreCheckedAndScopedToTheirNamespaces) {
  const std::string tokens = WriteFile(
      "tokens", absl::StrCat("# test tokens\n", kTenantToken, "  tenant-a,tenant-a2\n", kOpsToken, " *\n"));
  auto shard = StartShard({"--auth_tokens_file=" + tokens, "--ucx_tls=tcp"});
  ASSERT_NE(shard, nullptr);
  const std::vector<uint8_t> a(4096, 0xAA), b(4096, 0xBB);

  auto ops = Client::Create(Config(*shard, kOpsToken));
  ASSERT_TRUE(ops.ok()) << ops.status();
  ASSERT_TRUE(PutOne(**ops, "tenant-b", b).ok());

  // No token, or an unknown one: UNAUTHENTICATED on every call but Health.
  for (const std::string& token : {std::string(), std::string("not-a-token-of-this-shard")}) {
    SCOPED_TRACE(token.empty() ? "no token" : "unknown token");
    auto c = Client::Create(Config(*shard, token));
    ASSERT_TRUE(c.ok()) << c.status();
    const absl::Status put = PutOne(**c, "tenant-a", a);
    EXPECT_EQ(put.code(), absl::StatusCode::kUnauthenticated) << put;
    auto st = (*c)->Stats();
    EXPECT_EQ(st[0].stats.status().code(), absl::StatusCode::kUnauthenticated) << st[0].stats.status();
    EXPECT_THAT((*c)->CheckMembersAnswer().ToString(), HasSubstr("UNAUTHENTICATED"));
  }

  // A tenant token: its own namespaces, nothing else.
  auto tenant = Client::Create(Config(*shard, kTenantToken));
  ASSERT_TRUE(tenant.ok());
  ASSERT_TRUE(PutOne(**tenant, "tenant-a", a).ok());
  auto got = GetOne(**tenant, "tenant-a", a.size());
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, a);
  auto other = GetOne(**tenant, "tenant-b", b.size());
  EXPECT_EQ(other.status().code(), absl::StatusCode::kPermissionDenied) << other.status();
  EXPECT_THAT(std::string(other.status().message()), HasSubstr("tenant-b"));
  EXPECT_EQ(PutOne(**tenant, "tenant-b", a).code(), absl::StatusCode::kPermissionDenied);
  auto lookup = (*tenant)->Lookup("tenant-b", {&kKey, 1});
  ASSERT_TRUE(lookup.ok()) << lookup.status();
  EXPECT_EQ(lookup->present[0], 0) << "a namespace the token may not use is not probeable";
  EXPECT_EQ(lookup->first_error.code(), absl::StatusCode::kPermissionDenied) << lookup->first_error;
  // tenant-b's block is intact.
  got = GetOne(**ops, "tenant-b", b.size());
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, b);

  // UCX exposes the whole host tier: only a '*' token may Connect. A tenant
  // client in auto mode stays on gRPC and says why; transport=ucx refuses.
  ClientConfig ucx = UcxTcpConfig(*shard, kTenantToken);
  auto tenant_ucx = Client::Create(ucx);
  ASSERT_TRUE(tenant_ucx.ok());
  got = GetOne(**tenant_ucx, "tenant-a", a.size());
  EXPECT_EQ(got.status().code(), absl::StatusCode::kFailedPrecondition) << got.status();
  EXPECT_THAT(std::string(got.status().message()), HasSubstr("every namespace"));
  ucx.auth_token = kOpsToken;
  auto ops_ucx = Client::Create(ucx);
  ASSERT_TRUE(ops_ucx.ok());
  got = GetOne(**ops_ucx, "tenant-a", a.size());
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, a);
  EXPECT_TRUE(absl::StartsWith((*ops_ucx)->TransportStats()[0].transport, "ucx (tcp"))
      << (*ops_ucx)->TransportStats()[0].transport;

  // The CLI: the token from $KVHUB_TOKEN or --token-file.
  const std::string kvhub = testing::ProgramPath("kvhub");
  testing::CommandResult r = testing::RunCommand(absl::StrCat(kvhub, " stats --addr ", shard->grpc_address(), " 2>&1"));
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_THAT(r.out, HasSubstr("requires a token"));
  EXPECT_THAT(r.out, HasSubstr("--token-file PATH, or the token in $KVHUB_TOKEN"));  // what to do
  r = testing::RunCommand(absl::StrCat("KVHUB_TOKEN=", kOpsToken, " ", kvhub, " stats --addr ", shard->grpc_address(),
                                       " 2>&1"));
  EXPECT_EQ(r.exit_code, 0) << r.out;
  const std::string token_file = WriteFile("cli_token", absl::StrCat(kTenantToken, "\n"));
  r = testing::RunCommand(absl::StrCat(kvhub, " lookup --addr ", shard->grpc_address(), " --token-file ", token_file,
                                       " --ns tenant-b --key 00000000000012340000000000005678 2>&1"));
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_THAT(r.out, HasSubstr("PERMISSION_DENIED"));
  // A tenant's get in its own namespace: gRPC, as its token wants, without a
  // warning on every call (before: "uses grpc: ... Connect needs a token ...").
  r = testing::RunCommand(absl::StrCat(kvhub, " get --addr ", shard->grpc_address(), " --token-file ", token_file,
                                       " --ns tenant-a --key 00000000000012340000000000005678 --out /dev/null 2>&1"));
  EXPECT_THAT(r.out, Not(HasSubstr("warning"))) << r.out;
  std::remove(tokens.c_str());
  std::remove(token_file.c_str());
}

// One tenant cannot take the shared tier: past namespace_quota_bytes its puts are
// refused (per block, RESOURCE_EXHAUSTED naming the namespace) and another
// tenant still stores its blocks. namespace_quotas gives tenants their own sizes.
// Polls `f` (returning true when done) for up to 10 s.
template <typename F>
bool Eventually(F f) {
  for (int i = 0; i < 200; ++i) {
    if (f()) return true;
    usleep(50 * 1000);
  }
  return false;
}

// A UCX connection belongs to the token that made it: only a Session with that token
// may watch (and so end) it. Before, any known token could open a Session on any
// connection id: ids are sequential, so a tenant limited to one namespace could find
// the live ones (FAILED_PRECONDITION "already has a session" against NOT_FOUND) and
// end another client's UCX connection by opening a Session on it and cancelling.
TEST(ClusterSecurityTest, OnlyTheTokenThatMadeAUcxConnectionCanWatchIt) {
  constexpr char kOtherOps[] = "ops2-00112233445566778899";
  const std::string tokens = WriteFile(
      "session_tokens", absl::StrCat(kTenantToken, " tenant-a\n", kOpsToken, " *\n", kOtherOps, " *\n"));
  auto shard = StartShard({"--auth_tokens_file=" + tokens, "--ucx_tls=tcp"});
  ASSERT_NE(shard, nullptr);
  const std::vector<uint8_t> a(4096, 'a');
  auto writer = Client::Create(Config(*shard, kOpsToken));
  ASSERT_TRUE(writer.ok());
  ASSERT_TRUE(PutOne(**writer, "tenant-a", a).ok());
  auto ops_ucx = Client::Create(UcxTcpConfig(*shard, kOpsToken));
  ASSERT_TRUE(ops_ucx.ok());
  ASSERT_TRUE(GetOne(**ops_ucx, "tenant-a", a.size()).ok());
  ASSERT_TRUE(absl::StartsWith((*ops_ucx)->TransportStats()[0].transport, "ucx (tcp"));
  ASSERT_TRUE(Eventually([&] {
    auto st = (*writer)->Stats();
    return st[0].stats.ok() && st[0].stats->ucx_sessions() == 1;
  }));

  auto channel = grpc::CreateChannel(shard->grpc_address(), grpc::InsecureChannelCredentials());
  auto stub = v1::KvHub::NewStub(channel);
  for (const char* token : {kTenantToken, kOtherOps}) {
    const bool limited = std::string(token) == kTenantToken;
    for (uint64_t gen = 0; gen < 3; ++gen) {
      for (uint64_t k = 1; k <= 4; ++k) {
        grpc::ClientContext ctx;
        ctx.AddMetadata("authorization", absl::StrCat("Bearer ", token));
        ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
        v1::SessionRequest req;
        req.set_conn_id((gen << 32) + k);
        auto reader = stub->Session(&ctx, req);
        v1::SessionEvent ev;
        EXPECT_FALSE(reader->Read(&ev)) << token << " opened a session on connection " << req.conn_id();
        const grpc::Status s = reader->Finish();
        EXPECT_EQ(s.error_code(), limited ? grpc::StatusCode::PERMISSION_DENIED : grpc::StatusCode::NOT_FOUND)
            << token << " on connection " << req.conn_id() << ": " << s.error_message();
      }
    }
  }
  // The owner's connection and session are untouched.
  EXPECT_TRUE(GetOne(**ops_ucx, "tenant-a", a.size()).ok());
  EXPECT_TRUE(absl::StartsWith((*ops_ucx)->TransportStats()[0].transport, "ucx (tcp"));
  auto st = (*writer)->Stats();
  ASSERT_TRUE(st[0].stats.ok());
  EXPECT_EQ(st[0].stats->ucx_sessions(), 1u);
  std::remove(tokens.c_str());
}

// Tokens are rotated and revoked without a restart (which would empty the cache):
// SIGHUP puts a changed file in force, a broken file keeps the tokens in force,
// the poll (auth_reload_ms) needs no signal, and a revoked token's UCX connection
// is closed.
TEST(ClusterSecurityTest, TokensReloadWithoutARestart) {
  constexpr char kNewTenant[] = "tenant-a-rotated-00112233";
  constexpr char kNewOps[] = "ops-rotated-44556677889900";
  const std::string tokens =
      WriteFile("reload_tokens", absl::StrCat(kTenantToken, " tenant-a\n", kOpsToken, " *\n"));
  auto shard = StartShard({"--auth_tokens_file=" + tokens, "--auth_reload_ms=0", "--ucx_tls=tcp"});
  ASSERT_NE(shard, nullptr);
  const std::vector<uint8_t> a(4096, 0xA1);
  auto tenant = Client::Create(Config(*shard, kTenantToken));
  ASSERT_TRUE(tenant.ok());
  ASSERT_TRUE(PutOne(**tenant, "tenant-a", a).ok());
  auto ops_ucx = Client::Create(UcxTcpConfig(*shard, kOpsToken));
  ASSERT_TRUE(ops_ucx.ok());
  ASSERT_TRUE(GetOne(**ops_ucx, "tenant-a", a.size()).ok());
  auto rotated = Client::Create(Config(*shard, kNewTenant));
  ASSERT_TRUE(rotated.ok());
  EXPECT_EQ(GetOne(**rotated, "tenant-a", a.size()).status().code(), absl::StatusCode::kUnauthenticated);

  // Rotate both tokens (the file is replaced whole, as a Kubernetes secret is).
  WriteFile("reload_tokens", absl::StrCat(kNewTenant, " tenant-a\n", kNewOps, " *\n"));
  ASSERT_TRUE(shard->Signal(SIGHUP).ok());
  ASSERT_TRUE(Eventually([&] { return GetOne(**rotated, "tenant-a", a.size()).ok(); }));
  auto got = GetOne(**rotated, "tenant-a", a.size());
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, a) << "the cache survived the rotation";
  EXPECT_EQ(PutOne(**tenant, "tenant-a", a).code(), absl::StatusCode::kUnauthenticated);
  // The old ops token's UCX connection is closed: its calls fail, none is served.
  auto revoked = GetOne(**ops_ucx, "tenant-a", a.size());
  EXPECT_FALSE(revoked.ok());
  auto new_ops = Client::Create(Config(*shard, kNewOps));
  ASSERT_TRUE(new_ops.ok());
  EXPECT_TRUE(Eventually([&] {
    auto st = (*new_ops)->Stats();
    return st[0].stats.ok() && st[0].stats->ucx_sessions() == 0 && st[0].stats->ucx_connections() == 0;
  })) << "the revoked token's UCX connection is still open";

  // A broken file is refused; the rotated tokens stay in force.
  WriteFile("reload_tokens", absl::StrCat(kNewTenant, "\n"));
  ASSERT_TRUE(shard->Signal(SIGHUP).ok());
  EXPECT_TRUE(Eventually([&] {
    httplib::Client http("127.0.0.1", shard->http_port());
    auto m = http.Get("/metrics");
    return m && m->body.find("kvhub_auth_reloads_total{result=\"failed\"} 1") != std::string::npos;
  }));
  EXPECT_TRUE(GetOne(**rotated, "tenant-a", a.size()).ok());
  std::remove(tokens.c_str());
}

// A drain serves reads for drain_grace (up to 10 minutes): a SIGHUP then still puts
// a changed tokens file in force (it was ignored, so with auth_reload_ms = 0 a token
// revoked during the drain was served until the end).
TEST(ClusterSecurityTest, ASighupDuringTheDrainStillReloadsTheTokens) {
  constexpr char kNewTenant[] = "tenant-a-drain-rotated-0099";
  const std::string tokens = WriteFile("drain_tokens", absl::StrCat(kTenantToken, " tenant-a\n"));
  auto shard = StartShard({"--auth_tokens_file=" + tokens, "--auth_reload_ms=0", "--drain_grace_ms=60000"});
  ASSERT_NE(shard, nullptr);
  auto tenant = Client::Create(Config(*shard, kTenantToken));
  ASSERT_TRUE(tenant.ok());
  const std::vector<uint8_t> a(4096, 0xD5);
  ASSERT_TRUE(PutOne(**tenant, "tenant-a", a).ok());
  ASSERT_TRUE(shard->Signal(SIGTERM).ok());
  // Draining: readyz 503, reads still served.
  ASSERT_TRUE(Eventually([&] {
    httplib::Client http("127.0.0.1", shard->http_port());
    auto r = http.Get("/readyz");
    return r && r->status == 503;
  }));
  ASSERT_TRUE(GetOne(**tenant, "tenant-a", a.size()).ok());
  WriteFile("drain_tokens", absl::StrCat(kNewTenant, " tenant-a\n"));
  ASSERT_TRUE(shard->Signal(SIGHUP).ok());
  EXPECT_TRUE(Eventually([&] {
    return GetOne(**tenant, "tenant-a", a.size()).status().code() == absl::StatusCode::kUnauthenticated;
  })) << "the revoked token is still served during the drain";
  auto rotated = Client::Create(Config(*shard, kNewTenant));
  ASSERT_TRUE(rotated.ok());
  auto got = GetOne(**rotated, "tenant-a", a.size());
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, a);
  std::remove(tokens.c_str());
}

TEST(ClusterSecurityTest, TokensFileChangesAreSeenByThePoll) {
  constexpr char kNewTenant[] = "tenant-a-polled-0011223344";
  const std::string tokens = WriteFile("poll_tokens", absl::StrCat(kTenantToken, " tenant-a\n"));
  auto shard = StartShard({"--auth_tokens_file=" + tokens, "--auth_reload_ms=200", "--expiry_interval_ms=100"});
  ASSERT_NE(shard, nullptr);
  auto rotated = Client::Create(Config(*shard, kNewTenant));
  ASSERT_TRUE(rotated.ok());
  const std::vector<uint8_t> a(1000, 0x5A);
  EXPECT_EQ(PutOne(**rotated, "tenant-a", a).code(), absl::StatusCode::kUnauthenticated);
  WriteFile("poll_tokens", absl::StrCat(kNewTenant, " tenant-a\n"));
  EXPECT_TRUE(Eventually([&] { return PutOne(**rotated, "tenant-a", a).ok(); }));
  std::remove(tokens.c_str());
}

TEST(ClusterSecurityTest, NamespaceQuotaKeepsOneTenantFromTakingTheTier) {
  auto shard = StartShard({"--namespace_quota_bytes=1MiB", "--namespace_quotas=large:2MiB,exempt:0"});
  ASSERT_NE(shard, nullptr);
  auto c = Client::Create(Config(*shard, ""));
  ASSERT_TRUE(c.ok());
  const std::vector<uint8_t> data(256 << 10, 0x11);
  std::vector<BlockPut> puts;
  std::vector<BlockKey> keys;
  for (uint64_t i = 0; i < 6; ++i) keys.push_back(BlockKey{i + 1, 0xabc});
  for (const BlockKey& k : keys) puts.push_back(BlockPut{k, std::nullopt, data, false});
  auto r = (*c)->Put("greedy", puts);
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->stored, 4u);
  EXPECT_EQ(r->failed, 2u);
  for (size_t i = 0; i < puts.size(); ++i) {
    if (r->outcome[i] != PutOutcome::kFailed) continue;
    EXPECT_EQ(r->errors[i].code(), absl::StatusCode::kResourceExhausted) << r->errors[i];
    EXPECT_THAT(std::string(r->errors[i].message()), HasSubstr("namespace 'greedy'"));
  }
  r = (*c)->Put("modest", {puts.data(), 2});
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->stored, 2u);
  // Per-namespace sizes: "large" holds twice the default, "exempt" has no quota.
  std::vector<BlockPut> many = puts;
  for (uint64_t i = 6; i < 12; ++i) many.push_back(BlockPut{BlockKey{i + 1, 0xabc}, std::nullopt, data, false});
  r = (*c)->Put("large", many);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->stored, 8u);
  for (size_t i = 0; i < many.size(); ++i) {
    if (r->outcome[i] == PutOutcome::kFailed) {
      EXPECT_THAT(std::string(r->errors[i].message()), HasSubstr("quota of 2097152 bytes (namespace_quotas"));
    }
  }
  r = (*c)->Put("exempt", many);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->stored, 12u);
  auto st = (*c)->Stats();
  ASSERT_TRUE(st[0].stats.ok());
  EXPECT_EQ(st[0].stats->tiers(0).used_bytes(), (6u + 8u + 12u) * data.size());
  // Each tenant's quota and what it holds, for dashboards (deploy/grafana).
  httplib::Client http("127.0.0.1", shard->http_port());
  auto m = http.Get("/metrics");
  ASSERT_TRUE(m);
  EXPECT_THAT(m->body, HasSubstr("kvhub_namespace_quota_bytes{namespace=\"large\"} 2097152\n"));
  EXPECT_THAT(m->body, HasSubstr("kvhub_namespace_quota_bytes{namespace=\"greedy\"} 1048576\n"));
  EXPECT_THAT(m->body, ::testing::Not(HasSubstr("kvhub_namespace_quota_bytes{namespace=\"exempt\"}")));
  EXPECT_THAT(m->body, HasSubstr(absl::StrCat("kvhub_namespace_held_bytes{namespace=\"greedy\"} ", 4 * data.size(), "\n")));
  EXPECT_THAT(m->body, HasSubstr(absl::StrCat("kvhub_namespace_held_bytes{namespace=\"exempt\"} ", 12 * data.size(), "\n")));
}

// Metrics series go to the namespaces seen first, for good: a tenant with a quota that
// came after others had taken every slot had no quota series (its alert was blind).
// Namespaces with a quota get theirs at start.
TEST(ClusterSecurityTest, NamespacesWithQuotasKeepTheirMetricsSeries) {
  auto shard = StartShard({"--metrics_max_namespaces=2", "--namespace_quotas=tenant-a:2MiB"});
  ASSERT_NE(shard, nullptr);
  auto c = Client::Create(Config(*shard, ""));
  ASSERT_TRUE(c.ok());
  const std::vector<uint8_t> data(64 << 10, 0x22);
  const BlockPut put{BlockKey{1, 0xdef}, std::nullopt, data, false};
  for (const char* ns : {"x", "y", "tenant-a"}) {
    auto r = (*c)->Put(ns, {&put, 1});
    ASSERT_TRUE(r.ok() && r->stored == 1) << ns;
  }
  httplib::Client http("127.0.0.1", shard->http_port());
  auto m = http.Get("/metrics");
  ASSERT_TRUE(m);
  EXPECT_THAT(m->body, HasSubstr("kvhub_namespace_quota_bytes{namespace=\"tenant-a\"} 2097152\n"));
  EXPECT_THAT(m->body, HasSubstr(absl::StrCat("kvhub_namespace_held_bytes{namespace=\"tenant-a\"} ", data.size(), "\n")));
}

// A call context carrying `token`.
std::unique_ptr<grpc::ClientContext> ctx(const char* token) {
  auto c = std::make_unique<grpc::ClientContext>();
  c->AddMetadata("authorization", absl::StrCat("Bearer ", token));
  return c;
}

// A reservation for `data` under kKey in `ns`, made with the ops ('*') token; 0 if
// PutStart failed.
uint64_t OpsReservation(v1::KvHub::Stub& stub, const std::string& ns, const std::string& data) {
  const auto key = kKey.Bytes();
  v1::PutStartRequest ps;
  ps.set_namespace_(ns);
  v1::PutItem* item = ps.add_items();
  item->set_key(std::string(key.begin(), key.end()));
  item->set_size(data.size());
  item->set_checksum(Xxh3_64(data.data(), data.size()));
  v1::PutStartResponse psr;
  if (!stub.PutStart(ctx(kOpsToken).get(), ps, &psr).ok() || psr.items_size() != 1) return 0;
  return psr.items(0).reservation_id();
}

// The owner (ops token) writes and commits reservation `rid`.
absl::StatusOr<v1::ItemStatus> OpsWriteAndCommit(v1::KvHub::Stub& stub, uint64_t rid, const std::string& data) {
  return testing::RawWriteAndCommit(stub, rid, data, [](grpc::ClientContext* c) {
    c->AddMetadata("authorization", absl::StrCat("Bearer ", kOpsToken));
  });
}

// Reservation and lease ids are bound to their namespace: a token for tenant-a
// cannot abort, write into or release tenant-b's grants by naming their ids.
TEST(ClusterSecurityTest, GrantIdsOfOtherNamespacesAreRefused) {
  const std::string tokens = WriteFile(
      "grant_tokens", absl::StrCat(kTenantToken, " tenant-a\n", kOpsToken, " *\n"));
  auto shard = StartShard({"--auth_tokens_file=" + tokens});
  ASSERT_NE(shard, nullptr);
  auto stub = v1::KvHub::NewStub(grpc::CreateChannel(shard->grpc_address(), grpc::InsecureChannelCredentials()));
  const std::string data(4096, 'b');
  const auto key = kKey.Bytes();
  // tenant-b's reservation, made with the ops token.
  const uint64_t rid = OpsReservation(*stub, "tenant-b", data);
  ASSERT_NE(rid, 0u);

  v1::PutAbortRequest abort;
  abort.add_reservation_ids(rid);
  v1::PutAbortResponse abr;
  grpc::Status s = stub->PutAbort(ctx(kTenantToken).get(), abort, &abr);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED) << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("reservation"));
  {
    v1::PutDataResponse pdr;
    auto c = ctx(kTenantToken);
    auto writer = stub->PutData(c.get(), &pdr);
    v1::PutDataChunk chunk;
    chunk.set_reservation_id(rid);
    chunk.set_data(std::string(data.size(), 'X'));  // would corrupt the block
    writer->Write(chunk);
    writer->WritesDone();
    s = writer->Finish();
    EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED) << s.error_message();
  }
  {  // The owner writes and commits: the block is tenant-b's bytes, untouched.
    absl::StatusOr<v1::ItemStatus> committed = OpsWriteAndCommit(*stub, rid, data);
    ASSERT_TRUE(committed.ok()) << committed.status();
    EXPECT_EQ(committed->code(), 0) << committed->message();
  }
  // A lease on tenant-b's block cannot be released by tenant-a.
  v1::GetRequest get;
  get.set_namespace_("tenant-b");
  get.set_keys(std::string(key.begin(), key.end()));
  get.set_inline_data(false);
  v1::GetResponse gr;
  ASSERT_TRUE(stub->Get(ctx(kOpsToken).get(), get, &gr).ok());
  ASSERT_EQ(gr.blocks_size(), 1);
  const uint64_t lease = gr.blocks(0).lease_id();
  ASSERT_NE(lease, 0u);
  v1::ReleaseRequest rel;
  rel.add_lease_ids(lease);
  v1::ReleaseResponse rr;
  s = stub->Release(ctx(kTenantToken).get(), rel, &rr);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED) << s.error_message();
  ASSERT_TRUE(stub->Release(ctx(kOpsToken).get(), rel, &rr).ok());
  EXPECT_EQ(rr.items(0).code(), 0);
  auto ops = Client::Create(Config(*shard, kOpsToken));
  ASSERT_TRUE(ops.ok());
  auto got = GetOne(**ops, "tenant-b", data.size());
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(std::string(got->begin(), got->end()), data);
  std::remove(tokens.c_str());
}

// A namespace-limited token's request is checked for shape before its scope: an
// oversized namespace was echoed whole in PERMISSION_DENIED (a 1 MiB status message,
// which the peer refuses as a trailer, so the caller saw a transport error), and
// every id of an oversized id list was looked up in the store, under its lock,
// before the call refused the list.
TEST(ClusterSecurityTest, OversizedFieldsOfARestrictedTokenAreRefusedForTheirShape) {
  const std::string tokens = WriteFile(
      "shape_tokens", absl::StrCat(kTenantToken, " tenant-a\n", kOpsToken, " *\n"));
  auto shard = StartShard({"--auth_tokens_file=" + tokens});
  ASSERT_NE(shard, nullptr);
  auto stub = v1::KvHub::NewStub(grpc::CreateChannel(shard->grpc_address(), grpc::InsecureChannelCredentials()));
  const auto key = kKey.Bytes();
  v1::LookupRequest look;
  look.set_namespace_(std::string(1 << 20, 'x'));
  look.set_keys(std::string(key.begin(), key.end()));
  v1::LookupResponse lr;
  grpc::Status s = stub->Lookup(ctx(kTenantToken).get(), look, &lr);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message().substr(0, 200);
  EXPECT_THAT(s.error_message(), HasSubstr("namespace"));
  EXPECT_LT(s.error_message().size(), 1024u);
  {
    v1::GetRequest get;
    get.set_namespace_(std::string(1 << 20, 'x'));
    get.set_keys(std::string(key.begin(), key.end()));
    auto c = ctx(kTenantToken);
    auto reader = stub->GetStream(c.get(), get);
    v1::GetChunk chunk;
    while (reader->Read(&chunk)) {
    }
    s = reader->Finish();
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message().substr(0, 200);
    EXPECT_LT(s.error_message().size(), 1024u);
  }
  // Another namespace's live reservation among 5000 ids: the list's size is refused
  // before any id is looked up.
  const std::string data(4096, 'b');
  const uint64_t rid = OpsReservation(*stub, "tenant-b", data);
  ASSERT_NE(rid, 0u);
  v1::PutAbortRequest abort;
  abort.add_reservation_ids(rid);
  for (uint64_t i = 1; i < 5000; ++i) abort.add_reservation_ids(rid + i);
  v1::PutAbortResponse abr;
  s = stub->PutAbort(ctx(kTenantToken).get(), abort, &abr);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << s.error_message();
  EXPECT_THAT(s.error_message(), HasSubstr("reservation_ids"));
  // A list within the limit is still checked id by id.
  abort.mutable_reservation_ids()->Truncate(1);
  s = stub->PutAbort(ctx(kTenantToken).get(), abort, &abr);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED) << s.error_message();
  // The reservation is untouched: its owner commits it.
  absl::StatusOr<v1::ItemStatus> committed = OpsWriteAndCommit(*stub, rid, data);
  ASSERT_TRUE(committed.ok()) << committed.status();
  EXPECT_EQ(committed->code(), 0) << committed->message();
  std::remove(tokens.c_str());
}

TEST(ClusterSecurityTest, BadTokensFilesStopKvhubdWithTheLine) {
  const std::string dup = WriteFile("dup", absl::StrCat(kOpsToken, " *\n", kOpsToken, " x\n"));
  const std::string shortt = WriteFile("short", "short-token ns\n");
  const std::string empty = WriteFile("empty", "# nothing\n");
  for (const auto& [file, why] : std::vector<std::pair<std::string, std::string>>{
           {dup, ":2: this token is listed twice"}, {shortt, ":1: a token must be 16..512 bytes"},
           {empty, "no token"}, {TempPath("missing"), "auth_tokens_file"}}) {
    SCOPED_TRACE(file);
    const testing::CommandResult r = testing::RunCommand(absl::StrCat(
        testing::ProgramPath("kvhubd"), " --grpc_address=127.0.0.1:0 --http_address=127.0.0.1:0 "
                                        "--capacity_bytes=16MiB --max_block_bytes=1MiB --auth_tokens_file=",
        file, " 2>&1"));
    EXPECT_NE(r.exit_code, 0) << r.out;
    EXPECT_THAT(r.out, HasSubstr(why));
  }
  for (const std::string& f : {dup, shortt, empty}) std::remove(f.c_str());
}

// A CA, a shard certificate for 127.0.0.1 and a client certificate, made by the
// openssl command-line tool (Debian package openssl) in a temp directory.
struct Pki {
  std::string dir, ca, server_cert, server_key, client_cert, client_key;
};

bool MakePki(Pki* p, const std::string& name = "pki") {
  p->dir = TempPath(name);
  const std::string d = p->dir;
  p->ca = d + "/ca.pem";
  p->server_cert = d + "/server.pem";
  p->server_key = d + "/server.key";
  p->client_cert = d + "/client.pem";
  p->client_key = d + "/client.key";
  const std::string ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
  const std::string script = absl::StrCat(
      "set -e; mkdir -p ", d, "; cd ", d, "; ",
      "openssl req -x509 ", ec, " -keyout ca.key -out ca.pem -days 2 -subj /CN=kvhub-test-ca; ",
      "printf 'subjectAltName=IP:127.0.0.1,DNS:kvhub-shard\\n' > server.ext; ",
      "openssl req ", ec, " -keyout server.key -out server.csr -subj /CN=kvhub-shard; ",
      "openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 "
      "-extfile server.ext; ",
      "openssl req ", ec, " -keyout client.key -out client.csr -subj /CN=kvhub-client; ",
      "openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out client.pem -days 2 2>&1");
  const testing::CommandResult r = testing::RunCommand(absl::StrCat("bash -c \"", script, "\" 2>&1"));
  EXPECT_EQ(r.exit_code, 0) << r.out;
  return r.exit_code == 0;
}

// An encrypted key is refused at once. OpenSSL, given no passphrase callback, asked
// for one on the terminal or standard input: kvhubd hung at start (here its
// standard input is a pipe nobody writes, so it waited out the 10 s timeout).
TEST(ClusterSecurityTest, AnEncryptedKeyIsRefusedAtOnce) {
  Pki pki;
  ASSERT_TRUE(MakePki(&pki, "pki-encrypted"));
  const std::string enc = pki.dir + "/encrypted.key";
  const testing::CommandResult made = testing::RunCommand(
      absl::StrCat("openssl pkey -in ", pki.server_key, " -aes256 -passout pass:kvhub-secret -out ", enc, " 2>&1"));
  ASSERT_EQ(made.exit_code, 0) << made.out;
  const testing::CommandResult r = testing::RunCommand(absl::StrCat(
      "bash -c 'timeout 10 ", testing::ProgramPath("kvhubd"),
      " --grpc_address=127.0.0.1:0 --http_address=127.0.0.1:0 --capacity_bytes=16MiB --max_block_bytes=1MiB"
      " --tls_cert_file=", pki.server_cert, " --tls_key_file=", enc, " < <(sleep 15 2>/dev/null)' 2>&1"));
  EXPECT_NE(r.exit_code, 124) << "kvhubd waited for a passphrase: " << r.out;
  EXPECT_NE(r.exit_code, 0) << r.out;
  EXPECT_THAT(r.out, HasSubstr("encrypted keys are not supported"));
  testing::RunCommand(absl::StrCat("rm -rf ", pki.dir));
}

TEST(ClusterSecurityTest, TlsAndMutualTls) {
  Pki pki;
  ASSERT_TRUE(MakePki(&pki));
  const std::vector<uint8_t> a(100000, 0x5A);

  auto tls = StartShard({"--tls_cert_file=" + pki.server_cert, "--tls_key_file=" + pki.server_key});
  ASSERT_NE(tls, nullptr);
  ClientConfig c = Config(*tls, "");
  c.tls_ca_file = pki.ca;
  auto client = Client::Create(c);
  ASSERT_TRUE(client.ok()) << client.status();
  ASSERT_TRUE(PutOne(**client, "ns", a).ok());
  auto got = GetOne(**client, "ns", a.size());
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, a);
  // The certificate names kvhub-shard too.
  c.tls_server_name = "kvhub-shard";
  auto named = Client::Create(c);
  ASSERT_TRUE(named.ok());
  EXPECT_TRUE(GetOne(**named, "ns", a.size()).ok());
  // The CLI without the CA says what to give (it said "Socket closed" alone).
  testing::CommandResult cli = testing::RunCommand(
      absl::StrCat(testing::ProgramPath("kvhub"), " stats --deadline-ms 2000 --addr ", tls->grpc_address(), " 2>&1"));
  EXPECT_EQ(cli.exit_code, 1) << cli.out;
  EXPECT_THAT(cli.out, HasSubstr("give its CA with --tls-ca PATH"));
  // A plaintext client, or one checking for another name, gets nowhere.
  auto plain = Client::Create(Config(*tls, ""));
  ASSERT_TRUE(plain.ok());
  EXPECT_EQ(GetOne(**plain, "ns", a.size()).status().code(), absl::StatusCode::kUnavailable);
  c.tls_server_name = "someone-else";
  auto wrong_name = Client::Create(c);
  ASSERT_TRUE(wrong_name.ok());
  EXPECT_EQ(GetOne(**wrong_name, "ns", a.size()).status().code(), absl::StatusCode::kUnavailable);

  // Mutual TLS: a client certificate the CA signed is required.
  auto mtls = StartShard({"--tls_cert_file=" + pki.server_cert, "--tls_key_file=" + pki.server_key,
                          "--tls_client_ca_file=" + pki.ca});
  ASSERT_NE(mtls, nullptr);
  ClientConfig m = Config(*mtls, "");
  m.tls_ca_file = pki.ca;
  auto anonymous = Client::Create(m);
  ASSERT_TRUE(anonymous.ok());
  EXPECT_EQ(PutOne(**anonymous, "ns", a).code(), absl::StatusCode::kUnavailable);
  m.tls_cert_file = pki.client_cert;
  m.tls_key_file = pki.client_key;
  auto with_cert = Client::Create(m);
  ASSERT_TRUE(with_cert.ok()) << with_cert.status();
  ASSERT_TRUE(PutOne(**with_cert, "ns", a).ok());
  got = GetOne(**with_cert, "ns", a.size());
  ASSERT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(*got, a);

  // Client-side configuration errors are clear and immediate.
  m.tls_ca_file = TempPath("no-such-ca.pem");
  EXPECT_EQ(Client::Create(m).status().code(), absl::StatusCode::kNotFound);
  m.tls_ca_file = pki.dir + "/server.ext";  // not PEM
  auto not_pem = Client::Create(m);
  EXPECT_EQ(not_pem.status().code(), absl::StatusCode::kInvalidArgument) << not_pem.status();
  // kvhubd refuses a key that is not its certificate's (before session 14 it started,
  // and every handshake failed).
  testing::KvhubdProcessOptions mismatched;
  mismatched.flags = {"--capacity_bytes=16MiB", "--max_block_bytes=1MiB", "--tls_cert_file=" + pki.server_cert,
                      "--tls_key_file=" + pki.client_key};
  auto wrong_key = KvhubdProcess::Start(mismatched);
  ASSERT_FALSE(wrong_key.ok());
  EXPECT_THAT(std::string(wrong_key.status().message()), HasSubstr("exit code 2"));
  // kvhubd refuses a half TLS configuration.
  auto half = KvhubdProcess::Start(
      {.flags = {"--capacity_bytes=16MiB", "--max_block_bytes=1MiB", "--tls_cert_file=" + pki.server_cert}});
  EXPECT_FALSE(half.ok());
  testing::RunCommand(absl::StrCat("rm -rf ", pki.dir));
}

// Replaces `to` whole with the bytes of `from` (write beside, then rename, as a
// Kubernetes secret update or cert-manager does).
void ReplaceFile(const std::string& from, const std::string& to) {
  const testing::CommandResult r =
      testing::RunCommand(absl::StrCat("cp ", from, " ", to, ".new && mv ", to, ".new ", to, " 2>&1"));
  ASSERT_EQ(r.exit_code, 0) << r.out;
}

// Two PKIs, the one in use before a rotation and the one after, and a directory for
// the files in use.
struct Rotation {
  Pki before, after;
  std::string dir;
};

void MakeRotation(const std::string& name, Rotation* r) {
  ASSERT_TRUE(MakePki(&r->before, name + "-old"));
  ASSERT_TRUE(MakePki(&r->after, name + "-new"));
  r->dir = TempPath(name + "-in-use");
  ASSERT_EQ(testing::RunCommand(absl::StrCat("mkdir -p ", r->dir)).exit_code, 0);
}

// The files a process reads, in `r.dir`: a certificate, its key and a CA bundle.
struct InUse {
  std::string cert, key, ca;
};
// Puts `cert`, `key` and `ca` in place (each file replaced atomically, as a Secret update
// does) and returns where.
InUse Install(const Rotation& r, const std::string& cert, const std::string& key, const std::string& ca) {
  InUse in_use{r.dir + "/tls.crt", r.dir + "/tls.key", r.dir + "/ca.crt"};
  ReplaceFile(cert, in_use.cert);
  ReplaceFile(key, in_use.key);
  ReplaceFile(ca, in_use.ca);
  return in_use;
}

void RemoveRotation(const Rotation& r) {
  testing::RunCommand(absl::StrCat("rm -rf ", r.dir, " ", r.before.dir, " ", r.after.dir));
}

TEST(ClusterSecurityTest, RotatedCertificatesServeNewConnectionsWithoutARestart) {
  // Certificates from cert-manager or SPIRE live hours to weeks. Before session 14
  // kvhubd read its TLS files once: once its certificate expired, every client failed
  // until a restart, which empties the cache.
  Rotation rotation;
  ASSERT_NO_FATAL_FAILURE(MakeRotation("served", &rotation));
  const Pki& old_pki = rotation.before;
  const Pki& new_pki = rotation.after;
  const InUse files = Install(rotation, old_pki.server_cert, old_pki.server_key, old_pki.ca);
  auto shard = StartShard({"--tls_cert_file=" + files.cert, "--tls_key_file=" + files.key,
                           "--tls_client_ca_file=" + files.ca, "--tls_reload_ms=1000"});
  ASSERT_NE(shard, nullptr);
  auto client_of = [&](const Pki& trust, const Pki& identity) {
    ClientConfig c = Config(*shard, "");
    c.tls_ca_file = trust.ca;
    c.tls_cert_file = identity.client_cert;
    c.tls_key_file = identity.client_key;
    c.max_attempts = 1;
    auto client = Client::Create(c);
    EXPECT_TRUE(client.ok()) << client.status();
    return std::move(*client);
  };
  const std::vector<uint8_t> a(50000, 0xA5);
  ASSERT_TRUE(PutOne(*client_of(old_pki, old_pki), "ns", a).ok());
  EXPECT_FALSE(GetOne(*client_of(new_pki, new_pki), "ns", a.size()).ok()) << "the new CA is not served yet";

  // Rotate the server's certificate and key, then the CA its clients must be signed by.
  Install(rotation, new_pki.server_cert, new_pki.server_key, new_pki.ca);
  absl::StatusOr<std::vector<uint8_t>> got;
  EXPECT_TRUE(Eventually([&] {
    got = GetOne(*client_of(new_pki, new_pki), "ns", a.size());
    return got.ok();
  })) << got.status();
  EXPECT_EQ(got.value_or(std::vector<uint8_t>()), a) << "the block stored before the rotation is intact";
  // Clients of the old certificates are refused by new handshakes.
  EXPECT_FALSE(GetOne(*client_of(old_pki, old_pki), "ns", a.size()).ok());

  // A broken update (the old key beside the new certificate, then a certificate file
  // that is not PEM) is not taken: the shard keeps serving the last good set.
  ReplaceFile(old_pki.server_key, files.key);
  absl::SleepFor(absl::Milliseconds(2500));
  got = GetOne(*client_of(new_pki, new_pki), "ns", a.size());
  EXPECT_TRUE(got.ok()) << "a mismatched key replaced the served one: " << got.status();
  ReplaceFile(new_pki.server_key, files.key);
  ASSERT_EQ(testing::RunCommand(absl::StrCat("echo not-a-certificate > ", files.cert)).exit_code, 0);
  absl::SleepFor(absl::Milliseconds(2500));
  got = GetOne(*client_of(new_pki, new_pki), "ns", a.size());
  EXPECT_TRUE(got.ok()) << "an unreadable certificate replaced the served one: " << got.status();
  // A certificate that parses and matches its key but that TLS refuses (a 1024-bit
  // RSA key, under OpenSSL's security level): gRPC keeps the old one, so the shard
  // must not count it installed nor report its expiry (it did: the expiry alert then
  // watched a certificate never served, while the served one ran out).
  auto metric = [&](const std::string& name) -> std::string {
    httplib::Client http("127.0.0.1", shard->http_port());
    auto m = http.Get("/metrics");
    if (!m) return "";
    const size_t at = m->body.find("\n" + name + " ");
    return at == std::string::npos ? "" : m->body.substr(at + name.size() + 2, m->body.find('\n', at + 1) - at - name.size() - 2);
  };
  const std::string installed = metric("kvhub_tls_reloads_total{result=\"installed\"}");
  const std::string failed_before = metric("kvhub_tls_reloads_total{result=\"failed\"}");
  const std::string expiry = metric("kvhub_tls_certificate_expiry_timestamp_seconds");
  ASSERT_FALSE(installed.empty());
  ASSERT_FALSE(expiry.empty());
  const testing::CommandResult weak = testing::RunCommand(absl::StrCat(
      "cd ", rotation.dir, " && openssl req -x509 -newkey rsa:1024 -nodes -keyout weak.key -out weak.pem -days 400 ",
      "-subj /CN=weak -addext subjectAltName=IP:127.0.0.1 2>&1"));
  ASSERT_EQ(weak.exit_code, 0) << weak.out;
  ReplaceFile(rotation.dir + "/weak.key", files.key);
  ReplaceFile(rotation.dir + "/weak.pem", files.cert);
  EXPECT_TRUE(Eventually([&] {
    const std::string failed = metric("kvhub_tls_reloads_total{result=\"failed\"}");
    return !failed.empty() && failed != failed_before;
  }));
  absl::SleepFor(absl::Milliseconds(2500));
  EXPECT_EQ(metric("kvhub_tls_reloads_total{result=\"installed\"}"), installed);
  EXPECT_EQ(metric("kvhub_tls_certificate_expiry_timestamp_seconds"), expiry);
  got = GetOne(*client_of(new_pki, new_pki), "ns", a.size());
  EXPECT_TRUE(got.ok()) << got.status();
  EXPECT_EQ(shard->Stop().value_or(-1), 0);
  RemoveRotation(rotation);
}

TEST(ClusterSecurityTest, ALongLivedClientFollowsItsRotatedCertificates) {
  // A serving process keeps its client for days while its client certificate and CA
  // bundle rotate (SPIRE: hourly). Before session 14 the client read them once: after
  // the rotation every new connection (a shard restarted, moved) failed until the
  // serving process restarted.
  Rotation rotation;
  ASSERT_NO_FATAL_FAILURE(MakeRotation("client", &rotation));
  const Pki& old_pki = rotation.before;
  const Pki& new_pki = rotation.after;
  const InUse files = Install(rotation, old_pki.client_cert, old_pki.client_key, old_pki.ca);
  auto shard_flags = [](const Pki& pki) {
    return std::vector<std::string>{"--tls_cert_file=" + pki.server_cert, "--tls_key_file=" + pki.server_key,
                                    "--tls_client_ca_file=" + pki.ca};
  };
  auto first = StartShard(shard_flags(old_pki));
  ASSERT_NE(first, nullptr);
  const std::string address = first->grpc_address();
  ClientConfig c = Config(*first, "");
  c.tls_ca_file = files.ca;
  c.tls_cert_file = files.cert;
  c.tls_key_file = files.key;
  c.tls_reload_interval = absl::Seconds(1);
  auto client = Client::Create(c);
  ASSERT_TRUE(client.ok()) << client.status();
  const std::vector<uint8_t> a(20000, 0x3C);
  ASSERT_TRUE(PutOne(**client, "ns", a).ok());

  // Everything rotates to another CA; the shard comes back at the same address.
  ASSERT_EQ(first->Stop().value_or(-1), 0);
  Install(rotation, new_pki.client_cert, new_pki.client_key, new_pki.ca);
  std::vector<std::string> flags = shard_flags(new_pki);
  flags.push_back("--grpc_address=" + address);
  auto second = StartShard(flags);
  ASSERT_NE(second, nullptr);
  absl::Status put;
  EXPECT_TRUE(Eventually([&] {
    put = PutOne(**client, "ns", a);
    return put.ok();
  })) << "the client still presents its old certificate or trusts the old CA: " << put;
  EXPECT_EQ(second->Stop().value_or(-1), 0);
  RemoveRotation(rotation);
}

}  // namespace
}  // namespace kvhub
