#pragma once
// PooledMessageAllocator: a grpc::MessageAllocator for the callback API that
// recycles request/response messages between calls, so the steady-state unary data
// path (Lookup, Get, Put, ...) allocates no protobuf messages or byte buffers of our
// own: a cleared message keeps its string capacity (e.g. a 1 MiB `data` field) and
// its repeated elements, and the next call reuses them.
//
// Bounds: at most `max_free` idle holders are kept, idle holders together retain at
// most `max_retained_bytes` (SpaceUsedLong), and a holder over `max_holder_bytes` is
// freed rather than kept, so a rare 64 MiB block does not stay pinned in the pool.
//
// Thread safety: AllocateMessages and Release may be called from any thread.
// Lifetime: the allocator must outlive the grpc::Server that uses it.

#include <cstddef>
#include <cstdint>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "grpcpp/support/message_allocator.h"

namespace kvhub::cachesvc {

template <typename Request, typename Response>
class PooledMessageAllocator final : public grpc::MessageAllocator<Request, Response> {
 public:
  explicit PooledMessageAllocator(size_t max_free = 64, uint64_t max_holder_bytes = 8ull << 20,
                                  uint64_t max_retained_bytes = 64ull << 20)
      : max_free_(max_free), max_holder_bytes_(max_holder_bytes), max_retained_bytes_(max_retained_bytes) {
    absl::MutexLock lock(&mu_);
    free_.reserve(max_free_);
  }
  ~PooledMessageAllocator() override {
    absl::MutexLock lock(&mu_);
    for (Holder* h : free_) delete h;
  }

  grpc::MessageHolder<Request, Response>* AllocateMessages() override {
    {
      absl::MutexLock lock(&mu_);
      if (!free_.empty()) {
        Holder* h = free_.back();
        free_.pop_back();
        retained_ -= h->bytes_;
        return h;
      }
    }
    return new Holder(this);
  }

 private:
  class Holder final : public grpc::MessageHolder<Request, Response> {
   public:
    explicit Holder(PooledMessageAllocator* owner) : owner_(owner) {
      this->set_request(&request_);
      this->set_response(&response_);
    }
    void Release() override { owner_->Recycle(this); }
    Request request_;
    Response response_;
    uint64_t bytes_ = 0;  // retained bytes while idle in the pool

   private:
    PooledMessageAllocator* const owner_;
  };

  void Recycle(Holder* h) {
    uint64_t bytes = static_cast<uint64_t>(h->request_.SpaceUsedLong()) +
                     static_cast<uint64_t>(h->response_.SpaceUsedLong());
    if (bytes <= max_holder_bytes_) {
      h->request_.Clear();
      h->response_.Clear();
      h->bytes_ = bytes;
      absl::MutexLock lock(&mu_);
      if (free_.size() < max_free_ && retained_ + bytes <= max_retained_bytes_) {
        free_.push_back(h);
        retained_ += bytes;
        return;
      }
    }
    delete h;
  }

  const size_t max_free_;
  const uint64_t max_holder_bytes_;
  const uint64_t max_retained_bytes_;
  absl::Mutex mu_;
  std::vector<Holder*> free_ ABSL_GUARDED_BY(mu_);
  uint64_t retained_ ABSL_GUARDED_BY(mu_) = 0;
};

}  // namespace kvhub::cachesvc
