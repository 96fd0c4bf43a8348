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

// How many bytes of 2 MiB hugetlb pages the process's cgroups still let it fault in:
// the smallest (limit - usage) over its cgroup and ancestors (cgroup v2
// `hugetlb.2MB.max` / `hugetlb.2MB.current`, v1 `hugetlb.2MB.limit_in_bytes` /
// `usage_in_bytes`). A Kubernetes pod's limit is what it requests as `hugepages-2Mi`,
// zero by default. The kernel checks this limit when a page is first touched, not
// when it is mapped (unless the reservation limit, `rsvd`, is set): MAP_HUGETLB past
// it succeeds, and the first write past it is SIGBUS. So map hugetlb memory only
// within `room`.
struct HugetlbLimit {
  bool limited = false;  // false: no hugetlb cgroup limit applies (room is meaningless)
  uint64_t room = 0;     // bytes still allowed, when limited
  std::string source;    // the limit file that binds, for messages
};

// Never fails: absent or unreadable limit files mean no limit; "max" and v1's
// "unlimited" (>= 2^62) are no limit either. A usage file that does not parse means
// no room under its limit.
HugetlbLimit ReadHugetlbLimit(const CgroupSources& sources = {});

// "1.5 GiB"-style rendering of a byte count, for operator messages.
std::string HumanBytes(uint64_t bytes);

}  // namespace kvhub

#endif  // KVHUB_COMMON_MEMORY_LIMIT_H_
