// Runs the service fuzz entry point under ctest with any compiler: seeded random
// inputs of many lengths (every byte string is a valid operation sequence, so
// random bytes exercise every request type). The libFuzzer build (`make fuzz`)
// explores far more; this keeps the invariants checked on every `make test`.
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>
#include <vector>

#include "cachesvc/fuzz/service_fuzz_entry.h"
#include "gtest/gtest.h"

namespace kvhub::cachesvc {
namespace {

TEST(ServiceFuzzReplayTest, RandomOperationSequences) {
  std::mt19937_64 rng(20261123);
  const int kInputs = 1500;
  for (int i = 0; i < kInputs; ++i) {
    std::vector<uint8_t> input(16 + rng() % 2048);
    for (uint8_t& b : input) b = static_cast<uint8_t>(rng());
    const std::string failure = FuzzServiceOne(input.data(), input.size());
    ASSERT_EQ(failure, "") << "input " << i << " (seed 20261123)";
  }
  // The inputs reached every path, not only refusals.
  const ServiceFuzzCoverage c = FuzzServiceCoverage();
  std::printf("inputs %lu refused %lu (draining %lu) puts %lu commits %lu checksum-refused %lu lookup-hits %lu inline-hits %lu "
              "leases %lu releases %lu deletes %lu read-holds %lu write-holds %lu evictions %lu\n",
              c.inputs, c.refused, c.refused_draining, c.puts_stored, c.commits, c.checksum_refused, c.lookup_hits, c.inline_hits,
              c.leases, c.releases, c.deletes, c.read_holds, c.write_holds, c.evictions);
  const struct {
    const char* path;
    uint64_t reached, want_more_than;
  } paths[] = {{"refused", c.refused, 100},         {"refused while draining", c.refused_draining, 0},
               {"puts stored", c.puts_stored, 100}, {"commits", c.commits, 10},
               {"checksum refusals", c.checksum_refused, 10}, {"lookup hits", c.lookup_hits, 100},
               {"inline hits", c.inline_hits, 100}, {"leases", c.leases, 100},
               {"releases", c.releases, 10},        {"deletes", c.deletes, 10},
               {"read holds", c.read_holds, 10},    {"write holds", c.write_holds, 10},
               {"evictions", c.evictions, 100}};
  for (const auto& p : paths) EXPECT_GT(p.reached, p.want_more_than) << p.path;
}

// Inputs that once broke an invariant (found by `make fuzz`), kept as regressions.
TEST(ServiceFuzzReplayTest, Corpus) {
  const char* src = std::getenv("KVHUB_SOURCE_DIR");
  const std::filesystem::path dir =
      std::filesystem::path(src ? src : KVHUB_SOURCE_DIR_DEFAULT) / "cachesvc/fuzz/corpus";
  int n = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    std::ifstream f(e.path(), std::ios::binary);
    const std::vector<uint8_t> input((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    EXPECT_EQ(FuzzServiceOne(input.data(), input.size()), "") << e.path();
    ++n;
  }
  EXPECT_GE(n, 1) << "corpus missing: " << dir;
}

TEST(ServiceFuzzReplayTest, EmptyAndTinyInputs) {
  for (int n = 0; n < 4; ++n) {
    std::vector<uint8_t> input(n, 0);
    EXPECT_EQ(FuzzServiceOne(input.data(), input.size()), "") << n << " zero bytes";
  }
}

}  // namespace
}  // namespace kvhub::cachesvc
