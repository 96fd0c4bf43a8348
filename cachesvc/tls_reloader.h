#pragma once
// The TLS certificate, key and client CA of kvhubd's gRPC port, read from their
// files and read again while it runs (docs/operations.md, "Authentication and TLS").
//
// Certificates from cert-manager or SPIRE live hours to weeks; a shard that only
// read them at start would fail every new connection once its certificate expired,
// and a restart empties its cache. Check() reads the files; a set that parses, whose
// key matches its certificate, becomes the one served to new handshakes (connections
// already open keep theirs). A set that does not (a half-written edit, a key from
// another certificate, a file that is not PEM) is refused whole: the last good set
// stays in force, and the error is logged once and counted.
//
// Thread safety: every method may be called from any thread (gRPC calls Fetch from
// its handshake threads).

#include <cstdint>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "grpc/grpc_security.h"

namespace kvhub::cachesvc {

struct TlsFiles {
  std::string cert_file;       // PEM certificate chain, leaf first
  std::string key_file;        // PEM private key of the leaf
  std::string client_ca_file;  // PEM CA bundle for client certificates; empty: none
};

class TlsReloader {
 public:
  // Reads and checks the files; errors name the config key and the file
  // (NOT_FOUND, INVALID_ARGUMENT: no PEM, no certificate or key parsed, or a key
  // that does not match the certificate).
  static absl::StatusOr<std::unique_ptr<TlsReloader>> Create(TlsFiles files);

  // Reads the files again. OK and false when they are unchanged; OK and true when a
  // changed, valid set is now served to new handshakes; the error when a changed set
  // is refused (the last good one stays; logged once per distinct error).
  // Safe from several threads (SIGHUP and a poll): one Check runs at a time.
  absl::StatusOr<bool> Check() ABSL_LOCKS_EXCLUDED(check_mu_, mu_);

  // For gRPC's certificate config fetcher: the current set when it differs from the
  // one last handed out (GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_NEW; *config then owned
  // by the caller), else GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_UNCHANGED. It remembers
  // one caller: serve one listening port per reloader (kvhubd has one gRPC port).
  grpc_ssl_certificate_config_reload_status Fetch(grpc_ssl_server_certificate_config** config)
      ABSL_LOCKS_EXCLUDED(mu_);

  struct Stats {
    uint64_t installed = 0;         // changed sets put in force by Check
    uint64_t failed = 0;            // changed sets refused by Check
    absl::Time not_after;           // expiry of the served leaf certificate
  };
  Stats stats() const ABSL_LOCKS_EXCLUDED(mu_);
  // Time since Create or the last Check (monotonic), for a caller that polls.
  absl::Duration SinceCheck() const ABSL_LOCKS_EXCLUDED(mu_);
  bool requires_client_certificates() const { return !files_.client_ca_file.empty(); }

 private:
  struct Material {
    std::string cert_pem, key_pem, client_ca_pem;
    absl::Time not_after;
    std::string subject;
  };
  explicit TlsReloader(TlsFiles files) : files_(std::move(files)) {}
  absl::StatusOr<Material> Read() const;

  const TlsFiles files_;
  // One Check at a time, from its read to its install: a poll that read the files
  // before a rotation must not put the older set back over the one SIGHUP installed.
  absl::Mutex check_mu_ ABSL_ACQUIRED_BEFORE(mu_);
  mutable absl::Mutex mu_;
  Material current_ ABSL_GUARDED_BY(mu_);
  uint64_t generation_ ABSL_GUARDED_BY(mu_) = 1;
  uint64_t fetched_generation_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t installed_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t failed_ ABSL_GUARDED_BY(mu_) = 0;
  std::string last_error_ ABSL_GUARDED_BY(mu_);
  absl::Time checked_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kvhub::cachesvc
