#include "bench/kvhub_bench/redis_server.h"

#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"

namespace kvhub::bench {

absl::StatusOr<int> FreeLoopbackPort() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return absl::InternalError(absl::StrCat("socket: ", strerror(errno)));
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = 0;
  socklen_t len = sizeof(a);
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
    close(fd);
    return absl::InternalError(absl::StrCat("bind: ", strerror(errno)));
  }
  const int port = ntohs(a.sin_port);
  close(fd);
  return port;
}

absl::StatusOr<std::unique_ptr<RedisServer>> RedisServer::Start(const std::string& binary,
                                                                 uint64_t maxmemory_bytes) {
  if (maxmemory_bytes == 0) return absl::InvalidArgumentError("redis-server needs a maxmemory > 0");
  if (access(binary.c_str(), X_OK) != 0) {
    return absl::NotFoundError(absl::StrCat(binary, " is not executable (Debian package redis-server)"));
  }
  absl::StatusOr<int> port = FreeLoopbackPort();
  if (!port.ok()) return port.status();
  std::unique_ptr<RedisServer> s(new RedisServer());
  s->port_ = *port;
  const std::string port_s = absl::StrCat(*port);
  // Bounded as a kvhub shard is: the put cell writes a fresh key per SET, and
  // without a limit redis grew until the FLUSHALL after it (~0.5 GB/s).
  std::vector<std::string> args = {binary,   "--port", port_s,       "--bind", "127.0.0.1",
                                   "--save", "",       "--appendonly", "no",   "--daemonize",
                                   "no",     "--loglevel", "warning",
                                   "--maxmemory", absl::StrCat(maxmemory_bytes),
                                   "--maxmemory-policy", "allkeys-lru"};
  std::vector<char*> argv;  // built before fork: the child of a threaded process must not allocate
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) return absl::InternalError(absl::StrCat("fork: ", strerror(errno)));
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(125);  // the bench died before prctl took effect
    // A process group of its own: a terminal's Ctrl-C goes to the bench's group, and
    // it stopped redis under a bench that then failed its redis cells instead of
    // printing the cells measured so far (the bench stops redis itself).
    if (setpgid(0, 0) != 0) _exit(124);
    // Now a background group: a write to the terminal (with `stty tostop`) must not
    // stop it. An ignored signal stays ignored across exec.
    signal(SIGTTOU, SIG_IGN);
    // redis-server logs on its stdout; the bench's stdout carries only its table and JSON.
    if (dup2(STDERR_FILENO, STDOUT_FILENO) < 0) _exit(126);
    execv(binary.c_str(), argv.data());
    _exit(127);
  }
  s->pid_ = pid;
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (absl::Now() < deadline) {
    int st;
    if (waitpid(pid, &st, WNOHANG) == pid) {
      s->pid_ = -1;
      return absl::InternalError(absl::StrCat("redis-server exited at start (port ", *port,
                                              " taken by another process?)"));
    }
    absl::StatusOr<std::unique_ptr<RedisConn>> c = RedisConn::Connect(*port);
    if (c.ok()) {
      // Something answers on the port: it must be our child, not another
      // redis-server that took the port first (the bench flushes its data).
      absl::StatusOr<pid_t> who = (*c)->ServerPid();
      if (who.ok() && *who == pid) return s;
      if (!who.ok()) return who.status();
      return absl::UnavailableError(absl::StrCat("another redis-server (pid ", *who, ") took port ", *port,
                                                 " before ours; run the bench again"));
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
  return absl::DeadlineExceededError("redis-server did not answer within 10 s");
}

RedisServer::~RedisServer() {
  if (pid_ <= 0) return;
  kill(pid_, SIGTERM);
  for (int i = 0; i < 500; ++i) {
    int st;
    if (waitpid(pid_, &st, WNOHANG) == pid_) return;
    absl::SleepFor(absl::Milliseconds(10));
  }
  kill(pid_, SIGKILL);
  int st;
  waitpid(pid_, &st, 0);
}

absl::StatusOr<std::unique_ptr<RedisConn>> RedisConn::Connect(int port) {
  std::unique_ptr<RedisConn> c(new RedisConn());
  timeval tv{2, 0};
  c->ctx_ = redisConnectWithTimeout("127.0.0.1", port, tv);
  if (c->ctx_ == nullptr || c->ctx_->err != 0) {
    return absl::UnavailableError(
        absl::StrCat("redis connect: ", c->ctx_ != nullptr ? c->ctx_->errstr : "out of memory"));
  }
  auto* r = static_cast<redisReply*>(redisCommand(c->ctx_, "PING"));
  if (r == nullptr) return absl::UnavailableError("redis PING failed");
  const bool pong = r->type == REDIS_REPLY_STATUS && std::string(r->str, r->len) == "PONG";
  freeReplyObject(r);
  if (!pong) return absl::UnavailableError(absl::StrCat("port ", port, " does not answer PING as redis does"));
  return c;
}

RedisConn::~RedisConn() {
  if (ctx_ != nullptr) redisFree(ctx_);
}

absl::Status RedisConn::Set(const std::string& key, const void* data, size_t len) {
  auto* r = static_cast<redisReply*>(
      redisCommand(ctx_, "SET %b %b", key.data(), key.size(), data, len));
  if (r == nullptr) return absl::UnavailableError(absl::StrCat("redis SET: ", ctx_->errstr));
  const bool ok = r->type == REDIS_REPLY_STATUS;
  // The server's reason (an OOM refusal past maxmemory, say).
  const std::string why = r->type == REDIS_REPLY_ERROR && r->str != nullptr ? std::string(r->str, r->len) : "";
  freeReplyObject(r);
  return ok ? absl::OkStatus() : absl::InternalError(absl::StrCat("redis SET refused", why.empty() ? "" : ": ", why));
}

absl::StatusOr<size_t> RedisConn::Get(const std::string& key) {
  auto* r = static_cast<redisReply*>(redisCommand(ctx_, "GET %b", key.data(), key.size()));
  if (r == nullptr) return absl::UnavailableError(absl::StrCat("redis GET: ", ctx_->errstr));
  absl::StatusOr<size_t> out = r->type == REDIS_REPLY_STRING
                                   ? absl::StatusOr<size_t>(static_cast<size_t>(r->len))
                                   : absl::NotFoundError("redis GET: nil");
  freeReplyObject(r);
  return out;
}

absl::StatusOr<size_t> RedisConn::MGet(const std::string* keys, size_t n) {
  if (n == 0 || n > 64) return absl::InvalidArgumentError("redis MGET: 1..64 keys");
  const char* argv[65];
  size_t lens[65];
  argv[0] = "MGET";
  lens[0] = 4;
  for (size_t i = 0; i < n; ++i) {
    argv[i + 1] = keys[i].data();
    lens[i + 1] = keys[i].size();
  }
  auto* r = static_cast<redisReply*>(redisCommandArgv(ctx_, static_cast<int>(n + 1), argv, lens));
  if (r == nullptr) return absl::UnavailableError(absl::StrCat("redis MGET: ", ctx_->errstr));
  absl::StatusOr<size_t> out = absl::InternalError("redis MGET: not an array of n values");
  if (r->type == REDIS_REPLY_ARRAY && r->elements == n) {
    size_t total = 0;
    for (size_t i = 0; i < n && out.status().code() == absl::StatusCode::kInternal; ++i) {
      if (r->element[i]->type != REDIS_REPLY_STRING) out = absl::NotFoundError("redis MGET: nil");
      total += r->element[i]->len;
    }
    if (out.status().code() == absl::StatusCode::kInternal) out = total;
  }
  freeReplyObject(r);
  return out;
}

absl::Status RedisConn::FlushAll() {
  auto* r = static_cast<redisReply*>(redisCommand(ctx_, "FLUSHALL"));
  if (r == nullptr) return absl::UnavailableError(absl::StrCat("redis FLUSHALL: ", ctx_->errstr));
  const bool ok = r->type == REDIS_REPLY_STATUS;
  freeReplyObject(r);
  return ok ? absl::OkStatus() : absl::InternalError("redis FLUSHALL refused");
}

absl::StatusOr<pid_t> RedisConn::ServerPid() {
  auto* r = static_cast<redisReply*>(redisCommand(ctx_, "INFO server"));
  if (r == nullptr) return absl::UnavailableError(absl::StrCat("redis INFO: ", ctx_->errstr));
  std::string info = r->type == REDIS_REPLY_STRING ? std::string(r->str, r->len) : "";
  freeReplyObject(r);
  const size_t at = info.find("process_id:");
  long pid = 0;
  if (at == std::string::npos ||
      !absl::SimpleAtoi(absl::StripAsciiWhitespace(absl::string_view(info).substr(at + 11, info.find('\n', at) - at - 11)),
                        &pid)) {
    return absl::InternalError("redis INFO server names no process_id");
  }
  return static_cast<pid_t>(pid);
}

}  // namespace kvhub::bench
