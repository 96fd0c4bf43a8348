#pragma once
// ReservationTable: the reservations kvhubd handed out through PutStart, so that
// PutData can find where to write and PutCommit/PutAbort/expiry never race a write.
//
// The BlockStore owns the bytes and says they are writable "until Commit, Abort or
// expiry". This table makes that safe across RPCs:
//   - Write() copies under a shared lock, only while the reservation has more than
//     `write_margin` left before it expires, and under a transfer hold in the store
//     (BlockStore::BeginTransfer), so that no path of the store (its own expiry of
//     stale reservations when it needs room, a Reserve of the same key) can reclaim
//     the chunk while a slow copy is still writing into it;
//   - Take() (before Commit/Abort) marks the entry busy under the exclusive lock, so
//     no write is in flight when the store commits, and none can start after; Finish()
//     removes it once the store answered, Restore() makes it writable again when the
//     store refused for now;
//   - Sweep() runs the store's ExpireNow under the exclusive lock, then drops every
//     entry whose expiry has passed.
// The table is the gRPC path's authority: an id it does not hold is NOT_FOUND.
//
// Allocation: Add() may grow the hash table (amortized); Write/Take do not allocate.
// Thread safety: every method is safe to call concurrently.

#include <cstdint>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "common/clock.h"
#include "storage/block_store.h"

namespace kvhub::cachesvc {

class ReservationTable {
 public:
  struct Entry {
    uint8_t* data = nullptr;
    storage::BlockLocation location;  // of `data`, for the store's transfer hold
    uint64_t size = 0;
    absl::Time expires;
    int ns_index = 0;  // metrics label index of the namespace
    bool busy = false;  // taken by a PutCommit/PutAbort that has not finished
  };

  // `store` holds the reservations; it and `clock` (the store's clock) must outlive
  // the table.
  ReservationTable(storage::BlockStore* store, Clock* clock, absl::Duration write_margin);

  void Add(const storage::Reservation& r, int ns_index);
  // Time left until `expires`, a time of the store's clock (Reservation::expires).
  absl::Duration Remaining(absl::Time expires) const { return expires - clock_->Now(); }

  // Copies `data` to [offset, offset+len) of reservation `id`.
  // NOT_FOUND: unknown, committed, aborted, or expiring within the write margin (or
  // expired in the store already).
  // FAILED_PRECONDITION: a commit or abort of it is in progress.
  // INVALID_ARGUMENT: the range leaves the reservation (names the bounds).
  absl::Status Write(uint64_t id, uint64_t offset, absl::string_view data);

  // Marks `id` busy and copies its entry to *out. After OK, no write to it is in
  // flight or can start: the caller may Commit or Abort it in the store, then must
  // call Finish(id) or, when the store refused for now, Restore(id, *out).
  // NOT_FOUND: not (or no longer) held. FAILED_PRECONDITION: another commit or abort
  // of it is in progress (it may still be refused: retry).
  absl::Status Take(uint64_t id, Entry* out);
  // The store committed or aborted `id` (or refused it for good): forgets it.
  void Finish(uint64_t id);
  // The store refused the Commit/Abort of a taken entry for now (FAILED_PRECONDITION:
  // a UCX transfer into it is still in flight) and the reservation lives on: writable
  // and takeable again (put back if an expiry sweep dropped it meanwhile).
  void Restore(uint64_t id, const Entry& entry);

  // Calls `expire_store` (the store's ExpireNow) with no write in flight, then drops
  // entries that have expired. Returns what `expire_store` returned.
  size_t Sweep(absl::FunctionRef<size_t()> expire_store);

  size_t size() const;

 private:
  storage::BlockStore* const store_;
  Clock* const clock_;
  const absl::Duration write_margin_;
  mutable absl::Mutex mu_;
  absl::flat_hash_map<uint64_t, Entry> entries_ ABSL_GUARDED_BY(mu_);
};

}  // namespace kvhub::cachesvc
