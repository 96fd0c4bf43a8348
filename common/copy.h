#pragma once
// Large memory copies, done the way that is fastest on the machines we measured.
// Thread-safe; no allocation.

#include <cstddef>

namespace kvhub {

// Pieces that large copies are split into. glibc's memcpy copies up to the L2
// size with `rep movsb` on AMD CPUs and switches to a vector loop above it; on
// our 2-vCPU EPYC dev machine the vector loop is slower: one thread copying
// 1 MiB blocks from a cold source ran at 25.5-28.1 GB/s with one memcpy per
// block, at 33.5-34.0 GB/s in 64 KiB pieces (build/bin/kvhub_copy_bench;
// docs/results-transport.md, "Session 6"). Pieces this size also stay in L2 for
// whoever reads them right after (CopyAndXxh3_64).
inline constexpr size_t kCopyPieceBytes = size_t{64} << 10;

// memcpy of `len` bytes from `src` to `dst` (non-overlapping), in pieces of
// kCopyPieceBytes. For blocks of hundreds of KiB and more; small copies should
// call memcpy directly.
void CopyBytes(void* dst, const void* src, size_t len);

}  // namespace kvhub
