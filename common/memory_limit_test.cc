#include "common/memory_limit.h"

#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "gtest/gtest.h"

namespace kvhub {
namespace {

namespace fs = std::filesystem;

class MemoryLimitTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::path(::testing::TempDir()) / ("memlimit_" + std::to_string(getpid()));
    fs::remove_all(root_);
    fs::create_directories(root_);
    sources_.proc_self_cgroup = (root_ / "proc_self_cgroup").string();
    sources_.cgroup_root = (root_ / "cgroup").string();
    sources_.physical_bytes = 64ull << 30;
  }
  void TearDown() override { fs::remove_all(root_); }

  void Write(const std::string& rel, const std::string& text) {
    fs::path p = rel.empty() || rel[0] != '/' ? root_ / rel : fs::path(rel);
    fs::create_directories(p.parent_path());
    std::ofstream(p) << text;
  }

  fs::path root_;
  MemoryLimitSources sources_;
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

TEST(HumanBytesTest, Renders) {
  EXPECT_EQ(HumanBytes(0), "0 B");
  EXPECT_EQ(HumanBytes(1023), "1023 B");
  EXPECT_EQ(HumanBytes(1536), "1.5 KiB");
  EXPECT_EQ(HumanBytes(24ull << 30), "24.0 GiB");
  EXPECT_EQ(HumanBytes(1ull << 40), "1.0 TiB");
}

}  // namespace
}  // namespace kvhub
