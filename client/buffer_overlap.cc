#include "client/buffer_overlap.h"

#include <algorithm>
#include <vector>

#include "absl/strings/str_cat.h"

namespace kvhub {

absl::Status CheckBuffersDisjoint(std::span<const std::span<uint8_t>> buffers) {
  if (buffers.size() < 2) return absl::OkStatus();
  // Indices of non-empty buffers, ordered by start address (uintptr_t: pointers
  // into different objects are not ordered by `<`).
  std::vector<size_t> order;
  order.reserve(buffers.size());
  for (size_t i = 0; i < buffers.size(); ++i) {
    if (!buffers[i].empty()) order.push_back(i);
  }
  const auto start = [&](size_t i) { return reinterpret_cast<uintptr_t>(buffers[i].data()); };
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    return start(a) != start(b) ? start(a) < start(b) : a < b;
  });
  // Sorted by start, if buffer a overlaps a later b, every buffer between them starts
  // inside a too: some neighbouring pair overlaps.
  for (size_t k = 1; k < order.size(); ++k) {
    const size_t prev = order[k - 1], i = order[k];
    if (start(i) < start(prev) + buffers[prev].size()) {
      const size_t lo = std::min(prev, i), hi = std::max(prev, i);
      return absl::InvalidArgumentError(absl::StrCat(
          "buffers ", lo, " and ", hi, " overlap: each block needs its own memory (",
          buffers[lo].size(), " and ", buffers[hi].size(), " bytes, starting ",
          start(i) - start(prev), " bytes apart)"));
    }
  }
  return absl::OkStatus();
}

}  // namespace kvhub
