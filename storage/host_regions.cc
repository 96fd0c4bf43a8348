#include "storage/host_regions.h"

#include <sys/mman.h>

#include <cerrno>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "common/memory_limit.h"

namespace kvhub::storage {
namespace {
constexpr uint64_t kHugePage = 2ull << 20;
// MAP_HUGETLB asks for the node's default hugepage size, which may be 1 GiB (nodes
// booted with default_hugepagesz=1G); the cgroup limit checked is the 2 MiB one, so
// ask for 2 MiB pages by name.
constexpr int kMapHuge2Mb = 21 << MAP_HUGE_SHIFT;
}  // namespace

absl::StatusOr<std::unique_ptr<HostRegions>> HostRegions::Map(std::span<const uint64_t> sizes,
                                                              const Options& options) {
  std::unique_ptr<HostRegions> out(new HostRegions());
  out->regions_.reserve(sizes.size());
  HugetlbLimit hugetlb;
  if (options.try_hugepages) hugetlb = ReadHugetlbLimit(options.cgroup);
  uint64_t beyond_hugetlb_limit = 0;  // bytes mapped with plain pages for want of room
  for (uint64_t size : sizes) {
    if (size == 0) return absl::InvalidArgumentError("region size must be > 0");
    int flags = MAP_PRIVATE | MAP_ANONYMOUS;
    if (options.populate) flags |= MAP_POPULATE;
    void* p = MAP_FAILED;
    bool huge = false;
    bool huge_allowed = options.try_hugepages && size % kHugePage == 0;
    if (huge_allowed && hugetlb.limited && size > hugetlb.room) {
      beyond_hugetlb_limit += size;
      huge_allowed = false;
    }
    if (huge_allowed) {
      // No MAP_NORESERVE here: with it the kernel maps hugetlb memory it does not
      // have and the first touch of a missing page is SIGBUS. Without it, mmap
      // fails up front when the hugepage pool is short, and we fall back.
      p = mmap(nullptr, size, PROT_READ | PROT_WRITE, flags | MAP_HUGETLB | kMapHuge2Mb, -1, 0);
      huge = p != MAP_FAILED;
      if (huge && hugetlb.limited) hugetlb.room -= size;
    }
    if (p == MAP_FAILED) {
      p = mmap(nullptr, size, PROT_READ | PROT_WRITE, flags | MAP_NORESERVE, -1, 0);
      if (p == MAP_FAILED) {
        int err = errno;
        return absl::ResourceExhaustedError(
            absl::StrCat("mmap of a ", size, "-byte host region failed: ", std::strerror(err)));
      }
      if (options.try_hugepages && size >= kHugePage) {
        (void)madvise(p, size, MADV_HUGEPAGE);  // advisory: THP may be disabled
      }
    }
    (void)madvise(p, size, MADV_DONTDUMP);  // advisory: keep cache bytes out of core dumps
    out->regions_.push_back(Region{static_cast<uint8_t*>(p), size, huge});
  }
  if (beyond_hugetlb_limit > 0) {
    KVHUB_LOG(info,
              "host tier: {} on plain pages: the hugetlb cgroup limit ({}) leaves no room for them "
              "(in Kubernetes: request hugepages-2Mi to use hugepages)",
              HumanBytes(beyond_hugetlb_limit), hugetlb.source);
  }
  int huge = 0;
  for (const Region& r : out->regions_) huge += r.hugepages ? 1 : 0;
  KVHUB_LOG(info, "host tier: mapped {} region(s), {} on hugetlb pages", out->regions_.size(),
            huge);
  return out;
}

HostRegions::~HostRegions() {
  for (const Region& r : regions_) munmap(r.base, r.size);
}

}  // namespace kvhub::storage
