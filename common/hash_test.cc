#include "common/hash.h"

#include <dlfcn.h>

#include <cstdint>
#include <string>
#include <random>
#include <vector>

// The reference: xxHash compiled inline here, for the baseline ISA.
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "gtest/gtest.h"

namespace kvhub {
namespace {

// Xxh3_64 may run xxHash's AVX2/AVX-512 dispatch for large inputs; every length,
// alignment and content must give exactly the baseline result (block checksums
// are compared across machines).
TEST(HashTest, Xxh3_64MatchesTheReferenceAtEveryLengthAndAlignment) {
  std::mt19937_64 rng(7);
  std::vector<uint8_t> buf((3 << 20) + 64);
  for (auto& b : buf) b = static_cast<uint8_t>(rng());
  const size_t lengths[] = {0,    1,    3,    16,   17,   128,  129,  240,     241,     1023,
                            4095, 4096, 4097, 8191, 65536, 99999, 1 << 20, (1 << 20) + 7, 3 << 20};
  for (size_t len : lengths) {
    for (size_t off : {0, 1, 13, 64}) {
      if (off + len > buf.size()) continue;
      EXPECT_EQ(Xxh3_64(buf.data() + off, len), XXH3_64bits(buf.data() + off, len))
          << "len " << len << " offset " << off;
    }
  }
  // A known value: XXH3-64 of the empty input, seed 0.
  EXPECT_EQ(Xxh3_64(nullptr, 0), 0x2D06800538D394C2ull);
}

TEST(HashTest, CopyAndXxh3_64CopiesExactlyAndHashesLikeXxh3_64) {
  std::mt19937_64 rng(11);
  std::vector<uint8_t> src((3 << 20) + 64);
  for (auto& b : src) b = static_cast<uint8_t>(rng());
  std::vector<uint8_t> dst(src.size() + 64);
  const size_t lengths[] = {0, 1, 240, 4096, 65535, 65536, 65537, 131072, 99999, 1 << 20, (1 << 20) + 7, 3 << 20};
  for (size_t len : lengths) {
    for (size_t off : {0, 5, 64}) {
      if (off + len > src.size()) continue;
      std::fill(dst.begin(), dst.end(), 0xA5);
      const uint64_t h = CopyAndXxh3_64(dst.data() + 3, src.data() + off, len);
      EXPECT_EQ(h, XXH3_64bits(src.data() + off, len)) << "len " << len << " offset " << off;
      EXPECT_TRUE(std::equal(src.begin() + off, src.begin() + off + len, dst.begin() + 3)) << "len " << len;
      EXPECT_EQ(dst[2], 0xA5);
      EXPECT_EQ(dst[3 + len], 0xA5) << "wrote past the end, len " << len;
    }
  }
}

// Pieces of every size (1 byte to 256 KiB, as gRPC slices and copy chunks
// come) hash to the one-shot value of their concatenation.
TEST(HashTest, Xxh3_64StreamOverPiecesEqualsTheOneShotHash) {
  std::mt19937_64 rng(13);
  std::vector<uint8_t> buf((2 << 20) + 99);
  for (auto& b : buf) b = static_cast<uint8_t>(rng());
  for (int round = 0; round < 40; ++round) {
    const size_t len = round == 0 ? 0 : rng() % buf.size();
    const size_t max_piece = size_t{1} << (rng() % 19);
    Xxh3_64Stream h;
    for (size_t at = 0; at < len;) {
      const size_t n = std::min(len - at, 1 + rng() % max_piece);
      h.Update(buf.data() + at, n);
      at += n;
    }
    EXPECT_EQ(h.Digest(), XXH3_64bits(buf.data(), len)) << "len " << len << " pieces up to " << max_piece;
  }
}

#if defined(__x86_64__)
extern "C" XXH64_hash_t XXH3_64bits_dispatch(const void* input, size_t len);

// The dispatch must come from Debian's libxxhash.so, loaded into every binary
// that links kvhub_common (session 3 shipped a weak reference that --as-needed
// resolved to nothing, silently keeping the baseline kernel).
TEST(HashTest, LargeInputsRunLibxxhashRuntimeDispatch) {
  ASSERT_TRUE(Xxh3_64UsesRuntimeDispatch());
  Dl_info info{};
  ASSERT_NE(dladdr(reinterpret_cast<void*>(&XXH3_64bits_dispatch), &info), 0);
  ASSERT_NE(info.dli_fname, nullptr);
  EXPECT_NE(std::string(info.dli_fname).find("libxxhash"), std::string::npos) << info.dli_fname;
}
#endif

}  // namespace
}  // namespace kvhub
