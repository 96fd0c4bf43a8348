#pragma once
// kvhub clients do not survive fork(). gRPC's threads, the client's thread pool
// and UCX's workers exist only in the process that started them, and any lock one
// of them held at the moment of the fork stays locked in the child: a call there,
// even on a Client made after the fork, can hang forever (measured: a Python
// child of a process with a client hung in its first call).
//
// So once this process (or an ancestor it was forked from) has created a Client,
// a forked child gets FAILED_PRECONDITION, with what to do instead, from
// Client::Create and from every call; a Client destroyed there leaks its state
// rather than join threads that do not exist. Processes started with exec (Python
// multiprocessing's "spawn" or "forkserver") are not affected, nor is a child
// forked before the first Client was created.
//
// Thread safety: both functions may be called from any thread.

#include "absl/status/status.h"

namespace kvhub {

// Called by Client::Create before anything starts a thread: from then on, a
// fork of this process marks the child.
void WatchForkAfterClient();

// OK, or FAILED_PRECONDITION when this process is a fork of one that had created
// a Client.
absl::Status CheckNotForkedAfterClient();

}  // namespace kvhub
