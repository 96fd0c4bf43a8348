#include "tools/kvhub/cli_args.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace kvhub::cli {

namespace {

bool FalseWord(const std::string& v) { return v == "false" || v == "0" || v == "no" || v == "off"; }
bool TrueWord(const std::string& v) { return v == "true" || v == "1" || v == "yes" || v == "on"; }

}  // namespace

absl::StatusOr<Args> Args::Parse(int argc, char** argv, const std::set<std::string>& boolean,
                                 const std::set<std::string>& verbatim) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--") {
      for (++i; i < argc; ++i) a.positional_.push_back(argv[i]);
      break;
    }
    if (!absl::StartsWith(arg, "--") || arg.size() == 2) {
      a.positional_.push_back(arg);
      continue;
    }
    std::string name = arg.substr(2), value;
    const size_t eq = name.find('=');
    if (eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      // `--pin=no` used to pin: every value but false/0 read as true.
      if (boolean.count(name) > 0 && !TrueWord(value) && !FalseWord(value)) {
        return absl::InvalidArgumentError(absl::StrCat("flag --", name, " is a switch: give --", name, " or --",
                                                       name, "=true|false (not \"", value, "\")"));
      }
    } else if (boolean.count(name) > 0) {
      value = "true";
    } else if (verbatim.count(name) > 0 && i + 1 < argc) {
      value = argv[++i];
    } else if (i + 1 < argc && !(absl::StartsWith(argv[i + 1], "--") && std::string(argv[i + 1]).size() > 2)) {
      value = argv[++i];
    } else {
      // Last, or followed by another flag (`--ns --key K`: a value that looks like a
      // flag is taken as one; `--ns=--x` passes such a value). The command knows
      // which flags it takes: an unknown one is reported as such by CheckAllUsed,
      // not as a flag without its value.
      if (a.missing_value_.empty()) a.missing_value_ = name;
      value = "";
    }
    // A flag given twice (`rm --key A --key B`) used to keep only the last value,
    // silently: it is a usage error (kvhub_main, and CheckAllUsed), naming the flag.
    if (!a.flags_.emplace(name, value).second && a.repeated_.empty()) a.repeated_ = name;
  }
  return a;
}

std::optional<std::string> Args::Get(const std::string& name) {
  used_.insert(name);
  auto it = flags_.find(name);
  if (it == flags_.end()) return std::nullopt;
  return it->second;
}

bool Args::Has(const std::string& name) {
  used_.insert(name);
  auto it = flags_.find(name);
  return it != flags_.end() && !FalseWord(it->second);
}

std::optional<std::string> Args::Peek(const std::string& name) const {
  auto it = flags_.find(name);
  if (it == flags_.end()) return std::nullopt;
  return it->second;
}

absl::Status Args::CheckAllUsed() const {
  for (const auto& [name, value] : flags_) {
    if (used_.count(name) == 0) {
      return absl::InvalidArgumentError(absl::StrCat("unknown flag --", name));
    }
  }
  if (!missing_value_.empty()) {
    return absl::InvalidArgumentError(absl::StrCat("flag --", missing_value_, " needs a value"));
  }
  if (!repeated_.empty()) {
    return absl::InvalidArgumentError(
        absl::StrCat("flag --", repeated_, " given twice (list several values in one: --key A,B)"));
  }
  return absl::OkStatus();
}

}  // namespace kvhub::cli
