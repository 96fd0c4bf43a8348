#include "cachesvc/ucx_probe.h"

#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "common/log.h"
#include "kvhub/v1/kvhub.pb.h"
#include "transport/ucx_ping.h"

namespace kvhub::cachesvc {

static_assert(transport::kUcxPingMethod == v1::UCX_CALL_PING, "the probe's ping is the API's UCX_CALL_PING");

absl::Status UcxProbe::Config::Validate() const {
  const auto in_range = [](absl::Duration d) { return d >= absl::Milliseconds(10) && d <= absl::Minutes(10); };
  if (!in_range(interval)) return absl::InvalidArgumentError("ucx probe: interval must be in 10ms..10min");
  if (!in_range(timeout)) return absl::InvalidArgumentError("ucx probe: timeout must be in 10ms..10min");
  if (misses < 1 || misses > 100) return absl::InvalidArgumentError("ucx probe: misses must be in 1..100");
  return absl::OkStatus();
}

absl::StatusOr<std::unique_ptr<UcxProbe>> UcxProbe::Start(transport::UcxContext* context, Config config,
                                                          Target target, OnDeaf on_deaf) {
  if (absl::Status s = config.Validate(); !s.ok()) return s;
  if (context == nullptr || target == nullptr || on_deaf == nullptr) {
    return absl::InvalidArgumentError("ucx probe: needs a context, a target and an on_deaf callback");
  }
  std::unique_ptr<UcxProbe> p(new UcxProbe(config, std::move(target), std::move(on_deaf)));
  absl::StatusOr<std::unique_ptr<transport::UcxContext>> ping_context = transport::PingContext(*context);
  if (!ping_context.ok()) return ping_context.status();
  p->ping_context_ = std::move(*ping_context);
  absl::StatusOr<std::unique_ptr<transport::UcxWorker>> w = transport::UcxWorker::Create(
      p->ping_context_ != nullptr ? p->ping_context_.get() : context, {.name = "kvhubd-probe"});
  if (!w.ok()) return w.status();
  p->worker_ = std::move(*w);
  p->thread_ = std::thread([raw = p.get()] { raw->Loop(); });
  return p;
}

UcxProbe::~UcxProbe() {
  {
    absl::MutexLock l(&mu_);
    stop_ = true;
  }
  if (thread_.joinable()) thread_.join();
}

void UcxProbe::PingSoon() {
  absl::MutexLock l(&mu_);
  soon_ = true;
}

void UcxProbe::Loop() {
  std::shared_ptr<transport::UcxWorker> target;  // what the probe is connected to
  transport::PingLink link;
  // Drops the link to `target` (the target's end too, unless it is deaf and going).
  const auto disconnect = [&](bool close_accepted) {
    if (target == nullptr) return;
    if (close_accepted) {
      transport::Unlink(*worker_, *target, link);
    } else {
      (void)worker_->Disconnect(link.peer);
    }
    conn_id_.store(0, std::memory_order_release);
    linked_to_.store(nullptr, std::memory_order_release);
    target.reset();
    link = {};
  };
  while (true) {
    {
      absl::MutexLock l(&mu_);
      const auto woken = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return stop_ || soon_; };
      mu_.AwaitWithTimeout(absl::Condition(&woken), config_.interval);
      if (stop_) break;
      soon_ = false;
    }
    std::shared_ptr<transport::UcxWorker> now = target_();
    if (now != target) disconnect(/*close_accepted=*/true);
    if (now == nullptr) continue;
    if (target == nullptr) {
      absl::StatusOr<transport::PingLink> l = transport::LinkForPing(*worker_, *now);
      if (!l.ok()) {
        KVHUB_LOG(warn, "ucx probe: cannot connect to the worker: {}", l.status().ToString());
        continue;
      }
      target = std::move(now);
      link = *l;
      linked_to_.store(target.get(), std::memory_order_release);
      conn_id_.store(link.conn.id, std::memory_order_release);
    }
    int misses = 0;
    const absl::Status pong = transport::Ping(*worker_, link, config_.timeout, config_.misses, &misses);
    missed_.fetch_add(misses, std::memory_order_relaxed);
    if (pong.ok()) {
      answered_.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    if (!absl::IsDeadlineExceeded(pong)) {
      KVHUB_LOG(info, "ucx probe: ping failed ({}); connecting again", pong.ToString());
      disconnect(/*close_accepted=*/true);
      continue;
    }
    KVHUB_LOG(warn, "ucx probe: {}", std::string(pong.message()));
    std::shared_ptr<transport::UcxWorker> deaf = target;
    const uint64_t accepted = link.conn.id;
    disconnect(/*close_accepted=*/false);
    on_deaf_(deaf);
    // Not replaced (no new worker could be made): it stays the target, and the
    // next round links to it again; close this round's connection on it, or one
    // would be left behind every round until the connection limit.
    if (target_() == deaf) (void)deaf->CloseAccepted(accepted).ok();
  }
  disconnect(/*close_accepted=*/true);
}

}  // namespace kvhub::cachesvc
