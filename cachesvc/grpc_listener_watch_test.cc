#include "cachesvc/grpc_listener_watch.h"

#include <grpc/grpc.h>
#include <grpc/support/log.h>

#include "gtest/gtest.h"

namespace kvhub::cachesvc {
namespace {

// One process, one watch: the cases run in order and build on each other.
TEST(GrpcListenerWatchTest, RemembersTheFirstAcceptFailureGrpcLogs) {
  grpc_init();  // as any gRPC server does: it sets the severity gpr_log prints
  EXPECT_FALSE(GrpcListenerFailure().has_value());
  InstallGrpcLogSink();
  InstallGrpcLogSink();  // idempotent
  // gRPC's other errors are logged, not taken for a listener failure.
  gpr_log(GPR_ERROR, "Failed to get accept4: %s", "not the line");
  gpr_log(GPR_ERROR, "%s", "chttp2 transport: Connection reset by peer");
  EXPECT_FALSE(GrpcListenerFailure().has_value());
  EXPECT_FALSE(NoteGrpcLogMessage("accept4 failed"));
  // The line tcp_server_posix.cc logs as it drops the port, through gRPC's own log.
  gpr_log(GPR_ERROR, "Failed accept4: %s", "Too many open files");
  ASSERT_TRUE(GrpcListenerFailure().has_value());
  EXPECT_EQ(*GrpcListenerFailure(), "Failed accept4: Too many open files");
  // The first reason stays.
  EXPECT_TRUE(NoteGrpcLogMessage("Failed accept4: Cannot allocate memory"));
  EXPECT_EQ(*GrpcListenerFailure(), "Failed accept4: Too many open files");
  grpc_shutdown();
}

}  // namespace
}  // namespace kvhub::cachesvc
