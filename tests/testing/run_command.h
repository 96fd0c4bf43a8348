#pragma once
// Runs a shell command line for tests of kvhub's programs (CLI, bench, replay).

#include <string>

namespace kvhub::testing {

struct CommandResult {
  int exit_code = -1;  // -1: the command could not be started or was killed by a signal
  std::string out;     // what the command wrote to the pipe (its stdout, and whatever
                       // the command line redirects there)
};

// Runs `command` with /bin/sh and collects its stdout. Blocks until it exits.
CommandResult RunCommand(const std::string& command);

// $KVHUB_BIN_DIR/<program> (ctest sets KVHUB_BIN_DIR; "bin/<program>" otherwise).
std::string ProgramPath(const std::string& program);

}  // namespace kvhub::testing
