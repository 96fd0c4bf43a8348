#pragma once
// HttpEndpoint: kvhubd's HTTP listener on the metrics port (cachesvc/http_server.h:
// one event-loop thread, per-phase deadlines, so neither idle nor trickling
// connections hold up a probe):
//   /healthz    200 "ok" while the process can serve; 503 and the reason once it
//               cannot (gRPC's listener stopped: restart it)
//   /readyz     200 "ready" while serving, 503 "draining" after SIGTERM, 503 and the
//               reason when /healthz fails
//   /metrics    Prometheus text exposition (version 0.0.4)
//   /dashboard  a self-refreshing HTML page over /metrics (hit rate, tiers, bandwidth)
//   /           302 to /dashboard
//
// Thread safety: Start/Stop from one thread; the callbacks run on the listener's
// thread, one at a time.

#include <functional>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "cachesvc/http_server.h"

namespace kvhub::cachesvc {

class HttpEndpoint {
 public:
  struct Callbacks {
    std::function<bool()> serving;            // false while draining
    std::function<std::string()> metrics;     // Prometheus text
    std::function<std::string()> broken;      // why the process cannot serve; "" while it can
  };

  // Binds HOST:PORT (port 0 = ephemeral) and starts serving on a background thread.
  // address() is then the bound "HOST:PORT". UNAVAILABLE if the address cannot be bound.
  static absl::StatusOr<std::unique_ptr<HttpEndpoint>> Start(const std::string& address,
                                                             const HttpServerConfig& config, Callbacks callbacks);
  ~HttpEndpoint();  // Stops.

  const std::string& address() const { return address_; }
  void Stop();

 private:
  HttpEndpoint() = default;
  Callbacks callbacks_;  // before server_: the handlers use it until server_ stops
  std::unique_ptr<HttpServer> server_;
  std::string address_;
};

// The /dashboard page (static HTML+JS that polls /metrics).
const char* DashboardHtml();

}  // namespace kvhub::cachesvc
