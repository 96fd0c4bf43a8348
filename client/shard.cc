#include "client/shard.h"

#include <cstdlib>

#include "absl/strings/str_cat.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/impl/client_unary_call.h"
#include "grpcpp/security/credentials.h"
#include "grpcpp/support/channel_arguments.h"
#include "grpcpp/support/proto_buffer_reader.h"

namespace kvhub {
namespace {

using Method = grpc::internal::RpcMethod;

template <typename Msg>
absl::Status ParseBuffer(grpc::ByteBuffer* bb, Msg* msg, absl::string_view what) {
  grpc::Status s = grpc::SerializationTraits<Msg>::Deserialize(bb, msg);
  if (!s.ok()) return absl::DataLossError(absl::StrCat("cannot parse ", what, " response"));
  return absl::OkStatus();
}

}  // namespace

Shard::Conn::Conn(std::shared_ptr<grpc::Channel> ch)
    : channel(std::move(ch)),
      stub(v1::KvHub::NewStub(channel)),
      put("/kvhub.v1.KvHub/Put", Method::NORMAL_RPC, channel),
      put_start("/kvhub.v1.KvHub/PutStart", Method::NORMAL_RPC, channel),
      put_data("/kvhub.v1.KvHub/PutData", Method::CLIENT_STREAMING, channel),
      get("/kvhub.v1.KvHub/Get", Method::NORMAL_RPC, channel),
      get_stream("/kvhub.v1.KvHub/GetStream", Method::SERVER_STREAMING, channel) {}

Shard::Shard(std::string address, const ClientConfig& config, const ChannelSecurity& security)
    : address_(std::move(address)),
      retry_{config.max_attempts, config.initial_backoff, config.max_backoff,
             [this](absl::Duration wait) { WaitBeforeRetry(wait); }},
      control_deadline_(config.control_deadline),
      data_deadline_(config.data_deadline) {
  for (int i = 0; i < config.channels_per_member; ++i) {
    grpc::ChannelArguments args;
    args.SetMaxReceiveMessageSize(-1);  // the server bounds what it sends (proto limits)
    args.SetMaxSendMessageSize(-1);
    // A private subchannel pool gives each channel its own TCP connection.
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    args.SetInt("kvhub.channel_index", i);
    if (!config.use_proxy_env) args.SetInt(GRPC_ARG_ENABLE_HTTP_PROXY, 0);  // straight to the shard
    // Large blocks: read the socket in big chunks and keep a deep stream
    // window, so a 1 MiB response needs few syscalls and no window stalls.
    args.SetInt(GRPC_ARG_TCP_READ_CHUNK_SIZE, 1 << 20);
    args.SetInt(GRPC_ARG_TCP_MIN_READ_CHUNK_SIZE, 256 << 10);
    args.SetInt(GRPC_ARG_TCP_MAX_READ_CHUNK_SIZE, 4 << 20);
    args.SetInt(GRPC_ARG_HTTP2_STREAM_LOOKAHEAD_BYTES, 8 << 20);
    // A killed shard must fail calls quickly and come back quickly. Not
    // GRPC_ARG_MIN_RECONNECT_BACKOFF_MS: gRPC also takes it as the longest one
    // connection attempt may last (20 s by default), and at 100 ms a shard that
    // paused for 0.3 s, or a TLS handshake over a 60 ms round trip, failed every
    // attempt with UNAVAILABLE.
    args.SetInt(GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS, 100);
    args.SetInt(GRPC_ARG_MAX_RECONNECT_BACKOFF_MS, 2000);
    // A shard whose name now resolves to another address (a Kubernetes pod moved
    // to another node) is found at the next reconnect: gRPC re-resolves a failing
    // channel's name at most once per this interval, 30 s by default (measured:
    // 27 s of misses after such a move, about 1 s now).
    args.SetInt(GRPC_ARG_DNS_MIN_TIME_BETWEEN_RESOLUTIONS_MS, 1000);
    conns_.push_back(std::make_unique<Conn>(security.CreateChannel(address_, args)));
  }
}

Shard::Conn& Shard::NextConn() {
  return *conns_[next_.fetch_add(1, std::memory_order_relaxed) % conns_.size()];
}

Shard::Conn& Shard::ReadyConn() {
  for (const auto& c : conns_) {
    if (c->channel->GetState(/*try_to_connect=*/false) == GRPC_CHANNEL_READY) return *c;
  }
  return NextConn();
}

void Shard::WaitBeforeRetry(absl::Duration wait) {
  // Measured on the monotonic clock; gRPC takes a wall-clock time, made from what
  // is left each time.
  const absl::Time until = Clock::Real()->Now() + wait;
  bool waited = false;
  for (const auto& c : conns_) {
    grpc_connectivity_state st = c->channel->GetState(/*try_to_connect=*/true);
    for (absl::Duration left = wait; st != GRPC_CHANNEL_READY && left > absl::ZeroDuration();
         left = until - Clock::Real()->Now()) {
      waited = true;
      if (!c->channel->WaitForStateChange(st, absl::ToChronoTime(absl::Now() + left))) break;
      st = c->channel->GetState(/*try_to_connect=*/true);
    }
  }
  if (!waited) absl::SleepFor(until - Clock::Real()->Now());
}

void Shard::SetDeadline(grpc::ClientContext* ctx, absl::Duration d) {
  // now + INT64_MAX ns would overflow into the past: beyond a year (InfiniteDuration
  // included) there is no deadline, which gRPC takes as time_point::max().
  if (d > absl::Hours(24 * 365)) {
    ctx->set_deadline(std::chrono::system_clock::time_point::max());
    return;
  }
  ctx->set_deadline(std::chrono::system_clock::now() +
                    std::chrono::nanoseconds(absl::ToInt64Nanoseconds(std::max(d, absl::ZeroDuration()))));
}

template <typename Req, typename Resp>
absl::Status Shard::Unary(const char* what, absl::Duration deadline,
                          grpc::Status (v1::KvHub::Stub::*fn)(grpc::ClientContext*, const Req&,
                                                              Resp*),
                          const Req& req, Resp* resp, int* attempts) {
  grpc::Status s = CallWithRetry(retry_, deadline, [&](int k, absl::Duration left) {
    if (attempts != nullptr) *attempts = k + 1;
    grpc::ClientContext ctx;
    SetDeadline(&ctx, left);
    resp->Clear();
    return (NextConn().stub.get()->*fn)(&ctx, req, resp);
  });
  return FromGrpc(s, absl::StrCat(what, " ", address_));
}

absl::Status Shard::RawUnary(const char* what, absl::Duration deadline, Method Conn::*method,
                             const grpc::ByteBuffer& req, grpc::ByteBuffer* resp, int* attempts) {
  grpc::Status s = CallWithRetry(retry_, deadline, [&](int k, absl::Duration left) {
    if (attempts != nullptr) *attempts = k + 1;
    grpc::ClientContext ctx;
    SetDeadline(&ctx, left);
    resp->Clear();
    Conn& c = NextConn();
    return grpc::internal::BlockingUnaryCall<grpc::ByteBuffer, grpc::ByteBuffer>(
        c.channel.get(), c.*method, &ctx, req, resp);
  });
  return FromGrpc(s, absl::StrCat(what, " ", address_));
}

absl::Status Shard::Lookup(const v1::LookupRequest& req, v1::LookupResponse* resp) {
  return Unary("Lookup", control_deadline_, &v1::KvHub::Stub::Lookup, req, resp);
}
absl::Status Shard::PutCommit(const v1::PutCommitRequest& req, v1::PutCommitResponse* resp, int* attempts) {
  return Unary("PutCommit", control_deadline_, &v1::KvHub::Stub::PutCommit, req, resp, attempts);
}
absl::Status Shard::PutAbort(const v1::PutAbortRequest& req, v1::PutAbortResponse* resp) {
  return Unary("PutAbort", control_deadline_, &v1::KvHub::Stub::PutAbort, req, resp);
}
absl::Status Shard::Delete(const v1::DeleteRequest& req, v1::DeleteResponse* resp) {
  return Unary("Delete", control_deadline_, &v1::KvHub::Stub::Delete, req, resp);
}
absl::Status Shard::Pin(const v1::PinRequest& req, v1::PinResponse* resp) {
  return Unary("Pin", control_deadline_, &v1::KvHub::Stub::Pin, req, resp);
}
absl::Status Shard::Stats(v1::StatsResponse* resp) {
  return Unary("Stats", control_deadline_, &v1::KvHub::Stub::Stats, v1::StatsRequest(), resp);
}
absl::Status Shard::Health(v1::HealthResponse* resp) {
  return Unary("Health", control_deadline_, &v1::KvHub::Stub::Health, v1::HealthRequest(), resp);
}

absl::Status Shard::Release(const v1::ReleaseRequest& req, v1::ReleaseResponse* resp) {
  return Unary("Release", control_deadline_, &v1::KvHub::Stub::Release, req, resp);
}
absl::Status Shard::Connect(const v1::ConnectRequest& req, v1::ConnectResponse* resp) {
  return Unary("Connect", control_deadline_, &v1::KvHub::Stub::Connect, req, resp);
}

absl::Status Shard::PutStartRaw(const grpc::ByteBuffer& req, v1::PutStartResponse* resp, int* attempts) {
  grpc::ByteBuffer out;
  if (absl::Status s = RawUnary("PutStart", control_deadline_, &Conn::put_start, req, &out, attempts);
      !s.ok()) {
    return s;
  }
  return ParseBuffer(&out, resp, "PutStart");
}

absl::Status Shard::PutRaw(const grpc::ByteBuffer& req, v1::PutResponse* resp) {
  grpc::ByteBuffer out;
  if (absl::Status s = RawUnary("Put", data_deadline_, &Conn::put, req, &out); !s.ok()) return s;
  return ParseBuffer(&out, resp, "Put");
}

absl::Status Shard::GetRaw(const v1::GetRequest& req, grpc::ByteBuffer* resp) {
  grpc::ByteBuffer in;
  bool own = false;
  if (!grpc::SerializationTraits<v1::GetRequest>::Serialize(req, &in, &own).ok()) {
    return absl::InternalError("cannot serialize GetRequest");
  }
  return RawUnary("Get", data_deadline_, &Conn::get, in, resp);
}

}  // namespace kvhub
