#include "common/cpu_limit.h"

#include <sched.h>

#include <limits>
#include <thread>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/input_file.h"

namespace kvhub {
namespace {

int AffinityCpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    const int n = CPU_COUNT(&set);
    if (n > 0) return n;
  }
  return static_cast<int>(std::thread::hardware_concurrency());
}

// ceil(quota / period) CPUs, or 0 for no limit (or anything unparsable).
int QuotaCpus(int64_t quota, int64_t period) {
  if (quota <= 0 || period <= 0) return 0;
  // Without overflow for any int64 pair; a quota of more CPUs than an int holds is
  // no limit in practice (it used to truncate to a small count).
  const int64_t cpus = quota / period + (quota % period != 0 ? 1 : 0);
  return cpus > std::numeric_limits<int>::max() ? std::numeric_limits<int>::max() : static_cast<int>(cpus);
}

void Lower(CpuLimit* limit, int cpus, const std::string& source) {
  if (cpus <= 0 || cpus >= limit->cpus) return;
  limit->cpus = cpus;
  limit->source = source;
}

}  // namespace

CpuLimit ReadCpuLimit(const CpuLimitSources& sources) {
  CpuLimit limit;
  limit.cpus = sources.affinity_cpus > 0 ? sources.affinity_cpus : AffinityCpus();
  if (limit.cpus < 1) limit.cpus = 1;
  limit.source = "affinity";
  // v2: "max 100000" (no limit) or "150000 100000".
  ForEachCgroupFile(sources, "cpu.max", "", "", [&](const std::string& path, absl::string_view content) {
    std::vector<absl::string_view> f = absl::StrSplit(absl::StripAsciiWhitespace(content), ' ', absl::SkipEmpty());
    int64_t quota = 0, period = 0;
    if (f.size() == 2 && absl::SimpleAtoi(f[0], &quota) && absl::SimpleAtoi(f[1], &period)) {
      Lower(&limit, QuotaCpus(quota, period), path);
    }
  });
  // v1: cpu.cfs_quota_us (-1: no limit) beside cpu.cfs_period_us.
  ForEachCgroupFile(sources, "", "cpu", "cpu.cfs_quota_us", [&](const std::string& path, absl::string_view content) {
    int64_t quota = 0, period = 0;
    if (!absl::SimpleAtoi(absl::StripAsciiWhitespace(content), &quota)) return;
    const std::string period_path = std::string(absl::StripSuffix(path, "cpu.cfs_quota_us")) + "cpu.cfs_period_us";
    absl::StatusOr<std::string> text = ReadInput(period_path, 1 << 16);
    if (text.ok() && absl::SimpleAtoi(absl::StripAsciiWhitespace(*text), &period)) {
      Lower(&limit, QuotaCpus(quota, period), path);
    }
  });
  return limit;
}

}  // namespace kvhub
