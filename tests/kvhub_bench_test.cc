// kvhub-bench as a user runs it: a spawned kvhubd, the redis-server baseline, --json -
// on stdout, and a clear failure against a cluster that does not answer.

#include <sys/wait.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"

namespace kvhub {
namespace {

struct RunResult {
  int code = -1;
  std::string out;
};

// Runs kvhub-bench with `args`; `out` is its stdout only (stderr to /dev/null).
RunResult RunBench(const std::string& args) {
  const char* dir = std::getenv("KVHUB_BIN_DIR");
  const std::string cmd = absl::StrCat(dir != nullptr ? dir : "bin", "/kvhub-bench ", args, " 2>/dev/null");
  RunResult r;
  FILE* p = popen(cmd.c_str(), "r");
  if (p == nullptr) return r;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), p)) > 0) r.out.append(buf, n);
  const int st = pclose(p);
  r.code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  return r;
}

TEST(KvhubBenchTest, JsonOnStdoutIsTheWholeStdoutWithEveryRowAndTheRedisBaseline) {
  RunResult r = RunBench(
      "--spawn 1 --transport grpc --seconds 0.2 --sizes 64KiB --batches 4 --get-modes inline "
      "--put-paths inline --concurrency 2 --json -");
  ASSERT_EQ(r.code, 0) << r.out;
  nlohmann::json j = nlohmann::json::parse(r.out, nullptr, /*allow_exceptions=*/false);
  ASSERT_FALSE(j.is_discarded()) << "stdout is not JSON: '" << r.out.substr(0, 300) << "'";
  ASSERT_TRUE(j.contains("results"));
  bool kvhub_get = false, redis_get = false, lookup = false;
  for (const nlohmann::json& row : j["results"]) {
    EXPECT_EQ(row["errors"].get<uint64_t>(), 0u) << row.dump();
    const std::string sys = row["system"], op = row["op"];
    if (sys == "kvhub" && op == "get") kvhub_get = row["gbps"].get<double>() > 0;
    if (sys == "redis" && op == "get") redis_get = row["gbps"].get<double>() > 0;
    if (sys == "kvhub" && op == "lookup") lookup = row["keys_per_s"].get<double>() > 0;
  }
  EXPECT_TRUE(kvhub_get && redis_get && lookup) << r.out;
  EXPECT_TRUE(j["ratios"].contains("get_inline_64KiB_vs_redis")) << j["ratios"].dump();
}

TEST(KvhubBenchTest, AClusterThatDoesNotAnswerFailsBeforeAnyCell) {
  RunResult r = RunBench("--members 127.0.0.1:1 --seconds 0.2 --sizes 64KiB --batches 1 --no-redis");
  EXPECT_EQ(r.code, 1);
  EXPECT_EQ(r.out, "") << "no table for a cluster that never answered";
}

}  // namespace
}  // namespace kvhub
