// HttpServer over real loopback sockets: what probes, scrapers and browsers send, what
// broken and hostile clients send, and that neither kind holds up the others.
#include "cachesvc/http_server.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/fd_limit.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace kvhub::cachesvc {
namespace {

using ::testing::HasSubstr;
using ::testing::StartsWith;
using Clock = std::chrono::steady_clock;

int Connect(int port) {
  const int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd >= 0 && connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof(a)) != 0) {
    close(fd);
    return -1;
  }
  return fd;
}

void SendAll(int fd, const std::string& data) {
  size_t done = 0;
  while (done < data.size()) {
    const ssize_t n = send(fd, data.data() + done, data.size() - done, MSG_NOSIGNAL);
    if (n <= 0) return;
    done += static_cast<size_t>(n);
  }
}

// Reads until the peer closes, `until` appears, or the timeout passes.
std::string Receive(int fd, std::chrono::milliseconds timeout, const std::string& until = "") {
  std::string got;
  const Clock::time_point end = Clock::now() + timeout;
  char buf[65536];
  while (Clock::now() < end) {
    pollfd p{fd, POLLIN, 0};
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(end - Clock::now()).count();
    if (poll(&p, 1, static_cast<int>(std::max<int64_t>(left, 1))) <= 0) break;
    const ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) break;
    got.append(buf, static_cast<size_t>(n));
    if (!until.empty() && got.find(until) != std::string::npos) break;
  }
  return got;
}

// True when the server closed the connection (EOF or reset) within the timeout.
bool ClosedWithin(int fd, std::chrono::milliseconds timeout) {
  const Clock::time_point end = Clock::now() + timeout;
  char buf[4096];
  while (Clock::now() < end) {
    pollfd p{fd, POLLIN, 0};
    if (poll(&p, 1, 50) <= 0) continue;
    const ssize_t n = recv(fd, buf, sizeof(buf), 0);
    if (n <= 0) return true;
  }
  return false;
}

// One request on a new connection; the whole answer (the server closes: Connection: close).
std::string Exchange(int port, const std::string& request, std::chrono::milliseconds timeout = std::chrono::seconds(2)) {
  const int fd = Connect(port);
  if (fd < 0) return "";
  SendAll(fd, request);
  std::string got = Receive(fd, timeout);
  close(fd);
  return got;
}

std::string Get(const std::string& path) {
  return absl::StrCat("GET ", path, " HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
}

class HttpServerTest : public ::testing::Test {
 protected:
  void StartServer(HttpServerConfig config = {}) {
    std::map<std::string, HttpHandler> routes;
    routes["/healthz"] = [](const HttpRequest&) {
      HttpResponse r;
      r.body = "ok\n";
      return r;
    };
    routes["/big"] = [](const HttpRequest&) {
      HttpResponse r;
      r.body = std::string(8 << 20, 'b');
      return r;
    };
    routes["/mid"] = [](const HttpRequest&) {
      HttpResponse r;
      r.body = std::string(200000, 'm');
      return r;
    };
    routes["/slow"] = [](const HttpRequest&) {  // 2 ms of work per request
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
      HttpResponse r;
      r.body = "slow\n";
      return r;
    };
    routes["/"] = [](const HttpRequest&) {
      HttpResponse r;
      r.status = 302;
      r.headers.emplace_back("Location", "/healthz");
      return r;
    };
    auto s = HttpServer::Start("127.0.0.1:0", std::move(routes), config);
    ASSERT_TRUE(s.ok()) << s.status();
    server_ = std::move(*s);
    EXPECT_EQ(server_->address(), absl::StrCat("127.0.0.1:", server_->port()));
  }
  int port() const { return server_->port(); }

  // /healthz answered within a probe's 1 s.
  void ExpectProbeAnswers() {
    const Clock::time_point start = Clock::now();
    const std::string got = Exchange(port(), Get("/healthz"), std::chrono::seconds(1));
    EXPECT_THAT(got, StartsWith("HTTP/1.1 200 OK\r\n"));
    EXPECT_LT(Clock::now() - start, std::chrono::seconds(1));
  }

  std::unique_ptr<HttpServer> server_;
};

TEST_F(HttpServerTest, AnswersGetHeadAndRefusesOtherMethodsAndPaths) {
  StartServer();
  std::string r = Exchange(port(), Get("/healthz"));
  EXPECT_THAT(r, StartsWith("HTTP/1.1 200 OK\r\n"));
  EXPECT_THAT(r, HasSubstr("Content-Length: 3\r\n"));
  EXPECT_THAT(r, HasSubstr("Connection: close\r\n"));
  EXPECT_EQ(r.substr(r.size() - 3), "ok\n");

  r = Exchange(port(), "HEAD /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  EXPECT_THAT(r, StartsWith("HTTP/1.1 200 OK\r\n"));
  EXPECT_THAT(r, HasSubstr("Content-Length: 3\r\n"));
  EXPECT_EQ(r.substr(r.size() - 4), "\r\n\r\n");  // no body

  r = Exchange(port(), "GET /healthz?x=1 HTTP/1.0\r\n\r\n");  // query ignored; 1.0 closes
  EXPECT_THAT(r, StartsWith("HTTP/1.1 200 OK\r\n"));
  r = Exchange(port(), "GET http://host:1/healthz HTTP/1.1\r\nHost: host:1\r\nConnection: close\r\n\r\n");  // absolute form
  EXPECT_THAT(r, StartsWith("HTTP/1.1 200 OK\r\n"));

  r = Exchange(port(), "POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello");
  EXPECT_THAT(r, StartsWith("HTTP/1.1 405 Method Not Allowed\r\n"));
  EXPECT_THAT(r, HasSubstr("Allow: GET, HEAD\r\n"));
  r = Exchange(port(), Get("/nope"));
  EXPECT_THAT(r, StartsWith("HTTP/1.1 404 Not Found\r\n"));
  r = Exchange(port(), Get("/"));
  EXPECT_THAT(r, StartsWith("HTTP/1.1 302 Found\r\n"));
  EXPECT_THAT(r, HasSubstr("Location: /healthz\r\n"));
}

// Bodies are dropped as they arrive, never buffered: a connection holds at most a
// request head, and the next request on it is read after the body.
TEST_F(HttpServerTest, ABodyIsSkippedAcrossReadsAndTheNextRequestServed) {
  StartServer();
  const int fd = Connect(port());
  ASSERT_GE(fd, 0);
  SendAll(fd, "POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 60000\r\n\r\n" + std::string(1000, 'b'));
  EXPECT_THAT(Receive(fd, std::chrono::seconds(2), "\r\n\r\n"), StartsWith("HTTP/1.1 405 "));
  for (int i = 0; i < 59; ++i) SendAll(fd, std::string(1000, 'b'));
  SendAll(fd, Get("/healthz"));
  EXPECT_THAT(Receive(fd, std::chrono::seconds(2)), StartsWith("HTTP/1.1 200 OK\r\n"));
  close(fd);
}

// A client that pipelines requests and then shuts down its side gets every answer,
// in order, and then the server closes the connection. (The last answer says
// Connection: close when the FIN had arrived by the time it was written; when the
// requests and the FIN come in separate reads it says keep-alive, and the close
// follows the FIN.)
TEST_F(HttpServerTest, PipelinedRequestsBeforeAHalfCloseAreAllAnswered) {
  HttpServerConfig config;
  config.idle_timeout = std::chrono::seconds(30);  // so only the half-close can end the connection
  StartServer(config);
  const int fd = Connect(port());
  ASSERT_GE(fd, 0);
  SendAll(fd, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\n\r\n");
  shutdown(fd, SHUT_WR);
  const std::string got = Receive(fd, std::chrono::seconds(2));
  const size_t ok = got.find("HTTP/1.1 200 OK");
  const size_t missing = got.find("HTTP/1.1 404 ");
  ASSERT_NE(ok, std::string::npos) << got;
  ASSERT_NE(missing, std::string::npos) << got;
  EXPECT_LT(ok, missing);
  EXPECT_THAT(got.substr(missing), HasSubstr("no such path: /nope\n"));  // the whole answer
  EXPECT_TRUE(ClosedWithin(fd, std::chrono::seconds(1))) << "the server kept the half-closed connection open";
  close(fd);
}

// A response the kernel has taken is not destroyed by a reset when its reader is slow:
// the lingering close and the keep-alive idle close end with a FIN.
TEST_F(HttpServerTest, ASlowReaderGetsTheWholeResponseAfterTheLingeringClose) {
  HttpServerConfig config;
  config.idle_timeout = std::chrono::milliseconds(300);
  StartServer(config);
  for (const bool keep_alive : {false, true}) {
    const int fd = Connect(port());
    ASSERT_GE(fd, 0);
    SendAll(fd, keep_alive ? "GET /mid HTTP/1.1\r\nHost: x\r\n\r\n" : Get("/mid"));
    std::this_thread::sleep_for(std::chrono::milliseconds(1500));  // past the 1 s linger and the idle timeout
    const std::string got = Receive(fd, std::chrono::seconds(2));
    EXPECT_THAT(got, StartsWith("HTTP/1.1 200 OK\r\n")) << keep_alive;
    EXPECT_EQ(got.size() - got.find("\r\n\r\n") - 4, 200000u) << keep_alive;
    close(fd);
  }
}

// One client pipelining many requests gets a few answered per pass of the loop, so a
// probe arriving meanwhile is answered long before the client's last request.
TEST_F(HttpServerTest, APipeliningClientDoesNotHoldUpAProbe) {
  StartServer();
  const int fd = Connect(port());
  ASSERT_GE(fd, 0);
  std::string burst;
  for (int i = 0; i < 300; ++i) absl::StrAppend(&burst, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n");
  ASSERT_LT(burst.size(), 16384u);  // one read's worth: all of it is buffered at once
  std::thread reader([fd] { Receive(fd, std::chrono::seconds(10), "slow\nHTTP/1.1 200 OK"); });
  SendAll(fd, burst);
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  const Clock::time_point start = Clock::now();
  EXPECT_THAT(Exchange(port(), Get("/healthz")), StartsWith("HTTP/1.1 200 OK\r\n"));
  // 300 x 2 ms = 600 ms if the burst were answered first; 8 per pass: ~16 ms.
  EXPECT_LT(Clock::now() - start, std::chrono::milliseconds(300));
  shutdown(fd, SHUT_RDWR);
  reader.join();
  close(fd);
}

TEST_F(HttpServerTest, KeepAliveAndPipelinedRequestsAreAnsweredInOrder) {
  StartServer();
  const int fd = Connect(port());
  ASSERT_GE(fd, 0);
  SendAll(fd, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
  std::string first = Receive(fd, std::chrono::seconds(2), "ok\n");
  EXPECT_THAT(first, HasSubstr("Connection: keep-alive\r\n"));
  // Two requests in one write, the second closing.
  SendAll(fd, "GET /nope HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  std::string rest = Receive(fd, std::chrono::seconds(2));
  const size_t not_found = rest.find("HTTP/1.1 404");
  const size_t ok = rest.find("HTTP/1.1 200");
  ASSERT_NE(not_found, std::string::npos) << rest;
  ASSERT_NE(ok, std::string::npos) << rest;
  EXPECT_LT(not_found, ok);
  close(fd);
}

TEST_F(HttpServerTest, MalformedOversizedAndBodyRequestsGetClearErrors) {
  StartServer();
  EXPECT_THAT(Exchange(port(), "NONSENSE\r\n\r\n"), StartsWith("HTTP/1.1 400 Bad Request\r\n"));
  EXPECT_THAT(Exchange(port(), "get /healthz HTTP/1.1\r\n\r\n"), StartsWith("HTTP/1.1 400 "));
  EXPECT_THAT(Exchange(port(), "GET healthz HTTP/1.1\r\n\r\n"), StartsWith("HTTP/1.1 400 "));
  EXPECT_THAT(Exchange(port(), "GET /healthz HTTP/2.0\r\n\r\n"), StartsWith("HTTP/1.1 505 "));
  EXPECT_THAT(Exchange(port(), "GET /healthz HTTP/1.1\r\nno colon here\r\n\r\n"), StartsWith("HTTP/1.1 400 "));
  for (const char* length : {"x", "+5", "-1", "", "1\r\nContent-Length: 2"}) {
    const std::string r = Exchange(port(), absl::StrCat("GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: ", length,
                                                        "\r\n\r\n"));
    EXPECT_THAT(r, StartsWith("HTTP/1.1 400 ")) << length;
    EXPECT_THAT(r, HasSubstr("bad Content-Length")) << length;
  }
  // HTTP/1.1 needs exactly one Host (RFC 9112 3.2); a bare CR inside the head could
  // make a proxy in front see other headers than we do.
  EXPECT_THAT(Exchange(port(), "GET /healthz HTTP/1.1\r\n\r\n"), HasSubstr("without a Host header"));
  EXPECT_THAT(Exchange(port(), "GET /healthz HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
              HasSubstr("more than one Host header"));
  EXPECT_THAT(Exchange(port(), "GET /healthz HTTP/1.1\r\nHost: x\r\nX: a\rContent-Length: 5\r\n\r\nhello"),
              HasSubstr("bare CR"));
  // An error answer to HEAD has no body either.
  const std::string head_error = Exchange(port(), "HEAD /healthz HTTP/1.1\r\n\r\n");
  EXPECT_THAT(head_error, StartsWith("HTTP/1.1 400 "));
  EXPECT_EQ(head_error.substr(head_error.size() - 4), "\r\n\r\n");
  EXPECT_THAT(Exchange(port(), "POST /healthz HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n"),
              StartsWith("HTTP/1.1 501 "));
  std::string big_body = "POST /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n" + std::string(200000, 'x');
  std::string r = Exchange(port(), big_body);
  EXPECT_THAT(r, StartsWith("HTTP/1.1 413 "));  // answered although the client is still sending
  EXPECT_THAT(r, HasSubstr("request body larger than 65536 bytes"));
  std::string huge_head = "GET /healthz HTTP/1.1\r\nX: " + std::string(20000, 'h') + "\r\n\r\n";
  EXPECT_THAT(Exchange(port(), huge_head), StartsWith("HTTP/1.1 431 "));
  // Empty lines before a request are ignored, not an error, and cannot fill the buffer.
  EXPECT_THAT(Exchange(port(), std::string(100000, '\n') + Get("/healthz")), StartsWith("HTTP/1.1 200 OK\r\n"));
  // The server still serves.
  ExpectProbeAnswers();
}

TEST_F(HttpServerTest, IdleAndHalfSentRequestsAreClosedAtTheirDeadlines) {
  HttpServerConfig config;
  config.idle_timeout = std::chrono::milliseconds(300);
  config.request_timeout = std::chrono::milliseconds(800);
  StartServer(config);
  const int idle = Connect(port());
  EXPECT_TRUE(ClosedWithin(idle, std::chrono::seconds(2)));
  close(idle);

  // One header byte every 100 ms: per-read timeouts would never fire; the request
  // deadline does.
  const int trickle = Connect(port());
  const Clock::time_point start = Clock::now();
  bool closed = false;
  const std::string request = Get("/healthz");
  for (size_t i = 0; i < request.size() - 4 && !closed; ++i) {
    if (send(trickle, &request[i], 1, MSG_NOSIGNAL) != 1) break;
    closed = ClosedWithin(trickle, std::chrono::milliseconds(100));
  }
  EXPECT_TRUE(closed || ClosedWithin(trickle, std::chrono::seconds(2)));
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(3));
  close(trickle);
  ExpectProbeAnswers();
}

// Session 15: 130 connections sending a header byte a second kept every one of
// cpp-httplib's threads and /healthz timed out for the whole run. Here 400 of them
// (and 400 idle ones; fewer under a low open file limit) leave every probe answered
// at once.
TEST_F(HttpServerTest, TricklingAndIdleConnectionsDoNotHoldUpProbes) {
  StartServer();
  // Both ends of every connection live in this process.
  absl::StatusOr<OpenFileLimits> limits = RaiseOpenFileLimit();
  ASSERT_TRUE(limits.ok()) << limits.status();
  const int n = static_cast<int>(std::min<uint64_t>(800, (limits->soft - 100) / 2));
  ASSERT_GE(n, 200) << "open file limit " << limits->soft;
  std::vector<int> fds;
  for (int i = 0; i < n; ++i) {
    const int fd = Connect(port());
    ASSERT_GE(fd, 0) << i;
    fds.push_back(fd);
  }
  const std::string request = "GET /healthz HTTP/1.1\r\nX-Slow: ";
  for (int round = 0; round < 5; ++round) {
    for (size_t i = 0; i < fds.size(); i += 2) SendAll(fds[i], std::string(1, request[round]));
    ExpectProbeAnswers();
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  for (int fd : fds) close(fd);
}

// A head that arrives a few bytes at a time, its line ends split across reads
// ("\r" in one, "\n" in the next), is answered once its blank line arrives. The
// server scans only the new bytes for it (it used to parse the whole buffer on every
// read: quadratic CPU on its one thread).
TEST_F(HttpServerTest, AHeadSentAFewBytesAtATimeIsAnswered) {
  StartServer();
  const int fd = Connect(port());
  ASSERT_GE(fd, 0);
  std::string head = "GET /healthz HTTP/1.1\r\nHost: x\r\n";
  for (int i = 0; i < 300; ++i) absl::StrAppend(&head, "X-Pad-", i, ": v\r\n");
  head += "\r\n";
  for (size_t at = 0; at < head.size(); at += 3) {
    SendAll(fd, head.substr(at, 3));
    if (at % 300 == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));  // separate reads
  }
  EXPECT_THAT(Receive(fd, std::chrono::seconds(2), "ok\n"), StartsWith("HTTP/1.1 200 OK\r\n"));
  // And a blank line split as "\r\n\r" + "\n" across two reads.
  SendAll(fd, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r");
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  EXPECT_EQ(Receive(fd, std::chrono::milliseconds(100)), "") << "answered before its head ended";
  SendAll(fd, "\n");
  EXPECT_THAT(Receive(fd, std::chrono::seconds(2), "ok\n"), StartsWith("HTTP/1.1 200 OK\r\n"));
  close(fd);
}

// At max_connections the connection waiting longest for its request makes room:
// a probe is answered even when the attacker holds every slot.
TEST_F(HttpServerTest, AtTheConnectionLimitTheOldestWaitingConnectionMakesRoom) {
  HttpServerConfig config;
  config.max_connections = 16;
  StartServer(config);
  std::vector<int> fds;
  for (int i = 0; i < 16; ++i) {
    fds.push_back(Connect(port()));
    SendAll(fds.back(), "GET /hea");
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  ExpectProbeAnswers();
  EXPECT_TRUE(ClosedWithin(fds[0], std::chrono::seconds(1)));  // the oldest went
  for (int fd : fds) close(fd);
}

// A client that asks for a large response and never reads it costs nothing but its
// own write deadline.
TEST_F(HttpServerTest, AClientThatDoesNotReadItsResponseHoldsUpNoOne) {
  HttpServerConfig config;
  config.write_timeout = std::chrono::milliseconds(500);
  StartServer(config);
  const int stuck = Connect(port());
  const int small = 4096;
  (void)setsockopt(stuck, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
  SendAll(stuck, Get("/big"));
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  ExpectProbeAnswers();
  std::this_thread::sleep_for(std::chrono::milliseconds(600));
  // Its deadline passed: reset, with most of the 8 MiB unsent (and none left queued).
  // (Closed with a FIN, the ~4 MiB the kernel had queued would trickle into this
  // 4 KiB window for a minute.)
  const Clock::time_point start = Clock::now();
  std::string got = Receive(stuck, std::chrono::seconds(5));
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(4));
  EXPECT_LT(got.size(), size_t{8} << 20);
  close(stuck);
  ExpectProbeAnswers();
}

TEST_F(HttpServerTest, StartRefusesBadAddressesConfigsAndPortsInUse) {
  StartServer();
  auto again = HttpServer::Start(absl::StrCat("127.0.0.1:", port()), {});
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(again.status().message()), HasSubstr("cannot bind"));
  EXPECT_EQ(HttpServer::Start("no-port", {}).status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(HttpServer::Start("127.0.0.1:70000", {}).status().code(), absl::StatusCode::kInvalidArgument);
  HttpServerConfig bad;
  bad.max_connections = 1;
  EXPECT_EQ(HttpServer::Start("127.0.0.1:0", {}, bad).status().code(), absl::StatusCode::kInvalidArgument);
  auto v6 = HttpServer::Start("[::1]:0", {});
  if (v6.ok()) {  // hosts without IPv6 refuse; both are fine
    EXPECT_GT((*v6)->port(), 0);
  }
}

// "[::]" answers over IPv4 and IPv6 (IPv6-only clusters probe and scrape the pod's
// IPv6 address; "0.0.0.0" listened on IPv4 only), whatever net.ipv6.bindv6only says.
TEST(HttpServerDualStackTest, TheIpv6WildcardAnswersBothFamilies) {
  std::map<std::string, HttpHandler> routes;
  routes["/healthz"] = [](const HttpRequest&) {
    HttpResponse r;
    r.body = "ok\n";
    return r;
  };
  auto s = HttpServer::Start("[::]:0", std::move(routes), {});
  ASSERT_TRUE(s.ok()) << s.status();
  const int port = (*s)->port();
  EXPECT_THAT(Exchange(port, Get("/healthz"), std::chrono::seconds(2)), StartsWith("HTTP/1.1 200 OK\r\n"));
  // The address reported (kvhubd's ready line) is the one bound: the IPv6 wildcard, or
  // the IPv4 one after the fallback.
  const std::string bound = (*s)->address();
  ASSERT_TRUE(bound == absl::StrCat("[::]:", port) || bound == absl::StrCat("0.0.0.0:", port)) << bound;
  if (bound != absl::StrCat("[::]:", port)) GTEST_SKIP() << "no IPv6 on this host: the IPv4 wildcard was used";
  const int fd6 = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd6 < 0) GTEST_SKIP() << "no IPv6 on this host: the IPv4 wildcard was used";
  sockaddr_in6 a{};
  a.sin6_family = AF_INET6;
  a.sin6_port = htons(static_cast<uint16_t>(port));
  a.sin6_addr = in6addr_loopback;
  const bool connected = connect(fd6, reinterpret_cast<sockaddr*>(&a), sizeof(a)) == 0;
  const int connect_errno = errno;
  if (!connected && (connect_errno == EADDRNOTAVAIL || connect_errno == ENETUNREACH)) {
    close(fd6);
    GTEST_SKIP() << "no ::1 on this host's loopback: " << std::strerror(connect_errno);
  }
  if (connected) SendAll(fd6, Get("/healthz"));
  std::string got(64, '\0');
  const ssize_t n = connected ? recv(fd6, got.data(), got.size(), 0) : -1;
  close(fd6);
  ASSERT_TRUE(connected) << "connect to [::1]:" << port << ": " << std::strerror(connect_errno);
  ASSERT_GT(n, 0);
  EXPECT_THAT(got.substr(0, static_cast<size_t>(n)), StartsWith("HTTP/1.1 200 OK\r\n"));
}

TEST_F(HttpServerTest, StopClosesEveryConnectionAndIsIdempotent) {
  StartServer();
  const int fd = Connect(port());
  SendAll(fd, "GET /hea");
  server_->Stop();
  EXPECT_TRUE(ClosedWithin(fd, std::chrono::seconds(1)));
  close(fd);
  server_->Stop();
  EXPECT_LT(Connect(port()), 0);
}

}  // namespace
}  // namespace kvhub::cachesvc
