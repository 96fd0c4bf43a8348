#include "transport/ucx_worker.h"

#include <poll.h>
#include <stdio.h>

#include <algorithm>
#include <cstring>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/container/flat_hash_set.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/notification.h"
#include "common/clock.h"
#include "common/copy.h"
#include "common/hash.h"
#include "common/kernel_random.h"
#include "common/log.h"
#include "transport/ucx_rkey_pin.h"

namespace kvhub::transport {
namespace {

// Active message ids (docs/transport.md "Wire format").
constexpr unsigned kAmGetReq = 11;   // client -> server: header only
constexpr unsigned kAmGetResp = 12;  // server -> client: header + the block's bytes
constexpr unsigned kAmPutReq = 13;   // client -> server: header + the block's bytes
constexpr unsigned kAmPutResp = 14;  // server -> client: header only
constexpr unsigned kAmCallReq = 15;   // client -> server: header + the request (eager)
constexpr unsigned kAmCallResp = 16;  // server -> client: header + the response or error text (eager)
// "KVH2" little-endian. Version 2 added conn_key to the request and call headers;
// a version 1 header has another size and is dropped as malformed.
constexpr uint32_t kAmMagic = 0x3248564b;

struct AmRequestHeader {
  uint32_t magic;
  uint32_t region;
  uint64_t conn_id;
  uint64_t conn_key;  // AcceptedConn::key of conn_id
  uint64_t req_id;
  uint64_t offset;
  uint64_t size;
  uint64_t grant;  // Transfer::grant: what the server's AccessHooks check
  uint64_t flags;  // kAmFlagEndGrant
};
// Zero bytes after a peer's worker address when it is handed to ucp_ep_create (CreateEp).
// Every length inside a packed address is one byte, so a malformed one sends UCX at
// most a few KiB past its end.
constexpr size_t kAddressPaddingBytes = 64 << 10;
constexpr uint64_t kAmFlagEndGrant = 1;  // get: end the grant once the bytes are sent
// How long a flush close of an accepted connection may keep its transfers' holds
// (memory the store may not reuse) before they end anyway: a flush to a dead peer
// over a transport without failure detection (shared memory) never ends.
constexpr absl::Duration kFlushCloseHoldLimit = absl::Seconds(10);

struct AmResponseHeader {
  uint32_t magic;
  int32_t code;  // absl::StatusCode
  uint64_t req_id;
  uint64_t size;
  char message[96];  // NUL-terminated error text when code != 0
};

struct AmCallHeader {
  uint32_t magic;
  uint32_t method;
  uint64_t conn_id;
  uint64_t conn_key;  // AcceptedConn::key of conn_id
  uint64_t req_id;
};

struct AmCallResponseHeader {
  uint32_t magic;
  int32_t code;  // absl::StatusCode; the body is the error text when != 0
  uint64_t req_id;
};

AmResponseHeader MakeResponse(uint64_t req_id, const absl::Status& st, uint64_t size) {
  AmResponseHeader h{};
  h.magic = kAmMagic;
  h.code = static_cast<int32_t>(st.code());
  h.req_id = req_id;
  h.size = size;
  const absl::string_view msg = st.message();
  const size_t n = std::min(msg.size(), sizeof(h.message) - 1);
  if (n > 0) std::memcpy(h.message, msg.data(), n);  // an OK status has no message (data() may be null)
  h.message[n] = '\0';
  return h;
}

absl::Status ResponseStatus(const AmResponseHeader& h) {
  if (h.code == 0) return absl::OkStatus();
  char msg[sizeof(h.message) + 1];
  std::memcpy(msg, h.message, sizeof(h.message));
  msg[sizeof(h.message)] = '\0';
  return absl::Status(static_cast<absl::StatusCode>(h.code), absl::StrCat("shard: ", msg));
}

// Transports on which UCX 1.13 runs ucp_get/ucp_put one-sidedly against memory
// registered with ucp_mem_map (RDMA verbs). tcp emulates RMA with active
// messages that the target's worker must serve; on shared memory cma is only a
// rendezvous (rma_bw) lane and posix/sysv RMA needs memory UCX itself allocated,
// so a get/put there is emulated too. See docs/transport.md "RMA or AM".
bool HasOneSidedRma(const std::vector<std::string>& tls) {
  for (const std::string& t : tls) {
    if (t.rfind("rc", 0) == 0 || t.rfind("dc", 0) == 0 || t == "gga") return true;
  }
  return false;
}

// OK when `t` names one of `region_count` regions (`region_size` bytes: the
// size of region t.region, unused otherwise) and lies inside it; the
// INVALID_ARGUMENT a transfer fails with otherwise.
absl::Status CheckRange(const Transfer& t, size_t region_count, uint64_t region_size) {
  if (t.region >= region_count) {
    return absl::InvalidArgumentError(absl::StrCat("region ", t.region, " unknown to this peer"));
  }
  if (t.size == 0 || t.local == nullptr || t.offset > region_size || t.size > region_size - t.offset) {
    return absl::InvalidArgumentError(
        absl::StrCat("transfer [", t.offset, ", +", t.size, ") outside region ", t.region));
  }
  return absl::OkStatus();
}

}  // namespace

// ---------------------------------------------------------------------------
// Progress-thread state.

struct Batch {
  std::atomic<size_t> remaining{0};
  absl::Notification done;
  std::span<absl::Status> results;
  bool aborted = false;  // progress thread only
};

// A peer's unpacked region keys (index = region id). RMA requests in flight
// hold the set (Op::rkeys) as the peer does, and the last holder destroys the
// keys: a reconnect that unpacks new ones, or a close that lets UCX finish its
// requests (flush mode), never destroys a key UCX still uses. Progress thread only.
struct RkeySet {
  std::vector<ucp_rkey_h> keys;
  RkeySet() = default;
  RkeySet(const RkeySet&) = delete;
  RkeySet& operator=(const RkeySet&) = delete;
  ~RkeySet() {
    for (ucp_rkey_h k : keys) ucp_rkey_destroy(k);
  }
};

struct Op {
  Batch* batch = nullptr;
  size_t index = 0;
  PeerId peer = 0;
  Transfer t;
  UcxPath path = UcxPath::kRma;
  int events = 0;        // completions still expected
  int ucx_inflight = 0;  // UCX requests that may still touch t.local
  bool awaiting_reply = false;
  uint64_t req_id = 0;
  absl::Status status;
  AmRequestHeader hdr{};
  std::shared_ptr<UcxMemory> local_mem;
  std::shared_ptr<RkeySet> rkeys;  // RMA: the keys its UCX requests use
};

// A CallPeer in flight. Shared by the caller and the progress thread's table
// (Impl::calls), which keeps it until UCX is done with the request bytes and
// the call has an outcome.
struct UcxWorker::CallOp {
  Impl* impl = nullptr;  // set when started; UCX's completion may come from ucp_worker_destroy
  PeerId peer = 0;
  std::string request;
  AmCallHeader hdr{};  // the caller sets `method`; StartCall the rest
  bool send_done = false;  // progress thread only
  bool finished = false;   // progress thread only
  // The outcome: written on the progress thread before `done` is notified.
  absl::Status status;
  std::string response;
  absl::Notification done;
};

struct UcxWorker::MappedPeer {
  struct Region {
    uint8_t* base = nullptr;  // the serving region's first byte as mapped here
    uint64_t size = 0;
  };
  std::vector<Region> regions;  // set before publication, then read-only
  bool gets = false, puts = false;  // directions copied through the mapping; same
  absl::Mutex mu;               // readers: copies in flight; writer: WithdrawMapped
  bool live ABSL_GUARDED_BY(mu) = true;
};

struct UcxWorker::Impl {
  struct Peer {
    PeerId id = 0;
    std::string address;
    ucp_ep_h ep = nullptr;
    bool peer_mode = true;  // UCP_ERR_HANDLING_MODE_PEER (else NONE)
    AcceptedConn conn;      // the server's, for our request headers
    std::vector<RemoteRegionInfo> regions;
    std::shared_ptr<RkeySet> rkeys = std::make_shared<RkeySet>();
    std::string transports;
    UcxPath get_path = UcxPath::kAm;
    UcxPath put_path = UcxPath::kAm;
  };
  struct Conn {
    uint64_t id = 0;
    ucp_ep_h ep = nullptr;
    bool peer_mode = true;
    absl::Time accepted;
    uint64_t owner = 0;  // Accept's tag
    uint64_t key = 0;    // AcceptedConn::key
    uint32_t transfers = 0;  // counted transfers in flight (Options::max_transfers_per_conn)
  };
  struct EpOwner {
    bool is_conn = false;
    uint64_t id = 0;
  };
  struct Counters {
    std::atomic<uint64_t> get_bytes_rma{0}, get_bytes_am{0}, put_bytes_rma{0}, put_bytes_am{0};
    std::atomic<uint64_t> get_bytes_mapped{0}, put_bytes_mapped{0};
    std::atomic<uint64_t> served_get_bytes{0}, served_get_bytes_completed{0}, served_put_bytes{0};
    std::atomic<uint64_t> served_errors{0}, unknown_conn_requests{0}, busy_conn_requests{0};
    std::atomic<uint64_t> served_calls{0}, calls_ok{0}, calls_failed{0}, calls_held{0};
    std::atomic<uint64_t> transfers_ok{0}, transfers_failed{0}, deadline_exceeded{0};
    std::atomic<uint64_t> peer_failures{0}, forced_closes{0}, wakeups{0}, arm_busy{0};
    std::atomic<uint64_t> connected_peers{0}, accepted_peers{0};
  };
  // A server-side send (AM response) in flight; owns the header.
  // An AccessHooks hold on served memory, ended exactly once (EndHold).
  struct Hold {
    bool active = false;
    TransferKind kind = TransferKind::kGet;
    uint64_t id = 0;
    uint64_t conn_id = 0;
    uint64_t grant = 0;
    bool end_grant = false;  // call AccessHooks::end_grant(grant) after end
  };
  struct ServerSend {
    Impl* impl = nullptr;
    AmResponseHeader hdr{};
    uint64_t data_bytes = 0;
    Hold hold;
    uint64_t counted_conn = 0;  // the connection whose transfer count it holds (0: none)
  };
  // A server-side rendezvous receive of a put in flight.
  struct ServerRecv {
    Impl* impl = nullptr;
    uint64_t conn_id = 0;  // also holds one of its transfer count
    uint64_t req_id = 0;
    uint64_t size = 0;
    Hold hold;
  };
  // One flush covering the RMA puts of a batch.
  struct FlushCtx {
    std::vector<Op*> ops;
  };

  UcxWorker* w = nullptr;
  ucp_worker_h worker = nullptr;
  absl::flat_hash_map<PeerId, std::unique_ptr<Peer>> peers;
  absl::flat_hash_map<std::string, PeerId> peer_by_address;
  absl::flat_hash_map<uint64_t, std::unique_ptr<Conn>> conns;
  absl::flat_hash_map<ucp_ep_h, EpOwner> ep_owner;
  absl::flat_hash_map<uint64_t, Op*> awaiting;  // req_id -> op waiting for an AM response
  std::vector<std::pair<ucp_ep_h, ucs_status_t>> failed_eps;  // reported by the error callback
  // The end of a close a caller waits for (Close()).
  struct CloseWait {
    absl::Notification done;
    ucs_status_t status = UCS_INPROGRESS;  // written before done.Notify()
  };
  struct Closing {
    void* req;                        // a ucp_ep_close_nbx request
    std::shared_ptr<CloseWait> wait;  // null: nobody waits
    // An accepted connection closed in flush mode: its transfers' holds end when the
    // close does (UCX may still move their bytes until then), or at holds_deadline
    // if it never does (a dead peer whose transport cannot tell).
    uint64_t conn_id = 0;
    absl::Time holds_deadline = absl::InfiniteFuture();
  };
  std::vector<Closing> closing;
  // Response sends whose completion has not been reported yet. UCX drops the
  // completion of a send to a peer that died mid-transfer; what is left here
  // when the worker is destroyed is freed with the Impl.
  absl::flat_hash_set<ServerSend*> sends;
  // Rendezvous put receives in flight (their holds must end if the peer dies).
  absl::flat_hash_set<ServerRecv*> recvs;
  // A call's reply in flight (owns the bytes until UCX is done with them).
  struct CallReply {
    Impl* impl = nullptr;
    AmCallResponseHeader hdr{};
    std::string body;
  };
  absl::flat_hash_set<CallReply*> replies;
  // Calls made from here: req_id -> call, until sent and finished.
  absl::flat_hash_map<uint64_t, std::shared_ptr<CallOp>> calls;
  uint64_t next_peer = 1, next_conn = 1, next_req = 1;
  // Requests for unknown connections or with a wrong key: one warning a second.
  absl::Time unknown_conn_logged = absl::InfinitePast();
  uint64_t unknown_conn_unlogged = 0;
  Counters c;

  // ---- completion plumbing
  void Event(Op* op, const absl::Status& st) {
    if (!st.ok() && op->status.ok()) op->status = st;
    if (--op->events == 0) Finish(op);
  }
  void Finish(Op* op) {
    absl::Status st = op->status;
    if (!st.ok() && op->batch->aborted && st.code() != absl::StatusCode::kDeadlineExceeded) {
      st = absl::DeadlineExceededError(absl::StrCat("transfer timed out (", st.message(), ")"));
    }
    if (st.ok()) {
      c.transfers_ok.fetch_add(1, std::memory_order_relaxed);
      const bool rma = op->path == UcxPath::kRma;
      auto& counter = op->t.kind == TransferKind::kGet ? (rma ? c.get_bytes_rma : c.get_bytes_am)
                                                       : (rma ? c.put_bytes_rma : c.put_bytes_am);
      counter.fetch_add(op->t.size, std::memory_order_relaxed);
    } else {
      c.transfers_failed.fetch_add(1, std::memory_order_relaxed);
      if (st.code() == absl::StatusCode::kDeadlineExceeded) c.deadline_exceeded.fetch_add(1);
    }
    op->local_mem.reset();
    op->rkeys.reset();  // UCX is done with them: every request of the op completed
    Batch* b = op->batch;
    b->results[op->index] = std::move(st);
    if (b->remaining.fetch_sub(1) == 1) b->done.Notify();  // `op` and `b` may be gone after this
  }

  static void OnUcxDone(void* request, ucs_status_t status, void* user_data) {
    auto* op = static_cast<Op*>(user_data);
    --op->ucx_inflight;
    ucp_request_free(request);
    Impl* self = ImplOf(op);
    const absl::Status st = UcsToStatus(status, "ucx transfer");
    // An active-message request that failed to go out gets no response: stop
    // waiting for one, so the transfer fails now with this error (it waited for the
    // deadline, and came back DEADLINE_EXCEEDED instead of the peer's failure).
    if (!st.ok() && op->awaiting_reply && self->TakeAwaiting(op->req_id) == op) --op->events;
    self->Event(op, st);
  }
  static void OnFlushDone(void* request, ucs_status_t status, void* user_data) {
    auto* ctx = static_cast<FlushCtx*>(user_data);
    ucp_request_free(request);
    CompleteFlush(ctx, status);
  }
  static void CompleteFlush(FlushCtx* ctx, ucs_status_t status) {
    const absl::Status st = UcsToStatus(status, "ucx flush");
    for (Op* op : ctx->ops) {
      --op->ucx_inflight;
      ImplOf(op)->Event(op, st);
    }
    delete ctx;
  }
  // Every Op of a worker reaches its Impl through this thread-local set while
  // the progress thread runs; one Impl per progress thread.
  static Impl*& Current() {
    static thread_local Impl* impl = nullptr;
    return impl;
  }
  static Impl* ImplOf(Op*) { return Current(); }

  // ---- endpoints
  static void OnEpError(void* arg, ucp_ep_h ep, ucs_status_t status) {
    auto* self = static_cast<Impl*>(arg);
    self->failed_eps.emplace_back(ep, status);
  }

  // An endpoint in PEER error mode; without peer failure detection (NONE) when
  // no transport offers it and the config allows that. *peer_mode says which.
  absl::StatusOr<ucp_ep_h> CreateEp(absl::string_view address, bool* peer_mode) {
    // UCX reads a packed address by the lengths written inside it and does not know
    // where the bytes end: a malformed one makes it read past them. Zeros there make
    // such reads see the same bytes in every process, so that an address that passed
    // a probe process (UcxAddressVetter) fares the same here.
    std::string padded(address);
    padded.resize(address.size() + kAddressPaddingBytes, '\0');
    ucp_ep_params_t p{};
    p.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE |
                   UCP_EP_PARAM_FIELD_ERR_HANDLER;
    p.address = reinterpret_cast<const ucp_address_t*>(padded.data());
    p.err_mode = UCP_ERR_HANDLING_MODE_PEER;
    p.err_handler.cb = &Impl::OnEpError;
    p.err_handler.arg = this;
    ucp_ep_h ep = nullptr;
    ucs_status_t st = ucp_ep_create(worker, &p, &ep);
    *peer_mode = true;
    if (st == UCS_ERR_UNREACHABLE && !w->config().require_peer_failure_detection) {
      p.field_mask = UCP_EP_PARAM_FIELD_REMOTE_ADDRESS | UCP_EP_PARAM_FIELD_ERR_HANDLING_MODE;
      p.err_mode = UCP_ERR_HANDLING_MODE_NONE;
      st = ucp_ep_create(worker, &p, &ep);
      *peer_mode = false;
      if (st == UCS_OK) KVHUB_LOG(warn, "ucx: endpoint without peer failure detection (no transport offers it)");
    }
    if (st != UCS_OK) {
      return absl::UnavailableError(absl::StrCat(
          "ucp_ep_create: ", ucs_status_string(st),
          st == UCS_ERR_UNREACHABLE && w->config().require_peer_failure_detection
              ? " (no transport with peer failure detection; UCX 1.13 shared memory has none)"
              : ""));
    }
    return ep;
  }

  // `wait` (optional) learns when the close ends and how.
  // Returns true when the close is still in progress (it was queued in `closing`;
  // `conn_id`, when not 0, is recorded there: see Closing).
  bool CloseEp(ucp_ep_h ep, bool force, std::shared_ptr<CloseWait> wait = nullptr, uint64_t conn_id = 0) {
    ep_owner.erase(ep);
    ucp_request_param_t p{};
    // FORCE cancels outstanding requests; UCX allows it only in PEER error mode.
    p.op_attr_mask = force ? UCP_OP_ATTR_FIELD_FLAGS : 0;
    p.flags = force ? UCP_EP_CLOSE_FLAG_FORCE : 0;
    void* req = ucp_ep_close_nbx(ep, &p);
    if (UCS_PTR_IS_PTR(req)) {
      Closing c{req, std::move(wait)};
      if (conn_id != 0) {
        c.conn_id = conn_id;
        c.holds_deadline = Clock::Real()->Now() + kFlushCloseHoldLimit;
      }
      closing.push_back(std::move(c));
      return true;
    }
    if (wait != nullptr) EndClose(wait.get(), UCS_PTR_STATUS(req));
    return false;
  }

  // Ends the holds of connection `id`'s transfers still in flight.
  void EndConnHolds(uint64_t id) {
    for (ServerSend* s : sends) {
      if (s->hold.conn_id == id) EndHold(&s->hold);
    }
    for (ServerRecv* r : recvs) {
      if (r->hold.conn_id == id) EndHold(&r->hold);
    }
  }

  static void EndClose(CloseWait* wait, ucs_status_t status) {
    wait->status = status;
    wait->done.Notify();
  }

  void ReapClosing() {
    const absl::Time now = closing.empty() ? absl::InfinitePast() : Clock::Real()->Now();
    for (size_t i = 0; i < closing.size();) {
      const ucs_status_t st = ucp_request_check_status(closing[i].req);
      if (closing[i].conn_id != 0 && (st != UCS_INPROGRESS || now >= closing[i].holds_deadline)) {
        EndConnHolds(closing[i].conn_id);
        closing[i].conn_id = 0;
      }
      if (st != UCS_INPROGRESS) {
        ucp_request_free(closing[i].req);
        if (closing[i].wait != nullptr) EndClose(closing[i].wait.get(), st);
        closing[i] = std::move(closing.back());
        closing.pop_back();
      } else {
        ++i;
      }
    }
  }

  // Fails every transfer waiting on `id` for an AM reply, then closes its endpoint.
  // `wait`: close the endpoint in flush mode (what was sent arrives, the peer
  // learns of the close) and report the close's end to `wait`; else force it
  // (in PEER error mode, where UCX allows that).
  void FailPeer(PeerId id, const absl::Status& why, std::shared_ptr<CloseWait> wait = nullptr) {
    auto it = peers.find(id);
    if (it == peers.end()) return;
    std::unique_ptr<Peer> peer = std::move(it->second);
    peers.erase(it);
    auto by_addr = peer_by_address.find(peer->address);
    if (by_addr != peer_by_address.end() && by_addr->second == id) peer_by_address.erase(by_addr);
    c.connected_peers.fetch_sub(1);
    std::vector<Op*> waiting;
    for (auto& [req_id, op] : awaiting) {
      if (op->peer == id) waiting.push_back(op);
    }
    for (Op* op : waiting) {
      awaiting.erase(op->req_id);
      op->awaiting_reply = false;
      Event(op, why);
    }
    std::vector<CallOp*> peer_calls;
    for (auto& [req_id, call] : calls) {
      if (call->peer == id && !call->finished) peer_calls.push_back(call.get());
    }
    // Those whose send is done are forgotten now (their caller has its answer, and
    // no reply comes any more; they were held until the worker went). The others'
    // sends complete (with an error) when the endpoint closes; the table keeps them
    // until then.
    for (CallOp* call : peer_calls) {
      FinishCall(call, why);
      DropCallIfDone(call);
    }
    const bool force = wait == nullptr && peer->peer_mode;  // before `wait` is moved from
    CloseEp(peer->ep, force, std::move(wait));
    w->WithdrawMapped(id);  // no caller copies from the mapping once this returns
    // Destroyed now, or (a flush close) by the last RMA request UCX still finishes.
    peer->rkeys.reset();
  }

  // Closes connection `id`'s endpoint: forced where UCX allows it, or in flush
  // mode reporting the close's end to `wait` when one is given.
  void FailConn(uint64_t id, std::shared_ptr<CloseWait> wait = nullptr) {
    auto it = conns.find(id);
    if (it == conns.end()) return;
    const bool force = wait == nullptr && it->second->peer_mode;
    const ucp_ep_h ep = it->second->ep;
    // Gone before the close: a transfer UCX completes inside a forced close (a purged
    // receive) then finds no endpoint to answer on, rather than this one mid-close.
    conns.erase(it);
    c.accepted_peers.fetch_sub(1);
    const bool in_progress = CloseEp(ep, force, std::move(wait), force ? 0 : id);
    // UCX may never report the completion of what was in flight, so the holds of
    // this connection's transfers end here, once UCX no longer moves their bytes:
    // at once after a forced close (it cancels them) or one already done; after a
    // flush close still in progress, when it ends (ReapClosing), since a flush
    // finishes the transfers first, and ending their holds before would let the
    // store reuse memory UCX still reads from or writes into.
    if (force || !in_progress) EndConnHolds(id);
  }

  void EndHold(Hold* h) {
    if (!h->active) return;
    h->active = false;
    w->options_.access.end(h->kind, h->id);
    if (h->end_grant) w->options_.access.end_grant(h->grant);
  }

  void ProcessFailures() {
    while (!failed_eps.empty()) {
      auto failed = std::move(failed_eps);
      failed_eps.clear();
      for (auto [ep, status] : failed) {
        auto it = ep_owner.find(ep);
        if (it == ep_owner.end()) continue;  // already closed by us
        c.peer_failures.fetch_add(1);
        const EpOwner owner = it->second;
        if (owner.is_conn && status == UCS_ERR_CONNECTION_RESET) {
          // How a client that closed its endpoint or exited leaves: routine, not a fault.
          KVHUB_LOG(info, "ucx: accepted connection {} closed by its client ({})", owner.id,
                    ucs_status_string(status));
        } else {
          KVHUB_LOG(warn, "ucx: {} {} failed: {}", owner.is_conn ? "accepted connection" : "peer", owner.id,
                    ucs_status_string(status));
        }
        if (owner.is_conn) {
          FailConn(owner.id);
        } else {
          FailPeer(owner.id, absl::UnavailableError(
                                 absl::StrCat("ucx peer failed: ", ucs_status_string(status))));
        }
      }
    }
  }

  static std::string DescribeEp(ucp_ep_h ep, std::vector<std::string>* names) {
    char* buf = nullptr;
    size_t len = 0;
    FILE* f = open_memstream(&buf, &len);
    if (f == nullptr) return "unknown";
    ucp_ep_print_info(ep, f);
    fclose(f);
    const std::string text(buf, len);
    free(buf);
    KVHUB_LOG(debug, "ucx: endpoint configuration:\n{}", text);
    if (getenv("KVHUB_UCX_DEBUG_EP") != nullptr) fprintf(stderr, "%s\n", text.c_str());
    // Lane lines look like "#   lane[0]:  2:tcp/lo.0 md[2] ...": take "tcp".
    size_t pos = 0;
    while ((pos = text.find("lane[", pos)) != std::string::npos) {
      const size_t colon = text.find(':', text.find(']', pos) + 1);
      const size_t colon2 = text.find(':', colon + 1);
      const size_t slash = text.find('/', colon2 + 1);
      pos += 5;
      if (colon == std::string::npos || colon2 == std::string::npos || slash == std::string::npos) break;
      std::string name = text.substr(colon2 + 1, slash - colon2 - 1);
      if (name.empty() || name.find('\n') != std::string::npos) continue;
      if (std::find(names->begin(), names->end(), name) == names->end()) names->push_back(name);
    }
    return names->empty() ? "unknown" : absl::StrJoin(*names, ",");
  }

  // ---- server side
  // Range check, then the AccessHooks' begin; on success `hold` is active when
  // hooks are set and must be ended (EndHold) once UCX is done with the range.
  absl::Status CheckServed(TransferKind kind, const AmRequestHeader& h, Hold* hold) {
    const auto& served = w->options_.served;
    if (h.region >= served.size()) {
      return absl::InvalidArgumentError(absl::StrCat("region ", h.region, " not served"));
    }
    const uint64_t rsize = served[h.region]->size();
    if (h.size == 0 || h.offset > rsize || h.size > rsize - h.offset) {
      return absl::InvalidArgumentError(
          absl::StrCat("range [", h.offset, ", +", h.size, ") outside region ", h.region));
    }
    if (!w->options_.access.begin) return absl::OkStatus();
    absl::StatusOr<uint64_t> id = w->options_.access.begin(kind, h.grant, h.region, h.offset, h.size);
    if (!id.ok()) return id.status();
    const bool end_grant = kind == TransferKind::kGet && (h.flags & kAmFlagEndGrant) != 0 &&
                           w->options_.access.end_grant != nullptr;
    *hold = Hold{true, kind, *id, h.conn_id, h.grant, end_grant};
    return absl::OkStatus();
  }

  static void OnServerSendDone(void* request, ucs_status_t status, void* user_data) {
    auto* s = static_cast<ServerSend*>(user_data);
    s->impl->ServerSendFinished(s, status);
    ucp_request_free(request);
  }
  void ServerSendFinished(ServerSend* s, ucs_status_t status) {
    sends.erase(s);
    EndHold(&s->hold);
    Uncount(s->counted_conn);
    if (status == UCS_OK) {
      if (s->data_bytes > 0) c.served_get_bytes_completed.fetch_add(s->data_bytes);
    } else {
      c.served_errors.fetch_add(1);
    }
    delete s;
  }

  // Sends a response header (and, for a successful get, the bytes at `data`).
  // `hold` (may be inactive) covers `data` and ends when the send does.
  // `counted_conn` (0: none): the connection whose transfer count this send took
  // (Count); given back when the send ends.
  void Respond(ucp_ep_h ep, unsigned am_id, uint64_t req_id, const absl::Status& st, const void* data,
               uint64_t size, ucp_mem_h memh, Hold hold, uint64_t counted_conn = 0) {
    if (!st.ok()) c.served_errors.fetch_add(1);
    const uint64_t data_bytes = st.ok() && data != nullptr ? size : 0;
    // Counted before the send starts: the peer can only complete after this.
    if (data_bytes > 0) c.served_get_bytes.fetch_add(data_bytes);
    auto* s = new ServerSend{this, MakeResponse(req_id, st, size), data_bytes, hold, counted_conn};
    sends.insert(s);
    ucp_request_param_t p{};
    p.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
    p.cb.send = &Impl::OnServerSendDone;
    p.user_data = s;
    if (memh != nullptr && st.ok()) {
      p.op_attr_mask |= UCP_OP_ATTR_FIELD_MEMH;
      p.memh = memh;
    }
    void* req = ucp_am_send_nbx(ep, am_id, &s->hdr, sizeof(s->hdr), st.ok() ? data : nullptr,
                                st.ok() ? size : 0, &p);
    if (req == nullptr) {
      ServerSendFinished(s, UCS_OK);
    } else if (UCS_PTR_IS_ERR(req)) {
      ServerSendFinished(s, UCS_PTR_STATUS(req));
    }
  }

  // Takes one of connection `conn_id`'s transfers (Options::max_transfers_per_conn);
  // false, counted, when it has them all in flight.
  bool Count(uint64_t conn_id) {
    auto it = conns.find(conn_id);
    if (it == conns.end()) return false;
    const uint32_t limit = w->options_.max_transfers_per_conn;
    if (limit != 0 && it->second->transfers >= limit) {
      c.busy_conn_requests.fetch_add(1);
      return false;
    }
    ++it->second->transfers;
    return true;
  }
  // Gives one back (a closed connection's count went with it).
  void Uncount(uint64_t conn_id) {
    if (conn_id == 0) return;
    auto it = conns.find(conn_id);
    if (it != conns.end() && it->second->transfers > 0) --it->second->transfers;
  }
  absl::Status BusyConnError() const {
    return absl::ResourceExhaustedError(absl::StrCat(
        "this UCX connection has ", w->options_.max_transfers_per_conn,
        " transfers in flight (max_transfers_per_conn); retry when some have completed"));
  }

  bool ConnHasPeerMode(uint64_t conn_id) {
    auto it = conns.find(conn_id);
    return it != conns.end() && it->second->peer_mode;
  }

  ucp_ep_h ReplyEp(uint64_t conn_id) {
    auto it = conns.find(conn_id);
    if (it != conns.end()) return it->second->ep;
    return nullptr;
  }

  // The endpoint to answer a request that names connection `conn_id` with `key`;
  // null (counted, logged at most once a second) when no open connection has
  // both: the sender is stale (its connection closed) or was never given the key.
  ucp_ep_h RequestEp(const char* what, uint64_t conn_id, uint64_t key) {
    auto it = conns.find(conn_id);
    if (it != conns.end() && it->second->key == key) return it->second->ep;
    c.served_errors.fetch_add(1);
    c.unknown_conn_requests.fetch_add(1);
    const absl::Time now = Clock::Real()->Now();
    if (now - unknown_conn_logged < absl::Seconds(1)) {
      ++unknown_conn_unlogged;
    } else {
      KVHUB_LOG(warn, "ucx: dropped a {} request for connection {}: {} (and {} more such requests since the last warning)",
                what, conn_id, it == conns.end() ? "not open" : "wrong connection key", unknown_conn_unlogged);
      unknown_conn_logged = now;
      unknown_conn_unlogged = 0;
    }
    return nullptr;
  }

  // Parses an AM request header and finds the connection to answer on; null
  // (counted as a served error) for a malformed header, an unknown connection or
  // a wrong key, which the client's deadline then fails.
  ucp_ep_h AcceptRequest(const void* header, size_t len, const char* what, AmRequestHeader* h) {
    if (len == sizeof(*h)) std::memcpy(h, header, sizeof(*h));
    if (len != sizeof(*h) || h->magic != kAmMagic) {
      c.served_errors.fetch_add(1);
      return nullptr;
    }
    return RequestEp(what, h->conn_id, h->conn_key);
  }

  static ucs_status_t OnGetRequest(void* arg, const void* header, size_t header_length, void* data,
                                   size_t length, const ucp_am_recv_param_t* param) {
    auto* self = static_cast<Impl*>(arg);
    AmRequestHeader h;
    ucp_ep_h ep = self->AcceptRequest(header, header_length, "get", &h);
    if (ep == nullptr) return UCS_OK;
    if (!self->Count(h.conn_id)) {  // checked first: a refused request touches nothing
      self->Respond(ep, kAmGetResp, h.req_id, self->BusyConnError(), nullptr, 0, nullptr, Hold{});
      return UCS_OK;
    }
    Hold hold;
    const absl::Status st = self->CheckServed(TransferKind::kGet, h, &hold);
    const UcxMemory* mem = st.ok() ? self->w->options_.served[h.region] : nullptr;
    if (mem == nullptr) self->Uncount(h.conn_id);  // an error answer carries no bytes
    self->Respond(ep, kAmGetResp, h.req_id, st,
                  mem != nullptr ? static_cast<const uint8_t*>(mem->base()) + h.offset : nullptr, h.size,
                  mem != nullptr ? mem->memh() : nullptr, hold, mem != nullptr ? h.conn_id : 0);
    return UCS_OK;
  }

  static void OnPutRecvDone(void* request, ucs_status_t status, size_t length, void* user_data) {
    auto* r = static_cast<ServerRecv*>(user_data);
    ucp_request_free(request);
    r->impl->PutReceived(r, status, length);
  }
  void PutReceived(ServerRecv* r, ucs_status_t status, size_t length) {
    recvs.erase(r);
    EndHold(&r->hold);  // the bytes have landed (or never will)
    Uncount(r->conn_id);
    absl::Status st = UcsToStatus(status, "ucx put receive");
    if (st.ok() && length != r->size) st = absl::DataLossError("short put receive");
    if (st.ok()) c.served_put_bytes.fetch_add(r->size);
    ucp_ep_h ep = ReplyEp(r->conn_id);
    if (ep != nullptr) Respond(ep, kAmPutResp, r->req_id, st, nullptr, 0, nullptr, Hold{});
    delete r;
  }

  static ucs_status_t OnPutRequest(void* arg, const void* header, size_t header_length, void* data,
                                   size_t length, const ucp_am_recv_param_t* param) {
    auto* self = static_cast<Impl*>(arg);
    AmRequestHeader h;
    ucp_ep_h ep = self->AcceptRequest(header, header_length, "put", &h);
    if (ep == nullptr) return UCS_OK;
    Hold hold;
    absl::Status st = self->CheckServed(TransferKind::kPut, h, &hold);
    if (st.ok() && length != h.size) {
      self->EndHold(&hold);
      st = absl::InvalidArgumentError(absl::StrCat("put carries ", length, " bytes, header says ", h.size));
    }
    if (!st.ok()) {
      self->Respond(ep, kAmPutResp, h.req_id, st, nullptr, 0, nullptr, Hold{});
      return UCS_OK;  // a rendezvous descriptor is dropped; the sender's send completes
    }
    const UcxMemory* mem = self->w->options_.served[h.region];
    uint8_t* dst = static_cast<uint8_t*>(mem->base()) + h.offset;
    if ((param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) && !self->ConnHasPeerMode(h.conn_id)) {
      // See Connect(): pulling a rendezvous put from a peer we cannot watch for
      // failure could abort this process. The client must use RMA put here.
      self->EndHold(&hold);
      self->Respond(ep, kAmPutResp, h.req_id,
                    absl::FailedPreconditionError(
                        "rendezvous AM put refused on an endpoint without peer failure detection; use RMA put"),
                    nullptr, 0, nullptr, Hold{});
      return UCS_OK;
    }
    if (param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) {
      if (!self->Count(h.conn_id)) {
        self->EndHold(&hold);
        self->Respond(ep, kAmPutResp, h.req_id, self->BusyConnError(), nullptr, 0, nullptr, Hold{});
        return UCS_OK;  // the rendezvous descriptor is dropped; the sender's send completes
      }
      auto* r = new ServerRecv{self, h.conn_id, h.req_id, h.size, hold};
      self->recvs.insert(r);
      ucp_request_param_t p{};
      p.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA | UCP_OP_ATTR_FIELD_MEMH;
      p.cb.recv_am = &Impl::OnPutRecvDone;
      p.user_data = r;
      p.memh = mem->memh();
      void* req = ucp_am_recv_data_nbx(self->worker, data, dst, length, &p);
      if (req == nullptr) {
        self->PutReceived(r, UCS_OK, length);
        return UCS_OK;
      }
      if (UCS_PTR_IS_ERR(req)) {
        self->PutReceived(r, UCS_PTR_STATUS(req), 0);
        return UCS_OK;
      }
      return UCS_INPROGRESS;
    }
    std::memcpy(dst, data, length);  // eager: small blocks only (below UCX's rendezvous threshold)
    self->EndHold(&hold);
    self->c.served_put_bytes.fetch_add(length);
    self->Respond(ep, kAmPutResp, h.req_id, absl::OkStatus(), nullptr, 0, nullptr, Hold{});
    return UCS_OK;
  }

  // ---- calls (CallPeer), server side
  static ucs_status_t OnCallRequest(void* arg, const void* header, size_t header_length, void* data,
                                    size_t length, const ucp_am_recv_param_t* param) {
    auto* self = static_cast<Impl*>(arg);
    AmCallHeader h;
    if (header_length == sizeof(h)) std::memcpy(&h, header, sizeof(h));
    if (header_length != sizeof(h) || h.magic != kAmMagic) {
      self->c.served_errors.fetch_add(1);
      return UCS_OK;
    }
    ucp_ep_h ep = self->RequestEp("call", h.conn_id, h.conn_key);
    if (ep == nullptr) return UCS_OK;
    self->c.served_calls.fetch_add(1);
    absl::StatusOr<std::string> answer;
    const CallHandler& handler = self->w->options_.calls;
    if (param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) {
      // The request's bytes are not here (a rendezvous descriptor, dropped).
      answer = absl::InvalidArgumentError("ucx call requests must be sent eagerly");
    } else if (length > kMaxUcxCallBytes) {
      answer = absl::InvalidArgumentError(absl::StrCat("ucx call request of ", length, " bytes; at most ",
                                                       kMaxUcxCallBytes));
    } else if (!handler) {
      answer = absl::UnimplementedError("this ucx worker answers no calls");
    } else {
      answer = handler(h.method, absl::string_view(static_cast<const char*>(data), length));
      if (answer.ok() && answer->size() > kMaxUcxCallBytes) {
        answer = absl::InternalError(absl::StrCat("ucx call response of ", answer->size(), " bytes; at most ",
                                                  kMaxUcxCallBytes));
      }
    }
    if (!answer.ok()) self->c.served_errors.fetch_add(1);
    self->SendCallReply(ep, h.req_id, std::move(answer));
    return UCS_OK;
  }

  void SendCallReply(ucp_ep_h ep, uint64_t req_id, absl::StatusOr<std::string> answer) {
    auto* r = new CallReply{this, AmCallResponseHeader{kAmMagic, static_cast<int32_t>(answer.status().code()), req_id},
                            answer.ok() ? std::move(*answer) : std::string(answer.status().message())};
    replies.insert(r);
    ucp_request_param_t p{};
    p.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA | UCP_OP_ATTR_FIELD_FLAGS;
    p.cb.send = &Impl::OnCallReplySent;
    p.user_data = r;
    p.flags = UCP_AM_SEND_FLAG_EAGER;
    void* req = ucp_am_send_nbx(ep, kAmCallResp, &r->hdr, sizeof(r->hdr), r->body.data(), r->body.size(), &p);
    if (!UCS_PTR_IS_PTR(req)) CallReplySent(r, UCS_PTR_STATUS(req));
  }
  static void OnCallReplySent(void* request, ucs_status_t status, void* user_data) {
    auto* r = static_cast<CallReply*>(user_data);
    ucp_request_free(request);
    r->impl->CallReplySent(r, status);
  }
  void CallReplySent(CallReply* r, ucs_status_t status) {
    if (status != UCS_OK) c.served_errors.fetch_add(1);
    replies.erase(r);
    delete r;
  }

  // ---- calls (CallPeer), client side
  void StartCall(const std::shared_ptr<CallOp>& call) {
    auto it = peers.find(call->peer);
    if (it == peers.end()) {
      call->send_done = true;
      FinishCall(call.get(), absl::UnavailableError("ucx peer is gone (failed or disconnected)"));
      return;
    }
    const uint64_t req_id = next_req++;
    call->impl = this;
    call->hdr = AmCallHeader{kAmMagic, call->hdr.method, it->second->conn.id, it->second->conn.key, req_id};
    calls[req_id] = call;
    c.calls_held.fetch_add(1, std::memory_order_relaxed);
    ucp_request_param_t p{};
    p.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA | UCP_OP_ATTR_FIELD_FLAGS;
    p.cb.send = &Impl::OnCallSent;
    p.user_data = call.get();
    p.flags = UCP_AM_SEND_FLAG_EAGER;
    void* req = ucp_am_send_nbx(it->second->ep, kAmCallReq, &call->hdr, sizeof(call->hdr), call->request.data(),
                                call->request.size(), &p);
    if (!UCS_PTR_IS_PTR(req)) CallSent(call.get(), UCS_PTR_STATUS(req));
  }
  static void OnCallSent(void* request, ucs_status_t status, void* user_data) {
    ucp_request_free(request);
    auto* call = static_cast<CallOp*>(user_data);
    call->impl->CallSent(call, status);
  }
  void CallSent(CallOp* call, ucs_status_t status) {
    call->send_done = true;
    if (status != UCS_OK) FinishCall(call, UcsToStatus(status, "ucx call send"));
    DropCallIfDone(call);
  }
  // Records the outcome once; later outcomes (a reply after the deadline) are dropped.
  void FinishCall(CallOp* call, absl::Status st, std::string response = {}) {
    if (call->finished) return;
    call->finished = true;
    (st.ok() ? c.calls_ok : c.calls_failed).fetch_add(1, std::memory_order_relaxed);
    call->status = std::move(st);
    call->response = std::move(response);
    call->done.Notify();
  }
  // Forgets `call` once UCX is done with its request and it has an outcome;
  // `call` may be gone after this.
  void DropCallIfDone(CallOp* call) {
    if (call->send_done && call->finished && calls.erase(call->hdr.req_id) == 1) {
      c.calls_held.fetch_sub(1, std::memory_order_relaxed);
    }
  }
  static ucs_status_t OnCallResponse(void* arg, const void* header, size_t header_length, void* data,
                                     size_t length, const ucp_am_recv_param_t* param) {
    auto* self = static_cast<Impl*>(arg);
    AmCallResponseHeader h;
    if (header_length != sizeof(h)) return UCS_OK;
    std::memcpy(&h, header, sizeof(h));
    if (h.magic != kAmMagic) return UCS_OK;
    auto it = self->calls.find(h.req_id);
    if (it == self->calls.end()) return UCS_OK;  // a late reply: the caller gave up
    CallOp* call = it->second.get();
    const absl::string_view body(static_cast<const char*>(data), length);
    if (param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) {
      self->FinishCall(call, absl::InternalError("ucx call reply arrived by rendezvous"));
    } else if (h.code != 0) {
      self->FinishCall(call, absl::Status(static_cast<absl::StatusCode>(h.code),
                                          absl::StrCat("shard: ", body.substr(0, 512))));
    } else if (length > kMaxUcxCallBytes) {
      self->FinishCall(call, absl::DataLossError(absl::StrCat("ucx call reply of ", length, " bytes")));
    } else {
      self->FinishCall(call, absl::OkStatus(), std::string(body));
    }
    self->DropCallIfDone(call);
    return UCS_OK;
  }

  // ---- client side: responses
  static bool ParseResponse(const void* header, size_t len, AmResponseHeader* h) {
    if (len != sizeof(*h)) return false;
    std::memcpy(h, header, sizeof(*h));
    return h->magic == kAmMagic;
  }

  // The op waiting for `req_id`, removed from the table; nullptr if none (late reply).
  Op* TakeAwaiting(uint64_t req_id) {
    auto it = awaiting.find(req_id);
    if (it == awaiting.end()) return nullptr;
    Op* op = it->second;
    awaiting.erase(it);
    op->awaiting_reply = false;
    return op;
  }

  static void OnGetRecvDone(void* request, ucs_status_t status, size_t length, void* user_data) {
    auto* op = static_cast<Op*>(user_data);
    ucp_request_free(request);
    --op->ucx_inflight;
    absl::Status st = UcsToStatus(status, "ucx get receive");
    if (st.ok() && length != op->t.size) st = absl::DataLossError("short get receive");
    Current()->Event(op, st);
  }

  static ucs_status_t OnGetResponse(void* arg, const void* header, size_t header_length, void* data,
                                    size_t length, const ucp_am_recv_param_t* param) {
    auto* self = static_cast<Impl*>(arg);
    AmResponseHeader h;
    if (!ParseResponse(header, header_length, &h)) return UCS_OK;
    Op* op = self->TakeAwaiting(h.req_id);
    if (op == nullptr) return UCS_OK;  // timed out already: drop the bytes
    if (op->t.kind != TransferKind::kGet) {
      // A get's answer to a put: its bytes would land in the put's source buffer.
      self->Event(op, absl::DataLossError("the ucx peer answered a put with get data; nothing written"));
      return UCS_OK;
    }
    absl::Status st = ResponseStatus(h);
    if (st.ok() && length != op->t.size) {
      st = absl::DataLossError(absl::StrCat("get response has ", length, " bytes, expected ", op->t.size));
    }
    if (!st.ok()) {
      self->Event(op, st);
      return UCS_OK;
    }
    if (param->recv_attr & UCP_AM_RECV_ATTR_FLAG_RNDV) {
      ucp_request_param_t p{};
      p.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
      p.cb.recv_am = &Impl::OnGetRecvDone;
      p.user_data = op;
      if (op->local_mem != nullptr) {
        p.op_attr_mask |= UCP_OP_ATTR_FIELD_MEMH;
        p.memh = op->local_mem->memh();
      }
      ++op->ucx_inflight;
      void* req = ucp_am_recv_data_nbx(self->worker, data, op->t.local, length, &p);
      if (req == nullptr) {
        --op->ucx_inflight;
        self->Event(op, absl::OkStatus());
        return UCS_OK;
      }
      if (UCS_PTR_IS_ERR(req)) {
        --op->ucx_inflight;
        self->Event(op, UcsToStatus(UCS_PTR_STATUS(req), "ucp_am_recv_data_nbx"));
        return UCS_OK;
      }
      return UCS_INPROGRESS;
    }
    std::memcpy(op->t.local, data, length);
    self->Event(op, absl::OkStatus());
    return UCS_OK;
  }

  static ucs_status_t OnPutResponse(void* arg, const void* header, size_t header_length, void* data,
                                    size_t length, const ucp_am_recv_param_t* param) {
    auto* self = static_cast<Impl*>(arg);
    AmResponseHeader h;
    if (!ParseResponse(header, header_length, &h)) return UCS_OK;
    Op* op = self->TakeAwaiting(h.req_id);
    if (op == nullptr) return UCS_OK;
    // A put's answer to a get would complete it with no bytes written.
    self->Event(op, op->t.kind == TransferKind::kPut
                        ? ResponseStatus(h)
                        : absl::DataLossError("the ucx peer answered a get with a put response; no bytes"));
    return UCS_OK;
  }

  // ---- client side: issuing
  void Issue(Peer* peer, Op* op, FlushCtx** flush) {
    const Transfer& t = op->t;
    const uint64_t region_size = t.region < peer->regions.size() ? peer->regions[t.region].size : 0;
    if (absl::Status st = CheckRange(t, peer->regions.size(), region_size); !st.ok()) {
      op->events = 1;
      Event(op, st);
      return;
    }
    const RemoteRegionInfo& r = peer->regions[t.region];
    UcxPath path = t.path;
    if (path == UcxPath::kAuto) path = t.kind == TransferKind::kGet ? peer->get_path : peer->put_path;
    op->path = path;
    op->local_mem = w->registrations_.Find(t.local, t.size);

    ucp_request_param_t p{};
    p.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
    p.cb.send = &Impl::OnUcxDone;
    p.user_data = op;
    if (op->local_mem != nullptr) {
      p.op_attr_mask |= UCP_OP_ATTR_FIELD_MEMH;
      p.memh = op->local_mem->memh();
    }

    if (path == UcxPath::kRma) {
      const uint64_t remote = r.base + t.offset;
      op->rkeys = peer->rkeys;
      ucp_rkey_h rkey = op->rkeys->keys[t.region];
      void* req;
      if (t.kind == TransferKind::kGet) {
        op->events = 1;
        req = ucp_get_nbx(peer->ep, t.local, t.size, remote, rkey, &p);
      } else {
        op->events = 2;  // the put itself, then the flush that makes it remotely complete
        req = ucp_put_nbx(peer->ep, t.local, t.size, remote, rkey, &p);
      }
      ++op->ucx_inflight;
      if (!UCS_PTR_IS_PTR(req)) {
        --op->ucx_inflight;
        Event(op, UcsToStatus(UCS_PTR_STATUS(req), t.kind == TransferKind::kGet ? "ucp_get_nbx" : "ucp_put_nbx"));
      }
      if (t.kind == TransferKind::kPut && op->events > 0) {
        if (*flush == nullptr) *flush = new FlushCtx;
        (*flush)->ops.push_back(op);
        ++op->ucx_inflight;
      }
      return;
    }

    // Active messages: a request header, then a response (with the bytes for a get).
    op->req_id = next_req++;
    op->hdr = AmRequestHeader{kAmMagic, t.region, peer->conn.id,  peer->conn.key,
                              op->req_id, t.offset, t.size, t.grant, t.end_grant ? kAmFlagEndGrant : 0};
    op->events = 2;  // our send completes + the response arrives
    op->awaiting_reply = true;
    awaiting[op->req_id] = op;
    // No UCP_AM_SEND_FLAG_REPLY: the server answers on the connection named in
    // the header (conn_id), and with UCX's protocol v2 (UCX_PROTO_ENABLE=y, the
    // default from UCX 1.16) a reply-flagged AM short of this size smashes the
    // sender's stack in UCX 1.13 (docs/transport.md, "UCX protocol v2").
    if (t.kind == TransferKind::kGet) p.op_attr_mask &= ~UCP_OP_ATTR_FIELD_MEMH;
    ++op->ucx_inflight;
    void* req = t.kind == TransferKind::kGet
                    ? ucp_am_send_nbx(peer->ep, kAmGetReq, &op->hdr, sizeof(op->hdr), nullptr, 0, &p)
                    : ucp_am_send_nbx(peer->ep, kAmPutReq, &op->hdr, sizeof(op->hdr), t.local, t.size, &p);
    if (!UCS_PTR_IS_PTR(req)) {
      --op->ucx_inflight;
      const ucs_status_t st = UCS_PTR_STATUS(req);
      if (st != UCS_OK) {
        TakeAwaiting(op->req_id);
        op->events = 1;  // no response will come
      }
      Event(op, UcsToStatus(st, "ucp_am_send_nbx"));
    }
  }

  void StartBatch(PeerId id, std::span<Op> ops) {
    Peer* peer = nullptr;
    if (auto it = peers.find(id); it != peers.end()) peer = it->second.get();
    FlushCtx* flush = nullptr;
    for (Op& op : ops) {
      if (peer == nullptr) {
        op.events = 1;
        Event(&op, absl::UnavailableError("ucx peer is gone (failed or disconnected)"));
        continue;
      }
      Issue(peer, &op, &flush);
    }
    if (flush != nullptr) {
      ucp_request_param_t p{};
      p.op_attr_mask = UCP_OP_ATTR_FIELD_CALLBACK | UCP_OP_ATTR_FIELD_USER_DATA;
      p.cb.send = &Impl::OnFlushDone;
      p.user_data = flush;
      void* req = ucp_ep_flush_nbx(peer->ep, &p);
      if (!UCS_PTR_IS_PTR(req)) CompleteFlush(flush, UCS_PTR_STATUS(req));
    }
  }

  void AbortBatch(Batch* batch, std::span<Op> ops) {
    batch->aborted = true;
    std::vector<PeerId> force;
    for (Op& op : ops) {
      if (op.events == 0) continue;
      if (op.awaiting_reply) {
        TakeAwaiting(op.req_id);
        const bool inflight = op.ucx_inflight > 0;
        const PeerId peer = op.peer;
        Event(&op, absl::DeadlineExceededError("no response from the ucx peer in time"));
        if (inflight) force.push_back(peer);
        continue;
      }
      if (op.ucx_inflight > 0) force.push_back(op.peer);
    }
    for (PeerId id : force) {
      if (peers.contains(id)) {
        c.forced_closes.fetch_add(1);
        KVHUB_LOG(warn, "ucx: force-closing peer {} to cancel timed-out transfers", id);
        FailPeer(id, absl::DeadlineExceededError("ucx endpoint closed to cancel a timed-out transfer"));
      }
    }
  }

  ~Impl() {
    for (ServerSend* s : sends) {
      EndHold(&s->hold);
      delete s;
    }
    for (ServerRecv* r : recvs) {
      EndHold(&r->hold);
      delete r;
    }
    for (CallReply* r : replies) delete r;
    for (auto& [req_id, call] : calls) FinishCall(call.get(), absl::CancelledError("ucx worker shutting down"));
  }

  void Shutdown() {
    std::vector<PeerId> ids;
    for (auto& [id, p] : peers) ids.push_back(id);
    for (PeerId id : ids) FailPeer(id, absl::CancelledError("ucx worker shutting down"));
    std::vector<uint64_t> cids;
    for (auto& [id, cn] : conns) cids.push_back(id);
    for (uint64_t id : cids) FailConn(id);
  }
};

// ---------------------------------------------------------------------------

UcxWorker::UcxWorker(UcxContext* context, Options options)
    : context_(context),
      options_(std::move(options)),
      registrations_(context, context->config().registration_cache_entries) {}

absl::StatusOr<std::unique_ptr<UcxWorker>> UcxWorker::Create(UcxContext* context, Options options) {
  if (context == nullptr) return absl::InvalidArgumentError("ucx worker: null context");
  for (const UcxMemory* m : options.served) {
    if (m == nullptr) return absl::InvalidArgumentError("ucx worker: null served region");
  }
  if (static_cast<bool>(options.access.begin) != static_cast<bool>(options.access.end)) {
    return absl::InvalidArgumentError("ucx worker: access hooks need both begin and end");
  }
  if (options.first_conn_id == 0) return absl::InvalidArgumentError("ucx worker: first_conn_id must be > 0");
  std::unique_ptr<UcxWorker> w(new UcxWorker(context, std::move(options)));

  ucp_worker_params_t wp{};
  wp.field_mask = UCP_WORKER_PARAM_FIELD_THREAD_MODE | UCP_WORKER_PARAM_FIELD_NAME;
  wp.thread_mode = UCS_THREAD_MODE_SINGLE;  // only the progress thread touches it
  wp.name = w->options_.name.c_str();
  ucs_status_t st = ucp_worker_create(context->get(), &wp, &w->worker_);
  if (st != UCS_OK) return UcsToStatus(st, "ucp_worker_create");

  ucp_address_t* addr = nullptr;
  size_t addr_len = 0;
  st = ucp_worker_get_address(w->worker_, &addr, &addr_len);
  if (st != UCS_OK) return UcsToStatus(st, "ucp_worker_get_address");
  w->address_.assign(reinterpret_cast<const char*>(addr), addr_len);
  ucp_worker_release_address(w->worker_, addr);

  st = ucp_worker_get_efd(w->worker_, &w->efd_);
  if (st != UCS_OK) return UcsToStatus(st, "ucp_worker_get_efd");

  w->impl_ = std::make_unique<Impl>();
  w->impl_->w = w.get();
  w->impl_->next_conn = w->options_.first_conn_id;
  w->impl_->worker = w->worker_;
  const std::pair<unsigned, ucp_am_recv_callback_t> handlers[] = {
      {kAmGetReq, &Impl::OnGetRequest},
      {kAmGetResp, &Impl::OnGetResponse},
      {kAmPutReq, &Impl::OnPutRequest},
      {kAmPutResp, &Impl::OnPutResponse},
      {kAmCallReq, &Impl::OnCallRequest},
      {kAmCallResp, &Impl::OnCallResponse},
  };
  for (const auto& [id, cb] : handlers) {
    ucp_am_handler_param_t hp{};
    hp.field_mask = UCP_AM_HANDLER_PARAM_FIELD_ID | UCP_AM_HANDLER_PARAM_FIELD_FLAGS |
                    UCP_AM_HANDLER_PARAM_FIELD_CB | UCP_AM_HANDLER_PARAM_FIELD_ARG;
    hp.id = id;
    hp.flags = UCP_AM_FLAG_WHOLE_MSG;
    hp.cb = cb;
    hp.arg = w->impl_.get();
    st = ucp_worker_set_am_recv_handler(w->worker_, &hp);
    if (st != UCS_OK) return UcsToStatus(st, "ucp_worker_set_am_recv_handler");
  }
  w->thread_ = std::thread([raw = w.get()] { raw->Loop(); });
  return w;
}

UcxWorker::~UcxWorker() {
  if (thread_.joinable()) {
    Call([this] { impl_->Shutdown(); });
    stop_.store(true);
    ucp_worker_signal(worker_);
    thread_.join();
  }
  // The worker goes first: completions UCX still reports while destroying it
  // reach a live Impl; the Impl then frees what never completed.
  if (worker_ != nullptr) {
    // Completions reach their Impl through the thread's Current(): set it on this
    // thread too for the ones ucp_worker_destroy reports.
    Impl*& current = Impl::Current();
    Impl* const saved = current;
    current = impl_.get();
    ucp_worker_destroy(worker_);
    current = saved;
  }
  impl_.reset();
}

bool UcxWorker::HasTasks() { return has_tasks_.load(std::memory_order_acquire); }

void UcxWorker::Call(const std::function<void()>& fn) {
  if (std::this_thread::get_id() == thread_id_.load()) {
    fn();
    return;
  }
  absl::Notification done;
  {
    absl::MutexLock l(&task_mu_);
    tasks_.push_back([&fn, &done] {
      fn();
      done.Notify();
    });
    has_tasks_.store(true, std::memory_order_release);
  }
  ucp_worker_signal(worker_);
  done.WaitForNotification();
}

namespace {
// ucp_worker_progress calls per round of the progress loop before it looks at its
// tasks, failed endpoints and closes again.
constexpr int kMaxProgressPerRound = 256;
}  // namespace

void UcxWorker::Loop() {
  thread_id_.store(std::this_thread::get_id());
  Impl::Current() = impl_.get();
  const int idle_ms = static_cast<int>(absl::ToInt64Milliseconds(config().idle_wakeup));
  const bool poll_mode = config().progress_mode == UcxProgressMode::kPoll;
  absl::Time stop_deadline = absl::InfiniteFuture();
  std::vector<std::function<void()>> batch;
  while (true) {
    if (HasTasks()) {
      {
        absl::MutexLock l(&task_mu_);
        batch.swap(tasks_);
        has_tasks_.store(false, std::memory_order_release);
      }
      for (auto& fn : batch) fn();
      batch.clear();
    }
    // Bounded: under a stream of requests that never lets progress find nothing to
    // do, queued tasks (Accept, batches), failed endpoints and closes were never
    // handled (a dead client's holds stayed until the load dropped).
    bool more = true;
    for (int i = 0; i < kMaxProgressPerRound; ++i) {
      if (ucp_worker_progress(worker_) == 0) {
        more = false;
        break;
      }
    }
    impl_->ProcessFailures();
    impl_->ReapClosing();
    if (stop_.load()) {
      if (stop_deadline == absl::InfiniteFuture()) stop_deadline = Clock::Real()->Now() + absl::Seconds(2);
      if (impl_->closing.empty() || Clock::Real()->Now() > stop_deadline) break;
      // Closes to a stuck peer: not spin a core for 2 s (the event fd would not
      // wait: it stays readable until the worker is armed, which stopping skips).
      if (!more) absl::SleepFor(absl::Milliseconds(1));
      continue;
    }
    if (poll_mode || more || HasTasks() || !impl_->failed_eps.empty()) continue;
    const ucs_status_t st = ucp_worker_arm(worker_);
    if (st == UCS_ERR_BUSY) {
      impl_->c.arm_busy.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    if (HasTasks()) continue;
    pollfd pfd{efd_, POLLIN, 0};
    ::poll(&pfd, 1, st == UCS_OK ? idle_ms : 1);
    impl_->c.wakeups.fetch_add(1, std::memory_order_relaxed);
  }
  if (!impl_->closing.empty()) {
    // Flush-mode closes to peers that stopped receiving (a stuck shared-memory
    // queue, a dead peer without failure detection) never finish. Hand the
    // requests back to UCX, which ends them while it destroys the worker (it
    // asserts on a close request the user still holds).
    KVHUB_LOG(warn, "ucx: {} endpoint closes still pending at worker shutdown", impl_->closing.size());
    for (Impl::Closing& c : impl_->closing) {
      ucp_request_free(c.req);
      if (c.wait != nullptr) Impl::EndClose(c.wait.get(), UCS_ERR_CANCELED);
    }
    impl_->closing.clear();
  }
}

std::vector<RemoteRegionInfo> UcxWorker::ServedRegions() const {
  std::vector<RemoteRegionInfo> out;
  out.reserve(options_.served.size());
  for (const UcxMemory* m : options_.served) {
    out.push_back({reinterpret_cast<uint64_t>(m->base()), m->size(), m->packed_rkey()});
  }
  return out;
}

std::string FormatAcceptedConn(const AcceptedConn& conn) { return absl::StrCat(conn.id, ":", conn.key); }

bool ParseAcceptedConn(absl::string_view text, AcceptedConn* conn) {
  const size_t colon = text.find(':');
  return colon != absl::string_view::npos && absl::SimpleAtoi(text.substr(0, colon), &conn->id) &&
         absl::SimpleAtoi(text.substr(colon + 1), &conn->key);
}

absl::StatusOr<AcceptedConn> UcxWorker::Accept(absl::string_view client_address, uint64_t owner,
                                               uint64_t max_accepted) {
  if (client_address.empty()) return absl::InvalidArgumentError("ucx accept: empty worker address");
  // The low 4 bits of a packed address's first byte are its format version, 0 or
  // 1; UCX 1.13 aborts the process (an assertion in ucp_address_unpack) on any
  // other. UCX checks little else: see the header about trusted peers.
  if (const int version = static_cast<uint8_t>(client_address[0]) & 0x0F; version > 1) {
    return absl::InvalidArgumentError(
        absl::StrCat("ucx accept: not a UCX worker address (address format version ", version, ")"));
  }
  absl::StatusOr<uint64_t> key = KernelRandom64();
  while (key.ok() && *key == 0) key = KernelRandom64();  // 0 is no key
  if (!key.ok()) return absl::InternalError(absl::StrCat("ucx accept: connection key: ", key.status().message()));
  absl::StatusOr<AcceptedConn> result = absl::InternalError("not run");
  Call([&] {
    if (impl_->conns.size() >= max_accepted) {
      result = absl::ResourceExhaustedError(absl::StrCat("too many live UCX connections (", max_accepted, ")"));
      return;
    }
    bool peer_mode = true;
    absl::StatusOr<ucp_ep_h> ep = impl_->CreateEp(client_address, &peer_mode);
    if (!ep.ok()) {
      result = ep.status();
      return;
    }
    const uint64_t id = impl_->next_conn++;
    impl_->conns[id] =
        std::make_unique<Impl::Conn>(Impl::Conn{id, *ep, peer_mode, Clock::Real()->Now(), owner, *key});
    impl_->ep_owner[*ep] = Impl::EpOwner{true, id};
    impl_->c.accepted_peers.fetch_add(1);
    result = AcceptedConn{id, *key};
  });
  return result;
}

std::vector<std::pair<uint64_t, absl::Time>> UcxWorker::AcceptedConnections() {
  std::vector<std::pair<uint64_t, absl::Time>> out;
  Call([&] {
    out.reserve(impl_->conns.size());
    for (const auto& [id, conn] : impl_->conns) out.emplace_back(id, conn->accepted);
  });
  return out;
}

absl::Status UcxWorker::CloseAccepted(uint64_t conn_id, absl::Duration flush_wait) {
  absl::Status result;
  const bool flush = flush_wait > absl::ZeroDuration();
  auto closed = flush ? std::make_shared<Impl::CloseWait>() : nullptr;
  Call([&] {
    if (!impl_->conns.contains(conn_id)) {
      result = absl::NotFoundError(absl::StrCat("ucx connection ", conn_id, " unknown"));
      return;
    }
    impl_->FailConn(conn_id, closed);
  });
  if (!result.ok() || !flush) return result;
  if (!closed->done.WaitForNotificationWithTimeout(flush_wait)) {
    return absl::DeadlineExceededError(
        absl::StrCat("ucx close: the client did not complete the connection within ", absl::FormatDuration(flush_wait)));
  }
  return UcsToStatus(closed->status, "ucx close");
}

absl::Status UcxWorker::CheckAccepted(uint64_t conn_id, uint64_t owner) {
  absl::Status result;
  Call([&] {
    auto it = impl_->conns.find(conn_id);
    if (it == impl_->conns.end() || it->second->owner != owner) {
      result = absl::NotFoundError(absl::StrCat("ucx connection ", conn_id, " unknown or closed"));
    }
  });
  return result;
}

absl::StatusOr<PeerId> UcxWorker::Connect(const PeerInfo& info) {
  if (info.worker_address.empty()) return absl::InvalidArgumentError("ucx connect: empty worker address");
  absl::StatusOr<PeerId> result = absl::InternalError("not run");
  Call([&] {
    Impl& im = *impl_;
    Impl::Peer* peer = nullptr;
    if (auto it = im.peer_by_address.find(info.worker_address); it != im.peer_by_address.end()) {
      peer = im.peers[it->second].get();
    }
    std::unique_ptr<Impl::Peer> fresh;
    if (peer == nullptr) {
      bool peer_mode = true;
      absl::StatusOr<ucp_ep_h> ep = im.CreateEp(info.worker_address, &peer_mode);
      if (!ep.ok()) {
        result = ep.status();
        return;
      }
      fresh = std::make_unique<Impl::Peer>();
      fresh->peer_mode = peer_mode;
      fresh->id = im.next_peer++;
      fresh->address = info.worker_address;
      fresh->ep = *ep;
      peer = fresh.get();
    }
    std::vector<std::string> names;
    const std::string transports = Impl::DescribeEp(peer->ep, &names);
    // (Re)unpack the region keys, each with the shared-memory segments it names
    // held here first: UCX 1.13 crashes unpacking a key whose segment went with
    // its shard a moment ago (transport/ucx_rkey_pin.h).
    const auto has_lane = [&names](const char* tl) { return std::find(names.begin(), names.end(), tl) != names.end(); };
    const PinScope pin_scope{.posix = info.same_namespaces || has_lane("posix"),
                             .sysv = info.same_namespaces || has_lane("sysv")};
    // Shared-memory lanes reach memory UCX allocated one-sidedly (the segment is
    // mapped here): a get is a memcpy, the serving worker never wakes.
    const bool shm_rma = info.one_sided_shm && (has_lane("posix") || has_lane("sysv"));
    if (!config().rma) {
      // This context neither issues nor serves RMA (UcxConfig::rma): active messages only.
      const char* needs = config().get_path == UcxPath::kRma || config().put_path == UcxPath::kRma
                              ? "get_path or put_path rma"
                          : !peer->peer_mode && config().put_path != UcxPath::kAm
                              ? "RMA puts (the peer has no failure detection here, and an AM put from a dead "
                                "process could abort the shard)"
                              : nullptr;
      if (needs != nullptr) {
        if (fresh != nullptr) im.CloseEp(fresh->ep, fresh->peer_mode);
        result = absl::FailedPreconditionError(
            absl::StrCat("ucx connect: this UCX context has no RMA (UcxConfig::rma=false) but the peer needs ", needs));
        return;
      }
    }
    auto rkeys = std::make_shared<RkeySet>();  // destroys what it holds if Connect fails
    for (size_t i = 0; i < info.regions.size(); ++i) {
      const RemoteRegionInfo& r = info.regions[i];
      absl::StatusOr<PinnedRkey> pinned = PinRkey(r.packed_rkey, pin_scope);
      ucp_rkey_h rk = nullptr;
      absl::Status failed;
      if (!pinned.ok()) {
        failed = absl::Status(pinned.status().code(), absl::StrCat("ucx connect: ", pinned.status().message()));
      } else if (!pinned->segments().empty() && !pinned->Covers(r.base, r.size)) {
        // One-sided copies over shared memory check ranges against the region
        // table only: a table that claims more than the key's segments would let
        // them run past the mapping into this process's other memory.
        failed = absl::DataLossError(absl::StrCat("ucx connect: the peer's region ", i, " claims ", r.size,
                                                  " bytes at ", absl::Hex(r.base),
                                                  ", outside the shared-memory segments its key names"));
      } else if (shm_rma && pinned->segments().empty()) {
        // No bound to keep one-sided copies in (mapped, or RMA on the progress
        // thread: UCX checks none either).
        failed = absl::UnavailableError(
            "ucx connect: the shared-memory segments of the peer's region keys cannot be read here (a UCX other "
            "than 1.13?), so one-sided copies could not be kept inside them; use gRPC");
      } else if (const ucs_status_t st = ucp_ep_rkey_unpack(peer->ep, pinned->packed().data(), &rk);
                 st != UCS_OK) {
        failed = UcsToStatus(st, "ucp_ep_rkey_unpack");
      }
      if (!failed.ok()) {
        rkeys.reset();  // before the endpoint they were unpacked on
        if (fresh != nullptr) im.CloseEp(fresh->ep, fresh->peer_mode);
        result = failed;
        return;
      }
      rkeys->keys.push_back(rk);
    }
    WithdrawMapped(peer->id);  // the old rkeys' mappings go with them
    // The old keys go when the last RMA request in flight on them completes.
    peer->rkeys = std::move(rkeys);
    peer->regions = info.regions;
    peer->conn = info.conn;
    peer->transports = transports;
    if (!peer->peer_mode) peer->transports += " (nofail)";
    const bool one_sided = (HasOneSidedRma(names) || shm_rma) && config().rma;
    const UcxConfig& cfg = config();
    peer->get_path = cfg.get_path != UcxPath::kAuto ? cfg.get_path : (one_sided ? UcxPath::kRma : UcxPath::kAm);
    // Without peer failure detection (UCX 1.13 shared memory) an AM put would make
    // the shard pull the bytes with CMA, and a CMA copy from a dead process
    // aborts the copying process; RMA put is emulated by the shard's worker from
    // its own shared-memory FIFO instead, which a dying client cannot break.
    peer->put_path = cfg.put_path != UcxPath::kAuto
                         ? cfg.put_path
                         : (one_sided || !peer->peer_mode ? UcxPath::kRma : UcxPath::kAm);
    const bool map_gets = cfg.mapped_gets && peer->get_path == UcxPath::kRma;
    const bool map_puts = cfg.mapped_puts && peer->put_path == UcxPath::kRma;
    if (shm_rma && (map_gets || map_puts)) {
      // The serving side's segments are mapped into this process by the rkeys:
      // a get or put is a memcpy any thread can do while the rkeys live.
      auto m = std::make_shared<MappedPeer>();
      m->gets = map_gets;
      m->puts = map_puts;
      for (size_t i = 0; i < peer->rkeys->keys.size(); ++i) {  // each within its segments (checked above)
        void* local = nullptr;
        const ucs_status_t st = ucp_rkey_ptr(peer->rkeys->keys[i], peer->regions[i].base, &local);
        if (st != UCS_OK || local == nullptr) {
          KVHUB_LOG(debug, "ucx: peer {} region {} is not mapped here ({}); transfers stay on the progress thread",
                    peer->id, i, ucs_status_string(st));
          m = nullptr;
          break;
        }
        m->regions.push_back({static_cast<uint8_t*>(local), peer->regions[i].size});
      }
      if (m != nullptr) {
        peer->transports += map_gets && map_puts ? " (mapped gets and puts)" : map_gets ? " (mapped gets)" : " (mapped puts)";
        PublishMapped(peer->id, std::move(m));
      }
    }
    if (fresh != nullptr) {
      im.ep_owner[fresh->ep] = Impl::EpOwner{false, fresh->id};
      im.peer_by_address[fresh->address] = fresh->id;
      KVHUB_LOG(info, "ucx: connected peer {} via {} (get={}, put={})", fresh->id, fresh->transports,
                std::string(UcxPathName(fresh->get_path)), std::string(UcxPathName(fresh->put_path)));
      im.c.connected_peers.fetch_add(1);
      im.peers[fresh->id] = std::move(fresh);
    }
    result = peer->id;
  });
  return result;
}

absl::Status UcxWorker::Disconnect(PeerId peer, absl::Status why) {
  if (why.ok()) why = absl::CancelledError("ucx peer disconnected");
  absl::Status result;
  Call([&] {
    if (!impl_->peers.contains(peer)) {
      result = absl::NotFoundError(absl::StrCat("ucx peer ", peer, " unknown"));
      return;
    }
    impl_->FailPeer(peer, why);
  });
  return result;
}

absl::Status UcxWorker::Close(PeerId peer, absl::Duration wait) {
  absl::Status result;
  auto closed = std::make_shared<Impl::CloseWait>();
  Call([&] {
    if (!impl_->peers.contains(peer)) {
      result = absl::NotFoundError(absl::StrCat("ucx peer ", peer, " unknown"));
      return;
    }
    impl_->FailPeer(peer, absl::CancelledError("ucx peer closed"), closed);
  });
  if (!result.ok()) return result;
  if (!closed->done.WaitForNotificationWithTimeout(wait)) {
    return absl::DeadlineExceededError(
        absl::StrCat("ucx close: the peer did not acknowledge within ", absl::FormatDuration(wait)));
  }
  return UcsToStatus(closed->status, "ucx close");
}

absl::StatusOr<std::string> UcxWorker::PeerTransports(PeerId peer) {
  absl::StatusOr<std::string> result = absl::NotFoundError(absl::StrCat("ucx peer ", peer, " unknown"));
  Call([&] {
    if (auto it = impl_->peers.find(peer); it != impl_->peers.end()) result = it->second->transports;
  });
  return result;
}

absl::StatusOr<UcxPath> UcxWorker::ResolvedPath(PeerId peer, TransferKind kind) {
  absl::StatusOr<UcxPath> result = absl::NotFoundError(absl::StrCat("ucx peer ", peer, " unknown"));
  Call([&] {
    if (auto it = impl_->peers.find(peer); it != impl_->peers.end()) {
      result = kind == TransferKind::kGet ? it->second->get_path : it->second->put_path;
    }
  });
  return result;
}

absl::StatusOr<std::string> UcxWorker::CallPeer(PeerId peer, uint32_t method, std::string request,
                                                 absl::Duration timeout) {
  if (request.size() > kMaxUcxCallBytes) {
    return absl::InvalidArgumentError(
        absl::StrCat("ucx call request of ", request.size(), " bytes; at most ", kMaxUcxCallBytes));
  }
  if (timeout <= absl::ZeroDuration()) timeout = config().op_timeout;
  auto call = std::make_shared<CallOp>();
  call->peer = peer;
  call->hdr.method = method;
  call->request = std::move(request);
  Call([&] { impl_->StartCall(call); });
  if (!call->done.WaitForNotificationWithTimeout(timeout)) {
    Call([&] {
      impl_->FinishCall(call.get(), absl::DeadlineExceededError("no answer to the ucx call in time"));
      impl_->DropCallIfDone(call.get());
    });
  }
  // `done` is notified: by the reply, a failure, or the deadline above.
  if (!call->status.ok()) return call->status;
  return std::move(call->response);
}

absl::Status UcxWorker::Execute(PeerId peer, std::span<const Transfer> transfers,
                                std::span<absl::Status> results, absl::Duration timeout) {
  if (transfers.size() != results.size()) {
    return absl::InvalidArgumentError("ucx execute: transfers and results differ in size");
  }
  if (transfers.empty()) return absl::OkStatus();
  if (timeout <= absl::ZeroDuration()) timeout = config().op_timeout;
  const absl::Time deadline = Clock::Real()->Now() + timeout;  // monotonic: a wall-clock step moves no deadline
  if (std::shared_ptr<MappedPeer> m = FindMapped(peer);
      m != nullptr && ExecuteMapped(m.get(), transfers, results, deadline)) {
    return absl::OkStatus();
  }
  Batch batch;
  batch.results = results;
  batch.remaining.store(transfers.size());
  std::vector<Op> ops(transfers.size());
  for (size_t i = 0; i < transfers.size(); ++i) {
    ops[i].batch = &batch;
    ops[i].index = i;
    ops[i].peer = peer;
    ops[i].t = transfers[i];
  }
  Call([&] { impl_->StartBatch(peer, std::span<Op>(ops)); });
  if (!batch.done.WaitForNotificationWithTimeout(deadline - Clock::Real()->Now())) {
    Call([&] {
      if (!batch.done.HasBeenNotified()) impl_->AbortBatch(&batch, std::span<Op>(ops));
    });
    while (!batch.done.WaitForNotificationWithTimeout(absl::Seconds(10))) {
      KVHUB_LOG(error, "ucx: transfers still held by UCX 10 s after their endpoint was closed");
    }
  }
  return absl::OkStatus();
}

bool UcxWorker::Maps(PeerId peer, TransferKind kind) {
  std::shared_ptr<MappedPeer> m = FindMapped(peer);
  return m != nullptr && (kind == TransferKind::kGet ? m->gets : m->puts);
}

std::shared_ptr<UcxWorker::MappedPeer> UcxWorker::FindMapped(PeerId peer) {
  absl::ReaderMutexLock l(&mapped_mu_);
  auto it = mapped_.find(peer);
  return it == mapped_.end() ? nullptr : it->second;
}

void UcxWorker::PublishMapped(PeerId peer, std::shared_ptr<MappedPeer> m) {
  absl::MutexLock l(&mapped_mu_);
  mapped_[peer] = std::move(m);
}

void UcxWorker::WithdrawMapped(PeerId peer) {
  std::shared_ptr<MappedPeer> m;
  {
    absl::MutexLock l(&mapped_mu_);
    auto it = mapped_.find(peer);
    if (it == mapped_.end()) return;
    m = std::move(it->second);
    mapped_.erase(it);
  }
  absl::MutexLock l(&m->mu);  // waits for copies in flight
  m->live = false;
}

bool UcxWorker::ExecuteMapped(MappedPeer* m, std::span<const Transfer> transfers, std::span<absl::Status> results,
                              absl::Time deadline) {
  const TransferKind kind = transfers[0].kind;
  if (!(kind == TransferKind::kGet ? m->gets : m->puts)) return false;
  for (const Transfer& t : transfers) {
    if (t.kind != kind || (t.path != UcxPath::kAuto && t.path != UcxPath::kRma)) return false;
  }
  absl::ReaderMutexLock l(&m->mu);
  if (!m->live) return false;
  uint64_t bytes = 0, ok = 0, late = 0;
  for (size_t i = 0; i < transfers.size(); ++i) {
    const Transfer& t = transfers[i];
    const uint64_t region_size = t.region < m->regions.size() ? m->regions[t.region].size : 0;
    if (absl::Status st = CheckRange(t, m->regions.size(), region_size); !st.ok()) {
      results[i] = std::move(st);
      continue;
    }
    const MappedPeer::Region& r = m->regions[t.region];
    if (Clock::Real()->Now() > deadline) {
      // Whatever entitles the caller to the range (a lease, a reservation) may be over.
      results[i] = absl::DeadlineExceededError("mapped copy not started: past its deadline");
      ++late;
      continue;
    }
    if (kind == TransferKind::kPut) {
      CopyBytes(r.base + t.offset, t.local, t.size);
    } else if (t.checksum != nullptr) {
      t.checksum->xxh3_64 = CopyAndXxh3_64(t.local, r.base + t.offset, t.size);
      t.checksum->computed = true;
    } else {
      CopyBytes(t.local, r.base + t.offset, t.size);
    }
    if (Clock::Real()->Now() > deadline) {
      // The entitlement may have ended mid-copy: a get's bytes may be torn; a
      // put's are refused by the commit's checksum or never committed.
      results[i] = absl::DeadlineExceededError("mapped copy finished past its deadline");
      ++late;
      continue;
    }
    results[i] = absl::OkStatus();
    bytes += t.size;
    ++ok;
  }
  Impl::Counters& c = impl_->c;
  c.transfers_ok.fetch_add(ok, std::memory_order_relaxed);
  c.transfers_failed.fetch_add(transfers.size() - ok, std::memory_order_relaxed);
  c.deadline_exceeded.fetch_add(late, std::memory_order_relaxed);
  (kind == TransferKind::kGet ? c.get_bytes_rma : c.put_bytes_rma).fetch_add(bytes, std::memory_order_relaxed);
  (kind == TransferKind::kGet ? c.get_bytes_mapped : c.put_bytes_mapped).fetch_add(bytes, std::memory_order_relaxed);
  return true;
}

UcxWorkerStats UcxWorker::Stats() const {
  const Impl::Counters& c = impl_->c;
  UcxWorkerStats s;
  s.get_bytes_rma = c.get_bytes_rma.load();
  s.get_bytes_mapped = c.get_bytes_mapped.load();
  s.put_bytes_mapped = c.put_bytes_mapped.load();
  s.get_bytes_am = c.get_bytes_am.load();
  s.put_bytes_rma = c.put_bytes_rma.load();
  s.put_bytes_am = c.put_bytes_am.load();
  s.served_get_bytes = c.served_get_bytes.load();
  s.served_get_bytes_completed = c.served_get_bytes_completed.load();
  s.served_put_bytes = c.served_put_bytes.load();
  s.served_errors = c.served_errors.load();
  s.unknown_conn_requests = c.unknown_conn_requests.load();
  s.busy_conn_requests = c.busy_conn_requests.load();
  s.served_calls = c.served_calls.load();
  s.calls_ok = c.calls_ok.load();
  s.calls_failed = c.calls_failed.load();
  s.calls_held = c.calls_held.load();
  s.transfers_ok = c.transfers_ok.load();
  s.transfers_failed = c.transfers_failed.load();
  s.deadline_exceeded = c.deadline_exceeded.load();
  s.peer_failures = c.peer_failures.load();
  s.forced_closes = c.forced_closes.load();
  s.wakeups = c.wakeups.load();
  s.arm_busy = c.arm_busy.load();
  s.connected_peers = c.connected_peers.load();
  s.accepted_peers = c.accepted_peers.load();
  return s;
}

}  // namespace kvhub::transport
