#pragma once
// KvhubdProcess: starts a real `kvhubd` child process for tests and scripts.
//
//   auto proc = kvhub::testing::KvhubdProcess::Start({.flags = {"--capacity_bytes=64MiB"}});
//   ASSERT_TRUE(proc.ok()) << proc.status();
//   auto channel = grpc::CreateChannel((*proc)->grpc_address(), grpc::InsecureChannelCredentials());
//   ...
//   EXPECT_EQ((*proc)->Stop().value_or(-1), 0);   // SIGTERM, drain, exit code 0
//
// The child is started with --grpc_address=127.0.0.1:0 and --http_address=127.0.0.1:0
// (ephemeral ports; pass your own --grpc_address/--http_address in `flags` to override)
// and --node_id=<options.node_id> when given. Start() reads the child's stdout until it
// prints the line `kvhubd ready grpc=HOST:PORT http=HOST:PORT node=ID` and parses the
// addresses from it; it fails (and kills the child) when the child exits first or the
// line does not come within `ready_timeout`.
//
// The binary is `options.binary` when set, else $KVHUB_BIN_DIR/kvhubd (ctest sets
// KVHUB_BIN_DIR), else "kvhubd" next to the running test's directory (../bin/kvhubd).
// The child inherits stderr (its logs show up in the test output) and gets
// PR_SET_PDEATHSIG=SIGKILL, so it dies with the test process even when the test crashes.
// The kernel sends that signal when the *thread* that called Start() exits: start
// children from a thread that outlives them (the main thread, or one joined after).
//
// Ownership: the object owns the child. Its destructor kills (SIGKILL) and reaps a child
// that is still running. Thread safety: none; use one object from one thread.

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace kvhub::testing {

struct KvhubdProcessOptions {
  std::string binary;              // empty: $KVHUB_BIN_DIR/kvhubd
  std::vector<std::string> flags;  // extra command-line flags, appended after the defaults
  std::string node_id;             // empty: let kvhubd choose
  uint64_t max_open_files = 0;     // > 0: the child's descriptor limit (soft and hard)
  absl::Duration ready_timeout = absl::Seconds(30);
};

class KvhubdProcess {
 public:
  // Starts the child and waits for its ready line. On failure the child is gone.
  static absl::StatusOr<std::unique_ptr<KvhubdProcess>> Start(KvhubdProcessOptions options = {});

  ~KvhubdProcess();
  KvhubdProcess(const KvhubdProcess&) = delete;
  KvhubdProcess& operator=(const KvhubdProcess&) = delete;

  // "127.0.0.1:PORT" of the gRPC listener, as printed by the ready line.
  const std::string& grpc_address() const { return grpc_address_; }
  // "127.0.0.1:PORT" of the HTTP metrics listener.
  const std::string& http_address() const { return http_address_; }
  const std::string& node_id() const { return node_id_; }
  int grpc_port() const { return grpc_port_; }
  int http_port() const { return http_port_; }
  pid_t pid() const { return pid_; }
  // True while the child process is alive: false once it has exited (crashed,
  // say), even before Stop()/Kill()/Wait() reaps it. Never reaps it itself.
  bool running() const;

  // Sends SIGTERM and waits up to `timeout` for the child to exit (graceful drain).
  // Returns its exit code (128+signal if killed by a signal). If it has not exited in
  // time, it is killed with SIGKILL and DEADLINE_EXCEEDED is returned.
  absl::StatusOr<int> Stop(absl::Duration timeout = absl::Seconds(20));
  // Sends SIGKILL and reaps the child (a crash, for fault tests). Returns its exit code.
  absl::StatusOr<int> Kill();
  // Sends `signo` without waiting.
  absl::Status Signal(int signo);
  // Waits up to `timeout` for the child to exit by itself; DEADLINE_EXCEEDED if it did not.
  absl::StatusOr<int> Wait(absl::Duration timeout);

 private:
  KvhubdProcess() = default;

  pid_t pid_ = -1;
  int stdout_fd_ = -1;
  std::string grpc_address_;
  std::string http_address_;
  std::string node_id_;
  int grpc_port_ = 0;
  int http_port_ = 0;
};

// Parses "kvhubd ready grpc=HOST:PORT http=HOST:PORT node=ID" into its parts.
// INVALID_ARGUMENT when the line is not a ready line. Exposed for tests and tools.
struct ReadyLine {
  std::string grpc_address;
  std::string http_address;
  std::string node_id;
  int grpc_port = 0;
  int http_port = 0;
};
absl::StatusOr<ReadyLine> ParseReadyLine(const std::string& line);

}  // namespace kvhub::testing
