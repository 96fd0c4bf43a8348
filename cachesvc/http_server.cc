#include "cachesvc/http_server.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <optional>
#include <unordered_map>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "common/log.h"

namespace kvhub::cachesvc {
namespace {

using Clock = std::chrono::steady_clock;

// How long a connection we close after its response may still send (the rest of a
// refused body): closing with unread input would reset the connection and could
// destroy the response before the client reads it.
constexpr std::chrono::milliseconds kLingerTimeout{1000};
// After running out of descriptors the listener rests this long (the loop would spin).
constexpr std::chrono::milliseconds kAcceptPause{100};
// Per pass of the loop: requests answered on one connection (a client pipelining
// thousands of /metrics must not hold up the probes) and connections accepted (so
// requests already sent are read before a burst of new connections evicts them).
constexpr int kRequestsPerPass = 8;
constexpr int kAcceptsPerPass = 64;

const char* Reason(int status) {
  switch (status) {
    case 200: return "OK";
    case 302: return "Found";
    case 400: return "Bad Request";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 413: return "Content Too Large";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 505: return "HTTP Version Not Supported";
    default: return "Unknown";
  }
}

// One request parsed from the front of a connection's input.
struct Parsed {
  enum class Kind { kNeedMore, kRequest, kReject } kind = Kind::kNeedMore;
  HttpRequest request;
  bool keep_alive = false;
  size_t consumed = 0;  // head bytes
  uint64_t body = 0;    // body bytes after the head, dropped as they arrive
  int status = 0;       // kReject: the error response
  std::string message;  // kReject
};

Parsed Reject(int status, std::string message) {
  Parsed p;
  p.kind = Parsed::Kind::kReject;
  p.status = status;
  p.message = std::move(message);
  return p;
}

bool IsMethodChar(char c) { return c >= 'A' && c <= 'Z'; }

Parsed ParseRequest(absl::string_view buf, const HttpServerConfig& config) {
  // The caller has dropped empty lines before the request line (RFC 9112 2.2).
  std::vector<absl::string_view> lines;
  size_t line_start = 0;
  size_t head_end = absl::string_view::npos;
  for (;;) {
    size_t nl = buf.find('\n', line_start);
    if (nl == absl::string_view::npos || nl > config.max_head_bytes) break;
    absl::string_view line = buf.substr(line_start, nl - line_start);
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.find('\r') != absl::string_view::npos) return Reject(400, "bare CR in the request head");
    line_start = nl + 1;
    if (line.empty()) {
      head_end = line_start;
      break;
    }
    lines.push_back(line);
  }
  if (head_end == absl::string_view::npos) {
    if (buf.size() > config.max_head_bytes) {
      return Reject(431, absl::StrCat("request head larger than ", config.max_head_bytes, " bytes"));
    }
    Parsed more;
    more.kind = Parsed::Kind::kNeedMore;
    return more;
  }

  std::vector<absl::string_view> parts = absl::StrSplit(lines[0], ' ');
  if (parts.size() != 3 || parts[0].empty() || parts[1].empty() ||
      !std::all_of(parts[0].begin(), parts[0].end(), IsMethodChar)) {
    return Reject(400, "malformed request line");
  }
  Parsed p;
  p.kind = Parsed::Kind::kRequest;
  p.request.method = std::string(parts[0]);
  if (parts[2] == "HTTP/1.1") {
    p.keep_alive = true;
  } else if (parts[2] == "HTTP/1.0") {
    p.keep_alive = false;
  } else if (absl::StartsWith(parts[2], "HTTP/")) {
    return Reject(505, "only HTTP/1.0 and HTTP/1.1 are served");
  } else {
    return Reject(400, "malformed request line");
  }
  absl::string_view target = parts[1];
  if (absl::StartsWith(target, "http://") || absl::StartsWith(target, "https://")) {
    target.remove_prefix(target.find("://") + 3);
    size_t slash = target.find('/');
    target = slash == absl::string_view::npos ? absl::string_view("/") : target.substr(slash);
  } else if (target.front() != '/' && target != "*") {
    return Reject(400, "malformed request target");
  }
  p.request.path = std::string(target.substr(0, target.find_first_of("?#")));

  std::optional<uint64_t> content_length;
  int hosts = 0;
  for (size_t i = 1; i < lines.size(); ++i) {
    absl::string_view line = lines[i];
    size_t colon = line.find(':');
    if (colon == absl::string_view::npos || colon == 0 || line.front() == ' ' || line.front() == '\t' ||
        line.substr(0, colon).find_first_of(" \t") != absl::string_view::npos) {
      return Reject(400, "malformed header line");
    }
    const std::string name = absl::AsciiStrToLower(line.substr(0, colon));
    const absl::string_view value = absl::StripAsciiWhitespace(line.substr(colon + 1));
    if (name == "content-length") {
      uint64_t n = 0;
      if (value.empty() || !std::all_of(value.begin(), value.end(), absl::ascii_isdigit) ||
          !absl::SimpleAtoi(value, &n) || (content_length.has_value() && *content_length != n)) {
        return Reject(400, "bad Content-Length");
      }
      content_length = n;
    } else if (name == "host") {
      ++hosts;
    } else if (name == "transfer-encoding") {
      return Reject(501, "request bodies with a Transfer-Encoding are not accepted");
    } else if (name == "connection") {
      for (absl::string_view token : absl::StrSplit(value, ',')) {
        token = absl::StripAsciiWhitespace(token);
        if (absl::EqualsIgnoreCase(token, "close")) p.keep_alive = false;
        if (absl::EqualsIgnoreCase(token, "keep-alive")) p.keep_alive = true;
      }
    }
  }
  if (parts[2] == "HTTP/1.1" && hosts != 1) {  // RFC 9112 3.2
    return Reject(400, hosts == 0 ? "HTTP/1.1 request without a Host header" : "more than one Host header");
  }
  p.body = content_length.value_or(0);
  if (p.body > config.max_body_bytes) {
    return Reject(413, absl::StrCat("request body larger than ", config.max_body_bytes, " bytes"));
  }
  p.consumed = head_end;
  return p;
}

std::string Serialize(const HttpResponse& r, bool with_body, bool keep_alive) {
  std::string out = absl::StrCat("HTTP/1.1 ", r.status, " ", Reason(r.status), "\r\nContent-Type: ",
                                 r.content_type, "\r\nContent-Length: ", r.body.size(),
                                 "\r\nConnection: ", keep_alive ? "keep-alive" : "close", "\r\n");
  for (const auto& [name, value] : r.headers) absl::StrAppend(&out, name, ": ", value, "\r\n");
  out += "\r\n";
  if (with_body) out += r.body;
  return out;
}

HttpResponse TextResponse(int status, absl::string_view text) {
  HttpResponse r;
  r.status = status;
  r.body = absl::StrCat(text, "\n");
  return r;
}

}  // namespace

absl::Status HttpServerConfig::Validate() const {
  if (max_connections < 4 || max_connections > 1000000) {
    return absl::InvalidArgumentError("http max_connections must be 4 .. 1000000");
  }
  for (const auto& [name, value] : {std::pair{"idle_timeout", idle_timeout}, std::pair{"request_timeout", request_timeout},
                                    std::pair{"write_timeout", write_timeout}}) {
    if (value.count() < 1 || value.count() > 3600 * 1000) {
      return absl::InvalidArgumentError(absl::StrCat("http ", name, " must be 1 ms .. 1 h"));
    }
  }
  if (max_head_bytes < 1024 || max_head_bytes > 1024 * 1024) {
    return absl::InvalidArgumentError("http max_head_bytes must be 1 KiB .. 1 MiB");
  }
  if (max_body_bytes > 16 * 1024 * 1024) return absl::InvalidArgumentError("http max_body_bytes must be <= 16 MiB");
  return absl::OkStatus();
}

struct HttpServer::Connection {
  enum class State { kReading, kWriting, kLingering };
  int fd = -1;
  State state = State::kReading;
  Clock::time_point phase_start;
  std::string in;
  std::string out;
  size_t out_done = 0;
  bool close_after_write = false;
  bool peer_closed = false;  // the client shut down its side: answer what it sent, then close
  uint64_t skip = 0;         // body bytes of the last request still to drop as they arrive
  size_t scanned = 0;        // `in` holds no blank line (end of a head) before this offset
  bool pending = false;      // in the loop's pending list (requests left over from a pass)
};

class HttpServer::Loop {
 public:
  Loop(int listen_fd, int wake_fd, int epoll_fd, std::map<std::string, HttpHandler> routes, HttpServerConfig config)
      : listen_fd_(listen_fd), wake_fd_(wake_fd), epoll_fd_(epoll_fd), routes_(std::move(routes)), config_(config) {}
  ~Loop() {
    for (auto& [fd, conn] : conns_) ::close(fd);
    ::close(listen_fd_);
    ::close(wake_fd_);
    ::close(epoll_fd_);
  }

  void Run() {
    epoll_event events[64];
    while (!stopping_) {
      const Clock::time_point next = ExpireDeadlines();
      const auto wait = std::chrono::duration_cast<std::chrono::milliseconds>(next - Clock::now()).count() + 1;
      const int timeout = pending_.empty() ? static_cast<int>(std::clamp<int64_t>(wait, 0, 1000)) : 0;
      const int n = epoll_wait(epoll_fd_, events, 64, timeout);
      if (n < 0 && errno != EINTR) {
        KVHUB_LOG(error, "http: epoll_wait: {}", std::strerror(errno));
        return;
      }
      bool accept = false;
      for (int i = 0; i < n; ++i) {
        const int fd = events[i].data.fd;
        if (fd == wake_fd_) {
          stopping_ = true;
        } else if (fd == listen_fd_) {
          accept = true;  // after the connections' events: their requests first
        } else if (auto it = conns_.find(fd); it != conns_.end()) {
          OnEvent(*it->second, events[i].events);
        }
      }
      // Pipelined requests left over from the last pass, a few per connection.
      std::vector<int> pending;
      pending.swap(pending_);
      for (int fd : pending) {
        auto it = conns_.find(fd);
        if (it == conns_.end()) continue;
        it->second->pending = false;
        if (it->second->state == Connection::State::kReading) Process(*it->second);
      }
      if (accept) Accept();
    }
  }

  void Wake() {
    const uint64_t one = 1;
    (void)!::write(wake_fd_, &one, sizeof(one));
  }

 private:
  Clock::time_point Deadline(const Connection& c) const {
    switch (c.state) {
      case Connection::State::kReading:
        return c.phase_start + (c.in.empty() ? config_.idle_timeout : config_.request_timeout);
      case Connection::State::kWriting:
        return c.phase_start + config_.write_timeout;
      case Connection::State::kLingering:
        return c.phase_start + kLingerTimeout;
    }
    return c.phase_start;
  }

  // Closes the connections past their deadline; returns the next deadline.
  Clock::time_point ExpireDeadlines() {
    const Clock::time_point now = Clock::now();
    Clock::time_point next = now + std::chrono::seconds(1);
    if (listener_paused_ && now >= resume_accept_at_) {
      listener_paused_ = false;
      Watch(listen_fd_, EPOLLIN, EPOLL_CTL_MOD);
    }
    if (listener_paused_) next = std::min(next, resume_accept_at_);
    std::vector<std::pair<int, bool>> expired;  // fd, abort
    for (const auto& [fd, conn] : conns_) {
      const Clock::time_point d = Deadline(*conn);
      if (d <= now) {
        // A reset for a request never completed or a response not taken; a FIN after an
        // idle keep-alive or a lingering close, whose response the kernel may still be
        // delivering to a slow reader (a reset would destroy it).
        const bool done = conn->state == Connection::State::kLingering ||
                          (conn->state == Connection::State::kReading && conn->in.empty());
        expired.emplace_back(fd, !done);
      } else {
        next = std::min(next, d);
      }
    }
    for (const auto& [fd, abort] : expired) Close(fd, abort);
    return next;
  }

  void Watch(int fd, uint32_t events, int op) {
    epoll_event ev{};
    ev.events = events;
    ev.data.fd = fd;
    if (epoll_ctl(epoll_fd_, op, fd, &ev) != 0 && op != EPOLL_CTL_DEL) {
      KVHUB_LOG(warn, "http: epoll_ctl: {}", std::strerror(errno));
    }
  }

  // abort: reset the connection (SO_LINGER 0) instead of a FIN after what is queued:
  // for connections past a deadline or evicted, so a client that stopped reading
  // cannot leave megabytes of response queued in the kernel after the close.
  void Close(int fd, bool abort = false) {
    Watch(fd, 0, EPOLL_CTL_DEL);
    if (abort) {
      const linger reset{1, 0};
      (void)setsockopt(fd, SOL_SOCKET, SO_LINGER, &reset, sizeof(reset));
    }
    ::close(fd);
    conns_.erase(fd);
  }

  // The connection that has waited longest for a request (or, if none is waiting,
  // the oldest) makes room for a new one.
  bool EvictOne() {
    int victim = -1;
    bool victim_reading = false;
    Clock::time_point oldest = Clock::time_point::max();
    for (const auto& [fd, conn] : conns_) {
      const bool reading = conn->state == Connection::State::kReading;
      if ((reading && !victim_reading) || ((reading == victim_reading) && conn->phase_start < oldest)) {
        victim = fd;
        victim_reading = reading;
        oldest = conn->phase_start;
      }
    }
    if (victim < 0) return false;
    Close(victim, /*abort=*/true);
    return true;
  }

  void Accept() {
    for (int accepted = 0; accepted < kAcceptsPerPass; ++accepted) {  // the rest on the next pass
      const int fd = accept4(listen_fd_, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
      if (fd < 0) {
        if (errno == EINTR || errno == ECONNABORTED) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) return;
        if ((errno == EMFILE || errno == ENFILE) && EvictOne()) continue;
        KVHUB_LOG(warn, "http: accept: {}; not accepting for {} ms", std::strerror(errno), kAcceptPause.count());
        listener_paused_ = true;
        resume_accept_at_ = Clock::now() + kAcceptPause;
        Watch(listen_fd_, 0, EPOLL_CTL_MOD);
        return;
      }
      if (conns_.size() >= config_.max_connections) EvictOne();
      const int one = 1;
      (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      auto conn = std::make_unique<Connection>();
      conn->fd = fd;
      conn->phase_start = Clock::now();
      conns_[fd] = std::move(conn);
      Watch(fd, EPOLLIN, EPOLL_CTL_ADD);
    }
  }

  void OnEvent(Connection& c, uint32_t events) {
    if (c.state == Connection::State::kWriting) {
      if ((events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) == 0) return;
      if (!Flush(c)) return;  // closed
    } else {
      if ((events & (EPOLLIN | EPOLLERR | EPOLLHUP)) == 0) return;
      if (!ReadAvailable(c)) return;  // closed
    }
    // Also pipelined requests after a response. A connection already in the pending
    // list is answered there, so it gets kRequestsPerPass per pass, not that per event.
    if (c.state == Connection::State::kReading && !c.pending) Process(c);
  }

  // Whether `c.in` holds a whole head (a blank line) or more than a head may be: only
  // then is it parsed. The scan resumes where the last one stopped, so a head sent a
  // few bytes at a time costs linear work (it was parsed whole on every read).
  bool HeadComplete(Connection& c) const {
    if (c.in.size() > config_.max_head_bytes) return true;
    for (size_t nl = c.in.find('\n', c.scanned); nl != std::string::npos; nl = c.in.find('\n', nl + 1)) {
      const size_t next = nl + 1;
      if (next < c.in.size() && c.in[next] == '\n') return true;
      if (next + 1 < c.in.size() && c.in[next] == '\r' && c.in[next + 1] == '\n') return true;
      if (next >= c.in.size() || (next + 1 >= c.in.size() && c.in[next] == '\r')) {
        c.scanned = nl;  // undecided until more arrives
        return false;
      }
    }
    c.scanned = c.in.size();
    return false;
  }

  // Never buffer more than one request head can be: the parser decides before. Bodies
  // are dropped as they arrive (Connection::skip), never buffered.
  size_t BufferCap() const { return config_.max_head_bytes + 4; }

  // Reads what the socket holds (up to BufferCap, and at most kReadPerPass bytes per
  // call: a body being skipped, or a lingering connection's input being dropped,
  // never fills the buffer, and a client that sends as fast as the loop reads kept
  // it here, away from every other connection and from the deadlines; the socket
  // stays readable, so the rest is read on a later pass). Returns false when the
  // connection was closed.
  bool ReadAvailable(Connection& c) {
    static constexpr size_t kReadPerPass = 256 << 10;
    char buf[16384];
    for (size_t read = 0; read < kReadPerPass;) {
      // Full: Process answers or refuses what is there before more is read.
      if (c.state != Connection::State::kLingering && c.in.size() >= BufferCap()) return true;
      const ssize_t n = ::recv(c.fd, buf, sizeof(buf), 0);
      if (n > 0) {
        read += static_cast<size_t>(n);
        size_t keep = static_cast<size_t>(n);
        const size_t dropped = static_cast<size_t>(std::min<uint64_t>(c.skip, keep));  // a body
        c.skip -= dropped;
        keep -= dropped;
        if (c.state != Connection::State::kLingering) c.in.append(buf + dropped, keep);  // else dropped
        continue;
      }
      if (n == 0) {
        if (c.state == Connection::State::kLingering || c.in.empty()) {
          Close(c.fd);
          return false;
        }
        c.peer_closed = true;
        return true;
      }
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return true;
      Close(c.fd);  // reset by the peer, ...
      return false;
    }
    return true;  // more may wait: level-triggered, so the next pass reads on
  }

  // Answers the complete requests at the front of the input, in order, up to
  // kRequestsPerPass; the rest wait in pending_ for the next pass.
  void Process(Connection& c) {
    const int fd = c.fd;
    for (int answered = 0; c.state == Connection::State::kReading; ++answered) {
      if (answered == kRequestsPerPass) {
        if (!c.pending) pending_.push_back(fd);  // once: duplicates answered it many times a pass
        c.pending = true;
        return;
      }
      // Empty lines before a request are ignored (RFC 9112 2.2); dropping them here
      // keeps them from filling the buffer.
      const size_t junk = std::min(c.in.find_first_not_of("\r\n"), c.in.size());
      if (junk > 0) {
        c.in.erase(0, junk);
        c.scanned = 0;
      }
      Parsed p;  // kNeedMore
      if (HeadComplete(c)) p = ParseRequest(c.in, config_);
      if (p.kind == Parsed::Kind::kNeedMore && c.in.size() >= BufferCap()) {
        p = Reject(400, "malformed request");  // cannot happen: a whole request fits the buffer
      }
      if (p.kind == Parsed::Kind::kNeedMore) {
        if (c.peer_closed) Close(fd);  // the client left with half a request
        return;
      }
      if (p.kind == Parsed::Kind::kReject) {
        const bool head = absl::StartsWith(c.in, "HEAD ");
        c.in.clear();
        c.scanned = 0;
        Respond(c, TextResponse(p.status, p.message), /*with_body=*/!head, /*keep_alive=*/false);
      } else {
        // The body (the endpoints take none) is dropped, here and as it arrives.
        c.in.erase(0, p.consumed);
        const size_t body_here = static_cast<size_t>(std::min<uint64_t>(p.body, c.in.size()));
        c.in.erase(0, body_here);
        c.scanned = 0;
        c.skip = p.body - body_here;
        const bool head = p.request.method == "HEAD";
        // A client that shut down its side after pipelining: answer each request it
        // sent, the last with Connection: close.
        bool keep_alive = p.keep_alive;
        if (c.peer_closed && keep_alive) {
          keep_alive = c.skip == 0 && ParseRequest(c.in.substr(std::min(c.in.size(), c.in.find_first_not_of("\r\n"))),
                                                   config_).kind == Parsed::Kind::kRequest;
        }
        Respond(c, Route(p.request), !head, keep_alive);
      }
      if (!Flush(c)) return;  // closed
    }
  }

  HttpResponse Route(const HttpRequest& request) const {
    auto it = routes_.find(request.path);
    if (it == routes_.end()) return TextResponse(404, absl::StrCat("no such path: ", request.path));
    if (request.method != "GET" && request.method != "HEAD") {
      HttpResponse r = TextResponse(405, "method not allowed: use GET or HEAD");
      r.headers.emplace_back("Allow", "GET, HEAD");
      return r;
    }
    return it->second(request);
  }

  void Respond(Connection& c, const HttpResponse& r, bool with_body, bool keep_alive) {
    c.out = Serialize(r, with_body, keep_alive);
    c.out_done = 0;
    c.close_after_write = !keep_alive;
    c.state = Connection::State::kWriting;
    c.phase_start = Clock::now();
  }

  // Sends what it can of the response. Returns false when the connection was closed.
  bool Flush(Connection& c) {
    while (c.out_done < c.out.size()) {
      const ssize_t n = ::send(c.fd, c.out.data() + c.out_done, c.out.size() - c.out_done, MSG_NOSIGNAL);
      if (n > 0) {
        c.out_done += static_cast<size_t>(n);
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        Watch(c.fd, EPOLLOUT, EPOLL_CTL_MOD);
        return true;
      }
      Close(c.fd);
      return false;
    }
    c.out.clear();
    c.out.shrink_to_fit();
    c.phase_start = Clock::now();
    if (c.close_after_write) {
      // Lingering close: stop sending, drop what the client still sends, close on its
      // EOF or after kLingerTimeout.
      ::shutdown(c.fd, SHUT_WR);
      c.state = Connection::State::kLingering;
      c.in.clear();
      Watch(c.fd, EPOLLIN, EPOLL_CTL_MOD);
      return ReadAvailable(c);
    }
    c.state = Connection::State::kReading;
    Watch(c.fd, EPOLLIN, EPOLL_CTL_MOD);
    return true;
  }

  const int listen_fd_;
  const int wake_fd_;
  const int epoll_fd_;
  const std::map<std::string, HttpHandler> routes_;
  const HttpServerConfig config_;
  bool stopping_ = false;
  bool listener_paused_ = false;
  Clock::time_point resume_accept_at_;
  std::unordered_map<int, std::unique_ptr<Connection>> conns_;
  std::vector<int> pending_;  // connections with requests left over from this pass
};

absl::StatusOr<std::unique_ptr<HttpServer>> HttpServer::Start(const std::string& address,
                                                              std::map<std::string, HttpHandler> routes,
                                                              HttpServerConfig config) {
  if (absl::Status s = config.Validate(); !s.ok()) return s;
  const size_t colon = address.rfind(':');
  int port = -1;
  if (colon == std::string::npos || !absl::SimpleAtoi(address.substr(colon + 1), &port) || port < 0 ||
      port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("http_address '", address, "' is not HOST:PORT"));
  }
  std::string host = address.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);

  // "[::]" listens on IPv6 and IPv4 alike (IPv6-only clusters probe and scrape the
  // pod's IPv6 address), and on IPv4 alone where the kernel has no IPv6, as gRPC
  // treats its wildcard.
  const bool any_family = host == "::";
  const std::string service = std::to_string(port);
  int listen_fd = -1;
  std::string last_error = "no address";
  bool no_ipv6 = false;  // this kernel cannot listen on IPv6
  std::string bound_host;
  for (const std::string& try_host : any_family ? std::vector<std::string>{"::", "0.0.0.0"}
                                                : std::vector<std::string>{host}) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    addrinfo* found = nullptr;
    if (int rc = getaddrinfo(try_host.empty() ? nullptr : try_host.c_str(), service.c_str(), &hints, &found);
        rc != 0) {
      if (any_family) {  // no IPv6 here: the IPv4 wildcard next
        no_ipv6 = true;
        continue;
      }
      return absl::InvalidArgumentError(absl::StrCat("http_address '", address, "': ", gai_strerror(rc)));
    }
    for (addrinfo* a = found; a != nullptr && listen_fd < 0; a = a->ai_next) {
      const int fd = ::socket(a->ai_family, a->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, a->ai_protocol);
      if (fd < 0) {
        no_ipv6 |= a->ai_family == AF_INET6 && errno == EAFNOSUPPORT;
        last_error = std::strerror(errno);
        continue;
      }
      // SO_REUSEADDR only: a restart may rebind while old connections sit in TIME_WAIT;
      // no SO_REUSEPORT, which would let a second kvhubd share the port and its probes.
      const int yes = 1, no = 0;
      (void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
      // Dual-stack whatever net.ipv6.bindv6only says.
      if (any_family && a->ai_family == AF_INET6) (void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &no, sizeof(no));
      if (::bind(fd, a->ai_addr, a->ai_addrlen) != 0 || ::listen(fd, SOMAXCONN) != 0) {
        no_ipv6 |= a->ai_family == AF_INET6 && errno == EADDRNOTAVAIL;
        last_error = std::strerror(errno);
        ::close(fd);
        continue;
      }
      listen_fd = fd;
      bound_host = try_host;
    }
    freeaddrinfo(found);
    // Only a missing IPv6 falls back: a port in use stays an error.
    if (listen_fd >= 0 || !no_ipv6) break;
  }
  if (listen_fd < 0) {
    return absl::UnavailableError(absl::StrCat("cannot bind http_address ", address, ": ", last_error));
  }
  sockaddr_storage bound{};
  socklen_t len = sizeof(bound);
  (void)getsockname(listen_fd, reinterpret_cast<sockaddr*>(&bound), &len);
  const int bound_port = bound.ss_family == AF_INET6 ? ntohs(reinterpret_cast<sockaddr_in6*>(&bound)->sin6_port)
                                                     : ntohs(reinterpret_cast<sockaddr_in*>(&bound)->sin_port);

  const int wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  const int epoll_fd = epoll_create1(EPOLL_CLOEXEC);
  if (wake_fd < 0 || epoll_fd < 0) {
    const std::string why = std::strerror(errno);
    ::close(listen_fd);
    if (wake_fd >= 0) ::close(wake_fd);
    if (epoll_fd >= 0) ::close(epoll_fd);
    return absl::ResourceExhaustedError(absl::StrCat("http: cannot create the event loop: ", why));
  }
  std::unique_ptr<HttpServer> server(new HttpServer());
  server->port_ = bound_port;
  server->address_ = absl::StrCat(absl::StrContains(bound_host, ':') ? absl::StrCat("[", bound_host, "]") : bound_host,
                                  ":", bound_port);
  server->loop_ = std::make_unique<Loop>(listen_fd, wake_fd, epoll_fd, std::move(routes), config);
  for (int fd : {listen_fd, wake_fd}) {
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.fd = fd;
    if (epoll_ctl(epoll_fd, EPOLL_CTL_ADD, fd, &ev) != 0) {
      return absl::ResourceExhaustedError(absl::StrCat("http: epoll_ctl: ", std::strerror(errno)));
    }
  }
  Loop* loop = server->loop_.get();
  server->thread_ = std::thread([loop] { loop->Run(); });
  return server;
}

HttpServer::~HttpServer() { Stop(); }

void HttpServer::Stop() {
  if (thread_.joinable()) {
    loop_->Wake();
    thread_.join();
  }
  loop_.reset();
}

}  // namespace kvhub::cachesvc
