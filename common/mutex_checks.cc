#include "common/mutex_checks.h"

#include <cstdlib>
#include <cstring>

#include "absl/synchronization/mutex.h"

namespace kvhub {

bool TurnOffMutexDeadlockChecks() {
  const char* keep = std::getenv("KVHUB_MUTEX_DEADLOCK_CHECKS");
  if (keep != nullptr && std::strcmp(keep, "0") != 0 && keep[0] != '\0') return false;
  absl::SetMutexDeadlockDetectionMode(absl::OnDeadlockCycle::kIgnore);
  return true;
}

}  // namespace kvhub
