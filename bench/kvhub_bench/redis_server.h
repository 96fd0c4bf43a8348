#pragma once
// The redis-server baseline of kvhub-bench: starts /usr/bin/redis-server on a
// free loopback port (no persistence, memory bounded by --maxmemory with
// allkeys-lru eviction, as a kvhub shard's capacity bounds it) and stops it;
// hiredis connections to it. The child runs in a process group of its own, so a
// terminal's Ctrl-C (SIGINT to the bench's group) does not stop it under the
// bench; it still dies with the bench (PR_SET_PDEATHSIG) and is stopped by the
// destructor. Not thread-safe; one owner.

#include <sys/types.h>

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

struct redisContext;

namespace kvhub::bench {

class RedisServer {
 public:
  // Starts `binary` with `--maxmemory maxmemory_bytes --maxmemory-policy allkeys-lru`
  // and waits until it answers PING (up to 10 s) as the process it started: another
  // redis-server that took the port meanwhile is never used.
  static absl::StatusOr<std::unique_ptr<RedisServer>> Start(const std::string& binary, uint64_t maxmemory_bytes);
  ~RedisServer();  // SIGTERM, then SIGKILL after 5 s; reaps the child
  int port() const { return port_; }

 private:
  RedisServer() = default;
  pid_t pid_ = -1;
  int port_ = 0;
};

// One hiredis connection (blocking). Thread-compatible: one per thread.
class RedisConn {
 public:
  static absl::StatusOr<std::unique_ptr<RedisConn>> Connect(int port);
  ~RedisConn();
  absl::Status Set(const std::string& key, const void* data, size_t len);
  // GET into the hiredis reply; returns the value's length (NOT_FOUND if nil).
  absl::StatusOr<size_t> Get(const std::string& key);
  // MGET of `keys` (at most 64); returns the values' total length (NOT_FOUND if any is nil).
  absl::StatusOr<size_t> MGet(const std::string* keys, size_t n);
  absl::Status FlushAll();
  // The server's process id (INFO server).
  absl::StatusOr<pid_t> ServerPid();

 private:
  redisContext* ctx_ = nullptr;
};

// A TCP port on 127.0.0.1 that was free a moment ago.
absl::StatusOr<int> FreeLoopbackPort();

}  // namespace kvhub::bench
