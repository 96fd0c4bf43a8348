#include "client/wire.h"

#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/hash.h"

namespace kvhub {
namespace {

// Wire types.
constexpr int kVarint = 0, kFixed64 = 1, kLen = 2, kFixed32 = 5;

void PutVarint(std::string* out, uint64_t v) {
  while (v >= 0x80) {
    out->push_back(static_cast<char>(v | 0x80));
    v >>= 7;
  }
  out->push_back(static_cast<char>(v));
}
void PutTag(std::string* out, int field, int type) { PutVarint(out, (field << 3) | type); }
void PutFixed64(std::string* out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out->push_back(static_cast<char>(v >> (8 * i)));
}
void PutBytesField(std::string* out, int field, absl::string_view b) {
  PutTag(out, field, kLen);
  PutVarint(out, b.size());
  out->append(b.data(), b.size());
}

// Cursor over the slices of a received ByteBuffer.
class SliceReader {
 public:
  explicit SliceReader(const std::vector<grpc::Slice>* slices) : slices_(slices) { Normalize(); }

  uint64_t pos() const { return pos_; }
  bool done() const { return si_ >= slices_->size(); }

  bool ReadByte(uint8_t* b) {
    if (done()) return false;
    *b = (*slices_)[si_].begin()[off_];
    Advance(1);
    return true;
  }
  bool ReadVarint(uint64_t* v) {
    *v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
      uint8_t b;
      if (!ReadByte(&b)) return false;
      *v |= static_cast<uint64_t>(b & 0x7f) << shift;
      if ((b & 0x80) == 0) return true;
    }
    return false;
  }
  bool ReadFixed(int bytes, uint64_t* v) {
    *v = 0;
    for (int i = 0; i < bytes; ++i) {
      uint8_t b;
      if (!ReadByte(&b)) return false;
      *v |= static_cast<uint64_t>(b) << (8 * i);
    }
    return true;
  }
  // Copies n bytes to dst (nullptr: skips them); with `hash`, also hashes each
  // piece right after it lands (still in cache).
  bool Read(uint8_t* dst, uint64_t n, Xxh3_64Stream* hash = nullptr) {
    while (n > 0) {
      if (done()) return false;
      const grpc::Slice& s = (*slices_)[si_];
      const size_t take = std::min<uint64_t>(n, s.size() - off_);
      if (dst != nullptr) {
        std::memcpy(dst, s.begin() + off_, take);
        if (hash != nullptr) hash->Update(dst, take);
        dst += take;
      }
      Advance(take);
      n -= take;
    }
    return true;
  }

 private:
  void Advance(size_t n) {
    off_ += n;
    pos_ += n;
    Normalize();
  }
  void Normalize() {
    while (si_ < slices_->size() && off_ >= (*slices_)[si_].size()) {
      off_ = 0;
      ++si_;
    }
  }
  const std::vector<grpc::Slice>* slices_;
  size_t si_ = 0;
  size_t off_ = 0;
  uint64_t pos_ = 0;
};

absl::Status Malformed(absl::string_view what) {
  return absl::DataLossError(absl::StrCat("malformed ", what, " from server"));
}

// Skips a field of wire type `type` (tag already read).
bool SkipField(SliceReader& r, int type) {
  uint64_t v;
  switch (type) {
    case kVarint: return r.ReadVarint(&v);
    case kFixed64: return r.ReadFixed(8, &v);
    case kFixed32: return r.ReadFixed(4, &v);
    case kLen: return r.ReadVarint(&v) && r.Read(nullptr, v);
    default: return false;
  }
}

// Reads a length-delimited field's payload into a string (small fields only).
bool ReadString(SliceReader& r, std::string* s, uint64_t limit) {
  uint64_t len;
  if (!r.ReadVarint(&len) || len > limit) return false;
  s->resize(len);
  return r.Read(reinterpret_cast<uint8_t*>(s->data()), len);
}

// ItemStatus { int32 code = 1; string message = 2; }, payload of length `len`.
bool ReadItemStatus(SliceReader& r, DecodedBlock* b) {
  uint64_t len;
  if (!r.ReadVarint(&len)) return false;
  const uint64_t end = r.pos() + len;
  while (r.pos() < end) {
    uint64_t tag;
    if (!r.ReadVarint(&tag)) return false;
    const int field = static_cast<int>(tag >> 3), type = static_cast<int>(tag & 7);
    if (field == 1 && type == kVarint) {
      uint64_t v;
      if (!r.ReadVarint(&v)) return false;
      b->code = static_cast<int32_t>(v);
    } else if (field == 2 && type == kLen) {
      if (!ReadString(r, &b->message, 1 << 20)) return false;
    } else if (!SkipField(r, type)) {
      return false;
    }
  }
  return r.pos() == end;
}

// Reads a bytes field's payload: copies it into dest[at..] when it fits (and
// hashes the copy into `hash` when given).
bool ReadData(SliceReader& r, std::span<uint8_t> dest, uint64_t at, uint64_t* len, bool* copied,
              Xxh3_64Stream* hash = nullptr) {
  if (!r.ReadVarint(len)) return false;
  if (dest.data() != nullptr && at <= dest.size() && *len <= dest.size() - at) {
    *copied = true;
    return r.Read(dest.data() + at, *len, hash);
  }
  *copied = false;
  return r.Read(nullptr, *len);
}

// GetResponse.Block, payload of length `len`.
bool ReadBlock(SliceReader& r, uint64_t len, std::span<uint8_t> dest, DecodedBlock* b) {
  const uint64_t end = r.pos() + len;
  while (r.pos() < end) {
    uint64_t tag;
    if (!r.ReadVarint(&tag)) return false;
    const int field = static_cast<int>(tag >> 3), type = static_cast<int>(tag & 7);
    if (field == 1 && type == kLen) {
      if (!ReadItemStatus(r, b)) return false;
    } else if (field == 2 && type == kVarint) {
      if (!r.ReadVarint(&b->size)) return false;
    } else if (field == 3 && type == kFixed64) {
      if (!r.ReadFixed(8, &b->checksum)) return false;
    } else if (field == 4 && type == kFixed64) {
      if (!r.ReadFixed(8, &b->lease_id)) return false;
    } else if (field == 6 && type == kLen) {
      Xxh3_64Stream hash;
      if (!ReadData(r, dest, 0, &b->data_len, &b->data_copied, &hash)) return false;
      b->data_xxh3 = b->data_copied ? hash.Digest() : 0;
    } else if (!SkipField(r, type)) {  // 5: location (unused on the gRPC path)
      return false;
    }
  }
  return r.pos() == end;
}

}  // namespace

grpc::Slice BorrowedBytes::Borrow(const uint8_t* data, size_t len) {
  {
    absl::MutexLock l(&mu_);
    ++outstanding_;
  }
  return grpc::Slice(const_cast<uint8_t*>(data), len, &BorrowedBytes::Release, this);
}

void BorrowedBytes::Release(void* self) {
  auto* b = static_cast<BorrowedBytes*>(self);
  absl::MutexLock l(&b->mu_);
  --b->outstanding_;
}

void BorrowedBytes::Wait() {
  absl::MutexLock l(&mu_);
  mu_.Await(absl::Condition(
      +[](BorrowedBytes* b) ABSL_EXCLUSIVE_LOCKS_REQUIRED(b->mu_) { return b->outstanding_ == 0; },
      this));
}

grpc::ByteBuffer EncodePutRequest(absl::string_view ns, std::span<const PutItemView> items,
                                  BorrowedBytes* borrow) {
  std::vector<grpc::Slice> slices;
  std::string head;
  PutBytesField(&head, 1, ns);
  for (const PutItemView& it : items) {
    std::string inner;
    PutBytesField(&inner, 1, it.key);
    if (!it.parent.empty()) PutBytesField(&inner, 2, it.parent);
    if (it.size != 0) {
      PutTag(&inner, 3, kVarint);
      PutVarint(&inner, it.size);
    }
    PutTag(&inner, 4, kFixed64);
    PutFixed64(&inner, it.checksum);
    if (it.pin) {
      PutTag(&inner, 6, kVarint);
      PutVarint(&inner, 1);
    }
    const size_t n = it.data.size();
    if (n > 0) {
      PutTag(&inner, 5, kLen);
      PutVarint(&inner, n);
    }
    PutTag(&head, 2, kLen);
    PutVarint(&head, inner.size() + n);
    head += inner;
    if (n > 0) {
      slices.emplace_back(head.data(), head.size());  // copies the small header
      head.clear();
      slices.push_back(borrow->Borrow(it.data.data(), n));
    }
  }
  if (!head.empty()) slices.emplace_back(head.data(), head.size());
  return grpc::ByteBuffer(slices.data(), slices.size());
}

grpc::ByteBuffer EncodePutDataChunk(uint64_t reservation_id, uint64_t offset,
                                    std::span<const uint8_t> data, BorrowedBytes* borrow) {
  std::string head;
  PutTag(&head, 1, kFixed64);
  PutFixed64(&head, reservation_id);
  if (offset != 0) {
    PutTag(&head, 2, kVarint);
    PutVarint(&head, offset);
  }
  std::vector<grpc::Slice> slices;
  if (!data.empty()) {
    PutTag(&head, 3, kLen);
    PutVarint(&head, data.size());
    slices.emplace_back(head.data(), head.size());
    slices.push_back(borrow->Borrow(data.data(), data.size()));
  } else {
    slices.emplace_back(head.data(), head.size());
  }
  return grpc::ByteBuffer(slices.data(), slices.size());
}

absl::Status DecodeGetResponse(const grpc::ByteBuffer& buf,
                               std::span<const std::span<uint8_t>> dests,
                               std::vector<DecodedBlock>* out) {
  std::vector<grpc::Slice> slices;
  if (!buf.Dump(&slices).ok()) return Malformed("GetResponse (unreadable buffer)");
  SliceReader r(&slices);
  out->clear();
  out->reserve(dests.size());
  while (!r.done()) {
    uint64_t tag;
    if (!r.ReadVarint(&tag)) return Malformed("GetResponse");
    const int field = static_cast<int>(tag >> 3), type = static_cast<int>(tag & 7);
    if (field == 1 && type == kLen) {
      uint64_t len;
      if (!r.ReadVarint(&len)) return Malformed("GetResponse");
      const size_t i = out->size();
      std::span<uint8_t> dest = i < dests.size() ? dests[i] : std::span<uint8_t>();
      out->emplace_back();
      if (!ReadBlock(r, len, dest, &out->back())) return Malformed("GetResponse.Block");
    } else if (!SkipField(r, type)) {
      return Malformed("GetResponse");
    }
  }
  if (out->size() != dests.size()) {
    return absl::DataLossError(absl::StrCat("GetResponse has ", out->size(), " blocks, asked for ",
                                            dests.size()));
  }
  return absl::OkStatus();
}

absl::Status DecodeGetChunk(const grpc::ByteBuffer& buf, std::span<const std::span<uint8_t>> dests,
                            DecodedChunk* out) {
  std::vector<grpc::Slice> slices;
  if (!buf.Dump(&slices).ok()) return Malformed("GetChunk (unreadable buffer)");
  // Fields may come in any order; data needs index and offset first, so find
  // them in a first pass and copy in a second.
  *out = DecodedChunk();
  for (int pass = 0; pass < 2; ++pass) {
    SliceReader r(&slices);
    while (!r.done()) {
      uint64_t tag;
      if (!r.ReadVarint(&tag)) return Malformed("GetChunk");
      const int field = static_cast<int>(tag >> 3), type = static_cast<int>(tag & 7);
      uint64_t v;
      bool ok = true;
      if (field == 6 && type == kLen) {
        if (pass == 0) {
          ok = r.ReadVarint(&v) && r.Read(nullptr, v);
        } else {
          std::span<uint8_t> dest =
              out->index < dests.size() ? dests[out->index] : std::span<uint8_t>();
          ok = ReadData(r, dest, out->offset, &out->data_len, &out->data_copied);
        }
      } else if (pass == 1) {
        ok = SkipField(r, type);
      } else if (field == 1 && type == kVarint) {
        ok = r.ReadVarint(&v);
        out->index = static_cast<uint32_t>(v);
      } else if (field == 2 && type == kLen) {
        ok = ReadItemStatus(r, &out->block);
        out->has_status = true;
      } else if (field == 3 && type == kVarint) {
        ok = r.ReadVarint(&out->block.size);
      } else if (field == 4 && type == kFixed64) {
        ok = r.ReadFixed(8, &out->block.checksum);
      } else if (field == 5 && type == kVarint) {
        ok = r.ReadVarint(&out->offset);
      } else {
        ok = SkipField(r, type);
      }
      if (!ok) return Malformed("GetChunk");
    }
  }
  return absl::OkStatus();
}

}  // namespace kvhub
