#include "transport/ucx_config.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <memory>
#include <string>

#include "absl/strings/str_join.h"
#include "spdlog/sinks/ringbuffer_sink.h"
#include "spdlog/spdlog.h"
#include "transport/ucx_context.h"
#include "transport/ucx_worker.h"

namespace kvhub::transport {
namespace {

TEST(UcxConfigTest, DefaultsValidate) { EXPECT_TRUE(UcxConfig{}.Validate().ok()); }

// Callers retry or fail over on UNAVAILABLE; a dead peer must read as one on every
// transport (kvhub-stress saw a shard killed mid-call on shared memory give INTERNAL).
TEST(UcsToStatusTest, APeerThatIsGoneIsUnavailable) {
  for (ucs_status_t st : {UCS_ERR_UNREACHABLE, UCS_ERR_CONNECTION_RESET, UCS_ERR_NOT_CONNECTED, UCS_ERR_SHMEM_SEGMENT}) {
    absl::Status s = UcsToStatus(st, "ucx call send");
    EXPECT_EQ(s.code(), absl::StatusCode::kUnavailable) << s;
    EXPECT_NE(s.message().find("ucx call send: "), std::string::npos) << s;
  }
  EXPECT_NE(UcsToStatus(UCS_ERR_SHMEM_SEGMENT, "x").message().find("died or restarted"), std::string::npos);
  EXPECT_EQ(UcsToStatus(UCS_ERR_ENDPOINT_TIMEOUT, "x").code(), absl::StatusCode::kDeadlineExceeded);
  EXPECT_EQ(UcsToStatus(UCS_ERR_NO_ELEM, "x").code(), absl::StatusCode::kInternal);
  EXPECT_TRUE(UcsToStatus(UCS_OK, "x").ok());
}

TEST(UcxConfigTest, RejectsBadFields) {
  UcxConfig c;
  c.idle_wakeup = absl::ZeroDuration();
  EXPECT_EQ(c.Validate().code(), absl::StatusCode::kInvalidArgument);
  c = UcxConfig{};
  c.op_timeout = absl::ZeroDuration();
  EXPECT_EQ(c.Validate().code(), absl::StatusCode::kInvalidArgument);
  c = UcxConfig{};
  c.tls = "tcp;rm -rf";
  EXPECT_EQ(c.Validate().code(), absl::StatusCode::kInvalidArgument);
  c = UcxConfig{};
  c.options = {{"UCX_TLS", "tcp"}};
  EXPECT_EQ(c.Validate().code(), absl::StatusCode::kInvalidArgument);
  c = UcxConfig{};
  c.options = {{"tls", "posix"}};  // UCX would take it over tls, kvhub's choices would not
  EXPECT_EQ(c.Validate().code(), absl::StatusCode::kInvalidArgument);
  for (uint64_t bad : {uint64_t{1}, uint64_t{8 << 10} - 1, (uint64_t{64} << 20) + 1}) {
    c = UcxConfig{};
    c.tcp_rx_segment_bytes = bad;
    EXPECT_EQ(c.Validate().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
  for (uint64_t good : {uint64_t{0}, uint64_t{8 << 10}, uint64_t{64} << 20}) {
    c = UcxConfig{};
    c.tcp_rx_segment_bytes = good;
    EXPECT_TRUE(c.Validate().ok()) << good;
  }
}

TEST(UcxContextTest, TcpReceiveSegmentsOfAnyValidSizeStart) {
  for (uint64_t bytes : {uint64_t{0}, uint64_t{8 << 10}, uint64_t{1} << 20, uint64_t{64} << 20}) {
    UcxConfig c;
    c.tls = "tcp";
    c.tcp_rx_segment_bytes = bytes;
    EXPECT_TRUE(UcxContext::Create(c).ok()) << bytes;
  }
}

TEST(UcxConfigTest, TlsMayUseTcp) {
  EXPECT_TRUE(TlsMayUseTcp(""));
  EXPECT_TRUE(TlsMayUseTcp("tcp"));
  EXPECT_TRUE(TlsMayUseTcp("rc,tcp"));
  EXPECT_TRUE(TlsMayUseTcp("all"));
  EXPECT_TRUE(TlsMayUseTcp("^posix"));
  EXPECT_FALSE(TlsMayUseTcp("posix,cma"));
  EXPECT_FALSE(TlsMayUseTcp("rc"));
  EXPECT_FALSE(TlsMayUseTcp("^tcp,posix"));
}

TEST(UcxConfigTest, SharedMemoryQueueTls) {
  EXPECT_EQ(SharedMemoryQueueTls("tcp,posix,cma"), "posix");
  EXPECT_EQ(SharedMemoryQueueTls("sysv,tcp,posix"), "sysv,posix");
  EXPECT_EQ(SharedMemoryQueueTls("rc,sm"), "sm");
  EXPECT_EQ(SharedMemoryQueueTls("posix,cma"), "posix");
  EXPECT_EQ(SharedMemoryQueueTls("tcp,cma"), "");  // cma has no queue
  EXPECT_EQ(SharedMemoryQueueTls("tcp"), "");
  EXPECT_EQ(SharedMemoryQueueTls(""), "");
  EXPECT_EQ(SharedMemoryQueueTls("^tcp"), "");
}

// "^posix" excludes posix: it named a shared-memory transport and was taken for
// asking for one (no peer failure detection required, shared-memory regions tried).
TEST(UcxConfigTest, TlsNamesSharedMemory) {
  EXPECT_TRUE(TlsNamesSharedMemory("tcp,posix"));
  EXPECT_TRUE(TlsNamesSharedMemory("sm"));
  EXPECT_FALSE(TlsNamesSharedMemory("tcp"));
  EXPECT_FALSE(TlsNamesSharedMemory(""));
  EXPECT_FALSE(TlsNamesSharedMemory("^posix,sysv"));
  EXPECT_FALSE(TlsNamesSharedMemory("^tcp,sm"));
}

TEST(UcxConfigTest, ReachesPeersOnlyOverTcp) {
  EXPECT_TRUE(ReachesPeersOnlyOverTcp({"self", "tcp"}, true));
  EXPECT_TRUE(ReachesPeersOnlyOverTcp({"self", "tcp", "sysv", "posix", "cma"}, true));  // shm left out
  EXPECT_FALSE(ReachesPeersOnlyOverTcp({"self", "tcp", "sysv", "posix", "cma"}, false));
  EXPECT_FALSE(ReachesPeersOnlyOverTcp({"self", "tcp", "rc_mlx5", "ud_mlx5"}, true));
  EXPECT_FALSE(ReachesPeersOnlyOverTcp({"tcp", "cuda_ipc"}, true));  // unknown: not only tcp
  EXPECT_FALSE(ReachesPeersOnlyOverTcp({"self", "posix"}, true));     // no tcp at all
  EXPECT_FALSE(ReachesPeersOnlyOverTcp({}, true));
}

TEST(UcxContextTest, TransportNamesFollowTheTlsList) {
  UcxConfig tcp;
  tcp.tls = "tcp";
  auto c = UcxContext::Create(tcp);
  ASSERT_TRUE(c.ok()) << c.status();
  const std::vector<std::string> names = (*c)->TransportNames();
  EXPECT_NE(std::find(names.begin(), names.end(), "tcp"), names.end()) << absl::StrJoin(names, ",");
  EXPECT_EQ(std::find(names.begin(), names.end(), "posix"), names.end()) << absl::StrJoin(names, ",");
  UcxConfig shm;
  shm.tls = "posix,cma";
  auto d = UcxContext::Create(shm);
  ASSERT_TRUE(d.ok()) << d.status();
  const std::vector<std::string> shm_names = (*d)->TransportNames();
  EXPECT_NE(std::find(shm_names.begin(), shm_names.end(), "posix"), shm_names.end()) << absl::StrJoin(shm_names, ",");
  EXPECT_EQ(std::find(shm_names.begin(), shm_names.end(), "tcp"), shm_names.end()) << absl::StrJoin(shm_names, ",");
}

TEST(UcxContextTest, SharedMemoryOnlyStartsWithoutConfigurationWarnings) {
  // The tcp receive segment option is set only where tcp may be used; elsewhere UCX
  // logs "invalid configuration" when each worker starts.
  auto sink = std::make_shared<spdlog::sinks::ringbuffer_sink_mt>(64);
  struct RestoreLogger {
    std::shared_ptr<spdlog::logger> previous = spdlog::default_logger();
    ~RestoreLogger() { spdlog::set_default_logger(previous); }
  } restore;
  spdlog::set_default_logger(std::make_shared<spdlog::logger>("ucx_config_test", sink));
  UcxConfig c;
  c.tls = "posix,cma";
  c.tcp_rx_segment_bytes = 1 << 20;
  absl::StatusOr<std::unique_ptr<UcxContext>> ctx = UcxContext::Create(c);
  ASSERT_TRUE(ctx.ok()) << ctx.status();
  {
    absl::StatusOr<std::unique_ptr<UcxWorker>> worker = UcxWorker::Create(ctx->get(), {.name = "config-test"});
    ASSERT_TRUE(worker.ok()) << worker.status();
  }
  for (const std::string& line : sink->last_formatted()) {
    EXPECT_EQ(line.find("invalid configuration"), std::string::npos) << line;
  }
}

TEST(UcxContextTest, DisabledIsFailedPrecondition) {
  UcxConfig c;
  c.enabled = false;
  EXPECT_EQ(UcxContext::Create(c).status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST(UcxContextTest, UnknownTransportIsAnError) {
  UcxConfig c;
  c.tls = "no_such_transport";
  auto ctx = UcxContext::Create(c);
  // UCX either refuses the TLS at init or finds no usable resource.
  EXPECT_FALSE(ctx.ok());
}

TEST(UcxContextTest, OptionsArePassedToUcx) {
  UcxConfig c;
  c.tls = "tcp";
  c.options = {{"RNDV_THRESH", "64K"}};
  EXPECT_TRUE(UcxContext::Create(c).ok());
  c.options = {{"RNDV_THRESH", "not-a-size"}};
  EXPECT_EQ(UcxContext::Create(c).status().code(), absl::StatusCode::kInvalidArgument);
}

TEST(UcxContextTest, RegistersMemoryAndPacksRkey) {
  UcxConfig c;
  c.tls = "tcp";
  auto ctx = UcxContext::Create(c);
  ASSERT_TRUE(ctx.ok()) << ctx.status();
  std::vector<uint8_t> buf(1 << 20);
  auto mem = (*ctx)->Register(buf.data(), buf.size());
  ASSERT_TRUE(mem.ok()) << mem.status();
  EXPECT_EQ((*mem)->base(), buf.data());
  EXPECT_EQ((*mem)->size(), buf.size());
  EXPECT_FALSE((*mem)->packed_rkey().empty());
  EXPECT_TRUE((*mem)->Contains(buf.data() + 10, 100));
  EXPECT_FALSE((*mem)->Contains(buf.data() + buf.size() - 10, 100));
  EXPECT_EQ((*ctx)->Register(nullptr, 10).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kvhub::transport
