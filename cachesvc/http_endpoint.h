#pragma once
// HttpEndpoint: kvhubd's HTTP listener (cpp-httplib) on the metrics port:
//   /healthz    200 "ok" while the process runs
//   /readyz     200 "ready" while serving, 503 "draining" after SIGTERM
//   /metrics    Prometheus text exposition (version 0.0.4)
//   /dashboard  a self-refreshing HTML page over /metrics (hit rate, tiers, bandwidth)
//
// Thread safety: Start/Stop from one thread; handlers run on up to `max_threads`
// threads, started as connections need them (cachesvc/http_task_queue.h: idle
// connections never hold up a probe until that many are open), and call the
// given callbacks concurrently.

#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"

namespace httplib {
class Server;
}

namespace kvhub::cachesvc {

class HttpEndpoint {
 public:
  struct Callbacks {
    std::function<bool()> serving;            // false while draining
    std::function<std::string()> metrics;     // Prometheus text
  };

  // Binds HOST:PORT (port 0 = ephemeral) and starts serving on a background thread.
  // Returns the bound "HOST:PORT". UNAVAILABLE if the address cannot be bound.
  static absl::StatusOr<std::unique_ptr<HttpEndpoint>> Start(const std::string& address, int max_threads,
                                                             Callbacks callbacks);
  ~HttpEndpoint();  // Stops.

  const std::string& address() const { return address_; }
  void Stop();

 private:
  HttpEndpoint() = default;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  std::string address_;
  Callbacks callbacks_;
};

// The /dashboard page (static HTML+JS that polls /metrics).
const char* DashboardHtml();

}  // namespace kvhub::cachesvc
