// Runs the wire decoder fuzz entry point under ctest with any compiler: seeded
// random inputs, half of them messages built by the generated classes (the
// first input byte picks). The libFuzzer build (`make fuzz`) explores far more.
#include <cstdint>
#include <random>
#include <vector>

#include "client/fuzz/wire_fuzz_entry.h"
#include "gtest/gtest.h"

namespace kvhub {
namespace {

TEST(WireFuzzReplayTest, RandomInputs) {
  std::mt19937_64 rng(20261123);
  for (int i = 0; i < 100000; ++i) {
    std::vector<uint8_t> input(1 + rng() % 512);
    for (uint8_t& b : input) b = static_cast<uint8_t>(rng());
    ASSERT_EQ(FuzzWireOne(input.data(), input.size()), "") << "input " << i << " (seed 20261123)";
  }
}

}  // namespace
}  // namespace kvhub
