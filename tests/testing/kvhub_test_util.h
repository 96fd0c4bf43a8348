#pragma once
// Small helpers for tests that talk to a real kvhubd through the raw generated stub:
// deterministic keys and block bytes, a channel with kvhub's message limits, and
// one-item put helpers. Header-only; thread-compatible.

#include <cstdint>
#include <memory>
#include <string>

#include "common/hash.h"
#include "common/u128.h"
#include "grpcpp/grpcpp.h"
#include "kvhub/v1/kvhub.grpc.pb.h"

namespace kvhub::testing {

// 16 canonical key bytes for test key number `i` (distinct per i).
inline std::string TestKey(uint64_t i) {
  U128 k{i * 0x9e3779b97f4a7c15ull + 0x1234, ~i};
  auto b = k.Bytes();
  return std::string(b.begin(), b.end());
}

// `n` deterministic bytes for block number `i`.
inline std::string TestBlock(uint64_t i, size_t n) {
  std::string s(n, '\0');
  uint64_t x = i * 0x2545f4914f6cdd1dull + 1;
  for (size_t j = 0; j < n; ++j) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    s[j] = static_cast<char>(x);
  }
  return s;
}

inline uint64_t Checksum(const std::string& s) { return Xxh3_64(s.data(), s.size()); }

// One inline Put of `data` under TestKey(k) in namespace `ns`, declaring
// `checksum`. Returns the RPC status; the per-item status is in resp->items(0).
inline grpc::Status PutOne(v1::KvHub::Stub& stub, const std::string& ns, uint64_t k,
                           const std::string& data, uint64_t checksum, v1::PutResponse* resp) {
  v1::PutRequest req;
  req.set_namespace_(ns);
  v1::PutItem* it = req.add_items();
  it->set_key(TestKey(k));
  it->set_data(data);
  it->set_checksum(checksum);
  grpc::ClientContext ctx;
  return stub.Put(&ctx, req, resp);
}

inline std::unique_ptr<v1::KvHub::Stub> NewKvHubStub(const std::string& address) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(300 << 20);
  args.SetMaxSendMessageSize(300 << 20);
  return v1::KvHub::NewStub(grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args));
}

}  // namespace kvhub::testing
