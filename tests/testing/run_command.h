#pragma once
// Runs a shell command line for tests of kvhub's programs (CLI, bench, replay).

#include <sys/types.h>

#include <string>

#include "absl/status/statusor.h"
#include "absl/time/time.h"

namespace kvhub::testing {

struct CommandResult {
  int exit_code = -1;  // -1: the command could not be started or was killed by a signal
  std::string out;     // what the command wrote to the pipe (its stdout, and whatever
                       // the command line redirects there)
};

// Runs `command` with /bin/sh and collects its stdout. Blocks until it exits.
CommandResult RunCommand(const std::string& command);

// Waits for child process `pid` until `deadline`: its wait status once it ended; else
// SIGKILLs and reaps it and returns DEADLINE_EXCEEDED (a hung child, not a hung test).
// INTERNAL if it cannot be waited for (not our child).
absl::StatusOr<int> WaitChildUntil(pid_t pid, absl::Time deadline);

// $KVHUB_BIN_DIR/<program> (ctest sets KVHUB_BIN_DIR; "bin/<program>" otherwise).
std::string ProgramPath(const std::string& program);

}  // namespace kvhub::testing
