#pragma once
// UcxAddressVetter: tries a UCX worker address that a client sent in a throwaway
// process before the shard's own worker is given it.
//
// Why: UCX 1.13 trusts peer worker addresses. Some malformed ones (about 1% of
// random bit flips of a real address here) crash the process inside ucp_ep_create:
// a segfault in uct_iface_local_is_reachable, or an assertion in
// ucp_address_unpack. In a shard that would lose the whole cache to one bad
// Connect. And a well-formed address that points at a port where something other
// than UCX answers (a web server, say) makes the worker that connects there read
// the answer as a UCX header and abort (an assertion in tcp_ep.c). The vetter
// makes the very call the shard would make (UcxWorker::Accept on a worker built
// from the same UcxConfig) in a probe process, then closes that endpoint in flush
// mode, which connects it and completes its wire-up with whatever answers at the
// address; if the probe dies of a signal or hangs, the address is refused. An
// address UCX refuses cleanly passes: the shard's own Accept reports it.
//
// What a client must do: progress its UCX worker while its Connect is in flight
// (kvhub's workers have their own progress thread), since the probe's endpoint
// wires up with it; it then sees an orderly close.
//
// How: Start() forks a small vetting process at once, which forks one probe per
// address. Because the vetting process is a fork of the caller, Start() must run
// while the caller is single-threaded and has not initialized UCX (kvhubd: early
// in main, before the server starts); forking later would copy a large, threaded
// process. The vetting process ends with the thread that started it
// (PR_SET_PDEATHSIG) and when the vetter is destroyed.
//
// Cost: a probe is a fork plus a UCX context, worker and endpoint, plus one
// wire-up with the client, ~10-30 ms;
// addresses that passed a wire-up are remembered (exact bytes) for
// Config::remember_for, so a client that connects again with the same worker is
// not probed each time. One whose probe UCX refused before any wire-up is not
// remembered (nothing answered there was ever checked).
//
// Thread safety: Vet() and stats() may be called from any thread; probes run
// one at a time. Ownership: the destructor kills and reaps the vetting process.

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "transport/ucx_config.h"

namespace kvhub::transport {

class UcxAddressVetter {
 public:
  struct Config {
    // A probe that has not finished after this long counts as hung: it is killed
    // and the address refused. 1 ms .. 60 s. Default 5 s.
    absl::Duration probe_timeout = absl::Seconds(5);
    // Addresses that passed, remembered by their exact bytes (oldest forgotten
    // first). 0 .. 1M. Default 4096.
    size_t remembered = 4096;
    // For how long a passed address is remembered, 1 ms .. 24 h. Default 10 min:
    // the probe showed a UCX worker answered at the address then, not that one
    // still does (a client may swap its worker for a listener that writes junk, which
    // would abort the shard's own wire-up), so it is probed again after this.
    absl::Duration remember_for = absl::Minutes(10);
    // How long past probe_timeout the vetting process may take to answer (a host
    // short of CPU) before Vet stops waiting for that answer. 0 .. 60 s. Default 10 s.
    absl::Duration reply_slack = absl::Seconds(10);
    // Answers that late this many times in a row: the vetting process is taken for
    // hung and stopped for good. Default 3.
    int late_replies_before_giving_up = 3;
    absl::Status Validate() const;
  };

  struct Stats {
    uint64_t probes = 0;           // addresses tried in a probe process
    uint64_t remembered_hits = 0;  // addresses passed without a probe (seen before)
    uint64_t refused = 0;          // probes that crashed or hung (the address would harm the shard)
    uint64_t unreachable = 0;      // probes that could not connect (refused too, but harmless)
  };

  // Forks the vetting process (see the header comment for when). `ucx` is the
  // configuration of the workers whose Accept calls are being guarded.
  // INVALID_ARGUMENT for a bad config; INTERNAL if the process cannot be made.
  static absl::StatusOr<std::unique_ptr<UcxAddressVetter>> Start(const UcxConfig& ucx, const Config& config);
  ~UcxAddressVetter();
  UcxAddressVetter(const UcxAddressVetter&) = delete;
  UcxAddressVetter& operator=(const UcxAddressVetter&) = delete;

  // OK: an endpoint to `address` was made (or cleanly refused) and wired up with
  // what answers there in a probe without harm. INVALID_ARGUMENT naming what
  // happened: the probe died of a signal or hung; FAILED_PRECONDITION ("cannot
  // connect"): the probe's endpoint failed while connecting (refused, reset,
  // unreachable); either way the caller must not hand the address to UCX. No verdict, and the caller
  // should refuse the address too: UNAVAILABLE when kMaxCallers calls are already
  // in Vet (worth a retry later: callers block, and a server's threads are few),
  // the probe could not set UCX up, or the vetting process answered later than
  // reply_slack past probe_timeout (its answer, when it comes, is dropped);
  // FAILED_PRECONDITION when the vetting process is gone (for good: it died, or
  // answered late late_replies_before_giving_up times in a row). Blocks for the
  // probe, up to probe_timeout plus reply_slack, and for the calls ahead of it; a
  // remembered address answers at once.
  absl::Status Vet(absl::string_view address) ABSL_LOCKS_EXCLUDED(mu_, cache_mu_);
  static constexpr int kMaxCallers = 4;

  // Never waits for a probe (metrics scrapes call it).
  Stats stats() const;
  // False once Vet has found the vetting process gone (it answers
  // FAILED_PRECONDITION from then on, until the caller restarts). A process that
  // died is noticed by the next Vet that needs a probe, not before. Never waits.
  bool alive() const { return !gone_flag_.load(std::memory_order_acquire); }
  // The vetting process (tests kill it to check the FAILED_PRECONDITION path).
  pid_t vetting_pid() const { return pid_; }

 private:
  UcxAddressVetter(const Config& config, pid_t pid, int fd) : config_(config), pid_(pid), fd_(fd) {}
  // Kills and reaps the vetting process; Vet answers FAILED_PRECONDITION from then on.
  void StopLocked() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // One probe of `address`, with the vetting process to itself.
  // *wired_up: the probe's UCX connected to the address and wired up with what
  // answered there (only then is a pass worth remembering).
  absl::Status ProbeLocked(absl::string_view address, bool* wired_up) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  void Remember(std::string address) ABSL_LOCKS_EXCLUDED(cache_mu_);

  const Config config_;
  const pid_t pid_;
  absl::Mutex mu_;  // held for a whole probe
  int fd_ ABSL_GUARDED_BY(mu_);  // socket to the vetting process; -1 once it is gone
  uint64_t seq_ ABSL_GUARDED_BY(mu_) = 0;       // of the last request sent
  int late_replies_ ABSL_GUARDED_BY(mu_) = 0;   // in a row
  std::string gone_ ABSL_GUARDED_BY(mu_);  // why it is gone
  absl::Mutex cache_mu_;  // never held across a probe
  // Address -> when it passed (Clock::Real()); the order they passed in, with that
  // time (an entry whose map time differs was forgotten and passed again since).
  absl::flat_hash_map<std::string, absl::Time> passed_ ABSL_GUARDED_BY(cache_mu_);
  std::deque<std::pair<std::string, absl::Time>> passed_order_ ABSL_GUARDED_BY(cache_mu_);
  std::atomic<int> callers_{0};  // calls in Vet past the cache
  std::atomic<uint64_t> probes_{0}, remembered_hits_{0}, refused_{0}, unreachable_{0};
  std::atomic<bool> gone_flag_{false};  // fd_ < 0, readable without mu_
};

}  // namespace kvhub::transport
