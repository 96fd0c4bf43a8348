#include "tests/testing/kvhubd_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"

namespace kvhub::testing {
namespace {

std::string DefaultBinary() {
  if (const char* dir = std::getenv("KVHUB_BIN_DIR"); dir != nullptr && *dir != '\0') {
    return absl::StrCat(dir, "/kvhubd");
  }
  // Test binaries live in <build>/tests, kvhubd in <build>/bin.
  char self[4096];
  ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (n > 0) {
    self[n] = '\0';
    std::string path(self);
    size_t slash = path.rfind('/');
    if (slash != std::string::npos) return absl::StrCat(path.substr(0, slash), "/../bin/kvhubd");
  }
  return "kvhubd";
}

int ExitCode(int wstatus) {
  if (WIFEXITED(wstatus)) return WEXITSTATUS(wstatus);
  if (WIFSIGNALED(wstatus)) return 128 + WTERMSIG(wstatus);
  return -1;
}

absl::StatusOr<int> ParsePort(absl::string_view hostport) {
  size_t colon = hostport.rfind(':');
  int port = 0;
  if (colon == absl::string_view::npos || !absl::SimpleAtoi(hostport.substr(colon + 1), &port) ||
      port <= 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("bad HOST:PORT '", hostport, "'"));
  }
  return port;
}

}  // namespace

absl::StatusOr<ReadyLine> ParseReadyLine(const std::string& line) {
  absl::string_view rest = absl::StripTrailingAsciiWhitespace(line);
  if (!absl::ConsumePrefix(&rest, "kvhubd ready ")) {
    return absl::InvalidArgumentError(absl::StrCat("not a kvhubd ready line: '", line, "'"));
  }
  ReadyLine out;
  for (absl::string_view field : absl::StrSplit(rest, ' ', absl::SkipEmpty())) {
    if (absl::ConsumePrefix(&field, "grpc=")) {
      out.grpc_address = std::string(field);
    } else if (absl::ConsumePrefix(&field, "http=")) {
      out.http_address = std::string(field);
    } else if (absl::ConsumePrefix(&field, "node=")) {
      out.node_id = std::string(field);
    }
  }
  if (out.grpc_address.empty() || out.http_address.empty() || out.node_id.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("incomplete kvhubd ready line: '", line, "'"));
  }
  auto gp = ParsePort(out.grpc_address);
  if (!gp.ok()) return gp.status();
  auto hp = ParsePort(out.http_address);
  if (!hp.ok()) return hp.status();
  out.grpc_port = *gp;
  out.http_port = *hp;
  return out;
}

absl::StatusOr<std::unique_ptr<KvhubdProcess>> KvhubdProcess::Start(KvhubdProcessOptions options) {
  std::string binary = options.binary.empty() ? DefaultBinary() : options.binary;
  if (access(binary.c_str(), X_OK) != 0) {
    return absl::NotFoundError(absl::StrCat("kvhubd binary '", binary,
                                            "' is not executable (set KVHUB_BIN_DIR)"));
  }
  std::vector<std::string> args = {binary, "--grpc_address=127.0.0.1:0",
                                   "--http_address=127.0.0.1:0"};
  if (!options.node_id.empty()) args.push_back(absl::StrCat("--node_id=", options.node_id));
  for (const std::string& f : options.flags) args.push_back(f);
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);

  int fds[2];
  if (pipe2(fds, O_CLOEXEC) != 0) {
    return absl::InternalError(absl::StrCat("pipe2: ", std::strerror(errno)));
  }
  pid_t parent = getpid();
  pid_t pid = fork();
  if (pid < 0) {
    int err = errno;
    close(fds[0]);
    close(fds[1]);
    return absl::InternalError(absl::StrCat("fork: ", std::strerror(err)));
  }
  if (pid == 0) {
    // Child: only async-signal-safe calls until exec.
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    dup2(fds[1], STDOUT_FILENO);  // dup2 clears O_CLOEXEC on the new fd
    if (options.max_open_files > 0) {
      const rlimit limit{options.max_open_files, options.max_open_files};
      if (setrlimit(RLIMIT_NOFILE, &limit) != 0) _exit(126);
    }
    execv(argv[0], argv.data());
    _exit(127);
  }
  close(fds[1]);

  std::unique_ptr<KvhubdProcess> proc(new KvhubdProcess());
  proc->pid_ = pid;
  proc->stdout_fd_ = fds[0];

  // Read stdout until the first full line.
  std::string buf;
  absl::Time deadline = absl::Now() + options.ready_timeout;
  while (buf.find('\n') == std::string::npos) {
    int64_t left_ms = absl::ToInt64Milliseconds(deadline - absl::Now());
    if (left_ms <= 0) {
      proc->Kill().IgnoreError();
      return absl::DeadlineExceededError(absl::StrCat(
          "kvhubd did not print its ready line within ", absl::FormatDuration(options.ready_timeout)));
    }
    pollfd pfd{proc->stdout_fd_, POLLIN, 0};
    int r = poll(&pfd, 1, static_cast<int>(std::min<int64_t>(left_ms, 1000)));
    if (r < 0 && errno != EINTR) {
      proc->Kill().IgnoreError();
      return absl::InternalError(absl::StrCat("poll: ", std::strerror(errno)));
    }
    if (r <= 0) continue;
    char chunk[512];
    ssize_t n = read(proc->stdout_fd_, chunk, sizeof(chunk));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      // EOF: the child exited (bad flags, port in use, ...).
      absl::StatusOr<int> code = proc->Wait(absl::Seconds(5));
      if (!code.ok()) proc->Kill().IgnoreError();
      return absl::FailedPreconditionError(absl::StrCat(
          "kvhubd exited before it was ready (exit code ", code.ok() ? *code : -1,
          "); its stderr has the reason; stdout so far: '", buf, "'"));
    }
    buf.append(chunk, static_cast<size_t>(n));
  }
  std::string line = buf.substr(0, buf.find('\n'));
  absl::StatusOr<ReadyLine> ready = ParseReadyLine(line);
  if (!ready.ok()) {
    proc->Kill().IgnoreError();
    return ready.status();
  }
  proc->grpc_address_ = ready->grpc_address;
  proc->http_address_ = ready->http_address;
  proc->node_id_ = ready->node_id;
  proc->grpc_port_ = ready->grpc_port;
  proc->http_port_ = ready->http_port;
  return proc;
}

bool KvhubdProcess::running() const {
  if (pid_ <= 0) return false;
  siginfo_t info{};
  // WNOWAIT: an exited child stays waitable, so Wait()/Stop() still get its exit code.
  if (waitid(P_PID, static_cast<id_t>(pid_), &info, WEXITED | WNOHANG | WNOWAIT) != 0) return false;
  return info.si_pid == 0;  // 0: no state change, the child runs
}

KvhubdProcess::~KvhubdProcess() {
  if (pid_ > 0) Kill().IgnoreError();
  if (stdout_fd_ >= 0) close(stdout_fd_);
}

absl::Status KvhubdProcess::Signal(int signo) {
  if (pid_ <= 0) return absl::FailedPreconditionError("kvhubd is not running");
  if (kill(pid_, signo) != 0) {
    return absl::InternalError(absl::StrCat("kill(", pid_, ", ", signo, "): ", std::strerror(errno)));
  }
  return absl::OkStatus();
}

absl::StatusOr<int> KvhubdProcess::Wait(absl::Duration timeout) {
  if (pid_ <= 0) return absl::FailedPreconditionError("kvhubd is not running");
  absl::Time deadline = absl::Now() + timeout;
  while (true) {
    int wstatus = 0;
    pid_t r = waitpid(pid_, &wstatus, WNOHANG);
    if (r == pid_) {
      pid_ = -1;
      return ExitCode(wstatus);
    }
    if (r < 0 && errno != EINTR) {
      pid_ = -1;
      return absl::InternalError(absl::StrCat("waitpid: ", std::strerror(errno)));
    }
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat("kvhubd (pid ", pid_, ") still running after ", absl::FormatDuration(timeout)));
    }
    absl::SleepFor(absl::Milliseconds(5));
  }
}

absl::StatusOr<int> KvhubdProcess::Stop(absl::Duration timeout) {
  absl::Status s = Signal(SIGTERM);
  if (!s.ok()) return s;
  absl::StatusOr<int> code = Wait(timeout);
  if (code.ok()) return code;
  if (absl::IsDeadlineExceeded(code.status())) {
    Kill().IgnoreError();
  }
  return code.status();
}

absl::StatusOr<int> KvhubdProcess::Kill() {
  absl::Status s = Signal(SIGKILL);
  if (!s.ok()) return s;
  return Wait(absl::Seconds(30));
}

}  // namespace kvhub::testing
