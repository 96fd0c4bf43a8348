#include "common/flags.h"

#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <string>

#include "absl/flags/internal/parse.h"
#include "absl/flags/internal/program_name.h"
#include "absl/flags/internal/usage.h"
#include "absl/flags/usage.h"
#include "absl/flags/usage_config.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "common/version.h"

namespace kvhub {
namespace {

// Our flags are defined in files under the source tree; abseil's own (flagfile,
// fromenv, undefok, the help flags) in files under an absl/ directory.
bool IsOurFlagFile(absl::string_view file) { return !absl::StrContains(file, "absl/"); }

std::string RelativeToSourceTree(absl::string_view file) {
  constexpr absl::string_view kSourceDir = KVHUB_FLAGS_SOURCE_DIR "/";
  if (absl::StartsWith(file, kSourceDir)) file.remove_prefix(kSourceDir.size());
  return std::string(file);
}

std::string VersionString() {
  return absl::StrCat(absl::flags_internal::ShortProgramInvocationName(), " ", kVersion, "\n");
}

}  // namespace

std::vector<char*> ParseFlagsOrExit(int argc, char** argv, absl::string_view usage) {
  absl::FlagsUsageConfig config;
  config.contains_helpshort_flags = IsOurFlagFile;
  config.contains_help_flags = IsOurFlagFile;
  config.normalize_filename = RelativeToSourceTree;
  config.version_string = VersionString;
  absl::SetFlagsUsageConfig(config);
  absl::SetProgramUsageMessage(usage);
  std::vector<char*> rest = absl::flags_internal::ParseCommandLineImpl(
      argc, argv, absl::flags_internal::ArgvListAction::kRemoveParsedArgs,
      absl::flags_internal::UsageFlagsAction::kIgnoreUsage,
      absl::flags_internal::OnUndefinedFlag::kAbortIfUndefined);
  // -1: no usage flag; 0: --version or --only_check_args; 1: a help flag was
  // handled (abseil would exit 1 for it: asking for help is not a failure).
  if (absl::flags_internal::HandleUsageFlags(std::cout, absl::ProgramUsageMessage()) >= 0) {
    std::cout.flush();
    std::exit(std::cout.good() ? 0 : 1);
  }
  return rest;
}

}  // namespace kvhub
