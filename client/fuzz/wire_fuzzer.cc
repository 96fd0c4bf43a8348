// libFuzzer target for the client's decoders of shard responses (`make fuzz`;
// clang only): wire_fuzz_entry.h.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "client/fuzz/wire_fuzz_entry.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string failure = kvhub::FuzzWireOne(data, size);
  if (!failure.empty()) {
    std::fprintf(stderr, "wire decoder invariant violated: %s\n", failure.c_str());
    std::abort();
  }
  return 0;
}
