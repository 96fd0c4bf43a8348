#pragma once
// Pings between two UcxWorkers of one process: how kvhub checks that a worker
// still receives. Over shared memory (posix/sysv) a peer killed while writing a
// message into a worker's receive queue leaves the queue stuck, and the worker
// receives nothing over shared memory again (UCX 1.13; docs/transport.md
// "Recovery from a stuck shared-memory queue"). A ping from another worker of
// the same process travels the way a local peer's messages do, so an
// unanswered one says the queue is stuck; that holds only if the pinging worker
// reaches the target over shared memory alone (PingContext).
//
// A worker answers pings only if its CallHandler answers kUcxPingMethod
// (AnswerPing does). Thread-safe as the UcxWorker methods they call.

#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "transport/ucx_context.h"
#include "transport/ucx_worker.h"

namespace kvhub::transport {

// The context to make pinging workers in for workers of `context`. When
// `context`'s TLS names shared-memory queues (posix, sysv, sm) and other
// transports too, UCX would carry pings over those others (tcp), which never
// see a stuck queue: then a new context of the same config restricted to the
// queue transports (the caller owns it; it must outlive its workers). Else null:
// ping from `context` itself. UCX errors as UcxContext::Create's.
absl::StatusOr<std::unique_ptr<UcxContext>> PingContext(const UcxContext& context);

// The call method of a ping: empty request, empty response. Equal to
// kvhub.v1.UCX_CALL_PING (the shard answers it on its UCX connections).
inline constexpr uint32_t kUcxPingMethod = 3;

// For a CallHandler: true (and an empty response) when `method` is a ping.
inline bool AnswerPing(uint32_t method) { return method == kUcxPingMethod; }

// `from` connected to `target` for pings: the peer on `from`, the connection
// `target` accepted for the replies.
struct PingLink {
  PeerId peer = 0;
  AcceptedConn conn;
};
// Accepts `from` on `target` and connects `from` to it; on failure nothing is
// left open. UCX errors as UNAVAILABLE/INTERNAL.
absl::StatusOr<PingLink> LinkForPing(UcxWorker& from, UcxWorker& target);
// Closes both ends of `link` (either may be gone already).
void Unlink(UcxWorker& from, UcxWorker& target, const PingLink& link);

// Pings over `link` up to `attempts` times, `timeout` each, until one is
// answered: OK; DEADLINE_EXCEEDED when none was (the target does not receive);
// another error at once when a ping failed otherwise (no verdict). `missed`
// (optional) gets the unanswered pings.
absl::Status Ping(UcxWorker& from, const PingLink& link, absl::Duration timeout, int attempts,
                  int* missed = nullptr);

// One-off check from a temporary worker in `context` (or, when it also speaks
// tcp, in a temporary PingContext of it): OK when `target` answered
// one of `attempts` pings of `timeout` each; DEADLINE_EXCEEDED when it answered
// none (it does not receive); another error when the check could not be made.
absl::Status CheckReceives(UcxContext* context, UcxWorker& target, absl::Duration timeout, int attempts);

}  // namespace kvhub::transport
