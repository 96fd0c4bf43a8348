#include "client/grpc_data_plane.h"

#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "client/block_verify.h"
#include "client/read_batch.h"
#include "client/shard.h"
#include "client/wire.h"
#include "grpcpp/support/sync_stream.h"

namespace kvhub {

GrpcDataPlane::GrpcDataPlane(const ClientConfig& config)
    : mode_(config.get_mode),
      max_inline_batch_bytes_(config.max_inline_batch_bytes),
      chunk_bytes_(config.stream_chunk_bytes) {}

absl::Status GrpcDataPlane::WriteReserved(Shard& shard, std::span<const BlockWrite> writes) {
  uint64_t total = 0;
  for (const BlockWrite& w : writes) total += w.data.size();
  if (writes.empty()) return absl::OkStatus();
  grpc::Status st = CallWithRetry(shard.retry(), shard.data_deadline(),
                                  [&](int, absl::Duration left) -> grpc::Status {
    BorrowedBytes borrowed;  // declared before ctx/writer: outlives them
    grpc::ClientContext ctx;
    Shard::SetDeadline(&ctx, left);
    grpc::ByteBuffer resp;
    Shard::Conn& conn = shard.NextConn();
    std::unique_ptr<grpc::ClientWriter<grpc::ByteBuffer>> writer(
        grpc::internal::ClientWriterFactory<grpc::ByteBuffer>::Create(
            conn.channel.get(), conn.put_data, &ctx, &resp));
    bool ok = true;
    for (const BlockWrite& w : writes) {
      for (uint64_t off = 0; ok && off < w.data.size(); off += chunk_bytes_) {
        const uint64_t n = std::min<uint64_t>(chunk_bytes_, w.data.size() - off);
        grpc::ByteBuffer chunk =
            EncodePutDataChunk(w.reservation_id, off, w.data.subspan(off, n), &borrowed);
        ok = writer->Write(chunk);
      }
      if (!ok) break;
    }
    if (ok) writer->WritesDone();
    grpc::Status s = writer->Finish();
    if (!s.ok()) return s;
    v1::PutDataResponse r;
    if (!grpc::SerializationTraits<v1::PutDataResponse>::Deserialize(&resp, &r).ok()) {
      return grpc::Status(grpc::StatusCode::DATA_LOSS, "cannot parse PutDataResponse");
    }
    if (r.bytes_written() != total) {
      return grpc::Status(grpc::StatusCode::DATA_LOSS,
                          absl::StrCat("PutData wrote ", r.bytes_written(), " of ", total, " bytes"));
    }
    return grpc::Status::OK;
  });
  return FromGrpc(st, absl::StrCat("PutData ", shard.address()));
}

absl::Status GrpcDataPlane::ReadBlocks(Shard& shard, absl::string_view ns,
                                       std::span<BlockRead> reads) {
  for (BlockRead& r : reads) {
    r.status = absl::UnknownError("not read");
    r.size = 0;
  }
  if (reads.empty()) return absl::OkStatus();
  uint64_t capacity = 0;
  for (const BlockRead& r : reads) capacity += r.dest.size();
  // kAuto by measurement (docs/results-service.md): inline Get wins for
  // blocks up to ~1 MiB, GetStream for 4 MiB and up.
  constexpr uint64_t kStreamFromBytes = 4ull << 20;
  const bool stream = mode_ == GetMode::kStream ||
                      (mode_ == GetMode::kAuto && capacity >= kStreamFromBytes * reads.size()) ||
                      (mode_ == GetMode::kAuto && capacity > max_inline_batch_bytes_ &&
                       reads.size() == 1);
  if (stream) return ReadStream(shard, ns, reads);
  // Inline: split so that no response can exceed max_inline_batch_bytes
  // (a single larger block goes alone, or by stream in kAuto).
  size_t begin = 0;
  while (begin < reads.size()) {
    size_t end = begin + 1;
    uint64_t bytes = reads[begin].dest.size();
    while (end < reads.size() && bytes + reads[end].dest.size() <= max_inline_batch_bytes_) {
      bytes += reads[end].dest.size();
      ++end;
    }
    std::span<BlockRead> part = reads.subspan(begin, end - begin);
    absl::Status s = (mode_ == GetMode::kAuto && bytes > max_inline_batch_bytes_)
                         ? ReadStream(shard, ns, part)
                         : ReadInline(shard, ns, part);
    if (!s.ok()) {
      // The part failed as a whole (the shard is down, hung or answered garbage):
      // its blocks are misses, so no later block can be in the caller's valid
      // prefix. Asking again would only wait another data_deadline per part
      // (a hung shard held a 1024-block fetch ~16 minutes).
      FailUnfinished(reads.subspan(end), s);
      return s;
    }
    begin = end;
  }
  return absl::OkStatus();
}

absl::Status GrpcDataPlane::ReadInline(Shard& shard, absl::string_view ns,
                                       std::span<BlockRead> reads) {
  v1::GetRequest req;
  req.set_namespace_(std::string(ns));
  req.set_keys(PackedKeys(reads));
  req.set_inline_data(true);
  grpc::ByteBuffer resp;
  if (absl::Status s = shard.GetRaw(req, &resp); !s.ok()) {
    FailUnfinished(reads, s);
    return s;
  }
  std::vector<std::span<uint8_t>> dests(reads.size());
  for (size_t i = 0; i < reads.size(); ++i) dests[i] = reads[i].dest;
  std::vector<DecodedBlock> blocks;
  if (absl::Status s = DecodeGetResponse(resp, dests, &blocks); !s.ok()) {
    s = absl::Status(s.code(), absl::StrCat("Get ", shard.address(), ": ", s.message()));
    FailUnfinished(reads, s);
    return s;
  }
  for (size_t i = 0; i < reads.size(); ++i) {
    const DecodedBlock& b = blocks[i];
    BlockRead& r = reads[i];
    if (b.code != 0) {
      r.status = ShardItemError(b.code, b.message, r.key);
    } else if (b.data_len == 0) {
      // No bytes at all (a shard that ignored inline_data): not the buffer's fault.
      r.status = absl::DataLossError(absl::StrCat("block ", r.key.Hex(), ": Get ", shard.address(),
                                                  " answered OK with no block bytes"));
    } else if (!b.data_copied) {
      r.status = BufferTooSmall(r.key, b.data_len, r.dest.size());
    } else {
      // The bytes were hashed as they were copied out of gRPC's slices.
      r.status = VerifyHashedBlock(b.data_len, b.data_xxh3, b.size, b.checksum);
      r.size = r.status.ok() ? b.data_len : 0;
    }
  }
  return absl::OkStatus();
}

absl::Status GrpcDataPlane::ReadStream(Shard& shard, absl::string_view ns,
                                       std::span<BlockRead> reads) {
  v1::GetRequest req;
  req.set_namespace_(std::string(ns));
  req.set_keys(PackedKeys(reads));
  req.set_inline_data(true);
  std::vector<std::span<uint8_t>> dests(reads.size());
  for (size_t i = 0; i < reads.size(); ++i) dests[i] = reads[i].dest;
  struct Progress {
    bool has_status = false;
    int32_t code = 0;
    std::string message;
    uint64_t size = 0, checksum = 0, received = 0;
    bool overflow = false;
  };
  std::vector<Progress> prog;
  grpc::Status st = CallWithRetry(shard.retry(), shard.data_deadline(),
                                  [&](int, absl::Duration left) -> grpc::Status {
    prog.assign(reads.size(), Progress());
    grpc::ClientContext ctx;
    Shard::SetDeadline(&ctx, left);
    Shard::Conn& conn = shard.NextConn();
    std::unique_ptr<grpc::ClientReader<grpc::ByteBuffer>> reader(
        grpc::internal::ClientReaderFactory<grpc::ByteBuffer>::Create(conn.channel.get(),
                                                                      conn.get_stream, &ctx, req));
    grpc::ByteBuffer bb;
    DecodedChunk c;
    while (reader->Read(&bb)) {
      absl::Status s = DecodeGetChunk(bb, dests, &c);
      if (!s.ok() || c.index >= reads.size()) {
        ctx.TryCancel();
        reader->Finish();
        return grpc::Status(grpc::StatusCode::DATA_LOSS,
                            s.ok() ? "GetChunk index out of range" : std::string(s.message()));
      }
      Progress& p = prog[c.index];
      if (c.has_status) {
        p.has_status = true;
        p.code = c.block.code;
        p.message = c.block.message;
        p.size = c.block.size;
        p.checksum = c.block.checksum;
      }
      if (c.data_len > 0) {
        if (!c.data_copied) p.overflow = true;
        p.received += c.data_len;
      }
    }
    return reader->Finish();
  });
  absl::Status call = FromGrpc(st, absl::StrCat("GetStream ", shard.address()));
  for (size_t i = 0; i < reads.size(); ++i) {
    const Progress& p = prog[i];
    BlockRead& r = reads[i];
    if (!p.has_status) {
      r.status = call.ok() ? absl::DataLossError(absl::StrCat("block ", r.key.Hex(),
                                                              ": GetStream sent nothing for it"))
                           : call;
    } else if (p.code != 0) {
      r.status = ShardItemError(p.code, p.message, r.key);
    } else if (p.size == 0) {
      // The shard stores no empty block: a zero size is a broken answer (as over UCX).
      r.status = absl::DataLossError(absl::StrCat("block ", r.key.Hex(), ": GetStream ", shard.address(),
                                                  " declared it 0 bytes"));
    } else if (p.overflow || p.size > r.dest.size()) {
      r.status = BufferTooSmall(r.key, p.size, r.dest.size());
    } else if (p.received != p.size) {
      r.status = call.ok() ? absl::DataLossError(absl::StrCat("block ", r.key.Hex(), ": received ",
                                                              p.received, " of ", p.size, " bytes"))
                           : call;
    } else {
      // Chunks arrive with increasing offsets and sum to size; a server that
      // overlapped or skipped ranges fails the checksum here.
      r.status = VerifyBlock(r.dest.first(p.size), p.size, p.checksum);
      r.size = r.status.ok() ? p.size : 0;
    }
  }
  return call;
}

}  // namespace kvhub
