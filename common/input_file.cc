#include "common/input_file.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace kvhub {

absl::StatusOr<std::string> ReadInput(const std::string& path, size_t max_bytes) {
  const bool is_stdin = path == "-";
  const std::string name = is_stdin ? "standard input" : absl::StrCat("'", path, "'");
  const int fd = is_stdin ? STDIN_FILENO : ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    const int err = errno;
    if (err == ENOENT) return absl::NotFoundError(absl::StrCat("cannot read ", name, ": no such file"));
    if (err == EACCES || err == EPERM) {
      return absl::PermissionDeniedError(absl::StrCat("cannot open ", name, ": ", std::strerror(err)));
    }
    return absl::DataLossError(absl::StrCat("cannot open ", name, ": ", std::strerror(err)));
  }
  struct Closer {
    int fd;
    bool close;
    ~Closer() {
      if (close) ::close(fd);
    }
  } closer{fd, !is_stdin};
  struct stat st {};
  if (::fstat(fd, &st) == 0 && S_ISDIR(st.st_mode)) {
    return absl::InvalidArgumentError(absl::StrCat("cannot read ", name, ": it is a directory"));
  }
  if (S_ISREG(st.st_mode) && static_cast<uint64_t>(st.st_size) > max_bytes) {
    return absl::ResourceExhaustedError(absl::StrCat(name, " is larger than ", max_bytes, " bytes"));
  }
  std::string out;
  if (S_ISREG(st.st_mode) && st.st_size > 0) out.reserve(static_cast<size_t>(st.st_size));
  char buf[1 << 16];
  while (true) {
    const ssize_t n = ::read(fd, buf, sizeof buf);
    if (n == 0) break;
    if (n < 0) {
      if (errno == EINTR) continue;
      return absl::DataLossError(absl::StrCat("error reading ", name, ": ", std::strerror(errno)));
    }
    if (out.size() + static_cast<size_t>(n) > max_bytes) {
      return absl::ResourceExhaustedError(absl::StrCat(name, " is larger than ", max_bytes, " bytes"));
    }
    out.append(buf, static_cast<size_t>(n));
  }
  return out;
}

absl::StatusOr<std::string> ReadPemFile(const std::string& path, absl::string_view what, PemKind kind) {
  absl::StatusOr<std::string> pem = ReadInput(path, size_t{16} << 20);
  if (!pem.ok()) return absl::Status(pem.status().code(), absl::StrCat(what, ": ", pem.status().message()));
  if (!absl::StrContains(*pem, "-----BEGIN ")) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": ", path, " holds no PEM block"));
  }
  // "CERTIFICATE-----" also matches TRUSTED CERTIFICATE; "PRIVATE KEY-----" the
  // PKCS#8, RSA, EC and encrypted forms.
  const bool has = kind == PemKind::kCertificate ? absl::StrContains(*pem, "CERTIFICATE-----")
                                                 : absl::StrContains(*pem, "PRIVATE KEY-----");
  if (!has) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": ", path, " holds no ",
                                                   kind == PemKind::kCertificate ? "certificate" : "private key",
                                                   " (PEM)"));
  }
  return pem;
}

}  // namespace kvhub
