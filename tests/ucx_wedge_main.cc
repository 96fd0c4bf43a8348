// ucx_wedge: a process that dies in the middle of a shared-memory send to a UCX
// worker, for the tests of recovery from it (tests/ucx_client_test.cc:
// ShardRecoversFromAClientKilledMidSendOverSharedMemory,
// ClientRecoversFromAPeerKilledMidSendOverSharedMemory).
//
//   ucx_wedge GRPC_ADDRESS [UCX_TLS]       a shard's worker (via its Connect RPC)
//   ucx_wedge --worker HEX [UCX_TLS]       the worker with this address (hex bytes)
// (UCX_TLS defaults to posix,cma.)
//
// It connects to the worker, then sends it one active message whose payload is
// packed by a callback that SIGKILLs this process. UCX's
// shared-memory transport packs a message straight into a slot of the receiver's
// queue after reserving it, so the process dies holding a slot it never marks as
// written: the receiver finds its queue stopped at that slot (UCX 1.13). A kvhub
// client killed by the OOM killer or a pod eviction can do the same by chance.
// Exits 1 (with a message) if it gets that far without dying or cannot reach the
// shard (UNAVAILABLE, DEADLINE_EXCEEDED), 3 if the shard refuses its Connect.

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>

#include <ucp/api/ucp.h>

#include "grpcpp/grpcpp.h"
#include "kvhub/v1/kvhub.grpc.pb.h"

namespace {

// The generic datatype's callbacks: packing the payload kills the process.
void* StartPack(void* context, const void* buffer, size_t count) {
  (void)buffer;
  (void)count;
  return context;
}
size_t PackedSize(void* state) {
  (void)state;
  return 64;
}
size_t Pack(void* state, size_t offset, void* dest, size_t max_length) {
  (void)state;
  (void)offset;
  (void)dest;
  (void)max_length;
  raise(SIGKILL);
  return 0;
}
void FinishPack(void* state) { (void)state; }

int Fail(const char* what, ucs_status_t st) {
  std::fprintf(stderr, "ucx_wedge: %s: %s\n", what, ucs_status_string(st));
  return 1;
}

// An AM id no kvhub worker handles: the first, harmless message is dropped.
constexpr unsigned kUnusedAmId = 31;

bool FromHex(const std::string& hex, std::string* out) {
  if (hex.size() % 2 != 0) return false;
  out->clear();
  for (size_t i = 0; i < hex.size(); i += 2) {
    char* end = nullptr;
    const std::string byte = hex.substr(i, 2);
    const long v = std::strtol(byte.c_str(), &end, 16);
    if (end != byte.c_str() + 2) return false;
    out->push_back(static_cast<char>(v));
  }
  return !out->empty();
}

}  // namespace

int main(int argc, char** argv) {
  const bool direct = argc >= 2 && std::string(argv[1]) == "--worker";
  const int base = direct ? 2 : 1;
  if (argc != base + 1 && argc != base + 2) {
    std::fprintf(stderr, "usage: ucx_wedge GRPC_ADDRESS [UCX_TLS] | ucx_wedge --worker HEX_ADDRESS [UCX_TLS]\n");
    return 2;
  }
  const std::string tls = argc == base + 2 ? argv[base + 1] : "posix,cma";
  std::string target;
  if (direct && !FromHex(argv[base], &target)) {
    std::fprintf(stderr, "ucx_wedge: --worker wants the worker address in hex\n");
    return 2;
  }
  ucp_config_t* config = nullptr;
  if (ucs_status_t st = ucp_config_read(nullptr, nullptr, &config); st != UCS_OK) return Fail("config", st);
  if (ucs_status_t st = ucp_config_modify(config, "TLS", tls.c_str()); st != UCS_OK) return Fail("TLS", st);
  ucp_params_t params{};
  params.field_mask = UCP_PARAM_FIELD_FEATURES;
  params.features = UCP_FEATURE_AM | UCP_FEATURE_RMA;
  ucp_context_h context = nullptr;
  ucs_status_t st = ucp_init(&params, config, &context);
  ucp_config_release(config);
  if (st != UCS_OK) return Fail("ucp_init", st);
  ucp_worker_params_t wp{};
  wp.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE;
  wp.thread_mode = UCS_THREAD_MODE_SINGLE;
  ucp_worker_h worker = nullptr;
  if (st = ucp_worker_create(context, &wp, &worker); st != UCS_OK) return Fail("worker", st);
  ucp_address_t* address = nullptr;
  size_t address_len = 0;
  if (st = ucp_worker_get_address(worker, &address, &address_len); st != UCS_OK) return Fail("address", st);

  if (!direct) {
    // The shard tries the address in a probe process that connects to it before
    // answering, so this worker must make progress while the call is in flight,
    // as kvhub's clients do with their progress thread.
    auto stub = kvhub::v1::KvHub::NewStub(grpc::CreateChannel(argv[1], grpc::InsecureChannelCredentials()));
    kvhub::v1::ConnectRequest req;
    req.set_worker_address(reinterpret_cast<const char*>(address), address_len);
    req.set_client_name("ucx_wedge");
    req.set_sends_conn_key(true);
    kvhub::v1::ConnectResponse resp;
    grpc::ClientContext cc;
    cc.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));  // a frozen shard
    grpc::Status s;
    std::atomic<bool> answered{false};
    std::thread call([&] {
      s = stub->Connect(&cc, req, &resp);
      answered.store(true, std::memory_order_release);
    });
    while (!answered.load(std::memory_order_acquire)) ucp_worker_progress(worker);
    call.join();
    if (!s.ok()) {
      std::fprintf(stderr, "ucx_wedge: Connect: %s\n", s.error_message().c_str());
      // Down, restarting or frozen: the fault could not be injected this time.
      // Anything else means the shard refused a well-behaved client.
      const bool unreachable =
          s.error_code() == grpc::StatusCode::UNAVAILABLE || s.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED;
      return unreachable ? 1 : 3;
    }
    target = resp.worker_address();
  }
  ucp_ep_params_t ep_params{};
  ep_params.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS;
  ep_params.address = reinterpret_cast<const ucp_address_t*>(target.data());
  ucp_ep_h ep = nullptr;
  if (st = ucp_ep_create(worker, &ep_params, &ep); st != UCS_OK) return Fail("ep", st);
  // A plain message first, to its completion: the endpoint is wired up after it.
  {
    ucp_request_param_t rp{};
    rp.op_attr_mask = UCP_OP_ATTR_FIELD_FLAGS;
    rp.flags = UCP_AM_SEND_FLAG_EAGER;
    const uint64_t header = 0;
    void* r = ucp_am_send_nbx(ep, kUnusedAmId, &header, sizeof(header), nullptr, 0, &rp);
    if (UCS_PTR_IS_ERR(r)) return Fail("first send", UCS_PTR_STATUS(r));
    while (r != nullptr && ucp_request_check_status(r) == UCS_INPROGRESS) ucp_worker_progress(worker);
    if (r != nullptr) ucp_request_free(r);
  }

  ucp_generic_dt_ops_t ops{};
  ops.start_pack = &StartPack;
  ops.packed_size = &PackedSize;
  ops.pack = &Pack;
  ops.finish = &FinishPack;
  ucp_datatype_t dt = 0;
  if (st = ucp_dt_create_generic(&ops, nullptr, &dt); st != UCS_OK) return Fail("datatype", st);
  ucp_request_param_t rp{};
  rp.op_attr_mask = UCP_OP_ATTR_FIELD_DATATYPE | UCP_OP_ATTR_FIELD_FLAGS;
  rp.datatype = dt;
  rp.flags = UCP_AM_SEND_FLAG_EAGER;
  const uint64_t header = 0;
  char payload[64] = {0};
  void* r = ucp_am_send_nbx(ep, kUnusedAmId, &header, sizeof(header), payload, 1, &rp);
  // Packed at once, or once UCX can send (a loaded machine may take a while).
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (std::chrono::steady_clock::now() < until) ucp_worker_progress(worker);
  std::fprintf(stderr, "ucx_wedge: still alive after the send (%s): the message was not packed into shared memory\n",
               UCS_PTR_IS_ERR(r) ? ucs_status_string(UCS_PTR_STATUS(r)) : r == nullptr ? "sent" : "pending");
  return 1;
}
