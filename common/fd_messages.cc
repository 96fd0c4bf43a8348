#include "common/fd_messages.h"

#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>

namespace kvhub {

bool WriteFull(int fd, const void* data, size_t n) {
  const auto* p = static_cast<const char*>(data);
  bool socket = true;  // until send says otherwise
  while (n > 0) {
    const ssize_t w = socket ? ::send(fd, p, n, MSG_NOSIGNAL) : ::write(fd, p, n);
    if (w < 0 && socket && errno == ENOTSOCK) {
      socket = false;
      continue;
    }
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return false;
    p += w;
    n -= static_cast<size_t>(w);
  }
  return true;
}

bool ReadFull(int fd, void* data, size_t n) {
  auto* p = static_cast<char*>(data);
  while (n > 0) {
    const ssize_t r = ::read(fd, p, n);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return false;
    p += r;
    n -= static_cast<size_t>(r);
  }
  return true;
}

bool SendMessage(int fd, std::string_view message) {
  const uint64_t n = message.size();
  return WriteFull(fd, &n, sizeof(n)) && WriteFull(fd, message.data(), message.size());
}

bool RecvMessage(int fd, std::string* message, uint64_t max_bytes) {
  uint64_t n = 0;
  if (!ReadFull(fd, &n, sizeof(n)) || n > max_bytes) return false;
  message->resize(n);
  return ReadFull(fd, message->data(), n);
}

}  // namespace kvhub
