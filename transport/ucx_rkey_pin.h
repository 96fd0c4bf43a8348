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
// peer): attaches each shared-memory segment the key names itself, as UCX would
// (open of /proc/PID/fd/FD read-write; shmat of the sysv id). If one is gone,
// PinRkey answers UNAVAILABLE, so the caller never hands UCX a key it would crash
// on. Otherwise the result carries a copy of the key whose posix parts name this
// process and the descriptor the result holds: UCX then opens the segment through
// this process, which works however the peer fares. sysv parts stay as they are;
// the result's own attachment keeps the segment in existence.
//
// Scope: the packed layout is UCX's internal one, read for UCX 1.13 only (u64 md
// map, u8 memory type, then per memory domain a u8 length and that many bytes;
// posix parts are 24 bytes {seg_id, address, length}, 32 outside the initial pid
// namespace; sysv parts 12 bytes {shmid, address}; parts are told apart by these
// lengths, which no other memory domain of Debian's UCX 1.13 uses). With another
// UCX version, a key that does not parse exactly, or parts out of `scope`, the
// result carries them unchanged and pins nothing. Not covered: posix segments
// UCX names by file (UCX_POSIX_USE_PROC_LINK=n; a killed peer leaves them, one that
// frees its memory unlinks them).
//
// Ownership: the result owns its descriptors and attachments and releases them
// when destroyed. Keep it until ucp_ep_rkey_unpack has returned: UCX maps the
// segments during the unpack and needs nothing of the result after it.
// Thread safety: PinRkey may run on any thread; a result is not shared.

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace kvhub::transport {

// Which of the key's shared-memory parts the caller vouches name this host's
// processes and segments as the peer sees them. Both: the peer's HostNamespaces()
// equals ours. Else `posix` when UCX reaches the peer over a posix lane (UCX makes
// one only within the pid namespace) and `sysv` over a sysv lane.
struct PinScope {
  bool posix = false;  // /proc/PID/fd/FD paths
  bool sysv = false;   // sysv segment ids
};

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

  // A shared-memory segment the key names, in the peer's addresses: unpacking
  // the key maps [address, address + length) here, and a one-sided copy through
  // it (ucp_rkey_ptr, RMA over a posix or sysv lane) is checked against nothing
  // else, so the caller must keep every range it copies inside one.
  struct Segment {
    uint64_t address = 0;
    uint64_t length = 0;
  };
  // The segments of the key's shared-memory parts in scope (posix: the length the
  // key states, which the pinned file holds; sysv: the segment's size). Empty when
  // the key names none or was not read (another UCX version, a layout that does
  // not parse): then nothing bounds a copy through it.
  const std::vector<Segment>& segments() const { return segments_; }
  // True when [base, base + size) lies inside one of segments().
  bool Covers(uint64_t base, uint64_t size) const;

 private:
  friend absl::StatusOr<PinnedRkey> PinRkey(absl::string_view packed, PinScope scope);
  void Release();

  std::string packed_;
  std::vector<int> fds_;         // posix segments, opened through the peer's /proc
  std::vector<void*> attached_;  // sysv segments, shmat'ed here
  std::vector<Segment> segments_;
};

// `packed`: a ucp_rkey_pack result from the peer. UNAVAILABLE, saying what
// happened, when a segment in scope is gone (the peer exited or freed the
// memory), cannot be opened here for another reason than permission, or is not a
// segment of the key's length: the key must not be unpacked. A posix segment this
// process may not open is left alone (UCX's reachability check fails the same
// way and does not unpack it).
absl::StatusOr<PinnedRkey> PinRkey(absl::string_view packed, PinScope scope);

// Where this process runs, as 16 hex digits: a hash of the kernel's boot id
// (/proc/sys/kernel/random/boot_id) and the inodes of this process's pid and IPC
// namespaces; "" if any is unreadable. Equal values mean a peer's /proc paths and
// sysv ids name the same processes and segments here as there.
const std::string& HostNamespaces();

}  // namespace kvhub::transport
