#pragma once
// Large anonymous memory regions for the host tier, mapped once at start and
// never moved, so a transport can register them once (UCX). Each region is
// mapped with MAP_HUGETLB first when asked (hugetlbfs pages must be reserved by
// the administrator: vm.nr_hugepages) and the process's hugetlb cgroup limit
// leaves room for it (past that limit the kernel maps, then kills the process
// with SIGBUS at the first write: common/memory_limit.h), else with normal pages plus
// madvise(MADV_HUGEPAGE) so transparent hugepages can back it. Regions are
// excluded from core dumps (MADV_DONTDUMP).
//
// Thread safety: immutable after Map; the memory itself is the caller's to
// synchronize. Unmapped on destruction.

#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "absl/status/statusor.h"
#include "common/cgroup_files.h"
#include "storage/block_store.h"

namespace kvhub::storage {

class HostRegions {
 public:
  struct Options {
    bool try_hugepages = true;
    bool populate = false;  // MAP_POPULATE: fault every page in now
    // Where the hugetlb cgroup limit is read from (tests point it at a fake tree).
    // MAP_HUGETLB is used only for regions that fit the room that limit leaves.
    CgroupSources cgroup;
  };
  // Maps one region per entry of `sizes` (bytes, each > 0). RESOURCE_EXHAUSTED
  // when the kernel refuses; nothing stays mapped then.
  static absl::StatusOr<std::unique_ptr<HostRegions>> Map(std::span<const uint64_t> sizes,
                                                          const Options& options);
  ~HostRegions();
  HostRegions(const HostRegions&) = delete;
  HostRegions& operator=(const HostRegions&) = delete;

  std::span<const Region> regions() const { return regions_; }

 private:
  HostRegions() = default;
  std::vector<Region> regions_;
};

}  // namespace kvhub::storage
