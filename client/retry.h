#pragma once
// Deadlines and retries for every client RPC (docs/client.md). Only
// UNAVAILABLE is retried: it means the request did not reach a serving shard
// (connection refused/reset, shard draining). Every other code is final.

#include <functional>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "grpcpp/support/status.h"

namespace kvhub {

struct RetryPolicy {
  int max_attempts = 3;                                   // first attempt included
  absl::Duration initial_backoff = absl::Milliseconds(10);
  absl::Duration max_backoff = absl::Milliseconds(500);
  // Between attempts: returns at `until` at the latest, earlier when a retry is worth
  // making now (Shard: its channels reconnected). Empty: sleep until `until`.
  std::function<void(absl::Time until)> wait_until;

  // Sleep before retry `retry` (1-based): min(initial * 2^(retry-1), max),
  // scaled by `jitter` (callers pass a uniform value in [0.8, 1.2]).
  absl::Duration Backoff(int retry, double jitter) const;
};

// Runs attempt(k) for k = 0, 1, ... while it returns UNAVAILABLE and attempts
// remain, waiting Backoff() between attempts (policy.wait_until if set). Returns
// the last status.
// `attempt` must set its own per-attempt deadline.
grpc::Status CallWithRetry(const RetryPolicy& policy,
                           const std::function<grpc::Status(int attempt)>& attempt);

// grpc::Status -> absl::Status, message prefixed by `what` (e.g. "Lookup 127.0.0.1:7000").
absl::Status FromGrpc(const grpc::Status& s, absl::string_view what);

}  // namespace kvhub
