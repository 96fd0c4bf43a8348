#include "common/copy.h"

#include <algorithm>
#include <cstdint>
#include <cstring>

namespace kvhub {

void CopyBytes(void* dst, const void* src, size_t len) {
  auto* d = static_cast<uint8_t*>(dst);
  const auto* s = static_cast<const uint8_t*>(src);
  for (size_t off = 0; off < len; off += kCopyPieceBytes) {
    std::memcpy(d + off, s + off, std::min(kCopyPieceBytes, len - off));
  }
}

}  // namespace kvhub
