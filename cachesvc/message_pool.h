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
// kArenaResponse: the response lives on a per-holder protobuf Arena with a 64 KiB
// initial block, reset between calls. Use it for responses with sub-messages per item
// (PutStartResponse.Reserved.location): Clear() on a heap message deletes sub-messages,
// so reusing one would allocate them again on every call; the arena does not. Leave it
// off for responses holding large strings (arena strings are not reused).
//
// Thread safety: AllocateMessages and Release may be called from any thread.
// Lifetime: the allocator must outlive the grpc::Server that uses it.

#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "google/protobuf/arena.h"

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "grpcpp/support/message_allocator.h"

namespace kvhub::cachesvc {

template <typename Request, typename Response, bool kArenaResponse = false>
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
    explicit Holder(PooledMessageAllocator* owner) : owner_(owner), arena_(ArenaOptions()) {
      this->set_request(&request_);
      NewResponse();
    }
    ~Holder() override {
      if (!kArenaResponse) delete response_;
    }
    void Release() override { owner_->Recycle(this); }
    uint64_t SpaceUsed() const {
      uint64_t n = static_cast<uint64_t>(request_.SpaceUsedLong());
      return n + (kArenaResponse ? arena_.SpaceAllocated() : static_cast<uint64_t>(response_->SpaceUsedLong()));
    }
    void Reset() {
      request_.Clear();
      if (kArenaResponse) {
        arena_.Reset();  // keeps the initial block
        NewResponse();
      } else {
        response_->Clear();
      }
    }
    Request request_;
    Response* response_ = nullptr;
    uint64_t bytes_ = 0;  // retained bytes while idle in the pool

   private:
    static constexpr size_t kInitialArenaBytes = 64 << 10;
    google::protobuf::ArenaOptions ArenaOptions() {
      google::protobuf::ArenaOptions o;
      if (kArenaResponse) {
        initial_block_.reset(new char[kInitialArenaBytes]);
        o.initial_block = initial_block_.get();
        o.initial_block_size = kInitialArenaBytes;
      }
      return o;
    }
    void NewResponse() {
      response_ = kArenaResponse ? google::protobuf::Arena::CreateMessage<Response>(&arena_) : new Response();
      this->set_response(response_);
    }
    PooledMessageAllocator* const owner_;
    std::unique_ptr<char[]> initial_block_;
    google::protobuf::Arena arena_;
  };

  void Recycle(Holder* h) {
    uint64_t bytes = h->SpaceUsed();
    if (bytes <= max_holder_bytes_) {
      h->Reset();
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
