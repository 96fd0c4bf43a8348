#include "common/memory_limit.h"

#include <unistd.h>

#include <iterator>
#include <map>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"

namespace kvhub {
namespace {

// cgroup v1 writes "no limit" as the largest page-aligned signed 64-bit value.
constexpr uint64_t kUnlimitedAtOrAbove = 1ull << 62;

void Lower(MemoryLimit* limit, uint64_t bytes, const std::string& source) {
  if (bytes == 0) return;
  if (limit->bytes == 0 || bytes < limit->bytes) {
    limit->bytes = bytes;
    limit->source = source;
  }
}

}  // namespace

MemoryLimit ReadMemoryLimit(const MemoryLimitSources& sources) {
  MemoryLimit limit;
  uint64_t physical = sources.physical_bytes;
  if (physical == 0) {
    long pages = sysconf(_SC_PHYS_PAGES);
    long page = sysconf(_SC_PAGESIZE);
    if (pages > 0 && page > 0) physical = static_cast<uint64_t>(pages) * static_cast<uint64_t>(page);
  }
  Lower(&limit, physical, "physical memory");
  // "max", garbage, and v1's "unlimited" (>= 2^62) are no limit.
  ForEachCgroupFile(sources, "memory.max", "memory", "memory.limit_in_bytes",
                    [&](const std::string& path, absl::string_view content) {
                      uint64_t v = 0;
                      if (absl::SimpleAtoi(absl::StripAsciiWhitespace(content), &v) && v < kUnlimitedAtOrAbove) {
                        Lower(&limit, v, path);
                      }
                    });
  return limit;
}

HugetlbLimit ReadHugetlbLimit(const CgroupSources& sources) {
  // Each directory's usage is read with its limit: ancestors' usage includes their
  // other children's pages, so each level has room of its own. A usage file that
  // does not parse leaves no room (taking it as 0 could map past the limit).
  std::map<std::string, uint64_t> usage;
  auto dir_of = [](const std::string& path) { return path.substr(0, path.rfind('/')); };
  ForEachCgroupFile(sources, "hugetlb.2MB.current", "hugetlb", "hugetlb.2MB.usage_in_bytes",
                    [&](const std::string& path, absl::string_view content) {
                      uint64_t v = 0;
                      usage[dir_of(path)] =
                          absl::SimpleAtoi(absl::StripAsciiWhitespace(content), &v) ? v : ~uint64_t{0};
                    });
  HugetlbLimit limit;
  ForEachCgroupFile(sources, "hugetlb.2MB.max", "hugetlb", "hugetlb.2MB.limit_in_bytes",
                    [&](const std::string& path, absl::string_view content) {
                      uint64_t v = 0;
                      if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(content), &v) || v >= kUnlimitedAtOrAbove) {
                        return;
                      }
                      auto it = usage.find(dir_of(path));
                      const uint64_t used = it == usage.end() ? 0 : it->second;
                      const uint64_t room = v > used ? v - used : 0;
                      if (!limit.limited || room < limit.room) {
                        limit.limited = true;
                        limit.room = room;
                        limit.source = path;
                      }
                    });
  return limit;
}

std::string HumanBytes(uint64_t bytes) {
  constexpr const char* kUnits[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  double v = static_cast<double>(bytes);
  size_t u = 0;
  while (v >= 1024 && u + 1 < std::size(kUnits)) {
    v /= 1024;
    ++u;
  }
  if (u == 0) return absl::StrFormat("%d B", bytes);
  return absl::StrFormat("%.1f %s", v, kUnits[u]);
}

}  // namespace kvhub
