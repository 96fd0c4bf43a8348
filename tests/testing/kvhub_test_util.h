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

inline std::unique_ptr<v1::KvHub::Stub> NewKvHubStub(const std::string& address) {
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(300 << 20);
  args.SetMaxSendMessageSize(300 << 20);
  return v1::KvHub::NewStub(grpc::CreateCustomChannel(address, grpc::InsecureChannelCredentials(), args));
}

}  // namespace kvhub::testing
