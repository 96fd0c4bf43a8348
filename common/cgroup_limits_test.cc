// ReadMemoryLimit and ReadCpuLimit (both read through common/cgroup_files.h) on fake
// cgroup v1 and v2 trees.
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "common/cpu_limit.h"
#include "common/memory_limit.h"
#include "gtest/gtest.h"

namespace kvhub {
namespace {

namespace fs = std::filesystem;

class MemoryLimitTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::path(::testing::TempDir()) / ("cgroup_limits_" + std::to_string(getpid()));
    fs::remove_all(root_);
    fs::create_directories(root_);
    sources_.proc_self_cgroup = (root_ / "proc_self_cgroup").string();
    sources_.cgroup_root = (root_ / "cgroup").string();
    sources_.physical_bytes = 64ull << 30;
    cpu_sources_.proc_self_cgroup = sources_.proc_self_cgroup;
    cpu_sources_.cgroup_root = sources_.cgroup_root;
    cpu_sources_.affinity_cpus = 16;
  }
  void TearDown() override { fs::remove_all(root_); }

  void Write(const std::string& rel, const std::string& text) {
    fs::path p = rel.empty() || rel[0] != '/' ? root_ / rel : fs::path(rel);
    fs::create_directories(p.parent_path());
    std::ofstream(p) << text;
  }

  fs::path root_;
  MemoryLimitSources sources_;
  CpuLimitSources cpu_sources_;
};

TEST_F(MemoryLimitTest, NoCgroupFileMeansPhysicalMemory) {
  MemoryLimit m = ReadMemoryLimit(sources_);
  EXPECT_EQ(m.bytes, 64ull << 30);
  EXPECT_EQ(m.source, "physical memory");
}

TEST_F(MemoryLimitTest, CgroupV2LimitOfTheGroupOrAnAncestorBinds) {
  Write("proc_self_cgroup", "0::/kubepods/pod1/ctr\n");
  Write("cgroup/kubepods/pod1/ctr/memory.max", "max\n");
  Write("cgroup/kubepods/pod1/memory.max", "8589934592\n");  // 8 GiB on the pod
  Write("cgroup/kubepods/memory.max", "17179869184\n");
  MemoryLimit m = ReadMemoryLimit(sources_);
  EXPECT_EQ(m.bytes, 8ull << 30);
  EXPECT_EQ(m.source, sources_.cgroup_root + "/kubepods/pod1/memory.max");

  Write("cgroup/kubepods/pod1/ctr/memory.max", "1073741824");  // the container's own, lower
  EXPECT_EQ(ReadMemoryLimit(sources_).bytes, 1ull << 30);
}

TEST_F(MemoryLimitTest, CgroupV2NamespacedRootFile) {
  Write("proc_self_cgroup", "0::/\n");
  Write("cgroup/memory.max", "2147483648\n");
  EXPECT_EQ(ReadMemoryLimit(sources_).bytes, 2ull << 30);
}

TEST_F(MemoryLimitTest, CgroupV1MemoryController) {
  Write("proc_self_cgroup", "9:name=systemd:/\n4:cpu,memory:/job/a\n0::/\n");
  Write("cgroup/memory/job/a/memory.limit_in_bytes", "9223372036854771712\n");  // unlimited
  Write("cgroup/memory/job/memory.limit_in_bytes", "4294967296\n");
  MemoryLimit m = ReadMemoryLimit(sources_);
  EXPECT_EQ(m.bytes, 4ull << 30);
  EXPECT_EQ(m.source, sources_.cgroup_root + "/memory/job/memory.limit_in_bytes");
}

TEST_F(MemoryLimitTest, LimitsAbovePhysicalMemoryAndGarbageAreIgnored) {
  Write("proc_self_cgroup", "0::/a\nnot a cgroup line\n");
  Write("cgroup/a/memory.max", "137438953472\n");  // 128 GiB > 64 GiB physical
  Write("cgroup/memory.max", "lots\n");
  MemoryLimit m = ReadMemoryLimit(sources_);
  EXPECT_EQ(m.bytes, 64ull << 30);
  EXPECT_EQ(m.source, "physical memory");
}

TEST_F(MemoryLimitTest, ThisMachineHasALimit) {
  MemoryLimit m = ReadMemoryLimit();
  EXPECT_GT(m.bytes, 0u);
  EXPECT_FALSE(m.source.empty());
}

TEST_F(MemoryLimitTest, CpuQuotaOfTheGroupOrAnAncestorBindsRoundedUp) {
  CpuLimit c = ReadCpuLimit(cpu_sources_);  // no cgroup file: the affinity mask
  EXPECT_EQ(c.cpus, 16);
  EXPECT_EQ(c.source, "affinity");

  Write("proc_self_cgroup", "0::/kubepods/pod1/ctr\n");
  Write("cgroup/kubepods/pod1/ctr/cpu.max", "max 100000\n");
  Write("cgroup/kubepods/pod1/cpu.max", "250000 100000\n");  // 2.5 CPUs -> 3
  c = ReadCpuLimit(cpu_sources_);
  EXPECT_EQ(c.cpus, 3);
  EXPECT_EQ(c.source, sources_.cgroup_root + "/kubepods/pod1/cpu.max");

  Write("cgroup/kubepods/pod1/ctr/cpu.max", "50000 100000\n");  // half a CPU -> 1
  EXPECT_EQ(ReadCpuLimit(cpu_sources_).cpus, 1);
  Write("cgroup/kubepods/pod1/ctr/cpu.max", "garbage\n");
  EXPECT_EQ(ReadCpuLimit(cpu_sources_).cpus, 3);
  // A quota of more CPUs than an int holds binds nothing (it truncated to 1), and
  // the largest quota and period do not overflow.
  Write("cgroup/kubepods/pod1/ctr/cpu.max", "4294967297000 1000\n");
  EXPECT_EQ(ReadCpuLimit(cpu_sources_).cpus, 3);
  Write("cgroup/kubepods/pod1/ctr/cpu.max", "9223372036854775807 9223372036854775807\n");
  EXPECT_EQ(ReadCpuLimit(cpu_sources_).cpus, 1);
}

TEST_F(MemoryLimitTest, CpuQuotaOfCgroupV1) {
  Write("proc_self_cgroup", "2:cpu,cpuacct:/job\n0::/\n");
  Write("cgroup/cpu,cpuacct/job/cpu.cfs_quota_us", "400000\n");
  Write("cgroup/cpu,cpuacct/job/cpu.cfs_period_us", "100000\n");
  Write("cgroup/cpu,cpuacct/cpu.cfs_quota_us", "-1\n");  // the root: no limit
  Write("cgroup/cpu,cpuacct/cpu.cfs_period_us", "100000\n");
  CpuLimit c = ReadCpuLimit(cpu_sources_);
  EXPECT_EQ(c.cpus, 4);
  EXPECT_EQ(c.source, sources_.cgroup_root + "/cpu,cpuacct/job/cpu.cfs_quota_us");
  cpu_sources_.affinity_cpus = 2;  // fewer CPUs to run on than the quota
  c = ReadCpuLimit(cpu_sources_);
  EXPECT_EQ(c.cpus, 2);
  EXPECT_EQ(c.source, "affinity");
}

TEST_F(MemoryLimitTest, HugetlbRoomIsTheSmallestLimitLessUsageOfTheGroupOrAnAncestor) {
  EXPECT_FALSE(ReadHugetlbLimit(sources_).limited);  // no files: no limit
  Write("proc_self_cgroup", "0::/kubepods/pod1/ctr\n");
  Write("cgroup/kubepods/pod1/ctr/hugetlb.2MB.max", "max\n");
  EXPECT_FALSE(ReadHugetlbLimit(sources_).limited);
  Write("cgroup/kubepods/pod1/hugetlb.2MB.max", "0\n");  // a pod without hugepages-2Mi
  HugetlbLimit h = ReadHugetlbLimit(sources_);
  EXPECT_TRUE(h.limited);
  EXPECT_EQ(h.room, 0u);
  EXPECT_EQ(h.source, sources_.cgroup_root + "/kubepods/pod1/hugetlb.2MB.max");
  Write("cgroup/kubepods/pod1/hugetlb.2MB.max", "1073741824\n");  // hugepages-2Mi: 1Gi
  Write("cgroup/kubepods/pod1/hugetlb.2MB.current", "268435456\n");
  Write("cgroup/kubepods/hugetlb.2MB.max", "2147483648\n");
  Write("cgroup/kubepods/hugetlb.2MB.current", "2013265920\n");  // siblings hold 1.875 GiB
  h = ReadHugetlbLimit(sources_);
  EXPECT_EQ(h.room, 128ull << 20);  // the ancestor binds: 2 GiB - 1.875 GiB
  Write("cgroup/kubepods/hugetlb.2MB.current", "garbage");  // usage unknown: no room there
  EXPECT_EQ(ReadHugetlbLimit(sources_).room, 0u);
  Write("cgroup/kubepods/hugetlb.2MB.current", "0\n");
  EXPECT_EQ(ReadHugetlbLimit(sources_).room, 768ull << 20);  // the pod binds
  Write("cgroup/kubepods/pod1/hugetlb.2MB.current", "2147483648\n");  // over: no room
  EXPECT_EQ(ReadHugetlbLimit(sources_).room, 0u);
}

TEST_F(MemoryLimitTest, HugetlbLimitOfCgroupV1) {
  Write("proc_self_cgroup", "5:hugetlb:/kubepods/pod2\n4:memory:/kubepods/pod2\n");
  Write("cgroup/hugetlb/kubepods/pod2/hugetlb.2MB.limit_in_bytes", "9223372036854771712\n");  // unlimited
  EXPECT_FALSE(ReadHugetlbLimit(sources_).limited);
  Write("cgroup/hugetlb/kubepods/pod2/hugetlb.2MB.limit_in_bytes", "4194304\n");
  Write("cgroup/hugetlb/kubepods/pod2/hugetlb.2MB.usage_in_bytes", "2097152\n");
  HugetlbLimit h = ReadHugetlbLimit(sources_);
  EXPECT_TRUE(h.limited);
  EXPECT_EQ(h.room, 2ull << 20);
}

TEST(CpuLimitTest, ThisMachineHasAtLeastOneCpu) {
  CpuLimit c = ReadCpuLimit();
  EXPECT_GE(c.cpus, 1);
  EXPECT_FALSE(c.source.empty());
}

TEST(HumanBytesTest, Renders) {
  EXPECT_EQ(HumanBytes(0), "0 B");
  EXPECT_EQ(HumanBytes(1023), "1023 B");
  EXPECT_EQ(HumanBytes(1536), "1.5 KiB");
  EXPECT_EQ(HumanBytes(24ull << 30), "24.0 GiB");
  EXPECT_EQ(HumanBytes(1ull << 40), "1.0 TiB");
}

}  // namespace
}  // namespace kvhub
