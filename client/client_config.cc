#include "client/client_config.h"

#include <cstdlib>

#include <cmath>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/numbers.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/strings/ascii.h"
#include "common/ucx_net_devices.h"

namespace kvhub {
namespace {

absl::Status CheckAddress(absl::string_view addr) {
  if (addr.empty()) return absl::InvalidArgumentError("member address is empty");
  if (absl::StrContains(addr, "://")) {
    return absl::InvalidArgumentError(absl::StrCat("member address '", addr, "' is a URL; give HOST:PORT"));
  }
  const size_t colon = addr.rfind(':');
  if (colon == absl::string_view::npos || colon == 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("member address '", addr, "' is not host:port"));
  }
  const absl::string_view host = addr.substr(0, colon);
  const bool bracketed = host.size() >= 2 && host.front() == '[' && host.back() == ']';
  if (!bracketed && absl::StrContains(host, ':')) {
    return absl::InvalidArgumentError(absl::StrCat("member address '", addr, "': an IPv6 host needs brackets, as in '[",
                                                   host, "]", addr.substr(colon), "'"));
  }
  // Placement hashes the address as written, so one spelling per port: digits, no
  // sign and no leading zero ('7480', not '+7480' or '07480').
  const absl::string_view port_text = addr.substr(colon + 1);
  uint32_t port = 0;
  if (port_text.empty() || port_text.front() == '0' ||
      !std::all_of(port_text.begin(), port_text.end(), absl::ascii_isdigit) ||
      !absl::SimpleAtoi(port_text, &port) || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("member address '", addr, "' has no valid port (1..65535, digits only, no leading zero)"));
  }
  for (unsigned char c : addr) {
    if (c <= 0x20 || c == 0x7f || c == ',' || c == '@') {
      return absl::InvalidArgumentError(
          absl::StrCat("member address '", addr, "' holds a space, control byte, ',' or '@'"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ClientConfig::Validate() const {
  if (members.empty()) return absl::InvalidArgumentError("members: the member list is empty");
  if (members.size() > 1024) {
    return absl::InvalidArgumentError(
        absl::StrCat("members: ", members.size(), " members, limit 1024"));
  }
  absl::flat_hash_set<std::string> seen;
  for (const MemberConfig& m : members) {
    if (absl::Status s = CheckAddress(m.address); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("members: ", s.message()));
    }
    if (!std::isfinite(m.weight) || m.weight <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("members: weight of '", m.address, "' must be finite and > 0"));
    }
    if (!seen.insert(m.address).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("members: address '", m.address, "' is listed twice"));
    }
  }
  if (control_deadline <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("control_deadline must be > 0");
  }
  if (data_deadline <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError("data_deadline must be > 0");
  }
  if (max_attempts < 1 || max_attempts > 10) {
    return absl::InvalidArgumentError("max_attempts must be in 1..10");
  }
  if (initial_backoff < absl::ZeroDuration() || max_backoff < initial_backoff) {
    return absl::InvalidArgumentError("backoff: need 0 <= initial_backoff <= max_backoff");
  }
  if (max_keys_per_rpc < 1 || max_keys_per_rpc > 4096) {
    return absl::InvalidArgumentError("max_keys_per_rpc must be in 1..4096");
  }
  if (inline_put_max_block_bytes > (256ull << 20)) {
    return absl::InvalidArgumentError("inline_put_max_block_bytes must be <= 256 MiB");
  }
  if (max_inline_batch_bytes < 1024 || max_inline_batch_bytes > (256ull << 20)) {
    return absl::InvalidArgumentError("max_inline_batch_bytes must be in 1 KiB..256 MiB");
  }
  if (stream_chunk_bytes < 4096 || stream_chunk_bytes > (64ull << 20)) {
    return absl::InvalidArgumentError("stream_chunk_bytes must be in 4 KiB..64 MiB");
  }
  if (get_mode != GetMode::kAuto && get_mode != GetMode::kInline &&
      get_mode != GetMode::kStream) {
    return absl::InvalidArgumentError("get_mode is not a GetMode value");
  }
  if (concurrency < 1 || concurrency > 256) {
    return absl::InvalidArgumentError("concurrency must be in 1..256");
  }
  if (channels_per_member < 1 || channels_per_member > 64) {
    return absl::InvalidArgumentError("channels_per_member must be in 1..64");
  }
  if (transport != TransportMode::kAuto && transport != TransportMode::kUcx &&
      transport != TransportMode::kGrpc) {
    return absl::InvalidArgumentError("transport is not a TransportMode value");
  }
  if (!auth_token.empty()) {
    if (auth_token.size() < 16 || auth_token.size() > 512) {
      return absl::InvalidArgumentError(
          absl::StrCat("auth_token must be 16..512 bytes, got ", auth_token.size()));
    }
    for (char c : auth_token) {
      if (c <= 0x20 || c >= 0x7f) return absl::InvalidArgumentError("auth_token: printable ASCII only, no spaces");
    }
  }
  if (tls_cert_file.empty() != tls_key_file.empty()) {
    return absl::InvalidArgumentError("tls_cert_file and tls_key_file go together (a client certificate and its key)");
  }
  if (!tls_cert_file.empty() && tls_ca_file.empty()) {
    return absl::InvalidArgumentError("a client certificate (tls_cert_file) needs TLS: set tls_ca_file");
  }
  if (tls_reload_interval < absl::Seconds(1) || tls_reload_interval > absl::Hours(24)) {
    return absl::InvalidArgumentError("tls_reload_interval must be in 1 s .. 24 h");
  }
  if (!tls_server_name.empty() && tls_ca_file.empty()) {
    return absl::InvalidArgumentError("tls_server_name needs TLS: set tls_ca_file");
  }
  if (absl::Status s = ValidateUcxNetDevices(ucx_net_devices); !s.ok()) return s;
  if (ucx_tls.size() > 256) return absl::InvalidArgumentError("ucx_tls must be <= 256 characters");
  for (char c : ucx_tls) {
    if (!(isalnum(static_cast<unsigned char>(c)) || c == ',' || c == '_' || c == '^')) {
      return absl::InvalidArgumentError("ucx_tls: only [A-Za-z0-9_,^] (a UCX_TLS list such as tcp or rc,tcp)");
    }
  }
  if (ucx_lease < absl::Milliseconds(100) || ucx_lease > absl::Seconds(600)) {
    return absl::InvalidArgumentError("ucx_lease must be in 100ms..600s");
  }
  if (ucx_retry_interval != absl::ZeroDuration() &&
      (ucx_retry_interval < absl::Milliseconds(100) || ucx_retry_interval > absl::Hours(1))) {
    return absl::InvalidArgumentError(
        "ucx_retry_interval must be 0 (auto: never again; ucx: on every call) or in 100ms..1h");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::vector<MemberConfig>> ClientConfig::ParseMembers(absl::string_view text) {
  std::vector<MemberConfig> out;
  if (absl::StripAsciiWhitespace(text).empty()) return absl::InvalidArgumentError("member list is empty");
  size_t position = 0;
  for (absl::string_view item : absl::StrSplit(text, ',')) {
    ++position;
    item = absl::StripAsciiWhitespace(item);
    // "A,,B" from an unset variable would silently place keys over 2 members instead of 3,
    // and every client with the full list would miss what this one stored.
    if (item.empty()) {
      return absl::InvalidArgumentError(absl::StrCat("member list '", text, "': member ", position,
                                                     " is empty (a doubled or trailing comma?)"));
    }
    MemberConfig m;
    const size_t at = item.find('@');
    if (at != absl::string_view::npos) {
      absl::string_view w = item.substr(at + 1);
      if (!absl::SimpleAtod(w, &m.weight) || !std::isfinite(m.weight) || m.weight <= 0) {
        return absl::InvalidArgumentError(
            absl::StrCat("member '", item, "': weight '", w, "' is not a number > 0"));
      }
      item = item.substr(0, at);
    }
    if (absl::Status s = CheckAddress(item); !s.ok()) return s;
    m.address = std::string(item);
    out.push_back(std::move(m));
  }
  if (out.empty()) return absl::InvalidArgumentError("member list is empty");
  return out;
}

absl::string_view TransportModeName(TransportMode mode) {
  switch (mode) {
    case TransportMode::kAuto: return "auto";
    case TransportMode::kUcx: return "ucx";
    case TransportMode::kGrpc: return "grpc";
  }
  return "unknown";
}

absl::StatusOr<TransportMode> ParseTransportMode(absl::string_view text) {
  if (text == "auto") return TransportMode::kAuto;
  if (text == "ucx") return TransportMode::kUcx;
  if (text == "grpc") return TransportMode::kGrpc;
  return absl::InvalidArgumentError(absl::StrCat("transport '", text, "' is not auto|ucx|grpc"));
}

void ClientConfig::ApplySecurityEnvironment() {
  const auto fill = [](std::string* field, const char* var) {
    if (!field->empty()) return;
    if (const char* v = std::getenv(var); v != nullptr) *field = v;
  };
  fill(&auth_token, "KVHUB_TOKEN");
  fill(&tls_ca_file, "KVHUB_TLS_CA");
  fill(&tls_cert_file, "KVHUB_TLS_CERT");
  fill(&tls_key_file, "KVHUB_TLS_KEY");
  fill(&tls_server_name, "KVHUB_TLS_SERVER_NAME");
}

}  // namespace kvhub
