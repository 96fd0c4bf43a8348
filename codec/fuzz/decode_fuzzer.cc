// libFuzzer target for the block decoder (`make fuzz`; clang only).
#include <cstddef>
#include <cstdint>

#include "codec/fuzz/decode_fuzz_entry.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  kvhub::codec::FuzzDecodeOne(data, size);
  return 0;
}
