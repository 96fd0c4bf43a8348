#include "cachesvc/metrics.h"

#include <cstdio>

#include "absl/strings/str_cat.h"

namespace kvhub::cachesvc {
namespace {

constexpr const char* kRpcNames[] = {"Lookup",  "PutStart", "PutData", "PutCommit", "PutAbort",
                                     "Put",     "Get",      "GetStream", "Release", "Delete",
                                     "Pin",     "Stats",    "Health",  "Connect", "UcxGet",
                                     "UcxRelease"};
static_assert(sizeof(kRpcNames) / sizeof(kRpcNames[0]) == static_cast<size_t>(Rpc::kCount));

constexpr const char* kCodeNames[] = {"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED",
                                      "NOT_FOUND", "ALREADY_EXISTS", "PERMISSION_DENIED",
                                      "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED",
                                      "OUT_OF_RANGE", "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE",
                                      "DATA_LOSS", "UNAUTHENTICATED"};

// Prometheus label value escaping: backslash, double quote, newline.
std::string Escape(absl::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

void Header(std::string* out, absl::string_view name, absl::string_view type, absl::string_view help) {
  absl::StrAppend(out, "# HELP ", name, " ", help, "\n# TYPE ", name, " ", type, "\n");
}

std::string Num(double v) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.9g", v);
  return buf;
}

}  // namespace

const char* RpcName(Rpc rpc) { return kRpcNames[static_cast<int>(rpc)]; }

LabelInterner::LabelInterner(int cap) : cap_(cap) {}

int LabelInterner::Index(absl::string_view value) {
  // The overflow row is labelled "other": a value of that name joins it, or two
  // series would carry the same labels (invalid exposition; Prometheus keeps one).
  if (value == kOverflowLabel) return cap_;
  {
    absl::ReaderMutexLock lock(&mu_);
    auto it = index_.find(value);
    if (it != index_.end()) return it->second;
    if (static_cast<int>(names_.size()) >= cap_) return cap_;
  }
  absl::MutexLock lock(&mu_);
  auto it = index_.find(value);
  if (it != index_.end()) return it->second;
  if (static_cast<int>(names_.size()) >= cap_) return cap_;
  int idx = static_cast<int>(names_.size());
  names_.emplace_back(value);
  index_.emplace(std::string(value), idx);
  return idx;
}

std::vector<std::string> LabelInterner::Names() const {
  absl::ReaderMutexLock lock(&mu_);
  return names_;
}

void LatencyHistogram::Observe(absl::Duration d) {
  // A negative duration (a caller timing with a clock that stepped back) would make
  // the sum, a counter, go down or wrap.
  if (d < absl::ZeroDuration()) d = absl::ZeroDuration();
  double s = absl::ToDoubleSeconds(d);
  size_t i = 0;
  while (i < kBounds.size() && s > kBounds[i]) ++i;
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
  sum_nanos_.fetch_add(static_cast<uint64_t>(absl::ToInt64Nanoseconds(d)), std::memory_order_relaxed);
}

void LatencyHistogram::Render(std::string* out, absl::string_view name, absl::string_view labels) const {
  uint64_t cum = 0;
  for (size_t i = 0; i <= kBounds.size(); ++i) {
    cum += buckets_[i].load(std::memory_order_relaxed);
    std::string le = i < kBounds.size() ? Num(kBounds[i]) : "+Inf";
    absl::StrAppend(out, name, "_bucket{", labels, ",le=\"", le, "\"} ", cum, "\n");
  }
  absl::StrAppend(out, name, "_sum{", labels, "} ",
                  Num(static_cast<double>(sum_nanos_.load(std::memory_order_relaxed)) * 1e-9), "\n");
  // The +Inf bucket's value: a count read separately could differ from it by the
  // observations made meanwhile (the format requires them equal).
  absl::StrAppend(out, name, "_count{", labels, "} ", cum, "\n");
}

ServiceMetrics::ServiceMetrics(int max_namespaces, int max_models)
    : namespaces_(max_namespaces),
      model_slots_(max_models + 1),
      lookup_(new LookupSeries[static_cast<size_t>(max_namespaces + 1) * (max_models + 1)]),
      per_ns_(new NamespaceSeries[max_namespaces + 1]) {
  for (int n = 0; n <= max_namespaces; ++n) models_.push_back(std::make_unique<LabelInterner>(max_models));
}

void ServiceMetrics::RecordLookup(absl::string_view ns, absl::string_view model, uint64_t keys,
                                  uint64_t hit_keys, uint32_t block_tokens) {
  int n = namespaces_.Index(ns);
  int m = models_[n]->Index(model.empty() ? absl::string_view("unknown") : model);
  LookupSeries& s = lookup_[static_cast<size_t>(n) * model_slots_ + m];
  s.requests.fetch_add(1, std::memory_order_relaxed);
  s.requested_keys.fetch_add(keys, std::memory_order_relaxed);
  s.hit_keys.fetch_add(hit_keys, std::memory_order_relaxed);
  s.requested_tokens.fetch_add(keys * block_tokens, std::memory_order_relaxed);
  s.hit_tokens.fetch_add(hit_keys * block_tokens, std::memory_order_relaxed);
}

void ServiceMetrics::AddGetBytes(absl::string_view ns, uint64_t blocks, uint64_t bytes) {
  NamespaceSeries& s = per_ns_[namespaces_.Index(ns)];
  s.get_blocks.fetch_add(blocks, std::memory_order_relaxed);
  s.get_bytes.fetch_add(bytes, std::memory_order_relaxed);
}

void ServiceMetrics::AddPutBytes(int ns_index, uint64_t blocks, uint64_t bytes) {
  NamespaceSeries& s = per_ns_[ns_index];
  s.put_blocks.fetch_add(blocks, std::memory_order_relaxed);
  s.put_bytes.fetch_add(bytes, std::memory_order_relaxed);
}

void ServiceMetrics::AddChecksumFailure(int ns_index) {
  per_ns_[ns_index].checksum_failures.fetch_add(1, std::memory_order_relaxed);
}

void ServiceMetrics::RecordRpc(Rpc rpc, absl::Duration latency, int code) {
  RpcSeries& s = rpcs_[static_cast<int>(rpc)];
  s.latency.Observe(latency);
  if (code < 0 || code > 16) code = 2;  // UNKNOWN
  s.codes[code].fetch_add(1, std::memory_order_relaxed);
}

uint64_t ServiceMetrics::SumLookup(std::atomic<uint64_t> LookupSeries::*counter) const {
  uint64_t t = 0;
  for (int i = 0; i < (namespaces_.cap() + 1) * model_slots_; ++i) t += (lookup_[i].*counter).load();
  return t;
}
uint64_t ServiceMetrics::lookup_requested_keys() const { return SumLookup(&LookupSeries::requested_keys); }
uint64_t ServiceMetrics::lookup_hit_keys() const { return SumLookup(&LookupSeries::hit_keys); }
uint64_t ServiceMetrics::lookup_requested_tokens() const { return SumLookup(&LookupSeries::requested_tokens); }
uint64_t ServiceMetrics::lookup_hit_tokens() const { return SumLookup(&LookupSeries::hit_tokens); }
uint64_t ServiceMetrics::get_bytes() const {
  uint64_t t = 0;
  for (int i = 0; i <= namespaces_.cap(); ++i) t += per_ns_[i].get_bytes.load();
  return t;
}
uint64_t ServiceMetrics::put_bytes() const {
  uint64_t t = 0;
  for (int i = 0; i <= namespaces_.cap(); ++i) t += per_ns_[i].put_bytes.load();
  return t;
}

std::string ServiceMetrics::RenderPrometheus(const MetricsSnapshotInputs& in) const {
  std::string out;
  out.reserve(64 << 10);
  std::vector<std::string> ns_names = namespaces_.Names();
  ns_names.resize(namespaces_.cap(), "");
  ns_names.push_back(std::string(LabelInterner::kOverflowLabel));
  std::vector<std::vector<std::string>> model_names(ns_names.size());
  for (size_t n = 0; n < ns_names.size(); ++n) {
    model_names[n] = models_[n]->Names();
    model_names[n].resize(model_slots_ - 1, "");
    model_names[n].push_back(std::string(LabelInterner::kOverflowLabel));
  }

  Header(&out, "kvhub_up", "gauge", "1 while the node serves, 0 while it drains");
  absl::StrAppend(&out, "kvhub_up{node=\"", Escape(in.node_id), "\"} ", in.serving ? 1 : 0, "\n");
  Header(&out, "kvhub_grpc_listener_failed", "gauge",
         "1 once gRPC has stopped accepting connections (out of descriptors); restart the node");
  absl::StrAppend(&out, "kvhub_grpc_listener_failed ", in.grpc_listener_failed ? 1 : 0, "\n");
  Header(&out, "kvhub_uptime_seconds", "gauge", "seconds since start");
  absl::StrAppend(&out, "kvhub_uptime_seconds ", Num(absl::ToDoubleSeconds(in.uptime)), "\n");
  if (in.max_fds != 0) {  // the names of Prometheus' process collectors
    Header(&out, "process_open_fds", "gauge", "open file descriptors");
    absl::StrAppend(&out, "process_open_fds ", in.open_fds, "\n");
    Header(&out, "process_max_fds", "gauge", "the soft limit on open file descriptors");
    absl::StrAppend(&out, "process_max_fds ", in.max_fds == UINT64_MAX ? "+Inf" : absl::StrCat(in.max_fds), "\n");
  }
  Header(&out, "kvhub_eviction_policy_info", "gauge",
         "1, labelled with the configured eviction policy and the one choosing victims now (duel follows lru, as3fifo or s3fifo)");
  absl::StrAppend(&out, "kvhub_eviction_policy_info{policy=\"", Escape(in.policy), "\",active=\"",
                  Escape(in.active_policy), "\"} 1\n");
  Header(&out, "kvhub_eviction_policy_switches_total", "counter",
         "times the policy choosing victims changed (duel only)");
  absl::StrAppend(&out, "kvhub_eviction_policy_switches_total ", in.policy_switches, "\n");

  // Token-weighted lookup metrics.
  struct LookupMetric {
    const char* name;
    const char* help;
    std::atomic<uint64_t> LookupSeries::*field;
  };
  const LookupMetric lookup_metrics[] = {
      {"kvhub_lookup_requests_total", "Lookup calls", &LookupSeries::requests},
      {"kvhub_lookup_requested_keys_total", "keys asked by Lookup", &LookupSeries::requested_keys},
      {"kvhub_lookup_hit_keys_total", "keys found by Lookup (the leading run when prefix=true)",
       &LookupSeries::hit_keys},
      {"kvhub_lookup_requested_tokens_total", "tokens asked by prefix Lookups (keys * block_tokens)",
       &LookupSeries::requested_tokens},
      {"kvhub_lookup_hit_tokens_total", "tokens found by prefix Lookups (leading hit keys * block_tokens)",
       &LookupSeries::hit_tokens},
  };
  for (const LookupMetric& lm : lookup_metrics) {
    Header(&out, lm.name, "counter", lm.help);
    for (size_t n = 0; n < ns_names.size(); ++n) {
      for (size_t m = 0; m < model_names[n].size(); ++m) {
        const LookupSeries& s = lookup_[n * model_slots_ + m];
        if (s.requests.load(std::memory_order_relaxed) == 0) continue;
        // A name first seen after the names were read above: counted now, named next time.
        if (ns_names[n].empty() || model_names[n][m].empty()) continue;
        absl::StrAppend(&out, lm.name, "{namespace=\"", Escape(ns_names[n]), "\",model=\"",
                        Escape(model_names[n][m]), "\"} ", (s.*(lm.field)).load(std::memory_order_relaxed), "\n");
      }
    }
  }

  struct NsMetric {
    const char* name;
    const char* help;
    std::atomic<uint64_t> NamespaceSeries::*field;
  };
  const NsMetric ns_metrics[] = {
      {"kvhub_get_blocks_total", "blocks served by Get/GetStream (leases granted or bytes sent)",
       &NamespaceSeries::get_blocks},
      {"kvhub_get_bytes_total", "block bytes served by Get/GetStream", &NamespaceSeries::get_bytes},
      {"kvhub_put_blocks_total", "blocks made visible by Put/PutCommit", &NamespaceSeries::put_blocks},
      {"kvhub_put_bytes_total", "block bytes made visible by Put/PutCommit", &NamespaceSeries::put_bytes},
      {"kvhub_put_checksum_failures_total", "Put/PutCommit refused with DATA_LOSS",
       &NamespaceSeries::checksum_failures},
  };
  for (const NsMetric& nm : ns_metrics) {
    Header(&out, nm.name, "counter", nm.help);
    for (size_t n = 0; n < ns_names.size(); ++n) {
      uint64_t v = (per_ns_[n].*(nm.field)).load(std::memory_order_relaxed);
      if (v == 0 && n >= static_cast<size_t>(namespaces_.cap())) continue;
      if (ns_names[n].empty()) continue;
      absl::StrAppend(&out, nm.name, "{namespace=\"", Escape(ns_names[n]), "\"} ", v, "\n");
    }
  }

  if (in.namespace_usage) {
    Header(&out, "kvhub_namespace_held_bytes", "gauge",
           "block bytes a namespace holds now, reserved and stored (counted against its quota)");
    std::string quotas;
    for (size_t n = 0; n < ns_names.size(); ++n) {
      if (ns_names[n].empty() || n >= static_cast<size_t>(namespaces_.cap())) continue;  // not "other"
      const storage::BlockStore::NamespaceUsage u = in.namespace_usage(ns_names[n]);
      absl::StrAppend(&out, "kvhub_namespace_held_bytes{namespace=\"", Escape(ns_names[n]), "\"} ", u.held_bytes, "\n");
      if (u.quota_bytes != 0) {
        absl::StrAppend(&quotas, "kvhub_namespace_quota_bytes{namespace=\"", Escape(ns_names[n]), "\"} ", u.quota_bytes,
                        "\n");
      }
    }
    Header(&out, "kvhub_namespace_quota_bytes", "gauge",
           "a namespace's quota (namespace_quotas, else namespace_quota_bytes); absent: no quota");
    out += quotas;
  }

  // Tiers: host, and gpu when kvhubd runs one (its blocks are copies of
  // published blocks, kept for when the host tier evicts them).
  const storage::BlockStoreStats& st = in.store;
  struct TierMetric {
    const char* name;
    const char* type;
    const char* help;
    uint64_t value;
    std::optional<uint64_t> gpu = std::nullopt;
  };
  const std::optional<storage::TierStats>& g = in.gpu;
  auto gpu = [&g](uint64_t storage::TierStats::*field) -> std::optional<uint64_t> {
    if (!g.has_value()) return std::nullopt;
    return (*g).*field;
  };
  const TierMetric tier_metrics[] = {
      {"kvhub_tier_capacity_bytes", "gauge", "bytes the tier may hold", st.capacity_bytes,
       g.has_value() && g->gpu_off ? std::optional<uint64_t>(0)  // switched off: holds nothing more (as Stats)
                                   : gpu(&storage::TierStats::gpu_capacity_bytes)},
      {"kvhub_tier_used_bytes", "gauge", "bytes of committed blocks", st.used_bytes,
       gpu(&storage::TierStats::gpu_used_bytes)},
      {"kvhub_tier_reserved_bytes", "gauge", "bytes of uncommitted reservations", st.reserved_bytes},
      {"kvhub_tier_blocks", "gauge", "committed blocks", st.blocks, gpu(&storage::TierStats::gpu_blocks)},
      {"kvhub_tier_pinned_blocks", "gauge", "pinned blocks", st.pinned_blocks},
      {"kvhub_tier_leased_blocks", "gauge", "blocks under a read lease", st.leased_blocks},
      {"kvhub_tier_evictions_total", "counter", "blocks evicted", st.evictions,
       gpu(&storage::TierStats::gpu_evictions)},
      {"kvhub_tier_evicted_bytes_total", "counter", "bytes evicted", st.evicted_bytes},
      {"kvhub_tier_rejected_full_total", "counter", "reservations refused: nothing evictable", st.rejected_full},
      {"kvhub_tier_rejected_quota_total", "counter", "reservations refused: the namespace's quota (namespace_quota_bytes)",
       st.rejected_quota},
      {"kvhub_tier_rejected_pin_quota_total", "counter", "pins refused: the pinned share of the tier (max_pinned_fraction)",
       st.rejected_pin_quota},
  };
  for (const TierMetric& tm : tier_metrics) {
    Header(&out, tm.name, tm.type, tm.help);
    absl::StrAppend(&out, tm.name, "{tier=\"host\"} ", tm.value, "\n");
    if (tm.gpu.has_value()) absl::StrAppend(&out, tm.name, "{tier=\"gpu\"} ", *tm.gpu, "\n");
  }
  if (g.has_value()) {
    const TierMetric gpu_metrics[] = {
        {"kvhub_gpu_tier_copied_total", "counter", "published blocks copied to the gpu tier", g->mirrored},
        {"kvhub_gpu_tier_copy_dropped_total", "counter",
         "published blocks not copied: copy queue full, or evicted/deleted before their turn", g->mirror_dropped},
        {"kvhub_gpu_tier_copy_failed_total", "counter", "copies the gpu tier failed", g->mirror_failed},
        {"kvhub_gpu_tier_promotions_total", "counter",
         "blocks evicted from the host tier served again from their gpu copy", g->promotions},
        {"kvhub_gpu_tier_promotion_failures_total", "counter",
         "gpu copies that could not be put back (host full, or checksum mismatch)", g->promotion_failures},
        {"kvhub_gpu_tier_checksum_failures_total", "counter", "gpu copies dropped for a checksum mismatch",
         g->gpu_checksum_failures},
        {"kvhub_gpu_tier_device_errors_total", "counter",
         "gpu tier device calls that failed (copies either way, erases)", g->device_errors},
        {"kvhub_gpu_tier_serving", "gauge",
         "1 while the gpu tier copies and serves blocks; 0 once switched off for a hung or failing device "
         "(host tier only until restart; the log says why)",
         g->gpu_off ? 0u : 1u},
    };
    for (const TierMetric& tm : gpu_metrics) {
      Header(&out, tm.name, tm.type, tm.help);
      absl::StrAppend(&out, tm.name, " ", tm.value, "\n");
    }
  }
  Header(&out, "kvhub_checksum_failures_total", "counter", "commits whose bytes failed the XXH3-64 check");
  absl::StrAppend(&out, "kvhub_checksum_failures_total ", st.checksum_failures, "\n");
  Header(&out, "kvhub_reservations_expired_total", "counter", "uncommitted reservations reclaimed");
  absl::StrAppend(&out, "kvhub_reservations_expired_total ", st.reservations_expired, "\n");
  Header(&out, "kvhub_leases_expired_total", "counter", "leases that ran out before Release");
  absl::StrAppend(&out, "kvhub_leases_expired_total ", st.leases_expired, "\n");
  Header(&out, "kvhub_reservations_live", "gauge", "reservations open for PutData/PutCommit");
  absl::StrAppend(&out, "kvhub_reservations_live ", in.live_reservations, "\n");
  Header(&out, "kvhub_stalled_sends_cancelled_total", "counter",
         "Get/GetStream calls cancelled because their response made no progress for stalled_send_ms");
  absl::StrAppend(&out, "kvhub_stalled_sends_cancelled_total ", in.stalled_sends_cancelled, "\n");

  Header(&out, "kvhub_transport_bytes_total", "counter",
         "block bytes moved by this shard per data plane (grpc messages; ucx active messages it served; "
         "one-sided RDMA is invisible to the shard)");
  absl::StrAppend(&out, "kvhub_transport_bytes_total{transport=\"grpc\",direction=\"get\"} ", grpc_get_bytes(), "\n");
  absl::StrAppend(&out, "kvhub_transport_bytes_total{transport=\"grpc\",direction=\"put\"} ", grpc_put_bytes(), "\n");
  absl::StrAppend(&out, "kvhub_transport_bytes_total{transport=\"ucx\",direction=\"get\"} ", in.ucx_get_bytes, "\n");
  absl::StrAppend(&out, "kvhub_transport_bytes_total{transport=\"ucx\",direction=\"put\"} ", in.ucx_put_bytes, "\n");

  if (in.ucx_accepting.has_value()) {
    Header(&out, "kvhub_ucx_accepting", "gauge",
           "1 when a client's UCX Connect can succeed; 0 when UCX is enabled but refused (it failed to start, or "
           "its address vetter is gone): clients then use gRPC until kvhubd restarts");
    absl::StrAppend(&out, "kvhub_ucx_accepting ", *in.ucx_accepting ? 1 : 0, "\n");
  }
  Header(&out, "kvhub_ucx_connections", "gauge", "UCX connections (Connect) this shard holds now");
  absl::StrAppend(&out, "kvhub_ucx_connections ", in.ucx_connections, "\n");
  Header(&out, "kvhub_ucx_sessions", "gauge",
         "UCX connections watched by a client's Session stream (closed when the client goes)");
  absl::StrAppend(&out, "kvhub_ucx_sessions ", in.ucx_sessions, "\n");
  Header(&out, "kvhub_ucx_worker_resets_total", "counter",
         "UCX workers replaced because they stopped receiving over shared memory (a client killed mid-send)");
  absl::StrAppend(&out, "kvhub_ucx_worker_resets_total ", in.ucx_worker_resets, "\n");
  Header(&out, "kvhub_ucx_refused_addresses_total", "counter",
         "client UCX worker addresses refused at Connect because they crashed or hung a probe process");
  absl::StrAppend(&out, "kvhub_ucx_refused_addresses_total ", in.ucx_refused_addresses, "\n");
  Header(&out, "kvhub_ucx_unreachable_addresses_total", "counter",
         "client UCX worker addresses refused at Connect because a probe process could not connect to them "
         "(a network mismatch between client and shard)");
  absl::StrAppend(&out, "kvhub_ucx_unreachable_addresses_total ", in.ucx_unreachable_addresses, "\n");
  Header(&out, "kvhub_ucx_unknown_conn_requests_total", "counter",
         "UCX requests dropped unanswered: no open connection has the id and key their header names (a client "
         "whose connection closed, or a peer on the UCX port that was never given the key)");
  absl::StrAppend(&out, "kvhub_ucx_unknown_conn_requests_total ", in.ucx_unknown_conn_requests, "\n");
  Header(&out, "kvhub_ucx_busy_conn_requests_total", "counter",
         "UCX get and put requests refused (RESOURCE_EXHAUSTED) because their connection had its transfers in "
         "flight (16384 answers its peer had not taken yet)");
  absl::StrAppend(&out, "kvhub_ucx_busy_conn_requests_total ", in.ucx_busy_conn_requests, "\n");
  if (in.auth_on) {
    Header(&out, "kvhub_auth_tokens", "gauge", "bearer tokens in force (auth_tokens_file)");
    absl::StrAppend(&out, "kvhub_auth_tokens ", in.auth_tokens, "\n");
    Header(&out, "kvhub_auth_reloads_total", "counter",
           "reloads of auth_tokens_file (SIGHUP or a change seen by auth_reload_ms): installed a changed file, or "
           "failed and kept the tokens in force");
    absl::StrAppend(&out, "kvhub_auth_reloads_total{result=\"installed\"} ", in.auth_reloads, "\n");
    absl::StrAppend(&out, "kvhub_auth_reloads_total{result=\"failed\"} ", in.auth_reload_failures, "\n");
  }
  if (in.tls_on) {
    Header(&out, "kvhub_tls_certificate_expiry_timestamp_seconds", "gauge",
           "when the certificate served to new gRPC connections expires (Unix seconds)");
    absl::StrAppend(&out, "kvhub_tls_certificate_expiry_timestamp_seconds ", absl::ToUnixSeconds(in.tls_not_after),
                    "\n");
    Header(&out, "kvhub_tls_reloads_total", "counter",
           "changed TLS files (SIGHUP or tls_reload_ms): installed for new connections, or failed (unreadable, not "
           "PEM, key not the certificate's) and kept the set in force");
    absl::StrAppend(&out, "kvhub_tls_reloads_total{result=\"installed\"} ", in.tls_reloads, "\n");
    absl::StrAppend(&out, "kvhub_tls_reloads_total{result=\"failed\"} ", in.tls_reload_failures, "\n");
  }

  Header(&out, "kvhub_rpc_requests_total", "counter", "finished RPCs by method and status code");
  for (int r = 0; r < static_cast<int>(Rpc::kCount); ++r) {
    for (int c = 0; c <= 16; ++c) {
      uint64_t v = rpcs_[r].codes[c].load(std::memory_order_relaxed);
      if (v == 0) continue;
      absl::StrAppend(&out, "kvhub_rpc_requests_total{method=\"", kRpcNames[r], "\",code=\"", kCodeNames[c],
                      "\"} ", v, "\n");
    }
  }
  Header(&out, "kvhub_rpc_latency_seconds", "histogram", "server handler latency per RPC");
  for (int r = 0; r < static_cast<int>(Rpc::kCount); ++r) {
    rpcs_[r].latency.Render(&out, "kvhub_rpc_latency_seconds", absl::StrCat("method=\"", kRpcNames[r], "\""));
  }
  return out;
}

}  // namespace kvhub::cachesvc
