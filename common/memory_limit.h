// How much memory this process may use, as the kernel will enforce it: the smaller of
// the machine's physical memory and the memory limit of the process's cgroup and its
// ancestors (cgroup v2 `memory.max`, or v1 `memory.limit_in_bytes`). A Kubernetes
// container's `resources.limits.memory` is such a cgroup limit; past it the container
// is OOM-killed, whatever the host has free.
//
// Thread safety: ReadMemoryLimit only reads files; call it from any thread.

#ifndef KVHUB_COMMON_MEMORY_LIMIT_H_
#define KVHUB_COMMON_MEMORY_LIMIT_H_

#include <cstdint>
#include <string>

#include "common/cgroup_files.h"

namespace kvhub {

struct MemoryLimit {
  uint64_t bytes = 0;  // 0: unknown (neither physical memory nor a cgroup limit was readable)
  std::string source;  // what set `bytes`, for messages: "physical memory" or the limit file's path
};

// Where the limits are read from; tests point these at a fake tree.
struct MemoryLimitSources : CgroupSources {
  uint64_t physical_bytes = 0;  // 0: sysconf(_SC_PHYS_PAGES) * page size
};

// Never fails: unreadable or absent cgroup files mean "no cgroup limit" (cgroups are
// optional); values of "max" or v1's "unlimited" (>= 2^62) are no limit either.
MemoryLimit ReadMemoryLimit(const MemoryLimitSources& sources = {});

// "1.5 GiB"-style rendering of a byte count, for operator messages.
std::string HumanBytes(uint64_t bytes);

}  // namespace kvhub

#endif  // KVHUB_COMMON_MEMORY_LIMIT_H_
