#include "common/ucx_net_devices.h"

#include <cstdlib>

#include "absl/strings/ascii.h"
#include "absl/strings/escaping.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace kvhub {

bool IsLoopbackHostPort(absl::string_view host_port) {
  if (absl::StartsWith(host_port, "localhost:") || absl::StartsWith(host_port, "[::1]:")) return true;
  // 127.0.0.0/8 as a dotted IPv4 address, not a host name that starts with "127."
  // (127.db.example.com is remote).
  const size_t colon = host_port.rfind(':');
  const absl::string_view host = host_port.substr(0, colon);
  if (!absl::StartsWith(host, "127.") || colon == absl::string_view::npos) return false;
  int dots = 0;
  for (char c : host) {
    if (c == '.') {
      ++dots;
    } else if (!absl::ascii_isdigit(static_cast<unsigned char>(c))) {
      return false;
    }
  }
  return dots == 3;
}

std::string ResolveUcxNetDevices(absl::string_view setting, bool peers_on_loopback) {
  if (setting != "auto") return std::string(setting);
  if (!peers_on_loopback || std::getenv("UCX_NET_DEVICES") != nullptr) return "";
  return "lo";
}

absl::Status ValidateUcxNetDevices(absl::string_view setting) {
  bool ok = !setting.empty() && setting.size() <= 256;
  for (char c : setting) {
    ok = ok && (absl::ascii_isalnum(static_cast<unsigned char>(c)) || c == ',' || c == '_' || c == ':' ||
                c == '.' || c == '-');
  }
  if (ok) return absl::OkStatus();
  return absl::InvalidArgumentError(absl::StrCat(
      "ucx_net_devices must be auto, all, or <= 256 chars of [A-Za-z0-9_,:.-] (a UCX_NET_DEVICES list such as "
      "lo or eth0,mlx5_0:1), got '",
      absl::CHexEscape(setting.substr(0, 64)), "'"));
}

}  // namespace kvhub
