#pragma once
// Authenticator: bearer tokens for kvhubd's gRPC API (docs/operations.md,
// "Authentication and TLS"). Off unless kvhubd is given `auth_tokens_file`.
//
// The file holds one token per line with the namespaces it may use:
//
//   # TOKEN                          NAMESPACES (comma-separated, or * for all)
//   prefill-fleet-a-7f3c9e1d2b4a     tenant-a,tenant-a-agents
//   ops-9a8b7c6d5e4f3a2b1c0d        *
//
// Tokens are 16..512 bytes of printable ASCII without spaces (use long random
// ones: they are the only secret), each listed once; namespaces follow the
// rules of keys (common/keys.h). Blank lines and lines starting with '#' are
// skipped. Clients send `authorization: Bearer TOKEN` metadata on every call.
//
// Thread safety: immutable after construction; every method is const.

#include <cstddef>
#include <memory>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace kvhub::cachesvc {

inline constexpr size_t kMinAuthTokenBytes = 16;
inline constexpr size_t kMaxAuthTokenBytes = 512;
inline constexpr size_t kMaxAuthTokens = 100000;
inline constexpr absl::string_view kAuthMetadataKey = "authorization";

// What one token may do.
struct AuthGrant {
  bool all_namespaces = false;               // "*"
  absl::flat_hash_set<std::string> namespaces;  // when not all
  // BlockStore::NamespaceTag of each of `namespaces`, for checking reservation and
  // lease ids (which carry a tag) without hashing every name for every id.
  absl::flat_hash_set<uint64_t> namespace_tags;
  int line = 0;                              // where the token is in the file (for logs)
  // OK, or PERMISSION_DENIED naming the namespace.
  absl::Status AllowsNamespace(absl::string_view ns) const;
};

class Authenticator {
 public:
  // Parses a tokens file's contents (reloadable_auth.h reads the file): INVALID_ARGUMENT
  // naming `origin` and the line for a malformed entry, a duplicate token, or (unless
  // `allow_empty`) a file without any token. An empty Authenticator refuses every
  // token: a reload that revokes them all (a start with none is refused instead).
  static absl::StatusOr<std::unique_ptr<Authenticator>> Parse(absl::string_view text, absl::string_view origin,
                                                              bool allow_empty = false);

  // The grant of the token in an `authorization` metadata value ("Bearer TOKEN").
  // UNAUTHENTICATED when the value is absent (nullptr), malformed or names no
  // token of the file. The grant lives as long as this object.
  absl::StatusOr<const AuthGrant*> Authenticate(const absl::string_view* authorization) const;

  size_t size() const { return grants_.size(); }

 private:
  Authenticator() = default;
  absl::flat_hash_map<std::string, AuthGrant> grants_;  // by the token's SHA-256
};

}  // namespace kvhub::cachesvc
