#pragma once
// Raw kvhub.v1 call sequences for tests that speak the protocol without
// kvhub::Client (header-only: the tests that use it link gRPC already).

#include <cstdint>
#include <functional>
#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "grpcpp/client_context.h"
#include "kvhub/v1/kvhub.grpc.pb.h"

namespace kvhub::testing {

// Writes `data` into reservation `rid` as one PutData chunk, then calls
// PutCommit on it. Returns the commit's item status, or the first RPC that
// failed. `prepare` (optional) is applied to every call's context (metadata).
inline absl::StatusOr<v1::ItemStatus> RawWriteAndCommit(
    v1::KvHub::Stub& stub, uint64_t rid, const std::string& data,
    const std::function<void(grpc::ClientContext*)>& prepare = nullptr) {
  auto rpc_error = [](const char* what, const grpc::Status& s) {
    return absl::Status(static_cast<absl::StatusCode>(s.error_code()), absl::StrCat(what, ": ", s.error_message()));
  };
  grpc::ClientContext wctx;
  if (prepare) prepare(&wctx);
  v1::PutDataResponse wrote;
  auto writer = stub.PutData(&wctx, &wrote);
  v1::PutDataChunk chunk;
  chunk.set_reservation_id(rid);
  chunk.set_data(data);
  writer->Write(chunk);
  writer->WritesDone();
  if (grpc::Status s = writer->Finish(); !s.ok()) return rpc_error("PutData", s);
  v1::PutCommitRequest commit;
  commit.add_reservation_ids(rid);
  v1::PutCommitResponse committed;
  grpc::ClientContext cctx;
  if (prepare) prepare(&cctx);
  if (grpc::Status s = stub.PutCommit(&cctx, commit, &committed); !s.ok()) return rpc_error("PutCommit", s);
  if (committed.items_size() != 1) return absl::InternalError("PutCommit answered no item");
  return committed.items(0);
}

}  // namespace kvhub::testing
