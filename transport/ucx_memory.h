#pragma once
// UcxMemory: one range of memory registered with UCX (ucp_mem_map) and its
// packed remote key. Created by UcxContext::Register (existing memory) or
// UcxContext::Allocate (memory UCX allocated).
//
// Ownership: after Register it does not own the bytes, only the registration;
// the memory must stay mapped until the UcxMemory is destroyed (ucp_mem_unmap).
// After Allocate, ucp_mem_unmap also frees the bytes. Must be destroyed before
// its UcxContext. Thread safety: immutable after creation; safe to read
// from any thread.

#include <cstdint>
#include <string>

#include <ucp/api/ucp.h>

namespace kvhub::transport {

class UcxMemory {
 public:
  UcxMemory(ucp_context_h context, ucp_mem_h memh, void* base, uint64_t size, std::string packed_rkey)
      : context_(context), memh_(memh), base_(base), size_(size), packed_rkey_(std::move(packed_rkey)) {}
  ~UcxMemory();
  UcxMemory(const UcxMemory&) = delete;
  UcxMemory& operator=(const UcxMemory&) = delete;

  ucp_mem_h memh() const { return memh_; }
  void* base() const { return base_; }
  uint64_t size() const { return size_; }
  // Opaque bytes a peer passes to ucp_ep_rkey_unpack to reach this memory.
  const std::string& packed_rkey() const { return packed_rkey_; }
  bool Contains(const void* p, uint64_t n) const {
    const auto* b = static_cast<const uint8_t*>(base_);
    const auto* q = static_cast<const uint8_t*>(p);
    return q >= b && n <= size_ && static_cast<uint64_t>(q - b) <= size_ - n;
  }

 private:
  ucp_context_h context_;
  ucp_mem_h memh_;
  void* base_;
  uint64_t size_;
  std::string packed_rkey_;
};

}  // namespace kvhub::transport
