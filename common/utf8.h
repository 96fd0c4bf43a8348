#pragma once
// UTF-8 validation for names that travel in protobuf `string` fields
// (namespaces, model names): protobuf refuses to parse a message whose string
// field is not well-formed UTF-8.

#include "absl/strings/string_view.h"

namespace kvhub {
// True when `s` is well-formed UTF-8 (RFC 3629: no overlong forms, no
// surrogates, nothing above U+10FFFF). Empty is well-formed.
bool IsUtf8(absl::string_view s);
}  // namespace kvhub
