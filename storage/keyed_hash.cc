#include "storage/keyed_hash.h"

#include <random>

namespace kvhub::storage {

const HashSeed& ProcessHashSeed() {
  static const HashSeed seed = [] {
    std::random_device rd;  // the OS's random source (getrandom) on Linux
    HashSeed s{};
    for (uint64_t& w : s.s) w = (uint64_t{rd()} << 32) ^ rd();
    return s;
  }();
  return seed;
}

}  // namespace kvhub::storage
