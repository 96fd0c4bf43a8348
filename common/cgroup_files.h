#pragma once
// Reading the process's cgroup limit files (memory, CPU): the files of its cgroup and
// of every ancestor, on cgroup v2 (the unified hierarchy) or v1. Limits of ancestors
// bind too, so callers combine all the files they are given (usually: the smallest).
//
// Thread safety: only reads files; call from any thread. Never fails: cgroups are
// optional, and absent or unreadable files are skipped.

#include <functional>
#include <string>

#include "absl/strings/string_view.h"

namespace kvhub {

// Where the files are read from; tests point these at a fake tree.
struct CgroupSources {
  std::string proc_self_cgroup = "/proc/self/cgroup";
  std::string cgroup_root = "/sys/fs/cgroup";
};

// Calls fn(path, content) for every readable file named `v2_file` in the process's
// cgroup v2 directory and its ancestors, and every file named `v1_file` in its v1
// directories (and their ancestors) of the hierarchy holding `v1_controller`. Inside a
// container without a cgroup namespace the process's path is the host's and does not
// exist under the container's mount; the mount's root is always read too. An empty
// file name or controller skips that hierarchy.
void ForEachCgroupFile(const CgroupSources& sources, absl::string_view v2_file,
                       absl::string_view v1_controller, absl::string_view v1_file,
                       const std::function<void(const std::string& path, absl::string_view content)>& fn);

}  // namespace kvhub
