// kvhubd: one kvhub cache node. With no arguments it runs an embedded single-node
// default on 127.0.0.1 (gRPC :7480, HTTP :7481). See docs/operations.md.
//
//   kvhubd [--config=FILE] [--<key>=<value> ...] [--ready_file=PATH] [--print_config]
//
// Every config key (KvhubdConfig::Keys()) is also a flag; flags override the file.
// Prints exactly one line to stdout once both listeners are bound:
//   kvhubd ready grpc=HOST:PORT http=HOST:PORT node=ID
// SIGTERM/SIGINT: drain and exit 0. SIGHUP: re-read auth_tokens_file and the TLS files.
// Exit 2: bad flags/config; exit 1: startup failed.

#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstring>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

#include "common/fd_limit.h"
#include "common/input_file.h"
#include "common/flags.h"
#include "common/malloc_tuning.h"
#include "common/mutex_checks.h"
#include "common/output_file.h"
#include "absl/flags/flag.h"
#include "absl/flags/reflection.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "cachesvc/kvhubd_config.h"
#include "cachesvc/kvhubd_server.h"
#include "common/log.h"
#include "google/protobuf/stubs/logging.h"

ABSL_FLAG(std::string, config, "", "config file of `key = value` lines (# comments); flags override it");
ABSL_FLAG(bool, print_config, false, "print the effective config as `key = value` lines and exit");

// One string flag per config key; empty = not given (the file or the default applies).
#define KVHUB_CONFIG_FLAG(name, help) ABSL_FLAG(std::string, name, "", help)
KVHUB_CONFIG_FLAG(grpc_address, "gRPC listen HOST:PORT (port 0 = ephemeral); default 127.0.0.1:7480");
KVHUB_CONFIG_FLAG(http_address, "HTTP metrics listen HOST:PORT (port 0 = ephemeral); default 127.0.0.1:7481");
KVHUB_CONFIG_FLAG(node_id, "node name; default <hostname>-<grpc port>");
KVHUB_CONFIG_FLAG(capacity_bytes, "host tier capacity (e.g. 4GiB); default min(25% of the memory limit, 4GiB)");
KVHUB_CONFIG_FLAG(check_memory_limit, "refuse a capacity_bytes above physical memory or the cgroup memory limit; default true");
KVHUB_CONFIG_FLAG(gpu_tier_bytes, "gpu tier device bytes behind the host tier (copies of published blocks, served when the host tier evicted them); default 0 = off; > 0 needs a GPU");
KVHUB_CONFIG_FLAG(region_bytes, "size of each host memory region; default 1GiB (a smaller tier is one region of its own size)");
KVHUB_CONFIG_FLAG(try_hugepages, "try MAP_HUGETLB for regions, plain pages when none are free; default true");
KVHUB_CONFIG_FLAG(max_block_bytes, "largest block accepted (<= 256MiB); default 64MiB");
KVHUB_CONFIG_FLAG(min_block_bytes, "smallest allocator size class; default 4096");
KVHUB_CONFIG_FLAG(high_watermark, "evict when used > high * capacity; default 0.98");
KVHUB_CONFIG_FLAG(low_watermark, "evict down to low * capacity; default 0.97");
KVHUB_CONFIG_FLAG(reservation_timeout_ms, "uncommitted reservations are reclaimed after; default 30000");
KVHUB_CONFIG_FLAG(default_lease_ms, "lease when a Get asks for 0; default 10000");
KVHUB_CONFIG_FLAG(max_lease_ms, "longest lease granted (<= 600000); default 600000");
KVHUB_CONFIG_FLAG(max_pinned_fraction, "share of capacity pinned blocks may use; default 0.5");
KVHUB_CONFIG_FLAG(namespace_quota_bytes, "block bytes one namespace may hold; 0 (default) = no quota");
KVHUB_CONFIG_FLAG(namespace_quotas, "per-namespace quotas NS:SIZE,NS:SIZE overriding namespace_quota_bytes (0 = none for NS)");
KVHUB_CONFIG_FLAG(eviction_policy, "lru | s3fifo | as3fifo | duel; default s3fifo");
KVHUB_CONFIG_FLAG(slab_bytes, "allocator slab; 0 = auto: bit_ceil(max_block_bytes) doubled while >= 64 slabs fit, at most region_bytes");
KVHUB_CONFIG_FLAG(size_class_steps, "allocator size classes per power of two; default 8");
KVHUB_CONFIG_FLAG(max_blocks, "block slot table size; 0 = auto: capacity / min_block_bytes, at most 4M");
KVHUB_CONFIG_FLAG(max_leases, "live leases at once (preallocated); default 262144");
KVHUB_CONFIG_FLAG(populate, "MAP_POPULATE the regions at start; default false");
KVHUB_CONFIG_FLAG(eviction_prefix_aware, "evict chain leaves before parents; default false");
KVHUB_CONFIG_FLAG(s3fifo_small_ratio, "S3-FIFO small queue share; default 0.1");
KVHUB_CONFIG_FLAG(worker_threads, "no effect with gRPC 1.51 (its callback server sizes its own threads; kvhubd warns when set); default 0");
KVHUB_CONFIG_FLAG(expiry_interval_ms, "expiry sweep period (it also runs as often as auth_reload_ms, tls_reload_ms, stalled_send_ms and ucx_session_grace_ms need); default 1000");
KVHUB_CONFIG_FLAG(drain_grace_ms, "on SIGTERM, readyz=503 this long before stopping; default 0");
KVHUB_CONFIG_FLAG(shutdown_timeout_ms, "deadline for in-flight calls at shutdown; default 10000");
KVHUB_CONFIG_FLAG(get_stream_chunk_bytes, "GetStream chunk size; default 1MiB");
KVHUB_CONFIG_FLAG(stalled_send_ms, "a Get/GetStream response that makes no progress for this long is cancelled (1000..3600000); default 60000");
KVHUB_CONFIG_FLAG(grpc_memory_bytes, "gRPC's memory for messages in flight (64MiB..64GiB); beyond it streams are cancelled; default 1GiB");
KVHUB_CONFIG_FLAG(grpc_handshake_timeout_ms, "a new gRPC connection that has not finished its TLS and HTTP/2 handshake by then is closed (100..120000); default 10000");
KVHUB_CONFIG_FLAG(metrics_max_namespaces, "distinct namespace labels before 'other'; default 64");
KVHUB_CONFIG_FLAG(metrics_max_models, "distinct model labels per namespace before 'other'; default 16");
KVHUB_CONFIG_FLAG(log_level, "trace|debug|info|warn|error|critical|off; default info");
KVHUB_CONFIG_FLAG(ready_file, "also write the ready line to this file; default none");
KVHUB_CONFIG_FLAG(ucx_enabled, "serve the UCX data plane (Connect RPC); default true");
KVHUB_CONFIG_FLAG(ucx_tls, "UCX_TLS passthrough (tcp, rc,tcp, posix,cma); default: UCX picks tcp/RDMA");
KVHUB_CONFIG_FLAG(ucx_net_devices, "UCX_NET_DEVICES passthrough (lo, eth0,mlx5_0:1, all); auto: lo when grpc_address is loopback, else UCX's default; default auto");
KVHUB_CONFIG_FLAG(ucx_shm_regions, "shared memory in ucx_tls: UCX allocates the host regions (one-sided local reads/writes); default true");
KVHUB_CONFIG_FLAG(ucx_session_grace_ms, "close a UCX connection no Session watches this long after Connect; 0 = keep it; default 10000");
KVHUB_CONFIG_FLAG(ucx_vet_addresses, "try each client's UCX worker address in a throwaway process first; one that crashes UCX there is refused instead of taking the shard down; default true");
KVHUB_CONFIG_FLAG(ucx_probe_ms, "posix, sysv or sm in ucx_tls: ping the shard's own UCX worker over shared memory this often, replace it when it stops receiving (a client killed mid-send); 0 = off; default 1000");
KVHUB_CONFIG_FLAG(auth_tokens_file, "bearer tokens and their namespaces (docs/operations.md); default none: no authentication");
KVHUB_CONFIG_FLAG(auth_reload_ms, "re-read auth_tokens_file this often and put a changed file in force (SIGHUP: at once); 0 = only on SIGHUP; default 10000");
KVHUB_CONFIG_FLAG(tls_cert_file, "PEM certificate chain: gRPC over TLS; default none (plaintext)");
KVHUB_CONFIG_FLAG(tls_key_file, "PEM private key of tls_cert_file");
KVHUB_CONFIG_FLAG(tls_client_ca_file, "PEM CA bundle: require client certificates it signed (mTLS); default none");
KVHUB_CONFIG_FLAG(tls_reload_ms, "re-read the TLS files this often; new connections use a changed certificate, key or client CA; 1000..86400000; default 60000");

namespace {

struct FlagRef {
  const char* key;
  const absl::Flag<std::string>* flag;
};

#define KVHUB_FLAG_REF(name) FlagRef{#name, &FLAGS_##name}
const FlagRef kConfigFlags[] = {
    KVHUB_FLAG_REF(grpc_address),          KVHUB_FLAG_REF(http_address),
    KVHUB_FLAG_REF(node_id),               KVHUB_FLAG_REF(capacity_bytes),
    KVHUB_FLAG_REF(region_bytes),          KVHUB_FLAG_REF(try_hugepages),
    KVHUB_FLAG_REF(max_block_bytes),       KVHUB_FLAG_REF(min_block_bytes),
    KVHUB_FLAG_REF(high_watermark),        KVHUB_FLAG_REF(low_watermark),
    KVHUB_FLAG_REF(reservation_timeout_ms), KVHUB_FLAG_REF(default_lease_ms),
    KVHUB_FLAG_REF(max_lease_ms),          KVHUB_FLAG_REF(max_pinned_fraction),
    KVHUB_FLAG_REF(namespace_quota_bytes), KVHUB_FLAG_REF(namespace_quotas),
    KVHUB_FLAG_REF(eviction_policy),       KVHUB_FLAG_REF(slab_bytes),
    KVHUB_FLAG_REF(size_class_steps),      KVHUB_FLAG_REF(max_blocks),
    KVHUB_FLAG_REF(max_leases),            KVHUB_FLAG_REF(populate),
    KVHUB_FLAG_REF(eviction_prefix_aware),
    KVHUB_FLAG_REF(s3fifo_small_ratio),    KVHUB_FLAG_REF(worker_threads),
    KVHUB_FLAG_REF(expiry_interval_ms),    KVHUB_FLAG_REF(drain_grace_ms),
    KVHUB_FLAG_REF(shutdown_timeout_ms),   KVHUB_FLAG_REF(get_stream_chunk_bytes),
    KVHUB_FLAG_REF(stalled_send_ms),
    KVHUB_FLAG_REF(grpc_memory_bytes),     KVHUB_FLAG_REF(grpc_handshake_timeout_ms),
    KVHUB_FLAG_REF(metrics_max_namespaces), KVHUB_FLAG_REF(metrics_max_models),
    KVHUB_FLAG_REF(gpu_tier_bytes),        KVHUB_FLAG_REF(check_memory_limit),
    KVHUB_FLAG_REF(log_level),             KVHUB_FLAG_REF(ready_file),
    KVHUB_FLAG_REF(ucx_enabled),           KVHUB_FLAG_REF(ucx_tls), KVHUB_FLAG_REF(ucx_shm_regions),
    KVHUB_FLAG_REF(ucx_net_devices),
    KVHUB_FLAG_REF(ucx_probe_ms),          KVHUB_FLAG_REF(ucx_session_grace_ms), KVHUB_FLAG_REF(ucx_vet_addresses),
    KVHUB_FLAG_REF(auth_tokens_file),      KVHUB_FLAG_REF(auth_reload_ms),
    KVHUB_FLAG_REF(tls_cert_file),
    KVHUB_FLAG_REF(tls_key_file),          KVHUB_FLAG_REF(tls_client_ca_file),
    KVHUB_FLAG_REF(tls_reload_ms),
};

// Below this many open files a shard may run out of descriptors with a few
// hundred clients (each costs one per gRPC channel, more over UCX).
constexpr uint64_t kFewOpenFiles = 4096;

// Raises the soft limit on open files to the hard limit (common/fd_limit.h) and
// says so, or warns when the limit stays low.
void RaiseOpenFileLimit() {
  absl::StatusOr<kvhub::OpenFileLimits> before = kvhub::ReadOpenFileLimits();
  if (!before.ok()) {
    KVHUB_LOG(warn, "kvhubd: {}", before.status().ToString());
    return;
  }
  absl::StatusOr<kvhub::OpenFileLimits> now = kvhub::RaiseOpenFileLimit();
  if (!now.ok()) {
    KVHUB_LOG(warn, "kvhubd: {}", now.status().ToString());
    now = before;
  } else if (now->soft != before->soft) {
    KVHUB_LOG(info, "kvhubd: open files limit raised from {} to {} (hard limit {})", before->soft, now->soft,
              now->hard == UINT64_MAX ? std::string("unlimited") : absl::StrCat(now->hard));
  }
  if (now->soft < kFewOpenFiles) {
    KVHUB_LOG(warn, "kvhubd: at most {} open files (hard limit {}): each client costs one per gRPC channel and "
              "more over UCX, and a shard out of descriptors stops accepting connections for good (/healthz then "
              "fails: restart it). Raise the hard limit: LimitNOFILE= (systemd), --ulimit nofile= (docker), ulimit -Hn", now->soft, now->hard);
  }
}

// libprotobuf's own messages (it logs, for example, every request whose string field is
// not valid UTF-8, which a client can send at will) go into kvhubd's log as warnings,
// at most one a second; the line after a gap says how many were left out.
void ProtobufLogToKvhubLog(google::protobuf::LogLevel level, const char* file, int line, const std::string& msg) {
  static std::atomic<int64_t> last_second{0};
  static std::atomic<uint64_t> left_out{0};
  const int64_t now = absl::ToUnixSeconds(absl::Now());
  int64_t last = last_second.load(std::memory_order_relaxed);
  if (level != google::protobuf::LOGLEVEL_FATAL &&
      (now == last || !last_second.compare_exchange_strong(last, now, std::memory_order_relaxed))) {
    left_out.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  const uint64_t skipped = left_out.exchange(0, std::memory_order_relaxed);
  KVHUB_LOG(warn, "libprotobuf {}:{}: {}{}", file, line, msg,
            skipped == 0 ? std::string() : absl::StrCat(" (", skipped, " earlier protobuf messages left out)"));
}

// Writes out what every logger holds (spdlog::shutdown() instead would drop the
// default logger under UCX and gRPC threads that still log before the exit).
void FlushLogs() {
  spdlog::apply_all([](const std::shared_ptr<spdlog::logger>& l) { l->flush(); });
}

int Fail(int code, const std::string& msg) {
  std::fprintf(stderr, "kvhubd: %s\n", msg.c_str());
  return code;
}

}  // namespace

int main(int argc, char** argv) {
  kvhub::TuneMallocForLargeBuffers();  // gRPC receive buffers: no page faults per message
  kvhub::TurnOffMutexDeadlockChecks();  // tests keep them; see common/mutex_checks.h
  // Logs go to stderr; stdout carries only the ready line.
  kvhub::LogToStderr("kvhubd");
  google::protobuf::SetLogHandler(&ProtobufLogToKvhubLog);
  // An empty value reads as "not set" below: `--grpc_address=$UNSET` must not
  // quietly mean the default port, so the command line may not carry one.
  // abseil takes `-flag` as `--flag`: so do these checks.
  const auto flag_name = [](absl::string_view a) -> absl::string_view {
    if (absl::StartsWith(a, "--")) return a.substr(2);
    if (absl::StartsWith(a, "-") && a.size() > 1) return a.substr(1);
    return {};
  };
  for (int i = 1; i < argc; ++i) {
    const absl::string_view arg = argv[i];
    const bool is_flag = !flag_name(arg).empty();
    // Blank counts as empty: values are trimmed (`--auth_tokens_file=" "` ran without auth).
    const size_t eq = arg.find('=');
    const bool empty_eq = is_flag && eq != absl::string_view::npos && absl::StripAsciiWhitespace(arg.substr(eq + 1)).empty();
    const bool empty_next = is_flag && eq == absl::string_view::npos && i + 1 < argc &&
                            absl::StripAsciiWhitespace(argv[i + 1]).empty();
    if (empty_eq || empty_next) {
      return Fail(2, absl::StrCat(arg.substr(0, arg.find('=')), " has an empty value (leave the flag out for its default)"));
    }
    // `--ready_file $UNSET --grpc_address=...`: the variable vanishes and abseil takes
    // the next flag as the value (with only a warning), so the address is silently the
    // default. A flag that needs a value may not be followed by another flag.
    if (is_flag && arg.find('=') == absl::string_view::npos && i + 1 < argc) {
      const absl::string_view next = flag_name(argv[i + 1]);
      const absl::CommandLineFlag* flag = absl::FindCommandLineFlag(flag_name(arg));
      if (flag != nullptr && !flag->IsOfType<bool>() && !next.empty() &&
          absl::FindCommandLineFlag(next.substr(0, next.find('='))) != nullptr) {
        return Fail(2, absl::StrCat(arg, " is followed by ", argv[i + 1], " instead of its value (write ", arg,
                                    "=VALUE)"));
      }
    }
  }
  std::vector<char*> rest = kvhub::ParseFlagsOrExit(
      argc, argv, "a kvhub KV-cache node. Flags override --config; see docs/operations.md.");
  if (rest.size() > 1) return Fail(2, absl::StrCat("unexpected argument '", rest[1], "' (flags are --key=value)"));

  // Every config key must have a flag (and no flag may name an unknown key).
  if (std::size(kConfigFlags) != kvhub::cachesvc::KvhubdConfig::Keys().size()) {
    return Fail(2, "internal: config keys and flags differ");
  }

  kvhub::cachesvc::KvhubdConfig config = kvhub::cachesvc::KvhubdConfig::Defaults();
  if (std::string path = absl::GetFlag(FLAGS_config); !path.empty()) {
    if (absl::Status s = config.ApplyFile(path); !s.ok()) return Fail(2, std::string(s.message()));
  }
  for (const FlagRef& f : kConfigFlags) {
    std::string v = absl::GetFlag(*f.flag);
    if (v.empty()) continue;
    if (absl::Status s = config.Set(f.key, v); !s.ok()) {
      return Fail(2, absl::StrCat("--", f.key, ": ", s.message()));
    }
    config.origins[f.key] = absl::StrCat("--", f.key);
  }
  if (absl::Status s = config.Validate(); !s.ok()) return Fail(2, std::string(s.message()));
  if (absl::GetFlag(FLAGS_print_config)) {
    std::fputs(config.ToText().c_str(), stdout);
    return kvhub::ExitCodeAfterStdout(0, "kvhubd");  // a full disk is an error, not an empty config
  }
  if (absl::Status s = kvhub::SetLogLevel(config.log_level); !s.ok()) {  // Validate() checked it
    KVHUB_LOG(error, "{}", std::string(s.message()));
  }
  RaiseOpenFileLimit();

  // Signals are taken synchronously by this thread; block them before any thread starts
  // so every thread inherits the mask.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGTERM);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  signal(SIGPIPE, SIG_IGN);

  // Forked now, while this process has one thread and no UCX (see the vetter's header).
  absl::StatusOr<kvhub::cachesvc::UcxServer::AddressVetterPtr> vetter =
      kvhub::cachesvc::UcxServer::StartAddressVetter(config);
  if (!vetter.ok()) return Fail(1, vetter.status().ToString());
  if (!config.ready_file.empty()) {
    // Found unwritable now, not after the tier is mapped and gRPC serves; and a ready
    // line left by an earlier run must not send a poller to its dead ports.
    if (absl::Status s = kvhub::CheckOutputPath(config.ready_file); !s.ok()) {
      return Fail(2, absl::StrCat("ready_file: ", s.message()));
    }
    if (unlink(config.ready_file.c_str()) != 0 && errno != ENOENT) {
      return Fail(2, absl::StrCat("ready_file: cannot remove the old one: ", std::strerror(errno)));
    }
  }
  absl::StatusOr<std::unique_ptr<kvhub::cachesvc::KvhubdServer>> server =
      kvhub::cachesvc::KvhubdServer::Start(config, *std::move(vetter));
  if (!server.ok()) return Fail(absl::IsInvalidArgument(server.status()) ? 2 : 1, server.status().ToString());

  const std::string ready = (*server)->ReadyLine();
  struct stat ready_stat {};  // the ready_file this process wrote (st_ino 0: none)
  if (!config.ready_file.empty()) {
    // Complete or not at all (written beside it and renamed): readers poll for it.
    if (absl::Status s = kvhub::WriteOutput(config.ready_file, ready + "\n"); !s.ok()) {
      (*server)->Shutdown(/*drain=*/false);  // never announced: nobody to drain
      return Fail(1, absl::StrCat("cannot write ready_file: ", s.message()));
    }
    if (stat(config.ready_file.c_str(), &ready_stat) != 0) ready_stat.st_ino = 0;
  }
  std::fputs((ready + "\n").c_str(), stdout);
  std::fflush(stdout);

  int sig = 0;
  while (true) {
    if (sigwait(&sigs, &sig) != 0) continue;
    if (sig != SIGHUP) break;
    // SIGHUP: put changed tokens and TLS files in force now (logged by the reloads).
    const absl::Status auth = (*server)->ReloadAuth();
    const absl::Status tls = (*server)->ReloadTls();
    if (absl::IsFailedPrecondition(auth) && absl::IsFailedPrecondition(tls)) {
      KVHUB_LOG(warn, "kvhubd: SIGHUP ignored: {}; {}", std::string(auth.message()), std::string(tls.message()));
    }
  }
  KVHUB_LOG(info, "kvhubd: signal {} received, shutting down (a second SIGTERM/SIGINT exits at once)", sig);
  // It no longer serves: remove the ready line, unless the file is no longer the
  // one written here (a successor's on the same path; its inode number may be the
  // freed one of ours, so the line itself is compared too).
  const auto remove_ready_file = [path = config.ready_file, line = ready + "\n", ready_stat] {
    if (path.empty() || ready_stat.st_ino == 0) return;
    struct stat now {};
    if (stat(path.c_str(), &now) != 0 || now.st_ino != ready_stat.st_ino || now.st_dev != ready_stat.st_dev) return;
    absl::StatusOr<std::string> text = kvhub::ReadInput(path, line.size() + 1);
    if (text.ok() && *text == line) unlink(path.c_str());
  };
  // The drain can take drain_grace + shutdown_timeout (up to 20 minutes): a second
  // SIGTERM or SIGINT, as from an impatient operator's Ctrl-C, ends it without
  // waiting (the signals stay blocked: this thread takes them from sigwait). Once
  // the drain is over the exit is moments away, and stays exit 0.
  // A SIGHUP meanwhile still reloads: with auth_reload_ms = 0 it is the only way a
  // token revoked during a drain of minutes stops being served (it was ignored).
  static std::atomic<bool> drained{false};
  kvhub::cachesvc::KvhubdServer* const serving = server->get();
  std::thread([sigs, remove_ready_file, serving] {
    int again = 0;
    while (true) {
      if (sigwait(&sigs, &again) != 0 || drained.load()) continue;
      if (again == SIGHUP) {
        serving->ReloadAuth().IgnoreError();  // logged there; the tokens in force stay on failure
        serving->ReloadTls().IgnoreError();   // logged by the reloader
        continue;
      }
      KVHUB_LOG(warn, "kvhubd: signal {} received again: exiting without finishing the drain; exit 1", again);
      remove_ready_file();
      FlushLogs();
      std::_Exit(1);
    }
  }).detach();
  (*server)->Shutdown();
  drained.store(true);
  remove_ready_file();
  KVHUB_LOG(info, "kvhubd: drained and stopped; exit 0");
  // Exit without tearing down the heap: every call is finished and the store is memory
  // only. (Destroying grpc::Server after a deadline-cancelled shutdown can block ~10 s
  // in grpc 1.51.)
  FlushLogs();
  std::fflush(stdout);
  std::fflush(stderr);
  std::_Exit(0);
}
