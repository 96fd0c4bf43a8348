#pragma once
// PinRkey: holds a peer's shared-memory segments open while UCX unpacks a region
// key (rkey) that names them, so the unpack cannot fail because the peer process
// exited a moment earlier.
//
// Why: UCX 1.13 (Debian 12's) crashes the unpacking process when one memory
// domain's part of a packed rkey fails to unpack: its cleanup then releases
// parts that were never unpacked (the bug class of openucx/ucx#3731; mended
// upstream by openucx/ucx#10380). Shared-memory parts fail exactly when the
// exporting process has gone since it packed the key: a posix part names its
// segment as /proc/PID/fd/FD of that process, and a sysv segment is destroyed
// with its last attachment. A client that Connected to a shard on its host, and
// unpacked the keys just after the shard was killed, died with it (`make stress`,
// session 23).
//
// What it does, for a key from a peer on this host in this process's pid and IPC
// namespaces (where the key's /proc paths and sysv ids mean what they mean to the
// peer): attaches each shared-memory
// segment the key names itself, as UCX would (open of /proc/PID/fd/FD read-write;
// shmat of the sysv id). If one cannot be attached, the peer's memory is gone and
// PinRkey answers UNAVAILABLE, so the caller never hands UCX a key it would crash
// on. Otherwise the result carries a copy of the key whose posix parts name this
// process and the descriptor the result holds: UCX then opens the segment through
// this process, which works however the peer fares. sysv parts stay as they are;
// the result's own attachment keeps the segment in existence.
//
// Scope: the packed layout is UCX's internal one, read for UCX 1.13 only (u64 md
// map, u8 memory type, then per memory domain a u8 length and that many bytes;
// posix parts are 24 bytes {seg_id, address, length}, 32 outside the initial pid
// namespace; sysv parts 12 bytes {shmid, address}). With another UCX version, a
// key that does not parse exactly, or `same_namespaces` false, the result carries
// the key unchanged and pins nothing.
//
// Ownership: the result owns its descriptors and attachments and releases them
// when destroyed. Keep it until ucp_ep_rkey_unpack has returned: UCX maps the
// segments during the unpack and needs nothing of the result after it.
// Thread safety: PinRkey may run on any thread; a result is not shared.

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace kvhub::transport {

class PinnedRkey {
 public:
  PinnedRkey() = default;
  PinnedRkey(PinnedRkey&& other) noexcept;
  PinnedRkey& operator=(PinnedRkey&& other) noexcept;
  PinnedRkey(const PinnedRkey&) = delete;
  PinnedRkey& operator=(const PinnedRkey&) = delete;
  ~PinnedRkey();

  // The key to hand ucp_ep_rkey_unpack in place of the original.
  const std::string& packed() const { return packed_; }
  // How many segments the result holds (0: the key is the original).
  size_t posix_segments() const { return fds_.size(); }
  size_t sysv_segments() const { return attached_.size(); }

 private:
  friend absl::StatusOr<PinnedRkey> PinRkey(absl::string_view packed, bool same_namespaces);
  void Release();

  std::string packed_;
  std::vector<int> fds_;         // posix segments, opened through the peer's /proc
  std::vector<void*> attached_;  // sysv segments, shmat'ed here
};

// `packed`: a ucp_rkey_pack result from the peer. `same_namespaces`: the peer
// runs on this host in this process's pid and IPC namespaces (its
// HostNamespaces() equals ours, or UCX reaches it over shared memory); false pins
// nothing. UNAVAILABLE (naming the segment and errno) when a segment cannot be
// attached: the peer has exited or freed the memory, and the key must not be
// unpacked.
absl::StatusOr<PinnedRkey> PinRkey(absl::string_view packed, bool same_namespaces);

// Where this process runs: "BOOT_ID:PID_NS:IPC_NS", the kernel's boot id
// (/proc/sys/kernel/random/boot_id) and the inodes of this process's pid and IPC
// namespaces; "" if any is unreadable. Equal strings mean a peer's /proc paths and
// sysv ids name the same processes and segments here as there.
const std::string& HostNamespaces();

}  // namespace kvhub::transport
