#pragma once
// DeferredReleases: ends the leases of finished reads in the background,
// batched per shard, so a fetch does not wait for a Release round trip.
//
// Used for gets copied from a shard's mapped shared memory (UcxWorker::Maps),
// where every copy is checked against its lease bound as it finishes: the
// Release's answer can no longer change what the caller got, it only hands the
// memory back sooner than expiry would.
//
// Each shard has its own sender thread (made on its first lease): a shard that is
// frozen or slow to answer holds up its own releases only, not other shards'.
//
// Failure semantics: a Release call that fails is logged (warn) and counted;
// its leases end by expiry on the shard. Items the shard reports as already
// ended are counted as `late` and logged (as `unsure`, not logged, when the
// answer came from a retry whose first attempt may have ended them). Thread-safe. The destructor sends
// what is pending, then stops; the shards handed in must outlive this object.

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "kvhub/v1/kvhub.pb.h"

namespace kvhub {

class Shard;

class DeferredReleases {
 public:
  struct Config {
    // Longest a lease waits for company before its batch is sent. Default 2 ms.
    absl::Duration max_delay = absl::Milliseconds(2);
    // A shard's batch is sent at once when it reaches this many leases, and no
    // Release call carries more (the protocol allows 4096). Default 256.
    size_t max_batch = 256;
    // OK, or INVALID_ARGUMENT naming the bad field.
    absl::Status Validate() const;
  };
  // Sends one Release (Shard::Release in production; a test seam otherwise). Sets
  // *retried when the answer is a second attempt's after the first failed in
  // transit (its NOT_FOUND items may be leases the first attempt ended).
  using Sender = std::function<absl::Status(Shard& shard, const v1::ReleaseRequest& req, v1::ReleaseResponse* resp,
                                            bool* retried)>;

  struct Stats {
    uint64_t released = 0;      // leases the shard confirmed ended by us
    uint64_t late = 0;          // leases the shard says had already ended (expired)
    // NOT_FOUND answers of a retried call: ended by its first attempt, or expired.
    uint64_t unsure = 0;
    uint64_t failed_calls = 0;  // Release calls that failed (their leases expire)
    uint64_t calls = 0;         // Release calls sent
  };

  // config must be valid (checked: an invalid one is replaced by defaults and logged).
  explicit DeferredReleases(Config config, Sender sender = {});
  ~DeferredReleases();
  DeferredReleases(const DeferredReleases&) = delete;
  DeferredReleases& operator=(const DeferredReleases&) = delete;

  // Queues the leases (non-zero ids) for release on `shard`. Never blocks on the network.
  void Add(Shard& shard, std::span<const uint64_t> lease_ids);
  // Sends everything queued before the call and waits until it is answered.
  void Flush();
  Stats stats() const;

 private:
  // One shard's queue and its sender thread.
  struct Lane {
    std::vector<uint64_t> pending;  // guarded by mu_, as the counts
    uint64_t queued = 0;            // leases Add()ed, ever
    uint64_t answered = 0;          // of those, sent and answered (or failed)
    uint64_t flush_to = 0;          // a Flush() waits for the leases up to this count: send now
    std::thread thread;
  };
  void LaneLoop(Shard* shard, Lane* lane);
  void Send(Shard& shard, std::vector<uint64_t> ids);

  const Config config_;
  const Sender sender_;
  mutable absl::Mutex mu_;
  absl::flat_hash_map<Shard*, std::unique_ptr<Lane>> lanes_ ABSL_GUARDED_BY(mu_);
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  Stats stats_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kvhub
