#pragma once
// Deadlines and retries for every client RPC (docs/client.md). Only
// UNAVAILABLE is retried: it means the request did not reach a serving shard
// (connection refused/reset, shard draining). Every other code is final.

#include <functional>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "grpcpp/support/status.h"

namespace kvhub {

struct RetryPolicy {
  int max_attempts = 3;                                   // first attempt included
  absl::Duration initial_backoff = absl::Milliseconds(10);
  absl::Duration max_backoff = absl::Milliseconds(500);
  // Between attempts: returns after `wait` at the latest, earlier when a retry is
  // worth making now (Shard: its channels reconnected). Empty: sleep for `wait`.
  std::function<void(absl::Duration wait)> wait_for;
  // What the deadline and the backoff are measured on; null: Clock::Real(), which is
  // monotonic (on the wall clock a step back of X, NTP or a resumed VM, gave a "2 s"
  // call X more; a step forward skipped its retries). Not owned.
  const Clock* clock = nullptr;

  // Sleep before retry `retry` (1-based): min(initial * 2^(retry-1), max),
  // scaled by `jitter` (callers pass a uniform value in [0.8, 1.2]).
  absl::Duration Backoff(int retry, double jitter) const;
};

// Runs attempt(k, left) for k = 0, 1, ... while it returns UNAVAILABLE, attempts
// remain and time remains of `deadline`, waiting Backoff() between attempts
// (policy.wait_for if set). `deadline` bounds the whole call, retries and backoff
// included: `attempt` must use `left` (what remains of it) as its RPC's deadline. A
// shard that takes a connection attempt's whole 20 s to fail used to cost three
// of them (60 s) within a 30 s "per-attempt" deadline. Returns the last status.
grpc::Status CallWithRetry(const RetryPolicy& policy, absl::Duration deadline,
                           const std::function<grpc::Status(int attempt, absl::Duration left)>& attempt);

// grpc::Status -> absl::Status, message prefixed by `what` (e.g. "Lookup 127.0.0.1:7000").
absl::Status FromGrpc(const grpc::Status& s, absl::string_view what);

}  // namespace kvhub
