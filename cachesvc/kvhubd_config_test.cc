#include "cachesvc/kvhubd_config.h"

#include <cstdio>
#include <cstdlib>
#include <algorithm>
#include <fstream>

#include "common/memory_limit.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvhub::cachesvc {
namespace {

using ::testing::HasSubstr;

TEST(KvhubdConfigTest, DefaultsAreValidAndBounded) {
  KvhubdConfig c = KvhubdConfig::Defaults();
  EXPECT_TRUE(c.Validate().ok()) << c.Validate();
  EXPECT_EQ(c.grpc_address, "127.0.0.1:7480");
  EXPECT_EQ(c.http_address, "127.0.0.1:7481");
  EXPECT_LE(c.store.capacity_bytes, 4ull << 30);
  EXPECT_GE(c.store.capacity_bytes, 64ull << 20);
}

TEST(KvhubdConfigTest, ParsesByteSizes) {
  EXPECT_EQ(*ParseByteSize("4096"), 4096u);
  EXPECT_EQ(*ParseByteSize("64MiB"), 64ull << 20);
  EXPECT_EQ(*ParseByteSize("4GiB"), 4ull << 30);
  EXPECT_EQ(*ParseByteSize("2g"), 2ull << 30);
  EXPECT_EQ(*ParseByteSize(" 1 KiB "), 1024u);
  EXPECT_FALSE(ParseByteSize("").ok());
  EXPECT_FALSE(ParseByteSize("MiB").ok());
  EXPECT_FALSE(ParseByteSize("12XB").ok());
  EXPECT_FALSE(ParseByteSize("-1").ok());
  EXPECT_FALSE(ParseByteSize("99999999999999999999").ok());
  EXPECT_FALSE(ParseByteSize("9999999999999TiB").ok());
}

// Files written on Windows: a UTF-8 byte order mark and CRLF line ends.
TEST(KvhubdConfigTest, AcceptsAByteOrderMarkAndCrlfLineEnds) {
  KvhubdConfig c = KvhubdConfig::Defaults();
  absl::Status s = c.ApplyText("\xEF\xBB\xBF" "capacity_bytes = 128MiB\r\neviction_policy = lru\r\n");
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(c.store.capacity_bytes, 128ull << 20);
  EXPECT_EQ(c.store.eviction.name, "lru");
}

TEST(KvhubdConfigTest, AppliesTextWithCommentsAndBlankLines) {
  KvhubdConfig c = KvhubdConfig::Defaults();
  absl::Status s = c.ApplyText(
      "# a comment\n"
      "\n"
      "grpc_address = 0.0.0.0:9000   # trailing comment\n"
      "capacity_bytes=512MiB\n"
      "reservation_timeout_ms = 250\n"
      "try_hugepages = false\n"
      "eviction_policy = lru\n"
      "high_watermark = 0.8\n"
      "low_watermark = 0.7\n"
      "node_id = shard-1\n");
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(c.grpc_address, "0.0.0.0:9000");
  EXPECT_EQ(c.store.capacity_bytes, 512ull << 20);
  EXPECT_EQ(c.store.reservation_timeout, absl::Milliseconds(250));
  EXPECT_FALSE(c.store.try_hugepages);
  EXPECT_EQ(c.store.eviction.name, "lru");
  EXPECT_DOUBLE_EQ(c.store.high_watermark, 0.8);
  EXPECT_EQ(c.node_id, "shard-1");
  EXPECT_TRUE(c.Validate().ok()) << c.Validate();
}

// '#' starts a comment at the start of a line or after a space or tab only: inside
// a value it is part of it (a tokens path with '#' was cut short silently).
TEST(KvhubdConfigTest, AHashInsideAValueIsPartOfIt) {
  KvhubdConfig c = KvhubdConfig::Defaults();
  absl::Status s = c.ApplyText(
      "node_id = shard-1\t# tab comment\n"
      "auth_tokens_file = /run/secrets/kv#1   # the file is kv#1\n",
      "hash.conf");
  ASSERT_TRUE(s.ok()) << s;
  EXPECT_EQ(c.node_id, "shard-1");
  EXPECT_EQ(c.auth_tokens_file, "/run/secrets/kv#1");
  // Glued to a value, it is part of the value, which is then refused with its line.
  s = c.ApplyText("capacity_bytes = 1GiB#no space\n", "hash.conf");
  EXPECT_FALSE(s.ok());
  EXPECT_THAT(std::string(s.message()), ::testing::HasSubstr("hash.conf:1"));
}

TEST(KvhubdConfigTest, UnknownKeyAndBadValuesNameTheLine) {
  KvhubdConfig c = KvhubdConfig::Defaults();
  absl::Status s = c.ApplyText("capacity_bytes = 1GiB\nno_such_key = 1\n", "test.conf");
  EXPECT_TRUE(absl::IsInvalidArgument(s));
  EXPECT_THAT(s.message(), HasSubstr("test.conf:2"));
  EXPECT_THAT(s.message(), HasSubstr("no_such_key"));

  s = c.ApplyText("worker_threads = many\n", "x");
  EXPECT_THAT(s.message(), HasSubstr("worker_threads"));
  s = c.ApplyText("just a line\n", "x");
  EXPECT_THAT(s.message(), HasSubstr("key = value"));
  s = c.ApplyText("try_hugepages = maybe\n", "x");
  EXPECT_THAT(s.message(), HasSubstr("boolean"));
  s = c.ApplyText("expiry_interval_ms = -5\n", "x");
  EXPECT_FALSE(s.ok());
  s = c.ApplyText("max_leases = -1\n", "x");
  EXPECT_THAT(s.message(), HasSubstr("out of range"));
  s = c.ApplyText("size_class_steps = 99999999999\n", "x");
  EXPECT_THAT(s.message(), HasSubstr("out of range"));
}

TEST(KvhubdConfigTest, ValidateNamesTheBadKey) {
  auto check = [](auto mutate, const char* key) {
    KvhubdConfig c = KvhubdConfig::Defaults();
    mutate(c);
    absl::Status s = c.Validate();
    EXPECT_TRUE(absl::IsInvalidArgument(s)) << key;
    EXPECT_THAT(s.message(), HasSubstr(key));
  };
  check([](KvhubdConfig& c) { c.grpc_address = "nohostport"; }, "grpc_address");
  check([](KvhubdConfig& c) { c.grpc_address = "127.0.0.1:70000"; }, "grpc_address");
  check([](KvhubdConfig& c) { c.http_address = ":80"; }, "http_address");
  check([](KvhubdConfig& c) { c.grpc_address = "::1:7480"; }, "'[::1]:7480'");
  check([](KvhubdConfig& c) { c.grpc_address = "[::1]"; }, "has no port");
  check([](KvhubdConfig& c) { c.http_address = "::1:7481"; }, "http_address");
  check([](KvhubdConfig& c) { c.node_id = "bad id with spaces"; }, "node_id");
  check([](KvhubdConfig& c) { c.store.max_block_bytes = 512ull << 20; }, "max_block_bytes");
  check([](KvhubdConfig& c) { c.store.max_lease = absl::Minutes(11); }, "max_lease_ms");
  check([](KvhubdConfig& c) { c.store.default_lease = absl::Minutes(10) + absl::Seconds(1); }, "lease");
  check([](KvhubdConfig& c) { c.worker_threads = -1; }, "worker_threads");
  check([](KvhubdConfig& c) { c.expiry_interval = absl::ZeroDuration(); }, "expiry_interval_ms");
  check([](KvhubdConfig& c) { c.get_stream_chunk_bytes = 10; }, "get_stream_chunk_bytes");
  check([](KvhubdConfig& c) { c.stalled_send_timeout = absl::Milliseconds(10); }, "stalled_send_ms");
  check([](KvhubdConfig& c) { c.metrics_max_namespaces = 0; }, "metrics_max_namespaces");
  check([](KvhubdConfig& c) { c.log_level = "loud"; }, "log_level");
  check([](KvhubdConfig& c) { c.ucx_tls = "tcp;rm -rf"; }, "ucx_tls");
  check([](KvhubdConfig& c) { c.ucx_probe_interval = absl::Milliseconds(5); }, "ucx_probe_ms");
  check([](KvhubdConfig& c) { c.ucx_session_grace = absl::Milliseconds(5); }, "ucx_session_grace_ms");
  check([](KvhubdConfig& c) { c.tls_cert_file = "/x.pem"; }, "tls_key_file");
  check([](KvhubdConfig& c) { c.tls_key_file = "/x.key"; }, "tls_cert_file");
  check([](KvhubdConfig& c) { c.tls_client_ca_file = "/ca.pem"; }, "tls_client_ca_file");
  // Errors from the block store's own validation come through too.
  KvhubdConfig c = KvhubdConfig::Defaults();
  c.store.low_watermark = 0.99;
  c.store.high_watermark = 0.5;
  EXPECT_TRUE(absl::IsInvalidArgument(c.Validate()));
}

// A value the file's parser takes but Validate refuses still names the file and
// line (before: only the key, so an operator could not tell file from flag).
TEST(KvhubdConfigTest, ValidateNamesTheLineThatSetTheBadKey) {
  KvhubdConfig c = KvhubdConfig::Defaults();
  ASSERT_TRUE(c.ApplyText("capacity_bytes = 64MiB\nlog_level = INFO\n", "my.conf").ok());
  EXPECT_THAT(c.Validate().message(), HasSubstr("my.conf:2: config log_level"));
  c.origins["log_level"] = "--log_level";
  EXPECT_THAT(c.Validate().message(), HasSubstr("--log_level: config log_level"));
}

TEST(KvhubdConfigTest, EveryKeyRoundTripsThroughToText) {
  KvhubdConfig a = KvhubdConfig::Defaults();
  a.node_id = "n1";
  a.ready_file = "/tmp/x";
  a.ucx_enabled = false;
  a.ucx_tls = "rc,tcp";
  a.ucx_net_devices = "eth0,mlx5_0:1";
  a.ucx_shm_regions = false;
  a.ucx_probe_interval = absl::Milliseconds(250);
  a.ucx_session_grace = absl::Seconds(5);
  a.ucx_vet_addresses = false;
  a.auth_tokens_file = "/etc/kvhub/tokens";
  a.auth_reload_interval = absl::Seconds(3);
  a.tls_cert_file = "/etc/kvhub/shard.pem";
  a.tls_key_file = "/etc/kvhub/shard.key";
  a.tls_client_ca_file = "/etc/kvhub/ca.pem";
  a.tls_reload_interval = absl::Seconds(5);
  a.store.capacity_bytes = 123ull << 20;
  a.store.namespace_quota_bytes = 100ull << 20;
  a.store.namespace_quotas = {{"tenant-a", 1ull << 30}, {"ns:with:colons", 0}};
  a.gpu_tier_bytes = 1ull << 30;
  a.check_memory_limit = false;
  a.grpc_memory_bytes = 512ull << 20;
  a.grpc_handshake_timeout = absl::Milliseconds(2500);
  a.stalled_send_timeout = absl::Seconds(7);
  a.store.high_watermark = 0.9999995;  // printed as "1" with six digits, read back as 1
  a.store.low_watermark = 0.1 + 0.2;   // not 0.3
  KvhubdConfig b;
  ASSERT_TRUE(b.ApplyText(a.ToText()).ok());
  EXPECT_EQ(b.ToText(), a.ToText());
  EXPECT_EQ(b.store.high_watermark, a.store.high_watermark);
  EXPECT_EQ(b.store.low_watermark, a.store.low_watermark);
  EXPECT_EQ(KvhubdConfig::Keys().size(), 51u);
}

// A config template rendered with an unset variable ("auth_tokens_file = ${TOKENS}")
// started a shard without authentication or TLS; such keys may not be empty in a
// file, --print_config shows them commented out when unset (so its output still
// reads back), and "-" (standard input, readable once) is refused for them.
TEST(KvhubdConfigTest, SecurityKeysAreNeverEmptyNorStandardInput) {
  for (const char* key : {"auth_tokens_file", "tls_cert_file", "tls_key_file", "tls_client_ca_file"}) {
    KvhubdConfig c;
    const absl::Status s = c.ApplyText(absl::StrCat("capacity_bytes = 64MiB\n", key, " =  \n"), "kvhubd.conf");
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << key;
    EXPECT_THAT(std::string(s.message()), HasSubstr(absl::StrCat("kvhubd.conf:2: ", key, " is empty"))) << s;
  }
  KvhubdConfig unset = KvhubdConfig::Defaults();
  const std::string text = unset.ToText();
  EXPECT_THAT(text, HasSubstr("# auth_tokens_file = \n"));
  KvhubdConfig back;
  ASSERT_TRUE(back.ApplyText(text).ok());
  EXPECT_EQ(back.ToText(), text);
  KvhubdConfig stdin_tokens = KvhubdConfig::Defaults();
  stdin_tokens.auth_tokens_file = "-";
  EXPECT_THAT(std::string(stdin_tokens.Validate().message()), HasSubstr("auth_tokens_file: '-' (standard input)"));
  KvhubdConfig stdin_key = KvhubdConfig::Defaults();
  stdin_key.tls_cert_file = "/etc/kvhub/shard.pem";
  stdin_key.tls_key_file = "-";
  EXPECT_THAT(std::string(stdin_key.Validate().message()), HasSubstr("tls_key_file: '-'"));
}

// UCX's tcp port takes bytes from anyone who reaches it; a shard only local
// clients reach keeps it on loopback.
TEST(KvhubdConfigTest, UcxStaysOnLoopbackWhenGrpcDoes) {
  unsetenv("UCX_NET_DEVICES");
  KvhubdConfig c = KvhubdConfig::Defaults();
  EXPECT_EQ(c.ucx_net_devices, "auto");
  EXPECT_TRUE(c.GrpcOnLoopback());
  EXPECT_EQ(c.UcxNetDevices(), "lo");
  ASSERT_TRUE(c.Set("grpc_address", "0.0.0.0:7480").ok());
  EXPECT_EQ(c.UcxNetDevices(), "");  // UCX's default
  ASSERT_TRUE(c.Set("ucx_net_devices", "mlx5_0:1").ok());
  EXPECT_EQ(c.UcxNetDevices(), "mlx5_0:1");
  ASSERT_TRUE(c.Set("ucx_net_devices", "eth0;reboot").ok());
  absl::Status s = c.Validate();
  EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_NE(s.message().find("ucx_net_devices"), std::string::npos) << s;
}

TEST(KvhubdConfigTest, NamespaceQuotasParseAndValidate) {
  KvhubdConfig c = KvhubdConfig::Defaults();
  ASSERT_TRUE(c.Set("namespace_quotas", " tenant-a:100GiB, tenant-b:64MiB ,free:0").ok());
  ASSERT_EQ(c.store.namespace_quotas.size(), 3u);
  EXPECT_EQ(c.store.namespace_quotas[0].ns, "tenant-a");
  EXPECT_EQ(c.store.namespace_quotas[0].bytes, 100ull << 30);
  EXPECT_EQ(c.store.namespace_quotas[1].bytes, 64ull << 20);
  EXPECT_EQ(c.store.namespace_quotas[2].bytes, 0u);
  EXPECT_TRUE(c.Validate().ok()) << c.Validate();
  ASSERT_TRUE(c.Set("namespace_quotas", "").ok());
  EXPECT_TRUE(c.store.namespace_quotas.empty());

  absl::Status s = c.Set("namespace_quotas", "tenant-a");
  EXPECT_THAT(std::string(s.message()), HasSubstr("'tenant-a' is not NAMESPACE:SIZE"));
  s = c.Set("namespace_quotas", "tenant-a:lots");
  EXPECT_THAT(std::string(s.message()), HasSubstr("'tenant-a:lots'"));
  s = c.Set("namespace_quotas", "a :1GiB");  // would quota a namespace "a "
  EXPECT_THAT(std::string(s.message()), HasSubstr("spaces around the namespace"));
  ASSERT_TRUE(c.Set("namespace_quotas", "tenant-a:1MiB").ok());  // below max_block_bytes (64MiB)
  EXPECT_THAT(std::string(c.Validate().message()), HasSubstr("'tenant-a' gets 1048576 bytes"));
  ASSERT_TRUE(c.Set("namespace_quotas", "t:0,t:0").ok());
  EXPECT_THAT(std::string(c.Validate().message()), HasSubstr("listed twice"));
}

TEST(KvhubdConfigTest, CapacityIsCheckedAgainstTheMemoryLimit) {
  KvhubdConfig c = KvhubdConfig::Defaults();
  c.store.capacity_bytes = 4ull << 30;
  std::string warning = "stale";
  EXPECT_TRUE(c.CheckMemoryLimit(16ull << 30, "physical memory", &warning).ok());
  EXPECT_EQ(warning, "");
  EXPECT_TRUE(c.CheckMemoryLimit(0, "", &warning).ok());  // unknown limit
  EXPECT_EQ(warning, "");

  // Above 90%: starts, with a warning.
  EXPECT_TRUE(c.CheckMemoryLimit(4400ull << 20, "physical memory", &warning).ok());
  EXPECT_THAT(warning, HasSubstr("above 90% of the memory limit 4.3 GiB (physical memory)"));

  // Above the limit: refused, naming both sizes, where the limit came from, and the way out.
  absl::Status s = c.CheckMemoryLimit(2ull << 30, "/sys/fs/cgroup/kubepods/pod1/memory.max", &warning);
  EXPECT_TRUE(absl::IsFailedPrecondition(s)) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("capacity_bytes 4.0 GiB is more than this process may use: "
                                                  "2.0 GiB (/sys/fs/cgroup/kubepods/pod1/memory.max)"));
  EXPECT_THAT(std::string(s.message()), HasSubstr("check_memory_limit=false"));

  ASSERT_TRUE(c.Set("check_memory_limit", "false").ok());
  EXPECT_TRUE(c.CheckMemoryLimit(2ull << 30, "physical memory", &warning).ok());
  EXPECT_THAT(warning, HasSubstr("starting anyway"));
}

TEST(KvhubdConfigTest, DuelPolicyMemoryIsWarnedAboutWithAnAutoSlotTable) {
  KvhubdConfig c = KvhubdConfig::Defaults();
  ASSERT_TRUE(c.Set("capacity_bytes", "4GiB").ok());
  EXPECT_EQ(c.PolicyMemoryWarning(), "");  // s3fifo
  ASSERT_TRUE(c.Set("eviction_policy", "duel").ok());
  // 4 GiB / 4 KiB = 1M slots x 370 B = 370 MiB-ish, 9% of the tier.
  EXPECT_THAT(c.PolicyMemoryWarning(), HasSubstr("max_blocks is auto (1048576 slots"));
  EXPECT_THAT(c.PolicyMemoryWarning(), HasSubstr("9.0% of capacity_bytes"));
  ASSERT_TRUE(c.Set("max_blocks", "8192").ok());  // sized to the blocks it holds
  EXPECT_EQ(c.PolicyMemoryWarning(), "");
  ASSERT_TRUE(c.Set("max_blocks", "0").ok());
  ASSERT_TRUE(c.Set("min_block_bytes", "1MiB").ok());  // 4096 slots: 1.5 MB, under 2%
  EXPECT_EQ(c.PolicyMemoryWarning(), "");
}

TEST(KvhubdConfigTest, FewAllocatorSlabsAreWarnedAbout) {
  KvhubdConfig c = KvhubdConfig::Defaults();
  c.store.capacity_bytes = 4ull << 30;  // 64 slabs of 64 MiB
  EXPECT_EQ(c.FewSlabsWarning(), "");
  // 64 MiB with the default 64 MiB max_block_bytes: one slab, one block size at a time.
  ASSERT_TRUE(c.Set("capacity_bytes", "64MiB").ok());
  ASSERT_TRUE(c.Set("region_bytes", "64MiB").ok());
  EXPECT_THAT(c.FewSlabsWarning(), HasSubstr("holds only 1 allocator slab of 64.0 MiB (sized for max_block_bytes "
                                             "64.0 MiB): at most 1 block size can be stored at once"));
  EXPECT_THAT(c.FewSlabsWarning(), HasSubstr("Lower max_block_bytes"));
  ASSERT_TRUE(c.Set("max_block_bytes", "1MiB").ok());  // then 64 slabs of 1 MiB
  EXPECT_EQ(c.FewSlabsWarning(), "");
}

TEST(KvhubdConfigTest, MetricsLabelCapsAreBoundedTogether) {
  KvhubdConfig c = KvhubdConfig::Defaults();
  c.metrics_max_namespaces = 4096;
  c.metrics_max_models = 16;
  EXPECT_TRUE(c.Validate().ok()) << c.Validate();
  c.metrics_max_models = 1024;  // 4M dense series: refused
  EXPECT_THAT(std::string(c.Validate().message()), HasSubstr("times metrics_max_namespaces must be at most 65536"));
}

// A capacity that is not a whole number of slabs still gets slabs of its own: the
// region is not cut to the machine's default capacity (which on a 1000 MiB machine
// was 250 MiB, a region no slab size divided: one slab for the tier).
TEST(KvhubdConfigTest, TheRegionIsNotCutToTheDefaultCapacity) {
  KvhubdConfig c = KvhubdConfig::DefaultsFor(1000ull << 20);
  EXPECT_EQ(c.store.capacity_bytes, 250ull << 20);
  EXPECT_EQ(c.store.region_bytes, 1ull << 30);
  ASSERT_TRUE(c.Set("capacity_bytes", "250MiB").ok());
  EXPECT_TRUE(c.Validate().ok()) << c.Validate();
  EXPECT_EQ(c.store.EffectiveSlabBytes(), 64ull << 20) << "slabs sized for max_block_bytes, not the whole tier";
  ASSERT_TRUE(c.Set("max_block_bytes", "1MiB").ok());
  EXPECT_EQ(c.FewSlabsWarning(), "");
}

TEST(KvhubdConfigTest, DefaultCapacityFitsTheMemoryLimit) {
  KvhubdConfig c = KvhubdConfig::Defaults();
  const MemoryLimit limit = ReadMemoryLimit();
  ASSERT_GT(limit.bytes, 0u);
  EXPECT_LE(c.store.capacity_bytes, std::max<uint64_t>(limit.bytes / 4, 64ull << 20));
  EXPECT_TRUE(c.CheckMemoryLimit(limit.bytes, limit.source, nullptr).ok());
}

TEST(KvhubdConfigTest, AKeySetTwiceInOneFileIsAnError) {
  KvhubdConfig c;
  absl::Status s = c.ApplyText("capacity_bytes = 64MiB\n# comment\ncapacity_bytes = 128MiB\n", "k.conf");
  EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
  EXPECT_THAT(std::string(s.message()), HasSubstr("k.conf:3: capacity_bytes is already set on line 1"));
  // CRLF line endings are fine.
  KvhubdConfig d;
  ASSERT_TRUE(d.ApplyText("capacity_bytes = 64MiB\r\nlog_level = warn\r\n").ok());
  EXPECT_EQ(d.store.capacity_bytes, 64ull << 20);
  EXPECT_EQ(d.log_level, "warn");
}

TEST(KvhubdConfigTest, ApplyFileReportsMissingFile) {
  KvhubdConfig c;
  EXPECT_TRUE(absl::IsNotFound(c.ApplyFile("/nonexistent/kvhubd.conf")));
  EXPECT_TRUE(absl::IsInvalidArgument(c.ApplyFile(::testing::TempDir())));  // a directory
  std::string path = ::testing::TempDir() + "/kvhubd_config_test.conf";
  {
    std::ofstream out(path);
    out << "log_level = debug\n";
  }
  ASSERT_TRUE(c.ApplyFile(path).ok());
  EXPECT_EQ(c.log_level, "debug");
  std::remove(path.c_str());
}

}  // namespace
}  // namespace kvhub::cachesvc
