#pragma once
// DataPlane over gRPC: PutData client streams for reservations; inline Get or
// GetStream for reads (ClientConfig::get_mode). Bytes go straight from
// caller memory into gRPC slices and from received slices into caller
// buffers (client/wire.h). Thread-safe.

#include <cstdint>

#include "client/client_config.h"
#include "client/data_plane.h"

namespace kvhub {

class GrpcDataPlane final : public DataPlane {
 public:
  explicit GrpcDataPlane(const ClientConfig& config);

  absl::string_view name() const override { return "grpc"; }
  absl::Status WriteReserved(Shard& shard, std::span<const BlockWrite> writes) override;
  absl::Status ReadBlocks(Shard& shard, absl::string_view ns, std::span<BlockRead> reads) override;

 private:
  absl::Status ReadInline(Shard& shard, absl::string_view ns, std::span<BlockRead> reads);
  absl::Status ReadStream(Shard& shard, absl::string_view ns, std::span<BlockRead> reads);

  const GetMode mode_;
  const uint64_t max_inline_batch_bytes_;
  const uint64_t chunk_bytes_;
};

}  // namespace kvhub
