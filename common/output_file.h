#pragma once
// Writing a program's results (tables, JSON, block bytes) to a file or to standard
// output with every write error reported: a full disk or a closed pipe must fail the
// program, not leave a silently truncated result behind.
//
// Thread safety: none; call from the thread that writes the program's output.

#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace kvhub {

// Writes `data` to `path` ("-" is standard output). DATA_LOSS naming the path and the
// system's error when any byte could not be written or the file could not be closed;
// PERMISSION_DENIED-style errors when it cannot be created come back as DATA_LOSS too,
// with the reason. A regular file (or a new one) is written as .kvhub-tmp.PID.RANDOM
// in PATH's directory (created exclusively, never through a link, fsynced) and renamed
// over PATH only when complete, then the directory is fsynced (where it can be opened
// for that): on failure PATH is untouched (an earlier file keeps its bytes) and no
// partial file is left, except a failed directory sync, reported after PATH already
// holds the new bytes; this needs write permission on PATH's directory. A replaced file keeps its mode, and its owner
// and group where the caller may set them (root); hard links to it keep the old bytes.
// A symbolic link to a regular file in a writable directory: that file is replaced
// so (the link stays). Other paths (a device, a pipe, any other link) are written in
// place, and so is a
// file the rename cannot replace (bind-mounted there, another user's in a sticky
// directory): not atomically then, and if that write fails the error names the
// temporary, which is kept with the complete output.
absl::Status WriteOutput(const std::string& path, absl::string_view data);

// Whether WriteOutput(path, ...) can be expected to succeed, for checking an output
// flag before a long run rather than after it: "-" is fine; a directory, a missing or
// unwritable parent directory, or an unwritable device is INVALID_ARGUMENT naming the
// path and the reason. A later write can still fail (a full disk): WriteOutput says so.
absl::Status CheckOutputPath(const std::string& path);

// Flushes std::cout and C's stdout. DATA_LOSS when anything written to standard output
// so far was lost (full disk, closed pipe).
absl::Status FlushStdout();

// For the end of main: returns `rc` when standard output was written in full; else
// prints "<program>: <error>" on stderr (unless an earlier FlushStdout already
// returned that failure to a caller, which reported it) and returns rc, or 1 when
// rc was 0.
int ExitCodeAfterStdout(int rc, const char* program);

}  // namespace kvhub
