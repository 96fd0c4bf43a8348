#pragma once
// Which network devices a kvhub process lets UCX use (its UCX_NET_DEVICES).
//
// UCX's tcp transport listens on every network device it uses and reads whatever
// bytes arrive there; UCX 1.13 aborts the process on some malformed ones. So a
// process whose peers are all on this host (kvhubd serving gRPC on loopback, a
// client whose shards are all on loopback) keeps UCX on the loopback device.
// Pure functions; thread-safe.

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace kvhub {

// True when `host_port` ("host:port") names a loopback address: 127.0.0.0/8,
// localhost or [::1].
bool IsLoopbackHostPort(absl::string_view host_port);

// The UCX_NET_DEVICES value for a `ucx_net_devices` setting: "auto" gives "lo"
// when every peer is on loopback and the environment sets no UCX_NET_DEVICES,
// else "" (UCX's default: the environment's UCX_NET_DEVICES, else all devices);
// any other setting ("all", "lo", "eth0,mlx5_0:1") is returned as is.
std::string ResolveUcxNetDevices(absl::string_view setting, bool peers_on_loopback);

// OK for "auto", "all" or a device list of <= 256 chars of [A-Za-z0-9_,:.-];
// INVALID_ARGUMENT otherwise (the value reaches UCX's configuration parser).
absl::Status ValidateUcxNetDevices(absl::string_view setting);

}  // namespace kvhub
