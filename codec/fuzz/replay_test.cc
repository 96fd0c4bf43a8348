// Runs the decoder fuzz entry point under ctest with any compiler: every file
// of the committed seed corpus, then seeded random mutations of each (bit
// flips, byte sets, truncations, extensions, header-field rewrites, splices).
// The libFuzzer build (`make fuzz`) explores far more; this keeps the
// invariants checked on every `make test`.

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "codec/codec.h"
#include "codec/fuzz/decode_fuzz_entry.h"
#include "gtest/gtest.h"

namespace kvhub::codec {
namespace {

std::vector<std::vector<uint8_t>> LoadCorpus() {
  const char* src = std::getenv("KVHUB_SOURCE_DIR");
  std::filesystem::path dir =
      std::filesystem::path(src ? src : KVHUB_SOURCE_DIR_DEFAULT) / "codec/fuzz/corpus";
  std::vector<std::vector<uint8_t>> out;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    std::ifstream f(e.path(), std::ios::binary);
    out.emplace_back(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
  }
  return out;
}

TEST(CodecFuzzReplayTest, CorpusDecodesCleanly) {
  auto corpus = LoadCorpus();
  ASSERT_GE(corpus.size(), 6u) << "seed corpus missing";
  int decodable = 0;
  for (const auto& c : corpus) {
    FuzzDecodeOne(c.data(), c.size());
    auto h = InspectBlock(c);
    if (h.ok()) {
      std::vector<uint8_t> out(h->raw_bytes);
      decodable += Decode(c, KvMutableView{h->shape, out.data(), out.size()}).ok();
    }
  }
  EXPECT_GE(decodable, 6);  // the seeds are valid blocks of every codec
}

TEST(CodecFuzzReplayTest, RandomMutations) {
  auto corpus = LoadCorpus();
  ASSERT_FALSE(corpus.empty());
  std::mt19937_64 rng(20240601);
  const int kPerSeed = 10000;
  for (const auto& seed : corpus) {
    for (int i = 0; i < kPerSeed; ++i) {
      std::vector<uint8_t> m = seed;
      int edits = 1 + static_cast<int>(rng() % 4);
      for (int e = 0; e < edits && !m.empty(); ++e) {
        size_t pos = rng() % m.size();
        switch (rng() % 7) {
          case 0: m[pos] ^= static_cast<uint8_t>(1u << (rng() % 8)); break;
          case 1: m[pos] = static_cast<uint8_t>(rng()); break;
          case 2: m.resize(pos); break;
          case 3: m.insert(m.begin() + pos, static_cast<uint8_t>(rng())); break;
          case 4: {  // rewrite a header field (offsets 8..96) with an interesting value
            static const uint64_t kVals[] = {0, 1, 2, 7, 16, 31, 32, 64, 65, 128, 255, 1024,
                                             65535, 65536, 0xFFFFFFFFull, ~0ull};
            size_t off = 8 + (rng() % 88);
            uint64_t v = kVals[rng() % std::size(kVals)];
            for (size_t b = 0; b < 4 && off + b < m.size(); ++b) m[off + b] = uint8_t(v >> (8 * b));
            break;
          }
          case 5: {  // splice from another seed
            const auto& o = corpus[rng() % corpus.size()];
            if (o.empty()) break;
            size_t from = rng() % o.size(), len = std::min<size_t>(rng() % 64, o.size() - from);
            for (size_t b = 0; b < len && pos + b < m.size(); ++b) m[pos + b] = o[from + b];
            break;
          }
          case 6: {  // segment table entry rewrite
            size_t off = 128 + 8 * (rng() % 8);
            uint64_t v = rng() % (m.size() + 64);
            for (size_t b = 0; b < 8 && off + b < m.size(); ++b) m[off + b] = uint8_t(v >> (8 * b));
            break;
          }
        }
      }
      FuzzDecodeOne(m.data(), m.size());
    }
  }
}

}  // namespace
}  // namespace kvhub::codec
