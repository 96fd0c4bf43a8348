#pragma once
// The decoder fuzz entry point shared by the libFuzzer target
// (decode_fuzzer.cc, `make fuzz`) and the replay test that runs under ctest
// with any compiler (replay_test.cc). Feeds `data` to the decoder three ways:
// as is; with the header checksum recomputed (so header-field mutations reach
// validation); and with both checksums recomputed and verification on (so
// body mutations reach the segment parsers). Aborts only if the decoder
// breaks a documented invariant; memory errors are for the sanitizers.

#include <cstddef>
#include <cstdint>

namespace kvhub::codec {

// Largest raw block the entry point will allocate an output buffer for.
inline constexpr uint64_t kFuzzMaxRawBytes = 64ull << 20;

void FuzzDecodeOne(const uint8_t* data, size_t size);

}  // namespace kvhub::codec
