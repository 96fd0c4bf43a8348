#include "transport/ucx_context.h"

#include <algorithm>
#include <atomic>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>

#include <ucs/debug/log_def.h>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/time/clock.h"
#include "common/log.h"

namespace kvhub::transport {

absl::Status UcsToStatus(ucs_status_t st, absl::string_view what) {
  if (st == UCS_OK) return absl::OkStatus();
  const std::string msg = absl::StrCat(what, ": ", ucs_status_string(st));
  switch (st) {
    case UCS_ERR_TIMED_OUT:
    case UCS_ERR_ENDPOINT_TIMEOUT:
      return absl::DeadlineExceededError(msg);
    case UCS_ERR_CANCELED:
      return absl::CancelledError(msg);
    case UCS_ERR_INVALID_PARAM:
      return absl::InvalidArgumentError(msg);
    case UCS_ERR_NO_MEMORY:
    case UCS_ERR_EXCEEDS_LIMIT:
      return absl::ResourceExhaustedError(msg);
    case UCS_ERR_UNSUPPORTED:
      return absl::UnimplementedError(msg);
    case UCS_ERR_UNREACHABLE:
    case UCS_ERR_CONNECTION_RESET:
    case UCS_ERR_NOT_CONNECTED:
    case UCS_ERR_REJECTED:
    case UCS_ERR_NO_DEVICE:
    case UCS_ERR_NO_RESOURCE:
    case UCS_ERR_IO_ERROR:
      return absl::UnavailableError(msg);
    case UCS_ERR_SHMEM_SEGMENT:
      // Shared memory (posix/sysv) attaches a peer's segments on first use; that
      // fails once the peer has died (kvhub-stress: a shard killed while a client
      // sent it a call). A dead peer, as on the network.
      return absl::UnavailableError(
          absl::StrCat(msg, " (the peer's shared memory cannot be attached: the peer died or restarted)"));
    default:
      return absl::InternalError(msg);
  }
}

namespace {

// UCX prints its own log lines to stdout by default, which is where kvhubd's
// ready line and the tools' tables go. This handler sends them to kvhub's log
// (stderr) at the matching level instead, and stops UCX's default printer.
ucs_log_func_rc_t ToKvhubLog(const char* file, unsigned line, const char* function, ucs_log_level_t level,
                             const ucs_log_component_config_t* comp, const char* message, va_list ap) {
  char text[512];
  std::vsnprintf(text, sizeof(text), message, ap);
  const char* base = file != nullptr ? std::strrchr(file, '/') : nullptr;
  base = base != nullptr ? base + 1 : (file != nullptr ? file : "?");
  // Transport selection (select.c) reports a failed ucp_ep_create as an ERROR,
  // but UcxWorker probes: it asks for peer failure detection first and retries
  // without it on shared memory, and reports a real failure itself (UNAVAILABLE,
  // with UCX's reason). Keep those lines for debugging only.
  if (std::strcmp(base, "select.c") == 0 && (level == UCS_LOG_LEVEL_ERROR || level == UCS_LOG_LEVEL_WARN)) {
    level = UCS_LOG_LEVEL_DEBUG;
  }
  // A message for a handler this context did not install (UCX's software RMA
  // aimed at a context without RMA: UcxConfig::rma) is dropped by UCX, which warns
  // with the payload in hex and a backtrace. One line says it, at most once a second
  // with a count of the rest (a peer could send many); that dump is debug.
  thread_local bool in_dropped_message_dump = false;
  if (std::strcmp(base, "uct_iface.c") == 0 && level == UCS_LOG_LEVEL_WARN &&
      std::strstr(text, "no handler installed") != nullptr) {
    in_dropped_message_dump = true;
    static std::atomic<int64_t> last_ns{0};
    static std::atomic<uint64_t> unlogged{0};
    const int64_t now = absl::GetCurrentTimeNanos();
    int64_t last = last_ns.load();
    if (now - last >= 1'000'000'000 && last_ns.compare_exchange_strong(last, now)) {
      KVHUB_LOG(warn, "ucx: dropped a message from a peer: {} (RMA or another request this process does not "
                "serve: a peer that is not a kvhub client, or one configured to use RMA; {} more since the last "
                "such line)", text, unlogged.exchange(0));
    } else {
      unlogged.fetch_add(1);
    }
    return UCS_LOG_FUNC_RC_STOP;
  }
  if (in_dropped_message_dump && level == UCS_LOG_LEVEL_WARN &&
      (std::strcmp(base, "uct_iface.c") == 0 || std::strcmp(base, "log.c") == 0)) {
    level = UCS_LOG_LEVEL_DEBUG;  // its payload dump and backtrace
  } else {
    in_dropped_message_dump = false;
  }
  switch (level) {
    case UCS_LOG_LEVEL_FATAL:
    case UCS_LOG_LEVEL_ERROR:
      KVHUB_LOG(error, "ucx {}:{}: {}", base, line, text);
      break;
    case UCS_LOG_LEVEL_WARN:
      KVHUB_LOG(warn, "ucx {}:{}: {}", base, line, text);
      break;
    case UCS_LOG_LEVEL_DIAG:
    case UCS_LOG_LEVEL_INFO:
      KVHUB_LOG(info, "ucx {}:{}: {}", base, line, text);
      break;
    default:
      KVHUB_LOG(debug, "ucx {}:{}: {}", base, line, text);
      break;
  }
  return UCS_LOG_FUNC_RC_STOP;
}

}  // namespace

absl::StatusOr<std::unique_ptr<UcxContext>> UcxContext::Create(const UcxConfig& config) {
  if (!config.enabled) return absl::FailedPreconditionError("ucx is disabled in the config");
  if (absl::Status s = config.Validate(); !s.ok()) return s;
  static std::once_flag log_handler;
  std::call_once(log_handler, [] { ucs_log_push_handler(&ToKvhubLog); });

  ucp_config_t* ucfg = nullptr;
  ucs_status_t st = ucp_config_read(nullptr, nullptr, &ucfg);
  if (st != UCS_OK) return UcsToStatus(st, "ucp_config_read");
  auto release_cfg = [&] { ucp_config_release(ucfg); };
  if (!config.tls.empty()) {
    st = ucp_config_modify(ucfg, "TLS", config.tls.c_str());
    if (st != UCS_OK) {
      release_cfg();
      return absl::InvalidArgumentError(absl::StrCat("ucx tls '", config.tls, "': ", ucs_status_string(st)));
    }
  }
  // Only when tcp may be used: without tcp no transport knows the option, and UCX
  // warns "invalid configuration" at every start.
  if (config.tcp_rx_segment_bytes != 0 && TlsMayUseTcp(config.tls) &&
      std::getenv("UCX_TCP_RX_SEG_SIZE") == nullptr) {
    // UCX 1.13 applies a transport's option set this way by its name inside the
    // transport's table, without the "TCP_" prefix ("TCP_RX_SEG_SIZE" is
    // accepted and silently ignored; measured). Only tcp has RX_SEG_SIZE.
    const std::string v = absl::StrCat(config.tcp_rx_segment_bytes);
    st = ucp_config_modify(ucfg, "RX_SEG_SIZE", v.c_str());
    if (st != UCS_OK) {
      release_cfg();
      return absl::InvalidArgumentError(absl::StrCat("ucx tcp_rx_segment_bytes ", v, ": ", ucs_status_string(st)));
    }
  }
  // UCX's protocol v2 (UCX_PROTO_ENABLE=y) is experimental before UCX 1.16 and
  // breaks kvhub there (measured on 1.13, docs/transport.md "UCX protocol v2"):
  // tcp gets 3.5x slower, one-sided shared-memory gets that wake the serving
  // worker, and sends stuck in rendezvous when a peer dies, which crash
  // ucp_worker_destroy. Below 1.16 kvhub pins protocol v1, whatever the
  // environment says; an explicit PROTO_ENABLE entry in `options` still wins.
  unsigned major = 0, minor = 0, release = 0;
  ucp_get_version(&major, &minor, &release);
  if (major == 1 && minor < 16) {
    static std::once_flag proto_warning;
    const char* env = std::getenv("UCX_PROTO_ENABLE");
    const std::string asked = absl::AsciiStrToLower(env != nullptr ? env : "");
    if (asked == "y" || asked == "yes" || asked == "on" || asked == "1" || asked == "true") {
      std::call_once(proto_warning, [&] {
        KVHUB_LOG(warn, "ucx: UCX_PROTO_ENABLE={} ignored: UCX {}.{}.{}'s protocol v2 is experimental and fails kvhub's "
                  "transfers; using protocol v1", env, major, minor, release);
      });
    }
    st = ucp_config_modify(ucfg, "PROTO_ENABLE", "n");
    if (st != UCS_OK) {
      release_cfg();
      return UcsToStatus(st, "ucx PROTO_ENABLE=n");
    }
  }
  for (const auto& [name, value] : config.options) {
    st = ucp_config_modify(ucfg, name.c_str(), value.c_str());
    if (st != UCS_OK) {
      release_cfg();
      return absl::InvalidArgumentError(
          absl::StrCat("ucx option ", name, "=", value, ": ", ucs_status_string(st)));
    }
  }

  ucp_params_t params{};
  params.field_mask = UCP_PARAM_FIELD_FEATURES | UCP_PARAM_FIELD_MT_WORKERS_SHARED | UCP_PARAM_FIELD_NAME;
  params.features = UCP_FEATURE_AM | UCP_FEATURE_WAKEUP | (config.rma ? UCP_FEATURE_RMA : 0);
  params.mt_workers_shared = 1;
  params.name = "kvhub";
  ucp_context_h context = nullptr;
  st = ucp_init(&params, ucfg, &context);
  release_cfg();
  if (st != UCS_OK) {
    return absl::UnavailableError(absl::StrCat("ucp_init (tls='", config.tls, "'): ", ucs_status_string(st)));
  }
  return std::unique_ptr<UcxContext>(new UcxContext(config, context));
}

absl::StatusOr<std::unique_ptr<UcxContext>> UcxContext::CreateWithoutRmaOverTcp(const UcxConfig& config) {
  absl::StatusOr<std::unique_ptr<UcxContext>> ctx = Create(config);
  if (!ctx.ok() || !config.rma ||
      !ReachesPeersOnlyOverTcp((*ctx)->TransportNames(), config.require_peer_failure_detection)) {
    return ctx;
  }
  UcxConfig no_rma = config;
  no_rma.rma = false;
  ctx->reset();  // one context at a time
  return Create(no_rma);
}

UcxContext::~UcxContext() { ucp_cleanup(context_); }

std::string UcxContext::tls_description() const {
  if (!config_.tls.empty()) return config_.tls;
  const char* env = std::getenv("UCX_TLS");
  return env != nullptr ? absl::StrCat("env:", env) : "default";
}

std::vector<std::string> UcxContext::TransportNames() const {
  // UCX 1.13 has no query for this; ucp_context_print_info lists every resource
  // as "#      resource N  :  md M  dev D  flags -- TL/DEVICE".
  char* text = nullptr;
  size_t len = 0;
  FILE* f = open_memstream(&text, &len);
  if (f == nullptr) return {};
  ucp_context_print_info(context_, f);
  std::fclose(f);
  std::vector<std::string> names;
  for (absl::string_view line : absl::StrSplit(absl::string_view(text, len), '\n')) {
    if (!absl::StrContains(line, "resource") || !absl::StrContains(line, "flags")) continue;
    const std::vector<absl::string_view> words = absl::StrSplit(line, ' ', absl::SkipEmpty());
    const absl::string_view tl_dev = words.back();
    const size_t slash = tl_dev.find('/');
    if (slash == absl::string_view::npos || slash == 0) continue;
    const std::string tl(tl_dev.substr(0, slash));
    if (std::find(names.begin(), names.end(), tl) == names.end()) names.push_back(tl);
  }
  std::free(text);
  return names;
}

namespace {

// Regions and client buffers are read and written locally and by peers
// (gets read them, puts write them).
constexpr unsigned kReadWriteEverywhere = UCP_MEM_MAP_PROT_LOCAL_READ | UCP_MEM_MAP_PROT_LOCAL_WRITE |
                                          UCP_MEM_MAP_PROT_REMOTE_READ | UCP_MEM_MAP_PROT_REMOTE_WRITE;

}  // namespace

absl::StatusOr<std::unique_ptr<UcxMemory>> UcxContext::Allocate(uint64_t size) {
  if (size == 0) return absl::InvalidArgumentError("ucx allocate: empty range");
  ucp_mem_map_params_t mp{};
  mp.field_mask = UCP_MEM_MAP_PARAM_FIELD_LENGTH | UCP_MEM_MAP_PARAM_FIELD_FLAGS | UCP_MEM_MAP_PARAM_FIELD_PROT;
  mp.length = size;
  mp.flags = UCP_MEM_MAP_ALLOCATE;
  mp.prot = kReadWriteEverywhere;
  ucp_mem_h memh = nullptr;
  ucs_status_t st = ucp_mem_map(context_, &mp, &memh);
  if (st != UCS_OK) {
    return absl::ResourceExhaustedError(absl::StrCat("ucp_mem_map(ALLOCATE, ", size, " bytes): ",
                                                     ucs_status_string(st)));
  }
  ucp_mem_attr_t attr{};
  attr.field_mask = UCP_MEM_ATTR_FIELD_ADDRESS | UCP_MEM_ATTR_FIELD_LENGTH;
  st = ucp_mem_query(memh, &attr);
  if (st != UCS_OK || attr.address == nullptr || attr.length < size) {
    ucp_mem_unmap(context_, memh);
    return st != UCS_OK ? UcsToStatus(st, "ucp_mem_query")
                        : absl::InternalError("ucp_mem_map(ALLOCATE) returned a short range");
  }
  return Wrap(memh, attr.address, size);
}

absl::StatusOr<std::unique_ptr<UcxMemory>> UcxContext::Register(void* base, uint64_t size) {
  if (base == nullptr || size == 0) return absl::InvalidArgumentError("ucx register: null or empty range");
  ucp_mem_map_params_t mp{};
  mp.field_mask = UCP_MEM_MAP_PARAM_FIELD_ADDRESS | UCP_MEM_MAP_PARAM_FIELD_LENGTH |
                  UCP_MEM_MAP_PARAM_FIELD_PROT;
  mp.address = base;
  mp.length = size;
  mp.prot = kReadWriteEverywhere;
  ucp_mem_h memh = nullptr;
  ucs_status_t st = ucp_mem_map(context_, &mp, &memh);
  if (st != UCS_OK) return UcsToStatus(st, "ucp_mem_map");
  return Wrap(memh, base, size);
}

absl::StatusOr<std::unique_ptr<UcxMemory>> UcxContext::Wrap(ucp_mem_h memh, void* base, uint64_t size) {
  void* rkey_buf = nullptr;
  size_t rkey_len = 0;
  const ucs_status_t st = ucp_rkey_pack(context_, memh, &rkey_buf, &rkey_len);
  if (st != UCS_OK) {
    ucp_mem_unmap(context_, memh);
    return UcsToStatus(st, "ucp_rkey_pack");
  }
  std::string packed(static_cast<const char*>(rkey_buf), rkey_len);
  ucp_rkey_buffer_release(rkey_buf);
  return std::make_unique<UcxMemory>(context_, memh, base, size, std::move(packed));
}

}  // namespace kvhub::transport
