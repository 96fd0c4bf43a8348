#pragma once
// The client's hand-rolled decoders of what a shard sends (client/wire.h:
// DecodeGetResponse, DecodeGetChunk) under arbitrary bytes: one entry point
// shared by the libFuzzer target (wire_fuzzer.cc, `make fuzz`) and the replay test
// under ctest (replay_test.cc).
//
// An input picks the caller's destination buffers (0-4, guarded on both sides),
// how the message is cut into gRPC slices, and the message: either arbitrary
// bytes or a GetResponse / GetChunk built with the generated protobuf classes
// (sometimes with bytes flipped afterwards). Checks:
//   - nothing is written outside the destinations (guard bytes, and ASan);
//   - a decoded block's `data_copied` bytes are in its destination and its
//     `data_xxh3` is their hash, so the caller's checksum check sees exactly
//     what was copied;
//   - a message the generated classes built is decoded, with the same fields;
//     and whenever both the generated parser and the decoder accept a message,
//     they agree on every field and every copied byte.
// Thread-compatible (one call at a time per process).
#include <cstddef>
#include <cstdint>
#include <string>

namespace kvhub {

// Runs one input. Returns "" when every check held, else what was wrong.
std::string FuzzWireOne(const uint8_t* data, size_t size);

}  // namespace kvhub
