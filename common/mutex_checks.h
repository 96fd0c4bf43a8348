#pragma once
// Debian's abseil is compiled without NDEBUG, so by default every
// absl::Mutex acquisition in the process (ours and gRPC's) also records the
// lock in a global lock-order graph under a global lock, and a suspected
// inversion aborts the process. That is what tests want; a serving process
// pays for it on every lock (measured: 256-key lookups 5.8-6.3 -> 6.4-7.3 M
// keys/s, shared-memory gets about +3%; docs/results-transport.md, session 5).
//
// Call once at the top of main(), before threads start, in binaries that
// serve or measure (kvhubd, the CLI, the benches, the demo, the replay).
// Tests never call it, so they keep the checks. Process-wide; a library never
// calls it on its own. Setting KVHUB_MUTEX_DEADLOCK_CHECKS=1 in the
// environment keeps the checks (an operator hunting a hang).

namespace kvhub {

// Turns off abseil's debug-build mutex deadlock detection unless the
// environment asks to keep it. Returns true if it was turned off.
bool TurnOffMutexDeadlockChecks();

}  // namespace kvhub
