#include "common/ucx_net_devices.h"

#include <cstdlib>

#include "gtest/gtest.h"

namespace kvhub {
namespace {

TEST(UcxNetDevicesTest, LoopbackAddresses) {
  EXPECT_TRUE(IsLoopbackHostPort("127.0.0.1:7480"));
  EXPECT_TRUE(IsLoopbackHostPort("127.3.2.1:0"));
  EXPECT_TRUE(IsLoopbackHostPort("localhost:7480"));
  EXPECT_TRUE(IsLoopbackHostPort("[::1]:7480"));
  EXPECT_FALSE(IsLoopbackHostPort("0.0.0.0:7480"));
  EXPECT_FALSE(IsLoopbackHostPort("10.0.0.1:7480"));
  EXPECT_FALSE(IsLoopbackHostPort("[::]:7480"));
  EXPECT_FALSE(IsLoopbackHostPort("localhost.example.com:7480"));
  EXPECT_FALSE(IsLoopbackHostPort("kvhub-0.kvhub:7480"));
  // A host name that starts with "127." is not an address (it was taken for one).
  EXPECT_FALSE(IsLoopbackHostPort("127.db.example.com:7000"));
  EXPECT_FALSE(IsLoopbackHostPort("127.0.0.1.example.com:7000"));
  EXPECT_FALSE(IsLoopbackHostPort("127.0.0.1"));
}

TEST(UcxNetDevicesTest, AutoKeepsUcxOnLoopbackWhenEveryPeerIsThere) {
  unsetenv("UCX_NET_DEVICES");
  EXPECT_EQ(ResolveUcxNetDevices("auto", true), "lo");
  EXPECT_EQ(ResolveUcxNetDevices("auto", false), "");  // UCX's default
  EXPECT_EQ(ResolveUcxNetDevices("all", true), "all");
  EXPECT_EQ(ResolveUcxNetDevices("eth0,mlx5_0:1", true), "eth0,mlx5_0:1");
  // The operator's environment is UCX's own default and wins over auto.
  setenv("UCX_NET_DEVICES", "eth1", 1);
  EXPECT_EQ(ResolveUcxNetDevices("auto", true), "");
  EXPECT_EQ(ResolveUcxNetDevices("lo", true), "lo");  // an explicit setting wins over it
  unsetenv("UCX_NET_DEVICES");
}

TEST(UcxNetDevicesTest, Validation) {
  EXPECT_TRUE(ValidateUcxNetDevices("auto").ok());
  EXPECT_TRUE(ValidateUcxNetDevices("all").ok());
  EXPECT_TRUE(ValidateUcxNetDevices("lo,eth0.100,mlx5_0:1,enp3s0f1-x").ok());
  EXPECT_EQ(ValidateUcxNetDevices("").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateUcxNetDevices("eth0;rm -rf").code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(ValidateUcxNetDevices(std::string(300, 'a')).code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace kvhub
