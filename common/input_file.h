#pragma once
// Reading a program's input (a block's bytes, a token list, a trace) from a file or
// standard input, with every failure reported as a status: a missing file, a
// directory, a read error. Never throws.
//
// Thread safety: none needed; reads only the named file (or stdin).

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace kvhub {

// The whole content of `path` ("-" is standard input). NOT_FOUND when it does not
// exist; INVALID_ARGUMENT when it is a directory; PERMISSION_DENIED when it may not
// be opened; DATA_LOSS with the system's error when it cannot be opened or read
// otherwise; RESOURCE_EXHAUSTED past `max_bytes`.
absl::StatusOr<std::string> ReadInput(const std::string& path, size_t max_bytes = size_t{1} << 34);

// What a PEM file must hold.
enum class PemKind { kCertificate, kPrivateKey };

// A PEM file (certificates, keys; at most 16 MiB): ReadInput's errors, or
// INVALID_ARGUMENT when it holds no PEM block of `kind` (a key given as a CA
// bundle, a certificate given as a key); messages start with `what` (the config
// key that named the file). Does not parse the blocks.
absl::StatusOr<std::string> ReadPemFile(const std::string& path, absl::string_view what, PemKind kind);

}  // namespace kvhub
