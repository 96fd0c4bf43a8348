#include "codec/fuzz/decode_fuzz_entry.h"

#include <cstdio>
#include <cstdlib>
#include <vector>

#include "codec/codec.h"
#include "common/hash.h"

namespace kvhub::codec {
namespace {

thread_local const std::vector<uint8_t>* g_current = nullptr;

// On failure, writes the offending input to $KVHUB_FUZZ_DUMP (if set) so the
// replay test's findings can be reproduced, then aborts.
void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "fuzz invariant broken: %s\n", what);
    if (const char* path = std::getenv("KVHUB_FUZZ_DUMP"); path != nullptr && g_current != nullptr) {
      if (FILE* f = std::fopen(path, "wb")) {
        std::fwrite(g_current->data(), 1, g_current->size(), f);
        std::fclose(f);
      }
    }
    std::abort();
  }
}

void TryDecode(const std::vector<uint8_t>& bytes) {
  g_current = &bytes;
  auto h = InspectBlock(bytes);
  if (!h.ok()) return;
  Check(h->raw_bytes == h->shape.RawBytes(), "header raw_bytes");
  if (h->raw_bytes > kFuzzMaxRawBytes) return;
  for (KernelChoice k : {KernelChoice::kSimd, KernelChoice::kScalar}) {
    std::vector<uint8_t> out(h->raw_bytes);
    DecodeOptions o;
    o.kernels = k;
    absl::Status s = Decode(bytes, KvMutableView{h->shape, out.data(), out.size()}, o);
    if (!s.ok()) {
      Check(s.code() == absl::StatusCode::kInvalidArgument ||
                s.code() == absl::StatusCode::kDataLoss,
            "decode error code");
    }
    // Unchecked body: the segment parsers see arbitrary bytes.
    o.verify_checksum = false;
    s = Decode(bytes, KvMutableView{h->shape, out.data(), out.size()}, o);
    (void)s;
  }
  // Scalar and SIMD decode must agree on any block that decodes.
  std::vector<uint8_t> a(h->raw_bytes), b(h->raw_bytes);
  DecodeOptions sa, sb;
  sa.verify_checksum = sb.verify_checksum = false;
  sb.kernels = KernelChoice::kScalar;
  bool oa = Decode(bytes, KvMutableView{h->shape, a.data(), a.size()}, sa).ok();
  bool ob = Decode(bytes, KvMutableView{h->shape, b.data(), b.size()}, sb).ok();
  Check(oa == ob, "scalar and simd disagree on validity");
  if (oa) Check(a == b, "scalar and simd decode differ");  // lossless too (its planes' SIMD merge)
}

}  // namespace

void FuzzDecodeOne(const uint8_t* data, size_t size) {
  std::vector<uint8_t> bytes(data, data + size);
  TryDecode(bytes);
  if (size < BlockHeader::kSize) return;
  // Reseal: recompute the body checksum (over whatever follows the header)
  // and the header checksum.
  std::vector<uint8_t> sealed = bytes;
  PutU64(sealed.data() + 80, Xxh3_64(sealed.data() + 128, sealed.size() - 128));
  PutU64(sealed.data() + 120, Xxh3_64(sealed.data(), 120));
  TryDecode(sealed);
}

}  // namespace kvhub::codec
