#pragma once
// Keeps glibc malloc from returning large buffers to the kernel after every
// use. gRPC allocates a fresh receive buffer for each large message; with
// glibc's defaults a buffer over the mmap threshold is mmap'd and munmap'd per
// message, so every byte received lands on a freshly faulted page (measured:
// more page-fault time than copy time for 1 MiB gets; docs/results.md).
//
// Call once at process start, before threads start. Process-wide: it changes
// malloc for the whole program, so a library never calls it on its own;
// kvhubd and kvhub's tools do, and applications that move large blocks over
// the gRPC path should (or set MALLOC_MMAP_THRESHOLD_/MALLOC_TRIM_THRESHOLD_).
// Memory freed stays in the process for reuse; peak RSS is unchanged.

namespace kvhub {

// Raises the mmap threshold to 256 MiB and the trim threshold to 1 GiB
// unless the environment already sets MALLOC_MMAP_THRESHOLD_ or
// MALLOC_TRIM_THRESHOLD_ (the operator's choice wins). No-op off glibc.
void TuneMallocForLargeBuffers();

}  // namespace kvhub
