#include "client/client_config.h"

#include <cstdlib>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvhub {
namespace {

ClientConfig Valid() {
  ClientConfig c;
  c.members = {{"127.0.0.1:7000", 1.0}, {"127.0.0.1:7001", 2.0}};
  return c;
}

TEST(ClientConfigTest, DefaultsWithMembersAreValid) {
  EXPECT_TRUE(Valid().Validate().ok());
  ClientConfig v6 = Valid();
  v6.members[0].address = "[::1]:7480";
  EXPECT_TRUE(v6.Validate().ok()) << v6.Validate();
}

TEST(ClientConfigTest, RejectsBadFields) {
  auto bad = [](auto mutate) {
    ClientConfig c = Valid();
    mutate(c);
    absl::Status s = c.Validate();
    EXPECT_EQ(s.code(), absl::StatusCode::kInvalidArgument) << s;
    return std::string(s.message());
  };
  EXPECT_NE(bad([](ClientConfig& c) { c.members.clear(); }).find("members"), std::string::npos);
  bad([](ClientConfig& c) { c.members[1].address = c.members[0].address; });
  bad([](ClientConfig& c) { c.members[0].address = "nohost"; });
  bad([](ClientConfig& c) { c.members[0].address = "h:0"; });
  bad([](ClientConfig& c) { c.members[0].address = "h:70000"; });
  EXPECT_NE(bad([](ClientConfig& c) { c.members[0].address = "::1:7480"; }).find("'[::1]:7480'"), std::string::npos);
  bad([](ClientConfig& c) { c.members[0].weight = 0; });
  EXPECT_NE(bad([](ClientConfig& c) { c.max_keys_per_rpc = 4097; }).find("max_keys_per_rpc"),
            std::string::npos);
  bad([](ClientConfig& c) { c.max_keys_per_rpc = 0; });
  bad([](ClientConfig& c) { c.max_attempts = 0; });
  bad([](ClientConfig& c) { c.control_deadline = absl::ZeroDuration(); });
  bad([](ClientConfig& c) { c.data_deadline = -absl::Seconds(1); });
  bad([](ClientConfig& c) { c.max_backoff = absl::Milliseconds(1); });
  bad([](ClientConfig& c) { c.max_inline_batch_bytes = 10; });
  bad([](ClientConfig& c) { c.inline_put_max_block_bytes = 1ull << 30; });
  bad([](ClientConfig& c) { c.stream_chunk_bytes = 1; });
  bad([](ClientConfig& c) { c.concurrency = 0; });
  bad([](ClientConfig& c) { c.channels_per_member = 0; });
  EXPECT_NE(bad([](ClientConfig& c) { c.ucx_retry_interval = absl::Milliseconds(5); }).find("ucx_retry_interval"),
            std::string::npos);
  bad([](ClientConfig& c) { c.ucx_retry_interval = absl::Hours(2); });
  EXPECT_NE(bad([](ClientConfig& c) { c.ucx_net_devices = "eth0 lo"; }).find("ucx_net_devices"), std::string::npos);
  bad([](ClientConfig& c) { c.ucx_net_devices = ""; });
  EXPECT_NE(bad([](ClientConfig& c) { c.auth_token = "short"; }).find("auth_token"), std::string::npos);
  bad([](ClientConfig& c) { c.auth_token = "a token with spaces in it"; });
  bad([](ClientConfig& c) { c.tls_cert_file = "/c.pem"; });                       // no key
  bad([](ClientConfig& c) { c.tls_cert_file = "/c.pem", c.tls_key_file = "/c.key"; });  // no tls_ca_file
  bad([](ClientConfig& c) { c.tls_server_name = "shard"; });                        // no tls_ca_file
  ClientConfig ok = Valid();
  ok.auth_token = "tenant-a-0123456789abcdef";
  ok.tls_ca_file = "/ca.pem";
  ok.tls_cert_file = "/c.pem";
  ok.tls_key_file = "/c.key";
  ok.tls_server_name = "kvhub-shard";
  ok.ucx_retry_interval = absl::ZeroDuration();  // never retry UCX
  ok.ucx_net_devices = "eth0,mlx5_0:1";
  EXPECT_TRUE(ok.Validate().ok()) << ok.Validate();
}

TEST(ClientConfigTest, SecurityEnvironmentFillsOnlyEmptyFields) {
  setenv("KVHUB_TOKEN", "env-token-0123456789abcdef", 1);
  setenv("KVHUB_TLS_CA", "/env/ca.pem", 1);
  setenv("KVHUB_TLS_SERVER_NAME", "env-shard", 1);
  unsetenv("KVHUB_TLS_CERT");
  unsetenv("KVHUB_TLS_KEY");
  ClientConfig c = Valid();
  c.tls_ca_file = "/flag/ca.pem";  // set explicitly: kept
  c.ApplySecurityEnvironment();
  EXPECT_EQ(c.auth_token, "env-token-0123456789abcdef");
  EXPECT_EQ(c.tls_ca_file, "/flag/ca.pem");
  EXPECT_EQ(c.tls_server_name, "env-shard");
  EXPECT_EQ(c.tls_cert_file, "");
  EXPECT_TRUE(c.Validate().ok()) << c.Validate();
  for (const char* v : {"KVHUB_TOKEN", "KVHUB_TLS_CA", "KVHUB_TLS_SERVER_NAME"}) unsetenv(v);
}

TEST(ClientConfigTest, ParsesMemberLists) {
  auto m = ClientConfig::ParseMembers(" 10.0.0.1:7000 , host-b:7001@2.5,[::1]:9000");
  ASSERT_TRUE(m.ok()) << m.status();
  ASSERT_EQ(m->size(), 3u);
  EXPECT_EQ((*m)[0].address, "10.0.0.1:7000");
  EXPECT_EQ((*m)[0].weight, 1.0);
  EXPECT_EQ((*m)[1].address, "host-b:7001");
  EXPECT_EQ((*m)[1].weight, 2.5);
  EXPECT_EQ((*m)[2].address, "[::1]:9000");
  EXPECT_FALSE(ClientConfig::ParseMembers("").ok());
  EXPECT_FALSE(ClientConfig::ParseMembers("a:1@x").ok());
  EXPECT_FALSE(ClientConfig::ParseMembers("a:1@-2").ok());
  EXPECT_FALSE(ClientConfig::ParseMembers("a").ok());
  // An empty member (a trailing or doubled comma, an unset variable) would change placement.
  for (const char* list : {"a:1,", "a:1,,b:2", ",a:1", "a:1, ,b:2", " , "}) {
    auto bad = ClientConfig::ParseMembers(list);
    ASSERT_FALSE(bad.ok()) << list;
    EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  }
  EXPECT_THAT(std::string(ClientConfig::ParseMembers("a:1,,b:2").status().message()),
              ::testing::HasSubstr("member 2 is empty"));
  // Placement hashes the address as written: a second spelling of a port would place
  // keys elsewhere than the clients that write it the usual way.
  for (const char* list : {"a:07480", "a:+7480", "a:0", "a:", "a:74 80"}) {
    auto bad = ClientConfig::ParseMembers(list);
    ASSERT_FALSE(bad.ok()) << list;
    EXPECT_THAT(std::string(bad.status().message()), ::testing::HasSubstr("port")) << list;
  }
  EXPECT_THAT(std::string(ClientConfig::ParseMembers("http://a:7480").status().message()),
              ::testing::HasSubstr("is a URL"));
}

}  // namespace
}  // namespace kvhub
