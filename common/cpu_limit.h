#pragma once
// How many CPUs this process may keep busy: the smaller of the CPUs it may run on
// (its affinity mask) and the CPU quota of its cgroup and its ancestors, rounded up
// (cgroup v2 `cpu.max`, or v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`). A Kubernetes
// container's `resources.limits.cpu` is such a quota: a pool sized by the host's core
// count would be throttled.
//
// Thread safety: ReadCpuLimit only reads files and the affinity mask; call it from
// any thread.

#include <string>

#include "common/cgroup_files.h"

namespace kvhub {

struct CpuLimit {
  int cpus = 1;        // >= 1
  std::string source;  // what set `cpus`, for messages: "affinity" or the quota file's path
};

struct CpuLimitSources : CgroupSources {
  int affinity_cpus = 0;  // 0: sched_getaffinity (std::thread::hardware_concurrency if that fails)
};

// Never fails: unreadable cgroup files and "max" / -1 quotas are no limit.
CpuLimit ReadCpuLimit(const CpuLimitSources& sources = {});

}  // namespace kvhub
