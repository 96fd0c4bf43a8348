#pragma once
// The gRPC listener's credentials from KvhubdConfig (docs/operations.md,
// "Authentication and TLS"): plaintext, TLS (tls_cert_file + tls_key_file), or
// mutual TLS (plus tls_client_ca_file: clients must present a certificate that
// CA signed, or the handshake fails). The TLS files are watched by a TlsReloader
// (cachesvc/tls_reloader.h): new handshakes use the last valid set it read.

#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "cachesvc/kvhubd_config.h"
#include "cachesvc/tls_reloader.h"
#include "grpcpp/security/server_credentials.h"

namespace kvhub::cachesvc {

struct ServerSecurity {
  std::shared_ptr<grpc::ServerCredentials> credentials;
  std::string description;  // "plaintext", "tls", "mutual tls", for the log
  std::shared_ptr<TlsReloader> tls;  // null for plaintext; Check() it to reload the files
};

// Reads the PEM files the config names; errors name the key and the file
// (NOT_FOUND, INVALID_ARGUMENT for a file without a PEM block, a certificate or key
// that does not parse, or a key that is not the certificate's).
absl::StatusOr<ServerSecurity> MakeServerSecurity(const KvhubdConfig& config);

}  // namespace kvhub::cachesvc
