#include "cachesvc/server_credentials.h"

#include <memory>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/input_file.h"
#include "grpcpp/security/server_credentials.h"
#include "common/log.h"
#include "grpc/grpc.h"
#include "grpc/grpc_security.h"

namespace kvhub::cachesvc {

namespace {

// gRPC server credentials over the C core's SSL credentials with a certificate
// config fetcher: each new handshake asks the TlsReloader whether a new set is in
// force. (gRPC C++ 1.51's own file watcher serves whatever it reads, so a half-written
// file or a mismatched key broke every new handshake; the reloader refuses such sets.)
class ReloadingTlsCredentials final : public grpc::ServerCredentials {
 public:
  explicit ReloadingTlsCredentials(std::shared_ptr<TlsReloader> reloader) : reloader_(std::move(reloader)) {
    grpc_ssl_server_credentials_options* options = grpc_ssl_server_credentials_create_options_using_config_fetcher(
        reloader_->requires_client_certificates() ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
                                                  : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE,
        &ReloadingTlsCredentials::FetchConfig, reloader_.get());
    creds_ = grpc_ssl_server_credentials_create_with_options(options);
  }
  ~ReloadingTlsCredentials() override { grpc_server_credentials_release(creds_); }

  // kvhubd checks tokens in the service (cachesvc/auth.h), not with a metadata
  // processor; this credentials type has none to offer.
  void SetAuthMetadataProcessor(const std::shared_ptr<grpc::AuthMetadataProcessor>&) override {
    KVHUB_LOG(error, "kvhubd: an auth metadata processor is not supported on reloading TLS credentials; ignored");
  }

 private:
  int AddPortToServer(const std::string& addr, grpc_server* server) override {
    return grpc_server_add_http2_port(server, addr.c_str(), creds_);
  }
  static grpc_ssl_certificate_config_reload_status FetchConfig(void* reloader,
                                                               grpc_ssl_server_certificate_config** config) {
    return static_cast<TlsReloader*>(reloader)->Fetch(config);
  }

  const std::shared_ptr<TlsReloader> reloader_;  // outlives creds_, whose fetcher calls it
  grpc_server_credentials* creds_ = nullptr;
};

}  // namespace

absl::StatusOr<ServerSecurity> MakeServerSecurity(const KvhubdConfig& config) {
  ServerSecurity out;
  if (config.tls_cert_file.empty()) {
    out.credentials = grpc::InsecureServerCredentials();
    out.description = "plaintext";
    return out;
  }
  absl::StatusOr<std::unique_ptr<TlsReloader>> tls =
      TlsReloader::Create({config.tls_cert_file, config.tls_key_file, config.tls_client_ca_file});
  if (!tls.ok()) return tls.status();
  out.tls = std::shared_ptr<TlsReloader>(*std::move(tls));
  out.description = absl::StrCat(
      out.tls->requires_client_certificates() ? "mutual tls (client certificates required)" : "tls",
      ", files re-read every ", absl::FormatDuration(config.tls_reload_interval), " and on SIGHUP");
  out.credentials = std::make_shared<ReloadingTlsCredentials>(out.tls);
  return out;
}

}  // namespace kvhub::cachesvc
