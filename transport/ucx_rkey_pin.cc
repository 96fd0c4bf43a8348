#include "transport/ucx_rkey_pin.h"

#include <fcntl.h>
#include <sys/shm.h>
#include <sys/stat.h>
#include <unistd.h>
#include <ucp/api/ucp.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdint>
#include <cstring>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/hash.h"
#include "common/input_file.h"

namespace kvhub::transport {
namespace {

// UCX 1.13 mm_posix.c: seg_id flags, and the procfs mmid (pid, then fd, 30 bits each).
constexpr uint64_t kSegProcfs = 1ull << 63;
constexpr uint64_t kSegPidNs = 1ull << 60;
constexpr uint64_t kSegFlags = 0xfull << 60;
constexpr int kMmidBits = 30;
constexpr uint64_t kMmidMask = (1ull << kMmidBits) - 1;
// The inode of the initial pid namespace (PROC_PID_INIT_INO).
constexpr uint64_t kInitPidNs = 0xEFFFFFFCu;

constexpr size_t kPosixPart = 24;          // {seg_id, address, length}
constexpr size_t kPosixPartWithNs = 32;    // ... + 8 bytes UCX leaves unwritten
constexpr size_t kSysvPart = 12;           // {int shmid, address}
constexpr size_t kHeader = 8 + 1;          // md map, memory type

bool LayoutKnown() {
  static const bool known = [] {
    unsigned major = 0, minor = 0, release = 0;
    ucp_get_version(&major, &minor, &release);
    return major == 1 && minor == 13;
  }();
  return known;
}

uint64_t NamespaceInode(const char* path) {
  struct stat st {};
  return stat(path, &st) == 0 ? st.st_ino : 0;
}

// UNAVAILABLE for a segment that cannot be attached: `what` names it, `verb` the
// failed step ("opened", "attached"); `gone` when errno says it no longer exists.
absl::Status SegmentUnavailable(absl::string_view what, const char* verb, int err, bool gone) {
  return absl::UnavailableError(
      gone ? absl::StrCat(what, " is gone: the peer process exited or freed the region")
           : absl::StrCat(what, " cannot be ", verb, " here: ", std::strerror(err)));
}

uint64_t Load64(const std::string& s, size_t at) {
  uint64_t v;
  std::memcpy(&v, s.data() + at, sizeof v);
  return v;
}

}  // namespace

PinnedRkey::PinnedRkey(PinnedRkey&& other) noexcept
    : packed_(std::move(other.packed_)),
      fds_(std::move(other.fds_)),
      attached_(std::move(other.attached_)),
      segments_(std::move(other.segments_)) {
  other.fds_.clear();
  other.attached_.clear();
}

PinnedRkey& PinnedRkey::operator=(PinnedRkey&& other) noexcept {
  if (this != &other) {
    Release();
    packed_ = std::move(other.packed_);
    fds_ = std::move(other.fds_);
    attached_ = std::move(other.attached_);
    segments_ = std::move(other.segments_);
    other.fds_.clear();
    other.attached_.clear();
  }
  return *this;
}

PinnedRkey::~PinnedRkey() { Release(); }

bool PinnedRkey::Covers(uint64_t base, uint64_t size) const {
  return std::any_of(segments_.begin(), segments_.end(), [&](const Segment& s) {
    return base >= s.address && base - s.address <= s.length && size <= s.length - (base - s.address);
  });
}

void PinnedRkey::Release() {
  for (int fd : fds_) close(fd);
  for (void* p : attached_) shmdt(p);
  fds_.clear();
  attached_.clear();
}

absl::StatusOr<PinnedRkey> PinRkey(absl::string_view packed, PinScope scope) {
  PinnedRkey out;
  out.packed_ = std::string(packed);
  if ((!scope.posix && !scope.sysv) || !LayoutKnown() || packed.size() < kHeader) return out;
  std::string& key = out.packed_;
  // Walk the parts; anything that does not parse exactly is left to UCX as it is.
  const int parts = std::popcount(Load64(key, 0));
  if (static_cast<uint8_t>(key[8]) != 0) return out;  // not host memory
  std::vector<std::pair<size_t, size_t>> spans;        // {offset, length}
  size_t pos = kHeader;
  for (int i = 0; i < parts; ++i) {
    if (pos >= key.size()) return out;
    const size_t n = static_cast<uint8_t>(key[pos++]);
    if (key.size() - pos < n) return out;
    spans.emplace_back(pos, n);
    pos += n;
  }
  if (pos != key.size()) return out;

  // UCX marks posix parts made outside the initial pid namespace (and makes them
  // 8 bytes longer, unwritten): a part that disagrees with where we run is not
  // one the caller's namespace check vouches for.
  const uint64_t own_ns = NamespaceInode("/proc/self/ns/pid");
  const bool own_ns_initial = own_ns == kInitPidNs;
  const uint64_t own_pid = static_cast<uint64_t>(getpid());
  for (const auto& [at, n] : spans) {
    if (scope.posix && (n == kPosixPart || n == kPosixPartWithNs)) {
      const uint64_t seg_id = Load64(key, at);
      const uint64_t length = Load64(key, at + 16);
      out.segments_.push_back({Load64(key, at + 8), length});
      // Named files (UCX_POSIX_USE_PROC_LINK=n) are left alone: they outlive a
      // killed maker (one that frees its memory unlinks them, which is not covered).
      if ((seg_id & kSegProcfs) == 0) continue;
      const bool marked = (seg_id & kSegPidNs) != 0;
      if (marked != (n == kPosixPartWithNs) || own_ns == 0 || marked == own_ns_initial) continue;
      const uint64_t pid = seg_id & kMmidMask;
      const uint64_t peer_fd = (seg_id >> kMmidBits) & kMmidMask;
      const std::string path = absl::StrCat("/proc/", pid, "/fd/", peer_fd);
      // The path comes from the peer: never block on it or take it as a terminal.
      const int fd = open(path.c_str(), O_RDWR | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
      if (fd < 0) {
        const int err = errno;
        // Not permitted here: UCX's reachability check makes the same open, so UCX
        // does not unpack this part either.
        if (err == EACCES || err == EPERM) continue;
        return SegmentUnavailable(absl::StrCat("the peer's shared-memory segment ", path), "opened", err,
                                  err == ENOENT || err == ESRCH);
      }
      out.fds_.push_back(fd);
      struct stat st {};
      if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || static_cast<uint64_t>(st.st_size) < length) {
        return absl::UnavailableError(absl::StrCat("the peer's shared-memory segment ", path,
                                                   " is not a segment of the ", length, " bytes its key names"));
      }
      if (own_pid > kMmidMask || static_cast<uint64_t>(fd) > kMmidMask) {
        return absl::InternalError(
            absl::StrCat("pinning ", path, ": pid ", own_pid, " or descriptor ", fd, " exceeds UCX's 30 bits"));
      }
      const uint64_t pinned = (seg_id & kSegFlags) | own_pid | (static_cast<uint64_t>(fd) << kMmidBits);
      std::memcpy(key.data() + at, &pinned, sizeof pinned);
    } else if (scope.sysv && n == kSysvPart) {
      int32_t shmid;
      std::memcpy(&shmid, key.data() + at, sizeof shmid);
      void* p = shmat(shmid, nullptr, 0);
      if (p == reinterpret_cast<void*>(-1)) {
        // UCX would attach it the same way, and crash on any failure.
        const int err = errno;
        return SegmentUnavailable(absl::StrCat("the peer's sysv shared-memory segment ", shmid), "attached", err,
                                  err == EINVAL || err == EIDRM);
      }
      out.attached_.push_back(p);
      // UCX attaches the whole segment: its size bounds the copies.
      struct shmid_ds ds {};
      if (shmctl(shmid, IPC_STAT, &ds) != 0) {
        const int err = errno;
        return SegmentUnavailable(absl::StrCat("the size of the peer's sysv shared-memory segment ", shmid), "read",
                                  err, err == EINVAL || err == EIDRM);
      }
      uint64_t address;
      std::memcpy(&address, key.data() + at + sizeof shmid, sizeof address);
      out.segments_.push_back({address, static_cast<uint64_t>(ds.shm_segsz)});
    }
  }
  return out;
}

const std::string& HostNamespaces() {
  static const std::string id = [] {
    const absl::StatusOr<std::string> boot_file = ReadInput("/proc/sys/kernel/random/boot_id", 4096);
    const absl::string_view boot = boot_file.ok() ? absl::StripAsciiWhitespace(*boot_file) : "";
    const uint64_t pid_ns = NamespaceInode("/proc/self/ns/pid");
    const uint64_t ipc_ns = NamespaceInode("/proc/self/ns/ipc");
    if (boot.empty() || pid_ns == 0 || ipc_ns == 0) return std::string();
    const std::string where = absl::StrCat(boot, ":", pid_ns, ":", ipc_ns);
    return absl::StrCat(absl::Hex(Xxh3_64(where.data(), where.size()), absl::kZeroPad16));
  }();
  return id;
}

}  // namespace kvhub::transport
