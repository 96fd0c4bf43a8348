#include "client/retry.h"

#include <algorithm>
#include <random>

#include "absl/strings/str_cat.h"

namespace kvhub {

absl::Duration RetryPolicy::Backoff(int retry, double jitter) const {
  absl::Duration d = initial_backoff;
  for (int i = 1; i < retry && d < max_backoff; ++i) d *= 2;
  d = std::min(d, max_backoff);
  return d * jitter;
}

grpc::Status CallWithRetry(const RetryPolicy& policy, absl::Duration deadline,
                           const std::function<grpc::Status(int attempt, absl::Duration left)>& attempt) {
  thread_local std::minstd_rand rng(std::random_device{}());
  // An attempt with less than this left would only time out: the last status stands.
  constexpr absl::Duration kShortestAttempt = absl::Milliseconds(1);
  const Clock* clock = policy.clock != nullptr ? policy.clock : Clock::Real();
  const absl::Time give_up = clock->Now() + deadline;  // infinite deadline: InfiniteFuture
  grpc::Status s;
  for (int k = 0; k < std::max(policy.max_attempts, 1); ++k) {
    if (k > 0) {
      std::uniform_real_distribution<double> jitter(0.8, 1.2);
      const absl::Duration wait =
          std::max(absl::ZeroDuration(), std::min(policy.Backoff(k, jitter(rng)), give_up - clock->Now()));
      if (policy.wait_for) {
        policy.wait_for(wait);
      } else {
        absl::SleepFor(wait);
      }
    }
    const absl::Duration left = give_up - clock->Now();
    if (k > 0 && left < kShortestAttempt) return s;
    s = attempt(k, std::max(left, absl::ZeroDuration()));
    if (s.error_code() != grpc::StatusCode::UNAVAILABLE) return s;
  }
  return s;
}

absl::Status FromGrpc(const grpc::Status& s, absl::string_view what) {
  if (s.ok()) return absl::OkStatus();
  // grpc::StatusCode and absl::StatusCode share google.rpc.Code numbering.
  return absl::Status(static_cast<absl::StatusCode>(s.error_code()),
                      absl::StrCat(what, ": ", s.error_message()));
}

}  // namespace kvhub
