#include "transport/ucx_ping.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "transport/ucx_config.h"

namespace kvhub::transport {

absl::StatusOr<std::unique_ptr<UcxContext>> PingContext(const UcxContext& context) {
  const std::string queues = SharedMemoryQueueTls(context.config().tls);
  if (queues.empty() || queues == context.config().tls) return std::unique_ptr<UcxContext>();
  UcxConfig config = context.config();
  config.tls = queues;
  // Pings are small messages: where the context's memory is allocated does not matter.
  std::erase_if(config.options, [](const auto& o) { return o.first == "ALLOC_PRIO"; });
  return UcxContext::Create(config);
}

absl::StatusOr<PingLink> LinkForPing(UcxWorker& from, UcxWorker& target) {
  absl::StatusOr<AcceptedConn> conn = target.Accept(from.address());
  if (!conn.ok()) return conn.status();
  PeerInfo info;
  info.worker_address = target.address();
  info.conn = *conn;
  absl::StatusOr<PeerId> peer = from.Connect(info);
  if (!peer.ok()) {
    (void)target.CloseAccepted(conn->id);  // nothing else holds it
    return peer.status();
  }
  return PingLink{*peer, *conn};
}

void Unlink(UcxWorker& from, UcxWorker& target, const PingLink& link) {
  // NOT_FOUND when an end is gone already: nothing left to close.
  (void)from.Disconnect(link.peer);
  (void)target.CloseAccepted(link.conn.id);
}

absl::Status Ping(UcxWorker& from, const PingLink& link, absl::Duration timeout, int attempts, int* missed) {
  if (missed != nullptr) *missed = 0;
  for (int i = 0; i < attempts; ++i) {
    absl::StatusOr<std::string> pong = from.CallPeer(link.peer, kUcxPingMethod, std::string(), timeout);
    if (pong.ok()) return absl::OkStatus();
    if (!absl::IsDeadlineExceeded(pong.status())) return pong.status();  // not a silence: no verdict
    if (missed != nullptr) ++*missed;
  }
  return absl::DeadlineExceededError(absl::StrCat("the worker answered none of ", attempts, " pings (",
                                                  absl::FormatDuration(timeout), " each)"));
}

absl::Status CheckReceives(UcxContext* context, UcxWorker& target, absl::Duration timeout, int attempts) {
  absl::StatusOr<std::unique_ptr<UcxContext>> ping_context = PingContext(*context);
  if (!ping_context.ok()) return ping_context.status();
  absl::StatusOr<std::unique_ptr<UcxWorker>> prober = UcxWorker::Create(
      *ping_context != nullptr ? ping_context->get() : context, {.name = "kvhub-ping"});
  if (!prober.ok()) return prober.status();
  absl::StatusOr<PingLink> link = LinkForPing(**prober, target);
  if (!link.ok()) return link.status();
  absl::Status s = Ping(**prober, *link, timeout, attempts);
  Unlink(**prober, target, *link);
  return s;
}

}  // namespace kvhub::transport
