#pragma once
// ChannelSecurity: how a Client's channels reach the shards (docs/operations.md,
// "Authentication and TLS"): plaintext or TLS (optionally with a client
// certificate), and, with a token, `authorization: Bearer TOKEN` metadata added
// to every call on the channel, streams and raw calls included.
//
// Thread safety: immutable after FromConfig; CreateChannel may be called from
// any thread.

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "client/client_config.h"
#include "grpcpp/channel.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"

namespace kvhub {

class ChannelSecurity {
 public:
  // Reads the PEM files the config names (errors name the field and the file:
  // NOT_FOUND, INVALID_ARGUMENT for a file that holds no PEM block); channels then
  // read them again every config.tls_reload_interval (new connections use the files
  // as last read). A config without TLS or token gives plaintext channels and no
  // metadata.
  static absl::StatusOr<ChannelSecurity> FromConfig(const ClientConfig& config);
  // Plaintext channels, no token.
  static const ChannelSecurity& Plaintext();

  // A channel to `address` with `args` (plus the TLS target-name override).
  std::shared_ptr<grpc::Channel> CreateChannel(const std::string& address, grpc::ChannelArguments args) const;

 private:
  std::shared_ptr<grpc::ChannelCredentials> credentials_;
  std::string auth_token_;
  std::string server_name_;
};

}  // namespace kvhub
