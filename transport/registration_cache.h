#pragma once
// RegistrationCache: client buffers registered once with UCX (ucp_mem_map) and
// reused by every transfer that touches them, bounded by an LRU.
//
// Callers register long-lived buffers (a fetch pool, a pinned staging area)
// with Register() and must Unregister() before freeing them. A transfer whose
// buffer is not in the cache still works: UCX then registers it through its own
// memory-hook-protected cache. We deliberately never register on a miss, since
// an address that is freed and mapped again would otherwise keep a stale
// registration (dangerous on RDMA NICs).
//
// Thread safety: all methods are safe to call concurrently. An entry dropped
// by the LRU or Unregister() stays valid for transfers that already hold it
// (shared_ptr).

#include <cstdint>
#include <list>
#include <map>
#include <memory>

#include "absl/base/thread_annotations.h"
#include "absl/status/status.h"
#include "absl/synchronization/mutex.h"
#include "transport/ucx_context.h"

namespace kvhub::transport {

class RegistrationCache {
 public:
  // `context` must outlive the cache. max_entries 0 disables it (Register is a no-op).
  RegistrationCache(UcxContext* context, uint32_t max_entries)
      : context_(context), max_entries_(max_entries) {}

  // Registers [p, p+n) unless a registered range already covers it. May evict the
  // least recently used entry. INVALID_ARGUMENT for null/empty; errors from UCX.
  absl::Status Register(void* p, uint64_t n);
  // Drops the entry that starts at `p`. NOT_FOUND if none.
  absl::Status Unregister(void* p);
  // The registration covering [p, p+n), or nullptr. Marks it recently used.
  std::shared_ptr<UcxMemory> Find(const void* p, uint64_t n);

  size_t size() const;
  uint64_t hits() const;
  uint64_t misses() const;

 private:
  struct Entry {
    std::shared_ptr<UcxMemory> mem;
    std::list<uintptr_t>::iterator lru_it;
  };
  // Entry covering [p, p+n); nullptr if none.
  Entry* FindLocked(uintptr_t p, uint64_t n) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);

  UcxContext* const context_;
  const uint32_t max_entries_;
  mutable absl::Mutex mu_;
  std::map<uintptr_t, Entry> by_start_ ABSL_GUARDED_BY(mu_);
  std::list<uintptr_t> lru_ ABSL_GUARDED_BY(mu_);  // front = most recent
  uint64_t hits_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t misses_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace kvhub::transport
