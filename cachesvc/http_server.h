#pragma once
// HttpServer: the small HTTP/1.1 server behind kvhubd's metrics port (probes,
// Prometheus scrapes, the dashboard). It serves GET and HEAD of a fixed set of
// paths from ONE event-loop thread (epoll), so no connection ever holds a thread:
// cpp-httplib and civetweb serve each connection on a thread until it ends, and
// their timeouts apply per read, so clients sending a header byte a second (130
// of them, session 15) kept every thread and starved /healthz until Kubernetes
// restarted the pod and its cache was lost. Here each phase of a connection has
// a deadline of its own, whatever bytes arrive:
//   - idle:    a connection with no bytes of a request is closed after
//              `idle_timeout` (a fresh connection, or a kept-alive one after a
//              response);
//   - request: the request head must be complete within `request_timeout` of
//              the phase start (a body is dropped as it arrives, never buffered);
//   - write:   the whole response must be handed to the kernel within
//              `write_timeout`;
// and at `max_connections` open the connection that has waited longest for its
// request is closed to make room, so a new probe gets in. A connection past the
// request or write deadline, or evicted, is reset; one idle after a response, or
// closing after it (a lingering close, at most 1 s), gets a FIN, so a slow reader
// still receives the response the kernel holds. Each pass of the loop answers at
// most 8 pipelined requests per connection and accepts at most 64 connections,
// after reading the requests already sent, so neither a pipelining client nor a
// burst of connections holds up a probe.
//
// Requests: HTTP/1.0 and 1.1 (1.1 with exactly one Host header), keep-alive and
// pipelining (also before a half-close: every request sent is answered), origin-form
// and absolute-form targets (the query string is ignored). GET/HEAD of a registered
// path: its handler; another method on a registered path: 405 with
// `Allow: GET, HEAD`; an unregistered path: 404; a body larger than
// `max_body_bytes`: 413 and close; a Transfer-Encoding: 501 and close; a head
// larger than `max_head_bytes`: 431 and close; anything unparsable (a bare CR, a
// Content-Length that is not digits): 400 and close. Answers to HEAD never carry a
// body, errors included.
//
// Thread safety: Start and Stop from one thread. Handlers run on the loop thread,
// one at a time, and must not block for long: every other connection waits.

#include <chrono>
#include <cstddef>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace kvhub::cachesvc {

struct HttpServerConfig {
  // Connections open at once; at the limit the one that has waited longest for its
  // request is closed. 4 .. 1000000 (each costs a descriptor and at most a request
  // head of memory, plus the response being sent).
  size_t max_connections = 4096;
  // No byte of a request for this long: closed (keep-alive and fresh connections).
  std::chrono::milliseconds idle_timeout{2000};
  // From the phase start to a complete request: closed without a response after it.
  std::chrono::milliseconds request_timeout{5000};
  // To send one whole response.
  std::chrono::milliseconds write_timeout{10000};
  // Request line and headers; a larger head gets 431. 1 KiB .. 1 MiB.
  size_t max_head_bytes = 16 * 1024;
  // Bodies up to this size are dropped as they arrive (the endpoints take none); larger: 413.
  size_t max_body_bytes = 64 * 1024;

  // OK, or INVALID_ARGUMENT naming the first field out of range.
  absl::Status Validate() const;
};

struct HttpRequest {
  std::string method;  // as sent ("GET", "HEAD", ...)
  std::string path;    // without the query string
};

struct HttpResponse {
  int status = 200;
  std::string content_type = "text/plain";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;  // extra headers (Location, ...)
};

using HttpHandler = std::function<HttpResponse(const HttpRequest&)>;

class HttpServer {
 public:
  // Binds HOST:PORT (IPv4, IPv6 in brackets or a name; port 0 = ephemeral, without
  // SO_REUSEPORT so a second server cannot share the port) and starts the loop thread.
  // `routes` maps exact paths to their GET/HEAD handler. INVALID_ARGUMENT for a bad
  // address or config, UNAVAILABLE when the address cannot be bound.
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(const std::string& address,
                                                           std::map<std::string, HttpHandler> routes,
                                                           HttpServerConfig config = {});
  ~HttpServer();  // Stops.
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // The bound port.
  int port() const { return port_; }
  // The bound "HOST:PORT": the host as given (IPv6 in brackets), except that a "[::]"
  // that fell back to IPv4 on a kernel without IPv6 reads "0.0.0.0".
  const std::string& address() const { return address_; }
  // Closes the listener and every connection, joins the loop. Idempotent.
  void Stop();

 private:
  struct Connection;
  class Loop;
  HttpServer() = default;

  int port_ = 0;
  std::string address_;
  std::unique_ptr<Loop> loop_;
  std::thread thread_;
};

}  // namespace kvhub::cachesvc
