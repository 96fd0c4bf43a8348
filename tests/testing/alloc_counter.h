#pragma once
// Counts heap allocations for the zero-allocation tests. Compile
// tests/testing/alloc_counter.cc into the test binary itself (add it to the
// test's SRCS, not through a library: the linker would not pull a replacement
// of operator new out of an archive); it replaces every form of the global
// operator new/delete with malloc/free and counts the news made by any thread
// while counting is on. Not for TSan builds (its runtime defines them too).
//
// Set KVHUB_ALLOC_TRAP=1 and run under gdb to stop at each counted allocation.
// Thread safety: Start/Stop from one thread; the counting itself is atomic.

#include <cstdint>

namespace kvhub::testing {

// Resets the count to 0 and starts counting.
void StartCountingAllocations();
// Stops counting; returns the operator new calls since Start.
uint64_t StopCountingAllocations();

}  // namespace kvhub::testing
