#pragma once
// ServiceMetrics: kvhubd's counters and latency histograms, rendered as Prometheus
// text (/metrics). Hot-path updates are lock-free atomics; label lookups take a
// reader lock on a bounded interner (no allocation once a label is known).
//
// Labels: `namespace`, `model` (lookup), `tier`, `method`. Cardinality is bounded:
// the first `max_namespaces` namespaces and `max_models` models get their own series,
// later ones are folded into "other".
//
// Thread safety: every method is safe to call concurrently.

#include <array>
#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"
#include "storage/block_store.h"
#include "storage/tiered_block_store.h"

namespace kvhub::cachesvc {

enum class Rpc : int {
  kLookup, kPutStart, kPutData, kPutCommit, kPutAbort, kPut, kGet, kGetStream,
  kRelease, kDelete, kPin, kStats, kHealth, kConnect,
  kUcxGet,      // Get (leases) called over UCX active messages, not gRPC
  kUcxRelease,  // Release called over UCX active messages
  kCount
};
const char* RpcName(Rpc rpc);

// Maps label values to dense indices [0, cap); values beyond the cap map to `cap`
// ("other"), and so does the value "other" itself. Thread-safe.
class LabelInterner {
 public:
  static constexpr absl::string_view kOverflowLabel = "other";
  explicit LabelInterner(int cap);
  int Index(absl::string_view value);
  // Names of indices [0, size()); index cap is "other".
  std::vector<std::string> Names() const;
  int cap() const { return cap_; }

 private:
  const int cap_;
  mutable absl::Mutex mu_;
  absl::flat_hash_map<std::string, int> index_ ABSL_GUARDED_BY(mu_);
  std::vector<std::string> names_ ABSL_GUARDED_BY(mu_);
};

// Latency histogram with fixed buckets (seconds): 50us .. 10s.
class LatencyHistogram {
 public:
  static constexpr std::array<double, 17> kBounds = {0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025,
                                                     0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
  void Observe(absl::Duration d);
  void Render(std::string* out, absl::string_view name, absl::string_view labels) const;

 private:
  std::array<std::atomic<uint64_t>, kBounds.size() + 1> buckets_{};
  std::atomic<uint64_t> count_{0};
  std::atomic<uint64_t> sum_nanos_{0};
};

// What /metrics shows besides our counters; gathered when rendering.
struct MetricsSnapshotInputs {
  storage::BlockStoreStats store;
  std::optional<storage::TierStats> gpu;  // the gpu tier, when kvhubd runs one
  std::string node_id;
  std::string policy;         // the configured eviction policy (BlockStore::PolicyName)
  std::string active_policy;  // the one choosing victims now (differs for duel)
  uint64_t policy_switches = 0;
  bool serving = true;
  // gRPC's listener has stopped accepting (cachesvc/grpc_listener_watch.h).
  bool grpc_listener_failed = false;
  absl::Duration uptime;
  uint64_t live_reservations = 0;
  uint64_t stalled_sends_cancelled = 0;
  // UCX data plane: bytes the shard's worker served by active messages.
  uint64_t ucx_get_bytes = 0;
  uint64_t ucx_put_bytes = 0;
  // UCX connections the shard holds, and those watched by a Session stream.
  uint64_t ucx_connections = 0;
  uint64_t ucx_sessions = 0;
  uint64_t ucx_worker_resets = 0;
  uint64_t ucx_refused_addresses = 0;
  uint64_t ucx_unreachable_addresses = 0;
  uint64_t ucx_unknown_conn_requests = 0;
  uint64_t ucx_busy_conn_requests = 0;
  // UcxServer::accepting(): not rendered when UCX is off by design.
  std::optional<bool> ucx_accepting;
  // Bearer tokens (auth_tokens_file): whether on, how many are in force, and the
  // reloads that installed a changed file or failed (the old tokens stayed).
  // Quota and held bytes of a namespace (BlockStore::NamespaceUsageOf), for the
  // namespaces the metrics name; null when no quota is configured.
  std::function<storage::BlockStore::NamespaceUsage(absl::string_view ns)> namespace_usage;
  bool auth_on = false;
  uint64_t auth_tokens = 0;
  uint64_t auth_reloads = 0;
  uint64_t auth_reload_failures = 0;
  bool tls_on = false;               // gRPC over TLS (tls_cert_file)
  uint64_t tls_reloads = 0;          // changed TLS files put in force
  uint64_t tls_reload_failures = 0;  // changed TLS files refused
  absl::Time tls_not_after;          // expiry of the served certificate
  // File descriptors open now and the soft limit on them (common/fd_limit.h); 0: unknown.
  uint64_t open_fds = 0;
  uint64_t max_fds = 0;
};

class ServiceMetrics {
 public:
  ServiceMetrics(int max_namespaces, int max_models);

  // One Lookup call: `keys` asked, `hit_keys` counted as hits, tokens = keys * block_tokens.
  void RecordLookup(absl::string_view ns, absl::string_view model, uint64_t keys, uint64_t hit_keys,
                    uint32_t block_tokens);
  void AddGetBytes(absl::string_view ns, uint64_t blocks, uint64_t bytes);
  void AddPutBytes(int ns_index, uint64_t blocks, uint64_t bytes);
  void AddChecksumFailure(int ns_index);
  // Block bytes carried in gRPC messages (inline Put/Get, PutData, GetStream);
  // get = toward clients. UCX bytes come from MetricsSnapshotInputs.
  void AddGrpcBytes(bool get, uint64_t bytes) {
    (get ? grpc_get_bytes_ : grpc_put_bytes_).fetch_add(bytes, std::memory_order_relaxed);
  }
  uint64_t grpc_get_bytes() const { return grpc_get_bytes_.load(std::memory_order_relaxed); }
  uint64_t grpc_put_bytes() const { return grpc_put_bytes_.load(std::memory_order_relaxed); }
  int NamespaceIndex(absl::string_view ns) { return namespaces_.Index(ns); }

  // One finished RPC: its handler latency and its status code (0..16).
  void RecordRpc(Rpc rpc, absl::Duration latency, int code);

  // Totals for StatsResponse.
  uint64_t lookup_requested_keys() const;
  uint64_t lookup_hit_keys() const;
  uint64_t lookup_requested_tokens() const;
  uint64_t lookup_hit_tokens() const;
  uint64_t get_bytes() const;
  uint64_t put_bytes() const;

  std::string RenderPrometheus(const MetricsSnapshotInputs& in) const;

 private:
  struct LookupSeries {
    std::atomic<uint64_t> requests{0};
    std::atomic<uint64_t> requested_keys{0};
    std::atomic<uint64_t> hit_keys{0};
    std::atomic<uint64_t> requested_tokens{0};
    std::atomic<uint64_t> hit_tokens{0};
  };
  struct NamespaceSeries {
    std::atomic<uint64_t> get_blocks{0};
    std::atomic<uint64_t> get_bytes{0};
    std::atomic<uint64_t> put_blocks{0};
    std::atomic<uint64_t> put_bytes{0};
    std::atomic<uint64_t> checksum_failures{0};
  };
  struct RpcSeries {
    LatencyHistogram latency;
    std::array<std::atomic<uint64_t>, 17> codes{};
  };

  // One LookupSeries counter summed over every (namespace, model) series.
  uint64_t SumLookup(std::atomic<uint64_t> LookupSeries::*counter) const;

  LabelInterner namespaces_;
  // Per namespace slot (ns_cap+1): one tenant's made-up model names fill its own
  // model slots, not everyone's.
  std::vector<std::unique_ptr<LabelInterner>> models_;
  const int model_slots_;
  std::unique_ptr<LookupSeries[]> lookup_;        // [(ns_cap+1) * (model_cap+1)]
  std::unique_ptr<NamespaceSeries[]> per_ns_;     // [ns_cap+1]
  std::array<RpcSeries, static_cast<int>(Rpc::kCount)> rpcs_;
  std::atomic<uint64_t> grpc_get_bytes_{0};
  std::atomic<uint64_t> grpc_put_bytes_{0};
};

}  // namespace kvhub::cachesvc
