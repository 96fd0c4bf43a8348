#pragma once
// Array-based intrusive doubly-linked lists over dense slot ids (no allocation
// after Init). Several lists share one SlotLinks arena: a slot is in at most one
// list of an arena at a time. Used by the eviction policies and the store.
//
// Thread safety: none; the owner serializes calls.

#include <cassert>
#include <cstdint>
#include <vector>

#include "storage/eviction_policy.h"

namespace kvhub::storage {

// next/prev arrays for slots [0, n).
class SlotLinks {
 public:
  void Init(uint32_t n) {
    next_.assign(n, kNoSlot);
    prev_.assign(n, kNoSlot);
  }
  uint32_t size() const { return static_cast<uint32_t>(next_.size()); }
  uint32_t next(uint32_t s) const { return next_[s]; }
  uint32_t prev(uint32_t s) const { return prev_[s]; }

 private:
  friend class SlotList;
  std::vector<uint32_t> next_;
  std::vector<uint32_t> prev_;
};

// A list with a head (newest, where PushHead inserts) and a tail (oldest).
// next() walks from head to tail; prev() from tail to head.
class SlotList {
 public:
  explicit SlotList(SlotLinks* links = nullptr) : links_(links) {}
  void Bind(SlotLinks* links) { links_ = links; }

  bool empty() const { return head_ == kNoSlot; }
  uint32_t count() const { return count_; }
  uint32_t head() const { return head_; }
  uint32_t tail() const { return tail_; }

  void PushHead(uint32_t s) {
    links_->prev_[s] = kNoSlot;
    links_->next_[s] = head_;
    if (head_ != kNoSlot) links_->prev_[head_] = s;
    head_ = s;
    if (tail_ == kNoSlot) tail_ = s;
    ++count_;
  }
  void PushTail(uint32_t s) {
    links_->next_[s] = kNoSlot;
    links_->prev_[s] = tail_;
    if (tail_ != kNoSlot) links_->next_[tail_] = s;
    tail_ = s;
    if (head_ == kNoSlot) head_ = s;
    ++count_;
  }
  void Remove(uint32_t s) {
    uint32_t n = links_->next_[s], p = links_->prev_[s];
    if (p != kNoSlot) links_->next_[p] = n; else head_ = n;
    if (n != kNoSlot) links_->prev_[n] = p; else tail_ = p;
    links_->next_[s] = links_->prev_[s] = kNoSlot;
    assert(count_ > 0);
    --count_;
  }
  uint32_t PopTail() {
    uint32_t s = tail_;
    if (s != kNoSlot) Remove(s);
    return s;
  }
  void MoveToHead(uint32_t s) {
    if (head_ == s) return;
    Remove(s);
    PushHead(s);
  }
  void Clear() { head_ = tail_ = kNoSlot; count_ = 0; }

 private:
  SlotLinks* links_;
  uint32_t head_ = kNoSlot;
  uint32_t tail_ = kNoSlot;
  uint32_t count_ = 0;
};

}  // namespace kvhub::storage
