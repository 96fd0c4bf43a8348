#include "client/fuzz/wire_fuzz_entry.h"

#include <algorithm>
#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/wire.h"
#include "common/hash.h"
#include "google/protobuf/stubs/logging.h"
#include "grpcpp/support/byte_buffer.h"
#include "grpcpp/support/slice.h"
#include "kvhub/v1/kvhub.pb.h"

namespace kvhub {
namespace {

constexpr size_t kGuard = 64;
constexpr uint8_t kGuardByte = 0xa5;

// The input, read front to back; past its end every read gives zeros.
class Input {
 public:
  Input(const uint8_t* p, size_t n) : p_(p), n_(n) {}
  uint8_t U8() {
    if (n_ == 0) return 0;
    --n_;
    return *p_++;
  }
  uint16_t U16() { return static_cast<uint16_t>(U8() | (U8() << 8)); }
  uint64_t U64() {
    uint64_t v = 0;
    for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(U8()) << (8 * i);
    return v;
  }
  std::string Rest() {
    std::string s(reinterpret_cast<const char*>(p_), n_);
    n_ = 0;
    return s;
  }

 private:
  const uint8_t* p_;
  size_t n_;
};

// The caller's destination buffers, each with guard bytes on both sides.
class Dests {
 public:
  explicit Dests(const std::vector<size_t>& sizes) {
    size_t total = kGuard;
    for (size_t s : sizes) total += s + kGuard;
    mem_.assign(total, kGuardByte);
    size_t at = kGuard;
    for (size_t s : sizes) {
      std::memset(mem_.data() + at, 0, s);
      spans_.emplace_back(mem_.data() + at, s);
      at += s + kGuard;
    }
  }
  std::span<const std::span<uint8_t>> spans() const { return spans_; }
  bool GuardsIntact() const {
    size_t at = 0;
    for (const std::span<uint8_t>& s : spans_) {
      const size_t start = static_cast<size_t>(s.data() - mem_.data());
      for (; at < start; ++at) {
        if (mem_[at] != kGuardByte) return false;
      }
      at = start + s.size();
    }
    for (; at < mem_.size(); ++at) {
      if (mem_[at] != kGuardByte) return false;
    }
    return true;
  }

 private:
  std::vector<uint8_t> mem_;
  std::vector<std::span<uint8_t>> spans_;
};

// `wire` cut into gRPC slices at the input's points (empty slices included).
// Where a message is cut into gRPC slices: up to 5 cut points, read from the input
// before the message when the message is the input's rest (raw bytes).
struct SliceCuts {
  int n = 0;
  uint16_t at[5] = {};
};
SliceCuts ReadCuts(Input& in) {
  SliceCuts c;
  c.n = in.U8() % 6;
  for (int i = 0; i < c.n; ++i) c.at[i] = in.U16();
  return c;
}

grpc::ByteBuffer Slices(const SliceCuts& c, const std::string& wire) {
  std::vector<size_t> cuts;
  for (int i = 0; i < c.n; ++i) cuts.push_back(wire.empty() ? 0 : c.at[i] % (wire.size() + 1));
  std::sort(cuts.begin(), cuts.end());
  std::vector<grpc::Slice> slices;
  size_t at = 0;
  for (size_t cut : cuts) {
    slices.emplace_back(wire.data() + at, cut - at);
    at = cut;
  }
  slices.emplace_back(wire.data() + at, wire.size() - at);
  return grpc::ByteBuffer(slices.data(), slices.size());
}

std::string Data(Input& in, size_t dest_size) {
  const uint8_t how = in.U8() % 4;
  size_t len = how == 0 ? dest_size + 1 + in.U8() : how == 1 ? dest_size : in.U16() % (dest_size + 1);
  std::string d(len, '\0');
  const uint8_t seed = in.U8();
  for (size_t i = 0; i < len; ++i) d[i] = static_cast<char>(seed + i * 13);
  return d;
}

void FillStatus(Input& in, v1::ItemStatus* st) {
  st->set_code(in.U8() % 17);
  st->set_message(std::string(in.U8() % 40, 'm'));
}

// Flips a few bytes of a well-formed message (or none).
bool Mutate(Input& in, std::string* wire) {
  if (wire->empty() || in.U8() % 4 != 0) return false;
  const int n = 1 + in.U8() % 4;
  for (int i = 0; i < n; ++i) (*wire)[in.U16() % wire->size()] ^= static_cast<char>(1 + in.U8() % 255);
  if (in.U8() % 4 == 0) wire->resize(in.U16() % (wire->size() + 1));  // truncated
  return true;
}

std::string CheckCopied(const std::span<uint8_t>& dest, uint64_t at, uint64_t len, const std::string& want) {
  if (at > dest.size() || len > dest.size() - at) return "data_copied but it does not fit the destination";
  if (want.size() != len || std::memcmp(dest.data() + at, want.data(), len) != 0) return "copied bytes differ from the message's";
  return "";
}

std::string RunGetResponse(Input& in, const std::vector<size_t>& sizes, bool structured) {
  Dests dests(sizes);
  std::string wire;
  bool generated = false;
  SliceCuts cuts;
  if (structured) {
    v1::GetResponse resp;
    const int blocks = static_cast<int>(sizes.size()) + (in.U8() % 8 == 0 ? 1 : 0) - (in.U8() % 8 == 0 ? 1 : 0);
    for (int i = 0; i < blocks; ++i) {
      v1::GetResponse::Block* b = resp.add_blocks();
      if (in.U8() % 3 == 0) FillStatus(in, b->mutable_status());
      b->set_size(in.U64() >> (in.U8() % 64));
      b->set_checksum(in.U64());
      if (in.U8() % 4 == 0) b->set_lease_id(in.U64());
      if (in.U8() % 4 == 0) b->mutable_location()->set_offset(in.U16());
      if (in.U8() % 4 != 0) b->set_data(Data(in, i < static_cast<int>(sizes.size()) ? sizes[i] : 16));
    }
    if (in.U8() % 8 == 0) resp.set_incarnation(in.U64());
    wire = resp.SerializeAsString();
    generated = !Mutate(in, &wire);
    cuts = ReadCuts(in);
  } else {
    cuts = ReadCuts(in);  // before Rest(), which takes every byte left
    wire = in.Rest();
  }
  grpc::ByteBuffer buf = Slices(cuts, wire);
  std::vector<DecodedBlock> out;
  absl::Status s = DecodeGetResponse(buf, dests.spans(), &out);
  if (!dests.GuardsIntact()) return "GetResponse: wrote outside the destinations";
  if (s.ok()) {
    if (out.size() != sizes.size()) return "GetResponse: OK with the wrong block count";
    for (size_t i = 0; i < out.size(); ++i) {
      if (!out[i].data_copied) continue;
      const std::span<uint8_t>& d = dests.spans()[i];
      if (out[i].data_len > d.size()) return "GetResponse: data_copied past the destination";
      if (out[i].data_xxh3 != Xxh3_64(d.data(), out[i].data_len)) return "GetResponse: data_xxh3 is not the hash of the copied bytes";
    }
  } else if (s.message().empty()) {
    return "GetResponse: refused without a message";
  }
  v1::GetResponse ref;
  const bool ref_ok = ref.ParseFromString(wire) && ref.blocks_size() == static_cast<int>(sizes.size());
  if (generated && ref_ok && !s.ok()) return absl::StrCat("GetResponse: a generated message was refused: ", s.ToString());
  if (!s.ok() || !ref_ok) return "";
  for (size_t i = 0; i < out.size(); ++i) {
    const v1::GetResponse::Block& b = ref.blocks(static_cast<int>(i));
    const DecodedBlock& o = out[i];
    if (o.code != b.status().code() || o.message != b.status().message() || o.size != b.size() ||
        o.checksum != b.checksum() || o.lease_id != b.lease_id() || o.data_len != b.data().size()) {
      return absl::StrCat("GetResponse: block ", i, " decoded with other fields than the generated parser's");
    }
    if (b.data().empty()) continue;
    if (o.data_copied != (b.data().size() <= sizes[i])) return absl::StrCat("GetResponse: block ", i, " data_copied is wrong");
    if (o.data_copied) {
      if (std::string e = CheckCopied(dests.spans()[i], 0, o.data_len, b.data()); !e.empty()) return "GetResponse: " + e;
    }
  }
  return "";
}

std::string RunGetChunk(Input& in, const std::vector<size_t>& sizes, bool structured) {
  Dests dests(sizes);
  std::string wire;
  bool generated = false;
  SliceCuts cuts;
  if (structured) {
    v1::GetChunk c;
    c.set_index(in.U8() % (sizes.size() + 2));
    if (in.U8() % 2 == 0) FillStatus(in, c.mutable_status());
    c.set_size(in.U64() >> (in.U8() % 64));
    c.set_checksum(in.U64());
    const size_t dest = c.index() < sizes.size() ? sizes[c.index()] : 16;
    c.set_offset(in.U8() % 4 == 0 ? in.U64() : in.U16() % (dest + 2));
    if (in.U8() % 4 != 0) c.set_data(Data(in, dest));
    wire = c.SerializeAsString();
    generated = !Mutate(in, &wire);
    cuts = ReadCuts(in);
  } else {
    cuts = ReadCuts(in);  // before Rest(), which takes every byte left
    wire = in.Rest();
  }
  grpc::ByteBuffer buf = Slices(cuts, wire);
  DecodedChunk out;
  absl::Status s = DecodeGetChunk(buf, dests.spans(), &out);
  if (!dests.GuardsIntact()) return "GetChunk: wrote outside the destinations";
  if (!s.ok() && s.message().empty()) return "GetChunk: refused without a message";
  if (s.ok() && out.data_copied) {
    if (out.index >= sizes.size()) return "GetChunk: data_copied for an index with no destination";
    const std::span<uint8_t>& d = dests.spans()[out.index];
    if (out.offset > d.size() || out.data_len > d.size() - out.offset) return "GetChunk: data_copied past the destination";
  }
  v1::GetChunk ref;
  const bool ref_ok = ref.ParseFromString(wire);
  if (generated && ref_ok && !s.ok()) return absl::StrCat("GetChunk: a generated message was refused: ", s.ToString());
  if (!s.ok() || !ref_ok) return "";
  if (out.index != ref.index() || out.has_status != ref.has_status() || out.block.code != ref.status().code() ||
      out.block.message != ref.status().message() || out.block.size != ref.size() ||
      out.block.checksum != ref.checksum() || out.offset != ref.offset() || out.data_len != ref.data().size()) {
    return "GetChunk: decoded with other fields than the generated parser's";
  }
  if (ref.data().empty()) return "";
  const bool fits = ref.index() < sizes.size() && ref.offset() <= sizes[ref.index()] &&
                    ref.data().size() <= sizes[ref.index()] - ref.offset();
  if (out.data_copied != fits) return "GetChunk: data_copied is wrong";
  if (out.data_copied) {
    if (std::string e = CheckCopied(dests.spans()[out.index], out.offset, out.data_len, ref.data()); !e.empty()) {
      return "GetChunk: " + e;
    }
  }
  return "";
}

}  // namespace

std::string FuzzWireOne(const uint8_t* data, size_t size) {
  static const bool quiet = [] {
    google::protobuf::SetLogHandler(nullptr);  // invalid UTF-8 in string fields is logged
    return true;
  }();
  (void)quiet;
  Input in(data, size);
  const uint8_t mode = in.U8();
  std::vector<size_t> sizes((mode >> 2) % 5);
  for (size_t& s : sizes) s = in.U16() % 5000;
  const bool structured = (mode & 2) != 0;
  return (mode & 1) != 0 ? RunGetChunk(in, sizes, structured) : RunGetResponse(in, sizes, structured);
}

}  // namespace kvhub
