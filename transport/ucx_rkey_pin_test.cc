// PinRkey on hand-built keys in UCX 1.13's packed layout: which parts it pins,
// what it refuses, and what it leaves alone. The same over real UCX processes
// (a shard killed before the unpack) is in tests/ucx_process_test.cc.

#include "transport/ucx_rkey_pin.h"

#include <sys/mman.h>
#include <sys/shm.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <ucp/api/ucp.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"

namespace kvhub::transport {
namespace {

constexpr uint64_t kProcfs = 1ull << 63, kShmOpen = 1ull << 62, kPidNs = 1ull << 60;

void Append64(std::string* s, uint64_t v) { s->append(reinterpret_cast<const char*>(&v), sizeof v); }

// ucp_rkey_pack's layout: md map, memory type, then each part with its length.
std::string Key(const std::vector<std::string>& parts, uint8_t mem_type = 0) {
  std::string k;
  Append64(&k, (1ull << parts.size()) - 1);
  k.push_back(static_cast<char>(mem_type));
  for (const std::string& p : parts) {
    k.push_back(static_cast<char>(p.size()));
    k += p;
  }
  return k;
}

bool OutsideInitialPidNamespace() {
  struct stat st {};
  return stat("/proc/self/ns/pid", &st) != 0 || st.st_ino != 0xEFFFFFFCu;
}

// A posix part in procfs mode naming PID's descriptor FD, as UCX packs it in this
// process's pid namespace (`foreign`: as in the other kind of namespace).
std::string PosixPart(uint64_t pid, uint64_t fd, bool foreign = false) {
  const bool marked = OutsideInitialPidNamespace() != foreign;
  std::string p;
  Append64(&p, kProcfs | kShmOpen | (marked ? kPidNs : 0) | pid | (fd << 30));
  Append64(&p, 0x7f0000000000ull);  // address in the exporter
  Append64(&p, 4096);               // length
  if (marked) Append64(&p, 0);      // UCX leaves these 8 bytes unwritten
  return p;
}

std::string SysvPart(int32_t shmid) {
  std::string p(reinterpret_cast<const char*>(&shmid), sizeof shmid);
  Append64(&p, 0x7f0000000000ull);
  return p;
}

// A pid that no process has: a child that has exited and been reaped.
pid_t DeadPid() {
  const pid_t pid = fork();
  if (pid == 0) _exit(0);
  waitpid(pid, nullptr, 0);
  return pid;
}

// The peer shares this process's host and namespaces.
constexpr PinScope kHere{.posix = true, .sysv = true};

class PinRkeyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    unsigned major = 0, minor = 0, release = 0;
    ucp_get_version(&major, &minor, &release);
    if (major != 1 || minor != 13) GTEST_SKIP() << "PinRkey reads UCX 1.13's layout; this is UCX " << major << "." << minor;

  }
};

TEST_F(PinRkeyTest, PinsALivePosixSegmentThroughThisProcess) {
  const int seg = memfd_create("kvhub-pin-test", MFD_CLOEXEC);
  ASSERT_GE(seg, 0);
  ASSERT_EQ(ftruncate(seg, 4096), 0);
  const std::string key = Key({"", PosixPart(getpid(), seg), ""});
  auto pinned = PinRkey(key, kHere);
  ASSERT_TRUE(pinned.ok()) << pinned.status();
  EXPECT_EQ(pinned->posix_segments(), 1u);
  EXPECT_EQ(pinned->sysv_segments(), 0u);
  const std::string& out = pinned->packed();
  ASSERT_EQ(out.size(), key.size());
  // Only the seg_id changed: the flags stay, the pid is ours, the fd is the pin's.
  const size_t at = 8 + 1 + 1 + 1;
  EXPECT_EQ(out.substr(0, at), key.substr(0, at));
  EXPECT_EQ(out.substr(at + 8), key.substr(at + 8));
  uint64_t seg_id;
  std::memcpy(&seg_id, out.data() + at, sizeof seg_id);
  EXPECT_EQ(seg_id >> 60, (kProcfs | kShmOpen | (OutsideInitialPidNamespace() ? kPidNs : 0)) >> 60);
  EXPECT_EQ(seg_id & ((1ull << 30) - 1), static_cast<uint64_t>(getpid()));
  const int held = static_cast<int>((seg_id >> 30) & ((1ull << 30) - 1));
  EXPECT_NE(held, seg);
  struct stat a {}, b {};
  ASSERT_EQ(fstat(seg, &a), 0);
  ASSERT_EQ(stat(absl::StrCat("/proc/self/fd/", held).c_str(), &b), 0);
  EXPECT_EQ(a.st_ino, b.st_ino) << "the rewritten key must name the same segment";
  // The segment stays reachable through the pin after the exporter's descriptor goes.
  close(seg);
  struct stat c {};
  EXPECT_EQ(fstat(held, &c), 0);
  EXPECT_EQ(c.st_ino, a.st_ino);
}

TEST_F(PinRkeyTest, RefusesAPosixSegmentWhoseProcessIsGone) {
  const pid_t dead = DeadPid();
  auto pinned = PinRkey(Key({"", PosixPart(dead, 12), ""}), kHere);
  ASSERT_FALSE(pinned.ok());
  EXPECT_EQ(pinned.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(pinned.status().message()), ::testing::HasSubstr(absl::StrCat("/proc/", dead, "/fd/12")));
}

TEST_F(PinRkeyTest, HoldsASysvSegmentUntilReleased) {
  const int id = shmget(IPC_PRIVATE, 4096, IPC_CREAT | 0600);
  ASSERT_GE(id, 0);
  void* owner = shmat(id, nullptr, 0);
  ASSERT_NE(owner, reinterpret_cast<void*>(-1));
  ASSERT_EQ(shmctl(id, IPC_RMID, nullptr), 0);  // as UCX does: gone with the last attachment
  {
    auto pinned = PinRkey(Key({"", SysvPart(id), ""}), kHere);
    ASSERT_TRUE(pinned.ok()) << pinned.status();
    EXPECT_EQ(pinned->sysv_segments(), 1u);
    EXPECT_EQ(pinned->packed(), Key({"", SysvPart(id), ""})) << "sysv parts are not rewritten";
    ASSERT_EQ(shmdt(owner), 0);  // the exporter goes
    struct shmid_ds ds {};
    ASSERT_EQ(shmctl(id, IPC_STAT, &ds), 0) << "the pin keeps the segment";
    EXPECT_EQ(ds.shm_nattch, 1u);
  }
  struct shmid_ds ds {};
  EXPECT_EQ(shmctl(id, IPC_STAT, &ds), -1) << "released with the pin";
  auto late = PinRkey(Key({"", SysvPart(id), ""}), kHere);
  ASSERT_FALSE(late.ok());
  EXPECT_EQ(late.status().code(), absl::StatusCode::kUnavailable);
}

// What a key's shared-memory parts map here bounds every one-sided copy through
// it: the posix part's stated length (which the pinned file holds), the sysv
// segment's own size.
TEST_F(PinRkeyTest, ReportsTheSegmentsThatBoundCopies) {
  constexpr uint64_t kAt = 0x7f0000000000ull;
  const int seg = memfd_create("kvhub-pin-bounds", MFD_CLOEXEC);
  ASSERT_GE(seg, 0);
  ASSERT_EQ(ftruncate(seg, 4096), 0);
  auto posix = PinRkey(Key({"", PosixPart(getpid(), seg), ""}), kHere);
  close(seg);
  ASSERT_TRUE(posix.ok()) << posix.status();
  ASSERT_EQ(posix->segments().size(), 1u);
  EXPECT_EQ(posix->segments()[0].address, kAt);
  EXPECT_EQ(posix->segments()[0].length, 4096u);
  EXPECT_TRUE(posix->Covers(kAt, 4096));
  EXPECT_TRUE(posix->Covers(kAt + 4000, 96));
  EXPECT_FALSE(posix->Covers(kAt, 4097));
  EXPECT_FALSE(posix->Covers(kAt + 4000, 97));
  EXPECT_FALSE(posix->Covers(kAt - 1, 2));
  EXPECT_FALSE(posix->Covers(kAt + 1, ~uint64_t{0})) << "an end that wraps around";
  EXPECT_FALSE(posix->Covers(kAt + 8192, 1));

  const int id = shmget(IPC_PRIVATE, 3 * 4096, IPC_CREAT | 0600);
  ASSERT_GE(id, 0);
  auto sysv = PinRkey(Key({"", SysvPart(id), ""}), kHere);
  ASSERT_EQ(shmctl(id, IPC_RMID, nullptr), 0);
  ASSERT_TRUE(sysv.ok()) << sysv.status();
  ASSERT_EQ(sysv->segments().size(), 1u);
  EXPECT_EQ(sysv->segments()[0].address, kAt);
  EXPECT_EQ(sysv->segments()[0].length, 3u * 4096);
  EXPECT_TRUE(sysv->Covers(kAt, 3 * 4096));
  EXPECT_FALSE(sysv->Covers(kAt, 3 * 4096 + 1));

  // A key not read here bounds nothing: the caller must not rely on it.
  auto unread = PinRkey(Key({"", PosixPart(getpid(), 3), ""}), PinScope{});
  ASSERT_TRUE(unread.ok());
  EXPECT_TRUE(unread->segments().empty());
  EXPECT_FALSE(unread->Covers(kAt, 1));
}

// The pid and descriptor in a key come from the peer: what they name must be a
// segment of the key's length, or the key is refused.
TEST_F(PinRkeyTest, RefusesWhatIsNotASegmentOfTheKeysLength) {
  int pipe_fds[2];
  ASSERT_EQ(pipe(pipe_fds), 0);
  auto not_a_file = PinRkey(Key({"", PosixPart(getpid(), pipe_fds[0]), ""}), kHere);
  close(pipe_fds[0]);
  close(pipe_fds[1]);
  ASSERT_FALSE(not_a_file.ok());
  EXPECT_EQ(not_a_file.status().code(), absl::StatusCode::kUnavailable);
  EXPECT_THAT(std::string(not_a_file.status().message()), ::testing::HasSubstr("is not a segment of the 4096 bytes"));

  const int seg = memfd_create("kvhub-pin-short", MFD_CLOEXEC);
  ASSERT_GE(seg, 0);
  ASSERT_EQ(ftruncate(seg, 100), 0);  // the key says 4096
  auto short_file = PinRkey(Key({"", PosixPart(getpid(), seg), ""}), kHere);
  close(seg);
  ASSERT_FALSE(short_file.ok());
  EXPECT_THAT(std::string(short_file.status().message()), ::testing::HasSubstr("is not a segment"));
}

TEST_F(PinRkeyTest, LeavesKeysItMustNotTouchAlone) {
  const pid_t dead = DeadPid();
  const std::string part = PosixPart(dead, 12);
  const std::string whole = Key({"", part, ""});
  std::vector<std::string> untouched = {
      whole.substr(0, whole.size() - 1),  // truncated
      whole + std::string(1, '\0'),       // trailing byte
      Key({"", part, ""}, /*mem_type=*/1),                 // not host memory
      Key({"", PosixPart(dead, 12, /*foreign=*/true), ""}),  // made in another kind of pid namespace
      "",
      std::string(5, '\x01'),
  };
  // A posix part that is not in procfs mode names a file that outlives its maker.
  std::string named = part;
  uint64_t seg_id;
  std::memcpy(&seg_id, named.data(), sizeof seg_id);
  seg_id &= ~kProcfs;
  std::memcpy(named.data(), &seg_id, sizeof seg_id);
  untouched.push_back(Key({"", named, ""}));
  for (const std::string& key : untouched) {
    auto pinned = PinRkey(key, kHere);
    ASSERT_TRUE(pinned.ok()) << pinned.status();
    EXPECT_EQ(pinned->packed(), key);
    EXPECT_EQ(pinned->posix_segments() + pinned->sysv_segments(), 0u);
  }
  // Not on this host: the parts name another machine's processes.
  auto remote = PinRkey(whole, PinScope{});
  ASSERT_TRUE(remote.ok());
  EXPECT_EQ(remote->packed(), whole);
  // Parts out of scope: an endpoint with a posix lane vouches for no sysv ids.
  const int removed = shmget(IPC_PRIVATE, 4096, IPC_CREAT | 0600);
  ASSERT_GE(removed, 0);
  ASSERT_EQ(shmctl(removed, IPC_RMID, nullptr), 0);
  const std::string sysv_key = Key({"", SysvPart(removed), ""});
  auto posix_only = PinRkey(sysv_key, PinScope{.posix = true});
  ASSERT_TRUE(posix_only.ok()) << posix_only.status();
  EXPECT_EQ(posix_only->sysv_segments(), 0u);
  auto sysv_only = PinRkey(whole, PinScope{.sysv = true});
  ASSERT_TRUE(sysv_only.ok()) << sysv_only.status();
  EXPECT_EQ(sysv_only->packed(), whole);
  // The same keys, parsed and in scope: refused (the checks above were not vacuous).
  auto gone = PinRkey(whole, kHere);
  ASSERT_FALSE(gone.ok());
  EXPECT_THAT(std::string(gone.status().message()), ::testing::HasSubstr("is gone"));
  EXPECT_FALSE(PinRkey(sysv_key, kHere).ok());
}

}  // namespace
}  // namespace kvhub::transport
