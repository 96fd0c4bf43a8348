// ucx_reader: a kvhub client process that reads one block over UCX in a loop,
// for tests that kill a client mid-transfer (tests/ucx_client_test.cc).
//
//   ucx_reader ADDRESS NAMESPACE KEY_LO KEY_HI SIZE [UCX_TLS]
// (UCX_TLS defaults to tcp.)
// Prints "ok" (once, flushed) after the first verified read, then keeps reading
// until killed. Exits 1 on any failed or wrong read (before the first good one,
// UNAVAILABLE and DEADLINE_EXCEEDED are retried for 15 s).

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/time/clock.h"
#include "client/client.h"
#include "common/log.h"
#include "spdlog/spdlog.h"

int main(int argc, char** argv) {
  if (argc != 6 && argc != 7) {
    std::fprintf(stderr, "usage: ucx_reader ADDRESS NAMESPACE KEY_LO KEY_HI SIZE [UCX_TLS]\n");
    return 2;
  }
  kvhub::LogToStderr("ucx_reader");  // stdout carries "ok" only
  kvhub::BlockKey key;
  uint64_t size = 0;
  if (!absl::SimpleAtoi(argv[3], &key.lo) || !absl::SimpleAtoi(argv[4], &key.hi) ||
      !absl::SimpleAtoi(argv[5], &size) || size == 0) {
    std::fprintf(stderr, "ucx_reader: bad key or size\n");
    return 2;
  }
  kvhub::ClientConfig cfg;
  cfg.members = {{argv[1], 1.0}};
  cfg.transport = kvhub::TransportMode::kUcx;
  cfg.ucx_tls = argc == 7 ? argv[6] : "tcp";
  cfg.ucx_lease = absl::Seconds(2);
  auto client = kvhub::Client::Create(cfg);
  if (!client.ok()) {
    std::fprintf(stderr, "ucx_reader: %s\n", client.status().ToString().c_str());
    return 1;
  }
  std::vector<uint8_t> buf(size);
  std::span<uint8_t> dest(buf);
  bool announced = false;
  // Until the first good read, a shard that is recovering (UNAVAILABLE, or a
  // timeout: it replaces a UCX worker that a killed client left stuck) gets 15 s.
  const absl::Time patience = absl::Now() + absl::Seconds(15);
  while (true) {
    auto r = (*client)->Get(argv[2], {&key, 1}, {&dest, 1});
    const absl::Status st = !r.ok() ? r.status() : r->status[0];
    if (!announced && (absl::IsUnavailable(st) || absl::IsDeadlineExceeded(st)) && absl::Now() < patience) {
      std::fprintf(stderr, "ucx_reader: read failed, retrying: %s\n", st.ToString().c_str());
      continue;
    }
    if (!r.ok() || r->valid_blocks != 1) {
      std::fprintf(stderr, "ucx_reader: read failed: %s\n",
                   r.ok() ? r->status[0].ToString().c_str() : r.status().ToString().c_str());
      return 1;
    }
    if (!announced) {
      std::printf("ok\n");
      std::fflush(stdout);
      announced = true;
    }
  }
}
