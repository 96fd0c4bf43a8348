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
                       })) {}

DeferredReleases::~DeferredReleases() {
  std::vector<std::thread> threads;
  {
    absl::MutexLock l(&mu_);
    stop_ = true;
    for (auto& [shard, lane] : lanes_) threads.push_back(std::move(lane->thread));
  }
  for (std::thread& t : threads) t.join();  // each lane sends what is pending first
}

void DeferredReleases::Add(Shard& shard, std::span<const uint64_t> lease_ids) {
  absl::MutexLock l(&mu_);
  if (stop_) {  // being destroyed: a new lane would never be joined
    KVHUB_LOG(warn, "kvhub client: {} leases on {} queued while releases stop; they end by expiry",
              lease_ids.size(), shard.address());
    return;
  }
  auto [it, added] = lanes_.try_emplace(&shard);
  if (added) {  // its thread starts once the entry is in place (and waits for mu_)
    it->second = std::make_unique<Lane>();
    Lane* raw = it->second.get();
    raw->thread = std::thread([this, s = &shard, raw] { LaneLoop(s, raw); });
  }
  Lane& lane = *it->second;
  for (uint64_t id : lease_ids) {
    if (id == 0) continue;
    lane.pending.push_back(id);
    ++lane.queued;
  }
}

void DeferredReleases::Flush() {
  absl::MutexLock l(&mu_);
  // Each lane's own count: leases added to one lane meanwhile must not stand in
  // for another lane's still unanswered ones.
  // Only the lanes with leases queued by now send at once (a Flush waiting on a frozen
  // shard leaves the other lanes batching).
  std::vector<std::pair<const Lane*, uint64_t>> until;
  for (const auto& [shard, lane] : lanes_) {
    if (lane->answered >= lane->queued) continue;
    lane->flush_to = std::max(lane->flush_to, lane->queued);
    until.emplace_back(lane.get(), lane->queued);
  }
  mu_.Await(absl::Condition(
      +[](std::vector<std::pair<const Lane*, uint64_t>>* u) ABSL_NO_THREAD_SAFETY_ANALYSIS {
        return std::all_of(u->begin(), u->end(), [](const auto& p) { return p.first->answered >= p.second; });
      },
      &until));
}

DeferredReleases::Stats DeferredReleases::stats() const {
  absl::MutexLock l(&mu_);
  return stats_;
}

void DeferredReleases::LaneLoop(Shard* shard, Lane* lane) {
  struct Wait {
    DeferredReleases* self;
    Lane* lane;
  } w{this, lane};
  absl::MutexLock l(&mu_);
  while (true) {
    mu_.Await(absl::Condition(
        +[](Wait* w) ABSL_NO_THREAD_SAFETY_ANALYSIS { return w->self->stop_ || !w->lane->pending.empty(); }, &w));
    if (lane->pending.empty()) break;  // stopping, nothing left
    // Let the batch fill for up to max_delay (sent at once when full, flushed or stopping).
    mu_.AwaitWithTimeout(absl::Condition(
                             +[](Wait* w) ABSL_NO_THREAD_SAFETY_ANALYSIS {
                               return w->self->stop_ || w->lane->flush_to > w->lane->answered ||
                                      w->lane->pending.size() >= w->self->config_.max_batch;
                             },
                             &w),
                         config_.max_delay);
    std::vector<uint64_t> ids = std::move(lane->pending);
    lane->pending.clear();
    mu_.Unlock();
    // What piled up while the last batch was on the wire can exceed what one
    // Release may carry (the shard refuses the whole call beyond 4096 ids, and
    // every lease in it would wait for expiry): at most max_batch a call.
    for (size_t at = 0; at < ids.size(); at += config_.max_batch) {
      const size_t end = std::min(ids.size(), at + config_.max_batch);
      Send(*shard, std::vector<uint64_t>(ids.begin() + at, ids.begin() + end));
    }
    mu_.Lock();
    lane->answered += ids.size();
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
