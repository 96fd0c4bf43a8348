#include "cachesvc/tls_reloader.h"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include <ctime>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/clock.h"
#include "common/input_file.h"
#include "common/log.h"

namespace kvhub::cachesvc {
namespace {

struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};
struct X509Free {
  void operator()(X509* x) const { X509_free(x); }
};
struct KeyFree {
  void operator()(EVP_PKEY* k) const { EVP_PKEY_free(k); }
};
using Bio = std::unique_ptr<BIO, BioFree>;
using Cert = std::unique_ptr<X509, X509Free>;
using Key = std::unique_ptr<EVP_PKEY, KeyFree>;
struct CtxFree {
  void operator()(SSL_CTX* c) const { SSL_CTX_free(c); }
};
using Ctx = std::unique_ptr<SSL_CTX, CtxFree>;

Bio MemoryBio(const std::string& pem) { return Bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()))); }

// The PEM readers' passphrase callback: there is none. Without it OpenSSL asks on the
// terminal (or reads standard input) for an encrypted key, blocking kvhubd's start
// or the thread that reloads; with it such a key fails at once.
int NoPassphrase(char*, int, int, void*) { return -1; }

// The first certificate of a PEM text, or null (OpenSSL's error queue cleared).
Cert FirstCertificate(const std::string& pem) {
  Bio bio = MemoryBio(pem);
  Cert cert(bio == nullptr ? nullptr : PEM_read_bio_X509(bio.get(), nullptr, NoPassphrase, nullptr));
  ERR_clear_error();
  return cert;
}

// OpenSSL's reason for the last failure, and the queue cleared.
std::string OpenSslError() {
  const unsigned long e = ERR_peek_last_error();
  char buf[256];
  ERR_error_string_n(e, buf, sizeof(buf));
  ERR_clear_error();
  return e == 0 ? std::string("unknown reason") : std::string(buf);
}

// Whether a TLS server context takes the chain and key as gRPC's does (OpenSSL's
// security level refuses, e.g., RSA keys under 2048 bits or SHA-1 signatures that
// parse and match fine). A set gRPC refuses on reload is logged once by gRPC and
// the old certificate stays in force, while the reload looked installed.
absl::Status CheckServable(const std::string& cert_pem, EVP_PKEY* key) {
  Ctx ctx(SSL_CTX_new(TLS_server_method()));
  if (ctx == nullptr) return absl::InternalError(absl::StrCat("cannot make a TLS context: ", OpenSslError()));
  Bio bio = MemoryBio(cert_pem);
  if (bio == nullptr) return absl::ResourceExhaustedError("out of memory reading the certificate chain");
  Cert leaf(PEM_read_bio_X509(bio.get(), nullptr, NoPassphrase, nullptr));
  if (leaf == nullptr || SSL_CTX_use_certificate(ctx.get(), leaf.get()) != 1) {
    return absl::InvalidArgumentError(absl::StrCat("the certificate is refused for TLS: ", OpenSslError()));
  }
  for (int i = 1;; ++i) {
    Cert next(PEM_read_bio_X509(bio.get(), nullptr, NoPassphrase, nullptr));
    if (next == nullptr) break;
    if (SSL_CTX_add1_chain_cert(ctx.get(), next.get()) != 1) {
      return absl::InvalidArgumentError(
          absl::StrCat("certificate ", i + 1, " of the chain is refused for TLS: ", OpenSslError()));
    }
  }
  ERR_clear_error();  // the end of the PEM text
  if (SSL_CTX_use_PrivateKey(ctx.get(), key) != 1 || SSL_CTX_check_private_key(ctx.get()) != 1) {
    return absl::InvalidArgumentError(absl::StrCat("the private key is refused for TLS: ", OpenSslError()));
  }
  return absl::OkStatus();
}

absl::Time NotAfter(const X509* cert) {
  std::tm tm{};
  if (ASN1_TIME_to_tm(X509_get0_notAfter(cert), &tm) != 1) return absl::InfinitePast();
  return absl::FromTimeT(timegm(&tm));
}

std::string Subject(const X509* cert) {
  char buf[256];
  const char* s = X509_NAME_oneline(X509_get_subject_name(cert), buf, sizeof(buf));
  return s == nullptr ? std::string("?") : std::string(s);
}

}  // namespace

absl::StatusOr<std::unique_ptr<TlsReloader>> TlsReloader::Create(TlsFiles files) {
  std::unique_ptr<TlsReloader> r(new TlsReloader(std::move(files)));
  absl::StatusOr<Material> m = r->Read();
  if (!m.ok()) return m.status();
  absl::MutexLock l(&r->mu_);
  r->current_ = *std::move(m);
  r->checked_ = Clock::Real()->Now();
  return r;
}

absl::StatusOr<TlsReloader::Material> TlsReloader::Read() const {
  Material m;
  absl::StatusOr<std::string> cert_pem = ReadPemFile(files_.cert_file, "tls_cert_file", PemKind::kCertificate);
  if (!cert_pem.ok()) return cert_pem.status();
  absl::StatusOr<std::string> key_pem = ReadPemFile(files_.key_file, "tls_key_file", PemKind::kPrivateKey);
  if (!key_pem.ok()) return key_pem.status();
  m.cert_pem = *std::move(cert_pem);
  m.key_pem = *std::move(key_pem);
  const Cert leaf = FirstCertificate(m.cert_pem);
  if (leaf == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("tls_cert_file '", files_.cert_file, "': no certificate could be parsed"));
  }
  Bio key_bio = MemoryBio(m.key_pem);
  const Key key(key_bio == nullptr ? nullptr : PEM_read_bio_PrivateKey(key_bio.get(), nullptr, NoPassphrase, nullptr));
  ERR_clear_error();
  if (key == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("tls_key_file '", files_.key_file, "': no private key could be parsed (encrypted keys are not supported)"));
  }
  if (X509_check_private_key(leaf.get(), key.get()) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError(absl::StrCat("tls_key_file '", files_.key_file,
                                                   "' is not the key of the certificate in tls_cert_file '",
                                                   files_.cert_file, "' (", Subject(leaf.get()), ")"));
  }
  if (absl::Status s = CheckServable(m.cert_pem, key.get()); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("tls_cert_file '", files_.cert_file, "' / tls_key_file '",
                                                   files_.key_file, "' (", Subject(leaf.get()), "): ", s.message()));
  }
  m.not_after = NotAfter(leaf.get());
  if (m.not_after == absl::InfinitePast()) {
    // The expiry gauge would read -9.2e18 and every expiry alert fire (or none).
    return absl::InvalidArgumentError(absl::StrCat("tls_cert_file '", files_.cert_file, "' (", Subject(leaf.get()),
                                                   "): its notAfter date cannot be read"));
  }
  m.subject = Subject(leaf.get());
  if (!files_.client_ca_file.empty()) {
    absl::StatusOr<std::string> ca_pem = ReadPemFile(files_.client_ca_file, "tls_client_ca_file", PemKind::kCertificate);
    if (!ca_pem.ok()) return ca_pem.status();
    m.client_ca_pem = *std::move(ca_pem);
    if (FirstCertificate(m.client_ca_pem) == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat("tls_client_ca_file '", files_.client_ca_file, "': no certificate could be parsed"));
    }
  }
  return m;
}

absl::StatusOr<bool> TlsReloader::Check() {
  absl::MutexLock check(&check_mu_);
  absl::StatusOr<Material> m = Read();
  absl::MutexLock l(&mu_);
  checked_ = Clock::Real()->Now();
  if (!m.ok()) {
    ++failed_;
    const std::string error = m.status().ToString();
    if (error != last_error_) {  // a poll would repeat it every tls_reload_ms
      KVHUB_LOG(error, "kvhubd: the TLS files changed but cannot be served; the certificate in force ({}) stays: {}",
                current_.subject, error);
      last_error_ = error;
    }
    return m.status();
  }
  last_error_.clear();
  if (m->cert_pem == current_.cert_pem && m->key_pem == current_.key_pem &&
      m->client_ca_pem == current_.client_ca_pem) {
    return false;
  }
  current_ = *std::move(m);
  ++generation_;
  ++installed_;
  KVHUB_LOG(info, "kvhubd: new TLS files in force for new connections: {}, expires {}", current_.subject,
            absl::FormatTime(current_.not_after));
  return true;
}

grpc_ssl_certificate_config_reload_status TlsReloader::Fetch(grpc_ssl_server_certificate_config** config) {
  absl::MutexLock l(&mu_);
  if (fetched_generation_ == generation_) return GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_UNCHANGED;
  const grpc_ssl_pem_key_cert_pair pair{current_.key_pem.c_str(), current_.cert_pem.c_str()};
  // gRPC requires a root bundle in a fetched config even when no client certificate
  // is requested (it then never verifies one): the shard's own chain stands in.
  const std::string& roots = current_.client_ca_pem.empty() ? current_.cert_pem : current_.client_ca_pem;
  *config = grpc_ssl_server_certificate_config_create(roots.c_str(), &pair, 1);
  if (*config == nullptr) return GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_FAIL;
  fetched_generation_ = generation_;
  return GRPC_SSL_CERTIFICATE_CONFIG_RELOAD_NEW;
}

absl::Duration TlsReloader::SinceCheck() const {
  absl::MutexLock l(&mu_);
  return Clock::Real()->Now() - checked_;
}

TlsReloader::Stats TlsReloader::stats() const {
  absl::MutexLock l(&mu_);
  return Stats{installed_, failed_, current_.not_after};
}

}  // namespace kvhub::cachesvc
