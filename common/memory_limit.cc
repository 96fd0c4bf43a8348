#include "common/memory_limit.h"

#include <unistd.h>

#include <fstream>
#include <sstream>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"

namespace kvhub {
namespace {

// cgroup v1 writes "no limit" as the largest page-aligned signed 64-bit value.
constexpr uint64_t kUnlimitedAtOrAbove = 1ull << 62;

bool ReadFile(const std::string& path, std::string* out) {
  std::ifstream in(path);
  if (!in) return false;
  std::stringstream ss;
  ss << in.rdbuf();
  *out = ss.str();
  return true;
}

// A limit file's value; 0 when absent, unreadable, "max" or unlimited.
uint64_t ReadLimitFile(const std::string& path) {
  std::string text;
  if (!ReadFile(path, &text)) return 0;
  uint64_t v = 0;
  if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(text), &v) || v >= kUnlimitedAtOrAbove) return 0;
  return v;
}

// "/a/b/c" -> "/a/b/c", "/a/b", "/a", "" (the root itself).
std::vector<std::string> SelfAndAncestors(absl::string_view path) {
  std::string p(absl::StripSuffix(path, "/"));
  std::vector<std::string> out;
  while (true) {
    out.push_back(p);
    if (p.empty()) break;
    size_t slash = p.rfind('/');
    p = slash == std::string::npos ? "" : p.substr(0, slash);
  }
  return out;
}

void Lower(MemoryLimit* limit, uint64_t bytes, const std::string& source) {
  if (bytes == 0) return;
  if (limit->bytes == 0 || bytes < limit->bytes) {
    limit->bytes = bytes;
    limit->source = source;
  }
}

// The cgroup's limit file and its ancestors'; the smallest limit binds. Inside a
// container without a cgroup namespace the process's path is the host's and does not
// exist under the container's mount, so the mount's root file is read too.
void LowerByCgroup(MemoryLimit* limit, const std::string& dir, absl::string_view path,
                   absl::string_view file) {
  for (const std::string& p : SelfAndAncestors(path)) {
    std::string f = absl::StrFormat("%s%s/%s", dir, p, file);
    Lower(limit, ReadLimitFile(f), f);
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

  std::string cgroups;
  if (!ReadFile(sources.proc_self_cgroup, &cgroups)) return limit;
  // Lines are "hierarchy-id:controllers:path"; v2's unified line is "0::path".
  for (absl::string_view line : absl::StrSplit(cgroups, '\n', absl::SkipEmpty())) {
    std::vector<absl::string_view> f = absl::StrSplit(line, absl::MaxSplits(':', 2));
    if (f.size() != 3) continue;
    if (f[0] == "0" && f[1].empty()) {
      LowerByCgroup(&limit, sources.cgroup_root, f[2], "memory.max");
      continue;
    }
    for (absl::string_view controller : absl::StrSplit(f[1], ',')) {
      if (controller == "memory") {
        LowerByCgroup(&limit, sources.cgroup_root + "/memory", f[2], "memory.limit_in_bytes");
      }
    }
  }
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
