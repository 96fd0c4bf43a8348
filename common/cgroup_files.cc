#include "common/cgroup_files.h"

#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/input_file.h"

namespace kvhub {
namespace {

constexpr size_t kMaxCgroupFileBytes = 1 << 16;

// A cgroup file's content; false when absent or unreadable (cgroups are optional).
bool ReadFile(const std::string& path, std::string* out) {
  absl::StatusOr<std::string> text = ReadInput(path, kMaxCgroupFileBytes);
  if (!text.ok()) return false;
  *out = *std::move(text);
  return true;
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

void VisitDir(const std::string& dir, absl::string_view path, absl::string_view file,
              const std::function<void(const std::string&, absl::string_view)>& fn) {
  if (file.empty()) return;
  for (const std::string& p : SelfAndAncestors(path)) {
    const std::string f = absl::StrCat(dir, p, "/", file);
    std::string content;
    if (ReadFile(f, &content)) fn(f, content);
  }
}

}  // namespace

void ForEachCgroupFile(const CgroupSources& sources, absl::string_view v2_file,
                       absl::string_view v1_controller, absl::string_view v1_file,
                       const std::function<void(const std::string& path, absl::string_view content)>& fn) {
  std::string cgroups;
  if (!ReadFile(sources.proc_self_cgroup, &cgroups)) return;
  // Lines are "hierarchy-id:controllers:path"; v2's unified line is "0::path".
  for (absl::string_view line : absl::StrSplit(cgroups, '\n', absl::SkipEmpty())) {
    std::vector<absl::string_view> f = absl::StrSplit(line, absl::MaxSplits(':', 2));
    if (f.size() != 3) continue;
    if (f[0] == "0" && f[1].empty()) {
      VisitDir(sources.cgroup_root, f[2], v2_file, fn);
      continue;
    }
    for (absl::string_view controller : absl::StrSplit(f[1], ',')) {
      if (v1_controller.empty() || controller != v1_controller) continue;
      // Co-mounted controllers live at ".../cpu,cpuacct", usually with a
      // ".../cpu" link; read whichever exists (once).
      const std::string mount = absl::StrCat(sources.cgroup_root, "/", f[1]);
      const std::string link = absl::StrCat(sources.cgroup_root, "/", controller);
      VisitDir(mount, f[2], v1_file, fn);
      if (link != mount) VisitDir(link, f[2], v1_file, fn);
    }
  }
}

}  // namespace kvhub
