// Runs the `kvhub` CLI binary: `keys` against tests/vectors/block_keys.json,
// and put/get/lookup/rm/stats against a real kvhubd (when built).

#include <signal.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/u128.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "kvhub/v1/kvhub.grpc.pb.h"
#include "nlohmann/json.hpp"
#include "tests/testing/kvhubd_process.h"
#include "tests/testing/run_command.h"

namespace kvhub {
namespace {

std::string Env(const char* name, const char* fallback) {
  const char* v = std::getenv(name);
  return v != nullptr ? v : fallback;
}

using RunResult = testing::CommandResult;

// `redirect` says what `out` captures: by default stdout and stderr; kStdoutOnly drops
// stderr (logs, errors), so `out` is exactly what the CLI wrote to stdout.
constexpr char kStdoutAndStderr[] = " 2>&1";
constexpr char kStdoutOnly[] = " 2>/dev/null";
RunResult RunCli(const std::string& args, const char* redirect = kStdoutAndStderr) {
  return testing::RunCommand(absl::StrCat(testing::ProgramPath("kvhub"), " ", args, redirect));
}

class TempDir {
 public:
  TempDir() {
    char tmpl[] = "/tmp/kvhub_cli_test.XXXXXX";
    path_ = mkdtemp(tmpl);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  std::string File(const std::string& name, const std::string& contents) const {
    std::string p = path_ + "/" + name;
    std::ofstream(p, std::ios::binary) << contents;
    return p;
  }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

std::string SpecText(const nlohmann::json& s) {
  char rope[64];
  std::snprintf(rope, sizeof(rope), "%.17g", s["rope_base"].get<double>());
  return absl::StrCat("model=", s["model"].get<std::string>(), ",layers=", s["layers"].get<int>(),
                      ",kv_heads=", s["kv_heads"].get<int>(), ",head_dim=", s["head_dim"].get<int>(),
                      ",dtype=", s["dtype"].get<std::string>(), ",rope_base=", rope,
                      ",rope_pairing=", s["rope_pairing"].get<std::string>(),
                      ",tp_rank=", s["tp_rank"].get<int>(), ",tp_world=", s["tp_world"].get<int>(),
                      ",block_tokens=", s["block_tokens"].get<int>());
}

std::string Quote(const std::string& s) { return absl::StrCat("'", s, "'"); }

TEST(ClusterCliTest, KeysReproduceCommittedVectors) {
  std::ifstream f(Env("KVHUB_SOURCE_DIR", ".") + "/tests/vectors/block_keys.json");
  ASSERT_TRUE(f) << "tests/vectors/block_keys.json not found (set KVHUB_SOURCE_DIR)";
  nlohmann::json vectors = nlohmann::json::parse(f);
  TempDir dir;
  size_t checked = 0;
  for (const auto& c : vectors["cases"]) {
    const std::vector<int32_t> tokens = c["tokens"].get<std::vector<int32_t>>();
    const std::string tokens_file =
        dir.File(absl::StrCat("tokens", checked), absl::StrJoin(tokens, "\n"));
    RunResult r = RunCli(absl::StrCat("keys --ns ", Quote(c["namespace"].get<std::string>()),
                                   " --spec ", Quote(SpecText(c["spec"])), " --tokens-file ",
                                   tokens_file));
    ASSERT_EQ(r.exit_code, 0) << r.out;
    std::vector<std::string> blocks;
    std::string fingerprint, chunk;
    for (absl::string_view line : absl::StrSplit(r.out, '\n', absl::SkipEmpty())) {
      std::vector<std::string> w = absl::StrSplit(line, ' ');
      if (w[0] == "fingerprint") fingerprint = w[1];
      if (w[0] == "chunk") chunk = w[1];
      if (w[0] == "block") {
        ASSERT_EQ(w[1], absl::StrCat(blocks.size()));
        blocks.push_back(w[2]);
      }
    }
    // The spec's fingerprint, as listed in "specs".
    bool found = false;
    for (const auto& s : vectors["specs"]) {
      if (s["spec"] == c["spec"]) {
        EXPECT_EQ(fingerprint, s["fingerprint"].get<std::string>());
        found = true;
      }
    }
    EXPECT_TRUE(found);
    EXPECT_EQ(blocks, c["block_keys"].get<std::vector<std::string>>()) << "case " << checked;
    EXPECT_EQ(chunk, c["chunk_key"].get<std::string>()) << "case " << checked;
    ++checked;
  }
  EXPECT_GT(checked, 10u);
}

TEST(ClusterCliTest, KeysAcceptCommaSeparatedTokens) {
  RunResult r = RunCli(
      "keys --ns default --spec model=m,layers=1,kv_heads=1,head_dim=8,block_tokens=2 --tokens 1,2,3,4,5");
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("block 0 "), std::string::npos);
  EXPECT_NE(r.out.find("block 1 "), std::string::npos);
  EXPECT_EQ(r.out.find("block 2 "), std::string::npos) << "the partial tail got a key";
  // Commas with spaces, newlines and one trailing comma give the same keys...
  RunResult spaced = RunCli(
      "keys --ns default --spec model=m,layers=1,kv_heads=1,head_dim=8,block_tokens=2 --tokens '1, 2,\n3 4 ,5,'");
  ASSERT_EQ(spaced.exit_code, 0) << spaced.out;
  EXPECT_EQ(spaced.out, r.out);
  // ...but an empty field would drop an id and hash another prompt: refused.
  RunResult gap = RunCli(
      "keys --ns default --spec model=m,layers=1,kv_heads=1,head_dim=8,block_tokens=2 --tokens 1,2,,3,4,5");
  EXPECT_EQ(gap.exit_code, 2);  // a bad argument value: usage
  EXPECT_NE(gap.out.find("no token id before comma 3 (after 2 ids)"), std::string::npos) << gap.out;
}

TEST(ClusterCliTest, BadInputGivesClearErrorsAndNonZeroExit) {
  RunResult r = RunCli("");
  EXPECT_EQ(r.exit_code, 2);
  r = RunCli("--help", kStdoutOnly);  // asked for: on stdout, exit 0
  EXPECT_EQ(r.exit_code, 0);
  EXPECT_NE(r.out.find("usage: kvhub"), std::string::npos) << r.out;
  r = RunCli("frobnicate");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.out.find("unknown command"), std::string::npos) << r.out;
  // Bad argument values are usage errors (exit 2), as the header says (were exit 1).
  r = RunCli("keys --ns x --spec model=m,layers=0,kv_heads=1,head_dim=8 --tokens 1");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.out.find("--spec: model spec: layers"), std::string::npos) << r.out;
  r = RunCli("keys --ns x --spec model=m,layers=1,kv_heads=1,head_dim=8 --tokens 1,zz");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.out.find("zz"), std::string::npos) << r.out;
  r = RunCli("keys --ns 'a\tb' --spec model=m,layers=1,kv_heads=1,head_dim=8 --tokens 1");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.out.find("--ns: namespace holds a control byte"), std::string::npos) << r.out;
  r = RunCli("lookup --addr 127.0.0.1:1 --ns x --key 0g");
  EXPECT_EQ(r.exit_code, 2) << r.out;
  r = RunCli("lookup --addr 127.0.0.1:1 --ns x --spec model=m,layers=0,kv_heads=1,head_dim=8 --tokens 1");
  EXPECT_EQ(r.exit_code, 2) << r.out;
  EXPECT_NE(r.out.find("--spec: model spec: layers"), std::string::npos) << r.out;
  // A token file's content is input, not usage: exit 1; an endless one is refused.
  r = RunCli("keys --ns x --spec model=m,layers=1,kv_heads=1,head_dim=8 --tokens-file /dev/zero");
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_NE(r.out.find("at most 16 MiB"), std::string::npos) << r.out;
  r = RunCli("keys --spec model=m,layers=1,kv_heads=1,head_dim=8 --tokens 1");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.out.find("--ns"), std::string::npos) << r.out;
  r = RunCli("stats");
  EXPECT_EQ(r.exit_code, 2);
  // A flag without its value, last or before another flag: usage errors naming it (were
  // exit 1 "member list is empty", and `--ns --key K` took "--key" for the namespace).
  for (const char* args : {"stats --addr", "stats --members", "get --addr 127.0.0.1:1 --ns x --key 00 --out",
                           "get --addr 127.0.0.1:1 --ns --key 0123456789abcdef0123456789abcdef"}) {
    r = RunCli(args);
    EXPECT_EQ(r.exit_code, 2) << args << ": " << r.out;
    EXPECT_NE(r.out.find("needs a value"), std::string::npos) << args << ": " << r.out;
  }
  // A flag given twice kept its last value alone: `rm --key A --key B` deleted B and
  // exited 0. Now a usage error naming the flag, before anything runs.
  r = RunCli("rm --addr 127.0.0.1:1 --ns x --key 0123456789abcdef0123456789abcdef --key "
             "fedcba9876543210fedcba9876543210");
  EXPECT_EQ(r.exit_code, 2) << r.out;
  EXPECT_NE(r.out.find("--key given twice"), std::string::npos) << r.out;
  // `get` without --out would write a block's bytes to a terminal: refused, as curl does
  // (script(1) gives it a terminal for stdout).
  if (access("/usr/bin/script", X_OK) == 0) {
    r = testing::RunCommand(absl::StrCat("/usr/bin/script -qec '", testing::ProgramPath("kvhub"),
                                         " get --addr 127.0.0.1:1 --ns x --key 0123456789abcdef0123456789abcdef'",
                                         " /dev/null 2>&1"));
    EXPECT_EQ(r.exit_code, 2) << r.out;
    EXPECT_NE(r.out.find("stdout is a terminal"), std::string::npos) << r.out;
  }
  // --key with --spec/--tokens said "unknown flag --spec" (they were left unread).
  r = RunCli("lookup --addr 127.0.0.1:1 --ns x --key 0123456789abcdef0123456789abcdef "
             "--spec model=m,layers=1,kv_heads=1,head_dim=8 --tokens 1");
  EXPECT_EQ(r.exit_code, 2) << r.out;
  EXPECT_NE(r.out.find("--key and --spec are alternatives"), std::string::npos) << r.out;
  // Two readers of standard input: the first took it all (the block's bytes could
  // become the auth token).
  r = RunCli("put --addr 127.0.0.1:1 --ns x --key 0123456789abcdef0123456789abcdef --file - --token-file - "
             "< /dev/null");
  EXPECT_EQ(r.exit_code, 2) << r.out;
  EXPECT_NE(r.out.find("--file and --token-file both read standard input"), std::string::npos) << r.out;
  r = RunCli("stats --addr 127.0.0.1:1@2");  // a weight means nothing for one address
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.out.find("--addr takes one HOST:PORT"), std::string::npos) << r.out;
  r = RunCli("stats --members 127.0.0.1:1,");  // a trailing comma: a member left out?
  EXPECT_EQ(r.exit_code, 2);  // a malformed list is a usage error (was exit 1)
  EXPECT_NE(r.out.find("--members: "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("member 2 is empty"), std::string::npos) << r.out;
  for (const char* bad : {"stats --addr 127.0.0.1:99999", "stats --members A@0"}) {
    r = RunCli(bad);
    EXPECT_EQ(r.exit_code, 2) << bad << ": " << r.out;
  }
  // A switch takes true or false: `--pin=no` used to pin (every value but false/0 was true).
  r = RunCli("put --addr 127.0.0.1:1 --ns x --key 00112233445566778899aabbccddeeff --file /dev/null --pin=nope");
  EXPECT_EQ(r.exit_code, 2) << r.out;
  EXPECT_NE(r.out.find("--pin is a switch"), std::string::npos) << r.out;
  r = RunCli("stats --addr 127.0.0.1:1 --bogus 3");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.out.find("--bogus"), std::string::npos) << r.out;
  r = RunCli("stats --addr 127.0.0.1:1 --bogus");  // last, with no value: still unknown
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.out.find("unknown flag --bogus"), std::string::npos) << r.out;
  r = RunCli("stats --addr 127.0.0.1:1 --token-file /dev/null");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.out.find("holds no token"), std::string::npos) << r.out;
  // An empty security flag (an unset variable) is refused, not taken for "no TLS",
  // which would send the token in plaintext (was exit 0/1 over a plaintext channel).
  for (const char* flag : {"tls-ca", "tls-cert", "tls-key", "tls-server-name", "token-file"}) {
    r = RunCli(absl::StrCat("stats --addr 127.0.0.1:1 --deadline-ms 200 --", flag, " ''"));
    EXPECT_EQ(r.exit_code, 2) << flag << ": " << r.out;
    EXPECT_NE(r.out.find(absl::StrCat("--", flag, " is empty")), std::string::npos) << r.out;
  }
  // What the client refuses at creation is a bad flag value too: usage (was exit 1).
  for (const auto& [args, says] :
       {std::pair{"stats --members 127.0.0.1:1,127.0.0.1:1", "listed twice"},
        std::pair{"stats --addr 127.0.0.1:1 --tls-cert /dev/null", "tls"}}) {
    r = RunCli(args);
    EXPECT_EQ(r.exit_code, 2) << args << ": " << r.out;
    EXPECT_NE(r.out.find(says), std::string::npos) << args << ": " << r.out;
  }
  // An output path that cannot be written is refused before any transfer (the
  // shard at port 1 is never asked: a usage error, not UNAVAILABLE).
  for (const char* out : {"''", "/nonexistent-dir/x", "/tmp"}) {
    r = RunCli(absl::StrCat("get --ns x --key 00112233445566778899aabbccddeeff --addr 127.0.0.1:1 --out ", out));
    EXPECT_EQ(r.exit_code, 2) << out << ": " << r.out;
    EXPECT_EQ(r.out.find("UNAVAILABLE"), std::string::npos) << out << ": " << r.out;
  }
  {
    // An 8 GiB sparse file (or an endless stream) is refused without being read
    // into memory; before, a bad_alloc abort or an OOM.
    const std::string sparse = absl::StrCat(::testing::TempDir(), "/kvhub_cli_sparse_", getpid());
    ASSERT_EQ(testing::RunCommand(absl::StrCat("truncate -s 8G ", sparse)).exit_code, 0);
    r = RunCli(absl::StrCat("put --ns x --key 00112233445566778899aabbccddeeff --file ", sparse, " --addr 127.0.0.1:1"));
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_NE(r.out.find("blocks must be 1 byte .. 256 MiB"), std::string::npos) << r.out;
    std::remove(sparse.c_str());
    r = testing::RunCommand(absl::StrCat(testing::ProgramPath("kvhub"),
                                         " put --ns x --key 00112233445566778899aabbccddeeff --file - "
                                         "--addr 127.0.0.1:1 < /dev/zero 2>&1"));
    EXPECT_EQ(r.exit_code, 1);
    EXPECT_NE(r.out.find("standard input is larger than"), std::string::npos) << r.out;
  }
  r = RunCli("get --ns x --key nothex --addr 127.0.0.1:1");
  EXPECT_EQ(r.exit_code, 2);
  r = RunCli("put --ns x --key 00112233445566778899aabbccddeeff --file /tmp --addr 127.0.0.1:1");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.out.find("'/tmp': it is a directory"), std::string::npos) << r.out;
  // Nothing listens on port 1: a clear UNAVAILABLE, not a hang.
  r = RunCli("stats --addr 127.0.0.1:1 --deadline-ms 500");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.out.find("127.0.0.1:1"), std::string::npos) << r.out;
}

TEST(ClusterCliTest, OutputLostToAFullDiskFails) {
  if (access("/dev/full", W_OK) != 0) GTEST_SKIP() << "no /dev/full on this machine";
  // stderr (the reason) to the pipe, stdout to /dev/full.
  RunResult r = RunCli("keys --ns x --spec model=m,layers=1,kv_heads=1,head_dim=8,block_tokens=2 --tokens 1,2,3,4",
                       " 2>&1 >/dev/full");
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.out.find("writing standard output failed"), std::string::npos) << r.out;
  // With its cause, said once (was: the cause lost, and the failure reported twice).
  EXPECT_NE(r.out.find("No space left on device"), std::string::npos) << r.out;
  EXPECT_EQ(r.out.find("writing standard output failed"), r.out.rfind("writing standard output failed")) << r.out;
  // kvhubd's printed config too (before: exit 0 and an empty file).
  r = testing::RunCommand(absl::StrCat(testing::ProgramPath("kvhubd"), " --print_config 2>&1 >/dev/full"));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.out.find("writing standard output failed"), std::string::npos) << r.out;
}

TEST(ClusterCliTest, PutGetLookupRmStatsAgainstRealKvhubd) {
  auto proc = testing::KvhubdProcess::Start({.flags = {"--capacity_bytes=64MiB", "--try_hugepages=false"}, .node_id = "cli-node"});
  ASSERT_TRUE(proc.ok()) << proc.status();
  const std::string addr = absl::StrCat(" --addr ", (*proc)->grpc_address());
  TempDir dir;
  std::string payload(300000, '\0');
  for (size_t i = 0; i < payload.size(); ++i) payload[i] = static_cast<char>(i * 31 + 7);
  const std::string in = dir.File("in.bin", payload);
  const std::string key = "00112233445566778899aabbccddeeff";
  const std::string key2 = "ffeeddccbbaa99887766554433221100";

  RunResult r = RunCli(absl::StrCat("lookup --ns cli --key ", key, ",", key2, addr));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find(key + " absent"), std::string::npos) << r.out;

  r = RunCli(absl::StrCat("put --ns cli --key ", key, " --file ", in, addr));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("stored " + key + " 300000 bytes"), std::string::npos) << r.out;
  r = RunCli(absl::StrCat("put --ns cli --key ", key, " --file ", in, addr));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("exists"), std::string::npos) << r.out;
  r = RunCli(absl::StrCat("put --ns cli --key ", key, " --file ", in, " --pin=no", addr));  // pinned before
  ASSERT_EQ(r.exit_code, 0) << r.out;
  r = RunCli(absl::StrCat("stats", addr));
  EXPECT_NE(r.out.find("pinned_blocks=0"), std::string::npos) << r.out;
  // --pin on a block already stored pins it (before: "unchanged", and not pinned).
  r = RunCli(absl::StrCat("put --ns cli --key ", key, " --file ", in, " --pin", addr));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("now pinned"), std::string::npos) << r.out;
  r = RunCli(absl::StrCat("stats", addr));
  EXPECT_NE(r.out.find("pinned_blocks=1"), std::string::npos) << r.out;

  // A block another publisher is storing (reserved, not committed) is not stored:
  // the put says so and fails (before: "exists ... already stored", exit 0).
  {
    const std::string key3 = "0123456789abcdef0123456789abcdef";
    auto stub = v1::KvHub::NewStub(grpc::CreateChannel((*proc)->grpc_address(), grpc::InsecureChannelCredentials()));
    grpc::ClientContext cc;
    v1::PutStartRequest start;
    start.set_namespace_("cli");
    v1::PutItem* item = start.add_items();
    std::string raw(16, '\0');
    U128::FromHex(key3)->ToBytes(reinterpret_cast<uint8_t*>(raw.data()));
    item->set_key(raw);
    item->set_size(payload.size());
    v1::PutStartResponse reserved;
    ASSERT_TRUE(stub->PutStart(&cc, start, &reserved).ok());
    ASSERT_EQ(reserved.items_size(), 1);
    ASSERT_EQ(reserved.items(0).status().code(), 0);
    r = RunCli(absl::StrCat("put --ns cli --key ", key3, " --file ", in, addr));
    EXPECT_EQ(r.exit_code, 1) << r.out;
    EXPECT_NE(r.out.find("another publisher is storing block " + key3), std::string::npos) << r.out;
    EXPECT_EQ(r.out.find("exists"), std::string::npos) << r.out;
  }

  r = RunCli(absl::StrCat("lookup --ns cli --key ", key, ",", key2, addr));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find(key + " present"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find(key2 + " absent"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("prefix_hits 1 of 2"), std::string::npos) << r.out;

  const std::string out = dir.path() + "/out.bin";
  r = RunCli(absl::StrCat("get --ns cli --key ", key, " --out ", out, addr));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  std::ifstream got_f(out, std::ios::binary);
  std::string got((std::istreambuf_iterator<char>(got_f)), std::istreambuf_iterator<char>());
  EXPECT_EQ(got, payload);

  // To stdout: the block's bytes and nothing else (the client's logs go to stderr).
  r = RunCli(absl::StrCat("get --ns cli --key ", key, " --out -", addr), kStdoutOnly);
  ASSERT_EQ(r.exit_code, 0);
  EXPECT_TRUE(r.out == payload) << "stdout holds " << r.out.size() << " bytes, starting '"
                                << r.out.substr(0, 80) << "'";

  r = RunCli(absl::StrCat("get --ns cli --key ", key, " --max-bytes 1000 --out ", out, addr));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.out.find("300000"), std::string::npos) << r.out;
  r = RunCli(absl::StrCat("get --ns cli --key ", key, " --max-bytes 1MiB --out ", out, addr));
  EXPECT_EQ(r.exit_code, 0) << r.out;

  // A reader that stops early: DATA_LOSS and exit 1, not a kill by SIGPIPE (141).
  const std::string rc_file = dir.path() + "/rc";
  r = testing::RunCommand(absl::StrCat("(", testing::ProgramPath("kvhub"), " get --ns cli --key ", key, " --out -", addr,
                                       " 2>/dev/null; echo $? > ", rc_file, ") | head -c 10 >/dev/null; cat ", rc_file));
  EXPECT_EQ(r.out, "1\n");

  r = RunCli(absl::StrCat("get --ns other --key ", key, " --out ", out, addr));
  EXPECT_EQ(r.exit_code, 1);
  EXPECT_NE(r.out.find("NOT_FOUND"), std::string::npos) << r.out;

  r = RunCli(absl::StrCat("stats", addr));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("node=cli-node"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("tier host"), std::string::npos) << r.out;

  r = RunCli(absl::StrCat("rm --ns cli --key ", key, ",", key2, addr));
  EXPECT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find(key + " deleted"), std::string::npos) << r.out;
  r = RunCli(absl::StrCat("lookup --ns cli --key ", key, addr));
  EXPECT_NE(r.out.find(key + " absent"), std::string::npos) << r.out;
  // A key whose shard does not answer is not reported absent.
  r = RunCli(absl::StrCat("lookup --ns cli --key ", key, " --deadline-ms 500 --addr 127.0.0.1:9"));
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_NE(r.out.find(key + " unknown (its shard's lookup failed)"), std::string::npos) << r.out;

  // Token-level lookup through --members with the spec.
  r = RunCli(absl::StrCat("lookup --ns cli --spec model=m,layers=1,kv_heads=1,head_dim=8,block_tokens=2 "
                       "--tokens 1,2,3,4 --members ", (*proc)->grpc_address()));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("prefix_hits 0 of 2"), std::string::npos) << r.out;
  // The same, the tokens read from standard input.
  r = testing::RunCommand(absl::StrCat("echo 1,2,3,4 | ", testing::ProgramPath("kvhub"),
                                       " lookup --ns cli --spec model=m,layers=1,kv_heads=1,head_dim=8,block_tokens=2"
                                       " --tokens-file -", addr, " 2>&1"));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("prefix_hits 0 of 2"), std::string::npos) << r.out;
  // Both Lookups were token-weighted (2 blocks of 2 tokens each): stats show the token hit rate.
  r = RunCli(absl::StrCat("stats", addr));
  ASSERT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("  token_hit_rate 0.0% (0 of 8 tokens)"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("cluster token_hit_rate 0.0% (0 of 8 tokens)"), std::string::npos) << r.out;
  EXPECT_EQ((*proc)->Stop().value_or(-1), 0);
}

// A kvhubd holding one block of `bytes` under kBlockKey in namespace "cli", stored
// with the CLI; `addr` is " --addr HOST:PORT" for the CLI's command lines.
constexpr char kBlockKey[] = "00112233445566778899aabbccddeeff";
struct ShardWithABlock {
  std::unique_ptr<testing::KvhubdProcess> proc;
  std::string addr;
};
ShardWithABlock StartShardWithABlock(size_t bytes, const std::string& extra_flag = "--log_level=info") {
  ShardWithABlock out;
  auto proc = testing::KvhubdProcess::Start({.flags = {"--capacity_bytes=64MiB", "--try_hugepages=false", extra_flag}});
  EXPECT_TRUE(proc.ok()) << proc.status();
  if (!proc.ok()) return out;
  out.proc = *std::move(proc);
  out.addr = absl::StrCat(" --addr ", out.proc->grpc_address());
  TempDir dir;
  const std::string in = dir.File("in.bin", std::string(bytes, 'k'));
  RunResult r = RunCli(absl::StrCat("put --ns cli --key ", kBlockKey, " --file ", in, out.addr));
  EXPECT_EQ(r.exit_code, 0) << extra_flag << ": " << r.out;
  return out;
}

// Short-lived clients side by side, as CLI calls or restarting engines are: each
// connects over UCX (tcp here, where auto mode then keeps gRPC), fetches once and
// exits. Their endpoints used to be force-closed while the shard's reply to their
// UCX wireup was still queued; UCX 1.13 then aborted the shard (an assertion in
// ucp_request_send_state_ff) within a few hundred such calls.
TEST(ClusterCliTest, ShortLivedClientsSideBySideLeaveTheShardServing) {
  ShardWithABlock shard = StartShardWithABlock(100000);
  ASSERT_NE(shard.proc, nullptr);
  const std::string get =
      absl::StrCat(testing::ProgramPath("kvhub"), " get --transport ucx --ns cli --key ", kBlockKey, " --out /dev/null", shard.addr);
  const std::string loop = absl::StrCat("for i in $(seq 400); do ", get, " >/dev/null 2>&1 || { echo failed at $i; exit 1; }; done");
  testing::CommandResult r = testing::RunCommand(absl::StrCat("(", loop, ") & a=$!; (", loop, ") & b=$!; wait $a; ra=$?; wait $b; [ $ra = 0 ] && [ $? = 0 ]"));
  EXPECT_EQ(r.exit_code, 0) << r.out;
  ASSERT_TRUE(shard.proc->running());
  RunResult last = RunCli(absl::StrCat("get --ns cli --key ", kBlockKey, " --out /dev/null", shard.addr));
  EXPECT_EQ(last.exit_code, 0) << last.out;
  EXPECT_EQ(shard.proc->Stop().value_or(-1), 0) << "the shard did not survive its clients";
}

// A shard that is slow to answer a new connection (paused, busy, far away) gets
// the call's whole deadline, not 100 ms: before, a 0.3 s pause failed the call
// with "connection attempt timed out before receiving SETTINGS frame".
TEST(ClusterCliTest, AShardSlowToAnswerANewConnectionGetsTheWholeDeadline) {
  ShardWithABlock shard = StartShardWithABlock(4096);
  ASSERT_NE(shard.proc, nullptr);
  ASSERT_TRUE(shard.proc->Signal(SIGSTOP).ok());
  const std::string get = absl::StrCat(testing::ProgramPath("kvhub"), " get --ns cli --key ", kBlockKey,
                                       " --out /dev/null --deadline-ms 5000", shard.addr, " 2>&1");
  // The CLI starts while the shard is stopped; the shard resumes 0.8 s later.
  testing::CommandResult r = testing::RunCommand(
      absl::StrCat("(", get, ") & c=$!; sleep 0.8; kill -CONT ", shard.proc->pid(), "; wait $c"));
  (void)shard.proc->Signal(SIGCONT);
  EXPECT_EQ(r.exit_code, 0) << r.out;
  EXPECT_EQ(shard.proc->Stop().value_or(-1), 0);
}

// A shard run without UCX, or with shared memory only (which the CLI's client, wanting
// peer failure detection, cannot use): gRPC by design, and no warning on every call.
TEST(ClusterCliTest, ShardsWithoutAUsableUcxServeTheCliWithoutWarnings) {
  for (const char* flag : {"--ucx_enabled=false", "--ucx_tls=posix,cma"}) {
    ShardWithABlock shard = StartShardWithABlock(4096, flag);
    ASSERT_NE(shard.proc, nullptr);
    RunResult r = RunCli(absl::StrCat("get --ns cli --key ", kBlockKey, " --out /dev/null", shard.addr));
    EXPECT_EQ(r.exit_code, 0) << flag << ": " << r.out;
    EXPECT_EQ(r.out.find("warning"), std::string::npos) << flag << ": " << r.out;
    EXPECT_EQ(shard.proc->Stop().value_or(-1), 0);
  }
}

}  // namespace
}  // namespace kvhub
