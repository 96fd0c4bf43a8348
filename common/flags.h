#pragma once
// Command-line parsing for the kvhub programs that use abseil flags (kvhubd,
// kvhub-stress, kvhub-demo, kvhubd_loadgen), with the behaviour users expect of
// a server binary rather than abseil 20220623's defaults:
//   --help, --helpshort: the program's own flags (abseil's internal ones are left
//       out), grouped by source file relative to the repository, on stdout; exit 0.
//   --helpfull, --help=SUBSTRING: abseil's listing (its own flags, such as
//       --flagfile, included; --help=SUBSTRING matches names, files and help text).
//   --version: "PROGRAM VERSION" (the CMake project version) on stdout; exit 0.
//   an unknown flag or a value that does not parse: abseil's message on stderr;
//       exit 1 (unchanged).
// Not thread-safe: call it once, first thing in main, before starting threads.

#include <vector>

#include "absl/strings/string_view.h"

namespace kvhub {

// Sets `usage` as the program's usage message, parses argv, handles the usage flags
// above (exiting the process for them) and returns the positional arguments,
// argv[0] first.
std::vector<char*> ParseFlagsOrExit(int argc, char** argv, absl::string_view usage);

}  // namespace kvhub
