#pragma once
// UcxProbe: checks that a serving UcxWorker still receives, by pinging it
// (v1::UCX_CALL_PING, transport/ucx_ping.h) from a second worker of the same
// process, over shared memory alone (a context of its own restricted to the
// shared-memory queue transports when the given one also speaks tcp:
// transport::PingContext). kvhubd runs one when a shared-memory queue transport
// is in ucx_tls, where a client killed mid-send can leave the serving worker's
// receive queue stuck (cachesvc/ucx_server.h).
//
// The probe pings every Config::interval, and at once after PingSoon(). A ping
// unanswered within Config::timeout is a miss; after Config::misses misses in a
// row (each retried at once) the target is deaf: `on_deaf` receives it, on the
// probe's thread, and the probe connects to whatever `target` returns next.
// Errors other than a timeout (the target refused or dropped the probe's
// connection) are not misses: the probe connects again on its next round.
//
// Thread safety: PingSoon and conn_id may be called from any thread. The
// callbacks run on the probe's thread and must not destroy the probe.
// Ownership: `context` must outlive the probe; the destructor stops its thread
// and drops its reference to the target.

#include <cstdint>
#include <functional>
#include <memory>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "transport/ucx_context.h"
#include "transport/ucx_worker.h"

namespace kvhub::cachesvc {

class UcxProbe {
 public:
  struct Config {
    absl::Duration interval = absl::Seconds(1);  // between pings when nothing asks sooner
    absl::Duration timeout = absl::Seconds(1);   // a ping unanswered this long is a miss
    int misses = 2;                              // misses in a row that make the target deaf
    // INVALID_ARGUMENT unless interval and timeout are in 10 ms..10 min and misses in 1..100.
    absl::Status Validate() const;
  };
  // The worker to probe now, or null (nothing to probe).
  using Target = std::function<std::shared_ptr<transport::UcxWorker>()>;
  // Told that `deaf` stopped answering; the probe holds no reference to it any more.
  using OnDeaf = std::function<void(std::shared_ptr<transport::UcxWorker> deaf)>;

  // Creates the probe's worker and starts its thread. INVALID_ARGUMENT for a bad
  // config or missing callbacks; UCX errors as UNAVAILABLE/INTERNAL.
  static absl::StatusOr<std::unique_ptr<UcxProbe>> Start(transport::UcxContext* context, Config config,
                                                         Target target, OnDeaf on_deaf);
  ~UcxProbe();
  UcxProbe(const UcxProbe&) = delete;
  UcxProbe& operator=(const UcxProbe&) = delete;

  // Pings the target at once (without waiting for the interval).
  void PingSoon();
  // The connection id the probe holds on its current target (to leave out of
  // client counts), 0 when it holds none.
  uint64_t conn_id() const { return conn_id_.load(std::memory_order_acquire); }
  // Whether the probe's connection is to `worker` now (compared only, never used:
  // for counting without a call into the worker's thread).
  bool LinkedTo(const transport::UcxWorker* worker) const {
    return worker != nullptr && linked_to_.load(std::memory_order_acquire) == worker;
  }
  // Pings answered / missed since Start.
  uint64_t pings_answered() const { return answered_.load(std::memory_order_relaxed); }
  uint64_t pings_missed() const { return missed_.load(std::memory_order_relaxed); }

 private:
  UcxProbe(Config config, Target target, OnDeaf on_deaf)
      : config_(config), target_(std::move(target)), on_deaf_(std::move(on_deaf)) {}
  void Loop();

  const Config config_;
  const Target target_;
  const OnDeaf on_deaf_;
  // Its own context when the one given also speaks tcp (transport::PingContext);
  // before worker_, which it must outlive.
  std::unique_ptr<transport::UcxContext> ping_context_;
  std::unique_ptr<transport::UcxWorker> worker_;  // the probe's own; used by its thread only
  std::thread thread_;
  std::atomic<uint64_t> conn_id_{0};
  std::atomic<const transport::UcxWorker*> linked_to_{nullptr};
  std::atomic<uint64_t> answered_{0}, missed_{0};

  absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  bool soon_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace kvhub::cachesvc
