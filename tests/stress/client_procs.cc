#include "tests/stress/client_procs.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"
#include "tests/testing/run_command.h"

extern char** environ;

namespace kvhub::stress {

absl::StatusOr<std::unique_ptr<ClientProcs>> ClientProcs::Create(std::string binary, std::vector<std::string> args) {
  std::string dir = (std::filesystem::temp_directory_path() / "kvhub-stress-XXXXXX").string();
  if (mkdtemp(dir.data()) == nullptr) {
    return absl::InternalError(absl::StrCat("mkdtemp ", dir, ": ", std::strerror(errno)));
  }
  return std::unique_ptr<ClientProcs>(new ClientProcs(std::move(binary), std::move(args), std::move(dir)));
}

ClientProcs::~ClientProcs() {
  absl::MutexLock l(&mu_);
  for (Child& c : children_) {
    if (c.pid <= 0) continue;
    kill(c.pid, SIGKILL);
    waitpid(c.pid, nullptr, 0);
  }
  std::error_code ec;
  std::filesystem::remove_all(dir_, ec);
}

absl::Status ClientProcs::Start(absl::Time end, uint64_t seed) {
  absl::MutexLock l(&mu_);
  return StartLocked(end, seed);
}

absl::Status ClientProcs::StartLocked(absl::Time end, uint64_t seed) {
  const double seconds = std::max(0.5, absl::ToDoubleSeconds(end - absl::Now()));
  Child c;
  c.end = end;
  c.json = absl::StrCat(dir_, "/client-", children_.size(), ".json");
  std::vector<std::string> args = {binary_};
  args.insert(args.end(), args_.begin(), args_.end());
  args.push_back(absl::StrCat("--seconds=", seconds));
  args.push_back(absl::StrCat("--seed=", seed));
  args.push_back(absl::StrCat("--json=", c.json));
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  // The child's table goes to /dev/null (its JSON is what counts); its logs to our stderr.
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
  const int rc = posix_spawn(&c.pid, binary_.c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) {
    return absl::InternalError(absl::StrCat("cannot start a client process (", binary_, "): ", std::strerror(rc)));
  }
  children_.push_back(std::move(c));
  return absl::OkStatus();
}

absl::Status ClientProcs::KillOne(uint64_t pick, absl::Time end, uint64_t seed) {
  absl::MutexLock l(&mu_);
  std::vector<Child*> running;
  for (Child& c : children_) {
    if (c.pid <= 0 || c.killed) continue;
    // Still running? WNOWAIT leaves an exited child's status for WaitAll.
    siginfo_t info{};
    if (waitid(P_PID, static_cast<id_t>(c.pid), &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info.si_pid == 0) {
      running.push_back(&c);
    }
  }
  if (running.empty()) return absl::FailedPreconditionError("no client process is running");
  Child* victim = running[pick % running.size()];
  victim->killed = true;
  kill(victim->pid, SIGKILL);
  waitpid(victim->pid, nullptr, 0);
  victim->pid = -1;
  ++killed_;
  if (end - absl::Now() < absl::Milliseconds(500)) return absl::OkStatus();
  return StartLocked(end, seed);
}

ClientProcs::Outcome ClientProcs::WaitAll(absl::Duration grace) {
  absl::MutexLock l(&mu_);
  Outcome out;
  out.started = static_cast<int>(children_.size());
  out.killed = killed_;
  for (size_t i = 0; i < children_.size(); ++i) {
    Child& c = children_[i];
    if (c.killed) continue;
    int status = 0;
    if (c.pid > 0) {
      absl::StatusOr<int> waited = testing::WaitChildUntil(c.pid, c.end + grace);
      if (absl::IsDeadlineExceeded(waited.status())) {  // killed and reaped
        c.pid = -1;
        out.failures.push_back(absl::StrCat("client process ", i, " hung: still running ",
                                            absl::FormatDuration(grace), " after its end time (killed)"));
        continue;
      }
      if (!waited.ok()) {
        out.failures.push_back(absl::StrCat("client process ", i, ": ", waited.status().ToString()));
        continue;
      }
      status = *waited;
      c.pid = -1;
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
      ++out.finished;
      continue;
    }
    std::string what = WIFSIGNALED(status) ? absl::StrCat("died of signal ", WTERMSIG(status))
                                           : absl::StrCat("exited ", WEXITSTATUS(status));
    std::ifstream in(c.json);
    std::stringstream text;
    text << in.rdbuf();
    nlohmann::json j = nlohmann::json::parse(text.str(), nullptr, /*allow_exceptions=*/false);
    if (!j.is_discarded() && j.contains("first_violations")) {
      std::vector<std::string> found;
      for (const auto& v : j["first_violations"]) found.push_back(v.get<std::string>());
      absl::StrAppend(&what, ": ", absl::StrJoin(found, "; "));
    }
    out.failures.push_back(absl::StrCat("client process ", i, " ", what));
  }
  return out;
}

}  // namespace kvhub::stress
