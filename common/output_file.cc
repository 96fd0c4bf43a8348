#include "common/output_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <iostream>
#include <memory>

#include "absl/strings/str_cat.h"
#include "common/kernel_random.h"

namespace kvhub {
namespace {

// The directory a file at `path` is created in.
std::string DirOf(const std::string& path) {
  const size_t slash = path.rfind('/');
  return slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
}

absl::Status Lost(absl::string_view what, int err) {
  return absl::DataLossError(absl::StrCat("writing ", what, " failed: ", std::strerror(err)));
}

// Writes `data` to a file at `path`, created with `mode` or truncated. `fresh`: the
// file must not exist yet (O_EXCL, no link followed) and its bytes reach the disk
// (fsync) before it is closed, as a temporary that is renamed over the result.
// A fresh file that could not be written whole is removed (it is this call's own:
// O_EXCL created it).
// `fresh` with `replaces`: the file it will be renamed over, whose mode (the umask
// not applied) and, where the caller may set it, owner and group it takes.
absl::Status WriteFile(const std::string& path, absl::string_view data, const std::string& shown, mode_t mode,
                       bool fresh = false, const struct stat* replaces = nullptr) {
  const int flags = O_WRONLY | O_CREAT | O_CLOEXEC | (fresh ? O_EXCL | O_NOFOLLOW : O_TRUNC);
  const int fd = open(path.c_str(), flags, mode);
  if (fd < 0) return Lost(shown, errno);
  if (replaces != nullptr) {
    // Owner first: a chown clears set-id bits, which the chmod then restores. Best
    // effort: a caller that may not give the file away (not root, another owner; an
    // owner unmapped in a user namespace) leaves it its own; that is not an error.
    if (replaces->st_uid != geteuid() || replaces->st_gid != getegid()) {
      (void)!fchown(fd, replaces->st_uid, replaces->st_gid);
    }
    if (fchmod(fd, replaces->st_mode & 07777) != 0) {
      const int err = errno;
      close(fd);
      std::remove(path.c_str());
      return Lost(shown, err);
    }
  }
  FILE* f = fdopen(fd, "wb");
  if (f == nullptr) {
    const int err = errno;
    close(fd);
    if (fresh) std::remove(path.c_str());
    return Lost(shown, err);
  }
  int err = 0;
  if (!data.empty() && std::fwrite(data.data(), 1, data.size(), f) != data.size()) err = errno;
  if (std::fflush(f) != 0 && err == 0) err = errno;
  if (fresh && err == 0 && fsync(fileno(f)) != 0) err = errno;
  if (std::fclose(f) != 0 && err == 0) err = errno;
  if (err == 0) return absl::OkStatus();
  if (fresh) std::remove(path.c_str());
  return Lost(shown, err);
}

}  // namespace

absl::Status CheckOutputPath(const std::string& path) {
  if (path == "-") return absl::OkStatus();
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("cannot write ", path, ": ", why));
  };
  if (path.empty()) return bad("empty path");
  struct stat st;
  std::string target = path;  // what a new file is created as
  if (lstat(path.c_str(), &st) == 0 && !S_ISREG(st.st_mode)) {
    if (S_ISLNK(st.st_mode) && stat(path.c_str(), &st) != 0) {
      // A link to nothing yet: writing through it creates its target.
      if (errno != ENOENT) return bad(std::strerror(errno));
      char link[4096];
      const ssize_t n = readlink(path.c_str(), link, sizeof(link) - 1);
      if (n <= 0) return bad("cannot read the symbolic link");
      target.assign(link, static_cast<size_t>(n));
      if (target.front() != '/') {
        const size_t at = path.rfind('/');
        if (at != std::string::npos) target = path.substr(0, at + 1) + target;
      }
    } else {
      // Written in place (a device, a pipe, what a link points to).
      if (S_ISDIR(st.st_mode)) return bad("it is a directory");
      if (access(path.c_str(), W_OK) != 0) return bad(std::strerror(errno));
      return absl::OkStatus();
    }
  }
  // A regular file or a new one: created beside it (and renamed over it).
  const std::string dir = DirOf(target);
  if (stat(dir.c_str(), &st) != 0) return bad(absl::StrCat(dir, ": ", std::strerror(errno)));
  if (!S_ISDIR(st.st_mode)) return bad(absl::StrCat(dir, " is not a directory"));
  if (access(dir.c_str(), W_OK | X_OK) != 0) return bad(absl::StrCat(dir, ": ", std::strerror(errno)));
  return absl::OkStatus();
}

namespace {
// Set once FlushStdout has returned a failure: the caller reported it, so the exit
// path does not report it again.
std::atomic<bool> g_stdout_failure_returned{false};
}  // namespace

absl::Status WriteOutput(const std::string& path, absl::string_view data) {
  if (path == "-") {
    std::cout.flush();
    if (!data.empty() && std::fwrite(data.data(), 1, data.size(), stdout) != data.size()) {
      g_stdout_failure_returned.store(true);  // the caller reports it; the exit path not again
      return Lost("standard output", errno);
    }
    return FlushStdout();
  }
  const std::string shown = absl::StrCat("'", path, "'");
  struct stat st {};
  const bool exists = lstat(path.c_str(), &st) == 0;
  if (exists && S_ISLNK(st.st_mode)) {
    // A link to a regular file in a directory we may write: the file it names is
    // replaced as below (the link stays a link), so a failed write leaves it as it
    // was; it was truncated in place. Otherwise written through, in place.
    // realpath() reads links itself, so the kernel's fs.protected_symlinks (which
    // refuses to follow another user's link in a sticky directory such as /tmp)
    // would not apply: the file replaced must be the one the kernel reaches through
    // PATH (stat follows the link as open would, and is refused alike).
    std::unique_ptr<char, decltype(&std::free)> real(realpath(path.c_str(), nullptr), &std::free);
    struct stat target {}, through {};
    if (real != nullptr && stat(real.get(), &target) == 0 && S_ISREG(target.st_mode) &&
        stat(path.c_str(), &through) == 0 && through.st_dev == target.st_dev && through.st_ino == target.st_ino &&
        access(DirOf(real.get()).c_str(), W_OK | X_OK) == 0) {
      return WriteOutput(real.get(), data);
    }
  }
  // A device, a pipe or a link to one or to nothing yet: in place.
  if (exists && !S_ISREG(st.st_mode)) return WriteFile(path, data, shown, 0644);
  // A regular file is written beside the path and renamed over it, so a failed write
  // (a full disk) leaves no truncated result, and an earlier file stays as it was.
  // The temporary's name is not guessable and it is created exclusively, so nothing
  // planted beside the path (a link, a file) is followed or truncated.
  // (Without kernel randomness the name is guessable, but O_EXCL still refuses
  // whatever is planted there.)
  // The name is short and does not repeat PATH's own, so any name the directory
  // takes (up to NAME_MAX) can be written.
  const uint64_t salt = KernelRandom64().value_or(static_cast<uint64_t>(time(nullptr)));
  const size_t slash = path.rfind('/');
  const std::string tmp =
      absl::StrCat(slash == std::string::npos ? "" : path.substr(0, slash + 1), ".kvhub-tmp.", getpid(), ".",
                   absl::Hex(salt));
  absl::Status s = WriteFile(tmp, data, shown, 0644, /*fresh=*/true, exists ? &st : nullptr);
  if (!s.ok()) return s;  // WriteFile removed its own temporary, never what was there
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    const int rename_errno = errno;
    // PATH cannot be replaced though it may be written: a file bind-mounted there
    // (EBUSY: a container's -v out.json:/out.json), another user's file in a sticky
    // directory (EPERM), another file system (EXDEV). Written in place then, not
    // atomically; if that fails too, the complete output stays in the temporary.
    if (rename_errno == EBUSY || rename_errno == EPERM || rename_errno == EACCES || rename_errno == EXDEV) {
      absl::Status in_place = WriteFile(path, data, shown, 0644);
      if (in_place.ok()) {
        std::remove(tmp.c_str());
        return absl::OkStatus();
      }
      return absl::DataLossError(absl::StrCat(in_place.message(), " (it could not be replaced either: ",
                                              std::strerror(rename_errno), "); the complete output is in '", tmp,
                                              "'"));
    }
    s = Lost(shown, rename_errno);
    std::remove(tmp.c_str());
    return s;
  }
  // The rename is durable only once the directory is: without this a crash could
  // leave the old file (or none) although the call returned OK.
  // Best effort where the directory cannot be opened for it (write and search
  // permission are all a replace needs; reading it may be refused).
  const int dfd = open(DirOf(path).c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) return absl::OkStatus();
  int err = fsync(dfd) != 0 ? errno : 0;
  close(dfd);
  // Some file systems cannot sync a directory (EINVAL); there is nothing more to do.
  if (err != 0 && err != EINVAL) {
    return absl::DataLossError(absl::StrCat("writing ", shown, ": the file was replaced but its directory could not "
                                            "be synced (", std::strerror(err), "): it may not survive a crash"));
  }
  return absl::OkStatus();
}

absl::Status FlushStdout() {
  // std::cout's flush is where a buffered write usually fails (it writes through
  // C's stdout): its errno is the cause (ENOSPC, EPIPE), kept before fflush runs.
  errno = 0;
  std::cout.flush();
  int err = errno;
  errno = 0;
  const bool flush_failed = std::fflush(stdout) != 0;
  if (flush_failed && errno != 0) err = errno;
  if (flush_failed || std::ferror(stdout) || std::cout.fail()) {
    g_stdout_failure_returned.store(true);
    if (err != 0) return Lost("standard output", err);
    // An earlier write failed; its errno is gone by now.
    return absl::DataLossError("writing standard output failed (a full disk, or a closed pipe?)");
  }
  return absl::OkStatus();
}

int ExitCodeAfterStdout(int rc, const char* program) {
  const bool reported = g_stdout_failure_returned.load();
  absl::Status s = FlushStdout();
  if (s.ok()) return rc;
  if (!reported) std::fprintf(stderr, "%s: %s\n", program, s.ToString().c_str());
  return rc == 0 ? 1 : rc;
}

}  // namespace kvhub
