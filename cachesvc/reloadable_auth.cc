#include "cachesvc/reloadable_auth.h"

#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/hash.h"
#include "common/input_file.h"

namespace kvhub::cachesvc {
namespace {

// Far above any real tokens file; bounds what a wrong path (a device) can cost.
constexpr size_t kMaxTokensFileBytes = size_t{64} << 20;

absl::StatusOr<std::string> ReadTokensFile(const std::string& path) {
  absl::StatusOr<std::string> text = ReadInput(path, kMaxTokensFileBytes);
  if (!text.ok()) {
    return absl::Status(text.status().code(), absl::StrCat("auth_tokens_file: ", text.status().message()));
  }
  return text;
}

}  // namespace

absl::StatusOr<std::unique_ptr<ReloadableAuthenticator>> ReloadableAuthenticator::FromFile(const std::string& path) {
  std::unique_ptr<ReloadableAuthenticator> r(new ReloadableAuthenticator(path));
  absl::StatusOr<std::string> text = ReadTokensFile(path);
  if (!text.ok()) return text.status();
  absl::StatusOr<std::unique_ptr<Authenticator>> auth = Authenticator::Parse(*text, path);
  if (!auth.ok()) return auth.status();
  absl::MutexLock reload(&r->reload_mu_);
  r->contents_hash_ = Xxh3_64(text->data(), text->size());
  absl::MutexLock l(&r->mu_);
  r->current_ = std::shared_ptr<const Authenticator>(std::move(*auth));
  return r;
}

std::shared_ptr<const Authenticator> ReloadableAuthenticator::Current() const {
  absl::MutexLock l(&mu_);
  return current_;
}

absl::StatusOr<bool> ReloadableAuthenticator::Reload(
    const std::function<void(const Authenticator& next)>& before_install) {
  absl::MutexLock reload(&reload_mu_);
  absl::StatusOr<std::string> text = ReadTokensFile(path_);
  if (!text.ok()) return text.status();
  const uint64_t hash = Xxh3_64(text->data(), text->size());
  if (hash == contents_hash_) return false;
  // A file of comments only revokes every token (a leaked last token must be
  // revocable without a restart); only a start without any is refused. A file with
  // nothing in it is more likely caught mid-rewrite (truncated, not yet written):
  // that keeps the tokens in force.
  if (absl::StripAsciiWhitespace(*text).empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        path_, ": empty (caught while being rewritten?); to revoke every token, leave a comment line in it"));
  }
  absl::StatusOr<std::unique_ptr<Authenticator>> auth = Authenticator::Parse(*text, path_, /*allow_empty=*/true);
  if (!auth.ok()) return auth.status();
  contents_hash_ = hash;
  std::shared_ptr<const Authenticator> next(std::move(*auth));
  if (before_install) before_install(*next);
  absl::MutexLock l(&mu_);
  current_ = std::move(next);
  return true;
}

}  // namespace kvhub::cachesvc
