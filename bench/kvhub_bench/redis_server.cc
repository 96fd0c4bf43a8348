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
#include <vector>

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

absl::StatusOr<std::unique_ptr<RedisServer>> RedisServer::Start(const std::string& binary) {
  if (access(binary.c_str(), X_OK) != 0) {
    return absl::NotFoundError(absl::StrCat(binary, " is not executable (Debian package redis-server)"));
  }
  absl::StatusOr<int> port = FreeLoopbackPort();
  if (!port.ok()) return port.status();
  std::unique_ptr<RedisServer> s(new RedisServer());
  s->port_ = *port;
  const std::string port_s = absl::StrCat(*port);
  std::vector<std::string> args = {binary,   "--port", port_s,       "--bind", "127.0.0.1",
                                   "--save", "",       "--appendonly", "no",   "--daemonize",
                                   "no",     "--loglevel", "warning"};
  const pid_t pid = fork();
  if (pid < 0) return absl::InternalError(absl::StrCat("fork: ", strerror(errno)));
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    // redis-server logs on its stdout; the bench's stdout carries only its table and JSON.
    if (dup2(STDERR_FILENO, STDOUT_FILENO) < 0) _exit(126);
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(binary.c_str(), argv.data());
    _exit(127);
  }
  s->pid_ = pid;
  const absl::Time deadline = absl::Now() + absl::Seconds(10);
  while (absl::Now() < deadline) {
    absl::StatusOr<std::unique_ptr<RedisConn>> c = RedisConn::Connect(*port);
    if (c.ok()) return s;
    int st;
    if (waitpid(pid, &st, WNOHANG) == pid) {
      s->pid_ = -1;
      return absl::InternalError("redis-server exited at start");
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
  freeReplyObject(r);
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
  freeReplyObject(r);
  return ok ? absl::OkStatus() : absl::InternalError("redis SET refused");
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

absl::Status RedisConn::FlushAll() {
  auto* r = static_cast<redisReply*>(redisCommand(ctx_, "FLUSHALL"));
  if (r == nullptr) return absl::UnavailableError("redis FLUSHALL failed");
  freeReplyObject(r);
  return absl::OkStatus();
}

}  // namespace kvhub::bench
