#pragma once
// Minimal command-line parsing for the kvhub CLI: `--name=value`,
// `--name value` and bare `--flag`; everything else is a positional argument.
// Unknown flags are errors (Check()).

#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace kvhub::cli {

class Args {
 public:
  // `boolean` names flags that take no value (`--pin`); given one with `=`, it must
  // be true/false, 1/0, yes/no or on/off, else Parse fails. `verbatim` names flags
  // whose value is always the next argument, even one starting with `--`
  // (`--kvhubd-flags "--capacity_bytes=1GiB --log_level=warn"`).
  static absl::StatusOr<Args> Parse(int argc, char** argv, const std::set<std::string>& boolean,
                                    const std::set<std::string>& verbatim = {});

  std::optional<std::string> Get(const std::string& name);  // marks it used
  // Given and not false/0/no/off (a boolean flag's value was checked by Parse). Marks it used.
  bool Has(const std::string& name);
  // The value without marking the flag used (for checks across flags).
  std::optional<std::string> Peek(const std::string& name) const;
  const std::vector<std::string>& positional() const { return positional_; }
  // The first flag given without its value (last, or followed by another flag); "" if none.
  const std::string& missing_value() const { return missing_value_; }
  // The first flag given more than once (only its last value is kept); "" if none.
  const std::string& repeated() const { return repeated_; }
  // INVALID_ARGUMENT naming the first flag nobody asked for.
  absl::Status CheckAllUsed() const;

 private:
  std::map<std::string, std::string> flags_;
  std::set<std::string> used_;
  std::string missing_value_;
  std::string repeated_;  // the first flag given more than once
  std::vector<std::string> positional_;
};

}  // namespace kvhub::cli
