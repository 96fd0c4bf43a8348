#include "cachesvc/auth.h"

#include <openssl/evp.h>

#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/strip.h"
#include "absl/strings/str_split.h"
#include "common/keys.h"
#include "storage/block_store.h"

namespace kvhub::cachesvc {
namespace {

// SHA-256 of a token: the key grants are held and looked up by.
std::string TokenDigest(absl::string_view token) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(token.data(), token.size(), md, &len, EVP_sha256(), nullptr) != 1) {
    // Cannot happen with a built-in digest; never let two tokens share a key.
    return "\x01" + std::string(token);
  }
  return std::string(reinterpret_cast<const char*>(md), len);
}

}  // namespace

absl::Status AuthGrant::AllowsNamespace(absl::string_view ns) const {
  if (all_namespaces || namespaces.contains(ns)) return absl::OkStatus();
  return absl::PermissionDeniedError(
      absl::StrCat("this token may not use namespace '", ns, "' (tokens file line ", line, ")"));
}

namespace {
bool ValidTokenChar(char c) { return c > 0x20 && c < 0x7f; }
}  // namespace

absl::StatusOr<std::unique_ptr<Authenticator>> Authenticator::Parse(absl::string_view text, absl::string_view origin,
                                                                    bool allow_empty) {
  std::unique_ptr<Authenticator> a(new Authenticator());
  absl::ConsumePrefix(&text, "\xEF\xBB\xBF");  // a UTF-8 byte order mark, as some editors write
  int line_no = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_no;
    auto bad = [&](absl::string_view why) {
      return absl::InvalidArgumentError(absl::StrCat(origin, ":", line_no, ": ", why));
    };
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line[0] == '#') continue;
    std::vector<absl::string_view> fields = absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    if (fields.size() != 2) return bad("want 'TOKEN NAMESPACES' (NAMESPACES: comma-separated, or *)");
    const absl::string_view token = fields[0];
    if (token.size() < kMinAuthTokenBytes || token.size() > kMaxAuthTokenBytes) {
      return bad(absl::StrCat("a token must be ", kMinAuthTokenBytes, "..", kMaxAuthTokenBytes, " bytes, this one is ",
                              token.size()));
    }
    for (char c : token) {
      if (!ValidTokenChar(c)) return bad("a token must be printable ASCII without spaces");
    }
    const bool all = fields[1] == "*";
    std::vector<absl::string_view> namespaces;
    if (!all) namespaces = absl::StrSplit(fields[1], ',');
    for (absl::string_view ns : namespaces) {
      if (ns == "*") return bad("'*' (every namespace) stands alone, not in a list");
      if (absl::Status s = ValidateNamespace(ns); !s.ok()) return bad(absl::StrCat("namespace: ", s.message()));
    }
    if (a->grants_.size() >= kMaxAuthTokens) return bad(absl::StrCat("more than ", kMaxAuthTokens, " tokens"));
    auto [it, inserted] = a->grants_.try_emplace(TokenDigest(token));
    if (!inserted) return bad("this token is listed twice");
    it->second.line = line_no;
    it->second.all_namespaces = all;
    for (absl::string_view ns : namespaces) {
      it->second.namespaces.insert(std::string(ns));
      it->second.namespace_tags.insert(storage::BlockStore::NamespaceTag(ns));
    }
  }
  if (a->grants_.empty() && !allow_empty) {
    return absl::InvalidArgumentError(
        absl::StrCat(origin, ": no token (an empty tokens file would lock every client out)"));
  }
  return a;
}

absl::StatusOr<const AuthGrant*> Authenticator::Authenticate(const absl::string_view* authorization) const {
  if (authorization == nullptr) {
    return absl::UnauthenticatedError("this shard requires a token: send 'authorization: Bearer TOKEN' metadata");
  }
  absl::string_view v = *authorization;
  if (!absl::ConsumePrefix(&v, "Bearer ")) {
    return absl::UnauthenticatedError("the authorization metadata must be 'Bearer TOKEN'");
  }
  // By digest: the map's string comparisons then depend on the digests, never on how
  // many leading bytes of a guess match a real token.
  auto it = grants_.find(TokenDigest(v));
  if (it == grants_.end()) return absl::UnauthenticatedError("unknown token");
  return &it->second;
}

}  // namespace kvhub::cachesvc
