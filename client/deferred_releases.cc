#include "client/deferred_releases.h"

#include <algorithm>
#include <utility>

#include "absl/strings/str_cat.h"
#include "client/shard.h"
#include "common/log.h"

namespace kvhub {

absl::Status DeferredReleases::Config::Validate() const {
  if (max_delay <= absl::ZeroDuration() || max_delay > absl::Seconds(1)) {
    return absl::InvalidArgumentError("deferred releases: max_delay must be in (0, 1 s]");
  }
  if (max_batch == 0 || max_batch > 4096) {
    return absl::InvalidArgumentError("deferred releases: max_batch must be in [1, 4096]");
  }
  return absl::OkStatus();
}

namespace {
DeferredReleases::Config Checked(DeferredReleases::Config c) {
  if (absl::Status s = c.Validate(); !s.ok()) {
    KVHUB_LOG(error, "{}; using the defaults", std::string(s.message()));
    return DeferredReleases::Config{};
  }
  return c;
}
}  // namespace

DeferredReleases::DeferredReleases(Config config, Sender sender)
    : config_(Checked(config)),
      sender_(sender ? std::move(sender)
                     : Sender([](Shard& shard, const v1::ReleaseRequest& req, v1::ReleaseResponse* resp,
                                 bool* retried) {
                         *retried = false;
                         return shard.Release(req, resp);
                       })),
      thread_([this] { Loop(); }) {}

DeferredReleases::~DeferredReleases() {
  {
    absl::MutexLock l(&mu_);
    stop_ = true;
  }
  thread_.join();  // the loop sends what is pending first
}

void DeferredReleases::Add(Shard& shard, std::span<const uint64_t> lease_ids) {
  absl::MutexLock l(&mu_);
  std::vector<uint64_t>& ids = pending_[&shard];
  for (uint64_t id : lease_ids) {
    if (id == 0) continue;
    ids.push_back(id);
    ++queued_;
  }
  if (ids.size() > largest_) largest_ = ids.size();
  if (ids.empty()) pending_.erase(&shard);
}

void DeferredReleases::Flush() {
  absl::MutexLock l(&mu_);
  struct Until {
    DeferredReleases* self;
    uint64_t target;
  } until{this, queued_};
  flush_ = true;
  mu_.Await(absl::Condition(
      +[](Until* u) ABSL_NO_THREAD_SAFETY_ANALYSIS { return u->self->answered_ >= u->target; }, &until));
}

DeferredReleases::Stats DeferredReleases::stats() const {
  absl::MutexLock l(&mu_);
  return stats_;
}

void DeferredReleases::Loop() {
  absl::MutexLock l(&mu_);
  while (true) {
    mu_.Await(absl::Condition(
        +[](DeferredReleases* d) ABSL_NO_THREAD_SAFETY_ANALYSIS { return d->stop_ || !d->pending_.empty(); },
        this));
    if (pending_.empty()) break;  // stopping, nothing left
    // Let the batch fill for up to max_delay (sent at once when full, flushed or stopping).
    mu_.AwaitWithTimeout(absl::Condition(
                             +[](DeferredReleases* d) ABSL_NO_THREAD_SAFETY_ANALYSIS {
                               return d->stop_ || d->flush_ || d->largest_ >= d->config_.max_batch;
                             },
                             this),
                         config_.max_delay);
    auto batch = std::move(pending_);
    pending_.clear();
    largest_ = 0;
    flush_ = false;
    uint64_t n = 0;
    mu_.Unlock();
    for (auto& [shard, ids] : batch) {
      n += ids.size();
      // What piled up while the last batch was on the wire can exceed what one
      // Release may carry (the shard refuses the whole call beyond 4096 ids,
      // and every lease in it would wait for expiry): at most max_batch a call.
      for (size_t at = 0; at < ids.size(); at += config_.max_batch) {
        const size_t end = std::min(ids.size(), at + config_.max_batch);
        Send(*shard, std::vector<uint64_t>(ids.begin() + at, ids.begin() + end));
      }
    }
    mu_.Lock();
    answered_ += n;
  }
}

void DeferredReleases::Send(Shard& shard, std::vector<uint64_t> ids) {
  v1::ReleaseRequest req;
  for (uint64_t id : ids) req.add_lease_ids(id);
  v1::ReleaseResponse resp;
  bool retried = false;
  const absl::Status s = sender_(shard, req, &resp, &retried);
  uint64_t released = 0, late = 0, unsure = 0;
  absl::Status first_late;
  const bool answered = s.ok() && resp.items_size() == req.lease_ids_size();
  if (answered) {
    for (const auto& item : resp.items()) {
      if (item.code() == 0) {
        ++released;
      } else if (retried && item.code() == static_cast<int32_t>(absl::StatusCode::kNotFound)) {
        ++unsure;
      } else {
        if (late++ == 0) first_late = absl::Status(static_cast<absl::StatusCode>(item.code()), item.message());
      }
    }
  }
  {
    absl::MutexLock l(&mu_);
    ++stats_.calls;
    if (!answered) ++stats_.failed_calls;
    stats_.released += released;
    stats_.late += late;
    stats_.unsure += unsure;
  }
  if (!answered) {
    KVHUB_LOG(warn, "kvhub client: background Release of {} leases on {} failed ({}); they end by expiry",
              ids.size(), shard.address(), s.ok() ? std::string("item count mismatch") : s.ToString());
  } else if (late > 0) {
    KVHUB_LOG(warn, "kvhub client: {} of {} leases on {} had already ended when released (first: {})", late,
              ids.size(), shard.address(), first_late.ToString());
  }
}

}  // namespace kvhub
