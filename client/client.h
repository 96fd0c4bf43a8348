#pragma once
// kvhub::Client: the C++ client of a kvhub cluster (DESIGN §4, §6, §7).
//
// Placement: weighted rendezvous hashing of each block key over the static
// member list (client/rendezvous.h). Every call groups keys per owning shard,
// splits them into batches of at most max_keys_per_rpc and runs the batches of
// all shards in parallel (a small thread pool plus the calling thread).
// Every RPC has a deadline; only UNAVAILABLE is retried (docs/client.md).
//
// Thread safety: all methods may be called concurrently from many threads. The
// caller must not destroy the Client while any call is in flight (the Python
// binding's close() waits for them).
// Memory: spans passed in (payloads, buffers) are only used during the call;
// Fetch writes straight into the caller's buffers.
//
// Failure semantics: a block whose shard is unreachable is a miss, never data;
// a block that fails transfer or checksum ends a fetched prefix there and is
// never reported as loaded. Calls return a non-OK status only for bad input;
// per-block and per-shard failures are in the result.

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "client/client_config.h"
#include "client/data_plane.h"
#include "client/rendezvous.h"
#include "common/keys.h"
#include "common/model_spec.h"
#include "kvhub/v1/kvhub.pb.h"

namespace kvhub {

class ChannelSecurity;
class Shard;
class ThreadPool;

// One block to store.
struct BlockPut {
  BlockKey key;
  std::optional<BlockKey> parent;  // previous block of the chain (prefix-aware eviction)
  std::span<const uint8_t> data;   // 1 byte .. 256 MiB
  bool pin = false;                // never evict (counts against the pinned quota)
};

enum class PutOutcome : uint8_t {
  kStored = 0,   // uploaded and committed now
  kSkipped = 1,  // already present on its shard, or being stored by a concurrent publisher
  kFailed = 2,   // not stored; see errors[i]
};

struct PutResult {
  std::vector<PutOutcome> outcome;   // per block, in input order
  std::vector<absl::Status> errors;  // per block; OK unless kFailed
  size_t stored = 0, skipped = 0, failed = 0;
  uint64_t bytes_uploaded = 0;
};

struct PublishResult : PutResult {
  std::vector<BlockKey> keys;  // the full blocks' keys
};

struct LookupResult {
  std::vector<BlockKey> keys;
  std::vector<uint8_t> present;  // per key: 1 present, 0 absent or shard unreachable/unknown
  std::vector<uint8_t> answered; // per key: 1 when its shard answered: present is then exact, except
                                 // past the first miss of a prefix lookup (LookupPrefix), where a shard
                                 // may stop looking and 0 means "not known" (a 1 is exact anywhere)
  size_t hit_blocks = 0;         // leading run of present keys
  uint64_t hit_tokens = 0;       // hit_blocks * block_tokens (0 for key-level calls)
  size_t unreachable_keys = 0;   // keys whose shard did not answer
  absl::Status first_error;      // first shard error, OK if none
};

struct FetchResult {
  size_t valid_blocks = 0;        // leading run of blocks loaded and verified
  uint64_t valid_tokens = 0;      // valid_blocks * block_tokens (0 for key-level calls)
  std::vector<uint64_t> sizes;    // per requested block: bytes written (0 unless loaded)
  std::vector<absl::Status> status;  // per requested block: OK = loaded and verified
};

struct MemberStats {
  std::string address;
  absl::StatusOr<v1::StatsResponse> stats;
};

// Not usable across fork(): in a child forked after any Client was created,
// Create and every call return FAILED_PRECONDITION (client/fork_guard.h).
class Client {
 public:
  // Validates config and connects lazily (no RPC is made here).
  static absl::StatusOr<std::unique_ptr<Client>> Create(ClientConfig config);
  // Same, with a given transport for block bytes (the UCX seam).
  static absl::StatusOr<std::unique_ptr<Client>> Create(ClientConfig config,
                                                        std::unique_ptr<DataPlane> data_plane);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // ---- token level (DESIGN §4) ----

  // Stores the full blocks of `tokens`: blocks[i] is block i's payload and
  // blocks.size() must equal tokens.size() / spec.block_tokens. Looks up which
  // blocks exist, skips them, uploads the rest with XXH3-64 checksums and the
  // chain parent. INVALID_ARGUMENT on bad input (nothing is sent). With `pin`,
  // every block reported stored or skipped is pinned (again: Pin is idempotent),
  // also those present already, which a put never pins; one that cannot be
  // (another publisher's copy not committed yet, the pinned quota full, deleted
  // meanwhile) is kFailed with the reason. One extra Pin call per shard.
  absl::StatusOr<PublishResult> Publish(absl::string_view ns, const ModelSpec& spec,
                                        std::span<const int32_t> tokens,
                                        std::span<const std::span<const uint8_t>> blocks,
                                        bool pin = false);

  // Longest cached prefix of `tokens`, in full blocks.
  absl::StatusOr<LookupResult> LookupPrefix(absl::string_view ns, const ModelSpec& spec,
                                            std::span<const int32_t> tokens);

  // Loads the first n_blocks blocks of `tokens` into buffers[0..n_blocks)
  // (buffers.size() == n_blocks <= full blocks). result.valid_blocks is the
  // leading run loaded and verified; later blocks must be recomputed even if
  // some were read.
  // Buffers of any alignment work; 64-byte-aligned ones copy and verify
  // faster (docs/client.md, "Buffers"). Buffers must not overlap
  // (INVALID_ARGUMENT, nothing read): shards fill them concurrently.
  absl::StatusOr<FetchResult> Fetch(absl::string_view ns, const ModelSpec& spec,
                                    std::span<const int32_t> tokens, size_t n_blocks,
                                    std::span<const std::span<uint8_t>> buffers);

  // ---- key level (CLI, tools, chunks) ----

  // prefix=true lets shards stop at their first miss (present after the
  // global first miss is then unspecified). block_tokens/model feed the
  // shards' token-weighted metrics only.
  absl::StatusOr<LookupResult> Lookup(absl::string_view ns, std::span<const BlockKey> keys,
                                      bool prefix = false, uint32_t block_tokens = 0,
                                      absl::string_view model = "");
  // Uploads blocks without looking them up first (ALREADY_EXISTS -> kSkipped).
  absl::StatusOr<PutResult> Put(absl::string_view ns, std::span<const BlockPut> blocks);
  // Reads keys[i] into buffers[i]; valid_blocks is the leading verified run.
  // Overlapping buffers: INVALID_ARGUMENT, nothing read.
  absl::StatusOr<FetchResult> Get(absl::string_view ns, std::span<const BlockKey> keys,
                                  std::span<const std::span<uint8_t>> buffers);
  // Per key: OK, NOT_FOUND, or the shard's error.
  absl::StatusOr<std::vector<absl::Status>> Delete(absl::string_view ns,
                                                   std::span<const BlockKey> keys);
  absl::StatusOr<std::vector<absl::Status>> Pin(absl::string_view ns,
                                                std::span<const BlockKey> keys, bool pin);
  // One entry per member, in config order.
  std::vector<MemberStats> Stats();
  // OK when every member answers Stats within the deadline; else UNAVAILABLE naming
  // each member that did not and why. For tools that should fail fast on a cluster
  // that is down instead of counting per-call errors.
  absl::Status CheckMembersAnswer();
  // Which data plane serves each member and the block bytes it moved over UCX
  // and gRPC from this client (config order for the UCX data plane; members not
  // used yet say "not connected yet").
  std::vector<ShardTransportStats> TransportStats() const;

  // Placement: index (config order) of the member owning `key`, and its address.
  size_t OwnerOf(const BlockKey& key) const { return placement_.Owner(key); }
  // `index` must be below member_count() (OwnerOf's results are).
  const std::string& MemberAddress(size_t index) const;
  size_t member_count() const { return shards_.size(); }
  const ClientConfig& config() const { return config_; }
  // How many put calls Put would send to the busiest shard for blocks of these keys
  // and sizes (sizes.size() == keys.size()). One shard's calls run in parallel, so
  // above 1 its blocks may be stored in any order (tools that model the shards'
  // eviction order, like kvhub-replay, need 1). Cheap; sends nothing.
  size_t MostPutCallsPerShard(std::span<const BlockKey> keys, std::span<const uint64_t> sizes) const;

 private:
  Client(ClientConfig config, Rendezvous placement, std::unique_ptr<DataPlane> data_plane,
         const ChannelSecurity& security);

  // A batch: indices into the caller's key list, all owned by one shard.
  struct Batch {
    size_t shard;
    std::vector<size_t> items;
  };
  // Delete/Pin: one request per batch, one ItemStatus per key back, in key order.
  template <typename Request, typename Response>
  absl::StatusOr<std::vector<absl::Status>> PerKeyCall(absl::string_view ns, std::span<const BlockKey> keys,
                                                       const char* rpc, const Request& prototype,
                                                       absl::Status (Shard::*call)(const Request&, Response*));
  // Groups keys per owner and splits each group into batches of at most
  // max_keys (and, when sizes is given, at most max_bytes per batch).
  std::vector<Batch> MakeBatches(std::span<const BlockKey> keys, size_t max_keys,
                                 const std::vector<uint64_t>* sizes = nullptr,
                                 uint64_t max_bytes = 0) const;
  // Put's calls: per shard, inline blocks in batches of max_inline_batch_bytes and
  // the others in reservation batches, each of at most max_keys_per_rpc keys.
  struct PutJob {
    bool inline_put;
    Batch batch;
  };
  std::vector<PutJob> MakePutJobs(std::span<const BlockKey> keys, std::span<const uint64_t> sizes) const;
  void PutOnShard(absl::string_view ns, Shard& shard, std::span<const BlockPut> blocks,
                  const std::vector<size_t>& items, PutResult* result);
  void PutInline(absl::string_view ns, Shard& shard, std::span<const BlockPut> blocks,
                 const std::vector<size_t>& items, PutResult* result);
  void PutReserved(absl::string_view ns, Shard& shard, std::span<const BlockPut> blocks,
                   const std::vector<size_t>& items, PutResult* result);
  // After a retried PutCommit (an earlier attempt's reply lost): blocks `which`, whose
  // retry found no reservation, are stored if the shard has them, else failed.
  void ResolveLostCommits(absl::string_view ns, Shard& shard, std::span<const BlockPut> blocks,
                          const std::vector<size_t>& which, PutResult* result);
  // PutCommit answered FAILED_PRECONDITION for blocks `busy` (reservations in
  // `again`, same order): commits them again a few times, then aborts what is
  // still busy. NOT_FOUND answers go to `unsure` (ResolveLostCommits).
  void RetryBusyCommits(Shard& shard, std::span<const BlockPut> blocks, std::vector<size_t> busy,
                        v1::PutCommitRequest again, std::vector<size_t>* unsure, PutResult* result);
  // Publish(pin=true): pins the blocks out->outcome says are stored or skipped.
  void PinPresent(absl::string_view ns, PublishResult* out);

  const ClientConfig config_;
  const Rendezvous placement_;
  std::vector<std::unique_ptr<Shard>> shards_;  // config order
  std::unique_ptr<DataPlane> data_plane_;
  std::unique_ptr<ThreadPool> pool_;
};

}  // namespace kvhub
