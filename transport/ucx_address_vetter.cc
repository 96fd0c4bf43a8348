#include "transport/ucx_address_vetter.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string_view>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/clock.h"
#include "common/fd_messages.h"
#include "common/log.h"
#include "transport/ucx_context.h"
#include "transport/ucx_worker.h"

namespace kvhub::transport {
namespace {

// Addresses longer than this are not UCX worker addresses (kvhubd caps them lower).
constexpr uint32_t kMaxAddressBytes = 1 << 20;

// A request to the vetting process is {sequence number (8 bytes), address}; its
// answer {sequence number, verdict, detail}: a late answer to a request its
// caller stopped waiting for is told from the next one's and dropped.
constexpr size_t kSeqBytes = 8;
constexpr size_t kReplyBytes = kSeqBytes + 2;

// The vetting process's verdict, with a detail byte.
enum Verdict : uint8_t {
  kPassed = 0,   // the probe returned (Accept succeeded or refused cleanly)
  kSignal = 1,   // the probe died of signal `detail`
  kHung = 2,     // the probe outlived the timeout and was killed
  kNoProbe = 3,  // no probe ran or it could not set UCX up (`detail`: its exit code)
  kUnreachable = 4,  // the probe's endpoint failed before it connected to the address
};

// Probe exit codes.
constexpr int kProbeAccepted = 0;
constexpr int kProbeRefused = 1;  // Accept returned an error: harmless
constexpr int kProbeNoUcx = 2;    // context or worker could not be made
constexpr int kProbeUnreachable = 3;  // the endpoint failed while connecting

// A probe process, forked ahead of need so UCX is set up before an address comes
// (making a context and a worker takes tens of milliseconds; the endpoint, one).
struct WarmProbe {
  pid_t pid = -1;
  int fd = -1;  // write end of the pipe that carries it the address
};

// In a probe process: set up UCX as the shard's worker is, wait for the address,
// then do what the shard's worker would do with it: make the endpoint, then close
// it in flush mode, which connects it to the address and completes its wire-up
// first. So the probe also reads what answers there: a listener that is not UCX
// (a web server, say) sends bytes UCX 1.13 takes for a header it asserts on, and
// that kills the probe, not the shard. A real client answers and then sees an
// orderly close. _exits (no UCX teardown, which could block on a bad peer); the
// vetting process kills a probe that is still waiting at the timeout.
[[noreturn]] void ProbeMain(const UcxConfig& ucx, int fd) {
  std::unique_ptr<UcxContext> context;
  std::unique_ptr<UcxWorker> worker;
  // With RMA where the shard's context has it (UcxServer makes it the same way), so
  // wire-up picks the lanes the shard's would.
  if (absl::StatusOr<std::unique_ptr<UcxContext>> c = UcxContext::CreateWithoutRmaOverTcp(ucx); c.ok()) {
    context = *std::move(c);
    UcxWorker::Options options;
    options.name = "kvhub-vet";
    if (absl::StatusOr<std::unique_ptr<UcxWorker>> w = UcxWorker::Create(context.get(), std::move(options));
        w.ok()) {
      worker = *std::move(w);
    }
  }
  std::string address;
  if (!RecvMessage(fd, &address, kMaxAddressBytes) || address.empty()) _exit(kProbeAccepted);  // closed unused
  if (worker == nullptr) _exit(kProbeNoUcx);
  absl::StatusOr<AcceptedConn> conn = worker->Accept(address);
  if (!conn.ok()) _exit(kProbeRefused);
  _exit(worker->CloseAccepted(conn->id, absl::InfiniteDuration()).ok() ? kProbeAccepted : kProbeUnreachable);
}

WarmProbe SpawnProbe(const UcxConfig& ucx, int vetting_fd) {
  int p[2];
  if (pipe2(p, O_CLOEXEC) != 0) return {};
  const pid_t pid = fork();
  if (pid < 0) {
    close(p[0]);
    close(p[1]);
    return {};
  }
  if (pid == 0) {
    close(vetting_fd);
    close(p[1]);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    prctl(PR_SET_NAME, "kvhub-ucx-probe");  // what ps and top show
    ProbeMain(ucx, p[0]);
  }
  close(p[0]);
  return {pid, p[1]};
}

// Hands `address` to the warm probe, waits up to `timeout`, classifies. The probe
// is used up.
std::pair<Verdict, uint8_t> RunProbe(WarmProbe probe, const std::string& address, absl::Duration timeout) {
  if (probe.pid < 0) return {kNoProbe, 255};
  const bool sent = SendMessage(probe.fd, address);
  close(probe.fd);
  const absl::Time deadline = Clock::Real()->Now() + timeout;
  int status = 0;
  while (true) {
    const pid_t r = waitpid(probe.pid, &status, WNOHANG);
    if (r == probe.pid) break;
    if (r < 0 && errno != EINTR) return {kNoProbe, 254};
    if (Clock::Real()->Now() >= deadline) {
      kill(probe.pid, SIGKILL);
      while (waitpid(probe.pid, &status, 0) < 0 && errno == EINTR) {
      }
      return {kHung, 0};
    }
    usleep(200);
  }
  if (!sent) return {kNoProbe, 252};  // it died before it took the address
  if (WIFSIGNALED(status)) return {kSignal, static_cast<uint8_t>(WTERMSIG(status))};
  const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 253;
  if (code == kProbeAccepted || code == kProbeRefused) return {kPassed, static_cast<uint8_t>(code)};
  if (code == kProbeUnreachable) return {kUnreachable, static_cast<uint8_t>(code)};
  return {kNoProbe, static_cast<uint8_t>(code)};
}

// The vetting process: one request at a time until the socket closes, each
// answered by the probe made ready after the previous one.
[[noreturn]] void VettingLoop(int fd, pid_t parent, const UcxConfig& ucx, absl::Duration timeout) {
  prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (getppid() != parent) _exit(0);  // the parent died before the line above
  prctl(PR_SET_NAME, "kvhub-ucx-vet");
  // kvhubd blocks SIGTERM/SIGINT/SIGHUP to take them with sigwait: this process
  // and its probes (which inherit the mask) ignored a plain kill. SIGHUP (kvhubd's
  // reload: `pkill -HUP -f kvhubd` matches this fork too, and a closed ssh session
  // sends it) and SIGINT (a terminal's Ctrl-C at the start of a drain) must not end
  // it: UCX Connects would be refused until a restart. Ignored, as the probes inherit.
  signal(SIGHUP, SIG_IGN);
  signal(SIGINT, SIG_IGN);
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, nullptr);
  signal(SIGPIPE, SIG_IGN);           // a probe that died: a failed pipe write, not our death
  // Keep the parent's stdout (its ready line, its pipes) free of this process.
  if (const int null = open("/dev/null", O_WRONLY | O_CLOEXEC); null >= 0) {
    dup2(null, STDOUT_FILENO);
    close(null);
  }
  WarmProbe warm = SpawnProbe(ucx, fd);
  while (true) {
    std::string request;
    if (!RecvMessage(fd, &request, kSeqBytes + kMaxAddressBytes) || request.size() <= kSeqBytes) _exit(0);
    const std::string address = request.substr(kSeqBytes);
    if (warm.pid < 0) warm = SpawnProbe(ucx, fd);
    const auto [verdict, detail] = RunProbe(warm, address, timeout);
    uint8_t reply[kReplyBytes];
    std::memcpy(reply, request.data(), kSeqBytes);
    reply[kSeqBytes] = verdict;
    reply[kSeqBytes + 1] = detail;
    if (!WriteFull(fd, reply, sizeof(reply))) _exit(0);
    warm = SpawnProbe(ucx, fd);
  }
}

// ", SIGSEGV" for 11; "" for a number glibc does not name.
std::string SignalName(int sig) {
  const char* abbrev = sigabbrev_np(sig);
  return abbrev == nullptr ? std::string() : absl::StrCat(", SIG", abbrev);
}

}  // namespace

absl::Status UcxAddressVetter::Config::Validate() const {
  if (probe_timeout < absl::Milliseconds(1) || probe_timeout > absl::Seconds(60)) {
    return absl::InvalidArgumentError(
        absl::StrCat("probe_timeout must be 1ms..60s, got ", absl::FormatDuration(probe_timeout)));
  }
  if (remembered > (size_t{1} << 20)) {
    return absl::InvalidArgumentError(absl::StrCat("remembered must be 0..1048576, got ", remembered));
  }
  if (remember_for < absl::Milliseconds(1) || remember_for > absl::Hours(24)) {
    return absl::InvalidArgumentError(
        absl::StrCat("remember_for must be 1ms..24h, got ", absl::FormatDuration(remember_for)));
  }
  if (reply_slack < absl::ZeroDuration() || reply_slack > absl::Seconds(60)) {
    return absl::InvalidArgumentError(
        absl::StrCat("reply_slack must be 0..60s, got ", absl::FormatDuration(reply_slack)));
  }
  if (late_replies_before_giving_up < 1) {
    return absl::InvalidArgumentError("late_replies_before_giving_up must be at least 1");
  }
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<UcxAddressVetter>> UcxAddressVetter::Start(const UcxConfig& ucx,
                                                                          const Config& config) {
  if (absl::Status s = config.Validate(); !s.ok()) return s;
  if (absl::Status s = ucx.Validate(); !s.ok()) return s;
  int fds[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, fds) != 0) {
    return absl::InternalError(absl::StrCat("ucx address vetter: socketpair: ", std::strerror(errno)));
  }
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) {
    const int e = errno;
    close(fds[0]);
    close(fds[1]);
    return absl::InternalError(absl::StrCat("ucx address vetter: fork: ", std::strerror(e)));
  }
  if (pid == 0) {
    close(fds[0]);
    VettingLoop(fds[1], parent, ucx, config.probe_timeout);
  }
  close(fds[1]);
  return std::unique_ptr<UcxAddressVetter>(new UcxAddressVetter(config, pid, fds[0]));
}

UcxAddressVetter::~UcxAddressVetter() {
  absl::MutexLock l(&mu_);
  StopLocked();
}

void UcxAddressVetter::StopLocked() {
  if (fd_ < 0) return;
  close(fd_);
  fd_ = -1;
  gone_flag_.store(true, std::memory_order_release);
  kill(pid_, SIGKILL);
  int status = 0;
  while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
}

void UcxAddressVetter::Remember(std::string address) {
  if (config_.remembered == 0) return;
  const absl::Time now = Clock::Real()->Now();
  absl::MutexLock l(&cache_mu_);
  if (passed_.contains(address)) return;
  while (passed_order_.size() >= config_.remembered) {
    auto it = passed_.find(passed_order_.front().first);
    if (it != passed_.end() && it->second == passed_order_.front().second) passed_.erase(it);
    passed_order_.pop_front();
  }
  passed_.emplace(address, now);
  passed_order_.emplace_back(std::move(address), now);
}

absl::Status UcxAddressVetter::Vet(absl::string_view address) {
  if (address.empty() || address.size() > kMaxAddressBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("ucx worker address must be 1..", kMaxAddressBytes, " bytes, got ", address.size()));
  }
  {
    absl::MutexLock l(&cache_mu_);
    if (auto it = passed_.find(address); it != passed_.end()) {
      if (Clock::Real()->Now() - it->second < config_.remember_for) {
        remembered_hits_.fetch_add(1, std::memory_order_relaxed);
        return absl::OkStatus();
      }
      passed_.erase(it);  // too old: probed again (its stale order entry is skipped)
    }
  }
  if (callers_.fetch_add(1, std::memory_order_acq_rel) >= kMaxCallers) {
    callers_.fetch_sub(1, std::memory_order_acq_rel);
    return absl::UnavailableError(absl::StrCat("ucx address vetter is busy with ", kMaxCallers,
                                               " other clients' addresses; try again shortly"));
  }
  absl::Status s;
  bool wired_up = false;
  {
    absl::MutexLock l(&mu_);
    s = ProbeLocked(address, &wired_up);
  }
  callers_.fetch_sub(1, std::memory_order_acq_rel);
  if (s.ok() && wired_up) Remember(std::string(address));
  return s;
}

absl::Status UcxAddressVetter::ProbeLocked(absl::string_view address, bool* wired_up) {
  if (fd_ < 0) return absl::FailedPreconditionError(absl::StrCat("ucx address vetter is gone: ", gone_));
  probes_.fetch_add(1, std::memory_order_relaxed);
  const uint64_t seq = ++seq_;
  std::string request(kSeqBytes, '\0');
  std::memcpy(request.data(), &seq, kSeqBytes);
  request.append(address.data(), address.size());
  uint8_t reply[kReplyBytes];
  bool ok = SendMessage(fd_, request);
  bool late = false;
  // The vetting process kills a hung probe at probe_timeout; the slack past it is
  // for a host short of CPU. Answers to earlier requests whose callers gave up are
  // dropped on the way.
  // Monotonic: a wall-clock step neither fakes a late answer nor stretches the wait.
  const absl::Time deadline = Clock::Real()->Now() + config_.probe_timeout + config_.reply_slack;
  while (ok) {
    pollfd p{fd_, POLLIN, 0};
    const int wait_ms =
        static_cast<int>(std::max<int64_t>(0, absl::ToInt64Milliseconds(deadline - Clock::Real()->Now())));
    const int r = poll(&p, 1, wait_ms);
    if (r < 0 && errno == EINTR) continue;
    if (r == 0) {
      late = true;
      break;
    }
    ok = r == 1 && ReadFull(fd_, reply, sizeof(reply));
    uint64_t answered = 0;
    if (ok) std::memcpy(&answered, reply, kSeqBytes);
    if (ok && answered == seq) break;
  }
  if (late && ++late_replies_ < config_.late_replies_before_giving_up) {
    KVHUB_LOG(warn, "ucx: the address vetter's process did not answer within {} ({} time(s) in a row)",
              absl::FormatDuration(config_.probe_timeout + config_.reply_slack), late_replies_);
    return absl::UnavailableError(
        absl::StrCat("ucx address vetter did not answer within ",
                     absl::FormatDuration(config_.probe_timeout + config_.reply_slack),
                     " (a host short of CPU?); try again"));
  }
  if (!ok || late) {
    gone_ = late ? absl::StrCat("the vetting process did not answer ", late_replies_, " times in a row (hung)")
                 : "the vetting process stopped answering (killed, or out of memory)";
    StopLocked();
    KVHUB_LOG(error, "ucx: {}; UCX Connects are refused from now on (clients use gRPC)", gone_);
    return absl::FailedPreconditionError(absl::StrCat("ucx address vetter is gone: ", gone_));
  }
  late_replies_ = 0;
  const uint8_t detail = reply[kSeqBytes + 1];
  switch (reply[kSeqBytes]) {
    case kPassed:
      *wired_up = detail == kProbeAccepted;
      return absl::OkStatus();
    case kSignal:
      refused_.fetch_add(1, std::memory_order_relaxed);
      return absl::InvalidArgumentError(absl::StrCat(
          "this UCX worker address crashed UCX in a probe process (signal ", detail, SignalName(detail),
          "): refused, it would have taken the shard down. Is the client's UCX a different version?"));
    case kHung:
      refused_.fetch_add(1, std::memory_order_relaxed);
      return absl::InvalidArgumentError(absl::StrCat(
          "connecting to this UCX worker address did not finish within ", absl::FormatDuration(config_.probe_timeout),
          " in a probe process: refused (nothing answered there as a UCX worker; a client must progress its"
          " worker while its Connect is in flight)"));
    case kUnreachable:
      unreachable_.fetch_add(1, std::memory_order_relaxed);
      return absl::FailedPreconditionError(
          "the shard's UCX cannot connect to this UCX worker address (a probe process's endpoint to it failed:"
          " connection refused or reset, or nothing reachable there): refused. Can the shard reach the"
          " client's UCX interfaces over its ucx_tls?");
    default:
      return absl::UnavailableError(absl::StrCat(
          "ucx address vetter could not probe (",
          detail == kProbeNoUcx ? "UCX did not initialize in the probe" : absl::StrCat("code ", detail),
          ")"));
  }
}

UcxAddressVetter::Stats UcxAddressVetter::stats() const {
  return Stats{probes_.load(std::memory_order_relaxed), remembered_hits_.load(std::memory_order_relaxed),
               refused_.load(std::memory_order_relaxed), unreachable_.load(std::memory_order_relaxed)};
}

}  // namespace kvhub::transport
