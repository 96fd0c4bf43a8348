// kvhub-replay as a user runs it: exit codes and messages for inputs and clusters
// it cannot use, and JSON that is all of the file it names.

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "client/client.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "tests/testing/kvhubd_process.h"
#include "tests/testing/run_command.h"

namespace kvhub {
namespace {

using RunResult = testing::CommandResult;

// `out` holds kvhub-replay's stdout and stderr.
RunResult RunReplay(const std::string& args) {
  return testing::RunCommand(absl::StrCat(testing::ProgramPath("kvhub-replay"), " ", args, " 2>&1"));
}

class ReplayCliTest : public ::testing::Test {
 protected:
  void SetUp() override {
    trace_ = absl::StrCat(::testing::TempDir(), "/replay_cli_", getpid(), ".jsonl");
    std::ofstream(trace_) << "{\"timestamp\": 0, \"input_length\": 1024, \"output_length\": 1, \"hash_ids\": [1, 2]}\n"
                             "{\"timestamp\": 5, \"input_length\": 1536, \"output_length\": 1, \"hash_ids\": [1, 2, 3]}\n";
  }
  void TearDown() override { std::remove(trace_.c_str()); }
  std::string trace_;
};

TEST_F(ReplayCliTest, SimWritesItsJson) {
  const std::string json = trace_ + ".json";
  RunResult r = RunReplay(absl::StrCat("--trace ", trace_, " --sim --capacities 1K --policies lru --json ", json));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  std::ifstream in(json);
  std::stringstream ss;
  ss << in.rdbuf();
  nlohmann::json j = nlohmann::json::parse(ss.str(), nullptr, /*allow_exceptions=*/false);
  EXPECT_FALSE(j.is_discarded()) << ss.str();
  std::remove(json.c_str());
}

// A byte budget is given in bf16 tokens of the spec or in bytes; 3145728 tokens of
// 131072 B are 384 GiB, so both columns are the same cache.
TEST_F(ReplayCliTest, ByteBudgetsInTokensAndInBytesAgree) {
  const std::string json = trace_ + ".budget.json";
  RunResult r = RunReplay(absl::StrCat("--trace ", trace_, " --sim --byte_budget 3145728,384GiB --codecs kivi4,fp8",
                                       " --policies lru --no_belady --json ", json));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  std::ifstream in(json);
  nlohmann::json j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  ASSERT_FALSE(j.is_discarded());
  std::vector<nlohmann::json> cols;
  for (const nlohmann::json& rec : j["results"]) {
    if (rec.value("policy", "") == "lru") cols.push_back(rec);
  }
  ASSERT_EQ(cols.size(), 4u) << j.dump();
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_EQ(cols[i]["budget_bytes"], 412316860416ull) << cols[i].dump();
    EXPECT_EQ(cols[i + 2]["budget_bytes"], 412316860416ull) << cols[i + 2].dump();
    EXPECT_EQ(cols[i]["capacity_tokens"], cols[i + 2]["capacity_tokens"]);
    EXPECT_EQ(cols[i]["hit_rate"], cols[i + 2]["hit_rate"]);
  }
  std::remove(json.c_str());
}

// Against a cluster it did not start, --shard_capacity is the simulation's cache: a
// shard of another size is refused before the run (it printed "live - sim = -4.5 pp"
// for 64 MiB shards replayed as 4 GiB, exit 0); the right size runs.
TEST_F(ReplayCliTest, AShardCapacityThatIsNotTheShardsIsRefused) {
  auto shard = testing::KvhubdProcess::Start({.flags = {"--capacity_bytes=64MiB", "--try_hugepages=false"}});
  ASSERT_TRUE(shard.ok()) << shard.status();
  const std::string base = absl::StrCat("--trace ", trace_, " --live --members ", (*shard)->grpc_address(),
                                        " --bytes_per_token 64 --speedup 0");
  RunResult r = RunReplay(base + " --shard_capacity 4GiB");
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_NE(r.out.find("holds 67108864 bytes, --shard_capacity says 4294967296"), std::string::npos) << r.out;
  r = RunReplay(base + " --shard_capacity 64MiB");
  EXPECT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("live - sim = +0.00 pp"), std::string::npos) << r.out;
  EXPECT_EQ((*shard)->Stop().value_or(-1), 0);
}

// Ctrl-C (SIGINT) during a live run against a cluster it did not start: the replay
// stops before its next request, reports the requests it replayed, removes its
// blocks and then ends by the signal (it used to die of it at once and leave the
// blocks on the cluster).
TEST_F(ReplayCliTest, ASignalStopsALiveRunWhichReportsAndRemovesItsBlocks) {
  auto shard = testing::KvhubdProcess::Start({.flags = {"--capacity_bytes=64MiB", "--try_hugepages=false"}});
  ASSERT_TRUE(shard.ok()) << shard.status();
  ClientConfig cc;
  cc.members = {{(*shard)->grpc_address(), 1.0}};
  absl::StatusOr<std::unique_ptr<Client>> client = Client::Create(cc);
  ASSERT_TRUE(client.ok()) << client.status();
  const auto shard_blocks = [&]() -> int64_t {
    std::vector<MemberStats> st = (*client)->Stats();
    return st.size() == 1 && st[0].stats.ok() && st[0].stats->tiers_size() > 0
               ? static_cast<int64_t>(st[0].stats->tiers(0).blocks())
               : -1;
  };

  // The third request is due 1000 s after the first: the run waits there.
  const std::string paced = trace_ + ".paced";
  std::ofstream(paced) << "{\"timestamp\": 0, \"input_length\": 1024, \"output_length\": 1, \"hash_ids\": [1, 2]}\n"
                          "{\"timestamp\": 5, \"input_length\": 1536, \"output_length\": 1, \"hash_ids\": [1, 2, 3]}\n"
                          "{\"timestamp\": 1000000, \"input_length\": 2048, \"output_length\": 1, "
                          "\"hash_ids\": [1, 2, 3, 4]}\n";
  const std::string log = trace_ + ".log", json = trace_ + ".signal.json";
  std::vector<std::string> args = {testing::ProgramPath("kvhub-replay"), "--trace", paced, "--live", "--members",
                                   (*shard)->grpc_address(), "--bytes_per_token", "64", "--speedup", "1",
                                   "--shard_capacity", "64MiB", "--json", json};
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) _exit(127);
    dup2(fd, STDOUT_FILENO);
    dup2(fd, STDERR_FILENO);
    execv(argv[0], argv.data());
    _exit(127);
  }
  // The first two requests stored blocks 1, 2 and 3.
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (shard_blocks() != 3 && absl::Now() < deadline) absl::SleepFor(absl::Milliseconds(20));
  ASSERT_EQ(shard_blocks(), 3);
  ASSERT_EQ(kill(pid, SIGINT), 0);
  absl::StatusOr<int> status = testing::WaitChildUntil(pid, absl::Now() + absl::Seconds(60));
  ASSERT_TRUE(status.ok()) << status.status();
  std::ifstream in(log);
  std::stringstream out;
  out << in.rdbuf();
  ASSERT_TRUE(WIFSIGNALED(*status)) << "exit status " << WEXITSTATUS(*status) << "\n" << out.str();
  EXPECT_EQ(WTERMSIG(*status), SIGINT) << out.str();
  EXPECT_NE(out.str().find("INTERRUPTED (signal) after 2 of 3 requests"), std::string::npos) << out.str();
  EXPECT_NE(out.str().find("removed its 3 blocks"), std::string::npos) << out.str();
  EXPECT_NE(out.str().find("live - sim = +0.00 pp"), std::string::npos) << out.str();
  EXPECT_EQ(shard_blocks(), 0);
  std::ifstream jin(json);
  nlohmann::json j = nlohmann::json::parse(jin, nullptr, /*allow_exceptions=*/false);
  ASSERT_FALSE(j.is_discarded());
  EXPECT_EQ(j["interrupted"], true);
  EXPECT_EQ(j["requests"], 2);
  for (const std::string& f : {paced, log, json}) std::remove(f.c_str());
  EXPECT_EQ((*shard)->Stop().value_or(-1), 0);
}

TEST_F(ReplayCliTest, UnusableInputsAndClustersFailWithTheReason) {
  RunResult r = RunReplay(absl::StrCat("--trace ", ::testing::TempDir(), " --sim"));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.out.find("directory"), std::string::npos) << r.out;

  const std::string empty = trace_ + ".empty";
  std::ofstream(empty).flush();
  r = RunReplay(absl::StrCat("--trace ", empty, " --sim"));
  EXPECT_NE(r.exit_code, 0);
  EXPECT_NE(r.out.find("no requests"), std::string::npos) << r.out;
  std::remove(empty.c_str());

  // Nothing listens on port 1.
  r = RunReplay(absl::StrCat("--trace ", trace_, " --live --members 127.0.0.1:1"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.out.find("do not answer: 127.0.0.1:1"), std::string::npos) << r.out;

  if (access("/dev/full", W_OK) == 0) {
    r = RunReplay(absl::StrCat("--trace ", trace_, " --sim --capacities 1K --policies lru --json /dev/full"));
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_NE(r.out.find("No space left on device"), std::string::npos) << r.out;
    // JSON on a stdout that fails: said once, with its cause (a second, cause-less
    // report followed from the exit path).
    r = testing::RunCommand(absl::StrCat(testing::ProgramPath("kvhub-replay"), " --trace ", trace_,
                                         " --sim --capacities 1K --policies lru --json - 2>&1 >/dev/full"));
    EXPECT_EQ(r.exit_code, 1) << r.out;
    EXPECT_NE(r.out.find("No space left on device"), std::string::npos) << r.out;
    EXPECT_EQ(r.out.find("writing standard output failed"), r.out.rfind("writing standard output failed")) << r.out;
  }
}

// A mistyped flag used to be ignored, so a run of minutes went with the wrong
// settings and exit 0; `--no_belady=false` turned the flag on.
TEST_F(ReplayCliTest, FlagsAreCheckedBeforeAnythingRuns) {
  const std::string t = absl::StrCat("--trace ", trace_);
  for (const auto& [args, want] : std::vector<std::pair<std::string, std::string>>{
           {" --sim --capacity 1M", "unknown flag --capacity"},
           {" --sim --polices lru", "unknown flag --polices"},
           {" --sim --sim", "--sim given twice"},
           {" --sim=maybe", "bad boolean"},
           {"", "nothing to do"},
           {" --sim=0", "nothing to do"},
           {" --sim --capacities 1e30", "bad capacity"},
           {" --sim --capacities nan", "bad capacity"},
           {" --sim --capacities ,", "names no capacity"},
           // Under one token 0.5 truncated to 0, which meant "inf": the column was
           // dropped without a word. Only the word inf is the infinite cache now.
           {" --sim --capacities 0.5,1M", "--capacities: capacity \"0.5\" is less than one token"},
           {" --sim --capacities 100,1M", "capacity \"100\" is 100 tokens, less than one block of 512"},
           {" --sim --byte_budget 0.5 --codecs raw", "--byte_budget: capacity \"0.5\" is less than one token"},
           {" --sim --live --members 127.0.0.1:1 --json x.json", "would keep only one report"},
           // Live settings refused before any shard starts (before: after the whole run).
           {" --live --spawn 1 --shard_capacity 64KiB", "--shard_capacity"},
           {" --live --spawn 1 --speedup -1", "--speedup"},
           {" --live --spawn 1 --ns ''", "--ns"},
           // Two sources of one thing: one used to win silently.
           {" --generate agentic --sim", "not both"},
           {" --seed 3 --sim", "--seed applies to --generate only"},
           {" --live --spawn 1 --members 127.0.0.1:1", "not both"},
           // Policy lists are checked whole before the first simulation.
           {" --sim --policies lru,bogus", "unknown policy \"bogus\""},
           {" --sim --policies lru:ghost=5", "lru takes no parameters"},
           {" --sim --policies duel,duel", "listed twice"},
           {" --sim --policies belady", "not an online policy"},
           {" --sim --max_requests 0", "--max_requests must be"},
           {" --sim --high_watermark 0.9", "--high_watermark models a kvhubd tier"},
           {" --sim --json /nonexistent-dir/r.json", "--json: cannot write /nonexistent-dir/r.json"},
           // Accepted or dropped without a word before (session 23).
           {" --sim --capacities 1K --budget_accounting bogus", "--budget_accounting is encoded or store"},
           {" --sim --capacities 1K --budget_accounting store", "applies to --byte_budget only"},
           {" --sim --capacities 1K --byte_budget 1K", "not both"},
           {" --live --spawn 1 --shard_capacity 17179869185GiB", "overflows 64 bits"},
           // Flags of the other mode, once ignored (session 25).
           {" --sim --capacities 1K --codecs kivi4", "--codecs applies to --byte_budget only"},
           {" --sim --policy lru", "--policy applies to --live only (--sim takes --policies)"},
           {" --sim --capacities 1K --bytes_per_token 8", "--bytes_per_token applies to --live only"},
           {" --live --spawn 1 --capacities 1M", "--capacities applies to --sim only"},
           // 2^47 + 1000 tokens x 131072 bytes wrapped to 131 MB and ran (session 25).
           {" --sim --byte_budget 140737488356328 --codecs raw", "exceeds 2^62 bytes"},
           {" --sim --byte_budget 8TiB,8388608TiB --codecs raw", "exceeds 2^62 bytes"},
           {" --sim --byte_budget 1KB --codecs raw", "bad size \"1KB\""},
           {" --sim --byte_budget inf --codecs raw", "no infinite budget"},
           // Before the trace is written or a shard starts.
           {" --live --spawn 1 --kvhubd /bin/false --speedup 1e-9", "paces the trace"},
           // A shard that fails to start: its exit code, not a raw wait status (was "status 256").
           {" --live --spawn 1 --kvhubd /bin/false", "exited before it was ready (exit code 1;"},
           // Accepted and unused before session 27.
           {" --write_trace /tmp/never.jsonl --json /tmp/never.json", "--json applies to --sim or --live only"},
           {" --write_trace /tmp/never.jsonl --partial_tail bogus", "--partial_tail applies to --sim or --live"},
           {" --live --members 127.0.0.1:1 --kvhubd /bin/true", "--kvhubd applies to shards --spawn starts only"},
           {" --live --members 127.0.0.1:1 --high_watermark 0.9", "needs --shard_capacity too"}}) {
    RunResult r = RunReplay(t + args);
    EXPECT_NE(r.exit_code, 0) << args;
    EXPECT_NE(r.out.find(want), std::string::npos) << args << ": " << r.out;
  }
  // A flag of the wrong mode is refused before the trace is written.
  {
    const std::string out = absl::StrCat(::testing::TempDir(), "/replay_cli_never_", getpid(), ".jsonl");
    RunResult w = RunReplay(absl::StrCat(t, " --write_trace ", out, " --capacities 1M"));
    EXPECT_EQ(w.exit_code, 2) << w.out;
    EXPECT_NE(w.out.find("--capacities applies to --sim only"), std::string::npos) << w.out;
    EXPECT_NE(access(out.c_str(), F_OK), 0) << "the trace was written before the flags were checked";
    std::remove(out.c_str());
  }
  // With the JSON on stdout the table goes to stderr: stdout parses (it held both).
  {
    RunResult j = testing::RunCommand(absl::StrCat(testing::ProgramPath("kvhub-replay"), " ", t,
                                                   " --sim --capacities 1K --policies lru --no_belady --json - 2>/dev/null"));
    EXPECT_EQ(j.exit_code, 0) << j.out;
    EXPECT_TRUE(nlohmann::json::accept(j.out)) << j.out;
  }
  // A generated trace with no request is refused (was a table of 0.00% and exit 0).
  RunResult none = RunReplay("--generate agentic --duration_s 0.01 --sim --capacities 1K");
  EXPECT_NE(none.exit_code, 0) << none.out;
  EXPECT_NE(none.out.find("made no requests"), std::string::npos) << none.out;
  // A generated trace too large to hold (6e9 requests) is refused up front (was bad_alloc).
  RunResult big = RunReplay("--generate agentic --rate 10000 --duration_s 604800 --sim");
  EXPECT_EQ(big.exit_code, 2) << big.out;
  EXPECT_NE(big.out.find("at most 2e+06"), std::string::npos) << big.out;
  // --max_requests cuts the trace for --sim too (it used to apply to --live only).
  RunResult r = RunReplay(t + " --sim --max_requests 1 --capacities 1K --policies lru --no_belady");
  EXPECT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("trace: 1 requests"), std::string::npos) << r.out;
  r = RunReplay(t + " --sim --capacities 1K --policies lru --no_belady=false");
  EXPECT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("belady"), std::string::npos) << r.out;
  // A capacity far beyond the trace is simulated at the trace's size (before:
  // ~20M slots allocated per policy for 10G tokens).
  r = RunReplay(t + " --sim --capacities 100G --policies lru,duel --no_belady --json /dev/stdout");
  EXPECT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("\"capacity_blocks\": 195312500"), std::string::npos) << r.out;
  // --capacities inf printed a header and no row (the rate was in --json only).
  r = RunReplay(t + " --sim --capacities inf --no_belady");
  EXPECT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("\ninfinite "), std::string::npos) << r.out;
}

}  // namespace
}  // namespace kvhub
