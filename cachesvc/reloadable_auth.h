#pragma once
// ReloadableAuthenticator: the bearer tokens kvhubd checks calls against, read
// from `auth_tokens_file` and replaceable while serving, so operators rotate or
// revoke tokens without restarting a shard (a restart empties its cache).
// kvhubd reloads on SIGHUP and when a poll (`auth_reload_ms`) sees the file's
// contents change.
//
// A reload either installs the whole new file or nothing: a file that cannot be
// read or parsed leaves the current tokens in force (the caller logs the error).
// Calls already authorized keep the grant they were given (Current() hands out
// shared ownership, so a grant outlives a reload); new calls see the new set.
//
// Thread safety: every method may be called concurrently.

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "absl/base/thread_annotations.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "cachesvc/auth.h"

namespace kvhub::cachesvc {

class ReloadableAuthenticator {
 public:
  // Reads and parses `path` (errors as Authenticator::FromFile).
  static absl::StatusOr<std::unique_ptr<ReloadableAuthenticator>> FromFile(const std::string& path);

  // The tokens in force now; never null.
  std::shared_ptr<const Authenticator> Current() const ABSL_LOCKS_EXCLUDED(mu_);

  // Re-reads the file. Returns true when its contents changed and the new tokens
  // are in force (none, if the file now holds only comments: every call is then
  // refused), false when it is unchanged; an error (naming the file and line) when
  // it cannot be read or parsed, or is blank (a rewrite caught half done), in which
  // case the current tokens stay.
  // `before_install` (optional) runs with the new tokens just before they are put in
  // force (kvhubd closes the UCX connections of revoked tokens there, so none is
  // still open once the new tokens answer calls).
  absl::StatusOr<bool> Reload(const std::function<void(const Authenticator& next)>& before_install = nullptr)
      ABSL_LOCKS_EXCLUDED(mu_);

  const std::string& path() const { return path_; }

 private:
  explicit ReloadableAuthenticator(std::string path) : path_(std::move(path)) {}

  const std::string path_;
  absl::Mutex reload_mu_;  // one Reload at a time (before mu_)
  mutable absl::Mutex mu_;
  std::shared_ptr<const Authenticator> current_ ABSL_GUARDED_BY(mu_);
  uint64_t contents_hash_ ABSL_GUARDED_BY(reload_mu_) = 0;  // XXH3-64 of the file in force
};

}  // namespace kvhub::cachesvc
