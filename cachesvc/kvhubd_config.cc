#include "cachesvc/kvhubd_config.h"

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <functional>
#include <type_traits>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/input_file.h"
#include "common/log.h"
#include "common/memory_limit.h"
#include "common/ucx_net_devices.h"

namespace kvhub::cachesvc {
namespace {

absl::StatusOr<bool> ParseBool(absl::string_view v) {
  std::string s = absl::AsciiStrToLower(v);
  if (s == "true" || s == "1" || s == "yes" || s == "on") return true;
  if (s == "false" || s == "0" || s == "no" || s == "off") return false;
  return absl::InvalidArgumentError(absl::StrCat("'", v, "' is not a boolean (true/false)"));
}

absl::StatusOr<int64_t> ParseInt(absl::string_view v) {
  int64_t x = 0;
  if (!absl::SimpleAtoi(v, &x)) {
    return absl::InvalidArgumentError(absl::StrCat("'", v, "' is not an integer"));
  }
  return x;
}

// The shortest text that reads back as `x` (StrCat's six digits printed
// high_watermark = 0.9999995 as 1, which --print_config then handed on as 1).
std::string ShortestDouble(double x) {
  char buf[64];
  const std::to_chars_result r = std::to_chars(buf, buf + sizeof(buf), x);
  return r.ec == std::errc() ? std::string(buf, r.ptr) : absl::StrCat(x);
}

absl::StatusOr<double> ParseDouble(absl::string_view v) {
  double x = 0;
  if (!absl::SimpleAtod(v, &x)) {
    return absl::InvalidArgumentError(absl::StrCat("'", v, "' is not a number"));
  }
  return x;
}

absl::StatusOr<absl::Duration> ParseMillis(absl::string_view v) {
  auto x = ParseInt(v);
  if (!x.ok()) return x.status();
  if (*x < 0) return absl::InvalidArgumentError(absl::StrCat("'", v, "' must be >= 0 ms"));
  return absl::Milliseconds(*x);
}

std::string Millis(absl::Duration d) { return absl::StrCat(absl::ToInt64Milliseconds(d)); }

// namespace_quotas: "NS:SIZE,NS:SIZE" (the size after each entry's last ':'; SIZE
// as ParseByteSize, 0 = no quota for NS). Empty text: no per-namespace quotas.
absl::StatusOr<std::vector<storage::BlockStoreConfig::NamespaceQuota>> ParseNamespaceQuotas(absl::string_view v) {
  std::vector<storage::BlockStoreConfig::NamespaceQuota> out;
  if (absl::StripAsciiWhitespace(v).empty()) return out;
  for (absl::string_view entry : absl::StrSplit(v, ',')) {
    entry = absl::StripAsciiWhitespace(entry);
    const size_t colon = entry.rfind(':');
    if (colon == absl::string_view::npos || colon == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("'", entry, "' is not NAMESPACE:SIZE (e.g. tenant-a:100GiB; 0 = no quota)"));
    }
    auto bytes = ParseByteSize(entry.substr(colon + 1));
    if (!bytes.ok()) return absl::InvalidArgumentError(absl::StrCat("'", entry, "': ", bytes.status().message()));
    const absl::string_view ns = entry.substr(0, colon);
    if (ns != absl::StripAsciiWhitespace(ns)) {  // "a :1GiB" would quota a namespace "a "
      return absl::InvalidArgumentError(absl::StrCat("'", entry, "': spaces around the namespace"));
    }
    out.push_back({std::string(ns), *bytes});
  }
  return out;
}

std::string NamespaceQuotasText(const std::vector<storage::BlockStoreConfig::NamespaceQuota>& quotas) {
  std::string s;
  for (const auto& q : quotas) absl::StrAppend(&s, s.empty() ? "" : ",", q.ns, ":", q.bytes);
  return s;
}

struct KeyOps {
  KvhubdConfig::KeyInfo info;
  std::function<absl::Status(KvhubdConfig&, absl::string_view)> set;
  std::function<std::string(const KvhubdConfig&)> get;
};

template <typename T, typename P>
absl::Status Assign(T* field, absl::StatusOr<P> parsed) {
  if (!parsed.ok()) return parsed.status();
  if constexpr (std::is_integral_v<T> && std::is_integral_v<P> && !std::is_same_v<T, bool> &&
                !std::is_same_v<P, bool>) {
    if (!std::in_range<T>(*parsed)) {
      return absl::InvalidArgumentError(absl::StrCat(*parsed, " is out of range"));
    }
  }
  *field = static_cast<T>(*parsed);
  return absl::OkStatus();
}

#define KVHUB_STR_KEY(name, field, help)                                                     \
  KeyOps{{name, help},                                                                       \
         [](KvhubdConfig& c, absl::string_view v) {                                          \
           c.field = std::string(v);                                                         \
           return absl::OkStatus();                                                          \
         },                                                                                  \
         [](const KvhubdConfig& c) { return std::string(c.field); }}
#define KVHUB_SIZE_KEY(name, field, help)                                                        \
  KeyOps{{name, help},                                                                           \
         [](KvhubdConfig& c, absl::string_view v) { return Assign(&c.field, ParseByteSize(v)); }, \
         [](const KvhubdConfig& c) { return absl::StrCat(c.field); }}
#define KVHUB_INT_KEY(name, field, help)                                                    \
  KeyOps{{name, help},                                                                      \
         [](KvhubdConfig& c, absl::string_view v) { return Assign(&c.field, ParseInt(v)); }, \
         [](const KvhubdConfig& c) { return absl::StrCat(c.field); }}
#define KVHUB_DOUBLE_KEY(name, field, help)                                                    \
  KeyOps{{name, help},                                                                         \
         [](KvhubdConfig& c, absl::string_view v) { return Assign(&c.field, ParseDouble(v)); }, \
         [](const KvhubdConfig& c) { return ShortestDouble(c.field); }}
#define KVHUB_BOOL_KEY(name, field, help)                                                    \
  KeyOps{{name, help},                                                                       \
         [](KvhubdConfig& c, absl::string_view v) { return Assign(&c.field, ParseBool(v)); }, \
         [](const KvhubdConfig& c) { return std::string(c.field ? "true" : "false"); }}
#define KVHUB_MS_KEY(name, field, help)                                                        \
  KeyOps{{name, help},                                                                         \
         [](KvhubdConfig& c, absl::string_view v) { return Assign(&c.field, ParseMillis(v)); }, \
         [](const KvhubdConfig& c) { return Millis(c.field); }}

const std::vector<KeyOps>& AllKeys() {
  static const auto* keys = new std::vector<KeyOps>{
      KVHUB_STR_KEY("grpc_address", grpc_address, "gRPC listen HOST:PORT (port 0 = ephemeral); default 127.0.0.1:7480"),
      KVHUB_STR_KEY("http_address", http_address, "HTTP metrics listen HOST:PORT (port 0 = ephemeral); default 127.0.0.1:7481"),
      KVHUB_STR_KEY("node_id", node_id, "node name; default <hostname>-<grpc port>"),
      KVHUB_SIZE_KEY("capacity_bytes", store.capacity_bytes, "host tier capacity; default min(25% of the memory limit, 4GiB)"),
      KVHUB_BOOL_KEY("check_memory_limit", check_memory_limit, "refuse a capacity_bytes above physical memory or the cgroup memory limit; default true"),
      KVHUB_SIZE_KEY("gpu_tier_bytes", gpu_tier_bytes, "gpu tier device bytes behind the host tier (copies of published blocks, served when the host tier evicted them); default 0 = off; > 0 needs a GPU"),
      KVHUB_SIZE_KEY("region_bytes", store.region_bytes, "size of each host memory region; default 1GiB (a smaller tier is one region of its own size)"),
      KVHUB_BOOL_KEY("try_hugepages", store.try_hugepages, "try MAP_HUGETLB for regions, plain pages when none are free; default true"),
      KVHUB_SIZE_KEY("max_block_bytes", store.max_block_bytes, "largest block accepted (<= 256MiB); default 64MiB"),
      KVHUB_SIZE_KEY("min_block_bytes", store.min_block_bytes, "smallest allocator size class; default 4096"),
      KVHUB_DOUBLE_KEY("high_watermark", store.high_watermark, "evict when used > high * capacity; default 0.98"),
      KVHUB_DOUBLE_KEY("low_watermark", store.low_watermark, "evict down to low * capacity; default 0.97"),
      KVHUB_MS_KEY("reservation_timeout_ms", store.reservation_timeout, "uncommitted reservations are reclaimed after (<= 3600000); default 30000"),
      KVHUB_MS_KEY("default_lease_ms", store.default_lease, "lease when a Get asks for 0; default 10000"),
      KVHUB_MS_KEY("max_lease_ms", store.max_lease, "longest lease granted (<= 600000); default 600000"),
      KVHUB_DOUBLE_KEY("max_pinned_fraction", store.max_pinned_fraction, "share of capacity pinned blocks may use; default 0.5"),
      KVHUB_SIZE_KEY("namespace_quota_bytes", store.namespace_quota_bytes, "block bytes one namespace may hold; 0 (default) = no quota"),
      KeyOps{{"namespace_quotas", "per-namespace quotas NS:SIZE,NS:SIZE overriding namespace_quota_bytes (0 = none for NS); default none"},
             [](KvhubdConfig& c, absl::string_view v) { return Assign(&c.store.namespace_quotas, ParseNamespaceQuotas(v)); },
             [](const KvhubdConfig& c) { return NamespaceQuotasText(c.store.namespace_quotas); }},
      // Checked when set, so the error names the file and line (or the flag) that set it.
      KeyOps{{"eviction_policy", "lru | s3fifo | as3fifo | duel; default s3fifo (docs/replay.md)"},
             [](KvhubdConfig& c, absl::string_view v) {
               // The name only (Validate would also judge s3fifo_small_ratio, set
               // on another line).
               storage::EvictionPolicyConfig e;
               e.name = std::string(v);
               if (absl::Status s = e.Validate(); !s.ok()) return s;
               c.store.eviction.name = std::string(v);
               return absl::OkStatus();
             },
             [](const KvhubdConfig& c) { return c.store.eviction.name; }},
      KVHUB_SIZE_KEY("slab_bytes", store.slab_bytes, "allocator slab; 0 = auto: bit_ceil(max_block_bytes) doubled while >= 64 slabs fit, at most region_bytes"),
      KVHUB_INT_KEY("size_class_steps", store.size_class_steps, "allocator size classes per power of two; default 8"),
      KVHUB_INT_KEY("max_blocks", store.max_blocks, "block slot table size; 0 = auto: capacity / min_block_bytes, at most 4M"),
      KVHUB_INT_KEY("max_leases", store.max_leases, "live leases at once (preallocated); default 262144"),
      KVHUB_BOOL_KEY("populate", store.populate, "MAP_POPULATE the regions at start; default false"),
      KVHUB_BOOL_KEY("eviction_prefix_aware", store.eviction.prefix_aware, "evict chain leaves before parents; default false (measured worse: docs/results-replay.md)"),
      KVHUB_DOUBLE_KEY("s3fifo_small_ratio", store.eviction.s3fifo_small_ratio, "S3-FIFO small queue share; default 0.1"),
      KVHUB_INT_KEY("worker_threads", worker_threads, "no effect with gRPC 1.51 (its callback server sizes its own threads; kvhubd warns when set); default 0"),
      KVHUB_MS_KEY("expiry_interval_ms", expiry_interval, "expiry sweep period (it also runs as often as auth_reload_ms, tls_reload_ms, stalled_send_ms and ucx_session_grace_ms need); default 1000"),
      KVHUB_MS_KEY("drain_grace_ms", drain_grace, "on SIGTERM, readyz=503 this long before stopping; default 0"),
      KVHUB_MS_KEY("shutdown_timeout_ms", shutdown_timeout, "deadline for in-flight calls at shutdown; default 10000"),
      KVHUB_SIZE_KEY("get_stream_chunk_bytes", get_stream_chunk_bytes, "GetStream chunk size; default 1MiB"),
      KVHUB_MS_KEY("stalled_send_ms", stalled_send_timeout, "a Get/GetStream response that makes no progress for this long is cancelled (1000..3600000); default 60000"),
      KVHUB_SIZE_KEY("grpc_memory_bytes", grpc_memory_bytes, "gRPC's memory for messages in flight (64MiB..64GiB); beyond it streams are cancelled; default 1GiB"),
      KVHUB_MS_KEY("grpc_handshake_timeout_ms", grpc_handshake_timeout, "a new gRPC connection that has not finished its TLS and HTTP/2 handshake by then is closed (100..120000); default 10000"),
      KVHUB_INT_KEY("metrics_max_namespaces", metrics_max_namespaces, "distinct namespace labels before folding into 'other'; default 64"),
      KVHUB_INT_KEY("metrics_max_models", metrics_max_models, "distinct model labels per namespace before folding into 'other'; default 16"),
      KVHUB_STR_KEY("log_level", log_level, "trace|debug|info|warn|error|critical|off; default info"),
      KVHUB_STR_KEY("ready_file", ready_file, "also write the ready line to this file; default none"),
      KVHUB_BOOL_KEY("ucx_enabled", ucx_enabled, "serve the UCX data plane (Connect RPC); default true"),
      KVHUB_STR_KEY("ucx_tls", ucx_tls, "UCX_TLS passthrough, e.g. tcp, rc,tcp, posix,cma; default: UCX picks tcp/RDMA"),
      KVHUB_STR_KEY("ucx_net_devices", ucx_net_devices, "UCX_NET_DEVICES passthrough (lo, eth0,mlx5_0:1, all); auto: lo when grpc_address is loopback, else UCX's default; default auto"),
      KVHUB_BOOL_KEY("ucx_shm_regions", ucx_shm_regions, "shared memory in ucx_tls: UCX allocates the host regions so local clients use one-sided RMA; default true"),
      KVHUB_MS_KEY("ucx_probe_ms", ucx_probe_interval, "posix, sysv or sm in ucx_tls: ping the shard's own UCX worker over shared memory this often and replace it when it stops receiving (a client killed mid-send); 0 = off; default 1000"),
      KVHUB_BOOL_KEY("ucx_vet_addresses", ucx_vet_addresses, "try each client's UCX worker address in a throwaway process before using it; one that crashes UCX there is refused instead of taking the shard down; default true"),
      KVHUB_MS_KEY("ucx_session_grace_ms", ucx_session_grace, "close a UCX connection no Session watches this long after Connect; 0 = keep it; default 10000"),
      KVHUB_STR_KEY("auth_tokens_file", auth_tokens_file, "bearer tokens and their namespaces (docs/operations.md); default none: no authentication"),
      KVHUB_MS_KEY("auth_reload_ms", auth_reload_interval, "re-read auth_tokens_file this often and put a changed file in force (SIGHUP: at once); 0 = only on SIGHUP; default 10000"),
      KVHUB_STR_KEY("tls_cert_file", tls_cert_file, "PEM certificate chain: gRPC over TLS; default none (plaintext)"),
      KVHUB_STR_KEY("tls_key_file", tls_key_file, "PEM private key of tls_cert_file"),
      KVHUB_STR_KEY("tls_client_ca_file", tls_client_ca_file, "PEM CA bundle: require client certificates it signed (mTLS); default none"),
      KVHUB_MS_KEY("tls_reload_ms", tls_reload_interval, "re-read the TLS files this often; new connections use a changed certificate, key or client CA; 1000..86400000; default 60000"),
  };
  return *keys;
}

}  // namespace

absl::StatusOr<uint64_t> ParseByteSize(absl::string_view text) {
  absl::string_view t = absl::StripAsciiWhitespace(text);
  size_t i = 0;
  while (i < t.size() && absl::ascii_isdigit(static_cast<unsigned char>(t[i]))) ++i;
  if (i == 0) {
    return absl::InvalidArgumentError(absl::StrCat("'", text, "' is not a byte size (e.g. 4096, 64MiB, 4GiB)"));
  }
  uint64_t n = 0;
  if (!absl::SimpleAtoi(t.substr(0, i), &n)) {
    return absl::InvalidArgumentError(absl::StrCat("'", text, "' is out of range"));
  }
  std::string suffix = absl::AsciiStrToLower(absl::StripAsciiWhitespace(t.substr(i)));
  int shift = -1;
  if (suffix.empty() || suffix == "b") shift = 0;
  else if (suffix == "k" || suffix == "kib" || suffix == "kb") shift = 10;
  else if (suffix == "m" || suffix == "mib" || suffix == "mb") shift = 20;
  else if (suffix == "g" || suffix == "gib" || suffix == "gb") shift = 30;
  else if (suffix == "t" || suffix == "tib" || suffix == "tb") shift = 40;
  if (shift < 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "'", text, "' is not a byte size: a whole number with an optional suffix B, KiB, MiB, GiB or TiB (",
        absl::StartsWith(suffix, ".") ? "no fractions: 1536MiB, not 1.5GiB" : "all binary multiples", ")"));
  }
  if (shift > 0 && n > (~uint64_t{0} >> shift)) {
    return absl::InvalidArgumentError(absl::StrCat("'", text, "' is out of range"));
  }
  return n << shift;
}

absl::Status ValidateListenAddress(absl::string_view address) {
  if (absl::StartsWith(address, "[") && absl::EndsWith(address, "]")) {
    return absl::InvalidArgumentError(absl::StrCat("'", address, "' has no port (e.g. '", address, ":7480')"));
  }
  size_t colon = address.rfind(':');
  if (colon == absl::string_view::npos || colon == 0) {
    return absl::InvalidArgumentError(absl::StrCat("'", address, "' is not HOST:PORT"));
  }
  absl::string_view host = address.substr(0, colon);
  if (host.front() == '[' && host.back() != ']') {
    return absl::InvalidArgumentError(absl::StrCat("'", address, "' has an unterminated [ipv6] host"));
  }
  if (host.front() != '[' && absl::StrContains(host, ':')) {
    return absl::InvalidArgumentError(
        absl::StrCat("'", address, "': an IPv6 host needs brackets, as in '[", host, "]", address.substr(colon), "'"));
  }
  int port = -1;
  if (!absl::SimpleAtoi(address.substr(colon + 1), &port) || port < 0 || port > 65535) {
    return absl::InvalidArgumentError(absl::StrCat("'", address, "' has a bad port (0..65535)"));
  }
  return absl::OkStatus();
}

KvhubdConfig KvhubdConfig::Defaults() { return DefaultsFor(ReadMemoryLimit().bytes); }

KvhubdConfig KvhubdConfig::DefaultsFor(uint64_t ram) {
  KvhubdConfig c;
  uint64_t cap = 4ull << 30;
  if (ram > 0) cap = std::min(cap, ram / 4);
  // Round down to whole MiB; keep at least 64 MiB.
  cap = std::max<uint64_t>(cap & ~((1ull << 20) - 1), 64ull << 20);
  c.store.capacity_bytes = cap;
  // region_bytes stays 1 GiB: a smaller tier maps one region of its own size. (It
  // was cut to this default capacity, whole MiB, which a later capacity_bytes did
  // not undo and the automatic slab size seldom divides: one slab for the tier.)
  return c;
}

absl::Status KvhubdConfig::CheckMemoryLimit(uint64_t limit_bytes, absl::string_view source,
                                            std::string* warning) const {
  if (warning != nullptr) warning->clear();
  const uint64_t cap = store.capacity_bytes;
  if (limit_bytes == 0 || cap <= limit_bytes / 10 * 9) return absl::OkStatus();
  const std::string limit = absl::StrCat(HumanBytes(limit_bytes), " (", source, ")");
  if (cap > limit_bytes) {
    std::string why = absl::StrCat("capacity_bytes ", HumanBytes(cap), " is more than this process may use: ",
                                   limit, "; the tier's memory is taken as it fills, so the node would be "
                                   "OOM-killed and lose every block");
    if (check_memory_limit) {
      return absl::FailedPreconditionError(
          absl::StrCat(why, ". Lower capacity_bytes, or set check_memory_limit=false to start anyway"));
    }
    if (warning != nullptr) *warning = absl::StrCat(why, " (check_memory_limit=false: starting anyway)");
    return absl::OkStatus();
  }
  if (warning != nullptr) {
    *warning = absl::StrCat("capacity_bytes ", HumanBytes(cap), " is above 90% of the memory limit ", limit,
                            "; the slot table, leases and gRPC buffers need room too");
  }
  return absl::OkStatus();
}

std::string KvhubdConfig::FewSlabsWarning() const {
  const uint64_t slab = store.EffectiveSlabBytes();
  if (slab == 0) return "";
  const uint64_t slabs = (store.capacity_bytes + slab - 1) / slab;
  if (slabs >= kFewSlabs) return "";
  return absl::StrCat("capacity_bytes ", HumanBytes(store.capacity_bytes), " holds only ", slabs, " allocator slab",
                      slabs == 1 ? "" : "s", " of ", HumanBytes(slab), " (sized for max_block_bytes ",
                      HumanBytes(store.max_block_bytes), "): at most ", slabs, " block size",
                      slabs == 1 ? "" : "s", " can be stored at once, and a pinned or leased block holds its slab. "
                      "Lower max_block_bytes to the largest block you store, or raise capacity_bytes");
}

std::string KvhubdConfig::PolicyMemoryWarning() const {
  if (store.eviction.name != "duel" || store.max_blocks != 0) return "";
  const uint64_t slots = store.EffectiveMaxBlocks();
  const uint64_t bytes = slots * kDuelBytesPerSlot;
  if (bytes * 50 <= store.capacity_bytes) return "";
  return absl::StrCat("eviction_policy duel keeps ~", kDuelBytesPerSlot, " B of state per block slot, and max_blocks "
                      "is auto (", slots, " slots = capacity_bytes / min_block_bytes): about ", HumanBytes(bytes),
                      " (", absl::StrFormat("%.1f", 100.0 * static_cast<double>(bytes) /
                                                        static_cast<double>(store.capacity_bytes)),
                      "% of capacity_bytes) on top of the tier. Set max_blocks to about twice the blocks the "
                      "tier will hold (capacity_bytes / your typical block size)");
}

bool KvhubdConfig::GrpcOnLoopback() const { return IsLoopbackHostPort(grpc_address); }

std::string KvhubdConfig::UcxNetDevices() const { return ResolveUcxNetDevices(ucx_net_devices, GrpcOnLoopback()); }

absl::Status KvhubdConfig::Validate() const {
  auto bad = [this](absl::string_view key, absl::string_view why) {
    const auto it = origins.find(std::string(key));
    return absl::InvalidArgumentError(
        absl::StrCat(it != origins.end() ? absl::StrCat(it->second, ": ") : "", "config ", key, ": ", why));
  };
  if (absl::Status s = ValidateListenAddress(grpc_address); !s.ok()) return bad("grpc_address", s.message());
  if (absl::Status s = ValidateListenAddress(http_address); !s.ok()) return bad("http_address", s.message());
  if (node_id.size() > 128) return bad("node_id", "longer than 128 bytes");
  // The files kvhubd re-reads (the security keys): "-" reads standard input, once;
  // every reload after it finds it at its end (or blocks on a terminal or a pipe).
  for (const KeyOps& k : AllKeys()) {
    if (TurnsSecurityOffWhenEmpty(k.info.key) && k.get(*this) == "-") {
      return bad(k.info.key, "'-' (standard input) cannot be read again at a reload; give a file");
    }
  }
  if (ready_file == "-") {
    // "-" is stdout to the output helpers: kvhubd prints the ready line there anyway,
    // and would print it twice (and unlink a file named "-" at start and exit).
    return bad("ready_file", "'-' is not a file (the ready line always goes to stdout)");
  }
  for (char ch : node_id) {
    if (!absl::ascii_isalnum(static_cast<unsigned char>(ch)) && ch != '-' && ch != '_' && ch != '.' && ch != ':') {
      return bad("node_id", "may hold only letters, digits and - _ . :");
    }
  }
  if (store.max_block_bytes > kHardMaxBlockBytes) {
    return bad("max_block_bytes", absl::StrCat(store.max_block_bytes, " exceeds the hard cap of 256MiB"));
  }
  if (store.max_lease > absl::Milliseconds(600000)) return bad("max_lease_ms", "exceeds 600000 (the API limit)");
  if (store.default_lease > store.max_lease) return bad("default_lease_ms", "exceeds max_lease_ms");
  if (store.reservation_timeout <= absl::ZeroDuration()) return bad("reservation_timeout_ms", "must be > 0");
  if (store.reservation_timeout > absl::Hours(1)) return bad("reservation_timeout_ms", "exceeds 3600000 (1 hour)");
  if (worker_threads < 0 || worker_threads > 1024) return bad("worker_threads", "must be in 0..1024");
  if (expiry_interval < absl::Milliseconds(1) || expiry_interval > absl::Hours(1)) {
    return bad("expiry_interval_ms", "must be in 1..3600000");
  }
  if (drain_grace > absl::Minutes(10)) return bad("drain_grace_ms", "must be <= 600000");
  if (shutdown_timeout > absl::Minutes(10)) return bad("shutdown_timeout_ms", "must be <= 600000");
  if (grpc_memory_bytes < (64ull << 20) || grpc_memory_bytes > (64ull << 30)) {
    return bad("grpc_memory_bytes", "must be in 64MiB..64GiB");
  }
  if (grpc_handshake_timeout < absl::Milliseconds(100) || grpc_handshake_timeout > absl::Minutes(2)) {
    return bad("grpc_handshake_timeout_ms", "must be in 100..120000");
  }
  if (stalled_send_timeout < absl::Seconds(1) || stalled_send_timeout > absl::Hours(1)) {
    return bad("stalled_send_ms", "must be in 1000..3600000");
  }
  if (get_stream_chunk_bytes < 4096 || get_stream_chunk_bytes > (64ull << 20)) {
    return bad("get_stream_chunk_bytes", "must be in 4KiB..64MiB");
  }
  if (metrics_max_namespaces < 1 || metrics_max_namespaces > 4096) {
    return bad("metrics_max_namespaces", "must be in 1..4096");
  }
  if (metrics_max_models < 1 || metrics_max_models > 1024) return bad("metrics_max_models", "must be in 1..1024");
  // Lookup series are dense, (namespaces + 1) x (models + 1), each walked by every
  // scrape: 4096 x 1024 was 168 MB of counters and seconds per scrape.
  if (int64_t{metrics_max_namespaces} * metrics_max_models > 65536) {
    return bad("metrics_max_models", "times metrics_max_namespaces must be at most 65536");
  }
  if (!IsLogLevel(log_level)) {
    return bad("log_level", absl::StrCat("'", log_level, "' is not trace|debug|info|warn|error|critical|off"));
  }
  if (ucx_tls.size() > 256 ||
      std::any_of(ucx_tls.begin(), ucx_tls.end(), [](char c) { return !(isalnum(c) || c == ',' || c == '_' || c == '^'); })) {
    return bad("ucx_tls", "must be <= 256 chars of [A-Za-z0-9_,^] (a UCX_TLS list such as tcp or rc,tcp)");
  }
  if (absl::Status s = ValidateUcxNetDevices(ucx_net_devices); !s.ok()) {
    return bad("ucx_net_devices", absl::StripPrefix(s.message(), "ucx_net_devices "));
  }
  if (ucx_probe_interval != absl::ZeroDuration() &&
      (ucx_probe_interval < absl::Milliseconds(50) || ucx_probe_interval > absl::Minutes(10))) {
    return bad("ucx_probe_ms", "must be 0 (off) or in 50..600000");
  }
  if (ucx_session_grace != absl::ZeroDuration() &&
      (ucx_session_grace < absl::Seconds(1) || ucx_session_grace > absl::Hours(1))) {
    return bad("ucx_session_grace_ms", "must be 0 (keep) or in 1000..3600000");
  }
  if (auth_reload_interval != absl::ZeroDuration() &&
      (auth_reload_interval < absl::Milliseconds(100) || auth_reload_interval > absl::Hours(24))) {
    return bad("auth_reload_ms", "must be 0 (only on SIGHUP) or in 100..86400000");
  }
  if (tls_cert_file.empty() != tls_key_file.empty()) {
    return bad(tls_cert_file.empty() ? "tls_cert_file" : "tls_key_file",
               "TLS needs both tls_cert_file and tls_key_file");
  }
  if (tls_reload_interval < absl::Seconds(1) || tls_reload_interval > absl::Hours(24)) {
    return bad("tls_reload_ms", "must be in 1000..86400000");
  }
  if (!tls_client_ca_file.empty() && tls_cert_file.empty()) {
    return bad("tls_client_ca_file", "client certificates (mTLS) need TLS: set tls_cert_file and tls_key_file");
  }
  if (absl::Status s = store.Validate(); !s.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("config (block store): ", s.message()));
  }
  return absl::OkStatus();
}

bool TurnsSecurityOffWhenEmpty(absl::string_view key) {
  return key == "auth_tokens_file" || key == "tls_cert_file" || key == "tls_key_file" || key == "tls_client_ca_file";
}

absl::Status KvhubdConfig::Set(absl::string_view key, absl::string_view value) {
  for (const KeyOps& k : AllKeys()) {
    if (key == k.info.key) {
      absl::Status s = k.set(*this, absl::StripAsciiWhitespace(value));
      if (!s.ok()) return absl::InvalidArgumentError(absl::StrCat(key, ": ", s.message()));
      return absl::OkStatus();
    }
  }
  return absl::InvalidArgumentError(absl::StrCat("unknown config key '", key, "'"));
}

absl::Status KvhubdConfig::ApplyText(absl::string_view text, absl::string_view origin) {
  absl::ConsumePrefix(&text, "\xEF\xBB\xBF");  // a UTF-8 byte order mark, as some editors write
  int line_no = 0;
  absl::flat_hash_map<std::string, int> seen;  // key -> the line that set it
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_no;
    // A comment starts at a '#' that begins the line or follows a space or tab; a
    // '#' inside a value stays (a path like /run/secrets/kv#1 was cut to
    // /run/secrets/kv without a word).
    for (size_t hash = line.find('#'); hash != absl::string_view::npos; hash = line.find('#', hash + 1)) {
      if (hash == 0 || line[hash - 1] == ' ' || line[hash - 1] == '\t') {
        line = line.substr(0, hash);
        break;
      }
    }
    line = absl::StripAsciiWhitespace(line);
    if (line.empty()) continue;
    size_t eq = line.find('=');
    if (eq == absl::string_view::npos) {
      return absl::InvalidArgumentError(absl::StrCat(origin, ":", line_no, ": expected 'key = value', got '", line, "'"));
    }
    absl::string_view key = absl::StripAsciiWhitespace(line.substr(0, eq));
    absl::string_view value = absl::StripAsciiWhitespace(line.substr(eq + 1));
    if (auto [it, fresh] = seen.emplace(std::string(key), line_no); !fresh) {
      return absl::InvalidArgumentError(
          absl::StrCat(origin, ":", line_no, ": ", key, " is already set on line ", it->second));
    }
    if (value.empty() && TurnsSecurityOffWhenEmpty(key)) {
      // A template rendered with an unset variable ("auth_tokens_file = ${TOKENS}")
      // must not start a shard without authentication or TLS.
      return absl::InvalidArgumentError(absl::StrCat(origin, ":", line_no, ": ", key,
                                                     " is empty; leave the key out (or comment it) to run without it"));
    }
    if (absl::Status s = Set(key, value); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(origin, ":", line_no, ": ", s.message()));
    }
    origins[std::string(key)] = absl::StrCat(origin, ":", line_no);
  }
  return absl::OkStatus();
}

absl::Status KvhubdConfig::ApplyFile(const std::string& path) {
  absl::StatusOr<std::string> text = ReadInput(path, kMaxConfigFileBytes);
  if (!text.ok()) {
    return absl::Status(text.status().code(), absl::StrCat("config file: ", text.status().message()));
  }
  return ApplyText(*text, path);
}

const std::vector<KvhubdConfig::KeyInfo>& KvhubdConfig::Keys() {
  static const auto* infos = [] {
    auto* v = new std::vector<KeyInfo>();
    for (const KeyOps& k : AllKeys()) v->push_back(k.info);
    return v;
  }();
  return *infos;
}

std::string KvhubdConfig::ToText() const {
  std::string out;
  for (const KeyOps& k : AllKeys()) {
    const std::string v = k.get(*this);
    // An empty security key is refused by ApplyText: unset, it is shown commented out.
    absl::StrAppend(&out, v.empty() && TurnsSecurityOffWhenEmpty(k.info.key) ? "# " : "", k.info.key, " = ", v, "\n");
  }
  return out;
}

}  // namespace kvhub::cachesvc
