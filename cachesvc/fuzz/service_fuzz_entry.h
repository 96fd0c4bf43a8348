#pragma once
// The kvhub.v1 service under arbitrary request sequences: one entry point shared
// by the libFuzzer target (service_fuzzer.cc, `make fuzz`) and the replay test that
// runs under ctest with any compiler (replay_test.cc).
//
// Each input is decoded into up to 64 operations against a fresh in-process
// KvHubService over a real BlockStore and a ManualClock. The store is 512 KiB in
// two regions, so eviction, quotas and region edges are reached at once; the
// first byte picks the eviction policy, prefix awareness, a default and
// per-namespace quotas, and the lease limit. Operations: Lookup, Put, PutStart /
// PutData / PutCommit / PutAbort, inline and leased Get, the inline Get as gRPC
// sends it (zero-copy slices), the Get and Release called over UCX, Release,
// Delete, Pin, Stats, protobuf garbage parsed as any request, the UCX data
// plane's transfer grants (BeginTransfer/EndTransfer), clock jumps with expiry
// sweeps, and the drain that starts a shutdown. A reference model
// follows what was committed and checks, after every operation:
//   - nothing is ever served wrong: every hit (Lookup, inline Get, leased Get)
//     names a block that was committed and not deleted, with exactly its bytes
//     and checksum;
//   - leased memory is never reused while the lease (or a read transfer) lives:
//     the bytes under every live lease and hold are re-read after each operation,
//     and no new reservation overlaps them;
//   - a refused request changes nothing stored and says why (a non-empty message),
//     and every failed item says why (draining: puts are refused UNAVAILABLE);
//   - at the end, with every grant released and every block deleted, the store
//     holds nothing (no leaked bytes, blocks, leases or reservations).
//
// Thread-compatible: one call at a time per process (the service keeps
// thread-local scratch, and the entry point reuses nothing across calls).

#include <cstddef>
#include <cstdint>
#include <string>

namespace kvhub::cachesvc {

// Runs one input. Returns "" when every check held, else the first violation
// (the operation index and what was wrong).
std::string FuzzServiceOne(const uint8_t* data, size_t size);

// What the inputs run so far in this process reached (for the replay test to
// show that random inputs exercise each path, not only refusals).
struct ServiceFuzzCoverage {
  uint64_t inputs = 0;
  uint64_t refused = 0;          // requests refused whole (INVALID_ARGUMENT)
  uint64_t refused_draining = 0; // puts refused whole while draining (UNAVAILABLE)
  uint64_t puts_stored = 0;      // inline Put items stored
  uint64_t commits = 0;          // PutCommit items made visible
  uint64_t checksum_refused = 0; // Put/PutCommit items refused with DATA_LOSS
  uint64_t lookup_hits = 0;
  uint64_t inline_hits = 0;      // blocks served inline (DoGet and the slices)
  uint64_t leases = 0;           // leases granted (gRPC and UCX Get)
  uint64_t releases = 0;
  uint64_t deletes = 0;
  uint64_t read_holds = 0;       // read transfers granted
  uint64_t write_holds = 0;      // write transfers granted
  uint64_t evictions = 0;        // blocks the store evicted
};
ServiceFuzzCoverage FuzzServiceCoverage();

}  // namespace kvhub::cachesvc
