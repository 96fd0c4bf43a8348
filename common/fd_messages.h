#pragma once
// Length-prefixed messages over a file descriptor (a pipe or socket between a
// parent and a forked child: the two-process tests and benches, kvhubd's UCX
// address vetter): an 8-byte native-endian length, then the bytes. Blocking;
// retries on EINTR and short reads/writes. Writing to a socket whose peer is gone
// fails with false, never SIGPIPE (MSG_NOSIGNAL); to such a pipe it raises SIGPIPE
// unless the process ignores it.
//
// Failure semantics: false when the peer closed the descriptor, on an I/O error,
// or (RecvMessage) when the announced length exceeds `max_bytes`; the stream is
// then unusable. Thread safety: one reader and one writer per descriptor.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

namespace kvhub {

// Writes/reads exactly n bytes.
bool WriteFull(int fd, const void* data, size_t n);
bool ReadFull(int fd, void* data, size_t n);

bool SendMessage(int fd, std::string_view message);
bool RecvMessage(int fd, std::string* message, uint64_t max_bytes = 64ull << 20);

}  // namespace kvhub
