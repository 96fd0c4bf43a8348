// kvhub-bench as a user runs it: a spawned kvhubd, the redis-server baseline, --json -
// on stdout, and a clear failure against a cluster that does not answer.

#include <unistd.h>

#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/testing/kvhubd_process.h"
#include "tests/testing/run_command.h"

namespace kvhub {
namespace {

using RunResult = testing::CommandResult;

// Runs kvhub-bench with `args`; `out` is its stdout only (stderr to /dev/null).
RunResult RunBench(const std::string& args) {
  return testing::RunCommand(absl::StrCat(testing::ProgramPath("kvhub-bench"), " ", args, " 2>/dev/null"));
}

TEST(KvhubBenchTest, JsonOnStdoutIsTheWholeStdoutWithEveryRowAndTheRedisBaseline) {
  RunResult r = RunBench(
      "--spawn 1 --transport grpc --seconds 0.2 --sizes 64KiB --batches 4 --get-modes inline "
      "--put-paths inline --concurrency 2 --json - "
      // The documented form: the value starts with "--" (was refused as an unknown flag).
      "--kvhubd-flags '--capacity_bytes=256MiB --try_hugepages=false --log_level=warn'");
  ASSERT_EQ(r.exit_code, 0) << r.out;
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
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_EQ(r.out, "") << "no table for a cluster that never answered";
}

// Flags that cannot work are refused before anything runs, with the reason.
TEST(KvhubBenchTest, BadSizesAndAnUnwritableJsonPathAreUsageErrors) {
  for (const auto& [args, want] : std::vector<std::pair<std::string, std::string>>{
           {"--sizes ''", "--sizes names no size"},
           {"--sizes 300MiB", "larger than a block can be (256MiB)"},
           {"--sizes 1.5MiB", "bad size '1.5MiB'"},
           {"--sizes 99999999999999GiB", "bad size"},
           {"--batches ,", "--batches names no batch size"},
           {"--seconds nan", "--seconds must be in (0, 60]"},  // ran empty cells and exited 0
           // 256 x 65 x 256 MiB of buffers: it was an OOM kill or an abort (session 25).
           {"--concurrency 256 --get-blocks 64 --sizes 256MiB", "GiB of buffers, more than half"},
           {"--json /nonexistent-dir/b.json", "--json: cannot write /nonexistent-dir/b.json"},
           // Flags the run would ignore (it measured gRPC only and exited 0).
           {"--ucx-tls tcp", "--ucx-tls needs --transport ucx or both"},
           {"--no-perftest", "--no-perftest needs --transport ucx or both"},
           {"--transport ucx --get-modes stream", "--get-modes needs --transport grpc or both"},
           {"--kvhubd-flags '--log_level=warn'", "--kvhubd-flags is for --spawn"},
           {"--redis-server /usr/bin/redis-server", "--redis-server with --no-redis"},
           {"--get-modes ,", "--get-modes names no mode"},
           // A second row of a kind was never compared with anything.
           {"--sizes 1MiB,1MiB", "--sizes names a size twice"},
           {"--get-modes inline,inline", "--get-modes names a mode twice"}}) {
    RunResult r = testing::RunCommand(
        absl::StrCat(testing::ProgramPath("kvhub-bench"), " --members 127.0.0.1:1 --no-redis ", args, " 2>&1"));
    EXPECT_EQ(r.exit_code, 2) << args << ": " << r.out;
    EXPECT_NE(r.out.find(want), std::string::npos) << args << ": " << r.out;
  }
}

// Against a cluster it did not start, the bench removes what it stored: its blocks
// used to stay and evict the users' data.
TEST(KvhubBenchTest, ABenchAgainstALiveShardLeavesNoBlocksBehind) {
  auto shard = testing::KvhubdProcess::Start({.flags = {"--capacity_bytes=64MiB", "--try_hugepages=false"}});
  ASSERT_TRUE(shard.ok()) << shard.status();
  RunResult r = RunBench(absl::StrCat("--addr ", (*shard)->grpc_address(),
                                      " --transport grpc --seconds 0.2 --sizes 64KiB --batches 4 --get-modes inline "
                                      "--put-paths inline --concurrency 2 --no-redis"));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  RunResult stats = testing::RunCommand(
      absl::StrCat(testing::ProgramPath("kvhub"), " stats --addr ", (*shard)->grpc_address(), " 2>&1"));
  ASSERT_EQ(stats.exit_code, 0) << stats.out;
  EXPECT_NE(stats.out.find(" blocks=0 "), std::string::npos) << stats.out;
  EXPECT_EQ((*shard)->Stop().value_or(-1), 0);
}

// Interrupted (Ctrl-C, SIGTERM from a job runner), the bench stops measuring,
// exits 130 and still removes its blocks from a cluster it did not start (they
// used to stay and evict the users' data).
TEST(KvhubBenchTest, AnInterruptedBenchStillRemovesItsBlocks) {
  auto shard = testing::KvhubdProcess::Start({.flags = {"--capacity_bytes=64MiB", "--try_hugepages=false"}});
  ASSERT_TRUE(shard.ok()) << shard.status();
  RunResult r = testing::RunCommand(absl::StrCat(
      testing::ProgramPath("kvhub-bench"), " --addr ", (*shard)->grpc_address(),
      " --transport grpc --seconds 30 --sizes 64KiB --batches 4 --get-modes inline --put-paths inline"
      " --concurrency 2 --no-redis 2>&1 & pid=$!; ",
      // Interrupted once it has stored blocks (a fixed 2 s raced a slow start).
      "for i in $(seq 300); do ", testing::ProgramPath("kvhub"), " stats --addr ", (*shard)->grpc_address(),
      " 2>/dev/null | grep -q ' blocks=[1-9]' && break; sleep 0.1; done; ",
      "kill -INT $pid; wait $pid; echo \"rc=$?\""));
  EXPECT_NE(r.out.find("rc=130"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("interrupted"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("removed its"), std::string::npos) << r.out;
  RunResult stats = testing::RunCommand(
      absl::StrCat(testing::ProgramPath("kvhub"), " stats --addr ", (*shard)->grpc_address(), " 2>&1"));
  ASSERT_EQ(stats.exit_code, 0) << stats.out;
  EXPECT_NE(stats.out.find(" blocks=0 "), std::string::npos) << stats.out;
  EXPECT_EQ((*shard)->Stop().value_or(-1), 0);
}

// A terminal's Ctrl-C signals the bench's whole process group: it stopped the
// redis-server child too, and the bench then failed to connect to it for the redis
// cells and exited 1 without its table. Now redis runs in a group of its own, no
// cell (redis's included) starts after an interrupt, and the bench exits 130 with
// the cells measured so far.
TEST(KvhubBenchTest, CtrlCToItsProcessGroupExits130WithTheTable) {
  const std::string err = absl::StrCat(::testing::TempDir(), "/kvhub_bench_sigint_", getpid(), ".err");
  RunResult r = testing::RunCommand(absl::StrCat(
      // setsid: the bench leads a process group, as a terminal's foreground job does.
      "setsid ", testing::ProgramPath("kvhub-bench"),
      " --spawn 1 --transport grpc --seconds 1 --sizes 64KiB --batches 4 --get-modes inline"
      " --put-paths inline,reserved --concurrency 2"
      " --kvhubd-flags '--capacity_bytes=256MiB --try_hugepages=false --log_level=warn' 2>",
      err, " & pid=$!; ",
      // Interrupted in its second cell, once the first printed its row.
      "for i in $(seq 600); do grep -q 'kvhub  *put' ", err, " && break; sleep 0.1; done; ",
      "kill -INT -$pid; wait $pid; echo \"rc=$?\"; cat ", err, "; rm -f ", err));
  EXPECT_NE(r.out.find("rc=130"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("interrupted; the table holds the cells measured so far"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("\nkvhub    put"), std::string::npos) << "no table row: " << r.out;
  EXPECT_EQ(r.out.find("redis connect"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace kvhub
