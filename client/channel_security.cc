#include "client/channel_security.h"

#include <algorithm>
#include <cstdlib>
#include <mutex>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "client/channel_faults.h"
#include "common/input_file.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/tls_certificate_provider.h"
#include "grpcpp/security/tls_credentials_options.h"
#include "grpcpp/support/client_interceptor.h"

namespace kvhub {
namespace {

// gRPC notices events on an idle client connection (a reconnect completing, the
// GOAWAY of a shard shutting down) only while some thread polls it; with no call in
// flight that is its backup poller, every 5 s by default. Then a restarted shard stays
// unreachable for up to 5 s, and a shard's graceful stop waits up to 5 s for this
// client to close its connections. 100 ms costs a few wakeups a second. Read by
// grpc_init, so it takes effect only if set before the process's first gRPC object
// (credentials included) exists: ChannelSecurity sets it before it makes any; a value
// the user set in the environment is kept (docs/client.md).
void SetGrpcBackupPollInterval() {
  static std::once_flag once;
  std::call_once(once, [] { setenv("GRPC_CLIENT_CHANNEL_BACKUP_POLL_INTERVAL_MS", "100", /*overwrite=*/0); });
}

// Adds the bearer token to every call's initial metadata.
class TokenInterceptor final : public grpc::experimental::Interceptor {
 public:
  explicit TokenInterceptor(const std::string* value) : value_(value) {}
  void Intercept(grpc::experimental::InterceptorBatchMethods* methods) override {
    if (methods->QueryInterceptionHookPoint(grpc::experimental::InterceptionHookPoints::PRE_SEND_INITIAL_METADATA)) {
      methods->GetSendInitialMetadata()->insert({"authorization", *value_});
    }
    methods->Proceed();
  }

 private:
  const std::string* const value_;
};

class TokenInterceptorFactory final : public grpc::experimental::ClientInterceptorFactoryInterface {
 public:
  explicit TokenInterceptorFactory(std::string token) : value_(absl::StrCat("Bearer ", token)) {}
  grpc::experimental::Interceptor* CreateClientInterceptor(grpc::experimental::ClientRpcInfo* info) override {
    (void)info;
    return new TokenInterceptor(&value_);  // gRPC owns it; the factory outlives the channel's calls
  }

 private:
  const std::string value_;
};

}  // namespace

absl::StatusOr<ChannelSecurity> ChannelSecurity::FromConfig(const ClientConfig& config) {
  SetGrpcBackupPollInterval();
  ChannelSecurity s;
  s.auth_token_ = config.auth_token;
  s.server_name_ = config.tls_server_name;
  if (config.tls_ca_file.empty()) {
    s.credentials_ = grpc::InsecureChannelCredentials();
    return s;
  }
  // The files are checked here so a bad one fails Create with its name; from here
  // gRPC's file watcher reads them and reads them again every tls_reload_interval,
  // so a serving process outlives its rotated client certificate and CA bundle.
  absl::StatusOr<std::string> ca = ReadPemFile(config.tls_ca_file, "tls_ca_file", PemKind::kCertificate);
  if (!ca.ok()) return ca.status();
  if (!config.tls_cert_file.empty()) {
    absl::StatusOr<std::string> cert = ReadPemFile(config.tls_cert_file, "tls_cert_file", PemKind::kCertificate);
    if (!cert.ok()) return cert.status();
    absl::StatusOr<std::string> key = ReadPemFile(config.tls_key_file, "tls_key_file", PemKind::kPrivateKey);
    if (!key.ok()) return key.status();
  }
  const auto interval_s = static_cast<unsigned int>(
      std::max<int64_t>(1, absl::ToInt64Seconds(config.tls_reload_interval)));
  auto provider = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
      config.tls_key_file, config.tls_cert_file, config.tls_ca_file, interval_s);
  grpc::experimental::TlsChannelCredentialsOptions o;
  o.set_certificate_provider(provider);
  o.watch_root_certs();
  if (!config.tls_cert_file.empty()) o.watch_identity_key_cert_pairs();
  s.credentials_ = grpc::experimental::TlsCredentials(o);
  return s;
}

const ChannelSecurity& ChannelSecurity::Plaintext() {
  static const ChannelSecurity* s = [] {
    SetGrpcBackupPollInterval();
    auto* p = new ChannelSecurity();
    p->credentials_ = grpc::InsecureChannelCredentials();
    return p;
  }();
  return *s;
}

std::shared_ptr<grpc::Channel> ChannelSecurity::CreateChannel(const std::string& address,
                                                              grpc::ChannelArguments args) const {
  if (!server_name_.empty()) args.SetSslTargetNameOverride(server_name_);
  std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface> faults = ChannelFaultInterceptor();
  if (auth_token_.empty() && faults == nullptr) return grpc::CreateCustomChannel(address, credentials_, args);
  std::vector<std::unique_ptr<grpc::experimental::ClientInterceptorFactoryInterface>> interceptors;
  if (!auth_token_.empty()) interceptors.push_back(std::make_unique<TokenInterceptorFactory>(auth_token_));
  if (faults != nullptr) interceptors.push_back(std::move(faults));  // tests only (channel_faults.h)
  return grpc::experimental::CreateCustomChannelWithInterceptors(address, credentials_, args,
                                                                 std::move(interceptors));
}

}  // namespace kvhub
