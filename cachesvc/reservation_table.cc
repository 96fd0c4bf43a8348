#include "cachesvc/reservation_table.h"

#include "absl/strings/str_cat.h"
#include "common/copy.h"

namespace kvhub::cachesvc {

ReservationTable::ReservationTable(storage::BlockStore* store, Clock* clock, absl::Duration write_margin)
    : store_(store), clock_(clock), write_margin_(write_margin) {
  absl::MutexLock lock(&mu_);
  entries_.reserve(4096);
}

void ReservationTable::Add(const storage::Reservation& r, int ns_index) {
  absl::MutexLock lock(&mu_);
  entries_[r.id] = Entry{r.data, r.location, r.location.size, r.expires, ns_index};
}

void ReservationTable::Restore(uint64_t id, const Entry& entry) {
  absl::MutexLock lock(&mu_);
  Entry& e = entries_[id];
  e = entry;
  e.busy = false;
}

void ReservationTable::Finish(uint64_t id) {
  absl::MutexLock lock(&mu_);
  entries_.erase(id);
}

absl::Status ReservationTable::Write(uint64_t id, uint64_t offset, absl::string_view data) {
  absl::ReaderMutexLock lock(&mu_);
  auto it = entries_.find(id);
  if (it == entries_.end()) {
    return absl::NotFoundError(
        absl::StrCat("reservation_id ", id, " is unknown, already committed/aborted, or expired"));
  }
  const Entry& e = it->second;
  if (e.busy) {
    return absl::FailedPreconditionError(absl::StrCat("reservation_id ", id, " is being committed or aborted"));
  }
  if (clock_->Now() + write_margin_ >= e.expires) {
    return absl::NotFoundError(absl::StrCat("reservation_id ", id, " has expired (or is about to)"));
  }
  if (offset > e.size || data.size() > e.size - offset) {
    return absl::InvalidArgumentError(absl::StrCat("offset ", offset, " + len(data) ", data.size(),
                                                   " exceeds reservation ", id, " size ", e.size));
  }
  if (data.empty()) return absl::OkStatus();
  const storage::BlockLocation range{e.location.region, e.location.offset + offset, data.size()};
  absl::StatusOr<uint64_t> hold = store_->BeginTransfer(storage::TransferAccess::kWrite, id, range);
  if (!hold.ok()) {
    return absl::NotFoundError(absl::StrCat("reservation_id ", id, " has expired: ", hold.status().message()));
  }
  CopyBytes(e.data + offset, data.data(), data.size());
  store_->EndTransfer(storage::TransferAccess::kWrite, *hold);
  return absl::OkStatus();
}

absl::Status ReservationTable::Take(uint64_t id, Entry* out) {
  absl::MutexLock lock(&mu_);
  auto it = entries_.find(id);
  if (it == entries_.end()) {
    return absl::NotFoundError(absl::StrCat("reservation_id ", id, " is unknown, already committed/aborted, or expired"));
  }
  if (it->second.busy) {
    // Reported as still reserved (the protocol's "another commit of it is in progress:
    // retry"), not as gone: a retry that read NOT_FOUND here concluded the block was
    // lost while the first commit could still be refused and restored.
    return absl::FailedPreconditionError(
        absl::StrCat("reservation_id ", id, ": another commit or abort of it is in progress; retry"));
  }
  it->second.busy = true;
  *out = it->second;
  return absl::OkStatus();
}

size_t ReservationTable::Sweep(absl::FunctionRef<size_t()> expire_store) {
  absl::MutexLock lock(&mu_);
  size_t n = expire_store();
  absl::Time now = clock_->Now();
  absl::erase_if(entries_, [&](const auto& kv) { return kv.second.expires <= now; });
  return n;
}

size_t ReservationTable::size() const {
  absl::ReaderMutexLock lock(&mu_);
  return entries_.size();
}

}  // namespace kvhub::cachesvc
