#pragma once
// The transport seam (DESIGN §4): the part of the client that moves block
// bytes between caller memory and a shard. GrpcDataPlane: gRPC streams and
// inline messages. UcxDataPlane (client/ucx_data_plane.h): UCX into the
// BlockLocation a PutStart/Get returns, gRPC for shards without UCX.
// Implementations must be thread-safe.

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "common/keys.h"

namespace kvhub {

class Shard;

// Where a reserved or leased block lies in a shard's registered memory
// (kvhub.v1.BlockLocation); ignored by the gRPC data plane.
struct RemoteLocation {
  uint32_t region = 0;
  uint64_t offset = 0;
  uint64_t size = 0;
  uint32_t rkey_id = 0;
};

// One block to move into a reservation made by PutStart.
struct BlockWrite {
  uint64_t reservation_id = 0;
  RemoteLocation location;
  std::span<const uint8_t> data;  // caller memory; must stay valid during the call
  // When the reservation is reclaimed, a time of Clock::Real() (this process's
  // monotonic clock: PutStart's expires_in_ms counted from when PutStart was
  // sent); InfiniteFuture if unknown.
  // A data plane writing into shard memory must finish before it.
  absl::Time expires = absl::InfiniteFuture();
  // The shard process that made the reservation (PutStartResponse.incarnation; 0 if
  // unknown). A data plane connected to another process at that address must not
  // write through that connection.
  uint64_t incarnation = 0;
};

// Which data plane serves a shard and how many block bytes each one moved
// (Client::TransportStats). Bytes count verified reads and completed writes.
struct ShardTransportStats {
  std::string address;
  std::string transport;  // "ucx (tcp; get=am put=am)", "grpc", "grpc (fallback: <why>)", "not connected yet"
  uint64_t ucx_get_bytes = 0, ucx_put_bytes = 0;
  uint64_t grpc_get_bytes = 0, grpc_put_bytes = 0;
};

// One block to read into caller memory.
struct BlockRead {
  BlockKey key;
  std::span<uint8_t> dest;  // caller buffer; its capacity bounds the block size
  // Outputs. status OK means dest[0, size) holds the block and its XXH3-64
  // checksum matched what the shard declared. NOT_FOUND is a miss;
  // RESOURCE_EXHAUSTED a buffer too small; DATA_LOSS a size/checksum mismatch.
  absl::Status status = absl::UnknownError("not read");
  uint64_t size = 0;
};

class DataPlane {
 public:
  virtual ~DataPlane() = default;
  virtual absl::string_view name() const = 0;

  // Moves every write's bytes into its reservation on `shard`. An error means
  // some bytes may be missing: the caller must abort (not commit) them all.
  virtual absl::Status WriteReserved(Shard& shard, std::span<const BlockWrite> writes) = 0;

  // Reads the blocks `reads` of namespace `ns` from `shard` into their dest
  // buffers, verifying each checksum, and sets every read's status/size. The
  // returned status is non-OK only if the exchange as a whole failed; every
  // read that did not complete then carries an error too.
  virtual absl::Status ReadBlocks(Shard& shard, absl::string_view ns,
                                  std::span<BlockRead> reads) = 0;

  // Per-shard transport and byte counters; empty for data planes that keep none.
  virtual std::vector<ShardTransportStats> TransportStats() const { return {}; }
  // Told about block bytes the client sent by inline Put (outside the data
  // plane), so TransportStats covers every byte. Default: ignored.
  virtual void RecordInlinePut(const Shard& shard, uint64_t bytes) {
    (void)shard;
    (void)bytes;
  }
  // True when puts to `shard` should all go through PutStart + WriteReserved
  // (no inline Put), e.g. a UCX-only data plane. Default false.
  virtual bool WantsAllPutsReserved(Shard& shard) {
    (void)shard;
    return false;
  }
};

}  // namespace kvhub
