#include "bench/replay/local_shards.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace kvhub::replay {
namespace {

// The gRPC address of a ready line, or empty.
std::string GrpcOfReadyLine(const std::string& line) {
  if (!absl::StartsWith(line, "kvhubd ready ")) return "";
  for (absl::string_view part : absl::StrSplit(line, ' ', absl::SkipWhitespace())) {
    if (absl::ConsumePrefix(&part, "grpc=")) return std::string(part);
  }
  return "";
}

}  // namespace

std::string LocalShards::DefaultBinary() {
  std::error_code ec;
  std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) return "kvhubd";
  return (self.parent_path() / "kvhubd").string();
}

absl::StatusOr<std::unique_ptr<LocalShards>> LocalShards::Start(
    const std::string& binary, int count, const std::vector<std::string>& flags,
    absl::Duration timeout) {
  if (count < 1 || count > 64) return absl::InvalidArgumentError("--spawn takes 1 .. 64 shards");
  if (access(binary.c_str(), X_OK) != 0) {
    return absl::NotFoundError(absl::StrCat("kvhubd binary '", binary, "' is not executable"));
  }
  std::unique_ptr<LocalShards> s(new LocalShards());
  char tmpl[] = "/tmp/kvhub-replay-XXXXXX";
  if (mkdtemp(tmpl) == nullptr) return absl::InternalError("mkdtemp failed");
  s->dir_ = tmpl;
  std::vector<std::string> ready(count);
  for (int i = 0; i < count; ++i) {
    ready[i] = absl::StrCat(s->dir_, "/shard-", i, ".ready");
    std::vector<std::string> args = {binary, "--grpc_address=127.0.0.1:0",
                                     "--http_address=127.0.0.1:0",
                                     absl::StrCat("--ready_file=", ready[i]),
                                     absl::StrCat("--node_id=replay-", i)};
    args.insert(args.end(), flags.begin(), flags.end());
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    const pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) return absl::InternalError("fork failed");
    if (pid == 0) {
      prctl(PR_SET_PDEATHSIG, SIGKILL);
      if (getppid() != parent) _exit(127);
      // Out of the terminal's process group: a Ctrl-C reaches the replay, which
      // stops, reports and then stops the shards (StopAll), instead of the shards
      // draining under a replay still sending.
      setpgid(0, 0);
      int devnull = open("/dev/null", O_WRONLY);
      if (devnull >= 0) dup2(devnull, STDOUT_FILENO);
      execv(argv[0], argv.data());
      _exit(127);
    }
    s->pids_.push_back(pid);
  }
  const absl::Time deadline = absl::Now() + timeout;
  s->addresses_.assign(count, "");
  for (int i = 0; i < count; ++i) {
    while (s->addresses_[i].empty()) {
      std::ifstream f(ready[i]);
      std::string line;
      if (f && std::getline(f, line)) s->addresses_[i] = GrpcOfReadyLine(line);
      if (!s->addresses_[i].empty()) break;
      int wstatus = 0;
      if (waitpid(s->pids_[i], &wstatus, WNOHANG) == s->pids_[i]) {
        s->pids_[i] = -1;
        return absl::UnavailableError(absl::StrCat(
            "kvhubd shard ", i, " exited before it was ready (",
            WIFEXITED(wstatus) ? absl::StrCat("exit code ", WEXITSTATUS(wstatus))
                               : absl::StrCat("signal ", WIFSIGNALED(wstatus) ? WTERMSIG(wstatus) : 0),
            "; run it alone with the same flags to see why)"));
      }
      if (absl::Now() > deadline) {
        return absl::DeadlineExceededError(absl::StrCat("kvhubd shard ", i, " not ready in time"));
      }
      usleep(20000);
    }
  }
  // The ready files were the only use of the directory: gone now, so a replay killed
  // later (a long --speedup run stopped with SIGTERM) leaves nothing in /tmp.
  std::error_code ec;
  std::filesystem::remove_all(s->dir_, ec);
  s->dir_.clear();
  return s;
}

absl::Status LocalShards::StopAll() {
  for (pid_t p : pids_) {
    if (p > 0) kill(p, SIGTERM);
  }
  absl::Status out;
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  for (size_t i = 0; i < pids_.size(); ++i) {
    pid_t& p = pids_[i];
    if (p <= 0) continue;
    int wstatus = 0;
    bool killed = false;
    pid_t w;
    while ((w = waitpid(p, &wstatus, WNOHANG)) == 0) {
      if (absl::Now() > deadline) {
        kill(p, SIGKILL);
        waitpid(p, &wstatus, 0);
        killed = true;
        break;
      }
      usleep(10000);
    }
    const std::string who = i < addresses_.size() ? addresses_[i] : absl::StrCat("pid ", p);
    if (out.ok()) {
      if (killed) {
        out = absl::InternalError(absl::StrCat("spawned kvhubd ", who, " did not stop within 10 s of SIGTERM: killed"));
      } else if (w < 0) {
        out = absl::InternalError(absl::StrCat("spawned kvhubd ", who, ": waitpid: ", std::strerror(errno)));
      } else if (WIFSIGNALED(wstatus)) {
        out = absl::InternalError(absl::StrCat("spawned kvhubd ", who, " died of signal ", WTERMSIG(wstatus)));
      } else if (WIFEXITED(wstatus) && WEXITSTATUS(wstatus) != 0) {
        out = absl::InternalError(
            absl::StrCat("spawned kvhubd ", who, " exited ", WEXITSTATUS(wstatus), " (its drain failed?)"));
      }
    }
    p = -1;
  }
  if (!dir_.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  return out;
}

LocalShards::~LocalShards() {
  // An error path: the caller reports its own error; a shard that ended badly too is logged.
  if (absl::Status s = StopAll(); !s.ok()) std::fprintf(stderr, "kvhub-replay: %s\n", s.ToString().c_str());
}

}  // namespace kvhub::replay
