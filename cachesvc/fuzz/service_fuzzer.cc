// libFuzzer target for the kvhub.v1 service (`make fuzz`; clang only): request
// sequences checked against a reference model (service_fuzz_entry.h).
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "cachesvc/fuzz/service_fuzz_entry.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string failure = kvhub::cachesvc::FuzzServiceOne(data, size);
  if (!failure.empty()) {
    std::fprintf(stderr, "service invariant violated: %s\n", failure.c_str());
    std::abort();
  }
  return 0;
}
