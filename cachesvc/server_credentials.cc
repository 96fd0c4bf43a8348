#include "cachesvc/server_credentials.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "common/input_file.h"
#include "grpcpp/security/server_credentials.h"

namespace kvhub::cachesvc {

absl::StatusOr<ServerSecurity> MakeServerSecurity(const KvhubdConfig& config) {
  ServerSecurity out;
  if (config.tls_cert_file.empty()) {
    out.credentials = grpc::InsecureServerCredentials();
    out.description = "plaintext";
    return out;
  }
  absl::StatusOr<std::string> cert = ReadPemFile(config.tls_cert_file, "tls_cert_file");
  if (!cert.ok()) return cert.status();
  absl::StatusOr<std::string> key = ReadPemFile(config.tls_key_file, "tls_key_file");
  if (!key.ok()) return key.status();
  grpc::SslServerCredentialsOptions o;
  o.pem_key_cert_pairs.push_back({*std::move(key), *std::move(cert)});
  out.description = "tls";
  if (!config.tls_client_ca_file.empty()) {
    absl::StatusOr<std::string> ca = ReadPemFile(config.tls_client_ca_file, "tls_client_ca_file");
    if (!ca.ok()) return ca.status();
    o.pem_root_certs = *std::move(ca);
    o.client_certificate_request = GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY;
    out.description = "mutual tls (client certificates required)";
  }
  out.credentials = grpc::SslServerCredentials(o);
  return out;
}

}  // namespace kvhub::cachesvc
